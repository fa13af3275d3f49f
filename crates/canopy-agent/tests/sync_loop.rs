//! The protocol client and the sync loop against a **protocol fake of the control plane**
//! ([`common::FakeControlPlane`], an in-test axum server following `docs/AGENT-PROTOCOL.md`),
//! standing in until the real server implements the agent API; and a driver double
//! ([`common::FakeDriver`]), so these run without a container engine. The loop against a real
//! engine is in `sync_podman.rs`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use canopy_agent::{AgentClient, AgentError, Credential, DataDir, run_with};
use canopy_proto::{
    AgentInfo, AppState, AppStatus, EnrollRequest, Generation, PROTOCOL_VERSION, StatusReport,
};
use common::{
    FakeControlPlane, FakeDriver, RunningAgent, TOKEN, closed_address, desired, enrolled_dir,
    fast_config, labels, wait_for,
};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Protocol fake (see the module docs). Every answer of the protocol reaches the caller as the
/// right kind: data, `None` on 204, refusals with the server's message.
#[tokio::test]
async fn the_client_speaks_the_protocol_against_fake_server() {
    let cp = FakeControlPlane::start().await;
    cp.set_desired(desired(3, &["d1"]));
    let client = AgentClient::new(&format!("{}/", cp.url)).unwrap();
    assert_eq!(client.server(), cp.url);

    let mut request = EnrollRequest {
        protocol_version: PROTOCOL_VERSION,
        token: "cnt_wrong".into(),
        name: "store-042".into(),
        labels: labels(&[("site", "paris")]),
        agent: AgentInfo::default(),
    };
    match client.enroll(&request).await {
        Err(AgentError::Rejected {
            status: 401,
            message,
            ..
        }) => assert_eq!(message, "invalid enrollment token"),
        other => panic!("expected a refused token, got {other:?}"),
    }
    request.token = TOKEN.into();
    let enrolled = client.enroll(&request).await.unwrap();
    assert_eq!(enrolled.edge_name, "store-042");
    assert_eq!(cp.with(|i| i.enrollments[0].labels.clone()), request.labels);

    // Without a credential the other requests are refused as such.
    let err = client
        .desired_state(Generation(0), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        err.is_fatal() && err.to_string().contains("re-enroll"),
        "{err}"
    );

    let client = client.with_credential(Credential::new(&enrolled.credential).unwrap());
    let state = client
        .desired_state(Generation(0), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(state.map(|s| s.generation), Some(Generation(3)));
    let nothing = client
        .desired_state(Generation(3), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(nothing, None, "204 when nothing is newer");

    let report = |seq, apps: Vec<AppStatus>| StatusReport {
        protocol_version: PROTOCOL_VERSION,
        seq,
        generation: Generation(3),
        apps,
        agent: None,
    };
    let running = |id: &str| AppStatus {
        deployment_id: id.into(),
        app: "web".into(),
        state: AppState::Running,
        ..Default::default()
    };
    let ack = client
        .report(&report(5, vec![running("d1")]))
        .await
        .unwrap();
    assert_eq!((ack.seq, ack.generation), (5, Generation(3)));
    let ack = client
        .report(&report(4, vec![running("d1")]))
        .await
        .unwrap();
    assert_eq!(ack.seq, 5, "an older report changes nothing");
    match client.report(&report(6, vec![running("nope")])).await {
        Err(AgentError::Rejected {
            status: 422,
            message,
            ..
        }) => assert!(message.contains("deployment nope"), "{message}"),
        other => panic!("expected a 422, got {other:?}"),
    }

    cp.with(|i| i.fail_with = Some(503));
    let err = client.report(&report(7, vec![])).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("503"), "{err}");
    cp.with(|i| i.fail_with = None);

    cp.with(|i| i.speaks = 2);
    let err = client.report(&report(8, vec![])).await.unwrap_err();
    assert!(
        matches!(&err, AgentError::IncompatibleProtocol { message }
            if message.contains("agent protocol version 1 is not supported")),
        "{err:?}"
    );
    cp.with(|i| i.speaks = 1);

    cp.with(|i| i.revoked = true);
    let err = client
        .desired_state(Generation(3), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AgentError::Unauthorized { message } if message == "edge credential revoked"),
        "{err:?}"
    );

    let down = AgentClient::new(&closed_address()).unwrap();
    let err = down.enroll(&request).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}

