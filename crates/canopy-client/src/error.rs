//! The client's one error type. Callers (the CLI, tests) need to tell three situations apart:
//! the server answered and refused (show its message verbatim, it names the resource), the server
//! could not be reached (say what to check), and the server answered something unexpected.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

/// What went wrong with a request to the Canopy API.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status. `message` is the server's own message.
    #[error("{message}")]
    Api {
        /// HTTP status of the answer.
        status: StatusCode,
        /// The `code` field of the error body (a gRPC-style number or a name), if any.
        code: Option<String>,
        /// The server's message, or the raw body when it sent no JSON `message`.
        message: String,
        /// The `details` of the error body: strings as sent, other items as compact JSON.
        details: Vec<String>,
        /// The `errorMessages` of a failed upload: one per problem, each naming its file.
        error_messages: Vec<String>,
    },
    /// No connection could be made.
    #[error(
        "could not reach the Canopy server at {url} ({cause}); \
         check that it is running and listening at that address"
    )]
    Unreachable { url: String, cause: String },
    /// The server took longer than the request's timeout.
    #[error("the Canopy server at {url} did not answer within {}s", after.as_secs())]
    Timeout { url: String, after: Duration },
    /// The connection failed after it was made (reset, truncated body, ...).
    #[error("request to {url} failed: {cause}")]
    Transport { url: String, cause: String },
    /// The server's answer was not what this client understands.
    #[error("unexpected answer from {url}")]
    Decode {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    /// The base URL given to [`crate::Client::new`] is not an `http(s)://` URL.
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The request was refused before it was sent (e.g. too many files for one upload).
    #[error("{0}")]
    InvalidRequest(String),
}

impl ClientError {
    /// The HTTP status when the server answered with an error.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when the server said the resource does not exist (HTTP 404).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(StatusCode::NOT_FOUND)
    }

    /// True when the server said the resource already exists (HTTP 409).
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(StatusCode::CONFLICT)
    }

    /// True when the server could not be reached or did not answer in time.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ClientError::Unreachable { .. } | ClientError::Timeout { .. }
        )
    }

    /// Builds the error for a non-success answer from its status and raw body. Tolerant: uses
    /// the JSON `message` when there is one, else the body text, else the status itself.
    pub fn from_response(status: StatusCode, body: &[u8]) -> ClientError {
        let text = String::from_utf8_lossy(body);
        let parsed = serde_json::from_slice::<Value>(body).ok();
        let obj = parsed.as_ref().and_then(Value::as_object);
        let code = obj.and_then(|o| o.get("code")).and_then(|c| match c {
            Value::Number(n) => Some(n.to_string()),
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            _ => None,
        });
        let message = obj
            .and_then(|o| o.get("message").or_else(|| o.get("error")))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| {
                let raw = text.trim();
                if raw.is_empty() {
                    format!("the server answered {status}")
                } else {
                    raw.to_owned()
                }
            });
        let details = obj
            .and_then(|o| o.get("details"))
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .map(|d| match d {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let error_messages = obj
            .and_then(|o| o.get("errorMessages"))
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        ClientError::Api {
            status,
            code,
            message,
            details,
            error_messages,
        }
    }

    /// Classifies a reqwest failure for `url`, keeping only the deepest cause's text (reqwest's
    /// own layers repeat the URL and add nothing a user can act on).
    pub(crate) fn from_transport(url: &str, after: Duration, e: reqwest::Error) -> ClientError {
        let url = url.to_owned();
        if e.is_timeout() {
            return ClientError::Timeout { url, after };
        }
        let cause = root_cause(&e);
        if e.is_connect() {
            ClientError::Unreachable { url, cause }
        } else {
            ClientError::Transport { url, cause }
        }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_style_body() {
        let body = br#"{"code": 5, "message": "application web:0.1.0 not found", "details": []}"#;
        let e = ClientError::from_response(StatusCode::NOT_FOUND, body);
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "application web:0.1.0 not found");
        match e {
            ClientError::Api { code, details, .. } => {
                assert_eq!(code.as_deref(), Some("5"));
                assert!(details.is_empty());
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn parses_string_code_and_details() {
        let body = br#"{"code": "invalid_argument", "message": "upload failed", "details": ["a.yaml: bad", {"x": 1}]}"#;
        match ClientError::from_response(StatusCode::BAD_REQUEST, body) {
            ClientError::Api {
                code,
                message,
                details,
                ..
            } => {
                assert_eq!(code.as_deref(), Some("invalid_argument"));
                assert_eq!(message, "upload failed");
                assert_eq!(
                    details,
                    vec!["a.yaml: bad".to_owned(), r#"{"x":1}"#.to_owned()]
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn keeps_upload_error_messages() {
        let body = br#"{"code":3,"message":"a.yaml: bad; b.yaml: worse","details":[],"errorMessages":["a.yaml: bad","b.yaml: worse"]}"#;
        match ClientError::from_response(StatusCode::BAD_REQUEST, body) {
            ClientError::Api { error_messages, .. } => {
                assert_eq!(error_messages, ["a.yaml: bad", "b.yaml: worse"]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn falls_back_to_raw_body_then_status() {
        let e = ClientError::from_response(StatusCode::BAD_GATEWAY, b"upstream down\n");
        assert_eq!(e.to_string(), "upstream down");
        let e = ClientError::from_response(StatusCode::BAD_GATEWAY, b"");
        assert_eq!(e.to_string(), "the server answered 502 Bad Gateway");
        let e = ClientError::from_response(StatusCode::CONFLICT, br#"{"code": 6}"#);
        assert_eq!(e.to_string(), r#"{"code": 6}"#);
        assert!(e.is_conflict());
    }
}
