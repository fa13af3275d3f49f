//! canopy-tls end to end on loopback: certificates (self-signed, CA-signed, broken files), the
//! three kinds of client trust, HTTP/1.1 and HTTP/2 over TLS and plain, and the accept loop's
//! defences (header timeout, handshake timeout, connection cap, bounded graceful shutdown), and
//! answers given before the request body was read (drained, or a lingering close).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use canopy_tls::{ClientTrust, Fingerprint, ServeOptions, ServerTls, TlsError};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

fn router() -> Router {
    Router::new()
        .route("/hello", get(|| async { "hi" }))
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                "slow"
            }),
        )
        // Answers without reading the request body (as an authentication check does).
        .route(
            "/refuse",
            axum::routing::post(|| async { (axum::http::StatusCode::UNAUTHORIZED, "refused") }),
        )
        .route(
            "/forever",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "never"
            }),
        )
}

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn start(tls: Option<Arc<rustls::ServerConfig>>, options: ServeOptions) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(canopy_tls::serve_with(
            listener,
            router(),
            tls,
            options,
            async move {
                let _ = rx.await;
            },
        ));
        Running {
            addr,
            stop: Some(tx),
            task,
        }
    }

    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}{path}", self.addr)
    }

    /// Signals shutdown and waits (bounded) for the loop to return; how long it took.
    async fn stop(mut self) -> Duration {
        let started = Instant::now();
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
            .unwrap();
        started.elapsed()
    }
}

