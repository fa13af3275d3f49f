//! The agent protocol's hot path: the desired-state long-poll (one `watch` receiver per waiting
//! edge, no timer or thread) and status intake (a map update; only changes reach the store).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use canopy_proto::{
    AppStatus, DeploymentInstance, DesiredState, Generation, StatusAck, StatusReport,
};

use super::{EdgeEntry, Hub, HubError, State_, now};

impl Hub {
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
            if wait.is_zero() {
                // Nothing newer and no wait asked (an agent checking it is connected again):
                // answered now, not at the timer's next tick.
                return Ok(None);
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
        if changed {
            st.dirty.push(edge_id.to_string());
        }
        drop(st);
        if changed {
            self.changed(project);
        }
        Ok(ack)
    }

    /// Records the delivery of an edge's pending change (its desired state is being handed over).
    fn delivered(&self, e: &mut EdgeEntry) {
        if let Some(at) = e.changed_at.take() {
            self.metrics.delivery.record(at.elapsed());
        }
    }
}

impl State_ {
    /// The desired state of an edge right now.
    pub(super) fn build(&self, edge_id: &str) -> DesiredState {
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
