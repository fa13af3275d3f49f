//! The wire contract between the control plane and edge agents, shared by both sides (and by
//! nothing else: it must not depend on the server, the store or a driver).
//!
//! The control plane renders, per edge, a [`DesiredState`] numbered by [`Generation`]; the agent
//! persists it, converges its workloads to it through its drivers and answers with
//! [`StatusReport`]s. Everything here is plain data with serde (JSON on the wire, JSON on the
//! agent's disk), so it can be versioned: [`PROTOCOL_VERSION`] changes when a change is not
//! backward compatible, and each side refuses a peer it cannot understand with a clear error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod pods;

/// The protocol version spoken by this build.
pub const PROTOCOL_VERSION: u32 = 1;

/// Monotonic number of an edge's desired state; the agent applies a generation at most once and
/// never goes back to an older one.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Generation(pub u64);

/// Everything one edge should run, across every project deployment that targets it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredState {
    pub generation: Generation,
    pub deployments: Vec<DeploymentInstance>,
    /// Operator actions on this edge's workloads (VM power state, restarts), set through the
    /// resource-manager API. A workload without an entry runs and was never restarted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub controls: Vec<WorkloadControl>,
}

/// An operator's standing instruction for one workload of one app on this edge.
///
/// Actions travel inside the desired state (not as one-shot commands) so they survive an agent
/// restart or a lost connection, and applying them twice is harmless: `running` is a state, and
/// `restarts` is a counter the agent compares with the count it last acted on.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadControl {
    pub deployment_id: String,
    pub app: String,
    pub kind: WorkloadKind,
    /// The VM's name ([`VmSpec::name`]); empty for [`WorkloadKind::Pod`] (all of the app's
    /// containers on this edge).
    #[serde(default)]
    pub workload: String,
    /// `false`: keep the VM powered off (reference `adminStatus` `DOWN`). Always `true` for pods.
    #[serde(default = "yes")]
    pub running: bool,
    /// Bumped by every restart request (VM restart, pod delete). VMs are rebooted (their disks
    /// are kept); containers are recreated, as Kubernetes recreates a deleted pod.
    #[serde(default)]
    pub restarts: u64,
}

fn yes() -> bool {
    true
}

/// What a [`WorkloadControl`] or a [`WorkloadStatus`] is about.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// The containers of one app on one edge (the reference's Pod).
    #[default]
    Pod,
    /// One virtual machine.
    Vm,
}

/// One deployment as one edge must run it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentInstance {
    /// The deployment's id (`deployId`).
    pub deployment_id: String,
    /// The project the deployment belongs to (name), carried in every workload label.
    pub project: String,
    /// Package name and version.
    pub package: String,
    pub package_version: String,
    /// The deployment's own generation: bumped by every update of the deployment. Agents echo
    /// it in [`AppStatus::deployment_generation`], which is how the server knows an edge runs
    /// the current version of a deployment (and not only the current edge generation).
    #[serde(default)]
    pub generation: u64,
    pub apps: Vec<AppInstance>,
}

/// One application of a deployment, rendered for one edge.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppInstance {
    pub name: String,
    pub version: String,
    /// Network namespace of the app: containers of the same namespace resolve each other by name.
    pub namespace: String,
    /// Apps of the same deployment that must be healthy before this one starts.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Bumped whenever the app's rendered spec changes (the container label `generation`).
    pub spec_hash: String,
    pub containers: Vec<ContainerSpec>,
    /// Virtual machines of the app, run next to its containers (by the agent's VM driver).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vms: Vec<VmSpec>,
    /// A Helm-chart application's workloads, translated from the rendered chart by the control
    /// plane (pods with init containers and probes, services, claims). When present the app's
    /// `containers` and `vms` are empty; agents that predate it ignore the field, and the app
    /// then reports no workloads rather than running something else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<pods::PodApp>,
    /// Credentials to pull this app's images (container images, and VM images whose URL starts
    /// with the registry's `server`), when its image registry has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_auth: Option<RegistryAuth>,
}

/// A container as the driver must create it (already rendered: no templates left).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSpec {
    pub name: String,
    /// Fully resolved image reference (`registry/repo:tag`).
    pub image: String,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// CPU limit in cores (e.g. 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory limit in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

