//! The app layer's one error type. Each variant corresponds to a gRPC status of the reference
//! (InvalidArgument, NotFound, AlreadyExists, FailedPrecondition, ...) and is turned into an HTTP
//! response in exactly one place (`http::error`).

use canopy_core::Invalid;
use canopy_core::list::ListError;
use canopy_core::upload::UploadError;
use canopy_store::StoreError;

/// What went wrong, with a message that names the resource and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request is malformed or breaks a field rule (HTTP 400, gRPC InvalidArgument).
    #[error("{0}")]
    Invalid(String),
    /// An upload failed; every message names its file (HTTP 400).
    #[error("{}", .0.join("; "))]
    Upload(Vec<String>),
    /// The resource does not exist (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// A resource with that key already exists, or a display name is taken (HTTP 409).
    #[error("{0}")]
    AlreadyExists(String),
    /// The operation is refused in the resource's current state (HTTP 400, gRPC FailedPrecondition).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The operation conflicts with other resources (HTTP 409, gRPC Aborted): e.g. deleting
    /// a deployment other deployments depend on.
    #[error("{0}")]
    Aborted(String),
    /// Missing, invalid, expired or revoked credentials (HTTP 401).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is authenticated but lacks the role the operation needs (HTTP 403).
    #[error("{0}")]
    Forbidden(String),
    /// Too many requests from one caller (HTTP 429); the value is seconds until a retry helps.
    #[error("too many requests: retry in {0} s")]
    RateLimited(u64),
    /// A dependency (the identity provider) cannot be reached (HTTP 503).
    #[error("{0}")]
    Unavailable(String),
    /// A well-formed request about something the caller does not hold (HTTP 422).
    #[error("{0}")]
    Unprocessable(String),
    /// The agent speaks a protocol version this server does not (HTTP 426).
    #[error("{0}")]
    UnsupportedProtocol(String),
    /// The request is too large (HTTP 413).
    #[error("{0}")]
    TooLarge(String),
    /// A quota is used up (HTTP 429, gRPC ResourceExhausted): e.g. the open upload sessions of
    /// a project. Retrying helps only once something is released, so no `Retry-After`.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The server is at capacity for this kind of request right now (HTTP 503 with
    /// `Retry-After`): e.g. its upload spool is full.
    #[error("{message}")]
    Busy { message: String, retry_after: u64 },
    /// Storage failed (HTTP 500; details logged, not returned).
    #[error("internal error")]
    Store(StoreError),
    /// Something that should not happen (HTTP 500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<Invalid> for AppError {
    fn from(e: Invalid) -> Self {
        AppError::Invalid(e.to_string())
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NoSuchProject(id) => AppError::NotFound(format!("project {id} not found")),
            StoreError::NoSuchUploadSession(id) => {
                AppError::NotFound(format!("upload-session {id} not found"))
            }
            StoreError::UnsupportedListField { entity, field } => AppError::Invalid(format!(
                "cannot filter/orderBy on attribute {field:?} of {entity}"
            )),
            other => AppError::Store(other),
        }
    }
}

impl From<canopy_deploy::error::DeployError> for AppError {
    fn from(e: canopy_deploy::error::DeployError) -> Self {
        use canopy_deploy::error::ErrorKind;
        match e.kind {
            ErrorKind::InvalidArgument => AppError::Invalid(e.message),
            ErrorKind::NotFound => AppError::NotFound(e.message),
            ErrorKind::AlreadyExists => AppError::AlreadyExists(e.message),
            ErrorKind::FailedPrecondition => AppError::FailedPrecondition(e.message),
        }
    }
}

impl From<ListError> for AppError {
    fn from(e: ListError) -> Self {
        AppError::Invalid(e.0)
    }
}

impl From<UploadError> for AppError {
    fn from(e: UploadError) -> Self {
        AppError::Upload(e.messages)
    }
}
