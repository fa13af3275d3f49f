//! The change feed, server side: how this replica's hub and token cache follow what other
//! replicas commit to the same PostgreSQL database (the store side, and why no change can be
//! skipped, is in `canopy_store::feed`).
//!
//! Two logs, each with its own revision counter:
//! - **fleet** (deployments, edges, labels, workload controls, project deletion): written by
//!   every [`super::fleet_tx::FleetTx`]. This replica applies each change past its applied
//!   revision by re-reading the entity from the store and calling the same hub operation the
//!   writing replica called, with the same revision (so edge generations agree everywhere).
//!   Its own writes are applied at commit and move the applied revision, so they are never
//!   applied twice. A fleet write first catches the hub up under the locks
//!   ([`Feed::catch_up_locked`]), so its checks see every write committed before it.
//! - **live** (edge statuses and "last seen" flushed by the replica holding the agent, and
//!   token revocations): edge statuses are absorbed (`Hub::absorb_stored`), revocations clear
//!   the token cache. Own rows are skipped (the `origin` column).
//!
//! Wake-ups: `LISTEN canopy_fleet` (payload `fleet:R` / `live:R`), and a poll every
//! [`FeedConfig::poll`] that catches whatever a lost notification or a reconnecting listener
//! missed. A replica further behind than the oldest change kept reloads the whole fleet.
//! SQLite serves one process: no listener runs; the fleet catch-up in `FleetTx::open` only
//! finds something when a write's task was cancelled between commit and applying (then it
//! re-reads that change).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use canopy_proto::{WorkloadControl, WorkloadKind};
use canopy_store::feed::CHANGE_PAGE;
use canopy_store::{Backend, ChangeKind, LiveKind, LoggedChange, Notified, ProjectId};
use time::OffsetDateTime;

use super::{App, AppError};
use crate::hub::DeploymentRecord;
use crate::metrics::FeedMetrics;

/// How the feed runs (defaults: listen, poll every [`DEFAULT_FEED_POLL`]).
#[derive(Debug, Clone, Copy)]
pub struct FeedConfig {
    /// `LISTEN` for notifications (PostgreSQL). Off: changes arrive by the poll alone.
    pub listen: bool,
    /// How often the logs are read whatever the notifications say.
    pub poll: Duration,
}

/// The fallback poll: bounds how late a change whose notification was lost arrives.
pub const DEFAULT_FEED_POLL: Duration = Duration::from_secs(2);

/// How long change rows are kept. A replica stopped longer than this reloads the fleet when
/// it comes back (it would anyway: a start loads everything).
pub const FEED_RETENTION: Duration = Duration::from_secs(3600);

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            listen: true,
            poll: DEFAULT_FEED_POLL,
        }
    }
}

/// How the feed task follows the logs (see [`App::set_feed_mode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FeedMode {
    /// Notifications and the poll (the normal case).
    Follow = 0,
    /// Notifications are dropped: changes arrive by the poll alone (what a replica whose
    /// notifications are lost sees).
    PollOnly = 1,
    /// Nothing is read: the replica falls behind (a stalled replica). Its own fleet writes
    /// still catch up first.
    Paused = 2,
}

/// The feed's state in one replica.
pub(crate) struct Feed {
    config: FeedConfig,
    /// The fleet revision applied to the hub (moved under the hub's write lock only).
    applied: AtomicU64,
    /// The live revision applied.
    live_applied: AtomicU64,
    /// Serializes live catch-ups (the listener and tests).
    live: tokio::sync::Mutex<()>,
    /// Set while the listener is connected (for tests and start-up messages).
    listening: AtomicBool,
    /// [`FeedMode`] as a number (see [`App::set_feed_mode`]).
    mode: std::sync::atomic::AtomicU8,
    metrics: FeedMetrics,
}

impl Feed {
    pub(crate) fn new(config: FeedConfig, fleet: u64, live: u64, metrics: FeedMetrics) -> Feed {
        metrics.applied.set(fleet as f64);
        metrics.live_applied.set(live as f64);
        Feed {
            config,
            applied: AtomicU64::new(fleet),
            live_applied: AtomicU64::new(live),
            live: tokio::sync::Mutex::new(()),
            listening: AtomicBool::new(false),
            mode: std::sync::atomic::AtomicU8::new(FeedMode::Follow as u8),
            metrics,
        }
    }

    /// The fleet revision this replica's hub has applied.
    pub(crate) fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// The live revision this replica has applied.
    pub(crate) fn live_applied(&self) -> u64 {
        self.live_applied.load(Ordering::Acquire)
    }

    fn set_applied(&self, revision: u64) {
        self.applied.fetch_max(revision, Ordering::AcqRel);
        self.metrics.applied.set(self.applied() as f64);
    }

