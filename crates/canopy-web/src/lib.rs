//! Canopy's web console: HTML pages rendered on the server over the control plane's app layer,
//! served at `/` and under `/ui/` by `canopy server` (and so by `canopy up` and the test
//! harness). See `docs/UI.md`. (Unknown paths under `/ui/` get the console's HTML 404 page.)
//!
//! **Why a crate of its own.** The console has one job, pages for people, and it must not be a
//! second way into the fleet: every page calls the same app-layer functions as the REST API
//! (`canopy_server::App`), with the signed-in user's `Principal`, so authorization is exactly
//! the API's. It depends on `canopy-server` (never the reverse, so no cycle); the binary and
//! `canopy-testkit` hand [`router`] to `canopy_server::Server::with_console`, which mounts it
//! inside the server's audit, authentication and rate-limit layers. The server's authentication
//! middleware finds the caller of a console request from its session cookie
//! (`canopy_server::http::SESSION_COOKIE`, accepted on console paths only); this crate issues
//! and clears that cookie, checks CSRF tokens and origins on every change, and sets the
//! security headers.
//!
//! **No build step, no Node.js.** Pages are [`maud`] templates compiled with the crate (every
//! value is escaped: what users typed is data, never markup); one hand-written style sheet
//! (`assets/canopy.css`) is compiled in and served under a content-hashed name with a long cache
//! lifetime. Every page works without script; the one script (`assets/upload.js`, drag and drop
//! onto the upload form) is a progressive enhancement, a file served the same way (the
//! Content-Security-Policy forbids inline script).
//!
//! Must not depend on: the agent, the client crate, the store directly (the app layer is the
//! only way to data).

mod assets;
mod error;
mod live;
mod novnc_files;
mod pages;
mod security;
mod session;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use canopy_server::App;

pub use assets::{stylesheet_path, upload_script_path};
// web-live: live updates of the deployments pages.
pub use assets::live_script_path;
pub use live::{GLOBAL as LIVE_STREAMS_GLOBAL, PER_USER as LIVE_STREAMS_PER_USER};
pub use session::{CSRF_FIELD, LOGIN_CSRF_COOKIE, csrf_token};

/// The sign-in page.
pub const LOGIN_PATH: &str = "/ui/login";

/// Largest form body the console accepts (sign-in, confirmations): forms are a few fields.
/// (The upload form takes the API's upload limit instead.)
pub const MAX_FORM_BODY: usize = 16 * 1024;

/// The console's routes, to be mounted by `canopy_server::Server::with_console`.
pub fn router() -> Router<App> {
    Router::new()
        .route("/", get(pages::home))
        .route(
            LOGIN_PATH,
            get(pages::login::show).post(pages::login::submit),
        )
        .route("/ui/logout", axum::routing::post(pages::login::logout))
        // OIDC sign-in (web-oidc).
        .route(pages::oidc::START_PATH, get(pages::oidc::start))
        .route(pages::oidc::CALLBACK_PATH, get(pages::oidc::callback))
        .route("/ui/switch", get(pages::switch_project))
        .route(
            "/ui/projects/{project}/deployments",
            get(pages::deployments::list),
        )
        .route(
            "/ui/projects/{project}/deployments/{id}",
            get(pages::deployments::show),
        )
        .route(
            "/ui/projects/{project}/deployments/{id}/delete",
            get(pages::deployments::confirm_delete).post(pages::deployments::delete),
        )
        .route("/ui/projects/{project}/edges", get(pages::edges::list))
        .route("/ui/projects/{project}/edges/{id}", get(pages::edges::show))
        .route(
            "/ui/projects/{project}/packages",
            get(pages::catalog::packages),
        )
        .route(
            "/ui/projects/{project}/packages/upload",
            get(pages::upload::show).post(pages::upload::submit).layer(
                // The API's upload body limit (the files are spooled to disk as they arrive).
                DefaultBodyLimit::max(canopy_server::http::MAX_UPLOAD_BODY),
            ),
        )
        .route(
            "/ui/projects/{project}/packages/{name}/{version}",
            get(pages::catalog::package),
        )
        .route(
            "/ui/projects/{project}/matching-edges",
            get(pages::deploy::matching_edges),
        )
        .route(
            "/ui/projects/{project}/packages/{name}/{version}/deploy",
            get(pages::deploy::show).post(pages::deploy::submit),
        )
        .route(
            "/ui/projects/{project}/applications",
            get(pages::catalog::applications),
        )
        .route(
            "/ui/projects/{project}/applications/{name}/{version}",
            get(pages::catalog::application),
        )
        .route(
            "/ui/projects/{project}/registries",
            get(pages::catalog::registries),
        )
        .route(
            "/ui/projects/{project}/registries/{name}",
            get(pages::catalog::registry),
        )
        // web-live: live updates, deployment edges filter, upgrade / update values / delete.
        .route("/ui/projects/{project}/live", get(live::stream))
        .layer(axum::Extension(std::sync::Arc::new(
            live::Streams::default(),
        )))
        .route(
            "/ui/projects/{project}/deployments/{id}/upgrade",
            get(pages::deployment_edit::upgrade_form).post(pages::deployment_edit::upgrade),
        )
        .route(
            "/ui/projects/{project}/deployments/{id}/values",
            get(pages::deployment_edit::values_form).post(pages::deployment_edit::update_values),
        )
        // end web-live
        .route("/ui/static/{file}", get(assets::serve))
        .merge(workloads_routes())
        // web-admin: edges' labels, enrollment tokens, catalog edits, administration, and the
        // console's own 404 and 429 pages.
        .merge(admin_routes())
        .layer(DefaultBodyLimit::max(MAX_FORM_BODY))
        .layer(axum::middleware::from_fn(pages::quality::rate_limited))
        .layer(axum::middleware::from_fn(security::headers))
}

