//! Fleet storage: enrollment tokens, edges, deployments and the fleet revision.
//!
//! The server keeps the fleet in memory while it runs (its hub serves 10,000 long-polls without
//! touching the database); these rows are what the hub is rebuilt from at start, written
//! through on every change. Writes run in a project's [`CatalogTx`], so a deployment and the
//! catalog package's `isDeployed` flag change in one transaction. A deployment's `body` is the
//! deployment manager's own JSON record, opaque here; it is sealed at rest when the store has a
//! keyring (see [`crate::sealing`]): [`DeploymentRow::body`] is always the plaintext.
//!
//! Edge liveness (last seen, last status) changes constantly; it is written in batches by
//! [`Store::record_edges_seen`], outside any project transaction.

use std::collections::BTreeMap;

use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;

use crate::sealing::{SealedTable, open_body, seal_body};
use crate::sql::{format_time, now, parse_time};
use crate::{Backend, CatalogTx, ProjectId, Store, StoreError};

/// An enrollment token (its secret is kept only as a hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentTokenRow {
    pub id: String,
    pub project_id: ProjectId,
    /// SHA-256 hex of the secret.
    pub secret_hash: String,
    pub description: String,
    pub create_time: OffsetDateTime,
    pub expire_time: OffsetDateTime,
    pub revoke_time: Option<OffsetDateTime>,
    /// 0 = unlimited.
    pub max_uses: u64,
    pub uses: u64,
}

/// An enrolled edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeRow {
    pub id: String,
    pub project_id: ProjectId,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// SHA-256 hex of the edge's credential.
    pub credential_hash: String,
    /// The enrollment token it enrolled with.
    pub token_id: String,
    pub create_time: OffsetDateTime,
    /// The agent's self-description (`AgentInfo` JSON).
    pub agent: String,
    pub last_seen: Option<OffsetDateTime>,
    /// The last accepted status report (`StatusReport` JSON).
    pub last_status: Option<String>,
}

/// A deployment: the deployment manager's JSON record plus the keys it is found by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentRow {
    pub id: String,
    pub project_id: ProjectId,
    pub name: String,
    pub body: String,
    pub create_time: OffsetDateTime,
    pub update_time: OffsetDateTime,
}

/// Everything the hub is rebuilt from.
#[derive(Debug, Clone, Default)]
pub struct FleetSnapshot {
    pub revision: u64,
    pub edges: Vec<EdgeRow>,
    pub deployments: Vec<DeploymentRow>,
    pub controls: Vec<WorkloadControlRow>,
}

/// An operator's standing action on one workload of one deployment's app on one edge (VM power
/// state, restart counter). Deleted with its edge, deployment or project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadControlRow {
    pub project_id: ProjectId,
    pub edge_id: String,
    pub deployment_id: String,
    pub app: String,
    /// `pod` or `vm`.
    pub kind: String,
    /// The VM's name; empty for a pod.
    pub workload: String,
    pub running: bool,
    pub restarts: u64,
}

/// A batched liveness update of one edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeSeen {
    pub edge_id: String,
    pub last_seen: OffsetDateTime,
    /// New agent description, when it changed.
    pub agent: Option<String>,
    /// New last status report, when it changed.
    pub last_status: Option<String>,
}

const TOKEN_COLUMNS: &str = "id, project_id, secret_hash, description, create_time, expire_time, revoke_time, max_uses, uses";
pub(crate) const EDGE_COLUMNS: &str = "id, project_id, name, labels, credential_hash, token_id, create_time, agent, last_seen, last_status";
pub(crate) const DEPLOYMENT_COLUMNS: &str = "id, project_id, name, body, create_time, update_time";
pub(crate) const CONTROL_COLUMNS: &str =
    "project_id, edge_id, deployment_id, app, kind, workload, running, restarts";

pub(crate) fn control_from_row(r: &AnyRow) -> Result<WorkloadControlRow, StoreError> {
    Ok(WorkloadControlRow {
        project_id: project_id(&r.try_get::<String, _>(0)?)?,
        edge_id: r.try_get(1)?,
        deployment_id: r.try_get(2)?,
        app: r.try_get(3)?,
        kind: r.try_get(4)?,
        workload: r.try_get(5)?,
        running: r.try_get::<i64, _>(6)? != 0,
        restarts: count(r.try_get(7)?),
    })
}

