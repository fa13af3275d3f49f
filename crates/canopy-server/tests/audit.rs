//! The audit log end to end over HTTP: every mutating call is recorded (with its actor, project,
//! action, target and outcome, failures included), reads and agent machine traffic are not,
//! no secret ever reaches the log, and reading it is filtered, paged and access-controlled.

use canopy_proto::{PROTOCOL_HEADER, StatusReport};
use canopy_server::app::AuditQuery;
use canopy_testkit::TestControlPlane;
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const P: &str = "default";

fn registry(name: &str, token: &str) -> Value {
    json!({"name": name, "rootUrl": format!("oci://registry.example.com/{name}"), "type": "HELM",
           "username": "robot", "authToken": token})
}

fn app(name: &str, version: &str, description: &str) -> Value {
    json!({"name": name, "version": version, "chartName": name, "chartVersion": version,
           "helmRegistryName": "helm", "description": description,
           "profiles": [{"name": "p", "chartValues": "a: 1\n"}], "defaultProfileName": "p"})
}

/// `GET /canopy/v1/audit?query` as the administrator.
async fn audit(cp: &TestControlPlane, query: &str) -> (StatusCode, Value) {
    cp.get(&cp.at(&format!("/canopy/v1/audit?{query}"))).await
}

fn entries(b: &Value) -> Vec<Value> {
    b["entries"].as_array().cloned().unwrap_or_default()
}

/// The first (newest) entry with this action and target.
fn find<'a>(list: &'a [Value], action: &str, target: &str) -> Option<&'a Value> {
    list.iter()
        .find(|e| e["action"] == action && e["target"] == target)
}

#[tokio::test]
async fn mutating_calls_are_recorded_and_reads_are_not() {
    for cp in TestControlPlane::all().await {
        let b = cp.backend;
        let (s, body) = cp
            .post(&cp.catalog(P, "/registries"), &registry("helm", "t"))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}: {body}");
        let (s, body) = cp
            .post(&cp.catalog(P, "/applications"), &app("web", "1.0.0", "one"))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}: {body}");
        let version_path = "/applications/web/versions/1.0.0";
        let resp = cp
            .http()
            .put(cp.catalog(P, version_path))
            .header("x-request-id", "req-update-1")
            .json(&app("web", "1.0.0", "two"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{b}");
        let (s, _) = cp.get(&cp.catalog(P, "/applications")).await;
        assert_eq!(s, StatusCode::OK);
        let (s, _) = cp.get(&cp.catalog(P, version_path)).await;
        assert_eq!(s, StatusCode::OK);
        let (s, _) = cp.delete(&cp.catalog(P, version_path)).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        // A refused call is recorded with its status.
        let (s, _) = cp
            .post(&cp.catalog(P, "/registries"), &registry("helm", "t"))
            .await;
        assert_eq!(s, StatusCode::CONFLICT, "{b}");

        let (s, body) = audit(&cp, &format!("project={P}")).await;
        assert_eq!(s, StatusCode::OK, "{b}: {body}");
        let list = entries(&body);
        assert_eq!(body["totalElements"], 5, "{b}: {body}");
        assert_eq!(list.len(), 5, "{b}: {body}");
        let target = format!("/v3/projects/{P}/catalog/applications");
        let created = find(
            &list,
            "POST /v3/projects/{projectName}/catalog/applications",
            &target,
        )
        .unwrap_or_else(|| panic!("{b}: create not recorded: {body}"));
        assert_eq!(created["actor"], "admin", "{b}");
        assert_eq!(created["project"], P);
        assert_eq!(created["status"], 200);
        assert_eq!(created["result"], "ok");
        assert!(!created["requestId"].as_str().unwrap().is_empty());
        assert!(
            OffsetDateTime::parse(created["time"].as_str().unwrap(), &Rfc3339).is_ok(),
            "{created}"
        );
        let version_target = format!("/v3/projects/{P}/catalog{version_path}");
        let version_action =
            "/v3/projects/{projectName}/catalog/applications/{applicationName}/versions/{version}";
        let updated = find(&list, &format!("PUT {version_action}"), &version_target)
            .unwrap_or_else(|| panic!("{b}: update not recorded: {body}"));
        assert_eq!(
            updated["requestId"], "req-update-1",
            "{b}: the client's id is kept"
        );
        assert_eq!(updated["status"], 200);
        let deleted = find(&list, &format!("DELETE {version_action}"), &version_target)
            .unwrap_or_else(|| panic!("{b}: delete not recorded: {body}"));
        assert_eq!(deleted["actor"], "admin");
        // Newest first: the refused create is the first entry.
        let refused = &list[0];
        assert_eq!(refused["status"], 409, "{b}: {body}");
        assert_eq!(refused["result"], "Conflict");
        assert_eq!(
            refused["action"],
            "POST /v3/projects/{projectName}/catalog/registries"
        );
        assert!(
            list.iter()
                .all(|e| !e["action"].as_str().unwrap().starts_with("GET")),
            "{b}: reads recorded: {body}"
        );
        // The project's own path shows the same.
        let (s, own) = cp
            .get(&cp.at(&format!("/canopy/v1/projects/{P}/audit")))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}: {own}");
        assert_eq!(own["totalElements"], 5, "{b}: {own}");
    }
}

