//! What a Helm app's [`PodApp`] asks of this edge, worked out before the engine is asked
//! anything: the pods (names, hashes, aliases, published ports, volumes), the claims, and the
//! Services that need the agent's proxy. Pure, so every naming and routing rule is tested
//! without an engine.
//!
//! **Pods.** Each workload is a pod template; its hash covers everything that, changed, makes
//! Kubernetes replace its pods (the workload's spec without `replicas`, the Service names and
//! host ports it gets), so a values change replaces only the pods whose template changed.
//! Names follow Kubernetes' shapes, derived instead of random so that a restarted agent finds
//! the same ones: `<deployment>-<template hash>-<suffix>` (Deployment), `<statefulset>-<i>`,
//! `<daemonset>-<suffix>`, `<pod>`, `<job>-<suffix>` (one per attempt).
//!
//! **Services** (see `docs/HELM.md`, "On the edge"): a Service's names are network aliases in
//! the namespace network. When every port equals its target port they are aliases of the pods
//! themselves (traffic never passes through the agent). When a port differs from its target
//! port (Kubernetes' ClusterIP translation), the Service gets a container of its own holding the
//! names (its address is the Service's "cluster IP") and the agent forwards each port to the
//! ready pods. A `nodePort` is published by the engine on the pod when the Service selects
//! exactly one pod, and otherwise served by the agent on the host, forwarding to the ready pods.

use std::collections::{BTreeMap, BTreeSet};

use canopy_proto::pods::{
    PodApp, Protocol, Service, ServiceType, TargetPort, VolumeSource, Workload, WorkloadKind,
    claim_template_volume,
};
use canopy_proto::{AppInstance, DeploymentInstance, WorkloadControl};
use sha2::{Digest, Sha256};

use crate::driver::names;

/// Kubernetes' alphabet for generated name suffixes (no vowels, no look-alike digits).
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Longest pod name: a DNS label (it is the pod's hostname).
const MAX_POD_NAME: usize = 63;

/// A port the engine publishes on the edge host for a pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Published {
    pub host_ip: Option<String>,
    pub host_port: u16,
    pub container_port: u16,
    pub udp: bool,
}

/// One workload's pod template on this edge.
#[derive(Debug, Clone)]
pub struct Template {
    /// Index in [`PodApp::workloads`].
    pub workload: usize,
    /// The template's hash (hex): replaced pods are those whose hash changed.
    pub hash: String,
    /// Names of the Services that select it without the proxy.
    pub aliases: Vec<String>,
    pub published: Vec<Published>,
}

/// A volume of a pod, as the engine knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodVolume {
    /// The pod's name for it (what mounts refer to).
    pub name: String,
    /// The engine volume.
    pub engine: String,
    pub kind: VolumeKind,
}

/// Where a pod volume's data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeKind {
    /// A claim or a claim template: kept across pods, removed with the app.
    Claim,
    /// The pod's scratch space (tmpfs when `memory`), removed with the pod.
    EmptyDir,
    /// ConfigMap or Secret files, written when the pod is created, removed with it.
    Files,
}

impl VolumeKind {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            VolumeKind::Claim => "claim",
            VolumeKind::EmptyDir => "empty-dir",
            VolumeKind::Files => "files",
        }
    }
}

/// One pod this edge should run.
#[derive(Debug, Clone)]
pub struct PodPlan {
    /// Index in [`PodApp::workloads`] (and [`AppPlan::templates`]).
    pub workload: usize,
    pub name: String,
    /// Replica ordinal, or a Job's attempt.
    pub slot: u32,
    /// The template's hash, with pod restarts (pod delete) folded in: the `GENERATION` label.
    pub hash: String,
    pub hostname: String,
    pub aliases: Vec<String>,
    pub volumes: Vec<PodVolume>,
    /// StatefulSet `OrderedReady`: the pod that must be ready before this one starts.
    pub after: Option<String>,
}

/// A Service the agent forwards (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePlan {
    pub name: String,
    /// Its container holding the names (only when a port is remapped).
    pub container: Option<String>,
    pub hash: String,
    pub aliases: Vec<String>,
    /// Listened to in the Service's container: the Service port and, per workload, the port
    /// its pods listen on.
    pub ports: Vec<ProxyPort>,
    /// Listened to on the host at the node port.
    pub node_ports: Vec<ProxyPort>,
}

