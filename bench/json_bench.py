#!/usr/bin/env python3
"""
jansson (cmcp's JSON library) against json-c and cJSON on a shard's per-request JSON
work (bench/json_bench.c says what each operation is). The three builds run one
round each, interleaved, for --rounds rounds; the table gives each library's best
and median nanoseconds per operation and the median's ratio to jansson's.

  cmake --build build --target json_bench
  python3 bench/json_bench.py [--bin-dir build/bin] [--rounds 7] [--ops 200000]
"""
import argparse
import os
import statistics
import subprocess
import sys

LIBS = ("jansson", "jsonc", "cjson")


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--bin-dir", default="build/bin")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--ops", type=int, default=200000)
    a = ap.parse_args()
    bins = {lib: os.path.join(a.bin_dir, "json_bench_" + lib) for lib in LIBS}
    missing = [b for b in bins.values() if not os.access(b, os.X_OK)]
    if missing:
        sys.exit("json_bench: %s missing: cmake --build <build> --target json_bench (needs "
                 "libjson-c-dev and libcjson-dev: tools/install-deps.sh bench)" % ", ".join(missing))
    names, echo, big = {}, {lib: [] for lib in LIBS}, {lib: [] for lib in LIBS}
    sizes = None
    for _ in range(max(1, a.rounds)):
        for lib in LIBS:
            out = subprocess.run([bins[lib], "--ops", str(a.ops)], capture_output=True,
                                 text=True, check=True, timeout=600).stdout
            name, e, b, req, doc = out.strip().split("\t")
            names[lib] = name
            echo[lib].append(float(e))
            big[lib].append(float(b))
            sizes = (req, doc)
    print("tools/call echo: parse a %s B request, build and serialise its response; "
          "tools/list: parse and serialise %s B. %d interleaved rounds of %d and %d "
          "operations.\n" % (sizes[0], sizes[1], a.rounds, a.ops, a.ops // 10))
    print("| library | echo ns (best / median) | vs jansson | tools/list ns (best / median) | vs jansson |")
    print("|---|---|---|---|---|")
    be, bb = statistics.median(echo["jansson"]), statistics.median(big["jansson"])
    for lib in LIBS:
        me, mb = statistics.median(echo[lib]), statistics.median(big[lib])
        print("| %s | %.0f / %.0f | %.2f× | %.0f / %.0f | %.2f× |" % (
            names[lib], min(echo[lib]), me, me / be, min(big[lib]), mb, mb / bb))


if __name__ == "__main__":
    main()
