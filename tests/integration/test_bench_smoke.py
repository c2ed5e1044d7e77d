"""cmcp-bench against a real node, briefly: a few hundred requests over
Streamable HTTP (JSON and SSE answers) and TCP, closed and open loop; its JSON
report must show zero errors and sane percentiles. This is not a benchmark
(`make bench` runs those); it checks that the load generator works."""
import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cmcp_harness import BIN_DIR, Node, main  # noqa: E402
from mcp_client import free_port, node_config  # noqa: E402


def bench_path():
    return os.path.join(BIN_DIR, "cmcp-bench")


class BenchSmokeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.access(bench_path(), os.X_OK):
            raise unittest.SkipTest("no %s" % bench_path())
        cls.http, cls.tcp = free_port(), free_port()
        cls.node = Node(node_config(cls.http, cls.tcp, extra="""
[metrics]
port = 0
[admin]
endpoint =
""")).start()

    @classmethod
    def tearDownClass(cls):
        cls.node.cleanup()

    def bench(self, url, *args, expect_ok=None, load=True):
        argv = [bench_path(), "--quiet", "--json", "-", "--time-limit", "60"] + list(args) + [url]
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=90)
        self.assertEqual(p.returncode, 0, "cmcp-bench failed: %s\n%s" % (p.stdout, p.stderr))
        r = json.loads(p.stdout)
        self.assertEqual(r["errors"], 0, r)
        self.assertEqual(sum(r["errors_by_kind"].values()), 0, r)
        self.assertEqual(r["ramp"]["sessions_failed"], 0, r)
        self.assertTrue(r["ramp"]["complete"], r)
        if not load:
            return r
        self.assertTrue(r["load_complete"], r)
        if expect_ok is not None:
            self.assertEqual(r["ok"], expect_ok, r)
        self.assertGreater(r["rps"], 0, r)
        lat = r["latency_ms"]
        self.assertEqual(lat["count"], r["ok"], r)
        seq = [lat["min"], lat["p50"], lat["p90"], lat["p99"], lat["p999"], lat["max"]]
        self.assertGreater(lat["min"], 0, r)
        self.assertEqual(seq, sorted(seq), "percentiles out of order: %r" % lat)
        self.assertLess(lat["max"], 10000, r)
        self.assertLessEqual(lat["min"], lat["mean"], r)
        self.assertLessEqual(lat["mean"], lat["max"], r)
        return r

    def test_http_closed_loop(self):
        r = self.bench("http://127.0.0.1:%d/mcp" % self.http, "-c", "4", "-n", "300", "-d", "30",
                       "-w", "0", expect_ok=300)
        self.assertEqual(r["ramp"]["sessions_ok"], 4, r)
        self.assertEqual(r["transport"], "http")

    def test_http_open_loop(self):
        r = self.bench("http://127.0.0.1:%d/mcp" % self.http, "-c", "8", "-r", "400", "-d", "0.5",
                       "-w", "0.2")
        self.assertEqual(r["mode"], "open")
        self.assertGreaterEqual(r["ok"], 190, r)  # 400/s for 0.5 s
        self.assertLessEqual(r["ok"], 201, r)

    def test_http_sse_answers(self):
        # sleep with a progress token answers as an SSE stream with progress events first.
        r = self.bench("http://127.0.0.1:%d/mcp" % self.http, "-c", "2", "-n", "4", "-d", "30",
                       "-w", "0", "--params",
                       '{"name":"sleep","arguments":{"ms":250},"_meta":{"progressToken":"p"}}',
                       expect_ok=4)
        self.assertGreater(r["events"], 0, r)
        self.assertGreaterEqual(r["latency_ms"]["min"], 250, r)

    def test_tcp_closed_loop(self):
        r = self.bench("tcp://127.0.0.1:%d" % self.tcp, "-c", "4", "--depth", "4", "-n", "400",
                       "-d", "30", "-w", "0", expect_ok=400)
        self.assertEqual(r["transport"], "tcp")
        self.assertEqual(r["ramp"]["sessions_ok"], 4, r)

    def test_hold_and_check(self):
        r = self.bench("tcp://127.0.0.1:%d" % self.tcp, "-c", "20", "--ramp-calls", "1", "-d", "0",
                       "--hold", "0.2", "--hold-check", "--source-addrs", "4", load=False)
        self.assertEqual(r["ramp"]["sessions_ok"], 20, r)
        self.assertEqual((r["check"]["ok"], r["check"]["errors"]), (20, 0), r)

    def test_refuses_remote_targets(self):
        p = subprocess.run([bench_path(), "-d", "1", "http://192.0.2.1:80/mcp"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"loopback", p.stderr)


if __name__ == "__main__":
    main()
