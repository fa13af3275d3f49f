//! The container driver over the Docker Engine API (bollard), for Docker and for Podman's
//! compatible service.
//!
//! A pass ([`DockerDriver::apply`]) is a reconciler in the kube-rs sense: it reads what exists
//! (containers labelled `io.canopy.managed=true`), compares with the desired state by derived
//! names and the generation label, acts, and reports per-app status. It keeps no state between
//! passes, so it can be re-run at any time, after a crash or an agent restart, and adopts what a
//! previous run created. Every engine call has a timeout, so a pass is bounded; failures of one
//! app become that app's status (`Down` with the reason) instead of failing the pass.
//!
//! Two exceptions to "keeps no state", both only pacing and wording: a container whose create or
//! start failed is removed at once and retried afresh with backoff (`failures`), its cause
//! remembered to report; and objects of an earlier release (no owner, see `names`) are noted in
//! the log once each rather than every pass.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerInspectResponse, ContainerSummary};
use bollard::query_parameters::{CreateContainerOptions, LogsOptions};
use bytes::Bytes;
use canopy_proto::{
    AppInstance, AppState, AppStatus, ContainerSpec, DeploymentInstance, DesiredState,
    RestartPolicy, WorkloadKind, WorkloadStatus,
};
use futures::{Stream, StreamExt};
use tracing::{Instrument, debug, info, info_span, warn};

use super::deps::{self, Reported};
use super::error::DriverError;
use super::names;
use super::podman::{self, Endpoint};
use super::spec::{self, Placement};
use super::status::{self, Seen};

mod engine;
mod failures;
mod hints;
mod pods;
mod report;

use failures::Failures;
use report::{label_of, observed, parse_time, workload};

/// Bound of one ordinary engine call.
const API_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound of the first ping (an engine that does not answer this fast is not usable).
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound of one image pull.
const PULL_TIMEOUT: Duration = Duration::from_secs(600);
/// Default time a container gets to stop before it is killed (the engines' default too).
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How many containers are removed at once by garbage collection.
const REMOVE_CONCURRENCY: usize = 4;

const PODMAN_SOCKET: &str = "/run/podman/podman.sock";
const DOCKER_SOCKET: &str = "/var/run/docker.sock";
const START_HINT: &str = "Start Podman's API service (`podman system service --time=0 \
     unix:///run/podman/podman.sock &`, or `systemctl start podman.socket`) or Docker, or set \
     DOCKER_HOST to a running engine (unix:///path.sock or http://host:port).";

/// A connection to one container engine, and the driver that converges its containers.
#[derive(Debug, Clone)]
pub struct DockerDriver {
    docker: Docker,
    endpoint: Endpoint,
    address: String,
    engine: String,
    podman: bool,
    scope: Option<String>,
    stop_timeout: Duration,
    /// Containers whose create or start failed, and when to try again (see `failures`).
    failures: Arc<Failures>,
    /// Objects of an earlier release already mentioned in the log.
    noted: Arc<Mutex<HashSet<String>>>,
    /// Helm apps' probes, service proxy and pause image (see `pods`).
    pods: Arc<pods::PodRuntime>,
}

/// Whether a pass may change anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Apply,
    Observe,
}

/// What one pass learnt once and reuses (networks and images are shared between apps), and
/// what it gathers for after the apps (Helm apps' probes and proxy owners).
#[derive(Default)]
struct PassCache {
    networks: HashMap<String, Result<(), String>>,
    images: HashMap<String, Result<(), String>>,
    /// Running containers of Helm pods with probes.
    probes: Vec<pods::probe::Spec>,
    /// Helm apps converged (`<deployment>/<app>`): the proxy's listeners of others end.
    pod_owners: HashSet<String>,
}

