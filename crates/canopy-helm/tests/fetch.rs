//! Fetching charts from real registries: Debian's docker-registry over OCI (with and without
//! basic auth, from scripts/helm.sh, and one of the test's own that it stops), and a loopback
//! HTTPS chart repository with its own CA (index.yaml). The cache, its size bound, outage
//! fallback and coalescing, and hostile archives served by a registry.

mod common;

use std::collections::HashMap;

use canopy_helm::{ChartSource, Credentials, FetchError, Origin};
use common::*;
use sha2::{Digest, Sha256};

fn oci(registry: &str, chart: &str, version: &str) -> ChartSource {
    ChartSource {
        root_url: format!("oci://{registry}/charts"),
        chart_name: chart.into(),
        chart_version: version.into(),
        credentials: Credentials::default(),
    }
}

fn with_creds(mut s: ChartSource, user: &str, password: &str) -> ChartSource {
    s.credentials.username = Some(user.into());
    s.credentials.auth_token = Some(password.into());
    s
}

#[tokio::test]
async fn oci_fetch_without_auth_then_from_the_cache() {
    let Some(registry) = env("CANOPY_TEST_CHART_REGISTRY") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let f = fetcher(dir.path(), |_, _| {});
    let src = oci(&registry, "canopy-web", "0.1.0");
    let chart = f.fetch(&src).await.unwrap();
    assert_eq!(chart.origin, Origin::Registry);
    assert_eq!(chart.meta.name, "canopy-web");
    assert_eq!(chart.meta.version, "0.1.0");
    assert_eq!(
        chart.digest.as_str(),
        format!("sha256:{:x}", Sha256::digest(chart.archive.as_slice()))
    );
    let again = f.fetch(&src).await.unwrap();
    assert_eq!(again.origin, Origin::Cache);
    assert_eq!(again.digest, chart.digest);
    assert_eq!(
        f.stats()
            .registry_fetches
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test]
async fn oci_fetch_with_basic_auth_and_refusals() {
    let (Some(registry), Some(user), Some(password)) = (
        env("CANOPY_TEST_CHART_REGISTRY_AUTH"),
        env("CANOPY_TEST_CHART_REGISTRY_USER"),
        env("CANOPY_TEST_CHART_REGISTRY_PASSWORD"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let f = fetcher(dir.path(), |_, _| {});
    let src = oci(&registry, "canopy-pair", "0.1.0");

    let e = f.fetch(&src).await.unwrap_err();
    assert!(matches!(e, FetchError::AuthRequired { .. }), "{e}");
    assert!(e.to_string().contains("requires credentials"), "{e}");

    let wrong = with_creds(src.clone(), &user, "not-the-password");
    let e = f.fetch(&wrong).await.unwrap_err();
    assert!(matches!(e, FetchError::CredentialsRefused { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("refused the credentials"), "{text}");
    assert!(text.contains("canopy-pair:0.1.0"), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");

    let right = with_creds(src.clone(), &user, &password);
    let chart = f.fetch(&right).await.unwrap();
    assert_eq!(chart.meta.name, "canopy-pair");

    // The cached copy is not handed to a caller without the credentials.
    let e = f.fetch(&src).await.unwrap_err();
    assert!(matches!(e, FetchError::AuthRequired { .. }), "{e}");
}

#[tokio::test]
async fn oci_chart_or_version_not_found() {
    let Some(registry) = env("CANOPY_TEST_CHART_REGISTRY") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let f = fetcher(dir.path(), |_, _| {});
    for src in [
        oci(&registry, "no-such-chart", "0.1.0"),
        oci(&registry, "canopy-web", "9.9.9"),
    ] {
        let e = f.fetch(&src).await.unwrap_err();
        assert!(matches!(e, FetchError::NotFound { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains(&format!("{}:{}", src.chart_name, src.chart_version)),
            "{text}"
        );
        assert!(text.contains("not found"), "{text}");
    }
}

#[tokio::test]
async fn https_repository_with_its_own_ca_and_basic_auth() {
    let Some(helm) = helm().await else {
        return;
    };
    let archive = package(&helm, "canopy-web");
    let digest = format!("{:x}", Sha256::digest(&archive));
    let ca = test_ca();
    let files = HashMap::from([
        (
            "/stable/index.yaml".to_string(),
            index_yaml(
                "canopy-web",
                "0.1.0",
                "charts/canopy-web-0.1.0.tgz",
                Some(&digest),
            ),
        ),
        (
            "/stable/charts/canopy-web-0.1.0.tgz".to_string(),
            archive.clone(),
        ),
    ]);
    let repo = TestRepo::start(&ca, files, Some("robot:s3cret")).await;
    let dir = tempfile::tempdir().unwrap();
    let f = fetcher(dir.path(), |_, _| {});
    let src = ChartSource {
        root_url: format!("{}/stable", repo.url),
        chart_name: "canopy-web".into(),
        chart_version: "0.1.0".into(),
        credentials: Credentials {
            username: Some("robot".into()),
            auth_token: Some("s3cret".into()),
            ca_pem: Some(ca.ca_pem.clone()),
        },
    };
    let chart = f.fetch(&src).await.unwrap();
    assert_eq!(chart.archive.as_slice(), archive.as_slice());
    assert_eq!(repo.hits("/stable/index.yaml"), 1);

    // Without the CA the server's certificate is not trusted.
    let mut no_ca = src.clone();
    no_ca.credentials.ca_pem = None;
    let e = fetcher(tempfile::tempdir().unwrap().path(), |_, _| {})
        .fetch(&no_ca)
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::Unreachable { .. }), "{e}");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");

    // Wrong password.
    let mut wrong = src.clone();
    wrong.credentials.auth_token = Some("nope".into());
    let e = fetcher(tempfile::tempdir().unwrap().path(), |_, _| {})
        .fetch(&wrong)
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::CredentialsRefused { .. }), "{e}");

    // Not valid PEM.
    let mut bad_pem = src.clone();
    bad_pem.credentials.ca_pem = Some("-----BEGIN CERTIFICATE-----\nnot base64\n".into());
    let e = fetcher(tempfile::tempdir().unwrap().path(), |_, _| {})
        .fetch(&bad_pem)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("cacerts"), "{e}");

    // A version the index does not have.
    let mut missing = src.clone();
    missing.chart_version = "0.2.0".into();
    let e = fetcher(tempfile::tempdir().unwrap().path(), |_, _| {})
        .fetch(&missing)
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::NotFound { .. }), "{e}");
    assert!(e.to_string().contains("0.1.0"), "lists known versions: {e}");
}

#[tokio::test]
async fn concurrent_fetches_of_one_chart_coalesce() {
    let Some(helm) = helm().await else {
        return;
    };
    let archive = package(&helm, "canopy-web");
    let ca = test_ca();
    let files = HashMap::from([
        (
            "/index.yaml".to_string(),
            index_yaml("canopy-web", "0.1.0", "canopy-web-0.1.0.tgz", None),
        ),
        ("/canopy-web-0.1.0.tgz".to_string(), archive),
    ]);
    let repo = TestRepo::start(&ca, files, None).await;
    let dir = tempfile::tempdir().unwrap();
    let f = fetcher(dir.path(), |_, _| {});
    let src = ChartSource {
        root_url: repo.url.clone(),
        chart_name: "canopy-web".into(),
        chart_version: "0.1.0".into(),
        credentials: Credentials {
            ca_pem: Some(ca.ca_pem.clone()),
            ..Default::default()
        },
    };
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (f, src) = (f.clone(), src.clone());
        tasks.push(tokio::spawn(async move { f.fetch(&src).await }));
    }
    let mut digests = std::collections::BTreeSet::new();
    for t in tasks {
        digests.insert(t.await.unwrap().unwrap().digest);
    }
    assert_eq!(digests.len(), 1);
    assert_eq!(
        repo.hits("/index.yaml"),
        1,
        "one index request for 64 callers"
    );
    assert_eq!(
        repo.hits("/canopy-web-0.1.0.tgz"),
        1,
        "one download for 64 callers"
    );
}

