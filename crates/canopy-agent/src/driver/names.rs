//! Engine object names and labels: the only link between what the desired state says and what
//! exists in the engine.
//!
//! Names are derived, never stored: after an agent restart the same desired state yields the same
//! names, which is what makes adoption possible. Labels mark what Canopy created; everything the
//! driver lists, replaces or removes is selected by [`MANAGED`] first, so objects made by anyone
//! else are never touched.
//!
//! **Ownership.** Several agents may share one engine (two `canopy up` on one machine, several
//! edges enrolled on one host). Each agent owns exactly the objects labelled with its scope
//! ([`SCOPE`]: the edge's id, given by the control plane at enrollment), and the scope is part of
//! every name ([`owner_tag`]), so two agents deploying the same deployment never want the same
//! container, volume or network. Objects of an earlier release carry no scope ([`is_legacy`]):
//! nothing proves which agent made them, so an agent only replaces such containers and reuses
//! such volumes when their deployment is in its own desired state, and otherwise leaves them.

use std::collections::HashMap;

use canopy_proto::{AppInstance, DeploymentInstance};

/// `true` on every container, network and volume Canopy creates.
pub const MANAGED: &str = "io.canopy.managed";
/// Project (name) of the deployment.
pub const PROJECT: &str = "io.canopy.project";
/// Deployment id.
pub const DEPLOYMENT: &str = "io.canopy.deployment";
/// Application name.
pub const APP: &str = "io.canopy.app";
/// The app's `spec_hash` the container was created from.
pub const GENERATION: &str = "io.canopy.generation";
/// Container name within the app spec.
pub const CONTAINER: &str = "io.canopy.container";
/// Network namespace (on networks).
pub const NAMESPACE: &str = "io.canopy.namespace";
/// Volume name within the app spec (on volumes).
pub const VOLUME: &str = "io.canopy.volume";
/// Which agent owns the object: the edge id (see `DockerDriver::scoped`). Objects of releases
/// before ownership have none.
pub const SCOPE: &str = "io.canopy.scope";

// Objects of Helm apps' pods (driver/pods): every one carries `POD_APP`; containers also their
// pod, role, workload and slot; per-pod volumes their pod. `GENERATION` holds the pod's hash.

/// `true` on every container and volume of a Helm app's pods, services and claims.
pub const POD_APP: &str = "io.canopy.pods";
/// The pod's name (containers, per-pod volumes).
pub const POD: &str = "io.canopy.pod";
/// `infra`, `init`, `container` or `service`.
pub const ROLE: &str = "io.canopy.role";
/// The chart workload's name.
pub const WORKLOAD: &str = "io.canopy.workload";
/// The pod's ordinal (replica index, a Job's attempt).
pub const SLOT: &str = "io.canopy.slot";
/// A Job's start (RFC 3339), the same on each of its attempts.
pub const JOB_START: &str = "io.canopy.job-start";
/// The Service of a service container.
pub const SERVICE: &str = "io.canopy.service";
/// `claim`, `empty-dir` or `files` (volumes of pod apps).
pub const VOLUME_KIND: &str = "io.canopy.volume-kind";
/// `true` on the volume of a claim that outlives its app (`Claim::keep`): garbage collection
/// leaves it alone.
pub const KEEP: &str = "io.canopy.keep";

/// Maps `s` onto the characters engines accept in object names (`[a-z0-9_.-]`), lowercased.
/// Canopy's own identifiers already qualify; this only guards against surprises.
pub fn slug(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if out.is_empty() {
        out.push('x');
    }
    out
}

/// The first 12 letters and digits of a deployment id (a UUID's dashes are dropped), like an
/// engine's short container id: enough to keep names unique and readable.
pub fn short_id(deployment_id: &str) -> String {
    let s: String = deployment_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .take(12)
        .collect();
    if s.is_empty() { "x".into() } else { s }
}