impl DockerDriver {
    /// Connects to the engine at `host` (`unix:///path.sock`, `http://host:port` or
    /// `tcp://host:port`), or by default to `$DOCKER_HOST`, then Podman's socket
    /// (`/run/podman/podman.sock`), then Docker's (`/var/run/docker.sock`). The engine must
    /// answer a ping within a few seconds.
    pub async fn connect(host: Option<&str>) -> Result<DockerDriver, DriverError> {
        let (address, last_resort) = match host {
            Some(h) => (h.to_string(), false),
            None => default_host().await,
        };
        let endpoint = parse_host(&address)?;
        let unreachable =
            |source: Option<Box<dyn std::error::Error + Send + Sync>>| DriverError::Unreachable {
                endpoint: address.clone(),
                hint: START_HINT,
                source,
            };
        // bollard's own timeout is only a backstop: every call below has a tighter one.
        let backstop = (PULL_TIMEOUT + API_TIMEOUT).as_secs();
        let docker = match &endpoint {
            Endpoint::Unix(path) => {
                if !tokio::fs::try_exists(path).await.unwrap_or(false) {
                    let also = if last_resort {
                        format!(" (nor does {DOCKER_SOCKET}, and DOCKER_HOST is not set)")
                    } else {
                        String::new()
                    };
                    return Err(unreachable(Some(
                        format!("socket {} does not exist{also}", path.display()).into(),
                    )));
                }
                Docker::connect_with_unix(
                    &path.to_string_lossy(),
                    backstop,
                    bollard::API_DEFAULT_VERSION,
                )
            }
            Endpoint::Tcp(addr) => Docker::connect_with_http(
                &format!("http://{addr}"),
                backstop,
                bollard::API_DEFAULT_VERSION,
            ),
        }
        .map_err(|e| unreachable(Some(Box::new(e))))?;
        match tokio::time::timeout(PING_TIMEOUT, docker.ping()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(unreachable(Some(Box::new(e)))),
            Err(_) => {
                return Err(unreachable(Some(
                    format!("no answer to ping within {} s", PING_TIMEOUT.as_secs()).into(),
                )));
            }
        }
        // Use the engine's API version when it is older than bollard's (Podman 4 speaks 1.41).
        let docker = match tokio::time::timeout(API_TIMEOUT, docker.negotiate_version()).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => return Err(unreachable(Some(Box::new(e)))),
            Err(_) => return Err(unreachable(Some("no answer to /version".into()))),
        };
        let version = tokio::time::timeout(API_TIMEOUT, docker.version())
            .await
            .map_err(|_| unreachable(Some("no answer to /version".into())))?
            .map_err(|e| unreachable(Some(Box::new(e))))?;
        let arch = version.arch.clone().unwrap_or_default();
        let components = version.components.unwrap_or_default();
        let podman = components.iter().any(|c| c.name.contains("Podman"));
        let engine = components
            .first()
            .map(|c| format!("{} {}", c.name, c.version))
            .unwrap_or_else(|| format!("engine {}", version.version.unwrap_or_default()));
        info!(address = %address, engine = %engine, "connected to container engine");
        let pods = Arc::new(pods::PodRuntime::new(docker.clone(), arch));
        Ok(DockerDriver {
            pods,
            docker,
            endpoint,
            address,
            engine,
            podman,
            scope: None,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            failures: Arc::default(),
            noted: Arc::default(),
        })
    }

    /// Restricts the driver to objects labelled `io.canopy.scope=<scope>` (and labels and names
    /// what it creates so, see `names`): adoption and garbage collection then ignore Canopy
    /// objects of other scopes. The agent scopes its driver with its edge id, so several agents
    /// share an engine safely. Objects of an earlier release (no scope) are replaced or reused
    /// only for deployments in this driver's desired state, and otherwise left alone. Without a
    /// scope the driver owns the unscoped Canopy objects (an earlier release's behaviour).
    pub fn scoped(mut self, scope: &str) -> DockerDriver {
        self.scope = Some(scope.to_string());
        self
    }

    /// The engine name of container `container` of `app` in deployment `deployment_id`.
    pub fn container_name(&self, deployment_id: &str, app: &str, container: &str) -> String {
        names::container_name(self.scope(), deployment_id, app, container)
    }

    /// The engine name of volume `volume` of `app` in deployment `deployment_id` (unless an
    /// earlier release's volume of that deployment is reused, see [`scoped`](Self::scoped)).
    pub fn volume_name(&self, deployment_id: &str, app: &str, volume: &str) -> String {
        names::volume_name(self.scope(), deployment_id, app, volume)
    }

    /// The engine name of the network of `namespace` in `project`.
    pub fn network_name(&self, project: &str, namespace: &str) -> String {
        names::network_name(self.scope(), project, namespace)
    }

    /// How long a container gets to stop (SIGTERM) before it is killed, when it is replaced or
    /// removed. Default 10 s.
    pub fn with_stop_timeout(mut self, timeout: Duration) -> DockerDriver {
        self.stop_timeout = timeout;
        self
    }

    /// The engine's name and version, e.g. `Podman Engine 4.3.1`.
    pub fn engine(&self) -> &str {
        &self.engine
    }

    /// The address the driver is connected to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Completes when something a report would show changed between passes (a Helm pod's
    /// readiness, a restart by its liveness probe), so the agent reports it without waiting for
    /// its next pass.
    pub async fn changed(&self) {
        self.pods.changed.notified().await;
    }

    /// The engine name of container `container` of pod `pod` of Helm app `app`.
    pub fn pod_container_name(
        &self,
        deployment_id: &str,
        app: &str,
        pod: &str,
        container: &str,
    ) -> String {
        names::pod_container_name(self.scope(), deployment_id, app, pod, Some(container))
    }

    /// One convergence pass: removes Canopy containers that are no longer desired, then for each
    /// app of each deployment (dependencies first) ensures its network, volumes, images and
    /// containers, then removes Canopy volumes and networks nothing desired uses. Returns each
    /// desired app's status, in the order of `desired`. An app that waits for a dependency is
    /// not started; the next pass starts it once the dependency is running and healthy.
    ///
    /// Passes must not overlap (the agent's sync loop runs one at a time).
    pub async fn apply(&self, desired: &DesiredState) -> Result<Vec<AppStatus>, DriverError> {
        self.pass(desired, &Reported::new(), Mode::Apply).await
    }

    /// [`apply`](Self::apply) next to another driver: a dependency that the other driver runs
    /// (in part) must also be running in `reported`, the edge's last merged report.
    pub async fn apply_after(
        &self,
        desired: &DesiredState,
        reported: &Reported,
    ) -> Result<Vec<AppStatus>, DriverError> {
        self.pass(desired, reported, Mode::Apply).await
    }

    /// The status [`apply`](Self::apply) would report, without creating, starting or removing
    /// anything. On Podman without systemd it may run an overdue health check (see
    /// `driver::podman`), which is how health is observed there.
    pub async fn observe(&self, desired: &DesiredState) -> Result<Vec<AppStatus>, DriverError> {
        self.pass(desired, &Reported::new(), Mode::Observe).await
    }

    /// [`observe`](Self::observe) next to another driver (see [`apply_after`](Self::apply_after)).
    pub async fn observe_after(
        &self,
        desired: &DesiredState,
        reported: &Reported,
    ) -> Result<Vec<AppStatus>, DriverError> {
        self.pass(desired, reported, Mode::Observe).await
    }

    /// Stops and removes every container and volume of a deployment, then the Canopy networks
    /// they used if no container is left on them. Attempts everything; returns the first error.
    pub async fn remove_deployment(&self, deployment_id: &str) -> Result<(), DriverError> {
        let span = info_span!("remove_deployment", deployment = %deployment_id);
        async {
            let containers = self
                .list_containers(&[(names::DEPLOYMENT, deployment_id)])
                .await?;
            let networks: BTreeSet<String> = containers
                .iter()
                .filter_map(|c| c.network_settings.as_ref()?.networks.as_ref())
                .flat_map(|n| n.keys().cloned())
                .collect();
            let mut first_error = self.remove_containers(containers).await.err();
            let volumes = self
                .list_volumes(&[(names::DEPLOYMENT, deployment_id)])
                .await?;
            for v in volumes {
                if let Err(e) = self.remove_volume(&v).await {
                    first_error.get_or_insert(e);
                }
            }
            for n in networks {
                match self.remove_network_if_unused(&n).await {
                    Ok(()) => {}
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            match first_error {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
        .instrument(span)
        .await
    }

    /// A container's stdout and stderr: the last `tail` lines (0: all), then with `follow` what
    /// it writes next, until the stream is dropped or the container is removed.
    pub async fn logs(
        &self,
        name: &str,
        follow: bool,
        tail: u32,
    ) -> Result<Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>, DriverError> {
        if self.inspect(name).await?.is_none() {
            return Err(DriverError::NoSuchWorkload {
                what: format!("container {name}"),
            });
        }
        let options = LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            tail: if tail == 0 {
                "all".into()
            } else {
                tail.to_string()
            },
            ..Default::default()
        };
        let stream = self
            .docker
            .logs(name, Some(options))
            .map(|r| r.map(|o| o.into_bytes()).map_err(std::io::Error::other));
        Ok(Box::pin(stream))
    }

    /// The engine name of the container a log request names in Helm app `app`: `pod/container`,
    /// a pod (its first container, init containers aside), or a container name (in the first
    /// pod, by name, that has it), as `kubectl logs` takes them.
    pub async fn find_pod_container(
        &self,
        deployment_id: &str,
        app: &str,
        workload: &str,
    ) -> Result<String, DriverError> {
        let list = self
            .list_containers(&[
                (names::DEPLOYMENT, deployment_id),
                (names::APP, app),
                (names::POD_APP, "true"),
            ])
            .await?;
        let mut candidates: Vec<(String, String, String, String)> = list
            .iter()
            .map(|c| {
                let label = |k: &str| {
                    c.labels
                        .as_ref()
                        .and_then(|l| l.get(k))
                        .cloned()
                        .unwrap_or_default()
                };
                (
                    label(names::POD),
                    label(names::ROLE),
                    label(names::CONTAINER),
                    summary_name(c),
                )
            })
            .filter(|(_, role, _, _)| role == "container" || role == "init")
            .collect();
        candidates.sort_by(|a, b| {
            (&a.0, a.1 != "container", &a.2).cmp(&(&b.0, b.1 != "container", &b.2))
        });
        let found = match workload.split_once('/') {
            Some((pod, container)) => candidates
                .iter()
                .find(|(p, _, c, _)| p == pod && c == container),
            None => candidates
                .iter()
                .find(|(p, role, _, _)| p == workload && role == "container")
                .or_else(|| candidates.iter().find(|(_, _, c, _)| c == workload)),
        };
        found
            .map(|(_, _, _, name)| name.clone())
            .ok_or_else(|| DriverError::NoSuchWorkload {
                what: format!("container {workload} of app {app} (deployment {deployment_id})"),
            })
    }

    async fn pass(
        &self,
        desired: &DesiredState,
        reported: &Reported,
        mode: Mode,
    ) -> Result<Vec<AppStatus>, DriverError> {
        let desired = &with_pod_restarts(desired);
        let existing = self.list_containers(&[]).await?;
        let native = |a: &AppInstance| a.pods.is_none();
        let mut wanted: HashSet<String> = desired
            .deployments
            .iter()
            .flat_map(|d| {
                d.apps.iter().filter(|a| native(a)).flat_map(move |a| {
                    a.containers
                        .iter()
                        .map(move |c| self.container_name(&d.deployment_id, &a.name, &c.name))
                })
            })
            .collect();
        // Helm apps' containers go to their app's pass (which removes the pods it no longer
        // wants); those of Helm apps no longer desired are garbage.
        let pod_apps: HashSet<(&str, &str)> = desired
            .deployments
            .iter()
            .flat_map(|d| {
                d.apps
                    .iter()
                    .filter(|a| !native(a))
                    .map(move |a| (d.deployment_id.as_str(), a.name.as_str()))
            })
            .collect();
        let mut pod_objects: HashMap<(String, String), Vec<ContainerSummary>> = HashMap::new();
        let mut keep = Vec::new();
        let mut garbage = Vec::new();
        for c in existing {
            let labels = c.labels.as_ref();
            let label = |k: &str| labels.and_then(|l| l.get(k)).cloned().unwrap_or_default();
            if label(names::POD_APP) == "true" {
                let key = (label(names::DEPLOYMENT), label(names::APP));
                if pod_apps.contains(&(key.0.as_str(), key.1.as_str())) {
                    wanted.insert(summary_name(&c));
                    pod_objects.entry(key).or_default().push(c);
                } else {
                    garbage.push(c);
                }
            } else if wanted.contains(&summary_name(&c)) {
                keep.push(c);
            } else {
                garbage.push(c);
            }
        }
        // Containers of desired Helm apps may not exist (their create failed): remembered by
        // their app's name prefix.
        let pod_prefixes: Vec<String> = pod_apps
            .iter()
            .map(|(d, a)| format!("{}_", names::pod_app_prefix(self.scope(), d, a)))
            .collect();
        self.failures.retain_where(|name| {
            wanted.contains(name) || pod_prefixes.iter().any(|p| name.starts_with(p.as_str()))
        });
        if mode == Mode::Apply {
            // Before converging, so that names and host ports of old containers are free.
            if self.scope.is_some() {
                self.replace_legacy_containers(desired).await;
            }
            if !garbage.is_empty()
                && let Err(e) = self.remove_containers(garbage).await
            {
                warn!(error = %e.chain(), "garbage collection of containers incomplete; retried next pass");
            }
        }
        let by_name: HashMap<String, ContainerSummary> =
            keep.into_iter().map(|c| (summary_name(&c), c)).collect();

        let mut cache = PassCache::default();
        let mut out = Vec::new();
        for dep in &desired.deployments {
            let mut states: HashMap<&str, AppState> = HashMap::new();
            let mut statuses: Vec<Option<AppStatus>> = vec![None; dep.apps.len()];
            for (i, problem) in deps::order(&dep.apps) {
                let app = &dep.apps[i];
                let span = info_span!(
                    "app",
                    project = %dep.project,
                    deployment = %dep.deployment_id,
                    app = %app.name
                );
                let waiting = deps::waiting_on(dep, app, &states, reported, |a| !a.vms.is_empty());
                let status = match &app.pods {
                    Some(pods) => {
                        let key = (dep.deployment_id.clone(), app.name.clone());
                        let found = pod_objects.get(&key).map(Vec::as_slice).unwrap_or_default();
                        self.converge_pod_app(
                            dep,
                            app,
                            pods,
                            &desired.controls,
                            problem,
                            waiting,
                            found,
                            &mut cache,
                            mode,
                        )
                        .instrument(span)
                        .await
                    }
                    None => {
                        self.converge_app(dep, app, problem, waiting, &by_name, &mut cache, mode)
                            .instrument(span)
                            .await
                    }
                };
                states.insert(&app.name, status.state);
                statuses[i] = Some(status);
            }
            out.extend(statuses.into_iter().flatten());
        }

        self.pods.prober.set(std::mem::take(&mut cache.probes));
        self.pods.proxy.retain(&cache.pod_owners);
        if mode == Mode::Apply {
            self.collect_volumes_and_networks(desired).await;
        }
        Ok(out)
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one pass's context, passed down once"
    )]
    async fn converge_app(
        &self,
        dep: &DeploymentInstance,
        app: &AppInstance,
        problem: Option<String>,
        waiting_on: Vec<String>,
        existing: &HashMap<String, ContainerSummary>,
        cache: &mut PassCache,
        mode: Mode,
    ) -> AppStatus {
        // Starting anything is gated on the dependencies; adopting what already runs is not.
        let may_start = mode == Mode::Apply && problem.is_none() && waiting_on.is_empty();

        let mut failures: HashMap<&str, String> = HashMap::new();
        // An app of VMs only needs no network (the VM driver runs it).
        if may_start && !app.containers.is_empty() {
            let prepared = self.prepare_app(dep, app, cache).await;
            for c in &app.containers {
                let result = match &prepared {
                    Err(why) => Err(why.clone()),
                    Ok(volumes) => {
                        self.converge_container(dep, app, c, volumes, existing, cache)
                            .await
                    }
                };
                if let Err(why) = result {
                    warn!(container = %c.name, reason = %why, "container not converged");
                    failures.insert(&c.name, why);
                }
            }
        }

        let mut seen: Vec<(&str, Seen)> = Vec::new();
        let mut workloads = Vec::new();
        for c in &app.containers {
            if let Some(why) = failures.remove(c.name.as_str()) {
                seen.push((&c.name, Seen::Failed(why)));
                continue;
            }
            let name = self.container_name(&dep.deployment_id, &app.name, &c.name);
            let (s, w) = self.look(app, c, &name).await;
            // Removed after it failed: the remembered cause says why it is not there.
            let s = match (s, self.failures.last(&name, &app.spec_hash)) {
                (Seen::Missing, Some(why)) => Seen::Failed(why),
                (s, _) => s,
            };
            seen.push((&c.name, s));
            workloads.extend(w);
        }
        let (mut state, mut message) = status::fold(seen.iter().map(|(n, s)| (*n, s)));
        if let Some(p) = problem {
            state = AppState::Down;
            message = format!("app {} {p}", app.name);
        } else if !waiting_on.is_empty() && state != AppState::Running {
            state = AppState::Waiting;
            message = deps::waiting_message(&waiting_on);
        }
        AppStatus {
            deployment_id: dep.deployment_id.clone(),
            app: app.name.clone(),
            state,
            message,
            deployment_generation: dep.generation,
            workloads,
        }
    }

    /// Ensures the app's network and volumes; returns the engine volume name per spec volume.
    async fn prepare_app(
        &self,
        dep: &DeploymentInstance,
        app: &AppInstance,
        cache: &mut PassCache,
    ) -> Result<HashMap<String, String>, String> {
        let network = self.network_name(&dep.project, &app.namespace);
        if !cache.networks.contains_key(&network) {
            let r = self
                .ensure_network(&network, &dep.project, &app.namespace)
                .await
                .map_err(|e| e.chain());
            cache.networks.insert(network.clone(), r);
        }
        if let Some(Err(why)) = cache.networks.get(&network) {
            return Err(why.clone());
        }
        let mut volumes = HashMap::new();
        let wanted: BTreeSet<&str> = app
            .containers
            .iter()
            .flat_map(|c| c.volumes.iter().map(|v| v.name.as_str()))
            .collect();
        for v in wanted {
            let name = self.volume_for(dep, app, v).await.map_err(|e| e.chain())?;
            volumes.insert(v.to_string(), name);
        }
        Ok(volumes)
    }

    /// The engine volume of spec volume `v`: this driver's own, created when missing; or, while
    /// this driver has none yet, the volume an earlier release (no owner) made for this very
    /// deployment, reused so that its data survives the upgrade (it is never removed: nothing
    /// proves it is this agent's alone).
    async fn volume_for(
        &self,
        dep: &DeploymentInstance,
        app: &AppInstance,
        v: &str,
    ) -> Result<String, DriverError> {
        let name = self.volume_name(&dep.deployment_id, &app.name, v);
        if self.scope.is_some() && self.volume_labels(&name).await?.is_none() {
            let old = names::volume_name(None, &dep.deployment_id, &app.name, v);
            if let Some(labels) = self.volume_labels(&old).await?
                && names::is_legacy(Some(&labels))
                && label_is(Some(&labels), names::DEPLOYMENT, &dep.deployment_id)
            {
                if self.note_once(&old) {
                    info!(
                        volume = %old,
                        "using the volume an earlier Canopy release made for this deployment \
                         (its data is kept; it has no owner label, so it is never removed \
                         automatically)"
                    );
                }
                return Ok(old);
            }
        }
        self.ensure_volume(&name, names::volume_labels(self.scope(), dep, app, v))
            .await?;
        Ok(name)
    }

    /// Brings one container to the desired spec: adopt, start, replace or create.
    async fn converge_container(
        &self,
        dep: &DeploymentInstance,
        app: &AppInstance,
        c: &ContainerSpec,
        volumes: &HashMap<String, String>,
        existing: &HashMap<String, ContainerSummary>,
        cache: &mut PassCache,
    ) -> Result<(), String> {
        let name = self.container_name(&dep.deployment_id, &app.name, &c.name);
        if let Some(found) = existing.get(&name) {
            let labels = found.labels.clone().unwrap_or_default();
            let label = |k: &str| labels.get(k).map(String::as_str).unwrap_or_default();
            if label(names::DEPLOYMENT) != dep.deployment_id
                || label(names::APP) != app.name
                || label(names::CONTAINER) != c.name
            {
                return Err(format!(
                    "the name {name} is taken by the Canopy container of deployment {}, app {}",
                    label(names::DEPLOYMENT),
                    label(names::APP)
                ));
            }
            if label(names::GENERATION) == app.spec_hash {
                let state = found.state.map(|s| s.to_string()).unwrap_or_default();
                let restart = match state.as_str() {
                    "created" => true,
                    "exited" | "stopped" => c.restart_policy == RestartPolicy::Always,
                    _ => false,
                };
                if restart {
                    if let Some(why) = self.failures.backing_off(&name, &app.spec_hash) {
                        return Err(why);
                    }
                    info!(container = %name, state = %state, "starting adopted container");
                    return self.start_fresh(&name, app).await;
                } else {
                    debug!(container = %name, state = %state, "adopted container left as is");
                }
                return Ok(());
            }
            // The new image first: if it cannot be had, the old container keeps running.
            self.ensure_image(&c.image, &c.name, app, cache).await?;
            info!(
                container = %name,
                from = %label(names::GENERATION),
                to = %app.spec_hash,
                "replacing container of an older generation"
            );
            self.stop_and_remove(&name).await.map_err(|e| e.chain())?;
        } else {
            self.ensure_image(&c.image, &c.name, app, cache).await?;
        }
        if let Some(why) = self.failures.backing_off(&name, &app.spec_hash) {
            return Err(why);
        }
        let network = self.network_name(&dep.project, &app.namespace);
        let body = spec::create_body(
            c,
            Placement {
                network: &network,
                aliases: names::aliases(&app.name, &c.name),
                labels: names::container_labels(self.scope(), dep, app, &c.name),
                volumes,
            },
        );
        let target = format!("container {name} (app {})", app.name);
        let options = CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        };
        match self
            .call(
                "create",
                &target,
                API_TIMEOUT,
                self.docker.create_container(Some(options), body),
            )
            .await
        {
            Ok(_) => info!(container = %name, image = %c.image, "created container"),
            // Docker says 409; Podman 4 says 500 "... is already in use".
            Err(e) if e.status_code() == Some(409) || e.chain().contains("already in use") => {
                let why = format!(
                    "cannot create container {name}: the name is used by a container this agent \
                     does not manage (remove or rename it)"
                );
                return Err(self.failures.record(&name, &app.spec_hash, &why));
            }
            Err(e) => {
                let cause = hints::explain(e.chain());
                // An engine may keep what it made of a failed create: never let it linger.
                self.discard(&name).await;
                return Err(self.failures.record(&name, &app.spec_hash, &cause));
            }
        }
        self.start_fresh(&name, app).await
    }

    /// Starts a container of the app's current generation. If the start fails the container is
    /// removed: it keeps the settings it was created with (runtime, ulimits, ports...), so a
    /// fix to the host would never reach it, and what the failed start left behind could make
    /// the next attempt fail for another reason than the real one. The next attempt (after a
    /// backoff, see `failures`) creates it afresh from the current spec.
    async fn start_fresh(&self, name: &str, app: &AppInstance) -> Result<(), String> {
        match self.start(name, &app.name).await {
            Ok(()) => {
                self.failures.forget(name);
                Ok(())
            }
            Err(e) => {
                let cause = hints::explain(e.chain());
                warn!(container = %name, error = %cause, "start failed; removing the container to create it afresh next time");
                self.discard(name).await;
                Err(self.failures.record(name, &app.spec_hash, &cause))
            }
        }
    }

    /// Removes container `name` if it exists and is this driver's (a failed create or start).
    async fn discard(&self, name: &str) {
        match self.inspect(name).await {
            Ok(Some(i)) => {
                let labels = i.config.as_ref().and_then(|c| c.labels.as_ref());
                if !names::is_ours(labels, self.scope()) {
                    return;
                }
                if let Err(e) = self.stop_and_remove(name).await {
                    warn!(container = %name, error = %e.chain(), "cannot remove the container that failed; retried next pass");
                }
            }
            Ok(None) => {}
            Err(e) => {
                debug!(container = %name, error = %e.chain(), "cannot inspect the container that failed")
            }
        }
    }

    /// Makes sure `image` is present, pulling it (with the app's credentials) when it is not.
    async fn ensure_image(
        &self,
        image: &str,
        container: &str,
        app: &AppInstance,
        cache: &mut PassCache,
    ) -> Result<(), String> {
        // Per image and credentials: another app may pull the same image with other ones.
        let key = match &app.registry_auth {
            Some(a) => format!("{image} {}@{}", a.username, a.server),
            None => image.to_string(),
        };
        if let Some(r) = cache.images.get(&key) {
            return r.clone();
        }
        debug!(container = %container, image = %image, "checking image");
        let target = format!("image {image}");
        let r = match self
            .call(
                "inspect",
                &target,
                API_TIMEOUT,
                self.docker.inspect_image(image),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => {
                self.pull(image, &target, app).await.map_err(|e| e.chain())
            }
            Err(e) => Err(e.chain()),
        };
        cache.images.insert(key, r.clone());
        r
    }

    /// Inspects a container (running its health check first when Podman will not) and turns
    /// the result into its [`Seen`] and [`WorkloadStatus`].
    async fn look(
        &self,
        app: &AppInstance,
        c: &ContainerSpec,
        name: &str,
    ) -> (Seen, Option<WorkloadStatus>) {
        let mut inspected = self.inspect(name).await;
        if let Ok(Some(i)) = &inspected
            && self.health_check_overdue(app, c, i)
        {
            self.run_health_check(name, i, c).await;
            inspected = self.inspect(name).await;
        }
        match inspected {
            Ok(Some(i)) => {
                let seen = observed(&i, app);
                let workload = workload(&i, &c.name, &c.image);
                (seen, Some(workload))
            }
            Ok(None) => (Seen::Missing, None),
            Err(e) => (Seen::Failed(e.chain()), None),
        }
    }

    /// Podman without systemd never runs health checks by itself: a running container of the
    /// current generation whose last check (or start) is older than its interval is due.
    fn health_check_overdue(
        &self,
        app: &AppInstance,
        c: &ContainerSpec,
        i: &ContainerInspectResponse,
    ) -> bool {
        let Some(h) = c.health_check.as_ref().filter(|h| !h.command.is_empty()) else {
            return false;
        };
        if !self.podman || label_of(i, names::GENERATION) != Some(app.spec_hash.as_str()) {
            return false;
        }
        let Some(state) = i.state.as_ref() else {
            return false;
        };
        if state.running != Some(true) {
            return false;
        }
        let last = state
            .health
            .as_ref()
            .and_then(|h| h.log.as_ref())
            .and_then(|log| log.last())
            .and_then(|r| r.end.clone())
            .or_else(|| state.started_at.clone());
        let Some(last) = last.as_deref().and_then(parse_time) else {
            return true;
        };
        // A grace second so that an engine that does run checks on time goes first.
        let due = last + Duration::from_secs(u64::from(h.interval_seconds.max(1)) + 1);
        time::OffsetDateTime::now_utc() >= due
    }

    async fn run_health_check(&self, name: &str, i: &ContainerInspectResponse, c: &ContainerSpec) {
        let Some(id) = i.id.as_deref() else { return };
        let limit = Duration::from_secs(
            u64::from(c.health_check.as_ref().map_or(5, |h| h.timeout_seconds)).max(1),
        ) + API_TIMEOUT;
        match tokio::time::timeout(limit, podman::run_healthcheck(&self.endpoint, id)).await {
            Ok(Ok(())) => debug!(container = %name, "ran overdue health check"),
            Ok(Err(e)) => debug!(container = %name, error = %e, "could not run health check"),
            Err(_) => debug!(container = %name, "health check did not finish in time"),
        }
    }

    /// Removes Canopy volumes and networks (of this scope) that no desired app uses. Failures
    /// (an object still in use) are logged and retried by the next pass.
    async fn collect_volumes_and_networks(&self, desired: &DesiredState) {
        let mut volumes = HashSet::new();
        let mut networks = HashSet::new();
        let mut pod_apps: HashSet<(String, String)> = HashSet::new();
        for d in &desired.deployments {
            for a in &d.apps {
                networks.insert(self.network_name(&d.project, &a.namespace));
                if a.pods.is_some() {
                    pod_apps.insert((d.deployment_id.clone(), a.name.clone()));
                }
                for c in &a.containers {
                    for v in &c.volumes {
                        volumes.insert(self.volume_name(&d.deployment_id, &a.name, &v.name));
                    }
                }
            }
        }
        match self.list_volumes_labelled(&[]).await {
            Ok(list) => {
                // A Helm app's volumes are its pass's to keep or remove while it is desired;
                // a claim that asked to outlive it is never removed.
                let unwanted = list.into_iter().filter(|(v, labels)| {
                    let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
                    if label(names::POD_APP) == "true" {
                        if label(names::KEEP) == "true" {
                            return false;
                        }
                        !pod_apps.contains(&(label(names::DEPLOYMENT), label(names::APP)))
                    } else {
                        !volumes.contains(v)
                    }
                });
                for (v, _) in unwanted {
                    if let Err(e) = self.remove_volume(&v).await {
                        warn!(volume = %v, error = %e.chain(), "cannot remove unused volume yet");
                    }
                }
            }
            Err(e) => warn!(error = %e.chain(), "cannot list volumes"),
        }
        match self.list_networks().await {
            Ok(list) => {
                for n in list.into_iter().filter(|n| !networks.contains(n)) {
                    match self.remove_network(&n).await {
                        Ok(()) => info!(network = %n, "removed unused network"),
                        Err(e) => warn!(error = %e.chain(), "cannot remove unused network yet"),
                    }
                }
            }
            Err(e) => warn!(error = %e.chain(), "cannot list networks"),
        }
        if self.scope.is_some() {
            self.note_legacy_volumes_and_networks(desired).await;
        }
    }

    /// Containers of an earlier release (no owner label): those of a deployment in this
    /// driver's desired state are this agent's to replace (removed here, before converging, so
    /// their names and host ports are free; the new ones carry this agent's scope). The others
    /// may be another agent's: left alone, and mentioned once.
    async fn replace_legacy_containers(&self, desired: &DesiredState) {
        let legacy = match self.list_legacy_containers().await {
            Ok(list) => list,
            Err(e) => {
                debug!(error = %e.chain(), "cannot list containers of earlier releases");
                return;
            }
        };
        for c in legacy {
            let name = summary_name(&c);
            let deployment = c
                .labels
                .as_ref()
                .and_then(|l| l.get(names::DEPLOYMENT))
                .cloned()
                .unwrap_or_default();
            if desired
                .deployments
                .iter()
                .any(|d| d.deployment_id == deployment)
            {
                info!(
                    container = %name,
                    deployment = %deployment,
                    "replacing a container an earlier Canopy release made for a deployment this \
                     edge runs"
                );
                if let Err(e) = self.stop_and_remove(&name).await {
                    warn!(container = %name, error = %e.chain(), "cannot remove the container of an earlier release yet");
                }
            } else if self.note_once(&name) {
                warn!(
                    container = %name,
                    deployment = %deployment,
                    "left alone: a container an earlier Canopy release made (no owner label) for \
                     a deployment this edge does not run; it may be another agent's. Remove it \
                     by hand if it is not (podman rm -f {name})"
                );
            }
        }
    }

    /// Volumes and networks of an earlier release that this driver does not use: never removed
    /// (nothing proves they are this agent's), mentioned once each.
    async fn note_legacy_volumes_and_networks(&self, desired: &DesiredState) {
        let desired_ids: HashSet<&str> = desired
            .deployments
            .iter()
            .map(|d| d.deployment_id.as_str())
            .collect();
        if let Ok(volumes) = self.list_legacy_volumes().await {
            for (name, deployment) in volumes {
                if !desired_ids.contains(deployment.as_str()) && self.note_once(&name) {
                    warn!(
                        volume = %name,
                        deployment = %deployment,
                        "left alone: a volume an earlier Canopy release made (no owner label) \
                         for a deployment this edge does not run; its data stays. Remove it by \
                         hand once nothing needs it (podman volume rm {name})"
                    );
                }
            }
        }
        if let Ok(networks) = self.list_legacy_networks().await {
            for name in networks {
                if self.note_once(&name) {
                    info!(
                        network = %name,
                        "left alone: a network an earlier Canopy release made (no owner label); \
                         remove it by hand once no container uses it (podman network rm {name})"
                    );
                }
            }
        }
    }

    /// Whether `object` is mentioned for the first time (by this driver).
    fn note_once(&self, object: &str) -> bool {
        self.noted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(object.to_string())
    }

    fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }
}

