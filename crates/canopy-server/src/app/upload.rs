//! Uploads: the session API (`POST .../catalog/uploads`, files held in the store until the last
//! one) and the bulk multipart upload (`POST .../catalog/upload`). Either way, all files are
//! parsed first (nothing touches the database if any file is bad), then every entity is applied
//! through the same rule functions as the REST calls, in one transaction.
//!
//! What an upload may cost the server is bounded ([`UploadLimits`], docs/CATALOG.md):
//!
//! - **Memory.** Bodies arrive into the upload spool on disk ([`super::spool`]), session files
//!   are stored and read back in chunks, and only [`UploadLimits::parallelism`] uploads are
//!   held in memory at once to be parsed and applied ([`App::upload_in_turn`]), each at most
//!   64 MiB after decompression. More uploads in flight wait for a turn on disk, not in memory.
//! - **Temporary disk.** The spool has one budget for the process; beyond it, 503 with
//!   `Retry-After`. Since every waiting upload holds spool bytes, the budget also bounds how
//!   many wait.
//! - **Stored sessions.** Open sessions and the bytes they hold are capped per project and for
//!   the whole server (429, the reference's ResourceExhausted), checked in the transaction that
//!   adds, under a lock the store takes for it (so concurrent requests cannot race past a cap);
//!   sessions idle longer than [`UploadLimits::session_idle_timeout`] are deleted by
//!   [`reap_upload_sessions`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use canopy_core::upload::{FileSet, UploadReader, parse_upload_from};
use canopy_store::UploadUsages;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use super::catalog::{
    ChangeSummary, Changes, PutMode, check_requirements, put_application, put_artifact,
    put_package, put_registry,
};
use super::spool::{Spool, SpoolError, SpoolFile};
use super::{Access, App, AppError, Ctx};

/// Most files in one upload (bulk request or session).
pub const MAX_UPLOAD_FILES: usize = 100;
/// Most bytes in one upload (bulk request or session), before decompression.
pub const MAX_UPLOAD_TOTAL_BYTES: u64 = 64 * 1024 * 1024;

const MIB: u64 = 1024 * 1024;

/// What uploads may cost the server (see the module doc). Defaults suit a small server; every
/// value is a `canopy server` flag (docs/CATALOG.md, "Upload limits and quotas").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadLimits {
    /// Directory of the upload spool. `None`: `DATA_DIR/upload-spool` for a server, a
    /// temporary directory of its own for an app built without one.
    pub spool_dir: Option<PathBuf>,
    /// Most bytes the spool holds at once (all uploads being received or processed).
    pub spool_bytes: u64,
    /// Uploads parsed and applied in memory at once (at least 1).
    pub parallelism: usize,
    /// Open upload sessions per project.
    pub sessions_per_project: u64,
    /// Bytes the open upload sessions of one project hold.
    pub session_bytes_per_project: u64,
    /// Open upload sessions in the whole server.
    pub sessions: u64,
    /// Bytes the open upload sessions of the whole server hold.
    pub session_bytes: u64,
    /// A session that has received no file for this long is deleted.
    pub session_idle_timeout: Duration,
}

impl Default for UploadLimits {
    fn default() -> UploadLimits {
        UploadLimits {
            spool_dir: None,
            spool_bytes: 2 * 1024 * MIB,
            parallelism: 2,
            sessions_per_project: 10,
            session_bytes_per_project: 256 * MIB,
            sessions: 100,
            session_bytes: 1024 * MIB,
            session_idle_timeout: Duration::from_secs(15 * 60),
        }
    }
}

/// The upload machinery of one app: its limits, its spool, and the turns to process in memory.
pub(crate) struct Uploads {
    limits: UploadLimits,
    spool: Spool,
    turns: Arc<Semaphore>,
}

impl Uploads {
    pub(crate) fn new(limits: UploadLimits) -> Result<Uploads, AppError> {
        let spool = Spool::open(limits.spool_dir.as_deref(), limits.spool_bytes)?;
        Ok(Uploads {
            turns: Arc::new(Semaphore::new(limits.parallelism.max(1))),
            limits,
            spool,
        })
    }
}

