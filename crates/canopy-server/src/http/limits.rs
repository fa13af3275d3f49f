//! Abuse resistance: per-caller and per-edge rate limits, caps on concurrent agent long-polls,
//! and a deadline on reading request bodies. (Body *sizes* are capped per route in
//! `http::api_router`; header read timeouts, connection caps and early answers live in the
//! connection loop, `canopy_tls::serve`.)
//!
//! - **Rate limits**: GCRA per key (governor's keyed limiter, the same as a token bucket of
//!   `burst` tokens refilled at `requests_per_second`). Over it: `429 Too Many Requests` with
//!   `Retry-After` (whole seconds until a request would pass).
//!   - per authenticated caller ([`Principal::rate_key`]: one per API token, session or OIDC
//!     identity): [`Limits::requests_per_second`], [`Limits::burst`], applied here;
//!   - per edge, on the agent protocol (status reports, long-poll entries, tunnel polls,
//!     connections and errors): [`Limits::agent_requests_per_second`], [`Limits::agent_burst`].
//!     The agent handlers apply it once the edge's credential is known (`http::fleet::Agent`),
//!     through the [`EdgeRateLimit`] this middleware puts into the request. A well-behaved
//!     agent sends about one request every ten seconds, and about two per change of its
//!     desired state (a long-poll answer and re-entry, a report): the default (20/s, bursts of
//!     200) lets an edge's desired state change ten times a second indefinitely, and a
//!     hundred times at once, before its agent is asked to wait.
//!
//!   Requests without a caller (enrollment, the public paths) are not counted. Keys whose
//!   state has recovered completely are the same as new ones and are pruned (every minute, or
//!   every second while more than 4096 keys are held), so memory follows the callers and edges
//!   active in the last minute.
//! - **Long-polls**: at most [`Limits::max_long_polls`] desired-state long-polls wait at once in
//!   the process, and at most [`Limits::max_long_polls_per_edge`] per edge. A long-poll beyond
//!   the process cap is answered at once with `503 Service Unavailable` (the server is at
//!   capacity; `Retry-After` 5 to 30 s, spread so refused agents do not return together); one
//!   beyond an edge's cap with `429 Too Many Requests` (that edge is misbehaving;
//!   `Retry-After` 5 s). Agents treat both as transient and back off.
//!   Tunnel-request long-polls are counted the same way by a gate of their own
//!   ([`Limits::max_tunnel_polls`], [`Limits::max_tunnel_polls_per_edge`]).
//! - **Slow bodies**: a request body must arrive within [`Limits::body_read_timeout`] of the
//!   first read, and each chunk received extends that deadline by its size divided by
//!   [`Limits::body_min_rate`] (never past `body_read_timeout` from now): a body trickled in
//!   slower than that rate, or stalled for the whole timeout, is answered with
//!   `408 Request Timeout` and the connection is closed. (This is Apache `mod_reqtimeout`'s
//!   `body=60,MinRate=1024`.)

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use governor::clock::{Clock, DefaultClock, Reference as _};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use super::ErrorBody;
use crate::app::{AppError, Principal};

/// The abuse limits of the HTTP API (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Sustained requests per second per caller; 0 turns the rate limit off.
    pub requests_per_second: u32,
    /// Requests a caller may send at once after being idle (the bucket's size; at least 1).
    pub burst: u32,
    /// Sustained agent-protocol requests per second per edge; 0 turns the limit off.
    pub agent_requests_per_second: u32,
    /// Agent-protocol requests an edge may send at once after being idle (at least 1).
    pub agent_burst: u32,
    /// Desired-state long-polls waiting at once, in the whole process.
    pub max_long_polls: usize,
    /// Desired-state long-polls waiting at once per edge.
    pub max_long_polls_per_edge: usize,
    /// Tunnel-request long-polls waiting at once, in the whole process (a gate of their own,
    /// so they never take the desired-state long-polls' places).
    pub max_tunnel_polls: usize,
    /// Tunnel-request long-polls waiting at once per edge.
    pub max_tunnel_polls_per_edge: usize,
    /// Time to receive a request body (measured from the first read), extended as data arrives.
    pub body_read_timeout: Duration,
    /// Bytes per second a body must average to keep extending its deadline; 0 makes
    /// `body_read_timeout` a pure idle timeout (the longest pause between two chunks).
    pub body_min_rate: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            requests_per_second: 100,
            burst: 400,
            agent_requests_per_second: 20,
            agent_burst: 200,
            max_long_polls: 15_000,
            max_long_polls_per_edge: 2,
            max_tunnel_polls: 15_000,
            max_tunnel_polls_per_edge: 2,
            body_read_timeout: Duration::from_secs(60),
            body_min_rate: 1024,
        }
    }
}