/// Protocol fake (see the module docs). Enrollment keeps a private credential and the edge's
/// identity; a second start reuses them without a token and never enrolls again.
#[tokio::test]
async fn enrollment_keeps_a_private_credential_and_a_restart_reuses_it_against_fake_server() {
    let cp = FakeControlPlane::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("agent");
    let mut config = fast_config(&cp.url, &root);
    config.enroll_token = Some(TOKEN.into());
    config.name = Some("store-042".into());
    config.labels = labels(&[("site", "paris"), ("tier", "edge")]);

    let agent = RunningAgent::start(config.clone(), FakeDriver::default());
    wait_for("a first status report", || !cp.reports().is_empty()).await;
    agent.stop().await.unwrap();

    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&root.join("credential")), 0o600);
    let credential = std::fs::read_to_string(root.join("credential")).unwrap();
    assert_eq!(credential.trim(), cp.with(|i| i.credentials[0].clone()));
    let edge: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("edge.json")).unwrap()).unwrap();
    assert_eq!(
        edge,
        serde_json::json!({"edgeId": "edge-id-1", "edgeName": "store-042",
            "project": "default", "server": cp.url})
    );
    let enrollment = cp.with(|i| i.enrollments.clone());
    assert_eq!(enrollment.len(), 1);
    assert_eq!(enrollment[0].name, "store-042");
    assert_eq!(enrollment[0].labels, config.labels);
    assert_eq!(enrollment[0].agent.engine, "fake engine 1.0");
    assert_eq!(enrollment[0].agent.capabilities, ["containers"]);
    // The first report says who reports, with nothing to run yet.
    let first = &cp.reports()[0];
    assert_eq!(first.generation, Generation(0));
    assert!(first.apps.is_empty());
    assert_eq!(
        first.agent.as_ref().map(|a| a.version.as_str()),
        Some(env!("CARGO_PKG_VERSION"))
    );

    // Again, without a token (and a name that is now ignored).
    let before = cp.reports().len();
    config.enroll_token = None;
    config.name = Some("another-name".into());
    let agent = RunningAgent::start(config.clone(), FakeDriver::default());
    wait_for("reports of the second run", || cp.reports().len() > before).await;
    agent.stop().await.unwrap();
    assert_eq!(cp.with(|i| i.enrollments.len()), 1, "enrolled again");

    // The same data directory is refused for another control plane.
    config.server = closed_address();
    let err = run_with(config, FakeDriver::default(), std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::ServerMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains(&cp.url), "{err}");
}

#[tokio::test]
async fn an_agent_without_credential_or_token_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let config = fast_config(&closed_address(), tmp.path());
    let err = run_with(config, FakeDriver::default(), std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::NotEnrolled { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("this agent is not enrolled: pass --enroll-token"),
        "{err}"
    );
}

/// Protocol fake (see the module docs). A long-poll that times out (204) is asked again; a new
/// generation is kept on disk, applied and reported.
#[tokio::test]
async fn long_poll_204_then_200_applies_a_new_generation_against_fake_server() {
    let cp = FakeControlPlane::start().await;
    cp.set_desired(desired(1, &["d1"]));
    let tmp = tempfile::tempdir().unwrap();
    let dir = enrolled_dir(&cp, tmp.path());
    let driver = FakeDriver::default();
    let agent = RunningAgent::start(fast_config(&cp.url, tmp.path()), driver.clone());

    wait_for("generation 1 applied", || {
        driver.applied() == [Generation(1)]
    })
    .await;
    wait_for("a long-poll answered 204", || {
        cp.polls().contains(&(1, 204))
    })
    .await;
    assert_eq!(dir.desired().unwrap(), Some(desired(1, &["d1"])));

    cp.set_desired(desired(2, &["d1", "d2"]));
    wait_for("generation 2 applied", || {
        driver.applied() == [Generation(1), Generation(2)]
    })
    .await;
    wait_for("a report of generation 2", || {
        cp.reports().iter().any(|r| {
            r.generation == Generation(2)
                && r.apps.len() == 2
                && r.apps.iter().all(|a| a.state == AppState::Running)
        })
    })
    .await;
    assert_eq!(dir.desired().unwrap(), Some(desired(2, &["d1", "d2"])));
    assert!(cp.polls().contains(&(1, 200)), "{:?}", cp.polls());
    agent.stop().await.unwrap();
    assert_eq!(dir.state().unwrap().applied_generation, Generation(2));
    // Everything ran until then: the converger observes once all apps run.
    assert!(driver.observed.load(Ordering::SeqCst) > 0);
}

