//! Test support for the agent's protocol and sync loop.
//!
//! [`FakeControlPlane`] is a **protocol fake standing in until the real server lands**: a small
//! axum server that speaks `docs/AGENT-PROTOCOL.md` (enroll, long-poll, status, the protocol
//! header, `401`/`426` and the error body) from memory, with knobs to misbehave. When the
//! control plane implements the agent API, these tests should move to it (through the testkit).
//! [`FakeDriver`] stands in for the container driver: it records the generations it is asked
//! to apply and reports every app `RUNNING`.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the support"
)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use canopy_agent::{AgentConfig, AgentError, Backoff, Converger, DataDir, DriverError};
use canopy_proto::{
    AppInstance, AppState, AppStatus, ContainerSpec, DeploymentInstance, DesiredState,
    EnrollRequest, EnrollResponse, Generation, PROTOCOL_HEADER, StatusAck, StatusReport, paths,
};
use serde::Deserialize;
use tokio::sync::{oneshot, watch};

/// The enrollment token the fake accepts.
pub const TOKEN: &str = "cnt_test-token";
/// Generous: the machine may be a loaded 2-core runner.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// What the fake holds and records.
#[derive(Default)]
pub struct Inner {
    /// The protocol version the fake speaks (others get `426`).
    pub speaks: u32,
    /// Credentials it accepts (issued at enrollment, or given by a test).
    pub credentials: Vec<String>,
    pub revoked: bool,
    pub desired: DesiredState,
    /// Misbehaving: answer every poll with this, whatever `after` says.
    pub force_answer: Option<DesiredState>,
    /// Answer every request with this status (`503`: a control plane in trouble).
    pub fail_with: Option<u16>,
    /// How many requests were failed on purpose.
    pub failed: usize,
    pub heartbeat_seconds: u32,
    pub enrollments: Vec<EnrollRequest>,
    /// Every report received (accepted or not).
    pub reports: Vec<StatusReport>,
    pub highest_seq: u64,
    /// `(after, status)` of every answered poll.
    pub polls: Vec<(u64, u16)>,
}

/// A protocol fake of the control plane's agent API (see the module docs).
pub struct FakeControlPlane {
    pub url: String,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
}

struct Shared {
    inner: Mutex<Inner>,
    /// Bumped on every change of the desired state, to wake long-polls.
    changed: watch::Sender<u64>,
    issued: AtomicUsize,
}

impl FakeControlPlane {
    /// Starts on an ephemeral loopback port, at generation 0 with nothing desired.
    pub async fn start() -> FakeControlPlane {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                speaks: 1,
                heartbeat_seconds: 30,
                ..Default::default()
            }),
            changed: watch::channel(0).0,
            issued: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route(paths::ENROLL, post(enroll))
            .route(paths::DESIRED_STATE, get(desired_state))
            .route(paths::STATUS, post(status))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        FakeControlPlane {
            url,
            shared,
            stop: Some(stop),
        }
    }

    /// Reads or changes what the fake holds.
    pub fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.shared.inner.lock().unwrap())
    }

    /// Sets the desired state (its generation as given) and wakes the long-polls.
    pub fn set_desired(&self, desired: DesiredState) {
        self.with(|i| i.desired = desired);
        self.shared.changed.send_modify(|n| *n += 1);
    }

    /// Accepts `credential` as an enrolled edge's.
    pub fn accept_credential(&self, credential: &str) {
        self.with(|i| i.credentials.push(credential.to_string()));
    }

    pub fn reports(&self) -> Vec<StatusReport> {
        self.with(|i| i.reports.clone())
    }

    pub fn polls(&self) -> Vec<(u64, u16)> {
        self.with(|i| i.polls.clone())
    }

    /// Stops answering (the port closes).
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl Drop for FakeControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    let body = serde_json::json!({
        "code": code, "message": message, "details": [], "errorMessages": []
    });
    (status, Json(body)).into_response()
}

/// The checks every request goes through: forced failure, then the protocol header.
fn precheck(shared: &Shared, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let mut inner = shared.inner.lock().unwrap();
    if let Some(code) = inner.fail_with {
        inner.failed += 1;
        let status = StatusCode::from_u16(code).unwrap();
        return Err(Box::new(error(
            status,
            "unavailable",
            "the fake is failing on purpose".into(),
        )));
    }
    let version = headers
        .get(PROTOCOL_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    if version != inner.speaks.to_string() {
        return Err(Box::new(error(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported_protocol",
            format!(
                "agent protocol version {version} is not supported by this server (it speaks {}); \
                 upgrade the agent",
                inner.speaks
            ),
        )));
    }
    Ok(())
}

fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let inner = shared.inner.lock().unwrap();
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match bearer {
        Some(c) if inner.credentials.iter().any(|k| k == c) && !inner.revoked => Ok(()),
        Some(c) if inner.credentials.iter().any(|k| k == c) => Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "edge credential revoked".into(),
        ))),
        _ => Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "invalid edge credential".into(),
        ))),
    }
}

