//! Several real `canopy server` processes on one PostgreSQL database, behind a real HAProxy:
//! the multi-replica harness.
//!
//! [`ReplicaSet::start`] starts the built binary (the caller passes its path, e.g.
//! `env!("CARGO_BIN_EXE_canopy")`) N times on a fresh database, each with a data directory of
//! its own and the same secret key (the first replica's generated `secret.key`, copied into the
//! others' directories as an operator would), on ephemeral loopback ports (`--listen
//! 127.0.0.1:0`, the address read back from the replica's log). HAProxy is started in front
//! with a generated configuration: health checks on `/healthz`, and retries on another replica
//! (`redispatch`, `retry-on`) for requests that could not reach a replica or got no answer from
//! one that died, for GET and HEAD only (a POST that reached a dying replica may have been
//! applied: it is not sent twice). That is the configuration docs/OPERATIONS.md recommends.
//!
//! Processes are killed (SIGKILL) when the set is dropped. Tests skip when PostgreSQL
//! (`CANOPY_TEST_DATABASE_URL`) or HAProxy ([`HAPROXY_ENV`]) is not configured, except under CI
//! (env `CI` set), where a missing one fails the test instead.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Environment variable naming the HAProxy binary for tests (`scripts/haproxy.sh` prints it).
pub const HAPROXY_ENV: &str = "CANOPY_TEST_HAPROXY";

/// How long a replica or HAProxy may take to start (a debug build on a busy 2-core machine).
const START_DEADLINE: Duration = Duration::from_secs(90);

/// The HAProxy binary from [`HAPROXY_ENV`]; `None` when unset outside CI (panics under CI).
pub fn haproxy_binary() -> Option<PathBuf> {
    match std::env::var(HAPROXY_ENV) {
        Ok(path) if !path.trim().is_empty() => Some(PathBuf::from(path)),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "{HAPROXY_ENV} is not set but CI is: the multi-replica tests must not be \
                     skipped. Install HAProxy with scripts/haproxy.sh and export the line it prints."
                );
            }
            None
        }
    }
}

/// What to start (see [`ReplicaSet::start`]).
#[derive(Debug, Clone)]
pub struct ReplicaSetOptions {
    /// How many replicas to start at once.
    pub replicas: usize,
    /// Extra `canopy server` flags given to every replica (e.g. `--upload-session-idle 2s`).
    pub server_args: Vec<String>,
    /// Start HAProxy in front (needs [`HAPROXY_ENV`]).
    pub balancer: bool,
    /// The database to use; `None`: a fresh one on `CANOPY_TEST_DATABASE_URL`'s server.
    pub database_url: Option<String>,
}

impl Default for ReplicaSetOptions {
    fn default() -> Self {
        ReplicaSetOptions {
            replicas: 2,
            server_args: Vec::new(),
            balancer: true,
            database_url: None,
        }
    }
}

