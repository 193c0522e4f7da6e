#!/usr/bin/env bash
# Durable state, measured (issue 19). presenced with one shard pinned to
# CPU 0, the load pinned to CPU 1, journals on the disk under $OUT.
#   1. throughput: closed-loop PUBLISH (loadgen --scenario publish: new
#      publications, modifies and refreshes) for SECONDS against a fresh
#      server in memory, then with --fsync never, interval and always, each
#      as a ratio of the in-memory run (targets: interval >= 0.85, always
#      >= 0.5); server CPU per PUBLISH from /proc/PID/stat; journal bytes
#      per acknowledged PUBLISH (the journal files' sizes after a clean
#      stop, compaction kept off).
#   2. loss after kill -9 with fsync=interval: PUBLISHes of new
#      presentities at LOSS_RATE/s, SIGKILL after 3 s; each acknowledged
#      one is looked for in `presenced dump`. Reported as a count, and as
#      milliseconds of acknowledged load, beside fsync_interval_ms.
#   3. restart time: a data directory holding PRESENTITIES presentities
#      with a publication each and SUBSCRIPTIONS watchers
#      (bench/examples/journal_fill.rs), then exec to the first answered
#      OPTIONS, with the server's RSS after, and exec to the moment every
#      restored subscription has asked its presentity (they do, 1,000 per
#      tick per shard, while the server serves); SHARDS shards (default
#      2: every core restores its part at once, as a node would run).
#
#   bench/e2e/durability.sh [SECONDS] [PRESENTITIES] [SUBSCRIPTIONS]
#   defaults 10, 1000000, 5000000; OUTSTANDING=256 (closed loop),
#   LOSS_RATE=20000, SHARDS=2 for the restart, PARTS="throughput loss restart"
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
presentities=${2:-1000000}
subscriptions=${3:-5000000}
out=${OUT:-target/e2e}
port=${PORT:-5096}
outstanding=${OUTSTANDING:-256}
mkdir -p "$out"
cargo build --release -q -p loadgen -p presence-engine
cargo build --release -q -p bench --example journal_fill --example acked_publish
data="$out/durability-data"
j() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
pid=""
trap '[ -n "$pid" ] && kill -9 $pid 2>/dev/null; true' EXIT

start_server() { # flags... (SERVER_CPUS, SERVER_SHARDS: where and how many)
  taskset -c "${SERVER_CPUS:-0}" target/release/presenced --listen "127.0.0.1:$port" --shards "${SERVER_SHARDS:-1}" --log-level info --log-format json "$@" >"$out/durability-presenced.log" 2>&1 &
  pid=$!
  for _ in $(seq 200); do grep -q "listening" "$out/durability-presenced.log" 2>/dev/null && return; sleep 0.05; done
  echo "presenced did not start: $(tail -5 "$out/durability-presenced.log")" >&2
  exit 1
}

