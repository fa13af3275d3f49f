//! Helm apps on the container driver, against the real pieces: the fixture charts of
//! `tests/fixtures/charts` rendered by the real Helm CLI (`CANOPY_TEST_HELM`, see
//! `scripts/helm.sh`) and translated by `canopy-helm` exactly as the control plane translates
//! them, then run by the agent's driver on the Podman service of `CANOPY_TEST_DOCKER_HOST`
//! (`scripts/podman.sh`). Without those variables the tests are skipped, except in CI (env
//! `CI` set), where that is an error.
//!
//! Each test has its own driver scope, project, namespace and deployment id, so tests run in
//! parallel on the shared engine and touch only what they made; a guard removes it all even
//! when a test fails, and the tests check that deleting an app leaves nothing behind.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::query_parameters::{
    InspectNetworkOptions, ListContainersOptions, ListNetworksOptions, ListVolumesOptions,
};
use canopy_agent::DockerDriver;
use canopy_helm::{
    AnalyzeOptions, ArchiveLimits, ChartValues, FetchedChart, HelmBinary, RenderLimits,
    RenderRequest, Renderer, analyze,
};
use canopy_proto::pods::PodApp;
use canopy_proto::{
    AppInstance, AppState, AppStatus, DeploymentInstance, DesiredState, Generation, StatusKind,
    WorkloadControl, WorkloadKind, WorkloadStatus,
};
use futures::StreamExt;
use serde_json::{Value, json};

const ENGINE_ENV: &str = "CANOPY_TEST_DOCKER_HOST";
const HELM_ENV: &str = "CANOPY_TEST_HELM";
/// Generous: the machine may be a loaded 2-core runner shared with other tests.
const DEADLINE: Duration = Duration::from_secs(240);

fn skip(what: &str) {
    if std::env::var_os("CI").is_some() {
        panic!(
            "{what} is not set but CI is: the Helm pod tests must not be skipped \
             (scripts/podman.sh and scripts/helm.sh)"
        );
    }
    eprintln!("skipping: {what} is not set (scripts/podman.sh, scripts/helm.sh)");
}

fn env(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v),
        _ => {
            skip(var);
            None
        }
    }
}

/// A name no other test (or earlier run) uses.
fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let mixed = nanos ^ std::process::id().rotate_left(16) ^ n.wrapping_mul(0x9e37_79b9);
    format!("{prefix}{mixed:08x}")
}

/// A TCP port free on every address now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The fixture chart `chart`, packaged by the real Helm and checked as a fetched chart is.
fn fixture(helm: &HelmBinary, chart: &str) -> FetchedChart {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/charts")
        .join(chart);
    let out = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(helm.path())
        .arg("package")
        .arg(&dir)
        .arg("-d")
        .arg(out.path())
        .env("HOME", out.path())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "helm package {chart}");
    let file = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "tgz"))
        .unwrap();
    let bytes = std::fs::read(file).unwrap();
    let text = std::fs::read_to_string(dir.join("Chart.yaml")).unwrap();
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("version:"))
        .unwrap()
        .trim()
        .to_string();
    FetchedChart::from_archive(chart, &version, bytes, &ArchiveLimits::default()).unwrap()
}

/// One test's world: a scoped driver, a raw engine client, a Helm CLI, unique names.
struct World {
    driver: DockerDriver,
    docker: Docker,
    host: String,
    helm: HelmBinary,
    scope: String,
    project: String,
    namespace: String,
    deployment: String,
}

impl World {
    async fn start(test: &str) -> Option<World> {
        let host = env(ENGINE_ENV)?;
        let helm_path = env(HELM_ENV)?;
        common::init_logs();
        let scope = unique(&format!("{test}-"));
        let driver = connect(&host, &scope).await;
        let docker = Docker::connect_with_host(&host)
            .unwrap()
            .negotiate_version()
            .await
            .unwrap();
        let helm = HelmBinary::locate(Some(Path::new(&helm_path)))
            .await
            .unwrap();
        let tail = &scope[scope.len() - 8..];
        Some(World {
            driver,
            docker,
            host,
            helm,
            project: format!("p{tail}"),
            namespace: format!("ns{tail}"),
            deployment: unique("d"),
            scope,
        })
    }

