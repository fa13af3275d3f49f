//! The agent's one error type. What matters to the sync loop is the *kind* of failure: a
//! transient one is retried with backoff, a refused credential or an unsupported protocol stops
//! the loop (retrying cannot help), anything else local (data directory, engine) is reported
//! with the path or address it concerns.

use std::path::PathBuf;

use crate::driver::DriverError;

/// Any failure of the agent: talking to the control plane, keeping its data directory, or
/// reaching its container engine.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// `401` on an authenticated request: the edge's credential was revoked or the edge
    /// removed. The sync loop stops; workloads keep running untouched.
    #[error(
        "the control plane refused this edge's credential ({message}): the credential was \
         revoked or the edge removed; re-enroll this agent (remove the credential file from its \
         data directory and start it again with --enroll-token)"
    )]
    Unauthorized {
        /// The server's message.
        message: String,
    },

    /// `426`: the control plane does not speak this agent's protocol version. The agent stops.
    #[error("the control plane does not speak this agent's protocol: {message}")]
    IncompatibleProtocol {
        /// The server's message (it names the versions).
        message: String,
    },

    /// Another `4xx`: the control plane understood the request and refused it (bad enrollment
    /// token, name taken, invalid report...).
    #[error("the control plane refused the {request} ({status}): {message}")]
    Rejected {
        /// What was asked (`enrollment`, `desired-state poll`, `status report`).
        request: &'static str,
        /// HTTP status code.
        status: u16,
        /// The server's message.
        message: String,
    },

    /// The control plane could not be reached, did not answer in time, failed (`5xx`) or
    /// answered something unreadable. Retried with backoff.
    #[error("{request} failed: {reason}")]
    Transient {
        /// What was asked (`enrollment`, `desired-state poll`, `status report`).
        request: &'static str,
        /// Why, in a few words (the deepest network cause, or the server's status and message).
        reason: String,
    },

    /// The control plane asked the agent to wait (`429` or `503` with `Retry-After`): retried
    /// like a transient failure, but not before `retry_after`.
    #[error("{request} failed: {reason} (retrying after {} s)", retry_after.as_secs())]
    Throttled {
        /// What was asked.
        request: &'static str,
        /// The server's status and message.
        reason: String,
        /// How long the server asked to wait (its `Retry-After`, at most 10 minutes).
        retry_after: std::time::Duration,
    },

    /// The configured control-plane address is not a usable URL.
    #[error("invalid control-plane address {server:?}: {reason}")]
    InvalidServer { server: String, reason: String },

    /// No credential in the data directory and no enrollment token to get one.
    #[error(
        "this agent is not enrolled: pass --enroll-token (no credential in {})",
        data_dir.display()
    )]
    NotEnrolled { data_dir: PathBuf },

    /// The data directory belongs to an edge enrolled with another control plane.
    #[error(
        "the data directory {} belongs to edge {edge} enrolled with {enrolled}, not {configured}: \
         use another data directory, or remove this one to enroll again",
        data_dir.display()
    )]
    ServerMismatch {
        data_dir: PathBuf,
        edge: String,
        enrolled: String,
        configured: String,
    },

    /// A file of the data directory could not be read, written or understood.
    #[error("cannot {op} {}", path.display())]
    DataDir {
        /// What the agent was doing (`create`, `read`, `write`, `parse`...).
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The container engine could not be used.
    #[error(transparent)]
    Driver(#[from] DriverError),
}

impl AgentError {
    /// Whether retrying later may succeed (network errors, timeouts, `5xx`, `429`).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            AgentError::Transient { .. } | AgentError::Throttled { .. }
        )
    }

    /// How long the control plane asked to wait before the next try, when it did.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            AgentError::Throttled { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Whether the sync loop must stop: the credential is refused (`401`) or the protocol is
    /// not spoken (`426`).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            AgentError::Unauthorized { .. } | AgentError::IncompatibleProtocol { .. }
        )
    }

    /// The message with its whole source chain, for logs.
    pub fn chain(&self) -> String {
        if let AgentError::Driver(e) = self {
            return e.chain();
        }
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            let text = s.to_string();
            if !out.contains(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            source = s.source();
        }
        out
    }
}
