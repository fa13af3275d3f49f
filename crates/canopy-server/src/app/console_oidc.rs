//! Web console sign-in through the external OIDC identity provider (authorization code flow
//! with PKCE; the protocol is `canopy_auth::oidc_login`), and the console sessions it opens.
//!
//! **Roles exactly as the API maps them.** At the end of a sign-in the provider hands over an
//! ID token (who signed in: validated for the console's client id and this sign-in's nonce) and
//! an access token. The session's [`Principal`] is what the API would make of that access
//! token ([`App::authenticate`]: the same verifier, audience and `realm_access.roles`
//! mapping), and its subject must be the ID token's. So a user has the same access in the
//! console as with the same provider's token on the API, and a provider set up so that its
//! tokens are refused by the API (e.g. a wrong `--oidc-audience`) cannot sign in either.
//!
//! **Sessions.** An OIDC console session is a Canopy session token (`cnp_s_...`, in the same
//! cookie as a password sign-in's) whose SHA-256 maps, in this process's memory, to the
//! principal and an expiry of `--session-ttl` from the sign-in. The roles are those of the
//! sign-in (a role removed at the provider takes effect at the next sign-in, at most
//! `--session-ttl` later). Sign-out removes the entry. Being in memory, these sessions end
//! when the server restarts (users sign in again; the provider usually still has its own
//! session, so that is one click); the built-in users' token table has no room for identities
//! it does not hold.
//!
//! **Bounds.** A sign-in start keeps nothing on the server (the pending sign-in lives in the
//! browser's cookie). Sessions exist only for users the provider authenticated, and at most
//! [`MAX_SESSIONS`] at once (expired ones are dropped first; past that, sign-ins are refused
//! with 503 until some expire or sign out). Finishing a sign-in makes the server call the
//! provider's token endpoint, so at most [`MAX_EXCHANGES`] run at once; more get 429.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use canopy_auth::oidc_login::{LoginClient, LoginError, PendingLogin};
use canopy_auth::token::{self, TokenKind};
use time::OffsetDateTime;

use super::{App, AppError, Principal, PrincipalKind};

/// Most OIDC console sessions held at once.
pub const MAX_SESSIONS: usize = 10_000;

/// Most sign-ins finishing (talking to the token endpoint) at once.
pub const MAX_EXCHANGES: usize = 8;

/// The console's OIDC sign-in: the provider client (`--oidc-client-id`, secret) and the name
/// its button shows.
#[derive(Debug, Clone)]
pub struct ConsoleOidc {
    /// The provider client (issuer, client id, optional secret).
    pub client: LoginClient,
    /// What the sign-in button says after "Sign in with".
    pub label: String,
}

/// The OIDC console sessions of this process (see the module doc).
pub(crate) struct OidcSessions {
    sessions: RwLock<HashMap<String, (Arc<Principal>, Instant)>>,
    exchanges: tokio::sync::Semaphore,
}

impl Default for OidcSessions {
    fn default() -> Self {
        OidcSessions {
            sessions: RwLock::default(),
            exchanges: tokio::sync::Semaphore::new(MAX_EXCHANGES),
        }
    }
}

impl OidcSessions {
    /// The principal of the live session whose token hashes to `hash`.
    pub(crate) fn get(&self, hash: &str) -> Option<Arc<Principal>> {
        let map = self.sessions.read().unwrap_or_else(PoisonError::into_inner);
        let (p, expires) = map.get(hash)?;
        (Instant::now() < *expires).then(|| p.clone())
    }

    fn insert(&self, hash: String, p: Arc<Principal>, ttl: Duration) -> Result<(), AppError> {
        let mut map = self
            .sessions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_SESSIONS {
            let now = Instant::now();
            map.retain(|_, (_, expires)| *expires > now);
        }
        if map.len() >= MAX_SESSIONS {
            return Err(AppError::Unavailable(format!(
                "too many console sessions ({MAX_SESSIONS}) are open: try again when some have \
                 expired"
            )));
        }
        map.insert(hash, (p, Instant::now() + ttl));
        Ok(())
    }

    fn remove(&self, hash: &str) -> bool {
        self.sessions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(hash)
            .is_some()
    }
}

/// A session opened by an OIDC sign-in: the cookie's secret and how long it lasts.
pub struct OidcSession {
    /// The session token (`cnp_s_...`): for the session cookie only.
    pub token: String,
    /// Lifetime in seconds (`--session-ttl`).
    pub max_age: u64,
    /// Who signed in (`oidc:<preferred_username>`).
    pub actor: String,
}

impl std::fmt::Debug for OidcSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcSession")
            .field("actor", &self.actor)
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

fn login_error(e: LoginError) -> AppError {
    match e {
        LoginError::Unavailable(detail) => {
            tracing::warn!(error = %detail, "console sign-in: identity provider unavailable");
            AppError::Unavailable("the identity provider cannot be reached; try again later".into())
        }
        e => AppError::Unauthenticated(e.to_string()),
    }
}

