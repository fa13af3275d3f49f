//! Receiving upload bodies onto disk: multipart fields and raw bodies are written to the upload
//! spool as they arrive (a few hundred KiB of buffers per request, whatever the body's size),
//! and a session upload's JSON body (`{"fileName": ..., "artifact": "<base64>"}`) is decoded
//! from its spool file into another with a streaming JSON reader (struson), so the artifact is
//! never one string in memory.
//!
//! The JSON rules are those of the reference's `Upload` message as serde applied them before:
//! an object with exactly `fileName` and `artifact` (unknown or repeated fields are 400),
//! `artifact` standard base64 (whitespace ignored).

use std::io::{self, Read};

use axum::body::Body;
use axum::extract::Multipart;
use axum::extract::multipart::Field;
use futures::StreamExt as _;
use struson::reader::{JsonReader, JsonStreamReader, ReaderError, ValueType};
use tokio::io::AsyncWriteExt as _;

use crate::app::{AppError, MAX_UPLOAD_FILES, Spool, SpoolError, SpoolFile, SpooledUpload};
use crate::http::MAX_UPLOAD_BODY;

/// Longest `fileName` of a session upload.
pub const MAX_FILE_NAME_BYTES: u64 = 4096;

fn too_large(limit: usize) -> AppError {
    AppError::TooLarge(format!("upload is larger than {limit} bytes"))
}

fn spool_write_error(spool: &Spool, e: io::Error) -> AppError {
    crate::app::spool_io_error(spool.dir(), e).into()
}

/// The next field of a multipart body, with the API's errors (413 past the route's body limit,
/// 400 for a malformed body).
pub async fn next_multipart_field(form: &mut Multipart) -> Result<Option<Field<'_>>, AppError> {
    match form.next_field().await {
        Ok(f) => Ok(f),
        Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            Err(too_large(MAX_UPLOAD_BODY))
        }
        Err(e) => Err(AppError::Invalid(format!(
            "invalid multipart body: {}",
            e.body_text()
        ))),
    }
}

/// Receives the rest of a bulk upload's multipart body into the spool: one or more fields named
/// `files`, each with a file name, at most [`MAX_UPLOAD_FILES`]. The API's bulk upload and the
/// console's upload form both read their files with this, so both have the same rules.
pub async fn spool_multipart_files(
    spool: &Spool,
    form: &mut Multipart,
) -> Result<Vec<SpooledUpload>, AppError> {
    let mut files = Vec::new();
    while let Some(mut field) = next_multipart_field(form).await? {
        if field.name() != Some("files") {
            return Err(AppError::Invalid(format!(
                "unexpected multipart field {:?}; files must be sent in fields named \"files\"",
                field.name().unwrap_or("")
            )));
        }
        let name = field.file_name().unwrap_or("").to_string();
        if name.is_empty() {
            return Err(AppError::Invalid(
                "every uploaded file needs a file name".into(),
            ));
        }
        if files.len() >= MAX_UPLOAD_FILES {
            return Err(AppError::TooLarge(format!(
                "at most {MAX_UPLOAD_FILES} files may be uploaded at once"
            )));
        }
        let file = spool_field(spool, &mut field, &name, MAX_UPLOAD_BODY).await?;
        files.push(SpooledUpload { name, file });
    }
    if files.is_empty() {
        return Err(AppError::Invalid(
            "no files uploaded: send one or more multipart fields named \"files\"".into(),
        ));
    }
    Ok(files)
}

/// Writes a multipart field to a new spool file; the body limit of the route applies.
pub async fn spool_field(
    spool: &Spool,
    field: &mut Field<'_>,
    name: &str,
    limit: usize,
) -> Result<SpoolFile, AppError> {
    let mut out = spool.create_async()?;
    loop {
        let chunk = match field.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(too_large(limit));
            }
            Err(e) => {
                return Err(AppError::Invalid(format!(
                    "uploaded file {name}: {}",
                    e.body_text()
                )));
            }
        };
        out.write_all(&chunk)
            .await
            .map_err(|e| spool_write_error(spool, e))?;
    }
    Ok(out.finish().await?)
}

