//! The label index and targeting: fleet mutations (edges enrolled, relabelled or removed,
//! deployments put or removed, workload controls) applied to the hub after the store committed
//! them, waking only the edges whose desired state changed. Costs O(edges targeted), not
//! O(fleet), through the per-project `key=value` index.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use canopy_deploy::target::{Targeting, set_matches};
use canopy_proto::WorkloadControl;
use canopy_store::{EdgeRow, ProjectId};

use super::record::app_ids;
use super::{
    DeploymentEntry, DeploymentRecord, EdgeEntry, Hub, State_, bump, control_key, new_edge_entry,
};

impl Hub {
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

    /// Sets a workload control (already committed to the store) and wakes the edge with
    /// `revision`.
    pub fn set_control(&self, edge_id: &str, control: WorkloadControl, revision: u64) {
        let mut guard = self.lock();
        let st = &mut *guard;
        if let Some(e) = st.edges.get_mut(edge_id) {
            e.controls.insert(control_key(&control), control);
            bump(e, revision, &mut st.to_wake);
        }
    }

    /// Removes a deployment; the edges holding it are woken with `revision`.
    pub fn remove_deployment(&self, id: &str, revision: u64) {
        let start = std::time::Instant::now();
        let mut guard = self.lock();
        let st = &mut *guard;
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
                woken += usize::from(bump(e, revision, &mut st.to_wake));
                st.dirty.push(edge.clone());
            }
        }
        drop(guard);
        self.metrics.fanout.record(start.elapsed());
        self.metrics.fanout_edges.record(woken as f64);
        self.changed(de.rec.project_id);
    }
}

impl State_ {
    pub(super) fn insert_edge(&mut self, e: EdgeEntry) {
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

    pub(super) fn resolve(&self, project: ProjectId, id_or_name: &str) -> Option<String> {
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
    pub(super) fn put_deployment(
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
                woken += usize::from(bump(e, revision, &mut self.to_wake));
            }
        }
        for (edge, apps) in &new_edges {
            if let Some(e) = self.edges.get_mut(edge) {
                let before = e.deployments.insert(id.clone(), apps.clone());
                if changed || before.as_ref() != Some(apps) {
                    woken += usize::from(bump(e, revision, &mut self.to_wake));
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
            bump(e, revision, &mut self.to_wake);
        }
    }
}
