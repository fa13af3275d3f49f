//! Where Podman's compatible API differs from Docker's in ways the driver must absorb.
//!
//! 1. **Health checks.** Docker runs health checks itself. Podman schedules them with systemd
//!    timers, so on an edge without systemd (and in our CI) a container's health stays
//!    `starting` forever. The Docker API has no "run the health check now" call, but Podman's
//!    own API does (`GET /libpod/containers/{id}/healthcheck`, what `podman healthcheck run`
//!    uses): it runs the configured check once and records the result in the container's
//!    health state, with Podman's own retries and start-period rules. The driver calls it for
//!    Podman containers whose check is overdue ([`run_healthcheck`]).
//! 2. **States Docker does not have.** For a moment after a container exits (until Podman's
//!    cleanup has run, and with a restart policy, until it restarts) Podman 4 reports its state
//!    as `stopped`, which bollard's strictly typed enums reject, failing the whole list or
//!    inspect. When that happens the driver reads the same endpoint again here as plain JSON,
//!    maps Podman's extra states onto Docker's ([`normalize_states`]) and decodes that
//!    ([`get_json`]).
//!
//! bollard has no call for either, so these are plain `GET`s over the same socket with hyper's
//! HTTP/1.1 client (the one bollard itself uses), one connection per request: they are rare
//! (a health check that is overdue, an answer bollard cannot decode), so pooling buys nothing.

use std::io;
use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};

/// Where the engine listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    /// `host:port`.
    Tcp(String),
}

/// The most of an answer that is read.
const MAX_ANSWER: u64 = 32 * 1024 * 1024;

/// Runs the health check of container `id` once; `Ok` when Podman ran it (whatever the result:
/// the result lands in the container's health state). The caller bounds the time.
pub async fn run_healthcheck(endpoint: &Endpoint, id: &str) -> io::Result<()> {
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unexpected container id {id:?}"),
        ));
    }
    get(
        endpoint,
        &format!("/v4.0.0/libpod/containers/{id}/healthcheck"),
    )
    .await
    .map(|_| ())
}

/// `GET path` (already percent-encoded) as JSON, with Podman's extra states mapped onto Docker's.
/// The caller bounds the time.
pub async fn get_json(endpoint: &Endpoint, path: &str) -> io::Result<Value> {
    let body = get(endpoint, path).await?;
    let mut value: Value =
        serde_json::from_slice(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    normalize_states(&mut value);
    Ok(value)
}

/// Maps container states Docker's API does not know onto the ones it does, in a container
/// list (`State`) or inspect (`State.Status`, `State.Health.Status`): `stopped` is `exited`,
/// `configured`/`initialized` are `created`, anything else unknown is left empty.
pub fn normalize_states(value: &mut Value) {
    const KNOWN: [&str; 9] = [
        "",
        "created",
        "running",
        "paused",
        "restarting",
        "removing",
        "exited",
        "dead",
        "stopping",
    ];
    const HEALTH: [&str; 5] = ["", "none", "starting", "healthy", "unhealthy"];
    fn fix(v: &mut Value, known: &[&str]) {
        if let Value::String(s) = v {
            let mapped = match s.as_str() {
                "stopped" => "exited",
                "configured" | "initialized" => "created",
                other if known.contains(&other) => return,
                _ => "",
            };
            *s = mapped.to_string();
        }
    }
    let one = |c: &mut Value| {
        let Some(state) = c.get_mut("State") else {
            return;
        };
        if state.is_string() {
            fix(state, &KNOWN);
        } else if let Value::Object(state) = state {
            if let Some(s) = state.get_mut("Status") {
                fix(s, &KNOWN);
            }
            if let Some(Value::Object(h)) = state.get_mut("Health")
                && let Some(s) = h.get_mut("Status")
            {
                fix(s, &HEALTH);
            }
        }
    };
    match value {
        Value::Array(list) => list.iter_mut().for_each(one),
        other => one(other),
    }
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The body of a `200` answer to `GET path`. A connection failure is `ConnectionRefused` (never
/// `NotFound`, which is kept for the engine's `404`).
async fn get(endpoint: &Endpoint, path: &str) -> io::Result<Vec<u8>> {
    let unreachable = |e: io::Error| io::Error::new(io::ErrorKind::ConnectionRefused, e);
    let (status, body) = match endpoint {
        Endpoint::Unix(socket) => {
            let stream = tokio::net::UnixStream::connect(socket)
                .await
                .map_err(unreachable)?;
            exchange(stream, path).await?
        }
        Endpoint::Tcp(addr) => {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(unreachable)?;
            exchange(stream, path).await?
        }
    };
    if status == StatusCode::OK {
        return Ok(body.to_vec());
    }
    let kind = if status == StatusCode::NOT_FOUND {
        io::ErrorKind::NotFound
    } else {
        io::ErrorKind::Other
    };
    let text = String::from_utf8_lossy(&body);
    Err(io::Error::new(
        kind,
        format!(
            "engine answered {status} to GET {path}: {}",
            text.trim().chars().take(300).collect::<String>()
        ),
    ))
}

/// One `GET path` on a fresh HTTP/1.1 connection: the status and the body (at most
/// [`MAX_ANSWER`] bytes).
async fn exchange<S>(stream: S, path: &str) -> io::Result<(StatusCode, Bytes)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let answer = async move {
        let response = sender
            .send_request(request)
            .await
            .map_err(io::Error::other)?;
        let status = response.status();
        let limit = usize::try_from(MAX_ANSWER).unwrap_or(usize::MAX);
        let body = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            .to_bytes();
        Ok::<_, io::Error>((status, body))
        // `sender` is dropped here, which lets `connection` finish.
    };
    // The connection is driven alongside the request, in this task: nothing outlives the call.
    let (answer, _closed) = tokio::join!(answer, connection);
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn podman_states_become_docker_states() {
        let mut list = json!([{"State": "stopped"}, {"State": "running"}, {"State": "weird"}]);
        normalize_states(&mut list);
        assert_eq!(
            list,
            json!([{"State": "exited"}, {"State": "running"}, {"State": ""}])
        );
        let mut inspect = json!({"State": {"Status": "configured", "Health": {"Status": "odd"}}});
        normalize_states(&mut inspect);
        assert_eq!(
            inspect,
            json!({"State": {"Status": "created", "Health": {"Status": ""}}})
        );
        let summary: bollard::models::ContainerSummary =
            serde_json::from_value(json!({"State": "exited"})).unwrap();
        assert_eq!(summary.state.unwrap().to_string(), "exited");
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            encode(r#"{"label":["a=b"]}"#),
            "%7B%22label%22%3A%5B%22a%3Db%22%5D%7D"
        );
    }
}
