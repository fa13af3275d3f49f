//! The HTTP API: routes, the OpenAPI document generated from the handlers, and the one place
//! where app-layer errors become HTTP responses.
//!
//! Handlers are thin: extract, call one [`App`] method, map the result. Request bodies are
//! size-limited here; JSON bodies with unknown fields or wrong types are refused with 400 (the
//! reference's InvalidArgument), never axum's default 422.

mod catalog;
mod deployments;
mod error;
mod events;
mod fleet;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::{App, AppError, Ctx};

pub use error::ErrorBody;

/// Largest JSON request body (artifacts are up to 4 MB, base64-encoded).
pub const MAX_JSON_BODY: usize = 16 * 1024 * 1024;
/// Largest multipart upload body.
pub const MAX_UPLOAD_BODY: usize = 80 * 1024 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Canopy API",
        description = "Canopy edge application orchestrator. Catalog paths follow the reference \
                       Application Catalog API (`/v3/projects/{projectName}/catalog/...`); Canopy's own \
                       additions live under `/canopy/v1/...`.",
        license(name = "Apache-2.0")
    ),
    tags(
        (name = "CatalogService", description = "Application catalog (reference-compatible)"),
        (name = "DeploymentService", description = "Deployments (reference-compatible)"),
        (name = "ClusterService", description = "Edge inventory as the reference's clusters"),
        (name = "Canopy", description = "Canopy's own additions: health, events, edges, enrollment tokens"),
        (name = "Agent", description = "The edge agent protocol (docs/AGENT-PROTOCOL.md)")
    )
)]
struct ApiDoc;

/// Builds the full router and the OpenAPI document describing it.
pub fn router(app: App) -> Router {
    let (router, api) = api_router().split_for_parts();
    // Serialized once and shared: axum clones every route's handler for each accepted
    // connection, so a handler holding the document as a `Value` copied it per connection.
    let doc = axum::body::Bytes::from(serde_json::to_vec(&api).unwrap_or_default());
    router
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        doc,
                    )
                }
            }),
        )
        .fallback(not_found)
        .with_state(app)
}

/// The routes with their OpenAPI description (also used to test that the document is complete).
pub fn api_router() -> OpenApiRouter<App> {
    let uploads = OpenApiRouter::new()
        .routes(routes!(catalog::bulk_upload))
        .routes(routes!(catalog::session_upload))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD_BODY));
    let rest = OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(catalog::list_registries, catalog::create_registry))
        .routes(routes!(
            catalog::get_registry,
            catalog::update_registry,
            catalog::delete_registry
        ))
        .routes(routes!(
            catalog::list_applications,
            catalog::create_application
        ))
        .routes(routes!(catalog::application_versions))
        .routes(routes!(
            catalog::get_application,
            catalog::update_application,
            catalog::delete_application
        ))
        .routes(routes!(catalog::application_reference_count))
        .routes(routes!(catalog::list_packages, catalog::create_package))
        .routes(routes!(catalog::package_versions))
        .routes(routes!(
            catalog::get_package,
            catalog::update_package,
            catalog::delete_package
        ))
        .routes(routes!(catalog::download_package))
        .routes(routes!(catalog::list_artifacts, catalog::create_artifact))
        .routes(routes!(
            catalog::get_artifact,
            catalog::update_artifact,
            catalog::delete_artifact
        ))
        .routes(routes!(events::catalog_events))
        .routes(routes!(
            deployments::list_deployments,
            deployments::create_deployment
        ))
        .routes(routes!(
            deployments::get_deployment,
            deployments::update_deployment,
            deployments::delete_deployment
        ))
        .routes(routes!(deployments::deployment_clusters))
        .routes(routes!(deployments::deployments_per_cluster))
        .routes(routes!(deployments::deployments_status))
        .routes(routes!(deployments::list_clusters))
        .routes(routes!(deployments::get_cluster))
        .routes(routes!(deployments::ui_extensions))
        // Aliases the reference also serves (undocumented duplicates).
        .route(
            "/v1/projects/{projectName}/appdeployment/deployments/clusters/{clusterId}",
            axum::routing::get(deployments::deployments_per_cluster),
        )
        .route(
            "/v1/projects/{projectName}/appdeployment/summary/deployments_status",
            axum::routing::get(deployments::deployments_status),
        )
        .routes(routes!(fleet::create_token, fleet::list_tokens))
        .routes(routes!(fleet::revoke_token))
        .routes(routes!(fleet::list_edges))
        .routes(routes!(fleet::get_edge, fleet::remove_edge))
        .routes(routes!(fleet::label_edge))
        .routes(routes!(fleet::edge_workloads))
        .routes(routes!(fleet::enroll))
        .routes(routes!(fleet::desired_state))
        .routes(routes!(fleet::status))
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(uploads)
        .merge(rest)
}

/// Liveness and readiness: answers 200 when the database answers.
#[utoipa::path(get, path = "/healthz", tag = "Canopy", responses((status = 200, description = "healthy"), (status = 500, body = ErrorBody)))]
async fn health(
    axum::extract::State(app): axum::extract::State<App>,
) -> Result<&'static str, AppError> {
    app.store()
        .project_by_name(crate::app::DEFAULT_PROJECT)
        .await?;
    Ok("ok")
}

async fn not_found(uri: axum::http::Uri) -> impl IntoResponse {
    AppError::NotFound(format!("no such path {}", uri.path()))
}

/// Resolves the request's project and correlation id.
async fn ctx(app: &App, project: &str, headers: &HeaderMap) -> Result<Ctx, AppError> {
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    app.context(project, request_id).await
}