#[tokio::test]
async fn a_cached_chart_serves_while_the_registry_is_down() {
    let Some(helm) = helm().await else {
        return;
    };
    let mut registry = OwnRegistry::start();
    registry.push(&helm, "canopy-web");
    let dir = tempfile::tempdir().unwrap();
    // Versions are re-checked at every fetch (ttl 0), so the second fetch asks the registry.
    let f = fetcher(dir.path(), |c, l| {
        c.ref_ttl = std::time::Duration::ZERO;
        l.connect_timeout = std::time::Duration::from_secs(2);
    });
    let src = oci(&registry.addr, "canopy-web", "0.1.0");
    let first = f.fetch(&src).await.unwrap();
    assert_eq!(first.origin, Origin::Registry);
    registry.stop();

    let second = f.fetch(&src).await.unwrap();
    assert_eq!(second.digest, first.digest);
    match &second.origin {
        Origin::CacheDuringOutage { error } => {
            assert!(matches!(error, FetchError::Unreachable { .. }), "{error}")
        }
        other => panic!("expected the cache during an outage, got {other:?}"),
    }

    // A cache that never saw the chart has nothing to offer.
    let empty = tempfile::tempdir().unwrap();
    let e = fetcher(empty.path(), |_, _| {})
        .fetch(&src)
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::Unreachable { .. }), "{e}");
    assert!(e.to_string().contains(&registry.addr), "{e}");
}

