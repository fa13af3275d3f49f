//! Helm-chart packages end to end on a real edge: the control plane in process with the real
//! Helm CLI (`CANOPY_TEST_HELM`), charts pushed to the local OCI chart registries of
//! `scripts/helm.sh` (`CANOPY_TEST_CHART_REGISTRY`, and `..._AUTH` with basic auth), a real
//! `canopy agent` process, and real containers on the Podman of `CANOPY_TEST_DOCKER_HOST`.
//! Without those variables the tests are skipped with a note, except under CI (env `CI` set),
//! where that is a failure.
//!
//! 1. [`helm_package_on_a_real_edge`]: a package of the project's fixture charts (`canopy-web`
//!    as `helm create` writes it, `canopy-pair`: two services talking by Service name,
//!    `canopy-stateful`: StatefulSet, PVC, Job, DaemonSet, Pod), uploaded in the reference
//!    upload format with profiles and parameter templates (a secret one too), deployed by
//!    label, upgraded (a values change, then a new chart version: only what changed is
//!    replaced), the agent SIGKILLed and restarted (no duplicates, nothing restarted), deleted
//!    (nothing of the edge's scope left).
//! 2. [`reference_packages_deploy_unchanged`]: the reference's sample packages
//!    (`tests/fixtures/reference-packages/`: `developer-guide-tutorial`, `httpbin`) uploaded
//!    byte for byte, with equivalent charts (`tests/fixtures/charts/`) under the names and
//!    versions they reference, and their images served by the local image registry
//!    (127.0.0.1:55000, with credentials) under the same repository paths.
//!
//! Isolation: each run has its own project, chart repositories, image repositories, driver
//! scope and ephemeral host ports; a guard removes everything of its scope (and the image tags
//! it made) even when the test fails, and prints the agent's logs then.

#[path = "common/edge_support.rs"]
#[allow(dead_code, unused_imports)] // shared with edge_podman.rs, which uses the rest
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use canopy_server::hub::HubConfig;
use canopy_testkit::helm::HelmTestEnv;
use canopy_testkit::{TestControlPlane, read_dir_files, reference_package};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{
    AgentProcess, Cleanup, DEPLOYMENT, Engine, IMAGE, SCOPE, engine_host, eventually, free_ports,
    http_body, unique,
};

/// The label naming a container of a pod (`canopy_agent::driver::names::CONTAINER`).
const CONTAINER: &str = canopy_agent::driver::names::CONTAINER;

fn fast() -> HubConfig {
    HubConfig {
        heartbeat: Duration::from_secs(1),
        edge_timeout: Duration::from_secs(5),
        no_target_grace: Duration::from_secs(3),
    }
}

/// Generous: a Helm deployment on a loaded 2-core runner renders charts, pulls images, starts
/// init containers and waits for probes; each wait below is for one exact condition.
const SLOW: Duration = Duration::from_secs(180);

