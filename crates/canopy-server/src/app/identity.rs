//! Authentication and built-in identities: turning an `Authorization` header into a
//! [`Principal`], and the embedded identity store used when there is no external identity
//! provider (users with argon2id passwords, short-lived session tokens from `login`, long-lived
//! API tokens for automation, and the bootstrap administrator token of a first start).
//!
//! Two kinds of bearer token are accepted side by side: Canopy's own opaque tokens (`cnp_...`,
//! looked up by SHA-256 hash, so the database never holds one that could be replayed) and, when
//! an OIDC provider is configured, the provider's JWTs (verified by `canopy-auth`). Agents never
//! come through here: their per-edge credential works only on the agent endpoints.
//!
//! Token lookups are cached for a few seconds (a hot path: every API call); every change that
//! can take access away (revoking a token, deleting a user, changing roles, deleting a project)
//! clears the cache, so revocation is immediate.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use canopy_auth::token::{self, TokenKind};
use canopy_store::{TokenRow, UserRow};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::auth::{ADMIN_ROLE, M2M_ROLE};
use super::{App, AppError, Principal, PrincipalKind};

/// The built-in administrator created on a first start.
pub const BOOTSTRAP_USER: &str = "admin";
/// The file (in the data directory) the bootstrap administrator token is written to.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// How long a cached token lookup is trusted.
const CACHE_TTL: Duration = Duration::from_secs(5);
/// Bound on the token cache (cleared when reached).
const CACHE_MAX: usize = 100_000;

/// How callers are authenticated.
#[derive(Clone, Default)]
pub struct AuthConfig {
    /// An external OIDC identity provider whose JWTs are accepted.
    pub oidc: Option<canopy_auth::oidc::OidcVerifier>,
    /// Lifetime of a `login` session token (default one hour).
    pub session_ttl: Option<Duration>,
    /// Bounds on password checks: concurrent hashes, attempts per source address and user.
    pub login: super::LoginLimits,
    /// Web console sign-in through the OIDC provider (`--oidc-client-id`): needs `oidc`.
    pub console: Option<super::ConsoleOidc>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field(
                "oidc",
                &self.oidc.as_ref().map(|o| o.config().issuer.clone()),
            )
            .field("session_ttl", &self.session_ttl)
            .field("login", &self.login)
            .field("console", &self.console)
            .finish()
    }
}

impl AuthConfig {
    pub(crate) fn session_ttl(&self) -> Duration {
        self.session_ttl.unwrap_or(Duration::from_secs(3600))
    }
}

/// A cached lookup: who, until when the token is valid, when it was looked up.
type CachedToken = (Arc<Principal>, Option<OffsetDateTime>, Instant);

#[derive(Default)]
pub(crate) struct TokenCache {
    entries: std::sync::RwLock<HashMap<String, CachedToken>>,
}

impl TokenCache {
    fn get(&self, hash: &str) -> Option<(Arc<Principal>, Option<OffsetDateTime>)> {
        let map = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let (p, exp, at) = map.get(hash)?;
        (at.elapsed() < CACHE_TTL).then(|| (p.clone(), *exp))
    }

    fn put(&self, hash: String, p: Arc<Principal>, exp: Option<OffsetDateTime>) {
        let mut map = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= CACHE_MAX {
            map.clear();
        }
        map.insert(hash, (p, exp, Instant::now()));
    }

    pub(crate) fn clear(&self) {
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// A built-in user as the API shows it (never the password hash).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub name: String,
    pub roles: Vec<String>,
    /// Whether the user can log in with a password (else API tokens only).
    pub has_password: bool,
    pub create_time: String,
    pub update_time: String,
}

impl From<UserRow> for User {
    fn from(u: UserRow) -> User {
        User {
            name: u.name,
            roles: u.roles,
            has_password: u.password_hash.is_some(),
            create_time: super::edges::fmt_time(Some(u.create_time)),
            update_time: super::edges::fmt_time(Some(u.update_time)),
        }
    }
}

/// A server-issued token as the API lists it (never the token itself).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiToken {
    pub id: String,
    pub name: String,
    pub user: String,
    /// `session`, `api` or `bootstrap`.
    pub kind: String,
    pub create_time: String,
    /// Empty when the token does not expire.
    pub expire_time: String,
}

