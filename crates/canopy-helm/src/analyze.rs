//! Rendered manifests → [`AppModel`]: which objects become workloads, services and volumes on
//! an edge, which are skipped (with a warning) and which refuse the chart (with an error naming
//! the kind, the object and the template file).
//!
//! | kinds | outcome |
//! |---|---|
//! | Deployment, StatefulSet, DaemonSet (`apps/v1`), Pod, ConfigMap, Secret, PersistentVolumeClaim, Service (`v1`), Job (`batch/v1`) | translated |
//! | ServiceAccount, Role, ClusterRole, RoleBinding, ClusterRoleBinding, NetworkPolicy, HorizontalPodAutoscaler, PodDisruptionBudget, Ingress, Namespace, LimitRange, ResourceQuota | skipped, with a warning (no meaning on a single host without an API server) |
//! | CronJob, any other kind or API version (custom resources included) | refused |
//!
//! Every field of a translated object is either translated, ignored on purpose (documented in
//! `docs/HELM.md`: scheduling, service accounts, pull secrets, ...), ignored with a warning
//! (it changes behaviour in a way an edge cannot reproduce but the application can still run),
//! or refused (running without it would be unsafe or wrong: `hostNetwork`, `privileged`,
//! `hostPath`, ...). A field this module does not know is a warning, never silence.
//!
//! The typed view comes from `k8s-openapi` (one Kubernetes API version), which also checks the
//! objects' field types; errors carry the JSON path (`spec.template.spec.containers[0]...`).

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use canopy_core::catalog::ResourceReference;
use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::batch::v1 as batch;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::manifest::Document;
use crate::model::*;

/// A chart whose objects cannot run on an edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template {template}: {kind} {name}: {}{message}", field_prefix(field))]
pub struct AnalyzeError {
    pub kind: String,
    pub name: String,
    pub template: String,
    /// Path in the object (`spec.template.spec.hostNetwork`), empty for the object as a whole.
    pub field: String,
    pub message: String,
}

fn field_prefix(f: &str) -> String {
    if f.is_empty() {
        String::new()
    } else {
        format!("{f}: ")
    }
}

/// Who the manifests were rendered for.
#[derive(Debug, Clone, Copy)]
pub struct AnalyzeOptions<'a> {
    /// The application's namespace (`--namespace` of the render).
    pub namespace: &'a str,
    /// The application's `ignoredResources`.
    pub ignored_resources: &'a [ResourceReference],
}

const SKIPPED: &[(&str, &str)] = &[
    (
        "ServiceAccount",
        "no API server on an edge: service accounts have nothing to grant",
    ),
    (
        "Role",
        "no API server on an edge: RBAC has nothing to authorize",
    ),
    (
        "ClusterRole",
        "no API server on an edge: RBAC has nothing to authorize",
    ),
    (
        "RoleBinding",
        "no API server on an edge: RBAC has nothing to authorize",
    ),
    (
        "ClusterRoleBinding",
        "no API server on an edge: RBAC has nothing to authorize",
    ),
    (
        "NetworkPolicy",
        "not enforced: the application's namespace network is open inside",
    ),
    (
        "HorizontalPodAutoscaler",
        "no autoscaling on a single host: replicas stay as declared",
    ),
    (
        "PodDisruptionBudget",
        "no voluntary evictions on a single host",
    ),
    (
        "Ingress",
        "no ingress controller: use a NodePort service or a hostPort",
    ),
    (
        "Namespace",
        "the application's namespace is Canopy's to create",
    ),
    (
        "LimitRange",
        "not enforced: set resources on the containers",
    ),
    ("ResourceQuota", "not enforced"),
];

/// Kinds the reference allows in `ignoredResources`, and what an entry does here.
const IGNORABLE: &[(&str, IgnoredEffect)] = &[
    ("ConfigMap", IgnoredEffect::ChangesIgnored),
    ("Secret", IgnoredEffect::ChangesIgnored),
    ("Deployment", IgnoredEffect::ChangesIgnored),
    ("Job", IgnoredEffect::ChangesIgnored),
    ("ValidatingWebhookConfiguration", IgnoredEffect::Dropped),
    ("MutatingWebhookConfiguration", IgnoredEffect::Dropped),
    ("CustomResourceDefinition", IgnoredEffect::Dropped),
    ("EnvoyFilter", IgnoredEffect::Dropped),
];

