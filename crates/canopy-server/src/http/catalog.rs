//! Catalog handlers, path for path compatible with the reference `catalog.yaml`
//! (`/v3/projects/{projectName}/catalog/...`): same request and response shapes, same list
//! conventions, same status codes.

use axum::Json;
use axum::body::Body;
use axum::extract::{Multipart, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use canopy_core::catalog::{Application, Artifact, DeploymentPackage, Registry};
use canopy_core::upload::UploadFile;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ctx;
use super::error::{ApiJson, ErrorBody};
use crate::app::{App, AppError, ChangeSummary, MAX_UPLOAD_FILES};

type ApiResult<T> = Result<T, AppError>;

/// The list query parameters (documented; parsed strictly by `canopy_core::list`).
#[derive(IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
#[expect(
    dead_code,
    reason = "documents the query string; parsing is done by canopy_core::list"
)]
pub struct ListParams {
    /// Comma-separated `field [asc|desc]` terms.
    order_by: Option<String>,
    /// `field=value` terms joined by ` OR `; case-insensitive substring match, `*` wildcard.
    filter: Option<String>,
    /// Page size: default 20, at most 500.
    page_size: Option<i32>,
    /// Index of the first item to return.
    offset: Option<i32>,
    /// Kinds to return (`KIND_NORMAL`, `KIND_EXTENSION`, `KIND_ADDON`); applications and packages only.
    kinds: Option<Vec<String>>,
    /// Registries only: include username, authToken and cacerts.
    show_sensitive_info: Option<bool>,
}

/// `showSensitiveInfo` on registry reads.
#[derive(IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
#[expect(
    dead_code,
    reason = "documents the query string; parsed by the app layer"
)]
pub struct SensitiveParams {
    show_sensitive_info: Option<bool>,
}

/// An empty JSON object (the reference's `google.protobuf.Empty`).
#[derive(Serialize, ToSchema)]
pub struct Empty {}

macro_rules! wrapper {
    ($name:ident, $field:literal, $ty:ty) => {
        #[derive(Serialize, Deserialize, ToSchema)]
        pub struct $name {
            #[serde(rename = $field)]
            pub item: $ty,
        }
    };
}

wrapper!(RegistryResponse, "registry", Registry);
wrapper!(ApplicationResponse, "application", Application);
wrapper!(ApplicationVersionsResponse, "application", Vec<Application>);
wrapper!(PackageResponse, "deploymentPackage", DeploymentPackage);
wrapper!(
    PackageVersionsResponse,
    "deploymentPackages",
    Vec<DeploymentPackage>
);
wrapper!(ArtifactResponse, "artifact", Artifact);

macro_rules! list_wrapper {
    ($name:ident, $field:literal, $ty:ty) => {
        #[derive(Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            #[serde(rename = $field)]
            pub items: Vec<$ty>,
            pub total_elements: u64,
        }
    };
}

list_wrapper!(ListRegistriesResponse, "registries", Registry);
list_wrapper!(ListApplicationsResponse, "applications", Application);
list_wrapper!(
    ListPackagesResponse,
    "deploymentPackages",
    DeploymentPackage
);
list_wrapper!(ListArtifactsResponse, "artifacts", Artifact);

/// `{referenceCount}`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceCountResponse {
    pub reference_count: u32,
}

/// One file of the session upload API.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Upload {
    pub file_name: String,
    /// File content, base64.
    #[serde(with = "canopy_core::catalog::base64_bytes")]
    #[schema(value_type = String, format = Byte)]
    pub artifact: Vec<u8>,
}

/// The answer to an upload call.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadResponse {
    pub session_id: String,
    pub upload_number: u32,
    pub error_messages: Vec<String>,
    /// Canopy extension: what the upload created, updated or left unchanged.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<ChangeSummary>,
}

/// Session upload query parameters.
#[derive(IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
#[expect(
    dead_code,
    reason = "documents the query string; parsed in the handler"
)]
pub struct UploadParams {
    /// Omit on the first call; then pass the id from the previous response.
    session_id: Option<String>,
    /// Deprecated; accepted and ignored.
    upload_number: Option<u32>,
    /// `true` on the last file: everything of the session is applied in one transaction.
    last_upload: Option<bool>,
}

// ------------------------------------------------------------------ registries

