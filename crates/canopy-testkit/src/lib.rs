//! The in-process test harness: [`TestControlPlane::start`] runs a real Canopy server (the same
//! router, app layer and store as production) on an ephemeral loopback port over a fresh
//! database — a temp SQLite file, or a new PostgreSQL database when `CANOPY_TEST_DATABASE_URL`
//! is set — and offers small helpers to talk to it over real HTTP. The web console
//! (`canopy-web`) is served too, as `canopy server` serves it.

use std::net::SocketAddr;
use std::path::Path;

pub mod chromium;
pub mod helm;
pub mod replicas;
pub mod sim_agent;

use canopy_server::{Server, ServerConfig};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running control plane; stopped (gracefully) when dropped or by [`TestControlPlane::stop`].
pub struct TestControlPlane {
    /// Base URL, e.g. `http://127.0.0.1:41234` (`https://` when the configuration has TLS: the
    /// harness's client then trusts exactly the server's certificate).
    pub url: String,
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// `http://ADDR/metrics` when the server was started with a metrics listener
    /// (`config.metrics_listen`, e.g. through [`TestControlPlane::start_configured`]).
    pub metrics_url: Option<String>,
    http: reqwest::Client,
    app: canopy_server::App,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    dir: Option<tempfile::TempDir>,
    config: ServerConfig,
    admin_token: String,
}

impl TestControlPlane {
    /// A server over a fresh embedded SQLite database.
    pub async fn start() -> TestControlPlane {
        Self::start_with(None, "sqlite", Default::default()).await
    }

    /// A server over a fresh SQLite database with the given fleet timing (short edge timeouts
    /// and grace periods for state-machine tests).
    pub async fn start_fleet(fleet: canopy_server::hub::HubConfig) -> TestControlPlane {
        Self::start_with(None, "sqlite", fleet).await
    }

    /// A server over a fresh SQLite database, configured further by `configure` (e.g. an OIDC
    /// identity provider in `config.auth`, default registries in `config.tenancy`).
    pub async fn start_configured(configure: impl FnOnce(&mut ServerConfig)) -> TestControlPlane {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Self::config_in(dir.path(), None, Default::default());
        configure(&mut config);
        Self::launch(config, Some(dir), "sqlite").await
    }

    /// A server over a fresh PostgreSQL database, if one is configured for tests (panics under
    /// CI when it is not, so PostgreSQL coverage cannot silently disappear).
    pub async fn start_postgres() -> Option<TestControlPlane> {
        let url = canopy_store::testing::fresh_postgres().await?;
        Some(Self::start_with(Some(url), "postgres", Default::default()).await)
    }

    /// [`TestControlPlane::start_postgres`], configured further by `configure`.
    pub async fn start_postgres_configured(
        configure: impl FnOnce(&mut ServerConfig),
    ) -> Option<TestControlPlane> {
        let url = canopy_store::testing::fresh_postgres().await?;
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Self::config_in(dir.path(), Some(url), Default::default());
        configure(&mut config);
        Some(Self::launch(config, Some(dir), "postgres").await)
    }

    /// Every configured backend: SQLite always, PostgreSQL when configured.
    pub async fn all() -> Vec<TestControlPlane> {
        let mut v = vec![Self::start().await];
        if let Some(pg) = Self::start_postgres().await {
            v.push(pg);
        }
        v
    }

    async fn start_with(
        database_url: Option<String>,
        backend: &'static str,
        fleet: canopy_server::hub::HubConfig,
    ) -> TestControlPlane {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = Self::config_in(dir.path(), database_url, fleet);
        Self::launch(config, Some(dir), backend).await
    }