    /// The chart rendered and translated as the control plane does.
    async fn pods(&self, chart: &str, release: &str, values: Value) -> PodApp {
        let fetched = fixture(&self.helm, chart);
        let rendered = Renderer::new(self.helm.clone(), RenderLimits::default())
            .render(RenderRequest {
                chart: &fetched,
                release,
                namespace: &self.namespace,
                values: &ChartValues::from_value(values).unwrap(),
            })
            .await
            .unwrap_or_else(|e| panic!("{chart}: {e}"));
        let model = analyze(
            &rendered.documents,
            &AnalyzeOptions {
                namespace: &self.namespace,
                ignored_resources: &[],
            },
        )
        .unwrap();
        model.pods()
    }

    fn desired(&self, generation: u64, app: &str, pods: PodApp) -> DesiredState {
        DesiredState {
            generation: Generation(generation),
            deployments: vec![DeploymentInstance {
                deployment_id: self.deployment.clone(),
                project: self.project.clone(),
                package: "helm".into(),
                package_version: "1.0.0".into(),
                generation,
                apps: vec![AppInstance {
                    name: app.into(),
                    version: "0.1.0".into(),
                    namespace: self.namespace.clone(),
                    spec_hash: format!("g{generation}"),
                    pods: Some(pods),
                    ..Default::default()
                }],
            }],
            ..Default::default()
        }
    }

    async fn apply_until(
        &self,
        desired: &DesiredState,
        what: &str,
        done: impl Fn(&AppStatus) -> bool,
    ) -> AppStatus {
        apply_until(&self.driver, desired, what, done).await
    }

    /// Ids of this scope's running containers by name.
    async fn running_containers(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (name, id) in self.containers().await {
            let running = self
                .docker
                .inspect_container(&id, None)
                .await
                .ok()
                .and_then(|i| i.state)
                .and_then(|s| s.running)
                .unwrap_or(false);
            if running {
                out.insert(name, id);
            }
        }
        out
    }

