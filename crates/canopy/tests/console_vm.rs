//! The web console's workloads pages in a real browser against a real VM: the control plane in
//! process (with the console), a real `canopy agent` process running the example `edge-demo`
//! (a container on Podman and the tiny test VM under QEMU/TCG, as `edge_vm.rs`), and headless
//! Chromium (`CANOPY_TEST_CHROMIUM`/`_CHROMEDRIVER`). It opens the VM's console page and sees
//! noVNC connect through the console's WebSocket and the agent's tunnel, stops and starts the
//! VM from the page, and reads the VM's logs (following them) and its serial console.
//!
//! Skipped with a note without Podman, the test VM or Chromium, except under CI (`CI` set).
//! With `CANOPY_UPDATE_SCREENSHOTS=1` the console page's screenshot is written to
//! `docs/screenshots/vm-console.png`.

#[path = "common/edge_support.rs"]
#[allow(dead_code, unused_imports)]
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use canopy_server::hub::HubConfig;
use canopy_testkit::chromium::{browser, element, element_within, screenshot, sign_in_as};
use canopy_testkit::{TestControlPlane, example};
use fantoccini::{Client, Locator};
use reqwest::StatusCode;
use serde_json::json;
use support::{AgentProcess, Cleanup, Engine, IMAGE, engine_host, free_ports, unique};

const PASSWORD: &str = "correct horse battery staple";
/// What the test VM prints on its serial console once booted.
const MARKER: &str = "CANOPY-TEST-VM-BOOTED";
/// A TCG boot on a loaded 2-core machine: generous.
const BOOT: Duration = Duration::from_secs(240);

/// Kills the QEMU processes of an agent's data directory when dropped (the agent leaves VMs
/// running by design; a failing test must not leak them).
struct VmReaper(PathBuf);

impl Drop for VmReaper {
    fn drop(&mut self) {
        let Ok(dirs) = std::fs::read_dir(self.0.join("vms")) else {
            return;
        };
        for d in dirs.flatten() {
            if let Ok(pid) = std::fs::read_to_string(d.path().join("qemu.pid")) {
                let pid = pid.trim();
                if Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::process::Command::new("kill")
                        .args(["-9", pid])
                        .status();
                }
            }
        }
    }
}

fn test_vm() -> Option<[String; 4]> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    match (
        var("CANOPY_TEST_VM_KERNEL"),
        var("CANOPY_TEST_VM_KERNEL_SHA256"),
        var("CANOPY_TEST_VM_INITRD"),
        var("CANOPY_TEST_VM_INITRD_SHA256"),
    ) {
        (Some(k), Some(ks), Some(i), Some(is)) => Some([k, ks, i, is]),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!("CANOPY_TEST_VM_* are not set but CI is (see scripts/vm-image.sh)");
            }
            eprintln!("skipping console_vm: CANOPY_TEST_VM_* unset (see scripts/vm-image.sh)");
            None
        }
    }
}

