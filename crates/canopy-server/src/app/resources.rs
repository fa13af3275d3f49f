//! The resource manager (reference "ARM", `resource-manager.yaml`): what runs for one
//! application on one edge, how to reach it, and operator actions on it.
//!
//! Why it is built from agent reports and not by asking the edge: edges may be offline or behind
//! NAT, and a list must answer at once. Each agent reports its workloads with every status
//! report (the hub keeps the latest); this module joins them with what the app should run (its
//! rendered [`AppInstance`]) so a workload not reported yet still shows (`PROVISIONING`,
//! `ContainerCreating`), and maps them onto the reference shapes: an app's containers on an edge
//! are one **pod** (the reference groups containers in Kubernetes pods), each VM is a
//! **virtual machine**.
//!
//! Actions (VM start, stop, restart; pod delete = recreate the containers) are not commands sent
//! to the edge: they are standing [`WorkloadControl`]s stored with the fleet and carried in the
//! edge's desired state, so they survive a lost connection or an agent restart and applying one
//! twice is harmless. Consoles and logs travel through agent-opened tunnels (see `tunnels`).
//!
//! Helm-chart applications (`AppInstance.pods`) run several pods: each pod the agent reports
//! (`kind: "pod"`, named `<workload>-...` as Kubernetes names them) is listed with the
//! containers the agent reports in it (init containers first, marked `initContainer`; each with
//! its own state, reason, exit code and restarts: a crash loop, a failed Job, a failing
//! readiness probe show on the container concerned), or, from an agent that reports the pod
//! alone, with the containers of the chart workload its name starts with. A workload none of
//! whose pods has been reported yet is listed as `STATE_PENDING` pods (one per replica not
//! reported, named `<workload>` or `<workload>-<i>`), so the count matches what the app should
//! run.
//!
//! Ids are stable and need no storage: UUIDv5 of edge, deployment, app and workload, so the same
//! VM keeps its id across restarts of both sides and differs between edges.

use std::sync::Arc;

use canopy_proto::{
    AppInstance, AppStatus, Health, PodPhase, Protocol, StatusKind, WorkloadControl, WorkloadKind,
    WorkloadStatus,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::fleet_tx::{FleetTx, HubOp};
use super::{Access, App, AppError, Ctx};
use crate::hub::DeploymentRecord;

/// Namespace of Canopy's workload UUIDs (v5).
const ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x5f0c_6a7e_2b1d_4c8e_9a3f_1e2d_3c4b_5a69);

/// At most this many workloads or endpoints in one answer (the reference's `maxItems`).
const MAX_ITEMS: usize = 100;

/// `AppWorkload`: one VM or one pod (an app's containers on one edge).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppWorkload {
    /// `TYPE_VIRTUAL_MACHINE` or `TYPE_POD`.
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    pub name: String,
    pub namespace: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    pub workload_ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_machine: Option<VirtualMachine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<Pod>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachine {
    pub admin_status: StateOnly,
    pub status: VirtualMachineStatus,
    /// Canopy extension: the accelerator QEMU uses (`kvm`, `tcg`), once reported.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub accelerator: String,
    /// Canopy extension: a VNC console can be opened (`GET .../vnc`).
    #[serde(default)]
    pub vnc: bool,
    /// Canopy extension: times the VM was restarted by the agent's supervision.
    #[serde(default)]
    pub restart_count: u32,
}

/// `{state}` objects (`AdminStatus`, `PodStatus`, `EndpointStatus`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StateOnly {
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineStatus {
    /// `STATE_RUNNING`, `STATE_STOPPED`, `STATE_ERROR_IMAGE_PULL`, ...
    pub state: String,
    /// Canopy extension: why the VM is not running, when known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    pub containers: Vec<Container>,
    pub status: StateOnly,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub name: String,
    pub image_name: String,
    pub restart_count: u32,
    pub status: ContainerStatus,
    /// Canopy extension: an init container of a Helm app's pod (listed before the others, in
    /// the order they run). The reference's `Pod` has no separate list for them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init_container: bool,
}

/// One of the three is set.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_state_running: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_state_terminated: Option<ContainerStateTerminated>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_state_waiting: Option<ContainerStateWaiting>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStateTerminated {
    pub exit_code: i64,
    pub message: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStateWaiting {
    pub message: String,
    pub reason: String,
}

/// One workload of a deployment on one edge, with its endpoints (Canopy's deployment-wide
/// view; the reference answers per app and edge).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentWorkload {
    /// The edge's id.
    pub cluster_id: String,
    pub cluster_name: String,
    /// The application's name in the package.
    pub app_name: String,
    /// `App.id` of the application in the deployment (`b-...`), as the reference paths take it.
    pub app_id: String,
    pub workload: AppWorkload,
    /// The workload's endpoints (a pod's: those of its containers).
    pub endpoints: Vec<AppEndpoint>,
}