#[utoipa::path(get, path = "/v3/projects/{projectName}/catalog/registries", tag = "CatalogService",
    operation_id = "CatalogService_ListRegistries",
    params(("projectName" = String, Path), ListParams),
    responses((status = 200, body = ListRegistriesResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_registries(
    State(app): State<App>,
    Path(project): Path<String>,
    RawQuery(q): RawQuery,
    h: HeaderMap,
) -> ApiResult<Json<ListRegistriesResponse>> {
    let c = ctx(&app, &project, &h).await?;
    let (items, total_elements) = app.list_registries(&c, q.as_deref()).await?;
    Ok(Json(ListRegistriesResponse {
        items,
        total_elements,
    }))
}

#[utoipa::path(post, path = "/v3/projects/{projectName}/catalog/registries", tag = "CatalogService",
    operation_id = "CatalogService_CreateRegistry",
    params(("projectName" = String, Path)), request_body = Registry,
    responses((status = 200, body = RegistryResponse), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_registry(
    State(app): State<App>,
    Path(project): Path<String>,
    h: HeaderMap,
    ApiJson(r): ApiJson<Registry>,
) -> ApiResult<Json<RegistryResponse>> {
    let c = ctx(&app, &project, &h).await?;
    Ok(Json(RegistryResponse {
        item: app.create_registry(&c, r).await?,
    }))
}

#[utoipa::path(get, path = "/v3/projects/{projectName}/catalog/registries/{registryName}", tag = "CatalogService",
    operation_id = "CatalogService_GetRegistry",
    params(("projectName" = String, Path), ("registryName" = String, Path), SensitiveParams),
    responses((status = 200, body = RegistryResponse), (status = 404, body = ErrorBody)))]
pub async fn get_registry(
    State(app): State<App>,
    Path((project, name)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    h: HeaderMap,
) -> ApiResult<Json<RegistryResponse>> {
    let c = ctx(&app, &project, &h).await?;
    Ok(Json(RegistryResponse {
        item: app.get_registry(&c, &name, q.as_deref()).await?,
    }))
}

#[utoipa::path(put, path = "/v3/projects/{projectName}/catalog/registries/{registryName}", tag = "CatalogService",
    operation_id = "CatalogService_UpdateRegistry",
    params(("projectName" = String, Path), ("registryName" = String, Path)), request_body = Registry,
    responses((status = 200, body = Empty), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_registry(
    State(app): State<App>,
    Path((project, name)): Path<(String, String)>,
    h: HeaderMap,
    ApiJson(r): ApiJson<Registry>,
) -> ApiResult<Json<Empty>> {
    let c = ctx(&app, &project, &h).await?;
    app.update_registry(&c, &name, r).await?;
    Ok(Json(Empty {}))
}

#[utoipa::path(delete, path = "/v3/projects/{projectName}/catalog/registries/{registryName}", tag = "CatalogService",
    operation_id = "CatalogService_DeleteRegistry",
    params(("projectName" = String, Path), ("registryName" = String, Path)),
    responses((status = 200, body = Empty), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_registry(
    State(app): State<App>,
    Path((project, name)): Path<(String, String)>,
    h: HeaderMap,
) -> ApiResult<Json<Empty>> {
    let c = ctx(&app, &project, &h).await?;
    app.delete_registry(&c, &name).await?;
    Ok(Json(Empty {}))
}

// ------------------------------------------------------------------ applications

#[utoipa::path(get, path = "/v3/projects/{projectName}/catalog/applications", tag = "CatalogService",
    operation_id = "CatalogService_ListApplications",
    params(("projectName" = String, Path), ListParams),
    responses((status = 200, body = ListApplicationsResponse), (status = 400, body = ErrorBody)))]
pub async fn list_applications(
    State(app): State<App>,
    Path(project): Path<String>,
    RawQuery(q): RawQuery,
    h: HeaderMap,
) -> ApiResult<Json<ListApplicationsResponse>> {
    let c = ctx(&app, &project, &h).await?;
    let (items, total_elements) = app.list_applications(&c, q.as_deref()).await?;
    Ok(Json(ListApplicationsResponse {
        items,
        total_elements,
    }))
}

#[utoipa::path(post, path = "/v3/projects/{projectName}/catalog/applications", tag = "CatalogService",
    operation_id = "CatalogService_CreateApplication",
    params(("projectName" = String, Path)), request_body = Application,
    responses((status = 200, body = ApplicationResponse), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_application(
    State(app): State<App>,
    Path(project): Path<String>,
    h: HeaderMap,
    ApiJson(a): ApiJson<Application>,
) -> ApiResult<Json<ApplicationResponse>> {
    let c = ctx(&app, &project, &h).await?;
    Ok(Json(ApplicationResponse {
        item: app.create_application(&c, a).await?,
    }))
}

#[utoipa::path(get, path = "/v3/projects/{projectName}/catalog/applications/{applicationName}/versions", tag = "CatalogService",
    operation_id = "CatalogService_GetApplicationVersions",
    params(("projectName" = String, Path), ("applicationName" = String, Path)),
    responses((status = 200, body = ApplicationVersionsResponse), (status = 404, body = ErrorBody)))]
pub async fn application_versions(
    State(app): State<App>,
    Path((project, name)): Path<(String, String)>,
    h: HeaderMap,
) -> ApiResult<Json<ApplicationVersionsResponse>> {
    let c = ctx(&app, &project, &h).await?;
    Ok(Json(ApplicationVersionsResponse {
        item: app.application_versions(&c, &name).await?,
    }))
}

#[utoipa::path(get, path = "/v3/projects/{projectName}/catalog/applications/{applicationName}/versions/{version}", tag = "CatalogService",
    operation_id = "CatalogService_GetApplication",
    params(("projectName" = String, Path), ("applicationName" = String, Path), ("version" = String, Path)),
    responses((status = 200, body = ApplicationResponse), (status = 404, body = ErrorBody)))]
