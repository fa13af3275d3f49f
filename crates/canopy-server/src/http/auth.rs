//! The authentication middleware: every request except a few public paths must carry a valid
//! bearer token. The caller found is put into the request's extensions (for [`super::Caller`])
//! and the response's (for the audit log, which wraps this layer).
//!
//! Public: the health check, the OpenAPI document, `login`, and the agent protocol (agents
//! authenticate with their per-edge credential inside those handlers; a user token does not
//! work there and an edge credential does not work anywhere else).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::{App, Principal};

/// Paths served without a user token.
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/openapi.json" | "/canopy/v1/login")
        || path.starts_with("/canopy/v1/agent/")
}

/// Authenticates the request (see the module doc).
pub async fn authenticate(State(app): State<App>, mut req: Request, next: Next) -> Response {
    if is_public(req.uri().path()) {
        return next.run(req).await;
    }
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    match app.authenticate(header).await {
        Ok(principal) => {
            req.extensions_mut().insert(principal.clone());
            let mut response = next.run(req).await;
            response
                .extensions_mut()
                .insert::<Arc<Principal>>(principal);
            response
        }
        Err(e) => e.into_response(),
    }
}