/// One uploaded file, received into the spool.
#[derive(Debug)]
pub struct SpooledUpload {
    pub name: String,
    pub file: SpoolFile,
}

/// The result of an upload call.
#[derive(Debug, Clone)]
pub struct UploadOutcome {
    pub session_id: Uuid,
    /// Number of files received so far in the session.
    pub upload_number: u32,
    /// What was applied (empty until the last upload).
    pub changes: Vec<ChangeSummary>,
}

impl App {
    fn uploads(&self) -> &Uploads {
        &self.inner.uploads
    }

    /// The upload limits this app enforces.
    pub fn upload_limits(&self) -> &UploadLimits {
        &self.uploads().limits
    }

    /// Bytes the upload spool holds now, and its budget (for operators and tests).
    pub fn upload_spool_usage(&self) -> (u64, u64) {
        let spool = &self.uploads().spool;
        (spool.used(), spool.budget())
    }

    /// Before an upload's body is read: checks that the caller may write the project's catalog
    /// and that the spool has room, and returns the spool to receive into.
    pub fn upload_spool(&self, ctx: &Ctx) -> Result<&Spool, AppError> {
        ctx.require(Access::CatalogWrite)?;
        let spool = &self.uploads().spool;
        if spool.used() >= spool.budget() {
            return Err(SpoolError::Full {
                budget: spool.budget(),
            }
            .into());
        }
        Ok(spool)
    }

    /// Before a session upload's body is read: [`App::upload_spool`], plus the session exists
    /// and the quotas are not used up already (so a refused client does not send megabytes
    /// first). The authoritative checks are made again when the file is stored.
    pub async fn check_session_upload(
        &self,
        ctx: &Ctx,
        session_id: Option<Uuid>,
        last_upload: bool,
    ) -> Result<&Spool, AppError> {
        let spool = self.upload_spool(ctx)?;
        let mut tx = self.store().read(ctx.project.id).await?;
        if let Some(id) = session_id
            && tx.upload_session(id).await?.is_none()
        {
            return Err(session_not_found(id));
        }
        if !last_upload {
            let usage = tx.upload_usages().await?;
            let limits = self.upload_limits();
            if session_id.is_none() {
                check_new_session(limits, ctx, &usage)?;
            }
            check_session_bytes(limits, ctx, &usage, 1)?;
        }
        Ok(spool)
    }

    /// Waits for this upload's turn to be processed ([`UploadLimits::parallelism`] at once):
    /// held while its content is read back from the store, parsed and applied, so that neither
    /// memory nor database connections go to more uploads than that.
    pub async fn upload_turn(&self) -> Result<OwnedSemaphorePermit, AppError> {
        Arc::clone(&self.uploads().turns)
            .acquire_owned()
            .await
            .map_err(|_| AppError::Internal("the upload queue is closed".into()))
    }

    /// Runs `work` off the async runtime in this upload's turn; the turn is held until the
    /// returned permit is dropped, so keep it while the result (parsed entities) is in use.
    pub async fn upload_in_turn<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<(T, OwnedSemaphorePermit), AppError> {
        let permit = self.upload_turn().await?;
        Ok((blocking(work).await?, permit))
    }

    /// Applies a complete set of spooled files in one transaction (the bulk upload).
    pub async fn upload_spooled(
        &self,
        ctx: &Ctx,
        files: Vec<SpooledUpload>,
    ) -> Result<Vec<ChangeSummary>, AppError> {
        ctx.require(Access::CatalogWrite)?;
        check_limits(files.len(), files.iter().map(|f| f.file.len()).sum())?;
        let (sets, _turn) = self.upload_in_turn(move || parse_spooled(files)).await?;
        let sets = sets?;
        let mut tx = self.store().write(ctx.project.id).await?;
        let mut changes = Changes::default();
        apply(&mut tx, ctx, &mut changes, sets).await?;
        self.commit(ctx, tx, changes).await
    }

