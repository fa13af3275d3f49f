//! `/canopy/v1/projects/{projectName}/policy`: the project policy (see `app/policy.rs` and
//! `docs/SECURITY.md`, "Project policy").

use axum::Json;
use axum::extract::{Path, State};
use canopy_core::policy::ProjectPolicy;

use super::Caller;
use super::error::{ApiJson, ErrorBody};
use crate::app::{App, AppError};

#[utoipa::path(get, path = "/canopy/v1/projects/{projectName}/policy", tag = "Canopy",
    description = "The project policy: what the project's deployments may run (image registries, host ports, resource limits, VM file hosts). The default allows everything. Any role on the project may read it.",
    params(("projectName" = String, Path)),
    responses((status = 200, body = ProjectPolicy), (status = 404, body = ErrorBody)))]
pub async fn get_policy(
    State(app): State<App>,
    Path(project): Path<String>,
    caller: Caller,
) -> Result<Json<ProjectPolicy>, AppError> {
    let c = caller.ctx(&app, &project).await?;
    Ok(Json(app.get_project_policy(&c).await?))
}

#[utoipa::path(put, path = "/canopy/v1/projects/{projectName}/policy", tag = "Canopy",
    description = "Sets the project policy (administrators only). Fields left out take their default. Checked at every later deployment create, update and upgrade; running deployments are not changed.",
    params(("projectName" = String, Path)), request_body = ProjectPolicy,
    responses((status = 200, body = ProjectPolicy), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn put_policy(
    State(app): State<App>,
    Path(project): Path<String>,
    caller: Caller,
    ApiJson(policy): ApiJson<ProjectPolicy>,
) -> Result<Json<ProjectPolicy>, AppError> {
    Ok(Json(
        app.put_project_policy(caller.principal, &project, caller.request_id, policy)
            .await?,
    ))
}
