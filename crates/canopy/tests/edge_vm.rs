//! Containers and virtual machines side by side, end to end: the control plane in process, a real
//! `canopy agent` process, a real container on Podman (`CANOPY_TEST_DOCKER_HOST`, see
//! `scripts/podman.sh`) and a real QEMU VM under TCG (the tiny test VM of `scripts/vm-image.sh`:
//! `CANOPY_TEST_VM_KERNEL`/`_INITRD` and their `_SHA256`). Without those variables the tests are
//! skipped with a note, except under CI (env `CI` set), where that is a failure.
//!
//! The story follows the example package `examples/edge-demo` (a web server container and a
//! tiny VM serving HTTP): deployment, both answering on their host ports, the resource manager's
//! view, VM stop / start / restart, the VNC console through the agent's tunnel, an agent restart
//! that adopts the running VM without rebooting it, and deletion removing the VM, its directory
//! and the container. The VM images are served over HTTP by the test, as an image server would.

#[path = "common/edge_support.rs"]
#[allow(dead_code, unused_imports)] // shared with edge_podman.rs, which uses the rest
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use canopy_server::hub::HubConfig;
use canopy_testkit::{TestControlPlane, example};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{
    AgentProcess, Cleanup, Engine, IMAGE, engine_host, eventually, free_ports, http_body, unique,
};

const MARKER: &str = "CANOPY-TEST-VM-BOOTED";

fn fast() -> HubConfig {
    HubConfig {
        heartbeat: Duration::from_secs(1),
        edge_timeout: Duration::from_secs(10),
        no_target_grace: Duration::from_secs(3),
    }
}

/// The test VM's files and checksums; `None` (skip, with a note) when not configured, outside CI.
struct TestVm {
    kernel: PathBuf,
    kernel_sha256: String,
    initrd: PathBuf,
    initrd_sha256: String,
}

fn test_vm() -> Option<TestVm> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    match (
        var("CANOPY_TEST_VM_KERNEL"),
        var("CANOPY_TEST_VM_KERNEL_SHA256"),
        var("CANOPY_TEST_VM_INITRD"),
        var("CANOPY_TEST_VM_INITRD_SHA256"),
    ) {
        (Some(k), Some(ks), Some(i), Some(is)) => Some(TestVm {
            kernel: k.into(),
            kernel_sha256: ks,
            initrd: i.into(),
            initrd_sha256: is,
        }),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "CANOPY_TEST_VM_* are not set but CI is: the VM end-to-end tests must not be \
                     skipped. Run scripts/vm-image.sh and export the lines it prints."
                );
            }
            eprintln!("skipping edge_vm: CANOPY_TEST_VM_* unset (see scripts/vm-image.sh)");
            None
        }
    }
}

