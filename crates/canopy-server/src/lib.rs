//! The Canopy control plane: the app layer (catalog rules over the store), the HTTP API (thin
//! axum handlers), catalog events, and process lifecycle (listen, graceful shutdown).
//!
//! Dependencies point one way: this crate uses `canopy-core` and `canopy-store`; nothing here is
//! used by them. HTTP handlers parse, call one app-layer method and map the result; every rule
//! lives in the app layer (`app`), every SQL statement in the store.
//!
//! Start-up guards the data directory: it is created with mode 0700, one process at a time
//! holds it (`canopy.lock`, an advisory lock the kernel drops when the process ends, so the
//! offline `canopy admin reset-token` can tell a running server), and a missing or empty
//! database beside the state of an instance that has run (`secret.key`, `admin.token`) stops
//! the start instead of silently making a new, empty instance (and a new administrator token
//! over the old one) unless `--initialize` says so.

pub mod app;
pub mod events;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod once_only;
pub mod tunnels;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    /// HTTPS certificate (given files, or self-signed in the data directory); `None` serves
    /// plain HTTP, for loopback or trusted networks only.
    pub tls: Option<canopy_tls::ServerTls>,
    /// Fleet timing: heartbeat, edge timeout, no-target grace period.
    pub fleet: hub::HubConfig,
    /// How callers authenticate (external OIDC provider, session lifetime).
    pub auth: app::AuthConfig,
    /// What new projects get (default registries).
    pub tenancy: app::TenancyConfig,
    /// Abuse limits: per-caller rate limits, long-poll caps, slow request bodies.
    pub limits: http::Limits,
    /// What uploads may cost: spool (default `DATA_DIR/upload-spool`), parallelism, session
    /// quotas and idle timeout.
    pub uploads: app::UploadLimits,
    /// How long audit entries are kept.
    pub audit_retention: std::time::Duration,
    /// The URL users reach the server at when it is behind a reverse proxy (`https://host/prefix`,
    /// no trailing `/`); addresses the server hands out (VM console WebSockets) use it. `None`:
    /// the address each request came to.
    pub public_url: Option<String>,
    /// Start a new, empty instance even though the data directory holds the state of one that
    /// has run (`secret.key`, `admin.token`) while its database is missing or empty (or, with
    /// PostgreSQL, has no users yet). Without it that start is refused. An existing
    /// `admin.token` is then kept as `admin.token.<time>.old`, never overwritten.
    pub initialize: bool,
    /// How Helm-chart applications are rendered: the Helm CLI (`--helm-bin`, default `helm` on
    /// PATH, checked at start), the chart cache (default `DATA_DIR/charts`), limits.
    pub helm: app::HelmConfig,
    /// Where Prometheus scrapes `/metrics` (plain HTTP, no token: loopback or a monitoring
    /// network only; see docs/OPERATIONS.md). `None` (the default): no metrics are kept.
    pub metrics_listen: Option<SocketAddr>,
    /// With PostgreSQL (replicas): the URL other replicas reach this one at to relay tunnels
    /// (`http(s)://HOST:PORT`). `None`: derived from the bound address unless it is a wildcard
    /// (then tunnels work only when the agent's and the user's connections land here).
    pub peer_url: Option<String>,
}

