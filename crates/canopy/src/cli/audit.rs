//! `canopy audit ...`: the server's record of every mutating call (who, when, what, how it
//! ended). By default the log of the project the global `--project` names (people with write
//! access there may read it); `--all-projects` reads everything (administrators), including
//! calls outside projects such as logins and user changes.

use std::time::Duration;

use canopy_client::{AuditEntry, AuditFilter};
use clap::Subcommand;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Ctx;
use super::args::duration;
use super::output::Table;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List recorded calls, newest first.
    #[command(visible_alias = "ls")]
    List {
        /// Every project and the calls outside projects, not just --project's (administrators).
        #[arg(long, short = 'A')]
        all_projects: bool,
        /// Only calls by this actor (a user name, oidc:NAME, anonymous).
        #[arg(long, value_name = "NAME")]
        actor: Option<String>,
        /// Only actions containing this text, e.g. DELETE or registries (case-insensitive).
        #[arg(long, value_name = "TEXT")]
        action: Option<String>,
        /// Only calls since this time: RFC 3339 (2025-01-31T12:00:00Z) or an age (30m, 1h, 7d).
        #[arg(long, value_name = "TIME|AGE", value_parser = time_or_age)]
        since: Option<OffsetDateTime>,
        /// Only calls before this time: RFC 3339 or an age.
        #[arg(long, value_name = "TIME|AGE", value_parser = time_or_age)]
        until: Option<OffsetDateTime>,
        /// How many calls to show at most (the newest).
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: usize,
    },
}

/// An RFC 3339 time, or an age (`30m`, `1h`, `7d`) meaning that long before now.
pub fn time_or_age(s: &str) -> Result<OffsetDateTime, String> {
    if let Ok(t) = OffsetDateTime::parse(s.trim(), &Rfc3339) {
        return Ok(t);
    }
    let age: Duration = duration(s).map_err(|_| {
        format!("expected an RFC 3339 time (2025-01-31T12:00:00Z) or an age such as 30m, 1h or 7d, got {s:?}")
    })?;
    OffsetDateTime::now_utc()
        .checked_sub(time::Duration::try_from(age).map_err(|e| e.to_string())?)
        .ok_or_else(|| format!("{s:?} is too long ago"))
}

pub async fn run(cmd: AuditCommand, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::List {
            all_projects,
            actor,
            action,
            since,
            until,
            limit,
        } => {
            let filter = AuditFilter {
                project: (!all_projects).then(|| ctx.client.project().to_owned()),
                actor,
                action,
                since,
                until,
                ..AuditFilter::default()
            };
            let page = ctx.client.audit_log_upto(&filter, limit).await?;
            ctx.print_list(&page.items, audit_table(&page.items), None)?;
            if !ctx.structured() && (page.items.len() as u64) < page.total {
                writeln!(
                    ctx.out,
                    "{} of {} (more: --limit N, or narrow with --since/--actor/--action)",
                    page.items.len(),
                    page.total
                )?;
            }
            Ok(())
        }
    }
}

/// Time, Actor, Project, Action, Target, Result.
pub fn audit_table(items: &[AuditEntry]) -> Table {
    let mut t = Table::new(&["Time", "Actor", "Project", "Action", "Target", "Result"]);
    for e in items {
        let time = e
            .time
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default();
        let result = if e.status == 0 || e.result == "ok" {
            e.result.clone()
        } else {
            format!("{} {}", e.status, e.result)
        };
        // The action's method is enough next to the concrete target.
        let method = e.action.split(' ').next().unwrap_or_default().to_owned();
        t.push(vec![
            time,
            e.actor.clone(),
            e.project.clone(),
            method,
            e.target.clone(),
            result,
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_time_or_an_age() {
        let t = time_or_age("2025-01-31T12:00:00Z").unwrap();
        assert_eq!(t.unix_timestamp(), 1_738_324_800);
        let hour_ago = time_or_age("1h").unwrap();
        let diff = OffsetDateTime::now_utc() - hour_ago;
        assert!((3599..=3601).contains(&diff.whole_seconds()), "{diff}");
        assert!(time_or_age("yesterday").is_err());
    }

    async fn canopy(
        cp: &canopy_testkit::TestControlPlane,
        token: &str,
        args: &[&str],
    ) -> (i32, String, String) {
        let mut full = vec!["canopy", "--server", cp.url.as_str(), "--token", token];
        full.extend_from_slice(args);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = crate::cli::run_async(full, &mut out, &mut err).await;
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[tokio::test]
    async fn lists_the_log_of_a_project_or_of_everything() {
        let cp = canopy_testkit::TestControlPlane::start().await;
        cp.create_project("other").await;
        for project in ["default", "other"] {
            let (s, b) = cp
                .post(
                    &cp.catalog(project, "/registries"),
                    &serde_json::json!({"name": "helm", "rootUrl": "https://x.y", "type": "HELM"}),
                )
                .await;
            assert!(s.is_success(), "{b}");
        }
        let admin = cp.admin_token().to_owned();

        let (code, out, err) = canopy(&cp, &admin, &["audit", "list"]).await;
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.starts_with("Time"), "{out}");
        assert!(
            out.contains("/v3/projects/default/catalog/registries"),
            "{out}"
        );
        assert!(!out.contains("/v3/projects/other/"), "{out}");

        let (code, out, err) = canopy(
            &cp,
            &admin,
            &["--project", "other", "--output", "json", "audit", "list"],
        )
        .await;
        assert_eq!(code, 0, "{out}{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let entries = v.as_array().unwrap();
        // Creating the project (PUT /v1/projects/other) and its registry.
        assert_eq!(entries.len(), 2, "{out}");
        assert!(
            entries
                .iter()
                .all(|e| e["project"] == "other" && e["actor"] == "admin"),
            "{out}"
        );
        assert_eq!(
            entries[1]["action"], "PUT /v1/projects/{projectName}",
            "{out}"
        );

        // Everything, newest first, at most one line, with a hint that there is more.
        let (code, out, err) = canopy(
            &cp,
            &admin,
            &[
                "audit",
                "list",
                "-A",
                "--action",
                "registries",
                "--since",
                "1h",
                "--limit",
                "1",
            ],
        )
        .await;
        assert_eq!(code, 0, "{out}{err}");
        assert!(
            out.contains("/v3/projects/other/catalog/registries"),
            "{out}"
        );
        assert!(out.contains("1 of 2"), "{out}");

        // Without write access on the project: refused, with the server's reason.
        let reader = cp.user_token("reader", &["default_cat-r"]).await;
        let (code, out, err) = canopy(&cp, &reader, &["audit", "list"]).await;
        assert_eq!(code, 1, "{out}{err}");
        assert!(err.contains("audit log"), "{err}");
    }

    #[test]
    fn table_shows_failures_with_their_status() {
        let e = AuditEntry {
            id: 1,
            time: Some(time::macros::datetime!(2025-01-31 12:00 UTC)),
            actor: "alice".into(),
            project: "shop".into(),
            action: "DELETE /v3/projects/{projectName}/catalog/registries/{registryName}".into(),
            target: "/v3/projects/shop/catalog/registries/r".into(),
            result: "Conflict".into(),
            status: 409,
            request_id: String::new(),
        };
        let text = audit_table(&[e]).render("");
        assert!(text.contains("2025-01-31T12:00:00Z"), "{text}");
        assert!(text.contains("DELETE"), "{text}");
        assert!(text.contains("409 Conflict"), "{text}");
        assert!(
            text.contains("/v3/projects/shop/catalog/registries/r"),
            "{text}"
        );
    }
}
