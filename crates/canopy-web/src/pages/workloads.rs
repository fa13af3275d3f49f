//! Workloads: the containers (pods) and VMs of a deployment across its edges, and of an edge
//! across its deployments, with their state, readiness, restarts and age as the resource
//! manager's view gives them (`App::list_deployment_workloads`, `App::list_app_workloads`);
//! VM start / stop / restart and pod delete; a VM's VNC console, its serial console, and
//! container and VM logs.
//!
//! Everything goes through the same app-layer calls as the REST API with the signed-in user's
//! identity: the actions are `App::vm_action` and `App::delete_pod`, the consoles and logs are
//! tunnels opened by `App::open_vm_tunnel` / `App::open_container_logs`, and the bytes are
//! bridged by the API's own code (`canopy_server::http::serve_console`, `stream_logs`), so
//! authorization, audit records, tunnel limits and idle timeouts are exactly the API's.
//! Write controls (actions, consoles) are shown only to users with deployment write access;
//! a forged POST or WebSocket is refused by the app layer anyway.
//!
//! **WebSockets and the cookie.** The console's WebSockets (`.../vnc`, `.../serial/ws`) are
//! console paths, so the server accepts the session cookie on them. A browser sends that cookie
//! on a WebSocket opened by any page, and the same-origin policy does not apply to WebSockets,
//! so every upgrade must carry an `Origin` that is this server's (the request's `Host` or the
//! public URL), checked before anything else ([`websocket_origin`]): a page on another site
//! cannot open a VM's console with the user's cookie.
//!
//! **Logs.** A logs page shows the log's last lines and, with script, follows it: `logs.js`
//! reads the streamed `text/plain` answer of `.../logs/stream?follow=true` and appends it. The
//! stream ends when the page goes away (the fetch is aborted; the server drops the tunnel with
//! the body); how many a user may hold open is the tunnel broker's limit, as for the API.

use axum::Form;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Redirect, Response};
use canopy_server::App;
use canopy_server::app::{Access, AppError, AppWorkload, Ctx, TunnelKind, VmAction};
use maud::{Markup, html};
use serde::Deserialize;
use time::OffsetDateTime;

use super::{Frame, Section, age, project_path, query, segment, state, when};
use crate::CSRF_FIELD;
use crate::error::WebError;
use crate::security::same_origin;
use crate::session::Session;

/// Workloads shown on one page of a deployment's workloads.
pub const WORKLOADS_PER_PAGE: usize = 100;

/// One workload with where it runs.
struct Row {
    edge_id: String,
    edge_name: String,
    deployment_id: String,
    deployment_name: String,
    app_name: String,
    app_id: String,
    workload: AppWorkload,
}

/// `/ui/projects/{p}/workloads/{app_id}/{edge}/` (the root of one app's workload paths).
fn app_root(project: &str, app_id: &str, edge: &str) -> String {
    project_path(
        project,
        &format!("workloads/{}/{}", segment(app_id), segment(edge)),
    )
}

/// `.../vms/{vm}/{rest}` of a VM.
pub fn vm_path(project: &str, app_id: &str, edge: &str, vm: &str, rest: &str) -> String {
    format!(
        "{}/vms/{}/{rest}",
        app_root(project, app_id, edge),
        segment(vm)
    )
}

/// `.../containers/{name}/logs` of a container.
fn container_logs_path(project: &str, app_id: &str, edge: &str, container: &str) -> String {
    format!(
        "{}/containers/{}/logs",
        app_root(project, app_id, edge),
        segment(container)
    )
}

/// The pod delete confirmation of a pod on an edge.
fn pod_delete_path(project: &str, edge: &str, namespace: &str, pod: &str) -> String {
    project_path(
        project,
        &format!(
            "edges/{}/pods/{}/{}/delete",
            segment(edge),
            segment(namespace),
            segment(pod)
        ),
    )
}

/// The workloads page of a deployment.
pub fn deployment_workloads_path(project: &str, id: &str) -> String {
    project_path(project, &format!("deployments/{}/workloads", segment(id)))
}

/// The workloads page of an edge (optionally of one deployment on it).
pub fn edge_workloads_path(project: &str, edge: &str, deployment: &str) -> String {
    format!(
        "{}{}",
        project_path(project, &format!("edges/{}/workloads", segment(edge))),
        query(&[("deployment", deployment)])
    )
}

/// `STATE_RUNNING` as `RUNNING` (the stylesheet's state classes).
fn short(s: &str) -> &str {
    s.strip_prefix("STATE_").unwrap_or(s)
}