/// Default of [`ServerConfig::audit_retention`]: 400 days.
pub const DEFAULT_AUDIT_RETENTION: std::time::Duration =
    std::time::Duration::from_secs(400 * 86_400);

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
    /// The embedded database cannot be opened (not a database, damaged, unreadable).
    #[error("cannot open the database {path}: {source}")]
    Database {
        path: PathBuf,
        #[source]
        source: canopy_store::StoreError,
    },
    /// The database is missing or empty but the data directory holds an earlier instance's
    /// state.
    #[error(
        "{database} is missing or empty, but {dir} holds the state of a Canopy instance that \
         has run before ({state}): refusing to start a new, empty instance over it. If the \
         database was moved, deleted or not restored, put it back at {database} (or give the \
         --database-url it lives at); to start a new instance in this directory anyway, start \
         once with --initialize"
    )]
    DatabaseMissing {
        database: PathBuf,
        dir: PathBuf,
        state: String,
    },
    /// The (PostgreSQL or SQLite) database has no users yet, but an administrator token of an
    /// earlier instance is in the data directory.
    #[error(
        "the database {database} has no users yet (a new, empty database?), but {token} is \
         there from an instance that has run before: refusing to start a new instance and \
         replace that token. Check that this is the database you meant; to start a new \
         instance anyway, start once with --initialize (the old token is kept beside it)"
    )]
    FreshDatabase { database: String, token: PathBuf },
    /// Another process holds the data directory.
    #[error(
        "another Canopy process{pid} is using the data directory {dir} (it holds \
         {lock}): stop it first. One server process runs per data directory; to run several \
         replicas, give each its own data directory and the same PostgreSQL --database-url \
         (docs/OPERATIONS.md, Running replicas)",
        pid = .pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        lock = .dir.join(LOCK_FILE).display()
    )]
    InUse { dir: PathBuf, pid: Option<u32> },
    /// There is no instance to act on (offline commands).
    #[error("no Canopy database at {0}: pass the server's --data-dir (or --database-url)")]
    NoInstance(PathBuf),
    #[error("cannot load the secret key: {0}")]
    Secrets(String),
    #[error(transparent)]
    Tls(#[from] canopy_tls::TlsError),
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

/// The embedded database's file name in the data directory.
pub const DATABASE_FILE: &str = "canopy.db";
/// The lock file a server holds in its data directory while it runs.
pub const LOCK_FILE: &str = "canopy.lock";

/// Creates the data directory (mode 0700: it holds the database, keys and tokens) when it is
/// missing; an existing one keeps its mode.
fn prepare_data_dir(dir: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| ServerError::DataDir {
            path: dir.to_path_buf(),
            source,
        })
}

/// The data directory, held by one process at a time (an exclusive `flock` on
/// `DATA_DIR/canopy.lock`, which also names the holder's pid). The kernel releases it when the
/// process ends, however it ends.
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    /// Takes the lock, or says which process holds it ([`ServerError::InUse`]).
    pub fn acquire(dir: &Path) -> Result<DataDirLock, ServerError> {
        use std::io::{Read as _, Seek as _, Write as _};
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = dir.join(LOCK_FILE);
        let io = |source| ServerError::DataDir {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(ServerError::InUse {
                    dir: dir.to_path_buf(),
                    pid: text.trim().parse().ok(),
                });
            }
            Err(e) => return Err(io(e.into())),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DataDirLock { _file: file })
    }
}

/// Refuses to start over an earlier instance's state when the embedded database is missing or
/// empty (see [`ServerError::DatabaseMissing`]).
fn check_database_present(config: &StoreConfig<'_>) -> Result<(), ServerError> {
    if config.database_url.is_some() || config.initialize {
        return Ok(());
    }
    let db = config.data_dir.join(DATABASE_FILE);
    if file_len(&db) > 0 {
        return Ok(());
    }
    let wal = {
        let mut name = db.as_os_str().to_owned();
        name.push("-wal");
        PathBuf::from(name)
    };
    let state: Vec<String> = [app::ADMIN_TOKEN_FILE, canopy_seal::KEY_FILE_NAME]
        .into_iter()
        .map(|f| config.data_dir.join(f))
        .chain([wal])
        .filter(|p| p.exists())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    if state.is_empty() {
        return Ok(());
    }
    Err(ServerError::DatabaseMissing {
        database: db,
        dir: config.data_dir.to_path_buf(),
        state: state.join(", "),
    })
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Opens the configured database, without the keyring: PostgreSQL when a URL is given, else
/// `DATA_DIR/canopy.db` (created 0600; SQLite's own error and the file's name when it is not a
/// database).
async fn open_database(config: &StoreConfig<'_>) -> Result<Store, ServerError> {
    prepare_data_dir(config.data_dir)?;
    check_database_present(config)?;
    Ok(match config.database_url {
        Some(url) => Store::connect(url).await?,
        None => {
            let path = config.data_dir.join(DATABASE_FILE);
            Store::open_sqlite(&path)
                .await
                .map_err(|source| ServerError::Database { path, source })?
        }
    })
}

/// Where the database is (the part of [`ServerConfig`] that says so).
struct StoreConfig<'a> {
    data_dir: &'a Path,
    database_url: Option<&'a str>,
    initialize: bool,
}

/// Opens the configured store: PostgreSQL when a URL is given, else `DATA_DIR/canopy.db`.
pub async fn open_store(config: &ServerConfig) -> Result<Store, ServerError> {
    Ok(open_store_keyed(config).await?.0)
}

