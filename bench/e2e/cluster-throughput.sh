#!/usr/bin/env bash
# Throughput through the Kamailio front of a local cluster of 1, 2 and 3
# nodes (issue 20), as ratios to 1 node in the same run. Every process
# shares this machine's cores, so this shows what the front and the hop
# between nodes cost, not how a cluster scales.
#
#   bench/e2e/cluster-throughput.sh [SECONDS] [NODES...]   defaults 10, "1 2 3"
#   SCENARIO=fanout bench/e2e/cluster-throughput.sh ...     watchers instead
#
# Closed-loop PUBLISH (loadgen --scenario publish, 128 outstanding, 10,000
# users) against 127.0.0.1:5080 after each `deploy/local-cluster.sh up N`
# has split the partitions. Needs root (network namespaces), nats-server
# and kamailio. With more than one node, most PUBLISHes take the hop to
# another node as well (the front's hash and the partition map differ).
#
# SCENARIO=fanout: 20 presentities with 50 watchers each, subscribed
# through the front (which puts all watchers of a presentity on one node,
# by the Request-URI's hash), then a PUBLISH storm; with more than one
# node most documents cross from the owner to the watchers' node (once per
# node), and every NOTIFY comes back through the front. The ratios are of
# PUBLISH/s.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
shift || true
nodes=${*:-1 2 3}
out=${OUT:-target/e2e}/cluster-throughput
mkdir -p "$out"
cargo build --release -q -p presence-engine -p loadgen
export CLUSTER_DIR=$out/cluster PRESENCED=$PWD/target/release/presenced
trap 'deploy/local-cluster.sh down >/dev/null 2>&1 || true' EXIT
deploy/local-cluster.sh down >/dev/null 2>&1 || true
served_total() {
    python3 - "$CLUSTER_DIR" "$1" <<'PY'
import json, sys
total = 0
for i in range(1, int(sys.argv[2]) + 1):
    held = set()
    for l in open(f"{sys.argv[1]}/node{i}.log"):
        try: r = json.loads(l)
        except ValueError: continue
        if r.get("message") == "serving partition": held.add(r["partition"])
        elif r.get("message") == "stopped serving partition": held.discard(r["partition"])
    total += len(held)
print(total)
PY
}
declare -A rate
for n in $nodes; do
    deploy/local-cluster.sh up "$n" >/dev/null
    # Settled: every partition served and no move logged for 3 s (the
    # total is 1024 for moments while nodes that joined later still take
    # their share, and a move answers 503 for a moment while the new
    # owner reads the partition's log back).
    events() { cat "$CLUSTER_DIR"/node*.log | grep -c 'serving partition' || true; }
    quiet=0 last=-1
    for _ in $(seq 600); do
        now=$(events)
        if [ "$(served_total "$n")" = 1024 ] && [ "$now" = "$last" ]; then quiet=$((quiet + 1)); else quiet=0; fi
        [ "$quiet" -ge 15 ] && break
        last=$now
        sleep 0.2
    done
    [ "$quiet" -ge 15 ] || { echo "$n nodes did not settle" >&2; exit 1; }
    scenario=${SCENARIO:-publish}
    case $scenario in
        publish) args=(--scenario publish --max-outstanding 128 --users 10000) ;;
        fanout) args=(--scenario fanout --max-outstanding 16 --presentities 20 --watchers 50 --setup-outstanding 64) ;;
        *) echo "SCENARIO: publish or fanout" >&2; exit 2 ;;
    esac
    target/release/loadgen --target 127.0.0.1:5080 "${args[@]}" --duration "$secs" --quiet --report "$out/$scenario-$n.json" >/dev/null
    # PUBLISH/s in both; with fanout, also the NOTIFYs delivered and
    # answered (capped per subscription by NOTIFY rate control, so they
    # show coalescing, not capacity).
    rate[$n]=$(python3 -c "import json; print(round(json.load(open('$out/$scenario-$n.json'))['throughput_per_s']))")
    notifies=$(python3 -c "import json; r = json.load(open('$out/$scenario-$n.json')); print(round(r['notifies'] / r['duration_s']))")
    echo "$n node(s): ${rate[$n]} PUBLISH/s through the front ($notifies NOTIFY/s)"
    deploy/local-cluster.sh down >/dev/null
done
first=${nodes%% *}
for n in $nodes; do
    python3 -c "print('$n node(s): %.2f of $first node(s)' % (${rate[$n]} / ${rate[$first]}))"
done
