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

mod open_enum;
pub mod pods;

use open_enum::open_enum;

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
    #[serde(
        default,
        deserialize_with = "open_enum::empty_is_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub accelerator: Option<Accelerator>,
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

/// Longest long-poll the server holds open (seconds); agents ask for less. A longer wait is
/// capped, never refused, so agents and servers of different releases agree whatever they
/// ask: a server of an earlier release (whose maximum was 60) answers a longer long-poll after
/// 60 s, which costs the edge more bytes but changes nothing else. 300 s since issue 13: an
/// idle edge's traffic is mostly its long-polls' request and answer, so fewer of them is what
/// brings a metered link under 1 MB a day (`docs/AGENT-PROTOCOL.md`, "Connection and idle cost").
pub const MAX_WAIT_SECONDS: u32 = 300;

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

open_enum! {
    /// What a [`WorkloadStatus`] reports on. Required on the wire; the default (a container)
    /// is only for building values in code.
    #[derive(Default)]
    pub enum StatusKind {
        /// A container (of a native app, or of a pod).
        #[default]
        Container = "container",
        /// A virtual machine.
        Vm = "vm",
        /// A pod of a Helm app, with its `containers`.
        Pod = "pod",
    }
}

open_enum! {
    /// A workload's health: its health check's (containers), its readiness (pods), whether the
    /// guest came up (VMs). Always written, as `""` when there is none (older control planes
    /// read the field as a string).
    #[derive(Default)]
    pub enum Health {
        /// No health check: `""`. (The container engine's own `none` is the agent's to
        /// translate; on the wire it would be an [`Health::Other`], kept as it came.)
        #[default]
        None = "",
        /// Checked, not passed yet (VMs: the guest has not shown it is up).
        Starting = "starting",
        Healthy = "healthy",
        /// Failing (VMs: past the boot timeout).
        Unhealthy = "unhealthy",
    }
}

open_enum! {
    /// A VM's administrative state: whether it is meant to run.
    pub enum AdminState {
        Up = "UP",
        /// An operator stopped it.
        Down = "DOWN",
    }
}

open_enum! {
    /// The accelerator QEMU runs a guest with.
    pub enum Accelerator {
        Kvm = "kvm",
        Tcg = "tcg",
    }
}

open_enum! {
    /// Kubernetes' pod phase: a pod's [`WorkloadStatus::state`] (see
    /// [`WorkloadStatus::pod_phase`]). Lower-case spellings are read too (the control plane
    /// always accepted them); `state` itself stays the string the agent sent.
    pub enum PodPhase {
        Pending = "Pending" | "pending",
        Running = "Running" | "running",
        Succeeded = "Succeeded" | "succeeded",
        Failed = "Failed" | "failed",
        Unknown = "Unknown" | "unknown",
    }
}

/// One running (or failed) workload of an app.
///
/// The short words (`kind`, `health`, `adminState`, `accelerator`) are open enums: a word an
/// older build does not know is kept as `Other` rather than failing the report. `state` stays a
/// string: it carries the container engine's states, the reference's VM states and pods'
/// phases (typed by [`WorkloadStatus::pod_phase`]), three vocabularies the `kind` selects.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    pub kind: StatusKind,
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
    /// VMs: `UP` when the VM is meant to run, `DOWN` when an operator stopped it. Absent
    /// (and an empty string read as absent) for other kinds.
    #[serde(
        default,
        deserialize_with = "open_enum::empty_is_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub admin_state: Option<AdminState>,
    /// VMs: the accelerator QEMU uses (`kvm` or `tcg`).
    #[serde(
        default,
        deserialize_with = "open_enum::empty_is_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub accelerator: Option<Accelerator>,
    /// VMs: a VNC console can be opened through a tunnel.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vnc: bool,
    /// When the workload was created (RFC 3339), when known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub created_at: String,
    /// `healthy`, `unhealthy`, `starting` or empty when there is no health check. VMs: whether
    /// the guest came up (`starting` until it shows it, `unhealthy` past the boot timeout).
    #[serde(default)]
    pub health: Health,
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

