#!/usr/bin/env python3
"""
cmcp cluster benchmarks: real nodes on loopback (tests/cluster/cluster_harness.py).

  python3 bench/cluster_bench.py [--bin-dir build/bin] [--trials 20]
                                 [--only formation,detection,fence,leader,commit,replication,
                                         replication_spread,forwarding,rto,scale]
                                 [--out DIR]

Sections (docs/benchmarks.md shows the results and how they were obtained):

  formation  4 nodes started together (bootstrap_expect = 4): from the first
             process started until every node holds one map in which all four
             are up and every partition has an owner (polled every 10 ms)
  detection  3 nodes; a member that is not the leader is SIGKILLed: time until
             the leader marks it down, and until its partitions have owners
             again (the leader's log timestamps, ms); the node is restarted
             between trials
  fence      3 nodes; one member's three cluster processes are SIGSTOPped
             while a client writes to it every ~5 ms: time until its first
             refused write, against the time the leader marks it down (only
             after that could another node take its partitions): the margin
             must be positive in every trial
  leader     3 nodes; the leader is SIGKILLed: time until a survivor is the
             new leader, and until every partition has an owner again
  commit     the Raft commit time of each node's liveness beats, as the nodes
             measure it (proposal to applied here), in a formed 4-node cluster
  replication  kv_set throughput and latency through one node (cmcp-bench, 16 and
             64 connections, a session each) with RF 1, RF 2 sync and RF 2 async,
             interleaved, with the nodes' CPU per write and writes per store commit
  replication_spread  the same with the connections split over the three nodes (a
             generator each, as behind a load balancer): every node owns sessions
             and holds copies of the others'
  rto        failover RTO: 3 nodes (RF 2), sessions of the victim written through a
             surviving node; the victim (half the trials: the Raft leader) is SIGKILLed:
             time until every session was written again; acknowledged writes read back
  scale      (only when asked: --only scale) 100K sessions over 4 nodes, RF 2: memory per
             node, tools/call through all nodes with every request forwarded, then one
             node SIGKILLed under checker writes: sessions and writes lost, time until
             the survivors hold every session
  forwarding tools/call echo (cmcp-bench, 32 connections): sessions made at n0 and
             used through n0 (their owner) or through n1 (forwarded), interleaved

Results: DIR/raw.json and DIR/summary.md, DIR defaulting to
BIN_DIR/../bench-results/cluster-<time>. Loopback only; every process it
starts it stops (by pid); every loop is bounded.
"""