    /// One call of the session API. Without `session_id` a session is created. Files are held
    /// until `last_upload`, then everything of the session is applied at once (or nothing).
    pub async fn upload_session(
        &self,
        ctx: &Ctx,
        session_id: Option<Uuid>,
        last_upload: bool,
        file: SpooledUpload,
    ) -> Result<UploadOutcome, AppError> {
        ctx.require(Access::CatalogWrite)?;
        if last_upload {
            self.finish_session(ctx, session_id, file).await
        } else {
            self.hold_file(ctx, session_id, file).await
        }
    }

    /// Stores one file of a session (creating the session when `session_id` is `None`),
    /// within the per-session limits and the quotas.
    async fn hold_file(
        &self,
        ctx: &Ctx,
        session_id: Option<Uuid>,
        file: SpooledUpload,
    ) -> Result<UploadOutcome, AppError> {
        let size = file.file.len();
        let limits = self.upload_limits();
        let mut tx = self.store().write(ctx.project.id).await?;
        // From here until commit nobody else adds to any session (see canopy_store::uploads).
        let usage = tx.lock_upload_usage().await?;
        let (session, held) = match session_id {
            Some(id) => {
                let info = tx
                    .upload_session(id)
                    .await?
                    .ok_or_else(|| session_not_found(id))?;
                (id, Some(info))
            }
            None => {
                check_new_session(limits, ctx, &usage)?;
                (tx.create_upload_session().await?, None)
            }
        };
        let (files, bytes) = held.map_or((0, 0), |h| (h.files, h.bytes));
        if let Err(e) = check_limits(files as usize + 1, bytes + size) {
            // Over a per-session limit: the session cannot be completed, so it goes.
            if held.is_some() {
                tx.delete_upload_session(session).await?;
                tx.commit().await?;
            }
            return Err(e);
        }
        check_session_bytes(limits, ctx, &usage, size)?;
        let content = file.file.open_async().await?;
        let info = tx
            .add_upload_file_from(session, &file.name, content)
            .await?;
        tx.commit().await?;
        Ok(UploadOutcome {
            session_id: session,
            upload_number: info.files,
            changes: Vec::new(),
        })
    }

    /// The last call of a session: reads the session's files back into the spool, parses them
    /// with the last one (in turn), then applies everything and deletes the session in one
    /// transaction. A session that fails is discarded (unless the server was only busy).
    async fn finish_session(
        &self,
        ctx: &Ctx,
        session_id: Option<Uuid>,
        file: SpooledUpload,
    ) -> Result<UploadOutcome, AppError> {
        let Some(id) = session_id else {
            // A one-file session: nothing was stored.
            let changes = self.upload_spooled(ctx, vec![file]).await?;
            return Ok(UploadOutcome {
                session_id: Uuid::new_v4(),
                upload_number: 1,
                changes,
            });
        };
        let result = self.apply_session(ctx, id, file).await;
        if let Err(e) = &result
            && !matches!(e, AppError::Busy { .. } | AppError::Aborted(_))
        {
            self.discard_session(ctx, id).await;
        }
        result
    }

    async fn apply_session(
        &self,
        ctx: &Ctx,
        id: Uuid,
        last: SpooledUpload,
    ) -> Result<UploadOutcome, AppError> {
        // In turn from here: reading the files back, parsing and applying. The files are copied
        // into the spool from a snapshot: no write lock is held while megabytes move, nor while
        // they are parsed.
        let _turn = self.upload_turn().await?;
        let mut files = Vec::new();
        let held = {
            let mut tx = self.store().read(ctx.project.id).await?;
            let info = tx
                .upload_session(id)
                .await?
                .ok_or_else(|| session_not_found(id))?;
            check_limits(info.files as usize + 1, info.bytes + last.file.len())?;
            for entry in tx.upload_files(id).await? {
                let mut out = self.uploads().spool.create_async()?;
                out.reserve(entry.size)?;
                tx.read_upload_file(id, entry.seq, &mut out)
                    .await
                    .map_err(|e| match e {
                        canopy_store::StoreError::UploadContent(io) => AppError::from(
                            super::spool::spool_io_error(self.uploads().spool.dir(), io),
                        ),
                        other => AppError::from(other),
                    })?;
                files.push(SpooledUpload {
                    name: entry.name,
                    file: out.finish().await?,
                });
            }
            info.files
        };
        files.push(last);
        let count = held + 1;
        let sets = blocking(move || parse_spooled(files)).await??;
        let mut tx = self.store().write(ctx.project.id).await?;
        match tx.upload_session(id).await? {
            Some(now) if now.files == held => {}
            Some(_) => {
                return Err(AppError::Aborted(format!(
                    "upload-session {id} received another file while its last upload was being applied; send the last upload again"
                )));
            }
            None => return Err(session_not_found(id)),
        }
        tx.delete_upload_session(id).await?;
        let mut changes = Changes::default();
        apply(&mut tx, ctx, &mut changes, sets).await?;
        let summary = self.commit(ctx, tx, changes).await?;
        Ok(UploadOutcome {
            session_id: id,
            upload_number: count,
            changes: summary,
        })
    }

