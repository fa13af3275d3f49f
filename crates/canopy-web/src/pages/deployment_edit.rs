//! Changing a running deployment from its page (web-live): **upgrade** (another version of the
//! same package, with what changes shown first: applications added, removed or at another
//! version, the deployment profile, parameters added or removed) and **update values** (a form
//! made from the parameter templates of the deployment's profile, as the deploy wizard's).
//! Both go through `App::update_deployment`, which checks deployment write access again: the
//! pages are refused (403) to read-only users and so is a forged POST. Errors are the app
//! layer's own, shown in place above the form.
//!
//! Secrets: a secret parameter is a password input that starts empty. Left empty, the form
//! sends the API's mask (`********`) and the app layer keeps the stored value; the value is
//! never written into a page, an error or a URL (responses hold masked values only).

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use canopy_core::catalog::DeploymentPackage;
use canopy_core::template::{SECRET_MASK, parse_path, set_path};
use canopy_deploy::model::{Deployment, OverrideValues};
use canopy_server::App;
use canopy_server::app::{Access, AppParameters, Ctx};
use maud::{Markup, html};
use serde::Deserialize;

use super::deploy::{input_for, label_of};
use super::{Frame, Section, project_path, query, segment};
use crate::CSRF_FIELD;
use crate::error::WebError;
use crate::security::same_origin;
use crate::session::Session;

fn deployment_path(project: &str, id: &str) -> String {
    project_path(project, &format!("deployments/{}", segment(id)))
}

fn field(app: &str, name: &str) -> String {
    format!("param:{app}:{name}")
}

/// The deployment's profile as it runs.
fn profile_of(d: &Deployment) -> &str {
    if d.profile_name.is_empty() {
        &d.default_profile_name
    } else {
        &d.profile_name
    }
}

/// The value of parameter `name` of `app` in (masked) override values, as text.
fn current_value(d: &Deployment, app: &str, name: &str) -> Option<String> {
    let values = d
        .override_values
        .iter()
        .find(|o| o.app_name == app)?
        .values
        .as_ref()?;
    let pointer = format!("/{}", name.replace('.', "/"));
    match values.pointer(&pointer)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        v => Some(v.to_string()),
    }
}

/// A request that changes nothing of `d` (as the API's PUT would send it back).
fn unchanged(d: &Deployment) -> Deployment {
    Deployment {
        app_name: d.app_name.clone(),
        app_version: d.app_version.clone(),
        display_name: d.display_name.clone(),
        name: d.name.clone(),
        profile_name: profile_of(d).to_string(),
        deployment_type: d.deployment_type.clone(),
        target_clusters: d.target_clusters.clone(),
        all_app_target_clusters: d.all_app_target_clusters.clone(),
        override_values: d.override_values.clone(),
        ..Deployment::default()
    }
}

/// `field → value` pairs of a posted form, with its CSRF token and other fields.
struct Posted {
    csrf: String,
    version: String,
    params: Vec<(String, String)>,
}

impl Posted {
    fn parse(body: &[u8]) -> Posted {
        let mut p = Posted {
            csrf: String::new(),
            version: String::new(),
            params: Vec::new(),
        };
        for (k, v) in url::form_urlencoded::parse(body) {
            match &*k {
                CSRF_FIELD => p.csrf = v.into_owned(),
                "version" => p.version = v.into_owned(),
                k if k.starts_with("param:") => p.params.push((k.to_string(), v.into_owned())),
                _ => {}
            }
        }
        p
    }

    fn get(&self, f: &str) -> &str {
        self.params
            .iter()
            .find(|(k, _)| k == f)
            .map_or("", |(_, v)| v.trim())
    }
}

