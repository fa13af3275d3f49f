//! The container driver against a real engine: the Podman service named by
//! `CANOPY_TEST_DOCKER_HOST` (start it with `scripts/podman.sh`, which also makes the local
//! image `localhost/busybox:canopy-test`, and runs a registry with credentials whose details it
//! writes to `registry.env` next to the socket). Without the variable these tests are skipped,
//! except in CI (env `CI` set), where that is an error. Hand-made objects are created through
//! the engine API, as `podman run` / `podman volume create` do, so the tests also run against
//! Docker.
//!
//! Every test runs its own driver scope, project and deployment ids, so the tests run in
//! parallel on one engine without adopting or collecting each other's containers; a guard
//! removes whatever a test leaves behind, even when it fails.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, NetworkCreateRequest, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptions, InspectNetworkOptions, ListContainersOptions, RemoveContainerOptions,
    RemoveVolumeOptions, StopContainerOptions,
};
use canopy_agent::DockerDriver;
use canopy_proto::{
    AppInstance, AppState, AppStatus, ContainerSpec, DeploymentInstance, DesiredState, Generation,
    Health, HealthCheck, PortSpec, RegistryAuth, RestartPolicy, StatusKind, VolumeMount,
};
use futures::StreamExt;

/// Environment variable naming the engine for these tests.
const ENGINE_ENV: &str = "CANOPY_TEST_DOCKER_HOST";
/// The image scripts/podman.sh imports (busybox with /www/index.html).
const IMAGE: &str = "localhost/busybox:canopy-test";
/// Generous: the machine may be a loaded 2-core runner.
const DEADLINE: Duration = Duration::from_secs(180);

/// One test's view of the engine: a scoped driver, a raw client to inspect and to play the
/// operator, and names no other test uses.
struct Engine {
    driver: DockerDriver,
    docker: Docker,
    host: String,
    scope: String,
    project: String,
}

impl Engine {
    /// `None` when no engine is configured (outside CI).
    async fn start(test: &str) -> Option<Engine> {
        let host = match std::env::var(ENGINE_ENV) {
            Ok(h) if !h.trim().is_empty() => h,
            _ => {
                if std::env::var_os("CI").is_some() {
                    panic!(
                        "{ENGINE_ENV} is not set but CI is: the container driver tests must not be \
                         skipped. Start Podman with scripts/podman.sh and export the line it prints."
                    );
                }
                eprintln!("skipping {test}: {ENGINE_ENV} is not set (see scripts/podman.sh)");
                return None;
            }
        };
        // The driver's logs go with the test's output (shown when it fails).
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "canopy_agent=debug".into()),
            )
            .try_init();
        let scope = unique(test);
        let driver = DockerDriver::connect(Some(&host))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {host}: {}", e.chain()))
            .scoped(&scope)
            // Busybox as PID 1 ignores SIGTERM; do not wait 10 s for every replacement.
            .with_stop_timeout(Duration::from_secs(1));
        let docker = Docker::connect_with_host(&host)
            .expect("bollard client")
            .negotiate_version()
            .await
            .expect("engine version");
        Some(Engine {
            driver,
            docker,
            host,
            project: format!("p{}", &scope[scope.len() - 8..]),
            scope,
        })
    }

    /// A deployment id unique to this run.
    fn deployment_id(&self) -> String {
        unique("d")
    }

    /// Applies until `done` holds for the returned statuses, or panics at the deadline with the
    /// last statuses.
    async fn apply_until(
        &self,
        desired: &DesiredState,
        what: &str,
        done: impl Fn(&[AppStatus]) -> bool,
    ) -> Vec<AppStatus> {
        let start = Instant::now();
        loop {
            let statuses = self
                .driver
                .apply(desired)
                .await
                .unwrap_or_else(|e| panic!("apply failed: {}", e.chain()));
            if done(&statuses) {
                return statuses;
            }
            if start.elapsed() > DEADLINE {
                panic!("timed out waiting for {what}; last statuses: {statuses:#?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Observes until `done` holds (no changes made), or panics at the deadline.
    async fn observe_until(
        &self,
        desired: &DesiredState,
        what: &str,
        done: impl Fn(&[AppStatus]) -> bool,
    ) -> Vec<AppStatus> {
        let start = Instant::now();
        loop {
            let statuses = self
                .driver
                .observe(desired)
                .await
                .unwrap_or_else(|e| panic!("observe failed: {}", e.chain()));
            if done(&statuses) {
                return statuses;
            }
            if start.elapsed() > DEADLINE {
                panic!("timed out waiting for {what}; last statuses: {statuses:#?}");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// `(id, StartedAt, generation label)` of a container, or `None` if it does not exist.
    async fn container(&self, name: &str) -> Option<(String, String, String)> {
        match self.docker.inspect_container(name, None).await {
            Ok(i) => Some((
                i.id.unwrap_or_default(),
                i.state.and_then(|s| s.started_at).unwrap_or_default(),
                i.config
                    .and_then(|c| c.labels)
                    .and_then(|l| l.get("io.canopy.generation").cloned())
                    .unwrap_or_default(),
            )),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => None,
            Err(e) => panic!("inspect {name}: {e}"),
        }
    }

    async fn volume_exists(&self, name: &str) -> bool {
        self.docker.inspect_volume(name).await.is_ok()
    }

    async fn network_exists(&self, name: &str) -> bool {
        self.docker
            .inspect_network(name, None::<InspectNetworkOptions>)
            .await
            .is_ok()
    }

    /// Runs a command in a container: `(exit code, stdout+stderr)`.
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
        if let StartExecResults::Attached { mut output, .. } = self
            .docker
            .start_exec(&exec.id, None)
            .await
            .expect("start exec")
        {
            while let Some(Ok(chunk)) = output.next().await {
                out.push_str(&chunk.to_string());
            }
        }
        let code = self
            .docker
            .inspect_exec(&exec.id)
            .await
            .expect("inspect exec")
            .exit_code
            .unwrap_or(-1);
        (code, out)
    }

    /// Names of the scope's Canopy containers.
    async fn scoped_containers(&self) -> Vec<String> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("io.canopy.scope={}", self.scope)],
        )]);
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .expect("list containers");
        list.into_iter()
            .filter_map(|c| {
                c.names?
                    .first()
                    .map(|n| n.trim_start_matches('/').to_string())
            })
            .collect()
    }

    /// Removes everything of this test's scope when dropped (also when the test panics).
    fn cleanup_guard(&self) -> Cleanup<'_> {
        Cleanup(self)
    }
}

