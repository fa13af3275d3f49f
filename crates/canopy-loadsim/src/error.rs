//! The simulator's one error type: each variant names what was being done, once.

/// Why a simulation run stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A flag out of its bounds, or a non-loopback server.
    #[error("{0}")]
    Config(String),
    /// The server child could not be started or did not become healthy.
    #[error("server: {0}")]
    Server(String),
    /// The server answered an operator request with an error.
    #[error("{what}: the server answered {status}: {body}")]
    Http {
        what: String,
        status: u16,
        body: String,
    },
    /// An operator request did not get an answer.
    #[error("{what}")]
    Network {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    /// An edge could not enroll.
    #[error("enrolling edge {name}")]
    Enroll {
        name: String,
        #[source]
        source: Box<canopy_agent::AgentError>,
    },
    /// A phase did not finish within its bound.
    #[error("{phase} did not finish within {seconds} s: {detail}")]
    Timeout {
        phase: String,
        seconds: u64,
        detail: String,
    },
    /// The server answered, but not what it should have.
    #[error("{phase}: {detail}")]
    Check { phase: String, detail: String },
    /// A local file or process could not be used.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}
