//! Typed HTTP client for the Canopy API: one method per operation of the reference catalog
//! (`/v3/projects/{project}/catalog/...`) and deployment manager (`/v1/projects/{project}/...`)
//! REST APIs and of Canopy's own fleet API (`/canopy/v1/projects/{project}/...`: enrollment
//! tokens, edges), and one error type that keeps the server's message verbatim.
//!
//! Used by the `canopy` CLI, the test harness and benchmarks, so it holds no presentation logic
//! and never prints. Bodies are the shared wire types (`canopy-core` catalog entities,
//! `canopy-deploy` deployment model, `canopy-proto` agent statuses); it must not depend on the
//! server or the store: it talks to them over HTTP like any other client, and mirrors the few
//! server-only JSON shapes (edges, enrollment tokens) in [`fleet`].
//!
//! The resource manager and tunnels ([`resources`]) add workloads, VM actions, consoles as
//! WebSockets and streamed logs.
//!
//! Every request has a timeout ([`DEFAULT_TIMEOUT`], or [`DEFAULT_TRANSFER_TIMEOUT`] for uploads
//! and downloads), so a hung server never hangs a caller.

pub mod audit;
mod catalog;
mod deployments;
mod error;
pub mod fleet;
pub mod identity;
mod list;
pub mod policy;
pub mod resources;
mod upload;

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use audit::{AuditEntry, AuditFilter, MAX_AUDIT_PAGE_SIZE};
pub use canopy_core::upload::UploadFile;
pub use canopy_deploy::model::DeleteType;
pub use catalog::{ChartImportRequest, ChartImportResponse};
pub use error::ClientError;
pub use fleet::{CreatedEnrollmentToken, Edge, EnrollmentToken, NewEnrollmentToken};
pub use list::{ListParams, MAX_PAGE_SIZE, Page, collect_all};
pub use policy::ProjectPolicy;
pub use reqwest::StatusCode;
pub use resources::{
    AppEndpoint, AppWorkload, DeploymentWorkload, EdgeWorkload, LogOptions, LogStream, VmAction,
    WebSocket, WebSocketMessage,
};
pub use upload::{MAX_UPLOAD_FILES, UploadChange, UploadResponse};

/// Timeout of an ordinary API request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of an upload or download, which may carry megabytes.
pub const DEFAULT_TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);
/// Timeout of establishing a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may spend waiting out the server's rate limit (429) in all.
const RATE_LIMIT_PATIENCE: Duration = Duration::from_secs(60);
/// The longest single wait for a 429, whatever its `Retry-After` says.
const RATE_LIMIT_MAX_WAIT: Duration = Duration::from_secs(10);

/// A client for one Canopy server and one project. Cheap to clone (the connection pool is
/// shared).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    project: String,
    timeout: Duration,
    transfer_timeout: Duration,
    /// Bearer token sent on every request (never printed: see the `Debug` of [`Token`]).
    token: Option<Token>,
    /// Whom to trust as the server (for the HTTP/1.1 client of WebSocket upgrades).
    trust: canopy_tls::ClientTrust,
    /// The HTTP/1.1-only client of WebSocket upgrades, built on first use and shared by clones.
    upgrade_http: std::sync::Arc<std::sync::OnceLock<reqwest::Client>>,
}

