//! The tunnel broker: connects a user's console or log request to the edge that runs the
//! workload, although an edge never accepts inbound connections.
//!
//! Why a broker: edges sit behind NAT and firewalls, so the control plane cannot dial them. A
//! user's request ([`Tunnels::request`]) is instead queued for the edge under a random,
//! single-use id; the edge's agent, which long-polls for tunnel requests
//! ([`Tunnels::wait_requests`]), opens the local end (VNC, serial console, logs) and then
//! connects *outbound* to the control plane with an HTTP/1.1 upgrade on that id
//! ([`Tunnels::claim`]); the upgraded connection is handed to the waiting user request, which
//! splices it to the user's connection. When the agent cannot open the local end it says why
//! ([`Tunnels::report_error`]) and the user gets that message instead of a timeout.
//!
//! Everything is keyed by edge id, and edges belong to one project, so a tunnel can only be
//! claimed by the edge it was asked of. State lives in memory only: a request lives exactly as
//! long as the user waits for it (dropping the waiting future removes it), so nothing needs
//! reaping and a restart forgets nothing that matters. Capacity is bounded per edge (requests
//! waiting, tunnels open) and per process (tunnels open), with errors that say which limit.
//!
//! With several replicas on one PostgreSQL database the user's request, the agent's long-poll
//! and the agent's claim may each land on a different process: [`peer`] carries requests
//! between them (their *remote* entries here, which expire) and relays a claim to the replica
//! that holds the user's request. One process alone works exactly as before.

pub mod peer;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use std::sync::OnceLock;

use canopy_proto::{TunnelRequest, TunnelTarget};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, oneshot};

/// How long a user waits for the agent to open a tunnel, by default.
pub const DEFAULT_CLAIM_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest another replica's request is kept here, whatever it asks.
pub const MAX_REMOTE_TTL: Duration = Duration::from_secs(120);

/// Capacity of the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelLimits {
    /// Requests waiting for one edge's agent at once.
    pub max_pending_per_edge: usize,
    /// Tunnels of one edge at once, open or waiting.
    pub max_open_per_edge: usize,
    /// Tunnels in the process at once, open or waiting.
    pub max_open_total: usize,
    /// How long a user waits for the agent to open a tunnel.
    pub claim_timeout: Duration,
}

impl Default for TunnelLimits {
    fn default() -> Self {
        TunnelLimits {
            max_pending_per_edge: 16,
            max_open_per_edge: 16,
            max_open_total: 2_000,
            claim_timeout: DEFAULT_CLAIM_TIMEOUT,
        }
    }
}

/// Why a tunnel could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunnelError {
    #[error(
        "edge {edge} already has {max} tunnel requests waiting for its agent; retry when they \
         are answered"
    )]
    TooManyPending { edge: String, max: usize },
    #[error("edge {edge} already has its maximum of {max} tunnels open; close one and retry")]
    TooManyOpen { edge: String, max: usize },
    #[error("the control plane holds its maximum of {max} tunnels; retry later")]
    ServerFull { max: usize },
    #[error(
        "the agent of edge {edge} did not open the tunnel within {} s: the edge may be offline \
         or unreachable",
        after.as_secs()
    )]
    TimedOut { edge: String, after: Duration },
    #[error("the agent of edge {edge} could not open the tunnel: {message}")]
    Agent { edge: String, message: String },
    #[error("edge {edge} was removed")]
    EdgeGone { edge: String },
    #[error("the agent of edge {edge} connected but the tunnel failed: {reason}")]
    Broken { edge: String, reason: String },
}

/// A byte stream both ways (the agent's upgraded connection).
pub trait TunnelStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> TunnelStream for T {}

/// The agent's side of a claimed tunnel, once its connection is upgraded.
pub type Connecting = Pin<Box<dyn Future<Output = io::Result<Box<dyn TunnelStream>>> + Send>>;

/// What the agent answered to a request.
enum Answer {
    Connected(Connecting),
    Failed(String),
    EdgeGone,
}

/// A request waiting for its agent.
struct Pending {
    target: TunnelTarget,
    /// Handed to the agent by a long-poll already.
    delivered: bool,
    origin: Origin,
}

/// Where the user who asked for a request waits.
enum Origin {
    /// In this process.
    Local(oneshot::Sender<Answer>),
    /// On another replica, which the agent's claim is relayed to; forgotten at `expires`.
    Remote {
        peer: Arc<peer::PeerAddr>,
        expires: tokio::time::Instant,
    },
}

