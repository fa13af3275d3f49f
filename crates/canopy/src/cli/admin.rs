//! `canopy admin`: recovery of the administrator, offline, on the server's machine.
//!
//! - `reset-token`: when the bootstrap administrator token is lost or revoked, or the `admin`
//!   user was deleted or lost its role, makes `admin` a working administrator again with a new
//!   token in `DATA_DIR/admin.token` (mode 0600; earlier bootstrap tokens are revoked) and
//!   records it in the audit log. It works on the server's data directory and database
//!   directly, so it needs the server stopped: it refuses while a server holds the data
//!   directory (with PostgreSQL, that check covers servers using the same data directory).
//!
//! The token is never printed: it is in the file, for `canopy login --token-file`.

use std::io::Write;
use std::path::PathBuf;

/// `canopy admin ...`
#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// With the server stopped: make the user `admin` a working administrator again, with a new
    /// token in DATA_DIR/admin.token (earlier bootstrap tokens are revoked).
    ResetToken(AdminArgs),
}

/// Where the server keeps its state (the same flags as `canopy server`).
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The server's data directory (admin.token is written there; without --database-url it
    /// holds canopy.db).
    #[arg(long, default_value = "./canopy-data", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// PostgreSQL URL of the server's database; when unset, DATA_DIR/canopy.db.
    #[arg(
        long,
        env = "CANOPY_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
}

pub async fn run(command: AdminCommand, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    match command {
        AdminCommand::ResetToken(args) => reset_token(&args, out).await,
    }
}

async fn reset_token(args: &AdminArgs, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let done = canopy_server::reset_admin_token(&args.data_dir, args.database_url.as_deref())
        .await
        .map_err(|e| match e {
            canopy_server::ServerError::InUse { .. } => anyhow::anyhow!(
                "{e}\n(`canopy admin reset-token` works with the server stopped: stop `canopy \
                 server` / `canopy up` on this data directory, run it again, then start the \
                 server)"
            ),
            other => other.into(),
        })?;
    let user = canopy_server::app::BOOTSTRAP_USER;
    if done.created_user {
        writeln!(
            out,
            "The user {user} did not exist: created it with the role canopy-admin."
        )?;
    }
    if done.restored_role {
        writeln!(
            out,
            "The user {user} had lost canopy-admin: it has it again."
        )?;
    }
    writeln!(
        out,
        "A new administrator token for {user} is in {} (mode 0600); {} earlier bootstrap \
         token(s) revoked. Start the server, then: canopy login --token-file {}",
        done.token_file.display(),
        done.revoked,
        done.token_file.display()
    )?;
    Ok(())
}
