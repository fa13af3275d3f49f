//! The `sqlx::Any` implementation shared by SQLite and PostgreSQL.
//!
//! One body of SQL serves both backends, so it sticks to what both understand: `$N`
//! placeholders (sqlx-sqlite maps `$N` to argument N, see the unit test below), `ON CONFLICT`,
//! `LIKE ... ESCAPE '\'`, and only the value types `Any` carries (i64, bool, String, bytes).
//! The two differ only in connection setup, migrations directory, how transactions start and
//! how writers are serialized; those few places branch on [`Backend`].
//!
//! Entities are stored as their canopy-core JSON in a `body` column, next to copies of the
//! fields that lists filter and order on. Lists pick the page by key in a subquery and only then
//! join back for bodies, so a page of 20 out of 10,000 rows decodes 20 bodies.
//!
//! Writers are serialized per store on SQLite (a `tokio` mutex held by the [`CatalogTx`] until
//! commit or drop; SQLite has one writer per file anyway) and per project on PostgreSQL
//! (`SELECT ... FOR UPDATE` on the project row, which also serializes server replicas).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use canopy_core::catalog::{Application, Artifact, DeploymentPackage, Kind, Registry};
use canopy_core::list::{Field, ListQuery};
use canopy_core::names::ProjectName;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Connection as _, Executor, Row, Transaction};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{Mutex, OwnedMutexGuard};
use uuid::Uuid;

use crate::sealing::{SealedTable, open_body, seal_body};
use crate::{Backend, DisplayNameScope, Project, ProjectId, StoreError};

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// The migrator of `backend`: this release's migrations, applied in order under the
/// migrator's own advisory lock (replicas starting together apply them once). Migrations
/// applied by a *newer* release that this one does not know are ignored rather than refused,
/// so an older replica keeps starting during a rolling upgrade; that is safe because migrations
/// are additive until every replica runs the release that stops using what they remove (the
/// expand/contract rule in the crate docs). A known migration whose file changed after it was
/// applied is still refused (checksums).
pub(crate) fn migrator(backend: Backend) -> sqlx::migrate::Migrator {
    let released = match backend {
        Backend::Sqlite => &SQLITE_MIGRATOR,
        Backend::Postgres => &POSTGRES_MIGRATOR,
    };
    sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Borrowed(&released.migrations),
        ignore_missing: true,
        ..sqlx::migrate::Migrator::DEFAULT
    }
}

/// Connections per pool. SQLite: one writer at a time plus a few concurrent readers (WAL).
/// PostgreSQL: enough for concurrent requests on a 2-core box without crowding the server.
const SQLITE_MAX_CONNECTIONS: u32 = 4;
const POSTGRES_MAX_CONNECTIONS: u32 = 8;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// Set on every SQLite connection. The first one reads the file: it is where a file that is not
/// a database fails.
const SQLITE_PRAGMAS: [&str; 5] = [
    "PRAGMA journal_mode = WAL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA busy_timeout = 5000",
    "PRAGMA synchronous = NORMAL",
    // Reads the schema: a damaged first page or schema fails here too.
    "SELECT count(*) FROM sqlite_schema",
];

/// The columns of a name-keyed entity row (see [`CatalogTx::upsert_named`]).
struct NamedRow<'a> {
    name: &'a str,
    display_name: &'a str,
    description: &'a str,
    /// `(static column name, value)` of the table's own filterable column.
    extra: (&'static str, &'a str),
    body: String,
}

/// Handle to the database; cheap to clone.
///
/// Open one `Store` per database per process and clone it: on SQLite the clones share the
/// in-process write lock.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    pub(crate) backend: Backend,
    /// SQLite only: serializes writers of this store (held by write [`CatalogTx`]s).
    pub(crate) write_lock: Arc<Mutex<()>>,
    /// Seals and opens the secret-bearing bodies (see [`crate::sealing`]).
    pub(crate) keyring: Option<Arc<canopy_seal::Keyring>>,
    /// Where transaction times go (no-ops unless [`Store::with_metrics`]).
    pub(crate) metrics: TxMetrics,
    /// This store's name in the change feed (a random id per [`Store::connect`]): a replica
    /// skips the changes it made itself (see [`crate::feed`]).
    pub(crate) origin: Arc<str>,
    /// PostgreSQL only: the URL, for the change feed's listener connection (never logged: it
    /// may hold a password).
    pub(crate) pg_url: Option<Arc<str>>,
}

/// Histograms of transaction durations, by kind of transaction (see [`Store::with_metrics`]).
/// The store records through these `metrics` handles and knows nothing of an exporter.
#[derive(Clone)]
pub struct TxMetrics {
    /// Read-only catalog transactions ([`Store::read`]).
    pub read: metrics::Histogram,
    /// Write catalog transactions ([`Store::write`]): catalog and fleet writes.
    pub write: metrics::Histogram,
    /// The batched writes of edge liveness ([`Store::record_edges_seen`], one per chunk).
    pub edges_seen: metrics::Histogram,
}

impl Default for TxMetrics {
    fn default() -> Self {
        TxMetrics {
            read: metrics::Histogram::noop(),
            write: metrics::Histogram::noop(),
            edges_seen: metrics::Histogram::noop(),
        }
    }
}

/// Records how long a transaction lasted (begin to commit or rollback) when dropped.
pub(crate) struct TxTimer {
    start: std::time::Instant,
    histogram: metrics::Histogram,
}

impl TxTimer {
    pub(crate) fn start(histogram: &metrics::Histogram) -> TxTimer {
        TxTimer {
            start: std::time::Instant::now(),
            histogram: histogram.clone(),
        }
    }
}

impl Drop for TxTimer {
    fn drop(&mut self) {
        self.histogram.record(self.start.elapsed());
    }
}

