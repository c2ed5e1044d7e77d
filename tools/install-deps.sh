#!/usr/bin/env bash
# Installs the Debian packages cmcp builds and tests with, only those missing.
# Runs `apt-get update` once per call, and only when something is missing.
set -euo pipefail
pkgs=(build-essential cmake pkg-config git
      libev-dev libsodium-dev libnng-dev libjansson-dev libinih-dev
      libhttp-parser-dev libwslay-dev nettle-dev liblmdb-dev libedit-dev libraft-dev
      libcmocka-dev uthash-dev clang libclang-rt-14-dev python3
      wrk prometheus libsqlite3-dev nftables iproute2)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# Node.js and npm run the official MCP clients and the conformance suite. A
# machine may already carry them from another source (whose nodejs package
# bundles npm and conflicts with Debian's npm), so look for the commands.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "cmcp: missing Debian packages: ${missing[*]}" >&2
    echo "cmcp: run 'make deps' as root (or: sudo apt-get install -y ${missing[*]})" >&2
    exit 1
fi
echo "cmcp: installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q "${missing[@]}"
