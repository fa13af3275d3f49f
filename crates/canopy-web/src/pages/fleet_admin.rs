//! Changing the fleet from the console: an edge's labels, and the enrollment tokens edges join
//! with.
//!
//! Both are the app layer's own operations (`App::label_edge`, `App::create_enrollment_token`,
//! `App::list_enrollment_tokens`, `App::revoke_enrollment_token`, as the API's
//! `/canopy/v1/projects/{p}/edges/{edge}/labels` and `.../enrollment-tokens`), which require
//! deployment write access (`<project>_ao-rw`): read-only users get no controls, and a form
//! they forge is refused by the app layer (403).
//!
//! **A token's secret is shown once**: in the page that answers the create `POST` (never in a
//! redirect, a URL or a later page; the app layer keeps only its hash), with the exact
//! `canopy agent` command to run on the edge, built from the server's public URL (or the
//! address the browser used).

use std::collections::BTreeMap;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use canopy_server::App;
use canopy_server::app::{Access, AppError, CreateEnrollmentToken};
use maud::{Markup, html};
use serde::Deserialize;
use time::OffsetDateTime;

use super::{Frame, Section, project_path, segment, state, when};
use crate::CSRF_FIELD;
use crate::error::WebError;
use crate::security::same_origin;
use crate::session::Session;

/// Where an edge's agent keeps its state (as `canopy enroll-token create` prints it).
const AGENT_DATA_DIR: &str = "/var/lib/canopy-agent";

/// Longest lifetime offered in the form, in days (the app layer's limit is one year).
const MAX_TTL_DAYS: u64 = 365;

fn labels_path(project: &str, edge: &str) -> String {
    project_path(project, &format!("edges/{}/labels", segment(edge)))
}

fn tokens_path(project: &str) -> String {
    project_path(project, "enrollment-tokens")
}

/// Labels as the form shows them: one `key=value` per line.
fn labels_text(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

/// Parses the form's lines (blank lines ignored); a line without `=` is an error naming it.
fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!(
                "labels: line {} ({line:?}) is not key=value",
                n + 1
            ));
        };
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// `GET /ui/projects/{project}/edges/{id}/labels`: the form.
pub async fn edit_labels(
    State(app): State<App>,
    session: Session,
    Path((project, id)): Path<(String, String)>,
) -> Result<Markup, WebError> {
    let ctx = session.ctx(&app, &project).await?;
    let e = app.get_edge(&ctx, &id)?;
    ctx.require(Access::FleetWrite)?;
    let frame = Frame::load(&app, &session, &project, Section::Edges).await?;
    Ok(labels_page(
        &frame,
        &session,
        &project,
        &e.id,
        &e.name,
        &labels_text(&e.labels),
        None,
    ))
}

fn labels_page(
    frame: &Frame,
    session: &Session,
    project: &str,
    id: &str,
    name: &str,
    text: &str,
    error: Option<&str>,
) -> Markup {
    frame.page(
        &format!("Labels of {name}"),
        html! {
            p { a href=(project_path(project, &format!("edges/{}", segment(id)))) { "← " (name) } }
            h1 { "Labels of " (name) }
            @if let Some(e) = error { p.error #labels-error role="alert" { (e) } }
            form.card.narrow method="post" action=(labels_path(project, id)) {
                input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
                label for="labels" { "Labels, one " code { "key=value" } " per line" }
                textarea #labels name="labels" rows="8" aria-describedby="labels-help"
                    aria-invalid=[error.map(|_| "true")] { (text) }
                p.muted #labels-help {
                    "Remove a line to remove its label. Deployments that target labels follow the change at once."
                }
                div.actions {
                    button #save-labels type="submit" { "Save labels" }
                    a.button.secondary href=(project_path(project, &format!("edges/{}", segment(id)))) { "Cancel" }
                }
            }
        },
    )
}

/// The labels form.
#[derive(Deserialize)]
pub struct LabelsForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    labels: String,
}

