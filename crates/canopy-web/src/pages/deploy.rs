//! The deploy wizard: from a package version, pick a deployment profile; fill in a form made
//! from the parameter templates of each application's profile (type, default, mandatory);
//! choose the target edges by labels or by name; review (the edges the labels match now,
//! counted and named, found on the server); then create the deployment through the app layer
//! (`App::create_deployment`, which checks deployment write access, types and mandatory values
//! exactly as for the API). No script: each step is a form post.
//!
//! Secrets: a secret parameter's value is asked for on the review step only, as a password
//! input, and is never written back into any page (not as a hidden field, not as an input's
//! value): if the creation fails, the review is shown again with the error and the secret
//! inputs empty. The app layer's errors never contain a secret's value (`canopy_core::template`
//! names the parameter only), and success is a redirect to the deployment's page, whose URL
//! holds its id only.
//!
//! Every step is a POST with the session's CSRF token after the origin check; the wizard's
//! pages are refused (403) to users without deployment write access, and the creation itself
//! is refused by the app layer whatever the form says.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use canopy_core::catalog::{DeploymentPackage, ParameterTemplate};
use canopy_core::list::{Entity, parse_query};
use canopy_core::template::{parse_path, set_path};
use canopy_deploy::model::{AUTO_SCALING, Deployment, OverrideValues, TARGETED, TargetClusters};
use canopy_server::App;
use canopy_server::app::{Access, AppError, AppParameters, Ctx};
use maud::{Markup, html};
use serde::Deserialize;

use super::catalog::package_path;
use super::{Frame, Section, project_path, query, segment};
use crate::CSRF_FIELD;
use crate::error::WebError;
use crate::security::same_origin;
use crate::session::Session;

/// `GET /ui/projects/{project}/matching-edges?labels=k=v,...`: how many edges of the project
/// the labels match now and the first names, as plain text, for the wizard's live count (the
/// same query as the review step, with the caller's read access; the server's error as text).
pub async fn matching_edges(
    State(app): State<App>,
    session: Session,
    Path(project): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let text = async {
        let ctx = session.ctx(&app, &project).await?;
        let labels = q.get("labels").map(String::as_str).unwrap_or_default();
        let draft = Draft {
            labels: labels.to_string(),
            ..Draft::default()
        };
        let pairs = draft.label_pairs().map_err(AppError::Invalid)?;
        let (matched, names) = edges_matching(&app, &ctx, &pairs, MATCHES_NAMED)?;
        let mut text = format!(
            "{matched} edge{} match now",
            if matched == 1 { "" } else { "s" }
        );
        if !names.is_empty() {
            text.push_str(&format!(": {}", names.join(", ")));
            if matched > names.len() as u64 {
                text.push_str(", …");
            }
        }
        Ok::<String, WebError>(text)
    }
    .await;
    let (status, text) = match text {
        Ok(t) => (StatusCode::OK, t),
        Err(e) => e.status_and_message(),
    };
    let plain = [(
        axum::http::header::CONTENT_TYPE,
        "text/plain; charset=utf-8",
    )];
    (status, plain, text).into_response()
}

/// How many edges of the project `labels` match now, and the first `named` of them by name
/// (the review step's and the live count's one query).
fn edges_matching(
    app: &App,
    ctx: &Ctx,
    labels: &BTreeMap<String, String>,
    named: u32,
) -> Result<(u64, Vec<String>), WebError> {
    let item: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let size = named.to_string();
    let raw = query(&[
        ("labels", &item.join(",")),
        ("pageSize", &size),
        ("orderBy", "name"),
    ]);
    let q = parse_query(Entity::Edge, raw.trim_start_matches('?')).map_err(AppError::from)?;
    let (edges, matched) = app.list_edges(ctx, &q)?;
    Ok((matched, edges.into_iter().map(|e| e.name).collect()))
}

/// Edges the live count names (the count itself is exact).
pub const MATCHES_NAMED: u32 = 10;

/// Edges offered to choose from, and matching edges named on the review.
pub const EDGES_SHOWN: u32 = 100;