/// A workload's `createTime` (RFC 3339) as a time.
fn created(w: &AppWorkload) -> Option<OffsetDateTime> {
    w.create_time
        .as_deref()
        .and_then(|t| OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
}

/// Where a form may send the browser back to: a console page of this server, else `fallback`.
fn back_or(back: &str, fallback: String) -> String {
    let ok = back.starts_with("/ui/projects/")
        && !back.contains("//")
        && !back.contains('\\')
        && !back.chars().any(char::is_control);
    if ok { back.to_string() } else { fallback }
}

/// The table of workloads (shared by the deployment's and the edge's pages).
fn table(
    project: &str,
    rows: &[Row],
    (may_write, csrf): (bool, &str),
    back: &str,
    by_edge: bool,
) -> Markup {
    let now = OffsetDateTime::now_utc();
    html! {
        table #workloads {
            thead { tr {
                @if by_edge { th { "Deployment" } } @else { th { "Edge" } }
                th { "App" } th { "Workload" } th { "State" } th { "Restarts" } th { "Age" } th { "Actions" }
            } }
            tbody {
                @for r in rows {
                    @let w = &r.workload;
                    tr data-workload=(w.id) {
                        @if by_edge {
                            td { a href=(deployment_workloads_path(project, &r.deployment_id)) { (r.deployment_name) } }
                        } @else {
                            td { a href=(edge_workloads_path(project, &r.edge_id, &r.deployment_id)) { (r.edge_name) } }
                        }
                        td { (r.app_name) }
                        td {
                            @if w.virtual_machine.is_some() { "VM " } @else { "Pod " }
                            strong.workload-name { (w.name) }
                            br; span.muted { (w.namespace) }
                        }
                        @if let Some(vm) = &w.virtual_machine {
                            td.vm-state {
                                (state(short(&vm.status.state)))
                                " " span.muted title="what it was asked to be" { "(" (short(&vm.admin_status.state)) ")" }
                                (ready(w.workload_ready))
                                @if !vm.status.message.is_empty() { br; span.muted { (vm.status.message) } }
                            }
                            td { (vm.restart_count) }
                            td title=(when(created(w))) { @if created(w).is_some() { (age(created(w), now)) } }
                            td.row-actions {
                                @if may_write {
                                    form.inline method="post" action=(vm_path(project, &r.app_id, &r.edge_id, &w.id, "start")) {
                                        input type="hidden" name=(CSRF_FIELD) value=(csrf);
                                        input type="hidden" name="back" value=(back);
                                        button.secondary.vm-start type="submit" { "Start" }
                                    }
                                    a.button.secondary.vm-stop href=(format!("{}{}", vm_path(project, &r.app_id, &r.edge_id, &w.id, "stop"), query(&[("back", back)]))) { "Stop…" }
                                    a.button.secondary.vm-restart href=(format!("{}{}", vm_path(project, &r.app_id, &r.edge_id, &w.id, "restart"), query(&[("back", back)]))) { "Restart…" }
                                    @if vm.vnc {
                                        a.button.vm-console href=(vm_path(project, &r.app_id, &r.edge_id, &w.id, "console")) { "Console" }
                                    }
                                    a.button.secondary.vm-serial href=(vm_path(project, &r.app_id, &r.edge_id, &w.id, "serial")) { "Serial" }
                                }
                                a.button.secondary.vm-logs href=(vm_path(project, &r.app_id, &r.edge_id, &w.id, "logs")) { "Logs" }
                            }
                        } @else if let Some(pod) = &w.pod {
                            td.pod-state {
                                (state(short(&pod.status.state)))
                                (ready(w.workload_ready))
                                @for c in &pod.containers {
                                    div.container {
                                        span.muted { (c.name) ": " }
                                        @if c.status.container_state_running.is_some() {
                                            (state("RUNNING"))
                                        } @else if let Some(t) = &c.status.container_state_terminated {
                                            (state("TERMINATED")) " " span.muted { (t.reason) " (exit " (t.exit_code) ")" @if !t.message.is_empty() { " " (t.message) } }
                                        } @else if let Some(wt) = &c.status.container_state_waiting {
                                            (state("WAITING")) " " span.muted { (wt.reason) @if !wt.message.is_empty() { " " (wt.message) } }
                                        }
                                        " " span.muted title="image" { (c.image_name) }
                                    }
                                }
                            }
                            td { @for c in &pod.containers { div { (c.restart_count) } } }
                            td title=(when(created(w))) { @if created(w).is_some() { (age(created(w), now)) } }
                            td.row-actions {
                                @if may_write {
                                    a.button.danger.pod-delete href=(format!("{}{}", pod_delete_path(project, &r.edge_id, &w.namespace, &w.name), query(&[("back", back)]))) { "Delete pod…" }
                                }
                                @for c in &pod.containers {
                                    a.button.secondary.container-logs href=(container_logs_path(project, &r.app_id, &r.edge_id, &c.name)) { "Logs " (c.name) }
                                }
                            }
                        } @else {
                            td { (if w.workload_ready { "ready" } else { "not ready" }) } td {} td {} td {}
                        }
                    }
                }
            }
        }
    }
}

