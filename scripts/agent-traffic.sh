#!/usr/bin/env bash
# Measures what one idle edge costs on the wire: runs `canopy up` (control plane and its local
# agent, which talks to it over HTTPS like a remote agent) on a loopback port of its own, lets it
# settle (until the agent is connected, plus 30 s), then counts over SECONDS the new TCP connections to that port (SYNs) and the bytes
# both ways (TCP/IP headers included, as a metered link bills them) with an nftables table of
# its own, removed at the end. Nothing else on the machine is touched.
#
# Usage (as root): scripts/agent-traffic.sh [CANOPY_BIN] [SECONDS] [PORT]
#   defaults: target/debug/canopy, 300, 7171
# Prints one line: new connections, bytes to and from the server, and the bytes per day.
set -euo pipefail
bin=${1:-target/debug/canopy}
secs=${2:-300}
port=${3:-7171}
table=canopy_agent_traffic_$$
die() { echo "agent-traffic.sh: error: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run it as root (it adds an nftables table of its own)"
command -v nft >/dev/null || die "nft is not installed (apt-get install -y nftables)"
[ -x "$bin" ] || die "$bin is not an executable canopy binary (cargo build -p canopy)"
bin=$(realpath "$bin")
dir=$(mktemp -d /tmp/canopy-traffic-XXXX)
pid=
cleanup() {
  [ -n "$pid" ] && kill -INT "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  nft delete table inet "$table" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
nft add table inet "$table"
nft add chain inet "$table" out "{ type filter hook output priority 0; policy accept; }"
nft add rule inet "$table" out tcp dport "$port" counter comment '"to"'
nft add rule inet "$table" out tcp sport "$port" counter comment '"from"'
nft add rule inet "$table" out tcp dport "$port" 'tcp flags & (syn|ack) == syn' counter comment '"syn"'
(cd "$dir" && exec "$bin" up --data-dir "$dir/data" --listen "127.0.0.1:$port" >"$dir/up.log" 2>&1) &
pid=$!
# Settle: until the local agent is connected (a busy machine may take over a minute to start
# Podman's service and the agent), then 30 s more for its first report, so the window holds
# the idle rhythm only (the first connection's handshake counted in it before).
for _ in $(seq 1 180); do
  grep -q "connected to the control plane" "$dir/up.log" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || die "canopy up exited: $(tail -n 5 "$dir/up.log")"
  sleep 1
done
grep -q "connected to the control plane" "$dir/up.log" || die "the agent did not connect within 180 s"
sleep 30
kill -0 "$pid" 2>/dev/null || die "canopy up exited: $(tail -n 5 "$dir/up.log")"
# The window is the difference of two readings: `nft reset counters` resets only named
# counters (not these rule counters) in nftables 1.0.6, so before this script counted from the
# start of `canopy up`, enrollment and first connection included.
before=$(nft list table inet "$table")
sleep "$secs"
after=$(nft list table inet "$table")
count() { grep "comment \"$2\"" <<<"$1" | sed -E "s/.*$3 ([0-9]+).*/\1/"; }
delta() { echo $(($(count "$after" "$1" "$2") - $(count "$before" "$1" "$2"))); }
to=$(delta to bytes)
from=$(delta from bytes)
syn=$(delta syn packets)
echo "idle edge over ${secs} s: ${syn} new connections, ${to} bytes to the server, ${from} bytes from it: $(((to + from) * 86400 / secs / 1024)) KiB per day"
