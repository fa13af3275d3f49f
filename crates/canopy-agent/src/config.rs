//! How an agent is started: which control plane, where it keeps its data, how it enrolls, which
//! engine it drives and how often it polls, converges and reports.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::backoff::Backoff;

/// How long a long-poll waits by default: under the protocol's maximum (300 s), with room for
/// a proxy or load balancer configured for 5 minutes. Why this long: see
/// `docs/AGENT-PROTOCOL.md`, "Connection and idle cost".
pub const DEFAULT_POLL_WAIT: Duration = Duration::from_secs(285);

/// How often an agent whose statuses did not change still reports them ("still here"): the
/// control plane knows the edge is alive from its held long-polls, so this only refreshes the
/// stored status and its time. 15 minutes.
pub const STILL_HERE: Duration = Duration::from_secs(15 * 60);

/// Everything [`run`](crate::run) needs. Build it with [`AgentConfig::new`] and set fields.
#[derive(Clone)]
pub struct AgentConfig {
    /// The control plane's address (`https://cp.example.com`, `http://127.0.0.1:8080`).
    pub server: String,
    /// Further addresses of the same control plane (other replicas), after `server`: the agent
    /// sticks to one address and moves to the next, round-robin, when it cannot reach it
    /// (with its usual backoff between attempts). Empty (the default) with one address or a
    /// load balancer in front of the replicas.
    pub more_servers: Vec<String>,
    /// Where the credential, identity, last desired state and sequence number live.
    pub data_dir: PathBuf,
    /// Enrollment token (`cnt_...`), needed only while the agent has no credential. Never
    /// logged; `Debug` is redacted.
    pub enroll_token: Option<String>,
    /// Requested edge name at enrollment (the server picks one when absent).
    pub name: Option<String>,
    /// Edge labels sent at enrollment.
    pub labels: BTreeMap<String, String>,
    /// Container engine address (`unix:///run/podman/podman.sock`...); default: `$DOCKER_HOST`,
    /// then Podman's socket, then Docker's.
    pub docker_host: Option<String>,
    /// Who owns the engine objects this agent makes (`io.canopy.scope`, part of their names).
    /// Default (`None`): the edge's id from enrollment, which is what keeps several agents on
    /// one engine apart; set it only when the owner must be known before enrollment (tests).
    pub scope: Option<String>,
    /// How long one desired-state or tunnel long-poll waits (`waitSeconds`, at most
    /// [`canopy_proto::MAX_WAIT_SECONDS`]). Default [`DEFAULT_POLL_WAIT`]. Behind a proxy or
    /// load balancer, keep it below the proxy's idle/read timeout.
    pub poll_wait: Duration,
    /// How often convergence passes repeat while some app is not `RUNNING`. Default 3 s.
    pub converge_interval: Duration,
    /// How often the engine is observed when nothing changes; default: what the control plane
    /// says (`heartbeatSeconds`, 30 s until it said anything). When set, it is also how often
    /// a status report is sent when nothing changed (tests); otherwise an unchanged status is
    /// reported only every [`STILL_HERE`] (reports go out at once when something changes).
    pub heartbeat: Option<Duration>,
    /// Retry schedule after transient failures. Default 1 s doubling to 60 s, full jitter.
    pub backoff: Backoff,
    /// HTTP client for the control plane, e.g. one that trusts a pinned server certificate
    /// (build it from [`AgentClient::http_builder`](crate::AgentClient::http_builder)). Default:
    /// the one [`AgentClient::new`](crate::AgentClient::new) builds (public web PKI roots).
    pub http_client: Option<reqwest::Client>,
    /// HTTP/1.1-only client with the same trust as `http_client`, for tunnel connections (an
    /// HTTP upgrade, which HTTP/2 has not). Default: the main client when `http_client` is set
    /// (fine over `http://`), else one [`AgentClient::new`](crate::AgentClient::new) builds.
    pub tunnel_http_client: Option<reqwest::Client>,
    /// Directories whose files VM images may name with `file://` URLs. Empty (the default):
    /// `file://` images are refused, so a deployment cannot read arbitrary files of the edge.
    pub vm_image_dirs: Vec<PathBuf>,
    /// Largest VM image the edge downloads, in bytes. Default: canopy-vm's
    /// ([`canopy_vm::DEFAULT_MAX_IMAGE_BYTES`], 8 GiB).
    pub vm_cache_max_bytes: u64,
    /// Where the agent's Prometheus metrics are recorded (no-ops by default; `canopy agent
    /// --metrics-listen` serves them).
    pub metrics: crate::AgentMetrics,
}

impl AgentConfig {
    /// A configuration with the protocol's defaults.
    pub fn new(server: impl Into<String>, data_dir: impl Into<PathBuf>) -> AgentConfig {
        AgentConfig {
            server: server.into(),
            more_servers: Vec::new(),
            data_dir: data_dir.into(),
            enroll_token: None,
            name: None,
            labels: BTreeMap::new(),
            docker_host: None,
            scope: None,
            poll_wait: DEFAULT_POLL_WAIT,
            converge_interval: Duration::from_secs(3),
            heartbeat: None,
            backoff: Backoff::default(),
            http_client: None,
            tunnel_http_client: None,
            vm_image_dirs: Vec::new(),
            vm_cache_max_bytes: canopy_vm::DEFAULT_MAX_IMAGE_BYTES,
            metrics: crate::AgentMetrics::default(),
        }
    }
}

/// Parses a byte size as the command line takes it: `1073741824`, `512MiB`, `20GiB`, `1.5 GB`.
pub fn parse_byte_size(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("invalid size {s:?} (expected bytes or e.g. 20GiB): {e}"))
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("server", &self.server)
            .field("more_servers", &self.more_servers)
            .field("data_dir", &self.data_dir)
            .field(
                "enroll_token",
                &self.enroll_token.as_ref().map(|_| "********"),
            )
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("docker_host", &self.docker_host)
            .field("scope", &self.scope)
            .field("poll_wait", &self.poll_wait)
            .field("converge_interval", &self.converge_interval)
            .field("heartbeat", &self.heartbeat)
            .field("backoff", &self.backoff)
            .field("http_client", &self.http_client.as_ref().map(|_| "custom"))
            .field(
                "tunnel_http_client",
                &self.tunnel_http_client.as_ref().map(|_| "custom"),
            )
            .field("vm_image_dirs", &self.vm_image_dirs)
            .field("vm_cache_max_bytes", &self.vm_cache_max_bytes)
            .field("metrics", &self.metrics)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_enrollment_token_is_not_shown() {
        let mut c = AgentConfig::new("http://cp:1", "/var/lib/canopy-agent");
        c.enroll_token = Some("cnt_secret".into());
        let shown = format!("{c:?}");
        assert!(!shown.contains("cnt_secret"), "{shown}");
        assert!(shown.contains("********"), "{shown}");
        assert_eq!(c.poll_wait, Duration::from_secs(285));
        assert_eq!(c.converge_interval, Duration::from_secs(3));
    }

    #[test]
    fn byte_sizes_take_units() {
        assert_eq!(parse_byte_size("1024").unwrap(), 1024);
        assert_eq!(parse_byte_size("20GiB").unwrap(), 20 << 30);
        assert_eq!(parse_byte_size("512 MiB").unwrap(), 512 << 20);
        assert!(parse_byte_size("lots").is_err());
    }
}
