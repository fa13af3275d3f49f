//! Live updates of the deployments pages over server-sent events (docs/UI.md, "Live updates").
//!
//! **Why a "changed" signal and not rows.** A project may have 10,000 edges: the server never
//! renders or sends the fleet per change. A stream (`GET /ui/projects/{project}/live`) carries
//! only `event: changed` messages, and the page's script (`assets/live.js`) answers one by
//! fetching the page it shows (the current page of 100 or 50 rows, with its filters) and
//! swapping the parts marked `data-live`. Changes come from the hub's per-project change
//! counter (`App::watch_fleet`): no polling of the store, one `watch` receiver per stream.
//!
//! **Bounded.** Bursts are coalesced: at most one `changed` per stream per
//! [`MIN_INTERVAL`], however many reports arrive. Open streams are bounded per signed-in user
//! ([`PER_USER`], counted by login session or OIDC subject) and per server ([`GLOBAL`]); a
//! stream past either bound is refused with 429 before anything is subscribed. An open stream
//! costs a task-less future, a `watch` receiver and a few timers. A stream re-checks its
//! session every [`SESSION_CHECK`] (a token-cache hit) and ends with `event: ended` after
//! logout or expiry; it also ends when the server shuts down, and sends `changed` every
//! [`REFRESH`] so that what time alone changes (ages, an edge going UNKNOWN after the edge
//! timeout) shows too.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use canopy_server::App;
use futures::Stream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::session::Session;

/// Streams one user may hold open at once (tabs showing a live page).
pub const PER_USER: usize = 4;
/// Streams the server holds open at once.
pub const GLOBAL: usize = 64;
/// At most one `changed` per stream per this interval.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// How often a stream checks that its session is still valid.
pub const SESSION_CHECK: Duration = Duration::from_secs(5);
/// How often a stream says `changed` when nothing changed (time passes).
pub const REFRESH: Duration = Duration::from_secs(60);

/// The open streams, per user and in all (shared by the router's handlers).
#[derive(Debug, Default)]
pub struct Streams {
    open: Mutex<(usize, HashMap<String, usize>)>,
}

/// One open stream's place in [`Streams`], given back when the stream is dropped.
struct Slot {
    streams: Arc<Streams>,
    user: String,
}

impl Streams {
    /// A slot for `user`, or why not.
    fn acquire(self: &Arc<Self>, user: &str) -> Result<Slot, String> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.0 >= GLOBAL {
            return Err(format!(
                "the server has {GLOBAL} live streams open; the page still works, reload it for news"
            ));
        }
        let mine = open.1.entry(user.to_string()).or_default();
        if *mine >= PER_USER {
            return Err(format!(
                "this user has {PER_USER} live pages open already; close one (this page still works, reload it for news)"
            ));
        }
        *mine += 1;
        open.0 += 1;
        Ok(Slot {
            streams: Arc::clone(self),
            user: user.to_string(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .streams
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.user);
            }
        }
    }
}

/// What a stream holds between messages.
struct Live {
    app: App,
    changes: watch::Receiver<u64>,
    /// `Bearer <session token>`, to re-check the session (never sent anywhere).
    bearer: String,
    last_sent: Instant,
    next_check: Instant,
    next_refresh: Instant,
    done: bool,
    _slot: Slot,
}

/// `GET /ui/projects/{project}/live`: `event: changed` whenever the project's deployments or
/// edges change (see the module doc). Needs fleet read access on the project.
pub async fn stream(
    State(app): State<App>,
    Extension(streams): Extension<Arc<Streams>>,
    session: Session,
    headers: HeaderMap,
    Path(project): Path<String>,
) -> Result<Response, crate::error::WebError> {
    let ctx = session.ctx(&app, &project).await?;
    let changes = app.watch_fleet(&ctx)?;
    let Some(token) = canopy_server::http::session_cookie(&headers) else {
        return Ok(StatusCode::UNAUTHORIZED.into_response());
    };
    let slot = match streams.acquire(&session.principal.rate_key()) {
        Ok(slot) => slot,
        Err(message) => return Ok((StatusCode::TOO_MANY_REQUESTS, message).into_response()),
    };
    let now = Instant::now();
    let live = Live {
        app,
        changes,
        bearer: format!("Bearer {token}"),
        last_sent: now - MIN_INTERVAL,
        next_check: now + SESSION_CHECK,
        next_refresh: now + REFRESH,
        done: false,
        _slot: slot,
    };
    let first = futures::stream::once(async { Ok(Event::default().event("hello").data("live")) });
    let events = futures::StreamExt::chain(first, events(live));
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The stream's messages after the first.
fn events(live: Live) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(live, |mut live| async move {
        if live.done {
            return None;
        }
        let shutdown = live.app.shutting_down();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return None,
                changed = live.changes.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    // Coalesce: wait out the interval, then take whatever came meanwhile.
                    tokio::time::sleep_until(live.last_sent + MIN_INTERVAL).await;
                    live.changes.borrow_and_update();
                    return Some((Ok(live.changed()), live));
                }
                () = tokio::time::sleep_until(live.next_refresh) => {
                    return Some((Ok(live.changed()), live));
                }
                () = tokio::time::sleep_until(live.next_check) => {
                    live.next_check = Instant::now() + SESSION_CHECK;
                    if live.app.authenticate(Some(&live.bearer)).await.is_err() {
                        live.done = true;
                        let ended = Event::default()
                            .event("ended")
                            .data("the session ended: sign in again for live updates");
                        return Some((Ok(ended), live));
                    }
                }
            }
        }
    })
}

impl Live {
    /// A `changed` message, noting when it was sent.
    fn changed(&mut self) -> Event {
        let now = Instant::now();
        self.last_sent = now;
        self.next_refresh = now + REFRESH;
        // Not empty: browsers drop an event whose data is empty (the SSE processing model).
        Event::default().event("changed").data("changed")
    }
}
