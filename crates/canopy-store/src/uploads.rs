//! Upload sessions: the files of a multi-request upload, held until its last request, with the
//! accounting its quotas need.
//!
//! - **Chunks.** A file is stored in rows of at most [`UPLOAD_CHUNK_BYTES`] (`upload_chunks`),
//!   written from a stream and read back into one, so storing or taking a 60 MB file never holds
//!   more than one chunk in memory (the caller streams from and to its spool files on disk).
//! - **Accounting.** Each session row counts its files and bytes; what a project's (or the
//!   server's) open sessions hold is a sum over at most a few hundred rows. Quotas are checked
//!   by the app layer inside the transaction that adds, after [`CatalogTx::lock_upload_usage`]:
//!   on PostgreSQL that locks one row (`upload_quota_lock`) for the rest of the transaction, so
//!   concurrent uploads into different projects are counted one after the other and cannot
//!   both pass a server-wide cap; on SQLite writers are serialized already.
//! - **Idleness.** Each addition touches the session (`touch_time`); [`Store::expire_upload_sessions`]
//!   deletes sessions idle since a cutoff, with their files and chunks (foreign-key cascades).
//!
//! Row locks on PostgreSQL are always taken in the order project row (by [`Store::write`]), quota
//! row, session row, so adders, the reaper and project deletion cannot deadlock.

use sqlx::Row;
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use uuid::Uuid;

use crate::sql::{format_time, now};
use crate::{Backend, CatalogTx, Store, StoreError, StoredUploadFile};

/// Largest row of stored file content.
pub const UPLOAD_CHUNK_BYTES: usize = 1024 * 1024;

/// What a set of open upload sessions holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadUsage {
    /// Open sessions.
    pub sessions: u64,
    /// Bytes of file content they hold.
    pub bytes: u64,
}

/// What the open upload sessions of one project, and of the whole server, hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadUsages {
    pub project: UploadUsage,
    pub server: UploadUsage,
}

/// One open upload session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadSessionInfo {
    pub id: Uuid,
    /// Files received so far.
    pub files: u32,
    /// Bytes received so far.
    pub bytes: u64,
}

/// One file of an upload session, without its content (see [`CatalogTx::read_upload_file`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadFileEntry {
    /// Position in the session (1 = first file uploaded).
    pub seq: u32,
    pub name: String,
    pub size: u64,
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Store {
    /// Deletes upload sessions (of every project) whose last file arrived (or that were
    /// created, when empty) before `cutoff`, with their files; returns how many sessions were
    /// deleted. For the periodic cleanup of abandoned uploads. Takes the write lock on SQLite,
    /// like [`Store::ensure_project`].
    pub async fn expire_upload_sessions(&self, cutoff: OffsetDateTime) -> Result<u64, StoreError> {
        let _guard = match self.backend {
            Backend::Sqlite => Some(self.write_lock.lock().await),
            Backend::Postgres => None,
        };
        // Files and chunks go with their session (ON DELETE CASCADE). On PostgreSQL a session
        // being added to holds its row lock: this waits for that transaction, then sees the
        // new touch time and leaves the session alone.
        let done = sqlx::query("DELETE FROM upload_sessions WHERE touch_time < $1")
            .bind(format_time(cutoff))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// What every project's open upload sessions hold (for metrics and tests; no lock).
    pub async fn upload_usage(&self) -> Result<UploadUsage, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*), CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM upload_sessions",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(UploadUsage {
            sessions: to_u64(row.try_get(0)?),
            bytes: to_u64(row.try_get(1)?),
        })
    }
}