/// The desired state with each pod restart control folded into its app's generation:
/// `{spec_hash}.r{n}` after `n` restarts (`spec_hash` while 0), so a restart request recreates
/// the app's containers once, as a changed spec does, and not again.
fn with_pod_restarts(desired: &DesiredState) -> DesiredState {
    let mut out = desired.clone();
    for c in desired
        .controls
        .iter()
        .filter(|c| c.kind == WorkloadKind::Pod && c.restarts > 0)
    {
        for dep in out
            .deployments
            .iter_mut()
            .filter(|d| d.deployment_id == c.deployment_id)
        {
            for app in dep.apps.iter_mut().filter(|a| a.name == c.app) {
                app.spec_hash = format!("{}.r{}", app.spec_hash, c.restarts);
            }
        }
    }
    out
}

/// `$DOCKER_HOST`, else the first engine socket that exists, else Podman's (so the error names
/// the usual place); and whether it is such a last resort.
async fn default_host() -> (String, bool) {
    if let Ok(h) = std::env::var("DOCKER_HOST")
        && !h.trim().is_empty()
    {
        return (h, false);
    }
    for p in [PODMAN_SOCKET, DOCKER_SOCKET] {
        if tokio::fs::try_exists(p).await.unwrap_or(false) {
            return (format!("unix://{p}"), false);
        }
    }
    (format!("unix://{PODMAN_SOCKET}"), true)
}

