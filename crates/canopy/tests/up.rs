//! `canopy up` as a new user runs it: the real binary, the control plane on embedded storage
//! (HTTPS with a self-signed certificate, whose printed fingerprint the test pins as a user
//! would) and a local agent on this machine. With no Docker-API socket around, `canopy up`
//! starts Podman's API service itself (podman is installed by `scripts/podman.sh`, whose
//! `containers.conf` the child service is given, as docs/HOST-SETUP.md describes for these
//! hosts; or, run as from a fresh checkout, with the settings `canopy up` finds this host
//! needs). Skipped with a note when `CANOPY_TEST_DOCKER_HOST` is unset, except under CI where
//! that fails.
//!
//! The local agent owns only the engine objects of its own edge (labelled with the edge id), so
//! these tests share the engine with others safely; guards remove what they leave behind.

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
        for _ in 0..300 {
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
    start_up_with(port, data_dir, &[], None)
}

/// [`start_up`] with more arguments, and an engine to use (`DOCKER_HOST`) instead of the
/// Podman service `canopy up` starts by itself.
fn start_up_with(
    port: u16,
    data_dir: &std::path::Path,
    args: &[&str],
    docker_host: Option<&str>,
) -> Up {
    let mut command = Command::new(env!("CARGO_BIN_EXE_canopy"));
    match docker_host {
        Some(host) => command.env("DOCKER_HOST", host),
        None => command.env_remove("DOCKER_HOST"),
    };
    let mut child = command
        .args(["up", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data_dir)
        .args(args)
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

/// Starts `canopy up` in `checkout` as a new user does from a fresh checkout: no `--data-dir`
/// (the default, relative `./canopy-data`), no engine socket and no `CONTAINERS_CONF`, so it
/// starts Podman's API service itself with the settings it finds this host needs. The log of
/// each start goes to `canopy-data.log` next to the data directory.
fn start_up_in(checkout: &std::path::Path, port: u16) -> Up {
    let data_dir = checkout.join("canopy-data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_canopy"))
        .args(["up", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(checkout)
        .env_remove("DOCKER_HOST")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("CONTAINERS_CONF")
        .env(
            "CANOPY_CREDENTIALS",
            data_dir.with_extension("credentials.json"),
        )
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(data_dir.with_extension("log")).expect("log file"))
        .spawn()
        .expect("canopy up starts");
    let mut banner = String::new();
    for line in BufReader::new(child.stdout.take().expect("stdout")).lines() {
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
        data_dir,
    }
}

/// Whether process `pid` is alive (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Kills the Podman service a test made `canopy up` leave behind, if it is still there when the
/// test ends (also when it fails).
struct KillService(std::path::PathBuf);

impl Drop for KillService {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0)
            && let Ok(pid) = pid.trim().parse::<u32>()
            && alive(pid)
            && std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("podman"))
        {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
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
    // The engine's name comes with the agent's first report, which may follow the connection.
    let edge = eventually(
        "the local edge connects and reports its engine",
        async || {
            let e = edges(&http, port).await?;
            match e["edges"].get(0) {
                Some(edge)
                    if edge["connection"] == "CONNECTED"
                        && !edge["engine"].as_str().unwrap_or("").is_empty() =>
                {
                    Ok(edge.clone())
                }
                _ => Err(format!("edges: {e}")),
            }
        },
    )
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
    drop(up);
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap();
    assert!(
        !log.contains("already enrolled"),
        "a restart gives no enrollment settings to ignore: {log}"
    );
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
        // No Helm: `canopy up` starts all the same and says what that means.
        .env("CANOPY_HELM_BIN", "/nonexistent/helm")
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
    assert!(
        banner.contains("Helm        none: Helm-chart applications will be refused")
            && banner.contains("/nonexistent/helm"),
        "{banner}"
    );
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

/// The CLI as the user runs it next to `canopy up`: the credentials `canopy up` saved (pinned
/// certificate, administrator token) and the server's address (`CANOPY_SERVER`, as a user does
/// when the server is not on the default port). Fails the test after 5 minutes.
async fn cli(data_dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_canopy"))
            .args(args)
            .env(
                "CANOPY_CREDENTIALS",
                data_dir.with_extension("credentials.json"),
            )
            .env("CANOPY_SERVER", server(data_dir))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("canopy {args:?} did not end within 5 minutes"))
    .expect("canopy runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The server of the `canopy up` whose data directory is `data_dir` (see `server.url` below).
fn server(data_dir: &std::path::Path) -> String {
    std::fs::read_to_string(data_dir.with_extension("url")).expect("the test wrote the URL")
}

/// Like [`cli`], failing the test when the command fails; its standard output.
async fn cli_ok(data_dir: &std::path::Path, args: &[&str]) -> String {
    let (ok, out, err) = cli(data_dir, args).await;
    assert!(ok, "canopy {args:?} failed:\n{out}\n{err}");
    out
}

/// The README's tour of containers and VMs, as a new user runs it: `canopy up --vm-image-dir`,
/// the example package edge-demo (a container and a VM) deployed with the CLI, both answering,
/// `canopy workload list` showing both, the VM's VNC console through `canopy vm console` (a
/// local port; WebSocket over the server's HTTPS, the certificate pinned), its serial log, a
/// stop and a start, and the deletion removing both. Needs the test VM of scripts/vm-image.sh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_tour_of_containers_and_vms() {
    let Some(engine) = engine_host("the_readme_tour_of_containers_and_vms") else {
        return;
    };
    let vm_var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let (Some(kernel), Some(kernel_sha), Some(initrd), Some(initrd_sha)) = (
        vm_var("CANOPY_TEST_VM_KERNEL"),
        vm_var("CANOPY_TEST_VM_KERNEL_SHA256"),
        vm_var("CANOPY_TEST_VM_INITRD"),
        vm_var("CANOPY_TEST_VM_INITRD_SHA256"),
    ) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CANOPY_TEST_VM_* not set but CI is: this test must not be skipped"
        );
        eprintln!("skipping: CANOPY_TEST_VM_* not set (see scripts/vm-image.sh)");
        return;
    };
    let image_dir = std::path::Path::new(&kernel)
        .parent()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let [port, web_port, vm_port, vnc_port] = free_ports::<4>();
    let up = start_up_with(port, &data, &["--vm-image-dir", &image_dir], Some(&engine));
    std::fs::write(
        data.with_extension("url"),
        format!("https://127.0.0.1:{port}"),
    )
    .unwrap();
    let http = up.client();
    eventually("the local edge connects", async || {
        let e = edges(&http, port).await?;
        match e["edges"].get(0) {
            Some(edge) if edge["connection"] == "CONNECTED" => Ok(()),
            _ => Err(format!("edges: {e}")),
        }
    })
    .await;

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/edge-demo");
    cli_ok(&data, &["catalog", "upload", example]).await;
    // The local test image instead of docker.io's busybox (this machine reaches no registry).
    let sets = [
        format!("edge-web.image={}", support::IMAGE),
        format!("edge-web.port={web_port}"),
        format!("vm.kernelUrl=file://{kernel}"),
        format!("vm.kernelSha256={kernel_sha}"),
        format!("vm.initrdUrl=file://{initrd}"),
        format!("vm.initrdSha256={initrd_sha}"),
        format!("vm.port={vm_port}"),
    ];
    let mut create = vec![
        "deployment",
        "create",
        "edge-demo:1.0.0",
        "--label",
        "host=local",
        "--watch",
    ];
    for s in &sets {
        create.extend(["--set", s.as_str()]);
    }
    let out = cli_ok(&data, &create).await;
    assert!(out.contains("RUNNING"), "{out}");

    // Both answer: the container directly, the VM through QEMU's forward.
    eventually("the container answers", async || {
        let body = support::http_body(web_port).await?;
        body.contains("Hello from a Canopy container")
            .then_some(())
            .ok_or(body)
    })
    .await;
    eventually("the VM answers", async || {
        let body = support::http_body(vm_port).await?;
        body.contains("canopy test vm").then_some(()).ok_or(body)
    })
    .await;
    let list = cli_ok(&data, &["workload", "list"]).await;
    assert!(list.contains("tiny") && list.contains("RUNNING"), "{list}");
    assert!(list.contains("edge-web"), "{list}");

    // The VNC console on a local port: the RFB greeting comes through the agent's tunnel.
    let listen = format!("127.0.0.1:{vnc_port}");
    let mut console = tokio::process::Command::new(env!("CARGO_BIN_EXE_canopy"))
        .args(["vm", "console", "tiny", "--listen", &listen])
        .env(
            "CANOPY_CREDENTIALS",
            data.with_extension("credentials.json"),
        )
        .env("CANOPY_SERVER", server(&data))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("canopy vm console starts");
    let greeting = eventually("the RFB greeting on the console port", async || {
        use tokio::io::AsyncReadExt;
        let mut conn = tokio::net::TcpStream::connect(&listen)
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(20), conn.read_exact(&mut buf))
            .await
            .map_err(|_| "no greeting within 20 s".to_string())?
            .map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    })
    .await;
    assert!(greeting.starts_with("RFB 003."), "{greeting:?}");
    let _ = console.kill().await;

    let log = cli_ok(&data, &["logs", "tiny", "--tail", "50"]).await;
    assert!(log.contains("CANOPY-TEST-VM-BOOTED"), "{log}");

    cli_ok(&data, &["vm", "stop", "tiny"]).await;
    eventually("the VM stopped", async || {
        let list = cli_ok(&data, &["workload", "list"]).await;
        list.contains("STOPPED").then_some(()).ok_or(list)
    })
    .await;
    cli_ok(&data, &["vm", "start", "tiny"]).await;
    eventually("the VM answers again", async || {
        let body = support::http_body(vm_port).await?;
        body.contains("canopy test vm").then_some(()).ok_or(body)
    })
    .await;

    let deployments: Value =
        serde_json::from_str(&cli_ok(&data, &["deployment", "list", "--output", "json"]).await)
            .expect("deployment list --output json is JSON");
    let id = deployments
        .as_array()
        .and_then(|a| a.first())
        .or_else(|| deployments["deployments"].get(0))
        .and_then(|d| d["deployId"].as_str())
        .unwrap_or_else(|| panic!("a deployment id in {deployments}"))
        .to_string();
    cli_ok(&data, &["deployment", "delete", &id, "--watch"]).await;
    eventually("both gone", async || {
        let web = support::http_body(web_port).await;
        let vm = support::http_body(vm_port).await;
        let vms = std::fs::read_dir(data.join("agent/vms"))
            .map(|d| d.count())
            .unwrap_or(0);
        (web.is_err() && vm.is_err() && vms == 0)
            .then_some(())
            .ok_or(format!("web {web:?}, vm {vm:?}, {vms} VM directories"))
    })
    .await;
    drop(up);
}

