//! Tunnels across replicas: several `canopy server` processes on one PostgreSQL database,
//! behind a load balancer, where the user's request, the agent's long-poll for tunnel requests
//! and the agent's claim may each land on a different replica.
//!
//! Why this shape, with PostgreSQL and nothing else: agents cannot be dialed and the balancer
//! decides where each of their connections lands, so the replica holding the user's request
//! (U) must reach whichever replica holds the agent's long-poll (P), and the replica receiving
//! the agent's claim (C) must reach U.
//!
//! - **U → P**: U publishes each request with `NOTIFY` on [`CHANNEL`] ([`Note::Asked`]: the
//!   tunnel id, edge id, target, and U's peer address; never a secret: the id is useless
//!   without the edge's credential). Every replica listens on its own connection
//!   ([`listen`]) and queues it as a *remote entry* for that edge, bounded per edge and per
//!   process and forgotten after the request's timeout; whichever replica holds the agent's
//!   long-poll hands it out. When the request ends at U ([`Note::Ended`]), the others forget
//!   it.
//! - **C → U**: a claim at C for a remote entry is relayed: C dials U's peer address
//!   (`--peer-url`) with an HTTP/1.1 upgrade on `/canopy/v1/peer/tunnels/{id}` ([`dial`]),
//!   then splices the agent's upgraded connection to it. Peers authenticate both ways with an
//!   HMAC-SHA256 under a key derived from the database's secret key (which every replica of
//!   one database must share): C's request carries a MAC over the tunnel id, edge, time and a
//!   nonce; U answers with a MAC over C's nonce. A peer without the key is refused; over
//!   `https://` peer URLs C pins the certificate U announced in its note.
//! - **Agent errors**: a report at any replica other than U is published as [`Note::Failed`];
//!   U hands it to the waiting user.
//!
//! One replica alone (or SQLite) never starts any of this: the broker works as before.

use std::sync::Arc;
use std::time::Duration;

use canopy_proto::TunnelTarget;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use super::{TunnelStream, Tunnels};

/// The `NOTIFY` channel of tunnel requests (separate from every other channel).
pub const CHANNEL: &str = "canopy_tunnels";
/// The upgrade token of a relayed claim between replicas.
pub const PEER_UPGRADE: &str = "canopy-peer-tunnel";
/// Header: the edge the claimed tunnel belongs to.
pub const EDGE_HEADER: &str = "canopy-peer-edge";
/// Header: the claim's time (Unix seconds).
pub const TIME_HEADER: &str = "canopy-peer-time";
/// Header: the claim's nonce (hex).
pub const NONCE_HEADER: &str = "canopy-peer-nonce";
/// Header: the MAC (hex) of a claim, or of its acceptance in the answer.
pub const MAC_HEADER: &str = "canopy-peer-mac";
/// The purpose of the key peers authenticate with (see `canopy_seal::Keyring::derive_key`).
pub const KEY_PURPOSE: &str = "canopy peer tunnels v1";
/// How far a claim's time may be from this replica's clock.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(120);
/// How long a relaying replica waits for the replica it dials to answer.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claim or an error report waits for a request this replica has not heard of yet
/// (its notification may arrive a moment after the long-poll's replica's).
pub const LATE_NOTE_WAIT: Duration = Duration::from_secs(2);
/// Notes waiting to be published; beyond it a note is dropped (and logged): the request still
/// works when the agent's long-poll is on this replica.
const PUBLISH_QUEUE: usize = 4096;
/// `NOTIFY` payloads are at most 8000 bytes; a larger note is not published.
const MAX_NOTE: usize = 7900;

/// How other replicas reach this one: its peer URL and, over HTTPS, the SHA-256 fingerprint
/// of the certificate it serves (pinned by the dialing replica).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAddr {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// What replicas tell each other about tunnel requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Note {
    /// Replica `from` holds a user's request `id` for edge `edge`.
    Asked {
        from: String,
        id: String,
        edge: String,
        target: TunnelTarget,
        peer: PeerAddr,
        ttl_ms: u64,
    },
    /// Request `id` ended on the replica that holds it.
    Ended {
        from: String,
        id: String,
        edge: String,
    },
    /// The agent of `edge` could not open tunnel `id` (reported to replica `from`).
    Failed {
        from: String,
        id: String,
        edge: String,
        message: String,
    },
}