struct Cleanup<'a>(&'a Engine);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let driver = self.0.driver.clone();
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                // An empty desired state: the scoped driver removes all it created.
                let _ = driver.apply(&DesiredState::default()).await;
            })
        });
    }
}

/// Objects a test made by hand, removed when dropped (the driver never will). An empty network
/// name: none.
struct HandMade {
    docker: Docker,
    containers: Vec<String>,
    volume: String,
    network: String,
}

impl Drop for HandMade {
    fn drop(&mut self) {
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                for name in &self.containers {
                    let options = RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    };
                    let _ = self.docker.remove_container(name, Some(options)).await;
                }
                let _ = self
                    .docker
                    .remove_volume(&self.volume, None::<RemoveVolumeOptions>)
                    .await;
                if !self.network.is_empty() {
                    let _ = self.docker.remove_network(&self.network).await;
                }
            })
        });
    }
}

/// A name no other test (or earlier run) uses: test name, process, time and a counter.
fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let mixed = nanos ^ std::process::id().rotate_left(16) ^ n.wrapping_mul(0x9e37_79b9);
    format!("{}{:08x}", prefix.replace('_', "-"), mixed)
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

fn busybox(name: &str, command: &[&str]) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        image: IMAGE.into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn app(
    name: &str,
    namespace: &str,
    spec_hash: &str,
    containers: Vec<ContainerSpec>,
) -> AppInstance {
    AppInstance {
        name: name.into(),
        version: "1.0.0".into(),
        namespace: namespace.into(),
        spec_hash: spec_hash.into(),
        containers,
        ..Default::default()
    }
}

fn desired(deployments: Vec<DeploymentInstance>) -> DesiredState {
    DesiredState {
        generation: Generation(1),
        deployments,
        ..Default::default()
    }
}

fn deployment(e: &Engine, id: &str, apps: Vec<AppInstance>) -> DeploymentInstance {
    DeploymentInstance {
        deployment_id: id.into(),
        project: e.project.clone(),
        package: "test".into(),
        package_version: "1.0.0".into(),
        generation: 1,
        apps,
    }
}

fn status<'a>(statuses: &'a [AppStatus], app: &str) -> &'a AppStatus {
    statuses
        .iter()
        .find(|s| s.app == app)
        .unwrap_or_else(|| panic!("no status for app {app}: {statuses:#?}"))
}

fn all_running(statuses: &[AppStatus]) -> bool {
    statuses.iter().all(|s| s.state == AppState::Running)
}

/// The web app: busybox httpd published on `port`, healthy once it answers HTTP.
fn web_app(port: u16) -> AppInstance {
    let mut httpd = busybox(
        "httpd",
        &["busybox", "httpd", "-f", "-p", "80", "-h", "/www"],
    );
    httpd.ports = vec![PortSpec {
        container_port: 80,
        host_port: Some(port),
        host_ip: Some("127.0.0.1".into()),
        ..Default::default()
    }];
    httpd.health_check = Some(HealthCheck {
        command: vec![
            "wget".into(),
            "-q".into(),
            "-O".into(),
            "/dev/null".into(),
            "http://127.0.0.1/".into(),
        ],
        interval_seconds: 2,
        timeout_seconds: 5,
        retries: 3,
        start_period_seconds: 0,
    });
    httpd.memory_bytes = Some(64 << 20);
    httpd.cpus = Some(0.5);
    httpd.volumes = vec![VolumeMount {
        name: "logs".into(),
        mount_path: "/logs".into(),
        read_only: false,
    }];
    app("web", "shop", "web-g1", vec![httpd])
}

