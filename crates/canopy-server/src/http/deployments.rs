//! Deployment manager handlers, compatible with the reference `deployment-manager.yaml`
//! (`/v1/projects/{projectName}/appdeployment/...`, plus the unprefixed cluster and summary
//! paths the reference also serves).

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use canopy_deploy::model::{
    Cluster, ClusterInfo, DeleteType, Deployment, DeploymentInstancesCluster, DeploymentsStatus,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Caller;
use super::catalog::{Empty, ListParams};
use super::error::{ApiJson, ErrorBody};
use crate::app::{App, AppError};

type ApiResult<T> = Result<T, AppError>;

/// `{deployments, totalElements}`.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListDeploymentsResponse {
    pub deployments: Vec<Deployment>,
    pub total_elements: u64,
}

/// `{deploymentId}`.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateDeploymentResponse {
    pub deployment_id: String,
}

/// `{deployment}`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct DeploymentResponse {
    pub deployment: Deployment,
}

/// `{clusters, totalElements}` of one deployment.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListDeploymentClustersResponse {
    pub clusters: Vec<Cluster>,
    pub total_elements: u64,
}

/// `{deploymentInstancesCluster, totalElements}`.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListDeploymentsPerClusterResponse {
    pub deployment_instances_cluster: Vec<DeploymentInstancesCluster>,
    pub total_elements: u64,
}

/// `{clusters, totalElements}` of the inventory.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListClustersResponse {
    pub clusters: Vec<ClusterInfo>,
    pub total_elements: u64,
}

/// `{cluster}`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct GetClusterResponse {
    pub cluster: Cluster,
}