/// One forwarded port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyPort {
    pub listen: u16,
    /// `(workload index, target port)`.
    pub targets: Vec<(usize, u16)>,
}

/// Everything an app's pods need.
#[derive(Debug, Clone, Default)]
pub struct AppPlan {
    pub templates: Vec<Template>,
    /// Every pod of every workload but Jobs, in workload order, by slot.
    pub pods: Vec<PodPlan>,
    /// Indexes of the Job workloads (their pods are attempts, see [`AppPlan::job_pod`]).
    pub jobs: Vec<usize>,
    /// Engine volumes of the app's claims and claim templates (`(volume, claim name)`).
    pub claims: Vec<(String, String)>,
    pub services: Vec<ServicePlan>,
    /// What cannot work as asked (the app is `DOWN` with these).
    pub problems: Vec<String>,
    /// What works only in part (logged once).
    pub notes: Vec<String>,
}

/// Who the plan is for.
pub struct Context<'a> {
    pub scope: Option<&'a str>,
    pub dep: &'a DeploymentInstance,
    pub app: &'a AppInstance,
    pub pods: &'a PodApp,
    pub controls: &'a [WorkloadControl],
}

impl Context<'_> {
    fn namespace(&self) -> &str {
        &self.app.namespace
    }

    /// Restart requests (pod delete) for `pod`: the app-wide count and the pod's own.
    fn restarts(&self, pod: &str) -> (u64, u64) {
        let mine = self.controls.iter().filter(|c| {
            c.kind == canopy_proto::WorkloadKind::Pod
                && c.deployment_id == self.dep.deployment_id
                && c.app == self.app.name
        });
        let (mut all, mut one) = (0, 0);
        for c in mine {
            if c.workload.is_empty() {
                all = all.max(c.restarts);
            } else if c.workload == pod {
                one = one.max(c.restarts);
            }
        }
        (all, one)
    }
}

/// Plans the app (see the module doc).
pub fn plan(cx: &Context<'_>) -> AppPlan {
    let mut out = AppPlan::default();
    let workloads = &cx.pods.workloads;
    let mut aliases: Vec<BTreeSet<String>> = vec![BTreeSet::new(); workloads.len()];
    let mut published: Vec<BTreeSet<Published>> = vec![BTreeSet::new(); workloads.len()];
    for (i, w) in workloads.iter().enumerate() {
        for c in &w.containers {
            for p in &c.ports {
                if let Some(host_port) = p.host_port {
                    published[i].insert(Published {
                        host_ip: p.host_ip.clone(),
                        host_port,
                        container_port: p.container_port,
                        udp: p.protocol == Protocol::Udp,
                    });
                }
            }
        }
    }
    for s in &cx.pods.services {
        service(cx, s, &mut aliases, &mut published, &mut out);
    }
    for (i, w) in workloads.iter().enumerate() {
        let aliases: Vec<String> = aliases[i].iter().cloned().collect();
        let published: Vec<Published> = published[i].iter().cloned().collect();
        let hash = template_hash(w, &aliases, &published);
        out.templates.push(Template {
            workload: i,
            hash,
            aliases,
            published,
        });
    }
    let mut claims = BTreeMap::new();
    for c in &cx.pods.claims {
        claims.insert(
            names::claim_volume_name(cx.scope, &cx.dep.deployment_id, &cx.app.name, &c.name),
            c.name.clone(),
        );
    }
    for (i, w) in workloads.iter().enumerate() {
        for v in &w.volumes {
            if let VolumeSource::Claim { claim } = &v.source {
                claims.insert(
                    names::claim_volume_name(cx.scope, &cx.dep.deployment_id, &cx.app.name, claim),
                    claim.clone(),
                );
            }
        }
        if w.kind == WorkloadKind::Job {
            out.jobs.push(i);
            continue;
        }
        let slots = match w.kind {
            WorkloadKind::Deployment | WorkloadKind::StatefulSet => w.replicas,
            _ => 1,
        };
        let mut previous: Option<String> = None;
        for slot in 0..slots {
            let pod = pod_plan(cx, &out.templates[i], w, slot);
            let ordered = w.stateful.as_ref().is_some_and(|s| s.ordered);
            let after = if ordered { previous.clone() } else { None };
            previous = Some(pod.name.clone());
            for v in &pod.volumes {
                if v.kind == VolumeKind::Claim {
                    claims
                        .entry(v.engine.clone())
                        .or_insert_with(|| v.name.clone());
                }
            }
            out.pods.push(PodPlan { after, ..pod });
        }
    }
    out.claims = claims.into_iter().collect();
    out
}