/// What the edge can run is reported as it changes (an engine connected after the start), not
/// only as it was at the start.
#[tokio::test]
async fn a_changed_engine_is_reported_against_fake_server() {
    let cp = FakeControlPlane::start().await;
    cp.set_desired(desired(1, &["d1"]));
    let tmp = tempfile::tempdir().unwrap();
    enrolled_dir(&cp, tmp.path());
    let driver = FakeDriver::default();
    let agent = RunningAgent::start(fast_config(&cp.url, tmp.path()), driver.clone());
    let engine_of = |r: &canopy_proto::StatusReport| {
        r.agent
            .as_ref()
            .map(|a| a.engine.clone())
            .unwrap_or_default()
    };
    wait_for("a report naming the first engine", || {
        cp.reports()
            .iter()
            .any(|r| engine_of(r) == "fake engine 1.0")
    })
    .await;
    *driver.engine.lock().unwrap() = "fake engine 2.0".into();
    wait_for("a report naming the new engine", || {
        cp.reports()
            .iter()
            .any(|r| engine_of(r) == "fake engine 2.0")
    })
    .await;
    agent.stop().await.unwrap();
}

/// Protocol fake (see the module docs), misbehaving: it answers every poll with an older
/// generation than the one the agent holds on disk. The agent keeps its own and never applies
/// the older one.
#[tokio::test]
async fn an_older_generation_is_never_applied_against_fake_server() {
    let cp = FakeControlPlane::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = enrolled_dir(&cp, tmp.path());
    dir.save_desired(&desired(5, &["d1"])).unwrap();
    cp.set_desired(desired(3, &["old"]));
    cp.with(|i| i.force_answer = Some(desired(3, &["old"])));
    let driver = FakeDriver::default();
    let agent = RunningAgent::start(fast_config(&cp.url, tmp.path()), driver.clone());

    wait_for("two polls answered with generation 3", || {
        cp.polls().iter().filter(|p| *p == &(5, 200)).count() >= 2
    })
    .await;
    assert_eq!(driver.applied(), [Generation(5)]);
    assert_eq!(dir.desired().unwrap(), Some(desired(5, &["d1"])));
    assert!(
        cp.reports().iter().all(|r| r.generation == Generation(5)),
        "{:?}",
        cp.reports()
    );

    cp.with(|i| i.force_answer = None);
    cp.set_desired(desired(6, &["d1"]));
    wait_for("generation 6 applied", || {
        driver.applied() == [Generation(5), Generation(6)]
    })
    .await;
    agent.stop().await.unwrap();
}

/// Protocol fake (see the module docs). Status sequence numbers grow with every report, and
/// keep growing after a restart (they are kept in `state.json`).
#[tokio::test]
async fn status_seq_grows_across_restarts_against_fake_server() {
    let cp = FakeControlPlane::start().await;
    cp.set_desired(desired(1, &["d1"]));
    let tmp = tempfile::tempdir().unwrap();
    let dir = enrolled_dir(&cp, tmp.path());
    let config = fast_config(&cp.url, tmp.path());

    for run in 1..=3 {
        let before = cp.reports().len();
        let agent = RunningAgent::start(config.clone(), FakeDriver::default());
        wait_for("three heartbeats", || cp.reports().len() >= before + 3).await;
        agent.stop().await.unwrap();
        let seqs: Vec<u64> = cp.reports().iter().map(|r| r.seq).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "run {run}: not strictly increasing: {seqs:?}"
        );
        assert!(dir.state().unwrap().seq >= *seqs.last().unwrap());
    }
    // Every report was accepted.
    let last = cp.reports().last().unwrap().seq;
    assert_eq!(cp.with(|i| i.highest_seq), last);
}

/// Protocol fake (see the module docs). A control plane that does not speak the agent's
/// protocol stops the agent with its message, at enrollment as in the sync loop.
#[tokio::test]
async fn an_unsupported_protocol_stops_the_agent_against_fake_server() {
    let cp = FakeControlPlane::start().await;
    cp.with(|i| i.speaks = 2);

    let tmp = tempfile::tempdir().unwrap();
    let mut config = fast_config(&cp.url, tmp.path());
    config.enroll_token = Some(TOKEN.into());
    let err = RunningAgent::start(config, FakeDriver::default())
        .finished()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AgentError::IncompatibleProtocol { message }
            if message.contains("not supported by this server (it speaks 2)")),
        "{err:?}"
    );

    let tmp = tempfile::tempdir().unwrap();
    enrolled_dir(&cp, tmp.path());
    let err = RunningAgent::start(fast_config(&cp.url, tmp.path()), FakeDriver::default())
        .finished()
        .await
        .unwrap_err();
    assert!(err.is_fatal(), "{err:?}");
    assert!(
        err.to_string()
            .contains("does not speak this agent's protocol"),
        "{err}"
    );
}

