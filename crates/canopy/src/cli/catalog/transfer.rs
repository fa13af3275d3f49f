//! `canopy catalog upload` and `canopy catalog export`: moving whole packages in and out of the
//! catalog in the YAML format.
//!
//! An upload is sent as one bulk request, so the server applies it all or nothing. The report
//! lists what the server says it created, updated or left unchanged; a server that does not say
//! (the reference) gets a list of what the files define, read locally.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use canopy_client::{ClientError, MAX_UPLOAD_FILES, UploadChange, UploadResponse};
use serde::Serialize;

use crate::cli::args::is_stdio;
use crate::cli::output::{human_size, structured};
use crate::cli::upload;
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

#[derive(Debug, Serialize)]
struct UploadReport<'a> {
    project: &'a str,
    files: Vec<&'a str>,
    changes: &'a [UploadChange],
}

pub async fn upload(args: UploadArgs, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let paths = args.paths;
    let files = tokio::task::spawn_blocking(move || {
        let found = upload::discover(&paths)?;
        if found.len() > MAX_UPLOAD_FILES {
            bail!(
                "found {} files to upload; one upload takes at most {MAX_UPLOAD_FILES}: \
                 upload fewer paths at a time, or bundle files into a .tar.gz",
                found.len()
            );
        }
        upload::read_all(&found)
    })
    .await
    .context("reading the files to upload failed")??;

    let count = files.len();
    let failed = format!(
        "upload of {count} file{} failed; nothing was applied",
        plural(count)
    );
    let responses = match ctx.client.bulk_upload(&files).await {
        Ok(r) => r,
        Err(ClientError::Api {
            message,
            error_messages,
            ..
        }) => {
            // One line per problem; the joined `message` only when there is no list.
            let messages = if error_messages.is_empty() {
                vec![message]
            } else {
                error_messages
            };
            return report_failure(ctx, &messages, &failed);
        }
        Err(e) => return Err(anyhow::Error::new(e).context(failed)),
    };
    let errors = error_messages(&responses);
    if !errors.is_empty() {
        return report_failure(ctx, &errors, &failed);
    }

    let mut changes: Vec<UploadChange> = responses.into_iter().flat_map(|r| r.changes).collect();
    if changes.is_empty() {
        // A server that does not report what it did: say what the files define.
        changes = upload::summarize(&files)
            .into_iter()
            .map(|e| UploadChange {
                action: "created or updated".to_owned(),
                kind: e.kind.label().to_owned(),
                key: match e.version {
                    Some(v) => format!("{}:{v}", e.name),
                    None => e.name,
                },
            })
            .collect();
    }

    if ctx.structured() {
        let report = UploadReport {
            project: ctx.client.project(),
            files: files.iter().map(|f| f.name.as_str()).collect(),
            changes: &changes,
        };
        let text = structured(ctx.format, &report)?;
        ctx.out.write_all(text.as_bytes())?;
        return Ok(());
    }
    for c in &changes {
        writeln!(ctx.out, "{} {} {}", c.action, c.kind, c.key)?;
    }
    writeln!(
        ctx.out,
        "uploaded {count} file{} to project {}",
        plural(count),
        ctx.client.project()
    )?;
    Ok(())
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Prints every message of a failed upload on its own line.
fn report_failure<S: AsRef<str>>(
    ctx: &mut Ctx<'_>,
    messages: &[S],
    failed: &str,
) -> anyhow::Result<()> {
    for m in messages {
        writeln!(ctx.err, "error: {}", m.as_ref())?;
    }
    writeln!(ctx.err, "{failed}")?;
    Err(Reported.into())
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
        let responses = vec![
            r(&["a.yaml: bad", "b.yaml: worse"]),
            r(&[]),
            r(&["a.yaml: bad"]),
        ];
        assert_eq!(error_messages(&responses), ["a.yaml: bad", "b.yaml: worse"]);
        assert!(error_messages(&[r(&[])]).is_empty());
    }
}
