//! Liveness, readiness and startup probes of Helm pods, run by the agent as Kubernetes' kubelet
//! runs them.
//!
//! Engines cannot run them: Docker's health check is one command inside the image (no HTTP
//! client in a distroless image), knows nothing of readiness or startup, and Podman without
//! systemd never runs it. So the agent does, on its own schedule and not in convergence passes
//! (those are seconds apart, or a heartbeat when all is well): a background task, owned by the
//! container driver and aborted with it, runs each probe every `periodSeconds` after
//! `initialDelaySeconds` from the container's start, with `timeoutSeconds` per try and the
//! success and failure thresholds:
//!
//! - `httpGet`: a GET to the pod's address in the namespace network (status 200-399 passes;
//!   redirects are not followed, certificates not checked, like the kubelet's);
//! - `tcpSocket`: a TCP connection to the pod's address;
//! - `exec`: the command through the engine's exec API, in the container (exit 0 passes).
//!
//! While a startup probe has not passed, the other two do not run. A liveness (or startup)
//! probe that fails `failureThreshold` times restarts the container through the engine (the
//! pod's grace period, then SIGKILL); restarts for the same reason back off (10 s doubling to
//! 5 min, as the kubelet's crash-loop backoff). Readiness decides whether the container is
//! ready: not before `successThreshold` passes, no more after `failureThreshold` failures.
//!
//! Bounds: at most [`MAX_IN_FLIGHT`] probes run at once (each bounded by its timeout, at most
//! [`MAX_TIMEOUT`]), so 50 pods with three probes each never stall the agent or the engine;
//! an exec probe keeps at most 4 KiB of output. Results are kept per container id and start
//! time, in memory (an agent restart probes again, like a kubelet restart: readiness is
//! unknown until the first pass of each probe; nothing running is restarted for it).
//!
//! The driver is told when readiness changes or a container is restarted
//! ([`Prober::changed`]), so the agent reports it at once rather than at the next heartbeat.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::query_parameters::RestartContainerOptions;
use canopy_proto::pods::{Probe, ProbeAction};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// Most probes running at once, across every pod.
pub const MAX_IN_FLIGHT: usize = 8;
/// Longest a single try may take, whatever the probe says.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the schedule is looked at.
const TICK: Duration = Duration::from_millis(250);
/// Output of an exec probe kept for the message.
const MAX_OUTPUT: usize = 4096;
/// First delay between two restarts for the same failing probe.
const FIRST_RESTART_BACKOFF: Duration = Duration::from_secs(10);
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(300);
/// Bound of the engine's restart call beyond the grace period.
const RESTART_TIMEOUT: Duration = Duration::from_secs(30);

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Startup => "startup",
            Kind::Liveness => "liveness",
            Kind::Readiness => "readiness",
        }
    }

    fn index(self) -> usize {
        match self {
            Kind::Startup => 0,
            Kind::Liveness => 1,
            Kind::Readiness => 2,
        }
    }
}

/// One running container to probe, as a pass sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// Engine id.
    pub id: String,
    /// Engine name (for restarts and logs).
    pub name: String,
    /// `container web of pod web-0`, for messages.
    pub label: String,
    /// The engine's `StartedAt` of this run.
    pub started_at: String,
    /// Seconds since it started, when the pass looked.
    pub running_for: Duration,
    /// The pod's address in the namespace network.
    pub ip: Option<IpAddr>,
    pub startup: Option<Probe>,
    pub liveness: Option<Probe>,
    pub readiness: Option<Probe>,
    pub grace: Duration,
}

impl Spec {
    fn probe(&self, kind: Kind) -> Option<&Probe> {
        match kind {
            Kind::Startup => self.startup.as_ref(),
            Kind::Liveness => self.liveness.as_ref(),
            Kind::Readiness => self.readiness.as_ref(),
        }
    }
}

/// What the probes say about a container now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// The startup probe passed (or there is none).
    pub started: bool,
    /// Ready to serve (see the module doc).
    pub ready: bool,
    /// Consecutive failures of the readiness probe reached its threshold: why.
    pub not_ready: Option<String>,
    /// The last failure of each probe, if the last try failed.
    pub failing: Vec<(Kind, String)>,
    /// Restarts the agent made because a liveness or startup probe failed.
    pub restarts: u32,
    /// Why the last of those restarts happened.
    pub last_restart: String,
}

#[derive(Debug, Default)]
struct Track {
    successes: i32,
    failures: i32,
    next: Option<Instant>,
    in_flight: bool,
    last_error: String,
}

