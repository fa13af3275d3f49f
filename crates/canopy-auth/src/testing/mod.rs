//! A real OIDC token issuer on loopback, for tests (cargo feature
//! `test-issuer`).
//!
//! Tests of anything that accepts OIDC bearer tokens need a provider that
//! publishes a discovery document and a JWKS over HTTP and signs tokens, good
//! and deliberately bad. [`TestIssuer`] is that provider: a small axum server
//! on `127.0.0.1:0` with Keycloak-like paths, one RSA key (rotatable) and one
//! EC P-256 key. Its keys are committed TEST-ONLY keys (see `keys/README.md`)
//! and must never be trusted outside tests.
//!
//! It also plays the provider's part in the console's sign-in (authorization code flow with
//! PKCE): discovery names an authorization endpoint that shows a small login page (user name
//! only: users are added with [`TestIssuer::add_user`]) and redirects back with a single-use
//! code, and a token endpoint that checks the code, the redirect URI, the client (and its
//! secret, when one is set) and the PKCE `S256` verifier before issuing an access token (for
//! the API's audience) and an ID token (for the client id, with the nonce). It stands in for
//! Keycloak, which cannot run in this test environment; the paths, parameter names and error
//! codes (`invalid_grant`, `invalid_client`, `access_denied`) are Keycloak's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Json};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
pub use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::oidc::{OidcConfig, OidcVerifier};

// TEST-ONLY keys, generated with `openssl genpkey` (see keys/README.md).
// They are public and never used outside tests.
const RSA_KEYS: [(&str, &str); 2] = [
    (
        include_str!("keys/rsa-1.pem"),
        include_str!("keys/rsa-1.pub.pem"),
    ),
    (
        include_str!("keys/rsa-2.pem"),
        include_str!("keys/rsa-2.pub.pem"),
    ),
];
const EC_P256_KEY: &str = include_str!("keys/ec-p256.pem");

/// The audience every default token is issued for.
pub const AUDIENCE: &str = "canopy";

/// Path of the issuer under the server root (Keycloak-style realm).
const REALM_PATH: &str = "/realms/canopy";
/// Path of the JWKS under the issuer.
const JWKS_PATH: &str = "/protocol/openid-connect/certs";
/// Path of the authorization endpoint under the issuer.
const AUTH_PATH: &str = "/protocol/openid-connect/auth";
/// Path of the token endpoint under the issuer.
const TOKEN_PATH: &str = "/protocol/openid-connect/token";

/// The client id of the console's sign-in.
pub const CLIENT_ID: &str = "canopy-console";

/// How long an authorization code may be exchanged.
const CODE_LIFETIME: Duration = Duration::from_secs(60);

/// Lifetime of default tokens.
const TOKEN_LIFETIME_SECS: i64 = 300;

/// Which `kid` a token carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kid {
    /// The kid of the key that signs the token.
    Signing,
    /// No `kid` header at all.
    Omit,
    /// This kid, whatever key signs.
    Named(String),
}

/// Everything about a token, for building good and bad ones. Start from
/// [`TestIssuer::spec`], change fields, sign with [`TestIssuer::token_with`].
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// Signing algorithm. RS*/PS* use the current RSA key, ES256 the EC key,
    /// HS* use the RSA *public key PEM* as the HMAC secret (the
    /// algorithm-confusion attack).
    pub alg: Algorithm,
    /// The `kid` header.
    pub kid: Kid,
    /// `sub`.
    pub sub: String,
    /// `preferred_username`, omitted when `None`.
    pub username: Option<String>,
    /// `realm_access.roles`, omitted when `None`.
    pub roles: Option<Vec<String>>,
    /// `exp` (Unix seconds), omitted when `None`.
    pub exp: Option<i64>,
    /// `nbf` (Unix seconds), omitted when `None`.
    pub nbf: Option<i64>,
    /// `aud` (string or array), omitted when `None`.
    pub aud: Option<Value>,
    /// `iss`, omitted when `None`.
    pub iss: Option<String>,
    /// Further claims, applied last (they can override the ones above).
    pub extra: Map<String, Value>,
}

/// Current Unix time in seconds.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Jwk,
    public_pem: &'static str,
}

impl SigningKey {
    fn rsa(kid: String, index: usize) -> SigningKey {
        let (private_pem, public_pem) = RSA_KEYS[index % RSA_KEYS.len()];
        let encoding = EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("test RSA key");
        SigningKey::new(kid, encoding, Algorithm::RS256, public_pem)
    }