/// A newly issued token: the only time its secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuedToken {
    #[serde(flatten)]
    pub info: ApiToken,
    pub token: String,
}

/// The caller as the server sees them.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WhoAmI {
    pub actor: String,
    /// `user`, `oidc` or `system`.
    pub kind: String,
    pub roles: Vec<String>,
}

fn token_info(t: &TokenRow, user: &str) -> ApiToken {
    ApiToken {
        id: t.id.to_string(),
        name: t.name.clone(),
        user: user.to_string(),
        kind: t.kind.clone(),
        create_time: super::edges::fmt_time(Some(t.create_time)),
        expire_time: super::edges::fmt_time(t.expire_time),
    }
}

fn unauthenticated(msg: &str) -> AppError {
    AppError::Unauthenticated(msg.to_string())
}

/// Checks a user name: 1 to 63 characters of `a-z 0-9 . _ @ -`, starting with a letter or digit.
pub fn check_user_name(name: &str) -> Result<(), AppError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'@' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(AppError::Invalid(format!(
            "user name {:?} is invalid: use 1 to 63 characters of a-z, 0-9, '.', '_', '@', '-', starting with a letter or digit",
            name.escape_debug().to_string()
        )))
    }
}

/// Checks role names: the global roles, or `<project name or UUID>_<cat-r|cat-rw|ao-rw|ao-r>`.
pub fn check_roles(roles: &[String]) -> Result<(), AppError> {
    for r in roles {
        let ok = r == ADMIN_ROLE
            || r == M2M_ROLE
            || r.rsplit_once('_').is_some_and(|(prefix, suffix)| {
                matches!(suffix, "cat-r" | "cat-rw" | "ao-rw" | "ao-r")
                    && !prefix.is_empty()
                    && prefix.len() <= 63
                    && prefix
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
            });
        if !ok {
            return Err(AppError::Invalid(format!(
                "role {:?} is not a Canopy role: use {ADMIN_ROLE}, {M2M_ROLE}, or <project>_cat-r, <project>_cat-rw, <project>_ao-rw, <project>_ao-r",
                r.escape_debug().to_string()
            )));
        }
    }
    Ok(())
}

fn dedup(mut roles: Vec<String>) -> Vec<String> {
    roles.sort();
    roles.dedup();
    roles
}

/// A hashing failure as the API answers it: a flood that keeps every hashing slot busy is the
/// server's condition (503), anything else an internal error.
fn hashing_failed(e: canopy_auth::AuthError) -> AppError {
    match e {
        canopy_auth::AuthError::Busy => AppError::Unavailable(
            "too many password checks at once; try again in a few seconds".into(),
        ),
        other => AppError::Internal(other.to_string()),
    }
}

impl App {
    /// Hashes a new password (after checking the policy), within the process's hashing bound.
    async fn hash_password(&self, password: String) -> Result<String, AppError> {
        canopy_auth::password::check_password_policy(&password)
            .map_err(|e| AppError::Invalid(e.to_string()))?;
        self.inner
            .login
            .hasher()
            .hash(password)
            .await
            .map_err(hashing_failed)
    }

    /// The address a login comes from: the connection's peer, or the client a trusted reverse
    /// proxy names in `X-Forwarded-For` (`forwarded_for`: the header's values joined by `,`).
    pub fn login_source(
        &self,
        peer: Option<std::net::IpAddr>,
        forwarded_for: Option<&str>,
    ) -> Option<std::net::IpAddr> {
        self.inner.login.client_address(peer, forwarded_for)
    }

