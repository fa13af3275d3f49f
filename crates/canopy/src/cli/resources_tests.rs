//! `canopy workload`, `canopy vm` and `canopy logs` as a user drives them, in-process against a
//! real test server with the example package edge-demo (a container app and a VM app):
//! simulated agents (`SimAgent`) for lists and actions, whose effect is what the edge receives;
//! a real agent sync loop with a driver double for consoles and logs, which travel through the
//! agent's tunnels. The console relays are also tested against a bare WebSocket server.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use canopy_agent::{AgentConfig, Backoff, Converger, DriverError, TunnelIo};
use canopy_proto::{
    AgentInfo, AppState, AppStatus, DesiredState, PortSpec, StatusKind, StatusReport, TunnelTarget,
    WorkloadControl, WorkloadKind, WorkloadStatus,
};
use canopy_testkit::sim_agent::SimAgent;
use canopy_testkit::{TestControlPlane, example};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::fleet_tests::{canopy, ok};
use super::*;

const P: &str = "default";
const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const DEADLINE: Duration = Duration::from_secs(30);

/// Runs a command that must fail; returns its error output.
async fn fails(cp: &TestControlPlane, args: &[&str]) -> String {
    let (code, out, err) = canopy(cp, args).await;
    assert_eq!(code, 1, "canopy {args:?} should fail:\n{out}{err}");
    err
}

async fn enrollment_secret(cp: &TestControlPlane) -> String {
    let (s, t) = cp
        .post(
            &cp.at(&format!("/canopy/v1/projects/{P}/enrollment-tokens")),
            &json!({"description": "test"}),
        )
        .await;
    assert!(s.is_success(), "{t}");
    t["secret"].as_str().unwrap().to_owned()
}

/// Uploads edge-demo and deploys it, as `demo`, to the edges labelled `site=a`.
async fn deploy_demo(cp: &TestControlPlane) -> String {
    let (s, b) = cp.upload_dir(P, &example("edge-demo")).await;
    assert!(s.is_success(), "upload edge-demo: {b}");
    let (s, d) = cp
        .post(
            &cp.at(&format!("/v1/projects/{P}/appdeployment/deployments")),
            &json!({"appName": "edge-demo", "appVersion": "1.0.0", "displayName": "demo",
                    "allAppTargetClusters": {"labels": {"site": "a"}},
                    "overrideValues": [{"appName": "vm", "values": {
                        "kernelUrl": "https://images.example.com/vmlinuz", "kernelSha256": SHA,
                        "initrdUrl": "https://images.example.com/initrd", "initrdSha256": SHA}}]}),
        )
        .await;
    assert!(s.is_success(), "deploy: {d}");
    d["deploymentId"].as_str().unwrap().to_owned()
}

/// Reports every held app running (its containers `running`, its VMs `vm_state`), from a host
/// named `edge-1.example.com` at 192.0.2.10.
async fn report(agent: &mut SimAgent, vm_state: &str) {
    let mut apps = Vec::new();
    for d in &agent.held.deployments {
        for a in &d.apps {
            let mut workloads: Vec<WorkloadStatus> = a
                .containers
                .iter()
                .map(|c| WorkloadStatus {
                    kind: StatusKind::Container,
                    name: c.name.clone(),
                    image: c.image.clone(),
                    state: "running".into(),
                    restarts: 2,
                    ports: c.ports.clone(),
                    ..Default::default()
                })
                .collect();
            workloads.extend(a.vms.iter().map(|v| {
                WorkloadStatus {
                    kind: StatusKind::Vm,
                    name: v.name.clone(),
                    state: vm_state.into(),
                    message: if vm_state.starts_with("ERROR") {
                        "sha256 mismatch".into()
                    } else {
                        String::new()
                    },
                    ports: v
                        .ports
                        .iter()
                        .map(|p| PortSpec {
                            container_port: p.guest_port,
                            host_port: Some(p.host_port),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }
            }));
            apps.push(AppStatus {
                deployment_id: d.deployment_id.clone(),
                app: a.name.clone(),
                state: AppState::Running,
                message: String::new(),
                deployment_generation: d.generation,
                workloads,
            });
        }
    }
    agent.seq += 1;
    let r = StatusReport {
        protocol_version: 1,
        seq: agent.seq,
        generation: agent.held.generation,
        apps,
        agent: Some(AgentInfo {
            version: "test".into(),
            hostname: "edge-1.example.com".into(),
            addresses: vec!["192.0.2.10".into()],
            ..Default::default()
        }),
    };
    let (s, b) = agent.send(&r).await;
    assert!(s.is_success(), "{b}");
}

/// edge-demo deployed to one simulated edge `e1` that received it.
async fn one_edge() -> (TestControlPlane, SimAgent, String) {
    let cp = TestControlPlane::start().await;
    let secret = enrollment_secret(&cp).await;
    let mut agent = SimAgent::enroll(&cp, &secret, "e1", &[("site", "a")]).await;
    let id = deploy_demo(&cp).await;
    agent
        .poll(5)
        .await
        .expect("the edge receives the deployment");
    (cp, agent, id)
}

/// The control the edge holds for (app, kind) after its next long-poll.
async fn control(agent: &mut SimAgent, app: &str, kind: WorkloadKind) -> WorkloadControl {
    agent.poll(5).await;
    agent
        .held
        .controls
        .iter()
        .find(|c| c.app == app && c.kind == kind)
        .cloned()
        .unwrap_or_else(|| panic!("no {kind:?} control for {app} in {:?}", agent.held))
}

fn row<'a>(out: &'a str, kind: &str, name: &str) -> &'a str {
    out.lines()
        .find(|l| {
            let cells: Vec<&str> = l.split("   ").map(str::trim).collect();
            cells.contains(&kind) && cells.contains(&name)
        })
        .unwrap_or_else(|| panic!("no {kind} {name} row in\n{out}"))
}

