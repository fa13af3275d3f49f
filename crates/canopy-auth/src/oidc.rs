//! Verification of bearer JWTs issued by an external OpenID Connect provider
//! (e.g. Keycloak).
//!
//! Canopy does not run its own login for operators who come through an
//! identity provider: the provider signs an access token and we check it
//! offline against the provider's published keys (JWKS). This module owns that
//! check and the key cache behind it, and is deliberately strict: only
//! asymmetric algorithms from a fixed allow-list, the algorithm must fit the
//! key, issuer/audience/expiry are mandatory, and the provider cannot be
//! hammered by tokens naming random key ids.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::AuthError;

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Largest discovery document / JWKS we read from the provider.
const MAX_PROVIDER_DOC_LEN: usize = 1024 * 1024;

/// Per-request timeout for discovery and JWKS fetches.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// After a failed fetch, callers get the same error without a new attempt for
/// this long, so an unreachable provider is not retried once per request.
const FAILURE_BACKOFF: Duration = Duration::from_secs(2);

/// Smallest RSA modulus we accept from a JWKS.
const MIN_RSA_MODULUS_BYTES: usize = 2048 / 8;

/// Where and what to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// Expected `iss`, exact match (e.g. `https://idp.example/realms/canopy`).
    pub issuer: String,
    /// Audience that must appear in `aud` (string or array).
    pub audience: String,
    /// JWKS URL. When `None` it is discovered from
    /// `{issuer}/.well-known/openid-configuration` (`jwks_uri`).
    pub jwks_url: Option<String>,
    /// Clock skew allowed on `exp` and `nbf` (whole seconds). Default 30 s.
    pub leeway: Duration,
    /// Minimum time between JWKS refetches caused by tokens naming an unknown
    /// key id. Default 10 s.
    pub refetch_cooldown: Duration,
    /// The cached JWKS is refreshed when older than this, so keys the
    /// provider removed stop being trusted. Default 10 min. If the refresh
    /// fails the cached keys are kept.
    pub jwks_max_age: Duration,
}

impl OidcConfig {
    /// A config with the default leeway, cooldown and cache age, discovering
    /// the JWKS URL from the issuer.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        OidcConfig {
            issuer: issuer.into(),
            audience: audience.into(),
            jwks_url: None,
            leeway: Duration::from_secs(30),
            refetch_cooldown: Duration::from_secs(10),
            jwks_max_age: Duration::from_secs(600),
        }
    }

    /// Sets an explicit JWKS URL (skips discovery).
    pub fn with_jwks_url(mut self, url: impl Into<String>) -> Self {
        self.jwks_url = Some(url.into());
        self
    }
}

/// The identity a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `sub`: the provider's stable user id.
    pub subject: String,
    /// `preferred_username`, if present.
    pub username: Option<String>,
    /// `realm_access.roles` (Keycloak), empty if absent.
    pub roles: Vec<String>,
    /// `exp` as Unix seconds.
    pub expires_at: i64,
}

/// Verifies bearer JWTs against one OIDC provider. Cheap to clone; clones
/// share the key cache.
#[derive(Clone)]
pub struct OidcVerifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier")
            .field("issuer", &self.inner.config.issuer)
            .field("audience", &self.inner.config.audience)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: OidcConfig,
    http: reqwest::Client,
    /// Current key set; read on every verification without awaiting.
    keys: RwLock<Option<Arc<KeySet>>>,
    /// Serialises fetches and holds the fetch bookkeeping.
    fetch: tokio::sync::Mutex<FetchState>,
}

#[derive(Default)]
struct FetchState {
    discovered_jwks_url: Option<String>,
    last_unknown_key_refetch: Option<Instant>,
    last_failure: Option<(Instant, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
}

struct VerifyKey {
    kid: Option<String>,
    kind: KeyKind,
    /// The JWK's `alg`, if it pins one.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

struct KeySet {
    keys: Vec<Arc<VerifyKey>>,
    fetched_at: Instant,
}

impl KeySet {
    fn find(&self, kid: Option<&str>) -> Option<Arc<VerifyKey>> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .cloned(),
            None if self.keys.len() == 1 => self.keys.first().cloned(),
            None => None,
        }
    }
}

