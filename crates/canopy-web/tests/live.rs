//! The live deployments pages (web-live): the server-sent events stream (a `changed` after a
//! simulated agent's report, its bounds, its authorization, its end on sign-out), the deployment
//! page's search and "show only problems", and upgrade / update values / delete with
//! `deleteType` with their authorization. Over real HTTP against a real control plane.

mod common;

use std::time::Duration;

use canopy_proto::AppState;
use canopy_testkit::TestControlPlane;
use canopy_testkit::sim_agent::SimAgent;
use common::*;
use reqwest::StatusCode;
use reqwest::header::LOCATION;
use serde_json::json;

/// An open event stream and what it has said so far.
struct Stream {
    response: reqwest::Response,
    text: String,
}

impl Stream {
    /// Waits (up to `deadline`) until the stream has said `needle` after what was already seen;
    /// false when it did not (or the stream ended).
    async fn wait_for(&mut self, needle: &str, deadline: Duration) -> bool {
        let from = self.text.len();
        let until = tokio::time::Instant::now() + deadline;
        loop {
            if self.text[from..].contains(needle) {
                return true;
            }
            match tokio::time::timeout_at(until, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => self.text.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return false,
            }
        }
    }
}

/// Opens the project's live stream with this session: the answer's status, and the stream
/// when it is one.
async fn open(cp: &TestControlPlane, s: &Signed, project: &str) -> (StatusCode, Option<Stream>) {
    let r = client()
        .get(cp.at(&format!("/ui/projects/{project}/live")))
        .header("cookie", s.cookie())
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let is_stream = r
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"));
    if status == StatusCode::OK && is_stream {
        let mut stream = Stream {
            response: r,
            text: String::new(),
        };
        assert!(
            stream
                .wait_for("event: hello", Duration::from_secs(30))
                .await,
            "a stream starts with hello: {}",
            stream.text
        );
        (status, Some(stream))
    } else {
        (status, None)
    }
}

