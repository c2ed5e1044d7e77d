"""
cluster_harness: several real cmcpd nodes on loopback forming one cluster, for the
cluster's process-level tests (python3 standard library only).

  with Cluster(3) as c:                 # 3 nodes, ports and directories of their own
      c.wait_formed()                    # every node: the same map, every member up
      st = c.status(0)                   # node 0's failover manager: raft, map, view
      c.kill(1)                          # SIGKILL of node 1's root (its tree follows it)
      c.wait_down(1)                     # the others mark it down
  # leaving the block stops every node and checks that no process of them survives

Each node's failover manager answers plain JSON on ipc://RUN/cluster.sock (no
authentication: it is a local socket of the node's own run directory).
"""

import json
import os
import shutil
import signal
import sys
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from cmcp_harness import Node, ctl_request, wait_for  # noqa: E402
import mcp_client  # noqa: E402
from mcp_client import free_port  # noqa: E402

COOKIE = "cluster-test-cookie-0123456789abcdef"


def peer_port(shards=2):
    """A free port whose next 2 * `shards` ports are free too: a node's shards serve replicas
    at its peer port + 1 + shard index, and forwarded requests at + 1 + shards + index."""
    import socket
    for _ in range(200):
        p = free_port()
        if p + 2 * shards >= 65536:
            continue
        ok = True
        for k in range(1, 2 * shards + 1):
            s = socket.socket()
            # as the node binds them: a port whose old connections linger in TIME_WAIT is free
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", p + k))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok and not any(p + k in mcp_client._handed_out for k in range(1, 2 * shards + 1)) \
                and all(mcp_client.claim_port(p + k) for k in range(1, 2 * shards + 1)):
            # the whole run is this node's: free_port() must never hand one of them out
            # again (a node's listener that took another node's replica port made that node
            # fail to start, seen as a flake in test_rejoin)
            mcp_client._handed_out.update(range(p + 1, p + 2 * shards + 1))
            return p
    raise RuntimeError("no run of free ports for a node's peer and replica ports")


def node_config(i, ports, http, tcp, seeds, cookie_file, expect, extra="", metrics=0,
                admin=0):
    return """
[node]
name = n%d
[listener]
http_port = %d
tcp_port = %d
[metrics]
port = %d
[admin]
endpoint = %s
cookie_file = %s
[cluster]
node_id = n%d
bind = 127.0.0.1:%d
seeds = %s
bootstrap_expect = %d
%s
[tree.shard]
count = 2
""" % (i, http, tcp, metrics, "tcp://127.0.0.1:%d" % admin if admin else "", cookie_file, i,
       ports[i], ", ".join(seeds), expect, extra)