impl Note {
    /// The replica that sent it.
    pub fn from(&self) -> &str {
        match self {
            Note::Asked { from, .. } | Note::Ended { from, .. } | Note::Failed { from, .. } => from,
        }
    }
}

/// Why a relay between replicas failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("the peer connection is not authenticated: {0}")]
    Unauthenticated(&'static str),
    #[error("cannot reach replica {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("replica {url} refused the tunnel ({status}): {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
    #[error("cannot listen for tunnel requests of other replicas: {0}")]
    Listen(String),
}

/// This process as one of several replicas: who it is, how others reach it, the key peers
/// share, and the queue of notes to publish.
pub struct Replication {
    replica: String,
    me: PeerAddr,
    key: Zeroizing<[u8; 32]>,
    publish: mpsc::Sender<Note>,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication")
            .field("replica", &self.replica)
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

/// The background work of [`Replication`]: the publisher and the listener (abort both at
/// shutdown).
pub struct Tasks {
    pub publisher: tokio::task::JoinHandle<()>,
    pub listener: tokio::task::JoinHandle<()>,
}

impl Tasks {
    pub fn abort(&self) {
        self.publisher.abort();
        self.listener.abort();
    }
}

impl Replication {
    /// Connects to PostgreSQL at `database_url` (a pool of one connection for `NOTIFY`, and the
    /// listener's own connection), and returns the replication (to hand to
    /// [`Tunnels::set_replication`]) with the publisher's queue. [`Replication::run`] does the
    /// work.
    pub async fn connect(
        database_url: &str,
        me: PeerAddr,
        key: Zeroizing<[u8; 32]>,
    ) -> Result<(Replication, Pending), PeerError> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy(database_url)
            .map_err(|e| PeerError::Listen(e.to_string()))?;
        let mut listener = sqlx::postgres::PgListener::connect(database_url)
            .await
            .map_err(|e| PeerError::Listen(e.to_string()))?;
        listener
            .listen(CHANNEL)
            .await
            .map_err(|e| PeerError::Listen(e.to_string()))?;
        let (tx, rx) = mpsc::channel(PUBLISH_QUEUE);
        let replica = uuid::Uuid::new_v4().simple().to_string();
        Ok((
            Replication {
                replica: replica.clone(),
                me,
                key,
                publish: tx,
            },
            Pending {
                pool,
                listener,
                rx,
                replica,
            },
        ))
    }

    /// This replica's id in notes (random per process).
    pub fn replica_id(&self) -> &str {
        &self.replica
    }

    /// How other replicas reach this one.
    pub fn peer_addr(&self) -> &PeerAddr {
        &self.me
    }

    fn queue(&self, note: Note) {
        if let Err(e) = self.publish.try_send(note) {
            tracing::warn!(
                error = %e,
                "could not queue a tunnel note for the other replicas (queue full or closed): \
                 a tunnel whose agent polls another replica will time out"
            );
        }
    }

    /// Tells the other replicas of request `id` for `edge` (waiting up to `ttl`).
    pub fn asked(&self, id: &str, edge: &str, target: TunnelTarget, ttl: Duration) {
        self.queue(Note::Asked {
            from: self.replica.clone(),
            id: id.to_string(),
            edge: edge.to_string(),
            target,
            peer: self.me.clone(),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        });
    }

    /// Tells the other replicas that request `id` ended here.
    pub fn ended(&self, id: &str, edge: &str) {
        self.queue(Note::Ended {
            from: self.replica.clone(),
            id: id.to_string(),
            edge: edge.to_string(),
        });
    }

