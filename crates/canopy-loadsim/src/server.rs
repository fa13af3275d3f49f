//! The control plane under test, started as a child process (`canopy server`) on a free
//! loopback port over a temporary data directory, so that its CPU, memory and sockets can be
//! measured apart from the simulator's. It inherits the simulator's open-files limit.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::error::SimError;

/// How long the server may take to answer `/healthz` after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping server may take to drain before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `canopy server` child; killed when dropped.
pub struct ServerChild {
    child: tokio::process::Child,
    /// `http://127.0.0.1:PORT`, or `https://` when started with TLS.
    pub url: String,
    /// With TLS: the server's self-signed certificate, to trust it with.
    pub ca_file: Option<PathBuf>,
    /// The server's bootstrap administrator token (from its data directory).
    pub token: String,
    pub pid: u32,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// The `canopy` binary next to this one (both are built into the same `target/<profile>`).
pub fn default_canopy_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("canopy")))
        .unwrap_or_else(|| PathBuf::from("canopy"))
}

impl ServerChild {
    /// Starts `bin server --listen 127.0.0.1:PORT --data-dir TEMP --rate-limit 0` and waits until
    /// it answers: over plain HTTP, or with `tls` over HTTPS with the self-signed certificate
    /// the server makes in its data directory (as `canopy up` does).
    pub async fn start(bin: &Path, tls: bool) -> Result<ServerChild, SimError> {
        let io = |what: String| move |source| SimError::Io { what, source };
        let dir = tempfile::Builder::new()
            .prefix("canopy-loadsim-")
            .tempdir()
            .map_err(io("creating a temporary data directory".into()))?;
        // A free port: bind port 0, note it, release it for the server.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(io("finding a free loopback port".into()))?
            .port();
        let log = dir.path().join("server.log");
        let out = std::fs::File::create(&log).map_err(io(format!("creating {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io(format!("opening {}", log.display())))?;
        let mut cmd = tokio::process::Command::new(bin);
        cmd.arg("server");
        if !tls {
            cmd.arg("--insecure-http");
        }
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            // The operator calls all use the one administrator token: the per-token rate
            // limit would measure itself in the resource-list phase. Agents are not limited.
            .arg("--rate-limit")
            .arg("0")
            .env_remove("CANOPY_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let child = cmd
            .spawn()
            .map_err(io(format!("starting {} server", bin.display())))?;
        let pid = child
            .id()
            .ok_or_else(|| SimError::Server("the server exited at once".into()))?;
        let data = dir.path().join("data");
        let mut server = ServerChild {
            child,
            url: format!("{}://127.0.0.1:{port}", if tls { "https" } else { "http" }),
            ca_file: tls.then(|| data.join("tls").join("cert.pem")),
            token: String::new(),
            pid,
            log,
            _dir: dir,
        };
        server.wait_healthy().await?;
        let token_file = data.join("admin.token");
        server.token = std::fs::read_to_string(&token_file)
            .map_err(io(format!("reading {}", token_file.display())))?
            .trim()
            .to_string();
        Ok(server)
    }

    async fn wait_healthy(&mut self) -> Result<(), SimError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut http = None;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(SimError::Server(format!(
                    "exited with {status} before answering; its log:\n{}",
                    self.log_tail()
                )));
            }
            if http.is_none() {
                http = self.health_client()?;
            }
            let ok = match &http {
                Some(http) => http
                    .get(format!("{}/healthz", self.url))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success()),
                None => false,
            };
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(SimError::Server(format!(
                    "no answer on {}/healthz within {} s; its log:\n{}",
                    self.url,
                    START_TIMEOUT.as_secs(),
                    self.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A client for `/healthz`; `None` while a TLS server has not written its certificate.
    fn health_client(&self) -> Result<Option<reqwest::Client>, SimError> {
        let trust = match &self.ca_file {
            Some(ca) if !ca.is_file() => return Ok(None),
            Some(ca) => canopy_tls::ClientTrust::CaFile(ca.clone()),
            None => canopy_tls::ClientTrust::System,
        };
        let builder = reqwest::Client::builder().timeout(Duration::from_secs(2));
        // A certificate being written reads as not there yet (tried again until the deadline).
        let Ok(builder) = canopy_tls::configure(builder, &trust) else {
            return Ok(None);
        };
        builder
            .build()
            .map(Some)
            .map_err(|source| SimError::Network {
                what: "building an HTTP client".into(),
                source,
            })
    }

    /// The last lines of the server's log (for error messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Lines of the server's log containing `WARN` or `ERROR` (at most `max`), to report.
    pub fn log_problems(&self, max: usize) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .take(max)
            .map(str::to_string)
            .collect()
    }

    /// Stops the server as an operator would (SIGTERM, then a kill after [`STOP_TIMEOUT`]).
    pub async fn stop(mut self) {
        // SIGTERM to this child only, by its pid (no unsafe code: the `kill` utility).
        let _ = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}