/// `POST /ui/projects/{project}/edges/{id}/labels`: replaces the edge's labels with the form's.
pub async fn save_labels(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Path((project, id)): Path<(String, String)>,
    Form(form): Form<LabelsForm>,
) -> Result<Response, WebError> {
    same_origin(&Method::POST, &headers, app.public_url())?;
    session.check_csrf(&form.csrf)?;
    let ctx = session.ctx(&app, &project).await?;
    let e = app.get_edge(&ctx, &id)?;
    let result = match parse_labels(&form.labels) {
        Ok(wanted) => {
            let remove = e
                .labels
                .keys()
                .filter(|k| !wanted.contains_key(*k))
                .cloned()
                .collect();
            app.label_edge(&ctx, &e.id, wanted, remove)
                .await
                .map_err(WebError::from)
        }
        Err(m) => Err(WebError::App(AppError::Invalid(m))),
    };
    match result {
        Ok(_) => Ok(Redirect::to(&project_path(
            &project,
            &format!("edges/{}", segment(&e.id)),
        ))
        .into_response()),
        // Not allowed: the error page. Invalid: the form again, with the server's error.
        Err(err) => {
            let (status, message) = err.status_and_message();
            if status != StatusCode::BAD_REQUEST {
                return Ok((status, super::error_page(status, &message)).into_response());
            }
            let frame = Frame::load(&app, &session, &project, Section::Edges).await?;
            let page = labels_page(
                &frame,
                &session,
                &project,
                &e.id,
                &e.name,
                &form.labels,
                Some(&message),
            );
            Ok((status, page).into_response())
        }
    }
}

/// `GET /ui/projects/{project}/enrollment-tokens`: the list and the create form.
pub async fn tokens(
    State(app): State<App>,
    session: Session,
    Path(project): Path<String>,
) -> Result<Markup, WebError> {
    tokens_page(&app, &session, &project, None).await
}

