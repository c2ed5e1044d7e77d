#!/usr/bin/env bash
# Builds the cmcp runtime image (containers/Dockerfile) from binaries built on
# this machine, and, with --haproxy, the HAProxy front image the stack uses.
#
#   containers/build-image.sh [--bin-dir DIR] [--tag TAG] [--base scratch|IMAGE]
#                             [--haproxy TAG] [--docker CMD] [--no-jwks-url]
#
# --no-jwks-url leaves out libcurl, what it loads and the CA bundle (about 10 MiB of
# the image's 23): [auth] jwks_url then stops the node at start, saying so.
#
# The build context is staged in a temporary directory: the binaries (stripped),
# exactly the shared libraries ldd says they load, the loader, and the image's
# configuration (containers/cmcp.conf). No registry is needed for the default
# base (scratch); --base debian:12-slim puts the same files over Debian's base
# where a registry is reachable. docs/deployment.md has the details.
set -euo pipefail
# set -e ends the script at a failed command without a word: name it.
trap 'echo "build-image.sh: line $LINENO: \"$BASH_COMMAND\" failed (exit $?)" >&2' ERR

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
bin_dir="$root/build/bin"
tag="cmcp:local"
base="scratch"
with_curl=true
haproxy_tag=""
docker="${DOCKER:-docker}"

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --base) base=$2; shift 2 ;;
    --haproxy) haproxy_tag=$2; shift 2 ;;
    --docker) docker=$2; shift 2 ;;
    --no-jwks-url) with_curl=false; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "build-image.sh: unknown argument '$1' (--help lists them)" >&2; exit 2 ;;
    esac
done

for b in cmcpd cmcpctl; do
    if [ ! -x "$bin_dir/$b" ]; then
        echo "build-image.sh: $bin_dir/$b is missing: build first (make build-node)," \
            "or give --bin-dir" >&2
        exit 2
    fi
done
tini=$(command -v tini-static || command -v tini || true)
if [ -z "$tini" ]; then
    echo "build-image.sh: tini is missing (apt-get install tini)" >&2
    exit 2
fi

stage=$(mktemp -d /tmp/cmcp-image.XXXXXX)
trap 'rm -rf "$stage"' EXIT

