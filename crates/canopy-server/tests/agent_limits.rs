//! The agent protocol's bounds and per-edge rate limit, end to end against a real server:
//!
//! - reports, enrollments and tunnel errors over their bounds are refused with 400 naming the
//!   field and the bound (or 413 over the body limit), and nothing of them is kept; long
//!   messages are cut instead;
//! - an edge over its request rate gets 429 with `Retry-After`, other edges do not;
//! - the real agent (`canopy_agent::run_with`, its sync and tunnel loops over a driver double)
//!   waits out `Retry-After`, and with the default limits is never refused, even while its
//!   desired state changes as fast as an operator can change it.
//!
//! The last two serve `http::router_with` behind a recorder of every answer (path, status,
//! time), so what the agent did is seen from the server's side.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use canopy_agent::{AgentConfig, Backoff, Converger, DriverError, TunnelIo};
use canopy_proto::bounds::{MAX_AGENT_BODY, MAX_MESSAGE, MAX_STATUS_BODY};
use canopy_proto::{
    AgentInfo, AppState, AppStatus, DesiredState, PROTOCOL_HEADER, StatusKind, StatusReport,
    TunnelTarget, WorkloadStatus,
};
use canopy_server::App;
use canopy_server::http::Limits;
use canopy_testkit::sim_agent::SimAgent;
use canopy_testkit::{TestControlPlane, example};
use reqwest::StatusCode;
use serde_json::{Value, json};

const P: &str = "default";
const DEADLINE: Duration = Duration::from_secs(60);