/// `AppEndpoint`: the published ports of one workload and where they are reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppEndpoint {
    pub id: String,
    pub name: String,
    pub fqdns: Vec<Fqdn>,
    pub ports: Vec<EndpointPort>,
    pub endpoint_status: StateOnly,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Fqdn {
    pub fqdn: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    pub name: String,
    pub value: u16,
    pub protocol: String,
    pub service_proxy_url: String,
}

/// A VM power action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmAction {
    Start,
    Stop,
    Restart,
}

impl VmAction {
    fn verb(self) -> &'static str {
        match self {
            VmAction::Start => "start",
            VmAction::Stop => "stop",
            VmAction::Restart => "restart",
        }
    }
}

/// One workload of one app on one edge, resolved and authorized for its project: what a tunnel
/// or an action needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadRef {
    pub edge_id: String,
    pub edge_name: String,
    pub deployment_id: String,
    pub app: String,
    pub kind: WorkloadKind,
    /// The VM's or container's name as in the template.
    pub name: String,
}

/// The stable id of a workload (UUIDv5 of where it runs and what it is).
pub fn workload_id(edge_id: &str, deployment_id: &str, app: &str, what: &str) -> String {
    uuid::Uuid::new_v5(
        &ID_NAMESPACE,
        format!("{edge_id}/{deployment_id}/{app}/{what}").as_bytes(),
    )
    .to_string()
}

/// The pod name of an app's containers in a deployment: the app name and 8 hex digits of the
/// deployment's app id (unique in the namespace, stable).
pub fn pod_name(deployment_id: &str, app: &str) -> String {
    let app_id = canopy_deploy::status::app_id(deployment_id, app);
    let suffix = app_id.trim_start_matches("b-");
    let short = &suffix[..suffix.len().min(8)];
    let mut base: String = app.chars().take(50).collect();
    base = base.trim_end_matches('-').to_string();
    format!("{base}-{short}")
}

/// The app of a deployment on an edge, as found by [`App::locate_app`].
struct Located {
    rec: Arc<DeploymentRecord>,
    app_index: usize,
    edge_id: String,
    edge_name: String,
    status: Option<AppStatus>,
}

impl Located {
    fn app(&self) -> &AppInstance {
        &self.rec.apps[self.app_index]
    }

    fn reported(&self, kind: StatusKind, name: &str) -> Option<&WorkloadStatus> {
        self.status
            .as_ref()?
            .workloads
            .iter()
            .find(|w| w.kind == kind && w.name == name)
    }
}

impl App {
    /// Finds `app_id` (`App.id` of a deployment's app, `b-...`) on edge `cluster_id` (name or
    /// id) in the caller's project. Unknown or foreign ids are 404 alike.
    fn locate_app(&self, ctx: &Ctx, app_id: &str, cluster_id: &str) -> Result<Located, AppError> {
        let hub = self.hub();
        let app_missing = || AppError::NotFound(format!("application {app_id} not found"));
        let found = hub.find_app(ctx.project.id, app_id);
        let (rec, app_index) = found.ok_or_else(app_missing)?;
        let edge = hub
            .edge(ctx.project.id, cluster_id)
            .ok_or_else(|| super::edges::edge_not_found(cluster_id))?;
        let app_name = &rec.apps[app_index].name;
        if !hub.edge_holds(&edge.id, &rec.id, app_name) {
            return Err(AppError::NotFound(format!(
                "application {app_id} ({app_name} of deployment {}) is not deployed on edge {}",
                rec.name, edge.name
            )));
        }
        let status = hub
            .edge_statuses(ctx.project.id, &edge.id)
            .into_iter()
            .find(|s| s.deployment_id == rec.id && &s.app == app_name);
        Ok(Located {
            rec,
            app_index,
            edge_id: edge.id,
            edge_name: edge.name,
            status,
        })
    }

    /// `ListAppWorkloads`: the app's pod (when it has containers) and its VMs on the edge.
    pub fn list_app_workloads(
        &self,
        ctx: &Ctx,
        app_id: &str,
        cluster_id: &str,
    ) -> Result<Vec<AppWorkload>, AppError> {
        ctx.require(Access::FleetRead)?;
        let l = self.locate_app(ctx, app_id, cluster_id)?;
        Ok(self.workloads_at(&l))
    }

