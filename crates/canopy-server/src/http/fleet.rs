//! Canopy's own fleet paths: enrollment tokens and the edge inventory
//! (`/canopy/v1/projects/{projectName}/...`), and the agent protocol (`/canopy/v1/agent/...`,
//! see `docs/AGENT-PROTOCOL.md`).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use canopy_core::list::Entity;
use canopy_proto::{DesiredState, EnrollRequest, PROTOCOL_HEADER, StatusAck, StatusReport};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Caller;
use super::catalog::{Empty, ListParams};
use super::error::{ApiJson, ErrorBody};
use crate::app::{
    AgentCtx, App, AppError, CreateEnrollmentToken, CreatedEnrollmentToken, Edge, EnrollmentToken,
    check_protocol,
};

type ApiResult<T> = Result<T, AppError>;

/// `{enrollmentTokens, totalElements}`.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListEnrollmentTokensResponse {
    pub enrollment_tokens: Vec<EnrollmentToken>,
    #[serde(default)]
    pub total_elements: u64,
}

/// `{enrollmentToken}`.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnrollmentTokenResponse {
    pub enrollment_token: EnrollmentToken,
}

/// `{edges, totalElements}`.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListEdgesResponse {
    pub edges: Vec<Edge>,
    pub total_elements: u64,
}

/// `{edge}`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct EdgeResponse {
    pub edge: Edge,
}

/// A label change: `set` adds or replaces, `remove` deletes keys.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelEdgeRequest {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `{apps}`: what an edge last reported.
#[derive(Serialize, ToSchema)]
pub struct EdgeWorkloadsResponse {
    #[schema(value_type = Vec<Object>)]
    pub apps: Vec<canopy_proto::AppStatus>,
}

#[utoipa::path(post, path = "/canopy/v1/projects/{projectName}/enrollment-tokens", tag = "Canopy",
    params(("projectName" = String, Path)), request_body = CreateEnrollmentToken,
    responses((status = 201, body = CreatedEnrollmentToken), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn create_token(
    State(app): State<App>,
    Path(project): Path<String>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateEnrollmentToken>,
) -> ApiResult<(StatusCode, Json<CreatedEnrollmentToken>)> {
    let c = caller.ctx(&app, &project).await?;
    Ok((
        StatusCode::CREATED,
        Json(app.create_enrollment_token(&c, req).await?),
    ))
}

#[utoipa::path(get, path = "/canopy/v1/projects/{projectName}/enrollment-tokens", tag = "Canopy",
    params(("projectName" = String, Path),
        ("pageSize" = Option<u32>, Query, description = "tokens per page, at most 500 (0 or absent: 500)"),
        ("offset" = Option<u64>, Query, description = "index of the first token")),
    responses((status = 200, body = ListEnrollmentTokensResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_tokens(
    State(app): State<App>,
    Path(project): Path<String>,
    RawQuery(q): RawQuery,
    caller: Caller,
) -> ApiResult<Json<ListEnrollmentTokensResponse>> {
    // Unpaged clients (before pageSize existed) see up to 500 tokens, never an unbounded list.
    let (size, offset) =
        super::limits::page_params(q.as_deref().unwrap_or(""), canopy_core::list::MAX_PAGE_SIZE)?;
    let c = caller.ctx(&app, &project).await?;
    let all = app.list_enrollment_tokens(&c).await?;
    Ok(Json(ListEnrollmentTokensResponse {
        total_elements: all.len() as u64,
        enrollment_tokens: all.into_iter().skip(offset).take(size).collect(),
    }))
}

#[utoipa::path(delete, path = "/canopy/v1/projects/{projectName}/enrollment-tokens/{tokenId}", tag = "Canopy",
    params(("projectName" = String, Path), ("tokenId" = String, Path)),
    responses((status = 200, body = EnrollmentTokenResponse, description = "revoked"), (status = 404, body = ErrorBody)))]
pub async fn revoke_token(
    State(app): State<App>,
    Path((project, id)): Path<(String, String)>,
    caller: Caller,
) -> ApiResult<Json<EnrollmentTokenResponse>> {
    let c = caller.ctx(&app, &project).await?;
    Ok(Json(EnrollmentTokenResponse {
        enrollment_token: app.revoke_enrollment_token(&c, &id).await?,
    }))
}

#[utoipa::path(get, path = "/canopy/v1/projects/{projectName}/edges", tag = "Canopy",
    params(("projectName" = String, Path), ListParams, ("labels" = Option<Vec<String>>, Query, description = "k=v[,k=v]: edges carrying all pairs of any item")),
    responses((status = 200, body = ListEdgesResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_edges(
    State(app): State<App>,
    Path(project): Path<String>,
    RawQuery(q): RawQuery,
    caller: Caller,
) -> ApiResult<Json<ListEdgesResponse>> {
    let c = caller.ctx(&app, &project).await?;
    let query = canopy_core::list::parse_query(Entity::Edge, q.as_deref().unwrap_or(""))?;
    let (edges, total_elements) = app.list_edges(&c, &query)?;
    Ok(Json(ListEdgesResponse {
        edges,
        total_elements,
    }))
}

#[utoipa::path(get, path = "/canopy/v1/projects/{projectName}/edges/{edge}", tag = "Canopy",
    params(("projectName" = String, Path), ("edge" = String, Path, description = "id or name")),
    responses((status = 200, body = EdgeResponse), (status = 404, body = ErrorBody)))]
pub async fn get_edge(
    State(app): State<App>,
    Path((project, edge)): Path<(String, String)>,
    caller: Caller,
) -> ApiResult<Json<EdgeResponse>> {
    let c = caller.ctx(&app, &project).await?;
    Ok(Json(EdgeResponse {
        edge: app.get_edge(&c, &edge)?,
    }))
}

#[utoipa::path(delete, path = "/canopy/v1/projects/{projectName}/edges/{edge}", tag = "Canopy",
    params(("projectName" = String, Path), ("edge" = String, Path, description = "id or name")),
    responses((status = 200, body = Empty), (status = 404, body = ErrorBody)))]
