"""A request for a shard that is down waits in the listener's data-link queue:
it is delivered, once, when the shard is back within [listener] shard_wait_ms,
and otherwise fails as "not delivered", and then it really was not applied."""
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cmcp_harness import Node, main  # noqa: E402
from mcp_client import HttpConn, Session, free_port, node_config  # noqa: E402

# One shard, so every session is on shard-0; its supervisor waits 1.5 s before a restart.
EXTRA = "[tree.shard_sup]\nbackoff_min = 1500\nbackoff_max = 1500\n[listener]\nshard_wait_ms = %d\n"


class ShardWaitTest(unittest.TestCase):
    def run_case(self, shard_wait_ms):
        http, tcp = free_port(), free_port()
        node = Node(node_config(http, tcp, shards=1, extra=EXTRA % shard_wait_ms)).start()
        self.addCleanup(node.cleanup)
        s = Session(http)
        self.addCleanup(s.close)
        self.assertIn("result", s.tool("kv_set", {"key": "k", "value": "before"}))
        pid = node.child_pids("shard_sup")["shard-0"]
        os.kill(pid, signal.SIGKILL)
        node.wait_for(lambda: node.child_pids("shard_sup").get("shard-0") != pid, 5,
                      what="shard-0 reaped")
        s.conn.close()
        s.conn = HttpConn(http, timeout=20)
        t0 = time.monotonic()
        resp = s.tool("kv_set", {"key": "k", "value": "after"})
        return node, s, resp, time.monotonic() - t0

    def test_waits_for_the_restart_and_is_delivered_once(self):
        node, s, resp, waited = self.run_case(6000)
        self.assertIn("result", resp, resp)
        self.assertFalse(resp["result"].get("isError"), resp)
        self.assertGreaterEqual(waited, 0.8, "it did not wait for the restart")
        got = s.tool("kv_get", {"key": "k"})
        self.assertIn("after", str(got["result"]))

    def test_not_delivered_when_the_shard_stays_down(self):
        node, s, resp, waited = self.run_case(300)
        self.assertIn("error", resp, resp)
        self.assertIn("not delivered", resp["error"]["message"])
        self.assertLess(waited, 1.4)
        # Once the shard is back, the value is the one before: the request was not applied.
        node.wait_running("shard_sup")
        deadline = time.monotonic() + 10
        for _ in range(200):
            got = s.tool("kv_get", {"key": "k"})
            if "result" in got or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertIn("before", str(got["result"]))
        self.assertNotIn("after", str(got["result"]))


if __name__ == "__main__":
    main()
