#!/usr/bin/env bash
# Server CPU per transaction over real sockets: one shard pinned to CPU 0,
# loadgen on CPU 1. The server's utime+stime (/proc/PID/stat) over
# loadgen's whole run is divided by what the run completed:
#
# - publish: PUBLISHes closed loop at saturation (64 outstanding, USERS
#   presentities, no watchers), per 2xx answer. Issue 18's target: 4 us.
# - fanout: PRESENTITIES x WATCHERS standing subscriptions and a PUBLISH
#   storm with no NOTIFY rate limit, per NOTIFY loadgen received (the
#   setup and teardown of the subscriptions included). Issue 18's target:
#   3 us per NOTIFY and its 200.
#
# Set BIN to measure another build's presenced (loadgen is always this
# tree's), for pairs of runs alternating two builds.
#
#   bench/e2e/server-cpu.sh publish [SECONDS] [USERS] [RUNS]                  defaults 10 10000 1
#   bench/e2e/server-cpu.sh fanout [SECONDS] [PRESENTITIES] [WATCHERS] [RUNS]  defaults 10 10 1000 1
set -euo pipefail
cd "$(dirname "$0")/../.."
kind=${1:?publish or fanout}
secs=${2:-10}
case "$kind" in
  publish)
    users=${3:-10000}
    runs=${4:-1}
    server_args=()
    load_args=(--scenario publish --users "$users" --max-outstanding 64)
    ;;
  fanout)
    runs=${5:-1}
    server_args=(--notify-min-interval-ms 0)
    load_args=(--scenario fanout --presentities "${3:-10}" --watchers "${4:-1000}")
    ;;
  *) echo "usage: $0 publish|fanout ..." >&2; exit 2 ;;
esac
out=${OUT:-target/e2e}
port=${PORT:-5097}
mkdir -p "$out"
cargo build --release -q -p loadgen -p presence-engine
bin=${BIN:-target/release}
hz=$(getconf CLK_TCK)

for run in $(seq "$runs"); do
  taskset -c 0 "$bin/presenced" --listen "127.0.0.1:$port" --shards 1 "${server_args[@]}" --log-level warn >"$out/$kind-cpu-presenced.log" 2>&1 &
  pid=$!
  trap 'kill -INT $pid 2>/dev/null || true' EXIT
  sleep 0.5
  before=$(awk '{print $14, $15}' "/proc/$pid/stat")
  taskset -c 1 target/release/loadgen --target "127.0.0.1:$port" "${load_args[@]}" \
    --threads 1 --quiet --duration "$secs" --report "$out/$kind-cpu.json" >/dev/null
  after=$(awk '{print $14, $15}' "/proc/$pid/stat")
  kill -INT $pid; wait $pid 2>/dev/null || true
  trap - EXIT
  python3 - "$kind" "$out/$kind-cpu.json" "$before" "$after" "$hz" "$run" <<'PY'
import json, sys
kind = sys.argv[1]
r = json.load(open(sys.argv[2]))
u0, s0 = map(int, sys.argv[3].split())
u1, s1 = map(int, sys.argv[4].split())
hz = int(sys.argv[5])
if kind == "publish":
    n, what, whats, rate, extra = r["ok"], "PUBLISH", "PUBLISHes answered 2xx", r["throughput_per_s"], f"retransmissions {r['retransmissions']}"
else:
    n, what, whats, rate, extra = r["notify"]["received"], "NOTIFY", "NOTIFYs", r["notify"]["per_s"], f"retransmitted {r['notify']['retransmitted']}"
us = lambda ticks: ticks / hz / n * 1e6
print(f"run {sys.argv[6]}: {n} {whats}, {rate:.0f}/s; server CPU per {what} {us(u1 - u0 + s1 - s0):.2f} us"
      f" (user {us(u1 - u0):.2f}, system {us(s1 - s0):.2f}); {extra}")
PY
done
