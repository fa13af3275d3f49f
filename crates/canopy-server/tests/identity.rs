//! Built-in identities under hostile or careless use, over HTTP against a real server:
//!
//! - logout ends login sessions only: with an API token or the bootstrap administrator token
//!   it answers 400, says which kind of token it is and how to revoke it, and revokes nothing;
//! - changing one's own password needs the current one (an administrator setting someone
//!   else's does not), and guessing it is limited like logins;
//! - login attempts are limited per source address and per user name (429 with Retry-After),
//!   unknown user names exactly like known ones, and behind a trusted proxy per client;
//! - the administrator can be recovered offline (`reset_admin_token`), and it is audited.

use canopy_auth::password::HashParams;
use canopy_testkit::TestControlPlane;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A server whose password hashes are cheap (the limits, not the hashing, are under test here;
/// `crates/canopy/tests/login_flood.rs` floods real argon2id).
async fn server(configure: impl FnOnce(&mut canopy_server::app::LoginLimits)) -> TestControlPlane {
    TestControlPlane::start_configured(|c| {
        c.auth.login.hash_params = HashParams::INSECURE_FAST_FOR_TESTS;
        configure(&mut c.auth.login);
    })
    .await
}

async fn create_user(cp: &TestControlPlane, name: &str, password: Option<&str>) {
    let (s, b) = cp
        .post(
            &cp.at("/canopy/v1/users"),
            &json!({"name": name, "password": password, "roles": ["default_cat-r"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
}

struct Answer {
    status: StatusCode,
    retry_after: Option<u64>,
    body: Value,
}

async fn login_from(
    cp: &TestControlPlane,
    user: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> Answer {
    let mut req = cp
        .anonymous_http()
        .post(cp.at("/canopy/v1/login"))
        .json(&json!({"username": user, "password": password}));
    if let Some(f) = forwarded_for {
        req = req.header("x-forwarded-for", f);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let body = r.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        retry_after,
        body,
    }
}

async fn login(cp: &TestControlPlane, user: &str, password: &str) -> Answer {
    login_from(cp, user, password, None).await
}

async fn whoami(cp: &TestControlPlane, token: &str) -> StatusCode {
    cp.anonymous_http()
        .get(cp.at("/canopy/v1/whoami"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

async fn logout(cp: &TestControlPlane, token: &str) -> (StatusCode, String) {
    let r = cp
        .anonymous_http()
        .post(cp.at("/canopy/v1/logout"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, body["message"].as_str().unwrap_or("").to_string())
}

#[tokio::test]
async fn logout_ends_sessions_only() {
    let cp = server(|_| {}).await;
    create_user(&cp, "alice", Some("alice's long password")).await;

    // An API token: refused, named, nothing revoked.
    let (s, api) = cp
        .post(
            &cp.at("/canopy/v1/tokens"),
            &json!({"name": "ci", "user": "alice"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{api}");
    let api_token = api["token"].as_str().unwrap();
    let api_id = api["id"].as_str().unwrap();
    let (s, msg) = logout(&cp, api_token).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{msg}");
    assert!(msg.contains("API token") && msg.contains(api_id), "{msg}");
    assert!(
        msg.contains(&format!("canopy token revoke {api_id}")),
        "{msg}"
    );
    assert!(
        !msg.contains(api_token),
        "the token itself is never echoed: {msg}"
    );
    assert_eq!(whoami(&cp, api_token).await, StatusCode::OK, "still valid");

    // The bootstrap administrator token: refused, the way back named, still valid.
    let (s, msg) = logout(&cp, cp.admin_token()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{msg}");
    assert!(msg.contains("bootstrap administrator token"), "{msg}");
    assert!(msg.contains("canopy admin reset-token"), "{msg}");
    assert_eq!(whoami(&cp, cp.admin_token()).await, StatusCode::OK);
    let (_, all) = cp.get(&cp.at("/canopy/v1/tokens?all=true")).await;
    assert_eq!(all["tokens"].as_array().unwrap().len(), 2, "{all}");

    // A login session: ended.
    let a = login(&cp, "alice", "alice's long password").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let session = a.body["token"].as_str().unwrap();
    assert_eq!(logout(&cp, session).await.0, StatusCode::OK);
    assert_eq!(whoami(&cp, session).await, StatusCode::UNAUTHORIZED);
    assert_eq!(whoami(&cp, api_token).await, StatusCode::OK);
}

#[tokio::test]
async fn changing_ones_own_password_needs_the_current_one() {
    let cp = server(|_| {}).await;
    create_user(&cp, "alice", Some("alice's first password")).await;
    let a = login(&cp, "alice", "alice's first password").await;
    let alice = a.body["token"].as_str().unwrap().to_string();
    let change = |body: Value| {
        let http = cp.anonymous_http();
        let url = cp.at("/canopy/v1/users/alice");
        let alice = alice.clone();
        async move {
            let r = http
                .patch(url)
                .bearer_auth(alice)
                .json(&body)
                .send()
                .await
                .unwrap();
            let s = r.status();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    // Without the current password (a stolen token alone): refused, nothing changed.
    let (s, b) = change(json!({"password": "taken over by a thief"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("currentPassword"),
        "{b}"
    );
    let (s, b) =
        change(json!({"password": "taken over by a thief", "currentPassword": "a guess at it"}))
            .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert!(!b.to_string().contains("a guess at it"), "{b}");
    assert_eq!(
        login(&cp, "alice", "alice's first password").await.status,
        StatusCode::OK
    );

    // With it: changed.
    let (s, b) = change(
        json!({"password": "alice's second password", "currentPassword": "alice's first password"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        login(&cp, "alice", "alice's second password").await.status,
        StatusCode::OK
    );
    assert_eq!(
        login(&cp, "alice", "alice's first password").await.status,
        StatusCode::UNAUTHORIZED
    );

    // An administrator resetting hers needs none.
    let (s, b) = cp
        .send(
            cp.http()
                .patch(cp.at("/canopy/v1/users/alice"))
                .json(&json!({"password": "set by the administrator"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        login(&cp, "alice", "set by the administrator").await.status,
        StatusCode::OK
    );

    // A user without a password yet (the bootstrap administrator) sets a first one with its
    // token; from then on it needs it too.
    let (s, b) = cp
        .send(
            cp.http()
                .patch(cp.at("/canopy/v1/users/admin"))
                .json(&json!({"password": "the admin's first password"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _) = cp
        .send(
            cp.http()
                .patch(cp.at("/canopy/v1/users/admin"))
                .json(&json!({"password": "the admin's next password"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn guessing_the_current_password_is_limited_like_logins() {
    let cp = server(|l| {
        l.per_user_per_minute = 3;
        l.user_burst = 3;
    })
    .await;
    create_user(&cp, "alice", Some("alice's first password")).await;
    let alice = login(&cp, "alice", "alice's first password").await.body["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut statuses = Vec::new();
    for i in 0..4 {
        let r = cp
            .anonymous_http()
            .patch(cp.at("/canopy/v1/users/alice"))
            .bearer_auth(&alice)
            .json(&json!({"password": "a new password here", "currentPassword": format!("guess {i}")}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    // One login and two guesses fill the bucket of 3; then 429.
    assert_eq!(statuses, [403, 403, 429, 429], "{statuses:?}");
}

#[tokio::test]
async fn logins_are_limited_per_user_name_and_per_source_address() {
    let cp = server(|l| {
        l.per_address_per_minute = 1;
        l.address_burst = 9;
        l.per_user_per_minute = 1;
        l.user_burst = 3;
    })
    .await;
    create_user(&cp, "alice", Some("alice's long password")).await;

    // Per user name: three attempts, then 429 with Retry-After, for a known and an unknown
    // name alike (the answer must not tell them apart).
    for name in ["alice", "nobody-here"] {
        for _ in 0..3 {
            let a = login(&cp, name, "a wrong password").await;
            assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{name}: {}", a.body);
        }
        let a = login(&cp, name, "a wrong password").await;
        assert_eq!(
            a.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{name}: {}",
            a.body
        );
        let secs = a.retry_after.expect("Retry-After");
        assert!((1..=60).contains(&secs), "{secs}");
        assert!(
            a.body["message"].as_str().unwrap().contains("retry in"),
            "{}",
            a.body
        );
    }
    // Even the right password waits: the name is limited, not the guess.
    let a = login(&cp, "alice", "alice's long password").await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);

    // Per address: the refused attempts counted too (9 = 3 + 1 + 3 + 1 + 1); the next one, for
    // any name, is refused.
    let a = login(&cp, "carol", "a wrong password").await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.body);
    // X-Forwarded-For from an untrusted peer changes nothing.
    let a = login_from(&cp, "dave", "a wrong password", Some("198.51.100.7")).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.body);

    // API tokens are not affected.
    assert_eq!(whoami(&cp, cp.admin_token()).await, StatusCode::OK);

    // The audit log records the refused attempts with who was tried.
    let (_, audit) = cp.get(&cp.at("/canopy/v1/audit?pageSize=100")).await;
    let limited = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["status"] == 429 && e["actor"] == "login:nobody-here")
        .count();
    assert!(limited >= 1, "{audit}");
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    let cp = server(|l| {
        l.per_address_per_minute = 1;
        l.address_burst = 2;
        l.per_user_per_minute = 0;
        l.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let mut got = Vec::new();
    for client in [
        "198.51.100.1",
        "198.51.100.1",
        "198.51.100.1",
        "198.51.100.2",
    ] {
        got.push(
            login_from(&cp, "nobody-here", "a wrong password", Some(client))
                .await
                .status
                .as_u16(),
        );
    }
    assert_eq!(got, [401, 401, 429, 401], "{got:?}");
    // A client cannot pick its own bucket by writing the header itself: the right-most hop
    // (what the trusted proxy saw) counts.
    let a = login_from(
        &cp,
        "nobody-here",
        "a wrong password",
        Some("203.0.113.50, 198.51.100.1"),
    )
    .await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn the_administrator_is_recovered_offline_and_it_is_audited() {
    let cp = server(|_| {}).await;
    let dir = cp.data_dir().to_path_buf();
    let old = cp.admin_token().to_string();
    // The worst case: another administrator deleted `admin`.
    let other = cp.user_token("root2", &["canopy-admin"]).await;
    let r = cp
        .anonymous_http()
        .delete(cp.at("/canopy/v1/users/admin"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(whoami(&cp, &old).await, StatusCode::UNAUTHORIZED);

    // Not while the server runs.
    let e = canopy_server::reset_admin_token(&dir, None)
        .await
        .unwrap_err();
    assert!(matches!(e, canopy_server::ServerError::InUse { .. }), "{e}");

    let stopped = cp.stop_keep_data().await;
    let done = canopy_server::reset_admin_token(&dir, None).await.unwrap();
    assert!(done.created_user);
    let new = std::fs::read_to_string(dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    assert_ne!(new, old);
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.join("admin.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let cp = stopped.start_again().await;
    assert_eq!(cp.admin_token(), new);
    let (s, me) = cp.get(&cp.at("/canopy/v1/whoami")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["actor"], "admin");
    assert_eq!(me["roles"], json!(["canopy-admin"]));

    // Run again (say the role was taken away meanwhile): the previous bootstrap token is
    // revoked, the role restored, other users untouched.
    let (s, _) = cp
        .send(
            cp.http()
                .patch(cp.at("/canopy/v1/users/admin"))
                .json(&json!({"roles": ["default_cat-r"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let stopped = cp.stop_keep_data().await;
    let done = canopy_server::reset_admin_token(&dir, None).await.unwrap();
    assert!(
        !done.created_user && done.restored_role && done.revoked == 1,
        "{done:?}"
    );
    let cp = stopped.start_again().await;
    assert_eq!(
        whoami(&cp, &new).await,
        StatusCode::UNAUTHORIZED,
        "the previous one is revoked"
    );
    let (_, me) = cp.get(&cp.at("/canopy/v1/whoami")).await;
    let roles = me["roles"].as_array().unwrap();
    assert!(
        roles.contains(&json!("canopy-admin")) && roles.contains(&json!("default_cat-r")),
        "{me}"
    );
    assert_eq!(whoami(&cp, &other).await, StatusCode::OK);
    let (_, audit) = cp
        .get(&cp.at("/canopy/v1/audit?actor=system:admin-reset-token"))
        .await;
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{audit}");
    assert_eq!(entries[0]["action"], "canopy admin reset-token");
    assert!(
        entries[0]["result"]
            .as_str()
            .unwrap()
            .contains("role restored"),
        "{audit}"
    );
    assert!(
        !audit.to_string().contains(&new),
        "no token in the audit log"
    );
}