/// The name prefix of an owner's objects: `canopy-<tag>`, where the tag is the first 8 hex digits
/// of the SHA-256 of the scope (an edge id is a UUID; a hash keeps names short and spreads any
/// scope string evenly). Without a scope, `canopy` (the names of earlier releases).
pub fn owner_tag(scope: Option<&str>) -> String {
    use sha2::{Digest, Sha256};
    match scope {
        Some(scope) => {
            let hash = Sha256::digest(scope.as_bytes());
            let hex: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
            format!("canopy-{hex}")
        }
        None => "canopy".to_string(),
    }
}

/// `<prefix>-<project>-<namespace>`: one network per application namespace of a project.
pub fn network_name(scope: Option<&str>, project: &str, namespace: &str) -> String {
    format!("{}-{}-{}", owner_tag(scope), slug(project), slug(namespace))
}

/// `<prefix>-<deployment id>-<app>-<volume>`: no version in it, so data survives upgrades.
pub fn volume_name(scope: Option<&str>, deployment_id: &str, app: &str, volume: &str) -> String {
    format!(
        "{}-{}-{}-{}",
        owner_tag(scope),
        slug(deployment_id),
        slug(app),
        slug(volume)
    )
}

/// `<prefix>-<short deployment id>-<app>-<container>`.
pub fn container_name(
    scope: Option<&str>,
    deployment_id: &str,
    app: &str,
    container: &str,
) -> String {
    format!(
        "{}-{}-{}-{}",
        owner_tag(scope),
        short_id(deployment_id),
        slug(app),
        slug(container)
    )
}

/// `<prefix>-<short deployment id>-<app>`: the start of the names of a Helm app's objects.
/// Pod names are DNS labels (no `_`), so `_` separates the parts that follow.
pub fn pod_app_prefix(scope: Option<&str>, deployment_id: &str, app: &str) -> String {
    format!(
        "{}-{}-{}",
        owner_tag(scope),
        short_id(deployment_id),
        slug(app)
    )
}

/// A pod's infra container (`container` none: `<app prefix>_<pod>`) or one of its
/// containers, init containers included (`<app prefix>_<pod>_<container>`).
pub fn pod_container_name(
    scope: Option<&str>,
    deployment_id: &str,
    app: &str,
    pod: &str,
    container: Option<&str>,
) -> String {
    let prefix = pod_app_prefix(scope, deployment_id, app);
    match container {
        Some(c) => format!("{prefix}_{}_{}", slug(pod), slug(c)),
        None => format!("{prefix}_{}", slug(pod)),
    }
}

/// A proxied Service's container: `<app prefix>__svc_<service>`.
pub fn service_container_name(
    scope: Option<&str>,
    deployment_id: &str,
    app: &str,
    service: &str,
) -> String {
    format!(
        "{}__svc_{}",
        pod_app_prefix(scope, deployment_id, app),
        slug(service)
    )
}

/// A claim's volume (PersistentVolumeClaim, or a StatefulSet replica's claim-template volume):
/// `<prefix>-<deployment id>-<app>__pvc_<claim>`, no version or pod in it, so its data survives
/// upgrades and pod replacements.
pub fn claim_volume_name(
    scope: Option<&str>,
    deployment_id: &str,
    app: &str,
    claim: &str,
) -> String {
    format!(
        "{}-{}-{}__pvc_{}",
        owner_tag(scope),
        slug(deployment_id),
        slug(app),
        slug(claim)
    )
}

/// A pod's own volume (emptyDir, files): `<prefix>-<deployment id>-<app>_<pod>_<volume>`.
pub fn pod_volume_name(
    scope: Option<&str>,
    deployment_id: &str,
    app: &str,
    pod: &str,
    volume: &str,
) -> String {
    format!(
        "{}-{}-{}_{}_{}",
        owner_tag(scope),
        slug(deployment_id),
        slug(app),
        slug(pod),
        slug(volume)
    )
}

/// Labels of an object of a Helm app (container or volume): the app's labels and
/// [`POD_APP`], plus `extra`.
pub fn pod_app_labels(
    scope: Option<&str>,
    dep: &DeploymentInstance,
    app: &AppInstance,
    extra: &[(&str, &str)],
) -> HashMap<String, String> {
    let mut l = base(scope);
    l.insert(PROJECT.into(), dep.project.clone());
    l.insert(DEPLOYMENT.into(), dep.deployment_id.clone());
    l.insert(APP.into(), app.name.clone());
    l.insert(POD_APP.into(), "true".into());
    for (k, v) in extra {
        l.insert((*k).to_string(), (*v).to_string());
    }
    l
}

