//! Changing the catalog from the console: registries (create, edit, delete), deleting
//! applications and deployment packages, and exporting a package.
//!
//! Every change is the app layer's own (`App::create_registry`, `update_registry`,
//! `delete_registry`, `delete_application`, `delete_package`, `export_package`), which checks
//! catalog write (read, for export) access: users without it see no controls, and a forged
//! form is refused (403).
//!
//! **Registry secrets** (user name, token, CA certificates) are write-only here: the pages
//! read registries without `showSensitiveInfo` (the app layer hands over a redacted copy), the
//! inputs are empty, and a blank input keeps the stored value (the app layer keeps secrets a
//! change omits); a "clear" box removes one. A value typed is never written back into a page,
//! even when the server refuses the change.
//!
//! **Deletes** refused by the reference's locks (an application used by a package, a package
//! that is deployed, a registry used by an application) show the server's error in place on the
//! confirmation page, plus, for a deployed package, the deployments that use it.

use axum::Form;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use canopy_core::catalog::Registry;
use canopy_server::App;
use canopy_server::app::{Access, AppError, Ctx};
use maud::{Markup, html};
use serde::Deserialize;

use super::{Frame, Section, project_path, query, segment};
use crate::CSRF_FIELD;
use crate::error::WebError;
use crate::security::same_origin;
use crate::session::Session;

fn registry_path(project: &str, name: &str) -> String {
    project_path(project, &format!("registries/{}", segment(name)))
}

/// The new-registry form's path.
pub fn new_registry_path(project: &str) -> String {
    project_path(project, "new-registry")
}

/// The path of a package version's export (`.tar.gz` download).
pub fn export_path(project: &str, name: &str, version: &str) -> String {
    format!(
        "{}/export",
        super::catalog::package_path(project, name, version)
    )
}

/// The registry form (create and edit).
#[derive(Deserialize, Default)]
pub struct RegistryForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    description: String,
    #[serde(default, rename = "type")]
    registry_type: String,
    #[serde(default)]
    root_url: String,
    #[serde(default)]
    inventory_url: String,
    #[serde(default)]
    api_type: String,
    // Write-only: never rendered back.
    #[serde(default)]
    username: String,
    #[serde(default)]
    auth_token: String,
    #[serde(default)]
    cacerts: String,
    #[serde(default)]
    clear_username: Option<String>,
    #[serde(default)]
    clear_auth_token: Option<String>,
    #[serde(default)]
    clear_cacerts: Option<String>,
}

impl std::fmt::Debug for RegistryForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryForm")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl RegistryForm {
    fn from_registry(r: &Registry) -> RegistryForm {
        RegistryForm {
            name: r.name.clone(),
            display_name: r.display_name.clone(),
            description: r.description.clone(),
            registry_type: r.registry_type.clone(),
            root_url: r.root_url.clone(),
            inventory_url: r.inventory_url.clone(),
            api_type: r.api_type.clone(),
            ..RegistryForm::default()
        }
    }

    /// The registry to send: a blank secret is `None` (kept on edit), a cleared one `""`.
    fn registry(&self) -> Registry {
        let secret = |v: &str, clear: &Option<String>| {
            if clear.is_some() {
                Some(String::new())
            } else if v.is_empty() {
                None
            } else {
                Some(v.to_string())
            }
        };
        Registry {
            name: self.name.trim().to_string(),
            display_name: self.display_name.trim().to_string(),
            description: self.description.trim().to_string(),
            registry_type: self.registry_type.clone(),
            root_url: self.root_url.trim().to_string(),
            inventory_url: self.inventory_url.trim().to_string(),
            api_type: self.api_type.trim().to_string(),
            username: secret(&self.username, &self.clear_username),
            auth_token: secret(&self.auth_token, &self.clear_auth_token),
            cacerts: secret(&self.cacerts, &self.clear_cacerts),
            ..Registry::default()
        }
    }

    /// A copy fit to render again: the secrets dropped.
    fn without_secrets(&self) -> RegistryForm {
        RegistryForm {
            name: self.name.clone(),
            display_name: self.display_name.clone(),
            description: self.description.clone(),
            registry_type: self.registry_type.clone(),
            root_url: self.root_url.clone(),
            inventory_url: self.inventory_url.clone(),
            api_type: self.api_type.clone(),
            ..RegistryForm::default()
        }
    }
}