#[derive(Default)]
struct EdgeTunnels {
    pending: HashMap<String, Pending>,
    /// Tunnels of this edge open or waiting (one per live [`Permit`]).
    open: usize,
    /// Long-polls waiting on `notify`.
    waiters: usize,
    notify: Arc<Notify>,
}

impl EdgeTunnels {
    fn idle(&self) -> bool {
        self.pending.is_empty() && self.open == 0 && self.waiters == 0
    }
}

#[derive(Default)]
struct State {
    limits: TunnelLimits,
    edges: HashMap<String, EdgeTunnels>,
    open_total: usize,
    /// Remote entries (requests of other replicas) held, over every edge.
    remote_total: usize,
}

impl State {
    /// Removes request `id` of `edge` (local or remote), keeping the counts right.
    fn remove(&mut self, edge: &str, id: &str) -> Option<Pending> {
        let p = self.edges.get_mut(edge)?.pending.remove(id)?;
        if matches!(p.origin, Origin::Remote { .. }) {
            self.remote_total = self.remote_total.saturating_sub(1);
        }
        Some(p)
    }

    /// Forgets remote entries past their expiry, and edges left with nothing.
    fn purge_expired(&mut self, now: tokio::time::Instant) {
        if self.remote_total == 0 {
            return;
        }
        let mut gone = 0;
        self.edges.retain(|_, e| {
            e.pending.retain(|_, p| match p.origin {
                Origin::Remote { expires, .. } if expires <= now => {
                    gone += 1;
                    false
                }
                _ => true,
            });
            !e.idle()
        });
        self.remote_total = self.remote_total.saturating_sub(gone);
    }
}

/// The broker (see the module doc). Cheap to share behind an `Arc`.
pub struct Tunnels {
    state: Arc<Mutex<State>>,
    /// Set when this process is one of several replicas (see [`peer`]).
    replication: OnceLock<peer::Replication>,
}

impl Default for Tunnels {
    fn default() -> Self {
        Tunnels::new(TunnelLimits::default())
    }
}

