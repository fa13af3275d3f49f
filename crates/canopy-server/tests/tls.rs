//! The control plane over HTTPS: a self-signed certificate generated on first start and kept
//! across restarts, an agent enrolling and long-polling through a client that pins the printed
//! fingerprint, clients that do not trust it refused, and plain HTTP still available.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use canopy_proto::{EnrollResponse, PROTOCOL_HEADER};
use canopy_server::{Server, ServerConfig};
use canopy_tls::{CertInfo, ClientTrust, Fingerprint, ServerTls};
use reqwest::StatusCode;
use serde_json::json;

struct Running {
    url: String,
    cert: Option<CertInfo>,
    app: canopy_server::App,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), canopy_server::ServerError>>,
}

impl Running {
    async fn start(data_dir: &Path, tls: Option<ServerTls>) -> Running {
        let config = ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.to_owned(),
            database_url: None,
            tls,
            fleet: Default::default(),
            auth: Default::default(),
            tenancy: Default::default(),
            limits: Default::default(),
            audit_retention: canopy_server::DEFAULT_AUDIT_RETENTION,
            public_url: None,
            uploads: Default::default(),
            initialize: false,
            helm: Default::default(),
            metrics_listen: None,
            peer_url: None,
        };
        let server = Server::bind(&config).await.expect("server binds");
        let url = server.url().unwrap();
        let cert = server.tls_certificate().cloned();
        let app = server.app().clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        Running {
            url,
            cert,
            app,
            stop: Some(tx),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(35), &mut self.task)
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
    }

    /// A fresh enrollment token's secret, made through the app layer as `canopy up` does.
    async fn enrollment_token(&self) -> String {
        let ctx = self
            .app
            .context(
                canopy_server::app::Principal::system(),
                canopy_server::app::DEFAULT_PROJECT,
                "tls-test".into(),
            )
            .await
            .unwrap();
        self.app
            .create_enrollment_token(
                &ctx,
                canopy_server::app::CreateEnrollmentToken {
                    description: "tls test".into(),
                    ttl_seconds: Some(600),
                    max_uses: 1,
                },
            )
            .await
            .unwrap()
            .secret
    }
}

fn pinned(fp: Fingerprint) -> reqwest::Client {
    canopy_tls::configure(reqwest::Client::builder(), &ClientTrust::Pinned(fp))
        .unwrap()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        text.push_str(" / ");
        text.push_str(&c.to_string());
        cur = c.source();
    }
    text
}

#[tokio::test]
async fn an_agent_enrolls_over_https_with_the_pinned_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let tls = ServerTls::SelfSigned {
        dir: dir.path().to_owned(),
    };
    let cp = Running::start(dir.path(), Some(tls.clone())).await;
    assert!(cp.url.starts_with("https://127.0.0.1:"), "{}", cp.url);
    let cert = cp.cert.clone().expect("TLS is on");
    assert!(cert.generated, "first start generates the certificate");
    assert!(dir.path().join("tls/cert.pem").exists());
    let http = pinned(cert.fingerprint());

    // Enrollment, as the agent does it.
    let token = cp.enrollment_token().await;
    let resp = http
        .post(format!("{}{}", cp.url, canopy_proto::paths::ENROLL))
        .header(PROTOCOL_HEADER, "1")
        .json(&json!({
            "protocolVersion": 1,
            "token": token,
            "name": "tls-edge",
            "labels": {"site": "tls"},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::CREATED);
    let enrolled: EnrollResponse = resp.json().await.unwrap();
    assert!(!enrolled.credential.is_empty());

    // A long-poll (nothing to deploy: 204 after the wait) over the same connection.
    let poll = |http: reqwest::Client, url: String, cred: String| async move {
        http.get(format!(
            "{url}{}?after=0&waitSeconds=1",
            canopy_proto::paths::DESIRED_STATE
        ))
        .header(PROTOCOL_HEADER, "1")
        .bearer_auth(cred)
        .send()
        .await
        .unwrap()
        .status()
    };
    let status = poll(http.clone(), cp.url.clone(), enrolled.credential.clone()).await;
    assert!(
        status == StatusCode::OK || status == StatusCode::NO_CONTENT,
        "{status}"
    );

    // Nobody else's pin, and not the public roots, trusts this server.
    let wrong = pinned(Fingerprint::of_der(b"not the server's certificate"));
    let e = wrong
        .get(format!("{}/healthz", cp.url))
        .send()
        .await
        .unwrap_err();
    assert!(chain(&e).contains("not the pinned"), "{}", chain(&e));
    let e = reqwest::get(format!("{}/healthz", cp.url))
        .await
        .unwrap_err();
    assert!(chain(&e).contains("certificate"), "{}", chain(&e));
    let url = cp.url.clone();
    cp.stop().await;

    // A restart keeps the certificate, so the agent's pin and credential still work.
    let cp = Running::start(dir.path(), Some(tls)).await;
    let again = cp.cert.clone().unwrap();
    assert!(!again.generated);
    assert_eq!(again.fingerprint_sha256, cert.fingerprint_sha256);
    let http = pinned(again.fingerprint());
    let status = poll(http, cp.url.clone(), enrolled.credential.clone()).await;
    assert!(
        status == StatusCode::OK || status == StatusCode::NO_CONTENT,
        "{status}"
    );
    assert_ne!(cp.url, url, "a new port (port 0), same certificate");
    cp.stop().await;
}

#[tokio::test]
async fn given_certificate_files_must_be_usable() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "garbage").unwrap();
    let config = ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.path().join("data"),
        database_url: None,
        tls: Some(ServerTls::Files {
            cert: bad.clone(),
            key: dir.path().join("missing-key.pem"),
        }),
        fleet: Default::default(),
        auth: Default::default(),
        tenancy: Default::default(),
        limits: Default::default(),
        audit_retention: canopy_server::DEFAULT_AUDIT_RETENTION,
        public_url: None,
        uploads: Default::default(),
        initialize: false,
        helm: Default::default(),
        metrics_listen: None,
        peer_url: None,
    };
    let e = Server::bind(&config).await.err().expect("refused");
    let text = e.to_string();
    assert!(
        text.contains("bad.pem") && text.contains("no PEM certificate"),
        "{text}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "certificate problems are found before the database is created"
    );
}

#[tokio::test]
async fn plain_http_still_serves_when_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let cp = Running::start(dir.path(), None).await;
    assert!(cp.url.starts_with("http://"), "{}", cp.url);
    assert!(cp.cert.is_none());
    let resp = reqwest::get(format!("{}/healthz", cp.url)).await.unwrap();
    assert!(resp.status().is_success());
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2c.get(format!("{}/healthz", cp.url)).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert!(!dir.path().join("tls").exists(), "no certificate made");
    cp.stop().await;
}
