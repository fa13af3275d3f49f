//! `canopy server`: runs the control plane in this process. Only translates flags into a
//! `canopy_server::ServerConfig` and sets up logging; everything else belongs to the server crate.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use tracing_subscriber::EnvFilter;

/// Flags of `canopy server`.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7070", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Directory for the embedded database and other local state.
    #[arg(long, default_value = "./canopy-data", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// PostgreSQL URL; when set, used instead of the embedded SQLite database.
    #[arg(long, env = "CANOPY_DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    init_logging();
    let listen = args.listen;
    let config = canopy_server::ServerConfig {
        listen: args.listen,
        data_dir: args.data_dir,
        database_url: args.database_url,
    };
    canopy_server::serve(config)
        .await
        .with_context(|| format!("the Canopy server on {listen} stopped"))
}

/// Logs to standard error, `info` and up unless `RUST_LOG` says otherwise. Does nothing when a
/// subscriber is already installed (e.g. a second run in one test process).
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
