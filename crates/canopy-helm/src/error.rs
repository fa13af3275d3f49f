//! The error of fetching a chart. It is `Clone` because one fetch's result is shared by every
//! caller that asked for the same chart at the same time (see [`crate::ChartFetcher`]); it never
//! carries credentials (URLs are shown without user information, tokens never).

/// Why a chart could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The registry URL, chart name or version is not acceptable.
    #[error("chart {chart}:{version}: {message}")]
    InvalidSource {
        chart: String,
        version: String,
        message: String,
    },
    /// The registry answered that there is no such chart or version.
    #[error(
        "chart {chart}:{version} not found in registry {registry}{}",
        detail_suffix(detail)
    )]
    NotFound {
        chart: String,
        version: String,
        registry: String,
        detail: String,
    },
    /// The registry wants credentials and none were given.
    #[error(
        "registry {registry} requires credentials for chart {chart}:{version}; set the \
         registry's username and authToken"
    )]
    AuthRequired {
        chart: String,
        version: String,
        registry: String,
    },
    /// The registry refused the credentials given.
    #[error(
        "registry {registry} refused the credentials (username/authToken) for chart \
         {chart}:{version}"
    )]
    CredentialsRefused {
        chart: String,
        version: String,
        registry: String,
    },
    /// The registry could not be reached or failed (connection, TLS, timeout, 5xx): the kind of
    /// failure a cached copy may stand in for.
    #[error("registry {registry} unreachable for chart {chart}:{version}: {message}")]
    Unreachable {
        chart: String,
        version: String,
        registry: String,
        message: String,
    },
    /// The registry answered something a chart registry should not.
    #[error("registry {registry}, chart {chart}:{version}: {message}")]
    Protocol {
        chart: String,
        version: String,
        registry: String,
        message: String,
    },
    /// Something is bigger than the limits allow.
    #[error("chart {chart}:{version}: {what} is larger than the limit of {limit} bytes")]
    TooLarge {
        chart: String,
        version: String,
        what: String,
        limit: u64,
    },
    /// The chart archive breaks a rule (hostile input).
    #[error("chart {chart}:{version}: archive {}{reason}", entry_prefix(entry))]
    InvalidArchive {
        chart: String,
        version: String,
        /// The archive entry at fault (empty when the archive as a whole is).
        entry: String,
        reason: String,
    },
    /// The bytes received do not have the digest the registry announced.
    #[error("chart {chart}:{version}: digest mismatch (expected {expected}, got {actual})")]
    DigestMismatch {
        chart: String,
        version: String,
        expected: String,
        actual: String,
    },
    /// The local chart cache failed (disk).
    #[error("chart cache: {0}")]
    Cache(String),
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

fn entry_prefix(entry: &str) -> String {
    if entry.is_empty() {
        String::new()
    } else {
        format!("entry {entry:?}: ")
    }
}

impl FetchError {
    /// Whether this is an outage (the registry could not be reached or failed), when a cached
    /// copy of the chart may be used instead. Refusals (not found, credentials, bad content)
    /// are not: a revoked credential must not be bypassed by the cache.
    pub fn is_outage(&self) -> bool {
        matches!(self, FetchError::Unreachable { .. })
    }
}
