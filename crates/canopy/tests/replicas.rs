//! Several real `canopy server` processes on one PostgreSQL database, behind a real HAProxy
//! (canopy-testkit's `replicas` harness): what one replica commits to the store (catalog,
//! users, tokens) serves on every other; conflicting writes on two replicas; a replica killed
//! under a stream of operator reads; a replica started late; once-only background work and its
//! takeover; an older release on a database a newer one migrated; what `canopy server` says at
//! start about replicas; simulated edges (canopy-loadsim) spread over two replicas, one of them
//! killed. Fleet state with a real agent between replicas is in `replicas_fleet.rs`.
//!
//! Skipped when `CANOPY_TEST_DATABASE_URL` or `CANOPY_TEST_HAPROXY` is unset, except under CI.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use canopy_testkit::replicas::{ReplicaSet, ReplicaSetOptions};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_canopy"))
}

async fn start(options: ReplicaSetOptions) -> Option<ReplicaSet> {
    let set = ReplicaSet::start(binary(), options).await;
    if set.is_none() {
        eprintln!("skipped: CANOPY_TEST_DATABASE_URL or CANOPY_TEST_HAPROXY is not set");
    }
    set
}

/// Sends `req` with `token`; returns the status and the JSON body (`Null` when not JSON).
async fn send(req: reqwest::RequestBuilder, token: &str) -> (StatusCode, Value) {
    let resp = req.bearer_auth(token).send().await.expect("request");
    let status = resp.status();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body)
}

fn catalog(base: &str, rest: &str) -> String {
    format!("{base}/v3/projects/default/catalog{rest}")
}

async fn helm_registry(set: &ReplicaSet, base: &str) {
    let (s, b) = send(
        set.http().post(catalog(base, "/registries")).json(
            &json!({"name": "helm", "type": "HELM", "rootUrl": "oci://registry.example.org/helm"}),
        ),
        set.admin_token(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "create the helm registry: {b}");
}

fn application(name: &str, description: &str) -> Value {
    json!({"name": name, "version": "1.0.0", "description": description, "chartName": name,
        "chartVersion": "1.0.0", "helmRegistryName": "helm",
        "profiles": [{"name": "p", "chartValues": "a: 1\n"}], "defaultProfileName": "p"})
}

#[tokio::test]
async fn what_one_replica_stores_serves_on_the_others_and_on_a_late_one() {
    let Some(mut set) = start(ReplicaSetOptions::default()).await else {
        return;
    };
    let (a, b) = (set.url(0).to_string(), set.url(1).to_string());
    let admin = set.admin_token().to_string();

    // A catalog upload on A...
    let mut form = reqwest::multipart::Form::new();
    for (name, content) in canopy_testkit::read_dir_files(&canopy_testkit::example("web-demo")) {
        form = form.part(
            "files",
            reqwest::multipart::Part::bytes(content).file_name(name),
        );
    }
    let (s, body) = send(
        set.http().post(catalog(&a, "/upload")).multipart(form),
        &admin,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "upload on A: {body}");
    let (s, on_a) = send(set.http().get(catalog(&a, "/applications")), &admin).await;
    assert_eq!(s, StatusCode::OK, "{on_a}");
    assert!(on_a["totalElements"].as_u64().unwrap() > 0, "{on_a}");
    // ...is what B serves.
    let (s, on_b) = send(set.http().get(catalog(&b, "/applications")), &admin).await;
    assert_eq!(s, StatusCode::OK, "{on_b}");
    assert_eq!(on_a, on_b, "B serves A's upload");

    // A user and an API token made on A; a session opened on B; each works everywhere.
    let (s, body) = send(
        set.http().post(format!("{a}/canopy/v1/users")).json(
            &json!({"name": "ops", "password": "a long enough passphrase", "roles": ["default_cat-r"]}),
        ),
        &admin,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "create user on A: {body}");
    let (s, body) = send(
        set.http()
            .post(format!("{a}/canopy/v1/tokens"))
            .json(&json!({"name": "ci", "user": "ops"})),
        &admin,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "token on A: {body}");
    let api_token = body["token"].as_str().expect("token").to_string();
    let login = set
        .http()
        .post(format!("{b}/canopy/v1/login"))
        .json(&json!({"username": "ops", "password": "a long enough passphrase"}))
        .send()
        .await
        .expect("login on B");
    assert_eq!(login.status(), StatusCode::OK, "login on B");
    let session: Value = login.json().await.expect("login body");
    let session = session["token"]
        .as_str()
        .expect("session token")
        .to_string();
    for (token, what) in [(&api_token, "A's API token"), (&session, "B's session")] {
        for base in [a.as_str(), b.as_str(), set.balancer_url()] {
            let (s, body) = send(set.http().get(catalog(base, "/applications")), token).await;
            assert_eq!(s, StatusCode::OK, "{what} at {base}: {body}");
            assert_eq!(body, on_a, "{what} at {base}");
        }
    }

    // A replica started late serves the same data, and the same credentials.
    let late = set.start_replica().await;
    let c = set.url(late).to_string();
    let (s, body) = send(set.http().get(catalog(&c, "/applications")), &session).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body, on_a, "the late replica serves the same catalog");
    assert!(
        !c.is_empty() && set.log_count(late, "first start") == 0,
        "the late replica did not initialize anything"
    );
}