    /// Authenticates the value of an `Authorization` header.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Arc<Principal>, AppError> {
        let header = header.ok_or_else(|| {
            unauthenticated("authentication required: send an Authorization: Bearer token")
        })?;
        let bearer = token::bearer(header).ok_or_else(|| {
            unauthenticated("malformed Authorization header: expected `Bearer <token>`")
        })?;
        if bearer.starts_with("cnp_") {
            return self.authenticate_canopy_token(bearer).await;
        }
        match &self.inner.auth.oidc {
            Some(oidc) if bearer.matches('.').count() == 2 => {
                let claims = oidc.verify(bearer).await.map_err(|e| {
                    if e.is_unavailable() {
                        tracing::warn!(error = %e, "cannot verify a bearer token: identity provider unavailable");
                        AppError::Unavailable(
                            "the identity provider cannot be reached; try again later".into(),
                        )
                    } else {
                        AppError::Unauthenticated(format!("invalid token: {e}"))
                    }
                })?;
                Ok(Arc::new(Principal::oidc(
                    &claims.subject,
                    claims.username.as_deref(),
                    claims.roles,
                )))
            }
            _ => Err(unauthenticated("invalid token")),
        }
    }

    async fn authenticate_canopy_token(&self, bearer: &str) -> Result<Arc<Principal>, AppError> {
        if TokenKind::of(bearer).is_none() {
            return Err(unauthenticated("invalid token"));
        }
        let hash = token::hash(bearer);
        // A console session opened by an OIDC sign-in (in memory, see `console_oidc`).
        if let Some(p) = self.inner.oidc_sessions.get(&hash) {
            return Ok(p);
        }
        let now = OffsetDateTime::now_utc();
        let cache = &self.inner.tokens;
        let (principal, expires) = match cache.get(&hash) {
            Some(hit) => hit,
            None => {
                let (t, user) = self
                    .store()
                    .token_by_hash(&hash)
                    .await?
                    .ok_or_else(|| unauthenticated("invalid or revoked token"))?;
                let p = Arc::new(Principal::user(user.id, &user.name, t.id, user.roles));
                cache.put(hash, p.clone(), t.expire_time);
                (p, t.expire_time)
            }
        };
        if expires.is_some_and(|e| e <= now) {
            return Err(unauthenticated("token has expired: log in again"));
        }
        Ok(principal)
    }

    /// Logs a built-in user in with a password and issues a session token. Unknown users and
    /// wrong passwords get the same answer after the same work. Attempts are limited per source
    /// address (`source`, when known) and per user name (429), and the password check waits
    /// for one of the process's few hashing slots (see `login_guard`).
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        source: Option<std::net::IpAddr>,
    ) -> Result<IssuedToken, AppError> {
        let refused = || unauthenticated("wrong user name or password");
        if password.len() > 1024 || user.len() > 63 {
            return Err(refused());
        }
        self.inner.login.admit(source, user)?;
        let row = self.store().user_by_name(user).await?;
        let hash = row.as_ref().and_then(|u| u.password_hash.clone());
        let ok = self
            .inner
            .login
            .hasher()
            .verify(password.to_string(), hash)
            .await
            .map_err(hashing_failed)?;
        let Some(row) = row.filter(|_| ok) else {
            return Err(refused());
        };
        let ttl = self.inner.auth.session_ttl();
        self.issue(&row, TokenKind::Session, "login", Some(ttl))
            .await
    }

    async fn issue(
        &self,
        user: &UserRow,
        kind: TokenKind,
        name: &str,
        ttl: Option<Duration>,
    ) -> Result<IssuedToken, AppError> {
        let secret = token::generate(kind);
        let now = OffsetDateTime::now_utc();
        let row = TokenRow {
            id: Uuid::new_v4(),
            token_hash: token::hash(&secret),
            user_id: user.id,
            name: name.to_string(),
            kind: match kind {
                TokenKind::Session => "session",
                TokenKind::Api => "api",
                TokenKind::Bootstrap => "bootstrap",
            }
            .to_string(),
            create_time: now,
            expire_time: ttl.map(|t| now + t),
        };
        self.store().insert_token(&row).await?;
        Ok(IssuedToken {
            info: token_info(&row, &user.name),
            token: secret,
        })
    }

    /// On a first start (no built-in user yet), creates the administrator and writes a
    /// non-expiring administrator token to `DATA_DIR/admin.token` (mode 0600). Returns the file
    /// written, if any. The token itself is never logged. An existing `admin.token` is never
    /// overwritten: the start-up checks (`Server::bind`) refuse or set it aside first.
    pub async fn bootstrap_admin(&self, data_dir: &Path) -> Result<Option<PathBuf>, AppError> {
        if !self.store().list_users().await?.is_empty() {
            return Ok(None);
        }
        let path = data_dir.join(ADMIN_TOKEN_FILE);
        if path.exists() {
            return Err(AppError::FailedPrecondition(format!(
                "{} exists but the database has no users: refusing to overwrite it",
                path.display()
            )));
        }
        let Some(user) = self
            .store()
            .create_user(BOOTSTRAP_USER, None, &[ADMIN_ROLE.to_string()])
            .await?
        else {
            return Ok(None);
        };
        let issued = self
            .issue(&user, TokenKind::Bootstrap, "bootstrap", None)
            .await?;
        write_private(&path, format!("{}\n", issued.token).as_bytes(), false).map_err(|e| {
            AppError::Internal(format!(
                "cannot write {}: {e} (once that is fixed, `canopy admin reset-token` makes a new one)",
                path.display()
            ))
        })?;
        Ok(Some(path))
    }

    /// The caller as the server sees them.
    pub fn whoami(&self, p: &Principal) -> WhoAmI {
        WhoAmI {
            actor: p.actor.clone(),
            kind: match p.kind {
                PrincipalKind::User { .. } => "user",
                PrincipalKind::Oidc { .. } => "oidc",
                PrincipalKind::System => "system",
            }
            .to_string(),
            roles: p.roles().to_vec(),
        }
    }

    // ------------------------------------------------------------------ users (admin)

    /// Creates a built-in user.
    pub async fn create_user(
        &self,
        p: &Principal,
        name: &str,
        password: Option<String>,
        roles: Vec<String>,
    ) -> Result<User, AppError> {
        p.require_admin()?;
        check_user_name(name)?;
        check_roles(&roles)?;
        let hash = match password {
            Some(pw) => Some(self.hash_password(pw).await?),
            None => None,
        };
        let row = self
            .store()
            .create_user(name, hash.as_deref(), &dedup(roles))
            .await?
            .ok_or_else(|| AppError::AlreadyExists(format!("user {name} already exists")))?;
        tracing::info!(user = %name, by = %p.actor, "user created");
        Ok(row.into())
    }

    /// Every built-in user.
    pub async fn list_users(&self, p: &Principal) -> Result<Vec<User>, AppError> {
        p.require_admin()?;
        Ok(self
            .store()
            .list_users()
            .await?
            .into_iter()
            .map(User::from)
            .collect())
    }

    /// One user: administrators see anyone, users see themselves.
    pub async fn get_user(&self, p: &Principal, name: &str) -> Result<User, AppError> {
        if !is_self(p, name) {
            p.require_admin()?;
        }
        self.store()
            .user_by_name(name)
            .await?
            .map(User::from)
            .ok_or_else(|| AppError::NotFound(format!("user {name} not found")))
    }

    /// Changes a user's roles (administrators) or password (administrators, or users their
    /// own). Users changing their own password must give the current one (`current_password`),
    /// when they have one; an administrator setting someone else's password need not.
    pub async fn update_user(
        &self,
        p: &Principal,
        name: &str,
        roles: Option<Vec<String>>,
        password: Option<String>,
        current_password: Option<String>,
    ) -> Result<User, AppError> {
        if roles.is_some() || !is_self(p, name) {
            p.require_admin()?;
        }
        if let Some(r) = &roles {
            check_roles(r)?;
        }
        if password.is_some() && is_self(p, name) {
            self.check_current_password(name, current_password).await?;
        }
        let hash = match password {
            Some(pw) => Some(self.hash_password(pw).await?),
            None => None,
        };
        let roles = roles.map(dedup);
        let row = self
            .store()
            .update_user(name, roles.as_deref(), hash.as_deref())
            .await?
            .ok_or_else(|| AppError::NotFound(format!("user {name} not found")))?;
        self.drop_cached_tokens().await;
        tracing::info!(user = %name, by = %p.actor, roles_changed = roles.is_some(), password_changed = hash.is_some(), "user updated");
        Ok(row.into())
    }

    /// A user changing their own password proves they know the current one (a stolen token
    /// alone must not be enough to take the account over). Counted like a login attempt for
    /// that user name.
    async fn check_current_password(
        &self,
        name: &str,
        current: Option<String>,
    ) -> Result<(), AppError> {
        let row = self
            .store()
            .user_by_name(name)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("user {name} not found")))?;
        // A user without a password yet (token-only, like the bootstrap administrator) sets
        // their first one with their token alone.
        let Some(hash) = row.password_hash else {
            return Ok(());
        };
        let Some(current) = current.filter(|c| !c.is_empty()) else {
            return Err(AppError::Invalid(format!(
                "changing your own password needs your current one: send it as currentPassword \
                 (`canopy user passwd {name}` asks for it)"
            )));
        };
        if current.len() > 1024 {
            return Err(wrong_current_password());
        }
        self.inner.login.admit(None, name)?;
        let ok = self
            .inner
            .login
            .hasher()
            .verify(current, Some(hash))
            .await
            .map_err(hashing_failed)?;
        if ok {
            Ok(())
        } else {
            Err(wrong_current_password())
        }
    }

    /// Deletes a user and all their tokens.
    pub async fn delete_user(&self, p: &Principal, name: &str) -> Result<(), AppError> {
        p.require_admin()?;
        if is_self(p, name) {
            return Err(AppError::FailedPrecondition(format!(
                "user {name} cannot delete itself: ask another administrator"
            )));
        }
        if !self.store().delete_user(name).await? {
            return Err(AppError::NotFound(format!("user {name} not found")));
        }
        self.drop_cached_tokens().await;
        tracing::info!(user = %name, by = %p.actor, "user deleted");
        Ok(())
    }

    // ------------------------------------------------------------------ tokens

    /// Issues a long-lived API token for the caller (or, for administrators, another user).
    pub async fn create_api_token(
        &self,
        p: &Principal,
        name: &str,
        ttl: Option<Duration>,
        for_user: Option<&str>,
    ) -> Result<IssuedToken, AppError> {
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(AppError::Invalid(
                "token name must be 1 to 128 characters without control characters".into(),
            ));
        }
        let user_name = match (for_user, &p.kind) {
            (Some(u), _) if !is_self(p, u) => {
                p.require_admin()?;
                u.to_string()
            }
            (_, PrincipalKind::User { user, .. }) => user.clone(),
            (Some(u), _) => u.to_string(),
            (None, _) => {
                return Err(AppError::Invalid(
                    "API tokens belong to built-in users: name one with `user` (administrators), or use your identity provider's tokens".into(),
                ));
            }
        };
        let user = self
            .store()
            .user_by_name(&user_name)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("user {user_name} not found")))?;
        let issued = self.issue(&user, TokenKind::Api, name, ttl).await?;
        tracing::info!(user = %user.name, token = %issued.info.id, by = %p.actor, "API token created");
        Ok(issued)
    }

    /// The caller's tokens; administrators may ask for everyone's.
    pub async fn list_api_tokens(
        &self,
        p: &Principal,
        all: bool,
    ) -> Result<Vec<ApiToken>, AppError> {
        let user_id = match (&p.kind, all) {
            (_, true) => {
                p.require_admin()?;
                None
            }
            (PrincipalKind::User { user_id, .. }, false) => Some(*user_id),
            (_, false) => return Ok(Vec::new()),
        };
        let users: HashMap<Uuid, String> = self
            .store()
            .list_users()
            .await?
            .into_iter()
            .map(|u| (u.id, u.name))
            .collect();
        Ok(self
            .store()
            .list_tokens(user_id)
            .await?
            .iter()
            .map(|t| token_info(t, users.get(&t.user_id).map_or("", String::as_str)))
            .collect())
    }

    /// Revokes a token: one's own, or any (administrators). Unknown and foreign ids are 404.
    pub async fn revoke_api_token(&self, p: &Principal, id: &str) -> Result<(), AppError> {
        let not_found = || AppError::NotFound(format!("token {id} not found"));
        let id = Uuid::parse_str(id).map_err(|_| not_found())?;
        let t = self.store().token_by_id(id).await?.ok_or_else(not_found)?;
        let own = matches!(&p.kind, PrincipalKind::User { user_id, .. } if *user_id == t.user_id);
        if !own && !p.is_admin() {
            return Err(not_found());
        }
        self.store().delete_token(id).await?;
        self.drop_cached_tokens().await;
        tracing::info!(token = %id, by = %p.actor, "token revoked");
        Ok(())
    }

    /// Ends the caller's own login session (revokes the session token used). Logout ends
    /// sessions only: called with an API token or the bootstrap administrator token it revokes
    /// nothing and says how to revoke that token instead (a logout that revoked the bootstrap
    /// token could leave an instance with no administrator).
    pub async fn logout(&self, p: &Principal) -> Result<(), AppError> {
        let PrincipalKind::User { token_id, .. } = &p.kind else {
            return Err(AppError::Invalid(
                "only Canopy login sessions can be logged out; OIDC tokens expire at the provider"
                    .into(),
            ));
        };
        let token = self
            .store()
            .token_by_id(*token_id)
            .await?
            .ok_or_else(|| unauthenticated("invalid or revoked token"))?;
        match token.kind.as_str() {
            "session" => {
                self.store().delete_token(*token_id).await?;
                self.drop_cached_tokens().await;
                Ok(())
            }
            "bootstrap" => Err(AppError::FailedPrecondition(format!(
                "this is the bootstrap administrator token (id {token_id}), not a login \
                 session: logout ends sessions only, so nothing was revoked. To retire it, \
                 revoke it with `canopy token revoke {token_id}` once another administrator \
                 credential exists; to replace it, run `canopy admin reset-token --data-dir \
                 DIR` on the server's machine with the server stopped"
            ))),
            _ => Err(AppError::FailedPrecondition(format!(
                "this is an API token ({:?}, id {token_id}), not a login session: logout ends \
                 sessions only, so nothing was revoked. Revoke an API token with \
                 `canopy token revoke {token_id}` (DELETE /canopy/v1/tokens/{token_id})",
                token.name
            ))),
        }
    }
}