/// A catalog transaction of one project. Dropped without [`CatalogTx::commit`] = rolled back.
pub struct CatalogTx {
    // Field order matters: the transaction is dropped (rolled back) before the write lock is
    // released.
    pub(crate) tx: Transaction<'static, Any>,
    pub(crate) project: ProjectId,
    pub(crate) writable: bool,
    pub(crate) keyring: Option<Arc<canopy_seal::Keyring>>,
    /// Which backend the transaction runs on (row locks are PostgreSQL's `FOR UPDATE`).
    pub(crate) backend: Backend,
    /// The store's change-feed origin (see [`Store`]).
    pub(crate) origin: Arc<str>,
    _write_guard: Option<OwnedMutexGuard<()>>,
    /// Last: the time recorded includes the rollback of a dropped transaction.
    _timer: TxTimer,
}

/// The journal files SQLite keeps beside a database in WAL mode.
pub const SQLITE_JOURNAL_SUFFIXES: [&str; 2] = ["-wal", "-shm"];

/// Creates the database file with mode 0600 when it is missing, and takes the group's and
/// others' permissions away from an existing one and its journal files (see
/// [`Store::open_sqlite`]).
fn private_database_files(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::File { path, source }
    };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(failed(path)(e)),
    }
    let mut files = vec![path.to_path_buf()];
    for suffix in SQLITE_JOURNAL_SUFFIXES {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        files.push(name.into());
    }
    for file in files {
        let mode = match std::fs::metadata(&file) {
            Ok(m) => m.permissions().mode(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(failed(&file)(e)),
        };
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode & 0o7700))
                .map_err(failed(&file))?;
            tracing::warn!(
                file = %file.display(),
                "{} was readable by other users (mode {:o}): it holds password hashes and the \
                 audit log; its mode is now {:o}",
                file.display(),
                mode & 0o7777,
                mode & 0o7700
            );
        }
    }
    Ok(())
}