    /// A fleet transaction of this replica committed `revision` and applied it.
    pub(crate) fn applied_locally(&self, revision: u64) {
        self.set_applied(revision);
    }

    /// Applies every fleet change committed up to `committed` (and any later one already
    /// visible). The caller holds the hub's write lock.
    pub(crate) async fn catch_up_locked(&self, app: &App, committed: u64) -> Result<(), AppError> {
        if committed <= self.applied() {
            return Ok(());
        }
        self.catch_up_fleet(app).await
    }

    /// Takes the hub's write lock and applies every fleet change past the applied revision.
    pub(crate) async fn catch_up(&self, app: &App) -> Result<(), AppError> {
        let _writes = app.hub().lock_writes().await;
        if self.paused() {
            return Ok(());
        }
        self.catch_up_fleet(app).await
    }

    fn paused(&self) -> bool {
        self.mode.load(Ordering::Acquire) == FeedMode::Paused as u8
    }

    async fn catch_up_fleet(&self, app: &App) -> Result<(), AppError> {
        loop {
            let applied = self.applied();
            let page = app.store().fleet_changes_after(applied).await?;
            let Some(first) = page.rows.first() else {
                if page.current > applied {
                    // Revisions without rows: pruned (or written before migration 0007).
                    return self.reload(app).await;
                }
                return Ok(());
            };
            let whole = page.rows.len() < CHANGE_PAGE
                || page.rows.last().map(|c| c.revision) != Some(first.revision);
            if first.revision > applied + 1 || !whole {
                // A hole (pruned past us), or one revision bigger than a page.
                return self.reload(app).await;
            }
            let now = OffsetDateTime::now_utc();
            let mut i = 0;
            while i < page.rows.len() {
                let revision = page.rows[i].revision;
                let mut seen = BTreeSet::new();
                while i < page.rows.len() && page.rows[i].revision == revision {
                    let c = &page.rows[i];
                    if seen.insert((c.change.kind as u8, c.change.entity_id.clone())) {
                        self.apply(app, c, revision).await?;
                    }
                    if c.origin != app.store().origin() {
                        self.metrics.lag.record(seconds(now - c.commit_time));
                    }
                    i += 1;
                }
                self.set_applied(revision);
            }
        }
    }

    /// Applies one fleet change by re-reading its entity.
    async fn apply(&self, app: &App, c: &LoggedChange, revision: u64) -> Result<(), AppError> {
        let hub = app.hub();
        let store = app.store();
        let id = c.change.entity_id.as_str();
        match c.change.kind {
            ChangeKind::Deployment => match store.deployment_row(id).await? {
                Some(row) => {
                    let rec: DeploymentRecord = serde_json::from_str(&row.body)
                        .map_err(|e| AppError::Internal(format!("deployment {id} record: {e}")))?;
                    if hub.deployment(row.project_id, id).as_deref() != Some(&rec) {
                        hub.put_deployment(Arc::new(rec), revision);
                    }
                }
                None => hub.remove_deployment(id, revision),
            },
            ChangeKind::Edge => match store.edge_row(id).await? {
                Some(row) => match hub.edge(row.project_id, id) {
                    None => {
                        hub.add_edge(row.clone(), revision);
                        hub.absorb_stored(&row);
                    }
                    Some(view) if view.labels != row.labels => {
                        hub.set_labels(id, row.labels, revision);
                    }
                    Some(_) => {}
                },
                None => {
                    hub.remove_edge(id);
                    app.tunnels().fail_edge(id);
                }
            },
            ChangeKind::Controls => {
                for row in store.edge_controls(id).await? {
                    let Some(control) = control_of(&row) else {
                        continue;
                    };
                    if hub
                        .control(
                            id,
                            &row.deployment_id,
                            &row.app,
                            control.kind,
                            &row.workload,
                        )
                        .as_ref()
                        != Some(&control)
                    {
                        hub.set_control(id, control, revision);
                    }
                }
            }
            ChangeKind::Project => self.remove_project(app, c.change.project_id),
        }
        Ok(())
    }

    fn remove_project(&self, app: &App, project: ProjectId) {
        for edge in app.hub().edges(project) {
            app.tunnels().fail_edge(&edge.id);
        }
        app.hub().remove_project(project);
        app.forget_project(project);
        app.inner.tokens.clear();
    }

