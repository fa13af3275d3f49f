//! The fleet hub: the control plane's in-memory view of every edge and deployment, and the
//! agent protocol's hot path.
//!
//! Why in memory: one process serves 10,000 edges on 2 cores. A long-poll waits on its edge's
//! `watch` channel (no timer, thread or database connection per edge); a status report updates
//! a map entry; only changes of app state and, at most once a minute, an edge's "last seen"
//! reach the database (batched by [`Hub::drain_seen`]). The store stays the source of truth:
//! the hub is rebuilt from it at start ([`Hub::load`]) and every fleet mutation is committed to
//! the store first and applied here after, by the app layer's fleet transaction (`FleetTx`,
//! under [`Hub::lock_writes`], so mutations are serialized as the reference's deployment
//! manager does with its server-wide mutex). On PostgreSQL other replicas' mutations arrive
//! through the change feed (`app::feed`), applied by the same operations, and their edges'
//! stored statuses through [`Hub::absorb_stored`] (`replica.rs`).
//!
//! Targeting is incremental: a per-project label index (`key=value` → edges) finds the edges a
//! label set can match by intersecting the smallest bucket, so a change to a deployment that
//! targets N edges costs O(N), not O(fleet). Each edge's desired state is assembled on request
//! from the rendered apps of the deployments it holds (shared `Arc`s, rendered once per
//! deployment, not per edge).
//!
//! Generations come from the store's fleet revision: every mutation bumps it, and the edges it
//! touches take the new value. At start every edge's generation is the current revision, which
//! is at least anything ever handed out, so generations only grow across restarts.

mod agent;
mod holders;
mod record;
mod replica;
mod store;
mod targeting;
mod views;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use canopy_deploy::model::DeploymentStatus;
use canopy_proto::{AgentInfo, AppStatus, WorkloadControl, WorkloadKind};
use canopy_store::{EdgeRow, ProjectId};
use time::OffsetDateTime;
use tokio::sync::watch;

pub use agent::with_project;
pub use holders::{Holder, Holders, app_workload_count};
pub use record::{DeploymentRecord, settled};

/// Timing of the fleet.
#[derive(Debug, Clone, Copy)]
pub struct HubConfig {
    /// How often agents report when nothing changes.
    pub heartbeat: Duration,
    /// An edge not seen for this long is UNKNOWN.
    pub edge_timeout: Duration,
    /// A deployment with no target edge is NO_TARGET_CLUSTERS after this long.
    pub no_target_grace: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            heartbeat: Duration::from_secs(30),
            edge_timeout: Duration::from_secs(120),
            no_target_grace: Duration::from_secs(300),
        }
    }
}

/// How long a deployment's folded status (see [`Hub::deployment_folded`]) is reused while
/// nothing reported changes. It bounds how late lists and summaries show what only time or a
/// long-poll's coming and going changes (an edge passing the edge timeout, which is far longer);
/// every reported change, enrollment, relabelling and deployment change is seen at once.
pub const FOLD_REUSE: Duration = Duration::from_secs(1);

/// A deployment as the hub holds it.
struct DeploymentEntry {
    rec: Arc<DeploymentRecord>,
    /// `rec.deploy_in_progress`, cleared in memory once the deployment has settled.
    in_progress: AtomicBool,
    /// Edges holding it, with the apps each runs.
    edges: BTreeMap<String, Vec<String>>,
    /// `edges` in name order with workload counts, built by the first list after a change
    /// (see [`Hub::deployment_holders`]); reset whenever `edges` changes.
    holders: Mutex<Option<Arc<Holders>>>,
    /// The last folded status (see [`Hub::deployment_folded`]); a new entry starts empty.
    folded: Mutex<Option<Folded>>,
}

/// A deployment's folded status as computed at hub change `seq`, at `at`.
struct Folded {
    seq: u64,
    at: std::time::Instant,
    status: DeploymentStatus,
}

/// One edge as the hub holds it.
struct EdgeEntry {
    row: EdgeRow,
    agent: AgentInfo,
    generation: u64,
    /// Deployments held, with the apps targeted at this edge.
    deployments: BTreeMap<String, Vec<String>>,
    notify: watch::Sender<u64>,
    polls: Arc<AtomicU32>,
    last_seen: Option<OffsetDateTime>,
    /// When "last seen" was last written to the store.
    seen_persisted: Option<OffsetDateTime>,
    last_seq: u64,
    applied_generation: u64,
    /// Last reported status per deployment and app.
    statuses: HashMap<String, BTreeMap<String, AppStatus>>,
    status_dirty: bool,
    agent_dirty: bool,
    /// Operator actions on this edge's workloads, by (deployment, app, kind, workload).
    controls: BTreeMap<ControlKey, WorkloadControl>,
    /// When the oldest change the edge has not received yet was made (see
    /// [`HubMetrics::delivery`]).
    changed_at: Option<std::time::Instant>,
}

