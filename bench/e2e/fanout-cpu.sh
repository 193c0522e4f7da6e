#!/usr/bin/env bash
# Server CPU per fan-out NOTIFY over real sockets: one shard pinned to CPU 0
# with no NOTIFY rate limit, loadgen on CPU 1 with PRESENTITIES x WATCHERS
# standing subscriptions and a PUBLISH storm for SECONDS. The server's
# utime+stime (/proc/PID/stat) over loadgen's whole run (setup and teardown
# of the subscriptions included) is divided by the NOTIFYs loadgen
# received. Set BIN to measure another build's presenced (loadgen is
# always this tree's). Issue 18's target: 3 us per NOTIFY and its 200.
#
#   bench/e2e/fanout-cpu.sh [SECONDS] [PRESENTITIES] [WATCHERS] [RUNS]     defaults 10 10 1000 1
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
presentities=${2:-10}
watchers=${3:-1000}
runs=${4:-1}
out=${OUT:-target/e2e}
port=${PORT:-5097}
mkdir -p "$out"
cargo build --release -q -p loadgen -p presence-engine
bin=${BIN:-target/release}
hz=$(getconf CLK_TCK)

for run in $(seq "$runs"); do
  taskset -c 0 "$bin/presenced" --listen "127.0.0.1:$port" --shards 1 --notify-min-interval-ms 0 --log-level warn >"$out/fanout-cpu-presenced.log" 2>&1 &
  pid=$!
  trap 'kill -INT $pid 2>/dev/null || true' EXIT
  sleep 0.5
  before=$(awk '{print $14, $15}' "/proc/$pid/stat")
  taskset -c 1 target/release/loadgen --target "127.0.0.1:$port" --scenario fanout --presentities "$presentities" --watchers "$watchers" \
    --threads 1 --quiet --duration "$secs" --report "$out/fanout-cpu.json" >/dev/null
  after=$(awk '{print $14, $15}' "/proc/$pid/stat")
  kill -INT $pid; wait $pid 2>/dev/null || true
  trap - EXIT
  python3 - "$out/fanout-cpu.json" "$before" "$after" "$hz" "$run" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
u0, s0 = map(int, sys.argv[2].split())
u1, s1 = map(int, sys.argv[3].split())
hz = int(sys.argv[4])
n = r["notify"]["received"]
us = lambda ticks: ticks / hz / n * 1e6
print(f"run {sys.argv[5]}: {n} NOTIFYs, {r['notify']['per_s']:.0f}/s; server CPU per NOTIFY {us(u1 - u0 + s1 - s0):.2f} us"
      f" (user {us(u1 - u0):.2f}, system {us(s1 - s0):.2f}); retransmitted {r['notify']['retransmitted']}")
PY
done
