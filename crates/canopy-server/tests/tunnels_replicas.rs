//! Tunnels across replicas (`canopy_server::tunnels::peer`): three real control planes on one
//! fresh PostgreSQL database (skipped without `CANOPY_TEST_DATABASE_URL`), a simulated edge
//! speaking the agent protocol, and a user on replica A. The agent's long-poll is on replica B
//! and its claim lands on A, on B or on C: bytes flow both ways; the agent's error reaches the
//! user across replicas; forged peer connections are refused; the limits hold.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use canopy_proto::{PROTOCOL_HEADER, TUNNEL_UPGRADE, TunnelRequest, TunnelRequests};
use canopy_server::tunnels::TunnelLimits;
use canopy_server::tunnels::peer;
use canopy_testkit::TestControlPlane;
use canopy_testkit::sim_agent::SimAgent;
use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const P: &str = "default";
const DEADLINE: Duration = Duration::from_secs(30);
const SHA: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

const APP_YAML: &str = "specSchema: Application\nschemaVersion: \"0.1\"\n$schema: \"https://schema.intel.com/catalog.orchestrator/0.1/schema\"\nname: console\ndescription: consoles and logs\nversion: 1.0.0\nworkloadTemplate: |\n  containers:\n    - name: web\n      image: localhost/busybox:canopy-test\n  vms:\n    - {name: vm1, memory: 64, image: {url: \"https://x.example/d.qcow2\", sha256: \"SHA\"}}\ndefaultProfile: default\nprofiles:\n  - name: default\n";

const PKG_YAML: &str = "specSchema: DeploymentPackage\nschemaVersion: \"0.1\"\n$schema: \"https://schema.intel.com/catalog.orchestrator/0.1/schema\"\nname: console-pkg\ndescription: consoles\nversion: 1.0.0\napplications:\n  - {name: console, version: 1.0.0}\ndeploymentProfiles:\n  - name: default\n    applicationProfiles:\n      - {application: console, profile: default}\ndefaultProfile: default\n";

/// A replica started here (B, C) on A's database with A's secret key.
struct Replica {
    url: String,
    app: canopy_server::App,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn replica(database_url: &str, key_from: &std::path::Path) -> Replica {
    replica_at(database_url, key_from, None).await
}

/// [`replica`] announcing `peer_url` instead of its own address.
async fn replica_at(
    database_url: &str,
    key_from: &std::path::Path,
    peer_url: Option<&str>,
) -> Replica {
    let dir = tempfile::tempdir().unwrap();
    let key = canopy_seal::KEY_FILE_NAME;
    std::fs::copy(key_from.join(key), dir.path().join(key)).unwrap();
    let config = canopy_server::ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.path().to_owned(),
        database_url: Some(database_url.to_string()),
        tls: None,
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
        peer_url: peer_url.map(str::to_string),
    };
    let server = canopy_server::Server::bind(&config).await.unwrap();
    let url = server.url().unwrap();
    let app = server.app().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    Replica {
        url,
        app,
        _stop: tx,
        _dir: dir,
    }
}

/// Three replicas, an edge `e1` running the `console` app (container `web`, VM `vm1`).
struct Fleet {
    db: String,
    a: TestControlPlane,
    b: Replica,
    c: Replica,
    agent: SimAgent,
    app_id: String,
    vm1: String,
}

