//! `canopy deployment ...`: deploy a package to edges chosen by label (auto-scaling: current and
//! future edges carrying the labels) or by edge (targeted), then follow, change, upgrade and
//! delete it. Updates are read-modify-write: GET the deployment, change what the flags say, PUT
//! it back whole (masked secret values go back as `********`, which the server restores).
//!
//! A deployment is named by its id or, as in the reference CLI, by its name or display name
//! when that is unambiguous.

mod failures;
mod values;
mod watch;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::bail;
use canopy_client::{ClientError, DeleteType, ListParams};
use canopy_deploy::model::{AUTO_SCALING, Deployment, TARGETED, TargetClusters};
use clap::{ArgGroup, Args, Subcommand};
use serde::Serialize;

use super::Ctx;
use super::args::{ListArgs, key_value, label, name_version};
use super::catalog::fetch;
use super::output::{
    deployment_details, deployments_status_details, deployments_table, targets_text,
};
use values::OverrideArgs;
use watch::{EdgeRef, WatchArgs, watch_delete, watch_deployment};

pub use failures::WatchFailed;
pub use watch::detect_terminal;

#[derive(Debug, Subcommand)]
pub enum DeploymentCommand {
    /// Deploy a package: to every edge carrying --label (now and later), or to --edge.
    Create(CreateArgs),
    /// List deployments.
    #[command(visible_alias = "ls")]
    List {
        /// Only deployments targeting this label, KEY=VALUE. Repeatable: any matches.
        #[arg(long = "label", short = 'l', value_name = "KEY=VALUE", value_parser = key_value)]
        labels: Vec<(String, String)>,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Show a deployment: its status and every edge it runs on.
    Get {
        /// Id, name or display name.
        deployment: String,
    },
    /// Change a deployment: only what the flags say changes.
    #[command(visible_alias = "set")]
    Update(UpdateArgs),
    /// Move a deployment to another version of its package (up or down).
    Upgrade {
        /// Id, name or display name.
        deployment: String,
        /// The package version to run.
        version: String,
        #[command(flatten)]
        watch: WatchArgs,
    },
    /// Delete a deployment; its edges remove its apps.
    #[command(visible_alias = "rm")]
    Delete {
        /// Id, name or display name.
        deployment: String,
        /// Also delete the deployments it required (deployment requirements of its profiles).
        #[arg(long)]
        all: bool,
        /// Follow until no edge reports its apps any more.
        #[arg(long, short = 'w')]
        watch: bool,
        /// Give up watching after this long: 90s, 10m, 1h.
        #[arg(long, value_name = "DURATION", value_parser = super::args::duration, default_value = "10m", requires = "watch")]
        timeout: std::time::Duration,
    },
    /// Print the Kubernetes manifest Helm rendered for a Helm-chart application of the
    /// deployment (YAML). Secret values are masked unless you may change the deployment.
    Manifest {
        /// Id, name or display name.
        deployment: String,
        /// The application (of the deployment's package).
        app: String,
    },
    /// Edges counted by state over the deployments (all, or those targeting --label).
    Status {
        /// Only deployments targeting this label, KEY=VALUE. Repeatable: any matches.
        #[arg(long = "label", short = 'l', value_name = "KEY=VALUE", value_parser = key_value)]
        labels: Vec<(String, String)>,
    },
}

/// Where a deployment runs: `--label` (auto-scaling) or `--edge` (targeted).
#[derive(Debug, Clone, Default, Args)]
pub struct TargetArgs {
    /// Run on every edge carrying this label, KEY=VALUE, now and later (auto-scaling).
    /// Repeatable: an edge must carry all.
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE", value_parser = label, conflicts_with = "edges")]
    pub labels: Vec<(String, String)>,
    /// Run on this edge, by id or name (targeted). Repeatable.
    #[arg(long = "edge", value_name = "EDGE")]
    pub edges: Vec<String>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").args(["labels", "edges"]).required(true).multiple(true)))]
pub struct CreateArgs {
    /// The deployment package, PACKAGE:VERSION.
    #[arg(value_name = "PACKAGE:VERSION", value_parser = name_version)]
    pub package: (String, String),
    /// Deployment profile of the package (default: the package's default).
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Display name (default: the generated name).
    #[arg(long, value_name = "TEXT")]
    pub display_name: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    #[command(flatten)]
    pub watch: WatchArgs,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Id, name or display name.
    pub deployment: String,
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    #[arg(long, value_name = "TEXT")]
    pub display_name: Option<String>,
    /// Another version of the same package.
    #[arg(long, value_name = "VERSION")]
    pub version: Option<String>,
    /// New targets. For auto-scaling the server adds --label as another label set (existing
    /// sets stay, as in the reference); for targeted --edge replaces the edges.
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    #[command(flatten)]
    pub watch: WatchArgs,
}

/// `--label` pairs as one label set.
fn label_set(labels: &[(String, String)]) -> BTreeMap<String, String> {
    labels.iter().cloned().collect()
}

/// `--label` pairs as list filters: one item per pair (a deployment matches any).
fn label_filters(labels: &[(String, String)]) -> Vec<String> {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The application names of a package version; a missing package is named with a way on.
async fn package_apps(ctx: &Ctx<'_>, name: &str, version: &str) -> anyhow::Result<Vec<String>> {
    match ctx.client.get_deployment_package(name, version).await {
        Ok(p) => Ok(p
            .application_references
            .into_iter()
            .map(|r| r.name)
            .collect()),
        Err(e) if e.is_not_found() => bail!(
            "deployment package {name}:{version} not found in project {} (see `canopy catalog package list`)",
            ctx.client.project()
        ),
        Err(e) => Err(e.into()),
    }
}

/// Edge ids of `--edge` references (ids or names), in order, without repeats.
async fn resolve_edges(ctx: &Ctx<'_>, refs: &[String]) -> anyhow::Result<Vec<String>> {
    let mut ids: Vec<String> = Vec::new();
    for r in refs {
        match ctx.client.get_edge(r).await {
            Ok(e) => {
                if !ids.contains(&e.id) {
                    ids.push(e.id);
                }
            }
            Err(e) if e.is_not_found() => bail!(
                "--edge {r}: edge {r} not found in project {} (see `canopy edge list`)",
                ctx.client.project()
            ),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(ids)
}

/// Sets the targets of `d` from the flags (nothing when none is given).
async fn apply_targets(
    ctx: &Ctx<'_>,
    target: &TargetArgs,
    apps: &[String],
    d: &mut Deployment,
) -> anyhow::Result<()> {
    if !target.labels.is_empty() {
        d.deployment_type = AUTO_SCALING.to_owned();
        d.all_app_target_clusters = Some(TargetClusters {
            labels: label_set(&target.labels),
            ..Default::default()
        });
        d.target_clusters = Vec::new();
    } else if !target.edges.is_empty() {
        let ids = resolve_edges(ctx, &target.edges).await?;
        d.deployment_type = TARGETED.to_owned();
        if let [one] = ids.as_slice() {
            d.all_app_target_clusters = Some(TargetClusters {
                cluster_id: one.clone(),
                ..Default::default()
            });
            d.target_clusters = Vec::new();
        } else {
            // One target per app and edge: `allAppTargetClusters` holds a single edge.
            d.all_app_target_clusters = None;
            d.target_clusters = apps
                .iter()
                .flat_map(|app| {
                    ids.iter().map(|id| TargetClusters {
                        app_name: app.clone(),
                        cluster_id: id.clone(),
                        ..Default::default()
                    })
                })
                .collect();
        }
    }
    Ok(())
}

/// The deployment `r` names: by id, else by name or display name when exactly one matches.
async fn resolve(ctx: &Ctx<'_>, r: &str) -> anyhow::Result<Deployment> {
    let not_found = match ctx.client.get_deployment(r).await {
        Ok(d) => return Ok(d),
        Err(e) if e.is_not_found() => e,
        Err(e) => return Err(e.into()),
    };
    let all = ctx
        .client
        .list_all_deployments(&ListParams::default())
        .await?;
    let mut matches: Vec<Deployment> = all
        .into_iter()
        .filter(|d| d.name == r || d.display_name == r)
        .collect();
    match matches.len() {
        0 => Err(not_found.into()),
        1 => Ok(matches.remove(0)),
        n => {
            let ids: Vec<&str> = matches.iter().map(|d| d.deploy_id.as_str()).collect();
            bail!(
                "{n} deployments are named {r:?}: {}; name one by its id",
                ids.join(", ")
            )
        }
    }
}

/// A deployment with its edges, as `get` prints it for scripts.
#[derive(Serialize)]
struct WithClusters<'a> {
    #[serde(flatten)]
    deployment: &'a Deployment,
    clusters: &'a [canopy_deploy::model::Cluster],
}

/// Prints a deployment after a change: the entity for scripts, `message` for people; then
/// follows it with `--watch`.
async fn finish(
    ctx: &mut Ctx<'_>,
    id: &str,
    message: String,
    watch: &WatchArgs,
) -> anyhow::Result<()> {
    ctx.done(message)?;
    let d = if watch.watch {
        watch_deployment(ctx, id, watch).await?
    } else if ctx.structured() {
        ctx.client.get_deployment(id).await?
    } else {
        return Ok(());
    };
    if ctx.structured() {
        ctx.print_one(&d, deployment_details(&d, &[]))?;
    }
    Ok(())
}

pub async fn run(cmd: DeploymentCommand, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    match cmd {
        DeploymentCommand::Create(a) => create(a, ctx).await,
        DeploymentCommand::List { labels, list } => {
            let mut params = list.params(&[]);
            params.labels = label_filters(&labels);
            let client = &ctx.client;
            let (items, page) =
                fetch(&list, params, async |p| client.list_deployments(p).await).await?;
            ctx.print_list(&items, deployments_table(&items), Some(page))
        }
        DeploymentCommand::Get { deployment } => {
            let d = resolve(ctx, &deployment).await?;
            let clusters = ctx
                .client
                .all_deployment_clusters(&d.deploy_id, &ListParams::default())
                .await?;
            let shown = WithClusters {
                deployment: &d,
                clusters: &clusters,
            };
            ctx.print_one(&shown, deployment_details(&d, &clusters))
        }
        DeploymentCommand::Update(a) => update(a, ctx).await,
        DeploymentCommand::Upgrade {
            deployment,
            version,
            watch,
        } => {
            let mut d = resolve(ctx, &deployment).await?;
            if d.app_version == version {
                bail!(
                    "deployment {} already runs {}:{version}",
                    d.deploy_id,
                    d.app_name
                );
            }
            package_apps(ctx, &d.app_name, &version).await?;
            let from = std::mem::replace(&mut d.app_version, version.clone());
            let id = d.deploy_id.clone();
            ctx.client.update_deployment(&id, &d).await?;
            let message = format!(
                "upgraded deployment {id} from {name}:{from} to {name}:{version}",
                name = d.app_name
            );
            finish(ctx, &id, message, &watch).await
        }
        DeploymentCommand::Delete {
            deployment,
            all,
            watch,
            timeout,
        } => delete(ctx, &deployment, all, watch, timeout).await,
        DeploymentCommand::Manifest { deployment, app } => {
            let d = resolve(ctx, &deployment).await?;
            let text = ctx.client.deployment_manifest(&d.deploy_id, &app).await?;
            ctx.out.write_all(text.as_bytes())?;
            Ok(())
        }
        DeploymentCommand::Status { labels } => {
            let s = ctx
                .client
                .deployments_status(&label_filters(&labels))
                .await?;
            ctx.print_one(&s, deployments_status_details(&s))
        }
    }
}

async fn create(a: CreateArgs, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let (name, version) = a.package;
    let apps = package_apps(ctx, &name, &version).await?;
    let mut d = Deployment {
        app_name: name.clone(),
        app_version: version.clone(),
        profile_name: a.profile.unwrap_or_default(),
        display_name: a.display_name.unwrap_or_default(),
        ..Default::default()
    };
    apply_targets(ctx, &a.target, &apps, &mut d).await?;
    a.overrides
        .apply(&format!("{name}:{version}"), &apps, &mut d.override_values)
        .await?;
    let id = ctx.client.create_deployment(&d).await?;
    let message = format!(
        "created deployment {id} of {name}:{version} on {}",
        targets_text(&d)
    );
    finish(ctx, &id, message, &a.watch).await
}

async fn update(a: UpdateArgs, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let mut d = resolve(ctx, &a.deployment).await?;
    let id = d.deploy_id.clone();
    if let Some(v) = a.version {
        d.app_version = v;
    }
    let needs_apps = !a.overrides.is_empty() || !a.target.edges.is_empty();
    let apps = if needs_apps {
        package_apps(ctx, &d.app_name, &d.app_version).await?
    } else {
        Vec::new()
    };
    if let Some(v) = a.profile {
        d.profile_name = v;
    }
    if let Some(v) = a.display_name {
        d.display_name = v;
    }
    apply_targets(ctx, &a.target, &apps, &mut d).await?;
    a.overrides
        .apply(
            &format!("{}:{}", d.app_name, d.app_version),
            &apps,
            &mut d.override_values,
        )
        .await?;
    ctx.client.update_deployment(&id, &d).await?;
    finish(ctx, &id, format!("updated deployment {id}"), &a.watch).await
}

async fn delete(
    ctx: &mut Ctx<'_>,
    r: &str,
    all: bool,
    watch: bool,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let d = resolve(ctx, r).await?;
    let id = d.deploy_id.clone();
    let delete_type = if all {
        DeleteType::All
    } else {
        DeleteType::ParentOnly
    };
    // What to follow afterwards: the edges it ran on and, with --all, every deployment the
    // delete took along (those gone from the list afterwards).
    let mut edges = Vec::new();
    let mut before = BTreeSet::new();
    if watch {
        edges = ctx
            .client
            .all_deployment_clusters(&id, &ListParams::default())
            .await?
            .into_iter()
            .map(|c| EdgeRef {
                id: c.id,
                name: c.name,
            })
            .collect();
        if all {
            before = deployment_ids(ctx).await?;
        }
    }
    ctx.client.delete_deployment(&id, delete_type).await?;
    ctx.done(format_args!(
        "deleted deployment {id} ({} of {}:{})",
        d.display_name, d.app_name, d.app_version
    ))?;
    if !watch {
        return Ok(());
    }
    let mut deleted = BTreeSet::from([id.clone()]);
    if all {
        let after = deployment_ids(ctx).await?;
        deleted.extend(before.difference(&after).cloned());
    }
    watch_delete(ctx, &id, &deleted, &edges, timeout).await
}

async fn deployment_ids(ctx: &Ctx<'_>) -> Result<BTreeSet<String>, ClientError> {
    Ok(ctx
        .client
        .list_all_deployments(&ListParams::default())
        .await?
        .into_iter()
        .map(|d| d.deploy_id)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_flags_become_sets_and_filters() {
        let pairs = [
            ("site".to_owned(), "paris".to_owned()),
            ("tier".to_owned(), "edge".to_owned()),
        ];
        assert_eq!(label_set(&pairs).len(), 2);
        assert_eq!(label_filters(&pairs), ["site=paris", "tier=edge"]);
    }
}