    /// Ids of this scope's containers by name.
    async fn containers(&self) -> BTreeMap<String, String> {
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(HashMap::from([(
                    "label".to_string(),
                    vec![format!("io.canopy.scope={}", self.scope)],
                )])),
                ..Default::default()
            }))
            .await
            .unwrap();
        list.into_iter()
            .map(|c| {
                (
                    c.names.unwrap()[0].trim_start_matches('/').to_string(),
                    c.id.unwrap(),
                )
            })
            .collect()
    }

    async fn volumes(&self) -> Vec<String> {
        let list = self
            .docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(HashMap::from([(
                    "label".to_string(),
                    vec![format!("io.canopy.scope={}", self.scope)],
                )])),
            }))
            .await
            .unwrap();
        list.volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect()
    }

    /// This scope's volumes labelled `io.canopy.keep=true`: `(volume, claim)`, sorted.
    async fn kept_volumes(&self) -> Vec<(String, String)> {
        let list = self
            .docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(HashMap::from([(
                    "label".to_string(),
                    vec![format!("io.canopy.scope={}", self.scope)],
                )])),
            }))
            .await
            .unwrap();
        // Checked here: Podman ORs several label filters of a volume list.
        let label = |v: &bollard::models::Volume, k: &str| v.labels.get(k).cloned();
        let mut out: Vec<(String, String)> = list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .filter(|v| {
                label(v, "io.canopy.scope").as_deref() == Some(self.scope.as_str())
                    && label(v, "io.canopy.keep").as_deref() == Some("true")
            })
            .map(|v| {
                let claim = v
                    .labels
                    .get("io.canopy.volume")
                    .cloned()
                    .unwrap_or_default();
                (v.name, claim)
            })
            .collect();
        out.sort();
        out
    }

    async fn networks(&self) -> Vec<String> {
        let list = self
            .docker
            .list_networks(Some(ListNetworksOptions {
                filters: Some(HashMap::from([(
                    "label".to_string(),
                    vec![format!("io.canopy.scope={}", self.scope)],
                )])),
            }))
            .await
            .unwrap();
        list.into_iter().filter_map(|n| n.name).collect()
    }

    /// The engine name of container `container` of pod `pod` of `app`.
    fn member(&self, app: &str, pod: &str, container: &str) -> String {
        self.driver
            .pod_container_name(&self.deployment, app, pod, container)
    }

    /// Runs `cmd` in a container: `(exit code, output)`.
    async fn exec(&self, container: &str, cmd: &[&str]) -> (i64, String) {
        let exec = self
            .docker
            .create_exec(
                container,
                CreateExecOptions {
                    cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("exec in {container}: {e}"));
        let mut out = String::new();
        if let StartExecResults::Attached { mut output, .. } =
            self.docker.start_exec(&exec.id, None).await.unwrap()
        {
            while let Some(Ok(chunk)) = output.next().await {
                out.push_str(&chunk.to_string());
            }
        }
        let code = self
            .docker
            .inspect_exec(&exec.id)
            .await
            .unwrap()
            .exit_code
            .unwrap_or(-1);
        (code, out)
    }

    /// Deletes the app (an empty desired state) and checks nothing of it is left.
    async fn delete_and_check_nothing_left(&self) {
        let kept = self.delete_and_check_only_kept().await;
        assert!(kept.is_empty(), "kept volumes: {kept:?}");
    }

    /// Deletes the app (an empty desired state) and checks nothing of it is left but the
    /// volumes labelled as kept: `(volume, claim)` of those (still there after a few more
    /// passes).
    async fn delete_and_check_only_kept(&self) -> Vec<(String, String)> {
        let empty = DesiredState {
            generation: Generation(1000),
            ..Default::default()
        };
        let start = Instant::now();
        loop {
            self.driver.apply(&empty).await.unwrap();
            let (c, v, n) = (
                self.containers().await,
                self.volumes().await,
                self.networks().await,
            );
            let kept = self.kept_volumes().await;
            let v: Vec<String> = v
                .into_iter()
                .filter(|v| !kept.iter().any(|(k, _)| k == v))
                .collect();
            if c.is_empty() && v.is_empty() && n.is_empty() {
                for _ in 0..2 {
                    self.driver.apply(&empty).await.unwrap();
                }
                assert_eq!(self.kept_volumes().await, kept, "a kept volume was removed");
                return kept;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "left behind: containers {c:?}, volumes {v:?}, networks {n:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Removes everything of the scope when dropped (also when the test panics).
struct Cleanup {
    host: String,
    scope: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (host, scope) = (self.host.clone(), self.scope.clone());
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                let d = connect(&host, &scope).await;
                let _ = d.apply(&DesiredState::default()).await;
                // Kept claims too: the scope is this test's alone.
                let Ok(docker) = Docker::connect_with_host(&host) else {
                    return;
                };
                let filters = HashMap::from([(
                    "label".to_string(),
                    vec![format!("io.canopy.scope={scope}")],
                )]);
                if let Ok(list) = docker
                    .list_volumes(Some(ListVolumesOptions {
                        filters: Some(filters),
                    }))
                    .await
                {
                    let ours = |v: &bollard::models::Volume| {
                        v.labels.get("io.canopy.scope") == Some(&scope)
                    };
                    for v in list.volumes.unwrap_or_default().into_iter().filter(ours) {
                        let _ = docker
                            .remove_volume(
                                &v.name,
                                None::<bollard::query_parameters::RemoveVolumeOptions>,
                            )
                            .await;
                    }
                }
            })
        });
    }
}

async fn connect(host: &str, scope: &str) -> DockerDriver {
    DockerDriver::connect(Some(host))
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {host}: {}", e.chain()))
        .scoped(scope)
        // Busybox as PID 1 ignores SIGTERM: do not wait 10 s for each removal.
        .with_stop_timeout(Duration::from_secs(1))
}

async fn apply_until(
    driver: &DockerDriver,
    desired: &DesiredState,
    what: &str,
    done: impl Fn(&AppStatus) -> bool,
) -> AppStatus {
    let start = Instant::now();
    loop {
        let statuses = driver
            .apply(desired)
            .await
            .unwrap_or_else(|e| panic!("apply failed: {}", e.chain()));
        let app = statuses.into_iter().next().expect("one app");
        if done(&app) {
            return app;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}; last status: {app:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn pods_of<'a>(app: &'a AppStatus, owner: &str) -> Vec<&'a WorkloadStatus> {
    app.workloads
        .iter()
        .filter(|w| w.kind == StatusKind::Pod && w.owner == owner)
        .collect()
}

fn running(app: &AppStatus) -> bool {
    app.state == AppState::Running
}

/// GET `path` from 127.0.0.1:`port` with a raw HTTP/1.0 request: the body, or `None`.
async fn http_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        Some(out)
    };
    tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .ok()
        .flatten()
}

