#!/usr/bin/env bash
# Installs the Debian packages cmcp needs, only those missing, without their
# recommends. Runs `apt-get update` once per call, and only when something is missing.
#
#   install-deps.sh run    what builds and runs the node and cmcpctl (make run)
#   install-deps.sh test   that and the test tools (make test)
#   install-deps.sh bench  that and the benchmarks' peers (make bench, make bench-json)
#
# Nothing installed starts a service: promtool (for `promtool check metrics` in the
# tests) comes out of Debian's prometheus package without installing the package,
# whose service would otherwise start a Prometheus server on :9090 on a systemd host,
# the node's own metrics port. docker.io and haproxy (the swarm test's engine and
# the stack's load balancer) are installed with their services held back.
set -euo pipefail
mode=${1:-run}
run_pkgs=(build-essential cmake pkg-config
          libev-dev libsodium-dev libnng-dev libjansson-dev libinih-dev
          libhttp-parser-dev libwslay-dev nettle-dev liblmdb-dev libedit-dev libraft-dev
          uthash-dev libjose-dev libcurl4-openssl-dev ca-certificates)
test_pkgs=(python3 git libcmocka-dev clang libclang-rt-14-dev
           wrk libsqlite3-dev nftables iproute2
           docker.io docker-compose haproxy tini python3-yaml groff-base
           openssl)
# nginx serves the static answer the HTTP benchmark compares cmcp with; installed with
# its service held back like docker.io's and haproxy's (below). json-c and cJSON are
# what bench/json_bench.c measures jansson against.
bench_pkgs=(nginx libjson-c-dev libcjson-dev)
case "$mode" in
run) pkgs=("${run_pkgs[@]}") ;;
test) pkgs=("${run_pkgs[@]}" "${test_pkgs[@]}") ;;
bench) pkgs=("${run_pkgs[@]}" "${test_pkgs[@]}" "${bench_pkgs[@]}") ;;
*)
    echo "usage: $0 run|test|bench" >&2
    exit 2
    ;;
esac
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
need_promtool=false
if [ "$mode" != run ]; then
    # Node.js and npm run the official MCP clients and the conformance suite. A
    # machine may already carry them from another source (whose nodejs package
    # bundles npm and conflicts with Debian's npm), so look for the commands.
    command -v node >/dev/null 2>&1 || missing+=(nodejs)
    command -v npm >/dev/null 2>&1 || missing+=(npm)
    command -v promtool >/dev/null 2>&1 || need_promtool=true
fi
if [ ${#missing[@]} -eq 0 ] && ! $need_promtool; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    all=("${missing[@]}")
    $need_promtool && all+=("promtool (from Debian's prometheus package)")
    echo "cmcp: missing: ${all[*]}" >&2
    echo "cmcp: run 'make deps' (or 'make deps-test') as root, or: sudo ./tools/install-deps.sh $mode" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
if [ ${#missing[@]} -gt 0 ]; then
    echo "cmcp: installing Debian packages: ${missing[*]}" >&2
    # docker.io, haproxy and nginx would start their services on install: the swarm test
    # starts a dockerd of its own (and skips while another engine runs), and the
    # stack runs HAProxy in a container. policy-rc.d tells the packages not to.
    own_policy=false
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=true
    fi
    rc=0
    apt-get install -y -q --no-install-recommends "${missing[@]}" || rc=$?
    if $own_policy; then rm -f /usr/sbin/policy-rc.d; fi
    [ $rc -eq 0 ] || exit $rc
fi
if $need_promtool; then
    # Only the promtool binary (static) out of the package, into /usr/local/bin: no
    # service, no system user, none of the web console's dependencies.
    echo "cmcp: installing promtool from Debian's prometheus package (without the server)" >&2
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    chmod 0755 "$tmp"
    # apt downloads as the _apt user where it can write.
    id _apt >/dev/null 2>&1 && chown _apt "$tmp"
    (cd "$tmp" && apt-get download -q prometheus)
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
    install -m 0755 "$tmp/x/usr/bin/promtool" /usr/local/bin/promtool
    promtool --version >&2
fi