/// Writes a whole request body to a new spool file, refusing it past `limit` bytes.
pub async fn spool_body(spool: &Spool, body: Body, limit: usize) -> Result<SpoolFile, AppError> {
    let mut out = spool.create_async()?;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| AppError::Invalid(format!("the request body could not be read: {e}")))?;
        if out.len() + chunk.len() as u64 > limit as u64 {
            return Err(too_large(limit));
        }
        out.write_all(&chunk)
            .await
            .map_err(|e| spool_write_error(spool, e))?;
    }
    Ok(out.finish().await?)
}

/// Decodes a spooled session upload body into its file name and a spool file of the decoded
/// artifact. Blocking: run it in `App::upload_in_turn`.
pub fn decode_session_body(spool: &Spool, raw: SpoolFile) -> Result<(String, SpoolFile), AppError> {
    let input = io::BufReader::with_capacity(64 * 1024, raw.open()?);
    let mut json = JsonStreamReader::new(input);
    let mut file_name: Option<String> = None;
    let mut artifact: Option<SpoolFile> = None;
    match json.peek().map_err(json_error)? {
        ValueType::Object => {}
        other => {
            return Err(invalid(format!(
                "expected an object {{\"fileName\", \"artifact\"}}, found {other}"
            )));
        }
    }
    json.begin_object().map_err(json_error)?;
    while json.has_next().map_err(json_error)? {
        let key = json.next_name_owned().map_err(json_error)?;
        match key.as_str() {
            "fileName" => {
                if file_name.is_some() {
                    return Err(invalid("duplicate field `fileName`".into()));
                }
                let mut text = String::new();
                let read = json
                    .next_string_reader()
                    .map_err(json_error)?
                    .take(MAX_FILE_NAME_BYTES + 1)
                    .read_to_string(&mut text);
                read.map_err(|e| invalid(format!("fileName: {e}")))?;
                if text.len() as u64 > MAX_FILE_NAME_BYTES {
                    return Err(invalid(format!(
                        "fileName is longer than {MAX_FILE_NAME_BYTES} bytes"
                    )));
                }
                file_name = Some(text);
            }
            "artifact" => {
                if artifact.is_some() {
                    return Err(invalid("duplicate field `artifact`".into()));
                }
                let text = json.next_string_reader().map_err(json_error)?;
                let mut decoder = base64::read::DecoderReader::new(
                    NoWhitespace(text),
                    &base64::engine::general_purpose::STANDARD,
                );
                let mut out = spool.create_blocking()?;
                if let Err(e) = io::copy(&mut decoder, &mut out) {
                    return Err(artifact_error(spool, e));
                }
                artifact = Some(out.finish()?);
            }
            other => {
                return Err(invalid(format!(
                    "unknown field `{}`, expected `fileName` or `artifact`",
                    other.escape_debug()
                )));
            }
        }
    }
    json.end_object().map_err(json_error)?;
    json.consume_trailing_whitespace().map_err(json_error)?;
    // The raw body is no longer needed: its spool bytes go back before the upload goes on.
    drop(raw);
    let file_name = file_name.ok_or_else(|| invalid("missing field `fileName`".into()))?;
    let artifact = artifact.ok_or_else(|| invalid("missing field `artifact`".into()))?;
    Ok((file_name, artifact))
}

fn invalid(message: String) -> AppError {
    AppError::Invalid(format!("invalid request body: {message}"))
}

fn json_error(e: ReaderError) -> AppError {
    match e {
        ReaderError::SyntaxError(_) | ReaderError::IoError { .. } => {
            AppError::Invalid(format!("request body is not valid JSON: {e}"))
        }
        other => invalid(other.to_string()),
    }
}