/// (deployment id, app, kind, workload name) of a [`WorkloadControl`].
type ControlKey = (String, String, WorkloadKind, String);

fn control_key(c: &WorkloadControl) -> ControlKey {
    (
        c.deployment_id.clone(),
        c.app.clone(),
        c.kind,
        c.workload.clone(),
    )
}

#[derive(Default)]
struct ProjectFleet {
    edges: BTreeSet<String>,
    by_name: HashMap<String, String>,
    labels: HashMap<(String, String), HashSet<String>>,
    deployments: BTreeSet<String>,
    /// `App.id` (see [`app_ids`]) → (deployment id, app name), for the resource manager.
    apps_by_id: HashMap<String, (String, String)>,
}

#[derive(Default)]
struct State_ {
    edges: HashMap<String, EdgeEntry>,
    by_credential: HashMap<String, String>,
    projects: HashMap<ProjectId, ProjectFleet>,
    deployments: HashMap<String, DeploymentEntry>,
    /// Edges whose status or agent changed since the last [`Hub::drain_seen`] (may repeat an
    /// edge; the flags say what is still to write), so that a drain need not walk the fleet.
    dirty: Vec<String>,
    /// When [`Hub::drain_seen`] last walked every edge for liveness.
    liveness_walked: Option<OffsetDateTime>,
    /// Long-polls to wake (an edge's notifier and its new generation), woken once the lock is
    /// released (see [`Locked`]).
    to_wake: Vec<(watch::Sender<u64>, u64)>,
}

/// Long-polls woken inline, at most; a larger fan-out is woken by a task this many at a time,
/// yielding in between.
const WAKE_CHUNK: usize = 256;

/// The hub's state, locked. When released it wakes the long-polls the change moved.
///
/// Why not at once, inside the change: waking 10,000 long-polls from the request that made a
/// deployment queued 10,000 tasks ahead of everything else on the runtime, that request's own
/// remaining work (its audit record, its answer) included, which then waited for the whole
/// fan-out: a create took over a second at 10,000 edges (docs/BENCHMARKS.md, "Idle cost and
/// fan-out at 10,000 edges"). A large fan-out is now woken by its own task, [`WAKE_CHUNK`]
/// edges at a time with a yield in between, so other work interleaves. Nothing is late for
/// correctness: a long-poll that arrives meanwhile reads the new generation under the lock.
struct Locked<'a> {
    guard: MutexGuard<'a, State_>,
}

impl std::ops::Deref for Locked<'_> {
    type Target = State_;
    fn deref(&self) -> &State_ {
        &self.guard
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State_ {
        &mut self.guard
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if self.guard.to_wake.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.guard.to_wake);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) if batch.len() > WAKE_CHUNK => {
                rt.spawn(async move {
                    for chunk in batch.chunks(WAKE_CHUNK) {
                        wake(chunk);
                        tokio::task::yield_now().await;
                    }
                });
            }
            _ => wake(&batch),
        }
    }
}

/// Moves each notifier to its generation, never back (batches may be woken out of order).
fn wake(batch: &[(watch::Sender<u64>, u64)]) {
    for (tx, revision) in batch {
        tx.send_if_modified(|g| {
            let newer = *revision > *g;
            if newer {
                *g = *revision;
            }
            newer
        });
    }
}

/// Why the hub refused an agent request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    #[error("edge {0} was removed; enroll the agent again")]
    EdgeGone(String),
    #[error("{0}")]
    BadReport(String),
}

/// An edge as lists and responses see it.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeView {
    pub id: String,
    pub project_id: ProjectId,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub create_time: OffsetDateTime,
    pub agent: AgentInfo,
    pub last_seen: Option<OffsetDateTime>,
    /// A long-poll is open or the edge reported within two heartbeats.
    pub connected: bool,
    /// Seen within the edge timeout.
    pub alive: bool,
    pub generation: u64,
    pub applied_generation: u64,
    pub deployments: usize,
}

/// The fleet hub. Cheap to share (`Arc`).
pub struct Hub {
    state: Mutex<State_>,
    writes: tokio::sync::Mutex<()>,
    cfg: HubConfig,
    metrics: HubMetrics,
    /// Per-project change counters for live views (see [`Hub::watch_changes`]); an entry
    /// exists only while someone watches.
    changes: Mutex<HashMap<ProjectId, watch::Sender<u64>>>,
    /// Counts every change [`Hub::changed`] announces, in any project: a folded status
    /// computed at the current value is still true (but for time, see [`FOLD_REUSE`]).
    fold_seq: AtomicU64,
}

