//! Console sign-in through an OIDC provider (authorization code flow with PKCE), by HTTP,
//! against a real provider on loopback (`canopy_auth::testing::TestIssuer`: discovery, a login
//! page, single-use codes, a token endpoint that checks the PKCE verifier; it stands in for
//! Keycloak, which cannot run here). Every step is an HTTP request a browser would make, with
//! the cookies handled by hand so their flags can be asserted.

mod common;

use std::time::Duration;

use canopy_auth::oidc_login::{ClientSecret, LoginClient};
use canopy_auth::testing::{CLIENT_ID, TestIssuer, now};
use canopy_server::app::{AuthConfig, ConsoleOidc};
use canopy_testkit::TestControlPlane;
use common::*;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION};
use serde_json::Value;

/// A control plane whose console signs in through `issuer` (public client unless `secret`).
async fn console_with(
    issuer: &TestIssuer,
    secret: Option<&str>,
    session_ttl: Option<Duration>,
) -> TestControlPlane {
    let verifier = issuer.verifier();
    let client = LoginClient::new(verifier.clone(), CLIENT_ID, secret.map(ClientSecret::new));
    TestControlPlane::start_configured(|c| {
        c.auth = AuthConfig {
            oidc: Some(verifier),
            session_ttl,
            console: Some(ConsoleOidc {
                client,
                label: "Test IdP".into(),
            }),
            ..Default::default()
        };
    })
    .await
}

async fn console(issuer: &TestIssuer) -> TestControlPlane {
    console_with(issuer, None, None).await
}

/// A started sign-in: the pending cookie's value and the provider's authorization URL.
struct Started {
    pending: String,
    authorize: reqwest::Url,
}

/// `GET /ui/oidc/start`: checks the redirect and the pending cookie's flags.
async fn start(cp: &TestControlPlane, issuer: &TestIssuer) -> Started {
    let r = client().get(cp.at("/ui/oidc/start")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let location = r.headers().get(LOCATION).unwrap().to_str().unwrap();
    let authorize = reqwest::Url::parse(location).unwrap();
    assert!(
        location.starts_with(&issuer.authorization_endpoint()),
        "{location}"
    );
    let q: std::collections::HashMap<_, _> = authorize.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["redirect_uri"], cp.at("/ui/oidc/callback"));
    for p in ["state", "nonce", "code_challenge"] {
        assert!(q[p].len() >= 43, "{p} carries 256 random bits: {location}");
    }
    let (pending, whole) = set_cookie(r.headers(), "canopy_oidc").expect("a pending cookie");
    for flag in [
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
        "Path=/ui/oidc/",
        "Max-Age=600",
    ] {
        assert!(whole.contains(flag), "{whole} lacks {flag}");
    }
    // The verifier is in the cookie only: never in the URL the browser shows the provider.
    let verifier = pending.split('.').nth(3).unwrap();
    assert!(!location.contains(verifier));
    Started { pending, authorize }
}

/// The provider's login page, then its form for `user` (`action`: `login` or `deny`):
/// the URL the provider sends the browser back to.
async fn at_provider(started: &Started, user: &str, action: &str) -> String {
    let http = client();
    let page = http.get(started.authorize.clone()).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("kc-form-login"));
    let mut form: Vec<(String, String)> = started.authorize.query_pairs().into_owned().collect();
    form.push(("username".into(), user.into()));
    form.push(("action".into(), action.into()));
    let mut endpoint = started.authorize.clone();
    endpoint.set_query(None);
    let r = http.post(endpoint).form(&form).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "the provider sends the browser back"
    );
    r.headers()
        .get(LOCATION)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

/// The browser back at the console's callback with `pending` as its cookie.
async fn callback(back: &str, pending: Option<&str>) -> (StatusCode, HeaderMap, String) {
    let mut req = client().get(back);
    if let Some(p) = pending {
        req = req.header("cookie", format!("canopy_oidc={p}"));
    }
    let r = req.send().await.unwrap();
    let (s, h) = (r.status(), r.headers().clone());
    (s, h, r.text().await.unwrap())
}

/// The whole flow for `user`; panics unless it signs in. The session and the callback's
/// answer.
async fn sign_in_oidc(
    cp: &TestControlPlane,
    issuer: &TestIssuer,
    user: &str,
) -> (Signed, HeaderMap, String) {
    let started = start(cp, issuer).await;
    let back = at_provider(&started, user, "login").await;
    assert!(back.starts_with(&cp.at("/ui/oidc/callback?")), "{back}");
    let (s, h, page) = callback(&back, Some(&started.pending)).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let (token, set_cookie) = set_cookie(&h, "canopy_session").expect("a session cookie");
    (Signed { token, set_cookie }, h, page)
}

