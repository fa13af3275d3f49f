//! The pages: a shared frame (header, navigation, project switcher, sign-out) and helpers for
//! ages, states and paging. Each page module is thin: read through the app layer with the
//! signed-in user's identity, render.

pub mod catalog;
pub mod deploy;
pub mod deployment_edit;
pub mod deployments;
pub mod edges;
pub mod login;
// OIDC sign-in (web-oidc).
pub mod oidc;
pub mod upload;
pub mod workloads;

// web-admin: edges' labels and enrollment tokens, catalog edits, administration, error pages.
pub mod admin;
pub mod catalog_edit;
pub mod fleet_admin;
pub mod quality;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use canopy_server::App;
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::error::WebError;
use crate::session::Session;

/// Rows per page of the lists.
pub const PAGE_SIZE: u32 = 50;

/// The console's sections (for the navigation's current page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Deployments,
    Edges,
    Packages,
    Applications,
    Registries,
    /// Enrollment tokens (web-admin).
    EnrollmentTokens,
    /// Administration: organizations, projects, users, API tokens, the audit log (web-admin).
    Admin,
}

/// What the signed-in user's roles let them use in the frame's project: the navigation shows
/// only these sections (the app layer refuses the rest anyway).
#[derive(Debug, Clone, Copy, Default)]
pub struct Allowed {
    /// Deployments and edges (`ao-r`, `ao-rw`).
    pub fleet: bool,
    /// Enrollment tokens (`ao-rw`).
    pub fleet_write: bool,
    /// Packages, applications, registries (`cat-r`, `cat-rw`).
    pub catalog: bool,
    /// Administration (`canopy-admin`).
    pub admin: bool,
}

impl Allowed {
    /// What `session`'s user may use in `project` (nothing project-scoped when the project is
    /// not theirs).
    pub async fn load(app: &App, session: &Session, project: &str) -> Allowed {
        let admin = session.principal.is_admin();
        match session.ctx(app, project).await {
            Ok(ctx) => {
                let may = |a| ctx.principal.may(&ctx.project, a);
                Allowed {
                    fleet: may(canopy_server::app::Access::FleetRead),
                    fleet_write: may(canopy_server::app::Access::FleetWrite),
                    catalog: may(canopy_server::app::Access::CatalogRead),
                    admin,
                }
            }
            Err(_) => Allowed {
                admin,
                ..Allowed::default()
            },
        }
    }
}

/// What the header of a signed-in page shows.
pub struct Frame {
    user: String,
    csrf: String,
    project: String,
    projects: Vec<String>,
    section: Section,
    allowed: Allowed,
}

impl Frame {
    /// The frame of `section` of `project` for this session.
    pub async fn load(
        app: &App,
        session: &Session,
        project: &str,
        section: Section,
    ) -> Result<Frame, WebError> {
        let projects = app
            .list_projects(&session.principal)
            .await?
            .into_iter()
            .map(|p| p.name)
            .collect();
        let allowed = Allowed::load(app, session, project).await;
        Ok(Frame {
            user: session.user().to_string(),
            csrf: session.csrf.clone(),
            project: project.to_string(),
            projects,
            section,
            allowed,
        })
    }

