#!/usr/bin/env bash
# A node at subscriber scale: loadgen --scenario scale registers USERS
# presentities, publishes one document for each and sets up WATCHERS
# standing subscriptions per user, reading the server's memory (Pss of its
# process tree) after each step; then PUBLISH and SUBSCRIBE capacity
# (closed loop, SECONDS each) and their latency at half capacity (open loop,
# STEADY each), with the server's CPU (utime+stime from /proc/PID/stat)
# over each phase divided by its 2xx answers.
#
# Runs presenced (one shard, CPU 0; loadgen on CPU 1) at USERS, then -- where
# Kamailio is installed -- presenced and Kamailio (loadgen/kamailio/
# kamailio.cfg, in memory, pinned the same way) both at KAM_USERS, and
# prints presenced's figures as multiples of Kamailio's and of the
# datagram floor (FLOOR_US of CPU per datagram pair, bench/examples/
# udp_io_cost). JSON reports land in $OUT.
#
#   bench/e2e/scale.sh [USERS] [WATCHERS] [KAM_USERS]   defaults 1000000 5 100000
#   SECONDS_CAP=10 STEADY=60 SETTLE=35 FLOOR_US=1.8 OUT=target/e2e
set -euo pipefail
cd "$(dirname "$0")/../.."
users=${1:-1000000}
watchers=${2:-5}
kam_users=${3:-100000}
cap_secs=${SECONDS_CAP:-10}
steady=${STEADY:-60}
settle=${SETTLE:-35}
floor=${FLOOR_US:-1.8}
out=${OUT:-target/e2e}
port=${PORT:-5096}
mkdir -p "$out"
cargo build --release -q -p loadgen -p presence-engine

# The node is sized for what it will hold: tables allocated at start for
# the load, and limits above everything the phases add. Sizing the tables
# for the SUBSCRIBE phases' dialogs as well (a few million more) would
# spread the load's entries over a table mostly empty, and the memory per
# subscription would count its touched pages (1,515 B instead of 857 B at
# 100k); the phases grow the tables instead (see README).
config_for() { # users
  local subs=$(($1 * watchers * 2 + 4000000))
  cat <<EOF
[limits]
subscriptions_per_shard = $subs
subscriptions_per_watcher = $((watchers * 4 + 100))
server_transactions_per_shard = $subs
[capacity]
expected_presentities = $1
expected_subscriptions = $(($1 * watchers))
[log]
level = "warn"
EOF
}

run() { # kind users
  local kind=$1 n=$2 target_port=$port
  if [ "$kind" = kamailio ]; then
    target_port=5070
    # Shared memory for n presentities and n*watchers dialogs (Kamailio's
    # presence tables live in it), private memory per worker.
    local shm=$((n * watchers * 4 / 1000 + 1024))
    taskset -c 0 kamailio -f loadgen/kamailio/kamailio.cfg -DD -E -m "$shm" -M 64 -Y "$out" >"$out/scale-$kind-$n.log" 2>&1 &
  else
    config_for "$n" >"$out/scale-$n.toml"
    taskset -c 0 target/release/presenced --config "$out/scale-$n.toml" --listen "127.0.0.1:$port" --shards 1 >"$out/scale-$kind-$n.log" 2>&1 &
  fi
  local pid=$!
  trap "kill -TERM $pid 2>/dev/null || true" EXIT
  sleep 2
  echo "== $kind, $n users x $watchers watchers (server pid $pid)" >&2
  taskset -c 1 target/release/loadgen --target "127.0.0.1:$target_port" --scenario scale --users "$n" --watchers "$watchers" --threads 1 \
    --max-outstanding 64 --setup-outstanding 64 --duration "$cap_secs" --steady "$steady" --settle "$settle" --server-pid "$pid" \
    --report "$out/scale-$kind-$n.json" >&2
  if [ "$kind" = kamailio ]; then kill -TERM "$pid"; else kill -INT "$pid"; fi
  wait "$pid" 2>/dev/null || true
  trap - EXIT
}

run presenced "$users"
reports=("$out/scale-presenced-$users.json")
if command -v kamailio >/dev/null 2>&1 && [ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/presence.so ] && [ "$kam_users" -gt 0 ]; then
  if [ "$kam_users" != "$users" ]; then
    run presenced "$kam_users"
    reports+=("$out/scale-presenced-$kam_users.json")
  fi
  run kamailio "$kam_users"
  reports+=("$out/scale-kamailio-$kam_users.json")
