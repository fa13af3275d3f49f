#!/usr/bin/env bash
# Fleet benchmark over two control-plane replicas (issue 13, item 10; docs/BENCHMARKS.md,
# "Replicas"): starts two `canopy server` processes on one fresh PostgreSQL database (the same
# secret key, a data directory each, plain HTTP on loopback) and runs canopy-loadsim with its
# edges spread round-robin over both (`--server A --server B`); operator calls go to A, so the
# deployment reaches B's edges through the change feed. Then B is killed with SIGKILL and its
# edges fail over to A (`--failover`: time until each is answered by A and has its status
# acknowledged there). Prints loadsim's report (each replica's idle CPU apart) and A's CPU over
# the whole run.
#
# Usage: scripts/replica-bench.sh [EDGES] [TARGET_DIR]     (defaults: 2000, target/debug)
#        MAX_LONG_POLLS=N scripts/replica-bench.sh ...          (each replica's --max-long-polls)
# Needs the PostgreSQL of scripts/postgres.sh (CANOPY_TEST_DATABASE_URL's server).
set -euo pipefail
cd "$(dirname "$0")/.."
trap 'echo "replica-bench.sh: error: failed at line $LINENO: $BASH_COMMAND (exit $?)" >&2' ERR

EDGES=${1:-2000}
BIN_DIR=${2:-target/debug}
# Each replica must hold the whole fleet's long-polls once the other is killed (OPERATIONS.md,
# Sizing); MAX_LONG_POLLS=15000 reproduces the default cap.
MAX_LONG_POLLS=${MAX_LONG_POLLS:-$((EDGES + EDGES / 4))}
BASE_URL=${CANOPY_TEST_DATABASE_URL:-postgres://app:app@127.0.0.1:55432/app}
for b in canopy canopy-loadsim; do
  [ -x "$BIN_DIR/$b" ] || { echo "replica-bench.sh: error: $BIN_DIR/$b is missing (cargo build --bins)" >&2; exit 1; }
done
DB="canopy_replica_bench_$$"
DB_URL="${BASE_URL%/*}/$DB"
WORK=$(mktemp -d /tmp/canopy-replica-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$BASE_URL" -qc "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
psql "$BASE_URL" -qc "CREATE DATABASE $DB" >/dev/null

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start() { # NAME PORT
  "$BIN_DIR/canopy" server --insecure-http --listen "127.0.0.1:$2" --data-dir "$WORK/$1" \
    --database-url "$DB_URL" --rate-limit 0 --agent-rate-limit 0 \
    --max-long-polls "$MAX_LONG_POLLS" >"$WORK/$1.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 120); do
    curl -fsS "http://127.0.0.1:$2/healthz" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "replica-bench.sh: error: replica $1 did not answer /healthz; its log:" >&2
  tail -20 "$WORK/$1.log" >&2
  exit 1
}
PA=$(port); PB=$(port)
start a "$PA"
PID_A=${PIDS[0]}
mkdir -p "$WORK/b" && chmod 700 "$WORK/b"
cp "$WORK/a/secret.key" "$WORK/b/secret.key"
start b "$PB"
PID_B=${PIDS[1]}
TOKEN=$(cat "$WORK/a/admin.token")
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
A0=$(cpu "$PID_A"); T0=$(date +%s.%N)
CANOPY_TOKEN="$TOKEN" "$BIN_DIR/canopy-loadsim" --edges "$EDGES" --threads 2 --enroll-concurrency 8 \
  --server "http://127.0.0.1:$PA" --server "http://127.0.0.1:$PB" \
  --server-pid "$PID_A" --server-pid "$PID_B" --failover \
  --json "$WORK/result.json"
A1=$(cpu "$PID_A"); T1=$(date +%s.%N)
HZ=$(getconf CLK_TCK)
python3 - "$A0" "$A1" "$T0" "$T1" "$HZ" <<'EOF'
import sys
a0, a1, t0, t1, hz = map(float, sys.argv[1:])
print(f"replica A: {(a1 - a0) / hz:.1f} CPU s over the whole run ({t1 - t0:.0f} s); "
      f"replica B was killed by the failover phase")
EOF
