//! The console's one static file, its style sheet: compiled into the binary, served under a
//! name that carries a hash of its content (`/ui/static/canopy.<hash>.css`), so it can be
//! cached for a year and a new build's sheet is a new URL.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// The style sheet's content.
const CSS: &str = include_str!("../assets/canopy.css");

static CSS_PATH: LazyLock<String> = LazyLock::new(|| {
    let digest = Sha256::digest(CSS.as_bytes());
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("/ui/static/canopy.{hex}.css")
});

/// The style sheet's current URL path.
pub fn stylesheet_path() -> &'static str {
    &CSS_PATH
}

/// `GET /ui/static/{file}`: the style sheet under its current name, else 404.
pub async fn serve(Path(file): Path<String>) -> Response {
    if CSS_PATH.rsplit('/').next() != Some(file.as_str()) {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/css; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        CSS,
    )
        .into_response()
}
