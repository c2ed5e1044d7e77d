"""The official MCP TypeScript SDK client (@modelcontextprotocol/sdk) against
a real node, over Streamable HTTP and over stdio: list tools, echo, sleep with
progress, a cancelled sleep, kv_set/kv_get, close."""
import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cmcp_harness import Node, cmcpd_path, main  # noqa: E402
from mcp_client import free_port, node_config  # noqa: E402

SRC = os.environ.get("CMCP_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
NODE_DIR = os.path.join(SRC, "tests", "node")


def run_client(*args, node_flags=()):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMCP_")}
    p = subprocess.run(["node", *node_flags, os.path.join(NODE_DIR, "sdk_client.mjs"), *args],
                       capture_output=True,
                       text=True, timeout=90, env=env, cwd=NODE_DIR)
    if p.returncode != 0:
        raise AssertionError("sdk client failed (%d):\nstdout: %s\nstderr: %s" % (
            p.returncode, p.stdout[-3000:], p.stderr[-5000:]))
    return json.loads(p.stdout.strip().splitlines()[-1])


class SdkClientTest(unittest.TestCase):
    def check(self, report, http):
        steps = {s["name"]: s for s in report["steps"]}
        self.assertEqual(report["serverVersion"]["name"], "cmcp")
        self.assertIn("echo", steps["tools/list"]["names"])
        self.assertEqual(steps["echo"]["text"], "hello from the SDK")
        self.assertFalse(steps["sleep"]["isError"])
        self.assertGreaterEqual(steps["sleep"]["progress"], 2)
        self.assertTrue(steps["cancel"]["outcome"].startswith("rejected"), steps["cancel"])
        self.assertLess(steps["cancel"]["ms"], 10000)
        self.assertIn("ping-after-cancel", steps)
        self.assertIn("teal", steps["kv"]["text"])
        if http:
            self.assertRegex(report["sessionId"], r"^[0-9]+-")
            self.assertIn("terminate", steps)

    def test_streamable_http(self):
        http, tcp = free_port(), free_port()
        with Node(node_config(http, tcp)) as node:
            report = run_client("http", f"http://127.0.0.1:{http}/mcp")
            self.check(report, http=True)
            node.wait_event("session_deleted", timeout=5)

    def test_websocket(self):
        http, tcp = free_port(), free_port()
        with Node(node_config(http, tcp)) as node:
            # Node 20 has WebSocket behind a flag; the SDK's transport uses the global one.
            report = run_client("ws", f"ws://127.0.0.1:{http}/mcp/ws",
                                node_flags=("--experimental-websocket",))
            self.check(report, http=False)
            node.wait_event("session_deleted", timeout=5)

    def test_legacy_sse(self):
        http, tcp = free_port(), free_port()
        with Node(node_config(http, tcp)) as node:
            report = run_client("sse", f"http://127.0.0.1:{http}/sse")
            self.check(report, http=False)
            node.wait_event("session_deleted", timeout=5)

    def test_stdio(self):
        report = run_client("stdio", cmcpd_path(), "--stdio")
        self.check(report, http=False)


if __name__ == "__main__":
    main()