impl CatalogTx {
    /// Locks the upload quotas until this transaction ends (PostgreSQL; SQLite's writers are
    /// serialized already) and returns what the open sessions of this project and of the
    /// server hold. Checked against the caps before adding in the same transaction, the sums
    /// stay true until commit: nobody else can add meanwhile.
    pub async fn lock_upload_usage(&mut self) -> Result<UploadUsages, StoreError> {
        self.check_writable()?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT id FROM upload_quota_lock WHERE id = 1 FOR UPDATE")
                .fetch_optional(&mut *self.tx)
                .await?;
        }
        self.upload_usages().await
    }

    /// What the open sessions of this project and of the server hold, without locking (an
    /// early check before an upload's body is received; the authoritative one is
    /// [`CatalogTx::lock_upload_usage`]).
    pub async fn upload_usages(&mut self) -> Result<UploadUsages, StoreError> {
        let usage = |row: sqlx::any::AnyRow| -> Result<UploadUsage, StoreError> {
            Ok(UploadUsage {
                sessions: to_u64(row.try_get(0)?),
                bytes: to_u64(row.try_get(1)?),
            })
        };
        let project = sqlx::query(
            "SELECT COUNT(*), CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM upload_sessions WHERE project_id = $1",
        )
        .bind(self.pid())
        .fetch_one(&mut *self.tx)
        .await?;
        let server = sqlx::query(
            "SELECT COUNT(*), CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM upload_sessions",
        )
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(UploadUsages {
            project: usage(project)?,
            server: usage(server)?,
        })
    }

    /// Opens an empty upload session in this project.
    pub async fn create_upload_session(&mut self) -> Result<Uuid, StoreError> {
        self.check_writable()?;
        let id = Uuid::new_v4();
        let t = format_time(now());
        sqlx::query(
            "INSERT INTO upload_sessions (id, project_id, create_time, touch_time, files, bytes) VALUES ($1, $2, $3, $3, 0, 0)",
        )
        .bind(id.to_string())
        .bind(self.pid())
        .bind(t)
        .execute(&mut *self.tx)
        .await?;
        Ok(id)
    }

    /// The session if it exists in this project. In a write transaction on PostgreSQL its row
    /// stays locked until the transaction ends (the reaper waits rather than delete it under
    /// an addition).
    pub async fn upload_session(
        &mut self,
        session: Uuid,
    ) -> Result<Option<UploadSessionInfo>, StoreError> {
        let sql = if self.writable && self.backend == Backend::Postgres {
            "SELECT files, bytes FROM upload_sessions WHERE id = $1 AND project_id = $2 FOR UPDATE"
        } else {
            "SELECT files, bytes FROM upload_sessions WHERE id = $1 AND project_id = $2"
        };
        let row = sqlx::query(sql)
            .bind(session.to_string())
            .bind(self.pid())
            .fetch_optional(&mut *self.tx)
            .await?;
        row.map(|r| {
            Ok(UploadSessionInfo {
                id: session,
                files: u32::try_from(r.try_get::<i64, _>(0)?).unwrap_or(u32::MAX),
                bytes: to_u64(r.try_get(1)?),
            })
        })
        .transpose()
    }

    /// Whether the session exists in this project.
    pub async fn upload_session_exists(&mut self, session: Uuid) -> Result<bool, StoreError> {
        Ok(self.upload_session(session).await?.is_some())
    }

    async fn require_session(&mut self, session: Uuid) -> Result<UploadSessionInfo, StoreError> {
        self.upload_session(session)
            .await?
            .ok_or(StoreError::NoSuchUploadSession(session))
    }

    /// Appends a file read from `content` (stored in chunks of [`UPLOAD_CHUNK_BYTES`], so at
    /// most one chunk is in memory) and touches the session; returns the session as it is now.
    pub async fn add_upload_file_from(
        &mut self,
        session: Uuid,
        name: &str,
        mut content: impl AsyncRead + Unpin,
    ) -> Result<UploadSessionInfo, StoreError> {
        self.check_writable()?;
        let before = self.require_session(session).await?;
        let seq = i64::from(before.files) + 1;
        let sid = session.to_string();
        // The file row first: chunks reference it.
        sqlx::query(
            "INSERT INTO upload_files (session_id, seq, name, size) VALUES ($1, $2, $3, 0)",
        )
        .bind(sid.clone())
        .bind(seq)
        .bind(name.to_string())
        .execute(&mut *self.tx)
        .await?;
        let mut size: u64 = 0;
        let mut chunk: i64 = 0;
        loop {
            let mut buf = Vec::with_capacity(UPLOAD_CHUNK_BYTES);
            (&mut content)
                .take(UPLOAD_CHUNK_BYTES as u64)
                .read_to_end(&mut buf)
                .await
                .map_err(StoreError::UploadContent)?;
            if buf.is_empty() {
                break;
            }
            size += buf.len() as u64;
            sqlx::query(
                "INSERT INTO upload_chunks (session_id, file_seq, chunk, data) VALUES ($1, $2, $3, $4)",
            )
            .bind(sid.clone())
            .bind(seq)
            .bind(chunk)
            .bind(buf)
            .execute(&mut *self.tx)
            .await?;
            chunk += 1;
        }
        let size_i = i64::try_from(size).unwrap_or(i64::MAX);
        sqlx::query("UPDATE upload_files SET size = $3 WHERE session_id = $1 AND seq = $2")
            .bind(sid.clone())
            .bind(seq)
            .bind(size_i)
            .execute(&mut *self.tx)
            .await?;
        sqlx::query(
            "UPDATE upload_sessions SET files = files + 1, bytes = bytes + $3, touch_time = $4 WHERE id = $1 AND project_id = $2",
        )
        .bind(sid)
        .bind(self.pid())
        .bind(size_i)
        .bind(format_time(now()))
        .execute(&mut *self.tx)
        .await?;
        Ok(UploadSessionInfo {
            id: session,
            files: before.files.saturating_add(1),
            bytes: before.bytes + size,
        })
    }

    /// Appends a file held in memory; returns the number of files now in the session.
    pub async fn add_upload_file(
        &mut self,
        session: Uuid,
        file: &StoredUploadFile,
    ) -> Result<u32, StoreError> {
        let info = self
            .add_upload_file_from(session, &file.name, file.content.as_slice())
            .await?;
        Ok(info.files)
    }

    /// The session's files in upload order, without content.
    pub async fn upload_files(
        &mut self,
        session: Uuid,
    ) -> Result<Vec<UploadFileEntry>, StoreError> {
        self.require_session(session).await?;
        let rows = sqlx::query(
            "SELECT seq, name, size FROM upload_files WHERE session_id = $1 ORDER BY seq",
        )
        .bind(session.to_string())
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UploadFileEntry {
                    seq: u32::try_from(r.try_get::<i64, _>(0)?).unwrap_or(u32::MAX),
                    name: r.try_get(1)?,
                    size: to_u64(r.try_get(2)?),
                })
            })
            .collect()
    }

    /// Writes one file's content to `out`, a chunk at a time (one query per chunk, so at most
    /// one chunk is in memory whatever the driver buffers); returns the bytes written.
    pub async fn read_upload_file(
        &mut self,
        session: Uuid,
        seq: u32,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Result<u64, StoreError> {
        let sid = session.to_string();
        let mut written: u64 = 0;
        let mut chunk: i64 = 0;
        loop {
            let row = sqlx::query(
                "SELECT data FROM upload_chunks WHERE session_id = $1 AND file_seq = $2 AND chunk = $3",
            )
            .bind(sid.clone())
            .bind(i64::from(seq))
            .bind(chunk)
            .fetch_optional(&mut *self.tx)
            .await?;
            let Some(row) = row else { break };
            let data: Vec<u8> = row.try_get(0)?;
            out.write_all(&data)
                .await
                .map_err(StoreError::UploadContent)?;
            written += data.len() as u64;
            chunk += 1;
        }
        out.flush().await.map_err(StoreError::UploadContent)?;
        Ok(written)
    }

    /// Deletes the session with its files (within this transaction); false when it did not
    /// exist in this project.
    pub async fn delete_upload_session(&mut self, session: Uuid) -> Result<bool, StoreError> {
        self.check_writable()?;
        let done = sqlx::query("DELETE FROM upload_sessions WHERE id = $1 AND project_id = $2")
            .bind(session.to_string())
            .bind(self.pid())
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The session's files in upload order with their content, and deletes the session
    /// (within this transaction). Holds every file in memory: for small sessions and tests;
    /// the server streams with [`CatalogTx::upload_files`] and [`CatalogTx::read_upload_file`].
    pub async fn take_upload_files(
        &mut self,
        session: Uuid,
    ) -> Result<Vec<StoredUploadFile>, StoreError> {
        self.check_writable()?;
        let mut files = Vec::new();
        for entry in self.upload_files(session).await? {
            let mut content = Vec::new();
            self.read_upload_file(session, entry.seq, &mut content)
                .await?;
            files.push(StoredUploadFile {
                name: entry.name,
                content,
            });
        }
        self.delete_upload_session(session).await?;
        Ok(files)
    }

    /// Total bytes held by the session so far.
    pub async fn upload_session_bytes(&mut self, session: Uuid) -> Result<u64, StoreError> {
        Ok(self.require_session(session).await?.bytes)
    }
}
