//! The app layer: every catalog operation and every business rule, over the store.
//!
//! Each operation receives a [`Ctx`] naming the project (already resolved) first; authorization
//! will be checked here too once authentication exists. Operations that change several entities
//! run in one store transaction, and events are published only after it commits.

mod audit;
mod auth;
mod catalog;
mod charts;
// Web console sign-in through the OIDC provider (web-oidc).
mod console_oidc;
mod deployments;
mod edges;
mod error;
mod feed;
mod fleet_tx;
mod helm;
mod identity;
mod login_guard;
mod policy;
mod resources;
mod spool;
mod tenancy;
mod tunnels;
mod upload;

use std::sync::Arc;

use canopy_core::names::ProjectName;
use canopy_store::{Project, Store};

pub use audit::{AUDIT_DEFAULT_PAGE_SIZE, AUDIT_MAX_PAGE_SIZE, AuditQuery, AuditRecord};
pub use auth::{ADMIN_ROLE, Access, M2M_ROLE, Principal, PrincipalKind};
pub use catalog::{AppParameters, ChangeSummary, DeployParameters, PackageExport};
pub use charts::{ChartImport, ChartLimits, ChartList, ChartQuery, ImportOutcome, MAX_CHART_PAGE};
pub use console_oidc::{ConsoleOidc, MAX_EXCHANGES, MAX_SESSIONS, OidcSession};
pub use deployments::{
    DEPLOYING_GRACE, DeploymentClusters, DeploymentEdge, DeploymentEdgeQuery, DeploymentEdges,
    DeploymentsOverview, is_problem,
};
pub use edges::{
    AgentCtx, CreateEnrollmentToken, CreatedEnrollmentToken, Edge, EnrollmentToken, check_protocol,
};
pub use error::AppError;
pub use feed::{DEFAULT_FEED_POLL, FEED_RETENTION, FeedConfig, FeedMode};
pub use helm::HelmConfig;
pub use identity::{
    ADMIN_TOKEN_FILE, AdminTokenReset, ApiToken, AuthConfig, BOOTSTRAP_USER, IssuedToken, User,
    WhoAmI, reset_admin_token,
};
pub use login_guard::LoginLimits;
pub use resources::{
    AppEndpoint, AppWorkload, DeploymentWorkload, VmAction, WorkloadRef, pod_name, workload_id,
};
pub(crate) use spool::spool_io_error;
pub use spool::{AsyncSpoolWriter, Spool, SpoolError, SpoolFile, SpoolWriter};
pub use tenancy::{DEFAULT_ORG, TenancyConfig, TenancyObject, TenancyStatus, put_message};
pub use tunnels::{AgentClaim, DEFAULT_LOG_TAIL, MAX_LOG_TAIL, OpenTunnel, TunnelKind};
pub use upload::{
    MAX_UPLOAD_FILES, MAX_UPLOAD_TOTAL_BYTES, SpooledUpload, UploadLimits, UploadOutcome,
    reap_upload_sessions,
};

use crate::events::EventBus;
use crate::hub::{Hub, HubConfig};

/// The name of the project that exists from the first start.
pub const DEFAULT_PROJECT: &str = "default";

/// [`App::flush_interval`] on PostgreSQL (replicas).
pub const FLUSH_REPLICAS: std::time::Duration = std::time::Duration::from_millis(400);
/// [`App::flush_interval`] on SQLite (one process).
pub const FLUSH_SINGLE: std::time::Duration = std::time::Duration::from_secs(5);

/// Who is asking, about which project. Holding one means the caller may know the project
/// exists; each operation still checks the access it needs with [`Ctx::require`].
#[derive(Debug, Clone)]
pub struct Ctx {
    pub project: Project,
    pub principal: Arc<Principal>,
    /// Correlates log lines of one request.
    pub request_id: String,
}

impl Ctx {
    /// Refuses with 403 unless the caller has `access` on this project.
    pub fn require(&self, access: Access) -> Result<(), AppError> {
        self.principal.require(&self.project, access)
    }
}

/// Shared application state; cheap to clone.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

