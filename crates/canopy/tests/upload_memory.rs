//! Memory under concurrent uploads: a real `canopy server` process receives 16 uploads of 60 MB
//! at once (8 bulk multipart uploads, 8 session uploads) while its resident memory is sampled
//! from `/proc/PID/status`, and a well-behaved client keeps listing the catalog. The server must
//! stay under a memory bound that does not grow with the number of uploads, apply every upload,
//! and answer the well-behaved client meanwhile.
//!
//! Why the bound holds (docs/CATALOG.md, "Uploads and memory"): request bodies are streamed to
//! the upload spool on disk, session files are stored and read back in 1 MiB chunks, and only
//! `--upload-parallelism` uploads (2 here, the default) are parsed in memory at once, each at
//! most 64 MiB after decompression. So the peak is the idle server plus two uploads being parsed
//! (2 x 64 MiB of file content, plus what the parser and the allocator keep around them), plus a
//! few MiB of buffers per connection: [`RSS_BOUND_MIB`]. Before streaming, the same run peaked
//! at about 2 GB (16 x 60 MB held at once, several copies each).
//!
//! Also the benchmark of docs/BENCHMARKS.md ("Uploads: memory under 16 concurrent 60 MB
//! uploads"): it prints the peak RSS and the well-behaved client's latencies. To measure another
//! build, point `CANOPY_UPLOAD_BENCH_BIN` at its `canopy` binary (the assertion then tells
//! whether that build stays under the bound).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// Size of each upload.
const UPLOAD_BYTES: usize = 60_000_000;
/// Uploads of each kind, all at once.
const MULTIPART_UPLOADS: usize = 8;
const SESSION_UPLOADS: usize = 8;
/// The bound on the server's peak resident memory (see the module doc).
const RSS_BOUND_MIB: u64 = 400;
/// Generous: a loaded 2-core CI runner parsing 16 x 60 MB in a debug build.
const DEADLINE: Duration = Duration::from_secs(600);

struct ServerProcess {
    child: Child,
    url: String,
    log: std::path::PathBuf,
}