/// The resource manager's `workloadReady`, in words.
fn ready(ready: bool) -> Markup {
    html! {
        " " span.muted.ready { (if ready { "ready" } else { "not ready" }) }
    }
}

/// The page number of a workloads list.
#[derive(Debug, Default, Deserialize)]
pub struct PageParams {
    #[serde(default)]
    page: u64,
    /// Only this deployment's workloads (the edge's page).
    #[serde(default)]
    deployment: String,
    /// What was just done (shown once, as a notice).
    #[serde(default)]
    done: String,
}

/// `GET /ui/projects/{project}/deployments/{id}/workloads`.
pub async fn of_deployment(
    State(app): State<App>,
    session: Session,
    Path((project, id)): Path<(String, String)>,
    Query(q): Query<PageParams>,
) -> Result<Markup, WebError> {
    let ctx = session.ctx(&app, &project).await?;
    let d = app.get_deployment(&ctx, &id)?;
    let offset = usize::try_from(q.page)
        .unwrap_or(usize::MAX)
        .saturating_mul(WORKLOADS_PER_PAGE);
    let (list, total) = app.list_deployment_workloads(&ctx, &id, WORKLOADS_PER_PAGE, offset)?;
    let shown = if d.display_name.is_empty() {
        d.name.clone()
    } else {
        d.display_name.clone()
    };
    let rows: Vec<Row> = list
        .into_iter()
        .map(|w| Row {
            edge_id: w.cluster_id,
            edge_name: w.cluster_name,
            deployment_id: id.clone(),
            deployment_name: shown.clone(),
            app_name: w.app_name,
            app_id: w.app_id,
            workload: w.workload,
        })
        .collect();
    let may_write = ctx.principal.may(&ctx.project, Access::FleetWrite);
    let frame = Frame::load(&app, &session, &project, Section::Deployments).await?;
    let base = deployment_workloads_path(&project, &id);
    let more = offset + rows.len() < total;
    let link = |p: u64| format!("{base}{}", query(&[("page", &p.to_string())]));
    let body = html! {
        p { a href=(project_path(&project, &format!("deployments/{}", segment(&id)))) { "← " (shown) } }
        h1 #workloads-title { "Workloads of " (shown) }
        (notice(&q.done))
        p.muted { (total) " workloads on the deployment's edges." }
        @if rows.is_empty() {
            p #empty { "No workloads." }
        } @else {
            (table(&project, &rows, (may_write, &session.csrf), &base, false))
        }
        nav.pager aria-label="pages" {
            @if q.page > 0 { a href=(link(q.page - 1)) rel="prev" { "← Previous" } }
            span.muted { "Page " (q.page + 1) }
            @if more { a href=(link(q.page + 1)) rel="next" { "Next →" } }
        }
    };
    Ok(frame.page(&format!("Workloads of {shown}"), body))
}

