//! `canopy workload ...`: what runs on the edges, per deployment, app and edge: pods (an app's
//! containers) and virtual machines, with their state and where they are reached.
//!
//! The resource manager addresses a workload by app id (`b-...`), edge and workload id, which
//! nobody types; so every command here (and `canopy vm`, `canopy logs`) takes a workload by the
//! name its template gives it, finds it in the workload list, and asks for `--deployment` /
//! `--edge` when the name runs in several places.

use anyhow::bail;
use canopy_client::resources::Container;
use canopy_client::{EdgeWorkload, ListParams};
use clap::{Args, Subcommand};

use super::Ctx;
use super::output::workload_list_table;

#[derive(Debug, Subcommand)]
pub enum WorkloadCommand {
    /// List the workloads of the project's deployments: pods with their containers, and
    /// virtual machines, on every edge.
    #[command(visible_alias = "ls")]
    List {
        #[command(flatten)]
        scope: Scope,
    },
    /// Recreate an app's containers on an edge (deletes its pod, as Kubernetes would).
    Restart {
        /// The pod's name, one of its containers' names, or the app's name.
        workload: String,
        #[command(flatten)]
        scope: Scope,
    },
}

/// Which deployment and edge to look at (default: all).
#[derive(Debug, Clone, Default, Args)]
pub struct Scope {
    /// Only this deployment (id, name or display name).
    #[arg(long, value_name = "DEPLOYMENT")]
    pub deployment: Option<String>,
    /// Only this edge (name or id).
    #[arg(long, value_name = "EDGE")]
    pub edge: Option<String>,
}

impl Scope {
    /// ` of deployment X on edge Y`, for messages.
    fn describe(&self) -> String {
        let mut s = String::new();
        if let Some(d) = &self.deployment {
            s.push_str(&format!(" of deployment {d}"));
        }
        if let Some(e) = &self.edge {
            s.push_str(&format!(" on edge {e}"));
        }
        s
    }
}

pub async fn run(cmd: WorkloadCommand, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    match cmd {
        WorkloadCommand::List { scope } => {
            let all = gather(ctx, &scope).await?;
            ctx.print_list(&all, workload_list_table(&all), None)
        }
        WorkloadCommand::Restart { workload, scope } => {
            let all = gather(ctx, &scope).await?;
            let found: Vec<&EdgeWorkload> = all
                .iter()
                .filter(|w| {
                    w.workload.pod.as_ref().is_some_and(|pod| {
                        w.workload.name == workload
                            || w.app == workload
                            || pod.containers.iter().any(|c| c.name == workload)
                    })
                })
                .collect();
            let w = one(ctx, found, "pod", &workload, &scope)?;
            ctx.client
                .delete_pod(&w.edge_id, &w.workload.namespace, &w.workload.name)
                .await?;
            let done = Done::new("restart", w);
            ctx.print_item(&done, || {
                format!(
                    "recreating the containers of pod {} (app {}) on edge {} (deployment {}); \
                     the edge applies it when next in touch",
                    w.workload.name, w.app, w.edge_name, w.deployment_name
                )
            })
        }
    }
}

/// What an action did, as scripts see it.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Done<'a> {
    pub action: &'static str,
    #[serde(flatten)]
    pub workload: &'a EdgeWorkload,
}

impl<'a> Done<'a> {
    pub fn new(action: &'static str, workload: &'a EdgeWorkload) -> Done<'a> {
        Done { action, workload }
    }
}

