#!/usr/bin/env bash
# Overload control, measured: presenced with one shard pinned to CPU 0,
# busy loops sharing that core (HOGS, default 1: the shard gets half of it),
# loadgen pinned to CPU 1. For each client kind in MODES, on a fresh server:
#   1. capacity: closed-loop PUBLISH for 10 s;
#   2. warm: closed loop at capacity for WARM seconds (75), so that the
#      transactions kept for Timer J (32 s) and the tables that hold them
#      are at the steady state of the highest rate the shard can serve
#      before RSS is read: the overload phase serves no more than that, so
#      RSS that grows beyond it is overload's own (queued work). Warming
#      at a lower rate let RSS grow by the extra 32 s of Timer J that a
#      higher goodput holds (bench/examples/completed_churn.rs shows the
#      Timer J log's steady state);
#      then capacity again, closed loop for 10 s, with those transactions
#      held (goodput is shown against both);
#   3. overload: open-loop PUBLISH at 2x capacity for SECONDS (30);
#   4. recovery: open loop at 0.3x capacity for 2 s right after, then 5 s.
# Client kinds:
#   rfc7339  loadgen --overload-control: the clients ask for RFC 7339
#            loss-based feedback and hold back what the server says (as an
#            S-CSCF that implements it would); offered = sent + held back;
#   plain    clients that ignore feedback: the server sheds by itself;
#   off      plain clients and overload control off (--overload-target-ms 0);
#   floor    no presenced: loadgen's trivial responder (parse, answer 200,
#            no state) pinned and sharing its core the same way, offered
#            FLOOR_RATE PUBLISH/s (default 40000, about what presenced
#            serves there) for SECONDS: the latency the core's sharing
#            alone puts on an answer, under any target set above it.
# Prints goodput against capacity, p99 of 2xx and of 503 answers, the
# server's RSS after warming, at its peak in the 2x phase and after, and the recovery
# latency, with the issue's targets beside them. JSON reports land in $OUT,
# and the server's RSS each second from the 2x phase on in
# $OUT/overload-MODE-rss.log.
#
#   bench/e2e/overload.sh [SECONDS] [USERS]     MODES="rfc7339 plain off floor" HOGS=1 HOG=spin|duty WARM=75 SLICE_US=0
#   SLICE_US asks the scheduler for that time slice in the server's shard
#   and in the floor's responder alike ([io] sched_slice_us; 0: the
#   kernel's default). EXTRA_TOML is appended to the server's config.
#   LOG_LEVEL=info,overload=debug adds the controller, each 25 ms window, to the server log.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-30}
users=${2:-10000}
out=${OUT:-target/e2e}
port=${PORT:-5094}
mkdir -p "$out"
cargo build --release -q -p loadgen -p presence-engine

# The server asks for 8 MiB socket buffers; the kernel caps them at
# net.core.rmem_max (often 4 MiB or less), and a capped buffer overflows in
# the kernel, uncounted by the server, at the tail of every queue (measured:
# all of one run's client retransmissions were UdpRcvbufErrors). Raised for
# the run where allowed (tuning/HOST-TUNING.md), and put back after.
rmem_was=$(cat /proc/sys/net/core/rmem_max)
if [ "$rmem_was" -lt 8388608 ]; then
  if sysctl -q -w net.core.rmem_max=8388608 2>/dev/null; then
    echo "net.core.rmem_max raised from $rmem_was to 8388608 for the run"
    trap 'sysctl -q -w net.core.rmem_max='"$rmem_was" EXIT
  else
    echo "warning: net.core.rmem_max is $rmem_was and cannot be raised: the server's receive buffer is capped" >&2
  fi
fi
drops() { awk '/^Udp:/ {getline; print $6}' /proc/net/snmp; }

# Timer J keeps every transaction 32 s: at saturation that is far above
# the default transaction limit, which would answer 503 for capacity.
printf '[io]\nsched_slice_us = %d\n[limits]\nserver_transactions_per_shard = 8000000\n%b' "${SLICE_US:-0}" "${EXTRA_TOML:-}" >"$out/overload.toml"
# HOGS busy loops share CPU 0 with what is measured: with one, it gets
# half the core. Their pids land in $hogs.
# HOG=spin: a shell busy loop, which takes its half of the core in the
# kernel's ticks (4 ms at HZ=250), so that any answer may wait 4 ms;
# HOG=duty: `loadgen hog`, which spins 1 ms and sleeps 250 us and so takes
# about as much (47 % beside a busy loop, measured) in 1 ms bursts.
start_hogs() {
  hogs=""
  for _ in $(seq "${HOGS:-1}"); do
    case ${HOG:-spin} in
      spin) taskset -c 0 sh -c 'while :; do :; done' & ;;
      duty) taskset -c 0 target/release/loadgen hog --busy-us 1000 --idle-us 250 & ;;
      *) echo "unknown HOG ${HOG}" >&2; exit 2 ;;
    esac
    hogs="$hogs $!"
  done
}
j() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