impl AppPlan {
    /// Attempt `slot` of Job workload `workload`.
    pub fn job_pod(&self, cx: &Context<'_>, workload: usize, slot: u32) -> PodPlan {
        pod_plan(
            cx,
            &self.templates[workload],
            &cx.pods.workloads[workload],
            slot,
        )
    }
}

/// The pod of `w` in `slot`.
fn pod_plan(cx: &Context<'_>, t: &Template, w: &Workload, slot: u32) -> PodPlan {
    let name = pod_name(w, &t.hash, slot);
    let (all, one) = cx.restarts(&name);
    let hash = if all + one > 0 {
        format!("{}.r{all}.{one}", t.hash)
    } else {
        t.hash.clone()
    };
    let ns = cx.namespace();
    let mut aliases = t.aliases.clone();
    if let Some(s) = &w.stateful {
        // `<pod>.<governing service>`: a StatefulSet pod's stable DNS name.
        aliases.extend(dns_forms(&format!("{name}.{}", s.service_name), ns));
    }
    let volumes = w
        .volumes
        .iter()
        .map(|v| {
            let (engine, kind) = match &v.source {
                VolumeSource::Claim { claim } => (
                    names::claim_volume_name(cx.scope, &cx.dep.deployment_id, &cx.app.name, claim),
                    VolumeKind::Claim,
                ),
                VolumeSource::ClaimTemplate { template, .. } => (
                    names::claim_volume_name(
                        cx.scope,
                        &cx.dep.deployment_id,
                        &cx.app.name,
                        &claim_template_volume(template, &w.name, slot),
                    ),
                    VolumeKind::Claim,
                ),
                VolumeSource::EmptyDir { .. } => (
                    names::pod_volume_name(
                        cx.scope,
                        &cx.dep.deployment_id,
                        &cx.app.name,
                        &name,
                        &v.name,
                    ),
                    VolumeKind::EmptyDir,
                ),
                VolumeSource::Files { .. } => (
                    names::pod_volume_name(
                        cx.scope,
                        &cx.dep.deployment_id,
                        &cx.app.name,
                        &name,
                        &v.name,
                    ),
                    VolumeKind::Files,
                ),
            };
            PodVolume {
                name: v.name.clone(),
                engine,
                kind,
            }
        })
        .collect();
    let hostname = w
        .hostname
        .clone()
        .unwrap_or_else(|| name.clone())
        .chars()
        .take(MAX_POD_NAME)
        .collect();
    PodPlan {
        workload: t.workload,
        name,
        slot,
        hash,
        hostname,
        aliases,
        volumes,
        after: None,
    }
}

/// A Service's names in the namespace network: `svc`, `svc.ns`, `svc.ns.svc`,
/// `svc.ns.svc.cluster.local`.
pub fn dns_forms(name: &str, namespace: &str) -> Vec<String> {
    vec![
        name.to_string(),
        format!("{name}.{namespace}"),
        format!("{name}.{namespace}.svc"),
        format!("{name}.{namespace}.svc.cluster.local"),
    ]
}

/// A Service port as planned: `(port, UDP, node port, (workload, target port) for each selected
/// workload)`.
type PortTargets = (u16, bool, Option<u16>, Vec<(usize, u16)>);