impl OidcVerifier {
    /// Creates a verifier. Nothing is fetched until the first `verify`.
    pub fn new(config: OidcConfig, http: reqwest::Client) -> Self {
        OidcVerifier {
            inner: Arc::new(Inner {
                config,
                http,
                keys: RwLock::new(None),
                fetch: tokio::sync::Mutex::new(FetchState::default()),
            }),
        }
    }

    /// The configuration this verifier checks against.
    pub fn config(&self) -> &OidcConfig {
        &self.inner.config
    }

    /// Verifies a bearer JWT (without the `Bearer ` prefix) and returns who
    /// it speaks for.
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let audience = self.inner.config.audience.clone();
        let claims = self.verify_for(token, &audience).await?;
        claims_from(claims, &self.inner.config.issuer)
    }

    /// Verifies an OpenID Connect ID token from the authorization code flow
    /// (OpenID Connect Core 3.1.3.7) with the same keys and rules as
    /// [`OidcVerifier::verify`], except that the audience must be the
    /// console's `client_id` (and `azp`, when present, too), and the `nonce`
    /// claim must be the one this sign-in sent.
    pub async fn verify_id_token(
        &self,
        token: &str,
        client_id: &str,
        nonce: &str,
    ) -> Result<Claims, AuthError> {
        let claims = self.verify_for(token, client_id).await?;
        if let Some(azp) = claims.get("azp")
            && azp.as_str() != Some(client_id)
        {
            return Err(AuthError::WrongAudience);
        }
        match claims.get("nonce").and_then(Value::as_str) {
            Some(n) if constant_time_eq(n.as_bytes(), nonce.as_bytes()) => {}
            _ => return Err(AuthError::NonceMismatch),
        }
        claims_from(claims, &self.inner.config.issuer)
    }

    /// Signature, algorithm, issuer, `audience`, expiry: the raw claims.
    async fn verify_for(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<Map<String, Value>, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::TooLarge);
        }
        let header = parse_header(token)?;
        let key = self.key_for(header.kid.as_deref()).await?;
        if !key_fits(header.alg, &key) {
            return Err(AuthError::AlgorithmMismatch);
        }

        let config = &self.inner.config;
        let mut validation = Validation::new(header.alg);
        validation.leeway = config.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_audience(&[audience]);
        validation.set_issuer(&[&config.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);

        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(map_jwt_error)?;
        Ok(data.claims)
    }

    fn current_keys(&self) -> Option<Arc<KeySet>> {
        self.inner
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn store_keys(&self, set: Arc<KeySet>) {
        *self
            .inner
            .keys
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(set);
    }

    /// Finds the key a token names, fetching the JWKS lazily, refreshing it
    /// when old, and refetching (rate-limited) on an unknown key id.
    async fn key_for(&self, kid: Option<&str>) -> Result<Arc<VerifyKey>, AuthError> {
        let max_age = self.inner.config.jwks_max_age;
        if let Some(set) = self.current_keys()
            && set.fetched_at.elapsed() < max_age
            && let Some(key) = set.find(kid)
        {
            return Ok(key);
        }

        let mut state = self.inner.fetch.lock().await;
        // Another task may have fetched while we waited for the lock.
        let (set, fetched_now) = match self.current_keys() {
            Some(set) if set.fetched_at.elapsed() < max_age => (set, false),
            Some(stale) => match self.refresh(&mut state).await {
                Ok(set) => (set, true),
                Err(err) => {
                    tracing::warn!(error = %err, "could not refresh the identity provider's signing keys; keeping the cached ones");
                    (stale, false)
                }
            },
            None => (self.refresh(&mut state).await?, true),
        };
        if let Some(key) = set.find(kid) {
            return Ok(key);
        }
        if fetched_now {
            return Err(AuthError::UnknownKey);
        }

        // Unknown key id: the provider may have rotated keys. Refetch, but at
        // most once per cooldown so random key ids cannot hammer the provider.
        let cooldown = self.inner.config.refetch_cooldown;
        if state
            .last_unknown_key_refetch
            .is_some_and(|at| at.elapsed() < cooldown)
        {
            return Err(AuthError::UnknownKey);
        }
        state.last_unknown_key_refetch = Some(Instant::now());
        let set = self.refresh(&mut state).await?;
        set.find(kid).ok_or(AuthError::UnknownKey)
    }

    /// Fetches the JWKS and stores it. Caller holds the fetch lock.
    async fn refresh(&self, state: &mut FetchState) -> Result<Arc<KeySet>, AuthError> {
        if let Some((at, message)) = &state.last_failure
            && at.elapsed() < FAILURE_BACKOFF
        {
            return Err(AuthError::ProviderUnavailable(message.clone()));
        }
        match self.fetch_keys(state).await {
            Ok(set) => {
                state.last_failure = None;
                let set = Arc::new(set);
                self.store_keys(set.clone());
                Ok(set)
            }
            Err(err) => {
                if let AuthError::ProviderUnavailable(message) = &err {
                    state.last_failure = Some((Instant::now(), message.clone()));
                }
                Err(err)
            }
        }
    }

    async fn fetch_keys(&self, state: &mut FetchState) -> Result<KeySet, AuthError> {
        let url = match (&self.inner.config.jwks_url, &state.discovered_jwks_url) {
            (Some(url), _) | (None, Some(url)) => url.clone(),
            (None, None) => {
                let url = self.discover().await?;
                state.discovered_jwks_url = Some(url.clone());
                url
            }
        };
        let doc = self.get_json(&url, "JWKS").await?;
        let Some(entries) = doc.get("keys").and_then(Value::as_array) else {
            return Err(AuthError::ProviderUnavailable(
                "JWKS has no \"keys\" array".to_owned(),
            ));
        };
        let keys: Vec<_> = entries.iter().filter_map(parse_jwk).map(Arc::new).collect();
        tracing::debug!(
            url,
            published = entries.len(),
            usable = keys.len(),
            "fetched identity provider signing keys"
        );
        Ok(KeySet {
            keys,
            fetched_at: Instant::now(),
        })
    }

    async fn discover(&self) -> Result<String, AuthError> {
        let doc = self.discovery_document().await?;
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.inner.config.issuer.trim_end_matches('/')
        );
        match doc.get("jwks_uri").and_then(Value::as_str) {
            Some(uri) if uri.starts_with("https://") || uri.starts_with("http://") => {
                Ok(uri.to_owned())
            }
            _ => Err(AuthError::ProviderUnavailable(format!(
                "discovery document at {url} has no usable jwks_uri"
            ))),
        }
    }

    /// The HTTP client provider requests go through.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// The provider's discovery document (`{issuer}/.well-known/openid-configuration`),
    /// checked to name this issuer.
    pub(crate) async fn discovery_document(&self) -> Result<Value, AuthError> {
        let issuer = &self.inner.config.issuer;
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let doc = self.get_json(&url, "discovery document").await?;
        if let Some(doc_issuer) = doc.get("issuer").and_then(Value::as_str)
            && doc_issuer != issuer
        {
            return Err(AuthError::ProviderUnavailable(format!(
                "discovery document at {url} names issuer {doc_issuer:?}, expected {issuer:?}"
            )));
        }
        Ok(doc)
    }

    pub(crate) async fn get_json(&self, url: &str, what: &str) -> Result<Value, AuthError> {
        let unavailable = |detail: String| AuthError::ProviderUnavailable(detail);
        let mut response = self
            .inner
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| unavailable(format!("cannot fetch {what} from {url}: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            return Err(unavailable(format!(
                "{what} at {url} answered HTTP {status}"
            )));
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_PROVIDER_DOC_LEN as u64)
        {
            return Err(unavailable(format!("{what} at {url} is too large")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| unavailable(format!("cannot read {what} from {url}: {e}")))?
        {
            if body.len() + chunk.len() > MAX_PROVIDER_DOC_LEN {
                return Err(unavailable(format!("{what} at {url} is too large")));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body)
            .map_err(|_| unavailable(format!("{what} at {url} is not valid JSON")))
    }
}

/// Compares two secrets in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

struct TokenHeader {
    alg: Algorithm,
    kid: Option<String>,
}

/// Reads the JOSE header ourselves so the algorithm allow-list is enforced
/// before any key is looked up (and `none`/HS* never reach the library).
fn parse_header(token: &str) -> Result<TokenHeader, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed("expected three dot-separated parts"));
    };
    if header.is_empty() || payload.is_empty() {
        return Err(AuthError::Malformed("empty header or payload"));
    }
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::Malformed("header is not base64url"))?;
    let header: Map<String, Value> = serde_json::from_slice(&header)
        .map_err(|_| AuthError::Malformed("header is not a JSON object"))?;

    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg.as_str(),
        _ => return Err(AuthError::Malformed("header has no algorithm")),
    };
    let alg = match alg {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        other => return Err(AuthError::UnsupportedAlgorithm(printable_alg(other))),
    };
    if signature.is_empty() {
        return Err(AuthError::Malformed("missing signature"));
    }
    // RFC 7515 §4.1.11: extensions we do not understand must be refused.
    if header.contains_key("crit") {
        return Err(AuthError::Malformed("unsupported critical header"));
    }
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(AuthError::Malformed("key id is not a string")),
    };
    Ok(TokenHeader { alg, kid })
}

