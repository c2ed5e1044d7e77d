#!/usr/bin/env python3
"""
Where cmcp's time goes under load: one node, cmcp-bench at a fixed concurrency,
and for every process of the tree: CPU seconds, context switches and system
calls per request; then `perf record` of the listener and a shard (call
graphs) and their top symbols. With --idle, no load: what the tree costs when
nothing happens (CPU ms and context switches a second, per process).

  python3 bench/profile.py [--bin-dir build/bin] [--transport http|tcp] [-c 64]
                           [--seconds 5] [--perf [--perf-freq N] [--perf-no-graph]] [--out DIR]
  python3 bench/profile.py --idle [--seconds 10]

Loopback only; the node and the load generator are stopped at the end.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as suite  # noqa: E402


def task_counters(pid):
    """(voluntary, involuntary) context switches summed over the threads of pid."""
    v = nv = 0
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return 0, 0
    for t in tids:
        try:
            with open("/proc/%d/task/%s/status" % (pid, t)) as f:
                for ln in f:
                    if ln.startswith("voluntary_ctxt_switches"):
                        v += int(ln.split()[1])
                    elif ln.startswith("nonvoluntary_ctxt_switches"):
                        nv += int(ln.split()[1])
        except OSError:
            pass
    return v, nv


def name_of(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            a = f.read().split(b"\0")
    except OSError:
        return "?"
    return a[a.index(b"--id") + 1].decode() if b"--id" in a else "root"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dir", default=os.path.join(suite.ROOT, "build", "bin"))
    ap.add_argument("--transport", default="http", choices=("http", "tcp"))
    ap.add_argument("-c", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--perf", action="store_true", help="also perf record listener-0 and shard-0")
    ap.add_argument("--perf-freq", type=int, default=499,
                    help="samples per second of perf record (with --perf)")
    ap.add_argument("--perf-no-graph", action="store_true",
                    help="perf record without call graphs: more samples, self time only")
    ap.add_argument("--out", default="/tmp/cmcp-profile")
    ap.add_argument("--cmcp-shards", type=int, default=2)
    ap.add_argument("--cmcp-listeners", type=int, default=1)
    ap.add_argument("--cmcp-durability", default="group")
    ap.add_argument("--cmcp-max-sessions", type=int, default=100000)
    ap.add_argument("--idle", action="store_true",
                    help="no load: each process's CPU and context switches a second")
    args = ap.parse_args()
    args.bin_dir = os.path.abspath(args.bin_dir)
    os.makedirs(args.out, exist_ok=True)
    node = suite.Cmcp(args)
    if args.idle:
        try:
            idle(node, args.seconds)
        finally:
            node.stop()
        return
    try:
        url = node.url if args.transport == "http" else node.tcp_url
        pids = {name_of(p): p for p in node.pids()}
        dur = args.seconds
        bench = subprocess.Popen([os.path.join(args.bin_dir, "cmcp-bench"), "--quiet", "--json", "-",
                                  "-c", str(args.c), "-w", "1", "-d", str(dur), url],
                                 stdout=subprocess.PIPE)
        time.sleep(1.2)  # the warm-up
        before = {n: (suite.cpu_ticks([p]), task_counters(p)) for n, p in pids.items()}
        perf = None
        if args.perf:
            # two short recordings would halve the window: record the listener and shard-0 together
            targets = ",".join(str(pids[n]) for n in ("listener-0", "shard-0") if n in pids)
            graph = [] if args.perf_no_graph else ["-g", "--call-graph", "dwarf,16384"]
            perf = subprocess.Popen(["perf", "record", "-F", str(args.perf_freq)] + graph + [
                                     "-p", targets, "-o", os.path.join(args.out, "perf.data"), "--",
                                     "sleep", str(max(1.0, dur - 1.5))],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sc = subprocess.run(["perf", "stat", "-e", "raw_syscalls:sys_enter", "-x", ",", "-p",
                             ",".join(str(p) for p in pids.values()), "--per-thread", "--", "sleep",
                             str(max(1.0, dur - 1.5))], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        after = {n: (suite.cpu_ticks([p]), task_counters(p)) for n, p in pids.items()}
        window = max(1.0, dur - 1.5)
        out, _ = bench.communicate(timeout=dur + 60)
        if perf:
            perf.wait(timeout=120)
        r = json.loads(out)
        rps = r["rps"]
        reqs = rps * window
        # syscalls per process (perf stat --per-thread prints comm-tid,count,...)
        sys_by_pid = {}
        tid_owner = {}
        for n, p in pids.items():
            try:
                for t in os.listdir("/proc/%d/task" % p):
                    tid_owner[int(t)] = n
            except OSError:
                pass
        for ln in sc.stderr.decode().splitlines():
            parts = ln.split(",")
            if len(parts) > 2 and "-" in parts[0]:
                try:
                    tid = int(parts[0].rsplit("-", 1)[1])
                    cnt = int(parts[1])
                except ValueError:
                    continue
                owner = tid_owner.get(tid, "?")
                sys_by_pid[owner] = sys_by_pid.get(owner, 0) + cnt
        print("cmcp-bench: %.0f requests/s over %s, %d connections, errors %d; window %.1f s"
              % (rps, args.transport, args.c, r["errors"], window))
        print("| process | CPU (cores) | CPU µs / request | context switches / request (vol + invol) | syscalls / request |")
        print("|---|---|---|---|---|")
        tot_cpu = 0
        for n in sorted(pids):
            (c0, (v0, nv0)), (c1, (v1, nv1)) = before[n], after[n]
            cpu = (c1 - c0) / suite.HZ
            tot_cpu += cpu
            if cpu == 0 and n not in ("listener-0", "shard-0", "shard-1"):
                continue
            print("| %s | %.2f | %.1f | %.2f + %.2f | %.1f |" % (
                n, cpu / window, cpu * 1e6 / reqs if reqs else 0, (v1 - v0) / reqs if reqs else 0,
                (nv1 - nv0) / reqs if reqs else 0, sys_by_pid.get(n, 0) / reqs if reqs else 0))
        print("| whole tree | %.2f | %.1f | | %.1f |" % (tot_cpu / window, tot_cpu * 1e6 / reqs if reqs else 0,
                                                         sum(sys_by_pid.values()) / reqs if reqs else 0))
    finally:
        node.stop()
    if args.perf:
        # one report sorted by pid first (perf report's --pid filter mixes the two processes'
        # samples), each process's symbols as a share of its own samples
        rep = subprocess.run(["perf", "report", "-i", os.path.join(args.out, "perf.data"),
                              "--no-children", "--sort", "pid,dso,sym", "--stdio", "-g", "none"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        rows = []
        for ln in rep.stdout.decode(errors="replace").splitlines():
            parts = ln.split()
            if len(parts) >= 4 and parts[0].endswith("%") and ":" in parts[1]:
                try:
                    rows.append((float(parts[0][:-1]), int(parts[1].split(":")[0]),
                                 parts[2], " ".join(parts[3:])))
                except ValueError:
                    pass
        for label in ("listener-0", "shard-0"):
            pid = pids.get(label)
            mine = [r for r in rows if r[1] == pid]
            total = sum(r[0] for r in mine) or 1.0
            print("\n%s: top symbols (self time, %% of that process's samples)" % label)
            for pct, _, dso, sym in mine[:25]:
                print("   %5.1f%%  %-22s %s" % (pct * 100 / total, dso, sym))
            by_dso = {}
            for pct, _, dso, _ in mine:
                by_dso[dso] = by_dso.get(dso, 0) + pct
            print("   by library: " + ", ".join("%s %.0f%%" % (d, v * 100 / total) for d, v in
                                                sorted(by_dso.items(), key=lambda kv: -kv[1])[:6]))


def idle(node, seconds):
    """The tree at rest: CPU ms and context switches a second, per process."""
    time.sleep(2.0)  # past the start's own work
    pids = {name_of(p): p for p in node.pids()}
    before = {n: (suite.cpu_ticks([p]), task_counters(p)) for n, p in pids.items()}
    time.sleep(seconds)
    after = {n: (suite.cpu_ticks([p]), task_counters(p)) for n, p in pids.items()}
    print("idle for %.0f s, %d processes" % (seconds, len(pids)))
    print("| process | CPU ms / s | context switches / s |")
    print("|---|---|---|")
    tc = tx = 0.0
    for n in sorted(pids):
        (c0, (v0, nv0)), (c1, (v1, nv1)) = before[n], after[n]
        cpu = (c1 - c0) * 1000.0 / suite.HZ / seconds
        ctx = (v1 + nv1 - v0 - nv0) / seconds
        tc += cpu
        tx += ctx
        print("| %s | %.1f | %.0f |" % (n, cpu, ctx))
    print("| whole tree | %.1f | %.0f |" % (tc, tx))


if __name__ == "__main__":
    main()