/// What the hub records for `/metrics` (no-ops unless given with [`Hub::with_metrics`]).
#[derive(Clone)]
pub struct HubMetrics {
    /// Per edge: from the change of its desired state (the hub applying a committed fleet
    /// write) to the long-poll response that hands it over. A change the edge has not taken
    /// yet is timed from its first, so an edge offline for an hour records an hour.
    pub delivery: canopy_metrics::Histogram,
    /// Per deployment change (put or remove): applying it to the hub, from waiting for the
    /// hub's lock to every targeted edge's long-poll woken.
    pub fanout: canopy_metrics::Histogram,
    /// Per deployment change: how many edges it woke.
    pub fanout_edges: canopy_metrics::Histogram,
}

impl Default for HubMetrics {
    fn default() -> Self {
        HubMetrics {
            delivery: canopy_metrics::Histogram::noop(),
            fanout: canopy_metrics::Histogram::noop(),
            fanout_edges: canopy_metrics::Histogram::noop(),
        }
    }
}

/// Scrape-time counts of the fleet (see [`Hub::gauges`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FleetGauges {
    /// Edges enrolled.
    pub edges: usize,
    /// Edges connected: a long-poll open or a report within two heartbeats (as edge lists show
    /// `connected`).
    pub connected: usize,
    /// Desired-state long-polls waiting.
    pub long_polls: usize,
    /// Deployments.
    pub deployments: usize,
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn age(t: Option<OffsetDateTime>, now: OffsetDateTime) -> Option<Duration> {
    t.map(|t| (now - t).try_into().unwrap_or(Duration::ZERO))
}

impl Hub {
    /// Records delivery and fan-out in `metrics` from now on.
    pub fn with_metrics(mut self, metrics: HubMetrics) -> Hub {
        self.metrics = metrics;
        self
    }

    fn lock(&self) -> Locked<'_> {
        Locked {
            guard: self.state.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// A receiver that sees a new value whenever something a project's deployment and edge
    /// views show changes: a reported app status or agent, an edge added, relabelled or
    /// removed, a deployment created, updated or deleted. (Heartbeats that change nothing do
    /// not count; nor do changes that come from time passing, such as an edge going UNKNOWN
    /// after the edge timeout.) Used by the web console's live pages: a watcher costs one
    /// `watch` receiver and wakes per change, whatever the size of the fleet.
    pub fn watch_changes(&self, project: ProjectId) -> watch::Receiver<u64> {
        let mut map = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, tx| tx.receiver_count() > 0);
        map.entry(project)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Tells a project's watchers that something changed (cheap when nobody watches).
    fn changed(&self, project: ProjectId) {
        self.fold_seq.fetch_add(1, Ordering::AcqRel);
        let map = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = map.get(&project) {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// The fleet timing.
    pub fn config(&self) -> HubConfig {
        self.cfg
    }

    /// Serializes fleet mutations: hold the guard across "read, check, commit to store, apply
    /// to hub".
    pub async fn lock_writes(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.writes.lock().await
    }

    /// The fleet's gauges, counted at scrape time (one pass over the edges under the lock; the
    /// hot paths keep nothing extra for them).
    pub fn gauges(&self) -> FleetGauges {
        let st = self.lock();
        let now = now();
        let mut g = FleetGauges {
            edges: st.edges.len(),
            deployments: st.deployments.len(),
            ..FleetGauges::default()
        };
        for e in st.edges.values() {
            let polls = e.polls.load(Ordering::Relaxed) as usize;
            g.long_polls += polls;
            if polls > 0 || age(e.last_seen, now).is_some_and(|a| a < self.cfg.heartbeat * 2) {
                g.connected += 1;
            }
        }
        g
    }

    /// Counts for logs and benchmarks: (edges, open long-polls, deployments).
    pub fn counts(&self) -> (usize, usize, usize) {
        let st = self.lock();
        let polls = st
            .edges
            .values()
            .map(|e| e.polls.load(Ordering::Relaxed) as usize)
            .sum();
        (st.edges.len(), polls, st.deployments.len())
    }
}

fn new_edge_entry(row: EdgeRow, generation: u64) -> EdgeEntry {
    let last_seen = row.last_seen;
    EdgeEntry {
        agent: AgentInfo::default(),
        generation,
        deployments: BTreeMap::new(),
        notify: watch::channel(generation).0,
        polls: Arc::new(AtomicU32::new(0)),
        last_seen,
        seen_persisted: last_seen,
        last_seq: 0,
        applied_generation: 0,
        statuses: HashMap::new(),
        status_dirty: false,
        agent_dirty: false,
        controls: BTreeMap::new(),
        changed_at: None,
        row,
    }
}

/// Moves an edge to `revision` and wakes its long-polls; whether it moved.
fn bump(e: &mut EdgeEntry, revision: u64, to_wake: &mut Vec<(watch::Sender<u64>, u64)>) -> bool {
    if revision > e.generation {
        e.generation = revision;
        e.changed_at.get_or_insert_with(std::time::Instant::now);
        to_wake.push((e.notify.clone(), revision));
        true
    } else {
        false
    }
}
