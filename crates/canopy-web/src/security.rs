//! What every console answer carries, and what every console POST must prove.
//!
//! Headers: a strict Content-Security-Policy (`default-src 'self'`, no inline script or style,
//! no framing, forms only to this server), `X-Frame-Options: DENY` for older browsers,
//! `Referrer-Policy: no-referrer`, `X-Content-Type-Options: nosniff`, and `Cache-Control:
//! no-store` on pages (they show live state and are per user; the style sheet sets its own).
//!
//! Origins: a POST whose `Sec-Fetch-Site` is present and not `same-origin`, or whose `Origin`
//! is present and not this server's (the request's `Host`, or the configured public URL), is
//! refused with 403 before anything else happens. Browsers send at least one of the two on a
//! cross-site POST; the CSRF token (`session.rs`) covers the rest. One exception: under
//! `Referrer-Policy: no-referrer` browsers send `Origin: null` even on their own site's form
//! posts, so `null` passes when `Sec-Fetch-Site: same-origin` (which a page cannot forge) says
//! where the form came from.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::WebError;

/// The console's Content-Security-Policy.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// Adds the security headers to every console answer (see the module doc).
pub async fn headers(mut req: Request, next: Next) -> Response {
    // HTTP/2 (what browsers speak to `canopy up`'s TLS) carries the host in the `:authority`
    // pseudo-header, which arrives as the request URI's authority, not as a `Host` header. The
    // origin checks and the URLs the pages build read `Host`: give them the authority.
    if !req.headers().contains_key(header::HOST)
        && let Some(authority) = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        req.headers_mut().insert(header::HOST, authority);
    }
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Refuses a POST that a browser says came from another site (see the module doc).
pub fn same_origin(
    method: &Method,
    headers: &HeaderMap,
    public_url: Option<&str>,
) -> Result<(), WebError> {
    if method != Method::POST {
        return Ok(());
    }
    let refused = |what: String| {
        Err(WebError::CrossOrigin(format!(
            "refused: this form was sent from another site ({what})"
        )))
    };
    if let Some(site) = headers.get("sec-fetch-site")
        && site.as_bytes() != b"same-origin"
    {
        return refused(format!(
            "Sec-Fetch-Site: {}",
            String::from_utf8_lossy(site.as_bytes())
        ));
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let fetch_same_origin = headers
        .get("sec-fetch-site")
        .is_some_and(|s| s.as_bytes() == b"same-origin");
    let ours = |o: &str| {
        (o == "null" && fetch_same_origin)
            || o.strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"))
                .is_some_and(|authority| !host.is_empty() && authority.eq_ignore_ascii_case(host))
            || public_url.is_some_and(|p| origin_of(p).eq_ignore_ascii_case(o))
    };
    if ours(origin) {
        Ok(())
    } else {
        refused(format!("Origin: {origin}"))
    }
}

/// `scheme://authority` of a URL.
fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..]
        .find('/')
        .map_or(url.len(), |i| after_scheme + i);
    &url[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(pairs: &[(&'static str, &'static str)]) -> Result<(), WebError> {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        same_origin(&Method::POST, &h, Some("https://canopy.example.com/prefix"))
    }

    #[test]
    fn only_this_servers_origin_may_post() {
        assert!(post(&[("host", "127.0.0.1:7070")]).is_ok());
        assert!(
            post(&[
                ("host", "127.0.0.1:7070"),
                ("origin", "http://127.0.0.1:7070")
            ])
            .is_ok()
        );
        assert!(
            post(&[
                ("host", "internal:80"),
                ("origin", "https://canopy.example.com")
            ])
            .is_ok()
        );
        assert!(
            post(&[
                ("host", "127.0.0.1:7070"),
                ("origin", "https://evil.example")
            ])
            .is_err()
        );
        assert!(post(&[("host", "127.0.0.1:7070"), ("origin", "null")]).is_err());
        // What Chromium sends for a form post under `Referrer-Policy: no-referrer`.
        assert!(
            post(&[
                ("host", "h:1"),
                ("origin", "null"),
                ("sec-fetch-site", "same-origin")
            ])
            .is_ok()
        );
        assert!(
            post(&[
                ("host", "h:1"),
                ("origin", "https://evil.example"),
                ("sec-fetch-site", "same-origin")
            ])
            .is_err()
        );
        assert!(post(&[("host", "127.0.0.1:7070"), ("sec-fetch-site", "cross-site")]).is_err());
        assert!(post(&[("host", "127.0.0.1:7070"), ("sec-fetch-site", "same-site")]).is_err());
        assert!(
            post(&[
                ("host", "127.0.0.1:7070"),
                ("sec-fetch-site", "same-origin")
            ])
            .is_ok()
        );
    }
}
