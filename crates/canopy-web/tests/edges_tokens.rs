//! The console's fleet and catalog changes over plain HTTP, against a real control plane:
//! an edge's labels, enrollment tokens (the secret shown once), registries with write-only
//! secrets, deletes refused by the reference's locks with the reason in place, and package
//! export. Each with its refusals: read-only users, another project, missing CSRF token, and
//! forged forms with a valid token (refused by the app layer).

mod common;

use canopy_testkit::TestControlPlane;
use canopy_testkit::sim_agent::SimAgent;
use common::*;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, LOCATION};
use serde_json::{Value, json};

/// The first `prefix...` token in `page` (letters, digits, `_` and `-`).
fn secret_in(page: &str, prefix: &str) -> Option<String> {
    let at = page.find(prefix)?;
    Some(
        page[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect(),
    )
}

async fn edge_labels(cp: &TestControlPlane, edge: &str) -> Value {
    let (s, b) = cp
        .get(&cp.at(&format!("/canopy/v1/projects/{P}/edges/{edge}")))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["edge"]["labels"].clone()
}

#[tokio::test]
async fn an_edges_labels_are_edited_from_its_page_with_the_servers_errors_in_place() {
    let cp = TestControlPlane::start().await;
    cp.create_project("other").await;
    user(&cp, "ops", &["default_ao-rw"]).await;
    user(&cp, "support", &["default_ao-r"]).await;
    user(&cp, "stranger", &["other_ao-rw"]).await;
    let _agent = running_edge(&cp, "edge-1", "a").await;
    let ops = sign_in(&cp, "ops").await;
    let edge_page = format!("/ui/projects/{P}/edges/edge-1");
    let form = format!("{edge_page}/labels");

    let (s, _, page) = ops.get(&cp, &edge_page).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(page.contains("id=\"edit-labels\""), "{page}");
    let (s, _, page) = ops.get(&cp, &form).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(page.contains("site=a"), "{page}");
    let csrf = hidden(&page, "csrf").unwrap();

    // Replace: site changes, zone is added.
    let (s, h, body) = ops
        .post(
            &cp,
            &form,
            &[("csrf", &csrf), ("labels", "site=b\nzone=z1\n")],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    assert!(h[LOCATION].to_str().unwrap().contains("/edges/"), "{h:?}");
    assert_eq!(
        edge_labels(&cp, "edge-1").await,
        json!({"site": "b", "zone": "z1"})
    );

    // Remove a line: the label goes.
    let (s, _, body) = ops
        .post(&cp, &form, &[("csrf", &csrf), ("labels", "site=b")], &[])
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(edge_labels(&cp, "edge-1").await, json!({"site": "b"}));

    // The server's validation error, naming the label, in place; the typed text kept; nothing
    // changed.
    let (s, _, page) = ops
        .post(
            &cp,
            &form,
            &[("csrf", &csrf), ("labels", "site=c\nbad key!=x")],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{page}");
    assert!(page.contains("id=\"labels-error\""), "{page}");
    assert!(page.contains("bad key!"), "the error names the key: {page}");
    assert!(page.contains("site=c"), "the typed text is kept: {page}");
    assert_eq!(edge_labels(&cp, "edge-1").await, json!({"site": "b"}));
    let (s, _, page) = ops
        .post(&cp, &form, &[("csrf", &csrf), ("labels", "nonsense")], &[])
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(page.contains("line 1"), "{page}");

    // Without the CSRF token, or from another site: refused, nothing changed.
    let (s, _, _) = ops.post(&cp, &form, &[("labels", "site=x")], &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = ops
        .post(
            &cp,
            &form,
            &[("csrf", &csrf), ("labels", "site=x")],
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // A read-only user: no control, the form is 403, and a forged post with their own valid
    // CSRF token is refused by the app layer.
    let support = sign_in(&cp, "support").await;
    let (_, _, page) = support.get(&cp, &edge_page).await;
    assert!(!page.contains("edit-labels"), "{page}");
    let (s, _, _) = support.get(&cp, &form).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let their = support.csrf(&cp).await;
    let (s, _, page) = support
        .post(&cp, &form, &[("csrf", &their), ("labels", "site=x")], &[])
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{page}");
    assert!(page.contains("deployment write access"), "{page}");

    // Another project's writer: the project does not exist for them.
    let stranger = sign_in(&cp, "stranger").await;
    let theirs = {
        let (_, _, page) = stranger.get(&cp, "/ui/projects/other/edges").await;
        hidden(&page, "csrf").unwrap()
    };
    let (s, _, _) = stranger
        .post(&cp, &form, &[("csrf", &theirs), ("labels", "site=x")], &[])
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(edge_labels(&cp, "edge-1").await, json!({"site": "b"}));
}

#[tokio::test]
async fn an_enrollment_tokens_secret_is_shown_once_with_the_agent_command() {
    let cp = TestControlPlane::start().await;
    user(&cp, "ops", &["default_ao-rw"]).await;
    user(&cp, "support", &["default_ao-r"]).await;
    let ops = sign_in(&cp, "ops").await;
    let path = format!("/ui/projects/{P}/enrollment-tokens");
    let (s, _, page) = ops.get(&cp, &format!("/ui/projects/{P}/edges")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains(&format!("href=\"{path}\"")), "{page}");
    let (s, _, page) = ops.get(&cp, &path).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(page.contains("No enrollment tokens"), "{page}");
    let csrf = hidden(&page, "csrf").unwrap();

    let (s, h, page) = ops
        .post(
            &cp,
            &path,
            &[
                ("csrf", &csrf),
                ("description", "store 12"),
                ("ttl_days", "2"),
                ("max_uses", "1"),
            ],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{page}");
    assert!(
        h.get(LOCATION).is_none(),
        "the secret is in this answer, no redirect"
    );
    assert_eq!(h["cache-control"], "no-store");
    let secret = secret_in(&page, "cnt_").expect("the secret is shown");
    assert!(secret.len() > 20, "{secret}");
    let server = cp.at("");
    let command = format!(
        "canopy agent --server {} --enroll-token {secret} --data-dir /var/lib/canopy-agent",
        server.trim_end_matches('/')
    );
    assert!(page.contains(&command), "{command} in {page}");

    // Never again: not in the list, nor in any page after.
    for p in [
        path.clone(),
        format!("/ui/projects/{P}/edges"),
        format!("/ui/projects/{P}/deployments"),
    ] {
        let (_, _, later) = ops.get(&cp, &p).await;
        assert!(!later.contains(&secret), "{p} shows the secret");
        assert!(!later.contains("cnt_"), "{p} shows a secret");
    }
    let (_, _, later) = ops.get(&cp, &path).await;
    assert!(
        later.contains("store 12") && later.contains("ACTIVE"),
        "{later}"
    );

    // It works, once (max uses 1).
    let agent = SimAgent::enroll(&cp, &secret, "edge-7", &[("site", "s")]).await;
    drop(agent);
    let (_, _, later) = ops.get(&cp, &path).await;
    assert!(later.contains("USED_UP"), "{later}");

    // The server's error in place: a description with a control character... is a form value
    // the browser cannot send; a lifetime out of range is.
    let (s, _, page) = ops
        .post(&cp, &path, &[("csrf", &csrf), ("ttl_days", "999")], &[])
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{page}");
    assert!(
        page.contains("id=\"token-error\"") && page.contains("999"),
        "{page}"
    );

    // Revoke a second token.
    let (s, _, page) = ops
        .post(
            &cp,
            &path,
            &[("csrf", &csrf), ("description", "second")],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let second = secret_in(&page, "cnt_").unwrap();
    let (s, b) = cp
        .get(&cp.at(&format!("/canopy/v1/projects/{P}/enrollment-tokens")))
        .await;
    assert_eq!(s, StatusCode::OK);
    let id = b["enrollmentTokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["description"] == "second")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _, _) = ops
        .post(&cp, &format!("{path}/{id}/revoke"), &[], &[])
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "no CSRF token");
    let (s, h, _) = ops
        .post(&cp, &format!("{path}/{id}/revoke"), &[("csrf", &csrf)], &[])
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h[LOCATION], path.as_str());
    let (s, _) = canopy_testkit::sim_agent::enroll_raw(&cp, &second, "edge-8", &[]).await;
    assert_ne!(s, StatusCode::OK, "a revoked token enrolls nothing");

    // Read-only users: no link, 403, and a forged create with their own CSRF token is refused
    // by the app layer with nothing created.
    let support = sign_in(&cp, "support").await;
    let (_, _, page) = support.get(&cp, &format!("/ui/projects/{P}/edges")).await;
    assert!(!page.contains("enrollment-tokens"), "{page}");
    let (s, _, _) = support.get(&cp, &path).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let their = support.csrf(&cp).await;
    let (s, _, page) = support
        .post(
            &cp,
            &path,
            &[("csrf", &their), ("description", "forged")],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(!page.contains("cnt_"), "{page}");
    let (_, b) = cp
        .get(&cp.at(&format!("/canopy/v1/projects/{P}/enrollment-tokens")))
        .await;
    assert_eq!(b["totalElements"], 2, "{b}");
    let (s, _, _) = ops
        .post(&cp, &path, &[("description", "no csrf")], &[])
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, b) = cp
        .get(&cp.at(&format!("/canopy/v1/projects/{P}/enrollment-tokens")))
        .await;
    assert_eq!(b["totalElements"], 2, "{b}");
}

async fn registry_api(cp: &TestControlPlane, name: &str) -> (StatusCode, Value) {
    let (s, b) = cp
        .get(&cp.at(&format!(
            "/v3/projects/{P}/catalog/registries/{name}?showSensitiveInfo=true"
        )))
        .await;
    (s, b["registry"].clone())
}

#[tokio::test]
async fn registries_are_created_and_edited_with_write_only_secrets() {
    let cp = TestControlPlane::start().await;
    user(&cp, "dev", &["default_cat-rw"]).await;
    user(&cp, "viewer", &["default_cat-r"]).await;
    let dev = sign_in(&cp, "dev").await;
    let (s, _, page) = dev.get(&cp, &format!("/ui/projects/{P}/registries")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("id=\"new-registry\""), "{page}");
    let (s, _, page) = dev
        .get(&cp, &format!("/ui/projects/{P}/new-registry"))
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let csrf = hidden(&page, "csrf").unwrap();
    const USER: &str = "robot-user-9931";
    const TOKEN: &str = "tok-s3cr3t-8812";
    let create = format!("/ui/projects/{P}/registries");
    let form = |name: &'static str, token: &'static str| {
        vec![
            ("name", name),
            ("display_name", "Private images"),
            ("type", "IMAGE"),
            ("root_url", "https://images.example.com"),
            ("username", USER),
            ("auth_token", token),
        ]
    };
    let mut fields = form("private", TOKEN);
    fields.push(("csrf", &csrf));
    let (s, h, body) = dev.post(&cp, &create, &fields, &[]).await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(
        h[LOCATION],
        format!("/ui/projects/{P}/registries/private").as_str()
    );
    let (_, r) = registry_api(&cp, "private").await;
    assert_eq!(
        (r["username"].as_str(), r["authToken"].as_str()),
        (Some(USER), Some(TOKEN)),
        "{r}"
    );

    // The same name again: the server's 409 in place, the typed secrets not written back.
    let (s, _, page) = dev.post(&cp, &create, &fields, &[]).await;
    assert_eq!(s, StatusCode::CONFLICT, "{page}");
    assert!(
        page.contains("id=\"registry-error\"") && page.contains("already exists"),
        "{page}"
    );
    assert!(!page.contains(TOKEN) && !page.contains(USER), "{page}");

    // Edit: the form shows no secret; blank inputs keep them.
    let edit = format!("/ui/projects/{P}/registries/private/edit");
    let (s, _, page) = dev.get(&cp, &edit).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(!page.contains(TOKEN) && !page.contains(USER), "{page}");
    assert!(page.contains("Leave blank to keep"), "{page}");
    let (s, _, body) = dev
        .post(
            &cp,
            &edit,
            &[
                ("csrf", &csrf),
                ("type", "IMAGE"),
                ("root_url", "https://images2.example.com"),
                ("description", "moved"),
                ("username", ""),
                ("auth_token", ""),
            ],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    let (_, r) = registry_api(&cp, "private").await;
    assert_eq!(r["rootUrl"], "https://images2.example.com");
    assert_eq!(
        (r["username"].as_str(), r["authToken"].as_str()),
        (Some(USER), Some(TOKEN)),
        "kept: {r}"
    );
    // A new token replaces; "clear" removes the user name.
    let (s, _, _) = dev
        .post(
            &cp,
            &edit,
            &[
                ("csrf", &csrf),
                ("type", "IMAGE"),
                ("root_url", "https://images2.example.com"),
                ("auth_token", "tok-new-5521"),
                ("clear_username", "1"),
            ],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, r) = registry_api(&cp, "private").await;
    assert_eq!(r["authToken"], "tok-new-5521", "{r}");
    assert!(r["username"].as_str().unwrap_or("").is_empty(), "{r}");
    // A bad URL: the server's error in place, the new secret not echoed.
    let (s, _, page) = dev
        .post(
            &cp,
            &edit,
            &[
                ("csrf", &csrf),
                ("type", "IMAGE"),
                ("root_url", ""),
                ("auth_token", "tok-never-shown-77"),
            ],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{page}");
    assert!(page.contains("id=\"registry-error\""), "{page}");
    assert!(!page.contains("tok-never-shown-77"), "{page}");
    // No page shows a secret.
    for p in [
        format!("/ui/projects/{P}/registries"),
        format!("/ui/projects/{P}/registries/private"),
        edit.clone(),
    ] {
        let (_, _, page) = dev.get(&cp, &p).await;
        for secret in [USER, TOKEN, "tok-new-5521"] {
            assert!(!page.contains(secret), "{p} shows {secret}");
        }
    }

    // A catalog reader: no controls, forms 403, a forged create refused with nothing stored.
    let viewer = sign_in(&cp, "viewer").await;
    let (_, _, page) = viewer
        .get(&cp, &format!("/ui/projects/{P}/registries/private"))
        .await;
    assert!(
        !page.contains("edit-link") && !page.contains("delete-link"),
        "{page}"
    );
    let (_, _, page) = viewer
        .get(&cp, &format!("/ui/projects/{P}/registries"))
        .await;
    assert!(!page.contains("new-registry"), "{page}");
    let (s, _, _) = viewer.get(&cp, &edit).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let their = {
        let (_, _, page) = viewer.get(&cp, &format!("/ui/projects/{P}/packages")).await;
        hidden(&page, "csrf").unwrap()
    };
    let mut forged = form("forged", TOKEN);
    forged.push(("csrf", &their));
    let (s, _, page) = viewer.post(&cp, &create, &forged, &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{page}");
    assert_eq!(registry_api(&cp, "forged").await.0, StatusCode::NOT_FOUND);
    let (s, _, _) = viewer
        .post(
            &cp,
            &format!("/ui/projects/{P}/registries/private/delete"),
            &[("csrf", &their)],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Without a CSRF token: refused.
    let (s, _, _) = dev
        .post(
            &cp,
            &format!("/ui/projects/{P}/registries/private/delete"),
            &[],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(registry_api(&cp, "private").await.0, StatusCode::OK);

    // Delete.
    let (s, _, page) = dev
        .get(&cp, &format!("/ui/projects/{P}/registries/private/delete"))
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let (s, h, _) = dev
        .post(
            &cp,
            &format!("/ui/projects/{P}/registries/private/delete"),
            &[("csrf", &csrf)],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, _, page) = dev.get(&cp, h[LOCATION].to_str().unwrap()).await;
    assert!(page.contains("Deleted registry private"), "{page}");
    assert_eq!(registry_api(&cp, "private").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn deletes_refused_by_locks_say_why_in_place_and_packages_export() {
    let cp = TestControlPlane::start().await;
    upload_example(&cp).await;
    user(&cp, "dev", &["default_cat-rw", "default_ao-r"]).await;
    user(&cp, "viewer", &["default_cat-r"]).await;
    let id = deployment(&cp, "shop web", "shop").await;
    let dev = sign_in(&cp, "dev").await;
    let csrf = dev.csrf(&cp).await;

    // An application used by a package: the server's error names the package.
    let app_path = format!("/ui/projects/{P}/applications/web/1.0.0");
    let (_, _, page) = dev.get(&cp, &app_path).await;
    assert!(page.contains("id=\"delete-link\""), "{page}");
    let (s, _, page) = dev
        .post(&cp, &format!("{app_path}/delete"), &[("csrf", &csrf)], &[])
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{page}");
    assert!(page.contains("id=\"delete-error\""), "{page}");
    assert!(
        page.contains("web-demo:1.0.0"),
        "used by the package: {page}"
    );

    // A deployed package: the server's error, and the deployments that use it.
    let pkg = format!("/ui/projects/{P}/packages/web-demo/1.0.0");
    let (s, _, page) = dev
        .post(&cp, &format!("{pkg}/delete"), &[("csrf", &csrf)], &[])
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{page}");
    assert!(page.contains("deployed package"), "{page}");
    assert!(page.contains("id=\"blocking-deployments\""), "{page}");
    assert!(page.contains("shop web") && page.contains(&id), "{page}");

    // A registry used by an application: a copy of web that pulls its images from `imgs`.
    let (s, b) = cp
        .post(
            &cp.at(&format!("/v3/projects/{P}/catalog/registries")),
            &json!({"name": "imgs", "type": "IMAGE", "rootUrl": "https://images.example.com"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = cp
        .get(&cp.at(&format!(
            "/v3/projects/{P}/catalog/applications/web/versions/1.0.0"
        )))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let mut copy = b["application"].clone();
    copy["name"] = json!("web-copy");
    copy["displayName"] = json!("web copy");
    copy["imageRegistryName"] = json!("imgs");
    let (s, b) = cp
        .post(
            &cp.at(&format!("/v3/projects/{P}/catalog/applications")),
            &copy,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _, page) = dev
        .post(
            &cp,
            &format!("/ui/projects/{P}/registries/imgs/delete"),
            &[("csrf", &csrf)],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{page}");
    assert!(
        page.contains("in use by") && page.contains("web-copy:1.0.0"),
        "{page}"
    );

    // A catalog reader's forged delete: refused by the app layer.
    let viewer = sign_in(&cp, "viewer").await;
    let (_, _, page) = viewer.get(&cp, &pkg).await;
    assert!(!page.contains("delete-link"), "{page}");
    let their = {
        let (_, _, page) = viewer.get(&cp, &format!("/ui/projects/{P}/packages")).await;
        hidden(&page, "csrf").unwrap()
    };
    let (s, _, _) = viewer
        .post(&cp, &format!("{app_path}/delete"), &[("csrf", &their)], &[])
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Export: the API's download, for catalog readers too.
    assert!(page.contains("id=\"export-link\""), "{page}");
    let r = client()
        .get(cp.at(&format!("{pkg}/export")))
        .header("cookie", viewer.cookie())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_TYPE], "application/gzip");
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("web-demo-1.0.0.tar.gz")
    );
    let bytes = r.bytes().await.unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "a gzip stream");
    let api = cp
        .http()
        .get(cp.at(&format!(
            "/v3/projects/{P}/catalog/deployment_packages/web-demo/versions/1.0.0/download"
        )))
        .bearer_auth(cp.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::OK);
    // Re-uploading the export is a no-op change (the archive is the package).
    let (s, b) = cp
        .upload(P, vec![("web-demo-1.0.0.tar.gz".into(), bytes.to_vec())])
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");

    // After the deployment goes, the package deletes.
    let (s, _) = cp
        .delete(&cp.at(&format!("/v1/projects/{P}/appdeployment/deployments/{id}")))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, body) = dev
        .post(&cp, &format!("{pkg}/delete"), &[("csrf", &csrf)], &[])
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    let (s, _) = cp
        .get(&cp.at(&format!(
            "/v3/projects/{P}/catalog/deployment_packages/web-demo/versions/1.0.0"
        )))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