/// The `alg` name for error messages: attacker-controlled, so only short
/// plain names are echoed.
fn printable_alg(alg: &str) -> String {
    if alg.len() <= 16 && alg.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        alg.to_owned()
    } else {
        "<invalid>".to_owned()
    }
}

fn key_fits(alg: Algorithm, key: &VerifyKey) -> bool {
    let kind = match alg {
        Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256 => KeyKind::Rsa,
        Algorithm::ES256 => KeyKind::EcP256,
        Algorithm::ES384 => KeyKind::EcP384,
        _ => return false,
    };
    kind == key.kind && key.alg.is_none_or(|pinned| pinned == alg)
}

/// Turns one JWKS entry into a verification key, or skips it (encryption
/// keys, symmetric keys, unsupported curves, weak RSA, garbage).
fn parse_jwk(entry: &Value) -> Option<VerifyKey> {
    if let Some(usage) = entry.get("use")
        && usage.as_str() != Some("sig")
    {
        return None;
    }
    let jwk: Jwk = serde_json::from_value(entry.clone()).ok()?;
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(params) => {
            let modulus = URL_SAFE_NO_PAD.decode(params.n.as_bytes()).ok()?;
            let significant = modulus.iter().skip_while(|b| **b == 0).count();
            if significant < MIN_RSA_MODULUS_BYTES {
                tracing::warn!(kid = ?jwk.common.key_id, "ignoring RSA key shorter than 2048 bits");
                return None;
            }
            KeyKind::Rsa
        }
        AlgorithmParameters::EllipticCurve(params) => match params.curve {
            EllipticCurve::P256 => KeyKind::EcP256,
            EllipticCurve::P384 => KeyKind::EcP384,
            _ => return None,
        },
        _ => return None,
    };
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(key_alg) => match key_alg {
            KeyAlgorithm::RS256 => Some(Algorithm::RS256),
            KeyAlgorithm::RS384 => Some(Algorithm::RS384),
            KeyAlgorithm::RS512 => Some(Algorithm::RS512),
            KeyAlgorithm::PS256 => Some(Algorithm::PS256),
            KeyAlgorithm::ES256 => Some(Algorithm::ES256),
            KeyAlgorithm::ES384 => Some(Algorithm::ES384),
            // Pinned to something we never accept (RSA-OAEP, HS*, ...).
            _ => return None,
        },
    };
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(VerifyKey {
        kid: jwk.common.key_id,
        kind,
        alg,
        key,
    })
}