    fn ec(kid: String) -> SigningKey {
        let encoding = EncodingKey::from_ec_pem(EC_P256_KEY.as_bytes()).expect("test EC key");
        SigningKey::new(kid, encoding, Algorithm::ES256, "")
    }

    fn new(
        kid: String,
        encoding: EncodingKey,
        alg: Algorithm,
        public_pem: &'static str,
    ) -> SigningKey {
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).expect("JWK from test key");
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        // Like Keycloak, publish no `alg` pin so the verifier's own
        // algorithm/key-type matching is what gets tested.
        jwk.common.key_algorithm = None;
        SigningKey {
            kid,
            encoding,
            jwk,
            public_pem,
        }
    }
}

struct Keys {
    generation: usize,
    rsa: Arc<SigningKey>,
    ec: Arc<SigningKey>,
}

/// A code issued by the authorization endpoint, until it is exchanged.
struct Grant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
    user: String,
    issued: std::time::Instant,
}

/// Changes applied to every ID token the token endpoint issues.
type Tweak = Arc<dyn Fn(&mut TokenSpec) + Send + Sync>;

struct Shared {
    issuer: String,
    keys: RwLock<Keys>,
    /// Users of the login page and their realm roles.
    users: Mutex<HashMap<String, Vec<String>>>,
    /// The client secret the token endpoint requires, if any.
    client_secret: Mutex<Option<String>>,
    /// Codes not yet exchanged (a code is removed when exchanged, so a replay fails).
    grants: Mutex<HashMap<String, Grant>>,
    id_token_tweak: Mutex<Option<Tweak>>,
    /// How long the token endpoint waits before answering (a slow provider).
    token_delay: Mutex<Duration>,
    token_requests: AtomicUsize,
    jwks_fetches: AtomicUsize,
    discovery_fetches: AtomicUsize,
    stopped: AtomicBool,
}

impl Shared {
    fn keys(&self) -> std::sync::RwLockReadGuard<'_, Keys> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A loopback OIDC provider. Stops when dropped.
pub struct TestIssuer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for TestIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestIssuer")
            .field("issuer", &self.shared.issuer)
            .finish_non_exhaustive()
    }
}