fn project_id(s: &str) -> Result<ProjectId, StoreError> {
    uuid::Uuid::parse_str(s)
        .map(ProjectId)
        .map_err(|e| StoreError::Corrupt(format!("project id {s:?}: {e}")))
}

fn opt_time(s: Option<String>) -> Result<Option<OffsetDateTime>, StoreError> {
    s.as_deref().map(parse_time).transpose()
}

fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn token_from_row(r: &AnyRow) -> Result<EnrollmentTokenRow, StoreError> {
    Ok(EnrollmentTokenRow {
        id: r.try_get(0)?,
        project_id: project_id(&r.try_get::<String, _>(1)?)?,
        secret_hash: r.try_get(2)?,
        description: r.try_get(3)?,
        create_time: parse_time(&r.try_get::<String, _>(4)?)?,
        expire_time: parse_time(&r.try_get::<String, _>(5)?)?,
        revoke_time: opt_time(r.try_get(6)?)?,
        max_uses: count(r.try_get(7)?),
        uses: count(r.try_get(8)?),
    })
}

pub(crate) fn edge_from_row(r: &AnyRow) -> Result<EdgeRow, StoreError> {
    let id: String = r.try_get(0)?;
    let labels: String = r.try_get(3)?;
    let labels = serde_json::from_str(&labels)
        .map_err(|e| StoreError::Corrupt(format!("labels of edge {id}: {e}")))?;
    Ok(EdgeRow {
        project_id: project_id(&r.try_get::<String, _>(1)?)?,
        name: r.try_get(2)?,
        labels,
        credential_hash: r.try_get(4)?,
        token_id: r.try_get(5)?,
        create_time: parse_time(&r.try_get::<String, _>(6)?)?,
        agent: r.try_get(7)?,
        last_seen: opt_time(r.try_get(8)?)?,
        last_status: r.try_get(9)?,
        id,
    })
}

pub(crate) fn deployment_from_row(
    keyring: Option<&canopy_seal::Keyring>,
    r: &AnyRow,
) -> Result<DeploymentRow, StoreError> {
    let id: String = r.try_get(0)?;
    let project: String = r.try_get(1)?;
    let body = open_body(
        keyring,
        SealedTable::Deployments,
        &project,
        &id,
        r.try_get(3)?,
    )?;
    Ok(DeploymentRow {
        id,
        project_id: project_id(&project)?,
        name: r.try_get(2)?,
        body,
        create_time: parse_time(&r.try_get::<String, _>(4)?)?,
        update_time: parse_time(&r.try_get::<String, _>(5)?)?,
    })
}

