//! [`EdgeDriver`]: everything an edge runs, containers and virtual machines, behind the one
//! [`Converger`] the sync loop drives.
//!
//! An app may have both containers and VMs; each driver converges its own kind and reports the
//! app, and this driver merges the two reports: the app is as bad as its worst half (`DOWN`
//! over `DEPLOYING`/`WAITING` over `RUNNING`), its workloads are both lists, its message both
//! messages. The two drivers touch disjoint things, so their passes run side by side.
//!
//! Dependencies cross the two: the merged report of each pass is kept and handed to both
//! drivers in the next, so an app that depends on a VM app (or the reverse) starts one pass after
//! its dependency runs as a whole.
//!
//! An edge may have QEMU and no container engine (a gateway that runs VMs only, or an engine
//! that is down): the agent then runs its VMs, reports every app with containers `DOWN` with the
//! engine's error, and connects the engine at a later pass (at most every
//! [`RECONNECT_EVERY`]) once it answers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tracing::info;

use canopy_proto::{AppState, AppStatus, DesiredState, TunnelTarget, WorkloadKind};

use super::DockerDriver;
use super::deps::Reported;
use super::error::DriverError;
use super::status::rank;
use super::vm::VmDriver;
use crate::converger::Converger;
use crate::tunnel::TunnelIo;

/// How often an edge without a container engine tries to connect one.
pub const RECONNECT_EVERY: Duration = Duration::from_secs(10);

/// The container driver and the VM driver of one edge.
#[derive(Debug)]
pub struct EdgeDriver {
    /// `None` while the edge has no usable container engine.
    containers: RwLock<Option<Arc<DockerDriver>>>,
    /// How to connect the engine later, when the edge started without one.
    reconnect: Option<Reconnect>,
    vms: VmDriver,
    /// The merged app states of the last pass (see the module doc).
    reported: Mutex<Reported>,
}

#[derive(Debug)]
struct Reconnect {
    /// The engine address (`None`: the engine's default socket).
    host: Option<String>,
    scope: Option<String>,
    /// Why there is no engine (the last connection error), and when to try again.
    last: Mutex<(String, Instant)>,
}

impl EdgeDriver {
    /// Combines a connected container driver and a VM driver.
    pub fn new(containers: DockerDriver, vms: VmDriver) -> EdgeDriver {
        EdgeDriver {
            containers: RwLock::new(Some(Arc::new(containers))),
            reconnect: None,
            vms,
            reported: Mutex::default(),
        }
    }

    /// A VM driver on an edge whose container engine (at `host`, or the default socket) does
    /// not answer now (`why`): VMs run, apps with containers are `DOWN` saying `why`, and passes
    /// try to connect the engine again at most every [`RECONNECT_EVERY`].
    pub fn without_engine(host: Option<String>, why: String, vms: VmDriver) -> EdgeDriver {
        EdgeDriver {
            containers: RwLock::new(None),
            reconnect: Some(Reconnect {
                host,
                scope: None,
                last: Mutex::new((why, Instant::now() + RECONNECT_EVERY)),
            }),
            vms,
            reported: Mutex::default(),
        }
    }

    /// Scopes both drivers (see [`DockerDriver::scoped`]), and a container driver connected
    /// later.
    pub fn scoped(self, scope: &str) -> EdgeDriver {
        let containers = self
            .containers
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|d| Arc::new(Arc::unwrap_or_clone(d).scoped(scope)));
        EdgeDriver {
            containers: RwLock::new(containers),
            reconnect: self.reconnect.map(|r| Reconnect {
                scope: Some(scope.to_string()),
                ..r
            }),
            vms: self.vms.scoped(scope),
            reported: self.reported,
        }
    }

    /// Gives the container driver (and one connected later) its owner: the edge's id, so that
    /// agents sharing one engine never touch each other's containers, volumes and networks (see
    /// [`DockerDriver::scoped`]). The VM driver needs none: its VMs, overlays and image cache
    /// live under this agent's own data directory.
    pub fn owned_by(self, owner: &str) -> EdgeDriver {
        let containers = self
            .containers
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|d| Arc::new(Arc::unwrap_or_clone(d).scoped(owner)));
        EdgeDriver {
            containers: RwLock::new(containers),
            reconnect: self.reconnect.map(|r| Reconnect {
                scope: Some(owner.to_string()),
                ..r
            }),
            vms: self.vms,
            reported: self.reported,
        }
    }

    /// The container driver, when the edge has a usable engine.
    pub fn containers(&self) -> Option<Arc<DockerDriver>> {
        self.containers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The container driver; on an edge without one, a new connection attempt when one is due.
    /// The error says why there is none.
    async fn container_driver(&self) -> Result<Arc<DockerDriver>, String> {
        if let Some(d) = self.containers() {
            return Ok(d);
        }
        let Some(r) = &self.reconnect else {
            return Err("no container engine".into());
        };
        {
            let last = r.last.lock().unwrap_or_else(PoisonError::into_inner);
            if Instant::now() < last.1 {
                return Err(last.0.clone());
            }
        }
        match DockerDriver::connect(r.host.as_deref()).await {
            Ok(d) => {
                let d = Arc::new(match &r.scope {
                    Some(scope) => d.scoped(scope),
                    None => d,
                });
                info!(engine = %d.engine(), "container engine connected");
                *self
                    .containers
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&d));
                Ok(d)
            }
            Err(e) => {
                let why = e.chain();
                *r.last.lock().unwrap_or_else(PoisonError::into_inner) =
                    (why.clone(), Instant::now() + RECONNECT_EVERY);
                Err(why)
            }
        }
    }

    /// The VM driver.
    pub fn vms(&self) -> &VmDriver {
        &self.vms
    }
}