/// An enrolled simulated edge `name` labelled `site=<site>` that has taken its deployments but
/// reported nothing.
async fn quiet_edge(cp: &TestControlPlane, name: &str, site: &str) -> SimAgent {
    let (s, b) = cp
        .post(
            &cp.at(&format!("/canopy/v1/projects/{P}/enrollment-tokens")),
            &json!({"description": "test"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let token = b["secret"].as_str().unwrap().to_string();
    let mut agent = SimAgent::enroll(cp, &token, name, &[("site", site)]).await;
    agent.poll(0).await;
    agent
}

#[tokio::test]
async fn a_status_report_is_announced_on_the_stream() {
    let cp = TestControlPlane::start().await;
    upload_example(&cp).await;
    let id = deployment(&cp, "shop-front", "paris").await;
    let mut agent = quiet_edge(&cp, "paris-1", "paris").await;
    user(&cp, "support", &["default_ao-r"]).await;
    let s = sign_in(&cp, "support").await;

    let (_, _, page) = s
        .get(&cp, &format!("/ui/projects/{P}/deployments/{id}"))
        .await;
    assert!(
        page.contains(&format!("data-live-src=\"/ui/projects/{P}/live\"")),
        "{page}"
    );
    assert!(page.contains(canopy_web::live_script_path()), "{page}");
    assert!(!page.contains("RUNNING</span>"), "not running yet: {page}");

    let (status, stream) = open(&cp, &s, P).await;
    assert_eq!(status, StatusCode::OK);
    let mut stream = stream.unwrap();
    let (st, b) = agent.report(AppState::Running).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    // Well before the stream's 60 s refresh: the report itself is announced.
    assert!(
        stream
            .wait_for("event: changed", Duration::from_secs(30))
            .await,
        "a changed event after the report: {}",
        stream.text
    );
    let (_, _, page) = s
        .get(&cp, &format!("/ui/projects/{P}/deployments/{id}"))
        .await;
    assert!(
        page.contains("state-RUNNING"),
        "the page it fetches shows RUNNING: {page}"
    );
    // A heartbeat that changes nothing is not announced.
    let (st, _) = agent.report(AppState::Running).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        !stream
            .wait_for("event: changed", Duration::from_secs(3))
            .await,
        "nothing changed: {}",
        stream.text
    );
}

#[tokio::test]
async fn a_burst_of_changes_is_coalesced() {
    let cp = TestControlPlane::start().await;
    upload_example(&cp).await;
    deployment(&cp, "shop-front", "paris").await;
    let mut agents = Vec::new();
    for i in 0..10 {
        agents.push(quiet_edge(&cp, &format!("paris-{i}"), "paris").await);
    }
    user(&cp, "support", &["default_ao-r"]).await;
    let s = sign_in(&cp, "support").await;
    let (_, stream) = open(&cp, &s, P).await;
    let mut stream = stream.unwrap();
    let started = tokio::time::Instant::now();
    for a in &mut agents {
        let (st, b) = a.report(AppState::Running).await;
        assert_eq!(st, StatusCode::OK, "{b}");
    }
    let burst = started.elapsed();
    assert!(
        stream
            .wait_for("event: changed", Duration::from_secs(30))
            .await
    );
    // Let whatever the burst causes arrive, then count.
    stream
        .wait_for("never said", burst + Duration::from_secs(3))
        .await;
    let changed = stream.text.matches("event: changed").count() as u64;
    let bound = burst.as_secs() + 2;
    assert!(
        changed <= bound,
        "10 reports in {burst:?} made {changed} changed events (at most one a second): {}",
        stream.text
    );
}

#[tokio::test]
async fn streams_are_bounded_per_user() {
    let cp = TestControlPlane::start().await;
    user(&cp, "support", &["default_ao-r"]).await;
    let s = sign_in(&cp, "support").await;
    // 32 clients of one user open streams at once: exactly the bound gets one.
    let opens = (0..32).map(|_| open(&cp, &s, P));
    let results = futures::future::join_all(opens).await;
    let mut held = Vec::new();
    let mut refused = 0;
    for (status, stream) in results {
        match status {
            StatusCode::OK => held.push(stream.unwrap()),
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("a stream answered {other}"),
        }
    }
    assert_eq!(held.len(), canopy_web::LIVE_STREAMS_PER_USER);
    assert_eq!(refused, 32 - canopy_web::LIVE_STREAMS_PER_USER);
    // Another user is not affected.
    user(&cp, "other", &["default_ao-r"]).await;
    let o = sign_in(&cp, "other").await;
    assert_eq!(open(&cp, &o, P).await.0, StatusCode::OK);
    // A closed stream gives its place back (once the server notices: its keep-alive write).
    drop(held.pop());
    let until = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (status, stream) = open(&cp, &s, P).await;
        if status == StatusCode::OK {
            drop(stream);
            break;
        }
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert!(
            tokio::time::Instant::now() < until,
            "a closed stream's place never came back"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn streams_of_a_project_without_a_role_are_refused() {
    let cp = TestControlPlane::start().await;
    cp.create_project("shop").await;
    user(&cp, "shopper", &["shop_ao-r"]).await;
    let s = sign_in(&cp, "shopper").await;
    let (status, stream) = open(&cp, &s, P).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "as the API");
    assert!(stream.is_none());
    assert_eq!(open(&cp, &s, "shop").await.0, StatusCode::OK);
    // Without a session: the sign-in page, no stream.
    let r = client()
        .get(cp.at(&format!("/ui/projects/{P}/live")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/ui/login");
}

#[tokio::test]
async fn a_stream_ends_when_its_session_is_signed_out() {
    let cp = TestControlPlane::start().await;
    user(&cp, "support", &["default_ao-r"]).await;
    let s = sign_in(&cp, "support").await;
    let (_, stream) = open(&cp, &s, P).await;
    let mut stream = stream.unwrap();
    let csrf = s.csrf(&cp).await;
    let (status, _, _) = s.post(&cp, "/ui/logout", &[("csrf", &csrf)], &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(
        stream
            .wait_for("event: ended", Duration::from_secs(30))
            .await,
        "{}",
        stream.text
    );
    // And then the stream is over.
    let end = tokio::time::timeout(Duration::from_secs(30), stream.response.chunk()).await;
    assert!(matches!(end, Ok(Ok(None))), "{end:?}");
}

#[tokio::test]
async fn the_deployment_page_searches_and_shows_only_problems() {
    let cp = TestControlPlane::start().await;
    upload_example(&cp).await;
    let id = deployment(&cp, "shop-front", "paris").await;
    let _ok = running_edge(&cp, "paris-ok", "paris").await;
    let mut down = quiet_edge(&cp, "paris-down", "paris").await;
    let (st, b) = down.report(AppState::Down).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let _silent = quiet_edge(&cp, "paris-silent", "paris").await;
    user(&cp, "support", &["default_ao-r"]).await;
    let s = sign_in(&cp, "support").await;
    let base = format!("/ui/projects/{P}/deployments/{id}");

    let (_, _, page) = s.get(&cp, &base).await;
    for e in ["paris-ok", "paris-down", "paris-silent"] {
        assert!(page.contains(&format!("data-edge=\"{e}\"")), "{e}: {page}");
    }
    let (_, _, page) = s.get(&cp, &format!("{base}?problems=1")).await;
    let page = &page[page.find("id=\"edges-live\"").unwrap()..];
    assert!(!page.contains("data-edge=\"paris-ok\""), "{page}");
    assert!(page.contains("data-edge=\"paris-down\""), "{page}");
    // Took the deployment but never reported it: the server folds that as DOWN, a problem.
    assert!(page.contains("data-edge=\"paris-silent\""), "{page}");
    assert!(page.contains("2 of 3 edges match"), "{page}");
    let (_, _, page) = s.get(&cp, &format!("{base}?edge=SILENT")).await;
    assert!(page.contains("data-edge=\"paris-silent\""), "{page}");
    assert!(!page.contains("data-edge=\"paris-ok\""), "{page}");
    assert!(!page.contains("data-edge=\"paris-down\""), "{page}");
    let (_, _, page) = s.get(&cp, &format!("{base}?edge=ok&problems=1")).await;
    assert!(page.contains("No edge matches."), "{page}");
}

#[test]
fn problems_are_defined() {
    use canopy_deploy::model::State;
    use canopy_server::app::{DEPLOYING_GRACE, is_problem};
    let fresh = Duration::from_secs(1);
    assert!(!is_problem(State::Running, DEPLOYING_GRACE * 2));
    for s in [
        State::Down,
        State::Error,
        State::Unknown,
        State::InternalError,
    ] {
        assert!(is_problem(s, fresh), "{s}");
    }
    assert!(!is_problem(State::Deploying, fresh));
    assert!(is_problem(State::Deploying, DEPLOYING_GRACE));
    assert!(is_problem(State::Updating, DEPLOYING_GRACE));
}

#[tokio::test]
async fn read_only_users_see_no_changes_and_forged_posts_are_refused() {
    let cp = TestControlPlane::start().await;
    upload_example(&cp).await;
    let id = deployment(&cp, "shop-front", "paris").await;
    user(&cp, "support", &["default_ao-r"]).await;
    let s = sign_in(&cp, "support").await;
    let base = format!("/ui/projects/{P}/deployments/{id}");
    let (_, _, page) = s.get(&cp, &base).await;
    for control in ["id=\"upgrade\"", "id=\"update-values\"", "id=\"delete\""] {
        assert!(!page.contains(control), "{control}: {page}");
    }
    for path in ["upgrade", "values", "delete"] {
        let (status, _, _) = s.get(&cp, &format!("{base}/{path}")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "GET {path}");
    }
    let csrf = s.csrf(&cp).await;
    for (path, form) in [
        (
            "upgrade",
            vec![("csrf", csrf.as_str()), ("version", "1.1.0")],
        ),
        (
            "values",
            vec![("csrf", csrf.as_str()), ("param:web:greeting", "forged")],
        ),
        (
            "delete",
            vec![("csrf", csrf.as_str()), ("delete_type", "ALL")],
        ),
    ] {
        let (status, _, page) = s.post(&cp, &format!("{base}/{path}"), &form, &[]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "POST {path}: {page}");
    }
    assert!(deployment_exists(&cp, &id).await);
    let (_, b) = cp
        .get(&cp.at(&format!("/v1/projects/{P}/appdeployment/deployments/{id}")))
        .await;
    assert!(!b.to_string().contains("forged"), "{b}");
    // A writer without the session's CSRF token is refused too.
    user(&cp, "ops", &["default_ao-rw"]).await;
    let w = sign_in(&cp, "ops").await;
    let (status, _, _) = w
        .post(&cp, &format!("{base}/delete"), &[("csrf", &csrf)], &[])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(deployment_exists(&cp, &id).await);
}

/// web-demo at `version` (its package only: the applications stay at 1.0.0), with the web
/// app's greeting default changed so the versions differ.
fn web_demo_at(version: &str) -> Vec<(String, Vec<u8>)> {
    let mut files = canopy_testkit::read_dir_files(&canopy_testkit::example("web-demo"));
    let pkg = files
        .iter_mut()
        .find(|(n, _)| n == "web-demo.yaml")
        .unwrap();
    let text = String::from_utf8(pkg.1.clone()).unwrap();
    let marker = "description: A web server";
    assert!(text.contains("\nversion: 1.0.0\n") && text.contains(marker));
    pkg.1 = text
        .replace("\nversion: 1.0.0\n", &format!("\nversion: {version}\n"))
        .into_bytes();
    files.retain(|(n, _)| n == "web-demo.yaml");
    files
}

#[tokio::test]
async fn writers_upgrade_update_values_and_delete_with_a_delete_type() {
    let cp = TestControlPlane::start().await;
    upload_example(&cp).await;
    let id = deployment(&cp, "shop-front", "paris").await;
    // Fleet write, and catalog read for the package's versions and parameter templates.
    user(&cp, "ops", &["default_ao-rw", "default_cat-r"]).await;
    let s = sign_in(&cp, "ops").await;
    let base = format!("/ui/projects/{P}/deployments/{id}");
    let (_, _, page) = s.get(&cp, &base).await;
    for control in ["id=\"upgrade\"", "id=\"update-values\"", "id=\"delete\""] {
        assert!(page.contains(control), "{control}: {page}");
    }
    let csrf = s.csrf(&cp).await;

    // Update values: the form comes from the parameter templates.
    let (status, _, page) = s.get(&cp, &format!("{base}/values")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("name=\"param:web:greeting\""), "{page}");
    assert!(page.contains("name=\"param:status:port\""), "{page}");
    let (status, _, page) = s
        .post(
            &cp,
            &format!("{base}/values"),
            &[("csrf", &csrf), ("param:web:port", "not a number")],
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert!(
        page.contains("id=\"form-error\""),
        "the server's error in place: {page}"
    );
    assert!(page.contains("port"), "{page}");
    let (status, h, page) = s
        .post(
            &cp,
            &format!("{base}/values"),
            &[("csrf", &csrf), ("param:web:greeting", "Bonjour")],
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{page}");
    assert!(h[LOCATION].to_str().unwrap().starts_with(&base));
    let (_, b) = cp
        .get(&cp.at(&format!("/v1/projects/{P}/appdeployment/deployments/{id}")))
        .await;
    assert_eq!(
        b["deployment"]["overrideValues"][0]["values"]["greeting"], "Bonjour",
        "{b}"
    );
    let (_, _, page) = s.get(&cp, &format!("{base}/values")).await;
    assert!(
        page.contains("value=\"Bonjour\""),
        "the form shows the value: {page}"
    );

    // Upgrade: no newer version yet; then 1.1.0, with what changes.
    let (_, _, page) = s.get(&cp, &format!("{base}/upgrade")).await;
    assert!(page.contains("id=\"no-newer\""), "{page}");
    let (st, b) = cp.upload(P, web_demo_at("1.1.0")).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (_, _, page) = s.get(&cp, &format!("{base}/upgrade?version=1.1.0")).await;
    assert!(page.contains("id=\"changes\""), "{page}");
    assert!(page.contains("from 1.0.0 to 1.1.0"), "{page}");
    let (status, _, page) = s
        .post(
            &cp,
            &format!("{base}/upgrade"),
            &[("csrf", &csrf), ("version", "9.9.9")],
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the server's error: {page}");
    assert!(page.contains("9.9.9"), "{page}");
    let (status, _, page) = s
        .post(
            &cp,
            &format!("{base}/upgrade"),
            &[("csrf", &csrf), ("version", "1.1.0")],
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{page}");
    let (_, b) = cp
        .get(&cp.at(&format!("/v1/projects/{P}/appdeployment/deployments/{id}")))
        .await;
    assert_eq!(b["deployment"]["appVersion"], "1.1.0", "{b}");
    assert_eq!(
        b["deployment"]["overrideValues"][0]["values"]["greeting"], "Bonjour",
        "values are kept: {b}"
    );

    // Delete: the confirmation offers both delete types; a bad one is refused.
    let (_, _, page) = s.get(&cp, &format!("{base}/delete")).await;
    assert!(page.contains("value=\"PARENT_ONLY\" checked"), "{page}");
    assert!(page.contains("value=\"ALL\""), "{page}");
    let (status, _, _) = s
        .post(
            &cp,
            &format!("{base}/delete"),
            &[("csrf", &csrf), ("delete_type", "SOME")],
            &[],
        )
        .await;
    assert!(status.is_client_error(), "{status}");
    assert!(deployment_exists(&cp, &id).await);
    let (status, _, _) = s
        .post(
            &cp,
            &format!("{base}/delete"),
            &[("csrf", &csrf), ("delete_type", "ALL")],
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(!deployment_exists(&cp, &id).await);
}
