//! The console over plain HTTP (no browser), against a real control plane: sessions and their
//! cookie, CSRF and origin checks, security headers, authorization exactly as the API's, and
//! the session secret kept out of pages and URLs.

mod common;

use std::time::Duration;

use canopy_testkit::TestControlPlane;
use common::*;
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, LOCATION};

#[tokio::test]
async fn sign_in_sets_a_strict_expiring_session_cookie() {
    let cp = TestControlPlane::start().await;
    user(&cp, "ops", &["default_ao-rw"]).await;
    let s = sign_in(&cp, "ops").await;
    assert!(s.token.starts_with("cnp_s_"), "a login session token");
    let flags: Vec<&str> = s.set_cookie.split(';').map(str::trim).collect();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(flags.contains(&flag), "{} lacks {flag}", s.set_cookie);
    }
    let max_age: u64 = flags
        .iter()
        .find_map(|f| f.strip_prefix("Max-Age="))
        .expect("the cookie expires")
        .parse()
        .unwrap();
    // The session lifetime of the app layer (one hour by default).
    assert!((3500..=3600).contains(&max_age), "Max-Age={max_age}");

    let (status, _, page) = s.get(&cp, "/ui/projects/default/deployments").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains(">ops<"), "the page names the user: {page}");
    // `/` goes to the deployments of the user's project.
    let (status, h, _) = s.get(&cp, "/").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(h[LOCATION], "/ui/projects/default/deployments");
}

#[tokio::test]
async fn wrong_password_shows_the_servers_error_and_sets_no_session() {
    let cp = TestControlPlane::start().await;
    user(&cp, "ops", &["default_ao-rw"]).await;
    let (status, h, page) = try_sign_in(&cp, "ops", "not the password at all").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(page.contains("wrong user name or password"), "{page}");
    assert!(set_cookie(&h, "canopy_session").is_none());
    // The user name typed is kept, escaped.
    let (_, _, page) = try_sign_in(&cp, "<b>x</b>", "not the password at all").await;
    assert!(
        !page.contains("<b>x</b>") && page.contains("&lt;b&gt;x&lt;/b&gt;"),
        "{page}"
    );
}

