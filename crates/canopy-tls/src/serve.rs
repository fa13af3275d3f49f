//! The control plane's accept loop: plain HTTP (HTTP/1.1, and HTTP/2 with prior knowledge) or
//! HTTPS (HTTP/1.1 or HTTP/2 as ALPN says), hardened against slow and greedy clients:
//!
//! - a TLS handshake must finish within [`ServeOptions::tls_handshake_timeout`];
//! - the first bytes of a connection, and every HTTP/1 request head, within
//!   [`ServeOptions::header_read_timeout`] (this also closes HTTP/1 connections idle that long
//!   between requests); request bodies and responses are not limited here, so long-polls and
//!   event streams are unaffected;
//! - HTTP/2 connections are pinged ([`ServeOptions::http2_keep_alive_interval`]) and closed
//!   when the peer stops answering; every connection has TCP keep-alive
//!   ([`ServeOptions::tcp_keepalive`]), so a peer gone without a word (a dead edge, a cut
//!   cellular link) is noticed even while its long-poll waits. Both are rare on purpose: an
//!   edge on a metered link pays for every packet, its agent's own TCP keep-alive (after 150 s
//!   of silence) already keeps the connection and its NAT mappings alive, and a probe
//!   received from the peer resets the server's TCP keep-alive, so for a live agent the server
//!   sends nothing of its own (`docs/AGENT-PROTOCOL.md`, "Connection and idle cost");
//! - at most [`ServeOptions::max_connections`] connections are open at once; beyond that new
//!   ones are closed at once (with a warning logged at most every 10 s), which keeps the server
//!   below its file-descriptor limit with headroom for its database and engine sockets.
//!
//! **Every answer reaches the client, however early it is decided.** An application may answer
//! before it has read the request body (401 without a token, 413 over a body limit, 429): the
//! client is then still sending. Dropping the unread body there loses the answer: over HTTP/2
//! the stream is reset (hyper sends the answer then `RST_STREAM(NO_ERROR)`, which the RFC allows
//! but curl 7.88 and other clients treat as a failed request), and over HTTP/1.1 hyper closes
//! the connection, so the client's next bytes reach a closed socket, the kernel answers with a
//! TCP reset, and the reset destroys the answer the client had not read yet (seen as a "TLS
//! EOF"). So the unread body is kept until the answer has been sent, then read and thrown away
//! ([`ServeOptions::drain_max_bytes`] at most, within [`ServeOptions::drain_timeout`]): the client
//! finishes sending and reads its answer; the HTTP/2 stream ends cleanly and an HTTP/1.1
//! connection stays usable. A body beyond those bounds is dropped (HTTP/2: `RST_STREAM(NO_ERROR)`
//! after the answer); an HTTP/1.1 connection then closed gets a **lingering close**: the server
//! shuts its side and reads and discards what still arrives, until the client closes or
//! [`ServeOptions::lingering_timeout`] passes without data ([`ServeOptions::lingering_time`] at
//! most), so the client is not reset before it read the answer.
//!
//! Every request carries the peer's address as axum's `ConnectInfo<SocketAddr>` extension.
//! On shutdown the listener is closed, each connection finishes its in-flight requests (HTTP/1
//! closes after the current response, HTTP/2 sends GOAWAY), and whatever is still open after
//! [`ServeOptions::shutdown_grace`] is dropped.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, Response, header};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
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
    /// Interval of HTTP/2 keep-alive pings: one is sent when nothing was read from the peer
    /// for this long. Default 300 s: longer than an agent's long-poll cycle (285 s), so an
    /// agent's connection is never pinged while its long-polls come and go (each costs the
    /// edge's metered link a TLS record both ways); TCP keep-alive notices dead peers sooner.
    pub http2_keep_alive_interval: Duration,
    /// How long a keep-alive ping may go unanswered before the connection is closed. Default
    /// 20 s.
    pub http2_keep_alive_timeout: Duration,
    /// TCP keep-alive of every accepted connection: the first probe after this long without
    /// a packet either way, then one every [`ServeOptions::tcp_keepalive_interval`], and the
    /// connection is closed after [`ServeOptions::tcp_keepalive_retries`] unanswered ones
    /// (a dead peer is noticed 4 minutes after its last packet with the defaults). `None`
    /// turns it off. Default 180 s: longer than an agent's own (150 s), whose probes reset it.
    pub tcp_keepalive: Option<Duration>,
    /// Between two unanswered TCP keep-alive probes. Default 15 s.
    pub tcp_keepalive_interval: Duration,
    /// Unanswered TCP keep-alive probes before the connection is closed. Default 4.
    pub tcp_keepalive_retries: u32,
    /// How long shutdown waits for in-flight requests before dropping connections. Default
    /// 30 s.
    pub shutdown_grace: Duration,
    /// Most bytes of a request body the application answered without reading that are read
    /// (and thrown away) after the answer, so the client finishes sending and reads it. A body
    /// declared larger is not read at all. Default 128 MiB (above every Canopy route's body
    /// limit, so even a 413 reaches the client).
    pub drain_max_bytes: u64,
    /// Longest time spent reading such a body after the answer. Default 30 s.
    pub drain_timeout: Duration,
    /// Lingering close of an HTTP/1.1 connection closed while the client may still be sending:
    /// the longest wait for more data (or the client's close) before the connection is dropped.
    /// Default 5 s.
    pub lingering_timeout: Duration,
    /// Lingering close: the longest it lasts in all. Default 30 s.
    pub lingering_time: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_connections: 18_000,
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            http2_keep_alive_interval: Duration::from_secs(300),
            http2_keep_alive_timeout: Duration::from_secs(20),
            tcp_keepalive: Some(Duration::from_secs(180)),
            tcp_keepalive_interval: Duration::from_secs(15),
            tcp_keepalive_retries: 4,
            shutdown_grace: Duration::from_secs(30),
            drain_max_bytes: 128 * 1024 * 1024,
            drain_timeout: Duration::from_secs(30),
            lingering_timeout: Duration::from_secs(5),
            lingering_time: Duration::from_secs(30),
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
        if let Some(time) = options.tcp_keepalive {
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(time)
                .with_interval(options.tcp_keepalive_interval)
                .with_retries(options.tcp_keepalive_retries);
            if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
                tracing::debug!(%peer, error = %e, "cannot set TCP keep-alive");
            }
        }
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

