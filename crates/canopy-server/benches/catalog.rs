//! Catalog baseline benchmark (run: `cargo bench -p canopy-server --bench catalog`).
//!
//! Measures, over real HTTP against an in-process server (the same harness the tests use):
//! 1. uploading a 100-application package set (one tar.gz: 100 apps with values files, one
//!    package referencing all of them) into a fresh project;
//! 2. list/filter latency with 10,000 applications in one project's catalog.
//!
//! On SQLite always, and on PostgreSQL when `CANOPY_TEST_DATABASE_URL` is set
//! (`scripts/postgres.sh` starts one). Results go to stdout as a Markdown table; copy them into
//! docs/BENCHMARKS.md with the machine and the date.

use std::io::Write;
use std::time::{Duration, Instant};

use canopy_testkit::TestControlPlane;
use reqwest::StatusCode;

fn header(spec: &str) -> String {
    format!(
        "specSchema: {spec}\nschemaVersion: \"0.1\"\n$schema: \"https://schema.intel.com/catalog.orchestrator/0.1/schema\"\n"
    )
}

/// A tar.gz holding `n` applications named `{prefix}-{i}` (two profiles each, values files) and,
/// when `with_package`, one package referencing all of them.
fn package_set(prefix: &str, n: usize, with_package: bool) -> Vec<u8> {
    let mut files: Vec<(String, String)> = Vec::new();
    for i in 0..n {
        let name = format!("{prefix}-{i:05}");
        files.push((
            format!("apps/{name}.yaml"),
            format!(
                "{}name: {name}\nversion: \"1.0.0\"\ndisplayName: \"Bench {prefix} {i:05}\"\ndescription: \"benchmark application {i}\"\nhelmRegistry: bench-helm\nchartName: {name}\nchartVersion: \"1.0.0\"\nprofiles:\n  - name: default\n    valuesFileName: values-{name}.yaml\n    parameterTemplates:\n      - name: image.tag\n        type: string\n        default: \"1.0\"\n  - name: tuned\n    valuesFileName: values-{name}.yaml\n",
                header("Application")
            ),
        ));
        files.push((
            format!("apps/values-{name}.yaml"),
            format!("replicaCount: 1\nimage:\n  tag: \"1.0\"\nname: {name}\n"),
        ));
    }
    if with_package {
        let mut dp = format!(
            "{}name: {prefix}-stack\nversion: \"1.0.0\"\ndescription: \"{n} applications\"\napplications:\n",
            header("DeploymentPackage")
        );
        for i in 0..n {
            dp.push_str(&format!(
                "  - name: {prefix}-{i:05}\n    version: \"1.0.0\"\n"
            ));
        }
        dp.push_str("deploymentProfiles:\n  - name: default\n    applicationProfiles:\n");
        for i in 0..n {
            dp.push_str(&format!(
                "      - application: {prefix}-{i:05}\n        profile: tuned\n"
            ));
        }
        files.push(("package.yaml".into(), dp));
    }
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, path, content.as_bytes())
            .expect("tar entry");
    }
    tar.into_inner().expect("tar").finish().expect("gzip")
}

fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p = |q: f64| ms(v[((v.len() as f64 - 1.0) * q).round() as usize]);
    (p(0.5), p(0.95), ms(*v.last().expect("samples")))
}

async fn registry(cp: &TestControlPlane, project: &str) {
    let (s, b) = cp
        .post(&cp.catalog(project, "/registries"), &serde_json::json!({"name": "bench-helm", "type": "HELM", "rootUrl": "oci://registry.example.org/bench"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

async fn run(cp: TestControlPlane, out: &mut Vec<String>) {
    let backend = cp.backend;
    // 1. Upload of a 100-application package set into fresh projects.
    let mut samples = Vec::new();
    for round in 0..5 {
        let project = format!("upload-{round}");
        cp.create_project(&project).await;
        registry(&cp, &project).await;
        let bundle = package_set("web", 100, true);
        let t = Instant::now();
        let (s, b) = cp
            .upload(&project, vec![("set.tar.gz".into(), bundle)])
            .await;
        samples.push(t.elapsed());
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let (p50, p95, max) = stats(samples);
    out.push(format!("| {backend} | upload 100-app package set (tar.gz, 201 files) into a fresh project | 5 | {p50:.0} | {p95:.0} | {max:.0} |"));

    // 2. 10,000 applications in one project.
    registry(&cp, "default").await;
    let t = Instant::now();
    for batch in 0..20 {
        let (s, b) = cp
            .upload(
                "default",
                vec![(
                    format!("b{batch}.tar.gz"),
                    package_set(&format!("a{batch:02}"), 500, false),
                )],
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let seed = t.elapsed();
    out.push(format!(
        "| {backend} | seed 10,000 applications (20 uploads of 500) | 1 | {:.0} | | |",
        seed.as_secs_f64() * 1000.0
    ));
    let queries = [
        ("list, default page (20)", ""),
        ("list, pageSize=500", "?pageSize=500"),
        (
            "list, orderBy=name desc, offset=9000",
            "?orderBy=name%20desc&offset=9000",
        ),
        ("filter name=a03-001* (100 hits)", "?filter=name%3Da03-001*"),
        (
            "filter displayName substring OR description",
            "?filter=displayName%3D07777%20OR%20description%3Dapplication%20123",
        ),
        ("filter, no match", "?filter=name%3Dnothing-here"),
    ];
    for (label, q) in queries {
        let url = cp.catalog("default", &format!("/applications{q}"));
        let mut samples = Vec::new();
        for _ in 0..3 {
            cp.get(&url).await;
        }
        for _ in 0..40 {
            let t = Instant::now();
            let (s, b) = cp.get(&url).await;
            samples.push(t.elapsed());
            assert_eq!(s, StatusCode::OK, "{b}");
            assert_eq!(
                b["totalElements"].as_u64().unwrap_or(0) >= 10_000,
                q.is_empty() || q.starts_with("?pageSize") || q.starts_with("?orderBy")
            );
        }
        let (p50, p95, max) = stats(samples);
        out.push(format!(
            "| {backend} | {label} (10,000 apps) | 40 | {p50:.1} | {p95:.1} | {max:.1} |"
        ));
    }
    cp.stop().await;
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut out = vec![
            "| backend | operation | runs | p50 ms | p95 ms | max ms |".to_string(),
            "|---|---|---|---|---|---|".to_string(),
        ];
        for cp in TestControlPlane::all().await {
            eprintln!("benchmarking {} ...", cp.backend);
            run(cp, &mut out).await;
        }
        let mut stdout = std::io::stdout().lock();
        for line in out {
            writeln!(stdout, "{line}").expect("stdout");
        }
    });
}
