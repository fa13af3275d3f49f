//! Tunnels over HTTP: the agent's side (long-poll for tunnel requests, connect one with an
//! HTTP/1.1 upgrade, or report why it could not) and the user's side (a VM's VNC display and
//! serial console as WebSockets, container and VM logs as a streamed `text/plain` body).
//!
//! Why the user's side waits for the agent before answering: errors (unknown workload, no
//! access, the agent's own error, an edge that does not answer) are then ordinary JSON errors,
//! and once the WebSocket or the body starts, bytes flow at once. Everything here is thin: the
//! app layer (`app::tunnels`) checks access, asks the broker (`crate::tunnels`) and audits.

use std::io;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use canopy_proto::{MAX_WAIT_SECONDS, TUNNEL_UPGRADE, TunnelRequests};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use utoipa::ToSchema;

use super::Caller;
use super::error::{ApiJson, ErrorBody};
use super::fleet::Agent;
use crate::app::{
    AgentClaim, App, AppError, DEFAULT_LOG_TAIL, MAX_LOG_TAIL, OpenTunnel, TunnelKind,
};
use crate::tunnels::TunnelStream;
use crate::tunnels::peer;

type ApiResult<T> = Result<T, AppError>;

/// Largest WebSocket message accepted from a user (RFB client messages are tiny; this bounds
/// what one message may make the server buffer).
pub const MAX_WS_MESSAGE: usize = 1024 * 1024;
/// A console with no traffic either way for this long is closed.
pub const CONSOLE_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Bytes read from a tunnel at once (one WebSocket message or body chunk at most).
const CHUNK: usize = 64 * 1024;
/// Longest error message an agent may report.
const MAX_AGENT_MESSAGE: usize = canopy_proto::bounds::MAX_TUNNEL_ERROR;

// ------------------------------------------------------------------ agent side

/// Parses `waitSeconds` (default 25, at most [`MAX_WAIT_SECONDS`]); other parameters refused.
fn parse_wait(raw: &str) -> Result<Duration, AppError> {
    let mut wait = 25u32;
    for (k, v) in canopy_core::list::form_pairs(raw)? {
        match k.as_str() {
            "waitSeconds" => {
                wait = v.trim().parse().map_err(|_| {
                    AppError::Invalid(format!("invalid waitSeconds {v:?}: must be a whole number"))
                })?
            }
            other => {
                return Err(AppError::Invalid(format!(
                    "unknown query parameter {other:?}"
                )));
            }
        }
    }
    Ok(Duration::from_secs(u64::from(wait.min(MAX_WAIT_SECONDS))))
}

/// The agent's long-poll for tunnel requests.
#[utoipa::path(get, path = "/canopy/v1/agent/tunnels", tag = "Agent",
    params(("waitSeconds" = Option<u32>, Query, description = "longest wait, at most 300 (default 25)")),
    responses((status = 200, body = Object, description = "TunnelRequests: tunnels to open now"),
        (status = 204, description = "none asked for within waitSeconds"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 426, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "this edge already has its maximum of tunnel long-polls waiting, or is over its request rate (Retry-After)"),
        (status = 503, body = ErrorBody, description = "the server holds its maximum of tunnel long-polls (Retry-After)")))]
pub async fn agent_tunnels(
    State(app): State<App>,
    Agent(a): Agent,
    RawQuery(q): RawQuery,
    gate: Option<axum::Extension<super::limits::TunnelPollGate>>,
) -> ApiResult<Response> {
    let wait = parse_wait(q.as_deref().unwrap_or(""))?;
    let _permit = match gate.map(|g| g.0.0.enter(&a.edge_id)).transpose() {
        Ok(permit) => permit,
        Err(refused) => return Ok(refused.into_response()),
    };
    let tunnels = app.agent_tunnel_requests(&a, wait).await;
    Ok(if tunnels.is_empty() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        Json(TunnelRequests { tunnels }).into_response()
    })
}

/// The agent connects one tunnel: `101 Switching Protocols`, then the connection carries the
/// tunnel's bytes. Only the edge the tunnel was asked of may connect it, once.
#[utoipa::path(get, path = "/canopy/v1/agent/tunnels/{tunnelId}", tag = "Agent",
    params(("tunnelId" = String, Path),
        ("Connection" = String, Header, description = "Upgrade"),
        ("Upgrade" = String, Header, description = "canopy-tunnel")),
    responses((status = 101, description = "the connection now carries the tunnel's bytes"),
        (status = 400, body = ErrorBody, description = "not an HTTP/1.1 upgrade to canopy-tunnel"),
        (status = 401, body = ErrorBody), (status = 426, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "no such tunnel waits for this edge (unknown, already connected, withdrawn or another edge's)"),
        (status = 429, body = ErrorBody, description = "this edge is over its request rate (Retry-After)")))]
