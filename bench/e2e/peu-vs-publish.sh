#!/usr/bin/env bash
# Presence by subscription against PUBLISH, one server run: presenced with
# one shard pinned to CPU 0, loadgen pinned to CPU 1. First `publish` (each
# user PUBLISHes, one watcher per user is not needed), then `peu` (each
# user registers as a presence user agent, one watcher subscribes to each,
# presenced SUBSCRIBEs to every agent, and the agents NOTIFY their
# documents). Reports ingest per second and server CPU per ingested
# document (utime+stime of presenced from /proc/PID/stat over each phase,
# divided by completed transactions), and peu as a ratio of publish.
#
#   bench/e2e/peu-vs-publish.sh [SECONDS] [USERS]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
users=${2:-10000}
out=${OUT:-target/e2e}
port=${PORT:-5092}
mkdir -p "$out"
cargo build --release -q -p loadgen -p presence-engine
lg=target/release/loadgen
tick=$(getconf CLK_TCK)

cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }
field() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(r['by_kind'][sys.argv[2]]['ok'] if sys.argv[2] in r.get('by_kind',{}) else 0)" "$1" "$2"; }
tput() { python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['throughput_per_s']))" "$1"; }

taskset -c 0 target/release/presenced --listen "127.0.0.1:$port" --shards 1 --notify-min-interval-ms 0 --log-level warn \
    >"$out/peu-presenced.log" 2>&1 &
pid=$!
trap 'kill -INT $pid 2>/dev/null || true' EXIT
sleep 1
declare -A rate cpu
for scenario in publish peu; do
    before=$(cpu_of "$pid")
    taskset -c 1 $lg --target "127.0.0.1:$port" --scenario "$scenario" --duration "$secs" --users "$users" --threads 1 --quiet \
        --report "$out/peu-$scenario.json" >/dev/null
    after=$(cpu_of "$pid")
    kind=$([ "$scenario" = publish ] && echo publish || echo notify)
    done_n=$(field "$out/peu-$scenario.json" "$kind")
    rate[$scenario]=$(tput "$out/peu-$scenario.json")
    # The peu phase's CPU includes its setup (registrations, watcher and
    # agent subscriptions) and the watcher NOTIFYs each document causes.
    cpu[$scenario]=$(python3 -c "import sys; b,a,t,n=map(float,sys.argv[1:5]); print(f'{(a-b)/t/max(n,1)*1e6:.1f}')" "$before" "$after" "$tick" "$done_n")
    echo "$scenario: ${rate[$scenario]}/s, server CPU ${cpu[$scenario]} us per $kind (whole phase)"
done
python3 -c "import sys; p,u=map(float,sys.argv[1:3]); print(f'peu ingest = {u/p:.2f} x publish throughput in the same server run')" "${rate[publish]}" "${rate[peu]}"