/// The registry form page; `existing` is the registry's name when editing.
fn registry_form(
    frame: &Frame,
    session: &Session,
    project: &str,
    existing: Option<&str>,
    f: &RegistryForm,
    error: Option<&str>,
) -> Markup {
    let (title, action) = match existing {
        Some(n) => (
            format!("Edit registry {n}"),
            format!("{}/edit", registry_path(project, n)),
        ),
        None => (
            "New registry".to_string(),
            project_path(project, "registries"),
        ),
    };
    let ty = if f.registry_type.is_empty() {
        "HELM"
    } else {
        f.registry_type.as_str()
    };
    let secret_help = if existing.is_some() {
        "Not shown. Leave blank to keep the stored value."
    } else {
        "Optional."
    };
    frame.page(
        &title,
        html! {
            p { a href=(project_path(project, "registries")) { "← Registries" } }
            h1 { (title) }
            @if let Some(e) = error { p.error #registry-error role="alert" { (e) } }
            form.card.narrow #registry-form method="post" action=(action) autocomplete="off" {
                input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
                label for="name" { "Name" }
                @if let Some(n) = existing {
                    input #name type="text" name="name" value=(n) readonly;
                } @else {
                    input #name type="text" name="name" value=(f.name) required;
                }
                label for="display_name" { "Display name" }
                input #display_name type="text" name="display_name" value=(f.display_name);
                label for="description" { "Description" }
                input #description type="text" name="description" value=(f.description);
                label for="type" { "Type" }
                select #type name="type" {
                    option value="HELM" selected[ty == "HELM"] { "HELM (charts)" }
                    option value="IMAGE" selected[ty == "IMAGE"] { "IMAGE (container images)" }
                }
                label for="root_url" { "URL" }
                input #root_url type="text" name="root_url" value=(f.root_url) required placeholder="oci://registry.example/charts";
                label for="inventory_url" { "Inventory URL (optional)" }
                input #inventory_url type="text" name="inventory_url" value=(f.inventory_url);
                label for="api_type" { "API type (optional)" }
                input #api_type type="text" name="api_type" value=(f.api_type);
                fieldset.secrets {
                    legend { "Credentials (write-only)" }
                    p.muted #secret-help { (secret_help) }
                    label for="username" { "User name" }
                    input #username type="password" name="username" value="" autocomplete="off" aria-describedby="secret-help";
                    @if existing.is_some() {
                        label.check { input type="checkbox" name="clear_username" value="1"; " Clear the stored user name" }
                    }
                    label for="auth_token" { "Token or password" }
                    input #auth_token type="password" name="auth_token" value="" autocomplete="new-password" aria-describedby="secret-help";
                    @if existing.is_some() {
                        label.check { input type="checkbox" name="clear_auth_token" value="1"; " Clear the stored token" }
                    }
                    label for="cacerts" { "CA certificates (PEM)" }
                    textarea #cacerts name="cacerts" rows="3" aria-describedby="secret-help" {}
                    @if existing.is_some() {
                        label.check { input type="checkbox" name="clear_cacerts" value="1"; " Clear the stored certificates" }
                    }
                }
                div.actions {
                    button #save-registry type="submit" { @if existing.is_some() { "Save registry" } @else { "Create registry" } }
                    a.button.secondary href=(match existing { Some(n) => registry_path(project, n), None => project_path(project, "registries") }) { "Cancel" }
                }
            }
        },
    )
}

/// `GET /ui/projects/{project}/new-registry`.
pub async fn new_registry(
    State(app): State<App>,
    session: Session,
    Path(project): Path<String>,
) -> Result<Markup, WebError> {
    let ctx = session.ctx(&app, &project).await?;
    ctx.require(Access::CatalogWrite)?;
    let frame = Frame::load(&app, &session, &project, Section::Registries).await?;
    Ok(registry_form(
        &frame,
        &session,
        &project,
        None,
        &RegistryForm::default(),
        None,
    ))
}

/// `GET /ui/projects/{project}/registries/{name}/edit`.
pub async fn edit_registry(
    State(app): State<App>,
    session: Session,
    Path((project, name)): Path<(String, String)>,
) -> Result<Markup, WebError> {
    let ctx = session.ctx(&app, &project).await?;
    // Without `showSensitiveInfo`: the secrets are not even read.
    let r = app.get_registry(&ctx, &name, None).await?;
    ctx.require(Access::CatalogWrite)?;
    let frame = Frame::load(&app, &session, &project, Section::Registries).await?;
    Ok(registry_form(
        &frame,
        &session,
        &project,
        Some(&r.name),
        &RegistryForm::from_registry(&r),
        None,
    ))
}

/// What a failed change answers: the form again with the server's error (400, 409, 412), or
/// the error page (403, 404, ...).
async fn form_error(
    app: &App,
    session: &Session,
    project: &str,
    existing: Option<&str>,
    f: &RegistryForm,
    err: AppError,
) -> Result<Response, WebError> {
    let (status, message) = WebError::from(err).status_and_message();
    if matches!(
        status,
        StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED
    ) || status.is_server_error()
    {
        return Ok((status, super::error_page(status, &message)).into_response());
    }
    let frame = Frame::load(app, session, project, Section::Registries).await?;
    let page = registry_form(
        &frame,
        session,
        project,
        existing,
        &f.without_secrets(),
        Some(&message),
    );
    Ok((status, page).into_response())
}

