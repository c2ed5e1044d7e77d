"""cmcpctl against a live node: every command (text and --json), its exit
statuses, drain/undrain as /health sees them, log_level reaching every
process, and the interactive shell under a pseudo-terminal (history, Tab
completion)."""
import json
import os
import pty
import select
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cmcp_harness import Node, main  # noqa: E402
from mcp_client import HttpConn, Session, free_port  # noqa: E402
from ops_client import Ports, cmcpctl_path, get_json, run_ctl  # noqa: E402


class CmcpctlTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.p = Ports()
        cls.node = Node(cls.p.config()).start()
        cls.node.wait_event("admin_listening", 5)

    @classmethod
    def tearDownClass(cls):
        cls.node.cleanup()

    def ctl(self, *args, **kw):
        return run_ctl(self.node, self.p.admin, *args, **kw)

    def log_tail(self, n=40):
        return "\n--- node log (last %d lines) ---\n%s" % (
            n, "\n".join(self.node.stderr_text().splitlines()[-n:]))

    def ok(self, *args):
        rc, out, err = self.ctl(*args)
        if rc != 0:
            self.fail("cmcpctl %s: status %d\n%s%s%s" % (" ".join(args), rc, out, err,
                                                         self.log_tail()))
        return out

    def jok(self, *args):
        rc, out, err = self.ctl(*args, json_out=True)
        if rc != 0:
            self.fail("cmcpctl --json %s: status %d\n%s%s%s" % (" ".join(args), rc, out, err,
                                                                self.log_tail()))
        return json.loads(out)

    def session_support(self):
        rc, out, err = self.ctl("sessions")
        self.assertEqual(rc, 0, err)

    # ---- read-only commands ----

    def test_status(self):
        out = self.ok("status")
        for word in ("node cmcp", "tree:", "shard_sup", "shard-0", "listener-0", "metrics",
                     "admin", "127.0.0.1:%d" % self.p.http):
            self.assertIn(word, out)
        s = self.jok("status")
        self.assertEqual(s["node"], "cmcp")
        self.assertEqual(s["pid"], self.node.pid)
        self.assertGreater(s["uptime_s"], 0)
        self.assertEqual([c["id"] for c in s["tree"]],
                         ["cluster_sup", "shard_sup", "listener_sup", "tool_sup", "ops_sup"])
        self.assertEqual([c["id"] for c in s["tree"][4]["children"]], ["metrics", "admin"])
        self.assertEqual([c["id"] for c in s["tree"][0]["children"]],
                         ["cluster_monitor", "failover_manager", "split_brain_detector"])
        shard_sup = s["tree"][1]
        self.assertEqual([c["id"] for c in shard_sup["children"]], ["shard-0", "shard-1"])
        self.assertEqual([x["shard"] for x in s["shards"]], [0, 1])
        self.assertEqual(s["listeners"]["http"], "127.0.0.1:%d" % self.p.http)
        self.assertEqual(s["admin_endpoint"], "tcp://127.0.0.1:%d" % self.p.admin)

    def test_which_and_count_children(self):
        out = self.ok("which_children")
        self.assertIn("shard_sup", out)
        r = self.jok("which_children", "shard_sup")
        self.assertEqual(r["supervisor"], "shard_sup")
        self.assertEqual({c["id"]: c["pid"] for c in r["children"]},
                         self.node.child_pids("shard_sup"))
        r = self.jok("count_children")
        self.assertEqual((r["specs"], r["supervisors"], r["workers"]), (5, 5, 0))
        r = self.jok("count_children", "ops_sup")
        self.assertEqual((r["specs"], r["supervisors"], r["workers"]), (2, 0, 2))
        self.assertIn("specs 2", self.ok("count_children", "shard_sup"))
        rc, _, err = self.ctl("which_children", "nosuch_sup")
        self.assertEqual(rc, 1)
        self.assertIn("not_found: no supervisor 'nosuch_sup'", err)
        rc, _, err = self.ctl("which_children", "../etc")
        self.assertEqual(rc, 1)
        self.assertIn("not a supervisor name", err)

    def test_metrics(self):
        out = self.ok("metrics")
        self.assertIn("# TYPE cmcp_up gauge", out)
        before = {(s["name"], s["labels"]): s["value"] for s in self.jok("metrics")["samples"]}
        self.assertEqual(before[("cmcp_up", "")], 1)
        key = ("cmcp_admin_commands_total", 'command="metrics",outcome="ok"')
        # Served admin commands move the admin worker's counter.
        for _ in range(3):
            self.ok("status")
        deadline = time.monotonic() + 5
        while True:
            now = {(s["name"], s["labels"]): s["value"] for s in self.jok("metrics")["samples"]}
            if now.get(key, 0) >= before.get(key, 0) + 1 and \
                    now.get(("cmcp_admin_commands_total", 'command="status",outcome="ok"'), 0) >= 3:
                break
            self.assertLess(time.monotonic(), deadline, now)
            time.sleep(0.1)

    # ---- supervisor commands ----

    def test_terminate_and_restart_child(self):
        old = self.node.child_pids("shard_sup")["shard-1"]
        self.assertIn("terminated shard-1", self.ok("terminate_child", "shard_sup", "shard-1"))
        c = self.node.child_map("shard_sup")["shard-1"]
        self.assertEqual((c["state"], c["pid"]), ("undefined", None))
        r = self.jok("restart_child", "shard_sup", "shard-1")
        self.assertEqual(r["id"], "shard-1")
        self.assertNotEqual(r["pid"], old)
        self.assertEqual(self.node.child_pids("shard_sup")["shard-1"], r["pid"])
        rc, _, err = self.ctl("restart_child", "shard_sup", "shard-1")
        self.assertEqual(rc, 1)
        self.assertIn("running", err)
        rc, _, err = self.ctl("restart_child", "shard_sup", "ghost")
        self.assertEqual(rc, 1)
        self.assertIn("not_found", err)

    def test_start_and_delete_child(self):
        spec = json.dumps({"id": "tw", "role": "testworker", "restart": "transient"})
        out = self.ok("start_child", "root", spec)
        self.assertIn("started tw", out)
        self.assertEqual(self.node.child_map("root")["tw"]["state"], "running")
        rc, _, err = self.ctl("delete_child", "root", "tw")
        self.assertEqual(rc, 1)
        self.assertIn("running", err)
        self.ok("terminate_child", "root", "tw")
        self.assertIn("deleted tw", self.ok("delete_child", "root", "tw"))
        self.assertNotIn("tw", self.node.child_map("root"))
        rc, _, err = self.ctl("start_child", "root", '{"id":"x","role":"nosuchrole"}')
        self.assertEqual(rc, 1)
        self.assertIn("badarg", err)

    # ---- node state ----

    def test_log_level_reaches_every_process(self):
        self.assertIn("log level: info", self.ok("log_level"))
        n = len(self.node.log_events("log_level_set", level="debug"))
        self.assertEqual(self.jok("log_level", "debug")["level"], "debug")
        # Supervisors and the metrics worker subscribe to the control broadcast.
        self.node.wait_for(lambda: {(e["role"], e["id"]) for e in
                                    self.node.log_events("log_level_set", level="debug")[n:]}
                           >= {("supervisor", "root"), ("supervisor", "shard_sup"),
                               ("metrics", "metrics"), ("admin", "admin")}, 5,
                           what="every process at debug")
        self.ok("log_level", "info")
        rc, _, err = self.ctl("log_level", "loud")
        self.assertEqual(rc, 1)
        self.assertIn("not a log level", err)

    def test_drain_and_undrain(self):
        s = Session(self.p.http)
        self.addCleanup(s.close)
        self.assertIn("draining", self.ok("drain"))
        try:
            # The admin worker publishes at once; the metrics worker takes it asynchronously.
            st, h = self.node.wait_for(lambda: (lambda r: r if r[0] == 503 else None)(
                get_json(self.p.metrics, "/health")), 5, 0.02, "/health 503")
            self.assertEqual(st, 503)
            self.assertTrue(h["draining"])
            self.assertTrue(any("draining" in r for r in h["reasons"]))
            self.assertTrue(self.jok("status")["draining"])
            self.node.wait_event("node_draining", 5, role="supervisor", id="root")
            # Existing sessions go on.
            self.assertEqual(s.tool("echo", {"text": "still"})["result"]["content"][0]["text"],
                             "still")
            c = HttpConn(self.p.http)
            try:
                r = c.request("POST", {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                       "params": {"protocolVersion": "2025-11-25",
                                                  "capabilities": {},
                                                  "clientInfo": {"name": "t", "version": "1"}}})
            finally:
                c.close()
            refused = r.status == 503
        finally:
            self.assertIn("accepting", self.ok("undrain"))
        self.node.wait_for(lambda: get_json(self.p.metrics, "/health")[0] == 200, 5, 0.02,
                           "/health 200 again")
        self.assertTrue(refused, "a new session was accepted while the node was draining")

    # ---- sessions ----

    def test_sessions(self):
        self.session_support()
        mine = [Session(self.p.http) for _ in range(4)]
        for s in mine:
            self.addCleanup(s.close)
        r = self.jok("sessions")
        listed = {x["sid"]: x for x in r["sessions"]}
        for s in mine:
            self.assertIn(s.sid, listed)
            x = listed[s.sid]
            for k in ("protocol", "client", "pending"):
                self.assertIn(k, x)
            self.assertTrue("idle_s" in x or "last_active" in x, x)
            self.assertEqual(x["client"]["name"], "cmcp-test")
            self.assertEqual(x["shard"], int(s.sid.split("-")[0]) % 2)
        r0 = self.jok("sessions", "--shard", "0")
        self.assertTrue(all(x["shard"] == 0 for x in r0["sessions"]))
        self.assertIn(mine[0].sid, self.ok("sessions"))
        shown = self.jok("session", "show", mine[0].sid)
        self.assertEqual(shown["shard"], int(mine[0].sid.split("-")[0]) % 2)
        self.assertIsInstance(shown["session"], dict)
        # without --json: text, "key: value" a line, nested objects indented
        text = self.ok("session", "show", mine[0].sid)
        with self.assertRaises(ValueError):
            json.loads(text)
        self.assertNotIn("{", text)
        self.assertIn("cmcp-test", text)
        for k in shown["session"]:
            self.assertRegex(text, r"(?m)^%s:" % k)
        self.assertIn("killed", self.ok("session", "kill", mine[1].sid))
        r = mine[1].post({"jsonrpc": "2.0", "id": 9, "method": "ping"})
        self.assertEqual(r.status, 404)
        rc, _, err = self.ctl("session", "show", mine[1].sid)
        self.assertEqual(rc, 1)
        self.assertIn("not_found", err)

    def test_session_id_checked(self):
        rc, _, err = self.ctl("session", "show", "not-a-session")
        self.assertEqual(rc, 1)
        self.assertIn("badarg", err)
        rc, _, err = self.ctl("session", "kill", "4000-aaaaaaaaaaaaaaaaaaaaaaaaaa")
        self.assertEqual(rc, 1)
        self.assertIn("partition 4000", err)
        rc, _, err = self.ctl("session", "kill", "7-aaaaaaaaaaaaaaaaaaaaaaaaaa")
        self.assertEqual(rc, 1)
        self.assertIn("holds no session", err)

    # ---- exit statuses and usage ----

    def test_usage_and_exit_statuses(self):
        p = subprocess.run([cmcpctl_path(), "--help"], capture_output=True, timeout=10)
        self.assertEqual(p.returncode, 0)
        for cmd in ("status", "which_children", "count_children", "restart_child",
                    "terminate_child", "start_child", "delete_child", "sessions", "session show",
                    "session kill", "metrics", "log_level", "drain", "undrain", "shutdown"):
            self.assertIn(cmd, p.stdout.decode())
        self.assertEqual(subprocess.run([cmcpctl_path()], capture_output=True,
                                        timeout=10).returncode, 2)
        for args in (["frobnicate"], ["restart_child", "root"], ["status", "extra"],
                     ["session", "peek", "x"], ["sessions", "--shard", "x"],
                     ["start_child", "root", "{not json"]):
            rc, _, err = self.ctl(*args)
            self.assertEqual(rc, 2, (args, err))
        rc, _, err = self.ctl("--timeout", "0", "status")
        self.assertEqual(rc, 2)
        rc, _, err = run_ctl(self.node, free_port(), "status")
        self.assertEqual(rc, 3, err)
        self.assertIn("cannot connect", err)
        rc, _, err = self.ctl("status", cookie=os.path.join(self.node.dir, "nope"))
        self.assertEqual(rc, 2, err)
        self.assertIn("does not exist", err)

    def test_config_and_env_name_the_cookie(self):
        # -c reads [admin] endpoint and cookie_file of a node's configuration.
        conf = os.path.join(self.node.dir, "ctl.conf")
        with open(conf, "w") as f:
            f.write("[admin]\nendpoint = tcp://127.0.0.1:%d\ncookie_file = %s\n"
                    % (self.p.admin, os.path.join(self.node.dir, "var", "cookie")))
        p = subprocess.run([cmcpctl_path(), "-c", conf, "count_children"], capture_output=True,
                           timeout=20, cwd="/tmp",
                           env={k: v for k, v in os.environ.items() if not k.startswith("CMCP_")})
        self.assertEqual(p.returncode, 0, p.stderr)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CMCP_")}
        env["CMCP_COOKIE_FILE"] = os.path.join(self.node.dir, "var", "cookie")
        p = subprocess.run([cmcpctl_path(), "-n", "tcp://127.0.0.1:%d" % self.p.admin,
                            "count_children"], capture_output=True, timeout=20, cwd="/tmp",
                           env=env)
        self.assertEqual(p.returncode, 0, p.stderr)

    # ---- the shell ----

    def test_shell_on_a_pty(self):
        home = tempfile.mkdtemp(prefix="cmcp-home-", dir="/tmp")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", home]))
        master, slave = pty.openpty()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CMCP_")}
        env.update(HOME=home, TERM="xterm")
        p = subprocess.Popen([cmcpctl_path(), "-n", "tcp://127.0.0.1:%d" % self.p.admin,
                              "--cookie-file", os.path.join(self.node.dir, "var", "cookie"),
                              "shell"], stdin=slave, stdout=slave, stderr=slave, env=env,
                             start_new_session=True)
        os.close(slave)
        out = bytearray()
        mark = [0]  # output before this offset has been matched already

        def until(marker, timeout=10.0):
            """Waits for marker in the output after the previous match."""
            deadline = time.monotonic() + timeout
            while marker not in out[mark[0]:]:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no %r in the shell's output: %r"
                                         % (marker, bytes(out[mark[0]:])))
                r, _, _ = select.select([master], [], [], min(left, 0.2))
                if r:
                    try:
                        out.extend(os.read(master, 65536))
                    except OSError:
                        break
            mark[0] = out.index(marker, mark[0]) + len(marker)

        try:
            until(b"cmcp@cmcp> ")
            start = mark[0]
            # Tab completes the command name: "stat" alone would be an unknown command.
            os.write(master, b"stat\t\r")
            until(b"tree:")
            until(b"cmcp@cmcp> ")
            self.assertIn(b"listener-0", out[start:])
            self.assertNotIn(b"unknown command", out[start:])
            os.write(master, b"which_children shard_s\t\r")  # and supervisor names
            until(b"supervisor shard_sup:")
            until(b"shard-1")
            os.write(master, b"session \t")  # several candidates are listed
            until(b"show  kill")
            os.write(master, b"\x15")  # Ctrl-U: clear the line
            os.write(master, b"help\r")
            until(b"leave the shell")
            os.write(master, b"count_children a b\r")  # a usage error keeps the shell going
            until(b"at most one supervisor name")
            until(b"cmcp@cmcp> ")
            os.write(master, b"\x10\x10\r")  # Ctrl-P twice: history brings `help` back
            until(b"leave the shell")
            os.write(master, b"quit\r")
            self.assertEqual(p.wait(10), 0)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(5)
            os.close(master)
        hist = open(os.path.join(home, ".cmcpctl_history")).read()
        self.assertIn("status", hist)
        self.assertIn("which_children", hist)

    def test_shell_reads_a_script(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CMCP_")}
        p = subprocess.run([cmcpctl_path(), "-n", "tcp://127.0.0.1:%d" % self.p.admin,
                            "--cookie-file", os.path.join(self.node.dir, "var", "cookie"),
                            "shell"], input=b"count_children\nwhich_children 'shard_sup'\n",
                           capture_output=True, timeout=20, env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(b"specs 5", p.stdout)
        self.assertIn(b"shard-1", p.stdout)


    def run_script(self, script):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CMCP_")}
        return subprocess.run([cmcpctl_path(), "-n", "tcp://127.0.0.1:%d" % self.p.admin,
                               "--cookie-file", os.path.join(self.node.dir, "var", "cookie"),
                               "shell"], input=script, capture_output=True, timeout=20, env=env)

    def test_shell_script_with_a_failed_line_fails(self):
        # a failed line does not stop the script, but its status is the script's: a
        # usage error (2) ...
        p = self.run_script(b"count_children\nfrobnicate\nwhich_children shard_sup\n")
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(b"shard-1", p.stdout)  # the line after it ran
        err = p.stderr.decode()
        self.assertIn("unknown command 'frobnicate' (help lists the commands)", err)
        self.assertNotIn("--help", err)
        self.assertIn("1 line of the script failed (the first: line 2)", err)
        # ... or a command that failed on the node (1), when later lines succeed
        p = self.run_script(b"session show 0-aaaaaaaaaaaaaaaaaaaaaaaaaa\ncount_children\n"
                            b"count_children a b\n")
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn(b"2 lines of the script failed (the first: line 1)", p.stderr)
        # and a clean script still exits 0, saying nothing on stderr
        p = self.run_script(b"count_children\n\nhelp\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, b"")


class ShutdownTest(unittest.TestCase):
    def test_shutdown(self):
        p = Ports()
        node = Node(p.config()).start()
        try:
            node.wait_event("admin_listening", 5)
            rc, out, err = run_ctl(node, p.admin, "shutdown")
            self.assertEqual(rc, 0, err)
            self.assertIn("shutting down", out)
            self.assertEqual(node.wait_exit(15), 0)
            self.assertTrue(node.has_event("node_shutdown_requested", by="admin"))
        finally:
            self.assertEqual(node.cleanup(), [])


if __name__ == "__main__":
    main()
