#!/usr/bin/env python3
"""
Network partitions between real nodes, each in a network namespace of its own
(veth pairs into a bridge in a namespace of its own; the test reaches every
node from the host through one more veth), a partition made with nftables DROP
rules inside a node's namespace and healed by deleting them. For each
split-brain strategy (docs/cluster.md): which side goes on, which fences, and
that after the heal there is one map again. And seeds given as a DNS name
(answered from a hosts file of each namespace) that changes its answer.

Needs root, `ip netns` and nftables; skips with a clear message otherwise.
Everything it makes (namespaces, links) is named with this process's pid and
removed at the end.
"""

import os
import shutil
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cluster_harness import COOKIE  # noqa: E402
from cmcp_harness import Node, Timed, cmcpd_path, ctl_request, main, wait_for  # noqa: E402
from mcp_client import Session  # noqa: E402

N = 3
TAG = "%d" % (os.getpid() % 100000)
BRIDGE_NS = "cmcpbr" + TAG
SUBNET = "10.%d.%d" % (100 + os.getpid() % 100, os.getpid() // 100 % 250)
HOST_IP = SUBNET + ".100"


def ip(node):
    return "%s.%d" % (SUBNET, node + 1)


def ns(node):
    return "cmcpn%s-%d" % (TAG, node)


def sh(*args, check=True):
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=20)


def why_unavailable():
    if os.geteuid() != 0:
        return "not root: network namespaces need root"
    if not shutil.which("ip") or not shutil.which("nft"):
        return "no ip or nft (iproute2, nftables)"
    probe = "cmcpprobe" + TAG
    if sh("ip", "netns", "add", probe, check=False).returncode != 0:
        return "ip netns add failed here"
    ok = sh("ip", "netns", "exec", probe, "nft", "list", "tables", check=False).returncode == 0
    sh("ip", "netns", "del", probe, check=False)
    return None if ok else "nftables does not work inside a network namespace here"


class Net:
    """The bridge, the node namespaces and the host's way in."""

    def __enter__(self):
        sh("ip", "netns", "add", BRIDGE_NS)
        sh("ip", "netns", "exec", BRIDGE_NS, "ip", "link", "add", "br0", "type", "bridge")
        sh("ip", "netns", "exec", BRIDGE_NS, "ip", "link", "set", "br0", "up")
        for i in range(N):
            sh("ip", "netns", "add", ns(i))
            self._veth("v%s%d" % (TAG, i), ns(i), ip(i))
        self._veth("h%s" % TAG, None, HOST_IP)
        return self

    def _veth(self, name, netns, addr):
        peer = name + "b"
        sh("ip", "link", "add", name, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", peer, "netns", BRIDGE_NS)
        sh("ip", "netns", "exec", BRIDGE_NS, "ip", "link", "set", peer, "master", "br0")
        sh("ip", "netns", "exec", BRIDGE_NS, "ip", "link", "set", peer, "up")
        run = ["ip", "netns", "exec", netns] if netns else []
        if netns:
            sh("ip", "link", "set", name, "netns", netns)
            sh(*run, "ip", "link", "set", "lo", "up")
        sh(*run, "ip", "addr", "add", addr + "/24", "dev", name)
        sh(*run, "ip", "link", "set", name, "up")

    @staticmethod
    def hosts(text):
        """Sets what /etc/hosts says inside every node's namespace (`ip netns exec` mounts
        /etc/netns/NS/hosts over it; written in place, so running nodes see each change)."""
        for i in range(N):
            d = "/etc/netns/%s" % ns(i)
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "hosts"), "w") as f:
                f.write("127.0.0.1 localhost\n" + text)

    def __exit__(self, *exc):
        sh("ip", "link", "del", "h%s" % TAG, check=False)
        for i in range(N):
            shutil.rmtree("/etc/netns/%s" % ns(i), ignore_errors=True)
            sh("ip", "netns", "del", ns(i), check=False)
        sh("ip", "netns", "del", BRIDGE_NS, check=False)
        return False

    @staticmethod
    def cut(node, others):
        """Drops every packet between node and the given others (the host still reaches it)."""
        addrs = ", ".join(ip(o) for o in others)
        rules = ("table inet cmcp {\n"
                 " chain cin { type filter hook input priority 0; ip saddr { %s } drop; }\n"
                 " chain cout { type filter hook output priority 0; ip daddr { %s } drop; }\n"
                 "}\n" % (addrs, addrs))
        subprocess.run(["ip", "netns", "exec", ns(node), "nft", "-f", "-"], input=rules,
                       text=True, check=True, timeout=20)

    @staticmethod
    def heal(node):
        sh("ip", "netns", "exec", ns(node), "nft", "delete", "table", "inet", "cmcp", check=False)