/// Drives a connection future, starting its graceful shutdown when `stop` turns true, and
/// drains the request bodies its answers left unread (see the module doc) alongside it: they
/// arrive on `drains` and are read in tasks that end with the connection.
macro_rules! drive {
    ($conn:expr, $stop:expr, $drains:expr) => {{
        let mut conn = std::pin::pin!($conn);
        let mut draining = JoinSet::new();
        let mut stopping = false;
        loop {
            tokio::select! {
                r = conn.as_mut() => break r,
                () = stopped(&mut $stop), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
                Some(drain) = $drains.recv() => {
                    draining.spawn(drain.run());
                }
                Some(_) = draining.join_next(), if !draining.is_empty() => {}
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
    // The stream comes back here when hyper is done with it (see `Reclaim`), for a lingering
    // close when an answer left a request body unread.
    let (back_tx, mut back_rx) = oneshot::channel();
    let io = TokioIo::new(Reclaim {
        io: Some(Rewind {
            head,
            pos: 0,
            inner: io,
        }),
        back: Some(back_tx),
    });
    let (drain_tx, mut drains) = mpsc::unbounded_channel();
    let early = Arc::new(EarlyAnswers {
        max_bytes: options.drain_max_bytes,
        timeout: options.drain_timeout,
        abandoned: Arc::new(AtomicBool::new(false)),
        drains: drain_tx,
    });
    let abandoned = early.abandoned.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let (req, unread) = keep_unread(req);
        let answered = router.clone().oneshot(req);
        let early = early.clone();
        async move {
            let response = answered.await?;
            Ok::<_, Infallible>(early.respond(response, unread))
        }
    });
    let result = match proto {
        Proto::Http1 => {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(options.header_read_timeout)
                .keep_alive(true);
            drive!(
                builder.serve_connection(io, service).with_upgrades(),
                stop,
                drains
            )
        }
        Proto::Http2 => {
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(options.http2_keep_alive_interval))
                .keep_alive_timeout(options.http2_keep_alive_timeout)
                // As axum does: the CONNECT protocol, for WebSockets over HTTP/2.
                .enable_connect_protocol();
            drive!(builder.serve_connection(io, service), stop, drains)
        }
    };
    match result {
        Err(e) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
        Ok(()) if abandoned.load(Ordering::Relaxed) => {
            // Empty when the connection was upgraded (the stream lives on in the upgrade).
            if let Ok(io) = back_rx.try_recv() {
                tokio::select! {
                    () = lingering_close(io, options) => {}
                    () = stopped(&mut stop) => {}
                }
            }
        }
        Ok(()) => {}
    }
}

/// Closes a connection whose client may still be sending: shuts the server's side (TLS
/// close_notify, TCP FIN), then reads and discards until the client closes too, nothing arrives
/// for `lingering_timeout`, or `lingering_time` has passed. Closing a socket with unread data
/// makes the kernel send a TCP reset, which would destroy the answer the client has not read.
async fn lingering_close<IO: AsyncRead + AsyncWrite + Unpin>(mut io: IO, options: &ServeOptions) {
    let end = tokio::time::Instant::now() + options.lingering_time;
    let linger = async {
        // hyper has shut its side already when it closed an HTTP/1.1 connection; this only
        // makes sure (a second shutdown does nothing).
        let _ = io.shutdown().await;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let idle = tokio::time::Instant::now() + options.lingering_timeout;
            match tokio::time::timeout_at(idle.min(end), io.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout_at(end, linger).await;
}

// ------------------------------------------------------------------ early answers

/// What the connection does with request bodies its application answered without reading to
/// their end (see the module doc).
struct EarlyAnswers {
    max_bytes: u64,
    timeout: Duration,
    /// Set when such a body was left unread (too large, too slow, or the answer closes the
    /// connection): the connection then ends with a lingering close.
    abandoned: Arc<AtomicBool>,
    /// To the connection's task, which reads them (see `drive!`). As many at once as the
    /// connection has streams (HTTP/2 counts a stream whose body is still arriving; 200 at most),
    /// each for `timeout` at most.
    drains: mpsc::UnboundedSender<Drain>,
}

/// Hands the request to the application with a body that, dropped unfinished, goes to the
/// returned receiver instead of being dropped.
fn keep_unread(req: Request<Incoming>) -> (Request<RequestBody>, oneshot::Receiver<Incoming>) {
    let (tx, rx) = oneshot::channel();
    let expects_continue = expects_continue(req.headers());
    let req = req.map(|body| RequestBody {
        ended: body.is_end_stream(),
        inner: Some(body),
        polled: false,
        expects_continue,
        unread: Some(tx),
    });
    (req, rx)
}

fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
}

impl EarlyAnswers {
    /// The application's response, carrying the request body it left unread (if any) until
    /// the response has been sent; then that body is drained.
    fn respond(
        self: &Arc<Self>,
        response: Response<axum::body::Body>,
        mut unread: oneshot::Receiver<Incoming>,
    ) -> Response<ResponseBody> {
        // Closed: the application read the body to its end (or there was none). Empty: it
        // still holds the body; it may drop it while the response streams.
        let pending = match unread.try_recv() {
            Ok(body) => Some(Unread::Dropped(body)),
            Err(oneshot::error::TryRecvError::Empty) => Some(Unread::Held(unread)),
            Err(oneshot::error::TryRecvError::Closed) => None,
        };
        let closes = response
            .headers()
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
        response.map(|inner| ResponseBody {
            inner,
            pending,
            closes,
            early: self.clone(),
        })
    }

    /// Has `body` drained by the connection, or gives it up (too large, or the answer closes
    /// the connection anyway).
    fn drain(&self, body: Incoming, closes: bool) {
        if closes || body.size_hint().lower() > self.max_bytes {
            self.abandoned.store(true, Ordering::Relaxed);
            return;
        }
        let drain = Drain {
            body,
            left: self.max_bytes,
            timeout: self.timeout,
            abandoned: self.abandoned.clone(),
        };
        if let Err(refused) = self.drains.send(drain) {
            // The connection is ending: nothing to wait for.
            drop(refused);
            self.abandoned.store(true, Ordering::Relaxed);
        }
    }
}

/// The request body as the application sees it (see [`keep_unread`]).
struct RequestBody {
    inner: Option<Incoming>,
    /// Nothing is left to read.
    ended: bool,
    /// The application asked for data (an HTTP/1.1 client waiting for `100 Continue` was told to
    /// send its body).
    polled: bool,
    expects_continue: bool,
    unread: Option<oneshot::Sender<Incoming>>,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        this.polled = true;
        let Some(body) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = ready!(Pin::new(body).poll_frame(cx));
        if frame.is_none() {
            this.ended = true;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        // A client waiting for `100 Continue` that was never asked for its body sends nothing.
        let unasked = self.expects_continue && !self.polled;
        if self.is_end_stream() || unasked {
            return;
        }
        if let (Some(body), Some(tx)) = (self.inner.take(), self.unread.take()) {
            let _ = tx.send(body);
        }
    }
}

/// A request body the application did not read to its end, as the response sees it.
enum Unread {
    /// Dropped by the application.
    Dropped(Incoming),
    /// Still held by the application when it answered; it may come later.
    Held(oneshot::Receiver<Incoming>),
}

/// A response body that, once the response is sent (hyper then drops it), has the request body
/// the application left unread drained.
struct ResponseBody {
    inner: axum::body::Body,
    pending: Option<Unread>,
    /// The response closes the connection (`Connection: close`): nothing is drained.
    closes: bool,
    early: Arc<EarlyAnswers>,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        let body = match self.pending.take() {
            Some(Unread::Dropped(body)) => body,
            Some(Unread::Held(mut rx)) => match rx.try_recv() {
                Ok(body) => body,
                Err(_) => return,
            },
            None => return,
        };
        self.early.drain(body, self.closes);
    }
}

/// Reads a request body to its end and throws it away, within bounds.
struct Drain {
    body: Incoming,
    /// Bytes that may still be read.
    left: u64,
    timeout: Duration,
    abandoned: Arc<AtomicBool>,
}

impl Drain {
    async fn run(mut self) {
        let finished = tokio::time::timeout(self.timeout, std::future::poll_fn(|cx| self.poll(cx)))
            .await
            .unwrap_or(false);
        if !finished {
            self.abandoned.store(true, Ordering::Relaxed);
        }
    }

    /// `true` once the body ended (or failed: the client is gone), `false` when it exceeded
    /// its bytes.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        loop {
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                    match self.left.checked_sub(n) {
                        Some(left) => self.left = left,
                        None => return Poll::Ready(false),
                    }
                }
                Some(Err(_)) | None => return Poll::Ready(true),
            }
        }
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

/// A stream that, when hyper drops it, goes back to the connection's task (for a lingering
/// close) instead of being closed.
struct Reclaim<IO> {
    /// Present until dropped.
    io: Option<IO>,
    back: Option<oneshot::Sender<IO>>,
}

impl<IO> Reclaim<IO> {
    fn io(&mut self) -> Pin<&mut IO>
    where
        IO: Unpin,
    {
        Pin::new(
            self.io
                .as_mut()
                .expect("the stream is present until dropped"),
        )
    }
}

impl<IO> Drop for Reclaim<IO> {
    fn drop(&mut self) {
        if let (Some(io), Some(back)) = (self.io.take(), self.back.take()) {
            let _ = back.send(io);
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Reclaim<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().io().poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Reclaim<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().io().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().io().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().io().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().io().poll_shutdown(cx)
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