/// The middleware's state: the limits and what they count.
#[derive(Clone)]
pub(crate) struct Limiter {
    limits: Arc<Limits>,
    rate: Arc<KeyedLimit>,
    edges: EdgeRateLimit,
    long_polls: Arc<LongPollGate>,
    tunnel_polls: TunnelPollGate,
}

/// The gate of tunnel-request long-polls (a [`LongPollGate`] of its own; see [`Limits`]).
#[derive(Clone)]
pub struct TunnelPollGate(pub Arc<LongPollGate>);

impl Limiter {
    pub(crate) fn new(limits: Limits) -> Limiter {
        Limiter {
            rate: Arc::new(KeyedLimit::new(limits.requests_per_second, limits.burst)),
            edges: EdgeRateLimit(Arc::new(KeyedLimit::new(
                limits.agent_requests_per_second,
                limits.agent_burst,
            ))),
            long_polls: Arc::new(LongPollGate::new(
                limits.max_long_polls,
                limits.max_long_polls_per_edge,
            )),
            tunnel_polls: TunnelPollGate(Arc::new(LongPollGate::new(
                limits.max_tunnel_polls,
                limits.max_tunnel_polls_per_edge,
            ))),
            limits: Arc::new(limits),
        }
    }
}

/// A web console request over its caller's rate limit. The console renders pages, so it
/// answers with its own HTML page (the server's message and `Retry-After`): the request is
/// passed on with this extension, and the console's outermost layer answers `429` at once,
/// without running a handler (`canopy-web` tests both). Should the answer not be a 429 all the
/// same, the API's JSON refusal replaces it.
#[derive(Debug, Clone)]
pub struct ConsoleRateLimited {
    /// The server's message (as the API's 429 says it).
    pub message: String,
    /// Seconds until a request would pass (`Retry-After`).
    pub retry_after: u64,
}

async fn console_refusal<F, Fut>(mut req: Request, next: F, refused: AppError) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let AppError::RateLimited(retry_after) = refused else {
        return refused.into_response();
    };
    req.extensions_mut().insert(ConsoleRateLimited {
        message: refused.to_string(),
        retry_after,
    });
    let answer = next(req).await;
    if answer.status() == StatusCode::TOO_MANY_REQUESTS {
        answer
    } else {
        refused.into_response()
    }
}

