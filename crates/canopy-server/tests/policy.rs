//! The project policy end to end over HTTP (`/canopy/v1/projects/{projectName}/policy`), with a
//! simulated agent standing in for the edge: who may read and set it, what a bad policy gets,
//! and enforcement wherever apps are rendered for edges (create, update, upgrade): a violation
//! is a 400 naming the application, the field, the
//! value and the rule, and nothing is applied; running deployments are not touched by a policy
//! change. Also, end to end: values are data (issue 14, item 9) and secret values never appear
//! in errors (item 14).

use std::time::Duration;

use canopy_server::hub::HubConfig;
use canopy_testkit::sim_agent::SimAgent;
use canopy_testkit::{TestControlPlane, example};
use reqwest::StatusCode;
use serde_json::{Value, json};

const P: &str = "default";

fn fast() -> HubConfig {
    HubConfig {
        heartbeat: Duration::from_secs(1),
        edge_timeout: Duration::from_secs(30),
        no_target_grace: Duration::from_secs(3),
    }
}

fn policy_url(cp: &TestControlPlane, project: &str) -> String {
    cp.at(&format!("/canopy/v1/projects/{project}/policy"))
}

fn deployments_url(cp: &TestControlPlane, rest: &str) -> String {
    cp.at(&format!("/v1/projects/{P}/appdeployment/deployments{rest}"))
}