throughput() {
  local mode base="" cfg="$out/durability.toml"
  # Compaction off for the byte count: every record stays in its file.
  printf '[storage]\ncompact_after_bytes = 1099511627776\n' >"$cfg"
  printf '%-9s %12s %8s %16s %22s\n' mode PUBLISH/s ratio "CPU/PUBLISH" "journal bytes/PUBLISH"
  for mode in memory never interval always; do
    rm -rf "$data"
    if [ "$mode" = memory ]; then start_server --config "$cfg"; else start_server --config "$cfg" --data-dir "$data" --fsync "$mode"; fi
    local c0; c0=$(cpu_ticks $pid)
    taskset -c 1 target/release/loadgen --target "127.0.0.1:$port" --scenario publish --users 100000 --threads 1 --quiet \
      --max-outstanding "$outstanding" --duration "$secs" --report "$out/durability-$mode.json" >/dev/null
    local c1; c1=$(cpu_ticks $pid)
    kill -INT $pid; wait $pid 2>/dev/null || true; pid=""
    local rate ok; rate=$(j "$out/durability-$mode.json" "round(r['throughput_per_s'])"); ok=$(j "$out/durability-$mode.json" "r['ok']")
    [ -z "$base" ] && base=$rate
    local bytes="-"
    [ "$mode" != memory ] && bytes=$(( $(cat "$data"/gen-*/*.journal | wc -c) / (ok > 0 ? ok : 1) ))
    printf '%-9s %12s %8s %13s us %22s\n' "$mode" "$rate" "$(python3 -c "print(f'{$rate/$base:.2f}')")" \
      "$(python3 -c "print(f'{($c1-$c0)/$(getconf CLK_TCK)/max(1,$ok)*1e6:.1f}')")" "$bytes"
  done
  echo "(targets: interval >= 0.85, always >= 0.5 of memory; $outstanding PUBLISHes outstanding, $secs s each)"
}

loss() {
  local rate=${LOSS_RATE:-20000}
  rm -rf "$data"
  start_server --data-dir "$data" --fsync interval
  target/release/examples/acked_publish "127.0.0.1:$port" "$rate" 6 "$out/durability-acked.txt" 2>"$out/durability-acked.log" &
  local client=$!
  sleep 3
  kill -9 $pid; wait $pid 2>/dev/null || true; pid=""
  wait $client
  target/release/presenced dump --data-dir "$data" >"$out/durability-dump.json"
  python3 - "$out/durability-acked.txt" "$out/durability-dump.json" "$rate" <<'PY'
import json, sys
acked = [l.strip() for l in open(sys.argv[1]) if l.strip()]
held = {p["aor"] for p in json.load(open(sys.argv[2]))["presentities"] if p["publications"]}
lost = [a for a in acked if a not in held]
rate = int(sys.argv[3])
print(f"kill -9 with fsync=interval (10 ms) at {rate} PUBLISH/s: {len(acked)} acknowledged, {len(lost)} lost "
      f"= {len(lost) / rate * 1000:.1f} ms of acknowledged load")
PY
}

restart() {
  rm -rf "$data"
  local shards=${SHARDS:-2}
  target/release/examples/journal_fill "$data" "$presentities" "$subscriptions" "$shards"
  sync
  local jsize; jsize=$(du -sh "$data/gen-1" | cut -f1)
  local t0; t0=$(date +%s%N)
  SERVER_CPUS=0-1 SERVER_SHARDS=$shards start_server --data-dir "$data"
  python3 - "$port" "$t0" <<'PY'
import socket, sys, time
port, t0 = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
s.settimeout(0.005)
me = s.getsockname()
n = 0
while True:
    n += 1
    req = (f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {me[0]}:{me[1]};branch=z9hG4bKo{n}\r\nMax-Forwards: 70\r\n"
           f"From: <sip:probe@example.com>;tag=o\r\nTo: <sip:127.0.0.1>\r\nCall-ID: o{n}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n")
    s.sendto(req.encode(), ("127.0.0.1", port))
    try:
        data = s.recv(65536)
        if data.startswith(b"SIP/2.0 "):
            break
    except socket.timeout:
        pass
print(f"exec to first answered OPTIONS: {(time.time_ns() - t0) / 1e6:.0f} ms")
PY
  local rss; rss=$(awk '/VmRSS/ {print int($2/1024)}' /proc/$pid/status)
  # PUBLISH latency while the restored subscriptions ask (8 s from the
  # first answer), and again once they all have (new presentities each
  # time, so that both runs do the same work).
  local rate=${ASK_LOAD_RATE:-10000}
  ask_load() {
    target/release/loadgen --target "127.0.0.1:$port" --scenario publish --users 100000 --threads 1 --quiet \
      --domain "$1.example.com" --rate "$rate" --duration 8 --report "$out/durability-$1.json" >/dev/null
  }
  ask_load during-asks
  # The restored subscriptions ask their presentities while the server
  # serves; each shard logs when its last one has asked.
  python3 - "$out/durability-presenced.log" "$t0" "$shards" <<'PY'
import datetime, json, sys, time
log, t0, shards = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
deadline = time.time() + 300
while True:
    done = []
    for line in open(log):
        if "every restored subscription has asked" in line:
            ts = json.loads(line)["timestamp"]
            done.append(datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp())
    if len(done) >= shards or time.time() > deadline:
        break
    time.sleep(0.2)
if len(done) >= shards:
    print(f"exec to every restored subscription asked: {(max(done) * 1e9 - t0) / 1e6:.0f} ms")
else:
    print(f"only {len(done)} of {shards} shards finished asking within 300 s")
PY
  ask_load after-asks
  for phase in during-asks after-asks; do
    j "$out/durability-$phase.json" "f\"PUBLISH at $rate/s $phase: {r['ok']} ok, 2xx p50 {r['latency_2xx_us']['p50']/1000:.2f} ms, p99 {r['latency_2xx_us']['p99']/1000:.2f} ms, p999 {r['latency_2xx_us']['p999']/1000:.2f} ms\""
  done
  echo "  ($presentities presentities, $subscriptions subscriptions on $shards shards; journal $jsize; RSS $rss MiB at the first answer, $(awk '/VmRSS/ {print int($2/1024)}' /proc/$pid/status) MiB once all asked)"
  grep -E '"message":"(journals read|journal opened)"' "$out/durability-presenced.log" | python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    keep = ("message", "shard", "files", "bytes", "records", "ms", "restored", "records_ms", "rewatch_pending")
    print("  " + " ".join(f"{k}={r[k]}" for k in keep if k in r))' || true
  kill -INT $pid; wait $pid 2>/dev/null || true; pid=""
}

for part in ${PARTS:-throughput loss restart}; do
  echo "== $part"
  $part
done