/// `canopy up` as from a fresh checkout (see [`start_up_in`]): the default relative data
/// directory (Podman's socket used to be handed over relative, and the service exited), its
/// own Podman service with the settings this host needs (a container of the example runs), and
/// after a SIGKILL, which leaves that service running, the next start reuses it; a normal stop
/// stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_from_a_fresh_checkout_runs_podman_itself_and_reuses_it_after_sigkill() {
    let Some(engine) = engine_host("up_from_a_fresh_checkout_runs_podman_itself") else {
        return;
    };
    if system_socket_exists() {
        eprintln!("skipping: a system engine socket exists, so `canopy up` would use it");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let checkout = tmp.path().join("checkout");
    std::fs::create_dir_all(&checkout).unwrap();
    let data = checkout.join("canopy-data");
    let logs = tmp.path().join("logs");
    let mut cleanup = support::Cleanup {
        engine: support::Engine::new(&engine),
        scopes: Vec::new(),
        run: support::unique(),
        logs,
    };
    let _service = KillService(data.join("podman/service.pid"));
    let [port, web_port, status_port] = free_ports::<3>();

    let mut up = start_up_in(&checkout, port);
    let socket = data.join("podman/podman.sock");
    assert!(
        up.banner.contains(&format!(
            "Podman      API service on unix://{}",
            socket.display()
        )),
        "Podman's service on the absolute socket path: {}",
        up.banner
    );
    if up.banner.contains("settings this host needs") {
        let conf = std::fs::read_to_string(data.join("podman/containers.conf"))
            .expect("the settings are in the data directory");
        assert!(
            conf.contains("[containers]") || conf.contains("[engine]"),
            "{conf}"
        );
    }
    std::fs::write(
        data.with_extension("url"),
        format!("https://127.0.0.1:{port}"),
    )
    .unwrap();
    let http = up.client();
    let edge = eventually(
        "the local edge connects and reports its engine",
        async || {
            let e = edges(&http, port).await?;
            match e["edges"].get(0) {
                Some(edge)
                    if edge["connection"] == "CONNECTED"
                        && edge["engine"].as_str().unwrap_or("").contains("Podman") =>
                {
                    Ok(edge.clone())
                }
                _ => Err(format!("edges: {e}")),
            }
        },
    )
    .await;
    cleanup
        .scopes
        .push(edge["id"].as_str().expect("edge id").to_string());

    // A container runs under this service (the settings work).
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/web-demo");
    cli_ok(&data, &["catalog", "upload", example]).await;
    let sets = [
        format!("web.image={}", support::IMAGE),
        format!("web.port={web_port}"),
        format!("status.image={}", support::IMAGE),
        format!("status.port={status_port}"),
    ];
    let mut create = vec![
        "deployment",
        "create",
        "web-demo:1.0.0",
        "--label",
        "host=local",
    ];
    for s in &sets {
        create.extend(["--set", s.as_str()]);
    }
    cli_ok(&data, &create).await;
    eventually("the web app answers", async || {
        let body = support::http_body(web_port).await?;
        body.contains("Hello from Canopy").then_some(()).ok_or(body)
    })
    .await;

    // SIGKILL: the service it started stays behind...
    let pid: u32 = std::fs::read_to_string(data.join("podman/service.pid"))
        .expect("the service's pid is kept")
        .trim()
        .parse()
        .expect("a pid");
    assert!(alive(pid));
    up.child.kill().unwrap();
    up.child.wait().unwrap();
    std::mem::forget(up);
    assert!(alive(pid), "a SIGKILLed canopy up cannot stop its service");

    // ...and the next start reuses it.
    let up = start_up_in(&checkout, port);
    assert!(
        up.banner.contains(&format!("reused: pid {pid}")),
        "{}",
        up.banner
    );
    let http = up.client();
    eventually("the local edge reconnects", async || {
        let e = edges(&http, port).await?;
        match e["edges"].get(0) {
            Some(edge) if edge["connection"] == "CONNECTED" => Ok(()),
            _ => Err(format!("edges: {e}")),
        }
    })
    .await;
    eventually("the web app still answers", async || {
        let body = support::http_body(web_port).await?;
        body.contains("Hello from Canopy").then_some(()).ok_or(body)
    })
    .await;

    // A normal stop (SIGTERM) stops the service it reused.
    drop(up);
    let start = std::time::Instant::now();
    while alive(pid) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "canopy up did not stop the Podman service (pid {pid}) it reused"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether a system engine socket exists (then `canopy up` uses it instead of starting Podman).
fn system_socket_exists() -> bool {
    std::path::Path::new("/run/podman/podman.sock").exists()
        || std::path::Path::new("/var/run/docker.sock").exists()
}