async fn set_policy(cp: &TestControlPlane, policy: Value) {
    let (s, b) = cp.put(&policy_url(cp, P), &policy).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

async fn enroll(cp: &TestControlPlane) -> SimAgent {
    let (s, b) = cp
        .post(
            &cp.at(&format!("/canopy/v1/projects/{P}/enrollment-tokens")),
            &json!({"description": "policy"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    SimAgent::enroll(cp, b["secret"].as_str().unwrap(), "e1", &[("site", "a")]).await
}

fn web_demo(version: &str) -> Value {
    json!({"appName": "web-demo", "appVersion": version, "allAppTargetClusters": {"labels": {"site": "a"}}})
}

/// `message` of an error body.
fn message(b: &Value) -> &str {
    b["message"].as_str().unwrap_or_default()
}

async fn deployment_count(cp: &TestControlPlane) -> usize {
    let (s, b) = cp.get(&deployments_url(cp, "")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["deployments"].as_array().unwrap().len()
}

async fn is_deployed(cp: &TestControlPlane, version: &str) -> bool {
    let (_, b) = cp
        .get(&cp.catalog(
            P,
            &format!("/deployment_packages/web-demo/versions/{version}"),
        ))
        .await;
    b["deploymentPackage"]["isDeployed"].as_bool().unwrap()
}

async fn send_as(
    cp: &TestControlPlane,
    token: &str,
    method: reqwest::Method,
    url: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut req = cp.anonymous_http().request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn who_reads_and_sets_the_policy_and_what_a_bad_one_gets() {
    let cp = TestControlPlane::start().await;
    // The default: everything allowed.
    let (s, b) = cp.get(&policy_url(&cp, P)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        b,
        json!({
            "allowedImageRegistries": ["*"],
            "allowedHostPorts": {"min": 1, "max": 65535},
            "defaultResources": {},
            "maxResources": {},
            "allowedVmImageHosts": ["*"],
            "allowFileUrls": true
        })
    );
    let reader = cp.user_token("reader", &["default_cat-r"]).await;
    let writer = cp
        .user_token("writer", &["default_cat-rw", "default_ao-rw"])
        .await;
    let careful = json!({
        "allowedImageRegistries": ["registry.example.com/edge", "docker.io/library"],
        "allowedHostPorts": {"min": 30000, "max": 32767},
        "defaultResources": {"cpus": 0.5, "memory": "256Mi"},
        "maxResources": {"cpus": 2, "memory": "2Gi"},
        "allowedVmImageHosts": ["images.example.com"],
        "allowFileUrls": false
    });
    // Writers of the catalog and of deployments are what the policy restricts: they may not
    // set it.
    let (s, b) = send_as(
        &cp,
        &writer,
        reqwest::Method::PUT,
        &policy_url(&cp, P),
        Some(&careful),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert!(message(&b).contains("canopy-admin"), "{b}");
    // The administrator sets it; everybody with a role reads it.
    let (s, b) = cp.put(&policy_url(&cp, P), &careful).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = send_as(
        &cp,
        &reader,
        reqwest::Method::GET,
        &policy_url(&cp, P),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        b["allowedImageRegistries"],
        careful["allowedImageRegistries"]
    );
    assert_eq!(b["maxResources"]["memory"], "2Gi");
    // Fields left out take their default.
    let (s, b) = cp
        .put(&policy_url(&cp, P), &json!({"allowFileUrls": false}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["allowedImageRegistries"], json!(["*"]));
    assert_eq!(b["allowFileUrls"], false);
    // Bad policies: 400 naming the field, nothing stored.
    for (bad, field) in [
        (
            json!({"allowedImageRegistries": ["https://registry.example.com"]}),
            "allowedImageRegistries[0]",
        ),
        (
            json!({"allowedVmImageHosts": ["ok.example.com", "bad host"]}),
            "allowedVmImageHosts[1]",
        ),
        (
            json!({"allowedHostPorts": {"min": 40000, "max": 30000}}),
            "allowedHostPorts",
        ),
        (
            json!({"maxResources": {"memory": "1Gi"}}),
            "defaultResources.memory",
        ),
        (
            json!({"defaultResources": {"cpus": -1}}),
            "defaultResources.cpus",
        ),
        (
            json!({"allowedImageRegistries": vec!["r.example.com"; 101]}),
            "allowedImageRegistries",
        ),
    ] {
        let (s, b) = cp.put(&policy_url(&cp, P), &bad).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {b}");
        assert!(message(&b).contains(field), "{field}: {b}");
    }
    let (s, b) = cp
        .put(&policy_url(&cp, P), &json!({"allowedRegistries": ["*"]}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "unknown field: {b}");
    let (_, b) = cp.get(&policy_url(&cp, P)).await;
    assert_eq!(
        b["allowFileUrls"], false,
        "a refused PUT changed the policy: {b}"
    );
    // Unknown project: 404 for the administrator.
    let (s, _) = cp.put(&policy_url(&cp, "nope"), &json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Documented in the OpenAPI document, with the policy's schema.
    let (s, doc) = cp.get(&cp.at("/openapi.json")).await;
    assert_eq!(s, StatusCode::OK);
    let path = &doc["paths"]["/canopy/v1/projects/{projectName}/policy"];
    assert!(path["get"].is_object() && path["put"].is_object(), "{path}");
    let schema = &doc["components"]["schemas"]["ProjectPolicy"]["properties"];
    for field in [
        "allowedImageRegistries",
        "allowedHostPorts",
        "defaultResources",
        "maxResources",
        "allowedVmImageHosts",
        "allowFileUrls",
    ] {
        assert!(
            schema[field].is_object(),
            "{field} missing from the schema: {schema}"
        );
    }
}

#[tokio::test]
async fn the_policy_is_enforced_at_create_update_and_upgrade() {
    let cp = TestControlPlane::start_fleet(fast()).await;
    for dir in ["web-demo", "web-demo-1.1.0"] {
        let (s, b) = cp.upload_dir(P, &example(dir)).await;
        assert_eq!(s, StatusCode::OK, "upload {dir}: {b}");
    }
    let mut edge = enroll(&cp).await;

    // Images from a registry the policy does not name: 400 naming app, field, value, rule.
    set_policy(
        &cp,
        json!({"allowedImageRegistries": ["registry.example.com/edge"]}),
    )
    .await;
    let (s, b) = cp.post(&deployments_url(&cp, ""), &web_demo("1.0.0")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let m = message(&b);
    for part in [
        "application web:1.0.0",
        "containers[0].image",
        "docker.io/library/busybox:1.37",
        "allowedImageRegistries",
        "registry.example.com/edge",
    ] {
        assert!(m.contains(part), "{part:?} missing: {m}");
    }
    assert_eq!(deployment_count(&cp).await, 0, "nothing is applied");
    assert!(!is_deployed(&cp, "1.0.0").await);

    // Host ports outside the range.
    set_policy(&cp, json!({"allowedImageRegistries": ["docker.io/library"], "allowedHostPorts": {"min": 30000, "max": 32767}})).await;
    let (s, b) = cp.post(&deployments_url(&cp, ""), &web_demo("1.0.0")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let m = message(&b);
    for part in [
        "containers[0].ports[0].hostPort",
        "18080",
        "allowedHostPorts is 30000-32767",
    ] {
        assert!(m.contains(part), "{part:?} missing: {m}");
    }
    assert_eq!(deployment_count(&cp).await, 0);

    // Within the policy (host ports from override values), with default limits filled in and
    // a maximum the templates stay under.
    set_policy(
        &cp,
        json!({
            "allowedImageRegistries": ["docker.io/library"],
            "allowedHostPorts": {"min": 30000, "max": 32767},
            "defaultResources": {"cpus": 0.25, "memory": "32Mi"},
            "maxResources": {"cpus": 1, "memory": "64Mi"}
        }),
    )
    .await;
    let mut body = web_demo("1.0.0");
    body["overrideValues"] = json!([
        {"appName": "web", "values": {"port": "30080"}},
        {"appName": "status", "values": {"port": "30081"}}
    ]);
    let (s, b) = cp.post(&deployments_url(&cp, ""), &body).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let id = b["deploymentId"].as_str().unwrap().to_string();
    let d = edge.poll(10).await.expect("a desired state");
    let apps = &d.deployments[0].apps;
    let web = apps.iter().find(|a| a.name == "web").unwrap();
    assert_eq!(web.containers[0].ports[0].host_port, Some(30080));
    // The template's memory limit is kept, the missing CPU limit is the policy's default.
    assert_eq!(web.containers[0].memory_bytes, Some(64 << 20));
    assert_eq!(web.containers[0].cpus, Some(0.25));
    let generation = d.generation;

    // A stricter policy leaves the running deployment alone...
    set_policy(
        &cp,
        json!({
            "allowedImageRegistries": ["docker.io/library"],
            "allowedHostPorts": {"min": 30000, "max": 32767},
            "defaultResources": {"cpus": 0.25, "memory": "32Mi"},
            "maxResources": {"cpus": 1, "memory": "48Mi"}
        }),
    )
    .await;
    let (s, b) = cp.get(&deployments_url(&cp, &format!("/{id}"))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(
        edge.poll(1).await.is_none(),
        "a policy change reached the edge"
    );
    // ...and its next update is checked, and refused as a whole.
    let mut update = b["deployment"].clone();
    update["displayName"] = json!("renamed");
    let (s, b) = cp
        .put(&deployments_url(&cp, &format!("/{id}")), &update)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let m = message(&b);
    for part in [
        "application web:1.0.0",
        "containers[0].resources.memory",
        "67108864 bytes",
        "maxResources.memory is 48Mi",
    ] {
        assert!(m.contains(part), "{part:?} missing: {m}");
    }
    let (_, b) = cp.get(&deployments_url(&cp, &format!("/{id}"))).await;
    assert_ne!(
        b["deployment"]["displayName"], "renamed",
        "half applied: {b}"
    );
    assert!(edge.poll(1).await.is_none());
    assert_eq!(edge.held.generation, generation);

    // An upgrade is checked too.
    set_policy(
        &cp,
        json!({
            "allowedImageRegistries": ["docker.io/library"],
            "allowedHostPorts": {"min": 30000, "max": 32767},
            "defaultResources": {"cpus": 0.25},
            "maxResources": {"cpus": 0.5}
        }),
    )
    .await;
    let mut upgrade = update.clone();
    upgrade["appVersion"] = json!("1.1.0");
    upgrade["overrideValues"] = json!([
        {"appName": "web", "values": {"port": "30080"}},
        {"appName": "status", "values": {"port": "30081"}}
    ]);
    let (s, b) = cp
        .put(&deployments_url(&cp, &format!("/{id}")), &upgrade)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(is_deployed(&cp, "1.1.0").await);
    set_policy(
        &cp,
        json!({"allowedImageRegistries": ["registry.example.com"]}),
    )
    .await;
    let mut back = upgrade.clone();
    back["appVersion"] = json!("1.0.0");
    let (s, b) = cp
        .put(&deployments_url(&cp, &format!("/{id}")), &back)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(message(&b).contains("allowedImageRegistries"), "{b}");
    assert!(is_deployed(&cp, "1.1.0").await && !is_deployed(&cp, "1.0.0").await);
}

#[tokio::test]
async fn vm_files_are_checked_against_hosts_and_file_urls() {
    let cp = TestControlPlane::start_fleet(fast()).await;
    let (s, b) = cp.upload_dir(P, &example("edge-demo")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let sha = "1".repeat(64);
    let deploy = |kernel: &str| {
        json!({"appName": "edge-demo", "appVersion": "1.0.0",
            "allAppTargetClusters": {"labels": {"site": "a"}},
            "overrideValues": [{"appName": "vm", "values": {
                "kernelUrl": kernel, "kernelSha256": sha,
                "initrdUrl": "https://images.example.com/initrd.img", "initrdSha256": sha}}]})
    };
    set_policy(
        &cp,
        json!({"allowFileUrls": false, "allowedVmImageHosts": ["images.example.com"]}),
    )
    .await;
    let (s, b) = cp
        .post(
            &deployments_url(&cp, ""),
            &deploy("file:///var/cache/vmlinuz"),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let m = message(&b);
    for part in [
        "application vm:1.0.0",
        "vms[0].kernel.url",
        "file:///var/cache/vmlinuz",
        "allowFileUrls is false",
    ] {
        assert!(m.contains(part), "{part:?} missing: {m}");
    }
    // The classic blind request from inside the edge network.
    let (s, b) = cp
        .post(
            &deployments_url(&cp, ""),
            &deploy("http://169.254.169.254/latest/meta-data"),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let m = message(&b);
    for part in [
        "vms[0].kernel.url",
        "host 169.254.169.254",
        "allowedVmImageHosts is images.example.com",
    ] {
        assert!(m.contains(part), "{part:?} missing: {m}");
    }
    let (s, b) = cp
        .post(
            &deployments_url(&cp, ""),
            &deploy("https://images.example.com:8443/vmlinuz"),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "another port: {b}");
    assert_eq!(deployment_count(&cp).await, 0);
    let (s, b) = cp
        .post(
            &deployments_url(&cp, ""),
            &deploy("https://images.example.com/vmlinuz"),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

/// The attack of item 9 over the API: a label with newlines stays one env value; the edge gets
/// one container.
#[tokio::test]
async fn a_value_cannot_add_a_container_on_the_edge() {
    let cp = TestControlPlane::start_fleet(fast()).await;
    let app = "specSchema: Application\nschemaVersion: \"0.1\"\n$schema: \"https://schema.intel.com/catalog.orchestrator/0.1/schema\"\nname: labelled\ndescription: d\nversion: 1.0.0\nworkloadTemplate: |\n  containers:\n    - name: main\n      image: localhost/busybox:canopy-test\n      env:\n        X: {{ values.label }}\ndefaultProfile: default\nprofiles:\n  - name: default\n    chartValues: \"label: plain\"\n";
    let pkg = "specSchema: DeploymentPackage\nschemaVersion: \"0.1\"\n$schema: \"https://schema.intel.com/catalog.orchestrator/0.1/schema\"\nname: labelled-pkg\ndescription: d\nversion: 1.0.0\napplications:\n  - {name: labelled, version: 1.0.0}\n";
    let (s, b) = cp
        .upload(
            P,
            vec![
                ("a.yaml".into(), app.as_bytes().to_vec()),
                ("p.yaml".into(), pkg.as_bytes().to_vec()),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let mut edge = enroll(&cp).await;
    let label = "x\n    - name: miner\n      image: evil.example.com/miner\n      ports: [{containerPort: 22, hostPort: 2222}]";
    let (s, b) = cp
        .post(
            &deployments_url(&cp, ""),
            &json!({"appName": "labelled-pkg", "appVersion": "1.0.0",
            "allAppTargetClusters": {"labels": {"site": "a"}},
            "overrideValues": [{"appName": "labelled", "values": {"label": label}}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let d = edge.poll(10).await.expect("a desired state");
    let containers = &d.deployments[0].apps[0].containers;
    assert_eq!(containers.len(), 1, "{containers:?}");
    assert_eq!(containers[0].env["X"], label);
    assert!(containers[0].ports.is_empty());
}

/// Item 14 over the API: a secret's value appears in no error, whichever check fails.
#[tokio::test]
async fn secret_values_appear_in_no_error() {
    let cp = TestControlPlane::start_fleet(fast()).await;
    let app = "specSchema: Application\nschemaVersion: \"0.1\"\n$schema: \"https://schema.intel.com/catalog.orchestrator/0.1/schema\"\nname: vault\ndescription: d\nversion: 1.0.0\nworkloadTemplate: |\n  containers:\n    - name: main\n      image: \"registry.example.com/vault:{{ values.tag }}\"\n      env:\n        PIN: {{ values.pin | tojson }}\n      ports: [{containerPort: 80, hostPort: {{ values.port }}}]\ndefaultProfile: default\nprofiles:\n  - name: default\n    chartValues: \"port: 30080\"\n    parameterTemplates:\n      - {name: pin, displayName: PIN, type: number, mandatory: true, secret: true}\n      - {name: tag, displayName: Tag, type: string, mandatory: true, secret: true}\n      - {name: port, displayName: Port, type: number, secret: true}\n";
    let pkg = "specSchema: DeploymentPackage\nschemaVersion: \"0.1\"\n$schema: \"https://schema.intel.com/catalog.orchestrator/0.1/schema\"\nname: vault-pkg\ndescription: d\nversion: 1.0.0\napplications:\n  - {name: vault, version: 1.0.0}\n";
    let (s, b) = cp
        .upload(
            P,
            vec![
                ("a.yaml".into(), app.as_bytes().to_vec()),
                ("p.yaml".into(), pkg.as_bytes().to_vec()),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let deploy = |values: Value| {
        json!({"appName": "vault-pkg", "appVersion": "1.0.0",
            "allAppTargetClusters": {"labels": {"site": "a"}},
            "overrideValues": [{"appName": "vault", "values": values}]})
    };
    // Coercion (the issue's own example).
    let (s, b) = cp
        .post(
            &deployments_url(&cp, ""),
            &deploy(json!({"pin": "SECRET-4711", "tag": "1"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(!b.to_string().contains("SECRET-4711"), "{b}");
    assert!(
        message(&b).contains("values.pin") && message(&b).contains("number"),
        "{b}"
    );
    // The rendered document's checks.
    let (s, b) = cp
        .post(
            &deployments_url(&cp, ""),
            &deploy(json!({"pin": 1, "tag": "SECRET tag with spaces"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(!b.to_string().contains("SECRET tag"), "{b}");
    assert!(message(&b).contains("containers[0].image"), "{b}");
    // The policy's checks.
    set_policy(&cp, json!({"allowedImageRegistries": ["docker.io"], "allowedHostPorts": {"min": 30000, "max": 30010}})).await;
    let (s, b) = cp
        .post(
            &deployments_url(&cp, ""),
            &deploy(json!({"pin": 1, "tag": "SECRET-tag-0815"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(!b.to_string().contains("SECRET-tag-0815"), "{b}");
    assert!(
        message(&b).contains("allowedImageRegistries") && message(&b).contains("********"),
        "{b}"
    );
    set_policy(
        &cp,
        json!({"allowedHostPorts": {"min": 30000, "max": 30010}}),
    )
    .await;
    let (s, b) = cp
        .post(
            &deployments_url(&cp, ""),
            &deploy(json!({"pin": 1, "tag": "1", "port": 31337})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(!b.to_string().contains("31337"), "{b}");
    assert!(
        message(&b).contains("containers[0].ports[0].hostPort"),
        "{b}"
    );
    // Mandatory.
    let (s, b) = cp
        .post(
            &deployments_url(&cp, ""),
            &deploy(json!({"tag": "SECRET-x"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(!b.to_string().contains("SECRET-x"), "{b}");
    assert!(message(&b).contains("pin"), "{b}");
    assert_eq!(deployment_count(&cp).await, 0);
}

/// The policy is stored and read in the deployment's transaction on both backends.
#[tokio::test]
async fn policy_is_stored_and_enforced_on_every_backend() {
    for cp in TestControlPlane::all().await {
        let (s, b) = cp.upload_dir(P, &example("web-demo")).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        set_policy(
            &cp,
            json!({"allowedHostPorts": {"min": 20000, "max": 20100}}),
        )
        .await;
        let (s, b) = cp.get(&policy_url(&cp, P)).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["allowedHostPorts"], json!({"min": 20000, "max": 20100}));
        let (s, b) = cp.post(&deployments_url(&cp, ""), &web_demo("1.0.0")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        assert!(
            message(&b).contains("allowedHostPorts is 20000-20100"),
            "{b}"
        );
        assert_eq!(deployment_count(&cp).await, 0);
        assert!(!is_deployed(&cp, "1.0.0").await);
        let mut body = web_demo("1.0.0");
        body["overrideValues"] = json!([
            {"appName": "web", "values": {"port": 20080}},
            {"appName": "status", "values": {"port": 20081}}
        ]);
        let (s, b) = cp.post(&deployments_url(&cp, ""), &body).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(deployment_count(&cp).await, 1);
    }
}
