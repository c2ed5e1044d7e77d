"""A shard killed with SIGKILL: the listener and the other shard keep
serving; requests to the dead shard fail with a clear error, never hang; the
restarted shard serves its sessions again under the same ids."""
import os
import signal
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cmcp_harness import Node, main  # noqa: E402
from mcp_client import HttpConn, Session, free_port, node_config  # noqa: E402


class ShardCrashTest(unittest.TestCase):
    def test_sigkill_one_shard(self):
        http, tcp = free_port(), free_port()
        with Node(node_config(http, tcp, shards=2)) as node:
            sessions = {}
            for _ in range(20):
                s = Session(http)
                sessions.setdefault(int(s.sid.split("-")[0]) % 2, []).append(s)
                if len(sessions) == 2 and all(len(v) >= 2 for v in sessions.values()):
                    break
            self.assertEqual(set(sessions), {0, 1})
            pids = {c["id"]: c["pid"] for c in node.children("shard_sup")}
            listener_pid = node.children("listener_sup")[0]["pid"]
            victim, survivor = sessions[0][0], sessions[1][0]

            # A long call in flight on the victim shard when it dies.
            result = {}

            def long_call():
                try:
                    result["resp"], _ = victim.call("tools/call", {"name": "sleep", "arguments": {"ms": 5000}},
                                                    conn=HttpConn(http), timeout=15)
                except Exception as e:  # noqa: BLE001
                    result["exc"] = e
            th = threading.Thread(target=long_call)
            th.start()
            time.sleep(0.3)
            os.kill(pids["shard-0"], signal.SIGKILL)
            th.join(20)
            self.assertFalse(th.is_alive())
            err = result.get("resp", {}).get("error")
            self.assertIsNotNone(err, result)
            self.assertIn("Shard 0", err["message"])

            # The other shard never noticed.
            for i in range(20):
                self.assertEqual(survivor.tool("echo", {"text": str(i)})["result"]["content"][0]["text"], str(i))
            node.wait_for(lambda: any(c["id"] == "shard-0" and c["pid"] not in (None, pids["shard-0"])
                                      and c["state"] == "running" for c in node.children("shard_sup")),
                          timeout=10, what="shard-0 restarted")
            after = {c["id"]: c["pid"] for c in node.children("shard_sup")}
            self.assertEqual(after["shard-1"], pids["shard-1"])
            self.assertEqual(node.children("listener_sup")[0]["pid"], listener_pid)
            # The dead shard's sessions come back with it, under the same ids.
            for s in sessions[0]:
                s.conn.close()
                s.conn = HttpConn(http)
                self.assertIn("result", s.call("ping")[0])
            fresh = [Session(http) for _ in range(4)]
            for s in fresh:
                self.assertIn("result", s.call("ping")[0])
                s.close()
            for group in sessions.values():
                for s in group:
                    s.conn.close()


if __name__ == "__main__":
    main()
