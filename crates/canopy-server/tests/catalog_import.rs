//! Helm chart import (`POST .../catalog/import`) and chart listing (`GET .../catalog/charts`)
//! against the real local chart registries of scripts/helm.sh (plain and basic-auth), over
//! SQLite and PostgreSQL.
//!
//! Without `CANOPY_TEST_CHART_REGISTRY` the tests print a notice and pass, except under CI (`CI`
//! set), where they panic so the coverage cannot silently disappear.

use canopy_testkit::TestControlPlane;
use reqwest::StatusCode;
use serde_json::Value;

const P: &str = "default";

fn env(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "{var} not set but CI is: these tests must not be skipped (scripts/helm.sh)"
                );
            }
            eprintln!("skipping: {var} not set (run scripts/helm.sh and export what it prints)");
            None
        }
    }
}

/// The two registries and the auth registry's credentials.
struct Registries {
    plain: String,
    auth: String,
    user: String,
    password: String,
}

fn registries() -> Option<Registries> {
    Some(Registries {
        plain: env("CANOPY_TEST_CHART_REGISTRY")?,
        auth: env("CANOPY_TEST_CHART_REGISTRY_AUTH")?,
        user: env("CANOPY_TEST_CHART_REGISTRY_USER")?,
        password: env("CANOPY_TEST_CHART_REGISTRY_PASSWORD")?,
    })
}

/// `POST /import` with these query parameters, as `token` (the admin when `None`).
async fn import(
    cp: &TestControlPlane,
    project: &str,
    params: &[(&str, &str)],
    token: Option<&str>,
) -> (StatusCode, Value) {
    let url = cp.catalog(project, "/import");
    let req = match token {
        None => cp.http().post(&url),
        Some(t) => cp.anonymous_http().post(&url).bearer_auth(t),
    };
    cp.send(req.query(params)).await
}

async fn charts(cp: &TestControlPlane, params: &[(&str, &str)]) -> (StatusCode, Value, u64) {
    let url = cp.catalog(P, "/charts");
    let resp = cp.http().get(&url).query(params).send().await.unwrap();
    let status = resp.status();
    let total = resp
        .headers()
        .get("x-total-count")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body, total)
}

fn msg(b: &Value) -> String {
    b["message"].as_str().unwrap_or_default().to_string()
}