    /// The workloads of one located app: its pod (when it has containers), then its VMs.
    fn workloads_at(&self, l: &Located) -> Vec<AppWorkload> {
        let app = l.app();
        let mut out = Vec::new();
        if !app.containers.is_empty() {
            out.push(self.pod_workload(l));
        }
        if let Some(pods) = &app.pods {
            out.extend(helm_pods(l, pods));
        }
        for vm in &app.vms {
            let reported = l.reported(StatusKind::Vm, &vm.name);
            let control =
                self.hub()
                    .control(&l.edge_id, &l.rec.id, &app.name, WorkloadKind::Vm, &vm.name);
            let up = control.as_ref().is_none_or(|c| c.running);
            let state = reported
                .map(|w| w.state.clone())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "PROVISIONING".into());
            out.push(AppWorkload {
                kind: "TYPE_VIRTUAL_MACHINE".into(),
                id: workload_id(&l.edge_id, &l.rec.id, &app.name, &format!("vm/{}", vm.name)),
                name: vm.name.clone(),
                namespace: app.namespace.clone(),
                create_time: reported
                    .map(|w| w.created_at.clone())
                    .filter(|t| !t.is_empty()),
                workload_ready: state == "RUNNING",
                virtual_machine: Some(VirtualMachine {
                    admin_status: StateOnly {
                        state: if up { "STATE_UP" } else { "STATE_DOWN" }.into(),
                    },
                    status: VirtualMachineStatus {
                        state: format!("STATE_{state}"),
                        message: reported.map(|w| w.message.clone()).unwrap_or_default(),
                    },
                    accelerator: reported
                        .and_then(|w| w.accelerator.as_ref())
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    vnc: vm.vnc,
                    restart_count: reported.map_or(0, |w| w.restarts),
                }),
                pod: None,
            });
        }
        out.truncate(MAX_ITEMS);
        out
    }

    fn pod_workload(&self, l: &Located) -> AppWorkload {
        let app = l.app();
        let mut containers = Vec::new();
        let mut all_running = true;
        let mut failed = false;
        let mut all_succeeded = true;
        let mut create_time: Option<String> = None;
        for c in &app.containers {
            let reported = l.reported(StatusKind::Container, &c.name);
            let status = match reported {
                None => {
                    all_running = false;
                    all_succeeded = false;
                    ContainerStatus {
                        container_state_waiting: Some(ContainerStateWaiting {
                            reason: "ContainerCreating".into(),
                            message: String::new(),
                        }),
                        ..Default::default()
                    }
                }
                Some(w) => {
                    if !w.created_at.is_empty()
                        && create_time.as_ref().is_none_or(|t| w.created_at < *t)
                    {
                        create_time = Some(w.created_at.clone());
                    }
                    container_status(w, &mut all_running, &mut failed, &mut all_succeeded)
                }
            };
            containers.push(Container {
                name: c.name.clone(),
                image_name: reported
                    .map(|w| w.image.clone())
                    .unwrap_or_else(|| c.image.clone()),
                restart_count: reported.map_or(0, |w| w.restarts),
                status,
                init_container: false,
            });
        }
        let state = if all_running {
            "STATE_RUNNING"
        } else if all_succeeded {
            "STATE_SUCCEEDED"
        } else if failed {
            "STATE_FAILED"
        } else {
            "STATE_PENDING"
        };
        AppWorkload {
            kind: "TYPE_POD".into(),
            id: workload_id(&l.edge_id, &l.rec.id, &app.name, "pod"),
            name: pod_name(&l.rec.id, &app.name),
            namespace: app.namespace.clone(),
            create_time,
            workload_ready: all_running,
            virtual_machine: None,
            pod: Some(Pod {
                containers,
                status: StateOnly {
                    state: state.into(),
                },
            }),
        }
    }

    /// `ListAppEndpoints`: per workload with published ports, the edge's addresses and the
    /// ports (ready when the workload runs).
    pub fn list_app_endpoints(
        &self,
        ctx: &Ctx,
        app_id: &str,
        cluster_id: &str,
    ) -> Result<Vec<AppEndpoint>, AppError> {
        ctx.require(Access::FleetRead)?;
        let l = self.locate_app(ctx, app_id, cluster_id)?;
        let agent = self
            .hub()
            .edge(ctx.project.id, &l.edge_id)
            .map(|e| e.agent)
            .unwrap_or_default();
        Ok(endpoints_at(&l, &agent))
    }

    /// Canopy's deployment-wide view (`GET .../resource/workloads/deployments/{id}`): every
    /// workload of the deployment on every edge, each with its endpoints, in edge-name then app
    /// order; `offset` and `page_size` count workloads. One call instead of two per app and edge
    /// (what `canopy workload list` over a 10,000-edge deployment needs). Also the total.
    pub fn list_deployment_workloads(
        &self,
        ctx: &Ctx,
        deployment_id: &str,
        page_size: usize,
        offset: usize,
    ) -> Result<(Vec<DeploymentWorkload>, usize), AppError> {
        ctx.require(Access::FleetRead)?;
        let hub = self.hub();
        let (rec, holders) = hub
            .deployment_holders(ctx.project.id, deployment_id)
            .ok_or_else(|| AppError::NotFound(format!("deployment {deployment_id} not found")))?;
        let count = |i: usize| crate::hub::app_workload_count(&rec.apps[i]);
        // The first edge with a workload at `offset`, by binary search over the running counts.
        let first = holders
            .edges
            .partition_point(|h| h.before + h.workloads <= offset);
        let mut skip = offset.saturating_sub(holders.edges.get(first).map_or(0, |h| h.before));
        let mut out = Vec::new();
        for h in &holders.edges[first..] {
            if out.len() >= page_size {
                break;
            }
            let (edge_id, edge_name) = (&h.edge_id, &h.edge_name);
            let statuses = hub.edge_statuses(ctx.project.id, edge_id);
            let agent = hub
                .edge(ctx.project.id, edge_id)
                .map(|e| e.agent)
                .unwrap_or_default();
            for &i in &h.apps {
                if skip >= count(i) {
                    skip -= count(i);
                    continue;
                }
                let app = &rec.apps[i];
                let l = Located {
                    rec: Arc::clone(&rec),
                    app_index: i,
                    edge_id: edge_id.clone(),
                    edge_name: edge_name.clone(),
                    status: statuses
                        .iter()
                        .find(|s| s.deployment_id == rec.id && s.app == app.name)
                        .cloned(),
                };
                let endpoints = endpoints_at(&l, &agent);
                let app_id = canopy_deploy::status::app_id(&rec.id, &app.name);
                for w in self.workloads_at(&l).into_iter().skip(skip) {
                    if out.len() >= page_size {
                        break;
                    }
                    // A pod's endpoints are named like its containers, a VM's like the VM.
                    let endpoints = endpoints
                        .iter()
                        .filter(|e| match &w.pod {
                            Some(_) => app.containers.iter().any(|c| c.name == e.name),
                            None => e.name == w.name,
                        })
                        .cloned()
                        .collect();
                    out.push(DeploymentWorkload {
                        cluster_id: edge_id.clone(),
                        cluster_name: edge_name.clone(),
                        app_name: app.name.clone(),
                        app_id: app_id.clone(),
                        workload: w,
                        endpoints,
                    });
                }
                skip = 0;
            }
        }
        Ok((out, holders.total))
    }

    /// Resolves a VM by its id for an action or a tunnel (the caller checks access first).
    pub fn resolve_vm(
        &self,
        ctx: &Ctx,
        app_id: &str,
        cluster_id: &str,
        vm_id: &str,
    ) -> Result<WorkloadRef, AppError> {
        let l = self.locate_app(ctx, app_id, cluster_id)?;
        let app = l.app();
        if let Some(vm) = app.vms.iter().find(|vm| {
            workload_id(&l.edge_id, &l.rec.id, &app.name, &format!("vm/{}", vm.name)) == vm_id
        }) {
            return Ok(WorkloadRef {
                edge_id: l.edge_id.clone(),
                edge_name: l.edge_name.clone(),
                deployment_id: l.rec.id.clone(),
                app: app.name.clone(),
                kind: WorkloadKind::Vm,
                name: vm.name.clone(),
            });
        }
        if workload_id(&l.edge_id, &l.rec.id, &app.name, "pod") == vm_id {
            return Err(AppError::Invalid(format!(
                "workload {vm_id} of application {app_id} on edge {} is a pod (containers), not a virtual machine",
                l.edge_name
            )));
        }
        Err(AppError::NotFound(format!(
            "virtual machine {vm_id} of application {app_id} not found on edge {}",
            l.edge_name
        )))
    }

    /// Whether a resolved VM serves a VNC display (its template says `vnc: true`).
    pub fn vm_has_vnc(&self, ctx: &Ctx, vm: &WorkloadRef) -> bool {
        self.hub()
            .deployment(ctx.project.id, &vm.deployment_id)
            .and_then(|rec| {
                rec.apps
                    .iter()
                    .find(|a| a.name == vm.app)
                    .and_then(|a| a.vms.iter().find(|v| v.name == vm.name))
                    .map(|v| v.vnc)
            })
            .unwrap_or(false)
    }

    /// Resolves a container of an app on an edge by its name (for logs).
    pub fn resolve_container(
        &self,
        ctx: &Ctx,
        app_id: &str,
        cluster_id: &str,
        container: &str,
    ) -> Result<WorkloadRef, AppError> {
        let l = self.locate_app(ctx, app_id, cluster_id)?;
        let app = l.app();
        if !app.containers.iter().any(|c| c.name == container) {
            return Err(AppError::NotFound(format!(
                "container {container} of application {app_id} not found on edge {}",
                l.edge_name
            )));
        }
        Ok(WorkloadRef {
            edge_id: l.edge_id.clone(),
            edge_name: l.edge_name.clone(),
            deployment_id: l.rec.id.clone(),
            app: app.name.clone(),
            kind: WorkloadKind::Pod,
            name: container.to_string(),
        })
    }

    /// `StartVirtualMachine`, `StopVirtualMachine`, `RestartVirtualMachine`: records the action
    /// as the VM's standing control and wakes the edge.
    pub async fn vm_action(
        &self,
        ctx: &Ctx,
        app_id: &str,
        cluster_id: &str,
        vm_id: &str,
        action: VmAction,
    ) -> Result<(), AppError> {
        ctx.require(Access::FleetWrite)?;
        let hub = self.hub();
        let mut tx = FleetTx::open(self, ctx.project.id).await?;
        let vm = self.resolve_vm(ctx, app_id, cluster_id, vm_id)?;
        let mut control = hub
            .control(
                &vm.edge_id,
                &vm.deployment_id,
                &vm.app,
                WorkloadKind::Vm,
                &vm.name,
            )
            .unwrap_or(WorkloadControl {
                deployment_id: vm.deployment_id.clone(),
                app: vm.app.clone(),
                kind: WorkloadKind::Vm,
                workload: vm.name.clone(),
                running: true,
                restarts: 0,
            });
        match action {
            VmAction::Start => control.running = true,
            VmAction::Stop => control.running = false,
            // Restarting a stopped VM starts it (and counts as a restart).
            VmAction::Restart => {
                control.running = true;
                control.restarts += 1;
            }
        }
        put_control(&mut tx, ctx, &vm.edge_id, control).await?;
        tx.commit().await?;
        tracing::info!(
            project = %ctx.project.name,
            edge = %vm.edge_name,
            deployment = %vm.deployment_id,
            app = %vm.app,
            vm = %vm.name,
            action = action.verb(),
            "virtual machine action"
        );
        Ok(())
    }

    /// `DeletePod`: the pod `pod` (an app's containers, named by [`pod_name`]; or a pod of a
    /// Helm app, by the name its agent reported) in `namespace` on the edge is recreated, as
    /// Kubernetes recreates a deleted pod. For a Helm pod the standing control names the pod
    /// (`workload`), so the agent recreates that pod alone.
    pub async fn delete_pod(
        &self,
        ctx: &Ctx,
        cluster_id: &str,
        namespace: &str,
        pod: &str,
    ) -> Result<(), AppError> {
        ctx.require(Access::FleetWrite)?;
        let hub = self.hub();
        let mut tx = FleetTx::open(self, ctx.project.id).await?;
        let edge = hub
            .edge(ctx.project.id, cluster_id)
            .ok_or_else(|| super::edges::edge_not_found(cluster_id))?;
        let mut target = None;
        let statuses = hub.edge_statuses(ctx.project.id, &edge.id);
        for rec in hub.deployments(ctx.project.id) {
            for app in &rec.apps {
                if app.namespace != namespace || !hub.edge_holds(&edge.id, &rec.id, &app.name) {
                    continue;
                }
                // A Helm app's pod, by the name the agent reported: that pod alone.
                if app.pods.is_some()
                    && statuses.iter().any(|s| {
                        s.deployment_id == rec.id
                            && s.app == app.name
                            && s.workloads
                                .iter()
                                .any(|w| w.kind == StatusKind::Pod && w.name == pod)
                    })
                {
                    target = Some((rec.id.clone(), app.name.clone(), pod.to_string()));
                }
                if pod_name(&rec.id, &app.name) == pod {
                    if app.containers.is_empty() {
                        break;
                    }
                    target = Some((rec.id.clone(), app.name.clone(), String::new()));
                }
            }
        }
        let Some((deployment_id, app, workload)) = target else {
            return Err(AppError::NotFound(format!(
                "pod {pod} not found in namespace {namespace} on edge {}",
                edge.name
            )));
        };
        let mut control = hub
            .control(&edge.id, &deployment_id, &app, WorkloadKind::Pod, &workload)
            .unwrap_or(WorkloadControl {
                deployment_id: deployment_id.clone(),
                app: app.clone(),
                kind: WorkloadKind::Pod,
                workload: workload.clone(),
                running: true,
                restarts: 0,
            });
        control.restarts += 1;
        put_control(&mut tx, ctx, &edge.id, control).await?;
        tx.commit().await?;
        tracing::info!(
            project = %ctx.project.name,
            edge = %edge.name,
            deployment = %deployment_id,
            app = %app,
            pod = %pod,
            "pod deleted (containers recreated)"
        );
        Ok(())
    }
}

