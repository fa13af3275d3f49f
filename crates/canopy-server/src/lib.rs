//! The Canopy control plane: the app layer (catalog rules over the store), the HTTP API (thin
//! axum handlers), catalog events, and process lifecycle (listen, graceful shutdown).
//!
//! Dependencies point one way: this crate uses `canopy-core` and `canopy-store`; nothing here is
//! used by them. HTTP handlers parse, call one app-layer method and map the result; every rule
//! lives in the app layer (`app`), every SQL statement in the store.

pub mod app;
pub mod events;
pub mod http;
pub mod hub;

use std::net::SocketAddr;
use std::path::PathBuf;

use canopy_store::Store;
use tokio::net::TcpListener;

pub use app::App;

/// How to run the control plane.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on, e.g. `127.0.0.1:7070`.
    pub listen: SocketAddr,
    /// Directory for the embedded database (`canopy.db`) and other local state.
    pub data_dir: PathBuf,
    /// PostgreSQL URL; when set, used instead of the embedded SQLite file.
    pub database_url: Option<String>,
    /// Fleet timing: heartbeat, edge timeout, no-target grace period.
    pub fleet: hub::HubConfig,
}

/// Errors that stop the server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] canopy_store::StoreError),
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

impl From<app::AppError> for ServerError {
    fn from(e: app::AppError) -> Self {
        match e {
            app::AppError::Store(s) => ServerError::Store(s),
            other => ServerError::Io(std::io::Error::other(other.to_string())),
        }
    }
}

/// Opens the configured store: PostgreSQL when a URL is given, else `DATA_DIR/canopy.db`.
pub async fn open_store(config: &ServerConfig) -> Result<Store, ServerError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    Ok(match &config.database_url {
        Some(url) => Store::connect(url).await?,
        None => Store::open_sqlite(&config.data_dir.join("canopy.db")).await?,
    })
}

/// A control plane bound to its port, ready to serve (tests use this to learn the address).
pub struct Server {
    listener: TcpListener,
    app: App,
}

impl Server {
    /// Opens storage and binds the listener.
    pub async fn bind(config: &ServerConfig) -> Result<Server, ServerError> {
        let store = open_store(config).await?;
        let app = App::with_config(store, config.fleet).await?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Listen {
                    addr: config.listen,
                    source,
                })?;
        Ok(Server { listener, app })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The app layer of this server.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// Serves until `shutdown` completes, then drains in-flight requests and closes storage.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let router = http::router(self.app.clone()).layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(
                    tower_http::trace::DefaultMakeSpan::new().level(tracing::Level::INFO),
                )
                .on_response(
                    tower_http::trace::DefaultOnResponse::new().level(tracing::Level::DEBUG),
                ),
        );
        let reaper = tokio::spawn(reap_upload_sessions(self.app.clone()));
        let flusher = tokio::spawn(flush_fleet(self.app.clone()));
        let app = self.app.clone();
        let shutdown = async move {
            shutdown.await;
            app.begin_shutdown();
        };
        axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown)
            .await?;
        reaper.abort();
        flusher.abort();
        self.app.flush_fleet().await;
        self.app.store().close().await;
        Ok(())
    }
}

/// How long an unfinished upload session is kept.
pub const UPLOAD_SESSION_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Background task: deletes upload sessions abandoned for longer than [`UPLOAD_SESSION_TTL`].
/// Re-runnable and bounded: one DELETE per pass.
async fn reap_upload_sessions(app: App) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(300));
    loop {
        every.tick().await;
        let cutoff = time::OffsetDateTime::now_utc() - UPLOAD_SESSION_TTL;
        match app.store().expire_upload_sessions(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(sessions = n, "expired abandoned upload sessions"),
            Err(e) => tracing::warn!(error = %e, "could not expire upload sessions"),
        }
    }
}

/// Background task: writes edge liveness and status changes to the store in batches.
async fn flush_fleet(app: App) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        every.tick().await;
        app.flush_fleet().await;
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}

/// Runs the control plane until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn serve(config: ServerConfig) -> Result<(), ServerError> {
    let server = Server::bind(&config).await?;
    let addr = server.local_addr()?;
    let storage = match &config.database_url {
        Some(_) => "PostgreSQL".to_string(),
        None => format!(
            "embedded SQLite at {}",
            config.data_dir.join("canopy.db").display()
        ),
    };
    tracing::info!(%addr, %storage, "Canopy control plane listening on http://{addr} (API document at /openapi.json)");
    server.run(shutdown_signal()).await?;
    tracing::info!("Canopy control plane stopped");
    Ok(())
}