/// Network aliases of a container: its spec name and `<app>-<container>`.
pub fn aliases(app: &str, container: &str) -> Vec<String> {
    let mut v = vec![
        slug(container),
        format!("{}-{}", slug(app), slug(container)),
    ];
    v.dedup();
    v
}

/// Labels every Canopy object carries, plus the scope when there is one.
fn base(scope: Option<&str>) -> HashMap<String, String> {
    let mut l = HashMap::new();
    l.insert(MANAGED.to_string(), "true".to_string());
    if let Some(scope) = scope {
        l.insert(SCOPE.to_string(), scope.to_string());
    }
    l
}

/// Labels of an app's container.
pub fn container_labels(
    scope: Option<&str>,
    dep: &DeploymentInstance,
    app: &AppInstance,
    container: &str,
) -> HashMap<String, String> {
    let mut l = base(scope);
    l.insert(PROJECT.into(), dep.project.clone());
    l.insert(DEPLOYMENT.into(), dep.deployment_id.clone());
    l.insert(APP.into(), app.name.clone());
    l.insert(GENERATION.into(), app.spec_hash.clone());
    l.insert(CONTAINER.into(), container.to_string());
    l
}

/// Labels of a namespace network (shared by the project's deployments, so no deployment label).
pub fn network_labels(
    scope: Option<&str>,
    project: &str,
    namespace: &str,
) -> HashMap<String, String> {
    let mut l = base(scope);
    l.insert(PROJECT.into(), project.to_string());
    l.insert(NAMESPACE.into(), namespace.to_string());
    l
}

/// Labels of an app's named volume.
pub fn volume_labels(
    scope: Option<&str>,
    dep: &DeploymentInstance,
    app: &AppInstance,
    volume: &str,
) -> HashMap<String, String> {
    let mut l = base(scope);
    l.insert(PROJECT.into(), dep.project.clone());
    l.insert(DEPLOYMENT.into(), dep.deployment_id.clone());
    l.insert(APP.into(), app.name.clone());
    l.insert(VOLUME.into(), volume.to_string());
    l
}

/// Engine list filters selecting Canopy's objects (of one scope when given), plus extra labels.
pub fn filters(scope: Option<&str>, extra: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
    let mut labels = vec![format!("{MANAGED}=true")];
    if let Some(scope) = scope {
        labels.push(format!("{SCOPE}={scope}"));
    }
    labels.extend(extra.iter().map(|(k, v)| format!("{k}={v}")));
    HashMap::from([("label".to_string(), labels)])
}

/// Whether an object's labels say Canopy (in this scope, or without a scope when `scope` is
/// none) created it. Checked again in code before anything is removed, whatever the engine's
/// filter did.
pub fn is_ours(labels: Option<&HashMap<String, String>>, scope: Option<&str>) -> bool {
    let Some(labels) = labels else { return false };
    // Unscoped drivers own only unscoped objects: an agent never touches another's.
    labels.get(MANAGED).map(String::as_str) == Some("true")
        && labels.get(SCOPE).map(String::as_str) == scope
}

