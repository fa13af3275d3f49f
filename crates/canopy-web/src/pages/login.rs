//! Sign-in and sign-out. Sign-in is the app layer's `App::login` (the same path as
//! `POST /canopy/v1/login`: its limits per source address and user name, its bounded password
//! hashing, its session lifetime); the session token it issues goes into the session cookie and
//! nowhere else. Sign-out is `App::logout`: the token is revoked, not just forgotten.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use canopy_server::App;
use canopy_server::http::AuditActor;
use maud::{Markup, html};
use serde::Deserialize;
use time::OffsetDateTime;

use super::document;
use crate::error::WebError;
use crate::security::same_origin;
use crate::session::{self, Session};
use crate::{CSRF_FIELD, LOGIN_PATH};

/// The sign-in form.
#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

/// The sign-in page, with the server's error in place when there is one, and the button of
/// the OIDC provider (`oidc`: its name) when the console signs in through one.
fn login_page(csrf: &str, username: &str, error: Option<&str>, oidc: Option<&str>) -> Markup {
    document(
        "Sign in",
        html! {
            main {
                div.card.narrow {
                    h1 { "Sign in to Canopy" }
                    @if let Some(e) = error {
                        p.error #login-error role="alert" { (e) }
                    }
                    form method="post" action=(LOGIN_PATH) {
                        input type="hidden" name=(CSRF_FIELD) value=(csrf);
                        label for="username" { "User name" }
                        input #username type="text" name="username" value=(username)
                            autocomplete="username" required autofocus;
                        label for="password" { "Password" }
                        input #password type="password" name="password"
                            autocomplete="current-password" required;
                        p { button #sign-in type="submit" { "Sign in" } }
                    }
                    @if let Some(provider) = oidc {
                        div.oidc-sign-in {
                            p.or { "or" }
                            p {
                                a.button.secondary #oidc-sign-in href=(super::oidc::START_PATH) {
                                    "Sign in with " (provider)
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// A sign-in page answer with a fresh form CSRF value (cookie and field).
pub(crate) fn login_response(
    app: &App,
    status: StatusCode,
    username: &str,
    error: Option<&str>,
) -> Response {
    let (csrf, set_cookie) = session::new_login_csrf();
    let oidc = app.console_oidc().map(|c| c.label.as_str());
    let mut response = (status, login_page(&csrf, username, error, oidc)).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie);
    response
}

/// `GET /ui/login`: signed-in users go to the console, others get the form.
pub async fn show(State(app): State<App>, session: Result<Session, Response>) -> Response {
    if session.is_ok() {
        return Redirect::to("/").into_response();
    }
    login_response(&app, StatusCode::OK, "", None)
}

/// `POST /ui/login`.
pub async fn submit(
    State(app): State<App>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let mut response = sign_in(&app, peer, &headers, &form).await;
    // The audit log names who tried (never the password), as the API's login does.
    let name: String = form
        .username
        .chars()
        .filter(|c| !c.is_control())
        .take(63)
        .collect();
    response
        .extensions_mut()
        .insert(AuditActor(format!("login:{name}")));
    response
}

async fn sign_in(
    app: &App,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: &HeaderMap,
    form: &LoginForm,
) -> Response {
    if let Err(e) = same_origin(&Method::POST, headers, app.public_url()) {
        return e.into_response();
    }
    if !session::login_csrf_ok(headers, &form.csrf) {
        return login_response(
            app,
            StatusCode::FORBIDDEN,
            &form.username,
            Some("the sign-in form has expired: please sign in again"),
        );
    }
    let forwarded_for: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let forwarded_for = (!forwarded_for.is_empty()).then(|| forwarded_for.join(","));
    let source = app.login_source(
        peer.map(|Extension(ConnectInfo(a))| a.ip()),
        forwarded_for.as_deref(),
    );
    match app.login(&form.username, &form.password, source).await {
        Ok(issued) => {
            let expires = OffsetDateTime::parse(
                &issued.info.expire_time,
                &time::format_description::well_known::Rfc3339,
            )
            .ok();
            let max_age = expires
                .map(|e| (e - OffsetDateTime::now_utc()).whole_seconds().max(0))
                .unwrap_or(3600);
            let mut response = Redirect::to("/").into_response();
            let h = response.headers_mut();
            h.append(
                header::SET_COOKIE,
                session::session_cookie(&issued.token, max_age.unsigned_abs()),
            );
            response
        }
        Err(e) => {
            let (status, message) = WebError::from(e).status_and_message();
            login_response(app, status, &form.username, Some(&message))
        }
    }
}

/// The sign-out form.
#[derive(Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /ui/logout`: revokes the session's token and clears the cookie.
pub async fn logout(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Form(form): Form<LogoutForm>,
) -> Result<Response, WebError> {
    same_origin(&Method::POST, &headers, app.public_url())?;
    session.check_csrf(&form.csrf)?;
    // An OIDC sign-in's session ends here (the provider's own session is left alone: see
    // docs/UI.md); a built-in user's session token is revoked.
    let oidc_session =
        canopy_server::http::session_cookie(&headers).is_some_and(|token| app.oidc_sign_out(token));
    if !oidc_session {
        app.logout(&session.principal).await?;
    }
    let mut response = Redirect::to(LOGIN_PATH).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session::clear_session_cookie());
    Ok(response)
}