/// Makes this server one of several replicas' for tunnels (see [`tunnels::peer`]): its peer
/// address (given, or derived from the bound address), the key peers share (derived from the
/// secret key), and its `LISTEN` connection. `None` (with a warning) when no peer address can
/// be known.
async fn start_replication(
    config: &ServerConfig,
    database_url: &str,
    listener: &TcpListener,
    tls: &Option<(
        std::sync::Arc<canopy_tls::rustls::ServerConfig>,
        canopy_tls::CertInfo,
    )>,
    key: zeroize::Zeroizing<[u8; 32]>,
    broker: &tunnels::Tunnels,
) -> Result<Option<tunnels::peer::Pending>, ServerError> {
    let bound = listener.local_addr()?;
    let url = match &config.peer_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => match tunnels::peer::default_peer_url(bound, tls.is_some()) {
            Some(u) => u,
            None => {
                tracing::warn!(
                    listen = %bound,
                    "no --peer-url and a wildcard listen address: other replicas cannot relay                      tunnels to this one, so a console or log whose agent is connected to                      another replica will time out here; give --peer-url"
                );
                return Ok(None);
            }
        },
    };
    let me = tunnels::peer::PeerAddr {
        url: url.clone(),
        fingerprint: tls
            .as_ref()
            .map(|(_, info)| info.fingerprint_sha256.clone()),
    };
    let (replication, pending) = tunnels::peer::Replication::connect(database_url, me, key)
        .await
        .map_err(|e| ServerError::Io(std::io::Error::other(e.to_string())))?;
    tracing::info!(peer_url = %url, "tunnels across replicas: other replicas relay to {url}");
    broker.set_replication(replication);
    Ok(Some(pending))
}

/// [`open_store`], and the key replicas authenticate each other with (derived from the
/// secret key every replica of one database shares).
async fn open_store_keyed(
    config: &ServerConfig,
) -> Result<(Store, zeroize::Zeroizing<[u8; 32]>), ServerError> {
    let store = open_database(&StoreConfig {
        data_dir: &config.data_dir,
        database_url: config.database_url.as_deref(),
        initialize: config.initialize,
    })
    .await?;
    // Stored credentials are encrypted with a key from CANOPY_SECRET_KEY, else DATA_DIR/secret.key
    // (generated on a first start). Rows under an older key or from before encryption are
    // re-encrypted with the current key here, so rotating is: add a key, restart.
    let env = std::env::var(canopy_seal::ENV_VAR).ok();
    let (keyring, origin) = canopy_seal::Keyring::load_or_generate(
        &config.data_dir.join(canopy_seal::KEY_FILE_NAME),
        env.as_deref(),
    )
    .map_err(|e| ServerError::Secrets(e.to_string()))?;
    if matches!(origin, canopy_seal::KeyOrigin::Generated(_)) && config.database_url.is_some() {
        tracing::warn!(key = %origin, "generated a new secret key for a PostgreSQL store: every replica must use this same key (copy the file or set {})", canopy_seal::ENV_VAR);
    }
    tracing::info!(key = %origin, key_id = %keyring.primary_id(), "stored credentials are encrypted");
    let peer_key = keyring.derive_key(tunnels::peer::KEY_PURPOSE);
    let store = store.with_keyring(std::sync::Arc::new(keyring));
    let resealed = store.reseal_all().await?;
    if resealed.registries + resealed.deployments > 0 {
        tracing::info!(
            registries = resealed.registries,
            deployments = resealed.deployments,
            "re-encrypted stored credentials with the current key"
        );
    }
    Ok((store, peer_key))
}

/// A database with no users yet beside an `admin.token`: refused, or with `--initialize` the
/// old token is set aside (renamed, never overwritten) so the first start can write a new one.
async fn guard_admin_token(config: &ServerConfig, store: &Store) -> Result<(), ServerError> {
    let token = config.data_dir.join(app::ADMIN_TOKEN_FILE);
    if !token.exists() || !store.list_users().await?.is_empty() {
        return Ok(());
    }
    if !config.initialize {
        return Err(ServerError::FreshDatabase {
            database: match &config.database_url {
                Some(_) => "given by --database-url".into(),
                None => config.data_dir.join(DATABASE_FILE).display().to_string(),
            },
            token,
        });
    }
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let kept = config
        .data_dir
        .join(format!("{}.{stamp}.old", app::ADMIN_TOKEN_FILE));
    std::fs::rename(&token, &kept).map_err(|source| ServerError::DataDir {
        path: token.clone(),
        source,
    })?;
    tracing::warn!(
        kept = %kept.display(),
        "--initialize: starting a new instance; the earlier administrator token is kept as {}",
        kept.display()
    );
    Ok(())
}

