//! Helm-chart applications in a deployment: the part of rendering that is pure.
//!
//! A Helm application cannot be rendered here: its chart must be fetched from a registry and
//! run through the Helm CLI, which is network and process work the control plane does outside
//! its writers' lock. So rendering a deployment is two passes over the same rules
//! ([`crate::render::render_deployment`]):
//!
//! 1. every Helm application yields a [`HelmRequest`]: everything its render depends on
//!    (profile, override values with real secrets, namespace, release name, registries with
//!    their credentials, chart, `ignoredResources`, the project policy), fingerprinted;
//! 2. the control plane renders the requests it has no result for (fetch, `helm template`,
//!    translation, policy) into [`HelmRendered`]s, keyed by fingerprint, and renders the
//!    deployment again: an application whose request has a result gets its pods.
//!
//! If anything a render depends on changed in between (the catalog, the policy, a registry's
//! credentials), the request's fingerprint changes and the application is rendered again:
//! a result is never used for inputs other than its own.
//!
//! Also here: the project policy applied to translated workloads ([`enforce_policy`]) and the
//! number of pods an application runs on an edge ([`pod_slots`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use canopy_core::catalog::{Profile, Registry, ResourceReference};
use canopy_core::policy::ProjectPolicy;
use canopy_core::template::Workloads;
use canopy_proto::pods::{PodApp, WorkloadKind};
use canopy_proto::{ContainerSpec, PortSpec};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::model::AppWarning;

/// What one Helm application of a deployment is rendered from. `Debug` shows neither override
/// values nor credentials.
#[derive(Clone, PartialEq)]
pub struct HelmRequest {
    /// The application's name and version in the package.
    pub app: String,
    pub app_version: String,
    /// The application profile used (empty when the application has none).
    pub profile_name: String,
    pub profile: Option<Profile>,
    /// The deployment's override values for the application: secrets restored, parameter
    /// templates applied (types coerced, mandatory ones present). `null` when none.
    pub overrides: Value,
    /// The namespace (`.Release.Namespace`), by the same rules as native applications.
    pub namespace: String,
    /// The release name (`.Release.Name`): the application's `App.id` (`b-` and 16 hex
    /// digits), as the reference names its Fleet bundle, which Helm uses as release name.
    pub release: String,
    /// The organization and project, for the reference's `%OrgName%` and `%ProjectName%`.
    pub org: String,
    pub project: String,
    /// The application's HELM registry, with its credentials.
    pub helm_registry: Registry,
    /// The application's image registry, with its credentials (`%ImageRegistryURL%`, pulls).
    pub image_registry: Option<Registry>,
    pub chart_name: String,
    pub chart_version: String,
    pub ignored_resources: Vec<ResourceReference>,
    /// The project policy the translated workloads must satisfy.
    pub policy: ProjectPolicy,
}

impl fmt::Debug for HelmRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HelmRequest")
            .field("app", &format!("{}:{}", self.app, self.app_version))
            .field("profile", &self.profile_name)
            .field(
                "chart",
                &format!("{}:{}", self.chart_name, self.chart_version),
            )
            .field("registry", &self.helm_registry.name)
            .field("namespace", &self.namespace)
            .field("release", &self.release)
            .finish_non_exhaustive()
    }
}

/// A registry as it counts for a render: where, and (hashed) with which credentials.
fn registry_identity(r: &Registry) -> Value {
    let h = |s: &Option<String>| s.as_deref().map(|s| hex(&Sha256::digest(s.as_bytes())));
    json!({
        "name": r.name,
        "rootUrl": r.root_url,
        "username": r.username,
        "authTokenSha256": h(&r.auth_token),
        "cacertsSha256": h(&r.cacerts),
    })
}

impl HelmRequest {
    /// `name:version` of the application.
    pub fn app_key(&self) -> String {
        format!("{}:{}", self.app, self.app_version)
    }

    /// A hash of everything the render depends on (credentials and secrets only hashed):
    /// equal requests, equal fingerprints, whatever the order of mappings.
    pub fn fingerprint(&self) -> String {
        let doc = json!({
            "v": "canopy-helm-request/1",
            "app": self.app,
            "appVersion": self.app_version,
            "profileName": self.profile_name,
            "profile": self.profile,
            "overrides": self.overrides,
            "namespace": self.namespace,
            "release": self.release,
            "org": self.org,
            "project": self.project,
            "helmRegistry": registry_identity(&self.helm_registry),
            "imageRegistry": self.image_registry.as_ref().map(registry_identity),
            "chartName": self.chart_name,
            "chartVersion": self.chart_version,
            "ignoredResources": self.ignored_resources,
            "policy": self.policy,
        });
        let mut text = String::new();
        crate::render::canonical_json(&doc, &mut text);
        hex(&Sha256::digest(text.as_bytes()))
    }
}

