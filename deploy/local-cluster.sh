#!/usr/bin/env bash
# A presenced cluster on one machine (issue 20):
#
#   deploy/local-cluster.sh up N       N presenced nodes, 3 nats-servers, the Kamailio front
#   deploy/local-cluster.sh kill I     kill -9 node I
#   deploy/local-cluster.sh restart I  start node I again (after kill, or to restart it);
#                                      I = N+1 adds a node (and tells the front)
#   deploy/local-cluster.sh down       stop everything and remove it
#
# Each node and each nats-server runs in a network namespace of its own
# (prs-n1.., prs-q1..3) with an address on a bridge (prsbr0, 10.77.0.0/24:
# the host 10.77.0.1, node I 10.77.0.(10+I), nats-server J 10.77.0.(100+J)).
# The three nats-servers form one JetStream cluster; the lease bucket and
# the partition logs have 3 replicas. The Kamailio front listens on
# 127.0.0.1:5080 in the host's namespace (deploy/kamailio-front.cfg), so a
# client on the host's loopback needs no route to a node. The nodes trust
# the front (its Record-Route carries their NOTIFYs).
#
# Needs root (namespaces), iproute2, nats-server, kamailio; builds
# presenced in release mode unless PRESENCED names a binary. State and logs
# go to CLUSTER_DIR (default /tmp/presence-cluster). DURABILITY sets the
# nodes' `[cluster] durability` (default "replicated": a change is answered
# once its partition's log has it; "local" answers at once). WARM_MB sets
# `[cluster] warm_replica_mb` (default 1024; 0: no warm replicas).
set -euo pipefail
cd "$(dirname "$0")/.."
# Absolute: Kamailio reads its dispatcher list after changing directory.
dir=$(realpath -m "${CLUSTER_DIR:-/tmp/presence-cluster}")
br=prsbr0
durability=${DURABILITY:-replicated}
warm_mb=${WARM_MB:-1024}
net=10.77.0
front_ip=$net.1