/// `canopy admin reset-token`: with the server stopped, makes the administrator usable again
/// (see [`app::reset_admin_token`]) in the instance of `data_dir` (its database: `database_url`,
/// else `DATA_DIR/canopy.db`). Refuses while a process holds the data directory, and never
/// creates a database.
pub async fn reset_admin_token(
    data_dir: &Path,
    database_url: Option<&str>,
) -> Result<app::AdminTokenReset, ServerError> {
    if !data_dir.is_dir() {
        return Err(ServerError::NoInstance(data_dir.join(DATABASE_FILE)));
    }
    let _lock = DataDirLock::acquire(data_dir)?;
    if database_url.is_none() && file_len(&data_dir.join(DATABASE_FILE)) == 0 {
        return Err(ServerError::NoInstance(data_dir.join(DATABASE_FILE)));
    }
    let store = open_database(&StoreConfig {
        data_dir,
        database_url,
        initialize: false,
    })
    .await?;
    let done = app::reset_admin_token(&store, data_dir).await;
    store.close().await;
    Ok(done?)
}

/// A control plane bound to its port, ready to serve (tests use this to learn the address).
pub struct Server {
    listener: TcpListener,
    /// Held until the server stops.
    lock: DataDirLock,
    app: App,
    tls: Option<(
        std::sync::Arc<canopy_tls::rustls::ServerConfig>,
        canopy_tls::CertInfo,
    )>,
    limits: http::Limits,
    audit_retention: std::time::Duration,
    /// The web console's routes, when one is served (see [`Server::with_console`]).
    console: Option<axum::Router<App>>,
    /// The `/metrics` listener, when configured.
    metrics_listener: Option<TcpListener>,
    /// Tunnels across replicas (PostgreSQL only): its connections, started by `run`.
    replication: Option<tunnels::peer::Pending>,
}