fn labels_json(labels: &BTreeMap<String, String>) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".into())
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Everything the fleet hub needs at start: the revision, every edge and every deployment
    /// (of every project).
    pub async fn load_fleet(&self) -> Result<FleetSnapshot, StoreError> {
        let revision = self.fleet_revision().await?;
        let edges = sqlx::query(&format!("SELECT {EDGE_COLUMNS} FROM edges ORDER BY id"))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(edge_from_row)
            .collect::<Result<_, _>>()?;
        let deployments = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments ORDER BY create_time, id"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| deployment_from_row(self.keyring.as_deref(), r))
        .collect::<Result<_, _>>()?;
        let controls = sqlx::query(&format!(
            "SELECT {CONTROL_COLUMNS} FROM workload_controls ORDER BY edge_id, deployment_id, app, kind, workload"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(control_from_row)
        .collect::<Result<_, _>>()?;
        Ok(FleetSnapshot {
            revision,
            edges,
            deployments,
            controls,
        })
    }

    /// The enrollment token with that secret hash, in whichever project it belongs to.
    pub async fn enrollment_token_by_hash(
        &self,
        secret_hash: &str,
    ) -> Result<Option<EnrollmentTokenRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM enrollment_tokens WHERE secret_hash = $1"
        ))
        .bind(secret_hash.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    /// Writes a batch of edge liveness updates, [`SEEN_CHUNK`] edges per transaction. Edges
    /// removed meanwhile are skipped.
    ///
    /// Why chunks: on SQLite every write holds the one writer lock, and at 10,000 edges a
    /// batch (every edge's "last seen" comes due in the same minute after a fleet-wide change)
    /// took 10-15 s in a debug build; an operator's label change or deployment update waited
    /// behind it that long. Between chunks the lock is released, and its queue is fair, so
    /// another write waits for one chunk at most. A chunk that fails leaves the ones before it
    /// written; the caller retries the whole batch (writing a row twice is harmless).
    pub async fn record_edges_seen(&self, batch: &[EdgeSeen]) -> Result<(), StoreError> {
        for chunk in batch.chunks(SEEN_CHUNK) {
            let _guard = match self.backend {
                Backend::Sqlite => Some(self.write_lock.lock().await),
                Backend::Postgres => None,
            };
            let mut tx = self.pool.begin().await?;
            let _timer = crate::sql::TxTimer::start(&self.metrics.edges_seen);
            if self.backend == Backend::Postgres {
                // Other replicas re-read these edges (see `crate::feed`).
                let ids: Vec<String> = chunk.iter().map(|s| s.edge_id.clone()).collect();
                crate::feed::append_live(
                    &mut tx,
                    &self.origin,
                    crate::feed::LiveKind::Status,
                    &ids,
                )
                .await?;
            }
            for seen in chunk {
                sqlx::query(
                    "UPDATE edges SET last_seen = $2, agent = COALESCE($3, agent), last_status = COALESCE($4, last_status) WHERE id = $1",
                )
                .bind(seen.edge_id.clone())
                .bind(format_time(seen.last_seen))
                .bind(seen.agent.clone())
                .bind(seen.last_status.clone())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }
}

/// Edges written per transaction by [`Store::record_edges_seen`]: small enough that a write
/// waiting for the SQLite writer lock waits for a few hundred rows at most.
pub const SEEN_CHUNK: usize = 200;

impl CatalogTx {
    /// Bumps and returns the fleet revision (edge generations are drawn from it, so they grow
    /// across restarts). Serialized by the database row lock. Only through
    /// [`CatalogTx::log_fleet_changes`]: every revision has its change rows.
    pub(crate) async fn bump_fleet_revision(&mut self) -> Result<u64, StoreError> {
        self.check_writable()?;
        sqlx::query("UPDATE fleet_revision SET revision = revision + 1 WHERE id = 1")
            .execute(&mut *self.tx)
            .await?;
        let revision: i64 = sqlx::query("SELECT revision FROM fleet_revision WHERE id = 1")
            .fetch_one(&mut *self.tx)
            .await?
            .try_get(0)?;
        Ok(count(revision))
    }

    // --- enrollment tokens -------------------------------------------------------------------

    pub async fn insert_enrollment_token(
        &mut self,
        t: &EnrollmentTokenRow,
    ) -> Result<(), StoreError> {
        self.check_writable()?;
        sqlx::query(&format!(
            "INSERT INTO enrollment_tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(t.id.clone())
        .bind(self.pid())
        .bind(t.secret_hash.clone())
        .bind(t.description.clone())
        .bind(format_time(t.create_time))
        .bind(format_time(t.expire_time))
        .bind(t.revoke_time.map(format_time))
        .bind(i64_of(t.max_uses))
        .bind(i64_of(t.uses))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// The project's enrollment tokens, newest first.
    pub async fn list_enrollment_tokens(&mut self) -> Result<Vec<EnrollmentTokenRow>, StoreError> {
        sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM enrollment_tokens WHERE project_id = $1 ORDER BY create_time DESC, id"
        ))
        .bind(self.pid())
        .fetch_all(&mut *self.tx)
        .await?
        .iter()
        .map(token_from_row)
        .collect()
    }

    pub async fn get_enrollment_token(
        &mut self,
        id: &str,
    ) -> Result<Option<EnrollmentTokenRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM enrollment_tokens WHERE project_id = $1 AND id = $2"
        ))
        .bind(self.pid())
        .bind(id.to_string())
        .fetch_optional(&mut *self.tx)
        .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    /// Marks a token revoked (keeping the first revocation time); false when it does not exist.
    pub async fn revoke_enrollment_token(&mut self, id: &str) -> Result<bool, StoreError> {
        self.check_writable()?;
        let done = sqlx::query(
            "UPDATE enrollment_tokens SET revoke_time = COALESCE(revoke_time, $3) WHERE project_id = $1 AND id = $2",
        )
        .bind(self.pid())
        .bind(id.to_string())
        .bind(format_time(now()))
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Counts one use of a token.
    pub async fn use_enrollment_token(&mut self, id: &str) -> Result<(), StoreError> {
        self.check_writable()?;
        sqlx::query(
            "UPDATE enrollment_tokens SET uses = uses + 1 WHERE project_id = $1 AND id = $2",
        )
        .bind(self.pid())
        .bind(id.to_string())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    // --- edges -------------------------------------------------------------------------------

    pub async fn insert_edge(&mut self, e: &EdgeRow) -> Result<(), StoreError> {
        self.check_writable()?;
        sqlx::query(&format!(
            "INSERT INTO edges ({EDGE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(e.id.clone())
        .bind(self.pid())
        .bind(e.name.clone())
        .bind(labels_json(&e.labels))
        .bind(e.credential_hash.clone())
        .bind(e.token_id.clone())
        .bind(format_time(e.create_time))
        .bind(e.agent.clone())
        .bind(e.last_seen.map(format_time))
        .bind(e.last_status.clone())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Whether an edge of that name exists in the project.
    pub async fn edge_name_taken(&mut self, name: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT id FROM edges WHERE project_id = $1 AND name = $2")
            .bind(self.pid())
            .bind(name.to_string())
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(row.is_some())
    }

    /// Replaces an edge's labels; false when it does not exist in the project.
    pub async fn set_edge_labels(
        &mut self,
        id: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<bool, StoreError> {
        self.check_writable()?;
        let done = sqlx::query("UPDATE edges SET labels = $3 WHERE project_id = $1 AND id = $2")
            .bind(self.pid())
            .bind(id.to_string())
            .bind(labels_json(labels))
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes an edge (its credential stops working); false when it does not exist.
    pub async fn delete_edge(&mut self, id: &str) -> Result<bool, StoreError> {
        self.check_writable()?;
        let done = sqlx::query("DELETE FROM edges WHERE project_id = $1 AND id = $2")
            .bind(self.pid())
            .bind(id.to_string())
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records an operator action on a workload (insert or replace), in this transaction's
    /// project (`c.project_id` is not consulted).
    pub async fn put_workload_control(&mut self, c: &WorkloadControlRow) -> Result<(), StoreError> {
        self.check_writable()?;
        sqlx::query(
            "INSERT INTO workload_controls (project_id, edge_id, deployment_id, app, kind, workload, running, restarts, update_time) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (edge_id, deployment_id, app, kind, workload) \
             DO UPDATE SET running = excluded.running, restarts = excluded.restarts, update_time = excluded.update_time",
        )
        .bind(self.pid())
        .bind(c.edge_id.clone())
        .bind(c.deployment_id.clone())
        .bind(c.app.clone())
        .bind(c.kind.clone())
        .bind(c.workload.clone())
        .bind(i64::from(c.running))
        .bind(i64_of(c.restarts))
        .bind(crate::sql::format_time(OffsetDateTime::now_utc()))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    // --- deployments -------------------------------------------------------------------------

    pub async fn insert_deployment(&mut self, d: &DeploymentRow) -> Result<(), StoreError> {
        self.check_writable()?;
        sqlx::query(&format!(
            "INSERT INTO deployments ({DEPLOYMENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
        ))
        .bind(d.id.clone())
        .bind(self.pid())
        .bind(d.name.clone())
        .bind(seal_body(
            self.keyring.as_deref(),
            SealedTable::Deployments,
            &self.pid(),
            &d.id,
            d.body.clone(),
        ))
        .bind(format_time(d.create_time))
        .bind(format_time(d.update_time))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Replaces a deployment's record; false when it does not exist in the project.
    pub async fn update_deployment(
        &mut self,
        id: &str,
        body: &str,
        update_time: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.check_writable()?;
        let done = sqlx::query(
            "UPDATE deployments SET body = $3, update_time = $4 WHERE project_id = $1 AND id = $2",
        )
        .bind(self.pid())
        .bind(id.to_string())
        .bind(seal_body(
            self.keyring.as_deref(),
            SealedTable::Deployments,
            &self.pid(),
            id,
            body.to_string(),
        ))
        .bind(format_time(update_time))
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn delete_deployment(&mut self, id: &str) -> Result<bool, StoreError> {
        self.check_writable()?;
        let done = sqlx::query("DELETE FROM deployments WHERE project_id = $1 AND id = $2")
            .bind(self.pid())
            .bind(id.to_string())
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The project's deployments (the hub's copy is what requests read; this is for checks
    /// inside a transaction).
    pub async fn list_deployment_rows(&mut self) -> Result<Vec<DeploymentRow>, StoreError> {
        sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE project_id = $1 ORDER BY create_time, id"
        ))
        .bind(self.pid())
        .fetch_all(&mut *self.tx)
        .await?
        .iter()
        .map(|r| deployment_from_row(self.keyring.as_deref(), r))
        .collect()
    }
}