    fn config_in(
        dir: &Path,
        database_url: Option<String>,
        fleet: canopy_server::hub::HubConfig,
    ) -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: dir.to_path_buf(),
            database_url,
            tls: None,
            fleet,
            auth: Default::default(),
            tenancy: Default::default(),
            limits: Default::default(),
            audit_retention: canopy_server::DEFAULT_AUDIT_RETENTION,
            public_url: None,
            uploads: Default::default(),
            initialize: false,
            // The test Helm CLI when the test environment has one (scripts/helm.sh).
            helm: canopy_server::app::HelmConfig {
                helm_bin: std::env::var_os("CANOPY_TEST_HELM").map(Into::into),
                ..Default::default()
            },
            metrics_listen: None,
            peer_url: None,
        }
    }

    /// Stops this server and starts a new one over the same data (and the same port), as an
    /// operator restarting the control plane would.
    pub async fn restart(mut self) -> TestControlPlane {
        let dir = self.dir.take();
        let mut config = self.config.clone();
        let backend = self.backend;
        config.listen = self
            .url
            .trim_start_matches("http://")
            .parse()
            .expect("bound address");
        self.stop_in_place().await;
        Self::launch(config, dir, backend).await
    }

    /// Stops the server but keeps its data, to [`TestControlPlane::start_again`] later.
    pub async fn stop_keep_data(mut self) -> StoppedControlPlane {
        let dir = self.dir.take();
        let mut config = self.config.clone();
        config.listen = self
            .url
            .trim_start_matches("http://")
            .parse()
            .expect("bound address");
        let backend = self.backend;
        self.stop_in_place().await;
        StoppedControlPlane {
            config,
            dir,
            backend,
        }
    }

    async fn stop_in_place(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    async fn launch(
        config: ServerConfig,
        dir: Option<tempfile::TempDir>,
        backend: &'static str,
    ) -> TestControlPlane {
        let mut server = None;
        // The old listener's port may take a moment to be free again.
        for _ in 0..50 {
            match Server::bind(&config).await {
                Ok(s) => {
                    server = Some(s);
                    break;
                }
                Err(canopy_server::ServerError::Listen { .. }) => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await
                }
                Err(e) => panic!("server starts: {e}"),
            }
        }
        let server = server
            .expect("server binds its port")
            .with_console(canopy_web::router());
        let addr = server.local_addr().expect("bound address");
        let pin = server.tls_certificate().map(|c| c.fingerprint());
        let metrics_url = server.metrics_addr().map(|a| format!("http://{a}/metrics"));
        let app = server.app().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = rx.await;
                })
                .await
                .expect("server runs");
        });
        // Every request of the harness's client carries the bootstrap administrator token (the
        // first start writes it); tests of authentication itself use their own clients.
        let admin_token =
            std::fs::read_to_string(config.data_dir.join(canopy_server::app::ADMIN_TOKEN_FILE))
                .expect("the first start writes the administrator token")
                .trim()
                .to_string();
        let mut headers = reqwest::header::HeaderMap::new();
        let mut bearer = reqwest::header::HeaderValue::from_str(&format!("Bearer {admin_token}"))
            .expect("token is a header value");
        bearer.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, bearer);
        let builder = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .default_headers(headers);
        let builder = match pin {
            Some(pin) => canopy_tls::configure(builder, &canopy_tls::ClientTrust::Pinned(pin))
                .expect("a client pinned to the server's certificate"),
            None => builder,
        };
        TestControlPlane {
            url: format!("{}://{addr}", if pin.is_some() { "https" } else { "http" }),
            backend,
            metrics_url,
            admin_token,
            http: builder.build().expect("http client"),
            app,
            shutdown: Some(tx),
            task: Some(task),
            dir,
            config,
        }
    }

    /// Creates another project through the tenancy API (as the administrator).
    pub async fn create_project(&self, name: &str) {
        let (status, body) = self
            .send(
                self.http
                    .put(self.at(&format!("/v1/projects/{name}")))
                    .json(&serde_json::json!({})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "create project {name}: {body}");
    }

    /// The bootstrap administrator's token (the harness's client sends it on every request).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// A client without credentials (for tests of authentication).
    pub fn anonymous_http(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .expect("http client")
    }

    /// Creates a built-in user with these roles and returns an API token acting as them.
    pub async fn user_token(&self, name: &str, roles: &[&str]) -> String {
        let (status, body) = self
            .send(
                self.http
                    .post(self.at("/canopy/v1/users"))
                    .json(&serde_json::json!({ "name": name, "roles": roles })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "create user {name}: {body}");
        let (status, body) = self
            .send(
                self.http
                    .post(self.at("/canopy/v1/tokens"))
                    .json(&serde_json::json!({ "name": "test", "user": name })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "token for {name}: {body}");
        body["token"].as_str().expect("token").to_string()
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// The app layer (for tests that reach below HTTP).
    pub fn app(&self) -> &canopy_server::App {
        &self.app
    }

    /// `url` + `path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    /// The catalog base path of a project.
    pub fn catalog(&self, project: &str, rest: &str) -> String {
        self.at(&format!("/v3/projects/{project}/catalog{rest}"))
    }

    /// The raw HTTP client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// GET returning status and JSON body (`Value::Null` when the body is not JSON).
    pub async fn get(&self, url: &str) -> (StatusCode, Value) {
        Self::json(self.http.get(url).send().await.expect("request")).await
    }

    /// POST a JSON body.
    pub async fn post(&self, url: &str, body: &Value) -> (StatusCode, Value) {
        Self::json(
            self.http
                .post(url)
                .json(body)
                .send()
                .await
                .expect("request"),
        )
        .await
    }

    /// PUT a JSON body.
    pub async fn put(&self, url: &str, body: &Value) -> (StatusCode, Value) {
        Self::json(self.http.put(url).json(body).send().await.expect("request")).await
    }

    /// DELETE.
    pub async fn delete(&self, url: &str) -> (StatusCode, Value) {
        Self::json(self.http.delete(url).send().await.expect("request")).await
    }

    /// Bulk upload of `(file name, content)` pairs to a project.
    pub async fn upload(
        &self,
        project: &str,
        files: Vec<(String, Vec<u8>)>,
    ) -> (StatusCode, Value) {
        let mut form = reqwest::multipart::Form::new();
        for (name, content) in files {
            form = form.part(
                "files",
                reqwest::multipart::Part::bytes(content).file_name(name),
            );
        }
        let resp = self
            .http
            .post(self.catalog(project, "/upload"))
            .multipart(form)
            .send()
            .await
            .expect("request");
        Self::json(resp).await
    }

    /// Uploads a directory as `canopy catalog upload DIR` does (names relative to `dir`).
    pub async fn upload_dir(&self, project: &str, dir: &Path) -> (StatusCode, Value) {
        self.upload(project, read_dir_files(dir)).await
    }

    /// Sends a request, returning status and JSON body.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        Self::json(req.send().await.expect("request")).await
    }

    async fn json(resp: reqwest::Response) -> (StatusCode, Value) {
        let status = resp.status();
        let bytes = resp.bytes().await.expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Another replica of this control plane: a second server over the same PostgreSQL
    /// database (its own port and data directory, holding copies of this one's `secret.key`
    /// and administrator token, as an operator sets up replicas). `configure` may change its
    /// configuration. Panics on SQLite (replicas need PostgreSQL).
    pub async fn start_replica(
        &self,
        configure: impl FnOnce(&mut ServerConfig),
    ) -> TestControlPlane {
        assert_eq!(self.backend, "postgres", "replicas need PostgreSQL");
        let dir = tempfile::tempdir().expect("temp dir");
        for file in [
            canopy_seal::KEY_FILE_NAME,
            canopy_server::app::ADMIN_TOKEN_FILE,
        ] {
            let from = self.config.data_dir.join(file);
            if from.exists() {
                std::fs::copy(&from, dir.path().join(file)).expect("copy replica file");
            }
        }
        let mut config = self.config.clone();
        config.data_dir = dir.path().to_path_buf();
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        configure(&mut config);
        Self::launch(config, Some(dir), "postgres").await
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        self.stop_in_place().await;
    }
}

/// A stopped control plane whose data is kept (see [`TestControlPlane::stop_keep_data`]).
pub struct StoppedControlPlane {
    config: ServerConfig,
    dir: Option<tempfile::TempDir>,
    backend: &'static str,
}

impl StoppedControlPlane {
    /// Starts it again on the same data and port.
    /// The stopped server's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    pub async fn start_again(self) -> TestControlPlane {
        TestControlPlane::launch(self.config, self.dir, self.backend).await
    }
}

/// The repository's examples (`examples/<name>`).
pub fn example(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

impl Drop for TestControlPlane {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The files under `dir` that `canopy catalog upload DIR` would send (YAML, templates,
/// tarballs), as `(relative path, content)`, sorted by path.
pub fn read_dir_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    /// What `canopy catalog upload DIR` sends (a package's README stays behind).
    const UPLOAD_EXTENSIONS: &[&str] = &[
        ".yaml", ".yml", ".j2", ".jinja", ".jinja2", ".tgz", ".tar.gz",
    ];
    fn walk(root: &Path, d: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        let mut entries: Vec<_> = std::fs::read_dir(d).expect("read dir").flatten().collect();
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let p = e.path();
            let name = e.file_name().to_string_lossy().to_ascii_lowercase();
            if p.is_dir() {
                walk(root, &p, out);
            } else if UPLOAD_EXTENSIONS.iter().any(|x| name.ends_with(x)) {
                let rel = p
                    .strip_prefix(root)
                    .expect("under root")
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push((rel, std::fs::read(&p).expect("read file")));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

/// The repository's reference sample packages (`tests/fixtures/reference-packages/<name>`).
pub fn reference_package(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/reference-packages")
        .join(name)
}

/// Names of all reference sample packages.
pub fn reference_packages() -> Vec<String> {
    let root =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/reference-packages");
    let mut v: Vec<String> = std::fs::read_dir(root)
        .expect("fixtures")
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
