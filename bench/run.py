#!/usr/bin/env python3
"""
cmcp benchmark suite: cmcp side by side with its peers and with the limit.

  python3 bench/run.py [--bin-dir build/bin] [--only http,wrk,tcp,memory,latency,restart,recovery]
                       [--rounds 3] [--duration 5] [--quick] [--out DIR]

Sections (docs/benchmarks.md shows their results and how they were obtained):

  http      tools/call echo over Streamable HTTP at several concurrencies:
            cmcp, the official TypeScript SDK server (bench/peers/, JSON and SSE
            answers) and nginx answering a static JSON-RPC body, all driven by
            cmcp-bench, in interleaved rounds (every round visits every target
            at every concurrency, the order of targets rotating)
  wrk       the same with wrk (Debian) as a cross-check, one session per target
  tcp       tools/call echo over TCP NDJSON: cmcp vs cmcp-bench-echod
  memory    whole-tree RSS (and PSS) of cmcp holding 10K/50K/100K connections,
            each with an initialized (and used) session; the same for the
            TypeScript SDK server up to where it holds
  latency   cmcp's p99 in open loop at 50% and 90% of its peak from `http`
  restart   bench/restart_latency.py
  recovery  a shard holding N sessions is SIGKILLed: time until its
            supervisor has it ready again, its own recovery time
            (sessions_recovered), and until a client's next call succeeds

Every run records the load average and, from /proc/stat, how much CPU the
rest of the machine (other people's builds) used meanwhile ("foreign" cores),
and how much the server under test used. Results: DIR/raw.jsonl (every run)
and DIR/summary.md (the tables), DIR defaulting to BIN_DIR/../bench-results/<time>.
Loopback only; every process it starts it stops (by pid); every loop bounded.
"""

import argparse
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from cmcp_harness import Node, wait_for  # noqa: E402
from mcp_client import HttpConn, Session, free_port  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
ECHO_BODY = ('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo",'
             '"arguments":{"text":"hello"}}}')


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- machine --

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
    mem = 0
    with open("/proc/meminfo") as f:
        for ln in f:
            if ln.startswith("MemTotal:"):
                mem = int(ln.split()[1]) // 1024
    def ver(cmd):
        try:
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
            return p.stdout.decode(errors="replace").strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"
    return {"nproc": os.cpu_count(), "cpu": model, "mem_mib": mem, "kernel": platform.release(),
            "node": ver(["node", "--version"]), "nginx": ver(["nginx", "-v"]),
            "wrk": ver(["wrk", "--version"]), "python": platform.python_version(),
            "loadavg_at_start": os.getloadavg()[0]}


# ------------------------------------------------------- processes and CPU --

def children_map():
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st[st.rfind(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def tree_of(root):
    """root and all its descendants (live pids)."""
    kids = children_map()
    out, todo = [], [root]
    for _ in range(100000):
        if not todo:
            break
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_ticks(pids):
    t = 0
    for p in pids:
        try:
            with open("/proc/%d/stat" % p) as f:
                st = f.read()
            fields = st[st.rfind(")") + 2:].split()
            t += int(fields[11]) + int(fields[12])  # utime stime
        except (OSError, IndexError):
            pass
    return t


def machine_busy_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v[:8]) - idle


def mem_of(pids):
    """Sums over pids: VmRSS, RssAnon, RssFile, RssShmem, Pss (KiB)."""
    tot = {"rss": 0, "anon": 0, "file": 0, "shmem": 0, "pss": 0, "procs": 0}
    per = []
    for p in pids:
        d = {}
        try:
            with open("/proc/%d/status" % p) as f:
                for ln in f:
                    k, _, v = ln.partition(":")
                    if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                        d[k] = int(v.split()[0])
            with open("/proc/%d/smaps_rollup" % p) as f:
                for ln in f:
                    if ln.startswith("Pss:"):
                        d["Pss"] = int(ln.split()[1])
            with open("/proc/%d/cmdline" % p, "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        name = os.path.basename(args[0].decode(errors="replace")) if args else "?"
        if b"--id" in args:
            name = args[args.index(b"--id") + 1].decode(errors="replace")
        tot["rss"] += d.get("VmRSS", 0)
        tot["anon"] += d.get("RssAnon", 0)
        tot["file"] += d.get("RssFile", 0)
        tot["shmem"] += d.get("RssShmem", 0)
        tot["pss"] += d.get("Pss", 0)
        tot["procs"] += 1
        per.append({"pid": p, "name": name, "rss_kib": d.get("VmRSS", 0), "pss_kib": d.get("Pss", 0)})
    tot["per_process"] = per
    return tot


def wait_port(port, timeout=15.0):
    def ok():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False
    wait_for(ok, timeout, 0.05, what="port %d" % port)


class Proc:
    """A process this script started; stopped by its pid (and its own children)."""

    def __init__(self, argv, cwd=None, env=None, log_path=None):
        self.log = open(log_path or os.devnull, "ab")
        self.p = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                  stdout=self.log, stderr=self.log, start_new_session=True)
        self.pid = self.p.pid

    def pids(self):
        return tree_of(self.pid) if self.p.poll() is None else []

    def alive(self):
        return self.p.poll() is None

    def stop(self):
        if self.p.poll() is None:
            mine = self.pids()
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=5)
            for q in mine[1:]:  # children that outlived their parent: ours, by pid
                try:
                    os.kill(q, signal.SIGKILL)
                except OSError:
                    pass
        self.log.close()


# ------------------------------------------------------------------ targets --

def wait_ready(port, timeout):
    """Until GET /ready on a node's metrics port answers 200 (its whole tree is up)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the node did not answer /ready with 200 within %d s" % timeout)
        time.sleep(0.05)


class Cmcp:
    name = "cmcp"

    def __init__(self, args, shards=None, listeners=None, log_level="warning", max_sessions=None,
                 durability=None, bin_dir=None):
        self.http, self.tcp, self.metrics = free_port(), free_port(), free_port()
        self.args = args
        cfg = """