impl Store {
    /// Connects to `sqlite://PATH` (file created if missing; WAL, foreign keys, busy timeout) or
    /// `postgres://...`, and runs pending migrations.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if url.starts_with("sqlite:") {
            let url = if url.contains("mode=") {
                url.to_string()
            } else if url.contains('?') {
                format!("{url}&mode=rwc")
            } else {
                format!("{url}?mode=rwc")
            };
            (Backend::Sqlite, url)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };

        let pool = match backend {
            Backend::Sqlite => {
                // One connection first, alone: a file that is not a database (or is damaged)
                // fails here with SQLite's own message. In the pool, a failing connection setup
                // is retried until the acquire timeout and reported only as "pool timed out".
                let mut probe = sqlx::AnyConnection::connect(&url).await?;
                for pragma in SQLITE_PRAGMAS {
                    probe.execute(pragma).await?;
                }
                probe.close().await?;
                AnyPoolOptions::new()
                    .max_connections(SQLITE_MAX_CONNECTIONS)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .after_connect(|conn, _meta| {
                        Box::pin(async move {
                            for pragma in SQLITE_PRAGMAS {
                                conn.execute(pragma).await?;
                            }
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(POSTGRES_MAX_CONNECTIONS)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    // Prepared statements are cached per connection; a generic plan chosen
                    // while a table was empty would otherwise stick (full scans at 10k rows).
                    .after_connect(|conn, _meta| {
                        Box::pin(async move {
                            conn.execute("SET plan_cache_mode = force_custom_plan")
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?
            }
        };

        migrator(backend).run(&pool).await?;
        tracing::debug!(backend = ?backend, "store connected and migrated");

        Ok(Store {
            pool,
            backend,
            write_lock: Arc::new(Mutex::new(())),
            keyring: None,
            metrics: TxMetrics::default(),
            origin: Uuid::new_v4().simple().to_string().into(),
            pg_url: (backend == Backend::Postgres).then(|| Arc::from(url.as_str())),
        })
    }

    /// Opens (creating if needed) the embedded database file at `path`.
    ///
    /// The file holds password hashes and the audit log: it is created with mode 0600, and an
    /// existing one (or its `-wal`/`-shm` journal) readable by others is tightened to 0600
    /// with a warning. SQLite creates the journal files with the database file's mode.
    pub async fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        private_database_files(path)?;
        let Some(p) = path.to_str() else {
            return Err(StoreError::UnsupportedUrl(path.display().to_string()));
        };
        // sqlx percent-decodes the path part of a sqlite URL.
        let mut encoded = String::with_capacity(p.len());
        for c in p.chars() {
            match c {
                '%' | '?' | '#' | ' ' | '"' | '<' | '>' | '`' | '{' | '}' => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        encoded.push_str(&format!("%{b:02X}"));
                    }
                }
                c => encoded.push(c),
            }
        }
        Store::connect(&format!("sqlite://{encoded}?mode=rwc")).await
    }

    /// Which backend this store uses.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Returns the project of that name, creating it if it does not exist.
    ///
    /// Creating takes the store's write lock on SQLite: do not call this (for a project that
    /// may not exist yet) while the same task holds a write [`CatalogTx`].
    pub async fn ensure_project(&self, name: &ProjectName) -> Result<Project, StoreError> {
        if let Some(p) = self.project_by_name(name.as_str()).await? {
            return Ok(p);
        }
        // On SQLite every write goes through the store's write lock, so it never waits on
        // SQLite's own file lock behind a long catalog transaction.
        let _guard = match self.backend {
            Backend::Sqlite => Some(self.write_lock.lock().await),
            Backend::Postgres => None,
        };
        sqlx::query("INSERT INTO projects (id, name, create_time) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
            .bind(Uuid::new_v4().to_string())
            .bind(name.as_str().to_string())
            .bind(format_time(now()))
            .execute(&self.pool)
            .await?;
        self.project_by_name(name.as_str()).await?.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "project {name} vanished right after it was created"
            ))
        })
    }

    /// The project of that name, if any.
    pub async fn project_by_name(&self, name: &str) -> Result<Option<Project>, StoreError> {
        let row = sqlx::query("SELECT id, name FROM projects WHERE name = $1")
            .bind(name.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| project_from_row(&r)).transpose()
    }

    /// All projects, by name.
    pub async fn list_projects(&self) -> Result<Vec<Project>, StoreError> {
        let rows = sqlx::query("SELECT id, name FROM projects ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(project_from_row).collect()
    }

    /// Starts a write transaction on `project`'s catalog; waits for other writers of the project.
    pub async fn write(&self, project: ProjectId) -> Result<CatalogTx, StoreError> {
        let (tx, guard) = match self.backend {
            Backend::Sqlite => {
                // Lock first, then take a connection: the lock holder never waits for a
                // connection held by a task that waits for the lock.
                let guard = Arc::clone(&self.write_lock).lock_owned().await;
                (self.pool.begin_with("BEGIN IMMEDIATE").await?, Some(guard))
            }
            Backend::Postgres => (self.pool.begin().await?, None),
        };
        let mut tx = CatalogTx {
            tx,
            project,
            writable: true,
            keyring: self.keyring.clone(),
            backend: self.backend,
            origin: Arc::clone(&self.origin),
            _write_guard: guard,
            _timer: TxTimer::start(&self.metrics.write),
        };
        let sql = match self.backend {
            Backend::Sqlite => "SELECT id FROM projects WHERE id = $1",
            Backend::Postgres => "SELECT id FROM projects WHERE id = $1 FOR UPDATE",
        };
        let found = sqlx::query(sql)
            .bind(project.to_string())
            .fetch_optional(&mut *tx.tx)
            .await?;
        if found.is_none() {
            return Err(StoreError::NoSuchProject(project));
        }
        Ok(tx)
    }

    /// Starts a read-only transaction (a consistent snapshot) on `project`'s catalog.
    pub async fn read(&self, project: ProjectId) -> Result<CatalogTx, StoreError> {
        let tx = match self.backend {
            // A deferred SQLite transaction reads one snapshot from its first statement on.
            Backend::Sqlite => self.pool.begin().await?,
            Backend::Postgres => {
                self.pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?
            }
        };
        let mut tx = CatalogTx {
            tx,
            project,
            writable: false,
            keyring: self.keyring.clone(),
            backend: self.backend,
            origin: Arc::clone(&self.origin),
            _write_guard: None,
            _timer: TxTimer::start(&self.metrics.read),
        };
        let found = sqlx::query("SELECT id FROM projects WHERE id = $1")
            .bind(project.to_string())
            .fetch_optional(&mut *tx.tx)
            .await?;
        if found.is_none() {
            return Err(StoreError::NoSuchProject(project));
        }
        Ok(tx)
    }

    /// Records transaction durations in `metrics` from now on (the server's `/metrics`).
    pub fn with_metrics(mut self, metrics: TxMetrics) -> Store {
        self.metrics = metrics;
        self
    }

    /// Closes the pool (waits for connections to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    #[cfg(test)]
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

fn project_from_row(row: &AnyRow) -> Result<Project, StoreError> {
    let id: String = row.try_get(0)?;
    let name: String = row.try_get(1)?;
    let id =
        Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(format!("project id {id:?}: {e}")))?;
    let name = ProjectName::try_from(name)
        .map_err(|e| StoreError::Corrupt(format!("project name {e}")))?;
    Ok(Project {
        id: ProjectId(id),
        name,
    })
}

// ---------------------------------------------------------------------------------------------
// Timestamps: fixed-width UTC RFC 3339 with microseconds, e.g. 2026-11-25T03:12:07.123456Z.

/// Now, truncated to microseconds (what the database keeps), in UTC.
pub(crate) fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .unwrap_or(t)
}

pub(crate) fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

pub(crate) fn parse_time(s: &str) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|e| StoreError::Corrupt(format!("timestamp {s:?}: {e}")))
}

/// `(createTime, updateTime)` for a put: creation kept from the existing row, update time now
/// but always after the previous one (so every put visibly bumps it, even within a microsecond).
fn stamps(
    existing: Option<(String, String)>,
) -> Result<(OffsetDateTime, OffsetDateTime), StoreError> {
    let now = now();
    match existing {
        None => Ok((now, now)),
        Some((created, updated)) => {
            let created = parse_time(&created)?;
            let updated = parse_time(&updated)?;
            let next = updated + time::Duration::microseconds(1);
            Ok((created, if now < next { next } else { now }))
        }
    }
}

fn to_body<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("cannot encode entity: {e}")))
}

fn from_body<T: DeserializeOwned>(what: &str, body: &str) -> Result<T, StoreError> {
    serde_json::from_str(body)
        .map_err(|e| StoreError::Corrupt(format!("stored {what} does not decode: {e}")))
}