#[tokio::test]
async fn workload_list_shows_pods_containers_and_vms() {
    let (cp, mut agent, id) = one_edge().await;

    // Before any report: what should run, not running yet.
    let out = ok(&cp, &["workload", "list"]).await;
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "Edge",
            "Deployment",
            "App",
            "Kind",
            "Name",
            "State",
            "Ready",
            "Restarts",
            "Addresses",
            "Id"
        ]
    );
    let vm = row(&out, "vm", "tiny");
    assert!(vm.contains("PROVISIONING") && vm.contains(" no "), "{vm}");
    let c = row(&out, "container", "httpd");
    assert!(c.contains("ContainerCreating"), "{c}");

    report(&mut agent, "RUNNING").await;
    let out = ok(&cp, &["workload", "list", "--deployment", "demo"]).await;
    let vm = row(&out, "vm", "tiny");
    for part in [
        "e1",
        "demo",
        "vm",
        "RUNNING",
        "yes",
        "edge-1.example.com:18090, 192.0.2.10:18090",
    ] {
        assert!(vm.contains(part), "{part} in {vm}");
    }
    let pod = row(&out, "pod", "RUNNING");
    assert!(pod.contains(" edge-web-") && pod.contains(" yes "), "{pod}");
    let c = row(&out, "container", "httpd");
    assert!(
        c.contains("running") && c.contains("192.0.2.10:18088") && c.contains(" 2 "),
        "{c}"
    );

    // Scripts get every field, with where each workload runs.
    let (code, text, err) = canopy(
        &cp,
        &["--output", "json", "workload", "list", "--edge", "e1"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let items = v.as_array().unwrap();
    assert_eq!(items.len(), 2, "{v}");
    let vm = items
        .iter()
        .find(|w| w["workload"]["type"] == "TYPE_VIRTUAL_MACHINE")
        .unwrap();
    assert_eq!(vm["edgeName"], "e1");
    assert_eq!(vm["deploymentId"], id.as_str());
    assert_eq!(vm["deploymentName"], "demo");
    assert_eq!(vm["app"], "vm");
    assert!(vm["appId"].as_str().unwrap().starts_with("b-"));
    assert_eq!(vm["workload"]["name"], "tiny");
    assert_eq!(vm["workload"]["virtualMachine"]["vnc"], true);
    assert_eq!(vm["endpoints"][0]["ports"][0]["value"], 18090);
    let pod = items
        .iter()
        .find(|w| w["workload"]["type"] == "TYPE_POD")
        .unwrap();
    assert_eq!(pod["workload"]["pod"]["containers"][0]["name"], "httpd");

    // A VM in error shows why.
    report(&mut agent, "ERROR_IMAGE_PULL").await;
    let out = ok(&cp, &["workload", "list"]).await;
    assert!(
        row(&out, "vm", "tiny").contains("ERROR_IMAGE_PULL: sha256 mismatch"),
        "{out}"
    );

    // Unknown scopes are errors that say what to look at.
    let err = fails(&cp, &["workload", "list", "--edge", "nowhere"]).await;
    assert!(
        err.contains("edge nowhere not found") && err.contains("canopy edge list"),
        "{err}"
    );
    let err = fails(&cp, &["workload", "list", "--deployment", "nothing"]).await;
    assert!(err.contains("deployment nothing not found"), "{err}");
}

#[tokio::test]
async fn vm_actions_and_pod_restarts_reach_the_edge() {
    let (cp, mut agent, id) = one_edge().await;
    report(&mut agent, "RUNNING").await;

    let out = ok(&cp, &["vm", "stop", "tiny"]).await;
    assert_eq!(
        out,
        "stopping virtual machine tiny (app vm) on edge e1 (deployment demo); the edge applies \
         it when next in touch\n"
    );
    let c = control(&mut agent, "vm", WorkloadKind::Vm).await;
    assert_eq!(
        (
            c.deployment_id.as_str(),
            c.workload.as_str(),
            c.running,
            c.restarts
        ),
        (id.as_str(), "tiny", false, 0)
    );
    report(&mut agent, "STOPPED").await;
    let out = ok(&cp, &["workload", "list"]).await;
    assert!(
        row(&out, "vm", "tiny").contains("STOPPED (admin DOWN)"),
        "{out}"
    );

    ok(
        &cp,
        &[
            "vm",
            "start",
            "tiny",
            "--edge",
            "e1",
            "--deployment",
            "demo",
        ],
    )
    .await;
    let c = control(&mut agent, "vm", WorkloadKind::Vm).await;
    assert!(c.running && c.restarts == 0, "{c:?}");

    // By id, for scripts.
    let v: Value =
        serde_json::from_str(&ok(&cp, &["--output", "json", "workload", "list"]).await).unwrap();
    let vm_id = v
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["workload"]["name"] == "tiny")
        .unwrap()["workload"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = ok(&cp, &["--output", "json", "vm", "restart", &vm_id]).await;
    let done: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(done["action"], "restart");
    assert_eq!(done["workload"]["id"], vm_id.as_str());
    let c = control(&mut agent, "vm", WorkloadKind::Vm).await;
    assert!(c.running && c.restarts == 1, "{c:?}");

    // Containers are recreated by app, pod or container name.
    let out = ok(&cp, &["workload", "restart", "httpd"]).await;
    assert!(
        out.starts_with("recreating the containers of pod edge-web-"),
        "{out}"
    );
    let c = control(&mut agent, "edge-web", WorkloadKind::Pod).await;
    assert_eq!(c.restarts, 1);
    ok(&cp, &["workload", "restart", "edge-web"]).await;
    assert_eq!(
        control(&mut agent, "edge-web", WorkloadKind::Pod)
            .await
            .restarts,
        2
    );
}

#[tokio::test]
async fn unknown_and_ambiguous_names_are_clear_errors() {
    let (cp, mut a1, _id) = one_edge().await;
    let secret = enrollment_secret(&cp).await;
    let mut a2 = SimAgent::enroll(&cp, &secret, "e2", &[("site", "a")]).await;
    a2.poll(5).await.expect("e2 receives the deployment");
    report(&mut a1, "RUNNING").await;
    report(&mut a2, "RUNNING").await;

    let err = fails(&cp, &["vm", "stop", "tiny"]).await;
    assert!(
        err.starts_with("error: virtual machine \"tiny\" is ambiguous: it runs in 2 places: edge e1 / deployment demo")
            && err.contains("edge e2 / deployment demo")
            && err.contains("--deployment and/or --edge"),
        "{err}"
    );
    // Narrowed to one edge, it works, and only that edge is told.
    ok(&cp, &["vm", "stop", "tiny", "--edge", "e2"]).await;
    let c = control(&mut a2, "vm", WorkloadKind::Vm).await;
    assert!(!c.running);
    a1.poll(1).await;
    assert!(a1.held.controls.is_empty(), "{:?}", a1.held.controls);

    let err = fails(&cp, &["vm", "start", "nope"]).await;
    assert!(
        err.contains("no virtual machine named \"nope\" in project default")
            && err.contains("canopy workload list"),
        "{err}"
    );
    let err = fails(&cp, &["vm", "start", "httpd", "--edge", "e1"]).await;
    assert!(
        err.contains("httpd is a container of pod edge-web-"),
        "{err}"
    );
    let err = fails(&cp, &["vm", "console", "nope", "--edge", "e1"]).await;
    assert!(
        err.contains("no virtual machine named \"nope\" in project default on edge e1"),
        "{err}"
    );
    let err = fails(&cp, &["logs", "nope"]).await;
    assert!(
        err.contains("no container or virtual machine named \"nope\""),
        "{err}"
    );
    let err = fails(&cp, &["logs", "httpd"]).await;
    assert!(err.contains("is ambiguous"), "{err}");
}

// ------------------------------------------------------------------ relays, without a server

/// A WebSocket server echoing every message, at `/ws`.
async fn echo_websocket_server() -> String {
    use axum::extract::ws::WebSocketUpgrade;
    let app = axum::Router::new().route(
        "/ws",
        axum::routing::get(|up: WebSocketUpgrade| async move {
            up.on_upgrade(|mut s| async move {
                while let Some(Ok(m)) = s.recv().await {
                    if matches!(m, axum::extract::ws::Message::Close(_)) || s.send(m).await.is_err()
                    {
                        break;
                    }
                }
            })
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn relay_copies_bytes_both_ways_until_the_local_side_closes() {
    let url = echo_websocket_server().await;
    let client = canopy_client::Client::new(&url, P).unwrap();
    let ws = client.open_websocket(&format!("{url}/ws")).await.unwrap();
    let (mut local, far) = tokio::io::duplex(1024);
    let relay = tokio::spawn(vm::relay(ws, far));
    local.write_all(b"RFB 003.008\n").await.unwrap();
    let mut back = [0u8; 12];
    local.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"RFB 003.008\n");
    local.shutdown().await.unwrap();
    drop(local);
    let (sent, received) = relay.await.unwrap().unwrap();
    assert_eq!((sent, received), (12, 12));
}

/// A writer that also hands what it got to a channel (so a test can wait for output).
struct Tee(Vec<u8>, mpsc::UnboundedSender<Vec<u8>>);

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        let _ = self.1.send(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Types `line`, waits for the console to print it back, then ends the input with `end` (the
/// detach key, or end of input when `None`).
async fn serial_session(
    ws: canopy_client::WebSocket,
    line: &[u8],
    end: Option<u8>,
) -> (vm::SerialEnd, String) {
    let (input, rx) = mpsc::channel(4);
    let (tee, mut seen) = mpsc::unbounded_channel();
    let mut out = Tee(Vec::new(), tee);
    let line = line.to_vec();
    let typing = tokio::spawn(async move {
        input.send(line.clone()).await.unwrap();
        let mut got = Vec::new();
        while got.len() < line.len() {
            got.extend(seen.recv().await.unwrap());
        }
        if let Some(key) = end {
            input.send(vec![key]).await.unwrap();
        }
    });
    let end = tokio::time::timeout(DEADLINE, vm::relay_serial(ws, rx, &mut out, end.is_some()))
        .await
        .expect("the serial session ends")
        .unwrap();
    typing.await.unwrap();
    (end, String::from_utf8(out.0).unwrap())
}

#[tokio::test]
async fn serial_relay_ends_on_end_of_input_or_detach() {
    let url = echo_websocket_server().await;
    let client = canopy_client::Client::new(&url, P).unwrap();
    let ws = client.open_websocket(&format!("{url}/ws")).await.unwrap();
    let (end, out) = serial_session(ws, b"uname -a\n", None).await;
    assert_eq!(
        (end, out.as_str()),
        (vm::SerialEnd::InputEnded, "uname -a\n")
    );
    let ws = client.open_websocket(&format!("{url}/ws")).await.unwrap();
    let (end, out) = serial_session(ws, b"ls\n", Some(vm::DETACH_KEY)).await;
    assert_eq!((end, out.as_str()), (vm::SerialEnd::Detached, "ls\n"));
}

// ------------------------------------------------------------------ through the real server

/// A driver that runs nothing: every app is running; VM `tiny`'s VNC and serial console are a
/// TCP echo server; logs are numbered lines.
#[derive(Clone)]
struct Double {
    echo: std::net::SocketAddr,
}

impl Converger for Double {
    async fn apply(&self, desired: &DesiredState) -> Result<Vec<AppStatus>, DriverError> {
        Ok(running(desired))
    }

    async fn observe(&self, desired: &DesiredState) -> Result<Vec<AppStatus>, DriverError> {
        Ok(running(desired))
    }

    fn engine(&self) -> String {
        "double".into()
    }

    async fn open_tunnel(
        &self,
        _desired: &DesiredState,
        target: &TunnelTarget,
    ) -> Result<TunnelIo, DriverError> {
        match target.clone() {
            TunnelTarget::Vnc { .. } | TunnelTarget::Serial { .. } => {
                let stream = tokio::net::TcpStream::connect(self.echo)
                    .await
                    .expect("echo server");
                Ok(TunnelIo::Duplex(Box::new(stream)))
            }
            TunnelTarget::Logs { workload, tail, .. } => {
                let lines: Vec<std::io::Result<Bytes>> = (1..=tail)
                    .map(|i| Ok(Bytes::from(format!("{workload} line {i}\n"))))
                    .collect();
                Ok(TunnelIo::Source(futures::stream::iter(lines).boxed()))
            }
        }
    }
}

fn running(desired: &DesiredState) -> Vec<AppStatus> {
    desired
        .deployments
        .iter()
        .flat_map(|d| {
            d.apps.iter().map(move |a| AppStatus {
                deployment_id: d.deployment_id.clone(),
                app: a.name.clone(),
                state: AppState::Running,
                deployment_generation: d.generation,
                workloads: a
                    .vms
                    .iter()
                    .map(|vm| WorkloadStatus {
                        kind: StatusKind::Vm,
                        name: vm.name.clone(),
                        state: "RUNNING".into(),
                        vnc: vm.vnc,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
        })
        .collect()
}

async fn echo_tcp_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consoles_and_logs_through_a_real_agent() {
    let cp = TestControlPlane::start().await;
    let secret = enrollment_secret(&cp).await;
    let id = deploy_demo(&cp).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = AgentConfig::new(cp.url.clone(), dir.path());
    config.enroll_token = Some(secret);
    config.name = Some("e1".into());
    config.labels = BTreeMap::from([("site".to_owned(), "a".to_owned())]);
    config.poll_wait = Duration::from_secs(5);
    config.converge_interval = Duration::from_millis(200);
    config.heartbeat = Some(Duration::from_secs(1));
    config.backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    let echo = echo_tcp_server().await;
    let (_stop_agent, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = canopy_agent::run_with(config, Double { echo }, async move {
            let _ = stopped.await;
        })
        .await;
    });
    let started = Instant::now();
    loop {
        let (_, out, _) = canopy(&cp, &["workload", "list"]).await;
        if out
            .lines()
            .any(|l| l.contains(" tiny ") && l.contains("RUNNING"))
        {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "the VM never ran:\n{out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Logs of a container and of a VM, streamed to standard output.
    let out = ok(&cp, &["logs", "httpd", "--tail", "3"]).await;
    assert_eq!(out, "httpd line 1\nhttpd line 2\nhttpd line 3\n");
    let out = ok(
        &cp,
        &[
            "logs",
            "tiny",
            "--deployment",
            "demo",
            "--tail",
            "2",
            "--follow",
        ],
    )
    .await;
    assert_eq!(out, "tiny line 1\ntiny line 2\n");

    // The VNC display on a local port: what a viewer sends comes back from the (echoing) VM.
    let client = canopy_client::Client::new(&cp.url, P)
        .unwrap()
        .with_token(cp.admin_token());
    let vm = client
        .workloads_of_deployment(&id)
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.workload.is_vm())
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn({
        let (client, vm) = (client.clone(), vm.clone());
        async move {
            let mut err = Vec::new();
            vm::serve_vnc(
                listener,
                client,
                vm,
                async {
                    let _ = stopped.await;
                },
                &mut err,
            )
            .await
            .unwrap();
            String::from_utf8(err).unwrap()
        }
    });
    for greeting in [&b"RFB 003.008\n"[..], b"second viewer"] {
        let mut viewer = tokio::net::TcpStream::connect(addr).await.unwrap();
        viewer.write_all(greeting).await.unwrap();
        let mut back = vec![0u8; greeting.len()];
        tokio::time::timeout(DEADLINE, viewer.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, greeting);
    }
    stop.send(()).unwrap();
    assert_eq!(server.await.unwrap(), "", "no connection failed");

    // The serial console in the terminal.
    let ws = client
        .open_vm_serial(&vm.app_id, &vm.edge_id, &vm.workload.id)
        .await
        .unwrap();
    let (end, out) = serial_session(ws, b"root\n", None).await;
    assert_eq!((end, out.as_str()), (vm::SerialEnd::InputEnded, "root\n"));
}
