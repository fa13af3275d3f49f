//! Uploading to the catalog: a form with a file input (several YAML files and artifacts, or one
//! `.tar.gz`) posted as `multipart/form-data` to the console, which hands the files to the same
//! app-layer upload as the API's bulk upload (`App::upload_spooled`), with the same limits: the
//! body is received into the upload spool by `canopy_server::http::spool_multipart_files`
//! (the API's own reader: at most `MAX_UPLOAD_FILES` files, `MAX_UPLOAD_BODY` bytes), then
//! parsed and applied all or nothing.
//!
//! Checks, in order: origin, session, then the CSRF token, which must be the body's *first*
//! part (the form puts it before the file input, and browsers send parts in document order), so
//! nothing of a forged post is spooled; then `App::upload_spool` checks catalog write access and
//! the spool's room before any file is read. The server's error (which names the file and the
//! field) is shown in place above the form; success lists what was created or updated.

use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use canopy_server::App;
use canopy_server::app::{Access, AppError, ChangeSummary};
use canopy_server::http::{next_multipart_field, spool_multipart_files};
use maud::{Markup, html};

use super::catalog::{application_path, package_path};
use super::{Frame, Section, project_path};
use crate::CSRF_FIELD;
use crate::error::WebError;
use crate::security::same_origin;
use crate::session::Session;

/// The console path of the upload form of `project`.
pub fn upload_path(project: &str) -> String {
    project_path(project, "packages/upload")
}

/// Longest CSRF part accepted (a token is 43 bytes).
const MAX_CSRF_PART: usize = 256;

fn form(project: &str, csrf: &str, error: Option<&str>) -> Markup {
    html! {
        p { a href=(project_path(project, "packages")) { "← Packages" } }
        h1 { "Upload to the catalog" }
        @if let Some(e) = error {
            p.error #upload-error role="alert" { (e) }
        }
        div.card {
            p {
                "Choose a package's files (its deployment package and application YAML files, "
                "values files, templates and artifacts), or one " code { ".tar.gz" } " of them. "
                "Everything is checked first; nothing is stored if any file is wrong."
            }
            form #upload-form method="post" action=(upload_path(project)) enctype="multipart/form-data" {
                // First, so the server checks it before reading any file.
                input type="hidden" name=(CSRF_FIELD) value=(csrf);
                label for="files" { "Files" }
                input #files type="file" name="files" multiple required;
                // Filled in by the drag-and-drop script (no text without it).
                p.muted #dropped {}
                div.actions { button #upload type="submit" { "Upload" } }
            }
        }
        // Drag and drop: a progressive enhancement, a file from this server (no inline script).
        script src=(crate::assets::upload_script_path()) defer {}
    }
}

/// `GET /ui/projects/{project}/packages/upload`: the form (catalog writers only).
pub async fn show(
    State(app): State<App>,
    session: Session,
    Path(project): Path<String>,
) -> Result<Markup, WebError> {
    let ctx = session.ctx(&app, &project).await?;
    // Say so now rather than after the files are sent (the upload checks again).
    ctx.require(Access::CatalogWrite)?;
    let frame = Frame::load(&app, &session, &project, Section::Packages).await?;
    Ok(frame.page("Upload", form(&project, &session.csrf, None)))
}

/// `POST /ui/projects/{project}/packages/upload`.
pub async fn submit(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Path(project): Path<String>,
    mut body: Multipart,
) -> Result<Response, WebError> {
    same_origin(&Method::POST, &headers, app.public_url())?;
    session.check_csrf(&csrf_part(&mut body).await?)?;
    let ctx = session.ctx(&app, &project).await?;
    let frame = Frame::load(&app, &session, &project, Section::Packages).await?;
    let result = async {
        let spool = app.upload_spool(&ctx)?;
        let files = spool_multipart_files(spool, &mut body).await?;
        let names: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
        let changes = app.upload_spooled(&ctx, files).await?;
        Ok::<_, AppError>((names, changes))
    }
    .await;
    match result {
        Ok((names, changes)) => Ok(frame
            .page("Uploaded", uploaded(&project, &names, &changes))
            .into_response()),
        Err(e) => {
            let (status, message) = WebError::from(e).status_and_message();
            // Catalog write access is checked first: a read-only user gets the error page, not
            // a form they cannot use.
            if status == StatusCode::FORBIDDEN {
                return Ok((status, super::error_page(status, &message)).into_response());
            }
            Ok((
                status,
                frame.page("Upload", form(&project, &session.csrf, Some(&message))),
            )
                .into_response())
        }
    }
}

/// The CSRF token, which must be the first part of the body (see the module doc).
async fn csrf_part(body: &mut Multipart) -> Result<String, WebError> {
    let missing = || {
        WebError::Csrf(
            "this form has expired or did not come from this session: reload the page and try again"
                .into(),
        )
    };
    let mut field = match next_multipart_field(body).await? {
        Some(f) if f.name() == Some(CSRF_FIELD) => f,
        _ => return Err(missing()),
    };
    let mut value = Vec::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| AppError::Invalid(format!("invalid multipart body: {}", e.body_text())))?
    {
        if value.len() + chunk.len() > MAX_CSRF_PART {
            return Err(missing());
        }
        value.extend_from_slice(&chunk);
    }
    String::from_utf8(value).map_err(|_| missing())
}

/// What an upload created, updated or left unchanged.
fn uploaded(project: &str, names: &[String], changes: &[ChangeSummary]) -> Markup {
    let link = |c: &ChangeSummary| {
        let (name, version) = c.key.split_once(':').unwrap_or((&c.key, ""));
        match c.kind.as_str() {
            "deployment-package" => Some(package_path(project, name, version)),
            "application" => Some(application_path(project, name, version)),
            "registry" => Some(project_path(
                project,
                &format!("registries/{}", super::segment(name)),
            )),
            _ => None,
        }
    };
    html! {
        p { a href=(project_path(project, "packages")) { "← Packages" } }
        h1 { "Uploaded" }
        p.notice role="status" #upload-done {
            "Uploaded " (names.len()) " file(s): " (names.join(", ")) "."
        }
        table #changes {
            thead { tr { th { "Change" } th { "Kind" } th { "Name" } } }
            tbody {
                @for c in changes {
                    tr {
                        td { (c.action) }
                        td { (c.kind) }
                        td { @if let Some(href) = link(c) { a href=(href) { (c.key) } } @else { (c.key) } }
                    }
                }
            }
        }
        p { a.button href=(upload_path(project)) { "Upload more" } }
    }
}