pub async fn agent_claim_tunnel(
    State(app): State<App>,
    Agent(a): Agent,
    Path(id): Path<String>,
    mut req: Request,
) -> ApiResult<Response> {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(TUNNEL_UPGRADE));
    let connection = req
        .headers()
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    if req.version() != axum::http::Version::HTTP_11 || !upgrade || !connection {
        return Err(AppError::Invalid(format!(
            "connect a tunnel with an HTTP/1.1 upgrade (Connection: Upgrade, Upgrade: \
             {TUNNEL_UPGRADE}); this request is {:?}",
            req.version()
        )));
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    match app.agent_claim_tunnel(&a, &id).await? {
        AgentClaim::Local(claim) => {
            let connected = claim.connect(Box::pin(async move {
                let upgraded = on_upgrade.await.map_err(io::Error::other)?;
                Ok(Box::new(hyper_util::rt::TokioIo::new(upgraded)) as Box<dyn TunnelStream>)
            }));
            if !connected {
                return Err(AppError::NotFound(format!(
                    "tunnel {id} was withdrawn: its user went away"
                )));
            }
        }
        AgentClaim::Relayed {
            peer: remote,
            permit,
        } => {
            // Splices the agent's connection to the replica holding the user's request.
            tokio::spawn(async move {
                let _permit = permit;
                if let Ok(upgraded) = on_upgrade.await {
                    peer::splice(hyper_util::rt::TokioIo::new(upgraded), remote).await;
                }
            });
        }
    }
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static(TUNNEL_UPGRADE));
    Ok(response)
}

/// Why an agent could not open a tunnel.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TunnelErrorReport {
    /// Shown to the user who asked for the tunnel (at most 1000 characters kept).
    pub message: String,
}

/// The agent could not open the local end of a tunnel: the user waiting for it gets `message`
/// at once (instead of a timeout).
#[utoipa::path(post, path = "/canopy/v1/agent/tunnels/{tunnelId}/error", tag = "Agent",
    params(("tunnelId" = String, Path)), request_body = TunnelErrorReport,
    responses((status = 204, description = "the user was told"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 426, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "no such tunnel waits for this edge"),
        (status = 413, body = ErrorBody, description = "the body is over 64 KiB"),
        (status = 429, body = ErrorBody, description = "this edge is over its request rate (Retry-After)")))]
pub async fn agent_tunnel_error(
    State(app): State<App>,
    Agent(a): Agent,
    Path(id): Path<String>,
    ApiJson(report): ApiJson<TunnelErrorReport>,
) -> ApiResult<Response> {
    let message: String = report
        .message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_AGENT_MESSAGE)
        .collect();
    app.agent_tunnel_error(&a, &id, message).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    // The audit log names the edge (there is no user behind this call).
    response
        .extensions_mut()
        .insert(super::audit::AuditActor(format!("edge:{}", a.edge_id)));
    Ok(response)
}

// ------------------------------------------------------------------ between replicas

/// Another replica relays an agent's claim of a tunnel whose user waits here (see
/// `tunnels::peer`): authenticated by a MAC under the key every replica of the database
/// shares, answered with this replica's own MAC; then the connection carries the tunnel.
#[utoipa::path(get, path = "/canopy/v1/peer/tunnels/{tunnelId}", tag = "Peer",
    params(("tunnelId" = String, Path),
        ("Connection" = String, Header, description = "Upgrade"),
        ("Upgrade" = String, Header, description = "canopy-peer-tunnel"),
        ("canopy-peer-edge" = String, Header, description = "the edge the agent authenticated as"),
        ("canopy-peer-time" = String, Header, description = "Unix seconds"),
        ("canopy-peer-nonce" = String, Header, description = "random, hex"),
        ("canopy-peer-mac" = String, Header, description = "HMAC-SHA256, hex (docs/SECURITY.md)")),
    responses((status = 101, description = "the connection now carries the tunnel's bytes (the answer's canopy-peer-mac proves this replica holds the key)"),
        (status = 400, body = ErrorBody, description = "not an HTTP/1.1 upgrade to canopy-peer-tunnel"),
        (status = 401, body = ErrorBody, description = "no valid MAC, or this server takes no peer connections"),
        (status = 404, body = ErrorBody, description = "no such tunnel waits here for that edge")))]
