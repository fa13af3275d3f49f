//! Abuse resistance end to end over HTTP: per-token rate limits, the long-poll caps, slow
//! request bodies, bounded pagination of every list and the body size limit.
//!
//! Tests that need limits other than the defaults serve `http::router_with` themselves (a
//! [`Limited`] server); the others use the ordinary test harness.

use std::time::{Duration, Instant};

use canopy_proto::PROTOCOL_HEADER;
use canopy_server::App;
use canopy_server::app::{AuditQuery, Principal};
use canopy_server::http::Limits;
use canopy_testkit::TestControlPlane;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A server with the given limits over a fresh SQLite database.
struct Limited {
    url: String,
    addr: std::net::SocketAddr,
    app: App,
    admin: String,
    http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Limited {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Limited {
    async fn start(limits: Limits) -> Limited {
        let (store, dir) = canopy_store::testing::fresh_sqlite().await;
        let app = App::new(store).await.expect("app starts");
        let file = app
            .bootstrap_admin(dir.path())
            .await
            .expect("bootstrap")
            .expect("first start writes the administrator token");
        let admin = std::fs::read_to_string(file).unwrap().trim().to_string();
        let router = canopy_server::http::router_with(app.clone(), limits);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Limited {
            url: format!("http://{addr}"),
            addr,
            app,
            admin,
            http: reqwest::Client::new(),
            task,
            _dir: dir,
        }
    }

    /// A new user with `roles` and an API token for them.
    async fn token(&self, user: &str, roles: &[&str]) -> String {
        let system = Principal::system();
        let roles = roles.iter().map(|r| r.to_string()).collect();
        self.app
            .create_user(&system, user, None, roles)
            .await
            .unwrap();
        self.app
            .create_api_token(&system, "test", None, Some(user))
            .await
            .unwrap()
            .token
    }

    async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// A new edge of the default project; returns its credential.
    async fn edge(&self, name: &str) -> String {
        let resp = self
            .http
            .post(format!(
                "{}/canopy/v1/projects/default/enrollment-tokens",
                self.url
            ))
            .bearer_auth(&self.admin)
            .json(&json!({"description": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        let secret = resp.json::<Value>().await.unwrap()["secret"]
            .as_str()
            .unwrap()
            .to_string();
        let resp = self
            .http
            .post(format!("{}/canopy/v1/agent/enroll", self.url))
            .header(PROTOCOL_HEADER, "1")
            .json(&json!({"protocolVersion": 1, "token": secret, "name": name, "labels": {}}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        resp.json::<Value>().await.unwrap()["credential"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// One desired-state long-poll: status, Retry-After, and how long it took.
    async fn poll(&self, credential: &str, wait: u32) -> (StatusCode, Option<u64>, Duration) {
        let started = Instant::now();
        let resp = self
            .http
            .get(format!(
                "{}/canopy/v1/agent/desired-state?after=999999&waitSeconds={wait}",
                self.url
            ))
            .header(PROTOCOL_HEADER, "1")
            .bearer_auth(credential)
            .send()
            .await
            .unwrap();
        let retry = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        (resp.status(), retry, started.elapsed())
    }
}

fn retry_after(resp: &reqwest::Response) -> Option<u64> {
    resp.headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[tokio::test]
async fn bursts_over_the_rate_limit_get_429_per_token() {
    let s = Limited::start(Limits {
        requests_per_second: 1,
        burst: 5,
        ..Limits::default()
    })
    .await;
    let bob = s.token("bob", &["default_cat-rw"]).await;
    let path = "/v3/projects/default/catalog/registries";
    for i in 0..5 {
        let r = s.get(&s.admin, path).await;
        assert_eq!(r.status(), StatusCode::OK, "request {i} of the burst");
    }
    let r = s.get(&s.admin, path).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry = retry_after(&r).expect("Retry-After");
    assert!((1..=2).contains(&retry), "{retry}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], 8, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("too many requests")
    );
    // Another token has its own bucket.
    for _ in 0..5 {
        assert_eq!(s.get(&bob, path).await.status(), StatusCode::OK);
    }
    // Calls without a caller (health, the agent protocol) are not counted per token.
    for _ in 0..20 {
        let r = s
            .http
            .get(format!("{}/healthz", s.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    // A refused mutating call is still audited, with its caller.
    let r = s
        .http
        .post(format!("{}{path}", s.url))
        .bearer_auth(&s.admin)
        .json(&json!({"name": "r", "rootUrl": "https://x.y", "type": "HELM"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let (records, _) = s
        .app
        .store()
        .query_audit(&AuditQuery {
            actor: Some("admin".into()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(records[0].status, 429, "{records:?}");
    // After Retry-After the caller gets through again.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(s.get(&s.admin, path).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn long_polls_beyond_the_caps_are_refused_at_once() {
    let s = Limited::start(Limits {
        max_long_polls: 2,
        max_long_polls_per_edge: 1,
        ..Limits::default()
    })
    .await;
    let a = s.edge("a").await;
    let b = s.edge("b").await;
    let c = s.edge("c").await;
    // Two long-polls park (nothing newer than generation 999999 will come).
    let parked_a = tokio::spawn({
        let (http, url, a) = (s.http.clone(), s.url.clone(), a.clone());
        async move { park(&http, &url, &a).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A second poll of the same edge: 429 at once.
    let (status, retry, took) = s.poll(&a, 20).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry, Some(5));
    assert!(took < Duration::from_secs(2), "{took:?}");
    let parked_b = tokio::spawn({
        let (http, url, b) = (s.http.clone(), s.url.clone(), b.clone());
        async move { park(&http, &url, &b).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The process cap: 503 at once, with a spread Retry-After.
    let (status, retry, took) = s.poll(&c, 20).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(retry.is_some_and(|r| (5..=30).contains(&r)), "{retry:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    // Finished polls free their places.
    assert_eq!(parked_a.await.unwrap(), StatusCode::NO_CONTENT);
    assert_eq!(parked_b.await.unwrap(), StatusCode::NO_CONTENT);
    let (status, _, _) = s.poll(&c, 1).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = s.poll(&a, 1).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

/// A long-poll that waits 3 s for nothing.
async fn park(http: &reqwest::Client, url: &str, credential: &str) -> StatusCode {
    http.get(format!(
        "{url}/canopy/v1/agent/desired-state?after=999999&waitSeconds=3"
    ))
    .header(PROTOCOL_HEADER, "1")
    .bearer_auth(credential)
    .send()
    .await
    .unwrap()
    .status()
}

/// Sends a POST whose body is written in `chunks` with `pause` between them over a raw
/// connection, and returns the status line and body of the answer.
async fn trickle(s: &Limited, chunks: &[&[u8]], pause: Duration) -> (String, String) {
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let len: usize = chunks.iter().map(|c| c.len()).sum();
    let head = format!(
        "POST /v3/projects/default/catalog/registries HTTP/1.1\r\nHost: test\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n",
        s.admin
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let (mut read, mut write) = conn.into_split();
    let chunks: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
    let writer = tokio::spawn(async move {
        for (i, c) in chunks.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            if write.write_all(c).await.is_err() {
                return;
            }
        }
        // Keep the write half open until the answer is read.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(20), read.read(&mut buf))
            .await
            .expect("an answer within 20 s")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= len {
                break;
            }
        }
    }
    writer.abort();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

#[tokio::test]
async fn bodies_trickled_too_slowly_get_408() {
    let s = Limited::start(Limits {
        body_read_timeout: Duration::from_secs(1),
        body_min_rate: 1024,
        ..Limits::default()
    })
    .await;
    let body = br#"{"name": "slow", "rootUrl": "https://x.y", "type": "HELM"}"#;
    // One byte every 300 ms: the deadline (1 s, plus ~1 ms per byte) passes mid-body.
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    let started = Instant::now();
    let (status, answer) = trickle(&s, &bytes, Duration::from_millis(300)).await;
    let took = started.elapsed();
    assert!(status.contains(" 408 "), "{status}: {answer}");
    let err: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(err["code"], 4, "{answer}");
    assert!(
        err["message"].as_str().unwrap().contains("too slowly"),
        "{answer}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // Nothing was created, and the call is in the audit log as a timeout.
    let r = s
        .get(&s.admin, "/v3/projects/default/catalog/registries/slow")
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let (records, _) = s
        .app
        .store()
        .query_audit(&AuditQuery::default())
        .await
        .unwrap();
    assert!(records.iter().any(|r| r.status == 408), "{records:?}");

    // A body that pauses but arrives within the deadline is fine.
    let (first, rest) = body.split_at(20);
    let (status, answer) = trickle(&s, &[first, rest], Duration::from_millis(400)).await;
    assert!(status.contains(" 200 "), "{status}: {answer}");
}

#[tokio::test]
async fn every_list_refuses_page_sizes_over_500() {
    let cp = TestControlPlane::start().await;
    // (The `.../versions` lists of one application or package are not paged, as in the
    // reference API.)
    let lists = [
        "/v3/projects/default/catalog/registries",
        "/v3/projects/default/catalog/applications",
        "/v3/projects/default/catalog/deployment_packages",
        "/v3/projects/default/catalog/artifacts",
        "/v1/projects/default/appdeployment/deployments",
        "/v1/projects/default/appdeployment/clusters",
        "/v1/projects/default/deployments/clusters/c1",
        "/canopy/v1/projects/default/edges",
        "/canopy/v1/projects/default/enrollment-tokens",
        "/canopy/v1/audit",
        "/canopy/v1/projects/default/audit",
    ];
    for path in lists {
        for size in ["501", "-1", "100000000000"] {
            let (s, b) = cp.get(&cp.at(&format!("{path}?pageSize={size}"))).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{path}?pageSize={size}: {b}");
            assert!(
                b["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("pageSize"),
                "{path}?pageSize={size}: {b}"
            );
        }
        let (s, b) = cp.get(&cp.at(&format!("{path}?pageSize=500"))).await;
        assert!(
            s == StatusCode::OK || s == StatusCode::NOT_FOUND,
            "{path}?pageSize=500: {s} {b}"
        );
    }
}

#[tokio::test]
async fn enrollment_token_lists_are_paged() {
    let cp = TestControlPlane::start().await;
    let url = cp.at("/canopy/v1/projects/default/enrollment-tokens");
    for d in ["a", "b", "c"] {
        let (s, _) = cp.post(&url, &json!({"description": d})).await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let (s, b) = cp.get(&url).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["enrollmentTokens"].as_array().unwrap().len(), 3);
    assert_eq!(b["totalElements"], 3);
    let (_, b) = cp.get(&format!("{url}?pageSize=2&offset=2")).await;
    assert_eq!(b["enrollmentTokens"].as_array().unwrap().len(), 1, "{b}");
    assert_eq!(b["totalElements"], 3);
    let (s, b) = cp.get(&format!("{url}?offset=-1")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b["message"].as_str().unwrap().contains("offset"), "{b}");
}

#[tokio::test]
async fn oversized_json_bodies_get_413_in_the_error_shape() {
    let cp = TestControlPlane::start().await;
    let huge = json!({"name": "big", "rootUrl": "https://x.y", "type": "HELM",
                      "description": "x".repeat(canopy_server::http::MAX_JSON_BODY + 1)});
    for path in [
        "/v3/projects/default/catalog/registries",
        "/v1/projects/default/appdeployment/deployments",
    ] {
        let (s, b) = cp.post(&cp.at(path), &huge).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{path}: {b}");
        assert_eq!(b["code"], 8, "{path}: {b}");
        assert!(
            b["message"].as_str().unwrap().contains("larger than"),
            "{path}: {b}"
        );
        assert_eq!(b["details"], json!([]), "{path}: {b}");
    }
    // The server is still fine.
    let (s, _) = cp.get(&cp.at("/healthz")).await;
    assert_eq!(s, StatusCode::OK);
}
