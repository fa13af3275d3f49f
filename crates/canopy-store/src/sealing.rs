//! Secrets at rest: the two `body` columns that can hold secrets are sealed with the store's
//! keyring (see `canopy-seal`) when it has one.
//!
//! - `registries.body`: the registry's username, auth token and CA certificates.
//! - `deployments.body`: the deployment manager's record, whose override values may be secret
//!   parameters.
//!
//! Every write of those columns goes through [`seal_body`] and every read through
//! [`open_body`]. The associated data binds a value to its row (`<table>|<project id>|<row
//! key>`), so a sealed body copied into another row, or another project, does not open. Reads
//! accept legacy plaintext (a database from before sealing keeps working); [`Store::reseal_all`]
//! seals those and moves everything onto the primary key after a rotation. Enrollment tokens and
//! edge credentials are not sealed: they are stored as hashes, which is stronger.

use canopy_seal::Keyring;
use sqlx::Row;

use crate::{Backend, Store, StoreError};

/// A table with a sealed `body` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SealedTable {
    Registries,
    Deployments,
}

impl SealedTable {
    fn table(self) -> &'static str {
        match self {
            SealedTable::Registries => "registries",
            SealedTable::Deployments => "deployments",
        }
    }

    /// The column that, with `project_id`, identifies a row.
    fn key_column(self) -> &'static str {
        match self {
            SealedTable::Registries => "name",
            SealedTable::Deployments => "id",
        }
    }

    fn row(self, project: &str, key: &str) -> String {
        format!("(project {project}, {} {key:?})", self.key_column())
    }

    fn aad(self, project: &str, key: &str) -> String {
        // Table and project id never contain `|`; the row key comes last, so this is unambiguous.
        format!("{}|{project}|{key}", self.table())
    }
}

/// What to store in the `body` column of row (`project`, `key`) of `table`: `body` sealed with
/// the keyring's primary key, or `body` itself when the store has no keyring.
pub(crate) fn seal_body(
    keyring: Option<&Keyring>,
    table: SealedTable,
    project: &str,
    key: &str,
    body: String,
) -> String {
    match keyring {
        Some(k) => k.seal(body.as_bytes(), table.aad(project, key).as_bytes()),
        None => body,
    }
}

/// The plaintext of a stored `body` of row (`project`, `key`) of `table`: opened when sealed,
/// as is when legacy plaintext. An error names the table and row, never the content.
pub(crate) fn open_body(
    keyring: Option<&Keyring>,
    table: SealedTable,
    project: &str,
    key: &str,
    stored: String,
) -> Result<String, StoreError> {
    if !canopy_seal::is_sealed(&stored) {
        return Ok(stored);
    }
    let failed = |reason: String| StoreError::Sealed {
        table: table.table(),
        row: table.row(project, key),
        reason,
    };
    let Some(keyring) = keyring else {
        return Err(failed(format!(
            "it is encrypted but this store has no secret key (the server loads it from {} or \
             DATA_DIR/{})",
            canopy_seal::ENV_VAR,
            canopy_seal::KEY_FILE_NAME
        )));
    };
    let plain = keyring
        .open(&stored, table.aad(project, key).as_bytes())
        .map_err(|e| failed(e.to_string()))?;
    String::from_utf8(plain).map_err(|_| failed("the decrypted value is not UTF-8".into()))
}

/// What [`Store::reseal_all`] rewrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResealReport {
    /// Registry rows sealed anew (legacy plaintext, or sealed with a key other than the primary).
    pub registries: u64,
    /// Deployment rows sealed anew.
    pub deployments: u64,
}

/// Rows per transaction of [`Store::reseal_all`].
const RESEAL_BATCH: i64 = 200;

impl Store {
    /// Sets the keyring that seals registry and deployment bodies from now on and opens sealed
    /// ones. A store without one writes plaintext and cannot read sealed bodies.
    pub fn with_keyring(mut self, keyring: std::sync::Arc<Keyring>) -> Store {
        self.keyring = Some(keyring);
        self
    }

    /// The store's keyring, if it has one.
    pub fn keyring(&self) -> Option<&Keyring> {
        self.keyring.as_deref()
    }

    /// Seals every registry and deployment body under the keyring's primary key: legacy
    /// plaintext rows and rows sealed with another key are rewritten, rows already under the
    /// primary are left alone, so running it again changes nothing. Works in batches, each in
    /// its own transaction (holding the rows it rewrites), so it can run next to a live server
    /// and be resumed after an interruption.
    ///
    /// This is the last step of a key rotation: once it has run with the new primary, older
    /// keys can be removed from the keyring.
    pub async fn reseal_all(&self) -> Result<ResealReport, StoreError> {
        let keyring = self.keyring.clone().ok_or(StoreError::NoKeyring)?;
        Ok(ResealReport {
            registries: self.reseal_table(&keyring, SealedTable::Registries).await?,
            deployments: self
                .reseal_table(&keyring, SealedTable::Deployments)
                .await?,
        })
    }

    async fn reseal_table(&self, keyring: &Keyring, table: SealedTable) -> Result<u64, StoreError> {
        let (tab, key) = (table.table(), table.key_column());
        let lock = match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        };
        // Static table and column names only; the position is bound.
        let select = format!(
            "SELECT project_id, {key}, body FROM {tab} \
             WHERE project_id > $1 OR (project_id = $1 AND {key} > $2) \
             ORDER BY project_id, {key} LIMIT {RESEAL_BATCH}{lock}"
        );
        let update = format!("UPDATE {tab} SET body = $3 WHERE project_id = $1 AND {key} = $2");
        let primary = keyring.primary_id();
        // Project ids are never empty, so ("", "") is before the first row.
        let (mut after_project, mut after_key) = (String::new(), String::new());
        let mut rewritten = 0;
        loop {
            let _guard = match self.backend {
                Backend::Sqlite => Some(self.write_lock.lock().await),
                Backend::Postgres => None,
            };
            let mut tx = match self.backend {
                Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
                Backend::Postgres => self.pool.begin().await?,
            };
            let rows = sqlx::query(&select)
                .bind(after_project.clone())
                .bind(after_key.clone())
                .fetch_all(&mut *tx)
                .await?;
            for row in &rows {
                let project: String = row.try_get(0)?;
                let row_key: String = row.try_get(1)?;
                let stored: String = row.try_get(2)?;
                if canopy_seal::sealed_key_id(&stored) != Some(primary) {
                    let plain = open_body(Some(keyring), table, &project, &row_key, stored)?;
                    let sealed = seal_body(Some(keyring), table, &project, &row_key, plain);
                    sqlx::query(&update)
                        .bind(project.clone())
                        .bind(row_key.clone())
                        .bind(sealed)
                        .execute(&mut *tx)
                        .await?;
                    rewritten += 1;
                }
                (after_project, after_key) = (project, row_key);
            }
            tx.commit().await?;
            if rows.len() < RESEAL_BATCH as usize {
                break;
            }
        }
        if rewritten > 0 {
            tracing::info!(table = tab, rows = rewritten, key_id = primary, "resealed");
        }
        Ok(rewritten)
    }
}
