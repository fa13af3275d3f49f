//! `canopy catalog ...`: one subcommand per catalog resource (noun first, then the verb), plus
//! `upload` and `export`. Each resource module turns flags into one or two client calls; this
//! module holds what they share: how lists, single entities and confirmations are printed.

mod application;
mod artifact;
mod chart;
mod deployment_profile;
mod package;
mod profile;
mod registry;
mod transfer;

use canopy_client::{ClientError, ListParams, Page, collect_all};
use clap::Subcommand;
use serde::Serialize;

use super::Ctx;
use super::args::ListArgs;
use super::output::{Details, Format, Table, structured};

/// Flags of `canopy catalog`.
#[derive(Debug, clap::Args)]
pub struct CatalogArgs {
    #[command(subcommand)]
    pub command: CatalogCommand,
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Upload YAML files, directories and tarballs; creates or updates everything they define,
    /// all or nothing.
    #[command(visible_alias = "load")]
    Upload(transfer::UploadArgs),
    /// Download a deployment package (with its applications) as a .tar.gz that uploads
    /// unchanged.
    Export(transfer::ExportArgs),
    /// Import from elsewhere: a Helm chart from an OCI registry.
    #[command(subcommand)]
    Import(chart::ImportCommand),
    /// The charts and chart versions of a HELM registry.
    #[command(subcommand, visible_alias = "charts")]
    Chart(chart::ChartCommand),
    /// Helm chart and container image registries.
    #[command(subcommand, visible_alias = "registries")]
    Registry(registry::RegistryCommand),
    /// Applications (a Helm chart, a version and profiles of values).
    #[command(subcommand, visible_aliases = ["app", "applications"])]
    Application(application::ApplicationCommand),
    /// Profiles (named values) of an application.
    #[command(subcommand, visible_alias = "profiles")]
    Profile(profile::ProfileCommand),
    /// Deployment packages (applications deployed together).
    #[command(subcommand, visible_aliases = ["deployment-package", "packages"])]
    Package(package::PackageCommand),
    /// Deployment profiles of a package (which application profile each application uses).
    #[command(subcommand, visible_alias = "deployment-profiles")]
    DeploymentProfile(deployment_profile::DeploymentProfileCommand),
    /// Artifacts (icons, thumbnails, dashboards) used by packages.
    #[command(subcommand, visible_alias = "artifacts")]
    Artifact(artifact::ArtifactCommand),
}

pub async fn run(args: CatalogArgs, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    match args.command {
        CatalogCommand::Upload(a) => transfer::upload(a, ctx).await,
        CatalogCommand::Export(a) => transfer::export(a, ctx).await,
        CatalogCommand::Import(c) => chart::import(c, ctx).await,
        CatalogCommand::Chart(c) => chart::run(c, ctx).await,
        CatalogCommand::Registry(c) => registry::run(c, ctx).await,
        CatalogCommand::Application(c) => application::run(c, ctx).await,
        CatalogCommand::Profile(c) => profile::run(c, ctx).await,
        CatalogCommand::Package(c) => package::run(c, ctx).await,
        CatalogCommand::DeploymentProfile(c) => deployment_profile::run(c, ctx).await,
        CatalogCommand::Artifact(c) => artifact::run(c, ctx).await,
    }
}

/// Where a shown list sits in the whole: its first index and the total count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageInfo {
    pub offset: u64,
    pub total: u64,
}

/// Fetches one page, or every page with `--all`.
pub(crate) async fn fetch<T>(
    list: &ListArgs,
    params: ListParams,
    mut page: impl AsyncFnMut(&ListParams) -> Result<Page<T>, ClientError>,
) -> Result<(Vec<T>, PageInfo), ClientError> {
    let offset = u64::from(params.offset.unwrap_or(0));
    if list.all {
        let items = collect_all(&params, page).await?;
        let total = offset + items.len() as u64;
        Ok((items, PageInfo { offset, total }))
    } else {
        let p = page(&params).await?;
        Ok((
            p.items,
            PageInfo {
                offset,
                total: p.total,
            },
        ))
    }
}

/// The line under a list table: `N of TOTAL`, and how to see more when there is more.
pub(crate) fn page_footer(shown: usize, page: PageInfo) -> String {
    let next = page.offset + shown as u64;
    if shown > 0 && next < page.total {
        format!(
            "{shown} of {} (next page: --offset {next}; every one: --all)",
            page.total
        )
    } else {
        format!("{shown} of {}", page.total)
    }
}

impl Ctx<'_> {
    /// Prints a list: a table (with the `N of TOTAL` line when paged), or a JSON/YAML array.
    pub(crate) fn print_list<T: Serialize>(
        &mut self,
        items: &[T],
        table: Table,
        page: Option<PageInfo>,
    ) -> anyhow::Result<()> {
        match self.format {
            Format::Table => {
                self.out.write_all(table.render("").as_bytes())?;
                if let Some(page) = page {
                    writeln!(self.out, "{}", page_footer(items.len(), page))?;
                }
            }
            format => self.out.write_all(structured(format, &items)?.as_bytes())?,
        }
        Ok(())
    }

    /// Prints one entity: a detail view, or JSON/YAML.
    pub(crate) fn print_one<T: Serialize>(
        &mut self,
        item: &T,
        details: Details,
    ) -> anyhow::Result<()> {
        match self.format {
            Format::Table => self.out.write_all(details.render().as_bytes())?,
            format => self.out.write_all(structured(format, item)?.as_bytes())?,
        }
        Ok(())
    }

    /// True when results are for scripts (JSON/YAML) rather than people.
    pub(crate) fn structured(&self) -> bool {
        self.format != Format::Table
    }

    /// Prints a confirmation (`created application web:0.1.0`) in table mode; scripts get the
    /// entity instead, or nothing.
    pub(crate) fn done(&mut self, message: impl std::fmt::Display) -> anyhow::Result<()> {
        if !self.structured() {
            writeln!(self.out, "{message}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_says_how_to_see_more() {
        let p = |offset, total| PageInfo { offset, total };
        assert_eq!(page_footer(3, p(0, 3)), "3 of 3");
        assert_eq!(page_footer(0, p(0, 0)), "0 of 0");
        assert_eq!(
            page_footer(20, p(0, 42)),
            "20 of 42 (next page: --offset 20; every one: --all)"
        );
        assert_eq!(page_footer(2, p(40, 42)), "2 of 42");
        assert_eq!(page_footer(0, p(50, 42)), "0 of 42");
    }
}