#[tokio::test]
async fn the_cache_stays_under_its_size_bound() {
    let Some(registry) = env("CANOPY_TEST_CHART_REGISTRY") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Room for about two of the fixture charts (each a few KB).
    let probe_dir = tempfile::tempdir().unwrap();
    let probe = fetcher(probe_dir.path(), |_, _| {});
    let mut sizes = Vec::new();
    for c in ["canopy-web", "canopy-pair", "canopy-stateful"] {
        sizes.push(
            probe
                .fetch(&oci(&registry, c, "0.1.0"))
                .await
                .unwrap()
                .archive
                .len() as u64,
        );
    }
    sizes.sort();
    // Any two fit, not three.
    let bound = sizes[1] + sizes[2] + 16;
    let f = fetcher(dir.path(), |c, _| c.max_bytes = bound);
    let web = f
        .fetch(&oci(&registry, "canopy-web", "0.1.0"))
        .await
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    f.fetch(&oci(&registry, "canopy-pair", "0.1.0"))
        .await
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    f.fetch(&oci(&registry, "canopy-stateful", "0.1.0"))
        .await
        .unwrap();
    let total = f.cache().total_bytes().unwrap();
    assert!(total <= bound, "{total} > {bound}");
    // The least recently used (canopy-web) went: fetching it again goes to the registry.
    let again = f
        .fetch(&oci(&registry, "canopy-web", "0.1.0"))
        .await
        .unwrap();
    assert_eq!(again.origin, Origin::Registry);
    assert_eq!(again.digest, web.digest);
    assert!(f.cache().total_bytes().unwrap() <= bound);
}

/// A gzip-compressed tar with raw headers (hostile names pass the builder's checks).
fn hostile_tgz(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, kind, data) in entries {
        let mut h = tar::Header::new_gnu();
        {
            let raw = h.as_old_mut();
            raw.name = [0; 100];
            raw.name[..path.len()].copy_from_slice(path.as_bytes());
        }
        h.set_entry_type(*kind);
        let body: &[u8] = if *kind == tar::EntryType::Regular {
            data
        } else {
            &[]
        };
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        if *kind == tar::EntryType::Symlink {
            h.set_link_name("/etc/shadow").unwrap();
        }
        h.set_cksum();
        b.append(&h, body).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

#[tokio::test]
async fn hostile_archives_from_a_repository_are_refused() {
    const CHART: &[u8] = b"apiVersion: v2\nname: evil\nversion: 1.0.0\n";
    let many: Vec<String> = (0..6000)
        .map(|i| format!("evil/templates/f{i}.yaml"))
        .collect();
    let mut many_entries: Vec<(&str, tar::EntryType, &[u8])> =
        vec![("evil/Chart.yaml", tar::EntryType::Regular, CHART)];
    many_entries.extend(
        many.iter()
            .map(|p| (p.as_str(), tar::EntryType::Regular, &b"x"[..])),
    );
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "traversal",
            hostile_tgz(&[
                ("evil/Chart.yaml", tar::EntryType::Regular, CHART),
                (
                    "evil/../../root/.ssh/authorized_keys",
                    tar::EntryType::Regular,
                    b"key",
                ),
            ]),
            "evil/../../root/.ssh/authorized_keys",
            "climbs out",
        ),
        (
            "symlink",
            hostile_tgz(&[
                ("evil/Chart.yaml", tar::EntryType::Regular, CHART),
                ("evil/templates/secret.yaml", tar::EntryType::Symlink, b""),
            ]),
            "evil/templates/secret.yaml",
            "symbolic link",
        ),
        ("too-many-files", hostile_tgz(&many_entries), "", "entries"),
        (
            "oversized",
            {
                // Incompressible bytes past the 10 MiB archive limit.
                let mut noise = Vec::with_capacity(11 * 1024 * 1024);
                let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
                while noise.len() < 11 * 1024 * 1024 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    noise.extend_from_slice(&x.to_le_bytes());
                }
                noise
            },
            "",
            "larger than the limit",
        ),
    ];
    let ca = test_ca();
    let mut files = HashMap::new();
    for (name, bytes, _, _) in &cases {
        files.insert(
            format!("/{name}/index.yaml"),
            index_yaml("evil", "1.0.0", "evil-1.0.0.tgz", None),
        );
        files.insert(format!("/{name}/evil-1.0.0.tgz"), bytes.clone());
    }
    let repo = TestRepo::start(&ca, files, None).await;
    for (name, _, entry, reason) in &cases {
        let dir = tempfile::tempdir().unwrap();
        let f = fetcher(dir.path(), |_, _| {});
        let src = ChartSource {
            root_url: format!("{}/{name}", repo.url),
            chart_name: "evil".into(),
            chart_version: "1.0.0".into(),
            credentials: Credentials {
                ca_pem: Some(ca.ca_pem.clone()),
                ..Default::default()
            },
        };
        let e = f.fetch(&src).await.unwrap_err();
        let text = e.to_string();
        assert!(text.contains("evil:1.0.0"), "{name}: {text}");
        assert!(text.contains(reason), "{name}: {text}");
        if !entry.is_empty() {
            assert!(text.contains(entry), "{name}: {text}");
        }
        // Nothing hostile entered the cache.
        assert_eq!(f.cache().total_bytes().unwrap(), 0, "{name}");
    }
}

