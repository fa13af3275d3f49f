//! Fleet storage conformance: enrollment tokens, edges, deployments, the fleet revision and
//! batched liveness, on every backend from [`fresh_stores`] (SQLite always, PostgreSQL when
//! `CANOPY_TEST_DATABASE_URL` is set, which CI requires).

use std::collections::BTreeMap;

use canopy_core::names::ProjectName;
use canopy_store::testing::fresh_stores;
use canopy_store::{
    ChangeKind, DeploymentRow, EdgeRow, EdgeSeen, EnrollmentTokenRow, FleetChange, Project,
    SEEN_CHUNK, Store,
};
use time::{Duration, OffsetDateTime};

async fn project(store: &Store, name: &str) -> Project {
    store
        .ensure_project(&ProjectName::try_from(name).unwrap())
        .await
        .unwrap()
}

fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .unwrap()
}

fn token(p: &Project, id: &str, hash: &str) -> EnrollmentTokenRow {
    EnrollmentTokenRow {
        id: id.into(),
        project_id: p.id,
        secret_hash: hash.into(),
        description: "d".into(),
        create_time: now(),
        expire_time: now() + Duration::hours(1),
        revoke_time: None,
        max_uses: 0,
        uses: 0,
    }
}

fn edge(p: &Project, id: &str, name: &str, hash: &str) -> EdgeRow {
    EdgeRow {
        id: id.into(),
        project_id: p.id,
        name: name.into(),
        labels: BTreeMap::from([("site".to_string(), "paris".to_string())]),
        credential_hash: hash.into(),
        token_id: "t1".into(),
        create_time: now(),
        agent: "{}".into(),
        last_seen: None,
        last_status: None,
    }
}

#[tokio::test]
async fn fleet_rows_round_trip_on_every_backend() {
    for (label, store, _dir) in fresh_stores().await {
        let a = project(&store, "alpha").await;
        let b = project(&store, "beta").await;

        // Tokens: scoped by project, found by hash from anywhere, revoked once.
        let mut tx = store.write(a.id).await.unwrap();
        tx.insert_enrollment_token(&token(&a, "t1", "h1"))
            .await
            .unwrap();
        let r0 = tx.log_fleet_changes(&[]).await.unwrap();
        tx.commit().await.unwrap();
        let found = store.enrollment_token_by_hash("h1").await.unwrap().unwrap();
        assert_eq!(found.project_id, a.id, "{label}");
        assert!(
            store
                .enrollment_token_by_hash("nope")
                .await
                .unwrap()
                .is_none()
        );
        let mut tx = store.write(b.id).await.unwrap();
        assert!(
            tx.list_enrollment_tokens().await.unwrap().is_empty(),
            "{label}: other project"
        );
        assert!(
            !tx.revoke_enrollment_token("t1").await.unwrap(),
            "{label}: foreign revoke"
        );
        drop(tx);
        let mut tx = store.write(a.id).await.unwrap();
        assert!(tx.revoke_enrollment_token("t1").await.unwrap());
        tx.use_enrollment_token("t1").await.unwrap();
        let t = tx.get_enrollment_token("t1").await.unwrap().unwrap();
        assert!(t.revoke_time.is_some());
        assert_eq!(t.uses, 1);

        // Edges: unique name per project, unique credential hash.
        tx.insert_edge(&edge(&a, "e1", "one", "c1")).await.unwrap();
        assert!(tx.edge_name_taken("one").await.unwrap());
        assert!(!tx.edge_name_taken("two").await.unwrap());
        let mut labels = BTreeMap::new();
        labels.insert("site".to_string(), "lyon".to_string());
        assert!(tx.set_edge_labels("e1", &labels).await.unwrap());
        assert!(!tx.set_edge_labels("ghost", &labels).await.unwrap());
        let created = now();
        tx.insert_deployment(&DeploymentRow {
            id: "d1".into(),
            project_id: a.id,
            name: "deployment-abcde".into(),
            body: "{\"x\":1}".into(),
            create_time: created,
            update_time: created,
        })
        .await
        .unwrap();
        let r1 = tx
            .log_fleet_changes(&[
                FleetChange {
                    kind: ChangeKind::Edge,
                    project_id: a.id,
                    entity_id: "e1".into(),
                },
                FleetChange {
                    kind: ChangeKind::Deployment,
                    project_id: a.id,
                    entity_id: "d1".into(),
                },
            ])
            .await
            .unwrap();
        assert!(r1 > r0, "{label}: revision grows");
        // Not visible to others before commit.
        assert!(store.fleet_changes_after(r0).await.unwrap().rows.is_empty());
        tx.commit().await.unwrap();
        let page = store.fleet_changes_after(r0).await.unwrap();
        assert_eq!(page.current, r1, "{label}");
        let got: Vec<_> = page
            .rows
            .iter()
            .map(|c| (c.revision, c.change.kind, c.change.entity_id.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (r1, ChangeKind::Edge, "e1"),
                (r1, ChangeKind::Deployment, "d1")
            ],
            "{label}: the change rows, in order"
        );
        assert_eq!(page.rows[0].origin, store.origin(), "{label}");
        // Pruning keeps the newest row, so an up-to-date replica never sees a hole.
        store
            .prune_changes(now() + Duration::hours(1))
            .await
            .unwrap();
        let kept = store.fleet_changes_after(0).await.unwrap().rows;
        assert!(
            kept.len() == 2 && kept.iter().all(|c| c.revision == r1),
            "{label}: the newest revision's rows are kept: {kept:?}"
        );

        let mut tx = store.write(b.id).await.unwrap();
        assert!(
            tx.insert_edge(&edge(&b, "e2", "one", "c1")).await.is_err(),
            "{label}: credential hashes are unique"
        );
        drop(tx);
        let mut tx = store.write(b.id).await.unwrap();
        tx.insert_edge(&edge(&b, "e3", "one", "c3")).await.unwrap();
        assert!(
            !tx.delete_deployment("d1").await.unwrap(),
            "{label}: foreign delete"
        );
        tx.commit().await.unwrap();

        // Liveness batches.
        let seen = now();
        store
            .record_edges_seen(&[EdgeSeen {
                edge_id: "e1".into(),
                last_seen: seen,
                agent: Some("{\"version\":\"1\"}".into()),
                last_status: Some("{\"seq\":3}".into()),
            }])
            .await
            .unwrap();

        let snap = store.load_fleet().await.unwrap();
        assert_eq!(snap.revision, r1, "{label}");
        let e1 = snap.edges.iter().find(|e| e.id == "e1").unwrap();
        assert_eq!(e1.labels["site"], "lyon");
        assert_eq!(e1.last_seen, Some(seen), "{label}");
        assert_eq!(e1.agent, "{\"version\":\"1\"}");
        assert_eq!(e1.last_status.as_deref(), Some("{\"seq\":3}"));
        assert_eq!(snap.edges.len(), 2);
        assert_eq!(snap.deployments.len(), 1);
        assert_eq!(snap.deployments[0].create_time, created);

        let mut tx = store.write(a.id).await.unwrap();
        assert!(
            tx.update_deployment("d1", "{\"x\":2}", now())
                .await
                .unwrap()
        );
        assert_eq!(
            tx.list_deployment_rows().await.unwrap()[0].body,
            "{\"x\":2}"
        );
        assert!(tx.delete_deployment("d1").await.unwrap());
        assert!(tx.delete_edge("e1").await.unwrap());
        tx.commit().await.unwrap();
        let snap = store.load_fleet().await.unwrap();
        assert_eq!(snap.edges.len(), 1, "{label}");
        assert!(snap.deployments.is_empty());
        store.close().await;
    }
}

