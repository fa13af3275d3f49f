//! Fresh databases for tests: a temp SQLite file, or a new PostgreSQL database per test on the
//! server named by `CANOPY_TEST_DATABASE_URL`.

/// Environment variable naming a PostgreSQL server (admin URL) for tests.
pub const PG_ENV: &str = "CANOPY_TEST_DATABASE_URL";