    /// A full page with this frame.
    pub fn page(&self, title: &str, body: Markup) -> Markup {
        let p = &self.project;
        let current = |s: Section| (s == self.section).then_some("page");
        document(
            title,
            html! {
                header.top {
                    a.brand href="/" { "Canopy" }
                    nav aria-label="sections" {
                        @if self.allowed.fleet {
                        a href=(project_path(p, "deployments")) aria-current=[current(Section::Deployments)] { "Deployments" }
                        a href=(project_path(p, "edges")) aria-current=[current(Section::Edges)] { "Edges" }
                        }
                        @if self.allowed.fleet_write {
                            a href=(project_path(p, "enrollment-tokens")) aria-current=[current(Section::EnrollmentTokens)] { "Enrollment tokens" }
                        }
                        @if self.allowed.catalog {
                        a href=(project_path(p, "packages")) aria-current=[current(Section::Packages)] { "Packages" }
                        a href=(project_path(p, "applications")) aria-current=[current(Section::Applications)] { "Applications" }
                        a href=(project_path(p, "registries")) aria-current=[current(Section::Registries)] { "Registries" }
                        }
                        @if self.allowed.admin {
                            a #admin-link href=(admin::ADMIN_PATH) aria-current=[current(Section::Admin)] { "Administration" }
                        }
                    }
                    span.spacer {}
                    @if self.projects.len() > 1 {
                        form method="get" action="/ui/switch" {
                            select #project-switch name="project" aria-label="project" {
                                @for name in &self.projects {
                                    option value=(name) selected[name == p] { (name) }
                                }
                            }
                            button.secondary type="submit" { "Switch" }
                        }
                    } @else {
                        span { "Project " strong { (p) } }
                    }
                    a #user href=(admin::MY_TOKENS_PATH) title="your API tokens" { (self.user) }
                    form method="post" action="/ui/logout" {
                        input type="hidden" name=(crate::CSRF_FIELD) value=(self.csrf);
                        button.secondary type="submit" { "Sign out" }
                    }
                }
                main { (body) }
            },
        )
    }
}

/// An HTML document around `body`.
pub fn document(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Canopy" }
                link rel="stylesheet" href=(crate::stylesheet_path());
            }
            body { (body) }
        }
    }
}

/// A page that says what went wrong, with the server's message.
pub fn error_page(status: StatusCode, message: &str) -> Markup {
    document(
        status.canonical_reason().unwrap_or("Error"),
        html! {
            main {
                h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("Error")) }
                p.error role="alert" { (message) }
                p { a href="/" { "Back to the console" } }
            }
        },
    )
}

/// `/ui/projects/{project}/{rest}` with the project name encoded as a path segment.
pub fn project_path(project: &str, rest: &str) -> String {
    format!("/ui/projects/{}/{rest}", segment(project))
}

/// A value as one URL path segment.
pub fn segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// A query string (`?a=1&b=2`) of the non-empty pairs.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        s.append_pair(k, v);
    }
    let s = s.finish();
    if s.is_empty() { s } else { format!("?{s}") }
}

/// A state as a colored word.
pub fn state(s: &str) -> Markup {
    html! { span class={ "state state-" (s) } { (s) } }
}

/// How long ago `t` was, in words (`12 s ago`), or `never`.
pub fn age(t: Option<OffsetDateTime>, now: OffsetDateTime) -> String {
    let Some(t) = t else {
        return "never".into();
    };
    let s = (now - t).whole_seconds().max(0);
    match s {
        0..60 => format!("{s} s ago"),
        60..3600 => format!("{} min ago", s / 60),
        3600..86_400 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// A time in UTC to the second (`2026-12-07 12:22:20 UTC`), for `title` attributes and facts.
pub fn when(t: Option<OffsetDateTime>) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    t.and_then(|t| t.to_offset(time::UtcOffset::UTC).format(&format).ok())
        .unwrap_or_default()
}

/// Previous/next links of a paged list; `more` says whether a next page exists.
pub fn pager(base: &str, name: &str, page: u64, more: bool) -> Markup {
    let link = |p: u64| {
        let p = p.to_string();
        format!("{base}{}", query(&[("name", name), ("page", &p)]))
    };
    html! {
        nav.pager aria-label="pages" {
            @if page > 0 { a href=(link(page - 1)) rel="prev" { "← Previous" } }
            span.muted { "Page " (page + 1) }
            @if more { a href=(link(page + 1)) rel="next" { "Next →" } }
        }
    }
}

/// List pages' query: a name filter and a page number (from 0).
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub page: u64,
    /// What was just done (shown once, as a notice).
    #[serde(default)]
    pub deleted: String,
}

