//! The change feed: how one server replica learns what another committed (migration 0007).
//!
//! Why: every replica keeps the fleet in memory (the server's hub). PostgreSQL is the only
//! thing replicas share, so a fleet write leaves, in its own transaction, one
//! `fleet_changes` row per entity it touched (kind, project, entity id: never a body or a
//! secret) under the revision it bumped, and sends `NOTIFY canopy_fleet` (PostgreSQL delivers
//! a notification sent inside a transaction when, and only if, it commits). Every replica
//! listens ([`Store::listen`]), reads the rows past the revision it has applied
//! ([`Store::fleet_changes_after`]) and re-reads each entity ([`Store::deployment_row`],
//! [`Store::edge_row`], [`Store::edge_controls`]). Notifications are only the wake-up: a
//! replica that missed some (its listener reconnected, or it just started) catches up exactly
//! from the log by polling.
//!
//! Why no revision is skipped: a fleet write takes the `fleet_revision` row lock first
//! ([`CatalogTx::lock_fleet_revision`]) and holds it to commit, so revision R+1 cannot be
//! taken before R committed (or rolled back, which frees R for the next writer). Revisions
//! therefore commit in order and without holes, and once a reader (READ COMMITTED) sees
//! revision R it also sees every revision below it. The same holds for the `live_revision`
//! counter of [`LiveKind`] changes (status, revocation), which must not bump the fleet
//! revision (edge generations are drawn from it).
//!
//! Pruning ([`Store::prune_changes`]) deletes rows by age. A replica whose applied revision
//! is below the oldest kept row minus one (it slept longer than the retention) sees a hole
//! and reloads the whole fleet instead.
//!
//! SQLite serves one process: the fleet rows are written the same (one code path), nothing
//! listens, and `live_changes` is not written.

use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;

use crate::fleet::{
    CONTROL_COLUMNS, DEPLOYMENT_COLUMNS, EDGE_COLUMNS, control_from_row, deployment_from_row,
    edge_from_row,
};
use crate::sql::{format_time, now};
use crate::{
    Backend, CatalogTx, DeploymentRow, EdgeRow, ProjectId, Store, StoreError, WorkloadControlRow,
};

/// The PostgreSQL channel fleet and live changes are announced on (payload: `fleet:R` or
/// `live:R`, the revision committed).
pub const FEED_CHANNEL: &str = "canopy_fleet";

/// What one fleet change row is about (the entity is re-read from its table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// A deployment created, updated or deleted (entity: its id).
    Deployment,
    /// An edge enrolled, relabelled or removed (entity: its id).
    Edge,
    /// The workload controls of an edge (entity: the edge id).
    Controls,
    /// A project deleted with everything in it (entity: the project id).
    Project,
}

impl ChangeKind {
    fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Deployment => "deployment",
            ChangeKind::Edge => "edge",
            ChangeKind::Controls => "controls",
            ChangeKind::Project => "project",
        }
    }

    fn parse(s: &str) -> Result<ChangeKind, StoreError> {
        Ok(match s {
            "deployment" => ChangeKind::Deployment,
            "edge" => ChangeKind::Edge,
            "controls" => ChangeKind::Controls,
            "project" => ChangeKind::Project,
            other => return Err(StoreError::Corrupt(format!("fleet change kind {other:?}"))),
        })
    }
}

/// One entity a fleet write touched.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FleetChange {
    pub kind: ChangeKind,
    pub project_id: ProjectId,
    pub entity_id: String,
}

/// A fleet change as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedChange {
    pub revision: u64,
    pub change: FleetChange,
    /// The [`Store::origin`] of the replica that made it.
    pub origin: String,
    pub commit_time: OffsetDateTime,
}

/// What a live change is about: things every replica must learn soon that are not fleet
/// revisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LiveKind {
    /// An edge's stored status, agent or "last seen" changed (entity: the edge id).
    Status,
    /// API tokens or users changed: token caches must be dropped (entity: empty).
    Auth,
}

impl LiveKind {
    fn as_str(self) -> &'static str {
        match self {
            LiveKind::Status => "status",
            LiveKind::Auth => "auth",
        }
    }

    fn parse(s: &str) -> Result<LiveKind, StoreError> {
        Ok(match s {
            "status" => LiveKind::Status,
            "auth" => LiveKind::Auth,
            other => return Err(StoreError::Corrupt(format!("live change kind {other:?}"))),
        })
    }
}