fi

python3 - "$floor" "${reports[@]}" <<'PY'
import json, sys
floor = float(sys.argv[1])
reports = {f: json.load(open(f)) for f in sys.argv[2:]}

def phase(r, name):
    return next((p for p in r["phases"] if p["name"] == name), None)

# Kamailio allocates its shared memory pool up front and touches pages of it
# as its tables grow, so its split between presentities and subscriptions
# says little; the whole load (start to all subscriptions loaded) per user
# compares like with like.
def per_user(r):
    at = {x["at"]: x["server"]["memory_bytes"] for x in r["readings"]}
    start, loaded = at.get("start"), at.get("subscriptions loaded")
    return (loaded - start) / r["users"] if start is not None and loaded is not None else None

def describe(f, r):
    kind = "kamailio" if "kamailio" in f else "presenced"
    print(f"\n{kind} at {r['users']:,} users x {r['watchers_per_user']} watchers ({f})")
    for s in r["load"]:
        rate = s["ok"] / s["seconds"] if s["seconds"] else 0
        print(f"  load {s['name']:10} {s['ok']:>10,} of {s['sent']:>10,} 2xx in {s['seconds']:7.1f} s ({rate:,.0f}/s)")
    mib = lambda b: b / 2**20
    for x in r["readings"]:
        print(f"  memory at {x['at']:38} {mib(x['server']['memory_bytes']):9.1f} MiB")
    bp, bs = r.get("bytes_per_presentity"), r.get("bytes_per_subscription")
    print(f"  bytes per presentity {bp:,.0f}, per subscription {bs:,.0f}" if bp and bs else "  bytes per entry: not measured")
    r["bytes_per_user"] = per_user(r)
    if r["bytes_per_user"]:
        print(f"  bytes per user with its {r['watchers_per_user']} subscriptions {r['bytes_per_user']:,.0f}")
    for p in r["phases"]:
        rep, l = p["report"], p["report"]["latency_2xx_us"]
        cpu = p.get("server_cpu_us_per_ok")
        pairs = 1 + p["notifies_per_ok"]
        floor_x = f", {cpu / (floor * pairs):.1f}x the floor of {pairs:.2f} datagram pairs" if cpu else ""
        offered = f" offered {p['offered_per_s']:,.0f}/s" if p.get("offered_per_s") else ""
        print(f"  {p['name']:26}{offered} {rep['throughput_per_s']:>9,.0f} 2xx/s  p50 {l['p50']/1000:.2f} ms  p99 {l['p99']/1000:.2f}  p999 {l['p999']/1000:.2f}"
              f"  server CPU {cpu or float('nan'):.1f} us/2xx{floor_x}  non-2xx {sum(rep['errors']['by_status'].values())}, timeouts {rep['errors']['timeout']}")
    return kind

for f, r in reports.items():
    describe(f, r)

kam = next((r for f, r in reports.items() if "kamailio" in f), None)
if kam:
    pres = next(r for f, r in reports.items() if "presenced" in f and r["users"] == kam["users"])
    print(f"\npresenced vs Kamailio at {kam['users']:,} users x {kam['watchers_per_user']} (below 1: presenced uses less)")
    for key in ("bytes_per_user",):
        if pres.get(key) and kam.get(key):
            print(f"  {key:28} {pres[key]:>9,.0f} vs {kam[key]:>9,.0f}: {pres[key] / kam[key]:.2f}x")
    for p in pres["phases"]:
        k = phase(kam, p["name"])
        if not k:
            continue
        a, b = p.get("server_cpu_us_per_ok"), k.get("server_cpu_us_per_ok")
        cpu = f"CPU/2xx {a:.1f} vs {b:.1f} us: {a / b:.2f}x" if a and b else "CPU/2xx: not measured"
        ta, tb = p["report"]["throughput_per_s"], k["report"]["throughput_per_s"]
        pa, pb = p["report"]["latency_2xx_us"]["p99"], k["report"]["latency_2xx_us"]["p99"]
        print(f"  {p['name']:26} {cpu}; 2xx/s {ta:,.0f} vs {tb:,.0f} ({ta / tb:.1f}x); p99 {pa/1000:.2f} vs {pb/1000:.2f} ms")
PY