/// `POST /ui/projects/{project}/registries`: creates a registry.
pub async fn create_registry(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Path(project): Path<String>,
    Form(f): Form<RegistryForm>,
) -> Result<Response, WebError> {
    same_origin(&Method::POST, &headers, app.public_url())?;
    session.check_csrf(&f.csrf)?;
    let ctx = session.ctx(&app, &project).await?;
    match app.create_registry(&ctx, f.registry()).await {
        Ok(r) => Ok(Redirect::to(&registry_path(&project, &r.name)).into_response()),
        Err(e) => form_error(&app, &session, &project, None, &f, e).await,
    }
}

/// `POST /ui/projects/{project}/registries/{name}/edit`: changes a registry.
pub async fn update_registry(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Path((project, name)): Path<(String, String)>,
    Form(mut f): Form<RegistryForm>,
) -> Result<Response, WebError> {
    same_origin(&Method::POST, &headers, app.public_url())?;
    session.check_csrf(&f.csrf)?;
    let ctx = session.ctx(&app, &project).await?;
    // The path names the registry (a read-only name field cannot change it).
    f.name = name.clone();
    match app.update_registry(&ctx, &name, f.registry()).await {
        Ok(()) => Ok(Redirect::to(&registry_path(&project, &name)).into_response()),
        Err(e) => form_error(&app, &session, &project, Some(&name), &f, e).await,
    }
}

// ------------------------------------------------------------------ deletes

/// What a delete page is about.
enum Target {
    Registry(String),
    Application(String, String),
    Package(String, String),
}

impl Target {
    fn what(&self) -> String {
        match self {
            Target::Registry(n) => format!("registry {n}"),
            Target::Application(n, v) => format!("application {n} {v}"),
            Target::Package(n, v) => format!("deployment package {n} {v}"),
        }
    }

    fn page_path(&self, project: &str) -> String {
        match self {
            Target::Registry(n) => registry_path(project, n),
            Target::Application(n, v) => super::catalog::application_path(project, n, v),
            Target::Package(n, v) => super::catalog::package_path(project, n, v),
        }
    }

    fn list(&self) -> &'static str {
        match self {
            Target::Registry(_) => "registries",
            Target::Application(..) => "applications",
            Target::Package(..) => "packages",
        }
    }

    fn section(&self) -> Section {
        match self {
            Target::Registry(_) => Section::Registries,
            Target::Application(..) => Section::Applications,
            Target::Package(..) => Section::Packages,
        }
    }

    /// Reads it (404 when it is not there).
    async fn exists(&self, app: &App, ctx: &Ctx) -> Result<(), AppError> {
        match self {
            Target::Registry(n) => app.get_registry(ctx, n, None).await.map(drop),
            Target::Application(n, v) => app.get_application(ctx, n, v).await.map(drop),
            Target::Package(n, v) => app.get_package(ctx, n, v).await.map(drop),
        }
    }

    async fn delete(&self, app: &App, ctx: &Ctx) -> Result<(), AppError> {
        match self {
            Target::Registry(n) => app.delete_registry(ctx, n).await,
            Target::Application(n, v) => app.delete_application(ctx, n, v).await,
            Target::Package(n, v) => app.delete_package(ctx, n, v).await,
        }
    }
}

