//! The audit log: the middleware that records every mutating call, and the paths that read the
//! log back (`/canopy/v1/audit`, `/canopy/v1/projects/{projectName}/audit`).
//!
//! Recorded: every `POST`, `PUT`, `PATCH` and `DELETE`, whatever its outcome (a refused or
//! failed call is recorded with its status), except the agent's status reports and long-polls
//! (machine traffic: ten thousand edges every thirty seconds would drown the log; enrollment
//! *is* recorded). Reads are not recorded.
//!
//! A record holds the time the call started, the actor (the authenticated caller, the actor a
//! handler named with [`AuditActor`], else `anonymous`), the project named in the path (the web
//! console's `/ui/projects/P/...` included), the
//! action (`METHOD <route template>`), the target (the request path) and the outcome (`ok` for
//! a success, or a redirect: the web console answers a change that succeeded with one). Never the
//! query string or the body: they can carry secrets (registry credentials, passwords, tokens).
//!
//! The record is written before the response is returned, so a client that saw its call answer
//! finds it in the log. When the store fails, a warning is logged and the response is returned
//! anyway: an audit outage must not take the API down with it.
//!
//! Calls refused before any work (401 unauthenticated, 429 rate-limited) cost the caller
//! nothing, so a flood of them must not turn into a flood of database writes: at most
//! [`REFUSED_PER_SECOND`] such records per second are written (bursts of [`REFUSED_BURST`]), and
//! a warning counts those left out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::{HeaderValue, Method};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use super::Caller;
use super::error::ErrorBody;
use crate::app::{AUDIT_MAX_PAGE_SIZE, App, AppError, AuditQuery, AuditRecord, Principal};

/// Names the actor of a call that has no authenticated caller (e.g. a login attempt names the
/// user it was for): handlers put it into the response's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditActor(pub String);

/// Paths whose calls are not recorded (see the module doc).
const UNRECORDED: &[&str] = &["/canopy/v1/agent/status", "/canopy/v1/agent/desired-state"];

/// Prefixes of paths whose next segment is the project name.
const PROJECT_PREFIXES: &[&str] = &[
    "/v3/projects/",
    "/v1/projects/",
    "/canopy/v1/projects/",
    "/ui/projects/",
];

/// Longest actor, project and target kept (longer values are cut, on a character boundary).
const MAX_ACTOR: usize = 256;
const MAX_PROJECT: usize = 128;
const MAX_TARGET: usize = 2048;

/// Records of 401 and 429 answers written per second at most, in the process, and in a burst.
pub const REFUSED_PER_SECOND: u32 = 50;
pub const REFUSED_BURST: u32 = 500;

/// Whether one more record of a refused call may be written now (see the module doc).
fn refused_record_allowed() -> bool {
    static LIMIT: OnceLock<governor::DefaultDirectRateLimiter> = OnceLock::new();
    static LEFT_OUT: AtomicU64 = AtomicU64::new(0);
    let limit = LIMIT.get_or_init(|| {
        let rate = std::num::NonZeroU32::new(REFUSED_PER_SECOND).expect("not zero");
        let burst = std::num::NonZeroU32::new(REFUSED_BURST).expect("not zero");
        governor::RateLimiter::direct(governor::Quota::per_second(rate).allow_burst(burst))
    });
    if limit.check().is_err() {
        LEFT_OUT.fetch_add(1, Ordering::Relaxed);
        return false;
    }
    let left_out = LEFT_OUT.swap(0, Ordering::Relaxed);
    if left_out > 0 {
        tracing::warn!(
            left_out,
            "audit log: too many refused (401/429) calls; some were not recorded"
        );
    }
    true
}

/// Records the call if it mutates (see the module doc); `next` runs the rest of the stack
/// (see [`super::layers`]).
pub(crate) async fn record<F, Fut>(app: &App, mut req: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let method = req.method().clone();
    if !matches!(
        method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) || UNRECORDED.contains(&req.uri().path())
    {
        return next(req).await;
    }
    let at = OffsetDateTime::now_utc();
    let path = req.uri().path().to_string();
    let action = match req.extensions().get::<MatchedPath>() {
        Some(m) => format!("{method} {}", m.as_str()),
        None => format!("{method} {}", cut(&path, MAX_TARGET)),
    };
    // One correlation id for the handler's logs and the record: the client's when it sent a
    // sane one, else a new one that the handler then sees as the client's.
    let request_id = super::request_id(req.headers());
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        req.headers_mut().insert("x-request-id", v);
    }

    let response = next(req).await;

    let status = response.status();
    if matches!(status.as_u16(), 401 | 429) && !refused_record_allowed() {
        return response;
    }
    let actor = if let Some(p) = response.extensions().get::<Arc<Principal>>() {
        p.actor.clone()
    } else if let Some(AuditActor(a)) = response.extensions().get::<AuditActor>() {
        a.clone()
    } else {
        "anonymous".to_string()
    };
    let record = canopy_store::NewAuditRecord {
        at,
        actor: cut(&actor, MAX_ACTOR).to_string(),
        project: cut(project_of(&path), MAX_PROJECT).to_string(),
        action,
        target: cut(&path, MAX_TARGET).to_string(),
        // The web console answers a change that succeeded with a redirect (post/redirect/get).
        result: if status.is_success() || status.is_redirection() {
            "ok".to_string()
        } else {
            status.canonical_reason().unwrap_or("error").to_string()
        },
        status: status.as_u16(),
        request_id,
    };
    if let Err(e) = app.store().append_audit(&record).await {
        tracing::warn!(
            error = %e,
            action = %record.action,
            status = record.status,
            request_id = %record.request_id,
            "could not write the audit record of a call"
        );
    }
    response
}

