//! `canopy agent`: the edge agent, and the container-engine discovery `canopy up` shares with
//! it (find a Docker-API socket, or start Podman's API service when Podman is installed, see
//! [`PodmanService`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

mod podman;

pub use podman::PodmanService;

/// `canopy agent` flags.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Enrollment token (`cnt_...`) from `canopy enroll-token create`; needed only the first time.
    #[arg(
        long,
        env = "CANOPY_ENROLL_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub enroll_token: Option<String>,
    /// Where the agent keeps its credential and its last desired state.
    #[arg(long, default_value = "./canopy-agent", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Edge name to enroll with (default: chosen by the server).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Edge label `key=value` to enroll with (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Docker Engine API endpoint (`unix:///run/podman/podman.sock`, `tcp://...`). Default:
    /// DOCKER_HOST, then the usual Podman and Docker sockets.
    #[arg(long, env = "DOCKER_HOST", value_name = "URL")]
    pub docker_host: Option<String>,
    /// Own the engine objects labelled with this scope instead of the edge's id. Not needed to
    /// run several agents on one engine (each owns its edge's objects by default); for tests
    /// that must know the scope before enrollment.
    #[arg(long, value_name = "NAME")]
    pub scope: Option<String>,
    /// Directory whose files VM images may name with `file://` URLs (repeatable; without one,
    /// `file://` images are refused).
    #[arg(
        long = "vm-image-dir",
        env = "CANOPY_VM_IMAGE_DIRS",
        value_name = "DIR",
        value_delimiter = ','
    )]
    pub vm_image_dirs: Vec<PathBuf>,
    /// Largest VM image the agent downloads, in bytes or with a unit (`20GiB`). Default 8 GiB.
    #[arg(
        long,
        env = "CANOPY_VM_CACHE_SIZE",
        value_name = "SIZE",
        value_parser = canopy_agent::config::parse_byte_size
    )]
    pub vm_cache_size: Option<u64>,
    /// Serve the agent's Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9465):
    /// convergence passes, apps and workloads by state, engine errors, last report. Plain HTTP
    /// and no token: give a loopback address or one only the monitoring network reaches. Off
    /// by default. See docs/OPERATIONS.md, Metrics.
    #[arg(long, env = "CANOPY_AGENT_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// How long each long-poll to the control plane waits for a change, in seconds (1 to 300;
    /// default 285). Changes still arrive at once; a longer wait costs a metered link fewer
    /// bytes. Behind a proxy or load balancer, keep it below the proxy's idle timeout.
    #[arg(
        long,
        env = "CANOPY_AGENT_POLL_WAIT",
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u32).range(1..=i64::from(canopy_proto::MAX_WAIT_SECONDS))
    )]
    pub poll_wait: Option<u32>,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    super::args::label(s)
}

/// Runs the agent until Ctrl-C / SIGTERM, trusting the server as the global `--ca-file` /
/// `--server-fingerprint` flags say.
pub async fn run(
    server: &str,
    trust: canopy_tls::ClientTrust,
    args: AgentArgs,
) -> anyhow::Result<()> {
    super::server::init_logging();
    let docker_host = match args.docker_host {
        Some(h) => Some(h),
        None => find_engine_socket().map(|p| format!("unix://{}", p.display())),
    };
    let vm_image_dirs = args
        .vm_image_dirs
        .iter()
        .map(|d| absolute(d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let config = agent_config(
        server,
        absolute(&args.data_dir)?,
        args.enroll_token,
        args.name,
        args.labels.into_iter().collect(),
        docker_host,
        &trust,
    )?;
    let mut config = canopy_agent::AgentConfig {
        scope: args.scope,
        vm_image_dirs,
        vm_cache_max_bytes: args.vm_cache_size.unwrap_or(config.vm_cache_max_bytes),
        poll_wait: args.poll_wait.map_or(config.poll_wait, |s| {
            std::time::Duration::from_secs(s.into())
        }),
        ..config
    };
    // The metrics listener lives as long as the agent (the guards abort it after).
    let mut _metrics = None;
    if let Some(addr) = args.metrics_listen {
        let listener = canopy_metrics::bind(addr).await?;
        let registry = canopy_metrics::Registry::new();
        config.metrics = canopy_agent::AgentMetrics::new(registry.clone());
        tracing::info!(
            metrics = %addr,
            "Prometheus metrics at http://{addr}/metrics (no token: keep this address on \
             loopback or a monitoring network)"
        );
        let upkeep = registry.spawn_upkeep();
        let server = tokio::spawn(async move {
            if let Err(e) = canopy_metrics::serve(listener, registry, std::future::pending()).await
            {
                tracing::warn!(error = %e, "the metrics listener failed");
            }
        });
        _metrics = Some((upkeep, AbortOnDrop(server)));
    }
    canopy_agent::run(config, canopy_server::shutdown_signal())
        .await
        .context("the agent stopped")?;
    Ok(())
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The agent configuration shared by `canopy agent` and `canopy up`; its HTTP client trusts
/// the server as `trust` says. `server` may name several replicas, comma-separated.
pub fn agent_config(
    server: &str,
    data_dir: PathBuf,
    enroll_token: Option<String>,
    name: Option<String>,
    labels: BTreeMap<String, String>,
    docker_host: Option<String>,
    trust: &canopy_tls::ClientTrust,
) -> anyhow::Result<canopy_agent::AgentConfig> {
    let mut servers = server.split(',').map(str::trim).filter(|s| !s.is_empty());
    let first = servers
        .next()
        .context("--server / CANOPY_SERVER names no control-plane URL")?;
    let mut config = canopy_agent::AgentConfig::new(first, data_dir);
    config.more_servers = servers.map(str::to_string).collect();
    config.enroll_token = enroll_token;
    config.name = name;
    config.labels = labels;
    config.docker_host = docker_host;
    if *trust != canopy_tls::ClientTrust::System {
        let http = canopy_tls::configure(canopy_agent::AgentClient::http_builder(), trust)?
            .build()
            .context("cannot build the agent's HTTP client")?;
        config.http_client = Some(http);
        // Tunnels are HTTP/1.1 upgrades: a second client with the same trust that offers only
        // `http/1.1` by ALPN (the first one offers `h2` too).
        let mut tls =
            canopy_tls::client_config(trust)?.context("a custom trust has a TLS configuration")?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tunnel_http = canopy_agent::AgentClient::http_builder()
            .use_preconfigured_tls(tls)
            .http1_only()
            .build()
            .context("cannot build the agent's HTTP client for tunnels")?;
        config.tunnel_http_client = Some(tunnel_http);
    }
    Ok(config)
}

/// The first Docker-API socket that exists: rootful and rootless Podman, then Docker.
pub fn find_engine_socket() -> Option<PathBuf> {
    let mut candidates = vec![PathBuf::from("/run/podman/podman.sock")];
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        candidates.push(Path::new(&dir).join("podman/podman.sock"));
    }
    candidates.push(PathBuf::from("/var/run/docker.sock"));
    candidates.into_iter().find(|p| p.exists())
}

/// `path` made absolute against the current directory (without touching the file system):
/// paths handed to other processes (Podman's socket, QEMU's files) or kept in files must not
/// depend on the directory each process happens to run in.
pub fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path)
        .with_context(|| format!("cannot make {} an absolute path", path.display()))
}

/// Whether `program` is an executable file on the PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
}

/// Whether `podman` is on the PATH.
pub fn podman_installed() -> bool {
    on_path("podman")
}
