"""Hung, not dead: a shard whose loop stops (SIGSTOP) on a real node.

While it is stopped its sessions' requests fail within the listener's heartbeat bound
with a clear error (sent ones "may or may not have been applied", the rest "not
delivered"), new sessions go to the other shard, /health says 503 and why, and the
supervisor's watchdog replaces it; every acknowledged write is there afterwards. A shard
that wakes up after its listener gave up on it drops what it had not read instead of
running it late."""
import os
import signal
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from cmcp_harness import Node, main, wait_for  # noqa: E402
from mcp_client import HttpConn, Session, free_port, node_config  # noqa: E402
from ops_client import get_json  # noqa: E402


def sessions_on_both_shards(http, per_shard=2):
    by = {}
    for _ in range(40):
        s = Session(http)
        by.setdefault(int(s.sid.split("-")[0]) % 2, []).append(s)
        if len(by) == 2 and all(len(v) >= per_shard for v in by.values()):
            return by
    raise AssertionError("sessions did not spread over both shards: %r" % by.keys())


def text_of(resp):
    return resp["result"]["content"][0]["text"]


class HungShardTest(unittest.TestCase):
    def node(self, shard_watchdog):
        http, tcp, metrics = free_port(), free_port(), free_port()
        cfg = node_config(http, tcp, shards=2)
        cfg = cfg.replace("[listener]\n", "[listener]\nshard_unresponsive_ms = 1000\n", 1)
        cfg = cfg.replace("[tree.shard]\n", "[tree.shard]\nwatchdog = %d\n" % shard_watchdog, 1)
        cfg += "[metrics]\nport = %d\n" % metrics
        node = Node(cfg).start()
        self.addCleanup(node.cleanup)
        return node, http, metrics

    def health(self, metrics):
        st, body = get_json(metrics, "/health")
        return st, body

    def test_sigstop_shard_is_failed_fast_routed_around_and_replaced(self):
        node, http, metrics = self.node(shard_watchdog=3000)
        by = sessions_on_both_shards(http)
        victim, survivor = by[1][0], by[0][0]
        for i, s in enumerate(by[1] + by[0]):
            self.assertNotIn("error", s.tool("kv_set", {"key": "k", "value": "v%d" % i}))
        pid = {c["id"]: c["pid"] for c in node.children("shard_sup")}["shard-1"]
        os.kill(pid, signal.SIGSTOP)
        self.addCleanup(lambda: os.kill(pid, signal.SIGCONT) if os.path.exists(
            "/proc/%d" % pid) else None)
        t0 = time.monotonic()

        # A request to the stopped shard: a clear error within the bound, not a 30 s hang.
        resp, r = victim.call("tools/call", {"name": "echo", "arguments": {"text": "x"}},
                              conn=HttpConn(http), timeout=15)
        took = time.monotonic() - t0
        self.assertIn("error", resp, resp)
        self.assertIn("Shard 1", resp["error"]["message"])
        self.assertIn("not responding", resp["error"]["message"])
        self.assertEqual(r.status, 503)
        self.assertLess(took, 2.5)  # the bound is 1 s of heartbeats, plus the ping's wait

        # The other shard's sessions never noticed; new sessions all land there.
        for i in range(10):
            self.assertEqual(text_of(survivor.tool("echo", {"text": str(i)})), str(i))
        for _ in range(6):
            s = Session(http)
            self.assertEqual(int(s.sid.split("-")[0]) % 2, 0, s.sid)
            self.assertIn("result", s.call("ping")[0])
            s.close()
        # Later requests for the stopped shard's sessions: "not delivered", at once.
        t1 = time.monotonic()
        resp, r = victim.call("tools/call", {"name": "kv_set",
                                             "arguments": {"key": "k", "value": "lost"}},
                              conn=HttpConn(http), timeout=15)
        self.assertLess(time.monotonic() - t1, 0.5)
        self.assertIn("not delivered", resp["error"]["message"])

        # /health tells the truth while it is stopped (the supervisor's view: silent for
        # half its watchdog), and the log says so at warning, then error.
        if time.monotonic() - t0 < 2.6:
            st, body = wait_for(lambda: (lambda h: h if h[0] == 503 else None)(
                self.health(metrics)), 3, 0.05, what="/health 503 while shard-1 is stopped")
            self.assertTrue(any("shard-1" in why and "not answered" in why
                                for why in body["reasons"]), body)
        node.wait_event("shard_unresponsive", timeout=5, shard=1)
        hung = node.wait_event("child_hung", timeout=10, child="shard-1")[0]
        self.assertEqual(hung["level"], "error")
        self.assertIn("stopped", hung["process_state"])

        # Replaced: a new shard-1 serves the same sessions with every acknowledged write.
        wait_for(lambda: any(c["id"] == "shard-1" and c["state"] == "running" and
                             c["pid"] not in (None, pid) for c in node.children("shard_sup")),
                 15, 0.05, what="shard-1 replaced")
        self.assertLess(time.monotonic() - t0, 10)
        for i, s in enumerate(by[1] + by[0]):
            s.conn.close()
            s.conn = HttpConn(http)
            got = wait_for(lambda: (lambda r: r if "result" in r else None)(
                s.tool("kv_get", {"key": "k"}, timeout=15)), 10, 0.1, what="kv_get")
            self.assertEqual(got["result"]["structuredContent"]["value"], "v%d" % i)
        wait_for(lambda: self.health(metrics)[0] == 200, 10, 0.1, what="/health 200 again")
        for group in by.values():
            for s in group:
                s.close()

    def test_a_shard_that_wakes_up_drops_what_its_listener_gave_up_on(self):
        # A long watchdog: the shard is continued before it is replaced.
        node, http, metrics = self.node(shard_watchdog=20000)
        by = sessions_on_both_shards(http, per_shard=1)
        victim = by[1][0]
        self.assertNotIn("error", victim.tool("kv_set", {"key": "k", "value": "before"}))
        pid = {c["id"]: c["pid"] for c in node.children("shard_sup")}["shard-1"]
        os.kill(pid, signal.SIGSTOP)
        try:
            # sent into the stopped shard's socket: it has not read it
            resp, _ = victim.call("tools/call", {"name": "kv_set",
                                                 "arguments": {"key": "k", "value": "late"}},
                                  conn=HttpConn(http), timeout=15)
            self.assertIn("may or may not have been applied", resp["error"]["message"])
            node.wait_event("shard_unresponsive", timeout=5, shard=1)
            time.sleep(1.0)  # stopped well past the listener's bound
        finally:
            os.kill(pid, signal.SIGCONT)
        # The listener told its client the write failed, and the shard did not run it late.
        node.wait_event("shard_responsive", timeout=10, shard=1)
        self.assertEqual({c["id"]: c["pid"] for c in node.children("shard_sup")}["shard-1"], pid)
        victim.conn.close()
        victim.conn = HttpConn(http)
        got = victim.tool("kv_get", {"key": "k"}, timeout=15)
        self.assertEqual(got["result"]["structuredContent"]["value"], "before")
        dropped = [e for e in node.log_events("listener_link_closed") if "dropped" in
                   e.get("why", "")]
        self.assertTrue(dropped, "the shard did not say it dropped what it had not read")
        # and it serves normally again
        self.assertNotIn("error", victim.tool("kv_set", {"key": "k", "value": "after"}))
        self.assertEqual(victim.tool("kv_get", {"key": "k"})["result"]["structuredContent"]
                         ["value"], "after")
        victim.close()


if __name__ == "__main__":
    main()