#[derive(Debug)]
struct Target {
    spec: Spec,
    /// When this run of the container started (approximately, from `running_for`).
    started: Instant,
    tracks: [Track; 3],
    started_ok: bool,
    ready: bool,
    not_ready: Option<String>,
    restarts: u32,
    last_restart: String,
    restart_at: Option<Instant>,
    restarting: bool,
}

impl Target {
    fn new(spec: Spec, restarts: u32, last_restart: String) -> Target {
        let started = Instant::now()
            .checked_sub(spec.running_for)
            .unwrap_or_else(Instant::now);
        Target {
            started_ok: spec.startup.is_none(),
            ready: spec.readiness.is_none() && spec.startup.is_none(),
            spec,
            started,
            tracks: Default::default(),
            not_ready: None,
            restarts,
            last_restart,
            restart_at: None,
            restarting: false,
        }
    }

    fn due(&self, kind: Kind, now: Instant) -> bool {
        let Some(p) = self.spec.probe(kind) else {
            return false;
        };
        if self.restarting || self.tracks[kind.index()].in_flight {
            return false;
        }
        let gated = match kind {
            Kind::Startup => self.started_ok,
            _ => !self.started_ok,
        };
        if gated {
            return false;
        }
        let at = self.tracks[kind.index()].next.unwrap_or_else(|| {
            self.started + Duration::from_secs(u64::try_from(p.initial_delay_seconds).unwrap_or(0))
        });
        now >= at
    }
}

struct Inner {
    docker: Docker,
    http: reqwest::Client,
    targets: Mutex<HashMap<String, Target>>,
    changed: Arc<Notify>,
}

/// The probe runner of one container driver (see the module doc).
pub struct Prober {
    inner: Arc<Inner>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prober").finish_non_exhaustive()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        if let Some(t) = self.lock_task().take() {
            t.abort();
        }
    }
}

impl Prober {
    /// A prober for containers of `docker`, telling `changed` when readiness changes or it
    /// restarts a container.
    pub fn new(docker: Docker, changed: Arc<Notify>) -> Prober {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .danger_accept_invalid_certs(true)
            .pool_max_idle_per_host(0)
            .build()
            .unwrap_or_default();
        Prober {
            inner: Arc::new(Inner {
                docker,
                http,
                targets: Mutex::default(),
                changed,
            }),
            task: Mutex::new(None),
        }
    }

    /// The containers to probe from now on (every running container with a probe, of every
    /// Helm app): state is kept for those that run on as they were, reset for a container that
    /// started again (but not its restart count), dropped for the others unless the prober is
    /// restarting them.
    pub fn set(&self, specs: Vec<Spec>) {
        let any = !specs.is_empty();
        {
            let mut targets = self.inner.lock();
            let mut old = std::mem::take(&mut *targets);
            for spec in specs {
                let target = match old.remove(&spec.id) {
                    Some(mut t) if t.spec.started_at == spec.started_at => {
                        t.spec.ip = spec.ip;
                        t.spec.label = spec.label;
                        t
                    }
                    Some(t) => Target::new(spec, t.restarts, t.last_restart),
                    None => Target::new(spec, 0, String::new()),
                };
                targets.insert(target.spec.id.clone(), target);
            }
            // A container the prober is restarting is not running for a while: keep its
            // restart count (reported, and the backoff of its next restart).
            targets.extend(old.into_iter().filter(|(_, t)| t.restarting));
        }
        if any {
            self.ensure_running();
        }
    }

    /// Whether the prober is restarting the container named `name` (the engine's name) right
    /// now. The engine stops it first (the pod's grace period, up to 30 s), and the converger,
    /// seeing it stopped meanwhile, must not start it itself: the engine's restart then fails
    /// ("container already running") and the restart is lost from the container's record.
    pub fn restarting(&self, name: &str) -> bool {
        self.inner
            .lock()
            .values()
            .any(|t| t.restarting && t.spec.name == name)
    }

    /// What the probes say about container `id`; `None` when it is not probed.
    pub fn status(&self, id: &str) -> Option<Status> {
        let targets = self.inner.lock();
        let t = targets.get(id)?;
        let failing = [Kind::Startup, Kind::Liveness, Kind::Readiness]
            .into_iter()
            .filter(|k| {
                let tr = &t.tracks[k.index()];
                tr.failures > 0 && !tr.last_error.is_empty()
            })
            .map(|k| (k, t.tracks[k.index()].last_error.clone()))
            .collect();
        Some(Status {
            started: t.started_ok,
            ready: t.ready,
            not_ready: t.not_ready.clone(),
            failing,
            restarts: t.restarts,
            last_restart: t.last_restart.clone(),
        })
    }

