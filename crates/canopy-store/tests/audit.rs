//! Audit log storage conformance: append, query (filters, paging, newest first) and pruning, on
//! every backend from [`fresh_stores`] (SQLite always, PostgreSQL when
//! `CANOPY_TEST_DATABASE_URL` is set, which CI requires).

use canopy_store::testing::fresh_stores;
use canopy_store::{AuditQuery, NewAuditRecord, Store};
use time::{Duration, OffsetDateTime, macros::datetime};

fn rec(
    at: OffsetDateTime,
    actor: &str,
    project: &str,
    action: &str,
    status: u16,
) -> NewAuditRecord {
    NewAuditRecord {
        at,
        actor: actor.into(),
        project: project.into(),
        action: action.into(),
        target: format!("/v3/projects/{project}/catalog/applications"),
        result: if status < 300 { "ok" } else { "Conflict" }.into(),
        status,
        request_id: format!("req-{actor}-{status}"),
    }
}

const T0: OffsetDateTime = datetime!(2030-01-02 03:04:05.123456 UTC);

async fn seed(store: &Store) {
    let records = [
        rec(
            T0,
            "alice",
            "shop",
            "POST /v3/projects/{projectName}/catalog/applications",
            200,
        ),
        rec(
            T0 + Duration::seconds(1),
            "bob",
            "shop",
            "DELETE /v3/projects/{projectName}/catalog/registries/{registryName}",
            409,
        ),
        rec(
            T0 + Duration::seconds(2),
            "alice",
            "lab",
            "PUT /v3/projects/{projectName}/catalog/applications/{applicationName}/versions/{version}",
            200,
        ),
        rec(
            T0 + Duration::seconds(3),
            "anonymous",
            "",
            "POST /canopy/v1/login",
            401,
        ),
        // Same instant as the previous one: ties keep insertion order (newest first).
        rec(
            T0 + Duration::seconds(3),
            "alice",
            "shop",
            "post /weird_100%",
            200,
        ),
    ];
    for r in &records {
        store.append_audit(r).await.unwrap();
    }
}

#[tokio::test]
async fn appends_and_reads_back_newest_first() {
    for (backend, store, _dir) in fresh_stores().await {
        seed(&store).await;
        let (all, total) = store.query_audit(&AuditQuery::default()).await.unwrap();
        assert_eq!(total, 5, "{backend}");
        let actors: Vec<_> = all.iter().map(|r| r.actor.as_str()).collect();
        assert_eq!(
            actors,
            ["alice", "anonymous", "alice", "bob", "alice"],
            "{backend}"
        );
        assert!(
            all.windows(2).all(|w| w[0].id > w[1].id),
            "{backend}: ids grow"
        );
        let first = all.last().unwrap();
        assert_eq!(first.at, T0, "{backend}: time kept to the microsecond");
        assert_eq!(first.project, "shop");
        assert_eq!(first.status, 200);
        assert_eq!(first.result, "ok");
        assert_eq!(first.request_id, "req-alice-200");
        assert_eq!(first.target, "/v3/projects/shop/catalog/applications");
        assert_eq!(
            first.action,
            "POST /v3/projects/{projectName}/catalog/applications"
        );
    }
}

