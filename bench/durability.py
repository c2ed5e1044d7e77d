#!/usr/bin/env python3
"""Durable sessions, measured (docs/benchmarks.md, "Durability"):

1. tools/call kv_set (one write per request) and echo (no write) over
   Streamable HTTP with each durability mode (fsync, group, none), with wrk,
   the modes interleaved round by round;
2. recovery: a shard holding N sessions (default 100,000) is killed with
   SIGKILL; the time its replacement takes to load them, from its
   sessions_recovered log line, and from the kill to its readiness.

Loopback only; every loop bounded; kills only the processes it started.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from mcp_client import Session, free_port  # noqa: E402


def start_node(cmcpd, mode, extra_env=None):
    d = tempfile.mkdtemp(prefix="cmcp-dur-", dir="/tmp")
    http, tcp = free_port(), free_port()
    env = dict(os.environ, CMCP_NODE_RUN_DIR=os.path.join(d, "run"), CMCP_NODE_DATA_DIR=os.path.join(d, "data"),
               CMCP_LISTENER_HTTP_PORT=str(http), CMCP_LISTENER_TCP_PORT=str(tcp),
               CMCP_SESSIONS_DURABILITY=mode, CMCP_LOG_LEVEL="notice", CMCP_METRICS_PORT="0",
               CMCP_ADMIN_ENDPOINT="")
    env.update(extra_env or {})
    log = open(os.path.join(d, "stderr.log"), "wb")
    p = subprocess.Popen([cmcpd], env=env, stdout=subprocess.DEVNULL, stderr=log, cwd=d)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", http), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    time.sleep(0.3)
    return p, d, http


def stop_node(p, d):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(15)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    shutil.rmtree(d, ignore_errors=True)


KEYS = 20


def wrk(http, sid, body, seconds, conns):
    lua = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    lua.write(f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["Mcp-Session-Id"] = "{sid}"
wrk.headers["MCP-Protocol-Version"] = "2025-11-25"
counter = 0
request = function()
  counter = counter + 1
  -- keys rotate (a session of KEYS keys), so every kv_set really writes
  return wrk.format(nil, nil, nil, string.format('{body}', counter % {KEYS}))
end
""")
    lua.close()
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "-s", lua.name,
                          f"http://127.0.0.1:{http}/mcp"], capture_output=True, text=True, timeout=seconds + 30).stdout
    os.unlink(lua.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    lat = re.search(r"Latency\s+([\d.]+)(\w+)", out)
    return rps, int(non2xx.group(1)) if non2xx else 0, lat.group(1) + lat.group(2) if lat else "?"


KV = ('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"kv_set",'
      '"arguments":{"key":"k%d","value":"v"}}}')
ECHO = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"t%d"}}}'


def throughput(cmcpd, rounds, seconds, conns):
    results = {}
    for r in range(rounds):
        for mode in ("fsync", "group", "none"):
            p, d, http = start_node(cmcpd, mode)
            try:
                s = Session(http)
                for name, body in (("kv_set", KV), ("echo", ECHO)):
                    rps, bad, lat = wrk(http, s.sid, body, seconds, conns)
                    results.setdefault((mode, name), []).append((rps, bad, lat))
                    print(f"round {r + 1} {mode:5} {name:6} {rps:9.0f} req/s  non-2xx {bad}  mean latency {lat}",
                          flush=True)
            finally:
                stop_node(p, d)
    return results


def recovery(cmcpd, sessions):
    p, d, http = start_node(cmcpd, "none", {"CMCP_TREE_SHARD_COUNT": "1", "CMCP_SESSIONS_MAX": str(sessions * 2),
                                            "CMCP_SESSIONS_ABANDONED_TIMEOUT_MS": "86400000",
                                            "CMCP_LOG_LEVEL": "info"})
    try:
        init = ('{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
                '"capabilities":{},"clientInfo":{"name":"b","version":"1"}}}')
        lua = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        lua.write(f"""
wrk.method = "POST"
wrk.body = '{init}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
""")
        lua.close()
        made = 0
        t0 = time.monotonic()
        while made < sessions and time.monotonic() - t0 < 600:
            secs = max(1, min(5, (sessions - made) // 4000))
            out = subprocess.run(["wrk", "-t1", "-c32", f"-d{secs}s", "-s", lua.name, f"http://127.0.0.1:{http}/mcp"],
                                 capture_output=True, text=True, timeout=60).stdout
            made += int(re.search(r"(\d+) requests in", out).group(1))
        os.unlink(lua.name)
        log = os.path.join(d, "stderr.log")
        pids = subprocess.run(["pgrep", "-f", "--", "--role shard --id shard-0"], capture_output=True,
                              text=True).stdout.split()
        mine = [int(x) for x in pids if os.path.exists(f"/proc/{x}") and
                open(f"/proc/{x}/environ", "rb").read().find(d.encode()) >= 0]
        before = open(log).read().count("sessions_recovered")
        t_kill = time.monotonic()
        os.kill(mine[0], signal.SIGKILL)
        rec = None
        while time.monotonic() - t_kill < 120:
            lines = [json.loads(l) for l in open(log) if '"sessions_recovered"' in l]
            if len(lines) > before:
                rec = lines[-1]
                break
            time.sleep(0.01)
        total = time.monotonic() - t_kill
        return made, rec, total
    finally:
        stop_node(p, d)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cmcpd", default=os.path.join(HERE, "..", "build", "bin", "cmcpd"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--sessions", type=int, default=100000)
    ap.add_argument("--keys", type=int, default=20, help="keys per session the kv_set load rotates over")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-recovery", action="store_true")
    a = ap.parse_args()
    global KEYS
    KEYS = a.keys
    if not shutil.which("wrk"):
        sys.exit("durability.py: needs wrk (apt-get install wrk)")
    print(f"machine: nproc={os.cpu_count()} load={os.getloadavg()[0]:.2f}", flush=True)
    if not a.skip_throughput:
        res = throughput(a.cmcpd, a.rounds, a.seconds, a.connections)
        print("\nmedian of rounds (req/s):")
        for (mode, name), v in sorted(res.items()):
            xs = sorted(x[0] for x in v)
            print(f"  {mode:5} {name:6} {xs[len(xs) // 2]:9.0f}   errors {sum(x[1] for x in v)}")
    if not a.skip_recovery:
        made, rec, total = recovery(a.cmcpd, a.sessions)
        print(f"\nrecovery: {made} sessions created; replacement loaded {rec and rec.get('sessions')} in "
              f"{rec and round(rec.get('ms'), 1)} ms; kill to recovered log line {total * 1000:.0f} ms")


if __name__ == "__main__":
    main()
