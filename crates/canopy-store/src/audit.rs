//! The audit log: one row per mutating API call (who, when, which project, what, on which path,
//! and how it ended), appended by the server's audit middleware and read back newest first.
//!
//! Rows name their project by *name*, not id, and have no foreign key, so the history of a
//! deleted project survives it. Nothing here interprets the text: the middleware is responsible
//! for never handing a secret in (it records the path without its query string, never a body).
//!
//! Appends happen outside any catalog transaction; on SQLite they take the store's write lock
//! like every other write, so they never wait on SQLite's file lock behind a long transaction.

use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;

use crate::sql::{format_time, parse_time};
use crate::{Backend, Store, StoreError};

/// Default and largest page of [`Store::query_audit`].
pub const AUDIT_DEFAULT_PAGE_SIZE: u32 = 50;
pub const AUDIT_MAX_PAGE_SIZE: u32 = 500;

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Increases with every append (ties of `at` are ordered by it).
    pub id: i64,
    /// When the call started (UTC, microsecond precision).
    pub at: OffsetDateTime,
    /// Who: a user name, `oidc:<name>`, `system`, or `anonymous`.
    pub actor: String,
    /// The project's name, or empty for calls outside any project.
    pub project: String,
    /// `METHOD <route template>`, e.g. `POST /v3/projects/{projectName}/catalog/applications`.
    pub action: String,
    /// The request path (never its query string).
    pub target: String,
    /// `ok`, or the HTTP reason phrase of the failure (`Conflict`, `Forbidden`, ...).
    pub result: String,
    /// The HTTP status code.
    pub status: u16,
    /// The request's correlation id (`x-request-id`).
    pub request_id: String,
}

/// A record to append (the store assigns the id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditRecord {
    pub at: OffsetDateTime,
    pub actor: String,
    pub project: String,
    pub action: String,
    pub target: String,
    pub result: String,
    pub status: u16,
    pub request_id: String,
}

/// Which records to read. Every set filter must match; none set means all records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Exactly this project name (`Some("")` = calls outside any project).
    pub project: Option<String>,
    /// Exactly this actor.
    pub actor: Option<String>,
    /// The action contains this text (case-insensitive), e.g. `DELETE` or `registries`.
    pub action_contains: Option<String>,
    /// Exactly this outcome: `ok`, or a failure's reason phrase (`Forbidden`, `Conflict`, ...).
    pub result: Option<String>,
    /// Records at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Records strictly before this time.
    pub until: Option<OffsetDateTime>,
    /// Records per page: [`AUDIT_DEFAULT_PAGE_SIZE`] when `None`, clamped to
    /// `1..=`[`AUDIT_MAX_PAGE_SIZE`].
    pub page_size: Option<u32>,
    /// How many matching records (newest first) to skip.
    pub offset: u64,
}

enum Arg {
    Text(String),
    Int(i64),
}

/// `text` as a lowercase `LIKE` substring pattern with `\` escaping `%`, `_` and `\`.
fn contains_pattern(text: &str) -> String {
    let mut out = String::from("%");
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The `WHERE` clause (always non-empty) and its arguments, numbered from `$1`.
fn where_clause(q: &AuditQuery) -> (String, Vec<Arg>) {
    let mut terms = vec!["1 = 1".to_string()];
    let mut args = Vec::new();
    let mut push = |term: &str, arg: Arg, args: &mut Vec<Arg>| {
        args.push(arg);
        terms.push(term.replace('?', &format!("${}", args.len())));
    };
    if let Some(p) = &q.project {
        push("project = ?", Arg::Text(p.clone()), &mut args);
    }
    if let Some(a) = &q.actor {
        push("actor = ?", Arg::Text(a.clone()), &mut args);
    }
    if let Some(a) = q.action_contains.as_deref().filter(|a| !a.is_empty()) {
        push(
            "LOWER(action) LIKE ? ESCAPE '\\'",
            Arg::Text(contains_pattern(a)),
            &mut args,
        );
    }
    if let Some(r) = &q.result {
        push("result = ?", Arg::Text(r.clone()), &mut args);
    }
    if let Some(t) = q.since {
        push("at >= ?", Arg::Text(format_time(t)), &mut args);
    }
    if let Some(t) = q.until {
        push("at < ?", Arg::Text(format_time(t)), &mut args);
    }
    (terms.join(" AND "), args)
}

fn bind<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    args: &[Arg],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for a in args {
        query = match a {
            Arg::Text(s) => query.bind(s.clone()),
            Arg::Int(i) => query.bind(*i),
        };
    }
    query
}

