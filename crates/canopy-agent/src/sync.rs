//! The sync loop: the whole agent once it is configured (`docs/AGENT-PROTOCOL.md`).
//!
//! At start the agent checks its data directory, connects to its engine and, if it holds a
//! desired state from an earlier run, starts converging to it at once, before the control plane
//! is asked anything: workloads come back even with the control plane down. Without a
//! credential it first enrolls with its token. Then four activities run side by side in one
//! task (no spawned task outlives [`run`]):
//!
//! - the **poller** long-polls the desired state after the generation it holds; a newer one is
//!   written to disk, then handed to the converger (only the newest counts: older generations are
//!   never applied);
//! - the **converger** owns the driver, so passes never overlap: it applies a new desired state
//!   at once, applies again every `converge_interval` while some app is not `RUNNING`, and
//!   otherwise only observes, every heartbeat, or at once when the driver says something
//!   changed between passes (a Helm pod's probes); each pass publishes the apps' statuses;
//! - the **reporter** sends a status report when those statuses change, at once after a
//!   reconnection, and a "still here" with unchanged statuses every [`STILL_HERE`] (the held
//!   long-polls already tell the control plane the edge is alive), with a sequence number that
//!   grows across restarts;
//! - the **tunnel loop** ([`crate::tunnel`]) long-polls tunnel requests and opens consoles and
//!   log streams outbound, through the driver.
//!
//! Transient failures (network, `5xx`) are retried with jittered exponential backoff by the
//! activity that met them; the others keep going. A refused credential (`401`) or protocol
//! (`426`) ends [`run`] with that error. Neither an error nor shutdown touches the workloads.
//!
//! Once the agent knows who it is (its edge id, from enrollment), its container driver owns
//! only the engine objects labelled with that id ([`EdgeDriver::owned_by`]): another agent on
//! the same engine (a second `canopy up`, another edge enrolled on the same host) is never
//! touched, without any setting.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use canopy_proto::{
    AgentInfo, AppState, AppStatus, DesiredState, EnrollRequest, Generation, PROTOCOL_VERSION,
    StatusReport,
};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::backoff::Backoff;
use crate::client::{AgentClient, Credential, normalize_server};
use crate::config::{AgentConfig, STILL_HERE};
use crate::converger::Converger;
use crate::driver::{DockerDriver, DriverError, EdgeDriver, VmDriver};
use crate::error::AgentError;
use crate::state::{AgentState, DataDir, EdgeRecord};

/// Reporting interval until the control plane names one.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);
/// How long the poller waits before asking again when the control plane answered at once with
/// the generation held, or an older one (a replica that is behind).
const SAME_GENERATION_PAUSE: Duration = Duration::from_secs(25);
/// Sequence numbers reserved on disk at once: `state.json` is written once per this many
/// reports instead of before each one (edge storage is often flash that wears).
const SEQ_BLOCK: u64 = 100;

/// Runs the agent until `shutdown` completes (then `Ok`) or the control plane refuses it for
/// good (`401`, `426`: the error). Connects to the container engine named by the configuration
/// (waiting for it to answer) and converges with it; see the module docs.
///
/// Shutdown changes no workload: a convergence pass in flight is abandoned where it is (passes
/// are re-runnable; the next start adopts what it did), and nothing is stopped or removed.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let start = Start::check(&config).await?;
    let mut shutdown = std::pin::pin!(shutdown);
    let driver = tokio::select! {
        biased;
        () = &mut shutdown => return Ok(()),
        driver = connect_driver(&config) => driver?,
    };
    let driver = match &config.scope {
        Some(scope) => driver.scoped(scope),
        None => driver,
    };
    run_started(config, start, driver, EdgeDriver::owned_by, shutdown).await
}

/// [`run`] with a given driver instead of a connection to the configured engine (for tests and
/// simulators). The driver is used as given (no owner is set on it).
pub async fn run_with<C: Converger>(
    config: AgentConfig,
    converger: C,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let start = Start::check(&config).await?;
    run_started(config, start, converger, |c, _| c, shutdown).await
}