/// Applies the limits to one request (inner of authentication, so the caller is known);
/// `next` runs the rest of the stack (see [`super::layers`]).
pub(crate) async fn enforce<F, Fut>(l: &Limiter, mut req: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    if let Some(p) = req.extensions().get::<Arc<Principal>>()
        && let Err(retry) = l.rate.check(&p.rate_key())
    {
        let refused = AppError::RateLimited(retry);
        if super::is_console(req.uri().path()) {
            return console_refusal(req, next, refused).await;
        }
        return refused.into_response();
    }
    req.extensions_mut().insert(l.edges.clone());
    req.extensions_mut().insert(l.long_polls.clone());
    req.extensions_mut().insert(l.tunnel_polls.clone());
    if req.body().size_hint().exact() == Some(0) {
        return next(req).await;
    }
    let expired = Arc::new(AtomicBool::new(false));
    let req = req.map(|body| {
        Body::new(TimedBody {
            inner: body,
            sleep: None,
            timeout: l.limits.body_read_timeout,
            min_rate: l.limits.body_min_rate,
            expired: expired.clone(),
        })
    });
    let response = next(req).await;
    if expired.load(Ordering::Relaxed) {
        let mut r = error_response(
            StatusCode::REQUEST_TIMEOUT,
            4,
            format!(
                "the request body arrived too slowly: send it within {} s (at {} bytes/s or faster)",
                l.limits.body_read_timeout.as_secs(),
                l.limits.body_min_rate
            ),
        );
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    response
}

/// An error response in the API's error shape (for statuses `AppError` has no variant for).
fn error_response(status: StatusCode, code: i32, message: String) -> Response {
    (
        status,
        Json(ErrorBody {
            code,
            message,
            details: Vec::new(),
            error_messages: Vec::new(),
        }),
    )
        .into_response()
}

// ------------------------------------------------------------------ bounded lists

/// `pageSize` and `offset` of a list that takes no other parameter (unknown ones refused):
/// `pageSize` 0 or absent is `default`, above [`canopy_core::list::MAX_PAGE_SIZE`] or negative
/// is 400 naming it.
pub(crate) fn page_params(raw: &str, default: u32) -> Result<(usize, usize), AppError> {
    let max = canopy_core::list::MAX_PAGE_SIZE;
    let (mut size, mut offset) = (default, 0usize);
    for (k, v) in canopy_core::list::form_pairs(raw)? {
        let n: i64 = v
            .trim()
            .parse()
            .map_err(|_| AppError::Invalid(format!("invalid {k} {v:?}: must be a whole number")))?;
        match k.as_str() {
            "pageSize" if (0..=i64::from(max)).contains(&n) => {
                size = if n == 0 { default } else { n as u32 }
            }
            "pageSize" => {
                return Err(AppError::Invalid(format!(
                    "invalid pageSize {n}: must be from 0 to {max}"
                )));
            }
            "offset" if n >= 0 => offset = usize::try_from(n).unwrap_or(usize::MAX),
            "offset" => {
                return Err(AppError::Invalid(format!(
                    "invalid offset {n}: must not be negative"
                )));
            }
            other => {
                return Err(AppError::Invalid(format!(
                    "unknown query parameter {other:?}"
                )));
            }
        }
    }
    Ok((size as usize, offset))
}

// ------------------------------------------------------------------ rate limits

/// How often a keyed limit forgets keys whose state has recovered completely.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Keys held beyond which a limit prunes sooner (at most once a second), and only once it holds
/// twice what the last pruning kept: 10,000 edges polling steadily are 10,000 live keys that no
/// pruning removes, and walking them every second was a measurable share of an idle server's
/// CPU (docs/BENCHMARKS.md, "Idle cost and fan-out at 10,000 edges").
const PRUNE_AT_LEN: usize = 4096;
/// Every how many checks the number of keys is looked at (it takes every shard's lock).
const LEN_CHECK_EVERY: u64 = 256;

/// governor's keyed limiter over `clock`.
type Keyed<C> =
    RateLimiter<String, DashMapStateStore<String>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// A rate limit per key (see the module doc): governor's keyed GCRA limiter, pruned of idle
/// keys so memory follows the keys active recently.
pub(crate) struct KeyedLimit<C: Clock = DefaultClock> {
    /// `None`: no limit.
    limiter: Option<Keyed<C>>,
    clock: C,
    start: C::Instant,
    /// When keys were last pruned (nanoseconds after `start`).
    pruned_at: AtomicU64,
    checks: AtomicU64,
    /// Keys left by the last pruning.
    kept: AtomicUsize,
}

impl KeyedLimit {
    /// `per_second` sustained (0: no limit), bursts of `burst` (at least 1).
    pub(crate) fn new(per_second: u32, burst: u32) -> KeyedLimit {
        KeyedLimit::with_clock(per_second, burst, DefaultClock::default())
    }
}

impl<C: Clock + Clone> KeyedLimit<C> {
    fn with_clock(per_second: u32, burst: u32, clock: C) -> KeyedLimit<C> {
        let quota = NonZeroU32::new(per_second).map(|rate| {
            Quota::per_second(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
        });
        KeyedLimit {
            limiter: quota.map(|q| RateLimiter::dashmap_with_clock(q, clock.clone())),
            start: clock.now(),
            clock,
            pruned_at: AtomicU64::new(0),
            checks: AtomicU64::new(0),
            kept: AtomicUsize::new(0),
        }
    }

    /// Lets one request of `key` pass, or says in how many whole seconds one would.
    pub(crate) fn check(&self, key: &str) -> Result<(), u64> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        let now = self.clock.now();
        self.prune(limiter, now);
        limiter.check_key(&key.to_string()).map_err(|not_until| {
            let wait = not_until.wait_time_from(now);
            (wait.as_secs_f64().ceil() as u64).max(1)
        })
    }

    /// Forgets the keys whose state has recovered completely, when it is time.
    fn prune(&self, limiter: &Keyed<C>, now: C::Instant) {
        let at = now.duration_since(self.start).as_u64();
        let last = self.pruned_at.load(Ordering::Relaxed);
        let since = Duration::from_nanos(at.saturating_sub(last));
        let periodic = since >= PRUNE_EVERY;
        let due = periodic
            || (since >= Duration::from_secs(1)
                && self
                    .checks
                    .fetch_add(1, Ordering::Relaxed)
                    .is_multiple_of(LEN_CHECK_EVERY)
                && limiter.len() >= PRUNE_AT_LEN.max(2 * self.kept.load(Ordering::Relaxed)));
        if due
            && self
                .pruned_at
                .compare_exchange(last, at, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            limiter.retain_recent();
            // Giving memory back rehashes what is left: once a minute, not every second.
            if periodic {
                limiter.shrink_to_fit();
            }
            self.kept.store(limiter.len(), Ordering::Relaxed);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.limiter.as_ref().map_or(0, RateLimiter::len)
    }
}

/// The per-edge rate limit of the agent protocol, in every request's extensions (applied by
/// the agent handlers once they know the edge; see the module doc).
#[derive(Clone)]
pub struct EdgeRateLimit(Arc<KeyedLimit>);

impl EdgeRateLimit {
    /// Lets one request of edge `edge_id` pass, or refuses it (429 with `Retry-After`).
    pub fn check(&self, edge_id: &str) -> Result<(), AppError> {
        self.0.check(edge_id).map_err(AppError::RateLimited)
    }
}

// ------------------------------------------------------------------ long-polls

/// Counts the desired-state long-polls waiting (see the module doc). The limits middleware puts
/// it into every request's extensions; the long-poll handler holds a [`LongPollPermit`] while
/// it waits.
pub struct LongPollGate {
    max_total: usize,
    max_per_edge: usize,
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    total: usize,
    per_edge: HashMap<String, usize>,
}

/// One waiting long-poll; leaves the count when dropped.
pub struct LongPollPermit {
    gate: Arc<LongPollGate>,
    edge: String,
}

impl LongPollGate {
    pub(crate) fn new(max_total: usize, max_per_edge: usize) -> LongPollGate {
        LongPollGate {
            max_total,
            max_per_edge,
            state: Mutex::new(GateState::default()),
        }
    }

    /// Admits one more long-poll of `edge`, or says why not (answer it at once).
    pub fn enter(self: &Arc<Self>, edge: &str) -> Result<LongPollPermit, LongPollRefused> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.total >= self.max_total {
            return Err(LongPollRefused::ServerFull {
                max: self.max_total,
            });
        }
        let mine = s.per_edge.get(edge).copied().unwrap_or(0);
        if mine >= self.max_per_edge {
            return Err(LongPollRefused::EdgeBusy {
                edge: edge.to_string(),
                max: self.max_per_edge,
            });
        }
        s.total += 1;
        s.per_edge.insert(edge.to_string(), mine + 1);
        Ok(LongPollPermit {
            gate: self.clone(),
            edge: edge.to_string(),
        })
    }

    /// Long-polls waiting now.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

/// Why a long-poll was not admitted; answered as 503 or 429 with `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LongPollRefused {
    /// The process holds its maximum of long-polls: 503, retry in 5 to 30 s.
    ServerFull { max: usize },
    /// This edge already has its maximum waiting: 429, retry in 5 s.
    EdgeBusy { edge: String, max: usize },
}

impl IntoResponse for LongPollRefused {
    fn into_response(self) -> Response {
        let (mut r, retry) = match self {
            LongPollRefused::ServerFull { max } => {
                // Spread the retries of refused agents over 5..=30 s.
                let spread = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::from(d.subsec_nanos()) % 26);
                let r = AppError::Unavailable(format!(
                    "the server is holding its maximum of {max} long-polls; retry later"
                ))
                .into_response();
                (r, 5 + spread)
            }
            LongPollRefused::EdgeBusy { edge, max } => {
                let r = error_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    8,
                    format!(
                        "edge {edge} already has {max} long-polls waiting; wait for them to answer"
                    ),
                );
                (r, 5)
            }
        };
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry));
        r
    }
}

