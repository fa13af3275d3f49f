//! The HTTP side of fetching: one client per fetch (the registry's own CA certificates decide
//! what it trusts), timeouts on every call, and bodies read with a byte bound so a hostile or
//! broken registry cannot make the control plane buffer without end.

use std::time::Duration;

use futures::StreamExt;

use crate::source::{ChartSource, Credentials};
use crate::{FetchError, FetchLimits};

/// Builds the client for one registry: its `cacerts` (when given) are the only roots trusted,
/// as with Helm's `--ca-file`; otherwise the built-in web roots are.
pub(crate) fn client(
    src: &ChartSource,
    creds: &Credentials,
    limits: &FetchLimits,
) -> Result<reqwest::Client, FetchError> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(limits.connect_timeout)
        .timeout(limits.request_timeout)
        .redirect(reqwest::redirect::Policy::limited(5))
        .user_agent(concat!("canopy-helm/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = creds.ca_pem.as_deref().filter(|p| !p.trim().is_empty()) {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| src.invalid(format!("cacerts is not valid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(src.invalid("cacerts holds no PEM certificate"));
        }
        b = b.tls_built_in_root_certs(false);
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build()
        .map_err(|e| src.invalid(format!("cannot build an HTTP client: {e}")))
}

/// Maps a transport error to [`FetchError::Unreachable`] (connection, TLS, timeout).
pub(crate) fn transport(src: &ChartSource, registry: &str, e: &reqwest::Error) -> FetchError {
    let mut message = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    // The innermost cause says what went wrong (refused, certificate, ...); the URL (which
    // never carries credentials here) is left out, the registry is named by the caller.
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut last = None;
    while let Some(c) = cause {
        last = Some(c.to_string());
        cause = c.source();
    }
    if let Some(last) = last {
        message.push_str(": ");
        message.push_str(&last.chars().take(300).collect::<String>());
    }
    FetchError::Unreachable {
        chart: src.chart_name.clone(),
        version: src.chart_version.clone(),
        registry: registry.to_string(),
        message,
    }
}

/// Reads a response body, failing once it passes `limit` bytes (without reading further).
pub(crate) async fn read_bounded(
    src: &ChartSource,
    registry: &str,
    resp: reqwest::Response,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, FetchError> {
    let too_large = || FetchError::TooLarge {
        chart: src.chart_name.clone(),
        version: src.chart_version.clone(),
        what: what.to_string(),
        limit,
    };
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| transport(src, registry, &e))?;
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The first bytes of an error body, as text, for messages.
pub(crate) async fn error_text(resp: reqwest::Response) -> String {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, stream.next()).await {
        out.extend_from_slice(&chunk);
        if out.len() > 512 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&out[..out.len().min(512)]);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
