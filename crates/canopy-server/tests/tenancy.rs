//! Tenancy and built-in identities end to end over HTTP: the reference-compatible organization
//! and project API, project deletion removing everything (edges told first), default registries
//! on project creation, login / sessions / API tokens, and the bootstrap administrator token.
//!
//! Edges here are **simulated agents** speaking the real agent protocol (as in `fleet.rs`); the
//! real agent is exercised in `crates/canopy/tests/edge_podman.rs`.

use std::time::Duration;

use canopy_proto::{DesiredState, EnrollResponse, PROTOCOL_HEADER, StatusReport};
use canopy_testkit::{TestControlPlane, example};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn send(cp: &TestControlPlane, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    cp.send(req).await
}

#[tokio::test]
async fn orgs_and_projects_follow_the_reference_api() {
    let cp = TestControlPlane::start().await;
    let http = cp.http();

    // The default organization owns the default project from the first start.
    let (s, orgs) = cp.get(&cp.at("/v1/orgs")).await;
    assert_eq!(s, StatusCode::OK, "{orgs}");
    assert_eq!(orgs[0]["name"], "default");
    assert_eq!(
        orgs[0]["status"]["orgStatus"]["statusIndicator"],
        "STATUS_INDICATION_IDLE"
    );

    let (s, b) = send(
        &cp,
        http.put(cp.at("/v1/orgs/acme"))
            .json(&json!({"description": "Acme"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b["message"].as_str().unwrap().contains("acme"), "{b}");
    let (s, org) = cp.get(&cp.at("/v1/orgs/acme")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(org["spec"]["description"], "Acme");
    assert!(org["status"]["orgStatus"]["uID"].as_str().unwrap().len() == 36);
    let (s, st) = cp.get(&cp.at("/v1/orgs/acme/status")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(st["orgStatus"]["timeStamp"].as_i64().unwrap() > 0, "{st}");

    // Projects: created in an organization, updated, refused when update_if_exists=false.
    let (s, b) = send(
        &cp,
        http.put(cp.at("/v1/projects/shop?org=acme"))
            .json(&json!({"description": "stores"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, p) = cp.get(&cp.at("/v1/projects/shop")).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["spec"]["description"], "stores");
    assert_eq!(p["spec"]["org"], "acme");
    assert_eq!(
        p["status"]["projectStatus"]["statusIndicator"],
        "STATUS_INDICATION_IDLE"
    );
    let (s, _) = send(
        &cp,
        http.put(cp.at("/v1/projects/shop?org=acme"))
            .json(&json!({"description": "all stores"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, p) = cp.get(&cp.at("/v1/projects/shop")).await;
    assert_eq!(p["spec"]["description"], "all stores");
    let (s, e) = send(
        &cp,
        http.put(cp.at("/v1/projects/shop?org=acme&update_if_exists=false"))
            .json(&json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    let (s, e) = send(
        &cp,
        http.put(cp.at("/v1/projects/shop?org=default"))
            .json(&json!({})),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "a project never moves between organizations: {e}"
    );
    assert!(e["message"].as_str().unwrap().contains("acme"), "{e}");

    let (s, list) = cp.get(&cp.at("/v1/projects")).await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "shop"]);

    // Bad input: clear errors, nothing created.
    for (url, want) in [
        ("/v1/projects/Bad_Name", StatusCode::BAD_REQUEST),
        ("/v1/projects/x%0Ay", StatusCode::BAD_REQUEST),
        ("/v1/projects/ok?org=nope", StatusCode::NOT_FOUND),
        ("/v1/orgs/..%2Fetc", StatusCode::BAD_REQUEST),
    ] {
        let (s, e) = send(&cp, http.put(cp.at(url)).json(&json!({}))).await;
        assert_eq!(s, want, "{url}: {e}");
        assert!(e["message"].is_string(), "{e}");
    }
    let (s, e) = send(
        &cp,
        http.put(cp.at("/v1/projects/ok"))
            .json(&json!({"description": 1, "x": 2})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(
        cp.get(&cp.at("/v1/projects/ok")).await.0,
        StatusCode::NOT_FOUND
    );

    // An organization that owns projects is not deleted.
    let (s, e) = cp.delete(&cp.at("/v1/orgs/acme")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(e["message"].as_str().unwrap().contains("shop"), "{e}");
    assert_eq!(
        cp.delete(&cp.at("/v1/projects/shop")).await.0,
        StatusCode::OK
    );
    assert_eq!(cp.delete(&cp.at("/v1/orgs/acme")).await.0, StatusCode::OK);
    assert_eq!(
        cp.get(&cp.at("/v1/orgs/acme")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        cp.delete(&cp.at("/v1/projects/shop")).await.0,
        StatusCode::NOT_FOUND
    );
}

/// A simulated edge: enrolls, then long-polls and acknowledges every desired state it gets,
/// recording the last one.
async fn run_edge(
    url: String,
    cred: String,
    last: std::sync::Arc<std::sync::Mutex<Option<DesiredState>>>,
) -> StatusCode {
    let http = reqwest::Client::new();
    let mut held = 0u64;
    let mut seq = 0u64;
    loop {
        let resp = http
            .get(format!(
                "{url}/canopy/v1/agent/desired-state?after={held}&waitSeconds=5"
            ))
            .header(PROTOCOL_HEADER, "1")
            .bearer_auth(&cred)
            .send()
            .await
            .unwrap();
        match resp.status() {
            StatusCode::NO_CONTENT => continue,
            StatusCode::OK => {
                let d: DesiredState = resp.json().await.unwrap();
                held = d.generation.0;
                seq += 1;
                let report = StatusReport {
                    protocol_version: 1,
                    seq,
                    generation: d.generation,
                    apps: vec![],
                    agent: None,
                };
                *last.lock().unwrap() = Some(d);
                let s = http
                    .post(format!("{url}/canopy/v1/agent/status"))
                    .header(PROTOCOL_HEADER, "1")
                    .bearer_auth(&cred)
                    .json(&report)
                    .send()
                    .await
                    .unwrap()
                    .status();
                if s == StatusCode::UNAUTHORIZED {
                    return s;
                }
            }
            other => return other,
        }
    }
}

#[tokio::test]
async fn deleting_a_project_removes_all_of_it_and_tells_its_edges_first() {
    let registry = canopy_core::catalog::Registry {
        name: "company-images".into(),
        root_url: "https://registry.example.com".into(),
        registry_type: "IMAGE".into(),
        ..Default::default()
    };
    let cp = TestControlPlane::start_configured(|c| {
        c.tenancy.default_registries = vec![registry.clone()];
        c.tenancy.delete_grace = Some(Duration::from_secs(10));
    })
    .await;
    cp.create_project("shop").await;

    // A new project gets the default registries.
    let (s, r) = cp
        .get(&cp.catalog("shop", "/registries/company-images"))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["registry"]["rootUrl"], "https://registry.example.com");

    // Catalog, an edge running a deployment, a user with a role on the project.
    let (s, b) = cp.upload_dir("shop", &example("web-demo")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, t) = cp
        .post(
            &cp.at("/canopy/v1/projects/shop/enrollment-tokens"),
            &json!({"description": "t"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let secret = t["secret"].as_str().unwrap().to_string();
    let (s, e) = send(
        &cp,
        cp.anonymous_http()
            .post(cp.at("/canopy/v1/agent/enroll"))
            .header(PROTOCOL_HEADER, "1")
            .json(&json!({"protocolVersion": 1, "token": secret, "name": "store-1", "labels": {"site": "paris"}})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    let enrolled: EnrollResponse = serde_json::from_value(e).unwrap();
    let last = std::sync::Arc::new(std::sync::Mutex::new(None));
    let edge = tokio::spawn(run_edge(
        cp.url.clone(),
        enrolled.credential.clone(),
        last.clone(),
    ));
    let (s, d) = cp
        .post(
            &cp.at("/v1/projects/shop/appdeployment/deployments"),
            &json!({"appName": "web-demo", "appVersion": "1.0.0", "allAppTargetClusters": {"labels": {"site": "paris"}}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while last
        .lock()
        .unwrap()
        .as_ref()
        .is_none_or(|d| d.deployments.is_empty())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the edge gets the deployment"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reader = cp
        .user_token("shop-reader", &["shop_cat-r", "default_cat-r"])
        .await;

    // Delete the project.
    let (s, b) = cp.delete(&cp.at("/v1/projects/shop")).await;
    assert_eq!(s, StatusCode::OK, "{b}");

    // The edge was told to remove the workloads before it went.
    let held = last.lock().unwrap().clone().unwrap();
    assert!(held.deployments.is_empty(), "last desired state: {held:?}");
    let ended = tokio::time::timeout(Duration::from_secs(10), edge)
        .await
        .expect("the edge's long-poll ends")
        .unwrap();
    assert_eq!(
        ended,
        StatusCode::UNAUTHORIZED,
        "its credential stopped working"
    );

    // Everything of the project is gone; re-creating the name starts empty.
    assert_eq!(
        cp.get(&cp.catalog("shop", "/applications")).await.0,
        StatusCode::NOT_FOUND
    );
    cp.create_project("shop").await;
    let (_, apps) = cp.get(&cp.catalog("shop", "/applications")).await;
    assert_eq!(apps["totalElements"], 0, "{apps}");
    let (_, deps) = cp
        .get(&cp.at("/v1/projects/shop/appdeployment/deployments"))
        .await;
    assert_eq!(deps["totalElements"], 0, "{deps}");
    let (_, edges) = cp.get(&cp.at("/canopy/v1/projects/shop/edges")).await;
    assert_eq!(edges["totalElements"], 0, "{edges}");
    let (_, tokens) = cp
        .get(&cp.at("/canopy/v1/projects/shop/enrollment-tokens"))
        .await;
    assert_eq!(
        tokens["enrollmentTokens"].as_array().map_or(0, Vec::len),
        0,
        "{tokens}"
    );
    let (s, _) = send(
        &cp,
        cp.anonymous_http()
            .post(cp.at("/canopy/v1/agent/enroll"))
            .header(PROTOCOL_HEADER, "1")
            .json(&json!({"protocolVersion": 1, "token": t["secret"], "name": "store-2", "labels": {}})),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "the old enrollment token is gone"
    );
    // Grants on the old project do not carry over to the new one.
    let (_, user) = cp.get(&cp.at("/canopy/v1/users/shop-reader")).await;
    assert_eq!(user["roles"], json!(["default_cat-r"]), "{user}");
    let (s, _) = send(
        &cp,
        cp.anonymous_http()
            .get(cp.catalog("shop", "/applications"))
            .bearer_auth(&reader),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn login_sessions_and_api_tokens() {
    let cp = TestControlPlane::start().await;
    let anon = cp.anonymous_http();

    // The bootstrap token file is private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(cp.data_dir().join("admin.token")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }

    let (s, u) = cp
        .post(
            &cp.at("/canopy/v1/users"),
            &json!({"name": "alice", "password": "correct horse battery", "roles": ["default_cat-r"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{u}");
    assert!(!u.to_string().contains("argon2"), "no hash in answers: {u}");
    let (s, e) = cp
        .post(
            &cp.at("/canopy/v1/users"),
            &json!({"name": "bob", "password": "short"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (s, e) = cp
        .post(
            &cp.at("/canopy/v1/users"),
            &json!({"name": "carol", "roles": ["default_cat-x"]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("default_cat-x"),
        "{e}"
    );

    // Wrong password and unknown user: the same answer.
    let login = |user: &str, pw: &str| {
        anon.post(cp.at("/canopy/v1/login"))
            .json(&json!({"username": user, "password": pw}))
    };
    let (s1, e1) = send(&cp, login("alice", "wrong password!!")).await;
    let (s2, e2) = send(&cp, login("mallory", "wrong password!!")).await;
    assert_eq!(
        (s1, s2),
        (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED)
    );
    assert_eq!(e1, e2);

    let (s, session) = send(&cp, login("alice", "correct horse battery")).await;
    assert_eq!(s, StatusCode::OK, "{session}");
    assert_eq!(session["kind"], "session");
    assert!(!session["expireTime"].as_str().unwrap().is_empty());
    let token = session["token"].as_str().unwrap().to_string();
    let (s, me) = send(
        &cp,
        anon.get(cp.at("/canopy/v1/whoami")).bearer_auth(&token),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["actor"], "alice");
    assert_eq!(me["roles"], json!(["default_cat-r"]));
    // Read-only: reads work, writes are 403, administration is 403.
    let (s, _) = send(
        &cp,
        anon.get(cp.catalog("default", "/applications"))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, e) = send(
        &cp,
        anon.post(cp.catalog("default", "/registries"))
            .bearer_auth(&token)
            .json(&json!({"name": "r", "rootUrl": "https://x", "type": "IMAGE"})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    assert!(e["message"].as_str().unwrap().contains("cat-rw"), "{e}");
    let (s, _) = send(&cp, anon.get(cp.at("/canopy/v1/users")).bearer_auth(&token)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // An API token of her own: listed without its secret, revoked at once.
    let (s, api) = send(
        &cp,
        anon.post(cp.at("/canopy/v1/tokens"))
            .bearer_auth(&token)
            .json(&json!({"name": "ci"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{api}");
    let api_token = api["token"].as_str().unwrap().to_string();
    let (_, list) = send(
        &cp,
        anon.get(cp.at("/canopy/v1/tokens")).bearer_auth(&api_token),
    )
    .await;
    assert_eq!(list["tokens"].as_array().unwrap().len(), 2, "{list}");
    assert!(!list.to_string().contains(&api_token));
    let (s, _) = send(
        &cp,
        anon.delete(cp.at(&format!(
            "/canopy/v1/tokens/{}",
            api["id"].as_str().unwrap()
        )))
        .bearer_auth(&token),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = send(
        &cp,
        anon.get(cp.at("/canopy/v1/whoami")).bearer_auth(&api_token),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "revoked tokens stop at once");
    // She cannot see or revoke the administrator's tokens.
    let (_, all) = cp.get(&cp.at("/canopy/v1/tokens?all=true")).await;
    let admin_token_id = all["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == "bootstrap")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _) = send(
        &cp,
        anon.delete(cp.at(&format!("/canopy/v1/tokens/{admin_token_id}")))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Roles changed by an administrator apply at once; logout ends the session.
    let (s, _) = cp
        .send(
            cp.http()
                .patch(cp.at("/canopy/v1/users/alice"))
                .json(&json!({"roles": ["default_cat-rw"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, me) = send(
        &cp,
        anon.get(cp.at("/canopy/v1/whoami")).bearer_auth(&token),
    )
    .await;
    assert_eq!(me["roles"], json!(["default_cat-rw"]));
    let (s, _) = send(
        &cp,
        anon.post(cp.at("/canopy/v1/logout")).bearer_auth(&token),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = send(
        &cp,
        anon.get(cp.at("/canopy/v1/whoami")).bearer_auth(&token),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // The bootstrap file is written once: a restart keeps the same administrator token.
    let before = cp.admin_token().to_string();
    let cp = cp.restart().await;
    assert_eq!(cp.admin_token(), before);
    assert_eq!(cp.get(&cp.at("/canopy/v1/whoami")).await.0, StatusCode::OK);
}
