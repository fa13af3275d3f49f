//! Catalog uploads, both ways the reference offers: the bulk multipart upload (`POST /upload`,
//! all files in one request, applied all-or-nothing) and the session upload (`POST /uploads`, one
//! file per request, applied when `lastUpload=true`). Both answer with upload responses whose
//! `errorMessages` name the file at fault.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde::{Deserialize, Serialize};

use crate::{Client, ClientError, UploadFile, parse_json};

/// Most files the server takes in one bulk upload.
pub const MAX_UPLOAD_FILES: usize = 100;

/// The server's answer to (one file of) an upload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UploadResponse {
    /// Upload session the file belongs to; pass it on to the next session upload.
    pub session_id: String,
    /// Deprecated by the reference: next expected upload number (or total on the last).
    pub upload_number: u32,
    /// What went wrong, one message per problem, each naming its file. Empty on success.
    pub error_messages: Vec<String>,
    /// Canopy extension (on the response that applied the upload): what it created, updated
    /// or left unchanged. Empty from servers that do not report it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<UploadChange>,
}

/// One entity an upload applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UploadChange {
    /// `created`, `updated` or `unchanged`.
    pub action: String,
    /// `registry`, `application`, `deployment-package` or `artifact`.
    pub kind: String,
    /// `name` or `name:version`.
    pub key: String,
}

/// Body of a session upload.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UploadBody<'a> {
    file_name: &'a str,
    artifact: String,
}

impl Client {
    /// `POST /upload`: uploads YAML files and `.tar.gz` bundles in one request, applied in one
    /// transaction. Entity files reference values files by name (`valuesFileName`), so names
    /// should be relative to the uploaded directory.
    ///
    /// Refuses more than [`MAX_UPLOAD_FILES`] files without contacting the server.
    pub async fn bulk_upload(
        &self,
        files: &[UploadFile],
    ) -> Result<Vec<UploadResponse>, ClientError> {
        if files.is_empty() {
            return Err(ClientError::InvalidRequest("nothing to upload".to_owned()));
        }
        if files.len() > MAX_UPLOAD_FILES {
            return Err(ClientError::InvalidRequest(format!(
                "{} files is more than one upload takes ({MAX_UPLOAD_FILES}); \
                 split the upload or bundle the files into a .tar.gz",
                files.len()
            )));
        }
        let form = files.iter().fold(Form::new(), |form, f| {
            let part = Part::bytes(f.content.clone()).file_name(f.name.clone());
            form.part("files", part)
        });
        let url = self.catalog_url(&["upload"]);
        let req = self.request(Method::POST, &url).multipart(form);
        let body = self.execute_bytes(req, self.transfer_timeout).await?;
        // The reference answers an array; accept a single object too.
        match parse_json::<Vec<UploadResponse>>(&url, &body) {
            Ok(list) => Ok(list),
            Err(e) => parse_json::<UploadResponse>(&url, &body)
                .map(|one| vec![one])
                .map_err(|_| e),
        }
    }

    /// Uploads `files` one request each through one session (the reference's own upload
    /// protocol); the last request applies them all. Returns every response, in order; stops at
    /// the first response carrying error messages.
    pub async fn upload_in_session(
        &self,
        files: &[UploadFile],
    ) -> Result<Vec<UploadResponse>, ClientError> {
        if files.is_empty() {
            return Err(ClientError::InvalidRequest("nothing to upload".to_owned()));
        }
        let mut responses: Vec<UploadResponse> = Vec::with_capacity(files.len());
        for (i, file) in files.iter().enumerate() {
            let session = responses.last().map(|r| r.session_id.as_str());
            let resp = self
                .upload_file(session, i + 1 == files.len(), file)
                .await?;
            let failed = !resp.error_messages.is_empty();
            responses.push(resp);
            if failed {
                break;
            }
        }
        Ok(responses)
    }

    /// `POST /uploads`: uploads one file into a session. Start without `session_id`, pass the
    /// returned one on, and set `last_upload` on the final file to apply the whole session.
    pub async fn upload_file(
        &self,
        session_id: Option<&str>,
        last_upload: bool,
        file: &UploadFile,
    ) -> Result<UploadResponse, ClientError> {
        let url = self.catalog_url(&["uploads"]);
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(id) = session_id.filter(|s| !s.is_empty()) {
            query.push(("sessionId", id.to_owned()));
        }
        query.push(("lastUpload", last_upload.to_string()));
        let body = UploadBody {
            file_name: &file.name,
            artifact: STANDARD.encode(&file.content),
        };
        let req = self.request(Method::POST, &url).query(&query).json(&body);
        let bytes = self.execute_bytes(req, self.transfer_timeout).await?;
        parse_json(&url, &bytes)
    }
}
