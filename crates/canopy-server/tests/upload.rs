//! Uploads over HTTP: the real sample packages upload unchanged and round-trip through export
//! into another project; the session API holds files until the last one; bad and hostile
//! uploads are refused with a clear error and leave nothing behind.

use std::io::Write;

use canopy_testkit::{TestControlPlane, read_dir_files, reference_package, reference_packages};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The registries the reference packages expect to exist (cirros-vm brings its own).
async fn reference_registries(cp: &TestControlPlane, project: &str) {
    for (name, kind) in [("harbor-helm-oci", "HELM"), ("harbor-docker-oci", "IMAGE")] {
        let (s, b) = cp
            .post(&cp.catalog(project, "/registries"), &json!({"name": name, "type": kind, "rootUrl": format!("oci://registry.example.org/{name}")}))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
}

async fn count(cp: &TestControlPlane, project: &str, what: &str) -> u64 {
    let (s, b) = cp.get(&cp.catalog(project, &format!("/{what}"))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["totalElements"].as_u64().unwrap()
}

async fn counts(cp: &TestControlPlane, project: &str) -> [u64; 4] {
    [
        count(cp, project, "registries").await,
        count(cp, project, "applications").await,
        count(cp, project, "deployment_packages").await,
        count(cp, project, "artifacts").await,
    ]
}

fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        // Written raw: the tar crate (rightly) refuses to build hostile paths itself.
        let name = &mut h.as_gnu_mut().unwrap().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        builder.append(&h, *data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

#[tokio::test]
async fn reference_packages_upload_and_round_trip() {
    for cp in TestControlPlane::all().await {
        reference_registries(&cp, "default").await;
        cp.create_project("copy").await;
        reference_registries(&cp, "copy").await;
        for name in reference_packages() {
            let files = read_dir_files(&reference_package(&name));
            let (s, b) = cp.upload("default", files.clone()).await;
            assert_eq!(s, StatusCode::OK, "[{}] {name}: {b}", cp.backend);
            // Uploading the same files again is a no-op update, not an error.
            let (s, b) = cp.upload("default", files).await;
            assert_eq!(s, StatusCode::OK, "[{}] {name} again: {b}", cp.backend);
        }
        let (_, pkgs) = cp
            .get(&cp.catalog("default", "/deployment_packages?pageSize=100"))
            .await;
        let pkgs = pkgs["deploymentPackages"].as_array().unwrap().clone();
        assert_eq!(pkgs.len(), reference_packages().len(), "[{}]", cp.backend);
        // Values files became chart values.
        let (_, httpbin) = cp
            .get(&cp.catalog("default", "/applications/httpbin/versions/0.1.6"))
            .await;
        let profile = httpbin["application"]["profiles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "with-envoy")
            .unwrap()
            .clone();
        assert!(
            profile["chartValues"]
                .as_str()
                .unwrap()
                .contains("enabled: true"),
            "{profile}"
        );

        for p in &pkgs {
            let (name, version) = (p["name"].as_str().unwrap(), p["version"].as_str().unwrap());
            let resp = cp
                .http()
                .get(cp.catalog(
                    "default",
                    &format!("/deployment_packages/{name}/versions/{version}/download"),
                ))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let bytes = resp.bytes().await.unwrap().to_vec();
            let (s, b) = cp
                .upload("copy", vec![(format!("{name}-{version}.tar.gz"), bytes)])
                .await;
            assert_eq!(
                s,
                StatusCode::OK,
                "[{}] re-upload of export {name}: {b}",
                cp.backend
            );
            let (_, orig) = cp
                .get(&cp.catalog(
                    "default",
                    &format!("/deployment_packages/{name}/versions/{version}"),
                ))
                .await;
            let (_, copy) = cp
                .get(&cp.catalog(
                    "copy",
                    &format!("/deployment_packages/{name}/versions/{version}"),
                ))
                .await;
            let strip = |mut v: Value| {
                let o = v["deploymentPackage"].as_object_mut().unwrap();
                o.remove("createTime");
                o.remove("updateTime");
                for prof in o["profiles"].as_array_mut().unwrap() {
                    prof.as_object_mut()
                        .unwrap()
                        .retain(|k, _| k != "createTime" && k != "updateTime");
                }
                v
            };
            assert_eq!(
                strip(orig),
                strip(copy),
                "[{}] {name} differs after round trip",
                cp.backend
            );
            for r in p["applicationReferences"].as_array().unwrap() {
                let path = format!(
                    "/applications/{}/versions/{}",
                    r["name"].as_str().unwrap(),
                    r["version"].as_str().unwrap()
                );
                let (_, a) = cp.get(&cp.catalog("default", &path)).await;
                let (_, b) = cp.get(&cp.catalog("copy", &path)).await;
                let strip_app = |mut v: Value| {
                    let o = v["application"].as_object_mut().unwrap();
                    o.remove("createTime");
                    o.remove("updateTime");
                    for prof in o["profiles"].as_array_mut().unwrap() {
                        prof.as_object_mut()
                            .unwrap()
                            .retain(|k, _| k != "createTime" && k != "updateTime");
                    }
                    v
                };
                assert_eq!(
                    strip_app(a),
                    strip_app(b),
                    "[{}] application {path} differs after round trip",
                    cp.backend
                );
            }
        }
        cp.stop().await;
    }
}

#[tokio::test]
async fn upload_is_all_or_nothing() {
    let cp = TestControlPlane::start().await;
    reference_registries(&cp, "default").await;
    let before = counts(&cp, "default").await;
    // A good application and a package referencing an application that does not exist.
    let mut files = read_dir_files(&reference_package("httpbin"));
    for (name, content) in &mut files {
        if name == "dp-httpbin.yaml" {
            *content = String::from_utf8(content.clone())
                .unwrap()
                .replace("version: 0.1.6", "version: 9.9.9")
                .into_bytes();
        }
    }
    let (s, b) = cp.upload("default", files).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("httpbin:9.9.9"),
        "{b}"
    );
    assert_eq!(
        counts(&cp, "default").await,
        before,
        "nothing may be stored"
    );

    // A values file that is missing is named.
    let files: Vec<(String, Vec<u8>)> = read_dir_files(&reference_package("httpbin"))
        .into_iter()
        .filter(|(n, _)| n != "values-httpbin.yaml")
        .collect();
    let (s, b) = cp.upload("default", files).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b.to_string().contains("values-httpbin.yaml"), "{b}");
    assert_eq!(counts(&cp, "default").await, before);
}

#[tokio::test]
async fn hostile_uploads_are_refused() {
    let cp = TestControlPlane::start().await;
    reference_registries(&cp, "default").await;
    let before = counts(&cp, "default").await;
    let registry_doc = b"specSchema: Registry\nschemaVersion: \"0.1\"\n$schema: \"https://schema.intel.com/catalog.orchestrator/0.1/schema\"\nname: evil\ndescription: x\ntype: HELM\nrootUrl: https://evil.example.com\n";
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let gzip_bomb = {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let mut h = tar::Header::new_gnu();
        h.set_size(300 * 1024 * 1024);
        h.set_mode(0o644);
        h.set_path("zeros.yaml").unwrap();
        h.set_cksum();
        enc.write_all(h.as_bytes()).unwrap();
        let chunk = vec![0u8; 1024 * 1024];
        for _ in 0..300 {
            enc.write_all(&chunk).unwrap();
        }
        enc.finish().unwrap()
    };
    type Files = Vec<(String, Vec<u8>)>;
    let cases: Vec<(&str, Files)> = vec![
        (
            "dot-dot",
            vec![("x.tar.gz".into(), tar_gz(&[("../evil.yaml", registry_doc)]))],
        ),
        (
            "absolute",
            vec![("x.tgz".into(), tar_gz(&[("/etc/evil.yaml", registry_doc)]))],
        ),
        (
            "not-utf8",
            vec![("bad.yaml".into(), vec![0xff, 0xfe, 0x00, 0x41])],
        ),
        (
            "deep",
            vec![(
                "deep.yaml".into(),
                format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
            )],
        ),
        ("aliases", vec![("bomb.yaml".into(), bomb.into_bytes())]),
        ("gzip-bomb", vec![("bomb.tar.gz".into(), gzip_bomb)]),
        (
            "garbage-tar",
            vec![("junk.tar.gz".into(), b"\x1f\x8bnot really gzip".to_vec())],
        ),
        (
            "unknown-type",
            vec![(
                "t.yaml".into(),
                b"specSchema: Spaceship\nname: x\n".to_vec(),
            )],
        ),
        (
            "unknown-field",
            vec![(
                "r.yaml".into(),
                [registry_doc.as_slice(), b"warpDrive: true\n"].concat(),
            )],
        ),
        (
            "too-big",
            vec![("big.yaml".into(), vec![b'#'; 11 * 1024 * 1024])],
        ),
    ];
    for (what, files) in cases {
        let (s, b) = cp.upload("default", files).await;
        assert!(
            s == StatusCode::BAD_REQUEST || s == StatusCode::PAYLOAD_TOO_LARGE,
            "{what}: {s} {b}"
        );
        assert!(
            !b["message"].as_str().unwrap_or_default().is_empty(),
            "{what}: no message: {b}"
        );
        eprintln!("{what}: {s} {}", b["message"]);
        assert_eq!(
            counts(&cp, "default").await,
            before,
            "{what}: something was stored"
        );
    }
    // Too many files.
    let many: Vec<(String, Vec<u8>)> = (0..101)
        .map(|i| (format!("f{i}.yaml"), b"a: 1\n".to_vec()))
        .collect();
    let (s, b) = cp.upload("default", many).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    // The server is still fine.
    let (s, _) = cp.get(&cp.at("/healthz")).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn session_upload_applies_on_last_upload_only() {
    use base64::Engine;
    let cp = TestControlPlane::start().await;
    reference_registries(&cp, "default").await;
    let files = read_dir_files(&reference_package("developer-guide-tutorial"));
    let n = files.len();
    let mut session: Option<String> = None;
    for (i, (name, content)) in files.into_iter().enumerate() {
        let last = i + 1 == n;
        let mut url = cp.catalog("default", "/uploads");
        url.push_str(&format!("?lastUpload={last}"));
        if let Some(s) = &session {
            url.push_str(&format!("&sessionId={s}"));
        }
        let body = json!({"fileName": name, "artifact": base64::engine::general_purpose::STANDARD.encode(&content)});
        let (s, b) = cp.post(&url, &body).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["uploadNumber"], (i + 1) as u64);
        session = Some(b["sessionId"].as_str().unwrap().to_string());
        if !last {
            assert_eq!(
                count(&cp, "default", "applications").await,
                0,
                "applied before lastUpload"
            );
        }
    }
    assert_eq!(count(&cp, "default", "applications").await, 2);
    assert_eq!(count(&cp, "default", "deployment_packages").await, 1);
    // The session is gone once applied.
    let url = format!(
        "{}?sessionId={}&lastUpload=true",
        cp.catalog("default", "/uploads"),
        session.unwrap()
    );
    let (s, b) = cp
        .post(&url, &json!({"fileName": "x.yaml", "artifact": "YTogMQo="}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("upload-session"),
        "{b}"
    );
}

#[tokio::test]
async fn events_stream_replays_then_follows() {
    let cp = TestControlPlane::start().await;
    reference_registries(&cp, "default").await;
    let mut resp = cp
        .http()
        .get(cp.at("/canopy/v1/projects/default/catalog/events?kinds=Registry"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut created = false;
    while tokio::time::Instant::now() < deadline {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), resp.chunk()).await;
        if let Ok(Ok(Some(c))) = chunk {
            seen.push_str(&String::from_utf8_lossy(&c));
        }
        if seen.matches("event: replayed").count() == 2 && !created {
            let (s, b) = cp.post(&cp.catalog("default", "/registries"), &json!({"name": "late", "type": "HELM", "rootUrl": "https://late.example.com", "authToken": "hidden-token"})).await;
            assert_eq!(s, StatusCode::OK, "{b}");
            created = true;
        }
        if seen.contains("event: created") && seen.contains("\"late\"") {
            break;
        }
    }
    assert!(seen.contains("event: replayed"), "{seen}");
    assert!(seen.contains("\"harbor-helm-oci\""), "{seen}");
    assert!(seen.contains("event: created"), "{seen}");
    assert!(
        !seen.contains("hidden-token"),
        "secret in event stream: {seen}"
    );
}

#[tokio::test]
async fn shutdown_is_not_held_up_by_event_streams() {
    let cp = TestControlPlane::start().await;
    let mut resp = cp
        .http()
        .get(cp.at("/canopy/v1/projects/default/catalog/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let stopping = tokio::spawn(cp.stop());
    tokio::time::timeout(std::time::Duration::from_secs(20), stopping)
        .await
        .expect("graceful shutdown finished while an event stream was open")
        .unwrap();
    // The stream was ended by the server.
    let rest = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Ok(Some(_)) = resp.chunk().await {}
    })
    .await;
    assert!(rest.is_ok(), "event stream still open after shutdown");
}

#[tokio::test]
async fn export_carries_required_packages() {
    let cp = TestControlPlane::start().await;
    reference_registries(&cp, "default").await;
    let (s, b) = cp
        .upload("default", read_dir_files(&reference_package("httpbin")))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // An application whose profile requires the httpbin package, in a package of its own.
    let app = json!({"name": "needs-httpbin", "version": "1.0.0", "chartName": "x", "chartVersion": "1.0.0",
        "helmRegistryName": "harbor-helm-oci", "defaultProfileName": "default",
        "profiles": [{"name": "default", "deploymentRequirement": [{"name": "httpbin", "version": "2.3.3", "deploymentProfileName": "default"}]}]});
    let (s, b) = cp.post(&cp.catalog("default", "/applications"), &app).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let pkg = json!({"name": "top", "version": "1.0.0", "applicationReferences": [{"name": "needs-httpbin", "version": "1.0.0"}]});
    let (s, b) = cp
        .post(&cp.catalog("default", "/deployment_packages"), &pkg)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");

    let resp = cp
        .http()
        .get(cp.catalog(
            "default",
            "/deployment_packages/top/versions/1.0.0/download",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp.bytes().await.unwrap().to_vec();
    cp.create_project("fresh").await;
    reference_registries(&cp, "fresh").await;
    let (s, b) = cp
        .upload("fresh", vec![("top-1.0.0.tar.gz".into(), bytes)])
        .await;
    assert_eq!(
        s,
        StatusCode::OK,
        "export with a deployment requirement must upload into an empty project: {b}"
    );
    for path in [
        "/deployment_packages/top/versions/1.0.0",
        "/deployment_packages/httpbin/versions/2.3.3",
        "/applications/httpbin/versions/0.1.6",
    ] {
        let (s, b) = cp.get(&cp.catalog("fresh", path)).await;
        assert_eq!(s, StatusCode::OK, "{path}: {b}");
    }
    // A requirement that names a package missing from the upload and the project is still refused.
    cp.create_project("bare").await;
    reference_registries(&cp, "bare").await;
    let app_doc = "specSchema: Application\nschemaVersion: \"0.1\"\n$schema: \"https://schema.intel.com/catalog.orchestrator/0.1/schema\"\nname: lonely\nversion: \"1.0.0\"\ndescription: d\nhelmRegistry: harbor-helm-oci\nchartName: x\nchartVersion: \"1.0.0\"\nprofiles:\n  - name: default\n    deploymentRequirements:\n      - {name: ghost, version: \"1.0.0\"}\n";
    let (s, b) = cp
        .upload(
            "bare",
            vec![("lonely.yaml".into(), app_doc.as_bytes().to_vec())],
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("uploaded file lonely.yaml")
            && b["message"]
                .as_str()
                .unwrap()
                .contains("ghost:1.0.0 not found"),
        "{b}"
    );
    assert_eq!(count(&cp, "bare", "applications").await, 0);
}
