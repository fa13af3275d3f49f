//! What `edge_podman.rs` needs around the control plane: real `canopy agent` child processes
//! ([`AgentProcess`]), the container engine as an operator sees it (the `podman` CLI in remote
//! mode against `CANOPY_TEST_DOCKER_HOST`, [`Engine`]), a guard that removes everything of the
//! test's scopes even when the test fails ([`Cleanup`]), and waiting with a deadline
//! ([`eventually`]).
//!
//! Agent logs go to files in a temp directory; when a test panics, [`Cleanup`] prints them
//! before it cleans up, so a failure shows what the agents did.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The variable naming the engine (see `scripts/podman.sh`).
pub const ENGINE_ENV: &str = "CANOPY_TEST_DOCKER_HOST";
/// The image `scripts/podman.sh` imports (nothing can be pulled here).
pub const IMAGE: &str = "localhost/busybox:canopy-test";
/// Generous but bounded: the machine may be a loaded 2-core runner.
pub const DEADLINE: Duration = Duration::from_secs(60);
/// Marks the objects a test makes by hand (decoys), so the guard can remove them too.
pub const RUN_LABEL: &str = "io.canopy.e2e-run";

/// Label keys the driver sets (`canopy_agent::driver::names`).
pub use canopy_agent::driver::names::{DEPLOYMENT, MANAGED, SCOPE};

/// The engine's address; `None` (skip, with a note) when it is not configured, outside CI.
/// Under CI a missing engine is a failure: these tests must not silently disappear.
pub fn engine_host(test: &str) -> Option<String> {
    match std::env::var(ENGINE_ENV) {
        Ok(h) if !h.trim().is_empty() => Some(h),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "{ENGINE_ENV} is not set but CI is: the end-to-end tests with Podman must not \
                     be skipped. Start Podman with scripts/podman.sh and export the line it prints."
                );
            }
            eprintln!("skipping {test}: {ENGINE_ENV} is not set (see scripts/podman.sh)");
            None
        }
    }
}

/// Eight hex digits no other test (or earlier run) uses.
pub fn unique() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let mixed = nanos ^ std::process::id().rotate_left(16) ^ n.wrapping_mul(0x9e37_79b9);
    format!("{mixed:08x}")
}

/// `N` distinct host ports free right now (on every address, as the containers publish).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("0.0.0.0:0").expect("a free port"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("bound address").port())
}

/// Polls `probe` until it returns `Ok`, or panics at [`DEADLINE`] naming `what` and the last
/// thing the probe saw.
pub async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) => {
                if start.elapsed() > DEADLINE {
                    panic!("timed out after {DEADLINE:?} waiting for {what}; last seen: {last}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// GET `http://127.0.0.1:{port}/`: the body, trimmed, or why not.
pub async fn http_body(port: u16) -> Result<String, String> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("http client");
    let resp = http
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .map_err(|e| format!("GET port {port}: {e}"))?;
    let status = resp.status();
    let body = resp
        .text()
        .await
        .map_err(|e| format!("body of port {port}: {e}"))?;
    if !status.is_success() {
        return Err(format!("port {port} answered {status}: {body}"));
    }
    Ok(body.trim().to_string())
}

/// A container as the engine shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub state: String,
    pub labels: HashMap<String, String>,
}

/// What must not change when a healthy container is left alone.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub id: String,
    pub name: String,
    pub started_at: String,
    pub restarts: u64,
    pub health: String,
}

/// The container engine through the `podman` CLI in remote mode (`--url`): what an operator of
/// the edge would see, independent of the agent's own code.
#[derive(Debug, Clone)]
pub struct Engine {
    url: String,
}

impl Engine {
    pub fn new(url: &str) -> Engine {
        Engine {
            url: url.to_string(),
        }
    }

