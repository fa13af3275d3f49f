//! Sign-in through the configured OIDC identity provider: the authorization code flow with
//! PKCE (`S256`). The protocol and the session are the app layer's
//! (`App::oidc_sign_in_start`, `App::oidc_sign_in_finish`); this module moves the browser.
//!
//! `GET /ui/oidc/start` sends the browser to the provider and keeps the pending sign-in
//! (`state`, `nonce`, PKCE verifier, start time) in the [`PENDING_COOKIE`] cookie:
//! `HttpOnly; Secure; SameSite=Lax; Path=/ui/oidc/; Max-Age=600`. `Lax`, not `Strict`: the
//! provider's redirect back is a cross-site top-level navigation, which a `Strict` cookie would
//! not follow. Nothing about the sign-in is kept on the server, so starting sign-ins costs it
//! nothing but a redirect.
//!
//! `GET /ui/oidc/callback` always clears that cookie (a pending sign-in is used at most once),
//! then either shows the provider's error, or checks `state` and finishes the sign-in, which
//! sets the same session cookie as a password sign-in. Every failure is shown on the sign-in
//! page with the reason (never a code or token). The redirect URI is
//! `<--public-url>/ui/oidc/callback`, or without a public URL this server's address as the
//! browser used it (`Host`, with `https` when the server serves TLS).

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use canopy_auth::oidc_login::{PendingLogin, provider_error};
use canopy_server::App;
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use super::login::login_response;
use crate::error::WebError;
use crate::session;

/// Where the sign-in button leads.
pub const START_PATH: &str = "/ui/oidc/start";

/// Where the provider sends the browser back (the redirect URI's path).
pub const CALLBACK_PATH: &str = "/ui/oidc/callback";

/// The cookie that carries a pending sign-in (see the module doc).
pub const PENDING_COOKIE: &str = "canopy_oidc";

/// The pending cookie's lifetime (the app layer refuses older sign-ins too).
const PENDING_TTL_SECONDS: u64 = canopy_auth::oidc_login::LOGIN_TTL.as_secs();

fn pending_cookie(value: &str, max_age: u64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{PENDING_COOKIE}={value}; HttpOnly; Secure; SameSite=Lax; Path=/ui/oidc/; Max-Age={max_age}"
    ))
    .expect("pending sign-ins are cookie-safe")
}

/// The redirect URI of this server (see the module doc).
fn redirect_uri(app: &App, headers: &HeaderMap) -> Result<String, WebError> {
    if let Some(public) = app.public_url() {
        return Ok(format!("{}{CALLBACK_PATH}", public.trim_end_matches('/')));
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .ok_or_else(|| {
            WebError::App(canopy_server::app::AppError::Invalid(
                "the request has no usable Host header: set --public-url".into(),
            ))
        })?;
    let scheme = if app.serves_tls() { "https" } else { "http" };
    Ok(format!("{scheme}://{host}{CALLBACK_PATH}"))
}

/// The sign-in page with `error`, the pending cookie cleared.
fn failed(app: &App, status: StatusCode, message: &str) -> Response {
    let mut response = login_response(app, status, "", Some(message));
    response
        .headers_mut()
        .append(header::SET_COOKIE, pending_cookie("", 0));
    response
}

fn failed_with(app: &App, e: impl Into<WebError>) -> Response {
    let (status, message) = e.into().status_and_message();
    failed(app, status, &message)
}

/// `GET /ui/oidc/start`: to the provider, with the pending sign-in in its cookie.
pub async fn start(State(app): State<App>, headers: HeaderMap) -> Response {
    if app.console_oidc().is_none() {
        return WebError::App(canopy_server::app::AppError::NotFound(
            "OIDC sign-in is not configured".into(),
        ))
        .into_response();
    }
    let redirect = match redirect_uri(&app, &headers) {
        Ok(r) => r,
        Err(e) => return failed_with(&app, e),
    };
    match app.oidc_sign_in_start(&redirect).await {
        Ok((url, pending)) => {
            let mut response = Redirect::to(&url).into_response();
            response.headers_mut().append(
                header::SET_COOKIE,
                pending_cookie(&pending.encode(), PENDING_TTL_SECONDS),
            );
            response
        }
        Err(e) => failed_with(&app, e),
    }
}

/// The answer to a finished sign-in: a page that moves on to the console by itself. Not a
/// redirect: the browser came here from the provider's site, and a redirect would carry on
/// that cross-site navigation, on which browsers do not send the `SameSite=Strict` session
/// cookie just set; the page's own (same-site) refresh does. No script (the CSP forbids
/// inline script): a `<meta http-equiv="refresh">`, and a link for browsers that ignore it.
fn signed_in_page(actor: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content="0;url=/";
                title { "Signed in · Canopy" }
                link rel="stylesheet" href=(crate::stylesheet_path());
            }
            body {
                main {
                    div.card.narrow {
                        h1 { "Signed in" }
                        p #oidc-signed-in { "Signed in as " (actor) "." }
                        p { a.button #continue href="/" { "Continue to the console" } }
                    }
                }
            }
        }
    }
}

/// What the provider sends back (RFC 6749 §4.1.2 and §4.1.2.1).
#[derive(Deserialize)]
pub struct CallbackQuery {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// `GET /ui/oidc/callback`: finishes the sign-in (see the module doc).
pub async fn callback(
    State(app): State<App>,
    headers: HeaderMap,
    query: Result<Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if app.console_oidc().is_none() {
        return WebError::App(canopy_server::app::AppError::NotFound(
            "OIDC sign-in is not configured".into(),
        ))
        .into_response();
    }
    let Ok(Query(query)) = query else {
        return failed(
            &app,
            StatusCode::BAD_REQUEST,
            "the identity provider's answer is malformed: please sign in again",
        );
    };
    if let Some(error) = &query.error {
        let message = format!(
            "the identity provider refused the sign-in: {}",
            provider_error(Some(error), query.error_description.as_deref())
        );
        return failed(&app, StatusCode::UNAUTHORIZED, &message);
    }
    let pending = session::cookie_value(&headers, PENDING_COOKIE).and_then(PendingLogin::decode);
    let Some(pending) = pending else {
        return failed(
            &app,
            StatusCode::BAD_REQUEST,
            &canopy_auth::oidc_login::LoginError::Expired.to_string(),
        );
    };
    let (Some(code), Some(state)) = (query.code.as_deref(), query.state.as_deref()) else {
        return failed(
            &app,
            StatusCode::BAD_REQUEST,
            "the identity provider sent no code or state back: please sign in again",
        );
    };
    let redirect = match redirect_uri(&app, &headers) {
        Ok(r) => r,
        Err(e) => return failed_with(&app, e),
    };
    match app
        .oidc_sign_in_finish(&pending, state, code, &redirect)
        .await
    {
        Ok(signed) => {
            let mut response = signed_in_page(&signed.actor).into_response();
            let h = response.headers_mut();
            h.append(
                header::SET_COOKIE,
                session::session_cookie(&signed.token, signed.max_age),
            );
            h.append(header::SET_COOKIE, pending_cookie("", 0));
            response
        }
        Err(e) => failed_with(&app, e),
    }
}
