//! Fresh databases for tests: a temp SQLite file, or a new PostgreSQL database per test on the
//! server named by `CANOPY_TEST_DATABASE_URL`.
//!
//! Every test gets its own database so tests run in parallel without seeing each other. The
//! PostgreSQL databases are left behind (the test server is throwaway; see
//! `scripts/postgres.sh`). In CI (env `CI` set) a missing `CANOPY_TEST_DATABASE_URL` is an error
//! rather than a silent skip, so PostgreSQL coverage cannot quietly disappear.

use sqlx::Connection;
use uuid::Uuid;

use crate::{ProjectId, Store};

/// Environment variable naming a PostgreSQL server (admin URL) for tests.
pub const PG_ENV: &str = "CANOPY_TEST_DATABASE_URL";

/// A store on a new SQLite file in a new temp directory (keep the directory alive as long as the
/// store).
pub async fn fresh_sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("create temp dir for test database");
    let store = Store::open_sqlite(&dir.path().join("canopy.db"))
        .await
        .expect("open test SQLite database");
    (store, dir)
}

/// The URL of a new, empty PostgreSQL database on the server named by `CANOPY_TEST_DATABASE_URL`,
/// or `None` when that is unset (outside CI; in CI, when env `CI` is set, a missing variable
/// panics).
pub async fn fresh_postgres() -> Option<String> {
    let admin = match std::env::var(PG_ENV) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "{PG_ENV} is not set but CI is: the PostgreSQL conformance run must not be skipped. \
                     Start a server with scripts/postgres.sh and export the line it prints."
                );
            }
            return None;
        }
    };
    let mut conn = sqlx::postgres::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {PG_ENV} server: {e}"));
    drop_stale_databases(&mut conn).await;
    let name = format!("{DB_PREFIX}{}_{}", unix_now(), Uuid::new_v4().simple());
    // `name` is generated above (letters, digits, underscore), never user input.
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot create test database {name} (does the role have CREATEDB?): {e}")
        });
    conn.close().await.ok();
    Some(with_database(&admin, &name))
}

/// Test databases are named `canopy_test_<unix seconds>_<uuid>`.
const DB_PREFIX: &str = "canopy_test_";
/// Test databases older than this are dropped by the next test run (no test runs that long).
const STALE_AFTER_SECS: u64 = 3 * 3600;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Drops test databases left behind by earlier runs (once per process). Each is a full copy of
/// the template (several MB), so without this a long-lived test server fills its disk. Only
/// databases old enough that no running test can still use them are dropped; one that is
/// still in use simply fails to drop and is left for later.
async fn drop_stale_databases(conn: &mut sqlx::postgres::PgConnection) {
    static ONCE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if ONCE.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let Ok(names) = sqlx::query_scalar::<_, String>(
        "SELECT datname FROM pg_database WHERE datname LIKE 'canopy\\_test\\_%'",
    )
    .fetch_all(&mut *conn)
    .await
    else {
        return;
    };
    let cutoff = unix_now().saturating_sub(STALE_AFTER_SECS);
    for name in names {
        let created = name
            .strip_prefix(DB_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        let safe = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if safe && created.is_some_and(|t| t < cutoff) {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
                .execute(&mut *conn)
                .await;
        }
    }
}

/// `url` with its database (path) replaced by `db`; query parameters kept.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{db}?{q}"),
        None => format!("{host_part}/{db}"),
    }
}

/// A store on a fresh SQLite file, plus one on a fresh PostgreSQL database when
/// `CANOPY_TEST_DATABASE_URL` is set: `(backend label, store, temp dir to keep alive)`.
pub async fn fresh_stores() -> Vec<(&'static str, Store, Option<tempfile::TempDir>)> {
    let (sqlite, dir) = fresh_sqlite().await;
    let mut stores = vec![("sqlite", sqlite, Some(dir))];
    if let Some(url) = fresh_postgres().await {
        let pg = Store::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("cannot open test PostgreSQL database {url}: {e}"));
        stores.push(("postgres", pg, None));
    }
    stores
}

/// The `body` column of a registry (`table` "registries", `key` its name) or deployment
/// ("deployments", its id) exactly as stored, for tests that check what reaches the disk.
#[doc(hidden)]
pub async fn raw_body(store: &Store, table: &str, project: ProjectId, key: &str) -> Option<String> {
    let sql = match table {
        "registries" => "SELECT body FROM registries WHERE project_id = $1 AND name = $2",
        "deployments" => "SELECT body FROM deployments WHERE project_id = $1 AND id = $2",
        other => panic!("raw_body: unsupported table {other:?}"),
    };
    sqlx::query_scalar::<_, String>(sql)
        .bind(project.to_string())
        .bind(key.to_string())
        .fetch_optional(&store.pool)
        .await
        .expect("read raw body")
}

/// Overwrites the stored `body` of a row (see [`raw_body`]), bypassing sealing: for tests that
/// tamper with the database.
#[doc(hidden)]
pub async fn set_raw_body(store: &Store, table: &str, project: ProjectId, key: &str, body: &str) {
    let sql = match table {
        "registries" => "UPDATE registries SET body = $3 WHERE project_id = $1 AND name = $2",
        "deployments" => "UPDATE deployments SET body = $3 WHERE project_id = $1 AND id = $2",
        other => panic!("set_raw_body: unsupported table {other:?}"),
    };
    let done = sqlx::query(sql)
        .bind(project.to_string())
        .bind(key.to_string())
        .bind(body.to_string())
        .execute(&store.pool)
        .await
        .expect("write raw body");
    assert_eq!(
        done.rows_affected(),
        1,
        "set_raw_body: no row {table} {key}"
    );
}

/// Runs one SQL statement on the store's pool, bypassing every rule: for tests that set up a
/// database as another release (or a damaged one) would have left it.
#[doc(hidden)]
pub async fn execute_raw(store: &Store, sql: &str) {
    sqlx::query(sql)
        .execute(&store.pool)
        .await
        .unwrap_or_else(|e| panic!("execute_raw {sql:?}: {e}"));
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_of_a_url() {
        assert_eq!(
            with_database("postgres://app:app@127.0.0.1:55432/app", "t1"),
            "postgres://app:app@127.0.0.1:55432/t1"
        );
        assert_eq!(
            with_database("postgres://app:app@localhost/app?sslmode=disable", "t1"),
            "postgres://app:app@localhost/t1?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://localhost:5432", "t1"),
            "postgres://localhost:5432/t1"
        );
    }
}