/// Writes a control in a fleet transaction and records it for the hub.
async fn put_control(
    tx: &mut FleetTx<'_>,
    ctx: &Ctx,
    edge_id: &str,
    control: WorkloadControl,
) -> Result<(), AppError> {
    tx.put_workload_control(&canopy_store::WorkloadControlRow {
        project_id: ctx.project.id,
        edge_id: edge_id.to_string(),
        deployment_id: control.deployment_id.clone(),
        app: control.app.clone(),
        kind: match control.kind {
            WorkloadKind::Vm => "vm",
            WorkloadKind::Pod => "pod",
        }
        .into(),
        workload: control.workload.clone(),
        running: control.running,
        restarts: control.restarts,
    })
    .await?;
    tx.record(HubOp::SetControl {
        edge: edge_id.to_string(),
        control,
    });
    Ok(())
}

/// The endpoints of one located app: per workload with published ports, the edge's addresses
/// (`agent`: what its agent reports) and the ports, ready when the workload runs.
fn endpoints_at(l: &Located, agent: &canopy_proto::AgentInfo) -> Vec<AppEndpoint> {
    let app = l.app();
    let edge_hosts = |bind: Option<&str>| -> Vec<Fqdn> {
        let mut hosts: Vec<String> = match bind {
            Some(ip) if !ip.is_empty() && ip != "0.0.0.0" && ip != "::" => vec![ip.into()],
            _ => {
                let mut h = Vec::new();
                if !agent.hostname.is_empty() {
                    h.push(agent.hostname.clone());
                }
                h.extend(agent.addresses.iter().cloned());
                h
            }
        };
        hosts.dedup();
        hosts.into_iter().map(|fqdn| Fqdn { fqdn }).collect()
    };
    let mut out = Vec::new();
    for c in &app.containers {
        let published: Vec<_> = c.ports.iter().filter(|p| p.host_port.is_some()).collect();
        if published.is_empty() {
            continue;
        }
        let ready = l
            .reported(StatusKind::Container, &c.name)
            .is_some_and(|w| w.state == "running");
        out.push(AppEndpoint {
            id: workload_id(
                &l.edge_id,
                &l.rec.id,
                &app.name,
                &format!("endpoint/{}", c.name),
            ),
            name: c.name.clone(),
            fqdns: edge_hosts(published[0].host_ip.as_deref()),
            ports: published
                .iter()
                .map(|p| {
                    let port = p.host_port.unwrap_or(p.container_port);
                    let proto = match p.protocol {
                        Protocol::Tcp => "TCP",
                        Protocol::Udp => "UDP",
                    };
                    EndpointPort {
                        name: format!("{}-{port}", proto.to_lowercase()),
                        value: port,
                        protocol: proto.into(),
                        service_proxy_url: String::new(),
                    }
                })
                .collect(),
            endpoint_status: ready_state(ready),
        });
    }
    for vm in &app.vms {
        if vm.ports.is_empty() {
            continue;
        }
        let ready = l
            .reported(StatusKind::Vm, &vm.name)
            .is_some_and(|w| w.state == "RUNNING");
        out.push(AppEndpoint {
            id: workload_id(
                &l.edge_id,
                &l.rec.id,
                &app.name,
                &format!("endpoint/vm/{}", vm.name),
            ),
            name: vm.name.clone(),
            fqdns: edge_hosts(vm.ports[0].host_ip.as_deref()),
            ports: vm
                .ports
                .iter()
                .map(|p| EndpointPort {
                    name: format!("tcp-{}", p.host_port),
                    value: p.host_port,
                    protocol: "TCP".into(),
                    service_proxy_url: String::new(),
                })
                .collect(),
            endpoint_status: ready_state(ready),
        });
    }
    out.truncate(MAX_ITEMS);
    out
}

