//! The catalog, read-only: deployment packages (their applications, deployment profiles and
//! default namespaces), applications (their profiles and parameter templates) and registries.
//! Each has a list (name filter over name and display name, pages of [`PAGE_SIZE`], the API's
//! list conventions) and a detail page.
//!
//! Registries are read without `showSensitiveInfo`, so the app layer hands over copies without
//! their credentials (`Registry::redacted`): the page cannot show what it never has.

use axum::extract::{Path, Query, State};
use canopy_core::catalog::{Application, DeploymentPackage, Registry};
use canopy_server::App;
use canopy_server::app::Access;
use maud::{Markup, html};
use time::OffsetDateTime;

use super::{Frame, ListParams, Section, age, pager, project_path, segment, when};
use crate::error::WebError;
use crate::session::Session;

/// The console path of a deployment package version.
pub fn package_path(project: &str, name: &str, version: &str) -> String {
    project_path(
        project,
        &format!("packages/{}/{}", segment(name), segment(version)),
    )
}

/// The console path of an application version.
pub fn application_path(project: &str, name: &str, version: &str) -> String {
    project_path(
        project,
        &format!("applications/{}/{}", segment(name), segment(version)),
    )
}

fn registry_path(project: &str, name: &str) -> String {
    project_path(project, &format!("registries/{}", segment(name)))
}

/// The display name, or the name when there is none.
fn shown<'a>(display_name: &'a str, name: &'a str) -> &'a str {
    if display_name.is_empty() {
        name
    } else {
        display_name
    }
}

/// The common body of a catalog list: heading, filter, count, table (or `empty`), pager.
fn list_body(
    title: &str,
    base: &str,
    params: &ListParams,
    matched: u64,
    rows: usize,
    table: Markup,
) -> Markup {
    let more = params.more(rows, matched);
    html! {
        h1 { (title) }
        // web-admin: what a delete just did.
        @if !params.deleted.is_empty() {
            p.notice #deleted role="status" { "Deleted " (params.deleted) "." }
        }
        form.filter method="get" action=(base) role="search" {
            input type="search" name="name" value=(params.name)
                placeholder="Filter by name" aria-label="filter by name";
            button type="submit" { "Filter" }
        }
        p.muted { (matched) " " (title.to_lowercase()) @if !params.name.is_empty() { " match" } "." }
        @if rows == 0 {
            p #empty { "No " (title.to_lowercase()) @if !params.name.is_empty() { " match this filter" } "." }
        } @else {
            (table)
        }
        (pager(base, &params.name, params.page, more))
    }
}