impl std::fmt::Debug for LongPollPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LongPollPermit")
            .field("edge", &self.edge)
            .finish()
    }
}

impl Drop for LongPollPermit {
    fn drop(&mut self) {
        let mut s = self.gate.state.lock().unwrap_or_else(|p| p.into_inner());
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_edge.get_mut(&self.edge) {
            *n -= 1;
            if *n == 0 {
                s.per_edge.remove(&self.edge);
            }
        }
    }
}

// ------------------------------------------------------------------ slow bodies

/// A request body with a read deadline (see the module doc).
struct TimedBody {
    inner: Body,
    /// Created at the first read.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    timeout: Duration,
    min_rate: u32,
    /// Set when the deadline passed, for the middleware to answer 408.
    expired: Arc<AtomicBool>,
}

/// The error a [`TimedBody`] ends with.
#[derive(Debug)]
struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body arrived too slowly")
    }
}

impl std::error::Error for BodyTimeout {}

impl TimedBody {
    /// Moves the deadline on for `bytes` received.
    fn received(&mut self, bytes: usize) {
        let Some(sleep) = self.sleep.as_mut() else {
            return;
        };
        let now = tokio::time::Instant::now();
        let cap = now + self.timeout;
        let next = if self.min_rate == 0 {
            cap
        } else {
            let extra = Duration::from_secs_f64(bytes as f64 / f64::from(self.min_rate));
            (sleep.deadline() + extra).min(cap)
        };
        sleep.as_mut().reset(next);
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.expired.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(BodyTimeout.into())));
        }
        let timeout = this.timeout;
        this.sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received(data.len());
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let sleep = this.sleep.as_mut().expect("created above");
                if sleep.as_mut().poll(cx).is_ready() {
                    this.expired.store(true, Ordering::Relaxed);
                    Poll::Ready(Some(Err(BodyTimeout.into())))
                } else {
                    Poll::Pending
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_params_are_bounded() {
        assert_eq!(page_params("", 500).unwrap(), (500, 0));
        assert_eq!(page_params("pageSize=0&offset=3", 20).unwrap(), (20, 3));
        assert_eq!(page_params("pageSize=500", 20).unwrap(), (500, 0));
        for (raw, name) in [
            ("pageSize=501", "pageSize"),
            ("pageSize=-1", "pageSize"),
            ("offset=-1", "offset"),
            ("offset=x", "offset"),
            ("filter=a", "filter"),
        ] {
            let e = page_params(raw, 20).unwrap_err().to_string();
            assert!(e.contains(name), "{raw}: {e}");
        }
    }

    use governor::clock::FakeRelativeClock;

    fn limit(per_second: u32, burst: u32) -> (KeyedLimit<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (
            KeyedLimit::with_clock(per_second, burst, clock.clone()),
            clock,
        )
    }

    #[test]
    fn keys_get_the_burst_then_the_rate() {
        let (r, clock) = limit(10, 5);
        for _ in 0..5 {
            assert_eq!(r.check("a"), Ok(()));
        }
        assert_eq!(r.check("a"), Err(1));
        // Another key has its own state.
        assert_eq!(r.check("b"), Ok(()));
        // 0.25 s brings two requests back at 10/s.
        clock.advance(Duration::from_millis(250));
        assert_eq!(r.check("a"), Ok(()));
        assert_eq!(r.check("a"), Ok(()));
        assert!(r.check("a").is_err());
    }

    #[test]
    fn retry_after_says_when_a_request_would_pass() {
        let (r, _) = limit(1, 1);
        assert_eq!(r.check("a"), Ok(()));
        assert_eq!(r.check("a"), Err(1));
        let (slow, clock) = limit(1, 3);
        for _ in 0..3 {
            slow.check("a").unwrap();
        }
        clock.advance(Duration::from_millis(100));
        assert_eq!(slow.check("a"), Err(1));
    }

    #[test]
    fn zero_rate_is_no_limit() {
        let (r, _) = limit(0, 0);
        for _ in 0..10_000 {
            assert_eq!(r.check("a"), Ok(()));
        }
        assert_eq!(r.len(), 0, "nothing is kept");
    }

    #[test]
    fn recovered_keys_are_forgotten() {
        let (r, clock) = limit(100, 10);
        for i in 0..1000 {
            r.check(&format!("k{i}")).unwrap();
        }
        assert_eq!(r.len(), 1000);
        // A minute later every key has recovered; the next check prunes them.
        clock.advance(PRUNE_EVERY);
        for i in 0..200 {
            r.check(&format!("fresh{i}")).unwrap();
        }
        assert!(r.len() <= 200, "{}", r.len());
    }

    #[test]
    fn many_keys_are_pruned_sooner() {
        let (r, clock) = limit(100, 1);
        for i in 0..PRUNE_AT_LEN + 100 {
            r.check(&format!("k{i}")).unwrap();
        }
        // One request each at 100/s and a burst of 1: recovered after 10 ms. A second on
        // (not a minute), the map is over its size and the next checks prune it.
        clock.advance(Duration::from_secs(1));
        for i in 0..LEN_CHECK_EVERY as usize {
            r.check(&format!("again{i}")).unwrap();
        }
        assert!(r.len() <= LEN_CHECK_EVERY as usize, "{}", r.len());
    }

    #[test]
    fn live_keys_are_not_walked_every_second() {
        let (r, clock) = limit(1, 5);
        let fleet = PRUNE_AT_LEN + 100;
        // At 1/s, three requests take three seconds to recover from: no key recovers below.
        let round = |r: &KeyedLimit<FakeRelativeClock>, times: usize| {
            for i in 0..fleet {
                for _ in 0..times {
                    r.check(&format!("edge{i}")).unwrap();
                }
            }
        };
        round(&r, 3);
        clock.advance(Duration::from_secs(1));
        round(&r, 1);
        // The first pruning walked the map and kept every key (none had recovered).
        let first = r.pruned_at.load(Ordering::Relaxed);
        assert!(first > 0, "pruned once over {PRUNE_AT_LEN} keys");
        assert_eq!(r.kept.load(Ordering::Relaxed), fleet);
        // The same keys a second later: not walked again (they are under twice what was kept).
        clock.advance(Duration::from_secs(1));
        round(&r, 1);
        assert_eq!(r.pruned_at.load(Ordering::Relaxed), first);
        // Twice as many keys: walked again at once.
        for i in 0..fleet + LEN_CHECK_EVERY as usize {
            let _ = r.check(&format!("more{i}"));
        }
        assert!(r.pruned_at.load(Ordering::Relaxed) > first);
    }

    #[test]
    fn long_poll_gate_counts_per_edge_and_in_all() {
        let g = Arc::new(LongPollGate::new(3, 2));
        let a1 = g.enter("a").unwrap();
        let a2 = g.enter("a").unwrap();
        let refused = g.enter("a").unwrap_err().into_response();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.headers().contains_key(header::RETRY_AFTER));
        let b1 = g.enter("b").unwrap();
        let full = g.enter("c").unwrap_err().into_response();
        assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
        let secs: u64 = full.headers()[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((5..=30).contains(&secs), "{secs}");
        assert_eq!(g.waiting(), 3);
        drop(a1);
        let _a3 = g.enter("a").unwrap();
        drop((a2, b1));
        assert_eq!(g.waiting(), 1);
        assert_eq!(g.state.lock().unwrap().per_edge.len(), 1);
    }
}
