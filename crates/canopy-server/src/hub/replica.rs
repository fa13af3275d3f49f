//! What the hub takes from other replicas (see `app::feed`): an edge's stored status, agent
//! and "last seen", written by the replica that holds the agent's connection.
//!
//! Why separate from [`Hub::report`]: a stored status is not a report. It is not written back
//! (no dirty flags: the holder wrote it), it never moves a generation, and it is taken only
//! when newer than what this replica has (its `seq` above the last one seen here), so a late
//! flush of the replica an agent just left cannot undo a report taken here since.

use canopy_proto::{AgentInfo, StatusReport};
use canopy_store::EdgeRow;

use super::Hub;

impl Hub {
    /// Takes an edge's stored liveness and status (see the module docs). Returns whether
    /// anything changed.
    pub fn absorb_stored(&self, row: &EdgeRow) -> bool {
        let mut st = self.lock();
        let Some(e) = st.edges.get_mut(&row.id) else {
            return false;
        };
        let mut changed = false;
        if let Some(seen) = row.last_seen
            && e.last_seen.is_none_or(|s| s < seen)
        {
            e.last_seen = Some(seen);
            // Written by its holder: this replica need not write it again.
            e.seen_persisted = Some(e.seen_persisted.map_or(seen, |p| p.max(seen)));
        }
        if let Some(text) = &row.last_status
            && let Ok(mut report) = serde_json::from_str::<StatusReport>(text)
            && report.bound().is_ok()
            && report.seq > e.last_seq
        {
            let mut statuses: std::collections::HashMap<_, std::collections::BTreeMap<_, _>> =
                std::collections::HashMap::new();
            for a in report.apps {
                statuses
                    .entry(a.deployment_id.clone())
                    .or_default()
                    .insert(a.app.clone(), a);
            }
            e.last_seq = report.seq;
            e.applied_generation = report.generation.0;
            if statuses != e.statuses {
                e.statuses = statuses;
                changed = true;
            }
        }
        if !e.agent_dirty
            && let Ok(agent) = serde_json::from_str::<AgentInfo>(&row.agent)
            && agent != e.agent
        {
            let mut agent = agent;
            if agent.bound("agent").is_ok() {
                e.agent = agent;
                changed = true;
            }
        }
        let project = e.row.project_id;
        drop(st);
        if changed {
            self.changed(project);
        }
        changed
    }
}

impl Hub {
    /// Every edge held, with its project (a reload compares them with the store's).
    pub fn edge_ids(&self) -> Vec<(String, canopy_store::ProjectId)> {
        let st = self.lock();
        st.edges
            .values()
            .map(|e| (e.row.id.clone(), e.row.project_id))
            .collect()
    }

    /// Every deployment held, with its project.
    pub fn deployment_ids(&self) -> Vec<(String, canopy_store::ProjectId)> {
        let st = self.lock();
        st.deployments
            .values()
            .map(|d| (d.rec.id.clone(), d.rec.project_id))
            .collect()
    }
}