    /// Tells the replica holding request `id` that its agent could not open it.
    pub fn failed(&self, id: &str, edge: &str, message: String) {
        self.queue(Note::Failed {
            from: self.replica.clone(),
            id: id.to_string(),
            edge: edge.to_string(),
            message,
        });
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length: this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.key[..])
            .unwrap_or_else(|_| unreachable!("HMAC accepts a 32-byte key"))
    }

    fn claim_mac(&self, id: &str, edge: &str, time: u64, nonce: &str) -> Hmac<Sha256> {
        let mut m = self.mac();
        m.update(format!("{KEY_PURPOSE}\nclaim\n{id}\n{edge}\n{time}\n{nonce}").as_bytes());
        m
    }

    fn accept_mac(&self, id: &str, nonce: &str) -> Hmac<Sha256> {
        let mut m = self.mac();
        m.update(format!("{KEY_PURPOSE}\naccept\n{id}\n{nonce}").as_bytes());
        m
    }

    /// Checks a relayed claim's authentication (at U): the MAC over the tunnel id, edge, time
    /// and nonce, and the time within [`MAX_CLOCK_SKEW`]. Returns the MAC of the acceptance to
    /// answer with.
    pub fn verify_claim(
        &self,
        id: &str,
        edge: &str,
        time: &str,
        nonce: &str,
        mac: &str,
    ) -> Result<String, PeerError> {
        let time: u64 = time
            .parse()
            .map_err(|_| PeerError::Unauthenticated("no valid time"))?;
        if nonce.len() < 32 || nonce.len() > 128 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PeerError::Unauthenticated("no valid nonce"));
        }
        let mac = hex_decode(mac).ok_or(PeerError::Unauthenticated("no valid MAC"))?;
        self.claim_mac(id, edge, time, nonce)
            .verify_slice(&mac)
            .map_err(|_| PeerError::Unauthenticated("wrong MAC (another key?)"))?;
        let now = unix_now();
        if now.abs_diff(time) > MAX_CLOCK_SKEW.as_secs() {
            return Err(PeerError::Unauthenticated(
                "the claim's time is too far from this replica's clock",
            ));
        }
        Ok(hex(&self.accept_mac(id, nonce).finalize().into_bytes()))
    }

    /// Relays the agent's claim of tunnel `id` of `edge` to the replica `peer` that holds the
    /// user's request: an authenticated HTTP/1.1 upgrade; the upgraded connection carries the
    /// tunnel's bytes. Fails with the peer's own error when it refuses (e.g. 404: the request
    /// ended meanwhile).
    pub async fn dial(
        &self,
        peer: &PeerAddr,
        id: &str,
        edge: &str,
    ) -> Result<Box<dyn TunnelStream>, PeerError> {
        let unreachable = |reason: String| PeerError::Unreachable {
            url: peer.url.clone(),
            reason,
        };
        let mut builder = reqwest::Client::builder()
            .http1_only()
            .timeout(DIAL_TIMEOUT)
            .connect_timeout(DIAL_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(fp) = &peer.fingerprint {
            let pin = canopy_tls::Fingerprint::parse(fp)
                .map_err(|e| unreachable(format!("its certificate fingerprint: {e}")))?;
            let mut tls = canopy_tls::client_config(&canopy_tls::ClientTrust::Pinned(pin))
                .map_err(|e| unreachable(e.to_string()))?
                .ok_or_else(|| unreachable("no TLS configuration".into()))?;
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            builder = builder.use_preconfigured_tls(tls);
        }
        let client = builder.build().map_err(|e| unreachable(e.to_string()))?;
        let time = unix_now();
        let nonce = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let mac = hex(&self
            .claim_mac(id, edge, time, &nonce)
            .finalize()
            .into_bytes());
        let url = format!(
            "{}/canopy/v1/peer/tunnels/{}",
            peer.url.trim_end_matches('/'),
            id
        );
        let resp = client
            .get(&url)
            .header(reqwest::header::CONNECTION, "upgrade")
            .header(reqwest::header::UPGRADE, PEER_UPGRADE)
            .header(EDGE_HEADER, edge)
            .header(TIME_HEADER, time.to_string())
            .header(NONCE_HEADER, &nonce)
            .header(MAC_HEADER, mac)
            .send()
            .await
            .map_err(|e| unreachable(e.without_url().to_string()))?;
        if resp.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
            let status = resp.status().as_u16();
            let body: String = resp
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(1000)
                .collect();
            return Err(PeerError::Refused {
                url: peer.url.clone(),
                status,
                body,
            });
        }
        let accepted = resp
            .headers()
            .get(MAC_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(hex_decode)
            .ok_or(PeerError::Unauthenticated(
                "the replica's answer carries no MAC",
            ))?;
        self.accept_mac(id, &nonce)
            .verify_slice(&accepted)
            .map_err(|_| {
                PeerError::Unauthenticated("the replica's answer has a wrong MAC (another key?)")
            })?;
        let upgraded = resp
            .upgrade()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(Box::new(upgraded))
    }
}

