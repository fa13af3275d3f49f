//! The whole agent ([`canopy_agent::run`], real container driver) against a **protocol fake of
//! the control plane** (`common::FakeControlPlane`, standing in until the real server implements
//! the agent API) and the Podman service named by `CANOPY_TEST_DOCKER_HOST` (start it with
//! `scripts/podman.sh`, which also makes the image `localhost/busybox:canopy-test`). Without the
//! variable the test is skipped, except in CI (env `CI` set), where that is an error.
//!
//! The agent runs with a driver scope of its own, so it neither adopts nor collects the
//! containers of other tests on the same engine; a guard removes what it leaves behind.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::RemoveContainerOptions;
use canopy_agent::DockerDriver;
use canopy_proto::{
    AppInstance, AppState, AppStatus, ContainerSpec, DeploymentInstance, DesiredState, Generation,
};
use common::{FakeControlPlane, RunningAgent, TOKEN, fast_config};

const ENGINE_ENV: &str = "CANOPY_TEST_DOCKER_HOST";
const IMAGE: &str = "localhost/busybox:canopy-test";
/// Generous: the machine may be a loaded 2-core runner.
const DEADLINE: Duration = Duration::from_secs(180);

/// The engine's address; `None` (skip) when it is not configured, outside CI.
fn engine_host(test: &str) -> Option<String> {
    match std::env::var(ENGINE_ENV) {
        Ok(h) if !h.trim().is_empty() => Some(h),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "{ENGINE_ENV} is not set but CI is: the agent's engine tests must not be \
                     skipped. Start Podman with scripts/podman.sh and export the line it prints."
                );
            }
            eprintln!("skipping {test}: {ENGINE_ENV} is not set (see scripts/podman.sh)");
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

/// Removes everything of the scope when dropped (also when the test panics).
struct Cleanup(DockerDriver);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let driver = self.0.clone();
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                let _ = driver.apply(&DesiredState::default()).await;
            })
        });
    }
}

/// Observes (changing nothing) until every app runs, or panics at the deadline.
async fn observe_running(driver: &DockerDriver, desired: &DesiredState, what: &str) {
    let start = Instant::now();
    loop {
        let statuses: Vec<AppStatus> = driver
            .observe(desired)
            .await
            .unwrap_or_else(|e| panic!("observe failed: {}", e.chain()));
        if !statuses.is_empty() && statuses.iter().all(|a| a.state == AppState::Running) {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}; last statuses: {statuses:#?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Protocol fake of the control plane (see the module docs) with a real engine: the agent
/// enrolls, runs the desired workload and reports it `RUNNING`; shutting down leaves it
/// running; restarted with the control plane gone, it brings back a container removed
/// meanwhile, from the desired state on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_runs_workloads_and_keeps_them_without_the_control_plane_against_fake_server() {
    let Some(host) =
        engine_host("the_agent_runs_workloads_and_keeps_them_without_the_control_plane")
    else {
        return;
    };
    let scope = unique("agent-sync-");
    let checker = DockerDriver::connect(Some(&host))
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {host}: {}", e.chain()))
        .scoped(&scope)
        // Busybox as PID 1 ignores SIGTERM; do not wait 10 s at cleanup.
        .with_stop_timeout(Duration::from_secs(1));
    let _cleanup = Cleanup(checker.clone());

    let deployment_id = unique("d");
    let desired = DesiredState {
        generation: Generation(1),
        deployments: vec![DeploymentInstance {
            deployment_id: deployment_id.clone(),
            project: format!("p{}", &scope[scope.len() - 8..]),
            package: "sleeper".into(),
            package_version: "1.0.0".into(),
            generation: 1,
            apps: vec![AppInstance {
                name: "web".into(),
                version: "1.0.0".into(),
                namespace: "sync".into(),
                spec_hash: "g1".into(),
                containers: vec![ContainerSpec {
                    name: "sleeper".into(),
                    image: IMAGE.into(),
                    command: vec!["sleep".into(), "3600".into()],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }],
        ..Default::default()
    };
    let mut cp = FakeControlPlane::start().await;
    cp.set_desired(desired.clone());
    let tmp = tempfile::tempdir().unwrap();
    let mut config = fast_config(&cp.url, tmp.path());
    config.enroll_token = Some(TOKEN.into());
    config.docker_host = Some(host.clone());
    config.scope = Some(scope.clone());
    config.converge_interval = Duration::from_millis(500);
    config.heartbeat = Some(Duration::from_millis(500));

    let agent = RunningAgent::start_real(config.clone());
    let start = Instant::now();
    while !cp.reports().iter().any(|r| {
        r.generation == Generation(1)
            && r.apps.len() == 1
            && r.apps.iter().all(|a| a.state == AppState::Running)
    }) {
        assert!(
            start.elapsed() < DEADLINE,
            "no report of the app running; reports: {:#?}",
            cp.reports().last()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let engine = cp.with(|i| i.enrollments[0].agent.engine.clone());
    assert!(!engine.is_empty(), "the enrollment names the engine");
    let workloads = cp.reports().last().unwrap().apps[0].workloads.clone();
    assert_eq!(workloads.len(), 1, "{workloads:?}");
    agent.stop().await.unwrap();

    // Shutting down changed nothing.
    observe_running(&checker, &desired, "the app still running after shutdown").await;

    // The control plane goes away, and so does the container (by hand, agent stopped).
    cp.stop();
    let name = checker.container_name(&deployment_id, "web", "sleeper");
    let docker = Docker::connect_with_host(&host)
        .expect("bollard client")
        .negotiate_version()
        .await
        .expect("engine version");
    docker
        .remove_container(
            &name,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await
        .unwrap_or_else(|e| panic!("remove {name}: {e}"));

    config.enroll_token = None;
    let agent = RunningAgent::start_real(config);
    observe_running(&checker, &desired, "the app recreated from disk").await;
    agent.stop().await.unwrap();
}
