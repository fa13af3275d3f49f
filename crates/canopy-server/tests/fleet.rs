//! The fleet and the deployment manager end to end over HTTP, with **simulated agents**: small
//! clients in this file that speak the real agent protocol (enroll, long-poll, status reports)
//! without running containers. They stand in for edges so targeting, status folding and the
//! state machine are tested fast; `crates/canopy/tests/edge_podman.rs` runs the real agent.

use std::time::Duration;

use canopy_proto::{AppState, AppStatus, DesiredState, PROTOCOL_HEADER, StatusReport};
use canopy_server::hub::HubConfig;
use canopy_testkit::sim_agent::{SimAgent, enroll_raw};
use canopy_testkit::{TestControlPlane, example};
use reqwest::StatusCode;
use serde_json::{Value, json};

const P: &str = "default";

fn fast() -> HubConfig {
    HubConfig {
        heartbeat: Duration::from_secs(1),
        // Long enough that a slow CI machine does not turn a live simulated edge UNKNOWN
        // between two steps of a test.
        edge_timeout: Duration::from_secs(4),
        no_target_grace: Duration::from_secs(3),
    }
}

async fn token(cp: &TestControlPlane) -> String {
    let (s, b) = cp
        .post(
            &cp.at(&format!("/canopy/v1/projects/{P}/enrollment-tokens")),
            &json!({"description": "test"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b["secret"].as_str().unwrap().to_string()
}

fn deployments_url(cp: &TestControlPlane, rest: &str) -> String {
    cp.at(&format!("/v1/projects/{P}/appdeployment/deployments{rest}"))
}

async fn upload_example(cp: &TestControlPlane) {
    for dir in ["web-demo", "web-demo-1.1.0"] {
        let (s, b) = cp.upload_dir(P, &example(dir)).await;
        assert_eq!(s, StatusCode::OK, "upload {dir}: {b}");
    }
}

async fn create(cp: &TestControlPlane, body: Value) -> String {
    let (s, b) = cp.post(&deployments_url(cp, ""), &body).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["deploymentId"].as_str().unwrap().to_string()
}

async fn state(cp: &TestControlPlane, id: &str) -> (String, Value) {
    let (s, b) = cp.get(&deployments_url(cp, &format!("/{id}"))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    (
        b["deployment"]["status"]["state"]
            .as_str()
            .unwrap()
            .to_string(),
        b["deployment"].clone(),
    )
}

fn by_labels(version: &str, labels: Value) -> Value {
    json!({"appName": "web-demo", "appVersion": version, "allAppTargetClusters": {"labels": labels}})
}

#[tokio::test]
async fn enrollment_tokens_and_edges() {
    let cp = TestControlPlane::start().await;
    let t = token(&cp).await;
    let a = SimAgent::enroll(&cp, &t, "store-1", &[("site", "paris")]).await;
    let b = SimAgent::enroll(&cp, &t, "store-2", &[("site", "lyon")]).await;
    assert_ne!(a.cred, b.cred, "each edge gets its own credential");

    // Reference inventory and Canopy's own view.
    let (s, list) = cp
        .get(&cp.at(&format!(
            "/v1/projects/{P}/appdeployment/clusters?orderBy=name%20desc"
        )))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["totalElements"], 2);
    assert_eq!(list["clusters"][0]["name"], "store-2");
    assert_eq!(list["clusters"][0]["labels"]["site"], "lyon");
    assert!(list["clusters"][0]["createTime"].is_string());
    let (_, one) = cp
        .get(&cp.at(&format!("/canopy/v1/projects/{P}/edges/store-1")))
        .await;
    assert_eq!(one["edge"]["id"], a.id.as_str());
    assert_eq!(one["edge"]["connection"], "NEVER_CONNECTED");
    let (_, filtered) = cp
        .get(&cp.at(&format!("/canopy/v1/projects/{P}/edges?labels=site=lyon")))
        .await;
    assert_eq!(filtered["totalElements"], 1);

    // Name taken, bad labels, bad names: clear errors, nothing created.
    let (s, e) = enroll_raw(&cp, &t, "store-1", &[]).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(e["message"].as_str().unwrap().contains("store-1"));
    let (s, e) = enroll_raw(&cp, &t, "store-3", &[("Bad Key", "x")]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (s, _) = enroll_raw(&cp, &t, "../etc", &[]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, e) = enroll_raw(&cp, "cnt_nope", "store-4", &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{e}");

    // Revocation: listed as revoked, refused at enrollment; enrolled edges keep working.
    let (_, tokens) = cp
        .get(&cp.at(&format!("/canopy/v1/projects/{P}/enrollment-tokens")))
        .await;
    let id = tokens["enrollmentTokens"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        !tokens.to_string().contains(&t),
        "the secret is never listed"
    );
    assert_eq!(tokens["enrollmentTokens"][0]["uses"], 2);
    let (s, r) = cp
        .delete(&cp.at(&format!("/canopy/v1/projects/{P}/enrollment-tokens/{id}")))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["enrollmentToken"]["state"], "REVOKED");
    let (s, e) = enroll_raw(&cp, &t, "store-5", &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(e["message"].as_str().unwrap().contains("revoked"), "{e}");
    let mut a = a;
    assert!(
        a.poll(0).await.is_some(),
        "an enrolled edge keeps its credential"
    );

    // Single-use and expired tokens.
    let (_, once) = cp
        .post(
            &cp.at(&format!("/canopy/v1/projects/{P}/enrollment-tokens")),
            &json!({"maxUses": 1}),
        )
        .await;
    let once = once["secret"].as_str().unwrap();
    assert_eq!(
        enroll_raw(&cp, once, "store-6", &[]).await.0,
        StatusCode::CREATED
    );
    let (s, e) = enroll_raw(&cp, once, "store-7", &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(e["message"].as_str().unwrap().contains("maximum"), "{e}");
    let (s, _) = cp
        .post(
            &cp.at(&format!("/canopy/v1/projects/{P}/enrollment-tokens")),
            &json!({"ttlSeconds": 999_999_999u64}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Protocol version mismatch: 426 with a message saying what to do.
    let resp = cp
        .http()
        .get(cp.at("/canopy/v1/agent/desired-state"))
        .header(PROTOCOL_HEADER, "2")
        .bearer_auth(&b.cred)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UPGRADE_REQUIRED);
    let e: Value = resp.json().await.unwrap();
    assert!(e["message"].as_str().unwrap().contains("version 2"), "{e}");

    // Edge removal: its credential stops working.
    let (s, _) = cp
        .delete(&cp.at(&format!("/canopy/v1/projects/{P}/edges/store-2")))
        .await;
    assert_eq!(s, StatusCode::OK);
    let resp = cp
        .http()
        .get(cp.at("/canopy/v1/agent/desired-state?waitSeconds=0"))
        .header(PROTOCOL_HEADER, "1")
        .bearer_auth(&b.cred)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Another project's view does not show them.
    cp.create_project("other").await;
    let (_, other) = cp
        .get(&cp.at("/v1/projects/other/appdeployment/clusters"))
        .await;
    assert_eq!(other["totalElements"], 0);
    let (s, _) = cp
        .get(&cp.at(&format!("/canopy/v1/projects/other/edges/{}", a.id)))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn label_targeting_status_and_upgrade() {
    let cp = TestControlPlane::start_fleet(fast()).await;
    upload_example(&cp).await;
    let t = token(&cp).await;
    let mut paris =
        SimAgent::enroll(&cp, &t, "paris-1", &[("site", "paris"), ("tier", "edge")]).await;
    let mut lyon = SimAgent::enroll(&cp, &t, "lyon-1", &[("site", "lyon"), ("tier", "edge")]).await;
    paris.poll(0).await;
    lyon.poll(0).await;

    let id = create(
        &cp,
        by_labels("1.0.0", json!({"site": "paris", "tier": "edge"})),
    )
    .await;
    let got = paris.poll(5).await.expect("the matching edge is woken");
    assert_eq!(paris.deployments(), vec![id.clone()]);
    let dep = &got.deployments[0];
    assert_eq!(dep.generation, 1);
    assert_eq!(dep.apps.len(), 2);
    let status_app = dep.apps.iter().find(|a| a.name == "status").unwrap();
    assert_eq!(status_app.depends_on, vec!["web".to_string()]);
    assert_eq!(status_app.namespace, "web-demo");
    assert!(
        lyon.poll(1).await.is_none(),
        "a non-matching edge is not woken"
    );

    // Package marked deployed.
    let (_, pkg) = cp
        .get(&cp.catalog(P, "/deployment_packages/web-demo/versions/1.0.0"))
        .await;
    assert_eq!(pkg["deploymentPackage"]["isDeployed"], true);

    let (st, _) = state(&cp, &id).await;
    assert_eq!(st, "DEPLOYING");
    let (s, ack) = paris.report(AppState::Running).await;
    assert_eq!(s, StatusCode::OK, "{ack}");
    assert_eq!(ack["seq"], 1);
    let (st, d) = state(&cp, &id).await;
    assert_eq!(st, "RUNNING", "{d}");
    assert_eq!(d["status"]["summary"]["total"], 1);
    assert_eq!(d["status"]["summary"]["running"], 1);
    assert_eq!(d["apps"].as_array().unwrap().len(), 2);

    // Clusters of the deployment, deployments of the cluster, the summary.
    let (_, cl) = cp
        .get(&deployments_url(&cp, &format!("/{id}/clusters")))
        .await;
    assert_eq!(cl["totalElements"], 1);
    assert_eq!(cl["clusters"][0]["name"], "paris-1");
    assert_eq!(cl["clusters"][0]["status"]["state"], "RUNNING");
    assert_eq!(cl["clusters"][0]["status"]["summary"]["type"], "appCounts");
    let (_, per) = cp
        .get(&cp.at(&format!(
            "/v1/projects/{P}/deployments/clusters/{}",
            paris.id
        )))
        .await;
    assert_eq!(
        per["deploymentInstancesCluster"][0]["deploymentUid"],
        id.as_str()
    );
    let (_, summary) = cp
        .get(&cp.at(&format!("/v1/projects/{P}/summary/deployments_status")))
        .await;
    assert_eq!(summary["total"], 1);
    assert_eq!(summary["running"], 1);
    let (_, filtered) = cp.get(&deployments_url(&cp, "?labels=site=lyon")).await;
    assert_eq!(filtered["totalElements"], 0);
    let (_, filtered) = cp.get(&deployments_url(&cp, "?labels=site=paris")).await;
    assert_eq!(filtered["totalElements"], 1);

    // A duplicate report changes nothing; a report about a deployment not held is refused.
    paris.seq -= 1;
    let (s, ack) = paris.report(AppState::Down).await;
    assert_eq!((s, ack["seq"].clone()), (StatusCode::OK, json!(1)));
    assert_eq!(state(&cp, &id).await.0, "RUNNING");
    let foreign = StatusReport {
        protocol_version: 1,
        seq: 100,
        generation: lyon.held.generation,
        apps: vec![AppStatus {
            deployment_id: id.clone(),
            app: "web".into(),
            state: AppState::Running,
            ..Default::default()
        }],
        agent: None,
    };
    let (s, e) = lyon.send(&foreign).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e["message"].as_str().unwrap().contains(&id));

    // The lyon edge gains the label: it gains the deployment without anyone touching it.
    let (s, e) = cp
        .http()
        .patch(cp.at(&format!("/canopy/v1/projects/{P}/edges/lyon-1/labels")))
        .json(&json!({"set": {"site": "paris"}}))
        .send()
        .await
        .map(|r| (r.status(), r))
        .unwrap();
    assert_eq!(s, StatusCode::OK, "{:?}", e.text().await);
    assert!(lyon.poll(5).await.is_some());
    assert_eq!(lyon.deployments(), vec![id.clone()]);
    let (st, d) = state(&cp, &id).await;
    assert_eq!(st, "DEPLOYING", "a new edge that has not reported: {d}");
    lyon.report(AppState::Running).await;
    assert_eq!(state(&cp, &id).await.0, "RUNNING");

    // Upgrade to 1.1.0: generation 2, UPDATING until both edges run it.
    let (_, cur) = cp.get(&deployments_url(&cp, &format!("/{id}"))).await;
    let mut body = cur["deployment"].clone();
    body["appVersion"] = json!("1.1.0");
    let (s, up) = cp
        .put(&deployments_url(&cp, &format!("/{id}")), &body)
        .await;
    assert_eq!(s, StatusCode::OK, "{up}");
    assert_eq!(up["deployment"]["appVersion"], "1.1.0");
    assert_eq!(up["deployment"]["status"]["state"], "UPDATING");
    let got = paris.poll(5).await.unwrap();
    assert_eq!(got.deployments[0].generation, 2);
    assert_eq!(got.deployments[0].package_version, "1.1.0");
    paris.report(AppState::Running).await;
    assert_eq!(state(&cp, &id).await.0, "UPDATING");
    lyon.poll(5).await.unwrap();
    lyon.report(AppState::Running).await;
    assert_eq!(state(&cp, &id).await.0, "RUNNING");
    let (_, old) = cp
        .get(&cp.catalog(P, "/deployment_packages/web-demo/versions/1.0.0"))
        .await;
    assert_eq!(
        old["deploymentPackage"]["isDeployed"], false,
        "old version no longer deployed"
    );

    // Losing the label loses the deployment.
    cp.http()
        .patch(cp.at(&format!("/canopy/v1/projects/{P}/edges/lyon-1/labels")))
        .json(&json!({"remove": ["site"]}))
        .send()
        .await
        .unwrap();
    lyon.poll(5).await.unwrap();
    assert!(lyon.deployments().is_empty());

    // A Down app after settling: DOWN with the app's message.
    paris.seq += 1;
    let report = StatusReport {
        protocol_version: 1,
        seq: paris.seq,
        generation: paris.held.generation,
        apps: vec![AppStatus {
            deployment_id: id.clone(),
            app: "web".into(),
            state: AppState::Down,
            message: "container httpd exited with 1".into(),
            deployment_generation: 2,
            workloads: vec![],
        }],
        agent: None,
    };
    assert_eq!(paris.send(&report).await.0, StatusCode::OK);
    let (st, d) = state(&cp, &id).await;
    assert_eq!(st, "DOWN", "{d}");

    // Silent edge: UNKNOWN after the timeout, with the last known state and its age.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let (st, _) = state(&cp, &id).await;
    assert_eq!(st, "UNKNOWN");
    let (_, cl) = cp
        .get(&deployments_url(&cp, &format!("/{id}/clusters")))
        .await;
    let msg = cl["clusters"][0]["status"]["message"].as_str().unwrap();
    assert!(msg.contains("silent"), "{msg}");
    paris.report(AppState::Running).await;
    assert_eq!(state(&cp, &id).await.0, "RUNNING");

    // Delete: the edge drops it; the package is no longer deployed.
    let (s, _) = cp.delete(&deployments_url(&cp, &format!("/{id}"))).await;
    assert_eq!(s, StatusCode::OK);
    paris.poll(5).await.unwrap();
    assert!(paris.deployments().is_empty());
    let (s, _) = cp.get(&deployments_url(&cp, &format!("/{id}"))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, pkg) = cp
        .get(&cp.catalog(P, "/deployment_packages/web-demo/versions/1.1.0"))
        .await;
    assert_eq!(pkg["deploymentPackage"]["isDeployed"], false);
}

#[tokio::test]
async fn targeted_no_targets_and_bad_input() {
    let cp = TestControlPlane::start_fleet(fast()).await;
    upload_example(&cp).await;
    let t = token(&cp).await;
    let mut e1 = SimAgent::enroll(&cp, &t, "e1", &[("site", "a")]).await;
    e1.poll(0).await;

    // Targeted by edge name (or id).
    let id = create(
        &cp,
        json!({"appName": "web-demo", "appVersion": "1.0.0", "deploymentType": "targeted",
               "allAppTargetClusters": {"clusterId": "e1"},
               "overrideValues": [{"appName": "web", "values": {"greeting": "targeted", "port": "18090"}}]}),
    )
    .await;
    let got = e1.poll(5).await.unwrap();
    let web = got.deployments[0]
        .apps
        .iter()
        .find(|a| a.name == "web")
        .unwrap();
    assert_eq!(web.containers[0].env["GREETING"], "targeted");
    assert_eq!(
        web.containers[0].ports[0].host_port,
        Some(18090),
        "number coerced"
    );

    // Duplicate: same package, version, profile and display name.
    let (_, cur) = cp.get(&deployments_url(&cp, &format!("/{id}"))).await;
    let dup = json!({"appName": "web-demo", "appVersion": "1.0.0", "deploymentType": "targeted",
        "displayName": cur["deployment"]["displayName"], "allAppTargetClusters": {"clusterId": "e1"}});
    let (s, e) = cp.post(&deployments_url(&cp, ""), &dup).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");

    // Nothing matches the labels: NO_TARGET_CLUSTERS after the grace period.
    let lonely = create(&cp, by_labels("1.0.0", json!({"site": "nowhere"}))).await;
    assert_eq!(state(&cp, &lonely).await.0, "DEPLOYING");
    tokio::time::sleep(Duration::from_millis(3300)).await;
    assert_eq!(state(&cp, &lonely).await.0, "NO_TARGET_CLUSTERS");
    // ... and a future edge that matches gets it.
    let mut late = SimAgent::enroll(&cp, &t, "late", &[("site", "nowhere")]).await;
    late.poll(0).await;
    assert_eq!(late.deployments(), vec![lonely.clone()]);

    let before = cp.get(&deployments_url(&cp, "")).await.1["totalElements"].clone();
    let cases = [
        (
            json!({"appName": "nope", "appVersion": "1.0.0", "allAppTargetClusters": {"labels": {"a": "b"}}}),
            StatusCode::NOT_FOUND,
            "nope",
        ),
        (
            json!({"appName": "web-demo", "appVersion": "1.0.0", "profileName": "gold", "allAppTargetClusters": {"labels": {"a": "b"}}}),
            StatusCode::NOT_FOUND,
            "gold",
        ),
        (
            json!({"appName": "web-demo", "appVersion": "1.0.0"}),
            StatusCode::BAD_REQUEST,
            "target",
        ),
        (
            json!({"appName": "web-demo", "appVersion": "1.0.0", "deploymentType": "targeted", "allAppTargetClusters": {"clusterId": "ghost"}}),
            StatusCode::NOT_FOUND,
            "ghost",
        ),
        (
            json!({"appName": "web-demo", "appVersion": "1.0.0", "allAppTargetClusters": {"labels": {"a": "b"}}, "overrideValues": [{"appName": "web", "values": {"port": "eighty"}}]}),
            StatusCode::BAD_REQUEST,
            "port",
        ),
        (
            json!({"appName": "web-demo", "appVersion": "1.0.0", "allAppTargetClusters": {"labels": {"a": "b"}}, "overrideValues": [{"appName": "web", "values": "not-a-map"}]}),
            StatusCode::BAD_REQUEST,
            "values",
        ),
        (
            json!({"appName": "web-demo", "appVersion": "1.0.0", "allAppTargetClusters": {"labels": {"a": "b"}}, "overrideValues": [{"appName": "ghost-app", "values": {}}]}),
            StatusCode::BAD_REQUEST,
            "ghost-app",
        ),
        (
            json!({"appName": "web-demo", "appVersion": "1.0.0", "allAppTargetClusters": {"labels": {"a": "b"}}, "overrideValues": [{"appName": "web", "values": {"port": 99999}}]}),
            StatusCode::BAD_REQUEST,
            "hostPort",
        ),
        (
            json!({"appName": "web-demo", "appVersion": "1.0.0", "allAppTargetClusters": {"labels": {"Bad": "b"}}}),
            StatusCode::BAD_REQUEST,
            "Bad",
        ),
        (
            json!({"appName": "web-demo", "appVersion": "1.0.0", "bogus": 1}),
            StatusCode::BAD_REQUEST,
            "bogus",
        ),
    ];
    for (body, want, mention) in cases {
        let (s, e) = cp.post(&deployments_url(&cp, ""), &body).await;
        assert_eq!(s, want, "{body} -> {e}");
        assert!(
            e["message"].as_str().unwrap_or("").contains(mention),
            "{body}: message should name {mention:?}: {e}"
        );
    }
    let after = cp.get(&deployments_url(&cp, "")).await.1["totalElements"].clone();
    assert_eq!(before, after, "nothing half-created");

    // List conventions.
    let (s, page) = cp
        .get(&deployments_url(
            &cp,
            "?pageSize=1&orderBy=createTime%20desc",
        ))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(page["deployments"].as_array().unwrap().len(), 1);
    assert_eq!(page["deployments"][0]["deployId"], lonely.as_str());
    let (s, _) = cp
        .get(&deployments_url(&cp, "?orderBy=overrideValues"))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = cp.get(&deployments_url(&cp, "?pageSize=501")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn fleet_survives_a_control_plane_restart() {
    let cp = TestControlPlane::start_fleet(fast()).await;
    upload_example(&cp).await;
    let t = token(&cp).await;
    let mut e = SimAgent::enroll(&cp, &t, "e1", &[("site", "a")]).await;
    let id = create(&cp, by_labels("1.0.0", json!({"site": "a"}))).await;
    e.poll(0).await.unwrap();
    e.report(AppState::Running).await;
    let held = e.held.generation;
    cp.app().flush_fleet().await;

    let cp = cp.restart().await;
    // Same credential, same deployment; the generation is not lower than what the edge holds.
    let (st, _) = state(&cp, &id).await;
    assert_eq!(st, "RUNNING", "last reported state restored");
    let mut probe = e;
    probe.held = DesiredState::default();
    let got = probe.poll(0).await.unwrap();
    assert!(got.generation >= held);
    assert_eq!(probe.deployments(), vec![id.clone()]);
}

/// The deployment manager's transactions (deployment rows, `isDeployed`, fleet revision) on
/// every backend, PostgreSQL included.
#[tokio::test]
async fn deploy_and_delete_on_every_backend() {
    for cp in TestControlPlane::all().await {
        upload_example(&cp).await;
        let t = token(&cp).await;
        let mut e = SimAgent::enroll(&cp, &t, "e1", &[("site", "a")]).await;
        let id = create(&cp, by_labels("1.0.0", json!({"site": "a"}))).await;
        e.poll(0).await.unwrap();
        assert_eq!(e.deployments(), vec![id.clone()], "{}", cp.backend);
        e.report(AppState::Running).await;
        assert_eq!(state(&cp, &id).await.0, "RUNNING", "{}", cp.backend);
        let (s, _) = cp.delete(&deployments_url(&cp, &format!("/{id}"))).await;
        assert_eq!(s, StatusCode::OK, "{}", cp.backend);
        e.poll(5).await.unwrap();
        assert!(e.deployments().is_empty(), "{}", cp.backend);
        let (_, pkg) = cp
            .get(&cp.catalog(P, "/deployment_packages/web-demo/versions/1.0.0"))
            .await;
        assert_eq!(
            pkg["deploymentPackage"]["isDeployed"], false,
            "{}",
            cp.backend
        );
    }
}

fn native_app(name: &str, requires: Option<&str>) -> String {
    let req = match requires {
        Some(pkg) => format!(
            "\n    deploymentRequirement:\n      - {{name: {pkg}, version: 1.0.0, deploymentProfileName: default}}"
        ),
        None => String::new(),
    };
    format!(
        "specSchema: Application\nschemaVersion: \"0.1\"\n$schema: \"https://schema.intel.com/catalog.orchestrator/0.1/schema\"\nname: {name}\ndescription: test app\nversion: 1.0.0\nworkloadTemplate: |\n  containers:\n    - name: main\n      image: localhost/busybox:canopy-test\n      command: [sleep, \"3600\"]\ndefaultProfile: default\nprofiles:\n  - name: default{req}\n"
    )
}

fn native_package(name: &str, app: &str, forbids: bool) -> String {
    format!(
        "specSchema: DeploymentPackage\nschemaVersion: \"0.1\"\n$schema: \"https://schema.intel.com/catalog.orchestrator/0.1/schema\"\nname: {name}\ndescription: test package\nversion: 1.0.0\nforbidsMultipleDeployments: {forbids}\napplications:\n  - {{name: {app}, version: 1.0.0}}\ndeploymentProfiles:\n  - name: default\n    applicationProfiles:\n      - {{application: {app}, profile: default}}\ndefaultProfile: default\n"
    )
}

/// Deployment requirements: child deployments created (or reused when the required package
/// forbids several), parents protect children, `ALL` deletes the subtree.
#[tokio::test]
async fn deployment_requirements_create_and_reuse_children() {
    let cp = TestControlPlane::start_fleet(fast()).await;
    let files: Vec<(String, Vec<u8>)> = [
        ("db.yaml", native_app("db", None)),
        ("db-pkg.yaml", native_package("db-pkg", "db", true)),
        ("shop.yaml", native_app("shop", Some("db-pkg"))),
        ("shop-pkg.yaml", native_package("shop-pkg", "shop", false)),
    ]
    .into_iter()
    .map(|(n, c)| (n.to_string(), c.into_bytes()))
    .collect();
    let (s, b) = cp.upload(P, files).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let t = token(&cp).await;
    let mut e = SimAgent::enroll(&cp, &t, "e1", &[("site", "a")]).await;

    let shop = json!({"appName": "shop-pkg", "appVersion": "1.0.0", "allAppTargetClusters": {"labels": {"site": "a"}}});
    let parent = create(&cp, shop.clone()).await;
    let (_, list) = cp.get(&deployments_url(&cp, "")).await;
    assert_eq!(
        list["totalElements"], 2,
        "a child deployment of db-pkg: {list}"
    );
    let child = list["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["appName"] == "db-pkg")
        .unwrap()["deployId"]
        .as_str()
        .unwrap()
        .to_string();
    e.poll(0).await.unwrap();
    let mut held = e.deployments();
    held.sort();
    let mut want = vec![parent.clone(), child.clone()];
    want.sort();
    assert_eq!(held, want, "the child follows the parent's target");

    // A second parent reuses the child (forbidsMultipleDeployments).
    let mut second = shop.clone();
    second["displayName"] = json!("second shop");
    let parent2 = create(&cp, second).await;
    let (_, list) = cp.get(&deployments_url(&cp, "")).await;
    assert_eq!(list["totalElements"], 3, "child reused: {list}");

    // The child cannot be deleted or updated while parents need it.
    let (s, e1) = cp.delete(&deployments_url(&cp, &format!("/{child}"))).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e1}");
    assert!(e1["message"].as_str().unwrap().contains(&parent));
    // ALL on one parent is refused: the child also has the other parent.
    let (s, e2) = cp
        .delete(&deployments_url(&cp, &format!("/{parent}?deleteType=ALL")))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e2}");
    // PARENT_ONLY removes the parent; the child stays for the second.
    let (s, _) = cp
        .delete(&deployments_url(&cp, &format!("/{parent}")))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = cp
        .delete(&deployments_url(&cp, &format!("/{parent2}?deleteType=ALL")))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, list) = cp.get(&deployments_url(&cp, "")).await;
    assert_eq!(list["totalElements"], 0, "ALL removed the subtree: {list}");
    let (_, pkg) = cp
        .get(&cp.catalog(P, "/deployment_packages/db-pkg/versions/1.0.0"))
        .await;
    assert_eq!(pkg["deploymentPackage"]["isDeployed"], false);
}

/// Secret parameters: masked in every response, real on the edge, preserved when a client PUTs
/// back the masked copy; a missing mandatory one is refused naming it.
#[tokio::test]
async fn secret_and_mandatory_parameters() {
    let cp = TestControlPlane::start_fleet(fast()).await;
    let app = "specSchema: Application\nschemaVersion: \"0.1\"\n$schema: \"https://schema.intel.com/catalog.orchestrator/0.1/schema\"\nname: vault\ndescription: d\nversion: 1.0.0\nworkloadTemplate: |\n  containers:\n    - name: main\n      image: localhost/busybox:canopy-test\n      env:\n        TOKEN: {{ values.token | tojson }}\n        LEVEL: {{ values.level | tojson }}\ndefaultProfile: default\nprofiles:\n  - name: default\n    parameterTemplates:\n      - {name: token, displayName: Token, type: string, mandatory: true, secret: true}\n      - {name: level, displayName: Level, type: number, default: \"1\"}\n";
    let files = vec![
        ("vault.yaml".to_string(), app.as_bytes().to_vec()),
        (
            "vault-pkg.yaml".to_string(),
            native_package("vault-pkg", "vault", false).into_bytes(),
        ),
    ];
    let (s, b) = cp.upload(P, files).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let t = token(&cp).await;
    let mut e = SimAgent::enroll(&cp, &t, "e1", &[("site", "a")]).await;
    let base = json!({"appName": "vault-pkg", "appVersion": "1.0.0", "allAppTargetClusters": {"labels": {"site": "a"}}});

    let (s, err) = cp.post(&deployments_url(&cp, ""), &base).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{err}");
    assert!(err["message"].as_str().unwrap().contains("token"), "{err}");

    let mut body = base.clone();
    body["overrideValues"] =
        json!([{"appName": "vault", "values": {"token": "s3cr3t", "level": "2"}}]);
    let id = create(&cp, body).await;
    let (_, got) = cp.get(&deployments_url(&cp, &format!("/{id}"))).await;
    assert!(
        !got.to_string().contains("s3cr3t"),
        "secret in a response: {got}"
    );
    assert_eq!(
        got["deployment"]["overrideValues"][0]["values"]["token"],
        "********"
    );
    let (_, list) = cp.get(&deployments_url(&cp, "")).await;
    assert!(!list.to_string().contains("s3cr3t"));
    let d = e.poll(0).await.unwrap();
    assert_eq!(
        d.deployments[0].apps[0].containers[0].env["TOKEN"],
        "s3cr3t"
    );
    assert_eq!(d.deployments[0].apps[0].containers[0].env["LEVEL"], "2");

    // PUT back what GET returned, with another level: the secret is kept.
    let mut upd = got["deployment"].clone();
    upd["overrideValues"][0]["values"]["level"] = json!(3);
    let (s, r) = cp.put(&deployments_url(&cp, &format!("/{id}")), &upd).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert!(!r.to_string().contains("s3cr3t"));
    let d = e.poll(5).await.unwrap();
    assert_eq!(
        d.deployments[0].apps[0].containers[0].env["TOKEN"],
        "s3cr3t"
    );
    assert_eq!(d.deployments[0].apps[0].containers[0].env["LEVEL"], "3");
}

#[tokio::test]
async fn openapi_document_covers_reference_deployment_manager() {
    let cp = TestControlPlane::start().await;
    let (s, doc) = cp.get(&cp.at("/openapi.json")).await;
    assert_eq!(s, StatusCode::OK);
    let reference = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/reference-openapi/deployment-manager.yaml"
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
        "reference operations missing: {missing:?}"
    );
    for own in [
        "/canopy/v1/projects/{projectName}/edges",
        "/canopy/v1/projects/{projectName}/enrollment-tokens",
        "/canopy/v1/agent/desired-state",
    ] {
        assert!(!doc["paths"][own].is_null(), "{own}");
    }
    let (s, ui) = cp
        .get(&cp.at(&format!("/v1/projects/{P}/ui_extensions?serviceName=a,b")))
        .await;
    assert_eq!(s, StatusCode::OK, "{ui}");
    assert_eq!(ui["uiExtensions"], json!([]));
}

/// The first deployment's state in the list, and the project's summary.
async fn listed(cp: &TestControlPlane) -> (String, Value) {
    let (s, l) = cp.get(&deployments_url(cp, "")).await;
    assert_eq!(s, StatusCode::OK, "{l}");
    let (s, sum) = cp
        .get(&cp.at(&format!("/v1/projects/{P}/summary/deployments_status")))
        .await;
    assert_eq!(s, StatusCode::OK, "{sum}");
    let state = l["deployments"][0]["status"]["state"].as_str().unwrap();
    (state.to_string(), sum)
}

/// Lists and the summary reuse each deployment's folded status while the fleet is quiet (see
/// `canopy_server::hub::FOLD_REUSE`), but a report that changes a status is seen by the very
/// next list: no stale answer after a change, however soon it is asked.
#[tokio::test]
async fn lists_and_the_summary_see_a_reported_change_at_once() {
    let cp = TestControlPlane::start_fleet(fast()).await;
    upload_example(&cp).await;
    let t = token(&cp).await;
    let mut e = SimAgent::enroll(&cp, &t, "e1", &[("site", "a")]).await;
    let id = create(&cp, by_labels("1.0.0", json!({"site": "a"}))).await;
    e.poll(0).await.unwrap();
    // Folded and kept: twice the same answer before any report.
    let (before, _) = listed(&cp).await;
    assert_ne!(before, "RUNNING");
    assert_eq!(listed(&cp).await.0, before);
    for (report, want) in [(AppState::Running, "RUNNING"), (AppState::Down, "DOWN")] {
        e.report(report).await;
        let (state, sum) = listed(&cp).await;
        assert_eq!(state, want, "the list right after the report");
        let count = if want == "RUNNING" { "running" } else { "down" };
        assert_eq!(sum[count], 1, "the summary right after the report: {sum}");
    }
    assert_eq!(state(&cp, &id).await.0, "DOWN");
}

/// A deployment reaching more waiting edges than the hub wakes inline (256): their long-polls
/// are woken by the hub's own task, a chunk at a time (`hub::Locked`), after the change is
/// applied. Every one of them gets the deployment, and the request that made it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_wider_than_one_wake_chunk_reaches_every_waiting_edge() {
    const N: usize = 300;
    let cp = TestControlPlane::start().await;
    upload_example(&cp).await;
    let t = token(&cp).await;
    let mut polls = tokio::task::JoinSet::new();
    for i in 0..N {
        let mut a = SimAgent::enroll(&cp, &t, &format!("wide-{i:03}"), &[("fan", "out")]).await;
        // Take the first state, then park a long-poll after it.
        a.poll(0).await;
        polls.spawn(async move { a.poll(60).await });
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while cp.app().hub().counts().1 < N {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {N} long-polls parked",
            cp.app().hub().counts().1
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = create(&cp, by_labels("1.0.0", json!({"fan": "out"}))).await;
    let got = tokio::time::timeout(Duration::from_secs(30), async {
        let mut got = Vec::new();
        while let Some(r) = polls.join_next().await {
            got.push(r.unwrap());
        }
        got
    })
    .await
    .expect("every parked long-poll is answered well before its 60 s");
    assert_eq!(got.len(), N);
    for d in got {
        let d = d.expect("woken with a new state, not timed out");
        assert_eq!(d.deployments.len(), 1, "{d:?}");
        assert_eq!(d.deployments[0].deployment_id, id);
    }
}

/// A long-poll that asks for no wait (`waitSeconds=0`, what an agent sends right after a
/// failure to learn it is connected again) is answered at once when nothing is newer, not at
/// the timer's next tick (about a millisecond each: 300 of them took over 300 ms before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_without_wait_is_answered_at_once() {
    const N: u32 = 300;
    let cp = TestControlPlane::start().await;
    let t = token(&cp).await;
    let mut a = SimAgent::enroll(&cp, &t, "no-wait", &[]).await;
    let held = a
        .poll(0)
        .await
        .expect("the first desired state")
        .generation
        .0;
    let hub = cp.app().hub();
    let started = std::time::Instant::now();
    for _ in 0..N {
        let got = hub
            .desired_state(&a.id, held, Duration::ZERO, std::future::pending())
            .await
            .expect("the edge exists");
        assert!(got.is_none(), "nothing newer than {held}");
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(250),
        "{N} long-polls without wait took {took:?}"
    );
    // A wait still waits.
    let started = std::time::Instant::now();
    let got = hub
        .desired_state(
            &a.id,
            held,
            Duration::from_millis(200),
            std::future::pending(),
        )
        .await
        .expect("the edge exists");
    assert!(got.is_none());
    assert!(started.elapsed() >= Duration::from_millis(200));
}