fn ready_state(ready: bool) -> StateOnly {
    StateOnly {
        state: if ready {
            "STATE_READY"
        } else {
            "STATE_NOT_READY"
        }
        .into(),
    }
}

/// The chart workload a reported pod belongs to: the one whose name, followed by `-`, starts
/// the pod's name (the longest such name, so `web-db-0` belongs to `web-db`, not `web`).
fn owner_of<'p>(
    pods: &'p canopy_proto::pods::PodApp,
    pod: &str,
) -> Option<&'p canopy_proto::pods::Workload> {
    pods.workloads
        .iter()
        .filter(|w| {
            pod.strip_prefix(w.name.as_str())
                .is_some_and(|rest| rest.starts_with('-') || rest.is_empty())
        })
        .max_by_key(|w| w.name.len())
}

/// The pods of a Helm application on one edge (see the module doc).
fn helm_pods(l: &Located, pods: &canopy_proto::pods::PodApp) -> Vec<AppWorkload> {
    let app = l.app();
    let reported: Vec<&WorkloadStatus> = l
        .status
        .as_ref()
        .map(|s| {
            s.workloads
                .iter()
                .filter(|w| w.kind == StatusKind::Pod)
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    let workload = |name: &str, state: &str, ready: bool, create_time, containers| AppWorkload {
        kind: "TYPE_POD".into(),
        id: workload_id(&l.edge_id, &l.rec.id, &app.name, &format!("pod/{name}")),
        name: name.to_string(),
        namespace: app.namespace.clone(),
        create_time,
        workload_ready: ready,
        virtual_machine: None,
        pod: Some(Pod {
            containers,
            status: StateOnly {
                state: state.into(),
            },
        }),
    };
    for w in &reported {
        // Kubernetes' phase: Pending, Running, Succeeded, Failed (anything else: Unknown).
        let phase = match w.pod_phase() {
            Some(PodPhase::Pending) => "STATE_PENDING",
            Some(PodPhase::Running) => "STATE_RUNNING",
            Some(PodPhase::Succeeded) => "STATE_SUCCEEDED",
            Some(PodPhase::Failed) => "STATE_FAILED",
            _ => "STATE_UNKNOWN",
        };
        let ready = w.ready.unwrap_or(w.health != Health::Unhealthy) && phase == "STATE_RUNNING";
        // The agent reports each (init) container; an agent that predates that reports the
        // pod alone, and its containers are then those of the chart workload, in its phase.
        let containers = if w.containers.is_empty() {
            owner_of(pods, &w.name)
                .map(|o| {
                    o.containers
                        .iter()
                        .map(|c| Container {
                            name: c.name.clone(),
                            image_name: c.image.clone(),
                            restart_count: w.restarts,
                            status: pod_container_status(phase, &w.message),
                            init_container: false,
                        })
                        .collect()
                })
                .unwrap_or_default()
        } else {
            w.containers
                .iter()
                .take(MAX_ITEMS)
                .map(|c| Container {
                    name: c.name.clone(),
                    image_name: c.image.clone(),
                    restart_count: c.restarts,
                    status: reported_container_status(c, &w.message),
                    init_container: c.init,
                })
                .collect()
        };
        let created = Some(w.created_at.clone()).filter(|t| !t.is_empty());
        out.push(workload(&w.name, phase, ready, created, containers));
    }
    for wl in &pods.workloads {
        let seen = reported
            .iter()
            .filter(|r| owner_of(pods, &r.name).is_some_and(|o| o.name == wl.name))
            .count();
        let expected = canopy_deploy::helm::pod_slots(&canopy_proto::pods::PodApp {
            workloads: vec![wl.clone()],
            ..Default::default()
        });
        for i in seen..expected {
            let name = if expected == 1 {
                wl.name.clone()
            } else {
                format!("{}-{i}", wl.name)
            };
            let containers = wl
                .containers
                .iter()
                .map(|c| Container {
                    name: c.name.clone(),
                    image_name: c.image.clone(),
                    restart_count: 0,
                    status: waiting("ContainerCreating", String::new()),
                    init_container: false,
                })
                .collect();
            out.push(workload(&name, "STATE_PENDING", false, None, containers));
        }
    }
    out.truncate(MAX_ITEMS);
    out
}

/// A pod's container as its pod's phase says (the agent's per-container detail, when it
/// reports it, is finer).
fn pod_container_status(phase: &str, message: &str) -> ContainerStatus {
    match phase {
        "STATE_RUNNING" => ContainerStatus {
            container_state_running: Some(serde_json::Map::new()),
            ..Default::default()
        },
        "STATE_SUCCEEDED" | "STATE_FAILED" => ContainerStatus {
            container_state_terminated: Some(ContainerStateTerminated {
                exit_code: i64::from(phase == "STATE_FAILED"),
                message: message.to_string(),
                reason: if phase == "STATE_FAILED" {
                    "Error"
                } else {
                    "Completed"
                }
                .into(),
            }),
            ..Default::default()
        },
        _ => ContainerStatus {
            container_state_waiting: Some(ContainerStateWaiting {
                reason: "ContainerCreating".into(),
                message: message.to_string(),
            }),
            ..Default::default()
        },
    }
}

fn waiting(reason: &str, message: String) -> ContainerStatus {
    ContainerStatus {
        container_state_waiting: Some(ContainerStateWaiting {
            reason: reason.into(),
            message,
        }),
        ..Default::default()
    }
}

/// A Helm pod's container as its agent reports it (engine state, Kubernetes' reason, exit
/// code, restarts, health) onto the reference's running / terminated / waiting, as Kubernetes
/// would show it: a container restarted after exiting is waiting in `CrashLoopBackOff` (with
/// its last exit code in the message, since the reference has no `lastState`); one that exited
/// for good is terminated with its code; one that runs but fails its readiness probe is
/// waiting, reason `Unhealthy`, with the probe's message (as native containers whose health
/// check fails); one not made yet is waiting with the agent's reason (`ContainerCreating`,
/// `PodInitializing`, `ErrImagePull`, ...). `pod_message` stands in for the container's own
/// message when an older agent sent none.
fn reported_container_status(c: &WorkloadStatus, pod_message: &str) -> ContainerStatus {
    let own_or_pod = || {
        if c.message.is_empty() {
            pod_message.to_string()
        } else {
            c.message.clone()
        }
    };
    let exited = matches!(c.state.as_str(), "exited" | "stopped" | "dead");
    if c.reason == "CrashLoopBackOff" || c.state == "restarting" {
        let mut message = c.message.clone();
        if message.is_empty() {
            message = match c.exit_code {
                Some(code) => format!("exited with code {code}"),
                None => "exited".into(),
            };
            if c.restarts > 0 {
                message.push_str(&format!(" after {} restarts", c.restarts));
            }
            message.push_str("; restarted with backoff");
        }
        let reason = if c.reason.is_empty() {
            "CrashLoopBackOff"
        } else {
            &c.reason
        };
        return waiting(reason, message);
    }
    if exited {
        let code = c.exit_code.unwrap_or(0);
        let reason = match c.reason.as_str() {
            "" if code == 0 => "Completed",
            "" => "Error",
            r => r,
        };
        let message = match c.message.as_str() {
            "" if code != 0 => format!("exited with code {code}"),
            m => m.to_string(),
        };
        return ContainerStatus {
            container_state_terminated: Some(ContainerStateTerminated {
                exit_code: code,
                message,
                reason: reason.into(),
            }),
            ..Default::default()
        };
    }
    if c.state == "running" {
        if c.health == Health::Unhealthy {
            return waiting("Unhealthy", own_or_pod());
        }
        return ContainerStatus {
            container_state_running: Some(serde_json::Map::new()),
            ..Default::default()
        };
    }
    let reason = match (c.reason.as_str(), c.state.as_str()) {
        ("", "paused") => "Paused",
        ("", "") | ("", "waiting" | "created" | "configured" | "initialized") => {
            "ContainerCreating"
        }
        ("", other) => other,
        (r, _) => r,
    };
    waiting(reason, c.message.clone())
}

/// Maps a container's engine state onto the reference's running / terminated / waiting.
fn container_status(
    w: &WorkloadStatus,
    all_running: &mut bool,
    failed: &mut bool,
    all_succeeded: &mut bool,
) -> ContainerStatus {
    match w.state.as_str() {
        "running" if w.health != Health::Unhealthy => {
            *all_succeeded = false;
            ContainerStatus {
                container_state_running: Some(serde_json::Map::new()),
                ..Default::default()
            }
        }
        "exited" | "dead" | "stopped" => {
            *all_running = false;
            let code = w.exit_code.unwrap_or(0);
            if code != 0 {
                *failed = true;
                *all_succeeded = false;
            }
            ContainerStatus {
                container_state_terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    message: w.message.clone(),
                    reason: if code == 0 { "Completed" } else { "Error" }.into(),
                }),
                ..Default::default()
            }
        }
        other => {
            *all_running = false;
            *all_succeeded = false;
            let reason = match other {
                "running" => "Unhealthy",
                "created" | "configured" | "initialized" => "ContainerCreating",
                "restarting" => "CrashLoopBackOff",
                "paused" => "Paused",
                "" => "Unknown",
                _ => other,
            };
            ContainerStatus {
                container_state_waiting: Some(ContainerStateWaiting {
                    reason: reason.into(),
                    message: w.message.clone(),
                }),
                ..Default::default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_differ_per_edge() {
        let a = workload_id("e1", "d1", "web", "vm/x");
        assert_eq!(a, workload_id("e1", "d1", "web", "vm/x"));
        assert_ne!(a, workload_id("e2", "d1", "web", "vm/x"));
        assert!(uuid::Uuid::parse_str(&a).is_ok());
    }

    #[test]
    fn pod_names_are_dns_labels() {
        let n = pod_name("0b0e0d5c-0000-4000-8000-000000000000", "web");
        assert!(n.starts_with("web-") && n.len() == 12, "{n}");
        let long = pod_name("d", &"a".repeat(80));
        assert!(long.len() <= 63, "{long}");
    }

    #[test]
    fn exited_containers_are_terminated_with_their_code() {
        let w = WorkloadStatus {
            kind: StatusKind::Container,
            state: "exited".into(),
            exit_code: Some(3),
            ..Default::default()
        };
        let (mut r, mut f, mut s) = (true, false, true);
        let st = container_status(&w, &mut r, &mut f, &mut s);
        assert_eq!(st.container_state_terminated.unwrap().exit_code, 3);
        assert!(!r && f && !s);
    }
}