/// Why copying the artifact failed: the spool is full, the base64 is bad, or the JSON string
/// itself is (bad escapes, not UTF-8, unterminated).
fn artifact_error(spool: &Spool, e: io::Error) -> AppError {
    let base64 = e
        .get_ref()
        .is_some_and(|inner| inner.is::<base64::DecodeError>())
        || e.kind() == io::ErrorKind::InvalidData && e.to_string().contains("base64");
    match crate::app::spool_io_error(spool.dir(), e) {
        full @ SpoolError::Full { .. } => full.into(),
        SpoolError::Io { source, .. } if base64 => {
            invalid(format!("artifact is not valid base64: {source}"))
        }
        SpoolError::Io { source, .. } => {
            AppError::Invalid(format!("request body is not valid JSON: {source}"))
        }
    }
}

/// Skips ASCII whitespace (line breaks in base64 text).
struct NoWhitespace<R>(R);

impl<R: Read> Read for NoWhitespace<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.0.read(buf)?;
            if n == 0 {
                return Ok(0);
            }
            let mut kept = 0;
            for i in 0..n {
                if !buf[i].is_ascii_whitespace() {
                    buf[kept] = buf[i];
                    kept += 1;
                }
            }
            if kept > 0 {
                return Ok(kept);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn spooled(spool: &Spool, body: &[u8]) -> SpoolFile {
        let mut w = spool.create_blocking().unwrap();
        w.write_all(body).unwrap();
        w.finish().unwrap()
    }

    fn decode(body: &str) -> Result<(String, Vec<u8>), String> {
        let spool = Spool::open(None, 1 << 20).unwrap();
        let raw = spooled(&spool, body.as_bytes());
        match decode_session_body(&spool, raw) {
            Ok((name, file)) => Ok((name, std::fs::read(file.path()).unwrap())),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn decodes_name_and_artifact_in_any_order() {
        assert_eq!(
            decode(r#"{"fileName": "a.yaml", "artifact": "YTogMQo="}"#).unwrap(),
            ("a.yaml".to_string(), b"a: 1\n".to_vec())
        );
        assert_eq!(
            decode(" {\"artifact\": \"YTog\\nMQo=\", \"fileName\": \"d\\u00e9.yaml\"} \n").unwrap(),
            ("dé.yaml".to_string(), b"a: 1\n".to_vec())
        );
    }

    #[test]
    fn refuses_what_serde_refused() {
        for (body, says) in [
            (
                r#"{"fileName": "a", "artifact": "YQ==", "x": 1}"#,
                "unknown field `x`",
            ),
            (
                r#"{"fileName": "a", "fileName": "b", "artifact": "YQ=="}"#,
                "duplicate field `fileName`",
            ),
            (r#"{"artifact": "YQ=="}"#, "missing field `fileName`"),
            (r#"{"fileName": "a"}"#, "missing field `artifact`"),
            (
                r#"{"fileName": "a", "artifact": "!!!"}"#,
                "artifact is not valid base64",
            ),
            (
                r#"{"fileName": 3, "artifact": "YQ=="}"#,
                "invalid request body",
            ),
            (r#"[1]"#, "expected an object"),
            (
                r#"{"fileName": "a", "artifact": "YQ=="} x"#,
                "not valid JSON",
            ),
            (r#"{"fileName": "a", "artifact": "YQ=="#, "not valid JSON"),
        ] {
            let e = decode(body).unwrap_err();
            assert!(e.contains(says), "{body}: {e}");
        }
        let long = format!(r#"{{"fileName": "{}", "artifact": ""}}"#, "n".repeat(5000));
        assert!(decode(&long).unwrap_err().contains("longer than 4096"));
    }

    #[test]
    fn a_full_spool_is_busy_not_bad_input() {
        // 62 bytes of body fit in 70; the 24 decoded bytes next to them do not.
        let body = format!(r#"{{"fileName":"a","artifact":"{}"}}"#, "YWFh".repeat(8));
        assert_eq!(body.len(), 62);
        let spool = Spool::open(None, 70).unwrap();
        let raw = spooled(&spool, body.as_bytes());
        let e = decode_session_body(&spool, raw).unwrap_err();
        assert!(matches!(e, AppError::Busy { .. }), "{e}");
        assert_eq!(spool.used(), 0, "everything given back");
    }
}
