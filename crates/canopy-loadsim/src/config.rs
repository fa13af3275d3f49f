//! What a simulation run does, and the checks that keep it bounded: at most [`MAX_EDGES`]
//! edges, a timeout on every phase, and loopback addresses only.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::SimError;

/// Most simulated edges one run may start per control-plane address (the design target is
/// 10,000 per process).
pub const MAX_EDGES: usize = 12_000;

/// Most simulated edges one run may start in all, spread over replicas (`--server` given
/// several times): 24,000 over HTTP/2 is 480 connections here, far under the simulator's
/// sockets; what bounds it is the simulator's CPU on the same machine.
pub const MAX_EDGES_ALL: usize = 24_000;

/// Most edges one HTTP/1.1 run may start: every parked long-poll holds a socket in each
/// process, and a status report sent meanwhile needs a second one; 2 × 8,000 stays below the
/// 19,990 sockets one process can hold here, with headroom.
pub const MAX_HTTP1_EDGES: usize = 8_000;

/// Most concurrent streams a server HTTP/2 connection accepts (hyper's default); an edge uses
/// at most two at once (its long-poll and a status report).
pub const MAX_STREAMS_PER_CONNECTION: usize = 200;

/// How the simulated edges reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTP/2 over cleartext with prior knowledge: `edges_per_connection` edges share each
    /// connection.
    Http2,
    /// HTTP/1.1: one connection per request in flight (a parked long-poll holds one).
    Http1,
}

/// What the run deploys to every edge (see [`crate::package`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workload {
    /// The native `web-demo` example package and its `1.1.0` upgrade (`examples/`).
    Native,
    /// A Helm-chart package the simulator writes around `chart` at `chart_version`, served by
    /// the HELM registry at `registry` (`oci://host[:port]/path` or `https://...`); the server
    /// needs the Helm CLI (on its `PATH`, or `--helm-bin`).
    Helm {
        registry: String,
        chart: String,
        chart_version: String,
    },
}

/// One simulation run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// How many edges to simulate (1 to [`MAX_EDGES`] per server address, at most
    /// [`MAX_EDGES_ALL`]).
    pub edges: usize,
    /// HTTP/2 (multiplexed) or HTTP/1.1.
    pub transport: Transport,
    /// With HTTP/2: how many edges share one HTTP client (one connection). With HTTP/1.1: how
    /// many edges share one client's connection pool.
    pub edges_per_connection: usize,
    /// Enrollments in flight at once.
    pub enroll_concurrency: usize,
    /// `waitSeconds` of every long-poll.
    pub wait_seconds: u32,
    /// Length of the idle window over which the server's CPU is measured.
    pub idle: Duration,
    /// Bound of every phase (enrollment, delivery, convergence, ...).
    pub phase_timeout: Duration,
    /// Quiet time before each change, so background work of the previous one (the server
    /// writes status changes to the database every 5 s) does not overlap the next.
    pub pause: Duration,
    /// Bound of the whole run.
    pub duration: Duration,
    /// How often the deployment's status is read while waiting for RUNNING.
    pub status_poll: Duration,
    /// Project the edges enroll into and the deployment is made in.
    pub project: String,
    /// Directory holding `web-demo` and `web-demo-1.1.0` (the repository's `examples`).
    pub examples: PathBuf,
    /// How many `group=<i % groups>` label values to spread the edges over.
    pub groups: usize,
    /// What is deployed.
    pub workload: Workload,
    /// Further addresses of the same control plane (replicas on one PostgreSQL database), for
    /// replica benchmarks: the edges are spread round-robin over the target's address and
    /// these, one HTTP client (connection) at a time. Operator calls go to the target. Empty
    /// by default.
    pub more_servers: Vec<String>,
    /// The process ids of the `more_servers` replicas, in the same order (as many, or none):
    /// each one's idle CPU is measured apart, and the last one is the replica a failover kills.
    pub more_server_pids: Vec<u32>,
    /// After the other phases, kill the replica of the last `more_servers` address with
    /// SIGKILL (a crash) and measure its edges moving to the others (`crate::run`, "failover").
    pub failover: bool,
    /// How many of the edges (the first ones) connect as the real agent does: its own HTTPS
    /// connection each, with the agent's HTTP client settings (keep-alive, HTTP/2 pings, TLS
    /// session resumption), from the source address [`TLS_AGENT_SOURCE`] so that their
    /// sockets can be told apart and their bytes counted ([`crate::sockets`]). Needs an
    /// `https://` server. The others share HTTP/2 connections as before.
    pub tls_agents: usize,
    /// How often an edge with nothing new reports anyway; `None`: the server's heartbeat (a
    /// stress cadence, 30 s by default). The real agent waits 15 minutes (`STILL_HERE`).
    pub report_every: Option<Duration>,
    /// The CA certificate (PEM) to trust an `https://` server with; the simulator sets it to
    /// the self-signed certificate of a server it starts itself.
    pub ca_file: Option<PathBuf>,
}