one_run() {
  local mode=$1 flags="" lgflags=""
  case $mode in
    rfc7339) lgflags="--overload-control" ;;
    plain) ;;
    off) flags="--overload-target-ms 0" ;;
    *) echo "unknown mode $mode" >&2; return 1 ;;
  esac
  local lg="taskset -c 1 target/release/loadgen --target 127.0.0.1:$port --scenario publish --users $users --threads 1 --quiet"
  taskset -c 0 target/release/presenced --config "$out/overload.toml" --listen "127.0.0.1:$port" --shards 1 --log-level "${LOG_LEVEL:-info}" $flags ${PRESENCED_FLAGS:-} >"$out/overload-$mode-presenced.log" 2>&1 &
  local pid=$! hogs
  start_hogs
  trap "kill $hogs 2>/dev/null; kill -INT $pid 2>/dev/null || true; sysctl -q -w net.core.rmem_max=$rmem_was 2>/dev/null || true" EXIT
  sleep 1
  rss() { awk '/VmRSS/ {print int($2/1024)}' "/proc/$pid/status"; }
  # The server's CPU time (utime+stime) in clock ticks, and its share of
  # a core since CPU time $1 at wall time $2.
  # The server's user and system CPU time in clock ticks; `cpu_use` gives,
  # since "$1" (a `cpu` reading) at wall time $2, its share of a core and
  # its CPU per answer (2xx and errors) in report $3, split user + system.
  cpu() { awk '{print $14, $15}' "/proc/$pid/stat"; }
  # Time the hypervisor took from CPU 0 (USER_HZ ticks of 10 ms): on a
  # shared VM it is capacity the shard lost that no setting here gave.
  steal() { awk '/^cpu0 / {print $9}' /proc/stat; }
  cpu_use() {
    python3 - "$1" "$(cpu)" "$2" "$(date +%s.%N)" "$(getconf CLK_TCK)" "$3" <<'PY'
import json, sys
u0, s0 = map(int, sys.argv[1].split()); u1, s1 = map(int, sys.argv[2].split())
wall, hz = float(sys.argv[4]) - float(sys.argv[3]), int(sys.argv[5])
r = json.load(open(sys.argv[6]))
answers = max(1, r['ok'] + sum(r['errors']['by_status'].values()))
u, s = (u1 - u0) / hz, (s1 - s0) / hz
print(f"{(u + s) / wall:.0%} of a core, {(u + s) / answers * 1e6:.1f} us per answer ({u / answers * 1e6:.1f} user + {s / answers * 1e6:.1f} system)")
PY
  }

  local c0 t0; c0=$(cpu); t0=$(date +%s.%N)
  $lg --max-outstanding 64 --duration 10 --report "$out/overload-$mode-capacity.json" >/dev/null
  local cpu_cap; cpu_cap=$(cpu_use "$c0" "$t0" "$out/overload-$mode-capacity.json")
  local cap; cap=$(j "$out/overload-$mode-capacity.json" "round(r['throughput_per_s'])")
  $lg --max-outstanding 64 --duration "${WARM:-75}" --report "$out/overload-$mode-warm.json" >/dev/null
  # Capacity again, now that the server holds Timer J's transactions as it
  # will under overload, so goodput is also compared in the same state.
  $lg --max-outstanding 64 --duration 10 --report "$out/overload-$mode-capacity-warm.json" >/dev/null
  local capw; capw=$(j "$out/overload-$mode-capacity-warm.json" "round(r['throughput_per_s'])")
  local rss_before; rss_before=$(rss)
  local rate=$((cap * 2))
  rm -f "$out/overload-rss-peak" "$out/overload-$mode-rss.log"
  ( peak=0; while kill -0 $pid 2>/dev/null; do r=$(rss); echo "$(date +%s) $r" >>"$out/overload-$mode-rss.log"; [ "$r" -gt "$peak" ] && peak=$r && echo "$peak" >"$out/overload-rss-peak"; sleep 1; done ) &
  local sampler=$! drops_before; drops_before=$(drops)
  c0=$(cpu); t0=$(date +%s.%N)
  local steal0; steal0=$(steal)
  $lg --rate "$rate" --ramp 1 --duration "$secs" $lgflags --report "$out/overload-$mode-2x.json" >/dev/null
  local cpu_2x; cpu_2x=$(cpu_use "$c0" "$t0" "$out/overload-$mode-2x.json")
  local steal_2x=$(( ($(steal) - steal0) * 10 ))
  # The peak of the overload phase itself: the recovery phases are new
  # loadgen processes, new user agents whose first PUBLISH each adds a
  # publication beside the last run's (held until they expire).
  local peak; peak=$(cat "$out/overload-rss-peak" 2>/dev/null || rss)
  $lg --rate $((cap * 3 / 10)) --ramp 0 --duration 2 $lgflags --report "$out/overload-$mode-recovery-2s.json" >/dev/null
  $lg --rate $((cap * 3 / 10)) --ramp 0 --duration 5 $lgflags --report "$out/overload-$mode-after.json" >/dev/null
  local drops_2x=$(( $(drops) - drops_before ))
  kill $sampler 2>/dev/null || true
  local rss_after; rss_after=$(rss)

  local f="$out/overload-$mode-2x.json"
  echo "== $mode clients: capacity (closed loop, shard sharing its core with ${HOGS:-1} ${HOG:-spin} loop(s)) $cap PUBLISH/s"
  echo "  offered $rate/s for $secs s: sent $(j "$f" "r['sent']"), held back at the client $(j "$f" "r['throttled']")"
  echo "  goodput $(j "$f" "round(r['throughput_per_s'])")/s = $(j "$f" "f\"{r['throughput_per_s']/$cap:.0%}\"") of capacity (target >= 90 %); $(j "$f" "f\"{r['throughput_per_s']/$capw:.0%}\"") of the $capw/s measured closed-loop after warming"
  echo "  2xx p50 $(j "$f" "r['latency_2xx_us']['p50']/1000") ms, p99 $(j "$f" "r['latency_2xx_us']['p99']/1000") ms (target <= 50)"
  echo "  503s $(j "$f" "r['errors']['by_status'].get('503', 0)"), p99 $(j "$f" "r['latency_503_us']['p99']/1000") ms (target <= 5)"
  echo "  server CPU while measuring capacity: $cpu_cap"
  echo "  server CPU at 2x: $cpu_2x (under half a core: the shard idled, its clients held back too much); CPU 0 steal ${steal_2x} ms"
  echo "  timeouts $(j "$f" "r['errors']['timeout']"), retransmissions $(j "$f" "r['retransmissions']"), datagrams the kernel dropped at full UDP receive buffers $drops_2x"
  echo "  server RSS MiB: warm $rss_before, peak at 2x $peak (target: flat), after the recovery phases $rss_after"
  echo "  recovery at 0.3x: first 2 s 2xx p99 $(j "$out/overload-$mode-recovery-2s.json" "r['latency_2xx_us']['p99']/1000") ms, next 5 s p99 $(j "$out/overload-$mode-after.json" "r['latency_2xx_us']['p99']/1000") ms"
  kill $hogs 2>/dev/null || true
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  trap 'sysctl -q -w net.core.rmem_max='"$rmem_was"' 2>/dev/null || true' EXIT
  echo "  $(grep "shard stopped" "$out/overload-$mode-presenced.log" | tail -1)"
}