#[tokio::test]
async fn secrets_never_reach_the_audit_log() {
    let cp = TestControlPlane::start().await;
    let secret = "tok-Zq81-audit-SECRET";
    let (s, body) = cp
        .post(&cp.catalog(P, "/registries"), &registry("helm", secret))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _) = cp
        .put(
            &cp.catalog(P, "/registries/helm"),
            &registry("helm", &format!("{secret}-2")),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // A secret in a query string (recorded, without it) and in a failed body.
    let (s, _) = cp
        .post(
            &cp.catalog(P, &format!("/registries?authToken={secret}")),
            &registry("other", secret),
        )
        .await;
    assert!(s == StatusCode::OK || s == StatusCode::BAD_REQUEST, "{s}");
    let (s, _) = cp
        .post(
            &cp.catalog(P, "/registries"),
            &json!({"name": 5, "authToken": secret}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // A user's password.
    let (s, body) = cp
        .post(
            &cp.at("/canopy/v1/users"),
            &json!({"name": "carol", "password": secret, "roles": []}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    // An enrollment token secret and the edge credential it buys.
    let (s, body) = cp
        .post(
            &cp.at(&format!("/canopy/v1/projects/{P}/enrollment-tokens")),
            &json!({"description": "t"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let enroll_secret = body["secret"].as_str().unwrap().to_string();
    let resp = cp
        .http()
        .post(cp.at("/canopy/v1/agent/enroll"))
        .header(PROTOCOL_HEADER, "1")
        .json(&json!({"protocolVersion": 1, "token": enroll_secret, "name": "e1", "labels": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let credential = resp.json::<Value>().await.unwrap()["credential"]
        .as_str()
        .unwrap()
        .to_string();

    let (records, total) = cp
        .app()
        .store()
        .query_audit(&AuditQuery {
            page_size: Some(500),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert!(total >= 7, "{total}");
    assert_eq!(records.len() as u64, total);
    for r in &records {
        let columns = [
            r.id.to_string(),
            r.at.to_string(),
            r.actor.clone(),
            r.project.clone(),
            r.action.clone(),
            r.target.clone(),
            r.result.clone(),
            r.status.to_string(),
            r.request_id.clone(),
        ];
        for c in columns {
            for s in [
                secret,
                enroll_secret.as_str(),
                credential.as_str(),
                cp.admin_token(),
            ] {
                assert!(!c.contains(s), "secret in the audit log: {r:?}");
            }
        }
    }
    // And the API's rendering of the log holds none either.
    let resp = cp
        .http()
        .get(cp.at("/canopy/v1/audit?pageSize=500"))
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    for s in [secret, enroll_secret.as_str(), credential.as_str()] {
        assert!(!text.contains(s), "secret in the audit API: {text}");
    }
}

#[tokio::test]
async fn agent_traffic_is_not_recorded_but_enrollment_is() {
    let cp = TestControlPlane::start().await;
    let (_, body) = cp
        .post(
            &cp.at(&format!("/canopy/v1/projects/{P}/enrollment-tokens")),
            &json!({"description": "t"}),
        )
        .await;
    let token = body["secret"].as_str().unwrap().to_string();
    let anon = cp.anonymous_http();
    let resp = anon
        .post(cp.at("/canopy/v1/agent/enroll"))
        .header(PROTOCOL_HEADER, "1")
        .json(&json!({"protocolVersion": 1, "token": token, "name": "e1", "labels": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let credential = resp.json::<Value>().await.unwrap()["credential"]
        .as_str()
        .unwrap()
        .to_string();
    for seq in 1..=3 {
        let report = StatusReport {
            protocol_version: 1,
            seq,
            generation: Default::default(),
            apps: vec![],
            agent: None,
        };
        let resp = anon
            .post(cp.at("/canopy/v1/agent/status"))
            .header(PROTOCOL_HEADER, "1")
            .bearer_auth(&credential)
            .json(&report)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let (s, body) = audit(&cp, "action=agent").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let list = entries(&body);
    assert_eq!(list.len(), 1, "{body}");
    assert_eq!(list[0]["action"], "POST /canopy/v1/agent/enroll");
    assert!(
        list[0]["actor"].as_str().unwrap().starts_with("edge:"),
        "the enrolled edge is the actor: {body}"
    );
    assert_eq!(list[0]["status"], 201);
}

#[tokio::test]
async fn unauthenticated_and_unknown_calls_are_recorded_too() {
    let cp = TestControlPlane::start().await;
    let anon = cp.anonymous_http();
    let resp = anon
        .delete(cp.catalog(P, "/registries/helm"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let (s, _) = cp.post(&cp.at("/v3/no/such/path"), &json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, body) = audit(&cp, "").await;
    let list = entries(&body);
    let denied = find(
        &list,
        "DELETE /v3/projects/{projectName}/catalog/registries/{registryName}",
        &format!("/v3/projects/{P}/catalog/registries/helm"),
    )
    .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(denied["actor"], "anonymous");
    assert_eq!(denied["status"], 401);
    assert_eq!(denied["result"], "Unauthorized");
    assert_eq!(denied["project"], P);
    let unknown = find(&list, "POST /v3/no/such/path", "/v3/no/such/path")
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(unknown["status"], 404);
    assert_eq!(unknown["project"], "");
}

#[tokio::test]
async fn filters_and_paging() {
    let cp = TestControlPlane::start().await;
    let alice = cp.user_token("alice", &["default_cat-rw"]).await;
    for name in ["r1", "r2", "r3"] {
        let (s, _) = cp
            .post(&cp.catalog(P, "/registries"), &registry(name, "t"))
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mid = OffsetDateTime::now_utc().format(&Rfc3339).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    for name in ["r1", "r2"] {
        let resp = cp
            .anonymous_http()
            .delete(cp.catalog(P, &format!("/registries/{name}")))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }

    let count = async |q: &str| {
        let (s, b) = audit(&cp, q).await;
        assert_eq!(s, StatusCode::OK, "{q}: {b}");
        b["totalElements"].as_u64().unwrap()
    };
    assert_eq!(count(&format!("project={P}")).await, 5);
    assert_eq!(count(&format!("project={P}&actor=alice")).await, 2);
    assert_eq!(count(&format!("project={P}&actor=admin")).await, 3);
    assert_eq!(count(&format!("project={P}&action=delete")).await, 2);
    assert_eq!(count(&format!("project={P}&action=registries")).await, 5);
    assert_eq!(count(&format!("project={P}&since={mid}")).await, 2);
    assert_eq!(count(&format!("project={P}&until={mid}")).await, 3);
    assert_eq!(
        count("project=nope-nothing").await,
        0,
        "admins may ask about any name"
    );
    // Calls outside projects (the user and token creation) have an empty project.
    assert!(count("project=").await >= 2);

    let (s, b) = audit(&cp, &format!("project={P}&pageSize=2")).await;
    assert_eq!(s, StatusCode::OK);
    let first = entries(&b);
    assert_eq!(first.len(), 2);
    assert_eq!(b["totalElements"], 5);
    assert_eq!(first[0]["actor"], "alice", "newest first: {b}");
    let (_, b) = audit(&cp, &format!("project={P}&pageSize=2&offset=2")).await;
    let second = entries(&b);
    assert_eq!(second.len(), 2);
    assert!(second[0]["id"].as_i64() < first[1]["id"].as_i64(), "{b}");
    let (_, b) = audit(&cp, &format!("project={P}&pageSize=2&offset=4")).await;
    assert_eq!(entries(&b).len(), 1);

    for (q, name) in [
        ("pageSize=501", "pageSize"),
        ("pageSize=-1", "pageSize"),
        ("offset=-1", "offset"),
        ("since=yesterday", "since"),
        ("until=2025-13-01T00:00:00Z", "until"),
        ("colour=red", "colour"),
    ] {
        let (s, b) = audit(&cp, q).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}: {b}");
        assert!(b["message"].as_str().unwrap().contains(name), "{q}: {b}");
    }
}

#[tokio::test]
async fn reading_the_log_needs_write_access_on_the_project() {
    let cp = TestControlPlane::start().await;
    cp.create_project("other").await;
    let reader = cp
        .user_token("reader", &["default_cat-r", "default_ao-r"])
        .await;
    let writer = cp.user_token("writer", &["default_ao-rw"]).await;
    let stranger = cp.user_token("stranger", &["other_cat-rw"]).await;
    let get = async |token: Option<&str>, path: &str| {
        let mut req = cp.anonymous_http().get(cp.at(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let s = resp.status();
        (s, resp.json::<Value>().await.unwrap_or(Value::Null))
    };
    let project_path = format!("/canopy/v1/projects/{P}/audit");
    let filtered = format!("/canopy/v1/audit?project={P}");

    let (s, b) = get(Some(&writer), &project_path).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = get(Some(&writer), &filtered).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // The whole log is for administrators.
    let (s, b) = get(Some(&writer), "/canopy/v1/audit").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    // Read-only roles see the project but may not read its log.
    let (s, b) = get(Some(&reader), &project_path).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    let (s, _) = get(Some(&reader), &filtered).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Another tenant is told the project does not exist, like a missing one.
    let (s, b) = get(Some(&stranger), &project_path).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    let (s, _) = get(Some(&stranger), &filtered).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = get(Some(&stranger), "/canopy/v1/projects/other/audit").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = get(Some(&writer), "/canopy/v1/audit?project=ghost").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = get(None, &project_path).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_audit_paths_are_documented() {
    let cp = TestControlPlane::start().await;
    let (s, doc) = cp.get(&cp.at("/openapi.json")).await;
    assert_eq!(s, StatusCode::OK);
    for path in [
        "/canopy/v1/audit",
        "/canopy/v1/projects/{projectName}/audit",
    ] {
        let op = &doc["paths"][path]["get"];
        assert!(op.is_object(), "{path} missing from the OpenAPI document");
        assert_eq!(op["tags"][0], "Canopy", "{path}");
    }
}