pub async fn peer_claim_tunnel(
    State(app): State<App>,
    Path(id): Path<String>,
    mut req: Request,
) -> ApiResult<Response> {
    let h = req.headers();
    let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let upgrade = text(header::UPGRADE.as_str()).eq_ignore_ascii_case(peer::PEER_UPGRADE);
    let (edge, time, nonce, mac) = (
        text(peer::EDGE_HEADER).to_string(),
        text(peer::TIME_HEADER).to_string(),
        text(peer::NONCE_HEADER).to_string(),
        text(peer::MAC_HEADER).to_string(),
    );
    if req.version() != axum::http::Version::HTTP_11 || !upgrade {
        return Err(AppError::Invalid(format!(
            "connect a peer tunnel with an HTTP/1.1 upgrade (Upgrade: {})",
            peer::PEER_UPGRADE
        )));
    }
    let (claim, accept) = app.peer_claim_tunnel(&id, &edge, &time, &nonce, &mac)?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let connected = claim.connect(Box::pin(async move {
        let upgraded = on_upgrade.await.map_err(io::Error::other)?;
        Ok(Box::new(hyper_util::rt::TokioIo::new(upgraded)) as Box<dyn TunnelStream>)
    }));
    if !connected {
        return Err(AppError::NotFound(format!(
            "tunnel {id} was withdrawn: its user went away"
        )));
    }
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(
        header::UPGRADE,
        HeaderValue::from_static(peer::PEER_UPGRADE),
    );
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(peer::MAC_HEADER, v);
    }
    Ok(response)
}

// ------------------------------------------------------------------ user side

/// The WebSocket upgrade, or a JSON error: the caller's missing access first (so a refusal
/// does not depend on how the request was made), else a 400 saying this path needs one.
fn websocket(
    ctx: &crate::app::Ctx,
    kind: TunnelKind,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<WebSocketUpgrade, AppError> {
    ws.or_else(|e| {
        ctx.require(kind.access())?;
        Err(AppError::Invalid(format!(
            "this path is a WebSocket: connect with a WebSocket client ({})",
            e.body_text()
        )))
    })
}

/// Answers the upgrade and splices the WebSocket to the tunnel (binary messages both ways,
/// bounded message size, closed when idle for [`CONSOLE_IDLE_TIMEOUT`]). Public so that the web
/// console's WebSockets bridge exactly as the API's do.
pub fn serve_console(ws: WebSocketUpgrade, tunnel: OpenTunnel) -> Response {
    ws.max_message_size(MAX_WS_MESSAGE)
        .max_frame_size(MAX_WS_MESSAGE)
        // noVNC asks for `binary` (older versions) or nothing.
        .protocols(["binary"])
        .on_upgrade(move |socket| splice_websocket(socket, tunnel, CONSOLE_IDLE_TIMEOUT))
}

/// Copies WebSocket messages to the tunnel and the tunnel's bytes to binary messages until
/// either side closes, nothing moves for `idle`, or the tunnel must end.
async fn splice_websocket(mut socket: WebSocket, tunnel: OpenTunnel, idle: Duration) {
    let OpenTunnel { io, mut ended } = tunnel;
    let (mut rd, mut wr) = tokio::io::split(io);
    let mut buf = vec![0u8; CHUNK];
    let idle_timer = tokio::time::sleep(idle);
    let mut idle_timer = std::pin::pin!(idle_timer);
    let close = |code, reason: &str| {
        Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    };
    loop {
        tokio::select! {
            msg = socket.recv() => {
                let bytes = match msg {
                    Some(Ok(Message::Binary(b))) => b,
                    Some(Ok(Message::Text(t))) => Bytes::copy_from_slice(t.as_bytes()),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                };
                if wr.write_all(&bytes).await.is_err() || wr.flush().await.is_err() {
                    let _ = socket.send(close(close_code::ERROR, "the workload's end closed")).await;
                    break;
                }
            }
            n = rd.read(&mut buf) => match n {
                Ok(n) if n > 0 => {
                    if socket.send(Message::Binary(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                        break;
                    }
                }
                _ => {
                    let _ = socket.send(close(close_code::NORMAL, "the workload's end closed")).await;
                    break;
                }
            },
            reason = &mut ended => {
                let _ = socket.send(close(close_code::AWAY, reason)).await;
                break;
            }
            () = &mut idle_timer => {
                let _ = socket.send(close(close_code::NORMAL, "idle for too long")).await;
                break;
            }
        }
        idle_timer
            .as_mut()
            .reset(tokio::time::Instant::now() + idle);
    }
    let _ = wr.shutdown().await;
}

/// A VM's VNC display as a WebSocket (binary messages carry RFB both ways; noVNC connects to
/// it as to the reference's vnc-proxy).
#[utoipa::path(get, path = "/vnc/{projectName}/{appId}/{clusterId}/{vmId}", tag = "VirtualMachineService",
    params(("projectName" = String, Path), ("appId" = String, Path, description = "App.id of a deployment's application"),
        ("clusterId" = String, Path, description = "edge name or id"), ("vmId" = String, Path, description = "the VM's workload id")),
    responses((status = 101, description = "WebSocket: RFB in binary messages, both ways"),
        (status = 400, body = ErrorBody, description = "not a WebSocket request, a pod's id, or a VM without VNC, or the agent's error"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "the edge did not open the tunnel in time (it may be offline), or tunnel limits reached")))]