/// Whether Canopy made the object before objects had owners (managed, no scope): an earlier
/// release's agent, whichever it was.
pub fn is_legacy(labels: Option<&HashMap<String, String>>) -> bool {
    let Some(labels) = labels else { return false };
    labels.get(MANAGED).map(String::as_str) == Some("true") && !labels.contains_key(SCOPE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_shapes() {
        // Without a scope: the names of earlier releases.
        assert_eq!(network_name(None, "shop", "web"), "canopy-shop-web");
        assert_eq!(
            volume_name(None, "3f2a9c1e-7b6d-4e2f-9a1b-0c3d5e7f9a1b", "db", "data"),
            "canopy-3f2a9c1e-7b6d-4e2f-9a1b-0c3d5e7f9a1b-db-data"
        );
        assert_eq!(
            container_name(None, "3f2a9c1e-7b6d-4e2f-9a1b-0c3d5e7f9a1b", "web", "httpd"),
            "canopy-3f2a9c1e7b6d-web-httpd"
        );
        // With one: the owner's tag after `canopy-`.
        let edge = Some("0b7e6f3c-2d4a-4c1e-9f5b-8a7d6c5b4a39");
        let tag = owner_tag(edge);
        assert!(tag.starts_with("canopy-") && tag.len() == 15, "{tag}");
        assert_eq!(network_name(edge, "shop", "web"), format!("{tag}-shop-web"));
        assert_eq!(
            container_name(edge, "3f2a9c1e-7b6d-4e2f-9a1b-0c3d5e7f9a1b", "web", "httpd"),
            format!("{tag}-3f2a9c1e7b6d-web-httpd")
        );
        assert_eq!(short_id("d1"), "d1");
        assert_eq!(aliases("web", "httpd"), vec!["httpd", "web-httpd"]);
    }

    #[test]
    fn pod_objects_never_collide_with_native_ones_or_each_other() {
        let s = Some("edge");
        let tag = owner_tag(s);
        assert_eq!(
            pod_container_name(s, "3f2a9c1e-7b6d", "web", "web-0", None),
            format!("{tag}-3f2a9c1e7b6d-web_web-0")
        );
        assert_eq!(
            pod_container_name(s, "3f2a9c1e-7b6d", "web", "web-0", Some("db")),
            format!("{tag}-3f2a9c1e7b6d-web_web-0_db")
        );
        assert_eq!(
            service_container_name(s, "d1", "web", "api"),
            format!("{tag}-d1-web__svc_api")
        );
        // A pod named like a native container's suffix still differs by the separator.
        assert_ne!(
            pod_container_name(s, "d1", "web", "x", None),
            container_name(s, "d1", "web", "x")
        );
        assert_eq!(
            claim_volume_name(s, "d1", "web", "data-db-0"),
            format!("{tag}-d1-web__pvc_data-db-0")
        );
        assert_ne!(
            pod_volume_name(s, "d1", "web", "pvc", "x"),
            claim_volume_name(s, "d1", "web", "x")
        );
    }

    #[test]
    fn slug_keeps_engine_safe_characters_only() {
        assert_eq!(slug("My App/1"), "my-app-1");
        assert_eq!(slug(""), "x");
        assert_eq!(slug("a_b.c-d"), "a_b.c-d");
    }

    #[test]
    fn ownership_needs_the_managed_label_and_the_scope() {
        let mut l = HashMap::from([(MANAGED.to_string(), "true".to_string())]);
        assert!(is_ours(Some(&l), None));
        assert!(!is_ours(Some(&l), Some("t1")));
        l.insert(SCOPE.into(), "t1".into());
        assert!(is_ours(Some(&l), Some("t1")));
        assert!(!is_ours(Some(&l), Some("t2")));
        assert!(
            !is_ours(Some(&l), None),
            "an unscoped agent leaves scoped objects alone"
        );
        assert!(!is_ours(Some(&HashMap::new()), None));
        assert!(!is_ours(None, None));
    }

    #[test]
    fn two_owners_never_want_the_same_name() {
        let (a, b) = (Some("edge-a"), Some("edge-b"));
        assert_ne!(owner_tag(a), owner_tag(b));
        assert_ne!(
            container_name(a, "d1", "web", "c"),
            container_name(b, "d1", "web", "c")
        );
        assert_ne!(
            volume_name(a, "d1", "web", "v"),
            volume_name(b, "d1", "web", "v")
        );
        assert_ne!(network_name(a, "p", "ns"), network_name(b, "p", "ns"));
        assert_ne!(
            container_name(a, "d1", "web", "c"),
            container_name(None, "d1", "web", "c")
        );
    }

    #[test]
    fn legacy_objects_are_managed_without_a_scope() {
        let mut l = HashMap::from([(MANAGED.to_string(), "true".to_string())]);
        assert!(is_legacy(Some(&l)));
        l.insert(SCOPE.into(), "edge".into());
        assert!(!is_legacy(Some(&l)));
        assert!(!is_legacy(Some(&HashMap::new())), "not Canopy's at all");
        assert!(!is_legacy(None));
    }
}
