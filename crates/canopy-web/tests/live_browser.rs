//! The live deployment page in a real browser with a real edge (web-live): headless Chromium
//! shows a deployment's page while a real agent (`canopy_agent::run`, the agent's own code, in
//! this process) enrolls against the real control plane and starts the deployment's containers
//! on the Podman service named by `CANOPY_TEST_DOCKER_HOST`, from the local image
//! `localhost/busybox:canopy-test`. The page must come to show RUNNING **without a reload**: a
//! marker the test sets on the page's `window` must still be there afterwards.
//!
//! Skipped with a notice without Chromium or Podman, except under CI (`CI` set), where that
//! fails. Isolation: a project of its own (its own network name), free host ports, one driver
//! scope; a guard removes whatever carries that scope, even when the test fails. With
//! `CANOPY_UPDATE_SCREENSHOTS=1` the screenshot is written to `docs/screenshots/`.
//! (The Chromium start-up is `tests/browser.rs`'s, repeated so the two files merge apart.)

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use canopy_testkit::chromium::{PAGE, browser, element, screenshot};
use canopy_testkit::{TestControlPlane, example};
use common::*;
use fantoccini::Locator;
use reqwest::StatusCode;
use serde_json::json;

/// How long the real edge may take from enrollment to RUNNING.
const TO_RUNNING: Duration = Duration::from_secs(240);
const IMAGE: &str = "localhost/busybox:canopy-test";

fn skip_or_fail(what: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{what} not available but CI is set");
    }
    eprintln!("skipped: {what} not available");
}

/// Removes every container, volume and network of the agent's scope (blocking: runs in Drop).
struct Guard {
    engine: String,
    scope: String,
}

impl Guard {
    fn podman(&self, args: &[&str]) -> Vec<String> {
        Command::new("podman")
            .arg("--url")
            .arg(&self.engine)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn filter(&self) -> String {
        format!(
            "label={}={}",
            canopy_agent::driver::names::SCOPE,
            self.scope
        )
    }

    /// The scope's containers now.
    fn containers(&self) -> Vec<String> {
        self.podman(&["ps", "-a", "-q", "--filter", &self.filter()])
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let f = self.filter();
        let containers = self.containers();
        if !containers.is_empty() {
            let mut args = vec!["rm", "-f", "-t", "0"];
            args.extend(containers.iter().map(String::as_str));
            self.podman(&args);
        }
        for v in self.podman(&["volume", "ls", "-q", "--filter", &f]) {
            self.podman(&["volume", "rm", "-f", &v]);
        }
        for n in self.podman(&["network", "ls", "-q", "--filter", &f]) {
            self.podman(&["network", "rm", &n]);
        }
    }
}

/// Two host ports free now.
fn free_ports() -> [u16; 2] {
    let a = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let b = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    [
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    ]
}

#[tokio::test]
async fn a_deployment_page_shows_running_live_as_a_real_edge_starts_it() {
    let engine = match std::env::var("CANOPY_TEST_DOCKER_HOST") {
        Ok(h) if !h.trim().is_empty() => h,
        _ => return skip_or_fail("Podman (CANOPY_TEST_DOCKER_HOST, scripts/podman.sh)"),
    };
    let Some((_driver, c)) = browser().await else {
        return;
    };
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let project = format!("live{run}");
    let guard = Guard {
        engine: engine.clone(),
        scope: format!("weblive-{run}"),
    };
    let cp = TestControlPlane::start().await;
    cp.create_project(&project).await;
    let (s, b) = cp.upload_dir(&project, &example("web-demo")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let [web_port, status_port] = free_ports();
    let (s, b) = cp
        .post(
            &cp.at(&format!("/v1/projects/{project}/appdeployment/deployments")),
            &json!({
                "appName": "web-demo", "appVersion": "1.0.0", "displayName": "live web",
                "allAppTargetClusters": {"labels": {"site": run}},
                "overrideValues": [
                    {"appName": "web", "values": {"image": IMAGE, "port": web_port}},
                    {"appName": "status", "values": {"image": IMAGE, "port": status_port}},
                ]
            }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let id = b["deploymentId"].as_str().unwrap().to_string();
    user(&cp, "watcher", &[&format!("{project}_ao-r")]).await;

    // The page is open before the edge exists.
    c.goto(&cp.at("/ui/login")).await.unwrap();
    element(&c, "#username")
        .await
        .send_keys("watcher")
        .await
        .unwrap();
    element(&c, "#password")
        .await
        .send_keys(PASSWORD)
        .await
        .unwrap();
    element(&c, "#sign-in").await.click().await.unwrap();
    element(&c, "#summary").await;
    c.goto(&cp.at(&format!("/ui/projects/{project}/deployments/{id}")))
        .await
        .unwrap();
    let state = element(&c, "#deployment-state").await.text().await.unwrap();
    assert_ne!(state, "RUNNING");
    // The script connected its stream (it says so), and the page gets a marker a reload
    // would lose.
    c.wait()
        .at_most(PAGE)
        .for_element(Locator::XPath(
            "//p[@id='live-status' and starts-with(text(), 'Live')]",
        ))
        .await
        .expect("the live script connects its stream");
    c.execute(
        "window.canopyLiveMarker = 'not reloaded'; return true;",
        vec![],
    )
    .await
    .unwrap();

    // A real edge enrolls and starts the deployment's containers.
    let (s, b) = cp
        .post(
            &cp.at(&format!("/canopy/v1/projects/{project}/enrollment-tokens")),
            &json!({"description": "live browser test"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let data = tempfile::tempdir().unwrap();
    let mut config = canopy_agent::AgentConfig::new(cp.url.clone(), data.path());
    config.enroll_token = Some(b["secret"].as_str().unwrap().to_string());
    config.name = Some(format!("edge-{run}"));
    config.labels = BTreeMap::from([("site".to_string(), run.clone())]);
    config.docker_host = Some(engine.clone());
    config.scope = Some(guard.scope.clone());
    config.poll_wait = Duration::from_secs(5);
    config.converge_interval = Duration::from_millis(500);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(canopy_agent::run(config, async {
        let _ = stopped.await;
    }));

    // The page shows RUNNING without a reload.
    let running = c
        .wait()
        .at_most(TO_RUNNING)
        .for_element(Locator::XPath(
            "//dd[@id='deployment-state']/span[text()='RUNNING']",
        ))
        .await;
    if running.is_err() {
        let (_, b) = cp
            .get(&cp.at(&format!(
                "/v1/projects/{project}/appdeployment/deployments/{id}"
            )))
            .await;
        panic!(
            "the page never showed RUNNING; the API says {}; the page:\n{}",
            b["deployment"]["status"],
            c.source().await.unwrap_or_default()
        );
    }
    let marker = c
        .execute("return window.canopyLiveMarker || null;", vec![])
        .await
        .unwrap();
    assert_eq!(marker, json!("not reloaded"), "the page was reloaded");
    let edges = element(&c, "table#edges").await.text().await.unwrap();
    assert!(
        edges.contains(&format!("edge-{run}")) && edges.contains("RUNNING"),
        "{edges}"
    );
    screenshot(&c, "deployment-live").await;

    // Deleted: the agent removes its containers; then it stops.
    let (s, b) = cp
        .delete(&cp.at(&format!(
            "/v1/projects/{project}/appdeployment/deployments/{id}"
        )))
        .await;
    assert!(s.is_success(), "{s} {b}");
    let deadline = tokio::time::Instant::now() + TO_RUNNING;
    while !guard.containers().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent never removed its containers"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = stop.send(());
    let _ = tokio::time::timeout(PAGE, agent).await;
    c.close().await.unwrap();
}
