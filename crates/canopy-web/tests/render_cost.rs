//! What the console's pages cost the server for a 10,000-edge fleet (docs/BENCHMARKS.md, "Web
//! console: page render time"). Ignored by default (it enrolls 10,000 edges through the app
//! layer first); run it with:
//!
//! ```text
//! cargo test -p canopy-web --test render_cost -- --ignored --nocapture
//! ```
//!
//! It measures, it does not assert a time: each page is fetched over loopback HTTP (a real
//! server, session cookie, every middleware) and the median and worst of 20 fetches are printed.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use canopy_proto::{AgentInfo, EnrollRequest, PROTOCOL_VERSION};
use canopy_server::app::{CreateEnrollmentToken, Principal};
use canopy_testkit::TestControlPlane;
use common::*;
use reqwest::StatusCode;

const EDGES: usize = 10_000;
const DEPLOYMENTS: usize = 10;
const FETCHES: usize = 20;

#[tokio::test]
#[ignore = "a measurement: enrolls 10,000 edges (see the module doc)"]
async fn pages_of_a_10000_edge_fleet() {
    let cp = TestControlPlane::start().await;
    let app = cp.app().clone();
    let ctx = app
        .context(Principal::system(), P, "render-cost".into())
        .await
        .unwrap();
    let token = app
        .create_enrollment_token(&ctx, CreateEnrollmentToken::default())
        .await
        .unwrap()
        .secret;
    let started = Instant::now();
    let mut first_edge = String::new();
    for i in 0..EDGES {
        let r = app
            .enroll(EnrollRequest {
                protocol_version: PROTOCOL_VERSION,
                token: token.clone(),
                name: format!("edge-{i:05}"),
                labels: BTreeMap::from([("fleet".to_string(), "all".to_string())]),
                agent: AgentInfo::default(),
            })
            .await
            .unwrap();
        if i == 0 {
            first_edge = r.edge_id;
        }
    }
    eprintln!("enrolled {EDGES} edges in {:?}", started.elapsed());
    upload_example(&cp).await;
    let mut ids = Vec::new();
    for i in 0..DEPLOYMENTS {
        ids.push(deployment_on(&cp, &format!("shop-{i}")).await);
    }
    user(&cp, "ops", &["default_ao-rw"]).await;
    let s = sign_in(&cp, "ops").await;

    let pages = [
        (
            "deployments list",
            "/ui/projects/default/deployments".to_string(),
        ),
        (
            "deployment (100 of 10,000 edges)",
            format!("/ui/projects/default/deployments/{}", ids[0]),
        ),
        (
            "deployment, show only problems (10,000 match)",
            format!("/ui/projects/default/deployments/{}?problems=1", ids[0]),
        ),
        (
            "deployment, edge search",
            format!("/ui/projects/default/deployments/{}?edge=edge-0999", ids[0]),
        ),
        (
            "deployment, page 100",
            format!("/ui/projects/default/deployments/{}?page=99", ids[0]),
        ),
        (
            "edges list (page 1 of 200)",
            "/ui/projects/default/edges".to_string(),
        ),
        (
            "edges list, name filter",
            "/ui/projects/default/edges?name=edge-0999".to_string(),
        ),
        (
            "edges list (page 100)",
            "/ui/projects/default/edges?page=99".to_string(),
        ),
        ("edge", format!("/ui/projects/default/edges/{first_edge}")),
    ];
    // The deployments list once more with every fold fresh: each fetch waits out the hub's
    // reuse of folded statuses (`FOLD_REUSE`), as a list right after a change pays.
    let cold = ("deployments list (every fold fresh)", pages[0].1.clone());
    eprintln!("| page | median | worst | bytes |");
    eprintln!("|---|---|---|---|");
    let fresh = pages.len();
    for (i, (name, path)) in pages.into_iter().chain([cold]).enumerate() {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..FETCHES {
            if i == fresh {
                tokio::time::sleep(canopy_server::hub::FOLD_REUSE).await;
            }
            let t = Instant::now();
            let (status, _, body) = s.get(&cp, &path).await;
            times.push(t.elapsed());
            assert_eq!(status, StatusCode::OK, "{path}");
            bytes = body.len();
        }
        times.sort();
        eprintln!(
            "| {name} | {} | {} | {bytes} |",
            ms(times[FETCHES / 2]),
            ms(times[FETCHES - 1])
        );
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// A deployment of web-demo on every edge (`fleet=all`).
async fn deployment_on(cp: &TestControlPlane, display: &str) -> String {
    let (s, b) = cp
        .post(
            &cp.at(&format!("/v1/projects/{P}/appdeployment/deployments")),
            &serde_json::json!({
                "appName": "web-demo", "appVersion": "1.0.0", "displayName": display,
                "allAppTargetClusters": {"labels": {"fleet": "all"}}
            }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "create deployment {display}: {b}");
    b["deploymentId"].as_str().unwrap().to_string()
}
