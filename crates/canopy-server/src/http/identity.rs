//! Canopy's own identity paths for the embedded mode (no external identity provider):
//! `login`/`logout`, `whoami`, built-in users and API tokens, under `/canopy/v1/`.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Caller;
use super::error::{ApiJson, ErrorBody};
use crate::app::{ApiToken, App, AppError, IssuedToken, User, WhoAmI};

type ApiResult<T> = Result<T, AppError>;

/// Credentials of a built-in user.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A new user.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUserRequest {
    pub name: String,
    /// Omit for a user that authenticates with API tokens only.
    pub password: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// A change to a user: new roles (administrators) and/or a new password.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateUserRequest {
    pub roles: Option<Vec<String>>,
    pub password: Option<String>,
    /// The current password: required when users change their own password (and have one);
    /// not needed by an administrator setting someone else's.
    pub current_password: Option<String>,
}

/// A new API token.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTokenRequest {
    pub name: String,
    /// Lifetime in seconds; omit for a token that does not expire.
    pub expires_in_seconds: Option<u64>,
    /// Administrators: the user the token acts as (default: the caller).
    pub user: Option<String>,
}

/// `{users}`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ListUsersResponse {
    pub users: Vec<User>,
}

/// `{tokens}`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ListTokensResponse {
    pub tokens: Vec<ApiToken>,
}

/// Token list query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListTokensParams {
    /// Administrators: every user's tokens.
    pub all: Option<bool>,
}

#[utoipa::path(post, path = "/canopy/v1/login", tag = "Identity", request_body = LoginRequest,
    responses((status = 200, body = IssuedToken, description = "a session token"), (status = 401, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "too many attempts from this address or for this user name (Retry-After)"),
        (status = 503, body = ErrorBody, description = "every password-checking slot stayed busy; try again shortly")))]
pub async fn login(
    State(app): State<App>,
    // The connection loop (canopy-tls) puts the peer's address on every request.
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<LoginRequest>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let forwarded_for = forwarded_for(&headers);
    let source = app.login_source(
        peer.map(|Extension(ConnectInfo(a))| a.ip()),
        forwarded_for.as_deref(),
    );
    let mut response = match app.login(&req.username, &req.password, source).await {
        Ok(t) => Json(t).into_response(),
        Err(e) => e.into_response(),
    };
    // The audit log names who tried, even when it failed (never the password).
    let name: String = req
        .username
        .chars()
        .filter(|c| !c.is_control())
        .take(63)
        .collect();
    response
        .extensions_mut()
        .insert(super::audit::AuditActor(format!("login:{name}")));
    response
}

/// Every `X-Forwarded-For` value of the request, joined by `,` (proxies may send several).
fn forwarded_for(headers: &HeaderMap) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

#[utoipa::path(post, path = "/canopy/v1/logout", tag = "Identity",
    responses((status = 200, description = "the session token used is revoked"), (status = 401, body = ErrorBody),
        (status = 400, body = ErrorBody, description = "the token used is not a login session (an API token, the bootstrap administrator token, an OIDC token): nothing is revoked; the message says how to revoke it")))]
pub async fn logout(State(app): State<App>, caller: Caller) -> ApiResult<()> {
    app.logout(&caller.principal).await
}

#[utoipa::path(get, path = "/canopy/v1/whoami", tag = "Identity",
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
pub async fn whoami(State(app): State<App>, caller: Caller) -> Json<WhoAmI> {
    Json(app.whoami(&caller.principal))
}

#[utoipa::path(get, path = "/canopy/v1/users", tag = "Identity",
    responses((status = 200, body = ListUsersResponse), (status = 403, body = ErrorBody)))]
pub async fn list_users(
    State(app): State<App>,
    caller: Caller,
) -> ApiResult<Json<ListUsersResponse>> {
    Ok(Json(ListUsersResponse {
        users: app.list_users(&caller.principal).await?,
    }))
}

#[utoipa::path(post, path = "/canopy/v1/users", tag = "Identity", request_body = CreateUserRequest,
    responses((status = 201, body = User), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_user(
    State(app): State<App>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let user = app
        .create_user(&caller.principal, &req.name, req.password, req.roles)
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

#[utoipa::path(get, path = "/canopy/v1/users/{user}", tag = "Identity",
    params(("user" = String, Path)),
    responses((status = 200, body = User), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_user(
    State(app): State<App>,
    Path(name): Path<String>,
    caller: Caller,
) -> ApiResult<Json<User>> {
    Ok(Json(app.get_user(&caller.principal, &name).await?))
}

#[utoipa::path(patch, path = "/canopy/v1/users/{user}", tag = "Identity",
    params(("user" = String, Path)), request_body = UpdateUserRequest,
    responses((status = 200, body = User), (status = 400, body = ErrorBody, description = "bad roles or password, or currentPassword missing when changing one's own"),
        (status = 403, body = ErrorBody, description = "not allowed, or currentPassword wrong"), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "too many current-password checks for this user (Retry-After)")))]
pub async fn update_user(
    State(app): State<App>,
    Path(name): Path<String>,
    caller: Caller,
    ApiJson(req): ApiJson<UpdateUserRequest>,
) -> ApiResult<Json<User>> {
    Ok(Json(
        app.update_user(
            &caller.principal,
            &name,
            req.roles,
            req.password,
            req.current_password,
        )
        .await?,
    ))
}

#[utoipa::path(delete, path = "/canopy/v1/users/{user}", tag = "Identity",
    params(("user" = String, Path)),
    responses((status = 200, description = "deleted with its tokens"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_user(
    State(app): State<App>,
    Path(name): Path<String>,
    caller: Caller,
) -> ApiResult<()> {
    app.delete_user(&caller.principal, &name).await
}

#[utoipa::path(get, path = "/canopy/v1/tokens", tag = "Identity", params(ListTokensParams),
    responses((status = 200, body = ListTokensResponse), (status = 403, body = ErrorBody)))]
pub async fn list_tokens(
    State(app): State<App>,
    Query(q): Query<ListTokensParams>,
    caller: Caller,
) -> ApiResult<Json<ListTokensResponse>> {
    Ok(Json(ListTokensResponse {
        tokens: app
            .list_api_tokens(&caller.principal, q.all.unwrap_or(false))
            .await?,
    }))
}

#[utoipa::path(post, path = "/canopy/v1/tokens", tag = "Identity", request_body = CreateTokenRequest,
    responses((status = 201, body = IssuedToken, description = "the token is shown only in this answer"), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create_token(
    State(app): State<App>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> ApiResult<(StatusCode, Json<IssuedToken>)> {
    let ttl = match req.expires_in_seconds {
        Some(0) => {
            return Err(AppError::Invalid(
                "expiresInSeconds must be positive (omit it for a token that does not expire)"
                    .into(),
            ));
        }
        Some(s) if s > 10 * 365 * 86_400 => {
            return Err(AppError::Invalid(
                "expiresInSeconds is more than ten years: omit it for a token that does not expire"
                    .into(),
            ));
        }
        s => s.map(Duration::from_secs),
    };
    let issued = app
        .create_api_token(&caller.principal, &req.name, ttl, req.user.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

#[utoipa::path(delete, path = "/canopy/v1/tokens/{id}", tag = "Identity",
    params(("id" = String, Path)),
    responses((status = 200, description = "revoked"), (status = 404, body = ErrorBody)))]
pub async fn revoke_token(
    State(app): State<App>,
    Path(id): Path<String>,
    caller: Caller,
) -> ApiResult<()> {
    app.revoke_api_token(&caller.principal, &id).await
}