pub async fn get_application(
    State(app): State<App>,
    Path((project, name, version)): Path<(String, String, String)>,
    h: HeaderMap,
) -> ApiResult<Json<ApplicationResponse>> {
    let c = ctx(&app, &project, &h).await?;
    Ok(Json(ApplicationResponse {
        item: app.get_application(&c, &name, &version).await?,
    }))
}

#[utoipa::path(put, path = "/v3/projects/{projectName}/catalog/applications/{applicationName}/versions/{version}", tag = "CatalogService",
    operation_id = "CatalogService_UpdateApplication",
    params(("projectName" = String, Path), ("applicationName" = String, Path), ("version" = String, Path)), request_body = Application,
    responses((status = 200, body = Empty), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_application(
    State(app): State<App>,
    Path((project, name, version)): Path<(String, String, String)>,
    h: HeaderMap,
    ApiJson(a): ApiJson<Application>,
) -> ApiResult<Json<Empty>> {
    let c = ctx(&app, &project, &h).await?;
    app.update_application(&c, &name, &version, a).await?;
    Ok(Json(Empty {}))
}

#[utoipa::path(delete, path = "/v3/projects/{projectName}/catalog/applications/{applicationName}/versions/{version}", tag = "CatalogService",
    operation_id = "CatalogService_DeleteApplication",
    params(("projectName" = String, Path), ("applicationName" = String, Path), ("version" = String, Path)),
    responses((status = 200, body = Empty), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_application(
    State(app): State<App>,
    Path((project, name, version)): Path<(String, String, String)>,
    h: HeaderMap,
) -> ApiResult<Json<Empty>> {
    let c = ctx(&app, &project, &h).await?;
    app.delete_application(&c, &name, &version).await?;
    Ok(Json(Empty {}))
}

#[utoipa::path(get, path = "/v3/projects/{projectName}/catalog/applications/{applicationName}/versions/{version}/reference_count", tag = "CatalogService",
    operation_id = "CatalogService_GetApplicationReferenceCount",
    params(("projectName" = String, Path), ("applicationName" = String, Path), ("version" = String, Path)),
    responses((status = 200, body = ReferenceCountResponse), (status = 404, body = ErrorBody)))]
pub async fn application_reference_count(
    State(app): State<App>,
    Path((project, name, version)): Path<(String, String, String)>,
    h: HeaderMap,
) -> ApiResult<Json<ReferenceCountResponse>> {
    let c = ctx(&app, &project, &h).await?;
    Ok(Json(ReferenceCountResponse {
        reference_count: app.application_reference_count(&c, &name, &version).await?,
    }))
}

// ------------------------------------------------------------------ deployment packages

#[utoipa::path(get, path = "/v3/projects/{projectName}/catalog/deployment_packages", tag = "CatalogService",
    operation_id = "CatalogService_ListDeploymentPackages",
    params(("projectName" = String, Path), ListParams),
    responses((status = 200, body = ListPackagesResponse), (status = 400, body = ErrorBody)))]
