//! The operator's side: enrollment token, catalog upload, deployment create/update/get and
//! edge relabelling, over the server's public API (the same calls the CLI makes).

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::error::SimError;

/// Bound of one operator request (a deployment GET at 10,000 edges is a few MB).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A client of the server's operator API for one project.
#[derive(Clone)]
pub struct Admin {
    http: reqwest::Client,
    base: String,
    project: String,
}

/// What a deployment GET said, and what it cost.
#[derive(Debug, Clone)]
pub struct DeploymentState {
    pub state: String,
    pub total: u64,
    pub running: u64,
    /// Response body size.
    pub bytes: usize,
    /// Request latency.
    pub latency: Duration,
}

impl Admin {
    /// A client of `base` (`http://host:port`) for `project`, authenticating with `token`.
    pub fn new(base: &str, project: &str, token: Option<&str>) -> Result<Admin, SimError> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = token {
            let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", t.trim()))
                .map_err(|_| {
                    SimError::Server("the API token is not a valid header value".into())
                })?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|source| SimError::Network {
                what: "building the operator HTTP client".into(),
                source,
            })?;
        Ok(Admin {
            http,
            base: base.trim_end_matches('/').to_string(),
            project: project.to_string(),
        })
    }

    async fn call(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, Body), SimError> {
        let resp = req.send().await.map_err(|source| SimError::Network {
            what: what.to_string(),
            source,
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|source| SimError::Network {
            what: what.to_string(),
            source,
        })?;
        Ok((status, Body(bytes.to_vec())))
    }

    async fn ok_json(&self, what: &str, req: reqwest::RequestBuilder) -> Result<Value, SimError> {
        let (status, body) = self.call(what, req).await?;
        if !status.is_success() {
            return Err(SimError::Http {
                what: what.to_string(),
                status: status.as_u16(),
                body: body.text(),
            });
        }
        Ok(serde_json::from_slice(&body.0).unwrap_or(Value::Null))
    }

    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn deployments(&self, rest: &str) -> String {
        self.at(&format!(
            "/v1/projects/{}/appdeployment/deployments{rest}",
            self.project
        ))
    }

    /// A new enrollment token's secret.
    pub async fn create_token(&self, description: &str) -> Result<String, SimError> {
        let body = self
            .ok_json(
                "creating an enrollment token",
                self.http
                    .post(self.at(&format!(
                        "/canopy/v1/projects/{}/enrollment-tokens",
                        self.project
                    )))
                    .json(&json!({"description": description})),
            )
            .await?;
        body["secret"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| SimError::Server(format!("token answer without secret: {body}")))
    }

    /// Uploads every file under `dir` (one bulk upload). A package already in the catalog
    /// (a reused `--server`) is not an error.
    pub async fn upload_dir(&self, dir: &Path) -> Result<(), SimError> {
        let what = format!("uploading {}", dir.display());
        let mut form = reqwest::multipart::Form::new();
        for (name, content) in read_dir_files(dir).map_err(|source| SimError::Io {
            what: format!("reading {}", dir.display()),
            source,
        })? {
            form = form.part(
                "files",
                reqwest::multipart::Part::bytes(content).file_name(name),
            );
        }
        let (status, body) = self
            .call(
                &what,
                self.http
                    .post(self.at(&format!("/v3/projects/{}/catalog/upload", self.project)))
                    .multipart(form),
            )
            .await?;
        if status.is_success() || status == StatusCode::CONFLICT {
            return Ok(());
        }
        Err(SimError::Http {
            what,
            status: status.as_u16(),
            body: body.text(),
        })
    }

    /// Creates a deployment; its id.
    pub async fn create_deployment(&self, body: &Value) -> Result<String, SimError> {
        let got = self
            .ok_json(
                "creating the deployment",
                self.http.post(self.deployments("")).json(body),
            )
            .await?;
        got["deploymentId"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| SimError::Server(format!("create answer without deploymentId: {got}")))
    }

    /// Updates a deployment (its answer, the whole deployment, is read and dropped).
    pub async fn update_deployment(&self, id: &str, body: &Value) -> Result<(), SimError> {
        self.ok_json(
            "updating the deployment",
            self.http
                .put(self.deployments(&format!("/{id}")))
                .json(body),
        )
        .await
        .map(drop)
    }

    /// Deletes a deployment.
    pub async fn delete_deployment(&self, id: &str) -> Result<(), SimError> {
        self.ok_json(
            "deleting the deployment",
            self.http.delete(self.deployments(&format!("/{id}"))),
        )
        .await
        .map(drop)
    }

    /// A deployment's state and cluster counts, with the cost of asking.
    pub async fn deployment_state(&self, id: &str) -> Result<DeploymentState, SimError> {
        let started = Instant::now();
        let what = "reading the deployment";
        let (status, body) = self
            .call(what, self.http.get(self.deployments(&format!("/{id}"))))
            .await?;
        let latency = started.elapsed();
        if !status.is_success() {
            return Err(SimError::Http {
                what: what.into(),
                status: status.as_u16(),
                body: body.text(),
            });
        }
        let v: Value = serde_json::from_slice(&body.0).unwrap_or(Value::Null);
        let s = &v["deployment"]["status"];
        Ok(DeploymentState {
            state: s["state"].as_str().unwrap_or("").to_string(),
            total: s["summary"]["total"].as_u64().unwrap_or(0),
            running: s["summary"]["running"].as_u64().unwrap_or(0),
            bytes: body.0.len(),
            latency,
        })
    }

    /// Sets labels of an edge (by name).
    pub async fn set_edge_labels(
        &self,
        edge: &str,
        set: &[(&str, &str)],
    ) -> Result<Duration, SimError> {
        let started = Instant::now();
        let set: serde_json::Map<String, Value> = set
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect();
        self.ok_json(
            &format!("relabelling edge {edge}"),
            self.http
                .patch(self.at(&format!(
                    "/canopy/v1/projects/{}/edges/{edge}/labels",
                    self.project
                )))
                .json(&json!({ "set": set })),
        )
        .await?;
        Ok(started.elapsed())
    }

    /// Removes an edge (by name).
    pub async fn remove_edge(&self, edge: &str) -> Result<(), SimError> {
        self.ok_json(
            &format!("removing edge {edge}"),
            self.http.delete(self.at(&format!(
                "/canopy/v1/projects/{}/edges/{edge}",
                self.project
            ))),
        )
        .await
        .map(drop)
    }
}

/// A response body.
struct Body(Vec<u8>);

impl Body {
    /// The body as text, cut to a readable length.
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0).chars().take(500).collect()
    }
}

/// All files under `dir`, as `(path relative to dir, content)`, sorted by path (what the
/// catalog's bulk upload takes).
pub fn read_dir_files(dir: &Path) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(d)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out)?;
            } else {
                let rel = p
                    .strip_prefix(root)
                    .map_err(std::io::Error::other)?
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push((rel, std::fs::read(&p)?));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}
