//! The one error type of the deployment rules: a kind the server maps to an HTTP status (and a
//! gRPC-style code in the body) and a message that names what is wrong (the field, application,
//! profile or value), written once here so handlers never re-word it.

/// What kind of failure a [`DeployError`] is (maps to 400 / 404 / 409 / 412-ish responses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is malformed or breaks a rule (HTTP 400).
    InvalidArgument,
    /// Something the request names does not exist (HTTP 404).
    NotFound,
    /// The request would duplicate something that exists (HTTP 409).
    AlreadyExists,
    /// The request is well formed but cannot be carried out in the current state (HTTP 412/400).
    FailedPrecondition,
}

/// A deployment request or rendering failure. `Display` is the message alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DeployError {
    pub kind: ErrorKind,
    pub message: String,
}

impl DeployError {
    /// An error of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> DeployError {
        DeployError {
            kind,
            message: message.into(),
        }
    }

    /// [`ErrorKind::InvalidArgument`].
    pub fn invalid(message: impl Into<String>) -> DeployError {
        DeployError::new(ErrorKind::InvalidArgument, message)
    }

    /// [`ErrorKind::NotFound`].
    pub fn not_found(message: impl Into<String>) -> DeployError {
        DeployError::new(ErrorKind::NotFound, message)
    }

    /// [`ErrorKind::AlreadyExists`].
    pub fn already_exists(message: impl Into<String>) -> DeployError {
        DeployError::new(ErrorKind::AlreadyExists, message)
    }

    /// [`ErrorKind::FailedPrecondition`].
    pub fn failed_precondition(message: impl Into<String>) -> DeployError {
        DeployError::new(ErrorKind::FailedPrecondition, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_the_message() {
        let e = DeployError::not_found("deployment profile x not found");
        assert_eq!(e.to_string(), "deployment profile x not found");
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert_eq!(
            DeployError::already_exists("a").kind,
            ErrorKind::AlreadyExists
        );
        assert_eq!(
            DeployError::failed_precondition("a").kind,
            ErrorKind::FailedPrecondition
        );
        assert_eq!(DeployError::invalid("a").kind, ErrorKind::InvalidArgument);
    }
}