/// The console path of the wizard for a package version.
pub fn deploy_path(project: &str, name: &str, version: &str) -> String {
    format!("{}/deploy", package_path(project, name, version))
}

/// The form field of parameter `name` of application `app`.
fn field(app: &str, name: &str) -> String {
    format!("param:{app}:{name}")
}

/// What the wizard's forms carry (secret values only on the create step).
#[derive(Debug, Default)]
struct Draft {
    csrf: String,
    action: String,
    profile: String,
    display_name: String,
    /// `labels` or `edges`.
    target: String,
    labels: String,
    edges: Vec<String>,
    /// Form field (see [`field`]) to value.
    params: BTreeMap<String, String>,
}

impl Draft {
    fn parse(body: &[u8]) -> Draft {
        let mut d = Draft::default();
        for (k, v) in url::form_urlencoded::parse(body) {
            let v = v.into_owned();
            match &*k {
                CSRF_FIELD => d.csrf = v,
                "action" => d.action = v,
                "profile" => d.profile = v,
                "display_name" => d.display_name = v,
                "target" => d.target = v,
                "labels" => d.labels = v,
                "edge" => d.edges.push(v),
                k if k.starts_with("param:") => {
                    d.params.insert(k.to_string(), v);
                }
                _ => {}
            }
        }
        d
    }

    fn by_labels(&self) -> bool {
        self.target != "edges"
    }

    /// The labels typed (`k=v`, separated by commas or new lines).
    fn label_pairs(&self) -> Result<BTreeMap<String, String>, String> {
        let item = self.labels.replace(['\n', '\r'], ",");
        let pairs = canopy_core::kv::parse_label_filter(&item)
            .map_err(|e| format!("labels {:?}: {e}", self.labels))?;
        if pairs.is_empty() {
            return Err("labels: give at least one key=value pair".into());
        }
        Ok(pairs.into_iter().collect())
    }

    /// The deployment request this draft describes.
    fn request(&self, p: &DeploymentPackage, sets: &[AppParameters]) -> Result<Deployment, String> {
        let mut d = Deployment {
            app_name: p.name.clone(),
            app_version: p.version.clone(),
            display_name: self.display_name.trim().to_string(),
            profile_name: self.profile.clone(),
            ..Deployment::default()
        };
        if self.by_labels() {
            d.deployment_type = AUTO_SCALING.into();
            d.all_app_target_clusters = Some(TargetClusters {
                labels: self.label_pairs()?,
                ..TargetClusters::default()
            });
        } else {
            if self.edges.is_empty() {
                return Err("edges: choose at least one edge".into());
            }
            d.deployment_type = TARGETED.into();
            for r in &p.application_references {
                for e in &self.edges {
                    d.target_clusters.push(TargetClusters {
                        app_name: r.name.clone(),
                        cluster_id: e.clone(),
                        ..TargetClusters::default()
                    });
                }
            }
        }
        for set in sets {
            let mut values = serde_json::Value::Object(Default::default());
            let mut any = false;
            for t in &set.templates {
                let v = self
                    .params
                    .get(&field(&set.name, &t.name))
                    .map_or("", |v| v.trim());
                if v.is_empty() {
                    continue;
                }
                let path = parse_path(&t.name).map_err(|e| format!("values.{}: {e}", t.name))?;
                set_path(&mut values, &path, serde_json::Value::String(v.to_string()))
                    .map_err(|e| format!("values.{}: {e}", t.name))?;
                any = true;
            }
            if any {
                d.override_values.push(OverrideValues {
                    app_name: set.name.clone(),
                    target_namespace: String::new(),
                    values: Some(values),
                });
            }
        }
        Ok(d)
    }
}

/// The parameter a message is about (`values.<name>` in it, as the app layer names them).
fn param_of<'a>(message: &str, set: &'a AppParameters) -> Option<&'a ParameterTemplate> {
    set.templates.iter().find(|t| {
        let needle = format!("values.{}", t.name);
        message.match_indices(&needle).any(|(i, _)| {
            message[i + needle.len()..]
                .chars()
                .next()
                .is_none_or(|c| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '[')))
        }) && (message.contains(&format!("application {}:", set.name))
            || message.contains(&format!("application {} ", set.name))
            || !message.contains("application "))
    })
}