/// canopy-pair: two Services talking by name, the backend's Service port (80) remapped to its
/// pods' (8080) by the agent, the frontend's node port published on the host, an init
/// container, ConfigMap and Secret files and env, pod fields. Then deleting leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_talks_by_service_name_through_a_remapped_port() {
    let Some(w) = World::start("pair").await else {
        return;
    };
    let _cleanup = Cleanup {
        host: w.host.clone(),
        scope: w.scope.clone(),
    };
    let node_port = free_port();
    let pods = w
        .pods(
            "canopy-pair",
            "pair",
            json!({"frontend": {"nodePort": node_port}}),
        )
        .await;
    let desired = w.desired(1, "pair", pods);
    let app = w
        .apply_until(&desired, "the pair running and ready", running)
        .await;

    // Three pods, reported as Kubernetes pods with their containers.
    let backend = pods_of(&app, "pair-backend");
    let frontend = pods_of(&app, "pair-frontend");
    assert_eq!((backend.len(), frontend.len()), (2, 1), "{app:#?}");
    assert!(
        backend
            .iter()
            .all(|p| p.state == "Running" && p.ready == Some(true))
    );
    assert_eq!(backend[0].owner_kind, "Deployment");
    let fe = frontend[0];
    assert_eq!(
        fe.containers
            .iter()
            .map(|c| (c.name.as_str(), c.init))
            .collect::<Vec<_>>(),
        vec![("wait-for-backend", true), ("fetcher", false)]
    );
    assert_eq!(fe.containers[0].reason, "Completed");
    assert_eq!(fe.containers[0].exit_code, Some(0));
    assert_eq!(fe.ports[0].host_port, Some(node_port));

    // The frontend fetched the backend's page through `pair-backend:80`: the backend listens
    // on 8080 only, so only the agent's remapping can have carried it. It is served on the
    // node port, published on the host.
    let start = Instant::now();
    loop {
        let page = http_get(node_port, "/index.html").await.unwrap_or_default();
        if page.contains("hello from the backend") {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the frontend never served the backend's page; last answer: {page:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let fetcher = w.member("pair", &fe.name, "fetcher");
    // Every DNS form of the Service name resolves in the namespace network.
    for name in [
        "pair-backend".to_string(),
        format!("pair-backend.{}", w.namespace),
        format!("pair-backend.{}.svc.cluster.local", w.namespace),
    ] {
        let (code, out) = w
            .exec(
                &fetcher,
                &[
                    "sh",
                    "-c",
                    &format!("printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {name} 80"),
                ],
            )
            .await;
        assert!(
            code == 0 && out.contains("hello from the backend"),
            "{name}: {code} {out}"
        );
    }
    // Secret files are never world-readable; pod fields are filled in.
    let (_, mode) = w
        .exec(&fetcher, &["stat", "-c", "%a", "/etc/token/API_TOKEN"])
        .await;
    assert_eq!(mode.trim(), "400");
    let (_, token) = w.exec(&fetcher, &["cat", "/etc/token/API_TOKEN"]).await;
    assert_eq!(token, "change-me");
    let (_, pod_name) = w
        .exec(
            &w.member("pair", &backend[0].name, "web"),
            &["sh", "-c", "echo $POD_NAME"],
        )
        .await;
    assert_eq!(pod_name.trim(), backend[0].name);
    // Containers of a pod share its network namespace: 127.0.0.1 reaches the pod's server.
    let (code, out) = w
        .exec(
            &w.member("pair", &backend[0].name, "web"),
            &[
                "sh",
                "-c",
                "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 3 127.0.0.1 8080",
            ],
        )
        .await;
    assert!(code == 0 && out.contains("hello"), "{out}");

    w.delete_and_check_nothing_left().await;
}

/// canopy-stateful: a StatefulSet (stable names, an init container, a volume per replica),
/// a Job that succeeds once and is not run again, a DaemonSet and a Pod; an upgrade that
/// changes only the Job runs only the Job again (the claim keeps its data); one that changes
/// the StatefulSet replaces its pods and keeps their volumes; a new driver (an agent
/// restart) adopts everything; a failing Job is reported so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_set_job_daemon_set_and_claims_survive_upgrades() {
    let Some(w) = World::start("sts").await else {
        return;
    };
    let _cleanup = Cleanup {
        host: w.host.clone(),
        scope: w.scope.clone(),
    };
    let app_of = |pods| w.desired(1, "st", pods);
    let v1 = app_of(
        w.pods("canopy-stateful", "st", json!({"keepShared": true}))
            .await,
    );
    let app = w
        .apply_until(&v1, "the stateful app running, its Pod done", |a| {
            running(a)
                && pods_of(a, "st-canopy-stateful-probe")
                    .iter()
                    .any(|p| p.state == "Succeeded")
        })
        .await;
    let db = pods_of(&app, "st-canopy-stateful-db");
    assert_eq!(
        db.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        vec!["st-canopy-stateful-db-0", "st-canopy-stateful-db-1"]
    );
    assert!(db.iter().all(|p| p.ready == Some(true)));
    let job = pods_of(&app, "st-canopy-stateful-seed");
    assert_eq!(job.len(), 1, "{app:#?}");
    assert_eq!(
        (job[0].state.as_str(), job[0].owner_kind.as_str()),
        ("Succeeded", "Job")
    );
    let probe = pods_of(&app, "st-canopy-stateful-probe");
    assert_eq!(
        probe[0].state, "Succeeded",
        "the Pod reached the StatefulSet by its headless Service"
    );
    let daemon = pods_of(&app, "st-canopy-stateful-agent");
    assert_eq!(daemon.len(), 1);
    let agent = w.member("st", &daemon[0].name, "agent");
    let db0 = w.member("st", "st-canopy-stateful-db-0", "db");
    let (code, _) = w.exec(&db0, &["test", "-f", "/data/initialized"]).await;
    assert_eq!(code, 0, "the init container wrote to the replica's volume");
    assert_eq!(
        w.exec(&db0, &["sh", "-c", "echo kept > /data/marker"])
            .await
            .0,
        0
    );
    let before = w.containers().await;

    // A few passes later, the Job has not run again.
    for _ in 0..3 {
        w.driver.apply(&v1).await.unwrap();
    }
    assert_eq!(
        w.exec(&agent, &["cat", "/shared/seed"]).await.1,
        "first line\n"
    );

    // Upgrade 1: only the Job's value changes: only the Job runs (again), the claim kept.
    let v2 = w.desired(
        2,
        "st",
        w.pods(
            "canopy-stateful",
            "st",
            json!({"seed": "second line", "keepShared": true}),
        )
        .await,
    );
    w.apply_until(&v2, "the changed Job done", |a| {
        running(a)
            && pods_of(a, "st-canopy-stateful-seed")
                .iter()
                .any(|p| p.state == "Succeeded")
    })
    .await;
    assert_eq!(
        w.exec(&agent, &["cat", "/shared/seed"]).await.1,
        "first line\nsecond line\n"
    );
    let after = w.containers().await;
    for (name, id) in &before {
        if !name.contains("canopy-stateful-seed") {
            assert_eq!(
                after.get(name),
                Some(id),
                "{name} was replaced by a Job-only change"
            );
        }
    }

    // Upgrade 2: the StatefulSet's template changes: its pods are replaced, data kept.
    let v3 = w.desired(
        3,
        "st",
        w.pods(
            "canopy-stateful",
            "st",
            json!({"seed": "second line", "storage": "32Mi", "keepShared": true}),
        )
        .await,
    );
    let app = w
        .apply_until(&v3, "the replaced StatefulSet running", running)
        .await;
    let now = w.containers().await;
    assert_ne!(now.get(&db0), before.get(&db0), "db-0 was replaced");
    assert_eq!(now.get(&agent), before.get(&agent), "the DaemonSet was not");
    assert_eq!(w.exec(&db0, &["cat", "/data/marker"]).await.1, "kept\n");
    assert_eq!(pods_of(&app, "st-canopy-stateful-db").len(), 2);

    // An agent restart: a new driver adopts everything, replaces nothing.
    let restarted = connect(&w.host, &w.scope).await;
    apply_until(&restarted, &v3, "the app adopted", running).await;
    assert_eq!(
        w.containers().await,
        now,
        "the restarted driver changed containers"
    );

    // A Job that fails: its failure says so.
    let v4 = w.desired(
        4,
        "st",
        w.pods(
            "canopy-stateful",
            "st",
            json!({"seed": "third line", "storage": "32Mi", "seedExit": 3, "seedBackoffLimit": 0, "keepShared": true}),
        )
        .await,
    );
    let app = apply_until(&restarted, &v4, "the failing Job reported", |a| {
        a.state == AppState::Down && a.message.contains("failed: BackoffLimitExceeded")
    })
    .await;
    assert!(
        app.message.contains("job st-canopy-stateful-seed"),
        "{}",
        app.message
    );
    assert!(
        app.message.contains("exited with code 3"),
        "{}",
        app.message
    );
    let failed = pods_of(&app, "st-canopy-stateful-seed");
    assert_eq!(failed[0].state, "Failed");
    // It is not retried past its limit.
    for _ in 0..3 {
        restarted.apply(&v4).await.unwrap();
    }
    let attempts = w
        .containers()
        .await
        .keys()
        .filter(|n| n.contains("canopy-stateful-seed") && n.ends_with("_seed"))
        .count();
    assert_eq!(attempts, 1, "backoffLimit 0: one attempt");

    // Deleted: everything goes but the claim that asked to be kept (`keepShared`, Helm's
    // `helm.sh/resource-policy: keep`), with its data; the StatefulSet's own claims go.
    let kept = w.delete_and_check_only_kept().await;
    assert_eq!(
        kept.iter()
            .map(|(_, claim)| claim.as_str())
            .collect::<Vec<_>>(),
        vec!["st-canopy-stateful-shared"]
    );
    for (volume, _) in &kept {
        w.docker
            .remove_volume(
                volume,
                None::<bollard::query_parameters::RemoveVolumeOptions>,
            )
            .await
            .unwrap();
    }
    w.delete_and_check_nothing_left().await;
}