/// The source address of the [`SimConfig::tls_agents`]' connections (the server listens on
/// 127.0.0.1; any 127.0.0.0/8 address reaches it).
pub const TLS_AGENT_SOURCE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            edges: 1_000,
            transport: Transport::Http2,
            edges_per_connection: 50,
            enroll_concurrency: 32,
            wait_seconds: 25,
            idle: Duration::from_secs(30),
            phase_timeout: Duration::from_secs(300),
            pause: Duration::from_secs(10),
            duration: Duration::from_secs(1_800),
            status_poll: Duration::from_millis(250),
            project: "default".into(),
            examples: default_examples(),
            groups: 10,
            workload: Workload::Native,
            more_servers: Vec::new(),
            more_server_pids: Vec::new(),
            failover: false,
            tls_agents: 0,
            report_every: None,
            ca_file: None,
        }
    }
}

/// The repository's `examples` directory, as seen from this crate's source tree.
pub fn default_examples() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples"))
}

impl SimConfig {
    /// Checks the bounds; the error says which one and what is allowed.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |m: String| Err(SimError::Config(m));
        let max = (MAX_EDGES * (1 + self.more_servers.len())).min(MAX_EDGES_ALL);
        if self.edges == 0 || self.edges > max {
            return bad(format!(
                "--edges {} is out of range: 1 to {max} ({MAX_EDGES} per --server, {MAX_EDGES_ALL} in all)",
                self.edges
            ));
        }
        if self.transport == Transport::Http1 && self.edges > MAX_HTTP1_EDGES {
            return bad(format!(
                "--http1 with {} edges would need about {} sockets in each process (a long-poll and a report per edge); at most {MAX_HTTP1_EDGES} edges over HTTP/1.1, or use HTTP/2",
                self.edges,
                2 * self.edges
            ));
        }
        let per = self.edges_per_connection;
        if per == 0 || (self.transport == Transport::Http2 && per > MAX_STREAMS_PER_CONNECTION / 2)
        {
            return bad(format!(
                "--edges-per-connection {per} is out of range: 1 to {} (each edge may have a long-poll and a report in flight; the server accepts {MAX_STREAMS_PER_CONNECTION} streams per connection)",
                MAX_STREAMS_PER_CONNECTION / 2
            ));
        }
        if !self.more_server_pids.is_empty()
            && self.more_server_pids.len() != self.more_servers.len()
        {
            return bad(format!(
                "{} replica pids for {} further --server addresses: give a --server-pid for every --server, in the same order",
                self.more_server_pids.len(),
                self.more_servers.len()
            ));
        }
        if self.failover && self.more_server_pids.is_empty() {
            return bad(
                "--failover kills the replica of the last --server: give at least two --server addresses and a --server-pid for each"
                    .into(),
            );
        }
        if self.enroll_concurrency == 0 || self.enroll_concurrency > 1_000 {
            return bad("--enroll-concurrency must be 1 to 1000".into());
        }
        if self.wait_seconds == 0 || self.wait_seconds > canopy_proto::MAX_WAIT_SECONDS {
            return bad(format!(
                "--wait-seconds must be 1 to {}",
                canopy_proto::MAX_WAIT_SECONDS
            ));
        }
        if self.groups == 0 || self.groups > 1_000 {
            return bad("--groups must be 1 to 1000".into());
        }
        if self.phase_timeout.is_zero() || self.duration.is_zero() {
            return bad("--phase-timeout and --duration must be positive".into());
        }
        if self.status_poll < Duration::from_millis(10) {
            return bad("--status-poll-ms must be at least 10".into());
        }
        match &self.workload {
            Workload::Native => {
                for dir in ["web-demo", "web-demo-1.1.0"] {
                    if !self.examples.join(dir).is_dir() {
                        return bad(format!(
                            "{} is not a directory: pass --examples pointing at the repository's examples",
                            self.examples.join(dir).display()
                        ));
                    }
                }
            }
            Workload::Helm {
                registry,
                chart,
                chart_version,
            } => {
                if !(registry.starts_with("oci://") || registry.starts_with("https://")) {
                    return bad(format!(
                        "--helm-registry {registry:?}: give the HELM registry as oci://host[:port]/path or https://..."
                    ));
                }
                if chart.is_empty() || chart_version.is_empty() {
                    return bad(format!(
                        "--helm-chart {chart}:{chart_version}: give it as NAME:VERSION"
                    ));
                }
            }
        }
        for url in &self.more_servers {
            check_loopback(url)?;
        }
        if self.tls_agents > self.edges {
            return bad(format!(
                "--tls-agents {} is more than --edges {}",
                self.tls_agents, self.edges
            ));
        }
        if self
            .report_every
            .is_some_and(|d| d < Duration::from_secs(1))
        {
            return bad("--report-seconds must be at least 1".into());
        }
        Ok(())
    }

    /// How many HTTP clients (connections, with HTTP/2) the edges are spread over: one per TLS
    /// agent, then one per `edges_per_connection` other edges.
    pub fn clients(&self) -> usize {
        self.tls_agents + self.shared_clients()
    }

    /// The HTTP clients the edges that are not TLS agents share.
    pub fn shared_clients(&self) -> usize {
        (self.edges - self.tls_agents.min(self.edges)).div_ceil(self.edges_per_connection)
    }
}