async fn enroll(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(request): Json<EnrollRequest>,
) -> Response {
    if let Err(r) = precheck(&shared, &headers) {
        return *r;
    }
    if request.token != TOKEN {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "invalid enrollment token".into(),
        );
    }
    let n = shared.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let credential = format!("cne_fake-credential-{n}");
    let mut inner = shared.inner.lock().unwrap();
    inner.credentials.push(credential.clone());
    let name = if request.name.is_empty() {
        format!("edge-{n}")
    } else {
        request.name.clone()
    };
    inner.enrollments.push(request);
    let body = EnrollResponse {
        edge_id: format!("edge-id-{n}"),
        edge_name: name,
        project: "default".into(),
        credential,
        heartbeat_seconds: inner.heartbeat_seconds,
    };
    (StatusCode::CREATED, Json(body)).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PollQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    wait_seconds: Option<u64>,
}

async fn desired_state(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<PollQuery>,
) -> Response {
    if let Err(r) = precheck(&shared, &headers).and_then(|()| authenticate(&shared, &headers)) {
        return *r;
    }
    let wait = Duration::from_secs(q.wait_seconds.unwrap_or(25).min(60));
    let mut changes = shared.changed.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let answer = {
            let inner = shared.inner.lock().unwrap();
            if let Some(forced) = &inner.force_answer {
                Some(forced.clone())
            } else if q.after == 0 || inner.desired.generation.0 > q.after {
                Some(inner.desired.clone())
            } else {
                None
            }
        };
        if let Some(d) = answer {
            shared.inner.lock().unwrap().polls.push((q.after, 200));
            return Json(d).into_response();
        }
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            shared.inner.lock().unwrap().polls.push((q.after, 204));
            return StatusCode::NO_CONTENT.into_response();
        }
    }
}

async fn status(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(report): Json<StatusReport>,
) -> Response {
    if let Err(r) = precheck(&shared, &headers).and_then(|()| authenticate(&shared, &headers)) {
        return *r;
    }
    let mut inner = shared.inner.lock().unwrap();
    inner.reports.push(report.clone());
    if report.generation == inner.desired.generation
        && let Some(unknown) = report.apps.iter().find(|a| {
            !inner
                .desired
                .deployments
                .iter()
                .any(|d| d.deployment_id == a.deployment_id)
        })
    {
        let message = format!(
            "deployment {} is not desired on this edge at generation {}",
            unknown.deployment_id, report.generation.0
        );
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_argument",
            message,
        );
    }
    inner.highest_seq = inner.highest_seq.max(report.seq);
    Json(StatusAck {
        seq: inner.highest_seq,
        generation: inner.desired.generation,
        heartbeat_seconds: inner.heartbeat_seconds,
    })
    .into_response()
}

/// A driver double: records what it is asked to apply, reports every app `RUNNING` (or fails
/// every pass while `failing` is set).
#[derive(Clone, Default)]
pub struct FakeDriver {
    pub applied: Arc<Mutex<Vec<Generation>>>,
    pub observed: Arc<AtomicUsize>,
    /// Every pass the loop ran (apply or observe, failed or not).
    pub passes: Arc<AtomicUsize>,
    pub failing: Arc<AtomicBool>,
    /// The engine it claims (empty: `fake engine 1.0`); may change while the agent runs.
    pub engine: Arc<Mutex<String>>,
}

impl FakeDriver {
    pub fn applied(&self) -> Vec<Generation> {
        self.applied.lock().unwrap().clone()
    }

    fn statuses(&self, desired: &DesiredState) -> Result<Vec<AppStatus>, DriverError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(DriverError::Timeout {
                op: "list",
                target: "containers".into(),
                timeout: Duration::from_secs(30),
            });
        }
        Ok(desired
            .deployments
            .iter()
            .flat_map(|d| {
                d.apps.iter().map(|a| AppStatus {
                    deployment_id: d.deployment_id.clone(),
                    app: a.name.clone(),
                    state: AppState::Running,
                    deployment_generation: d.generation,
                    ..Default::default()
                })
            })
            .collect())
    }
}