/// Copies bytes between the agent's connection and the peer's until either side ends (end of
/// stream or error), then closes both: a relayed tunnel ends as a direct one does (the replica
/// holding the user drops the whole connection when its user leaves, and an idle agent's end
/// must not keep the relay, and its permit, forever).
pub async fn splice<A, B>(agent: A, peer: B)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt as _;
    let (mut ar, mut aw) = tokio::io::split(agent);
    let (mut pr, mut pw) = tokio::io::split(peer);
    tokio::select! {
        _ = tokio::io::copy(&mut ar, &mut pw) => {
            let _ = pw.shutdown().await;
        }
        _ = tokio::io::copy(&mut pr, &mut aw) => {
            let _ = aw.shutdown().await;
        }
    }
}

/// The publisher's and listener's connections, until [`Pending::spawn`] starts them.
pub struct Pending {
    pool: sqlx::PgPool,
    listener: sqlx::postgres::PgListener,
    rx: mpsc::Receiver<Note>,
    replica: String,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

impl Pending {
    /// Starts publishing this replica's notes and applying the others' to `app`'s broker.
    pub fn spawn(self, app: crate::App) -> Tasks {
        let Pending {
            pool,
            listener,
            rx,
            replica,
        } = self;
        Tasks {
            publisher: tokio::spawn(publish(pool, rx)),
            listener: tokio::spawn(listen(listener, replica, app)),
        }
    }
}

/// Publishes queued notes, in order, with `pg_notify`.
async fn publish(pool: sqlx::PgPool, mut rx: mpsc::Receiver<Note>) {
    while let Some(note) = rx.recv().await {
        let payload = match serde_json::to_string(&note) {
            Ok(p) if p.len() <= MAX_NOTE => p,
            Ok(p) => {
                tracing::warn!(
                    bytes = p.len(),
                    "a tunnel note is too large to publish; other replicas will not see it"
                );
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not encode a tunnel note");
                continue;
            }
        };
        if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(&payload)
            .execute(&pool)
            .await
        {
            tracing::warn!(error = %e, "could not publish a tunnel note to the other replicas");
        }
    }
}

/// Applies the other replicas' notes to the broker until aborted. A lost connection is
/// re-established (sqlx's listener reconnects and listens again); notes sent meanwhile are
/// lost, and their tunnels time out as with an unreachable edge.
async fn listen(mut listener: sqlx::postgres::PgListener, replica: String, app: crate::App) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let n = match listener.recv().await {
            Ok(n) => {
                backoff = Duration::from_millis(100);
                n
            }
            Err(e) => {
                tracing::warn!(error = %e, "the listener for tunnel notes failed; reconnecting");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let note: Note = match serde_json::from_str(n.payload()) {
            Ok(note) => note,
            Err(e) => {
                tracing::warn!(error = %e, "ignored a tunnel note this replica cannot read");
                continue;
            }
        };
        apply(app.tunnels(), &replica, note);
    }
}

/// Applies one note to `broker` (ignoring this replica's own).
pub fn apply(broker: &Tunnels, replica: &str, note: Note) {
    if note.from() == replica {
        return;
    }
    match note {
        Note::Asked {
            id,
            edge,
            target,
            peer,
            ttl_ms,
            ..
        } => {
            let queued = broker.add_remote(
                &edge,
                &id,
                target,
                Arc::new(peer),
                Duration::from_millis(ttl_ms),
            );
            if !queued {
                tracing::warn!(
                    edge = %edge,
                    "not queued: a tunnel request of another replica (this edge or this \
                     replica holds its maximum of waiting requests)"
                );
            }
        }
        Note::Ended { id, edge, .. } => broker.drop_remote(&edge, &id),
        Note::Failed {
            id, edge, message, ..
        } => {
            broker.report_error(&edge, &id, message);
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 256 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The peer URL a replica listening on `addr` has when none is given: `None` for a wildcard
/// address (other replicas could not know which of its addresses to dial).
pub fn default_peer_url(addr: std::net::SocketAddr, tls: bool) -> Option<String> {
    if addr.ip().is_unspecified() {
        return None;
    }
    let scheme = if tls { "https" } else { "http" };
    Some(format!("{scheme}://{addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replication(key: u8) -> Replication {
        let (tx, _rx) = mpsc::channel(1);
        Replication {
            replica: "r".into(),
            me: PeerAddr {
                url: "http://127.0.0.1:1".into(),
                fingerprint: None,
            },
            key: Zeroizing::new([key; 32]),
            publish: tx,
        }
    }

    #[test]
    fn claims_verify_only_under_the_same_key_and_for_the_same_tunnel() {
        let (a, b) = (replication(1), replication(2));
        let nonce = "ab".repeat(32);
        let now = unix_now();
        let mac = hex(&a.claim_mac("t1", "e1", now, &nonce).finalize().into_bytes());
        let accept = a
            .verify_claim("t1", "e1", &now.to_string(), &nonce, &mac)
            .expect("same key");
        assert_eq!(
            accept,
            hex(&a.accept_mac("t1", &nonce).finalize().into_bytes())
        );
        assert!(
            b.verify_claim("t1", "e1", &now.to_string(), &nonce, &mac)
                .is_err()
        );
        assert!(
            a.verify_claim("t2", "e1", &now.to_string(), &nonce, &mac)
                .is_err()
        );
        assert!(
            a.verify_claim("t1", "e2", &now.to_string(), &nonce, &mac)
                .is_err()
        );
        assert!(a.verify_claim("t1", "e1", "", &nonce, &mac).is_err());
        assert!(
            a.verify_claim("t1", "e1", &now.to_string(), &nonce, "")
                .is_err()
        );
        let old = now - 3600;
        let stale = hex(&a.claim_mac("t1", "e1", old, &nonce).finalize().into_bytes());
        let e = a
            .verify_claim("t1", "e1", &old.to_string(), &nonce, &stale)
            .unwrap_err();
        assert!(e.to_string().contains("clock"), "{e}");
    }

    #[test]
    fn notes_round_trip_and_own_notes_are_ignored() {
        let t = Tunnels::default();
        let note = Note::Asked {
            from: "other".into(),
            id: "t1".into(),
            edge: "e1".into(),
            target: TunnelTarget::Serial {
                deployment_id: "d".into(),
                app: "a".into(),
                vm: "v".into(),
            },
            peer: PeerAddr {
                url: "http://10.0.0.1:7070".into(),
                fingerprint: None,
            },
            ttl_ms: 5000,
        };
        let text = serde_json::to_string(&note).unwrap();
        assert_eq!(serde_json::from_str::<Note>(&text).unwrap(), note);
        let mut own = note.clone();
        if let Note::Asked { from, .. } = &mut own {
            *from = "me".into();
        }
        apply(&t, "me", own);
        assert_eq!(t.remote_count(), 0);
        apply(&t, "me", note);
        assert_eq!(t.remote_count(), 1);
        assert_eq!(t.take_requests("e1").len(), 1);
        apply(
            &t,
            "me",
            Note::Ended {
                from: "other".into(),
                id: "t1".into(),
                edge: "e1".into(),
            },
        );
        assert_eq!(t.remote_count(), 0);
    }

    #[test]
    fn default_peer_urls_need_a_specific_address() {
        let a: std::net::SocketAddr = "10.1.2.3:7070".parse().unwrap();
        assert_eq!(
            default_peer_url(a, true).as_deref(),
            Some("https://10.1.2.3:7070")
        );
        let w: std::net::SocketAddr = "0.0.0.0:7070".parse().unwrap();
        assert_eq!(default_peer_url(w, false), None);
        let w6: std::net::SocketAddr = "[::]:7070".parse().unwrap();
        assert_eq!(default_peer_url(w6, false), None);
    }
}
