#!/usr/bin/env python3
"""
2026 tasks in a cluster (docs/tasks.md, "Where a 2026 task lives"): three real nodes on
loopback with replication_factor 2. A task made through one node lives in a session of
its own on a partition that node owns; tasks/get, tasks/update and tasks/cancel sent to any
other node are forwarded to the owner by the task id, as session requests are. When the
owner is SIGKILLed, the replica promoted in its place answers for the task: a finished task
with its result, a running one as failed.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

from cluster_harness import Cluster  # noqa: E402
from cmcp_harness import Timed, main, wait_for  # noqa: E402
from mcp_client import HttpConn  # noqa: E402

V = "2026-07-28"
EXT = "io.modelcontextprotocol/tasks"
CAPS = {"elicitation": {}, "extensions": {EXT: {}}}
SETUP = "replication_factor = 2\n[tools]\npacks = core,conformance"


def post(port, method, params):
    p = dict(params)
    p["_meta"] = {"io.modelcontextprotocol/protocolVersion": V,
                  "io.modelcontextprotocol/clientCapabilities": CAPS}
    h = {"MCP-Protocol-Version": V, "Mcp-Method": method}
    name = p.get("taskId") if method.startswith("tasks/") else p.get("name")
    if name is not None:
        h["Mcp-Name"] = name
    conn = HttpConn(port)
    try:
        r = conn.request("POST", {"jsonrpc": "2.0", "id": 1, "method": method, "params": p},
                         headers=h)
    finally:
        conn.close()
    return r.messages()[-1] if r.messages() else {"status": r.status}


def result(port, method, params):
    body = post(port, method, params)
    assert "result" in body, (method, port, body)
    return body["result"]


def owner_of(st, partition):
    return int(st["map"]["nodes"][st["map"]["owners"][partition]]["id"][1:])


class TasksClusterTest(Timed):
    def test_task_through_every_node(self):
        with Cluster(3, extra=SETUP) as c:
            st = c.wait_formed()
            t = result(c.http[0], "tools/call", {"name": "confirm_delete",
                                                 "arguments": {"filename": "c.txt"}})
            self.assertEqual(t["resultType"], "task")
            tid = t["taskId"]
            self.assertEqual(owner_of(st, int(tid.split("-")[0])), 0,
                             "a task is made on a partition its node owns")
            # seen from the two other nodes at once (the create was durable before the answer)
            for node in (1, 2):
                got = wait_for(lambda: (lambda r: r if r["status"] == "input_required" else None)(
                    result(c.http[node], "tasks/get", {"taskId": tid})), 10, 0.1,
                    what="input_required through n%d" % node)
            (key,) = got["inputRequests"]
            ack = result(c.http[2], "tasks/update", {"taskId": tid, "inputResponses": {
                key: {"action": "accept", "content": {"confirm": True}}}})
            self.assertEqual(ack["resultType"], "complete")
            done = wait_for(lambda: (lambda r: r if r["status"] == "completed" else None)(
                result(c.http[1], "tasks/get", {"taskId": tid})), 10, 0.1, what="completed")
            self.assertEqual(done["result"]["content"][0]["text"], "Deleted c.txt")
            # cancel through another node
            t = result(c.http[0], "tools/call", {"name": "slow_compute",
                                                 "arguments": {"seconds": 60}})
            result(c.http[1], "tasks/cancel", {"taskId": t["taskId"]})
            self.assertEqual(result(c.http[2], "tasks/get", {"taskId": t["taskId"]})["status"],
                             "cancelled")

    def test_task_survives_its_owner(self):
        with Cluster(3, extra=SETUP) as c:
            c.wait_formed()
            wait_for(lambda: len(c.status(0)["raft"]["voters"]) == 3, 5, 0.05,
                     what="three voters")
            victim = next(i for i in range(3) if i != c.leader())
            other = next(i for i in range(3) if i != victim)
            done = result(c.http[victim], "tools/call", {"name": "slow_compute",
                                                         "arguments": {"ms": 100}})
            wait_for(lambda: result(c.http[other], "tasks/get", {"taskId": done["taskId"]})[
                "status"] == "completed", 10, 0.1, what="the task completed")
            running = result(c.http[victim], "tools/call", {"name": "slow_compute",
                                                            "arguments": {"seconds": 60}})
            time.sleep(0.2)  # (its create is acknowledged, so replicated: the answer waited)
            parts = [int(t["taskId"].split("-")[0]) for t in (done, running)]
            c.kill(victim)

            def promoted():
                st = c.status(other)
                return all(owner_of(st, p) != victim for p in parts) and st
            wait_for(promoted, 15, 0.05, what="the victim's partitions promoted")

            def answered(tid, want):
                body = post(c.http[other], "tasks/get", {"taskId": tid})
                r = body.get("result")
                return r if r and r["status"] in want else None
            got = wait_for(lambda: answered(done["taskId"], ("completed",)), 15, 0.1,
                           what="the finished task through the new owner")
            self.assertEqual(got["result"]["structuredContent"], {"ms": 100})
            lost = wait_for(lambda: answered(running["taskId"], ("failed",)), 15, 0.1,
                            what="the running task reported failed")
            self.assertEqual(lost["error"]["code"], -32603)
            self.assertIn("took the session over", lost["error"]["message"])


if __name__ == "__main__":
    main()