import argparse
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "cluster"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def ts_of(ev):
    """A log line's wall-clock time in seconds since the epoch."""
    return datetime.datetime.strptime(ev["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def pct(values, q):
    v = sorted(values)
    if not v:
        return float("nan")
    return v[min(len(v) - 1, int(round(q / 100.0 * (len(v) - 1))))]


def summary(values):
    return {"n": len(values), "p50": pct(values, 50), "p99": pct(values, 99),
            "min": min(values) if values else float("nan"),
            "max": max(values) if values else float("nan")}


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for ln in f:
            if ln.startswith("model name"):
                model = ln.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "loadavg_at_start": os.getloadavg()[0]}


def events_after(node, event, t0, **match):
    return [e for e in node.log_events(event, **match) if ts_of(e) >= t0 - 0.002]


def restart_and_rebalance(c, wait_for, i, data):
    """Restarts node i on its data, then rebalances."""
    c.start(i, data_dir=data)
    rebalance(c, wait_for, i)


def rebalance(c, wait_for, i):
    """A rebalance gives node i partitions again (a node back from a failure takes nothing
    back by itself), so that the next trial's victim owns some."""
    c.wait_formed(timeout=20)
    vid = "n%d" % i
    for _ in range(3):
        c.ctl(i, {"op": "rebalance"})
        try:
            wait_for(lambda: c.member(c.status(i), vid)["owned"] >= 20, 10, 0.05,
                     what="%s owns partitions again" % vid)
            break
        except TimeoutError:
            continue
    c.wait_formed(timeout=20)


# ------------------------------------------------------------------ sections --

def formation(Cluster, wait_for, trials):
    out = []
    for t in range(trials):
        c = Cluster(4, start=[])
        try:
            from cmcp_harness import Node
            t0 = time.time()
            for i in range(4):
                node = Node(c.config(i), wait_ready=False, keep_dir=True)
                c.dirs.append(node.dir)
                node.start()
                c.nodes[i] = node
            wait_for(lambda: c.formed(), 30, 0.01, what="4 nodes formed")
            took = time.time() - t0
            out.append(took)
            log("  formation trial %d: %.3f s" % (t + 1, took))
        finally:
            c.stop()
    return {"seconds": summary(out), "trials": out}


def detection(Cluster, wait_for, trials):
    marked, owned = [], []
    with Cluster(3) as c:
        c.wait_formed()
        for t in range(trials):
            lead = c.leader()
            victim = next(i for i in range(3) if i != lead)
            data = c.data_dir(victim)
            t0 = time.time()
            c.kill(victim)
            vid = "n%d" % victim
            ev = wait_for(lambda: events_after(c.nodes[lead], "cluster_mark_down", t0, member=vid),
                          10, 0.01, what="marked down")
            done = wait_for(lambda: events_after(c.nodes[lead], "cluster_failover_done", t0,
                                                 member=vid), 10, 0.01, what="failover done")
            marked.append(ts_of(ev[0]) - t0)
            owned.append(ts_of(done[0]) - t0)
            log("  detection trial %d: down %.3f s, partitions owned %.3f s"
                % (t + 1, marked[-1], owned[-1]))
            restart_and_rebalance(c, wait_for, victim, data)
    return {"marked_down_s": summary(marked), "reassigned_s": summary(owned),
            "trials": list(zip(marked, owned))}


def fence(Cluster, wait_for, trials):
    from mcp_client import Session
    rows = []
    with Cluster(3) as c:
        c.wait_formed()
        for t in range(trials):
            lead = c.leader()
            victim = next(i for i in range(3) if i != lead)
            vid = "n%d" % victim
            s = Session(c.http[victim])
            if "error" in s.tool("kv_set", {"key": "warm", "value": "1"}):
                raise RuntimeError("n%d refuses before the stop" % victim)
            pids = c.cluster_pids(victim)
            t0 = time.time()
            for p in pids:
                os.kill(p, signal.SIGSTOP)
            refused_at = None
            try:
                for n in range(1000):
                    r = s.tool("kv_set", {"key": "k%d" % n, "value": "x"})
                    if "error" in r:
                        refused_at = time.time()
                        break
                    time.sleep(0.005)
                ev = wait_for(lambda: events_after(c.nodes[lead], "cluster_mark_down", t0,
                                                   member=vid), 10, 0.01, what="marked down")
            finally:
                for p in pids:
                    os.kill(p, signal.SIGCONT)
            s.close()
            down_at = ts_of(ev[0])
            row = {"refused_s": refused_at - t0, "marked_down_s": down_at - t0,
                   "margin_s": down_at - refused_at}
            rows.append(row)
            log("  fence trial %d: first refused write %.3f s, marked down %.3f s, margin %.3f s"
                % (t + 1, row["refused_s"], row["marked_down_s"], row["margin_s"]))
            rebalance(c, wait_for, victim)  # it rejoins by itself after SIGCONT
    return {"refused_s": summary([r["refused_s"] for r in rows]),
            "marked_down_s": summary([r["marked_down_s"] for r in rows]),
            "margin_s": summary([r["margin_s"] for r in rows]), "trials": rows}


def leader_failover(Cluster, wait_for, trials):
    elected, owned, gaps = [], [], []
    with Cluster(3) as c:
        c.wait_formed()
        for t in range(trials):
            lead = c.leader()
            lid = "n%d" % lead
            data = c.data_dir(lead)
            survivors = [i for i in range(3) if i != lead]
            t0 = time.time()
            c.kill(lead)
            ev = wait_for(lambda: [e for i in survivors
                                   for e in events_after(c.nodes[i], "cluster_leader", t0)],
                          15, 0.01, what="a new leader")
            new = min(ev, key=ts_of)
            elected.append(ts_of(new) - t0)
            done = wait_for(lambda: [e for i in survivors for e in
                                     events_after(c.nodes[i], "cluster_failover_done", t0,
                                                  member=lid)], 15, 0.01,
                            what="the old leader's partitions owned")
            owned.append(ts_of(done[0]) - t0)
            # survivors whose lease ran out while no leader could commit their beats
            fenced = [e for i in survivors for e in events_after(c.nodes[i], "cluster_fenced", t0)]
            unfenced = [e for i in survivors
                        for e in events_after(c.nodes[i], "cluster_unfenced", t0)]
            gap = max([e.get("fenced_ms", 0) / 1000.0 for e in unfenced] or [0.0])
            gaps.append(gap if fenced else 0.0)
            log("  leader trial %d: new leader %.3f s, partitions owned %.3f s, survivors "
                "fenced for %.3f s" % (t + 1, elected[-1], owned[-1], gaps[-1]))
            restart_and_rebalance(c, wait_for, lead, data)
    return {"elected_s": summary(elected), "reassigned_s": summary(owned),
            "survivors_fenced_s": summary(gaps), "trials": list(zip(elected, owned, gaps))}


def commit(Cluster, wait_for, seconds):
    with Cluster(4) as c:
        c.wait_formed()
        time.sleep(seconds)
        out = {}
        for i, st in c.statuses().items():
            out["n%d" % i] = dict(st.get("beat_commit_ms") or {},
                                  leader=st["raft"]["state"] == "leader")
    return out


def cluster_cpu_s(c):
    """CPU seconds (user + system) used so far by every live process of every node."""
    hz = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for node in c.nodes:
        if node is None:
            continue
        for pid in node.tree_pids():
            try:
                with open("/proc/%d/stat" % pid) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / hz
            except (OSError, IndexError, ValueError):
                pass
    return total


def commits(c):
    """{"own": n, "copies": n}: the store commits of every node's shards so far
    (cmcp_store_commits_total, from each node's /metrics)."""
    out = {"own": 0.0, "copies": 0.0}
    for i in range(c.n):
        if c.alive(i):
            for k in out:
                out[k] += c.metric(i, 'cmcp_store_commits_total{of="%s"}' % k)
    return out


def started(Cluster, n, extra, tries=3, **kw):
    """A formed cluster of n nodes, started again (new ports) when a node could not start:
    the ports it picked were free when picked, but another process may take one before the
    node binds it (an outgoing connection's ephemeral port is from the same range)."""
    for k in range(tries):
        c = Cluster(n, extra=extra, **kw)
        try:
            c.__enter__()
        except RuntimeError as e:
            if k == tries - 1:
                raise
            errs = [l for l in str(e).splitlines() if '"level":"error"' in l][:2]
            log("  a node did not start, starting the cluster again: %s" % errs)
            continue
        c.wait_formed()
        return c


def run_generators(bench, urls, n, seconds):
    """cmcp-bench's kv_set load split over urls (n connections in all, the remainder on the
    first), the generators run at once; their reports summed: ok, errors, warm-up ok,
    measured seconds (the longest), and p50/p99 (the worst of them)."""
    per = [n // len(urls) + (1 if k < n % len(urls) else 0) for k in range(len(urls))]
    procs = [subprocess.Popen(
        [bench, "-c", str(c), "-d", str(seconds), "-w", "1", "-q", "--tool", "kv_set",
         "--args", '{"key":"k","value":12345}', "--json", "-", u],
        stdout=subprocess.PIPE, text=True) for u, c in zip(urls, per) if c > 0]
    js = [json.loads(p.communicate(timeout=seconds + 120)[0]) for p in procs]
    kinds = {}
    for j in js:
        for src in ("errors_by_kind", "http_status_errors"):
            for k, v in (j.get(src) or {}).items():
                if v:
                    kinds[k] = kinds.get(k, 0) + v
    return {"ok": sum(j["ok"] for j in js), "errors": sum(j["errors"] for j in js),
            "error_kinds": kinds,
            "warmup_ok": sum(j["warmup"]["ok"] for j in js),
            "measured_s": max(j["measured_s"] for j in js),
            "p50": max(j["latency_ms"]["p50"] for j in js),
            "p99": max(j["latency_ms"]["p99"] for j in js)}


def replication(Cluster, wait_for, seconds, bin_dir, conns=(16, 64), rounds=2, spread=False):
    """kv_set throughput and latency through one node's sessions for RF 1, RF 2 sync and
    RF 2 async, interleaved over `rounds` rounds, at each count of connections in `conns`
    (cmcp-bench, closed loop, one session per connection), with the CPU every node's
    processes used per acknowledged write. The generator is C: a Python one took a core of
    its own and capped RF 1, which made the ratios look better than they are. spread: the
    connections are split over the three nodes (a generator each, as behind a load balancer),
    so every node owns sessions and holds copies of the others'."""
    modes = (("rf1", "replication_factor = 1"), ("rf2_sync", "replication_factor = 2"),
             ("rf2_async", "replication_factor = 2\nreplication = async"))
    out = {}
    for n in conns:
        for m, _ in modes:
            out["%s@%d" % (m, n)] = {"ops": 0, "seconds": 0.0, "p50": [], "p99": [],
                                     "errors": 0, "error_kinds": {}, "cpu": 0.0, "own": 0.0,
                                     "copies": 0.0,
                                     "all_ops": 0}
    bench = os.path.join(bin_dir, "cmcp-bench")
    for _ in range(rounds):
        for n in conns:
            for name, extra in modes:
                c = started(Cluster, 3, extra, metrics=True)
                try:
                    cpu0 = cluster_cpu_s(c)
                    com0 = commits(c)
                    urls = ["http://127.0.0.1:%d/mcp" % c.http[i]
                            for i in (range(3) if spread else (0,))]
                    j = run_generators(bench, urls, n, seconds)
                    cpu = cluster_cpu_s(c) - cpu0
                    time.sleep(1.2)  # the shards' next stats snapshot (every second)
                    com = commits(c)
                    o = out["%s@%d" % (name, n)]
                    # commits over the whole run (warm-up included) per write over the same
                    o["own"] += com["own"] - com0["own"]
                    o["copies"] += com["copies"] - com0["copies"]
                    o["all_ops"] += j["ok"] + j["warmup_ok"]
                    # the CPU counts the warmup second too: scaled to the measured share
                    o["cpu"] += cpu * j["ok"] / max(1, j["ok"] + j["warmup_ok"])
                    o["ops"] += j["ok"]
                    o["errors"] += j["errors"]
                    if j["errors"]:
                        # what failed, and what the nodes said about it
                        for k, v in j["error_kinds"].items():
                            o["error_kinds"][k] = o["error_kinds"].get(k, 0) + v
                        log("  %s, %d connections: %d errors %s; the nodes' warnings:"
                            % (name, n, j["errors"], j["error_kinds"]))
                        c.print_trouble(limit=8)
                    o["seconds"] += j["measured_s"]
                    o["p50"].append(j["p50"])
                    o["p99"].append(j["p99"])
                finally:
                    c.stop()
                log("  %s, %d connections: %.0f ops/s" % (name, n, j["ok"] / j["measured_s"]))
    res = {}
    for key, o in out.items():
        res[key] = {"ops_per_s": o["ops"] / o["seconds"] if o["seconds"] else 0,
                    "errors": o["errors"], "error_kinds": o["error_kinds"],
                    "p50_ms": statistics.median(o["p50"]) if o["p50"] else 0,
                    "p99_ms": statistics.median(o["p99"]) if o["p99"] else 0,
                    "node_cpu_us_per_op": o["cpu"] / o["ops"] * 1e6 if o["ops"] else 0,
                    "writes_per_own_commit": o["all_ops"] / o["own"] if o["own"] else 0,
                    "writes_per_copy_commit": o["all_ops"] / o["copies"] if o["copies"] else 0}
    return res


def rto(Cluster, wait_for, trials, writers=4):
    """Failover RTO under write load: 3 nodes (RF 2 by default), `writers` sessions made at
    the victim, each written in a loop through a surviving node (as behind a load balancer:
    forwarded to the victim while it lives). The victim is SIGKILLed; a trial's RTO is the
    time from the kill until every one of its sessions had a write acknowledged again (the
    slowest session), and each session's own time is kept too. Half the trials kill the Raft
    leader. Afterwards every acknowledged write is read back: lost ones are counted."""
    import threading
    from checker import _post
    out = {"owner": [], "owner_leader": []}
    per_session = {"owner": [], "owner_leader": []}
    lost = {"owner": 0, "owner_leader": 0}
    acked = {"owner": 0, "owner_leader": 0}
    import mcp_client
    for t in range(trials * 2):
        kind = "owner_leader" if t % 2 else "owner"
        # the previous trial's nodes are gone: their ports may be handed out again (the
        # harness never repeats a port within a process, and 40 clusters use up the runs of
        # free ports the peer ports need)
        mcp_client._handed_out.clear()
        with Cluster(3) as c:
            c.wait_formed()
            wait_for(lambda: len(c.status(0)["raft"]["voters"]) == 3, 10, 0.05, what="voters")
            lead = c.leader()
            victim = lead if kind == "owner_leader" else (lead + 1) % 3
            via = next(i for i in range(3) if i != victim)
            ver = "2025-11-25"
            sids = []
            for k in range(writers):
                st, msgs, sid = _post("127.0.0.1", c.http[victim], None, ver, {
                    "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                        "protocolVersion": ver, "capabilities": {},
                        "clientInfo": {"name": "rto", "version": "1"}}}, 10)
                _post("127.0.0.1", c.http[victim], sid, ver,
                      {"jsonrpc": "2.0", "method": "notifications/initialized"}, 10)
                sids.append(sid)
            stop = threading.Event()
            kill_at = [None]
            first_ok = [None] * writers
            oks = [dict() for _ in range(writers)]

            def run(k):
                n = 0
                deadline = time.monotonic() + 60
                while not stop.is_set() and time.monotonic() < deadline:
                    n += 1
                    invoked = time.monotonic()
                    try:
                        st, msgs, _ = _post("127.0.0.1", c.http[via], sids[k], ver, {
                            "jsonrpc": "2.0", "id": n, "method": "tools/call",
                            "params": {"name": "kv_set",
                                       "arguments": {"key": "w%d" % n, "value": "v%d" % n}}},
                            2.0)
                    except OSError:
                        continue
                    m = msgs[-1] if msgs else {}
                    if st == 200 and "result" in m and not m["result"].get("isError"):
                        oks[k]["w%d" % n] = "v%d" % n
                        # a write sent after the kill: one in flight before it proves nothing
                        if kill_at[0] is not None and invoked > kill_at[0] and \
                                first_ok[k] is None:
                            first_ok[k] = time.monotonic()
                    else:
                        time.sleep(0.005)
            threads = [threading.Thread(target=run, args=(k,)) for k in range(writers)]
            for th in threads:
                th.start()
            time.sleep(1.0)
            kill_at[0] = time.monotonic()
            c.kill(victim)
            wait_for(lambda: all(f is not None for f in first_ok), 30, 0.01,
                     what="every session written again")
            stop.set()
            for th in threads:
                th.join(10)
            times = [f - kill_at[0] for f in first_ok]
            out[kind].append(max(times))
            per_session[kind] += times
            for k in range(writers):
                keys = list(oks[k])
                acked[kind] += len(keys)
                for key in keys:
                    st, msgs, _ = _post("127.0.0.1", c.http[via], sids[k], ver, {
                        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                        "params": {"name": "kv_get", "arguments": {"key": key}}}, 5)
                    m = msgs[-1] if msgs else {}
                    got = (m.get("result", {}).get("structuredContent") or {}).get("value")
                    if got != oks[k][key]:
                        lost[kind] += 1
            log("  trial %d (%s): every session written again %.0f ms after the kill"
                % (t + 1, kind, max(times) * 1000))
    return {k: {"trials": len(out[k]), "rto_s": summary(out[k]),
                "per_session_s": summary(per_session[k]), "acked": acked[k], "lost": lost[k]}
            for k in out}


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def node_sessions(c, i):
    """Sessions node i's shards hold in memory (it owns them), from its admin status."""
    st = c.admin_cmd(i, "status")
    return sum(x.get("sessions") or 0 for x in st.get("shards", []))


def scale(Cluster, wait_for, bin_dir, sessions=100000, nodes=4, per_process=12500):
    """The headline: `sessions` HTTP sessions over `nodes` nodes (RF 2, the default), each
    made and used once by cmcp-bench (connections closed afterwards: a Streamable HTTP session
    outlives its connection); memory per node; tools/call throughput through all nodes at once
    with every request forwarded; then one node SIGKILLed while checker clients write through
    every node: sessions lost, acknowledged writes lost, time until the survivors hold every
    session again."""
    import subprocess
    import tempfile
    from checker import Workload
    extra = "[tree.listener]\ncount = 2\n"  # 2 listeners: a node holds 25K connections at once
    res = {"sessions_asked": sessions, "nodes": nodes}
    with Cluster(nodes, extra=extra, admin=True) as c:
        c.wait_formed(timeout=60)
        base_rss = {i: rss_kib(c.nodes[i].tree_pids()) for i in range(nodes)}
        tmp = tempfile.mkdtemp(prefix="cmcp-scale-")
        procs = []
        per_node = sessions // nodes
        t0 = time.monotonic()
        k = 0
        for i in range(nodes):
            left = per_node
            while left > 0:
                share = min(per_process, left)
                left -= share
                argv = [os.path.join(bin_dir, "cmcp-bench"), "--quiet", "--json", "-", "-c",
                        str(share), "--ramp-concurrency", "48", "--ramp-timeout", "600",
                        "--ramp-calls", "1", "-d", "0", "--source-base", "127.0.%d.1" % (10 + k),
                        "--request-timeout", "60", "http://127.0.0.1:%d/mcp" % c.http[i]]
                procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE))
                k += 1
        made = 0
        for p in procs:
            out, err = p.communicate(timeout=900)
            try:
                made += json.loads(out).get("ramp", {}).get("sessions_ok", 0)
            except ValueError:
                log("  a generator failed: %s" % err.decode(errors="replace")[-500:])
        res["sessions_made"] = made
        res["create_s"] = time.monotonic() - t0
        log("  %d sessions made in %.1f s" % (made, res["create_s"]))
        time.sleep(2.0)
        held = {i: node_sessions(c, i) for i in range(nodes)}
        res["held_per_node"] = held
        res["rss_mib_per_node"] = {i: rss_kib(c.nodes[i].tree_pids()) / 1024.0
                                   for i in range(nodes)}
        res["idle_rss_mib_per_node"] = {i: base_rss[i] / 1024.0 for i in range(nodes)}
        # throughput through every node at once, every request forwarded (sessions made at
        # the next node): what a load balancer without affinity gives
        procs = []
        for i in range(nodes):
            argv = [os.path.join(bin_dir, "cmcp-bench"), "--quiet", "--json", "-", "-c", "32",
                    "-d", "8", "--init-url", "http://127.0.0.1:%d/mcp" % c.http[(i + 1) % nodes],
                    "--source-base", "127.0.%d.1" % (60 + i),
                    "http://127.0.0.1:%d/mcp" % c.http[i]]
            procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        rps, errors = 0.0, 0
        for p in procs:
            out, _ = p.communicate(timeout=300)
            try:
                j = json.loads(out)
                rps += j.get("rps") or 0
                e = j.get("errors")
                errors += e if isinstance(e, int) else sum((e or {}).values())
            except ValueError:
                errors += 1
        res["forwarded_rps_all_nodes"] = rps
        res["forwarded_errors"] = errors
        log("  tools/call through all %d nodes, forwarded: %.0f req/s" % (nodes, rps))
        total = sum(node_sessions(c, i) for i in range(nodes))
        res["sessions_before_kill"] = total
        # one node killed while clients write through every node
        w = Workload([("127.0.0.1", c.http[i]) for i in range(nodes)], nclients=4)
        w.start()
        time.sleep(1.0)
        victim = nodes - 1
        t_kill = time.monotonic()
        c.kill(victim)
        live = [i for i in range(nodes) if i != victim]

        def all_back():
            try:
                return sum(node_sessions(c, i) for i in live) >= total
            except Exception:  # noqa: BLE001 - a node busy taking partitions answers later
                return False
        wait_for(all_back, 120, 0.2, what="every session held by a survivor")
        res["all_sessions_back_s"] = time.monotonic() - t_kill
        time.sleep(1.0)
        w.stop()
        res["sessions_after_kill"] = sum(node_sessions(c, i) for i in live)
        passed, lost, unexpected, summ = w.check(live)
        res["writes"] = {"acknowledged_checked": passed, "lost": len(lost),
                         "failed_visible": len(unexpected), "summary": summ}
        res["rss_mib_after_kill"] = {i: rss_kib(c.nodes[i].tree_pids()) / 1024.0 for i in live}
        log("  after the kill: %d of %d sessions held again after %.1f s; writes: %s"
            % (res["sessions_after_kill"], total, res["all_sessions_back_s"], summ))
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def forwarding(Cluster, wait_for, seconds, bin_dir, conns=32, rounds=3):
    """tools/call echo with cmcp-bench (closed loop, one session per connection): sessions
    made at n0 and used through n0 (the owner) or through n1 (forwarded to n0), interleaved
    in one 3-node cluster."""
    import subprocess
    out = {"owner": [], "forwarded": []}
    with Cluster(3, extra="replication_factor = 1") as c:
        c.wait_formed()
        init = "http://127.0.0.1:%d/mcp" % c.http[0]
        for _ in range(rounds):
            for name, port, extra in (("owner", c.http[0], []),
                                      ("forwarded", c.http[1], ["--init-url", init])):
                argv = [os.path.join(bin_dir, "cmcp-bench"), "--quiet", "--json", "-", "-c",
                        str(conns), "-d", str(seconds)] + extra + \
                    ["http://127.0.0.1:%d/mcp" % port]
                p = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
                try:
                    j = json.loads(p.stdout)
                except ValueError:
                    j = {"rps": 0, "errors": -1, "stderr": p.stderr[-500:]}
                log("  %s: %.0f req/s" % (name, j.get("rps") or 0))
                out[name].append(j)
    res = {}
    for name, runs in out.items():
        res[name] = {"rps": [r.get("rps") or 0 for r in runs],
                     "p50_ms": [r.get("latency_ms", {}).get("p50") for r in runs],
                     "p99_ms": [r.get("latency_ms", {}).get("p99") for r in runs],
                     "errors": sum((r.get("errors") or 0) if isinstance(r.get("errors"), int)
                                   else sum((r.get("errors") or {}).values()) for r in runs)}
    return res


