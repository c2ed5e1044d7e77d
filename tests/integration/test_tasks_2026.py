"""The tasks extension of 2026-07-28 (io.modelcontextprotocol/tasks, SEP-2663) on a real
node with two shards: stateless tools/call requests become tasks, each kept in a durable
session of the shard that made it (its id is the task id, shaped like a session id), and
tasks/get, tasks/update and tasks/cancel reach that shard whatever connection they come on
(the listener routes them by Mcp-Name). A task outlives a SIGKILL of its shard: a finished
one keeps its result, a running one is reported failed."""
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cmcp_harness import Node, main  # noqa: E402
from mcp_client import HttpConn, free_port, node_config  # noqa: E402

V = "2026-07-28"
EXT = "io.modelcontextprotocol/tasks"
CAPS = {"elicitation": {}, "extensions": {EXT: {}}}


class Client:
    """A stateless 2026-07-28 client: every request carries _meta and the routing headers;
    a new connection for each, as a stateless client may well do."""

    def __init__(self, port, caps=CAPS):
        self.port, self.caps, self.next_id = port, caps, 1

    def post(self, method, params=None):
        p = dict(params or {})
        p["_meta"] = {"io.modelcontextprotocol/protocolVersion": V,
                      "io.modelcontextprotocol/clientInfo": {"name": "tasks-2026", "version": "1"},
                      "io.modelcontextprotocol/clientCapabilities": self.caps}
        msg = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": p}
        self.next_id += 1
        h = {"MCP-Protocol-Version": V, "Mcp-Method": method}
        name = p.get("taskId") if method.startswith("tasks/") else p.get("name")
        if name is not None:
            h["Mcp-Name"] = name
        conn = HttpConn(self.port)
        try:
            r = conn.request("POST", msg, headers=h)
        finally:
            conn.close()
        body = r.messages()[-1]
        return r.status, body

    def result(self, method, params=None):
        status, body = self.post(method, params)
        assert status == 200 and "result" in body, (status, body)
        return body["result"]

    def poll(self, tid, want, limit_s=15.0):
        deadline = time.monotonic() + limit_s
        seen = []
        while time.monotonic() < deadline:
            got = self.result("tasks/get", {"taskId": tid})
            seen.append(got["status"])
            if got["status"] in want:
                return got
            time.sleep(0.1)
        raise AssertionError("task %s never reached %s: %s" % (tid, want, seen[-5:]))