/// `GET /ui/projects/{project}/packages`.
pub async fn packages(
    State(app): State<App>,
    session: Session,
    Path(project): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Markup, WebError> {
    let ctx = session.ctx(&app, &project).await?;
    let raw = params.list_query(&["name", "displayName"]);
    let (items, matched) = app.list_packages(&ctx, Some(&raw)).await?;
    let may_write = ctx.principal.may(&ctx.project, Access::CatalogWrite);
    let frame = Frame::load(&app, &session, &project, Section::Packages).await?;
    let now = OffsetDateTime::now_utc();
    let table = html! {
        table #packages {
            thead { tr { th { "Name" } th { "Version" } th { "Applications" } th { "Deployed" } th { "Created" } } }
            tbody {
                @for p in &items {
                    tr {
                        td {
                            a href=(package_path(&project, &p.name, &p.version)) { (shown(&p.display_name, &p.name)) }
                            br; span.muted { (p.name) }
                        }
                        td { (p.version) }
                        td { @for a in &p.application_references { span.label { (a.name) " " (a.version) } } }
                        td { @if p.is_deployed { "yes" } @else { "no" } }
                        td title=(when(p.create_time)) { (age(p.create_time, now)) }
                    }
                }
            }
        }
    };
    let base = project_path(&project, "packages");
    Ok(frame.page(
        "Packages",
        html! {
            @if may_write {
                div.actions { a.button #upload-link href=(super::upload::upload_path(&project)) { "Upload…" } }
            }
            (list_body("Packages", &base, &params, matched, items.len(), table))
        },
    ))
}

/// `GET /ui/projects/{project}/packages/{name}/{version}`.
pub async fn package(
    State(app): State<App>,
    session: Session,
    Path((project, name, version)): Path<(String, String, String)>,
) -> Result<Markup, WebError> {
    let ctx = session.ctx(&app, &project).await?;
    let p: DeploymentPackage = app.get_package(&ctx, &name, &version).await?;
    let may_deploy = ctx.principal.may(&ctx.project, Access::FleetWrite);
    let frame = Frame::load(&app, &session, &project, Section::Packages).await?;
    Ok(frame.page(
        shown(&p.display_name, &p.name),
        html! {
            p { a href=(project_path(&project, "packages")) { "← Packages" } }
            h1 #package-title { (shown(&p.display_name, &p.name)) " " (p.version) }
            dl.facts.card {
                dt { "Name" } dd { (p.name) }
                dt { "Version" } dd { (p.version) }
                @if !p.description.is_empty() { dt { "Description" } dd { (p.description) } }
                dt { "Kind" } dd { (p.kind.as_api()) }
                dt { "Deployed" } dd { @if p.is_deployed { "yes (its content can no longer change)" } @else { "no" } }
                dt { "Default profile" } dd { (p.default_profile_name) }
                dt { "Created" } dd { (when(p.create_time)) }
            }
            @if may_deploy {
                div.actions {
                    a.button #deploy-link href=(super::deploy::deploy_path(&project, &p.name, &p.version)) { "Deploy…" }
                }
            }
            // web-admin: export for every reader, delete for catalog writers.
            div.actions {
                a.button.secondary #export-link href=(super::catalog_edit::export_path(&project, &p.name, &p.version)) download { "Export (.tar.gz)" }
                @if ctx.principal.may(&ctx.project, Access::CatalogWrite) {
                    a.button.danger #delete-link href=(format!("{}/delete", package_path(&project, &p.name, &p.version))) { "Delete…" }
                }
            }
            h2 { "Applications" }
            table #package-apps {
                thead { tr { th { "Application" } th { "Version" } th { "Default namespace" } th { "Requires" } } }
                tbody {
                    @for a in &p.application_references {
                        tr {
                            td { a href=(application_path(&project, &a.name, &a.version)) { (a.name) } }
                            td { (a.version) }
                            td { (p.default_namespaces.get(&a.name).map_or("", String::as_str)) }
                            td {
                                @for d in p.application_dependencies.iter().filter(|d| d.name == a.name) {
                                    span.label { (d.requires) }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Deployment profiles" }
            @if p.profiles.is_empty() {
                p.muted { "None: each application's default profile is used." }
            } @else {
                table #package-profiles {
                    thead { tr { th { "Profile" } th { "Application profiles" } } }
                    tbody {
                        @for dp in &p.profiles {
                            tr {
                                td {
                                    strong { (shown(&dp.display_name, &dp.name)) }
                                    @if dp.name == p.default_profile_name { " " span.muted { "(default)" } }
                                    @if !dp.description.is_empty() { br; span.muted { (dp.description) } }
                                }
                                td { @for (app_name, profile) in &dp.application_profiles { span.label { (app_name) ": " (profile) } } }
                            }
                        }
                    }
                }
            }
            @if !p.namespaces.is_empty() {
                h2 { "Namespaces" }
                ul #package-namespaces {
                    @for ns in &p.namespaces {
                        li { (ns.name) " " @for (k, v) in &ns.labels { span.label { (k) "=" (v) } } }
                    }
                }
            }
        },
    ))
}

/// `GET /ui/projects/{project}/applications`.
pub async fn applications(
    State(app): State<App>,
    session: Session,
    Path(project): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Markup, WebError> {
    let ctx = session.ctx(&app, &project).await?;
    let raw = params.list_query(&["name", "displayName"]);
    let (items, matched) = app.list_applications(&ctx, Some(&raw)).await?;
    let frame = Frame::load(&app, &session, &project, Section::Applications).await?;
    let table = html! {
        table #applications {
            thead { tr { th { "Name" } th { "Version" } th { "Source" } th { "Profiles" } } }
            tbody {
                @for a in &items {
                    tr {
                        td {
                            a href=(application_path(&project, &a.name, &a.version)) { (shown(&a.display_name, &a.name)) }
                            br; span.muted { (a.name) }
                        }
                        td { (a.version) }
                        td { (source(a)) }
                        td { @for p in &a.profiles { span.label { (p.name) } } }
                    }
                }
            }
        }
    };
    let base = project_path(&project, "applications");
    Ok(frame.page(
        "Applications",
        list_body("Applications", &base, &params, matched, items.len(), table),
    ))
}

/// Where an application's workloads come from, in words.
fn source(a: &Application) -> String {
    if a.is_native() {
        "native template".into()
    } else {
        format!("chart {} {}", a.chart_name, a.chart_version)
    }
}

/// `GET /ui/projects/{project}/applications/{name}/{version}`.
pub async fn application(
    State(app): State<App>,
    session: Session,
    Path((project, name, version)): Path<(String, String, String)>,
) -> Result<Markup, WebError> {
    let ctx = session.ctx(&app, &project).await?;
    let a = app.get_application(&ctx, &name, &version).await?;
    let frame = Frame::load(&app, &session, &project, Section::Applications).await?;
    Ok(frame.page(
        shown(&a.display_name, &a.name),
        html! {
            p { a href=(project_path(&project, "applications")) { "← Applications" } }
            h1 #application-title { (shown(&a.display_name, &a.name)) " " (a.version) }
            dl.facts.card {
                dt { "Name" } dd { (a.name) }
                dt { "Version" } dd { (a.version) }
                @if !a.description.is_empty() { dt { "Description" } dd { (a.description) } }
                dt { "Kind" } dd { (a.kind.as_api()) }
                dt { "Source" } dd { (source(&a)) }
                @if !a.helm_registry_name.is_empty() {
                    dt { "Helm registry" } dd { a href=(registry_path(&project, &a.helm_registry_name)) { (a.helm_registry_name) } }
                }
                @if !a.image_registry_name.is_empty() {
                    dt { "Image registry" } dd { a href=(registry_path(&project, &a.image_registry_name)) { (a.image_registry_name) } }
                }
                dt { "Default profile" } dd { (a.default_profile_name) }
                dt { "Created" } dd { (when(a.create_time)) }
            }
            // web-admin: delete for catalog writers.
            @if ctx.principal.may(&ctx.project, Access::CatalogWrite) {
                div.actions {
                    a.button.danger #delete-link href=(format!("{}/delete", application_path(&project, &a.name, &a.version))) { "Delete…" }
                }
            }
            h2 { "Profiles" }
            @for p in &a.profiles {
                section.card.profile {
                    h3 {
                        (shown(&p.display_name, &p.name))
                        @if p.name == a.default_profile_name { " " span.muted { "(default)" } }
                    }
                    @if !p.description.is_empty() { p { (p.description) } }
                    @if p.parameter_templates.is_empty() {
                        p.muted { "No parameters." }
                    } @else {
                        table.parameters {
                            thead { tr { th { "Parameter" } th { "Type" } th { "Default" } th { "Mandatory" } th { "Secret" } } }
                            tbody {
                                @for t in &p.parameter_templates {
                                    tr {
                                        td { strong { (t.name) } @if !t.display_name.is_empty() { br; span.muted { (t.display_name) } } }
                                        td { (t.param_type) }
                                        // A secret parameter's default is a secret too.
                                        td { @if t.secret { span.muted { "(hidden)" } } @else { (t.default) } }
                                        td { @if t.mandatory { "yes" } @else { "no" } }
                                        td { @if t.secret { "yes" } @else { "no" } }
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

/// `GET /ui/projects/{project}/registries`.
pub async fn registries(
    State(app): State<App>,
    session: Session,
    Path(project): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Markup, WebError> {
    let ctx = session.ctx(&app, &project).await?;
    let raw = params.list_query(&["name", "displayName"]);
    let (items, matched) = app.list_registries(&ctx, Some(&raw)).await?;
    let frame = Frame::load(&app, &session, &project, Section::Registries).await?;
    let table = html! {
        table #registries {
            thead { tr { th { "Name" } th { "Type" } th { "URL" } } }
            tbody {
                @for r in &items {
                    tr {
                        td {
                            a href=(registry_path(&project, &r.name)) { (shown(&r.display_name, &r.name)) }
                            br; span.muted { (r.name) }
                        }
                        td { (r.registry_type) }
                        td { (r.root_url) }
                    }
                }
            }
        }
    };
    let base = project_path(&project, "registries");
    // web-admin: a new registry for catalog writers.
    let new_link = html! {
        @if ctx.principal.may(&ctx.project, Access::CatalogWrite) {
            div.actions { a.button #new-registry href=(super::catalog_edit::new_registry_path(&project)) { "New registry…" } }
        }
    };
    Ok(frame.page(
        "Registries",
        html! {
            (list_body("Registries", &base, &params, matched, items.len(), table))
            (new_link)
        },
    ))
}

/// `GET /ui/projects/{project}/registries/{name}`.
pub async fn registry(
    State(app): State<App>,
    session: Session,
    Path((project, name)): Path<(String, String)>,
) -> Result<Markup, WebError> {
    let ctx = session.ctx(&app, &project).await?;
    // Without `showSensitiveInfo`: the app layer returns the registry without its credentials.
    let r: Registry = app.get_registry(&ctx, &name, None).await?;
    let frame = Frame::load(&app, &session, &project, Section::Registries).await?;
    Ok(frame.page(
        shown(&r.display_name, &r.name),
        html! {
            p { a href=(project_path(&project, "registries")) { "← Registries" } }
            h1 #registry-title { (shown(&r.display_name, &r.name)) }
            dl.facts.card {
                dt { "Name" } dd { (r.name) }
                @if !r.description.is_empty() { dt { "Description" } dd { (r.description) } }
                dt { "Type" } dd { (r.registry_type) }
                dt { "URL" } dd { (r.root_url) }
                @if !r.inventory_url.is_empty() { dt { "Inventory URL" } dd { (r.inventory_url) } }
                dt { "Credentials" } dd.muted { "not shown in the console" }
                dt { "Created" } dd { (when(r.create_time)) }
            }
            // web-admin: edit and delete for catalog writers.
            @if ctx.principal.may(&ctx.project, Access::CatalogWrite) {
                div.actions {
                    a.button #edit-link href=(format!("{}/edit", registry_path(&project, &r.name))) { "Edit…" }
                    a.button.danger #delete-link href=(format!("{}/delete", registry_path(&project, &r.name))) { "Delete…" }
                }
            }
        },
    ))
}
