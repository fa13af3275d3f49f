//! App errors to HTTP, in one place. The body follows the reference's grpc-gateway shape
//! (`{"code": <grpc code>, "message": ..., "details": []}`) so existing clients keep working;
//! upload failures add `errorMessages`, one per problem.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use crate::app::AppError;

/// An error response.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// gRPC status code of the reference API (3 InvalidArgument, 5 NotFound, 6 AlreadyExists,
    /// 9 FailedPrecondition, 13 Internal).
    pub code: i32,
    /// What went wrong, naming the resource.
    pub message: String,
    #[schema(value_type = Vec<Object>)]
    pub details: Vec<serde_json::Value>,
    /// For uploads: every problem found, each naming its file.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub error_messages: Vec<String>,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            AppError::Invalid(_) | AppError::Upload(_) => (StatusCode::BAD_REQUEST, 3),
            AppError::NotFound(_) => (StatusCode::NOT_FOUND, 5),
            AppError::AlreadyExists(_) => (StatusCode::CONFLICT, 6),
            AppError::FailedPrecondition(_) => (StatusCode::BAD_REQUEST, 9),
            AppError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, 8),
            AppError::Aborted(_) => (StatusCode::CONFLICT, 10),
            AppError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, 16),
            AppError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, 9),
            AppError::Forbidden(_) => (StatusCode::FORBIDDEN, 7),
            AppError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, 8),
            AppError::ResourceExhausted(_) => (StatusCode::TOO_MANY_REQUESTS, 8),
            AppError::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, 14),
            AppError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, 14),
            AppError::UnsupportedProtocol(_) => (StatusCode::UPGRADE_REQUIRED, 12),
            AppError::Store(e) => {
                tracing::error!(error = %e, "storage error");
                (StatusCode::INTERNAL_SERVER_ERROR, 13)
            }
            AppError::Internal(e) => {
                tracing::error!(error = %e, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, 13)
            }
        };
        let error_messages = match &self {
            AppError::Upload(m) => m.clone(),
            _ => Vec::new(),
        };
        let body = ErrorBody {
            code,
            message: self.to_string(),
            details: Vec::new(),
            error_messages,
        };
        let mut response = (status, Json(body)).into_response();
        match &self {
            AppError::Unauthenticated(_) => {
                response.headers_mut().insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Bearer realm=\"canopy\""),
                );
            }
            AppError::RateLimited(secs)
            | AppError::Busy {
                retry_after: secs, ..
            } => {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, (*secs).into());
            }
            _ => {}
        }
        response
    }
}

/// Refuses a request body that is not declared JSON, as [`ApiJson`] does (for handlers that
/// stream their JSON body instead of extracting it).
pub fn require_json(headers: &axum::http::HeaderMap) -> Result<(), AppError> {
    let is_json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|m| {
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        });
    if is_json {
        Ok(())
    } else {
        Err(AppError::Invalid(
            "request body must be JSON (Content-Type: application/json)".into(),
        ))
    }
}

/// A JSON body whose rejections are the reference's 400s (not axum's 422), with serde's message
/// (which names the field) passed on.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req
            .extensions()
            .get::<super::BodyLimit>()
            .map_or(super::MAX_JSON_BODY, |l| l.0);
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::JsonDataError(e)) => Err(AppError::Invalid(format!(
                "invalid request body: {}",
                e.body_text()
            ))),
            Err(JsonRejection::JsonSyntaxError(e)) => Err(AppError::Invalid(format!(
                "request body is not valid JSON: {}",
                e.body_text()
            ))),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(AppError::Invalid(
                "request body must be JSON (Content-Type: application/json)".into(),
            )),
            Err(JsonRejection::BytesRejection(e))
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(AppError::TooLarge(format!(
                    "request body is larger than {limit} bytes"
                )))
            }
            Err(e) => Err(AppError::Invalid(e.body_text())),
        }
    }
}
