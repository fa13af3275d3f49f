//! The console's administration over plain HTTP, against a real control plane: organizations,
//! projects, users (passwords never echoed), API tokens (the secret shown once), the audit log
//! with its filters and paging; the navigation by role; and the console's HTML 404 and 429
//! pages. With the refusals: non-administrators, missing CSRF tokens, forged forms.

mod common;

use std::time::Duration;

use canopy_testkit::TestControlPlane;
use common::*;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, LOCATION, RETRY_AFTER};
use serde_json::json;

fn is_html(h: &reqwest::header::HeaderMap) -> bool {
    h[CONTENT_TYPE].to_str().unwrap().starts_with("text/html")
}

#[tokio::test]
async fn administration_is_for_administrators_and_forged_forms_are_refused() {
    let cp = TestControlPlane::start().await;
    user(&cp, "root", &["canopy-admin"]).await;
    user(&cp, "ops", &["default_ao-rw", "default_cat-rw"]).await;
    let root = sign_in(&cp, "root").await;
    let ops = sign_in(&cp, "ops").await;
    let (_, _, page) = root.get(&cp, "/ui/projects/default/deployments").await;
    assert!(page.contains("id=\"admin-link\""), "{page}");
    let (_, _, page) = ops.get(&cp, "/ui/projects/default/deployments").await;
    assert!(!page.contains("admin-link"), "{page}");
    for path in ["/ui/admin", "/ui/admin/users", "/ui/admin/tokens"] {
        let (s, h, page) = ops.get(&cp, path).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
        assert!(
            is_html(&h) && page.contains("administrator access"),
            "{page}"
        );
    }
    // Forged posts with ops's own valid CSRF token: refused by the app layer, nothing made.
    let csrf = ops.csrf(&cp).await;
    for (path, form) in [
        ("/ui/admin/orgs", vec![("name", "evil-org")]),
        ("/ui/admin/projects", vec![("name", "evil")]),
        (
            "/ui/admin/users",
            vec![
                ("name", "evil"),
                ("roles", "canopy-admin"),
                ("password", PASSWORD),
            ],
        ),
        ("/ui/admin/users/ops/roles", vec![("roles", "canopy-admin")]),
        (
            "/ui/admin/users/root/password",
            vec![("password", "taken over")],
        ),
        ("/ui/admin/users/root/delete", vec![]),
        ("/ui/admin/tokens", vec![("name", "t"), ("user", "root")]),
        ("/ui/tokens", vec![("name", "t"), ("user", "root")]),
    ] {
        let mut form = form.clone();
        form.push(("csrf", &csrf));
        let (s, _, page) = ops.post(&cp, path, &form, &[]).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {page}");
    }
    let (_, b) = cp.get(&cp.at("/v1/orgs")).await;
    assert!(!b.to_string().contains("evil-org"), "{b}");
    let (_, b) = cp.get(&cp.at("/canopy/v1/users")).await;
    assert!(!b.to_string().contains("\"evil\""), "{b}");
    let (_, b) = cp.get(&cp.at("/canopy/v1/users/ops")).await;
    assert_eq!(b["roles"], json!(["default_ao-rw", "default_cat-rw"]));
    let (s, _, _) = try_sign_in(&cp, "root", PASSWORD).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    // The administrator without a CSRF token, or from another site: refused.
    let (s, _, _) = root
        .post(&cp, "/ui/admin/orgs", &[("name", "x1")], &[])
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let root_csrf = root.csrf(&cp).await;
    let (s, _, _) = root
        .post(
            &cp,
            "/ui/admin/orgs",
            &[("name", "x1"), ("csrf", &root_csrf)],
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, b) = cp.get(&cp.at("/v1/orgs")).await;
    assert!(!b.to_string().contains("x1"), "{b}");
}

