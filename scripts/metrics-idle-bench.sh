#!/bin/bash
# usage: scripts/metrics-idle-bench.sh NAME BIN none|on|scrape   -> server CPU over the loadsim's 30 s idle window
# The server's CPU (utime+stime of /proc/PID/stat) over 28 s from canopy-loadsim's "idle window"
# log line, 2,000 simulated edges; mode: no --metrics-listen, a listener, or a listener scraped
# every second. docs/BENCHMARKS.md, "Metrics: idle cost".
set -u
OUT=${OUT:-/tmp/metrics-bench}; mkdir -p "$OUT"
LOADSIM=${LOADSIM:-target/debug/canopy-loadsim}
name=$1; bin=$2; mode=$3
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
P=$(port); M=$(port)
dir=$(mktemp -d $OUT/data-XXXX)
args=(server --insecure-http --listen 127.0.0.1:$P --data-dir $dir/data --rate-limit 0)
[ "$mode" != none ] && args+=(--metrics-listen 127.0.0.1:$M)
RUST_LOG=warn $bin "${args[@]}" >$dir/server.log 2>&1 &
spid=$!
for i in $(seq 1 100); do curl -sf http://127.0.0.1:$P/healthz >/dev/null 2>&1 && break; sleep 0.3; done
scr=""
if [ "$mode" = scrape ]; then
  ( while true; do curl -s http://127.0.0.1:$M/metrics -o $dir/last.txt; sleep 1; done ) &
  scr=$!
fi
CANOPY_TOKEN=$(cat $dir/data/admin.token) $LOADSIM --edges 2000 \
  --server http://127.0.0.1:$P --server-pid $spid > $OUT/$name.md 2>$OUT/$name.err &
lpid=$!
until grep -q "idle window" $OUT/$name.err; do sleep 0.2; done

t0=$(awk '{print $14+$15}' /proc/$spid/stat); n0=$(date +%s.%N)
sleep 28
t1=$(awk '{print $14+$15}' /proc/$spid/stat); n1=$(date +%s.%N)
rss=$(awk '/VmRSS/{print $2}' /proc/$spid/status)
tck=$(getconf CLK_TCK)
python3 -c "print('$name: server CPU %.2f %% of one core over %.1f s, RSS %d KiB, load %s' % (($t1-$t0)/$tck/($n1-$n0)*100, $n1-$n0, $rss, open('/proc/loadavg').read().split()[0]))"
[ "$mode" != none ] && curl -s http://127.0.0.1:$M/metrics > $OUT/$name.metrics
kill $lpid; [ -n "$scr" ] && kill $scr
kill $spid; wait $spid 2>/dev/null
