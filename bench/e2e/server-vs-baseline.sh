#!/usr/bin/env bash
# End-to-end capacity run: the host baseline (loadgen's trivial responder)
# and presenced under `publish` and `subscribe` with 1 and 2 shards, all in
# one run on this host, with each server figure given as a fraction of
# the baseline measured with the same messages. JSON reports land in
# $OUT (default target/e2e) for tuning/.
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
    target/release/presenced --listen "127.0.0.1:$port" --shards "$shards" --log-level warn >"$out/presenced-$shards.log" 2>&1 &
    pid=$!
    sleep 1
    for scenario in publish subscribe; do
        $lg --target "127.0.0.1:$port" --scenario "$scenario" --duration "$secs" --users "$users" --quiet \
            --report "$out/presenced-$shards-$scenario.json" >/dev/null
    done
    kill -INT "$pid"
    wait "$pid" || true
done

base_reg=$(tput_of "$out/baseline-register.json")
base_pub=$(tput_of "$out/baseline-publish.json")
echo "baseline (register messages): $base_reg/s"
echo "baseline (publish messages):  $base_pub/s"
for shards in 1 2; do
    for scenario in publish subscribe; do
        t=$(tput_of "$out/presenced-$shards-$scenario.json")
        python3 -c "import sys; t,r,p=map(float,sys.argv[1:4]); print(f'presenced {sys.argv[4]} shard(s) {sys.argv[5]:9}: {t:8.0f}/s = {t/r:.0%} of the register baseline, {t/p:.0%} of the publish baseline')" \
            "$t" "$base_reg" "$base_pub" "$shards" "$scenario"
    done
done