impl ListParams {
    /// Whether a page showing `rows` of `matched` items has a next one.
    pub fn more(&self, rows: usize, matched: u64) -> bool {
        self.offset() + (rows as u64) < matched
    }

    /// How many items come before this page.
    fn offset(&self) -> u64 {
        self.page.saturating_mul(u64::from(PAGE_SIZE))
    }

    /// The reference list query of this page: `pageSize`, `offset`, and `filter` over `fields`.
    pub fn list_query(&self, fields: &[&str]) -> String {
        let offset = self.offset().to_string();
        let size = PAGE_SIZE.to_string();
        let name = self.name.trim().replace('"', "");
        let filter = if name.is_empty() {
            String::new()
        } else {
            fields
                .iter()
                .map(|f| format!("{f}=\"{name}\""))
                .collect::<Vec<_>>()
                .join(" OR ")
        };
        query(&[
            ("pageSize", &size),
            ("offset", &offset),
            ("filter", &filter),
        ])
        .trim_start_matches('?')
        .to_string()
    }
}

/// `GET /`: the first project's deployments for a signed-in user, else the sign-in page.
pub async fn home(State(app): State<App>, session: Result<Session, Response>) -> Response {
    let session = match session {
        Ok(s) => s,
        Err(redirect) => return redirect,
    };
    let projects = match app.list_projects(&session.principal).await {
        Ok(p) => p,
        Err(e) => return WebError::from(e).into_response(),
    };
    let first = projects
        .iter()
        .find(|p| p.name == canopy_server::app::DEFAULT_PROJECT)
        .or(projects.first());
    match first {
        Some(p) => {
            // web-admin: a catalog-only user starts at the packages (deployments are not theirs).
            let allowed = Allowed::load(&app, &session, &p.name).await;
            let start = if allowed.fleet || !allowed.catalog {
                "deployments"
            } else {
                "packages"
            };
            Redirect::to(&project_path(&p.name, start)).into_response()
        }
        None => (
            StatusCode::FORBIDDEN,
            error_page(
                StatusCode::FORBIDDEN,
                &format!(
                    "{} holds no role on any project: ask an administrator for one",
                    session.user()
                ),
            ),
        )
            .into_response(),
    }
}

/// `GET /ui/switch?project=P`: the project switcher's form goes to that project's deployments.
#[derive(Debug, Deserialize)]
pub struct SwitchParams {
    project: String,
}

/// See [`SwitchParams`]; the project page itself checks that the user may see it.
pub async fn switch_project(_session: Session, Query(q): Query<SwitchParams>) -> Redirect {
    Redirect::to(&project_path(&q.project, "deployments"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        let page = state("<script>alert(1)</script>").into_string();
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;"), "{page}");
    }

    #[test]
    fn times_read_well() {
        let t = time::macros::datetime!(2026-12-07 12:22:20.644134089 UTC);
        assert_eq!(when(Some(t)), "2026-12-07 12:22:20 UTC");
        assert_eq!(when(None), "");
    }

    #[test]
    fn ages_read_well() {
        let now = OffsetDateTime::now_utc();
        assert_eq!(age(None, now), "never");
        assert_eq!(age(Some(now - time::Duration::seconds(5)), now), "5 s ago");
        assert_eq!(
            age(Some(now - time::Duration::minutes(3)), now),
            "3 min ago"
        );
        assert_eq!(age(Some(now - time::Duration::hours(2)), now), "2 h ago");
    }

    #[test]
    fn list_queries_page_and_filter() {
        let p = ListParams {
            name: "web \"x\"".into(),
            page: 2,
            deleted: String::new(),
        };
        let q = p.list_query(&["name", "displayName"]);
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(pairs[0], ("pageSize".into(), "50".into()));
        assert_eq!(pairs[1], ("offset".into(), "100".into()));
        assert_eq!(
            pairs[2],
            (
                "filter".into(),
                "name=\"web x\" OR displayName=\"web x\"".into()
            )
        );
    }
}
