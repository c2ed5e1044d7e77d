"""Chaos: shards killed with SIGKILL under steady load lose nothing that was
acknowledged. Several clients write unique values with kv_set while shard
workers are killed at random (at least 50 kills); afterwards every
acknowledged write is readable in its session, no session id was lost, and
every request that failed during a restart failed with a clear JSON-RPC
error. Then the root itself is SIGKILLed and the node started again on the
same data directory: everything acknowledged is still there."""
import json
import os
import random
import signal
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from cmcp_harness import Node, main  # noqa: E402
from mcp_client import HttpConn, Session, free_port, node_config  # noqa: E402

CLIENTS = 6
KEYS = 200
KILLS = int(os.environ.get("CMCP_CHAOS_KILLS", "60"))
DEADLINE = 120.0  # seconds, the whole test


class Client(threading.Thread):
    """Writes unique values in its own session, logging invoke/ok/fail. Keys rotate over
    KEYS names (a session holds at most 1024 keys); each value is new."""

    def __init__(self, http, n):
        super().__init__(daemon=True)
        self.http, self.n = http, n
        self.acked = {}      # key -> value, acknowledged
        self.maybe = {}      # key -> values written after the last ack whose outcome is unknown
        self.failed = []     # (key, error message), failed with a JSON-RPC error
        self.unclear = []    # anything else: a hang, a transport error without explanation
        self.stop = threading.Event()
        self.session = None

    def run(self):
        while self.session is None and not self.stop.is_set():
            try:
                self.session = Session(self.http)
            except Exception:  # noqa: BLE001 - a shard may be down right now; retry
                time.sleep(0.05)
        i = 0
        while not self.stop.is_set():
            i += 1
            key, value = f"k{i % KEYS}", f"{self.n}-{i}"
            try:
                conn = self.session.conn
                resp, _ = self.session.call("tools/call", {"name": "kv_set",
                                                           "arguments": {"key": key, "value": value}},
                                            timeout=15)
                if "result" in resp and not resp["result"].get("isError"):
                    self.acked[key] = value
                    self.maybe.pop(key, None)
                elif "error" in resp and resp["error"].get("message"):
                    self.failed.append((key, resp["error"]["message"]))
                    # "may or may not have been applied": either value may be there.
                    self.maybe.setdefault(key, set()).add(value)
                else:
                    self.unclear.append((key, repr(resp)))
            except AssertionError as e:  # an HTTP error whose body has no response for the id
                self.failed.append((key, str(e)[:200]))
                self.maybe.setdefault(key, set()).add(value)
            except (ConnectionError, OSError, TimeoutError) as e:
                self.unclear.append((key, repr(e)))
                self.session.conn.close()
                self.session.conn = HttpConn(self.http)
            time.sleep(0.002)


def check_all(test, http, clients):
    for c in clients:
        s = c.session
        s.conn.close()
        s.conn = HttpConn(http)
        resp, _ = s.call("tools/call", {"name": "kv_list", "arguments": {}}, timeout=15)
        test.assertIn("result", resp, f"session {s.sid} of client {c.n} is lost: {resp}")
        stored = json.dumps(resp["result"])
        for key, value in c.acked.items():
            got, _ = s.call("tools/call", {"name": "kv_get", "arguments": {"key": key}}, timeout=15)
            have = got["result"].get("structuredContent", {}).get("value")
            allowed = {value} | c.maybe.get(key, set())
            test.assertIn(have, allowed, f"client {c.n}: acknowledged {key}={value} is gone: {got}")
        test.assertTrue(stored)


class ShardKillChaos(unittest.TestCase):
    def test_kill_shards_under_load_then_kill_root(self):
        t0 = time.monotonic()
        http, tcp = free_port(), free_port()
        conf = node_config(http, tcp, shards=2, extra="""
[sessions]
durability = group
[tree.shard_sup]
intensity = 1000
period = 1
""")
        node = Node(conf, keep_dir=True)
        data_dir = os.path.join(node.dir, "var", "data")
        node.start()
        clients = [Client(http, n) for n in range(CLIENTS)]
        try:
            for c in clients:
                c.start()
            node.wait_for(lambda: all(c.session for c in clients) and all(len(c.acked) > 3 for c in clients),
                          timeout=20, what="clients writing")
            kills = 0
            while kills < KILLS and time.monotonic() - t0 < DEADLINE - 40:
                live = [c for c in node.children("shard_sup") if c["pid"] and c["state"] == "running"]
                if not live:
                    time.sleep(0.01)
                    continue
                victim = random.choice(live)
                os.kill(victim["pid"], signal.SIGKILL)
                kills += 1
                time.sleep(random.uniform(0.05, 0.25))
            for c in clients:
                c.stop.set()
            for c in clients:
                c.join(20)
            self.assertGreaterEqual(kills, 50, "fewer kills than the test promises")
            acked = sum(len(c.acked) for c in clients)
            failed = sum(len(c.failed) for c in clients)
            print(f"kills={kills} acknowledged={acked} failed-with-error={failed}")
            for c in clients:
                self.assertEqual(c.unclear, [], f"client {c.n} saw failures without a clear error")
                for _, msg in c.failed:
                    self.assertRegex(msg, r"[Ss]hard \d|restart|unavailable|stopped", msg)
            self.assertGreater(acked, 50)
            node.wait_for(lambda: all(c["state"] == "running" for c in node.children("shard_sup")),
                          timeout=10, what="shards back")
            check_all(self, http, clients)

            # The whole node: SIGKILL the root, start again on the same data.
            os.kill(node.pid, signal.SIGKILL)
            node.wait_exit(10)
            node.wait_for(lambda: not node.tree_pids(), timeout=10, what="tree gone")
            node2 = Node(conf, env={"CMCP_NODE_DATA_DIR": data_dir})
            node2.start()
            try:
                check_all(self, http, clients)
            finally:
                node2.cleanup()
        finally:
            for c in clients:
                c.stop.set()
            node.keep_dir = False  # node2 is done with its data: the directory goes too
            node.cleanup()


if __name__ == "__main__":
    main()