floor_run() {
  local rate=${FLOOR_RATE:-40000} f="$out/overload-floor.json"
  taskset -c 0 target/release/loadgen responder --listen "127.0.0.1:$port" --sched-slice-us "${SLICE_US:-0}" 2>/dev/null &
  local pid=$! hogs
  start_hogs
  trap "kill $hogs $pid 2>/dev/null; sysctl -q -w net.core.rmem_max=$rmem_was 2>/dev/null || true" EXIT
  sleep 1
  taskset -c 1 target/release/loadgen --target "127.0.0.1:$port" --scenario publish --users "$users" --threads 1 --quiet \
    --rate "$rate" --ramp 1 --duration "$secs" --report "$f" >/dev/null
  echo "== floor: trivial responder sharing its core with ${HOGS:-1} ${HOG:-spin} loop(s), $rate PUBLISH/s offered for $secs s"
  echo "  answered $(j "$f" "round(r['throughput_per_s'])")/s; 2xx p50 $(j "$f" "r['latency_2xx_us']['p50']/1000") ms, p99 $(j "$f" "r['latency_2xx_us']['p99']/1000") ms, p999 $(j "$f" "r['latency_2xx_us']['p999']/1000") ms, max $(j "$f" "r['latency_2xx_us']['max']/1000") ms"
  kill $hogs "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  trap 'sysctl -q -w net.core.rmem_max='"$rmem_was"' 2>/dev/null || true' EXIT
}

for mode in ${MODES:-rfc7339 plain}; do
  if [ "$mode" = floor ]; then floor_run; else one_run "$mode"; fi
done
