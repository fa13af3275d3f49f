//! Helm-chart applications deployed end to end on the control plane, with the real Helm CLI and
//! the real local chart registries of `scripts/helm.sh` (fixture charts pushed by the tests
//! into repositories of their own), and a simulated agent standing in for the edge: the desired
//! state carries the translated pods; upgrades (chart version, values) give new pods; deletion
//! none; warnings on the deployment; the manifest endpoint with secrets masked for readers; and
//! bad input refused with nothing applied. Both backends.

use canopy_proto::pods::WorkloadKind;
use canopy_proto::{AppState, Health, StatusKind, WorkloadStatus};
use canopy_testkit::TestControlPlane;
use canopy_testkit::helm::{HelmPackage, HelmTestEnv};
use canopy_testkit::sim_agent::SimAgent;
use reqwest::StatusCode;
use serde_json::{Value, json};

const P: &str = "default";

fn deployments_url(cp: &TestControlPlane, rest: &str) -> String {
    cp.at(&format!("/v1/projects/{P}/appdeployment/deployments{rest}"))
}

fn manifest_url(cp: &TestControlPlane, id: &str, app: &str) -> String {
    cp.at(&format!(
        "/canopy/v1/projects/{P}/deployments/{id}/apps/{app}/manifest"
    ))
}