/// Every workload in `scope`, in deployment, edge, app order.
pub async fn gather(ctx: &Ctx<'_>, scope: &Scope) -> anyhow::Result<Vec<EdgeWorkload>> {
    let client = &ctx.client;
    let edge = match &scope.edge {
        Some(e) => match client.get_edge(e).await {
            Ok(edge) => Some(edge),
            Err(err) if err.is_not_found() => bail!(
                "--edge {e}: edge {e} not found in project {} (see `canopy edge list`)",
                client.project()
            ),
            Err(err) => return Err(err.into()),
        },
        None => None,
    };
    let mut all = match (&scope.deployment, &edge) {
        (Some(d), _) => {
            let id = resolve_deployment(ctx, d).await?;
            client.workloads_of_deployment(&id).await?
        }
        (None, Some(e)) => return Ok(client.workloads_on_edge(&e.id).await?),
        (None, None) => {
            let mut all = Vec::new();
            for d in client.list_all_deployments(&ListParams::default()).await? {
                match client.workloads_of_deployment(&d.deploy_id).await {
                    Ok(w) => all.extend(w),
                    // Deleted meanwhile.
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            all
        }
    };
    if let Some(e) = &edge {
        all.retain(|w| w.edge_id == e.id);
    }
    Ok(all)
}

/// The id of the deployment `r` names: its id, or its name or display name when exactly one
/// deployment has it.
async fn resolve_deployment(ctx: &Ctx<'_>, r: &str) -> anyhow::Result<String> {
    let not_found = match ctx.client.get_deployment(r).await {
        Ok(d) => return Ok(d.deploy_id),
        Err(e) if e.is_not_found() => e,
        Err(e) => return Err(e.into()),
    };
    let all = ctx
        .client
        .list_all_deployments(&ListParams::default())
        .await?;
    let ids: Vec<&str> = all
        .iter()
        .filter(|d| d.name == r || d.display_name == r)
        .map(|d| d.deploy_id.as_str())
        .collect();
    match ids.as_slice() {
        [] => Err(anyhow::Error::new(not_found)
            .context(format!("--deployment {r}"))
            .context(format!(
                "deployment {r} not found in project {} (see `canopy deployment list`)",
                ctx.client.project()
            ))),
        [one] => Ok((*one).to_owned()),
        many => bail!(
            "{} deployments are named {r:?}: {}; name one by its id",
            many.len(),
            many.join(", ")
        ),
    }
}

/// The one workload of `found`, or an error saying there is none (with what else is named so)
/// or which ones to choose from.
pub fn one<'a>(
    ctx: &Ctx<'_>,
    found: Vec<&'a EdgeWorkload>,
    what: &str,
    name: &str,
    scope: &Scope,
) -> anyhow::Result<&'a EdgeWorkload> {
    match found.as_slice() {
        [] => bail!(
            "no {what} named {name:?} in project {}{} (see `canopy workload list`)",
            ctx.client.project(),
            scope.describe()
        ),
        [one] => Ok(one),
        many => {
            let places: Vec<String> = many
                .iter()
                .map(|w| {
                    format!(
                        "edge {} / deployment {} ({}), app {}, id {}",
                        w.edge_name, w.deployment_name, w.deployment_id, w.app, w.workload.id
                    )
                })
                .collect();
            bail!(
                "{what} {name:?} is ambiguous{}: it runs in {} places: {}; choose one with \
                 --deployment and/or --edge (or name a VM by its id)",
                scope.describe(),
                many.len(),
                places.join("; ")
            )
        }
    }
}

/// The VM named `name` (or with that id) in `scope`.
pub async fn find_vm(ctx: &Ctx<'_>, name: &str, scope: &Scope) -> anyhow::Result<EdgeWorkload> {
    let all = gather(ctx, scope).await?;
    let found: Vec<&EdgeWorkload> = all
        .iter()
        .filter(|w| w.workload.is_vm() && (w.workload.name == name || w.workload.id == name))
        .collect();
    if found.is_empty()
        && let Some(other) = all.iter().find(|w| {
            w.workload.is_pod()
                && (w.workload.name == name || containers(w).any(|c| c.name == name))
        })
    {
        bail!(
            "{name} is a container of pod {} (app {}, edge {}), not a virtual machine",
            other.workload.name,
            other.app,
            other.edge_name
        );
    }
    Ok(one(ctx, found, "virtual machine", name, scope)?.clone())
}

/// The containers of a pod workload.
pub fn containers(w: &EdgeWorkload) -> impl Iterator<Item = &Container> {
    w.workload.pod.iter().flat_map(|p| p.containers.iter())
}