/// A fresh tunnel id: 256 random bits from the OS generator, hex.
fn new_id() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Tunnels {
    pub fn new(limits: TunnelLimits) -> Tunnels {
        Tunnels {
            state: Arc::new(Mutex::new(State {
                limits,
                ..State::default()
            })),
            replication: OnceLock::new(),
        }
    }

    /// Makes this broker one of several replicas' (once; later calls are ignored): requests
    /// are published to the others, and their requests are accepted as remote entries.
    pub fn set_replication(&self, replication: peer::Replication) {
        let _ = self.replication.set(replication);
    }

    /// The replication in force, when this process is one of several replicas.
    pub fn replication(&self) -> Option<&peer::Replication> {
        self.replication.get()
    }

    /// The limits in force.
    pub fn limits(&self) -> TunnelLimits {
        lock(&self.state).limits
    }

    /// Changes the limits (for requests made from now on).
    pub fn set_limits(&self, limits: TunnelLimits) {
        lock(&self.state).limits = limits;
    }

    /// Asks edge `edge_id`'s agent to open a tunnel to `target` and waits up to `timeout` for
    /// it to connect. The request is withdrawn when this future is dropped or times out.
    pub async fn request(
        &self,
        edge_id: &str,
        target: TunnelTarget,
        timeout: Duration,
    ) -> Result<Tunnel, TunnelError> {
        let id = new_id();
        let (tx, rx) = oneshot::channel();
        let permit = {
            let mut st = lock(&self.state);
            let limits = st.limits;
            if st.open_total >= limits.max_open_total {
                return Err(TunnelError::ServerFull {
                    max: limits.max_open_total,
                });
            }
            let e = st.edges.entry(edge_id.to_string()).or_default();
            if e.pending.len() >= limits.max_pending_per_edge {
                return Err(TunnelError::TooManyPending {
                    edge: edge_id.to_string(),
                    max: limits.max_pending_per_edge,
                });
            }
            if e.open >= limits.max_open_per_edge {
                return Err(TunnelError::TooManyOpen {
                    edge: edge_id.to_string(),
                    max: limits.max_open_per_edge,
                });
            }
            e.pending.insert(
                id.clone(),
                Pending {
                    target: target.clone(),
                    delivered: false,
                    origin: Origin::Local(tx),
                },
            );
            e.open += 1;
            e.notify.notify_waiters();
            st.open_total += 1;
            Permit {
                state: self.state.clone(),
                edge: edge_id.to_string(),
            }
        };
        // Withdraws the request however this future ends.
        let _withdraw = Withdraw {
            broker: self,
            edge: edge_id,
            id: &id,
        };
        if let Some(r) = self.replication() {
            r.asked(&id, edge_id, target, timeout);
        }
        let edge = || edge_id.to_string();
        let timed_out = || TunnelError::TimedOut {
            edge: edge(),
            after: timeout,
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let answer = tokio::time::timeout_at(deadline, rx)
            .await
            .map_err(|_| timed_out())?
            .map_err(|_| TunnelError::EdgeGone { edge: edge() })?;
        match answer {
            Answer::Failed(message) => Err(TunnelError::Agent {
                edge: edge(),
                message,
            }),
            Answer::EdgeGone => Err(TunnelError::EdgeGone { edge: edge() }),
            Answer::Connected(connecting) => {
                let io = tokio::time::timeout_at(deadline, connecting)
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(|e| TunnelError::Broken {
                        edge: edge(),
                        reason: e.to_string(),
                    })?;
                Ok(Tunnel {
                    io,
                    _permit: permit,
                })
            }
        }
    }

    /// The requests of `edge_id` not yet handed to its agent (now marked handed).
    pub fn take_requests(&self, edge_id: &str) -> Vec<TunnelRequest> {
        let mut st = lock(&self.state);
        st.purge_expired(tokio::time::Instant::now());
        let Some(e) = st.edges.get_mut(edge_id) else {
            return Vec::new();
        };
        let mut out: Vec<TunnelRequest> = e
            .pending
            .iter_mut()
            .filter(|(_, p)| !p.delivered)
            .map(|(id, p)| {
                p.delivered = true;
                TunnelRequest {
                    id: id.clone(),
                    target: p.target.clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// The agent's long-poll: requests not yet handed out, waiting up to `wait` for one
    /// (empty when none came, or when `stop` resolves first).
    pub async fn wait_requests(
        &self,
        edge_id: &str,
        wait: Duration,
        stop: impl Future<Output = ()>,
    ) -> Vec<TunnelRequest> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut stop = std::pin::pin!(stop);
        loop {
            let notify = {
                let mut st = lock(&self.state);
                let e = st.edges.entry(edge_id.to_string()).or_default();
                if e.pending.values().any(|p| !p.delivered) {
                    drop(st);
                    let got = self.take_requests(edge_id);
                    if !got.is_empty() {
                        return got;
                    }
                    continue;
                }
                e.waiters += 1;
                e.notify.clone()
            };
            let _leave = Leave {
                state: &self.state,
                edge: edge_id,
            };
            // `notify_waiters` wakes only futures that exist: register first, then look again,
            // so a request queued in between is not missed.
            let notified = notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let ready = {
                let st = lock(&self.state);
                st.edges
                    .get(edge_id)
                    .is_some_and(|e| e.pending.values().any(|p| !p.delivered))
            };
            if !ready {
                tokio::select! {
                    () = notified => {}
                    () = tokio::time::sleep_until(deadline) => return Vec::new(),
                    () = &mut stop => return Vec::new(),
                }
            }
            let got = self.take_requests(edge_id);
            if !got.is_empty() {
                return got;
            }
            if tokio::time::Instant::now() >= deadline {
                return Vec::new();
            }
        }
    }

    /// The agent of `edge_id` connects to tunnel `id`: hands it the request's answer, once.
    /// `None` when no such request waits for this edge (unknown, already claimed, withdrawn, or
    /// asked of another edge).
    pub fn claim(&self, edge_id: &str, id: &str) -> Option<Claim> {
        let mut st = lock(&self.state);
        let e = st.edges.get_mut(edge_id)?;
        if !matches!(e.pending.get(id)?.origin, Origin::Local(_)) {
            return None;
        }
        match e.pending.remove(id)?.origin {
            Origin::Local(answer) => Some(Claim { answer }),
            Origin::Remote { .. } => None,
        }
    }

    /// Queues another replica's request `id` for `edge_id`'s agent until `ttl` passes (or the
    /// request ends: [`Tunnels::drop_remote`]). False, and nothing queued, when this edge
    /// already has its maximum of requests waiting here, or the process its maximum of remote
    /// entries (the open-tunnel maximum), or the id is taken.
    pub fn add_remote(
        &self,
        edge_id: &str,
        id: &str,
        target: TunnelTarget,
        peer: Arc<peer::PeerAddr>,
        ttl: Duration,
    ) -> bool {
        let now = tokio::time::Instant::now();
        let mut st = lock(&self.state);
        st.purge_expired(now);
        let limits = st.limits;
        if st.remote_total >= limits.max_open_total {
            return false;
        }
        let e = st.edges.entry(edge_id.to_string()).or_default();
        if e.pending.len() >= limits.max_pending_per_edge || e.pending.contains_key(id) {
            if e.idle() {
                st.edges.remove(edge_id);
            }
            return false;
        }
        e.pending.insert(
            id.to_string(),
            Pending {
                target,
                delivered: false,
                origin: Origin::Remote {
                    peer,
                    expires: now + ttl.min(MAX_REMOTE_TTL),
                },
            },
        );
        e.notify.notify_waiters();
        st.remote_total += 1;
        true
    }

    /// Forgets another replica's request `id` (it ended there).
    pub fn drop_remote(&self, edge_id: &str, id: &str) {
        let mut st = lock(&self.state);
        if let Some(e) = st.edges.get(edge_id)
            && matches!(
                e.pending.get(id).map(|p| &p.origin),
                Some(Origin::Remote { .. })
            )
        {
            st.remove(edge_id, id);
            if st.edges.get(edge_id).is_some_and(EdgeTunnels::idle) {
                st.edges.remove(edge_id);
            }
        }
    }

    /// Takes another replica's request `id` of `edge_id` (the agent claims it here): the
    /// replica to relay to. `None` when no such remote entry is held.
    pub fn take_remote(&self, edge_id: &str, id: &str) -> Option<Arc<peer::PeerAddr>> {
        let mut st = lock(&self.state);
        st.purge_expired(tokio::time::Instant::now());
        let e = st.edges.get(edge_id)?;
        if !matches!(e.pending.get(id)?.origin, Origin::Remote { .. }) {
            return None;
        }
        let p = st.remove(edge_id, id)?;
        if st.edges.get(edge_id).is_some_and(EdgeTunnels::idle) {
            st.edges.remove(edge_id);
        }
        match p.origin {
            Origin::Remote { peer, .. } => Some(peer),
            Origin::Local(_) => None,
        }
    }

    /// [`Tunnels::take_remote`], waiting up to `wait` for the entry to arrive (this replica
    /// may hear of a request a moment after the one that handed it to the agent). Returns at
    /// once when the request waits here instead (a local claim).
    pub async fn take_remote_within(
        &self,
        edge_id: &str,
        id: &str,
        wait: Duration,
    ) -> Option<Arc<peer::PeerAddr>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notify = {
                let mut st = lock(&self.state);
                let e = st.edges.entry(edge_id.to_string()).or_default();
                e.waiters += 1;
                e.notify.clone()
            };
            let _leave = Leave {
                state: &self.state,
                edge: edge_id,
            };
            let notified = notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(peer) = self.take_remote(edge_id, id) {
                return Some(peer);
            }
            let local = lock(&self.state)
                .edges
                .get(edge_id)
                .is_some_and(|e| e.pending.contains_key(id));
            if local {
                return None;
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(deadline) => return self.take_remote(edge_id, id),
            }
        }
    }

    /// One tunnel relayed through this process to another replica, counted against the same
    /// limits as a tunnel asked here (per edge and per process) until the permit drops.
    pub fn relay_permit(&self, edge_id: &str) -> Result<Permit, TunnelError> {
        let mut st = lock(&self.state);
        let limits = st.limits;
        if st.open_total >= limits.max_open_total {
            return Err(TunnelError::ServerFull {
                max: limits.max_open_total,
            });
        }
        let e = st.edges.entry(edge_id.to_string()).or_default();
        if e.open >= limits.max_open_per_edge {
            let e = TunnelError::TooManyOpen {
                edge: edge_id.to_string(),
                max: limits.max_open_per_edge,
            };
            if st.edges.get(edge_id).is_some_and(EdgeTunnels::idle) {
                st.edges.remove(edge_id);
            }
            return Err(e);
        }
        e.open += 1;
        st.open_total += 1;
        Ok(Permit {
            state: self.state.clone(),
            edge: edge_id.to_string(),
        })
    }

    /// Remote entries held (requests of other replicas), over every edge.
    pub fn remote_count(&self) -> usize {
        let mut st = lock(&self.state);
        st.purge_expired(tokio::time::Instant::now());
        st.remote_total
    }

    /// The agent of `edge_id` could not open tunnel `id`: the waiting user gets `message`.
    /// False when no such request waits for this edge.
    pub fn report_error(&self, edge_id: &str, id: &str, message: String) -> bool {
        match self.claim(edge_id, id) {
            Some(c) => {
                let _ = c.answer.send(Answer::Failed(message));
                true
            }
            None => false,
        }
    }

    /// Fails every request waiting for `edge_id` (the edge was removed).
    pub fn fail_edge(&self, edge_id: &str) {
        let mut st = lock(&self.state);
        let mut remote = 0;
        if let Some(e) = st.edges.get_mut(edge_id) {
            for (_, p) in e.pending.drain() {
                match p.origin {
                    Origin::Local(answer) => {
                        let _ = answer.send(Answer::EdgeGone);
                    }
                    Origin::Remote { .. } => remote += 1,
                }
            }
            e.notify.notify_waiters();
        }
        st.remote_total = st.remote_total.saturating_sub(remote);
    }

    /// Tunnels open or waiting: (in the process, of `edge_id`).
    pub fn open_counts(&self, edge_id: &str) -> (usize, usize) {
        let st = lock(&self.state);
        (st.open_total, st.edges.get(edge_id).map_or(0, |e| e.open))
    }
}

/// A claimed request: answer it with the agent's connection (or drop it: the user gets an
/// error at once).
pub struct Claim {
    answer: oneshot::Sender<Answer>,
}

impl Claim {
    /// Hands the agent's connection (still upgrading) to the waiting user request. False when
    /// the user went away meanwhile.
    pub fn connect(self, connecting: Connecting) -> bool {
        self.answer.send(Answer::Connected(connecting)).is_ok()
    }

    /// Whether the user still waits.
    pub fn is_waiting(&self) -> bool {
        !self.answer.is_closed()
    }
}

/// Removes a request when its waiting future ends (and tells the other replicas).
struct Withdraw<'a> {
    broker: &'a Tunnels,
    edge: &'a str,
    id: &'a str,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        lock(&self.broker.state).remove(self.edge, self.id);
        if let Some(r) = self.broker.replication() {
            r.ended(self.id, self.edge);
        }
    }
}

