//! Console sessions: the session cookie, CSRF tokens, and the [`Session`] extractor.
//!
//! A session is a Canopy login session token (`cnp_s_...`, issued by the app layer's
//! `App::login`, with its lifetime, rate limits and hashing bound): the console keeps it only in
//! the [`SESSION_COOKIE`] cookie (`HttpOnly; Secure; SameSite=Strict; Path=/`, expiring with the
//! token). The server's authentication middleware turns that cookie into the caller on console
//! paths; signing out revokes the token (`App::logout`), so a copied cookie stops working too.
//!
//! CSRF: every form that changes something carries [`CSRF_FIELD`], a token derived from the
//! session secret by SHA-256 with a domain-separation prefix ([`csrf_token`]). It is bound to
//! the session (another session's token does not pass), cannot be turned back into the session
//! secret, and needs no server-side state. The sign-in form, which has no session yet, is a
//! double submit: a random value in a `SameSite=Strict` cookie ([`LOGIN_CSRF_COOKIE`]) and the
//! same value in the form. On top of that, `security::same_origin` refuses any POST whose
//! `Origin` or `Sec-Fetch-Site` says it came from another site.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use canopy_server::App;
use canopy_server::app::{AppError, Ctx, Principal};
use canopy_server::http::SESSION_COOKIE;
use sha2::{Digest, Sha256};

use crate::LOGIN_PATH;
use crate::error::WebError;

/// The form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "csrf";

/// The cookie of the sign-in form's double-submit CSRF value.
pub const LOGIN_CSRF_COOKIE: &str = "canopy_login_csrf";

/// Lifetime of the sign-in form's CSRF value.
const LOGIN_CSRF_TTL_SECONDS: u64 = 3600;

/// The CSRF token of the session whose secret is `session_token` (see the module doc).
pub fn csrf_token(session_token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"canopy-web csrf v1\0");
    h.update(session_token.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.finalize())
}

/// Compares two secrets in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// `Set-Cookie` for a new session that lasts `max_age_seconds`.
pub fn session_cookie(token: &str, max_age_seconds: u64) -> HeaderValue {
    cookie(SESSION_COOKIE, token, "/", max_age_seconds)
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_session_cookie() -> HeaderValue {
    cookie(SESSION_COOKIE, "", "/", 0)
}

/// A new sign-in form CSRF value and the `Set-Cookie` that carries it.
pub fn new_login_csrf() -> (String, HeaderValue) {
    let value = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let set = cookie(
        LOGIN_CSRF_COOKIE,
        &value,
        LOGIN_PATH,
        LOGIN_CSRF_TTL_SECONDS,
    );
    (value, set)
}

/// Whether the sign-in form's CSRF value matches its cookie.
pub fn login_csrf_ok(headers: &HeaderMap, form_value: &str) -> bool {
    cookie_value(headers, LOGIN_CSRF_COOKIE)
        .is_some_and(|c| !c.is_empty() && same_secret(c, form_value))
}

fn cookie(name: &str, value: &str, path: &str, max_age: u64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}={value}; HttpOnly; Secure; SameSite=Strict; Path={path}; Max-Age={max_age}"
    ))
    .expect("cookie values are tokens")
}

/// The value of the cookie `name` (the last one of that name).
pub(crate) fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .filter(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .next_back()
}

/// A signed-in user: the caller the server's middleware found from the session cookie, and the
/// session's CSRF token. Extracting it without a valid session redirects to the sign-in page
/// (clearing a cookie that no longer works).
pub struct Session {
    pub principal: Arc<Principal>,
    /// The CSRF token forms of this session carry.
    pub csrf: String,
    request_id: String,
}

impl Session {
    /// The project `name` as this user may see it (404 when unknown or not theirs).
    pub async fn ctx(&self, app: &App, name: &str) -> Result<Ctx, AppError> {
        app.context(self.principal.clone(), name, self.request_id.clone())
            .await
    }

    /// Refuses (403) unless `form_value` is this session's CSRF token.
    pub fn check_csrf(&self, form_value: &str) -> Result<(), WebError> {
        if same_secret(&self.csrf, form_value) {
            Ok(())
        } else {
            Err(WebError::Csrf(
                "this form has expired or did not come from this session: reload the page and try again"
                    .into(),
            ))
        }
    }

    /// The user's name as shown in the page header.
    pub fn user(&self) -> &str {
        &self.principal.actor
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Response> {
        let principal = parts.extensions.get::<Arc<Principal>>().cloned();
        let token = canopy_server::http::session_cookie(&parts.headers);
        match (principal, token) {
            (Some(principal), Some(token)) => Ok(Session {
                principal,
                csrf: csrf_token(token),
                request_id: parts
                    .headers
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            }),
            (_, token) => {
                let mut response = Redirect::to(LOGIN_PATH).into_response();
                if token.is_some() {
                    response
                        .headers_mut()
                        .insert(header::SET_COOKIE, clear_session_cookie());
                }
                Err(response)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_are_bound_to_the_session_and_hide_it() {
        let a = csrf_token("cnp_s_aaaa");
        assert_eq!(a, csrf_token("cnp_s_aaaa"));
        assert_ne!(a, csrf_token("cnp_s_aaab"));
        assert!(!a.contains("aaaa"));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
        assert!(!same_secret("", "a"));
    }

    #[test]
    fn cookies_carry_every_flag() {
        let c = session_cookie("cnp_s_x", 3600);
        let c = c.to_str().unwrap();
        for flag in [
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Path=/",
            "Max-Age=3600",
        ] {
            assert!(c.contains(flag), "{c} lacks {flag}");
        }
    }
}
