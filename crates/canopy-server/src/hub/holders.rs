//! The holder index: the edges holding a deployment in edge-name order with workload counts,
//! built once per change of its edges so the deployment-wide workload list pages in
//! O(log N + page) rather than O(N).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};

use canopy_proto::AppInstance;
use canopy_store::ProjectId;

use super::{DeploymentRecord, Hub};

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

impl Hub {
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
}