#[tokio::test]
async fn a_digest_mismatch_is_refused() {
    let Some(helm) = helm().await else {
        return;
    };
    let ca = test_ca();
    let files = HashMap::from([
        (
            "/index.yaml".to_string(),
            index_yaml("canopy-web", "0.1.0", "c.tgz", Some(&"0".repeat(64))),
        ),
        ("/c.tgz".to_string(), package(&helm, "canopy-web")),
    ]);
    let repo = TestRepo::start(&ca, files, None).await;
    let dir = tempfile::tempdir().unwrap();
    let src = ChartSource {
        root_url: repo.url.clone(),
        chart_name: "canopy-web".into(),
        chart_version: "0.1.0".into(),
        credentials: Credentials {
            ca_pem: Some(ca.ca_pem.clone()),
            ..Default::default()
        },
    };
    let e = fetcher(dir.path(), |_, _| {})
        .fetch(&src)
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::DigestMismatch { .. }), "{e}");
}

#[tokio::test]
async fn versions_of_a_chart_are_listed() {
    let Some(registry) = env("CANOPY_TEST_CHART_REGISTRY") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let f = fetcher(dir.path(), |_, _| {});
    let versions = f
        .list_versions(&oci(&registry, "httpbin", ""))
        .await
        .unwrap();
    assert_eq!(versions, vec!["0.1.6".to_string()]);
    let e = f
        .list_versions(&oci(&registry, "no-such-chart", ""))
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::NotFound { .. }), "{e}");

    let ca = test_ca();
    let mut index = index_yaml("web", "1.0.0", "web-1.0.0.tgz", None);
    index.extend_from_slice(b"");
    let text = String::from_utf8(index).unwrap().replace(
        "    - name: web\n      version: 1.0.0\n",
        "    - name: web\n      version: 1.1.0\n      urls: [web-1.1.0.tgz]\n    - name: web\n      version: 1.0.0\n",
    );
    let repo = TestRepo::start(
        &ca,
        HashMap::from([("/index.yaml".to_string(), text.into_bytes())]),
        None,
    )
    .await;
    let versions = f
        .list_versions(&ChartSource {
            root_url: repo.url.clone(),
            chart_name: "web".into(),
            chart_version: String::new(),
            credentials: Credentials {
                ca_pem: Some(ca.ca_pem.clone()),
                ..Default::default()
            },
        })
        .await
        .unwrap();
    assert_eq!(versions, vec!["1.1.0".to_string(), "1.0.0".to_string()]);
}
