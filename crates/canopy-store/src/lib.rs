//! Canopy's storage. One [`Store`] over two backends: an embedded SQLite file (the default) and
//! PostgreSQL (when one machine is outgrown). Both run the same SQL through `sqlx::Any`, with a
//! migration directory per backend; the conformance suite in `tests/` runs against both.
//!
//! SQL lives only in this crate, and every query is scoped by project. Catalog writes happen in
//! a [`CatalogTx`]: the app layer reads, checks its rules and writes inside one transaction, so
//! a multi-entity change (an upload) is applied completely or not at all. Writers of one project
//! are serialized (an in-process lock on SQLite; `SELECT ... FOR UPDATE` on the project row on
//! PostgreSQL, which also serializes replicas), so uniqueness rules checked by the app layer
//! cannot race.
//!
//! Background jobs that must run once across server replicas take a [`Lease`] first
//! ([`Store::try_lease`]: a PostgreSQL session advisory lock; always granted on SQLite).
//!
//! Migrations are *expand/contract* so that replicas of two releases can share a database
//! during a rolling upgrade: release N's migrations only add (tables, nullable or defaulted
//! columns, indexes), and what N no longer uses is removed in N+1 at the earliest, once no
//! replica of N-1 runs. A server therefore starts on a database that already has migrations it
//! does not know (applied by a newer replica): it applies its own missing ones and ignores
//! the newer ones (docs/OPERATIONS.md, Upgrades).
//!
//! Must not depend on: the server, HTTP, or anything above it.

use canopy_core::names::ProjectName;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A project's internal id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProjectId(pub Uuid);

impl std::fmt::Display for ProjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A project (tenant). Everything in the catalog belongs to exactly one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    pub id: ProjectId,
    pub name: ProjectName,
}

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The storage layer's one error type.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A sealed (encrypted) body that cannot be opened: no keyring, a key missing from it, or
    /// a value altered or moved from another row. Names the row, never the content.
    #[error("cannot read {table} row {row}: {reason}")]
    Sealed {
        table: &'static str,
        row: String,
        reason: String,
    },
    #[error("this store has no secret key configured, so it cannot encrypt")]
    NoKeyring,
    /// The embedded database's file (or its journal) could not be created or given its mode.
    #[error("cannot use the database file {path}: {source}")]
    File {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    #[error("project {0} does not exist")]
    NoSuchProject(ProjectId),
    #[error("upload session {0} does not exist in this project")]
    NoSuchUploadSession(Uuid),
    /// Reading an upload file to store it, or writing one read back, failed (the caller's
    /// stream: a spool file on disk).
    #[error("upload file content could not be streamed: {0}")]
    UploadContent(#[source] std::io::Error),
    #[error("cannot write in a read-only catalog transaction")]
    ReadOnly,
    /// A background job's lease ([`Lease`]) is no longer held: its session ended or the
    /// database does not answer.
    #[error("lost the lease of the {job} job: {reason}")]
    LeaseLost { job: &'static str, reason: String },
    #[error("{entity} lists cannot filter or order by {field:?}")]
    UnsupportedListField {
        entity: &'static str,
        field: canopy_core::list::Field,
    },
}

/// Which catalog entity type a display-name check is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisplayNameScope {
    Registry,
    Application,
    DeploymentPackage,
    Artifact,
}

/// One file of a pending upload session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUploadFile {
    pub name: String,
    pub content: Vec<u8>,
}

mod audit;
pub mod feed;
mod fleet;
mod lease;
mod policy;
mod sealing;
mod sql;
mod tenancy;
mod uploads;

pub use audit::{
    AUDIT_DEFAULT_PAGE_SIZE, AUDIT_MAX_PAGE_SIZE, AuditQuery, AuditRecord, NewAuditRecord,
};
pub use feed::{
    ChangeKind, ChangeListener, ChangePage, FleetChange, LiveChange, LiveKind, LoggedChange,
    Notified,
};
pub use fleet::{
    DeploymentRow, EdgeRow, EdgeSeen, EnrollmentTokenRow, FleetSnapshot, SEEN_CHUNK,
    WorkloadControlRow,
};
pub use lease::{LEASE_CHECK_TIMEOUT, LEASE_DEAD_PEER_SECS, LEASE_LOCK_CLASS, Lease, LeaseJob};
pub use sealing::ResealReport;
pub use sql::{CatalogTx, Store, TxMetrics};
pub use tenancy::{AdminReset, Org, OrgDelete, ProjectPut, ProjectRecord, Put, TokenRow, UserRow};
pub use uploads::{
    UPLOAD_CHUNK_BYTES, UploadFileEntry, UploadSessionInfo, UploadUsage, UploadUsages,
};

/// Test helpers shared by this crate's conformance suite and the in-process harness.
pub mod testing;