/// Leaves a long-poll's waiter count when it ends.
struct Leave<'a> {
    state: &'a Mutex<State>,
    edge: &'a str,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let mut st = lock(self.state);
        if let Some(e) = st.edges.get_mut(self.edge) {
            e.waiters = e.waiters.saturating_sub(1);
            if e.idle() {
                st.edges.remove(self.edge);
            }
        }
    }
}

/// One tunnel counted against the limits, from request to close.
pub struct Permit {
    state: Arc<Mutex<State>>,
    edge: String,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit").field("edge", &self.edge).finish()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut st = lock(&self.state);
        st.open_total = st.open_total.saturating_sub(1);
        if let Some(e) = st.edges.get_mut(&self.edge) {
            e.open = e.open.saturating_sub(1);
            if e.idle() {
                st.edges.remove(&self.edge);
            }
        }
    }
}

/// An open tunnel: the agent's connection, bytes both ways. Counted against the limits until
/// dropped.
pub struct Tunnel {
    io: Box<dyn TunnelStream>,
    _permit: Permit,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("edge", &self._permit.edge)
            .finish()
    }
}

impl AsyncRead for Tunnel {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn logs() -> TunnelTarget {
        TunnelTarget::Logs {
            deployment_id: "d".into(),
            app: "a".into(),
            kind: canopy_proto::WorkloadKind::Pod,
            workload: "c".into(),
            follow: false,
            tail: 10,
        }
    }