def config(i, extra, cookie_file, seeds=None):
    seeds = seeds or ", ".join("%s:7400" % ip(k) for k in range(N))
    return """
[node]
name = n%d
[listener]
http_bind = 0.0.0.0
http_port = 8080
tcp_port = 0
[metrics]
port = 0
[admin]
endpoint =
cookie_file = %s
[cluster]
node_id = n%d
bind = %s:7400
seeds = %s
bootstrap_expect = %d
%s
[tree.shard]
count = 1
""" % (i, cookie_file, i, ip(i), seeds, N, extra)


class Cluster:
    """Three nodes, node i in namespace ns(i); n0 starts first so that it is the oldest."""

    def __init__(self, tmp, extra="", seeds=None):
        self.tmp = tmp
        self.extra = extra
        self.seeds = seeds
        self.nodes = []

    def __enter__(self):
        cookie = os.path.join(self.tmp, "cookie")
        with open(cookie, "w") as f:
            f.write(COOKIE)
        os.chmod(cookie, 0o600)
        for i in range(N):
            wrapper = os.path.join(self.tmp, "cmcpd-n%d" % i)
            with open(wrapper, "w") as f:
                f.write("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n" % (ns(i), cmcpd_path()))
            os.chmod(wrapper, 0o755)
            node = Node(config(i, self.extra, cookie, self.seeds), cmcpd=wrapper,
                        wait_ready=False)
            self.nodes.append(node)
            node.start()
            if i == 0:
                wait_for(lambda: node.has_event("cluster_monitor_ready"), 20, what="n0 up")
        for node in self.nodes:
            wait_for(lambda: node.has_event("node_ready"), 30, what="ready")
        return self

    def __exit__(self, *exc):
        survivors = []
        for node in self.nodes:
            survivors += node.cleanup()
        if survivors and exc[0] is None:
            raise AssertionError("processes survived: %s" % survivors)
        return False

    def status(self, i):
        r = ctl_request("ipc://%s/cluster.sock" % self.nodes[i].run_dir, {"op": "status"}, 3.0)
        assert r.get("ok"), r
        return r

    def formed(self):
        try:
            sts = [self.status(i) for i in range(N)]
        except Exception:  # noqa: BLE001
            return False
        return (len({(s["map"]["version"], s["map"]["hash"]) for s in sts}) == 1 and
                all(m["state"] == "up" for m in sts[0]["map"]["nodes"]) and
                len(sts[0]["map"]["nodes"]) == N and
                sum(m["owned"] for m in sts[0]["map"]["nodes"]) == sts[0]["map"]["partitions"])


def _session(host):
    """An MCP session with the node at host:8080 (the harness's client speaks to 127.0.0.1,
    so this one is made here on the node's address)."""
    import mcp_client
    orig = mcp_client.socket.create_connection

    def to_host(addr, *a, **kw):
        return orig((host, addr[1]), *a, **kw)
    mcp_client.socket.create_connection = to_host
    try:
        s = Session(8080)
    finally:
        mcp_client.socket.create_connection = orig
    s.conn.sock.settimeout(10)
    return s


def write(s, key):
    """True when the write was acknowledged, False when it was refused (503, not applied)."""
    r = s.tool("kv_set", {"key": key, "value": key})
    return "error" not in r


def wait_refused(s, timeout=5.0):
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        n += 1
        if not write(s, "probe%d" % n):
            return True
        time.sleep(0.05)
    return False