pub async fn list_packages(
    State(app): State<App>,
    Path(project): Path<String>,
    RawQuery(q): RawQuery,
    h: HeaderMap,
) -> ApiResult<Json<ListPackagesResponse>> {
    let c = ctx(&app, &project, &h).await?;
    let (items, total_elements) = app.list_packages(&c, q.as_deref()).await?;
    Ok(Json(ListPackagesResponse {
        items,
        total_elements,
    }))
}

#[utoipa::path(post, path = "/v3/projects/{projectName}/catalog/deployment_packages", tag = "CatalogService",
    operation_id = "CatalogService_CreateDeploymentPackage",
    params(("projectName" = String, Path)), request_body = DeploymentPackage,
    responses((status = 200, body = PackageResponse), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_package(
    State(app): State<App>,
    Path(project): Path<String>,
    h: HeaderMap,
    ApiJson(p): ApiJson<DeploymentPackage>,
) -> ApiResult<Json<PackageResponse>> {
    let c = ctx(&app, &project, &h).await?;
    Ok(Json(PackageResponse {
        item: app.create_package(&c, p).await?,
    }))
}

#[utoipa::path(get, path = "/v3/projects/{projectName}/catalog/deployment_packages/{deploymentPackageName}/versions", tag = "CatalogService",
    operation_id = "CatalogService_GetDeploymentPackageVersions",
    params(("projectName" = String, Path), ("deploymentPackageName" = String, Path)),
    responses((status = 200, body = PackageVersionsResponse), (status = 404, body = ErrorBody)))]
pub async fn package_versions(
    State(app): State<App>,
    Path((project, name)): Path<(String, String)>,
    h: HeaderMap,
) -> ApiResult<Json<PackageVersionsResponse>> {
    let c = ctx(&app, &project, &h).await?;
    Ok(Json(PackageVersionsResponse {
        item: app.package_versions(&c, &name).await?,
    }))
}

#[utoipa::path(get, path = "/v3/projects/{projectName}/catalog/deployment_packages/{deploymentPackageName}/versions/{version}", tag = "CatalogService",
    operation_id = "CatalogService_GetDeploymentPackage",
    params(("projectName" = String, Path), ("deploymentPackageName" = String, Path), ("version" = String, Path)),
    responses((status = 200, body = PackageResponse), (status = 404, body = ErrorBody)))]
pub async fn get_package(
    State(app): State<App>,
    Path((project, name, version)): Path<(String, String, String)>,
    h: HeaderMap,
) -> ApiResult<Json<PackageResponse>> {
    let c = ctx(&app, &project, &h).await?;
    Ok(Json(PackageResponse {
        item: app.get_package(&c, &name, &version).await?,
    }))
}

#[utoipa::path(put, path = "/v3/projects/{projectName}/catalog/deployment_packages/{deploymentPackageName}/versions/{version}", tag = "CatalogService",
    operation_id = "CatalogService_UpdateDeploymentPackage",
    params(("projectName" = String, Path), ("deploymentPackageName" = String, Path), ("version" = String, Path)), request_body = DeploymentPackage,
    responses((status = 200, body = Empty), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_package(
    State(app): State<App>,
    Path((project, name, version)): Path<(String, String, String)>,
    h: HeaderMap,
    ApiJson(p): ApiJson<DeploymentPackage>,
) -> ApiResult<Json<Empty>> {
    let c = ctx(&app, &project, &h).await?;
    app.update_package(&c, &name, &version, p).await?;
    Ok(Json(Empty {}))
}

#[utoipa::path(delete, path = "/v3/projects/{projectName}/catalog/deployment_packages/{deploymentPackageName}/versions/{version}", tag = "CatalogService",
    operation_id = "CatalogService_DeleteDeploymentPackage",
    params(("projectName" = String, Path), ("deploymentPackageName" = String, Path), ("version" = String, Path)),
    responses((status = 200, body = Empty), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_package(
    State(app): State<App>,
    Path((project, name, version)): Path<(String, String, String)>,
    h: HeaderMap,
) -> ApiResult<Json<Empty>> {
    let c = ctx(&app, &project, &h).await?;
    app.delete_package(&c, &name, &version).await?;
    Ok(Json(Empty {}))
}

#[utoipa::path(get, path = "/v3/projects/{projectName}/catalog/deployment_packages/{deploymentPackageName}/versions/{version}/download", tag = "CatalogService",
    operation_id = "CatalogService_DownloadDeploymentPackage",
    params(("projectName" = String, Path), ("deploymentPackageName" = String, Path), ("version" = String, Path)),
    responses((status = 200, description = "tar.gz in the upload format", content_type = "application/octet-stream"), (status = 404, body = ErrorBody)))]