    fn ensure_running(&self) {
        let mut task = self.lock_task();
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let inner = Arc::clone(&self.inner);
        *task = Some(tokio::spawn(run(inner)));
    }

    fn lock_task(&self) -> std::sync::MutexGuard<'_, Option<JoinHandle<()>>> {
        self.task.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Target>> {
        self.targets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What finished in the background.
enum Done {
    Probe(String, Kind, Result<(), String>),
    Restart(String, Result<(), String>),
}

/// The probing loop: schedules due probes (bounded), applies results, restarts.
async fn run(inner: Arc<Inner>) {
    let mut running = FuturesUnordered::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = Instant::now();
                let mut due = Vec::new();
                {
                    let mut targets = inner.lock();
                    for t in targets.values_mut() {
                        for kind in [Kind::Startup, Kind::Liveness, Kind::Readiness] {
                            if running.len() + due.len() >= MAX_IN_FLIGHT {
                                break;
                            }
                            if t.due(kind, now) {
                                t.tracks[kind.index()].in_flight = true;
                                due.push((t.spec.clone(), kind));
                            }
                        }
                    }
                }
                for (spec, kind) in due {
                    let inner = Arc::clone(&inner);
                    running.push(Box::pin(async move {
                        let r = probe(&inner, &spec, kind).await;
                        Done::Probe(spec.id, kind, r)
                    }) as std::pin::Pin<Box<dyn std::future::Future<Output = Done> + Send>>);
                }
            }
            Some(done) = running.next(), if !running.is_empty() => {
                if let Some(restart) = settle(&inner, done) {
                    let inner = Arc::clone(&inner);
                    running.push(Box::pin(async move {
                        let r = restart_container(&inner, &restart).await;
                        Done::Restart(restart.id, r)
                    }));
                }
            }
        }
    }
}

