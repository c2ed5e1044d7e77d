"""The metrics worker against a real node: /metrics (names, values that move as
requests are served and children restart, `promtool check metrics`), /health and
/ready flipping while a child restarts, /status, and a metrics worker crash that
disturbs nothing and loses no counter."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cmcp_harness import Node, main  # noqa: E402
from mcp_client import Session  # noqa: E402
from ops_client import Ports, get_json, http_get, metrics, wait_metric  # noqa: E402

REQUIRED = ["cmcp_up", "cmcp_ready", "cmcp_supervisor_restarts_total",
            "cmcp_supervisor_children", "cmcp_process_resident_memory_bytes"]
# Published by listeners and shards (their instrumentation), checked when present.
WORKER_METRICS = ["cmcp_requests_total", "cmcp_request_errors_total",
                  "cmcp_request_duration_seconds", "cmcp_sessions_active",
                  "cmcp_sessions_created_total", "cmcp_sessions_closed_total",
                  "cmcp_transport_connections", "cmcp_transport_messages_received_total",
                  "cmcp_transport_messages_sent_total", "cmcp_shard_links_up"]


def names(m):
    out = set()
    for name, _ in m:
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[:-len(suffix)] == "cmcp_request_duration_seconds":
                name = name[:-len(suffix)]
        out.add(name)
    return out


class MetricsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.p = Ports()
        # A restart waits 2 s, so /health can be seen answering 503 meanwhile.
        cls.node = Node(cls.p.config(extra="[tree.shard_sup]\nbackoff_min = 2000\n")).start()
        wait = time.monotonic() + 10
        while time.monotonic() < wait:
            try:
                if http_get(cls.p.metrics, "/ready")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.05)

    @classmethod
    def tearDownClass(cls):
        cls.node.cleanup()

    def test_required_names_and_help(self):
        st, headers, body = http_get(self.p.metrics, "/metrics")
        self.assertEqual(st, 200)
        self.assertTrue(headers["content-type"].startswith("text/plain; version=0.0.4"))
        text = body.decode()
        m = metrics(self.p.metrics)
        for n in REQUIRED:
            self.assertIn(n, names(m), n)
            self.assertIn("# HELP %s " % n, text)
            self.assertIn("# TYPE %s " % n, text)
        self.assertEqual(m[("cmcp_up", "")], 1)
        self.assertEqual(m[("cmcp_ready", "")], 1)
        self.assertEqual(m[("cmcp_supervisor_children", 'supervisor="shard_sup",state="running"')], 2)
        self.assertEqual(m[("cmcp_supervisor_children", 'supervisor="root",state="running"')], 5)
        self.assertEqual(m[("cmcp_supervisor_children", 'supervisor="ops_sup",state="running"')], 2)
        for role, ident in (("supervisor", "root"), ("shard", "shard-0"), ("listener", "listener-0"),
                            ("metrics", "metrics"), ("admin", "admin")):
            key = ("cmcp_process_resident_memory_bytes", 'role="%s",id="%s"' % (role, ident))
            if role in ("shard", "listener") and key not in m:
                continue  # published once listeners and shards call stats_init
            self.assertGreater(m[key], 100000, key)

    def test_build_info_and_process_series(self):
        m = metrics(self.p.metrics)
        info = [labels for (n, labels), v in m.items() if n == "cmcp_build_info" and v == 1]
        self.assertEqual(len(info), 1, info)
        self.assertIn('version="0.1.0"', info[0])
        self.assertRegex(info[0], r'revision="([0-9a-f]{7,}|unknown)"')
        key = 'role="admin",id="admin"'
        for name in ("process_cpu_seconds_total", "process_open_fds",
                     "process_resident_memory_bytes", "process_start_time_seconds"):
            self.assertIn((name, key), m, name)
        self.assertGreater(m[("process_open_fds", key)], 2)
        self.assertGreater(m[("process_start_time_seconds", key)], 1.7e9)
        self.assertLess(m[("process_start_time_seconds", key)], time.time() + 1)
        self.assertGreaterEqual(m[("process_cpu_seconds_total", key)], 0)

    def test_counters_present_at_zero_from_start(self):
        # Every label value a process can produce is there before its first event, so
        # rate() and alerts see the series from the first scrape. Only the error counts
        # (by method and code) and admin commands (by command) appear with their first use.
        expected = [("cmcp_requests_total", 'method="%s",transport="%s"' % (m, t))
                    for m in ("initialize", "tools/call", "ping", "other", "batch")
                    for t in ("http", "sse", "websocket", "tcp")]
        expected += [("cmcp_sessions_closed_total", 'reason="%s"' % r)
                     for r in ("deleted", "idle", "abandoned", "initialize failed", "not saved",
                               "task expired")]
        expected += [(n, 'transport="%s"' % t)
                     for n in ("cmcp_transport_messages_received_total",
                               "cmcp_transport_messages_sent_total", "cmcp_transport_connections")
                     for t in ("http", "sse", "websocket", "tcp")]
        expected += [("cmcp_metrics_scrapes_total", 'path="%s"' % p)
                     for p in ("/metrics", "/health", "/ready", "/status", "other")]
        expected += [("cmcp_admin_auth_failures_total", 'reason="%s"' % r)
                     for r in ("wrong_cookie", "unknown_session", "replay", "tampered",
                               "out_of_sequence", "malformed")]
        expected += [("cmcp_writes_refused_total", 'reason="fenced"'),
                     ("cmcp_writes_refused_total", 'reason="not_owner"'),
                     ("cmcp_replication_catchups_total", 'result="rejoined"'),
                     ("cmcp_replication_catchups_total", 'result="aborted"'),
                     ("cmcp_replication_catchups_started_total", 'from="log"'),
                     ("cmcp_replication_catchups_started_total", 'from="snapshot"'),
                     ("cmcp_store_commits_total", 'of="own"'),
                     ("cmcp_store_commits_total", 'of="copies"')]
        expected += [(n, "") for n in (
            "cmcp_sessions_created_total", "cmcp_sessions_recovered_total",
            "cmcp_store_commit_failures_total", "cmcp_replication_unknown_total",
            "cmcp_replication_changes_applied_total", "cmcp_replication_snapshots_installed_total",
            "cmcp_shard_link_drops_total", "cmcp_forwarded_requests_total",
            "cmcp_admin_auth_throttled_total", "cmcp_tasks_created_total")]
        deadline = time.monotonic() + 5  # every process publishes within a second of its start
        while True:
            m = metrics(self.p.metrics)
            missing = [k for k in expected if k not in m]
            if not missing:
                break
            self.assertLess(time.monotonic(), deadline, "series not there from the start: %s"
                            % missing)
            time.sleep(0.1)
        # no stdio transport on a node that was not started with --stdio
        self.assertNotIn(("cmcp_transport_connections", 'transport="stdio"'), m)
        self.assertEqual(m[("cmcp_writes_refused_total", 'reason="fenced"')], 0)

    def test_every_family_has_help_and_a_row_in_the_docs(self):
        Session(self.p.http).close()  # traffic, so the request families exist
        time.sleep(1.2)  # one more snapshot of every process
        _, _, body = http_get(self.p.metrics, "/metrics")
        src = os.environ.get("CMCP_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
        docs = ""
        for f in ("operations.md", "cluster.md"):
            with open(os.path.join(src, "docs", f)) as fh:
                docs += fh.read()
        missing_help, missing_doc = [], []
        for line in body.decode().splitlines():
            if not line.startswith("# HELP "):
                continue
            name, help_text = line[7:].split(" ", 1)
            if "no description registered" in help_text:
                missing_help.append(name)
            if "`%s`" % name not in docs and not (name.startswith("cmcp_cluster_") and
                                                 "`cmcp_cluster_*`" in docs):
                missing_doc.append(name)
        self.assertEqual(missing_help, [], "families without a HELP of their own")
        self.assertEqual(missing_doc, [], "families without a row in docs/operations.md or "
                                          "docs/cluster.md")

    def test_promtool_accepts(self):
        promtool = shutil.which("promtool")
        self.assertTrue(promtool, "promtool missing: make deps installs Debian's prometheus")
        Session(self.p.http).close()  # some traffic first, so request metrics exist if emitted
        _, _, body = http_get(self.p.metrics, "/metrics")
        p = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                           timeout=30)
        self.assertEqual(p.returncode, 0, (p.stdout + p.stderr).decode() + body.decode()[:3000])

    def test_request_metrics_move(self):
        s = Session(self.p.http)
        self.addCleanup(s.close)
        deadline = time.monotonic() + 5  # snapshots come about once a second
        while True:
            before = metrics(self.p.metrics)
            if "cmcp_requests_total" in names(before):
                break
            self.assertLess(time.monotonic(), deadline, "listeners/shards publish no request metrics")
            time.sleep(0.1)
        total = lambda m: sum(v for (n, _), v in m.items() if n == "cmcp_requests_total")  # noqa
        for i in range(5):
            s.tool("echo", {"text": str(i)})
        s.call("no/such/method")  # an error, counted by method and code
        deadline = time.monotonic() + 5
        while total(metrics(self.p.metrics)) < total(before) + 5:
            self.assertLess(time.monotonic(), deadline, "cmcp_requests_total did not move by 5")
            time.sleep(0.1)
        after = metrics(self.p.metrics)
        deadline = time.monotonic() + 5
        while (("cmcp_request_errors_total", 'method="other",code="-32601"') not in after or
               set(WORKER_METRICS) - names(after)):
            self.assertLess(time.monotonic(), deadline, "missing: the -32601 error count or %s"
                            % (set(WORKER_METRICS) - names(after)))
            time.sleep(0.1)
            after = metrics(self.p.metrics)
        self.assertGreaterEqual(sum(v for (n, _), v in after.items()
                                    if n == "cmcp_sessions_active"), 1)
        # durations by method, which the shard names in its reply (the listener times)
        dur = lambda m, meth: m.get(("cmcp_request_duration_seconds_count",  # noqa
                                     'method="%s"' % meth), 0)
        deadline = time.monotonic() + 5
        while dur(after, "tools/call") < 5 or dur(after, "other") < 1:
            self.assertLess(time.monotonic(), deadline, "durations by method: %s" % sorted(
                k for k in after if k[0] == "cmcp_request_duration_seconds_count"))
            time.sleep(0.1)
            after = metrics(self.p.metrics)
        self.assertNotIn(("cmcp_request_duration_seconds_count", ""), after)
        self.assertNotIn(("cmcp_request_duration_seconds_count", 'method="no/such/method"'), after)
        # a write is committed: the shard's own commits count it (one commit may hold several)
        commits = lambda m: m.get(("cmcp_store_commits_total", 'of="own"'), 0)  # noqa
        c0 = commits(after)
        s.tool("kv_set", {"key": "k", "value": "v"})
        deadline = time.monotonic() + 5
        while commits(after) < c0 + 1:
            self.assertLess(time.monotonic(), deadline, "cmcp_store_commits_total did not move")
            time.sleep(0.1)
            after = metrics(self.p.metrics)
        self.assertEqual(after.get(("cmcp_store_commits_total", 'of="copies"')), 0)

    def test_restart_counts_and_health_flips(self):
        label = 'supervisor="shard_sup",child="shard-1"'
        before = metrics(self.p.metrics)[("cmcp_supervisor_restarts_total", label)]
        pid = self.node.child_pids("shard_sup")["shard-1"]
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        # Within milliseconds the supervisor publishes; /health and /ready say why.
        seen = None
        while time.monotonic() - t0 < 1.8:
            st, body = get_json(self.p.metrics, "/health")
            if st == 503:
                seen = body
                break
            time.sleep(0.01)
        self.assertIsNotNone(seen, "/health never answered 503 during the restart")
        self.assertLess(time.monotonic() - t0, 1.8)
        self.assertEqual(seen["status"], "unavailable")
        self.assertTrue(any("shard-1" in r for r in seen["reasons"]), seen)
        st, ready = get_json(self.p.metrics, "/ready")
        self.assertEqual(st, 503, ready)
        self.assertEqual(metrics(self.p.metrics)[("cmcp_ready", "")], 0)
        wait_metric(self.p.metrics, "cmcp_supervisor_restarts_total", label,
                    lambda v: v == before + 1)
        # Back once the child is running again.
        deadline = time.monotonic() + 10
        while get_json(self.p.metrics, "/health")[0] != 200:
            self.assertLess(time.monotonic(), deadline, "/health did not come back to 200")
            time.sleep(0.05)
        self.assertEqual(get_json(self.p.metrics, "/ready")[0], 200)
        self.node.wait_running("shard_sup")
        # The listener saw its link to shard-1 break, and has both links again.
        wait_metric(self.p.metrics, "cmcp_shard_link_drops_total", "", lambda v: v >= 1)
        wait_metric(self.p.metrics, "cmcp_shard_links_up", "", lambda v: v == 2)

    def test_status(self):
        st, s = get_json(self.p.metrics, "/status")
        self.assertEqual(st, 200)
        self.assertEqual(s["node"], "cmcp")
        self.assertRegex(s["version"], r"^\d+\.\d+\.\d+")
        self.assertEqual(s["pid"], self.node.pid)
        self.assertGreater(s["uptime_s"], 0)
        tree = {c["id"]: c for c in s["tree"]["children"]}
        self.assertEqual(list(tree), ["cluster_sup", "shard_sup", "listener_sup", "tool_sup", "ops_sup"])
        self.assertEqual([c["id"] for c in tree["ops_sup"]["children"]], ["metrics", "admin"])
        for c in tree.values():
            self.assertIsInstance(c["pid"], int)
            self.assertIn("restarts", c)
            self.assertIn(c["state"], ("running", "starting", "restarting"))
        shards = {c["id"]: c for c in tree["shard_sup"]["children"]}
        self.assertEqual(set(shards), {"shard-0", "shard-1"})
        self.assertEqual(shards["shard-0"]["pid"], self.node.child_pids("shard_sup")["shard-0"])
        if s["shards"]:  # shards appear once they publish (stats_init in the shard role)
            self.assertEqual([x["id"] for x in s["shards"]], ["shard-0", "shard-1"])
        for lst in s["listeners"]:
            self.assertEqual(lst["http"], "127.0.0.1:%d" % self.p.http)
            self.assertEqual(lst["tcp"], "127.0.0.1:%d" % self.p.tcp)
        self.assertEqual(s["metrics_http"], "127.0.0.1:%d" % self.p.metrics)
        self.assertEqual(s["admin_endpoint"], "tcp://127.0.0.1:%d" % self.p.admin)

    def test_http_errors(self):
        st, _, body = http_get(self.p.metrics, "/nope")
        self.assertEqual(st, 404)
        self.assertIn(b"/metrics", body)
        st, headers, _ = http_get(self.p.metrics, "/metrics", method="POST")
        self.assertEqual(st, 405)
        self.assertEqual(headers["allow"], "GET")
        # Keep-alive: several requests on one connection.
        s = socket.create_connection(("127.0.0.1", self.p.metrics), timeout=5)
        try:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            deadline = time.monotonic() + 5
            while data.count(b"HTTP/1.1 ") < 2 and time.monotonic() < deadline:
                data += s.recv(65536)
            self.assertEqual(data.count(b"HTTP/1.1 200"), 2, data)
        finally:
            s.close()

    def test_zz_metrics_crash_disturbs_nothing(self):
        """Runs last in the class: kills the metrics worker while requests flow."""
        label = 'supervisor="shard_sup",child="shard-1"'
        before = metrics(self.p.metrics)
        restarts = before[("cmcp_supervisor_restarts_total", label)]
        others = self.node.child_pids("root")
        admin = self.node.child_pids("ops_sup")["admin"]
        workers = self.node.child_pids("shard_sup")
        workers.update(self.node.child_pids("listener_sup"))
        s = Session(self.p.http)
        self.addCleanup(s.close)
        errors, done = [], threading.Event()

        def traffic():
            n = 0
            while not done.is_set():
                try:
                    r = s.tool("echo", {"text": str(n)})
                    if r["result"]["content"][0]["text"] != str(n):
                        errors.append(r)
                except Exception as e:  # noqa: BLE001
                    errors.append(e)
                n += 1
        th = threading.Thread(target=traffic)
        th.start()
        try:
            time.sleep(0.2)
            os.kill(self.node.child_pids("ops_sup")["metrics"], signal.SIGKILL)
            self.node.wait_for(lambda: self.node.child_map("ops_sup")["metrics"]["state"] == "running",
                               10, what="metrics running again")
            time.sleep(0.3)
        finally:
            done.set()
            th.join(10)
        self.assertEqual(errors, [])
        # Nothing else was restarted.
        self.assertEqual(self.node.child_pids("root"), others)
        self.assertEqual(self.node.child_pids("ops_sup")["admin"], admin)  # one_for_one
        after_workers = self.node.child_pids("shard_sup")
        after_workers.update(self.node.child_pids("listener_sup"))
        self.assertEqual(after_workers, workers)
        # Counters live with their owners: the new worker shows the same totals (each process
        # republishes every second; the bound is generous for sanitizer builds on a loaded box).
        deadline = time.monotonic() + 20
        seen = None
        while True:
            try:
                m = metrics(self.p.metrics)
                seen = (m.get(("cmcp_supervisor_restarts_total", label)), m.get(("cmcp_ready", "")))
                # Each owner republishes on its own second: wait for the request counters too.
                behind = [k for k, v in before.items()
                          if k[0] == "cmcp_requests_total" and m.get(k, 0) < v]
                if seen == (restarts, 1) and not behind:
                    break
                if seen == (restarts, 1):
                    seen = f"{seen}, request counters not yet back: {behind}"

            except OSError as e:
                seen = e
            if time.monotonic() > deadline:
                ready = http_get(self.p.metrics, "/ready")[2].decode(errors="replace")
                tail = "\n".join(self.node.stderr_text().splitlines()[-40:])
                self.fail(f"counters did not come back: shard-1 restarts and cmcp_ready are {seen}, "
                          f"want ({restarts}, 1); /ready says {ready}\nlast log lines:\n{tail}")
            time.sleep(0.05)
        self.assertEqual(m[("cmcp_supervisor_restarts_total",
                            'supervisor="ops_sup",child="metrics"')], 1)
        for key, v in before.items():
            if key[0] == "cmcp_requests_total":
                self.assertGreaterEqual(m.get(key, 0), v, key)


class PortTakenTest(unittest.TestCase):
    def test_metrics_port_taken_then_freed(self):
        p = Ports()
        blocker = socket.socket()
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", p.metrics))
        blocker.listen(1)
        try:
            with Node(p.config()) as node:
                # The node serves regardless; the worker says what is wrong and retries.
                ev = node.wait_event("metrics_http_listen_failed", 5)[0]
                self.assertEqual(ev["port"], p.metrics)
                s = Session(p.http)
                self.assertIn("result", s.call("ping")[0])
                s.close()
                blocker.close()
                node.wait_event("metrics_http_listening", 8)
                self.assertEqual(http_get(p.metrics, "/health")[0], 200)
        finally:
            blocker.close()


if __name__ == "__main__":
    main()
