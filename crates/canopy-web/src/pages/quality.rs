//! The console's own answers to "no such page" and "too many requests": HTML pages instead of
//! the API's JSON, so a person who mistypes a path or clicks too fast reads what happened, in
//! the console's frame when signed in.
//!
//! The rate limit itself is the server's (`canopy_server::http::limits`): over it, the server
//! hands a console request on with [`ConsoleRateLimited`] instead of answering JSON, and
//! [`rate_limited`], the console's outermost layer but the headers, answers 429 at once with
//! the server's message and `Retry-After`, **without running the page's handler**.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use canopy_server::App;
use canopy_server::http::ConsoleRateLimited;
use maud::html;

use super::{Frame, Section, error_page};
use crate::session::Session;

/// Any `/ui/...` path no page answers: a 404 page, in the frame when signed in.
pub async fn not_found(
    State(app): State<App>,
    session: Result<Session, Response>,
    uri: axum::http::Uri,
) -> Response {
    let message = format!("no such page {}", uri.path());
    let Ok(session) = session else {
        return (
            StatusCode::NOT_FOUND,
            error_page(StatusCode::NOT_FOUND, &message),
        )
            .into_response();
    };
    let project = first_project(&app, &session).await;
    let frame = match Frame::load(&app, &session, &project, Section::Deployments).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let page = frame.page(
        "Not found",
        html! {
            h1 { "404 Not Found" }
            p.error role="alert" { (message) }
            p { a href="/" { "Back to the console" } }
        },
    );
    (StatusCode::NOT_FOUND, page).into_response()
}

/// The project the frame's navigation points into when the path names none.
pub async fn first_project(app: &App, session: &Session) -> String {
    let projects = app
        .list_projects(&session.principal)
        .await
        .unwrap_or_default();
    projects
        .iter()
        .find(|p| p.name == canopy_server::app::DEFAULT_PROJECT)
        .or(projects.first())
        .map(|p| p.name.clone())
        .unwrap_or_default()
}

/// Answers a console request the server found over its rate limit (see the module doc).
pub async fn rate_limited(req: Request, next: Next) -> Response {
    let Some(limited) = req.extensions().get::<ConsoleRateLimited>().cloned() else {
        return next.run(req).await;
    };
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        error_page(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "{} (the server counts this session's pages like API calls; wait {} s before the next)",
                limited.message, limited.retry_after
            ),
        ),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(limited.retry_after));
    response
}
