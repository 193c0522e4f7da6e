#!/usr/bin/env bash
# End-to-end capacity run: the host baseline (loadgen's trivial responder)
# and presenced under `register`, `publish`, `subscribe` and `fanout` with 1
# and 2 shards, all in one run on this host, with each server figure given
# as a fraction of the baseline measured with the same messages. JSON
# reports land in $OUT (default target/e2e) for `tuning`. The server runs
# without its NOTIFY rate limit so the fanout run measures NOTIFY capacity.
#
#   bench/e2e/server-vs-baseline.sh [SECONDS] [USERS]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
users=${2:-100000}
out=${OUT:-target/e2e}
port=${PORT:-5090}
mkdir -p "$out"
cargo build --release -q -p loadgen -p presence-engine
lg=target/release/loadgen

tput_of() { python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['throughput_per_s']))" "$1"; }

for messages in register publish; do
    $lg baseline --scenario "$messages" --duration "$secs" --users "$users" --quiet --report "$out/baseline-$messages.json" >/dev/null
done
for shards in 1 2; do
    target/release/presenced --listen "127.0.0.1:$port" --shards "$shards" --notify-min-interval-ms 0 --log-level warn \
        >"$out/presenced-$shards.log" 2>&1 &
    pid=$!
    sleep 1
    for scenario in register publish subscribe; do
        $lg --target "127.0.0.1:$port" --scenario "$scenario" --duration "$secs" --users "$users" --quiet \
            --report "$out/presenced-$shards-$scenario.json" >/dev/null
    done
    $lg --target "127.0.0.1:$port" --scenario fanout --presentities 10 --watchers 2000 --max-outstanding 10 \
        --duration "$secs" --quiet --report "$out/presenced-$shards-fanout.json" >/dev/null
    kill -INT "$pid"
    wait "$pid" || true
done

base_reg=$(tput_of "$out/baseline-register.json")
base_pub=$(tput_of "$out/baseline-publish.json")
echo "baseline (register messages): $base_reg/s"
echo "baseline (publish messages):  $base_pub/s"
for shards in 1 2; do
    for scenario in register publish subscribe; do
        t=$(tput_of "$out/presenced-$shards-$scenario.json")
        python3 -c "import sys; t,r,p=map(float,sys.argv[1:4]); print(f'presenced {sys.argv[4]} shard(s) {sys.argv[5]:9}: {t:8.0f}/s = {t/r:.0%} of the register baseline, {t/p:.0%} of the publish baseline')" \
            "$t" "$base_reg" "$base_pub" "$shards" "$scenario"
    done
done
for shards in 1 2; do
    python3 -c "import json,sys; n=json.load(open(sys.argv[1]))['notify']; print(f'presenced {sys.argv[2]} shard(s) fanout   : {n[\"per_s\"]:8.0f} NOTIFYs/s, publish-to-NOTIFY p50 {n[\"publish_to_notify_us\"][\"p50\"]} us')" \
        "$out/presenced-$shards-fanout.json" "$shards"
done
