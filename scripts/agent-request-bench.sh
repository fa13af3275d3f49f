#!/usr/bin/env bash
# Server CPU per agent-protocol request (docs/BENCHMARKS.md, "Where the idle cost at 10,000
# edges came from"): starts `canopy server` (plain HTTP on loopback, a fresh data directory,
# rate limits off), enrolls one edge, then sends N requests of that edge with h2load over one
# HTTP/2 connection, two at a time (an edge's long-poll cap), and prints the server's CPU per
# request read from /proc. What is sent:
#   default       GET desired-state?after=<held>&waitSeconds=0 (nothing newer: 204)
#   STATUS=1      POST status, the same report every time (a duplicate after the first: the
#                 request path's overhead without the status fold)
#
# Usage: scripts/agent-request-bench.sh [CANOPY_BIN] [N]   (defaults: target/release/canopy, 50000)
# Needs h2load (Debian package nghttp2-client), curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
trap 'echo "agent-request-bench.sh: error: failed at line $LINENO: $BASH_COMMAND (exit $?)" >&2' ERR
BIN=${1:-target/release/canopy}
N=${2:-50000}
command -v h2load >/dev/null || { echo "agent-request-bench.sh: error: h2load is missing (apt-get install nghttp2-client)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "agent-request-bench.sh: error: $BIN is missing (cargo build --release --bin canopy)" >&2; exit 1; }
D=$(mktemp -d /tmp/canopy-agent-bench.XXXXXX)
P=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" server --insecure-http --listen "127.0.0.1:$P" --data-dir "$D/data" --rate-limit 0 \
  --agent-rate-limit 0 >"$D/server.log" 2>&1 &
SP=$!
cleanup() { kill "$SP" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$P/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
json() { python3 -c "import json,sys; t=sys.stdin.read(); print(json.loads(t)$1 if t else 0)"; }
ADMIN=$(cat "$D/data/admin.token")
ENROLL=$(curl -fsS -H "Authorization: Bearer $ADMIN" -H 'content-type: application/json' \
  -d '{"description":"agent-request-bench"}' \
  "http://127.0.0.1:$P/canopy/v1/projects/default/enrollment-tokens" | json '["secret"]')
CRED=$(curl -fsS -H 'canopy-protocol-version: 1' -H 'content-type: application/json' \
  -d "{\"protocolVersion\":1,\"token\":\"$ENROLL\",\"name\":\"bench-edge\"}" \
  "http://127.0.0.1:$P/canopy/v1/agent/enroll" | json '["credential"]')
H=(-H "authorization: Bearer $CRED" -H 'canopy-protocol-version: 1')
HELD=$(curl -fsS "${H[@]}" "http://127.0.0.1:$P/canopy/v1/agent/desired-state?after=0&waitSeconds=0" | json '["generation"]')
if [ -n "${STATUS:-}" ]; then
  printf '{"protocolVersion":1,"seq":1,"generation":%s,"apps":[]}' "$HELD" >"$D/report.json"
  URL="http://127.0.0.1:$P/canopy/v1/agent/status"
  H+=(-d "$D/report.json" -H 'content-type: application/json')
  WHAT="POST status (a duplicate report)"
else
  URL="http://127.0.0.1:$P/canopy/v1/agent/desired-state?after=$HELD&waitSeconds=0"
  WHAT="GET desired-state, waitSeconds=0"
fi
h2load "${H[@]}" -n 5000 -c 1 -m 2 "$URL" >/dev/null # warm-up
c0=$(awk '{print $14+$15}' "/proc/$SP/stat")
h2load "${H[@]}" -n "$N" -c 1 -m 2 "$URL" | grep -E "^finished in|^status codes"
c1=$(awk '{print $14+$15}' "/proc/$SP/stat")
python3 - "$c0" "$c1" "$(getconf CLK_TCK)" "$N" "$WHAT" <<'PY'
import sys
c0, c1, hz, n = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
cpu = (c1 - c0) / hz
print(f"{sys.argv[5]}: server CPU {cpu:.2f} s for {n} requests: {cpu * 1e6 / n:.1f} us per request")
PY