/// Refuses any server address that is not on this machine's loopback (`127.0.0.0/8`, `::1`,
/// `localhost`): a load test sends traffic nowhere else.
pub fn check_loopback(url: &str) -> Result<(), SimError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| SimError::Config(format!("invalid server URL {url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(SimError::Config(format!(
            "server URL {url:?}: only http:// or https:// on loopback is supported"
        )));
    }
    let host = parsed.host_str().unwrap_or("");
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = match bare.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => bare.eq_ignore_ascii_case("localhost"),
    };
    if loopback {
        Ok(())
    } else {
        Err(SimError::Config(format!(
            "server URL {url:?} is not a loopback address: the simulator only targets 127.0.0.0/8, ::1 or localhost"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_servers_are_accepted() {
        for ok in [
            "http://127.0.0.1:7070",
            "http://127.1.2.3:80/",
            "http://localhost:1",
            "http://[::1]:7070",
            "https://127.0.0.1:7070",
        ] {
            assert!(check_loopback(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1:7070",
            "http://192.168.1.1",
            "http://example.com",
            "ftp://127.0.0.1:7070",
            "https://10.0.0.1:7070",
            "http://[::2]:1",
            "not a url",
        ] {
            assert!(check_loopback(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bounds_are_enforced() {
        let ok = SimConfig::default();
        assert!(ok.validate().is_ok());
        assert_eq!(ok.clients(), 20);
        // Two replicas take twice the edges; three do not take more than the overall bound.
        let two = SimConfig {
            edges: 20_000,
            more_servers: vec!["http://127.0.0.1:7071".into()],
            ..ok.clone()
        };
        assert!(two.validate().is_ok());
        let three = SimConfig {
            edges: MAX_EDGES_ALL + 1,
            more_servers: vec![
                "http://127.0.0.1:7071".into(),
                "http://127.0.0.1:7072".into(),
            ],
            ..ok.clone()
        };
        assert!(three.validate().is_err());
        let mixed = SimConfig {
            tls_agents: 120,
            ..ok.clone()
        };
        assert!(mixed.validate().is_ok());
        // 120 own connections, then 880 edges 50 a connection.
        assert_eq!((mixed.clients(), mixed.shared_clients()), (138, 18));
        for c in [
            SimConfig {
                edges: MAX_EDGES + 1,
                ..ok.clone()
            },
            SimConfig {
                edges: 0,
                ..ok.clone()
            },
            SimConfig {
                edges: 9_000,
                transport: Transport::Http1,
                ..ok.clone()
            },
            SimConfig {
                edges_per_connection: 101,
                ..ok.clone()
            },
            SimConfig {
                wait_seconds: canopy_proto::MAX_WAIT_SECONDS + 1,
                ..ok.clone()
            },
            SimConfig {
                more_servers: vec!["http://10.0.0.1:7070".into()],
                ..ok.clone()
            },
            SimConfig {
                tls_agents: 1_001,
                ..ok.clone()
            },
            SimConfig {
                report_every: Some(Duration::from_millis(10)),
                ..ok.clone()
            },
            SimConfig {
                workload: Workload::Helm {
                    registry: "http://127.0.0.1:55010/charts".into(),
                    chart: "canopy-web".into(),
                    chart_version: "0.1.0".into(),
                },
                ..ok.clone()
            },
        ] {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }
}
