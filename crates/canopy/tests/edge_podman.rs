//! Canopy end to end with real edges: the control plane in process (short fleet timings), edge
//! agents as real `canopy agent` processes, and real containers on the Podman service named by
//! `CANOPY_TEST_DOCKER_HOST` (start it with `scripts/podman.sh`, which also makes the image
//! `localhost/busybox:canopy-test`). Without the variable the tests are skipped with a note,
//! except under CI (env `CI` set), where that is a failure.
//!
//! The story follows the example package `examples/web-demo` (a web server and a status page
//! that reaches it by name) from deployment through upgrade, moves between edges by label, agent
//! crashes and a control-plane outage, to deletion; then the agent's refusals (revoked token,
//! removed edge) through the real binary.
//!
//! Isolation: every run has its own project (so its namespace network has a name of its own),
//! its own host ports, and one driver scope per agent (two agents on one engine must not
//! garbage-collect each other's containers). A guard removes everything of those scopes, even
//! when a test fails, and prints the agents' logs then.

#[path = "common/edge_support.rs"]
mod support;

use std::time::Duration;

use canopy_server::hub::HubConfig;
use canopy_testkit::{TestControlPlane, example};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{
    AgentProcess, Cleanup, DEPLOYMENT, Engine, IMAGE, MANAGED, RUN_LABEL, SCOPE, engine_host,
    eventually, free_ports, http_body, unique,
};

const GREETING_1_0: &str = "Hello from Canopy";
const GREETING_1_1: &str = "Hello again from Canopy 1.1";

fn fast() -> HubConfig {
    HubConfig {
        heartbeat: Duration::from_secs(1),
        edge_timeout: Duration::from_secs(3),
        no_target_grace: Duration::from_secs(3),
    }
}

// ------------------------------------------------------------------ control-plane helpers