/// Everything the app layer is configured with.
#[derive(Debug, Clone, Default)]
pub struct AppConfig {
    /// Fleet timing: heartbeat, edge timeout, grace periods.
    pub fleet: HubConfig,
    /// How callers authenticate.
    pub auth: AuthConfig,
    /// What new projects get.
    pub tenancy: TenancyConfig,
    /// The server serves HTTPS (addresses it hands out use `https`/`wss`).
    pub tls: bool,
    /// The URL users reach the server at, when set (see `ServerConfig::public_url`).
    pub public_url: Option<String>,
    /// The certificate fingerprint (`sha256:...`) agents must pin to reach this server, when
    /// its certificate is self-signed (no CA vouches for it); `None` otherwise.
    pub server_pin: Option<String>,
    /// What uploads may cost: spool, parallelism, session quotas.
    pub uploads: UploadLimits,
    /// How Helm-chart applications are fetched and rendered.
    pub helm: HelmConfig,
    /// What chart imports and listings may cost: cache, parallelism, time.
    pub charts: ChartLimits,
    /// Where `/metrics` values are recorded (disabled, the default: nothing is).
    pub metrics: canopy_metrics::Registry,
    /// How this replica follows the others (PostgreSQL; see [`App::start_feed`]).
    pub feed: FeedConfig,
}

struct Inner {
    store: Store,
    auth: AuthConfig,
    tenancy: TenancyConfig,
    tls: bool,
    public_url: Option<String>,
    server_pin: Option<String>,
    /// Recent token lookups (cleared whenever access may have been taken away).
    tokens: identity::TokenCache,
    /// Console sessions opened by OIDC sign-ins (in memory; see `console_oidc`).
    oidc_sessions: console_oidc::OidcSessions,
    /// Bounds on password checks: concurrent hashes, login attempts per address and user.
    login: login_guard::LoginGuard,
    events: EventBus,
    hub: Hub,
    /// What this replica has applied of the change feed (see `feed`).
    feed: feed::Feed,
    /// Tunnels from users to edge workloads, opened by the agents (consoles, logs).
    tunnels: crate::tunnels::Tunnels,
    /// Project names by id, for the agent long-poll path (projects are never renamed).
    project_names: std::sync::RwLock<std::collections::HashMap<canopy_store::ProjectId, String>>,
    /// Flips to true when the server begins shutting down (long-lived streams end on it).
    shutdown: tokio::sync::watch::Sender<bool>,
    /// Upload limits, spool and processing turns.
    uploads: upload::Uploads,
    /// The Helm CLI, the chart cache and rendered Helm applications.
    helm: helm::HelmService,
    /// The chart fetcher and turns of chart imports and listings.
    charts: charts::Charts,
    /// Prometheus metrics (no-ops unless the server has a metrics listener).
    metrics: Arc<crate::metrics::ServerMetrics>,
}

impl App {
    /// Builds the app over an opened store and makes sure the default project exists.
    pub async fn new(store: Store) -> Result<App, AppError> {
        App::with_config(store, HubConfig::default()).await
    }

    /// Like [`App::new`], with the fleet's timing (heartbeat, edge timeout, grace periods).
    pub async fn with_config(store: Store, fleet: HubConfig) -> Result<App, AppError> {
        App::with_options(
            store,
            AppConfig {
                fleet,
                ..AppConfig::default()
            },
        )
        .await
    }