/// The override values the values form describes: each non-empty field set at its path; a
/// secret left empty keeps the stored value (the mask) when one is set.
fn overrides_of(
    d: &Deployment,
    sets: &[AppParameters],
    posted: &Posted,
) -> Result<Vec<OverrideValues>, String> {
    let mut out = Vec::new();
    for set in sets {
        let mut values = serde_json::Value::Object(Default::default());
        let mut any = false;
        for t in &set.templates {
            let mut v = posted.get(&field(&set.name, &t.name)).to_string();
            if v.is_empty() && t.secret && current_value(d, &set.name, &t.name).is_some() {
                v = SECRET_MASK.to_string();
            }
            if v.is_empty() {
                continue;
            }
            let path = parse_path(&t.name).map_err(|e| format!("values.{}: {e}", t.name))?;
            set_path(&mut values, &path, serde_json::Value::String(v))
                .map_err(|e| format!("values.{}: {e}", t.name))?;
            any = true;
        }
        if any {
            let namespace = d
                .override_values
                .iter()
                .find(|o| o.app_name == set.name)
                .map(|o| o.target_namespace.clone())
                .unwrap_or_default();
            out.push(OverrideValues {
                app_name: set.name.clone(),
                target_namespace: namespace,
                values: Some(values),
            });
        }
    }
    Ok(out)
}

async fn load(
    app: &App,
    session: &Session,
    project: &str,
    id: &str,
) -> Result<(Ctx, Deployment, Frame), WebError> {
    let ctx = session.ctx(app, project).await?;
    let d = app.get_deployment(&ctx, id)?;
    // Say so now rather than after the form is filled in (the update checks again).
    ctx.require(Access::FleetWrite)?;
    let frame = Frame::load(app, session, project, Section::Deployments).await?;
    Ok((ctx, d, frame))
}

