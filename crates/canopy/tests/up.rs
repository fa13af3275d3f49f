//! `canopy up` as a new user runs it: the real binary, the control plane on embedded storage
//! (HTTPS with a self-signed certificate, whose printed fingerprint the test pins as a user
//! would) and a local agent on this machine. With no Docker-API socket around, `canopy up`
//! starts Podman's API service itself (podman is installed by `scripts/podman.sh`, whose
//! `containers.conf` the child service is given, as MACHINE.md requires on these hosts). Skipped
//! with a note when `CANOPY_TEST_DOCKER_HOST` is unset, except under CI where that fails.

#[path = "common/edge_support.rs"]
#[allow(
    dead_code,
    unused_imports,
    reason = "shared helpers; this test uses a few"
)]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{engine_host, eventually, free_ports};

struct Up {
    child: Child,
    banner: String,
    data_dir: std::path::PathBuf,
}

impl Up {
    /// The certificate fingerprint the banner prints.
    fn fingerprint(&self) -> canopy_tls::Fingerprint {
        let line = self
            .banner
            .lines()
            .find_map(|l| l.strip_prefix("TLS certificate fingerprint: "))
            .unwrap_or_else(|| panic!("the banner prints the fingerprint: {}", self.banner));
        canopy_tls::Fingerprint::parse(line).expect("a valid fingerprint")
    }

    /// An HTTP client that trusts exactly the printed certificate (and carries the bootstrap
    /// administrator's token, when the server wrote one).
    fn client(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(token) = std::fs::read_to_string(self.data_dir.join("admin.token")) {
            let value = format!("Bearer {}", token.trim());
            headers.insert(reqwest::header::AUTHORIZATION, value.parse().unwrap());
        }
        canopy_tls::configure(
            reqwest::Client::builder().default_headers(headers),
            &canopy_tls::ClientTrust::Pinned(self.fingerprint()),
        )
        .unwrap()
        .build()
        .unwrap()
    }
}

impl Drop for Up {
    /// Ctrl-C's way (SIGTERM): `canopy up` stops its agent, its server and the Podman service
    /// it started; SIGKILL only if that takes too long.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `canopy up` and reads its banner (up to "Stop with Ctrl-C").
fn start_up(port: u16, data_dir: &std::path::Path) -> Up {
    let mut child = Command::new(env!("CARGO_BIN_EXE_canopy"))
        .args(["up", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data_dir)
        .env_remove("DOCKER_HOST")
        .env_remove("XDG_RUNTIME_DIR")
        .env(
            "CANOPY_CREDENTIALS",
            data_dir.with_extension("credentials.json"),
        )
        .env("CONTAINERS_CONF", "/var/tmp/canopy-podman/containers.conf")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(data_dir.with_extension("log")).expect("log file"))
        .spawn()
        .expect("canopy up starts");
    let mut banner = String::new();
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    for line in lines.by_ref() {
        let line = line.expect("banner line");
        banner.push_str(&line);
        banner.push('\n');
        if line.starts_with("Stop with Ctrl-C") {
            break;
        }
    }
    Up {
        child,
        banner,
        data_dir: data_dir.to_owned(),
    }
}

async fn edges(http: &reqwest::Client, port: u16) -> Result<Value, String> {
    let body: Value = http
        .get(format!(
            "https://127.0.0.1:{port}/canopy/v1/projects/default/edges"
        ))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    Ok(body)
}

#[tokio::test]
async fn up_runs_a_control_plane_and_a_local_agent() {
    if engine_host("up_runs_a_control_plane_and_a_local_agent").is_none() {
        return;
    }
    if std::path::Path::new("/run/podman/podman.sock").exists()
        || std::path::Path::new("/var/run/docker.sock").exists()
    {
        eprintln!(
            "note: a system engine socket exists; `canopy up` uses it instead of starting Podman"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let [port] = free_ports::<1>();

    let up = start_up(port, &data);
    assert!(
        up.banner.contains(&format!("https://127.0.0.1:{port}")),
        "{}",
        up.banner
    );
    let fingerprint = up.fingerprint();
    assert!(
        up.banner
            .contains(&format!("--server-fingerprint {fingerprint}")),
        "the banner says how to trust the server: {}",
        up.banner
    );
    let http = up.client();
    assert!(
        up.banner
            .contains("deployment create web-demo:1.0.0 --label host=local"),
        "the banner says what to do next: {}",
        up.banner
    );
    assert!(
        up.banner.contains("Local edge  edge \"local\""),
        "{}",
        up.banner
    );
    let edge = eventually("the local edge connects", async || {
        let e = edges(&http, port).await?;
        match e["edges"].get(0) {
            Some(edge) if edge["connection"] == "CONNECTED" => Ok(edge.clone()),
            _ => Err(format!("edges: {e}")),
        }
    })
    .await;
    assert_eq!(edge["name"], "local");
    assert_eq!(edge["labels"]["host"], "local");
    assert!(
        edge["engine"]
            .as_str()
            .unwrap_or("")
            .to_lowercase()
            .contains("podman"),
        "{edge}"
    );
    let id = edge["id"].as_str().unwrap().to_string();
    drop(up);
    // The first start's log says where the administrator token is, never the token itself.
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap();
    assert!(log.contains("admin.token"), "{log}");
    assert!(!log.contains(token.trim()), "the token leaked into the log");

    // A second start reuses the enrolled edge (its credential is in the data directory).
    let up = start_up(port, &data);
    assert!(up.banner.contains("Local edge"), "{}", up.banner);
    assert_eq!(
        up.fingerprint(),
        fingerprint,
        "the certificate is kept across restarts"
    );
    let again = eventually("the local edge reconnects", async || {
        let e = edges(&http, port).await?;
        match e["edges"].as_array() {
            Some(list) if list.len() == 1 && list[0]["connection"] == "CONNECTED" => {
                Ok(list[0].clone())
            }
            _ => Err(format!("edges: {e}")),
        }
    })
    .await;
    assert_eq!(
        again["id"],
        id.as_str(),
        "same edge, not a second enrollment"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(up);
}

#[tokio::test]
async fn up_without_agent_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let [port] = free_ports::<1>();
    let mut child = Command::new(env!("CARGO_BIN_EXE_canopy"))
        .args([
            "up",
            "--no-agent",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(&data)
        .env("CANOPY_CREDENTIALS", dir.path().join("credentials.json"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        banner.push_str(&line);
        banner.push('\n');
        if line.starts_with("Stop with Ctrl-C") {
            break;
        }
    }
    // The CLI on this machine is set up: it pins the certificate and acts as the administrator,
    // with no flag and no token on the command line.
    let whoami = Command::new(env!("CARGO_BIN_EXE_canopy"))
        .args(["--server", &format!("https://127.0.0.1:{port}"), "whoami"])
        .env("CANOPY_CREDENTIALS", dir.path().join("credentials.json"))
        .env_remove("CANOPY_TOKEN")
        .env_remove("CANOPY_SERVER_FINGERPRINT")
        .env_remove("CANOPY_CA_FILE")
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(banner.contains("no local agent (--no-agent)"), "{banner}");
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    assert!(
        !banner.contains(token.trim()),
        "the banner never shows the token"
    );
    let out = String::from_utf8_lossy(&whoami.stdout);
    assert!(
        whoami.status.success() && out.contains("canopy-admin"),
        "{out}{}",
        String::from_utf8_lossy(&whoami.stderr)
    );
}