impl WorkloadStatus {
    /// A pod's phase (its `state`), when this reports a pod.
    pub fn pod_phase(&self) -> Option<PodPhase> {
        (self.kind == StatusKind::Pod).then(|| PodPhase::from(self.state.as_str()))
    }
}

/// Bounds of what an agent sends (`docs/AGENT-PROTOCOL.md`, "Bounds"), so agents can know them.
/// Lengths are in bytes of UTF-8. The control plane refuses a request over a bound with `400`
/// naming the field and the bound, and keeps nothing of it; free-text messages are cut instead
/// (a long error is better shown in part than the whole report refused), and so is a host's list
/// of addresses.
pub mod bounds {
    /// Largest status report body.
    pub const MAX_STATUS_BODY: usize = 4 * 1024 * 1024;
    /// Largest body of the other agent requests (enrollment, tunnel errors).
    pub const MAX_AGENT_BODY: usize = 64 * 1024;
    /// Apps in one status report.
    pub const MAX_APPS: usize = 1_000;
    /// Workloads of one app in a status report.
    pub const MAX_WORKLOADS_PER_APP: usize = 100;
    /// (Init) containers of one pod in a status report (a pod's containers report nothing
    /// nested).
    pub const MAX_CONTAINERS_PER_POD: usize = 100;
    /// Workloads in one status report, all apps together.
    pub const MAX_WORKLOADS: usize = 5_000;
    /// Messages (an app's, a workload's): longer ones are cut to this, ending with `…`.
    pub const MAX_MESSAGE: usize = 4_096;
    /// Deployment ids.
    pub const MAX_ID: usize = 64;
    /// App and workload names, and the host name (a DNS name is at most 253).
    pub const MAX_NAME: usize = 253;
    /// A workload's image (container image reference or VM image URL).
    pub const MAX_IMAGE: usize = 2_048;
    /// Short words: a workload's kind, state, health, admin state, accelerator, creation time,
    /// Kubernetes reason and owner kind;
    /// the agent's version and accelerator; each capability; each address.
    pub const MAX_WORD: usize = 64;
    /// The container engine's description (`podman 5.4.2`).
    pub const MAX_ENGINE: usize = 256;
    /// Capabilities of an agent.
    pub const MAX_CAPABILITIES: usize = 16;
    /// Addresses of the edge host: more are dropped (the first ones are kept).
    pub const MAX_ADDRESSES: usize = 64;
    /// Published ports of one workload.
    pub const MAX_PORTS: usize = 256;
    /// Longest tunnel error message kept (characters; control characters become spaces).
    pub const MAX_TUNNEL_ERROR: usize = 1_000;
}

/// A field of an agent's request over its bound: which (`apps[3].workloads[0].name`) and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundError {
    pub field: String,
    pub problem: String,
}

impl std::fmt::Display for BoundError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.field, self.problem)
    }
}

impl std::error::Error for BoundError {}

fn too_long(field: impl Into<String>, value: &str, max: usize) -> Result<(), BoundError> {
    if value.len() > max {
        return Err(BoundError {
            field: field.into(),
            problem: format!("is {} bytes long; at most {max} are allowed", value.len()),
        });
    }
    Ok(())
}

fn too_many(field: impl Into<String>, count: usize, max: usize) -> Result<(), BoundError> {
    if count > max {
        return Err(BoundError {
            field: field.into(),
            problem: format!("has {count} entries; at most {max} are allowed"),
        });
    }
    Ok(())
}

