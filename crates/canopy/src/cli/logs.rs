//! `canopy logs WORKLOAD`: a container's log (stdout and stderr) or a VM's (its serial
//! output), streamed from the edge through the control plane to standard output as it comes,
//! like `kubectl logs` / `docker logs`. Workloads are named as `canopy workload list` shows
//! them, so nobody has to know app ids.

use anyhow::{Context as _, bail};
use canopy_client::{EdgeWorkload, LogOptions};
use clap::Args;
use futures::StreamExt;

use super::Ctx;
use super::workload::{Scope, containers, gather, one};

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// A container's name, a pod's name (when it has one container), or a VM's name or id.
    pub workload: String,
    #[command(flatten)]
    pub scope: Scope,
    /// Lines of the past to show first (server default 100, at most 10000).
    #[arg(long, value_name = "N")]
    pub tail: Option<u32>,
    /// Keep streaming new lines until interrupted.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

/// Which log to stream.
enum Source<'a> {
    Container(&'a EdgeWorkload, String),
    Vm(&'a EdgeWorkload),
}

pub async fn run(args: LogsArgs, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let all = gather(ctx, &args.scope).await?;
    let name = args.workload.as_str();
    let mut found: Vec<(&EdgeWorkload, Option<String>)> = Vec::new();
    for w in &all {
        if w.workload.is_vm() {
            if w.workload.name == name || w.workload.id == name {
                found.push((w, None));
            }
        } else if containers(w).any(|c| c.name == name) {
            found.push((w, Some(name.to_owned())));
        } else if w.workload.name == name {
            let cs: Vec<&str> = containers(w).map(|c| c.name.as_str()).collect();
            match cs.as_slice() {
                [one] => found.push((w, Some((*one).to_owned()))),
                many => bail!(
                    "pod {name} has {} containers ({}); name the one whose log to show",
                    many.len(),
                    many.join(", ")
                ),
            }
        }
    }
    let chosen = one(
        ctx,
        found.iter().map(|(w, _)| *w).collect(),
        "container or virtual machine",
        name,
        &args.scope,
    )?;
    let source = match found.iter().find(|(w, _)| std::ptr::eq(*w, chosen)) {
        Some((w, Some(c))) => Source::Container(w, c.clone()),
        Some((w, None)) => Source::Vm(w),
        None => unreachable!("the chosen workload is one of those found"),
    };
    let options = LogOptions {
        tail: args.tail,
        follow: args.follow,
    };
    let mut stream = match source {
        Source::Container(w, c) => {
            ctx.client
                .container_logs(&w.app_id, &w.edge_id, &c, options)
                .await?
        }
        Source::Vm(w) => {
            ctx.client
                .vm_logs(&w.app_id, &w.edge_id, &w.workload.id, options)
                .await?
        }
    };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("the log stream broke off")?;
        ctx.out.write_all(&chunk)?;
        ctx.out.flush()?;
    }
    Ok(())
}