/// Works out how Service `s` is reached (see the module doc).
fn service(
    cx: &Context<'_>,
    s: &Service,
    aliases: &mut [BTreeSet<String>],
    published: &mut [BTreeSet<Published>],
    out: &mut AppPlan,
) {
    let workloads = &cx.pods.workloads;
    let selected: Vec<usize> = s
        .workloads
        .iter()
        .filter_map(|n| workloads.iter().position(|w| &w.name == n))
        .filter(|i| workloads[*i].kind != WorkloadKind::Job)
        .collect();
    let names = dns_forms(&s.name, cx.namespace());
    if s.headless {
        for i in &selected {
            aliases[*i].extend(names.iter().cloned());
        }
        return;
    }
    let pods: u32 = selected
        .iter()
        .map(|i| match workloads[*i].kind {
            WorkloadKind::Deployment | WorkloadKind::StatefulSet => workloads[*i].replicas,
            _ => 1,
        })
        .sum();
    // Each port's target port per selected workload (a name is resolved in each workload).
    let mut ports: Vec<PortTargets> = Vec::new();
    let mut remapped = false;
    for p in &s.ports {
        let mut targets = Vec::new();
        for i in &selected {
            match target_port(&workloads[*i], &p.target_port) {
                Some(t) => {
                    remapped |= t != p.port;
                    targets.push((*i, t));
                }
                None => out.problems.push(format!(
                    "service {} port {}: targetPort {} is not a port of workload {}",
                    s.name,
                    p.port,
                    match &p.target_port {
                        TargetPort::Number(n) => n.to_string(),
                        TargetPort::Name(n) => n.clone(),
                    },
                    workloads[*i].name
                )),
            }
        }
        let udp = p.protocol == Protocol::Udp;
        if udp && targets.iter().any(|(_, t)| *t != p.port) {
            out.notes.push(format!(
                "service {} port {}/UDP differs from its targetPort: UDP ports are not remapped on \
                 an edge, clients must use the pods' port",
                s.name, p.port
            ));
        }
        let node_port = (s.service_type == ServiceType::NodePort)
            .then_some(p.node_port)
            .flatten();
        ports.push((p.port, udp, node_port, targets));
    }
    let mut plan = ServicePlan {
        name: s.name.clone(),
        container: None,
        hash: String::new(),
        aliases: Vec::new(),
        ports: Vec::new(),
        node_ports: Vec::new(),
    };
    if remapped {
        plan.container = Some(names::service_container_name(
            cx.scope,
            &cx.dep.deployment_id,
            &cx.app.name,
            &s.name,
        ));
        plan.aliases = names.clone();
        plan.ports = ports
            .iter()
            .filter(|(_, udp, _, _)| !udp)
            .map(|(port, _, _, targets)| ProxyPort {
                listen: *port,
                targets: targets.clone(),
            })
            .collect();
    } else {
        for i in &selected {
            aliases[*i].extend(names.iter().cloned());
        }
    }
    for (port, udp, node_port, targets) in &ports {
        let Some(node_port) = node_port else { continue };
        if pods == 1 && targets.len() == 1 {
            // One pod: the engine publishes it (works without the agent running).
            let (i, target) = targets[0];
            published[i].insert(Published {
                host_ip: None,
                host_port: *node_port,
                container_port: target,
                udp: *udp,
            });
        } else if *udp {
            out.notes.push(format!(
                "service {} nodePort {node_port}/UDP selects {pods} pods: UDP node ports are \
                 published only for a single pod",
                s.name
            ));
        } else {
            let _ = port;
            plan.node_ports.push(ProxyPort {
                listen: *node_port,
                targets: targets.clone(),
            });
        }
    }
    if plan.container.is_some() || !plan.node_ports.is_empty() {
        plan.hash = hash_of(&(
            &plan.aliases,
            plan.ports
                .iter()
                .map(|p| (p.listen, &p.targets))
                .collect::<Vec<_>>(),
        ));
        out.services.push(plan);
    }
}

/// The port of `w`'s pods that `target` names.
pub fn target_port(w: &Workload, target: &TargetPort) -> Option<u16> {
    match target {
        TargetPort::Number(n) => Some(*n),
        TargetPort::Name(name) => w
            .containers
            .iter()
            .flat_map(|c| c.ports.iter())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port),
    }
}