pub async fn vnc(
    State(app): State<App>,
    Path((project, app_id, cluster, vm)): Path<(String, String, String, String)>,
    caller: Caller,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let c = caller.ctx(&app, &project).await?;
    let ws = websocket(&c, TunnelKind::Vnc, ws)?;
    let tunnel = app
        .open_vm_tunnel(&c, &app_id, &cluster, &vm, TunnelKind::Vnc)
        .await?;
    Ok(serve_console(ws, tunnel))
}

/// A VM's serial console as a WebSocket (bytes both ways in binary messages; what the guest
/// printed before is not replayed: see the VM's logs).
#[utoipa::path(get, path = "/canopy/v1/projects/{projectName}/resource/workloads/applications/{appId}/clusters/{clusterId}/virtual-machines/{vmId}/serial", tag = "Canopy",
    params(("projectName" = String, Path), ("appId" = String, Path), ("clusterId" = String, Path, description = "edge name or id"),
        ("vmId" = String, Path, description = "the VM's workload id")),
    responses((status = 101, description = "WebSocket: the serial console in binary messages, both ways"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "the edge did not open the tunnel in time (it may be offline), or tunnel limits reached")))]
pub async fn vm_serial(
    State(app): State<App>,
    Path((project, app_id, cluster, vm)): Path<(String, String, String, String)>,
    caller: Caller,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let c = caller.ctx(&app, &project).await?;
    let ws = websocket(&c, TunnelKind::Serial, ws)?;
    let tunnel = app
        .open_vm_tunnel(&c, &app_id, &cluster, &vm, TunnelKind::Serial)
        .await?;
    Ok(serve_console(ws, tunnel))
}

/// `tail` and `follow` of a logs request (other parameters refused). Public for the web
/// console's log streams, which take the same parameters and limits.
pub fn parse_logs_query(raw: &str) -> Result<(bool, u32), AppError> {
    let (mut follow, mut tail) = (false, DEFAULT_LOG_TAIL);
    for (k, v) in canopy_core::list::form_pairs(raw)? {
        match k.as_str() {
            "follow" => {
                follow = match v.trim() {
                    "true" | "1" => true,
                    "false" | "0" | "" => false,
                    _ => {
                        return Err(AppError::Invalid(format!(
                            "invalid follow {v:?}: must be true or false"
                        )));
                    }
                }
            }
            "tail" => {
                tail = v
                    .trim()
                    .parse()
                    .ok()
                    .filter(|t| *t <= MAX_LOG_TAIL)
                    .ok_or_else(|| {
                        AppError::Invalid(format!(
                            "invalid tail {v:?}: must be a whole number from 0 to {MAX_LOG_TAIL}"
                        ))
                    })?
            }
            other => {
                return Err(AppError::Invalid(format!(
                    "unknown query parameter {other:?}"
                )));
            }
        }
    }
    Ok((follow, tail))
}