# ------------------------------------------------------------------- report --

def fmt_ms(s):
    return "%.0f" % (s * 1000)


def report(res, env):
    lines = ["# cmcp cluster benchmarks", "",
             "Machine: %(nproc)s cores, %(cpu)s, kernel %(kernel)s, load %(loadavg_at_start).2f"
             % env, ""]
    if "formation" in res:
        f = res["formation"]["seconds"]
        lines += ["## Formation of 4 nodes", "",
                  "| trials | p50 ms | max ms |", "|---|---|---|",
                  "| %d | %s | %s |" % (f["n"], fmt_ms(f["p50"]), fmt_ms(f["max"])), ""]
    if "detection" in res:
        d = res["detection"]
        lines += ["## Failure detection (SIGKILL of a member)", "",
                  "| | trials | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|"]
        for k, name in (("marked_down_s", "marked down"), ("reassigned_s", "partitions owned")):
            v = d[k]
            lines.append("| %s | %d | %s | %s | %s |" % (name, v["n"], fmt_ms(v["p50"]),
                                                         fmt_ms(v["p99"]), fmt_ms(v["max"])))
        lines.append("")
    if "fence" in res:
        d = res["fence"]
        lines += ["## Fencing (SIGSTOP of a member's cluster processes)", "",
                  "| | trials | p50 ms | p99 ms | min ms | max ms |", "|---|---|---|---|---|---|"]
        for k, name in (("refused_s", "first refused write"), ("marked_down_s", "marked down"),
                        ("margin_s", "margin (down - refused)")):
            v = d[k]
            lines.append("| %s | %d | %s | %s | %s | %s |" % (
                name, v["n"], fmt_ms(v["p50"]), fmt_ms(v["p99"]), fmt_ms(v["min"]),
                fmt_ms(v["max"])))
        lines.append("")
    if "leader" in res:
        d = res["leader"]
        lines += ["## Leader failover (SIGKILL of the leader)", "",
                  "| | trials | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|"]
        for k, name in (("elected_s", "new leader"), ("reassigned_s", "partitions owned"),
                        ("survivors_fenced_s", "survivors fenced (0: not)")):
            v = d[k]
            lines.append("| %s | %d | %s | %s | %s |" % (name, v["n"], fmt_ms(v["p50"]),
                                                         fmt_ms(v["p99"]), fmt_ms(v["max"])))
        lines.append("")
    if "commit" in res:
        lines += ["## Raft commit of liveness beats (4 nodes)", "",
                  "| node | leader | beats | p50 ms | p99 ms | max ms |",
                  "|---|---|---|---|---|---|"]
        for n, v in sorted(res["commit"].items()):
            lines.append("| %s | %s | %s | %.2f | %.2f | %.2f |" % (
                n, "yes" if v.get("leader") else "", v.get("n", 0), v.get("p50", 0),
                v.get("p99", 0), v.get("max", 0)))
        lines.append("")
    for sec, title in (("replication", "kv_set through one node"),
                       ("replication_spread", "kv_set spread over the three nodes")):
        if sec not in res:
            continue
        r = res[sec]
        lines += ["## Replication cost (%s, cmcp-bench, 3 nodes)" % title, "",
                  "| connections | mode | ops/s | vs RF 1 | p50 ms | p99 ms | nodes' CPU µs/op | "
                  "writes per commit (own / copies) | errors |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for key in sorted(r, key=lambda k: (int(k.split("@")[1]), k)):
            name, n = key.split("@")
            v, base = r[key], r["rf1@" + n]["ops_per_s"] or 1
            lines.append("| %s | %s | %.0f | %.2f× | %.2f | %.2f | %.0f | %.1f / %s | %d |" % (
                n, name, v["ops_per_s"], v["ops_per_s"] / base, v["p50_ms"], v["p99_ms"],
                v["node_cpu_us_per_op"], v.get("writes_per_own_commit", 0),
                "%.1f" % v["writes_per_copy_commit"] if v.get("writes_per_copy_commit") else "-",
                v["errors"]))
        lines.append("")
    if "scale" in res:
        r = res["scale"]
        lines += ["## %d sessions over %d nodes (RF 2)" % (r["sessions_asked"], r["nodes"]), "",
                  "sessions made: %d in %.1f s; held per node: %s" % (
                      r["sessions_made"], r["create_s"], r["held_per_node"]),
                  "", "| node | idle RSS MiB | RSS MiB with the sessions | after the kill |",
                  "|---|---|---|---|"]
        for i in sorted(r["rss_mib_per_node"], key=int):
            after = r["rss_mib_after_kill"].get(i, r["rss_mib_after_kill"].get(str(i)))
            lines.append("| n%s | %.0f | %.0f | %s |" % (
                i, r["idle_rss_mib_per_node"][i], r["rss_mib_per_node"][i],
                "%.0f" % after if after is not None else "killed"))
        lines += ["", "tools/call echo through all nodes at once, every request forwarded: "
                  "%.0f req/s, %d errors" % (r["forwarded_rps_all_nodes"],
                                            r["forwarded_errors"]),
                  "", "one node SIGKILLed: sessions %d before, %d after (lost %d); every session "
                  "held by a survivor %.1f s after the kill; writes: %s, lost %d, failed "
                  "visible %d" % (r["sessions_before_kill"], r["sessions_after_kill"],
                                  r["sessions_before_kill"] - r["sessions_after_kill"],
                                  r["all_sessions_back_s"], r["writes"]["summary"],
                                  r["writes"]["lost"], r["writes"]["failed_visible"]), ""]
    if "rto" in res:
        lines += ["## Failover RTO (SIGKILL of the owner under writes through another node)", "",
                  "| victim | trials | p50 ms | p99 ms | max ms | per session p50 / p99 ms | "
                  "acknowledged writes | lost |", "|---|---|---|---|---|---|---|---|"]
        for k, label in (("owner", "owner, not the leader"), ("owner_leader", "owner and leader")):
            v = res["rto"][k]
            lines.append("| %s | %d | %.0f | %.0f | %.0f | %.0f / %.0f | %d | %d |" % (
                label, v["trials"], v["rto_s"]["p50"] * 1000, v["rto_s"]["p99"] * 1000,
                v["rto_s"]["max"] * 1000, v["per_session_s"]["p50"] * 1000,
                v["per_session_s"]["p99"] * 1000, v["acked"], v["lost"]))
        lines.append("")
    if "forwarding" in res:
        r = res["forwarding"]
        lines += ["## Forwarding cost (tools/call echo, 32 connections, 3 nodes)", "",
                  "| round | owner req/s | forwarded req/s | ratio | owner p50/p99 ms | "
                  "forwarded p50/p99 ms |", "|---|---|---|---|---|---|"]
        o, f = r["owner"], r["forwarded"]
        for k in range(len(o["rps"])):
            lines.append("| %d | %.0f | %.0f | %.2f× | %s / %s | %s / %s |" % (
                k + 1, o["rps"][k], f["rps"][k], f["rps"][k] / (o["rps"][k] or 1),
                o["p50_ms"][k], o["p99_ms"][k], f["p50_ms"][k], f["p99_ms"][k]))
        lines.append("")
        lines.append("errors: owner %s, forwarded %s" % (o["errors"], f["errors"]))
        lines.append("")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description="cmcp cluster benchmarks (real nodes on loopback)")
    ap.add_argument("--bin-dir", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--trials", type=int, default=20,
                    help="trials of detection (formation, fence and leader: half as many, "
                         "at least 5)")
    ap.add_argument("--only",
                    default="formation,detection,fence,leader,commit,replication,"
                            "replication_spread,forwarding,rto")
    ap.add_argument("--out", default=None)
    ap.add_argument("--sessions", type=int, default=100000, help="scale: sessions in all")
    args = ap.parse_args()
    if not os.path.exists(os.path.join(args.bin_dir, "cmcpd")):
        sys.exit("cluster_bench: no cmcpd in %s (build first, or give --bin-dir)" % args.bin_dir)
    os.environ["CMCP_BIN_DIR"] = os.path.abspath(args.bin_dir)
    import cmcp_harness
    cmcp_harness.BIN_DIR = os.path.abspath(args.bin_dir)
    from cluster_harness import Cluster
    from cmcp_harness import wait_for
    out = args.out or os.path.join(args.bin_dir, "..", "bench-results",
                                   "cluster-" + time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out, exist_ok=True)
    env = machine()
    few = max(5, args.trials // 2)
    only = set(args.only.split(","))
    res = {}
    if "formation" in only:
        log("formation")
        res["formation"] = formation(Cluster, wait_for, few)
    if "detection" in only:
        log("detection")
        res["detection"] = detection(Cluster, wait_for, args.trials)
    if "fence" in only:
        log("fence")
        res["fence"] = fence(Cluster, wait_for, few)
    if "leader" in only:
        log("leader")
        res["leader"] = leader_failover(Cluster, wait_for, few)
    if "commit" in only:
        log("commit")
        res["commit"] = commit(Cluster, wait_for, 10)
    if "replication" in only:
        log("replication")
        res["replication"] = replication(Cluster, wait_for, 5, args.bin_dir)
    if "replication_spread" in only:
        log("replication_spread")
        res["replication_spread"] = replication(Cluster, wait_for, 5, args.bin_dir, spread=True)
    if "scale" in only:
        log("scale")
        res["scale"] = scale(Cluster, wait_for, args.bin_dir, sessions=args.sessions)
    if "rto" in only:
        log("rto")
        res["rto"] = rto(Cluster, wait_for, args.trials)
    if "forwarding" in only:
        log("forwarding")
        res["forwarding"] = forwarding(Cluster, wait_for, 5, args.bin_dir)
    env["loadavg_at_end"] = os.getloadavg()[0]
    with open(os.path.join(out, "raw.json"), "w") as f:
        json.dump({"machine": env, "results": res}, f, indent=1)
    text = report(res, env)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    log("results in %s" % out)
    margins = res.get("fence", {}).get("margin_s", {})
    if margins and margins["min"] <= 0:
        log("cluster_bench: a node was marked down before it stopped acknowledging writes")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
