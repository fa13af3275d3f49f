#!/usr/bin/env bash
# Runs every test of Canopy, PostgreSQL suite included, on a fresh machine:
# installs and starts a throwaway PostgreSQL on loopback (scripts/postgres.sh), then `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${CANOPY_TEST_DATABASE_URL:-}" ]; then
  url_line=$(scripts/postgres.sh | grep '^CANOPY_TEST_DATABASE_URL=' | tail -n 1)
  export "${url_line?}"
fi
echo "PostgreSQL for tests: ${CANOPY_TEST_DATABASE_URL}"
cargo test --workspace "$@"