/// The project named by a path (`/v3/projects/P/...`, `/v1/projects/P...`,
/// `/canopy/v1/projects/P/...`), else empty.
fn project_of(path: &str) -> &str {
    PROJECT_PREFIXES
        .iter()
        .find_map(|prefix| path.strip_prefix(prefix))
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("")
}

/// At most `max` bytes of `s`, cut on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

// ------------------------------------------------------------------ reading the log

/// One recorded call.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub id: i64,
    /// When the call started (RFC 3339, UTC).
    pub time: String,
    /// Who: a user name, `oidc:<name>`, `system` or `anonymous`.
    pub actor: String,
    /// The project named in the path; empty for calls outside projects.
    pub project: String,
    /// `METHOD <route template>`, e.g. `POST /v3/projects/{projectName}/catalog/applications`.
    pub action: String,
    /// The request path (never its query string).
    pub target: String,
    /// `ok`, or the HTTP reason phrase of the failure (`Conflict`, `Forbidden`, ...).
    pub result: String,
    /// The HTTP status code.
    pub status: u16,
    /// The call's correlation id (`x-request-id`).
    pub request_id: String,
}

impl From<AuditRecord> for AuditEntry {
    fn from(r: AuditRecord) -> AuditEntry {
        AuditEntry {
            id: r.id,
            time: r.at.format(&Rfc3339).unwrap_or_default(),
            actor: r.actor,
            project: r.project,
            action: r.action,
            target: r.target,
            result: r.result,
            status: r.status,
            request_id: r.request_id,
        }
    }
}

/// `{entries, totalElements}`, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListAuditResponse {
    pub entries: Vec<AuditEntry>,
    pub total_elements: u64,
}

/// Parses the query of the audit paths strictly (unknown parameters refused); `project` only
/// when the path does not fix it.
fn parse_query(raw: &str, project_in_path: Option<&str>) -> Result<AuditQuery, AppError> {
    let mut q = AuditQuery {
        project: project_in_path.map(str::to_string),
        ..AuditQuery::default()
    };
    let time = |k: &str, v: &str| {
        OffsetDateTime::parse(v.trim(), &Rfc3339).map_err(|_| {
            AppError::Invalid(format!(
                "invalid {k} {v:?}: must be an RFC 3339 time such as 2025-01-31T12:00:00Z"
            ))
        })
    };
    let text = |v: String| (!v.is_empty()).then_some(v);
    for (k, v) in canopy_core::list::form_pairs(raw)? {
        if v.chars().any(char::is_control) {
            return Err(AppError::Invalid(format!(
                "invalid {k}: control characters are not allowed"
            )));
        }
        match k.as_str() {
            "project" if project_in_path.is_none() => q.project = Some(v),
            "actor" => q.actor = text(v),
            "action" => q.action_contains = text(v),
            "result" => q.result = text(v),
            "since" => q.since = Some(time("since", &v)?),
            "until" => q.until = Some(time("until", &v)?),
            "pageSize" => {
                q.page_size = Some(v.trim().parse().map_err(|_| {
                    AppError::Invalid(format!(
                        "invalid pageSize {v:?}: must be a whole number from 0 (the default, 50) to {AUDIT_MAX_PAGE_SIZE}"
                    ))
                })?)
            }
            "offset" => {
                q.offset = v.trim().parse().map_err(|_| {
                    AppError::Invalid(format!(
                        "invalid offset {v:?}: must be a whole number, 0 or more"
                    ))
                })?
            }
            other => {
                return Err(AppError::Invalid(format!(
                    "unknown query parameter {other:?}"
                )));
            }
        }
    }
    Ok(q)
}

async fn list(
    app: &App,
    caller: &Caller,
    q: AuditQuery,
) -> Result<Json<ListAuditResponse>, AppError> {
    let (records, total) = app.audit_log(&caller.principal, &q).await?;
    Ok(Json(ListAuditResponse {
        entries: records.into_iter().map(AuditEntry::from).collect(),
        total_elements: total,
    }))
}