/// A rendered Helm application, for the request of [`HelmRendered::fingerprint`].
#[derive(Clone, PartialEq)]
pub struct HelmRendered {
    /// [`HelmRequest::fingerprint`] of the request it answers.
    pub fingerprint: String,
    /// What the edges run (the project policy applied: default limits filled in).
    pub pods: PodApp,
    /// What was skipped or only partly translated (shown on the deployment).
    pub warnings: Vec<AppWarning>,
    /// Helm's output (kept with the deployment: `.../apps/{app}/manifest`).
    pub manifest: Arc<str>,
    /// The chart archive's digest (`sha256:...`) and the render's key.
    pub chart_digest: String,
    pub render_key: String,
}

impl fmt::Debug for HelmRendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HelmRendered")
            .field("fingerprint", &self.fingerprint)
            .field("workloads", &self.pods.workloads.len())
            .field("warnings", &self.warnings.len())
            .field("manifest_bytes", &self.manifest.len())
            .field("chart_digest", &self.chart_digest)
            .finish()
    }
}

/// Rendered Helm applications by request fingerprint.
pub type HelmRenders = BTreeMap<String, Arc<HelmRendered>>;

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A policy violation of a Helm application: where (the workload and container, the field)
/// and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PolicyViolation {
    /// `Deployment web, container nginx, image` (or `helmRegistry` for the chart's registry).
    pub field: String,
    pub message: String,
}

/// Applies the project policy to a Helm application's translated workloads, with the same rules
/// as native applications ([`ProjectPolicy::enforce`]): every image (init containers too) must
/// come from an allowed registry, every `hostPort` and `nodePort` must be in the allowed range,
/// containers without a CPU or memory limit get the default, and no limit may exceed the
/// maximum. `registry_url` is the application's image registry's `rootUrl`.
pub fn enforce_policy(
    policy: &ProjectPolicy,
    pods: &mut PodApp,
    registry_url: Option<&str>,
) -> Result<(), PolicyViolation> {
    // The containers as the policy sees them, and where each came from.
    let mut w = Workloads::default();
    let mut places: Vec<(usize, bool, usize)> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (wi, wl) in pods.workloads.iter().enumerate() {
        let all = wl
            .init_containers
            .iter()
            .enumerate()
            .map(|(ci, c)| (true, ci, c))
            .chain(
                wl.containers
                    .iter()
                    .enumerate()
                    .map(|(ci, c)| (false, ci, c)),
            );
        for (init, ci, c) in all {
            places.push((wi, init, ci));
            names.push(format!(
                "{:?} {}, {}container {}",
                wl.kind,
                wl.name,
                if init { "init " } else { "" },
                c.name
            ));
            w.containers.push(ContainerSpec {
                name: c.name.clone(),
                image: c.image.clone(),
                ports: c
                    .ports
                    .iter()
                    .map(|p| PortSpec {
                        container_port: p.container_port,
                        host_port: p.host_port,
                        ..Default::default()
                    })
                    .collect(),
                cpus: c.resources.cpu_limit_millis.map(|m| m as f64 / 1000.0),
                memory_bytes: c.resources.memory_limit_bytes,
                ..Default::default()
            });
        }
    }
    // Node ports are host ports too: checked as ports of one more (image-less) container.
    let node_ports: Vec<(String, u16)> = pods
        .services
        .iter()
        .flat_map(|s| {
            s.ports
                .iter()
                .filter_map(move |p| p.node_port.map(|n| (s.name.clone(), n)))
        })
        .collect();
    for (service, port) in &node_ports {
        let r = policy.allowed_host_ports;
        if !(r.min..=r.max).contains(port) {
            return Err(PolicyViolation {
                field: format!("Service {service}, nodePort"),
                message: format!(
                    "host port {port} is not allowed by the project policy: allowedHostPorts is \
                     {}-{}",
                    r.min, r.max
                ),
            });
        }
    }
    policy.enforce(&mut w, registry_url).map_err(|e| {
        // `containers[i].rest` → the workload and container it names.
        let (who, rest) = e
            .field
            .strip_prefix("containers[")
            .and_then(|s| s.split_once("]."))
            .and_then(|(i, rest)| Some((names.get(i.parse::<usize>().ok()?)?.clone(), rest)))
            .unwrap_or_else(|| (String::new(), e.field.as_str()));
        PolicyViolation {
            field: if who.is_empty() {
                rest.to_string()
            } else {
                format!("{who}, {rest}")
            },
            message: e.message.clone(),
        }
    })?;
    // Defaults filled in by the policy go back into the pods.
    for ((wi, init, ci), spec) in places.into_iter().zip(&w.containers) {
        let wl = &mut pods.workloads[wi];
        let c = if init {
            &mut wl.init_containers[ci]
        } else {
            &mut wl.containers[ci]
        };
        if c.resources.cpu_limit_millis.is_none() {
            c.resources.cpu_limit_millis = spec.cpus.map(|c| (c * 1000.0).round() as u64);
        }
        if c.resources.memory_limit_bytes.is_none() {
            c.resources.memory_limit_bytes = spec.memory_bytes;
        }
    }
    Ok(())
}