impl App {
    /// The console's OIDC sign-in, when configured.
    pub fn console_oidc(&self) -> Option<&ConsoleOidc> {
        self.inner.auth.console.as_ref()
    }

    fn console_client(&self) -> Result<&LoginClient, AppError> {
        self.console_oidc()
            .map(|c| &c.client)
            .ok_or_else(|| AppError::NotFound("OIDC sign-in is not configured".into()))
    }

    /// Starts a console sign-in at the provider: the URL to send the browser to and what the
    /// browser must keep until it comes back to `redirect_uri`. Keeps nothing on the server.
    pub async fn oidc_sign_in_start(
        &self,
        redirect_uri: &str,
    ) -> Result<(String, PendingLogin), AppError> {
        self.console_client()?
            .begin(redirect_uri)
            .await
            .map_err(login_error)
    }

    /// Finishes a console sign-in: checks `state` against the browser's `pending`, exchanges
    /// `code`, validates the ID token, maps roles exactly as the API does (see the module doc)
    /// and opens a session. Writes the sign-in to the audit log.
    pub async fn oidc_sign_in_finish(
        &self,
        pending: &PendingLogin,
        state: &str,
        code: &str,
        redirect_uri: &str,
    ) -> Result<OidcSession, AppError> {
        let client = self.console_client()?;
        pending.check(state).map_err(login_error)?;
        let Ok(_turn) = self.inner.oidc_sessions.exchanges.try_acquire() else {
            return Err(AppError::RateLimited(1));
        };
        let signed = client
            .finish(pending, code, redirect_uri)
            .await
            .map_err(login_error)?;
        let principal = self
            .authenticate(Some(&format!("Bearer {}", signed.access_token)))
            .await
            .map_err(|e| match e {
                AppError::Unavailable(m) => AppError::Unavailable(m),
                e => AppError::Unauthenticated(format!(
                    "the identity provider's access token is not accepted by Canopy's API ({e}); \
                     the console maps roles from it exactly as the API does: check \
                     --oidc-audience and the provider's audience mapping"
                )),
            })?;
        match &principal.kind {
            PrincipalKind::Oidc { subject } if *subject == signed.id_claims.subject => {}
            _ => {
                return Err(AppError::Unauthenticated(
                    "the identity provider's access token is not for the user of its ID token"
                        .into(),
                ));
            }
        }
        let ttl = self.inner.auth.session_ttl();
        let secret = token::generate(TokenKind::Session);
        self.inner
            .oidc_sessions
            .insert(token::hash(&secret), principal.clone(), ttl)?;
        self.audit_sign_in(&principal.actor).await;
        tracing::info!(actor = %principal.actor, "console sign-in through the identity provider");
        Ok(OidcSession {
            token: secret,
            max_age: ttl.as_secs(),
            actor: principal.actor.clone(),
        })
    }

    /// Ends the OIDC console session whose cookie carries `session_token`. `true` if it was
    /// one (else the caller is not an OIDC console session).
    pub fn oidc_sign_out(&self, session_token: &str) -> bool {
        self.inner.oidc_sessions.remove(&token::hash(session_token))
    }

    async fn audit_sign_in(&self, actor: &str) {
        let record = canopy_store::NewAuditRecord {
            at: OffsetDateTime::now_utc(),
            actor: actor.chars().take(128).collect(),
            project: String::new(),
            action: "GET /ui/oidc/callback".to_string(),
            target: "/ui/oidc/callback".to_string(),
            result: "ok".to_string(),
            status: 303,
            request_id: uuid::Uuid::new_v4().to_string(),
        };
        if let Err(e) = self.store().append_audit(&record).await {
            tracing::warn!(error = %e, "audit log: cannot record a console sign-in");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_bounded_and_expired_ones_make_room() {
        let sessions = OidcSessions::default();
        let p = Arc::new(Principal::oidc("s", Some("u"), vec![]));
        for i in 0..MAX_SESSIONS {
            sessions
                .insert(format!("h{i}"), p.clone(), Duration::from_secs(3600))
                .unwrap();
        }
        let err = sessions
            .insert("one-more".into(), p.clone(), Duration::from_secs(3600))
            .unwrap_err();
        assert!(matches!(err, AppError::Unavailable(_)), "{err}");
        assert!(sessions.get("h0").is_some());
        // A signed-out session makes room.
        assert!(sessions.remove("h0"));
        assert!(sessions.get("h0").is_none());
        sessions
            .insert("one-more".into(), p.clone(), Duration::from_secs(3600))
            .unwrap();
        // Expired sessions do not count once the map is full.
        let short = OidcSessions::default();
        for i in 0..MAX_SESSIONS {
            short
                .insert(format!("h{i}"), p.clone(), Duration::ZERO)
                .unwrap();
        }
        assert!(short.get("h1").is_none(), "expired");
        short
            .insert("fresh".into(), p, Duration::from_secs(60))
            .unwrap();
        assert!(short.get("fresh").is_some());
        assert_eq!(short.sessions.read().unwrap().len(), 1);
    }
}
