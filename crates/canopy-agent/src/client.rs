//! The agent's side of the protocol over HTTP: enroll, long-poll the desired state, report
//! status, long-poll tunnel requests and connect tunnels (`docs/AGENT-PROTOCOL.md`). Nothing here knows about drivers or the data directory,
//! so a load simulator can drive thousands of these without a container engine.
//!
//! Every request carries [`PROTOCOL_HEADER`] and a timeout; authenticated ones carry the edge's
//! [`Credential`]. Answers are classified into [`AgentError`] kinds the sync loop acts on.
//!
//! A client knows one or several addresses of the control plane (replicas, or one load
//! balancer) and sticks to one: when a request cannot reach it (a network error, not an answer
//! such as a `503`), the next request goes to the next address, round-robin. The caller's
//! backoff ([`crate::Backoff`], full jitter) spaces the attempts, so a fleet that lost a replica
//! spreads over the others without arriving there at once.
//!
//! Why the connection settings are what they are (issue 13: what an idle edge costs on a
//! metered link): see [`POOL_IDLE_TIMEOUT`], [`TCP_KEEPALIVE`] and [`HTTP2_KEEP_ALIVE_INTERVAL`],
//! and `docs/AGENT-PROTOCOL.md`, "Connection and idle cost".

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use canopy_proto::{
    DesiredState, EnrollRequest, EnrollResponse, Generation, MAX_WAIT_SECONDS, PROTOCOL_HEADER,
    PROTOCOL_VERSION, StatusAck, StatusReport, TUNNEL_UPGRADE, TunnelRequests, paths,
};
use reqwest::header::{AUTHORIZATION, CONNECTION, UPGRADE};
use reqwest::{Response, StatusCode, Url};
use serde::de::DeserializeOwned;

use crate::error::AgentError;

/// Bound of an ordinary request (enroll, status).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound of opening a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a pooled connection is kept after its last request started. The client's pool
/// drops an HTTP/2 connection this long after it was last *checked out*, even with a long-poll
/// still parked on it, and the next request then opens a new TCP + TLS connection: with 5 s
/// here a real agent opened 11 connections in 120 s (issue 13). Longer than the agent's quietest
/// gap between requests (a long-poll every `waitSeconds` ≤ [`MAX_WAIT_SECONDS`]), so one
/// connection carries everything. Over plain HTTP/1.1 (`http://` servers) the server still
/// closes connections idle for 10 s; the pool sees the close and opens a new one.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(900);
// A long-poll's whole cycle (its longest wait plus margin) must fit well inside the pool's
// idle time, or the connection is dropped between two long-polls again.
const _: () = assert!(
    POOL_IDLE_TIMEOUT.as_secs()
        > 2 * (canopy_proto::MAX_WAIT_SECONDS as u64 + LONG_POLL_MARGIN.as_secs())
);
/// TCP keep-alive: after this long without a packet either way the kernel sends a probe (an
/// empty segment, about 100 bytes with its answer), then every [`TCP_KEEPALIVE_INTERVAL`], and
/// gives the connection up after [`TCP_KEEPALIVE_RETRIES`] unanswered ones. This is what keeps
/// NAT and mobile-network mappings open while a long-poll waits: many carrier-grade NATs and
/// firewalls forget an idle TCP flow after a few minutes (RFC 5382 asks for two hours; real
/// ones often use 5 minutes or less), and 150 s stays under all the common values while
/// letting a long-poll's cycle (285 s) carry a single probe. It is
/// the cheapest packet that does it (an HTTP/2 ping costs more than twice as much: a TLS
/// record each way plus an ACK). The HTTP client's own default (15 s) cost an idle edge
/// 600 KB a day on its own.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(150);
/// Between two unanswered TCP keep-alive probes.
pub const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// Unanswered TCP keep-alive probes before the connection is given up (a dead path is noticed
/// [`TCP_KEEPALIVE`] + 3 × [`TCP_KEEPALIVE_INTERVAL`] = 210 s after the last packet).
pub const TCP_KEEPALIVE_RETRIES: u32 = 3;
/// HTTP/2 pings from the agent, sent only when nothing at all was read on the connection for
/// this long: a check that the control plane itself (not just a middlebox holding the TCP
/// connection) still answers. Longer than a long-poll's cycle, so while long-polls come and go
/// no ping is ever sent; they are for a connection that went quiet for another reason.
pub const HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(330);
/// How long an unanswered HTTP/2 ping may wait before the connection is given up.
const HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// How much longer than its `waitSeconds` a long-poll may take before it is given up.
const LONG_POLL_MARGIN: Duration = Duration::from_secs(15);

