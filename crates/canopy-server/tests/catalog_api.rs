//! Catalog REST API, end to end over HTTP against a real server and a fresh database per test:
//! the reference's paths, shapes, status codes and business rules.

use canopy_testkit::TestControlPlane;
use reqwest::StatusCode;
use serde_json::{Value, json};

const P: &str = "default";

fn registry(name: &str, kind: &str) -> Value {
    json!({"name": name, "rootUrl": format!("oci://registry.example.com/{name}"), "type": kind,
           "username": "robot", "authToken": "s3cret", "description": "test registry"})
}

fn app(name: &str, version: &str, profiles: &[&str]) -> Value {
    let profiles: Vec<Value> = profiles
        .iter()
        .map(|p| json!({"name": p, "chartValues": format!("greeting: {p}\n")}))
        .collect();
    json!({"name": name, "version": version, "chartName": name, "chartVersion": version,
           "helmRegistryName": "helm", "profiles": profiles,
           "defaultProfileName": profiles.first().map(|p| p["name"].clone()).unwrap_or(json!(""))})
}

fn package(name: &str, version: &str, apps: &[(&str, &str, &str)]) -> Value {
    let refs: Vec<Value> = apps
        .iter()
        .map(|(n, v, _)| json!({"name": n, "version": v}))
        .collect();
    let map: serde_json::Map<String, Value> = apps
        .iter()
        .map(|(n, _, p)| (n.to_string(), json!(p)))
        .collect();
    json!({"name": name, "version": version, "applicationReferences": refs,
           "profiles": [{"name": "default", "applicationProfiles": map}], "defaultProfileName": "default"})
}