class Tasks2026Test(unittest.TestCase):
    def test_tasks_across_shards(self):
        http, tcp = free_port(), free_port()
        with Node(node_config(http, tcp, packs="core,conformance", shards=2)):
            c = Client(http)
            caps = c.result("server/discover")["capabilities"]
            self.assertIn(EXT, caps["extensions"])
            self.assertNotIn("tasks", caps)

            # New stateless requests go round robin: tasks land on both shards, and each
            # is found again from any connection.
            made = [c.result("tools/call", {"name": "slow_compute", "arguments": {"ms": 200}})
                    for _ in range(4)]
            shards = {int(t["taskId"].split("-")[0]) % 2 for t in made}
            self.assertEqual(shards, {0, 1})
            for t in made:
                self.assertEqual(t["resultType"], "task")
                self.assertEqual(t["status"], "working")
                self.assertNotIn("ttl", t)
                self.assertGreater(t["ttlMs"], 0)
                done = c.poll(t["taskId"], ("completed",))
                self.assertEqual(done["result"]["structuredContent"], {"ms": 200})

            # A question waits in the task until tasks/update answers it.
            t = c.result("tools/call", {"name": "confirm_delete",
                                        "arguments": {"filename": "a.txt"}})
            asked = c.poll(t["taskId"], ("input_required",))
            (key, q), = asked["inputRequests"].items()
            self.assertEqual(q["method"], "elicitation/create")
            ack = c.result("tasks/update", {"taskId": t["taskId"], "inputResponses": {
                key: {"action": "accept", "content": {"confirm": True}}}})
            self.assertEqual(set(ack) - {"_meta"}, {"resultType"})
            done = c.poll(t["taskId"], ("completed",))
            self.assertEqual(done["result"]["content"][0]["text"], "Deleted a.txt")

            # Cancel: the ack is empty, the status settles to cancelled.
            t = c.result("tools/call", {"name": "slow_compute", "arguments": {"seconds": 60}})
            ack = c.result("tasks/cancel", {"taskId": t["taskId"]})
            self.assertEqual(ack["resultType"], "complete")
            self.assertEqual(c.result("tasks/get", {"taskId": t["taskId"]})["status"],
                             "cancelled")

            # Routing is by the task id: a well-formed id that names no task, a session id,
            # and a Mcp-Name that is not the body's taskId.
            for bogus in ("0-" + "a" * 26, "1-" + "b" * 26, "not-a-task"):
                status, body = c.post("tasks/get", {"taskId": bogus})
                self.assertEqual((status, body["error"]["code"]), (400, -32602), body)
            conn = HttpConn(http)
            r = conn.request("POST", {"jsonrpc": "2.0", "id": 9, "method": "tasks/get", "params": {
                "taskId": made[0]["taskId"], "_meta": {
                    "io.modelcontextprotocol/protocolVersion": V,
                    "io.modelcontextprotocol/clientCapabilities": CAPS}}},
                headers={"MCP-Protocol-Version": V, "Mcp-Method": "tasks/get",
                         "Mcp-Name": made[1]["taskId"]})
            conn.close()
            self.assertEqual((r.status, r.messages()[-1]["error"]["code"]), (400, -32020))

            # A task's home is no 2025 session: its id is refused as Mcp-Session-Id.
            conn = HttpConn(http)
            r = conn.request("POST", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                             headers={"Mcp-Session-Id": made[0]["taskId"],
                                      "MCP-Protocol-Version": "2025-11-25"})
            conn.close()
            self.assertEqual(r.status, 404)

            # Without the extension: no task, a plain result; tasks/get is -32021.
            plain = Client(http, caps={})
            r = plain.result("tools/call", {"name": "slow_compute", "arguments": {"ms": 0}})
            self.assertEqual(r["resultType"], "complete")
            status, body = plain.post("tasks/get", {"taskId": made[0]["taskId"]})
            self.assertEqual(body["error"]["code"], -32021)

    def test_task_outlives_shard_sigkill(self):
        http, tcp = free_port(), free_port()
        with Node(node_config(http, tcp, packs="core,conformance", shards=2)) as node:
            c = Client(http)
            done = c.result("tools/call", {"name": "slow_compute", "arguments": {"ms": 100}})
            c.poll(done["taskId"], ("completed",))
            # the running one on the same shard as the finished one (the id's partition,
            # modulo the shard count)
            def shard_of(t):
                return int(t["taskId"].split("-")[0]) % 2
            for _ in range(8):
                running = c.result("tools/call", {"name": "slow_compute",
                                                  "arguments": {"seconds": 60}})
                if shard_of(running) == shard_of(done):
                    break
                c.result("tasks/cancel", {"taskId": running["taskId"]})
            self.assertEqual(shard_of(running), shard_of(done))
            shard = "shard-%d" % shard_of(done)

            pid = {ch["id"]: ch["pid"] for ch in node.children("shard_sup")}[shard]
            os.kill(pid, signal.SIGKILL)
            node.wait_for(lambda: any(ch["id"] == shard and ch["pid"] not in (None, pid)
                                      and ch["state"] == "running"
                                      for ch in node.children("shard_sup")),
                          timeout=10, what="%s restarted" % shard)

            got = c.poll(done["taskId"], ("completed",))
            self.assertEqual(got["result"]["structuredContent"], {"ms": 100})
            lost = c.poll(running["taskId"], ("failed", "completed", "cancelled"))
            self.assertEqual(lost["status"], "failed")
            self.assertEqual(lost["error"]["code"], -32603)
            self.assertIn("restarted", lost["error"]["message"])
            self.assertNotIn("result", lost)


if __name__ == "__main__":
    main()
