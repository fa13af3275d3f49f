//! The relying party's half of OpenID Connect sign-in: the authorization code flow with PKCE
//! (RFC 7636, `S256`), for the web console.
//!
//! **Why hand-written.** The protocol pieces are small (a random verifier and its SHA-256, an
//! authorization URL, one form POST to the token endpoint), while the part that must be right,
//! the ID token's validation, already exists: [`OidcVerifier`] with its algorithm allow-list,
//! key cache and refetch limits. The `openidconnect` crate brings its own JWT validation and
//! key handling (a second, different one); `oauth2` would cover only the two easy pieces. So
//! this module keeps the protocol code to what Canopy needs and validates the ID token with
//! the existing verifier ([`OidcVerifier::verify_id_token`]: signature, issuer, audience =
//! client id, `azp`, nonce, expiry).
//!
//! **No server state per sign-in.** [`LoginClient::begin`] returns the [`PendingLogin`]
//! (`state`, `nonce`, PKCE verifier, start time); the caller keeps it in the browser (the
//! console's short-lived `HttpOnly` cookie) and hands it back to [`LoginClient::finish`]. A
//! tampered pending login can only make its own sign-in fail: `state` must equal what the
//! provider sends back, the provider checks the verifier against the challenge it was given,
//! and the nonce must match the one inside the signed ID token.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::AuthError;
use crate::oidc::{Claims, OidcVerifier, constant_time_eq};

/// How long a started sign-in may take (the provider's login page included).
pub const LOGIN_TTL: Duration = Duration::from_secs(600);

/// Largest token endpoint answer read.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

/// Timeout of the token endpoint request.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(15);

/// After a failed discovery, the same error is returned for this long without a new fetch.
const DISCOVERY_BACKOFF: Duration = Duration::from_secs(2);

/// A client secret (confidential clients). Never printed: `Debug` shows `<redacted>`.
#[derive(Clone)]
pub struct ClientSecret(String);

impl ClientSecret {
    /// Wraps a secret (surrounding whitespace, e.g. a file's final newline, removed).
    pub fn new(secret: impl Into<String>) -> ClientSecret {
        ClientSecret(secret.into().trim().to_owned())
    }
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a sign-in through the provider failed. Messages are safe to show and log: they never
/// carry a code, token, verifier or secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// The provider refused (on the redirect back, or at its token endpoint).
    #[error("the identity provider refused the sign-in: {0}")]
    Refused(String),
    /// The sign-in was started too long ago, or in another browser.
    #[error(
        "this sign-in has expired or was started in another browser or tab: please sign in again"
    )]
    Expired,
    /// The `state` coming back is not this browser's.
    #[error("this sign-in does not belong to this browser (state mismatch): please sign in again")]
    StateMismatch,
    /// The ID token did not pass validation.
    #[error("the identity provider's ID token was refused: {0}")]
    IdToken(AuthError),
    /// The provider answered something that is not a token response.
    #[error("the identity provider's answer could not be used: {0}")]
    BadResponse(String),
    /// The provider cannot be reached.
    #[error("the identity provider cannot be reached: {0}")]
    Unavailable(String),
}

/// What a started sign-in must remember until the provider sends the browser back.
#[derive(Clone, PartialEq, Eq)]
pub struct PendingLogin {
    state: String,
    nonce: String,
    verifier: String,
    started: i64,
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLogin")
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

fn random_b64() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// The PKCE `S256` challenge of `verifier` (RFC 7636 §4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

impl PendingLogin {
    fn new() -> PendingLogin {
        PendingLogin {
            state: random_b64(),
            nonce: random_b64(),
            verifier: random_b64(),
            started: unix_now(),
        }
    }

    /// The compact form kept in the browser: `v1.state.nonce.verifier.started`.
    pub fn encode(&self) -> String {
        format!(
            "v1.{}.{}.{}.{}",
            self.state, self.nonce, self.verifier, self.started
        )
    }