/// A virtual machine as the agent must run it (already rendered).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmSpec {
    /// Unique within the app: `[a-z0-9]([a-z0-9-]*[a-z0-9])?`, at most 40 characters.
    pub name: String,
    /// Virtual CPUs (1..=64).
    pub cpus: u32,
    /// Guest memory in MiB (at least 16).
    pub memory_mib: u64,
    pub boot: VmBoot,
    /// Empty data disks, created at the first start and kept until the VM is removed.
    #[serde(default)]
    pub extra_disks: Vec<VmDisk>,
    /// Guest TCP ports published on the edge host.
    #[serde(default)]
    pub ports: Vec<VmPort>,
    /// cloud-init NoCloud data attached as a seed disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_init: Option<VmCloudInit>,
    /// Serve the display over VNC (reachable only through the control plane's tunnel).
    #[serde(default)]
    pub vnc: bool,
    /// What to do when the VM stops without being asked to.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
}

/// How a VM boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VmBoot {
    /// From a disk image (qcow2 or raw) shared by every VM using it: each VM writes to its own
    /// qcow2 overlay.
    Disk { image: VmImage },
    /// From a kernel, an optional initrd and a kernel command line.
    #[serde(rename_all = "camelCase")]
    Kernel {
        kernel: VmImage,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        initrd: Option<VmImage>,
        #[serde(default)]
        cmdline: String,
    },
}

impl Default for VmBoot {
    fn default() -> Self {
        VmBoot::Disk {
            image: VmImage::default(),
        }
    }
}

/// A VM image, identified by its content.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmImage {
    /// `https://`, `http://` or (when the agent allows its directory) `file://`.
    pub url: String,
    /// Lowercase hex SHA-256 of the content; a download that does not match is refused.
    pub sha256: String,
}

/// An empty data disk.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmDisk {
    pub size_gib: u32,
}

/// A guest TCP port published on the edge host.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmPort {
    pub guest_port: u16,
    pub host_port: u16,
    /// Host address to bind; all addresses when absent, like container ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

/// cloud-init NoCloud data.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmCloudInit {
    pub user_data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_data: Option<String>,
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortSpec {
    pub container_port: u16,
    /// Host port; none = not published on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    /// Host address to bind (default all addresses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    #[serde(default)]
    pub protocol: Protocol,
}

/// Transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

/// A named volume mounted into a container; named volumes persist across upgrades.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// A container health check (a command run inside the container; exit 0 = healthy).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    pub command: Vec<String>,
    #[serde(default = "default_interval")]
    pub interval_seconds: u32,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u32,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default)]
    pub start_period_seconds: u32,
}

fn default_interval() -> u32 {
    10
}
fn default_timeout() -> u32 {
    5
}
fn default_retries() -> u32 {
    3
}

/// What to do when a container exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

/// Registry credentials for image pulls. Never logged; `Debug` is redacted.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryAuth {
    pub server: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"********")
            .finish()
    }
}

/// An agent's report of what runs, for one generation. Reports carry a per-agent sequence
/// number so the server can drop duplicates and out-of-order deliveries (idempotent, ordered).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub protocol_version: u32,
    /// Increases with every report the agent sends.
    pub seq: u64,
    /// The generation the agent has applied (or is applying).
    pub generation: Generation,
    pub apps: Vec<AppStatus>,
    /// Who is reporting; sent at least in the first report after the agent starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentInfo>,
}

/// What an agent is and can do (shown on the edge's inventory entry).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentInfo {
    /// The agent's build version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// Workload kinds the agent can run: `containers` (and later `vms`).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The container engine it drives (`podman 5.x`, `docker 27.x`), when connected.
    #[serde(default)]
    pub engine: String,
    /// The VM accelerator available (`kvm` or `tcg`), when the agent runs VMs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub accelerator: String,
    /// The edge host's name and non-loopback addresses: where published ports are reached.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
}

