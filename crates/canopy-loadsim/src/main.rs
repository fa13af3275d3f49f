//! `canopy-loadsim`: runs N simulated edges against a Canopy server and prints what the fleet
//! cost it (see `docs/BENCHMARKS.md`, "Fleet", and the crate docs).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use canopy_loadsim::config::{SimConfig, Transport, Workload, default_examples};
use canopy_loadsim::run::Target;
use canopy_loadsim::server::default_canopy_bin;
use clap::Parser;

/// Simulated edges speaking the real agent protocol against a real Canopy server (loopback
/// only), with the server's idle cost and the time deployments take to reach every edge.
#[derive(Debug, Parser)]
#[command(name = "canopy-loadsim", version)]
struct Args {
    /// Number of simulated edges (at most 12,000 per --server, 24,000 in all).
    #[arg(long, default_value_t = 1_000)]
    edges: usize,
    /// A running server to load (loopback only) instead of starting `canopy server`.
    /// Repeatable: replicas of one control plane, the edges spread round-robin over them (one
    /// HTTP client at a time); operator calls go to the first.
    #[arg(long, value_name = "URL")]
    server: Vec<String>,
    /// The running server's pid, to measure its CPU and memory (with --server). Repeatable:
    /// one per --server, in the same order (each replica's idle CPU is then measured apart).
    #[arg(long, value_name = "PID", requires = "server")]
    server_pid: Vec<u32>,
    /// After the other phases, kill the replica of the last --server (SIGKILL; its
    /// --server-pid is needed) and measure how long its edges take to be connected to the
    /// others with a fresh status.
    #[arg(long)]
    failover: bool,
    /// API token with write access to the project (with --server).
    #[arg(
        long,
        env = "CANOPY_TOKEN",
        hide_env_values = true,
        requires = "server"
    )]
    token: Option<String>,
    /// The `canopy` binary to start as the server (default: the one next to this binary).
    #[arg(long, value_name = "PATH", conflicts_with = "server")]
    canopy_bin: Option<PathBuf>,
    /// Use HTTP/1.1 (a socket per request in flight) instead of multiplexed HTTP/2.
    #[arg(long)]
    http1: bool,
    /// Edges sharing one HTTP client (one connection with HTTP/2).
    #[arg(long, default_value_t = 50, value_name = "N")]
    edges_per_connection: usize,
    /// Enrollments in flight at once.
    #[arg(long, default_value_t = 32, value_name = "N")]
    enroll_concurrency: usize,
    /// waitSeconds of each long-poll.
    #[arg(long, default_value_t = 25, value_name = "S")]
    wait_seconds: u32,
    /// Length of the idle window over which the server's CPU is measured.
    #[arg(long, default_value_t = 30, value_name = "S")]
    idle_seconds: u64,
    /// Bound of each phase.
    #[arg(long, default_value_t = 300, value_name = "S")]
    phase_timeout: u64,
    /// Quiet time before each change (lets the server finish writing the previous one).
    #[arg(long, default_value_t = 10, value_name = "S")]
    pause_seconds: u64,
    /// Bound of the whole run.
    #[arg(long, default_value_t = 1_800, value_name = "S")]
    duration: u64,
    /// How often the deployment is read while waiting for RUNNING.
    #[arg(long, default_value_t = 250, value_name = "MS")]
    status_poll_ms: u64,
    /// Project to enroll the edges into.
    #[arg(long, default_value = "default")]
    project: String,
    /// Directory with the web-demo and web-demo-1.1.0 examples.
    #[arg(long, value_name = "DIR")]
    examples: Option<PathBuf>,
    /// Also write the results as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Deploy a Helm-chart package instead of `web-demo`: the HELM registry holding the chart
    /// (`oci://host[:port]/path` or `https://...`). The server needs the Helm CLI.
    #[arg(long, value_name = "URL")]
    helm_registry: Option<String>,
    /// The chart of the Helm package, as NAME:VERSION (with --helm-registry).
    #[arg(
        long,
        value_name = "NAME:VERSION",
        default_value = "canopy-web:0.1.0",
        requires = "helm_registry"
    )]
    helm_chart: String,
    /// How many of the edges connect as real agents do: HTTPS, one long-lived connection each
    /// with the agent's own client settings; the bytes their sockets carry while idle are
    /// reported per edge per day. The server then speaks HTTPS (a started server uses its
    /// self-signed certificate; a running one needs --ca-file).
    #[arg(long, default_value_t = 0, value_name = "N")]
    tls_agents: usize,
    /// Report an unchanged status every S seconds whatever the server's heartbeat (the real
    /// agent: 900, with --wait-seconds 285). Default: the server's heartbeat (30 s).
    #[arg(long, value_name = "S")]
    report_seconds: Option<u64>,
    /// CA certificate (PEM) to trust an https:// --server with (its cert.pem when
    /// self-signed).
    #[arg(long, value_name = "FILE", requires = "server")]
    ca_file: Option<PathBuf>,
    /// Worker threads of the simulator's runtime (the server has its own process).
    #[arg(long, default_value_t = 1, value_name = "N")]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // Every simulated edge over HTTP/1.1, or every connection, is a socket: use the hard limit.
    // The server child inherits it.
    let nofile = rlimit::increase_nofile_limit(u64::MAX).context("raising the open-files limit")?;
    tracing::info!(nofile, "open-files limit");

    let cfg = SimConfig {
        edges: args.edges,
        transport: if args.http1 {
            Transport::Http1
        } else {
            Transport::Http2
        },
        edges_per_connection: args.edges_per_connection,
        enroll_concurrency: args.enroll_concurrency,
        wait_seconds: args.wait_seconds,
        idle: Duration::from_secs(args.idle_seconds),
        phase_timeout: Duration::from_secs(args.phase_timeout),
        pause: Duration::from_secs(args.pause_seconds),
        duration: Duration::from_secs(args.duration),
        status_poll: Duration::from_millis(args.status_poll_ms),
        project: args.project,
        examples: args.examples.unwrap_or_else(default_examples),
        groups: 10,
        workload: match args.helm_registry {
            None => Workload::Native,
            Some(registry) => {
                let (chart, version) = args
                    .helm_chart
                    .split_once(':')
                    .unwrap_or((&args.helm_chart, ""));
                Workload::Helm {
                    registry,
                    chart: chart.to_string(),
                    chart_version: version.to_string(),
                }
            }
        },
        more_servers: args.server.iter().skip(1).cloned().collect(),
        more_server_pids: args.server_pid.iter().skip(1).copied().collect(),
        failover: args.failover,
        tls_agents: args.tls_agents,
        report_every: args.report_seconds.map(Duration::from_secs),
        ca_file: args.ca_file,
    };
    cfg.validate()?;
    let mut servers = args.server.into_iter();
    let target = match servers.next() {
        Some(url) => Target::Running {
            url,
            pid: args.server_pid.first().copied(),
            token: args.token,
        },
        None => Target::Child {
            canopy_bin: args.canopy_bin.unwrap_or_else(default_canopy_bin),
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.clamp(1, 16))
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(canopy_loadsim::run(&cfg, target))?;
    print!("{}", report.to_markdown());
    if let Some(path) = args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(&path, text + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    // Tasks abandoned by a failed phase must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(5));
    Ok(())
}