#[tokio::test]
async fn sign_in_form_without_its_csrf_cookie_is_refused() {
    let cp = TestControlPlane::start().await;
    user(&cp, "ops", &["default_ao-rw"]).await;
    let r = client()
        .post(cp.at("/ui/login"))
        .form(&[
            ("username", "ops"),
            ("password", PASSWORD),
            ("csrf", "guess"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(r.headers(), "canopy_session").is_none());
    // From another site, even with a matching pair.
    let r = client()
        .post(cp.at("/ui/login"))
        .header("cookie", "canopy_login_csrf=abc")
        .header("origin", "https://evil.example")
        .form(&[("username", "ops"), ("password", PASSWORD), ("csrf", "abc")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(r.headers(), "canopy_session").is_none());
}

#[tokio::test]
async fn pages_carry_a_strict_csp_and_refuse_framing() {
    let cp = TestControlPlane::start().await;
    user(&cp, "ops", &["default_ao-rw"]).await;
    let s = sign_in(&cp, "ops").await;
    let anonymous = client().get(cp.at("/ui/login")).send().await.unwrap();
    let (_, signed, page) = s.get(&cp, "/ui/projects/default/deployments").await;
    for h in [anonymous.headers(), &signed] {
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h[CACHE_CONTROL], "no-store");
    }
    // No inline script: the one script of this page (web-live's live updates) is a file of
    // this server, and it is empty inline.
    for (i, _) in page.match_indices("<script") {
        let tag = &page[i..i + page[i..].find("</script>").expect("a closed script tag")];
        assert!(
            tag.starts_with("<script src=\"/ui/static/") && tag.ends_with('>'),
            "no inline script: {tag}"
        );
    }
    assert!(
        !page.contains("style=\""),
        "no inline style (the CSP would block it)"
    );

    // The style sheet: content-hashed name, cached for a year; any other name is 404.
    let css = canopy_web::stylesheet_path();
    assert!(page.contains(css), "the page links {css}");
    let r = client().get(cp.at(css)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()[CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("max-age=31536000")
    );
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    let r = client()
        .get(cp.at("/ui/static/canopy.000000000000.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn pages_without_a_session_go_to_sign_in_and_the_api_ignores_the_cookie() {
    let cp = TestControlPlane::start().await;
    for path in [
        "/",
        "/ui/projects/default/deployments",
        "/ui/projects/default/edges",
    ] {
        let r = client().get(cp.at(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(r.headers()[LOCATION], "/ui/login", "{path}");
    }
    user(&cp, "ops", &["default_ao-rw"]).await;
    let s = sign_in(&cp, "ops").await;
    // A cookie is sent by browsers on their own: the API never takes it as a credential.
    let r = client()
        .get(cp.at("/v1/projects/default/appdeployment/deployments"))
        .header("cookie", s.cookie())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn forged_expired_and_signed_out_sessions_go_back_to_sign_in() {
    let cp = TestControlPlane::start_configured(|c| {
        c.auth.session_ttl = Some(Duration::from_secs(2));
    })
    .await;
    user(&cp, "ops", &["default_ao-rw"]).await;
    let path = "/ui/projects/default/deployments";
    let back_to_sign_in = |(status, h, body): (StatusCode, reqwest::header::HeaderMap, String)| {
        assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
        assert_eq!(h[LOCATION], "/ui/login");
        let (value, _) = set_cookie(&h, "canopy_session").expect("the dead cookie is cleared");
        assert_eq!(value, "");
    };

    // Forged: a well-formed session token the server never issued.
    let forged = Signed {
        token: format!("cnp_s_{}", "A".repeat(43)),
        set_cookie: String::new(),
    };
    back_to_sign_in(forged.get(&cp, path).await);
    // An API token is not a session, even a valid one.
    let api = Signed {
        token: cp.user_token("robot", &["default_ao-rw"]).await,
        set_cookie: String::new(),
    };
    back_to_sign_in(api.get(&cp, path).await);

    // Expired: works at first, then (the lifetime being 2 s) sends the user to sign in.
    let s = sign_in(&cp, "ops").await;
    assert!(
        s.set_cookie.contains("Max-Age=1") || s.set_cookie.contains("Max-Age=2"),
        "{}",
        s.set_cookie
    );
    let (status, _, _) = s.get(&cp, path).await;
    assert_eq!(status, StatusCode::OK);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = s.get(&cp, path).await;
        if got.0 != StatusCode::OK {
            back_to_sign_in(got);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Signed out: the token is revoked, not just forgotten by the browser.
    let cp = TestControlPlane::start().await;
    user(&cp, "ops", &["default_ao-rw"]).await;
    let s = sign_in(&cp, "ops").await;
    let csrf = s.csrf(&cp).await;
    let (status, h, _) = s.post(&cp, "/ui/logout", &[("csrf", &csrf)], &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(h[LOCATION], "/ui/login");
    back_to_sign_in(s.get(&cp, path).await);
}

#[tokio::test]
async fn posts_need_the_sessions_csrf_token_and_this_origin() {
    let cp = TestControlPlane::start().await;
    upload_example(&cp).await;
    let id = deployment(&cp, "shop", "paris").await;
    user(&cp, "ops", &["default_ao-rw"]).await;
    user(&cp, "other", &["default_ao-rw"]).await;
    let s = sign_in(&cp, "ops").await;
    let csrf = s.csrf(&cp).await;
    let other_csrf = sign_in(&cp, "other").await.csrf(&cp).await;
    assert_ne!(csrf, other_csrf);
    let delete = format!("/ui/projects/default/deployments/{id}/delete");

    // No token, another session's token, a foreign Origin, a cross-site fetch: 403, kept.
    let (status, _, page) = s.post(&cp, &delete, &[], &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    assert!(page.contains("reload the page"), "{page}");
    let (status, _, _) = s.post(&cp, &delete, &[("csrf", &other_csrf)], &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, page) = s
        .post(
            &cp,
            &delete,
            &[("csrf", &csrf)],
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(page.contains("another site"), "{page}");
    let (status, _, _) = s
        .post(
            &cp,
            &delete,
            &[("csrf", &csrf)],
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        deployment_exists(&cp, &id).await,
        "nothing refused was done"
    );

    // The same form from this origin with this session's token deletes.
    let origin = cp.url.clone();
    let (status, h, page) = s
        .post(
            &cp,
            &delete,
            &[("csrf", &csrf)],
            &[("origin", &origin), ("sec-fetch-site", "same-origin")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{page}");
    assert!(
        h[LOCATION]
            .to_str()
            .unwrap()
            .starts_with("/ui/projects/default/deployments?deleted=shop")
    );
    assert!(!deployment_exists(&cp, &id).await);

    // The audit log names the user and the project of the console's change.
    let (_, log) = cp.get(&cp.at("/canopy/v1/audit?pageSize=100")).await;
    let entries = log["entries"].as_array().expect("entries");
    let done = entries
        .iter()
        .find(|e| e["target"] == delete.as_str() && e["result"] == "ok")
        .unwrap_or_else(|| panic!("the delete is in the audit log: {log}"));
    assert_eq!(done["actor"], "ops");
    assert_eq!(done["project"], "default");
}

#[tokio::test]
async fn read_only_users_get_no_write_controls_and_their_forged_delete_is_refused() {
    let cp = TestControlPlane::start().await;
    upload_example(&cp).await;
    let id = deployment(&cp, "shop", "paris").await;
    user(&cp, "support", &["default_ao-r"]).await;
    user(&cp, "ops", &["default_ao-rw"]).await;
    let page_path = format!("/ui/projects/default/deployments/{id}");
    let delete = format!("{page_path}/delete");

    let ops = sign_in(&cp, "ops").await;
    let (_, _, page) = ops.get(&cp, &page_path).await;
    assert!(page.contains(&delete), "a writer sees the delete control");

    let ro = sign_in(&cp, "support").await;
    let (status, _, page) = ro.get(&cp, &page_path).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("shop"));
    assert!(
        !page.contains(&delete),
        "no delete control for a read-only user: {page}"
    );
    let (status, _, page) = ro.get(&cp, &delete).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        page.contains("deployment write access"),
        "the server's message: {page}"
    );

    // A forged POST with the user's own valid CSRF token: the app layer refuses it.
    let csrf = ro.csrf(&cp).await;
    let (status, _, page) = ro.post(&cp, &delete, &[("csrf", &csrf)], &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    assert!(page.contains("deployment write access"), "{page}");
    assert!(
        deployment_exists(&cp, &id).await,
        "the deployment is still there"
    );
}

#[tokio::test]
async fn projects_without_a_role_are_not_shown() {
    let cp = TestControlPlane::start().await;
    cp.create_project("shop").await;
    cp.create_project("lab").await;
    user(&cp, "shopper", &["shop_ao-r"]).await;
    user(&cp, "both", &["shop_ao-r", "lab_ao-r"]).await;

    let s = sign_in(&cp, "shopper").await;
    let (status, h, _) = s.get(&cp, "/").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(h[LOCATION], "/ui/projects/shop/deployments");
    let (status, _, page) = s.get(&cp, "/ui/projects/default/deployments").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "as the API: {page}");
    let (_, _, page) = s.get(&cp, "/ui/projects/shop/deployments").await;
    assert!(!page.contains("project-switch"), "one project: no switcher");
    assert!(
        !page.contains("/ui/projects/lab") && !page.contains(">lab<"),
        "{page}"
    );

    let s = sign_in(&cp, "both").await;
    let (_, _, page) = s.get(&cp, "/ui/projects/shop/edges").await;
    assert!(
        page.contains("project-switch"),
        "several projects: a switcher"
    );
    assert!(page.contains("<option value=\"lab\">"), "{page}");
    assert!(!page.contains("<option value=\"default\""), "{page}");
    let (status, h, _) = s.get(&cp, "/ui/switch?project=lab").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(h[LOCATION], "/ui/projects/lab/deployments");
}

#[tokio::test]
async fn deployment_and_edge_pages_show_the_fleet() {
    let cp = TestControlPlane::start().await;
    upload_example(&cp).await;
    let id = deployment(&cp, "shop-front", "paris").await;
    let other = deployment(&cp, "warehouse", "lyon").await;
    let _edge = running_edge(&cp, "paris-1", "paris").await;
    user(&cp, "support", &["default_ao-r"]).await;
    let s = sign_in(&cp, "support").await;

    let (_, _, page) = s.get(&cp, "/ui/projects/default/deployments").await;
    assert!(
        page.contains("shop-front") && page.contains("warehouse"),
        "{page}"
    );
    let (_, _, page) = s
        .get(&cp, "/ui/projects/default/deployments?name=wareh")
        .await;
    assert!(
        page.contains("warehouse") && !page.contains("shop-"),
        "filtered: {page}"
    );
    assert!(page.contains(&other));
    // What the user typed comes back as data.
    let (_, _, page) = s
        .get(&cp, "/ui/projects/default/deployments?name=%3Cb%3Ex")
        .await;
    assert!(
        page.contains("value=\"&lt;b&gt;x\"") && !page.contains("<b>x"),
        "escaped: {page}"
    );

    let (_, _, page) = s
        .get(&cp, &format!("/ui/projects/default/deployments/{id}"))
        .await;
    assert!(page.contains("paris-1"), "{page}");
    assert!(page.contains("state-RUNNING"), "{page}");
    assert!(
        page.contains(" s ago"),
        "the age of the edge's last report: {page}"
    );

    let (_, _, page) = s.get(&cp, "/ui/projects/default/edges").await;
    assert!(
        page.contains("paris-1") && page.contains("site=paris"),
        "{page}"
    );
    assert!(
        page.contains("state-CONNECTED") || page.contains("state-DISCONNECTED"),
        "{page}"
    );
    let (_, _, page) = s
        .get(&cp, &format!("/ui/projects/default/edges/{}", _edge.id))
        .await;
    assert!(
        page.contains(&format!(
            "/ui/projects/default/deployments/{id}\">shop-front<"
        )),
        "the edge's workloads name and link the deployment: {page}"
    );
    assert!(page.contains("web"), "{page}");
}

#[tokio::test]
async fn page_sources_and_urls_never_hold_the_session_secret() {
    let cp = TestControlPlane::start().await;
    upload_example(&cp).await;
    let id = deployment(&cp, "shop", "paris").await;
    let edge = running_edge(&cp, "paris-1", "paris").await;
    user(&cp, "ops", &["default_ao-rw"]).await;
    let s = sign_in(&cp, "ops").await;
    let secret_part = &s.token["cnp_s_".len()..];
    for path in [
        "/".to_string(),
        "/ui/login".to_string(),
        "/ui/projects/default/deployments".to_string(),
        format!("/ui/projects/default/deployments/{id}"),
        format!("/ui/projects/default/deployments/{id}/delete"),
        "/ui/projects/default/edges".to_string(),
        format!("/ui/projects/default/edges/{}", edge.id),
    ] {
        let (status, h, page) = s.get(&cp, &path).await;
        assert!(
            status.is_success() || status.is_redirection(),
            "{path}: {status}"
        );
        assert!(
            !page.contains(secret_part),
            "{path} holds the session secret"
        );
        if let Some(to) = h.get(LOCATION) {
            assert!(
                !to.to_str().unwrap().contains(secret_part),
                "{path} redirects with it"
            );
        }
    }
}

#[tokio::test]
async fn sign_in_is_the_apis_login_with_its_limits() {
    let cp = TestControlPlane::start().await;
    user(&cp, "ops", &["default_ao-rw"]).await;
    // The app layer allows 10 attempts per user name at once (LoginLimits::default); the
    // console's form is that same login, so the next wrong one is refused with its message.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let (status, page) = loop {
        let (status, _, page) = try_sign_in(&cp, "ops", "not the password at all").await;
        if status != StatusCode::UNAUTHORIZED {
            break (status, page);
        }
        assert!(tokio::time::Instant::now() < deadline, "never limited");
    };
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{page}");
    assert!(page.contains("too many"), "the server's message: {page}");
    // The API's login is limited by the same counter.
    let r = client()
        .post(cp.at("/canopy/v1/login"))
        .json(&serde_json::json!({"username": "ops", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn deployments_list_pages_filters_and_counts_as_the_api() {
    let cp = TestControlPlane::start().await;
    upload_example(&cp).await;
    for i in 0..52 {
        deployment(&cp, &format!("d-{i:02}"), "paris").await;
    }
    let _edge = running_edge(&cp, "paris-1", "paris").await;
    user(&cp, "support", &["default_ao-r"]).await;
    let s = sign_in(&cp, "support").await;
    let rows = |page: &str| page.matches("<tr><td><a href=").count();

    let (_, _, page) = s.get(&cp, "/ui/projects/default/deployments").await;
    assert_eq!(rows(&page), 50, "pages of 50");
    assert!(
        page.contains("?page=1\" rel=\"next\""),
        "a next page: {page}"
    );
    assert!(!page.contains("rel=\"prev\""));
    assert!(page.contains("52 deployments in project default"), "{page}");
    // The summary counts are the API's deployments_status.
    let (_, summary) = cp
        .get(&cp.at("/v1/projects/default/appdeployment/summary/deployments_status"))
        .await;
    assert_eq!(summary["total"], 52, "{summary}");
    assert_eq!(summary["running"], 52, "{summary}");
    for (label, key) in [("Total", "total"), ("Running", "running"), ("Down", "down")] {
        let shown = format!("<span class=\"n\">{}</span>{label}<", summary[key]);
        assert!(page.contains(&shown), "{shown} in {page}");
    }

    let (_, _, page) = s.get(&cp, "/ui/projects/default/deployments?page=1").await;
    assert_eq!(rows(&page), 2);
    assert!(page.contains("?page=0\" rel=\"prev\""), "{page}");
    assert!(!page.contains("rel=\"next\""));

    let (_, _, page) = s
        .get(&cp, "/ui/projects/default/deployments?name=d-0")
        .await;
    assert_eq!(rows(&page), 10, "d-00 to d-09");
    assert!(page.contains(", 10 match"), "{page}");
    assert!(!page.contains("rel=\"next\""), "{page}");
}

#[tokio::test]
async fn console_pages_count_against_the_sessions_rate_limit() {
    let cp = TestControlPlane::start_configured(|c| {
        c.limits.requests_per_second = 1;
        c.limits.burst = 3;
    })
    .await;
    user(&cp, "ops", &["default_ao-rw"]).await;
    let s = sign_in(&cp, "ops").await;
    // A signed-in user's pages are counted under the session like its API calls: a burst of
    // 3, then 429 until the bucket refills.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(s.get(&cp, "/ui/projects/default/edges").await.0);
    }
    assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "the console is rate-limited per session: {statuses:?}"
    );
}

#[tokio::test]
async fn catalog_pages_show_packages_applications_and_registries() {
    let cp = TestControlPlane::start().await;
    upload_example(&cp).await;
    user(&cp, "support", &["default_ao-r", "default_cat-r"]).await;
    let (s, b) = cp
        .post(
            &cp.at(&format!("/v3/projects/{P}/catalog/registries")),
            &serde_json::json!({
                "name": "private-images", "displayName": "Private images", "type": "IMAGE",
                "rootUrl": "https://images.example.com",
                "username": "robot-user-name", "authToken": "registry-token-s3cr3t",
                "cacerts": "-----BEGIN CERTIFICATE-----registry-ca"
            }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let id = deployment(&cp, "shop web", "shop").await;
    let s = sign_in(&cp, "support").await;

    // Packages: the list links to the version, which names its apps, profiles, namespaces.
    let (status, _, page) = s.get(&cp, "/ui/projects/default/packages").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Web demo"), "{page}");
    assert!(
        page.contains("href=\"/ui/projects/default/packages/web-demo/1.0.0\""),
        "{page}"
    );
    let (status, _, page) = s
        .get(&cp, "/ui/projects/default/packages/web-demo/1.0.0")
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    for want in [
        "href=\"/ui/projects/default/applications/web/1.0.0\"",
        "href=\"/ui/projects/default/applications/status/1.0.0\"",
        "web-demo",        // the default namespace of both apps
        "status: default", // the default deployment profile's mapping
        "KIND_NORMAL",
    ] {
        assert!(page.contains(want), "package page lacks {want}: {page}");
    }
    // The deployment page links to its package.
    let (_, _, page) = s
        .get(&cp, &format!("/ui/projects/default/deployments/{id}"))
        .await;
    assert!(
        page.contains("href=\"/ui/projects/default/packages/web-demo/1.0.0\""),
        "{page}"
    );

    // Applications: profiles and their parameter templates.
    let (status, _, page) = s.get(&cp, "/ui/projects/default/applications").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains(">web<") && page.contains(">status<"),
        "{page}"
    );
    let (status, _, page) = s
        .get(&cp, "/ui/projects/default/applications/web/1.0.0")
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    for want in [
        "Host port",
        "18080",
        "greeting",
        "number",
        "native template",
    ] {
        assert!(page.contains(want), "application page lacks {want}: {page}");
    }
    // Unknown versions are the API's 404, with its message.
    let (status, _, page) = s
        .get(&cp, "/ui/projects/default/applications/web/9.9.9")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.contains("application web:9.9.9 not found"), "{page}");

    // Registries: never their credentials, on the list or the page.
    let (status, _, list) = s.get(&cp, "/ui/projects/default/registries").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let (status, _, one) = s
        .get(&cp, "/ui/projects/default/registries/private-images")
        .await;
    assert_eq!(status, StatusCode::OK, "{one}");
    for page in [&list, &one] {
        assert!(page.contains("https://images.example.com"), "{page}");
        for secret in ["robot-user-name", "registry-token-s3cr3t", "registry-ca"] {
            assert!(!page.contains(secret), "{secret} shown: {page}");
        }
    }
}

#[tokio::test]
async fn catalog_lists_filter_and_page_as_the_api() {
    let cp = TestControlPlane::start().await;
    user(&cp, "support", &["default_ao-r", "default_cat-r"]).await;
    // One more than a page.
    for i in 0..51 {
        let (s, b) = cp
            .post(
                &cp.at(&format!("/v3/projects/{P}/catalog/registries")),
                &serde_json::json!({
                    "name": format!("reg-{i:02}"), "type": "HELM",
                    "rootUrl": format!("https://charts{i}.example.com")
                }),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let s = sign_in(&cp, "support").await;
    let rows = |page: &str| {
        page.matches("href=\"/ui/projects/default/registries/reg-")
            .count()
    };
    let (_, _, first) = s.get(&cp, "/ui/projects/default/registries").await;
    assert_eq!(rows(&first), 50, "{first}");
    assert!(first.contains("51 registries."), "{first}");
    assert!(first.contains("rel=\"next\""), "{first}");
    let (_, _, second) = s.get(&cp, "/ui/projects/default/registries?page=1").await;
    assert_eq!(rows(&second), 1, "{second}");
    assert!(!second.contains("rel=\"next\"") && second.contains("rel=\"prev\""));
    let (_, _, filtered) = s
        .get(&cp, "/ui/projects/default/registries?name=reg-4")
        .await;
    // reg-40 .. reg-49
    assert_eq!(rows(&filtered), 10, "{filtered}");
    assert!(filtered.contains("10 registries match."), "{filtered}");
    let (_, _, none) = s
        .get(&cp, "/ui/projects/default/packages?name=nothing")
        .await;
    assert!(none.contains("No packages match this filter."), "{none}");
}

/// Whether package web-demo 1.0.0 exists, asked through the REST API.
async fn web_demo_exists(cp: &TestControlPlane) -> bool {
    let (s, b) = cp
        .get(&cp.at(&format!(
            "/v3/projects/{P}/catalog/deployment_packages/web-demo/versions/1.0.0"
        )))
        .await;
    match s {
        StatusCode::OK => true,
        StatusCode::NOT_FOUND => false,
        other => panic!("GET package: {other} {b}"),
    }
}

#[tokio::test]
async fn upload_form_applies_files_through_the_apps_upload() {
    let cp = TestControlPlane::start().await;
    user(&cp, "dev", &["default_cat-rw"]).await;
    let s = sign_in(&cp, "dev").await;
    let (status, _, list) = s.get(&cp, "/ui/projects/default/packages").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert!(list.contains("id=\"upload-link\""), "{list}");
    let (status, _, form) = s.get(&cp, "/ui/projects/default/packages/upload").await;
    assert_eq!(status, StatusCode::OK, "{form}");
    assert!(form.contains("enctype=\"multipart/form-data\""), "{form}");
    let csrf = hidden(&form, "csrf").expect("the form carries the CSRF token");
    // The CSRF part comes before the file input.
    assert!(form.find("name=\"csrf\"") < form.find("name=\"files\""));
    // Drag and drop is a script from this server, not inline, under its content-hashed name.
    let js = canopy_web::upload_script_path();
    assert_eq!(
        form.matches("<script").count(),
        1,
        "one script element: {form}"
    );
    assert!(
        form.contains(&format!("<script src=\"{js}\" defer></script>")),
        "{form}"
    );
    let r = client().get(cp.at(js)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(
        r.headers()[CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert!(r.text().await.unwrap().contains("dataTransfer"));

    // A bad file: the server's error in place, naming the file and the field; nothing stored.
    let mut files = canopy_testkit::read_dir_files(&canopy_testkit::example("web-demo"));
    let good = files.clone();
    let web = files
        .iter_mut()
        .find(|(n, _)| n == "web.yaml")
        .expect("web.yaml");
    web.1 = String::from_utf8(web.1.clone())
        .unwrap()
        .replace("version: 1.0.0", "version: [1, 2]")
        .into_bytes();
    let (status, _, page) = s.upload(&cp, Some(&csrf), files).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    let error = page
        .split("id=\"upload-error\"")
        .nth(1)
        .expect("the error is shown in place");
    let error = &error[..error.find("</p>").unwrap()];
    assert!(
        error.contains("web.yaml") && error.contains("version"),
        "{error}"
    );
    assert!(
        page.contains("id=\"upload-form\""),
        "the form is shown again"
    );
    assert!(!web_demo_exists(&cp).await);

    // The package's files: what was created, linked. (Past the 16 KiB of the console's other
    // forms: the upload takes the API's upload limit.)
    let mut good = good;
    let values = good
        .iter_mut()
        .find(|(n, _)| n == "web-values.yaml")
        .expect("web-values.yaml");
    values
        .1
        .extend(format!("# {}\n", "x".repeat(200 * 1024)).into_bytes());
    let (status, _, page) = s.upload(&cp, Some(&csrf), good).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("id=\"upload-done\""), "{page}");
    assert!(
        page.contains("href=\"/ui/projects/default/packages/web-demo/1.0.0\""),
        "{page}"
    );
    assert!(page.contains("created"), "{page}");
    assert!(web_demo_exists(&cp).await);
}

#[tokio::test]
async fn forged_uploads_are_refused_and_store_nothing() {
    let cp = TestControlPlane::start().await;
    user(&cp, "support", &["default_ao-r", "default_cat-r"]).await;
    user(&cp, "dev", &["default_cat-rw"]).await;
    let files = canopy_testkit::read_dir_files(&canopy_testkit::example("web-demo"));

    // A read-only user sees no upload control, and the form page says why.
    let ro = sign_in(&cp, "support").await;
    let (_, _, list) = ro.get(&cp, "/ui/projects/default/packages").await;
    assert!(!list.contains("upload-link"), "{list}");
    let (status, _, _) = ro.get(&cp, "/ui/projects/default/packages/upload").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Their forged post with a valid CSRF token is refused by the app layer.
    let csrf = ro.csrf(&cp).await;
    let (status, _, page) = ro.upload(&cp, Some(&csrf), files.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    assert!(page.contains("catalog write access"), "{page}");
    assert!(!web_demo_exists(&cp).await);

    // A writer's post without the token, with another session's, or from another site.
    let dev = sign_in(&cp, "dev").await;
    let (status, _, _) = dev.upload(&cp, None, files.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = dev.upload(&cp, Some(&csrf), files.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, _, form_page) = dev.get(&cp, "/ui/projects/default/packages/upload").await;
    let own = hidden(&form_page, "csrf").unwrap();
    let mut form = reqwest::multipart::Form::new().text("csrf", own.clone());
    for (name, content) in files {
        form = form.part(
            "files",
            reqwest::multipart::Part::bytes(content).file_name(name),
        );
    }
    let r = client()
        .post(cp.at("/ui/projects/default/packages/upload"))
        .header("cookie", dev.cookie())
        .header("origin", "https://evil.example")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(!web_demo_exists(&cp).await);
    // No files at all: the API's message, in place.
    let (status, _, page) = dev
        .upload(&cp, Some(&own), vec![("".into(), b"x".to_vec())])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert!(
        page.contains("every uploaded file needs a file name"),
        "{page}"
    );
}

const SECRET_PIN: &str = "n0t-a-number-s3cr3t";

/// The deployments of project `P`, as the API lists them.
async fn deployment_count(cp: &TestControlPlane) -> u64 {
    let (s, b) = cp
        .get(&cp.at(&format!("/v1/projects/{P}/appdeployment/deployments")))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["totalElements"].as_u64().unwrap()
}

#[tokio::test]
async fn deploy_wizard_creates_a_deployment_and_never_shows_a_secret() {
    let cp = TestControlPlane::start().await;
    let (s, b) = cp.upload(P, web_demo_with_secrets()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let _shop = running_edge(&cp, "shop-1", "shop").await;
    let _lab = running_edge(&cp, "lab-1", "lab").await;
    user(&cp, "ops", &["default_ao-rw", "default_cat-r"]).await;
    let s = sign_in(&cp, "ops").await;
    let path = "/ui/projects/default/packages/web-demo/1.0.0/deploy";
    let mut seen = Vec::new();

    let (_, _, pkg) = s
        .get(&cp, "/ui/projects/default/packages/web-demo/1.0.0")
        .await;
    assert!(pkg.contains(&format!("href=\"{path}\"")), "{pkg}");
    let (status, _, form) = s.get(&cp, path).await;
    assert_eq!(status, StatusCode::OK, "{form}");
    let csrf = hidden(&form, "csrf").unwrap();
    // The form from the templates: defaults filled in; secrets asked for on the review only.
    assert!(
        form.contains("name=\"param:web:port\" value=\"18080\""),
        "{form}"
    );
    assert!(form.contains("name=\"param:web:greeting\""), "{form}");
    assert!(
        form.contains("name=\"param:status:port\" value=\"18081\""),
        "{form}"
    );
    assert!(!form.contains("name=\"param:web:token\""), "{form}");
    assert!(form.contains("lab-1") && form.contains("shop-1"), "{form}");

    let base = [
        ("csrf", csrf.as_str()),
        ("profile", "default"),
        ("display_name", "shop web"),
        ("target", "labels"),
        ("labels", "site=shop"),
        ("param:web:port", "18080"),
        ("param:web:greeting", "hi"),
        ("param:status:port", "18081"),
    ];
    // Review: the edges the labels match now, counted and named; the secret inputs.
    let review: Vec<(&str, &str)> = base.iter().copied().chain([("action", "review")]).collect();
    let (status, _, page) = s.post(&cp, path, &review, &[]).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("<strong id=\"match-count\">1</strong>: shop-1"),
        "{page}"
    );
    assert!(!page.contains("lab-1"), "{page}");
    assert!(
        page.contains("id=\"param:web:token\" type=\"password\" name=\"param:web:token\""),
        "{page}"
    );

    // A wrong type, with secrets: the error against the field, no secret anywhere.
    let mut bad: Vec<(&str, &str)> = base
        .iter()
        .copied()
        .filter(|(k, _)| *k != "param:web:port")
        .collect();
    bad.extend([
        ("param:web:port", "eighty"),
        ("param:web:token", SECRET),
        ("param:web:pin", "7"),
        ("action", "create"),
    ]);
    let (status, h, page) = s.post(&cp, path, &bad, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert!(page.contains("id=\"deploy-error\""), "{page}");
    assert!(page.contains("values.port"), "{page}");
    assert!(page.contains("class=\"error field-error\""), "{page}");
    seen.push(format!("{h:?}{page}"));
    // A secret of the wrong type: named, its value not shown.
    let mut bad_pin: Vec<(&str, &str)> = base.to_vec();
    bad_pin.extend([
        ("param:web:token", SECRET),
        ("param:web:pin", SECRET_PIN),
        ("action", "create"),
    ]);
    let (status, h, page) = s.post(&cp, path, &bad_pin, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert!(page.contains("values.pin"), "{page}");
    seen.push(format!("{h:?}{page}"));
    // The mandatory secret missing.
    let missing: Vec<(&str, &str)> = base.iter().copied().chain([("action", "create")]).collect();
    let (status, h, page) = s.post(&cp, path, &missing, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert!(
        page.contains("mandatory") && page.contains("values.token"),
        "{page}"
    );
    seen.push(format!("{h:?}{page}"));
    assert_eq!(deployment_count(&cp).await, 0, "nothing was created");

    // Create: to the new deployment's page.
    let mut good: Vec<(&str, &str)> = base.to_vec();
    good.extend([("param:web:token", SECRET), ("action", "create")]);
    let (status, h, page) = s.post(&cp, path, &good, &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{page}");
    let location = h[LOCATION].to_str().unwrap().to_string();
    assert!(
        location.starts_with("/ui/projects/default/deployments/"),
        "{location}"
    );
    seen.push(format!("{h:?}{page}"));
    let (status, _, page) = s.get(&cp, &location).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("shop web"), "{page}");
    seen.push(page);
    let (_, _, list) = s.get(&cp, "/ui/projects/default/deployments").await;
    assert!(list.contains("shop web"), "{list}");
    seen.push(list);
    assert_eq!(deployment_count(&cp).await, 1);
    // The API has the values with the secret masked.
    let id = location.rsplit('/').next().unwrap();
    let (_, d) = cp
        .get(&cp.at(&format!("/v1/projects/{P}/appdeployment/deployments/{id}")))
        .await;
    let d = d["deployment"].to_string();
    assert!(
        d.contains("\"greeting\":\"hi\"") && !d.contains(SECRET),
        "{d}"
    );

    // Labels are required when targeting by labels: said in place.
    let no_labels: Vec<(&str, &str)> = base
        .iter()
        .copied()
        .filter(|(k, _)| *k != "labels")
        .chain([("action", "review")])
        .collect();
    let (status, _, page) = s.post(&cp, path, &no_labels, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert!(
        page.contains("labels: give at least one key=value pair"),
        "{page}"
    );

    // Chosen edges instead of labels: a targeted deployment on exactly those.
    let lab_id = form
        .split("class=\"edge\"")
        .skip(1)
        .find(|l| l.contains("lab-1</label>"))
        .and_then(|l| hidden(l, "edge"))
        .expect("lab-1's check box");
    let mut chosen: Vec<(&str, &str)> = base
        .iter()
        .copied()
        .filter(|(k, _)| !["target", "labels", "display_name"].contains(k))
        .collect();
    chosen.extend([
        ("display_name", "lab web"),
        ("target", "edges"),
        ("edge", &lab_id),
        ("param:web:token", SECRET),
    ]);
    let review: Vec<(&str, &str)> = chosen
        .iter()
        .copied()
        .chain([("action", "review")])
        .collect();
    let (_, _, page) = s.post(&cp, path, &review, &[]).await;
    assert!(
        page.contains("<strong id=\"match-count\">1</strong>: lab-1"),
        "{page}"
    );
    seen.push(page);
    let create: Vec<(&str, &str)> = chosen
        .iter()
        .copied()
        .chain([("action", "create")])
        .collect();
    let (status, h, page) = s.post(&cp, path, &create, &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{page}");
    seen.push(format!("{h:?}{page}"));
    let id = h[LOCATION]
        .to_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let (_, d) = cp
        .get(&cp.at(&format!("/v1/projects/{P}/appdeployment/deployments/{id}")))
        .await;
    assert_eq!(d["deployment"]["deploymentType"], "targeted", "{d}");
    let targets = d["deployment"]["targetClusters"].as_array().unwrap();
    assert_eq!(targets.len(), 2, "one per application: {d}");
    assert!(
        targets.iter().all(|t| t["clusterId"] == lab_id.as_str()),
        "{d}"
    );

    for text in &seen {
        assert!(!text.contains(SECRET), "the secret is shown: {text}");
        assert!(!text.contains(SECRET_PIN), "the secret is shown: {text}");
    }
}

#[tokio::test]
async fn read_only_users_cannot_deploy_even_with_a_forged_post() {
    let cp = TestControlPlane::start().await;
    upload_example(&cp).await;
    let _shop = running_edge(&cp, "shop-1", "shop").await;
    user(&cp, "support", &["default_ao-r", "default_cat-r"]).await;
    let s = sign_in(&cp, "support").await;
    let path = "/ui/projects/default/packages/web-demo/1.0.0/deploy";
    let (_, _, pkg) = s
        .get(&cp, "/ui/projects/default/packages/web-demo/1.0.0")
        .await;
    assert!(!pkg.contains("deploy-link"), "{pkg}");
    let (status, _, _) = s.get(&cp, path).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let csrf = s.csrf(&cp).await;
    for action in ["review", "create"] {
        let (status, _, page) = s
            .post(
                &cp,
                path,
                &[
                    ("csrf", &csrf),
                    ("target", "labels"),
                    ("labels", "site=shop"),
                    ("action", action),
                ],
                &[],
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{action}: {page}");
        assert!(page.contains("deployment write access"), "{page}");
    }
    assert_eq!(deployment_count(&cp).await, 0);
    // A writer's post without this session's token creates nothing either.
    user(&cp, "ops", &["default_ao-rw", "default_cat-r"]).await;
    let ops = sign_in(&cp, "ops").await;
    let (status, _, _) = ops
        .post(
            &cp,
            path,
            &[
                ("csrf", &csrf),
                ("target", "labels"),
                ("labels", "site=shop"),
                ("action", "create"),
            ],
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(deployment_count(&cp).await, 0);
}

/// Browsers speak HTTP/2 to `canopy up` (TLS), where the host arrives as `:authority` and there
/// is no `Host` header: a same-site sign-in still passes the origin check, and another site's
/// still does not. (Over HTTP/1.1 only, the first `canopy up` refused every browser sign-in.)
#[tokio::test]
async fn sign_in_over_http2_passes_the_origin_check_and_another_site_does_not() {
    let cp = TestControlPlane::start().await;
    user(&cp, "alice", &["default_ao-r"]).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap();
    let base = cp.at("");
    let origin = base.trim_end_matches('/');
    for (from, want) in [
        (origin, StatusCode::SEE_OTHER),
        ("https://evil.example", StatusCode::FORBIDDEN),
    ] {
        let r = h2.get(cp.at("/ui/login")).send().await.unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        let (login_csrf, _) = set_cookie(r.headers(), "canopy_login_csrf").unwrap();
        let field = hidden(&r.text().await.unwrap(), "csrf").unwrap();
        let r = h2
            .post(cp.at("/ui/login"))
            .header("cookie", format!("canopy_login_csrf={login_csrf}"))
            .header("origin", from)
            .form(&[
                ("username", "alice"),
                ("password", PASSWORD),
                ("csrf", &field),
            ])
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert_eq!(status, want, "from {from}: {}", r.text().await.unwrap());
    }
}

/// The deploy wizard's live count: the edges the typed labels match now, as text, with the
/// caller's read access; the server's error for labels it cannot read; only for a session.
#[tokio::test]
async fn the_wizards_live_count_names_the_matching_edges_and_the_servers_error() {
    let cp = TestControlPlane::start().await;
    let _paris = running_edge(&cp, "paris-1", "paris").await;
    let _lyon = running_edge(&cp, "lyon-1", "lyon").await;
    user(&cp, "reader", &["default_ao-r"]).await;
    let s = sign_in(&cp, "reader").await;
    let path = "/ui/projects/default/matching-edges";
    let (status, h, body) = s.get(&cp, &format!("{path}?labels=site%3Dparis")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(body, "1 edge match now: paris-1");
    let (_, _, body) = s.get(&cp, &format!("{path}?labels=site%3Dnowhere")).await;
    assert_eq!(body, "0 edges match now");
    let (status, _, body) = s.get(&cp, &format!("{path}?labels=nonsense")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("nonsense"), "names what was typed: {body}");
    let (status, _, _) = s
        .get(&cp, "/ui/projects/nope/matching-edges?labels=a%3Db")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let r = client()
        .get(cp.at(&format!("{path}?labels=site%3Dparis")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "no session: sign in first"
    );
}
