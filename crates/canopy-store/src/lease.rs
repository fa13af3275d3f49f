//! Leases for background work that must run on one server replica at a time.
//!
//! Several `canopy server` replicas can share one PostgreSQL database. Most of their work is
//! per request, but a few periodic jobs (reaping idle upload sessions, deleting expired tokens,
//! pruning the audit log) act on the whole database and must run on one replica at a time: run
//! everywhere they would multiply the database's work by the number of replicas and race each
//! other. A [`Lease`] says which replica runs a job.
//!
//! On PostgreSQL a lease is a *session* advisory lock, `pg_try_advisory_lock(class, job)`
//! with [`LEASE_LOCK_CLASS`] and the job's [`LeaseJob::key`], held on a connection taken out of
//! the pool for as long as the lease is held. Nothing is written to a table: PostgreSQL itself
//! releases the lock when that connection's session ends, whether the replica stopped, was
//! killed (the kernel closes its socket) or its host vanished (the server's TCP keepalives,
//! set on the lease's session, end the session within [`LEASE_DEAD_PEER_SECS`] seconds). Another
//! replica then takes the lease at its next try. The holder checks its lease with
//! [`Lease::check`] and stops the job when the check fails (its connection was terminated, or
//! the database cannot be reached): a job never runs without its lease for longer than the pass
//! in flight, and every job is idempotent, so that pass is harmless.
//!
//! On SQLite one process holds the data directory (the server's `canopy.lock`), so a lease is
//! always granted and holds no connection.

use std::time::Duration;

use sqlx::{AnyConnection, Connection as _, Executor as _};

use crate::{Backend, Store, StoreError};

/// The first key of every Canopy lease's advisory lock (`pg_try_advisory_lock(int, int)`):
/// `0x43414E4F`, "CANO" in ASCII. The second key is [`LeaseJob::key`]. The two-key form lives
/// in a key space of its own, apart from the one-key (bigint) locks that sqlx's migrator takes.
pub const LEASE_LOCK_CLASS: i32 = 0x4341_4E4F;

/// How long a lease check may take before the lease counts as lost (the database does not
/// answer: the holder stops its job rather than run it unguarded).
pub const LEASE_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Within how many seconds PostgreSQL ends the session of a lease holder whose host vanished
/// without closing its connection (power loss, a partition): the lease session's
/// `tcp_keepalives_idle` (20 s) + `tcp_keepalives_count` (4) × `tcp_keepalives_interval` (5 s).
pub const LEASE_DEAD_PEER_SECS: u64 = 40;

/// Session settings of a lease's connection: TCP keepalives from the database server, so that
/// a lease held by a vanished host is released (see [`LEASE_DEAD_PEER_SECS`]).
const LEASE_SESSION_SETTINGS: [&str; 3] = [
    "SET tcp_keepalives_idle = 20",
    "SET tcp_keepalives_interval = 5",
    "SET tcp_keepalives_count = 4",
];

/// A background job that runs on one replica at a time. Its advisory-lock key is
/// `(LEASE_LOCK_CLASS, key())`; keys are never reused for another job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseJob {
    /// Deleting upload sessions idle past their timeout (key 1).
    UploadReaper,
    /// Deleting expired tokens and audit entries past their retention (key 2).
    Housekeeping,
}

impl LeaseJob {
    /// Every job, in key order.
    pub const ALL: [LeaseJob; 2] = [LeaseJob::UploadReaper, LeaseJob::Housekeeping];

    /// The job's name in logs and docs.
    pub fn name(self) -> &'static str {
        match self {
            LeaseJob::UploadReaper => "upload-reaper",
            LeaseJob::Housekeeping => "housekeeping",
        }
    }

    /// The second key of the job's advisory lock (documented in docs/OPERATIONS.md).
    pub fn key(self) -> i32 {
        match self {
            LeaseJob::UploadReaper => 1,
            LeaseJob::Housekeeping => 2,
        }
    }
}

impl std::fmt::Display for LeaseJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The right to run one [`LeaseJob`], held until dropped (or [`Lease::release`]d) or until its
/// connection ends. Check it with [`Lease::check`] before each pass of the job.
#[derive(Debug)]
pub struct Lease {
    job: LeaseJob,
    /// PostgreSQL: the session that holds the advisory lock (out of the pool). SQLite: none.
    conn: Option<AnyConnection>,
}

impl Store {
    /// Takes the lease of `job` if no other replica holds it: `Ok(None)` when another one does.
    /// Always granted on SQLite (one process per database).
    pub async fn try_lease(&self, job: LeaseJob) -> Result<Option<Lease>, StoreError> {
        if self.backend == Backend::Sqlite {
            return Ok(Some(Lease { job, conn: None }));
        }
        let mut conn = self.pool.acquire().await?;
        // Both keys are constants of this module, never input.
        let granted: bool = sqlx::query_scalar(&format!(
            "SELECT pg_try_advisory_lock({LEASE_LOCK_CLASS}, {})",
            job.key()
        ))
        .fetch_one(&mut *conn)
        .await?;
        if !granted {
            // No lock taken: the connection goes back to the pool.
            return Ok(None);
        }
        // The lock lives as long as this session: take the connection out of the pool (which
        // opens a replacement), so that nothing else uses or recycles it.
        let mut conn = conn.detach();
        for setting in LEASE_SESSION_SETTINGS {
            // On failure the connection is dropped here, and the lock with it.
            conn.execute(setting).await?;
        }
        Ok(Some(Lease {
            job,
            conn: Some(conn),
        }))
    }
}

impl Lease {
    /// The job this lease is for.
    pub fn job(&self) -> LeaseJob {
        self.job
    }

    /// Whether the lease is still held: its session answers within [`LEASE_CHECK_TIMEOUT`] and
    /// still holds the advisory lock. Once this fails the lease is lost for good: drop it and
    /// try [`Store::try_lease`] again later.
    pub async fn check(&mut self) -> Result<(), StoreError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let query = format!(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' \
             AND pid = pg_backend_pid() AND classid = {LEASE_LOCK_CLASS} AND objid = {} \
             AND objsubid = 2 AND granted)",
            self.job.key()
        );
        let held = tokio::time::timeout(
            LEASE_CHECK_TIMEOUT,
            sqlx::query_scalar::<_, bool>(&query).fetch_one(&mut *conn),
        )
        .await;
        let lost = |reason: String| StoreError::LeaseLost {
            job: self.job.name(),
            reason,
        };
        match held {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(lost("the session no longer holds its advisory lock".into())),
            Ok(Err(e)) => Err(lost(format!("its database session failed: {e}"))),
            Err(_) => Err(lost(format!(
                "the database did not answer within {} s",
                LEASE_CHECK_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Gives the lease up at once (another replica can take it at its next try). Dropping the
    /// lease does the same, by closing its connection without a goodbye.
    pub async fn release(mut self) {
        if let Some(mut conn) = self.conn.take() {
            let unlock = format!(
                "SELECT pg_advisory_unlock({LEASE_LOCK_CLASS}, {})",
                self.job.key()
            );
            let _ = tokio::time::timeout(LEASE_CHECK_TIMEOUT, async {
                let _ = conn.execute(unlock.as_str()).await;
                let _ = conn.close().await;
            })
            .await;
        }
    }
}
