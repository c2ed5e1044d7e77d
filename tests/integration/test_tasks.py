"""Tasks (MCP 2025-11-25) on a real node: tools/call with a "task" param
answers a CreateTaskResult at once, tasks/get follows the run, tasks/result
returns the tool's answer, tasks/cancel stops it, and a task outlives a
SIGKILL of its shard (a finished one keeps its result, a running one is
reported failed)."""
import json
import os
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cmcp_harness import Node, main  # noqa: E402
from mcp_client import HttpConn, Session, free_port, node_config  # noqa: E402

RELATED = "io.modelcontextprotocol/related-task"
SRC = os.environ.get("CMCP_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
NODE_DIR = os.path.join(SRC, "tests", "node")


def start_task(s, name, args, ttl=60000):
    resp, _ = s.call("tools/call", {"name": name, "arguments": args, "task": {"ttl": ttl}})
    assert "result" in resp, resp
    return resp["result"]["task"]


def poll(s, tid, want, limit_s=15.0, max_polls=150):
    """tasks/get until the status is one of want; bounded in time and count."""
    deadline = time.monotonic() + limit_s
    seen = []
    for _ in range(max_polls):
        resp, _ = s.call("tasks/get", {"taskId": tid})
        assert "result" in resp, resp
        seen.append(resp["result"]["status"])
        if resp["result"]["status"] in want:
            return resp["result"]
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    raise AssertionError("task %s never reached %s: %s" % (tid, want, seen[-5:]))


class TasksTest(unittest.TestCase):
    def test_tasks(self):
        http, tcp = free_port(), free_port()
        with Node(node_config(http, tcp, packs="core,conformance", shards=2)):
            s = Session(http)
            caps = s.init["result"]["capabilities"]
            self.assertIn("call", caps["tasks"]["requests"]["tools"])
            self.assertIn("list", caps["tasks"])
            self.assertIn("cancel", caps["tasks"])
            tools = {t["name"]: t for t in s.call("tools/list")[0]["result"]["tools"]}
            self.assertEqual(tools["slow_compute"]["execution"]["taskSupport"], "optional")
            self.assertNotIn("execution", tools["echo"])

            # Created at once, working; polled to completed; the result is the tool's.
            t0 = time.monotonic()
            task = start_task(s, "slow_compute", {"ms": 800})
            self.assertLess(time.monotonic() - t0, 0.7)
            self.assertEqual(task["status"], "working")
            self.assertEqual(task["ttl"], 60000)
            for k in ("taskId", "createdAt", "lastUpdatedAt", "pollInterval"):
                self.assertIn(k, task)
            done = poll(s, task["taskId"], ("completed",))
            self.assertEqual(done["taskId"], task["taskId"])
            res, _ = s.call("tasks/result", {"taskId": task["taskId"]})
            self.assertEqual(res["result"]["structuredContent"], {"ms": 800})
            self.assertEqual(res["result"]["_meta"][RELATED]["taskId"], task["taskId"])

            # tasks/result before the end waits for it.
            t2 = start_task(s, "slow_compute", {"ms": 600})
            res, _ = s.call("tasks/result", {"taskId": t2["taskId"]}, timeout=10)
            self.assertEqual(res["result"]["structuredContent"], {"ms": 600})

            # Cancel: the task is cancelled, and cannot be cancelled twice.
            t3 = start_task(s, "slow_compute", {"ms": 20000})
            c, _ = s.call("tasks/cancel", {"taskId": t3["taskId"]})
            self.assertEqual(c["result"]["status"], "cancelled")
            self.assertEqual(s.call("tasks/get", {"taskId": t3["taskId"]})[0]["result"]["status"],
                             "cancelled")
            again, _ = s.call("tasks/cancel", {"taskId": t3["taskId"]})
            self.assertEqual(again["error"]["code"], -32602)

            # A failing tool's task is failed; its result is the tool's error result.
            t4 = start_task(s, "failing_job", {})
            failed = poll(s, t4["taskId"], ("failed", "completed"))
            self.assertEqual(failed["status"], "failed")
            self.assertIn("failed on purpose", failed["statusMessage"])
            res, _ = s.call("tasks/result", {"taskId": t4["taskId"]})
            self.assertTrue(res["result"]["isError"])

            # Unknown ids and bad params: -32602, not -32601.
            for params in ({"taskId": "no-such-task"}, {}):
                for m in ("tasks/get", "tasks/result", "tasks/cancel"):
                    err, _ = s.call(m, params)
                    self.assertEqual(err["error"]["code"], -32602, (m, err))
            # A tool that cannot run as a task says so.
            err, _ = s.call("tools/call", {"name": "echo", "arguments": {"text": "x"}, "task": {}})
            self.assertEqual(err["error"]["code"], -32602)

            listed = {t["taskId"]: t["status"]
                      for t in s.call("tasks/list")[0]["result"]["tasks"]}
            self.assertEqual(listed[task["taskId"]], "completed")
            self.assertEqual(listed[t3["taskId"]], "cancelled")
            self.assertEqual(listed[t4["taskId"]], "failed")

            # Tasks belong to their session: another one cannot see them.
            other = Session(http)
            err, _ = other.call("tasks/get", {"taskId": task["taskId"]})
            self.assertEqual(err["error"]["code"], -32602)
            other.close()

            # A task past its ttl is gone.
            t5 = start_task(s, "slow_compute", {"ms": 0}, ttl=300)
            time.sleep(1.5)
            err, _ = s.call("tasks/get", {"taskId": t5["taskId"]})
            self.assertEqual(err["error"]["code"], -32602)
            s.close()

    def test_task_outlives_shard_sigkill(self):
        http, tcp = free_port(), free_port()
        with Node(node_config(http, tcp, packs="core,conformance", shards=2)) as node:
            s = Session(http)
            shard = "shard-%d" % (int(s.sid.split("-")[0]) % 2)
            done = start_task(s, "slow_compute", {"ms": 300})
            poll(s, done["taskId"], ("completed",))
            running = start_task(s, "slow_compute", {"ms": 30000})
            self.assertEqual(poll(s, running["taskId"], ("working",))["status"], "working")

            pid = {c["id"]: c["pid"] for c in node.children("shard_sup")}[shard]
            os.kill(pid, signal.SIGKILL)
            node.wait_for(lambda: any(c["id"] == shard and c["pid"] not in (None, pid)
                                      and c["state"] == "running"
                                      for c in node.children("shard_sup")),
                          timeout=10, what="%s restarted" % shard)
            s.conn.close()
            s.conn = HttpConn(http)

            got = poll(s, done["taskId"], ("completed",))
            self.assertEqual(got["taskId"], done["taskId"])
            res, _ = s.call("tasks/result", {"taskId": done["taskId"]})
            self.assertEqual(res["result"]["structuredContent"], {"ms": 300})

            lost = poll(s, running["taskId"], ("failed", "completed", "cancelled"))
            self.assertEqual(lost["status"], "failed")
            self.assertIn("restarted", lost["statusMessage"])
            res, _ = s.call("tasks/result", {"taskId": running["taskId"]})
            self.assertEqual(res["error"]["code"], -32603)
            self.assertIn("restarted", res["error"]["message"])
            s.close()

    def test_sdk_client_tasks(self):
        """The official TypeScript SDK's experimental tasks client: its schemas accept
        every answer, its callToolStream follows a task to its result."""
        http, tcp = free_port(), free_port()
        with Node(node_config(http, tcp, packs="core,conformance", shards=2)):
            env = {k: v for k, v in os.environ.items() if not k.startswith("CMCP_")}
            p = subprocess.run(["node", os.path.join(NODE_DIR, "sdk_tasks.mjs"),
                                "http://127.0.0.1:%d/mcp" % http],
                               capture_output=True, text=True, timeout=90, env=env, cwd=NODE_DIR)
            self.assertEqual(p.returncode, 0, "stdout: %s\nstderr: %s" % (p.stdout[-3000:],
                                                                         p.stderr[-3000:]))
            steps = {st["name"]: st for st in json.loads(p.stdout.strip().splitlines()[-1])["steps"]}
            self.assertIn("call", steps["capabilities"]["tasks"]["requests"]["tools"])
            self.assertEqual(steps["tools/list"]["slow"], {"taskSupport": "optional"})
            self.assertEqual(steps["stream"]["seen"][0], "created:working")
            self.assertEqual(steps["stream"]["seen"][-1], "status:completed")
            self.assertEqual(steps["stream"]["structured"], {"ms": 400})
            self.assertIn("failed", steps["failing"]["seen"])
            self.assertEqual(steps["cancel"]["status"], "cancelled")
            self.assertEqual(steps["cancel"]["get"], "cancelled")
            self.assertEqual(steps["unknown"]["code"], -32602)


if __name__ == "__main__":
    main()