impl ServerProcess {
    fn start(data_dir: &std::path::Path, database_url: Option<&str>) -> ServerProcess {
        let log = data_dir.join("server.log");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let bin = std::env::var("CANOPY_UPLOAD_BENCH_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_canopy").to_string());
        let mut cmd = Command::new(bin);
        cmd.arg("server")
            .arg("--insecure-http")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .env_remove("CANOPY_DATABASE_URL")
            // One project holds all eight 60 MB sessions, and the spool all sixteen bodies at
            // once (given as variables so an older build without these settings still starts).
            .env("CANOPY_UPLOAD_SESSION_BYTES_PER_PROJECT", "1GiB")
            .env("CANOPY_UPLOAD_SPOOL_SIZE", "3GiB")
            .env("CANOPY_UPLOAD_PARALLELISM", "2")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(url) = database_url {
            cmd.arg("--database-url").arg(url);
        }
        ServerProcess {
            child: cmd.spawn().expect("canopy server starts"),
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    async fn wait_healthy(&self) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(r) = http.get(format!("{}/healthz", self.url)).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "server at {} did not become healthy; log:\n{}",
            self.url,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmRSS` and `VmHWM` (peak) of a process, in KiB.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Incompressible bytes (xorshift), so the gzip stream is as large as its content.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A tar.gz of about `UPLOAD_BYTES`: one registry document and incompressible blobs (under the
/// 10 MiB per-entry limit, 60 MB in all: under the 64 MiB an upload may decompress to).
fn bundle(registry: &str) -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::with_capacity(UPLOAD_BYTES + 1_000_000),
        flate2::Compression::none(),
    ));
    let doc = format!(
        "specSchema: Registry\nschemaVersion: \"0.1\"\n$schema: \"https://schema.intel.com/catalog.orchestrator/0.1/schema\"\nname: {registry}\ndescription: memory test\ntype: HELM\nrootUrl: https://charts.example.com\n"
    );
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, path, data).unwrap();
    };
    add("registry.yaml", doc.as_bytes());
    let blob = UPLOAD_BYTES / 6;
    for i in 0..6 {
        add(
            &format!("blobs/blob-{i}.bin"),
            &noise(blob, 0x9e37_79b9 + i as u64),
        );
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// p-th percentile (0..=100) of sorted durations.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) * p).div_ceil(100)]
}

async fn run(database_url: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), database_url.as_deref());
    server.wait_healthy().await;
    let pid = server.child.id();
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", token.trim()).parse().unwrap(),
    );
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .timeout(DEADLINE)
        .build()
        .unwrap();
    let catalog = format!("{}/v3/projects/default/catalog", server.url);
    let (idle_rss, _) = rss_kib(pid).unwrap();

    let multipart_body = bytes::Bytes::from(bundle("mem-multipart"));
    let session_json = bytes::Bytes::from(
        serde_json::to_vec(&json!({
            "fileName": "bundle.tar.gz",
            "artifact": base64::engine::general_purpose::STANDARD.encode(bundle("mem-session")),
        }))
        .unwrap(),
    );
    eprintln!(
        "multipart upload: {} bytes; session upload: {} bytes of JSON",
        multipart_body.len(),
        session_json.len()
    );

    // Sample the server's memory until the uploads are done.
    let done = Arc::new(AtomicBool::new(false));
    let peak_sampled = Arc::new(AtomicU64::new(0));
    let sampler = {
        let done = done.clone();
        let peak = peak_sampled.clone();
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some((rss, _)) = rss_kib(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    // The well-behaved client: lists the catalog every 100 ms.
    let reader = {
        let http = http.clone();
        let url = format!("{catalog}/registries");
        let done = done.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let t = Instant::now();
                match http.get(&url).timeout(Duration::from_secs(60)).send().await {
                    Ok(r) if r.status().is_success() => latencies.push(t.elapsed()),
                    Ok(r) => failures.push(format!("{}", r.status())),
                    Err(e) => failures.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (latencies, failures)
        })
    };

    let started = Instant::now();
    let mut uploads = Vec::new();
    for i in 0..MULTIPART_UPLOADS {
        let http = http.clone();
        let url = format!("{catalog}/upload");
        let body = multipart_body.clone();
        uploads.push(tokio::spawn(async move {
            let form = reqwest::multipart::Form::new().part(
                "files",
                reqwest::multipart::Part::stream(body).file_name(format!("bundle-{i}.tar.gz")),
            );
            let r = http.post(url).multipart(form).send().await;
            match r {
                Ok(r) => {
                    let s = r.status();
                    let b = r.text().await.unwrap_or_default();
                    (format!("multipart {i}"), s.is_success(), format!("{s} {b}"))
                }
                Err(e) => (format!("multipart {i}"), false, e.to_string()),
            }
        }));
    }
    for i in 0..SESSION_UPLOADS {
        let http = http.clone();
        let url = format!("{catalog}/uploads");
        let body = session_json.clone();
        uploads.push(tokio::spawn(async move {
            let what = format!("session {i}");
            let first = http
                .post(format!("{url}?lastUpload=false"))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await;
            let session = match first {
                Ok(r) if r.status().is_success() => {
                    let v: Value = r.json().await.unwrap_or_default();
                    v["sessionId"].as_str().unwrap_or_default().to_string()
                }
                Ok(r) => {
                    let s = r.status();
                    return (
                        what,
                        false,
                        format!("{s} {}", r.text().await.unwrap_or_default()),
                    );
                }
                Err(e) => return (what, false, e.to_string()),
            };
            let last = http
                .post(format!("{url}?sessionId={session}&lastUpload=true"))
                .json(&json!({"fileName": "note.yaml", "artifact": "bm90ZTogMQo="}))
                .send()
                .await;
            match last {
                Ok(r) => {
                    let s = r.status();
                    let b = r.text().await.unwrap_or_default();
                    (what, s.is_success(), format!("{s} {b}"))
                }
                Err(e) => (what, false, e.to_string()),
            }
        }));
    }
    let mut failed = Vec::new();
    for u in uploads {
        let (what, ok, detail) = u.await.unwrap();
        if !ok {
            failed.push(format!("{what}: {detail}"));
        }
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let (mut latencies, reader_failures) = reader.await.unwrap();
    let (end_rss, hwm) = rss_kib(pid).unwrap();
    let peak = peak_sampled.load(Ordering::Relaxed).max(hwm);
    latencies.sort();
    eprintln!(
        "[{}] {} uploads of {UPLOAD_BYTES} bytes in {elapsed:.1?}: server RSS idle {} MiB, peak {} MiB (VmHWM {} MiB), after {} MiB; \
         well-behaved client: {} calls, p50 {:?}, p99 {:?}, max {:?}, {} failed",
        if database_url.is_some() {
            "postgres"
        } else {
            "sqlite"
        },
        MULTIPART_UPLOADS + SESSION_UPLOADS,
        idle_rss / 1024,
        peak / 1024,
        hwm / 1024,
        end_rss / 1024,
        latencies.len(),
        percentile(&latencies, 50),
        percentile(&latencies, 99),
        latencies.last().copied().unwrap_or_default(),
        reader_failures.len(),
    );
    assert!(
        failed.is_empty(),
        "uploads failed: {failed:#?}\nserver log:\n{}",
        std::fs::read_to_string(&server.log).unwrap_or_default()
    );
    assert!(
        peak / 1024 < RSS_BOUND_MIB,
        "the server peaked at {} MiB of resident memory (bound {RSS_BOUND_MIB} MiB)",
        peak / 1024
    );
    assert!(
        reader_failures.is_empty(),
        "the well-behaved client's calls failed meanwhile: {reader_failures:?}"
    );
    assert!(
        latencies.len() >= 5,
        "the well-behaved client got only {} answers in {elapsed:?}",
        latencies.len()
    );
    // Every upload was applied.
    for name in ["mem-multipart", "mem-session"] {
        let r = http
            .get(format!("{catalog}/registries/{name}"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "registry {name} missing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_uploads_keep_server_memory_flat_sqlite() {
    run(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_uploads_keep_server_memory_flat_postgres() {
    if let Some(url) = canopy_store::testing::fresh_postgres().await {
        run(Some(url)).await;
    }
}