/// Checks that the chart's registry is one the project policy allows images from: the policy's
/// `allowedImageRegistries` also bound where the control plane fetches charts from (an OCI
/// chart `oci://host/path/chart` is a registry location like an image's; a repository's
/// `https://host/path` too), so a catalog writer cannot make the control plane fetch from hosts
/// the administrator did not allow.
pub fn check_chart_registry(
    policy: &ProjectPolicy,
    root_url: &str,
    chart_name: &str,
    chart_version: &str,
) -> Result<(), PolicyViolation> {
    let location = root_url
        .trim()
        .split_once("://")
        .map_or(root_url, |(_, rest)| rest)
        .trim_end_matches('/');
    // Shaped like an image reference so the registry rule reads it the same way.
    let reference = format!(
        "{location}/{chart_name}:{}",
        chart_version.replace('+', "_")
    );
    let mut w = Workloads::default();
    w.containers.push(ContainerSpec {
        name: "chart".into(),
        image: reference.clone(),
        ..Default::default()
    });
    // Only the registry rule: no resources are checked for this pseudo-container.
    let only_registries = ProjectPolicy {
        allowed_image_registries: policy.allowed_image_registries.clone(),
        ..ProjectPolicy::default()
    };
    only_registries
        .enforce(&mut w, None)
        .map_err(|e| PolicyViolation {
            field: "helmRegistry".into(),
            message: format!(
                "chart {root_url}/{chart_name}:{chart_version} {}",
                e.message
                    .split_once("\" ")
                    .map_or(e.message.as_str(), |(_, rest)| rest)
            ),
        })
}

