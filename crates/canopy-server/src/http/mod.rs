//! The HTTP API: routes, the OpenAPI document generated from the handlers, and the one place
//! where app-layer errors become HTTP responses.
//!
//! Handlers are thin: extract, call one [`App`] method, map the result. Request bodies are
//! size-limited here; JSON bodies with unknown fields or wrong types are refused with 400 (the
//! reference's InvalidArgument), never axum's default 422.

mod audit;
mod auth;
mod catalog;
mod deployments;
mod error;
mod events;
mod fleet;
mod identity;
mod limits;
mod policy;
mod resources;
mod tenancy;
mod tunnels;
mod upload_body;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::{App, AppError, Ctx};

pub use audit::AuditActor;
pub use auth::{CONSOLE_PREFIX, SESSION_COOKIE, is_console, session_cookie};
pub use error::ErrorBody;
pub use limits::{ConsoleRateLimited, Limits};
pub use tunnels::{parse_logs_query, serve_console, stream_logs};
pub use upload_body::{next_multipart_field, spool_multipart_files};

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
        (name = "Agent", description = "The edge agent protocol (docs/AGENT-PROTOCOL.md)"),
        (name = "Peer", description = "Between replicas of one database: tunnels relayed to the replica holding the user's request (docs/ARCHITECTURE.md, Tunnels across replicas)"),
        (name = "Org", description = "Organizations (reference tenancy API)"),
        (name = "Project", description = "Projects (reference tenancy API)"),
        (name = "Identity", description = "Canopy's built-in users, login and API tokens"),
        (name = "AppWorkloadService", description = "Workloads of an application on an edge (reference resource manager)"),
        (name = "EndpointsService", description = "Published ports of an application on an edge (reference resource manager)"),
        (name = "VirtualMachineService", description = "Virtual machine power actions and console (reference resource manager)"),
        (name = "PodService", description = "Container restarts as pod deletes (reference resource manager)")
    )
)]
struct ApiDoc;

/// Builds the full router and the OpenAPI document describing it.
pub fn router(app: App) -> Router {
    router_with(app, Limits::default())
}

/// [`router`] with the given abuse limits (rate limits, long-poll caps, body read timeout).
pub fn router_with(app: App, limits: Limits) -> Router {
    router_with_console(app, limits, None)
}

/// [`router_with`], plus the web console's routes when given (the `canopy-web` crate, which
/// depends on this one: the binary and the test harness compose the two). The console's routes
/// must lie under `/` and [`CONSOLE_PREFIX`]; they pass through the same audit, authentication
/// (by session cookie, see `auth.rs`) and rate-limit layers as the API.
pub fn router_with_console(app: App, limits: Limits, console: Option<Router<App>>) -> Router {
    let (router, api) = api_router().split_for_parts();
    let router = match console {
        Some(console) => router.merge(console),
        None => router,
    };
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
        .layer(axum::middleware::from_fn_with_state(
            Layers {
                metrics: std::sync::Arc::clone(app.metrics()),
                app: app.clone(),
                limiter: limits::Limiter::new(limits),
            },
            layers,
        ))
        .with_state(app)
}

/// What the API's middleware needs (see [`layers`]).
#[derive(Clone)]
struct Layers {
    metrics: std::sync::Arc<crate::metrics::ServerMetrics>,
    app: App,
    limiter: limits::Limiter,
}

/// The API's middleware, outermost first: metrics (so every answer counts, refusals
/// included), audit (every mutating call and its outcome), authentication, then the rate
/// limits per caller (inner of authentication, so the caller is known). One layer calling the
/// four steps in turn, not four nested layers: each `from_fn` layer clones the whole stack
/// inside it on every request, which with four layers was ten boxed route clones and drops
/// per request, a measurable share of an idle server's CPU at 10,000 edges
/// (docs/BENCHMARKS.md, "Where the idle cost at 10,000 edges came from").
async fn layers(
    axum::extract::State(s): axum::extract::State<Layers>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let Layers {
        metrics,
        app,
        limiter,
    } = &s;
    crate::metrics::track(metrics, req, |req| {
        audit::record(app, req, |req| {
            auth::authenticate(app, req, |req| {
                limits::enforce(limiter, req, move |req| next.run(req))
            })
        })
    })
    .await
}

