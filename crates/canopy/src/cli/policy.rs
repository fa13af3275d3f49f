//! `canopy project policy get|set`: the project policy (what the project's deployments may run;
//! `docs/SECURITY.md`, "Project policy"). `get` prints it as YAML (or JSON/YAML with
//! `--output`), which `set FILE` takes back after an edit; fields left out of the file take
//! their default.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context as _;
use canopy_client::ProjectPolicy;
use clap::Subcommand;

use super::Ctx;

/// Largest policy file read (a policy is a few hundred bytes; 100 patterns of 300 characters
/// each stay well below).
const MAX_POLICY_FILE: u64 = 1024 * 1024;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Show the project's policy (the default, allowing everything, when none was set).
    Get,
    /// Set the project's policy from a YAML or JSON file (`-`: standard input); administrators
    /// only. Running deployments keep running; their next change is checked.
    Set {
        /// The policy file, as `get` prints it.
        file: PathBuf,
    },
}

pub async fn run(cmd: PolicyCommand, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let policy = match cmd {
        PolicyCommand::Get => ctx.client.get_policy().await?,
        PolicyCommand::Set { file } => {
            let text = read(&file)?;
            let policy: ProjectPolicy = canopy_core::yaml::parse_one(&text)
                .map_err(|e| anyhow::anyhow!("{}: not a project policy: {e}", file.display()))?;
            let stored = ctx.client.set_policy(&policy).await?;
            writeln!(
                ctx.err,
                "policy of project {} set; it applies to the next deployment created, updated or upgraded",
                ctx.client.project()
            )?;
            stored
        }
    };
    let yaml = serde_saphyr::to_string(&policy).context("cannot write the policy as YAML")?;
    ctx.print_item(&policy, || yaml.trim_end().to_string())
}

fn read(file: &PathBuf) -> anyhow::Result<String> {
    let mut text = String::new();
    let source: Box<dyn Read> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?,
        )
    };
    source
        .take(MAX_POLICY_FILE + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {}", file.display()))?;
    if text.len() as u64 > MAX_POLICY_FILE {
        anyhow::bail!("{} is larger than {MAX_POLICY_FILE} bytes", file.display());
    }
    Ok(text)
}