    /// Reloads the whole fleet from the store and applies the difference to the hub (the hub
    /// write lock is held): what a replica does when it fell behind the oldest change kept.
    async fn reload(&self, app: &App) -> Result<(), AppError> {
        self.metrics.reloads.increment(1);
        let snap = app.store().load_fleet().await?;
        tracing::warn!(
            from = self.applied(),
            to = snap.revision,
            "this replica fell behind the change feed's oldest kept change: reloading the fleet"
        );
        let hub = app.hub();
        let revision = snap.revision;
        let edges: HashMap<&str, &canopy_store::EdgeRow> =
            snap.edges.iter().map(|e| (e.id.as_str(), e)).collect();
        let deployments: HashMap<&str, &canopy_store::DeploymentRow> = snap
            .deployments
            .iter()
            .map(|d| (d.id.as_str(), d))
            .collect();
        for (id, project) in hub.deployment_ids() {
            if !deployments.contains_key(id.as_str()) {
                hub.remove_deployment(&id, revision);
                let _ = project;
            }
        }
        for (id, _) in hub.edge_ids() {
            if !edges.contains_key(id.as_str()) {
                hub.remove_edge(&id);
                app.tunnels().fail_edge(&id);
            }
        }
        for row in &snap.edges {
            match hub.edge(row.project_id, &row.id) {
                None => hub.add_edge(row.clone(), revision),
                Some(view) if view.labels != row.labels => {
                    hub.set_labels(&row.id, row.labels.clone(), revision)
                }
                Some(_) => {}
            }
            hub.absorb_stored(row);
        }
        for row in &snap.deployments {
            let rec: DeploymentRecord = serde_json::from_str(&row.body)
                .map_err(|e| AppError::Internal(format!("deployment {} record: {e}", row.id)))?;
            if hub.deployment(row.project_id, &row.id).as_deref() != Some(&rec) {
                hub.put_deployment(Arc::new(rec), revision);
            }
        }
        for row in &snap.controls {
            if let Some(control) = control_of(row)
                && hub
                    .control(
                        &row.edge_id,
                        &row.deployment_id,
                        &row.app,
                        control.kind,
                        &row.workload,
                    )
                    .as_ref()
                    != Some(&control)
            {
                hub.set_control(&row.edge_id, control, revision);
            }
        }
        app.inner.tokens.clear();
        self.applied.store(revision, Ordering::Release);
        self.metrics.applied.set(revision as f64);
        Ok(())
    }

    /// Applies every live change past the applied live revision.
    pub(crate) async fn catch_up_live(&self, app: &App) -> Result<(), AppError> {
        let _one = self.live.lock().await;
        if self.paused() {
            return Ok(());
        }
        loop {
            let applied = self.live_applied();
            let page = app.store().live_changes_after(applied).await?;
            let Some(first) = page.rows.first() else {
                if page.current > applied {
                    self.live_reload(app, page.current).await?;
                }
                return Ok(());
            };
            let whole = page.rows.len() < CHANGE_PAGE
                || page.rows.last().map(|c| c.revision) != Some(first.revision);
            if first.revision > applied + 1 || !whole {
                let current = page.current.max(page.rows.last().map_or(0, |c| c.revision));
                self.live_reload(app, current).await?;
                return Ok(());
            }
            let now = OffsetDateTime::now_utc();
            let mut edges: Vec<String> = Vec::new();
            let mut auth = false;
            let mut last = applied;
            for c in &page.rows {
                last = c.revision;
                if c.origin == app.store().origin() {
                    continue;
                }
                self.metrics.live_lag.record(seconds(now - c.commit_time));
                match c.kind {
                    LiveKind::Status => edges.push(c.entity_id.clone()),
                    LiveKind::Auth => auth = true,
                }
            }
            if auth {
                app.inner.tokens.clear();
            }
            edges.sort();
            edges.dedup();
            for row in app.store().edge_rows(&edges).await? {
                app.hub().absorb_stored(&row);
            }
            self.live_applied.fetch_max(last, Ordering::AcqRel);
            self.metrics.live_applied.set(self.live_applied() as f64);
        }
    }

    /// Too far behind on the live log: every edge's stored status is read again and the
    /// token cache dropped.
    async fn live_reload(&self, app: &App, current: u64) -> Result<(), AppError> {
        let snap = app.store().load_fleet().await?;
        for row in &snap.edges {
            app.hub().absorb_stored(row);
        }
        app.inner.tokens.clear();
        self.live_applied.fetch_max(current, Ordering::AcqRel);
        self.metrics.live_applied.set(self.live_applied() as f64);
        Ok(())
    }
}

fn seconds(d: time::Duration) -> f64 {
    d.as_seconds_f64().max(0.0)
}

fn control_of(row: &canopy_store::WorkloadControlRow) -> Option<WorkloadControl> {
    let kind = match row.kind.as_str() {
        "vm" => WorkloadKind::Vm,
        "pod" => WorkloadKind::Pod,
        _ => return None,
    };
    Some(WorkloadControl {
        deployment_id: row.deployment_id.clone(),
        app: row.app.clone(),
        kind,
        workload: row.workload.clone(),
        running: row.running,
        restarts: row.restarts,
    })
}

