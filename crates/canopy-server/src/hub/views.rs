//! Read views of the hub for the API: edges, deployments, per-edge statuses and the folded
//! deployment status (reused while nothing changed, see [`FOLD_REUSE`](super::FOLD_REUSE)).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use canopy_deploy::model::{Cluster, DeploymentStatus};
use canopy_deploy::status::{EdgeAppReport, EdgeInput, FoldInput};
use canopy_proto::{AppStatus, WorkloadControl, WorkloadKind};
use canopy_store::ProjectId;
use time::OffsetDateTime;

use super::record::app_ids;
use super::{
    DeploymentEntry, DeploymentRecord, EdgeEntry, EdgeView, FOLD_REUSE, Folded, Hub, State_, age,
    now,
};

impl Hub {
    /// The edge a credential hash belongs to, with its project.
    pub fn edge_by_credential(&self, hash: &str) -> Option<(String, ProjectId)> {
        let st = self.lock();
        let id = st.by_credential.get(hash)?;
        let e = st.edges.get(id)?;
        Some((id.clone(), e.row.project_id))
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

    pub(super) fn alive(&self, e: &EdgeEntry, now: OffsetDateTime) -> bool {
        e.polls.load(Ordering::Relaxed) > 0
            || age(e.last_seen, now).is_some_and(|a| a < self.cfg.edge_timeout)
    }

    pub(super) fn view(&self, e: &EdgeEntry, now: OffsetDateTime) -> EdgeView {
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

    /// Whether a deployment's state counts as "in progress" right now.
    pub fn in_progress(&self, id: &str) -> bool {
        let st = self.lock();
        st.deployments
            .get(id)
            .is_some_and(|d| d.in_progress.load(Ordering::Relaxed))
    }
}