impl Server {
    /// Opens storage and binds the listener.
    pub async fn bind(config: &ServerConfig) -> Result<Server, ServerError> {
        // Given certificate files first: their problems are named before anything is created.
        // Then the data directory (0700, one process at a time), where a self-signed
        // certificate is kept.
        let given = match &config.tls {
            Some(t @ canopy_tls::ServerTls::Files { .. }) => {
                Some(canopy_tls::load_server_config(t)?)
            }
            _ => None,
        };
        prepare_data_dir(&config.data_dir)?;
        let lock = DataDirLock::acquire(&config.data_dir)?;
        let tls = match given {
            Some(t) => Some(t),
            None => config
                .tls
                .as_ref()
                .map(canopy_tls::load_server_config)
                .transpose()?,
        };
        let (store, peer_key) = open_store_keyed(config).await?;
        guard_admin_token(config, &store).await?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServerError::Listen { addr, source })?,
            ),
            None => None,
        };
        let metrics = match metrics_listener {
            Some(_) => canopy_metrics::Registry::new(),
            None => canopy_metrics::Registry::disabled(),
        };
        let app = App::with_options(
            store,
            app::AppConfig {
                fleet: config.fleet,
                feed: app::FeedConfig::default(),
                auth: config.auth.clone(),
                tenancy: config.tenancy.clone(),
                tls: config.tls.is_some(),
                public_url: config.public_url.clone(),
                server_pin: match (&config.tls, &tls) {
                    (Some(canopy_tls::ServerTls::SelfSigned { .. }), Some((_, info))) => {
                        Some(info.fingerprint_sha256.clone())
                    }
                    _ => None,
                },
                uploads: app::UploadLimits {
                    spool_dir: Some(
                        config
                            .uploads
                            .spool_dir
                            .clone()
                            .unwrap_or_else(|| config.data_dir.join("upload-spool")),
                    ),
                    ..config.uploads.clone()
                },
                helm: app::HelmConfig {
                    cache_dir: Some(
                        config
                            .helm
                            .cache_dir
                            .clone()
                            .unwrap_or_else(|| config.data_dir.join("charts")),
                    ),
                    ..config.helm.clone()
                },
                charts: app::ChartLimits::default(),
                metrics,
            },
        )
        .await?;
        if let Some(path) = app.bootstrap_admin(&config.data_dir).await? {
            tracing::info!(
                file = %path.display(),
                "first start: created the administrator user `admin`; its API token is in {} (mode 0600)",
                path.display()
            );
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Listen {
                    addr: config.listen,
                    source,
                })?;
        let replication = match &config.database_url {
            Some(url) => {
                start_replication(config, url, &listener, &tls, peer_key, app.tunnels()).await?
            }
            None => None,
        };
        Ok(Server {
            listener,
            lock,
            app,
            tls,
            limits: config.limits.clone(),
            audit_retention: config.audit_retention,
            console: None,
            metrics_listener,
            replication,
        })
    }

    /// Serves the web console's routes (the `canopy-web` crate's router, which depends on this
    /// crate, so the binary and the test harness hand it over here) beside the API.
    pub fn with_console(mut self, console: axum::Router<App>) -> Server {
        self.console = Some(console);
        self
    }

    /// The certificate served over HTTPS, or `None` for plain HTTP.
    pub fn tls_certificate(&self) -> Option<&canopy_tls::CertInfo> {
        self.tls.as_ref().map(|(_, info)| info)
    }

    /// The base URL clients use: `https://ADDR` with TLS, `http://ADDR` without.
    pub fn url(&self) -> std::io::Result<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        Ok(format!("{scheme}://{}", self.local_addr()?))
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The address `/metrics` is served on, when there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
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
        let router = http::router_with_console(self.app.clone(), self.limits.clone(), self.console)
            .layer(
                tower_http::trace::TraceLayer::new_for_http()
                    .make_span_with(request_span)
                    .on_response(
                        tower_http::trace::DefaultOnResponse::new().level(tracing::Level::DEBUG),
                    ),
            );
        let reaper = tokio::spawn(app::reap_upload_sessions(self.app.clone()));
        let flusher = tokio::spawn(flush_fleet(self.app.clone()));
        // PostgreSQL: follow the other replicas (none on SQLite).
        let feed = self.app.start_feed();
        let housekeeper = tokio::spawn(housekeeping(self.app.clone(), self.audit_retention));
        let registry = self.app.metrics().registry().clone();
        let upkeep = registry.spawn_upkeep();
        let metrics_server = self.metrics_listener.map(|listener| {
            let shutdown = self.app.shutting_down();
            tokio::spawn(async move {
                if let Err(e) = canopy_metrics::serve(listener, registry, shutdown).await {
                    tracing::warn!(error = %e, "the metrics listener failed");
                }
            })
        });
        let replication = self.replication.map(|r| r.spawn(self.app.clone()));
        let app = self.app.clone();
        let shutdown = async move {
            shutdown.await;
            app.begin_shutdown();
        };
        let tls = self.tls.map(|(config, _)| config);
        canopy_tls::serve(self.listener, router, tls, shutdown).await?;
        reaper.abort();
        flusher.abort();
        if let Some(f) = feed {
            f.abort();
        }
        if let Some(r) = &replication {
            r.abort();
        }
        housekeeper.abort();
        if let Some(m) = metrics_server {
            m.abort();
        }
        drop(upkeep);
        self.app.flush_fleet().await;
        self.app.store().close().await;
        drop(self.lock);
        Ok(())
    }
}

/// The span of one request: method and path, never the query string (the reference puts
/// secrets there: `catalog/import?authToken=...`).
fn request_span<B>(req: &axum::http::Request<B>) -> tracing::Span {
    // The agent protocol's requests (hundreds a second from a large fleet, each a long-poll
    // or a report) get their span only when debugging: an enabled span per request formats
    // and stores its fields, a measurable share of an idle server's CPU at 10,000 edges
    // (docs/BENCHMARKS.md, "Idle cost and fan-out at 10,000 edges"). Their log lines name the edge.
    if req.uri().path().starts_with(AGENT_PATHS) {
        return tracing::debug_span!(
            "request",
            method = %req.method(),
            path = %req.uri().path(),
            version = ?req.version()
        );
    }
    tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        version = ?req.version()
    )
}

