//! Leases of once-only background jobs (PostgreSQL session advisory locks) between two stores
//! on one database, as two server replicas hold them; and the migrator's rule for rolling
//! upgrades (a database with a newer release's additive migration still opens).

use std::time::{Duration, Instant};

use canopy_core::names::ProjectName;
use canopy_store::testing::{fresh_postgres, fresh_sqlite};
use canopy_store::{LEASE_LOCK_CLASS, LeaseJob, Store};
use sqlx::Connection as _;

/// Two stores (two replicas' pools) on one fresh PostgreSQL database, and its URL.
async fn two_replicas() -> Option<(Store, Store, String)> {
    let url = fresh_postgres().await?;
    let a = Store::connect(&url).await.expect("replica A connects");
    let b = Store::connect(&url).await.expect("replica B connects");
    Some((a, b, url))
}

/// Tries `store.try_lease(job)` until granted, for at most `within`.
async fn lease_within(store: &Store, job: LeaseJob, within: Duration) -> canopy_store::Lease {
    let deadline = Instant::now() + within;
    loop {
        if let Some(lease) = store.try_lease(job).await.expect("try_lease") {
            return lease;
        }
        assert!(
            Instant::now() < deadline,
            "the {job} lease was not granted within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn one_replica_holds_a_lease_and_the_other_takes_over_when_its_session_is_killed() {
    let Some((a, b, url)) = two_replicas().await else {
        eprintln!("skipped: CANOPY_TEST_DATABASE_URL is not set");
        return;
    };
    let job = LeaseJob::UploadReaper;
    let mut held = a
        .try_lease(job)
        .await
        .expect("try_lease on A")
        .expect("A gets the free lease");
    held.check().await.expect("A's lease is held");
    assert!(
        b.try_lease(job).await.expect("try_lease on B").is_none(),
        "B must not get a lease A holds"
    );
    // Another job's lease is independent.
    let other = b
        .try_lease(LeaseJob::Housekeeping)
        .await
        .expect("try_lease on B")
        .expect("B gets the housekeeping lease while A holds the reaper's");

    // Kill the session that holds A's lease, as when A's process dies or the database
    // administrator terminates it.
    let mut admin = sqlx::postgres::PgConnection::connect(&url)
        .await
        .expect("admin connection");
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' \
         AND classid = $1 AND objid = $2 AND objsubid = 2 AND granted",
    )
    .bind(i64::from(LEASE_LOCK_CLASS))
    .bind(i64::from(job.key()))
    .fetch_all(&mut admin)
    .await
    .expect("terminate the holder's session");
    assert_eq!(killed, vec![true], "exactly one session held the lease");

    let lost = held
        .check()
        .await
        .expect_err("A's lease is lost with its session");
    assert!(
        lost.to_string().contains("upload-reaper"),
        "the error names the job: {lost}"
    );
    let mut taken = lease_within(&b, job, Duration::from_secs(20)).await;
    taken.check().await.expect("B now holds the lease");
    assert!(
        a.try_lease(job).await.expect("try_lease on A").is_none(),
        "A must not get the lease back while B holds it"
    );
    // A's pool still works: only the lease's own session was killed.
    a.list_projects().await.expect("A's pool is unaffected");

    // Released (a replica stopping): A takes it at once.
    taken.release().await;
    let _again = lease_within(&a, job, Duration::from_secs(20)).await;
    other.release().await;
}

#[tokio::test]
async fn a_dropped_lease_is_released_when_its_connection_closes() {
    let Some((a, b, _url)) = two_replicas().await else {
        eprintln!("skipped: CANOPY_TEST_DATABASE_URL is not set");
        return;
    };
    let job = LeaseJob::Housekeeping;
    let held = a.try_lease(job).await.unwrap().expect("A gets the lease");
    assert!(b.try_lease(job).await.unwrap().is_none());
    drop(held);
    // The session ends when PostgreSQL sees the socket closed: shortly, not at once.
    let _taken = lease_within(&b, job, Duration::from_secs(20)).await;
}

#[tokio::test]
async fn sqlite_always_grants_leases() {
    let (store, _dir) = fresh_sqlite().await;
    let mut first = store.try_lease(LeaseJob::UploadReaper).await.unwrap();
    let second = store.try_lease(LeaseJob::UploadReaper).await.unwrap();
    assert!(first.is_some() && second.is_some());
    first.as_mut().unwrap().check().await.expect("always held");
}

/// Records a migration that a newer release applied (an additive one: a new nullable column)
/// in the database at `url`, as that release's replica would have.
async fn apply_future_migration(store: &Store) {
    let backend = store.backend();
    let checksum = match backend {
        canopy_store::Backend::Postgres => "'\\x00'::bytea",
        canopy_store::Backend::Sqlite => "X'00'",
    };
    canopy_store::testing::execute_raw(store, "ALTER TABLE projects ADD COLUMN future_note TEXT")
        .await;
    canopy_store::testing::execute_raw(
        store,
        &format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
             execution_time) VALUES (9001, 'a newer release: additive', TRUE, {checksum}, 0)"
        ),
    )
    .await;
}

#[tokio::test]
async fn an_older_release_opens_a_database_with_a_newer_additive_migration() {
    let (sqlite, dir) = fresh_sqlite().await;
    apply_future_migration(&sqlite).await;
    sqlite.close().await;
    let sqlite_url = format!("sqlite://{}", dir.path().join("canopy.db").display());
    let mut urls = vec![("sqlite", sqlite_url)];
    if let Some(url) = fresh_postgres().await {
        let pg = Store::connect(&url).await.expect("migrate PostgreSQL");
        apply_future_migration(&pg).await;
        pg.close().await;
        urls.push(("postgres", url));
    }
    for (backend, url) in urls {
        let store = Store::connect(&url).await.unwrap_or_else(|e| {
            panic!("{backend}: this release must open a database a newer one migrated: {e}")
        });
        let name = ProjectName::try_from("after-upgrade").unwrap();
        let project = store.ensure_project(&name).await.expect("writes work");
        let tx = store.read(project.id).await.expect("reads work");
        drop(tx);
        store.close().await;
    }
}
