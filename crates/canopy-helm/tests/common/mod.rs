//! What the tests of canopy-helm share: the test services of scripts/helm.sh (the Helm CLI,
//! chart registries with and without authentication), fixture charts packaged with the real
//! Helm, a loopback HTTPS chart repository with its own CA, and a private docker-registry that a
//! test may stop.
//!
//! Without `CANOPY_TEST_HELM` (and the registries) the tests print a notice and pass, except
//! under CI (`CI` set), where they panic so the coverage cannot silently disappear.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use canopy_helm::{
    ArchiveLimits, CacheConfig, ChartCache, ChartFetcher, FetchLimits, FetchedChart, HelmBinary,
    PlainHttp,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub fn skip_or_panic(what: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{what} not set but CI is: these tests must not be skipped (scripts/helm.sh)");
    }
    eprintln!("skipping: {what} not set (run scripts/helm.sh and export what it prints)");
}

pub fn env(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v),
        _ => {
            skip_or_panic(var);
            None
        }
    }
}

/// The Helm 3 binary of the tests.
pub async fn helm() -> Option<HelmBinary> {
    let path = env("CANOPY_TEST_HELM")?;
    Some(HelmBinary::locate(Some(Path::new(&path))).await.unwrap())
}

/// The Helm 4 binary, when the test machine has one.
pub async fn helm4() -> Option<HelmBinary> {
    let path = env("CANOPY_TEST_HELM4")?;
    Some(HelmBinary::locate(Some(Path::new(&path))).await.unwrap())
}

/// The fixture charts' directory.
pub fn charts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/charts")
}

/// The reference sample packages' directory.
pub fn reference_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/reference-packages")
}

/// `helm package` of a fixture chart (path relative to tests/fixtures/charts): the archive.
pub fn package(helm: &HelmBinary, chart: &str) -> Vec<u8> {
    let out = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(helm.path())
        .arg("package")
        .arg(charts_dir().join(chart))
        .arg("-d")
        .arg(out.path())
        .env("HOME", out.path())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "helm package {chart}");
    let file = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "tgz"))
        .unwrap();
    std::fs::read(file).unwrap()
}

/// A fixture chart, packaged and checked as a fetched one would be.
pub fn fixture(helm: &HelmBinary, chart: &str) -> FetchedChart {
    let bytes = package(helm, chart);
    let name = chart.rsplit('/').next().unwrap();
    let dir = charts_dir().join(chart);
    let meta: serde_json::Value =
        canopy_core::yaml::parse_one(&std::fs::read_to_string(dir.join("Chart.yaml")).unwrap())
            .unwrap();
    FetchedChart::from_archive(
        name,
        meta["version"].as_str().unwrap(),
        bytes,
        &ArchiveLimits::default(),
    )
    .unwrap()
}

/// A fetcher over a fresh cache directory.
pub fn fetcher(dir: &Path, tune: impl FnOnce(&mut CacheConfig, &mut FetchLimits)) -> ChartFetcher {
    let mut config = CacheConfig::new(dir);
    let mut limits = FetchLimits {
        connect_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(60),
        ..FetchLimits::default()
    };
    tune(&mut config, &mut limits);
    ChartFetcher::new(
        ChartCache::open(config).unwrap(),
        limits,
        PlainHttp::Loopback,
    )
}

/// A test CA and a server certificate for `localhost` and 127.0.0.1 signed by it.
pub struct TestCa {
    pub ca_pem: String,
    pub server: Arc<rustls::ServerConfig>,
}

pub fn test_ca() -> TestCa {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "canopy-helm test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    TestCa {
        ca_pem: ca.pem(),
        server: Arc::new(server),
    }
}

/// A chart repository over HTTPS on 127.0.0.1 (ephemeral port): fixed answers by path, an
/// optional basic-auth requirement, and a count of requests per path.
pub struct TestRepo {
    pub url: String,
    pub hits: Arc<Mutex<HashMap<String, usize>>>,
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestRepo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestRepo {
    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// Serves `files` (path → body); with `basic` (`user:password`), only to those.
    pub async fn start(
        ca: &TestCa,
        files: HashMap<String, Vec<u8>>,
        basic: Option<&str>,
    ) -> TestRepo {
        use base64::Engine as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        );
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server.clone());
        let files = Arc::new(files);
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let connections = Arc::new(AtomicUsize::new(0));
        let want_auth = basic.map(|b| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(b)
            )
        });
        let (h, c) = (hits.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let (acceptor, files, hits, want_auth) = (
                    acceptor.clone(),
                    files.clone(),
                    h.clone(),
                    want_auth.clone(),
                );
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_string();
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
                    let auth = head.lines().find_map(|l| {
                        l.strip_prefix("authorization: ")
                            .or_else(|| l.strip_prefix("Authorization: "))
                            .map(str::to_string)
                    });
                    let (status, body): (&str, Vec<u8>) = match (&want_auth, auth) {
                        (Some(w), a) if a.as_deref() != Some(w.as_str()) => {
                            ("401 Unauthorized", b"unauthorized".to_vec())
                        }
                        _ => match files.get(&path) {
                            Some(b) => ("200 OK", b.clone()),
                            None => ("404 Not Found", b"not found".to_vec()),
                        },
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = tls.write_all(head.as_bytes()).await;
                    let _ = tls.write_all(&body).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        TestRepo {
            url,
            hits,
            connections,
            task,
        }
    }
}

/// An `index.yaml` naming one chart version at `url` (relative or absolute).
pub fn index_yaml(name: &str, version: &str, url: &str, digest: Option<&str>) -> Vec<u8> {
    let mut s = format!(
        "apiVersion: v1\nentries:\n  {name}:\n    - name: {name}\n      version: {version}\n      urls:\n        - {url}\n"
    );
    if let Some(d) = digest {
        s.push_str(&format!("      digest: {d}\n"));
    }
    s.push_str("generated: \"2026-01-01T00:00:00Z\"\n");
    s.into_bytes()
}

/// A docker-registry of this test's own, on a free loopback port (stopped on drop).
pub struct OwnRegistry {
    pub addr: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl OwnRegistry {
    pub fn start() -> OwnRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry (scripts/helm.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        OwnRegistry {
            addr,
            child,
            _dir: dir,
        }
    }

    /// Pushes a fixture chart with `helm push`.
    pub fn push(&self, helm: &HelmBinary, chart: &str) {
        let work = tempfile::tempdir().unwrap();
        let status = std::process::Command::new(helm.path())
            .arg("package")
            .arg(charts_dir().join(chart))
            .arg("-d")
            .arg(work.path())
            .env("HOME", work.path())
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "helm package {chart}");
        let tgz = std::fs::read_dir(work.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "tgz"))
            .unwrap();
        let status = std::process::Command::new(helm.path())
            .arg("push")
            .arg(&tgz)
            .arg(format!("oci://{}/charts", self.addr))
            .arg("--plain-http")
            .env("HOME", work.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "helm push {chart}");
    }

    /// Stops the registry and waits until its port refuses connections.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&self.addr).is_ok() {
            assert!(Instant::now() < deadline, "registry still answers");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for OwnRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
