#!/usr/bin/env bash
# RSS through a NOTIFY storm: one pinned shard on CPU 0 with no NOTIFY rate
# limit (--notify-min-interval-ms 0), loadgen on CPU 1 with PRESENTITIES x
# WATCHERS standing subscriptions, then a PUBLISH storm on the
# presentities for SECONDS (each PUBLISH is a NOTIFY to every watcher).
# The subscriptions stand idle for SETTLE seconds first (default 35), so
# that Timer J has ended the transactions that set them up: the RSS before
# the storm is that of the standing state alone, read when loadgen says the
# storm began (`setup.ended_unix_s` in its report). Earlier versions of this
# script read it before loadgen had set anything up, the idle server's.
# The server's RSS is sampled every 200 ms; printed: RSS when the
# subscriptions stand (before the storm), its peak during the storm, and
# 6 and 10 s after the storm (Timer K, 5 s, lets each NOTIFY transaction
# go; the server sends the last of its backlog a second or two after
# loadgen stops) and 35 s after (Timer J too), each against the RSS before
# the storm. The issue-18 target: at most 1.2x once Timer K has passed.
#
# Set BIN to measure another build's presenced (loadgen is this tree's).
#
#   bench/e2e/notify-storm.sh [SECONDS] [PRESENTITIES] [WATCHERS]     defaults 10 10 1000
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
presentities=${2:-10}
watchers=${3:-1000}
out=${OUT:-target/e2e}
port=${PORT:-5096}
settle=${SETTLE:-35}
bin=${BIN:-target/release}
mkdir -p "$out"
cargo build --release -q -p loadgen -p presence-engine

taskset -c 0 "$bin/presenced" --listen "127.0.0.1:$port" --shards 1 --notify-min-interval-ms 0 --log-level warn >"$out/storm-presenced.log" 2>&1 &
pid=$!
trap 'kill -INT $pid 2>/dev/null || true' EXIT
sleep 0.5
rss_log="$out/storm-rss.log"
: >"$rss_log"
( while kill -0 $pid 2>/dev/null; do echo "$(date +%s.%N) $(awk '/VmRSS/ {print $2}' "/proc/$pid/status")" >>"$rss_log"; sleep 0.2; done ) &
sampler=$!
taskset -c 1 target/release/loadgen --target "127.0.0.1:$port" --scenario fanout --presentities "$presentities" --watchers "$watchers" \
  --threads 1 --quiet --duration "$secs" --setup-settle "$settle" --report "$out/storm.json" >/dev/null
sleep 35
kill $sampler 2>/dev/null || true
python3 - "$out/storm.json" "$rss_log" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
samples = [tuple(map(float, l.split())) for l in open(sys.argv[2]) if len(l.split()) == 2]
storm = r["setup"]["ended_unix_s"]
end = storm + r["duration_s"]
def at(t):  # the last sample at or before t, in MiB
    return max((s for s in samples if s[0] <= t), key=lambda s: s[0])[1] / 1024
before = at(storm)
peak = max(s[1] for s in samples if storm <= s[0] <= end + 1) / 1024
print(f"{r['setup']['subscriptions']} standing subscriptions; storm of {r['duration_s']:.0f} s: {r.get('notifies', r.get('throughput_per_s'))} NOTIFYs"
      f" ({r['throughput_per_s']:.0f}/s reported)")
print(f"server RSS MiB: before the storm {before:.0f}, peak {peak:.0f} ({peak / before:.2f}x),"
      f" 6 s after {at(end + 6):.0f} ({at(end + 6) / before:.2f}x), 10 s after {at(end + 10):.0f} ({at(end + 10) / before:.2f}x, target <= 1.2x),"
      f" 35 s after {at(end + 35):.0f} ({at(end + 35) / before:.2f}x)")
PY
kill -INT $pid; wait $pid 2>/dev/null || true
trap - EXIT