    /// Removes a failed session so its files do not linger.
    async fn discard_session(&self, ctx: &Ctx, session: Uuid) {
        let result = async {
            let mut tx = self.store().write(ctx.project.id).await?;
            tx.delete_upload_session(session).await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(project = %ctx.project.name, %session, error = %e, "could not discard failed upload session");
        }
    }

    /// Deletes upload sessions idle longer than the configured timeout; returns how many.
    pub async fn expire_upload_sessions(&self) -> Result<u64, AppError> {
        let cutoff = time::OffsetDateTime::now_utc() - self.upload_limits().session_idle_timeout;
        Ok(self.store().expire_upload_sessions(cutoff).await?)
    }
}

/// Background task: deletes upload sessions idle longer than
/// [`UploadLimits::session_idle_timeout`], checking every quarter of that (at least every
/// minute). Re-runnable and bounded: one DELETE per pass. Runs on one replica at a time (the
/// `upload-reaper` lease, [`crate::once_only`]).
pub async fn reap_upload_sessions(app: App) {
    let idle = app.upload_limits().session_idle_timeout;
    let period = (idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let store = app.store().clone();
    crate::once_only::run_once_only(store, canopy_store::LeaseJob::UploadReaper, period, || {
        let app = app.clone();
        async move {
            match app.expire_upload_sessions().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(sessions = n, idle = ?idle, "expired idle upload sessions"),
                Err(e) => tracing::warn!(error = %e, "could not expire upload sessions"),
            }
        }
    })
    .await;
}

/// Runs blocking work (decompression, YAML, schema validation, JSON decoding) off the async
/// workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| AppError::Internal(format!("upload processing failed: {e}")))
}

fn session_not_found(id: Uuid) -> AppError {
    AppError::NotFound(format!("upload-session {id} not found"))
}

/// Parses spooled files (blocking: runs in [`App::upload_in_turn`]). The spool files are
/// deleted as soon as they are parsed.
fn parse_spooled(files: Vec<SpooledUpload>) -> Result<Vec<FileSet>, AppError> {
    let mut readers = Vec::with_capacity(files.len());
    for f in &files {
        readers.push(UploadReader {
            name: f.name.clone(),
            len: f.file.len(),
            reader: Box::new(std::io::BufReader::new(f.file.open()?)),
        });
    }
    Ok(parse_upload_from(readers)?)
}

fn check_limits(files: usize, bytes: u64) -> Result<(), AppError> {
    if files > MAX_UPLOAD_FILES {
        return Err(AppError::TooLarge(format!(
            "upload has {files} files; at most {MAX_UPLOAD_FILES} are allowed (use a tar.gz bundle for more)"
        )));
    }
    if bytes > MAX_UPLOAD_TOTAL_BYTES {
        return Err(AppError::TooLarge(format!(
            "upload is {bytes} bytes; at most {MAX_UPLOAD_TOTAL_BYTES} bytes are allowed"
        )));
    }
    Ok(())
}