/// `GET /ui/projects/{project}/edges/{id}/workloads[?deployment=ID]`.
pub async fn of_edge(
    State(app): State<App>,
    session: Session,
    Path((project, id)): Path<(String, String)>,
    Query(q): Query<PageParams>,
) -> Result<Markup, WebError> {
    let ctx = session.ctx(&app, &project).await?;
    let e = app.get_edge(&ctx, &id)?;
    let apps = app.edge_workloads(&ctx, &e.id)?;
    let (on_edge, _) = app.deployments_on_cluster(&ctx, &e.id, Some("pageSize=500"))?;
    let name_of = |deployment: &str| {
        on_edge
            .iter()
            .find(|d| d.deployment_uid == deployment)
            .map(|d| {
                if d.deployment_display_name.is_empty() {
                    d.deployment_name.clone()
                } else {
                    d.deployment_display_name.clone()
                }
            })
            .unwrap_or_else(|| deployment.to_string())
    };
    let mut rows = Vec::new();
    for a in apps
        .iter()
        .filter(|a| q.deployment.is_empty() || a.deployment_id == q.deployment)
    {
        let app_id = canopy_deploy::status::app_id(&a.deployment_id, &a.app);
        // An app the hub no longer places here (just deleted) has no workloads to show.
        let Ok(list) = app.list_app_workloads(&ctx, &app_id, &e.id) else {
            continue;
        };
        for w in list {
            rows.push(Row {
                edge_id: e.id.clone(),
                edge_name: e.name.clone(),
                deployment_id: a.deployment_id.clone(),
                deployment_name: name_of(&a.deployment_id),
                app_name: a.app.clone(),
                app_id: app_id.clone(),
                workload: w,
            });
        }
    }
    let may_write = ctx.principal.may(&ctx.project, Access::FleetWrite);
    let frame = Frame::load(&app, &session, &project, Section::Edges).await?;
    let back = edge_workloads_path(&project, &e.id, &q.deployment);
    let body = html! {
        p { a href=(project_path(&project, &format!("edges/{}", segment(&e.id)))) { "← " (e.name) } }
        h1 #workloads-title {
            "Workloads on " (e.name)
            @if !q.deployment.is_empty() { " of " (name_of(&q.deployment)) }
        }
        (notice(&q.done))
        @if !q.deployment.is_empty() {
            p { a href=(edge_workloads_path(&project, &e.id, "")) { "All deployments on this edge" } }
        }
        @if rows.is_empty() {
            p #empty { "No workloads." }
        } @else {
            (table(&project, &rows, (may_write, &session.csrf), &back, true))
        }
    };
    Ok(frame.page(&format!("Workloads on {}", e.name), body))
}

fn notice(done: &str) -> Markup {
    html! {
        @if !done.is_empty() {
            p.notice #done role="status" { (done) }
        }
    }
}

// ------------------------------------------------------------------ actions

/// A VM action's path segment.
fn vm_action(word: &str) -> Result<VmAction, WebError> {
    match word {
        "start" => Ok(VmAction::Start),
        "stop" => Ok(VmAction::Stop),
        "restart" => Ok(VmAction::Restart),
        other => Err(AppError::NotFound(format!("no VM action {other:?}")).into()),
    }
}

/// The confirmation query: where to go back to.
#[derive(Debug, Default, Deserialize)]
pub struct BackParams {
    #[serde(default)]
    back: String,
}

/// An action's form.
#[derive(Debug, Default, Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    back: String,
}

/// The VM's name for the pages (its workload list entry), or the id.
fn vm_name(app: &App, ctx: &Ctx, app_id: &str, edge: &str, vm: &str) -> Result<String, WebError> {
    Ok(app.resolve_vm(ctx, app_id, edge, vm)?.name)
}