/// A live change as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveChange {
    pub revision: u64,
    pub kind: LiveKind,
    pub entity_id: String,
    pub origin: String,
    pub commit_time: OffsetDateTime,
}

/// A page of one log past a revision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangePage<T> {
    /// The counter's committed value when the page was read (read before the rows: the rows
    /// may go further, never less far unless they were pruned).
    pub current: u64,
    /// The rows, in revision order (all rows of a revision together).
    pub rows: Vec<T>,
}

/// Which counter a notification was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notified {
    Fleet(u64),
    Live(u64),
    /// A payload this version does not know (a newer replica's): poll both logs.
    Other,
}

/// The PostgreSQL `LISTEN` connection of one replica (see [`Store::listen`]).
pub struct ChangeListener {
    inner: sqlx::postgres::PgListener,
}

impl ChangeListener {
    /// Waits for the next notification. After the connection was lost and re-established
    /// notifications sent meanwhile are gone: the caller must poll the logs.
    pub async fn recv(&mut self) -> Result<Notified, StoreError> {
        let n = self.inner.recv().await?;
        Ok(parse_payload(n.payload()))
    }
}

fn parse_payload(p: &str) -> Notified {
    let num = |s: &str| s.parse::<u64>().ok();
    match p.split_once(':') {
        Some(("fleet", r)) => num(r).map_or(Notified::Other, Notified::Fleet),
        Some(("live", r)) => num(r).map_or(Notified::Other, Notified::Live),
        _ => Notified::Other,
    }
}

fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn project_of(s: &str) -> Result<ProjectId, StoreError> {
    uuid::Uuid::parse_str(s)
        .map(ProjectId)
        .map_err(|e| StoreError::Corrupt(format!("change log project id {s:?}: {e}")))
}

/// Largest page [`Store::fleet_changes_after`] and [`Store::live_changes_after`] return.
pub const CHANGE_PAGE: usize = 1000;

impl Store {
    /// This store's name in the change feed (random per [`Store::connect`]).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The committed fleet revision.
    pub async fn fleet_revision(&self) -> Result<u64, StoreError> {
        self.committed_counter("SELECT revision FROM fleet_revision WHERE id = 1")
            .await
    }

    /// One of the two logs' counters (a one-row table), as committed.
    async fn committed_counter(&self, query: &'static str) -> Result<u64, StoreError> {
        let r: i64 = sqlx::query(query).fetch_one(&self.pool).await?.try_get(0)?;
        Ok(count(r))
    }