async fn seed(cp: &TestControlPlane) {
    let (s, b) = cp
        .post(&cp.catalog(P, "/registries"), &registry("helm", "HELM"))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = cp
        .post(&cp.catalog(P, "/registries"), &registry("images", "IMAGE"))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

fn msg(b: &Value) -> String {
    b["message"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn health_and_unknown_project() {
    let cp = TestControlPlane::start().await;
    let r = cp.http().get(cp.at("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (s, b) = cp.get(&cp.catalog("nope", "/applications")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(msg(&b).contains("project nope not found"), "{b}");
    let (s, _) = cp.get(&cp.at("/v3/nothing/here")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn registries_crud_and_sensitive_fields() {
    let cp = TestControlPlane::start().await;
    seed(&cp).await;
    let (s, b) = cp
        .post(&cp.catalog(P, "/registries"), &registry("helm", "HELM"))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert!(msg(&b).contains("registry helm already exists"), "{b}");

    let (s, b) = cp.get(&cp.catalog(P, "/registries/helm")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        b["registry"].get("authToken").is_none(),
        "secret leaked: {b}"
    );
    assert!(
        b["registry"].get("username").is_none(),
        "secret leaked: {b}"
    );
    assert_eq!(b["registry"]["displayName"], "helm");
    assert!(b["registry"]["createTime"].is_string());

    let (_, b) = cp
        .get(&cp.catalog(P, "/registries/helm?showSensitiveInfo=true"))
        .await;
    assert_eq!(b["registry"]["authToken"], "s3cret");
    let (_, b) = cp
        .get(&cp.catalog(P, "/registries?showSensitiveInfo=true"))
        .await;
    assert_eq!(b["totalElements"], 2);
    assert_eq!(b["registries"][0]["username"], "robot");
    let (_, b) = cp.get(&cp.catalog(P, "/registries")).await;
    assert!(b["registries"][0].get("username").is_none());

    // GET then PUT back (secrets redacted) keeps the stored secrets.
    let (_, got) = cp.get(&cp.catalog(P, "/registries/helm")).await;
    let mut body = got["registry"].clone();
    body["description"] = json!("changed");
    let (s, b) = cp.put(&cp.catalog(P, "/registries/helm"), &body).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, b) = cp
        .get(&cp.catalog(P, "/registries/helm?showSensitiveInfo=true"))
        .await;
    assert_eq!(b["registry"]["description"], "changed");
    assert_eq!(b["registry"]["authToken"], "s3cret");

    // Renaming through PUT is refused.
    let mut renamed = body.clone();
    renamed["name"] = json!("other");
    let (s, b) = cp.put(&cp.catalog(P, "/registries/helm"), &renamed).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(msg(&b).contains("name cannot be changed"), "{b}");

    // Bad fields name the field.
    let (s, b) = cp
        .post(
            &cp.catalog(P, "/registries"),
            &json!({"name": "Bad_Name", "rootUrl": "https://x.y", "type": "HELM"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(msg(&b).contains("name"), "{b}");
    let (s, b) = cp
        .post(
            &cp.catalog(P, "/registries"),
            &json!({"name": "r", "rootUrl": "ftp://x.y", "type": "HELM"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(msg(&b).contains("rootUrl"), "{b}");
    let (s, b) = cp
        .post(
            &cp.catalog(P, "/registries"),
            &json!({"name": "r", "rootUrl": "https://x.y", "type": "HELM", "bogus": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(msg(&b).contains("bogus"), "{b}");

    let (s, _) = cp.delete(&cp.catalog(P, "/registries/images")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = cp.get(&cp.catalog(P, "/registries/images")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn registry_in_use_rules() {
    let cp = TestControlPlane::start().await;
    seed(&cp).await;
    let mut a = app("web", "1.0.0", &["default"]);
    a["imageRegistryName"] = json!("images");
    let (s, b) = cp.post(&cp.catalog(P, "/applications"), &a).await;
    assert_eq!(s, StatusCode::OK, "{b}");

    let (s, b) = cp.delete(&cp.catalog(P, "/registries/helm")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        msg(&b).contains("cannot delete registry while in use"),
        "{b}"
    );
    assert!(msg(&b).contains("web:1.0.0"), "{b}");

    let mut changed = registry("images", "HELM");
    changed["description"] = json!("now helm");
    let (s, b) = cp.put(&cp.catalog(P, "/registries/images"), &changed).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(msg(&b).contains("type cannot change"), "{b}");

    // An application may not point at a registry of the wrong type or a missing one.
    let mut wrong = app("web2", "1.0.0", &["default"]);
    wrong["helmRegistryName"] = json!("images");
    let (s, b) = cp.post(&cp.catalog(P, "/applications"), &wrong).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(msg(&b).contains("expected HELM"), "{b}");
    wrong["helmRegistryName"] = json!("missing");
    let (s, b) = cp.post(&cp.catalog(P, "/applications"), &wrong).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(msg(&b).contains("registry missing not found"), "{b}");
}

#[tokio::test]
async fn applications_and_packages_rules() {
    let cp = TestControlPlane::start().await;
    seed(&cp).await;
    for a in [
        app("web", "1.0.0", &["default", "tuned"]),
        app("web", "1.1.0", &["default"]),
        app("db", "2.0.0", &["small"]),
    ] {
        let (s, b) = cp.post(&cp.catalog(P, "/applications"), &a).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let (s, b) = cp
        .post(
            &cp.catalog(P, "/applications"),
            &app("web", "1.0.0", &["default"]),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");

    // Display names are unique (case-insensitively) across different names, shared across versions.
    let mut dn = app("api", "1.0.0", &["default"]);
    dn["displayName"] = json!("WEB");
    let (s, b) = cp.post(&cp.catalog(P, "/applications"), &dn).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert!(msg(&b).contains("not unique"), "{b}");

    // defaultProfileName must name a profile.
    let mut bad = app("api", "1.0.0", &["default"]);
    bad["defaultProfileName"] = json!("nope");
    let (s, b) = cp.post(&cp.catalog(P, "/applications"), &bad).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(msg(&b).contains("defaultProfileName"), "{b}");

    let (_, b) = cp.get(&cp.catalog(P, "/applications/web/versions")).await;
    assert_eq!(b["application"].as_array().unwrap().len(), 2);

    // Incongruent application profiles.
    let (s, b) = cp
        .post(
            &cp.catalog(P, "/deployment_packages"),
            &package(
                "stack",
                "1.0.0",
                &[("web", "1.0.0", "nope"), ("db", "2.0.0", "small")],
            ),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        msg(&b).contains("application profiles are incongruent"),
        "{b}"
    );
    // Missing application.
    let (s, b) = cp
        .post(
            &cp.catalog(P, "/deployment_packages"),
            &package("stack", "1.0.0", &[("ghost", "1.0.0", "x")]),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(msg(&b).contains("application ghost:1.0.0 not found"), "{b}");

    let pkg = package(
        "stack",
        "1.0.0",
        &[("web", "1.0.0", "tuned"), ("db", "2.0.0", "small")],
    );
    let (s, b) = cp.post(&cp.catalog(P, "/deployment_packages"), &pkg).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["deploymentPackage"]["isVisible"], true);

    let (_, b) = cp
        .get(&cp.catalog(P, "/applications/web/versions/1.0.0/reference_count"))
        .await;
    assert_eq!(b["referenceCount"], 1);
    let (_, b) = cp
        .get(&cp.catalog(P, "/applications/web/versions/1.1.0/reference_count"))
        .await;
    assert_eq!(b["referenceCount"], 0);

    // Referenced applications cannot be deleted; a profile in use cannot be removed.
    let (s, b) = cp
        .delete(&cp.catalog(P, "/applications/web/versions/1.0.0"))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(msg(&b).contains("stack:1.0.0"), "{b}");
    let (s, b) = cp
        .put(
            &cp.catalog(P, "/applications/web/versions/1.0.0"),
            &app("web", "1.0.0", &["default"]),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(msg(&b).contains("profile tuned cannot be removed"), "{b}");

    // Mark deployed: the package and its applications lock.
    let mut deployed = pkg.clone();
    deployed["isDeployed"] = json!(true);
    let (s, b) = cp
        .put(
            &cp.catalog(P, "/deployment_packages/stack/versions/1.0.0"),
            &deployed,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let mut changed = deployed.clone();
    changed["description"] = json!("edited");
    let (s, b) = cp
        .put(
            &cp.catalog(P, "/deployment_packages/stack/versions/1.0.0"),
            &changed,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(msg(&b).contains("cannot modify deployed package"), "{b}");
    let (s, b) = cp
        .delete(&cp.catalog(P, "/deployment_packages/stack/versions/1.0.0"))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(msg(&b).contains("cannot modify deployed package"), "{b}");
    let mut app_changed = app("web", "1.0.0", &["default", "tuned"]);
    app_changed["description"] = json!("new");
    let (s, b) = cp
        .put(
            &cp.catalog(P, "/applications/web/versions/1.0.0"),
            &app_changed,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        msg(&b).contains("please create a new version instead"),
        "{b}"
    );
    // Kind-only changes pass.
    let mut kind_only = app("web", "1.0.0", &["default", "tuned"]);
    kind_only["kind"] = json!("KIND_ADDON");
    let (s, b) = cp
        .put(
            &cp.catalog(P, "/applications/web/versions/1.0.0"),
            &kind_only,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let mut kind_pkg = deployed.clone();
    kind_pkg["kind"] = json!("KIND_EXTENSION");
    let (s, b) = cp
        .put(
            &cp.catalog(P, "/deployment_packages/stack/versions/1.0.0"),
            &kind_pkg,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");

    // Undeploy, then delete works.
    let (s, b) = cp
        .put(
            &cp.catalog(P, "/deployment_packages/stack/versions/1.0.0"),
            &pkg,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _) = cp
        .delete(&cp.catalog(P, "/deployment_packages/stack/versions/1.0.0"))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = cp
        .delete(&cp.catalog(P, "/applications/web/versions/1.0.0"))
        .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn artifacts_mime_and_in_use() {
    let cp = TestControlPlane::start().await;
    seed(&cp).await;
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let (s, b) = cp
        .post(
            &cp.catalog(P, "/artifacts"),
            &json!({"name": "icon", "mimeType": "image/png", "artifact": b64(b"GIF89a fake")}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(msg(&b).contains("PNG"), "{b}");
    let (s, b) = cp.post(&cp.catalog(P, "/artifacts"), &json!({"name": "icon", "mimeType": "application/x-msdownload", "artifact": b64(b"MZ....")})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(msg(&b).contains("mimeType"), "{b}");
    let png = b"\x89PNG\r\n\x1a\nrest-of-png";
    let (s, b) = cp
        .post(
            &cp.catalog(P, "/artifacts"),
            &json!({"name": "icon", "mimeType": "image/png", "artifact": b64(png)}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["artifact"]["artifact"], b64(png));

    cp.post(
        &cp.catalog(P, "/applications"),
        &app("web", "1.0.0", &["default"]),
    )
    .await;
    let mut pkg = package("stack", "1.0.0", &[("web", "1.0.0", "default")]);
    pkg["artifacts"] = json!([{"name": "icon", "purpose": "icon"}]);
    let (s, b) = cp.post(&cp.catalog(P, "/deployment_packages"), &pkg).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = cp.delete(&cp.catalog(P, "/artifacts/icon")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(msg(&b).contains("is in use"), "{b}");
    let mut missing = package("other", "1.0.0", &[("web", "1.0.0", "default")]);
    missing["artifacts"] = json!([{"name": "nothing", "purpose": "icon"}]);
    let (s, b) = cp
        .post(&cp.catalog(P, "/deployment_packages"), &missing)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(msg(&b).contains("artifact nothing not found"), "{b}");
}

#[tokio::test]
async fn list_conventions() {
    let cp = TestControlPlane::start().await;
    seed(&cp).await;
    for i in 0..30 {
        let mut a = app(&format!("app-{i:02}"), "1.0.0", &["default"]);
        a["displayName"] = json!(format!("App Number {i:02}"));
        if i % 3 == 0 {
            a["kind"] = json!("KIND_ADDON");
        }
        let (s, b) = cp.post(&cp.catalog(P, "/applications"), &a).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let (_, b) = cp.get(&cp.catalog(P, "/applications")).await;
    assert_eq!(
        b["applications"].as_array().unwrap().len(),
        20,
        "default page size"
    );
    assert_eq!(b["totalElements"], 30);
    let (_, b) = cp
        .get(&cp.catalog(P, "/applications?pageSize=5&offset=28&orderBy=name"))
        .await;
    let names: Vec<&str> = b["applications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["app-28", "app-29"]);
    let (_, b) = cp
        .get(&cp.catalog(P, "/applications?orderBy=name%20desc&pageSize=1"))
        .await;
    assert_eq!(b["applications"][0]["name"], "app-29");
    let (_, b) = cp
        .get(&cp.catalog(
            P,
            "/applications?filter=name%3Dapp-1*%20OR%20displayName%3Dnumber%2025",
        ))
        .await;
    assert_eq!(b["totalElements"], 11, "{b}");
    let (_, b) = cp
        .get(&cp.catalog(P, "/applications?kinds=KIND_ADDON"))
        .await;
    assert_eq!(b["totalElements"], 10);
    let (_, b) = cp
        .get(&cp.catalog(P, "/applications?kinds=KIND_NORMAL&kinds=KIND_ADDON"))
        .await;
    assert_eq!(b["totalElements"], 30);
    let (_, b) = cp
        .get(&cp.catalog(
            P,
            "/applications?filter=name%3D%27%3B%20DROP%20TABLE%20applications%3B%20--",
        ))
        .await;
    assert_eq!(b["totalElements"], 0);
    let (_, b) = cp.get(&cp.catalog(P, "/applications?pageSize=500")).await;
    assert_eq!(b["totalElements"], 30);
    for bad in [
        "pageSize=-1",
        "pageSize=501",
        "offset=-1",
        "orderBy=name%20sideways",
        "orderBy=nope",
        "filter=nope%3D1",
        "filter=profiles%3Dx",
        "wat=1",
    ] {
        let (s, b) = cp
            .get(&cp.catalog(P, &format!("/applications?{bad}")))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {b}");
        assert!(!msg(&b).is_empty());
    }
    let (s, b) = cp
        .get(&cp.catalog(P, "/registries?filter=rootUrl%3Dx"))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(msg(&b).contains("cannot filter/orderBy"), "{b}");
}

#[tokio::test]
async fn projects_are_isolated() {
    let cp = TestControlPlane::start().await;
    seed(&cp).await;
    cp.create_project("other").await;
    let (_, b) = cp.get(&cp.catalog("other", "/registries")).await;
    assert_eq!(b["totalElements"], 0);
    let (s, _) = cp.get(&cp.catalog("other", "/registries/helm")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = cp
        .post(
            &cp.catalog("other", "/registries"),
            &registry("helm", "IMAGE"),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, b) = cp.get(&cp.catalog(P, "/registries/helm")).await;
    assert_eq!(b["registry"]["type"], "HELM");
}

#[tokio::test]
async fn openapi_document_covers_reference_catalog() {
    let cp = TestControlPlane::start().await;
    let (s, doc) = cp.get(&cp.at("/openapi.json")).await;
    assert_eq!(s, StatusCode::OK);
    let reference = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/reference-openapi/catalog.yaml"
    ))
    .unwrap();
    let reference = canopy_core::yaml::parse_documents(&reference)
        .unwrap()
        .remove(0);
    let mut missing = Vec::new();
    for (path, ops) in reference["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            if doc["paths"][path][method].is_null() {
                missing.push(format!("{method} {path}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "reference operations missing from /openapi.json: {missing:?}"
    );
    assert!(!doc["paths"]["/canopy/v1/projects/{projectName}/catalog/events"]["get"].is_null());
}

#[tokio::test]
async fn more_rules_from_the_reference() {
    let cp = TestControlPlane::start().await;
    seed(&cp).await;
    // Display names are unique per entity type, case-insensitively; spaces around them are refused.
    let mut r = registry("other", "HELM");
    r["displayName"] = json!("HELM");
    let (s, b) = cp.post(&cp.catalog(P, "/registries"), &r).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    r["displayName"] = json!(" padded ");
    let (s, b) = cp.post(&cp.catalog(P, "/registries"), &r).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(msg(&b).contains("displayName"), "{b}");

    cp.post(
        &cp.catalog(P, "/applications"),
        &app("web", "1.0.0", &["default"]),
    )
    .await;
    let (s, b) = cp
        .post(
            &cp.catalog(P, "/deployment_packages"),
            &package("stack", "1.0.0", &[("web", "1.0.0", "default")]),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let mut other = package("other", "1.0.0", &[("web", "1.0.0", "default")]);
    other["displayName"] = json!("Stack");
    let (s, b) = cp
        .post(&cp.catalog(P, "/deployment_packages"), &other)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");

    // The version in the body must match the path.
    let (s, b) = cp
        .put(
            &cp.catalog(P, "/applications/web/versions/1.0.0"),
            &app("web", "2.0.0", &["default"]),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        msg(&b).contains("application web:1.0.0 version cannot be changed"),
        "{b}"
    );

    // Deployment requirements must name an existing package (and profile).
    let mut req = app("needy", "1.0.0", &["default"]);
    req["profiles"][0]["deploymentRequirement"] = json!([{"name": "ghost", "version": "1.0.0"}]);
    let (s, b) = cp.post(&cp.catalog(P, "/applications"), &req).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        msg(&b).contains("deployment-package ghost:1.0.0 not found"),
        "{b}"
    );
    req["profiles"][0]["deploymentRequirement"] =
        json!([{"name": "stack", "version": "1.0.0", "deploymentProfileName": "nope"}]);
    let (s, b) = cp.post(&cp.catalog(P, "/applications"), &req).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(msg(&b).contains("no deployment profile nope"), "{b}");
    req["profiles"][0]["deploymentRequirement"] = json!([{"name": "stack", "version": "1.0.0"}]);
    let (s, b) = cp.post(&cp.catalog(P, "/applications"), &req).await;
    assert_eq!(s, StatusCode::OK, "{b}");

    // Wrong JSON types are 400 naming the field; oversized bodies are 413.
    let (s, b) = cp
        .post(
            &cp.catalog(P, "/registries"),
            &json!({"name": 5, "rootUrl": "https://x.y", "type": "HELM"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(msg(&b).contains("name"), "{b}");
    let huge = json!({"name": "big", "rootUrl": "https://x.y", "type": "HELM", "description": "x".repeat(17 * 1024 * 1024)});
    let (s, _) = cp.post(&cp.catalog(P, "/registries"), &huge).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);

    // Unknown names under /versions are 404; orderBy on timestamps works.
    let (s, _) = cp.get(&cp.catalog(P, "/applications/ghost/versions")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = cp
        .get(&cp.catalog(
            P,
            "/applications?orderBy=createTime%20desc&pageSize=0&filter=name%20%3D%20web",
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["totalElements"], 1);
}

/// The deploy form's data: each application's profile as the renderer selects it, with its
/// parameter templates; unknown packages and profiles are NotFound.
#[tokio::test]
async fn deploy_parameters_follow_the_deployment_profile() {
    use canopy_server::app::{AppError, Principal};
    let cp = TestControlPlane::start().await;
    let (s, b) = cp
        .upload_dir("default", &canopy_testkit::example("web-demo"))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let app = cp.app();
    let ctx = app
        .context(Principal::system(), "default", "test".into())
        .await
        .unwrap();
    let p = app
        .deploy_parameters(&ctx, "web-demo", "1.0.0", "")
        .await
        .unwrap();
    assert_eq!(p.profile, "default", "the package's default");
    let apps: Vec<(&str, &str, Vec<&str>)> = p
        .apps
        .iter()
        .map(|a| {
            (
                a.name.as_str(),
                a.profile.as_str(),
                a.templates.iter().map(|t| t.name.as_str()).collect(),
            )
        })
        .collect();
    assert_eq!(
        apps,
        vec![
            ("web", "default", vec!["port", "greeting"]),
            ("status", "default", vec!["port"])
        ]
    );
    let e = app
        .deploy_parameters(&ctx, "web-demo", "1.0.0", "nope")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, AppError::NotFound(m) if m.contains("deployment profile nope")),
        "{e}"
    );
    let e = app
        .deploy_parameters(&ctx, "web-demo", "9.9.9", "")
        .await
        .unwrap_err();
    assert!(matches!(e, AppError::NotFound(_)), "{e}");
}
