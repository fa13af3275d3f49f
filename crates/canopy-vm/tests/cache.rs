//! Image cache against a real (local) HTTP server and file:// URLs: verified downloads only,
//! nothing left behind on any failure.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::routing::get;
use canopy_vm::{ImageCache, ImageSource, VmError};
use sha2::{Digest, Sha256};

const GOOD: &[u8] = b"pretend this is a qcow2 image";

fn sha(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Serves /good (GOOD), /big (1 MiB) and 404 elsewhere; counts requests.
async fn server() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = Router::new()
        .route(
            "/good",
            get(move || {
                h.fetch_add(1, Ordering::SeqCst);
                async { GOOD.to_vec() }
            }),
        )
        .route("/big", get(|| async { vec![7u8; 1 << 20] }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), hits)
}

/// Every file in the content store (partials included).
fn store_files(cache: &ImageCache) -> Vec<String> {
    match std::fs::read_dir(cache.dir().join("sha256")) {
        Ok(dir) => dir
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn source(url: impl Into<String>, sha256: impl Into<String>) -> ImageSource {
    ImageSource {
        url: url.into(),
        sha256: sha256.into(),
    }
}

#[tokio::test]
async fn a_good_checksum_caches_the_image_once_read_only() {
    let (base, hits) = server().await;
    let tmp = tempfile::tempdir().unwrap();
    let cache = ImageCache::new(tmp.path());
    let src = source(format!("{base}/good"), sha(GOOD));
    let path = cache.fetch(&src).await.unwrap();
    assert_eq!(path, cache.path_for(&sha(GOOD)));
    assert_eq!(std::fs::read(&path).unwrap(), GOOD);
    assert!(std::fs::metadata(&path).unwrap().permissions().readonly());
    // Cached: no second download.
    assert_eq!(cache.fetch(&src).await.unwrap(), path);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(store_files(&cache), vec![sha(GOOD)]);
}

#[tokio::test]
async fn a_wrong_checksum_is_refused_and_nothing_is_left() {
    let (base, _) = server().await;
    let tmp = tempfile::tempdir().unwrap();
    let cache = ImageCache::new(tmp.path());
    let wrong = sha(b"something else");
    let err = cache
        .fetch(&source(format!("{base}/good"), wrong.clone()))
        .await
        .unwrap_err();
    match &err {
        VmError::ChecksumMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &wrong);
            assert_eq!(actual, &sha(GOOD));
        }
        other => panic!("expected a checksum mismatch, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("/good") && msg.contains(&wrong) && msg.contains(&sha(GOOD)),
        "{msg}"
    );
    assert!(store_files(&cache).is_empty(), "{:?}", store_files(&cache));
}

#[tokio::test]
async fn over_the_size_cap_is_refused_and_nothing_is_left() {
    let (base, _) = server().await;
    let tmp = tempfile::tempdir().unwrap();
    let cache = ImageCache::new(tmp.path().join("cache")).with_max_bytes(64 * 1024);
    let big = vec![7u8; 1 << 20];
    // Over HTTP (the server says how long it is) ...
    let err = cache
        .fetch(&source(format!("{base}/big"), sha(&big)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            VmError::TooLarge {
                limit_bytes: 65536,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("/big"), "{err}");
    // ... and from a file (counted while streaming).
    let file = tmp.path().join("big.img");
    std::fs::write(&file, &big).unwrap();
    let err = cache
        .fetch(&source(format!("file://{}", file.display()), sha(&big)))
        .await
        .unwrap_err();
    assert!(matches!(err, VmError::TooLarge { .. }), "{err:?}");
    assert!(store_files(&cache).is_empty(), "{:?}", store_files(&cache));
}

#[tokio::test]
async fn unreachable_and_missing_urls_are_clear_errors() {
    let (base, _) = server().await;
    let tmp = tempfile::tempdir().unwrap();
    let cache = ImageCache::new(tmp.path());
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/image.qcow2");
    let err = cache.fetch(&source(&url, sha(GOOD))).await.unwrap_err();
    assert!(matches!(err, VmError::Download { .. }), "{err:?}");
    assert!(err.to_string().contains(&url), "{err}");

    let err = cache
        .fetch(&source(format!("{base}/nope"), sha(GOOD)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, VmError::HttpStatus { status: 404, .. }),
        "{err:?}"
    );

    let err = cache
        .fetch(&source("ftp://example.invalid/x", sha(GOOD)))
        .await
        .unwrap_err();
    assert!(matches!(err, VmError::UnsupportedUrl { .. }), "{err:?}");

    let err = cache
        .fetch(&source(format!("{base}/good"), "abc"))
        .await
        .unwrap_err();
    assert!(matches!(err, VmError::InvalidChecksum { .. }), "{err:?}");

    let missing = tmp.path().join("missing.img");
    let err = cache
        .fetch(&source(format!("file://{}", missing.display()), sha(GOOD)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("missing.img"), "{err}");
    assert!(store_files(&cache).is_empty(), "{:?}", store_files(&cache));
}

#[tokio::test]
async fn gc_removes_only_unreferenced_images() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = ImageCache::new(tmp.path().join("cache"));
    let mut shas = Vec::new();
    for content in [b"one".as_slice(), b"two", b"three"] {
        let file = tmp.path().join(sha(content));
        std::fs::write(&file, content).unwrap();
        let src = source(format!("file://{}", file.display()), sha(content));
        cache.fetch(&src).await.unwrap();
        shas.push(sha(content));
    }
    let removed = cache.gc(&[&shas[1]]).await.unwrap();
    let mut expected = vec![shas[0].clone(), shas[2].clone()];
    expected.sort();
    assert_eq!(removed, expected);
    assert_eq!(store_files(&cache), vec![shas[1].clone()]);
    assert!(Path::new(&cache.path_for(&shas[1])).exists());
}

#[tokio::test]
async fn basic_credentials_are_sent_when_given() {
    use axum::http::{HeaderMap, StatusCode, header};
    // "canopy:s3cret" in base64.
    let app = Router::new().route(
        "/private",
        get(|headers: HeaderMap| async move {
            match headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
            {
                Some("Basic Y2Fub3B5OnMzY3JldA==") => Ok(GOOD.to_vec()),
                _ => Err(StatusCode::UNAUTHORIZED),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let tmp = tempfile::tempdir().unwrap();
    let cache = ImageCache::new(tmp.path());
    let src = source(format!("http://{addr}/private"), sha(GOOD));
    let err = cache.fetch(&src).await.unwrap_err();
    assert!(
        matches!(err, VmError::HttpStatus { status: 401, .. }),
        "{err}"
    );
    assert!(store_files(&cache).is_empty());
    let auth = canopy_vm::BasicAuth {
        username: "canopy".into(),
        password: "s3cret".into(),
    };
    assert!(!format!("{auth:?}").contains("s3cret"));
    let path = cache.fetch_with_auth(&src, Some(&auth)).await.unwrap();
    assert_eq!(std::fs::read(path).unwrap(), GOOD);
}
