"""Sessions that survive: a node stopped and started again keeps its sessions
(and a client resumes an SSE stream across the restart); idle sessions end
with 404; a damaged store is repaired or moved aside without a crash loop; a
full disk turns writes into clear errors while reads go on."""
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cmcp_harness import Node, main  # noqa: E402
from mcp_client import HttpConn, Session, free_port, node_config  # noqa: E402


def kv_value(s, key):
    got = s.tool("kv_get", {"key": key}, timeout=15)
    return got["result"].get("structuredContent", {}).get("value"), got


class DurableTest(unittest.TestCase):
    def fresh(self, s, http):
        s.conn.close()
        s.conn = HttpConn(http)

    def test_restart_keeps_sessions_and_streams(self):
        http, tcp = free_port(), free_port()
        data = tempfile.mkdtemp(prefix="cmcp-data-")
        self.addCleanup(shutil.rmtree, data, True)
        conf = node_config(http, tcp, extra="[sessions]\ndurability = fsync\n")
        env = {"CMCP_NODE_DATA_DIR": data}
        with Node(conf, env=env) as node:
            s = Session(http)
            s.tool("kv_set", {"key": "colour", "value": "teal"})
            s.call("logging/setLevel", {"level": "debug"})
            # A streamed request whose events a client will resume after the restart.
            c = HttpConn(http)
            got = c.request("POST", {"jsonrpc": "2.0", "id": 70, "method": "tools/call", "params": {
                "name": "sleep", "arguments": {"ms": 300}, "_meta": {"progressToken": "r"}}},
                headers=s.headers(), max_events=1)
            c.close()
            first = got.events[0]["id"]
            time.sleep(0.6)  # the request finishes; its events and response are stored
            node.stop()
        with Node(conf, env=env) as node:
            self.assertTrue(node.has_event("sessions_recovered"))
            self.fresh(s, http)
            value, got = kv_value(s, "colour")
            self.assertEqual(value, "teal", got)
            h = dict(s.headers())
            h["Last-Event-ID"] = first
            r = s.conn.request("GET", headers=h, timeout=10)
            self.assertEqual(r.status, 200)
            final = [m for m in r.messages() if m.get("id") == 70]
            self.assertEqual(len(final), 1, r.events)
            self.assertTrue(all(e["id"].split("-")[0] == first.split("-")[0] for e in r.events))

    def test_idle_sessions_expire(self):
        http, tcp = free_port(), free_port()
        conf = node_config(http, tcp, extra="""
[sessions]
idle_timeout_ms = 1500
abandoned_timeout_ms = 1000
""")
        with Node(conf) as node:
            used, unused = Session(http), Session(http)
            used.call("ping")
            node.wait_event("session_expired", timeout=5, reason="abandoned")
            r = unused.post({"jsonrpc": "2.0", "id": 5, "method": "ping"})
            self.assertEqual(r.status, 404)
            self.assertIn("result", used.call("ping")[0])  # still alive: used, and recently
            node.wait_event("session_expired", timeout=6, reason="idle")
            r = used.post({"jsonrpc": "2.0", "id": 6, "method": "ping"})
            self.assertEqual(r.status, 404)
            self.assertEqual(r.json()["error"]["code"], -32001)

    def test_damaged_store_is_repaired_or_moved_aside(self):
        http, tcp = free_port(), free_port()
        data = tempfile.mkdtemp(prefix="cmcp-data-")
        self.addCleanup(shutil.rmtree, data, True)
        conf = node_config(http, tcp, shards=1)
        env = {"CMCP_NODE_DATA_DIR": data}
        with Node(conf, env=env) as node:
            s = Session(http)
            s.tool("kv_set", {"key": "k", "value": "v"})
            node.stop()
        path = os.path.join(data, "shard-0", "data.mdb")
        size = os.path.getsize(path)
        with open(path, "r+b") as f:  # garbage over the meta pages and the first data pages
            f.write(os.urandom(min(size, 64 * 1024)))
        with Node(conf, env=env) as node:
            node.wait_event("store_repaired", timeout=5)
            fresh = Session(http)  # the node serves
            self.assertIn("result", fresh.call("ping")[0])
            shards = node.children("shard_sup")
            self.assertEqual(shards[0]["restarts"], 0, "the damaged store made the shard crash")
        self.assertTrue(glob.glob(os.path.join(data, "shard-0*corrupt*")) or
                        glob.glob(os.path.join(data, "shard-0", "*corrupt*")),
                        "the damaged files were not kept for the operator")

    def test_full_disk_fails_writes_clearly_reads_go_on(self):
        if os.geteuid() != 0:
            self.skipTest("mounting a small tmpfs needs root")
        mnt = tempfile.mkdtemp(prefix="cmcp-full-")
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", mnt]).returncode != 0:
            os.rmdir(mnt)
            self.skipTest("cannot mount tmpfs here")
        self.addCleanup(lambda: (subprocess.run(["umount", "-l", mnt]), os.rmdir(mnt)))
        http, tcp = free_port(), free_port()
        conf = node_config(http, tcp, shards=1, extra="[sessions]\nstore_max_bytes = 1073741824\n")
        with Node(conf, env={"CMCP_NODE_DATA_DIR": os.path.join(mnt, "data")}) as node:
            s = Session(http)
            s.tool("kv_set", {"key": "first", "value": "kept"})
            filler = os.path.join(mnt, "filler")
            with open(filler, "wb") as f:  # leave the store almost no room
                free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
                f.write(b"\0" * max(0, free - 256 * 1024))
            err = None
            big = "x" * 60000
            for i in range(200):
                r = s.tool("kv_set", {"key": f"big{i % 20}", "value": big + str(i)}, timeout=15)
                if "error" in r:
                    err = r["error"]
                    break
            self.assertIsNotNone(err, "writes never failed on a full disk")
            self.assertIn("Could not save the change", err["message"])
            self.assertTrue(node.has_event("store_commit_failed"))
            value, _ = kv_value(s, "first")  # reads go on
            self.assertEqual(value, "kept")
            os.unlink(filler)  # room again: writes work again
            r = s.tool("kv_set", {"key": "after", "value": "room"}, timeout=15)
            self.assertIn("result", r, r)
            self.assertEqual(kv_value(s, "after")[0], "room")
            self.assertEqual(node.children("shard_sup")[0]["restarts"], 0)


if __name__ == "__main__":
    main()