/// Serves the VM's kernel and initrd over HTTP on loopback (`/vmlinuz`, `/initrd.img`) and counts
/// the downloads.
async fn image_server(vm: &TestVm) -> (String, tokio::task::JoinHandle<()>) {
    let kernel = tokio::fs::read(&vm.kernel).await.expect("test VM kernel");
    let initrd = tokio::fs::read(&vm.initrd).await.expect("test VM initrd");
    let app = axum::Router::new()
        .route(
            "/vmlinuz",
            axum::routing::get(move || async move { kernel.clone() }),
        )
        .route(
            "/initrd.img",
            axum::routing::get(move || async move { initrd.clone() }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

/// Kills every QEMU process of an agent data directory when dropped (the agent leaves VMs
/// running by design, so a failing test must not leak them).
struct VmReaper(PathBuf);

impl Drop for VmReaper {
    fn drop(&mut self) {
        for pid in qemu_pids(&self.0) {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
    }
}

/// The pids in `<data dir>/vms/*/qemu.pid` whose process is alive.
fn qemu_pids(data_dir: &Path) -> Vec<u32> {
    let Ok(dirs) = std::fs::read_dir(data_dir.join("vms")) else {
        return Vec::new();
    };
    dirs.flatten()
        .filter_map(|d| std::fs::read_to_string(d.path().join("qemu.pid")).ok())
        .filter_map(|p| p.trim().parse::<u32>().ok())
        .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
        .collect()
}

/// The VNC ports the QEMU processes of an agent data directory serve (`-vnc 127.0.0.1:N` is
/// port 5900 + N).
fn qemu_vnc_ports(data_dir: &Path) -> Vec<u16> {
    qemu_pids(data_dir)
        .into_iter()
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .filter_map(|cmdline| {
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let at = args.iter().position(|a| a == "-vnc")?;
            let display: u16 = args.get(at + 1)?.rsplit_once(':')?.1.parse().ok()?;
            Some(5900 + display)
        })
        .collect()
}

/// The VM directories under the agent's data directory.
fn vm_dirs(data_dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(data_dir.join("vms"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

/// How many times the VM printed its boot marker (its serial log survives reboots).
fn boots(dir: &Path) -> usize {
    let mut n = 0;
    for f in ["serial.log.1", "serial.log"] {
        n += std::fs::read_to_string(dir.join(f))
            .unwrap_or_default()
            .matches(MARKER)
            .count();
    }
    n
}

struct Env<'a> {
    cp: &'a TestControlPlane,
    project: String,
    id: String,
}

impl Env<'_> {
    fn res(&self, rest: &str) -> String {
        self.cp
            .at(&format!("/v1/projects/{}/resource{rest}", self.project))
    }

    /// `App.id` of `app`, once the deployment has reached the edge.
    async fn app_id(&self, app: &str) -> String {
        let url = self.cp.at(&format!(
            "/v1/projects/{}/appdeployment/deployments/{}/clusters",
            self.project, self.id
        ));
        eventually(&format!("app {app} on the edge"), async || {
            let (s, b) = self.cp.get(&url).await;
            b["clusters"][0]["apps"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["name"] == app))
                .and_then(|a| a["id"].as_str())
                .map(str::to_string)
                .ok_or_else(|| format!("{s} {b}"))
        })
        .await
    }

    async fn workloads(&self, app_id: &str, edge: &str) -> Vec<Value> {
        let (s, b) = self
            .cp
            .get(&self.res(&format!("/workloads/applications/{app_id}/clusters/{edge}")))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["appWorkloads"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until the VM's reported state (and admin state) are the ones wanted.
    async fn vm_reaches(&self, app_id: &str, edge: &str, state: &str, admin: &str) -> Value {
        eventually(&format!("VM {state}/{admin}"), async || {
            let w = self.workloads(app_id, edge).await;
            let vm = w.first().cloned().unwrap_or_default();
            let v = &vm["virtualMachine"];
            if v["status"]["state"] == state && v["adminStatus"]["state"] == admin {
                Ok(vm)
            } else {
                Err(format!("{}", v))
            }
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_and_a_vm_side_by_side() {
    let Some(engine_url) = engine_host("edge_vm") else {
        return;
    };
    let Some(vm) = test_vm() else {
        return;
    };
    let run = unique();
    let project = format!("vm-{run}");
    let logs = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let scope = format!("vm{run}");
    let _cleanup = Cleanup {
        engine: Engine::new(&engine_url),
        scopes: vec![scope.clone()],
        run: run.clone(),
        logs: logs.path().to_path_buf(),
    };
    let cp = TestControlPlane::start_fleet(fast()).await;
    cp.create_project(&project).await;
    let (s, b) = cp.upload_dir(&project, &example("edge-demo")).await;
    assert_eq!(s, StatusCode::OK, "upload edge-demo: {b}");
    let (images, _server) = image_server(&vm).await;

    let (s, t) = cp
        .post(
            &cp.at(&format!("/canopy/v1/projects/{project}/enrollment-tokens")),
            &json!({"description": "edge_vm"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let edge = format!("edge-{run}");
    let mut agent = AgentProcess::new(
        &edge,
        &cp.url,
        &engine_url,
        &scope,
        &[("site", &run)],
        root.path(),
        logs.path(),
    );
    let _reaper = VmReaper(agent.data_dir.clone());
    agent.start(t["secret"].as_str());

    let [web_port, vm_port] = free_ports();
    let (s, d) = cp
        .post(
            &cp.at(&format!("/v1/projects/{project}/appdeployment/deployments")),
            &json!({"appName": "edge-demo", "appVersion": "1.0.0", "displayName": "demo",
                    "allAppTargetClusters": {"labels": {"site": run}},
                    "overrideValues": [
                        {"appName": "edge-web", "values": {"image": IMAGE, "port": web_port}},
                        {"appName": "vm", "values": {
                            "kernelUrl": format!("{images}/vmlinuz"), "kernelSha256": vm.kernel_sha256,
                            "initrdUrl": format!("{images}/initrd.img"), "initrdSha256": vm.initrd_sha256,
                            "port": vm_port}}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "deploy: {d}");
    let env = Env {
        cp: &cp,
        project: project.clone(),
        id: d["deploymentId"].as_str().unwrap().to_string(),
    };

    // Both answer on their host ports: the container directly, the VM through QEMU's forward.
    eventually("the VM's HTTP port answers", async || {
        let body = http_body(vm_port).await?;
        if body.contains("canopy test vm") {
            Ok(())
        } else {
            Err(format!("it answered {body:?}"))
        }
    })
    .await;
    eventually("the container's HTTP port answers", async || {
        http_body(web_port).await
    })
    .await;

    // The resource manager's view: a pod and a VM, both ready, with their endpoints.
    let web = env.app_id("edge-web").await;
    let vm_app = env.app_id("vm").await;
    let pod = eventually("the pod runs", async || {
        let w = env.workloads(&web, &edge).await;
        match w.first() {
            Some(p) if p["pod"]["status"]["state"] == "STATE_RUNNING" => Ok(p.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(pod["type"], "TYPE_POD");
    let running = env
        .vm_reaches(&vm_app, &edge, "STATE_RUNNING", "STATE_UP")
        .await;
    assert_eq!(running["virtualMachine"]["accelerator"], "tcg", "{running}");
    let vm_id = running["id"].as_str().unwrap().to_string();
    let (s, b) = cp
        .get(&env.res(&format!("/endpoints/applications/{vm_app}/clusters/{edge}")))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["appEndpoints"][0]["ports"][0]["value"], vm_port, "{b}");

    let dirs = vm_dirs(&agent.data_dir);
    assert_eq!(dirs.len(), 1, "one VM directory: {dirs:?}");
    let dir = dirs[0].clone();
    assert!(
        dir.join("spec.json").is_file(),
        "the VM's state lives in its directory"
    );
    let first_pid = qemu_pids(&agent.data_dir);
    assert_eq!(first_pid.len(), 1, "one QEMU process");
    eventually("the VM booted once", async || match boots(&dir) {
        1 => Ok(()),
        n => Err(format!("{n} boot markers")),
    })
    .await;

    // Stop, start, restart through the API.
    let action = |what: &str| {
        env.res(&format!(
            "/workloads/applications/{vm_app}/clusters/{edge}/virtual-machines/{vm_id}/{what}"
        ))
    };
    let (s, b) = cp.put(&action("stop"), &json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    env.vm_reaches(&vm_app, &edge, "STATE_STOPPED", "STATE_DOWN")
        .await;
    assert!(
        qemu_pids(&agent.data_dir).is_empty(),
        "QEMU is gone after stop"
    );
    assert!(dir.join("spec.json").is_file(), "stopping keeps the VM");
    cp.put(&action("start"), &json!({})).await;
    env.vm_reaches(&vm_app, &edge, "STATE_RUNNING", "STATE_UP")
        .await;
    eventually("the VM booted again", async || match boots(&dir) {
        2 => Ok(()),
        n => Err(format!("{n} boot markers")),
    })
    .await;
    cp.put(&action("restart"), &json!({})).await;
    eventually("the VM rebooted", async || match boots(&dir) {
        3 => Ok(()),
        n => Err(format!("{n} boot markers")),
    })
    .await;
    env.vm_reaches(&vm_app, &edge, "STATE_RUNNING", "STATE_UP")
        .await;
    eventually("the VM's HTTP port answers after the restart", async || {
        http_body(vm_port).await
    })
    .await;

    // The VNC console through the agent's tunnel: the RFB handshake starts.
    let (s, b) = cp.get(&action("vnc")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let address = b["address"].as_str().unwrap().to_string();
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            address.as_str(),
        )
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", cp.admin_token()).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .unwrap_or_else(|e| panic!("VNC websocket {address}: {e}"));
    let banner = tokio::time::timeout(Duration::from_secs(20), async {
        let mut got = Vec::new();
        while got.len() < 12 {
            match ws.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b))) => {
                    got.extend_from_slice(&b)
                }
                Some(Ok(_)) => {}
                other => panic!("VNC stream ended: {other:?}"),
            }
        }
        got
    })
    .await
    .expect("the RFB banner within 20 s");
    assert!(
        banner.starts_with(b"RFB 003.008"),
        "{:?}",
        String::from_utf8_lossy(&banner)
    );
    let _ = ws.close(None).await;

    // `canopy vm console` without --listen: a free local port, printed as the address to open
    // (5900, the old default, is where this VM's own QEMU serves VNC when it was free).
    let qemu_vnc = qemu_vnc_ports(&agent.data_dir);
    let credentials = tempfile::tempdir().unwrap();
    let console = |extra: &[&str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_canopy"));
        cmd.args(["vm", "console", "tiny"])
            .args(extra)
            .env("CANOPY_SERVER", &cp.url)
            .env("CANOPY_PROJECT", &project)
            .env("CANOPY_TOKEN", cp.admin_token())
            .env(
                "CANOPY_CREDENTIALS",
                credentials.path().join("credentials.json"),
            )
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        cmd
    };
    let mut viewer = console(&[]).spawn().expect("canopy vm console starts");
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(viewer.stdout.take().unwrap()));
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("canopy vm console prints its address within 60 s")
        .unwrap();
    let Some(line) = line else {
        let mut stderr = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(
            &mut viewer.stderr.take().unwrap(),
            &mut stderr,
        )
        .await;
        panic!(
            "canopy vm console exited ({:?}): {stderr}",
            viewer.wait().await
        );
    };
    let port: u16 = line
        .split_once("vnc://127.0.0.1:")
        .and_then(|(_, rest)| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no vnc://127.0.0.1:PORT in {line:?}"));
    assert!(!qemu_vnc.contains(&port), "{port} is QEMU's ({qemu_vnc:?})");
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("the printed port {port}: {e}"));
    let mut greeting = [0u8; 12];
    tokio::time::timeout(
        Duration::from_secs(20),
        tokio::io::AsyncReadExt::read_exact(&mut conn, &mut greeting),
    )
    .await
    .expect("the RFB greeting on the printed port within 20 s")
    .unwrap();
    assert!(greeting.starts_with(b"RFB 003."), "{greeting:?}");
    drop(conn);
    let _ = viewer.kill().await;

    // A port given with --listen that is taken: a clear error, at once.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        console(&["--listen", &taken_port.to_string()]).output(),
    )
    .await
    .expect("canopy vm console gives up within 60 s")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("port {taken_port} is already in use on 127.0.0.1"))
            && stderr.contains("leave --listen out"),
        "{stderr}"
    );
    drop(taken);

    // An agent restart adopts the running VM: same QEMU process, no reboot.
    let before = qemu_pids(&agent.data_dir);
    let boots_before = boots(&dir);
    agent.kill().await;
    agent.start(None);
    // Wait for the new process to have applied its desired state: the VM was RUNNING before
    // the restart, so the state alone proves nothing about the restarted agent.
    eventually(
        "the restarted agent to apply its desired state",
        async || {
            let log = agent.log();
            if log.contains("applied desired state")
                && log.contains("connected to the control plane")
            {
                Ok(())
            } else {
                Err(log)
            }
        },
    )
    .await;
    env.vm_reaches(&vm_app, &edge, "STATE_RUNNING", "STATE_UP")
        .await;
    assert_eq!(
        qemu_pids(&agent.data_dir),
        before,
        "the VM was adopted, not restarted"
    );
    assert_eq!(boots(&dir), boots_before, "no reboot on adoption");

    // Delete: the VM, its directory (overlays, seed, logs), and the container go.
    let (s, b) = cp
        .delete(&cp.at(&format!(
            "/v1/projects/{project}/appdeployment/deployments/{}",
            env.id
        )))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    eventually("the VM and its overlay are removed", async || {
        if vm_dirs(&agent.data_dir).is_empty() && qemu_pids(&agent.data_dir).is_empty() {
            Ok(())
        } else {
            Err(format!("{:?}", vm_dirs(&agent.data_dir)))
        }
    })
    .await;
    eventually("the container is removed", async || {
        match http_body(web_port).await {
            Err(_) => Ok(()),
            Ok(b) => Err(format!("still answers {b:?}")),
        }
    })
    .await;
}

/// A VM whose image does not match its checksum: the API says why, nothing is left on the edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_checksum_is_reported_and_leaves_nothing() {
    let Some(engine_url) = engine_host("edge_vm") else {
        return;
    };
    let Some(vm) = test_vm() else {
        return;
    };
    let run = unique();
    let project = format!("vmbad-{run}");
    let logs = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let scope = format!("vb{run}");
    let _cleanup = Cleanup {
        engine: Engine::new(&engine_url),
        scopes: vec![scope.clone()],
        run: run.clone(),
        logs: logs.path().to_path_buf(),
    };
    let cp = TestControlPlane::start_fleet(fast()).await;
    cp.create_project(&project).await;
    let (s, b) = cp.upload_dir(&project, &example("edge-demo")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (images, _server) = image_server(&vm).await;
    let (_, t) = cp
        .post(
            &cp.at(&format!("/canopy/v1/projects/{project}/enrollment-tokens")),
            &json!({"description": "edge_vm"}),
        )
        .await;
    let edge = format!("edge-{run}");
    let mut agent = AgentProcess::new(
        &edge,
        &cp.url,
        &engine_url,
        &scope,
        &[("site", &run)],
        root.path(),
        logs.path(),
    );
    let _reaper = VmReaper(agent.data_dir.clone());
    agent.start(t["secret"].as_str());
    let [web_port, vm_port] = free_ports();
    let wrong = "0".repeat(64);
    let (s, d) = cp
        .post(
            &cp.at(&format!("/v1/projects/{project}/appdeployment/deployments")),
            &json!({"appName": "edge-demo", "appVersion": "1.0.0", "displayName": "bad",
                    "allAppTargetClusters": {"labels": {"site": run}},
                    "overrideValues": [
                        {"appName": "edge-web", "values": {"image": IMAGE, "port": web_port}},
                        {"appName": "vm", "values": {
                            "kernelUrl": format!("{images}/vmlinuz"), "kernelSha256": wrong,
                            "initrdUrl": format!("{images}/initrd.img"), "initrdSha256": vm.initrd_sha256,
                            "port": vm_port}}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    let env = Env {
        cp: &cp,
        project: project.clone(),
        id: d["deploymentId"].as_str().unwrap().to_string(),
    };
    let vm_app = env.app_id("vm").await;
    let w = eventually("the VM reports the image error", async || {
        let w = env.workloads(&vm_app, &edge).await;
        let state = w
            .first()
            .map(|v| v["virtualMachine"]["status"]["state"].clone());
        match state.as_ref().and_then(Value::as_str) {
            Some("STATE_ERROR_IMAGE_PULL" | "STATE_ERROR_IMAGE_PULL_BACKOFF") => Ok(w[0].clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let message = w["virtualMachine"]["status"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("sha256") || message.contains("checksum"),
        "{w}"
    );
    // The deployment's status says which edge, app, VM and image, and why.
    eventually("the deployment status names the mismatch", async || {
        let (_, b) = cp
            .get(&cp.at(&format!(
                "/v1/projects/{project}/appdeployment/deployments/{}",
                env.id
            )))
            .await;
        let status = &b["deployment"]["status"];
        let message = status["message"].as_str().unwrap_or_default();
        if message.contains("sha256 mismatch") && status["summary"]["down"] == 1 {
            Ok(())
        } else {
            Err(format!("{status}"))
        }
    })
    .await;
    assert!(
        vm_dirs(&agent.data_dir).is_empty(),
        "no VM directory is left"
    );
    assert!(qemu_pids(&agent.data_dir).is_empty(), "no QEMU runs");
    let cached: Vec<_> = walk(&agent.data_dir.join("cache"));
    assert!(
        cached
            .iter()
            .all(|p| !p.to_string_lossy().contains(&"0".repeat(64))),
        "the wrong download is not cached: {cached:?}"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
