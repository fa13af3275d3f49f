//! Client tests against a tiny canned HTTP responder: they pin the wire format (paths, query
//! strings, wrappers, multipart) and the error mapping without needing the real server, whose
//! author covers the end-to-end behaviour through the test harness.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use canopy_core::catalog::{Kind, Registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// A request as the fake server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    headers: String,
    body: Vec<u8>,
}

type Handler = Arc<dyn Fn(&Seen) -> (u16, String) + Send + Sync>;

struct Fake {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    async fn start(handler: impl Fn(&Seen) -> (u16, String) + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let seen2 = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handler = handler.clone();
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let _ = serve_one(stream, handler, seen).await;
                });
            }
        });
        Fake { url, seen }
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve_one(
    mut stream: TcpStream,
    handler: Handler,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let mut first = head.lines().next().unwrap_or("").split(' ');
    let req = Seen {
        method: first.next().unwrap_or("").to_owned(),
        target: first.next().unwrap_or("").to_owned(),
        headers: head.clone(),
        body: buf[head_end..].to_vec(),
    };
    seen.lock().unwrap().push(req.clone());
    let (status, body) = handler(&req);
    if status == 0 {
        // Never answer (for timeout tests).
        tokio::time::sleep(Duration::from_secs(30)).await;
        return Ok(());
    }
    // A 429 says when to come back, as the server's rate limiter does (here: at once); a used-up
    // quota (the test says so in its body) does not.
    let retry = if status == 429 && !body.contains("quota used up") {
        "retry-after: 0\r\n"
    } else {
        ""
    };
    let resp = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{retry}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(resp.as_bytes()).await?;
    stream.shutdown().await
}