/// Asserts a failed callback: the sign-in page with `message`, no session, the pending
/// cookie cleared, and nothing secret in the page.
fn assert_refused(
    status: StatusCode,
    h: &HeaderMap,
    page: &str,
    expected: StatusCode,
    message: &str,
) {
    assert_eq!(status, expected, "{page}");
    assert!(page.contains("id=\"login-error\""), "{page}");
    assert!(page.contains(message), "expected {message:?} in {page}");
    assert!(page.contains("Sign in with Test IdP"), "{page}");
    assert!(set_cookie(h, "canopy_session").is_none());
    let (cleared, _) = set_cookie(h, "canopy_oidc").expect("the pending cookie is cleared");
    assert_eq!(cleared, "");
    for secret in ["eyJ", "code=", "cnp_"] {
        assert!(!page.contains(secret), "{secret} in {page}");
    }
}

#[tokio::test]
async fn the_sign_in_page_offers_the_provider_only_when_configured() {
    let plain = TestControlPlane::start().await;
    let page = client().get(plain.at("/ui/login")).send().await.unwrap();
    let page = page.text().await.unwrap();
    assert!(!page.contains("oidc-sign-in"), "{page}");
    let r = client()
        .get(plain.at("/ui/oidc/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let issuer = TestIssuer::start().await;
    let cp = console(&issuer).await;
    let page = client().get(cp.at("/ui/login")).send().await.unwrap();
    let page = page.text().await.unwrap();
    assert!(
        page.contains(r#"href="/ui/oidc/start""#) && page.contains("Sign in with Test IdP"),
        "{page}"
    );
    // The password form is still there for built-in users.
    assert!(page.contains("id=\"password\""));
}

#[tokio::test]
async fn a_read_only_provider_user_signs_in_with_the_apis_roles_and_cannot_write() {
    let issuer = TestIssuer::start().await;
    issuer.add_user("support", &["default_ao-r"]);
    issuer.add_user("ops", &["default_ao-rw"]);
    let cp = console_with(&issuer, None, Some(Duration::from_secs(1800))).await;
    upload_example(&cp).await;
    let id = deployment(&cp, "shop", "paris").await;
    let page_path = format!("/ui/projects/default/deployments/{id}");
    let delete = format!("{page_path}/delete");

    // A writer through the provider sees the delete control.
    let (ops, _, _) = sign_in_oidc(&cp, &issuer, "ops").await;
    let (_, _, page) = ops.get(&cp, &page_path).await;
    assert!(
        page.contains(&delete),
        "a writer sees the delete control: {page}"
    );

    let (ro, h, landing) = sign_in_oidc(&cp, &issuer, "support").await;
    // The same session cookie as a password sign-in, lasting --session-ttl.
    for flag in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=1800",
    ] {
        assert!(
            ro.set_cookie.contains(flag),
            "{} lacks {flag}",
            ro.set_cookie
        );
    }
    assert!(ro.token.starts_with("cnp_s_"));
    assert_eq!(
        set_cookie(&h, "canopy_oidc").unwrap().0,
        "",
        "pending cookie cleared"
    );
    // The landing page moves on to the console by itself (same-site, so the Strict cookie goes).
    assert!(
        landing.contains(r#"http-equiv="refresh" content="0;url=/""#),
        "{landing}"
    );
    assert!(landing.contains("oidc:support"), "{landing}");
    assert!(!landing.contains(&ro.token));

    let (status, _, page) = ro.get(&cp, &page_path).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("oidc:support"),
        "the header names the user: {page}"
    );
    assert!(page.contains("shop"));
    assert!(
        !page.contains(&delete),
        "no delete control for ao-r: {page}"
    );
    // A forged delete with the session's own valid CSRF token: the app layer refuses it.
    let csrf = ro.csrf(&cp).await;
    let (status, _, page) = ro.post(&cp, &delete, &[("csrf", &csrf)], &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    assert!(page.contains("oidc:support may not do this"), "{page}");
    assert!(page.contains("deployment write access"), "{page}");
    assert!(deployment_exists(&cp, &id).await);

    // The sign-in is in the audit log under oidc:<preferred_username>.
    let (_, log) = cp.get(&cp.at("/canopy/v1/audit?pageSize=100")).await;
    let entries = log["entries"].as_array().expect("entries");
    assert!(
        entries
            .iter()
            .any(|e| e["actor"] == "oidc:support" && e["target"] == "/ui/oidc/callback"),
        "{log}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["actor"] == "oidc:support" && e["target"] == delete.as_str()),
        "the refused delete is recorded under the user: {log}"
    );

    // Sign-out ends the session: the same cookie no longer works.
    let (status, h, _) = ro.post(&cp, "/ui/logout", &[("csrf", &csrf)], &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(h.get(LOCATION).unwrap(), "/ui/login");
    let (status, h, _) = ro.get(&cp, &page_path).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(h.get(LOCATION).unwrap(), "/ui/login");
    // The other user's session is untouched.
    let (status, _, _) = ops.get(&cp, &page_path).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn sessions_end_after_the_session_ttl() {
    let issuer = TestIssuer::start().await;
    issuer.add_user("ops", &["default_ao-rw"]);
    let cp = console_with(&issuer, None, Some(Duration::from_secs(2))).await;
    let (s, _, _) = sign_in_oidc(&cp, &issuer, "ops").await;
    assert!(s.set_cookie.contains("Max-Age=2"), "{}", s.set_cookie);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, h, _) = s.get(&cp, "/ui/projects/default/deployments").await;
        if status == StatusCode::SEE_OTHER {
            assert_eq!(h.get(LOCATION).unwrap(), "/ui/login");
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_wrong_state_is_refused_before_the_code_is_used() {
    let issuer = TestIssuer::start().await;
    issuer.add_user("ops", &["default_ao-rw"]);
    let cp = console(&issuer).await;
    let started = start(&cp, &issuer).await;
    let back = at_provider(&started, "ops", "login").await;
    // Another sign-in's pending cookie (e.g. an attacker's own, or another tab's).
    let other = start(&cp, &issuer).await;
    let (s, h, page) = callback(&back, Some(&other.pending)).await;
    assert_refused(s, &h, &page, StatusCode::UNAUTHORIZED, "state mismatch");
    assert_eq!(issuer.token_requests(), 0, "the code was never sent");
    // No pending cookie at all.
    let (s, h, page) = callback(&back, None).await;
    assert_refused(
        s,
        &h,
        &page,
        StatusCode::BAD_REQUEST,
        "has expired or was started in another browser",
    );
    // The right cookie still works: nothing was spent.
    let (s, _, page) = callback(&back, Some(&started.pending)).await;
    assert_eq!(s, StatusCode::OK, "{page}");
}

#[tokio::test]
async fn a_replayed_code_is_refused() {
    let issuer = TestIssuer::start().await;
    issuer.add_user("ops", &["default_ao-rw"]);
    let cp = console(&issuer).await;
    let started = start(&cp, &issuer).await;
    let back = at_provider(&started, "ops", "login").await;
    let (s, h, _) = callback(&back, Some(&started.pending)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(set_cookie(&h, "canopy_session").is_some());
    // The same URL and cookie again (a copied URL, a reloaded page, an attacker's replay).
    let (s, h, page) = callback(&back, Some(&started.pending)).await;
    assert_refused(
        s,
        &h,
        &page,
        StatusCode::UNAUTHORIZED,
        "invalid_grant (Code not valid)",
    );
}

#[tokio::test]
async fn the_provider_refuses_a_missing_or_wrong_pkce_verifier() {
    let issuer = TestIssuer::start().await;
    issuer.add_user("ops", &["default_ao-rw"]);
    let cp = console(&issuer).await;

    // At the provider's token endpoint directly: the code of a real sign-in, no verifier or a
    // wrong one.
    for (verifier, message) in [
        (None, "PKCE code verifier not specified"),
        (Some("x".repeat(43)), "PKCE verification failed"),
    ] {
        let started = start(&cp, &issuer).await;
        let back = reqwest::Url::parse(&at_provider(&started, "ops", "login").await).unwrap();
        let code = back
            .query_pairs()
            .find(|(k, _)| k == "code")
            .unwrap()
            .1
            .into_owned();
        let mut form = vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code),
            ("redirect_uri", cp.at("/ui/oidc/callback")),
            ("client_id", CLIENT_ID.to_string()),
        ];
        if let Some(v) = verifier {
            form.push(("code_verifier", v));
        }
        let r = client()
            .post(issuer.token_endpoint())
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_grant");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains(message),
            "{body}"
        );
    }

    // Through the console: a pending cookie whose verifier is not the one the challenge was
    // made from. The provider refuses, and the page says so.
    let started = start(&cp, &issuer).await;
    let back = at_provider(&started, "ops", "login").await;
    let mut parts: Vec<String> = started.pending.split('.').map(str::to_string).collect();
    parts[3] = "A".repeat(43);
    let (s, h, page) = callback(&back, Some(&parts.join("."))).await;
    assert_refused(
        s,
        &h,
        &page,
        StatusCode::UNAUTHORIZED,
        "PKCE verification failed",
    );
}

#[tokio::test]
async fn id_tokens_with_a_wrong_nonce_audience_or_expiry_are_refused() {
    let issuer = TestIssuer::start().await;
    issuer.add_user("ops", &["default_ao-rw"]);
    let cp = console(&issuer).await;
    type Tweak = Box<dyn Fn(&mut canopy_auth::testing::TokenSpec) + Send + Sync>;
    let cases: Vec<(Tweak, &str)> = vec![
        (
            Box::new(|s| {
                s.extra
                    .insert("nonce".into(), Value::String("n".repeat(43)));
            }),
            "nonce does not match",
        ),
        (
            Box::new(|s| {
                s.extra.remove("nonce");
            }),
            "nonce does not match",
        ),
        (
            Box::new(|s| s.aud = Some(Value::String("someone-else".into()))),
            "not intended for this audience",
        ),
        (
            // The API's audience is not the console's client id.
            Box::new(|s| s.aud = Some(Value::String("canopy".into()))),
            "not intended for this audience",
        ),
        (
            Box::new(|s| {
                s.extra
                    .insert("azp".into(), Value::String("another-client".into()));
            }),
            "not intended for this audience",
        ),
        (
            Box::new(|s| s.exp = Some(now() - 3600)),
            "token has expired",
        ),
        (
            Box::new(|s| s.iss = Some("http://127.0.0.1:1/realms/evil".into())),
            "unexpected issuer",
        ),
    ];
    for (tweak, message) in cases {
        issuer.tweak_id_tokens(tweak);
        let started = start(&cp, &issuer).await;
        let back = at_provider(&started, "ops", "login").await;
        let (s, h, page) = callback(&back, Some(&started.pending)).await;
        assert_refused(s, &h, &page, StatusCode::UNAUTHORIZED, message);
        assert!(page.contains("ID token was refused"), "{page}");
    }
    // Without a tweak the same flow signs in (the cases above failed for their reason only).
    issuer.tweak_id_tokens(|_| {});
    sign_in_oidc(&cp, &issuer, "ops").await;
}

#[tokio::test]
async fn the_providers_error_is_shown_on_the_sign_in_page() {
    let issuer = TestIssuer::start().await;
    issuer.add_user("ops", &["default_ao-rw"]);
    let cp = console(&issuer).await;
    let started = start(&cp, &issuer).await;
    let back = at_provider(&started, "ops", "deny").await;
    assert!(back.contains("error=access_denied"), "{back}");
    let (s, h, page) = callback(&back, Some(&started.pending)).await;
    assert_refused(
        s,
        &h,
        &page,
        StatusCode::UNAUTHORIZED,
        "the identity provider refused the sign-in: access_denied (The user denied the sign-in)",
    );
    // What a URL says is data, never markup.
    let evil = cp.at("/ui/oidc/callback?error=%3Cscript%3Ealert(1)%3C/script%3E");
    let (s, h, page) = callback(&evil, Some(&started.pending)).await;
    assert_refused(s, &h, &page, StatusCode::UNAUTHORIZED, "&lt;script&gt;");
    assert!(!page.contains("<script>alert"));
}

#[tokio::test]
async fn a_confidential_client_sends_its_secret_and_never_shows_it() {
    let issuer = TestIssuer::start().await;
    issuer.add_user("ops", &["default_ao-rw"]);
    issuer.set_client_secret(Some("the-client-secret-value"));
    let cp = console_with(&issuer, Some("the-client-secret-value"), None).await;
    let started = start(&cp, &issuer).await;
    assert!(
        !started
            .authorize
            .as_str()
            .contains("the-client-secret-value")
    );
    let back = at_provider(&started, "ops", "login").await;
    let (s, _, page) = callback(&back, Some(&started.pending)).await;
    assert_eq!(s, StatusCode::OK, "{page}");

    // A console with the wrong secret is refused by the provider, and says so.
    let wrong = console_with(&issuer, Some("not-the-secret"), None).await;
    let started = start(&wrong, &issuer).await;
    let back = at_provider(&started, "ops", "login").await;
    let (s, h, page) = callback(&back, Some(&started.pending)).await;
    assert_refused(
        s,
        &h,
        &page,
        StatusCode::UNAUTHORIZED,
        "unauthorized_client",
    );
    assert!(!page.contains("not-the-secret"));
}

#[tokio::test]
async fn a_provider_user_without_api_access_gets_no_project() {
    // Roles are the API's: a user the provider knows but who has no Canopy role signs in and
    // sees no project (and the deployments of `default` are a 404, as on the API).
    let issuer = TestIssuer::start().await;
    issuer.add_user("nobody", &["offline_access"]);
    let cp = console(&issuer).await;
    let (s, _, _) = sign_in_oidc(&cp, &issuer, "nobody").await;
    let (status, _, page) = s.get(&cp, "/ui/projects/default/deployments").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{page}");
}

/// What 32 hostile clients starting sign-ins for a while cost: no server state (every answer
/// is a redirect with a cookie), one discovery fetch in all, no token endpoint call, and the
/// console still signs real users in afterwards.
#[tokio::test]
async fn hostile_sign_in_starts_cost_the_server_nothing() {
    let issuer = TestIssuer::start().await;
    issuer.add_user("ops", &["default_ao-rw"]);
    let cp = console(&issuer).await;
    let url = cp.at("/ui/oidc/start");
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let http = client();
            let mut codes = Vec::new();
            for _ in 0..25 {
                let r = http.get(&url).send().await.unwrap();
                codes.push(r.status());
                // And a callback with garbage for every start: refused before the provider.
                let r = http
                    .get(url.replace("/start", "/callback?state=x&code=y"))
                    .header("cookie", "canopy_oidc=v1.garbage")
                    .send()
                    .await
                    .unwrap();
                codes.push(r.status());
            }
            codes
        }));
    }
    let mut redirects = 0;
    for t in tasks {
        for status in t.await.unwrap() {
            match status {
                StatusCode::SEE_OTHER => redirects += 1,
                StatusCode::BAD_REQUEST => {}
                // The API's per-caller limits may answer 429: also fine, also free.
                StatusCode::TOO_MANY_REQUESTS => {}
                other => panic!("unexpected {other}"),
            }
        }
    }
    assert!(redirects > 0);
    assert_eq!(
        issuer.discovery_fetches(),
        1,
        "discovery is fetched once, not per start"
    );
    assert_eq!(
        issuer.token_requests(),
        0,
        "no garbage reached the token endpoint"
    );
    sign_in_oidc(&cp, &issuer, "ops").await;
}