/// HTTP paths of the agent protocol (see `docs/AGENT-PROTOCOL.md`).
pub mod paths {
    /// `POST` [`super::EnrollRequest`] → [`super::EnrollResponse`]; no credential needed.
    pub const ENROLL: &str = "/canopy/v1/agent/enroll";
    /// `GET ?after=G&waitSeconds=W` → 200 [`super::DesiredState`] or 204 (nothing newer).
    pub const DESIRED_STATE: &str = "/canopy/v1/agent/desired-state";
    /// `POST` [`super::StatusReport`] → [`super::StatusAck`].
    pub const STATUS: &str = "/canopy/v1/agent/status";
    /// `GET ?waitSeconds=W` → 200 [`super::TunnelRequests`] or 204 (none asked for): the tunnels
    /// users want opened to this edge's workloads.
    pub const TUNNELS: &str = "/canopy/v1/agent/tunnels";
    /// `GET {TUNNELS}/{id}` with `Connection: Upgrade` and `Upgrade: `
    /// [`super::TUNNEL_UPGRADE`] → `101`, then the connection carries the tunnel's raw bytes.
    pub fn tunnel(id: &str) -> String {
        format!("{TUNNELS}/{id}")
    }
}

/// The `Upgrade` protocol name of an agent's tunnel connection.
pub const TUNNEL_UPGRADE: &str = "canopy-tunnel";

/// Tunnels waiting for the agent to open them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TunnelRequests {
    pub tunnels: Vec<TunnelRequest>,
}

/// One tunnel to open: connect to `target` on the edge, then to [`paths::tunnel`]`(id)` on the
/// control plane, and copy bytes both ways until either side closes. Tunnels are always opened
/// by the agent (outbound), so an edge never needs an inbound connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TunnelRequest {
    /// Random, single use; only the edge it was asked of may open it.
    pub id: String,
    pub target: TunnelTarget,
}

/// What a tunnel connects to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum TunnelTarget {
    /// The VM's VNC server (RFB bytes both ways).
    Vnc {
        deployment_id: String,
        app: String,
        vm: String,
    },
    /// The VM's serial console (bytes both ways; what the guest printed before is not replayed).
    Serial {
        deployment_id: String,
        app: String,
        vm: String,
    },
    /// Logs, agent to control plane only: a container's stdout and stderr, or a VM's serial
    /// log. The last `tail` lines, then (with `follow`) new lines until the tunnel closes.
    Logs {
        deployment_id: String,
        app: String,
        kind: WorkloadKind,
        /// The container's or the VM's name (as in the template).
        workload: String,
        #[serde(default)]
        follow: bool,
        #[serde(default)]
        tail: u32,
    },
}

/// Header carrying [`PROTOCOL_VERSION`] on every agent request.
pub const PROTOCOL_HEADER: &str = "canopy-protocol-version";

/// Longest long-poll the server holds open (seconds); agents ask for less.
pub const MAX_WAIT_SECONDS: u32 = 60;

/// An agent's request to join a project with an enrollment token.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollRequest {
    pub protocol_version: u32,
    /// The enrollment token's secret (`cnt_...`).
    pub token: String,
    /// Requested edge name; the server picks one from the token when empty. Unique per project.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub agent: AgentInfo,
}

impl std::fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("protocol_version", &self.protocol_version)
            .field("token", &"********")
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("agent", &self.agent)
            .finish()
    }
}

/// The server's answer to an enrollment: the edge's identity and its own credential, shown
/// once (the server keeps only a hash).
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollResponse {
    pub edge_id: String,
    pub edge_name: String,
    pub project: String,
    /// Bearer credential of this edge (`cne_...`), valid for this edge only.
    pub credential: String,
    /// How often the agent reports status when nothing changes (seconds).
    pub heartbeat_seconds: u32,
}

impl std::fmt::Debug for EnrollResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollResponse")
            .field("edge_id", &self.edge_id)
            .field("edge_name", &self.edge_name)
            .field("project", &self.project)
            .field("credential", &"********")
            .field("heartbeat_seconds", &self.heartbeat_seconds)
            .finish()
    }
}

/// The server's answer to a status report.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusAck {
    /// The highest sequence number accepted so far (a duplicate or older report is ignored and
    /// answered with the same ack).
    pub seq: u64,
    /// The edge's current desired generation: when it is newer than the agent's, the agent
    /// should fetch (its long-poll will return it anyway).
    pub generation: Generation,
    /// How often the agent reports status when nothing changes (seconds).
    pub heartbeat_seconds: u32,
}