impl Converger for EdgeDriver {
    async fn apply(&self, desired: &DesiredState) -> Result<Vec<AppStatus>, DriverError> {
        self.pass(desired, true).await
    }

    async fn observe(&self, desired: &DesiredState) -> Result<Vec<AppStatus>, DriverError> {
        self.pass(desired, false).await
    }

    fn engine(&self) -> String {
        let containers = self.containers().map_or_else(
            || "no container engine".to_string(),
            |d| d.engine().to_string(),
        );
        match self.vms.engine() {
            Some(qemu) => format!("{containers}; {qemu}"),
            None => containers,
        }
    }

    fn capabilities(&self) -> Vec<String> {
        let mut c = Vec::new();
        if self.containers().is_some() {
            c.push("containers".to_string());
        }
        if self.vms.available() {
            c.push("vms".into());
        }
        c
    }

    fn accelerator(&self) -> Option<canopy_proto::Accelerator> {
        self.vms.wire_accelerator()
    }

    async fn changed(&self) {
        match self.containers() {
            Some(d) => d.changed().await,
            None => std::future::pending().await,
        }
    }

    async fn open_tunnel(
        &self,
        desired: &DesiredState,
        target: &TunnelTarget,
    ) -> Result<TunnelIo, DriverError> {
        match target {
            TunnelTarget::Vnc {
                deployment_id,
                app,
                vm,
            } => self.vms.open_vnc(desired, deployment_id, app, vm).await,
            TunnelTarget::Serial {
                deployment_id,
                app,
                vm,
            } => self.vms.open_serial(desired, deployment_id, app, vm).await,
            TunnelTarget::Logs {
                deployment_id,
                app,
                kind: WorkloadKind::Vm,
                workload,
                follow,
                tail,
            } => {
                self.vms
                    .open_logs(desired, deployment_id, app, workload, *follow, *tail)
                    .await
            }
            TunnelTarget::Logs {
                deployment_id,
                app,
                kind: WorkloadKind::Pod,
                workload,
                follow,
                tail,
            } => {
                let desired_app = desired
                    .deployments
                    .iter()
                    .filter(|d| &d.deployment_id == deployment_id)
                    .flat_map(|d| d.apps.iter().filter(|a| &a.name == app))
                    .next();
                // A Helm app: `pod/container`, a pod or a container name (see
                // `DockerDriver::find_pod_container`).
                if let Some(a) = desired_app
                    && a.pods.is_some()
                {
                    let containers =
                        self.container_driver()
                            .await
                            .map_err(|why| DriverError::Unsupported {
                                what: format!("log stream of {workload}: {why}"),
                            })?;
                    let name = containers
                        .find_pod_container(deployment_id, app, workload)
                        .await?;
                    let stream = containers.logs(&name, *follow, *tail).await?;
                    return Ok(TunnelIo::Source(stream));
                }
                let desired_container =
                    desired_app.is_some_and(|a| a.containers.iter().any(|c| &c.name == workload));
                if !desired_container {
                    return Err(DriverError::NoSuchWorkload {
                        what: format!(
                            "container {workload} of app {app} (deployment {deployment_id})"
                        ),
                    });
                }
                let containers =
                    self.container_driver()
                        .await
                        .map_err(|why| DriverError::Unsupported {
                            what: format!("log stream of container {workload}: {why}"),
                        })?;
                let name = containers.container_name(deployment_id, app, workload);
                let stream = containers.logs(&name, *follow, *tail).await?;
                Ok(TunnelIo::Source(stream))
            }
        }
    }
}