fn bodies<T: DeserializeOwned>(what: &str, rows: &[AnyRow]) -> Result<Vec<T>, StoreError> {
    rows.iter()
        .map(|r| {
            let body: String = r.try_get(0)?;
            from_body(what, &body)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Lists.

/// The listable tables and how `Field`s map onto their columns. All SQL text comes from here;
/// user input only ever arrives as bound values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Registries,
    Applications,
    Packages,
    Artifacts,
}

/// A list column: the expression a filter's `LIKE` applies to (already lowercase), and the
/// expressions to order by.
struct Column {
    filter: &'static str,
    order: &'static [&'static str],
}

const fn col(filter: &'static str, order: &'static [&'static str]) -> Option<Column> {
    Some(Column { filter, order })
}

impl Table {
    fn sql(self) -> &'static str {
        match self {
            Table::Registries => "registries",
            Table::Applications => "applications",
            Table::Packages => "deployment_packages",
            Table::Artifacts => "artifacts",
        }
    }

    fn entity(self) -> &'static str {
        match self {
            Table::Registries => "registry",
            Table::Applications => "application",
            Table::Packages => "deployment package",
            Table::Artifacts => "artifact",
        }
    }

    /// The sealed table this is, when its `body` is sealed (see [`crate::sealing`]).
    fn sealed(self) -> Option<SealedTable> {
        match self {
            Table::Registries => Some(SealedTable::Registries),
            Table::Applications | Table::Packages | Table::Artifacts => None,
        }
    }

    fn versioned(self) -> bool {
        matches!(self, Table::Applications | Table::Packages)
    }

    fn column(self, field: Field) -> Option<Column> {
        let apps = self == Table::Applications;
        match field {
            Field::Name => col("LOWER(t.name)", &["t.name"]),
            // Free text: lowercased in Rust on write (Unicode-aware, same on both backends);
            // ordered case-insensitively, ties by exact text.
            Field::DisplayName => col(
                "t.display_name_lc",
                &["t.display_name_lc", "t.display_name"],
            ),
            Field::Description => col("t.description_lc", &["t.description_lc", "t.description"]),
            Field::CreateTime => col("LOWER(t.create_time)", &["t.create_time"]),
            Field::UpdateTime => col("LOWER(t.update_time)", &["t.update_time"]),
            Field::Version if self.versioned() => col("LOWER(t.version)", &["t.version"]),
            Field::ChartName if apps => col("LOWER(t.chart_name)", &["t.chart_name"]),
            Field::ChartVersion if apps => col("LOWER(t.chart_version)", &["t.chart_version"]),
            Field::HelmRegistryName if apps => col("LOWER(t.helm_registry)", &["t.helm_registry"]),
            Field::ImageRegistryName if apps => {
                col("LOWER(t.image_registry)", &["t.image_registry"])
            }
            Field::DefaultProfileName if apps => {
                col("LOWER(t.default_profile)", &["t.default_profile"])
            }
            Field::RegistryType if self == Table::Registries => col("LOWER(t.type)", &["t.type"]),
            Field::MimeType if self == Table::Artifacts => {
                col("LOWER(t.mime_type)", &["t.mime_type"])
            }
            Field::Version
            | Field::ChartName
            | Field::ChartVersion
            | Field::HelmRegistryName
            | Field::ImageRegistryName
            | Field::DefaultProfileName
            | Field::RegistryType
            | Field::MimeType
            | Field::Id
            | Field::AppName
            | Field::AppVersion
            | Field::DeployId
            | Field::Status
            | Field::LastSeen
            | Field::Connection => None,
        }
    }

    fn column_or_err(self, field: Field) -> Result<Column, StoreError> {
        self.column(field).ok_or(StoreError::UnsupportedListField {
            entity: self.entity(),
            field,
        })
    }
}

/// A value bound to a list query.
enum Arg {
    Text(String),
    Int(i64),
}

/// The SQL of a list: the page query and the count query, with their arguments.
struct ListSql {
    page: String,
    count: String,
    /// Arguments of the page query; the count query takes all but the last two.
    args: Vec<Arg>,
}

fn list_sql(table: Table, project: ProjectId, q: &ListQuery) -> Result<ListSql, StoreError> {
    let mut args = vec![Arg::Text(project.to_string())];
    let mut where_ = String::from("t.project_id = $1");

    if !q.filter.is_empty() {
        let mut terms = Vec::with_capacity(q.filter.len());
        for term in &q.filter {
            let column = table.column_or_err(term.field)?;
            args.push(Arg::Text(term.like_pattern()));
            terms.push(format!(
                "{} LIKE ${} ESCAPE '\\'",
                column.filter,
                args.len()
            ));
        }
        where_.push_str(&format!(" AND ({})", terms.join(" OR ")));
    }

    if !q.kinds.is_empty() && matches!(table, Table::Applications | Table::Packages) {
        let mut placeholders = Vec::new();
        for kind in &q.kinds {
            args.push(Arg::Text(kind.as_str().to_string()));
            placeholders.push(format!("${}", args.len()));
        }
        let mut cond = format!("t.kind IN ({})", placeholders.join(", "));
        if q.kinds.contains(&Kind::Normal) {
            cond.push_str(" OR t.kind IS NULL OR t.kind = ''");
        }
        where_.push_str(&format!(" AND ({cond})"));
    }

    let mut order = Vec::new();
    for term in &q.order_by {
        let column = table.column_or_err(term.field)?;
        let dir = if term.descending { "DESC" } else { "ASC" };
        order.extend(column.order.iter().map(|c| format!("{c} {dir}")));
    }
    // Stable tiebreak on the key, so pages never overlap or skip.
    order.push("t.name ASC".into());
    let (key_select, key_join) = if table.versioned() {
        order.push("t.version ASC".into());
        (
            "t.name AS k_name, t.version AS k_version",
            "t.name = k.k_name AND t.version = k.k_version",
        )
    } else {
        ("t.name AS k_name", "t.name = k.k_name")
    };
    let order = order.join(", ");

    let count = format!("SELECT COUNT(*) FROM {} t WHERE {where_}", table.sql());
    args.push(Arg::Int(i64::from(q.page_size)));
    let limit = args.len();
    args.push(Arg::Int(i64::try_from(q.offset).unwrap_or(i64::MAX)));
    let offset = args.len();
    // Pick the page by key first, then join back for the bodies of just those rows (and the
    // name, which a sealed body is bound to).
    let page = format!(
        "SELECT t.body, t.name FROM {tab} t JOIN (SELECT {key_select} FROM {tab} t WHERE {where_} ORDER BY {order} \
         LIMIT ${limit} OFFSET ${offset}) k ON t.project_id = $1 AND {key_join} ORDER BY {order}",
        tab = table.sql()
    );
    Ok(ListSql { page, count, args })
}

