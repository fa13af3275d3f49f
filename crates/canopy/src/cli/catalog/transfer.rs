//! `canopy catalog upload` and `canopy catalog export`: moving whole packages in and out of the
//! catalog in the YAML format.
//!
//! An upload is sent as one bulk request, so the server applies it all or nothing. To say what
//! it did, the CLI reads the entity headers of the files itself and asks, before uploading,
//! which of them exist already (created vs updated); that is for the report only.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use canopy_client::{Client, ClientError, MAX_UPLOAD_FILES, UploadResponse};
use serde::Serialize;

use crate::cli::args::is_stdio;
use crate::cli::output::{human_size, structured};
use crate::cli::upload::{self, EntityKind, EntityRef};
use crate::cli::{Ctx, Reported};

/// Flags of `canopy catalog upload`.
#[derive(Debug, clap::Args)]
pub struct UploadArgs {
    /// YAML files, directories (walked for *.yaml, *.yml, *.tgz, *.tar.gz; hidden entries
    /// skipped) and .tgz/.tar.gz bundles.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
}

/// Flags of `canopy catalog export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    package: String,
    version: String,
    /// Where to write the tarball (`-`: standard output) [default: NAME-VERSION.tar.gz]
    #[arg(short = 'o', long = "output-file", value_name = "FILE")]
    output_file: Option<PathBuf>,
}

/// What happened to one entity of an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Action {
    Created,
    Updated,
    /// Whether it existed before could not be told.
    CreatedOrUpdated,
}

impl Action {
    fn label(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::CreatedOrUpdated => "created or updated",
        }
    }
}

#[derive(Debug, Serialize)]
struct Applied {
    action: Action,
    #[serde(flatten)]
    entity: EntityRef,
}

#[derive(Debug, Serialize)]
struct UploadReport<'a> {
    project: &'a str,
    files: Vec<&'a str>,
    entities: &'a [Applied],
}

pub async fn upload(args: UploadArgs, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let paths = args.paths;
    let (files, entities) = tokio::task::spawn_blocking(move || {
        let found = upload::discover(&paths)?;
        if found.len() > MAX_UPLOAD_FILES {
            bail!(
                "found {} files to upload; one upload takes at most {MAX_UPLOAD_FILES}: \
                 upload fewer paths at a time, or bundle files into a .tar.gz",
                found.len()
            );
        }
        let files = upload::read_all(&found)?;
        let entities = upload::summarize(&files);
        Ok((files, entities))
    })
    .await
    .context("reading the files to upload failed")??;

    let mut applied = Vec::with_capacity(entities.len());
    for entity in entities {
        let action = match exists(&ctx.client, &entity).await {
            Ok(true) => Action::Updated,
            Ok(false) => Action::Created,
            Err(e) if e.is_unreachable() => return Err(e.into()),
            Err(_) => Action::CreatedOrUpdated,
        };
        applied.push(Applied { action, entity });
    }

    let count = files.len();
    let responses = ctx.client.bulk_upload(&files).await.with_context(|| {
        format!("upload of {count} files failed; nothing was applied")
    })?;
    let errors = error_messages(&responses);
    if !errors.is_empty() {
        for m in &errors {
            writeln!(ctx.err, "error: {m}")?;
        }
        writeln!(
            ctx.err,
            "upload of {count} files failed; nothing was applied"
        )?;
        return Err(Reported.into());
    }

    if ctx.structured() {
        let report = UploadReport {
            project: ctx.client.project(),
            files: files.iter().map(|f| f.name.as_str()).collect(),
            entities: &applied,
        };
        let text = structured(ctx.format, &report)?;
        ctx.out.write_all(text.as_bytes())?;
        return Ok(());
    }
    for a in &applied {
        writeln!(ctx.out, "{} {}", a.action.label(), a.entity)?;
    }
    writeln!(
        ctx.out,
        "uploaded {count} file{} to project {}",
        if count == 1 { "" } else { "s" },
        ctx.client.project()
    )?;
    Ok(())
}

/// Every distinct error message of the responses, in order.
fn error_messages(responses: &[UploadResponse]) -> Vec<&str> {
    let mut seen = Vec::new();
    for m in responses.iter().flat_map(|r| &r.error_messages) {
        if !seen.contains(&m.as_str()) {
            seen.push(m.as_str());
        }
    }
    seen
}

async fn exists(client: &Client, e: &EntityRef) -> Result<bool, ClientError> {
    let version = e.version.as_deref().unwrap_or("");
    let result = match e.kind {
        EntityKind::Registry => client.get_registry(&e.name, false).await.map(drop),
        EntityKind::Application => client.get_application(&e.name, version).await.map(drop),
        EntityKind::Artifact => client.get_artifact(&e.name).await.map(drop),
        EntityKind::DeploymentPackage => client
            .get_deployment_package(&e.name, version)
            .await
            .map(drop),
    };
    match result {
        Ok(()) => Ok(true),
        Err(err) if err.is_not_found() => Ok(false),
        Err(err) => Err(err),
    }
}

pub async fn export(args: ExportArgs, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let bytes = ctx
        .client
        .download_deployment_package(&args.package, &args.version)
        .await?;
    let path = args
        .output_file
        .unwrap_or_else(|| PathBuf::from(format!("{}-{}.tar.gz", args.package, args.version)));
    if is_stdio(&path) {
        ctx.out.write_all(&bytes)?;
        return Ok(());
    }
    tokio::fs::write(&path, &bytes)
        .await
        .with_context(|| format!("cannot write {}", path.display()))?;
    ctx.done(format_args!(
        "exported deployment-package {}:{} to {} ({})",
        args.package,
        args.version,
        path.display(),
        human_size(bytes.len())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_deduplicated_in_order() {
        let r = |msgs: &[&str]| UploadResponse {
            error_messages: msgs.iter().map(|m| (*m).to_owned()).collect(),
            ..Default::default()
        };
        let responses = vec![r(&["a.yaml: bad", "b.yaml: worse"]), r(&[]), r(&["a.yaml: bad"])];
        assert_eq!(error_messages(&responses), ["a.yaml: bad", "b.yaml: worse"]);
        assert!(error_messages(&[r(&[])]).is_empty());
    }
}