    fn small() -> Arc<Tunnels> {
        Arc::new(Tunnels::new(TunnelLimits {
            max_pending_per_edge: 2,
            max_open_per_edge: 3,
            max_open_total: 4,
            claim_timeout: DEFAULT_CLAIM_TIMEOUT,
        }))
    }

    /// Waits for one request of `edge` and claims it.
    async fn next_claim(t: &Tunnels, edge: &str) -> (TunnelRequest, Claim) {
        let got = t
            .wait_requests(edge, Duration::from_secs(5), std::future::pending())
            .await;
        let req = got.into_iter().next().expect("a request");
        let claim = t.claim(edge, &req.id).expect("claimable");
        (req, claim)
    }

    #[tokio::test]
    async fn a_claimed_tunnel_carries_bytes_both_ways() {
        let t = small();
        let user = tokio::spawn({
            let t = t.clone();
            async move { t.request("e1", logs(), Duration::from_secs(5)).await }
        });
        let (req, claim) = next_claim(&t, "e1").await;
        assert_eq!(req.target, logs());
        assert!(req.id.len() >= 32, "at least 128 bits: {}", req.id);
        let (agent_end, server_end) = tokio::io::duplex(64);
        assert!(claim.connect(Box::pin(async move {
            Ok(Box::new(server_end) as Box<dyn TunnelStream>)
        })));
        let mut tunnel = user.await.unwrap().unwrap();
        let mut agent_end = agent_end;
        agent_end.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        tunnel.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        tunnel.write_all(b"back").await.unwrap();
        let mut buf = [0u8; 4];
        agent_end.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"back");
        assert_eq!(t.open_counts("e1"), (1, 1));
        drop(tunnel);
        assert_eq!(t.open_counts("e1"), (0, 0));
        assert!(lock(&t.state).edges.is_empty(), "nothing left behind");
    }

    #[tokio::test]
    async fn only_the_edge_asked_may_claim_once() {
        let t = small();
        let user = tokio::spawn({
            let t = t.clone();
            async move { t.request("e1", logs(), Duration::from_secs(5)).await }
        });
        let got = t
            .wait_requests("e1", Duration::from_secs(5), std::future::pending())
            .await;
        let id = got[0].id.clone();
        assert!(t.claim("e2", &id).is_none(), "another edge");
        assert!(
            t.take_requests("e1").is_empty(),
            "handed out once per request"
        );
        let claim = t.claim("e1", &id).expect("its edge");
        assert!(t.claim("e1", &id).is_none(), "single use");
        drop(claim);
        let e = user.await.unwrap().unwrap_err();
        assert_eq!(e, TunnelError::EdgeGone { edge: "e1".into() });
    }

    #[tokio::test]
    async fn agent_errors_reach_the_user() {
        let t = small();
        let user = tokio::spawn({
            let t = t.clone();
            async move { t.request("e1", logs(), Duration::from_secs(5)).await }
        });
        let got = t
            .wait_requests("e1", Duration::from_secs(5), std::future::pending())
            .await;
        assert!(!t.report_error("e2", &got[0].id, "nope".into()));
        assert!(t.report_error("e1", &got[0].id, "vm x does not exist".into()));
        let e = user.await.unwrap().unwrap_err();
        assert!(e.to_string().contains("vm x does not exist"), "{e}");
        assert!(e.to_string().contains("e1"), "{e}");
    }

    #[tokio::test]
    async fn unclaimed_requests_expire_and_are_withdrawn() {
        let t = small();
        let e = t
            .request("e1", logs(), Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(e, TunnelError::TimedOut { .. }), "{e}");
        assert!(e.to_string().contains("offline"), "{e}");
        assert!(t.take_requests("e1").is_empty());
        assert!(lock(&t.state).edges.is_empty());
        // A user who goes away withdraws the request too.
        let waiting = tokio::spawn({
            let t = t.clone();
            async move { t.request("e1", logs(), Duration::from_secs(60)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        waiting.abort();
        let _ = waiting.await;
        assert_eq!(t.open_counts("e1"), (0, 0));
    }

    #[tokio::test]
    async fn limits_per_edge_and_in_all() {
        let t = small();
        let spawn = |edge: &'static str| {
            let t = t.clone();
            tokio::spawn(async move { t.request(edge, logs(), Duration::from_secs(5)).await })
        };
        let a1 = spawn("a");
        let a2 = spawn("a");
        // Let both register.
        while t.open_counts("a").1 < 2 {
            tokio::task::yield_now().await;
        }
        let e = t
            .request("a", logs(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            TunnelError::TooManyPending {
                edge: "a".into(),
                max: 2
            }
        );
        let b1 = spawn("b");
        let b2 = spawn("b");
        while t.open_counts("b").1 < 2 {
            tokio::task::yield_now().await;
        }
        let e = t
            .request("c", logs(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(e, TunnelError::ServerFull { max: 4 });
        t.fail_edge("a");
        for h in [a1, a2] {
            let e = h.await.unwrap().unwrap_err();
            assert_eq!(e, TunnelError::EdgeGone { edge: "a".into() });
        }
        for h in [b1, b2] {
            h.abort();
            let _ = h.await;
        }
        assert_eq!(t.open_counts("a"), (0, 0));
    }

    #[tokio::test]
    async fn long_polls_wake_on_a_request_and_end_on_stop() {
        let t = small();
        let poll = tokio::spawn({
            let t = t.clone();
            async move {
                t.wait_requests("e1", Duration::from_secs(10), std::future::pending())
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let user = tokio::spawn({
            let t = t.clone();
            async move { t.request("e1", logs(), Duration::from_secs(5)).await }
        });
        let got = tokio::time::timeout(Duration::from_secs(5), poll)
            .await
            .expect("woken at once")
            .unwrap();
        assert_eq!(got.len(), 1);
        user.abort();
        let started = std::time::Instant::now();
        let none = t
            .wait_requests("e1", Duration::from_secs(10), async {})
            .await;
        assert!(none.is_empty() && started.elapsed() < Duration::from_secs(1));
        let none = t
            .wait_requests("e1", Duration::from_millis(30), std::future::pending())
            .await;
        assert!(none.is_empty());
    }

    fn peer() -> Arc<peer::PeerAddr> {
        Arc::new(peer::PeerAddr {
            url: "http://10.0.0.2:7070".into(),
            fingerprint: None,
        })
    }

    #[tokio::test]
    async fn remote_entries_are_bounded_and_expire() {
        let t = small();
        let ttl = Duration::from_millis(100);
        assert!(t.add_remote("a", "r1", logs(), peer(), ttl));
        assert!(!t.add_remote("a", "r1", logs(), peer(), ttl), "an id once");
        assert!(t.add_remote("a", "r2", logs(), peer(), ttl));
        assert!(!t.add_remote("a", "r3", logs(), peer(), ttl), "2 per edge");
        assert!(t.add_remote("b", "r4", logs(), peer(), ttl));
        assert!(t.add_remote("c", "r5", logs(), peer(), ttl));
        assert!(!t.add_remote("d", "r6", logs(), peer(), ttl), "4 in all");
        assert_eq!(t.remote_count(), 4);
        // Handed out like local requests, but never claimable as local ones.
        assert_eq!(t.take_requests("a").len(), 2);
        assert!(t.claim("a", "r1").is_none());
        assert!(!t.report_error("a", "r1", "x".into()));
        assert_eq!(t.take_remote("a", "r1"), Some(peer()));
        assert_eq!(t.take_remote("a", "r1"), None, "once");
        t.drop_remote("b", "r4");
        assert_eq!(t.remote_count(), 2);
        assert!(t.add_remote("d", "r7", logs(), peer(), Duration::from_secs(60)));
        tokio::time::sleep(ttl * 2).await;
        assert_eq!(t.remote_count(), 1, "expired, except the long-lived one");
        t.drop_remote("d", "r7");
        assert_eq!(t.remote_count(), 0);
        assert!(lock(&t.state).edges.is_empty(), "nothing left behind");
    }

    #[tokio::test]
    async fn a_late_remote_entry_is_waited_for_briefly() {
        let t = small();
        let waiting = tokio::spawn({
            let t = t.clone();
            async move {
                t.take_remote_within("a", "r1", Duration::from_secs(2))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(t.add_remote("a", "r1", logs(), peer(), Duration::from_secs(10)));
        assert_eq!(waiting.await.unwrap(), Some(peer()));
        let none = t
            .take_remote_within("a", "unknown", Duration::from_millis(200))
            .await;
        assert_eq!(none, None);
        assert!(lock(&t.state).edges.is_empty());
    }

    #[tokio::test]
    async fn relayed_tunnels_count_against_the_limits() {
        let t = small();
        let p1 = t.relay_permit("a").unwrap();
        let p2 = t.relay_permit("a").unwrap();
        let p3 = t.relay_permit("a").unwrap();
        assert_eq!(
            t.relay_permit("a").unwrap_err(),
            TunnelError::TooManyOpen {
                edge: "a".into(),
                max: 3
            }
        );
        let p4 = t.relay_permit("b").unwrap();
        assert_eq!(
            t.relay_permit("c").unwrap_err(),
            TunnelError::ServerFull { max: 4 }
        );
        drop((p1, p2, p3, p4));
        assert_eq!(t.open_counts("a"), (0, 0));
        assert!(lock(&t.state).edges.is_empty());
    }
}