#[tokio::test]
async fn conflicting_writes_on_two_replicas_one_wins_the_other_gets_409() {
    let Some(set) = start(ReplicaSetOptions {
        balancer: false,
        ..ReplicaSetOptions::default()
    })
    .await
    else {
        return;
    };
    let (a, b) = (set.url(0).to_string(), set.url(1).to_string());
    helm_registry(&set, &a).await;
    const ROUNDS: usize = 12;
    for round in 0..ROUNDS {
        let name = format!("race-{round}");
        let post = |base: &str, who: &str| {
            send(
                set.http()
                    .post(catalog(base, "/applications"))
                    .json(&application(&name, who)),
                set.admin_token(),
            )
        };
        let ((sa, ba), (sb, bb)) = tokio::join!(post(&a, "from A"), post(&b, "from B"));
        let mut codes = [sa, sb];
        codes.sort();
        assert_eq!(
            codes,
            [StatusCode::OK, StatusCode::CONFLICT],
            "round {round}: one create wins, the other gets the reference's 409 (A: {ba}, B: {bb})"
        );
        let winner = if sa == StatusCode::OK {
            "from A"
        } else {
            "from B"
        };
        // Nothing half applied: exactly the winner's application, as both replicas read it.
        for base in [&a, &b] {
            let (s, got) = send(
                set.http().get(catalog(
                    base,
                    &format!("/applications/{name}/versions/1.0.0"),
                )),
                set.admin_token(),
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{got}");
            assert_eq!(got["application"]["description"], winner, "{got}");
        }
    }
    let (s, list) = send(
        set.http().get(catalog(&a, "/applications?pageSize=100")),
        set.admin_token(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(list["totalElements"], ROUNDS as u64, "{list}");
}

#[tokio::test]
async fn a_replica_killed_under_a_stream_of_reads_fails_no_request_beyond_those_in_flight() {
    // No per-caller rate limit: the four clients read as fast as the replicas answer (on a quiet
    // machine that is past the default limit, and a 429 is not what this test is about).
    let Some(mut set) = start(ReplicaSetOptions {
        replicas: 3,
        server_args: vec!["--rate-limit".into(), "0".into()],
        ..ReplicaSetOptions::default()
    })
    .await
    else {
        return;
    };
    helm_registry(&set, set.url(0)).await;
    const CLIENTS: usize = 4;
    let url = catalog(set.balancer_url(), "/registries");
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (http, url, token) = (
            set.http().clone(),
            url.clone(),
            set.admin_token().to_string(),
        );
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match http.get(&url).bearer_auth(&token).send().await {
                    Ok(r) if r.status() == StatusCode::OK => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => failed.lock().unwrap().push(format!("HTTP {}", r.status())),
                    Err(e) => failed.lock().unwrap().push(e.to_string()),
                }
            }
        }));
    }
    let wait_ok = |n: u64| {
        let ok = ok.clone();
        move || ok.load(Ordering::SeqCst) >= n
    };
    set.wait_for(
        "200 reads before the kill",
        Duration::from_secs(60),
        wait_ok(200),
    )
    .await;
    let before = ok.load(Ordering::SeqCst);
    set.kill(1);
    let killed_at = Instant::now();
    // Keep reading until HAProxy has surely marked the replica down (2 failed checks 500 ms
    // apart) and well past it.
    set.wait_for(
        "reads after the kill",
        Duration::from_secs(60),
        wait_ok(before + 400),
    )
    .await;
    while killed_at.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.expect("client task");
    }
    let failed = failed.lock().unwrap().clone();
    let total = ok.load(Ordering::SeqCst);
    let sample = &failed[..failed.len().min(5)];
    eprintln!(
        "{total} reads succeeded ({} after the kill), {} failed (first ones: {sample:?})",
        total - before,
        failed.len()
    );
    assert!(
        failed.len() <= CLIENTS,
        "at most the {CLIENTS} requests in flight at the kill may fail; {} did (first ones: \
         {sample:?})",
        failed.len()
    );
    // The survivors still serve through the balancer.
    let (s, _) = send(set.http().get(&url), set.admin_token()).await;
    assert_eq!(s, StatusCode::OK);
}