/// Like `support::eventually`, with the longer deadline [`SLOW`].
async fn slowly<T>(what: &str, mut probe: impl AsyncFnMut() -> Result<T, String>) -> T {
    let start = std::time::Instant::now();
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) => {
                if start.elapsed() > SLOW {
                    panic!("timed out after {SLOW:?} waiting for {what}; last seen: {last}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ------------------------------------------------------------------ control-plane helpers

fn deployments_url(cp: &TestControlPlane, project: &str, rest: &str) -> String {
    cp.at(&format!(
        "/v1/projects/{project}/appdeployment/deployments{rest}"
    ))
}

async fn deployment(cp: &TestControlPlane, project: &str, id: &str) -> Value {
    let (s, b) = cp
        .get(&deployments_url(cp, project, &format!("/{id}")))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["deployment"].clone()
}

/// Waits until the deployment is `want` (its status names the app states otherwise).
async fn deployment_reaches(cp: &TestControlPlane, project: &str, id: &str, want: &str) -> Value {
    slowly(&format!("deployment {id} {want}"), async || {
        let d = deployment(cp, project, id).await;
        if d["status"]["state"] == want {
            Ok(d)
        } else {
            Err(format!("{}", d["status"]))
        }
    })
    .await
}

/// Enrolls one real agent (scope of its own, the given labels) and waits until it is connected.
async fn start_agent(
    cp: &TestControlPlane,
    project: &str,
    host: &str,
    scope: &str,
    labels: &[(&str, &str)],
    tmp: &Path,
    logs: &Path,
) -> AgentProcess {
    let (s, b) = cp
        .post(
            &cp.at(&format!("/canopy/v1/projects/{project}/enrollment-tokens")),
            &json!({"description": "edge_helm"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let token = b["secret"].as_str().expect("token secret").to_string();
    let mut agent = AgentProcess::new("edge-h", &cp.url, host, scope, labels, tmp, logs);
    agent.start(Some(&token));
    eventually("the agent enrolled and connected", async || {
        let (s, e) = cp
            .get(&cp.at(&format!("/canopy/v1/projects/{project}/edges/edge-h")))
            .await;
        if s == StatusCode::OK && e["edge"]["connection"] == "CONNECTED" {
            Ok(())
        } else {
            Err(format!("{s}: {e}"))
        }
    })
    .await;
    agent
}

/// Writes `files` (name, text) into `dir`.
fn write_files(dir: &Path, files: &[(&str, String)]) {
    std::fs::create_dir_all(dir).expect("package dir");
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("package file");
    }
}

const HEADER: &str = "schemaVersion: \"0.1\"\n$schema: \"https://schema.intel.com/catalog.orchestrator/0.1/schema\"\n";

/// A HELM registry in the reference upload format.
fn registry_yaml(name: &str, root: &str, credentials: Option<(&str, &str)>) -> String {
    let mut y = format!(
        "specSchema: Registry\n{HEADER}name: {name}\ndescription: charts of the edge_helm test\ntype: HELM\nrootUrl: \"{root}\"\n"
    );
    if let Some((user, token)) = credentials {
        y.push_str(&format!("userName: \"{user}\"\nauthToken: \"{token}\"\n"));
    }
    y
}

// ------------------------------------------------------------------ the engine side

/// The deployment's containers by `<app label>/<container label>/<engine name>` → (id, state).
async fn containers_of(engine: &Engine, id: &str) -> BTreeMap<String, (String, String)> {
    engine
        .containers(DEPLOYMENT, id)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|c| {
            let app = c.labels.get("io.canopy.app").cloned().unwrap_or_default();
            let member = c.labels.get(CONTAINER).cloned().unwrap_or_default();
            (
                format!("{app}/{member}/{}", c.name),
                (c.id.clone(), c.state.clone()),
            )
        })
        .collect()
}

/// Identities (id, name, start time, restarts) of the deployment's containers, by name.
async fn identities(engine: &Engine, id: &str) -> Vec<support::Identity> {
    let ids: Vec<String> = containers_of(engine, id)
        .await
        .into_values()
        .map(|(id, _)| id)
        .collect();
    engine
        .identities(&ids)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The id of the running container labelled `app` and `member` (exactly one).
async fn member(engine: &Engine, id: &str, app: &str, member: &str) -> String {
    let found: Vec<(String, (String, String))> = containers_of(engine, id)
        .await
        .into_iter()
        .filter(|(k, (_, state))| k.starts_with(&format!("{app}/{member}/")) && state == "running")
        .collect();
    assert_eq!(found.len(), 1, "one running {app}/{member}: {found:?}");
    found[0].1.0.clone()
}

/// Runs `cmd` in container `container` (`podman exec`): its output, or why not.
async fn exec(engine: &Engine, container: &str, cmd: &[&str]) -> Result<String, String> {
    let mut args = vec!["exec", container];
    args.extend(cmd);
    engine.podman(&args).await
}

/// Waits until nothing of `scope` is left on the engine: containers, volumes, networks.
async fn scope_is_empty(engine: &Engine, scope: &str) {
    slowly(
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

/// Waits until `GET http://127.0.0.1:{port}/` answers a body containing `want`.
async fn page_has(port: u16, want: &str) -> String {
    slowly(&format!("port {port} to answer {want:?}"), async || {
        let body = http_body(port).await?;
        if body.contains(want) {
            Ok(body)
        } else {
            Err(format!("it answered {body:?}"))
        }
    })
    .await
}

// ------------------------------------------------------------------ 1. the project's charts

/// The package `helm-demo` in the reference upload format: `web` (`canopy-web`, plain
/// registry), `pair` (`canopy-pair`, registry with basic auth; parameter templates: the node
/// port, a greeting, a secret token) and `store` (`canopy-stateful`). Version 1.1.0 moves
/// `web` to chart 0.2.0 and changes nothing else.
fn write_demo_package(
    dir: &Path,
    env: &HelmTestEnv,
    plain_root: &str,
    auth_root: &str,
    version: &str,
) {
    let web_chart = if version == "1.0.0" { "0.1.0" } else { "0.2.0" };
    let files = [
        (
            "registry-plain.yaml",
            registry_yaml("demo-charts", plain_root, None),
        ),
        (
            "registry-auth.yaml",
            registry_yaml(
                "demo-private-charts",
                auth_root,
                Some((&env.user, &env.password)),
            ),
        ),
        (
            "web.yaml",
            format!(
                r#"specSchema: Application
{HEADER}name: web
version: "{version}"
description: canopy-web, as helm create writes it
helmRegistry: demo-charts
chartName: canopy-web
chartVersion: "{web_chart}"
profiles:
  - name: default
    valuesFileName: web-values.yaml
    parameterTemplates:
      - name: replicaCount
        displayName: Replicas
        type: number
        default: "1"
"#
            ),
        ),
        (
            "web-values.yaml",
            "replicaCount: 1\nserviceAccount:\n  create: false\nimage:\n  repository: localhost/busybox\n  tag: canopy-test\n"
                .to_string(),
        ),
        (
            "pair.yaml",
            format!(
                r#"specSchema: Application
{HEADER}name: pair
version: "1.0.0"
description: two services talking by Service name
helmRegistry: demo-private-charts
chartName: canopy-pair
chartVersion: "0.1.0"
profiles:
  - name: default
    valuesFileName: pair-values.yaml
    parameterTemplates:
      - name: frontend.nodePort
        displayName: Port on the edge host
        type: number
        mandatory: true
      - name: greeting
        displayName: What the backend says
        type: string
        default: "hello from the backend"
      - name: apiToken
        displayName: API token
        type: string
        secret: true
        mandatory: true
"#
            ),
        ),
        (
            "pair-values.yaml",
            "backend:\n  replicas: 2\nfrontend:\n  interval: 2\n".to_string(),
        ),
        (
            "store.yaml",
            format!(
                r#"specSchema: Application
{HEADER}name: store
version: "1.0.0"
description: StatefulSet, PVC, Job, DaemonSet and Pod
helmRegistry: demo-charts
chartName: canopy-stateful
chartVersion: "0.1.0"
profiles:
  - name: default
    valuesFileName: store-values.yaml
"#
            ),
        ),
        (
            "store-values.yaml",
            format!("image: {IMAGE}\nreplicas: 2\nseed: \"seeded by edge_helm\"\n"),
        ),
        (
            "package.yaml",
            format!(
                r#"specSchema: DeploymentPackage
{HEADER}name: helm-demo
displayName: Helm demo
description: the project's fixture charts on one edge
version: "{version}"
applications:
  - name: web
    version: "{version}"
  - name: pair
    version: "1.0.0"
  - name: store
    version: "1.0.0"
deploymentProfiles:
  - name: default
    applicationProfiles:
      - application: web
        profile: default
      - application: pair
        profile: default
      - application: store
        profile: default
defaultProfile: default
defaultNamespaces:
  web: helm-demo
  pair: helm-demo
  store: helm-demo
"#
            ),
        ),
    ];
    write_files(dir, &files);
}

/// The fixture charts as a package on one real edge: deploy by label, readiness, Service names,
/// a secret parameter, upgrades replacing only what changed, SIGKILL of the agent, deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_package_on_a_real_edge() {
    let Some(host) = engine_host("helm_package_on_a_real_edge") else {
        return;
    };
    let Some(env) = HelmTestEnv::from_env() else {
        return;
    };
    let run = unique();
    let project = format!("helm-{run}");
    let scope = format!("helm-{run}");
    let engine = Engine::new(&host);
    let tmp = tempfile::tempdir().expect("temp dir");
    let logs = tmp.path().join("logs");
    let _cleanup = Cleanup {
        engine: engine.clone(),
        scopes: vec![scope.clone()],
        run: run.clone(),
        logs: logs.clone(),
    };

    // Charts: canopy-web 0.1.0 and 0.2.0 and canopy-stateful in the plain registry, canopy-pair
    // in the one with basic auth; each in a repository of this run's own.
    let plain_root = env.push_chart("canopy-web", None, false);
    env.push_chart_at("canopy-web", Some("0.2.0"), &plain_root, false);
    env.push_chart_at("canopy-stateful", None, &plain_root, false);
    let auth_root = env.push_chart("canopy-pair", None, true);

    let cp = TestControlPlane::start_fleet(fast()).await;
    cp.create_project(&project).await;
    for version in ["1.0.0", "1.1.0"] {
        let dir = tmp.path().join(format!("helm-demo-{version}"));
        write_demo_package(&dir, &env, &plain_root, &auth_root, version);
        let (s, b) = cp.upload_dir(&project, &dir).await;
        assert_eq!(s, StatusCode::OK, "upload helm-demo {version}: {b}");
    }
    let mut agent = start_agent(
        &cp,
        &project,
        &host,
        &scope,
        &[("helm", "yes")],
        tmp.path(),
        &logs,
    )
    .await;

    // 1. Deployed by label, with the mandatory node port and the secret token as overrides.
    let [node_port] = free_ports();
    let token = format!("tok-{run}-secret");
    let (s, created) = cp
        .post(
            &deployments_url(&cp, &project, ""),
            &json!({
                "appName": "helm-demo", "appVersion": "1.0.0", "displayName": "helm e2e",
                "allAppTargetClusters": {"labels": {"helm": "yes"}},
                "overrideValues": [
                    {"appName": "pair", "values": {
                        "frontend": {"nodePort": node_port}, "apiToken": token,
                    }},
                ],
            }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{created}");
    let id = created["deploymentId"].as_str().expect("id").to_string();
    let d = deployment_reaches(&cp, &project, &id, "RUNNING").await;
    assert!(
        !d.to_string().contains(&token),
        "the secret parameter is not returned: {d}"
    );

    // The frontend fetched the backend's page by Service name (`<release>-backend:80`, a port
    // the agent remaps to the container's 8080) and serves it on the edge's node port.
    page_has(node_port, "hello from the backend").await;
    // The secret reached the container as a Secret file, and as env.
    let fetcher = member(&engine, &id, "pair", "fetcher").await;
    assert_eq!(
        exec(&engine, &fetcher, &["cat", "/etc/token/API_TOKEN"]).await,
        Ok(token.clone())
    );
    // The StatefulSet's replicas and the Job's seed in the shared claim, read by the DaemonSet.
    let db0 = containers_of(&engine, &id)
        .await
        .into_keys()
        .filter(|k| k.starts_with("store/db/"))
        .count();
    assert_eq!(db0, 2, "two StatefulSet replicas");
    let daemon = member(&engine, &id, "store", "agent").await;
    assert_eq!(
        exec(&engine, &daemon, &["cat", "/shared/seed"]).await,
        Ok("seeded by edge_helm\n".into())
    );
    let all_before = identities(&engine, &id).await;

    // 2. A values change (the frontend's fetch interval: only the frontend uses it) replaces
    //    the frontend pod alone; the rest keeps its containers.
    let mut body = deployment(&cp, &project, &id).await;
    body["overrideValues"] = json!([
        {"appName": "pair", "values": {
            "frontend": {"nodePort": node_port, "interval": 1}, "apiToken": token,
        }},
    ]);
    let (s, up) = cp
        .put(&deployments_url(&cp, &project, &format!("/{id}")), &body)
        .await;
    assert_eq!(s, StatusCode::OK, "{up}");
    let fetcher_after = slowly("a new frontend pod", async || {
        let ids: Vec<String> = containers_of(&engine, &id)
            .await
            .into_iter()
            .filter(|(k, (_, st))| k.starts_with("pair/fetcher/") && st == "running")
            .map(|(_, (id, _))| id)
            .collect();
        match ids.as_slice() {
            [one] if *one != fetcher => Ok(one.clone()),
            _ => Err(format!("{ids:?}")),
        }
    })
    .await;
    deployment_reaches(&cp, &project, &id, "RUNNING").await;
    page_has(node_port, "hello from the backend").await;
    let replaced = |before: &[support::Identity], after: &[support::Identity]| -> Vec<String> {
        before
            .iter()
            .filter(|b| !after.contains(b))
            .map(|b| b.name.clone())
            .collect()
    };
    let after_values = identities(&engine, &id).await;
    let gone = replaced(&all_before, &after_values);
    eprintln!("replaced by the values change: {gone:?}");
    assert_eq!(after_values.len(), all_before.len(), "{after_values:?}");
    assert!(
        !gone.is_empty() && gone.iter().all(|n| n.contains("frontend")),
        "only the frontend pod is replaced by a change of its values: {gone:?}"
    );
    assert!(
        after_values.iter().any(|i| i.id == fetcher_after),
        "{after_values:?}"
    );

    // 3. A new chart version of `web` (package 1.1.0): web's pod is replaced, nothing else.
    let mut body = deployment(&cp, &project, &id).await;
    body["appVersion"] = json!("1.1.0");
    let (s, up) = cp
        .put(&deployments_url(&cp, &project, &format!("/{id}")), &body)
        .await;
    assert_eq!(s, StatusCode::OK, "{up}");
    slowly("web's pod to carry chart 0.2.0", async || {
        let web: Vec<String> = containers_of(&engine, &id)
            .await
            .into_iter()
            .filter(|(k, (_, st))| k.starts_with("web/canopy-web/") && st == "running")
            .map(|(_, (id, _))| id)
            .collect();
        let [one] = web.as_slice() else {
            return Err(format!("{web:?}"));
        };
        let out = engine
            .podman(&["inspect", one, "--format", "{{json .Config.Labels}}"])
            .await?;
        if after_values.iter().any(|i| i.id == *one) {
            Err(format!("still the old container: {out}"))
        } else {
            Ok(())
        }
    })
    .await;
    let d = deployment_reaches(&cp, &project, &id, "RUNNING").await;
    assert_eq!(d["appVersion"], "1.1.0", "{d}");
    let after_chart = identities(&engine, &id).await;
    let gone = replaced(&after_values, &after_chart);
    eprintln!("replaced by the new chart version: {gone:?}");
    assert_eq!(after_chart.len(), after_values.len(), "{after_chart:?}");
    assert!(
        !gone.is_empty() && gone.iter().all(|n| n.contains("canopy-web")),
        "only web's pod is replaced by its new chart version: {gone:?}"
    );
    page_has(node_port, "hello from the backend").await;

    // 4. The agent SIGKILLed and restarted: it adopts every container; none added, none
    //    restarted (same ids, start times and restart counts).
    agent.kill().await;
    agent.start(None);
    slowly(
        "the restarted agent applied its desired state",
        async || {
            let log = agent.log();
            if log.contains("applied desired state")
                && log.contains("connected to the control plane")
            {
                Ok(())
            } else {
                Err(log)
            }
        },
    )
    .await;
    deployment_reaches(&cp, &project, &id, "RUNNING").await;
    assert_eq!(
        identities(&engine, &id).await,
        after_chart,
        "the restarted agent must adopt the containers, not duplicate or restart them"
    );
    page_has(node_port, "hello from the backend").await;

    // 5. Deleted: nothing of the edge's scope is left (containers, volumes, networks).
    let (s, del) = cp
        .delete(&deployments_url(&cp, &project, &format!("/{id}")))
        .await;
    assert_eq!(s, StatusCode::OK, "{del}");
    scope_is_empty(&engine, &scope).await;
    assert!(containers_of(&engine, &id).await.is_empty());
    assert!(
        http_body(node_port).await.is_err(),
        "nothing serves on the node port any more"
    );
    agent.kill().await;
    cp.stop().await;
}

// ------------------------------------------------------------------ 2. the reference's packages

/// Image names made in the engine's local store by the test, removed (untagged) when dropped:
/// the image itself (the test image) stays.
struct ImageTags {
    engine: Engine,
    names: Vec<String>,
    /// Images an edge pulled from repositories of the test's own: removed by name.
    pulled: Vec<String>,
}

impl ImageTags {
    /// Names the test image `name` in the engine's local store; remembered for removal unless
    /// the name existed already (then it is someone else's, and left alone).
    async fn tag(&mut self, name: &str) {
        if self.engine.podman(&["image", "exists", name]).await.is_ok() {
            eprintln!("{name} exists already: used as it is and left alone");
            return;
        }
        self.engine
            .podman(&["tag", IMAGE, name])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        self.names.push(name.to_string());
    }

    /// Pushes the test image to the image registry as `name` (with credentials), then removes
    /// the local name, so that an edge has to pull it.
    async fn push(&mut self, name: &str, user: &str, password: &str) {
        self.tag(name).await;
        let creds = format!("{user}:{password}");
        self.engine
            .podman(&["push", "--tls-verify=false", "--creds", &creds, name])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        self.engine
            .podman(&["untag", IMAGE, name])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for ImageTags {
    fn drop(&mut self) {
        for name in &self.names {
            // Only the name: `untag` never removes the image or another name of it.
            let _ = self.engine.podman_blocking(&["untag", IMAGE, name]);
        }
        for name in &self.pulled {
            let _ = self.engine.podman_blocking(&["rmi", name]);
        }
    }
}

/// The image registry of `scripts/podman.sh` (`registry.env` next to the engine's socket):
/// `(host:port, user, password)`.
fn image_registry(engine: &str) -> (String, String, String) {
    let socket = engine.strip_prefix("unix://").unwrap_or(engine);
    let file = Path::new(socket).with_file_name("registry.env");
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/podman.sh)", file.display()));
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("{key} missing in {}", file.display()))
    };
    (
        get("CANOPY_TEST_REGISTRY"),
        get("CANOPY_TEST_REGISTRY_USER"),
        get("CANOPY_TEST_REGISTRY_PASSWORD"),
    )
}

/// `GET path HTTP/1.0` to `host:port` from inside container `container` (busybox `nc`).
async fn get_inside(
    engine: &Engine,
    container: &str,
    host: &str,
    port: u16,
    path: &str,
) -> Result<String, String> {
    let script = format!("printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port}");
    exec(engine, container, &["sh", "-c", &script]).await
}

/// The reference's sample packages deploy unchanged: their YAML files are uploaded byte for
/// byte (`tests/fixtures/reference-packages/`, copies of the reference's), the registries they
/// name (`harbor-helm-oci`, `harbor-docker-oci`) are created pointing at the local chart and
/// image registries, equivalent charts of the names and versions they reference are pushed
/// there, and their images are served under the repository paths they use.
///
/// - `developer-guide-tutorial` (profile `default-profile`): its values name the image
///   `registry-oci.<CLUSTER_FQDN>/catalog-apps-<ORG>-<PROJECT>/tutorial-*-image` and say to
///   replace the host; the deployment does, in its `overrideValues` (`image.repository`), with
///   the local registry, which holds the images under `catalog-apps-<project>/` and asks for
///   the credentials of `harbor-docker-oci`: the edge pulls them with those.
/// - `httpbin` (default profile: with Envoy): the chart's images `mccutchen/go-httpbin:v2.15.0`
///   and `envoyproxy/envoy:v1.31-latest` are Docker Hub names (the application names no image
///   registry, so no credentials) and Docker Hub is unreachable here: the test image is named
///   `docker.io/...` in the engine's local store (`IfNotPresent`: no pull), no override at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_packages_deploy_unchanged() {
    let Some(host) = engine_host("reference_packages_deploy_unchanged") else {
        return;
    };
    let Some(env) = HelmTestEnv::from_env() else {
        return;
    };
    let (registry, user, password) = image_registry(&host);
    let run = unique();
    let project = format!("ref-{run}");
    let scope = format!("ref-{run}");
    let engine = Engine::new(&host);
    let tmp = tempfile::tempdir().expect("temp dir");
    let logs = tmp.path().join("logs");
    let _cleanup = Cleanup {
        engine: engine.clone(),
        scopes: vec![scope.clone()],
        run: run.clone(),
        logs: logs.clone(),
    };
    let mut tags = ImageTags {
        engine: engine.clone(),
        names: Vec::new(),
        pulled: Vec::new(),
    };

    // The reference's files are the ones uploaded, unchanged.
    for name in ["developer-guide-tutorial", "httpbin"] {
        // The reference's own copy, where a development checkout has it beside the repository.
        let shared = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/reference/packages")
            .join(name);
        if shared.is_dir() {
            assert_eq!(
                read_dir_files(&reference_package(name)),
                read_dir_files(&shared),
                "tests/fixtures/reference-packages/{name} is the reference's package, byte for byte"
            );
        }
    }

    // Charts under the names and versions the packages reference, in one repository.
    let charts = env.push_chart("tutorial-server", None, false);
    env.push_chart_at("tutorial-web-ui", None, &charts, false);
    env.push_chart_at("httpbin", None, &charts, false);
    // Images under the packages' repository paths.
    let images = format!("{registry}/catalog-apps-{project}");
    for app in ["tutorial-server", "tutorial-web-ui"] {
        tags.push(&format!("{images}/{app}-image:0.1.0"), &user, &password)
            .await;
    }
    for name in [
        "docker.io/mccutchen/go-httpbin:v2.15.0",
        "docker.io/envoyproxy/envoy:v1.31-latest",
    ] {
        tags.tag(name).await;
    }

    let cp = TestControlPlane::start_fleet(fast()).await;
    cp.create_project(&project).await;
    for registry in [
        json!({"name": "harbor-helm-oci", "type": "HELM", "rootUrl": charts}),
        json!({"name": "harbor-docker-oci", "type": "IMAGE",
               "rootUrl": format!("oci://{registry}"), "username": user, "authToken": password}),
    ] {
        let (s, b) = cp
            .post(&cp.catalog(&project, "/registries"), &registry)
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    for name in ["developer-guide-tutorial", "httpbin"] {
        let (s, b) = cp.upload_dir(&project, &reference_package(name)).await;
        assert_eq!(s, StatusCode::OK, "upload {name}: {b}");
    }
    let mut agent = start_agent(
        &cp,
        &project,
        &host,
        &scope,
        &[("site", "lab")],
        tmp.path(),
        &logs,
    )
    .await;

    let deploy = async |body: Value| -> String {
        let (s, b) = cp.post(&deployments_url(&cp, &project, ""), &body).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["deploymentId"].as_str().expect("id").to_string()
    };
    let tutorial = deploy(json!({
        "appName": "app-orch-tutorial-dp", "appVersion": "0.1.0", "profileName": "default-profile",
        "displayName": "tutorial",
        "allAppTargetClusters": {"labels": {"site": "lab"}},
        "overrideValues": [
            {"appName": "tutorial-server",
             "values": {"image": {"repository": format!("{images}/tutorial-server-image")}}},
            {"appName": "tutorial-web-ui",
             "values": {"image": {"repository": format!("{images}/tutorial-web-ui-image")}}},
        ],
    }))
    .await;
    let httpbin = deploy(json!({
        "appName": "httpbin", "appVersion": "2.3.3", "displayName": "httpbin",
        "allAppTargetClusters": {"labels": {"site": "lab"}},
    }))
    .await;
    deployment_reaches(&cp, &project, &tutorial, "RUNNING").await;
    deployment_reaches(&cp, &project, &httpbin, "RUNNING").await;

    // The tutorial: the server got the default profile's values; the web UI reaches it by its
    // Service name.
    let server = member(&engine, &tutorial, "tutorial-server", "tutorial-server").await;
    assert_eq!(
        exec(
            &engine,
            &server,
            &[
                "sh",
                "-c",
                "echo \"$TUTORIAL_GREETING\"; echo \"$INITIAL_COUNT\""
            ]
        )
        .await,
        Ok("Deployed by Application Orchestration (default)\n10\n".into())
    );
    let ui = member(&engine, &tutorial, "tutorial-web-ui", "tutorial-web-ui").await;
    let page = get_inside(&engine, &ui, "tutorial-server", 8000, "/index.html").await;
    assert!(
        page.as_deref().is_ok_and(|p| p.contains("canopy test")),
        "{page:?}"
    );
    // httpbin behind its Envoy sidecar: Envoy's port relays to httpbin, and the Service
    // (port 8080, target port `envoy`) answers by name.
    let bin = member(&engine, &httpbin, "httpbin", "httpbin").await;
    for (host, port) in [("127.0.0.1", 5199), ("httpbin", 8080)] {
        let answer = get_inside(&engine, &bin, host, port, "/status/200").await;
        assert!(
            answer.as_deref().is_ok_and(|a| a.contains("200 OK")),
            "{host}:{port}: {answer:?}"
        );
    }

    for id in [&tutorial, &httpbin] {
        let (s, del) = cp
            .delete(&deployments_url(&cp, &project, &format!("/{id}")))
            .await;
        assert_eq!(s, StatusCode::OK, "{del}");
    }
    scope_is_empty(&engine, &scope).await;
    agent.kill().await;
    cp.stop().await;
    // The images the edge pulled (names of this run's repositories) go with the tags above.
    for app in ["tutorial-server", "tutorial-web-ui"] {
        let name = format!("{images}/{app}-image:0.1.0");
        if engine.podman(&["image", "exists", &name]).await.is_ok() {
            tags.pulled.push(name);
        }
    }
}