class Cluster:
    """n nodes n0..n(n-1); extra is text added to every node's [cluster] section; with
    metrics, each node serves /metrics and /health on self.metrics[i]."""

    def __init__(self, n, expect=None, extra="", cookie=COOKIE, start=None, metrics=False,
                 admin=False):
        self.n = n
        self.first = list(range(n)) if start is None else start  # started on entering
        self.peer_ports = [peer_port() for _ in range(n)]
        self.http = [free_port() for _ in range(n)]
        self.tcp = [free_port() for _ in range(n)]
        self.metrics = [free_port() if metrics else 0 for _ in range(n)]
        self.admin = [free_port() if admin else 0 for _ in range(n)]
        self.expect = expect or n
        self.extra = extra
        self.cookie = cookie
        self.nodes = [None] * n
        self.data = {}     # node -> the data directory a restart gave it
        self.dirs = []     # every node's directory, removed at the end (a restart reuses data)
        self.cookies = []

    def _cookie_file(self, i, cookie):
        path = "/tmp/cmcp-cluster-cookie-%d-%d-%d" % (os.getpid(), id(self), i)
        self.cookies.append(path)
        with open(path, "w") as f:
            f.write(cookie)
        os.chmod(path, 0o600)
        return path

    def config(self, i, cookie=None, seeds=None, extra=""):
        seeds = seeds or ["127.0.0.1:%d" % p for p in self.peer_ports[:max(self.expect, 1)]]
        return node_config(i, self.peer_ports, self.http[i], self.tcp[i], seeds,
                           self._cookie_file(i, cookie or self.cookie), self.expect,
                           self.extra + "\n" + extra, self.metrics[i], self.admin[i])

    def start(self, i, cookie=None, data_dir=None, seeds=None, extra=""):
        """Starts node i; seeds and extra ([cluster] lines) for this node alone."""
        env = {}
        node = Node(self.config(i, cookie, seeds, extra), wait_ready=False, keep_dir=True)
        self.dirs.append(node.dir)
        if data_dir:  # a restart keeps the node's data (its Raft log, its sessions)
            env["CMCP_NODE_DATA_DIR"] = data_dir
        self.data[i] = data_dir
        node.extra_env.update(env)
        node.start()
        self.nodes[i] = node
        wait_for(lambda: node.has_event("node_ready") or node.poll() is not None, 20,
                 what="node n%d ready" % i)
        if node.poll() is not None:
            text = node.stderr_text()
            # the first errors say why (the start's shutdown lines come after them)
            errors = [ln for ln in text.splitlines() if '"level":"error"' in ln][:5]
            raise RuntimeError("n%d exited with %s; its first errors:\n%s\nthe end of its log:\n%s"
                               % (i, node.poll(), "\n".join(errors), text[-2000:]))
        return node

    def data_dir(self, i):
        """The data directory node i uses (across restarts given data_dir)."""
        return self.data.get(i) or os.path.join(self.nodes[i].dir, "var", "data")

    def __enter__(self):
        try:
            for i in self.first:
                self.start(i)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        survivors = []
        for node in self.nodes:
            if node is not None:
                survivors += node.cleanup()
        if not survivors and os.environ.get("CMCP_KEEP_TMP") is None:
            for d in self.dirs:
                shutil.rmtree(d, ignore_errors=True)
        for c in self.cookies:
            try:
                os.unlink(c)
            except OSError:
                pass
        return survivors

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.print_trouble()
        survivors = self.stop()
        if survivors and exc_type is None:
            raise AssertionError("processes survived cleanup: %s" % survivors)
        return False

    def print_trouble(self, limit=30):
        """After a failure: each node's warnings and errors (the last `limit`), to stderr."""
        for i, node in enumerate(self.nodes):
            if node is None:
                continue
            lines = [ln for ln in node.stderr_text().splitlines()
                     if '"level":"warn' in ln or '"level":"err' in ln]
            sys.stderr.write("--- n%d: %d warnings and errors, the last %d:\n"
                             % (i, len(lines), min(limit, len(lines))))
            for ln in lines[-limit:]:
                sys.stderr.write("  %s\n" % ln[:400])

    # ---- looking ----------------------------------------------------------
    def alive(self, i):
        return self.nodes[i] is not None and self.nodes[i].poll() is None

    def status(self, i, timeout=5.0):
        r = ctl_request("ipc://%s/cluster.sock" % self.nodes[i].run_dir, {"op": "status"},
                        timeout=timeout)
        assert r.get("ok"), r
        return r

    def statuses(self, which=None):
        out = {}
        for i in which if which is not None else range(self.n):
            if self.alive(i):
                try:
                    out[i] = self.status(i, timeout=2.0)
                except Exception:  # noqa: BLE001 - a node busy restarting answers later
                    out[i] = None
        return out

    def ctl(self, i, req, timeout=5.0):
        """One request to node i's failover manager (drain, leave, ...)."""
        return ctl_request("ipc://%s/cluster.sock" % self.nodes[i].run_dir, req, timeout=timeout)

    def health(self, i):
        """(HTTP status, body) of node i's /health (needs metrics=True)."""
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/health" % self.metrics[i],
                                        timeout=3) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def metric(self, i, name):
        """The sum of node i's series named `name` on /metrics (needs metrics=True); 0 when
        absent."""
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics[i],
                                    timeout=3) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def admin_cmd(self, i, *args, timeout=45.0):
        """cmcpctl --json ARGS against node i's admin socket (needs admin=True): the parsed
        answer; raises with cmcpctl's words when it fails."""
        import subprocess
        from ops_client import cmcpctl_path
        argv = [cmcpctl_path(), "-n", "tcp://127.0.0.1:%d" % self.admin[i], "--cookie-file",
                self.cookies[-1], "--json"] + list(args)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CMCP_")}
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                           env=env)
        out = p.stdout.decode(errors="replace")
        try:
            return json.loads(out)
        except ValueError:
            raise AssertionError("cmcpctl %s failed (%d): %s %s" % (
                " ".join(args), p.returncode, out[-1000:], p.stderr.decode()[-1000:]))

    def member(self, st, node_id):
        for m in st["map"]["nodes"]:
            if m["id"] == node_id:
                return m
        return None

    def state_of(self, st, node_id):
        """The member's state in st's map, or None while that map does not list it yet (a
        node just started may answer before the map reached it): for wait_for predicates."""
        m = self.member(st, node_id)
        return m["state"] if m else None

    def formed(self, which=None):
        """Every live node of `which` holds one map in which all of them are up and every
        partition has an owner, and holds a lease (may acknowledge writes)."""
        sts = self.statuses(which)
        if not sts or any(s is None for s in sts.values()):
            return False
        hashes = {(s["map"]["version"], s["map"]["hash"]) for s in sts.values()}
        if len(hashes) != 1:
            return False
        st = next(iter(sts.values()))
        ids = {"n%d" % i for i in sts}
        up = {m["id"] for m in st["map"]["nodes"] if m["state"] == "up"}
        owned = sum(m["owned"] for m in st["map"]["nodes"] if m["state"] == "up")
        leased = all(s["lease_ms"] > 0 for s in sts.values())  # each may acknowledge writes
        return (ids <= up and owned == st["map"]["partitions"] and
                st["raft"]["leader"] is not None and leased)

    def wait_formed(self, which=None, timeout=20.0):
        wait_for(lambda: self.formed(which), timeout, 0.1, what="the cluster formed")
        return self.status(next(i for i in (which or range(self.n)) if self.alive(i)))

    def leader(self):
        for i, st in self.statuses().items():
            if st and st["raft"]["state"] == "leader":
                return i
        return None

    def kill(self, i, sig=signal.SIGKILL):
        node = self.nodes[i]
        node.signal(sig)
        if sig == signal.SIGKILL:
            node.wait_exit(10)
            node.cleanup()  # whatever of its tree survived its root: gone too

    def cluster_pids(self, i):
        """Pids of node i's three cluster processes."""
        out = []
        for pid in self.nodes[i].tree_pids():
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    args = f.read().split(b"\0")
            except OSError:
                continue
            if b"--role" in args:
                role = args[args.index(b"--role") + 1]
                if role in (b"cluster_monitor", b"failover_manager", b"split_brain_detector"):
                    out.append(pid)
        return out