/// The confirmation of a VM action, with the server's error when it was refused.
#[allow(clippy::too_many_arguments, reason = "one page's facts")]
fn vm_confirm(
    frame: &Frame,
    csrf: &str,
    project: &str,
    (app_id, edge, vm): (&str, &str, &str),
    name: &str,
    word: &str,
    back: &str,
    error: Option<&str>,
) -> Markup {
    let what = match word {
        "stop" => {
            "Stopping it shuts the VM down on its edge (its disk is kept); Start brings it back."
        }
        "restart" => "Restarting it stops and boots the VM again on its edge.",
        _ => "Starting it boots the VM on its edge.",
    };
    frame.page(
        &format!("{word} VM {name}"),
        html! {
            h1 { (capital(word)) " VM " (name) "?" }
            @if let Some(e) = error { p.error #action-error role="alert" { (e) } }
            div.card {
                p { (what) }
                form method="post" action=(vm_path(project, app_id, edge, vm, word)) {
                    input type="hidden" name=(CSRF_FIELD) value=(csrf);
                    input type="hidden" name="back" value=(back);
                    div.actions {
                        button #confirm-action .danger[word != "start"] type="submit" { (capital(word)) " VM" }
                        a.button.secondary href=(back) { "Cancel" }
                    }
                }
            }
        },
    )
}

fn capital(word: &str) -> String {
    let mut c = word.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// `GET .../workloads/{app_id}/{edge}/vms/{vm}/{action}`: the confirmation.
pub async fn confirm_vm_action(
    State(app): State<App>,
    session: Session,
    Path((project, app_id, edge, vm, word)): Path<(String, String, String, String, String)>,
    Query(q): Query<BackParams>,
) -> Result<Markup, WebError> {
    vm_action(&word)?;
    let ctx = session.ctx(&app, &project).await?;
    let name = vm_name(&app, &ctx, &app_id, &edge, &vm)?;
    ctx.require(Access::FleetWrite)?;
    let frame = Frame::load(&app, &session, &project, Section::Deployments).await?;
    let back = back_or(&q.back, edge_workloads_path(&project, &edge, ""));
    Ok(vm_confirm(
        &frame,
        &session.csrf,
        &project,
        (&app_id, &edge, &vm),
        &name,
        &word,
        &back,
        None,
    ))
}

/// `POST .../workloads/{app_id}/{edge}/vms/{vm}/{action}`: the app layer's `vm_action`; the
/// server's error is shown on the confirmation page, with its status.
pub async fn do_vm_action(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Path((project, app_id, edge, vm, word)): Path<(String, String, String, String, String)>,
    Form(form): Form<ActionForm>,
) -> Result<Response, WebError> {
    same_origin(&Method::POST, &headers, app.public_url())?;
    session.check_csrf(&form.csrf)?;
    let action = vm_action(&word)?;
    let ctx = session.ctx(&app, &project).await?;
    let back = back_or(&form.back, edge_workloads_path(&project, &edge, ""));
    match app.vm_action(&ctx, &app_id, &edge, &vm, action).await {
        Ok(()) => {
            let name = vm_name(&app, &ctx, &app_id, &edge, &vm).unwrap_or(vm.clone());
            let done = format!("Asked the edge to {word} VM {name}.");
            Ok(Redirect::to(&with_done(&back, &done)).into_response())
        }
        Err(e) => {
            let (status, message) = WebError::from(e).status_and_message();
            let name = vm_name(&app, &ctx, &app_id, &edge, &vm).unwrap_or(vm.clone());
            let frame = Frame::load(&app, &session, &project, Section::Deployments).await?;
            Ok((
                status,
                vm_confirm(
                    &frame,
                    &session.csrf,
                    &project,
                    (&app_id, &edge, &vm),
                    &name,
                    &word,
                    &back,
                    Some(&message),
                ),
            )
                .into_response())
        }
    }
}

/// `back` with `done=<what>` added to its query.
fn with_done(back: &str, done: &str) -> String {
    let sep = if back.contains('?') { '&' } else { '?' };
    let q = query(&[("done", done)]);
    format!("{back}{sep}{}", q.trim_start_matches('?'))
}

fn pod_confirm(
    frame: &Frame,
    csrf: &str,
    project: &str,
    (edge, namespace, pod): (&str, &str, &str),
    back: &str,
    error: Option<&str>,
) -> Markup {
    frame.page(
        "Delete pod",
        html! {
            h1 { "Delete pod " (pod) "?" }
            @if let Some(e) = error { p.error #action-error role="alert" { (e) } }
            div.card {
                p {
                    "Pod " strong { (pod) } " in namespace " (namespace) " is deleted on its edge and "
                    "created again, as Kubernetes recreates a deleted pod: its containers restart."
                }
                form method="post" action=(pod_delete_path(project, edge, namespace, pod)) {
                    input type="hidden" name=(CSRF_FIELD) value=(csrf);
                    input type="hidden" name="back" value=(back);
                    div.actions {
                        button.danger #confirm-action type="submit" { "Delete pod" }
                        a.button.secondary href=(back) { "Cancel" }
                    }
                }
            }
        },
    )
}

/// `GET .../edges/{edge}/pods/{namespace}/{pod}/delete`: the confirmation.
pub async fn confirm_pod_delete(
    State(app): State<App>,
    session: Session,
    Path((project, edge, namespace, pod)): Path<(String, String, String, String)>,
    Query(q): Query<BackParams>,
) -> Result<Markup, WebError> {
    let ctx = session.ctx(&app, &project).await?;
    let e = app.get_edge(&ctx, &edge)?;
    ctx.require(Access::FleetWrite)?;
    let frame = Frame::load(&app, &session, &project, Section::Edges).await?;
    let back = back_or(&q.back, edge_workloads_path(&project, &e.id, ""));
    Ok(pod_confirm(
        &frame,
        &session.csrf,
        &project,
        (&edge, &namespace, &pod),
        &back,
        None,
    ))
}

/// `POST .../edges/{edge}/pods/{namespace}/{pod}/delete`: the app layer's `delete_pod`.
pub async fn do_pod_delete(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Path((project, edge, namespace, pod)): Path<(String, String, String, String)>,
    Form(form): Form<ActionForm>,
) -> Result<Response, WebError> {
    same_origin(&Method::POST, &headers, app.public_url())?;
    session.check_csrf(&form.csrf)?;
    let ctx = session.ctx(&app, &project).await?;
    let back = back_or(&form.back, edge_workloads_path(&project, &edge, ""));
    match app.delete_pod(&ctx, &edge, &namespace, &pod).await {
        Ok(()) => Ok(Redirect::to(&with_done(
            &back,
            &format!("Asked the edge to delete pod {pod}: it is created again."),
        ))
        .into_response()),
        Err(e) => {
            let (status, message) = WebError::from(e).status_and_message();
            let frame = Frame::load(&app, &session, &project, Section::Edges).await?;
            Ok((
                status,
                pod_confirm(
                    &frame,
                    &session.csrf,
                    &project,
                    (&edge, &namespace, &pod),
                    &back,
                    Some(&message),
                ),
            )
                .into_response())
        }
    }
}

// ------------------------------------------------------------------ consoles and logs

/// Refuses a WebSocket upgrade whose `Origin` is missing or not this server's (see the module
/// doc): browsers always send it on a WebSocket handshake, and only a page of this server may
/// open a console with the user's cookie.
pub fn websocket_origin(headers: &HeaderMap, public_url: Option<&str>) -> Result<(), WebError> {
    if !headers.contains_key(header::ORIGIN) {
        return Err(WebError::CrossOrigin(
            "refused: a console WebSocket must carry this server's Origin".into(),
        ));
    }
    // The same rule as for forms (Origin, and Sec-Fetch-Site when the browser sends it).
    same_origin(&Method::POST, headers, public_url).map_err(|e| {
        WebError::CrossOrigin(
            e.to_string()
                .replace("this form was sent from", "this console was opened from"),
        )
    })
}

/// The VM's facts for a console or logs page.
struct VmPage {
    name: String,
    edge_name: String,
}

fn vm_page(app: &App, ctx: &Ctx, app_id: &str, edge: &str, vm: &str) -> Result<VmPage, WebError> {
    let r = app.resolve_vm(ctx, app_id, edge, vm)?;
    Ok(VmPage {
        name: r.name,
        edge_name: r.edge_name,
    })
}

/// `GET .../vms/{vm}/console`: the VNC console page (noVNC, connected by `vnc.js`).
pub async fn console_page(
    State(app): State<App>,
    session: Session,
    Path((project, app_id, edge, vm)): Path<(String, String, String, String)>,
) -> Result<Markup, WebError> {
    let ctx = session.ctx(&app, &project).await?;
    let v = vm_page(&app, &ctx, &app_id, &edge, &vm)?;
    ctx.require(TunnelKind::Vnc.access())?;
    let frame = Frame::load(&app, &session, &project, Section::Edges).await?;
    let back = edge_workloads_path(&project, &edge, "");
    Ok(frame.page(
        &format!("Console of {}", v.name),
        html! {
            p { a href=(back) { "← Workloads on " (v.edge_name) } }
            h1 { "Console of VM " (v.name) " on " (v.edge_name) }
            div.console-bar {
                span { "Status: " strong #vnc-status role="status" data-state="connecting" { "connecting" } }
                button.secondary #vnc-cad type="button" disabled { "Send Ctrl+Alt+Del" }
                a.button.secondary href=(vm_path(&project, &app_id, &edge, &vm, "serial")) { "Serial console" }
                a.button.secondary href=(vm_path(&project, &app_id, &edge, &vm, "logs")) { "Logs" }
            }
            noscript { p.error { "The VNC console needs JavaScript." } }
            div #vnc-screen .vnc-screen
                data-ws=(vm_path(&project, &app_id, &edge, &vm, "vnc"))
                data-novnc=(crate::assets::novnc_rfb_path()) {}
            script type="module" src=(crate::assets::vnc_script_path()) {}
        },
    ))
}

/// `GET .../vms/{vm}/vnc`: the VNC display as a WebSocket (RFB in binary messages), bridged
/// by the API's own code once the origin, the session and the app layer agree.
pub async fn vnc_socket(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Path((project, app_id, edge, vm)): Path<(String, String, String, String)>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, WebError> {
    socket(
        app,
        headers,
        session,
        (project, app_id, edge, vm),
        ws,
        TunnelKind::Vnc,
    )
    .await
}

/// `GET .../vms/{vm}/serial/ws`: the serial console as a WebSocket.
pub async fn serial_socket(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Path((project, app_id, edge, vm)): Path<(String, String, String, String)>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, WebError> {
    socket(
        app,
        headers,
        session,
        (project, app_id, edge, vm),
        ws,
        TunnelKind::Serial,
    )
    .await
}

async fn socket(
    app: App,
    headers: HeaderMap,
    session: Session,
    (project, app_id, edge, vm): (String, String, String, String),
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    kind: TunnelKind,
) -> Result<Response, WebError> {
    websocket_origin(&headers, app.public_url())?;
    let ctx = session.ctx(&app, &project).await?;
    let ws = ws.map_err(|e| {
        AppError::Invalid(format!(
            "this path is a WebSocket: connect with a WebSocket client ({})",
            e.body_text()
        ))
    });
    // A refusal does not depend on how the request was made: access first.
    if ws.is_err() {
        ctx.require(kind.access())?;
    }
    let ws = ws?;
    let tunnel = app.open_vm_tunnel(&ctx, &app_id, &edge, &vm, kind).await?;
    Ok(canopy_server::http::serve_console(ws, tunnel))
}

/// `GET .../vms/{vm}/serial`: the serial console page (`serial.js`: text in and out).
pub async fn serial_page(
    State(app): State<App>,
    session: Session,
    Path((project, app_id, edge, vm)): Path<(String, String, String, String)>,
) -> Result<Markup, WebError> {
    let ctx = session.ctx(&app, &project).await?;
    let v = vm_page(&app, &ctx, &app_id, &edge, &vm)?;
    ctx.require(TunnelKind::Serial.access())?;
    let frame = Frame::load(&app, &session, &project, Section::Edges).await?;
    Ok(frame.page(
        &format!("Serial console of {}", v.name),
        html! {
            p { a href=(edge_workloads_path(&project, &edge, "")) { "← Workloads on " (v.edge_name) } }
            h1 { "Serial console of VM " (v.name) " on " (v.edge_name) }
            p.muted {
                "What the VM prints from now on; what it printed before is in its "
                a href=(vm_path(&project, &app_id, &edge, &vm, "logs")) { "logs" } "."
            }
            div.console-bar {
                span { "Status: " strong #serial-status role="status" data-state="connecting" { "connecting" } }
            }
            noscript { p.error { "The serial console needs JavaScript." } }
            pre #serial-output .terminal tabindex="0" aria-label="serial output"
                data-ws=(vm_path(&project, &app_id, &edge, &vm, "serial/ws")) {}
            form #serial-form .terminal-input {
                input #serial-input type="text" autocomplete="off" spellcheck="false"
                    aria-label="a line to send" placeholder="Type a line and press Enter";
                button type="submit" { "Send" }
            }
            script type="module" src=(crate::assets::serial_script_path()) {}
        },
    ))
}

/// The logs page's query.
#[derive(Debug, Deserialize)]
pub struct LogsParams {
    #[serde(default = "default_tail")]
    tail: u32,
}

fn default_tail() -> u32 {
    canopy_server::app::DEFAULT_LOG_TAIL
}

fn logs_page(frame: &Frame, title: &str, back: (&str, &str), stream: &str, tail: u32) -> Markup {
    let tail_s = tail.to_string();
    frame.page(
        title,
        html! {
            p { a href=(back.0) { "← " (back.1) } }
            h1 { (title) }
            div.console-bar {
                span { "Status: " strong #logs-status role="status" data-state="idle" { "idle" } }
                form method="get" {
                    label for="tail" { "Lines " }
                    input #tail type="number" name="tail" min="0" max=(canopy_server::app::MAX_LOG_TAIL) value=(tail);
                    button.secondary type="submit" { "Show" }
                }
                button #logs-follow type="button" disabled { "Follow" }
                a.button.secondary href=(format!("{stream}{}", query(&[("tail", &tail_s)]))) { "As text" }
            }
            pre #logs-output .terminal tabindex="0" aria-label="log"
                data-stream=(stream) data-tail=(tail) {}
            noscript {
                p { "Without JavaScript: the last lines " a href=(format!("{stream}{}", query(&[("tail", &tail_s)]))) { "as text" } "." }
            }
            script type="module" src=(crate::assets::logs_script_path()) {}
        },
    )
}

/// `GET .../vms/{vm}/logs`: the VM's log page.
pub async fn vm_logs_page(
    State(app): State<App>,
    session: Session,
    Path((project, app_id, edge, vm)): Path<(String, String, String, String)>,
    Query(q): Query<LogsParams>,
) -> Result<Markup, WebError> {
    let ctx = session.ctx(&app, &project).await?;
    let v = vm_page(&app, &ctx, &app_id, &edge, &vm)?;
    ctx.require(Access::FleetRead)?;
    let frame = Frame::load(&app, &session, &project, Section::Edges).await?;
    let back = edge_workloads_path(&project, &edge, "");
    Ok(logs_page(
        &frame,
        &format!("Logs of VM {} on {}", v.name, v.edge_name),
        (&back, &format!("Workloads on {}", v.edge_name)),
        &vm_path(&project, &app_id, &edge, &vm, "logs/stream"),
        q.tail.min(canopy_server::app::MAX_LOG_TAIL),
    ))
}

/// `GET .../containers/{name}/logs`: a container's log page.
pub async fn container_logs_page(
    State(app): State<App>,
    session: Session,
    Path((project, app_id, edge, container)): Path<(String, String, String, String)>,
    Query(q): Query<LogsParams>,
) -> Result<Markup, WebError> {
    let ctx = session.ctx(&app, &project).await?;
    let c = app.resolve_container(&ctx, &app_id, &edge, &container)?;
    ctx.require(Access::FleetRead)?;
    let frame = Frame::load(&app, &session, &project, Section::Edges).await?;
    let back = edge_workloads_path(&project, &edge, "");
    Ok(logs_page(
        &frame,
        &format!("Logs of container {} on {}", c.name, c.edge_name),
        (&back, &format!("Workloads on {}", c.edge_name)),
        &format!(
            "{}/stream",
            container_logs_path(&project, &app_id, &edge, &container)
        ),
        q.tail.min(canopy_server::app::MAX_LOG_TAIL),
    ))
}

/// `GET .../vms/{vm}/logs/stream?tail=N&follow=true`: the VM's log as streamed text (the
/// API's parameters, limits and bridging).
pub async fn vm_logs_stream(
    State(app): State<App>,
    session: Session,
    Path((project, app_id, edge, vm)): Path<(String, String, String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, WebError> {
    let (follow, tail) = canopy_server::http::parse_logs_query(q.as_deref().unwrap_or(""))?;
    let ctx = session.ctx(&app, &project).await?;
    let tunnel = app
        .open_vm_tunnel(&ctx, &app_id, &edge, &vm, TunnelKind::Logs { follow, tail })
        .await?;
    Ok(canopy_server::http::stream_logs(tunnel))
}

/// `GET .../containers/{name}/logs/stream?tail=N&follow=true`: a container's log as streamed
/// text.
pub async fn container_logs_stream(
    State(app): State<App>,
    session: Session,
    Path((project, app_id, edge, container)): Path<(String, String, String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, WebError> {
    let (follow, tail) = canopy_server::http::parse_logs_query(q.as_deref().unwrap_or(""))?;
    let ctx = session.ctx(&app, &project).await?;
    let tunnel = app
        .open_container_logs(&ctx, &app_id, &edge, &container, follow, tail)
        .await?;
    Ok(canopy_server::http::stream_logs(tunnel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn back_links_stay_on_the_console() {
        let f = || "/ui/projects/p/edges/e/workloads".to_string();
        assert_eq!(back_or("/ui/projects/p/x?y=1", f()), "/ui/projects/p/x?y=1");
        for bad in [
            "https://evil.example/",
            "//evil.example/ui/projects/",
            "/ui/projects/..//evil",
            "/ui/projects/\\evil",
            "",
        ] {
            assert_eq!(back_or(bad, f()), f(), "{bad}");
        }
    }

    #[test]
    fn websockets_need_this_servers_origin() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        assert!(websocket_origin(&h(&[("host", "h:1")]), None).is_err());
        assert!(
            websocket_origin(
                &h(&[("host", "h:1"), ("origin", "https://evil.example")]),
                None
            )
            .is_err()
        );
        assert!(websocket_origin(&h(&[("host", "h:1"), ("origin", "http://h:1")]), None).is_ok());
        assert!(
            websocket_origin(
                &h(&[
                    ("host", "h:1"),
                    ("origin", "http://h:1"),
                    ("sec-fetch-site", "cross-site")
                ]),
                None
            )
            .is_err()
        );
    }
}