async fn count(cp: &TestControlPlane, what: &str) -> u64 {
    let (s, b) = cp.get(&cp.catalog(P, &format!("/{what}"))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["totalElements"].as_u64().unwrap()
}

/// Everything the catalog holds, to check that a refused import wrote nothing.
async fn catalog_state(cp: &TestControlPlane) -> (Value, Value, Value) {
    let get = |what: &'static str| async move {
        let (s, b) = cp
            .get(&cp.catalog(P, &format!("/{what}?showSensitiveInfo=true")))
            .await;
        if s != StatusCode::OK {
            let (s, b) = cp.get(&cp.catalog(P, &format!("/{what}"))).await;
            assert_eq!(s, StatusCode::OK, "{b}");
            return b;
        }
        b
    };
    (
        get("registries").await,
        get("applications").await,
        get("deployment_packages").await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_from_the_plain_registry() {
    let Some(r) = registries() else { return };
    let values = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/charts/canopy-web/values.yaml"
    ))
    .unwrap();
    for cp in TestControlPlane::all().await {
        let url = format!("oci://{}/charts/canopy-web:0.1.0", r.plain);
        let (s, b) = import(
            &cp,
            P,
            &[
                ("url", &url),
                ("generateDefaultValues", "true"),
                ("generateDefaultParameters", "true"),
                ("namespace", "web"),
            ],
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{}: {b}", cp.backend);
        assert_eq!(b["errorMessages"], serde_json::json!([]), "{b}");
        let actions: Vec<&str> = b["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["action"].as_str().unwrap())
            .collect();
        assert_eq!(actions, ["created", "created", "created"], "{b}");

        let (s, reg) = cp
            .get(&cp.catalog(P, "/registries/canopy-web-registry?showSensitiveInfo=true"))
            .await;
        assert_eq!(s, StatusCode::OK, "{reg}");
        let reg = &reg["registry"];
        assert_eq!(reg["type"], "HELM");
        assert_eq!(reg["rootUrl"], format!("oci://{}/charts", r.plain));
        assert!(
            reg.get("username").is_none() && reg.get("authToken").is_none(),
            "{reg}"
        );

        let (s, app) = cp
            .get(&cp.catalog(P, "/applications/canopy-web/versions/0.1.0"))
            .await;
        assert_eq!(s, StatusCode::OK, "{app}");
        let app = &app["application"];
        assert_eq!(app["chartName"], "canopy-web");
        assert_eq!(app["chartVersion"], "0.1.0");
        assert_eq!(app["helmRegistryName"], "canopy-web-registry");
        assert!(
            app["description"]
                .as_str()
                .unwrap()
                .starts_with("Canopy test chart, written by `helm create`"),
            "the description of Chart.yaml: {app}"
        );
        assert_eq!(app["defaultProfileName"], "default");
        let profile = &app["profiles"][0];
        assert_eq!(profile["name"], "default");
        assert_eq!(
            profile["chartValues"],
            values.as_str(),
            "values.yaml verbatim"
        );
        let params = profile["parameterTemplates"].as_array().unwrap();
        let repo = params
            .iter()
            .find(|p| p["name"] == "image.repository")
            .expect("a parameter for image.repository");
        assert_eq!(repo["default"], "localhost/busybox");
        assert_eq!(repo["type"], "string");
        assert!(
            params.iter().all(|p| p["name"] != "replicaCount"),
            "numbers give no parameter (the reference's rule)"
        );

        let (s, pkg) = cp
            .get(&cp.catalog(P, "/deployment_packages/canopy-web/versions/0.1.0"))
            .await;
        assert_eq!(s, StatusCode::OK, "{pkg}");
        let pkg = &pkg["deploymentPackage"];
        assert_eq!(
            pkg["applicationReferences"],
            serde_json::json!([{"name": "canopy-web", "version": "0.1.0"}])
        );
        assert_eq!(pkg["defaultProfileName"], "default");
        assert_eq!(
            pkg["profiles"][0]["applicationProfiles"]["canopy-web"],
            "default"
        );
        assert_eq!(pkg["defaultNamespaces"]["canopy-web"], "web");

        // Importing the same again changes nothing, and says so.
        let (s, b) = import(
            &cp,
            P,
            &[
                ("url", &url),
                ("generateDefaultValues", "true"),
                ("generateDefaultParameters", "true"),
                ("namespace", "web"),
            ],
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert!(
            b["changes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["action"] == "unchanged"),
            "{b}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_from_the_auth_registry_and_refused_credentials() {
    let Some(r) = registries() else { return };
    for cp in TestControlPlane::all().await {
        // No version in the URL: the highest the registry has (0.1.6).
        let url = format!("oci://{}/charts/httpbin", r.auth);

        // Wrong password: the reference's InvalidArgument, naming the registry and chart,
        // never the password; nothing written.
        let before = catalog_state(&cp).await;
        let wrong = "not-the-password-4711";
        let (s, b) = import(
            &cp,
            P,
            &[
                ("url", &url),
                ("username", &r.user),
                ("authToken", wrong),
                ("includeAuth", "true"),
            ],
            None,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{}: {b}", cp.backend);
        let m = msg(&b);
        assert!(m.contains("refused the credentials"), "{m}");
        assert!(m.contains(&r.auth) && m.contains("httpbin"), "{m}");
        assert!(
            !b.to_string().contains(wrong),
            "the password is echoed: {b}"
        );
        // No credentials at all.
        let (s, b) = import(&cp, P, &[("url", &url)], None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        assert!(msg(&b).contains("requires credentials"), "{b}");
        assert_eq!(
            catalog_state(&cp).await,
            before,
            "a refused import wrote something"
        );

        // Right credentials, stored with includeAuth.
        let (s, b) = import(
            &cp,
            P,
            &[
                ("url", &url),
                ("username", &r.user),
                ("authToken", &r.password),
                ("includeAuth", "true"),
            ],
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert!(!b.to_string().contains(&r.password), "{b}");
        let (s, reg) = cp
            .get(&cp.catalog(P, "/registries/httpbin-registry?showSensitiveInfo=true"))
            .await;
        assert_eq!(s, StatusCode::OK, "{reg}");
        assert_eq!(reg["registry"]["username"], r.user.as_str());
        assert_eq!(reg["registry"]["authToken"], r.password.as_str());
        let (s, app) = cp
            .get(&cp.catalog(P, "/applications/httpbin/versions/0.1.6"))
            .await;
        assert_eq!(s, StatusCode::OK, "{app}");
        // Neither values nor parameters asked for: an empty profile.
        assert_eq!(app["application"]["profiles"][0]["chartValues"], "");

        // The registry's stored credentials list its charts and versions.
        let (s, names, total) = charts(&cp, &[("registry", "httpbin-registry")]).await;
        assert_eq!(s, StatusCode::OK, "{names}");
        let names: Vec<&str> = names
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"httpbin") && names.contains(&"canopy-web"),
            "{names:?}"
        );
        assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted: {names:?}");
        assert_eq!(total, names.len() as u64);
        let (s, versions, _) = charts(
            &cp,
            &[("registry", "httpbin-registry"), ("chart", "httpbin")],
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{versions}");
        assert_eq!(versions, serde_json::json!(["0.1.6"]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_errors_and_conflicts() {
    let Some(r) = registries() else { return };
    for cp in TestControlPlane::all().await {
        let before = catalog_state(&cp).await;
        // A chart that does not exist, and a version that does not.
        let url = format!("oci://{}/charts/no-such-chart:1.0.0", r.plain);
        let (s, b) = import(&cp, P, &[("url", &url)], None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{}: {b}", cp.backend);
        assert!(msg(&b).contains("no-such-chart:1.0.0"), "{b}");
        let url = format!("oci://{}/charts/canopy-web:9.9.9", r.plain);
        let (s, b) = import(&cp, P, &[("url", &url)], None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        assert!(
            msg(&b).contains("canopy-web:9.9.9") && msg(&b).contains("not found"),
            "{b}"
        );
        // Bad requests.
        let good = format!("oci://{}/charts/canopy-web:0.1.0", r.plain);
        for (params, expect) in [
            (vec![], "url is required"),
            (vec![("url", "https://x.example/web:1.0.0")], "oci://"),
            (
                vec![
                    ("url", good.as_str()),
                    ("chartValues", "a: 1"),
                    ("generateDefaultValues", "true"),
                ],
                "cannot be used together",
            ),
            (
                vec![("url", good.as_str()), ("chartValues", "- a\n- b\n")],
                "chartValues of chart canopy-web:0.1.0",
            ),
            (vec![("url", good.as_str()), ("bogus", "1")], "bogus"),
        ] {
            let (s, b) = import(&cp, P, &params, None).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{params:?}: {b}");
            assert!(msg(&b).contains(expect), "{params:?}: {b}");
        }
        assert_eq!(
            catalog_state(&cp).await,
            before,
            "a refused import wrote something"
        );

        // Import, deploy (isDeployed), then import with other values: refused as the reference
        // refuses changing a deployed package's application, and nothing is half applied (the
        // registry's credentials, changed first in the transaction, are not stored).
        let (s, b) = import(&cp, P, &[("url", &good), ("chartValues", "a: 1\n")], None).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let pkg_url = cp.catalog(P, "/deployment_packages/canopy-web/versions/0.1.0");
        let (_, pkg) = cp.get(&pkg_url).await;
        let mut pkg = pkg["deploymentPackage"].clone();
        pkg["isDeployed"] = Value::Bool(true);
        let (s, b) = cp.put(&pkg_url, &pkg).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let (s, b) = import(
            &cp,
            P,
            &[
                ("url", &good),
                ("chartValues", "a: 2\n"),
                ("username", "someone"),
                ("authToken", "a-token-never-echoed"),
                ("includeAuth", "true"),
            ],
            None,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        assert!(msg(&b).contains("deployed"), "{b}");
        assert!(!b.to_string().contains("a-token-never-echoed"), "{b}");
        let (_, reg) = cp
            .get(&cp.catalog(P, "/registries/canopy-web-registry?showSensitiveInfo=true"))
            .await;
        assert!(
            reg["registry"].get("username").is_none(),
            "half applied: {reg}"
        );
        // The same import again is fine, and leaves the package deployed.
        let (s, b) = import(&cp, P, &[("url", &good), ("chartValues", "a: 1\n")], None).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let (_, pkg) = cp.get(&pkg_url).await;
        assert_eq!(pkg["deploymentPackage"]["isDeployed"], true, "{pkg}");
        assert_eq!(count(&cp, "registries").await, count_before(&before) + 1);
    }
}

fn count_before(state: &(Value, Value, Value)) -> u64 {
    state.0["totalElements"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_list_and_versions() {
    let Some(r) = registries() else { return };
    for cp in TestControlPlane::all().await {
        let reg = serde_json::json!({"name": "local", "type": "HELM",
            "rootUrl": format!("oci://{}/charts", r.plain)});
        let (s, b) = cp.post(&cp.catalog(P, "/registries"), &reg).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let (s, all, total) = charts(&cp, &[("registry", "local")]).await;
        assert_eq!(s, StatusCode::OK, "{}: {all}", cp.backend);
        let all: Vec<String> = serde_json::from_value(all).unwrap();
        for c in ["canopy-web", "canopy-pair", "httpbin", "tutorial-server"] {
            assert!(all.iter().any(|n| n == c), "{c} in {all:?}");
        }
        assert_eq!(total, all.len() as u64);
        // Canopy's paging: pageSize and offset over the sorted names.
        let (s, page, total2) = charts(
            &cp,
            &[("registry", "local"), ("pageSize", "2"), ("offset", "1")],
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{page}");
        assert_eq!(page, serde_json::json!(all[1..3]));
        assert_eq!(total2, total);
        let (s, v, _) = charts(&cp, &[("registry", "local"), ("chart", "canopy-web")]).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v, serde_json::json!(["0.1.0"]));
        // Missing things.
        let (s, b, _) = charts(&cp, &[("registry", "local"), ("chart", "no-such-chart")]).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
        assert!(msg(&b).contains("no-such-chart"), "{b}");
        let (s, b, _) = charts(&cp, &[("registry", "nope")]).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
        assert!(msg(&b).contains("registry nope not found"), "{b}");
        let (s, b, _) = charts(&cp, &[("chart", "web")]).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        // An IMAGE registry holds no charts.
        let img = serde_json::json!({"name": "images", "type": "IMAGE",
            "rootUrl": format!("oci://{}/images", r.plain)});
        let (s, b) = cp.post(&cp.catalog(P, "/registries"), &img).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let (s, b, _) = charts(&cp, &[("registry", "images")]).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        // The auth registry without stored credentials: refused, saying what to set.
        let reg = serde_json::json!({"name": "locked", "type": "HELM",
            "rootUrl": format!("oci://{}/charts", r.auth)});
        let (s, b) = cp.post(&cp.catalog(P, "/registries"), &reg).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let (s, b, _) = charts(&cp, &[("registry", "locked"), ("chart", "httpbin")]).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        assert!(msg(&b).contains("requires credentials"), "{b}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_users_cannot_import_but_can_list() {
    let Some(r) = registries() else { return };
    let cp = TestControlPlane::start().await;
    let reader = cp.user_token("reader", &["default_cat-r"]).await;
    let url = format!("oci://{}/charts/canopy-web:0.1.0", r.plain);
    let (s, b) = import(&cp, P, &[("url", &url)], Some(&reader)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert_eq!(count(&cp, "applications").await, 0);
    let (s, b) = import(&cp, P, &[("url", &url)], None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let resp = cp
        .anonymous_http()
        .get(cp.catalog(P, "/charts"))
        .bearer_auth(&reader)
        .query(&[("registry", "canopy-web-registry"), ("chart", "canopy-web")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_registries_are_not_overwritten() {
    let Some(r) = registries() else { return };
    let cp = TestControlPlane::start_configured(|c| {
        c.tenancy.default_registries = vec![canopy_core::catalog::Registry {
            name: "canopy-web-registry".into(),
            root_url: "oci://registry.example.com/system".into(),
            registry_type: "HELM".into(),
            ..Default::default()
        }];
    })
    .await;
    cp.create_project("shop").await;
    let url = format!("oci://{}/charts/canopy-web:0.1.0", r.plain);
    let (s, b) = import(&cp, "shop", &[("url", &url)], None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(msg(&b).contains("system registry"), "{b}");
    let (s, reg) = cp
        .get(&cp.catalog("shop", "/registries/canopy-web-registry"))
        .await;
    assert_eq!(s, StatusCode::OK, "{reg}");
    assert_eq!(
        reg["registry"]["rootUrl"],
        "oci://registry.example.com/system"
    );
    let (s, b) = cp
        .get(&cp.catalog("shop", "/applications/canopy-web/versions/0.1.0"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
}

/// What 32 callers importing from a registry that never answers cost: one registry operation
/// at a time here (`parallelism` 1), the others wait at most `queue_wait` and are refused with
/// 503 (`Busy`, a `Retry-After`), and the one running ends at `operation_timeout`. No registry
/// connection, memory or time beyond those bounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_imports_are_bounded() {
    use canopy_server::app::{AppConfig, AppError, ChartLimits, Principal};
    use std::time::{Duration, Instant};

    // A "registry" that accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let (store, _dir) = canopy_store::testing::fresh_sqlite().await;
    let app = canopy_server::App::with_options(
        store,
        AppConfig {
            charts: ChartLimits {
                parallelism: 1,
                queue_wait: Duration::from_millis(300),
                operation_timeout: Duration::from_secs(3),
            },
            ..AppConfig::default()
        },
    )
    .await
    .unwrap();
    let ctx = app
        .context(Principal::system(), P, "hostile".into())
        .await
        .unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (app, ctx) = (app.clone(), ctx.clone());
        let q = format!("url=oci%3A%2F%2F{addr}%2Fcharts%2Fhuge-{i}%3A1.0.0");
        tasks.push(tokio::spawn(async move {
            app.import_chart(&ctx, Some(&q), &[]).await
        }));
        if i == 0 {
            // Let the first one take the only turn.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (mut busy, mut timed_out) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Err(AppError::Busy { retry_after, .. }) => {
                assert!(retry_after > 0);
                busy += 1;
            }
            Err(AppError::Unavailable(m)) => {
                assert!(
                    m.contains("took longer than 3 s") && m.contains("huge-0"),
                    "{m}"
                );
                timed_out += 1;
            }
            other => panic!("unexpected: {other:?}"),
        }
    }
    assert_eq!((busy, timed_out), (31, 1));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "bounded by the operation timeout: {:?}",
        started.elapsed()
    );
    let (_, registries) = app.list_registries(&ctx, None).await.unwrap();
    assert_eq!(registries, 0, "nothing written");
    held.abort();
}

/// Values larger than a query string holds (about 64 KiB) go in the request body (Canopy
/// extension); the query's `chartValues` and a body together are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_in_the_body() {
    let Some(r) = registries() else { return };
    for cp in TestControlPlane::all().await {
        let url = format!("oci://{}/charts/canopy-web:0.1.0", r.plain);
        let values = format!("big: \"{}\"\n", "x".repeat(300 * 1024));
        let req = cp
            .http()
            .post(cp.catalog(P, "/import"))
            .query(&[("url", url.as_str())])
            .header("content-type", "application/yaml")
            .body(values.clone());
        let (s, b) = cp.send(req).await;
        assert_eq!(s, StatusCode::OK, "{}: {b}", cp.backend);
        let (_, app) = cp
            .get(&cp.catalog(P, "/applications/canopy-web/versions/0.1.0"))
            .await;
        assert_eq!(
            app["application"]["profiles"][0]["chartValues"],
            values.as_str()
        );
        let req = cp
            .http()
            .post(cp.catalog(P, "/import"))
            .query(&[("url", url.as_str()), ("chartValues", "a: 1")])
            .body("b: 2\n");
        let (s, b) = cp.send(req).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        assert!(msg(&b).contains("chartValues given twice"), "{b}");
    }
}