/// Applies a result; returns a container to restart.
fn settle(inner: &Inner, done: Done) -> Option<Spec> {
    let mut changed = false;
    let mut restart = None;
    {
        let mut targets = inner.lock();
        match done {
            Done::Restart(id, r) => {
                if let Some(t) = targets.get_mut(&id) {
                    t.restarting = false;
                    if let Err(e) = r {
                        warn!(container = %t.spec.name, error = %e, "cannot restart the container whose probe failed");
                    }
                }
            }
            Done::Probe(id, kind, r) => {
                let t = targets.get_mut(&id)?;
                let p = t.spec.probe(kind).cloned()?;
                let tr = &mut t.tracks[kind.index()];
                tr.in_flight = false;
                tr.next = Some(
                    Instant::now()
                        + Duration::from_secs(u64::try_from(p.period_seconds.max(1)).unwrap_or(1)),
                );
                match r {
                    Ok(()) => {
                        tr.successes += 1;
                        tr.failures = 0;
                        tr.last_error.clear();
                    }
                    Err(e) => {
                        tr.failures += 1;
                        tr.successes = 0;
                        debug!(container = %t.spec.name, probe = kind.word(), error = %e, "probe failed");
                        tr.last_error = e;
                    }
                }
                let (successes, failures, last) =
                    (tr.successes, tr.failures, tr.last_error.clone());
                match kind {
                    Kind::Startup if successes >= 1 => {
                        t.started_ok = true;
                        if t.spec.readiness.is_none() {
                            t.ready = true;
                        }
                        changed = true;
                    }
                    Kind::Readiness => {
                        if successes >= p.success_threshold.max(1) && !t.ready {
                            t.ready = true;
                            t.not_ready = None;
                            changed = true;
                        } else if failures >= p.failure_threshold.max(1) {
                            let why = format!("readiness probe failed: {last}");
                            if t.ready || t.not_ready.is_none() {
                                changed = true;
                            }
                            t.ready = false;
                            t.not_ready = Some(why);
                        }
                    }
                    Kind::Startup | Kind::Liveness if failures >= p.failure_threshold.max(1) => {
                        let now = Instant::now();
                        if t.restart_at.is_none_or(|at| now >= at) {
                            let backoff = FIRST_RESTART_BACKOFF
                                .saturating_mul(2u32.saturating_pow(t.restarts.min(16)))
                                .min(MAX_RESTART_BACKOFF);
                            t.restarts += 1;
                            t.last_restart =
                                format!("{} probe failed {failures} times: {last}", kind.word());
                            t.restart_at = Some(now + backoff);
                            t.restarting = true;
                            t.ready = t.spec.readiness.is_none() && t.spec.startup.is_none();
                            t.started_ok = t.spec.startup.is_none();
                            t.tracks = Default::default();
                            info!(container = %t.spec.name, reason = %t.last_restart, "restarting the container");
                            restart = Some(t.spec.clone());
                            changed = true;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    if changed {
        inner.changed.notify_one();
    }
    restart
}

async fn restart_container(inner: &Inner, spec: &Spec) -> Result<(), String> {
    let grace = i32::try_from(spec.grace.as_secs()).unwrap_or(i32::MAX);
    let options = RestartContainerOptions {
        t: Some(grace),
        ..Default::default()
    };
    match tokio::time::timeout(
        spec.grace + RESTART_TIMEOUT,
        inner.docker.restart_container(&spec.id, Some(options)),
    )
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the engine did not restart it in time".into()),
    }
}

/// Runs one try of probe `kind` of `spec`.
async fn probe(inner: &Inner, spec: &Spec, kind: Kind) -> Result<(), String> {
    let Some(p) = spec.probe(kind) else {
        return Ok(());
    };
    let timeout =
        Duration::from_secs(u64::try_from(p.timeout_seconds.max(1)).unwrap_or(1)).min(MAX_TIMEOUT);
    let attempt = async {
        match &p.action {
            ProbeAction::HttpGet {
                path,
                port,
                https,
                headers,
            } => {
                let ip = spec.ip.ok_or("the pod has no address yet")?;
                let host = match ip {
                    IpAddr::V4(v4) => v4.to_string(),
                    IpAddr::V6(v6) => format!("[{v6}]"),
                };
                let scheme = if *https { "https" } else { "http" };
                let path = if path.starts_with('/') {
                    path.clone()
                } else {
                    format!("/{path}")
                };
                let url = format!("{scheme}://{host}:{port}{path}");
                let mut request = inner.http.get(&url).timeout(timeout);
                for (k, v) in headers {
                    request = request.header(k, v);
                }
                let response = request.send().await.map_err(|e| {
                    let mut m = format!("GET {url}: {e}");
                    let mut source = std::error::Error::source(&e);
                    while let Some(s) = source {
                        m = format!("{m}: {s}");
                        source = s.source();
                    }
                    m
                })?;
                let status = response.status().as_u16();
                if (200..400).contains(&status) {
                    Ok(())
                } else {
                    Err(format!("HTTP probe failed with statuscode: {status}"))
                }
            }
            ProbeAction::TcpSocket { port } => {
                let ip = spec.ip.ok_or("the pod has no address yet")?;
                tokio::net::TcpStream::connect((ip, *port))
                    .await
                    .map(drop)
                    .map_err(|e| format!("dial tcp {ip}:{port}: {e}"))
            }
            ProbeAction::Exec { command } => exec(&inner.docker, &spec.id, command).await,
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {} s", timeout.as_secs())),
    }
}

/// Runs `command` in container `id`: Ok on exit 0, else the code and output.
async fn exec(docker: &Docker, id: &str, command: &[String]) -> Result<(), String> {
    let created = docker
        .create_exec(
            id,
            CreateExecOptions {
                cmd: Some(command.to_vec()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("exec: {e}"))?;
    let mut output = Vec::new();
    match docker
        .start_exec(&created.id, None)
        .await
        .map_err(|e| format!("exec: {e}"))?
    {
        StartExecResults::Attached { output: mut o, .. } => {
            while let Some(chunk) = o.next().await {
                let Ok(chunk) = chunk else { break };
                let bytes = chunk.into_bytes();
                let room = MAX_OUTPUT.saturating_sub(output.len());
                output.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
        }
        StartExecResults::Detached => {}
    }
    let code = docker
        .inspect_exec(&created.id)
        .await
        .map_err(|e| format!("exec: {e}"))?
        .exit_code
        .unwrap_or(-1);
    if code == 0 {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&output);
        let text: String = text.trim().chars().take(200).collect();
        Err(if text.is_empty() {
            format!("command exited with code {code}")
        } else {
            format!("command exited with code {code}: {text}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(port: u16) -> Probe {
        Probe {
            action: ProbeAction::TcpSocket { port },
            initial_delay_seconds: 0,
            period_seconds: 1,
            timeout_seconds: 1,
            success_threshold: 1,
            failure_threshold: 2,
        }
    }

    fn spec(readiness: Option<Probe>, liveness: Option<Probe>, startup: Option<Probe>) -> Spec {
        Spec {
            id: "id".into(),
            name: "c".into(),
            label: "container c of pod p".into(),
            started_at: "t0".into(),
            running_for: Duration::from_secs(5),
            ip: Some("127.0.0.1".parse().unwrap()),
            startup,
            liveness,
            readiness,
            grace: Duration::from_secs(1),
        }
    }

    #[test]
    fn startup_gates_the_others_and_readiness_needs_a_pass() {
        let now = Instant::now();
        let t = Target::new(
            spec(Some(tcp(1)), Some(tcp(1)), Some(tcp(1))),
            0,
            String::new(),
        );
        assert!(!t.ready && !t.started_ok);
        assert!(t.due(Kind::Startup, now));
        assert!(!t.due(Kind::Liveness, now) && !t.due(Kind::Readiness, now));
        let plain = Target::new(spec(None, None, None), 0, String::new());
        assert!(plain.ready, "no probes: ready when running");
        let mut delayed = tcp(1);
        delayed.initial_delay_seconds = 60;
        let t = Target::new(spec(Some(delayed), None, None), 0, String::new());
        assert!(!t.due(Kind::Readiness, now), "initial delay from the start");
    }

    #[tokio::test]
    async fn results_move_readiness_and_liveness_failures_restart() {
        let docker =
            Docker::connect_with_http("http://127.0.0.1:1", 1, bollard::API_DEFAULT_VERSION)
                .unwrap();
        let notify = Arc::new(Notify::new());
        let prober = Prober::new(docker, Arc::clone(&notify));
        // Not started: the loop would run for real; only settle() is exercised here.
        {
            let mut targets = prober.inner.lock();
            let s = spec(Some(tcp(1)), Some(tcp(1)), None);
            targets.insert("id".into(), Target::new(s, 0, String::new()));
        }
        let inner = &prober.inner;
        assert!(settle(inner, Done::Probe("id".into(), Kind::Readiness, Ok(()))).is_none());
        assert!(prober.status("id").unwrap().ready);
        settle(
            inner,
            Done::Probe("id".into(), Kind::Readiness, Err("refused".into())),
        );
        assert!(prober.status("id").unwrap().ready, "one failure of two");
        settle(
            inner,
            Done::Probe("id".into(), Kind::Readiness, Err("refused".into())),
        );
        let s = prober.status("id").unwrap();
        assert!(!s.ready);
        assert_eq!(
            s.not_ready.as_deref(),
            Some("readiness probe failed: refused")
        );
        assert!(
            settle(
                inner,
                Done::Probe("id".into(), Kind::Liveness, Err("x".into()))
            )
            .is_none()
        );
        let restart = settle(
            inner,
            Done::Probe("id".into(), Kind::Liveness, Err("x".into())),
        );
        assert_eq!(restart.map(|s| s.id).as_deref(), Some("id"));
        let s = prober.status("id").unwrap();
        assert_eq!(s.restarts, 1);
        assert_eq!(s.last_restart, "liveness probe failed 2 times: x");
        // Not running while it restarts: not forgotten, and the converger leaves it alone.
        prober.set(Vec::new());
        assert_eq!(prober.status("id").map(|s| s.restarts), Some(1));
        assert!(prober.restarting("c") && !prober.restarting("other"));
        // Failing again at once: backing off, no second restart yet.
        settle(inner, Done::Restart("id".into(), Ok(())));
        assert!(!prober.restarting("c"), "restarted: the converger's again");
        settle(
            inner,
            Done::Probe("id".into(), Kind::Liveness, Err("x".into())),
        );
        assert!(
            settle(
                inner,
                Done::Probe("id".into(), Kind::Liveness, Err("x".into()))
            )
            .is_none()
        );
        // A new start of the container resets the probes, not the restart count.
        let mut again = spec(Some(tcp(1)), Some(tcp(1)), None);
        again.started_at = "t1".into();
        {
            let mut targets = prober.inner.lock();
            let old = targets.remove("id").unwrap();
            targets.insert(
                "id".into(),
                Target::new(again, old.restarts, old.last_restart),
            );
        }
        let s = prober.status("id").unwrap();
        assert!(!s.ready && s.restarts == 1);
    }
}
