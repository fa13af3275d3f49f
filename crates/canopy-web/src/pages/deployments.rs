//! Deployments: the list (with the project's summary counts, a name filter and paging), one
//! deployment with each edge's apps, their states and messages and the age of the edge's last
//! report, and deletion behind a confirmation page.
//!
//! Write controls are shown only to users with deployment write access on the project
//! (`Principal::may(.., Access::FleetWrite)`), and the delete itself is the app layer's
//! `App::delete_deployment`, which checks that access again: a forged POST is refused (403).

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Redirect, Response};
use canopy_deploy::model::{DeleteType, Deployment};
use canopy_server::App;
use canopy_server::app::{Access, DEPLOYING_GRACE, DeploymentEdgeQuery};
use maud::{Markup, html};
use serde::Deserialize;
use time::OffsetDateTime;

use super::{Frame, ListParams, Section, age, pager, project_path, query, segment, state, when};
use crate::CSRF_FIELD;
use crate::error::WebError;
use crate::security::same_origin;
use crate::session::Session;

/// Edges shown on one deployment page.
pub const EDGES_PER_PAGE: u32 = 100;

fn deployment_path(project: &str, id: &str) -> String {
    project_path(project, &format!("deployments/{}", segment(id)))
}

fn title_of(d: &Deployment) -> &str {
    if d.display_name.is_empty() {
        &d.name
    } else {
        &d.display_name
    }
}

/// `GET /ui/projects/{project}/deployments`.
pub async fn list(
    State(app): State<App>,
    session: Session,
    Path(project): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Markup, WebError> {
    let ctx = session.ctx(&app, &project).await?;
    let raw = params.list_query(&["name", "displayName"]);
    let overview = app.deployments_overview(&ctx, Some(&raw))?;
    let (summary, items, total) = (overview.summary, overview.page, overview.total);
    let frame = Frame::load(&app, &session, &project, Section::Deployments).await?;
    let base = project_path(&project, "deployments");
    let more = params.more(items.len(), overview.matched);
    let counts = [
        ("Running", summary.running),
        ("Down", summary.down),
        ("Deploying", summary.deploying),
        ("Updating", summary.updating),
        ("Unknown", summary.unknown),
        ("Error", summary.error),
    ];
    Ok(frame.page(
        "Deployments",
        html! {
            (live_marker(&project))
            h1 { "Deployments" }
            @if !params.deleted.is_empty() {
                p.notice role="status" { "Deleted deployment " strong { (params.deleted) } "." }
            }
            ul.counts #summary data-live aria-label="edges of the deployments by state" {
                li { span.n { (summary.total) } "Total" }
                @for (label, n) in counts {
                    li data-state=(label) { span.n { (n) } (label) }
                }
            }
            form.filter method="get" action=(base) role="search" {
                input type="search" name="name" value=(params.name)
                    placeholder="Filter by name" aria-label="filter by name";
                button type="submit" { "Filter" }
            }
            div #deployments-live data-live {
            p.muted {
                (total) " deployments in project " (project)
                @if !params.name.is_empty() { ", " (overview.matched) " match" }
                "."
            }
            @if items.is_empty() {
                p #empty { "No deployments" @if !params.name.is_empty() { " match this filter" } "." }
            } @else {
                table #deployments {
                    thead { tr { th { "Name" } th { "State" } th { "Edges running" } th { "Package" } th { "Created" } } }
                    tbody {
                        @for d in &items {
                            @let st = d.status.as_ref();
                            tr {
                                td {
                                    a href=(deployment_path(&project, &d.deploy_id)) { (title_of(d)) }
                                    br; span.muted { (d.name) }
                                }
                                td { (state(st.map_or("UNKNOWN", |s| s.state.as_str()))) }
                                td {
                                    @if let Some(sum) = st.and_then(|s| s.summary.as_ref()) {
                                        (sum.running) " / " (sum.total)
                                    }
                                }
                                td { a href=(super::catalog::package_path(&project, &d.app_name, &d.app_version)) { (d.app_name) " " (d.app_version) } }
                                td title=(when(d.create_time)) { (age(d.create_time, OffsetDateTime::now_utc())) }
                            }
                        }
                    }
                }
            }
            (pager(&base, &params.name, params.page, more))
            }
        },
    ))
}

/// What makes a page live (web-live): the stream's address and the server's clock for
/// `assets/live.js`, the script itself, and a status line it fills in.
pub fn live_marker(project: &str) -> Markup {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    html! {
        div #live hidden data-live-src=(project_path(project, "live")) data-now=(now) {}
        p.muted #live-status role="status" hidden {}
        script src=(crate::live_script_path()) defer {}
    }
}

