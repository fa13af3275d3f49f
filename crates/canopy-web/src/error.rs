//! The console's one error type, and how it becomes a page: the server's own message, in place,
//! with the HTTP status the API would answer.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use canopy_server::app::AppError;

/// Why a console request failed.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// What the app layer refused or failed (its message is shown as it is).
    #[error(transparent)]
    App(#[from] AppError),
    /// A form without this session's CSRF token.
    #[error("{0}")]
    Csrf(String),
    /// A POST that a browser says came from another site.
    #[error("{0}")]
    CrossOrigin(String),
}

impl WebError {
    /// The status and message of this error, as the API would answer them.
    pub fn status_and_message(self) -> (StatusCode, String) {
        match self {
            WebError::App(e) => {
                let message = e.to_string();
                // The one mapping of app errors to statuses is the API's.
                (e.into_response().status(), message)
            }
            WebError::Csrf(m) | WebError::CrossOrigin(m) => (StatusCode::FORBIDDEN, m),
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, message) = self.status_and_message();
        (status, crate::pages::error_page(status, &message)).into_response()
    }
}
