//! `canopy org ...` and `canopy project ...`: organizations and the projects they own
//! (administrators create and delete them; anyone lists what they can see).

use clap::Subcommand;

use super::Ctx;
use super::output::Table;

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organization (or update its description).
    Create {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List organizations.
    #[command(visible_alias = "ls")]
    List,
    /// Delete an organization that owns no project.
    #[command(visible_alias = "rm")]
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Create a project (or update its description); it gets the configured default registries.
    Create {
        name: String,
        /// Owning organization (default: `default`).
        #[arg(long)]
        org: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the projects you can see.
    #[command(visible_alias = "ls")]
    List,
    /// Show one project.
    Get { name: String },
    /// Delete a project and everything in it: catalog, deployments (edges remove their
    /// workloads), edges, enrollment tokens.
    #[command(visible_alias = "rm")]
    Delete {
        name: String,
        /// Required: deleting a project cannot be undone.
        #[arg(long)]
        yes: bool,
    },
    /// The project policy (of `--project`): allowed image registries, host ports, resource
    /// limits, VM file hosts.
    #[command(subcommand)]
    Policy(super::policy::PolicyCommand),
}

fn tenants_table(items: &[canopy_client::identity::Tenant], with_org: bool) -> Table {
    let mut t = if with_org {
        Table::new(&["NAME", "ORG", "DESCRIPTION", "STATUS", "ID"])
    } else {
        Table::new(&["NAME", "DESCRIPTION", "STATUS", "ID"])
    };
    for o in items {
        let mut row = vec![o.name.clone()];
        if with_org {
            row.push(o.org.clone().unwrap_or_default());
        }
        row.extend([
            o.description.clone(),
            o.status
                .trim_start_matches("STATUS_INDICATION_")
                .to_lowercase(),
            o.uid.clone(),
        ]);
        t.push(row);
    }
    t
}

pub async fn org(cmd: OrgCommand, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    match cmd {
        OrgCommand::Create { name, description } => {
            ctx.client.put_org(&name, &description).await?;
            writeln!(ctx.out, "organization {name} saved")?;
        }
        OrgCommand::List => {
            let orgs = ctx.client.list_orgs().await?;
            let table = tenants_table(&orgs, false);
            ctx.print_table(&orgs, table)?;
        }
        OrgCommand::Delete { name } => {
            ctx.client.delete_org(&name).await?;
            writeln!(ctx.out, "deleted organization {name}")?;
        }
    }
    Ok(())
}

pub async fn project(cmd: ProjectCommand, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    match cmd {
        ProjectCommand::Create {
            name,
            org,
            description,
        } => {
            ctx.client
                .put_project(&name, org.as_deref(), &description)
                .await?;
            writeln!(ctx.out, "project {name} saved")?;
        }
        ProjectCommand::List => {
            let projects = ctx.client.list_projects().await?;
            let table = tenants_table(&projects, true);
            ctx.print_table(&projects, table)?;
        }
        ProjectCommand::Get { name } => {
            let p = ctx.client.get_project(&name).await?;
            let table = tenants_table(std::slice::from_ref(&p), true);
            ctx.print_item(&p, || table.render("").trim_end().to_string())?;
        }
        ProjectCommand::Delete { name, yes } => {
            if !yes {
                anyhow::bail!(
                    "deleting project {name} removes its catalog, deployments, edges and tokens; \
                     add --yes to confirm"
                );
            }
            ctx.client.delete_project(&name).await?;
            writeln!(ctx.out, "deleted project {name} and everything in it")?;
        }
        ProjectCommand::Policy(c) => super::policy::run(c, ctx).await?,
    }
    Ok(())
}