/// Serves the VM's kernel and initrd over HTTP on loopback.
async fn image_server(kernel: &str, initrd: &str) -> (String, tokio::task::JoinHandle<()>) {
    let kernel = tokio::fs::read(kernel).await.expect("test VM kernel");
    let initrd = tokio::fs::read(initrd).await.expect("test VM initrd");
    let app = axum::Router::new()
        .route(
            "/vmlinuz",
            axum::routing::get(move || async move { kernel.clone() }),
        )
        .route(
            "/initrd.img",
            axum::routing::get(move || async move { initrd.clone() }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

/// Reloads `url` until the text of `css` contains `want` (or panics at `within`).
async fn page_shows(c: &Client, url: &str, css: &str, want: &str, within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        c.goto(url).await.unwrap();
        // The row may not be there yet (the edge has not reported the workload).
        let text = match c.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains(want) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{css} at {url} never showed {want:?}; last: {text}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Waits until the status line `css` on the current page reads exactly `want` (the pages'
/// scripts set it: "connected", "following", ...), without reloading.
async fn status_is(c: &Client, css: &str, want: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let text = element(c, css).await.text().await.unwrap_or_default();
        if text.trim() == want {
            return;
        }
        assert!(
            !text.starts_with("disconnected") && !text.starts_with("failed"),
            "{css} reads {text:?}, not {want:?}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "{css} never read {want:?}; last: {text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until the text of `css` on the current page contains `want`, without reloading.
async fn text_becomes(c: &Client, css: &str, want: &str, within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let text = element(c, css).await.text().await.unwrap_or_default();
        if text.contains(want) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{css} never showed {want:?}; last: {text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_console_stop_start_and_logs_in_chromium() {
    let Some(engine_url) = engine_host("console_vm") else {
        return;
    };
    let Some([kernel, kernel_sha, initrd, initrd_sha]) = test_vm() else {
        return;
    };
    let Some((_driver, c)) = browser().await else {
        return;
    };
    let run = unique();
    let project = "default";
    let logs = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let scope = format!("cv{run}");
    let _cleanup = Cleanup {
        engine: Engine::new(&engine_url),
        scopes: vec![scope.clone()],
        run: run.clone(),
        logs: logs.path().to_path_buf(),
    };
    let cp = TestControlPlane::start_fleet(HubConfig {
        heartbeat: Duration::from_secs(1),
        edge_timeout: Duration::from_secs(10),
        no_target_grace: Duration::from_secs(3),
    })
    .await;
    let (s, b) = cp
        .post(
            &cp.at("/canopy/v1/users"),
            &json!({"name": "alice", "password": PASSWORD, "roles": ["canopy-admin"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = cp.upload_dir(project, &example("edge-demo")).await;
    assert_eq!(s, StatusCode::OK, "upload edge-demo: {b}");
    let (images, _server) = image_server(&kernel, &initrd).await;
    let (s, t) = cp
        .post(
            &cp.at(&format!("/canopy/v1/projects/{project}/enrollment-tokens")),
            &json!({"description": "console_vm"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let edge = format!("edge-{run}");
    let mut agent = AgentProcess::new(
        &edge,
        &cp.url,
        &engine_url,
        &scope,
        &[("site", &run)],
        root.path(),
        logs.path(),
    );
    let _reaper = VmReaper(agent.data_dir.clone());
    agent.start(t["secret"].as_str());
    let [web_port, vm_port] = free_ports();
    let (s, d) = cp
        .post(
            &cp.at(&format!("/v1/projects/{project}/appdeployment/deployments")),
            &json!({"appName": "edge-demo", "appVersion": "1.0.0", "displayName": "demo",
                    "allAppTargetClusters": {"labels": {"site": run}},
                    "overrideValues": [
                        {"appName": "edge-web", "values": {"image": IMAGE, "port": web_port}},
                        {"appName": "vm", "values": {
                            "kernelUrl": format!("{images}/vmlinuz"), "kernelSha256": kernel_sha,
                            "initrdUrl": format!("{images}/initrd.img"), "initrdSha256": initrd_sha,
                            "port": vm_port}}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "deploy: {d}");
    let id = d["deploymentId"].as_str().unwrap().to_string();

    // Signed in, the deployment's workloads page shows the VM running (TCG boot: generous).
    sign_in_as(&c, &cp.at("/ui/login"), "alice", PASSWORD).await;
    element(&c, "table#deployments").await;
    let workloads = cp.at(&format!(
        "/ui/projects/{project}/deployments/{id}/workloads"
    ));
    page_shows(&c, &workloads, "td.vm-state", "RUNNING", BOOT).await;

    // The console page: noVNC connects through the console's WebSocket and the agent's tunnel.
    element(&c, "a.vm-console").await.click().await.unwrap();
    element(&c, "#vnc-screen").await;
    status_is(&c, "#vnc-status", "connected", BOOT).await;
    let canvas = element_within(&c, "#vnc-screen canvas", Duration::from_secs(30)).await;
    let width: u32 = canvas
        .attr("width")
        .await
        .unwrap()
        .unwrap_or_default()
        .parse()
        .unwrap_or(0);
    assert!(width > 0, "the VM's screen has a size");
    // Let the first frame arrive before the screenshot.
    tokio::time::sleep(Duration::from_secs(2)).await;
    screenshot(&c, "vm-console").await;

    // The VM's logs page shows its serial output (its boot marker) and follows it.
    c.goto(&workloads).await.unwrap();
    element(&c, "a.vm-logs").await.click().await.unwrap();
    text_becomes(&c, "#logs-output", MARKER, BOOT).await;
    element(&c, "#logs-follow").await.click().await.unwrap();
    status_is(&c, "#logs-status", "following", Duration::from_secs(60)).await;

    // The serial console connects (text in and out through its WebSocket).
    c.goto(&workloads).await.unwrap();
    element(&c, "a.vm-serial").await.click().await.unwrap();
    status_is(&c, "#serial-status", "connected", Duration::from_secs(120)).await;
    // A line typed in: the guest's console (its tty echoes what it receives) sends it back.
    let input = element(&c, "#serial-input").await;
    input.send_keys("canopy-serial-echo\n").await.unwrap();
    text_becomes(
        &c,
        "#serial-output",
        "canopy-serial-echo",
        Duration::from_secs(60),
    )
    .await;

    // Stop from the page (confirmation), see it stopped; start it again, see it running.
    c.goto(&workloads).await.unwrap();
    element(&c, "a.vm-stop").await.click().await.unwrap();
    element(&c, "#confirm-action").await.click().await.unwrap();
    let done = element(&c, "#done").await.text().await.unwrap();
    assert!(done.contains("stop VM tiny"), "{done}");
    page_shows(&c, &workloads, "td.vm-state", "STOPPED", BOOT).await;
    c.find(Locator::Css("button.vm-start"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let done = element(&c, "#done").await.text().await.unwrap();
    assert!(done.contains("start VM tiny"), "{done}");
    page_shows(&c, &workloads, "td.vm-state", "RUNNING", BOOT).await;
    screenshot(&c, "workloads").await;

    // At a phone's width the state and the actions stay on the page.
    c.set_window_size(390, 800).await.unwrap();
    c.goto(&workloads).await.unwrap();
    for css in ["td.vm-state", "a.vm-stop", "a.vm-console", "a.pod-delete"] {
        let shown = element(&c, css).await.is_displayed().await.unwrap();
        assert!(shown, "{css} is shown at a phone's width");
    }
    c.close().await.unwrap();
}
