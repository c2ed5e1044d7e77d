#!/usr/bin/env python3
"""
Restart latency of a cmcpd supervisor: SIGKILL a worker, time until its
replacement has reported ready.

  python3 bench/restart_latency.py --cmcpd build/bin/cmcpd [--kills 200] [--workers 4]

How it measures (sub-millisecond, no polling error): the supervisor's log
lines carry `t_mono`, CLOCK_MONOTONIC in milliseconds with a fraction, taken
when it reaps the child (child_exited), when it has forked the replacement
(child_started) and when the replacement's newline arrives on the readiness
fd (child_ready). This script reads CLOCK_MONOTONIC too (time.monotonic_ns)
right before kill(2). So

  total    = child_ready.t_mono   - kill time     (what a user waits)
  detect   = child_exited.t_mono  - kill time     (SIGKILL delivery, SIGCHLD, reaping)
  decide   = child_started.t_mono - child_exited  (restart decision, fork)
  boot     = child_ready.t_mono   - child_started (exec, start-up, ready newline)

The script only polls the log file to know when to go on; how fast it polls
does not enter the numbers. Between kills it waits --gap ms so that one
restart's tail does not overlap the next kill.

Tree: one one_for_one root supervisor (intensity high enough never to trip)
over --workers testworker processes; the victim rotates among them.
"""

import argparse
import os
import platform
import signal
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from cmcp_harness import Node, sup_section, wait_for, worker_section  # noqa: E402


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("model name"):
                    model = ln.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "python": platform.python_version()}


def run(args):
    cfg = (sup_section("root", "one_for_one", ["w"], intensity=1000000, period=1)
           + worker_section("w", count=args.workers))
    results = []
    with Node(cfg, cmcpd=os.path.abspath(args.cmcpd), ready_timeout=10) as n:
        pids = n.wait_running()
        ids = sorted(pids)
        # warm-up kills (page cache, allocator) are not counted
        for i in range(args.warmup + args.kills):
            cid = ids[i % len(ids)]
            old = pids[cid]
            n.log_events()
            mark = len(n._events)
            t_kill = time.monotonic_ns() / 1e6
            os.kill(old, signal.SIGKILL)
            seen = [mark]

            def ready():
                n._read_log()  # only the new lines are parsed and scanned
                for e in n._events[seen[0]:]:
                    if (e.get("event") == "child_ready" and e.get("child") == cid
                            and e.get("child_pid") != old):
                        return e
                seen[0] = len(n._events)
                return None
            r = wait_for(ready, 10, 0.001, what="%s ready again" % cid)
            evs = n._events[mark:]
            ex = next(e for e in evs if e.get("event") == "child_exited" and e.get("child") == cid)
            st = next(e for e in evs if e.get("event") == "child_started" and e.get("child") == cid)
            pids[cid] = r["child_pid"]
            if i >= args.warmup:
                results.append({"total": r["t_mono"] - t_kill,
                                "detect": ex["t_mono"] - t_kill,
                                "decide": st["t_mono"] - ex["t_mono"],
                                "boot": r["t_mono"] - st["t_mono"]})
            time.sleep(args.gap / 1000.0)
        status = n.ctl_ok("root", "status")
    return results, status


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cmcpd", required=True, help="path of the cmcpd binary")
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--gap", type=float, default=20.0, help="ms between restarts")
    ap.add_argument("--target-median", type=float, default=5.0)
    ap.add_argument("--target-p99", type=float, default=20.0)
    args = ap.parse_args()

    results, status = run(args)
    m = machine()
    print("restart latency: %d SIGKILLs of %d testworkers under one_for_one"
          % (len(results), args.workers))
    print("machine: %d cpus, %s, kernel %s" % (m["nproc"], m["cpu"], m["kernel"]))
    print("%-8s %9s %9s %9s %9s %9s" % ("ms", "min", "median", "p90", "p99", "max"))
    for k in ("total", "detect", "decide", "boot"):
        v = [r[k] for r in results]
        print("%-8s %9.3f %9.3f %9.3f %9.3f %9.3f" % (
            k, min(v), statistics.median(v), percentile(v, 90), percentile(v, 99), max(v)))
    print("supervisor: starts_total %d, restarts_total %d"
          % (status["starts_total"], status["restarts_total"]))
    tot = [r["total"] for r in results]
    ok = statistics.median(tot) <= args.target_median and percentile(tot, 99) <= args.target_p99
    print("target median <= %.1f ms, p99 <= %.1f ms: %s"
          % (args.target_median, args.target_p99, "met" if ok else "MISSED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