/// The tunnel's bytes as a streamed `text/plain` body, ending when the tunnel does (or when
/// the client goes away: the body is dropped, and the tunnel with it). Public for the web
/// console's log streams.
pub fn stream_logs(tunnel: OpenTunnel) -> Response {
    let OpenTunnel { io, ended } = tunnel;
    let stream = futures::stream::unfold(
        (io, ended, vec![0u8; CHUNK], false),
        |(mut io, mut ended, mut buf, done)| async move {
            if done {
                return None;
            }
            tokio::select! {
                n = io.read(&mut buf) => match n {
                    Ok(0) => None,
                    Ok(n) => {
                        let chunk = Bytes::copy_from_slice(&buf[..n]);
                        Some((Ok::<_, io::Error>(chunk), (io, ended, buf, false)))
                    }
                    Err(e) => Some((Err(e), (io, ended, buf, true))),
                },
                reason = &mut ended => {
                    let note = Bytes::from(format!("\n[canopy: log stream ended: {reason}]\n"));
                    Some((Ok(note), (io, ended, buf, true)))
                }
            }
        },
    );
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// A VM's log (its serial output as the edge keeps it): the last `tail` lines, then with
/// `follow` new lines as they come, until the client goes away.
#[utoipa::path(get, path = "/canopy/v1/projects/{projectName}/resource/workloads/applications/{appId}/clusters/{clusterId}/virtual-machines/{vmId}/logs", tag = "Canopy",
    params(("projectName" = String, Path), ("appId" = String, Path), ("clusterId" = String, Path, description = "edge name or id"),
        ("vmId" = String, Path, description = "the VM's workload id"),
        ("tail" = Option<u32>, Query, description = "lines of the past to send first (default 100, at most 10000)"),
        ("follow" = Option<bool>, Query, description = "keep streaming new lines (default false)")),
    responses((status = 200, content_type = "text/plain", body = String, description = "the log, streamed"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "the edge did not open the tunnel in time (it may be offline), or tunnel limits reached")))]
pub async fn vm_logs(
    State(app): State<App>,
    Path((project, app_id, cluster, vm)): Path<(String, String, String, String)>,
    RawQuery(q): RawQuery,
    caller: Caller,
) -> ApiResult<Response> {
    let (follow, tail) = parse_logs_query(q.as_deref().unwrap_or(""))?;
    let c = caller.ctx(&app, &project).await?;
    let tunnel = app
        .open_vm_tunnel(
            &c,
            &app_id,
            &cluster,
            &vm,
            TunnelKind::Logs { follow, tail },
        )
        .await?;
    Ok(stream_logs(tunnel))
}

/// A container's log (stdout and stderr): the last `tail` lines, then with `follow` new lines
/// as they come, until the client goes away.
#[utoipa::path(get, path = "/canopy/v1/projects/{projectName}/resource/workloads/applications/{appId}/clusters/{clusterId}/containers/{containerName}/logs", tag = "Canopy",
    params(("projectName" = String, Path), ("appId" = String, Path), ("clusterId" = String, Path, description = "edge name or id"),
        ("containerName" = String, Path, description = "the container's name in the template"),
        ("tail" = Option<u32>, Query, description = "lines of the past to send first (default 100, at most 10000)"),
        ("follow" = Option<bool>, Query, description = "keep streaming new lines (default false)")),
    responses((status = 200, content_type = "text/plain", body = String, description = "the log, streamed"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "the edge did not open the tunnel in time (it may be offline), or tunnel limits reached")))]
pub async fn container_logs(
    State(app): State<App>,
    Path((project, app_id, cluster, container)): Path<(String, String, String, String)>,
    RawQuery(q): RawQuery,
    caller: Caller,
) -> ApiResult<Response> {
    let (follow, tail) = parse_logs_query(q.as_deref().unwrap_or(""))?;
    let c = caller.ctx(&app, &project).await?;
    let tunnel = app
        .open_container_logs(&c, &app_id, &cluster, &container, follow, tail)
        .await?;
    Ok(stream_logs(tunnel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_queries_are_strict() {
        assert_eq!(parse_logs_query("").unwrap(), (false, 100));
        assert_eq!(parse_logs_query("tail=5&follow=true").unwrap(), (true, 5));
        for (raw, name) in [
            ("tail=10001", "tail"),
            ("tail=-1", "tail"),
            ("follow=maybe", "follow"),
            ("since=1", "since"),
        ] {
            let e = parse_logs_query(raw).unwrap_err().to_string();
            assert!(e.contains(name), "{raw}: {e}");
        }
    }

    #[test]
    fn waits_are_capped() {
        assert_eq!(parse_wait("").unwrap(), Duration::from_secs(25));
        assert_eq!(
            parse_wait("waitSeconds=600").unwrap(),
            Duration::from_secs(u64::from(MAX_WAIT_SECONDS))
        );
        assert!(parse_wait("waitSeconds=x").is_err());
        assert!(parse_wait("after=1").is_err());
    }
}