/// The deployments of package `name` `version` the user may see (the first 100), to explain
/// why a deployed package cannot be deleted.
fn deployments_of(app: &App, ctx: &Ctx, name: &str, version: &str) -> Vec<(String, String)> {
    if !ctx.principal.may(&ctx.project, Access::FleetRead) {
        return Vec::new();
    }
    let filter = format!("appName=\"{}\"", name.replace('"', ""));
    let raw = format!(
        "pageSize=100&{}",
        query(&[("filter", &filter)]).trim_start_matches('?')
    );
    app.list_deployments(ctx, Some(&raw))
        .map(|(items, _)| {
            items
                .into_iter()
                .filter(|d| d.app_version == version)
                .map(|d| {
                    let shown = if d.display_name.is_empty() {
                        d.name.clone()
                    } else {
                        d.display_name.clone()
                    };
                    (d.deploy_id, shown)
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn confirm_page(
    app: &App,
    session: &Session,
    project: &str,
    target: &Target,
    error: Option<&str>,
) -> Result<Markup, WebError> {
    let ctx = session.ctx(app, project).await?;
    target.exists(app, &ctx).await?;
    ctx.require(Access::CatalogWrite)?;
    let deployments = match (target, error) {
        (Target::Package(n, v), Some(_)) => deployments_of(app, &ctx, n, v),
        _ => Vec::new(),
    };
    let frame = Frame::load(app, session, project, target.section()).await?;
    let what = target.what();
    Ok(frame.page(
        &format!("Delete {what}"),
        html! {
            p { a href=(target.page_path(project)) { "← " (what) } }
            h1 { "Delete " (what) "?" }
            @if let Some(e) = error {
                div.error #delete-error role="alert" {
                    p { (e) }
                    @if !deployments.is_empty() {
                        p { "Deployed by:" }
                        ul #blocking-deployments {
                            @for (id, shown) in &deployments {
                                li { a href=(project_path(project, &format!("deployments/{}", segment(id)))) { (shown) } }
                            }
                        }
                    }
                }
            }
            div.card {
                p { "The " (what) " is removed from the catalog of project " (project) ". The server refuses while something still uses it, and says what." }
                form method="post" action=(format!("{}/delete", target.page_path(project))) {
                    input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
                    div.actions {
                        button.danger #confirm-delete type="submit" { "Delete" }
                        a.button.secondary href=(target.page_path(project)) { "Cancel" }
                    }
                }
            }
        },
    ))
}

async fn do_delete(
    app: &App,
    headers: &HeaderMap,
    session: &Session,
    project: &str,
    csrf: &str,
    target: Target,
) -> Result<Response, WebError> {
    same_origin(&Method::POST, headers, app.public_url())?;
    session.check_csrf(csrf)?;
    let ctx = session.ctx(app, project).await?;
    match target.delete(app, &ctx).await {
        Ok(()) => Ok(Redirect::to(&format!(
            "{}{}",
            project_path(project, target.list()),
            query(&[("deleted", &target.what())])
        ))
        .into_response()),
        Err(e @ AppError::FailedPrecondition(_)) => {
            let (status, message) = WebError::from(e).status_and_message();
            let page = confirm_page(app, session, project, &target, Some(&message)).await?;
            Ok((status, page).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// The delete form.
#[derive(Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    csrf: String,
}

/// `GET /ui/projects/{project}/registries/{name}/delete`.
pub async fn confirm_delete_registry(
    State(app): State<App>,
    session: Session,
    Path((project, name)): Path<(String, String)>,
) -> Result<Markup, WebError> {
    confirm_page(&app, &session, &project, &Target::Registry(name), None).await
}

/// `POST /ui/projects/{project}/registries/{name}/delete`.
pub async fn delete_registry(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Path((project, name)): Path<(String, String)>,
    Form(f): Form<DeleteForm>,
) -> Result<Response, WebError> {
    do_delete(
        &app,
        &headers,
        &session,
        &project,
        &f.csrf,
        Target::Registry(name),
    )
    .await
}

/// `GET /ui/projects/{project}/applications/{name}/{version}/delete`.
pub async fn confirm_delete_application(
    State(app): State<App>,
    session: Session,
    Path((project, name, version)): Path<(String, String, String)>,
) -> Result<Markup, WebError> {
    let t = Target::Application(name, version);
    confirm_page(&app, &session, &project, &t, None).await
}

/// `POST /ui/projects/{project}/applications/{name}/{version}/delete`.
pub async fn delete_application(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Path((project, name, version)): Path<(String, String, String)>,
    Form(f): Form<DeleteForm>,
) -> Result<Response, WebError> {
    let t = Target::Application(name, version);
    do_delete(&app, &headers, &session, &project, &f.csrf, t).await
}

/// `GET /ui/projects/{project}/packages/{name}/{version}/delete`.
pub async fn confirm_delete_package(
    State(app): State<App>,
    session: Session,
    Path((project, name, version)): Path<(String, String, String)>,
) -> Result<Markup, WebError> {
    let t = Target::Package(name, version);
    confirm_page(&app, &session, &project, &t, None).await
}

/// `POST /ui/projects/{project}/packages/{name}/{version}/delete`.
pub async fn delete_package(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Path((project, name, version)): Path<(String, String, String)>,
    Form(f): Form<DeleteForm>,
) -> Result<Response, WebError> {
    let t = Target::Package(name, version);
    do_delete(&app, &headers, &session, &project, &f.csrf, t).await
}

/// `GET /ui/projects/{project}/packages/{name}/{version}/export`: the package as the API's
/// download answers it (a `.tar.gz` in the upload format: the package, its applications, the
/// registries they use without secrets, its artifacts).
pub async fn export_package(
    State(app): State<App>,
    session: Session,
    Path((project, name, version)): Path<(String, String, String)>,
) -> Result<Response, WebError> {
    let ctx = session.ctx(&app, &project).await?;
    let export = app.export_package(&ctx, &name, &version).await?;
    // The file name is made of a catalog name and version (validated characters), quoted.
    let file_name: String = export
        .file_name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
        .collect();
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\""))
        .map_err(|e| AppError::Internal(e.to_string()))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/gzip"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from(export.bytes),
    )
        .into_response())
}
