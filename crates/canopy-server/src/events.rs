//! Per-project catalog change events. Writers publish after their transaction commits; each
//! subscriber gets a bounded channel (a subscriber that falls too far behind is told to resync
//! rather than slowing writers down). Channels are keyed by project, so nothing crosses projects.

use std::collections::HashMap;
use std::sync::Mutex;

use canopy_store::ProjectId;
use serde::Serialize;
use tokio::sync::broadcast;
use utoipa::ToSchema;

/// How many events a slow subscriber may lag before it must resync.
const CHANNEL_CAPACITY: usize = 1024;

/// What happened to an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventOp {
    Created,
    Updated,
    Deleted,
    /// Sent on subscribe for every entity that exists (unless `noReplay`).
    Replayed,
}

/// Which entity type an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
pub enum EventKind {
    Registry,
    Application,
    DeploymentPackage,
    Artifact,
}

impl EventKind {
    /// Parses the spelling used in `kinds=` (case-insensitive).
    pub fn parse(s: &str) -> Option<EventKind> {
        match s.trim().to_ascii_lowercase().as_str() {
            "registry" | "registries" => Some(EventKind::Registry),
            "application" | "applications" => Some(EventKind::Application),
            "deploymentpackage"
            | "deployment-package"
            | "deployment_packages"
            | "deploymentpackages" => Some(EventKind::DeploymentPackage),
            "artifact" | "artifacts" => Some(EventKind::Artifact),
            _ => None,
        }
    }
}

/// One catalog change. `payload` is the entity's JSON (registries without secrets); for
/// deletions it holds the key fields only.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CatalogEvent {
    pub op: EventOp,
    pub kind: EventKind,
    pub project: String,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

/// The per-project fan-out.
#[derive(Default)]
pub struct EventBus {
    channels: Mutex<HashMap<ProjectId, broadcast::Sender<CatalogEvent>>>,
}

impl EventBus {
    /// Subscribes to a project's events from now on.
    pub fn subscribe(&self, project: ProjectId) -> broadcast::Receiver<CatalogEvent> {
        let mut map = self.channels.lock().expect("event bus lock poisoned");
        map.entry(project)
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe()
    }

    /// Publishes committed changes. Cheap when nobody listens.
    pub fn publish(&self, project: ProjectId, events: Vec<CatalogEvent>) {
        let mut map = self.channels.lock().expect("event bus lock poisoned");
        let Some(tx) = map.get(&project) else { return };
        if tx.receiver_count() == 0 {
            map.remove(&project);
            return;
        }
        for e in events {
            let _ = tx.send(e);
        }
    }
}
