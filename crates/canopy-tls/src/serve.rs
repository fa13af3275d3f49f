//! The control plane's accept loop: plain HTTP (HTTP/1.1, and HTTP/2 with prior knowledge) or
//! HTTPS (HTTP/1.1 or HTTP/2 as ALPN says), hardened against slow and greedy clients:
//!
//! - a TLS handshake must finish within [`ServeOptions::tls_handshake_timeout`];
//! - the first bytes of a connection, and every HTTP/1 request head, within
//!   [`ServeOptions::header_read_timeout`] (this also closes HTTP/1 connections idle that long
//!   between requests); request bodies and responses are not limited here, so long-polls and
//!   event streams are unaffected;
//! - HTTP/2 connections are pinged ([`ServeOptions::http2_keep_alive_interval`]) and closed
//!   when the peer stops answering;
//! - at most [`ServeOptions::max_connections`] connections are open at once; beyond that new
//!   ones are closed at once (with a warning logged at most every 10 s), which keeps the server
//!   below its file-descriptor limit with headroom for its database and engine sockets.
//!
//! Every request carries the peer's address as axum's `ConnectInfo<SocketAddr>` extension.
//! On shutdown the listener is closed, each connection finishes its in-flight requests (HTTP/1
//! closes after the current response, HTTP/2 sends GOAWAY), and whatever is still open after
//! [`ServeOptions::shutdown_grace`] is dropped.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt as _;

/// Limits and timeouts of [`serve_with`].
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Most connections open at once (TLS handshakes included). Default 18 000: below the
    /// usual 20 000+ descriptor limit of a server, with headroom for everything else.
    pub max_connections: usize,
    /// Longest a TLS handshake may take. Default 10 s.
    pub tls_handshake_timeout: Duration,
    /// Longest wait for a connection's first bytes and for each HTTP/1 request head (also the
    /// idle time after which an HTTP/1 keep-alive connection is closed). Default 10 s.
    pub header_read_timeout: Duration,
    /// Interval of HTTP/2 keep-alive pings. Default 20 s.
    pub http2_keep_alive_interval: Duration,
    /// How long a keep-alive ping may go unanswered before the connection is closed. Default
    /// 20 s.
    pub http2_keep_alive_timeout: Duration,
    /// How long shutdown waits for in-flight requests before dropping connections. Default
    /// 30 s.
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_connections: 18_000,
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            http2_keep_alive_interval: Duration::from_secs(20),
            http2_keep_alive_timeout: Duration::from_secs(20),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Serves `router` on `listener` with [`ServeOptions::default`] until `shutdown` completes, then
/// shuts down gracefully. HTTPS when `tls` is given, plain HTTP otherwise.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    serve_with(listener, router, tls, ServeOptions::default(), shutdown).await
}

/// [`serve`] with explicit limits and timeouts.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let options = Arc::new(options);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut refusals = Refusals::default();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done
                    && e.is_panic()
                {
                    tracing::error!(error = %e, "a connection task panicked");
                }
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // E.g. out of file descriptors: wait for some to be released.
                    tracing::error!(error = %e, "cannot accept connections; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        if connections.len() >= options.max_connections {
            refusals.note(peer, options.max_connections);
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(
            stream,
            peer,
            acceptor.clone(),
            router.clone(),
            options.clone(),
            stop_rx.clone(),
        ));
    }
    drop(listener);
    stop_tx.send_replace(true);
    let open = connections.len();
    if open > 0 {
        tracing::info!(
            connections = open,
            "finishing in-flight requests (at most {} s)",
            options.shutdown_grace.as_secs()
        );
    }
    let drained = tokio::time::timeout(options.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "connections still open after the shutdown grace period; closing them"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Accept errors that concern one connection only.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Connections refused over the cap, logged at most every 10 s.
#[derive(Default)]
struct Refusals {
    last_warning: Option<Instant>,
    since_warning: u64,
}

impl Refusals {
    const EVERY: Duration = Duration::from_secs(10);

    fn note(&mut self, peer: SocketAddr, limit: usize) {
        self.since_warning += 1;
        if self.last_warning.is_none_or(|t| t.elapsed() >= Self::EVERY) {
            tracing::warn!(
                %peer,
                limit,
                refused = self.since_warning,
                "too many open connections; refusing new ones (refused is the count since the \
                 last such warning)"
            );
            self.last_warning = Some(Instant::now());
            self.since_warning = 0;
        }
    }
}

/// HTTP protocol of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Http1,
    Http2,
}

