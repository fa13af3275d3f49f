//! Every answer reaches the client, however early the server decides it and whatever the
//! protocol: a real control plane over HTTPS, HTTP/2 (ALPN) and HTTP/1.1, answering before it
//! has read the request body (401 without a token, 413 over the body limit) or after reading a
//! slow one (400 on bad JSON). Each case six times in a row, with reqwest, with a raw client
//! that writes its whole body before reading (as many simple clients do), and with curl.
//!
//! Why this needs care: over HTTP/2, a request body dropped before the answer is sent makes the
//! stream reset with CANCEL, and the client never sees the answer; over HTTP/1.1, a connection
//! closed while the client is still sending makes the kernel answer with a TCP reset, which
//! destroys the answer the client has not read yet. See `canopy_tls::serve`.

use std::sync::Arc;
use std::time::Duration;

use canopy_testkit::TestControlPlane;
use canopy_tls::{ClientTrust, ServerTls};
use reqwest::{StatusCode, Version};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const TRIES: usize = 6;
const PACKAGES: &str = "/v3/projects/default/catalog/deployment_packages";

/// A control plane over HTTPS with its self-signed certificate.
struct Https {
    cp: TestControlPlane,
    base: String,
    cert: std::path::PathBuf,
}

impl Https {
    async fn start() -> Https {
        let cp = TestControlPlane::start_configured(|c| {
            c.tls = Some(ServerTls::SelfSigned {
                dir: c.data_dir.clone(),
            });
        })
        .await;
        let base = cp.url.clone();
        assert!(base.starts_with("https://"), "{base}");
        let cert = cp.data_dir().join("tls").join("cert.pem");
        Https { cp, base, cert }
    }

    fn trust(&self) -> ClientTrust {
        ClientTrust::CaFile(self.cert.clone())
    }

    /// A reqwest client speaking only `version`: ALPN offers only that protocol.
    fn client(&self, version: Version) -> reqwest::Client {
        let mut tls = canopy_tls::client_config(&self.trust()).unwrap().unwrap();
        let b = reqwest::Client::builder().timeout(Duration::from_secs(60));
        let b = if version == Version::HTTP_2 {
            tls.alpn_protocols = vec![b"h2".to_vec()];
            b.http2_prior_knowledge()
        } else {
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            b.http1_only()
        };
        b.use_preconfigured_tls(tls).build().unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
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

/// Sends `make()` `TRIES` times; each must be answered `want` with the API's JSON error body.
async fn six_of_six(
    what: &str,
    want: StatusCode,
    make: impl Fn() -> reqwest::RequestBuilder,
    version: Version,
) {
    for i in 1..=TRIES {
        let resp = match make().send().await {
            Ok(r) => r,
            Err(e) => panic!("{what} over {version:?}, try {i}: no answer: {}", chain(&e)),
        };
        assert_eq!(resp.version(), version, "{what}");
        let status = resp.status();
        let body = match resp.text().await {
            Ok(b) => b,
            Err(e) => panic!(
                "{what} over {version:?}, try {i}: {status} but the body was lost: {}",
                chain(&e)
            ),
        };
        assert_eq!(status, want, "{what} over {version:?}, try {i}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{what} over {version:?}, try {i}: {e}: {body:?}"));
        assert!(json["message"].is_string(), "{what}: {body}");
    }
}

#[tokio::test]
async fn early_401_and_413_reach_reqwest_over_http2_and_http1() {
    let s = Https::start().await;
    let over_limit = vec![b' '; canopy_server::http::MAX_JSON_BODY + 1024 * 1024];
    for version in [Version::HTTP_2, Version::HTTP_11] {
        let http = s.client(version);
        for size in [200 * 1024, 3 * 1024 * 1024] {
            let body = vec![b'x'; size];
            six_of_six(
                &format!("401 for a {size}-byte body without a token"),
                StatusCode::UNAUTHORIZED,
                || {
                    http.post(s.url(PACKAGES))
                        .header("content-type", "application/json")
                        .body(body.clone())
                },
                version,
            )
            .await;
        }
        six_of_six(
            "413 over the JSON body limit",
            StatusCode::PAYLOAD_TOO_LARGE,
            || {
                http.post(s.url(PACKAGES))
                    .bearer_auth(s.cp.admin_token())
                    .header("content-type", "application/json")
                    .body(over_limit.clone())
            },
            version,
        )
        .await;
    }
}

#[tokio::test]
async fn bad_json_sent_slowly_gets_its_400_over_http2_and_http1() {
    let s = Https::start().await;
    for version in [Version::HTTP_2, Version::HTTP_11] {
        let http = s.client(version);
        six_of_six(
            "400 for bad JSON sent slowly",
            StatusCode::BAD_REQUEST,
            || {
                // Three pieces 300 ms apart (well above the 1 KiB/s minimum rate): the server
                // reads it all, then refuses it.
                let pieces = [
                    "{\"name\": \"slow\",",
                    " \"version\": \"1.0.0\",",
                    " ]]] not json",
                ];
                let stream = futures::stream::iter(pieces).then(|p| async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Ok::<_, std::io::Error>(bytes::Bytes::from_static(p.as_bytes()))
                });
                http.post(s.url(PACKAGES))
                    .bearer_auth(s.cp.admin_token())
                    .header("content-type", "application/json")
                    .body(reqwest::Body::wrap_stream(stream))
            },
            version,
        )
        .await;
    }
}

use futures::StreamExt as _;

