//! `canopy admin reset-token` end to end, as an operator who locked themselves out would run
//! it: the real `canopy server` process, its bootstrap administrator token revoked (by itself),
//! the command refused while the server runs, then run with the server stopped: a new token in
//! `admin.token` (0600, never printed) that works after a restart, the old one dead, an audit
//! entry. Also a start over a lost database is refused by the real binary, naming the fix.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn server_command(data_dir: &Path, port: u16) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_canopy"));
    cmd.arg("server")
        .arg("--insecure-http")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("CANOPY_DATABASE_URL")
        .env_remove("CANOPY_SECRET_KEY")
        .env("RUST_LOG", "warn");
    cmd
}

async fn start(data_dir: &Path) -> Server {
    let port = free_port();
    let child = server_command(data_dir, port)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("canopy server starts");
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let http = reqwest::Client::new();
    loop {
        if let Ok(r) = http.get(format!("{}/healthz", server.url)).send().await
            && r.status().is_success()
        {
            return server;
        }
        assert!(Instant::now() < deadline, "the server did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn canopy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_canopy"))
        .args(args)
        .env_remove("CANOPY_DATABASE_URL")
        .env_remove("CANOPY_SECRET_KEY")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run canopy")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn token(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_string()
}

async fn call(server: &Server, method: reqwest::Method, path: &str, token: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .request(method, format!("{}{path}", server.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_out_administrator_recovers_with_reset_token() {
    let dir = tempfile::tempdir().unwrap();
    let data: PathBuf = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let server = start(&data).await;
    let old = token(&data);

    // The administrator revokes its own (only) token: nobody administers this instance now.
    let (s, tokens) = call(&server, reqwest::Method::GET, "/canopy/v1/tokens", &old).await;
    assert_eq!(s, 200, "{tokens}");
    let id = tokens["tokens"][0]["id"].as_str().unwrap().to_string();
    let (s, _) = call(
        &server,
        reqwest::Method::DELETE,
        &format!("/canopy/v1/tokens/{id}"),
        &old,
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = call(&server, reqwest::Method::GET, "/canopy/v1/whoami", &old).await;
    assert_eq!(s, 401);

    // Not while the server runs.
    let o = canopy(&["admin", "reset-token", "--data-dir", data_arg]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}{err}");
    assert!(err.contains("is using the data directory"), "{err}");
    assert!(
        err.contains(&format!("pid {}", server.child.id())),
        "names the server's pid: {err}"
    );
    assert!(err.contains("stop"), "{err}");
    assert_eq!(token(&data), old, "nothing changed");

    // Stopped (even killed: the lock goes with the process), it works.
    drop(server);
    let o = canopy(&["admin", "reset-token", "--data-dir", data_arg]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let new = token(&data);
    assert_ne!(new, old);
    assert!(
        !out.contains(&new) && !err.contains(&new),
        "the token is never printed"
    );
    assert!(
        out.contains("admin.token") && out.contains("canopy login --token-file"),
        "{out}"
    );
    // Its only bootstrap token was already revoked (deleted) by the administrator.
    assert!(out.contains("0 earlier bootstrap"), "{out}");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(data.join("admin.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let server = start(&data).await;
    let (s, me) = call(&server, reqwest::Method::GET, "/canopy/v1/whoami", &new).await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["roles"], serde_json::json!(["canopy-admin"]));
    let (s, _) = call(&server, reqwest::Method::GET, "/canopy/v1/whoami", &old).await;
    assert_eq!(s, 401);
    let (_, audit) = call(
        &server,
        reqwest::Method::GET,
        "/canopy/v1/audit?action=reset-token",
        &new,
    )
    .await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 1, "{audit}");
    assert_eq!(audit["entries"][0]["actor"], "system:admin-reset-token");
    drop(server);

    // A directory without an instance: said so, nothing created.
    let empty = dir.path().join("nothing-here");
    let o = canopy(&[
        "admin",
        "reset-token",
        "--data-dir",
        empty.to_str().unwrap(),
    ]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("no Canopy database"), "{err}");
    assert!(!empty.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_refuses_to_start_over_a_lost_database() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data).await;
    let old = token(&data);
    drop(server);
    for f in ["canopy.db", "canopy.db-wal", "canopy.db-shm"] {
        let _ = std::fs::remove_file(data.join(f));
    }
    // Refused, naming the file and the flag, and quickly (not after a pool timeout).
    let o = server_command(&data, free_port())
        .output()
        .expect("canopy server runs");
    let (_, err) = text(&o);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains(&data.join("canopy.db").display().to_string()),
        "{err}"
    );
    assert!(err.contains("--initialize"), "{err}");
    assert_eq!(token(&data), old, "admin.token was not overwritten");

    // With the flag: a new instance; the old token is kept beside the new one.
    let port = free_port();
    let child = server_command(&data, port)
        .arg("--initialize")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    // (admin.token is missing for a moment while the old one is set aside.)
    while std::fs::read_to_string(data.join("admin.token")).map_or(true, |t| t.trim() == old) {
        assert!(Instant::now() < deadline, "no new instance");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kept = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with("admin.token."))
        .expect("the old token is kept");
    assert_eq!(std::fs::read_to_string(kept.path()).unwrap().trim(), old);
    drop(server);
}
