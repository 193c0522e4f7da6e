#!/usr/bin/env bash
# The PUBLISH latency tail at a steady, moderate rate: one pinned shard on
# CPU 0, loadgen on CPU 1, open loop at RATE for SECONDS on a fresh server,
# once with transparent huge pages on ([io] transparent_huge_pages = true)
# and once with the default (off). Prints p50/p90/p99/p999/max of the 2xx
# answers and the server's RSS for each; JSON reports land in $OUT.
#
#   bench/e2e/latency-tail.sh [RATE] [SECONDS] [USERS]     defaults 13000 6 10000
set -euo pipefail
cd "$(dirname "$0")/../.."
rate=${1:-13000}
secs=${2:-6}
users=${3:-10000}
out=${OUT:-target/e2e}
port=${PORT:-5095}
mkdir -p "$out"
cargo build --release -q -p loadgen -p presence-engine
printf '[io]\ntransparent_huge_pages = true\n' >"$out/latency-thp.toml"
printf '[io]\ntransparent_huge_pages = false\n' >"$out/latency-default.toml"

for kind in thp default; do
  taskset -c 0 target/release/presenced --config "$out/latency-$kind.toml" --listen "127.0.0.1:$port" --shards 1 --log-level warn >"$out/latency-$kind.log" 2>&1 &
  pid=$!
  trap 'kill -INT $pid 2>/dev/null || true' EXIT
  sleep 0.5
  taskset -c 1 target/release/loadgen --target "127.0.0.1:$port" --scenario publish --users "$users" --threads 1 --quiet \
    --rate "$rate" --ramp 0 --duration "$secs" --report "$out/latency-$kind.json" >/dev/null
  rss=$(awk '/VmRSS/ {print int($2/1024)}' "/proc/$pid/status")
  thp=$(awk '/THP_enabled/ {print $2}' "/proc/$pid/status")
  python3 - "$out/latency-$kind.json" "$kind" "$rss" "$thp" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); l = r["latency_2xx_us"]
ms = lambda k: f"{l[k] / 1000:.2f}"
print(f"{sys.argv[2]:8} (THP_enabled={sys.argv[4]}): {r['throughput_per_s']:.0f}/s  2xx p50 {ms('p50')} ms  p90 {ms('p90')}  p99 {ms('p99')}  p999 {ms('p999')}  max {ms('max')}  RSS {sys.argv[3]} MiB")
PY
  kill -INT $pid; wait $pid 2>/dev/null || true
  trap - EXIT
done