#[tokio::test]
async fn organizations_and_projects_are_created_and_deleted() {
    let cp = TestControlPlane::start().await;
    user(&cp, "root", &["canopy-admin"]).await;
    let root = sign_in(&cp, "root").await;
    let csrf = root.csrf(&cp).await;
    let (s, h, body) = root
        .post(
            &cp,
            "/ui/admin/orgs",
            &[("csrf", &csrf), ("name", "acme"), ("description", "ACME")],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    let (_, _, page) = root.get(&cp, h[LOCATION].to_str().unwrap()).await;
    assert!(page.contains("Created organization acme"), "{page}");
    let (s, _, body) = root
        .post(
            &cp,
            "/ui/admin/projects",
            &[("csrf", &csrf), ("name", "shop"), ("org", "acme")],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    let (s, b) = cp.get(&cp.at("/v1/projects/shop")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["spec"]["org"], "acme", "{b}");
    let (_, _, page) = root.get(&cp, "/ui/admin").await;
    assert!(
        page.contains("href=\"/ui/projects/shop/deployments\""),
        "{page}"
    );

    // The server's errors in place: a bad name, a duplicate, an organization with projects.
    let (s, _, page) = root
        .post(
            &cp,
            "/ui/admin/projects",
            &[("csrf", &csrf), ("name", "Bad Name!")],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{page}");
    assert!(
        page.contains("id=\"admin-error\"") && page.contains("project name"),
        "{page}"
    );
    let (s, _, page) = root
        .post(
            &cp,
            "/ui/admin/orgs",
            &[("csrf", &csrf), ("name", "acme")],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{page}");
    assert!(page.contains("already exists"), "{page}");
    let (s, _, page) = root
        .post(&cp, "/ui/admin/orgs/acme/delete", &[("csrf", &csrf)], &[])
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{page}");
    assert!(page.contains("still owns project(s) shop"), "{page}");

    // A project is deleted only when its name is typed.
    let (s, _, page) = root
        .post(
            &cp,
            "/ui/admin/projects/shop/delete",
            &[("csrf", &csrf), ("confirm", "sho")],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{page}");
    assert_eq!(cp.get(&cp.at("/v1/projects/shop")).await.0, StatusCode::OK);
    let (s, _, _) = root
        .post(
            &cp,
            "/ui/admin/projects/shop/delete",
            &[("csrf", &csrf), ("confirm", "shop")],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(
        cp.get(&cp.at("/v1/projects/shop")).await.0,
        StatusCode::NOT_FOUND
    );
    let (s, _, _) = root
        .post(&cp, "/ui/admin/orgs/acme/delete", &[("csrf", &csrf)], &[])
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn users_are_created_given_roles_and_passwords_never_echoed() {
    let cp = TestControlPlane::start().await;
    user(&cp, "root", &["canopy-admin"]).await;
    let root = sign_in(&cp, "root").await;
    let csrf = root.csrf(&cp).await;
    const PW: &str = "a new password 7731";
    // A bad name: the server's error in place, the password not written back.
    let (s, _, page) = root
        .post(
            &cp,
            "/ui/admin/users",
            &[
                ("csrf", &csrf),
                ("name", "Bad Name"),
                ("roles", "default_ao-r"),
                ("password", PW),
            ],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{page}");
    assert!(
        page.contains("user name") && page.contains("Bad Name"),
        "{page}"
    );
    assert!(!page.contains(PW), "{page}");
    // A bad role: named.
    let (s, _, page) = root
        .post(
            &cp,
            "/ui/admin/users",
            &[
                ("csrf", &csrf),
                ("name", "carol"),
                ("roles", "default_boss"),
                ("password", PW),
            ],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{page}");
    assert!(
        page.contains("default_boss") && !page.contains(PW),
        "{page}"
    );

    let (s, h, body) = root
        .post(
            &cp,
            "/ui/admin/users",
            &[
                ("csrf", &csrf),
                ("name", "carol"),
                ("roles", "default_ao-r"),
                ("password", PW),
            ],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    let location = h[LOCATION].to_str().unwrap().to_string();
    assert!(!location.contains(PW));
    let (_, _, page) = root.get(&cp, &location).await;
    assert!(
        page.contains("Created user carol") && !page.contains(PW),
        "{page}"
    );
    let (s, _, _) = try_sign_in(&cp, "carol", PW).await;
    assert_eq!(s, StatusCode::SEE_OTHER, "carol signs in");

    // Roles.
    let (s, _, _) = root
        .post(
            &cp,
            "/ui/admin/users/carol/roles",
            &[("csrf", &csrf), ("roles", "default_ao-rw, default_cat-r")],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, b) = cp.get(&cp.at("/canopy/v1/users/carol")).await;
    assert_eq!(b["roles"], json!(["default_ao-rw", "default_cat-r"]), "{b}");
    let (s, _, page) = root
        .post(
            &cp,
            "/ui/admin/users/carol/roles",
            &[("csrf", &csrf), ("roles", "nope")],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{page}");
    assert!(page.contains("nope"), "{page}");

    // Reset: the administrator sets carol's password without knowing the old one.
    const PW2: &str = "reset by the admin 5512";
    let (s, h, _) = root
        .post(
            &cp,
            "/ui/admin/users/carol/password",
            &[("csrf", &csrf), ("password", PW2)],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, _, page) = root.get(&cp, h[LOCATION].to_str().unwrap()).await;
    assert!(!page.contains(PW2), "{page}");
    assert_eq!(
        try_sign_in(&cp, "carol", PW).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        try_sign_in(&cp, "carol", PW2).await.0,
        StatusCode::SEE_OTHER
    );

    // The administrator's own password needs the current one: the server's error in place.
    let (s, _, page) = root
        .post(
            &cp,
            "/ui/admin/users/root/password",
            &[("csrf", &csrf), ("password", PW2)],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{page}");
    assert!(page.contains("current"), "{page}");
    assert!(!page.contains(PW2), "{page}");

    // Delete.
    let (s, _, _) = root
        .post(&cp, "/ui/admin/users/carol/delete", &[("csrf", &csrf)], &[])
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(
        cp.get(&cp.at("/canopy/v1/users/carol")).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn an_api_tokens_secret_is_shown_once_and_revoking_it_works() {
    let cp = TestControlPlane::start().await;
    user(&cp, "ops", &["default_ao-rw"]).await;
    user(&cp, "root", &["canopy-admin"]).await;
    let ops = sign_in(&cp, "ops").await;
    let (s, _, page) = ops.get(&cp, "/ui/projects/default/deployments").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        page.contains("href=\"/ui/tokens\""),
        "the user name links to their tokens"
    );
    let csrf = hidden(&page, "csrf").unwrap();
    let (s, h, page) = ops
        .post(
            &cp,
            "/ui/tokens",
            &[("csrf", &csrf), ("name", "ci"), ("days", "30")],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{page}");
    assert!(h.get(LOCATION).is_none());
    assert_eq!(h["cache-control"], "no-store");
    let at = page.find("id=\"api-token-secret\">").expect("shown") + 22;
    let secret = page[at..page[at..].find('<').unwrap() + at].to_string();
    assert!(secret.starts_with("cnp_"), "{secret}");
    // It works against the API.
    let r = client()
        .get(cp.at("/canopy/v1/whoami"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // No later page shows it: the user's, the administrator's lists.
    let (_, _, later) = ops.get(&cp, "/ui/tokens").await;
    assert!(
        !later.contains(&secret) && later.contains(">ci<"),
        "{later}"
    );
    let root = sign_in(&cp, "root").await;
    let (_, _, all) = root.get(&cp, "/ui/admin/tokens").await;
    assert!(!all.contains(&secret) && all.contains(">ci<"), "{all}");
    // A bad lifetime: the error in place.
    let (s, _, page) = ops
        .post(
            &cp,
            "/ui/tokens",
            &[("csrf", &csrf), ("name", "x"), ("days", "0")],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(page.contains("expires after"), "{page}");
    // The administrator makes one for ops.
    let root_csrf = root.csrf(&cp).await;
    let (s, _, page) = root
        .post(
            &cp,
            "/ui/admin/tokens",
            &[("csrf", &root_csrf), ("name", "for-ops"), ("user", "ops")],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{page}");
    assert!(page.contains("created for ops"), "{page}");

    // Revoke: without the CSRF token refused; with it, the token stops working.
    let (_, b) = cp.get(&cp.at("/canopy/v1/tokens?all=true")).await;
    let id = b["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _, _) = ops
        .post(&cp, &format!("/ui/tokens/{id}/revoke"), &[], &[])
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = ops
        .post(
            &cp,
            &format!("/ui/tokens/{id}/revoke"),
            &[("csrf", &csrf)],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let r = client()
        .get(cp.at("/canopy/v1/whoami"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_audit_log_filters_by_who_what_and_when_on_the_server() {
    let cp = TestControlPlane::start().await;
    user(&cp, "root", &["canopy-admin"]).await;
    user(&cp, "ops", &["default_ao-rw"]).await;
    user(&cp, "support", &["default_ao-r"]).await;
    let ops = sign_in(&cp, "ops").await;
    let support = sign_in(&cp, "support").await;
    // (Before the refused logins below, which exhaust this address's sign-in attempts.)
    let root = sign_in(&cp, "root").await;
    // Calls to find: ops's created token, support's refused one, and 60 refused logins.
    let csrf = ops.csrf(&cp).await;
    let (s, _, _) = ops
        .post(
            &cp,
            "/ui/projects/default/enrollment-tokens",
            &[("csrf", &csrf), ("description", "audit me")],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let their = support.csrf(&cp).await;
    let (s, _, _) = support
        .post(
            &cp,
            "/ui/projects/default/enrollment-tokens",
            &[("csrf", &their)],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    for _ in 0..60 {
        let (s, _) = cp
            .send(
                cp.anonymous_http()
                    .post(cp.at("/canopy/v1/login"))
                    .json(&json!({"username": "ghost", "password": "x"})),
            )
            .await;
        assert!(
            s == StatusCode::UNAUTHORIZED || s == StatusCode::TOO_MANY_REQUESTS,
            "{s}"
        );
    }
    let audit = "/ui/admin/audit";

    // Who + outcome.
    let (s, _, page) = root
        .get(&cp, &format!("{audit}?actor=support&result=Forbidden"))
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(page.contains("1 calls match"), "{page}");
    assert!(
        page.contains("POST /ui/projects/{project}/enrollment-tokens"),
        "{page}"
    );
    assert!(!page.contains(">ops<"), "{page}");
    // What.
    let (_, _, page) = root
        .get(&cp, &format!("{audit}?actor=ops&action=enrollment"))
        .await;
    assert!(
        page.contains("1 calls match") && page.contains(">ok<"),
        "{page}"
    );
    // When: nothing in the future; an unreadable time is named.
    let (_, _, page) = root
        .get(&cp, &format!("{audit}?since=2099-01-01T00:00"))
        .await;
    assert!(page.contains("0 calls match"), "{page}");
    let (s, _, page) = root.get(&cp, &format!("{audit}?until=yesterday")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        page.contains("id=\"audit-error\"") && page.contains("until"),
        "{page}"
    );
    // Paged on the server: 50 a page, the filters carried by the links.
    let (_, _, page) = root.get(&cp, &format!("{audit}?actor=login:ghost")).await;
    assert!(page.contains("60 calls match"), "{page}");
    assert_eq!(page.matches("<tr>").count(), 51, "a header and 50 rows");
    let next = "href=\"/ui/admin/audit?actor=login%3Aghost&amp;page=1\"";
    assert!(page.contains(next), "{page}");
    let (_, _, page) = root
        .get(&cp, &format!("{audit}?actor=login:ghost&page=1"))
        .await;
    assert_eq!(page.matches("<tr>").count(), 11, "{page}");
    assert!(
        page.contains("rel=\"prev\"") && !page.contains("rel=\"next\""),
        "{page}"
    );

    // A project writer may read their project's log, not the whole log (the app layer's rule).
    let (s, _, page) = ops.get(&cp, audit).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        page.contains("project=NAME") || page.contains("administrator"),
        "{page}"
    );
    let (s, _, page) = ops
        .get(&cp, &format!("{audit}?project=default&actor=ops"))
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(
        page.contains("audit me") || page.contains("enrollment-tokens"),
        "{page}"
    );
    let (s, _, _) = support.get(&cp, &format!("{audit}?project=default")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_navigation_shows_only_what_the_roles_allow() {
    let cp = TestControlPlane::start().await;
    upload_example(&cp).await;
    user(&cp, "support", &["default_ao-r"]).await;
    user(&cp, "dev", &["default_cat-r"]).await;
    user(&cp, "ops", &["default_ao-rw", "default_cat-rw"]).await;
    let nav = |page: &str| {
        let start = page.find("aria-label=\"sections\"").unwrap();
        let end = start + page[start..].find("</nav>").unwrap();
        page[start..end].to_string()
    };
    let support = sign_in(&cp, "support").await;
    let (_, _, page) = support.get(&cp, "/ui/projects/default/deployments").await;
    let n = nav(&page);
    assert!(n.contains("Deployments") && n.contains("Edges"), "{n}");
    for hidden in [
        "Packages",
        "Applications",
        "Registries",
        "Enrollment",
        "Administration",
    ] {
        assert!(!n.contains(hidden), "{hidden} shown to support: {n}");
    }
    let dev = sign_in(&cp, "dev").await;
    let (s, h, _) = dev.get(&cp, "/").await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(
        h[LOCATION], "/ui/projects/default/packages",
        "a catalog user starts at the packages"
    );
    let (_, _, page) = dev.get(&cp, "/ui/projects/default/packages").await;
    let n = nav(&page);
    assert!(n.contains("Packages") && n.contains("Registries"), "{n}");
    assert!(!n.contains("Deployments") && !n.contains("Edges"), "{n}");
    let ops = sign_in(&cp, "ops").await;
    let (_, _, page) = ops.get(&cp, "/ui/projects/default/deployments").await;
    let n = nav(&page);
    for shown in [
        "Deployments",
        "Edges",
        "Enrollment tokens",
        "Packages",
        "Registries",
    ] {
        assert!(n.contains(shown), "{shown}: {n}");
    }
    assert!(!n.contains("Administration"), "{n}");
}

#[tokio::test]
async fn unknown_console_paths_get_an_html_404_in_the_frame() {
    let cp = TestControlPlane::start().await;
    user(&cp, "ops", &["default_ao-rw"]).await;
    let ops = sign_in(&cp, "ops").await;
    let (s, h, page) = ops.get(&cp, "/ui/no/such/page").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(is_html(&h), "{h:?}");
    assert!(page.contains("no such page /ui/no/such/page"), "{page}");
    assert!(page.contains("Sign out"), "in the frame: {page}");
    assert!(h.contains_key("content-security-policy"));
    let (s, _, page) = ops.post(&cp, "/ui/no/such/form", &[("a", "b")], &[]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(page.contains("<html"), "{page}");
    // Signed out: the page, without the frame.
    let r = client().get(cp.at("/ui/nothing")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(is_html(r.headers()));
    // The API's unknown paths stay JSON.
    let r = client()
        .get(cp.at("/canopy/v1/nothing"))
        .send()
        .await
        .unwrap();
    assert!(r.headers()[CONTENT_TYPE].to_str().unwrap().contains("json"));
}

#[tokio::test]
async fn rate_limited_console_pages_get_an_html_429_and_do_nothing() {
    let cp = TestControlPlane::start_configured(|c| {
        c.limits.requests_per_second = 1;
        c.limits.burst = 4;
    })
    .await;
    user(&cp, "ops", &["default_ao-rw"]).await;
    let ops = sign_in(&cp, "ops").await;
    let csrf = ops.csrf(&cp).await;
    // Spend the burst, then post: refused before the handler runs (no token is made).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut created = 0;
    let (h, page) = loop {
        let (s, h, page) = ops
            .post(
                &cp,
                "/ui/projects/default/enrollment-tokens",
                &[("csrf", &csrf), ("description", "limited")],
                &[],
            )
            .await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            break (h, page);
        }
        assert_eq!(s, StatusCode::CREATED, "{page}");
        created += 1;
        assert!(tokio::time::Instant::now() < deadline, "never limited");
    };
    assert!(is_html(&h), "{h:?}");
    assert!(h.contains_key(RETRY_AFTER), "{h:?}");
    assert!(h.contains_key("content-security-policy"));
    assert!(
        page.contains("too many requests: retry in"),
        "the server's message: {page}"
    );
    let (_, b) = cp
        .get(&cp.at("/canopy/v1/projects/default/enrollment-tokens"))
        .await;
    // Every 201 made one token; the 429 made none.
    assert_eq!(b["totalElements"], created, "{b}");
    // The API's 429 stays JSON (the same session's bucket, spent).
    let r = client()
        .get(cp.at("/canopy/v1/projects/default/edges"))
        .bearer_auth(&ops.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers()[CONTENT_TYPE].to_str().unwrap().contains("json"));
}