/// The agent protocol's paths (see `http::fleet`).
const AGENT_PATHS: &str = "/canopy/v1/agent/";

/// Background task: deletes expired session and API tokens, and audit entries older than the
/// retention, and change-feed rows older than an hour. Hourly; each pass is three bounded
/// DELETEs. Runs on one replica at a time (the
/// `housekeeping` lease, [`once_only`]).
async fn housekeeping(app: App, audit_retention: std::time::Duration) {
    let store = app.store().clone();
    let every = std::time::Duration::from_secs(3600);
    once_only::run_once_only(store, canopy_store::LeaseJob::Housekeeping, every, || {
        let app = app.clone();
        async move {
            let store = app.store();
            let now = time::OffsetDateTime::now_utc();
            match store.delete_expired_tokens(now).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(tokens = n, "deleted expired tokens"),
                Err(e) => tracing::warn!(error = %e, "could not delete expired tokens"),
            }
            match store.prune_audit(now - audit_retention).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(entries = n, "pruned audit entries past their retention"),
                Err(e) => tracing::warn!(error = %e, "could not prune the audit log"),
            }
            match app.prune_feed().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(rows = n, "pruned the change feed"),
                Err(e) => tracing::warn!(error = %e, "could not prune the change feed"),
            }
        }
    })
    .await;
}

/// Background task: writes edge liveness and status changes to the store in batches. Every
/// replica flushes the agents connected to it (not a once-only job).
async fn flush_fleet(app: App) {
    let mut every = tokio::time::interval(app.flush_interval());
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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

/// Says at start whether this server can be one of several replicas, and what replicas need.
fn replica_notice(postgres: bool, data_dir: &Path) {
    if postgres {
        tracing::info!(
            "replicas: this server can run as one of several replicas behind a load balancer. \
             Every replica needs the same --database-url and the same secret key (the same \
             {key} file in each data directory, or the same {env}), and a data directory of its \
             own; once-only background jobs run on one replica at a time \
             (docs/OPERATIONS.md, Running replicas)",
            key = canopy_seal::KEY_FILE_NAME,
            env = canopy_seal::ENV_VAR,
        );
    } else {
        tracing::info!(
            "replicas: none. The embedded SQLite database serves one process only (this one \
             holds {lock}); to run several replicas, use PostgreSQL (--database-url; \
             docs/OPERATIONS.md, Running replicas)",
            lock = data_dir.join(LOCK_FILE).display(),
        );
    }
}

/// Runs the control plane (with the web console's routes, when given: see
/// [`Server::with_console`]) until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn serve(
    config: ServerConfig,
    console: Option<axum::Router<App>>,
) -> Result<(), ServerError> {
    let mut server = Server::bind(&config).await?;
    let console_given = console.is_some();
    if let Some(console) = console {
        server = server.with_console(console);
    }
    let addr = server.local_addr()?;
    let storage = match &config.database_url {
        Some(_) => "PostgreSQL".to_string(),
        None => format!(
            "embedded SQLite at {}",
            config.data_dir.join(DATABASE_FILE).display()
        ),
    };
    let url = server.url()?;
    tracing::info!(%addr, %storage, "Canopy control plane listening on {url} (API document at /openapi.json{})", if console_given { ", web console at /" } else { "" });
    replica_notice(config.database_url.is_some(), &config.data_dir);
    if let Some(metrics) = server.metrics_addr() {
        tracing::info!(
            %metrics,
            "Prometheus metrics at http://{metrics}/metrics (no token: keep this address on \
             loopback or a monitoring network)"
        );
    }
    match server.tls_certificate() {
        Some(cert) => tracing::info!(
            "TLS certificate fingerprint: {fp} (certificate {file}, subject {subject}, valid \
             until {until}); agents and CLIs trust this server with --server-fingerprint {fp} \
             (or CANOPY_SERVER_FINGERPRINT), or with --ca-file and the CA that signed it",
            fp = cert.fingerprint_sha256,
            file = cert.cert_file.display(),
            subject = cert.subject,
            until = cert.not_after.date(),
        ),
        None => {
            tracing::warn!(
                "WARNING: serving plain HTTP: traffic, credentials and tokens are unencrypted; \
                 use this only on loopback or a trusted network"
            );
        }
    }
    server.run(shutdown_signal()).await?;
    tracing::info!("Canopy control plane stopped");
    Ok(())
}
