//! The simulated edges. Each is a real [`AgentClient`] with its own credential, run as two
//! tasks: a **poller** (the long-poll loop, `after=<held generation>`) and a **reporter**
//! (a status report at once for every new desired state, every app `RUNNING` at the
//! deployment's generation, then again every heartbeat after the last report, as the real
//! agent does, or every `--report-seconds`). Most edges share HTTP/2 connections
//! (`edges_per_connection` each); the first `tls_agents` edges each have their own HTTPS
//! connection with the real agent's client settings, as deployed agents connect. Nothing runs: the simulated agent converges instantly.
//!
//! The [`Tracker`] sees every desired state an edge receives. A phase
//! ([`Tracker::begin`]) names which states count as "delivered" and records, per edge, the
//! time from the phase start (just before the operator's request) to the moment that edge's
//! long-poll returned such a state.
//!
//! With several control-plane addresses (replicas), each edge is given all of them, starting
//! with the one it enrolled at (its *home*), and fails over as the real agent does: a request
//! that cannot reach its address moves the edge's client to the next one, tried after a short
//! jitter; the next long-poll after a failure does not wait, and its answer makes the edge
//! report at once. A failover ([`Tracker::begin_failover`]) records, per edge of the killed
//! replica, when a surviving replica first answered it (*connected*) and when it first
//! acknowledged its status report (*fresh*), and counts desired states sent to them again.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use canopy_agent::{AgentClient, AgentError, Backoff, Credential};
use canopy_proto::{
    AgentInfo, AppState, AppStatus, DesiredState, EnrollRequest, Generation, PROTOCOL_VERSION,
    StatusReport,
};
use futures::StreamExt as _;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::config::{SimConfig, TLS_AGENT_SOURCE, Transport};
use crate::error::SimError;

/// Bound of one HTTP connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Distinct error messages kept for the report.
const MAX_ERROR_SAMPLES: usize = 10;

/// Which received desired states complete a phase for an edge (by index).
pub type Want = Box<dyn Fn(usize, &DesiredState) -> bool + Send + Sync>;

/// Counts over the whole run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Long-polls that returned a new desired state (200).
    pub polls_changed: u64,
    /// Long-polls that ended with nothing new (204).
    pub polls_timed_out: u64,
    /// Status reports acknowledged.
    pub reports: u64,
    /// Failed requests of the simulated agents (poll or report).
    pub errors: u64,
    /// Of those, the ones the server refused with `Retry-After` (429 over an edge's rate or
    /// long-poll cap, 503 at capacity): a well-behaved fleet sees none.
    pub throttled: u64,
}

struct Phase {
    start: Instant,
    want: Want,
    expected: usize,
    got: Vec<Option<Duration>>,
    done: usize,
    /// Edges woken (long-poll answered 200) during the phase, wanted or not.
    wakes: u64,
    /// Wakes with a state the phase does not want (edges the change should not touch).
    other_wakes: u64,
}

/// A failover being measured (see the module docs).
struct Failover {
    start: Instant,
    /// The killed replica's address (normalized, as [`AgentClient::server`] gives it).
    killed: String,
    /// Per edge: whether it was homed at the killed replica.
    moved: Vec<bool>,
    expected: usize,
    connected: Vec<Option<Duration>>,
    fresh: Vec<Option<Duration>>,
    connected_count: usize,
    fresh_count: usize,
    /// Desired states the moved edges received again (a new generation after they moved).
    redelivered: u64,
    /// Requests of the moved edges that failed.
    errors: u64,
}

impl Failover {
    /// Edge `edge` got an answer over `via`; `report`: an acknowledged status report.
    fn answered(&mut self, edge: usize, via: &AgentClient, report: bool) {
        if !self.moved[edge] {
            return;
        }
        let wanted = self.connected[edge].is_none() || (report && self.fresh[edge].is_none());
        if !wanted || via.server() == self.killed {
            return;
        }
        let at = self.start.elapsed();
        if self.connected[edge].is_none() {
            self.connected[edge] = Some(at);
            self.connected_count += 1;
        }
        if report && self.fresh[edge].is_none() {
            self.fresh[edge] = Some(at);
            self.fresh_count += 1;
        }
    }
}

