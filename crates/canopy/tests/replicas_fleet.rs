//! Fleet state across real `canopy server` replicas (issue 13, items 1, 3, 4 and 9): two
//! replica processes on one PostgreSQL database, and a real `canopy agent` process running a
//! real container on Podman, given both replicas' addresses.
//!
//! The agent connects to replica B; the package is uploaded and the deployment created on
//! replica A; the change feed carries it to B, whose long-poll hands it to the agent, and the
//! agent's status, flushed by B, shows RUNNING when A is asked. Then B is killed with SIGKILL
//! while the container runs: the agent moves to A with its backoff and resumes from the
//! generation it holds, so nothing is delivered again and the container is not recreated,
//! and A still shows the deployment RUNNING and the edge CONNECTED.
//!
//! Needs `CANOPY_TEST_DATABASE_URL` and Podman (`CANOPY_TEST_DOCKER_HOST`); under CI a missing
//! one fails the test.

#[path = "common/edge_support.rs"]
#[allow(dead_code, unused_imports)] // shared with edge_podman.rs, which uses the rest
mod support;

use std::path::Path;

use canopy_testkit::replicas::{ReplicaSet, ReplicaSetOptions};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{AgentProcess, Cleanup, DEPLOYMENT, Engine, IMAGE, engine_host, eventually, unique};

/// A package of one long-running container on the local test image.
fn write_package(dir: &Path) {
    std::fs::create_dir_all(dir).expect("package dir");
    let files = [
        (
            "sleeper.yaml",
            r#"specSchema: DeploymentPackage
schemaVersion: "0.1"
$schema: "https://schema.intel.com/catalog.orchestrator/0.1/schema"
name: sleeper
displayName: Sleeper
description: One container that waits
version: 1.0.0
applications:
  - name: sleep
    version: 1.0.0
deploymentProfiles:
  - name: default
    displayName: Default
    applicationProfiles:
      - application: sleep
        profile: default
defaultProfile: default
"#
            .to_string(),
        ),
        (
            "sleep.yaml",
            r#"specSchema: Application
schemaVersion: "0.1"
$schema: "https://schema.intel.com/catalog.orchestrator/0.1/schema"
name: sleep
version: 1.0.0
description: Waits
templateFileName: sleep.yaml.j2
defaultProfile: default
profiles:
  - name: default
    valuesFileName: sleep-values.yaml
"#
            .to_string(),
        ),
        (
            "sleep.yaml.j2",
            r#"containers:
  - name: sleeper
    image: {{ values.image | tojson }}
    command: ["sh", "-c"]
    args: ["trap 'exit 0' TERM; sleep 100000 & wait"]
"#
            .to_string(),
        ),
        ("sleep-values.yaml", format!("image: {IMAGE}\n")),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("package file");
    }
}