/// State of one app on one edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AppState {
    /// Being created, pulled or started.
    #[default]
    Deploying,
    /// Every container running (and healthy where a health check exists).
    Running,
    /// Something failed; see the message.
    Down,
    /// Waiting for a dependency to become healthy.
    Waiting,
}

/// Status of one app of one deployment on the reporting edge.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppStatus {
    pub deployment_id: String,
    pub app: String,
    pub state: AppState,
    #[serde(default)]
    pub message: String,
    /// [`DeploymentInstance::generation`] of the deployment this status was observed for.
    #[serde(default)]
    pub deployment_generation: u64,
    #[serde(default)]
    pub workloads: Vec<WorkloadStatus>,
}

/// One running (or failed) workload of an app.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    /// `container`, `vm`, or `pod` (a pod of a Helm app, with its `containers`).
    pub kind: String,
    /// The container's or VM's name as in the template; a pod's name (unique on the edge within
    /// the app, stable while its workload's spec does not change).
    pub name: String,
    /// Container image, or the VM's boot image URL.
    pub image: String,
    /// Containers: the engine's state (created, running, exited, ...). VMs: the reference's
    /// `VirtualMachine` state (`RUNNING`, `STOPPED`, `STARTING`, `ERROR_IMAGE_PULL`, ...). Pods:
    /// Kubernetes' phase (`Pending`, `Running`, `Succeeded`, `Failed`).
    pub state: String,
    /// Why the workload is not running, when known (pull error, exit reason, QEMU error).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Containers that exited: the exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// VMs: `UP` when the VM is meant to run, `DOWN` when an operator stopped it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub admin_state: String,
    /// VMs: the accelerator QEMU uses (`kvm` or `tcg`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub accelerator: String,
    /// VMs: a VNC console can be opened through a tunnel.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vnc: bool,
    /// When the workload was created (RFC 3339), when known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub created_at: String,
    /// `healthy`, `unhealthy`, `starting` or empty when there is no health check. VMs: whether
    /// the guest came up (`starting` until it shows it, `unhealthy` past the boot timeout).
    #[serde(default)]
    pub health: String,
    pub restarts: u32,
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// Pods of Helm apps (`kind: "pod"`): the pod's containers, init containers first (each
    /// `kind: "container"`). Empty for every other kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<WorkloadStatus>,
    /// Pods and their containers: ready (running, and its readiness probe passes). `None` for
    /// native containers and VMs (their `health` says it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// Pods' containers: Kubernetes' reason for the state (`ContainerCreating`,
    /// `PodInitializing`, `CrashLoopBackOff`, `ErrImagePull`, `Completed`, `Error`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Pods' containers: an init container (ran to completion before the others).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    /// Pods: the kind of the chart's workload that made the pod (`Deployment`, `StatefulSet`,
    /// `DaemonSet`, `Pod`, `Job`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner_kind: String,
    /// Pods: the name of that workload.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desired_state_round_trips_as_json() {
        let d = DesiredState {
            generation: Generation(7),
            deployments: vec![DeploymentInstance {
                deployment_id: "d1".into(),
                project: "default".into(),
                package: "web".into(),
                package_version: "1.0.0".into(),
                generation: 1,
                apps: vec![AppInstance {
                    name: "server".into(),
                    version: "1.0.0".into(),
                    namespace: "web".into(),
                    spec_hash: "abc".into(),
                    containers: vec![ContainerSpec {
                        name: "httpd".into(),
                        image: "localhost/busybox:test".into(),
                        ports: vec![PortSpec {
                            container_port: 80,
                            host_port: Some(18080),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    registry_auth: Some(RegistryAuth {
                        server: "r".into(),
                        username: "u".into(),
                        password: "p".into(),
                    }),
                    ..Default::default()
                }],
            }],
            ..Default::default()
        };
        let text = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<DesiredState>(&text).unwrap(), d);
        assert!(
            !format!("{d:?}").contains("\"p\""),
            "password in Debug output"
        );
    }
}