/// The client app: fetches the web app by its alias in a loop; healthy once a fetch worked.
fn client_app() -> AppInstance {
    let mut fetch = busybox(
        "fetch",
        &[
            "sh",
            "-c",
            "while true; do wget -q -O /tmp/page http://web-httpd/ && cp /tmp/page /tmp/ok; sleep 1; done",
        ],
    );
    fetch.health_check = Some(HealthCheck {
        command: vec!["test".into(), "-s".into(), "/tmp/ok".into()],
        interval_seconds: 1,
        timeout_seconds: 5,
        retries: 3,
        start_period_seconds: 0,
    });
    let mut a = app("client", "shop", "client-g1", vec![fetch]);
    a.depends_on = vec!["web".into()];
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependent_app_waits_for_healthy_web_then_both_run_and_resolve_each_other() {
    let Some(e) = Engine::start("deps").await else {
        return;
    };
    let _cleanup = e.cleanup_guard();
    let port = free_port();
    let id = e.deployment_id();
    let state = desired(vec![deployment(&e, &id, vec![client_app(), web_app(port)])]);
    let web_name = e.driver.container_name(&id, "web", "httpd");
    let client_name = e.driver.container_name(&id, "client", "fetch");

    // First pass: web is created but cannot be healthy yet, so the client is not even created.
    let first = e.driver.apply(&state).await.expect("first apply");
    assert_eq!(first.len(), 2);
    assert_eq!(
        first[0].app, "client",
        "statuses come in the order of the desired state"
    );
    let client = status(&first, "client");
    assert_eq!(client.state, AppState::Waiting, "{first:#?}");
    assert!(client.message.contains("app web"), "{}", client.message);
    assert!(client.workloads.is_empty());
    assert!(
        e.container(&client_name).await.is_none(),
        "a waiting app is not started"
    );
    assert_eq!(
        status(&first, "web").state,
        AppState::Deploying,
        "{first:#?}"
    );

    // Later passes: web becomes healthy, then the client starts and becomes healthy too (its
    // health check passes only once it fetched the page from http://web-httpd/).
    // The client is created only in or after the pass in which web was Running.
    let web_was_running = std::cell::Cell::new(false);
    let statuses = e
        .apply_until(&state, "web and client running", |s| {
            web_was_running
                .set(web_was_running.get() || status(s, "web").state == AppState::Running);
            let client = status(s, "client");
            assert!(
                web_was_running.get()
                    || (client.workloads.is_empty() && client.state == AppState::Waiting),
                "client started before web was healthy: {s:#?}"
            );
            all_running(s)
        })
        .await;

    let web = status(&statuses, "web");
    assert_eq!(web.workloads.len(), 1);
    let w = &web.workloads[0];
    assert_eq!(w.kind, StatusKind::Container);
    assert_eq!(w.name, "httpd", "reported by its name in the template");
    assert_eq!(w.image, IMAGE);
    assert_eq!(w.state, "running");
    assert_eq!(w.health, Health::Healthy);
    assert_eq!(
        w.ports,
        vec![PortSpec {
            container_port: 80,
            host_port: Some(port),
            host_ip: Some("127.0.0.1".into()),
            ..Default::default()
        }]
    );
    assert_eq!(
        status(&statuses, "client").workloads[0].health,
        Health::Healthy
    );

    // Limits, restart policy and labels as asked.
    let inspect = e
        .docker
        .inspect_container(&web_name, None)
        .await
        .expect("inspect web");
    let host = inspect.host_config.expect("host config");
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.memory, Some(64 << 20));
    assert_eq!(
        host.restart_policy
            .and_then(|p| p.name)
            .map(|n| n.to_string()),
        Some("always".to_string())
    );
    let labels = inspect.config.and_then(|c| c.labels).expect("labels");
    for (k, v) in [
        ("io.canopy.managed", "true"),
        ("io.canopy.project", e.project.as_str()),
        ("io.canopy.deployment", id.as_str()),
        ("io.canopy.app", "web"),
        ("io.canopy.generation", "web-g1"),
        ("io.canopy.container", "httpd"),
    ] {
        assert_eq!(labels.get(k).map(String::as_str), Some(v), "label {k}");
    }

    // Web answers on the published host port.
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client");
    let body = http
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .expect("GET the published port")
        .text()
        .await
        .expect("body");
    assert!(body.contains("canopy test"), "{body}");

    // Name resolution between the containers, by both aliases and by container name.
    for target in ["web-httpd", "httpd", web_name.as_str()] {
        let (code, out) = e
            .exec(
                &client_name,
                &["wget", "-q", "-O-", &format!("http://{target}/")],
            )
            .await;
        assert_eq!(code, 0, "fetching http://{target}/ from the client: {out}");
        assert!(out.contains("canopy test"), "{out}");
    }

    // Re-applying the same desired state changes nothing.
    let before = (
        e.container(&web_name).await,
        e.container(&client_name).await,
    );
    for _ in 0..2 {
        let again = e.driver.apply(&state).await.expect("re-apply");
        assert!(all_running(&again), "{again:#?}");
    }
    // So does a new driver (an agent restart): it adopts what exists.
    let restarted = DockerDriver::connect(Some(&e.host))
        .await
        .expect("connect again")
        .scoped(&e.scope);
    let adopted = restarted.apply(&state).await.expect("apply after restart");
    assert!(all_running(&adopted), "{adopted:#?}");
    let after = (
        e.container(&web_name).await,
        e.container(&client_name).await,
    );
    assert!(before.0.is_some() && before.1.is_some());
    assert_eq!(
        before, after,
        "re-applying must not recreate or restart containers"
    );

    // observe reports the same and changes nothing either.
    let observed = e.driver.observe(&state).await.expect("observe");
    assert!(all_running(&observed), "{observed:#?}");

    // Removing the deployment from the desired state removes its containers, volumes and
    // network.
    let network = e.driver.network_name(&e.project, "shop");
    let volume = e.driver.volume_name(&id, "web", "logs");
    assert!(e.network_exists(&network).await);
    assert!(e.volume_exists(&volume).await);
    let none = e
        .driver
        .apply(&desired(vec![]))
        .await
        .expect("apply nothing");
    assert!(none.is_empty());
    assert!(e.container(&web_name).await.is_none());
    assert!(e.container(&client_name).await.is_none());
    assert!(
        !e.network_exists(&network).await,
        "unused network {network} removed"
    );
    assert!(!e.volume_exists(&volume).await, "volume {volume} removed");
    assert!(e.scoped_containers().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_generation_replaces_the_container_and_keeps_named_volume_data() {
    let Some(e) = Engine::start("upgrade").await else {
        return;
    };
    let _cleanup = e.cleanup_guard();
    let id = e.deployment_id();
    let mut store = busybox("store", &["sleep", "100000"]);
    store.volumes = vec![VolumeMount {
        name: "data".into(),
        mount_path: "/data".into(),
        read_only: false,
    }];
    store.env = [("GREETING".to_string(), "v1".to_string())].into();
    let v1 = desired(vec![deployment(
        &e,
        &id,
        vec![app("db", "data", "db-g1", vec![store.clone()])],
    )]);
    let name = e.driver.container_name(&id, "db", "store");
    let volume = e.driver.volume_name(&id, "db", "data");

    e.apply_until(&v1, "v1 running", all_running).await;
    let (id1, _, generation) = e.container(&name).await.expect("v1 container");
    assert_eq!(generation, "db-g1");
    assert!(e.volume_exists(&volume).await);
    let (code, out) = e
        .exec(
            &name,
            &["sh", "-c", "echo kept > /data/file && echo $GREETING"],
        )
        .await;
    assert_eq!((code, out.trim()), (0, "v1"));

    // Stopped behind the driver's back (restart policy "always"): the next pass starts the same
    // container again rather than replacing it.
    let stop = StopContainerOptions {
        t: Some(1),
        ..Default::default()
    };
    e.docker
        .stop_container(&name, Some(stop))
        .await
        .expect("stop by hand");
    let statuses = e.driver.observe(&v1).await.expect("observe");
    assert_eq!(statuses[0].state, AppState::Down, "{statuses:#?}");
    e.apply_until(&v1, "v1 running again", all_running).await;
    let (again, _, _) = e.container(&name).await.expect("v1 container");
    assert_eq!(
        again, id1,
        "the stopped container was started, not replaced"
    );

    // A new spec hash (here: changed env) replaces the container; the volume stays.
    store.env = [("GREETING".to_string(), "v2".to_string())].into();
    let v2 = desired(vec![deployment(
        &e,
        &id,
        vec![app("db", "data", "db-g2", vec![store])],
    )]);
    e.apply_until(&v2, "v2 running", all_running).await;
    let (id2, _, generation) = e.container(&name).await.expect("v2 container");
    assert_ne!(id1, id2, "the container was replaced");
    assert_eq!(generation, "db-g2");
    let (code, out) = e
        .exec(&name, &["sh", "-c", "cat /data/file && echo $GREETING"])
        .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        vec!["kept", "v2"]
    );

    // remove_deployment removes its containers, volumes and network.
    let network = e.driver.network_name(&e.project, "data");
    assert!(e.network_exists(&network).await);
    e.driver
        .remove_deployment(&id)
        .await
        .expect("remove deployment");
    assert!(e.container(&name).await.is_none());
    assert!(
        !e.volume_exists(&volume).await,
        "volume {volume} removed with the deployment"
    );
    assert!(
        !e.network_exists(&network).await,
        "network {network} removed with the deployment"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_canopy_did_not_create_are_never_touched() {
    let Some(e) = Engine::start("foreign").await else {
        return;
    };
    let _cleanup = e.cleanup_guard();
    let id = e.deployment_id();
    let taken = e.driver.container_name(&id, "svc", "taken");

    // What an operator made by hand (`podman run`, `podman volume create`, ...): no Canopy
    // managed label, but names and even some labels that look like Canopy's.
    let hand = unique("handmade");
    let foreign_volume = e.driver.volume_name(&id, "svc", "other");
    let foreign_network = e.driver.network_name(&e.project, "stray");
    let _handmade = HandMade {
        docker: e.docker.clone(),
        containers: vec![hand.clone(), taken.clone()],
        volume: foreign_volume.clone(),
        network: foreign_network.clone(),
    };
    let labels = HashMap::from([
        ("io.canopy.deployment".to_string(), id.clone()),
        ("io.canopy.scope".to_string(), e.scope.clone()),
    ]);
    for name in [&hand, &taken] {
        e.docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                ContainerCreateBody {
                    image: Some(IMAGE.into()),
                    cmd: Some(vec!["sleep".into(), "100000".into()]),
                    labels: Some(labels.clone()),
                    ..Default::default()
                },
            )
            .await
            .expect("create a container by hand");
        e.docker
            .start_container(name, None)
            .await
            .expect("start it");
    }
    e.docker
        .create_volume(VolumeCreateRequest {
            name: Some(foreign_volume.clone()),
            labels: Some(labels.clone()),
            ..Default::default()
        })
        .await
        .expect("create a volume by hand");
    e.docker
        .create_network(NetworkCreateRequest {
            name: foreign_network.clone(),
            labels: Some(labels.clone()),
            ..Default::default()
        })
        .await
        .expect("create a network by hand");
    let before = (e.container(&hand).await, e.container(&taken).await);

    // A desired container whose name is taken by the hand-made one: Down, and hands off.
    let state = desired(vec![deployment(
        &e,
        &id,
        vec![
            app(
                "svc",
                "stray",
                "svc-g1",
                vec![busybox("taken", &["sleep", "100000"])],
            ),
            app(
                "ok",
                "stray",
                "ok-g1",
                vec![busybox("main", &["sleep", "100000"])],
            ),
        ],
    )]);
    let statuses = e.driver.apply(&state).await.expect("apply");
    let svc = status(&statuses, "svc");
    assert_eq!(svc.state, AppState::Down, "{statuses:#?}");
    assert!(
        svc.message.contains(&taken) && svc.message.contains("does not manage"),
        "{}",
        svc.message
    );
    e.apply_until(&state, "app ok running", |s| {
        status(s, "ok").state == AppState::Running
    })
    .await;

    // Garbage passes: everything of this scope is undesired now; then remove_deployment, also
    // from a driver without scope (which owns every Canopy object on the engine).
    e.driver
        .apply(&desired(vec![]))
        .await
        .expect("apply nothing");
    e.driver
        .remove_deployment(&id)
        .await
        .expect("remove deployment");
    let unscoped = DockerDriver::connect(Some(&e.host)).await.expect("connect");
    unscoped
        .remove_deployment(&id)
        .await
        .expect("remove deployment, unscoped");
    e.driver
        .apply(&desired(vec![]))
        .await
        .expect("apply nothing again");

    assert!(
        e.scoped_containers()
            .await
            .iter()
            .all(|n| *n == hand || *n == taken)
    );
    let after = (e.container(&hand).await, e.container(&taken).await);
    assert!(
        after.0.is_some() && after.1.is_some(),
        "hand-made containers still exist"
    );
    assert_eq!(
        before, after,
        "hand-made containers were not restarted or replaced"
    );
    assert!(
        e.volume_exists(&foreign_volume).await,
        "hand-made volume kept"
    );
    assert!(
        e.network_exists(&foreign_network).await,
        "hand-made network kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_is_down_with_a_message_naming_it() {
    let Some(e) = Engine::start("noimage").await else {
        return;
    };
    let _cleanup = e.cleanup_guard();
    let id = e.deployment_id();
    let image = format!("localhost/{}:1", unique("canopy-missing"));
    let mut c = busybox("main", &["true"]);
    c.image = image.clone();
    let state = desired(vec![deployment(
        &e,
        &id,
        vec![app("ghost", "ghost", "g1", vec![c])],
    )]);
    let statuses = e.driver.apply(&state).await.expect("apply");
    let s = status(&statuses, "ghost");
    assert_eq!(s.state, AppState::Down, "{statuses:#?}");
    assert!(s.message.contains(&image), "{}", s.message);
    assert!(s.message.contains("container main"), "{}", s.message);
    assert!(s.workloads.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_and_exits_are_reported() {
    let Some(e) = Engine::start("restarts").await else {
        return;
    };
    let _cleanup = e.cleanup_guard();
    let id = e.deployment_id();
    let crashy = busybox("loop", &["sh", "-c", "sleep 1; exit 3"]);
    let mut job = busybox("once", &["sh", "-c", "exit 4"]);
    job.restart_policy = RestartPolicy::Never;
    let state = desired(vec![deployment(
        &e,
        &id,
        vec![
            app("crashy", "jobs", "c1", vec![crashy]),
            app("job", "jobs", "j1", vec![job]),
        ],
    )]);
    e.driver.apply(&state).await.expect("apply");

    let statuses = e
        .observe_until(&state, "restarts counted and the job exited", |s| {
            let restarts = status(s, "crashy")
                .workloads
                .first()
                .map_or(0, |w| w.restarts);
            restarts >= 2 && status(s, "job").state == AppState::Down
        })
        .await;
    let job = status(&statuses, "job");
    assert!(
        job.message.contains("container once exited with code 4"),
        "{}",
        job.message
    );
    assert_eq!(job.workloads[0].state, "exited");
    assert_eq!(job.workloads[0].restarts, 0);
}

/// The test registry scripts/podman.sh runs (from `registry.env` next to the engine's socket):
/// `(image, user, password)`; `None` (outside CI) when there is none.
fn test_registry(host: &str) -> Option<(String, String, String)> {
    let socket = host.strip_prefix("unix://").unwrap_or(host);
    let file = std::path::Path::new(socket).with_file_name("registry.env");
    let Ok(text) = std::fs::read_to_string(&file) else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "{} is missing but CI is set: run scripts/podman.sh",
                file.display()
            );
        }
        eprintln!("skipping the registry test: no {}", file.display());
        return None;
    };
    let vars: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let get = |k: &str| {
        vars.get(k)
            .map(|v| v.to_string())
            .unwrap_or_else(|| panic!("{k} missing in {}", file.display()))
    };
    Some((
        get("CANOPY_TEST_REGISTRY_IMAGE"),
        get("CANOPY_TEST_REGISTRY_USER"),
        get("CANOPY_TEST_REGISTRY_PASSWORD"),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_pulled_with_the_apps_registry_credentials() {
    let Some(e) = Engine::start("registry").await else {
        return;
    };
    let Some((image, user, password)) = test_registry(&e.host) else {
        return;
    };
    let _cleanup = e.cleanup_guard();
    // Make sure the pull really happens (the image may be left from an earlier run).
    let _ = e
        .docker
        .remove_image(
            &image,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await;
    let server = image.split('/').next().unwrap_or_default().to_string();
    let id = e.deployment_id();
    let mut c = busybox("main", &["sleep", "100000"]);
    c.image = image.clone();
    let with_auth = |auth: Option<RegistryAuth>| {
        let mut a = app("private", "private", "p1", vec![c.clone()]);
        a.registry_auth = auth;
        desired(vec![deployment(&e, &id, vec![a])])
    };

    // Without credentials, and with a wrong password: Down, naming the image, no secret shown.
    for auth in [
        None,
        Some(RegistryAuth {
            server: server.clone(),
            username: user.clone(),
            password: "wrong-password".into(),
        }),
    ] {
        let statuses = e.driver.apply(&with_auth(auth)).await.expect("apply");
        assert_eq!(statuses[0].state, AppState::Down, "{statuses:#?}");
        assert!(
            statuses[0].message.contains(&image),
            "{}",
            statuses[0].message
        );
        assert!(!statuses[0].message.contains("wrong-password"));
    }

    // With the right ones the image is pulled and the app runs.
    let good = with_auth(Some(RegistryAuth {
        server,
        username: user,
        password: password.clone(),
    }));
    let statuses = e
        .apply_until(&good, "the private image pulled and running", all_running)
        .await;
    assert_eq!(statuses[0].workloads[0].image, image);
    assert!(e.docker.inspect_image(&image).await.is_ok());
    assert!(!format!("{statuses:?}").contains(&password));
}

/// A web app publishing container port 80 on `127.0.0.1:port`.
fn published(port: u16) -> AppInstance {
    let mut httpd = busybox(
        "httpd",
        &["busybox", "httpd", "-f", "-p", "80", "-h", "/www"],
    );
    httpd.ports = vec![PortSpec {
        container_port: 80,
        host_port: Some(port),
        host_ip: Some("127.0.0.1".into()),
        ..Default::default()
    }];
    app("web", "held", "w1", vec![httpd])
}

/// A container whose start fails (its host port is held by another program) is not left
/// half-created: it is removed, the app is Down with the real cause (also when only observed),
/// and once the port is free a later pass creates it afresh and it runs, with nobody removing
/// anything by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_fails_to_start_is_removed_and_created_afresh_later() {
    let Some(e) = Engine::start("portheld").await else {
        return;
    };
    let _cleanup = e.cleanup_guard();
    let holder = TcpListener::bind("127.0.0.1:0").expect("hold a port");
    let port = holder.local_addr().expect("address").port();
    let id = e.deployment_id();
    let state = desired(vec![deployment(&e, &id, vec![published(port)])]);
    let name = e.driver.container_name(&id, "web", "httpd");

    let statuses = e.driver.apply(&state).await.expect("apply");
    let web = status(&statuses, "web");
    assert_eq!(web.state, AppState::Down, "{statuses:#?}");
    assert!(
        web.message.contains("cannot start container") && web.message.contains(&name),
        "the real cause: {}",
        web.message
    );
    assert!(
        e.container(&name).await.is_none(),
        "a container that failed to start is not left behind"
    );
    let observed = e.driver.observe(&state).await.expect("observe");
    assert_eq!(observed[0].state, AppState::Down, "{observed:#?}");
    assert!(
        observed[0].message.contains("cannot start container"),
        "observing says why too: {}",
        observed[0].message
    );
    // Passes while the port is held never leave the container behind either.
    let again = e.driver.apply(&state).await.expect("apply again");
    assert_eq!(again[0].state, AppState::Down, "{again:#?}");
    assert!(e.container(&name).await.is_none());

    drop(holder);
    let statuses = e
        .apply_until(&state, "web running once the port is free", all_running)
        .await;
    assert_eq!(statuses[0].workloads[0].ports[0].host_port, Some(port));
}

/// This process's hard limits of open files and of processes, and the kernel's ceiling of
/// open files (`fs.nr_open`).
fn limits() -> (u64, u64, u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    let hard = |name: &str| -> u64 {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l[name.len()..].split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/self/limits"))
    };
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .expect("fs.nr_open")
        .trim()
        .parse()
        .expect("a number");
    (hard("Max open files"), hard("Max processes"), nr_open)
}

/// A Podman API service of this test's own (same storage as the shared one), with the given
/// `containers.conf`; killed when dropped.
struct OwnPodman {
    child: std::process::Child,
}

impl OwnPodman {
    async fn start(socket: &std::path::Path, conf: &str) -> OwnPodman {
        let conf_path = socket.with_extension("conf");
        std::fs::write(&conf_path, conf).expect("write containers.conf");
        let _ = std::fs::remove_file(socket);
        let log = std::fs::File::create(socket.with_extension("log")).expect("log");
        let child = std::process::Command::new("podman")
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .env("CONTAINERS_CONF", &conf_path)
            .current_dir("/")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("podman system service starts");
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            assert!(
                start.elapsed() < DEADLINE,
                "podman system service did not open {}",
                socket.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        OwnPodman { child }
    }
}

impl Drop for OwnPodman {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A container that failed to start under a broken engine setting (more open files than any
/// process may have: what hosts whose Podman needs a `nofile` cap see) is not restarted with
/// its old settings forever: the report names the fix, and once the engine is fixed (restarted
/// with a good setting) the same driver brings the app up, with nobody removing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_comes_up_once_a_broken_engine_is_fixed() {
    let Some(e) = Engine::start("fixengine").await else {
        return;
    };
    let _cleanup = e.cleanup_guard();
    let (nofile, nproc, nr_open) = limits();
    // Podman 4 runs with at most 32768 processes; containers cannot be given more.
    let nproc = nproc.min(32_768);
    let conf = |nofile: u64| {
        format!(
            "[containers]\ndefault_ulimits = [\"nofile={nofile}:{nofile}\", \"nproc={nproc}:{nproc}\"]\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n"
        )
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let socket = tmp.path().join("podman.sock");
    let broken = OwnPodman::start(&socket, &conf(nr_open + 1)).await;
    let driver = DockerDriver::connect(Some(&format!("unix://{}", socket.display())))
        .await
        .unwrap_or_else(|err| panic!("connect to our own service: {}", err.chain()))
        .scoped(&e.scope)
        .with_stop_timeout(Duration::from_secs(1));
    let id = e.deployment_id();
    let state = desired(vec![deployment(
        &e,
        &id,
        vec![app(
            "job",
            "fix",
            "j1",
            vec![busybox("main", &["sleep", "100000"])],
        )],
    )]);
    let name = driver.container_name(&id, "job", "main");

    let statuses = driver.apply(&state).await.expect("apply");
    assert_eq!(statuses[0].state, AppState::Down, "{statuses:#?}");
    let message = &statuses[0].message;
    assert!(
        message.contains("rlimit") && message.contains("default_ulimits = [\"nofile="),
        "the engine's cause and the fix: {message}"
    );
    assert!(
        e.container(&name).await.is_none(),
        "nothing is left with the broken settings"
    );

    // The operator fixes the engine: a cap the host allows.
    drop(broken);
    let _fixed = OwnPodman::start(&socket, &conf(nofile)).await;
    let start = Instant::now();
    loop {
        match driver.apply(&state).await {
            Ok(s) if all_running(&s) => break,
            Ok(s) => assert!(
                start.elapsed() < DEADLINE,
                "the app never came up after the fix: {s:#?}"
            ),
            Err(err) => assert!(
                start.elapsed() < DEADLINE,
                "the engine never answered after the fix: {}",
                err.chain()
            ),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What an earlier release made carries no owner label. This agent's driver replaces such a
/// container of a deployment it runs, and reuses such a volume of that deployment (its data is
/// kept); the same objects of a deployment it does not run may be another agent's and are left
/// alone, and the reused volume is never removed (nothing proves it is this agent's alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_of_an_earlier_release_are_taken_over_only_for_deployments_this_agent_runs() {
    let Some(e) = Engine::start("legacy").await else {
        return;
    };
    let _cleanup = e.cleanup_guard();
    let (mine, other) = (e.deployment_id(), e.deployment_id());
    let old_container =
        |id: &str| canopy_agent::driver::names::container_name(None, id, "db", "store");
    let old_volume = |id: &str| canopy_agent::driver::names::volume_name(None, id, "db", "data");
    let mut guards = Vec::new();
    for id in [&mine, &other] {
        guards.push(HandMade {
            docker: e.docker.clone(),
            containers: vec![old_container(id)],
            volume: old_volume(id),
            network: String::new(),
        });
        let labels = |kind: (&str, &str)| {
            HashMap::from([
                ("io.canopy.managed".to_string(), "true".to_string()),
                ("io.canopy.project".to_string(), e.project.clone()),
                ("io.canopy.deployment".to_string(), id.to_string()),
                ("io.canopy.app".to_string(), "db".to_string()),
                (kind.0.to_string(), kind.1.to_string()),
            ])
        };
        e.docker
            .create_volume(VolumeCreateRequest {
                name: Some(old_volume(id)),
                labels: Some(labels(("io.canopy.volume", "data"))),
                ..Default::default()
            })
            .await
            .expect("an earlier release's volume");
        let mut container_labels = labels(("io.canopy.container", "store"));
        container_labels.insert("io.canopy.generation".into(), "db-g1".into());
        e.docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(old_container(id)),
                    ..Default::default()
                }),
                ContainerCreateBody {
                    image: Some(IMAGE.into()),
                    cmd: Some(vec![
                        "sh".into(),
                        "-c".into(),
                        "echo kept > /data/file; exec sleep 100000".into(),
                    ]),
                    labels: Some(container_labels),
                    host_config: Some(bollard::models::HostConfig {
                        binds: Some(vec![format!("{}:/data", old_volume(id))]),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .await
            .expect("an earlier release's container");
        e.docker
            .start_container(&old_container(id), None)
            .await
            .expect("start it");
    }
    let others_before = e.container(&old_container(&other)).await;

    let mut store = busybox("store", &["sleep", "100000"]);
    store.volumes = vec![VolumeMount {
        name: "data".into(),
        mount_path: "/data".into(),
        read_only: false,
    }];
    let state = desired(vec![deployment(
        &e,
        &mine,
        vec![app("db", "data", "db-g1", vec![store])],
    )]);
    e.apply_until(&state, "the app running", all_running).await;

    let name = e.driver.container_name(&mine, "db", "store");
    assert_ne!(name, old_container(&mine));
    assert!(
        e.container(&old_container(&mine)).await.is_none(),
        "the earlier release's container of this agent's deployment was replaced"
    );
    let (code, out) = e.exec(&name, &["cat", "/data/file"]).await;
    assert_eq!(
        (code, out.trim()),
        (0, "kept"),
        "the earlier release's volume is reused, data and all"
    );
    assert!(
        !e.volume_exists(&e.driver.volume_name(&mine, "db", "data"))
            .await,
        "no second volume"
    );
    assert_eq!(
        e.container(&old_container(&other)).await,
        others_before,
        "another deployment's container of an earlier release is left alone"
    );

    // The deployment goes: this agent's container with it; the reused volume stays (it may
    // not be this agent's alone), and so does everything of the other deployment.
    let none = e
        .driver
        .apply(&desired(vec![]))
        .await
        .expect("apply nothing");
    assert!(none.is_empty());
    assert!(e.container(&name).await.is_none());
    assert!(e.volume_exists(&old_volume(&mine)).await);
    assert!(e.volume_exists(&old_volume(&other)).await);
    assert_eq!(e.container(&old_container(&other)).await, others_before);
}