    /// Reads [`PendingLogin::encode`]'s form back; `None` for anything else.
    pub fn decode(value: &str) -> Option<PendingLogin> {
        let mut parts = value.split('.');
        let (Some("v1"), Some(state), Some(nonce), Some(verifier), Some(started), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let ok = |s: &str| {
            (16..=128).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        (ok(state) && ok(nonce) && ok(verifier)).then_some(())?;
        Some(PendingLogin {
            state: state.to_owned(),
            nonce: nonce.to_owned(),
            verifier: verifier.to_owned(),
            started: started.parse().ok()?,
        })
    }

    /// Refuses a sign-in older than [`LOGIN_TTL`] or whose `state` is not this one.
    pub fn check(&self, state: &str) -> Result<(), LoginError> {
        let age = unix_now() - self.started;
        if !(-60..=LOGIN_TTL.as_secs() as i64).contains(&age) {
            return Err(LoginError::Expired);
        }
        if !constant_time_eq(self.state.as_bytes(), state.as_bytes()) {
            return Err(LoginError::StateMismatch);
        }
        Ok(())
    }
}

/// A finished sign-in: the validated ID token's claims and the access token the provider
/// issued with it (a secret: for authorization checks, never shown or logged).
pub struct SignedIn {
    /// The ID token's claims (validated).
    pub id_claims: Claims,
    /// The access token of the same sign-in.
    pub access_token: String,
}

impl std::fmt::Debug for SignedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedIn")
            .field("id_claims", &self.id_claims)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct Endpoints {
    authorization: String,
    token: String,
}

/// The console's OIDC client: one provider (the verifier's issuer), one client id.
#[derive(Clone)]
pub struct LoginClient {
    inner: std::sync::Arc<ClientInner>,
}

struct ClientInner {
    verifier: OidcVerifier,
    client_id: String,
    client_secret: Option<ClientSecret>,
    endpoints: tokio::sync::OnceCell<Endpoints>,
    last_failure: Mutex<Option<(Instant, String)>>,
}

impl std::fmt::Debug for LoginClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginClient")
            .field("issuer", &self.inner.verifier.config().issuer)
            .field("client_id", &self.inner.client_id)
            .field("confidential", &self.inner.client_secret.is_some())
            .finish_non_exhaustive()
    }
}

impl LoginClient {
    /// A client of the provider `verifier` checks tokens of. The endpoints are discovered
    /// (`authorization_endpoint`, `token_endpoint`) on first use.
    pub fn new(
        verifier: OidcVerifier,
        client_id: impl Into<String>,
        client_secret: Option<ClientSecret>,
    ) -> LoginClient {
        LoginClient {
            inner: std::sync::Arc::new(ClientInner {
                verifier,
                client_id: client_id.into(),
                client_secret,
                endpoints: tokio::sync::OnceCell::new(),
                last_failure: Mutex::new(None),
            }),
        }
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    /// The provider's issuer URL.
    pub fn issuer(&self) -> &str {
        &self.inner.verifier.config().issuer
    }

    async fn endpoints(&self) -> Result<Endpoints, LoginError> {
        if let Some(e) = self.inner.endpoints.get() {
            return Ok(e.clone());
        }
        if let Some((at, message)) = self
            .inner
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            && at.elapsed() < DISCOVERY_BACKOFF
        {
            return Err(LoginError::Unavailable(message.clone()));
        }
        let result = self
            .inner
            .endpoints
            .get_or_try_init(|| async {
                let doc = self
                    .inner
                    .verifier
                    .discovery_document()
                    .await
                    .map_err(|e| LoginError::Unavailable(e.to_string()))?;
                let url = |name: &str| match doc.get(name).and_then(Value::as_str) {
                    Some(u) if u.starts_with("https://") || u.starts_with("http://") => {
                        Ok(u.to_owned())
                    }
                    _ => Err(LoginError::Unavailable(format!(
                        "the discovery document has no usable {name}"
                    ))),
                };
                Ok(Endpoints {
                    authorization: url("authorization_endpoint")?,
                    token: url("token_endpoint")?,
                })
            })
            .await
            .cloned();
        if let Err(LoginError::Unavailable(message)) = &result {
            *self
                .inner
                .last_failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), message.clone()));
        }
        result
    }

    /// Starts a sign-in: the provider's authorization URL to send the browser to, and what to
    /// keep until it comes back to `redirect_uri`.
    pub async fn begin(&self, redirect_uri: &str) -> Result<(String, PendingLogin), LoginError> {
        let endpoints = self.endpoints().await?;
        let pending = PendingLogin::new();
        let mut url = reqwest::Url::parse(&endpoints.authorization).map_err(|_| {
            LoginError::Unavailable("the authorization_endpoint is not a URL".into())
        })?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.inner.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", "openid profile")
            .append_pair("state", &pending.state)
            .append_pair("nonce", &pending.nonce)
            .append_pair("code_challenge", &pkce_challenge(&pending.verifier))
            .append_pair("code_challenge_method", "S256");
        Ok((url.into(), pending))
    }

    /// Finishes a sign-in the provider sent back to `redirect_uri` with `code`: exchanges the
    /// code (with the PKCE verifier and, for a confidential client, the secret), validates the
    /// ID token (signature, issuer, audience = client id, nonce, expiry). The caller has
    /// checked `pending` against the returned `state` ([`PendingLogin::check`]).
    pub async fn finish(
        &self,
        pending: &PendingLogin,
        code: &str,
        redirect_uri: &str,
    ) -> Result<SignedIn, LoginError> {
        let endpoints = self.endpoints().await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", pending.verifier.as_str()),
            ("client_id", self.inner.client_id.as_str()),
        ];
        if let Some(ClientSecret(secret)) = &self.inner.client_secret {
            // client_secret_post: accepted by Keycloak and most providers.
            form.push(("client_secret", secret.as_str()));
        }
        let mut response = self
            .inner
            .verifier
            .http()
            .post(&endpoints.token)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .timeout(EXCHANGE_TIMEOUT)
            .send()
            .await
            .map_err(|e| {
                LoginError::Unavailable(format!(
                    "token endpoint {}: {}",
                    endpoints.token,
                    e.without_url()
                ))
            })?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| LoginError::Unavailable(format!("token endpoint: {}", e.without_url())))?
        {
            if body.len() + chunk.len() > MAX_TOKEN_RESPONSE {
                return Err(LoginError::BadResponse(
                    "the token endpoint's answer is too large".into(),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        let doc: Value = serde_json::from_slice(&body).map_err(|_| {
            LoginError::BadResponse(format!(
                "the token endpoint answered HTTP {status} without JSON"
            ))
        })?;
        if !status.is_success() {
            return Err(LoginError::Refused(provider_error(
                doc.get("error").and_then(Value::as_str),
                doc.get("error_description").and_then(Value::as_str),
            )));
        }
        let text = |name: &str| {
            doc.get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| LoginError::BadResponse(format!("the token response has no {name}")))
        };
        let id_token = text("id_token")?;
        let access_token = text("access_token")?;
        let id_claims = self
            .inner
            .verifier
            .verify_id_token(&id_token, &self.inner.client_id, &pending.nonce)
            .await
            .map_err(|e| match e {
                AuthError::ProviderUnavailable(m) => LoginError::Unavailable(m),
                e => LoginError::IdToken(e),
            })?;
        Ok(SignedIn {
            id_claims,
            access_token,
        })
    }
}

/// A provider's `error` and `error_description` as a short printable message (they come from
/// the provider or, on the redirect back, from whoever made the URL: never trusted as markup,
/// cut to a sane length).
pub fn provider_error(error: Option<&str>, description: Option<&str>) -> String {
    let clean = |s: &str, max: usize| -> String {
        s.chars()
            .filter(|c| !c.is_control())
            .take(max)
            .collect::<String>()
    };
    let error = clean(error.unwrap_or("error"), 64);
    match description.map(|d| clean(d, 200)).filter(|d| !d.is_empty()) {
        Some(d) => format!("{error} ({d})"),
        None => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn pending_logins_round_trip_and_refuse_garbage() {
        let p = PendingLogin::new();
        let back = PendingLogin::decode(&p.encode()).expect("round trip");
        assert_eq!(back, p);
        assert!(back.check(&p.state).is_ok());
        assert_eq!(back.check("other"), Err(LoginError::StateMismatch));
        for bad in [
            "",
            "v1",
            "v2.a.b.c.1",
            "v1.a.b.c.1",
            &format!("{}.x", p.encode()),
        ] {
            assert!(PendingLogin::decode(bad).is_none(), "{bad}");
        }
        let old = PendingLogin {
            started: unix_now() - 3600,
            ..p.clone()
        };
        assert_eq!(old.check(&p.state), Err(LoginError::Expired));
        assert!(!format!("{p:?}").contains(&p.verifier));
    }

    #[test]
    fn provider_errors_are_cut_and_printable() {
        assert_eq!(
            provider_error(Some("access_denied"), Some("no\nway")),
            "access_denied (noway)"
        );
        assert_eq!(provider_error(None, None), "error");
        assert_eq!(provider_error(Some(&"x".repeat(500)), None).len(), 64);
    }
}
