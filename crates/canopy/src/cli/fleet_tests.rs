//! The fleet and deployment commands as a user drives them, in-process against a real test
//! server: enrollment tokens, edges (enrolled over the agent protocol directly, as an agent
//! would), and deployments of a small native package uploaded by the test itself. Edges here
//! have no agent unless a test simulates one, so deployments stay DEPLOYING unless said otherwise.

use std::collections::BTreeMap;
use std::time::Duration;

use canopy_proto::{
    AppState, AppStatus, DesiredState, PROTOCOL_HEADER, StatusReport, WorkloadStatus,
};
use canopy_testkit::TestControlPlane;
use serde_json::{Value, json};

use super::*;

/// Runs a CLI command in process against `cp` as the administrator: exit code, stdout, stderr.
pub(super) async fn canopy(cp: &TestControlPlane, args: &[&str]) -> (i32, String, String) {
    let mut full = vec![
        "canopy",
        "--server",
        cp.url.as_str(),
        "--token",
        cp.admin_token(),
    ];
    full.extend_from_slice(args);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_async(full, &mut out, &mut err).await;
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

/// Runs a command that must succeed and returns its output.
pub(super) async fn ok(cp: &TestControlPlane, args: &[&str]) -> String {
    let (code, out, err) = canopy(cp, args).await;
    assert_eq!(code, 0, "canopy {args:?} failed:\n{out}{err}");
    out
}

/// Runs a command with `--output json` and parses what it prints.
async fn json(cp: &TestControlPlane, args: &[&str]) -> Value {
    let mut full = vec!["--output", "json"];
    full.extend_from_slice(args);
    let out = ok(cp, &full).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// A fresh enrollment token's secret, made with the CLI.
async fn secret(cp: &TestControlPlane) -> String {
    let v = json(cp, &["enroll-token", "create"]).await;
    v["secret"].as_str().unwrap().to_owned()
}

/// An edge enrolled over the agent protocol; returns its credential.
async fn enroll(
    cp: &TestControlPlane,
    secret: &str,
    name: &str,
    labels: &[(&str, &str)],
) -> String {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    let resp = cp
        .http()
        .post(cp.at("/canopy/v1/agent/enroll"))
        .header(PROTOCOL_HEADER, "1")
        .json(&json!({"protocolVersion": 1, "token": secret, "name": name, "labels": labels}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let body: Value = resp.json().await.unwrap();
    body["credential"].as_str().unwrap().to_owned()
}

const WEB_APP: &str = r#"specSchema: Application
schemaVersion: "0.1"
$schema: "https://schema.intel.com/catalog.orchestrator/0.1/schema"
name: web
version: 1.0.0
description: Sleeps, with a greeting and a secret in its environment
defaultProfile: default
profiles:
  - name: default
    chartValues: |
      greeting: hello
      password: ""
    parameterTemplates:
      - {name: greeting, type: string}
      - {name: password, type: string, secret: true}
workloadTemplate: |
  containers:
    - name: web
      image: docker.io/library/busybox:1.36
      command: ["sh", "-c", "sleep 3600"]
      env:
        GREETING: {{ values.greeting | tojson }}
        PASSWORD: {{ values.password | tojson }}
"#;

fn package(version: &str) -> String {
    format!(
        r#"specSchema: DeploymentPackage
schemaVersion: "0.1"
$schema: "https://schema.intel.com/catalog.orchestrator/0.1/schema"
name: shop
version: {version}
description: The web app
applications:
  - {{name: web, version: 1.0.0}}
deploymentProfiles:
  - name: default
    applicationProfiles:
      - {{application: web, profile: default}}
defaultProfile: default
"#
    )
}

/// Uploads `web:1.0.0` (native) and the packages `shop:1.0.0` and `shop:1.1.0` using it.
async fn upload_shop(cp: &TestControlPlane) {
    let (status, body) = cp
        .upload(
            "default",
            vec![
                ("web.yaml".into(), WEB_APP.as_bytes().to_vec()),
                ("shop-1.0.0.yaml".into(), package("1.0.0").into_bytes()),
                ("shop-1.1.0.yaml".into(), package("1.1.0").into_bytes()),
            ],
        )
        .await;
    assert!(status.is_success(), "{body}");
}

/// The id in `created deployment <id> of ...`.
fn created_id(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("created deployment "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no id in {out}"))
        .to_owned()
}

#[tokio::test]
async fn enroll_tokens_create_list_revoke() {
    let cp = TestControlPlane::start().await;
    let out = ok(
        &cp,
        &[
            "enroll-token",
            "create",
            "--description",
            "lab edges",
            "--ttl",
            "2h",
            "--max-uses",
            "2",
        ],
    )
    .await;
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("created enrollment token ")
            && lines[0].ends_with(" (valid for 2h, 2 edges)"),
        "{out}"
    );
    let id = lines[0].split_whitespace().nth(3).unwrap().to_owned();
    let secret = lines[1]
        .strip_prefix("secret (shown only now; keep it safe): ")
        .unwrap();
    assert!(secret.starts_with("cnt_"), "{out}");
    assert!(
        out.contains(&format!(
            "  canopy agent --server {} --enroll-token {secret} --data-dir /var/lib/canopy-agent\n",
            cp.url
        )),
        "{out}"
    );
    assert!(out.contains("loopback address"), "{out}");

    // The secret works once enrolled with, and is never listed.
    enroll(&cp, secret, "store-1", &[]).await;
    let out = ok(&cp, &["enroll-token", "list"]).await;
    assert!(out.starts_with("Id "), "{out}");
    let row = out.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(
        row.contains("ACTIVE") && row.contains("1/2") && row.ends_with("lab edges"),
        "{out}"
    );
    assert!(!out.contains(secret));

    // Scripts get the secret and the command as JSON.
    let v = json(&cp, &["enroll-token", "create"]).await;
    assert!(v["secret"].as_str().unwrap().starts_with("cnt_"));
    assert_eq!(v["token"]["state"], "ACTIVE");
    assert_eq!(v["token"]["maxUses"], 0);
    assert!(
        v["agentCommand"]
            .as_str()
            .unwrap()
            .starts_with("canopy agent --server http://127.0.0.1:")
    );

    let out = ok(&cp, &["enroll-token", "revoke", &id]).await;
    assert_eq!(
        out,
        format!("revoked enrollment token {id}; edges it enrolled keep working\n")
    );
    let tokens = json(&cp, &["enroll-token", "ls"]).await;
    let revoked = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap();
    assert_eq!(revoked["state"], "REVOKED");

    let (code, _, err) = canopy(&cp, &["enroll-token", "revoke", "nope"]).await;
    assert_eq!(code, 1);
    assert_eq!(err, "error: enrollment token nope not found\n");
    let (code, _, err) = canopy(&cp, &["enroll-token", "create", "--ttl", "soon"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("expected a duration such as 90s"), "{err}");
}

#[tokio::test]
async fn edges_list_get_label_workloads_remove() {
    let cp = TestControlPlane::start().await;
    let s = secret(&cp).await;
    enroll(&cp, &s, "store-1", &[("site", "paris"), ("tier", "edge")]).await;
    enroll(&cp, &s, "store-2", &[("site", "lyon")]).await;

    let out = ok(&cp, &["edge", "list"]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("Name      Id ") && lines[0].contains("Labels"),
        "{out}"
    );
    assert!(lines[1].starts_with("store-1 "), "{out}");
    assert!(lines[1].contains("NEVER_CONNECTED"), "{out}");
    assert!(lines[1].contains("site=paris,tier=edge"), "{out}");
    assert_eq!(lines[3], "2 of 2");

    // Several --label: an edge must carry all of them.
    let out = ok(
        &cp,
        &["edges", "ls", "--label", "site=paris", "-l", "tier=edge"],
    )
    .await;
    assert!(
        out.contains("store-1") && out.ends_with("1 of 1\n"),
        "{out}"
    );
    let out = ok(
        &cp,
        &["edge", "list", "--label", "site=lyon", "-l", "tier=edge"],
    )
    .await;
    assert!(out.ends_with("0 of 0\n"), "{out}");

    let out = ok(&cp, &["edge", "get", "store-1"]).await;
    assert!(out.starts_with("Name:          store-1\n"), "{out}");
    assert!(
        out.contains("Labels:        site=paris,tier=edge\n"),
        "{out}"
    );
    let e = json(&cp, &["edge", "get", "store-1"]).await;
    let id = e["id"].as_str().unwrap().to_owned();
    assert_eq!(json(&cp, &["edge", "get", &id]).await["name"], "store-1");

    let out = ok(&cp, &["edge", "label", "store-1", "zone=eu-1", "tier-"]).await;
    assert_eq!(out, "labelled edge store-1: site=paris,zone=eu-1\n");
    let e = json(&cp, &["edge", "label", &id, "site-"]).await;
    assert_eq!(e["labels"], json!({"zone": "eu-1"}));
    let (code, _, err) = canopy(&cp, &["edge", "label", "store-1", "oops"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("expected KEY=VALUE or KEY-"), "{err}");
    // A label the server would refuse is refused before anything is sent (a usage error).
    let (code, _, err) = canopy(&cp, &["edge", "label", "store-1", "Bad Key=x"]).await;
    assert_eq!(code, 2);
    assert!(
        err.contains("label key \"Bad Key\" must be 1-40 characters"),
        "{err}"
    );

    // Nothing reported yet: an empty table.
    let out = ok(&cp, &["edge", "workloads", "store-1"]).await;
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("Deployment   App   State"), "{out}");
    assert_eq!(json(&cp, &["edge", "workloads", &id]).await, json!([]));

    let out = ok(&cp, &["edge", "rm", "store-2"]).await;
    assert!(out.starts_with("removed edge store-2"), "{out}");
    let (code, _, err) = canopy(&cp, &["edge", "get", "store-2"]).await;
    assert_eq!(code, 1);
    assert_eq!(err, "error: edge store-2 not found\n");
}

#[tokio::test]
async fn deployments_create_list_get_update_upgrade_delete() {
    let cp = TestControlPlane::start().await;
    upload_shop(&cp).await;
    let s = secret(&cp).await;
    enroll(&cp, &s, "store-1", &[("site", "paris")]).await;

    let out = ok(
        &cp,
        &[
            "deployment",
            "create",
            "shop:1.0.0",
            "--label",
            "site=paris",
            "--display-name",
            "paris-shop",
            "--set",
            "web.greeting=bonjour",
            "--set",
            "web.password=s3cret",
            "--namespace",
            "web=front",
        ],
    )
    .await;
    assert!(
        out.ends_with(" of shop:1.0.0 on labels site=paris\n"),
        "{out}"
    );
    let id = created_id(&out);

    let out = ok(&cp, &["deployment", "list"]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("DeployId") && lines[0].contains("DisplayName"),
        "{out}"
    );
    assert!(lines[1].starts_with(&id), "{out}");
    assert!(
        lines[1].contains("paris-shop") && lines[1].contains("shop:1.0.0"),
        "{out}"
    );
    assert_eq!(lines[2], "1 of 1");
    let out = ok(&cp, &["deployments", "ls", "--label", "site=lyon"]).await;
    assert!(out.ends_with("0 of 0\n"), "{out}");
    let out = ok(
        &cp,
        &["deployment", "list", "-l", "site=lyon", "-l", "site=paris"],
    )
    .await;
    assert!(out.ends_with("1 of 1\n"), "{out}");

    // By display name too; secrets come back masked.
    let out = ok(&cp, &["deployment", "get", "paris-shop"]).await;
    assert!(out.starts_with(&format!("DeployId:     {id}\n")), "{out}");
    assert!(out.contains("Package:      shop:1.0.0\n"), "{out}");
    assert!(out.contains("Targets:      labels site=paris\n"), "{out}");
    assert!(out.contains("OverrideValues:\n  App   Namespace"), "{out}");
    assert!(out.contains("\nEdges:\n"), "{out}");
    assert!(!out.contains("s3cret"), "{out}");
    let d = json(&cp, &["deployment", "get", &id]).await;
    assert_eq!(d["deployId"], id.as_str());
    assert_eq!(d["deploymentType"], "auto-scaling");
    assert_eq!(d["overrideValues"][0]["targetNamespace"], "front");
    assert_eq!(
        d["overrideValues"][0]["values"],
        json!({"greeting": "bonjour", "password": "********"})
    );
    assert!(d["clusters"].is_array(), "{d}");

    // Update: the masked secret goes back as it is and stays set.
    let out = ok(
        &cp,
        &[
            "deployment",
            "update",
            &id,
            "--set",
            "web.greeting=salut",
            "--display-name",
            "shop-paris",
        ],
    )
    .await;
    assert_eq!(out, format!("updated deployment {id}\n"));
    let d = json(&cp, &["deployment", "get", "shop-paris"]).await;
    assert_eq!(
        d["overrideValues"][0]["values"],
        json!({"greeting": "salut", "password": "********"})
    );

    let out = ok(&cp, &["deployment", "upgrade", &id, "1.1.0"]).await;
    assert_eq!(
        out,
        format!("upgraded deployment {id} from shop:1.0.0 to shop:1.1.0\n")
    );
    let d = json(&cp, &["deployment", "get", &id]).await;
    assert_eq!(d["appVersion"], "1.1.0");
    assert_eq!(d["overrideValues"][0]["values"]["password"], "********");
    let (code, _, err) = canopy(&cp, &["deployment", "upgrade", &id, "1.1.0"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("already runs shop:1.1.0"), "{err}");
    let (code, _, err) = canopy(&cp, &["deployment", "upgrade", &id, "9.9.9"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("deployment package shop:9.9.9 not found in project default"),
        "{err}"
    );

    let out = ok(&cp, &["deployment", "status"]).await;
    assert!(out.starts_with("Total:"), "{out}");
    let s = json(&cp, &["deployment", "status", "--label", "site=paris"]).await;
    assert!(s["total"].is_number(), "{s}");

    // Delete and watch the edges let go: nothing runs here, so it ends at once.
    let out = ok(&cp, &["deployment", "delete", "shop-paris", "--watch"]).await;
    assert!(
        out.starts_with(&format!(
            "deleted deployment {id} (shop-paris of shop:1.1.0)\n"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("deployment {id} deleted: 0 of ")),
        "{out}"
    );
    let (code, _, err) = canopy(&cp, &["deployment", "get", &id]).await;
    assert_eq!(code, 1);
    assert_eq!(err, format!("error: deployment {id} not found\n"));
    let out = ok(&cp, &["deployment", "list"]).await;
    assert!(out.ends_with("0 of 0\n"), "{out}");
}

#[tokio::test]
async fn deployments_target_edges_by_id_or_name() {
    let cp = TestControlPlane::start().await;
    upload_shop(&cp).await;
    let s = secret(&cp).await;
    enroll(&cp, &s, "store-1", &[]).await;
    enroll(&cp, &s, "store-2", &[]).await;
    let e1 = json(&cp, &["edge", "get", "store-1"]).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let out = ok(
        &cp,
        &["deployment", "create", "shop:1.0.0", "--edge", "store-1"],
    )
    .await;
    assert!(out.ends_with(&format!(" on edge {e1}\n")), "{out}");
    let d = json(&cp, &["deployment", "get", &created_id(&out)]).await;
    assert_eq!(d["deploymentType"], "targeted");
    assert_eq!(d["allAppTargetClusters"]["clusterId"], e1.as_str());

    let d = json(
        &cp,
        &[
            "deployment",
            "create",
            "shop:1.1.0",
            "--edge",
            &e1,
            "--edge",
            "store-2",
            "--edge",
            "store-1",
        ],
    )
    .await;
    assert_eq!(d["deploymentType"], "targeted");
    let targets = d["targetClusters"].as_array().unwrap();
    assert_eq!(targets.len(), 2, "{d}");
    assert!(targets.iter().all(|t| t["appName"] == "web"), "{d}");
}

#[tokio::test]
async fn deployment_input_errors_are_clear() {
    let cp = TestControlPlane::start().await;
    upload_shop(&cp).await;

    let (code, out, err) = canopy(
        &cp,
        &["deployment", "create", "nope:1.0", "--label", "site=paris"],
    )
    .await;
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    assert_eq!(
        err,
        "error: deployment package nope:1.0 not found in project default (see `canopy catalog package list`)\n"
    );

    let (code, _, err) = canopy(
        &cp,
        &[
            "deployment",
            "create",
            "shop:1.0.0",
            "-l",
            "a=b",
            "--set",
            "web.greeting",
        ],
    )
    .await;
    assert_eq!(code, 2);
    assert!(err.contains("expected APP.PATH=VALUE"), "{err}");

    let (code, _, err) = canopy(
        &cp,
        &[
            "deployment",
            "create",
            "shop:1.0.0",
            "-l",
            "a=b",
            "--set",
            "api.x=1",
        ],
    )
    .await;
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "error: --set api.x=1: deployment package shop:1.0.0 has no application \"api\" (it has web)\n"
    );

    let (code, _, err) = canopy(
        &cp,
        &["deployment", "create", "shop:1.0.0", "--edge", "ghost"],
    )
    .await;
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "error: --edge ghost: edge ghost not found in project default (see `canopy edge list`)\n"
    );

    // A target is required, and it is labels or edges, not both.
    let (code, _, err) = canopy(&cp, &["deployment", "create", "shop:1.0.0"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("--label"), "{err}");
    let (code, _, _) = canopy(
        &cp,
        &[
            "deployment",
            "create",
            "shop:1.0.0",
            "--label",
            "a=b",
            "--edge",
            "x",
        ],
    )
    .await;
    assert_eq!(code, 2);

    // A label the server would refuse is refused by the CLI, naming the flag.
    let (code, _, err) = canopy(
        &cp,
        &["deployment", "create", "shop:1.0.0", "--label", "Bad Key=x"],
    )
    .await;
    assert_eq!(code, 2);
    assert!(
        err.contains("'--label <KEY=VALUE>': label key \"Bad Key\""),
        "{err}"
    );
    // The server's own checks come through verbatim.
    let labels: Vec<String> = (0..11).map(|i| format!("k{i}=v")).collect();
    let mut args = vec!["deployment", "create", "shop:1.0.0"];
    for l in &labels {
        args.extend(["--label", l.as_str()]);
    }
    let (code, _, err) = canopy(&cp, &args).await;
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: ") && err.contains("at most 10 labels"),
        "{err}"
    );

    assert_eq!(json(&cp, &["deployment", "list"]).await, json!([]));
    let (code, _, err) = canopy(&cp, &["deployment", "get", "nothing"]).await;
    assert_eq!(code, 1);
    assert_eq!(err, "error: deployment nothing not found\n");
}

#[tokio::test]
async fn watch_gives_up_after_the_timeout() {
    let cp = TestControlPlane::start().await;
    upload_shop(&cp).await;
    let (code, out, err) = canopy(
        &cp,
        &[
            "deployment",
            "create",
            "shop:1.0.0",
            "--label",
            "site=nowhere",
            "--watch",
            "--timeout",
            "2s",
        ],
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    let id = created_id(&out);
    // Printed once: the state does not change while nothing targets it.
    assert_eq!(
        out.matches(&format!("({id}): DEPLOYING, 0/0 edges running"))
            .count(),
        1,
        "{out}"
    );
    assert_eq!(
        err,
        format!(
            "error: gave up watching after 2s: deployment {id} is still DEPLOYING (watch longer with --timeout)\n"
        )
    );
}

#[tokio::test]
async fn watch_fails_when_no_edge_is_targeted() {
    let cp = TestControlPlane::start_fleet(canopy_server::hub::HubConfig {
        heartbeat: Duration::from_secs(1),
        edge_timeout: Duration::from_secs(2),
        no_target_grace: Duration::from_secs(1),
    })
    .await;
    upload_shop(&cp).await;
    let (code, out, err) = canopy(
        &cp,
        &[
            "deployment",
            "create",
            "shop:1.0.0",
            "--label",
            "site=nowhere",
            "-w",
            "--timeout",
            "30s",
        ],
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    let id = created_id(&out);
    assert!(
        out.contains(&format!("({id}): NO_TARGET_CLUSTERS")),
        "{out}"
    );
    assert!(
        err.starts_with(&format!("error: deployment {id} is NO_TARGET_CLUSTERS")),
        "{err}"
    );
}

/// Stands in for an edge agent: reports every app of each desired state it gets RUNNING, with
/// one container each.
async fn simulated_agent(url: String, credential: String) {
    let http = reqwest::Client::new();
    let mut after = 0;
    loop {
        let resp = http
            .get(format!(
                "{url}/canopy/v1/agent/desired-state?after={after}&waitSeconds=2"
            ))
            .header(PROTOCOL_HEADER, "1")
            .bearer_auth(&credential)
            .send()
            .await
            .unwrap();
        if resp.status().as_u16() != 200 {
            continue;
        }
        let desired: DesiredState = resp.json().await.unwrap();
        after = desired.generation.0;
        let apps = desired
            .deployments
            .iter()
            .flat_map(|d| {
                d.apps.iter().map(|a| AppStatus {
                    deployment_id: d.deployment_id.clone(),
                    app: a.name.clone(),
                    state: AppState::Running,
                    message: String::new(),
                    deployment_generation: d.generation,
                    workloads: vec![WorkloadStatus {
                        kind: canopy_proto::StatusKind::Container,
                        name: a.name.clone(),
                        image: "docker.io/library/busybox:1.36".into(),
                        state: "running".into(),
                        health: canopy_proto::Health::None,
                        restarts: 0,
                        ports: Vec::new(),
                        ..Default::default()
                    }],
                })
            })
            .collect();
        let report = StatusReport {
            protocol_version: 1,
            seq: after,
            generation: desired.generation,
            apps,
            agent: None,
        };
        let resp = http
            .post(format!("{url}/canopy/v1/agent/status"))
            .header(PROTOCOL_HEADER, "1")
            .bearer_auth(&credential)
            .json(&report)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }
}

#[tokio::test]
async fn watch_follows_a_deployment_until_it_runs() {
    let cp = TestControlPlane::start().await;
    upload_shop(&cp).await;
    let s = secret(&cp).await;
    let credential = enroll(&cp, &s, "store-1", &[("site", "paris")]).await;
    let agent = tokio::spawn(simulated_agent(cp.url.clone(), credential));

    let (code, out, err) = canopy(
        &cp,
        &[
            "deployment",
            "create",
            "shop:1.0.0",
            "--label",
            "site=paris",
            "--watch",
            "--timeout",
            "30s",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let id = created_id(&out);
    assert!(
        out.contains(&format!("({id}): RUNNING, 1/1 edges running\n")),
        "{out}"
    );
    assert!(
        out.ends_with("  store-1: RUNNING, 1/1 apps running\n")
            || out.contains("  store-1: RUNNING, 1/1 apps running\n"),
        "{out}"
    );

    // Scripts get the final deployment as JSON; the progress goes to standard error.
    let (code, out, err) = canopy(
        &cp,
        &[
            "--output",
            "json",
            "deployment",
            "upgrade",
            &id,
            "1.1.0",
            "--watch",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let d: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["status"]["state"], "RUNNING");
    assert_eq!(d["appVersion"], "1.1.0");
    assert!(err.contains("RUNNING, 1/1 edges running"), "{err}");

    // The edge reports what runs, container by container.
    let out = ok(&cp, &["edge", "workloads", "store-1"]).await;
    let row = out.lines().nth(1).unwrap_or_default();
    assert!(
        row.starts_with(&format!("{id}   web   RUNNING   web ")),
        "{out}"
    );
    assert!(
        row.contains("docker.io/library/busybox:1.36   running"),
        "{out}"
    );
    let out = ok(&cp, &["deployment", "get", &id]).await;
    assert!(
        out.contains("Edges:\n  Edge      Id ") && out.contains("RUNNING   1/1"),
        "{out}"
    );

    // Deleting: followed until the edge no longer reports its apps.
    let out = ok(
        &cp,
        &["deployment", "delete", &id, "--watch", "--timeout", "30s"],
    )
    .await;
    assert!(
        out.ends_with(&format!(
            "deployment {id} deleted: 0 of 1 edges still run its apps\n  store-1: apps removed\n"
        )),
        "{out}"
    );
    assert_eq!(
        json(&cp, &["edge", "workloads", "store-1"]).await,
        json!([])
    );
    agent.abort();
}

#[test]
fn watch_flags_parse() {
    let cli = Cli::try_parse_from([
        "canopy",
        "deployment",
        "create",
        "shop:1.0",
        "-l",
        "site=paris",
        "--watch",
        "--timeout",
        "5m",
    ])
    .unwrap();
    let dbg = format!("{:?}", cli.command);
    assert!(dbg.contains("watch: true"), "{dbg}");
    assert!(dbg.contains("timeout: 300s"), "{dbg}");
    let e = Cli::try_parse_from(["canopy", "deployment", "delete", "d1", "--timeout", "5m"])
        .unwrap_err();
    assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    assert!(Cli::try_parse_from(["canopy", "deployment", "delete", "d1", "--all", "-w"]).is_ok());
    assert!(Cli::try_parse_from(["canopy", "deployment", "status", "-l", "a=b"]).is_ok());
}

#[tokio::test]
async fn deployment_manifest_prints_what_helm_rendered() {
    let Some(env) = canopy_testkit::helm::HelmTestEnv::from_env() else {
        return;
    };
    let root = env.push_chart("canopy-web", None, false);
    let cp = TestControlPlane::start().await;
    canopy_testkit::helm::HelmPackage::new("web", &root, "canopy-web", "0.1.0")
        .create(&cp, "default")
        .await;
    ok(
        &cp,
        &["deployment", "create", "web:1.0.0", "--label", "site=x"],
    )
    .await;
    let (_, b) = cp
        .get(&cp.at("/v1/projects/default/appdeployment/deployments"))
        .await;
    let id = b["deployments"][0]["deployId"]
        .as_str()
        .unwrap()
        .to_string();
    let shown = ok(&cp, &["deployment", "get", &id]).await;
    assert!(
        shown.contains("Warnings") && shown.contains("ServiceAccount"),
        "{shown}"
    );
    let manifest = ok(&cp, &["deployment", "manifest", &id, "web"]).await;
    assert!(manifest.contains("kind: Deployment"), "{manifest}");
    assert!(
        manifest.contains("# Source: canopy-web/templates/"),
        "{manifest}"
    );
    let (code, _, err) = canopy(&cp, &["deployment", "manifest", &id, "ghost"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("has no application ghost"), "{err}");
    cp.stop().await;
}