/// A bearer token; its `Debug` does not show it.
#[derive(Clone)]
struct Token(std::sync::Arc<str>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Client {
    /// A client for the server at `base_url` (e.g. `https://127.0.0.1:7070`, optionally with a
    /// path prefix) acting in `project`, trusting the public web PKI roots.
    pub fn new(base_url: &str, project: impl Into<String>) -> Result<Client, ClientError> {
        Client::with_trust(base_url, project, &canopy_tls::ClientTrust::System)
    }

    /// Like [`Client::new`], trusting the server's certificate as `trust` says (a CA file, or a
    /// pinned fingerprint for a self-signed server). A CA file that cannot be read is an
    /// [`ClientError::InvalidRequest`] naming the file.
    pub fn with_trust(
        base_url: &str,
        project: impl Into<String>,
        trust: &canopy_tls::ClientTrust,
    ) -> Result<Client, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let mut base = Url::parse(base_url.trim()).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(invalid("expected an http:// or https:// URL"));
        }
        if base.host_str().is_none_or(str::is_empty) {
            return Err(invalid("the URL has no host"));
        }
        base.set_query(None);
        base.set_fragment(None);
        let http = canopy_tls::configure(http_builder(), trust)
            .map_err(|e| ClientError::InvalidRequest(e.to_string()))?
            .build()
            .map_err(|e| invalid(&e.to_string()))?;
        Ok(Client {
            http,
            base,
            project: project.into(),
            timeout: DEFAULT_TIMEOUT,
            transfer_timeout: DEFAULT_TRANSFER_TIMEOUT,
            token: None,
            trust: trust.clone(),
            upgrade_http: Default::default(),
        })
    }

    /// The same server and settings, acting in another project.
    pub fn with_project(&self, project: impl Into<String>) -> Client {
        Client {
            project: project.into(),
            ..self.clone()
        }
    }

    /// Sends `token` as `Authorization: Bearer` on every request.
    pub fn with_token(mut self, token: impl Into<String>) -> Client {
        let token: String = token.into();
        self.token = Some(Token(token.trim().into()));
        self
    }

    /// Sets the timeout of ordinary requests.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// Sets the timeout of uploads and downloads.
    pub fn with_transfer_timeout(mut self, timeout: Duration) -> Client {
        self.transfer_timeout = timeout;
        self
    }

    /// The project this client acts in.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The server's base URL, as shown in messages (no trailing `/`).
    pub fn base_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `GET /healthz`: succeeds when the server is up and answers.
    pub async fn healthz(&self) -> Result<(), ClientError> {
        let url = self.url(&["healthz"]);
        self.execute(self.http.get(url.clone()), self.timeout)
            .await?;
        Ok(())
    }

    /// The URL of `segments` under the base URL, each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("Client::new accepts only URLs that can be a base")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// The URL of `segments` under `/v3/projects/{project}/catalog`.
    fn catalog_url(&self, segments: &[&str]) -> Url {
        let mut all = vec!["v3", "projects", self.project.as_str(), "catalog"];
        all.extend_from_slice(segments);
        self.url(&all)
    }

    /// The URL of `segments` under the deployment manager's `/v1/projects/{project}`.
    fn deploy_url(&self, segments: &[&str]) -> Url {
        let mut all = vec!["v1", "projects", self.project.as_str()];
        all.extend_from_slice(segments);
        self.url(&all)
    }

    /// The URL of `segments` under Canopy's own `/canopy/v1/projects/{project}`.
    fn canopy_url(&self, segments: &[&str]) -> Url {
        let mut all = vec!["canopy", "v1", "projects", self.project.as_str()];
        all.extend_from_slice(segments);
        self.url(&all)
    }

    /// `GET url?query` of a list answered as `{<key>: [...], totalElements}`.
    async fn get_page<T: DeserializeOwned>(
        &self,
        url: &Url,
        key: &'static str,
        params: &ListParams,
    ) -> Result<Page<T>, ClientError> {
        let req = self.request(Method::GET, url).query(&params.query());
        let mut body = self.execute_json(req, url).await?;
        let items: Vec<T> = take_list(url, &mut body, &[key])?;
        let total = match body.get("totalElements") {
            None | Some(Value::Null) => u64::from(params.offset.unwrap_or(0)) + items.len() as u64,
            Some(_) => take_count(url, &body, "totalElements")?,
        };
        Ok(Page { items, total })
    }

    fn request(&self, method: Method, url: &Url) -> RequestBuilder {
        let req = self.http.request(method, url.clone());
        match &self.token {
            Some(t) => req.bearer_auth(&t.0),
            None => req,
        }
    }

    /// Sends the request and returns the body of a success; an error status becomes
    /// [`ClientError::Api`].
    async fn execute(
        &self,
        req: RequestBuilder,
        timeout: Duration,
    ) -> Result<reqwest::Response, ClientError> {
        let transport = |e| ClientError::from_transport(self.base_url(), timeout, e);
        let resp = send_patiently(req.timeout(timeout))
            .await
            .map_err(transport)?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.bytes().await.map_err(transport)?;
        Err(ClientError::from_response(status, &body))
    }

    /// Sends the request and returns the whole body of a success.
    async fn execute_bytes(
        &self,
        req: RequestBuilder,
        timeout: Duration,
    ) -> Result<Vec<u8>, ClientError> {
        let resp = self.execute(req, timeout).await?;
        let body = resp
            .bytes()
            .await
            .map_err(|e| ClientError::from_transport(self.base_url(), timeout, e))?;
        Ok(body.to_vec())
    }

    /// Sends the request and parses the body of a success as JSON.
    async fn execute_json(&self, req: RequestBuilder, url: &Url) -> Result<Value, ClientError> {
        let body = self.execute_bytes(req, self.timeout).await?;
        parse_json(url, &body)
    }
}

