//! `canopy edge ...`: the project's edges (enrolled by `canopy agent` with an enrollment
//! token). Labels are how auto-scaling deployments pick edges, so `label` changes what an edge
//! runs at once; `remove` forgets an edge (its workloads keep running untouched).

use std::collections::BTreeMap;

use clap::Subcommand;

use super::Ctx;
use super::args::{ListArgs, key_value, label};
use super::catalog::fetch;
use super::output::{edge_details, edges_table, workloads_table};

#[derive(Debug, Subcommand)]
pub enum EdgeCommand {
    /// List edges.
    #[command(visible_alias = "ls")]
    List {
        /// Only edges carrying this label, KEY=VALUE. Repeatable: an edge must carry all.
        #[arg(long = "label", short = 'l', value_name = "KEY=VALUE", value_parser = key_value)]
        labels: Vec<(String, String)>,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Show an edge (by id or name).
    Get { edge: String },
    /// Change an edge's labels: KEY=VALUE sets, KEY- removes (kubectl style). Deployments
    /// targeting labels gain or lose the edge at once.
    Label {
        edge: String,
        /// KEY=VALUE to set, KEY- to remove.
        #[arg(required = true, value_name = "KEY=VALUE|KEY-", value_parser = label_change)]
        changes: Vec<LabelChange>,
    },
    /// Remove an edge: its credential stops working. Its workloads are left running; delete
    /// its deployments first to clean up.
    #[command(visible_alias = "rm")]
    Remove { edge: String },
    /// What an edge last reported running: apps and their containers.
    Workloads { edge: String },
}

/// One change of `canopy edge label`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelChange {
    Set(String, String),
    Remove(String),
}

/// `KEY=VALUE` (a label, [`label`]) or `KEY-`.
pub fn label_change(s: &str) -> Result<LabelChange, String> {
    if let Some(key) = s.strip_suffix('-')
        && !s.contains('=')
    {
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("expected KEY=VALUE or KEY-, got {s:?}"));
        }
        if !canopy_core::kv::label_part_ok(key) {
            return Err(canopy_core::kv::PairError::LabelKey {
                key: key.to_owned(),
            }
            .to_string());
        }
        return Ok(LabelChange::Remove(key.to_owned()));
    }
    if !s.contains('=') {
        return Err(format!("expected KEY=VALUE or KEY-, got {s:?}"));
    }
    label(s).map(|(k, v)| LabelChange::Set(k, v))
}

/// `--label` pairs as one `labels` list filter (`k=v,k2=v2`: every pair must match).
pub fn label_filter(labels: &[(String, String)]) -> Vec<String> {
    if labels.is_empty() {
        return Vec::new();
    }
    vec![
        labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    ]
}

pub async fn run(cmd: EdgeCommand, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    match cmd {
        EdgeCommand::List { labels, list } => {
            let mut params = list.params(&[]);
            params.labels = label_filter(&labels);
            let client = &ctx.client;
            let (items, page) = fetch(&list, params, async |p| client.list_edges(p).await).await?;
            ctx.print_list(&items, edges_table(&items), Some(page))
        }
        EdgeCommand::Get { edge } => {
            let e = ctx.client.get_edge(&edge).await?;
            ctx.print_one(&e, edge_details(&e))
        }
        EdgeCommand::Label { edge, changes } => {
            let mut set = BTreeMap::new();
            let mut remove = Vec::new();
            for c in changes {
                match c {
                    LabelChange::Set(k, v) => {
                        set.insert(k, v);
                    }
                    LabelChange::Remove(k) => remove.push(k),
                }
            }
            let e = ctx.client.label_edge(&edge, &set, &remove).await?;
            if ctx.structured() {
                ctx.print_one(&e, edge_details(&e))
            } else {
                let labels = super::output::labels_text(&e.labels);
                ctx.done(format_args!(
                    "labelled edge {}: {}",
                    e.name,
                    if labels.is_empty() {
                        "(no labels)"
                    } else {
                        &labels
                    }
                ))
            }
        }
        EdgeCommand::Remove { edge } => {
            ctx.client.remove_edge(&edge).await?;
            ctx.done(format_args!(
                "removed edge {edge}; its workloads keep running until stopped on the edge"
            ))
        }
        EdgeCommand::Workloads { edge } => {
            let apps = ctx.client.edge_workloads(&edge).await?;
            ctx.print_list(&apps, workloads_table(&apps), None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_label_changes_kubectl_style() {
        assert_eq!(
            label_change("site=paris"),
            Ok(LabelChange::Set("site".into(), "paris".into()))
        );
        assert_eq!(
            label_change("site-"),
            Ok(LabelChange::Remove("site".into()))
        );
        // A label value never ends with '-' (the reference's rule): a set, refused.
        let e = label_change("zone=eu-").unwrap_err();
        assert!(e.starts_with("label value \"eu-\" of key \"zone\""), "{e}");
        for bad in ["site", "-"] {
            let e = label_change(bad).unwrap_err();
            assert!(e.contains("expected KEY=VALUE or KEY-"), "{bad}: {e}");
        }
        for bad in ["=x", "site="] {
            let e = label_change(bad).unwrap_err();
            assert!(e.contains("is not KEY=VALUE"), "{bad}: {e}");
        }
        assert!(
            label_change("Site-")
                .unwrap_err()
                .starts_with("label key \"Site\"")
        );
    }

    #[test]
    fn label_flags_are_one_and_filter() {
        assert!(label_filter(&[]).is_empty());
        let pairs = [
            ("site".to_owned(), "paris".to_owned()),
            ("tier".to_owned(), "edge".to_owned()),
        ];
        assert_eq!(label_filter(&pairs), ["site=paris,tier=edge"]);
    }
}
