//! What the sync loop needs of a driver, as a trait: one convergence pass, one observation, the
//! engine's name and capabilities, and tunnels to workloads. [`EdgeDriver`](crate::driver::EdgeDriver)
//! (containers and VMs) is the real one; [`DockerDriver`] alone also qualifies; tests put a double
//! in its place to run the loop without a container engine.

use std::future::Future;

use canopy_proto::{AppStatus, DesiredState, TunnelTarget, WorkloadKind};

use crate::driver::{DockerDriver, DriverError, VmDriver};
use crate::tunnel::TunnelIo;

/// A driver the sync loop converges with. Calls never overlap: the loop makes one at a time.
pub trait Converger: Send + Sync {
    /// One bounded, re-runnable convergence pass to `desired`; each desired app's status, in
    /// order. Must adopt what earlier passes created and leave healthy workloads alone.
    fn apply(
        &self,
        desired: &DesiredState,
    ) -> impl Future<Output = Result<Vec<AppStatus>, DriverError>> + Send;

    /// The status [`apply`](Self::apply) would report, changing nothing.
    fn observe(
        &self,
        desired: &DesiredState,
    ) -> impl Future<Output = Result<Vec<AppStatus>, DriverError>> + Send;

    /// The engine driven, e.g. `Podman Engine 5.4.2` (reported to the control plane).
    fn engine(&self) -> String;

    /// Workload kinds this driver runs, reported to the control plane (`containers`, `vms`).
    fn capabilities(&self) -> Vec<String> {
        vec!["containers".to_string()]
    }

    /// The VM accelerator (`kvm`, `tcg`), `None` when the driver runs no VMs.
    fn accelerator(&self) -> Option<canopy_proto::Accelerator> {
        None
    }

    /// Completes when the driver learnt, between passes, something a report would show (a
    /// Helm pod's readiness changed, a probe restarted a container): the loop then runs a pass
    /// at once. Never, by default.
    fn changed(&self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }

    /// Opens the local end of a tunnel to one of `desired`'s workloads. Unlike `apply` and
    /// `observe`, calls may overlap each other and a pass (tunnels live for minutes). A target
    /// that is not in `desired`, or that this driver does not run, is an error naming it.
    fn open_tunnel(
        &self,
        desired: &DesiredState,
        target: &TunnelTarget,
    ) -> impl Future<Output = Result<TunnelIo, DriverError>> + Send {
        let _ = desired;
        let target = format!("{target:?}");
        async move {
            Err(DriverError::Unsupported {
                what: format!("tunnel to {target}"),
            })
        }
    }
}

impl Converger for DockerDriver {
    async fn apply(&self, desired: &DesiredState) -> Result<Vec<AppStatus>, DriverError> {
        DockerDriver::apply(self, desired).await
    }

    async fn observe(&self, desired: &DesiredState) -> Result<Vec<AppStatus>, DriverError> {
        DockerDriver::observe(self, desired).await
    }

    fn engine(&self) -> String {
        DockerDriver::engine(self).to_string()
    }

    async fn changed(&self) {
        DockerDriver::changed(self).await
    }
}

/// VMs alone (an edge without a container engine, or tests).
impl Converger for VmDriver {
    async fn apply(&self, desired: &DesiredState) -> Result<Vec<AppStatus>, DriverError> {
        VmDriver::apply(self, desired).await
    }

    async fn observe(&self, desired: &DesiredState) -> Result<Vec<AppStatus>, DriverError> {
        VmDriver::observe(self, desired).await
    }

    fn engine(&self) -> String {
        self.engine().unwrap_or_else(|| "no QEMU".to_string())
    }

    fn capabilities(&self) -> Vec<String> {
        if self.available() {
            vec!["vms".to_string()]
        } else {
            Vec::new()
        }
    }

    fn accelerator(&self) -> Option<canopy_proto::Accelerator> {
        self.wire_accelerator()
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
            } => self.open_vnc(desired, deployment_id, app, vm).await,
            TunnelTarget::Serial {
                deployment_id,
                app,
                vm,
            } => self.open_serial(desired, deployment_id, app, vm).await,
            TunnelTarget::Logs {
                deployment_id,
                app,
                kind: WorkloadKind::Vm,
                workload,
                follow,
                tail,
            } => {
                self.open_logs(desired, deployment_id, app, workload, *follow, *tail)
                    .await
            }
            TunnelTarget::Logs { .. } => Err(DriverError::Unsupported {
                what: "container log tunnel without a container engine".into(),
            }),
        }
    }
}