/// One `canopy server` process.
pub struct Replica {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// `127.0.0.1:PORT` (HAProxy's `server` line).
    pub addr: String,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Replica {
    /// Whether the process is still running (not killed, not exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The replica's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The process id, while it was not killed by [`ReplicaSet::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// N replicas on one database, and HAProxy in front (see the module docs).
pub struct ReplicaSet {
    binary: PathBuf,
    options: ReplicaSetOptions,
    /// The database every replica uses.
    pub database_url: String,
    replicas: Vec<Replica>,
    haproxy: Option<Child>,
    balancer_url: Option<String>,
    admin_token: String,
    http: reqwest::Client,
    /// Holds every data directory, log and the HAProxy configuration.
    dir: tempfile::TempDir,
}

impl ReplicaSet {
    /// Starts `options.replicas` replicas of `binary` (the first alone, so it initializes the
    /// database and writes the administrator token and secret key; then the others with its
    /// key), waits until each answers `/healthz`, then HAProxy when asked. `None` when
    /// PostgreSQL or HAProxy is not configured for tests (outside CI).
    pub async fn start(binary: &Path, options: ReplicaSetOptions) -> Option<ReplicaSet> {
        assert!(options.replicas >= 1, "a replica set needs a replica");
        let haproxy = if options.balancer {
            Some(haproxy_binary()?)
        } else {
            None
        };
        let database_url = match &options.database_url {
            Some(url) => url.clone(),
            None => canopy_store::testing::fresh_postgres().await?,
        };
        let mut set = ReplicaSet {
            binary: binary.to_path_buf(),
            options: options.clone(),
            database_url,
            replicas: Vec::new(),
            haproxy: None,
            balancer_url: None,
            admin_token: String::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
            dir: tempfile::tempdir().expect("temp dir"),
        };
        set.start_replica().await;
        let first = set.replicas[0].data_dir.join("admin.token");
        set.admin_token = std::fs::read_to_string(&first)
            .unwrap_or_else(|e| panic!("the first replica wrote no {}: {e}", first.display()))
            .trim()
            .to_string();
        for _ in 1..options.replicas {
            set.spawn_replica();
        }
        for i in 1..options.replicas {
            set.wait_started(i).await;
        }
        if let Some(haproxy) = haproxy {
            set.start_haproxy(&haproxy).await;
        }
        Some(set)
    }

    /// Starts one more replica (a late one, or a replacement) with the set's key and flags, and
    /// waits until it is healthy; returns its index. It is not added to HAProxy's servers.
    pub async fn start_replica(&mut self) -> usize {
        let i = self.spawn_replica();
        self.wait_started(i).await;
        i
    }

    fn spawn_replica(&mut self) -> usize {
        use std::os::unix::fs::DirBuilderExt as _;
        let i = self.replicas.len();
        let data_dir = self.dir.path().join(format!("replica-{i}"));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&data_dir)
            .expect("replica data dir");
        if i > 0 {
            // Every replica needs the same secret key: copy the first one's, as an operator does.
            let key = self.replicas[0].data_dir.join("secret.key");
            std::fs::copy(&key, data_dir.join("secret.key")).expect("copy secret.key");
        }
        let log = self.dir.path().join(format!("replica-{i}.log"));
        let mut cmd = Command::new(&self.binary);
        cmd.arg("server")
            .arg("--insecure-http")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--database-url")
            .arg(&self.database_url)
            .args(&self.options.server_args)
            .env_remove("CANOPY_DATABASE_URL")
            .env_remove("CANOPY_SECRET_KEY")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("replica log"));
        let child = cmd.spawn().expect("start canopy server");
        self.replicas.push(Replica {
            url: String::new(),
            addr: String::new(),
            data_dir,
            log,
            child: Some(child),
        });
        i
    }

