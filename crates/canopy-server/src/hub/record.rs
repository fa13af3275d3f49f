//! The deployment manager's record of a deployment as the hub and the store keep it, and what
//! is derived from it alone (its apps' stable ids, whether a state is final).

use std::collections::BTreeMap;

use canopy_deploy::model::{OverrideValues, State};
use canopy_deploy::render::Requirement;
use canopy_deploy::target::Targeting;
use canopy_proto::AppInstance;
use canopy_store::ProjectId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The deployment manager's stored record of one deployment (the store's opaque `body`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentRecord {
    pub id: String,
    pub name: String,
    pub project_id: ProjectId,
    /// The normalized request, with the **real** override values (secrets unmasked).
    pub spec: canopy_deploy::model::Deployment,
    /// The override values as responses show them (secret parameters `********`).
    pub masked_overrides: Vec<OverrideValues>,
    /// The deployment profile in use (resolved from the package default when the request had
    /// none).
    pub profile_name: String,
    pub default_profile_name: String,
    /// Bumped by every update.
    pub generation: u64,
    /// What every targeted edge runs (each edge gets the apps targeted at it).
    pub apps: Vec<AppInstance>,
    pub targeting: Targeting,
    /// Packages this deployment required (deployment requirements), for the update rules.
    #[serde(default)]
    pub requirements: Vec<Requirement>,
    /// Deployments that required this one (it cannot be deleted or updated while they exist).
    #[serde(default)]
    pub parents: Vec<String>,
    /// Deployments created (or reused) for this one's requirements.
    #[serde(default)]
    pub children: Vec<String>,
    /// True from a change until every edge runs it (DEPLOYING/UPDATING rather than DOWN).
    pub deploy_in_progress: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub create_time: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub update_time: OffsetDateTime,
    /// What the Helm applications' charts hold that edges do not run as Kubernetes would
    /// (shown on the deployment).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<canopy_deploy::model::AppWarning>,
    /// Helm's output per Helm application, as rendered for this generation (served at
    /// `.../deployments/{id}/apps/{app}/manifest`). The record is sealed at rest, so Secret
    /// values in manifests are too.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub manifests: BTreeMap<String, String>,
}

/// The stable app ids of a deployment, by app name.
pub(super) fn app_ids(rec: &DeploymentRecord) -> BTreeMap<String, String> {
    rec.apps
        .iter()
        .map(|a| {
            (
                a.name.clone(),
                canopy_deploy::status::app_id(&rec.id, &a.name),
            )
        })
        .collect()
}

/// Whether a deployment state is final for a `--watch` (nothing more will happen by itself).
pub fn settled(state: State) -> bool {
    matches!(
        state,
        State::Running | State::Down | State::Error | State::NoTargetClusters
    )
}