/// Translates rendered documents (hooks already removed) into an [`AppModel`].
pub fn analyze(docs: &[Document], opts: &AnalyzeOptions<'_>) -> Result<AppModel, AnalyzeError> {
    let mut model = AppModel::default();
    for r in opts.ignored_resources {
        if !IGNORABLE.iter().any(|(k, _)| *k == r.kind) {
            return Err(AnalyzeError {
                kind: r.kind.clone(),
                name: r.name.clone(),
                template: String::new(),
                field: "ignoredResources".into(),
                message: format!(
                    "kind {} cannot be ignored (only {})",
                    r.kind,
                    IGNORABLE
                        .iter()
                        .map(|(k, _)| *k)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    }
    let mut an = Analyzer {
        opts,
        configs: BTreeMap::new(),
        claims: BTreeMap::new(),
        warnings: Vec::new(),
        changes_ignored: BTreeSet::new(),
    };
    let mut kept: Vec<&Document> = Vec::new();
    for d in docs {
        let ns = if d.namespace().is_empty() {
            opts.namespace
        } else {
            d.namespace()
        };
        if let Some(r) = opts.ignored_resources.iter().find(|r| {
            r.kind == d.kind()
                && r.name == d.name()
                && (if r.namespace.is_empty() {
                    opts.namespace
                } else {
                    r.namespace.as_str()
                }) == ns
        }) {
            let effect = IGNORABLE
                .iter()
                .find(|(k, _)| *k == r.kind)
                .map(|(_, e)| *e)
                .unwrap_or(IgnoredEffect::Dropped);
            model.ignored.push(IgnoredObject {
                kind: d.kind().into(),
                name: d.name().into(),
                template: d.source.clone(),
                effect,
            });
            if effect == IgnoredEffect::Dropped {
                continue;
            }
            an.changes_ignored
                .insert((d.kind().to_string(), d.name().to_string()));
        }
        kept.push(d);
    }
    // Configuration first, so workloads can resolve what they reference.
    for d in &kept {
        an.check_object(d)?;
        match d.kind() {
            "ConfigMap" => an.config_map(d)?,
            "Secret" => an.secret(d)?,
            "PersistentVolumeClaim" => {
                let c = an.claim(d)?;
                an.claims.insert(c.name.clone(), c);
            }
            _ => {}
        }
    }
    let mut services = Vec::new();
    for d in &kept {
        match (d.api_version(), d.kind()) {
            ("apps/v1", "Deployment") => model.workloads.push(an.deployment(d)?),
            ("apps/v1", "StatefulSet") => model.workloads.push(an.statefulset(d)?),
            ("apps/v1", "DaemonSet") => model.workloads.push(an.daemonset(d)?),
            ("v1", "Pod") => model.workloads.push(an.pod(d)?),
            ("batch/v1", "Job") => model.workloads.push(an.job(d)?),
            ("v1", "Service") => services.push(*d),
            ("v1", "ConfigMap" | "Secret" | "PersistentVolumeClaim") => {}
            (_, kind) => {
                if let Some((_, why)) = SKIPPED.iter().find(|(k, _)| *k == kind) {
                    an.warn(d, format!("skipped: {why}"));
                }
            }
        }
    }
    for d in services {
        if let Some(s) = an.service(d, &model.workloads)? {
            model.services.push(s);
        }
    }
    for w in &mut model.workloads {
        let kind = match w.kind {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::Job => "Job",
            _ => "",
        };
        if an
            .changes_ignored
            .contains(&(kind.to_string(), w.name.clone()))
        {
            w.ignore_changes = true;
        }
    }
    let mut names = BTreeSet::new();
    for w in &model.workloads {
        if !names.insert(w.name.clone()) {
            return Err(AnalyzeError {
                kind: format!("{:?}", w.kind),
                name: w.name.clone(),
                template: w.template.clone(),
                field: "metadata.name".into(),
                message: "another workload of the chart has the same name (workload names \
                          must be unique on an edge)"
                    .into(),
            });
        }
    }
    model.claims = an.claims.into_values().collect();
    model.warnings = an.warnings;
    Ok(model)
}

/// The data of a ConfigMap or Secret of the chart.
struct Config {
    secret: bool,
    data: BTreeMap<String, Vec<u8>>,
}

struct Analyzer<'a> {
    opts: &'a AnalyzeOptions<'a>,
    /// `(kind, name)` → data.
    configs: BTreeMap<(String, String), Config>,
    claims: BTreeMap<String, Claim>,
    warnings: Vec<Warning>,
    changes_ignored: BTreeSet<(String, String)>,
}

/// Where in which object: for errors and warnings.
#[derive(Clone, Copy)]
struct At<'d> {
    doc: &'d Document,
}

impl At<'_> {
    fn err(&self, field: impl Into<String>, message: impl Into<String>) -> AnalyzeError {
        AnalyzeError {
            kind: self.doc.kind().into(),
            name: self.doc.name().into(),
            template: self.doc.source.clone(),
            field: field.into(),
            message: message.into(),
        }
    }
}

/// What to do with a field that is not translated.
enum Policy {
    /// Translated, or ignored on purpose without a word (documented).
    Known,
    /// Ignored, with this warning, when set.
    Warn(&'static str),
    /// Refused when set to something other than its harmless value.
    Refuse(&'static str),
}

fn is_set(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
        Value::String(s) => !s.is_empty(),
        Value::Number(_) => true,
    }
}

impl Analyzer<'_> {
    fn warn(&mut self, d: &Document, message: impl Into<String>) {
        self.warnings.push(Warning {
            kind: d.kind().into(),
            name: d.name().into(),
            template: d.source.clone(),
            message: message.into(),
        });
    }

    /// Applies a field policy to the keys of `obj` (at `path`).
    fn fields(
        &mut self,
        d: &Document,
        obj: Option<&Value>,
        path: &str,
        policy: &dyn Fn(&str) -> Option<Policy>,
    ) -> Result<(), AnalyzeError> {
        let Some(map) = obj.and_then(Value::as_object) else {
            return Ok(());
        };
        for (k, v) in map {
            let at = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            match policy(k) {
                Some(Policy::Known) => {}
                Some(Policy::Warn(why)) => {
                    if is_set(v) {
                        self.warn(d, format!("{at} ignored: {why}"));
                    }
                }
                Some(Policy::Refuse(why)) => {
                    if is_set(v) {
                        return Err(At { doc: d }.err(at, format!("not supported: {why}")));
                    }
                }
                None => self.warn(d, format!("{at} ignored: a field Canopy does not know")),
            }
        }
        Ok(())
    }

    /// Checks the kind and API version; refuses what is neither translated nor skipped.
    fn check_object(&mut self, d: &Document) -> Result<(), AnalyzeError> {
        let at = At { doc: d };
        let expected = match d.kind() {
            "Deployment" | "StatefulSet" | "DaemonSet" => Some("apps/v1"),
            "Pod" | "ConfigMap" | "Secret" | "PersistentVolumeClaim" | "Service" => Some("v1"),
            "Job" => Some("batch/v1"),
            _ => None,
        };
        match expected {
            Some(v) if v == d.api_version() => {}
            Some(v) => {
                return Err(at.err(
                    "apiVersion",
                    format!(
                        "{} is not supported for {} (only {v})",
                        d.api_version(),
                        d.kind()
                    ),
                ));
            }
            None if SKIPPED.iter().any(|(k, _)| *k == d.kind()) => return Ok(()),
            None if d.kind() == "CronJob" => {
                return Err(at.err(
                    "",
                    "CronJob is not supported on Canopy edges (no scheduler runs jobs on a \
                     timetable); use a Job, or a Deployment that sleeps between runs",
                ));
            }
            None => {
                return Err(at.err(
                    "",
                    format!(
                        "kind {} ({}) is not supported on Canopy edges (custom resources \
                         need their operator, which cannot run without Kubernetes); list it \
                         in the application's ignoredResources only if it is a webhook \
                         configuration, CRD or EnvoyFilter",
                        d.kind(),
                        d.api_version()
                    ),
                ));
            }
        }
        if d.name().is_empty() {
            return Err(at.err("metadata.name", "is missing"));
        }
        if !d.namespace().is_empty() && d.namespace() != self.opts.namespace {
            self.warn(
                d,
                format!(
                    "metadata.namespace {} ignored: the object runs in the application's \
                     namespace {}",
                    d.namespace(),
                    self.opts.namespace
                ),
            );
        }
        Ok(())
    }

    fn typed<T: serde::de::DeserializeOwned>(&self, d: &Document) -> Result<T, AnalyzeError> {
        serde_path_to_error::deserialize(&d.object).map_err(|e| {
            At { doc: d }.err(
                e.path().to_string(),
                format!("is not a valid {}: {}", d.kind(), e.inner()),
            )
        })
    }

    fn config_map(&mut self, d: &Document) -> Result<(), AnalyzeError> {
        let cm: core::ConfigMap = self.typed(d)?;
        let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (k, v) in cm.data.unwrap_or_default() {
            data.insert(k, v.into_bytes());
        }
        for (k, v) in cm.binary_data.unwrap_or_default() {
            data.insert(k, v.0);
        }
        self.configs.insert(
            ("ConfigMap".into(), d.name().into()),
            Config {
                secret: false,
                data,
            },
        );
        Ok(())
    }

    fn secret(&mut self, d: &Document) -> Result<(), AnalyzeError> {
        let s: core::Secret = self.typed(d)?;
        let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (k, v) in s.data.unwrap_or_default() {
            data.insert(k, v.0);
        }
        for (k, v) in s.string_data.unwrap_or_default() {
            data.insert(k, v.into_bytes());
        }
        self.configs.insert(
            ("Secret".into(), d.name().into()),
            Config { secret: true, data },
        );
        Ok(())
    }

    fn claim(&mut self, d: &Document) -> Result<Claim, AnalyzeError> {
        let pvc: core::PersistentVolumeClaim = self.typed(d)?;
        self.claim_from(d, &pvc, "spec")
    }

    fn claim_from(
        &mut self,
        d: &Document,
        pvc: &core::PersistentVolumeClaim,
        path: &str,
    ) -> Result<Claim, AnalyzeError> {
        let at = At { doc: d };
        let spec = pvc.spec.clone().unwrap_or_default();
        if spec.storage_class_name.is_some() {
            self.warn(
                d,
                format!("{path}.storageClassName ignored: claims are volumes of the edge's container engine"),
            );
        }
        let size = spec
            .resources
            .and_then(|r| r.requests)
            .and_then(|r| r.get("storage").cloned())
            .map(|q| bytes(&q).map_err(|m| at.err(format!("{path}.resources.requests.storage"), m)))
            .transpose()?;
        Ok(Claim {
            name: pvc.metadata.name.clone().unwrap_or_default(),
            template: d.source.clone(),
            size_bytes: size,
            access_modes: spec.access_modes.unwrap_or_default(),
            keep: pvc
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("helm.sh/resource-policy"))
                .is_some_and(|p| p.trim() == "keep"),
        })
    }

    fn selector_matches(
        &self,
        d: &Document,
        selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
        labels: &BTreeMap<String, String>,
        path: &str,
    ) -> Result<(), AnalyzeError> {
        if selector
            .match_expressions
            .as_ref()
            .is_some_and(|e| !e.is_empty())
        {
            return Err(At { doc: d }.err(
                format!("{path}.matchExpressions"),
                "not supported: use matchLabels",
            ));
        }
        for (k, v) in selector.match_labels.iter().flatten() {
            if labels.get(k) != Some(v) {
                return Err(At { doc: d }.err(
                    format!("{path}.matchLabels"),
                    format!("selects {k}={v}, which the pod template's labels do not have"),
                ));
            }
        }
        Ok(())
    }

    fn deployment(&mut self, d: &Document) -> Result<Workload, AnalyzeError> {
        let dep: apps::Deployment = self.typed(d)?;
        let spec = dep.spec.unwrap_or_default();
        self.fields(d, d.object.get("spec"), "spec", &|k| {
            Some(match k {
                "replicas"
                | "selector"
                | "template"
                | "strategy"
                | "minReadySeconds"
                | "revisionHistoryLimit"
                | "progressDeadlineSeconds" => Policy::Known,
                "paused" => Policy::Warn("a paused Deployment still runs on an edge"),
                _ => return None,
            })
        })?;
        let replicas = replicas(spec.replicas);
        let mut w = self.pod_template(
            d,
            &spec.template,
            "spec.template",
            WorkloadKind::Deployment,
            replicas,
        )?;
        self.selector_matches(d, &spec.selector, &w.labels, "spec.selector")?;
        w.restart_policy = self.restart_for_controller(d, w.restart_policy)?;
        Ok(w)
    }

    fn statefulset(&mut self, d: &Document) -> Result<Workload, AnalyzeError> {
        let sts: apps::StatefulSet = self.typed(d)?;
        let spec = sts.spec.unwrap_or_default();
        self.fields(d, d.object.get("spec"), "spec", &|k| {
            Some(match k {
                "replicas"
                | "selector"
                | "template"
                | "serviceName"
                | "volumeClaimTemplates"
                | "podManagementPolicy"
                | "updateStrategy"
                | "revisionHistoryLimit"
                | "minReadySeconds"
                | "persistentVolumeClaimRetentionPolicy" => Policy::Known,
                "ordinals" => Policy::Warn("replicas are numbered from 0"),
                _ => return None,
            })
        })?;
        let mut w = self.pod_template(
            d,
            &spec.template,
            "spec.template",
            WorkloadKind::StatefulSet,
            replicas(spec.replicas),
        )?;
        self.selector_matches(d, &spec.selector, &w.labels, "spec.selector")?;
        w.restart_policy = self.restart_for_controller(d, w.restart_policy)?;
        let mut templates = BTreeSet::new();
        for (i, t) in spec.volume_claim_templates.iter().flatten().enumerate() {
            let c = self.claim_from(d, t, &format!("spec.volumeClaimTemplates[{i}].spec"))?;
            if c.name.is_empty() {
                return Err(At { doc: d }.err(
                    format!("spec.volumeClaimTemplates[{i}].metadata.name"),
                    "is missing",
                ));
            }
            templates.insert(c.name.clone());
            if !w.volumes.iter().any(|v| v.name == c.name) {
                w.volumes.push(Volume {
                    name: c.name.clone(),
                    source: VolumeSource::ClaimTemplate {
                        template: c.name,
                        size_bytes: c.size_bytes,
                    },
                });
            }
        }
        // Mounts of a claim template name it directly (no pod volume of that name).
        for c in w.containers.iter().chain(&w.init_containers) {
            for m in &c.volume_mounts {
                if !w.volumes.iter().any(|v| v.name == m.volume) {
                    return Err(At { doc: d }.err(
                        format!("container {}", c.name),
                        format!("mounts volume {:?}, which the pod does not have", m.volume),
                    ));
                }
            }
        }
        w.stateful = Some(StatefulSpec {
            service_name: spec.service_name.unwrap_or_default(),
            ordered: spec.pod_management_policy.as_deref() != Some("Parallel"),
        });
        Ok(w)
    }

    fn daemonset(&mut self, d: &Document) -> Result<Workload, AnalyzeError> {
        let ds: apps::DaemonSet = self.typed(d)?;
        let spec = ds.spec.unwrap_or_default();
        self.fields(d, d.object.get("spec"), "spec", &|k| {
            Some(match k {
                "selector"
                | "template"
                | "updateStrategy"
                | "minReadySeconds"
                | "revisionHistoryLimit" => Policy::Known,
                _ => return None,
            })
        })?;
        let mut w = self.pod_template(
            d,
            &spec.template,
            "spec.template",
            WorkloadKind::DaemonSet,
            1,
        )?;
        self.selector_matches(d, &spec.selector, &w.labels, "spec.selector")?;
        w.restart_policy = self.restart_for_controller(d, w.restart_policy)?;
        Ok(w)
    }

    fn pod(&mut self, d: &Document) -> Result<Workload, AnalyzeError> {
        let pod: core::Pod = self.typed(d)?;
        let template = core::PodTemplateSpec {
            metadata: Some(pod.metadata),
            spec: pod.spec,
        };
        self.pod_template(d, &template, "", WorkloadKind::Pod, 1)
    }

    fn job(&mut self, d: &Document) -> Result<Workload, AnalyzeError> {
        let job: batch::Job = self.typed(d)?;
        let spec = job.spec.unwrap_or_default();
        self.fields(d, d.object.get("spec"), "spec", &|k| {
            Some(match k {
                "template"
                | "completions"
                | "parallelism"
                | "backoffLimit"
                | "activeDeadlineSeconds"
                | "ttlSecondsAfterFinished"
                | "selector"
                | "manualSelector"
                | "podReplacementPolicy" => Policy::Known,
                "completionMode" => Policy::Warn("pods are not given completion indexes"),
                "suspend" => Policy::Warn("a suspended Job still runs on an edge"),
                "podFailurePolicy"
                | "successPolicy"
                | "backoffLimitPerIndex"
                | "maxFailedIndexes" => Policy::Warn("only backoffLimit decides failure"),
                "managedBy" => Policy::Known,
                _ => return None,
            })
        })?;
        let parallelism = spec.parallelism.unwrap_or(1).max(0) as u32;
        let completions = spec
            .completions
            .map_or(parallelism.max(1), |c| c.max(0) as u32);
        let mut w = self.pod_template(
            d,
            &spec.template,
            "spec.template",
            WorkloadKind::Job,
            parallelism.min(completions.max(1)),
        )?;
        if w.restart_policy == RestartPolicy::Always {
            return Err(At { doc: d }.err(
                "spec.template.spec.restartPolicy",
                "must be OnFailure or Never for a Job",
            ));
        }
        w.job = Some(JobSpec {
            completions,
            parallelism,
            backoff_limit: spec.backoff_limit.unwrap_or(6).max(0) as u32,
            active_deadline_seconds: spec.active_deadline_seconds,
            ttl_seconds_after_finished: spec.ttl_seconds_after_finished,
        });
        Ok(w)
    }

    fn restart_for_controller(
        &self,
        d: &Document,
        p: RestartPolicy,
    ) -> Result<RestartPolicy, AnalyzeError> {
        if p != RestartPolicy::Always {
            return Err(At { doc: d }.err(
                "spec.template.spec.restartPolicy",
                format!("must be Always for a {}", d.kind()),
            ));
        }
        Ok(p)
    }

    fn pod_template(
        &mut self,
        d: &Document,
        t: &core::PodTemplateSpec,
        path: &str,
        kind: WorkloadKind,
        replicas: u32,
    ) -> Result<Workload, AnalyzeError> {
        let at = At { doc: d };
        let sp = |s: &str| {
            if path.is_empty() {
                format!("spec.{s}")
            } else {
                format!("{path}.spec.{s}")
            }
        };
        let raw_spec = if path.is_empty() {
            d.object.get("spec")
        } else {
            d.object.pointer("/spec/template/spec")
        };
        let spec_path = if path.is_empty() {
            "spec".to_string()
        } else {
            format!("{path}.spec")
        };
        self.fields(d, raw_spec, &spec_path, &|k| {
            Some(match k {
                "containers"
                | "initContainers"
                | "volumes"
                | "restartPolicy"
                | "securityContext"
                | "terminationGracePeriodSeconds"
                | "hostname"
                | "subdomain"
                | "hostAliases"
                | "activeDeadlineSeconds" => Policy::Known,
                // No API server, no scheduler, one host: documented as ignored.
                "serviceAccountName"
                | "serviceAccount"
                | "automountServiceAccountToken"
                | "imagePullSecrets"
                | "nodeSelector"
                | "affinity"
                | "tolerations"
                | "topologySpreadConstraints"
                | "priorityClassName"
                | "priority"
                | "schedulerName"
                | "preemptionPolicy"
                | "enableServiceLinks"
                | "nodeName"
                | "dnsPolicy" => Policy::Known,
                "dnsConfig" => Policy::Warn("the namespace network's DNS is used"),
                "shareProcessNamespace" => Policy::Warn("containers do not share a PID namespace"),
                "readinessGates" | "schedulingGates" | "resourceClaims" | "overhead" | "os"
                | "setHostnameAsFQDN" | "runtimeClassName" | "hostUsers" => {
                    Policy::Warn("not applied on an edge")
                }
                "hostNetwork" => Policy::Refuse(
                    "the host's network is not shared with applications; publish ports with \
                     hostPort or a NodePort service",
                ),
                "hostPID" => Policy::Refuse("the host's process namespace is not shared"),
                "hostIPC" => Policy::Refuse("the host's IPC namespace is not shared"),
                "ephemeralContainers" => Policy::Refuse("ephemeral containers are debugging tools"),
                _ => return None,
            })
        })?;
        let meta = t.metadata.clone().unwrap_or_default();
        let Some(spec) = &t.spec else {
            return Err(at.err(spec_path, "is missing"));
        };
        let labels = meta.labels.unwrap_or_default();
        let restart_policy = match spec.restart_policy.as_deref() {
            None | Some("Always") => RestartPolicy::Always,
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            Some(other) => {
                return Err(at.err(sp("restartPolicy"), format!("unknown value {other:?}")));
            }
        };
        let pod_sec = spec.security_context.clone().unwrap_or_default();
        self.fields(
            d,
            raw_spec.and_then(|s| s.get("securityContext")),
            &sp("securityContext"),
            &|k| {
                Some(match k {
                    "runAsUser"
                    | "runAsGroup"
                    | "runAsNonRoot"
                    | "fsGroup"
                    | "supplementalGroups"
                    | "fsGroupChangePolicy"
                    | "supplementalGroupsPolicy"
                    | "seLinuxChangePolicy"
                    | "windowsOptions"
                    | "seccompProfile" => Policy::Known,
                    "seLinuxOptions" | "appArmorProfile" => {
                        Policy::Warn("the engine's default confinement is used")
                    }
                    "sysctls" => Policy::Refuse("namespaced sysctls are not set on edges"),
                    _ => return None,
                })
            },
        )?;
        if let Some(p) = &pod_sec.seccomp_profile
            && p.type_ == "Unconfined"
        {
            return Err(at.err(
                sp("securityContext.seccompProfile"),
                "not supported: Unconfined (containers keep the engine's default profile)",
            ));
        }

        let mut volumes = Vec::new();
        for (i, v) in spec.volumes.iter().flatten().enumerate() {
            volumes.push(self.volume(d, v, &sp(&format!("volumes[{i}]")))?);
        }
        let raw_containers = raw_spec.and_then(|s| s.get("containers"));
        let raw_inits = raw_spec.and_then(|s| s.get("initContainers"));
        let mut containers = Vec::new();
        for (i, c) in spec.containers.iter().enumerate() {
            let raw = raw_containers.and_then(|a| a.get(i));
            containers.push(self.container(
                d,
                c,
                raw,
                &sp(&format!("containers[{i}]")),
                &pod_sec,
                &volumes,
                kind,
            )?);
        }
        if containers.is_empty() {
            return Err(at.err(sp("containers"), "has no container"));
        }
        let mut init_containers = Vec::new();
        for (i, c) in spec.init_containers.iter().flatten().enumerate() {
            let raw = raw_inits.and_then(|a| a.get(i));
            init_containers.push(self.container(
                d,
                c,
                raw,
                &sp(&format!("initContainers[{i}]")),
                &pod_sec,
                &volumes,
                kind,
            )?);
        }
        if replicas > 1
            && let Some(p) = containers
                .iter()
                .flat_map(|c| &c.ports)
                .find(|p| p.host_port.is_some())
        {
            return Err(at.err(
                sp("containers"),
                format!(
                    "hostPort {} with {replicas} replicas: one host port can serve one replica on \
                     an edge (use a NodePort service, or one replica)",
                    p.host_port.unwrap_or_default()
                ),
            ));
        }
        let mut names = BTreeSet::new();
        for c in containers.iter().chain(&init_containers) {
            if !names.insert(&c.name) {
                return Err(at.err(
                    sp("containers"),
                    format!("two containers are named {:?}", c.name),
                ));
            }
        }
        let host_aliases = spec
            .host_aliases
            .iter()
            .flatten()
            .map(|h| HostAlias {
                ip: h.ip.clone(),
                hostnames: h.hostnames.clone().unwrap_or_default(),
            })
            .collect();
        Ok(Workload {
            kind,
            name: d.name().into(),
            template: d.source.clone(),
            replicas,
            labels,
            restart_policy,
            job: None,
            stateful: None,
            init_containers,
            containers,
            volumes,
            hostname: spec.hostname.clone(),
            host_aliases,
            security: PodSecurity {
                fs_group: pod_sec.fs_group,
                supplemental_groups: pod_sec.supplemental_groups.clone().unwrap_or_default(),
            },
            termination_grace_period_seconds: spec.termination_grace_period_seconds.unwrap_or(30),
            ignore_changes: false,
        })
    }

    fn volume(
        &mut self,
        d: &Document,
        v: &core::Volume,
        path: &str,
    ) -> Result<Volume, AnalyzeError> {
        let at = At { doc: d };
        let source = if let Some(pvc) = &v.persistent_volume_claim {
            if !self.claims.contains_key(&pvc.claim_name) {
                self.warn(
                    d,
                    format!(
                        "{path}: claim {} is not part of the chart; a volume of that name is used",
                        pvc.claim_name
                    ),
                );
            }
            VolumeSource::Claim {
                claim: pvc.claim_name.clone(),
            }
        } else if let Some(e) = &v.empty_dir {
            let memory = match e.medium.as_deref() {
                None | Some("") => false,
                Some("Memory") => true,
                Some(other) => {
                    return Err(at.err(
                        format!("{path}.emptyDir.medium"),
                        format!("unknown medium {other:?}"),
                    ));
                }
            };
            VolumeSource::EmptyDir {
                memory,
                size_limit_bytes: e
                    .size_limit
                    .as_ref()
                    .map(|q| bytes(q).map_err(|m| at.err(format!("{path}.emptyDir.sizeLimit"), m)))
                    .transpose()?,
            }
        } else if let Some(cm) = &v.config_map {
            self.files(
                d,
                "ConfigMap",
                &cm.name,
                cm.items.as_deref(),
                cm.default_mode,
                cm.optional,
                path,
            )?
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            self.files(
                d,
                "Secret",
                &name,
                s.items.as_deref(),
                s.default_mode,
                s.optional,
                path,
            )?
        } else {
            let raw = serde_json::to_value(v).unwrap_or_default();
            let kind = raw
                .as_object()
                .and_then(|m| m.keys().find(|k| *k != "name").cloned())
                .unwrap_or_else(|| "(none)".into());
            let why = if kind == "hostPath" {
                "hostPath volumes would reach into the edge host's filesystem; use a \
                 PersistentVolumeClaim"
            } else {
                "supported volumes are persistentVolumeClaim, emptyDir, configMap and secret"
            };
            return Err(at.err(format!("{path}.{kind}"), format!("not supported: {why}")));
        };
        Ok(Volume {
            name: v.name.clone(),
            source,
        })
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call site each; a struct of arguments would only rename them"
    )]
    fn files(
        &mut self,
        d: &Document,
        kind: &str,
        name: &str,
        items: Option<&[core::KeyToPath]>,
        default_mode: Option<i32>,
        optional: Option<bool>,
        path: &str,
    ) -> Result<VolumeSource, AnalyzeError> {
        let at = At { doc: d };
        let mode = default_mode.unwrap_or(0o644) as u32;
        let from = format!("{kind}/{name}");
        let Some(config) = self.configs.get(&(kind.to_string(), name.to_string())) else {
            if optional == Some(true) {
                return Ok(VolumeSource::Files {
                    from,
                    secret: kind == "Secret",
                    files: Vec::new(),
                });
            }
            return Err(at.err(
                path.to_string(),
                format!(
                    "{kind} {name} is not part of the chart (an edge has no other source for it)"
                ),
            ));
        };
        let mut files = Vec::new();
        let mut add = |key: &str, rel: &str, mode: u32| -> Result<(), AnalyzeError> {
            if rel.split('/').any(|p| p == ".." || p.is_empty()) || rel.starts_with('/') {
                return Err(at.err(
                    format!("{path}.items"),
                    format!("path {rel:?} is not a relative path inside the volume"),
                ));
            }
            let Some(bytes) = config.data.get(key) else {
                return Err(at.err(
                    format!("{path}.items"),
                    format!("{kind} {name} has no key {key:?}"),
                ));
            };
            let (content, base64) = match std::str::from_utf8(bytes) {
                Ok(s) => (s.to_string(), false),
                Err(_) => (
                    base64::engine::general_purpose::STANDARD.encode(bytes),
                    true,
                ),
            };
            files.push(FileEntry {
                path: rel.to_string(),
                content,
                base64,
                mode,
            });
            Ok(())
        };
        match items {
            Some(items) if !items.is_empty() => {
                for it in items {
                    add(&it.key, &it.path, it.mode.map_or(mode, |m| m as u32))?;
                }
            }
            _ => {
                for key in config.data.keys() {
                    add(key, key, mode)?;
                }
            }
        }
        Ok(VolumeSource::Files {
            from,
            secret: config.secret,
            files,
        })
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call site each; a struct of arguments would only rename them"
    )]
    fn container(
        &mut self,
        d: &Document,
        c: &core::Container,
        raw: Option<&Value>,
        path: &str,
        pod_sec: &core::PodSecurityContext,
        volumes: &[Volume],
        kind: WorkloadKind,
    ) -> Result<Container, AnalyzeError> {
        let at = At { doc: d };
        self.fields(d, raw, path, &|k| {
            Some(match k {
                "name" | "image" | "imagePullPolicy" | "command" | "args" | "workingDir" | "env"
                | "envFrom" | "ports" | "livenessProbe" | "readinessProbe" | "startupProbe"
                | "resources" | "securityContext" | "volumeMounts" | "stdin" | "tty"
                | "stdinOnce" | "terminationMessagePath" | "terminationMessagePolicy"
                | "resizePolicy" => Policy::Known,
                "lifecycle" => Policy::Warn("postStart and preStop hooks are not run"),
                "volumeDevices" => Policy::Refuse("block devices are not given to containers"),
                "restartPolicy" => Policy::Refuse("sidecar init containers (restartPolicy: Always) are not supported; make it a regular container"),
                _ => return None,
            })
        })?;
        let image = c
            .image
            .clone()
            .filter(|i| !i.is_empty())
            .ok_or_else(|| at.err(format!("{path}.image"), "is missing"))?;
        let image_pull_policy = match c.image_pull_policy.as_deref() {
            Some("Always") => PullPolicy::Always,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            Some("Never") => PullPolicy::Never,
            None | Some("") => {
                let tag = image.rsplit('/').next().unwrap_or(&image);
                if image.contains('@') {
                    PullPolicy::IfNotPresent
                } else {
                    match tag.split_once(':') {
                        None => PullPolicy::Always,
                        Some((_, "latest")) => PullPolicy::Always,
                        Some(_) => PullPolicy::IfNotPresent,
                    }
                }
            }
            Some(other) => {
                return Err(at.err(
                    format!("{path}.imagePullPolicy"),
                    format!("unknown value {other:?}"),
                ));
            }
        };
        // Ports.
        let mut ports = Vec::new();
        for (i, p) in c.ports.iter().flatten().enumerate() {
            let pp = format!("{path}.ports[{i}]");
            let protocol =
                protocol(p.protocol.as_deref()).map_err(|m| at.err(format!("{pp}.protocol"), m))?;
            let container_port =
                port(p.container_port).map_err(|m| at.err(format!("{pp}.containerPort"), m))?;
            let host_port = p
                .host_port
                .filter(|h| *h != 0)
                .map(|h| port(h).map_err(|m| at.err(format!("{pp}.hostPort"), m)))
                .transpose()?;
            ports.push(Port {
                name: p.name.clone(),
                container_port,
                protocol,
                host_port,
                host_ip: p.host_ip.clone().filter(|h| !h.is_empty()),
            });
        }
        let named = |name: &str| {
            ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name))
                .map(|p| p.container_port)
        };
        // Probes.
        let probe = |p: &Option<core::Probe>, field: &str| -> Result<Option<Probe>, AnalyzeError> {
            let Some(p) = p else { return Ok(None) };
            let pp = format!("{path}.{field}");
            let resolve = |v: &IntOrString, f: &str| -> Result<u16, AnalyzeError> {
                match v {
                    IntOrString::Int(n) => {
                        port(*n).map_err(|m| at.err(format!("{pp}.{f}.port"), m))
                    }
                    IntOrString::String(s) => match s.parse::<i32>() {
                        Ok(n) => port(n).map_err(|m| at.err(format!("{pp}.{f}.port"), m)),
                        Err(_) => named(s).ok_or_else(|| {
                            at.err(
                                format!("{pp}.{f}.port"),
                                format!("names port {s:?}, which the container does not declare"),
                            )
                        }),
                    },
                }
            };
            let action = if let Some(h) = &p.http_get {
                if h.host.as_deref().is_some_and(|h| !h.is_empty()) {
                    return Err(at.err(
                        format!("{pp}.httpGet.host"),
                        "not supported: probes check the container itself",
                    ));
                }
                ProbeAction::HttpGet {
                    path: h
                        .path
                        .clone()
                        .filter(|p| !p.is_empty())
                        .unwrap_or_else(|| "/".into()),
                    port: resolve(&h.port, "httpGet")?,
                    https: h.scheme.as_deref() == Some("HTTPS"),
                    headers: h
                        .http_headers
                        .iter()
                        .flatten()
                        .map(|h| (h.name.clone(), h.value.clone()))
                        .collect(),
                }
            } else if let Some(t) = &p.tcp_socket {
                if t.host.as_deref().is_some_and(|h| !h.is_empty()) {
                    return Err(at.err(
                        format!("{pp}.tcpSocket.host"),
                        "not supported: probes check the container itself",
                    ));
                }
                ProbeAction::TcpSocket {
                    port: resolve(&t.port, "tcpSocket")?,
                }
            } else if let Some(e) = &p.exec {
                let command = e.command.clone().unwrap_or_default();
                if command.is_empty() {
                    return Err(at.err(format!("{pp}.exec.command"), "is empty"));
                }
                ProbeAction::Exec { command }
            } else if p.grpc.is_some() {
                return Err(at.err(
                    format!("{pp}.grpc"),
                    "not supported: use httpGet, tcpSocket or exec",
                ));
            } else {
                return Err(at.err(pp, "has no action (httpGet, tcpSocket or exec)"));
            };
            Ok(Some(Probe {
                action,
                initial_delay_seconds: p.initial_delay_seconds.unwrap_or(0),
                period_seconds: p.period_seconds.unwrap_or(10),
                timeout_seconds: p.timeout_seconds.unwrap_or(1),
                success_threshold: p.success_threshold.unwrap_or(1),
                failure_threshold: p.failure_threshold.unwrap_or(3),
            }))
        };
        let liveness_probe = probe(&c.liveness_probe, "livenessProbe")?;
        let readiness_probe = probe(&c.readiness_probe, "readinessProbe")?;
        let startup_probe = probe(&c.startup_probe, "startupProbe")?;

        // Environment: envFrom first, then env; later names replace earlier ones.
        let mut env: Vec<EnvVar> = Vec::new();
        let mut put = |v: EnvVar| {
            if let Some(old) = env.iter_mut().find(|e| e.name == v.name) {
                *old = v;
            } else {
                env.push(v);
            }
        };
        for (i, ef) in c.env_from.iter().flatten().enumerate() {
            let ep = format!("{path}.envFrom[{i}]");
            let prefix = ef.prefix.clone().unwrap_or_default();
            let (kind, name, optional) = if let Some(r) = &ef.config_map_ref {
                ("ConfigMap", r.name.clone(), r.optional)
            } else if let Some(r) = &ef.secret_ref {
                ("Secret", r.name.clone(), r.optional)
            } else {
                return Err(at.err(ep, "has neither configMapRef nor secretRef"));
            };
            match self.configs.get(&(kind.to_string(), name.clone())) {
                Some(cfg) => {
                    for (k, v) in &cfg.data {
                        let value = String::from_utf8(v.clone()).map_err(|_| {
                            at.err(
                                ep.clone(),
                                format!("{kind} {name} key {k:?} is not UTF-8 text"),
                            )
                        })?;
                        put(EnvVar {
                            name: format!("{prefix}{k}"),
                            value: Some(value),
                            field: None,
                            from: Some(format!("{kind}/{name}[{k}]")),
                            secret: cfg.secret,
                        });
                    }
                }
                None if optional == Some(true) => {}
                None => return Err(at.err(ep, format!("{kind} {name} is not part of the chart"))),
            }
        }
        for (i, e) in c.env.iter().flatten().enumerate() {
            let ep = format!("{path}.env[{i}]");
            let var = match &e.value_from {
                None => EnvVar {
                    name: e.name.clone(),
                    value: Some(e.value.clone().unwrap_or_default()),
                    field: None,
                    from: None,
                    secret: false,
                },
                Some(src) => {
                    if let Some(r) = src
                        .config_map_key_ref
                        .as_ref()
                        .map(|r| ("ConfigMap", &r.name, &r.key, r.optional))
                        .or_else(|| {
                            src.secret_key_ref
                                .as_ref()
                                .map(|r| ("Secret", &r.name, &r.key, r.optional))
                        })
                    {
                        let (kind, name, key, optional) = r;
                        match self
                            .configs
                            .get(&(kind.to_string(), name.clone()))
                            .and_then(|c| c.data.get(key).map(|v| (c.secret, v)))
                        {
                            Some((secret, v)) => EnvVar {
                                name: e.name.clone(),
                                value: Some(String::from_utf8(v.clone()).map_err(|_| {
                                    at.err(
                                        ep.clone(),
                                        format!("{kind} {name} key {key:?} is not UTF-8 text"),
                                    )
                                })?),
                                field: None,
                                from: Some(format!("{kind}/{name}[{key}]")),
                                secret,
                            },
                            None if optional == Some(true) => continue,
                            None => {
                                return Err(at.err(
                                    ep,
                                    format!("{kind} {name} (key {key:?}) is not part of the chart"),
                                ));
                            }
                        }
                    } else if let Some(f) = &src.field_ref {
                        let (value, field) = match f.field_path.as_str() {
                            "metadata.name" => (None, Some(PodField::PodName)),
                            "metadata.namespace" => (Some(self.opts.namespace.to_string()), None),
                            "metadata.uid" => (None, Some(PodField::PodUid)),
                            "status.podIP" | "status.podIPs" => (None, Some(PodField::PodIp)),
                            "spec.nodeName" => (None, Some(PodField::NodeName)),
                            "status.hostIP" | "status.hostIPs" => (None, Some(PodField::HostIp)),
                            "spec.serviceAccountName" => (None, Some(PodField::ServiceAccountName)),
                            other => return Err(at.err(format!("{ep}.valueFrom.fieldRef.fieldPath"), format!("{other:?} is not supported (metadata.name, metadata.namespace, metadata.uid, status.podIP, status.hostIP, spec.nodeName, spec.serviceAccountName)"))),
                        };
                        EnvVar {
                            name: e.name.clone(),
                            value,
                            field,
                            from: Some(f.field_path.clone()),
                            secret: false,
                        }
                    } else if src.resource_field_ref.is_some() {
                        return Err(at.err(
                            format!("{ep}.valueFrom.resourceFieldRef"),
                            "not supported: put the value in the chart's values",
                        ));
                    } else {
                        return Err(at.err(format!("{ep}.valueFrom"), "has no source"));
                    }
                }
            };
            put(var);
        }

        // Resources.
        let mut resources = Resources::default();
        if let Some(r) = &c.resources {
            for (which, map) in [("limits", &r.limits), ("requests", &r.requests)] {
                for (k, q) in map.iter().flatten() {
                    let fp = format!("{path}.resources.{which}.{k}");
                    match k.as_str() {
                        "cpu" => {
                            let m = millicores(q).map_err(|m| at.err(fp, m))?;
                            if which == "limits" {
                                resources.cpu_limit_millis = Some(m)
                            } else {
                                resources.cpu_request_millis = Some(m)
                            }
                        }
                        "memory" => {
                            let b = bytes(q).map_err(|m| at.err(fp, m))?;
                            if which == "limits" {
                                resources.memory_limit_bytes = Some(b)
                            } else {
                                resources.memory_request_bytes = Some(b)
                            }
                        }
                        other => self.warn(
                            d,
                            format!("{fp} ignored: resource {other} is not managed on edges"),
                        ),
                    }
                }
            }
            if r.claims.as_ref().is_some_and(|c| !c.is_empty()) {
                self.warn(d, format!("{path}.resources.claims ignored: dynamic resources are not managed on edges"));
            }
        }

        // Security.
        let sc = c.security_context.clone().unwrap_or_default();
        self.fields(
            d,
            raw.and_then(|r| r.get("securityContext")),
            &format!("{path}.securityContext"),
            &|k| {
                Some(match k {
                    "runAsUser"
                    | "runAsGroup"
                    | "runAsNonRoot"
                    | "readOnlyRootFilesystem"
                    | "allowPrivilegeEscalation"
                    | "capabilities"
                    | "seccompProfile"
                    | "procMount"
                    | "windowsOptions"
                    | "privileged" => Policy::Known,
                    "seLinuxOptions" | "appArmorProfile" => {
                        Policy::Warn("the engine's default confinement is used")
                    }
                    _ => return None,
                })
            },
        )?;
        if sc.privileged == Some(true) {
            return Err(at.err(
                format!("{path}.securityContext.privileged"),
                "not supported: privileged containers control the edge host",
            ));
        }
        if sc.proc_mount.as_deref() == Some("Unmasked") {
            return Err(at.err(
                format!("{path}.securityContext.procMount"),
                "not supported: Unmasked",
            ));
        }
        if sc
            .seccomp_profile
            .as_ref()
            .is_some_and(|p| p.type_ == "Unconfined")
        {
            return Err(at.err(
                format!("{path}.securityContext.seccompProfile"),
                "not supported: Unconfined",
            ));
        }
        let caps = sc.capabilities.clone().unwrap_or_default();
        let security = ContainerSecurity {
            run_as_user: sc.run_as_user.or(pod_sec.run_as_user),
            run_as_group: sc.run_as_group.or(pod_sec.run_as_group),
            run_as_non_root: sc
                .run_as_non_root
                .or(pod_sec.run_as_non_root)
                .unwrap_or(false),
            read_only_root_filesystem: sc.read_only_root_filesystem.unwrap_or(false),
            no_new_privileges: sc.allow_privilege_escalation == Some(false),
            capabilities_add: caps.add.unwrap_or_default(),
            capabilities_drop: caps.drop.unwrap_or_default(),
        };
        if security.run_as_non_root && security.run_as_user == Some(0) {
            return Err(at.err(
                format!("{path}.securityContext"),
                "runAsNonRoot with runAsUser 0 can never start",
            ));
        }

        // Mounts.
        let mut volume_mounts = Vec::new();
        for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
            let mp = format!("{path}.volumeMounts[{i}]");
            if m.sub_path_expr.as_deref().is_some_and(|s| !s.is_empty()) {
                return Err(at.err(format!("{mp}.subPathExpr"), "not supported: use subPath"));
            }
            if m.mount_propagation.as_deref().is_some_and(|p| p != "None") {
                return Err(at.err(format!("{mp}.mountPropagation"), "not supported"));
            }
            if !m.mount_path.starts_with('/') {
                return Err(at.err(format!("{mp}.mountPath"), "must be an absolute path"));
            }
            let sub_path = m.sub_path.clone().filter(|s| !s.is_empty());
            if let Some(s) = &sub_path
                && (s.starts_with('/') || s.split('/').any(|p| p == ".."))
            {
                return Err(at.err(
                    format!("{mp}.subPath"),
                    "must be a relative path inside the volume",
                ));
            }
            // StatefulSet claim templates are checked by the caller (they are not pod volumes).
            if kind != WorkloadKind::StatefulSet && !volumes.iter().any(|v| v.name == m.name) {
                return Err(at.err(
                    mp,
                    format!("mounts volume {:?}, which the pod does not have", m.name),
                ));
            }
            volume_mounts.push(Mount {
                volume: m.name.clone(),
                mount_path: m.mount_path.clone(),
                sub_path,
                read_only: m.read_only.unwrap_or(false),
            });
        }

        Ok(Container {
            name: c.name.clone(),
            image,
            image_pull_policy,
            command: c.command.clone().unwrap_or_default(),
            args: c.args.clone().unwrap_or_default(),
            working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
            env,
            ports,
            liveness_probe,
            readiness_probe,
            startup_probe,
            resources,
            volume_mounts,
            security,
            tty: c.tty.unwrap_or(false),
            stdin: c.stdin.unwrap_or(false),
        })
    }

    fn service(
        &mut self,
        d: &Document,
        workloads: &[Workload],
    ) -> Result<Option<Service>, AnalyzeError> {
        let at = At { doc: d };
        let svc: core::Service = self.typed(d)?;
        let spec = svc.spec.unwrap_or_default();
        self.fields(d, d.object.get("spec"), "spec", &|k| {
            Some(match k {
                "type"
                | "ports"
                | "selector"
                | "clusterIP"
                | "clusterIPs"
                | "sessionAffinity"
                | "sessionAffinityConfig"
                | "ipFamilies"
                | "ipFamilyPolicy"
                | "internalTrafficPolicy"
                | "externalTrafficPolicy"
                | "healthCheckNodePort"
                | "allocateLoadBalancerNodePorts"
                | "loadBalancerClass"
                | "loadBalancerIP"
                | "loadBalancerSourceRanges"
                | "trafficDistribution" => Policy::Known,
                "publishNotReadyAddresses" => {
                    Policy::Warn("the name resolves to running containers whether ready or not")
                }
                "externalIPs" => Policy::Warn("external IPs are not assigned on an edge"),
                "externalName" => Policy::Known,
                _ => return None,
            })
        })?;
        let service_type = match spec.type_.as_deref() {
            None | Some("ClusterIP") => ServiceType::ClusterIP,
            Some("NodePort") => ServiceType::NodePort,
            Some("LoadBalancer") => {
                self.warn(d, "type LoadBalancer: published on the edge host like a NodePort service (no load balancer on an edge)");
                ServiceType::NodePort
            }
            Some("ExternalName") => {
                return Err(at.err(
                    "spec.type",
                    "ExternalName services are not supported (a DNS alias to another host)",
                ));
            }
            Some(other) => return Err(at.err("spec.type", format!("unknown type {other:?}"))),
        };
        let mut ports = Vec::new();
        for (i, p) in spec.ports.iter().flatten().enumerate() {
            let pp = format!("spec.ports[{i}]");
            let port_no = port(p.port).map_err(|m| at.err(format!("{pp}.port"), m))?;
            let target_port = match &p.target_port {
                None => TargetPort::Number(port_no),
                Some(IntOrString::Int(n)) => {
                    TargetPort::Number(port(*n).map_err(|m| at.err(format!("{pp}.targetPort"), m))?)
                }
                Some(IntOrString::String(s)) => match s.parse::<i32>() {
                    Ok(n) => TargetPort::Number(
                        port(n).map_err(|m| at.err(format!("{pp}.targetPort"), m))?,
                    ),
                    Err(_) => TargetPort::Name(s.clone()),
                },
            };
            let node_port = match service_type {
                ServiceType::NodePort => p
                    .node_port
                    .filter(|n| *n != 0)
                    .map(|n| port(n).map_err(|m| at.err(format!("{pp}.nodePort"), m)))
                    .transpose()?,
                ServiceType::ClusterIP => None,
            };
            if service_type == ServiceType::NodePort && node_port.is_none() {
                self.warn(d, format!("{pp}.nodePort is not set: the edge publishes the service port {port_no} on the host"));
            }
            ports.push(ServicePort {
                name: p.name.clone(),
                port: port_no,
                target_port,
                protocol: protocol(p.protocol.as_deref())
                    .map_err(|m| at.err(format!("{pp}.protocol"), m))?,
                node_port: node_port.or((service_type == ServiceType::NodePort).then_some(port_no)),
            });
        }
        let selector = spec.selector.unwrap_or_default();
        if selector.is_empty() {
            self.warn(
                d,
                "skipped: a Service without a selector has no endpoints on an edge",
            );
            return Ok(None);
        }
        let selected: Vec<String> = workloads
            .iter()
            .filter(|w| selector.iter().all(|(k, v)| w.labels.get(k) == Some(v)))
            .map(|w| w.name.clone())
            .collect();
        if selected.is_empty() {
            self.warn(d, "selects no workload of the chart");
        }
        for sp in &ports {
            if let TargetPort::Name(n) = &sp.target_port {
                for w in workloads.iter().filter(|w| selected.contains(&w.name)) {
                    if !w
                        .containers
                        .iter()
                        .flat_map(|c| &c.ports)
                        .any(|p| p.name.as_deref() == Some(n))
                    {
                        return Err(at.err(
                            "spec.ports",
                            format!(
                                "targetPort {n:?} is not a port of the selected workload {}",
                                w.name
                            ),
                        ));
                    }
                }
            }
        }
        Ok(Some(Service {
            name: d.name().into(),
            template: d.source.clone(),
            service_type,
            headless: spec.cluster_ip.as_deref() == Some("None"),
            ports,
            selector,
            workloads: selected,
        }))
    }
}