pub async fn download_package(
    State(app): State<App>,
    Path((project, name, version)): Path<(String, String, String)>,
    h: HeaderMap,
) -> ApiResult<Response> {
    let c = ctx(&app, &project, &h).await?;
    let export = app.export_package(&c, &name, &version).await?;
    let disposition =
        HeaderValue::from_str(&format!("attachment; filename=\"{}\"", export.file_name))
            .map_err(|e| AppError::Internal(e.to_string()))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from(export.bytes),
    )
        .into_response())
}

// ------------------------------------------------------------------ artifacts

#[utoipa::path(get, path = "/v3/projects/{projectName}/catalog/artifacts", tag = "CatalogService",
    operation_id = "CatalogService_ListArtifacts",
    params(("projectName" = String, Path), ListParams),
    responses((status = 200, body = ListArtifactsResponse), (status = 400, body = ErrorBody)))]
pub async fn list_artifacts(
    State(app): State<App>,
    Path(project): Path<String>,
    RawQuery(q): RawQuery,
    h: HeaderMap,
) -> ApiResult<Json<ListArtifactsResponse>> {
    let c = ctx(&app, &project, &h).await?;
    let (items, total_elements) = app.list_artifacts(&c, q.as_deref()).await?;
    Ok(Json(ListArtifactsResponse {
        items,
        total_elements,
    }))
}

#[utoipa::path(post, path = "/v3/projects/{projectName}/catalog/artifacts", tag = "CatalogService",
    operation_id = "CatalogService_CreateArtifact",
    params(("projectName" = String, Path)), request_body = Artifact,
    responses((status = 200, body = ArtifactResponse), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_artifact(
    State(app): State<App>,
    Path(project): Path<String>,
    h: HeaderMap,
    ApiJson(a): ApiJson<Artifact>,
) -> ApiResult<Json<ArtifactResponse>> {
    let c = ctx(&app, &project, &h).await?;
    Ok(Json(ArtifactResponse {
        item: app.create_artifact(&c, a).await?,
    }))
}

#[utoipa::path(get, path = "/v3/projects/{projectName}/catalog/artifacts/{artifactName}", tag = "CatalogService",
    operation_id = "CatalogService_GetArtifact",
    params(("projectName" = String, Path), ("artifactName" = String, Path)),
    responses((status = 200, body = ArtifactResponse), (status = 404, body = ErrorBody)))]
pub async fn get_artifact(
    State(app): State<App>,
    Path((project, name)): Path<(String, String)>,
    h: HeaderMap,
) -> ApiResult<Json<ArtifactResponse>> {
    let c = ctx(&app, &project, &h).await?;
    Ok(Json(ArtifactResponse {
        item: app.get_artifact(&c, &name).await?,
    }))
}

