//! `canopy server`: runs the control plane in this process. Only translates flags into a
//! `canopy_server::ServerConfig` and sets up logging; everything else belongs to the server crate.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;

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
    #[arg(
        long,
        env = "CANOPY_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
}

/// Flags of `canopy up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7070", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Directory for the embedded database and other local state.
    #[arg(long, default_value = "./canopy-data", value_name = "DIR")]
    pub data_dir: PathBuf,
}

/// `canopy up`: the control plane on embedded storage, with a banner saying where it is and
/// what to do next. (A local edge agent joins it once deployments exist.)
pub async fn up(args: UpArgs, out: &mut (dyn std::io::Write + Send)) -> anyhow::Result<()> {
    init_logging();
    let config = canopy_server::ServerConfig {
        listen: args.listen,
        data_dir: args.data_dir,
        database_url: None,
    };
    let server = canopy_server::Server::bind(&config).await?;
    let addr = server.local_addr()?;
    let url = format!("http://{addr}");
    let server_flag = if addr.to_string() == "127.0.0.1:7070" {
        String::new()
    } else {
        format!(" --server {url}")
    };
    writeln!(
        out,
        "Canopy is up on embedded storage ({db}).\n\
         \n  API       {url}\n  OpenAPI   {url}/openapi.json\n  Events    {url}/canopy/v1/projects/default/catalog/events\n\
         \nNext, in another terminal:\n\
         \n  canopy{server_flag} catalog registry create harbor-helm-oci --type helm --root-url oci://registry.example.org/charts\n\
         \n  canopy{server_flag} catalog upload tests/fixtures/reference-packages/httpbin\n\
         \n  canopy{server_flag} catalog package list\n\
         \nStop with Ctrl-C.",
        db = config.data_dir.join("canopy.db").display()
    )?;
    out.flush()?;
    server.run(canopy_server::shutdown_signal()).await?;
    Ok(())
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    init_logging();
    let config = canopy_server::ServerConfig {
        listen: args.listen,
        data_dir: args.data_dir,
        database_url: args.database_url,
    };
    // The server's errors name what failed (address, data directory, database).
    canopy_server::serve(config).await?;
    Ok(())
}

/// Logs to standard error, `info` and up unless `RUST_LOG` says otherwise. Does nothing when a
/// subscriber is already installed (e.g. a second run in one test process).
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