/// canopy-web with two replicas behind a node port (the agent's proxy on the host): a failing
/// readiness probe keeps the app from RUNNING and says why, and keeps the pod out of the
/// node port's endpoints; a failing liveness probe restarts the container; pod delete
/// recreates the pod; logs of a pod's container come through the driver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_probes_gate_readiness_and_restart_on_liveness() {
    let Some(w) = World::start("web").await else {
        return;
    };
    let _cleanup = Cleanup {
        host: w.host.clone(),
        scope: w.scope.clone(),
    };
    let port = free_port();
    let probe = |path: &str| json!({"httpGet": {"path": path, "port": "http"}, "periodSeconds": 1, "failureThreshold": 2});
    let values = json!({
        "replicaCount": 2,
        "service": {"type": "NodePort", "port": port},
        "command": ["sh", "-c", format!("mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p {port} -h /www")],
        "readinessProbe": probe("/ready.html"),
        "livenessProbe": probe("/index.html"),
    });
    let pods = w.pods("canopy-web", "web", values).await;
    let svc = &pods.services[0];
    assert_eq!(
        svc.ports[0].node_port,
        Some(port),
        "NodePort: the service port on the host"
    );
    let desired = w.desired(1, "web", pods);
    let app = w
        .apply_until(&desired, "the readiness probe failing", |a| {
            a.state == AppState::Down && a.message.contains("readiness probe failed")
        })
        .await;
    assert!(app.message.contains("statuscode: 404"), "{}", app.message);
    let names: Vec<String> = pods_of(&app, "web-canopy-web")
        .iter()
        .map(|p| p.name.clone())
        .collect();
    assert_eq!(names.len(), 2);
    // Not ready: the node port forwards to no pod.
    assert_eq!(http_get(port, "/index.html").await.unwrap_or_default(), "");

    for pod in &names {
        let c = w.member("web", pod, "canopy-web");
        assert_eq!(w.exec(&c, &["touch", "/www/ready.html"]).await.0, 0);
    }
    let app = w.apply_until(&desired, "the app ready", running).await;
    assert!(
        pods_of(&app, "web-canopy-web")
            .iter()
            .all(|p| p.ready == Some(true))
    );
    let start = Instant::now();
    while !http_get(port, "/index.html")
        .await
        .unwrap_or_default()
        .contains("ok")
    {
        assert!(start.elapsed() < DEADLINE, "the node port never answered");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Liveness: the page goes away, the container is restarted and serves it again.
    let victim = w.member("web", &names[0], "canopy-web");
    let started = |i: bollard::models::ContainerInspectResponse| {
        i.state.and_then(|s| s.started_at).unwrap_or_default()
    };
    let first_start = started(w.docker.inspect_container(&victim, None).await.unwrap());
    assert_eq!(w.exec(&victim, &["rm", "/www/index.html"]).await.0, 0);
    let app = w
        .apply_until(
            &desired,
            "the container restarted by its liveness probe",
            |a| {
                running(a)
                    && a.workloads.iter().any(|p| {
                        p.name == names[0]
                            && p.containers.iter().any(|c| {
                                c.restarts >= 1 && c.message.contains("liveness probe failed")
                            })
                    })
            },
        )
        .await;
    let second_start = started(w.docker.inspect_container(&victim, None).await.unwrap());
    assert_ne!(first_start, second_start, "restarted in place");
    assert_eq!(
        w.containers().await.len(),
        2 * 2,
        "no container added: {app:#?}"
    );

    // Pod delete: the pod is made anew, under the same name.
    let infra_before = w.containers().await;
    let mut deleted = desired.clone();
    deleted.controls = vec![WorkloadControl {
        deployment_id: w.deployment.clone(),
        app: "web".into(),
        kind: WorkloadKind::Pod,
        workload: names[1].clone(),
        running: true,
        restarts: 1,
    }];
    let app = w
        .apply_until(&deleted, "the deleted pod back", |a| {
            pods_of(a, "web-canopy-web").len() == 2
                && a.workloads.iter().any(|p| {
                    p.name == names[1] && p.containers.iter().all(|c| c.state == "running")
                })
        })
        .await;
    let after = w.containers().await;
    let recreated = w.member("web", &names[1], "canopy-web");
    assert_ne!(
        after.get(&recreated),
        infra_before.get(&recreated),
        "{app:#?}"
    );
    assert_eq!(
        after.get(&victim),
        infra_before.get(&victim),
        "the other pod is untouched"
    );
    // Applied once: more passes do not recreate it again.
    let settled = w.containers().await;
    for _ in 0..2 {
        w.driver.apply(&deleted).await.unwrap();
    }
    assert_eq!(w.containers().await, settled);

    // Logs of a pod's container, as `pod/container`.
    let name = w
        .driver
        .find_pod_container(&w.deployment, "web", &format!("{}/canopy-web", names[0]))
        .await
        .unwrap();
    assert_eq!(name, victim);
    assert!(
        w.driver
            .find_pod_container(&w.deployment, "web", "nope/canopy-web")
            .await
            .is_err()
    );

    w.delete_and_check_nothing_left().await;
}

