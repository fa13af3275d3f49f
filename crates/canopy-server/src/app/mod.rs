//! The app layer: every catalog operation and every business rule, over the store.
//!
//! Each operation receives a [`Ctx`] naming the project (already resolved) first; authorization
//! will be checked here too once authentication exists. Operations that change several entities
//! run in one store transaction, and events are published only after it commits.

mod catalog;
mod error;
mod upload;

use std::sync::Arc;

use canopy_core::names::ProjectName;
use canopy_store::{Project, Store};

pub use catalog::{ChangeSummary, PackageExport};
pub use error::AppError;
pub use upload::{MAX_UPLOAD_FILES, MAX_UPLOAD_TOTAL_BYTES, UploadOutcome};

use crate::events::EventBus;

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
    /// Flips to true when the server begins shutting down (long-lived streams end on it).
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl App {
    /// Builds the app over an opened store and makes sure the default project exists.
    pub async fn new(store: Store) -> Result<App, AppError> {
        let default = ProjectName::try_from(DEFAULT_PROJECT).expect("valid default project name");
        store.ensure_project(&default).await?;
        Ok(App {
            inner: Arc::new(Inner {
                store,
                events: EventBus::default(),
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