/// Who owns the engine objects this agent makes: the configured scope, else the edge's id,
/// else (an `edge.json` lost, the credential kept) a digest of the credential, which is as
/// stable and unique as the edge and reveals nothing of it.
fn owner(config: &AgentConfig, edge: &EdgeRecord, credential: &Credential) -> String {
    if let Some(scope) = &config.scope {
        return scope.clone();
    }
    if !edge.edge_id.is_empty() {
        return edge.edge_id.clone();
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(credential.expose().as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("credential-{hex}")
}

/// What the agent found in its data directory.
struct Start {
    dir: DataDir,
    /// The control plane's addresses, normalized, the configured one first.
    servers: Vec<String>,
    credential: Option<Credential>,
    edge: Option<EdgeRecord>,
}

impl Start {
    /// Opens the data directory and refuses what cannot work: a directory of another control
    /// plane, or no credential and no token.
    async fn check(config: &AgentConfig) -> Result<Start, AgentError> {
        let servers = std::iter::once(&config.server)
            .chain(&config.more_servers)
            .map(|s| normalize_server(s))
            .collect::<Result<Vec<_>, _>>()?;
        let root = config.data_dir.clone();
        let (dir, credential, edge) = blocking(move || {
            let dir = DataDir::open(root)?;
            let credential = dir.credential()?;
            let edge = dir.edge()?;
            Ok((dir, credential, edge))
        })
        .await?;
        // Enrolled with any address of this control plane (another replica) is the same one.
        if let Some(edge) = &edge
            && !servers.contains(&edge.server)
        {
            return Err(AgentError::ServerMismatch {
                data_dir: dir.path().to_path_buf(),
                edge: edge.edge_name.clone(),
                enrolled: edge.server.clone(),
                configured: servers.join(","),
            });
        }
        if credential.is_none() && config.enroll_token.as_deref().is_none_or(str::is_empty) {
            return Err(AgentError::NotEnrolled {
                data_dir: dir.path().to_path_buf(),
            });
        }
        Ok(Start {
            dir,
            servers,
            credential,
            edge,
        })
    }
}

/// Connects to the engine, waiting (with backoff) while it does not answer: on a booting edge
/// the engine may come up after the agent. VMs run next to the containers when QEMU is usable;
/// with QEMU and no engine, the agent starts at once with VMs only and connects the engine
/// later (see [`EdgeDriver::without_engine`]).
async fn connect_driver(config: &AgentConfig) -> Result<EdgeDriver, AgentError> {
    let mut backoff = config.backoff.clone();
    let mut waiting = false;
    let vms = VmDriver::from_config(config).await;
    loop {
        match DockerDriver::connect(config.docker_host.as_deref()).await {
            Ok(driver) => return Ok(EdgeDriver::new(driver, vms)),
            // With QEMU the edge has work to do without an engine: VMs.
            Err(e @ DriverError::Unreachable { .. }) if vms.available() => {
                warn!(
                    error = %e.chain(),
                    "no container engine: running virtual machines only; apps with containers \
                     are DOWN until the engine answers (tried again every 10 s)"
                );
                return Ok(EdgeDriver::without_engine(
                    config.docker_host.clone(),
                    e.chain(),
                    vms,
                ));
            }
            Err(e @ DriverError::Unreachable { .. }) => {
                if !waiting {
                    warn!(error = %e.chain(), "waiting for the container engine");
                    waiting = true;
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The agent once its data directory is checked and its driver built: enrollment when needed,
/// then the four activities. `own` gives the driver its owner once the edge is known.
async fn run_started<C: Converger>(
    config: AgentConfig,
    start: Start,
    converger: C,
    own: impl FnOnce(C, &str) -> C,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let agent = AgentInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        capabilities: converger.capabilities(),
        engine: converger.engine(),
        accelerator: converger.accelerator(),
        hostname: crate::driver::hostname(),
        addresses: crate::driver::addresses(),
    };
    let client = match &config.http_client {
        Some(http) => AgentClient::with_http_client_servers(http.clone(), &start.servers)?,
        None => AgentClient::with_servers(&start.servers)?,
    };
    let mut heartbeat = DEFAULT_HEARTBEAT;
    let (client, edge, owner) = match start.credential {
        Some(credential) => {
            let given: Vec<&str> = [
                (config.enroll_token.is_some(), "enrollment token"),
                (config.name.is_some(), "name"),
                (!config.labels.is_empty(), "labels"),
            ]
            .into_iter()
            .filter_map(|(given, what)| given.then_some(what))
            .collect();
            if let Some((last, rest)) = given.split_last() {
                let what = if rest.is_empty() {
                    last.to_string()
                } else {
                    format!("{} and {last}", rest.join(", "))
                };
                info!("already enrolled: ignoring the {what} given (used only at enrollment)");
            }
            let edge = start.edge.unwrap_or_else(|| {
                warn!(
                    "edge.json is missing from the data directory; continuing with the credential"
                );
                EdgeRecord {
                    edge_id: String::new(),
                    edge_name: String::new(),
                    project: String::new(),
                    server: start.servers[0].clone(),
                }
            });
            let owner = owner(&config, &edge, &credential);
            (client.with_credential(credential), edge, owner)
        }
        None => {
            let enrolled = tokio::select! {
                biased;
                () = &mut shutdown => return Ok(()),
                r = enroll(&config, &client, &start.dir, agent.clone()) => r?,
            };
            if enrolled.heartbeat_seconds > 0 {
                heartbeat = Duration::from_secs(u64::from(enrolled.heartbeat_seconds));
            }
            let owner = owner(&config, &enrolled.edge, &enrolled.credential);
            (
                client.with_credential(enrolled.credential),
                enrolled.edge,
                owner,
            )
        }
    };
    let converger = if config.scope.is_some() {
        // Already scoped by whoever built the driver.
        converger
    } else {
        info!(
            owner = %owner,
            "this agent owns the engine objects labelled io.canopy.scope={owner}"
        );
        own(converger, &owner)
    };
    let dir = start.dir.clone();
    let (desired, state) = blocking(move || Ok((dir.desired()?, dir.state()?))).await?;
    let shared = Arc::new(Shared {
        dir: start.dir,
        client,
        config: config.clone(),
        heartbeat_ms: AtomicU64::new(millis(heartbeat)),
        link: Link::default(),
        reconnected: tokio::sync::Notify::new(),
        persisted: Mutex::new(Persisted {
            next_seq: state.seq + 1,
            state,
        }),
        file: Mutex::new(()),
    });
    let on_disk = desired
        .as_ref()
        .map(|d| (d.generation.0, d.deployments.len()));
    let held = desired.as_ref().map(|d| d.generation);
    let (desired_tx, desired_rx) = watch::channel(desired.map(Arc::new));
    let tunnel_rx = desired_rx.clone();
    let (observed_tx, observed_rx) = watch::channel(None);
    let span = info_span!(
        "agent",
        edge = %edge.edge_name,
        project = %edge.project,
    );
    async {
        if let Some((generation, deployments)) = on_disk {
            info!(
                generation,
                deployments, "converging to the desired state kept on disk"
            );
        }
        tokio::select! {
            biased;
            () = &mut shutdown => {
                info!("shutting down; workloads are left as they are");
                Ok(())
            }
            never = converge_loop(&shared, &converger, desired_rx, observed_tx) => match never {},
            e = poll_loop(&shared, held, desired_tx) => Err(e),
            e = report_loop(&shared, observed_rx, agent) => Err(e),
            e = crate::tunnel::tunnel_loop(
                &shared.client, &shared.config, &converger, tunnel_rx,
            ) => Err(e),
        }
    }
    .instrument(span)
    .await
}

/// The outcome of an enrollment, once kept on disk.
struct Enrolled {
    edge: EdgeRecord,
    credential: Credential,
    heartbeat_seconds: u32,
}

/// Enrolls with the configured token, retrying transient failures; keeps the credential.
async fn enroll(
    config: &AgentConfig,
    client: &AgentClient,
    dir: &DataDir,
    agent: AgentInfo,
) -> Result<Enrolled, AgentError> {
    let request = EnrollRequest {
        protocol_version: PROTOCOL_VERSION,
        token: config.enroll_token.clone().unwrap_or_default(),
        name: config.name.clone().unwrap_or_default(),
        labels: config.labels.clone(),
        agent,
    };
    let mut backoff = config.backoff.clone();
    let mut warned = false;
    let response = loop {
        match client.enroll(&request).await {
            Ok(r) => break r,
            Err(e) if e.is_transient() => {
                if !warned {
                    warn!(error = %e.chain(), "cannot enroll yet; retrying with backoff");
                    warned = true;
                }
                tokio::time::sleep(backoff.delay_for(&e)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let heartbeat_seconds = response.heartbeat_seconds;
    let server = client.server();
    let dir = dir.clone();
    let (record, credential) = blocking(move || {
        let record = dir.save_enrollment(&server, &response)?;
        let credential = dir.credential()?.ok_or_else(|| AgentError::DataDir {
            op: "read back",
            path: dir.path().join("credential"),
            source: "the credential just written is missing".into(),
        })?;
        Ok((record, credential))
    })
    .await?;
    info!(
        edge = %record.edge_name,
        edge_id = %record.edge_id,
        project = %record.project,
        "enrolled with the control plane"
    );
    Ok(Enrolled {
        edge: record,
        credential,
        heartbeat_seconds,
    })
}

/// What the three activities share.
struct Shared {
    dir: DataDir,
    client: AgentClient,
    config: AgentConfig,
    /// The heartbeat interval the control plane asked for, in milliseconds.
    heartbeat_ms: AtomicU64,
    link: Link,
    /// Wakes the reporter after a reconnection: the control plane (perhaps another replica, or
    /// one restarted from its database) gets the current statuses at once.
    reconnected: tokio::sync::Notify,
    persisted: Mutex<Persisted>,
    /// Serializes writes of `state.json` (taken in blocking threads only).
    file: Mutex<()>,
}

/// `state.json` as kept, and the next sequence number to use.
struct Persisted {
    /// `seq` is the highest sequence number reserved on disk.
    state: AgentState,
    next_seq: u64,
}

impl Shared {
    fn heartbeat(&self) -> Duration {
        self.config
            .heartbeat
            .unwrap_or_else(|| Duration::from_millis(self.heartbeat_ms.load(Ordering::Relaxed)))
    }

    /// How long an unchanged status goes unreported: the configured heartbeat when one is set,
    /// else [`STILL_HERE`] (the control plane's heartbeat if it asks for longer).
    fn still_here(&self) -> Duration {
        self.config.heartbeat.unwrap_or_else(|| {
            STILL_HERE.max(Duration::from_millis(
                self.heartbeat_ms.load(Ordering::Relaxed),
            ))
        })
    }

    fn set_heartbeat_seconds(&self, seconds: u32) {
        if seconds > 0 {
            self.heartbeat_ms.store(
                millis(Duration::from_secs(u64::from(seconds))),
                Ordering::Relaxed,
            );
        }
    }

    fn persisted(&self) -> std::sync::MutexGuard<'_, Persisted> {
        self.persisted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The next status sequence number; reserves a new block on disk first when needed, so a
    /// restart never reuses a number. If the block cannot be written the number is used
    /// anyway (an edge that cannot write its disk should still report): after a restart the
    /// control plane's ack names the highest number it saw and the reporter continues after it.
    async fn next_seq(self: &Arc<Self>) -> u64 {
        let (seq, reserve) = {
            let mut p = self.persisted();
            let seq = p.next_seq;
            p.next_seq += 1;
            let reserve = seq > p.state.seq;
            if reserve {
                p.state.seq = seq + SEQ_BLOCK - 1;
            }
            (seq, reserve)
        };
        if reserve && let Err(e) = self.save_state().await {
            error!(error = %e.chain(), "cannot reserve status sequence numbers on disk");
        }
        seq
    }

    /// Continues after `seq` (the control plane has seen it: a data directory restored from a
    /// backup, or a lost `state.json`).
    fn skip_past(&self, seq: u64) {
        let mut p = self.persisted();
        p.next_seq = p.next_seq.max(seq + 1);
    }

    async fn set_applied(self: &Arc<Self>, generation: Generation) -> Result<(), AgentError> {
        {
            let mut p = self.persisted();
            if p.state.applied_generation == generation {
                return Ok(());
            }
            p.state.applied_generation = generation;
        }
        self.save_state().await
    }

    /// Writes the latest state (whoever changed it last): writes are serialized and each
    /// writes what is current when it runs, so an older state never overwrites a newer one.
    async fn save_state(self: &Arc<Self>) -> Result<(), AgentError> {
        let shared = Arc::clone(self);
        blocking(move || {
            let _file = shared.file.lock().unwrap_or_else(PoisonError::into_inner);
            let state = shared.persisted().state;
            shared.dir.save_state(&state)
        })
        .await
    }
}

/// Whether the control plane answers, to log each transition once rather than every retry:
/// the first connection, a loss, and the reconnection with how long the control plane was gone.
#[derive(Default)]
struct Link(Mutex<LinkState>);

#[derive(Default)]
enum LinkState {
    #[default]
    Unknown,
    Up,
    /// Since when.
    Down(Instant),
}

impl Link {
    /// The control plane answered; `true` when it had been lost (a reconnection).
    fn up(&self) -> bool {
        let previous = std::mem::replace(&mut *self.lock(), LinkState::Up);
        match previous {
            LinkState::Unknown => {
                info!("connected to the control plane");
                false
            }
            LinkState::Down(since) => {
                let gone = since.elapsed().as_secs();
                info!(
                    gone_seconds = gone,
                    "reconnected to the control plane after {}",
                    human_duration(gone)
                );
                true
            }
            LinkState::Up => false,
        }
    }

    fn down(&self, e: &AgentError) {
        let mut state = self.lock();
        if matches!(*state, LinkState::Down(_)) {
            debug!(error = %e.chain(), "control plane still unreachable");
        } else {
            *state = LinkState::Down(Instant::now());
            warn!(
                error = %e.chain(),
                "lost the control plane; retrying with backoff (workloads keep running)"
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `42 s`, `3 min 5 s`, `2 h 1 min`: how long something lasted, for people reading logs.
fn human_duration(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// Handles a failed request of a loop that must go on: the delay before retrying, or the
/// error when the loop must stop.
fn retry_after(
    shared: &Shared,
    e: AgentError,
    backoff: &mut Backoff,
    last_rejection: &mut Option<String>,
) -> Result<Duration, AgentError> {
    if e.is_fatal() {
        return Err(e);
    }
    if e.is_transient() {
        shared.link.down(&e);
    } else {
        // The control plane answers but refuses: not a lost connection. Say it once per cause.
        let text = e.chain();
        if last_rejection.as_deref() != Some(text.as_str()) {
            warn!(error = %text, "the control plane refused a request; retrying with backoff");
            *last_rejection = Some(text);
        }
    }
    // Another address of the control plane not tried yet in this outage: try it soon; the
    // backoff grows only once every address failed.
    if e.is_transient() && e.retry_after().is_none() && shared.client.moved_to_untried_address() {
        return Ok(backoff.initial_delay());
    }
    Ok(backoff.delay_for(&e))
}

/// Long-polls the desired state forever; returns only a fatal error.
async fn poll_loop(
    shared: &Arc<Shared>,
    mut held: Option<Generation>,
    desired_tx: watch::Sender<Option<Arc<DesiredState>>>,
) -> AgentError {
    let mut backoff = shared.config.backoff.clone();
    let mut last_rejection = None;
    let wait = shared.config.poll_wait.max(Duration::from_secs(1));
    // After a failure the next long-poll does not wait (`waitSeconds=0`): the agent learns at
    // once that it is connected again (and says so, and reports), instead of after a whole
    // long-poll of minutes.
    let mut failed = false;
    loop {
        let after = held.unwrap_or_default();
        let this_wait = if failed { Duration::ZERO } else { wait };
        match shared.client.desired_state(after, this_wait).await {
            Ok(answer) => {
                failed = false;
                if shared.link.up() {
                    shared.reconnected.notify_one();
                }
                backoff.reset();
                last_rejection = None;
                let Some(desired) = answer else { continue };
                if let Some(h) = held
                    && desired.generation <= h
                {
                    if desired.generation < h {
                        warn!(
                            received = desired.generation.0,
                            held = h.0,
                            "ignoring a desired state older than the one held"
                        );
                    } else {
                        debug!(
                            generation = h.0,
                            "the control plane sent the generation held"
                        );
                    }
                    // It answered at once: do not ask again at once (but soon: without a held
                    // long-poll the edge is not seen).
                    tokio::time::sleep(wait.min(SAME_GENERATION_PAUSE)).await;
                    continue;
                }
                info!(
                    generation = desired.generation.0,
                    deployments = desired.deployments.len(),
                    "received a new desired state"
                );
                let dir = shared.dir.clone();
                let kept = Arc::new(desired);
                let to_save = Arc::clone(&kept);
                if let Err(e) = blocking(move || dir.save_desired(&to_save)).await {
                    error!(
                        error = %e.chain(),
                        "cannot keep the desired state on disk (a restart without the control \
                         plane would use an older one); applying it anyway"
                    );
                }
                held = Some(kept.generation);
                desired_tx.send_replace(Some(kept));
            }
            Err(e) => {
                failed = true;
                match retry_after(shared, e, &mut backoff, &mut last_rejection) {
                    Ok(delay) => tokio::time::sleep(delay).await,
                    Err(fatal) => return fatal,
                }
            }
        }
    }
}

/// The statuses of one pass, for the generation they were computed against, and what the
/// driver could run then (an engine connected later adds `containers`).
#[derive(Debug, Clone, PartialEq)]
struct Observation {
    generation: Generation,
    apps: Vec<AppStatus>,
    capabilities: Vec<String>,
    engine: String,
}

/// Owns the driver: applies or observes, publishes statuses. Never returns.
/// Every how many quiet (observe-only) passes a full apply runs anyway (see `converge_loop`).
const SWEEP_EVERY: u32 = 4;

async fn converge_loop<C: Converger>(
    shared: &Arc<Shared>,
    converger: &C,
    mut desired_rx: watch::Receiver<Option<Arc<DesiredState>>>,
    observed_tx: watch::Sender<Option<Observation>>,
) -> Infallible {
    let mut current = desired_rx.borrow_and_update().clone();
    let mut must_apply = current.is_some();
    let mut all_running = false;
    // Quiet passes only observe; every SWEEP_EVERY-th one applies instead, so garbage left by a
    // failed removal (a container, volume or network of a deployment no longer desired) is
    // retried even when nothing else changes. Apply is idempotent and restarts nothing healthy.
    let mut quiet_passes: u32 = 0;
    let mut engine_error: Option<String> = None;
    let mut sender_gone = false;
    if current.is_none() {
        // Nothing to run yet; say so (and who we are) right away.
        observed_tx.send_replace(Some(Observation {
            generation: Generation(0),
            apps: Vec::new(),
            capabilities: converger.capabilities(),
            engine: converger.engine(),
        }));
    }
    loop {
        if let Some(desired) = current.clone() {
            let sweep = all_running && quiet_passes % SWEEP_EVERY == SWEEP_EVERY - 1;
            let applying = must_apply || !all_running || sweep;
            quiet_passes = if must_apply || !all_running {
                0
            } else {
                quiet_passes.wrapping_add(1)
            };
            let result = if applying {
                converger.apply(&desired).await
            } else {
                converger.observe(&desired).await
            };
            shared
                .config
                .metrics
                .pass(applying, result.as_ref().map(|_| ()));
            let apps = match result {
                Ok(apps) => {
                    if engine_error.take().is_some() {
                        info!("convergence passes work again");
                    }
                    if must_apply {
                        must_apply = false;
                        let running = apps.iter().filter(|a| a.state == AppState::Running);
                        info!(
                            generation = desired.generation.0,
                            apps = apps.len(),
                            running = running.count(),
                            "applied desired state"
                        );
                        if let Err(e) = shared.set_applied(desired.generation).await {
                            warn!(error = %e.chain(), "cannot record the applied generation");
                        }
                    }
                    apps
                }
                Err(e) => {
                    let text = e.chain();
                    if engine_error.as_deref() != Some(text.as_str()) {
                        warn!(error = %text, "convergence pass failed; retrying");
                    } else {
                        debug!(error = %text, "convergence pass failed again");
                    }
                    let apps = unobservable(&desired, &text);
                    engine_error = Some(text);
                    apps
                }
            };
            all_running = apps.iter().all(|a| a.state == AppState::Running);
            shared.config.metrics.states(&apps);
            observed_tx.send_replace(Some(Observation {
                generation: desired.generation,
                apps,
                capabilities: converger.capabilities(),
                engine: converger.engine(),
            }));
        }
        let wait = match &current {
            None => None,
            Some(_) if all_running => Some(shared.heartbeat()),
            Some(_) => Some(shared.config.converge_interval),
        };
        tokio::select! {
            changed = desired_rx.changed(), if !sender_gone => {
                if changed.is_err() {
                    sender_gone = true;
                } else {
                    current = desired_rx.borrow_and_update().clone();
                    must_apply = true;
                }
            }
            () = sleep_or_forever(wait) => {}
            // A Helm pod's readiness changed, or a probe restarted a container: say so now.
            () = converger.changed(), if current.is_some() => {}
        }
    }
}

/// Sends status reports: when statuses change, and when they did not for [`STILL_HERE`] (or
/// the configured heartbeat). Returns only a fatal error.
async fn report_loop(
    shared: &Arc<Shared>,
    mut observed_rx: watch::Receiver<Option<Observation>>,
    agent: AgentInfo,
) -> AgentError {
    let mut backoff = shared.config.backoff.clone();
    let mut last_rejection = None;
    let mut last_sent: Option<(Observation, Instant)> = None;
    let mut source_gone = false;
    loop {
        let due = last_sent.as_ref().map(|(_, at)| *at + shared.still_here());
        let mut reconnected = false;
        tokio::select! {
            changed = observed_rx.changed(), if !source_gone => {
                source_gone = changed.is_err();
            }
            () = sleep_until_or_forever(due) => {}
            () = shared.reconnected.notified() => reconnected = true,
        }
        let Some(observed) = observed_rx.borrow_and_update().clone() else {
            continue;
        };
        let heartbeat_due = due.is_none_or(|d| Instant::now() >= d);
        if !heartbeat_due && !reconnected && last_sent.as_ref().is_some_and(|(o, _)| *o == observed)
        {
            continue;
        }
        // Send the latest statuses, retrying until one report is accepted.
        loop {
            let observed = observed_rx
                .borrow_and_update()
                .clone()
                .unwrap_or_else(|| observed.clone());
            let seq = shared.next_seq().await;
            let report = StatusReport {
                protocol_version: PROTOCOL_VERSION,
                seq,
                generation: observed.generation,
                apps: observed.apps.clone(),
                agent: Some(AgentInfo {
                    capabilities: observed.capabilities.clone(),
                    engine: observed.engine.clone(),
                    ..agent.clone()
                }),
            };
            match shared.client.report(&report).await {
                Ok(ack) => {
                    // (A reconnection noticed here is reported by this very report.)
                    shared.link.up();
                    shared.config.metrics.reported();
                    backoff.reset();
                    last_rejection = None;
                    shared.set_heartbeat_seconds(ack.heartbeat_seconds);
                    if ack.seq > seq {
                        warn!(
                            sent = seq,
                            accepted = ack.seq,
                            "the control plane has seen newer status sequence numbers; \
                             continuing after them"
                        );
                        shared.skip_past(ack.seq);
                        continue;
                    }
                    debug!(seq, generation = observed.generation.0, "status reported");
                    last_sent = Some((observed, Instant::now()));
                    break;
                }
                Err(e) => match retry_after(shared, e, &mut backoff, &mut last_rejection) {
                    Ok(delay) => tokio::time::sleep(delay).await,
                    Err(fatal) => return fatal,
                },
            }
        }
    }
}

/// Each desired app `DOWN` with the reason, when a pass could not even look.
fn unobservable(desired: &DesiredState, why: &str) -> Vec<AppStatus> {
    desired
        .deployments
        .iter()
        .flat_map(|d| {
            d.apps.iter().map(move |a| AppStatus {
                deployment_id: d.deployment_id.clone(),
                app: a.name.clone(),
                state: AppState::Down,
                message: format!("the agent cannot converge: {why}"),
                deployment_generation: d.generation,
                workloads: Vec::new(),
            })
        })
        .collect()
}

async fn sleep_or_forever(wait: Option<Duration>) {
    match wait {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_or_forever(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Runs data-directory work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AgentError> + Send + 'static,
) -> Result<T, AgentError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(AgentError::DataDir {
            op: "use",
            path: "the data directory".into(),
            source: Box::new(e),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_proto::{AppInstance, DeploymentInstance};

    #[test]
    fn unobservable_apps_are_down_with_the_reason() {
        let desired = DesiredState {
            generation: Generation(3),
            deployments: vec![DeploymentInstance {
                deployment_id: "d1".into(),
                generation: 2,
                apps: vec![
                    AppInstance {
                        name: "a".into(),
                        ..Default::default()
                    },
                    AppInstance {
                        name: "b".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let apps = unobservable(&desired, "no engine");
        assert_eq!(apps.len(), 2);
        assert!(apps.iter().all(|a| a.state == AppState::Down
            && a.deployment_generation == 2
            && a.message.contains("no engine")));
    }

    #[test]
    fn durations_read_like_people_say_them() {
        assert_eq!(human_duration(0), "0 s");
        assert_eq!(human_duration(59), "59 s");
        assert_eq!(human_duration(185), "3 min 5 s");
        assert_eq!(human_duration(7260), "2 h 1 min");
    }

    #[tokio::test]
    async fn sequence_numbers_are_reserved_in_blocks_and_never_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let make = || {
            let dir = DataDir::open(tmp.path()).unwrap();
            let state = dir.state().unwrap();
            Arc::new(Shared {
                dir,
                client: AgentClient::new("http://127.0.0.1:1").unwrap(),
                config: AgentConfig::new("http://127.0.0.1:1", tmp.path()),
                heartbeat_ms: AtomicU64::new(30_000),
                link: Link::default(),
                reconnected: tokio::sync::Notify::new(),
                persisted: Mutex::new(Persisted {
                    next_seq: state.seq + 1,
                    state,
                }),
                file: Mutex::new(()),
            })
        };
        let first = make();
        let mut seen = Vec::new();
        for _ in 0..150 {
            seen.push(first.next_seq().await);
        }
        assert_eq!(seen.first(), Some(&1));
        assert_eq!(seen.last(), Some(&150));
        assert_eq!(first.dir.state().unwrap().seq, 200, "two blocks reserved");
        first.set_applied(Generation(7)).await.unwrap();
        // A restart continues after everything reserved.
        let second = make();
        assert_eq!(second.next_seq().await, 201);
        assert_eq!(
            second.dir.state().unwrap(),
            AgentState {
                seq: 300,
                applied_generation: Generation(7)
            }
        );
        second.skip_past(1_000);
        assert_eq!(second.next_seq().await, 1_001);
        assert_eq!(second.dir.state().unwrap().seq, 1_100);
    }
}
