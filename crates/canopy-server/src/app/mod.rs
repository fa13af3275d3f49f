//! The app layer: every catalog operation and every business rule, over the store.
//!
//! Each operation receives a [`Ctx`] naming the project (already resolved) first; authorization
//! will be checked here too once authentication exists. Operations that change several entities
//! run in one store transaction, and events are published only after it commits.

mod catalog;
mod deployments;
mod edges;
mod error;
mod upload;

use std::sync::Arc;

use canopy_core::names::ProjectName;
use canopy_store::{Project, Store};

pub use catalog::{ChangeSummary, PackageExport};
pub use deployments::DeploymentClusters;
pub use edges::{
    AgentCtx, CreateEnrollmentToken, CreatedEnrollmentToken, Edge, EnrollmentToken, check_protocol,
};
pub use error::AppError;
pub use upload::{MAX_UPLOAD_FILES, MAX_UPLOAD_TOTAL_BYTES, UploadOutcome};

use crate::events::EventBus;
use crate::hub::{Hub, HubConfig};

/// The name of the project that exists from the first start.
pub const DEFAULT_PROJECT: &str = "default";

/// Who is asking, about which project.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub project: Project,
    /// Correlates log lines of one request.
    pub request_id: String,
}

/// Shared application state; cheap to clone.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    events: EventBus,
    hub: Hub,
    /// Project names by id, for the agent long-poll path (projects are never renamed).
    project_names: std::sync::RwLock<std::collections::HashMap<canopy_store::ProjectId, String>>,
    /// Flips to true when the server begins shutting down (long-lived streams end on it).
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl App {
    /// Builds the app over an opened store and makes sure the default project exists.
    pub async fn new(store: Store) -> Result<App, AppError> {
        App::with_config(store, HubConfig::default()).await
    }

    /// Like [`App::new`], with the fleet's timing (heartbeat, edge timeout, grace periods).
    pub async fn with_config(store: Store, fleet: HubConfig) -> Result<App, AppError> {
        let default = ProjectName::try_from(DEFAULT_PROJECT).expect("valid default project name");
        store.ensure_project(&default).await?;
        let snapshot = store.load_fleet().await?;
        let hub = Hub::load(fleet, snapshot).map_err(AppError::Internal)?;
        Ok(App {
            inner: Arc::new(Inner {
                store,
                events: EventBus::default(),
                hub,
                project_names: Default::default(),
                shutdown: tokio::sync::watch::channel(false).0,
            }),
        })
    }

    /// The store underneath (for lifecycle management, not for handlers).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Tells long-lived requests (event streams) to finish: graceful shutdown waits for them.
    pub fn begin_shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Resolves once [`App::begin_shutdown`] has been called.
    pub fn shutting_down(&self) -> impl std::future::Future<Output = ()> + Send + use<> {
        let mut rx = self.inner.shutdown.subscribe();
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
    }

    /// The fleet hub (edges, deployments, long-polls).
    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// Writes pending edge liveness and status changes to the store (called periodically and
    /// at shutdown).
    pub async fn flush_fleet(&self) {
        let batch = self.hub().drain_seen();
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.store().record_edges_seen(&batch).await {
            tracing::warn!(error = %e, edges = batch.len(), "could not record edge liveness; retrying");
            self.hub().undrain_seen(&batch);
        }
    }

    /// The name of a project by id.
    pub(crate) async fn project_name(
        &self,
        id: canopy_store::ProjectId,
    ) -> Result<String, AppError> {
        if let Some(name) = self
            .inner
            .project_names
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            return Ok(name.clone());
        }
        let projects = self.store().list_projects().await?;
        let mut cache = self
            .inner
            .project_names
            .write()
            .unwrap_or_else(|p| p.into_inner());
        for p in &projects {
            cache.insert(p.id, p.name.as_str().to_string());
        }
        cache
            .get(&id)
            .cloned()
            .ok_or_else(|| AppError::NotFound(format!("project {id} not found")))
    }

    /// The catalog event bus.
    pub fn events(&self) -> &EventBus {
        &self.inner.events
    }

    /// Resolves a project by name for a request; unknown projects are 404.
    pub async fn context(&self, project: &str, request_id: String) -> Result<Ctx, AppError> {
        let project = self
            .inner
            .store
            .project_by_name(project)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("project {project} not found")))?;
        Ok(Ctx {
            project,
            request_id,
        })
    }
}
