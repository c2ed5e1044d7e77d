"""External command tools ([tool.NAME]): each call is a temporary `toolrun`
child of tool_sup running the command with JSON on stdin and stdout. Success,
timeout, crash, non-zero exit, garbage output, cancellation, the concurrency
limit, and no process left behind."""
import json
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cmcp_harness import Node, main  # noqa: E402
from mcp_client import HttpConn, Session, free_port, node_config  # noqa: E402

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "tool_fixture.py")


def tool(name, mode, timeout=5000, extra=""):
    return f"""
[tool.{name}]
description = test fixture in mode {mode}
input_schema = {{"type": "object",
  "properties": {{"text": {{"type": "string"}}, "seconds": {{"type": "number"}}}}}}
command = python3 {FIX} {mode}
timeout_ms = {timeout}
{extra}
"""


def fixture_pids():
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if FIX.encode() in f.read():
                        pids.append(int(d))
            except OSError:
                pass
    return pids


class ExternalToolsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.http, cls.tcp = free_port(), free_port()
        cfg = node_config(cls.http, cls.tcp) + tool("ext_echo", "echo", extra="cwd = /tmp\nenv = FIXTURE_ENV=hello") \
            + tool("ext_result", "result") + tool("ext_slow", "sleep", timeout=700) \
            + tool("ext_crash", "crash") + tool("ext_fail", "fail") + tool("ext_garbage", "garbage") \
            + tool("ext_sleepy", "sleep", timeout=20000, extra="max_concurrency = 2") \
            + tool("ext_spawn", "spawn", timeout=800)
        cls.node = Node(cfg).start()

    @classmethod
    def tearDownClass(cls):
        cls.node.cleanup()

    def session(self):
        s = Session(self.http)
        self.addCleanup(s.close)
        return s

    def result(self, s, name, args=None):
        r = s.tool(name, args or {}, timeout=30)
        self.assertIn("result", r, r)
        return r["result"]

    def text(self, res):
        return " ".join(c.get("text", "") for c in res["content"])

    def test_listed_with_schema(self):
        s = self.session()
        resp, _ = s.call("tools/list")
        tools = {t["name"]: t for t in resp["result"]["tools"]}
        self.assertIn("ext_echo", tools)
        self.assertEqual(tools["ext_echo"]["inputSchema"]["properties"]["text"]["type"], "string")

    def test_success_structured_and_hand_made(self):
        s = self.session()
        res = self.result(s, "ext_echo", {"text": "hi"})
        self.assertFalse(res.get("isError", False), res)
        self.assertEqual(res["structuredContent"]["echoed"], {"text": "hi"})
        self.assertEqual(res["structuredContent"]["cwd"], "/tmp")
        self.assertEqual(res["structuredContent"]["env"], "hello")
        self.assertEqual(self.text(self.result(s, "ext_result")), "hand-made result")
        self.assertTrue(self.node.has_event("tool_stderr", tool="ext_echo"))

    def test_failures_are_error_results(self):
        s = self.session()
        cases = {"ext_slow": "timed out after 700 ms", "ext_crash": "signal 11",
                 "ext_fail": "exited with status 3", "ext_garbage": "not JSON"}
        for name, needle in cases.items():
            t0 = time.monotonic()
            res = self.result(s, name, {"seconds": 30})
            self.assertTrue(res.get("isError"), (name, res))
            self.assertIn(needle, self.text(res), name)
            self.assertLess(time.monotonic() - t0, 10, name)
        self.assertIn("something went wrong", self.text(self.result(s, "ext_fail")))

    def test_process_group_is_killed(self):
        s = self.session()
        res = self.result(s, "ext_spawn")
        self.assertIn("timed out", self.text(res))
        self.node.wait_for(lambda: not fixture_pids(), timeout=5, what="no fixture process left")

    def test_cancellation_kills_the_run(self):
        s = self.session()
        c = HttpConn(self.http)
        self.addCleanup(c.close)
        c.send_raw(b"")  # connection ready
        body = json.dumps({"jsonrpc": "2.0", "id": 501, "method": "tools/call",
                           "params": {"name": "ext_sleepy", "arguments": {"seconds": 30}}})
        head = ("POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                "Accept: application/json, text/event-stream\r\n"
                f"Mcp-Session-Id: {s.sid}\r\nContent-Length: {len(body)}\r\n\r\n")
        c.send_raw(head.encode() + body.encode())
        self.node.wait_for(lambda: fixture_pids(), timeout=5, what="the command runs")
        r = s.post({"jsonrpc": "2.0", "method": "notifications/cancelled",
                    "params": {"requestId": 501, "reason": "test"}})
        self.assertEqual(r.status, 202)
        self.node.wait_for(lambda: not fixture_pids(), timeout=5, what="the command is gone")
        self.node.wait_for(lambda: not self.node.children("tool_sup"), timeout=5,
                           what="no toolrun under tool_sup")

    def test_concurrency_limit(self):
        s = self.session()
        results = []

        def call():
            conn = HttpConn(self.http)
            try:
                resp, _ = s.call("tools/call", {"name": "ext_sleepy", "arguments": {"seconds": 1.5}},
                                 conn=conn, timeout=30)
                results.append(resp["result"])
            finally:
                conn.close()
        threads = [threading.Thread(target=call) for _ in range(2)]
        for t in threads:
            t.start()
        self.node.wait_for(lambda: len(self.node.children("tool_sup")) == 2, timeout=5,
                           what="two runs")
        busy = self.result(s, "ext_sleepy", {"seconds": 1})
        self.assertTrue(busy.get("isError"))
        self.assertIn("busy", self.text(busy))
        for t in threads:
            t.join(20)
        self.assertEqual(len(results), 2)
        self.assertTrue(all(not r.get("isError") for r in results), results)

    def test_zz_nothing_left_behind(self):
        self.node.wait_for(lambda: not fixture_pids(), timeout=10, what="no fixture process")
        self.node.wait_for(lambda: not self.node.children("tool_sup"), timeout=10, what="no runs")


if __name__ == "__main__":
    main()