/// Cuts `text` to at most `max` bytes (at a character boundary), ending with `…` when cut.
pub fn cut_message(text: &mut String, max: usize) {
    const MARK: &str = "…";
    if text.len() <= max {
        return;
    }
    let mut end = max.saturating_sub(MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(MARK);
}

impl StatusReport {
    /// Applies [`bounds`]: cuts messages and the host's addresses, refuses anything else over
    /// its bound (the first field found).
    pub fn bound(&mut self) -> Result<(), BoundError> {
        use bounds::*;
        too_many("apps", self.apps.len(), MAX_APPS)?;
        let workloads: usize = self.apps.iter().map(|a| a.workloads.len()).sum();
        if workloads > MAX_WORKLOADS {
            return Err(BoundError {
                field: "apps[].workloads".into(),
                problem: format!(
                    "has {workloads} entries in all; at most {MAX_WORKLOADS} are allowed"
                ),
            });
        }
        for (i, a) in self.apps.iter_mut().enumerate() {
            let at = |f: &str| format!("apps[{i}].{f}");
            too_long(at("deploymentId"), &a.deployment_id, MAX_ID)?;
            too_long(at("app"), &a.app, MAX_NAME)?;
            cut_message(&mut a.message, MAX_MESSAGE);
            too_many(at("workloads"), a.workloads.len(), MAX_WORKLOADS_PER_APP)?;
            for (j, w) in a.workloads.iter_mut().enumerate() {
                let at = format!("apps[{i}].workloads[{j}]");
                w.bound(&at)?;
                too_many(
                    format!("{at}.containers"),
                    w.containers.len(),
                    MAX_CONTAINERS_PER_POD,
                )?;
                for (k, c) in w.containers.iter_mut().enumerate() {
                    c.bound(&format!("{at}.containers[{k}]"))?;
                    too_many(
                        format!("{at}.containers[{k}].containers"),
                        c.containers.len(),
                        0,
                    )?;
                }
            }
        }
        if let Some(agent) = &mut self.agent {
            agent.bound("agent")?;
        }
        Ok(())
    }
}

impl WorkloadStatus {
    /// Applies [`bounds`] to this workload's own fields (not its `containers`), under `at`.
    fn bound(&mut self, at: &str) -> Result<(), BoundError> {
        use bounds::*;
        let at = |f: &str| format!("{at}.{f}");
        too_long(at("kind"), self.kind.as_str(), MAX_WORD)?;
        too_long(at("name"), &self.name, MAX_NAME)?;
        too_long(at("image"), &self.image, MAX_IMAGE)?;
        too_long(at("state"), &self.state, MAX_WORD)?;
        cut_message(&mut self.message, MAX_MESSAGE);
        too_long(
            at("adminState"),
            self.admin_state.as_ref().map_or("", AdminState::as_str),
            MAX_WORD,
        )?;
        too_long(
            at("accelerator"),
            self.accelerator.as_ref().map_or("", Accelerator::as_str),
            MAX_WORD,
        )?;
        too_long(at("createdAt"), &self.created_at, MAX_WORD)?;
        too_long(at("health"), self.health.as_str(), MAX_WORD)?;
        too_long(at("reason"), &self.reason, MAX_WORD)?;
        too_long(at("ownerKind"), &self.owner_kind, MAX_WORD)?;
        too_long(at("owner"), &self.owner, MAX_NAME)?;
        too_many(at("ports"), self.ports.len(), MAX_PORTS)?;
        for (k, p) in self.ports.iter().enumerate() {
            if let Some(ip) = &p.host_ip {
                too_long(at(&format!("ports[{k}].hostIp")), ip, MAX_WORD)?;
            }
        }
        Ok(())
    }
}

impl AgentInfo {
    /// Applies [`bounds`] to the fields under `at` (`agent`): keeps the first
    /// [`bounds::MAX_ADDRESSES`] addresses, refuses anything else over its bound.
    pub fn bound(&mut self, at: &str) -> Result<(), BoundError> {
        use bounds::*;
        let at = |f: &str| format!("{at}.{f}");
        too_long(at("version"), &self.version, MAX_WORD)?;
        too_many(
            at("capabilities"),
            self.capabilities.len(),
            MAX_CAPABILITIES,
        )?;
        for (i, c) in self.capabilities.iter().enumerate() {
            too_long(at(&format!("capabilities[{i}]")), c, MAX_WORD)?;
        }
        too_long(at("engine"), &self.engine, MAX_ENGINE)?;
        too_long(
            at("accelerator"),
            self.accelerator.as_ref().map_or("", Accelerator::as_str),
            MAX_WORD,
        )?;
        too_long(at("hostname"), &self.hostname, MAX_NAME)?;
        self.addresses.truncate(MAX_ADDRESSES);
        for (i, a) in self.addresses.iter().enumerate() {
            too_long(at(&format!("addresses[{i}]")), a, MAX_WORD)?;
        }
        Ok(())
    }
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

#[cfg(test)]
mod bound_tests {
    use super::*;

    fn report() -> StatusReport {
        StatusReport {
            protocol_version: PROTOCOL_VERSION,
            seq: 1,
            apps: vec![AppStatus {
                deployment_id: "d".into(),
                app: "a".into(),
                workloads: vec![WorkloadStatus {
                    kind: StatusKind::Container,
                    name: "w".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            agent: Some(AgentInfo::default()),
            ..Default::default()
        }
    }

    #[test]
    fn messages_are_cut_at_a_character_boundary() {
        let mut r = report();
        r.apps[0].message = "é".repeat(5_000);
        r.apps[0].workloads[0].message = "x".repeat(bounds::MAX_MESSAGE);
        r.bound().unwrap();
        let m = &r.apps[0].message;
        assert!(m.len() <= bounds::MAX_MESSAGE && m.len() > bounds::MAX_MESSAGE - 8);
        assert!(m.ends_with('…'));
        assert_eq!(r.apps[0].workloads[0].message.len(), bounds::MAX_MESSAGE);
    }

    #[test]
    fn fields_over_their_bounds_are_named() {
        type Change = Box<dyn Fn(&mut StatusReport)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|r| r.agent.as_mut().unwrap().hostname = "h".repeat(100_000)),
                "agent.hostname is 100000 bytes long; at most 253",
            ),
            (
                Box::new(|r| r.apps[0].workloads[0].name = "n".repeat(254)),
                "apps[0].workloads[0].name is 254 bytes long",
            ),
            (
                Box::new(|r| {
                    r.apps[0].workloads = vec![WorkloadStatus::default(); 101];
                }),
                "apps[0].workloads has 101 entries; at most 100",
            ),
            (
                Box::new(|r| r.apps = vec![AppStatus::default(); 1_001]),
                "apps has 1001 entries; at most 1000",
            ),
            (
                Box::new(|r| {
                    let app = AppStatus {
                        workloads: vec![WorkloadStatus::default(); 100],
                        ..Default::default()
                    };
                    r.apps = vec![app; 51];
                }),
                "apps[].workloads has 5100 entries in all",
            ),
            (
                Box::new(|r| {
                    r.agent.as_mut().unwrap().capabilities = vec!["c".into(); 17];
                }),
                "agent.capabilities has 17 entries",
            ),
            (
                Box::new(|r| {
                    r.apps[0].workloads[0].containers = vec![WorkloadStatus::default(); 101];
                }),
                "apps[0].workloads[0].containers has 101 entries; at most 100",
            ),
            (
                Box::new(|r| {
                    let c = WorkloadStatus {
                        reason: "r".repeat(65),
                        ..Default::default()
                    };
                    r.apps[0].workloads[0].containers = vec![WorkloadStatus::default(), c];
                }),
                "apps[0].workloads[0].containers[1].reason is 65 bytes long",
            ),
            (
                Box::new(|r| {
                    let c = WorkloadStatus {
                        containers: vec![WorkloadStatus::default()],
                        ..Default::default()
                    };
                    r.apps[0].workloads[0].containers = vec![c];
                }),
                "apps[0].workloads[0].containers[0].containers has 1 entries; at most 0",
            ),
            (
                Box::new(|r| {
                    r.apps[0].workloads[0].health = Health::Other("h".repeat(65));
                }),
                "apps[0].workloads[0].health is 65 bytes long",
            ),
        ];
        for (change, want) in cases {
            let mut r = report();
            change(&mut r);
            let e = r.bound().unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn extra_addresses_are_dropped() {
        let mut r = report();
        r.agent.as_mut().unwrap().addresses = (0..100).map(|i| format!("10.0.0.{i}")).collect();
        r.bound().unwrap();
        assert_eq!(r.agent.unwrap().addresses.len(), bounds::MAX_ADDRESSES);
    }
}