/// Refuses a new session when the project or the server has as many open as allowed.
fn check_new_session(
    limits: &UploadLimits,
    ctx: &Ctx,
    usage: &UploadUsages,
) -> Result<(), AppError> {
    let idle = idle_text(limits.session_idle_timeout);
    if usage.project.sessions >= limits.sessions_per_project {
        return Err(AppError::ResourceExhausted(format!(
            "project {} has {} open upload sessions, the most allowed ({}); finish one (lastUpload=true) or let abandoned ones expire ({idle} after their last file)",
            ctx.project.name, usage.project.sessions, limits.sessions_per_project
        )));
    }
    if usage.server.sessions >= limits.sessions {
        return Err(AppError::ResourceExhausted(format!(
            "the server has {} open upload sessions, the most allowed ({}); retry once some have finished or expired ({idle} after their last file)",
            usage.server.sessions, limits.sessions
        )));
    }
    Ok(())
}

/// Refuses to store `size` more bytes in sessions when that would pass the project's or the
/// server's quota.
fn check_session_bytes(
    limits: &UploadLimits,
    ctx: &Ctx,
    usage: &UploadUsages,
    size: u64,
) -> Result<(), AppError> {
    let idle = idle_text(limits.session_idle_timeout);
    if usage.project.bytes.saturating_add(size) > limits.session_bytes_per_project {
        return Err(AppError::ResourceExhausted(format!(
            "upload sessions of project {} hold {} bytes; {size} more would pass the project's quota of {} bytes; finish or abandon open sessions (they expire {idle} after their last file)",
            ctx.project.name, usage.project.bytes, limits.session_bytes_per_project
        )));
    }
    if usage.server.bytes.saturating_add(size) > limits.session_bytes {
        return Err(AppError::ResourceExhausted(format!(
            "the server's open upload sessions hold {} bytes; {size} more would pass its quota of {} bytes; retry once some have finished or expired ({idle} after their last file)",
            usage.server.bytes, limits.session_bytes
        )));
    }
    Ok(())
}

fn idle_text(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s.is_multiple_of(60) {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

/// Applies file sets in order: each set's registries, then applications and artifacts, then
/// packages, every entity created or updated by key.
async fn apply(
    tx: &mut canopy_store::CatalogTx,
    ctx: &Ctx,
    changes: &mut Changes,
    sets: Vec<FileSet>,
) -> Result<(), AppError> {
    for set in sets {
        let named = |key: String, e: AppError| in_file(set.sources.get(&key), e);
        for r in set.registries {
            let key = format!("registry {}", r.name);
            put_registry(tx, ctx, changes, r, PutMode::Upsert)
                .await
                .map_err(|e| named(key, e))?;
        }
        let mut with_requirements = Vec::new();
        for a in set.applications {
            let key = format!("application {}:{}", a.name, a.version);
            let stored = put_application(tx, ctx, changes, a, PutMode::Upsert)
                .await
                .map_err(|e| named(key.clone(), e))?;
            if stored
                .profiles
                .iter()
                .any(|p| !p.deployment_requirement.is_empty())
            {
                with_requirements.push((key, stored));
            }
        }
        for a in set.artifacts {
            let key = format!("artifact {}", a.name);
            put_artifact(tx, ctx, changes, a, PutMode::Upsert)
                .await
                .map_err(|e| named(key, e))?;
        }
        for p in set.packages {
            let key = format!("deployment-package {}:{}", p.name, p.version);
            put_package(tx, ctx, changes, p, PutMode::Upsert)
                .await
                .map_err(|e| named(key, e))?;
        }
        // Requirements may name packages of this same upload: checked once those are in.
        for (key, a) in with_requirements {
            check_requirements(tx, &a)
                .await
                .map_err(|e| named(key, e))?;
        }
    }
    Ok(())
}

/// A rule broken by an uploaded entity becomes an upload error naming the file it came from.
fn in_file(file: Option<&String>, e: AppError) -> AppError {
    let prefix = |m: String| match file {
        Some(f) => format!("uploaded file {f}: {m}"),
        None => m,
    };
    match e {
        AppError::Invalid(m)
        | AppError::NotFound(m)
        | AppError::AlreadyExists(m)
        | AppError::FailedPrecondition(m) => AppError::Upload(vec![prefix(m)]),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_is_said_in_minutes_when_whole() {
        assert_eq!(idle_text(Duration::from_secs(900)), "15 min");
        assert_eq!(idle_text(Duration::from_secs(90)), "90 s");
    }
}
