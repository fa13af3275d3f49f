//! The simulator end to end, small and fast: 20 edges against the in-process test server
//! (`canopy-testkit`), over HTTP/2 and over HTTP/1.1. The big runs (1,000 to 10,000 edges
//! against a release `canopy server` child) are in `docs/BENCHMARKS.md`, not in CI.

use std::time::Duration;

use canopy_loadsim::config::{SimConfig, Transport, Workload};
use canopy_loadsim::run::{Target, run};
use canopy_server::hub::HubConfig;
use canopy_testkit::TestControlPlane;

fn small(transport: Transport) -> SimConfig {
    SimConfig {
        edges: 20,
        transport,
        edges_per_connection: 8,
        enroll_concurrency: 4,
        wait_seconds: 2,
        idle: Duration::from_secs(1),
        phase_timeout: Duration::from_secs(15),
        pause: Duration::from_millis(100),
        duration: Duration::from_secs(60),
        status_poll: Duration::from_millis(50),
        ..SimConfig::default()
    }
}

async fn run_against_test_server(transport: Transport) {
    let cp = TestControlPlane::start_fleet(HubConfig {
        heartbeat: Duration::from_secs(1),
        ..HubConfig::default()
    })
    .await;
    let cfg = small(transport);
    let report = run(
        &cfg,
        Target::Running {
            url: cp.url.clone(),
            // The test server runs in this process: measure it.
            pid: Some(std::process::id()),
            token: Some(cp.admin_token().to_string()),
        },
    )
    .await
    .expect("the simulation runs");

    assert_eq!(report.enrollment.edges, 20);
    assert_eq!(report.clients, 3, "20 edges, 8 per connection");
    assert!(report.idle.server_cpu_percent.is_some());
    assert!(
        report.idle.reports_per_second > 0.0,
        "1 s heartbeats are sent"
    );
    let names: Vec<&str> = report.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names.len(), 4, "{names:?}");
    for p in &report.phases[..2] {
        assert_eq!(p.edges_touched, 20, "{p:?}");
        assert_eq!(p.delivery.count, 20, "every edge got it: {p:?}");
        assert!(p.running_ms.is_some(), "{p:?}");
    }
    for p in &report.phases[2..] {
        assert_eq!(p.edges_touched, 1, "{p:?}");
        assert_eq!(p.delivery.count, 1, "{p:?}");
        assert_eq!(
            p.other_wakes, 0,
            "a change to one edge wakes no other: {p:?}"
        );
    }
    let lists = report
        .resource_lists
        .as_ref()
        .expect("the resource lists were measured");
    assert_eq!(
        (
            lists.workloads,
            lists.expected_workloads,
            lists.pages_per_walk
        ),
        (40, 40, 1),
        "two workloads per edge, one page of 500: {lists:?}"
    );
    assert_eq!((lists.walk.count, lists.pairs, lists.sample), (5, 40, 40));
    assert_eq!(lists.sequential_pair.count, 40, "{lists:?}");
    assert_eq!(lists.concurrent_workloads.count, 40, "{lists:?}");
    assert!(lists.fleet_concurrent_seconds > 0.0, "{lists:?}");
    assert_eq!(report.agent_errors, 0, "{:?}", report.agent_error_samples);
    let text = report.to_markdown();
    assert!(text.contains("create deployment"), "{text}");
    assert!(text.contains("deployment-wide list"), "{text}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["phases"][0]["edgesTouched"], 20);

    // A server the simulator did not start is left clean.
    let (_, edges) = cp.get(&cp.at("/canopy/v1/projects/default/edges")).await;
    assert_eq!(edges["totalElements"], 0, "{edges}");
    let (_, deps) = cp
        .get(&cp.at("/v1/projects/default/appdeployment/deployments"))
        .await;
    assert_eq!(deps["totalElements"], 0, "{deps}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_edges_over_http2() {
    run_against_test_server(Transport::Http2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_edges_over_http1() {
    run_against_test_server(Transport::Http1).await;
}

/// Edges connecting as real agents do: a server over HTTPS (its self-signed certificate), three
/// TLS agents with their own connection each and the agent's client settings, three more
/// sharing one HTTP/2 connection over TLS. The idle window reads the TLS agents' socket
/// counters: one connection each, none opened or closed while idle, and bytes both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_agents_keep_one_connection_each_and_their_bytes_are_counted() {
    let cp = TestControlPlane::start_configured(|c| {
        c.tls = Some(canopy_tls::ServerTls::SelfSigned {
            dir: c.data_dir.clone(),
        });
        c.fleet.heartbeat = Duration::from_secs(1);
    })
    .await;
    assert!(cp.url.starts_with("https://"), "{}", cp.url);
    let cfg = SimConfig {
        edges: 6,
        tls_agents: 3,
        idle: Duration::from_secs(3),
        ca_file: Some(cp.data_dir().join("tls").join("cert.pem")),
        ..small(Transport::Http2)
    };
    let report = run(
        &cfg,
        Target::Running {
            url: cp.url.clone(),
            pid: Some(std::process::id()),
            token: Some(cp.admin_token().to_string()),
        },
    )
    .await
    .expect("the simulation runs over TLS");
    assert_eq!(
        report.clients, 4,
        "3 TLS agents, then 3 edges on one connection"
    );
    let t = report
        .idle
        .tls_agents
        .as_ref()
        .expect("the TLS agents' traffic was measured");
    assert_eq!(
        (
            t.agents,
            t.connections_start,
            t.connections_end,
            t.opened,
            t.closed
        ),
        (3, 3, 3, 0, 0),
        "{t:?}"
    );
    // 2 s long-polls and 1 s reports over 3 s: requests went both ways.
    assert!(
        t.bytes_sent > 0 && t.bytes_received > 0 && t.segments > 0,
        "{t:?}"
    );
    assert!(t.wire_kib_per_edge_per_day > t.payload_kib_per_edge_per_day);
    for p in &report.phases[..2] {
        assert_eq!(p.delivery.count, 6, "every edge got it: {p:?}");
    }
    assert_eq!(report.agent_errors, 0, "{:?}", report.agent_error_samples);
    assert!(report.to_markdown().contains("KiB per edge per day"));

    // Without TLS the flag is refused, naming what is needed.
    let err = run(
        &cfg,
        Target::Running {
            url: "http://127.0.0.1:1".into(),
            pid: None,
            token: None,
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("https://"), "{err}");
}

#[tokio::test]
async fn refuses_non_loopback_and_oversized_runs() {
    let cfg = small(Transport::Http2);
    let err = run(
        &cfg,
        Target::Running {
            url: "http://192.168.1.10:7070".into(),
            pid: None,
            token: None,
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("loopback"), "{err}");
    let big = SimConfig {
        edges: 12_001,
        ..cfg
    };
    let err = run(
        &big,
        Target::Running {
            url: "http://127.0.0.1:1".into(),
            pid: None,
            token: None,
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("12000"), "{err}");
}

/// The Helm variant end to end, small: the simulator creates the HELM registry, uploads its
/// Helm package (the fixture chart `canopy-web`, pushed to the local chart registry of
/// `scripts/helm.sh`), and the in-process test server (with the real Helm CLI) renders it for
/// 20 simulated edges, then again for the upgrade (other profile values).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_edges_with_a_helm_package() {
    let Some(env) = canopy_testkit::helm::HelmTestEnv::from_env() else {
        return;
    };
    let registry = env.push_chart("canopy-web", None, false);
    let cp = TestControlPlane::start_fleet(HubConfig {
        heartbeat: Duration::from_secs(1),
        ..HubConfig::default()
    })
    .await;
    let cfg = SimConfig {
        workload: Workload::Helm {
            registry: registry.clone(),
            chart: "canopy-web".into(),
            chart_version: "0.1.0".into(),
        },
        // Rendering takes a few hundred ms per change on a busy debug build.
        phase_timeout: Duration::from_secs(60),
        ..small(Transport::Http2)
    };
    let report = run(
        &cfg,
        Target::Running {
            url: cp.url.clone(),
            pid: Some(std::process::id()),
            token: Some(cp.admin_token().to_string()),
        },
    )
    .await
    .expect("the simulation runs");
    assert!(
        report
            .package
            .starts_with("loadsim-helm (Helm chart canopy-web:0.1.0 from oci://"),
        "{}",
        report.package
    );
    for p in &report.phases[..2] {
        assert_eq!(p.delivery.count, 20, "every edge got it: {p:?}");
        assert!(p.running_ms.is_some(), "{p:?}");
    }
    assert_eq!(report.agent_errors, 0, "{:?}", report.agent_error_samples);

    // Delivery counts an edge only once its desired state holds the app's pods rendered at
    // the profile's replica count (1, then 2 after the upgrade): the chart was rendered.
}