impl TestIssuer {
    /// Binds `127.0.0.1:0` and starts serving discovery and JWKS.
    pub async fn start() -> TestIssuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback for the test issuer");
        let addr = listener.local_addr().expect("test issuer address");
        let shared = Arc::new(Shared {
            issuer: format!("http://{addr}{REALM_PATH}"),
            keys: RwLock::new(Keys {
                generation: 1,
                rsa: Arc::new(SigningKey::rsa("rsa-1".to_owned(), 0)),
                ec: Arc::new(SigningKey::ec("ec-1".to_owned())),
            }),
            users: Mutex::new(HashMap::new()),
            client_secret: Mutex::new(None),
            grants: Mutex::new(HashMap::new()),
            id_token_tweak: Mutex::new(None),
            token_delay: Mutex::new(Duration::ZERO),
            token_requests: AtomicUsize::new(0),
            jwks_fetches: AtomicUsize::new(0),
            discovery_fetches: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
        });
        let app = axum::Router::new()
            .route(
                &format!("{REALM_PATH}/.well-known/openid-configuration"),
                get(discovery),
            )
            .route(&format!("{REALM_PATH}{JWKS_PATH}"), get(jwks))
            .route(
                &format!("{REALM_PATH}{AUTH_PATH}"),
                get(authorize_page).post(authorize),
            )
            .route(
                &format!("{REALM_PATH}{TOKEN_PATH}"),
                axum::routing::post(token_endpoint),
            )
            .with_state(shared.clone());
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.await;
                })
                .await;
        });
        TestIssuer {
            shared,
            addr,
            shutdown: Mutex::new(Some(shutdown)),
            task: Mutex::new(Some(task)),
        }
    }

    /// The issuer URL (`iss`), e.g. `http://127.0.0.1:PORT/realms/canopy`.
    pub fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    /// The audience default tokens are issued for (`canopy`).
    pub fn audience(&self) -> String {
        AUDIENCE.to_owned()
    }

    /// The JWKS URL (also advertised by discovery).
    pub fn jwks_url(&self) -> String {
        format!("{}{JWKS_PATH}", self.shared.issuer)
    }

    /// The socket address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A verifier config for this issuer (JWKS discovered).
    pub fn config(&self) -> OidcConfig {
        OidcConfig::new(self.issuer(), AUDIENCE)
    }

    /// A verifier for this issuer with a fresh HTTP client.
    pub fn verifier(&self) -> OidcVerifier {
        OidcVerifier::new(self.config(), reqwest::Client::new())
    }

    /// The kid of the current RSA key.
    pub fn rsa_kid(&self) -> String {
        self.shared.keys().rsa.kid.clone()
    }

    /// The kid of the EC P-256 key.
    pub fn ec_kid(&self) -> String {
        self.shared.keys().ec.kid.clone()
    }

    /// The current RSA public key, PEM (SPKI).
    pub fn rsa_public_key_pem(&self) -> &'static str {
        self.shared.keys().rsa.public_pem
    }

    /// Default claims for `sub`: RS256 with the current key, `iss`, `aud`,
    /// `exp` = now + 300 s, `preferred_username` = `sub`, no roles.
    pub fn spec(&self, sub: &str) -> TokenSpec {
        TokenSpec {
            alg: Algorithm::RS256,
            kid: Kid::Signing,
            sub: sub.to_owned(),
            username: Some(sub.to_owned()),
            roles: None,
            exp: Some(now() + TOKEN_LIFETIME_SECS),
            nbf: None,
            aud: Some(Value::String(AUDIENCE.to_owned())),
            iss: Some(self.issuer()),
            extra: Map::new(),
        }
    }

    fn spec_with_roles(&self, sub: &str, roles: &[&str]) -> TokenSpec {
        TokenSpec {
            roles: Some(roles.iter().map(|r| (*r).to_owned()).collect()),
            ..self.spec(sub)
        }
    }

    /// A valid RS256 token.
    pub fn token(&self, sub: &str, roles: &[&str]) -> String {
        self.token_with(self.spec_with_roles(sub, roles))
    }

    /// A valid ES256 token.
    pub fn token_es256(&self, sub: &str, roles: &[&str]) -> String {
        self.token_with(TokenSpec {
            alg: Algorithm::ES256,
            ..self.spec_with_roles(sub, roles)
        })
    }

    /// An RS256 token that expired an hour ago.
    pub fn expired_token(&self, sub: &str) -> String {
        self.token_with(TokenSpec {
            exp: Some(now() - 3600),
            ..self.spec(sub)
        })
    }

    /// An unsigned token: header `{"alg":"none"}`, empty signature.
    pub fn alg_none_token(&self, sub: &str) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let claims = claims_json(&self.spec(sub));
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("{header}.{payload}.")
    }

    /// A valid token whose payload was then changed (roles escalated to
    /// `admin`), keeping the original signature.
    pub fn tampered_token(&self, sub: &str) -> String {
        let token = self.token(sub, &["viewer"]);
        let mut parts = token.split('.');
        let (header, _, signature) = (
            parts.next().expect("header"),
            parts.next().expect("payload"),
            parts.next().expect("signature"),
        );
        let claims = claims_json(&self.spec_with_roles(sub, &["admin"]));
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("{header}.{payload}.{signature}")
    }

    /// Signs a token exactly as specified. Panics on an algorithm this issuer
    /// has no key for (ES384, PS384/512 are fine, EdDSA is not).
    pub fn token_with(&self, spec: TokenSpec) -> String {
        let (rsa, ec) = {
            let keys = self.shared.keys();
            (keys.rsa.clone(), keys.ec.clone())
        };
        let (signer_kid, encoding) = match spec.alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => (rsa.kid.clone(), rsa.encoding.clone()),
            Algorithm::ES256 => (ec.kid.clone(), ec.encoding.clone()),
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => (
                rsa.kid.clone(),
                EncodingKey::from_secret(rsa.public_pem.as_bytes()),
            ),
            other => panic!("the test issuer has no key for {other:?}"),
        };
        let mut header = Header::new(spec.alg);
        header.kid = match &spec.kid {
            Kid::Signing => Some(signer_kid),
            Kid::Omit => None,
            Kid::Named(kid) => Some(kid.clone()),
        };
        jsonwebtoken::encode(&header, &claims_json(&spec), &encoding).expect("sign test token")
    }

    /// Replaces the RSA key with a new one under a new kid; the old key is
    /// no longer published.
    pub fn rotate_key(&self) {
        let mut keys = self
            .shared
            .keys
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        keys.generation += 1;
        let generation = keys.generation;
        keys.rsa = Arc::new(SigningKey::rsa(format!("rsa-{generation}"), generation - 1));
    }

    /// Adds a user to the login page, with these realm roles (`realm_access.roles` of the
    /// tokens issued to them).
    pub fn add_user(&self, name: &str, roles: &[&str]) {
        lock(&self.shared.users).insert(
            name.to_owned(),
            roles.iter().map(|r| (*r).to_owned()).collect(),
        );
    }

    /// The client id the console signs in with ([`CLIENT_ID`]).
    pub fn client_id(&self) -> String {
        CLIENT_ID.to_owned()
    }

    /// Makes the client confidential: the token endpoint then requires this secret.
    pub fn set_client_secret(&self, secret: Option<&str>) {
        *lock(&self.shared.client_secret) = secret.map(str::to_owned);
    }

    /// Applies `tweak` to every ID token issued from now on (a wrong audience, an expired
    /// token, another nonce: the token is still signed with the provider's key).
    pub fn tweak_id_tokens(&self, tweak: impl Fn(&mut TokenSpec) + Send + Sync + 'static) {
        *lock(&self.shared.id_token_tweak) = Some(Arc::new(tweak));
    }

    /// Makes the token endpoint wait this long before answering (a slow provider).
    pub fn set_token_delay(&self, delay: Duration) {
        *lock(&self.shared.token_delay) = delay;
    }

    /// The authorization endpoint (also advertised by discovery).
    pub fn authorization_endpoint(&self) -> String {
        format!("{}{AUTH_PATH}", self.shared.issuer)
    }

    /// The token endpoint (also advertised by discovery).
    pub fn token_endpoint(&self) -> String {
        format!("{}{TOKEN_PATH}", self.shared.issuer)
    }

    /// How many requests the token endpoint received.
    pub fn token_requests(&self) -> usize {
        self.shared.token_requests.load(Ordering::SeqCst)
    }

    /// How many times the JWKS was served.
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// How many times the discovery document was served.
    pub fn discovery_fetches(&self) -> usize {
        self.shared.discovery_fetches.load(Ordering::SeqCst)
    }

    /// Stops serving: requests still arriving on open connections get 503,
    /// the listener closes.
    pub async fn stop(&self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        let shutdown = self
            .shutdown
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(shutdown) = shutdown {
            let _ = shutdown.send(());
        }
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        if let Some(task) = self
            .task
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

fn claims_json(spec: &TokenSpec) -> Value {
    let mut claims = Map::new();
    claims.insert("sub".to_owned(), Value::String(spec.sub.clone()));
    if let Some(username) = &spec.username {
        claims.insert(
            "preferred_username".to_owned(),
            Value::String(username.clone()),
        );
    }
    if let Some(roles) = &spec.roles {
        claims.insert("realm_access".to_owned(), json!({ "roles": roles }));
    }
    if let Some(exp) = spec.exp {
        claims.insert("exp".to_owned(), json!(exp));
    }
    if let Some(nbf) = spec.nbf {
        claims.insert("nbf".to_owned(), json!(nbf));
    }
    if let Some(aud) = &spec.aud {
        claims.insert("aud".to_owned(), aud.clone());
    }
    if let Some(iss) = &spec.iss {
        claims.insert("iss".to_owned(), Value::String(iss.clone()));
    }
    claims.insert("iat".to_owned(), json!(now()));
    for (name, value) in &spec.extra {
        claims.insert(name.clone(), value.clone());
    }
    Value::Object(claims)
}

fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "stopped").into_response()
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Response {
    if shared.stopped.load(Ordering::SeqCst) {
        return unavailable();
    }
    shared.discovery_fetches.fetch_add(1, Ordering::SeqCst);
    let issuer = &shared.issuer;
    Json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}{JWKS_PATH}"),
        "authorization_endpoint": format!("{issuer}{AUTH_PATH}"),
        "token_endpoint": format!("{issuer}{TOKEN_PATH}"),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    }))
    .into_response()
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    if shared.stopped.load(Ordering::SeqCst) {
        return unavailable();
    }
    shared.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let set = {
        let keys = shared.keys();
        JwkSet {
            keys: vec![keys.rsa.jwk.clone(), keys.ec.jwk.clone()],
        }
    };
    Json(set).into_response()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The authorization request's parameters (query of the page, hidden fields of its form).