/// canopy-web whose container exits at once: the crash loop is reported as such (the pod's
/// reason, the exit code). Then an upgrade makes it a web server with a `hostPort`, published
/// on the host (an ephemeral port), and the crash is gone from the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_is_reported_and_a_host_port_is_published() {
    let Some(w) = World::start("crash").await else {
        return;
    };
    let _cleanup = Cleanup {
        host: w.host.clone(),
        scope: w.scope.clone(),
    };
    let no_probes =
        |command: Value| json!({"command": command, "livenessProbe": null, "readinessProbe": null});
    let crashing = w
        .pods(
            "canopy-web",
            "cl",
            no_probes(json!(["sh", "-c", "echo boom >&2; exit 3"])),
        )
        .await;
    let app = w
        .apply_until(
            &w.desired(1, "cl", crashing),
            "the crash loop reported",
            |a| {
                a.state == AppState::Down
                    && pods_of(a, "cl-canopy-web").iter().any(|p| {
                        p.containers
                            .iter()
                            .any(|c| c.reason == "CrashLoopBackOff" && c.restarts >= 1)
                    })
            },
        )
        .await;
    assert!(app.message.contains("code 3"), "{}", app.message);
    assert_eq!(pods_of(&app, "cl-canopy-web").len(), 1, "{app:#?}");

    // The upgrade: a server on port 80 of the pod, published on an ephemeral host port.
    let port = free_port();
    let mut serving = w
        .pods(
            "canopy-web",
            "cl",
            no_probes(json!([
                "sh",
                "-c",
                "mkdir -p /www && echo served on the host port > /www/index.html && exec httpd -f -p 80 -h /www"
            ])),
        )
        .await;
    let declared = &mut serving.workloads[0].containers[0].ports[0];
    assert_eq!(declared.container_port, 80);
    declared.host_port = Some(port);
    let app = w
        .apply_until(&w.desired(2, "cl", serving), "the server running", running)
        .await;
    let pods = pods_of(&app, "cl-canopy-web");
    assert_eq!(pods.len(), 1, "the crashing pod was replaced: {app:#?}");
    assert!(
        pods[0].containers.iter().all(|c| c.reason.is_empty()),
        "{app:#?}"
    );
    assert!(
        pods[0].ports.iter().any(|p| p.host_port == Some(port)),
        "{:#?}",
        pods[0].ports
    );
    let start = Instant::now();
    loop {
        let page = http_get(port, "/index.html").await.unwrap_or_default();
        if page.contains("served on the host port") {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the host port never answered; last answer: {page:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    w.delete_and_check_nothing_left().await;
}

// ------------------------------------------------------------------ the agent, killed

/// Set in a child process of this test binary: run the agent (see
/// `the_agent_killed_with_sigkill_adopts_its_pods`).
const CHILD_ENV: &str = "CANOPY_HELM_AGENT_CHILD";

/// Not a test of its own: the agent process of
/// `the_agent_killed_with_sigkill_adopts_its_pods`, run when [`CHILD_ENV`] is set (a JSON
/// object: server, data dir, engine, scope), and a no-op otherwise.
#[test]
fn agent_child_process() {
    let Ok(config) = std::env::var(CHILD_ENV) else {
        return;
    };
    let c: Value = serde_json::from_str(&config).unwrap();
    let text = |k: &str| c[k].as_str().unwrap().to_string();
    let mut config = canopy_agent::AgentConfig::new(text("server"), text("data"));
    config.enroll_token = Some(common::TOKEN.into());
    config.docker_host = Some(text("engine"));
    config.scope = Some(text("scope"));
    config.converge_interval = Duration::from_millis(500);
    config.heartbeat = Some(Duration::from_millis(500));
    config.poll_wait = Duration::from_secs(1);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("canopy_agent=info")
                .try_init();
            canopy_agent::run(config, std::future::pending())
                .await
                .unwrap();
        });
}

