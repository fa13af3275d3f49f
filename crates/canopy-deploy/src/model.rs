//! The reference deployment manager's REST types (`deployment.v1`, JSON lowerCamelCase as in
//! `deployment-manager.yaml`). Output-only fields are accepted on input and ignored, so a client
//! can GET, modify and PUT back; unknown fields are refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

/// Output-only timestamp, RFC 3339 on the wire.
pub type Timestamp = Option<OffsetDateTime>;

/// A deployment of a deployment package (`appName`/`appVersion`) to edges.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Deployment {
    /// One target applied to every application of the package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_app_target_clusters: Option<TargetClusters>,
    /// Deployment package name.
    pub app_name: String,
    /// Deployment package version.
    pub app_version: String,
    /// Output: apps across every cluster (GET of one deployment only).
    #[serde(default)]
    #[schema(read_only)]
    pub apps: Vec<App>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime, read_only)]
    pub create_time: Timestamp,
    /// Output: the package's default profile.
    #[serde(default)]
    #[schema(read_only)]
    pub default_profile_name: String,
    /// Output: the deployment's id (used in URLs).
    #[serde(default)]
    #[schema(read_only)]
    pub deploy_id: String,
    /// `auto-scaling` (default, also for unknown values) or `targeted`.
    #[serde(default)]
    pub deployment_type: String,
    #[serde(default)]
    pub display_name: String,
    /// Output: generated name `deployment-xxxxx`.
    #[serde(default)]
    #[schema(read_only)]
    pub name: String,
    /// Deprecated interconnect network (accepted, stored, unused).
    #[serde(default)]
    pub network_name: String,
    #[serde(default)]
    pub override_values: Vec<OverrideValues>,
    /// Deployment profile; empty = the package's default profile.
    #[serde(default)]
    pub profile_name: String,
    #[serde(default)]
    pub publisher_name: String,
    /// Deprecated interconnect exports (accepted, stored, unused).
    #[serde(default)]
    pub service_exports: Vec<ServiceExport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(read_only)]
    pub status: Option<DeploymentStatus>,
    #[serde(default)]
    pub target_clusters: Vec<TargetClusters>,
    /// Canopy extension (output): what the charts of Helm applications hold that edges do not
    /// run as Kubernetes would (kinds skipped, fields ignored, hooks dropped), per application,
    /// as of the last create or update. Accepted and ignored on input.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(read_only)]
    pub warnings: Vec<AppWarning>,
}

/// Canopy extension: one thing of a Helm application's chart that edges do not run as
/// Kubernetes would, named by kind, object and template file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppWarning {
    /// The application of the package.
    pub app_name: String,
    /// The Kubernetes kind and name of the object, and the chart's template file.
    pub kind: String,
    pub name: String,
    pub template: String,
    pub message: String,
}

/// Deploy-time values for one application of the package.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OverrideValues {
    pub app_name: String,
    #[serde(default)]
    pub target_namespace: String,
    /// Values merged over the profile's values (a JSON object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub values: Option<serde_json::Value>,
}

/// Where one application (or, in `allAppTargetClusters`, every application) runs: edges carrying
/// all of `labels` (auto-scaling) or the edge `clusterId` (targeted).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetClusters {
    #[serde(default)]
    pub app_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster_id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Deprecated interconnect service export.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceExport {
    pub app_name: String,
    #[serde(default)]
    pub enabled: bool,
}

/// Deployment, cluster or app state.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    #[default]
    Unknown,
    Running,
    Down,
    InternalError,
    Deploying,
    Updating,
    Terminating,
    Error,
    NoTargetClusters,
}

impl State {
    /// The REST spelling (`RUNNING`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "UNKNOWN",
            State::Running => "RUNNING",
            State::Down => "DOWN",
            State::InternalError => "INTERNAL_ERROR",
            State::Deploying => "DEPLOYING",
            State::Updating => "UPDATING",
            State::Terminating => "TERMINATING",
            State::Error => "ERROR",
            State::NoTargetClusters => "NO_TARGET_CLUSTERS",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{state, message, summary}` of a deployment, a cluster of a deployment, or an app.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    pub state: State,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
}

/// Counts: of clusters (`type: "clusterCounts"`, on a deployment) or apps (`"appCounts"`, on a
/// cluster of a deployment).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub total: u32,
    pub running: u32,
    pub down: u32,
    pub unknown: u32,
    #[serde(rename = "type")]
    pub summary_type: String,
}

/// An app of a deployment (on one cluster, or flattened across clusters).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct App {
    /// Unique id of the app within the deployment (stable across updates).
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DeploymentStatus>,
}

/// One edge as seen by one deployment (`/deployments/{id}/clusters`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    pub apps: Vec<App>,
    pub id: String,
    /// The edge's display name.
    pub name: String,
    pub status: DeploymentStatus,
}

/// An edge of the inventory (`/appdeployment/clusters`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInfo {
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub create_time: Timestamp,
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub name: String,
}

/// One deployment as it runs on one edge (`/deployments/clusters/{clusterId}`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentInstancesCluster {
    pub apps: Vec<App>,
    pub deployment_display_name: String,
    pub deployment_name: String,
    pub deployment_uid: String,
    pub status: DeploymentStatus,
}

/// `/summary/deployments_status`: clusters counted per state over the matching deployments.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentsStatus {
    pub total: u32,
    pub running: u32,
    pub down: u32,
    pub deploying: u32,
    pub updating: u32,
    pub terminating: u32,
    pub error: u32,
    pub unknown: u32,
}

/// `deleteType` of a deployment delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeleteType {
    /// Delete this deployment only; its child deployments stay.
    #[default]
    ParentOnly,
    /// Delete the deployment and the child deployments it required.
    All,
}

/// `deploymentType` values.
pub const AUTO_SCALING: &str = "auto-scaling";
/// `deploymentType` values.
pub const TARGETED: &str = "targeted";