impl Converger for FakeDriver {
    async fn apply(&self, desired: &DesiredState) -> Result<Vec<AppStatus>, DriverError> {
        self.passes.fetch_add(1, Ordering::SeqCst);
        // Recorded even when failing: the loop asked for it.
        let mut applied = self.applied.lock().unwrap();
        if applied.last() != Some(&desired.generation) {
            applied.push(desired.generation);
        }
        drop(applied);
        self.statuses(desired)
    }

    async fn observe(&self, desired: &DesiredState) -> Result<Vec<AppStatus>, DriverError> {
        self.passes.fetch_add(1, Ordering::SeqCst);
        self.observed.fetch_add(1, Ordering::SeqCst);
        self.statuses(desired)
    }

    fn engine(&self) -> String {
        let engine = self.engine.lock().unwrap();
        if engine.is_empty() {
            "fake engine 1.0".into()
        } else {
            engine.clone()
        }
    }
}

/// A running agent, stopped through its shutdown future.
pub struct RunningAgent {
    stop: Option<oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<Result<(), AgentError>>,
}

impl RunningAgent {
    /// Runs [`canopy_agent::run_with`] in a task.
    pub fn start(config: AgentConfig, driver: FakeDriver) -> RunningAgent {
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(canopy_agent::run_with(config, driver, async {
            let _ = stopped.await;
        }));
        RunningAgent {
            stop: Some(stop),
            handle,
        }
    }

    /// Runs [`canopy_agent::run`] (the real driver) in a task.
    pub fn start_real(config: AgentConfig) -> RunningAgent {
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(canopy_agent::run(config, async {
            let _ = stopped.await;
        }));
        RunningAgent {
            stop: Some(stop),
            handle,
        }
    }

    /// Asks it to stop and waits for the outcome.
    pub async fn stop(mut self) -> Result<(), AgentError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(DEADLINE, &mut self.handle)
            .await
            .expect("the agent did not stop in time")
            .expect("the agent task panicked")
    }

    /// Waits for it to end by itself (an error, or `Ok` after shutdown).
    pub async fn finished(mut self) -> Result<(), AgentError> {
        tokio::time::timeout(DEADLINE, &mut self.handle)
            .await
            .expect("the agent did not stop by itself in time")
            .expect("the agent task panicked")
    }
}

/// A configuration with short intervals, for `server` and `data_dir`.
pub fn fast_config(server: &str, data_dir: &Path) -> AgentConfig {
    init_logs();
    let mut c = AgentConfig::new(server, data_dir);
    c.poll_wait = Duration::from_secs(1);
    c.converge_interval = Duration::from_millis(50);
    c.heartbeat = Some(Duration::from_millis(200));
    c.backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(200));
    c
}

/// A data directory already enrolled with `cp` (credential accepted by it).
pub fn enrolled_dir(cp: &FakeControlPlane, root: &Path) -> DataDir {
    let dir = DataDir::open(root).unwrap();
    let enrolled = EnrollResponse {
        edge_id: "edge-id-0".into(),
        edge_name: "store-000".into(),
        project: "default".into(),
        credential: "cne_preenrolled".into(),
        heartbeat_seconds: 30,
    };
    dir.save_enrollment(&cp.url, &enrolled).unwrap();
    cp.accept_credential("cne_preenrolled");
    dir
}

/// A desired state of one deployment per id, each with one app `web`.
pub fn desired(generation: u64, deployments: &[&str]) -> DesiredState {
    DesiredState {
        generation: Generation(generation),
        deployments: deployments
            .iter()
            .map(|id| DeploymentInstance {
                deployment_id: id.to_string(),
                project: "default".into(),
                package: "web-demo".into(),
                package_version: "1.0.0".into(),
                generation: 1,
                apps: vec![AppInstance {
                    name: "web".into(),
                    version: "1.0.0".into(),
                    namespace: "web-demo".into(),
                    spec_hash: format!("{id}-g{generation}"),
                    containers: vec![ContainerSpec {
                        name: "httpd".into(),
                        image: "localhost/busybox:canopy-test".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            })
            .collect(),
        ..Default::default()
    }
}

/// Polls `done` until it holds, or panics at the deadline naming `what`.
pub async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback address where nothing listens.
pub fn closed_address() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}

/// Labels as the CLI would pass them.
pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "canopy_agent=debug".into()),
        )
        .try_init();
}

/// The log lines of this thread (the agent's too, in a current-thread test runtime), captured
/// while this lives.
pub struct Captured {
    buf: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

/// One writer into a [`Captured`] buffer.
struct CapturedWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CapturedWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Captures `info` and up of this thread from now on.
    pub fn start() -> Captured {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&buf);
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_ansi(false)
            .with_writer(move || CapturedWriter(Arc::clone(&writer)))
            .finish();
        Captured {
            buf,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }
}