const ENROLLMENT: &str = "enrollment";
const DESIRED_STATE: &str = "desired-state poll";
const STATUS_REPORT: &str = "status report";
const TUNNEL_POLL: &str = "tunnel-request poll";
const TUNNEL_CONNECT: &str = "tunnel connection";
const TUNNEL_ERROR: &str = "tunnel error report";

/// The control plane's path an agent reports a tunnel it could not open to (`POST` `{message}`).
pub fn tunnel_error_path(id: &str) -> String {
    format!("{}/error", paths::tunnel(id))
}

/// An edge's bearer credential (`cne_...`). Never shown: `Debug` is redacted and there is no
/// `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential(String);

impl Credential {
    /// Wraps a credential; `None` when it is empty (after trimming whitespace).
    pub fn new(secret: &str) -> Option<Credential> {
        let s = secret.trim();
        (!s.is_empty()).then(|| Credential(s.to_string()))
    }

    /// The secret itself, to send or store.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(********)")
    }
}

/// The control plane's addresses and the one in use, shared by every clone of a client so
/// that all the agent's activities move together.
#[derive(Debug)]
struct Servers {
    /// Normalized base URLs, in the order given; never empty.
    bases: Vec<String>,
    /// Index of the one in use.
    current: AtomicUsize,
    /// Addresses that failed one after the other since the last answer (any answer).
    failed_in_a_row: AtomicUsize,
}

impl Servers {
    fn new(servers: &[impl AsRef<str>]) -> Result<Servers, AgentError> {
        let bases = servers
            .iter()
            .map(|s| normalize_server(s.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if bases.is_empty() {
            return Err(AgentError::InvalidServer {
                server: String::new(),
                reason: "no control-plane address given".into(),
            });
        }
        Ok(Servers {
            bases,
            current: AtomicUsize::new(0),
            failed_in_a_row: AtomicUsize::new(0),
        })
    }

    /// The address in use, with its index (to name it in [`Servers::failed`]).
    fn current(&self) -> (usize, &str) {
        let i = self.current.load(Ordering::Relaxed) % self.bases.len();
        (i, &self.bases[i])
    }

    /// A request to address `index` could not reach it: the next requests go to the next
    /// address, unless another request already moved on (several activities fail together
    /// when a replica dies; they move once).
    fn failed(&self, index: usize) {
        let n = self.bases.len();
        if n < 2 {
            return;
        }
        let next = (index + 1) % n;
        if self
            .current
            .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.failed_in_a_row.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                from = %self.bases[index],
                to = %self.bases[next],
                "cannot reach this control-plane address; using the next one"
            );
        }
    }
}

impl Servers {
    /// An address answered: the next failure starts a new round.
    fn answered(&self) {
        self.failed_in_a_row.store(0, Ordering::Relaxed);
    }

    /// Whether the address in use has not failed since the last answer (it was just moved
    /// to), while another one did.
    fn moved_to_untried(&self) -> bool {
        let failed = self.failed_in_a_row.load(Ordering::Relaxed);
        failed > 0 && failed < self.bases.len()
    }
}

/// A client of one control plane's agent API, for one edge once it has a credential.
#[derive(Debug, Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    /// HTTP/1.1 only, for tunnel upgrades; `http` when absent.
    upgrade_http: Option<reqwest::Client>,
    servers: Arc<Servers>,
    credential: Option<Credential>,
}

impl AgentClient {
    /// A client of the control plane at `server` (`http://host:port` or `https://...`, with an
    /// optional path prefix), without a credential yet.
    pub fn new(server: &str) -> Result<AgentClient, AgentError> {
        AgentClient::with_servers(&[server])
    }