/// The template hash: the workload as it would replace pods (`replicas` and
/// `ignoreChanges` left out), with its aliases and published ports.
fn template_hash(w: &Workload, aliases: &[String], published: &[Published]) -> String {
    let mut w = w.clone();
    if matches!(w.kind, WorkloadKind::Deployment | WorkloadKind::StatefulSet) {
        w.replicas = 0;
    }
    w.ignore_changes = false;
    hash_of(&(&w, aliases, published))
}

/// 16 hex digits of the SHA-256 of `v`'s JSON.
fn hash_of(v: &impl serde::Serialize) -> String {
    let json = serde_json::to_vec(v).unwrap_or_default();
    let digest = Sha256::digest(&json);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// `n` characters of Kubernetes' suffix alphabet derived from `seed`.
fn word(seed: &str, n: usize) -> String {
    let digest = Sha256::digest(seed.as_bytes());
    digest
        .iter()
        .take(n)
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// The pod name of `w` in `slot` for template hash `hash` (see the module doc), at most 63
/// characters (the workload's name is cut, as Kubernetes cuts generated names).
pub fn pod_name(w: &Workload, hash: &str, slot: u32) -> String {
    let suffix = match w.kind {
        WorkloadKind::Deployment => format!(
            "-{}-{}",
            word(&format!("template {hash}"), 10),
            word(&format!("pod {hash} {slot}"), 5)
        ),
        WorkloadKind::StatefulSet => format!("-{slot}"),
        WorkloadKind::DaemonSet => format!("-{}", word(&format!("daemon {hash}"), 5)),
        WorkloadKind::Pod => String::new(),
        WorkloadKind::Job => format!("-{}", word(&format!("job {hash} {slot}"), 5)),
    };
    let room = MAX_POD_NAME.saturating_sub(suffix.len());
    let base: String = w.name.chars().take(room).collect();
    let base = base.trim_end_matches(['-', '.']);
    format!("{base}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_proto::pods::{
        Container, Port, PullPolicy, RestartPolicy, ServicePort, StatefulSpec, Volume,
    };

    fn workload(kind: WorkloadKind, name: &str, replicas: u32, port: u16) -> Workload {
        Workload {
            kind,
            name: name.into(),
            template: "t.yaml".into(),
            replicas,
            labels: BTreeMap::new(),
            restart_policy: RestartPolicy::Always,
            job: None,
            stateful: None,
            init_containers: vec![],
            containers: vec![Container {
                name: "c".into(),
                image: "img".into(),
                image_pull_policy: PullPolicy::IfNotPresent,
                command: vec![],
                args: vec![],
                working_dir: None,
                env: vec![],
                ports: vec![Port {
                    name: Some("http".into()),
                    container_port: port,
                    protocol: Protocol::Tcp,
                    host_port: None,
                    host_ip: None,
                }],
                liveness_probe: None,
                readiness_probe: None,
                startup_probe: None,
                resources: Default::default(),
                volume_mounts: vec![],
                security: Default::default(),
                tty: false,
                stdin: false,
            }],
            volumes: vec![],
            hostname: None,
            host_aliases: vec![],
            security: Default::default(),
            termination_grace_period_seconds: 30,
            ignore_changes: false,
        }
    }

    fn svc(
        name: &str,
        t: ServiceType,
        port: u16,
        target: TargetPort,
        node: Option<u16>,
        w: &[&str],
    ) -> Service {
        Service {
            name: name.into(),
            template: "s.yaml".into(),
            service_type: t,
            headless: false,
            ports: vec![ServicePort {
                name: Some("http".into()),
                port,
                target_port: target,
                protocol: Protocol::Tcp,
                node_port: node,
            }],
            selector: BTreeMap::new(),
            workloads: w.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn run(pods: &PodApp, controls: &[WorkloadControl]) -> AppPlan {
        let dep = DeploymentInstance {
            deployment_id: "d1".into(),
            project: "p".into(),
            ..Default::default()
        };
        let app = AppInstance {
            name: "app".into(),
            namespace: "ns".into(),
            ..Default::default()
        };
        plan(&Context {
            scope: Some("edge"),
            dep: &dep,
            app: &app,
            pods,
            controls,
        })
    }

    #[test]
    fn pods_are_named_like_kubernetes_and_stable() {
        let mut sts = workload(WorkloadKind::StatefulSet, "db", 3, 7000);
        sts.stateful = Some(StatefulSpec {
            service_name: "db".into(),
            ordered: true,
        });
        let pods = PodApp {
            workloads: vec![
                workload(WorkloadKind::Deployment, "web", 2, 80),
                sts,
                workload(WorkloadKind::DaemonSet, "agent", 1, 1),
                workload(WorkloadKind::Pod, "once", 1, 1),
                workload(WorkloadKind::Job, "seed", 1, 1),
            ],
            ..Default::default()
        };
        let p = run(&pods, &[]);
        let names: Vec<&str> = p.pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names.len(), 2 + 3 + 1 + 1, "{names:?}");
        assert!(names[0].starts_with("web-") && names[0].len() == "web-".len() + 10 + 1 + 5);
        assert_ne!(names[0], names[1]);
        assert_eq!(&names[2..5], &["db-0", "db-1", "db-2"]);
        assert!(names[5].starts_with("agent-") && names[5].len() == 11);
        assert_eq!(names[6], "once");
        assert_eq!(p.jobs, vec![4]);
        assert_eq!(p.pods[3].after.as_deref(), Some("db-0"), "OrderedReady");
        assert_eq!(p.pods[2].after, None);
        assert!(
            p.pods[3]
                .aliases
                .contains(&"db-1.db.ns.svc.cluster.local".to_string())
        );
        // Same input, same names; attempts of a Job differ.
        let again = run(&pods, &[]);
        assert_eq!(again.pods[0].name, p.pods[0].name);
        let cx_dep = DeploymentInstance {
            deployment_id: "d1".into(),
            ..Default::default()
        };
        let app = AppInstance {
            name: "app".into(),
            namespace: "ns".into(),
            ..Default::default()
        };
        let cx = Context {
            scope: Some("edge"),
            dep: &cx_dep,
            app: &app,
            pods: &pods,
            controls: &[],
        };
        assert_ne!(p.job_pod(&cx, 4, 0).name, p.job_pod(&cx, 4, 1).name);
        let long = workload(WorkloadKind::Deployment, &"x".repeat(70), 1, 1);
        assert!(pod_name(&long, "h", 0).len() <= 63);
    }

    #[test]
    fn only_what_changed_gets_a_new_hash() {
        let web = workload(WorkloadKind::Deployment, "web", 2, 80);
        let db = workload(WorkloadKind::Deployment, "db", 1, 5432);
        let before = run(
            &PodApp {
                workloads: vec![web.clone(), db.clone()],
                ..Default::default()
            },
            &[],
        );
        let mut scaled = web.clone();
        scaled.replicas = 3;
        let mut changed = db.clone();
        changed.containers[0].image = "img:2".into();
        let after = run(
            &PodApp {
                workloads: vec![scaled, changed],
                ..Default::default()
            },
            &[],
        );
        assert_eq!(
            before.templates[0].hash, after.templates[0].hash,
            "replicas alone"
        );
        assert_ne!(before.templates[1].hash, after.templates[1].hash);
        assert_eq!(after.pods.len(), 4);
        assert_eq!(after.pods[0].name, before.pods[0].name, "web pods stay");
    }

    #[test]
    fn services_are_aliases_unless_a_port_is_remapped() {
        let pods = PodApp {
            workloads: vec![
                workload(WorkloadKind::Deployment, "web", 2, 8080),
                workload(WorkloadKind::Deployment, "api", 1, 9000),
                workload(WorkloadKind::Deployment, "ui", 1, 3000),
            ],
            services: vec![
                svc(
                    "web",
                    ServiceType::ClusterIP,
                    80,
                    TargetPort::Name("http".into()),
                    None,
                    &["web"],
                ),
                svc(
                    "api",
                    ServiceType::ClusterIP,
                    9000,
                    TargetPort::Number(9000),
                    None,
                    &["api"],
                ),
                svc(
                    "ui",
                    ServiceType::NodePort,
                    3000,
                    TargetPort::Name("http".into()),
                    Some(30080),
                    &["ui"],
                ),
                svc(
                    "web-np",
                    ServiceType::NodePort,
                    8080,
                    TargetPort::Number(8080),
                    Some(30081),
                    &["web"],
                ),
                svc(
                    "bad",
                    ServiceType::ClusterIP,
                    1,
                    TargetPort::Name("nope".into()),
                    None,
                    &["api"],
                ),
            ],
            ..Default::default()
        };
        let p = run(&pods, &[]);
        // Remapped: its own container, the names on it, forwarding 80 -> 8080.
        let web = p.services.iter().find(|s| s.name == "web").unwrap();
        assert!(web.container.as_deref().unwrap().ends_with("__svc_web"));
        assert!(web.aliases.contains(&"web.ns.svc".to_string()));
        assert_eq!(
            web.ports,
            vec![ProxyPort {
                listen: 80,
                targets: vec![(0, 8080)]
            }]
        );
        assert!(!p.templates[0].aliases.contains(&"web".to_string()));
        // Same port: the names are the pods'.
        assert!(
            p.templates[1]
                .aliases
                .contains(&"api.ns.svc.cluster.local".to_string())
        );
        assert!(p.services.iter().all(|s| s.name != "api"));
        // A node port of one pod: published by the engine on that pod.
        assert_eq!(
            p.templates[2].published,
            vec![Published {
                host_ip: None,
                host_port: 30080,
                container_port: 3000,
                udp: false
            }]
        );
        // Of two pods: the agent's host listener.
        let np = p.services.iter().find(|s| s.name == "web-np").unwrap();
        assert_eq!(np.container, None);
        assert_eq!(
            np.node_ports,
            vec![ProxyPort {
                listen: 30081,
                targets: vec![(0, 8080)]
            }]
        );
        assert!(p.templates[0].aliases.contains(&"web-np".to_string()));
        assert_eq!(p.problems.len(), 1);
        assert!(
            p.problems[0].contains("targetPort nope"),
            "{:?}",
            p.problems
        );
    }

    #[test]
    fn volumes_claims_and_pod_deletes() {
        let mut sts = workload(WorkloadKind::StatefulSet, "db", 2, 1);
        sts.volumes = vec![
            Volume {
                name: "data".into(),
                source: VolumeSource::ClaimTemplate {
                    template: "data".into(),
                    size_bytes: None,
                },
            },
            Volume {
                name: "shared".into(),
                source: VolumeSource::Claim {
                    claim: "shared".into(),
                },
            },
            Volume {
                name: "tmp".into(),
                source: VolumeSource::EmptyDir {
                    memory: true,
                    size_limit_bytes: None,
                },
            },
        ];
        let pods = PodApp {
            workloads: vec![sts],
            ..Default::default()
        };
        let p = run(&pods, &[]);
        let claims: Vec<&str> = p.claims.iter().map(|(_, c)| c.as_str()).collect();
        assert_eq!(claims.len(), 3, "{claims:?}");
        assert!(p.pods[1].volumes[0].engine.ends_with("__pvc_data-db-1"));
        assert_eq!(p.pods[0].volumes[1].engine, p.pods[1].volumes[1].engine);
        assert_ne!(p.pods[0].volumes[2].engine, p.pods[1].volumes[2].engine);
        assert_eq!(p.pods[0].volumes[2].kind, VolumeKind::EmptyDir);

        let delete = |workload: &str, restarts| WorkloadControl {
            deployment_id: "d1".into(),
            app: "app".into(),
            kind: canopy_proto::WorkloadKind::Pod,
            workload: workload.into(),
            running: true,
            restarts,
        };
        let deleted = run(&pods, &[delete("db-1", 1)]);
        assert_eq!(deleted.pods[0].hash, p.pods[0].hash);
        assert_ne!(deleted.pods[1].hash, p.pods[1].hash);
        assert_eq!(deleted.pods[1].name, p.pods[1].name, "the name stays");
        let all = run(&pods, &[delete("", 2)]);
        assert!(all.pods.iter().zip(&p.pods).all(|(a, b)| a.hash != b.hash));
    }
}