pub async fn remove_edge(
    State(app): State<App>,
    Path((project, edge)): Path<(String, String)>,
    caller: Caller,
) -> ApiResult<Json<Empty>> {
    let c = caller.ctx(&app, &project).await?;
    app.remove_edge(&c, &edge).await?;
    Ok(Json(Empty {}))
}

#[utoipa::path(patch, path = "/canopy/v1/projects/{projectName}/edges/{edge}/labels", tag = "Canopy",
    params(("projectName" = String, Path), ("edge" = String, Path, description = "id or name")),
    request_body = LabelEdgeRequest,
    responses((status = 200, body = EdgeResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn label_edge(
    State(app): State<App>,
    Path((project, edge)): Path<(String, String)>,
    caller: Caller,
    ApiJson(req): ApiJson<LabelEdgeRequest>,
) -> ApiResult<Json<EdgeResponse>> {
    let c = caller.ctx(&app, &project).await?;
    Ok(Json(EdgeResponse {
        edge: app.label_edge(&c, &edge, req.set, req.remove).await?,
    }))
}

#[utoipa::path(get, path = "/canopy/v1/projects/{projectName}/edges/{edge}/workloads", tag = "Canopy",
    params(("projectName" = String, Path), ("edge" = String, Path, description = "id or name")),
    responses((status = 200, body = EdgeWorkloadsResponse), (status = 404, body = ErrorBody)))]
pub async fn edge_workloads(
    State(app): State<App>,
    Path((project, edge)): Path<(String, String)>,
    caller: Caller,
) -> ApiResult<Json<EdgeWorkloadsResponse>> {
    let c = caller.ctx(&app, &project).await?;
    Ok(Json(EdgeWorkloadsResponse {
        apps: app.edge_workloads(&c, &edge)?,
    }))
}

// ------------------------------------------------------------------ agent protocol

/// An authenticated agent request: the protocol version checked, the edge's credential
/// verified, and the edge's rate limit applied (`429` with `Retry-After` beyond it; see
/// `http::limits`). Every agent handler but enrollment takes one.
pub struct Agent(pub AgentCtx);

impl axum::extract::FromRequestParts<App> for Agent {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        app: &App,
    ) -> Result<Agent, AppError> {
        let h = &parts.headers;
        check_protocol(h.get(PROTOCOL_HEADER).and_then(|v| v.to_str().ok()))?;
        let bearer = h
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let agent = app.agent_ctx(bearer)?;
        if let Some(limit) = parts.extensions.get::<super::limits::EdgeRateLimit>() {
            limit.check(&agent.edge_id)?;
        }
        Ok(Agent(agent))
    }
}

