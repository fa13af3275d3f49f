//! The console's static files, compiled into the binary: its style sheet and one small script
//! (drag and drop onto the upload form, a progressive enhancement: the form works without it).
//! Each is served under a name that carries a hash of its content
//! (`/ui/static/canopy.<hash>.css`, `/ui/static/upload.<hash>.js`), so it can be cached for a
//! year and a new build's file is a new URL. Scripts are files from this server only (the
//! CSP's `script-src 'self'`), never inline.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// One static file: its hashed URL path, content type and content.
struct Asset {
    path: String,
    content_type: &'static str,
    content: &'static str,
}

impl Asset {
    fn new(stem: &str, ext: &str, content_type: &'static str, content: &'static str) -> Asset {
        let digest = Sha256::digest(content.as_bytes());
        let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        Asset {
            path: format!("/ui/static/{stem}.{hex}.{ext}"),
            content_type,
            content,
        }
    }
}

static CSS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "canopy",
        "css",
        "text/css; charset=utf-8",
        include_str!("../assets/canopy.css"),
    )
});

static UPLOAD_JS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "upload",
        "js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/upload.js"),
    )
});

static LIVE_JS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "live",
        "js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/live.js"),
    )
});

static MATCHING_JS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "matching",
        "js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/matching.js"),
    )
});

/// The deploy wizard's live match count script's current URL path.
pub fn matching_script_path() -> &'static str {
    &MATCHING_JS.path
}

/// The live deployments pages' script's current URL path (web-live).
pub fn live_script_path() -> &'static str {
    &LIVE_JS.path
}

/// The style sheet's current URL path.
pub fn stylesheet_path() -> &'static str {
    &CSS.path
}

/// The upload form's drag-and-drop script's current URL path.
pub fn upload_script_path() -> &'static str {
    &UPLOAD_JS.path
}

/// `GET /ui/static/{file}`: a static file under its current name, else 404.
pub async fn serve(Path(file): Path<String>) -> Response {
    let Some(asset) = [
        &*CSS,
        &*UPLOAD_JS,
        &*VNC_JS,
        &*SERIAL_JS,
        &*LOGS_JS,
        &*LIVE_JS,
        &*MATCHING_JS,
    ]
    .into_iter()
    .find(|a| a.path.rsplit('/').next() == Some(file.as_str())) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        asset.content,
    )
        .into_response()
}

// ------------------------------------------------------------------ workloads (web-ops)
// The consoles' and logs' scripts (module scripts: no inline script), and noVNC, vendored
// under `assets/vendor/novnc/` (see its README) and served under a versioned path,
// `/ui/static/novnc/<version>/core/rfb.js` and the files it imports, cached for a year.

static VNC_JS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "vnc",
        "js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/vnc.js"),
    )
});

static SERIAL_JS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "serial",
        "js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/serial.js"),
    )
});

static LOGS_JS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "logs",
        "js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/logs.js"),
    )
});

/// The VNC console page's script's current URL path.
pub fn vnc_script_path() -> &'static str {
    &VNC_JS.path
}

/// The serial console page's script's current URL path.
pub fn serial_script_path() -> &'static str {
    &SERIAL_JS.path
}

/// The logs pages' script's current URL path.
pub fn logs_script_path() -> &'static str {
    &LOGS_JS.path
}

/// Where noVNC's files are served: `/ui/static/novnc/<version>`.
pub fn novnc_base() -> String {
    format!("/ui/static/novnc/{}", crate::novnc_files::NOVNC_VERSION)
}

/// noVNC's RFB module's URL path (what `vnc.js` imports).
pub fn novnc_rfb_path() -> String {
    format!("{}/core/rfb.js", novnc_base())
}

/// `GET /ui/static/novnc/<version>/{*path}`: one of noVNC's vendored files, else 404.
pub async fn serve_novnc(Path(path): Path<String>) -> Response {
    let Some((_, content)) = crate::novnc_files::NOVNC_FILES
        .iter()
        .find(|(p, _)| *p == path)
    else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        *content,
    )
        .into_response()
}
