//! `canopy catalog artifact ...`: small files (icons, thumbnails, dashboards) stored in the
//! catalog. The MIME type may be left out when the file name tells it.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use canopy_core::catalog::Artifact;
use clap::{Args, Subcommand};

use crate::cli::Ctx;
use crate::cli::args::{ListArgs, is_stdio, read_input};
use crate::cli::catalog::fetch;
use crate::cli::output::{artifact_details, artifacts_table, human_size};

#[derive(Debug, Subcommand)]
pub enum ArtifactCommand {
    /// Create an artifact from a file.
    Create {
        name: String,
        /// Content; `-` reads standard input.
        #[arg(long, visible_alias = "artifact", value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        fields: ArtifactFields,
    },
    /// List artifacts.
    #[command(visible_alias = "ls")]
    List {
        #[command(flatten)]
        list: ListArgs,
    },
    /// Show an artifact, or save its content.
    Get {
        name: String,
        /// Write the content to FILE (`-`: standard output) instead of showing the artifact.
        #[arg(long, value_name = "FILE")]
        content_to: Option<PathBuf>,
    },
    /// Change an artifact: only the given flags change.
    #[command(visible_alias = "set")]
    Update {
        name: String,
        /// New content; `-` reads standard input.
        #[arg(long, visible_alias = "artifact", value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        fields: ArtifactFields,
    },
    /// Delete an artifact (refused while a package uses it).
    #[command(visible_alias = "rm")]
    Delete { name: String },
}

/// Optional artifact fields shared by create and update.
#[derive(Debug, Args)]
pub struct ArtifactFields {
    /// text/plain, application/json, application/yaml, image/png or image/jpeg; guessed from
    /// the file name when left out.
    #[arg(long, value_name = "TYPE")]
    mime_type: Option<String>,
    #[arg(long, value_name = "TEXT")]
    display_name: Option<String>,
    #[arg(long, value_name = "TEXT")]
    description: Option<String>,
}

impl ArtifactFields {
    fn apply(self, a: &mut Artifact) {
        if let Some(v) = self.mime_type {
            a.mime_type = v;
        }
        if let Some(v) = self.display_name {
            a.display_name = v;
        }
        if let Some(v) = self.description {
            a.description = v;
        }
    }
}

/// The MIME type the catalog accepts for a file name, if its extension tells.
pub fn guess_mime_type(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "json" => "application/json",
        "yaml" | "yml" => "application/yaml",
        "txt" | "text" | "md" => "text/plain",
        _ => return None,
    })
}

pub async fn run(cmd: ArtifactCommand, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    match cmd {
        ArtifactCommand::Create { name, file, fields } => {
            let mut a = Artifact {
                name,
                artifact: read_input(&file).await?,
                ..Default::default()
            };
            if fields.mime_type.is_none() {
                match guess_mime_type(&file) {
                    Some(t) => a.mime_type = t.to_owned(),
                    None => bail!(
                        "cannot tell the MIME type of {}; give it with --mime-type",
                        file.display()
                    ),
                }
            }
            fields.apply(&mut a);
            let created = ctx.client.create_artifact(&a).await?;
            if ctx.structured() {
                ctx.print_one(&created, artifact_details(&created))
            } else {
                ctx.done(format_args!(
                    "created artifact {} ({}, {})",
                    a.name,
                    a.mime_type,
                    human_size(a.artifact.len())
                ))
            }
        }
        ArtifactCommand::List { list } => {
            let client = &ctx.client;
            let (items, page) = fetch(&list, list.params(&[]), async |p| {
                client.list_artifacts(p).await
            })
            .await?;
            ctx.print_list(&items, artifacts_table(&items), Some(page))
        }
        ArtifactCommand::Get { name, content_to } => {
            let a = ctx.client.get_artifact(&name).await?;
            match content_to {
                None => ctx.print_one(&a, artifact_details(&a)),
                Some(path) if is_stdio(&path) => Ok(ctx.out.write_all(&a.artifact)?),
                Some(path) => {
                    tokio::fs::write(&path, &a.artifact)
                        .await
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    ctx.done(format_args!(
                        "wrote {} ({})",
                        path.display(),
                        human_size(a.artifact.len())
                    ))
                }
            }
        }
        ArtifactCommand::Update { name, file, fields } => {
            let mut a = ctx.client.get_artifact(&name).await?;
            if let Some(path) = &file {
                a.artifact = read_input(path).await?;
                if fields.mime_type.is_none()
                    && let Some(t) = guess_mime_type(path)
                {
                    a.mime_type = t.to_owned();
                }
            }
            fields.apply(&mut a);
            ctx.client.update_artifact(&name, &a).await?;
            if ctx.structured() {
                let a = ctx.client.get_artifact(&name).await?;
                ctx.print_one(&a, artifact_details(&a))
            } else {
                ctx.done(format_args!("updated artifact {name}"))
            }
        }
        ArtifactCommand::Delete { name } => {
            ctx.client.delete_artifact(&name).await?;
            ctx.done(format_args!("deleted artifact {name}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses_mime_types_from_names() {
        assert_eq!(guess_mime_type(Path::new("icon.PNG")), Some("image/png"));
        assert_eq!(guess_mime_type(Path::new("a/b.jpeg")), Some("image/jpeg"));
        assert_eq!(
            guess_mime_type(Path::new("d.yml")),
            Some("application/yaml")
        );
        assert_eq!(guess_mime_type(Path::new("-")), None);
        assert_eq!(guess_mime_type(Path::new("x.bin")), None);
    }
}
