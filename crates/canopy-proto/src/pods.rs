//! Kubernetes-style workloads translated for a container engine: what a Helm-chart application
//! asks of an edge, in Canopy's terms (workloads with their init containers, containers,
//! volumes and probes; services as names in the namespace network and ports on the host;
//! persistent claims). The control plane builds it from the rendered chart (`canopy-helm`'s
//! `analyze`), with every value Kubernetes would default filled in, so the agent never has to
//! know Kubernetes' defaults, and never sees the chart.
//!
//! Carried by [`crate::AppInstance::pods`]. Values that come from a chart's Secrets (env values,
//! files) are never printed by `Debug`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The translated workloads of one application on one edge.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodApp {
    pub workloads: Vec<Workload>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    /// PersistentVolumeClaims of the chart: named volumes that survive upgrades.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<Claim>,
}

/// The Kubernetes kinds that become workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WorkloadKind {
    /// `replicas` identical pods, replaced on change.
    Deployment,
    /// `replicas` pods with stable names (`<name>-0`, ...) and one volume per replica and claim
    /// template.
    StatefulSet,
    /// One pod per edge.
    DaemonSet,
    /// One pod.
    Pod,
    /// Pods that run to completion.
    Job,
}

/// `restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

/// One workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    pub kind: WorkloadKind,
    pub name: String,
    /// The template file it came from.
    pub template: String,
    /// Pods to run (1 for Pod and DaemonSet; a Job's `parallelism`).
    pub replicas: u32,
    /// The pod template's labels (what services select).
    pub labels: BTreeMap<String, String>,
    pub restart_policy: RestartPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stateful: Option<StatefulSpec>,
    /// Run in order, each to completion, before the containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<Container>,
    pub containers: Vec<Container>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_aliases: Vec<HostAlias>,
    /// Pod-level security settings that are not per container (volume group ownership).
    #[serde(default, skip_serializing_if = "PodSecurity::is_empty")]
    pub security: PodSecurity,
    pub termination_grace_period_seconds: i64,
    /// Matched by `ignoredResources`: a change to it alone does not replace it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_changes: bool,
}

/// A Job's completion rules (Kubernetes defaults filled in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    pub completions: u32,
    pub parallelism: u32,
    pub backoff_limit: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<i32>,
}

/// A StatefulSet's identity rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSpec {
    /// The governing (usually headless) service: pods are `<name>-<i>.<serviceName>`.
    pub service_name: String,
    /// `OrderedReady` (start one at a time, in order) rather than `Parallel`.
    pub ordered: bool,
}

/// `hostAliases` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostAlias {
    pub ip: String,
    pub hostnames: Vec<String>,
}

/// Pod-level security settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_group: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supplemental_groups: Vec<i64>,
}

impl PodSecurity {
    fn is_empty(&self) -> bool {
        self.fs_group.is_none() && self.supplemental_groups.is_empty()
    }
}

/// `imagePullPolicy` (Kubernetes' default filled in: `Always` for `:latest` or no tag,
/// `IfNotPresent` otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// One container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub name: String,
    pub image: String,
    pub image_pull_policy: PullPolicy,
    /// Replaces the image's entrypoint when not empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Replaces the image's arguments when not empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// In Kubernetes' order: `envFrom` first, then `env` (later names win).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<Mount>,
    #[serde(default, skip_serializing_if = "ContainerSecurity::is_empty")]
    pub security: ContainerSecurity,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin: bool,
}

/// An environment variable (`Debug` hides the value of one that comes from a Secret).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    /// The value (literal, or resolved from a ConfigMap or Secret of the chart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// A value only known on the edge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<PodField>,
    /// Where the value came from (`ConfigMap/name[key]`), when not literal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The value comes from a Secret (never show it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secret: bool,
}

/// `fieldRef` values known only where the pod runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PodField {
    /// `metadata.name`: the pod's (container's) name on the edge.
    PodName,
    /// `metadata.uid`.
    PodUid,
    /// `status.podIP`: the container's address in the namespace network.
    PodIp,
    /// `spec.nodeName` / `status.hostIP`: the edge's host name / address.
    NodeName,
    HostIp,
    /// `spec.serviceAccountName`.
    ServiceAccountName,
}

/// `TCP` or `UDP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}

/// A container port; `hostPort` publishes it on the edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub container_port: u16,
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

/// A probe, with Kubernetes' defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    pub action: ProbeAction,
    pub initial_delay_seconds: i32,
    pub period_seconds: i32,
    pub timeout_seconds: i32,
    pub success_threshold: i32,
    pub failure_threshold: i32,
}

/// What a probe does (named ports resolved to numbers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProbeAction {
    #[serde(rename_all = "camelCase")]
    HttpGet {
        path: String,
        port: u16,
        https: bool,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        headers: Vec<(String, String)>,
    },
    TcpSocket {
        port: u16,
    },
    Exec {
        command: Vec<String>,
    },
}