#[utoipa::path(put, path = "/v3/projects/{projectName}/catalog/artifacts/{artifactName}", tag = "CatalogService",
    operation_id = "CatalogService_UpdateArtifact",
    params(("projectName" = String, Path), ("artifactName" = String, Path)), request_body = Artifact,
    responses((status = 200, body = Empty), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_artifact(
    State(app): State<App>,
    Path((project, name)): Path<(String, String)>,
    h: HeaderMap,
    ApiJson(a): ApiJson<Artifact>,
) -> ApiResult<Json<Empty>> {
    let c = ctx(&app, &project, &h).await?;
    app.update_artifact(&c, &name, a).await?;
    Ok(Json(Empty {}))
}

#[utoipa::path(delete, path = "/v3/projects/{projectName}/catalog/artifacts/{artifactName}", tag = "CatalogService",
    operation_id = "CatalogService_DeleteArtifact",
    params(("projectName" = String, Path), ("artifactName" = String, Path)),
    responses((status = 200, body = Empty), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_artifact(
    State(app): State<App>,
    Path((project, name)): Path<(String, String)>,
    h: HeaderMap,
) -> ApiResult<Json<Empty>> {
    let c = ctx(&app, &project, &h).await?;
    app.delete_artifact(&c, &name).await?;
    Ok(Json(Empty {}))
}

// ------------------------------------------------------------------ uploads

#[utoipa::path(post, path = "/v3/projects/{projectName}/catalog/upload", tag = "CatalogService",
    operation_id = "CatalogService_BulkUpload",
    description = "Multipart upload of up to 100 files (field `files`): YAML files (multi-document allowed) and \
                   tar.gz bundles. Everything is applied in one transaction, or nothing is.",
    params(("projectName" = String, Path)),
    request_body(content_type = "multipart/form-data", description = "one or more `files` parts"),
    responses((status = 200, body = Vec<UploadResponse>), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn bulk_upload(
    State(app): State<App>,
    Path(project): Path<String>,
    h: HeaderMap,
    mut form: Multipart,
) -> ApiResult<Json<Vec<UploadResponse>>> {
    let c = ctx(&app, &project, &h).await?;
    let mut files = Vec::new();
    let mut total: usize = 0;
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(AppError::TooLarge(format!(
                    "upload is larger than {} bytes",
                    super::MAX_UPLOAD_BODY
                )));
            }
            Err(e) => {
                return Err(AppError::Invalid(format!(
                    "invalid multipart body: {}",
                    e.body_text()
                )));
            }
        };
        if field.name() != Some("files") {
            return Err(AppError::Invalid(format!(
                "unexpected multipart field {:?}; files must be sent in fields named \"files\"",
                field.name().unwrap_or("")
            )));
        }
        let name = field.file_name().unwrap_or("").to_string();
        if name.is_empty() {
            return Err(AppError::Invalid(
                "every uploaded file needs a file name".into(),
            ));
        }
        if files.len() >= MAX_UPLOAD_FILES {
            return Err(AppError::TooLarge(format!(
                "at most {MAX_UPLOAD_FILES} files may be uploaded at once"
            )));
        }
        let bytes = field.bytes().await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                AppError::TooLarge(format!(
                    "upload is larger than {} bytes",
                    super::MAX_UPLOAD_BODY
                ))
            } else {
                AppError::Invalid(format!("uploaded file {name}: {}", e.body_text()))
            }
        })?;
        total += bytes.len();
        files.push(UploadFile {
            name,
            content: bytes.to_vec(),
        });
    }
    if files.is_empty() {
        return Err(AppError::Invalid(
            "no files uploaded: send one or more multipart fields named \"files\"".into(),
        ));
    }
    tracing::info!(project = %c.project.name, files = files.len(), bytes = total, "bulk upload");
    let count = files.len();
    let changes = app.upload_files(&c, files).await?;
    let session_id = uuid::Uuid::new_v4().to_string();
    let mut out: Vec<UploadResponse> = (1..=count as u32)
        .map(|n| UploadResponse {
            session_id: session_id.clone(),
            upload_number: n,
            error_messages: Vec::new(),
            changes: Vec::new(),
        })
        .collect();
    if let Some(last) = out.last_mut() {
        last.changes = changes;
    }
    Ok(Json(out))
}

#[utoipa::path(post, path = "/v3/projects/{projectName}/catalog/uploads", tag = "CatalogService",
    operation_id = "CatalogService_UploadCatalogEntities",
    params(("projectName" = String, Path), UploadParams), request_body = Upload,
    responses((status = 200, body = UploadResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn session_upload(
    State(app): State<App>,
    Path(project): Path<String>,
    RawQuery(q): RawQuery,
    h: HeaderMap,
    ApiJson(upload): ApiJson<Upload>,
) -> ApiResult<Json<UploadResponse>> {
    let c = ctx(&app, &project, &h).await?;
    let mut session_id = None;
    let mut last = false;
    for (k, v) in canopy_core::list::form_pairs(q.as_deref().unwrap_or(""))? {
        match k.as_str() {
            "sessionId" if !v.is_empty() => {
                session_id = Some(v.parse::<uuid::Uuid>().map_err(|_| {
                    AppError::Invalid(format!("upload-session {v:?} is not a valid session id"))
                })?);
            }
            "sessionId" | "uploadNumber" => {}
            "lastUpload" => last = canopy_core::list::parse_bool("lastUpload", &v)?,
            other => {
                return Err(AppError::Invalid(format!(
                    "unknown query parameter {other:?}"
                )));
            }
        }
    }
    let file = UploadFile {
        name: upload.file_name,
        content: upload.artifact,
    };
    let outcome = app.upload_session(&c, session_id, last, file).await?;
    Ok(Json(UploadResponse {
        session_id: outcome.session_id.to_string(),
        upload_number: outcome.upload_number,
        error_messages: Vec::new(),
        changes: outcome.changes,
    }))
}