fn bind_args<'q>(
    mut query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    args: &[Arg],
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    for a in args {
        query = match a {
            Arg::Text(s) => query.bind(s.clone()),
            Arg::Int(i) => query.bind(*i),
        };
    }
    query
}

// ---------------------------------------------------------------------------------------------

fn display_lc(s: &str) -> String {
    s.to_lowercase()
}

impl CatalogTx {
    pub fn project(&self) -> ProjectId {
        self.project
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        let CatalogTx {
            tx,
            _write_guard: guard,
            _timer: timer,
            ..
        } = self;
        tx.commit().await?;
        drop(guard);
        drop(timer);
        Ok(())
    }

    pub(crate) fn pid(&self) -> String {
        self.project.to_string()
    }

    pub(crate) fn check_writable(&self) -> Result<(), StoreError> {
        if self.writable {
            Ok(())
        } else {
            Err(StoreError::ReadOnly)
        }
    }

    async fn list<T: DeserializeOwned>(
        &mut self,
        table: Table,
        q: &ListQuery,
    ) -> Result<(Vec<T>, u64), StoreError> {
        let sql = list_sql(table, self.project, q)?;
        let rows = bind_args(sqlx::query(&sql.page), &sql.args)
            .fetch_all(&mut *self.tx)
            .await?;
        let items = rows
            .iter()
            .map(|r| self.decode(table, &r.try_get::<String, _>(1)?, r.try_get(0)?))
            .collect::<Result<Vec<T>, StoreError>>()?;
        let n = items.len() as u64;
        // A short, non-empty page (or an empty first page) already tells the total.
        let total = if (n > 0 && n < u64::from(q.page_size))
            || (n == 0 && q.offset == 0 && q.page_size > 0)
        {
            q.offset + n
        } else {
            let count_args = &sql.args[..sql.args.len() - 2];
            let count: i64 = bind_args(sqlx::query(&sql.count), count_args)
                .fetch_one(&mut *self.tx)
                .await?
                .try_get(0)?;
            u64::try_from(count).unwrap_or(0)
        };
        Ok((items, total))
    }

    /// `(create_time, update_time)` of an existing row.
    async fn existing_times(
        &mut self,
        table: Table,
        name: &str,
        version: Option<&str>,
    ) -> Result<Option<(String, String)>, StoreError> {
        let sql = match version {
            Some(_) => format!(
                "SELECT create_time, update_time FROM {} WHERE project_id = $1 AND name = $2 AND version = $3",
                table.sql()
            ),
            None => format!(
                "SELECT create_time, update_time FROM {} WHERE project_id = $1 AND name = $2",
                table.sql()
            ),
        };
        let mut query = sqlx::query(&sql).bind(self.pid()).bind(name.to_string());
        if let Some(v) = version {
            query = query.bind(v.to_string());
        }
        let row = query.fetch_optional(&mut *self.tx).await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    async fn get_body<T: DeserializeOwned>(
        &mut self,
        table: Table,
        name: &str,
        version: Option<&str>,
    ) -> Result<Option<T>, StoreError> {
        let sql = match version {
            Some(_) => format!(
                "SELECT body FROM {} WHERE project_id = $1 AND name = $2 AND version = $3",
                table.sql()
            ),
            None => format!(
                "SELECT body FROM {} WHERE project_id = $1 AND name = $2",
                table.sql()
            ),
        };
        let mut query = sqlx::query(&sql).bind(self.pid()).bind(name.to_string());
        if let Some(v) = version {
            query = query.bind(v.to_string());
        }
        let row = query.fetch_optional(&mut *self.tx).await?;
        match row {
            None => Ok(None),
            Some(r) => self.decode(table, name, r.try_get(0)?).map(Some),
        }
    }

    /// The entity of the row named `name` from its stored `body`, opened first where the table
    /// is sealed.
    fn decode<T: DeserializeOwned>(
        &self,
        table: Table,
        name: &str,
        stored: String,
    ) -> Result<T, StoreError> {
        let body = match table.sealed() {
            Some(sealed) => open_body(self.keyring.as_deref(), sealed, &self.pid(), name, stored)?,
            None => stored,
        };
        from_body(table.entity(), &body)
    }

    async fn delete_row(
        &mut self,
        table: Table,
        name: &str,
        version: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.check_writable()?;
        let sql = match version {
            Some(_) => format!(
                "DELETE FROM {} WHERE project_id = $1 AND name = $2 AND version = $3",
                table.sql()
            ),
            None => format!(
                "DELETE FROM {} WHERE project_id = $1 AND name = $2",
                table.sql()
            ),
        };
        let mut query = sqlx::query(&sql).bind(self.pid()).bind(name.to_string());
        if let Some(v) = version {
            query = query.bind(v.to_string());
        }
        Ok(query.execute(&mut *self.tx).await?.rows_affected() > 0)
    }

    // ---- registries
    pub async fn get_registry(&mut self, name: &str) -> Result<Option<Registry>, StoreError> {
        self.get_body(Table::Registries, name, None).await
    }
    /// Page of registries and `totalElements` (count before paging).
    pub async fn list_registries(
        &mut self,
        q: &ListQuery,
    ) -> Result<(Vec<Registry>, u64), StoreError> {
        self.list(Table::Registries, q).await
    }
    /// Upserts a row of a name-keyed table (registries, artifacts): the shared columns plus the
    /// table's one filterable column of its own. Table and column names are static.
    async fn upsert_named(
        &mut self,
        table: Table,
        row: NamedRow<'_>,
        created: OffsetDateTime,
        updated: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let (table, extra) = (table.sql(), row.extra.0);
        let sql = format!(
            "INSERT INTO {table} (project_id, name, display_name, display_name_lc, description, description_lc, \
             {extra}, body, create_time, update_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (project_id, name) DO UPDATE SET display_name = excluded.display_name, \
             display_name_lc = excluded.display_name_lc, description = excluded.description, \
             description_lc = excluded.description_lc, {extra} = excluded.{extra}, body = excluded.body, \
             update_time = excluded.update_time"
        );
        sqlx::query(&sql)
            .bind(self.pid())
            .bind(row.name.to_string())
            .bind(row.display_name.to_string())
            .bind(display_lc(row.display_name))
            .bind(row.description.to_string())
            .bind(display_lc(row.description))
            .bind(row.extra.1.to_string())
            .bind(row.body)
            .bind(format_time(created))
            .bind(format_time(updated))
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Inserts or replaces by name. `createTime` kept from the existing row (or now), `updateTime`
    /// now; returns the stored entity with both set.
    pub async fn put_registry(&mut self, r: &Registry) -> Result<Registry, StoreError> {
        self.check_writable()?;
        let existing = self
            .existing_times(Table::Registries, &r.name, None)
            .await?;
        let (created, updated) = stamps(existing)?;
        let mut r = r.clone();
        r.create_time = Some(created);
        r.update_time = Some(updated);
        let row = NamedRow {
            name: &r.name,
            display_name: &r.display_name,
            description: &r.description,
            extra: ("type", &r.registry_type),
            body: seal_body(
                self.keyring.as_deref(),
                SealedTable::Registries,
                &self.pid(),
                &r.name,
                to_body(&r)?,
            ),
        };
        self.upsert_named(Table::Registries, row, created, updated)
            .await?;
        Ok(r)
    }
    pub async fn delete_registry(&mut self, name: &str) -> Result<bool, StoreError> {
        self.delete_row(Table::Registries, name, None).await
    }
    /// Applications using the registry: `(app name, version, "helm" | "image")`.
    pub async fn registry_users(
        &mut self,
        name: &str,
    ) -> Result<Vec<(String, String, &'static str)>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, version, helm_registry, image_registry FROM applications \
             WHERE project_id = $1 AND (helm_registry = $2 OR image_registry = $2) ORDER BY name, version",
        )
        .bind(self.pid())
        .bind(name.to_string())
        .fetch_all(&mut *self.tx)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let app: String = r.try_get(0)?;
            let version: String = r.try_get(1)?;
            let helm: String = r.try_get(2)?;
            let image: String = r.try_get(3)?;
            if helm == name {
                out.push((app.clone(), version.clone(), "helm"));
            }
            if image == name {
                out.push((app, version, "image"));
            }
        }
        Ok(out)
    }

