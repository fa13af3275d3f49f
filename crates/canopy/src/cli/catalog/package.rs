//! `canopy catalog package ...` (alias `deployment-package`). Like the reference CLI and UI,
//! `create` also creates a first deployment profile mapping every application to its default
//! profile, so a new package is deployable at once. Update is read-modify-write; when the
//! applications change, deployment profiles are kept congruent (entries of removed applications
//! dropped, new applications mapped to their default profile).

use std::collections::BTreeMap;

use anyhow::bail;
use canopy_client::Client;
use canopy_core::catalog::{
    ApplicationDependency, ApplicationReference, DeploymentPackage, DeploymentProfile, Kind,
};
use clap::{Args, Subcommand};

use crate::cli::args::{KindArg, ListArgs, key_value, name_version};
use crate::cli::catalog::fetch;
use crate::cli::output::{package_details, packages_table};
use crate::cli::{Ctx, Reported, write_error};

#[derive(Debug, Subcommand)]
pub enum PackageCommand {
    /// Create a deployment package with a first deployment profile.
    Create {
        name: String,
        version: String,
        /// Application in the package, NAME:VERSION. Repeatable.
        #[arg(long = "app", required = true, value_name = "NAME:VERSION", value_parser = name_version)]
        apps: Vec<(String, String)>,
        /// Start-up order: APP=REQUIRED-APP (APP starts after REQUIRED-APP). Repeatable.
        #[arg(long, value_name = "APP=APP", value_parser = key_value)]
        dependency: Vec<(String, String)>,
        /// Namespace an application deploys to by default: APP=NAMESPACE. Repeatable.
        #[arg(long, value_name = "APP=NS", value_parser = key_value)]
        default_namespace: Vec<(String, String)>,
        /// Name of the deployment profile created with the package.
        #[arg(long, default_value = "default", value_name = "NAME")]
        default_profile_name: String,
        #[command(flatten)]
        fields: PackageFields,
    },
    /// List deployment packages.
    #[command(visible_alias = "ls")]
    List {
        /// Only these kinds (repeat or separate with commas).
        #[arg(long, value_enum, ignore_case = true, value_delimiter = ',')]
        kind: Vec<KindArg>,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Show a package version, or every version when VERSION is left out.
    Get {
        name: String,
        version: Option<String>,
    },
    /// Change a package version: only the given flags change.
    #[command(visible_alias = "set")]
    Update {
        name: String,
        version: String,
        /// Replaces the applications: NAME:VERSION, repeatable.
        #[arg(long = "app", value_name = "NAME:VERSION", value_parser = name_version)]
        apps: Vec<(String, String)>,
        /// Replaces the dependencies: APP=REQUIRED-APP, repeatable.
        #[arg(long, value_name = "APP=APP", value_parser = key_value)]
        dependency: Vec<(String, String)>,
        /// Remove every dependency.
        #[arg(long, conflicts_with = "dependency")]
        clear_dependencies: bool,
        /// Replaces the default namespaces: APP=NAMESPACE, repeatable.
        #[arg(long, value_name = "APP=NS", value_parser = key_value)]
        default_namespace: Vec<(String, String)>,
        /// Remove every default namespace.
        #[arg(long, conflicts_with = "default_namespace")]
        clear_default_namespaces: bool,
        /// Deployment profile used when a deployment names none.
        #[arg(long, value_name = "PROFILE")]
        default_profile: Option<String>,
        /// Mark the package deployed (locks it) or not.
        #[arg(long, value_name = "true|false")]
        deployed: Option<bool>,
        /// Show the package in listings meant for people.
        #[arg(long, value_name = "true|false")]
        visible: Option<bool>,
        #[command(flatten)]
        fields: PackageFields,
    },
    /// Delete a package version, or every version when VERSION is left out.
    #[command(visible_alias = "rm")]
    Delete {
        name: String,
        version: Option<String>,
    },
}

/// Optional package fields shared by create and update.
#[derive(Debug, Args)]
pub struct PackageFields {
    #[arg(long, value_enum, ignore_case = true)]
    kind: Option<KindArg>,
    #[arg(long, value_name = "TEXT")]
    display_name: Option<String>,
    #[arg(long, value_name = "TEXT")]
    description: Option<String>,
}

impl PackageFields {
    fn apply(self, p: &mut DeploymentPackage) {
        if let Some(k) = self.kind {
            p.kind = Kind::from(k);
        }
        if let Some(v) = self.display_name {
            p.display_name = v;
        }
        if let Some(v) = self.description {
            p.description = v;
        }
    }
}

fn refs(apps: Vec<(String, String)>) -> Vec<ApplicationReference> {
    apps.into_iter()
        .map(|(name, version)| ApplicationReference { name, version })
        .collect()
}

fn dependencies(pairs: Vec<(String, String)>) -> Vec<ApplicationDependency> {
    pairs
        .into_iter()
        .map(|(name, requires)| ApplicationDependency { name, requires })
        .collect()
}

/// The key of an application in a deployment profile: its name, or `name:version` when the
/// package holds more than one version of it.
pub(crate) fn app_key(refs: &[ApplicationReference], r: &ApplicationReference) -> String {
    if refs.iter().filter(|o| o.name == r.name).count() > 1 {
        format!("{}:{}", r.name, r.version)
    } else {
        r.name.clone()
    }
}

/// True when `key` (an application-profiles key) names the application `r`.
pub(crate) fn key_names(key: &str, r: &ApplicationReference) -> bool {
    key == r.name || key.split_once(':') == Some((r.name.as_str(), r.version.as_str()))
}

/// Adds an entry for every application of `refs` that `map` does not cover yet, using the
/// application's default profile (applications without profiles are left out).
pub(crate) async fn fill_default_profiles(
    client: &Client,
    refs: &[ApplicationReference],
    map: &mut BTreeMap<String, String>,
) -> anyhow::Result<()> {
    for r in refs {
        if map.keys().any(|k| key_names(k, r)) {
            continue;
        }
        let app = client.get_application(&r.name, &r.version).await?;
        if !app.default_profile_name.is_empty() {
            map.insert(app_key(refs, r), app.default_profile_name);
        }
    }
    Ok(())
}

pub async fn run(cmd: PackageCommand, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    match cmd {
        PackageCommand::Create {
            name,
            version,
            apps,
            dependency,
            default_namespace,
            default_profile_name,
            fields,
        } => {
            let application_references = refs(apps);
            let mut map = BTreeMap::new();
            fill_default_profiles(&ctx.client, &application_references, &mut map).await?;
            let mut p = DeploymentPackage {
                name,
                version,
                application_references,
                application_dependencies: dependencies(dependency),
                default_namespaces: default_namespace.into_iter().collect(),
                is_visible: true,
                ..Default::default()
            };
            if !map.is_empty() {
                p.profiles = vec![DeploymentProfile {
                    name: default_profile_name.clone(),
                    application_profiles: map,
                    ..Default::default()
                }];
                p.default_profile_name = default_profile_name;
            }
            fields.apply(&mut p);
            let created = ctx.client.create_deployment_package(&p).await?;
            if ctx.structured() {
                ctx.print_one(&created, package_details(&created))
            } else if p.profiles.is_empty() {
                ctx.done(format_args!(
                    "created deployment-package {}:{} (no application has a profile, so no deployment profile)",
                    p.name, p.version
                ))
            } else {
                ctx.done(format_args!(
                    "created deployment-package {}:{} with deployment profile {}",
                    p.name, p.version, p.default_profile_name
                ))
            }
        }
        PackageCommand::List { kind, list } => {
            let client = &ctx.client;
            let (items, page) = fetch(&list, list.params(&kind), async |p| {
                client.list_deployment_packages(p).await
            })
            .await?;
            ctx.print_list(&items, packages_table(&items), Some(page))
        }
        PackageCommand::Get {
            name,
            version: Some(version),
        } => {
            let p = ctx.client.get_deployment_package(&name, &version).await?;
            ctx.print_one(&p, package_details(&p))
        }
        PackageCommand::Get {
            name,
            version: None,
        } => {
            let versions = all_versions(ctx, &name).await?;
            ctx.print_list(&versions, packages_table(&versions), None)
        }
        PackageCommand::Update {
            name,
            version,
            apps,
            dependency,
            clear_dependencies,
            default_namespace,
            clear_default_namespaces,
            default_profile,
            deployed,
            visible,
            fields,
        } => {
            let mut p = ctx.client.get_deployment_package(&name, &version).await?;
            if !apps.is_empty() {
                let new_refs = refs(apps);
                for dp in &mut p.profiles {
                    dp.application_profiles
                        .retain(|k, _| new_refs.iter().any(|r| key_names(k, r)));
                    fill_default_profiles(&ctx.client, &new_refs, &mut dp.application_profiles)
                        .await?;
                }
                p.application_references = new_refs;
            }
            if clear_dependencies || !dependency.is_empty() {
                p.application_dependencies = dependencies(dependency);
            }
            if clear_default_namespaces || !default_namespace.is_empty() {
                p.default_namespaces = default_namespace.into_iter().collect();
            }
            if let Some(v) = default_profile {
                p.default_profile_name = v;
            }
            if let Some(v) = deployed {
                p.is_deployed = v;
            }
            if let Some(v) = visible {
                p.is_visible = v;
            }
            fields.apply(&mut p);
            ctx.client
                .update_deployment_package(&name, &version, &p)
                .await?;
            if ctx.structured() {
                let p = ctx.client.get_deployment_package(&name, &version).await?;
                ctx.print_one(&p, package_details(&p))
            } else {
                ctx.done(format_args!("updated deployment-package {name}:{version}"))
            }
        }
        PackageCommand::Delete {
            name,
            version: Some(version),
        } => {
            ctx.client
                .delete_deployment_package(&name, &version)
                .await?;
            ctx.done(format_args!("deleted deployment-package {name}:{version}"))
        }
        PackageCommand::Delete {
            name,
            version: None,
        } => {
            let versions = all_versions(ctx, &name).await?;
            let mut failed = false;
            for p in versions {
                match ctx
                    .client
                    .delete_deployment_package(&p.name, &p.version)
                    .await
                {
                    Ok(()) => ctx.done(format_args!(
                        "deleted deployment-package {}:{}",
                        p.name, p.version
                    ))?,
                    Err(e) => {
                        failed = true;
                        write_error(&e.into(), ctx.err)?;
                    }
                }
            }
            if failed {
                return Err(Reported.into());
            }
            Ok(())
        }
    }
}

async fn all_versions(ctx: &mut Ctx<'_>, name: &str) -> anyhow::Result<Vec<DeploymentPackage>> {
    let versions = ctx.client.deployment_package_versions(name).await?;
    if versions.is_empty() {
        bail!(
            "deployment-package {name} not found in project {}",
            ctx.client.project()
        );
    }
    Ok(versions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, version: &str) -> ApplicationReference {
        ApplicationReference {
            name: name.into(),
            version: version.into(),
        }
    }

    #[test]
    fn keys_are_qualified_only_for_repeated_names() {
        let refs = vec![r("web", "1"), r("db", "1"), r("web", "2")];
        assert_eq!(app_key(&refs, &refs[0]), "web:1");
        assert_eq!(app_key(&refs, &refs[1]), "db");
        assert_eq!(app_key(&refs, &refs[2]), "web:2");
    }

    #[test]
    fn keys_name_their_application() {
        assert!(key_names("web", &r("web", "1")));
        assert!(key_names("web:1", &r("web", "1")));
        assert!(!key_names("web:2", &r("web", "1")));
        assert!(!key_names("db", &r("web", "1")));
    }
}
