//! The agent's service proxy: TCP listeners that forward to a Service's ready pods, for what
//! engine networking cannot express (see `plan`): a Service port that differs from its target
//! port, and a `nodePort` of a Service with more than one pod.
//!
//! - A **remapped Service port** is listened to inside the Service's own container (the pause
//!   image holding the Service's DNS names): the agent enters that container's network
//!   namespace on a short-lived thread (`setns(2)`, by `/proc/<pid>/ns/net`), binds the port
//!   there, and leaves; the socket stays in that namespace and is served from the agent's
//!   runtime. So clients in the namespace network connect to `svc:port` and reach a pod's
//!   target port, as through Kubernetes' cluster IP.
//! - A **node port** is listened to on the host (all addresses).
//!
//! Each connection goes to the next ready endpoint (round robin; one that refuses is skipped),
//! reached at the pod's address in the namespace network. With no ready endpoint a connection
//! is closed at once. At most [`MAX_CONNECTIONS`] connections per listener are forwarded at
//! once; more wait in the listener's backlog.
//!
//! Limits (also in `docs/HELM.md`): TCP only; the agent must run as root on the engine's host
//! (entering a namespace needs `CAP_SYS_ADMIN`, reaching pod addresses needs the host's route
//! to the engine's networks: a rootful engine); while the agent is stopped, these ports do not
//! answer (names and ports the engine serves itself keep working). A listener that cannot be
//! made is reported in the app's status.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info};

/// Connections forwarded at once per listener.
pub const MAX_CONNECTIONS: usize = 512;
/// Bound of a connection to an endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a listener listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Place {
    /// On the host, all addresses.
    Host,
    /// In the network namespace of the container with this engine id and PID.
    Container { id: String, pid: i64 },
}

/// A listener the pass wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub place: Place,
    pub port: u16,
    /// Ready endpoints (pod address, target port).
    pub endpoints: Vec<SocketAddr>,
    /// `service web port 80` or `service web nodePort 30080`, for messages.
    pub what: String,
}

struct Listener {
    endpoints: Arc<RwLock<Vec<SocketAddr>>>,
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A listener's identity: its owner (an app, `<deployment>/<app>`), place and port.
type Key = (String, Place, u16);

/// The listeners of one container driver; dropped with it (every listener and connection
/// ends).
#[derive(Default)]
pub struct Proxy {
    listeners: Mutex<HashMap<Key, Listener>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("listeners", &self.lock().len())
            .finish()
    }
}

impl Proxy {
    /// Makes `owner`'s listeners exactly `wanted` (starting missing ones, updating endpoints,
    /// stopping the others). Returns, per `what`, why a listener could not be made.
    pub async fn reconcile(&self, owner: &str, wanted: Vec<Wanted>) -> HashMap<String, String> {
        let mut errors = HashMap::new();
        let keys: std::collections::HashSet<Key> = wanted
            .iter()
            .map(|w| (owner.to_string(), w.place.clone(), w.port))
            .collect();
        {
            let mut listeners = self.lock();
            listeners.retain(|k, _| {
                let keep = k.0 != owner || keys.contains(k);
                if !keep {
                    debug!(port = k.2, place = ?k.1, "stopping a service listener");
                }
                keep
            });
        }
        for w in wanted {
            let key = (owner.to_string(), w.place.clone(), w.port);
            let existing = self.lock().get(&key).map(|l| Arc::clone(&l.endpoints));
            if let Some(endpoints) = existing {
                *endpoints.write().unwrap_or_else(PoisonError::into_inner) = w.endpoints;
                continue;
            }
            match bind(&w.place, w.port).await {
                Ok(listener) => {
                    info!(what = %w.what, place = ?w.place, "listening for a service");
                    let endpoints = Arc::new(RwLock::new(w.endpoints));
                    let task = tokio::spawn(serve(listener, Arc::clone(&endpoints)));
                    self.lock().insert(key, Listener { endpoints, task });
                }
                Err(e) => {
                    errors.insert(w.what.clone(), format!("{}: {e}", w.what));
                }
            }
        }
        errors
    }