# Copies each binary's shared libraries (and the loader) into $1, at the paths
# the loader looks them up at.
copy_libs() {
    local dest=$1; shift
    local lib f dyn=()
    for f in "$@"; do # a static binary (tini-static) needs nothing
        if ldd "$f" >/dev/null 2>&1; then dyn+=("$f"); fi
    done
    [ ${#dyn[@]} -gt 0 ] || return 0
    for lib in $(ldd "${dyn[@]}" | awk '/=> \//{print $3} /^\t\/[^ ]*ld-linux/{print $1}' | sort -u); do
        mkdir -p "$dest$(dirname "$lib")"
        cp -L "$lib" "$dest$lib"
        # the loader is found at the path in the binary's interpreter field,
        # which may be a symlink's path (/lib64/ld-linux-x86-64.so.2)
    done
}

# Copies libraries a binary opens with dlopen (found through ldconfig's cache).
copy_dlopened() {
    local dest=$1; shift
    local name path
    for name in "$@"; do
        # awk reads the cache to its end: leaving early would kill ldconfig with
        # SIGPIPE now and then, and pipefail would end this script without a word.
        path=$(ldconfig -p | awk -v n="$name" '$1 == n && p == "" && /x86-64|x32|64bit/ {p = $NF}
            $1 == n && any == "" {any = $NF} END {print (p != "" ? p : any)}')
        if [ -z "$path" ]; then
            echo "build-image.sh: $name is not installed" >&2
            exit 2
        fi
        mkdir -p "$dest$(dirname "$path")"
        cp -L "$path" "$dest$path"
        copy_libs "$dest" "$path" # and what it loads in turn
    done
}

# ---- the cmcp image ----
mkdir -p "$stage/cmcp/app/usr/bin" "$stage/cmcp/app/etc/cmcp" "$stage/cmcp/libs" \
    "$stage/cmcp/data/data" "$stage/cmcp/data/run"
for b in cmcpd cmcpctl; do
    strip --strip-unneeded -o "$stage/cmcp/app/usr/bin/$b" "$bin_dir/$b"
done
cp "$tini" "$stage/cmcp/app/usr/bin/tini"
cp "$here/cmcp.conf" "$stage/cmcp/app/etc/cmcp/cmcp.conf"
copy_libs "$stage/cmcp/libs" "$bin_dir/cmcpd" "$bin_dir/cmcpctl" "$tini"
# What is loaded at run time rather than at start, so ldd does not list it:
# libgcc_s unwinds a thread that ends by pthread_exit (getaddrinfo_a's resolver
# threads, nng's); libjose (with the OpenSSL it uses) checks bearer tokens when
# [auth] is on (workers/oauth/token.c loads it then); libcurl fetches the issuer's
# keys when [auth] jwks_url is set (workers/listener/jwks.c), verifying the issuer's
# certificate against Debian's CA bundle, copied where libcurl looks for it.
copy_dlopened "$stage/cmcp/libs" libgcc_s.so.1 libjose.so.0
if $with_curl; then
    copy_dlopened "$stage/cmcp/libs" libcurl.so.4
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        mkdir -p "$stage/cmcp/libs/etc/ssl/certs"
        cp /etc/ssl/certs/ca-certificates.crt "$stage/cmcp/libs/etc/ssl/certs/"
    else
        echo "build-image.sh: /etc/ssl/certs/ca-certificates.crt is missing (Debian's" \
            "ca-certificates): [auth] jwks_url over https will not verify in the image" >&2
    fi
fi
# getaddrinfo: glibc's own files and DNS lookups (no NSS modules to load) read these.
mkdir -p "$stage/cmcp/libs/etc"
printf 'hosts: files dns\n' >"$stage/cmcp/libs/etc/nsswitch.conf"
cp "$here/Dockerfile" "$stage/cmcp/Dockerfile"
revision="$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown) $(date -u +%Y-%m-%dT%H:%M:%SZ)"
"$docker" build -q --build-arg "BASE=$base" --build-arg "REVISION=$revision" -t "$tag" \
    "$stage/cmcp" >/dev/null
size=$("$docker" image inspect -f '{{.Size}}' "$tag")
echo "built $tag (base $base): $((size / 1024 / 1024)) MiB ($size bytes)"

# ---- the HAProxy front (Debian's haproxy, the same way) ----
if [ -n "$haproxy_tag" ]; then
    hap=$(command -v haproxy || true)
    if [ -z "$hap" ]; then
        echo "build-image.sh: haproxy is missing (apt-get install haproxy)" >&2
        exit 2
    fi
    mkdir -p "$stage/haproxy/app/usr/sbin" "$stage/haproxy/app/usr/bin" \
        "$stage/haproxy/app/usr/local/etc/haproxy" "$stage/haproxy/libs/etc"
    cp "$hap" "$stage/haproxy/app/usr/sbin/haproxy"
    cp "$tini" "$stage/haproxy/app/usr/bin/tini"
    cp "$here/haproxy.cfg" "$stage/haproxy/app/usr/local/etc/haproxy/haproxy.cfg"
    copy_libs "$stage/haproxy/libs" "$hap" "$tini"
    printf 'hosts: files dns\n' >"$stage/haproxy/libs/etc/nsswitch.conf"
    cp "$here/Dockerfile.haproxy" "$stage/haproxy/Dockerfile"
    "$docker" build -q --build-arg "BASE=$base" -t "$haproxy_tag" "$stage/haproxy" >/dev/null
    size=$("$docker" image inspect -f '{{.Size}}' "$haproxy_tag")
    echo "built $haproxy_tag (base $base): $((size / 1024 / 1024)) MiB ($size bytes)"
fi