/// Protocol fake (see the module docs). A revoked credential stops the sync loop with a message
/// saying to re-enroll; the workloads are left as they were (nothing else is applied).
#[tokio::test]
async fn a_revoked_credential_stops_the_sync_loop_against_fake_server() {
    let cp = FakeControlPlane::start().await;
    cp.set_desired(desired(1, &["d1"]));
    let tmp = tempfile::tempdir().unwrap();
    let dir = enrolled_dir(&cp, tmp.path());
    let driver = FakeDriver::default();
    let agent = RunningAgent::start(fast_config(&cp.url, tmp.path()), driver.clone());
    wait_for("generation 1 applied", || !driver.applied().is_empty()).await;

    cp.with(|i| i.revoked = true);
    let err = agent.finished().await.unwrap_err();
    assert!(matches!(err, AgentError::Unauthorized { .. }), "{err:?}");
    assert!(err.to_string().contains("re-enroll"), "{err}");
    assert!(err.to_string().contains("edge credential revoked"), "{err}");
    assert_eq!(driver.applied(), [Generation(1)]);
    assert!(dir.credential().unwrap().is_some(), "credential kept");
}

/// Protocol fake (see the module docs). While the control plane fails (503) the agent keeps
/// converging and retries; once it answers again the agent reports what happened meanwhile.
#[tokio::test]
async fn a_failing_control_plane_is_retried_against_fake_server() {
    let cp = FakeControlPlane::start().await;
    cp.set_desired(desired(1, &["d1"]));
    let tmp = tempfile::tempdir().unwrap();
    enrolled_dir(&cp, tmp.path());
    let driver = FakeDriver::default();
    let agent = RunningAgent::start(fast_config(&cp.url, tmp.path()), driver.clone());
    wait_for("a report", || !cp.reports().is_empty()).await;

    cp.with(|i| i.fail_with = Some(503));
    driver.failing.store(true, Ordering::SeqCst);
    // The converger goes on (it is not blocked by the failing control plane). Its retries of a
    // failed pass are applies of the same generation, so count passes, not observations (an
    // observation that failed just before this snapshot was the last one).
    let passes = driver.passes.load(Ordering::SeqCst);
    wait_for("passes while the control plane fails", || {
        driver.passes.load(Ordering::SeqCst) >= passes + 2
    })
    .await;
    // Reports and polls meet the failure (and back off) before it ends.
    wait_for("failed requests", || cp.with(|i| i.failed) >= 3).await;
    let reports = cp.reports().len();
    cp.with(|i| i.fail_with = None);
    wait_for("a report saying the app is down", || {
        cp.reports()[reports..].iter().any(|r| {
            r.apps
                .iter()
                .any(|a| a.state == AppState::Down && a.message.contains("cannot converge"))
        })
    })
    .await;
    driver.failing.store(false, Ordering::SeqCst);
    wait_for("a report saying it runs again", || {
        cp.reports()
            .last()
            .is_some_and(|r| r.apps.iter().all(|a| a.state == AppState::Running))
    })
    .await;
    agent.stop().await.unwrap();
}

/// Offline autonomy: with the control plane unreachable, the desired state on disk is applied
/// at start, and the agent keeps converging while it retries.
#[tokio::test]
async fn the_desired_state_on_disk_is_applied_with_the_control_plane_down() {
    let cp = FakeControlPlane::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = enrolled_dir(&cp, tmp.path());
    dir.save_desired(&desired(4, &["d1"])).unwrap();
    // The data directory names the fake; make it unreachable at the same address.
    let url = cp.url.clone();
    drop(cp);
    let driver = FakeDriver::default();
    let agent = RunningAgent::start(fast_config(&url, tmp.path()), driver.clone());
    wait_for("generation 4 applied from disk", || {
        driver.applied() == [Generation(4)]
    })
    .await;
    wait_for("observation passes", || {
        driver.observed.load(Ordering::SeqCst) >= 2
    })
    .await;
    agent.stop().await.unwrap();
    assert_eq!(
        DataDir::open(tmp.path())
            .unwrap()
            .state()
            .unwrap()
            .applied_generation,
        Generation(4)
    );
}

