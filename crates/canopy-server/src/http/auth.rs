//! The authentication middleware: every request except a few public paths must carry a valid
//! bearer token. The caller found is put into the request's extensions (for [`super::Caller`])
//! and the response's (for the audit log, which wraps this layer).
//!
//! Public: the health check, the OpenAPI document, `login`, and the agent protocol (agents
//! authenticate with their per-edge credential inside those handlers; a user token does not
//! work there and an edge credential does not work anywhere else).
//!
//! The web console's paths (`/` and everything under [`CONSOLE_PREFIX`], served by the
//! `canopy-web` crate) carry the caller's login session in the [`SESSION_COOKIE`] cookie instead
//! of a header, and only there: a cookie is sent by the browser on its own, so an API path that
//! accepted it would be open to cross-site request forgery (the console checks a CSRF token on
//! every change; the API has none). A console request without a valid cookie passes through
//! without a caller, and the console answers it with its sign-in page. Either way the caller
//! found goes into the request's extensions exactly as for the API, so rate limits and the
//! audit log treat console callers as API callers.

use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};

use crate::app::{App, Principal};

/// The path prefix of the web console's pages and assets (see the module doc).
pub const CONSOLE_PREFIX: &str = "/ui/";

/// The cookie that carries a console session's token (see the module doc).
pub const SESSION_COOKIE: &str = "canopy_session";

/// Whether `path` is the web console's (see the module doc).
pub fn is_console(path: &str) -> bool {
    path == "/" || path.starts_with(CONSOLE_PREFIX)
}

/// Paths served without a user token.
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/openapi.json" | "/canopy/v1/login")
        || path.starts_with("/canopy/v1/agent/")
        // Between replicas: authenticated by the peers' MAC (`tunnels::peer`).
        || path.starts_with("/canopy/v1/peer/")
}

/// Authenticates the request (see the module doc).
///
/// `next` runs the rest of the stack (see [`super::layers`]).
pub(crate) async fn authenticate<F, Fut>(app: &App, mut req: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    if is_public(req.uri().path()) {
        return next(req).await;
    }
    if is_console(req.uri().path()) {
        return authenticate_console(app, req, next).await;
    }
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    match app.authenticate(header).await {
        Ok(principal) => {
            req.extensions_mut().insert(principal.clone());
            let mut response = next(req).await;
            response
                .extensions_mut()
                .insert::<Arc<Principal>>(principal);
            response
        }
        Err(e) => e.into_response(),
    }
}

/// The console's session cookie, when the request carries one (the last one of that name).
pub fn session_cookie(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .filter(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
        .next_back()
}

/// A console request: the caller of a valid session cookie, else none (see the module doc).
/// Only Canopy session tokens count: an API token pasted into the cookie is not a session.
async fn authenticate_console<F, Fut>(app: &App, mut req: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let token = session_cookie(req.headers()).filter(|t| {
        canopy_auth::token::TokenKind::of(t) == Some(canopy_auth::token::TokenKind::Session)
    });
    let principal = match token {
        Some(t) => app.authenticate(Some(&format!("Bearer {t}"))).await.ok(),
        None => None,
    };
    let Some(principal) = principal else {
        return next(req).await;
    };
    req.extensions_mut().insert(principal.clone());
    let mut response = next(req).await;
    response
        .extensions_mut()
        .insert::<Arc<Principal>>(principal);
    response
}
