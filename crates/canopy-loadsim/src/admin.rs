//! The operator's side: enrollment token, catalog upload, deployment create/update/get and
//! edge relabelling, over the server's public API (the same calls the CLI makes).

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::SimError;

/// Bound of one operator request (a deployment GET at 10,000 edges is a few MB).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Most 429 answers (the server's per-token rate limit) one request waits out, as the CLI's
/// client does, before it is an error.
const MAX_THROTTLED: u32 = 20;
/// Longest single wait for a 429, whatever its `Retry-After` says.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

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

/// A GET that succeeded, with what it cost.
#[derive(Debug, Clone)]
pub struct Timed<T> {
    pub value: T,
    /// Response body size.
    pub bytes: usize,
    /// Latency of the request that succeeded (a 429 before it and its wait are not counted).
    pub latency: Duration,
    /// 429 answers waited out first.
    pub throttled: u32,
}

/// One page of Canopy's deployment-wide workload list.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadsPage {
    pub workloads: Vec<ListedWorkload>,
    pub total_elements: u64,
}

/// Where one workload of the deployment-wide list runs (the rest of it is not kept).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct ListedWorkload {
    pub cluster_id: String,
    pub app_id: String,
    pub app_name: String,
}

/// The resource manager's per app and edge lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppResource {
    /// `GET /v1/projects/{p}/resource/workloads/applications/{appId}/clusters/{edge}`.
    Workloads,
    /// `GET /v1/projects/{p}/resource/endpoints/applications/{appId}/clusters/{edge}`.
    Endpoints,
}

impl AppResource {
    fn segment_and_field(self) -> (&'static str, &'static str) {
        match self {
            AppResource::Workloads => ("workloads", "appWorkloads"),
            AppResource::Endpoints => ("endpoints", "appEndpoints"),
        }
    }
}

impl Admin {
    /// A client of `base` (`http://host:port`) for `project`, authenticating with `token`.
    pub fn new(
        base: &str,
        project: &str,
        token: Option<&str>,
        trust: &canopy_tls::ClientTrust,
    ) -> Result<Admin, SimError> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = token {
            let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", t.trim()))
                .map_err(|_| {
                    SimError::Server("the API token is not a valid header value".into())
                })?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        let builder = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(REQUEST_TIMEOUT)
            // The server closes an HTTP/1.1 connection idle for 10 s (its header read
            // timeout): never reuse one that old, or a request sent as it closes is lost
            // ("connection closed before message completed"), as canopy-client does.
            .pool_idle_timeout(Duration::from_secs(5));
        let http = canopy_tls::configure(builder, trust)
            .map_err(|e| SimError::Config(format!("the server's TLS trust (--ca-file): {e}")))?
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
        let files = read_dir_files(dir).map_err(|source| SimError::Io {
            what: format!("reading {}", dir.display()),
            source,
        })?;
        self.upload_files(&dir.display().to_string(), files).await
    }

    /// Uploads `files` (name, content) in one bulk upload; `what` names them in errors. A
    /// package already in the catalog (a reused `--server`) is not an error.
    pub async fn upload_files(
        &self,
        what: &str,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<(), SimError> {
        let what = format!("uploading {what}");
        let mut form = reqwest::multipart::Form::new();
        for (name, content) in files {
            form = form.part(
                "files",
                reqwest::multipart::Part::bytes(content).file_name(name),
            );
        }
        let req = self
            .http
            .post(self.at(&format!("/v3/projects/{}/catalog/upload", self.project)))
            .multipart(form);
        self.created_or_there(what, req).await
    }

    /// Creates a catalog registry (`body` as the API takes it). One of that name already there
    /// (a reused `--server`) is not an error.
    pub async fn create_registry(&self, body: &Value) -> Result<(), SimError> {
        let what = format!("creating registry {}", body["name"]);
        let req = self
            .http
            .post(self.at(&format!("/v3/projects/{}/catalog/registries", self.project)))
            .json(body);
        self.created_or_there(what, req).await
    }

    /// Sends a catalog create: success, or 409 (already there: a reused `--server`), is fine.
    async fn created_or_there(
        &self,
        what: String,
        req: reqwest::RequestBuilder,
    ) -> Result<(), SimError> {
        let (status, body) = self.call(&what, req).await?;
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

    /// A GET of `url`, timed; a 429 (the rate limit refused it before doing anything) is sent
    /// again after its `Retry-After`, at most [`MAX_THROTTLED`] times.
    async fn get_timed(&self, what: &str, url: &str) -> Result<Timed<Body>, SimError> {
        let mut throttled = 0;
        loop {
            let started = Instant::now();
            let resp = self
                .http
                .get(url)
                .send()
                .await
                .map_err(|source| SimError::Network {
                    what: what.to_string(),
                    source,
                })?;
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let bytes = resp.bytes().await.map_err(|source| SimError::Network {
                what: what.to_string(),
                source,
            })?;
            let latency = started.elapsed();
            let body = Body(bytes.to_vec());
            if status == StatusCode::TOO_MANY_REQUESTS && throttled < MAX_THROTTLED {
                throttled += 1;
                let wait = Duration::from_secs(retry_after.unwrap_or(1)).min(MAX_RETRY_AFTER);
                tokio::time::sleep(wait).await;
                continue;
            }
            if !status.is_success() {
                return Err(SimError::Http {
                    what: what.to_string(),
                    status: status.as_u16(),
                    body: body.text(),
                });
            }
            return Ok(Timed {
                bytes: body.0.len(),
                value: body,
                latency,
                throttled,
            });
        }
    }

    /// One page of the deployment-wide workload list
    /// (`GET /canopy/v1/projects/{p}/resource/workloads/deployments/{id}`).
    pub async fn deployment_workloads_page(
        &self,
        id: &str,
        page_size: usize,
        offset: usize,
    ) -> Result<Timed<WorkloadsPage>, SimError> {
        let what = format!("listing the workloads of the deployment at offset {offset}");
        let url = self.at(&format!(
            "/canopy/v1/projects/{}/resource/workloads/deployments/{id}?pageSize={page_size}&offset={offset}",
            self.project
        ));
        let t = self.get_timed(&what, &url).await?;
        let page: WorkloadsPage = serde_json::from_slice(&t.value.0).map_err(|e| {
            SimError::Server(format!(
                "{what}: unexpected answer ({e}): {}",
                t.value.text()
            ))
        })?;
        Ok(Timed {
            value: page,
            bytes: t.bytes,
            latency: t.latency,
            throttled: t.throttled,
        })
    }

    /// The resource manager's list of `kind` for app `app_id` on edge `edge` (id or name): how
    /// many items it has.
    pub async fn app_resource(
        &self,
        kind: AppResource,
        app_id: &str,
        edge: &str,
    ) -> Result<Timed<usize>, SimError> {
        let (segment, field) = kind.segment_and_field();
        let what = format!("listing the {segment} of app {app_id} on edge {edge}");
        let url = self.at(&format!(
            "/v1/projects/{}/resource/{segment}/applications/{app_id}/clusters/{edge}",
            self.project
        ));
        let t = self.get_timed(&what, &url).await?;
        let v: Value = serde_json::from_slice(&t.value.0).unwrap_or(Value::Null);
        let items = v[field].as_array().ok_or_else(|| {
            SimError::Server(format!(
                "{what}: answer without {field}: {}",
                t.value.text()
            ))
        })?;
        Ok(Timed {
            value: items.len(),
            bytes: t.bytes,
            latency: t.latency,
            throttled: t.throttled,
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