impl EdgeDriver {
    /// One pass of both drivers side by side (`apply`, or observe only), merged and kept.
    async fn pass(
        &self,
        desired: &DesiredState,
        apply: bool,
    ) -> Result<Vec<AppStatus>, DriverError> {
        let reported = self.last_report();
        let containers = async {
            match self.container_driver().await {
                Ok(d) if apply => d.apply_after(desired, &reported).await,
                Ok(d) => d.observe_after(desired, &reported).await,
                Err(why) => Ok(without_containers(desired, &why)),
            }
        };
        let vms = async {
            if apply {
                self.vms.apply_after(desired, &reported).await
            } else {
                self.vms.observe_after(desired, &reported).await
            }
        };
        let (c, v) = tokio::join!(containers, vms);
        Ok(self.remember(merge(c?, v?)))
    }

    fn last_report(&self) -> Reported {
        self.reported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn remember(&self, merged: Vec<AppStatus>) -> Vec<AppStatus> {
        let states = merged
            .iter()
            .map(|s| ((s.deployment_id.clone(), s.app.clone()), s.state))
            .collect();
        *self.reported.lock().unwrap_or_else(PoisonError::into_inner) = states;
        merged
    }
}

/// The container half of every app on an edge without a container engine: `DOWN` saying why
/// for apps with containers (or a Helm app's pods), nothing to say for the others.
fn without_containers(desired: &DesiredState, why: &str) -> Vec<AppStatus> {
    desired
        .deployments
        .iter()
        .flat_map(|d| {
            d.apps.iter().map(move |a| {
                let (state, message) = if a.containers.is_empty() && a.pods.is_none() {
                    (AppState::Running, String::new())
                } else {
                    (
                        AppState::Down,
                        format!("app {}: this edge cannot run containers now: {why}", a.name),
                    )
                };
                AppStatus {
                    deployment_id: d.deployment_id.clone(),
                    app: a.name.clone(),
                    state,
                    message,
                    deployment_generation: d.generation,
                    workloads: Vec::new(),
                }
            })
        })
        .collect()
}

/// Merges the container and VM reports of the same apps (both in desired order; an app missing
/// from one side is taken from the other as is).
fn merge(containers: Vec<AppStatus>, vms: Vec<AppStatus>) -> Vec<AppStatus> {
    let mut by_app: HashMap<(String, String), AppStatus> = vms
        .into_iter()
        .map(|s| ((s.deployment_id.clone(), s.app.clone()), s))
        .collect();
    let mut out = Vec::with_capacity(containers.len());
    for mut c in containers {
        if let Some(v) = by_app.remove(&(c.deployment_id.clone(), c.app.clone())) {
            if rank(v.state) > rank(c.state) {
                c.state = v.state;
            }
            // Both halves may say the same (a dependency problem, the same wait).
            if v.message != c.message {
                c.message = [c.message.as_str(), v.message.as_str()]
                    .into_iter()
                    .filter(|m| !m.is_empty())
                    .collect::<Vec<_>>()
                    .join("; ");
            }
            c.workloads.extend(v.workloads);
        }
        out.push(c);
    }
    out.extend(by_app.into_values());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_proto::WorkloadStatus;
    use proptest::prelude::*;

    fn status(app: &str, state: AppState, message: &str, workload: &str) -> AppStatus {
        AppStatus {
            deployment_id: "d".into(),
            app: app.into(),
            state,
            message: message.into(),
            workloads: vec![WorkloadStatus {
                name: workload.into(),
                ..WorkloadStatus::default()
            }],
            ..AppStatus::default()
        }
    }

    #[test]
    fn the_worse_half_decides_and_everything_is_kept() {
        let merged = merge(
            vec![
                status("a", AppState::Running, "", "web"),
                status("b", AppState::Waiting, "waiting for app a", "db"),
            ],
            vec![
                status("a", AppState::Down, "virtual machine vm: image", "vm"),
                status("b", AppState::Running, "", "vm2"),
            ],
        );
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].state, AppState::Down);
        assert_eq!(merged[0].message, "virtual machine vm: image");
        assert_eq!(merged[0].workloads.len(), 2);
        assert_eq!(merged[1].state, AppState::Waiting);
        assert_eq!(merged[1].message, "waiting for app a");
    }

    fn state() -> impl Strategy<Value = AppState> {
        prop::sample::select(vec![
            AppState::Running,
            AppState::Waiting,
            AppState::Deploying,
            AppState::Down,
        ])
    }

    proptest! {
        #[test]
        fn merging_is_the_worst_of_both(a in state(), b in state()) {
            let m = merge(vec![status("x", a, "", "c")], vec![status("x", b, "", "v")]);
            prop_assert_eq!(rank(m[0].state), rank(a).max(rank(b)));
            prop_assert_eq!(m[0].workloads.len(), 2);
        }
    }
}
