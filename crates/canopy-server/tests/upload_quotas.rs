//! What uploads may cost, over HTTP on both backends: open upload sessions and the bytes they
//! hold are capped per project and for the whole server (429, also under concurrent requests),
//! idle sessions are reaped, and upload bodies go through a bounded spool on disk that is
//! emptied on every path (done, refused, client gone, restart).

use std::time::{Duration, Instant};

use base64::Engine as _;
use canopy_server::app::UploadLimits;
use canopy_testkit::TestControlPlane;
use reqwest::StatusCode;
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(60);

/// A control plane per configured backend, with these upload limits.
async fn planes(limits: UploadLimits) -> Vec<(&'static str, TestControlPlane)> {
    let l = limits.clone();
    let mut v = vec![(
        "sqlite",
        TestControlPlane::start_configured(move |c| c.uploads = l).await,
    )];
    if let Some(url) = canopy_store::testing::fresh_postgres().await {
        v.push((
            "postgres",
            TestControlPlane::start_configured(move |c| {
                c.uploads = limits;
                c.database_url = Some(url);
            })
            .await,
        ));
    }
    v
}

fn small_limits() -> UploadLimits {
    UploadLimits {
        sessions_per_project: 2,
        sessions: 3,
        session_bytes_per_project: 1000,
        session_bytes: 1500,
        ..UploadLimits::default()
    }
}

/// One session upload call: `(status, body)`.
async fn send(
    cp: &TestControlPlane,
    project: &str,
    session: Option<&str>,
    last: bool,
    content: &[u8],
) -> (StatusCode, Value) {
    let mut url = format!("{}?lastUpload={last}", cp.catalog(project, "/uploads"));
    if let Some(s) = session {
        url.push_str(&format!("&sessionId={s}"));
    }
    // Distinct names: a session's files are one file set (templates: not read as entities).
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let body = json!({
        "fileName": format!("notes-{n}.txt.j2"),
        "artifact": base64::engine::general_purpose::STANDARD.encode(content),
    });
    cp.post(&url, &body).await
}

async fn open_session(cp: &TestControlPlane, project: &str, bytes: usize) -> String {
    let (s, b) = send(cp, project, None, false, &vec![b'x'; bytes]).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["sessionId"].as_str().unwrap().to_string()
}

fn assert_quota(label: &str, s: StatusCode, b: &Value, says: &str) {
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "[{label}] {b}");
    assert_eq!(b["code"], 8, "[{label}] ResourceExhausted: {b}");
    let m = b["message"].as_str().unwrap_or_default();
    assert!(
        m.contains(says),
        "[{label}] message {m:?} should say {says:?}"
    );
}