async fn fleet() -> Option<Fleet> {
    let mut db = None;
    let a = TestControlPlane::start_postgres_configured(|c| db = c.database_url.clone()).await?;
    let db = db.expect("a PostgreSQL URL");
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
    let (s, b) = a
        .send(
            a.http()
                .post(a.at(&format!("/v3/projects/{P}/catalog/upload")))
                .multipart(form),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "upload: {b}");
    let (s, b) = a
        .post(
            &a.at(&format!("/v1/projects/{P}/appdeployment/deployments")),
            &json!({"appName": "console-pkg", "appVersion": "1.0.0",
                "allAppTargetClusters": {"labels": {"site": "x"}}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "deploy: {b}");
    let deployment_id = b["deploymentId"].as_str().unwrap().to_string();
    let (s, b) = a
        .post(
            &a.at(&format!("/canopy/v1/projects/{P}/enrollment-tokens")),
            &json!({"description": "replicas"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let token = b["secret"].as_str().unwrap().to_string();
    let mut agent = SimAgent::enroll(&a, &token, "e1", &[("site", "x")]).await;
    assert!(
        agent.poll(10).await.is_some(),
        "the edge gets the deployment"
    );
    let app_id = canopy_deploy::status::app_id(&deployment_id, "console");
    let (s, b) = a
        .get(&a.at(&format!(
            "/v1/projects/{P}/resource/workloads/applications/{app_id}/clusters/e1"
        )))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let vm1 = b["appWorkloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "vm1")
        .unwrap_or_else(|| panic!("vm1 in {b}"))["id"]
        .as_str()
        .unwrap()
        .to_string();
    // B and C start once the edge exists (their fleets load it from the database).
    let b = replica(&db, a.data_dir()).await;
    let c = replica(&db, a.data_dir()).await;
    for r in [a.app(), &b.app, &c.app] {
        assert!(
            r.tunnels().replication().is_some(),
            "every replica relays tunnels"
        );
    }
    Some(Fleet {
        db,
        a,
        b,
        c,
        agent,
        app_id,
        vm1,
    })
}

impl Fleet {
    fn serial_path(&self) -> String {
        format!(
            "/canopy/v1/projects/{P}/resource/workloads/applications/{}/clusters/e1/virtual-machines/{}/serial",
            self.app_id, self.vm1
        )
    }

    fn logs_path(&self) -> String {
        format!(
            "/canopy/v1/projects/{P}/resource/workloads/applications/{}/clusters/e1/containers/web/logs?tail=5",
            self.app_id
        )
    }

    fn url(&self, which: char) -> &str {
        match which {
            'A' => &self.a.url,
            'B' => &self.b.url,
            _ => &self.c.url,
        }
    }

    /// The agent's long-poll for tunnel requests on `url` (panics unless one comes).
    async fn poll(&self, url: &str) -> Vec<TunnelRequest> {
        let resp = reqwest::Client::new()
            .get(format!("{url}/canopy/v1/agent/tunnels?waitSeconds=20"))
            .header(PROTOCOL_HEADER, "1")
            .bearer_auth(&self.agent.cred)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "a tunnel request comes");
        resp.json::<TunnelRequests>().await.unwrap().tunnels
    }

    /// The agent's claim of tunnel `id` on `url`: the upgraded connection, or the refusal.
    async fn claim(&self, url: &str, id: &str) -> Result<reqwest::Upgraded, (StatusCode, Value)> {
        let resp = reqwest::Client::builder()
            .http1_only()
            .build()
            .unwrap()
            .get(format!("{url}/canopy/v1/agent/tunnels/{id}"))
            .header(PROTOCOL_HEADER, "1")
            .header("connection", "upgrade")
            .header("upgrade", TUNNEL_UPGRADE)
            .bearer_auth(&self.agent.cred)
            .send()
            .await
            .unwrap();
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let s = resp.status();
            return Err((s, resp.json().await.unwrap_or(Value::Null)));
        }
        Ok(resp.upgrade().await.unwrap())
    }

    /// The agent reports that it could not open tunnel `id`, on `url`.
    async fn report_error(&self, url: &str, id: &str, message: &str) -> StatusCode {
        reqwest::Client::new()
            .post(format!("{url}/canopy/v1/agent/tunnels/{id}/error"))
            .header(PROTOCOL_HEADER, "1")
            .bearer_auth(&self.agent.cred)
            .json(&json!({ "message": message }))
            .send()
            .await
            .unwrap()
            .status()
    }

    /// The user opens the serial console on A (a WebSocket, once the agent connected).
    fn open_serial_on_a(&self) -> tokio::task::JoinHandle<Result<Ws, (StatusCode, Value)>> {
        self.open_serial(&self.a.url)
    }

    /// The user opens the serial console on the replica at `base`.
    fn open_serial(&self, base: &str) -> tokio::task::JoinHandle<Result<Ws, (StatusCode, Value)>> {
        let url = format!("{base}{}", self.serial_path()).replacen("http", "ws", 1);
        let token = self.a.admin_token().to_string();
        let addr = base.trim_start_matches("http://").to_string();
        tokio::spawn(async move { websocket(&url, &addr, &token).await })
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn websocket(url: &str, addr: &str, token: &str) -> Result<Ws, (StatusCode, Value)> {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_tungstenite::client_async(req, tcp)
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(resp) => {
                let body = resp
                    .body()
                    .as_ref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null);
                (StatusCode::from_u16(resp.status().as_u16()).unwrap(), body)
            }
            other => panic!("websocket {url}: {other}"),
        })
}

/// The user sends `bytes`; the agent's end reads them and answers `back`; the user reads it.
async fn both_ways(ws: &mut Ws, agent: &mut reqwest::Upgraded, bytes: &[u8], back: &[u8]) {
    ws.send(Message::Binary(Bytes::copy_from_slice(bytes)))
        .await
        .unwrap();
    let mut got = vec![0u8; bytes.len()];
    tokio::time::timeout(DEADLINE, agent.read_exact(&mut got))
        .await
        .expect("the agent's end receives in time")
        .unwrap();
    assert_eq!(got, bytes);
    agent.write_all(back).await.unwrap();
    agent.flush().await.unwrap();
    let mut got = Vec::new();
    while got.len() < back.len() {
        let msg = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("the user receives in time")
            .expect("the socket stays open")
            .unwrap();
        match msg {
            Message::Binary(b) => got.extend_from_slice(&b),
            other => panic!("unexpected message {other:?}"),
        }
    }
    assert_eq!(got, back);
}

/// Waits until `cond` holds, up to [`DEADLINE`].
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < DEADLINE, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_asked_on_a_opens_whichever_replica_the_agent_claims_on() {
    let Some(f) = fleet().await else { return };
    for claim_on in ['A', 'B', 'C'] {
        let user = f.open_serial_on_a();
        let got = f.poll(&f.b.url).await;
        assert_eq!(got.len(), 1, "{got:?}");
        let mut agent = f
            .claim(f.url(claim_on), &got[0].id)
            .await
            .unwrap_or_else(|e| panic!("claim on {claim_on}: {e:?}"));
        let mut ws = tokio::time::timeout(DEADLINE, user)
            .await
            .expect("the console opens in time")
            .unwrap()
            .unwrap_or_else(|e| panic!("serial console, claim on {claim_on}: {e:?}"));
        both_ways(
            &mut ws,
            &mut agent,
            format!("keys via {claim_on}").as_bytes(),
            b"login: ",
        )
        .await;
        both_ways(&mut ws, &mut agent, b"root\n", b"# ").await;
        // The agent's end closes: the user's console closes too.
        drop(agent);
        let end = tokio::time::timeout(DEADLINE, async {
            while let Some(Ok(m)) = ws.next().await {
                if matches!(m, Message::Close(_)) {
                    return;
                }
            }
        })
        .await;
        assert!(end.is_ok(), "the console closes with the agent's end");
        drop(ws);
        // Nothing is left counted anywhere.
        for (name, app) in [('A', f.a.app()), ('B', &f.b.app), ('C', &f.c.app)] {
            until(&format!("replica {name} counts no tunnel of e1"), || {
                app.tunnels().open_counts(&f.agent.id) == (0, 0)
            })
            .await;
        }
        until("B forgets the request", || {
            f.b.app.tunnels().remote_count() == 0
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_error_reaches_the_user_across_replicas() {
    let Some(f) = fleet().await else { return };
    for report_on in ['B', 'C'] {
        let http = f.a.http().clone();
        let url = f.a.at(&f.logs_path());
        let user = tokio::spawn(async move {
            let resp = http.get(url).send().await.unwrap();
            let s = resp.status();
            (s, resp.json::<Value>().await.unwrap_or(Value::Null))
        });
        let got = f.poll(&f.b.url).await;
        let message = format!("container web is not running (told {report_on})");
        assert_eq!(
            f.report_error(f.url(report_on), &got[0].id, &message).await,
            StatusCode::NO_CONTENT
        );
        let (s, b) = tokio::time::timeout(DEADLINE, user)
            .await
            .expect("the user is answered in time")
            .unwrap();
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        assert!(b.to_string().contains(&message), "{b}");
        // Reported once: a second report finds nothing.
        assert_eq!(
            f.report_error(f.url(report_on), &got[0].id, "again").await,
            StatusCode::NOT_FOUND
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_peer_connections_are_refused() {
    let Some(f) = fleet().await else { return };
    let user = f.open_serial_on_a();
    let id = f.poll(&f.b.url).await.remove(0).id;
    let http = reqwest::Client::builder().http1_only().build().unwrap();
    let peer_url = format!("{}/canopy/v1/peer/tunnels/{id}", f.a.url);
    let claim = |edge: String, time: String, nonce: String, mac: String| {
        http.get(&peer_url)
            .header("connection", "upgrade")
            .header("upgrade", peer::PEER_UPGRADE)
            .header(peer::EDGE_HEADER, edge)
            .header(peer::TIME_HEADER, time)
            .header(peer::NONCE_HEADER, nonce)
            .header(peer::MAC_HEADER, mac)
            .send()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let nonce = "0123456789abcdef".repeat(4);
    let edge = f.agent.id.clone();
    let key = canopy_seal::Keyring::load_file(&f.a.data_dir().join(canopy_seal::KEY_FILE_NAME))
        .unwrap()
        .derive_key(peer::KEY_PURPOSE);
    let mac_with = |key: &[u8], edge: &str, time: u64| {
        use hmac::Mac as _;
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        m.update(
            format!(
                "{}\nclaim\n{id}\n{edge}\n{time}\n{nonce}",
                peer::KEY_PURPOSE
            )
            .as_bytes(),
        );
        m.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    for (what, edge, time, mac) in [
        ("no MAC", edge.clone(), now, String::new()),
        ("garbage", edge.clone(), now, "zz".repeat(32)),
        (
            "another key",
            edge.clone(),
            now,
            mac_with(&[7u8; 32], &edge, now),
        ),
        (
            "the right key, another edge's claim",
            "another-edge".into(),
            now,
            mac_with(&key[..], &edge, now),
        ),
        (
            "the right key, an hour old",
            edge.clone(),
            now - 3600,
            mac_with(&key[..], &edge, now - 3600),
        ),
    ] {
        let resp = claim(edge, time.to_string(), nonce.clone(), mac)
            .await
            .unwrap();
        let s = resp.status();
        let body = resp.text().await.unwrap();
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{what}: {body}");
    }
    // Without the upgrade it is refused too, whatever it carries.
    let resp = http.get(&peer_url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // The request was not consumed: the agent's real claim, relayed by C, still opens it.
    let mut agent = f.claim(&f.c.url, &id).await.expect("claim on C");
    let mut ws = tokio::time::timeout(DEADLINE, user)
        .await
        .unwrap()
        .unwrap()
        .expect("the console opens");
    both_ways(&mut ws, &mut agent, b"ping", b"pong").await;
    // A single-process server (SQLite) takes no peer connections at all.
    let solo = TestControlPlane::start().await;
    assert!(solo.app().tunnels().replication().is_none());
    let resp = http
        .get(format!("{}/canopy/v1/peer/tunnels/{id}", solo.url))
        .header("connection", "upgrade")
        .header("upgrade", peer::PEER_UPGRADE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_across_replicas() {
    let Some(f) = fleet().await else { return };
    // B queues at most 2 of this edge's requests from other replicas; C relays at most one
    // tunnel of an edge at once.
    let small = |per_edge_pending, per_edge_open| TunnelLimits {
        max_pending_per_edge: per_edge_pending,
        max_open_per_edge: per_edge_open,
        ..TunnelLimits::default()
    };
    f.b.app.tunnels().set_limits(small(2, 16));
    f.c.app.tunnels().set_limits(small(16, 1));
    let users: Vec<_> = (0..3).map(|_| f.open_serial_on_a()).collect();
    until("A holds three requests", || {
        f.a.app().tunnels().open_counts(&f.agent.id).1 == 3
    })
    .await;
    until("B queued two of them", || {
        f.b.app.tunnels().remote_count() == 2
    })
    .await;
    let got = f.poll(&f.b.url).await;
    assert_eq!(got.len(), 2, "B hands out what it holds: {got:?}");
    // C relays the first; the second would be a second tunnel of e1 through C: refused.
    let mut first = f.claim(&f.c.url, &got[0].id).await.expect("first claim");
    let (s, b) = f.claim(&f.c.url, &got[1].id).await.unwrap_err();
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert!(b.to_string().contains("maximum"), "{b}");
    // The relayed tunnel carries bytes to the one user whose console opened.
    let mut users = users;
    let started = Instant::now();
    let mut ws = loop {
        if let Some(i) = users.iter().position(|u| u.is_finished()) {
            break users
                .remove(i)
                .await
                .unwrap()
                .expect("the relayed console opens");
        }
        assert!(started.elapsed() < DEADLINE, "no console opened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    both_ways(&mut ws, &mut first, b"a", b"b").await;
    for u in users {
        u.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_the_others_cannot_reach_fails_its_tunnels_at_once() {
    let Some(f) = fleet().await else { return };
    // D announces an address nothing listens on.
    let d = replica_at(&f.db, f.a.data_dir(), Some("http://127.0.0.1:1")).await;
    let started = Instant::now();
    let user = f.open_serial(&d.url);
    let id = f.poll(&f.b.url).await.remove(0).id;
    let (s, b) = f.claim(&f.c.url, &id).await.unwrap_err();
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert!(b.to_string().contains("127.0.0.1:1"), "names the peer: {b}");
    let (s, b) = tokio::time::timeout(DEADLINE, user)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b.to_string().contains("could not reach"), "{b}");
    assert!(
        started.elapsed() < canopy_server::tunnels::DEFAULT_CLAIM_TIMEOUT,
        "told before the claim timeout"
    );
    // Nothing left counted on the relaying replica.
    until("C counts no tunnel", || {
        f.c.app.tunnels().open_counts(&f.agent.id) == (0, 0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_tunnel_ends_when_its_user_leaves() {
    let Some(f) = fleet().await else { return };
    let user = f.open_serial_on_a();
    let id = f.poll(&f.b.url).await.remove(0).id;
    let mut agent = f.claim(&f.c.url, &id).await.expect("claim on C");
    let mut ws = tokio::time::timeout(DEADLINE, user)
        .await
        .unwrap()
        .unwrap()
        .expect("the console opens");
    both_ways(&mut ws, &mut agent, b"hello", b"hi").await;
    assert_eq!(f.c.app.tunnels().open_counts(&f.agent.id), (1, 1));
    // The user leaves; the agent's end stays open and silent (an idle console).
    ws.close(None).await.unwrap();
    drop(ws);
    until("A closes the tunnel", || {
        f.a.app().tunnels().open_counts(&f.agent.id) == (0, 0)
    })
    .await;
    until("C stops relaying it", || {
        f.c.app.tunnels().open_counts(&f.agent.id) == (0, 0)
    })
    .await;
    // And the agent's connection is closed.
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(DEADLINE, agent.read(&mut buf))
        .await
        .expect("the agent's end is closed in time");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
}