#[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
struct AuthRequest {
    #[serde(default)]
    response_type: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    redirect_uri: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    nonce: String,
    #[serde(default)]
    code_challenge: String,
    #[serde(default)]
    code_challenge_method: String,
    /// The form's user name field.
    #[serde(default, skip_serializing)]
    username: String,
    /// `deny` when the user pressed "Deny".
    #[serde(default, skip_serializing)]
    action: String,
}

impl AuthRequest {
    /// Why this request cannot be served (shown on the provider's page, never redirected:
    /// the redirect URI is not trusted until the request is valid).
    fn problem(&self) -> Option<&'static str> {
        if self.client_id != CLIENT_ID {
            return Some("unknown client_id");
        }
        if self.response_type != "code" {
            return Some("response_type must be code");
        }
        if !(self.redirect_uri.starts_with("http://") || self.redirect_uri.starts_with("https://"))
        {
            return Some("invalid redirect_uri");
        }
        if !self.scope.split(' ').any(|s| s == "openid") {
            return Some("scope must include openid");
        }
        if self.code_challenge.is_empty() || self.code_challenge_method != "S256" {
            return Some("PKCE with code_challenge_method=S256 is required");
        }
        None
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn login_page(req: &AuthRequest, error: Option<&str>) -> Response {
    if let Some(problem) = req.problem() {
        return (
            StatusCode::BAD_REQUEST,
            format!("invalid request: {problem}"),
        )
            .into_response();
    }
    let hidden: String = [
        ("response_type", &req.response_type),
        ("client_id", &req.client_id),
        ("redirect_uri", &req.redirect_uri),
        ("scope", &req.scope),
        ("state", &req.state),
        ("nonce", &req.nonce),
        ("code_challenge", &req.code_challenge),
        ("code_challenge_method", &req.code_challenge_method),
    ]
    .iter()
    .map(|(n, v)| format!(r#"<input type="hidden" name="{n}" value="{}">"#, escape(v)))
    .collect();
    let error = error
        .map(|e| format!(r#"<p id="kc-error">{}</p>"#, escape(e)))
        .unwrap_or_default();
    Html(format!(
        r#"<!doctype html><html><head><title>Sign in to canopy (test provider)</title></head>
<body><h1>Test identity provider</h1>{error}
<form id="kc-form-login" method="post">{hidden}
<label for="username">Username</label> <input id="username" name="username" autofocus>
<button id="kc-login" name="action" value="login" type="submit">Sign In</button>
<button id="kc-deny" name="action" value="deny" type="submit">Deny</button>
</form></body></html>"#
    ))
    .into_response()
}

async fn authorize_page(
    State(shared): State<Arc<Shared>>,
    Query(req): Query<AuthRequest>,
) -> Response {
    if shared.stopped.load(Ordering::SeqCst) {
        return unavailable();
    }
    login_page(&req, None)
}

/// The login form: a known user gets a code, "Deny" gets `access_denied`, both sent back to
/// the redirect URI with the request's `state`.
async fn authorize(State(shared): State<Arc<Shared>>, Form(req): Form<AuthRequest>) -> Response {
    if shared.stopped.load(Ordering::SeqCst) {
        return unavailable();
    }
    if req.problem().is_some() {
        return login_page(&req, None);
    }
    let Ok(mut back) = reqwest::Url::parse(&req.redirect_uri) else {
        return login_page(&req, Some("invalid redirect_uri"));
    };
    if req.action == "deny" {
        back.query_pairs_mut()
            .append_pair("error", "access_denied")
            .append_pair("error_description", "The user denied the sign-in")
            .append_pair("state", &req.state);
        return Redirect::to(back.as_str()).into_response();
    }
    if !lock(&shared.users).contains_key(&req.username) {
        return login_page(&req, Some("Invalid username or password."));
    }
    let mut code = [0u8; 24];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut code);
    let code = URL_SAFE_NO_PAD.encode(code);
    lock(&shared.grants).insert(
        code.clone(),
        Grant {
            client_id: req.client_id.clone(),
            redirect_uri: req.redirect_uri.clone(),
            challenge: req.code_challenge.clone(),
            nonce: (!req.nonce.is_empty()).then(|| req.nonce.clone()),
            user: req.username.clone(),
            issued: std::time::Instant::now(),
        },
    );
    back.query_pairs_mut()
        .append_pair("state", &req.state)
        .append_pair("code", &code);
    Redirect::to(back.as_str()).into_response()
}

#[derive(Debug, Default, serde::Deserialize)]
struct TokenRequest {
    #[serde(default)]
    grant_type: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    redirect_uri: String,
    #[serde(default)]
    code_verifier: Option<String>,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// The client's credentials from `Authorization: Basic` (client_secret_basic).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

async fn token_endpoint(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Form(req): Form<TokenRequest>,
) -> Response {
    if shared.stopped.load(Ordering::SeqCst) {
        return unavailable();
    }
    shared.token_requests.fetch_add(1, Ordering::SeqCst);
    let delay = *lock(&shared.token_delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (client_id, secret) = match basic_credentials(&headers) {
        Some((id, secret)) => (id, Some(secret)),
        None => (req.client_id.clone(), req.client_secret.clone()),
    };
    if client_id != CLIENT_ID {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "Invalid client");
    }
    if let Some(required) = lock(&shared.client_secret).clone()
        && secret.as_deref() != Some(required.as_str())
    {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            "Invalid client or Invalid client credentials",
        );
    }
    if req.grant_type != "authorization_code" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Unsupported grant_type",
        );
    }
    // Taken out at once: a code works at most once, whatever happens next.
    let Some(grant) = lock(&shared.grants).remove(&req.code) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Code not valid");
    };
    if grant.issued.elapsed() > CODE_LIFETIME {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Code is expired");
    }
    if grant.client_id != client_id {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Code issued to another client",
        );
    }
    if grant.redirect_uri != req.redirect_uri {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Incorrect redirect_uri",
        );
    }
    let Some(verifier) = req.code_verifier.filter(|v| !v.is_empty()) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "PKCE code verifier not specified",
        );
    };
    if crate::oidc_login::pkce_challenge(&verifier) != grant.challenge {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "PKCE verification failed: Invalid code verifier",
        );
    }
    let roles = lock(&shared.users)
        .get(&grant.user)
        .cloned()
        .unwrap_or_default();
    let issuer = TestIssuer::signer(&shared);
    let access = issuer.sign(TokenSpec {
        roles: Some(roles.clone()),
        ..issuer.base_spec(&grant.user)
    });
    let mut id_spec = TokenSpec {
        roles: Some(roles),
        aud: Some(Value::String(client_id.clone())),
        ..issuer.base_spec(&grant.user)
    };
    id_spec
        .extra
        .insert("azp".to_owned(), Value::String(client_id.clone()));
    if let Some(nonce) = grant.nonce {
        id_spec
            .extra
            .insert("nonce".to_owned(), Value::String(nonce));
    }
    let tweak = lock(&shared.id_token_tweak).clone();
    if let Some(tweak) = tweak {
        tweak(&mut id_spec);
    }
    let id_token = issuer.sign(id_spec);
    Json(json!({
        "access_token": access,
        "id_token": id_token,
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME_SECS,
        "scope": "openid profile",
    }))
    .into_response()
}

/// Signing from inside the provider's handlers (they hold only the shared state).
struct Signer<'a> {
    shared: &'a Shared,
}

impl TestIssuer {
    fn signer(shared: &Shared) -> Signer<'_> {
        Signer { shared }
    }
}

impl Signer<'_> {
    fn base_spec(&self, sub: &str) -> TokenSpec {
        TokenSpec {
            alg: Algorithm::RS256,
            kid: Kid::Signing,
            sub: sub.to_owned(),
            username: Some(sub.to_owned()),
            roles: None,
            exp: Some(now() + TOKEN_LIFETIME_SECS),
            nbf: None,
            aud: Some(Value::String(AUDIENCE.to_owned())),
            iss: Some(self.shared.issuer.clone()),
            extra: Map::new(),
        }
    }

    fn sign(&self, spec: TokenSpec) -> String {
        let rsa = self.shared.keys().rsa.clone();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(rsa.kid.clone());
        jsonwebtoken::encode(&header, &claims_json(&spec), &rsa.encoding).expect("sign test token")
    }
}