/// The `?profile=` of the wizard's first page.
#[derive(Debug, Default, Deserialize)]
pub struct ProfileParam {
    #[serde(default)]
    profile: String,
}

/// `GET /ui/projects/{project}/packages/{name}/{version}/deploy`: the first step.
pub async fn show(
    State(app): State<App>,
    session: Session,
    Path((project, name, version)): Path<(String, String, String)>,
    Query(q): Query<ProfileParam>,
) -> Result<Markup, WebError> {
    let ctx = session.ctx(&app, &project).await?;
    // Say so now rather than after the form is filled in (the creation checks again).
    ctx.require(Access::FleetWrite)?;
    let draft = Draft {
        profile: q.profile,
        target: "labels".into(),
        ..Draft::default()
    };
    let page = Wizard::load(&app, &ctx, &session, &project, (&name, &version), draft).await?;
    Ok(page.form(None))
}

/// `POST /ui/projects/{project}/packages/{name}/{version}/deploy`: `action` is `review`,
/// `edit` (back to the form) or `create`.
pub async fn submit(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Path((project, name, version)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Response, WebError> {
    same_origin(&Method::POST, &headers, app.public_url())?;
    let draft = Draft::parse(&body);
    session.check_csrf(&draft.csrf)?;
    let ctx = session.ctx(&app, &project).await?;
    let action = draft.action.clone();
    let w = Wizard::load(&app, &ctx, &session, &project, (&name, &version), draft).await?;
    match action.as_str() {
        "create" => {
            let req = match w.draft.request(&w.package, &w.sets) {
                Ok(r) => r,
                Err(e) => return Ok((StatusCode::BAD_REQUEST, w.form(Some(&e))).into_response()),
            };
            match app.create_deployment(&ctx, req).await {
                Ok(id) => Ok(Redirect::to(&project_path(
                    &project,
                    &format!("deployments/{}", segment(&id)),
                ))
                .into_response()),
                Err(e) => {
                    let (status, message) = WebError::from(e).status_and_message();
                    if status == StatusCode::FORBIDDEN {
                        return Ok((status, super::error_page(status, &message)).into_response());
                    }
                    Ok((status, w.review(&app, &ctx, Some(&message))?).into_response())
                }
            }
        }
        "review" => {
            ctx.require(Access::FleetWrite)?;
            if let Err(e) = w.draft.request(&w.package, &w.sets) {
                return Ok((StatusCode::BAD_REQUEST, w.form(Some(&e))).into_response());
            }
            Ok(w.review(&app, &ctx, None)?.into_response())
        }
        _ => {
            ctx.require(Access::FleetWrite)?;
            Ok(w.form(None).into_response())
        }
    }
}

/// One step of the wizard being rendered.
struct Wizard {
    frame: Frame,
    csrf: String,
    project: String,
    package: DeploymentPackage,
    sets: Vec<AppParameters>,
    draft: Draft,
    /// Edges to choose from (the first [`EDGES_SHOWN`] by name).
    edges: Vec<(String, String)>,
}

impl Wizard {
    async fn load(
        app: &App,
        ctx: &Ctx,
        session: &Session,
        project: &str,
        (name, version): (&str, &str),
        mut draft: Draft,
    ) -> Result<Wizard, WebError> {
        let params = app
            .deploy_parameters(ctx, name, version, &draft.profile)
            .await?;
        draft.profile = params.profile;
        let (package, sets) = (params.package, params.apps);
        let q = parse_query(
            Entity::Edge,
            &format!("pageSize={EDGES_SHOWN}&orderBy=name"),
        )
        .map_err(AppError::from)?;
        let (edges, _) = app.list_edges(ctx, &q)?;
        Ok(Wizard {
            frame: Frame::load(app, session, project, Section::Packages).await?,
            csrf: session.csrf.clone(),
            project: project.to_string(),
            package,
            sets,
            draft,
            edges: edges.into_iter().map(|e| (e.id, e.name)).collect(),
        })
    }

    /// One fieldset per application, with `each(app, parameter, form field)` per parameter.
    fn parameters(
        &self,
        each: impl Fn(&AppParameters, &ParameterTemplate, &str) -> Markup,
    ) -> Markup {
        html! {
            @for set in &self.sets {
                fieldset.card.app-params {
                    legend { "Application " (set.name) " (profile " (set.profile) ")" }
                    @if set.templates.is_empty() { p.muted { "No parameters." } }
                    @for t in &set.templates {
                        (each(set, t, &field(&set.name, &t.name)))
                    }
                }
            }
        }
    }

    fn action(&self) -> String {
        deploy_path(&self.project, &self.package.name, &self.package.version)
    }

    fn title(&self) -> String {
        format!("Deploy {} {}", self.package.name, self.package.version)
    }

    /// The first step: profile, name, targets, the non-secret parameters.
    fn form(&self, error: Option<&str>) -> Markup {
        let d = &self.draft;
        let p = &self.package;
        self.frame.page(
            &self.title(),
            html! {
                p { a href=(package_path(&self.project, &p.name, &p.version)) { "← " (p.name) " " (p.version) } }
                h1 { (self.title()) }
                @if let Some(e) = error { p.error #deploy-error role="alert" { (e) } }
                @if p.profiles.len() > 1 {
                    form.filter method="get" action=(self.action()) {
                        label for="profile" { "Deployment profile" }
                        select #profile name="profile" {
                            @for dp in &p.profiles {
                                option value=(dp.name) selected[dp.name == d.profile] { (if dp.display_name.is_empty() { &dp.name } else { &dp.display_name }) }
                            }
                        }
                        button.secondary type="submit" { "Choose" }
                    }
                } @else {
                    p {
                        "Deployment profile "
                        @if d.profile.is_empty() { "(none: each application's default profile)" } @else { strong { (d.profile) } }
                    }
                }
                form #deploy-form method="post" action=(self.action()) {
                    input type="hidden" name=(CSRF_FIELD) value=(self.csrf);
                    input type="hidden" name="profile" value=(d.profile);
                    div.card {
                        label for="display_name" { "Display name" }
                        input #display_name type="text" name="display_name" value=(d.display_name) maxlength="40";
                    }
                    fieldset.card #targets {
                        legend { "Target edges" }
                        label {
                            input type="radio" name="target" value="labels" checked[d.by_labels()];
                            " Edges with these labels (key=value, separated by commas): "
                        }
                        input #labels type="text" name="labels" value=(d.labels) placeholder="site=shop" aria-label="labels";
                        // Filled in as labels are typed (assets/matching.js; empty without script).
                        p.muted #labels-matching aria-live="polite" data-url=(project_path(&self.project, "matching-edges")) {}
                        script src=(crate::assets::matching_script_path()) defer {}
                        label {
                            input #target-edges type="radio" name="target" value="edges" checked[!d.by_labels()];
                            " These edges:"
                        }
                        @if self.edges.is_empty() {
                            p.muted { "No edge is enrolled in this project yet." }
                        }
                        @for (id, name) in &self.edges {
                            label.edge {
                                input type="checkbox" name="edge" value=(id) checked[d.edges.contains(id)];
                                " " (name)
                            }
                        }
                    }
                    (self.parameters(|_, t, f| html! {
                        @if t.secret {
                            p.muted { strong { (label_of(t)) } " is secret: it is asked for on the review step." }
                        } @else {
                            @let value = d.params.get(f).cloned().unwrap_or_else(|| t.default.clone());
                            label for=(f) { (label_of(t)) @if t.mandatory { " *" } " " span.muted { "(" (t.param_type) ")" } }
                            (input_for(t, f, &value))
                        }
                    }))
                    div.actions {
                        button #review type="submit" name="action" value="review" { "Review" }
                    }
                }
            },
        )
    }

    /// The review step: what will be created, the edges it targets now, the secret inputs.
    fn review(&self, app: &App, ctx: &Ctx, error: Option<&str>) -> Result<Markup, WebError> {
        let d = &self.draft;
        let p = &self.package;
        let (matched, names) = if d.by_labels() {
            let labels = d.label_pairs().unwrap_or_default();
            edges_matching(app, ctx, &labels, EDGES_SHOWN)?
        } else {
            let names: Vec<String> = d
                .edges
                .iter()
                .map(|id| {
                    self.edges
                        .iter()
                        .find(|(i, _)| i == id)
                        .map_or_else(|| id.clone(), |(_, n)| n.clone())
                })
                .collect();
            (names.len() as u64, names)
        };
        Ok(self.frame.page(
            &self.title(),
            html! {
                h1 { "Review: " (self.title()) }
                @if let Some(e) = error { p.error #deploy-error role="alert" { (e) } }
                form #review-form method="post" action=(self.action()) {
                    input type="hidden" name=(CSRF_FIELD) value=(self.csrf);
                    input type="hidden" name="profile" value=(d.profile);
                    input type="hidden" name="display_name" value=(d.display_name);
                    input type="hidden" name="target" value=(if d.by_labels() { "labels" } else { "edges" });
                    input type="hidden" name="labels" value=(d.labels);
                    @for e in &d.edges { input type="hidden" name="edge" value=(e); }
                    dl.facts.card {
                        dt { "Package" } dd { (p.name) " " (p.version) }
                        dt { "Profile" } dd { (d.profile) }
                        dt { "Display name" } dd { (d.display_name) }
                        dt { "Targets" } dd {
                            @if d.by_labels() { "edges labelled " @for (k, v) in d.label_pairs().unwrap_or_default() { span.label { (k) "=" (v) } } }
                            @else { "the chosen edges" }
                        }
                        dt { "Matching edges" } dd #matching {
                            strong #match-count { (matched) } @if !names.is_empty() { ": " (names.join(", ")) }
                            @if matched > names.len() as u64 { ", …" }
                        }
                    }
                    (self.parameters(|set, t, f| html! {
                        @let bad = error.is_some_and(|e| param_of(e, set).is_some_and(|b| b.name == t.name));
                        @if t.secret {
                            // Asked for here, never filled in from what was sent.
                            label for=(f) { (label_of(t)) @if t.mandatory { " *" } " " span.muted { "(secret " (t.param_type) ")" } }
                            input id=(f) type="password" name=(f) autocomplete="off" required[t.mandatory] aria-invalid=[bad.then_some("true")];
                        } @else {
                            @let value = d.params.get(f).cloned().unwrap_or_default();
                            div {
                                (label_of(t)) ": " strong { (value) }
                                input type="hidden" name=(f) value=(value);
                            }
                        }
                        @if bad { p.error.field-error { (error.unwrap_or_default()) } }
                    }))
                    div.actions {
                        button #create type="submit" name="action" value="create" { "Create deployment" }
                        button.secondary #back type="submit" name="action" value="edit" formnovalidate { "Back" }
                    }
                }
            },
        ))
    }
}

pub(super) fn label_of(t: &ParameterTemplate) -> &str {
    if t.display_name.is_empty() {
        &t.name
    } else {
        &t.display_name
    }
}

/// The input of a non-secret parameter by its type.
pub(super) fn input_for(t: &ParameterTemplate, f: &str, value: &str) -> Markup {
    match t.param_type.as_str() {
        "boolean" => html! {
            select id=(f) name=(f) {
                @if !t.mandatory { option value="" selected[value.is_empty()] { "" } }
                option value="true" selected[value == "true"] { "true" }
                option value="false" selected[value == "false"] { "false" }
            }
        },
        "number" => html! {
            input id=(f) type="text" inputmode="decimal" name=(f) value=(value) required[t.mandatory];
        },
        _ => html! {
            input id=(f) type="text" name=(f) value=(value) required[t.mandatory];
        },
    }
}
