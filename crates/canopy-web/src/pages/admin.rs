//! Administration: organizations and projects, built-in users (create, roles, password,
//! delete), API tokens, and the audit log.
//!
//! Every page and change calls the app-layer function the `/v1/orgs`, `/v1/projects`,
//! `/canopy/v1/users`, `/canopy/v1/tokens` and `/canopy/v1/audit` endpoints call, with the
//! signed-in user's identity, so authorization is theirs: administration needs `canopy-admin`
//! (the navigation shows it only to administrators; a forged form is refused by the app layer
//! with 403). Two parts are not administrators' only, as in the API: every built-in user
//! manages their own API tokens ([`MY_TOKENS_PATH`]), and a project's writers may read that
//! project's audit log (the app layer says so when the filter names no such project).
//!
//! Secrets: a password typed into a form is sent once and never written back into a page,
//! even when the server refuses it; a new API token's secret is shown once, in the page that
//! answers the create `POST` (never in a redirect, a URL or a later page).

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use canopy_server::App;
use canopy_server::app::{AppError, AuditQuery, PrincipalKind};
use maud::{Markup, html};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::quality::first_project;
use super::{Frame, Section, query, segment, when};
use crate::CSRF_FIELD;
use crate::error::WebError;
use crate::security::same_origin;
use crate::session::Session;

/// Organizations and projects (the administration's first page).
pub const ADMIN_PATH: &str = "/ui/admin";
/// Built-in users.
pub const USERS_PATH: &str = "/ui/admin/users";
/// Every user's API tokens (administrators).
pub const ALL_TOKENS_PATH: &str = "/ui/admin/tokens";
/// The audit log.
pub const AUDIT_PATH: &str = "/ui/admin/audit";
/// The signed-in user's own API tokens.
pub const MY_TOKENS_PATH: &str = "/ui/tokens";

/// Audit entries per page.
pub const AUDIT_PAGE_SIZE: u32 = 50;

/// Which administration page is current.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tab {
    Tenancy,
    Users,
    Tokens,
    Audit,
}

async fn frame(app: &App, session: &Session) -> Result<Frame, WebError> {
    let project = first_project(app, session).await;
    Frame::load(app, session, &project, Section::Admin).await
}

/// The administration's own navigation (administrators), above each page.
fn tabs(session: &Session, current: Tab) -> Markup {
    let cur = |t: Tab| (t == current).then_some("page");
    html! {
        @if session.principal.is_admin() {
            nav.tabs aria-label="administration" {
                a href=(ADMIN_PATH) aria-current=[cur(Tab::Tenancy)] { "Organizations & projects" }
                a href=(USERS_PATH) aria-current=[cur(Tab::Users)] { "Users" }
                a href=(ALL_TOKENS_PATH) aria-current=[cur(Tab::Tokens)] { "API tokens" }
                a href=(AUDIT_PATH) aria-current=[cur(Tab::Audit)] { "Audit log" }
            }
        }
    }
}

/// A failed change: the error page with the server's status and message.
fn failed(err: impl Into<WebError>) -> Response {
    let (status, message) = err.into().status_and_message();
    (status, super::error_page(status, &message)).into_response()
}

/// Checks the origin and the CSRF token of a POST.
fn check_post(
    app: &App,
    headers: &HeaderMap,
    session: &Session,
    csrf: &str,
) -> Result<(), WebError> {
    same_origin(&Method::POST, headers, app.public_url())?;
    session.check_csrf(csrf)
}

// ------------------------------------------------------------------ organizations and projects

/// A notice or error carried to a page (`?done=` after a redirect).
#[derive(Debug, Default, Deserialize)]
pub struct Done {
    #[serde(default)]
    done: String,
}

/// `GET /ui/admin`: organizations and projects.
pub async fn tenancy(
    State(app): State<App>,
    session: Session,
    Query(done): Query<Done>,
) -> Result<Response, WebError> {
    Ok(tenancy_page(&app, &session, &done.done, None)
        .await?
        .into_response())
}