    /// A client of the control plane reachable at any of `servers` (replicas of one control
    /// plane, or a single load balancer), starting with the first; see the module docs.
    pub fn with_servers(servers: &[impl AsRef<str>]) -> Result<AgentClient, AgentError> {
        let servers = Arc::new(Servers::new(servers)?);
        let cannot = |e: reqwest::Error| AgentError::InvalidServer {
            server: servers.bases.join(","),
            reason: format!("cannot build an HTTP client: {e}"),
        };
        let http = AgentClient::http_builder().build().map_err(cannot)?;
        let upgrade_http = AgentClient::http_builder()
            .http1_only()
            .build()
            .map_err(cannot)?;
        Ok(AgentClient {
            http,
            upgrade_http: Some(upgrade_http),
            servers,
            credential: None,
        })
    }

    /// The agent's HTTP client settings (connect timeout, user agent), for callers that add
    /// their own (e.g. TLS trust) before [`AgentClient::with_http_client`].
    pub fn http_builder() -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // One long-lived connection (see POOL_IDLE_TIMEOUT), kept open through NATs by
            // TCP keep-alive and checked by HTTP/2 pings only when it went quiet.
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .tcp_keepalive(TCP_KEEPALIVE)
            .tcp_keepalive_interval(TCP_KEEPALIVE_INTERVAL)
            .tcp_keepalive_retries(TCP_KEEPALIVE_RETRIES)
            .http2_keep_alive_interval(HTTP2_KEEP_ALIVE_INTERVAL)
            .http2_keep_alive_timeout(HTTP2_KEEP_ALIVE_TIMEOUT)
            .http2_keep_alive_while_idle(true)
            .user_agent(concat!("canopy-agent/", env!("CARGO_PKG_VERSION")))
    }

    /// A client of the control plane at `server` over an HTTP client built by the caller, so
    /// many edges can share its connections (the load simulator multiplexes hundreds of edges
    /// over one HTTP/2 connection). Requests still carry their own timeouts.
    pub fn with_http_client(
        http: reqwest::Client,
        server: &str,
    ) -> Result<AgentClient, AgentError> {
        AgentClient::with_http_client_servers(http, &[server])
    }

    /// [`AgentClient::with_http_client`] for a control plane reachable at any of `servers`
    /// (see [`AgentClient::with_servers`]).
    pub fn with_http_client_servers(
        http: reqwest::Client,
        servers: &[impl AsRef<str>],
    ) -> Result<AgentClient, AgentError> {
        Ok(AgentClient {
            http,
            upgrade_http: None,
            servers: Arc::new(Servers::new(servers)?),
            credential: None,
        })
    }

    /// The same client, connecting tunnels with `http`: an HTTP/1.1-only client (tunnels are
    /// HTTP upgrades) with the same TLS trust, e.g. `http_builder().http1_only()` plus a TLS
    /// configuration offering only `http/1.1` by ALPN.
    pub fn with_upgrade_client(mut self, http: reqwest::Client) -> AgentClient {
        self.upgrade_http = Some(http);
        self
    }

    /// The same client, authenticating as the edge that owns `credential`.
    pub fn with_credential(mut self, credential: Credential) -> AgentClient {
        self.credential = Some(credential);
        self
    }

    /// The control plane's address in use, normalized (no trailing slash).
    pub fn server(&self) -> String {
        self.servers.current().1.to_string()
    }

    /// Every address of the control plane this client knows, normalized, in order.
    pub fn servers(&self) -> &[String] {
        &self.servers.bases
    }

    /// Whether the last failure moved the client to an address not tried since the control
    /// plane last answered: worth trying at once (after a short jitter) rather than after the
    /// backoff, which is for when every address failed (a whole fleet then still spreads its
    /// retries over the backoff's window).
    pub fn moved_to_untried_address(&self) -> bool {
        self.servers.moved_to_untried()
    }

    /// `POST` [`paths::ENROLL`]: joins the token's project as a new edge. Needs no credential.
    pub async fn enroll(&self, request: &EnrollRequest) -> Result<EnrollResponse, AgentError> {
        let (at, url) = self.url(paths::ENROLL);
        let req = self
            .http
            .post(url)
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION)
            .timeout(REQUEST_TIMEOUT)
            .json(request);
        let response = self.send(at, req, ENROLLMENT).await?;
        // A refused enrollment token is not a refused credential: it is an ordinary rejection.
        match response.status() {
            StatusCode::UNAUTHORIZED => Err(AgentError::Rejected {
                request: ENROLLMENT,
                status: 401,
                message: error_message(response).await,
            }),
            _ => decode(response, ENROLLMENT).await,
        }
    }

    /// `GET` [`paths::DESIRED_STATE`]: the edge's desired state if its generation is greater
    /// than `after`, waiting up to `wait` (at most [`MAX_WAIT_SECONDS`]) for it to change;
    /// `None` when nothing changed in time (`204`).
    pub async fn desired_state(
        &self,
        after: Generation,
        wait: Duration,
    ) -> Result<Option<DesiredState>, AgentError> {
        let wait_seconds = wait.as_secs().min(u64::from(MAX_WAIT_SECONDS));
        let (at, url) = self.url(paths::DESIRED_STATE);
        let req = self
            .authorized(self.http.get(url))
            .query(&[("after", after.0), ("waitSeconds", wait_seconds)])
            .timeout(Duration::from_secs(wait_seconds) + LONG_POLL_MARGIN);
        let response = self.send(at, req, DESIRED_STATE).await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        decode(response, DESIRED_STATE).await.map(Some)
    }

    /// `POST` [`paths::STATUS`]: reports what runs; the ack names the highest sequence number
    /// the server accepted and the heartbeat interval.
    pub async fn report(&self, report: &StatusReport) -> Result<StatusAck, AgentError> {
        let (at, url) = self.url(paths::STATUS);
        let req = self
            .authorized(self.http.post(url))
            .timeout(REQUEST_TIMEOUT)
            .json(report);
        let response = self.send(at, req, STATUS_REPORT).await?;
        decode(response, STATUS_REPORT).await
    }

    /// `GET` [`paths::TUNNELS`]: the tunnels users asked of this edge, waiting up to `wait`
    /// (at most [`MAX_WAIT_SECONDS`]) for one; `None` when none came in time (`204`).
    pub async fn tunnels(&self, wait: Duration) -> Result<Option<TunnelRequests>, AgentError> {
        let wait_seconds = wait.as_secs().min(u64::from(MAX_WAIT_SECONDS));
        let (at, url) = self.url(paths::TUNNELS);
        let req = self
            .authorized(self.http.get(url))
            .query(&[("waitSeconds", wait_seconds)])
            .timeout(Duration::from_secs(wait_seconds) + LONG_POLL_MARGIN);
        let response = self.send(at, req, TUNNEL_POLL).await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        decode(response, TUNNEL_POLL).await.map(Some)
    }

    /// `GET` [`paths::tunnel`]`(id)` with an HTTP/1.1 upgrade to [`TUNNEL_UPGRADE`]: the
    /// connection that then carries the tunnel's bytes. `Rejected` with `404` when the tunnel
    /// no longer waits (its user went away, or another edge's).
    pub async fn open_tunnel(&self, id: &str) -> Result<reqwest::Upgraded, AgentError> {
        let http = self.upgrade_http.as_ref().unwrap_or(&self.http);
        let (at, url) = self.url(&paths::tunnel(id));
        let req = self
            .authorized(http.get(url))
            .header(CONNECTION, "upgrade")
            .header(UPGRADE, TUNNEL_UPGRADE);
        // No request timeout: reqwest's would also bound the upgraded connection's life.
        let response = tokio::time::timeout(REQUEST_TIMEOUT, req.send())
            .await
            .map_err(|_| {
                self.servers.failed(at);
                AgentError::Transient {
                    request: TUNNEL_CONNECT,
                    reason: format!("no answer in time ({} s)", REQUEST_TIMEOUT.as_secs()),
                }
            })?
            .map_err(|e| {
                self.servers.failed(at);
                AgentError::Transient {
                    request: TUNNEL_CONNECT,
                    reason: network_reason(&e),
                }
            })?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            let status = response.status();
            classify(response, TUNNEL_CONNECT).await?;
            return Err(AgentError::Rejected {
                request: TUNNEL_CONNECT,
                status: status.as_u16(),
                message: format!(
                    "the control plane answered {status} instead of switching protocols (is                      there a proxy in between that does not pass HTTP upgrades?)"
                ),
            });
        }
        response.upgrade().await.map_err(|e| AgentError::Transient {
            request: TUNNEL_CONNECT,
            reason: network_reason(&e),
        })
    }

    /// `POST` [`tunnel_error_path`]`(id)`: this edge could not open tunnel `id`; its user is
    /// shown `message`.
    pub async fn tunnel_error(&self, id: &str, message: &str) -> Result<(), AgentError> {
        let (at, url) = self.url(&tunnel_error_path(id));
        let req = self
            .authorized(self.http.post(url))
            .timeout(REQUEST_TIMEOUT)
            .json(&serde_json::json!({ "message": message }));
        self.send(at, req, TUNNEL_ERROR).await.map(drop)
    }

    /// The URL of `path` at the address in use, and that address's index.
    fn url(&self, path: &str) -> (usize, String) {
        let (at, base) = self.servers.current();
        (at, format!("{base}{path}"))
    }

    /// Sends a request to address `at`; network failures are transient and move the client to
    /// the next address (see the module docs); answers are classified by [`classify`].
    async fn send(
        &self,
        at: usize,
        req: reqwest::RequestBuilder,
        request: &'static str,
    ) -> Result<Response, AgentError> {
        let response = req.send().await.map_err(|e| {
            self.servers.failed(at);
            AgentError::Transient {
                request,
                reason: network_reason(&e),
            }
        })?;
        self.servers.answered();
        classify(response, request).await
    }

    fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let req = req.header(PROTOCOL_HEADER, PROTOCOL_VERSION);
        match &self.credential {
            Some(c) => req.header(AUTHORIZATION, format!("Bearer {}", c.expose())),
            None => req,
        }
    }
}

