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

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use canopy_proto::{AppStatus, DesiredState, TunnelTarget, WorkloadKind};

use super::DockerDriver;
use super::deps::Reported;
use super::error::DriverError;
use super::names;
use super::status::rank;
use super::vm::VmDriver;
use crate::config::AgentConfig;
use crate::converger::Converger;
use crate::tunnel::TunnelIo;

/// The container driver and the VM driver of one edge.
#[derive(Debug)]
pub struct EdgeDriver {
    containers: DockerDriver,
    vms: VmDriver,
    /// The merged app states of the last pass (see the module doc).
    reported: Mutex<Reported>,
}

impl EdgeDriver {
    /// Combines a connected container driver and a VM driver.
    pub fn new(containers: DockerDriver, vms: VmDriver) -> EdgeDriver {
        EdgeDriver {
            containers,
            vms,
            reported: Mutex::default(),
        }
    }

    /// The VM driver of `config` (data dir, image dirs, cache cap, scope) next to `containers`
    /// (scoped too when `config.scope` is set).
    pub async fn from_config(containers: DockerDriver, config: &AgentConfig) -> EdgeDriver {
        let containers = match &config.scope {
            Some(scope) => containers.scoped(scope),
            None => containers,
        };
        EdgeDriver::new(containers, VmDriver::from_config(config).await)
    }

    /// Scopes both drivers (see [`DockerDriver::scoped`]).
    pub fn scoped(self, scope: &str) -> EdgeDriver {
        EdgeDriver {
            containers: self.containers.scoped(scope),
            vms: self.vms.scoped(scope),
            reported: self.reported,
        }
    }

    /// The container driver.
    pub fn containers(&self) -> &DockerDriver {
        &self.containers
    }

    /// The VM driver.
    pub fn vms(&self) -> &VmDriver {
        &self.vms
    }
}

impl Converger for EdgeDriver {
    async fn apply(&self, desired: &DesiredState) -> Result<Vec<AppStatus>, DriverError> {
        let reported = self.last_report();
        let (c, v) = tokio::join!(
            self.containers.apply_after(desired, &reported),
            self.vms.apply_after(desired, &reported)
        );
        Ok(self.remember(merge(c?, v?)))
    }

    async fn observe(&self, desired: &DesiredState) -> Result<Vec<AppStatus>, DriverError> {
        let reported = self.last_report();
        let (c, v) = tokio::join!(
            self.containers.observe_after(desired, &reported),
            self.vms.observe_after(desired, &reported)
        );
        Ok(self.remember(merge(c?, v?)))
    }

    fn engine(&self) -> String {
        match self.vms.engine() {
            Some(qemu) => format!("{}; {qemu}", self.containers.engine()),
            None => self.containers.engine().to_string(),
        }
    }

    fn capabilities(&self) -> Vec<String> {
        let mut c = vec!["containers".to_string()];
        if self.vms.available() {
            c.push("vms".into());
        }
        c
    }

    fn accelerator(&self) -> String {
        self.vms.accelerator().to_string()
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
                let desired_container = desired
                    .deployments
                    .iter()
                    .filter(|d| &d.deployment_id == deployment_id)
                    .flat_map(|d| d.apps.iter().filter(|a| &a.name == app))
                    .any(|a| a.containers.iter().any(|c| &c.name == workload));
                if !desired_container {
                    return Err(DriverError::NoSuchWorkload {
                        what: format!(
                            "container {workload} of app {app} (deployment {deployment_id})"
                        ),
                    });
                }
                let name = names::container_name(deployment_id, app, workload);
                let stream = self.containers.logs(&name, *follow, *tail).await?;
                Ok(TunnelIo::Source(stream))
            }
        }
    }
}

impl EdgeDriver {
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
    use canopy_proto::{AppState, WorkloadStatus};
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