#[utoipa::path(post, path = "/canopy/v1/agent/enroll", tag = "Agent",
    request_body(content = Object, description = "EnrollRequest (docs/AGENT-PROTOCOL.md)"),
    responses((status = 201, body = Object, description = "EnrollResponse"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody, description = "the body is over 64 KiB"), (status = 426, body = ErrorBody)))]
pub async fn enroll(
    State(app): State<App>,
    h: HeaderMap,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> ApiResult<Response> {
    check_protocol(h.get(PROTOCOL_HEADER).and_then(|v| v.to_str().ok()))?;
    let enrolled = app.enroll(req).await?;
    // The audit log names the edge that enrolled (there is no user behind this call).
    let actor = super::audit::AuditActor(format!("edge:{}", enrolled.edge_id));
    let mut response = (StatusCode::CREATED, Json(enrolled)).into_response();
    response.extensions_mut().insert(actor);
    Ok(response)
}

/// The long-poll's query.
struct DesiredQuery {
    after: u64,
    wait_seconds: u32,
}

fn default_wait() -> u32 {
    25
}

#[utoipa::path(get, path = "/canopy/v1/agent/desired-state", tag = "Agent",
    params(("after" = Option<u64>, Query), ("waitSeconds" = Option<u32>, Query)),
    responses((status = 200, body = Object, description = "DesiredState"), (status = 204, description = "nothing newer within waitSeconds"), (status = 401, body = ErrorBody), (status = 426, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "this edge already has its maximum of long-polls waiting, or is over its request rate (Retry-After)"),
        (status = 503, body = ErrorBody, description = "the server holds its maximum of long-polls (Retry-After)")))]
pub async fn desired_state(
    State(app): State<App>,
    Agent(a): Agent,
    RawQuery(q): RawQuery,
    gate: Option<axum::Extension<std::sync::Arc<super::limits::LongPollGate>>>,
) -> ApiResult<Response> {
    let q: DesiredQuery = parse_desired_query(q.as_deref().unwrap_or(""))?;
    // Held while the poll waits; refused at once beyond the caps (see `http::limits`).
    let _permit = match gate.map(|g| g.enter(&a.edge_id)).transpose() {
        Ok(permit) => permit,
        Err(refused) => return Ok(refused.into_response()),
    };
    let got: Option<DesiredState> = app
        .agent_desired_state(&a, q.after, Duration::from_secs(u64::from(q.wait_seconds)))
        .await?;
    Ok(match got {
        Some(d) => Json(d).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

#[utoipa::path(post, path = "/canopy/v1/agent/status", tag = "Agent",
    request_body(content = Object, description = "StatusReport"),
    responses((status = 200, body = Object, description = "StatusAck"),
        (status = 400, body = ErrorBody, description = "a field over its bound (docs/AGENT-PROTOCOL.md, Bounds); nothing of the report was applied"),
        (status = 401, body = ErrorBody), (status = 413, body = ErrorBody, description = "the body is over 4 MiB"),
        (status = 422, body = ErrorBody), (status = 426, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "this edge is over its request rate (Retry-After)")))]
pub async fn status(
    State(app): State<App>,
    Agent(a): Agent,
    ApiJson(report): ApiJson<StatusReport>,
) -> ApiResult<Json<StatusAck>> {
    Ok(Json(app.agent_status(&a, report)?))
}

/// Parses the long-poll query strictly (unknown parameters refused).
fn parse_desired_query(raw: &str) -> Result<DesiredQuery, AppError> {
    let mut q = DesiredQuery {
        after: 0,
        wait_seconds: default_wait(),
    };
    for (k, v) in canopy_core::list::form_pairs(raw)? {
        match k.as_str() {
            "after" => {
                q.after = v.trim().parse().map_err(|_| {
                    AppError::Invalid(format!("invalid after {v:?}: must be a generation number"))
                })?
            }
            "waitSeconds" => {
                q.wait_seconds = v.trim().parse().map_err(|_| {
                    AppError::Invalid(format!("invalid waitSeconds {v:?}: must be a whole number"))
                })?
            }
            other => {
                return Err(AppError::Invalid(format!(
                    "unknown query parameter {other:?}"
                )));
            }
        }
    }
    Ok(q)
}
