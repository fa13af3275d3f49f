//! The tenancy API, path for path compatible with the reference's `tenancy.yaml`:
//! organizations (`/v1/orgs/{org}`) and projects (`/v1/projects/{projectName}`), created with
//! PUT (`update_if_exists=false` refuses to touch an existing one), read, listed and deleted.
//! Canopy extension: `?org=` on a project PUT names its organization (default: `default`).

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Caller;
use super::error::ErrorBody;
use crate::app::{App, AppError, TenancyObject, TenancyStatus, put_message};

type ApiResult<T> = Result<T, AppError>;

/// The body of a PUT.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenancyPut {
    #[serde(default)]
    pub description: String,
}

/// PUT query parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PutParams {
    /// If false, an existing object is not updated (409). Default true.
    pub update_if_exists: Option<bool>,
    /// Canopy extension (projects only): the owning organization, default `default`.
    pub org: Option<String>,
}

/// `{message}`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct MessageResponse {
    pub message: String,
}

/// `spec` of an organization or project.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Spec {
    pub description: String,
    /// Canopy extension: a project's organization.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub org: Option<String>,
}

/// `status` of an organization.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrgStatusBlock {
    pub org_status: TenancyStatus,
}

/// `status` of a project.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectStatusBlock {
    pub project_status: TenancyStatus,
}

/// An organization (GET, and list items with `name`).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct OrgResponse {
    pub name: String,
    pub spec: Spec,
    pub status: OrgStatusBlock,
}

/// A project (GET, and list items with `name`).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ProjectResponse {
    pub name: String,
    pub spec: Spec,
    pub status: ProjectStatusBlock,
}

/// The PUT body: optional (an empty body is an empty description), strict when present.
fn put_body(
    body: &Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<TenancyPut> {
    let bytes = match body {
        Ok(b) => b,
        Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(AppError::TooLarge(format!(
                "request body is larger than {} bytes",
                super::MAX_JSON_BODY
            )));
        }
        Err(e) => {
            return Err(AppError::Invalid(format!(
                "cannot read the request body: {e}"
            )));
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(TenancyPut::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| AppError::Invalid(format!("invalid request body: {e}")))
}

fn org(o: TenancyObject) -> OrgResponse {
    OrgResponse {
        name: o.name,
        spec: Spec {
            description: o.description,
            org: None,
        },
        status: OrgStatusBlock {
            org_status: o.status,
        },
    }
}

fn project(p: TenancyObject) -> ProjectResponse {
    ProjectResponse {
        name: p.name,
        spec: Spec {
            description: p.description,
            org: p.org,
        },
        status: ProjectStatusBlock {
            project_status: p.status,
        },
    }
}

#[utoipa::path(get, path = "/v1/orgs", tag = "Org",
    responses((status = 200, body = Vec<OrgResponse>), (status = 401, body = ErrorBody)))]
pub async fn list_orgs(
    State(app): State<App>,
    caller: Caller,
) -> ApiResult<Json<Vec<OrgResponse>>> {
    Ok(Json(
        app.list_orgs(&caller.principal)
            .await?
            .into_iter()
            .map(org)
            .collect(),
    ))
}

#[utoipa::path(put, path = "/v1/orgs/{org}", tag = "Org",
    params(("org" = String, Path), PutParams), request_body = TenancyPut,
    responses((status = 200, body = MessageResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn put_org(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(q): Query<PutParams>,
    caller: Caller,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<Json<MessageResponse>> {
    let body = put_body(&body)?;
    let put = app
        .put_org(
            &caller.principal,
            &name,
            &body.description,
            q.update_if_exists.unwrap_or(true),
        )
        .await?;
    Ok(Json(MessageResponse {
        message: put_message("org", &name, put),
    }))
}

#[utoipa::path(get, path = "/v1/orgs/{org}", tag = "Org",
    params(("org" = String, Path)),
    responses((status = 200, body = OrgResponse), (status = 404, body = ErrorBody)))]
pub async fn get_org(
    State(app): State<App>,
    Path(name): Path<String>,
    caller: Caller,
) -> ApiResult<Json<OrgResponse>> {
    Ok(Json(org(app.get_org(&caller.principal, &name).await?)))
}

#[utoipa::path(get, path = "/v1/orgs/{org}/status", tag = "Org",
    params(("org" = String, Path)),
    responses((status = 200, body = OrgStatusBlock), (status = 404, body = ErrorBody)))]
pub async fn org_status(
    State(app): State<App>,
    Path(name): Path<String>,
    caller: Caller,
) -> ApiResult<Json<OrgStatusBlock>> {
    Ok(Json(
        org(app.get_org(&caller.principal, &name).await?).status,
    ))
}

#[utoipa::path(delete, path = "/v1/orgs/{org}", tag = "Org",
    params(("org" = String, Path)),
    responses((status = 200, description = "deleted"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_org(
    State(app): State<App>,
    Path(name): Path<String>,
    caller: Caller,
) -> ApiResult<()> {
    app.delete_org(&caller.principal, &name).await
}

#[utoipa::path(get, path = "/v1/projects", tag = "Project",
    responses((status = 200, body = Vec<ProjectResponse>), (status = 401, body = ErrorBody)))]
pub async fn list_projects(
    State(app): State<App>,
    caller: Caller,
) -> ApiResult<Json<Vec<ProjectResponse>>> {
    Ok(Json(
        app.list_projects(&caller.principal)
            .await?
            .into_iter()
            .map(project)
            .collect(),
    ))
}

#[utoipa::path(put, path = "/v1/projects/{projectName}", tag = "Project",
    params(("projectName" = String, Path), PutParams), request_body = TenancyPut,
    responses((status = 200, body = MessageResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn put_project(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(q): Query<PutParams>,
    caller: Caller,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<Json<MessageResponse>> {
    let body = put_body(&body)?;
    let put = app
        .put_project(
            &caller.principal,
            &name,
            q.org.as_deref(),
            &body.description,
            q.update_if_exists.unwrap_or(true),
        )
        .await?;
    Ok(Json(MessageResponse {
        message: put_message("project", &name, put),
    }))
}

#[utoipa::path(get, path = "/v1/projects/{projectName}", tag = "Project",
    params(("projectName" = String, Path)),
    responses((status = 200, body = ProjectResponse), (status = 404, body = ErrorBody)))]
pub async fn get_project(
    State(app): State<App>,
    Path(name): Path<String>,
    caller: Caller,
) -> ApiResult<Json<ProjectResponse>> {
    Ok(Json(project(
        app.get_project(&caller.principal, &name).await?,
    )))
}

#[utoipa::path(get, path = "/v1/projects/{projectName}/status", tag = "Project",
    params(("projectName" = String, Path)),
    responses((status = 200, body = ProjectStatusBlock), (status = 404, body = ErrorBody)))]
pub async fn project_status(
    State(app): State<App>,
    Path(name): Path<String>,
    caller: Caller,
) -> ApiResult<Json<ProjectStatusBlock>> {
    Ok(Json(
        project(app.get_project(&caller.principal, &name).await?).status,
    ))
}

#[utoipa::path(delete, path = "/v1/projects/{projectName}", tag = "Project",
    params(("projectName" = String, Path)),
    responses((status = 200, description = "deleted with everything in it"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_project(
    State(app): State<App>,
    Path(name): Path<String>,
    caller: Caller,
) -> ApiResult<()> {
    app.delete_project(&caller.principal, &name).await
}