async fn enroll(cp: &TestControlPlane) -> SimAgent {
    let (s, b) = cp
        .post(
            &cp.at(&format!("/canopy/v1/projects/{P}/enrollment-tokens")),
            &json!({"description": "helm"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    SimAgent::enroll(cp, b["secret"].as_str().unwrap(), "e1", &[("site", "a")]).await
}

fn deployment(app: &str, version: &str, values: Value) -> Value {
    json!({
        "appName": app,
        "appVersion": version,
        "allAppTargetClusters": {"labels": {"site": "a"}},
        "overrideValues": [{"appName": app, "values": values}],
    })
}

fn message(b: &Value) -> &str {
    b["message"].as_str().unwrap_or_default()
}

async fn deployment_count(cp: &TestControlPlane) -> usize {
    let (s, b) = cp.get(&deployments_url(cp, "")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["deployments"].as_array().unwrap().len()
}

/// The `web` package of the `canopy-web` fixture chart (written as `helm create` writes it),
/// with a typed parameter template.
fn web_package(root: &str, version: &str, chart_version: &str) -> HelmPackage {
    let mut pkg = HelmPackage::new("web", root, "canopy-web", chart_version);
    pkg.version = version.into();
    pkg.chart_values = "replicaCount: 2\n".into();
    pkg.parameter_templates = vec![json!({"name": "replicaCount", "type": "number"})];
    pkg.namespace = Some("web-ns".into());
    pkg
}

#[tokio::test]
async fn a_helm_package_deploys_by_label_upgrades_and_is_deleted() {
    let Some(env) = HelmTestEnv::from_env() else {
        return;
    };
    let root = env.push_chart("canopy-web", None, false);
    env.push_chart_at("canopy-web", Some("0.2.0"), &root, false);
    for cp in TestControlPlane::all().await {
        let backend = cp.backend;
        web_package(&root, "1.0.0", "0.1.0").create(&cp, P).await;
        web_package(&root, "1.1.0", "0.2.0").create(&cp, P).await;
        let mut edge = enroll(&cp).await;

        // Deployed by label, with a string override coerced by its parameter template.
        let (s, b) = cp
            .post(
                &deployments_url(&cp, ""),
                &deployment("web", "1.0.0", json!({"replicaCount": "3"})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{backend}: {b}");
        let id = b["deploymentId"].as_str().unwrap().to_string();
        let d = edge.poll(10).await.expect("a desired state");
        let app = &d.deployments[0].apps[0];
        assert_eq!(app.name, "web");
        assert_eq!(app.namespace, "web-ns");
        assert!(app.containers.is_empty(), "{backend}: pods, not containers");
        let pods = app.pods.as_ref().expect("the app carries pods");
        let web = pods
            .workloads
            .iter()
            .find(|w| w.kind == WorkloadKind::Deployment)
            .expect("the chart's Deployment");
        assert_eq!(web.replicas, 3, "{backend}: the override wins");
        assert_eq!(web.containers[0].image, "localhost/busybox:canopy-test");
        assert_eq!(web.template, "canopy-web/templates/deployment.yaml");
        assert!(
            pods.services
                .iter()
                .any(|s| s.workloads.contains(&web.name))
        );
        let first_hash = app.spec_hash.clone();

        // The resource manager lists the pods: as desired until the agent reports them, then
        // as reported (the chart's workload containers beside each).
        let app_id = canopy_deploy::status::app_id(&id, "web");
        let pods_url = cp.at(&format!(
            "/v1/projects/{P}/resource/workloads/applications/{app_id}/clusters/{}",
            edge.id
        ));
        let (s, b) = cp.get(&pods_url).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let listed = b["appWorkloads"].as_array().expect("appWorkloads");
        assert_eq!(listed.len(), 3, "{backend}: three replicas pending: {b}");
        assert!(
            listed
                .iter()
                .all(|w| w["type"] == "TYPE_POD" && w["pod"]["status"]["state"] == "STATE_PENDING")
        );
        let pod_name = format!("{}-5d8f7c-abcde", web.name);
        let (s, b) = edge
            .report_with(|_, _| {
                (
                    AppState::Running,
                    vec![WorkloadStatus {
                        kind: StatusKind::Pod,
                        name: pod_name.clone(),
                        state: "Running".into(),
                        ..Default::default()
                    }],
                )
            })
            .await;
        assert!(s.is_success(), "{b}");
        let (_, b) = cp.get(&pods_url).await;
        let listed = b["appWorkloads"].as_array().unwrap();
        assert_eq!(listed.len(), 3, "{b}");
        let running = listed
            .iter()
            .find(|w| w["name"] == pod_name.as_str())
            .expect("the reported pod");
        assert_eq!(running["pod"]["status"]["state"], "STATE_RUNNING");
        assert_eq!(running["workloadReady"], true);
        assert_eq!(
            running["pod"]["containers"][0]["imageName"],
            "localhost/busybox:canopy-test"
        );

        // Pod delete (reference operation): a standing control naming that pod.
        let delete = cp.at(&format!(
            "/v1/projects/{P}/resource/workloads/pods/clusters/{}/namespaces/web-ns/pods/{pod_name}/delete",
            edge.id
        ));
        let (s, b) = cp.put(&delete, &json!({})).await;
        assert_eq!(s, StatusCode::OK, "{backend}: {b}");
        let d = edge.poll(10).await.expect("the pod delete");
        let c = d
            .controls
            .iter()
            .find(|c| c.kind == canopy_proto::WorkloadKind::Pod)
            .expect("a pod control");
        assert_eq!((c.workload.as_str(), c.restarts), (pod_name.as_str(), 1));
        let first_generation = d.generation;
        let missing = delete.replace(&pod_name, "web-nope");
        let (s, _) = cp.put(&missing, &json!({})).await;
        assert_eq!(s, StatusCode::NOT_FOUND);

        // The deployment shows what was skipped (the chart's ServiceAccount).
        let (s, b) = cp.get(&deployments_url(&cp, &format!("/{id}"))).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let warnings = b["deployment"]["warnings"].as_array().expect("warnings");
        assert!(
            warnings
                .iter()
                .any(|w| w["kind"] == "ServiceAccount" && w["appName"] == "web"),
            "{backend}: {warnings:?}"
        );

        // The manifest as Helm rendered it.
        let resp = cp
            .http()
            .get(manifest_url(&cp, &id, "web"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "application/yaml");
        let text = resp.text().await.unwrap();
        assert!(text.contains("kind: Deployment"), "{text}");
        assert!(text.contains("replicas: 3"), "{text}");
        assert!(
            !text.contains("helm.sh/hook"),
            "tests and hooks are left out"
        );
        let (s, b) = cp.get(&manifest_url(&cp, &id, "ghost")).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{b}");

        // A values change: new pods.
        let (s, b) = cp
            .put(
                &deployments_url(&cp, &format!("/{id}")),
                &deployment("web", "1.0.0", json!({"replicaCount": 1})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{backend}: {b}");
        let d = edge.poll(10).await.expect("the values change");
        assert!(d.generation > first_generation);
        let app = &d.deployments[0].apps[0];
        let pods = app.pods.as_ref().unwrap();
        assert_eq!(pods.workloads[0].replicas, 1);
        assert_ne!(app.spec_hash, first_hash);

        // A new chart version (package 1.1.0): its labels name the chart version.
        let (s, b) = cp
            .put(
                &deployments_url(&cp, &format!("/{id}")),
                &deployment("web", "1.1.0", json!({"replicaCount": 1})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{backend}: {b}");
        let d = edge.poll(10).await.expect("the upgrade");
        let app = &d.deployments[0].apps[0];
        assert_eq!(app.version, "1.1.0");
        let labels = &app.pods.as_ref().unwrap().workloads[0].labels;
        assert_eq!(
            labels.get("helm.sh/chart").map(String::as_str),
            Some("canopy-web-0.2.0"),
            "{backend}: {labels:?}"
        );
        let text = cp
            .http()
            .get(manifest_url(&cp, &id, "web"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains("canopy-web-0.2.0"), "the manifest follows");

        // Deleted: the edge holds nothing.
        let (s, b) = cp.delete(&deployments_url(&cp, &format!("/{id}"))).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let d = edge.poll(10).await.expect("the deletion");
        assert!(d.deployments.is_empty(), "{backend}");
        cp.stop().await;
    }
}

/// One (init) container of a pod as the agent's pod report (`pods::report`) shapes it.
fn reported_container(name: &str, init: bool, state: &str) -> WorkloadStatus {
    WorkloadStatus {
        kind: StatusKind::Container,
        name: name.into(),
        image: "localhost/busybox:canopy-test".into(),
        state: state.into(),
        created_at: "2026-12-07T07:00:00Z".into(),
        init,
        ready: Some(false),
        ..Default::default()
    }
}

/// A pod as the agent reports it: its phase, readiness, owner and containers.
fn reported_pod(
    name: &str,
    owner: (&str, &str),
    phase: &str,
    ready: bool,
    message: &str,
    containers: Vec<WorkloadStatus>,
) -> WorkloadStatus {
    WorkloadStatus {
        kind: StatusKind::Pod,
        name: name.into(),
        image: "localhost/busybox:canopy-test".into(),
        state: phase.into(),
        message: message.into(),
        created_at: "2026-12-07T07:00:00Z".into(),
        health: if ready {
            Health::Healthy
        } else {
            Health::Unhealthy
        },
        restarts: containers.iter().map(|c| c.restarts).sum(),
        ready: Some(ready),
        owner_kind: owner.0.into(),
        owner: owner.1.into(),
        containers,
        ..Default::default()
    }
}

/// The resource manager shows a Helm pod's containers as the agent reports them, one by one:
/// an init container that completed, a container failing its readiness probe, a crash loop
/// with its exit code, a failed Job attempt, an image that cannot be pulled, a waiting init.
#[tokio::test]
async fn helm_pods_show_each_container_as_the_agent_reports_it() {
    let Some(env) = HelmTestEnv::from_env() else {
        return;
    };
    let root = env.push_chart("canopy-stateful", None, false);
    for cp in TestControlPlane::all().await {
        let backend = cp.backend;
        let mut pkg = HelmPackage::new("stateful", &root, "canopy-stateful", "0.1.0");
        pkg.namespace = Some("stateful-ns".into());
        pkg.create(&cp, P).await;
        let mut edge = enroll(&cp).await;
        let (s, b) = cp
            .post(
                &deployments_url(&cp, ""),
                &deployment("stateful", "1.0.0", json!({"replicas": 2})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{backend}: {b}");
        let id = b["deploymentId"].as_str().unwrap().to_string();
        let d = edge.poll(10).await.expect("a desired state");
        let pods = d.deployments[0].apps[0].pods.clone().expect("pods");
        let named = |kind: WorkloadKind| {
            pods.workloads
                .iter()
                .find(|w| w.kind == kind)
                .unwrap_or_else(|| panic!("{backend}: a {kind:?} in the chart"))
                .name
                .clone()
        };
        let (db, seed, agent, probe) = (
            named(WorkloadKind::StatefulSet),
            named(WorkloadKind::Job),
            named(WorkloadKind::DaemonSet),
            named(WorkloadKind::Pod),
        );
        let (db0, db1) = (format!("{db}-0"), format!("{db}-1"));
        let seed_pod = format!("{seed}-x7k2q");
        let agent_pod = format!("{agent}-m4p9z");
        let not_ready =
            "readiness probe failed: command [test -f /data/initialized] exited with code 1";

        let reports = {
            let (db0, db1, seed_pod, agent_pod) = (
                db0.clone(),
                db1.clone(),
                seed_pod.clone(),
                agent_pod.clone(),
            );
            let (db, seed, agent, probe) = (db.clone(), seed.clone(), agent.clone(), probe.clone());
            move || {
                // db-0: the init container completed; db runs, its readiness probe fails.
                let mut init_done = reported_container("init", true, "exited");
                init_done.exit_code = Some(0);
                init_done.reason = "Completed".into();
                let mut unready = reported_container("db", false, "running");
                unready.health = Health::Unhealthy;
                unready.message = not_ready.into();
                // db-1: its init container waits (the pod is being made).
                let mut init_waiting = reported_container("init", true, "waiting");
                init_waiting.reason = "PodInitializing".into();
                let mut db_waiting = reported_container("db", false, "waiting");
                db_waiting.reason = "PodInitializing".into();
                // The seed Job's attempt exited with code 3 (restartPolicy OnFailure).
                let mut seed_failed = reported_container("seed", false, "exited");
                seed_failed.exit_code = Some(3);
                seed_failed.reason = "Error".into();
                seed_failed.restarts = 1;
                // The DaemonSet's container crash-loops (exited, restarted by the engine).
                let mut crashing = reported_container("agent", false, "exited");
                crashing.exit_code = Some(137);
                crashing.reason = "CrashLoopBackOff".into();
                crashing.restarts = 4;
                // The bare Pod's image cannot be pulled.
                let mut unpulled = reported_container("probe", false, "");
                unpulled.reason = "ErrImagePull".into();
                unpulled.message = "cannot pull image localhost/nope:1: not found".into();
                vec![
                    reported_pod(
                        &db0,
                        ("StatefulSet", &db),
                        "Running",
                        false,
                        &format!("container db of pod {db0} is not ready: {not_ready}"),
                        vec![init_done, unready],
                    ),
                    reported_pod(
                        &db1,
                        ("StatefulSet", &db),
                        "Pending",
                        false,
                        "",
                        vec![init_waiting, db_waiting],
                    ),
                    reported_pod(
                        &seed_pod,
                        ("Job", &seed),
                        "Pending",
                        false,
                        &format!(
                            "container seed of pod {seed_pod} exited with code 3 after 1 restarts"
                        ),
                        vec![seed_failed],
                    ),
                    reported_pod(
                        &agent_pod,
                        ("DaemonSet", &agent),
                        "Pending",
                        false,
                        &format!(
                            "container agent of pod {agent_pod} exited with code 137 after 4 restarts"
                        ),
                        vec![crashing],
                    ),
                    reported_pod(
                        &probe,
                        ("Pod", &probe),
                        "Pending",
                        false,
                        &format!(
                            "container probe of pod {probe}: cannot pull image localhost/nope:1: not found"
                        ),
                        vec![unpulled],
                    ),
                ]
            }
        };
        let (s, b) = edge.report_with(|_, _| (AppState::Down, reports())).await;
        assert!(s.is_success(), "{backend}: {b}");

        let app_id = canopy_deploy::status::app_id(&id, "stateful");
        let (s, b) = cp
            .get(&cp.at(&format!(
                "/v1/projects/{P}/resource/workloads/applications/{app_id}/clusters/{}",
                edge.id
            )))
            .await;
        assert_eq!(s, StatusCode::OK, "{backend}: {b}");
        let listed = b["appWorkloads"].as_array().expect("appWorkloads");
        let pod = |name: &str| -> &Value {
            listed
                .iter()
                .find(|w| w["name"] == name)
                .unwrap_or_else(|| panic!("{backend}: pod {name} in {b}"))
        };
        let containers = |name: &str| pod(name)["pod"]["containers"].clone();

        // The StatefulSet's first pod: init completed (marked), db waiting as Unhealthy with
        // the probe's message; the pod runs but is not ready.
        assert_eq!(pod(&db0)["pod"]["status"]["state"], "STATE_RUNNING");
        assert_eq!(pod(&db0)["workloadReady"], false, "{backend}: not ready");
        assert_eq!(
            containers(&db0),
            json!([
                {"name": "init", "imageName": "localhost/busybox:canopy-test", "restartCount": 0,
                 "initContainer": true,
                 "status": {"containerStateTerminated":
                     {"exitCode": 0, "message": "", "reason": "Completed"}}},
                {"name": "db", "imageName": "localhost/busybox:canopy-test", "restartCount": 0,
                 "status": {"containerStateWaiting":
                     {"reason": "Unhealthy", "message": not_ready}}},
            ]),
            "{backend}"
        );
        // The second: initializing.
        assert_eq!(
            containers(&db1),
            json!([
                {"name": "init", "imageName": "localhost/busybox:canopy-test", "restartCount": 0,
                 "initContainer": true,
                 "status": {"containerStateWaiting": {"reason": "PodInitializing", "message": ""}}},
                {"name": "db", "imageName": "localhost/busybox:canopy-test", "restartCount": 0,
                 "status": {"containerStateWaiting": {"reason": "PodInitializing", "message": ""}}},
            ]),
            "{backend}"
        );
        // The Job's attempt: terminated with its exit code.
        assert_eq!(
            containers(&seed_pod)[0]["status"],
            json!({"containerStateTerminated":
                {"exitCode": 3, "reason": "Error", "message": "exited with code 3"}}),
            "{backend}"
        );
        assert_eq!(containers(&seed_pod)[0]["restartCount"], 1);
        // The crash loop: waiting in CrashLoopBackOff, its last exit code and restarts said.
        assert_eq!(
            containers(&agent_pod)[0],
            json!({"name": "agent", "imageName": "localhost/busybox:canopy-test",
                   "restartCount": 4,
                   "status": {"containerStateWaiting": {"reason": "CrashLoopBackOff",
                       "message": "exited with code 137 after 4 restarts; restarted with backoff"}}}),
            "{backend}"
        );
        // The image that cannot be pulled.
        assert_eq!(
            containers(&probe)[0]["status"],
            json!({"containerStateWaiting": {"reason": "ErrImagePull",
                "message": "cannot pull image localhost/nope:1: not found"}}),
            "{backend}"
        );
        cp.stop().await;
    }
}

#[tokio::test]
async fn manifests_mask_secrets_for_readers_and_registry_credentials_are_used() {
    let Some(env) = HelmTestEnv::from_env() else {
        return;
    };
    // The chart in the registry with basic authentication.
    let root = env.push_chart("canopy-pair", None, true);
    for cp in TestControlPlane::all().await {
        let mut pkg = HelmPackage::new("pair", &root, "canopy-pair", "0.1.0");
        pkg.username = Some(env.user.clone());
        pkg.auth_token = Some(env.password.clone());
        pkg.parameter_templates = vec![
            json!({"name": "apiToken", "type": "string", "secret": true, "mandatory": true}),
            json!({"name": "greeting", "type": "string", "secret": true}),
        ];
        pkg.image_registry = Some((
            "http://127.0.0.1:55000/edge".into(),
            "puller".into(),
            "pull-secret-1".into(),
        ));
        pkg.create(&cp, P).await;
        let mut edge = enroll(&cp).await;
        let values = json!({"apiToken": "s3cr3t-token-value", "greeting": "hidden-greeting-42"});
        let (s, b) = cp
            .post(
                &deployments_url(&cp, ""),
                &deployment("pair", "1.0.0", values),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{}: {b}", cp.backend);
        let id = b["deploymentId"].as_str().unwrap().to_string();
        let d = edge.poll(10).await.expect("a desired state");
        let app = &d.deployments[0].apps[0];
        let pods = app.pods.as_ref().unwrap();
        assert!(pods.workloads.len() >= 2, "backend and frontend");
        // The image registry's credentials and the chart's pull policy reach the edge.
        let auth = app.registry_auth.as_ref().expect("pull credentials");
        assert_eq!(
            (
                auth.server.as_str(),
                auth.username.as_str(),
                auth.password.as_str()
            ),
            ("127.0.0.1:55000", "puller", "pull-secret-1")
        );
        assert!(pods.workloads.iter().all(|w| {
            w.containers
                .iter()
                .all(|c| c.image_pull_policy == canopy_proto::pods::PullPolicy::IfNotPresent)
        }));

        let token_b64 = "czNjcjN0LXRva2VuLXZhbHVl"; // base64("s3cr3t-token-value")
        let writer = cp
            .http()
            .get(manifest_url(&cp, &id, "pair"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(writer.contains(token_b64), "writers see the manifest as is");
        assert!(writer.contains("hidden-greeting-42"));

        let reader = cp.user_token("viewer", &["default_ao-r"]).await;
        let resp = cp
            .anonymous_http()
            .get(manifest_url(&cp, &id, "pair"))
            .bearer_auth(&reader)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let shown = resp.text().await.unwrap();
        assert!(!shown.contains(token_b64), "{shown}");
        assert!(!shown.contains("hidden-greeting-42"), "{shown}");
        assert!(
            shown.contains("API_TOKEN: '********'")
                || shown.contains("API_TOKEN: \"********\"")
                || shown.contains("API_TOKEN: ********"),
            "{shown}"
        );
        assert!(shown.contains("kind: ConfigMap"), "{shown}");

        // Kept with the deployment: the same after a restart (read back from the store).
        let cp = cp.restart().await;
        let again = cp
            .http()
            .get(manifest_url(&cp, &id, "pair"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(
            again, writer,
            "{}: the manifest survives a restart",
            cp.backend
        );
        let (s, b) = cp.get(&deployments_url(&cp, &format!("/{id}"))).await;
        assert_eq!(s, StatusCode::OK, "{b}");

        // Catalog readers without deployment access: 403.
        let outsider = cp.user_token("catalog-only", &["default_cat-r"]).await;
        let resp = cp
            .anonymous_http()
            .get(manifest_url(&cp, &id, "pair"))
            .bearer_auth(&outsider)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        cp.stop().await;
    }
}

/// Posts a deployment of `pkg` and expects a refusal whose message holds every part, and
/// nothing applied.
async fn refused(
    cp: &TestControlPlane,
    pkg: &HelmPackage,
    values: Value,
    status: StatusCode,
    parts: &[&str],
) -> String {
    let (s, b) = cp
        .post(
            &deployments_url(cp, ""),
            &deployment(&pkg.name, &pkg.version, values),
        )
        .await;
    assert_eq!(s, status, "{}: {b}", cp.backend);
    let m = message(&b).to_string();
    for part in parts {
        assert!(
            m.contains(part),
            "{}: {part:?} missing from {m}",
            cp.backend
        );
    }
    assert_eq!(deployment_count(cp).await, 0, "nothing is applied");
    m
}

#[tokio::test]
async fn bad_charts_and_values_are_refused_with_nothing_applied() {
    let Some(env) = HelmTestEnv::from_env() else {
        return;
    };
    let web = env.push_chart("canopy-web", None, false);
    let auth = env.push_chart("canopy-web", None, true);
    let bad_yaml = env.push_chart("refused/bad-yaml", None, false);
    let cronjob = env.push_chart("refused/bad-cronjob", None, false);
    for cp in TestControlPlane::all().await {
        // A chart version the registry does not have.
        let mut missing = web_package(&web, "1.0.0", "9.9.9");
        missing.name = "missing".into();
        missing.create(&cp, P).await;
        refused(
            &cp,
            &missing,
            json!({}),
            StatusCode::BAD_REQUEST,
            &[
                "application missing:1.0.0",
                "canopy-web",
                "9.9.9",
                "not found",
            ],
        )
        .await;

        // The registry refuses the credentials (and the password is not echoed).
        let mut denied = web_package(&auth, "1.0.0", "0.1.0");
        denied.name = "denied".into();
        denied.username = Some(env.user.clone());
        denied.auth_token = Some("wrong-password-xyz".into());
        denied.create(&cp, P).await;
        let m = refused(
            &cp,
            &denied,
            json!({}),
            StatusCode::BAD_REQUEST,
            &["application denied:1.0.0", "canopy-web", "credentials"],
        )
        .await;
        assert!(!m.contains("wrong-password-xyz"), "{m}");

        // Wrong override type: refused by the parameter template before any render.
        let mut typed = web_package(&web, "1.0.0", "0.1.0");
        typed.name = "typed".into();
        typed.create(&cp, P).await;
        refused(
            &cp,
            &typed,
            json!({"replicaCount": "many"}),
            StatusCode::BAD_REQUEST,
            &["values.replicaCount", "number"],
        )
        .await;

        // A chart that renders invalid YAML: Helm's message, naming the chart.
        let broken = HelmPackage::new("broken", &bad_yaml, "bad-yaml", "0.1.0");
        broken.create(&cp, P).await;
        refused(
            &cp,
            &broken,
            json!({}),
            StatusCode::BAD_REQUEST,
            &["application broken:1.0.0", "bad-yaml:0.1.0"],
        )
        .await;

        // A CronJob: refused naming the kind and the template file.
        let cron = HelmPackage::new("cron", &cronjob, "bad-cronjob", "0.1.0");
        cron.create(&cp, P).await;
        refused(
            &cp,
            &cron,
            json!({}),
            StatusCode::BAD_REQUEST,
            &[
                "application cron:1.0.0",
                "CronJob",
                "templates/cronjob.yaml",
            ],
        )
        .await;

        // A policy that does not allow the chart's registry.
        let (s, b) = cp
            .put(
                &cp.at(&format!("/canopy/v1/projects/{P}/policy")),
                &json!({"allowedImageRegistries": ["registry.example.com/edge"]}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        refused(
            &cp,
            &typed,
            json!({}),
            StatusCode::BAD_REQUEST,
            &[
                "application typed:1.0.0",
                "helmRegistry",
                "allowedImageRegistries",
            ],
        )
        .await;
        cp.stop().await;
    }
}

#[tokio::test]
async fn without_helm_the_server_starts_and_refuses_helm_apps_clearly() {
    let Some(env) = HelmTestEnv::from_env() else {
        return;
    };
    let root = env.push_chart("canopy-web", None, false);
    let cp = TestControlPlane::start_configured(|c| {
        c.helm.helm_bin = Some("/nonexistent/helm".into());
    })
    .await;
    assert!(
        cp.app()
            .helm_cli()
            .unwrap_err()
            .contains("/nonexistent/helm")
    );
    let pkg = web_package(&root, "1.0.0", "0.1.0");
    pkg.create(&cp, P).await;
    refused(
        &cp,
        &pkg,
        json!({}),
        StatusCode::BAD_REQUEST,
        &[
            "application web:1.0.0",
            "cannot render charts",
            "--helm-bin",
        ],
    )
    .await;
    cp.stop().await;
}

/// Render cost per deployment, measured (docs/BENCHMARKS.md, "Helm applications: cost per
/// deployment"): `cargo test -p canopy-server --test helm render_cost -- --ignored --nocapture`.
/// Create (fetch from the chart cache + `helm template` + translation), an update that changes
/// nothing of the application (no render: the result is reused), an update of its values (one
/// render), each timed over HTTP against a SQLite control plane.
#[tokio::test]
#[ignore = "a measurement, not a test: run it by name"]
async fn render_cost_per_deployment() {
    let Some(env) = HelmTestEnv::from_env() else {
        return;
    };
    let root = env.push_chart("canopy-pair", None, false);
    let cp = TestControlPlane::start().await;
    let mut pkg = HelmPackage::new("pair", &root, "canopy-pair", "0.1.0");
    pkg.parameter_templates = vec![json!({"name": "greeting", "type": "string"})];
    pkg.create(&cp, P).await;
    let median = |mut v: Vec<std::time::Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (mut create, mut same, mut values) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..15 {
        let t = std::time::Instant::now();
        let (s, b) = cp
            .post(
                &deployments_url(&cp, ""),
                &deployment("pair", "1.0.0", json!({"greeting": format!("hi {i}")})),
            )
            .await;
        create.push(t.elapsed());
        assert_eq!(s, StatusCode::OK, "{b}");
        let id = b["deploymentId"].as_str().unwrap().to_string();
        let mut body = deployment("pair", "1.0.0", json!({"greeting": format!("hi {i}")}));
        body["displayName"] = json!(format!("renamed {i}"));
        let t = std::time::Instant::now();
        let (s, b) = cp
            .put(&deployments_url(&cp, &format!("/{id}")), &body)
            .await;
        same.push(t.elapsed());
        assert_eq!(s, StatusCode::OK, "{b}");
        body["overrideValues"][0]["values"]["greeting"] = json!(format!("bye {i}"));
        let t = std::time::Instant::now();
        let (s, b) = cp
            .put(&deployments_url(&cp, &format!("/{id}")), &body)
            .await;
        values.push(t.elapsed());
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    println!(
        "create (render): median {:?}\nupdate, application unchanged (no render): median {:?}\nupdate of values (render): median {:?}",
        median(create),
        median(same),
        median(values)
    );
    cp.stop().await;
}

/// Whether the control plane runs a `helm template` with the test Helm binary (a release name
/// `b-...`, as Canopy names releases). Only gates the start of the check below: another
/// test's render at that moment could make it start early, which would weaken the check (the
/// web deployment could then commit before the slow render began), not fail it.
fn helm_template_running(helm: &std::path::Path) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        cmd.starts_with(&*helm.to_string_lossy()) && cmd.contains("template") && cmd.contains("b-")
    })
}

#[tokio::test]
async fn renders_hold_no_lock_and_are_bounded_in_time() {
    let Some(env) = HelmTestEnv::from_env() else {
        return;
    };
    let slow_root = env.push_chart("refused/slow", None, false);
    let web_root = env.push_chart("canopy-web", None, false);
    let cp = TestControlPlane::start_configured(|c| {
        c.helm.render.timeout = std::time::Duration::from_secs(4);
    })
    .await;
    HelmPackage::new("slow", &slow_root, "slow", "0.1.0")
        .create(&cp, P)
        .await;
    web_package(&web_root, "1.0.0", "0.1.0")
        .create(&cp, P)
        .await;

    // A chart that renders for longer than the bound...
    let http = cp.http().clone();
    let url = deployments_url(&cp, "");
    let slow = tokio::spawn(async move {
        http.post(url)
            .json(&deployment("slow", "1.0.0", json!({})))
            .send()
            .await
            .unwrap()
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !helm_template_running(&env.helm) {
        assert!(
            std::time::Instant::now() < deadline,
            "helm template never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // ...does not hold up other deployments while it renders.
    let (s, b) = cp
        .post(
            &deployments_url(&cp, ""),
            &deployment("web", "1.0.0", json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(
        !slow.is_finished(),
        "the web deployment did not wait for the slow render"
    );
    let resp = slow.await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let b: Value = resp.json().await.unwrap();
    for part in [
        "application slow:1.0.0",
        "slow:0.1.0",
        "did not render within 4 s",
    ] {
        assert!(message(&b).contains(part), "{part:?} missing: {b}");
    }
    assert_eq!(deployment_count(&cp).await, 1, "only the web deployment");
    cp.stop().await;
}
