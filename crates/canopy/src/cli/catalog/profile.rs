//! `canopy catalog profile ...`: profiles live inside an application, so every change is a
//! client-side read-modify-write of the whole application (as the reference CLI does). The
//! server re-checks everything, e.g. that a profile in use by a package is not removed.

use std::path::PathBuf;

use anyhow::bail;
use canopy_core::catalog::{Application, DeploymentRequirement, ParameterTemplate, Profile};
use clap::{Args, Subcommand};

use crate::cli::Ctx;
use crate::cli::args::{deployment_requirement, parameter_template, read_text};
use crate::cli::output::{profile_details, profiles_table};

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Add a profile to an application version.
    Create {
        app: String,
        version: String,
        name: String,
        #[command(flatten)]
        fields: ProfileFields,
    },
    /// List the profiles of an application version.
    #[command(visible_alias = "ls")]
    List { app: String, version: String },
    /// Show a profile, with its values.
    Get {
        app: String,
        version: String,
        name: String,
    },
    /// Change a profile: only the given flags change.
    #[command(visible_alias = "set")]
    Update {
        app: String,
        version: String,
        name: String,
        #[command(flatten)]
        fields: ProfileFields,
    },
    /// Remove a profile from an application version.
    #[command(visible_alias = "rm")]
    Delete {
        app: String,
        version: String,
        name: String,
    },
}

/// Profile fields shared by create and update.
#[derive(Debug, Args)]
pub struct ProfileFields {
    /// Helm values (YAML) for this profile; `-` reads standard input.
    #[arg(long, visible_alias = "chart-values", value_name = "FILE")]
    values_file: Option<PathBuf>,
    /// Parameter a deployment may set: NAME=TYPE[:DISPLAY-NAME[:DEFAULT]] with TYPE string,
    /// number or boolean. Repeatable; on update, replaces all templates.
    #[arg(long, value_name = "SPEC", value_parser = parameter_template)]
    parameter_template: Vec<ParameterTemplate>,
    /// Package that must be deployed first: PACKAGE:VERSION[:DEPLOYMENT-PROFILE]. Repeatable;
    /// on update, replaces all requirements.
    #[arg(long, value_name = "SPEC", value_parser = deployment_requirement)]
    deployment_requirement: Vec<DeploymentRequirement>,
    #[arg(long, value_name = "TEXT")]
    display_name: Option<String>,
    #[arg(long, value_name = "TEXT")]
    description: Option<String>,
    /// Make this the application's default profile (the first profile always is).
    #[arg(long)]
    default: bool,
}

impl ProfileFields {
    /// Applies the flags to `p`; returns whether the profile should become the default.
    async fn apply(self, p: &mut Profile) -> anyhow::Result<bool> {
        if let Some(path) = &self.values_file {
            p.chart_values = read_text(path).await?;
        }
        if !self.parameter_template.is_empty() {
            p.parameter_templates = self.parameter_template;
        }
        if !self.deployment_requirement.is_empty() {
            p.deployment_requirement = self.deployment_requirement;
        }
        if let Some(v) = self.display_name {
            p.display_name = v;
        }
        if let Some(v) = self.description {
            p.description = v;
        }
        Ok(self.default)
    }
}

fn find<'a>(app: &'a Application, name: &str) -> anyhow::Result<&'a Profile> {
    app.profile(name).ok_or_else(|| {
        anyhow::anyhow!(
            "profile {name} not found in application {}:{}",
            app.name,
            app.version
        )
    })
}

pub async fn run(cmd: ProfileCommand, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    match cmd {
        ProfileCommand::Create {
            app,
            version,
            name,
            fields,
        } => {
            let mut a = ctx.client.get_application(&app, &version).await?;
            if a.profile(&name).is_some() {
                bail!(
                    "application {app}:{version} already has a profile {name}; \
                     change it with `canopy catalog profile update`"
                );
            }
            let mut p = Profile {
                name: name.clone(),
                ..Default::default()
            };
            let make_default = fields.apply(&mut p).await?;
            a.profiles.push(p);
            if make_default || a.default_profile_name.is_empty() {
                a.default_profile_name = name.clone();
            }
            ctx.client.update_application(&app, &version, &a).await?;
            show_or_confirm(ctx, &app, &version, &name, "created").await
        }
        ProfileCommand::List { app, version } => {
            let a = ctx.client.get_application(&app, &version).await?;
            ctx.print_list(&a.profiles, profiles_table(&a), None)
        }
        ProfileCommand::Get { app, version, name } => {
            let a = ctx.client.get_application(&app, &version).await?;
            let p = find(&a, &name)?;
            ctx.print_one(p, profile_details(&a, p))
        }
        ProfileCommand::Update {
            app,
            version,
            name,
            fields,
        } => {
            let mut a = ctx.client.get_application(&app, &version).await?;
            let Some(p) = a.profiles.iter_mut().find(|p| p.name == name) else {
                bail!("profile {name} not found in application {app}:{version}");
            };
            if fields.apply(p).await? {
                a.default_profile_name = name.clone();
            }
            ctx.client.update_application(&app, &version, &a).await?;
            show_or_confirm(ctx, &app, &version, &name, "updated").await
        }
        ProfileCommand::Delete { app, version, name } => {
            let mut a = ctx.client.get_application(&app, &version).await?;
            find(&a, &name)?;
            a.profiles.retain(|p| p.name != name);
            if a.default_profile_name == name {
                if let Some(other) = a.profiles.first() {
                    bail!(
                        "profile {name} is the default profile of application {app}:{version}; \
                         make another the default first, e.g. \
                         `canopy catalog application update {app} {version} --default-profile {}`",
                        other.name
                    );
                }
                a.default_profile_name.clear();
            }
            ctx.client.update_application(&app, &version, &a).await?;
            ctx.done(format_args!(
                "deleted profile {name} of application {app}:{version}"
            ))
        }
    }
}

async fn show_or_confirm(
    ctx: &mut Ctx<'_>,
    app: &str,
    version: &str,
    name: &str,
    verb: &str,
) -> anyhow::Result<()> {
    if ctx.structured() {
        let a = ctx.client.get_application(app, version).await?;
        let p = find(&a, name)?;
        ctx.print_one(p, profile_details(&a, p))
    } else {
        ctx.done(format_args!(
            "{verb} profile {name} of application {app}:{version}"
        ))
    }
}
