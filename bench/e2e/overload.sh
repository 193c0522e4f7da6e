#!/usr/bin/env bash
# Overload control, measured: presenced with one shard pinned to CPU 0,
# busy loops sharing that core (HOGS, default 3: the shard gets about a
# quarter of it), loadgen pinned to CPU 1.
#   1. capacity: closed-loop PUBLISH for 10 s;
#   2. overload: open-loop PUBLISH at 2x that capacity for SECONDS (30);
#   3. recovery: open-loop at 0.3x capacity for 2 s right after, then 5 s more.
# Prints goodput against capacity, p99 of 2xx and of 503 answers, 503s,
# the server's RSS before, during and after, and the recovery latency, with
# the issue's targets beside them. JSON reports land in $OUT.
#
#   bench/e2e/overload.sh [SECONDS] [USERS]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-30}
users=${2:-10000}
out=${OUT:-target/e2e}
port=${PORT:-5094}
mkdir -p "$out"
cargo build --release -q -p loadgen -p presence-engine
lg="taskset -c 1 target/release/loadgen --target 127.0.0.1:$port --scenario publish --users $users --threads 1 --quiet"

# Timer J keeps every transaction 32 s: at saturation that is far above
# the default transaction limit, which would answer 503 for capacity.
printf '[limits]\nserver_transactions_per_shard = 8000000\n%b' "${EXTRA_TOML:-}" >"$out/overload.toml"
taskset -c 0 target/release/presenced --config "$out/overload.toml" --listen "127.0.0.1:$port" --shards 1 --log-level info ${PRESENCED_FLAGS:-} >"$out/overload-presenced.log" 2>&1 &
pid=$!
# HOGS busy loops share the shard's core (default 3: the shard gets about a
# quarter of it), so that one loadgen thread can offer twice what it serves.
hogs=""
for _ in $(seq "${HOGS:-3}"); do taskset -c 0 sh -c 'while :; do :; done' & hogs="$hogs $!"; done
trap 'kill $hogs 2>/dev/null; kill -INT $pid 2>/dev/null || true' EXIT
sleep 1
rss() { awk '/VmRSS/ {print int($2/1024)}' "/proc/$pid/status"; }
j() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

$lg --max-outstanding 64 --duration 10 --report "$out/overload-capacity.json" >/dev/null
cap=$(j "$out/overload-capacity.json" "round(r['throughput_per_s'])")
echo "capacity (closed loop, shard sharing its core with ${HOGS:-3} busy loops): $cap PUBLISH/s"
rss_before=$(rss)
rate=$((cap * 2))
( peak=0; while kill -0 $pid 2>/dev/null; do r=$(rss); [ "$r" -gt "$peak" ] && peak=$r && echo "$peak" >"$out/overload-rss-peak"; sleep 1; done ) &
sampler=$!
$lg --rate "$rate" --ramp 1 --duration "$secs" --report "$out/overload-2x.json" >/dev/null
$lg --rate $((cap * 3 / 10)) --ramp 0 --duration 2 --report "$out/overload-recovery-2s.json" >/dev/null
$lg --rate $((cap * 3 / 10)) --ramp 0 --duration 5 --report "$out/overload-after.json" >/dev/null
kill $sampler 2>/dev/null || true
rss_after=$(rss)
peak=$(cat "$out/overload-rss-peak" 2>/dev/null || echo "$rss_after")

f="$out/overload-2x.json"
echo "offered $rate/s for $secs s:"
echo "  goodput $(j "$f" "round(r['throughput_per_s'])")/s = $(j "$f" "f\"{r['throughput_per_s']/$cap:.0%}\"") of capacity (target >= 90 %)"
echo "  2xx p99 $(j "$f" "r['latency_2xx_us']['p99']/1000") ms (target <= 50), p50 $(j "$f" "r['latency_2xx_us']['p50']/1000") ms"
echo "  503s $(j "$f" "r['errors']['by_status'].get('503', 0)"), p99 $(j "$f" "r['latency_503_us']['p99']/1000") ms (target <= 5)"
echo "  timeouts $(j "$f" "r['errors']['timeout']"), retransmissions $(j "$f" "r['retransmissions']")"
echo "RSS MiB: before $rss_before, peak $peak, after $rss_after (target: flat)"
echo "recovery at 0.3x: first 2 s 2xx p99 $(j "$out/overload-recovery-2s.json" "r['latency_2xx_us']['p99']/1000") ms, next 5 s p99 $(j "$out/overload-after.json" "r['latency_2xx_us']['p99']/1000") ms"
kill -INT "$pid"; wait "$pid" 2>/dev/null || true
grep "shard stopped" "$out/overload-presenced.log" | tail -1