fn wrong_current_password() -> AppError {
    AppError::Forbidden("the current password given (currentPassword) is wrong".into())
}

fn is_self(p: &Principal, name: &str) -> bool {
    matches!(&p.kind, PrincipalKind::User { user, .. } if user == name)
}

/// What [`reset_admin_token`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminTokenReset {
    /// The file the new token was written to (mode 0600).
    pub token_file: PathBuf,
    /// The administrator user did not exist and was created.
    pub created_user: bool,
    /// The administrator user had lost the `canopy-admin` role and has it again.
    pub restored_role: bool,
    /// Earlier bootstrap tokens revoked.
    pub revoked: u64,
}

/// The offline recovery of the administrator (`canopy admin reset-token`): makes the built-in
/// user `admin` exist with `canopy-admin`, revokes its bootstrap tokens, issues a new one and
/// writes it to `DATA_DIR/admin.token` (mode 0600), and records it in the audit log. Works on
/// the store directly: the server must not be running (the caller holds the data directory's
/// lock), so no token cache can keep the old token alive.
pub async fn reset_admin_token(
    store: &canopy_store::Store,
    data_dir: &Path,
) -> Result<AdminTokenReset, AppError> {
    let secret = token::generate(TokenKind::Bootstrap);
    let now = OffsetDateTime::now_utc();
    let row = TokenRow {
        id: Uuid::new_v4(),
        token_hash: token::hash(&secret),
        user_id: Uuid::nil(),
        name: "bootstrap".into(),
        kind: "bootstrap".into(),
        create_time: now,
        expire_time: None,
    };
    let token_id = row.id;
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    // The file is prepared before the database changes and put in place after they commit, so
    // a failure leaves either the old state or the new one (run the command again).
    let staged = stage_private(&path, format!("{secret}\n").as_bytes())
        .map_err(|e| AppError::Internal(format!("cannot write {}: {e}", path.display())))?;
    let done = store.reset_admin(BOOTSTRAP_USER, ADMIN_ROLE, row).await?;
    // Other replicas (PostgreSQL) may be running: their token caches drop the old tokens.
    if let Err(e) = store
        .publish_live(canopy_store::LiveKind::Auth, &[String::new()])
        .await
    {
        tracing::warn!(error = %e, "could not tell running replicas about the reset; their token caches expire within 5 s");
    }
    staged
        .commit()
        .map_err(|e| AppError::Internal(format!("cannot write {}: {e}", path.display())))?;
    let what = match (done.created, done.role_restored) {
        (true, _) => "user created",
        (_, true) => "canopy-admin role restored",
        _ => "token replaced",
    };
    store
        .append_audit(&canopy_store::NewAuditRecord {
            at: now,
            actor: "system:admin-reset-token".into(),
            project: String::new(),
            action: "canopy admin reset-token".into(),
            target: format!("/canopy/v1/users/{BOOTSTRAP_USER}"),
            result: format!(
                "ok: {what}; {} bootstrap token(s) revoked; new token {token_id}",
                done.revoked
            ),
            status: 200,
            request_id: Uuid::new_v4().to_string(),
        })
        .await?;
    tracing::info!(user = BOOTSTRAP_USER, token = %token_id, revoked = done.revoked, "administrator token reset");
    Ok(AdminTokenReset {
        token_file: path,
        created_user: done.created,
        restored_role: done.role_restored,
        revoked: done.revoked,
    })
}