async fn send(req: reqwest::RequestBuilder, token: &str) -> (StatusCode, Value) {
    let resp = req.bearer_auth(token).send().await.expect("request");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The deployment's state as replica `base` shows it.
async fn deployment_state(set: &ReplicaSet, base: &str, id: &str) -> Result<String, String> {
    let (s, b) = send(
        set.http().get(format!(
            "{base}/v1/projects/default/appdeployment/deployments/{id}"
        )),
        set.admin_token(),
    )
    .await;
    if s != StatusCode::OK {
        return Err(format!("{s}: {b}"));
    }
    Ok(b["deployment"]["status"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

/// The edge as replica `base` shows it.
async fn edge(set: &ReplicaSet, base: &str, name: &str) -> Result<Value, String> {
    let (s, b) = send(
        set.http()
            .get(format!("{base}/canopy/v1/projects/default/edges/{name}")),
        set.admin_token(),
    )
    .await;
    if s == StatusCode::OK {
        Ok(b["edge"].clone())
    } else {
        Err(format!("{s}: {b}"))
    }
}

fn count(log: &str, what: &str) -> usize {
    log.matches(what).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_made_on_one_replica_runs_on_an_agent_of_another_and_survives_that_replica_being_killed()
 {
    let Some(host) = engine_host("replicas_fleet") else {
        return;
    };
    let Some(mut set) = ReplicaSet::start(
        Path::new(env!("CARGO_BIN_EXE_canopy")),
        ReplicaSetOptions {
            replicas: 2,
            balancer: false,
            ..ReplicaSetOptions::default()
        },
    )
    .await
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "under CI the replica tests need CANOPY_TEST_DATABASE_URL"
        );
        eprintln!("skipped: CANOPY_TEST_DATABASE_URL is not set");
        return;
    };
    let (a, b) = (set.url(0).to_string(), set.url(1).to_string());
    let run = unique();
    let engine = Engine::new(&host);
    let tmp = tempfile::tempdir().expect("temp dir");
    let logs = tmp.path().join("logs");
    let mut cleanup = Cleanup {
        engine: engine.clone(),
        scopes: Vec::new(),
        run: run.clone(),
        logs: logs.clone(),
    };

    // The enrollment token is made on A; the agent is given B first, then A.
    let (s, token) = send(
        set.http()
            .post(format!("{a}/canopy/v1/projects/default/enrollment-tokens"))
            .json(&json!({"description": "replicas_fleet"})),
        set.admin_token(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{token}");
    let token = token["secret"].as_str().expect("secret").to_string();
    let name = format!("replica-edge-{run}");
    let site = format!("replicas-{run}");
    let mut agent = AgentProcess::new(
        &name,
        &format!("{b},{a}"),
        &host,
        "",
        &[("site", &site)],
        tmp.path(),
        &logs,
    );
    agent.start(Some(&token));
    eventually(
        "the edge enrolled on B and seen CONNECTED on A",
        async || {
            let e = edge(&set, &a, &name).await?;
            if e["connection"] == "CONNECTED" {
                Ok(())
            } else {
                Err(e.to_string())
            }
        },
    )
    .await;
    cleanup.scopes = vec![agent.edge_id()];

    // Upload and deploy on A.
    let package = tmp.path().join("sleeper");
    write_package(&package);
    let mut form = reqwest::multipart::Form::new();
    for (file, content) in canopy_testkit::read_dir_files(&package) {
        form = form.part(
            "files",
            reqwest::multipart::Part::bytes(content).file_name(file),
        );
    }
    let (s, b_up) = send(
        set.http()
            .post(format!("{a}/v3/projects/default/catalog/upload"))
            .multipart(form),
        set.admin_token(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "upload on A: {b_up}");
    let (s, created) = send(
        set.http()
            .post(format!("{a}/v1/projects/default/appdeployment/deployments"))
            .json(&json!({
                "appName": "sleeper", "appVersion": "1.0.0", "displayName": "across replicas",
                "allAppTargetClusters": {"labels": {"site": site}},
            })),
        set.admin_token(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "create on A: {created}");
    let id = created["deploymentId"].as_str().expect("id").to_string();

    // The agent (on B) runs it; A sees RUNNING (B's flushed status, through the feed).
    let running = eventually("the container running on the agent's engine", async || {
        let v = engine.containers(DEPLOYMENT, &id).await?;
        match v.iter().find(|c| c.state == "running") {
            Some(c) => Ok(c.clone()),
            None => Err(format!("{v:?}")),
        }
    })
    .await;
    for base in [&a, &b] {
        eventually(
            &format!("deployment RUNNING on {base}"),
            async || match deployment_state(&set, base, &id).await? {
                s if s == "RUNNING" => Ok(()),
                s => Err(s),
            },
        )
        .await;
    }
    // (That the agent was on B is proven below: killing B makes it reconnect.)
    let log = agent.log();
    let received = count(&log, "received a new desired state");
    assert!(received >= 1, "{log}");

    // B dies; the agent moves to A and resumes from the generation it holds.
    set.kill(1);
    agent
        .wait_for_log(
            "the agent reconnected to the other replica",
            &["reconnected to the control plane after"],
        )
        .await;
    eventually("the edge CONNECTED on A after the failover", async || {
        let e = edge(&set, &a, &name).await?;
        if e["connection"] == "CONNECTED" && e["state"] == "RUNNING" {
            Ok(())
        } else {
            Err(e.to_string())
        }
    })
    .await;
    assert_eq!(
        deployment_state(&set, &a, &id).await.as_deref(),
        Ok("RUNNING")
    );
    let log = agent.log();
    assert_eq!(
        count(&log, "received a new desired state"),
        received,
        "nothing delivered again after the failover: {log}"
    );
    assert_eq!(count(&log, "enrolled with the control plane"), 1, "{log}");
    let after = engine
        .containers(DEPLOYMENT, &id)
        .await
        .expect("containers");
    assert!(
        after
            .iter()
            .any(|c| c.id == running.id && c.state == "running"),
        "the container was left running, not recreated: before {running:?}, after {after:?}"
    );
    agent.kill().await;
}
