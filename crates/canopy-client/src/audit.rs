//! The audit log (`/canopy/v1/audit`): every mutating call the server answered, newest first.
//! Administrators read all of it; anyone else reads the log of one project they hold write
//! access on.
//!
//! [`AuditEntry`] mirrors the server's JSON shape leniently (missing fields take defaults,
//! unknown ones are ignored), like the fleet types.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::{Client, ClientError, Page, take_count, take_list};

/// Largest page of the audit log the server hands out.
pub const MAX_AUDIT_PAGE_SIZE: u32 = 500;

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    #[serde(default)]
    pub id: i64,
    /// When the call started.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub time: Option<OffsetDateTime>,
    /// Who: a user name, `oidc:<name>`, `system` or `anonymous`.
    #[serde(default)]
    pub actor: String,
    /// The project named in the call's path; empty for calls outside projects.
    #[serde(default)]
    pub project: String,
    /// `METHOD <route template>`.
    #[serde(default)]
    pub action: String,
    /// The request path.
    #[serde(default)]
    pub target: String,
    /// `ok`, or the HTTP reason phrase of the failure.
    #[serde(default)]
    pub result: String,
    /// The HTTP status code.
    #[serde(default)]
    pub status: u16,
    #[serde(default)]
    pub request_id: String,
}

/// Which entries to read; `None` fields are left out of the query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only calls in this project.
    pub project: Option<String>,
    /// Only calls by this actor.
    pub actor: Option<String>,
    /// Only actions containing this text (case-insensitive).
    pub action: Option<String>,
    /// Only calls at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only calls before this time.
    pub until: Option<OffsetDateTime>,
    /// Entries per page (server default 50, max 500).
    pub page_size: Option<u32>,
    /// Index of the first entry (0 = the newest).
    pub offset: Option<u64>,
}

impl AuditFilter {
    /// The query pairs, in a stable order.
    pub fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        let text = |s: &Option<String>| s.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
        if let Some(p) = text(&self.project) {
            q.push(("project", p));
        }
        if let Some(a) = text(&self.actor) {
            q.push(("actor", a));
        }
        if let Some(a) = text(&self.action) {
            q.push(("action", a));
        }
        for (k, t) in [("since", self.since), ("until", self.until)] {
            if let Some(s) = t.and_then(|t| t.format(&Rfc3339).ok()) {
                q.push((k, s));
            }
        }
        if let Some(n) = self.page_size {
            q.push(("pageSize", n.to_string()));
        }
        if let Some(n) = self.offset {
            q.push(("offset", n.to_string()));
        }
        q
    }
}

impl Client {
    /// `GET /canopy/v1/audit`: one page of the audit log, newest first. Without
    /// `filter.project` only administrators may read it.
    pub async fn audit_log(&self, filter: &AuditFilter) -> Result<Page<AuditEntry>, ClientError> {
        let url = self.url(&["canopy", "v1", "audit"]);
        self.audit_page(url, filter).await
    }

    /// `GET /canopy/v1/projects/{project}/audit`: one page of this client's project's audit
    /// log (`filter.project` is ignored).
    pub async fn project_audit_log(
        &self,
        filter: &AuditFilter,
    ) -> Result<Page<AuditEntry>, ClientError> {
        let url = self.canopy_url(&["audit"]);
        let filter = AuditFilter {
            project: None,
            ..filter.clone()
        };
        self.audit_page(url, &filter).await
    }

    async fn audit_page(
        &self,
        url: reqwest::Url,
        filter: &AuditFilter,
    ) -> Result<Page<AuditEntry>, ClientError> {
        let req = self.request(Method::GET, &url).query(&filter.query());
        let mut body = self.execute_json(req, &url).await?;
        let items: Vec<AuditEntry> = take_list(&url, &mut body, &["entries"])?;
        let total = take_count(&url, &body, "totalElements")?;
        Ok(Page { items, total })
    }

    /// Up to `limit` entries, newest first, from `filter.offset` on, across pages.
    pub async fn audit_log_upto(
        &self,
        filter: &AuditFilter,
        limit: usize,
    ) -> Result<Page<AuditEntry>, ClientError> {
        let start = filter.offset.unwrap_or(0);
        let mut items = Vec::new();
        let mut total = 0;
        while items.len() < limit {
            let want = (limit - items.len()).min(MAX_AUDIT_PAGE_SIZE as usize);
            let page = self
                .audit_log(&AuditFilter {
                    page_size: Some(want as u32),
                    offset: Some(start + items.len() as u64),
                    ..filter.clone()
                })
                .await?;
            total = page.total;
            let got = page.items.len();
            items.extend(page.items);
            if got < want || start + items.len() as u64 >= total {
                break;
            }
        }
        Ok(Page { items, total })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_query_leaves_out_what_is_unset() {
        assert!(AuditFilter::default().query().is_empty());
        let f = AuditFilter {
            project: Some("shop".into()),
            actor: Some(String::new()),
            action: Some("DELETE".into()),
            since: Some(time::macros::datetime!(2025-01-31 12:00 UTC)),
            page_size: Some(10),
            offset: Some(5),
            ..AuditFilter::default()
        };
        assert_eq!(
            f.query(),
            vec![
                ("project", "shop".to_string()),
                ("action", "DELETE".to_string()),
                ("since", "2025-01-31T12:00:00Z".to_string()),
                ("pageSize", "10".to_string()),
                ("offset", "5".to_string()),
            ]
        );
    }

    #[test]
    fn entries_decode_leniently() {
        let e: AuditEntry = serde_json::from_str(
            r#"{"id": 3, "time": "2025-01-31T12:00:00.5Z", "actor": "alice", "status": 409, "extra": 1}"#,
        )
        .unwrap();
        assert_eq!(e.id, 3);
        assert_eq!(e.actor, "alice");
        assert_eq!(e.status, 409);
        assert!(e.time.is_some());
        assert!(e.project.is_empty());
    }
}