/// A file only its owner can read, prepared beside `path` (written and synced, not in place).
fn stage_private(path: &Path, content: &[u8]) -> std::io::Result<canopy_fs::Staged> {
    canopy_fs::AtomicFile::new(path).mode(0o600).stage(content)
}

/// Writes a file only its owner can read, atomically and durably (`canopy-fs`); with `replace`
/// false, an existing file is an error and stays as it is.
pub(crate) fn write_private(path: &Path, content: &[u8], replace: bool) -> std::io::Result<()> {
    let file = canopy_fs::AtomicFile::new(path).mode(0o600);
    if replace {
        file.write(content)
    } else {
        file.create(content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_and_roles_are_checked() {
        assert!(check_user_name("alice").is_ok());
        assert!(check_user_name("ci-bot@shop.example").is_ok());
        for bad in ["", "Alice", "../x", "a\u{0}b", "a b", &"x".repeat(64)] {
            assert!(check_user_name(bad).is_err(), "{bad:?}");
        }
        let ok: Vec<String> = ["canopy-admin", "ao-m2m-rw", "shop_cat-r", "shop_ao-r"]
            .map(String::from)
            .to_vec();
        assert!(check_roles(&ok).is_ok());
        for bad in [
            "admin",
            "shop_cat-x",
            "_cat-r",
            "sh op_cat-r",
            "shop_cat-r\n",
        ] {
            assert!(check_roles(&[bad.to_string()]).is_err(), "{bad:?}");
        }
    }
}
