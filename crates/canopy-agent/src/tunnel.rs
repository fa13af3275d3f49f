//! Tunnels from users to this edge's workloads (VNC, serial console, logs), always opened by the
//! agent, outbound: the control plane asks for one ([`canopy_proto::TunnelRequest`]), the driver
//! opens the local end ([`crate::Converger::open_tunnel`] gives a [`TunnelIo`]), and the agent
//! connects it to the control plane and copies bytes until either side closes.
//!
//! The loop ([`tunnel_loop`]) runs next to the desired-state poller in the sync loop: it
//! long-polls tunnel requests, and for each asks the driver for the local end against the
//! current desired state, then connects it with an HTTP/1.1 upgrade and copies (both ways for
//! a console; one way, then closing its write side, for logs). A local end that cannot be
//! opened (no such VM, no VNC, unsupported) is reported to the control plane so the user sees
//! why at once. Sessions are driven inside the loop's own future (the driver is borrowed), so
//! none outlives the agent's run, and at most [`MAX_TUNNELS`] are open at once.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use canopy_proto::{DesiredState, TunnelRequest, TunnelRequests, TunnelTarget, WorkloadKind};
use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use reqwest::Upgraded;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::backoff::Backoff;
use crate::client::AgentClient;
use crate::config::AgentConfig;
use crate::converger::Converger;
use crate::error::AgentError;

/// Something that reads and writes bytes (a TCP or Unix socket to VNC or a serial console).
pub trait TunnelDuplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> TunnelDuplex for T {}

/// The local end of a tunnel, as the driver opened it.
pub enum TunnelIo {
    /// Bytes both ways (VNC, serial console).
    Duplex(Box<dyn TunnelDuplex>),
    /// Bytes from the edge only (logs); the tunnel ends when the stream does.
    Source(Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>),
}

impl std::fmt::Debug for TunnelIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TunnelIo::Duplex(_) => f.write_str("TunnelIo::Duplex"),
            TunnelIo::Source(_) => f.write_str("TunnelIo::Source"),
        }
    }
}

// ------------------------------------------------------------------ the tunnel loop

/// Most tunnels this agent keeps open at once; requests beyond are answered with an error.
pub const MAX_TUNNELS: usize = 16;
/// Longest time the driver may take to open a tunnel's local end, and the agent to connect
/// it to the control plane (the user waits for both; the control plane gives up after 15 s).
const OPEN_WITHIN: Duration = Duration::from_secs(15);
/// Bytes copied at once.
const CHUNK: usize = 16 * 1024;

/// Long-polls tunnel requests and serves each (see the module doc) until a fatal error, which
/// it returns. Sessions run inside this future (no spawned task), so dropping it closes them.
pub(crate) async fn tunnel_loop<C: Converger>(
    client: &AgentClient,
    config: &AgentConfig,
    converger: &C,
    desired_rx: watch::Receiver<Option<Arc<DesiredState>>>,
) -> AgentError {
    let client = match &config.tunnel_http_client {
        Some(http) => client.clone().with_upgrade_client(http.clone()),
        None => client.clone(),
    };
    let wait = config.poll_wait.max(Duration::from_secs(1));
    let mut backoff = config.backoff.clone();
    let mut last_error: Option<String> = None;
    let mut sessions = FuturesUnordered::new();
    let mut refusals = FuturesUnordered::new();
    let poll = poll_once(&client, wait, None);
    let mut poll = std::pin::pin!(poll);
    loop {
        tokio::select! {
            answer = &mut poll => {
                let delay = match answer {
                    Ok(requests) => {
                        backoff.reset();
                        if last_error.take().is_some() {
                            info!("tunnel requests can be fetched again");
                        }
                        for request in requests.map(|r| r.tunnels).unwrap_or_default() {
                            if sessions.len() >= MAX_TUNNELS {
                                let why = format!(
                                    "the agent already has its maximum of {MAX_TUNNELS} tunnels \
                                     open; close one and retry"
                                );
                                warn!(tunnel = %short(&request.id), "refusing a tunnel: {why}");
                                refusals.push(report(&client, request.id, why, config.backoff.clone()));
                            } else {
                                let desired = desired_rx.borrow().clone();
                                sessions.push(session(&client, converger, desired, request, config.backoff.clone()));
                            }
                        }
                        None
                    }
                    Err(e) if e.is_fatal() => return e,
                    Err(e) => {
                        let text = e.chain();
                        if last_error.as_deref() != Some(text.as_str()) {
                            warn!(error = %text, "cannot fetch tunnel requests; retrying with backoff");
                            last_error = Some(text);
                        }
                        Some(backoff.delay_for(&e))
                    }
                };
                poll.set(poll_once(&client, wait, delay));
            }
            Some(()) = sessions.next(), if !sessions.is_empty() => {}
            Some(()) = refusals.next(), if !refusals.is_empty() => {}
        }
    }
}

/// One long-poll for tunnel requests, after `delay` when retrying.
async fn poll_once(
    client: &AgentClient,
    wait: Duration,
    delay: Option<Duration>,
) -> Result<Option<TunnelRequests>, AgentError> {
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    client.tunnels(wait).await
}

/// The first characters of a tunnel id, for logs (enough to correlate, not the whole id).
fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

