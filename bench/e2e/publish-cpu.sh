#!/usr/bin/env bash
# Server CPU per PUBLISH at saturation over real sockets: one shard pinned
# to CPU 0, loadgen on CPU 1 sending PUBLISHes closed loop (64
# outstanding, USERS presentities, no watchers) for SECONDS. The server's
# utime+stime (/proc/PID/stat) over loadgen's run is divided by the 2xx
# answers. Set BIN to measure another build's presenced (loadgen is always
# this tree's). Issue 18's target: 4 us per PUBLISH.
#
#   bench/e2e/publish-cpu.sh [SECONDS] [USERS] [RUNS]     defaults 10 10000 1
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
users=${2:-10000}
runs=${3:-1}
out=${OUT:-target/e2e}
port=${PORT:-5098}
mkdir -p "$out"
cargo build --release -q -p loadgen -p presence-engine
bin=${BIN:-target/release}
hz=$(getconf CLK_TCK)

for run in $(seq "$runs"); do
  taskset -c 0 "$bin/presenced" --listen "127.0.0.1:$port" --shards 1 --log-level warn >"$out/publish-cpu-presenced.log" 2>&1 &
  pid=$!
  trap 'kill -INT $pid 2>/dev/null || true' EXIT
  sleep 0.5
  before=$(awk '{print $14, $15}' "/proc/$pid/stat")
  taskset -c 1 target/release/loadgen --target "127.0.0.1:$port" --scenario publish --users "$users" --max-outstanding 64 \
    --threads 1 --quiet --duration "$secs" --report "$out/publish-cpu.json" >/dev/null
  after=$(awk '{print $14, $15}' "/proc/$pid/stat")
  kill -INT $pid; wait $pid 2>/dev/null || true
  trap - EXIT
  python3 - "$out/publish-cpu.json" "$before" "$after" "$hz" "$run" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
u0, s0 = map(int, sys.argv[2].split())
u1, s1 = map(int, sys.argv[3].split())
hz = int(sys.argv[4])
n = r["ok"]
us = lambda ticks: ticks / hz / n * 1e6
print(f"run {sys.argv[5]}: {n} PUBLISHes answered 2xx, {r['throughput_per_s']:.0f}/s; server CPU per PUBLISH {us(u1 - u0 + s1 - s0):.2f} us"
      f" (user {us(u1 - u0):.2f}, system {us(s1 - s0):.2f}); retransmissions {r['retransmissions']}")
PY
done