    /// Runs `podman --url URL args...` (blocking: used from `Drop` too).
    pub fn podman_blocking(&self, args: &[&str]) -> Result<String, String> {
        let out = std::process::Command::new("podman")
            .arg("--url")
            .arg(&self.url)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run podman (is it installed?): {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "podman {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Runs `podman --url URL args...`.
    pub async fn podman(&self, args: &[&str]) -> Result<String, String> {
        let out = tokio::process::Command::new("podman")
            .arg("--url")
            .arg(&self.url)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("cannot run podman (is it installed?): {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "podman {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Every container (running or not) carrying the label `key=value`.
    pub async fn containers(&self, key: &str, value: &str) -> Result<Vec<Container>, String> {
        let filter = format!("label={key}={value}");
        let out = self
            .podman(&["ps", "-a", "--filter", &filter, "--format", "json"])
            .await?;
        let list: Vec<Value> = if out.trim().is_empty() {
            Vec::new()
        } else {
            serde_json::from_str(&out).map_err(|e| format!("podman ps json: {e}: {out}"))?
        };
        Ok(list
            .iter()
            .map(|c| Container {
                id: c["Id"].as_str().unwrap_or_default().to_string(),
                name: c["Names"][0].as_str().unwrap_or_default().to_string(),
                state: c["State"].as_str().unwrap_or_default().to_string(),
                labels: serde_json::from_value(c["Labels"].clone()).unwrap_or_default(),
            })
            .collect())
    }

    /// Names of the networks or volumes (`kind`) carrying the label `key=value`.
    pub async fn objects(&self, kind: &str, key: &str, value: &str) -> Result<Vec<String>, String> {
        let filter = format!("label={key}={value}");
        let out = self
            .podman(&[kind, "ls", "--filter", &filter, "--format", "{{.Name}}"])
            .await?;
        Ok(out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }

    /// Id, name, start time, restart count and health of containers, sorted by name.
    pub async fn identities(&self, ids: &[String]) -> Result<Vec<Identity>, String> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec!["inspect", "--type", "container", "--format", "json"];
        args.extend(ids.iter().map(String::as_str));
        let out = self.podman(&args).await?;
        let list: Vec<Value> =
            serde_json::from_str(&out).map_err(|e| format!("podman inspect json: {e}: {out}"))?;
        let mut v: Vec<Identity> = list
            .iter()
            .map(|i| {
                let state = &i["State"];
                let health = state["Health"]["Status"]
                    .as_str()
                    .or_else(|| state["Healthcheck"]["Status"].as_str())
                    .unwrap_or_default();
                Identity {
                    id: i["Id"].as_str().unwrap_or_default().to_string(),
                    name: i["Name"]
                        .as_str()
                        .unwrap_or_default()
                        .trim_start_matches('/')
                        .to_string(),
                    started_at: state["StartedAt"].as_str().unwrap_or_default().to_string(),
                    restarts: i["RestartCount"].as_u64().unwrap_or_default(),
                    health: health.to_string(),
                }
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// Starts a long-running container made by hand (not by Canopy), with extra labels.
    pub async fn run_decoy(&self, name: &str, labels: &[(&str, &str)]) {
        let mut args = vec!["run".to_string(), "-d".into(), "--name".into(), name.into()];
        for (k, v) in labels {
            args.push("--label".into());
            args.push(format!("{k}={v}"));
        }
        args.extend([IMAGE.to_string(), "sleep".into(), "3600".into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.podman(&args)
            .await
            .unwrap_or_else(|e| panic!("cannot start decoy {name}: {e}"));
    }

    /// Removes every container, volume and network carrying `key=value`; what is left (by kind).
    fn remove_labelled(&self, key: &str, value: &str) -> Vec<String> {
        let filter = format!("label={key}={value}");
        let ids = |kind: &[&str]| -> Vec<String> {
            let mut args = kind.to_vec();
            args.extend(["--filter", &filter]);
            self.podman_blocking(&args)
                .map(|o| o.split_whitespace().map(String::from).collect())
                .unwrap_or_default()
        };
        let containers = ids(&["ps", "-a", "-q", "--no-trunc"]);
        if !containers.is_empty() {
            let mut args = vec!["rm", "-f", "-t", "0"];
            args.extend(containers.iter().map(String::as_str));
            let _ = self.podman_blocking(&args);
        }
        let volumes = ids(&["volume", "ls", "-q"]);
        if !volumes.is_empty() {
            let mut args = vec!["volume", "rm", "-f"];
            args.extend(volumes.iter().map(String::as_str));
            let _ = self.podman_blocking(&args);
        }
        let networks = ids(&["network", "ls", "-q"]);
        for n in &networks {
            // Not forced: a network in use by someone else's container is left alone.
            let _ = self.podman_blocking(&["network", "rm", n]);
        }
        let mut left = Vec::new();
        for (kind, args) in [
            ("container", &["ps", "-a", "-q"][..]),
            ("volume", &["volume", "ls", "-q"][..]),
            ("network", &["network", "ls", "-q"][..]),
        ] {
            left.extend(ids(args).into_iter().map(|id| format!("{kind} {id}")));
        }
        left
    }
}

/// Removes, when dropped, every container, volume and network of the given scopes and every
/// object labelled with the run label; prints the agents' logs first if the test is panicking.
/// Declare it before the agents so that they are killed (dropped) before it runs.
pub struct Cleanup {
    pub engine: Engine,
    pub scopes: Vec<String>,
    pub run: String,
    pub logs: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", all_logs(&self.logs));
        }
        let mut labels: Vec<(&str, &str)> =
            self.scopes.iter().map(|s| (SCOPE, s.as_str())).collect();
        labels.push((RUN_LABEL, self.run.as_str()));
        // An agent killed a moment ago may still have had a request in flight: look again.
        for attempt in 0..5 {
            let left: Vec<String> = labels
                .iter()
                .flat_map(|(k, v)| self.engine.remove_labelled(k, v))
                .collect();
            if left.is_empty() {
                return;
            }
            if attempt == 4 {
                eprintln!("cleanup: could not remove {left:?}");
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// Every log file of the directory, for a failure message.
pub fn all_logs(dir: &Path) -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    let mut out = String::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        out.push_str(&format!(
            "\n===== {} =====\n{text}",
            f.file_name().unwrap_or_default().to_string_lossy()
        ));
    }
    out
}

/// A real `canopy agent` child process (killed when dropped), restartable on the same data
/// directory; each start logs to a file of its own in the logs directory.
pub struct AgentProcess {
    pub name: String,
    /// The `--scope` given; empty: none (the agent owns its edge's objects, see [`Self::edge_id`]).
    pub scope: String,
    pub data_dir: PathBuf,
    /// Where the process runs; when set, `--data-dir` is given relative to it.
    cwd: Option<PathBuf>,
    server: String,
    engine_url: String,
    labels: Vec<String>,
    /// More `canopy agent` arguments (e.g. VM options).
    pub extra_args: Vec<String>,
    logs: PathBuf,
    starts: u32,
    log: Option<PathBuf>,
    child: Option<tokio::process::Child>,
}

impl AgentProcess {
    /// An agent (not started) for edge `name`, with its data directory under `root`.
    pub fn new(
        name: &str,
        server: &str,
        engine_url: &str,
        scope: &str,
        labels: &[(&str, &str)],
        root: &Path,
        logs: &Path,
    ) -> AgentProcess {
        AgentProcess {
            name: name.to_string(),
            scope: scope.to_string(),
            data_dir: root.join(format!("agent-{name}")),
            cwd: None,
            server: server.to_string(),
            engine_url: engine_url.to_string(),
            labels: labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            extra_args: Vec::new(),
            logs: logs.to_path_buf(),
            starts: 0,
            log: None,
            child: None,
        }
    }

    /// Runs the agent in `dir` (which holds its data directory), naming its data directory
    /// relative to it, as a user typing `--data-dir agent` does.
    pub fn in_directory(&mut self, dir: &Path) {
        assert!(
            self.data_dir.starts_with(dir),
            "the data directory is under {dir:?}"
        );
        self.cwd = Some(dir.to_path_buf());
    }

    /// The edge id the agent enrolled with (its `edge.json`), which owns its engine objects.
    pub fn edge_id(&self) -> String {
        let path = self.data_dir.join("edge.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let v: Value = serde_json::from_str(&text).expect("edge.json is JSON");
        v["edgeId"].as_str().expect("edgeId").to_string()
    }

    /// Starts `canopy agent`; with a token the first time (enrollment), without one after.
    pub fn start(&mut self, token: Option<&str>) {
        assert!(self.child.is_none(), "agent {} already running", self.name);
        self.starts += 1;
        std::fs::create_dir_all(&self.logs).expect("logs dir");
        let log = self
            .logs
            .join(format!("agent-{}-{}.log", self.name, self.starts));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_canopy"));
        let data_dir = match &self.cwd {
            Some(cwd) => {
                cmd.current_dir(cwd);
                self.data_dir
                    .strip_prefix(cwd)
                    .expect("under cwd")
                    .to_path_buf()
            }
            None => self.data_dir.clone(),
        };
        cmd.args(["--server", &self.server, "agent", "--data-dir"])
            .arg(&data_dir)
            .args(["--name", &self.name, "--docker-host", &self.engine_url]);
        if !self.scope.is_empty() {
            cmd.args(["--scope", &self.scope]);
        }
        for l in &self.labels {
            cmd.args(["--label", l]);
        }
        cmd.args(&self.extra_args);
        if let Some(t) = token {
            cmd.args(["--enroll-token", t]);
        }
        cmd.env_remove("CANOPY_ENROLL_TOKEN")
            .env_remove("DOCKER_HOST")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .kill_on_drop(true);
        self.child = Some(cmd.spawn().expect("canopy agent starts"));
        self.log = Some(log);
    }

    /// SIGKILL, and waits for the process to be gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Waits (bounded, see [`eventually`]) until the agent has logged every one of `lines`,
    /// for `what`.
    pub async fn wait_for_log(&self, what: &str, lines: &[&str]) {
        eventually(what, async || {
            let log = self.log();
            if lines.iter().all(|l| log.contains(l)) {
                Ok(())
            } else {
                Err(log)
            }
        })
        .await;
    }

    /// What the current (or last) process logged.
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|l| std::fs::read_to_string(l).ok())
            .unwrap_or_default()
    }

    /// Waits (bounded) for the process to exit by itself: its exit code and log.
    pub async fn exit(&mut self, within: Duration) -> (Option<i32>, String) {
        let child = self.child.as_mut().expect("agent running");
        match tokio::time::timeout(within, child.wait()).await {
            Ok(status) => {
                let status = status.expect("wait for the agent");
                self.child = None;
                (status.code(), self.log())
            }
            Err(_) => panic!(
                "agent {} did not exit within {within:?}; its log:\n{}",
                self.name,
                self.log()
            ),
        }
    }
}