/// How many pods a Helm application runs on one edge (at most 100, the reference's
/// `maxItems`): replicas of Deployments and StatefulSets, one per DaemonSet and Pod, a Job's
/// completions. What the resource manager lists.
pub fn pod_slots(pods: &PodApp) -> usize {
    let n: u64 = pods
        .workloads
        .iter()
        .map(|w| match w.kind {
            WorkloadKind::Deployment | WorkloadKind::StatefulSet => u64::from(w.replicas),
            WorkloadKind::DaemonSet | WorkloadKind::Pod => 1,
            WorkloadKind::Job => u64::from(
                w.job
                    .as_ref()
                    .map_or(w.replicas, |j| j.completions.max(j.parallelism)),
            ),
        })
        .sum();
    n.min(100) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_proto::pods::{
        Container, Port, Protocol, PullPolicy, Resources, RestartPolicy, Service, ServicePort,
        ServiceType, TargetPort, Workload,
    };

    fn container(name: &str, image: &str, host_port: Option<u16>) -> Container {
        Container {
            name: name.into(),
            image: image.into(),
            image_pull_policy: PullPolicy::IfNotPresent,
            command: vec![],
            args: vec![],
            working_dir: None,
            env: vec![],
            ports: vec![Port {
                name: None,
                container_port: 80,
                protocol: Protocol::Tcp,
                host_port,
                host_ip: None,
            }],
            liveness_probe: None,
            readiness_probe: None,
            startup_probe: None,
            resources: Resources::default(),
            volume_mounts: vec![],
            security: Default::default(),
            tty: false,
            stdin: false,
        }
    }

    fn workload(kind: WorkloadKind, name: &str, replicas: u32, c: Vec<Container>) -> Workload {
        Workload {
            kind,
            name: name.into(),
            template: format!("templates/{name}.yaml"),
            replicas,
            labels: Default::default(),
            restart_policy: RestartPolicy::Always,
            job: None,
            stateful: None,
            init_containers: vec![],
            containers: c,
            volumes: vec![],
            hostname: None,
            host_aliases: vec![],
            security: Default::default(),
            termination_grace_period_seconds: 30,
            ignore_changes: false,
        }
    }

    fn app() -> PodApp {
        let mut web = workload(
            WorkloadKind::Deployment,
            "web",
            2,
            vec![container("nginx", "registry.example.com/team/web:1", None)],
        );
        web.init_containers = vec![container(
            "setup",
            "registry.example.com/team/setup:1",
            None,
        )];
        PodApp {
            workloads: vec![
                web,
                workload(
                    WorkloadKind::StatefulSet,
                    "db",
                    3,
                    vec![container(
                        "pg",
                        "registry.example.com/team/pg:15",
                        Some(8443),
                    )],
                ),
            ],
            services: vec![Service {
                name: "web".into(),
                template: "templates/service.yaml".into(),
                service_type: ServiceType::NodePort,
                headless: false,
                ports: vec![ServicePort {
                    name: None,
                    port: 80,
                    target_port: TargetPort::Number(80),
                    protocol: Protocol::Tcp,
                    node_port: Some(30080),
                }],
                selector: Default::default(),
                workloads: vec!["web".into()],
            }],
            claims: vec![],
        }
    }

    fn policy(json: Value) -> ProjectPolicy {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn defaults_fill_in_and_every_container_is_checked() {
        let mut pods = app();
        let p = policy(json!({
            "allowedImageRegistries": ["registry.example.com/team"],
            "allowedHostPorts": {"min": 8000, "max": 32000},
            "defaultResources": {"cpus": 0.5, "memory": "64Mi"},
        }));
        enforce_policy(&p, &mut pods, None).unwrap();
        let init = &pods.workloads[0].init_containers[0].resources;
        assert_eq!(init.cpu_limit_millis, Some(500));
        assert_eq!(init.memory_limit_bytes, Some(64 << 20));
        assert_eq!(
            pods.workloads[1].containers[0].resources.cpu_limit_millis,
            Some(500)
        );

        // An init container's image from elsewhere: named with its workload.
        let mut pods = app();
        pods.workloads[0].init_containers[0].image = "docker.io/evil/setup:1".into();
        let e = enforce_policy(&p, &mut pods, None).unwrap_err();
        assert_eq!(e.field, "Deployment web, init container setup, image");
        assert!(e.message.contains("allowedImageRegistries"), "{e}");

        // A host port outside the range.
        let strict = policy(json!({"allowedHostPorts": {"min": 9000, "max": 9999}}));
        let mut pods = app();
        let e = enforce_policy(&strict, &mut pods, None).unwrap_err();
        assert_eq!(e.field, "Service web, nodePort");
        pods.services.clear();
        let e = enforce_policy(&strict, &mut pods, None).unwrap_err();
        assert_eq!(e.field, "StatefulSet db, container pg, ports[0].hostPort");
        assert!(e.message.contains("8443"), "{e}");

        // A limit above the maximum.
        let max = policy(json!({
            "defaultResources": {"memory": "64Mi"},
            "maxResources": {"memory": "128Mi"},
        }));
        let mut pods = app();
        pods.workloads[1].containers[0].resources.memory_limit_bytes = Some(1 << 30);
        let e = enforce_policy(&max, &mut pods, None).unwrap_err();
        assert_eq!(e.field, "StatefulSet db, container pg, resources.memory");
    }

    #[test]
    fn chart_registries_follow_the_image_registry_rule() {
        let p = policy(json!({"allowedImageRegistries": ["127.0.0.1:55010/charts"]}));
        check_chart_registry(&p, "oci://127.0.0.1:55010/charts", "web", "1.0.0+b1").unwrap();
        let e =
            check_chart_registry(&p, "oci://evil.example.com/charts", "web", "1.0.0").unwrap_err();
        assert_eq!(e.field, "helmRegistry");
        assert!(
            e.message
                .starts_with("chart oci://evil.example.com/charts/web:1.0.0 is not allowed"),
            "{e}"
        );
        assert!(
            e.message
                .contains("allowedImageRegistries is 127.0.0.1:55010/charts")
        );
        check_chart_registry(
            &ProjectPolicy::default(),
            "https://charts.example.com",
            "web",
            "1",
        )
        .unwrap();
    }

    #[test]
    fn slots_count_pods() {
        let pods = app();
        assert_eq!(pod_slots(&pods), 5);
    }

    #[test]
    fn fingerprints_cover_credentials_without_showing_them() {
        let req = HelmRequest {
            app: "web".into(),
            app_version: "1.0.0".into(),
            profile_name: "default".into(),
            profile: None,
            overrides: json!({"a": 1, "b": {"c": "secret-value"}}),
            namespace: "ns".into(),
            release: "b-0123456789abcdef".into(),
            org: "default".into(),
            project: "p".into(),
            helm_registry: Registry {
                name: "helm".into(),
                root_url: "oci://r.example.com/charts".into(),
                auth_token: Some("token-1".into()),
                registry_type: "HELM".into(),
                ..Default::default()
            },
            image_registry: None,
            chart_name: "web".into(),
            chart_version: "1.0.0".into(),
            ignored_resources: vec![],
            policy: ProjectPolicy::default(),
        };
        let a = req.fingerprint();
        let mut other = req.clone();
        other.overrides = json!({"b": {"c": "secret-value"}, "a": 1});
        assert_eq!(a, other.fingerprint(), "mapping order does not matter");
        other.helm_registry.auth_token = Some("token-2".into());
        assert_ne!(a, other.fingerprint());
        let shown = format!("{req:?}");
        assert!(
            !shown.contains("secret-value") && !shown.contains("token-1"),
            "{shown}"
        );
    }
}