#[tokio::test]
async fn session_caps_per_project_and_per_server() {
    for (label, cp) in planes(small_limits()).await {
        cp.create_project("other").await;
        // Two sessions in `default`: the project's cap.
        let first = open_session(&cp, "default", 100).await;
        let _second = open_session(&cp, "default", 100).await;
        let (s, b) = send(&cp, "default", None, false, b"x").await;
        assert_quota(label, s, &b, "project default has 2 open upload sessions");
        // A third in another project: the server's cap (3) is reached with it.
        let _third = open_session(&cp, "other", 100).await;
        let (s, b) = send(&cp, "other", None, false, b"x").await;
        assert_quota(label, s, &b, "the server has 3 open upload sessions");
        // Bytes: default holds 200 of its 1000.
        let (s, b) = send(&cp, "default", Some(&first), false, &[b'y'; 801]).await;
        assert_quota(label, s, &b, "pass the project's quota of 1000 bytes");
        let (s, b) = send(&cp, "default", Some(&first), false, &[b'y'; 800]).await;
        assert_eq!(s, StatusCode::OK, "[{label}] exactly at the quota: {b}");
        assert_eq!(b["uploadNumber"], 2, "[{label}]");
        // The server holds 1100 of 1500: 401 more in `other` passes the server's quota
        // (while `other` is far from its own).
        let (s, b) = send(&cp, "other", Some(&_third), false, &[b'z'; 401]).await;
        assert_quota(label, s, &b, "pass its quota of 1500 bytes");
        // A refused file was not stored: the session goes on where it was.
        let (s, b) = send(&cp, "other", Some(&_third), false, &[b'z'; 400]).await;
        assert_eq!(s, StatusCode::OK, "[{label}] {b}");
        assert_eq!(b["uploadNumber"], 2, "[{label}]");
        // The last upload of a session (not stored) needs no quota, and frees the session's.
        let (s, b) = send(&cp, "default", Some(&first), true, b"x").await;
        assert_eq!(s, StatusCode::OK, "[{label}] {b}");
        let usage = cp.app().store().upload_usage().await.unwrap();
        assert_eq!((usage.sessions, usage.bytes), (2, 600), "[{label}]");
        let _fourth = open_session(&cp, "default", 100).await;
        cp.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_cannot_race_past_the_server_cap() {
    // Twelve projects open a session each at the same moment; the server takes three. Each
    // project's writers are serialized by its own lock, so only the quota lock stops them.
    let limits = UploadLimits {
        sessions: 3,
        session_bytes: 10_000,
        ..UploadLimits::default()
    };
    for (label, cp) in planes(limits).await {
        let cp = std::sync::Arc::new(cp);
        for i in 0..12 {
            cp.create_project(&format!("p{i}")).await;
        }
        let mut tasks = Vec::new();
        for i in 0..12 {
            let cp = cp.clone();
            tasks.push(tokio::spawn(async move {
                send(&cp, &format!("p{i}"), None, false, &[b'q'; 3000]).await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            let (s, b) = t.await.unwrap();
            match s {
                StatusCode::OK => ok += 1,
                StatusCode::TOO_MANY_REQUESTS => assert_eq!(b["code"], 8, "[{label}] {b}"),
                other => panic!("[{label}] unexpected {other}: {b}"),
            }
        }
        let usage = cp.app().store().upload_usage().await.unwrap();
        assert!(
            usage.sessions <= 3 && usage.bytes <= 10_000,
            "[{label}] the caps were passed: {usage:?}"
        );
        assert_eq!(ok, 3, "[{label}] three sessions fit: {usage:?}");
    }
}

#[tokio::test]
async fn idle_sessions_are_reaped() {
    let limits = UploadLimits {
        session_idle_timeout: Duration::from_secs(2),
        ..UploadLimits::default()
    };
    for (label, cp) in planes(limits).await {
        let session = open_session(&cp, "default", 2 * 1024 * 1024 + 17).await;
        let start = Instant::now();
        loop {
            let usage = cp.app().store().upload_usage().await.unwrap();
            if usage.sessions == 0 {
                assert_eq!(usage.bytes, 0);
                break;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "[{label}] the idle session is still there: {usage:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (s, b) = send(&cp, "default", Some(&session), true, b"x").await;
        assert_eq!(s, StatusCode::NOT_FOUND, "[{label}] {b}");
        assert!(b["message"].as_str().unwrap().contains("upload-session"));
        cp.stop().await;
    }
}

/// The spool files of a server (in its data directory).
fn spool_files(cp: &TestControlPlane) -> Vec<String> {
    std::fs::read_dir(cp.data_dir().join("upload-spool"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".canopy-upload-"))
                .collect()
        })
        .unwrap_or_default()
}

async fn spool_empties(cp: &TestControlPlane, why: &str) {
    let start = Instant::now();
    loop {
        let (used, _) = cp.app().upload_spool_usage();
        let files = spool_files(cp);
        if used == 0 && files.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{why}: the spool still holds {used} bytes in {files:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn multipart(name: &str, content: Vec<u8>) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new().part(
        "files",
        reqwest::multipart::Part::bytes(content).file_name(name.to_string()),
    )
}

#[tokio::test]
async fn the_spool_is_bounded_and_emptied_on_every_path() {
    let limits = UploadLimits {
        spool_bytes: 1024 * 1024,
        ..UploadLimits::default()
    };
    let cp = TestControlPlane::start_configured(move |c| c.uploads = limits).await;
    let upload_url = cp.catalog("default", "/upload");

    // Over the budget: 503 with Retry-After, nothing left behind.
    let resp = cp
        .http()
        .post(&upload_url)
        .multipart(multipart("big.yaml", vec![b'#'; 2 * 1024 * 1024]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    let b: Value = resp.json().await.unwrap();
    assert_eq!(b["code"], 14, "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("upload spool"),
        "{b}"
    );
    spool_empties(&cp, "after a refused upload").await;

    // A good upload, and a bad one: both leave nothing.
    let registry = b"specSchema: Registry\nschemaVersion: \"0.1\"\n$schema: \"https://schema.intel.com/catalog.orchestrator/0.1/schema\"\nname: spooled\ndescription: d\ntype: HELM\nrootUrl: https://charts.example.com\n";
    let resp = cp
        .http()
        .post(&upload_url)
        .multipart(multipart("r.yaml", registry.to_vec()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = cp
        .http()
        .post(&upload_url)
        .multipart(multipart("bad.yaml", b"specSchema: Nope\n".to_vec()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    spool_empties(&cp, "after a good and a bad upload").await;

    // A client that goes away in the middle of its body.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    tx.send(Ok(vec![b'#'; 300 * 1024])).await.unwrap();
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let part =
        reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(stream)).file_name("slow.yaml");
    let request = cp
        .http()
        .post(&upload_url)
        .multipart(reqwest::multipart::Form::new().part("files", part))
        .send();
    let client = tokio::spawn(request);
    let start = Instant::now();
    while cp.app().upload_spool_usage().0 < 300 * 1024 {
        assert!(
            start.elapsed() < DEADLINE,
            "the body never reached the spool"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(spool_files(&cp).len(), 1);
    client.abort();
    drop(tx);
    spool_empties(&cp, "after the client went away").await;

    // Files a killed server left behind go at the next start.
    std::fs::write(
        cp.data_dir()
            .join("upload-spool/.canopy-upload-left-behind"),
        b"x",
    )
    .unwrap();
    let cp = cp.restart().await;
    assert!(spool_files(&cp).is_empty(), "{:?}", spool_files(&cp));
    cp.stop().await;
}

#[tokio::test]
async fn a_reader_is_refused_before_its_body_is_received() {
    let cp = TestControlPlane::start().await;
    let token = cp.user_token("reader", &["default_cat-r"]).await;
    let resp = cp
        .anonymous_http()
        .post(cp.catalog("default", "/upload"))
        .bearer_auth(&token)
        .multipart(multipart("x.yaml", vec![b'#'; 1024 * 1024]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(cp.app().upload_spool_usage().0, 0);
    assert!(spool_files(&cp).is_empty());
}