/// The outcome of a failover (per moved edge, sorted times from the kill).
#[derive(Debug, Clone, Default)]
pub struct FailoverResult {
    pub expected: usize,
    pub connected: Vec<Duration>,
    pub fresh: Vec<Duration>,
    pub redelivered: u64,
    pub errors: u64,
}

struct Inner {
    counters: Counters,
    errors: Vec<String>,
    reported: Vec<bool>,
    reported_count: usize,
    phase: Option<Phase>,
    failover: Option<Failover>,
}

/// Shared record of what the simulated edges received and sent.
pub struct Tracker {
    inner: Mutex<Inner>,
}

/// The outcome of one phase.
#[derive(Debug, Clone)]
pub struct PhaseResult {
    pub expected: usize,
    /// Per delivered edge, time from the phase start to its long-poll's answer; sorted.
    pub latencies: Vec<Duration>,
    pub wakes: u64,
    pub other_wakes: u64,
}

impl Tracker {
    fn new(edges: usize) -> Tracker {
        Tracker {
            inner: Mutex::new(Inner {
                counters: Counters::default(),
                errors: Vec::new(),
                reported: vec![false; edges],
                reported_count: 0,
                phase: None,
                failover: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a phase: from now, an edge whose long-poll returns a state `want` accepts is
    /// delivered; `expected` edges should be.
    pub fn begin(&self, expected: usize, want: Want) {
        let mut st = self.lock();
        let n = st.reported.len();
        st.phase = Some(Phase {
            start: Instant::now(),
            want,
            expected,
            got: vec![None; n],
            done: 0,
            wakes: 0,
            other_wakes: 0,
        });
    }

    /// How many edges the current phase has delivered so far.
    pub fn delivered(&self) -> usize {
        self.lock().phase.as_ref().map_or(0, |p| p.done)
    }

    /// Ends the current phase.
    pub fn finish(&self) -> PhaseResult {
        let mut st = self.lock();
        let Some(p) = st.phase.take() else {
            return PhaseResult {
                expected: 0,
                latencies: Vec::new(),
                wakes: 0,
                other_wakes: 0,
            };
        };
        let mut latencies: Vec<Duration> = p.got.into_iter().flatten().collect();
        latencies.sort();
        PhaseResult {
            expected: p.expected,
            latencies,
            wakes: p.wakes,
            other_wakes: p.other_wakes,
        }
    }

    /// Waits until the current phase has delivered every expected edge, or `timeout`.
    pub async fn wait_delivered(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let (done, expected) = {
                let st = self.lock();
                st.phase.as_ref().map_or((0, 0), |p| (p.done, p.expected))
            };
            if done >= expected {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until every edge has sent at least one acknowledged report, or `timeout`.
    pub async fn wait_all_reported(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let st = self.lock();
                if st.reported_count == st.reported.len() {
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts measuring a failover (just before the replica at `killed` is killed): `moved`
    /// says, per edge, whether it was homed there.
    pub fn begin_failover(&self, killed: &str, moved: Vec<bool>) {
        let mut st = self.lock();
        let n = moved.len();
        st.failover = Some(Failover {
            start: Instant::now(),
            killed: killed.trim_end_matches('/').to_string(),
            expected: moved.iter().filter(|m| **m).count(),
            moved,
            connected: vec![None; n],
            fresh: vec![None; n],
            connected_count: 0,
            fresh_count: 0,
            redelivered: 0,
            errors: 0,
        });
    }

    /// Waits until every edge of the killed replica is connected elsewhere with a fresh
    /// status, or `timeout`; returns whether they all are.
    pub async fn wait_failed_over(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let done = self
                .lock()
                .failover
                .as_ref()
                .is_none_or(|f| f.fresh_count >= f.expected && f.connected_count >= f.expected);
            if done {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Ends the failover measurement.
    pub fn finish_failover(&self) -> FailoverResult {
        let Some(f) = self.lock().failover.take() else {
            return FailoverResult::default();
        };
        let sorted = |v: Vec<Option<Duration>>| {
            let mut v: Vec<Duration> = v.into_iter().flatten().collect();
            v.sort();
            v
        };
        FailoverResult {
            expected: f.expected,
            connected: sorted(f.connected),
            fresh: sorted(f.fresh),
            redelivered: f.redelivered,
            errors: f.errors,
        }
    }

    /// Edges that have reported at least once.
    pub fn reported(&self) -> usize {
        self.lock().reported_count
    }

    /// Counts so far.
    pub fn counters(&self) -> Counters {
        self.lock().counters
    }

    /// Up to [`MAX_ERROR_SAMPLES`] distinct error messages seen.
    pub fn error_samples(&self) -> Vec<String> {
        self.lock().errors.clone()
    }

    fn observe(&self, edge: usize, d: &DesiredState, via: &AgentClient) {
        let now = Instant::now();
        let mut st = self.lock();
        st.counters.polls_changed += 1;
        if let Some(f) = st.failover.as_mut() {
            f.answered(edge, via, false);
            if f.moved[edge] {
                f.redelivered += 1;
            }
        }
        if let Some(p) = st.phase.as_mut() {
            p.wakes += 1;
            if (p.want)(edge, d) {
                if p.got[edge].is_none() {
                    p.got[edge] = Some(now.duration_since(p.start));
                    p.done += 1;
                }
            } else {
                p.other_wakes += 1;
            }
        }
    }

    fn timed_out(&self, edge: usize, via: &AgentClient) {
        let mut st = self.lock();
        st.counters.polls_timed_out += 1;
        if let Some(f) = st.failover.as_mut() {
            f.answered(edge, via, false);
        }
    }

    fn acked(&self, edge: usize, via: &AgentClient) {
        let mut st = self.lock();
        st.counters.reports += 1;
        if let Some(f) = st.failover.as_mut() {
            f.answered(edge, via, true);
        }
        if !st.reported[edge] {
            st.reported[edge] = true;
            st.reported_count += 1;
        }
    }

    fn error(&self, edge: usize, e: &AgentError) {
        let mut st = self.lock();
        st.counters.errors += 1;
        if let Some(f) = st.failover.as_mut()
            && f.moved[edge]
        {
            f.errors += 1;
        }
        if e.retry_after().is_some() {
            st.counters.throttled += 1;
        }
        let msg = e.to_string();
        if st.errors.len() < MAX_ERROR_SAMPLES && !st.errors.contains(&msg) {
            tracing::warn!(error = %msg, "simulated agent request failed");
            st.errors.push(msg);
        }
    }
}

/// One enrolled simulated edge.
#[derive(Debug, Clone)]
pub struct SimEdge {
    pub name: String,
    pub id: String,
    /// Index of the control-plane address it enrolled at (its home replica): 0 for the
    /// target, `k` for `more_servers[k - 1]`.
    pub home: usize,
}

/// What enrolling the fleet took.
#[derive(Debug, Clone)]
pub struct EnrollStats {
    pub elapsed: Duration,
    /// Per enrollment request, sorted.
    pub latencies: Vec<Duration>,
}

/// The running simulated edges; their tasks end when it is stopped or dropped.
pub struct Fleet {
    pub edges: Vec<SimEdge>,
    tracker: Arc<Tracker>,
    tasks: JoinSet<()>,
}

/// Whom the simulator's clients trust: the CA file when one is given (an `https://` server
/// with a self-signed certificate), else the public roots.
pub fn trust(cfg: &SimConfig) -> canopy_tls::ClientTrust {
    match &cfg.ca_file {
        Some(ca) => canopy_tls::ClientTrust::CaFile(ca.clone()),
        None => canopy_tls::ClientTrust::System,
    }
}

fn cannot_build(source: reqwest::Error) -> SimError {
    SimError::Network {
        what: "building an HTTP client".into(),
        source,
    }
}

fn tls_error(e: canopy_tls::TlsError) -> SimError {
    SimError::Config(format!("the server's TLS trust (--ca-file): {e}"))
}

/// The HTTP client a group of edges shares.
fn http_client(
    transport: Transport,
    trust: &canopy_tls::ClientTrust,
) -> Result<reqwest::Client, SimError> {
    let b = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("canopy-loadsim/", env!("CARGO_PKG_VERSION")));
    let b = match transport {
        Transport::Http2 => b.http2_prior_knowledge(),
        Transport::Http1 => b.http1_only(),
    };
    canopy_tls::configure(b, trust)
        .map_err(tls_error)?
        .build()
        .map_err(cannot_build)
}

/// The HTTP client of one TLS agent: the real agent's settings (keep-alive, HTTP/2 pings,
/// pool), its own connection, from [`TLS_AGENT_SOURCE`].
fn tls_agent_client(trust: &canopy_tls::ClientTrust) -> Result<reqwest::Client, SimError> {
    canopy_tls::configure(AgentClient::http_builder(), trust)
        .map_err(tls_error)?
        .local_address(TLS_AGENT_SOURCE)
        .build()
        .map_err(cannot_build)
}

/// The name of edge `i` of run `run`.
pub fn edge_name(run: &str, i: usize) -> String {
    format!("sim-{run}-{i:05}")
}

impl Fleet {
    /// Enrolls `cfg.edges` edges with `token` (`cfg.enroll_concurrency` at a time), labelled
    /// `sim=yes`, `run=<run>`, `group=<i % groups>`, and starts each edge's loops as soon as it
    /// is enrolled (as a real agent would).
    pub async fn enroll(
        cfg: &SimConfig,
        server: &str,
        token: &str,
        run: &str,
    ) -> Result<(Fleet, EnrollStats), SimError> {
        let trust = trust(cfg);
        // The TLS agents' clients first (one each), then the shared ones.
        let clients: Vec<reqwest::Client> = (0..cfg.clients())
            .map(|c| {
                if c < cfg.tls_agents {
                    tls_agent_client(&trust)
                } else {
                    http_client(cfg.transport, &trust)
                }
            })
            .collect::<Result<_, _>>()?;
        let tracker = Arc::new(Tracker::new(cfg.edges));
        let mut fleet = Fleet {
            edges: Vec::with_capacity(cfg.edges),
            tracker: Arc::clone(&tracker),
            tasks: JoinSet::new(),
        };
        let wait = Duration::from_secs(u64::from(cfg.wait_seconds));
        let started = Instant::now();
        let mut latencies = Vec::with_capacity(cfg.edges);
        let mut slots: Vec<Option<SimEdge>> = vec![None; cfg.edges];
        // Round-robin over the replicas, one client (connection) at a time.
        let servers: Vec<&str> = std::iter::once(server)
            .chain(cfg.more_servers.iter().map(String::as_str))
            .collect();
        let mut enrollments = futures::stream::iter(0..cfg.edges)
            .map(|i| {
                let c = if i < cfg.tls_agents {
                    i
                } else {
                    cfg.tls_agents + (i - cfg.tls_agents) / cfg.edges_per_connection
                };
                let http = clients[c].clone();
                // Every address, starting with its home: it moves on when one fails.
                let home = c % servers.len();
                let addresses: Vec<&str> = (0..servers.len())
                    .map(|k| servers[(home + k) % servers.len()])
                    .collect();
                let name = edge_name(run, i);
                let labels = [
                    ("sim".to_string(), "yes".to_string()),
                    ("run".to_string(), run.to_string()),
                    ("group".to_string(), (i % cfg.groups).to_string()),
                ]
                .into();
                async move {
                    let client = AgentClient::with_http_client_servers(http, &addresses).map_err(
                        |source| SimError::Enroll {
                            name: name.clone(),
                            source: Box::new(source),
                        },
                    )?;
                    let req = EnrollRequest {
                        protocol_version: PROTOCOL_VERSION,
                        token: token.to_string(),
                        name: name.clone(),
                        labels,
                        agent: agent_info(),
                    };
                    let t0 = Instant::now();
                    let mut backoff =
                        Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
                    let mut attempts = 0;
                    let resp = loop {
                        attempts += 1;
                        match client.enroll(&req).await {
                            Ok(r) => break r,
                            // Transient failures (a busy server) are retried a few times,
                            // not before the server's Retry-After.
                            Err(e) if e.is_transient() && attempts < 5 => {
                                tokio::time::sleep(backoff.delay_for(&e)).await;
                            }
                            Err(source) => {
                                return Err(SimError::Enroll {
                                    name,
                                    source: Box::new(source),
                                });
                            }
                        }
                    };
                    let latency = t0.elapsed();
                    let credential = Credential::new(&resp.credential).ok_or_else(|| {
                        SimError::Server(format!("empty credential for edge {name}"))
                    })?;
                    Ok::<_, SimError>((i, home, client.with_credential(credential), resp, latency))
                }
            })
            .buffer_unordered(cfg.enroll_concurrency);
        while let Some(r) = enrollments.next().await {
            let (i, home, client, resp, latency) = r?;
            latencies.push(latency);
            let heartbeat = Duration::from_secs(u64::from(resp.heartbeat_seconds.max(1)));
            let cadence = match cfg.report_every {
                Some(every) => Cadence::Fixed(every),
                None => Cadence::Heartbeat(heartbeat),
            };
            slots[i] = Some(SimEdge {
                name: resp.edge_name,
                id: resp.edge_id,
                home,
            });
            fleet.spawn_edge(i, client, wait, cadence);
        }
        drop(enrollments);
        fleet.edges = slots.into_iter().flatten().collect();
        latencies.sort();
        Ok((
            fleet,
            EnrollStats {
                elapsed: started.elapsed(),
                latencies,
            },
        ))
    }

    fn spawn_edge(&mut self, i: usize, client: AgentClient, wait: Duration, cadence: Cadence) {
        let (tx, rx) = watch::channel::<Option<Arc<DesiredState>>>(None);
        let reconnected = Arc::new(Notify::new());
        self.tasks.spawn(poller(
            Edge {
                i,
                client: client.clone(),
                tracker: Arc::clone(&self.tracker),
                reconnected: Arc::clone(&reconnected),
            },
            wait,
            tx,
        ));
        self.tasks.spawn(reporter(
            Edge {
                i,
                client,
                tracker: Arc::clone(&self.tracker),
                reconnected,
            },
            rx,
            cadence,
        ));
    }

    /// What the edges received and sent.
    pub fn tracker(&self) -> &Arc<Tracker> {
        &self.tracker
    }

    /// Stops every edge's loops (in-flight requests are abandoned).
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

fn agent_info() -> AgentInfo {
    AgentInfo {
        version: concat!("loadsim-", env!("CARGO_PKG_VERSION")).into(),
        capabilities: vec!["containers".into()],
        engine: "simulated".into(),
        ..AgentInfo::default()
    }
}

/// What both loops of one edge share.
struct Edge {
    i: usize,
    client: AgentClient,
    tracker: Arc<Tracker>,
    /// The poller's signal that the control plane answered again after a failure: the
    /// reporter then reports at once, as the real agent does.
    reconnected: Arc<Notify>,
}

impl Edge {
    /// Records a failed request; `None` when the edge must stop (its credential refused),
    /// else the delay before trying again: a short jitter when the failure moved the client
    /// to an address not tried yet in this outage (another replica), else `backoff`'s.
    fn failed(&self, e: &AgentError, backoff: &mut Backoff) -> Option<Duration> {
        self.tracker.error(self.i, e);
        if matches!(
            e,
            AgentError::Unauthorized { .. } | AgentError::IncompatibleProtocol { .. }
        ) {
            return None;
        }
        if e.is_transient() && e.retry_after().is_none() && self.client.moved_to_untried_address() {
            return Some(backoff.initial_delay());
        }
        Some(backoff.delay_for(e))
    }
}

/// The long-poll loop of one edge.
async fn poller(edge: Edge, wait: Duration, tx: watch::Sender<Option<Arc<DesiredState>>>) {
    let mut after = Generation(0);
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    // After a failure the next long-poll does not wait: the edge learns at once that it is
    // connected again, and reports.
    let mut failed = false;
    loop {
        let this_wait = if failed { Duration::ZERO } else { wait };
        match edge.client.desired_state(after, this_wait).await {
            Ok(answer) => {
                backoff.reset();
                if std::mem::take(&mut failed) {
                    edge.reconnected.notify_one();
                }
                match answer {
                    Some(d) => {
                        edge.tracker.observe(edge.i, &d, &edge.client);
                        after = d.generation;
                        tx.send_replace(Some(Arc::new(d)));
                    }
                    None => edge.tracker.timed_out(edge.i, &edge.client),
                }
            }
            Err(e) => {
                failed = true;
                let Some(delay) = edge.failed(&e, &mut backoff) else {
                    return;
                };
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// How often an edge with nothing new reports anyway.
#[derive(Debug, Clone, Copy)]
enum Cadence {
    /// The server's heartbeat (from enrollment, then from each acknowledgement).
    Heartbeat(Duration),
    /// A fixed interval, whatever the server asks (`--report-seconds`, e.g. the real agent's
    /// 15 minutes).
    Fixed(Duration),
}

/// The status reports of one edge: at once for each new desired state, and after the
/// `cadence`'s interval without a report.
async fn reporter(
    edge: Edge,
    mut rx: watch::Receiver<Option<Arc<DesiredState>>>,
    cadence: Cadence,
) {
    let (mut heartbeat, fixed) = match cadence {
        Cadence::Heartbeat(d) => (d, false),
        Cadence::Fixed(d) => (d, true),
    };
    let mut seq = 0u64;
    let mut next = tokio::time::Instant::now() + heartbeat;
    let mut retry = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
    loop {
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep_until(next) => {},
            () = edge.reconnected.notified() => {},
        }
        let held = rx.borrow_and_update().clone();
        let Some(held) = held else {
            next = tokio::time::Instant::now() + heartbeat;
            continue;
        };
        seq += 1;
        let report = running_report(&held, seq);
        match edge.client.report(&report).await {
            Ok(ack) => {
                edge.tracker.acked(edge.i, &edge.client);
                retry.reset();
                if ack.heartbeat_seconds > 0 && !fixed {
                    heartbeat = Duration::from_secs(u64::from(ack.heartbeat_seconds));
                }
                next = tokio::time::Instant::now() + heartbeat;
            }
            Err(e) => {
                // Sent again soon (with a new sequence number), as the real agent retries.
                let Some(delay) = edge.failed(&e, &mut retry) else {
                    return;
                };
                next = tokio::time::Instant::now() + delay;
            }
        }
    }
}

/// Every app of `held` RUNNING, at its deployment's generation.
pub fn running_report(held: &DesiredState, seq: u64) -> StatusReport {
    StatusReport {
        protocol_version: PROTOCOL_VERSION,
        seq,
        generation: held.generation,
        apps: held
            .deployments
            .iter()
            .flat_map(|d| {
                d.apps.iter().map(move |a| AppStatus {
                    deployment_id: d.deployment_id.clone(),
                    app: a.name.clone(),
                    state: AppState::Running,
                    message: String::new(),
                    deployment_generation: d.generation,
                    workloads: Vec::new(),
                })
            })
            .collect(),
        agent: (seq == 1).then(agent_info),
    }
}
