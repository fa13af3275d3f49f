//! `canopy catalog deployment-profile ...`: deployment profiles live inside a package, so every
//! change is a client-side read-modify-write of the package. Applications not named with
//! `--app-profile` on create use their default profile, so a profile is complete by default.

use std::collections::BTreeMap;

use anyhow::bail;
use canopy_core::catalog::{DeploymentPackage, DeploymentProfile};
use clap::{Args, Subcommand};

use crate::cli::Ctx;
use crate::cli::args::key_value;
use crate::cli::catalog::package::fill_default_profiles;
use crate::cli::output::{deployment_profile_details, deployment_profiles_table};

#[derive(Debug, Subcommand)]
pub enum DeploymentProfileCommand {
    /// Add a deployment profile to a package version.
    Create {
        package: String,
        version: String,
        name: String,
        #[command(flatten)]
        fields: DeploymentProfileFields,
    },
    /// List the deployment profiles of a package version.
    #[command(visible_alias = "ls")]
    List { package: String, version: String },
    /// Show a deployment profile.
    Get {
        package: String,
        version: String,
        name: String,
    },
    /// Change a deployment profile: only the given flags change.
    #[command(visible_alias = "set")]
    Update {
        package: String,
        version: String,
        name: String,
        #[command(flatten)]
        fields: DeploymentProfileFields,
    },
    /// Remove a deployment profile from a package version.
    #[command(visible_alias = "rm")]
    Delete {
        package: String,
        version: String,
        name: String,
    },
}

/// Deployment profile fields shared by create and update.
#[derive(Debug, Args)]
pub struct DeploymentProfileFields {
    /// Profile an application uses: APP=PROFILE (APP may be NAME:VERSION). Repeatable; on
    /// update, sets these entries and keeps the others.
    #[arg(long, value_name = "APP=PROFILE", value_parser = key_value)]
    app_profile: Vec<(String, String)>,
    #[arg(long, value_name = "TEXT")]
    display_name: Option<String>,
    #[arg(long, value_name = "TEXT")]
    description: Option<String>,
    /// Make this the package's default deployment profile (the first one always is).
    #[arg(long)]
    default: bool,
}

impl DeploymentProfileFields {
    /// Applies the flags to `dp`; returns whether it should become the default.
    fn apply(self, dp: &mut DeploymentProfile) -> bool {
        dp.application_profiles.extend(self.app_profile);
        if let Some(v) = self.display_name {
            dp.display_name = v;
        }
        if let Some(v) = self.description {
            dp.description = v;
        }
        self.default
    }
}

fn find<'a>(p: &'a DeploymentPackage, name: &str) -> anyhow::Result<&'a DeploymentProfile> {
    p.profile(name).ok_or_else(|| {
        anyhow::anyhow!(
            "deployment-profile {name} not found in deployment-package {}:{}",
            p.name,
            p.version
        )
    })
}

pub async fn run(cmd: DeploymentProfileCommand, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    match cmd {
        DeploymentProfileCommand::Create {
            package,
            version,
            name,
            fields,
        } => {
            let mut p = ctx
                .client
                .get_deployment_package(&package, &version)
                .await?;
            if p.profile(&name).is_some() {
                bail!(
                    "deployment-package {package}:{version} already has a deployment profile {name}; \
                     change it with `canopy catalog deployment-profile update`"
                );
            }
            let mut dp = DeploymentProfile {
                name: name.clone(),
                application_profiles: BTreeMap::new(),
                ..Default::default()
            };
            let make_default = fields.apply(&mut dp);
            fill_default_profiles(
                &ctx.client,
                &p.application_references,
                &mut dp.application_profiles,
            )
            .await?;
            p.profiles.push(dp);
            if make_default || p.default_profile_name.is_empty() {
                p.default_profile_name = name.clone();
            }
            ctx.client
                .update_deployment_package(&package, &version, &p)
                .await?;
            show_or_confirm(ctx, &package, &version, &name, "created").await
        }
        DeploymentProfileCommand::List { package, version } => {
            let p = ctx
                .client
                .get_deployment_package(&package, &version)
                .await?;
            ctx.print_list(&p.profiles, deployment_profiles_table(&p), None)
        }
        DeploymentProfileCommand::Get {
            package,
            version,
            name,
        } => {
            let p = ctx
                .client
                .get_deployment_package(&package, &version)
                .await?;
            let dp = find(&p, &name)?;
            ctx.print_one(dp, deployment_profile_details(&p, dp))
        }
        DeploymentProfileCommand::Update {
            package,
            version,
            name,
            fields,
        } => {
            let mut p = ctx
                .client
                .get_deployment_package(&package, &version)
                .await?;
            let Some(dp) = p.profiles.iter_mut().find(|dp| dp.name == name) else {
                bail!(
                    "deployment-profile {name} not found in deployment-package {package}:{version}"
                );
            };
            if fields.apply(dp) {
                p.default_profile_name = name.clone();
            }
            ctx.client
                .update_deployment_package(&package, &version, &p)
                .await?;
            show_or_confirm(ctx, &package, &version, &name, "updated").await
        }
        DeploymentProfileCommand::Delete {
            package,
            version,
            name,
        } => {
            let mut p = ctx
                .client
                .get_deployment_package(&package, &version)
                .await?;
            find(&p, &name)?;
            p.profiles.retain(|dp| dp.name != name);
            if p.default_profile_name == name {
                if let Some(other) = p.profiles.first() {
                    bail!(
                        "deployment-profile {name} is the default of deployment-package \
                         {package}:{version}; make another the default first, e.g. \
                         `canopy catalog package update {package} {version} --default-profile {}`",
                        other.name
                    );
                }
                p.default_profile_name.clear();
            }
            ctx.client
                .update_deployment_package(&package, &version, &p)
                .await?;
            ctx.done(format_args!(
                "deleted deployment-profile {name} of deployment-package {package}:{version}"
            ))
        }
    }
}

async fn show_or_confirm(
    ctx: &mut Ctx<'_>,
    package: &str,
    version: &str,
    name: &str,
    verb: &str,
) -> anyhow::Result<()> {
    if ctx.structured() {
        let p = ctx.client.get_deployment_package(package, version).await?;
        let dp = find(&p, name)?;
        ctx.print_one(dp, deployment_profile_details(&p, dp))
    } else {
        ctx.done(format_args!(
            "{verb} deployment-profile {name} of deployment-package {package}:{version}"
        ))
    }
}
