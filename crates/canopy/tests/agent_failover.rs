//! A real `canopy agent` process given several control-plane addresses (issue 13, failover):
//! the first address is dead, so the agent moves to the live one and sticks to it; then that
//! `canopy server` process is killed with SIGKILL and started again on the same storage, and the
//! agent (the same process, never restarted) reconnects with its jittered backoff and resumes
//! from the generation it holds: nothing is delivered to it again.
//!
//! Needs the Podman service of `scripts/podman.sh` (`CANOPY_TEST_DOCKER_HOST`) only because the
//! agent connects to an engine at start; nothing is deployed, so nothing is created on it.

#[path = "common/edge_support.rs"]
#[allow(dead_code, unused_imports)] // shared with edge_podman.rs, which uses the rest
mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};
use support::{AgentProcess, engine_host, eventually, unique};

/// A `canopy server` child process on a fixed data directory and port, so it can be killed and
/// started again "in the same place".
struct ServerProcess {
    child: Option<tokio::process::Child>,
    port: u16,
    data_dir: PathBuf,
    starts: u32,
}

impl ServerProcess {
    fn new(data_dir: &Path) -> ServerProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        ServerProcess {
            child: None,
            port,
            data_dir: data_dir.to_path_buf(),
            starts: 0,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn start(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.data_dir.join(format!("server-{}.log", self.starts)))
            .unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_canopy"))
            .args(["server", "--insecure-http", "--listen"])
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(self.data_dir.join("data"))
            .env_remove("CANOPY_DATABASE_URL")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("canopy server starts");
        self.child = Some(child);
        let http = reqwest::Client::new();
        let url = format!("{}/healthz", self.url());
        eventually("the server answering /healthz", async || {
            match http.get(&url).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(r.status().to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
    }

    /// SIGKILL, and waits for the process to be gone.
    async fn kill(&mut self) {
        let mut child = self.child.take().expect("server running");
        child.start_kill().expect("SIGKILL");
        child.wait().await.expect("the server is gone");
    }

    fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("data/admin.token"))
            .expect("admin.token")
            .trim()
            .to_string()
    }

    async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{path}", self.url()))
            .bearer_auth(self.admin_token());
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.map_err(|e| e.to_string())?;
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!("{path}: {status} {body}"))
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body).await.unwrap()
    }
}

fn count(log: &str, what: &str) -> usize {
    log.matches(what).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_skips_a_dead_address_and_survives_its_server_being_killed() {
    let Some(engine) = engine_host("agent_failover") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::new(root.path());
    server.start().await;
    let token = server
        .call(
            reqwest::Method::POST,
            "/canopy/v1/projects/default/enrollment-tokens",
            Some(json!({"description": "agent_failover"})),
        )
        .await["secret"]
        .as_str()
        .expect("token secret")
        .to_string();

    // A dead address first (nothing listens there), then the live server.
    let dead = format!(
        "http://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port()
    );
    let name = format!("failover-{}", unique());
    let mut agent = AgentProcess::new(
        &name,
        &format!("{dead},{}", server.url()),
        &engine,
        &format!("failover-{}", unique()),
        &[("site", "failover")],
        root.path(),
        &root.path().join("logs"),
    );
    agent.start(Some(&token));
    let edge_path = format!("/canopy/v1/projects/default/edges/{name}");
    let connected = async |server: &ServerProcess| {
        eventually("the edge CONNECTED and RUNNING", async || {
            let edge = server
                .try_call(reqwest::Method::GET, &edge_path, None)
                .await?["edge"]
                .clone();
            if edge["connection"] == "CONNECTED" && edge["state"] == "RUNNING" {
                Ok(edge)
            } else {
                Err(edge.to_string())
            }
        })
        .await
    };
    let edge = connected(&server).await;
    let log = agent.log();
    assert!(
        log.contains("cannot reach this control-plane address; using the next one"),
        "{log}"
    );
    let received = count(&log, "received a new desired state");
    assert!(received >= 1, "{log}");

    // SIGKILL the server the agent uses; the agent notices and retries with backoff.
    server.kill().await;
    agent
        .wait_for_log("the agent noticing the loss", &["lost the control plane"])
        .await;
    server.start().await;
    // (The restarted server may show the edge CONNECTED from its stored "last seen" before the
    // agent is back: wait for the agent first.)
    agent
        .wait_for_log(
            "the agent saying it reconnected",
            &["reconnected to the control plane after"],
        )
        .await;
    let again = connected(&server).await;
    // The same process all along, resumed from the generation it held: the restarted server had
    // nothing newer, so nothing was delivered (or applied) again.
    let log = agent.log();
    assert_eq!(
        count(&log, "received a new desired state"),
        received,
        "{log}"
    );
    assert_eq!(again["generation"], edge["generation"], "{again}");
    assert_eq!(count(&log, "enrolled with the control plane"), 1, "{log}");
    agent.kill().await;
}