fn error_box(error: Option<&str>) -> Markup {
    html! {
        @if let Some(e) = error { p.error #form-error role="alert" { (e) } }
    }
}

/// The values form.
fn values_page(
    frame: &Frame,
    csrf: &str,
    project: &str,
    d: &Deployment,
    sets: &[AppParameters],
    error: Option<&str>,
) -> Markup {
    frame.page(
        "Update values",
        html! {
            p { a href=(deployment_path(project, &d.deploy_id)) { "← " (d.display_name) } }
            h1 { "Update values of " (d.display_name) }
            (error_box(error))
            form.card method="post" action=(format!("{}/values", deployment_path(project, &d.deploy_id))) {
                input type="hidden" name=(CSRF_FIELD) value=(csrf);
                p.muted { "Package " (d.app_name) " " (d.app_version) ", profile " (profile_of(d)) ". Empty fields take the profile's defaults; secret fields left empty keep their value." }
                @for set in sets {
                    fieldset {
                        legend { "Application " (set.name) " (profile " (set.profile) ")" }
                        @if set.templates.is_empty() { p.muted { "No parameters." } }
                        @for t in &set.templates {
                            @let f = field(&set.name, &t.name);
                            @let cur = current_value(d, &set.name, &t.name);
                            div.field {
                                label for=(f) { (label_of(t)) @if t.mandatory { " *" } @if t.secret { " (secret)" } }
                                @if t.secret {
                                    input id=(f) type="password" name=(f) autocomplete="new-password"
                                        placeholder=(if cur.is_some() { "set: leave empty to keep" } else { "" });
                                } @else {
                                    (input_for(t, &f, cur.as_deref().unwrap_or("")))
                                }
                                @if !t.default.is_empty() && !t.secret { span.muted { " default " (t.default) } }
                            }
                        }
                    }
                }
                div.actions {
                    button #save-values type="submit" { "Update values" }
                    a.button.secondary href=(deployment_path(project, &d.deploy_id)) { "Cancel" }
                }
            }
        },
    )
}

/// `GET /ui/projects/{project}/deployments/{id}/values`.
pub async fn values_form(
    State(app): State<App>,
    session: Session,
    Path((project, id)): Path<(String, String)>,
) -> Result<Markup, WebError> {
    let (ctx, d, frame) = load(&app, &session, &project, &id).await?;
    let params = app
        .deploy_parameters(&ctx, &d.app_name, &d.app_version, profile_of(&d))
        .await?;
    Ok(values_page(
        &frame,
        &session.csrf,
        &project,
        &d,
        &params.apps,
        None,
    ))
}

/// `POST /ui/projects/{project}/deployments/{id}/values`.
pub async fn update_values(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Path((project, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, WebError> {
    same_origin(&Method::POST, &headers, app.public_url())?;
    let posted = Posted::parse(&body);
    session.check_csrf(&posted.csrf)?;
    let (ctx, d, frame) = load(&app, &session, &project, &id).await?;
    let params = app
        .deploy_parameters(&ctx, &d.app_name, &d.app_version, profile_of(&d))
        .await?;
    let failed = |status: StatusCode, message: &str| {
        (
            status,
            values_page(
                &frame,
                &session.csrf,
                &project,
                &d,
                &params.apps,
                Some(message),
            ),
        )
            .into_response()
    };
    let mut req = unchanged(&d);
    req.override_values = match overrides_of(&d, &params.apps, &posted) {
        Ok(v) => v,
        Err(e) => return Ok(failed(StatusCode::BAD_REQUEST, &e)),
    };
    match app.update_deployment(&ctx, &id, req).await {
        Ok(_) => Ok(done(&project, &id, "Values updated.")),
        Err(e) => {
            let (status, message) = WebError::from(e).status_and_message();
            Ok(failed(status, &message))
        }
    }
}

fn done(project: &str, id: &str, what: &str) -> Response {
    Redirect::to(&format!(
        "{}{}",
        deployment_path(project, id),
        query(&[("done", what)])
    ))
    .into_response()
}

/// `?version=` of the upgrade page.
#[derive(Debug, Default, Deserialize)]
pub struct VersionParam {
    #[serde(default)]
    version: String,
}

/// What changes from package `from` to `to` for a deployment with profile `profile`.
fn changes(
    from: &DeploymentPackage,
    to: &DeploymentPackage,
    profile: &str,
    old: &[AppParameters],
    new: &[AppParameters],
) -> Vec<String> {
    let mut out = Vec::new();
    for r in &to.application_references {
        match from
            .application_references
            .iter()
            .find(|o| o.name == r.name)
        {
            None => out.push(format!("application {} {} is added", r.name, r.version)),
            Some(o) if o.version != r.version => out.push(format!(
                "application {} goes from {} to {}",
                r.name, o.version, r.version
            )),
            Some(_) => {}
        }
    }
    for o in &from.application_references {
        if !to.application_references.iter().any(|r| r.name == o.name) {
            out.push(format!("application {} {} is removed", o.name, o.version));
        }
    }
    if !to.profiles.iter().any(|p| p.name == profile) {
        out.push(format!(
            "deployment profile {profile} does not exist in {}: the new version's default, {}, is used",
            to.version, to.default_profile_name
        ));
    }
    for n in new {
        let before: BTreeSet<&str> = old
            .iter()
            .find(|o| o.name == n.name)
            .map(|o| o.templates.iter().map(|t| t.name.as_str()).collect())
            .unwrap_or_default();
        let after: BTreeSet<&str> = n.templates.iter().map(|t| t.name.as_str()).collect();
        for p in after.difference(&before) {
            out.push(format!("application {}: new parameter {p}", n.name));
        }
        for p in before.difference(&after) {
            out.push(format!("application {}: parameter {p} is gone", n.name));
        }
        if let Some(o) = old.iter().find(|o| o.name == n.name)
            && o.profile != n.profile
        {
            out.push(format!(
                "application {}: profile {} becomes {}",
                n.name, o.profile, n.profile
            ));
        }
    }
    out
}

/// `GET /ui/projects/{project}/deployments/{id}/upgrade[?version=V]`: the newer versions of
/// the package, and with one chosen, what changes.
pub async fn upgrade_form(
    State(app): State<App>,
    session: Session,
    Path((project, id)): Path<(String, String)>,
    Query(q): Query<VersionParam>,
) -> Result<Markup, WebError> {
    let (ctx, d, frame) = load(&app, &session, &project, &id).await?;
    upgrade_page(&app, &ctx, &session, &frame, &project, &d, &q.version, None).await
}

#[expect(clippy::too_many_arguments, reason = "one page's inputs")]
async fn upgrade_page(
    app: &App,
    ctx: &Ctx,
    session: &Session,
    frame: &Frame,
    project: &str,
    d: &Deployment,
    chosen: &str,
    error: Option<&str>,
) -> Result<Markup, WebError> {
    let filter = url::form_urlencoded::Serializer::new(String::new())
        .append_pair(
            "filter",
            &format!("name=\"{}\"", d.app_name.replace('"', "")),
        )
        .append_pair("pageSize", "100")
        .finish();
    let (packages, _) = app.list_packages(ctx, Some(&filter)).await?;
    let current = semver::Version::parse(&d.app_version).ok();
    let mut newer: Vec<&DeploymentPackage> = packages
        .iter()
        .filter(|p| p.name == d.app_name)
        .filter(|p| match (&current, semver::Version::parse(&p.version)) {
            (Some(c), Ok(v)) => v > *c,
            _ => p.version != d.app_version,
        })
        .collect();
    newer.sort_by(|a, b| a.version.cmp(&b.version));
    let profile = profile_of(d).to_string();
    let diff = match newer.iter().find(|p| p.version == chosen) {
        Some(to) => {
            let from = app.get_package(ctx, &d.app_name, &d.app_version).await?;
            let old = app
                .deploy_parameters(ctx, &d.app_name, &d.app_version, &profile)
                .await?;
            let new_profile = if to.profiles.iter().any(|p| p.name == profile) {
                profile.clone()
            } else {
                String::new()
            };
            let new = app
                .deploy_parameters(ctx, &to.name, &to.version, &new_profile)
                .await?;
            Some(changes(&from, to, &profile, &old.apps, &new.apps))
        }
        None => None,
    };
    let path = format!("{}/upgrade", deployment_path(project, &d.deploy_id));
    Ok(frame.page(
        "Upgrade",
        html! {
            p { a href=(deployment_path(project, &d.deploy_id)) { "← " (d.display_name) } }
            h1 { "Upgrade " (d.display_name) }
            p { "Runs " strong { (d.app_name) " " (d.app_version) } " with profile " (profile) "." }
            (error_box(error))
            @if newer.is_empty() {
                p #no-newer { "No newer version of " (d.app_name) " is in the catalog." }
            } @else {
                form.filter method="get" action=(path) {
                    label for="version" { "Version" }
                    select #version name="version" {
                        @for p in &newer { option value=(p.version) selected[p.version == chosen] { (p.version) } }
                    }
                    button.secondary type="submit" { "Show changes" }
                }
            }
            @if let Some(diff) = &diff {
                div.card #changes {
                    h2 { "What changes from " (d.app_version) " to " (chosen) }
                    @if diff.is_empty() { p { "No application, profile or parameter changes." } }
                    ul { @for c in diff { li { (c) } } }
                    p.muted { "Override values are kept (secret ones too); parameters the new version no longer has are refused by the server." }
                    form method="post" action=(path) {
                        input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
                        input type="hidden" name="version" value=(chosen);
                        div.actions {
                            button #confirm-upgrade type="submit" { "Upgrade to " (chosen) }
                            a.button.secondary href=(deployment_path(project, &d.deploy_id)) { "Cancel" }
                        }
                    }
                }
            }
        },
    ))
}

/// `POST /ui/projects/{project}/deployments/{id}/upgrade`: `version`.
pub async fn upgrade(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Path((project, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, WebError> {
    same_origin(&Method::POST, &headers, app.public_url())?;
    let posted = Posted::parse(&body);
    session.check_csrf(&posted.csrf)?;
    let (ctx, d, frame) = load(&app, &session, &project, &id).await?;
    let mut req = unchanged(&d);
    req.app_version = posted.version.clone();
    let to = app
        .get_package(&ctx, &d.app_name, &posted.version)
        .await
        .ok();
    if let Some(to) = &to
        && !to.profiles.iter().any(|p| p.name == req.profile_name)
    {
        req.profile_name = String::new();
    }
    match app.update_deployment(&ctx, &id, req).await {
        Ok(_) => Ok(done(
            &project,
            &id,
            &format!("Upgraded to {}.", posted.version),
        )),
        Err(e) => {
            let (status, message) = WebError::from(e).status_and_message();
            if status == StatusCode::FORBIDDEN {
                return Ok((status, super::error_page(status, &message)).into_response());
            }
            let page = upgrade_page(
                &app,
                &ctx,
                &session,
                &frame,
                &project,
                &d,
                &posted.version,
                Some(&message),
            )
            .await?;
            Ok((status, page).into_response())
        }
    }
}