/// What an HTTP/2 client sends first (RFC 9113, 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves one accepted connection to its end (or until shutdown plus the grace period).
async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    options: Arc<ServeOptions>,
    mut stop: watch::Receiver<bool>,
) {
    match acceptor {
        None => serve_io(stream, None, peer, router, &options, stop).await,
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(options.tls_handshake_timeout, acceptor.accept(stream));
            let tls = tokio::select! {
                r = handshake => r,
                () = stopped(&mut stop) => return,
            };
            let tls = match tls {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let proto = match tls.get_ref().1.alpn_protocol() {
                Some(b"h2") => Some(Proto::Http2),
                Some(b"http/1.1") => Some(Proto::Http1),
                _ => None,
            };
            serve_io(tls, proto, peer, router, &options, stop).await
        }
    }
}

/// Resolves once shutdown has begun (or the server loop is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Drives a connection future, starting its graceful shutdown when `stop` turns true.
macro_rules! drive {
    ($conn:expr, $stop:expr) => {{
        let mut conn = std::pin::pin!($conn);
        tokio::select! {
            r = conn.as_mut() => r,
            () = stopped(&mut $stop) => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    }};
}

/// Serves HTTP over an established (plain or TLS) stream; `proto` is what ALPN said, if
/// anything, else the protocol is recognized from the first bytes.
async fn serve_io<IO>(
    mut io: IO,
    proto: Option<Proto>,
    peer: SocketAddr,
    router: Router,
    options: &ServeOptions,
    mut stop: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut head = Vec::new();
    let proto = match proto {
        Some(p) => p,
        None => {
            let sniffed =
                tokio::time::timeout(options.header_read_timeout, sniff(&mut io, &mut head));
            let sniffed = tokio::select! {
                r = sniffed => r,
                () = stopped(&mut stop) => return,
            };
            match sniffed {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "connection closed before a request");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "no request within the header timeout; closing");
                    return;
                }
            }
        }
    };
    let io = TokioIo::new(Rewind {
        head,
        pos: 0,
        inner: io,
    });
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(req)
    });
    let result = match proto {
        Proto::Http1 => {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(options.header_read_timeout)
                .keep_alive(true);
            drive!(builder.serve_connection(io, service).with_upgrades(), stop)
        }
        Proto::Http2 => {
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(options.http2_keep_alive_interval))
                .keep_alive_timeout(options.http2_keep_alive_timeout)
                // As axum does: the CONNECT protocol, for WebSockets over HTTP/2.
                .enable_connect_protocol();
            drive!(builder.serve_connection(io, service), stop)
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Reads until the bytes read so far either differ from the HTTP/2 preface (HTTP/1) or contain
/// all of it (HTTP/2). Everything read is left in `head` for [`Rewind`] to replay.
async fn sniff<IO: AsyncRead + Unpin>(io: &mut IO, head: &mut Vec<u8>) -> io::Result<Proto> {
    loop {
        head.reserve(4096);
        if io.read_buf(head).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let n = head.len().min(H2_PREFACE.len());
        if head[..n] != H2_PREFACE[..n] {
            return Ok(Proto::Http1);
        }
        if n == H2_PREFACE.len() {
            return Ok(Proto::Http2);
        }
    }
}

/// A stream that first replays bytes already read from it.
struct Rewind<IO> {
    head: Vec<u8>,
    pos: usize,
    inner: IO,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.head.len() {
            let n = (this.head.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.head[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.head.len() {
                this.head = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sniffs_and_replays() {
        for (input, want) in [
            (&b"GET / HTTP/1.1\r\n"[..], Proto::Http1),
            (&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nrest"[..], Proto::Http2),
            (&b"PRI * HTTP/1.1\r\n"[..], Proto::Http1),
        ] {
            let (mut a, mut b) = tokio::io::duplex(64);
            tokio::io::AsyncWriteExt::write_all(&mut a, input)
                .await
                .unwrap();
            drop(a);
            let mut head = Vec::new();
            assert_eq!(sniff(&mut b, &mut head).await.unwrap(), want);
            let mut replay = Rewind {
                head,
                pos: 0,
                inner: b,
            };
            let mut all = Vec::new();
            replay.read_to_end(&mut all).await.unwrap();
            assert_eq!(all, input);
        }
    }
}
