//! Helm apps on the container driver: an app whose desired state carries
//! [`PodApp`](canopy_proto::pods::PodApp) (the control plane's translation of the rendered
//! chart) runs as Kubernetes would run it, with the engine's containers, networks and volumes.
//!
//! - **Pods** ([`plan`]): each replica of a workload is a pod: an infra container running the
//!   agent's own pause image ([`pause`]) holds the pod's network namespace, its names in the
//!   namespace network (Services) and its host ports; the init containers, then the containers,
//!   join it (`network_mode: container:<infra>`), so they reach each other on 127.0.0.1. Init
//!   containers run in order, each to completion, a failing one retried with backoff.
//! - **Kinds**: Deployments, StatefulSets (stable names, a volume per replica and claim
//!   template, ordered start), DaemonSets, Pods, and Jobs ([`job`]: attempts kept as the
//!   record of how far a Job got).
//! - **Volumes**: claims are named volumes kept while the app exists; emptyDir and the files of
//!   ConfigMaps and Secrets ([`files`]) are per pod, written through the infra container.
//! - **Services** ([`plan`], [`proxy`]): DNS aliases; a remapped port or a node port of several
//!   pods is forwarded by the agent.
//! - **Probes** ([`probe`]): run by the agent in the background, readiness gating the app.
//! - **Status** ([`report`]): each pod reported with its containers, the app's state from
//!   the pods' readiness and the Jobs' outcomes.
//!
//! Everything is found again by labels after an agent restart (`names::POD_APP` and the pod
//! labels), so adoption, replacement of what changed (per pod, by its template hash) and
//! removal work as for native apps. `converge` holds the engine-facing part.

use std::sync::Arc;

use bollard::Docker;
use tokio::sync::Notify;

pub(super) mod body;
mod converge;
pub(super) mod files;
pub(super) mod job;
pub(super) mod pause;
pub(super) mod plan;
pub(super) mod probe;
pub(super) mod proxy;
pub(super) mod report;

/// What the container driver keeps for Helm apps between passes: the probe runner, the service
/// proxy, and whether the pause image is there. Shared by the driver's clones.
pub(crate) struct PodRuntime {
    pub(super) prober: probe::Prober,
    pub(super) proxy: proxy::Proxy,
    /// Told when the probes or the proxy change what a report would say.
    pub(super) changed: Arc<Notify>,
    /// The engine's architecture (`amd64`, `arm64`), for the pause image.
    pub(super) arch: String,
    /// Whether the pause image is present (checked once, imported when missing).
    pub(super) pause_ready: tokio::sync::Mutex<bool>,
}

impl std::fmt::Debug for PodRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodRuntime")
            .field("arch", &self.arch)
            .field("proxy", &self.proxy)
            .finish_non_exhaustive()
    }
}

impl PodRuntime {
    pub(super) fn new(docker: Docker, arch: String) -> PodRuntime {
        let changed = Arc::new(Notify::new());
        PodRuntime {
            prober: probe::Prober::new(docker, Arc::clone(&changed)),
            proxy: proxy::Proxy::default(),
            changed,
            arch,
            pause_ready: tokio::sync::Mutex::new(false),
        }
    }
}