/// A TLS connection to the server offering only `alpn`.
async fn tls_connect(
    s: &Https,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut config = canopy_tls::client_config(&s.trust()).unwrap().unwrap();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let addr = s.cp.url.trim_start_matches("https://").to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    connector
        .connect(
            canopy_tls::rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap()
}

/// Reads one HTTP/1.1 response (head and `Content-Length` body) from `io`.
async fn read_response<IO: tokio::io::AsyncRead + Unpin>(io: &mut IO) -> std::io::Result<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Ok(text);
            }
        }
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The HTTP/1.1 client that loses answers most easily: it writes the whole request, body
/// included, before it reads anything. The server answers 401 at once; the client must still
/// read that 401 (not a reset, not a TLS EOF), and the connection stays usable (the server read
/// the rest of the body). With `Connection: close`, the server closes after the answer, cleanly.
#[tokio::test]
async fn a_client_that_sends_its_whole_body_first_still_reads_the_answer() {
    let s = Https::start().await;
    let size = 20 * 1024 * 1024;
    let body = vec![b'x'; size];
    for i in 1..=TRIES {
        let close = i % 2 == 0;
        let mut tls = tls_connect(&s, b"http/1.1").await;
        let head = format!(
            "POST {PACKAGES} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {size}\r\n{}\r\n",
            if close { "Connection: close\r\n" } else { "" }
        );
        let sent = async {
            tls.write_all(head.as_bytes()).await?;
            tls.write_all(&body).await?;
            tls.flush().await
        }
        .await;
        if let Err(e) = sent {
            panic!("try {i}: the server cut the connection while the body was sent: {e}");
        }
        let answer = tokio::time::timeout(Duration::from_secs(60), read_response(&mut tls))
            .await
            .expect("an answer in time")
            .unwrap_or_else(|e| panic!("try {i}: no answer: {e}"));
        assert!(answer.starts_with("HTTP/1.1 401"), "try {i}: {answer}");
        assert!(answer.contains("authentication"), "try {i}: {answer}");
        if close {
            let mut rest = Vec::new();
            let end = tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut rest))
                .await
                .expect("the server closes after its answer");
            assert!(end.is_ok() && rest.is_empty(), "try {i}: {end:?} {rest:?}");
        } else {
            tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await
                .unwrap();
            let again = read_response(&mut tls).await.unwrap();
            assert!(again.starts_with("HTTP/1.1 200"), "try {i}: {again}");
        }
    }
}

/// One curl run: `curl -sS PROTO --cacert CERT -X POST ... URL` with `args`, its standard input
/// written in `pieces` 300 ms apart; the answer's body, then `CODE VERSION` on the last line.
async fn curl(s: &Https, proto: &str, args: &[String], pieces: &[&str]) -> String {
    use std::process::Stdio;
    let mut child = tokio::process::Command::new("curl")
        .args(["-sS", proto, "--cacert"])
        .arg(&s.cert)
        .args([
            "-o",
            "-",
            "-w",
            "\n%{http_code} %{http_version}",
            "-X",
            "POST",
        ])
        .args(["-H", "content-type: application/json"])
        .args(args)
        .arg(s.url(PACKAGES).replace("127.0.0.1", "localhost"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for p in pieces {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stdin.write_all(p.as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "curl {proto} {args:?}: {} {}{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// curl, which picks HTTP/2 over HTTPS as browsers do: exit 0 and the answer, six times of six,
/// for both protocols: 401 without a token (200 KB, 3 MB), 413 over the body limit, 400 for bad
/// JSON sent slowly. Skipped (with a note) where curl is not installed.
#[tokio::test]
async fn curl_gets_early_answers_over_http2_and_http1() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("curl is not installed: skipping");
        return;
    }
    let s = Https::start().await;
    let dir = tempfile::tempdir().unwrap();
    let body = |size: usize| {
        let file = dir.path().join(format!("body-{size}"));
        std::fs::write(&file, vec![b' '; size]).unwrap();
        format!("@{}", file.display())
    };
    let bearer = format!("authorization: Bearer {}", s.cp.admin_token());
    let cases: Vec<(&str, Vec<String>, Vec<&str>, &str)> = vec![
        (
            "401, 200 KB",
            vec!["--data-binary".into(), body(200 * 1024)],
            vec![],
            "401",
        ),
        (
            "401, 3 MB",
            vec!["--data-binary".into(), body(3 * 1024 * 1024)],
            vec![],
            "401",
        ),
        (
            "413",
            vec![
                "-H".into(),
                bearer.clone(),
                "--data-binary".into(),
                body(canopy_server::http::MAX_JSON_BODY + 1024 * 1024),
            ],
            vec![],
            "413",
        ),
        (
            "400, bad JSON sent slowly",
            vec!["-H".into(), bearer.clone(), "-T".into(), "-".into()],
            vec![
                "{\"name\": \"slow\",",
                " \"version\": \"1.0.0\",",
                " ]]] not json",
            ],
            "400",
        ),
    ];
    for (what, args, pieces, code) in &cases {
        for proto in ["--http2", "--http1.1"] {
            for i in 1..=TRIES {
                let out = curl(&s, proto, args, pieces).await;
                let version = if proto == "--http2" { "2" } else { "1.1" };
                assert!(
                    out.trim_end().ends_with(&format!("{code} {version}")),
                    "curl {proto}, {what}, try {i}: {out}"
                );
                assert!(out.contains("\"message\""), "curl {proto}, {what}: {out}");
            }
        }
    }
}