/// The audit log, newest first. Administrators read everything; anyone else must filter by a
/// project they hold catalog or deployment write access on.
#[utoipa::path(get, path = "/canopy/v1/audit", tag = "Canopy",
    params(
        ("project" = Option<String>, Query, description = "only calls in this project (required unless administrator)"),
        ("actor" = Option<String>, Query, description = "only calls by this actor"),
        ("action" = Option<String>, Query, description = "only actions containing this text (case-insensitive), e.g. DELETE or registries"),
        ("result" = Option<String>, Query, description = "only calls with this outcome: ok, or the failure's reason phrase (Forbidden, Conflict, ...)"),
        ("since" = Option<String>, Query, description = "only calls at or after this RFC 3339 time"),
        ("until" = Option<String>, Query, description = "only calls before this RFC 3339 time"),
        ("pageSize" = Option<u32>, Query, description = "entries per page, at most 500 (0 or absent: 50)"),
        ("offset" = Option<u64>, Query, description = "index of the first entry")),
    responses((status = 200, body = ListAuditResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_audit(
    State(app): State<App>,
    RawQuery(q): RawQuery,
    caller: Caller,
) -> Result<Json<ListAuditResponse>, AppError> {
    let q = parse_query(q.as_deref().unwrap_or(""), None)?;
    list(&app, &caller, q).await
}

/// The audit log of one project, newest first (catalog or deployment write access needed).
#[utoipa::path(get, path = "/canopy/v1/projects/{projectName}/audit", tag = "Canopy",
    params(("projectName" = String, Path),
        ("actor" = Option<String>, Query, description = "only calls by this actor"),
        ("action" = Option<String>, Query, description = "only actions containing this text (case-insensitive)"),
        ("result" = Option<String>, Query, description = "only calls with this outcome: ok, or the failure's reason phrase"),
        ("since" = Option<String>, Query, description = "only calls at or after this RFC 3339 time"),
        ("until" = Option<String>, Query, description = "only calls before this RFC 3339 time"),
        ("pageSize" = Option<u32>, Query, description = "entries per page, at most 500 (0 or absent: 50)"),
        ("offset" = Option<u64>, Query, description = "index of the first entry")),
    responses((status = 200, body = ListAuditResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn project_audit(
    State(app): State<App>,
    Path(project): Path<String>,
    RawQuery(q): RawQuery,
    caller: Caller,
) -> Result<Json<ListAuditResponse>, AppError> {
    let q = parse_query(q.as_deref().unwrap_or(""), Some(&project))?;
    list(&app, &caller, q).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_comes_from_the_path() {
        assert_eq!(project_of("/v3/projects/shop/catalog/applications"), "shop");
        assert_eq!(
            project_of("/v1/projects/shop/appdeployment/deployments"),
            "shop"
        );
        assert_eq!(project_of("/canopy/v1/projects/shop/edges/e1"), "shop");
        assert_eq!(project_of("/v1/projects/shop"), "shop");
        assert_eq!(project_of("/v1/projects"), "");
        assert_eq!(project_of("/canopy/v1/agent/enroll"), "");
        assert_eq!(project_of("/canopy/v1/users/bob"), "");
    }

    #[test]
    fn records_of_refused_calls_are_bounded() {
        let burst = REFUSED_BURST as usize;
        let allowed = (0..burst * 2).filter(|_| refused_record_allowed()).count();
        assert!((burst..burst + 50).contains(&allowed), "{allowed}");
    }

    #[test]
    fn cuts_on_character_boundaries() {
        assert_eq!(cut("abc", 5), "abc");
        assert_eq!(cut("abcdef", 3), "abc");
        assert_eq!(cut("aé", 2), "a");
    }

    #[test]
    fn query_is_strict_and_names_the_parameter() {
        let q = parse_query(
            "project=p&actor=alice&action=DELETE&result=Forbidden&since=2025-01-01T00:00:00Z&pageSize=10&offset=20",
            None,
        )
        .unwrap();
        assert_eq!(q.project.as_deref(), Some("p"));
        assert_eq!(q.actor.as_deref(), Some("alice"));
        assert_eq!(q.action_contains.as_deref(), Some("DELETE"));
        assert_eq!(q.result.as_deref(), Some("Forbidden"));
        assert!(q.since.is_some() && q.until.is_none());
        assert_eq!((q.page_size, q.offset), (Some(10), 20));
        for (raw, name) in [
            ("since=yesterday", "since"),
            ("until=2025-01-01", "until"),
            ("pageSize=-1", "pageSize"),
            ("pageSize=x", "pageSize"),
            ("offset=-5", "offset"),
            ("bogus=1", "bogus"),
        ] {
            let e = parse_query(raw, None).unwrap_err().to_string();
            assert!(e.contains(name), "{raw}: {e}");
        }
        // The project path fixes the project.
        assert!(parse_query("project=other", Some("p")).is_err());
        assert_eq!(
            parse_query("", Some("p")).unwrap().project.as_deref(),
            Some("p")
        );
    }
}