fn map_jwt_error(err: jsonwebtoken::errors::Error) -> AuthError {
    match err.kind() {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidAlgorithm => AuthError::AlgorithmMismatch,
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "iss" => AuthError::WrongIssuer,
            "aud" => AuthError::WrongAudience,
            "exp" => AuthError::Malformed("token has no expiry (exp)"),
            "sub" => AuthError::Malformed("token has no subject (sub)"),
            _ => AuthError::Malformed("token lacks a required claim"),
        },
        ErrorKind::InvalidClaimFormat(_) => AuthError::Malformed("a time claim is not a number"),
        // A key we could not use for this signature: treat as not verified.
        ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::UnsupportedAlgorithm => AuthError::BadSignature,
        _ => AuthError::Malformed("token could not be decoded"),
    }
}

fn claims_from(mut claims: Map<String, Value>, issuer: &str) -> Result<Claims, AuthError> {
    // The library also accepts an array `iss`; we want exactly one issuer.
    if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
        return Err(AuthError::WrongIssuer);
    }
    let subject = match claims.remove("sub") {
        Some(Value::String(sub)) if !sub.is_empty() => sub,
        _ => return Err(AuthError::Malformed("token has no subject (sub)")),
    };
    let username = match claims.remove("preferred_username") {
        Some(Value::String(name)) => Some(name),
        _ => None,
    };
    let roles = claims
        .get("realm_access")
        .and_then(|access| access.get("roles"))
        .and_then(Value::as_array)
        .map(|roles| {
            roles
                .iter()
                .filter_map(|role| role.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let expires_at = match claims.get("exp") {
        Some(Value::Number(exp)) => exp
            .as_i64()
            .or_else(|| exp.as_f64().map(|f| f.floor() as i64)),
        _ => None,
    }
    .ok_or(AuthError::Malformed("token has no expiry (exp)"))?;
    Ok(Claims {
        subject,
        username,
        roles,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn header_allow_list() {
        for alg in ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384"] {
            let token = format!(
                "{}.{}.sig",
                b64(&format!(r#"{{"alg":"{alg}"}}"#)),
                b64("{}")
            );
            assert!(parse_header(&token).is_ok(), "{alg}");
        }
        for alg in ["none", "None", "HS256", "HS384", "HS512", "EdDSA", "PS384"] {
            let token = format!(
                "{}.{}.sig",
                b64(&format!(r#"{{"alg":"{alg}"}}"#)),
                b64("{}")
            );
            assert_eq!(
                parse_header(&token).err(),
                Some(AuthError::UnsupportedAlgorithm(alg.to_owned()))
            );
        }
    }

    #[test]
    fn malformed_headers() {
        let payload = b64("{}");
        for token in [
            String::new(),
            "abc".to_owned(),
            "a.b".to_owned(),
            "a.b.c.d".to_owned(),
            format!("!!.{payload}.sig"),
            format!("{}.{payload}.sig", b64("[]")),
            format!("{}.{payload}.sig", b64(r#"{"alg":1}"#)),
            format!("{}.{payload}.", b64(r#"{"alg":"RS256"}"#)),
            format!("{}.{payload}.sig", b64(r#"{"alg":"RS256","crit":["x"]}"#)),
            format!("{}.{payload}.sig", b64(r#"{"alg":"RS256","kid":5}"#)),
        ] {
            assert!(
                matches!(parse_header(&token), Err(AuthError::Malformed(_))),
                "{token}"
            );
        }
    }

    #[test]
    fn weird_alg_is_not_echoed() {
        let token = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"<script>alert(1)</script>"}"#),
            b64("{}")
        );
        assert_eq!(
            parse_header(&token).err(),
            Some(AuthError::UnsupportedAlgorithm("<invalid>".to_owned()))
        );
    }

    #[test]
    fn jwk_filtering() {
        let enc =
            serde_json::json!({"kty":"RSA","use":"enc","alg":"RSA-OAEP","n":"AQAB","e":"AQAB"});
        assert!(parse_jwk(&enc).is_none());
        let oct = serde_json::json!({"kty":"oct","k":"c2VjcmV0"});
        assert!(parse_jwk(&oct).is_none());
        let short_rsa =
            serde_json::json!({"kty":"RSA","n":URL_SAFE_NO_PAD.encode([0xffu8; 128]),"e":"AQAB"});
        assert!(parse_jwk(&short_rsa).is_none());
        let rsa = serde_json::json!({"kty":"RSA","kid":"k","n":URL_SAFE_NO_PAD.encode([0xffu8; 256]),"e":"AQAB"});
        let key = parse_jwk(&rsa).expect("usable RSA key");
        assert_eq!(key.kind, KeyKind::Rsa);
        assert!(key_fits(Algorithm::RS256, &key));
        assert!(key_fits(Algorithm::PS256, &key));
        assert!(!key_fits(Algorithm::ES256, &key));
        let pinned = serde_json::json!({"kty":"RSA","alg":"RS256","n":URL_SAFE_NO_PAD.encode([0xffu8; 256]),"e":"AQAB"});
        let key = parse_jwk(&pinned).expect("usable RSA key");
        assert!(key_fits(Algorithm::RS256, &key));
        assert!(!key_fits(Algorithm::PS256, &key));
    }
}