/// Protocol fake (see the module docs). When the control plane has seen higher sequence numbers
/// than the agent's (its `state.json` was lost or restored from a backup), the agent continues
/// after them instead of being ignored forever.
#[tokio::test]
async fn a_lost_sequence_continues_after_the_servers_against_fake_server() {
    let cp = FakeControlPlane::start().await;
    cp.set_desired(desired(1, &["d1"]));
    cp.with(|i| i.highest_seq = 10_000);
    let tmp = tempfile::tempdir().unwrap();
    let dir = enrolled_dir(&cp, tmp.path());
    let agent = RunningAgent::start(fast_config(&cp.url, tmp.path()), FakeDriver::default());
    wait_for("a report accepted after 10000", || {
        cp.with(|i| i.highest_seq) > 10_000
    })
    .await;
    agent.stop().await.unwrap();
    assert_eq!(cp.reports()[0].seq, 1);
    assert_eq!(cp.with(|i| i.highest_seq), cp.reports().last().unwrap().seq);
    assert!(dir.state().unwrap().seq > 10_000, "persisted past it");
}

/// Protocol fake (see the module docs). The agent says when it lost the control plane and when
/// it is back, with how long it was gone; a restart that gives no enrollment settings says
/// nothing about them, one that gives a name says it is ignored.
#[tokio::test]
async fn losing_and_regaining_the_control_plane_are_both_logged_against_fake_server() {
    let logs = common::Captured::start();
    let cp = FakeControlPlane::start().await;
    cp.set_desired(desired(1, &["d1"]));
    let tmp = tempfile::tempdir().unwrap();
    enrolled_dir(&cp, tmp.path());
    let agent = RunningAgent::start(fast_config(&cp.url, tmp.path()), FakeDriver::default());
    wait_for("a report", || !cp.reports().is_empty()).await;
    assert!(
        logs.text().contains("connected to the control plane"),
        "{}",
        logs.text()
    );
    assert!(
        !logs.text().contains("already enrolled"),
        "nothing was given to ignore: {}",
        logs.text()
    );

    cp.with(|i| i.fail_with = Some(503));
    wait_for("the loss logged", || {
        logs.text().contains("lost the control plane")
    })
    .await;
    cp.with(|i| i.fail_with = None);
    wait_for("the reconnection logged", || {
        logs.text()
            .contains("reconnected to the control plane after")
    })
    .await;
    agent.stop().await.unwrap();
    let text = logs.text();
    let lost = text.find("lost the control plane").unwrap();
    let back = text
        .rfind("reconnected to the control plane after")
        .unwrap();
    assert!(lost < back, "{text}");
    assert!(text[back..].contains(" s"), "how long it was gone: {text}");

    // A restart with a name: said to be ignored, and only that.
    let mut config = fast_config(&cp.url, tmp.path());
    config.name = Some("another-name".into());
    let agent = RunningAgent::start(config, FakeDriver::default());
    wait_for("the ignored name logged", || {
        logs.text()
            .contains("already enrolled: ignoring the name given")
    })
    .await;
    agent.stop().await.unwrap();
}

/// Several addresses of one control plane (replicas): the agent skips one it cannot reach,
/// sticks to the next, and when that one dies moves on again, resuming from the generation it
/// holds: the new address is asked only for what is newer, so nothing is delivered or applied
/// twice.
#[tokio::test]
async fn the_agent_moves_to_the_next_address_and_resumes_from_its_generation() {
    let mut a = FakeControlPlane::start().await;
    let b = FakeControlPlane::start().await;
    a.set_desired(desired(3, &["d1"]));
    b.set_desired(desired(3, &["d1"]));
    let tmp = tempfile::tempdir().unwrap();
    enrolled_dir(&a, tmp.path());
    b.accept_credential("cne_preenrolled");
    // A dead address first, then the two replicas.
    let mut config = fast_config(&closed_address(), tmp.path());
    config.more_servers = vec![a.url.clone(), b.url.clone()];
    let driver = FakeDriver::default();
    let agent = RunningAgent::start(config, driver.clone());
    wait_for("a report to the first live address", || {
        a.reports().iter().any(|r| r.generation == Generation(3))
    })
    .await;
    assert_eq!(driver.applied().first(), Some(&Generation(3)));
    assert!(b.reports().is_empty(), "it sticks to one address");

    a.stop();
    wait_for("reports to the next address", || {
        b.reports().iter().any(|r| r.generation == Generation(3))
    })
    .await;
    wait_for("a long-poll at the next address", || !b.polls().is_empty()).await;
    agent.stop().await.unwrap();
    // Resumed from the generation held: the new replica was only asked for something newer
    // and had nothing to deliver, and no other generation was ever applied.
    assert!(
        b.polls()
            .iter()
            .all(|&(after, status)| after == 3 && status == 204),
        "{:?}",
        b.polls()
    );
    assert!(
        driver.applied().iter().all(|g| *g == Generation(3)),
        "{:?}",
        driver.applied()
    );
}