struct Child(std::process::Child);

impl Child {
    fn start(config: &Value) -> Child {
        let exe = std::env::current_exe().unwrap();
        let child = std::process::Command::new(exe)
            .args([
                "agent_child_process",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, config.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Child(child)
    }

    /// SIGKILL, as a crash or the OOM killer would.
    fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The real agent in a process of its own runs canopy-pair, is killed with SIGKILL in the
/// middle of creating it, and again once it runs: each time the restarted agent adopts what
/// exists, makes exactly what is missing (no duplicates) and restarts nothing that runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_killed_with_sigkill_adopts_its_pods() {
    let Some(w) = World::start("kill").await else {
        return;
    };
    let _cleanup = Cleanup {
        host: w.host.clone(),
        scope: w.scope.clone(),
    };
    let node_port = free_port();
    let pods = w
        .pods(
            "canopy-pair",
            "pair",
            json!({"frontend": {"nodePort": node_port}}),
        )
        .await;
    let desired = w.desired(1, "pair", pods);
    let cp = common::FakeControlPlane::start().await;
    cp.set_desired(desired.clone());
    let data = tempfile::tempdir().unwrap();
    let config = json!({
        "server": cp.url,
        "data": data.path(),
        "engine": w.host,
        "scope": w.scope,
    });
    let reported_running = |after: usize| {
        cp.reports()
            .iter()
            .skip(after)
            .any(|r| r.apps.len() == 1 && r.apps[0].state == AppState::Running)
    };

    // Killed while it makes the pods: as soon as some containers exist.
    let child = Child::start(&config);
    let start = Instant::now();
    while w.containers().await.len() < 2 {
        assert!(start.elapsed() < DEADLINE, "the agent made nothing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill();
    let partial = w.running_containers().await;
    let child = Child::start(&config);
    let start = Instant::now();
    let seen = cp.reports().len();
    while !reported_running(seen) {
        assert!(
            start.elapsed() < DEADLINE,
            "never reported running after the restart; last: {:#?}",
            cp.reports().last()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // 2 backend pods (infra, web), the frontend (infra, init, fetcher), the Service's container.
    let full = w.containers().await;
    assert_eq!(full.len(), 2 * 2 + 3 + 1, "{full:#?}");
    // What ran when the agent was killed was adopted, not made again.
    for (name, id) in &partial {
        assert_eq!(full.get(name), Some(id), "{name} was recreated");
    }

    // Killed once everything runs: the restarted agent changes nothing.
    child.kill();
    let child = Child::start(&config);
    let seen = cp.reports().len();
    let start = Instant::now();
    while !reported_running(seen) {
        assert!(start.elapsed() < DEADLINE, "never reported running again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let last = cp.reports().last().unwrap().apps[0].clone();
    assert_eq!(
        last.workloads
            .iter()
            .filter(|p| p.kind == StatusKind::Pod)
            .count(),
        3,
        "{last:#?}"
    );
    assert_eq!(
        w.containers().await,
        full,
        "a restart replaced or added containers"
    );
    child.kill();

    // The network of the namespace exists while the app does; deletion removes it all.
    let network = w.driver.network_name(&w.project, &w.namespace);
    assert!(
        w.docker
            .inspect_network(&network, None::<InspectNetworkOptions>)
            .await
            .is_ok()
    );
    w.delete_and_check_nothing_left().await;
}