fn record_from_row(row: &AnyRow) -> Result<AuditRecord, StoreError> {
    let status: i64 = row.try_get("status")?;
    Ok(AuditRecord {
        id: row.try_get("id")?,
        at: parse_time(&row.try_get::<String, _>("at")?)?,
        actor: row.try_get("actor")?,
        project: row.try_get("project")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        result: row.try_get("result")?,
        status: u16::try_from(status)
            .map_err(|_| StoreError::Corrupt(format!("audit status {status} out of range")))?,
        request_id: row.try_get("request_id")?,
    })
}

impl Store {
    async fn audit_write_lock(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.backend {
            Backend::Sqlite => Some(self.write_lock.lock().await),
            Backend::Postgres => None,
        }
    }

    /// Appends one record.
    pub async fn append_audit(&self, r: &NewAuditRecord) -> Result<(), StoreError> {
        let _guard = self.audit_write_lock().await;
        sqlx::query(
            "INSERT INTO audit_log (at, actor, project, action, target, result, status, request_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(format_time(r.at))
        .bind(r.actor.clone())
        .bind(r.project.clone())
        .bind(r.action.clone())
        .bind(r.target.clone())
        .bind(r.result.clone())
        .bind(i64::from(r.status))
        .bind(r.request_id.clone())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// One page of the matching records, newest first, and how many match in all.
    pub async fn query_audit(&self, q: &AuditQuery) -> Result<(Vec<AuditRecord>, u64), StoreError> {
        let (where_, mut args) = where_clause(q);
        let count_sql = format!("SELECT COUNT(*) FROM audit_log WHERE {where_}");
        let total: i64 = bind(sqlx::query(&count_sql), &args)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        let size = q
            .page_size
            .unwrap_or(AUDIT_DEFAULT_PAGE_SIZE)
            .clamp(1, AUDIT_MAX_PAGE_SIZE);
        args.push(Arg::Int(i64::from(size)));
        let limit = args.len();
        args.push(Arg::Int(i64::try_from(q.offset).unwrap_or(i64::MAX)));
        let offset = args.len();
        let page_sql = format!(
            "SELECT id, at, actor, project, action, target, result, status, request_id \
             FROM audit_log WHERE {where_} ORDER BY at DESC, id DESC LIMIT ${limit} OFFSET ${offset}"
        );
        let rows = bind(sqlx::query(&page_sql), &args)
            .fetch_all(&self.pool)
            .await?;
        let records = rows
            .iter()
            .map(record_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((records, u64::try_from(total).unwrap_or(0)))
    }

    /// Deletes the records from before `before`; returns how many.
    pub async fn prune_audit(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let _guard = self.audit_write_lock().await;
        let done = sqlx::query("DELETE FROM audit_log WHERE at < $1")
            .bind(format_time(before))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_escape_like_wildcards() {
        assert_eq!(contains_pattern("Del_e%te\\"), "%del\\_e\\%te\\\\%");
    }

    #[test]
    fn where_numbers_arguments_in_order() {
        let q = AuditQuery {
            project: Some("p".into()),
            action_contains: Some("post".into()),
            until: Some(OffsetDateTime::UNIX_EPOCH),
            ..AuditQuery::default()
        };
        let (w, args) = where_clause(&q);
        assert_eq!(args.len(), 3);
        assert!(w.contains("project = $1"), "{w}");
        assert!(w.contains("LIKE $2"), "{w}");
        assert!(w.contains("at < $3"), "{w}");
        let (w, args) = where_clause(&AuditQuery {
            result: Some("Forbidden".into()),
            ..AuditQuery::default()
        });
        assert_eq!(args.len(), 1);
        assert!(w.contains("result = $1"), "{w}");
        let (w, args) = where_clause(&AuditQuery::default());
        assert!(args.is_empty());
        assert_eq!(w, "1 = 1");
    }
}