impl App {
    /// Starts this replica's change-feed task (PostgreSQL; `None` on SQLite, which serves one
    /// process). It ends when the server begins shutting down.
    pub fn start_feed(&self) -> Option<tokio::task::JoinHandle<()>> {
        if self.store().backend() != Backend::Postgres {
            return None;
        }
        Some(tokio::spawn(follow(self.clone())))
    }

    /// The fleet revision this replica's hub has applied (tests, diagnostics).
    pub fn feed_applied(&self) -> u64 {
        self.inner.feed.applied()
    }

    /// The live (status, revocation) revision this replica has applied.
    pub fn feed_live_applied(&self) -> u64 {
        self.inner.feed.live_applied()
    }

    /// Changes how the feed task follows (tests and diagnostics: simulating lost
    /// notifications or a stalled replica).
    /// Returns once no catch-up started before is still running.
    pub async fn set_feed_mode(&self, mode: FeedMode) {
        let _writes = self.hub().lock_writes().await;
        let _live = self.inner.feed.live.lock().await;
        self.inner.feed.mode.store(mode as u8, Ordering::Release);
    }

    /// Whether the feed's `LISTEN` connection is up.
    pub fn feed_listening(&self) -> bool {
        self.inner.feed.listening.load(Ordering::Acquire)
    }

    /// Deletes change rows past [`FEED_RETENTION`] (housekeeping).
    pub async fn prune_feed(&self) -> Result<u64, AppError> {
        Ok(self
            .store()
            .prune_changes(OffsetDateTime::now_utc() - FEED_RETENTION)
            .await?)
    }

    /// Drops this replica's token cache and tells the others to drop theirs (a token revoked,
    /// a user deleted, its roles or password changed). Telling them runs after the change
    /// committed; failing to is logged, not returned: the change stands, and other replicas'
    /// caches expire within their own TTL (5 s) anyway.
    pub(crate) async fn drop_cached_tokens(&self) {
        self.inner.tokens.clear();
        if let Err(e) = self
            .store()
            .publish_live(LiveKind::Auth, &[String::new()])
            .await
        {
            tracing::warn!(error = %e, "could not tell other replicas about a revocation; their token caches expire within 5 s");
        }
    }
}

/// The feed task: wakes on a notification or the poll, then reads both logs.
async fn follow(app: App) {
    let feed = &app.inner.feed;
    let mut listener: Option<canopy_store::ChangeListener> = None;
    let mut poll = tokio::time::interval(feed.config.poll);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let shutdown = app.shutting_down();
    tokio::pin!(shutdown);
    loop {
        if listener.is_none() && feed.config.listen {
            match app.store().listen().await {
                Ok(l) => {
                    listener = l;
                    feed.listening.store(listener.is_some(), Ordering::Release);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "change feed: cannot LISTEN; polling every {:?}", feed.config.poll)
                }
            }
        }
        let (mut fleet, mut live) = tokio::select! {
            _ = &mut shutdown => return,
            _ = poll.tick() => (true, true),
            n = recv(&mut listener) => match n {
                Ok(Notified::Fleet(r)) => (r > feed.applied(), false),
                Ok(Notified::Live(r)) => (false, r > feed.live_applied()),
                Ok(Notified::Other) => (true, true),
                Err(e) => {
                    tracing::warn!(error = %e, "change feed: the LISTEN connection failed; reconnecting");
                    listener = None;
                    feed.listening.store(false, Ordering::Release);
                    (true, true)
                }
            },
        };
        // Read after waking: a change of mode counts from the next wake-up on.
        let mode = match feed.mode.load(Ordering::Acquire) {
            1 => FeedMode::PollOnly,
            2 => FeedMode::Paused,
            _ => FeedMode::Follow,
        };
        match mode {
            FeedMode::Follow => {}
            // A notification woke us: ignore it (the poll still reads).
            FeedMode::PollOnly if !(fleet && live) => (fleet, live) = (false, false),
            FeedMode::PollOnly => {}
            FeedMode::Paused => (fleet, live) = (false, false),
        }
        if fleet && let Err(e) = feed.catch_up(&app).await {
            tracing::warn!(error = %e, "change feed: could not apply fleet changes; retrying");
        }
        if live && let Err(e) = feed.catch_up_live(&app).await {
            tracing::warn!(error = %e, "change feed: could not apply status changes; retrying");
        }
    }
}

async fn recv(
    listener: &mut Option<canopy_store::ChangeListener>,
) -> Result<Notified, canopy_store::StoreError> {
    match listener {
        Some(l) => l.recv().await,
        None => std::future::pending().await,
    }
}
