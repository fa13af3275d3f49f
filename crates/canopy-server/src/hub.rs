//! The fleet hub: the control plane's in-memory view of every edge and deployment, and the
//! agent protocol's hot path.
//!
//! Why in memory: one process serves 10,000 edges on 2 cores. A long-poll waits on its edge's
//! `watch` channel (no timer, thread or database connection per edge); a status report updates
//! a map entry; only changes of app state and, at most once a minute, an edge's "last seen"
//! reach the database (batched by [`Hub::drain_seen`]). The store stays the source of truth:
//! the hub is rebuilt from it at start ([`Hub::load`]) and every fleet mutation is committed to
//! the store first and applied here after (under [`Hub::lock_writes`], so mutations are
//! serialized as the reference's deployment manager does with its server-wide mutex).
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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use canopy_deploy::model::{Cluster, DeploymentStatus, OverrideValues, State};
use canopy_deploy::render::Requirement;
use canopy_deploy::status::{EdgeAppReport, EdgeInput, FoldInput};
use canopy_deploy::target::{Targeting, set_matches};
use canopy_proto::{
    AgentInfo, AppInstance, AppStatus, DeploymentInstance, DesiredState, Generation, StatusAck,
    StatusReport, WorkloadControl, WorkloadKind,
};
use canopy_store::{DeploymentRow, EdgeRow, EdgeSeen, FleetSnapshot, ProjectId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::watch;

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

/// How often an unchanged "last seen" is written to the store.
const SEEN_PERSIST_EVERY: Duration = Duration::from_secs(60);

/// How long a deployment's folded status (see [`Hub::deployment_folded`]) is reused while
/// nothing reported changes. It bounds how late lists and summaries show what only time or a
/// long-poll's coming and going changes (an edge passing the edge timeout, which is far longer);
/// every reported change, enrollment, relabelling and deployment change is seen at once.
pub const FOLD_REUSE: Duration = Duration::from_secs(1);

/// The deployment manager's stored record of one deployment (the store's opaque `body`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentRecord {
    pub id: String,
    pub name: String,
    pub project_id: ProjectId,
    /// The normalized request, with the **real** override values (secrets unmasked).
    pub spec: canopy_deploy::model::Deployment,
    /// The override values as responses show them (secret parameters `********`).
    pub masked_overrides: Vec<OverrideValues>,
    /// The deployment profile in use (resolved from the package default when the request had
    /// none).
    pub profile_name: String,
    pub default_profile_name: String,
    /// Bumped by every update.
    pub generation: u64,
    /// What every targeted edge runs (each edge gets the apps targeted at it).
    pub apps: Vec<AppInstance>,
    pub targeting: Targeting,
    /// Packages this deployment required (deployment requirements), for the update rules.
    #[serde(default)]
    pub requirements: Vec<Requirement>,
    /// Deployments that required this one (it cannot be deleted or updated while they exist).
    #[serde(default)]
    pub parents: Vec<String>,
    /// Deployments created (or reused) for this one's requirements.
    #[serde(default)]
    pub children: Vec<String>,
    /// True from a change until every edge runs it (DEPLOYING/UPDATING rather than DOWN).
    pub deploy_in_progress: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub create_time: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub update_time: OffsetDateTime,
    /// What the Helm applications' charts hold that edges do not run as Kubernetes would
    /// (shown on the deployment).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<canopy_deploy::model::AppWarning>,
    /// Helm's output per Helm application, as rendered for this generation (served at
    /// `.../deployments/{id}/apps/{app}/manifest`). The record is sealed at rest, so Secret
    /// values in manifests are too.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub manifests: BTreeMap<String, String>,
}

impl DeploymentRecord {
    /// The store row of this record.
    pub fn to_row(&self) -> DeploymentRow {
        DeploymentRow {
            id: self.id.clone(),
            project_id: self.project_id,
            name: self.name.clone(),
            body: serde_json::to_string(self).expect("deployment records serialize"),
            create_time: self.create_time,
            update_time: self.update_time,
        }
    }
}

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

/// The edges holding a deployment, in edge-name order, for the deployment-wide workload list:
/// built once per change of the deployment's edges, so a page costs O(log N + page), not O(N).
#[derive(Debug)]
pub struct Holders {
    pub edges: Vec<Holder>,
    /// Workloads on all edges.
    pub total: usize,
}

/// One edge holding a deployment.
#[derive(Debug)]
pub struct Holder {
    pub edge_id: String,
    pub edge_name: String,
    /// Indexes of the apps it holds in the deployment's `apps`, in package order.
    pub apps: Vec<usize>,
    /// Workloads on the edges before this one, and on this one.
    pub before: usize,
    pub workloads: usize,
}