/// A big liveness batch on SQLite lets other writes in between its chunks: an operator's label
/// change queued behind it waits for one chunk, not for the whole batch (at 10,000 edges the
/// whole batch took 10-15 s in a debug build). The order is deterministic: on this
/// single-threaded runtime each spawned task runs until it waits for the writer lock, and the
/// lock's queue is first come, first served.
#[tokio::test]
async fn a_big_liveness_batch_lets_other_writes_in_between() {
    let (store, _dir) = canopy_store::testing::fresh_sqlite().await;
    let p = project(&store, "alpha").await;
    let n = 5 * SEEN_CHUNK;
    let mut tx = store.write(p.id).await.unwrap();
    for i in 0..n {
        tx.insert_edge(&edge(
            &p,
            &format!("e{i}"),
            &format!("n{i}"),
            &format!("c{i}"),
        ))
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let batch: Vec<EdgeSeen> = (0..n)
        .map(|i| EdgeSeen {
            edge_id: format!("e{i}"),
            last_seen: now(),
            agent: None,
            last_status: Some(format!("{{\"seq\":{i}}}")),
        })
        .collect();

    let done = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    // Hold the writer lock so the flush and then the label change queue up, in that order.
    let holder = store.write(p.id).await.unwrap();
    let flush = tokio::spawn({
        let (store, done) = (store.clone(), done.clone());
        async move {
            store.record_edges_seen(&batch).await.unwrap();
            done.lock().unwrap().push("flush");
        }
    });
    tokio::task::yield_now().await;
    let label = tokio::spawn({
        let (store, done) = (store.clone(), done.clone());
        async move {
            let mut tx = store.write(p.id).await.unwrap();
            let labels = BTreeMap::from([("site".to_string(), "lyon".to_string())]);
            assert!(tx.set_edge_labels("e0", &labels).await.unwrap());
            tx.commit().await.unwrap();
            done.lock().unwrap().push("label");
        }
    });
    tokio::task::yield_now().await;
    drop(holder);
    flush.await.unwrap();
    label.await.unwrap();
    assert_eq!(*done.lock().unwrap(), ["label", "flush"]);

    let snap = store.load_fleet().await.unwrap();
    let seen = snap
        .edges
        .iter()
        .filter(|e| e.last_status.is_some())
        .count();
    assert_eq!(seen, n, "every edge of the batch is written");
    let e0 = snap.edges.iter().find(|e| e.id == "e0").unwrap();
    assert_eq!(e0.labels["site"], "lyon");
}