/// Finishing sign-ins makes the server call the provider, so only a few run at once: with a
/// slow provider, the callbacks beyond that limit are refused at once (429) instead of piling
/// up, and those within it succeed.
#[tokio::test]
async fn only_a_few_sign_ins_finish_at_once() {
    let issuer = TestIssuer::start().await;
    issuer.add_user("ops", &["default_ao-rw"]);
    let cp = console(&issuer).await;
    let extra = 4;
    let mut flows = Vec::new();
    for _ in 0..canopy_server::app::MAX_EXCHANGES + extra {
        let started = start(&cp, &issuer).await;
        let back = at_provider(&started, "ops", "login").await;
        flows.push((back, started.pending));
    }
    issuer.set_token_delay(Duration::from_secs(5));
    let tasks: Vec<_> = flows
        .into_iter()
        .map(|(back, pending)| tokio::spawn(async move { callback(&back, Some(&pending)).await }))
        .collect();
    let (mut ok, mut limited) = (0, 0);
    for t in tasks {
        let (s, _, page) = t.await.unwrap();
        match s {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(page.contains("too many requests"), "{page}");
                limited += 1;
            }
            other => panic!("unexpected {other}: {page}"),
        }
    }
    assert_eq!(
        ok,
        canopy_server::app::MAX_EXCHANGES,
        "the limit's worth succeed"
    );
    assert_eq!(limited, extra);
    assert_eq!(issuer.token_requests(), canopy_server::app::MAX_EXCHANGES);
}
