//! `canopy catalog registry ...`. Update is read-modify-write of the whole registry (the API
//! replaces it), reading it *with* its credentials so that changing one field keeps the rest.

use std::path::PathBuf;

use anyhow::Context as _;
use canopy_core::catalog::Registry;
use clap::{Args, Subcommand};

use crate::cli::Ctx;
use crate::cli::args::{ListArgs, RegistryType, read_text};
use crate::cli::catalog::fetch;
use crate::cli::output::{registries_table, registry_details};

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Create a registry.
    Create {
        /// Registry name (lowercase letters, digits, `-`).
        name: String,
        /// Base URL of the charts or images, e.g. oci://registry-1.docker.io/bitnamicharts.
        #[arg(long, value_name = "URL")]
        root_url: String,
        /// What the registry holds.
        #[arg(long = "type", value_enum, ignore_case = true, default_value_t = RegistryType::Helm)]
        registry_type: RegistryType,
        #[command(flatten)]
        fields: RegistryFields,
    },
    /// List registries.
    #[command(visible_alias = "ls")]
    List {
        #[command(flatten)]
        list: ListArgs,
        /// Include usernames, tokens and CA certificates.
        #[arg(long)]
        show_sensitive_info: bool,
    },
    /// Show a registry.
    Get {
        name: String,
        /// Include username, token and CA certificates.
        #[arg(long)]
        show_sensitive_info: bool,
    },
    /// Change a registry: only the given flags change.
    #[command(visible_alias = "set")]
    Update {
        name: String,
        #[arg(long, value_name = "URL")]
        root_url: Option<String>,
        #[arg(long = "type", value_enum, ignore_case = true)]
        registry_type: Option<RegistryType>,
        #[command(flatten)]
        fields: RegistryFields,
    },
    /// Delete a registry (refused while an application uses it).
    #[command(visible_alias = "rm")]
    Delete { name: String },
}

/// Optional registry fields shared by create and update. An empty value clears a field.
#[derive(Debug, Args)]
pub struct RegistryFields {
    #[arg(long, value_name = "TEXT")]
    display_name: Option<String>,
    #[arg(long, value_name = "TEXT")]
    description: Option<String>,
    #[arg(long, value_name = "NAME")]
    username: Option<String>,
    /// Password or token; `-` reads it from standard input (keeps it out of `ps`).
    #[arg(long, value_name = "TOKEN")]
    auth_token: Option<String>,
    /// PEM file of CA certificates (`-` for standard input), or `use-dynamic-cacert`.
    #[arg(long, value_name = "FILE")]
    ca_certs: Option<PathBuf>,
    /// Harbor API URL used to list the registry's charts.
    #[arg(long, value_name = "URL")]
    inventory_url: Option<String>,
    /// Inventory API type, e.g. harbor.
    #[arg(long, value_name = "TYPE")]
    api_type: Option<String>,
}

impl RegistryFields {
    async fn apply(self, r: &mut Registry) -> anyhow::Result<()> {
        if let Some(v) = self.display_name {
            r.display_name = v;
        }
        if let Some(v) = self.description {
            r.description = v;
        }
        if let Some(v) = self.username {
            r.username = Some(v);
        }
        if let Some(v) = self.auth_token {
            r.auth_token = Some(if v == "-" {
                read_text(std::path::Path::new("-"))
                    .await
                    .context("cannot read the auth token")?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned()
            } else {
                v
            });
        }
        if let Some(path) = self.ca_certs {
            r.cacerts = Some(if path.as_os_str() == "use-dynamic-cacert" {
                "use-dynamic-cacert".to_owned()
            } else {
                read_text(&path)
                    .await
                    .context("cannot read the CA certificates")?
            });
        }
        if let Some(v) = self.inventory_url {
            r.inventory_url = v;
        }
        if let Some(v) = self.api_type {
            r.api_type = v;
        }
        Ok(())
    }
}

pub async fn run(cmd: RegistryCommand, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    match cmd {
        RegistryCommand::Create {
            name,
            root_url,
            registry_type,
            fields,
        } => {
            let mut r = Registry {
                name,
                root_url,
                registry_type: registry_type.as_api().to_owned(),
                ..Default::default()
            };
            fields.apply(&mut r).await?;
            let created = ctx.client.create_registry(&r).await?;
            if ctx.structured() {
                ctx.print_one(&created, registry_details(&created))
            } else {
                ctx.done(format_args!("created registry {}", r.name))
            }
        }
        RegistryCommand::List {
            list,
            show_sensitive_info,
        } => {
            let client = &ctx.client;
            let (items, page) = fetch(&list, list.params(&[]), async |p| {
                client.list_registries(p, show_sensitive_info).await
            })
            .await?;
            let table = registries_table(&items, show_sensitive_info);
            ctx.print_list(&items, table, Some(page))
        }
        RegistryCommand::Get {
            name,
            show_sensitive_info,
        } => {
            let r = ctx.client.get_registry(&name, show_sensitive_info).await?;
            ctx.print_one(&r, registry_details(&r))
        }
        RegistryCommand::Update {
            name,
            root_url,
            registry_type,
            fields,
        } => {
            let mut r = ctx.client.get_registry(&name, true).await?;
            if let Some(v) = root_url {
                r.root_url = v;
            }
            if let Some(t) = registry_type {
                r.registry_type = t.as_api().to_owned();
            }
            fields.apply(&mut r).await?;
            ctx.client.update_registry(&name, &r).await?;
            if ctx.structured() {
                let r = ctx.client.get_registry(&name, false).await?;
                ctx.print_one(&r, registry_details(&r))
            } else {
                ctx.done(format_args!("updated registry {name}"))
            }
        }
        RegistryCommand::Delete { name } => {
            ctx.client.delete_registry(&name).await?;
            ctx.done(format_args!("deleted registry {name}"))
        }
    }
}
