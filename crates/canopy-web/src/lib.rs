//! Canopy's web console: HTML pages rendered on the server over the control plane's app layer,
//! served at `/` and under `/ui/` by `canopy server` (and so by `canopy up` and the test
//! harness). See `docs/UI.md`. (Unknown paths under `/ui/` get the API's 404.)
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
        .layer(DefaultBodyLimit::max(MAX_FORM_BODY))
        .layer(axum::middleware::from_fn(security::headers))
}
