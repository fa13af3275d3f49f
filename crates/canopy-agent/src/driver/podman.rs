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
//! bollard has no call for either, so this is plain HTTP over the same socket, written out here
//! rather than pulling in a second HTTP client: HTTP/1.0 requests, so the engine (a Go server,
//! like Docker) answers without chunked encoding and closes the connection after the body.

use std::io;
use std::path::PathBuf;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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

/// The body of a `200` answer to `GET path`.
async fn get(endpoint: &Endpoint, path: &str) -> io::Result<Vec<u8>> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    // A connection failure must not read as "no such object" (NotFound is kept for 404).
    let unreachable = |e: io::Error| io::Error::new(io::ErrorKind::ConnectionRefused, e);
    let answer = match endpoint {
        Endpoint::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .map_err(unreachable)?;
            exchange(stream, &request).await?
        }
        Endpoint::Tcp(addr) => {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(unreachable)?;
            exchange(stream, &request).await?
        }
    };
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no HTTP header in answer"))?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let body = answer[split + 4..].to_vec();
    let status_line = head.lines().next().unwrap_or_default();
    let code = status_line.split_whitespace().nth(1).unwrap_or_default();
    if code == "200" {
        Ok(body)
    } else {
        let text = String::from_utf8_lossy(&body);
        let kind = if code == "404" {
            io::ErrorKind::NotFound
        } else {
            io::ErrorKind::Other
        };
        Err(io::Error::new(
            kind,
            format!(
                "engine answered {status_line:?} to GET {path}: {}",
                text.trim().chars().take(300).collect::<String>()
            ),
        ))
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &str,
) -> io::Result<Vec<u8>> {
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    (&mut stream).take(MAX_ANSWER).read_to_end(&mut buf).await?;
    Ok(buf)
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
