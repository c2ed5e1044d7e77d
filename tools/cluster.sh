#!/usr/bin/env bash
# Several cmcp nodes on one host, each from configs/cluster-nodeN.conf, in var/cluster/node-N,
# sharing one cookie (var/cluster/cookie). docs/cluster.md shows it in use.
#
#   tools/cluster.sh start [N...]     start nodes (default 1 2 3) in the background
#   tools/cluster.sh stop [N...]      stop nodes (SIGTERM to the root; default: all running)
#   tools/cluster.sh status           one line a node: id, root pid, endpoints, up or not
#   tools/cluster.sh kill N           SIGKILL of node N's root (its children follow it)
#   tools/cluster.sh restart N        stop (or find dead) and start node N again
#
# CMCPD (default build/bin/cmcpd) names the binary. Run from the source tree.
set -euo pipefail
cd "$(dirname "$0")/.."
CMCPD=${CMCPD:-build/bin/cmcpd}
BASE=var/cluster

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

conf() { echo "configs/cluster-node$1.conf"; }
dir() { echo "$BASE/node-$1"; }
pidof_node() {
    local f; f="$(dir "$1")/run/cmcpd.pid"
    [ -f "$f" ] || return 1
    local p; p=$(head -n1 "$f" 2>/dev/null || true)
    [ -n "$p" ] && kill -0 "$p" 2>/dev/null && echo "$p"
}
known() { [ -f "$(conf "$1")" ] || { echo "cluster.sh: no $(conf "$1") (nodes are 1-4)" >&2; exit 2; }; }

cookie() {
    mkdir -p "$BASE"
    if [ ! -f "$BASE/cookie" ]; then
        umask 077
        head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$BASE/cookie"
    fi
}

start() {
    known "$1"
    [ -x "$CMCPD" ] || { echo "cluster.sh: no $CMCPD (make build first)" >&2; exit 2; }
    if p=$(pidof_node "$1"); then echo "node $1 is running (root pid $p)"; return; fi
    cookie
    mkdir -p "$(dir "$1")"
    nohup "$CMCPD" -c "$(conf "$1")" > "$(dir "$1")/out.log" 2> "$(dir "$1")/node.log" < /dev/null &
    local pid=$!
    for _ in $(seq 1 100); do
        [ -f "$(dir "$1")/run/cmcpd.pid" ] && [ "$(head -n1 "$(dir "$1")/run/cmcpd.pid")" = "$pid" ] && break
        kill -0 "$pid" 2>/dev/null || { echo "node $1 failed to start:" >&2; tail -n 5 "$(dir "$1")/node.log" >&2; exit 1; }
        sleep 0.05
    done
    echo "node $1 started (root pid $pid, log $(dir "$1")/node.log)"
}

stop() {
    local p
    if ! p=$(pidof_node "$1"); then echo "node $1 is not running"; return; fi
    kill -TERM "$p"
    for _ in $(seq 1 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    if kill -0 "$p" 2>/dev/null; then echo "node $1 (pid $p) did not stop in 10 s" >&2; return 1; fi
    echo "node $1 stopped"
}

status() {
    for f in configs/cluster-node*.conf; do
        local n=${f#configs/cluster-node}; n=${n%.conf}
        local o=$(( (n - 1) * 10 )) p state
        if p=$(pidof_node "$n"); then state=up; else p=-; state=down; fi
        printf 'node-%s %-5s root %-7s http 127.0.0.1:%d tcp 127.0.0.1:%d metrics 127.0.0.1:%d admin tcp://127.0.0.1:%d peers 127.0.0.1:%d\n' \
            "$n" "$state" "$p" $((8080 + o)) $((8081 + o)) $((9090 + o)) $((9300 + o)) $((7400 + o))
    done
}

cmd=${1:-}; [ -n "$cmd" ] || usage
shift || true
case "$cmd" in
start) [ $# -gt 0 ] || set -- 1 2 3; for n in "$@"; do start "$n"; done ;;
stop)
    if [ $# -eq 0 ]; then for f in configs/cluster-node*.conf; do n=${f#configs/cluster-node}; n=${n%.conf}; pidof_node "$n" >/dev/null && stop "$n"; done; true
    else for n in "$@"; do stop "$n"; done; fi ;;
status) status ;;
kill) [ $# -eq 1 ] || usage; known "$1"
    if p=$(pidof_node "$1"); then kill -KILL "$p"; echo "node $1 killed (root pid $p)"; else echo "node $1 is not running"; fi ;;
restart) [ $# -eq 1 ] || usage; stop "$1" || true; start "$1" ;;
-h|--help|help) usage 0 ;;
*) echo "cluster.sh: unknown command '$cmd'" >&2; usage ;;
esac
