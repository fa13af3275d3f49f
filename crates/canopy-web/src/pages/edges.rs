//! Edges: the list (connection state, labels, agent version, last seen; a name filter and
//! paging) and one edge with the workloads its agent last reported.

use axum::extract::{Path, Query, State};
use canopy_core::list::{Entity, parse_query};
use canopy_server::App;
use canopy_server::app::AppError;
use maud::{Markup, html};
use time::OffsetDateTime;

use super::{Frame, ListParams, Section, age, pager, project_path, segment, state, when};
use crate::error::WebError;
use crate::session::Session;

/// `GET /ui/projects/{project}/edges`.
pub async fn list(
    State(app): State<App>,
    session: Session,
    Path(project): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Markup, WebError> {
    let ctx = session.ctx(&app, &project).await?;
    let q = parse_query(Entity::Edge, &params.list_query(&["name"])).map_err(AppError::from)?;
    let (edges, matched) = app.list_edges(&ctx, &q)?;
    let frame = Frame::load(&app, &session, &project, Section::Edges).await?;
    let now = OffsetDateTime::now_utc();
    let base = project_path(&project, "edges");
    let more = params.more(edges.len(), matched);
    Ok(frame.page(
        "Edges",
        html! {
            h1 { "Edges" }
            form.filter method="get" action=(base) role="search" {
                input type="search" name="name" value=(params.name)
                    placeholder="Filter by name" aria-label="filter by name";
                button type="submit" { "Filter" }
            }
            p.muted { (matched) " edges" @if !params.name.is_empty() { " match" } "." }
            @if edges.is_empty() {
                p #empty { "No edges." }
            } @else {
                table #edges {
                    thead { tr { th { "Name" } th { "Connection" } th { "Labels" } th { "Agent" } th { "Last seen" } th { "Deployments" } } }
                    tbody {
                        @for e in &edges {
                            tr {
                                td { a href=(project_path(&project, &format!("edges/{}", segment(&e.id)))) { (e.name) } }
                                td { (state(&e.connection)) }
                                td { @for (k, v) in &e.labels { span.label { (k) "=" (v) } } }
                                td { (e.agent_version) }
                                td title=(when(e.last_seen)) { (age(e.last_seen, now)) }
                                td { (e.deployments) }
                            }
                        }
                    }
                }
            }
            (pager(&base, &params.name, params.page, more))
        },
    ))
}

/// `GET /ui/projects/{project}/edges/{id}`.
pub async fn show(
    State(app): State<App>,
    session: Session,
    Path((project, id)): Path<(String, String)>,
) -> Result<Markup, WebError> {
    let ctx = session.ctx(&app, &project).await?;
    let e = app.get_edge(&ctx, &id)?;
    let apps = app.edge_workloads(&ctx, &e.id)?;
    // Deployment names by id (this edge's view of each: no fold over other edges).
    let (on_edge, _) = app.deployments_on_cluster(&ctx, &e.id, Some("pageSize=500"))?;
    let names: std::collections::HashMap<&str, &str> = on_edge
        .iter()
        .map(|d| {
            let shown = if d.deployment_display_name.is_empty() {
                &d.deployment_name
            } else {
                &d.deployment_display_name
            };
            (d.deployment_uid.as_str(), shown.as_str())
        })
        .collect();
    let frame = Frame::load(&app, &session, &project, Section::Edges).await?;
    let now = OffsetDateTime::now_utc();
    Ok(frame.page(
        &e.name,
        html! {
            p { a href=(project_path(&project, "edges")) { "← Edges" } }
            h1 #edge-title { (e.name) }
            dl.facts.card {
                dt { "Connection" } dd { (state(&e.connection)) }
                dt { "State" } dd { (state(&e.state)) }
                dt { "Last seen" } dd title=(when(e.last_seen)) { (age(e.last_seen, now)) }
                dt { "Id" } dd { (e.id) }
                dt { "Labels" } dd { @for (k, v) in &e.labels { span.label { (k) "=" (v) } } }
                dt { "Agent" } dd { (e.agent_version) @if !e.engine.is_empty() { " · " (e.engine) } }
                dt { "Capabilities" } dd { (e.capabilities.join(", ")) }
                dt { "Generation" } dd { (e.applied_generation) " applied of " (e.generation) }
                dt { "Enrolled" } dd { (when(Some(e.create_time))) }
            }
            // web-admin: label editing for deployment writers.
            @if ctx.principal.may(&ctx.project, canopy_server::app::Access::FleetWrite) {
                div.actions {
                    a.button #edit-labels href=(project_path(&project, &format!("edges/{}/labels", segment(&e.id)))) { "Edit labels…" }
                }
            }
            h2 { "Workloads" }
            p { a #edge-workloads href=(super::workloads::edge_workloads_path(&project, &e.id, "")) { "Workloads with their actions, consoles and logs →" } }
            @if apps.is_empty() {
                p.muted { "The agent has reported no applications." }
            } @else {
                table #workloads {
                    thead { tr { th { "Deployment" } th { "App" } th { "State" } th { "Workloads" } } }
                    tbody {
                        @for a in &apps {
                            tr {
                                td {
                                    a href=(project_path(&project, &format!("deployments/{}", segment(&a.deployment_id)))) { (names.get(a.deployment_id.as_str()).copied().unwrap_or(&a.deployment_id)) }
                                }
                                td { (a.app) }
                                td {
                                    (state(app_state(a.state)))
                                    @if !a.message.is_empty() { br; span.muted { (a.message) } }
                                }
                                td {
                                    @for w in &a.workloads {
                                        div {
                                            (w.kind) " " strong { (w.name) } " " (state(&w.state))
                                            @if !w.message.is_empty() { " " span.muted { (w.message) } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    ))
}

fn app_state(s: canopy_proto::AppState) -> &'static str {
    match s {
        canopy_proto::AppState::Deploying => "DEPLOYING",
        canopy_proto::AppState::Running => "RUNNING",
        canopy_proto::AppState::Down => "DOWN",
        canopy_proto::AppState::Waiting => "WAITING",
    }
}