async fn tenancy_page(
    app: &App,
    session: &Session,
    done: &str,
    error: Option<&str>,
) -> Result<Markup, WebError> {
    session.principal.require_admin()?;
    let orgs = app.list_orgs(&session.principal).await?;
    let projects = app.list_projects(&session.principal).await?;
    let frame = frame(app, session).await?;
    let csrf = &session.csrf;
    Ok(frame.page(
        "Administration",
        html! {
            (tabs(session, Tab::Tenancy))
            h1 { "Organizations and projects" }
            @if !done.is_empty() { p.notice role="status" { (done) } }
            @if let Some(e) = error { p.error #admin-error role="alert" { (e) } }
            h2 { "Organizations (" (orgs.len()) ")" }
            div.scroll {
                table.all-columns #orgs {
                    thead { tr { th { "Name" } th { "" } th { "Description" } th { "Created" } } }
                    tbody {
                        @for o in &orgs {
                            tr {
                                td { (o.name) }
                                td {
                                    form method="post" action=(format!("{ADMIN_PATH}/orgs/{}/delete", segment(&o.name))) {
                                        input type="hidden" name=(CSRF_FIELD) value=(csrf);
                                        button.danger.small type="submit" aria-label=(format!("delete organization {}", o.name)) { "Delete" }
                                    }
                                }
                                td { (o.description) }
                                td { (when(OffsetDateTime::from_unix_timestamp(o.status.time_stamp).ok())) }
                            }
                        }
                    }
                }
            }
            form.card.narrow #new-org method="post" action=(format!("{ADMIN_PATH}/orgs")) {
                input type="hidden" name=(CSRF_FIELD) value=(csrf);
                label for="org-name" { "New organization" }
                input #org-name type="text" name="name" required;
                label for="org-description" { "Description" }
                input #org-description type="text" name="description";
                div.actions { button type="submit" { "Create organization" } }
            }
            h2 { "Projects (" (projects.len()) ")" }
            div.scroll {
                table.all-columns #projects {
                    thead { tr { th { "Name" } th { "Organization" } th { "Description" } th { "Delete (type its name)" } } }
                    tbody {
                        @for p in &projects {
                            tr {
                                td { a href=(super::project_path(&p.name, "deployments")) { (p.name) } }
                                td { (p.org.as_deref().unwrap_or("")) }
                                td { (p.description) }
                                td {
                                    form.inline method="post" action=(format!("{ADMIN_PATH}/projects/{}/delete", segment(&p.name))) {
                                        input type="hidden" name=(CSRF_FIELD) value=(csrf);
                                        input type="text" name="confirm" required placeholder=(p.name)
                                            aria-label=(format!("type {} to delete the project and everything in it", p.name));
                                        button.danger.small type="submit" { "Delete" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            form.card.narrow #new-project method="post" action=(format!("{ADMIN_PATH}/projects")) {
                input type="hidden" name=(CSRF_FIELD) value=(csrf);
                label for="project-name" { "New project" }
                input #project-name type="text" name="name" required;
                label for="project-org" { "Organization" }
                select #project-org name="org" {
                    @for o in &orgs { option value=(o.name) selected[o.name == canopy_server::app::DEFAULT_ORG] { (o.name) } }
                }
                label for="project-description" { "Description" }
                input #project-description type="text" name="description";
                div.actions { button type="submit" { "Create project" } }
            }
        },
    ))
}

/// The create forms of organizations and projects.
#[derive(Deserialize)]
pub struct TenancyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    org: String,
    #[serde(default)]
    confirm: String,
}

async fn tenancy_result(
    app: &App,
    session: &Session,
    result: Result<String, AppError>,
) -> Result<Response, WebError> {
    match result {
        Ok(done) => {
            Ok(Redirect::to(&format!("{ADMIN_PATH}{}", query(&[("done", &done)]))).into_response())
        }
        Err(e) => {
            let (status, message) = WebError::from(e).status_and_message();
            if status == StatusCode::FORBIDDEN {
                return Ok(failed(AppError::Forbidden(message)));
            }
            let page = tenancy_page(app, session, "", Some(&message)).await?;
            Ok((status, page).into_response())
        }
    }
}

/// `POST /ui/admin/orgs`.
pub async fn create_org(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Form(f): Form<TenancyForm>,
) -> Result<Response, WebError> {
    check_post(&app, &headers, &session, &f.csrf)?;
    let name = f.name.trim();
    let r = app
        .put_org(&session.principal, name, f.description.trim(), false)
        .await
        .map(|_| format!("Created organization {name}."));
    tenancy_result(&app, &session, r).await
}

/// `POST /ui/admin/orgs/{org}/delete`.
pub async fn delete_org(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Path(org): Path<String>,
    Form(f): Form<TenancyForm>,
) -> Result<Response, WebError> {
    check_post(&app, &headers, &session, &f.csrf)?;
    let r = app
        .delete_org(&session.principal, &org)
        .await
        .map(|()| format!("Deleted organization {org}."));
    tenancy_result(&app, &session, r).await
}

/// `POST /ui/admin/projects`.
pub async fn create_project(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Form(f): Form<TenancyForm>,
) -> Result<Response, WebError> {
    check_post(&app, &headers, &session, &f.csrf)?;
    let name = f.name.trim();
    let org = Some(f.org.trim()).filter(|o| !o.is_empty());
    let r = app
        .put_project(&session.principal, name, org, f.description.trim(), false)
        .await
        .map(|_| format!("Created project {name}."));
    tenancy_result(&app, &session, r).await
}

/// `POST /ui/admin/projects/{project}/delete`: only when `confirm` repeats the name.
pub async fn delete_project(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Path(project): Path<String>,
    Form(f): Form<TenancyForm>,
) -> Result<Response, WebError> {
    check_post(&app, &headers, &session, &f.csrf)?;
    let r = if f.confirm.trim() != project {
        Err(AppError::Invalid(format!(
            "project {project} was not deleted: type its name to confirm"
        )))
    } else {
        app.delete_project(&session.principal, &project)
            .await
            .map(|()| format!("Deleted project {project} and everything in it."))
    };
    tenancy_result(&app, &session, r).await
}

// ------------------------------------------------------------------ users

/// `GET /ui/admin/users`.
pub async fn users(
    State(app): State<App>,
    session: Session,
    Query(done): Query<Done>,
) -> Result<Response, WebError> {
    Ok(
        users_page(&app, &session, &done.done, None, &UserForm::default())
            .await?
            .into_response(),
    )
}

async fn users_page(
    app: &App,
    session: &Session,
    done: &str,
    error: Option<&str>,
    typed: &UserForm,
) -> Result<Markup, WebError> {
    let users = app.list_users(&session.principal).await?;
    let frame = frame(app, session).await?;
    let csrf = &session.csrf;
    Ok(frame.page(
        "Users",
        html! {
            (tabs(session, Tab::Users))
            h1 { "Users" }
            @if !done.is_empty() { p.notice role="status" { (done) } }
            @if let Some(e) = error { p.error #admin-error role="alert" { (e) } }
            div.scroll {
                table.all-columns #users {
                    thead { tr { th { "Name" } th { "Roles" } th { "Password" } th { "Created" } } }
                    tbody {
                        @for u in &users {
                            tr {
                                td { a href=(format!("{USERS_PATH}/{}", segment(&u.name))) { (u.name) } }
                                td { @for r in &u.roles { span.label { (r) } } }
                                td { @if u.has_password { "set" } @else { span.muted { "none (tokens only)" } } }
                                td { (u.create_time) }
                            }
                        }
                    }
                }
            }
            h2 { "New user" }
            form.card.narrow #new-user method="post" action=(USERS_PATH) autocomplete="off" {
                input type="hidden" name=(CSRF_FIELD) value=(csrf);
                label for="user-name" { "Name" }
                input #user-name type="text" name="name" value=(typed.name) required;
                label for="user-roles" { "Roles, separated by commas or spaces" }
                input #user-roles type="text" name="roles" value=(typed.roles) aria-describedby="roles-help";
                p.muted #roles-help { "canopy-admin, or PROJECT_cat-r, PROJECT_cat-rw, PROJECT_ao-r, PROJECT_ao-rw" }
                label for="user-password" { "Password (leave blank for a user that signs in with API tokens only)" }
                input #user-password type="password" name="password" value="" autocomplete="new-password";
                div.actions { button #create-user type="submit" { "Create user" } }
            }
        },
    ))
}

/// The user forms (create, roles, password).
#[derive(Default, Deserialize)]
pub struct UserForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    roles: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    current_password: String,
}

impl std::fmt::Debug for UserForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserForm")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

fn roles_of(text: &str) -> Vec<String> {
    text.split([',', ' ', '\n', '\t'])
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect()
}

/// `POST /ui/admin/users`.
pub async fn create_user(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Form(f): Form<UserForm>,
) -> Result<Response, WebError> {
    check_post(&app, &headers, &session, &f.csrf)?;
    let name = f.name.trim().to_string();
    let password = Some(f.password.clone()).filter(|p| !p.is_empty());
    match app
        .create_user(&session.principal, &name, password, roles_of(&f.roles))
        .await
    {
        Ok(u) => Ok(Redirect::to(&format!(
            "{USERS_PATH}/{}{}",
            segment(&u.name),
            query(&[("done", &format!("Created user {}.", u.name))])
        ))
        .into_response()),
        Err(e) => {
            let (status, message) = WebError::from(e).status_and_message();
            if status == StatusCode::FORBIDDEN {
                return Ok(failed(AppError::Forbidden(message)));
            }
            // The password is not written back.
            let typed = UserForm {
                name,
                roles: f.roles.clone(),
                ..UserForm::default()
            };
            let page = users_page(&app, &session, "", Some(&message), &typed).await?;
            Ok((status, page).into_response())
        }
    }
}

/// `GET /ui/admin/users/{user}`: roles, password, delete.
pub async fn user(
    State(app): State<App>,
    session: Session,
    Path(name): Path<String>,
    Query(done): Query<Done>,
) -> Result<Response, WebError> {
    Ok(user_page(&app, &session, &name, &done.done, None, None)
        .await?
        .into_response())
}

async fn user_page(
    app: &App,
    session: &Session,
    name: &str,
    done: &str,
    error: Option<&str>,
    typed_roles: Option<&str>,
) -> Result<Markup, WebError> {
    let u = app.get_user(&session.principal, name).await?;
    let is_admin = session.principal.is_admin();
    let is_self =
        matches!(&session.principal.kind, PrincipalKind::User { user, .. } if *user == u.name);
    let frame = frame(app, session).await?;
    let csrf = &session.csrf;
    let base = format!("{USERS_PATH}/{}", segment(&u.name));
    let roles = typed_roles.map_or_else(|| u.roles.join(", "), str::to_string);
    Ok(frame.page(
        &format!("User {}", u.name),
        html! {
            (tabs(session, Tab::Users))
            @if is_admin { p { a href=(USERS_PATH) { "← Users" } } }
            h1 #user-title { "User " (u.name) }
            @if !done.is_empty() { p.notice role="status" { (done) } }
            @if let Some(e) = error { p.error #admin-error role="alert" { (e) } }
            dl.facts.card {
                dt { "Roles" } dd { @for r in &u.roles { span.label { (r) } } }
                dt { "Password" } dd { @if u.has_password { "set" } @else { "none (API tokens only)" } }
                dt { "Created" } dd { (u.create_time) }
                dt { "Changed" } dd { (u.update_time) }
            }
            @if is_admin {
                h2 { "Roles" }
                form.card.narrow #roles-form method="post" action=(format!("{base}/roles")) {
                    input type="hidden" name=(CSRF_FIELD) value=(csrf);
                    label for="roles" { "Roles, separated by commas or spaces" }
                    input #roles type="text" name="roles" value=(roles);
                    div.actions { button #save-roles type="submit" { "Save roles" } }
                }
            }
            h2 { @if is_self { "Change your password" } @else { "Reset password" } }
            form.card.narrow #password-form method="post" action=(format!("{base}/password")) autocomplete="off" {
                input type="hidden" name=(CSRF_FIELD) value=(csrf);
                @if is_self && u.has_password {
                    label for="current_password" { "Current password" }
                    input #current_password type="password" name="current_password" value="" autocomplete="current-password" required;
                }
                label for="password" { "New password" }
                input #password type="password" name="password" value="" autocomplete="new-password" required;
                div.actions { button #save-password type="submit" { "Set password" } }
            }
            @if is_admin && !is_self {
                h2 { "Delete" }
                form.card.narrow method="post" action=(format!("{base}/delete")) {
                    input type="hidden" name=(CSRF_FIELD) value=(csrf);
                    p { "Deletes the user and all their tokens (sessions end at once)." }
                    div.actions { button.danger #delete-user type="submit" { "Delete user " (u.name) } }
                }
            }
        },
    ))
}

async fn user_result(
    app: &App,
    session: &Session,
    name: &str,
    result: Result<String, AppError>,
    typed_roles: Option<&str>,
) -> Result<Response, WebError> {
    match result {
        Ok(done) => Ok(Redirect::to(&format!(
            "{USERS_PATH}/{}{}",
            segment(name),
            query(&[("done", &done)])
        ))
        .into_response()),
        Err(e) => {
            let (status, message) = WebError::from(e).status_and_message();
            if matches!(status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND) {
                return Ok(failed(WebError::App(if status == StatusCode::NOT_FOUND {
                    AppError::NotFound(message)
                } else {
                    AppError::Forbidden(message)
                })));
            }
            let page = user_page(app, session, name, "", Some(&message), typed_roles).await?;
            Ok((status, page).into_response())
        }
    }
}

/// `POST /ui/admin/users/{user}/roles`.
pub async fn set_roles(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Path(name): Path<String>,
    Form(f): Form<UserForm>,
) -> Result<Response, WebError> {
    check_post(&app, &headers, &session, &f.csrf)?;
    let r = app
        .update_user(
            &session.principal,
            &name,
            Some(roles_of(&f.roles)),
            None,
            None,
        )
        .await
        .map(|u| format!("Roles of {} saved.", u.name));
    user_result(&app, &session, &name, r, Some(&f.roles)).await
}

/// `POST /ui/admin/users/{user}/password`.
pub async fn set_password(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Path(name): Path<String>,
    Form(f): Form<UserForm>,
) -> Result<Response, WebError> {
    check_post(&app, &headers, &session, &f.csrf)?;
    let current = Some(f.current_password.clone()).filter(|p| !p.is_empty());
    let r = app
        .update_user(
            &session.principal,
            &name,
            None,
            Some(f.password.clone()),
            current,
        )
        .await
        .map(|u| format!("Password of {} set.", u.name));
    user_result(&app, &session, &name, r, None).await
}

/// `POST /ui/admin/users/{user}/delete`.
pub async fn delete_user(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Path(name): Path<String>,
    Form(f): Form<UserForm>,
) -> Result<Response, WebError> {
    check_post(&app, &headers, &session, &f.csrf)?;
    match app.delete_user(&session.principal, &name).await {
        Ok(()) => Ok(Redirect::to(&format!(
            "{USERS_PATH}{}",
            query(&[("done", &format!("Deleted user {name}."))])
        ))
        .into_response()),
        Err(e @ AppError::FailedPrecondition(_)) => {
            user_result(&app, &session, &name, Err(e), None).await
        }
        Err(e) => Ok(failed(e)),
    }
}

// ------------------------------------------------------------------ API tokens

/// `GET /ui/tokens`: the user's own API tokens.
pub async fn my_tokens(State(app): State<App>, session: Session) -> Result<Response, WebError> {
    Ok(tokens_page(&app, &session, false, None)
        .await?
        .into_response())
}

/// `GET /ui/admin/tokens`: every user's tokens (administrators).
pub async fn all_tokens(State(app): State<App>, session: Session) -> Result<Response, WebError> {
    Ok(tokens_page(&app, &session, true, None)
        .await?
        .into_response())
}

async fn tokens_page(
    app: &App,
    session: &Session,
    all: bool,
    notice: Option<Markup>,
) -> Result<Markup, WebError> {
    let tokens = app.list_api_tokens(&session.principal, all).await?;
    let frame = frame(app, session).await?;
    let csrf = &session.csrf;
    let path = if all { ALL_TOKENS_PATH } else { MY_TOKENS_PATH };
    let is_admin = session.principal.is_admin();
    Ok(frame.page(
        "API tokens",
        html! {
            (tabs(session, if all { Tab::Tokens } else { Tab::Users }))
            h1 { @if all { "API tokens of every user" } @else { "Your API tokens" } }
            @if let Some(n) = notice { (n) }
            @if !all && is_admin { p { a href=(ALL_TOKENS_PATH) { "Every user's tokens →" } } }
            p.muted { "API tokens authenticate scripts and the CLI (" code { "Authorization: Bearer ..." } "). Sessions of the console are listed too (kind session)." }
            div.scroll {
                table.all-columns #api-tokens {
                    thead { tr { th { "Name" } th { "User" } th { "" } th { "Kind" } th { "Created" } th { "Expires" } } }
                    tbody {
                        @for t in &tokens {
                            tr {
                                td { (t.name) }
                                td { (t.user) }
                                td {
                                    form method="post" action=(format!("{path}/{}/revoke", segment(&t.id))) {
                                        input type="hidden" name=(CSRF_FIELD) value=(csrf);
                                        button.danger.small type="submit" aria-label=(format!("revoke token {} of {}", t.name, t.user)) { "Revoke" }
                                    }
                                }
                                td { (t.kind) }
                                td { (t.create_time) }
                                td { @if t.expire_time.is_empty() { span.muted { "never" } } @else { (t.expire_time) } }
                            }
                        }
                    }
                }
            }
            h2 { "New API token" }
            form.card.narrow #new-api-token method="post" action=(path) {
                input type="hidden" name=(CSRF_FIELD) value=(csrf);
                label for="token-name" { "Name" }
                input #token-name type="text" name="name" required maxlength="128" placeholder="e.g. ci-pipeline";
                label for="token-days" { "Expires after (days; blank: never)" }
                input #token-days type="number" name="days" min="1" max="3650";
                @if is_admin {
                    label for="token-user" { "For user (blank: you)" }
                    input #token-user type="text" name="user";
                }
                div.actions { button #create-api-token type="submit" { "Create token" } }
            }
        },
    ))
}

/// The API token form.
#[derive(Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    days: String,
    #[serde(default)]
    user: String,
}

async fn create_token(
    app: &App,
    headers: &HeaderMap,
    session: &Session,
    f: TokenForm,
    all: bool,
) -> Result<Response, WebError> {
    check_post(app, headers, session, &f.csrf)?;
    let ttl = match f.days.trim() {
        "" => Ok(None),
        d => match d.parse::<u64>() {
            Ok(n) if (1..=3650).contains(&n) => {
                Ok(Some(std::time::Duration::from_secs(n * 86_400)))
            }
            _ => Err(AppError::Invalid(format!(
                "expires after (days) {d:?}: must be a whole number from 1 to 3650, or blank"
            ))),
        },
    };
    let user = Some(f.user.trim()).filter(|u| !u.is_empty());
    let issued = match ttl {
        Ok(ttl) => {
            app.create_api_token(&session.principal, f.name.trim(), ttl, user)
                .await
        }
        Err(e) => Err(e),
    };
    match issued {
        Ok(t) => {
            let notice = html! {
                section.card.secret-once #created-api-token role="status" {
                    h2 { "Token " (t.info.name) " created for " (t.info.user) ": copy it now" }
                    p { "This is the only time it is shown." }
                    pre { code #api-token-secret { (t.token) } }
                }
            };
            let page = tokens_page(app, session, all, Some(notice)).await?;
            Ok((
                StatusCode::CREATED,
                [(header::CACHE_CONTROL, "no-store")],
                page,
            )
                .into_response())
        }
        Err(e) => {
            let (status, message) = WebError::from(e).status_and_message();
            if status == StatusCode::FORBIDDEN {
                return Ok(failed(AppError::Forbidden(message)));
            }
            let notice = html! { p.error #admin-error role="alert" { (message) } };
            let page = tokens_page(app, session, all, Some(notice)).await?;
            Ok((status, page).into_response())
        }
    }
}

/// `POST /ui/tokens`.
pub async fn create_my_token(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Form(f): Form<TokenForm>,
) -> Result<Response, WebError> {
    create_token(&app, &headers, &session, f, false).await
}

/// `POST /ui/admin/tokens`.
pub async fn create_any_token(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Form(f): Form<TokenForm>,
) -> Result<Response, WebError> {
    session.principal.require_admin()?;
    create_token(&app, &headers, &session, f, true).await
}

/// The revoke form.
#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn revoke(
    app: &App,
    headers: &HeaderMap,
    session: &Session,
    id: &str,
    csrf: &str,
    back: &str,
) -> Result<Response, WebError> {
    check_post(app, headers, session, csrf)?;
    app.revoke_api_token(&session.principal, id).await?;
    Ok(Redirect::to(back).into_response())
}

/// `POST /ui/tokens/{id}/revoke`.
pub async fn revoke_my_token(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, WebError> {
    revoke(&app, &headers, &session, &id, &f.csrf, MY_TOKENS_PATH).await
}

/// `POST /ui/admin/tokens/{id}/revoke`.
pub async fn revoke_any_token(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, WebError> {
    revoke(&app, &headers, &session, &id, &f.csrf, ALL_TOKENS_PATH).await
}

// ------------------------------------------------------------------ audit log

/// The audit log's filters (all optional) and page.
#[derive(Debug, Default, Deserialize)]
pub struct AuditParams {
    /// Who: exactly this actor.
    #[serde(default)]
    actor: String,
    /// What: the action (`METHOD /route`) contains this text.
    #[serde(default)]
    action: String,
    /// What: exactly this outcome (`ok`, `Forbidden`, ...).
    #[serde(default)]
    result: String,
    /// Only calls in this project.
    #[serde(default)]
    project: String,
    /// When: at or after (`YYYY-MM-DDTHH:MM` in UTC, or RFC 3339).
    #[serde(default)]
    since: String,
    /// When: before.
    #[serde(default)]
    until: String,
    #[serde(default)]
    page: u64,
}

/// Outcomes offered in the filter (the audit log writes `ok` or the failure's reason phrase).
const OUTCOMES: &[&str] = &[
    "ok",
    "Bad Request",
    "Unauthorized",
    "Forbidden",
    "Not Found",
    "Conflict",
    "Precondition Failed",
    "Too Many Requests",
    "Internal Server Error",
];

/// A time from the filter: a `datetime-local` value (taken as UTC) or RFC 3339; the error
/// names the field.
fn filter_time(field: &str, v: &str) -> Result<Option<OffsetDateTime>, AppError> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    if let Ok(t) = OffsetDateTime::parse(v, &Rfc3339) {
        return Ok(Some(t));
    }
    let local = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    let local_s =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    time::PrimitiveDateTime::parse(v, &local)
        .or_else(|_| time::PrimitiveDateTime::parse(v, &local_s))
        .map(|t| Some(t.assume_utc()))
        .map_err(|_| {
            AppError::Invalid(format!(
                "invalid {field} {v:?}: must be a time such as 2026-12-07T15:30 (UTC)"
            ))
        })
}

impl AuditParams {
    fn audit_query(&self) -> Result<AuditQuery, AppError> {
        let text = |v: &str| Some(v.trim().to_string()).filter(|v| !v.is_empty());
        for (k, v) in [
            ("who", &self.actor),
            ("what", &self.action),
            ("outcome", &self.result),
            ("project", &self.project),
        ] {
            if v.chars().any(char::is_control) || v.len() > 256 {
                return Err(AppError::Invalid(format!(
                    "invalid {k}: at most 256 characters, without control characters"
                )));
            }
        }
        Ok(AuditQuery {
            project: text(&self.project),
            actor: text(&self.actor),
            action_contains: text(&self.action),
            result: text(&self.result),
            since: filter_time("since", &self.since)?,
            until: filter_time("until", &self.until)?,
            page_size: Some(AUDIT_PAGE_SIZE),
            offset: self.page.saturating_mul(u64::from(AUDIT_PAGE_SIZE)),
        })
    }

    fn link(&self, page: u64) -> String {
        let p = page.to_string();
        format!(
            "{AUDIT_PATH}{}",
            query(&[
                ("actor", &self.actor),
                ("action", &self.action),
                ("result", &self.result),
                ("project", &self.project),
                ("since", &self.since),
                ("until", &self.until),
                ("page", if page == 0 { "" } else { &p }),
            ])
        )
    }
}

/// `GET /ui/admin/audit`: the audit log, newest first, filtered and paged on the server.
pub async fn audit(
    State(app): State<App>,
    session: Session,
    Query(params): Query<AuditParams>,
) -> Result<Response, WebError> {
    let result = match params.audit_query() {
        Ok(q) => app.audit_log(&session.principal, &q).await,
        Err(e) => Err(e),
    };
    let (records, total, error) = match result {
        Ok((r, t)) => (r, t, None),
        Err(e) => {
            let (status, message) = WebError::from(e).status_and_message();
            (Vec::new(), 0, Some((status, message)))
        }
    };
    let frame = frame(&app, &session).await?;
    let offset = params.page.saturating_mul(u64::from(AUDIT_PAGE_SIZE));
    let more = offset + (records.len() as u64) < total;
    let page = frame.page(
        "Audit log",
        html! {
            (tabs(&session, Tab::Audit))
            h1 { "Audit log" }
            form.filter.audit-filter #audit-filter method="get" action=(AUDIT_PATH) role="search" {
                div {
                    label for="f-actor" { "Who" }
                    input #f-actor type="text" name="actor" value=(params.actor) placeholder="user name";
                }
                div {
                    label for="f-action" { "What (method or path)" }
                    input #f-action type="text" name="action" value=(params.action) placeholder="DELETE, registries, ...";
                }
                div {
                    label for="f-result" { "Outcome" }
                    select #f-result name="result" {
                        option value="" selected[params.result.is_empty()] { "any" }
                        @for o in OUTCOMES { option value=(o) selected[params.result == *o] { (o) } }
                    }
                }
                div {
                    label for="f-project" { "Project" }
                    input #f-project type="text" name="project" value=(params.project);
                }
                div {
                    label for="f-since" { "Since (UTC)" }
                    input #f-since type="datetime-local" name="since" value=(params.since);
                }
                div {
                    label for="f-until" { "Until (UTC)" }
                    input #f-until type="datetime-local" name="until" value=(params.until);
                }
                div.actions {
                    button #apply-filter type="submit" { "Filter" }
                    a.button.secondary href=(AUDIT_PATH) { "Clear" }
                }
            }
            @if let Some((status, message)) = &error {
                p.error #audit-error role="alert" { (status.as_u16()) ": " (message) }
            } @else {
                p.muted #audit-count { (total) " calls match, newest first." }
                div.scroll {
                    table.all-columns #audit {
                        thead { tr { th { "When (UTC)" } th { "Who" } th { "What" } th { "Outcome" } th { "Project" } th { "Path" } } }
                        tbody {
                            @for r in &records {
                                tr {
                                    td { (when(Some(r.at))) }
                                    td { (r.actor) }
                                    td { code { (r.action) } }
                                    td { @if r.result == "ok" { (r.result) } @else { span.state.state-ERROR { (r.status) " " (r.result) } } }
                                    td { (r.project) }
                                    td { code { (r.target) } }
                                }
                            }
                        }
                    }
                }
                nav.pager aria-label="pages" {
                    @if params.page > 0 { a href=(params.link(params.page - 1)) rel="prev" { "← Newer" } }
                    span.muted { "Page " (params.page + 1) }
                    @if more { a href=(params.link(params.page + 1)) rel="next" { "Older →" } }
                }
            }
        },
    );
    let status = error.map_or(StatusCode::OK, |(s, _)| s);
    Ok((status, page).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_times_are_utc_and_errors_name_the_field() {
        let t = filter_time("since", "2026-12-07T15:30").unwrap().unwrap();
        assert_eq!(when(Some(t)), "2026-12-07 15:30:00 UTC");
        let t = filter_time("until", "2026-12-07T15:30:00+01:00")
            .unwrap()
            .unwrap();
        assert_eq!(when(Some(t)), "2026-12-07 14:30:00 UTC");
        assert_eq!(filter_time("since", " ").unwrap(), None);
        let e = filter_time("until", "yesterday").unwrap_err().to_string();
        assert!(e.contains("until") && e.contains("yesterday"), "{e}");
    }

    #[test]
    fn roles_split_on_commas_and_spaces() {
        assert_eq!(
            roles_of("a_cat-r, b_ao-rw  canopy-admin\n"),
            vec!["a_cat-r", "b_ao-rw", "canopy-admin"]
        );
    }
}