    /// Stops the listeners of owners not in `owners` (apps no longer desired).
    pub fn retain(&self, owners: &std::collections::HashSet<String>) {
        self.lock().retain(|k, _| owners.contains(&k.0));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Listener>> {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A listening socket at `port` in `place`.
async fn bind(place: &Place, port: u16) -> Result<TcpListener, String> {
    let std_listener = match place {
        Place::Host => std::net::TcpListener::bind(("0.0.0.0", port))
            .map_err(|e| format!("cannot listen on the host's port {port}: {e}"))?,
        Place::Container { pid, .. } => {
            let pid = *pid;
            tokio::task::spawn_blocking(move || bind_in_namespace(pid, port))
                .await
                .map_err(|e| e.to_string())??
        }
    };
    std_listener
        .set_nonblocking(true)
        .map_err(|e| e.to_string())?;
    TcpListener::from_std(std_listener).map_err(|e| e.to_string())
}

/// Binds `0.0.0.0:port` in the network namespace of process `pid`, on a thread of its own that
/// ends right after (a thread that entered a namespace is never reused).
fn bind_in_namespace(pid: i64, port: u16) -> Result<std::net::TcpListener, String> {
    let path = format!("/proc/{pid}/ns/net");
    std::thread::Builder::new()
        .name("canopy-netns".into())
        .spawn(move || {
            let ns = std::fs::File::open(&path).map_err(|e| {
                format!("cannot open {path} (the agent must run on the engine's host): {e}")
            })?;
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .map_err(|e| {
                format!(
                    "cannot enter the service's network namespace (the agent must run as root): \
                     {e}"
                )
            })?;
            std::net::TcpListener::bind(("0.0.0.0", port)).map_err(|e| {
                format!("cannot listen on port {port} in the service's namespace: {e}")
            })
        })
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|_| "the namespace thread panicked".to_string())?
}

/// Accepts and forwards until aborted; connections end with it.
async fn serve(listener: TcpListener, endpoints: Arc<RwLock<Vec<SocketAddr>>>) {
    let next = AtomicUsize::new(0);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let Ok((client, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let list = endpoints
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if list.is_empty() {
            continue;
        }
        let start = next.fetch_add(1, Ordering::Relaxed);
        connections.spawn(async move {
            let _permit = permit;
            forward(client, &list, start).await;
        });
    }
}

/// Connects `client` to the first endpoint that answers, from `start` on, and copies both ways.
async fn forward(mut client: TcpStream, endpoints: &[SocketAddr], start: usize) {
    for i in 0..endpoints.len() {
        let to = endpoints[(start + i) % endpoints.len()];
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to)).await {
            Ok(Ok(mut upstream)) => {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                return;
            }
            Ok(Err(e)) => debug!(endpoint = %to, error = %e, "service endpoint refused"),
            Err(_) => debug!(endpoint = %to, "service endpoint did not answer"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server(reply: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        addr
    }

    async fn read_from(port: u16) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        out
    }

    #[tokio::test]
    async fn host_listeners_round_robin_over_ready_endpoints() {
        let a = echo_server("a").await;
        let b = echo_server("b").await;
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let proxy = Proxy::default();
        let want = |endpoints: Vec<SocketAddr>| {
            vec![Wanted {
                place: Place::Host,
                port,
                endpoints,
                what: "service web nodePort".into(),
            }]
        };
        assert!(proxy.reconcile("d/app", want(vec![a, b])).await.is_empty());
        let mut seen = vec![read_from(port).await, read_from(port).await];
        seen.sort();
        assert_eq!(seen, vec!["a", "b"]);
        // Endpoints follow readiness without a new listener.
        proxy.reconcile("d/app", want(vec![b])).await;
        assert_eq!(read_from(port).await, "b");
        proxy.reconcile("d/app", want(vec![])).await;
        assert_eq!(
            read_from(port).await,
            "",
            "no ready endpoint: closed at once"
        );
        // Another owner's reconcile leaves it alone; its app gone, the port is free again.
        proxy.reconcile("d/other", vec![]).await;
        assert_eq!(read_from(port).await, "");
        proxy.retain(&std::collections::HashSet::new());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(std::net::TcpListener::bind(("0.0.0.0", port)).is_ok());
    }

    #[tokio::test]
    async fn a_port_that_cannot_be_had_is_reported() {
        let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let errors = Proxy::default()
            .reconcile(
                "d/app",
                vec![Wanted {
                    place: Place::Host,
                    port,
                    endpoints: vec![],
                    what: "service web nodePort 1".into(),
                }],
            )
            .await;
        let e = &errors["service web nodePort 1"];
        assert!(e.contains(&format!("port {port}")), "{e}");
        let errors = Proxy::default()
            .reconcile(
                "d/app",
                vec![Wanted {
                    place: Place::Container {
                        id: "x".into(),
                        pid: i64::from(i32::MAX),
                    },
                    port: 80,
                    endpoints: vec![],
                    what: "service web port 80".into(),
                }],
            )
            .await;
        assert!(
            errors["service web port 80"].contains("/proc/"),
            "{errors:?}"
        );
    }
}