fn registry_json(name: &str) -> String {
    format!(r#"{{"name":"{name}","rootUrl":"oci://r.example.com/x","type":"HELM"}}"#)
}

#[tokio::test]
async fn rate_limited_requests_are_sent_again() {
    let calls = Arc::new(Mutex::new(0u32));
    let counter = calls.clone();
    let fake = Fake::start(move |_| {
        let mut n = counter.lock().unwrap();
        *n += 1;
        if *n <= 3 {
            (
                429,
                r#"{"code":"resource_exhausted","message":"rate limit"}"#.into(),
            )
        } else {
            (200, "{}".into())
        }
    })
    .await;
    let c = Client::new(&fake.url, "p").unwrap();
    c.healthz()
        .await
        .expect("succeeds once the limit lets it through");
    assert_eq!(fake.requests().len(), 4, "three refusals, then the answer");
}

#[tokio::test]
async fn a_used_up_quota_is_not_waited_out() {
    // The server's upload-session quotas answer 429 without Retry-After: waiting does not help.
    let fake = Fake::start(|_| {
        (
            429,
            r#"{"code":8,"message":"quota used up: project p has 10 open upload sessions"}"#.into(),
        )
    })
    .await;
    let c = Client::new(&fake.url, "p").unwrap();
    let started = std::time::Instant::now();
    let err = c.healthz().await.unwrap_err();
    assert_eq!(err.status(), Some(reqwest::StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(fake.requests().len(), 1, "not sent again");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_streamed_upload_gets_the_rate_limit_as_is() {
    let fake = Fake::start(|_| (429, r#"{"message":"rate limit"}"#.into())).await;
    let c = Client::new(&fake.url, "p").unwrap();
    let url = c.url(&["upload"]);
    let body = reqwest::Body::wrap_stream(futures::stream::iter(vec![Ok::<_, std::io::Error>(
        bytes::Bytes::from_static(b"data"),
    )]));
    let err = c
        .execute(c.request(Method::POST, &url).body(body), DEFAULT_TIMEOUT)
        .await
        .unwrap_err();
    assert_eq!(
        err.status(),
        Some(reqwest::StatusCode::TOO_MANY_REQUESTS),
        "{err:?}"
    );
    assert_eq!(fake.requests().len(), 1, "not sent again");
}

#[test]
fn new_refuses_bad_urls() {
    for bad in ["", "127.0.0.1:7070", "ftp://x.example.com", "http://"] {
        let e = Client::new(bad, "p").unwrap_err();
        assert!(matches!(e, ClientError::InvalidUrl { .. }), "{bad}: {e:?}");
    }
    let c = Client::new("http://h:1/prefix/", "p").unwrap();
    assert_eq!(c.base_url(), "http://h:1/prefix");
    assert_eq!(
        c.catalog_url(&["applications", "a b/c"]).as_str(),
        "http://h:1/prefix/v3/projects/p/catalog/applications/a%20b%2Fc"
    );
    let c = Client::new("http://h:1", "p").unwrap();
    assert_eq!(c.url(&["healthz"]).as_str(), "http://h:1/healthz");
    assert_eq!(c.with_project("q").project(), "q");
}

#[tokio::test]
async fn get_registry_unwraps_and_asks_for_secrets() {
    let fake = Fake::start(|_| (200, format!(r#"{{"registry":{}}}"#, registry_json("r1")))).await;
    let c = Client::new(&fake.url, "p1").unwrap();
    let r = c.get_registry("r1", true).await.unwrap();
    assert_eq!(r.name, "r1");
    assert_eq!(r.registry_type, "HELM");
    let seen = fake.requests();
    assert_eq!(seen[0].method, "GET");
    assert_eq!(
        seen[0].target,
        "/v3/projects/p1/catalog/registries/r1?showSensitiveInfo=true"
    );
    c.get_registry("r1", false).await.unwrap();
    assert_eq!(
        fake.requests()[1].target,
        "/v3/projects/p1/catalog/registries/r1"
    );
}

#[tokio::test]
async fn create_and_update_send_entity_bodies() {
    let fake = Fake::start(|s| match s.method.as_str() {
        "POST" => (200, format!(r#"{{"registry":{}}}"#, registry_json("r1"))),
        _ => (200, "{}".to_owned()),
    })
    .await;
    let c = Client::new(&fake.url, "p").unwrap();
    let reg = Registry {
        name: "r1".into(),
        root_url: "oci://r.example.com/x".into(),
        registry_type: "HELM".into(),
        ..Default::default()
    };
    c.create_registry(&reg).await.unwrap();
    c.update_registry("r1", &reg).await.unwrap();
    c.delete_registry("r1").await.unwrap();
    let seen = fake.requests();
    let sent: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(sent["rootUrl"], "oci://r.example.com/x");
    assert_eq!(seen[1].method, "PUT");
    assert_eq!(seen[1].target, "/v3/projects/p/catalog/registries/r1");
    assert_eq!(seen[2].method, "DELETE");
}

#[tokio::test]
async fn list_encodes_params_and_reads_totals() {
    let fake = Fake::start(|_| {
        (
            200,
            r#"{"applications":[{"name":"a","version":"1","chartName":"c","chartVersion":"1","helmRegistryName":"h"}],"totalElements":7}"#.to_owned(),
        )
    })
    .await;
    let c = Client::new(&fake.url, "p").unwrap();
    let params = ListParams {
        page_size: Some(1),
        offset: Some(3),
        order_by: Some("name desc".into()),
        filter: Some("name=a".into()),
        kinds: vec![Kind::Normal, Kind::Addon],
        ..Default::default()
    };
    let page = c.list_applications(&params).await.unwrap();
    assert_eq!(page.total, 7);
    assert_eq!(page.items[0].name, "a");
    assert_eq!(
        fake.requests()[0].target,
        "/v3/projects/p/catalog/applications?pageSize=1&offset=3&orderBy=name+desc&filter=name%3Da&kinds=KIND_NORMAL&kinds=KIND_ADDON"
    );
}

#[tokio::test]
async fn list_all_walks_pages_and_tolerates_omitted_empty_lists() {
    let fake = Fake::start(|s| {
        let offset: usize = s
            .target
            .split(['?', '&'])
            .find_map(|kv| kv.strip_prefix("offset="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let names: Vec<String> = (offset..5.min(offset + 2))
            .map(|i| registry_json(&format!("r{i}")))
            .collect();
        if names.is_empty() {
            return (200, r#"{"totalElements":5}"#.to_owned());
        }
        (
            200,
            format!(
                r#"{{"registries":[{}],"totalElements":5}}"#,
                names.join(",")
            ),
        )
    })
    .await;
    let c = Client::new(&fake.url, "p").unwrap();
    let params = ListParams {
        page_size: Some(2),
        ..Default::default()
    };
    let all = c.list_all_registries(&params, false).await.unwrap();
    let names: Vec<_> = all.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["r0", "r1", "r2", "r3", "r4"]);
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn versions_reference_count_and_download() {
    let fake = Fake::start(|s| {
        if s.target.ends_with("/versions") {
            (
                200,
                r#"{"application":[{"name":"a","version":"1"},{"name":"a","version":"2"}]}"#
                    .to_owned(),
            )
        } else if s.target.ends_with("/reference_count") {
            (200, "{}".to_owned())
        } else {
            (200, "tarball-bytes".to_owned())
        }
    })
    .await;
    let c = Client::new(&fake.url, "p").unwrap();
    let versions = c.application_versions("a").await.unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(c.application_reference_count("a", "1").await.unwrap(), 0);
    let bytes = c.download_deployment_package("d", "1.0").await.unwrap();
    assert_eq!(bytes, b"tarball-bytes");
    assert_eq!(
        fake.requests()[2].target,
        "/v3/projects/p/catalog/deployment_packages/d/versions/1.0/download"
    );
}

#[tokio::test]
async fn api_errors_keep_the_server_message() {
    let fake = Fake::start(|_| {
        (
            404,
            r#"{"code":5,"message":"registry nope not found","details":[]}"#.to_owned(),
        )
    })
    .await;
    let c = Client::new(&fake.url, "p").unwrap();
    let e = c.get_registry("nope", false).await.unwrap_err();
    assert!(e.is_not_found());
    assert_eq!(e.to_string(), "registry nope not found");
}

#[tokio::test]
async fn decode_errors_name_the_url() {
    let fake = Fake::start(|_| (200, r#"{"something":"else"}"#.to_owned())).await;
    let c = Client::new(&fake.url, "p").unwrap();
    let e = c.get_artifact("x").await.unwrap_err();
    assert!(matches!(e, ClientError::Decode { .. }), "{e:?}");
    assert!(e.to_string().contains("/catalog/artifacts/x"), "{e}");
}

#[tokio::test]
async fn unreachable_server_says_what_to_check() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let c = Client::new(&url, "p").unwrap();
    let e = c.healthz().await.unwrap_err();
    assert!(e.is_unreachable(), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("could not reach the Canopy server at {url} (")),
        "{msg}"
    );
    assert!(
        msg.ends_with("; check that it is running and listening at that address"),
        "{msg}"
    );
}

#[tokio::test]
async fn slow_server_times_out() {
    let fake = Fake::start(|_| (0, String::new())).await;
    let c = Client::new(&fake.url, "p")
        .unwrap()
        .with_timeout(Duration::from_millis(200));
    let e = c.healthz().await.unwrap_err();
    assert!(matches!(e, ClientError::Timeout { .. }), "{e:?}");
    assert!(e.is_unreachable());
}

#[tokio::test]
async fn bulk_upload_sends_one_part_per_file() {
    let fake = Fake::start(|_| {
        (
            200,
            r#"[{"sessionId":"s1","uploadNumber":1,"errorMessages":[]},{"sessionId":"s1","uploadNumber":2,"changes":[{"action":"created","kind":"application","key":"web:1"}]}]"#
                .to_owned(),
        )
    })
    .await;
    let c = Client::new(&fake.url, "p").unwrap();
    let files = vec![
        UploadFile {
            name: "app.yaml".into(),
            content: b"specSchema: Application\n".to_vec(),
        },
        UploadFile {
            name: "sub/values.yaml".into(),
            content: b"a: 1\n".to_vec(),
        },
    ];
    let resp = c.bulk_upload(&files).await.unwrap();
    assert_eq!(resp.len(), 2);
    assert_eq!(resp[1].session_id, "s1");
    assert!(resp[1].error_messages.is_empty());
    assert_eq!(resp[1].changes[0].key, "web:1");
    let seen = &fake.requests()[0];
    assert_eq!(seen.target, "/v3/projects/p/catalog/upload");
    assert!(
        seen.headers
            .to_ascii_lowercase()
            .contains("multipart/form-data")
    );
    let body = String::from_utf8_lossy(&seen.body);
    assert_eq!(body.matches(r#"name="files""#).count(), 2, "{body}");
    assert!(body.contains(r#"filename="sub/values.yaml""#), "{body}");

    let too_many: Vec<_> = (0..=MAX_UPLOAD_FILES)
        .map(|i| UploadFile {
            name: format!("f{i}.yaml"),
            content: vec![],
        })
        .collect();
    let e = c.bulk_upload(&too_many).await.unwrap_err();
    assert!(
        e.to_string().contains("more than one upload takes (100)"),
        "{e}"
    );
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn session_upload_sends_base64_and_session() {
    let fake = Fake::start(|_| {
        (
            200,
            r#"{"sessionId":"abc","uploadNumber":2,"errorMessages":["x.yaml: bad"]}"#.to_owned(),
        )
    })
    .await;
    let c = Client::new(&fake.url, "p").unwrap();
    let file = UploadFile {
        name: "x.yaml".into(),
        content: b"hi".to_vec(),
    };
    let resp = c.upload_file(Some("abc"), true, &file).await.unwrap();
    assert_eq!(resp.error_messages, ["x.yaml: bad"]);
    let seen = &fake.requests()[0];
    assert_eq!(
        seen.target,
        "/v3/projects/p/catalog/uploads?sessionId=abc&lastUpload=true"
    );
    let body: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(body["fileName"], "x.yaml");
    assert_eq!(body["artifact"], "aGk=");
}

#[tokio::test]
async fn upload_in_session_chains_the_session_id() {
    let fake = Fake::start(|s| {
        let n = if s.target.contains("sessionId") { 2 } else { 1 };
        (
            200,
            format!(r#"{{"sessionId":"sess","uploadNumber":{n},"errorMessages":[]}}"#),
        )
    })
    .await;
    let c = Client::new(&fake.url, "p").unwrap();
    let files: Vec<_> = ["a.yaml", "b.yaml", "c.yaml"]
        .iter()
        .map(|n| UploadFile {
            name: (*n).into(),
            content: b"x: 1".to_vec(),
        })
        .collect();
    let resp = c.upload_in_session(&files).await.unwrap();
    assert_eq!(resp.len(), 3);
    let targets: Vec<String> = fake.requests().into_iter().map(|s| s.target).collect();
    assert_eq!(
        targets,
        [
            "/v3/projects/p/catalog/uploads?lastUpload=false",
            "/v3/projects/p/catalog/uploads?sessionId=sess&lastUpload=false",
            "/v3/projects/p/catalog/uploads?sessionId=sess&lastUpload=true",
        ]
    );
}

// ---- fleet ------------------------------------------------------------------------------------

const TOKEN: &str = r#"{"id":"t1","description":"lab","createTime":"2026-01-01T00:00:00Z","expireTime":"2026-01-02T00:00:00Z","state":"ACTIVE","uses":0,"maxUses":3}"#;
const EDGE: &str = r#"{"id":"e-1","name":"store-1","labels":{"site":"paris"},"createTime":"2026-01-01T00:00:00Z","connection":"NEVER_CONNECTED","state":"UNKNOWN","lastSeen":null,"agentVersion":"","capabilities":[],"engine":"","generation":1,"appliedGeneration":0,"deployments":2}"#;

#[tokio::test]
async fn enrollment_tokens_create_list_revoke() {
    let fake = Fake::start(|s| match s.method.as_str() {
        "POST" => (201, format!(r#"{{"token":{TOKEN},"secret":"cnt_secret"}}"#)),
        "GET" => (200, format!(r#"{{"enrollmentTokens":[{TOKEN}]}}"#)),
        _ => (
            200,
            format!(
                r#"{{"enrollmentToken":{}}}"#,
                TOKEN.replace("ACTIVE", "REVOKED")
            ),
        ),
    })
    .await;
    let c = Client::new(&fake.url, "p").unwrap();
    let created = c
        .create_enrollment_token(&NewEnrollmentToken {
            description: "lab".into(),
            ttl: Some(Duration::from_secs(3600)),
            max_uses: 3,
        })
        .await
        .unwrap();
    assert_eq!(created.secret, "cnt_secret");
    assert_eq!(created.token.max_uses, 3);
    assert!(created.token.expire_time.is_some());
    let listed = c.list_enrollment_tokens().await.unwrap();
    assert_eq!(listed[0].id, "t1");
    let revoked = c.revoke_enrollment_token("t1").await.unwrap();
    assert_eq!(revoked.state, "REVOKED");

    let seen = fake.requests();
    assert_eq!(seen[0].target, "/canopy/v1/projects/p/enrollment-tokens");
    let body: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"description": "lab", "ttlSeconds": 3600, "maxUses": 3})
    );
    assert_eq!(seen[1].method, "GET");
    assert_eq!(
        (seen[2].method.as_str(), seen[2].target.as_str()),
        ("DELETE", "/canopy/v1/projects/p/enrollment-tokens/t1")
    );

    // Without a lifetime the server's default applies: the field is left out.
    c.create_enrollment_token(&NewEnrollmentToken::default())
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&fake.requests()[3].body).unwrap();
    assert_eq!(body, serde_json::json!({"description": "", "maxUses": 0}));
}

#[tokio::test]
async fn edges_list_get_label_remove_workloads() {
    let fake = Fake::start(|s| match (s.method.as_str(), s.target.as_str()) {
        ("GET", t) if t.ends_with("/workloads") => (
            200,
            r#"{"apps":[{"deploymentId":"d1","app":"web","state":"RUNNING","message":"","deploymentGeneration":1,"workloads":[{"kind":"container","name":"httpd","image":"busybox","state":"running","restarts":0}]}]}"#.to_owned(),
        ),
        ("GET", t) if t.contains("/edges?") => (
            200,
            format!(r#"{{"edges":[{EDGE}],"totalElements":4}}"#),
        ),
        ("DELETE", _) => (200, "{}".to_owned()),
        _ => (200, format!(r#"{{"edge":{EDGE}}}"#)),
    })
    .await;
    let c = Client::new(&fake.url, "p").unwrap();
    let page = c
        .list_edges(&ListParams {
            page_size: Some(1),
            labels: vec!["site=paris,tier=edge".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, 4);
    assert_eq!(page.items[0].labels["site"], "paris");
    assert_eq!(page.items[0].deployments, 2);
    assert!(page.items[0].last_seen.is_none());
    let edge = c.get_edge("store 1").await.unwrap();
    assert_eq!(edge.name, "store-1");
    let set = std::collections::BTreeMap::from([("tier".to_owned(), "edge".to_owned())]);
    c.label_edge("store-1", &set, &["old".to_owned()])
        .await
        .unwrap();
    c.remove_edge("e-1").await.unwrap();
    let apps = c.edge_workloads("e-1").await.unwrap();
    assert_eq!(apps[0].app, "web");
    assert_eq!(apps[0].workloads[0].name, "httpd");

    let seen = fake.requests();
    assert_eq!(
        seen[0].target,
        "/canopy/v1/projects/p/edges?pageSize=1&labels=site%3Dparis%2Ctier%3Dedge"
    );
    assert_eq!(seen[1].target, "/canopy/v1/projects/p/edges/store%201");
    assert_eq!(seen[2].method, "PATCH");
    assert_eq!(seen[2].target, "/canopy/v1/projects/p/edges/store-1/labels");
    let body: serde_json::Value = serde_json::from_slice(&seen[2].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"set": {"tier": "edge"}, "remove": ["old"]})
    );
    assert_eq!(
        (seen[3].method.as_str(), seen[3].target.as_str()),
        ("DELETE", "/canopy/v1/projects/p/edges/e-1")
    );
    assert_eq!(seen[4].target, "/canopy/v1/projects/p/edges/e-1/workloads");
}

// ---- deployments ------------------------------------------------------------------------------

const DEPLOYMENT: &str = r#"{"appName":"stack","appVersion":"1.0","apps":[],"createTime":"2026-01-01T00:00:00Z","defaultProfileName":"default","deployId":"d1","deploymentType":"auto-scaling","displayName":"shop","name":"deployment-abcde","networkName":"","overrideValues":[{"appName":"web","targetNamespace":"","values":{"password":"********"}}],"profileName":"default","publisherName":"","serviceExports":[],"status":{"state":"DEPLOYING","message":"","summary":{"total":0,"running":0,"down":0,"unknown":0,"type":"clusterCounts"}},"targetClusters":[],"allAppTargetClusters":{"appName":"","labels":{"site":"paris"}}}"#;

#[tokio::test]
async fn deployments_round_trip_through_the_model() {
    let fake = Fake::start(|s| match (s.method.as_str(), s.target.as_str()) {
        ("POST", _) => (200, r#"{"deploymentId":"d1"}"#.to_owned()),
        ("GET", t) if t.contains("/deployments?") => (
            200,
            format!(r#"{{"deployments":[{DEPLOYMENT}],"totalElements":1}}"#),
        ),
        ("DELETE", _) => (200, "{}".to_owned()),
        _ => (200, format!(r#"{{"deployment":{DEPLOYMENT}}}"#)),
    })
    .await;
    let c = Client::new(&fake.url, "p").unwrap();
    let page = c
        .list_deployments(&ListParams {
            labels: vec!["site=paris".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.items[0].deploy_id, "d1");
    let mut d = c.get_deployment("d1").await.unwrap();
    assert_eq!(
        d.status.as_ref().unwrap().state,
        canopy_deploy::model::State::Deploying
    );
    d.app_version = "2.0".into();
    c.update_deployment("d1", &d).await.unwrap();
    let new = canopy_deploy::model::Deployment {
        app_name: "stack".into(),
        app_version: "1.0".into(),
        ..Default::default()
    };
    assert_eq!(c.create_deployment(&new).await.unwrap(), "d1");
    c.delete_deployment("d1", DeleteType::All).await.unwrap();
    c.delete_deployment("d1", DeleteType::ParentOnly)
        .await
        .unwrap();

    let seen = fake.requests();
    assert_eq!(
        seen[0].target,
        "/v1/projects/p/appdeployment/deployments?labels=site%3Dparis"
    );
    assert_eq!(
        seen[1].target,
        "/v1/projects/p/appdeployment/deployments/d1"
    );
    assert_eq!(seen[2].method, "PUT");
    // The PUT sends back what GET gave (masked secrets included), with the change.
    let put: serde_json::Value = serde_json::from_slice(&seen[2].body).unwrap();
    assert_eq!(put["appVersion"], "2.0");
    assert_eq!(put["overrideValues"][0]["values"]["password"], "********");
    assert_eq!(put["allAppTargetClusters"]["labels"]["site"], "paris");
    assert_eq!(seen[3].method, "POST");
    assert_eq!(seen[3].target, "/v1/projects/p/appdeployment/deployments");
    assert_eq!(
        seen[4].target,
        "/v1/projects/p/appdeployment/deployments/d1?deleteType=ALL"
    );
    assert_eq!(
        seen[5].target,
        "/v1/projects/p/appdeployment/deployments/d1?deleteType=PARENT_ONLY"
    );
}

#[tokio::test]
async fn deployment_views_and_summary() {
    let fake = Fake::start(|s| {
        let t = s.target.as_str();
        if t.contains("/summary/") {
            (
                200,
                r#"{"total":3,"running":1,"down":1,"deploying":1,"updating":0,"terminating":0,"error":0,"unknown":0}"#.to_owned(),
            )
        } else if t.contains("/deployments/d1/clusters") {
            (
                200,
                r#"{"clusters":[{"apps":[{"id":"a1","name":"web","status":{"state":"RUNNING","message":""}}],"id":"e-1","name":"store-1","status":{"state":"RUNNING","message":"","summary":{"total":1,"running":1,"down":0,"unknown":0,"type":"appCounts"}}}],"totalElements":1}"#.to_owned(),
            )
        } else if t.contains("/deployments/clusters/") {
            (
                200,
                r#"{"deploymentInstancesCluster":[{"apps":[],"deploymentDisplayName":"shop","deploymentName":"deployment-abcde","deploymentUid":"d1","status":{"state":"RUNNING","message":""}}],"totalElements":1}"#.to_owned(),
            )
        } else if t.ends_with("/appdeployment/clusters/e-1") {
            (
                200,
                r#"{"cluster":{"apps":[],"id":"e-1","name":"store-1","status":{"state":"RUNNING","message":""}}}"#.to_owned(),
            )
        } else {
            (
                200,
                r#"{"clusters":[{"createTime":"2026-01-01T00:00:00Z","id":"e-1","labels":{"site":"paris"},"name":"store-1"}],"totalElements":1}"#.to_owned(),
            )
        }
    })
    .await;
    let c = Client::new(&fake.url, "p").unwrap();
    let s = c
        .deployments_status(&["site=paris".into(), String::new()])
        .await
        .unwrap();
    assert_eq!((s.total, s.running, s.deploying), (3, 1, 1));
    let clusters = c
        .all_deployment_clusters("d1", &ListParams::default())
        .await
        .unwrap();
    assert_eq!(clusters[0].status.summary.as_ref().unwrap().running, 1);
    let on = c
        .deployments_on_cluster("e-1", &ListParams::default())
        .await
        .unwrap();
    assert_eq!(on.items[0].deployment_uid, "d1");
    let inv = c
        .list_clusters(&ListParams {
            labels: vec!["site=paris".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(inv.items[0].labels["site"], "paris");
    assert_eq!(c.get_cluster("e-1").await.unwrap().name, "store-1");

    let targets: Vec<String> = fake.requests().into_iter().map(|s| s.target).collect();
    assert_eq!(
        targets,
        [
            "/v1/projects/p/summary/deployments_status?labels=site%3Dparis",
            "/v1/projects/p/appdeployment/deployments/d1/clusters?pageSize=500&offset=0",
            "/v1/projects/p/deployments/clusters/e-1",
            "/v1/projects/p/appdeployment/clusters?labels=site%3Dparis",
            "/v1/projects/p/appdeployment/clusters/e-1",
        ]
    );
}

#[tokio::test]
async fn missing_deployment_is_not_found() {
    let fake = Fake::start(|_| {
        (
            404,
            r#"{"code":5,"message":"deployment d9 not found","details":[]}"#.to_owned(),
        )
    })
    .await;
    let c = Client::new(&fake.url, "p").unwrap();
    let e = c.get_deployment("d9").await.unwrap_err();
    assert!(e.is_not_found());
    assert_eq!(e.to_string(), "deployment d9 not found");
}
