"""Per-tool time limits: a built-in tool's call that runs past its limit ends with an
error result that names the limit and how to change it (not the listener's 11-minute
bound); other tools keep the default; a limit for a tool the node does not have stops
the start with the entry named."""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cmcp_harness import Node, main  # noqa: E402
from mcp_client import Session, free_port, node_config  # noqa: E402


class ToolLimitsTest(unittest.TestCase):
    def test_a_call_past_its_tools_limit_is_stopped_and_says_so(self):
        http, tcp = free_port(), free_port()
        node = Node(node_config(http, tcp, extra="[tools]\ncall_timeouts = sleep=300\n"
                                                 "call_timeout_ms = 5000\n")).start()
        self.addCleanup(node.cleanup)
        s = Session(http)
        t0 = time.monotonic()
        r = s.tool("sleep", {"ms": 3000}, timeout=10)
        took = time.monotonic() - t0
        self.assertTrue(r["result"]["isError"], r)
        text = r["result"]["content"][0]["text"]
        self.assertIn("time limit of 300 ms", text)
        self.assertIn("call_timeouts", text)
        self.assertLess(took, 2.0)
        self.assertGreaterEqual(took, 0.25)
        # under the limit: untouched; the session goes on
        r = s.tool("sleep", {"ms": 50})
        self.assertFalse(r["result"].get("isError"), r)
        self.assertEqual(s.tool("echo", {"text": "still here"})["result"]["content"][0]["text"],
                         "still here")
        s.close()

    def test_a_limit_for_an_unknown_tool_stops_the_start(self):
        http, tcp = free_port(), free_port()
        n = Node(node_config(http, tcp, extra="[tools]\ncall_timeouts = no_such_tool=100\n"),
                 wait_ready=False)
        with n:
            code = n.wait_exit(15)
            err = n.stderr_text()
        self.assertNotEqual(code, 0)
        self.assertIn("no_such_tool", err)
        self.assertIn("which is no tool of this node", err)


if __name__ == "__main__":
    main()
