//! Uploads: the session API (`POST .../catalog/uploads`, files held in the store until the last
//! one) and the bulk multipart upload (`POST .../catalog/upload`). Either way, all files are
//! parsed first (nothing touches the database if any file is bad), then every entity is applied
//! through the same rule functions as the REST calls, in one transaction.

use canopy_core::upload::{FileSet, UploadFile, parse_upload};
use canopy_store::StoredUploadFile;
use uuid::Uuid;

use super::catalog::{
    ChangeSummary, Changes, PutMode, check_requirements, put_application, put_artifact,
    put_package, put_registry,
};
use super::{Access, App, AppError, Ctx};

/// Most files in one upload (bulk request or session).
pub const MAX_UPLOAD_FILES: usize = 100;
/// Most bytes in one upload (bulk request or session), before decompression.
pub const MAX_UPLOAD_TOTAL_BYTES: u64 = 64 * 1024 * 1024;

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
    /// Applies a complete set of files in one transaction.
    pub async fn upload_files(
        &self,
        ctx: &Ctx,
        files: Vec<UploadFile>,
    ) -> Result<Vec<ChangeSummary>, AppError> {
        ctx.require(Access::CatalogWrite)?;
        check_limits(
            files.len(),
            files.iter().map(|f| f.content.len() as u64).sum(),
        )?;
        let sets = parse_off_runtime(files).await?;
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
        file: UploadFile,
    ) -> Result<UploadOutcome, AppError> {
        ctx.require(Access::CatalogWrite)?;
        let mut tx = self.store().write(ctx.project.id).await?;
        let session = match session_id {
            Some(id) => {
                if !tx.upload_session_exists(id).await? {
                    return Err(AppError::NotFound(format!("upload-session {id} not found")));
                }
                id
            }
            None => tx.create_upload_session().await?,
        };
        let held = tx.upload_session_bytes(session).await?;
        let size = file.content.len() as u64;
        let count = tx
            .add_upload_file(
                session,
                &StoredUploadFile {
                    name: file.name,
                    content: file.content,
                },
            )
            .await?;
        if let Err(e) = check_limits(count as usize, held + size) {
            drop(tx);
            self.discard_session(ctx, session).await;
            return Err(e);
        }
        if !last_upload {
            tx.commit().await?;
            return Ok(UploadOutcome {
                session_id: session,
                upload_number: count,
                changes: Vec::new(),
            });
        }
        let files: Vec<UploadFile> = tx
            .take_upload_files(session)
            .await?
            .into_iter()
            .map(|f| UploadFile {
                name: f.name,
                content: f.content,
            })
            .collect();
        let result = async {
            let sets = parse_off_runtime(files).await?;
            let mut changes = Changes::default();
            apply(&mut tx, ctx, &mut changes, sets).await?;
            Ok::<_, AppError>(changes)
        }
        .await;
        match result {
            Ok(changes) => {
                let summary = self.commit(ctx, tx, changes).await?;
                Ok(UploadOutcome {
                    session_id: session,
                    upload_number: count,
                    changes: summary,
                })
            }
            Err(e) => {
                drop(tx);
                self.discard_session(ctx, session).await;
                Err(e)
            }
        }
    }

    /// Removes a failed session so its files do not linger.
    async fn discard_session(&self, ctx: &Ctx, session: Uuid) {
        let result = async {
            let mut tx = self.store().write(ctx.project.id).await?;
            tx.take_upload_files(session).await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(project = %ctx.project.name, %session, error = %e, "could not discard failed upload session");
        }
    }
}

/// Parsing is CPU-bound (decompression, YAML, schema validation): keep it off the async workers.
async fn parse_off_runtime(files: Vec<UploadFile>) -> Result<Vec<FileSet>, AppError> {
    tokio::task::spawn_blocking(move || parse_upload(&files))
        .await
        .map_err(|e| AppError::Internal(format!("upload parser failed: {e}")))?
        .map_err(AppError::from)
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
