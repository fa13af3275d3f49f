//! Crash safety: the real `canopy server` process is killed with SIGKILL while large uploads are
//! being applied; after a restart on the same storage every upload is either fully present or
//! fully absent. Runs on the embedded SQLite file, and on PostgreSQL when configured.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

const APPS_PER_UPLOAD: usize = 100; // a package references at most 100 applications

struct ServerProcess {
    child: Child,
    url: String,
    log: std::path::PathBuf,
}

impl ServerProcess {
    fn start(data_dir: &std::path::Path, database_url: Option<&str>) -> ServerProcess {
        let log = data_dir.join(format!(
            "server-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_canopy"));
        cmd.arg("server")
            .arg("--insecure-http")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .env_remove("CANOPY_DATABASE_URL")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(url) = database_url {
            cmd.arg("--database-url").arg(url);
        }
        ServerProcess {
            child: cmd.spawn().expect("canopy server starts"),
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    async fn wait_healthy(&self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(r) = http.get(format!("{}/healthz", self.url)).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server at {} did not become healthy", self.url);
    }

    /// Kills with SIGKILL; returns how many bulk uploads the server had received (its log).
    fn kill(mut self) -> usize {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("bulk upload")
            .count()
    }
}

fn upload_bundle(prefix: &str) -> Vec<u8> {
    let header = "schemaVersion: \"0.1\"\n$schema: \"https://schema.intel.com/catalog.orchestrator/0.1/schema\"\n";
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut add = |path: String, content: String| {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, path, content.as_bytes()).unwrap();
    };
    let mut pkg = format!(
        "specSchema: DeploymentPackage\n{header}name: {prefix}-pkg\nversion: \"1.0.0\"\ndescription: crash test\napplications:\n"
    );
    for i in 0..APPS_PER_UPLOAD {
        let name = format!("{prefix}-{i:04}");
        add(
            format!("{name}.yaml"),
            format!(
                "specSchema: Application\n{header}name: {name}\nversion: \"1.0.0\"\ndescription: crash test\nhelmRegistry: helm\nchartName: c\nchartVersion: \"1.0.0\"\nprofiles:\n  - name: default\n"
            ),
        );
        pkg.push_str(&format!("  - name: {name}\n    version: \"1.0.0\"\n"));
    }
    add("package.yaml".into(), pkg);
    tar.into_inner().unwrap().finish().unwrap()
}

async fn total(http: &reqwest::Client, url: &str, what: &str, filter: &str) -> u64 {
    let r: serde_json::Value = http
        .get(format!(
            "{url}/v3/projects/default/catalog/{what}?filter=name%3D{filter}"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["totalElements"].as_u64().unwrap()
}

async fn crash_rounds(database_url: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), database_url.as_deref());
    server.wait_healthy(&reqwest::Client::new()).await;
    // The administrator token the first start wrote.
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", token.trim()).parse().unwrap(),
    );
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    let r = http
        .post(format!(
            "{}/v3/projects/default/catalog/registries",
            server.url
        ))
        .json(&json!({"name": "helm", "type": "HELM", "rootUrl": "https://charts.example.com"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    // A baseline upload without a crash must succeed (so the rounds below test crashes, not errors).
    let form = reqwest::multipart::Form::new().part(
        "files",
        reqwest::multipart::Part::bytes(upload_bundle("baseline")).file_name("set.tar.gz"),
    );
    let t = Instant::now();
    let r = http
        .post(format!("{}/v3/projects/default/catalog/upload", server.url))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert!(
        status.is_success(),
        "baseline upload failed: {}",
        r.text().await.unwrap_or_default()
    );
    eprintln!(
        "baseline upload of {APPS_PER_UPLOAD} applications took {:?}",
        t.elapsed()
    );
    let mut server = server;
    // Uploads this server process had already received before the round started.
    let mut earlier_uploads = 1;
    // Rounds in which the server had received an upload that was not committed when it died.
    let mut interrupted_rounds = 0;
    for round in 0..6u64 {
        // Several uploads in flight, then SIGKILL at a different moment each round.
        let mut tasks = Vec::new();
        for k in 0..3 {
            let http = http.clone();
            let url = server.url.clone();
            let bundle = upload_bundle(&format!("r{round}u{k}"));
            tasks.push(tokio::spawn(async move {
                let form = reqwest::multipart::Form::new().part(
                    "files",
                    reqwest::multipart::Part::bytes(bundle).file_name("set.tar.gz"),
                );
                http.post(format!("{url}/v3/projects/default/catalog/upload"))
                    .multipart(form)
                    .send()
                    .await
                    .map(|r| r.status())
            }));
        }
        // From "just received" to "most committed": the kill lands at a different stage each round.
        tokio::time::sleep(Duration::from_millis(
            [20, 60, 120, 200, 300, 450][round as usize],
        ))
        .await;
        let received = server.kill() - earlier_uploads;
        earlier_uploads = 0;
        let finished: Vec<bool> = futures_join(tasks).await;
        server = ServerProcess::start(dir.path(), database_url.as_deref());
        server.wait_healthy(&http).await;
        let mut committed = 0;
        for (k, &done) in finished.iter().enumerate().take(3) {
            let prefix = format!("r{round}u{k}-");
            let apps = total(&http, &server.url, "applications", &prefix).await;
            let pkgs = total(&http, &server.url, "deployment_packages", &prefix).await;
            assert!(
                (apps == 0 && pkgs == 0) || (apps == APPS_PER_UPLOAD as u64 && pkgs == 1),
                "round {round} upload {k}: {apps} applications and {pkgs} packages after the crash: half-applied"
            );
            if done {
                assert_eq!(
                    pkgs, 1,
                    "round {round} upload {k} was acknowledged but is missing after the crash"
                );
            }
            committed += pkgs as usize;
        }
        if received > committed {
            interrupted_rounds += 1;
        }
        eprintln!(
            "round {round}: server received {received} uploads, {committed} committed before SIGKILL"
        );
    }
    assert!(
        interrupted_rounds > 0,
        "no kill landed while a received upload was being processed; the test did not exercise a crash"
    );
    server.kill();
}

/// Waits for all tasks; true for those that got a success response before the kill.
async fn futures_join(
    tasks: Vec<tokio::task::JoinHandle<Result<reqwest::StatusCode, reqwest::Error>>>,
) -> Vec<bool> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(matches!(t.await, Ok(Ok(s)) if s.is_success()));
    }
    out
}

#[tokio::test]
async fn killed_server_leaves_no_half_written_upload_sqlite() {
    crash_rounds(None).await;
}

#[tokio::test]
async fn killed_server_leaves_no_half_written_upload_postgres() {
    if let Some(url) = canopy_store::testing::fresh_postgres().await {
        crash_rounds(Some(url)).await;
    }
}
