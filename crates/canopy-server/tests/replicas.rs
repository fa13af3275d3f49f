//! Replicas on one PostgreSQL database (in process, over real HTTP): what one replica commits
//! reaches the others through the change feed (`app::feed`, `canopy_store::feed`) and nothing
//! else. Each test runs two or three real servers on a fresh database; without
//! `CANOPY_TEST_DATABASE_URL` they are skipped (in CI that is an error, see
//! `canopy_store::testing`).
//!
//! Bounds asserted here are generous (a busy 2-core CI machine); the documented ones are in
//! docs/OPERATIONS.md ("Replicas: the change feed").

use std::time::{Duration, Instant};

use canopy_proto::AppState;
use canopy_server::app::FeedMode;
use canopy_testkit::sim_agent::SimAgent;
use canopy_testkit::{TestControlPlane, example};
use reqwest::StatusCode;
use serde_json::{Value, json};

const P: &str = "default";
/// How long a change may take to reach another replica here (documented: well under 1 s
/// with notifications; the poll, 2 s, without).
const DELIVERY: Duration = Duration::from_secs(10);

/// Waits until `check` holds, at most `limit`; returns how long it took.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn pair() -> Option<(TestControlPlane, TestControlPlane)> {
    let a = TestControlPlane::start_postgres_configured(|c| {
        c.metrics_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await?;
    let b = a.start_replica(|_| {}).await;
    Some((a, b))
}

async fn enrollment_token(cp: &TestControlPlane, project: &str) -> String {
    let (s, b) = cp
        .post(
            &cp.at(&format!("/canopy/v1/projects/{project}/enrollment-tokens")),
            &json!({"description": "test"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b["secret"].as_str().unwrap().to_string()
}

async fn upload_example(cp: &TestControlPlane) {
    let (s, b) = cp.upload_dir(P, &example("web-demo")).await;
    assert_eq!(s, StatusCode::OK, "upload: {b}");
}

fn deployments_url(cp: &TestControlPlane, rest: &str) -> String {
    cp.at(&format!("/v1/projects/{P}/appdeployment/deployments{rest}"))
}

fn by_labels(name: &str, labels: Value) -> Value {
    json!({"appName": "web-demo", "appVersion": "1.0.0", "displayName": name,
           "allAppTargetClusters": {"labels": labels}})
}

async fn deployment_state(cp: &TestControlPlane, id: &str) -> Option<String> {
    let (s, b) = cp.get(&deployments_url(cp, &format!("/{id}"))).await;
    (s == StatusCode::OK).then(|| {
        b["deployment"]["status"]["state"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    })
}

async fn set_labels(cp: &TestControlPlane, edge: &str, set: Value, remove: Value) {
    let r = cp
        .http()
        .patch(cp.at(&format!("/canopy/v1/projects/{P}/edges/{edge}/labels")))
        .json(&json!({"set": set, "remove": remove}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
}

/// Whether `cp` refuses an edge credential (401 to a status report).
async fn credential_status(cp: &TestControlPlane, cred: &str) -> bool {
    let r = reqwest::Client::new()
        .post(cp.at("/canopy/v1/agent/status"))
        .header(canopy_proto::PROTOCOL_HEADER, "1")
        .bearer_auth(cred)
        .json(&json!({"protocolVersion": 1, "seq": 1, "generation": 0, "apps": []}))
        .send()
        .await
        .unwrap();
    r.status() == StatusCode::UNAUTHORIZED
}

/// A long-poll on B wakes for a deployment created on A; a label change and an edge removal on
/// A retarget on B; a report taken by B shows in A's deployment status.
#[tokio::test]
async fn fleet_changes_on_one_replica_reach_the_other() {
    let Some((a, b)) = pair().await else { return };
    upload_example(&a).await;
    let t = enrollment_token(&a, P).await;
    // Enrolled on B: A learns the edge through the feed.
    let mut paris = SimAgent::enroll(&b, &t, "paris-1", &[("site", "paris")]).await;
    let mut lyon = SimAgent::enroll(&b, &t, "lyon-1", &[("site", "lyon")]).await;
    within(DELIVERY, "A sees the edges enrolled on B", || async {
        let (_, l) = a
            .get(&a.at(&format!("/canopy/v1/projects/{P}/edges")))
            .await;
        l["totalElements"] == 2
    })
    .await;
    assert!(
        paris.poll(1).await.is_some(),
        "the first poll answers at once"
    );
    assert!(lyon.poll(1).await.is_some());

    // The long-poll waits on B while A creates the deployment.
    let waiting = tokio::spawn(async move {
        let got = paris.poll(30).await;
        (paris, got)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, body) = a
        .post(
            &deployments_url(&a, ""),
            &by_labels("shop", json!({"site": "paris"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let id = body["deploymentId"].as_str().unwrap().to_string();
    let (mut paris, got) = tokio::time::timeout(DELIVERY, waiting)
        .await
        .expect("B's long-poll woke within the bound")
        .unwrap();
    let got = got.expect("the long-poll on B answered with the deployment made on A");
    assert_eq!(got.deployments.len(), 1);
    assert_eq!(got.deployments[0].deployment_id, id);
    // B serves the deployment too.
    assert!(deployment_state(&b, &id).await.is_some());

    // A pod deleted through A (a workload control) reaches the edge's long-poll on B.
    let app = got.deployments[0]
        .apps
        .iter()
        .find(|a| !a.containers.is_empty())
        .expect("web-demo has an app with containers")
        .clone();
    let pod = canopy_server::app::pod_name(&id, &app.name);
    let (s, e) = a
        .put(
            &a.at(&format!(
                "/v1/projects/{P}/resource/workloads/pods/clusters/paris-1/namespaces/{}/pods/{pod}/delete",
                app.namespace
            )),
            &json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let with_control = tokio::time::timeout(DELIVERY, paris.poll(30))
        .await
        .expect("paris's long-poll on B woke for the control")
        .expect("a new desired state");
    assert_eq!(
        with_control
            .controls
            .iter()
            .map(|c| (c.app.as_str(), c.restarts))
            .collect::<Vec<_>>(),
        vec![(app.name.as_str(), 1)],
        "the pod delete made on A"
    );

    // A report taken by B is seen in A's deployment status, within the documented bound
    // (about 1 s: B flushes every 400 ms, A reads on the notification).
    let (s, e) = paris.report(AppState::Running).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let took = within(DELIVERY, "A folds B's report", || async {
        deployment_state(&a, &id).await.as_deref() == Some("RUNNING")
    })
    .await;
    eprintln!("report on B seen RUNNING on A after {took:?}");
    assert!(took < Duration::from_secs(3), "status took {took:?}");
    // A measured the lag of what it applied from B.
    let metrics = reqwest::get(a.metrics_url.clone().expect("A has a metrics listener"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |log: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("canopy_feed_lag_seconds_count{{log=\"{log}\"}}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(count("fleet") > 0.0 && count("live") > 0.0, "{metrics}");
    assert!(
        metrics.contains("canopy_feed_applied_revision{log=\"fleet\"}"),
        "{metrics}"
    );

    // Labels changed on A: lyon gains the deployment on B, paris loses it.
    set_labels(&a, "lyon-1", json!({"site": "paris"}), json!([])).await;
    let lyon_got = tokio::time::timeout(DELIVERY, lyon.poll(30))
        .await
        .expect("lyon's long-poll on B woke")
        .expect("a new desired state");
    assert_eq!(lyon_got.deployments.len(), 1, "lyon gained it");
    set_labels(&a, "paris-1", json!({}), json!(["site"])).await;
    let paris_got = tokio::time::timeout(DELIVERY, paris.poll(30))
        .await
        .expect("paris's long-poll on B woke")
        .expect("a new desired state");
    assert!(paris_got.deployments.is_empty(), "paris lost it");

    // An edge removed on A: its credential stops working on B.
    let (s, _) = a
        .delete(&a.at(&format!("/canopy/v1/projects/{P}/edges/paris-1")))
        .await;
    assert!(s.is_success(), "{s}");
    within(DELIVERY, "B refuses the removed edge", || {
        credential_status(&b, &paris.cred)
    })
    .await;
    // Both replicas agree on the revision.
    within(DELIVERY, "B applied A's last revision", || async {
        b.app().feed_applied() == a.app().feed_applied()
    })
    .await;
}

/// Project deletion on A reaches B; a token revoked on A is refused by B within the bound.
#[tokio::test]
async fn project_deletion_and_revocation_reach_the_other_replica() {
    let Some((a, b)) = pair().await else { return };
    a.create_project("shop").await;
    let t = enrollment_token(&a, "shop").await;
    let mut edge = SimAgent::enroll(&b, &t, "till-1", &[]).await;
    assert!(edge.poll(1).await.is_some());
    let user = a.user_token("alice", &["shop_cat-r"]).await;
    let whoami = |cp: &TestControlPlane, token: String| {
        let http = cp.anonymous_http();
        let url = cp.at("/canopy/v1/whoami");
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // B has the token in its cache now.
    assert_eq!(whoami(&b, user.clone()).await, StatusCode::OK);

    let (s, tokens) = a.get(&a.at("/canopy/v1/tokens?all=true")).await;
    assert_eq!(s, StatusCode::OK, "{tokens}");
    let id = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["user"] == "alice")
        .and_then(|t| t["id"].as_str())
        .expect("alice's token listed")
        .to_string();
    let (s, e) = a.delete(&a.at(&format!("/canopy/v1/tokens/{id}"))).await;
    assert!(s.is_success(), "{s} {e}");
    let took = within(DELIVERY, "B refuses the token revoked on A", || {
        let f = whoami(&b, user.clone());
        async move { f.await == StatusCode::UNAUTHORIZED }
    })
    .await;
    eprintln!("revocation on A effective on B after {took:?}");
    assert!(took < Duration::from_secs(3), "revocation took {took:?}");

    // The project deleted on A: gone on B, its edge refused there.
    let (s, e) = a.delete(&a.at("/v1/projects/shop")).await;
    assert!(s.is_success(), "{s} {e}");
    within(DELIVERY, "B forgets the project", || async {
        b.get(&b.at("/v1/projects/shop")).await.0 == StatusCode::NOT_FOUND
    })
    .await;
    within(DELIVERY, "B refuses the deleted project's edge", || {
        credential_status(&b, &edge.cred)
    })
    .await;
    assert!(
        b.app().hub().edge_ids().iter().all(|(e, _)| *e != edge.id),
        "B's hub forgot the edge"
    );
}

/// A replica started late catches up exactly; one whose notifications are lost catches up by
/// the poll; one that stalled past the oldest kept change reloads the fleet.
#[tokio::test]
async fn late_lossy_and_stalled_replicas_catch_up() {
    let Some((a, b)) = pair().await else { return };
    upload_example(&a).await;
    let t = enrollment_token(&a, P).await;
    let _e1 = SimAgent::enroll(&a, &t, "e-1", &[("site", "x")]).await;
    let (s, body) = a
        .post(
            &deployments_url(&a, ""),
            &by_labels("one", json!({"site": "x"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let first = body["deploymentId"].as_str().unwrap().to_string();

    // Late: C starts after the changes and has them all, at A's revision.
    let c = a.start_replica(|_| {}).await;
    assert_eq!(c.app().feed_applied(), a.app().feed_applied());
    assert!(deployment_state(&c, &first).await.is_some());

    // Lossy: B drops every notification; the poll brings A's next change.
    b.app().set_feed_mode(FeedMode::PollOnly).await;
    let (s, body) = a
        .post(
            &deployments_url(&a, ""),
            &by_labels("two", json!({"site": "x"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let second = body["deploymentId"].as_str().unwrap().to_string();
    let took = within(
        DELIVERY,
        "B (notifications lost) gets the change by polling",
        || {
            let b = &b;
            let second = second.clone();
            async move { deployment_state(b, &second).await.is_some() }
        },
    )
    .await;
    eprintln!("change reached the replica without notifications after {took:?}");
    within(DELIVERY, "C (listening) gets it too", || {
        let c = &c;
        let second = second.clone();
        async move { deployment_state(c, &second).await.is_some() }
    })
    .await;

    // Stalled past the oldest kept change: C reloads and converges.
    c.app().set_feed_mode(FeedMode::Paused).await;
    let (s, _) = a.delete(&deployments_url(&a, &format!("/{first}"))).await;
    assert!(s.is_success());
    set_labels(&a, "e-1", json!({"site": "y"}), json!([])).await;
    let pruned = a
        .app()
        .store()
        .prune_changes(time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .await
        .unwrap();
    assert!(pruned > 0, "rows pruned");
    assert!(deployment_state(&c, &first).await.is_some(), "C is behind");
    c.app().set_feed_mode(FeedMode::Follow).await;
    within(DELIVERY, "C reloads past the pruned changes", || async {
        c.app().feed_applied() == a.app().feed_applied()
    })
    .await;
    assert!(
        deployment_state(&c, &first).await.is_none(),
        "deleted on C too"
    );
    let (_, edge) = c
        .get(&c.at(&format!("/canopy/v1/projects/{P}/edges/e-1")))
        .await;
    assert_eq!(edge["edge"]["labels"]["site"], "y", "{edge}");
}

/// Conflicting writes on two replicas at once: one wins, the other gets the reference's
/// error, and every replica ends with the same, complete state.
#[tokio::test]
async fn concurrent_conflicting_writes_on_two_replicas() {
    let Some((a, b)) = pair().await else { return };
    let c = a.start_replica(|_| {}).await;
    upload_example(&a).await;
    for round in 0..4 {
        let name = format!("dup-{round}");
        let body = by_labels(&name, json!({"site": "x"}));
        let (url_a, url_b) = (deployments_url(&a, ""), deployments_url(&b, ""));
        let (ra, rb) = tokio::join!(a.post(&url_a, &body), b.post(&url_b, &body));
        let codes = [ra.0, rb.0];
        assert_eq!(
            codes.iter().filter(|s| **s == StatusCode::OK).count(),
            1,
            "exactly one of two creates of {name} wins: {ra:?} {rb:?}"
        );
        let loser = if ra.0 == StatusCode::OK { &rb } else { &ra };
        assert_eq!(loser.0, StatusCode::CONFLICT, "{loser:?}");
    }
    // Every replica lists the same four deployments.
    for cp in [&a, &b, &c] {
        within(
            DELIVERY,
            "every replica lists the four deployments",
            || async {
                let (_, l) = cp.get(&deployments_url(cp, "")).await;
                l["totalElements"] == 4
            },
        )
        .await;
    }
    // Concurrent label changes of one edge: both apply, in some order; all replicas agree.
    let t = enrollment_token(&a, P).await;
    let _e = SimAgent::enroll(&c, &t, "e-1", &[]).await;
    within(DELIVERY, "A and B see the edge", || async {
        a.get(&a.at(&format!("/canopy/v1/projects/{P}/edges/e-1")))
            .await
            .0
            == StatusCode::OK
            && b.get(&b.at(&format!("/canopy/v1/projects/{P}/edges/e-1")))
                .await
                .0
                == StatusCode::OK
    })
    .await;
    tokio::join!(
        set_labels(&a, "e-1", json!({"a": "1"}), json!([])),
        set_labels(&b, "e-1", json!({"b": "2"}), json!([])),
    );
    for cp in [&a, &b, &c] {
        within(DELIVERY, "both labels everywhere", || async {
            let (_, e) = cp
                .get(&cp.at(&format!("/canopy/v1/projects/{P}/edges/e-1")))
                .await;
            e["edge"]["labels"] == json!({"a": "1", "b": "2"})
        })
        .await;
    }
}

/// An edge whose agent reports to B stays alive on A (judged by the stored "last seen"), and
/// goes UNKNOWN there once it falls silent: liveness does not flap between replicas.
#[tokio::test]
async fn liveness_is_judged_the_same_on_a_replica_not_holding_the_agent() {
    let fleet = canopy_server::hub::HubConfig {
        heartbeat: Duration::from_secs(1),
        edge_timeout: Duration::from_secs(4),
        no_target_grace: Duration::from_secs(3),
    };
    let Some(a) = TestControlPlane::start_postgres_configured(|c| c.fleet = fleet).await else {
        return;
    };
    let b = a.start_replica(|_| {}).await;
    let t = enrollment_token(&a, P).await;
    let mut edge = SimAgent::enroll(&b, &t, "e-1", &[]).await;
    let state_on_a = || async {
        let (s, e) = a
            .get(&a.at(&format!("/canopy/v1/projects/{P}/edges/e-1")))
            .await;
        assert_eq!(s, StatusCode::OK, "{e}");
        e["edge"]["state"].as_str().unwrap_or_default().to_string()
    };
    // Reporting to B every heartbeat for three edge timeouts: A never shows UNKNOWN.
    let (s, e) = edge.report(AppState::Running).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    within(DELIVERY, "A sees the edge alive", || async {
        state_on_a().await == "RUNNING"
    })
    .await;
    let until = Instant::now() + fleet.edge_timeout * 3;
    let mut next_report = Instant::now() + fleet.heartbeat;
    while Instant::now() < until {
        if Instant::now() >= next_report {
            let (s, e) = edge.report(AppState::Running).await;
            assert_eq!(s, StatusCode::OK, "{e}");
            next_report += fleet.heartbeat;
        }
        assert_eq!(
            state_on_a().await,
            "RUNNING",
            "no flap on A while B hears the edge"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Silent: UNKNOWN on A after the timeout.
    within(
        fleet.edge_timeout * 3,
        "A marks the silent edge UNKNOWN",
        || async { state_on_a().await == "UNKNOWN" },
    )
    .await;
}