fn parse_host(host: &str) -> Result<Endpoint, DriverError> {
    let invalid = || DriverError::InvalidHost {
        host: host.to_string(),
    };
    if let Some(path) = host.strip_prefix("unix://") {
        if !path.starts_with('/') {
            return Err(invalid());
        }
        return Ok(Endpoint::Unix(PathBuf::from(path)));
    }
    if host.starts_with('/') {
        return Ok(Endpoint::Unix(PathBuf::from(host)));
    }
    let rest = host
        .strip_prefix("http://")
        .or_else(|| host.strip_prefix("tcp://"))
        .ok_or_else(invalid)?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || !authority.contains(':') {
        return Err(invalid());
    }
    Ok(Endpoint::Tcp(authority.to_string()))
}

fn summary_name(c: &ContainerSummary) -> String {
    c.names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_default()
}

fn label_is(labels: Option<&HashMap<String, String>>, key: &str, value: &str) -> bool {
    labels.and_then(|l| l.get(key)).map(String::as_str) == Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_addresses() {
        assert_eq!(
            parse_host("unix:///run/podman/podman.sock").unwrap(),
            Endpoint::Unix("/run/podman/podman.sock".into())
        );
        assert_eq!(
            parse_host("http://127.0.0.1:2375").unwrap(),
            Endpoint::Tcp("127.0.0.1:2375".into())
        );
        assert_eq!(
            parse_host("tcp://engine:2375/").unwrap(),
            Endpoint::Tcp("engine:2375".into())
        );
        assert!(parse_host("unix://relative.sock").is_err());
        assert!(parse_host("https://x:1").is_err());
        assert!(parse_host("http://nohost").is_err());
    }

    #[test]
    fn pod_restarts_fold_into_the_generation() {
        use canopy_proto::WorkloadControl;
        let app = |name: &str| AppInstance {
            name: name.into(),
            spec_hash: "h".into(),
            ..Default::default()
        };
        let mut d = DesiredState {
            deployments: vec![DeploymentInstance {
                deployment_id: "d1".into(),
                apps: vec![app("a"), app("b")],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(with_pod_restarts(&d), d);
        d.controls.push(WorkloadControl {
            deployment_id: "d1".into(),
            app: "a".into(),
            kind: WorkloadKind::Pod,
            workload: String::new(),
            running: true,
            restarts: 2,
        });
        let folded = with_pod_restarts(&d);
        assert_eq!(folded.deployments[0].apps[0].spec_hash, "h.r2");
        assert_eq!(folded.deployments[0].apps[1].spec_hash, "h");
    }

    #[tokio::test]
    async fn a_missing_socket_names_itself_and_how_to_start_podman() {
        let err = DockerDriver::connect(Some("unix:///nonexistent/canopy/podman.sock"))
            .await
            .unwrap_err()
            .chain();
        assert!(
            err.contains("unix:///nonexistent/canopy/podman.sock"),
            "{err}"
        );
        assert!(err.contains("podman system service"), "{err}");
    }
}
