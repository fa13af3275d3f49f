//! `canopy catalog import helm-chart` and `canopy catalog chart list`: the catalog's two Helm
//! chart operations (the reference orch-cli's `import helm-chart` and `list charts`). The
//! server fetches and lists; the CLI only reads the values file and the password.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use canopy_client::ChartImportRequest;
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::cli::Ctx;
use crate::cli::args::read_text;
use crate::cli::catalog::PageInfo;
use crate::cli::output::{Table, structured};

/// `canopy catalog import ...`.
#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Import a Helm chart from an OCI registry: creates or updates the HELM registry
    /// NAME-registry, the application NAME (profile `default`) and the deployment package NAME.
    #[command(name = "helm-chart")]
    HelmChart(HelmChartArgs),
}

/// Flags of `canopy catalog import helm-chart`.
#[derive(Debug, Args)]
pub struct HelmChartArgs {
    /// The chart: oci://host[:port]/path/chart[:version] (no version: the highest semantic
    /// version the registry has).
    #[arg(value_name = "OCI-URL")]
    url: String,
    /// Values file of the `default` profile (`-`: standard input).
    #[arg(short = 'f', long = "values", value_name = "FILE")]
    values: Option<PathBuf>,
    /// Username for the chart registry.
    #[arg(long)]
    username: Option<String>,
    /// Password or token for the chart registry; `-` reads it from standard input (keeps it
    /// out of `ps`).
    #[arg(long, env = "CANOPY_CHART_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Store the username and password in the generated registry (else they are used only to
    /// fetch the chart now).
    #[arg(long)]
    include_auth: bool,
    /// Use the chart's values.yaml as the profile's values (not with -f).
    #[arg(long, conflicts_with = "values")]
    generate_default_values: bool,
    /// Generate parameter templates from the string values.
    #[arg(long)]
    generate_default_parameters: bool,
    /// Default namespace of the application in the generated package.
    #[arg(long)]
    namespace: Option<String>,
}

/// `canopy catalog chart ...`.
#[derive(Debug, Subcommand)]
pub enum ChartCommand {
    /// List the charts of a HELM registry, or the versions of CHART (newest first).
    #[command(visible_alias = "ls")]
    List(ChartListArgs),
}

/// Flags of `canopy catalog chart list`.
#[derive(Debug, Args)]
pub struct ChartListArgs {
    /// A chart of the registry: list its versions.
    chart: Option<String>,
    /// The HELM registry (default: the project's only HELM registry).
    #[arg(long, short = 'r')]
    registry: Option<String>,
    /// Most items to show (at most 100).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    page_size: Option<u32>,
    /// Index of the first item to show.
    #[arg(long)]
    offset: Option<u32>,
}

#[derive(Serialize)]
struct ImportReport<'a> {
    project: &'a str,
    url: &'a str,
    changes: &'a [canopy_client::UploadChange],
}

pub async fn import(cmd: ImportCommand, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let ImportCommand::HelmChart(a) = cmd;
    let chart_values = match &a.values {
        Some(path) => Some(read_text(path).await?),
        None => None,
    };
    let password = match a.password {
        Some(p) if p == "-" => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the password from standard input")?;
            Some(line.trim_end_matches(['\r', '\n']).to_string())
        }
        other => other,
    };
    if a.include_auth && (a.username.is_none() || password.is_none()) {
        bail!("--include-auth stores --username and --password in the registry: give both");
    }
    let req = ChartImportRequest {
        url: a.url.clone(),
        username: a.username,
        auth_token: password,
        chart_values,
        include_auth: a.include_auth,
        generate_default_values: a.generate_default_values,
        generate_default_parameters: a.generate_default_parameters,
        namespace: a.namespace,
    };
    let resp = ctx
        .client
        .import_helm_chart(&req)
        .await
        .with_context(|| format!("import of {} failed; nothing was changed", a.url))?;
    if ctx.structured() {
        let report = ImportReport {
            project: ctx.client.project(),
            url: &a.url,
            changes: &resp.changes,
        };
        ctx.out
            .write_all(structured(ctx.format, &report)?.as_bytes())?;
        return Ok(());
    }
    for c in &resp.changes {
        writeln!(ctx.out, "{} {} {}", c.action, c.kind, c.key)?;
    }
    writeln!(
        ctx.out,
        "imported {} into project {}",
        a.url,
        ctx.client.project()
    )?;
    Ok(())
}

pub async fn run(cmd: ChartCommand, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let ChartCommand::List(a) = cmd;
    let registry = match a.registry {
        Some(r) => r,
        None => only_helm_registry(ctx).await?,
    };
    let page = ctx
        .client
        .registry_charts(&registry, a.chart.as_deref(), a.page_size, a.offset)
        .await?;
    let header = if a.chart.is_some() {
        "Version"
    } else {
        "Chart"
    };
    let mut t = Table::new(&[header]);
    for item in &page.items {
        t.push(vec![item.clone()]);
    }
    let info = PageInfo {
        offset: u64::from(a.offset.unwrap_or(0)),
        total: page.total,
    };
    ctx.print_list(&page.items, t, Some(info))
}

/// The project's one HELM registry, when `--registry` is not given.
async fn only_helm_registry(ctx: &mut Ctx<'_>) -> anyhow::Result<String> {
    let all = ctx
        .client
        .list_all_registries(&Default::default(), false)
        .await?;
    let helm: Vec<String> = all
        .into_iter()
        .filter(|r| r.registry_type == "HELM")
        .map(|r| r.name)
        .collect();
    match helm.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "project {} has no HELM registry; create one (canopy catalog registry create) or \
             import a chart (canopy catalog import helm-chart)",
            ctx.client.project()
        ),
        many => bail!(
            "project {} has {} HELM registries ({}): say which with --registry",
            ctx.client.project(),
            many.len(),
            many.join(", ")
        ),
    }
}