[node]
log_level = %s
[listener]
http_port = %d
tcp_port = %d
[metrics]
port = %d
[admin]
endpoint = tcp://127.0.0.1:%d
[tree.shard]
count = %d
[tree.listener]
count = %d
[sessions]
max = %d
durability = %s
""" % (log_level, self.http, self.tcp, self.metrics, free_port(), shards or args.cmcp_shards,
       listeners or args.cmcp_listeners, max_sessions or args.cmcp_max_sessions,
       durability or args.cmcp_durability)
        self.listeners = listeners or args.cmcp_listeners
        # At log level warning the node does not log node_ready, and its ports are bound by
        # the root before the tree starts: wait for GET /ready instead.
        self.node = Node(cfg, cmcpd=os.path.join(bin_dir or args.bin_dir, "cmcpd"), wait_ready=False)
        self.node.start()
        try:
            wait_ready(self.metrics, 30)
        except TimeoutError:
            log(self.node.stderr_text()[-3000:])
            self.node.cleanup()
            raise
        self.url = "http://127.0.0.1:%d/mcp" % self.http
        self.tcp_url = "tcp://127.0.0.1:%d" % self.tcp
        self.init = True

    def pids(self):
        return self.node.tree_pids()

    def stop(self):
        self.node.cleanup()


class TsSdk:
    def __init__(self, args, json_mode):
        self.port = free_port()
        self.name = "ts-sdk-json" if json_mode else "ts-sdk-sse"
        self.dir = tempfile.mkdtemp(prefix="cmcp-bench-ts-")
        argv = ["node", os.path.join(HERE, "peers", "ts_sdk_echo_server.mjs"), "--port",
                str(self.port), "--time-limit", str(int(args.peer_time_limit))]
        if json_mode:
            argv.append("--json")
        self.proc = Proc(argv, cwd=os.path.join(HERE, "peers"),
                         log_path=os.path.join(self.dir, "server.log"))
        wait_port(self.port)
        self.url = "http://127.0.0.1:%d/mcp" % self.port
        self.init = True

    def pids(self):
        return self.proc.pids()

    def stop(self):
        self.proc.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Nginx:
    name = "nginx-static"

    def __init__(self, args):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="cmcp-bench-nginx-")
        with open(os.path.join(HERE, "peers", "nginx.conf.in")) as f:
            conf = f.read()
        conf = (conf.replace("@PORT@", str(self.port)).replace("@DIR@", self.dir)
                .replace("@WORKERS@", str(args.nginx_workers)))
        path = os.path.join(self.dir, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        self.proc = Proc(["nginx", "-p", self.dir, "-c", path, "-e", os.path.join(self.dir, "error.log")],
                         log_path=os.path.join(self.dir, "stderr.log"))
        wait_port(self.port)
        self.url = "http://127.0.0.1:%d/mcp" % self.port
        self.init = False

    def pids(self):
        return self.proc.pids()

    def stop(self):
        self.proc.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Echod:
    name = "echod"

    def __init__(self, args):
        self.port = free_port()
        self.proc = Proc([os.path.join(args.bin_dir, "cmcp-bench-echod"), "--port", str(self.port),
                          "--time-limit", str(int(args.peer_time_limit))])
        wait_port(self.port)
        self.tcp_url = "tcp://127.0.0.1:%d" % self.port

    def pids(self):
        return self.proc.pids()

    def stop(self):
        self.proc.stop()


class Hopd:
    """echod behind one process hop over a loop-driven AF_UNIX stream (2 back processes)."""
    name = "hopd"

    def __init__(self, args):
        self.port = free_port()
        self.proc = Proc([os.path.join(args.bin_dir, "cmcp-bench-hopd"), "--port", str(self.port),
                          "--backends", "2", "--time-limit", str(int(args.peer_time_limit))])
        wait_port(self.port)
        self.tcp_url = "tcp://127.0.0.1:%d" % self.port

    def pids(self):
        return self.proc.pids()

    def stop(self):
        self.proc.stop()


# -------------------------------------------------------------- load tools --

class Runner:
    def __init__(self, args, out_dir):
        self.args = args
        self.raw = open(os.path.join(out_dir, "raw.jsonl"), "a")

    def record(self, rec):
        self.raw.write(json.dumps(rec) + "\n")
        self.raw.flush()

    def measured(self, fn, server_pids):
        """Runs fn(); returns (its result, server cores, foreign cores, wall s)."""
        pids = list(server_pids)
        b0, s0, t0 = machine_busy_ticks(), cpu_ticks(pids), time.monotonic()
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        res = fn()
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        b1, s1, t1 = machine_busy_ticks(), cpu_ticks(pids), time.monotonic()
        wall = t1 - t0
        server = (s1 - s0) / HZ / wall
        gen = ((c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)) / wall
        foreign = max(0.0, (b1 - b0) / HZ / wall - server - gen)
        return res, server, gen, foreign, wall

    def bench(self, url, extra, server_pids=(), timeout=None, section="", target="", **meta):
        argv = [os.path.join(self.args.bin_dir, "cmcp-bench"), "--quiet", "--json", "-"] + \
            [str(a) for a in extra] + [url]
        la = os.getloadavg()[0]

        def run():
            p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=timeout or 3600)
            try:
                return json.loads(p.stdout)
            except ValueError:
                return {"error": "no report", "stderr": p.stderr.decode(errors="replace")[-2000:],
                        "rc": p.returncode}
        r, server, gen, foreign, wall = self.measured(run, server_pids)
        r.update({"section": section, "target_name": target, "loadavg_before": la,
                  "server_cores": round(server, 3), "generator_cores": round(gen, 3),
                  "foreign_cores": round(foreign, 3), "tool": "cmcp-bench"})
        r.update(meta)
        self.record(r)
        return r

    def wrk(self, url, conns, duration, headers, server_pids=(), section="", target="", **meta):
        lua = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        lua.write('wrk.method = "POST"\nwrk.body = \'%s\'\n' % ECHO_BODY)
        for k, v in headers.items():
            lua.write('wrk.headers["%s"] = "%s"\n' % (k, v))
        lua.close()
        argv = ["wrk", "-t1", "-c%d" % conns, "-d%ds" % duration, "--latency", "-s", lua.name, url]
        la = os.getloadavg()[0]

        def run():
            p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=duration + 60)
            return p.stdout.decode(errors="replace")
        out, server, gen, foreign, wall = self.measured(run, server_pids)
        os.unlink(lua.name)
        r = {"section": section, "target_name": target, "tool": "wrk", "connections": conns,
             "loadavg_before": la, "server_cores": round(server, 3),
             "generator_cores": round(gen, 3), "foreign_cores": round(foreign, 3)}
        r.update(meta)
        r["rps"], r["errors"], r["latency_ms"] = parse_wrk(out)
        r["raw"] = out[-3000:]
        self.record(r)
        return r


def init_session(url):
    """initialize + notifications/initialized with http.client; returns the session id."""
    import http.client
    port = int(url.split(":")[2].split("/")[0])
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        c.request("POST", "/mcp", json.dumps({
            "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "cmcp-bench-wrk", "version": "1"}}}), h)
        r = c.getresponse()
        sid = r.getheader("Mcp-Session-Id")
        r.read()
        if r.status != 200 or not sid:
            raise RuntimeError("initialize at %s: HTTP %d, session %r" % (url, r.status, sid))
        h.update({"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"})
        c.request("POST", "/mcp", '{"jsonrpc":"2.0","method":"notifications/initialized"}', h)
        r = c.getresponse()
        r.read()
        return sid
    finally:
        c.close()


def parse_wrk(out):
    rps, errors, lat = 0.0, 0, {}
    for ln in out.splitlines():
        s = ln.strip()
        if s.startswith("Requests/sec:"):
            rps = float(s.split()[1])
        elif s.startswith("Non-2xx or 3xx responses:"):
            errors += int(s.split(":")[1])
        elif s.startswith("Socket errors:"):
            for part in s.split(":", 1)[1].split(","):
                errors += int(part.split()[1])
        for p in ("50%", "90%", "99%"):
            if s.startswith(p) and len(s.split()) == 2:
                v = s.split()[1]
                mult = {"us": 0.001, "ms": 1.0, "s": 1000.0}
                for suf in ("us", "ms", "s"):
                    if v.endswith(suf):
                        lat["p" + p[:-1]] = float(v[:-len(suf)]) * mult[suf]
                        break
    return rps, errors, lat


def med(values):
    v = [x for x in values if x is not None]
    return statistics.median(v) if v else None


def fmt(x, nd=0):
    if x is None:
        return "—"
    if isinstance(x, float) and nd:
        return "%.*f" % (nd, x)
    return "{:,}".format(int(round(x)))


# ----------------------------------------------------------------- sections --

def baseline(args):
    """cmcp built from another tree (--baseline-bin-dir), measured beside this one in one run."""
    t = Cmcp(args, bin_dir=args.baseline_bin_dir)
    t.name = "cmcp-baseline"
    return t


def baseline_line(results, key_of, keys):
    """One line of this build's figures over the baseline's, for each configuration."""
    cells = []
    for k in keys:
        a, b = med([r.get("rps") for r in results.get(key_of("cmcp", k), [])]), \
            med([r.get("rps") for r in results.get(key_of("cmcp-baseline", k), [])])
        if a and b:
            cells.append("%s %.3f×" % (k, a / b))
    return "This build / the baseline build (requests/s, median): " + "; ".join(cells) + "."


def section_http(args, R, summary):
    concs = [int(c) for c in args.http_concurrency.split(",")]
    log("http: starting cmcp, ts-sdk (json, sse), nginx")
    targets = []
    try:
        targets.append(Cmcp(args))
        if args.baseline_bin_dir:
            targets.append(baseline(args))
        if args.cmcp_listeners != 1:
            t1 = Cmcp(args, listeners=1)
            t1.name = "cmcp-1-listener"
            targets.append(t1)
        targets.append(TsSdk(args, json_mode=True))
        targets.append(TsSdk(args, json_mode=False))
        targets.append(Nginx(args))
        results = {}
        for rnd in range(args.rounds):
            order = targets[rnd % len(targets):] + targets[:rnd % len(targets)]
            for c in concs:
                for t in order:
                    extra = ["-c", c, "-d", args.duration, "-w", args.warmup, "--ramp-timeout", 60]
                    if not t.init:
                        extra.append("--no-init")
                    r = R.bench(t.url, extra, t.pids(), section="http", target=t.name, round=rnd,
                                concurrency=c)
                    results.setdefault((t.name, c), []).append(r)
                    log("http r%d c=%d %-13s %9.0f rps  p99 %7.3f ms  errors %s  foreign %.2f cores"
                        % (rnd, c, t.name, r.get("rps", 0), r.get("latency_ms", {}).get("p99", -1),
                           r.get("errors"), r["foreign_cores"]))
    finally:
        for t in targets:
            t.stop()
    names = [t.name for t in targets]
    rows = []
    best = {}
    for c in concs:
        row = {"c": c}
        for n in names:
            rs = results.get((n, c), [])
            row[n] = {"rps": med([r.get("rps") for r in rs]),
                      "rps_all": [round(r.get("rps", 0)) for r in rs],
                      "p99": med([r.get("latency_ms", {}).get("p99") for r in rs]),
                      "errors": sum(r.get("errors", 0) or 0 for r in rs)
                      + sum(r.get("ramp", {}).get("sessions_failed", 0) for r in rs),
                      "server_cores": med([r.get("server_cores") for r in rs]),
                      "gen_cores": med([r.get("generator_cores") for r in rs]),
                      "foreign": med([r.get("foreign_cores") for r in rs]),
                      "load": med([r.get("loadavg_before") for r in rs])}
            if row[n]["rps"] and row[n]["rps"] > best.get(n, (0, 0))[0]:
                best[n] = (row[n]["rps"], c)
        rows.append(row)
    summary["http"] = {"rows": rows, "best": best, "names": names}
    lines = ["### Streamable HTTP, tools/call echo (cmcp-bench, closed loop, one session per connection)",
             "",
             "Median of %d interleaved rounds, %g s each after %g s warm-up; requests/s "
             "(p99 ms). Errors over all rounds in the last columns." % (args.rounds, args.duration, args.warmup),
             "",
             "| connections | " + " | ".join(names) + " | cmcp / best TS SDK | cmcp / nginx | errors (in column order) | foreign cores | load avg |",
             "|---|" + "---|" * (len(names) + 5)]
    for row in rows:
        cells = []
        for n in names:
            cells.append("%s (%s)" % (fmt(row[n]["rps"]), fmt(row[n]["p99"], 2)))
        ts = max(row["ts-sdk-json"]["rps"] or 0, row["ts-sdk-sse"]["rps"] or 0)
        cm = row["cmcp"]["rps"] or 0
        ng = row["nginx-static"]["rps"] or 0
        lines.append("| %d | %s | %s | %s | %s | %.2f | %.1f |" % (
            row["c"], " | ".join(cells), "%.1f×" % (cm / ts) if ts else "—",
            "%.2f×" % (cm / ng) if ng else "—",
            ", ".join(str(row[n]["errors"]) for n in names),  # in the order of the columns
            med([row[n]["foreign"] for n in names]) or 0, med([row[n]["load"] for n in names]) or 0))
    if args.baseline_bin_dir:
        lines.append("")
        lines.append(baseline_line(results, lambda n, c: (n, c), concs))
    lines.append("")
    lines.append("Every round's requests/s: " + "; ".join(
        "%s c=%d %s" % (n, row["c"], row[n]["rps_all"]) for row in rows for n in names))
    lines.append("")
    lines.append("Server / generator CPU (cores, median) at each concurrency: " + "; ".join(
        "c=%d: %s" % (row["c"], ", ".join("%s %.2f / %.2f" % (n, row[n]["server_cores"] or 0,
                                                           row[n]["gen_cores"] or 0) for n in names))
        for row in rows))
    cb, tb = best.get("cmcp", (0, 0)), max(best.get("ts-sdk-json", (0, 0)), best.get("ts-sdk-sse", (0, 0)))
    nb = best.get("nginx-static", (0, 0))
    lines.append("")
    lines.append("Peaks: cmcp %s/s (c=%d), TS SDK %s/s, nginx %s/s: cmcp = %.1f× TS SDK "
                 "(target ≥ 10×), %.2f× nginx (target ≥ 0.5×)." % (
                     fmt(cb[0]), cb[1], fmt(tb[0]), fmt(nb[0]), cb[0] / tb[0] if tb[0] else 0,
                     cb[0] / nb[0] if nb[0] else 0))
    return "\n".join(lines)


def section_wrk(args, R, summary):
    c = args.wrk_connections
    targets = []
    results = {}
    try:
        targets = [Cmcp(args), TsSdk(args, json_mode=True), TsSdk(args, json_mode=False), Nginx(args)]
        headers = {}
        for t in targets:
            h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
            if t.init:
                h["Mcp-Session-Id"] = init_session(t.url)
                h["MCP-Protocol-Version"] = "2025-11-25"
            headers[t.name] = h
        for rnd in range(args.rounds):
            order = targets[rnd % len(targets):] + targets[:rnd % len(targets)]
            for t in order:
                # wrk has no warm-up: a short unrecorded run first
                R.wrk(t.url, c, 1, headers[t.name], t.pids(), section="wrk-warmup", target=t.name)
                r = R.wrk(t.url, c, int(args.duration), headers[t.name], t.pids(), section="wrk",
                          target=t.name, round=rnd)
                results.setdefault(t.name, []).append(r)
                log("wrk r%d c=%d %-13s %9.0f rps errors %d" % (rnd, c, t.name, r["rps"], r["errors"]))
    finally:
        for t in targets:
            t.stop()
    lines = ["### Cross-check with wrk (-t1 -c%d, one session shared by all connections)" % c, "",
             "| target | requests/s (median of %d) | every round | p99 ms | non-2xx + socket errors | foreign cores |" % args.rounds,
             "|---|---|---|---|---|---|"]
    for t in targets:
        rs = results.get(t.name, [])
        lines.append("| %s | %s | %s | %s | %d | %.2f |" % (
            t.name, fmt(med([r["rps"] for r in rs])), [round(r["rps"]) for r in rs],
            fmt(med([r["latency_ms"].get("p99") for r in rs]), 2), sum(r["errors"] for r in rs),
            med([r["foreign_cores"] for r in rs]) or 0))
    summary["wrk"] = {t.name: med([r["rps"] for r in results.get(t.name, [])]) for t in targets}
    return "\n".join(lines)


def section_tcp(args, R, summary):
    configs = [(int(c), 1) for c in args.tcp_concurrency.split(",")] + [(16, 16)]
    targets = []
    results = {}
    try:
        targets = [Cmcp(args), Echod(args), Hopd(args)]
        if args.baseline_bin_dir:
            targets.append(baseline(args))
        for rnd in range(args.rounds):
            order = targets[rnd % len(targets):] + targets[:rnd % len(targets)]
            for c, depth in configs:
                for t in order:
                    r = R.bench(t.tcp_url, ["-c", c, "--depth", depth, "-d", args.duration, "-w",
                                            args.warmup], t.pids(), section="tcp", target=t.name,
                                round=rnd, concurrency=c, depth=depth)
                    results.setdefault((t.name, c, depth), []).append(r)
                    log("tcp r%d c=%d depth=%d %-6s %9.0f rps p99 %7.3f ms errors %s" % (
                        rnd, c, depth, t.name, r.get("rps", 0), r.get("latency_ms", {}).get("p99", -1),
                        r.get("errors")))
    finally:
        for t in targets:
            t.stop()
    lines = ["### TCP NDJSON, tools/call echo (cmcp-bench, closed loop, one session per connection)", "",
             "hopd: echod behind one process hop (a front and 2 back processes over AF_UNIX streams "
             "in their libev loops, writes batched per loop iteration): the floor of cmcp's "
             "two-process shape without nng.", "",
             "| connections × depth | cmcp req/s (p99 ms) | echod req/s (p99 ms) | hopd req/s (p99 ms) | cmcp / echod | hopd / echod | errors (cmcp, echod, hopd) | CPU cores (cmcp, echod, hopd) | foreign cores | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    best = 0
    for c, depth in configs:
        a = results.get(("cmcp", c, depth), [])
        b = results.get(("echod", c, depth), [])
        h = results.get(("hopd", c, depth), [])
        ra, rb, rh = med([r.get("rps") for r in a]), med([r.get("rps") for r in b]), med([r.get("rps") for r in h])
        p99 = lambda rs: fmt(med([r.get("latency_ms", {}).get("p99") for r in rs]), 2)  # noqa: E731
        lines.append("| %d × %d | %s (%s) | %s (%s) | %s (%s) | %s | %s | %d, %d, %d | %.2f, %.2f, %.2f | %.2f | %.1f |" % (
            c, depth, fmt(ra), p99(a), fmt(rb), p99(b), fmt(rh), p99(h),
            "%.2f×" % (ra / rb) if ra and rb else "—", "%.2f×" % (rh / rb) if rh and rb else "—",
            sum(r.get("errors", 0) or 0 for r in a), sum(r.get("errors", 0) or 0 for r in b),
            sum(r.get("errors", 0) or 0 for r in h), med([r.get("server_cores") for r in a]) or 0,
            med([r.get("server_cores") for r in b]) or 0, med([r.get("server_cores") for r in h]) or 0,
            med([r.get("foreign_cores") for r in a + b + h]) or 0,
            med([r.get("loadavg_before") for r in a + b + h]) or 0))
        if ra and rb:
            best = max(best, ra / rb)
    if args.baseline_bin_dir:
        lines.append("")
        lines.append(baseline_line(results, lambda n, k: (n,) + k, configs))
    summary["tcp"] = {"best_ratio": best}
    return "\n".join(lines)


PER_PROCESS = 15000  # connections per cmcp-bench process: RLIMIT_NOFILE may be 20000 here


def nofile_limit():
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def hold_sessions(args, R, url, n, pids_fn, target, ramp_timeout=300):
    """n connections, each with an initialized and used session, held open by cmcp-bench
    processes of at most PER_PROCESS connections each (each with its own source address);
    the server's memory is read while all of them hold. Returns (merged report, memory)."""
    tmp = tempfile.mkdtemp(prefix="cmcp-bench-hold-")
    go = os.path.join(tmp, "go")
    k = max(1, math.ceil(n / float(PER_PROCESS)))
    procs = []
    mem = None
    try:
        for i in range(k):
            share = n // k + (1 if i < n % k else 0)
            argv = [os.path.join(args.bin_dir, "cmcp-bench"), "--quiet", "--json", "-", "-c",
                    str(share), "--ramp-concurrency", str(max(16, 256 // k)), "--ramp-timeout",
                    str(ramp_timeout), "--ramp-calls", "1", "-d", "0", "--hold", "900",
                    "--hold-until", go, "--hold-check", "--ready-file",
                    os.path.join(tmp, "ready-%d" % i), "--source-base", "127.0.%d.1" % (10 + i),
                    "--request-timeout", "60", url]
            procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        wait_for(lambda: all(os.path.exists(os.path.join(tmp, "ready-%d" % i)) or procs[i].poll() is not None
                             for i in range(k)), ramp_timeout + 30, 0.2, what="hold of %d sessions" % n)
        time.sleep(2.0)  # settle: last answers written, allocator quiet
        mem = mem_of(pids_fn())
        with open(go, "w"):
            pass
        reports = []
        for p in procs:
            out, err = p.communicate(timeout=180)
            try:
                reports.append(json.loads(out))
            except ValueError:
                reports.append({"error": "no report", "stderr": err.decode(errors="replace")[-2000:]})
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    r = {"section": "memory", "target_name": target, "sessions_target": n, "memory": mem,
         "loadavg": os.getloadavg()[0], "processes": k, "reports": reports,
         "ramp": {"sessions_ok": sum(x.get("ramp", {}).get("sessions_ok", 0) for x in reports),
                  "seconds": max(x.get("ramp", {}).get("seconds", 0) for x in reports)},
         "check": {"ok": sum(x.get("check", {}).get("ok", 0) for x in reports),
                   "errors": sum(x.get("check", {}).get("errors", 0) for x in reports)}}
    R.record(r)
    return r, mem


def section_memory(args, R, summary):
    rows = []
    for kind in ("cmcp", "ts-sdk-json"):
        sizes = [int(x) for x in (args.memory_sizes if kind == "cmcp" else args.memory_sizes_ts).split(",")]
        for n in sizes:
            # One process holds at most RLIMIT_NOFILE connections: cmcp spreads them over
            # listeners (SO_REUSEPORT); the TS SDK server is one process.
            listeners = max(args.cmcp_listeners, math.ceil(n / float(PER_PROCESS)))
            if kind != "cmcp" and n + 200 > nofile_limit():
                rows.append({"target": kind, "n": n, "held": None, "check_ok": None, "ramp_s": None,
                             "base": None, "mem": None, "ok": False, "load": None,
                             "note": "not run: one process, RLIMIT_NOFILE %d" % nofile_limit()})
                break
            log("memory: %s with %d sessions" % (kind, n))
            t = Cmcp(args, listeners=listeners, max_sessions=max(args.cmcp_max_sessions, int(n * 1.1))) \
                if kind == "cmcp" else TsSdk(args, json_mode=True)
            try:
                time.sleep(1.0)
                base = mem_of(t.pids())
                url = t.url
                r, mem = hold_sessions(args, R, url, n, t.pids, kind,
                                       ramp_timeout=args.memory_ramp_timeout)
                alive = t.node.poll() is None if kind == "cmcp" else t.proc.alive()
            finally:
                t.stop()
            held = r.get("ramp", {}).get("sessions_ok", 0)
            chk = r.get("check", {})
            ok = held == n and chk.get("ok") == n and alive
            row = {"target": kind + (" (%d listeners)" % listeners if kind == "cmcp" else ""),
                   "n": n, "held": held, "check_ok": chk.get("ok"),
                   "ramp_s": r.get("ramp", {}).get("seconds"), "base": base, "mem": mem, "ok": ok,
                   "load": r.get("loadavg")}
            rows.append(row)
            log("memory %s n=%d held=%d check=%s rss=%s MiB" % (
                kind, n, held, chk, (mem or {}).get("rss", 0) // 1024))
            if not ok and kind != "cmcp":
                break  # the peer no longer holds: larger sizes are pointless
    lines = ["### Memory: concurrent connections, each with an initialized and used session", "",
             "RSS summed over every process of the server (cmcp: the whole tree); PSS counts shared "
             "pages (libraries) once. Per session: (RSS with N sessions − RSS of the idle server) / N.",
             "",
             "| server | sessions asked | held (setup ok / answered after the hold) | ramp s | idle RSS MiB | RSS MiB | PSS MiB | anon MiB | RSS per session | PSS per session | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if row.get("note"):
            lines.append("| %s | %s | %s | | | | | | | | |" % (row["target"], fmt(row["n"]), row["note"]))
            continue
        m, b = row["mem"] or {}, row["base"] or {}
        per = (m.get("rss", 0) - b.get("rss", 0)) * 1024 / row["n"] if m else None
        perp = (m.get("pss", 0) - b.get("pss", 0)) * 1024 / row["n"] if m else None
        lines.append("| %s | %s | %s / %s | %s | %s | %s | %s | %s | %s | %s | %.1f |" % (
            row["target"], fmt(row["n"]), fmt(row["held"]), fmt(row["check_ok"]),
            fmt(row["ramp_s"], 1), fmt(b.get("rss", 0) / 1024.0, 1),
            fmt(m.get("rss", 0) / 1024.0, 1) if m else "—", fmt(m.get("pss", 0) / 1024.0, 1) if m else "—",
            fmt(m.get("anon", 0) / 1024.0, 1) if m else "—",
            "%s B" % fmt(per) if per is not None else "—", "%s B" % fmt(perp) if perp is not None else "—",
            row["load"] or 0))
    for row in rows:
        if row["mem"]:
            lines.append("")
            lines.append("%s, %s sessions, per process (RSS MiB): %s" % (
                row["target"], fmt(row["n"]), ", ".join(
                    "%s %.1f" % (p["name"], p["rss_kib"] / 1024.0) for p in row["mem"]["per_process"])))
    summary["memory"] = rows
    return "\n".join(lines)


def section_latency(args, R, summary):
    peak = args.peak or 0
    if not peak and summary.get("http"):
        peak = summary["http"]["best"].get("cmcp", (0, 0))[0]
    if not peak:
        log("latency: measuring cmcp's peak first")
        t = Cmcp(args)
        try:
            rs = [R.bench(t.url, ["-c", 64, "-d", args.duration, "-w", args.warmup], t.pids(),
                          section="latency-peak", target="cmcp") for _ in range(2)]
        finally:
            t.stop()
        peak = max(r.get("rps", 0) for r in rs)
    conns = args.latency_connections
    if not conns:
        # as many connections as the peak had: fewer cannot carry 90% of it in open loop
        conns = (summary.get("http", {}).get("best", {}).get("cmcp", (0, 0))[1]) or 256
    args.latency_connections = conns
    fracs = [float(x) for x in args.latency_fractions.split(",")]
    rows = []
    t = Cmcp(args)
    ctl = Nginx(args)  # control: the static responder at the same rates, interleaved
    try:
        for rnd in range(args.rounds):
            for frac in fracs:
                rate = peak * frac
                for tgt in (t, ctl) if rnd % 2 == 0 else (ctl, t):
                    extra = ["-c", conns, "-r", "%.0f" % rate, "-d", args.latency_duration, "-w", args.warmup]
                    if not tgt.init:
                        extra.append("--no-init")
                    r = R.bench(tgt.url, extra, tgt.pids(), section="latency", target=tgt.name,
                                fraction=frac, round=rnd)
                    rows.append((tgt.name, frac, rate, r))
                    log("latency r%d %s %.0f%% of %.0f: %.0f rps p50 %.3f p99 %.3f ms errors %s" % (
                        rnd, tgt.name, frac * 100, peak, r.get("rps", 0), r.get("latency_ms", {}).get("p50", -1),
                        r.get("latency_ms", {}).get("p99", -1), r.get("errors")))
    finally:
        t.stop()
        ctl.stop()
    lines = ["### Latency under load (open loop, %d connections, latency from each request's intended start)"
             % conns, "",
             "Rates are fractions of cmcp's peak, %s requests/s (the best median of the HTTP comparison). "
             "nginx's static answer at the same absolute rates, interleaved, is the control: what the "
             "machine, the load generator and the other people's work on it add to any server." % fmt(peak), "",
             "Errors here are requests the server could not take in time: open loop keeps at most 2 s of "
             "requests waiting for a free connection (`overload` beyond that) and drains the rest for "
             "--request-timeout after the window.", "",
             "| server | load | rate asked | achieved req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors | max backlog | foreign cores | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, frac, rate, r in sorted(rows, key=lambda x: (x[1], x[0] != "cmcp")):
        l = r.get("latency_ms", {})
        lines.append("| %s | %d%% | %s | %s | %s | %s | %s | %s | %s | %s | %s | %.2f | %.1f |" % (
            name, frac * 100, fmt(rate), fmt(r.get("rps")), fmt(l.get("p50"), 3), fmt(l.get("p90"), 3),
            fmt(l.get("p99"), 3), fmt(l.get("p999"), 3), fmt(l.get("max"), 3), r.get("errors"),
            r.get("max_backlog"), r.get("foreign_cores", 0), r.get("loadavg_before", 0)))
    cm = [(f, r) for n, f, _, r in rows if n == "cmcp"]
    summary["latency"] = {"peak": peak,
                          "p99_50": med([r.get("latency_ms", {}).get("p99") for f, r in cm if f == 0.5]),
                          "p99_90": med([r.get("latency_ms", {}).get("p99") for f, r in cm if f == 0.9])}
    return "\n".join(lines)


def section_restart(args, R, summary):
    argv = [sys.executable, os.path.join(HERE, "restart_latency.py"), "--cmcpd",
            os.path.join(args.bin_dir, "cmcpd"), "--kills", str(args.restart_kills)]
    la = os.getloadavg()[0]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    out = p.stdout.decode(errors="replace")
    R.record({"section": "restart", "output": out, "rc": p.returncode, "loadavg": la})
    summary["restart"] = out
    return "### Restart latency (bench/restart_latency.py --kills %d, load avg %.1f)\n\n```\n%s```" % (
        args.restart_kills, la, out)


def section_recovery(args, R, summary):
    sizes = [int(s) for s in args.recovery_sizes.split(",")]
    rows = []
    for n in sizes:
        log("recovery: %d sessions" % n)
        t = Cmcp(args, log_level="info", max_sessions=max(args.cmcp_max_sessions, int(n * 1.2)))
        try:
            # n sessions over the shards, made and used over HTTP (they outlive their connections)
            # in batches of PER_PROCESS connections, each from its own source address
            made = 0
            for b in range(math.ceil(n / float(PER_PROCESS))):
                share = min(PER_PROCESS, n - b * PER_PROCESS)
                r = R.bench(t.url, ["-c", share, "--ramp-calls", 1, "-d", 0, "--ramp-timeout", 300,
                                    "--source-base", "127.0.%d.1" % (40 + b)],
                            t.pids(), section="recovery-setup", target="cmcp", sessions=share)
                made += r.get("ramp", {}).get("sessions_ok", 0)
            probe = None
            for _ in range(20):
                s = Session(t.http)
                if s.sid.startswith("0-"):
                    probe = s
                    break
                s.conn.close()
            assert probe, "no session on shard-0"
            probe.tool("echo", {"text": "x"})
            for k in range(args.recovery_kills):
                pid = t.node.child_pids("shard_sup")["shard-0"]
                t.node.log_events()
                mark = len(t.node._events)
                t_kill = time.monotonic_ns() / 1e6
                os.kill(pid, signal.SIGKILL)
                t_ok, tries = None, 0
                for tries in range(1, 2001):
                    try:
                        c = HttpConn(t.http, timeout=15)
                        resp = probe.post({"jsonrpc": "2.0", "id": 1000 + tries, "method": "tools/call",
                                           "params": {"name": "echo", "arguments": {"text": "x"}}},
                                          conn=c, timeout=15)
                        c.close()
                        if resp.status == 200 and "result" in resp.messages()[0]:
                            t_ok = time.monotonic_ns() / 1e6
                            break
                    except (OSError, TimeoutError, ValueError, IndexError):
                        pass
                    time.sleep(0.001)
                ready = t.node.wait_event("child_ready", 30, child="shard-0")
                rec = t.node.wait_event("sessions_recovered", 30)
                new_ready = [e for e in t.node._events[mark:] if e.get("event") == "child_ready"
                             and e.get("child") == "shard-0"]
                new_rec = [e for e in t.node._events[mark:] if e.get("event") == "sessions_recovered"]
                row = {"n": n, "made": made, "kill": k,
                       "ready_ms": new_ready[0]["t_mono"] - t_kill if new_ready else None,
                       "recovered": new_rec[0].get("sessions") if new_rec else None,
                       "recover_ms": new_rec[0].get("ms") if new_rec else None,
                       "client_ms": (t_ok - t_kill) if t_ok else None, "tries": tries,
                       "load": os.getloadavg()[0]}
                del ready, rec
                rows.append(row)
                R.record(dict(row, section="recovery"))
                log("recovery n=%d kill %d: ready %.1f ms, recovered %s sessions in %s ms, client %.1f ms" % (
                    n, k, row["ready_ms"] or -1, row["recovered"], row["recover_ms"], row["client_ms"] or -1))
                time.sleep(0.5)
            probe.conn.close()
        finally:
            t.stop()
    lines = ["### Shard recovery (SIGKILL of shard-0 holding half of N durable sessions, durability %s)" % args.cmcp_durability, "",
             "ready: kill → the supervisor's child_ready for the new shard-0; recovery: the shard's own "
             "sessions_recovered time (loading its store); client: kill → the first successful tools/call "
             "on a session of shard-0 (retried at once on failure).", "",
             "| sessions (node) | kill | sessions recovered | ready ms | recovery ms (in shard) | client ms | load avg |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append("| %s | %d | %s | %s | %s | %s | %.1f |" % (
            fmt(row["made"]), row["kill"], fmt(row["recovered"]), fmt(row["ready_ms"], 1),
            fmt(row["recover_ms"], 1), fmt(row["client_ms"], 1), row["load"]))
    summary["recovery"] = rows
    return "\n".join(lines)


SECTIONS = {"http": section_http, "wrk": section_wrk, "tcp": section_tcp, "memory": section_memory,
            "latency": section_latency, "restart": section_restart, "recovery": section_recovery}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dir", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--only", default="http,wrk,tcp,memory,latency,restart,recovery")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--quick", action="store_true", help="1 round, 2 s runs, smaller sizes")
    ap.add_argument("--http-concurrency", default="1,16,64,256")
    ap.add_argument("--tcp-concurrency", default="1,16,64")
    ap.add_argument("--wrk-connections", type=int, default=64)
    ap.add_argument("--memory-sizes", default="10000,50000,100000")
    ap.add_argument("--memory-sizes-ts", default="10000,19000,50000")
    ap.add_argument("--memory-ramp-timeout", type=float, default=300)
    ap.add_argument("--hold-seconds", type=float, default=6)
    ap.add_argument("--latency-connections", type=int, default=0,
                    help="connections for `latency` (0: those of cmcp's peak, else 256)")
    ap.add_argument("--latency-fractions", default="0.5,0.9")
    ap.add_argument("--latency-duration", type=float, default=10)
    ap.add_argument("--peak", type=float, default=0, help="cmcp's peak req/s for `latency` (else measured)")
    ap.add_argument("--restart-kills", type=int, default=100)
    ap.add_argument("--recovery-sizes", default="10000,100000")
    ap.add_argument("--recovery-kills", type=int, default=3)
    ap.add_argument("--cmcp-shards", type=int, default=2)
    ap.add_argument("--cmcp-listeners", type=int, default=2,
                    help="cmcp's listeners (the http section also runs the default, 1, alongside)")
    ap.add_argument("--cmcp-durability", default="group")
    ap.add_argument("--cmcp-max-sessions", type=int, default=100000)
    ap.add_argument("--nginx-workers", type=int, default=2, help="nginx worker_processes (2 = auto here)")
    ap.add_argument("--peer-time-limit", type=float, default=7200)
    ap.add_argument("--out", default=None)
    ap.add_argument("--baseline-bin-dir", default=None,
                    help="another build's bin directory: its cmcpd runs beside this one in the http "
                         "and tcp sections, in the same interleaved rounds (before/after a change)")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 2, 1
        args.memory_sizes, args.memory_sizes_ts, args.recovery_sizes = "10000", "5000", "10000"
        args.restart_kills, args.recovery_kills, args.latency_duration = 20, 1, 4
        args.http_concurrency, args.tcp_concurrency = "16,64", "16"
    args.bin_dir = os.path.abspath(args.bin_dir)
    if args.baseline_bin_dir:
        args.baseline_bin_dir = os.path.abspath(args.baseline_bin_dir)
        if not os.access(os.path.join(args.baseline_bin_dir, "cmcpd"), os.X_OK):
            sys.exit("bench: no cmcpd in %s (--baseline-bin-dir)" % args.baseline_bin_dir)
    for exe in ("cmcpd", "cmcp-bench", "cmcp-bench-echod", "cmcp-bench-hopd"):
        if not os.access(os.path.join(args.bin_dir, exe), os.X_OK):
            sys.exit("bench: no %s in %s (build first)" % (exe, args.bin_dir))
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    for s in only:
        if s not in SECTIONS:
            sys.exit("bench: unknown section %s" % s)
    if any(s in only for s in ("http", "wrk", "memory")):
        if not os.path.isdir(os.path.join(HERE, "peers", "node_modules", "@modelcontextprotocol")):
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                           cwd=os.path.join(HERE, "peers"), check=True, timeout=600)
        for tool in ("nginx", "wrk", "node"):
            if not shutil.which(tool):
                sys.exit("bench: %s is missing (tools/install-deps.sh)" % tool)
    # 100K connections: both ends inherit this (root may raise the hard limit).
    want = 1048576
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = args.out or os.path.join(os.path.dirname(args.bin_dir), "bench-results", stamp)
    os.makedirs(out_dir, exist_ok=True)
    m = machine()
    R = Runner(args, out_dir)
    R.record({"section": "machine", **m, "args": vars(args)})
    head = ["## Benchmark suite run %s" % stamp, "",
            "Machine: %d CPUs (%s), %d MiB, kernel %s; node %s, %s, %s. Load average at start %.2f; "
            "RLIMIT_NOFILE %d. cmcp: %d shard(s), %d listener(s), durability %s; nginx: %d worker(s). "
            "Generator: cmcp-bench, 1 thread, on the same machine." % (
                m["nproc"], m["cpu"], m["mem_mib"], m["kernel"], m["node"], m["nginx"], m["wrk"],
                m["loadavg_at_start"], resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                args.cmcp_shards, args.cmcp_listeners, args.cmcp_durability, args.nginx_workers), ""]
    summary = {}
    parts = ["\n".join(head)]
    for s in ("http", "wrk", "tcp", "memory", "latency", "restart", "recovery"):
        if s not in only:
            continue
        t0 = time.monotonic()
        try:
            parts.append(SECTIONS[s](args, R, summary))
        except Exception as e:  # one section failing must not lose the others' results
            import traceback
            traceback.print_exc()
            parts.append("### %s\n\nFAILED: %r" % (s, e))
        log("section %s took %.0f s" % (s, time.monotonic() - t0))
        with open(os.path.join(out_dir, "summary.md"), "w") as f:
            f.write("\n\n".join(parts) + "\n")
    text = "\n\n".join(parts) + "\n"
    print(text)
    log("results in %s" % out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