    // ---- applications
    pub async fn get_application(
        &mut self,
        name: &str,
        version: &str,
    ) -> Result<Option<Application>, StoreError> {
        self.get_body(Table::Applications, name, Some(version))
            .await
    }
    pub async fn application_versions(
        &mut self,
        name: &str,
    ) -> Result<Vec<Application>, StoreError> {
        let rows = sqlx::query(
            "SELECT body FROM applications WHERE project_id = $1 AND name = $2 ORDER BY version",
        )
        .bind(self.pid())
        .bind(name.to_string())
        .fetch_all(&mut *self.tx)
        .await?;
        bodies("application", &rows)
    }
    pub async fn list_applications(
        &mut self,
        q: &ListQuery,
    ) -> Result<(Vec<Application>, u64), StoreError> {
        self.list(Table::Applications, q).await
    }
    pub async fn put_application(&mut self, a: &Application) -> Result<Application, StoreError> {
        self.check_writable()?;
        let existing = self
            .existing_times(Table::Applications, &a.name, Some(&a.version))
            .await?;
        let (created, updated) = stamps(existing)?;
        let mut a = a.clone();
        a.create_time = Some(created);
        a.update_time = Some(updated);
        for p in &mut a.profiles {
            p.create_time = Some(created);
            p.update_time = Some(updated);
        }
        sqlx::query(
            "INSERT INTO applications (project_id, name, version, display_name, display_name_lc, description, \
             description_lc, kind, chart_name, chart_version, helm_registry, image_registry, default_profile, body, \
             create_time, update_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             ON CONFLICT (project_id, name, version) DO UPDATE SET display_name = excluded.display_name, \
             display_name_lc = excluded.display_name_lc, description = excluded.description, \
             description_lc = excluded.description_lc, kind = excluded.kind, chart_name = excluded.chart_name, \
             chart_version = excluded.chart_version, helm_registry = excluded.helm_registry, \
             image_registry = excluded.image_registry, default_profile = excluded.default_profile, \
             body = excluded.body, update_time = excluded.update_time",
        )
        .bind(self.pid())
        .bind(a.name.clone())
        .bind(a.version.clone())
        .bind(a.display_name.clone())
        .bind(display_lc(&a.display_name))
        .bind(a.description.clone())
        .bind(display_lc(&a.description))
        .bind(a.kind.as_str().to_string())
        .bind(a.chart_name.clone())
        .bind(a.chart_version.clone())
        .bind(a.helm_registry_name.clone())
        .bind(a.image_registry_name.clone())
        .bind(a.default_profile_name.clone())
        .bind(to_body(&a)?)
        .bind(format_time(created))
        .bind(format_time(updated))
        .execute(&mut *self.tx)
        .await?;
        Ok(a)
    }
    pub async fn delete_application(
        &mut self,
        name: &str,
        version: &str,
    ) -> Result<bool, StoreError> {
        self.delete_row(Table::Applications, name, Some(version))
            .await
    }
    /// Packages whose `applicationReferences` include `name:version`.
    pub async fn packages_using_application(
        &mut self,
        name: &str,
        version: &str,
    ) -> Result<Vec<DeploymentPackage>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.body FROM package_app_refs r JOIN deployment_packages p \
             ON p.project_id = r.project_id AND p.name = r.pkg_name AND p.version = r.pkg_version \
             WHERE r.project_id = $1 AND r.app_name = $2 AND r.app_version = $3 ORDER BY p.name, p.version",
        )
        .bind(self.pid())
        .bind(name.to_string())
        .bind(version.to_string())
        .fetch_all(&mut *self.tx)
        .await?;
        bodies("deployment package", &rows)
    }

    // ---- deployment packages
    pub async fn get_package(
        &mut self,
        name: &str,
        version: &str,
    ) -> Result<Option<DeploymentPackage>, StoreError> {
        self.get_body(Table::Packages, name, Some(version)).await
    }
    pub async fn package_versions(
        &mut self,
        name: &str,
    ) -> Result<Vec<DeploymentPackage>, StoreError> {
        let rows = sqlx::query("SELECT body FROM deployment_packages WHERE project_id = $1 AND name = $2 ORDER BY version")
            .bind(self.pid())
            .bind(name.to_string())
            .fetch_all(&mut *self.tx)
            .await?;
        bodies("deployment package", &rows)
    }
    pub async fn list_packages(
        &mut self,
        q: &ListQuery,
    ) -> Result<(Vec<DeploymentPackage>, u64), StoreError> {
        self.list(Table::Packages, q).await
    }
    /// Inserts or replaces; also maintains the package -> application and package -> artifact
    /// reference rows used by the in-use checks.
    pub async fn put_package(
        &mut self,
        p: &DeploymentPackage,
    ) -> Result<DeploymentPackage, StoreError> {
        self.check_writable()?;
        let existing = self
            .existing_times(Table::Packages, &p.name, Some(&p.version))
            .await?;
        let (created, updated) = stamps(existing)?;
        let mut p = p.clone();
        p.create_time = Some(created);
        p.update_time = Some(updated);
        for dp in &mut p.profiles {
            dp.create_time = Some(created);
            dp.update_time = Some(updated);
        }
        sqlx::query(
            "INSERT INTO deployment_packages (project_id, name, version, display_name, display_name_lc, description, \
             description_lc, kind, is_deployed, body, create_time, update_time) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (project_id, name, version) DO UPDATE SET display_name = excluded.display_name, \
             display_name_lc = excluded.display_name_lc, description = excluded.description, \
             description_lc = excluded.description_lc, kind = excluded.kind, is_deployed = excluded.is_deployed, \
             body = excluded.body, update_time = excluded.update_time",
        )
        .bind(self.pid())
        .bind(p.name.clone())
        .bind(p.version.clone())
        .bind(p.display_name.clone())
        .bind(display_lc(&p.display_name))
        .bind(p.description.clone())
        .bind(display_lc(&p.description))
        .bind(p.kind.as_str().to_string())
        .bind(p.is_deployed)
        .bind(to_body(&p)?)
        .bind(format_time(created))
        .bind(format_time(updated))
        .execute(&mut *self.tx)
        .await?;

        for table in ["package_app_refs", "package_artifact_refs"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE project_id = $1 AND pkg_name = $2 AND pkg_version = $3"
            ))
            .bind(self.pid())
            .bind(p.name.clone())
            .bind(p.version.clone())
            .execute(&mut *self.tx)
            .await?;
        }
        let mut apps: Vec<(&str, &str)> = p
            .application_references
            .iter()
            .map(|r| (r.name.as_str(), r.version.as_str()))
            .collect();
        apps.sort_unstable();
        apps.dedup();
        for (app, version) in apps {
            sqlx::query(
                "INSERT INTO package_app_refs (project_id, pkg_name, pkg_version, app_name, app_version) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(self.pid())
            .bind(p.name.clone())
            .bind(p.version.clone())
            .bind(app.to_string())
            .bind(version.to_string())
            .execute(&mut *self.tx)
            .await?;
        }
        let mut artifacts: Vec<&str> = p.artifacts.iter().map(|a| a.name.as_str()).collect();
        artifacts.sort_unstable();
        artifacts.dedup();
        for artifact in artifacts {
            sqlx::query(
                "INSERT INTO package_artifact_refs (project_id, pkg_name, pkg_version, artifact_name) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(self.pid())
            .bind(p.name.clone())
            .bind(p.version.clone())
            .bind(artifact.to_string())
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(p)
    }
    pub async fn delete_package(&mut self, name: &str, version: &str) -> Result<bool, StoreError> {
        self.check_writable()?;
        // Also removed by ON DELETE CASCADE; deleted explicitly so correctness never depends on
        // the foreign_keys pragma.
        for table in ["package_app_refs", "package_artifact_refs"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE project_id = $1 AND pkg_name = $2 AND pkg_version = $3"
            ))
            .bind(self.pid())
            .bind(name.to_string())
            .bind(version.to_string())
            .execute(&mut *self.tx)
            .await?;
        }
        self.delete_row(Table::Packages, name, Some(version)).await
    }

    // ---- artifacts
    pub async fn get_artifact(&mut self, name: &str) -> Result<Option<Artifact>, StoreError> {
        self.get_body(Table::Artifacts, name, None).await
    }
    pub async fn list_artifacts(
        &mut self,
        q: &ListQuery,
    ) -> Result<(Vec<Artifact>, u64), StoreError> {
        self.list(Table::Artifacts, q).await
    }
    pub async fn put_artifact(&mut self, a: &Artifact) -> Result<Artifact, StoreError> {
        self.check_writable()?;
        let existing = self.existing_times(Table::Artifacts, &a.name, None).await?;
        let (created, updated) = stamps(existing)?;
        let mut a = a.clone();
        a.create_time = Some(created);
        a.update_time = Some(updated);
        let row = NamedRow {
            name: &a.name,
            display_name: &a.display_name,
            description: &a.description,
            extra: ("mime_type", &a.mime_type),
            body: to_body(&a)?,
        };
        self.upsert_named(Table::Artifacts, row, created, updated)
            .await?;
        Ok(a)
    }
    pub async fn delete_artifact(&mut self, name: &str) -> Result<bool, StoreError> {
        self.delete_row(Table::Artifacts, name, None).await
    }
    /// Packages referencing the artifact: `(name, version)`.
    pub async fn packages_using_artifact(
        &mut self,
        name: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT pkg_name, pkg_version FROM package_artifact_refs WHERE project_id = $1 AND artifact_name = $2 \
             ORDER BY pkg_name, pkg_version",
        )
        .bind(self.pid())
        .bind(name.to_string())
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    // ---- rules support
    /// The name of another entity of `scope` in this project whose display name equals
    /// `display_name` case-insensitively, excluding entities named `exclude_name` (all versions
    /// of it). `None` when the display name is free.
    pub async fn display_name_owner(
        &mut self,
        scope: DisplayNameScope,
        display_name: &str,
        exclude_name: &str,
    ) -> Result<Option<String>, StoreError> {
        if display_name.trim().is_empty() {
            return Ok(None);
        }
        let table = match scope {
            DisplayNameScope::Registry => Table::Registries,
            DisplayNameScope::Application => Table::Applications,
            DisplayNameScope::DeploymentPackage => Table::Packages,
            DisplayNameScope::Artifact => Table::Artifacts,
        };
        let sql = format!(
            "SELECT name FROM {} WHERE project_id = $1 AND display_name_lc = $2 AND name <> $3 LIMIT 1",
            table.sql()
        );
        let row = sqlx::query(&sql)
            .bind(self.pid())
            .bind(display_lc(display_name))
            .bind(exclude_name.to_string())
            .fetch_optional(&mut *self.tx)
            .await?;
        row.map(|r| r.try_get(0)).transpose().map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sqlx-sqlite binds `$N` to argument N (not by order of appearance), and a repeated `$N`
    /// is the same argument — the store's SQL relies on both.
    #[tokio::test]
    async fn dollar_placeholders_are_numbered_on_every_backend() {
        for (label, store, _dir) in crate::testing::fresh_stores().await {
            let row = sqlx::query("SELECT $2 || $1 || $2")
                .bind("a".to_string())
                .bind("b".to_string())
                .fetch_one(store.pool())
                .await
                .unwrap();
            let s: String = row.try_get(0).unwrap();
            assert_eq!(s, "bab", "{label}");
            store.close().await;
        }
    }

    #[test]
    fn timestamps_are_fixed_width_and_round_trip() {
        let t = time::macros::datetime!(2026-11-25 03:12:07.123456 UTC);
        assert_eq!(format_time(t), "2026-11-25T03:12:07.123456Z");
        let whole = time::macros::datetime!(2026-01-02 03:04:05 UTC);
        assert_eq!(format_time(whole), "2026-01-02T03:04:05.000000Z");
        assert_eq!(parse_time(&format_time(t)).unwrap(), t);
        let n = now();
        assert_eq!(parse_time(&format_time(n)).unwrap(), n);
    }

    #[test]
    fn update_time_always_moves_forward() {
        let future = time::macros::datetime!(2999-01-01 00:00:00 UTC);
        let (c, u) = stamps(Some((format_time(future), format_time(future)))).unwrap();
        assert_eq!(c, future);
        assert_eq!(u, future + time::Duration::microseconds(1));
    }

    #[test]
    fn list_sql_carries_user_values_only_as_arguments() {
        use canopy_core::list::{FilterTerm, OrderTerm};
        let evil = "x' OR 1=1; DROP TABLE applications; --";
        let q = ListQuery {
            filter: vec![
                FilterTerm {
                    field: Field::Name,
                    value: evil.into(),
                },
                FilterTerm {
                    field: Field::DisplayName,
                    value: "*".into(),
                },
            ],
            order_by: vec![OrderTerm {
                field: Field::DisplayName,
                descending: true,
            }],
            kinds: vec![Kind::Normal, Kind::Addon],
            ..ListQuery::default()
        };
        let sql = list_sql(Table::Applications, ProjectId(Uuid::nil()), &q).unwrap();
        for text in [&sql.page, &sql.count] {
            assert!(!text.contains("DROP") && !text.contains("1=1"), "{text}");
        }
        // project, 2 patterns, 2 kinds, limit, offset
        assert_eq!(sql.args.len(), 7);
        assert!(sql.page.contains("LIMIT $6 OFFSET $7"), "{}", sql.page);
        assert!(
            sql.count.contains("$5") && !sql.count.contains("$6"),
            "{}",
            sql.count
        );
    }

    #[test]
    fn every_field_maps_to_a_column_where_the_api_allows_it() {
        use canopy_core::list::Entity;
        for (entity, table) in [
            (Entity::Registry, Table::Registries),
            (Entity::Application, Table::Applications),
            (Entity::DeploymentPackage, Table::Packages),
            (Entity::Artifact, Table::Artifacts),
        ] {
            for (name, field) in entity.fields() {
                assert!(table.column(*field).is_some(), "{entity:?}.{name}");
            }
        }
        assert!(Table::Registries.column(Field::MimeType).is_none());
        assert!(Table::Artifacts.column(Field::Version).is_none());
    }
}