@unittest.skipIf(why_unavailable() is not None, "partition tests skipped: %s" % why_unavailable())
class PartitionTest(Timed):
    def run_split(self, extra, cut, goes_on, fences, voters=None):
        """Cuts node `cut` off from the other two; checks who goes on and who fences."""
        tmp = os.path.abspath(os.path.join("/tmp", "cmcp-part-%s" % TAG))
        os.makedirs(tmp, exist_ok=True)
        try:
            with Net(), Cluster(tmp, extra) as c:
                wait_for(c.formed, 30, 0.2, what="the cluster formed")
                # the strategy's voter set is reached by configuration changes after formation
                want = voters or ["n%d" % k for k in range(N)]
                wait_for(lambda: sorted(c.status(0)["raft"]["voters"]) == want, 15, 0.1,
                         what="the voters %s" % want)
                sessions = {i: _session(ip(i)) for i in range(N)}
                for i, s in sessions.items():
                    self.assertTrue(write(s, "before%d" % i), "n%d refuses before the split" % i)
                Net.cut(cut, [k for k in range(N) if k != cut])
                for i in fences:
                    self.assertTrue(wait_refused(sessions[i]), "n%d never fenced" % i)
                    r = sessions[i].tool("kv_get", {"key": "before%d" % i})
                    self.assertNotIn("error", r)  # reads go on while fenced
                time.sleep(1.0)
                for i in goes_on:
                    # a node of the side that goes on serves new sessions and writes
                    s = _session(ip(i))
                    self.assertTrue(write(s, "during"), "n%d refuses during the split" % i)
                Net.heal(cut)
                wait_for(c.formed, 30, 0.2, what="one map again after the heal")
                for i in fences:  # the fenced side holds a lease again
                    wait_for(lambda: c.status(i)["lease_ms"] > 0, 10, 0.1,
                             what="n%d unfenced after the heal" % i)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_winner_takes_all(self):
        # n2 alone is the minority: it fences; n0 and n1 go on
        self.run_split("split_brain_strategy = winner_takes_all", cut=2, goes_on=[0, 1],
                       fences=[2])

    def test_winner_takes_all_leader_cut_off(self):
        # the leader (n0, the one that bootstrapped) cut off: it fences, the others elect
        self.run_split("split_brain_strategy = winner_takes_all", cut=0, goes_on=[1, 2],
                       fences=[0])

    def test_configured_master(self):
        # the master is the only voter: its side goes on even as the minority
        self.run_split("split_brain_strategy = configured_master\nmaster = n0", cut=0,
                       goes_on=[0], fences=[1, 2], voters=["n0"])

    def test_oldest_node(self):
        # the oldest member (n0, the first to join) decides, as the only voter
        self.run_split("split_brain_strategy = oldest_node", cut=0, goes_on=[0], fences=[1, 2],
                       voters=["n0"])

    def test_dns_seeds_re_resolved(self):
        # every node's only seed is a name; at first it answers with an address nobody holds,
        # then with the three nodes: they form; then with one node only: nothing breaks
        name = "seeds-%s.cmcp.test" % TAG
        tmp = os.path.abspath(os.path.join("/tmp", "cmcp-part-%s" % TAG))
        os.makedirs(tmp, exist_ok=True)
        try:
            with Net() as net:
                net.hosts("%s.200 %s\n" % (SUBNET, name))
                with Cluster(tmp, "dns_refresh_ms = 300", seeds="%s:7400" % name) as c:
                    time.sleep(1.5)
                    self.assertFalse(c.formed(), "formed although the name led nowhere")
                    net.hosts("".join("%s %s\n" % (ip(k), name) for k in range(N)))
                    t0 = time.monotonic()
                    wait_for(c.formed, 30, 0.1, what="formed once the name answered")
                    print("  formed %.2f s after the name's answer changed" % (time.monotonic() - t0))
                    for node in c.nodes:
                        self.assertTrue(node.has_event("dns_resolved"))
                    net.hosts("%s %s\n" % (ip(0), name))
                    time.sleep(1.0)
                    self.assertTrue(c.formed(), "the cluster broke when the name changed")
                    self.assertTrue(write(_session(ip(1)), "after"))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    reason = why_unavailable()
    if reason:
        print("test_partition: SKIPPED: %s" % reason)
    main()