fn replicas(r: Option<i32>) -> u32 {
    r.unwrap_or(1).max(0) as u32
}

fn port(n: i32) -> Result<u16, String> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{n} is not a port (1-65535)"))
}

fn protocol(p: Option<&str>) -> Result<Protocol, String> {
    match p {
        None | Some("TCP") => Ok(Protocol::Tcp),
        Some("UDP") => Ok(Protocol::Udp),
        Some(other) => Err(format!("{other} is not supported (TCP or UDP)")),
    }
}

/// Splits a quantity into its number and suffix.
fn split_quantity(q: &str) -> Result<(f64, &str), String> {
    let q = q.trim();
    let end = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(end);
    // An exponent (`1e3`, `12E6`) belongs to the number.
    let (num, suffix) = if let Some(exp) = suffix.strip_prefix(['e', 'E'])
        && !exp.is_empty()
        && exp
            .trim_start_matches(['+', '-'])
            .chars()
            .all(|c| c.is_ascii_digit())
    {
        (q, "")
    } else {
        (num, suffix)
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{q:?} is not a quantity"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("{q:?} is not a quantity"));
    }
    Ok((n, suffix))
}

/// A memory or storage quantity in bytes (`128Mi`, `1G`, `1e9`, `500m` rounds up).
pub fn bytes(q: &Quantity) -> Result<u64, String> {
    let (n, suffix) = split_quantity(&q.0)?;
    let mult: f64 = match suffix {
        "" => 1.0,
        "m" => 0.001,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        other => return Err(format!("{:?}: unknown unit {other:?}", q.0)),
    };
    let v = (n * mult).ceil();
    if v > u64::MAX as f64 {
        return Err(format!("{:?} is too large", q.0));
    }
    Ok(v as u64)
}