/// A tunnel target in a few words, for logs.
fn describe(target: &TunnelTarget) -> String {
    match target {
        TunnelTarget::Vnc {
            deployment_id,
            app,
            vm,
        } => format!("VNC of vm {vm} (app {app}, deployment {deployment_id})"),
        TunnelTarget::Serial {
            deployment_id,
            app,
            vm,
        } => format!("serial console of vm {vm} (app {app}, deployment {deployment_id})"),
        TunnelTarget::Logs {
            deployment_id,
            app,
            kind,
            workload,
            ..
        } => {
            let noun = match kind {
                WorkloadKind::Vm => "vm",
                WorkloadKind::Pod => "container",
            };
            format!("logs of {noun} {workload} (app {app}, deployment {deployment_id})")
        }
    }
}

/// Serves one tunnel request: opens the local end, connects it to the control plane, copies
/// until either side closes. A local end that cannot be opened is reported to the user.
async fn session<C: Converger>(
    client: &AgentClient,
    converger: &C,
    desired: Option<Arc<DesiredState>>,
    request: TunnelRequest,
    backoff: Backoff,
) {
    let span =
        info_span!("tunnel", tunnel = %short(&request.id), target = %describe(&request.target));
    async move {
        let Some(desired) = desired else {
            let why = "this edge has not received its desired state yet".to_string();
            report(client, request.id, why, backoff).await;
            return;
        };
        let opened = tokio::time::timeout(
            OPEN_WITHIN,
            converger.open_tunnel(&desired, &request.target),
        )
        .await;
        let local = match opened {
            Ok(Ok(local)) => local,
            Ok(Err(e)) => {
                let why = e.chain();
                info!(error = %why, "cannot open the tunnel's local end; telling the user");
                report(client, request.id, why, backoff).await;
                return;
            }
            Err(_) => {
                let why = format!(
                    "opening the local end took longer than {} s",
                    OPEN_WITHIN.as_secs()
                );
                warn!("{why}");
                report(client, request.id, why, backoff).await;
                return;
            }
        };
        let Some(remote) = connect(client, &request.id, backoff).await else {
            return;
        };
        debug!("tunnel open");
        let result = match local {
            TunnelIo::Duplex(local) => splice(local, remote).await,
            TunnelIo::Source(source) => pump(source, remote).await,
        };
        match result {
            Ok(()) => debug!("tunnel closed"),
            Err(e) => debug!(error = %e, "tunnel ended with an error"),
        }
    }
    .instrument(span)
    .await
}

/// Connects tunnel `id` to the control plane, retrying transient failures within
/// [`OPEN_WITHIN`]; `None` (logged) when it cannot.
async fn connect(client: &AgentClient, id: &str, mut backoff: Backoff) -> Option<Upgraded> {
    let deadline = tokio::time::Instant::now() + OPEN_WITHIN;
    loop {
        match client.open_tunnel(id).await {
            Ok(remote) => return Some(remote),
            Err(e) if e.is_transient() => {
                let delay = backoff.delay_for(&e);
                if tokio::time::Instant::now() + delay >= deadline {
                    warn!(error = %e.chain(), "cannot connect the tunnel to the control plane; giving up");
                    return None;
                }
                debug!(error = %e.chain(), "cannot connect the tunnel yet; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(e) => {
                // 404: the user went away (or the request expired) meanwhile.
                info!(error = %e.chain(), "the control plane refused the tunnel connection");
                return None;
            }
        }
    }
}

/// Tells the control plane why tunnel `id` cannot be opened, retrying transient failures
/// within [`OPEN_WITHIN`].
async fn report(client: &AgentClient, id: String, why: String, mut backoff: Backoff) {
    let deadline = tokio::time::Instant::now() + OPEN_WITHIN;
    loop {
        match client.tunnel_error(&id, &why).await {
            Ok(()) => return,
            Err(e) if e.is_transient() => {
                let delay = backoff.delay_for(&e);
                if tokio::time::Instant::now() + delay >= deadline {
                    warn!(tunnel = %short(&id), error = %e.chain(), "cannot report a tunnel error; giving up");
                    return;
                }
                tokio::time::sleep(delay).await;
            }
            Err(e) => {
                debug!(tunnel = %short(&id), error = %e.chain(), "tunnel error report refused");
                return;
            }
        }
    }
}

/// Copies both ways until either side closes (then closes the other's write side).
async fn splice(local: Box<dyn TunnelDuplex>, remote: Upgraded) -> std::io::Result<()> {
    let (mut local_rd, mut local_wr) = tokio::io::split(local);
    let (mut remote_rd, mut remote_wr) = tokio::io::split(remote);
    tokio::select! {
        r = forward(&mut local_rd, &mut remote_wr) => {
            let _ = remote_wr.shutdown().await;
            r
        }
        r = forward(&mut remote_rd, &mut local_wr) => {
            let _ = local_wr.shutdown().await;
            r
        }
    }
}

/// Copies `from` to `to` until `from` ends, flushing each chunk (consoles are interactive).
async fn forward(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
) -> std::io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
    }
}

/// Writes a source's chunks to the control plane until it ends (then closes the write side),
/// or until the control plane closes (the user went away).
async fn pump(
    mut source: Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>,
    remote: Upgraded,
) -> std::io::Result<()> {
    let (mut remote_rd, mut remote_wr) = tokio::io::split(remote);
    let mut ignored = [0u8; 512];
    loop {
        tokio::select! {
            chunk = source.next() => match chunk {
                Some(Ok(bytes)) => {
                    remote_wr.write_all(&bytes).await?;
                    remote_wr.flush().await?;
                }
                Some(Err(e)) => {
                    let _ = remote_wr.shutdown().await;
                    return Err(e);
                }
                None => break,
            },
            n = remote_rd.read(&mut ignored) => match n {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => {}
            },
        }
    }
    remote_wr.shutdown().await
}
