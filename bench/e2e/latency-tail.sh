#!/usr/bin/env bash
# The latency tail at a steady, moderate rate (PUBLISH, or SUBSCRIBE with
# SCENARIO=subscribe: new dialogs, NOTIFYs answered): one pinned shard on
# CPU 0, loadgen on CPU 1, open loop at RATE for SECONDS on a fresh server,
# once with transparent huge pages on ([io] transparent_huge_pages = true)
# and once with the default (off); then, where it is installed, Kamailio
# (loadgen/kamailio/kamailio.cfg, in memory, pinned to CPU 0 the same
# way) under the same load. Prints p50/p90/p99/p999/max of the 2xx
# answers and the server's RSS for each, and presenced's p99 and p999 as a
# multiple of Kamailio's; JSON reports land in $OUT. Each line also prints
# the time the hypervisor took from the server's CPU during the run (steal,
# /proc/stat): on a shared VM a run with steal has a tail that is not the
# server's.
#
#   bench/e2e/latency-tail.sh [RATE] [SECONDS] [USERS]     defaults 13000 6 10000
#   SCENARIO=publish|subscribe OUT=target/e2e PORT=5095
#   BIN=dir of another build's presenced (loadgen is always this tree's);
#   KINDS="default" to skip the THP run, KINDS="default kamailio" etc.
set -euo pipefail
cd "$(dirname "$0")/../.."
rate=${1:-13000}
secs=${2:-6}
users=${3:-10000}
scenario=${SCENARIO:-publish}
out=${OUT:-target/e2e}
port=${PORT:-5095}
mkdir -p "$out"
cargo build --release -q -p loadgen -p presence-engine
bin=${BIN:-target/release}
printf '[io]\ntransparent_huge_pages = true\n' >"$out/latency-thp.toml"
printf '[io]\ntransparent_huge_pages = false\n' >"$out/latency-default.toml"

kinds="thp default"
if command -v kamailio >/dev/null 2>&1 && [ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/presence.so ]; then kinds="$kinds kamailio"; fi
kinds=${KINDS:-$kinds}
for kind in $kinds; do
  target_port=$port
  if [ "$kind" = kamailio ]; then
    target_port=5070
    taskset -c 0 kamailio -f loadgen/kamailio/kamailio.cfg -DD -E -m 256 -M 16 -Y "$out" >"$out/latency-$scenario-$kind.log" 2>&1 &
  else
    taskset -c 0 "$bin/presenced" --config "$out/latency-$kind.toml" --listen "127.0.0.1:$port" --shards 1 --log-level warn >"$out/latency-$scenario-$kind.log" 2>&1 &
  fi
  pid=$!
  trap 'kill -INT $pid 2>/dev/null || true' EXIT
  sleep 1
  steal_before=$(awk '/^cpu0 / {print $9}' /proc/stat)
  taskset -c 1 target/release/loadgen --target "127.0.0.1:$target_port" --scenario "$scenario" --users "$users" --threads 1 --quiet \
    --rate "$rate" --ramp 0 --duration "$secs" --report "$out/latency-$scenario-$kind.json" >/dev/null
  # USER_HZ ticks of 10 ms.
  steal_ms=$(( ($(awk '/^cpu0 / {print $9}' /proc/stat) - steal_before) * 10 ))
  # Kamailio's memory is its processes' together.
  rss=$(for p in $pid $(pgrep -P $pid); do awk '/VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null; done | awk '{s += $1} END {print int(s / 1024)}')
  thp=$(awk '/THP_enabled/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo "?")
  python3 - "$out/latency-$scenario-$kind.json" "$kind" "$rss" "$thp" "$steal_ms" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); l = r["latency_2xx_us"]
ms = lambda k: f"{l[k] / 1000:.2f}"
print(f"{sys.argv[2]:8} (THP_enabled={sys.argv[4]}): {r['throughput_per_s']:.0f}/s  2xx p50 {ms('p50')} ms  p90 {ms('p90')}  p99 {ms('p99')}  p999 {ms('p999')}  max {ms('max')}  RSS {sys.argv[3]} MiB  CPU 0 steal {sys.argv[5]} ms")
PY
  if [ "$kind" = kamailio ]; then kill -TERM $pid; else kill -INT $pid; fi
  wait $pid 2>/dev/null || true
  trap - EXIT
done
if [ -e "$out/latency-$scenario-kamailio.json" ] && [[ $kinds == *kamailio* ]]; then
  python3 - "$out/latency-$scenario-default.json" "$out/latency-$scenario-kamailio.json" <<'PY'
import json, sys
rp, rk = (json.load(open(f)) for f in sys.argv[1:3])
p, k = rp["latency_2xx_us"], rk["latency_2xx_us"]
if rk["throughput_per_s"] < 0.95 * rp["throughput_per_s"]:
    print(f"Kamailio answered {rk['throughput_per_s']:.0f}/s of the {rp['throughput_per_s']:.0f}/s presenced answered: it did not keep up, so its tail is a queue, not a comparison")
    sys.exit(0)
print(f"presenced (default) / Kamailio: p99 {p['p99'] / k['p99']:.2f}x, p999 {p['p999'] / k['p999']:.2f}x, max {p['max'] / k['max']:.2f}x (below 1: presenced's tail is shorter)")
PY
fi