/// The server address without a trailing slash, once checked to be an `http(s)` URL.
pub(crate) fn normalize_server(server: &str) -> Result<String, AgentError> {
    let invalid = |reason: String| AgentError::InvalidServer {
        server: server.to_string(),
        reason,
    };
    let url = Url::parse(server.trim()).map_err(|e| invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("expected an http:// or https:// URL".into()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("expected no query or fragment".into()));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Passes a successful answer on; classifies any other: `5xx`, `408` and `429` are transient
/// (with `Retry-After`, [`AgentError::Throttled`] says how long to wait); `401` and `426` are
/// classified here.
async fn classify(response: Response, request: &'static str) -> Result<Response, AgentError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    if status == StatusCode::UPGRADE_REQUIRED {
        return Err(AgentError::IncompatibleProtocol {
            message: error_message(response).await,
        });
    }
    if status == StatusCode::UNAUTHORIZED && request == ENROLLMENT {
        // Left to `enroll`, which words it as a refused token.
        return Ok(response);
    }
    if status == StatusCode::UNAUTHORIZED {
        return Err(AgentError::Unauthorized {
            message: error_message(response).await,
        });
    }
    let transient = status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS;
    let retry_after = retry_after(response.headers());
    let message = error_message(response).await;
    if let (true, Some(retry_after)) = (transient, retry_after) {
        Err(AgentError::Throttled {
            request,
            reason: format!("the control plane answered {status}: {message}"),
            retry_after,
        })
    } else if transient {
        Err(AgentError::Transient {
            request,
            reason: format!("the control plane answered {status}: {message}"),
        })
    } else {
        Err(AgentError::Rejected {
            request,
            status: status.as_u16(),
            message,
        })
    }
}

/// Longest `Retry-After` honoured (a proxy's absurd value must not park the agent for days).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// A `Retry-After` in seconds (the form Canopy sends; an HTTP date is ignored), capped.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

async fn decode<T: DeserializeOwned>(
    response: Response,
    request: &'static str,
) -> Result<T, AgentError> {
    let status = response.status();
    let body = response.bytes().await.map_err(|e| AgentError::Transient {
        request,
        reason: network_reason(&e),
    })?;
    serde_json::from_slice(&body).map_err(|e| AgentError::Transient {
        request,
        reason: format!("the control plane answered {status} with an unreadable body: {e}"),
    })
}

/// The `message` of the server's error body (`{code, message, details, errorMessages}`), else
/// the body's text, else the status.
async fn error_message(response: Response) -> String {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    message_of(status, &text)
}

fn message_of(status: StatusCode, text: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(text).ok();
    if let Some(m) = parsed
        .as_ref()
        .and_then(|v| v.get("message"))
        .and_then(serde_json::Value::as_str)
        .map(str::trim)
        .filter(|m| !m.is_empty())
    {
        return m.to_string();
    }
    let raw = text.trim();
    if raw.is_empty() {
        return format!("the server answered {status}");
    }
    // A proxy's HTML page can be long: keep the start.
    let mut cut = raw.len().min(300);
    while !raw.is_char_boundary(cut) {
        cut -= 1;
    }
    raw[..cut].to_string()
}

/// The deepest cause of a reqwest failure (its outer layers repeat the URL), with a word on
/// timeouts.
fn network_reason(e: &reqwest::Error) -> String {
    let mut deepest: &dyn std::error::Error = e;
    while let Some(s) = deepest.source() {
        deepest = s;
    }
    let text = deepest.to_string();
    if e.is_timeout() {
        format!("no answer in time ({text})")
    } else if e.is_connect() {
        format!("cannot connect ({text})")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_are_normalized_and_checked() {
        assert_eq!(
            normalize_server("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            normalize_server("https://cp.example.com/prefix/").unwrap(),
            "https://cp.example.com/prefix"
        );
        assert_eq!(
            normalize_server("HTTPS://CP.example.com:443").unwrap(),
            "https://cp.example.com"
        );
        for bad in ["cp.example.com", "ftp://x", "http://x/?a=b", ""] {
            assert!(
                matches!(normalize_server(bad), Err(AgentError::InvalidServer { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_server_message_is_surfaced() {
        let body = r#"{"code":"unsupported_protocol","message":"agent protocol version 2 is not supported","details":[]}"#;
        assert_eq!(
            message_of(StatusCode::UPGRADE_REQUIRED, body),
            "agent protocol version 2 is not supported"
        );
        let body =
            r#"{"code":16,"message":"enrollment token expired","details":[],"errorMessages":[]}"#;
        assert_eq!(
            message_of(StatusCode::UNAUTHORIZED, body),
            "enrollment token expired"
        );
        assert_eq!(
            message_of(StatusCode::BAD_GATEWAY, "  upstream down \n"),
            "upstream down"
        );
        assert_eq!(
            message_of(StatusCode::BAD_GATEWAY, ""),
            "the server answered 502 Bad Gateway"
        );
        assert_eq!(
            message_of(StatusCode::BAD_GATEWAY, &"é".repeat(400)).len(),
            300
        );
    }

    #[test]
    fn retry_after_is_read_in_seconds_and_capped() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(reqwest::header::RETRY_AFTER, "99999999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2026 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn addresses_are_tried_in_turn_and_moved_from_once() {
        let servers = Servers::new(&["http://a:1/", "http://b:1", "https://c:1/prefix"]).unwrap();
        assert_eq!(servers.current(), (0, "http://a:1"));
        assert!(!servers.moved_to_untried());
        servers.failed(0);
        assert_eq!(servers.current(), (1, "http://b:1"));
        assert!(servers.moved_to_untried(), "b was not tried yet");
        // Another activity's request to a, failing late: already moved on.
        servers.failed(0);
        assert_eq!(servers.current().0, 1);
        servers.failed(1);
        assert_eq!(servers.current(), (2, "https://c:1/prefix"));
        assert!(servers.moved_to_untried());
        servers.failed(2);
        assert_eq!(servers.current().0, 0, "round-robin");
        assert!(
            !servers.moved_to_untried(),
            "every address failed: back off"
        );
        servers.answered();
        assert!(!servers.moved_to_untried());
        // One address: nothing to move to.
        let one = Servers::new(&["http://lb:1"]).unwrap();
        one.failed(0);
        assert_eq!(one.current().0, 0);
        assert!(!one.moved_to_untried());
        assert!(Servers::new(&[] as &[&str]).is_err());
        assert!(Servers::new(&["http://a:1", "ftp://b"]).is_err());
    }

    #[test]
    fn credentials_are_never_shown() {
        let c = Credential::new(" cne_secret\n").unwrap();
        assert_eq!(c.expose(), "cne_secret");
        assert!(!format!("{c:?}").contains("secret"));
        let client = AgentClient::new("http://x:1").unwrap().with_credential(c);
        assert!(!format!("{client:?}").contains("cne_secret"));
        assert!(Credential::new("  ").is_none());
    }
}