/// The deployment page's query: a page of its edges, a name search and "show only problems".
#[derive(Debug, Default, Deserialize)]
pub struct EdgePage {
    #[serde(default)]
    page: u64,
    /// Substring of the edge name.
    #[serde(default)]
    edge: String,
    /// `1`: only the edges with a problem (`canopy_server::app::is_problem`).
    #[serde(default)]
    problems: String,
    /// What was just done (shown once, as a notice).
    #[serde(default)]
    done: String,
}

impl EdgePage {
    fn problems_only(&self) -> bool {
        matches!(self.problems.as_str(), "1" | "on" | "true")
    }
}

/// `GET /ui/projects/{project}/deployments/{id}`.
pub async fn show(
    State(app): State<App>,
    session: Session,
    Path((project, id)): Path<(String, String)>,
    Query(q): Query<EdgePage>,
) -> Result<Markup, WebError> {
    let ctx = session.ctx(&app, &project).await?;
    let offset = q.page.saturating_mul(u64::from(EDGES_PER_PAGE));
    let view = app.deployment_edges(
        &ctx,
        &id,
        &DeploymentEdgeQuery {
            name: q.edge.clone(),
            problems_only: q.problems_only(),
            offset,
            limit: u64::from(EDGES_PER_PAGE),
        },
    )?;
    let d = &view.deployment;
    let now = OffsetDateTime::now_utc();
    let may_write = ctx.principal.may(&ctx.project, Access::FleetWrite);
    let frame = Frame::load(&app, &session, &project, Section::Deployments).await?;
    let st = d.status.clone().unwrap_or_default();
    let more = offset + (view.edges.len() as u64) < view.matched;
    let problems = if q.problems_only() { "1" } else { "" };
    let page_link = |p: u64| {
        let p = p.to_string();
        format!(
            "{}{}",
            deployment_path(&project, &id),
            query(&[("edge", &q.edge), ("problems", problems), ("page", &p)])
        )
    };
    let filtered = q.problems_only() || !q.edge.trim().is_empty();
    Ok(frame.page(
        title_of(d),
        html! {
            (live_marker(&project))
            p { a href=(project_path(&project, "deployments")) { "← Deployments" } }
            h1 #deployment-title { (title_of(d)) }
            @if !q.done.is_empty() {
                p.notice role="status" { (q.done) }
            }
            dl.facts.card #deployment-facts data-live {
                dt { "State" } dd #deployment-state { (state(st.state.as_str())) }
                @if !st.message.is_empty() { dt { "Message" } dd { (st.message) } }
                dt { "Name" } dd { (d.name) }
                dt { "Id" } dd { (d.deploy_id) }
                dt { "Package" } dd { a #deployment-package href=(super::catalog::package_path(&project, &d.app_name, &d.app_version)) { (d.app_name) " " (d.app_version) } }
                dt { "Profile" } dd #deployment-profile { (if d.profile_name.is_empty() { &d.default_profile_name } else { &d.profile_name }) }
                @if let Some(sum) = &st.summary {
                    dt { "Edges" } dd #deployment-summary { (sum.running) " running, " (sum.down) " down, " (sum.unknown) " unknown, of " (sum.total) }
                }
                dt { "Problems" } dd #deployment-problems { (view.problems) }
                dt { "Created" } dd { (when(d.create_time)) }
            }
            @if may_write {
                div.actions {
                    a.button #upgrade href=(format!("{}/upgrade", deployment_path(&project, &id))) { "Upgrade…" }
                    a.button.secondary #update-values href=(format!("{}/values", deployment_path(&project, &id))) { "Update values…" }
                    a.button.danger #delete href=(format!("{}/delete", deployment_path(&project, &id))) { "Delete…" }
                }
            }
            p { a #deployment-workloads href=(super::workloads::deployment_workloads_path(&project, &id)) { "Workloads on all its edges →" } }
            h2 { "Edges (" span #edges-total data-live { (view.total) } ")" }
            form.filter #edge-filter method="get" action=(deployment_path(&project, &id)) role="search" {
                input type="search" name="edge" value=(q.edge)
                    placeholder="Search edges by name" aria-label="search edges by name";
                label {
                    input #problems-only type="checkbox" name="problems" value="1" checked[q.problems_only()];
                    " Show only problems"
                }
                button type="submit" { "Show" }
            }
            p.muted {
                "Problems: edges not RUNNING (down, error, unknown, terminating), or still deploying "
                (DEPLOYING_GRACE.as_secs() / 60) " minutes after the deployment's last change."
            }
            div #edges-live data-live {
                @if filtered {
                    p.muted #edges-matched { (view.matched) " of " (view.total) " edges match." }
                }
                @if view.edges.is_empty() {
                    p.muted #no-edges {
                        @if filtered { "No edge matches." } @else { "No edge runs this deployment." }
                    }
                } @else {
                    table #edges {
                        thead { tr { th { "Edge" } th { "State" } th { "Last report" } th { "Apps" } } }
                        tbody {
                            @for e in &view.edges {
                                @let c = &e.cluster;
                                tr data-edge=(c.name) {
                                    td {
                                        a href=(project_path(&project, &format!("edges/{}", segment(&c.id)))) { (c.name) }
                                        br; a.workloads-link href=(super::workloads::edge_workloads_path(&project, &c.id, &id)) { "Workloads" }
                                    }
                                    td {
                                        (state(c.status.state.as_str()))
                                        @if !c.status.message.is_empty() { br; span.muted { (c.status.message) } }
                                    }
                                    td title=(when(e.last_seen)) data-seen=[e.last_seen.map(OffsetDateTime::unix_timestamp)] { (age(e.last_seen, now)) }
                                    td {
                                        @for a in &c.apps {
                                            @let ast = a.status.clone().unwrap_or_default();
                                            div {
                                                strong { (a.name) } " " (state(ast.state.as_str()))
                                                @if !ast.message.is_empty() { " " span.muted { (ast.message) } }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                nav.pager aria-label="pages" {
                    @if q.page > 0 { a href=(page_link(q.page - 1)) rel="prev" { "← Previous" } }
                    span.muted { "Page " (q.page + 1) }
                    @if more { a href=(page_link(q.page + 1)) rel="next" { "Next →" } }
                }
            }
        },
    ))
}

/// `GET /ui/projects/{project}/deployments/{id}/delete`: what will be deleted, and the form.
pub async fn confirm_delete(
    State(app): State<App>,
    session: Session,
    Path((project, id)): Path<(String, String)>,
) -> Result<Markup, WebError> {
    let ctx = session.ctx(&app, &project).await?;
    let d = app.get_deployment(&ctx, &id)?;
    // Say so now rather than after the form is sent (the delete checks again).
    ctx.require(Access::FleetWrite)?;
    let frame = Frame::load(&app, &session, &project, Section::Deployments).await?;
    let edges = d
        .status
        .as_ref()
        .and_then(|s| s.summary.as_ref())
        .map_or(0, |s| s.total);
    let children = app.deployment_children(&ctx, &id)?;
    Ok(frame.page(
        "Delete deployment",
        html! {
            h1 { "Delete deployment " (title_of(&d)) "?" }
            div.card {
                p {
                    "Deployment " strong { (title_of(&d)) } " (" (d.name) ", package "
                    (d.app_name) " " (d.app_version) ") runs on " (edges) " edge(s). "
                    "Its edges are told at once and their agents remove its workloads."
                }
                form method="post" action=(format!("{}/delete", deployment_path(&project, &id))) {
                    input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
                    fieldset #delete-type {
                        legend { "What to delete (deleteType)" }
                        label {
                            input type="radio" name="delete_type" value="PARENT_ONLY" checked;
                            " " strong { "This deployment only" } " (PARENT_ONLY): deployments it required stay."
                        }
                        br;
                        label {
                            input type="radio" name="delete_type" value="ALL";
                            " " strong { "With what it required" } " (ALL): the deployments created for its "
                            "deployment requirements go too, unless another deployment still requires them."
                        }
                        @if !children.is_empty() {
                            p.muted { "It required: " (children.join(", ")) "." }
                        }
                    }
                    div.actions {
                        button.danger #confirm-delete type="submit" { "Delete deployment" }
                        a.button.secondary href=(deployment_path(&project, &id)) { "Cancel" }
                    }
                }
            }
        },
    ))
}

/// The delete confirmation form.
#[derive(Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    csrf: String,
    /// `PARENT_ONLY` (the default, as the API's) or `ALL`.
    #[serde(default)]
    delete_type: DeleteType,
}

/// `POST /ui/projects/{project}/deployments/{id}/delete`.
pub async fn delete(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Path((project, id)): Path<(String, String)>,
    Form(form): Form<DeleteForm>,
) -> Result<Response, WebError> {
    same_origin(&Method::POST, &headers, app.public_url())?;
    session.check_csrf(&form.csrf)?;
    let ctx = session.ctx(&app, &project).await?;
    let d = app.get_deployment(&ctx, &id)?;
    app.delete_deployment(&ctx, &id, form.delete_type).await?;
    let shown = title_of(&d).to_string();
    Ok(Redirect::to(&format!(
        "{}{}",
        project_path(&project, "deployments"),
        query(&[("deleted", &shown)])
    ))
    .into_response())
}
