//! Tunnels from users to edge workloads, end to end: a control plane, a **real agent sync
//! loop** (`canopy_agent::run_with`) whose driver is a double (its VMs' VNC and serial console
//! are a local TCP echo server, its logs canned lines), a deployed app with a container and two
//! VMs, and users reaching them through the control plane: VNC and serial consoles as
//! WebSockets, logs as streamed text, the agent's errors as JSON errors, access checked, the
//! broker's limits enforced, over plain HTTP and over HTTPS.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use canopy_agent::{AgentConfig, Backoff, Converger, DriverError, TunnelIo};
use canopy_proto::{
    AppState, AppStatus, DesiredState, PROTOCOL_HEADER, StatusKind, TUNNEL_UPGRADE, TunnelRequests,
    TunnelTarget, WorkloadKind, WorkloadStatus,
};
use canopy_server::tunnels::TunnelLimits;
use canopy_testkit::TestControlPlane;
use canopy_testkit::sim_agent::SimAgent;
use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const P: &str = "default";
const LABEL: (&str, &str) = ("site", "tunnels");
const DEADLINE: Duration = Duration::from_secs(30);
const SHA: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

// ------------------------------------------------------------------ the driver double

/// A driver that runs nothing: every app is `RUNNING`; VM `vm1`'s VNC and serial console are a
/// TCP echo server; any other VM "does not exist"; logs are numbered lines (then, with
/// `follow`, a new line every 50 ms).
#[derive(Clone)]
struct Double {
    echo: SocketAddr,
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
            TunnelTarget::Vnc { vm, .. } | TunnelTarget::Serial { vm, .. } if vm == "vm1" => {
                let stream = tokio::net::TcpStream::connect(self.echo)
                    .await
                    .expect("echo server");
                Ok(TunnelIo::Duplex(Box::new(stream)))
            }
            TunnelTarget::Vnc { vm, .. } | TunnelTarget::Serial { vm, .. } => {
                Err(DriverError::NoSuchWorkload {
                    what: format!("vm {vm}"),
                })
            }
            TunnelTarget::Logs {
                workload,
                follow,
                tail,
                ..
            } => {
                let past: Vec<std::io::Result<Bytes>> = (1..=tail)
                    .map(|i| Ok(Bytes::from(format!("{workload} line {i}\n"))))
                    .collect();
                let past = futures::stream::iter(past);
                let source = if follow {
                    let more = futures::stream::unfold(0u32, |n| async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Some((Ok(Bytes::from(format!("more {n}\n"))), n + 1))
                    });
                    past.chain(more).boxed()
                } else {
                    past.boxed()
                };
                Ok(TunnelIo::Source(source))
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

/// A TCP server echoing every byte, until the client closes.
async fn echo_server() -> SocketAddr {
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

// ------------------------------------------------------------------ the control plane

/// A control plane as the tests use it: plain HTTP (the testkit) or HTTPS (started here, with
/// a self-signed certificate the clients pin).
struct Plane {
    url: String,
    admin: reqwest::Client,
    admin_token: String,
    app: canopy_server::App,
    tls: Option<canopy_tls::Fingerprint>,
    _cp: Option<TestControlPlane>,
    _https: Option<(tokio::sync::oneshot::Sender<()>, tempfile::TempDir)>,
}

impl Plane {
    async fn http() -> Plane {
        let cp = TestControlPlane::start().await;
        Plane {
            url: cp.url.clone(),
            admin: cp.http().clone(),
            admin_token: cp.admin_token().to_string(),
            app: cp.app().clone(),
            tls: None,
            _cp: Some(cp),
            _https: None,
        }
    }

    async fn https() -> Plane {
        let dir = tempfile::tempdir().unwrap();
        let config = canopy_server::ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: dir.path().to_owned(),
            database_url: None,
            tls: Some(canopy_tls::ServerTls::SelfSigned {
                dir: dir.path().to_owned(),
            }),
            fleet: Default::default(),
            auth: Default::default(),
            tenancy: Default::default(),
            limits: Default::default(),
            audit_retention: canopy_server::DEFAULT_AUDIT_RETENTION,
            public_url: None,
            uploads: Default::default(),
            initialize: false,
            helm: Default::default(),
            metrics_listen: None,
            peer_url: None,
        };
        let server = canopy_server::Server::bind(&config).await.unwrap();
        let url = server.url().unwrap();
        let pin = server.tls_certificate().unwrap().fingerprint();
        let app = server.app().clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        let admin_token =
            std::fs::read_to_string(dir.path().join(canopy_server::app::ADMIN_TOKEN_FILE))
                .unwrap()
                .trim()
                .to_string();
        let admin = client_with(Some(pin), Some(&admin_token), false);
        Plane {
            url,
            admin,
            admin_token,
            app,
            tls: Some(pin),
            _cp: None,
            _https: Some((tx, dir)),
        }
    }

    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// A client trusting this plane, sending `token` (if any).
    fn client(&self, token: Option<&str>) -> reqwest::Client {
        client_with(self.tls, token, false)
    }

    async fn json(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn user_token(&self, name: &str, roles: &[&str]) -> String {
        let (s, b) = self
            .json(
                self.admin
                    .post(self.at("/canopy/v1/users"))
                    .json(&json!({"name": name, "roles": roles})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let (s, b) = self
            .json(
                self.admin
                    .post(self.at("/canopy/v1/tokens"))
                    .json(&json!({"name": "t", "user": name})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        b["token"].as_str().unwrap().to_string()
    }

    async fn enrollment_token(&self) -> String {
        let (s, b) = self
            .json(
                self.admin
                    .post(self.at(&format!("/canopy/v1/projects/{P}/enrollment-tokens")))
                    .json(&json!({"description": "tunnels"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        b["secret"].as_str().unwrap().to_string()
    }
}

fn client_with(
    pin: Option<canopy_tls::Fingerprint>,
    token: Option<&str>,
    http1: bool,
) -> reqwest::Client {
    let mut b = reqwest::Client::builder().timeout(Duration::from_secs(60));
    if let Some(pin) = pin {
        let mut tls = canopy_tls::client_config(&canopy_tls::ClientTrust::Pinned(pin))
            .unwrap()
            .unwrap();
        if http1 {
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        b = b.use_preconfigured_tls(tls);
    }
    if http1 {
        b = b.http1_only();
    }
    if let Some(t) = token {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
        b = b.default_headers(h);
    }
    b.build().unwrap()
}

// ------------------------------------------------------------------ a deployed edge

const APP_YAML: &str = "specSchema: Application\nschemaVersion: \"0.1\"\n$schema: \"https://schema.intel.com/catalog.orchestrator/0.1/schema\"\nname: console\ndescription: consoles and logs\nversion: 1.0.0\nworkloadTemplate: |\n  containers:\n    - name: web\n      image: localhost/busybox:canopy-test\n  vms:\n    - {name: vm1, memory: 64, image: {url: \"https://x.example/d.qcow2\", sha256: \"SHA\"}, vnc: true}\n    - {name: plain, memory: 64, image: {url: \"https://x.example/d.qcow2\", sha256: \"SHA\"}}\ndefaultProfile: default\nprofiles:\n  - name: default\n";

const PKG_YAML: &str = "specSchema: DeploymentPackage\nschemaVersion: \"0.1\"\n$schema: \"https://schema.intel.com/catalog.orchestrator/0.1/schema\"\nname: console-pkg\ndescription: consoles\nversion: 1.0.0\napplications:\n  - {name: console, version: 1.0.0}\ndeploymentProfiles:\n  - name: default\n    applicationProfiles:\n      - {application: console, profile: default}\ndefaultProfile: default\n";

/// An edge `e1` running the `console` app (container `web`, VMs `vm1` with VNC and `plain`)
/// through a real agent loop with the [`Double`] driver.
struct Deployed {
    app_id: String,
    vm1: String,
    plain: String,
    pod: String,
    deployment_id: String,
    _agent_dir: tempfile::TempDir,
    _stop_agent: tokio::sync::oneshot::Sender<()>,
}

async fn deploy(plane: &Plane) -> Deployed {
    let mut form = reqwest::multipart::Form::new();
    for (name, text) in [
        ("console.yaml", APP_YAML.replace("SHA", SHA)),
        ("console-pkg.yaml", PKG_YAML.to_string()),
    ] {
        form = form.part(
            "files",
            reqwest::multipart::Part::bytes(text.into_bytes()).file_name(name),
        );
    }
    let (s, b) = plane
        .json(
            plane
                .admin
                .post(plane.at(&format!("/v3/projects/{P}/catalog/upload")))
                .multipart(form),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "upload: {b}");
    let (s, b) = plane
        .json(
            plane
                .admin
                .post(plane.at(&format!("/v1/projects/{P}/appdeployment/deployments")))
                .json(&json!({"appName": "console-pkg", "appVersion": "1.0.0",
                    "allAppTargetClusters": {"labels": {LABEL.0: LABEL.1}}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "deploy: {b}");
    let deployment_id = b["deploymentId"].as_str().unwrap().to_string();

    let echo = echo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = AgentConfig::new(plane.url.clone(), dir.path());
    config.enroll_token = Some(plane.enrollment_token().await);
    config.name = Some("e1".into());
    config.labels = BTreeMap::from([(LABEL.0.to_string(), LABEL.1.to_string())]);
    config.poll_wait = Duration::from_secs(5);
    config.converge_interval = Duration::from_millis(200);
    config.heartbeat = Some(Duration::from_secs(1));
    config.backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    if let Some(pin) = plane.tls {
        config.http_client = Some(client_with(Some(pin), None, false));
        config.tunnel_http_client = Some(client_with(Some(pin), None, true));
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let r = canopy_agent::run_with(config, Double { echo }, async move {
            let _ = stopped.await;
        })
        .await;
        if let Err(e) = r {
            panic!("agent stopped: {}", e.chain());
        }
    });

    // The agent enrolls, receives the deployment and reports it applied.
    let started = Instant::now();
    loop {
        let (_, b) = plane
            .json(
                plane
                    .admin
                    .get(plane.at(&format!("/canopy/v1/projects/{P}/edges/e1"))),
            )
            .await;
        let e = &b["edge"];
        if e["deployments"] == 1
            && e["generation"].as_u64().unwrap_or(0) > 0
            && e["appliedGeneration"] == e["generation"]
        {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "edge e1 never applied: {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let app_id = canopy_deploy::status::app_id(&deployment_id, "console");
    let (s, b) = plane
        .json(plane.admin.get(plane.at(&format!(
            "/v1/projects/{P}/resource/workloads/applications/{app_id}/clusters/e1"
        ))))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let id_of = |name: &str| {
        b["appWorkloads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == name || (name == "pod" && w["type"] == "TYPE_POD"))
            .unwrap_or_else(|| panic!("workload {name} in {b}"))["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    Deployed {
        vm1: id_of("vm1"),
        plain: id_of("plain"),
        pod: id_of("pod"),
        app_id,
        deployment_id,
        _agent_dir: dir,
        _stop_agent: stop,
    }
}

impl Deployed {
    fn vm_path(&self, vm: &str, rest: &str) -> String {
        format!(
            "/canopy/v1/projects/{P}/resource/workloads/applications/{}/clusters/e1/virtual-machines/{vm}/{rest}",
            self.app_id
        )
    }

    fn container_logs(&self, container: &str, query: &str) -> String {
        format!(
            "/canopy/v1/projects/{P}/resource/workloads/applications/{}/clusters/e1/containers/{container}/logs?{query}",
            self.app_id
        )
    }

    fn vnc(&self, vm: &str) -> String {
        format!("/vnc/{P}/{}/e1/{vm}", self.app_id)
    }
}

// ------------------------------------------------------------------ WebSockets

/// A connection a WebSocket runs over (TCP, or TLS over TCP).
trait Conn: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Conn for T {}

type Ws = tokio_tungstenite::WebSocketStream<Box<dyn Conn>>;

/// Opens a WebSocket (over TLS when the plane serves HTTPS) with `token`; on refusal the
/// status and JSON body.
async fn websocket(plane: &Plane, path: &str, token: &str) -> Result<Ws, (StatusCode, Value)> {
    let url = plane.at(path).replacen("http", "ws", 1);
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let addr = plane
        .url
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let conn: Box<dyn Conn> = match plane.tls {
        None => Box::new(tcp),
        Some(pin) => {
            let mut tls = canopy_tls::client_config(&canopy_tls::ClientTrust::Pinned(pin))
                .unwrap()
                .unwrap();
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
            let name = canopy_tls::rustls::pki_types::ServerName::try_from("127.0.0.1")
                .unwrap()
                .to_owned();
            Box::new(connector.connect(name, tcp).await.unwrap())
        }
    };
    let result = tokio_tungstenite::client_async(req, conn)
        .await
        .map(|(ws, _)| ws);
    result.map_err(|e| match e {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            let body = resp
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            (StatusCode::from_u16(resp.status().as_u16()).unwrap(), body)
        }
        other => panic!("websocket {path}: {other}"),
    })
}

/// Sends `bytes` and reads binary messages until as many bytes came back.
async fn echo_through(ws: &mut Ws, bytes: &[u8]) -> Vec<u8> {
    ws.send(Message::Binary(Bytes::copy_from_slice(bytes)))
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < bytes.len() {
        let msg = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("an answer in time")
            .expect("the socket stays open")
            .unwrap();
        match msg {
            Message::Binary(b) => got.extend_from_slice(&b),
            other => panic!("unexpected message {other:?}"),
        }
    }
    got
}

// ------------------------------------------------------------------ the tests

async fn consoles_and_logs_work(plane: &Plane) {
    let d = deploy(plane).await;
    let admin = plane.admin_token.clone();

    // VNC: RFB bytes both ways, through the agent's tunnel to the VM's VNC server.
    let mut ws = websocket(plane, &d.vnc(&d.vm1), &admin)
        .await
        .expect("VNC opens");
    assert_eq!(
        echo_through(&mut ws, b"RFB 003.008\n").await,
        b"RFB 003.008\n"
    );
    let big = vec![7u8; 200_000];
    assert_eq!(echo_through(&mut ws, &big).await, big);
    ws.close(None).await.unwrap();

    // The serial console.
    let mut ws = websocket(plane, &d.vm_path(&d.vm1, "serial"), &admin)
        .await
        .expect("serial opens");
    assert_eq!(echo_through(&mut ws, b"login: ").await, b"login: ");
    drop(ws);

    // Container logs without follow: the tail, then the end.
    let resp = plane
        .admin
        .get(plane.at(&d.container_logs("web", "tail=3")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
    let text = tokio::time::timeout(DEADLINE, resp.text())
        .await
        .expect("ends without follow")
        .unwrap();
    assert_eq!(text, "web line 1\nweb line 2\nweb line 3\n");

    // VM logs with follow: the tail, then new lines as they come, until the client leaves.
    let resp = plane
        .admin
        .get(plane.at(&d.vm_path(&d.vm1, "logs?tail=2&follow=true")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("more 2\n") {
        let chunk = tokio::time::timeout(DEADLINE, body.next())
            .await
            .expect("follows")
            .expect("still streaming")
            .unwrap();
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(
        seen.starts_with("vm1 line 1\nvm1 line 2\nmore 0\n"),
        "{seen}"
    );
    drop(body);

    // The agent's own error reaches the user as a JSON error.
    let (s, b) = websocket(plane, &d.vm_path(&d.plain, "serial"), &admin)
        .await
        .err()
        .expect("refused");
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let m = b["message"].as_str().unwrap();
    assert!(
        m.contains("vm plain does not exist on this edge") && m.contains("e1"),
        "{m}"
    );
    // A VM without a VNC display, a pod's id and an unknown id are refused before the edge is
    // asked anything.
    let (s, b) = websocket(plane, &d.vnc(&d.plain), &admin)
        .await
        .err()
        .unwrap();
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b["message"].as_str().unwrap().contains("no VNC"), "{b}");
    let (s, b) = websocket(plane, &d.vnc(&d.pod), &admin)
        .await
        .err()
        .unwrap();
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b["message"].as_str().unwrap().contains("pod"), "{b}");
    let (s, _) = websocket(plane, &d.vnc("nope"), &admin)
        .await
        .err()
        .unwrap();
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = plane
        .json(plane.admin.get(plane.at(&d.container_logs("nope", ""))))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    let (s, b) = plane
        .json(
            plane
                .admin
                .get(plane.at(&d.container_logs("web", "tail=10001"))),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    // A plain GET of a console path is a JSON 400, not a hang.
    let (s, b) = plane.json(plane.admin.get(plane.at(&d.vnc(&d.vm1)))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");

    // Every console opening is in the audit log: who, which workload on which edge, outcome.
    let (s, b) = plane
        .json(
            plane
                .admin
                .get(plane.at(&format!("/canopy/v1/projects/{P}/audit?action=TUNNEL"))),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let entries = b["entries"].as_array().unwrap();
    let vnc_ok = entries.iter().find(|e| {
        e["action"] == "TUNNEL vnc"
            && e["result"] == "ok"
            && e["target"].as_str().unwrap().contains(&format!(
                "edges/e1/deployments/{}/apps/console/vms/vm1",
                d.deployment_id
            ))
    });
    assert!(vnc_ok.is_some(), "{b}");
    assert_eq!(vnc_ok.unwrap()["actor"], "admin");
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "TUNNEL serial" && e["status"] == 400),
        "{b}"
    );
}

#[tokio::test]
async fn consoles_and_logs_flow_through_agent_opened_tunnels() {
    let plane = Plane::http().await;
    consoles_and_logs_work(&plane).await;
}

#[tokio::test]
async fn tunnels_work_over_https() {
    let plane = Plane::https().await;
    consoles_and_logs_work(&plane).await;
}

#[tokio::test]
async fn consoles_need_write_access_and_other_projects_see_nothing() {
    let plane = Plane::http().await;
    let d = deploy(&plane).await;
    let reader = plane.user_token("reader", &["default_ao-r"]).await;
    for path in [d.vnc(&d.vm1), d.vm_path(&d.vm1, "serial")] {
        let (s, b) = websocket(&plane, &path, &reader).await.err().unwrap();
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {b}");
    }
    // Reading logs needs read access only.
    let resp = plane
        .client(Some(&reader))
        .get(plane.at(&d.container_logs("web", "tail=1")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "web line 1\n");
    // The refusal is audited too.
    let (_, b) = plane
        .json(
            plane
                .admin
                .get(plane.at(&format!("/canopy/v1/projects/{P}/audit?actor=reader"))),
        )
        .await;
    assert!(
        b["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "TUNNEL vnc" && e["status"] == 403),
        "{b}"
    );

    // Someone of another project learns nothing about this one.
    let (s, b) = plane
        .json(
            plane
                .admin
                .put(plane.at("/v1/projects/other"))
                .json(&json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let stranger = plane.user_token("stranger", &["other_ao-rw"]).await;
    for path in [d.vnc(&d.vm1), d.vm_path(&d.vm1, "serial")] {
        let (s, b) = websocket(&plane, &path, &stranger).await.err().unwrap();
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {b}");
    }
    let (s, _) = plane
        .json(
            plane
                .client(Some(&stranger))
                .get(plane.at(&d.container_logs("web", ""))),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // No token at all.
    let (s, _) = plane
        .json(
            plane
                .client(None)
                .get(plane.at(&d.container_logs("web", ""))),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

/// Claims tunnel `id` as the edge owning `cred`: the raw HTTP/1.1 upgrade.
async fn claim(plane: &Plane, cred: &str, id: &str) -> reqwest::Response {
    client_with(plane.tls, None, true)
        .get(plane.at(&canopy_proto::paths::tunnel(id)))
        .header(PROTOCOL_HEADER, "1")
        .header("connection", "upgrade")
        .header("upgrade", TUNNEL_UPGRADE)
        .bearer_auth(cred)
        .send()
        .await
        .unwrap()
}

async fn poll_tunnels(plane: &Plane, cred: &str, wait: u32) -> reqwest::Response {
    plane
        .client(None)
        .get(plane.at(&format!(
            "{}?waitSeconds={wait}",
            canopy_proto::paths::TUNNELS
        )))
        .header(PROTOCOL_HEADER, "1")
        .bearer_auth(cred)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn only_the_edge_asked_may_claim_and_limits_hold() {
    let plane = Plane::http().await;
    let _d = deploy(&plane).await;
    let token = plane.enrollment_token().await;
    // Two more edges holding the app, without a real agent: the test speaks for them.
    let cp = plane._cp.as_ref().unwrap();
    let quiet = SimAgent::enroll(cp, &token, "quiet", &[LABEL]).await;
    let other = SimAgent::enroll(cp, &token, "other", &[LABEL]).await;
    let app_id = &_d.app_id;
    let logs_of = |edge: &str| {
        format!(
            "/canopy/v1/projects/{P}/resource/workloads/applications/{app_id}/clusters/{edge}/containers/web/logs?tail=1"
        )
    };

    // A user asks for logs of edge `quiet`; only `quiet` sees the request and may claim it.
    let user = tokio::spawn({
        let (http, url) = (plane.admin.clone(), plane.at(&logs_of("quiet")));
        async move { http.get(url).send().await.unwrap() }
    });
    let resp = poll_tunnels(&plane, &quiet.cred, 10).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let requests: TunnelRequests = resp.json().await.unwrap();
    assert_eq!(requests.tunnels.len(), 1);
    let request = &requests.tunnels[0];
    assert!(matches!(
        &request.target,
        TunnelTarget::Logs { kind: WorkloadKind::Pod, workload, tail: 1, follow: false, .. } if workload == "web"
    ));
    assert_eq!(
        poll_tunnels(&plane, &other.cred, 1).await.status(),
        StatusCode::NO_CONTENT
    );
    let resp = claim(&plane, &other.cred, &request.id).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = claim(&plane, "cne_not-a-credential", &request.id).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = claim(&plane, &quiet.cred, &request.id).await;
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let mut io = resp.upgrade().await.unwrap();
    io.write_all(b"quiet says hi\n").await.unwrap();
    io.shutdown().await.unwrap();
    let resp = user.await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "quiet says hi\n");
    // Single use.
    let resp = claim(&plane, &quiet.cred, &request.id).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let mut rest = Vec::new();
    let _ = io.read_to_end(&mut rest).await;

    // An edge that never answers: the user gets a 503 saying it may be offline.
    plane.app.tunnels().set_limits(TunnelLimits {
        max_pending_per_edge: 1,
        claim_timeout: Duration::from_secs(1),
        ..TunnelLimits::default()
    });
    let (s, b) = plane
        .json(plane.admin.get(plane.at(&logs_of("quiet"))))
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    let m = b["message"].as_str().unwrap();
    assert!(m.contains("quiet") && m.contains("offline"), "{m}");

    // Limits: one request waiting per edge here, so a second one is refused at once.
    plane.app.tunnels().set_limits(TunnelLimits {
        max_pending_per_edge: 1,
        claim_timeout: Duration::from_secs(5),
        ..TunnelLimits::default()
    });
    let waiting = tokio::spawn({
        let (http, url) = (plane.admin.clone(), plane.at(&logs_of("quiet")));
        async move { http.get(url).send().await.unwrap().status() }
    });
    let started = Instant::now();
    while plane.app.tunnels().open_counts(&quiet.id).1 == 0 {
        assert!(started.elapsed() < DEADLINE);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (s, b) = plane
        .json(plane.admin.get(plane.at(&logs_of("quiet"))))
        .await;
    assert!(
        s == StatusCode::SERVICE_UNAVAILABLE || s == StatusCode::TOO_MANY_REQUESTS,
        "{s}: {b}"
    );
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("tunnel requests waiting"),
        "{b}"
    );
    // The agent reports that it cannot open it: the waiting user is told why.
    let resp = poll_tunnels(&plane, &quiet.cred, 5).await;
    let requests: TunnelRequests = resp.json().await.unwrap();
    let id = &requests.tunnels[0].id;
    let report = |cred: &str| {
        plane
            .client(None)
            .post(plane.at(&format!("{}/error", canopy_proto::paths::tunnel(id))))
            .header(PROTOCOL_HEADER, "1")
            .bearer_auth(cred.to_string())
            .json(&json!({"message": "container web does not exist on this edge"}))
            .send()
    };
    assert_eq!(
        report(&other.cred).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        report(&quiet.cred).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(waiting.await.unwrap(), StatusCode::BAD_REQUEST);

    // Tunnel long-polls have a gate of their own: two per edge, the third refused at once,
    // and the desired-state long-polls of the edge are unaffected.
    let p1 = tokio::spawn({
        let (http, url, cred) = (
            plane.client(None),
            plane.at(&format!("{}?waitSeconds=3", canopy_proto::paths::TUNNELS)),
            quiet.cred.clone(),
        );
        async move {
            http.get(url)
                .header(PROTOCOL_HEADER, "1")
                .bearer_auth(cred)
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let p2 = tokio::spawn({
        let (http, url, cred) = (
            plane.client(None),
            plane.at(&format!("{}?waitSeconds=3", canopy_proto::paths::TUNNELS)),
            quiet.cred.clone(),
        );
        async move {
            http.get(url)
                .header(PROTOCOL_HEADER, "1")
                .bearer_auth(cred)
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let third = poll_tunnels(&plane, &quiet.cred, 3).await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(third.headers().contains_key("retry-after"));
    let desired = plane
        .client(None)
        .get(plane.at(&format!(
            "{}?after=0&waitSeconds=1",
            canopy_proto::paths::DESIRED_STATE
        )))
        .header(PROTOCOL_HEADER, "1")
        .bearer_auth(&quiet.cred)
        .send()
        .await
        .unwrap();
    assert_eq!(desired.status(), StatusCode::OK);
    assert_eq!(p1.await.unwrap(), StatusCode::NO_CONTENT);
    assert_eq!(p2.await.unwrap(), StatusCode::NO_CONTENT);

    // The agent protocol's rules hold here too.
    let resp = plane
        .client(None)
        .get(plane.at(canopy_proto::paths::TUNNELS))
        .bearer_auth(&quiet.cred)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UPGRADE_REQUIRED);
    let resp = plane
        .client(None)
        .get(plane.at(&canopy_proto::paths::tunnel("x")))
        .header(PROTOCOL_HEADER, "1")
        .bearer_auth(&quiet.cred)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "not an upgrade");
}

#[tokio::test]
async fn a_removed_edge_fails_its_waiting_tunnels() {
    let plane = Plane::http().await;
    let d = deploy(&plane).await;
    let cp = plane._cp.as_ref().unwrap();
    let token = plane.enrollment_token().await;
    let _quiet = SimAgent::enroll(cp, &token, "quiet", &[LABEL]).await;
    let url = plane.at(&format!(
        "/canopy/v1/projects/{P}/resource/workloads/applications/{}/clusters/quiet/containers/web/logs",
        d.app_id
    ));
    let waiting = tokio::spawn({
        let http = plane.admin.clone();
        async move {
            let resp = http.get(url).send().await.unwrap();
            (
                resp.status(),
                resp.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let (s, b) = plane
        .json(
            plane
                .admin
                .delete(plane.at(&format!("/canopy/v1/projects/{P}/edges/quiet"))),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = waiting.await.unwrap();
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    assert!(b["message"].as_str().unwrap().contains("quiet"), "{b}");
    assert!(started.elapsed() < Duration::from_secs(10), "not a timeout");
}