fn client(trust: &ClientTrust) -> reqwest::Client {
    canopy_tls::configure(reqwest::Client::builder(), trust)
        .unwrap()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The whole error chain of a reqwest failure.
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

fn self_signed(dir: &Path) -> (Arc<rustls::ServerConfig>, canopy_tls::CertInfo) {
    canopy_tls::load_server_config(&ServerTls::SelfSigned {
        dir: dir.to_owned(),
    })
    .unwrap()
}

#[test]
fn self_signed_certificate_is_generated_once_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, first) = self_signed(dir.path());
    assert!(first.generated);
    assert!(first.fingerprint_sha256.starts_with("sha256:"), "{first:?}");
    assert_eq!(first.fingerprint_sha256.len(), 7 + 64);
    assert!(first.subject.contains("Canopy"), "{}", first.subject);
    let years = (first.not_after - time::OffsetDateTime::now_utc()).whole_days() / 365;
    assert!((9..=10).contains(&years), "{:?}", first.not_after);
    assert_eq!(first.cert_file, dir.path().join("tls/cert.pem"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("tls/key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the key is private");
    }

    let (_, again) = self_signed(dir.path());
    assert!(!again.generated);
    assert_eq!(again.fingerprint_sha256, first.fingerprint_sha256);
    assert_eq!(again.fingerprint(), first.fingerprint());

    // A certificate without its key is not silently replaced.
    std::fs::remove_file(dir.path().join("tls/key.pem")).unwrap();
    let e = canopy_tls::load_server_config(&ServerTls::SelfSigned {
        dir: dir.path().to_owned(),
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("key.pem") && e.contains("missing"), "{e}");
}

#[tokio::test]
async fn pinned_fingerprint_trusts_exactly_that_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (config, info) = self_signed(dir.path());
    let server = Running::start(Some(config), ServeOptions::default()).await;

    let pinned = client(&ClientTrust::Pinned(info.fingerprint()));
    let resp = pinned
        .get(server.url("https", "/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2, "ALPN picks h2");
    assert_eq!(resp.text().await.unwrap(), "hi");
    // Handlers see the peer's address.
    let peer = pinned
        .get(server.url("https", "/peer"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(peer.starts_with("127.0.0.1:"), "{peer}");
    // Pinning ignores names: `localhost` works as well as the address.
    let by_name = format!("https://localhost:{}/hello", server.addr.port());
    assert_eq!(
        pinned.get(by_name).send().await.unwrap().status(),
        reqwest::StatusCode::OK
    );

    // Another fingerprint: refused, saying why.
    let wrong = Fingerprint::of_der(b"some other certificate");
    let e = client(&ClientTrust::Pinned(wrong))
        .get(server.url("https", "/hello"))
        .send()
        .await
        .unwrap_err();
    let text = chain(&e);
    assert!(
        text.contains("not the pinned") && text.contains(&wrong.to_string()),
        "{text}"
    );
    assert!(text.contains(&info.fingerprint_sha256), "{text}");

    // The public roots do not trust a self-signed certificate.
    let e = client(&ClientTrust::System)
        .get(server.url("https", "/hello"))
        .send()
        .await
        .unwrap_err();
    assert!(chain(&e).contains("certificate"), "{}", chain(&e));

    // Plain HTTP to the TLS port gets nothing useful.
    assert!(
        reqwest::get(server.url("http", "/hello"))
            .await
            .map(|r| !r.status().is_success())
            .unwrap_or(true)
    );
    server.stop().await;
}

/// A test CA and a server certificate it signed for localhost and 127.0.0.1, as PEM files.
struct TestPki {
    ca: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn test_pki(dir: &Path, name: &str) -> TestPki {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();

    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "canopy.test");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();

    let pki = TestPki {
        ca: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}-cert.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    // The chain: leaf then CA.
    std::fs::write(&pki.cert, format!("{}{}", cert.pem(), ca.pem())).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    std::fs::write(&pki.ca, ca.pem()).unwrap();
    pki
}

#[tokio::test]
async fn ca_file_trusts_certificates_its_ca_signed() {
    let dir = tempfile::tempdir().unwrap();
    let ours = test_pki(dir.path(), "ours");
    let theirs = test_pki(dir.path(), "theirs");
    let (config, info) = canopy_tls::load_server_config(&ServerTls::Files {
        cert: ours.cert.clone(),
        key: ours.key.clone(),
    })
    .unwrap();
    assert!(!info.generated);
    assert_eq!(info.subject, "CN=canopy.test");
    let server = Running::start(Some(config), ServeOptions::default()).await;

    let trusted = client(&ClientTrust::CaFile(ours.ca.clone()));
    for url in [
        server.url("https", "/hello"),
        format!("https://localhost:{}/hello", server.addr.port()),
    ] {
        let resp = trusted.get(&url).send().await.unwrap();
        assert_eq!(resp.text().await.unwrap(), "hi", "{url}");
    }

    // Another CA's file: the server is not trusted.
    let e = client(&ClientTrust::CaFile(theirs.ca.clone()))
        .get(server.url("https", "/hello"))
        .send()
        .await
        .unwrap_err();
    let text = chain(&e);
    assert!(text.contains("certificate"), "{text}");

    // The CA file replaces the public roots, and a missing one is named.
    let e = canopy_tls::configure(
        reqwest::Client::builder(),
        &ClientTrust::CaFile(dir.path().join("nope.pem")),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("CA certificate file") && e.contains("nope.pem"),
        "{e}"
    );
    server.stop().await;

    // A self-signed server certificate can be its own CA file.
    let data = tempfile::tempdir().unwrap();
    let (config, info) = self_signed(data.path());
    let server = Running::start(Some(config), ServeOptions::default()).await;
    let resp = client(&ClientTrust::CaFile(info.cert_file.clone()))
        .get(server.url("https", "/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "hi");
    server.stop().await;
}

#[test]
fn broken_certificate_files_are_named_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = test_pki(dir.path(), "good");
    let other = test_pki(dir.path(), "other");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n").unwrap();
    let missing = dir.path().join("missing.pem");

    let load = |cert: &Path, key: &Path| {
        canopy_tls::load_server_config(&ServerTls::Files {
            cert: cert.to_owned(),
            key: key.to_owned(),
        })
        .unwrap_err()
    };

    let e = load(&missing, &good.key);
    assert!(matches!(e, TlsError::Read { .. }), "{e:?}");
    let e = e.to_string();
    assert!(
        e.contains("cannot read TLS certificate file") && e.contains("missing.pem"),
        "{e}"
    );

    let e = load(&good.cert, &missing).to_string();
    assert!(
        e.contains("cannot read TLS private key file") && e.contains("missing.pem"),
        "{e}"
    );

    let e = load(&garbage, &good.key).to_string();
    assert!(
        e.contains("garbage.pem") && e.contains("no PEM certificate"),
        "{e}"
    );

    let e = load(&good.cert, &garbage).to_string();
    assert!(
        e.contains("garbage.pem") && e.contains("no PEM private key"),
        "{e}"
    );

    // A certificate with somebody else's key.
    let e = load(&good.cert, &other.key);
    assert!(matches!(e, TlsError::Identity { .. }), "{e:?}");
    let e = e.to_string();
    assert!(
        e.contains("good-cert.pem") && e.contains("other-key.pem"),
        "{e}"
    );
}

#[tokio::test]
async fn plain_http_serves_http1_and_h2c() {
    let server = Running::start(None, ServeOptions::default()).await;
    let resp = reqwest::get(server.url("http", "/hello")).await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.text().await.unwrap(), "hi");

    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2c.get(server.url("http", "/peer")).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert!(resp.text().await.unwrap().starts_with("127.0.0.1:"));
    server.stop().await;
}

#[tokio::test]
async fn http1_over_tls_when_the_client_offers_only_http1() {
    let dir = tempfile::tempdir().unwrap();
    let (config, info) = self_signed(dir.path());
    let server = Running::start(Some(config), ServeOptions::default()).await;
    let mut tls = canopy_tls::client_config(&ClientTrust::Pinned(info.fingerprint()))
        .unwrap()
        .expect("a pinned configuration");
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let http1 = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .unwrap();
    let resp = http1
        .get(server.url("https", "/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.text().await.unwrap(), "hi");
    server.stop().await;
}

fn short_timeouts() -> ServeOptions {
    ServeOptions {
        header_read_timeout: Duration::from_millis(500),
        tls_handshake_timeout: Duration::from_millis(500),
        ..ServeOptions::default()
    }
}

/// Reads until the server closes the connection; how long that took (panics after 5 s).
async fn closed_after(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf))
        .await
        .expect("the server closes the connection")
        .ok();
    started.elapsed()
}

#[tokio::test]
async fn slow_clients_are_cut_off_but_slow_responses_are_not() {
    let server = Running::start(None, short_timeouts()).await;

    // Half a request head, then nothing.
    let mut half = TcpStream::connect(server.addr).await.unwrap();
    half.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let took = closed_after(&mut half).await;
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );

    // Nothing at all.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let took = closed_after(&mut silent).await;
    assert!(took < Duration::from_secs(3), "{took:?}");

    // Half of the HTTP/2 preface.
    let mut half_h2 = TcpStream::connect(server.addr).await.unwrap();
    half_h2.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let took = closed_after(&mut half_h2).await;
    assert!(took < Duration::from_secs(3), "{took:?}");

    // A response slower than the header timeout (a long-poll) is fine, on both protocols.
    let resp = reqwest::get(server.url("http", "/slow")).await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "slow");
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2c.get(server.url("http", "/slow")).send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "slow");
    server.stop().await;

    // TLS: a client that never starts the handshake.
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = self_signed(dir.path());
    let server = Running::start(Some(config), short_timeouts()).await;
    let mut mute = TcpStream::connect(server.addr).await.unwrap();
    let took = closed_after(&mut mute).await;
    assert!(took < Duration::from_secs(3), "{took:?}");
    server.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_are_refused() {
    let server = Running::start(
        None,
        ServeOptions {
            max_connections: 2,
            ..ServeOptions::default()
        },
    )
    .await;
    // Two clients, each keeping its (idle, kept-alive) connection.
    let mut clients = Vec::new();
    for _ in 0..2 {
        let c = reqwest::Client::new();
        let resp = c.get(server.url("http", "/hello")).send().await.unwrap();
        assert_eq!(resp.text().await.unwrap(), "hi");
        clients.push(c);
    }
    // A third connection is closed at once, without an answer.
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    let _ = third
        .write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut buf))
        .await
        .expect("closed at once");
    assert!(
        read.is_err() || buf.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );

    // Once a client goes away, its slot is free again.
    clients.pop();
    let mut served = false;
    for _ in 0..50 {
        if let Ok(r) = reqwest::get(server.url("http", "/hello")).await
            && r.status().is_success()
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "a freed slot serves a new connection");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_within_the_grace_period() {
    let server = Running::start(
        None,
        ServeOptions {
            shutdown_grace: Duration::from_secs(5),
            ..ServeOptions::default()
        },
    )
    .await;
    let url = server.url("http", "/slow");
    let in_flight = tokio::spawn(async move { reqwest::get(url).await?.text().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let addr = server.addr;
    let took = server.stop().await;
    assert_eq!(in_flight.await.unwrap().unwrap(), "slow");
    // It waited for the request (1.5 s from its start), not for the whole grace period.
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "{took:?}"
    );
    // The listener is gone.
    assert!(TcpStream::connect(addr).await.is_err());

    // A request that would never finish does not hold shutdown up beyond the grace period.
    let server = Running::start(
        None,
        ServeOptions {
            shutdown_grace: Duration::from_millis(500),
            ..ServeOptions::default()
        },
    )
    .await;
    let url = server.url("http", "/forever");
    let stuck = tokio::spawn(async move { reqwest::get(url).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let took = server.stop().await;
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(stuck.await.unwrap().is_err(), "the stuck request was cut");
}

/// Reads one HTTP/1.1 response (head and `Content-Length` body).
async fn read_response(stream: &mut TcpStream) -> std::io::Result<String> {
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
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Writes a POST to `/refuse` with a `size`-byte body, whole, before reading anything.
async fn post_whole(stream: &mut TcpStream, size: usize, extra: &str) -> std::io::Result<()> {
    let head = format!("POST /refuse HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n{extra}\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&vec![b'x'; size]).await?;
    stream.flush().await
}

#[tokio::test]
async fn an_unread_body_is_drained_after_the_answer_and_the_connection_kept() {
    let server = Running::start(None, ServeOptions::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    for _ in 0..3 {
        post_whole(&mut stream, 4 * 1024 * 1024, "").await.unwrap();
        let answer = read_response(&mut stream).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        assert!(answer.ends_with("refused"), "{answer}");
    }
    // The same connection serves the next request: the bodies were read to their end.
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut stream).await.unwrap().ends_with("hi"));
    server.stop().await;
}

#[tokio::test]
async fn beyond_the_drain_bound_a_lingering_close_still_delivers_the_answer() {
    let server = Running::start(
        None,
        ServeOptions {
            drain_max_bytes: 64 * 1024,
            ..ServeOptions::default()
        },
    )
    .await;
    for declared in [true, false] {
        // Declared larger than the bound (not read at all), or chunked (given up after 64 KiB):
        // either way the server closes the connection, yet the client that writes its whole
        // body first still reads the 401.
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let size = 16 * 1024 * 1024;
        let sent = if declared {
            post_whole(&mut stream, size, "").await
        } else {
            let head = "POST /refuse HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
            async {
                stream.write_all(head.as_bytes()).await?;
                let piece = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
                for _ in 0..size / (64 * 1024) {
                    stream.write_all(piece.as_bytes()).await?;
                }
                stream.write_all(b"0\r\n\r\n").await?;
                stream.flush().await
            }
            .await
        };
        sent.unwrap_or_else(|e| panic!("declared {declared}: the body could not be sent: {e}"));
        let answer = read_response(&mut stream).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        let mut rest = Vec::new();
        let end = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
            .await
            .expect("the server closes the connection");
        assert!(end.is_ok(), "closed cleanly, not reset: {end:?}");
    }

    // HTTP/2: the answer, then the stream is reset with NO_ERROR, which reqwest accepts.
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2c
        .post(server.url("http", "/refuse"))
        .body(vec![b'x'; 4 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::UNAUTHORIZED);
    assert_eq!(resp.text().await.unwrap(), "refused");
    server.stop().await;
}

#[tokio::test]
async fn a_client_waiting_for_100_continue_gets_the_answer_without_sending_its_body() {
    let server = Running::start(None, ServeOptions::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(
            b"POST /refuse HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\
              Expect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    let answer = read_response(&mut stream).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(!answer.contains("100 Continue"), "{answer}");
    // Nothing is waited for: the server closes the connection (the body will never come).
    let took = closed_after(&mut stream).await;
    assert!(took < Duration::from_secs(3), "{took:?}");
    server.stop().await;
}

/// A TCP stream that counts the bytes it carries both ways (TLS records, not TCP/IP headers).
struct Counted {
    inner: TcpStream,
    read: usize,
    written: usize,
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        self.read += buf.filled().len() - before;
        polled
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &polled {
            self.written += n;
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One HTTPS request on a new connection with `config`: how the handshake went, and the bytes
/// the handshake took (both ways, until the client could send).
async fn one_request(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> (rustls::HandshakeKind, usize) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let counted = Counted {
        inner: tcp,
        read: 0,
        written: 0,
    };
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::clone(config))
        .connect(name, counted)
        .await
        .unwrap();
    let handshake_bytes = tls.get_ref().0.read + tls.get_ref().0.written;
    let kind = tls.get_ref().1.handshake_kind().unwrap();
    tls.write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // Reading to the end also takes the session tickets the server sends after the handshake.
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    assert!(
        String::from_utf8_lossy(&answer).ends_with("hi"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    (kind, handshake_bytes)
}

/// What makes a reconnecting agent cheap: its client configuration (kept for the agent's whole
/// run) resumes the TLS session, even after more clients than rustls' in-memory session cache
/// holds (256) connected in between, because the server issues stateless tickets. Without the
/// ticketer this fails (the first client's session is evicted: a full handshake).
#[tokio::test]
async fn a_reconnecting_client_resumes_its_tls_session_whatever_the_fleet_size() {
    let dir = tempfile::tempdir().unwrap();
    let (server_config, info) = self_signed(dir.path());
    let server = Running::start(Some(server_config), ServeOptions::default()).await;
    // Each configuration has its own session store, as each edge has.
    let config = || {
        let mut c = canopy_tls::client_config(&ClientTrust::Pinned(info.fingerprint()))
            .unwrap()
            .unwrap();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(c)
    };
    let agent = config();
    let (kind, full_bytes) = one_request(server.addr, &agent).await;
    assert_eq!(kind, rustls::HandshakeKind::Full);
    let (kind, resumed_bytes) = one_request(server.addr, &agent).await;
    assert_eq!(
        kind,
        rustls::HandshakeKind::Resumed,
        "the second connection"
    );
    // 300 other edges connect, each with its own session.
    for _ in 0..300 {
        let (kind, _) = one_request(server.addr, &config()).await;
        assert_eq!(kind, rustls::HandshakeKind::Full);
    }
    let (kind, _) = one_request(server.addr, &agent).await;
    assert_eq!(
        kind,
        rustls::HandshakeKind::Resumed,
        "the agent's session survives 300 other clients (stateless tickets)"
    );
    eprintln!("TLS handshake bytes: full {full_bytes}, resumed {resumed_bytes}");
    // No certificate chain and no signature (the ticket it sends instead is smaller than even
    // this small self-signed ECDSA certificate).
    assert!(
        resumed_bytes < full_bytes,
        "a resumed handshake carries no certificate: {resumed_bytes} vs {full_bytes} bytes"
    );
    server.stop().await;
}