#[utoipa::path(get, path = "/v1/projects/{projectName}/appdeployment/deployments", tag = "DeploymentService",
    operation_id = "DeploymentService_ListDeployments",
    params(("projectName" = String, Path), ListParams, ("labels" = Option<Vec<String>>, Query, description = "k=v[,k=v]: deployments with any of these labels in a target")),
    responses((status = 200, body = ListDeploymentsResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_deployments(
    State(app): State<App>,
    Path(project): Path<String>,
    RawQuery(q): RawQuery,
    caller: Caller,
) -> ApiResult<Json<ListDeploymentsResponse>> {
    let c = caller.ctx(&app, &project).await?;
    let (deployments, total_elements) = app.list_deployments(&c, q.as_deref())?;
    Ok(Json(ListDeploymentsResponse {
        deployments,
        total_elements,
    }))
}

#[utoipa::path(post, path = "/v1/projects/{projectName}/appdeployment/deployments", tag = "DeploymentService",
    operation_id = "DeploymentService_CreateDeployment",
    params(("projectName" = String, Path)), request_body = Deployment,
    responses((status = 200, body = CreateDeploymentResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_deployment(
    State(app): State<App>,
    Path(project): Path<String>,
    caller: Caller,
    ApiJson(d): ApiJson<Deployment>,
) -> ApiResult<Json<CreateDeploymentResponse>> {
    let c = caller.ctx(&app, &project).await?;
    let deployment_id = app.create_deployment(&c, d).await?;
    Ok(Json(CreateDeploymentResponse { deployment_id }))
}

#[utoipa::path(get, path = "/v1/projects/{projectName}/appdeployment/deployments/{deplId}", tag = "DeploymentService",
    operation_id = "DeploymentService_GetDeployment",
    params(("projectName" = String, Path), ("deplId" = String, Path)),
    responses((status = 200, body = DeploymentResponse), (status = 404, body = ErrorBody)))]
pub async fn get_deployment(
    State(app): State<App>,
    Path((project, id)): Path<(String, String)>,
    caller: Caller,
) -> ApiResult<Json<DeploymentResponse>> {
    let c = caller.ctx(&app, &project).await?;
    Ok(Json(DeploymentResponse {
        deployment: app.get_deployment(&c, &id)?,
    }))
}

#[utoipa::path(get, path = "/canopy/v1/projects/{projectName}/deployments/{deplId}/apps/{appName}/manifest", tag = "Canopy",
    description = "The Kubernetes manifest Helm rendered for a Helm-chart application of the deployment (its current generation, hooks and tests left out): what a Kubernetes edge would apply. Deployment read access. Secret objects' data and the deployment's secret parameter values are shown as ******** unless the caller also has deployment write access.",
    params(("projectName" = String, Path), ("deplId" = String, Path), ("appName" = String, Path)),
    responses((status = 200, body = String, content_type = "application/yaml"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn deployment_manifest(
    State(app): State<App>,
    Path((project, id, app_name)): Path<(String, String, String)>,
    caller: Caller,
) -> ApiResult<([(axum::http::header::HeaderName, &'static str); 1], String)> {
    let c = caller.ctx(&app, &project).await?;
    let manifest = app.deployment_manifest(&c, &id, &app_name)?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/yaml")],
        manifest,
    ))
}

#[utoipa::path(put, path = "/v1/projects/{projectName}/appdeployment/deployments/{deplId}", tag = "DeploymentService",
    operation_id = "DeploymentService_UpdateDeployment",
    params(("projectName" = String, Path), ("deplId" = String, Path)), request_body = Deployment,
    responses((status = 200, body = DeploymentResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn update_deployment(
    State(app): State<App>,
    Path((project, id)): Path<(String, String)>,
    caller: Caller,
    ApiJson(d): ApiJson<Deployment>,
) -> ApiResult<Json<DeploymentResponse>> {
    let c = caller.ctx(&app, &project).await?;
    Ok(Json(DeploymentResponse {
        deployment: app.update_deployment(&c, &id, d).await?,
    }))
}

#[utoipa::path(delete, path = "/v1/projects/{projectName}/appdeployment/deployments/{deplId}", tag = "DeploymentService",
    operation_id = "DeploymentService_DeleteDeployment",
    params(("projectName" = String, Path), ("deplId" = String, Path), ("deleteType" = Option<String>, Query, description = "PARENT_ONLY (default) or ALL")),
    responses((status = 200, body = Empty), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_deployment(
    State(app): State<App>,
    Path((project, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    caller: Caller,
) -> ApiResult<Json<Empty>> {
    let c = caller.ctx(&app, &project).await?;
    let mut delete_type = DeleteType::ParentOnly;
    for (k, v) in canopy_core::list::form_pairs(q.as_deref().unwrap_or(""))? {
        match (k.as_str(), v.trim()) {
            ("deleteType", "PARENT_ONLY" | "" | "0") => delete_type = DeleteType::ParentOnly,
            ("deleteType", "ALL" | "1") => delete_type = DeleteType::All,
            ("deleteType", other) => {
                return Err(AppError::Invalid(format!(
                    "invalid deleteType {other:?}: expected PARENT_ONLY or ALL"
                )));
            }
            (other, _) => {
                return Err(AppError::Invalid(format!(
                    "unknown query parameter {other:?}"
                )));
            }
        }
    }
    app.delete_deployment(&c, &id, delete_type).await?;
    Ok(Json(Empty {}))
}

#[utoipa::path(get, path = "/v1/projects/{projectName}/appdeployment/deployments/{deplId}/clusters", tag = "DeploymentService",
    operation_id = "DeploymentService_ListDeploymentClusters",
    params(("projectName" = String, Path), ("deplId" = String, Path), ListParams),
    responses((status = 200, body = ListDeploymentClustersResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn deployment_clusters(
    State(app): State<App>,
    Path((project, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    caller: Caller,
) -> ApiResult<Json<ListDeploymentClustersResponse>> {
    let c = caller.ctx(&app, &project).await?;
    let page = app.deployment_clusters(&c, &id, q.as_deref())?;
    Ok(Json(ListDeploymentClustersResponse {
        clusters: page.clusters,
        total_elements: page.total,
    }))
}

#[utoipa::path(get, path = "/v1/projects/{projectName}/deployments/clusters/{clusterId}", tag = "DeploymentService",
    operation_id = "DeploymentService_ListDeploymentsPerCluster",
    params(("projectName" = String, Path), ("clusterId" = String, Path), ListParams),
    responses((status = 200, body = ListDeploymentsPerClusterResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn deployments_per_cluster(
    State(app): State<App>,
    Path((project, cluster)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    caller: Caller,
) -> ApiResult<Json<ListDeploymentsPerClusterResponse>> {
    let c = caller.ctx(&app, &project).await?;
    let (items, total_elements) = app.deployments_on_cluster(&c, &cluster, q.as_deref())?;
    Ok(Json(ListDeploymentsPerClusterResponse {
        deployment_instances_cluster: items,
        total_elements,
    }))
}

#[utoipa::path(get, path = "/v1/projects/{projectName}/summary/deployments_status", tag = "DeploymentService",
    operation_id = "DeploymentService_GetDeploymentsStatus",
    params(("projectName" = String, Path), ("labels" = Option<Vec<String>>, Query)),
    responses((status = 200, body = DeploymentsStatus), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn deployments_status(
    State(app): State<App>,
    Path(project): Path<String>,
    RawQuery(q): RawQuery,
    caller: Caller,
) -> ApiResult<Json<DeploymentsStatus>> {
    let c = caller.ctx(&app, &project).await?;
    Ok(Json(app.deployments_status(&c, q.as_deref())?))
}

#[utoipa::path(get, path = "/v1/projects/{projectName}/appdeployment/clusters", tag = "ClusterService",
    operation_id = "ClusterService_ListClusters",
    params(("projectName" = String, Path), ListParams, ("labels" = Option<Vec<String>>, Query)),
    responses((status = 200, body = ListClustersResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_clusters(
    State(app): State<App>,
    Path(project): Path<String>,
    RawQuery(q): RawQuery,
    caller: Caller,
) -> ApiResult<Json<ListClustersResponse>> {
    let c = caller.ctx(&app, &project).await?;
    let (clusters, total_elements) = app.list_clusters(&c, q.as_deref())?;
    Ok(Json(ListClustersResponse {
        clusters,
        total_elements,
    }))
}

#[utoipa::path(get, path = "/v1/projects/{projectName}/appdeployment/clusters/{clusterId}", tag = "ClusterService",
    operation_id = "ClusterService_GetCluster",
    params(("projectName" = String, Path), ("clusterId" = String, Path)),
    responses((status = 200, body = GetClusterResponse), (status = 404, body = ErrorBody)))]
pub async fn get_cluster(
    State(app): State<App>,
    Path((project, id)): Path<(String, String)>,
    caller: Caller,
) -> ApiResult<Json<GetClusterResponse>> {
    let c = caller.ctx(&app, &project).await?;
    Ok(Json(GetClusterResponse {
        cluster: app.get_cluster(&c, &id)?,
    }))
}

/// `{uiExtensions}`.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListUiExtensionsResponse {
    pub ui_extensions: Vec<canopy_core::catalog::UiExtension>,
}

#[utoipa::path(get, path = "/v1/projects/{projectName}/ui_extensions", tag = "DeploymentService",
    operation_id = "DeploymentService_ListUIExtensions",
    params(("projectName" = String, Path), ("serviceName" = Option<Vec<String>>, Query, description = "service names (repeated or comma-separated)")),
    responses((status = 200, body = ListUiExtensionsResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn ui_extensions(
    State(app): State<App>,
    Path(project): Path<String>,
    RawQuery(q): RawQuery,
    caller: Caller,
) -> ApiResult<Json<ListUiExtensionsResponse>> {
    let c = caller.ctx(&app, &project).await?;
    let mut names = Vec::new();
    for (k, v) in canopy_core::list::form_pairs(q.as_deref().unwrap_or(""))? {
        match k.as_str() {
            "serviceName" => names.extend(
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            ),
            other => {
                return Err(AppError::Invalid(format!(
                    "unknown query parameter {other:?}"
                )));
            }
        }
    }
    if names.len() > 100 {
        return Err(AppError::Invalid("serviceName: at most 100 names".into()));
    }
    Ok(Json(ListUiExtensionsResponse {
        ui_extensions: app.ui_extensions(&c, &names).await?,
    }))
}
