//! The driver's one error type. Each variant names what it was doing to which object (container,
//! app, image, network, volume); the engine's own words stay in the source.

use std::time::Duration;

/// Any failure of the container or VM driver.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The engine address could not be understood.
    #[error(
        "invalid container engine address {host:?}: expected unix:///path.sock or http://host:port"
    )]
    InvalidHost { host: String },

    /// No engine answered at the address (at connect time).
    #[error("no container engine answers at {endpoint}. {hint}")]
    Unreachable {
        endpoint: String,
        hint: &'static str,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// An engine call failed.
    #[error("cannot {op} {target}")]
    Engine {
        /// What the driver was doing (`create`, `start`, `pull`, ...).
        op: &'static str,
        /// The object, with the app/deployment it belongs to.
        target: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The driver cannot do what was asked (e.g. a tunnel to a workload kind it does not run).
    #[error("this agent cannot open a {what}")]
    Unsupported { what: String },

    /// The workload named does not exist on this edge.
    #[error("{what} does not exist on this edge")]
    NoSuchWorkload { what: String },

    /// A VM operation failed (`op` says which, `target` names the VM and its app).
    #[error("cannot {op} {target}")]
    Vm {
        op: &'static str,
        target: String,
        #[source]
        source: canopy_vm::VmError,
    },

    /// A local connection or file of a workload could not be opened (VNC, serial console, log).
    #[error("cannot open {what}")]
    Open {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// An engine call did not answer in time.
    #[error("cannot {op} {target}: the engine did not answer within {} s", timeout.as_secs())]
    Timeout {
        op: &'static str,
        target: String,
        timeout: Duration,
    },
}

impl DriverError {
    /// HTTP status of the engine's answer, when the engine answered with an error.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            DriverError::Engine { source, .. } => {
                match source.downcast_ref::<bollard::errors::Error>() {
                    Some(bollard::errors::Error::DockerResponseServerError {
                        status_code, ..
                    }) => Some(*status_code),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// Whether the engine said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        let io_not_found = |e: &DriverError| match e {
            DriverError::Engine { source, .. } => source
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound),
            _ => false,
        };
        self.status_code() == Some(404) || io_not_found(self)
    }

    /// Whether the engine could not decode what it answered into the API's types (Podman reports
    /// states Docker's API does not have, such as `stopped`, for a moment after a container exits).
    pub(crate) fn is_decode_error(&self) -> bool {
        match self {
            DriverError::Engine { source, .. } => matches!(
                source.downcast_ref::<bollard::errors::Error>(),
                Some(
                    bollard::errors::Error::JsonDataError { .. }
                        | bollard::errors::Error::JsonSerdeError { .. }
                )
            ),
            _ => false,
        }
    }

    /// The message with its whole source chain, for status messages shown to users.
    pub fn chain(&self) -> String {
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