/// Opens an upload session (one file, not the last) through `base`; returns its id.
async fn open_upload_session(set: &ReplicaSet, base: &str) -> String {
    use base64::Engine as _;
    let (s, body) = send(
        set.http()
            .post(catalog(base, "/uploads?lastUpload=false"))
            .json(&json!({"fileName": "a.yaml",
                "artifact": base64::engine::general_purpose::STANDARD.encode(b"a: 1\n")})),
        set.admin_token(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "open an upload session: {body}");
    body["sessionId"].as_str().expect("sessionId").to_string()
}

/// How many upload sessions the database holds.
async fn open_sessions(store: &canopy_store::Store) -> u64 {
    store.upload_usage().await.expect("upload usage").sessions
}

const TAKEN: &str = "lease taken: this replica runs upload-reaper";
const REAPED: &str = "expired idle upload sessions";

#[tokio::test]
async fn background_work_runs_on_one_replica_and_is_taken_over_when_it_is_killed() {
    let Some(mut set) = start(ReplicaSetOptions {
        balancer: false,
        server_args: vec!["--upload-session-idle".into(), "2s".into()],
        ..ReplicaSetOptions::default()
    })
    .await
    else {
        return;
    };
    let store = canopy_store::Store::connect(&set.database_url)
        .await
        .expect("connect to the replicas' database");
    // Exactly one replica takes the reaper's lease.
    set.wait_for(
        "a replica taking the lease",
        Duration::from_secs(60),
        || set.log_count(0, TAKEN) + set.log_count(1, TAKEN) > 0,
    )
    .await;
    let holder = if set.log_count(0, TAKEN) > 0 { 0 } else { 1 };
    let other = 1 - holder;

    // A session opened on the other replica is reaped, by the holder alone.
    open_upload_session(&set, set.url(other)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while open_sessions(&store).await > 0 {
        assert!(Instant::now() < deadline, "the idle session was not reaped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    set.wait_for(
        "the holder's reaping log line",
        Duration::from_secs(10),
        || set.log_count(holder, REAPED) == 1,
    )
    .await;
    assert_eq!(set.log_count(other, TAKEN), 0, "one holder at a time");
    assert_eq!(set.log_count(other, REAPED), 0, "only the holder reaps");

    // The holder dies: the other replica takes the job over and reaps the next session.
    set.kill(holder);
    let killed = Instant::now();
    set.wait_for(
        "the surviving replica to take the lease",
        Duration::from_secs(60),
        || set.log_count(other, TAKEN) == 1,
    )
    .await;
    eprintln!("lease taken over {:?} after the kill", killed.elapsed());
    open_upload_session(&set, set.url(other)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while open_sessions(&store).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the survivor did not reap the idle session"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    set.wait_for(
        "the survivor's reaping log line",
        Duration::from_secs(10),
        || set.log_count(other, REAPED) == 1,
    )
    .await;
}

#[tokio::test]
async fn an_older_release_serves_a_database_a_newer_release_migrated() {
    let Some(url) = canopy_store::testing::fresh_postgres().await else {
        eprintln!("skipped: CANOPY_TEST_DATABASE_URL is not set");
        return;
    };
    // The newer release's replica migrated first: its additive migration is one this binary
    // does not know.
    let store = canopy_store::Store::connect(&url).await.expect("migrate");
    canopy_store::testing::execute_raw(
        &store,
        "ALTER TABLE registries ADD COLUMN newer_release_note TEXT",
    )
    .await;
    canopy_store::testing::execute_raw(
        &store,
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9001, 'a newer release: additive', TRUE, '\\x00'::bytea, 0)",
    )
    .await;
    store.close().await;
    let Some(set) = start(ReplicaSetOptions {
        replicas: 1,
        balancer: false,
        database_url: Some(url),
        ..ReplicaSetOptions::default()
    })
    .await
    else {
        return;
    };
    helm_registry(&set, set.url(0)).await;
    let (s, body) = send(
        set.http().get(catalog(set.url(0), "/registries")),
        set.admin_token(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["totalElements"], 1, "{body}");
}

#[tokio::test]
async fn start_up_says_what_replicas_need() {
    let Some(set) = start(ReplicaSetOptions {
        replicas: 1,
        balancer: false,
        ..ReplicaSetOptions::default()
    })
    .await
    else {
        return;
    };
    let log = set.log(0);
    assert!(
        log.contains("can run as one of several replicas")
            && log.contains("same --database-url")
            && log.contains("same secret key"),
        "{log}"
    );
}

#[tokio::test]
async fn on_sqlite_a_second_server_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("first.log");
    let server = |stderr: std::process::Stdio| {
        let mut cmd = std::process::Command::new(binary());
        cmd.args([
            "server",
            "--insecure-http",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env_remove("CANOPY_DATABASE_URL")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(stderr);
        cmd
    };
    let mut first = server(std::fs::File::create(&log).unwrap().into())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let started = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("listening on") {
            break text;
        }
        assert!(
            Instant::now() < deadline && matches!(first.try_wait(), Ok(None)),
            "the first server did not start: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        started.contains("The embedded SQLite database serves one process only"),
        "{started}"
    );
    let second = server(std::process::Stdio::piped()).output().unwrap();
    let _ = first.kill();
    let _ = first.wait();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "the second server must not start");
    assert!(
        stderr.contains("is using the data directory")
            && stderr.contains("several replicas")
            && stderr.contains("PostgreSQL"),
        "{stderr}"
    );
}

/// Forty simulated edges (canopy-loadsim, with the real agent client's failover) spread over two
/// replicas, a deployment made on the first reaching all of them; then the second is killed with
/// SIGKILL. Each edge it held is answered by the first and has its status acknowledged there,
/// none is sent a desired state again (they resume from the generation they hold), and the
/// first replica still shows the deployment RUNNING on all forty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edges_of_a_killed_replica_move_to_another_and_nothing_is_sent_again() {
    use canopy_loadsim::config::SimConfig;
    use canopy_loadsim::run::{Target, run};
    let Some(mut set) = start(ReplicaSetOptions {
        replicas: 2,
        balancer: false,
        server_args: vec![
            "--rate-limit".into(),
            "0".into(),
            "--agent-rate-limit".into(),
            "0".into(),
        ],
        ..ReplicaSetOptions::default()
    })
    .await
    else {
        return;
    };
    let pids: Vec<u32> = (0..2)
        .map(|i| set.replica(i).pid().expect("replica running"))
        .collect();
    let cfg = SimConfig {
        edges: 40,
        edges_per_connection: 5,
        enroll_concurrency: 8,
        wait_seconds: 20,
        idle: Duration::from_secs(1),
        phase_timeout: Duration::from_secs(60),
        pause: Duration::from_millis(200),
        duration: Duration::from_secs(300),
        status_poll: Duration::from_millis(100),
        more_servers: vec![set.url(1).to_string()],
        more_server_pids: vec![pids[1]],
        failover: true,
        ..SimConfig::default()
    };
    let report = run(
        &cfg,
        Target::Running {
            url: set.url(0).to_string(),
            pid: Some(pids[0]),
            token: Some(set.admin_token().to_string()),
        },
    )
    .await
    .expect("the simulation with a failover runs");
    eprintln!("{}", report.to_markdown());

    assert_eq!(report.idle.replicas.len(), 1, "{:?}", report.idle);
    assert!(report.idle.replicas[0].cpu_percent.is_some());
    for p in &report.phases[..2] {
        assert_eq!(p.delivery.count, 40, "every edge got it: {p:?}");
    }
    let f = report.failover.expect("a failover report");
    assert_eq!(
        f.edges_moved, 20,
        "8 connections of 5 edges, every other one on B"
    );
    assert_eq!(f.connected.count, 20, "{f:?}");
    assert_eq!(f.fresh.count, 20, "{f:?}");
    assert_eq!(f.redelivered, 0, "nothing delivered again: {f:?}");
    assert!(
        f.fresh.max_ms < 30_000.0,
        "the edges report to A at once, not at their next heartbeat: {f:?}"
    );
    assert!(
        !set.replica(1).is_running(),
        "the second replica was killed"
    );
}
