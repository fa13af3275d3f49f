//! `canopy catalog application ...`. Profiles are managed by `canopy catalog profile`; update
//! here is read-modify-write of the application's own fields and keeps its profiles.

use canopy_core::catalog::{Application, Kind};
use clap::{Args, Subcommand};

use crate::cli::Ctx;
use crate::cli::args::{KindArg, ListArgs};
use crate::cli::catalog::fetch;
use crate::cli::output::{application_details, applications_table};

#[derive(Debug, Subcommand)]
pub enum ApplicationCommand {
    /// Create an application (add values with `canopy catalog profile create`).
    Create {
        /// Application name (at most 26 characters: used in network names).
        name: String,
        version: String,
        /// Helm chart name, appended to the registry's root URL.
        #[arg(long, value_name = "NAME")]
        chart_name: String,
        #[arg(long, value_name = "VERSION")]
        chart_version: String,
        /// Name of the HELM registry holding the chart.
        #[arg(long, value_name = "REGISTRY")]
        helm_registry: String,
        #[command(flatten)]
        fields: ApplicationFields,
    },
    /// List applications.
    #[command(visible_alias = "ls")]
    List {
        /// Only these kinds (repeat or separate with commas).
        #[arg(long, value_enum, ignore_case = true, value_delimiter = ',')]
        kind: Vec<KindArg>,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Show an application version, or every version when VERSION is left out.
    Get {
        name: String,
        version: Option<String>,
    },
    /// Change an application version: only the given flags change.
    #[command(visible_alias = "set")]
    Update {
        name: String,
        version: String,
        #[arg(long, value_name = "NAME")]
        chart_name: Option<String>,
        #[arg(long, value_name = "VERSION")]
        chart_version: Option<String>,
        #[arg(long, value_name = "REGISTRY")]
        helm_registry: Option<String>,
        /// Profile used when a deployment names none.
        #[arg(long, value_name = "PROFILE")]
        default_profile: Option<String>,
        #[command(flatten)]
        fields: ApplicationFields,
    },
    /// Delete an application version (refused while a package uses it).
    #[command(visible_alias = "rm")]
    Delete { name: String, version: String },
}

/// Optional application fields shared by create and update.
#[derive(Debug, Args)]
pub struct ApplicationFields {
    /// Name of the IMAGE registry holding the application's images (empty clears it).
    #[arg(long, value_name = "REGISTRY")]
    image_registry: Option<String>,
    #[arg(long, value_enum, ignore_case = true)]
    kind: Option<KindArg>,
    #[arg(long, value_name = "TEXT")]
    display_name: Option<String>,
    #[arg(long, value_name = "TEXT")]
    description: Option<String>,
}

impl ApplicationFields {
    fn apply(self, a: &mut Application) {
        if let Some(v) = self.image_registry {
            a.image_registry_name = v;
        }
        if let Some(k) = self.kind {
            a.kind = Kind::from(k);
        }
        if let Some(v) = self.display_name {
            a.display_name = v;
        }
        if let Some(v) = self.description {
            a.description = v;
        }
    }
}

pub async fn run(cmd: ApplicationCommand, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    match cmd {
        ApplicationCommand::Create {
            name,
            version,
            chart_name,
            chart_version,
            helm_registry,
            fields,
        } => {
            let mut a = Application {
                name,
                version,
                chart_name,
                chart_version,
                helm_registry_name: helm_registry,
                ..Default::default()
            };
            fields.apply(&mut a);
            let created = ctx.client.create_application(&a).await?;
            if ctx.structured() {
                ctx.print_one(&created, application_details(&created, None))
            } else {
                ctx.done(format_args!("created application {}:{}", a.name, a.version))
            }
        }
        ApplicationCommand::List { kind, list } => {
            let client = &ctx.client;
            let (items, page) = fetch(&list, list.params(&kind), async |p| {
                client.list_applications(p).await
            })
            .await?;
            ctx.print_list(&items, applications_table(&items), Some(page))
        }
        ApplicationCommand::Get {
            name,
            version: Some(version),
        } => {
            let a = ctx.client.get_application(&name, &version).await?;
            let refs = if ctx.structured() {
                None
            } else {
                // Only shown to people; a failure here should not hide the application.
                ctx.client
                    .application_reference_count(&name, &version)
                    .await
                    .ok()
            };
            ctx.print_one(&a, application_details(&a, refs))
        }
        ApplicationCommand::Get {
            name,
            version: None,
        } => {
            let versions = ctx.client.application_versions(&name).await?;
            if versions.is_empty() {
                anyhow::bail!(
                    "application {name} not found in project {}",
                    ctx.client.project()
                );
            }
            ctx.print_list(&versions, applications_table(&versions), None)
        }
        ApplicationCommand::Update {
            name,
            version,
            chart_name,
            chart_version,
            helm_registry,
            default_profile,
            fields,
        } => {
            let mut a = ctx.client.get_application(&name, &version).await?;
            if let Some(v) = chart_name {
                a.chart_name = v;
            }
            if let Some(v) = chart_version {
                a.chart_version = v;
            }
            if let Some(v) = helm_registry {
                a.helm_registry_name = v;
            }
            if let Some(v) = default_profile {
                a.default_profile_name = v;
            }
            fields.apply(&mut a);
            ctx.client.update_application(&name, &version, &a).await?;
            if ctx.structured() {
                let a = ctx.client.get_application(&name, &version).await?;
                ctx.print_one(&a, application_details(&a, None))
            } else {
                ctx.done(format_args!("updated application {name}:{version}"))
            }
        }
        ApplicationCommand::Delete { name, version } => {
            ctx.client.delete_application(&name, &version).await?;
            ctx.done(format_args!("deleted application {name}:{version}"))
        }
    }
}