/// The workloads pages, actions, consoles and logs (`pages::workloads`).
fn workloads_routes() -> Router<App> {
    use pages::workloads as w;
    const VM: &str = "/ui/projects/{project}/workloads/{app_id}/{edge}/vms/{vm}";
    const CONTAINER: &str = "/ui/projects/{project}/workloads/{app_id}/{edge}/containers/{name}";
    Router::new()
        .route(
            "/ui/projects/{project}/deployments/{id}/workloads",
            get(w::of_deployment),
        )
        .route(
            "/ui/projects/{project}/edges/{id}/workloads",
            get(w::of_edge),
        )
        .route(
            "/ui/projects/{project}/edges/{id}/pods/{namespace}/{pod}/delete",
            get(w::confirm_pod_delete).post(w::do_pod_delete),
        )
        .route(&format!("{VM}/console"), get(w::console_page))
        .route(&format!("{VM}/vnc"), get(w::vnc_socket))
        .route(&format!("{VM}/serial"), get(w::serial_page))
        .route(&format!("{VM}/serial/ws"), get(w::serial_socket))
        .route(&format!("{VM}/logs"), get(w::vm_logs_page))
        .route(&format!("{VM}/logs/stream"), get(w::vm_logs_stream))
        .route(
            &format!("{VM}/{{action}}"),
            get(w::confirm_vm_action).post(w::do_vm_action),
        )
        .route(&format!("{CONTAINER}/logs"), get(w::container_logs_page))
        .route(
            &format!("{CONTAINER}/logs/stream"),
            get(w::container_logs_stream),
        )
        .route(
            &format!("{}/{{*path}}", assets::novnc_base()),
            get(assets::serve_novnc),
        )
}

/// The routes of the web-admin pages (see `pages::{fleet_admin, catalog_edit, admin, quality}`).
fn admin_routes() -> Router<App> {
    use axum::routing::{any, post};
    use pages::{admin, catalog_edit, fleet_admin};
    Router::new()
        .route(
            "/ui/projects/{project}/edges/{id}/labels",
            get(fleet_admin::edit_labels).post(fleet_admin::save_labels),
        )
        .route(
            "/ui/projects/{project}/enrollment-tokens",
            get(fleet_admin::tokens).post(fleet_admin::create_token),
        )
        .route(
            "/ui/projects/{project}/enrollment-tokens/{id}/revoke",
            post(fleet_admin::revoke_token),
        )
        .route(
            "/ui/projects/{project}/new-registry",
            get(catalog_edit::new_registry),
        )
        .route(
            "/ui/projects/{project}/registries",
            post(catalog_edit::create_registry),
        )
        .route(
            "/ui/projects/{project}/registries/{name}/edit",
            get(catalog_edit::edit_registry).post(catalog_edit::update_registry),
        )
        .route(
            "/ui/projects/{project}/registries/{name}/delete",
            get(catalog_edit::confirm_delete_registry).post(catalog_edit::delete_registry),
        )
        .route(
            "/ui/projects/{project}/applications/{name}/{version}/delete",
            get(catalog_edit::confirm_delete_application).post(catalog_edit::delete_application),
        )
        .route(
            "/ui/projects/{project}/packages/{name}/{version}/delete",
            get(catalog_edit::confirm_delete_package).post(catalog_edit::delete_package),
        )
        .route(
            "/ui/projects/{project}/packages/{name}/{version}/export",
            get(catalog_edit::export_package),
        )
        .route(admin::ADMIN_PATH, get(admin::tenancy))
        .route("/ui/admin/orgs", post(admin::create_org))
        .route("/ui/admin/orgs/{org}/delete", post(admin::delete_org))
        .route("/ui/admin/projects", post(admin::create_project))
        .route(
            "/ui/admin/projects/{project}/delete",
            post(admin::delete_project),
        )
        .route(
            admin::USERS_PATH,
            get(admin::users).post(admin::create_user),
        )
        .route("/ui/admin/users/{user}", get(admin::user))
        .route("/ui/admin/users/{user}/roles", post(admin::set_roles))
        .route("/ui/admin/users/{user}/password", post(admin::set_password))
        .route("/ui/admin/users/{user}/delete", post(admin::delete_user))
        .route(
            admin::ALL_TOKENS_PATH,
            get(admin::all_tokens).post(admin::create_any_token),
        )
        .route(
            "/ui/admin/tokens/{id}/revoke",
            post(admin::revoke_any_token),
        )
        .route(
            admin::MY_TOKENS_PATH,
            get(admin::my_tokens).post(admin::create_my_token),
        )
        .route("/ui/tokens/{id}/revoke", post(admin::revoke_my_token))
        .route(admin::AUDIT_PATH, get(admin::audit))
        .route("/ui/{*rest}", any(pages::quality::not_found))
}
