//! `canopy agent --metrics-listen`: a real agent process on the Podman service of
//! `CANOPY_TEST_DOCKER_HOST` (see `edge_podman.rs` for the set-up and isolation rules) serves
//! its Prometheus metrics, and they follow what the agent does: reports accepted, convergence
//! passes, the apps and workloads of a deployment by state. (Engine errors by kind are tested
//! in `canopy-agent`'s `metrics` unit tests: provoking each kind on a shared engine is not.)

#[path = "common/edge_support.rs"]
#[allow(dead_code, unused_imports)] // shared with edge_podman.rs, which uses the rest
mod support;

use std::time::Duration;

use canopy_server::hub::HubConfig;
use canopy_testkit::{TestControlPlane, example};
use reqwest::StatusCode;
use serde_json::json;
use support::{AgentProcess, Cleanup, Engine, IMAGE, engine_host, eventually, free_ports, unique};

/// The value of the sample written exactly `series` (name and labels as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn scrape(port: u16) -> Result<String, String> {
    let resp = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .map_err(|e| e.to_string())?;
    if resp.status() != StatusCode::OK {
        return Err(format!("{}", resp.status()));
    }
    resp.text().await.map_err(|e| e.to_string())
}

/// Scrapes until every `(series, at least)` holds.
async fn metrics_reach(port: u16, want: &[(&str, f64)]) -> String {
    eventually(&format!("agent metrics {want:?}"), async || {
        let text = scrape(port).await?;
        for (series, min) in want {
            match sample(&text, series) {
                Some(v) if v >= *min => {}
                got => return Err(format!("{series} = {got:?}:\n{text}")),
            }
        }
        Ok(text)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_metrics_follow_a_deployment() {
    let Some(host) = engine_host("agent_metrics_follow_a_deployment") else {
        return;
    };
    let run = unique();
    let project = format!("metrics-{run}");
    let scope = format!("metrics-{run}");
    let engine = Engine::new(&host);
    let tmp = tempfile::tempdir().expect("temp dir");
    let logs = tmp.path().join("logs");
    let _cleanup = Cleanup {
        engine,
        scopes: vec![scope.clone()],
        run: run.clone(),
        logs: logs.clone(),
    };
    let cp = TestControlPlane::start_fleet(HubConfig {
        heartbeat: Duration::from_secs(1),
        edge_timeout: Duration::from_secs(5),
        no_target_grace: Duration::from_secs(3),
    })
    .await;
    cp.create_project(&project).await;
    let (s, b) = cp.upload_dir(&project, &example("web-demo")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, t) = cp
        .post(
            &cp.at(&format!("/canopy/v1/projects/{project}/enrollment-tokens")),
            &json!({"description": "agent metrics"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let token = t["secret"].as_str().unwrap().to_string();

    let [metrics_port] = free_ports();
    let mut agent = AgentProcess::new(
        "metrics-edge",
        &cp.url,
        &host,
        &scope,
        &[("metrics", "on")],
        tmp.path(),
        &logs,
    );
    agent.extra_args = vec![
        "--metrics-listen".into(),
        format!("127.0.0.1:{metrics_port}"),
    ];
    agent.start(Some(&token));

    // Before any deployment: reports go through, nothing runs.
    let text = metrics_reach(
        metrics_port,
        &[
            ("canopy_agent_reports_sent_total", 1.0),
            ("canopy_agent_last_report_timestamp_seconds", 1.0),
        ],
    )
    .await;
    assert!(text.contains("# TYPE canopy_agent_apps gauge"), "{text}");
    assert!(text.contains("process_resident_memory_bytes"), "{text}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last = sample(&text, "canopy_agent_last_report_timestamp_seconds").unwrap();
    assert!((now - last).abs() < 120.0, "last report {last}, now {now}");

    // A deployment of two apps: both RUNNING, their two containers running, passes counted.
    let [web_port, status_port] = free_ports();
    let (s, created) = cp
        .post(
            &cp.at(&format!("/v1/projects/{project}/appdeployment/deployments")),
            &json!({
                "appName": "web-demo", "appVersion": "1.0.0",
                "allAppTargetClusters": {"labels": {"metrics": "on"}},
                "overrideValues": [
                    {"appName": "web", "values": {"image": IMAGE, "port": web_port}},
                    {"appName": "status", "values": {"image": IMAGE, "port": status_port}},
                ],
            }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{created}");
    let text = metrics_reach(
        metrics_port,
        &[
            ("canopy_agent_apps{state=\"RUNNING\"}", 2.0),
            ("canopy_agent_workloads{state=\"running\"}", 2.0),
            (
                "canopy_agent_convergence_passes_total{kind=\"apply\",result=\"ok\"}",
                1.0,
            ),
        ],
    )
    .await;
    assert_eq!(
        sample(&text, "canopy_agent_apps{state=\"RUNNING\"}"),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "canopy_agent_apps{state=\"DOWN\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "canopy_agent_workloads{state=\"running\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "canopy_agent_engine_errors_total{kind=\"engine\"}"),
        Some(0.0),
        "{text}"
    );
    // No app, deployment or edge names in labels.
    for name in ["web-demo", "metrics-edge", &project] {
        assert!(
            !text.contains(name),
            "{name} in the agent's metrics:\n{text}"
        );
    }
    agent.kill().await;
}