/// A CPU quantity in millicores (`500m`, `1`, `0.25`).
pub fn millicores(q: &Quantity) -> Result<u64, String> {
    let (n, suffix) = split_quantity(&q.0)?;
    let v = match suffix {
        "" => n * 1000.0,
        "m" => n,
        "k" => n * 1e6,
        other => return Err(format!("{:?}: unknown CPU unit {other:?}", q.0)),
    };
    Ok(v.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity(s.into())
    }

    fn run(yaml: &str) -> Result<AppModel, AnalyzeError> {
        let docs = crate::manifest::parse(yaml).unwrap();
        analyze(
            &docs,
            &AnalyzeOptions {
                namespace: "ns",
                ignored_resources: &[],
            },
        )
    }

    /// A Deployment whose pod spec is `pod` (YAML, indented for `spec.template.spec`) and
    /// whose container is `container` (YAML, indented for the container's fields).
    fn deployment(pod: &str, container: &str) -> String {
        format!(
            "---\n# Source: c/templates/d.yaml\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  selector:\n    matchLabels: {{app: d}}\n  template:\n    metadata:\n      labels: {{app: d}}\n    spec:\n{pod}      containers:\n        - name: c\n          image: img:1\n{container}"
        )
    }

    fn refused(pod: &str, container: &str, field: &str) {
        let e = run(&deployment(pod, container)).unwrap_err();
        assert_eq!(e.template, "c/templates/d.yaml");
        assert_eq!(e.kind, "Deployment");
        assert!(e.field.ends_with(field), "{field}: {e}");
    }

    #[test]
    fn fields_that_would_change_behaviour_are_refused() {
        refused(
            "      hostNetwork: true\n",
            "",
            "spec.template.spec.hostNetwork",
        );
        refused("      hostPID: true\n", "", "hostPID");
        refused(
            "",
            "          securityContext: {privileged: true}\n",
            "securityContext.privileged",
        );
        refused(
            "      volumes:\n        - name: h\n          hostPath: {path: /etc}\n",
            "",
            "volumes[0].hostPath",
        );
        refused(
            "",
            "          livenessProbe: {grpc: {port: 9000}}\n",
            "livenessProbe.grpc",
        );
        refused(
            "",
            "          restartPolicy: Always\n",
            "containers[0].restartPolicy",
        );
        refused(
            "",
            "          env: [{name: X, valueFrom: {configMapKeyRef: {name: missing, key: k}}}]\n",
            "env[0]",
        );
        refused(
            "",
            "          readinessProbe: {httpGet: {port: web}}\n",
            "readinessProbe.httpGet.port",
        );
        refused(
            "",
            "          volumeMounts: [{name: nowhere, mountPath: /x}]\n",
            "volumeMounts[0]",
        );
        refused(
            "",
            "          ports: [{containerPort: 70000}]\n",
            "ports[0].containerPort",
        );
        refused(
            "      securityContext: {sysctls: [{name: a, value: b}]}\n",
            "",
            "securityContext.sysctls",
        );
        let e = run(&deployment(
            "",
            "          ports: [{containerPort: 80, hostPort: 8080}]\n",
        )
        .replace("  selector:", "  replicas: 2\n  selector:"))
        .unwrap_err();
        assert!(e.message.contains("hostPort 8080 with 2 replicas"), "{e}");
        // The harmless value of a refused field is fine.
        run(&deployment("      hostNetwork: false\n", "")).unwrap();
    }

    #[test]
    fn ignored_fields_warn_and_unknown_fields_are_never_silent() {
        let m = run(&deployment(
            "      dnsConfig: {nameservers: [1.1.1.1]}\n      nodeSelector: {disk: ssd}\n",
            "          lifecycle: {preStop: {exec: {command: [x]}}}\n          madeUpField: 1\n",
        ))
        .unwrap();
        let texts: Vec<String> = m.warnings.iter().map(|w| w.to_string()).collect();
        assert!(
            texts
                .iter()
                .any(|t| t.contains("spec.template.spec.dnsConfig ignored")),
            "{texts:?}"
        );
        assert!(
            texts
                .iter()
                .any(|t| t.contains("containers[0].lifecycle ignored")),
            "{texts:?}"
        );
        assert!(
            texts
                .iter()
                .any(|t| t
                    .contains("containers[0].madeUpField ignored: a field Canopy does not know")),
            "{texts:?}"
        );
        // Scheduling hints mean nothing on one host and are documented, not warned about.
        assert!(
            !texts.iter().any(|t| t.contains("nodeSelector")),
            "{texts:?}"
        );
    }

    #[test]
    fn defaults_are_filled_like_kubernetes() {
        let m = run(&deployment(
            "",
            "          readinessProbe: {tcpSocket: {port: 80}}\n",
        ))
        .unwrap();
        let c = &m.workloads[0].containers[0];
        assert_eq!(c.image_pull_policy, PullPolicy::IfNotPresent);
        let p = c.readiness_probe.as_ref().unwrap();
        assert_eq!(
            (
                p.period_seconds,
                p.timeout_seconds,
                p.success_threshold,
                p.failure_threshold
            ),
            (10, 1, 1, 3)
        );
        assert_eq!(m.workloads[0].replicas, 1);
        assert_eq!(m.workloads[0].termination_grace_period_seconds, 30);
        let latest = run(&deployment("", "").replace("img:1", "img:latest")).unwrap();
        assert_eq!(
            latest.workloads[0].containers[0].image_pull_policy,
            PullPolicy::Always
        );
        let untagged = run(&deployment("", "").replace("img:1", "registry:5000/img")).unwrap();
        assert_eq!(
            untagged.workloads[0].containers[0].image_pull_policy,
            PullPolicy::Always
        );
    }

    #[test]
    fn services_and_selectors() {
        let base = deployment("", "          ports: [{name: web, containerPort: 8080}]\n");
        let lb = format!(
            "{base}---\n# Source: c/templates/s.yaml\napiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  type: LoadBalancer\n  selector: {{app: d}}\n  ports: [{{port: 80, targetPort: web}}]\n"
        );
        let m = run(&lb).unwrap();
        assert_eq!(m.services[0].service_type, ServiceType::NodePort);
        assert_eq!(m.services[0].workloads, vec!["d".to_string()]);
        assert!(
            m.warnings
                .iter()
                .any(|w| w.message.contains("LoadBalancer"))
        );
        let e = run(&lb.replace("LoadBalancer", "ExternalName")).unwrap_err();
        assert_eq!(e.field, "spec.type");
        let e = run(&lb.replace("targetPort: web", "targetPort: nope")).unwrap_err();
        assert!(e.message.contains("targetPort \"nope\""), "{e}");
        let mismatch = base.replace("matchLabels: {app: d}", "matchLabels: {app: other}");
        let e = run(&mismatch).unwrap_err();
        assert_eq!(e.field, "spec.selector.matchLabels");
    }

    #[test]
    fn kinds_and_api_versions() {
        let doc = |api: &str, kind: &str| {
            format!(
                "---\n# Source: c/templates/x.yaml\napiVersion: {api}\nkind: {kind}\nmetadata:\n  name: x\n"
            )
        };
        let e = run(&doc("extensions/v1beta1", "Deployment")).unwrap_err();
        assert_eq!(e.field, "apiVersion");
        let e = run(&doc("batch/v1", "CronJob")).unwrap_err();
        assert!(e.message.contains("CronJob is not supported"), "{e}");
        let e = run(&doc("example.com/v1", "Widget")).unwrap_err();
        assert!(
            e.to_string()
                .contains("template c/templates/x.yaml: Widget x"),
            "{e}"
        );
        let m = run(&doc("policy/v1", "PodDisruptionBudget")).unwrap();
        assert_eq!(m.warnings[0].kind, "PodDisruptionBudget");
        // Dropped through ignoredResources: a webhook configuration has no meaning on an edge.
        let docs = crate::manifest::parse(&doc(
            "admissionregistration.k8s.io/v1",
            "ValidatingWebhookConfiguration",
        ))
        .unwrap();
        let ignored = [ResourceReference {
            name: "x".into(),
            kind: "ValidatingWebhookConfiguration".into(),
            namespace: String::new(),
        }];
        let m = analyze(
            &docs,
            &AnalyzeOptions {
                namespace: "ns",
                ignored_resources: &ignored,
            },
        )
        .unwrap();
        assert_eq!(m.ignored[0].effect, IgnoredEffect::Dropped);
    }

    #[test]
    fn quantities() {
        assert_eq!(bytes(&q("128Mi")).unwrap(), 128 * 1024 * 1024);
        assert_eq!(bytes(&q("1G")).unwrap(), 1_000_000_000);
        assert_eq!(bytes(&q("1e3")).unwrap(), 1000);
        assert_eq!(bytes(&q("129e6")).unwrap(), 129_000_000);
        assert_eq!(bytes(&q("1.5Gi")).unwrap(), 1_610_612_736);
        assert!(bytes(&q("12 parsecs")).is_err());
        assert!(bytes(&q("-1Mi")).is_err());
        assert_eq!(millicores(&q("500m")).unwrap(), 500);
        assert_eq!(millicores(&q("2")).unwrap(), 2000);
        assert_eq!(millicores(&q("0.25")).unwrap(), 250);
        assert!(millicores(&q("1Gi")).is_err());
    }
}