async fn enrollment_token(cp: &TestControlPlane, project: &str) -> (String, String) {
    let (s, b) = cp
        .post(
            &cp.at(&format!("/canopy/v1/projects/{project}/enrollment-tokens")),
            &json!({"description": "edge_podman"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    (
        b["token"]["id"].as_str().expect("token id").to_string(),
        b["secret"].as_str().expect("token secret").to_string(),
    )
}

fn deployments_url(cp: &TestControlPlane, project: &str, rest: &str) -> String {
    cp.at(&format!(
        "/v1/projects/{project}/appdeployment/deployments{rest}"
    ))
}

/// The deployment's state and body.
async fn deployment(cp: &TestControlPlane, project: &str, id: &str) -> (String, Value) {
    let (s, b) = cp
        .get(&deployments_url(cp, project, &format!("/{id}")))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let state = b["deployment"]["status"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (state, b["deployment"].clone())
}

/// Waits until the deployment is in `want`.
async fn deployment_reaches(cp: &TestControlPlane, project: &str, id: &str, want: &str) -> Value {
    eventually(&format!("deployment {id} {want}"), async || {
        let (state, d) = deployment(cp, project, id).await;
        if state == want {
            Ok(d)
        } else {
            Err(format!("{state}: {}", d["status"]))
        }
    })
    .await
}

/// The deployment's clusters (edges) view.
async fn clusters(cp: &TestControlPlane, project: &str, id: &str) -> Vec<Value> {
    let (s, b) = cp
        .get(&deployments_url(cp, project, &format!("/{id}/clusters")))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["clusters"].as_array().cloned().unwrap_or_default()
}

async fn edge(cp: &TestControlPlane, project: &str, name: &str) -> (StatusCode, Value) {
    let (s, b) = cp
        .get(&cp.at(&format!("/canopy/v1/projects/{project}/edges/{name}")))
        .await;
    (s, b["edge"].clone())
}

async fn set_labels(cp: &TestControlPlane, project: &str, edge: &str, change: Value) {
    let resp = cp
        .http()
        .patch(cp.at(&format!(
            "/canopy/v1/projects/{project}/edges/{edge}/labels"
        )))
        .json(&change)
        .send()
        .await
        .expect("label request");
    let s = resp.status();
    assert_eq!(s, StatusCode::OK, "{:?}", resp.text().await);
}

/// Waits until the page on `port` answers `want` (exactly, or as a prefix when `prefix`).
async fn page_says(port: u16, want: &str) -> String {
    eventually(&format!("port {port} to answer {want:?}"), async || {
        let body = http_body(port).await?;
        if body.starts_with(want) {
            Ok(body)
        } else {
            Err(format!("it answered {body:?}"))
        }
    })
    .await
}

/// The deployment's containers on the engine (whatever the scope), by name.
async fn containers_of(engine: &Engine, id: &str) -> Vec<support::Container> {
    let mut v = engine
        .containers(DEPLOYMENT, id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// Waits until exactly the deployment's two containers run, all in `scope`.
async fn runs_on(engine: &Engine, id: &str, scope: &str) -> Vec<support::Container> {
    eventually(
        &format!("deployment {id} to run its 2 containers in scope {scope} only"),
        async || {
            let v = engine.containers(DEPLOYMENT, id).await?;
            let ok = v.len() == 2
                && v.iter().all(|c| {
                    c.state == "running" && c.labels.get(SCOPE).map(String::as_str) == Some(scope)
                });
            let seen: Vec<String> = v
                .iter()
                .map(|c| format!("{} {} scope={:?}", c.name, c.state, c.labels.get(SCOPE)))
                .collect();
            if ok { Ok(v) } else { Err(format!("{seen:?}")) }
        },
    )
    .await
}

/// Waits until nothing of `scope` is left on the engine: containers, volumes, networks.
async fn scope_is_empty(engine: &Engine, scope: &str) {
    eventually(
        &format!("every container, volume and network of scope {scope} removed"),
        async || {
            let containers = engine.containers(SCOPE, scope).await?;
            let volumes = engine.objects("volume", SCOPE, scope).await?;
            let networks = engine.objects("network", SCOPE, scope).await?;
            if containers.is_empty() && volumes.is_empty() && networks.is_empty() {
                Ok(())
            } else {
                let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
                Err(format!(
                    "containers {names:?}, volumes {volumes:?}, networks {networks:?}"
                ))
            }
        },
    )
    .await
}

// ------------------------------------------------------------------ the story

/// The web-demo package on real edges: deployment by labels, name resolution between the two
/// apps, upgrade, moving between edges by label, an agent SIGKILLed and restarted without
/// duplicates or restarts, a control-plane outage the workloads do not notice (and the silent
/// edge shown UNKNOWN with its last known state), and deletion leaving nothing of Canopy behind
/// while objects made by others are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_demo_on_real_edges() {
    let Some(host) = engine_host("web_demo_on_real_edges") else {
        return;
    };
    let run = unique();
    let project = format!("e2e-{run}");
    let engine = Engine::new(&host);
    let tmp = tempfile::tempdir().expect("temp dir");
    let logs = tmp.path().join("logs");
    let (scope_a, scope_b) = (format!("e2e-{run}-a"), format!("e2e-{run}-b"));
    let _cleanup = Cleanup {
        engine: engine.clone(),
        scopes: vec![scope_a.clone(), scope_b.clone()],
        run: run.clone(),
        logs: logs.clone(),
    };

    // Objects Canopy did not make, which nothing may touch: a plain container, and one that
    // looks like Canopy's but belongs to another scope.
    let plain = format!("e2e-{run}-plain");
    let foreign = format!("e2e-{run}-foreign");
    let other_scope = format!("e2e-{run}-other");
    engine.run_decoy(&plain, &[(RUN_LABEL, &run)]).await;
    engine
        .run_decoy(
            &foreign,
            &[
                (RUN_LABEL, &run),
                (MANAGED, "true"),
                (SCOPE, &other_scope),
                ("io.canopy.project", &project),
            ],
        )
        .await;

    let mut cp = TestControlPlane::start_fleet(fast()).await;
    cp.create_project(&project).await;
    for dir in ["web-demo", "web-demo-1.1.0"] {
        let (s, b) = cp.upload_dir(&project, &example(dir)).await;
        assert_eq!(s, StatusCode::OK, "upload {dir}: {b}");
    }
    let (_, token) = enrollment_token(&cp, &project).await;

    let mut a = AgentProcess::new(
        "edge-a",
        &cp.url,
        &host,
        &scope_a,
        &[("demo", "on"), ("site", "paris")],
        tmp.path(),
        &logs,
    );
    let mut b = AgentProcess::new(
        "edge-b",
        &cp.url,
        &host,
        &scope_b,
        &[("site", "lyon")],
        tmp.path(),
        &logs,
    );
    a.start(Some(&token));
    b.start(Some(&token));
    for agent in [&a, &b] {
        eventually(
            &format!("{} enrolled and connected", agent.name),
            async || {
                let (s, e) = edge(&cp, &project, &agent.name).await;
                if s == StatusCode::OK && e["connection"] == "CONNECTED" {
                    Ok(())
                } else {
                    Err(format!("{s}: {e}"))
                }
            },
        )
        .await;
    }

    // 1. Deployed by labels to edge A: both apps answer, the status page reaches web by name.
    let [web_port, status_port] = free_ports();
    let (s, created) = cp
        .post(
            &deployments_url(&cp, &project, ""),
            &json!({
                "appName": "web-demo", "appVersion": "1.0.0", "displayName": "e2e",
                "allAppTargetClusters": {"labels": {"demo": "on"}},
                "overrideValues": [
                    {"appName": "web", "values": {"image": IMAGE, "port": web_port}},
                    {"appName": "status", "values": {"image": IMAGE, "port": status_port}},
                ],
            }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{created}");
    let id = created["deploymentId"]
        .as_str()
        .expect("deployment id")
        .to_string();
    assert_eq!(page_says(web_port, GREETING_1_0).await, GREETING_1_0);
    page_says(status_port, &format!("web says: {GREETING_1_0}")).await;
    deployment_reaches(&cp, &project, &id, "RUNNING").await;
    runs_on(&engine, &id, &scope_a).await;
    let cl = clusters(&cp, &project, &id).await;
    assert_eq!(cl.len(), 1, "{cl:?}");
    assert_eq!(cl[0]["name"], "edge-a", "{cl:?}");
    assert_eq!(cl[0]["status"]["state"], "RUNNING", "{cl:?}");
    let (s, w) = cp
        .get(&cp.at(&format!(
            "/canopy/v1/projects/{project}/edges/edge-a/workloads"
        )))
        .await;
    assert_eq!(s, StatusCode::OK, "{w}");
    let apps = w["apps"].as_array().expect("apps");
    assert_eq!(apps.len(), 2, "{w}");
    for app in apps {
        assert_eq!(app["deploymentId"], id.as_str(), "{app}");
        assert_eq!(app["state"], "RUNNING", "{app}");
        let workloads = app["workloads"].as_array().expect("workloads");
        assert_eq!(workloads.len(), 1, "{app}");
        assert_eq!(workloads[0]["state"], "running", "{app}");
        assert_eq!(workloads[0]["image"], IMAGE, "{app}");
        let port = if app["app"] == "web" {
            web_port
        } else {
            status_port
        };
        assert_eq!(workloads[0]["ports"][0]["hostPort"], port, "{app}");
    }

    // 2. Upgrade to 1.1.0: the new greeting on the same port, RUNNING again, no extra container.
    let (_, current) = deployment(&cp, &project, &id).await;
    let mut body = current.clone();
    body["appVersion"] = json!("1.1.0");
    let (s, up) = cp
        .put(&deployments_url(&cp, &project, &format!("/{id}")), &body)
        .await;
    assert_eq!(s, StatusCode::OK, "{up}");
    page_says(web_port, GREETING_1_1).await;
    // The status page (not replaced) reaches the new web container by the same name.
    page_says(status_port, &format!("web says: {GREETING_1_1}")).await;
    let d = deployment_reaches(&cp, &project, &id, "RUNNING").await;
    assert_eq!(d["appVersion"], "1.1.0", "{d}");
    runs_on(&engine, &id, &scope_a).await;

    // 3. Labels: A loses the label (its containers, volume and network go), B gains it (runs it).
    set_labels(&cp, &project, "edge-a", json!({"remove": ["demo"]})).await;
    scope_is_empty(&engine, &scope_a).await;
    set_labels(&cp, &project, "edge-b", json!({"set": {"demo": "on"}})).await;
    page_says(web_port, GREETING_1_1).await;
    page_says(status_port, &format!("web says: {GREETING_1_1}")).await;
    deployment_reaches(&cp, &project, &id, "RUNNING").await;
    runs_on(&engine, &id, &scope_b).await;
    let cl = clusters(&cp, &project, &id).await;
    assert_eq!(cl.len(), 1, "{cl:?}");
    assert_eq!(cl[0]["name"], "edge-b", "{cl:?}");

    // 4. B's agent SIGKILLed and restarted (same data dir, no token): it adopts its containers;
    //    no duplicates, and healthy containers are not restarted.
    let before = healthy_identities(&engine, &id).await;
    b.kill().await;
    b.start(None);
    b.wait_for_log(
        "edge-b's restarted agent to apply its desired state",
        &["applied desired state", "connected to the control plane"],
    )
    .await;
    deployment_reaches(&cp, &project, &id, "RUNNING").await;
    let after = identities(&engine, &id).await;
    assert_eq!(
        before, after,
        "the restarted agent must adopt the running containers, not duplicate or restart them"
    );
    assert_eq!(containers_of(&engine, &id).await.len(), 2);

    // 5. Control plane down: the workloads keep serving. The edge's agent dies meanwhile, so
    //    when the control plane is back the edge is silent: UNKNOWN with the last known state;
    //    RUNNING again once the agent is back.
    let stopped = cp.stop_keep_data().await;
    assert_eq!(http_body(web_port).await.as_deref(), Ok(GREETING_1_1));
    b.kill().await;
    assert_eq!(http_body(web_port).await.as_deref(), Ok(GREETING_1_1));
    page_says(status_port, &format!("web says: {GREETING_1_1}")).await;
    cp = stopped.start_again().await;
    deployment_reaches(&cp, &project, &id, "UNKNOWN").await;
    let cl = clusters(&cp, &project, &id).await;
    let message = cl[0]["status"]["message"].as_str().unwrap_or_default();
    assert_eq!(cl[0]["status"]["state"], "UNKNOWN", "{cl:?}");
    assert!(
        message.contains("silent") && message.contains("last known state: RUNNING"),
        "the cluster message names the silence and the last known state: {cl:?}"
    );
    b.start(None);
    deployment_reaches(&cp, &project, &id, "RUNNING").await;
    assert_eq!(
        identities(&engine, &id).await,
        after,
        "nothing restarted across the outage"
    );

    // 6. Deleted: every container, volume and network the agents made is gone; what others
    //    made is untouched.
    let (s, del) = cp
        .delete(&deployments_url(&cp, &project, &format!("/{id}")))
        .await;
    assert_eq!(s, StatusCode::OK, "{del}");
    scope_is_empty(&engine, &scope_b).await;
    scope_is_empty(&engine, &scope_a).await;
    assert!(containers_of(&engine, &id).await.is_empty());
    let mine = engine
        .containers(RUN_LABEL, &run)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut names: Vec<(&str, &str)> = mine
        .iter()
        .map(|c| (c.name.as_str(), c.state.as_str()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![(foreign.as_str(), "running"), (plain.as_str(), "running")],
        "containers Canopy did not make (or made in another scope) are left alone"
    );
    assert!(
        http_body(web_port).await.is_err(),
        "nothing serves on the port any more"
    );

    a.kill().await;
    b.kill().await;
    cp.stop().await;
}

/// The deployment's containers' identities, once the web container's health check has passed
/// (so the comparison is about healthy containers).
async fn healthy_identities(engine: &Engine, id: &str) -> Vec<support::Identity> {
    eventually(
        "the deployment's containers running, web healthy",
        async || {
            let v = identities_now(engine, id).await?;
            let web_healthy = v
                .iter()
                .any(|i| i.name.ends_with("-web-httpd") && i.health == "healthy");
            if v.len() == 2 && web_healthy {
                Ok(v)
            } else {
                Err(format!("{v:?}"))
            }
        },
    )
    .await
}

async fn identities_now(engine: &Engine, id: &str) -> Result<Vec<support::Identity>, String> {
    let ids: Vec<String> = engine
        .containers(DEPLOYMENT, id)
        .await?
        .into_iter()
        .map(|c| c.id)
        .collect();
    engine.identities(&ids).await
}

async fn identities(engine: &Engine, id: &str) -> Vec<support::Identity> {
    identities_now(engine, id)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

// ------------------------------------------------------------------ refusals

/// The agent's refusals through the real binary against the real server: no token and no
/// credential, a revoked enrollment token, and an edge removed while its agent runs. Each
/// exits non-zero with a message saying what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_stops_with_a_clear_message_when_refused() {
    let Some(host) = engine_host("the_agent_stops_with_a_clear_message_when_refused") else {
        return;
    };
    let run = unique();
    let project = format!("e2e-{run}");
    let engine = Engine::new(&host);
    let tmp = tempfile::tempdir().expect("temp dir");
    let logs = tmp.path().join("logs");
    let scopes: Vec<String> = ["none", "revoked", "removed"]
        .iter()
        .map(|s| format!("e2e-{run}-{s}"))
        .collect();
    let _cleanup = Cleanup {
        engine,
        scopes: scopes.clone(),
        run,
        logs: logs.clone(),
    };
    let cp = TestControlPlane::start_fleet(fast()).await;
    cp.create_project(&project).await;
    let agent = |name: &str, scope: &str| {
        AgentProcess::new(name, &cp.url, &host, scope, &[], tmp.path(), &logs)
    };

    // Neither a credential nor a token.
    let mut none = agent("edge-none", &scopes[0]);
    none.start(None);
    let (code, log) = none.exit(Duration::from_secs(60)).await;
    assert_ne!(code, Some(0), "{log}");
    assert!(
        log.contains("not enrolled") && log.contains("--enroll-token"),
        "{log}"
    );

    // A revoked enrollment token: refused, the message says so; no edge is created.
    let (token_id, secret) = enrollment_token(&cp, &project).await;
    let (s, r) = cp
        .delete(&cp.at(&format!(
            "/canopy/v1/projects/{project}/enrollment-tokens/{token_id}"
        )))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let mut revoked = agent("edge-revoked", &scopes[1]);
    revoked.start(Some(&secret));
    let (code, log) = revoked.exit(Duration::from_secs(60)).await;
    assert_ne!(code, Some(0), "{log}");
    assert!(
        log.contains("revoked") && log.contains("enrollment"),
        "the agent says its enrollment token was revoked: {log}"
    );
    assert!(!log.contains(&secret), "the token is never logged: {log}");
    assert_eq!(
        edge(&cp, &project, "edge-revoked").await.0,
        StatusCode::NOT_FOUND
    );

    // An edge removed while its agent runs: the agent stops and says to re-enroll.
    let (_, secret) = enrollment_token(&cp, &project).await;
    let mut removed = agent("edge-removed", &scopes[2]);
    removed.start(Some(&secret));
    eventually("edge-removed enrolled and connected", async || {
        let (s, e) = edge(&cp, &project, "edge-removed").await;
        if s == StatusCode::OK && e["connection"] == "CONNECTED" {
            Ok(())
        } else {
            Err(format!("{s}: {e}"))
        }
    })
    .await;
    let (s, r) = cp
        .delete(&cp.at(&format!("/canopy/v1/projects/{project}/edges/edge-removed")))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let (code, log) = removed.exit(Duration::from_secs(60)).await;
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("re-enroll"), "{log}");
}

// ------------------------------------------------------------------ two edges, one engine

/// A package of one app whose one container keeps a file in a named volume (no host port, so
/// two edges on one machine can both run it).
fn write_keeper_package(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).expect("package dir");
    let files = [
        (
            "keeper.yaml",
            r#"specSchema: DeploymentPackage
schemaVersion: "0.1"
$schema: "https://schema.intel.com/catalog.orchestrator/0.1/schema"
name: keeper
displayName: Keeper
description: One container keeping a file in a volume
version: 1.0.0
applications:
  - name: store
    version: 1.0.0
defaultNamespaces:
  store: keeper
deploymentProfiles:
  - name: default
    displayName: Default
    applicationProfiles:
      - application: store
        profile: default
defaultProfile: default
"#,
        ),
        (
            "store.yaml",
            r#"specSchema: Application
schemaVersion: "0.1"
$schema: "https://schema.intel.com/catalog.orchestrator/0.1/schema"
name: store
version: 1.0.0
description: Keeps a file in its volume
templateFileName: store.yaml.j2
defaultProfile: default
profiles:
  - name: default
    valuesFileName: store-values.yaml
"#,
        ),
        (
            "store.yaml.j2",
            r#"containers:
  - name: keeper
    image: {{ values.image | tojson }}
    command: ["sh", "-c"]
    args:
      - "[ -f /data/first ] || date > /data/first; trap 'exit 0' TERM; sleep 100000 & wait"
    volumes:
      - name: data
        mountPath: /data
"#,
        ),
        ("store-values.yaml", &format!("image: {IMAGE}\n")),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("package file");
    }
}

/// The engine's creation time of a volume.
async fn volume_created(engine: &Engine, name: &str) -> String {
    engine
        .podman(&["volume", "inspect", name, "--format", "{{.CreatedAt}}"])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .trim()
        .to_string()
}

/// Two edges enrolled on one machine, one container engine, no `--scope`: each agent owns the
/// objects of its own edge id. The same deployment runs once per edge (names do not collide);
/// when one edge loses the deployment and its agent restarts, the other edge's container,
/// volume and network are untouched. Edge B's agent runs with a relative `--data-dir`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_edges_on_one_engine_never_touch_each_others_objects() {
    let Some(host) = engine_host("two_edges_on_one_engine_never_touch_each_others_objects") else {
        return;
    };
    let run = unique();
    let project = format!("e2e-{run}");
    let engine = Engine::new(&host);
    let tmp = tempfile::tempdir().expect("temp dir");
    let logs = tmp.path().join("logs");
    let mut cleanup = Cleanup {
        engine: engine.clone(),
        scopes: Vec::new(),
        run: run.clone(),
        logs: logs.clone(),
    };
    let package = tmp.path().join("keeper");
    write_keeper_package(&package);
    let cp = TestControlPlane::start_fleet(fast()).await;
    cp.create_project(&project).await;
    let (s, b) = cp.upload_dir(&project, &package).await;
    assert_eq!(s, StatusCode::OK, "upload keeper: {b}");
    let (_, token) = enrollment_token(&cp, &project).await;

    let mut a = AgentProcess::new(
        "edge-a",
        &cp.url,
        &host,
        "",
        &[("role", "store"), ("site", "a")],
        tmp.path(),
        &logs,
    );
    let mut b = AgentProcess::new(
        "edge-b",
        &cp.url,
        &host,
        "",
        &[("role", "store"), ("site", "b")],
        tmp.path(),
        &logs,
    );
    b.in_directory(tmp.path());
    a.start(Some(&token));
    b.start(Some(&token));
    for agent in [&a, &b] {
        eventually(
            &format!("{} enrolled and connected", agent.name),
            async || {
                let (s, e) = edge(&cp, &project, &agent.name).await;
                if s == StatusCode::OK && e["connection"] == "CONNECTED" {
                    Ok(())
                } else {
                    Err(format!("{s}: {e}"))
                }
            },
        )
        .await;
    }
    let (owner_a, owner_b) = (a.edge_id(), b.edge_id());
    assert_ne!(owner_a, owner_b);
    cleanup.scopes = vec![owner_a.clone(), owner_b.clone()];
    assert!(
        tmp.path().join("agent-edge-b/credential").exists(),
        "the relative --data-dir is under the agent's working directory"
    );

    // One deployment, both edges: one container per edge, each in its owner's scope.
    let (s, created) = cp
        .post(
            &deployments_url(&cp, &project, ""),
            &json!({
                "appName": "keeper", "appVersion": "1.0.0", "displayName": "keeper",
                "allAppTargetClusters": {"labels": {"role": "store"}},
            }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{created}");
    let id = created["deploymentId"].as_str().expect("id").to_string();
    deployment_reaches(&cp, &project, &id, "RUNNING").await;
    let both = eventually("the deployment's container on each edge", async || {
        let v = engine.containers(DEPLOYMENT, &id).await?;
        let scopes: std::collections::BTreeSet<&str> = v
            .iter()
            .filter(|c| c.state == "running")
            .filter_map(|c| c.labels.get(SCOPE).map(String::as_str))
            .collect();
        let want: std::collections::BTreeSet<&str> = [owner_a.as_str(), owner_b.as_str()].into();
        if v.len() == 2 && scopes == want {
            Ok(v)
        } else {
            Err(format!("{v:?}"))
        }
    })
    .await;
    assert_ne!(both[0].name, both[1].name);
    let of_b = |kind: &'static str| {
        let engine = engine.clone();
        let owner = owner_b.clone();
        async move { engine.objects(kind, SCOPE, &owner).await.unwrap() }
    };
    let (volumes_b, networks_b) = (of_b("volume").await, of_b("network").await);
    assert_eq!(volumes_b.len(), 1, "{volumes_b:?}");
    assert_eq!(networks_b.len(), 1, "{networks_b:?}");
    assert_eq!(
        engine
            .objects("volume", SCOPE, &owner_a)
            .await
            .unwrap()
            .len(),
        1,
        "edge A has a volume of its own"
    );
    let b_container: Vec<String> = both
        .iter()
        .filter(|c| c.labels.get(SCOPE) == Some(&owner_b))
        .map(|c| c.id.clone())
        .collect();
    let b_before = engine.identities(&b_container).await.unwrap();
    let b_volume_created = volume_created(&engine, &volumes_b[0]).await;

    // Edge A loses the deployment: its objects go, edge B's stay.
    set_labels(&cp, &project, "edge-a", json!({"remove": ["role"]})).await;
    scope_is_empty(&engine, &owner_a).await;
    // Edge A's agent restarts (its desired state is empty now): its first pass touches nothing
    // of edge B's either.
    a.kill().await;
    a.start(None);
    a.wait_for_log(
        "edge A's restarted agent applied its desired state",
        &["applied desired state", "connected to the control plane"],
    )
    .await;
    deployment_reaches(&cp, &project, &id, "RUNNING").await;
    assert_eq!(
        engine.identities(&b_container).await.unwrap(),
        b_before,
        "edge B's container was neither removed nor restarted"
    );
    assert_eq!(of_b("volume").await, volumes_b, "edge B's volume is there");
    assert_eq!(
        volume_created(&engine, &volumes_b[0]).await,
        b_volume_created,
        "and it is the same volume"
    );
    assert_eq!(
        of_b("network").await,
        networks_b,
        "edge B's network is there"
    );

    // Deleted: edge B's objects go too.
    let (s, del) = cp
        .delete(&deployments_url(&cp, &project, &format!("/{id}")))
        .await;
    assert_eq!(s, StatusCode::OK, "{del}");
    scope_is_empty(&engine, &owner_b).await;
    a.kill().await;
    b.kill().await;
    cp.stop().await;
}
