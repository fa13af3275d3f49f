//! What an edge must run for a Helm application, in Canopy's terms: workloads (with their
//! containers, volumes, probes), services (names other workloads reach, ports published on the
//! host), persistent claims, and the warnings of the translation. Built by
//! [`crate::analyze`] from the rendered manifests; every value Kubernetes would default is
//! filled in, so the agent never has to know Kubernetes' defaults.
//!
//! Serialized in camelCase (snapshot tests; later the desired state of an edge).

use serde::{Deserialize, Serialize};

/// The wire types of what an edge runs live in `canopy-proto` (the agent reads them); this
/// module adds what only the control plane needs (warnings, ignored objects).
pub use canopy_proto::pods::*;

/// Everything one rendered application asks of an edge.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppModel {
    pub workloads: Vec<Workload>,
    pub services: Vec<Service>,
    /// PersistentVolumeClaims of the chart: named volumes that survive upgrades.
    pub claims: Vec<Claim>,
    /// Objects matched by the application's `ignoredResources`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<IgnoredObject>,
    /// What was skipped or only partly translated.
    pub warnings: Vec<Warning>,
}

/// Something the translation skipped or could not honour, named by kind, name and template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Warning {
    pub kind: String,
    pub name: String,
    pub template: String,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} ({}): {}",
            self.kind, self.name, self.template, self.message
        )
    }
}

/// An object matched by an `ignoredResources` entry, and what that means here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IgnoredObject {
    pub kind: String,
    pub name: String,
    pub template: String,
    /// `dropped` (kinds with no meaning on an edge: webhooks, CRDs, EnvoyFilter) or
    /// `changesIgnored` (translated; later changes to it do not by themselves replace what
    /// runs).
    pub effect: IgnoredEffect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum IgnoredEffect {
    Dropped,
    ChangesIgnored,
}

impl AppModel {
    /// What the edges run: the workloads, services and claims (not the warnings).
    pub fn pods(&self) -> PodApp {
        PodApp {
            workloads: self.workloads.clone(),
            services: self.services.clone(),
            claims: self.claims.clone(),
        }
    }
}