die() { echo "local-cluster: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || die "$1 not found (Debian: $2)"; }
node_ip() { echo "$net.$((10 + $1))"; }
nats_ip() { echo "$net.$((100 + $1))"; }
nats_urls() { echo "nats://$(nats_ip 1):4222,nats://$(nats_ip 2):4222,nats://$(nats_ip 3):4222"; }

# A namespace with one veth on the bridge.
namespace() { # name ip
    ip netns add "$1"
    ip link add "v$1" type veth peer name eth0 netns "$1"
    ip link set "v$1" master "$br" up
    ip -n "$1" addr add "$2/24" dev eth0
    ip -n "$1" link set lo up
    ip -n "$1" link set eth0 up
    ip -n "$1" route add default via "$front_ip"
}

start_node() { # i
    local i=$1
    [ -e "$dir/node$i.pid" ] && kill -0 "$(cat "$dir/node$i.pid")" 2>/dev/null && die "node $i is running"
    cat >"$dir/node$i.toml" <<TOML
listen = "$(node_ip "$i"):5060"
shards = 1
[security]
trusted = ["$front_ip"]
[cluster]
node = $i
nats = "$(nats_urls)"
replicas = 3
durability = "$durability"
warm_replica_mb = $warm_mb
TOML
    ip netns exec "prs-n$i" "$bin" --config "$dir/node$i.toml" --log-format json >>"$dir/node$i.log" 2>&1 &
    echo $! >"$dir/node$i.pid"
}

wait_port() { # ns ip port
    for _ in $(seq 100); do
        ip netns exec "$1" bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null && return 0
        sleep 0.1
    done
    die "nothing listens on $2:$3 in $1"
}

up() {
    local n=$1
    [[ $n =~ ^[0-9]+$ && $n -ge 1 && $n -le 9 ]] || die "up N: N from 1 to 9"
    need ip iproute2; need nats-server nats-server; need kamailio kamailio
    [ "$(id -u)" = 0 ] || die "needs root for network namespaces"
    ip link show "$br" >/dev/null 2>&1 && die "a cluster is up already ($br exists): down first"
    if [ -n "${PRESENCED:-}" ]; then bin=$PRESENCED; else
        cargo build --release -q -p presence-engine; bin=$PWD/target/release/presenced
    fi
    rm -rf "$dir" && mkdir -p "$dir"
    echo "$bin" >"$dir/bin"
    echo "$n" >"$dir/nodes"
    ip link add "$br" type bridge
    ip addr add "$front_ip/24" dev "$br"
    ip link set "$br" up
    for j in 1 2 3; do
        namespace "prs-q$j" "$(nats_ip "$j")"
        ip netns exec "prs-q$j" nats-server -js -n "q$j" -a "$(nats_ip "$j")" -p 4222 -sd "$dir/nats$j" \
            --cluster_name prs --cluster "nats://$(nats_ip "$j"):6222" \
            --routes "nats://$(nats_ip 1):6222,nats://$(nats_ip 2):6222,nats://$(nats_ip 3):6222" >"$dir/nats$j.log" 2>&1 &
        echo $! >"$dir/nats$j.pid"
    done
    for j in 1 2 3; do wait_port "prs-q$j" "$(nats_ip "$j")" 4222; done
    : >"$dir/dispatcher.list"
    for i in $(seq "$n"); do
        namespace "prs-n$i" "$(node_ip "$i")"
        start_node "$i"
        echo "1 sip:$(node_ip "$i"):5060" >>"$dir/dispatcher.list"
    done
    sed -e "s|FRONT_IP|$front_ip|g" -e "s|DISPATCHER_LIST|$dir/dispatcher.list|g" -e "s|CTL_SOCKET|$dir/kamailio.ctl|g" \
        deploy/kamailio-front.cfg >"$dir/kamailio.cfg"
    # 1 GB of shared memory: tm keeps every transaction and its message
    # there, and the default 64 MB runs out at a few thousand PUBLISH/s.
    kamailio -f "$dir/kamailio.cfg" -DD -E -m 1024 -M 32 >"$dir/front.log" 2>&1 &
    echo $! >"$dir/front.pid"
    sleep 1
    kill -0 "$(cat "$dir/front.pid")" 2>/dev/null || die "the Kamailio front did not start: see $dir/front.log"
    echo "cluster up: $n nodes, front on 127.0.0.1:5080, logs in $dir"
}

node_arg() { # i [room for one more]
    [ -d "$dir" ] || die "no cluster is up"
    local top=$(($(cat "$dir/nodes") + ${2:-0}))
    [[ ${1:-} =~ ^[0-9]+$ && $1 -ge 1 && $1 -le $top && $1 -le 9 ]] || die "node from 1 to $top"
    bin=$(cat "$dir/bin")
}

# Node N+1: its namespace, the node, and the front's dispatcher list
# reloaded (the front spreads load; the partitions move by their leases).
add_node() { # i
    local i=$1
    namespace "prs-n$i" "$(node_ip "$i")"
    echo "$i" >"$dir/nodes"
    start_node "$i"
    echo "1 sip:$(node_ip "$i"):5060" >>"$dir/dispatcher.list"
    kamcmd -s "unixs:$dir/kamailio.ctl" dispatcher.reload >/dev/null || die "the front did not reload its dispatcher list"
    echo "node $i added"
}

down() {
    [ -d "$dir" ] && for f in "$dir"/*.pid; do [ -e "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true; done
    # Kamailio's workers outlive its main process: end them by their config.
    pkill -9 -f "kamailio -f $dir/kamailio.cfg" 2>/dev/null || true
    for ns in $(ip netns list 2>/dev/null | awk '/^prs-/ {print $1}'); do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip link del "v$ns" 2>/dev/null || true
        ip netns del "$ns"
    done
    ip link del "$br" 2>/dev/null || true
    rm -rf "$dir"
    echo "cluster down"
}

case "${1:-}" in
    up) up "${2:-3}" ;;
    kill) node_arg "${2:-}"; kill -9 "$(cat "$dir/node$2.pid")" 2>/dev/null || true; echo "node $2 killed" ;;
    restart)
        node_arg "${2:-}" 1
        if [ "$2" -gt "$(cat "$dir/nodes")" ]; then add_node "$2"; exit 0; fi
        kill -TERM "$(cat "$dir/node$2.pid")" 2>/dev/null && sleep 1 || true
        start_node "$2"; echo "node $2 started" ;;
    down) down ;;
    *) die "usage: $0 up N | kill I | restart I | down" ;;
esac
