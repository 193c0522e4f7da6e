#!/usr/bin/env bash
# Runs the deterministic multi-shard simulation over many seeds, in
# release mode, in chunks so that progress shows.
#
#   bench/sim-seeds.sh COUNT [START] [CHUNK]
#
# Every failing seed is printed with what broke; replay one with
#   SIM_START=<seed> SIM_SEEDS=1 SIM_TRACE=1 \
#     cargo test --release -p presence-engine --test sim a_thousand_seeds -- --nocapture
# Exits non-zero if any seed failed.
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:?usage: bench/sim-seeds.sh COUNT [START] [CHUNK]}
start=${2:-0}
chunk=${3:-5000}
cargo test --release -p presence-engine --test sim --no-run -q
failed=0
done_=0
t0=$(date +%s)
while [ "$done_" -lt "$count" ]; do
    n=$(( count - done_ < chunk ? count - done_ : chunk ))
    s=$(( start + done_ ))
    if ! out=$(SIM_START=$s SIM_SEEDS=$n cargo test --release -q -p presence-engine --test sim a_thousand_seeds -- --nocapture 2>&1); then
        failed=1
        echo "$out" | grep -E '^seed [0-9]+:|^  at ' || echo "$out" | tail -20
    fi
    done_=$(( done_ + n ))
    summary=$(echo "$out" | grep -E '^[0-9]+ seeds:' || true)
    echo "[$(( $(date +%s) - t0 ))s] seeds $start..$(( start + done_ )) of $count done. $summary"
done
if [ "$failed" -ne 0 ]; then
    echo "some seeds FAILED (listed above)"
    exit 1
fi
echo "all $count seeds passed"