#[tokio::test]
async fn filters_combine() {
    for (backend, store, _dir) in fresh_stores().await {
        seed(&store).await;
        let q = |f: fn(&mut AuditQuery)| {
            let mut q = AuditQuery::default();
            f(&mut q);
            q
        };
        let count = async |q: AuditQuery| store.query_audit(&q).await.unwrap().1;
        assert_eq!(
            count(q(|q| q.project = Some("shop".into()))).await,
            3,
            "{backend}"
        );
        assert_eq!(
            count(q(|q| q.project = Some(String::new()))).await,
            1,
            "{backend}"
        );
        assert_eq!(
            count(q(|q| q.actor = Some("alice".into()))).await,
            3,
            "{backend}"
        );
        assert_eq!(
            count(q(|q| q.actor = Some("ALICE".into()))).await,
            0,
            "{backend}: actor exact"
        );
        assert_eq!(
            count(q(|q| {
                q.project = Some("shop".into());
                q.actor = Some("alice".into());
            }))
            .await,
            2,
            "{backend}"
        );
        // Case-insensitive substring of the action.
        assert_eq!(
            count(q(|q| q.action_contains = Some("delete".into()))).await,
            1,
            "{backend}"
        );
        assert_eq!(
            count(q(|q| q.action_contains = Some("POST".into()))).await,
            3,
            "{backend}"
        );
        // LIKE wildcards typed by the user match only themselves.
        assert_eq!(
            count(q(|q| q.action_contains = Some("_".into()))).await,
            1,
            "{backend}"
        );
        assert_eq!(
            count(q(|q| q.action_contains = Some("%".into()))).await,
            1,
            "{backend}"
        );
        assert_eq!(
            count(q(|q| q.action_contains = Some("0%".into()))).await,
            1,
            "{backend}"
        );
        // since inclusive, until exclusive.
        let mut w = AuditQuery {
            since: Some(T0 + Duration::seconds(1)),
            until: Some(T0 + Duration::seconds(3)),
            ..AuditQuery::default()
        };
        let (page, total) = store.query_audit(&w).await.unwrap();
        assert_eq!(total, 2, "{backend}");
        assert_eq!(page[0].actor, "alice");
        assert_eq!(page[1].actor, "bob");
        w.until = None;
        assert_eq!(store.query_audit(&w).await.unwrap().1, 4, "{backend}");
    }
}

#[tokio::test]
async fn pages_are_bounded_and_offset() {
    for (backend, store, _dir) in fresh_stores().await {
        for i in 0..12 {
            store
                .append_audit(&rec(
                    T0 + Duration::milliseconds(i),
                    "a",
                    "p",
                    "POST /x",
                    200,
                ))
                .await
                .unwrap();
        }
        let page = |size, offset| AuditQuery {
            page_size: size,
            offset,
            ..AuditQuery::default()
        };
        let (items, total) = store.query_audit(&page(Some(5), 0)).await.unwrap();
        assert_eq!((items.len(), total), (5, 12), "{backend}");
        assert_eq!(items[0].at, T0 + Duration::milliseconds(11));
        let (items, _) = store.query_audit(&page(Some(5), 10)).await.unwrap();
        assert_eq!(items.len(), 2, "{backend}");
        assert_eq!(items[1].at, T0, "{backend}: the oldest is last");
        let (items, total) = store.query_audit(&page(Some(5), 50)).await.unwrap();
        assert_eq!((items.len(), total), (0, 12), "{backend}");
        // Out-of-range sizes are clamped, never unbounded.
        let (items, _) = store.query_audit(&page(Some(0), 0)).await.unwrap();
        assert_eq!(items.len(), 1, "{backend}");
        let (items, _) = store.query_audit(&page(Some(100_000), 0)).await.unwrap();
        assert_eq!(items.len(), 12, "{backend}");
        let (items, _) = store.query_audit(&page(None, u64::MAX)).await.unwrap();
        assert!(items.is_empty(), "{backend}");
    }
}

#[tokio::test]
async fn prune_deletes_only_older_records() {
    for (backend, store, _dir) in fresh_stores().await {
        seed(&store).await;
        let gone = store.prune_audit(T0 + Duration::seconds(2)).await.unwrap();
        assert_eq!(gone, 2, "{backend}");
        let (left, total) = store.query_audit(&AuditQuery::default()).await.unwrap();
        assert_eq!(total, 3, "{backend}");
        assert!(
            left.iter().all(|r| r.at >= T0 + Duration::seconds(2)),
            "{backend}"
        );
        // Appending after a prune keeps ids growing.
        store
            .append_audit(&rec(T0, "late", "p", "POST /x", 200))
            .await
            .unwrap();
        let (after, _) = store.query_audit(&AuditQuery::default()).await.unwrap();
        let late = after.iter().find(|r| r.actor == "late").unwrap();
        assert!(after.iter().all(|r| r.id <= late.id), "{backend}");
    }
}
