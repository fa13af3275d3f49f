//! Encoding between the hub and the store: rebuilding the hub from the fleet snapshot at start,
//! a deployment record's row, and the batched "last seen" and status writes (at most one per
//! edge per minute unless something changed), so heartbeats do not write the database.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use canopy_proto::{AgentInfo, Generation, StatusReport, WorkloadControl, WorkloadKind};
use canopy_store::{DeploymentRow, EdgeSeen, FleetSnapshot};

use super::{
    DeploymentRecord, Hub, HubConfig, HubMetrics, State_, control_key, new_edge_entry, now,
};

/// How often an unchanged "last seen" is written to the store, at most (see
/// [`HubConfig::seen_persist_every`]).
const SEEN_PERSIST_EVERY: Duration = Duration::from_secs(60);

impl HubConfig {
    /// How often an unchanged "last seen" is written: every [`SEEN_PERSIST_EVERY`] (60 s), or
    /// `edge_timeout - 2 × heartbeat` when that is shorter. Replicas not holding an agent judge
    /// its liveness by the stored value (docs/OPERATIONS.md, "Replicas"), which is then at most
    /// this plus one heartbeat (plus the flush and the feed, well under a second) old: under
    /// the timeout by a heartbeat, so the edge never flaps to UNKNOWN there. Defaults: 60 s
    /// against 120 s with 30 s heartbeats.
    pub fn seen_persist_every(&self) -> Duration {
        SEEN_PERSIST_EVERY.min(
            self.edge_timeout
                .saturating_sub(self.heartbeat * 2)
                .max(Duration::from_millis(100)),
        )
    }
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

    /// Liveness and status changes not yet written to the store (at most one "last seen" per
    /// edge per [`HubConfig::seen_persist_every`] unless its status or agent changed).
    ///
    /// Changed statuses and agents are found through the hub's list of changed edges. Walking
    /// every edge for liveness (a held long-poll is the edge being seen now) happens only every
    /// sixth of the persist interval (10 s by default), not at every drain: at 10,000 edges
    /// the walk was the largest single cost of an idle server, and on PostgreSQL drains run
    /// every 400 ms. An unchanged "last seen" is written once it is older than the persist
    /// interval less that walk interval, so what is stored is never older than before.
    pub fn drain_seen(&self) -> Vec<EdgeSeen> {
        let persist_every = self.cfg.seen_persist_every();
        let walk_every = persist_every / 6;
        let stale_after = persist_every - walk_every;
        let mut guard = self.lock();
        let st = &mut *guard;
        let now = now();
        let mut out = Vec::new();
        let walk = st
            .liveness_walked
            .is_none_or(|at| now - at >= walk_every || at > now);
        if walk {
            st.liveness_walked = Some(now);
            st.dirty.clear();
            for e in st.edges.values_mut() {
                // A held long-poll is the edge being seen now: an idle agent's long-polls last
                // minutes (docs/AGENT-PROTOCOL.md), longer than the edge timeout.
                if e.polls.load(Ordering::Relaxed) > 0 {
                    e.last_seen = Some(now);
                }
                drain_one(e, now, Some(stale_after), &mut out);
            }
        } else {
            for id in std::mem::take(&mut st.dirty) {
                if let Some(e) = st.edges.get_mut(&id) {
                    drain_one(e, now, None, &mut out);
                }
            }
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
                st.dirty.push(s.edge_id.clone());
            }
        }
    }
}

/// Takes what of edge `e` is to be written: its status or agent when changed, and its "last
/// seen" when either is, or (with `stale_after`) when the stored one is that old.
fn drain_one(
    e: &mut super::EdgeEntry,
    now: time::OffsetDateTime,
    stale_after: Option<Duration>,
    out: &mut Vec<EdgeSeen>,
) {
    let Some(seen) = e.last_seen else { return };
    let stale = stale_after.is_some_and(|after| match e.seen_persisted {
        None => true,
        Some(p) => (seen - p) >= after,
    });
    if !(stale || e.status_dirty || e.agent_dirty) {
        return;
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