    /// The fleet changes after revision `after` (at most [`CHANGE_PAGE`] rows, whole revisions
    /// only unless one revision alone is bigger).
    pub async fn fleet_changes_after(
        &self,
        after: u64,
    ) -> Result<ChangePage<LoggedChange>, StoreError> {
        let current = self.fleet_revision().await?;
        let rows = sqlx::query(
            "SELECT revision, kind, project_id, entity_id, origin, commit_time FROM fleet_changes \
             WHERE revision > $1 ORDER BY revision, seq LIMIT $2",
        )
        .bind(i64_of(after))
        .bind(i64_of(CHANGE_PAGE as u64 + 1))
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows
            .iter()
            .map(|r: &AnyRow| {
                Ok(LoggedChange {
                    revision: count(r.try_get(0)?),
                    change: FleetChange {
                        kind: ChangeKind::parse(&r.try_get::<String, _>(1)?)?,
                        project_id: project_of(&r.try_get::<String, _>(2)?)?,
                        entity_id: r.try_get(3)?,
                    },
                    origin: r.try_get(4)?,
                    commit_time: crate::sql::parse_time(&r.try_get::<String, _>(5)?)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        trim_page(&mut out, |c| c.revision);
        Ok(ChangePage { current, rows: out })
    }

    /// The committed live revision.
    pub async fn live_revision(&self) -> Result<u64, StoreError> {
        self.committed_counter("SELECT revision FROM live_revision WHERE id = 1")
            .await
    }

    /// The live changes after revision `after` (as [`Store::fleet_changes_after`]).
    pub async fn live_changes_after(
        &self,
        after: u64,
    ) -> Result<ChangePage<LiveChange>, StoreError> {
        let current = self.live_revision().await?;
        let rows = sqlx::query(
            "SELECT revision, kind, entity_id, origin, commit_time FROM live_changes \
             WHERE revision > $1 ORDER BY revision, seq LIMIT $2",
        )
        .bind(i64_of(after))
        .bind(i64_of(CHANGE_PAGE as u64 + 1))
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows
            .iter()
            .map(|r: &AnyRow| {
                Ok(LiveChange {
                    revision: count(r.try_get(0)?),
                    kind: LiveKind::parse(&r.try_get::<String, _>(1)?)?,
                    entity_id: r.try_get(2)?,
                    origin: r.try_get(3)?,
                    commit_time: crate::sql::parse_time(&r.try_get::<String, _>(4)?)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        trim_page(&mut out, |c| c.revision);
        Ok(ChangePage { current, rows: out })
    }

    /// Records live changes of `kind` about `entities` under one new live revision, and
    /// announces it (PostgreSQL; a no-op on SQLite, where no other replica exists).
    pub async fn publish_live(
        &self,
        kind: LiveKind,
        entities: &[String],
    ) -> Result<(), StoreError> {
        if self.backend != Backend::Postgres || entities.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        append_live(&mut tx, &self.origin, kind, entities).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes change rows committed before `before`, always keeping the newest row of each
    /// log (so a replica that is up to date never mistakes an empty log for a hole).
    pub async fn prune_changes(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let t = format_time(before);
        let a = sqlx::query(
            "DELETE FROM fleet_changes WHERE commit_time < $1 \
             AND revision < (SELECT MAX(revision) FROM fleet_changes)",
        )
        .bind(t.clone())
        .execute(&self.pool)
        .await?
        .rows_affected();
        let b = sqlx::query(
            "DELETE FROM live_changes WHERE commit_time < $1 \
             AND revision < (SELECT MAX(revision) FROM live_changes)",
        )
        .bind(t)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(a + b)
    }

    /// Opens this replica's `LISTEN canopy_fleet` connection; `None` on SQLite.
    pub async fn listen(&self) -> Result<Option<ChangeListener>, StoreError> {
        let Some(url) = &self.pg_url else {
            return Ok(None);
        };
        let mut inner = sqlx::postgres::PgListener::connect(url).await?;
        inner.listen(FEED_CHANNEL).await?;
        Ok(Some(ChangeListener { inner }))
    }

    /// One deployment by id, in whichever project (the feed re-reading a changed entity).
    pub async fn deployment_row(&self, id: &str) -> Result<Option<DeploymentRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| deployment_from_row(self.keyring.as_deref(), &r))
            .transpose()
    }

    /// One edge by id, in whichever project.
    pub async fn edge_row(&self, id: &str) -> Result<Option<EdgeRow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {EDGE_COLUMNS} FROM edges WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(edge_from_row).transpose()
    }

    /// The edges of these ids that exist, in whichever project ([`crate::SEEN_CHUNK`] per
    /// query).
    pub async fn edge_rows(&self, ids: &[String]) -> Result<Vec<EdgeRow>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(crate::SEEN_CHUNK) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT {EDGE_COLUMNS} FROM edges WHERE id IN ({})",
                marks.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id.clone());
            }
            for r in q.fetch_all(&self.pool).await? {
                out.push(edge_from_row(&r)?);
            }
        }
        Ok(out)
    }

    /// The workload controls of one edge.
    pub async fn edge_controls(
        &self,
        edge_id: &str,
    ) -> Result<Vec<WorkloadControlRow>, StoreError> {
        sqlx::query(&format!(
            "SELECT {CONTROL_COLUMNS} FROM workload_controls WHERE edge_id = $1 ORDER BY deployment_id, app, kind, workload"
        ))
        .bind(edge_id.to_string())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(control_from_row)
        .collect()
    }
}

/// Drops a trailing partial revision from a page that hit its limit (the next page starts
/// with it whole), unless the page is that one revision.
fn trim_page<T>(rows: &mut Vec<T>, rev: impl Fn(&T) -> u64) {
    if rows.len() <= CHANGE_PAGE {
        return;
    }
    rows.truncate(CHANGE_PAGE);
    let last = rev(&rows[rows.len() - 1]);
    let first = rev(&rows[0]);
    if first != last {
        rows.retain(|r| rev(r) != last);
    }
}

pub(crate) async fn append_live(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    origin: &str,
    kind: LiveKind,
    entities: &[String],
) -> Result<u64, StoreError> {
    sqlx::query("UPDATE live_revision SET revision = revision + 1 WHERE id = 1")
        .execute(&mut **tx)
        .await?;
    let revision: i64 = sqlx::query("SELECT revision FROM live_revision WHERE id = 1")
        .fetch_one(&mut **tx)
        .await?
        .try_get(0)?;
    let t = format_time(now());
    for (seq, e) in entities.iter().enumerate() {
        sqlx::query(
            "INSERT INTO live_changes (revision, seq, kind, entity_id, origin, commit_time) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(revision)
        .bind(i64_of(seq as u64))
        .bind(kind.as_str())
        .bind(e.clone())
        .bind(origin.to_string())
        .bind(t.clone())
        .execute(&mut **tx)
        .await?;
    }
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(FEED_CHANNEL)
        .bind(format!("live:{revision}"))
        .execute(&mut **tx)
        .await?;
    Ok(count(revision))
}

impl CatalogTx {
    /// Takes the fleet revision's row lock (PostgreSQL; SQLite's writer lock already
    /// serializes) and returns the committed revision. Every fleet write starts with it, so
    /// fleet writes of all replicas run one at a time and commit in revision order (see the
    /// module docs); the caller catches its hub up to the returned revision before checking
    /// anything against it.
    pub async fn lock_fleet_revision(&mut self) -> Result<u64, StoreError> {
        self.check_writable()?;
        let sql = match self.backend {
            Backend::Sqlite => "SELECT revision FROM fleet_revision WHERE id = 1",
            Backend::Postgres => "SELECT revision FROM fleet_revision WHERE id = 1 FOR UPDATE",
        };
        let r: i64 = sqlx::query(sql)
            .fetch_one(&mut *self.tx)
            .await?
            .try_get(0)?;
        Ok(count(r))
    }

    /// Ends a fleet write: bumps the fleet revision, appends one change row per entity and
    /// (PostgreSQL) queues the notification, which is sent if and when the transaction commits.
    /// Returns the new revision.
    pub async fn log_fleet_changes(&mut self, changes: &[FleetChange]) -> Result<u64, StoreError> {
        self.check_writable()?;
        let revision = self.bump_fleet_revision().await?;
        let t = format_time(now());
        for (seq, c) in changes.iter().enumerate() {
            sqlx::query(
                "INSERT INTO fleet_changes (revision, seq, kind, project_id, entity_id, origin, commit_time) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(i64_of(revision))
            .bind(i64_of(seq as u64))
            .bind(c.kind.as_str())
            .bind(c.project_id.to_string())
            .bind(c.entity_id.clone())
            .bind(self.origin.to_string())
            .bind(t.clone())
            .execute(&mut *self.tx)
            .await?;
        }
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(FEED_CHANNEL)
                .bind(format!("fleet:{revision}"))
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(revision)
    }

    /// Deletes this transaction's project and everything in it (catalog, upload sessions,
    /// deployments, edges, enrollment tokens, controls); false when it did not exist. The
    /// fleet write that deletes a project (the row is locked since [`Store::write`]).
    pub async fn delete_project(&mut self) -> Result<bool, StoreError> {
        self.check_writable()?;
        sqlx::query("DELETE FROM upload_files WHERE session_id IN (SELECT id FROM upload_sessions WHERE project_id = $1)")
            .bind(self.pid())
            .execute(&mut *self.tx)
            .await?;
        let done = sqlx::query("DELETE FROM projects WHERE id = $1")
            .bind(self.pid())
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse() {
        assert_eq!(parse_payload("fleet:12"), Notified::Fleet(12));
        assert_eq!(parse_payload("live:3"), Notified::Live(3));
        assert_eq!(parse_payload("fleet:x"), Notified::Other);
        assert_eq!(parse_payload("other"), Notified::Other);
    }

    #[test]
    fn a_full_page_ends_on_a_whole_revision() {
        let mut rows: Vec<u64> = (0..=CHANGE_PAGE as u64).map(|i| i / 10).collect();
        trim_page(&mut rows, |r| *r);
        let last = *rows.last().unwrap();
        assert!(rows.len() < CHANGE_PAGE);
        assert_eq!(rows.iter().filter(|r| **r == last).count(), 10);
        let mut one: Vec<u64> = vec![7; CHANGE_PAGE + 1];
        trim_page(&mut one, |r| *r);
        assert_eq!(one.len(), CHANGE_PAGE);
    }
}