/// The routes with their OpenAPI description (also used to test that the document is complete).
pub fn api_router() -> OpenApiRouter<App> {
    let uploads = OpenApiRouter::new()
        .routes(routes!(catalog::bulk_upload))
        .routes(routes!(catalog::session_upload));
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
        .routes(routes!(catalog::import_chart))
        .routes(routes!(catalog::registry_charts))
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
        .routes(routes!(deployments::deployment_manifest))
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
        .routes(routes!(tunnels::vnc))
        .routes(routes!(tunnels::vm_serial))
        .routes(routes!(tunnels::vm_logs))
        .routes(routes!(tunnels::container_logs))
        .routes(routes!(resources::list_app_workloads))
        .routes(routes!(resources::list_app_endpoints))
        .routes(routes!(resources::list_deployment_workloads))
        .routes(routes!(resources::start_vm))
        .routes(routes!(resources::stop_vm))
        .routes(routes!(resources::restart_vm))
        .routes(routes!(resources::get_vnc))
        .routes(routes!(resources::delete_pod))
        .routes(routes!(audit::list_audit))
        .routes(routes!(audit::project_audit))
        .routes(routes!(tenancy::list_orgs))
        .routes(routes!(
            tenancy::put_org,
            tenancy::get_org,
            tenancy::delete_org
        ))
        .routes(routes!(tenancy::org_status))
        .routes(routes!(tenancy::list_projects))
        .routes(routes!(
            tenancy::put_project,
            tenancy::get_project,
            tenancy::delete_project
        ))
        .routes(routes!(tenancy::project_status))
        .routes(routes!(policy::get_policy, policy::put_policy))
        .routes(routes!(identity::login))
        .routes(routes!(identity::logout))
        .routes(routes!(identity::whoami))
        .routes(routes!(identity::list_users, identity::create_user))
        .routes(routes!(
            identity::get_user,
            identity::update_user,
            identity::delete_user
        ))
        .routes(routes!(identity::list_tokens, identity::create_token))
        .routes(routes!(identity::revoke_token));
    // The agent protocol, with its own body limits (docs/AGENT-PROTOCOL.md, "Bounds").
    let agent_status = OpenApiRouter::new().routes(routes!(fleet::status));
    let agent = OpenApiRouter::new()
        .routes(routes!(fleet::enroll))
        .routes(routes!(fleet::desired_state))
        .routes(routes!(tunnels::agent_tunnels))
        .routes(routes!(tunnels::agent_claim_tunnel))
        .routes(routes!(tunnels::agent_tunnel_error))
        .routes(routes!(tunnels::peer_claim_tunnel));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(body_limit(uploads, MAX_UPLOAD_BODY))
        .merge(body_limit(rest, MAX_JSON_BODY))
        .merge(body_limit(
            agent_status,
            canopy_proto::bounds::MAX_STATUS_BODY,
        ))
        .merge(body_limit(agent, canopy_proto::bounds::MAX_AGENT_BODY))
}

/// The body limit of a route, as JSON bodies see it (for the 413's message).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimit(pub usize);

/// `routes` with request bodies limited to `max` bytes (413 beyond, naming the limit).
fn body_limit(routes: OpenApiRouter<App>, max: usize) -> OpenApiRouter<App> {
    routes
        .layer(DefaultBodyLimit::max(max))
        .layer(axum::Extension(BodyLimit(max)))
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

/// The authenticated caller of a request, as the authentication middleware found it, with the
/// request's correlation id. Extracting it on a path the middleware did not authenticate is a
/// 401, so a handler can never run without a caller.
pub struct Caller {
    pub principal: std::sync::Arc<crate::app::Principal>,
    pub request_id: String,
}

impl Caller {
    /// Resolves the request's project for this caller (404 when unknown or not visible).
    pub async fn ctx(&self, app: &App, project: &str) -> Result<Ctx, AppError> {
        app.context(self.principal.clone(), project, self.request_id.clone())
            .await
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let principal = parts
            .extensions
            .get::<std::sync::Arc<crate::app::Principal>>()
            .cloned()
            .ok_or_else(|| {
                AppError::Unauthenticated(
                    "authentication required: send an Authorization: Bearer token".into(),
                )
            })?;
        Ok(Caller {
            principal,
            request_id: request_id(&parts.headers),
        })
    }
}

/// The request's correlation id: the client's `x-request-id` when sane, else a new one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}