async fn enrollment_token(cp: &TestControlPlane) -> String {
    let (s, b) = cp
        .post(
            &cp.at(&format!("/canopy/v1/projects/{P}/enrollment-tokens")),
            &json!({"description": "bounds"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b["secret"].as_str().unwrap().to_string()
}

async fn edge(cp: &TestControlPlane, name: &str) -> Value {
    let (s, b) = cp
        .get(&cp.at(&format!("/canopy/v1/projects/{P}/edges/{name}")))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["edge"].clone()
}

/// `agent` holds one deployment of web-demo (two apps): uploads it and deploys to `site=bounds`.
async fn deploy_to(cp: &TestControlPlane, agent: &mut SimAgent) {
    let (s, b) = cp.upload_dir(P, &example("web-demo")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = cp
        .post(
            &cp.at(&format!("/v1/projects/{P}/appdeployment/deployments")),
            &json!({"appName": "web-demo", "appVersion": "1.0.0",
                "allAppTargetClusters": {"labels": {"site": "bounds"}}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    agent.poll(10).await.expect("the edge gets the deployment");
}

fn message_of(body: &Value) -> String {
    body["message"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn reports_over_their_bounds_are_refused_whole_and_long_messages_are_cut() {
    let cp = TestControlPlane::start().await;
    let t = enrollment_token(&cp).await;
    let mut agent = SimAgent::enroll(&cp, &t, "bounded", &[("site", "bounds")]).await;

    // A 100 KB host name: 400 naming the field and the bound; the edge is untouched (not even
    // "seen": it never connected).
    let mut report = StatusReport {
        protocol_version: 1,
        seq: 1,
        agent: Some(AgentInfo {
            version: "1.0".into(),
            hostname: "h".repeat(100 * 1024),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (s, b) = agent.send(&report).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let m = message_of(&b);
    assert!(
        m.contains("agent.hostname") && m.contains("102400") && m.contains("253"),
        "{m}"
    );
    assert!(m.contains("nothing of it was applied"), "{m}");
    let e = edge(&cp, "bounded").await;
    assert_eq!(e["connection"], "NEVER_CONNECTED", "{e}");
    assert_eq!(e["agentVersion"], "", "{e}");

    // 10,000 workloads, 1,001 apps: refused, naming what and how many.
    deploy_to(&cp, &mut agent).await;
    let held = agent.held.clone();
    let dep = &held.deployments[0];
    let app = |workloads: usize| AppStatus {
        deployment_id: dep.deployment_id.clone(),
        app: dep.apps[0].name.clone(),
        state: AppState::Running,
        deployment_generation: dep.generation,
        workloads: vec![
            WorkloadStatus {
                kind: StatusKind::Container,
                name: "w".into(),
                ..Default::default()
            };
            workloads
        ],
        ..Default::default()
    };
    report.agent = None;
    report.generation = held.generation;
    report.apps = vec![app(10_000)];
    let (s, b) = agent.send(&report).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        message_of(&b).contains("apps[].workloads has 10000 entries in all; at most 5000"),
        "{b}"
    );
    report.apps = vec![app(101)];
    let (s, b) = agent.send(&report).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        message_of(&b).contains("apps[0].workloads has 101 entries; at most 100"),
        "{b}"
    );
    report.apps = vec![app(0); 1_001];
    let (s, b) = agent.send(&report).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(message_of(&b).contains("apps has 1001 entries"), "{b}");
    let (s, b) = cp
        .get(&cp.at(&format!("/canopy/v1/projects/{P}/edges/bounded/workloads")))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        b["apps"],
        json!([]),
        "nothing of the refused reports is kept"
    );

    // A 3 MiB message fits the body limit: taken, cut to 4096 bytes, marked.
    let mut long = app(1);
    long.message = "é".repeat(3 * 512 * 1024);
    long.workloads[0].message = "x".repeat(100_000);
    report.apps = vec![long];
    let (s, b) = agent.send(&report).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, b) = cp
        .get(&cp.at(&format!("/canopy/v1/projects/{P}/edges/bounded/workloads")))
        .await;
    let kept = b["apps"][0]["message"].as_str().unwrap();
    assert!(
        kept.len() <= MAX_MESSAGE && kept.ends_with('…'),
        "{}",
        kept.len()
    );
    let w = b["apps"][0]["workloads"][0]["message"].as_str().unwrap();
    assert!(w.len() <= MAX_MESSAGE && w.ends_with('…'), "{}", w.len());

    // Over the status body limit: 413 naming it.
    report.seq = 2;
    report.apps[0].message = "x".repeat(MAX_STATUS_BODY);
    let (s, b) = agent.send(&report).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    assert!(message_of(&b).contains(&MAX_STATUS_BODY.to_string()), "{b}");
}

/// Statuses kept before the protocol had bounds (an 11 MB `last_status` was seen) are bounded
/// when a restarted server loads them: messages cut, an agent description over its bounds
/// dropped until the agent reports again.
#[tokio::test]
async fn statuses_stored_before_the_bounds_are_bounded_at_load() {
    let cp = TestControlPlane::start().await;
    let t = enrollment_token(&cp).await;
    let mut agent = SimAgent::enroll(&cp, &t, "old", &[("site", "bounds")]).await;
    deploy_to(&cp, &mut agent).await;
    let dep = &agent.held.deployments[0];
    let old = StatusReport {
        protocol_version: 1,
        seq: 7,
        generation: agent.held.generation,
        apps: vec![AppStatus {
            deployment_id: dep.deployment_id.clone(),
            app: dep.apps[0].name.clone(),
            state: AppState::Down,
            message: "x".repeat(1_000_000),
            deployment_generation: dep.generation,
            ..Default::default()
        }],
        agent: None,
    };
    let huge_agent = AgentInfo {
        version: "0.0.1".into(),
        hostname: "h".repeat(100 * 1024),
        ..Default::default()
    };
    cp.app()
        .store()
        .record_edges_seen(&[canopy_store::EdgeSeen {
            edge_id: agent.id.clone(),
            last_seen: time::OffsetDateTime::now_utc(),
            agent: Some(serde_json::to_string(&huge_agent).unwrap()),
            last_status: Some(serde_json::to_string(&old).unwrap()),
        }])
        .await
        .unwrap();
    let cp = cp.restart().await;
    let (s, b) = cp
        .get(&cp.at(&format!("/canopy/v1/projects/{P}/edges/old/workloads")))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let kept = b["apps"][0]["message"].as_str().unwrap();
    assert!(
        kept.len() <= MAX_MESSAGE && kept.ends_with('…'),
        "{}",
        kept.len()
    );
    let e = edge(&cp, "old").await;
    assert_eq!(
        e["agentVersion"], "",
        "the oversized description is not loaded: {e}"
    );
}

#[tokio::test]
async fn enrollments_and_tunnel_errors_are_bounded_too() {
    let cp = TestControlPlane::start().await;
    let t = enrollment_token(&cp).await;
    let enroll = |agent: Value| {
        let http = cp.anonymous_http();
        let url = cp.at("/canopy/v1/agent/enroll");
        let t = t.clone();
        async move {
            let resp = http
                .post(url)
                .header(PROTOCOL_HEADER, "1")
                .json(&json!({"protocolVersion": 1, "token": t, "name": "e1", "agent": agent}))
                .send()
                .await
                .unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap())
        }
    };
    let (s, b) = enroll(json!({"version": "1", "hostname": "h".repeat(300)})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        message_of(&b).contains("agent.hostname is 300 bytes"),
        "{b}"
    );
    let (s, b) = enroll(json!({"version": "1", "capabilities": vec!["c"; 17]})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(message_of(&b).contains("agent.capabilities has 17"), "{b}");
    let (s, b) = enroll(json!({"version": "v".repeat(MAX_AGENT_BODY)})).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    assert!(message_of(&b).contains(&MAX_AGENT_BODY.to_string()), "{b}");
    let (s, _) = cp
        .get(&cp.at(&format!("/canopy/v1/projects/{P}/edges/e1")))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "no edge from refused enrollments");

    let agent = SimAgent::enroll(&cp, &t, "e2", &[]).await;
    let resp = cp
        .anonymous_http()
        .post(cp.at("/canopy/v1/agent/tunnels/abc/error"))
        .header(PROTOCOL_HEADER, "1")
        .bearer_auth(&agent.cred)
        .json(&json!({"message": "m".repeat(MAX_AGENT_BODY)}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

// ------------------------------------------------------------------ rate limit, real agent

/// Every answer of a server: (path, status, when, `Retry-After`).
type Answers = Arc<Mutex<Vec<(String, StatusCode, Instant, Option<u64>)>>>;

/// A server with the given limits over a fresh SQLite database, recording every answer.
struct Recorded {
    url: String,
    app: App,
    admin: String,
    answers: Answers,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Recorded {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorded {
    async fn start(limits: Limits) -> Recorded {
        let (store, dir) = canopy_store::testing::fresh_sqlite().await;
        let app = App::new(store).await.expect("app starts");
        let file = app
            .bootstrap_admin(dir.path())
            .await
            .expect("bootstrap")
            .expect("first start writes the administrator token");
        let admin = std::fs::read_to_string(file).unwrap().trim().to_string();
        let answers = Answers::default();
        let record = answers.clone();
        let router = canopy_server::http::router_with(app.clone(), limits).layer(
            axum::middleware::from_fn(move |req: Request, next: Next| {
                let record = record.clone();
                async move {
                    let path = req.uri().path().to_string();
                    let response: Response = next.run(req).await;
                    let retry = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok());
                    record
                        .lock()
                        .unwrap()
                        .push((path, response.status(), Instant::now(), retry));
                    response
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Recorded {
            url: format!("http://{addr}"),
            app,
            admin,
            answers,
            task,
            _dir: dir,
        }
    }

    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    async fn call(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.bearer_auth(&self.admin).send().await.unwrap();
        let s = resp.status();
        (s, resp.json().await.unwrap_or(Value::Null))
    }

    async fn enrollment_token(&self) -> String {
        let (s, b) = self
            .call(
                reqwest::Client::new()
                    .post(self.at(&format!("/canopy/v1/projects/{P}/enrollment-tokens")))
                    .json(&json!({"description": "agent"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        b["secret"].as_str().unwrap().to_string()
    }

    /// Agent-protocol answers recorded so far (not enrollment, which is not limited per edge).
    fn agent_answers(&self) -> Vec<(String, StatusCode, Instant, Option<u64>)> {
        self.answers
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, ..)| p.starts_with("/canopy/v1/agent/") && !p.ends_with("/enroll"))
            .cloned()
            .collect()
    }

    /// The edge `name` once its agent applied its current generation (and it is above `min`).
    async fn wait_applied(&self, name: &str, min: u64) -> Value {
        let started = Instant::now();
        loop {
            let (_, b) = self
                .call(
                    reqwest::Client::new()
                        .get(self.at(&format!("/canopy/v1/projects/{P}/edges/{name}"))),
                )
                .await;
            let e = &b["edge"];
            let generation = e["generation"].as_u64().unwrap_or(0);
            if generation > min && e["appliedGeneration"] == e["generation"] {
                return e.clone();
            }
            assert!(
                started.elapsed() < DEADLINE,
                "edge {name} never applied: {b}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A driver that runs nothing: every app is `RUNNING`.
struct Double;

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
        _target: &TunnelTarget,
    ) -> Result<TunnelIo, DriverError> {
        Err(DriverError::NoSuchWorkload {
            what: "anything".into(),
        })
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
                ..Default::default()
            })
        })
        .collect()
}

/// Runs the real agent (sync and tunnel loops) as edge `name` until the returned sender is
/// dropped or fires.
async fn run_agent(
    server: &Recorded,
    name: &str,
    dir: &std::path::Path,
) -> tokio::sync::oneshot::Sender<()> {
    let mut config = AgentConfig::new(server.url.clone(), dir);
    config.enroll_token = Some(server.enrollment_token().await);
    config.name = Some(name.into());
    config.labels = BTreeMap::from([("site".to_string(), "storm".to_string())]);
    config.poll_wait = Duration::from_secs(25);
    // Quick passes and quick retries: the busiest a real agent gets.
    config.converge_interval = Duration::from_millis(200);
    config.backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let r = canopy_agent::run_with(config, Double, async move {
            let _ = stopped.await;
        })
        .await;
        if let Err(e) = r {
            panic!("agent stopped: {}", e.chain());
        }
    });
    stop
}

/// Uploads web-demo and deploys it to `site=storm`.
async fn deploy_storm_target(server: &Recorded) {
    let files = canopy_testkit::read_dir_files(&example("web-demo"));
    let mut form = reqwest::multipart::Form::new();
    for (name, bytes) in files {
        form = form.part(
            "files",
            reqwest::multipart::Part::bytes(bytes).file_name(name),
        );
    }
    let (s, b) = server
        .call(
            reqwest::Client::new()
                .post(server.at(&format!("/v3/projects/{P}/catalog/upload")))
                .multipart(form),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "upload: {b}");
    let (s, b) = server
        .call(
            reqwest::Client::new()
                .post(server.at(&format!("/v1/projects/{P}/appdeployment/deployments")))
                .json(&json!({"appName": "web-demo", "appVersion": "1.0.0",
                    "allAppTargetClusters": {"labels": {"site": "storm"}}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "deploy: {b}");
}

#[tokio::test]
async fn the_real_agent_is_never_limited_even_in_a_storm_of_changes() {
    let server = Recorded::start(Limits::default()).await;
    deploy_storm_target(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let _stop = run_agent(&server, "storm-1", dir.path()).await;
    let first = server.wait_applied("storm-1", 0).await;

    // An operator's script flips the edge in and out of the deployment 80 times, as fast as
    // the API answers: every flip is a new desired state for the agent (a long-poll answer and
    // a re-entry, a convergence pass, a report).
    let http = reqwest::Client::new();
    let labels = server.at(&format!("/canopy/v1/projects/{P}/edges/storm-1/labels"));
    for i in 0..80 {
        let body = if i % 2 == 0 {
            json!({"remove": ["site"]})
        } else {
            json!({"set": {"site": "storm"}})
        };
        let (s, b) = server.call(http.patch(&labels).json(&body)).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let last = server
        .wait_applied("storm-1", first["generation"].as_u64().unwrap())
        .await;
    assert_eq!(last["deployments"], 1, "{last}");

    let answers = server.agent_answers();
    let limited: Vec<_> = answers
        .iter()
        .filter(|(_, s, ..)| *s == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(limited.is_empty(), "the agent was limited: {limited:?}");
    let polls = answers
        .iter()
        .filter(|(p, s, ..)| p.ends_with("/desired-state") && *s == StatusCode::OK)
        .count();
    let reports = answers
        .iter()
        .filter(|(p, ..)| p.ends_with("/status"))
        .count();
    assert!(
        polls >= 3 && reports >= 3,
        "the storm reached the agent: {polls} desired states, {reports} reports"
    );
}

#[tokio::test]
async fn the_real_agent_waits_out_retry_after() {
    // An edge may send one request a second, two at once: the agent's first moments (a
    // long-poll, a report, a tunnel poll, more reports) go over it.
    let server = Recorded::start(Limits {
        agent_requests_per_second: 1,
        agent_burst: 2,
        ..Limits::default()
    })
    .await;
    deploy_storm_target(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let stop = run_agent(&server, "slowed-1", dir.path()).await;
    server.wait_applied("slowed-1", 0).await;

    // 429s the same loop (same path) retried after: (path, waited, Retry-After).
    let retried = |answers: &[(String, StatusCode, Instant, Option<u64>)]| {
        answers
            .iter()
            .filter(|(_, s, ..)| *s == StatusCode::TOO_MANY_REQUESTS)
            .filter_map(|(path, _, at, retry)| {
                let retry = Duration::from_secs(retry.expect("429 carries Retry-After"));
                answers
                    .iter()
                    .find(|(p, _, t, _)| p == path && t > at)
                    .map(|(_, _, next, _)| (path.clone(), next.duration_since(*at), retry))
            })
            .collect::<Vec<_>>()
    };
    // Let the loops run into the limit, and retry, a few times.
    let started = Instant::now();
    while retried(&server.agent_answers()).len() < 3 {
        assert!(
            started.elapsed() < DEADLINE,
            "the agent was not limited and retried 3 times: {:?}",
            server.agent_answers()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(stop);

    for (path, waited, retry) in retried(&server.agent_answers()) {
        // The same loop's next request comes no sooner than Retry-After (the recorder's clock
        // is read after the answer was built: allow it 50 ms).
        assert!(
            waited + Duration::from_millis(50) >= retry,
            "{path}: retried after {waited:?}, Retry-After was {retry:?}"
        );
    }
}

#[tokio::test]
async fn an_edge_over_its_rate_gets_429_and_others_do_not() {
    let server = Recorded::start(Limits {
        agent_requests_per_second: 1,
        agent_burst: 3,
        ..Limits::default()
    })
    .await;
    let http = reqwest::Client::new();
    let mut creds = Vec::new();
    for name in ["busy", "quiet"] {
        let resp = http
            .post(server.at("/canopy/v1/agent/enroll"))
            .header(PROTOCOL_HEADER, "1")
            .json(
                &json!({"protocolVersion": 1, "token": server.enrollment_token().await,
                "name": name}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        creds.push(
            resp.json::<Value>().await.unwrap()["credential"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let report = |cred: String, seq: u64| {
        let http = http.clone();
        let url = server.at("/canopy/v1/agent/status");
        async move {
            http.post(url)
                .header(PROTOCOL_HEADER, "1")
                .bearer_auth(cred)
                .json(&json!({"protocolVersion": 1, "seq": seq, "generation": 0, "apps": []}))
                .send()
                .await
                .unwrap()
        }
    };
    for seq in 1..=3 {
        assert_eq!(report(creds[0].clone(), seq).await.status(), StatusCode::OK);
    }
    let refused = report(creds[0].clone(), 4).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    // Long-polls and tunnel polls count too; another edge is not affected.
    let poll = http
        .get(server.at("/canopy/v1/agent/desired-state?after=0&waitSeconds=0"))
        .header(PROTOCOL_HEADER, "1")
        .bearer_auth(&creds[0])
        .send()
        .await
        .unwrap();
    assert_eq!(poll.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(report(creds[1].clone(), 1).await.status(), StatusCode::OK);
    // After Retry-After, the busy edge passes again.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(report(creds[0].clone(), 5).await.status(), StatusCode::OK);

    // The agent's client says how long to wait.
    let client = canopy_agent::AgentClient::new(&server.url)
        .unwrap()
        .with_credential(canopy_agent::Credential::new(&creds[1]).unwrap());
    let report = |seq| StatusReport {
        protocol_version: 1,
        seq,
        ..Default::default()
    };
    let mut got = None;
    for seq in 2..=8 {
        if let Err(e) = client.report(&report(seq)).await {
            got = Some(e);
            break;
        }
    }
    let e = got.expect("the quiet edge went over its rate too");
    assert!(e.is_transient(), "{e}");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(1)), "{e}");
    let _ = &server.app;
}
