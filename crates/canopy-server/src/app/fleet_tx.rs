//! The fleet transaction: the one path of every fleet write (deployments, edges, labels,
//! workload controls, project deletion).
//!
//! Why a type: a fleet write must (1) serialize with every other fleet write of this process
//! (the hub's write lock) and of every replica (the store's `fleet_revision` row lock), (2)
//! check its rules against a hub that has applied everything committed before it, (3) commit
//! its rows together with a new fleet revision and the change-log rows other replicas follow,
//! and only then (4) apply the same change to the local hub. Six call sites used to repeat
//! steps 1, 3 and 4 by convention (project deletion skipped the lock); [`FleetTx`] does them
//! in order, and the caller only writes rows and records typed [`HubOp`]s.
//!
//! Lock order, always: hub write lock → project row (`Store::write`) → `fleet_revision` row.
//! Catching up (step 2) reads through other pool connections while these are held; nothing
//! that holds the `fleet_revision` row waits for a project row, so replicas cannot deadlock.

use std::collections::BTreeMap;
use std::sync::Arc;

use canopy_proto::WorkloadControl;
use canopy_store::{CatalogTx, ChangeKind, EdgeRow, FleetChange, ProjectId};

use super::{App, AppError};
use crate::hub::DeploymentRecord;

/// A change to apply to the hub once the transaction committed.
#[derive(Debug, Clone)]
pub(crate) enum HubOp {
    /// A deployment created or updated.
    PutDeployment(Arc<DeploymentRecord>),
    /// A deployment deleted.
    RemoveDeployment(String),
    /// An edge enrolled.
    AddEdge(EdgeRow),
    /// An edge's labels replaced.
    SetLabels {
        edge: String,
        labels: BTreeMap<String, String>,
    },
    /// An edge removed.
    RemoveEdge(String),
    /// A workload control set on an edge.
    SetControl {
        edge: String,
        control: WorkloadControl,
    },
    /// The transaction's project deleted with everything in it.
    RemoveProject,
}

/// An open fleet write (see the module docs). Dropped without [`FleetTx::commit`]: rolled
/// back, nothing applied. Derefs to the store transaction for the rows.
pub(crate) struct FleetTx<'a> {
    app: &'a App,
    project: ProjectId,
    tx: CatalogTx,
    ops: Vec<HubOp>,
    // Last: released after the transaction is dropped.
    _writes: tokio::sync::MutexGuard<'a, ()>,
}

impl<'a> FleetTx<'a> {
    /// Takes the locks (see the module docs), opens the store transaction of `project` and
    /// catches the hub up with every fleet change committed before it.
    pub(crate) async fn open(app: &'a App, project: ProjectId) -> Result<FleetTx<'a>, AppError> {
        let writes = app.hub().lock_writes().await;
        let mut tx = app.store().write(project).await?;
        let committed = tx.lock_fleet_revision().await?;
        app.inner.feed.catch_up_locked(app, committed).await?;
        Ok(FleetTx {
            app,
            project,
            tx,
            ops: Vec::new(),
            _writes: writes,
        })
    }

    /// Records a hub change to apply after commit (the caller wrote its rows).
    pub(crate) fn record(&mut self, op: HubOp) {
        self.ops.push(op);
    }

    /// Commits: a new fleet revision with one change row per entity touched, the rows, then
    /// the hub ops applied locally with that revision. Returns the revision.
    pub(crate) async fn commit(self) -> Result<u64, AppError> {
        let FleetTx {
            app,
            project,
            mut tx,
            ops,
            _writes,
        } = self;
        let mut changes: Vec<FleetChange> = Vec::with_capacity(ops.len());
        for op in &ops {
            let (kind, entity_id) = match op {
                HubOp::PutDeployment(r) => (ChangeKind::Deployment, r.id.clone()),
                HubOp::RemoveDeployment(id) => (ChangeKind::Deployment, id.clone()),
                HubOp::AddEdge(row) => (ChangeKind::Edge, row.id.clone()),
                HubOp::SetLabels { edge, .. } | HubOp::RemoveEdge(edge) => {
                    (ChangeKind::Edge, edge.clone())
                }
                HubOp::SetControl { edge, .. } => (ChangeKind::Controls, edge.clone()),
                HubOp::RemoveProject => (ChangeKind::Project, project.to_string()),
            };
            let c = FleetChange {
                kind,
                project_id: project,
                entity_id,
            };
            if !changes.contains(&c) {
                changes.push(c);
            }
        }
        let revision = tx.log_fleet_changes(&changes).await?;
        tx.commit().await?;
        let hub = app.hub();
        for op in ops {
            match op {
                HubOp::PutDeployment(rec) => hub.put_deployment(rec, revision),
                HubOp::RemoveDeployment(id) => hub.remove_deployment(&id, revision),
                HubOp::AddEdge(row) => hub.add_edge(row, revision),
                HubOp::SetLabels { edge, labels } => hub.set_labels(&edge, labels, revision),
                HubOp::RemoveEdge(edge) => {
                    hub.remove_edge(&edge);
                    app.tunnels().fail_edge(&edge);
                }
                HubOp::SetControl { edge, control } => hub.set_control(&edge, control, revision),
                HubOp::RemoveProject => {
                    for edge in hub.edges(project) {
                        app.tunnels().fail_edge(&edge.id);
                    }
                    hub.remove_project(project);
                    app.forget_project(project);
                }
            }
        }
        app.inner.feed.applied_locally(revision);
        Ok(revision)
    }
}

impl std::ops::Deref for FleetTx<'_> {
    type Target = CatalogTx;
    fn deref(&self) -> &CatalogTx {
        &self.tx
    }
}

impl std::ops::DerefMut for FleetTx<'_> {
    fn deref_mut(&mut self) -> &mut CatalogTx {
        &mut self.tx
    }
}
