#!/bin/sh
# Configures and builds the source tree as build type TYPE in DIR with gcc, so that
# a warning at that optimisation level (-Werror: gcc's maybe-uninitialized at -O3
# in Release, -Os in MinSizeRel) fails here rather than for the packager who types
# `cmake -DCMAKE_BUILD_TYPE=Release`. Incremental after the first run.
#   build_type.sh SOURCE_DIR DIR TYPE [JOBS]
set -eu
src=$1 dir=$2 type=$3 jobs=${4:-2}
echo "build: configuring $src as $type in $dir"
cmake -S "$src" -B "$dir" -DCMAKE_BUILD_TYPE="$type" >"$dir.configure.log" 2>&1 || {
    cat "$dir.configure.log"
    echo "build: configuring the $type build failed (above)"
    exit 1
}
if ! cmake --build "$dir" -j "$jobs" >"$dir.build.log" 2>&1; then
    grep -E -B2 -A8 'error|warning' "$dir.build.log" | head -n 80
    echo "build: the $type build failed: fix the warning or error above (never silence it);"
    echo "build: the whole log is $dir.build.log"
    exit 1
fi
echo "build: the $type build compiles warning-free"
