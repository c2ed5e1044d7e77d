"""The official MCP conformance suite (@modelcontextprotocol/conformance, server
mode, all scenarios) against a node serving the `conformance` tool pack."""
import os
import re
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cmcp_harness import Node, main  # noqa: E402
from mcp_client import free_port, node_config  # noqa: E402

SRC = os.environ.get("CMCP_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
NODE_DIR = os.path.join(SRC, "tests", "node")
CLI = os.path.join(NODE_DIR, "node_modules", "@modelcontextprotocol", "conformance", "dist", "index.js")
# 0.1.16 needs Node 22 (fs.globSync), which comes from npm as a package as for the 2026 suite
NODE22 = os.path.join(NODE_DIR, "node_modules", "node22", "bin", "node")


class ConformanceTest(unittest.TestCase):
    def test_all_server_scenarios(self):
        http, tcp = free_port(), free_port()
        with Node(node_config(http, tcp, packs="core,conformance")):
            out_dir = os.path.join("/tmp", "cmcp-conformance-%d" % os.getpid())
            self.addCleanup(shutil.rmtree, out_dir, True)  # the suite's per-scenario files
            p = subprocess.run([NODE22, CLI, "server", "--url", f"http://127.0.0.1:{http}/mcp",
                                "--suite", "all", "-o", out_dir],
                               capture_output=True, text=True, timeout=240, cwd=NODE_DIR)
            out = p.stdout + p.stderr
            print(out[-6000:])
            self.assertEqual(p.returncode, 0, "conformance suite failed")
            m = re.search(r"Total: (\d+) passed, (\d+) failed", out)
            self.assertIsNotNone(m, "no summary line from the conformance suite")
            self.assertEqual(int(m.group(2)), 0, out[-3000:])
            # 0.1.16 has 32 server scenarios with 46 checks; fewer means scenarios did not run.
            self.assertGreaterEqual(int(m.group(1)), 46, out[-3000:])


if __name__ == "__main__":
    main()