/// CPU and memory (requests are recorded; limits are enforced).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit_millis: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_request_millis: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_request_bytes: Option<u64>,
}

impl Resources {
    fn is_empty(&self) -> bool {
        *self == Resources::default()
    }
}

/// The supported subset of a container's security context, pod-level values merged in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSecurity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<i64>,
    /// The agent refuses to start the container as root (uid 0).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub run_as_non_root: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only_root_filesystem: bool,
    /// `allowPrivilegeEscalation: false` → no-new-privileges.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_new_privileges: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities_add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities_drop: Vec<String>,
}

impl ContainerSecurity {
    fn is_empty(&self) -> bool {
        *self == ContainerSecurity::default()
    }
}

/// A volume mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    pub volume: String,
    pub mount_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// A pod volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub name: String,
    pub source: VolumeSource,
}

/// Where a volume's data lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VolumeSource {
    /// A PersistentVolumeClaim: a named volume that survives upgrades.
    #[serde(rename_all = "camelCase")]
    Claim { claim: String },
    /// A StatefulSet claim template: one volume per replica, named
    /// [`claim_template_volume`]`(template, statefulset, ordinal)`.
    #[serde(rename_all = "camelCase")]
    ClaimTemplate {
        template: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size_bytes: Option<u64>,
    },
    /// Scratch space of the pod, removed with the release (`medium: Memory` → tmpfs).
    #[serde(rename_all = "camelCase")]
    EmptyDir {
        memory: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size_limit_bytes: Option<u64>,
    },
    /// Files from a ConfigMap or Secret of the chart.
    #[serde(rename_all = "camelCase")]
    Files {
        /// `ConfigMap/name` or `Secret/name`.
        from: String,
        secret: bool,
        files: Vec<FileEntry>,
    },
}

/// One file of a ConfigMap or Secret volume (`Debug` shows its size, never its content).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    /// Relative to the mount path.
    pub path: String,
    /// UTF-8 text, or base64 when `base64` is set.
    pub content: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub base64: bool,
    /// File mode (Kubernetes' default 0644).
    pub mode: u32,
}

/// The name of a StatefulSet replica's volume for a claim template (Kubernetes' own naming).
pub fn claim_template_volume(template: &str, statefulset: &str, ordinal: u32) -> String {
    format!("{template}-{statefulset}-{ordinal}")
}

/// A PersistentVolumeClaim of the chart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    pub name: String,
    pub template: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<String>,
    /// The claim asks to outlive its release (Helm's annotation
    /// `helm.sh/resource-policy: keep`): its volume is not removed with the app.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep: bool,
}

/// How a service is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceType {
    /// By name inside the namespace network.
    ClusterIP,
    /// By name, and on the edge host at each port's `nodePort`.
    NodePort,
}

/// A Service: a name (and `name.namespace`, `name.namespace.svc...`) in the namespace network
/// for the workloads it selects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub name: String,
    pub template: String,
    #[serde(rename = "type")]
    pub service_type: ServiceType,
    /// `clusterIP: None`: the name resolves to the pods themselves.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub headless: bool,
    pub ports: Vec<ServicePort>,
    pub selector: BTreeMap<String, String>,
    /// Names of the workloads whose pods the selector matches.
    pub workloads: Vec<String>,
}

/// A service port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: u16,
    /// The container port (a name is resolved per workload by [`TargetPort`]).
    pub target_port: TargetPort,
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
}

/// `targetPort`: a number, or the name of a container port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

impl std::fmt::Debug for EnvVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = match (&self.value, self.secret) {
            (Some(_), true) => Some("********"),
            (v, _) => v.as_deref(),
        };
        f.debug_struct("EnvVar")
            .field("name", &self.name)
            .field("value", &value)
            .field("field", &self.field)
            .field("from", &self.from)
            .field("secret", &self.secret)
            .finish()
    }
}

impl std::fmt::Debug for FileEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileEntry")
            .field("path", &self.path)
            .field("content_len", &self.content.len())
            .field("base64", &self.base64)
            .field("mode", &self.mode)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secret_values_or_file_contents() {
        let env = EnvVar {
            name: "PASSWORD".into(),
            value: Some("hunter2".into()),
            field: None,
            from: Some("Secret/db[password]".into()),
            secret: true,
        };
        let file = FileEntry {
            path: "key.pem".into(),
            content: "PRIVATE-KEY-BYTES".into(),
            base64: false,
            mode: 0o400,
        };
        let shown = format!("{env:?} {file:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("PRIVATE-KEY"),
            "{shown}"
        );
        let plain = EnvVar {
            secret: false,
            ..env
        };
        assert!(format!("{plain:?}").contains("hunter2"));
    }
}