    /// Waits for replica `i` to log its address and answer `/healthz`.
    async fn wait_started(&mut self, i: usize) {
        let deadline = Instant::now() + START_DEADLINE;
        let addr = loop {
            if let Some(addr) = listening_addr(&self.log(i)) {
                break addr;
            }
            if !self.replicas[i].is_running() {
                panic!("replica {i} exited at start; its log:\n{}", self.log(i));
            }
            assert!(
                Instant::now() < deadline,
                "replica {i} did not start within {START_DEADLINE:?}; its log:\n{}",
                self.log(i)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let url = format!("http://{addr}");
        loop {
            if let Ok(r) = self.http.get(format!("{url}/healthz")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica {i} at {url} did not become healthy; its log:\n{}",
                self.log(i)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.replicas[i].addr = addr;
        self.replicas[i].url = url;
    }

    async fn start_haproxy(&mut self, haproxy: &Path) {
        // The port is picked by binding and releasing it: another process could take it in
        // between, so a failed start is tried again on another port.
        for attempt in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("pick a port")
                .port();
            let servers: Vec<&str> = self.replicas.iter().map(|r| r.addr.as_str()).collect();
            let config = self.dir.path().join("haproxy.cfg");
            std::fs::write(&config, haproxy_config(port, &servers)).expect("haproxy.cfg");
            let log = self.dir.path().join(format!("haproxy-{attempt}.log"));
            let child = Command::new(haproxy)
                .arg("-db")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("haproxy log"))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", haproxy.display()));
            self.haproxy = Some(child);
            let url = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + START_DEADLINE;
            loop {
                if let Ok(r) = self.http.get(format!("{url}/healthz")).send().await
                    && r.status().is_success()
                {
                    self.balancer_url = Some(url);
                    return;
                }
                let exited = self
                    .haproxy
                    .as_mut()
                    .is_some_and(|c| !matches!(c.try_wait(), Ok(None)));
                if exited || Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if let Some(mut c) = self.haproxy.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            eprintln!(
                "HAProxy did not start on port {port} (attempt {}): {}",
                attempt + 1,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        panic!("HAProxy did not start (see above)");
    }

    /// HAProxy's URL (the address operators use). Panics when the set has no balancer.
    pub fn balancer_url(&self) -> &str {
        self.balancer_url
            .as_deref()
            .expect("this replica set was started without HAProxy")
    }

    /// Replica `i`'s URL.
    pub fn url(&self, i: usize) -> &str {
        &self.replicas[i].url
    }

    /// Replica `i`.
    pub fn replica(&mut self, i: usize) -> &mut Replica {
        &mut self.replicas[i]
    }

    /// How many replicas were started (killed ones included).
    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    /// Whether no replica was started (never true for a started set).
    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }

    /// The administrator's API token (written by the first replica).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// A client with a generous timeout (no credentials: add `bearer_auth`).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Replica `i`'s log so far (its stderr at `RUST_LOG=info`).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.replicas[i].log).unwrap_or_default()
    }

    /// How many lines of replica `i`'s log contain `text`.
    pub fn log_count(&self, i: usize, text: &str) -> usize {
        self.log(i).lines().filter(|l| l.contains(text)).count()
    }

    /// Kills replica `i` with SIGKILL (no graceful shutdown: a crash) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.replicas[i].child.take() {
            child.kill().expect("SIGKILL the replica");
            let _ = child.wait();
        }
    }

    /// Waits until `condition` holds, for at most `within`; panics naming `what` otherwise.
    pub async fn wait_for(
        &self,
        what: &str,
        within: Duration,
        mut condition: impl FnMut() -> bool,
    ) {
        let deadline = Instant::now() + within;
        while !condition() {
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for ReplicaSet {
    fn drop(&mut self) {
        for r in &mut self.replicas {
            if let Some(mut c) = r.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if let Some(mut c) = self.haproxy.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The address in a replica's "listening on http://ADDR" start-up line.
fn listening_addr(log: &str) -> Option<String> {
    let marker = "listening on http://";
    let line = log.lines().find(|l| l.contains(marker))?;
    let rest = &line[line.find(marker)? + marker.len()..];
    let addr: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    (!addr.is_empty()).then_some(addr)
}

/// The HAProxy configuration of the harness: the one docs/OPERATIONS.md recommends, on
/// loopback, with quick health checks. Keep the two in step.
pub fn haproxy_config(port: u16, servers: &[&str]) -> String {
    let mut cfg = format!(
        "\
global
    maxconn 4000

defaults
    mode http
    timeout connect 2s
    timeout client 10m
    timeout server 10m
    timeout http-request 30s
    timeout queue 30s
    timeout tunnel 1h
    timeout check 2s
    # A request that cannot reach a replica, or gets no answer from one that died, is sent to
    # another replica; L7 retries only for GET and HEAD (below).
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout 502 503 504

frontend canopy
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    http-request disable-l7-retry if !METH_GET !METH_HEAD
    default-server check inter 500ms fall 2 rise 2
"
    );
    for (i, addr) in servers.iter().enumerate() {
        cfg.push_str(&format!("    server replica-{i} {addr}\n"));
    }
    cfg
}

#[cfg(test)]
mod tests {
    use super::listening_addr;

    #[test]
    fn reads_the_address_a_replica_listens_on() {
        let log = "2026-12-07T18:00:00Z  INFO canopy_server: Canopy control plane listening on \
                   http://127.0.0.1:40123 (API document at /openapi.json) addr=127.0.0.1:40123";
        assert_eq!(listening_addr(log).as_deref(), Some("127.0.0.1:40123"));
        assert_eq!(listening_addr("starting"), None);
    }
}
