#!/usr/bin/env bash
# Cluster failover, measured (issue 20): a nats-server with JetStream and
# two presenced nodes (one shard each, 1024 partitions, lease_ttl_ms =
# TTL_MS) on loopback. Each round stops node 1, with kill -9 or SIGTERM,
# and times from the signal to the moment node 2 has logged
# "serving partition" for every partition (read off its JSON log), then
# starts node 1 again and waits until both serve their placement share.
# Reported per round and as min / median / max per kind.
#
#   bench/e2e/cluster-failover.sh [ROUNDS]     default 5; TTL_MS=3000
#   PRESENTITIES=100000 bench/e2e/cluster-failover.sh 3
#   PRESENTITIES=20000 SUBSCRIPTIONS=20000 bench/e2e/cluster-failover.sh 1
#   LOG_LEVEL="info,presence_engine::reactor::cluster_host=debug" ...   the nodes' log filter
#
# With PRESENTITIES=N, before each signal loadgen PUBLISHes N presentities
# once each through node 1 (durability = "replicated": each is in its
# partition's log before its 200; node 1 forwards node 2's half), so node
# 2's take-over reads node 1's half back from the logs before it serves;
# the records it put back in the round are reported beside the time, with
# how many partitions came from its warm replica (`warm_replica_mb`; set
# WARM_MB=0 to measure take-overs that read the logs).
# With SUBSCRIPTIONS=N as well, loadgen then SUBSCRIBEs N watchers through
# node 1 (600 s): their dialogs live in node 1's partitions, so node 2
# reads them back and continues them (and NOTIFYs each, to a loadgen that
# has gone: those NOTIFYs time out later).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-5}
ttl=${TTL_MS:-3000}
out=${OUT:-target/e2e}/cluster
rm -rf "$out" && mkdir -p "$out"
command -v nats-server >/dev/null || { echo "nats-server not found (Debian: apt-get install nats-server)" >&2; exit 1; }
cargo build --release -q -p presence-engine -p loadgen
bin=target/release/presenced
nport=$((14222 + RANDOM % 1000))
nats-server -js -a 127.0.0.1 -p "$nport" -sd "$out/nats" >"$out/nats.log" 2>&1 &
npid=$!
pids=()
cleanup() { kill -9 "${pids[@]}" "$npid" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$nport") 2>/dev/null && break; sleep 0.1; done
presentities=${PRESENTITIES:-0}
subscriptions=${SUBSCRIPTIONS:-0}
printf '[cluster]\nlease_ttl_ms = %s\ndurability = "replicated"\nwarm_replica_mb = %s\n[log]\nlevel = "%s"\n' "$ttl" "${WARM_MB:-1024}" "${LOG_LEVEL:-info}" >"$out/cluster.toml"
start_node() { # id port logfile
    "$bin" --config "$out/cluster.toml" --listen "127.0.0.1:$2" --shards 1 --cluster-node "$1" \
        --nats "nats://127.0.0.1:$nport" --log-format json >/dev/null 2>"$3" &
    echo $!
}
# Partitions a node serves now, from its log; with a second argument, the
# time (s since the epoch) its count first reached 1024 after that moment.
served() {
    python3 - "$@" <<'PY'
import json, sys
from datetime import datetime
held, since, reached = set(), float(sys.argv[2]) if len(sys.argv) > 2 else None, None
for line in open(sys.argv[1]):
    try: r = json.loads(line)
    except ValueError: continue
    m, p = r.get("message"), r.get("partition")
    if m == "serving partition": held.add(p)
    elif m == "stopped serving partition": held.discard(p)
    else: continue
    t = datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00")).timestamp()
    if since is not None and reached is None and t >= since and len(held) == 1024: reached = t
print(reached if since is not None else len(held))
PY
}
wait_split() {
    for _ in $(seq 600); do
        a=$(served "$out/n1.log"); b=$(served "$out/n2.log")
        [ $((a + b)) -eq 1024 ] && [ "$a" -gt 0 ] && [ "$b" -gt 0 ] && return 0
        sleep 0.05
    done
    echo "nodes did not split the partitions: $a + $b" >&2; exit 1
}
n2=$(start_node 2 5192 "$out/n2.log"); pids+=("$n2")
results=()
for kind in KILL TERM; do
    for r in $(seq "$rounds"); do
        n1=$(start_node 1 5191 "$out/n1.log"); pids+=("$n1")
        wait_split
        if [ "$presentities" -gt 0 ]; then
            # A fresh domain per round: every presentity is new.
            target/release/loadgen --target 127.0.0.1:5191 --scenario publish --count "$presentities" --users "$presentities" \
                --refresh-every 0 --max-outstanding 128 --domain "r$kind$r.example.com" --quiet --report "$out/load-$kind$r.json" >/dev/null
        fi
        if [ "$subscriptions" -gt 0 ]; then
            target/release/loadgen --target 127.0.0.1:5191 --scenario subscribe --count "$subscriptions" --users "$subscriptions" \
                --max-outstanding 128 --keep-subscriptions --domain "r$kind$r.example.com" --quiet --report "$out/subscribe-$kind$r.json" >/dev/null
        fi
        sleep 1 # a renewal or two in
        t0=$(date +%s.%N)
        kill -"$kind" "$n1"; wait "$n1" 2>/dev/null || true
        for _ in $(seq 400); do
            t1=$(served "$out/n2.log" "$t0")
            [ "$t1" != "None" ] && break
            sleep 0.05
        done
        ms=$(python3 -c "print(round(($t1 - $t0) * 1000))")
        # The records node 2 put back since the signal, and how many
        # partitions came from its warm replica and how many from the logs.
        records=$(python3 - "$out/n2.log" "$t0" <<'PY'
import json, sys
from datetime import datetime
total, warm, cold = 0, 0, 0
for line in open(sys.argv[1]):
    try: r = json.loads(line)
    except ValueError: continue
    m = r.get("message")
    if m not in ("partition log replayed", "partition logs replayed"): continue
    if datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00")).timestamp() < float(sys.argv[2]): continue
    if m == "partition log replayed": total += r.get("records", 0)
    else: warm, cold = warm + r.get("warm", 0), cold + r.get("cold", 0)
print(f"{total} records ({warm} partitions from the warm replica, {cold} from the logs)")
PY
)
        echo "round $r, $kind: node 2 serves all 1024 partitions ${ms} ms after the signal, having put back $records"
        results+=("$kind $ms")
        : >"$out/n1.log"
    done
done
printf '%s\n' "${results[@]}" | python3 -c "
import sys, statistics
by = {}
for l in sys.stdin:
    k, v = l.split(); by.setdefault(k, []).append(int(v))
for k, v in by.items():
    print(f'{\"kill -9\" if k == \"KILL\" else \"SIGTERM\"}: min {min(v)} ms, median {statistics.median(v):.0f} ms, max {max(v)} ms over {len(v)} rounds (lease ttl $ttl ms)')
"