/// Sends `req`; a 429 (the server's rate limit refused the request before doing anything) is
/// sent again after the server's `Retry-After` (at most [`RATE_LIMIT_MAX_WAIT`], plus up to a
/// quarter more so that parallel requests spread out), for up to [`RATE_LIMIT_PATIENCE`]. A 429
/// without `Retry-After` is a used-up quota (upload sessions), which waiting does not cure: it
/// is returned at once. Requests whose body cannot be sent twice (a streamed upload) get the
/// 429 as is. A fleet-wide `canopy workload list` makes thousands of calls and
/// must not fail on a limit meant to slow it down.
async fn send_patiently(req: RequestBuilder) -> reqwest::Result<reqwest::Response> {
    let started = std::time::Instant::now();
    let mut req = req;
    loop {
        let again = req.try_clone();
        let resp = req.send().await?;
        if resp.status() != reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Ok(resp);
        }
        let Some(next) = again else {
            return Ok(resp);
        };
        let Some(asked) = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(RATE_LIMIT_MAX_WAIT))
        else {
            return Ok(resp);
        };
        let jitter = asked.max(Duration::from_millis(200)) / 4;
        let wait = asked + jitter.mul_f64(spread());
        if started.elapsed() + wait > RATE_LIMIT_PATIENCE {
            return Ok(resp);
        }
        tokio::time::sleep(wait).await;
        req = next;
    }
}

/// A number in [0, 1) that differs between calls (no need for a random number generator: the
/// clock's nanoseconds and a counter are spread enough for jitter).
fn spread() -> f64 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mixed = nanos
        ^ CALLS
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9);
    f64::from(mixed % 1000) / 1000.0
}

/// The settings every HTTP client of this crate shares (timeouts, user agent), before TLS.
fn http_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        // Below the server's 10 s idle cut-off of HTTP/1 connections, so a request never goes
        // out on a connection the server is closing.
        .pool_idle_timeout(Duration::from_secs(5))
        .user_agent(concat!("canopy-client/", env!("CARGO_PKG_VERSION")))
}

fn parse_json<T: DeserializeOwned>(url: &Url, body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|source| ClientError::Decode {
        url: url.to_string(),
        source,
    })
}

fn decode_err(url: &Url, source: serde_json::Error) -> ClientError {
    ClientError::Decode {
        url: url.to_string(),
        source,
    }
}

/// Takes the first present field of `keys` out of a JSON object (the reference wraps single
/// entities: `{registry: {...}}`) and decodes it.
fn take<T: DeserializeOwned>(
    url: &Url,
    mut body: Value,
    keys: &[&'static str],
) -> Result<T, ClientError> {
    let field = keys
        .iter()
        .find_map(|k| body.get_mut(*k).map(Value::take))
        .ok_or_else(|| {
            decode_err(
                url,
                <serde_json::Error as serde::de::Error>::missing_field(
                    keys.first().copied().unwrap_or("entity"),
                ),
            )
        })?;
    serde_json::from_value(field).map_err(|e| decode_err(url, e))
}

/// Like [`take`], but a missing or `null` field is the empty list (proto JSON omits empty lists).
fn take_list<T: DeserializeOwned>(
    url: &Url,
    body: &mut Value,
    keys: &[&str],
) -> Result<Vec<T>, ClientError> {
    match keys.iter().find_map(|k| body.get_mut(*k).map(Value::take)) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v) => serde_json::from_value(v).map_err(|e| decode_err(url, e)),
    }
}

/// Reads an integer field that proto JSON may send as a number or a string, or omit when zero.
fn take_count(url: &Url, body: &Value, key: &'static str) -> Result<u64, ClientError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n.as_u64().ok_or_else(|| {
            decode_err(
                url,
                <serde_json::Error as serde::de::Error>::custom(format!(
                    "{key} is not a count: {n}"
                )),
            )
        }),
        Some(Value::String(s)) => s.parse().map_err(|_| {
            decode_err(
                url,
                <serde_json::Error as serde::de::Error>::custom(format!(
                    "{key} is not a count: {s:?}"
                )),
            )
        }),
        Some(other) => Err(decode_err(
            url,
            <serde_json::Error as serde::de::Error>::custom(format!(
                "{key} is not a count: {other}"
            )),
        )),
    }
}

#[cfg(test)]
mod tests;