    /// Builds the app with every option.
    pub async fn with_options(store: Store, config: AppConfig) -> Result<App, AppError> {
        let metrics = Arc::new(crate::metrics::ServerMetrics::new(config.metrics.clone()));
        let tx_metrics = metrics.store(store.backend());
        let store = store.with_metrics(tx_metrics);
        let default = ProjectName::try_from(DEFAULT_PROJECT).expect("valid default project name");
        store.ensure_project(&default).await?;
        // The live revision first: statuses loaded below are at least that new (re-reading
        // one twice is harmless; missing one is not).
        let live = store.live_revision().await?;
        let snapshot = store.load_fleet().await?;
        let feed = feed::Feed::new(config.feed, snapshot.revision, live, metrics.feed());
        let hub = Hub::load(config.fleet, snapshot)
            .map_err(AppError::Internal)?
            .with_metrics(metrics.hub());
        let uploads = upload::Uploads::new(config.uploads)?;
        let login = login_guard::LoginGuard::new(&config.auth.login);
        let helm = helm::HelmService::start(&config.helm).await;
        // One chart cache for deployments and catalog imports (one budget, one fetch).
        let charts = charts::Charts::new(config.charts, &helm, &config.helm);
        let app = App {
            inner: Arc::new(Inner {
                store,
                login,
                auth: config.auth,
                tenancy: config.tenancy,
                tls: config.tls,
                public_url: config.public_url,
                server_pin: config.server_pin,
                tokens: Default::default(),
                oidc_sessions: Default::default(),
                events: EventBus::default(),
                hub,
                feed,
                tunnels: Default::default(),
                project_names: Default::default(),
                shutdown: tokio::sync::watch::channel(false).0,
                uploads,
                helm,
                charts,
                metrics,
            }),
        };
        // Fleet gauges are counted at scrape time. Weak: the registry (held by the app) must
        // not keep the app alive.
        let weak = Arc::downgrade(&app.inner);
        app.inner.metrics.registry().before_render(move || {
            if let Some(inner) = weak.upgrade() {
                inner.metrics.set_fleet(inner.hub.gauges());
            }
        });
        app.ensure_default_org().await?;
        Ok(app)
    }

    /// The server's Prometheus metrics.
    pub fn metrics(&self) -> &Arc<crate::metrics::ServerMetrics> {
        &self.inner.metrics
    }

    /// Drops cached facts about a deleted project.
    fn forget_project(&self, id: canopy_store::ProjectId) {
        self.inner
            .project_names
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// The Helm side: CLI, chart cache, rendered applications.
    pub(crate) fn helm(&self) -> &helm::HelmService {
        &self.inner.helm
    }

    /// The Helm CLI the server renders charts with (`Err`: why it has none).
    pub fn helm_cli(&self) -> Result<(std::path::PathBuf, String), String> {
        self.inner
            .helm
            .status()
            .map(|h| (h.path().to_path_buf(), h.version().to_string()))
            .map_err(str::to_string)
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

    /// Whether the server serves HTTPS.
    pub fn serves_tls(&self) -> bool {
        self.inner.tls
    }

    /// The URL users reach the server at, when configured (behind a reverse proxy).
    pub fn public_url(&self) -> Option<&str> {
        self.inner.public_url.as_deref()
    }

    /// The fingerprint agents pin (`--server-fingerprint`) when the server's certificate is
    /// self-signed (see [`AppConfig::server_pin`]).
    pub fn server_pin(&self) -> Option<&str> {
        self.inner.server_pin.as_deref()
    }

    /// The fleet hub (edges, deployments, long-polls).
    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// The tunnel broker (consoles and logs of edge workloads).
    pub fn tunnels(&self) -> &crate::tunnels::Tunnels {
        &self.inner.tunnels
    }

    /// How often [`App::flush_fleet`] should run: every [`FLUSH_REPLICAS`] on PostgreSQL
    /// (another replica shows a report taken here after at most that plus the feed's
    /// delivery), every [`FLUSH_SINGLE`] on SQLite (one process: nobody else reads it).
    pub fn flush_interval(&self) -> std::time::Duration {
        match self.store().backend() {
            canopy_store::Backend::Postgres => FLUSH_REPLICAS,
            canopy_store::Backend::Sqlite => FLUSH_SINGLE,
        }
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

    /// Resolves a project by name for a request. Unknown projects are 404, and so are projects
    /// the caller holds no role on: a tenant cannot learn another tenant's project names.
    pub async fn context(
        &self,
        principal: Arc<Principal>,
        project: &str,
        request_id: String,
    ) -> Result<Ctx, AppError> {
        let not_found =
            || AppError::NotFound(format!("project {} not found", project.escape_debug()));
        let found = self
            .inner
            .store
            .project_by_name(project)
            .await?
            .ok_or_else(not_found)?;
        if !principal.sees(&found) {
            return Err(not_found());
        }
        Ok(Ctx {
            project: found,
            principal,
            request_id,
        })
    }
}