async fn tokens_page(
    app: &App,
    session: &Session,
    project: &str,
    notice: Option<Markup>,
) -> Result<Markup, WebError> {
    let ctx = session.ctx(app, project).await?;
    let tokens = app.list_enrollment_tokens(&ctx).await?;
    let frame = Frame::load(app, session, project, Section::EnrollmentTokens).await?;
    let now = OffsetDateTime::now_utc();
    Ok(frame.page(
        "Enrollment tokens",
        html! {
            h1 { "Enrollment tokens" }
            @if let Some(n) = notice { (n) }
            p.muted { "An edge joins this project by running " code { "canopy agent" } " once with a token. Its secret is shown only when it is created." }
            h2 { "New token" }
            form.card.narrow #new-token method="post" action=(tokens_path(project)) {
                input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
                label for="description" { "Description" }
                input #description type="text" name="description" maxlength="200" placeholder="e.g. store 12 rollout";
                label for="ttl_days" { "Valid for (days, at most " (MAX_TTL_DAYS) ")" }
                input #ttl_days type="number" name="ttl_days" min="1" max=(MAX_TTL_DAYS) value="1";
                label for="max_uses" { "Edges that may enroll with it (0: any number until it expires)" }
                input #max_uses type="number" name="max_uses" min="0" value="0";
                div.actions { button #create-token type="submit" { "Create token" } }
            }
            h2 { "Tokens (" (tokens.len()) ")" }
            @if tokens.is_empty() {
                p.muted #no-tokens { "No enrollment tokens." }
            } @else {
                div.scroll {
                    table.all-columns #tokens {
                        thead { tr { th { "Description" } th { "State" } th { "" } th { "Uses" } th { "Expires" } th { "Id" } } }
                        tbody {
                            @for t in &tokens {
                                tr {
                                    td { (t.description) }
                                    td { (state(&t.state)) }
                                    td {
                                        @if t.state == "ACTIVE" {
                                            form method="post" action=(format!("{}/{}/revoke", tokens_path(project), segment(&t.id))) {
                                                input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
                                                button.danger.small type="submit" aria-label=(format!("revoke token {}", t.description)) { "Revoke" }
                                            }
                                        }
                                    }
                                    td { (t.uses) @if t.max_uses > 0 { " / " (t.max_uses) } }
                                    td title=(when(Some(t.expire_time))) {
                                        @if t.expire_time > now { (when(Some(t.expire_time))) } @else { span.muted { "expired" } }
                                    }
                                    td.muted { (t.id) }
                                }
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// The create form.
#[derive(Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    ttl_days: String,
    #[serde(default)]
    max_uses: String,
}

fn whole(field: &str, v: &str, default: u64) -> Result<u64, AppError> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(default);
    }
    v.parse()
        .map_err(|_| AppError::Invalid(format!("{field} {v:?} is not a whole number")))
}

/// `POST /ui/projects/{project}/enrollment-tokens`: creates a token and answers with the one
/// page that shows its secret.
pub async fn create_token(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Path(project): Path<String>,
    Form(form): Form<CreateForm>,
) -> Result<Response, WebError> {
    same_origin(&Method::POST, &headers, app.public_url())?;
    session.check_csrf(&form.csrf)?;
    let ctx = session.ctx(&app, &project).await?;
    let req = (|| {
        let days = whole("valid for (days)", &form.ttl_days, 1)?;
        if days == 0 || days > MAX_TTL_DAYS {
            return Err(AppError::Invalid(format!(
                "valid for (days) {days}: must be 1 to {MAX_TTL_DAYS}"
            )));
        }
        Ok(CreateEnrollmentToken {
            description: form.description.trim().to_string(),
            ttl_seconds: Some(days * 86_400),
            max_uses: whole("edges that may enroll", &form.max_uses, 0)?,
        })
    })();
    let created = match req {
        Ok(req) => app.create_enrollment_token(&ctx, req).await,
        Err(e) => Err(e),
    };
    let created = match created {
        Ok(c) => c,
        Err(e) => {
            let (status, message) = WebError::from(e).status_and_message();
            if status != StatusCode::BAD_REQUEST {
                return Ok((status, super::error_page(status, &message)).into_response());
            }
            let notice = html! { p.error #token-error role="alert" { (message) } };
            let page = tokens_page(&app, &session, &project, Some(notice)).await?;
            return Ok((status, page).into_response());
        }
    };
    let server = server_url(&app, &headers);
    let command = agent_command(&server, app.server_pin(), &created.secret);
    let notice = html! {
        section.card.secret-once #created-token role="status" {
            h2 { "Token created: copy it now" }
            p { "This is the only time the secret is shown. Run this on the edge:" }
            pre #agent-command { code { (command) } }
            p { "The secret alone: " code #token-secret { (created.secret) } }
            @if server.starts_with("http://127.") || server.contains("//localhost") {
                p.muted { "This server's address is a loopback one: an edge on another machine needs the address it reaches the server at (set " code { "--public-url" } ")." }
            }
        }
    };
    let page = tokens_page(&app, &session, &project, Some(notice)).await?;
    // The secret is in this answer only: never stored by the browser's cache.
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        page,
    )
        .into_response())
}

/// The URL edges reach the server at: its public URL when configured, else the address the
/// browser used (`Host`), with the scheme the server speaks.
fn server_url(app: &App, headers: &HeaderMap) -> String {
    if let Some(u) = app.public_url() {
        return u.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:7070");
    let scheme = if app.serves_tls() { "https" } else { "http" };
    format!("{scheme}://{host}")
}

/// Quotes `s` for a POSIX shell when it holds anything but plainly safe characters.
fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:@%+=,".contains(c));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The command that enrolls an edge (as `canopy enroll-token create` prints it), pinning the
/// server's self-signed certificate when `pin` is given.
pub fn agent_command(server: &str, pin: Option<&str>, secret: &str) -> String {
    let pin = pin
        .map(|fp| format!(" --server-fingerprint {}", shell_quote(fp)))
        .unwrap_or_default();
    format!(
        "canopy agent --server {}{pin} --enroll-token {} --data-dir {AGENT_DATA_DIR}",
        shell_quote(server),
        shell_quote(secret)
    )
}

/// The revoke form.
#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /ui/projects/{project}/enrollment-tokens/{id}/revoke`.
pub async fn revoke_token(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Path((project, id)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, WebError> {
    same_origin(&Method::POST, &headers, app.public_url())?;
    session.check_csrf(&form.csrf)?;
    let ctx = session.ctx(&app, &project).await?;
    app.revoke_enrollment_token(&ctx, &id).await?;
    Ok(Redirect::to(&tokens_path(&project)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_bad_lines_are_named() {
        let l = parse_labels("site=a\n\n zone = b \n").unwrap();
        assert_eq!(labels_text(&l), "site=a\nzone=b\n");
        let e = parse_labels("site=a\nnonsense\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("nonsense"), "{e}");
    }

    #[test]
    fn the_agent_command_is_quoted_for_a_shell() {
        assert_eq!(
            agent_command("https://10.0.0.5:7070", None, "cnt_abc"),
            "canopy agent --server https://10.0.0.5:7070 --enroll-token cnt_abc --data-dir /var/lib/canopy-agent"
        );
        assert_eq!(
            agent_command("https://10.0.0.5:7070", Some("sha256:ab12"), "cnt_abc"),
            "canopy agent --server https://10.0.0.5:7070 --server-fingerprint sha256:ab12 --enroll-token cnt_abc --data-dir /var/lib/canopy-agent"
        );
        assert!(agent_command("https://x/a b", None, "cnt_abc").contains("'https://x/a b'"));
    }
}