/// How many workloads the resource manager lists for one app on one edge: its pod (when it has
/// containers), its VMs and a Helm app's pods (replicas as desired), at most 100 (the reference's `maxItems`).
pub fn app_workload_count(app: &AppInstance) -> usize {
    let pods = app.pods.as_ref().map_or(0, canopy_deploy::helm::pod_slots);
    (usize::from(!app.containers.is_empty()) + app.vms.len() + pods).min(100)
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
    /// Rebuilds the hub from the store's fleet snapshot.
    pub fn load(cfg: HubConfig, snap: FleetSnapshot) -> Result<Hub, String> {
        let hub = Hub {
            state: Mutex::new(State_::default()),
            writes: tokio::sync::Mutex::new(()),
            cfg,
            metrics: HubMetrics::default(),
            changes: Mutex::new(HashMap::new()),
            fold_seq: AtomicU64::new(0),
        };
        {
            let mut st = hub.lock();
            for row in snap.edges {
                let mut entry = new_edge_entry(row, snap.revision);
                // Kept before the agent protocol had bounds, a status or agent description may
                // be over them: messages are cut; anything else over a bound is not loaded
                // (the edge's next report replaces it).
                if let Some(text) = &entry.row.last_status
                    && let Ok(mut report) = serde_json::from_str::<StatusReport>(text)
                    && report.bound().is_ok()
                {
                    entry.last_seq = report.seq;
                    entry.applied_generation = report.generation.0;
                    for a in report.apps {
                        entry
                            .statuses
                            .entry(a.deployment_id.clone())
                            .or_default()
                            .insert(a.app.clone(), a);
                    }
                }
                entry.agent = serde_json::from_str::<AgentInfo>(&entry.row.agent)
                    .ok()
                    .and_then(|mut a| a.bound("agent").is_ok().then_some(a))
                    .unwrap_or_default();
                st.insert_edge(entry);
            }
            for row in snap.deployments {
                let rec: DeploymentRecord = serde_json::from_str(&row.body)
                    .map_err(|e| format!("deployment {} record: {e}", row.id))?;
                let _ = st.put_deployment(Arc::new(rec), snap.revision, false);
            }
            for row in snap.controls {
                let kind = match row.kind.as_str() {
                    "vm" => WorkloadKind::Vm,
                    "pod" => WorkloadKind::Pod,
                    other => {
                        return Err(format!(
                            "workload control of edge {} has unknown kind {other:?}",
                            row.edge_id
                        ));
                    }
                };
                if let Some(e) = st.edges.get_mut(&row.edge_id) {
                    let c = WorkloadControl {
                        deployment_id: row.deployment_id,
                        app: row.app,
                        kind,
                        workload: row.workload,
                        running: row.running,
                        restarts: row.restarts,
                    };
                    e.controls.insert(control_key(&c), c);
                }
            }
        }
        Ok(hub)
    }

    /// Records delivery and fan-out in `metrics` from now on.
    pub fn with_metrics(mut self, metrics: HubMetrics) -> Hub {
        self.metrics = metrics;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State_> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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

    // --- edges -------------------------------------------------------------------------------

    /// The edge a credential hash belongs to, with its project.
    pub fn edge_by_credential(&self, hash: &str) -> Option<(String, ProjectId)> {
        let st = self.lock();
        let id = st.by_credential.get(hash)?;
        let e = st.edges.get(id)?;
        Some((id.clone(), e.row.project_id))
    }

    /// Adds a freshly enrolled edge; it gains every deployment of its project it matches.
    pub fn add_edge(&self, row: EdgeRow, revision: u64) {
        let mut st = self.lock();
        let id = row.id.clone();
        let project = row.project_id;
        st.insert_edge(new_edge_entry(row, revision));
        st.retarget_edge(project, &id, revision);
        drop(st);
        self.changed(project);
    }

    /// Replaces an edge's labels; it gains and loses deployments accordingly.
    pub fn set_labels(&self, id: &str, labels: BTreeMap<String, String>, revision: u64) {
        let mut st = self.lock();
        let Some(e) = st.edges.get(id) else { return };
        let project = e.row.project_id;
        let old = e.row.labels.clone();
        let pf = st.projects.entry(project).or_default();
        for (k, v) in &old {
            if let Some(set) = pf.labels.get_mut(&(k.clone(), v.clone())) {
                set.remove(id);
            }
        }
        for (k, v) in &labels {
            pf.labels
                .entry((k.clone(), v.clone()))
                .or_default()
                .insert(id.to_string());
        }
        if let Some(e) = st.edges.get_mut(id) {
            e.row.labels = labels;
        }
        st.retarget_edge(project, id, revision);
        drop(st);
        self.changed(project);
    }

    /// Removes an edge: its credential stops working and its long-polls end.
    pub fn remove_edge(&self, id: &str) {
        let mut st = self.lock();
        let Some(e) = st.edges.remove(id) else { return };
        st.by_credential.remove(&e.row.credential_hash);
        if let Some(pf) = st.projects.get_mut(&e.row.project_id) {
            pf.edges.remove(id);
            pf.by_name.remove(&e.row.name);
            for (k, v) in &e.row.labels {
                if let Some(set) = pf.labels.get_mut(&(k.clone(), v.clone())) {
                    set.remove(id);
                }
            }
        }
        for d in e.deployments.keys() {
            if let Some(de) = st.deployments.get_mut(d) {
                de.edges.remove(id);
                *de.holders.get_mut().unwrap_or_else(PoisonError::into_inner) = None;
            }
        }
        // Dropping `e.notify` ends the edge's long-polls.
        drop(st);
        self.changed(e.row.project_id);
    }

    /// How many connected edges of `project` have not yet applied their current desired state
    /// (used to let edges remove a deleted project's workloads before the edges go).
    pub fn unconfirmed_edges(&self, project: ProjectId) -> usize {
        let st = self.lock();
        let now = OffsetDateTime::now_utc();
        st.projects.get(&project).map_or(0, |pf| {
            pf.edges
                .iter()
                .filter_map(|id| st.edges.get(id))
                .filter(|e| self.alive(e, now) && e.applied_generation < e.generation)
                .count()
        })
    }

    /// Forgets a deleted project: its edges (their long-polls end, their credentials stop
    /// working) and any deployment left.
    pub fn remove_project(&self, project: ProjectId) {
        let mut st = self.lock();
        let Some(pf) = st.projects.remove(&project) else {
            return;
        };
        for d in &pf.deployments {
            st.deployments.remove(d);
        }
        for id in &pf.edges {
            if let Some(e) = st.edges.remove(id) {
                st.by_credential.remove(&e.row.credential_hash);
            }
        }
    }

    /// Resolves an edge of a project by id or name.
    pub fn resolve_edge(&self, project: ProjectId, id_or_name: &str) -> Option<String> {
        let st = self.lock();
        st.resolve(project, id_or_name)
    }

    /// One edge of a project, by id or name.
    pub fn edge(&self, project: ProjectId, id_or_name: &str) -> Option<EdgeView> {
        let st = self.lock();
        let id = st.resolve(project, id_or_name)?;
        st.edges.get(&id).map(|e| self.view(e, now()))
    }

    /// Every edge of a project (unordered).
    pub fn edges(&self, project: ProjectId) -> Vec<EdgeView> {
        let st = self.lock();
        let now = now();
        st.projects
            .get(&project)
            .map(|pf| {
                pf.edges
                    .iter()
                    .filter_map(|id| st.edges.get(id))
                    .map(|e| self.view(e, now))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The apps last reported by an edge, per deployment of the project.
    pub fn edge_statuses(&self, project: ProjectId, id: &str) -> Vec<AppStatus> {
        let st = self.lock();
        st.edges
            .get(id)
            .filter(|e| e.row.project_id == project)
            .map(|e| {
                e.statuses
                    .values()
                    .flat_map(|m| m.values().cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn alive(&self, e: &EdgeEntry, now: OffsetDateTime) -> bool {
        e.polls.load(Ordering::Relaxed) > 0
            || age(e.last_seen, now).is_some_and(|a| a < self.cfg.edge_timeout)
    }

    fn view(&self, e: &EdgeEntry, now: OffsetDateTime) -> EdgeView {
        let connected = e.polls.load(Ordering::Relaxed) > 0
            || age(e.last_seen, now).is_some_and(|a| a < self.cfg.heartbeat * 2);
        EdgeView {
            id: e.row.id.clone(),
            project_id: e.row.project_id,
            name: e.row.name.clone(),
            labels: e.row.labels.clone(),
            create_time: e.row.create_time,
            agent: e.agent.clone(),
            last_seen: e.last_seen,
            connected,
            alive: self.alive(e, now),
            generation: e.generation,
            applied_generation: e.applied_generation,
            deployments: e.deployments.len(),
        }
    }

    // --- deployments -------------------------------------------------------------------------

    /// Adds or replaces a deployment; edges that gain, keep (when it changed) or lose it are
    /// woken with `revision`.
    pub fn put_deployment(&self, rec: Arc<DeploymentRecord>, revision: u64) {
        let start = std::time::Instant::now();
        let project = rec.project_id;
        let woken = self.lock().put_deployment(rec, revision, true);
        self.metrics.fanout.record(start.elapsed());
        self.metrics.fanout_edges.record(woken as f64);
        self.changed(project);
    }

    /// The operator's standing action on one workload of an edge (none: it runs, never
    /// restarted).
    pub fn control(
        &self,
        edge_id: &str,
        deployment_id: &str,
        app: &str,
        kind: WorkloadKind,
        workload: &str,
    ) -> Option<WorkloadControl> {
        let st = self.lock();
        let key = (
            deployment_id.to_string(),
            app.to_string(),
            kind,
            workload.to_string(),
        );
        st.edges.get(edge_id)?.controls.get(&key).cloned()
    }

    /// The deployment and app index of an `App.id` in a project (the resource manager's
    /// `appId`), through an index: no scan of the project's deployments.
    pub fn find_app(
        &self,
        project: ProjectId,
        app_id: &str,
    ) -> Option<(Arc<DeploymentRecord>, usize)> {
        let st = self.lock();
        let (deployment, app) = st.projects.get(&project)?.apps_by_id.get(app_id)?;
        let rec = &st.deployments.get(deployment)?.rec;
        let index = rec.apps.iter().position(|a| &a.name == app)?;
        Some((Arc::clone(rec), index))
    }

    /// Whether an edge holds `app` of `deployment_id` (it is targeted there).
    pub fn edge_holds(&self, edge_id: &str, deployment_id: &str, app: &str) -> bool {
        let st = self.lock();
        st.edges
            .get(edge_id)
            .and_then(|e| e.deployments.get(deployment_id))
            .is_some_and(|apps| apps.iter().any(|a| a == app))
    }

    /// Sets a workload control (already committed to the store) and wakes the edge with
    /// `revision`.
    pub fn set_control(&self, edge_id: &str, control: WorkloadControl, revision: u64) {
        let mut st = self.lock();
        if let Some(e) = st.edges.get_mut(edge_id) {
            e.controls.insert(control_key(&control), control);
            bump(e, revision);
        }
    }

    /// Removes a deployment; the edges holding it are woken with `revision`.
    pub fn remove_deployment(&self, id: &str, revision: u64) {
        let start = std::time::Instant::now();
        let mut st = self.lock();
        let Some(de) = st.deployments.remove(id) else {
            return;
        };
        let mut woken = 0usize;
        if let Some(pf) = st.projects.get_mut(&de.rec.project_id) {
            pf.deployments.remove(id);
            for app_id in app_ids(&de.rec).values() {
                pf.apps_by_id.remove(app_id);
            }
        }
        for edge in de.edges.keys() {
            if let Some(e) = st.edges.get_mut(edge) {
                e.deployments.remove(id);
                e.statuses.remove(id);
                e.controls.retain(|(d, ..), _| d != id);
                e.status_dirty = true;
                woken += usize::from(bump(e, revision));
            }
        }
        drop(st);
        self.metrics.fanout.record(start.elapsed());
        self.metrics.fanout_edges.record(woken as f64);
        self.changed(de.rec.project_id);
    }

    /// One deployment of a project.
    pub fn deployment(&self, project: ProjectId, id: &str) -> Option<Arc<DeploymentRecord>> {
        let st = self.lock();
        st.deployments
            .get(id)
            .filter(|d| d.rec.project_id == project)
            .map(|d| Arc::clone(&d.rec))
    }

    /// Every deployment of a project, oldest first.
    pub fn deployments(&self, project: ProjectId) -> Vec<Arc<DeploymentRecord>> {
        let st = self.lock();
        let mut out: Vec<_> = st
            .projects
            .get(&project)
            .map(|pf| {
                pf.deployments
                    .iter()
                    .filter_map(|id| st.deployments.get(id))
                    .map(|d| Arc::clone(&d.rec))
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| (a.create_time, &a.id).cmp(&(b.create_time, &b.id)));
        out
    }

    /// The per-edge view of a deployment (its "clusters"), in edge-name order, and its folded
    /// status. Clears the in-progress flag once the deployment has settled.
    pub fn deployment_status(&self, id: &str) -> Option<(DeploymentStatus, Vec<Cluster>)> {
        let st = self.lock();
        let de = st.deployments.get(id)?;
        let (status, mut clusters) = self.fold(&st, de);
        clusters.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        Some((status, clusters))
    }

    /// A deployment's folded status alone, for lists and summaries: reused while nothing
    /// reported has changed since it was folded and for at most [`FOLD_REUSE`], so listing a
    /// project's deployments costs O(deployments) rather than O(deployments × edges) when the
    /// fleet is quiet (10,000 edges: a fold is milliseconds; see docs/BENCHMARKS.md).
    pub fn deployment_folded(&self, id: &str) -> Option<DeploymentStatus> {
        let st = self.lock();
        let de = st.deployments.get(id)?;
        // Read under the state lock: a change takes that lock to apply itself and bumps
        // `fold_seq` after releasing it, so what is folded now reflects at least every change
        // counted in `seq`, and any change it misses moves `seq` on afterwards.
        let seq = self.fold_seq.load(Ordering::Acquire);
        let mut cache = de.folded.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = cache.as_ref()
            && f.seq == seq
            && f.at.elapsed() < FOLD_REUSE
        {
            return Some(f.status.clone());
        }
        let (status, _) = self.fold(&st, de);
        *cache = Some(Folded {
            seq,
            at: std::time::Instant::now(),
            status: status.clone(),
        });
        Some(status)
    }

    /// Folds a deployment's per-edge views into its status (clearing the in-progress flag once
    /// it has settled). The views come in the hub's order (edge id), unsorted: the fold counts.
    fn fold(&self, st: &State_, de: &DeploymentEntry) -> (DeploymentStatus, Vec<Cluster>) {
        let now = now();
        let rec = &de.rec;
        let app_ids = app_ids(rec);
        let clusters: Vec<Cluster> = de
            .edges
            .iter()
            .filter_map(|(edge_id, apps)| self.cluster(st, rec, &app_ids, edge_id, apps, now))
            .collect();
        let input = FoldInput {
            generation: rec.generation,
            deploy_in_progress: de.in_progress.load(Ordering::Relaxed),
            terminating: false,
            age: age(Some(rec.create_time), now).unwrap_or_default(),
            no_target_grace: self.cfg.no_target_grace,
        };
        let (status, settled) = canopy_deploy::status::deployment_status(&clusters, &input);
        if settled {
            de.in_progress.store(false, Ordering::Relaxed);
        }
        (status, clusters)
    }

    /// One edge's view of one deployment.
    fn cluster(
        &self,
        st: &State_,
        rec: &DeploymentRecord,
        app_ids: &BTreeMap<String, String>,
        edge_id: &str,
        apps: &[String],
        now: OffsetDateTime,
    ) -> Option<Cluster> {
        let e = st.edges.get(edge_id)?;
        let reported = e.statuses.get(&rec.id);
        let input = EdgeInput {
            edge_id,
            edge_name: &e.row.name,
            alive: self.alive(e, now),
            last_seen_age: age(e.last_seen, now),
            apps: apps
                .iter()
                .map(|a| EdgeAppReport {
                    app: a,
                    status: reported.and_then(|r| r.get(a)),
                })
                .collect(),
        };
        Some(canopy_deploy::status::cluster_status(
            &input,
            rec.generation,
            app_ids,
        ))
    }

    /// The deployments an edge holds, with its own status for each, in deployment id order.
    /// O(deployments of the edge), whatever the size of the fleet.
    pub fn edge_deployments(&self, edge_id: &str) -> Vec<(Arc<DeploymentRecord>, Cluster)> {
        let st = self.lock();
        let Some(e) = st.edges.get(edge_id) else {
            return Vec::new();
        };
        let now = now();
        e.deployments
            .iter()
            .filter_map(|(d, apps)| {
                let rec = &st.deployments.get(d)?.rec;
                let c = self.cluster(&st, rec, &app_ids(rec), edge_id, apps, now)?;
                Some((Arc::clone(rec), c))
            })
            .collect()
    }

    /// A deployment of `project` and the edges holding it (see [`Holders`]), built on the first
    /// call after its edges changed and shared by later calls.
    pub fn deployment_holders(
        &self,
        project: ProjectId,
        id: &str,
    ) -> Option<(Arc<DeploymentRecord>, Arc<Holders>)> {
        let st = self.lock();
        let de = st
            .deployments
            .get(id)
            .filter(|d| d.rec.project_id == project)?;
        let mut cache = de.holders.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = cache.as_ref() {
            return Some((Arc::clone(&de.rec), Arc::clone(h)));
        }
        let rec = &de.rec;
        let index: HashMap<&str, usize> = rec
            .apps
            .iter()
            .enumerate()
            .map(|(i, a)| (a.name.as_str(), i))
            .collect();
        let mut edges: Vec<Holder> = de
            .edges
            .iter()
            .filter_map(|(edge_id, apps)| {
                let e = st.edges.get(edge_id)?;
                let mut held: Vec<usize> = apps
                    .iter()
                    .filter_map(|a| index.get(a.as_str()).copied())
                    .collect();
                held.sort_unstable();
                Some(Holder {
                    edge_id: edge_id.clone(),
                    edge_name: e.row.name.clone(),
                    workloads: held.iter().map(|i| app_workload_count(&rec.apps[*i])).sum(),
                    apps: held,
                    before: 0,
                })
            })
            .collect();
        edges.sort_by(|a, b| (&a.edge_name, &a.edge_id).cmp(&(&b.edge_name, &b.edge_id)));
        let mut total = 0;
        for h in &mut edges {
            h.before = total;
            total += h.workloads;
        }
        let built = Arc::new(Holders { edges, total });
        *cache = Some(Arc::clone(&built));
        Some((Arc::clone(rec), built))
    }

    /// Whether a deployment's state counts as "in progress" right now.
    pub fn in_progress(&self, id: &str) -> bool {
        let st = self.lock();
        st.deployments
            .get(id)
            .is_some_and(|d| d.in_progress.load(Ordering::Relaxed))
    }

    // --- agent protocol ----------------------------------------------------------------------

    /// The long-poll: the edge's desired state once its generation is above `after`, or `None`
    /// after `wait` (or when `cancel` resolves first).
    pub async fn desired_state(
        &self,
        edge_id: &str,
        after: u64,
        wait: Duration,
        cancel: impl std::future::Future<Output = ()>,
    ) -> Result<Option<DesiredState>, HubError> {
        let (mut rx, polls) = {
            let mut st = self.lock();
            let Some(e) = st.edges.get_mut(edge_id) else {
                return Err(HubError::EdgeGone(edge_id.to_string()));
            };
            e.last_seen = Some(now());
            if e.generation > after {
                self.delivered(e);
                return Ok(Some(st.build(edge_id)));
            }
            (e.notify.subscribe(), Arc::clone(&e.polls))
        };
        polls.fetch_add(1, Ordering::Relaxed);
        struct Leave(Arc<AtomicU32>);
        impl Drop for Leave {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let _leave = Leave(polls);
        let changed = tokio::select! {
            r = tokio::time::timeout(wait, rx.wait_for(|g| *g > after)) => r,
            _ = cancel => return Ok(None),
        };
        let mut st = self.lock();
        match changed {
            Ok(Ok(_)) => match st.edges.get_mut(edge_id) {
                Some(e) => {
                    e.last_seen = Some(now());
                    self.delivered(e);
                    Ok(Some(st.build(edge_id)))
                }
                None => Err(HubError::EdgeGone(edge_id.to_string())),
            },
            Ok(Err(_)) => Err(HubError::EdgeGone(edge_id.to_string())),
            Err(_) => match st.edges.get_mut(edge_id) {
                Some(e) => {
                    e.last_seen = Some(now());
                    Ok(None)
                }
                None => Err(HubError::EdgeGone(edge_id.to_string())),
            },
        }
    }

    /// Takes a status report: duplicates and older reports change nothing; a report at the
    /// current generation about a deployment the edge does not hold is refused whole.
    pub fn report(&self, edge_id: &str, report: StatusReport) -> Result<StatusAck, HubError> {
        let heartbeat_seconds = u32::try_from(self.cfg.heartbeat.as_secs()).unwrap_or(30);
        let mut st = self.lock();
        let Some(e) = st.edges.get_mut(edge_id) else {
            return Err(HubError::EdgeGone(edge_id.to_string()));
        };
        e.last_seen = Some(now());
        let ack = |e: &EdgeEntry| StatusAck {
            seq: e.last_seq,
            generation: Generation(e.generation),
            heartbeat_seconds,
        };
        if report.seq <= e.last_seq {
            return Ok(ack(e));
        }
        if report.generation.0 > e.generation {
            return Err(HubError::BadReport(format!(
                "status report for generation {} but edge {} was never given a generation above {}",
                report.generation.0, e.row.name, e.generation
            )));
        }
        let current = report.generation.0 == e.generation;
        let mut statuses: HashMap<String, BTreeMap<String, AppStatus>> = HashMap::new();
        for a in report.apps {
            let held = e
                .deployments
                .get(&a.deployment_id)
                .is_some_and(|apps| apps.contains(&a.app));
            if !held {
                if current {
                    return Err(HubError::BadReport(format!(
                        "edge {} does not hold app {} of deployment {}; nothing of this report was applied",
                        e.row.name, a.app, a.deployment_id
                    )));
                }
                continue;
            }
            statuses
                .entry(a.deployment_id.clone())
                .or_default()
                .insert(a.app.clone(), a);
        }
        let mut changed = false;
        if let Some(agent) = report.agent
            && agent != e.agent
        {
            e.agent = agent;
            e.agent_dirty = true;
            changed = true;
        }
        if statuses != e.statuses {
            e.statuses = statuses;
            e.status_dirty = true;
            changed = true;
        }
        e.last_seq = report.seq;
        e.applied_generation = report.generation.0;
        let (ack, project) = (ack(e), e.row.project_id);
        drop(st);
        if changed {
            self.changed(project);
        }
        Ok(ack)
    }

    /// Liveness and status changes not yet written to the store (at most one "last seen" per
    /// edge per minute unless its status or agent changed).
    pub fn drain_seen(&self) -> Vec<EdgeSeen> {
        let mut st = self.lock();
        let now = now();
        let mut out = Vec::new();
        for e in st.edges.values_mut() {
            // A held long-poll is the edge being seen now: an idle agent's long-polls last
            // minutes (docs/AGENT-PROTOCOL.md), longer than the edge timeout.
            if e.polls.load(Ordering::Relaxed) > 0 {
                e.last_seen = Some(now);
            }
            let Some(seen) = e.last_seen else { continue };
            let stale = match e.seen_persisted {
                None => true,
                Some(p) => (seen - p) >= SEEN_PERSIST_EVERY,
            };
            if !(stale || e.status_dirty || e.agent_dirty) {
                continue;
            }
            let last_status = e.status_dirty.then(|| {
                let report = StatusReport {
                    protocol_version: canopy_proto::PROTOCOL_VERSION,
                    seq: e.last_seq,
                    generation: Generation(e.applied_generation),
                    apps: e
                        .statuses
                        .values()
                        .flat_map(|m| m.values().cloned())
                        .collect(),
                    agent: None,
                };
                serde_json::to_string(&report).unwrap_or_default()
            });
            let agent = e
                .agent_dirty
                .then(|| serde_json::to_string(&e.agent).unwrap_or_default());
            out.push(EdgeSeen {
                edge_id: e.row.id.clone(),
                last_seen: seen.min(now),
                agent,
                last_status,
            });
            e.seen_persisted = Some(seen);
            e.status_dirty = false;
            e.agent_dirty = false;
        }
        out
    }

    /// Puts back entries [`Hub::drain_seen`] took when writing them failed.
    pub fn undrain_seen(&self, batch: &[EdgeSeen]) {
        let mut st = self.lock();
        for s in batch {
            if let Some(e) = st.edges.get_mut(&s.edge_id) {
                e.seen_persisted = None;
                e.status_dirty |= s.last_status.is_some();
                e.agent_dirty |= s.agent.is_some();
            }
        }
    }

    /// Records the delivery of an edge's pending change (its desired state is being handed over).
    fn delivered(&self, e: &mut EdgeEntry) {
        if let Some(at) = e.changed_at.take() {
            self.metrics.delivery.record(at.elapsed());
        }
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

/// The stable app ids of a deployment, by app name.
fn app_ids(rec: &DeploymentRecord) -> BTreeMap<String, String> {
    rec.apps
        .iter()
        .map(|a| {
            (
                a.name.clone(),
                canopy_deploy::status::app_id(&rec.id, &a.name),
            )
        })
        .collect()
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
fn bump(e: &mut EdgeEntry, revision: u64) -> bool {
    if revision > e.generation {
        e.generation = revision;
        e.changed_at.get_or_insert_with(std::time::Instant::now);
        e.notify.send_replace(revision);
        true
    } else {
        false
    }
}

impl State_ {
    fn insert_edge(&mut self, e: EdgeEntry) {
        let id = e.row.id.clone();
        let pf = self.projects.entry(e.row.project_id).or_default();
        pf.edges.insert(id.clone());
        pf.by_name.insert(e.row.name.clone(), id.clone());
        for (k, v) in &e.row.labels {
            pf.labels
                .entry((k.clone(), v.clone()))
                .or_default()
                .insert(id.clone());
        }
        self.by_credential
            .insert(e.row.credential_hash.clone(), id.clone());
        self.edges.insert(id, e);
    }

    fn resolve(&self, project: ProjectId, id_or_name: &str) -> Option<String> {
        let pf = self.projects.get(&project)?;
        if pf.edges.contains(id_or_name) {
            return Some(id_or_name.to_string());
        }
        pf.by_name.get(id_or_name).cloned()
    }

    /// The edges of `project` that `t` can match: label sets through the index (smallest
    /// bucket of the set's pairs, then filtered), edge references by id or name.
    fn candidates(&self, project: ProjectId, t: &Targeting) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let Some(pf) = self.projects.get(&project) else {
            return out;
        };
        for set in t.label_sets() {
            let smallest = set
                .iter()
                .map(|(k, v)| pf.labels.get(&(k.clone(), v.clone())))
                .min_by_key(|b| b.map_or(0, |b| b.len()));
            match smallest {
                None => out.extend(pf.edges.iter().cloned()),
                Some(None) => {}
                Some(Some(bucket)) => {
                    for id in bucket {
                        if let Some(e) = self.edges.get(id)
                            && set_matches(set, &e.row.labels)
                        {
                            out.insert(id.clone());
                        }
                    }
                }
            }
        }
        for r in t.edge_refs() {
            if let Some(id) = self.resolve(project, r) {
                out.insert(id);
            }
        }
        out
    }

    /// Returns how many edges it woke.
    fn put_deployment(
        &mut self,
        rec: Arc<DeploymentRecord>,
        revision: u64,
        changed: bool,
    ) -> usize {
        let mut woken = 0usize;
        let id = rec.id.clone();
        let project = rec.project_id;
        {
            let old_ids = self.deployments.get(&id).map(|d| app_ids(&d.rec));
            let pf = self.projects.entry(project).or_default();
            for app_id in old_ids.iter().flat_map(|m| m.values()) {
                pf.apps_by_id.remove(app_id);
            }
            for (name, app_id) in app_ids(&rec) {
                pf.apps_by_id.insert(app_id, (id.clone(), name));
            }
        }
        let old_edges: BTreeSet<String> = self
            .deployments
            .get(&id)
            .map(|d| d.edges.keys().cloned().collect())
            .unwrap_or_default();
        let mut new_edges = BTreeMap::new();
        for edge in self.candidates(project, &rec.targeting) {
            let Some(e) = self.edges.get(&edge) else {
                continue;
            };
            let apps = rec
                .targeting
                .apps_for_edge(&e.row.id, &e.row.name, &e.row.labels);
            if !apps.is_empty() {
                new_edges.insert(edge, apps);
            }
        }
        for edge in old_edges.iter().filter(|e| !new_edges.contains_key(*e)) {
            if let Some(e) = self.edges.get_mut(edge) {
                e.deployments.remove(&id);
                e.statuses.remove(&id);
                woken += usize::from(bump(e, revision));
            }
        }
        for (edge, apps) in &new_edges {
            if let Some(e) = self.edges.get_mut(edge) {
                let before = e.deployments.insert(id.clone(), apps.clone());
                if changed || before.as_ref() != Some(apps) {
                    woken += usize::from(bump(e, revision));
                }
            }
        }
        self.projects
            .entry(project)
            .or_default()
            .deployments
            .insert(id.clone());
        let in_progress = AtomicBool::new(rec.deploy_in_progress);
        self.deployments.insert(
            id,
            DeploymentEntry {
                rec,
                in_progress,
                edges: new_edges,
                holders: Mutex::new(None),
                folded: Mutex::new(None),
            },
        );
        woken
    }

    /// Recomputes which deployments of its project an edge holds (after enrollment or a label
    /// change): O(deployments of the project).
    fn retarget_edge(&mut self, project: ProjectId, edge_id: &str, revision: u64) {
        let Some(pf) = self.projects.get(&project) else {
            return;
        };
        let ids: Vec<String> = pf.deployments.iter().cloned().collect();
        let Some(e) = self.edges.get(edge_id) else {
            return;
        };
        let (eid, ename, labels) = (e.row.id.clone(), e.row.name.clone(), e.row.labels.clone());
        let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for d in &ids {
            if let Some(de) = self.deployments.get(d) {
                let apps = de.rec.targeting.apps_for_edge(&eid, &ename, &labels);
                if !apps.is_empty() {
                    wanted.insert(d.clone(), apps);
                }
            }
        }
        for d in &ids {
            if let Some(de) = self.deployments.get_mut(d) {
                match wanted.get(d) {
                    Some(apps) => {
                        if de.edges.insert(eid.clone(), apps.clone()).as_ref() != Some(apps) {
                            // A new (or changed) edge is being deployed to: DEPLOYING/UPDATING
                            // until it reports, not DOWN.
                            de.in_progress.store(true, Ordering::Relaxed);
                            *de.holders.get_mut().unwrap_or_else(PoisonError::into_inner) = None;
                        }
                    }
                    None => {
                        if de.edges.remove(&eid).is_some() {
                            *de.holders.get_mut().unwrap_or_else(PoisonError::into_inner) = None;
                        }
                    }
                }
            }
        }
        if let Some(e) = self.edges.get_mut(edge_id)
            && e.deployments != wanted
        {
            e.statuses.retain(|d, _| wanted.contains_key(d));
            e.deployments = wanted;
            bump(e, revision);
        }
    }

    /// The desired state of an edge right now.
    fn build(&self, edge_id: &str) -> DesiredState {
        let Some(e) = self.edges.get(edge_id) else {
            return DesiredState::default();
        };
        let deployments = e
            .deployments
            .iter()
            .filter_map(|(d, apps)| {
                let rec = &self.deployments.get(d)?.rec;
                Some(DeploymentInstance {
                    deployment_id: rec.id.clone(),
                    project: String::new(),
                    package: rec.spec.app_name.clone(),
                    package_version: rec.spec.app_version.clone(),
                    generation: rec.generation,
                    apps: rec
                        .apps
                        .iter()
                        .filter(|a| apps.contains(&a.name))
                        .cloned()
                        .collect(),
                })
            })
            .collect();
        let controls = e
            .controls
            .values()
            .filter(|c| {
                e.deployments
                    .get(&c.deployment_id)
                    .is_some_and(|apps| apps.contains(&c.app))
            })
            .cloned()
            .collect();
        DesiredState {
            generation: Generation(e.generation),
            deployments,
            controls,
        }
    }
}

/// The project name to put in desired states (set by the app layer, which knows names).
pub fn with_project(mut d: DesiredState, project: &str) -> DesiredState {
    for dep in &mut d.deployments {
        dep.project = project.to_string();
    }
    d
}

/// Whether a deployment state is final for a `--watch` (nothing more will happen by itself).
pub fn settled(state: State) -> bool {
    matches!(
        state,
        State::Running | State::Down | State::Error | State::NoTargetClusters
    )
}
