"""Start and stop: ordering, shutdown timeouts, signals to the root, start failures."""

import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cmcp_harness import (Node, Timed, cmcpd_path, main, pid_alive, sup_section,  # noqa: E402
                          wait_for, worker_section)


def marker_rows(path):
    try:
        with open(path) as f:
            return [ln.split() for ln in f if ln.strip()]
    except OSError:
        return []


def node_with_marker(build):
    """A Node whose config build(marker_path) may point testworkers at a marker file."""
    n = Node("")
    n.marker = os.path.join(n.dir, "marker")
    n.config_text = build(n.marker)
    return n


class Shutdown(Timed):
    def test_stop_order_is_reverse_start_order_across_the_tree(self):
        def build(m):
            arg = "--marker %s" % m
            return (sup_section("root", "one_for_one", ["a", "sub", "b"])
                    + worker_section("a", args=arg) + worker_section("b", args=arg)
                    + sup_section("sub", "one_for_one", ["x", "y"])
                    + worker_section("x", args=arg) + worker_section("y", args=arg))
        n = node_with_marker(build)
        with n:
            self.assertEqual([r[1] for r in marker_rows(n.marker) if r[0] == "ready"],
                             ["a", "x", "y", "b"])
            self.assertEqual(n.stop(), 0)
            self.assertEqual([r[1] for r in marker_rows(n.marker) if r[0] == "stop"],
                             ["b", "y", "x", "a"])

    def test_sigterm_to_root_stops_the_whole_tree(self):
        cfg = (sup_section("root", "one_for_all", ["a", "sub"]) + worker_section("a")
               + sup_section("sub", "rest_for_one", ["x", "y"])
               + worker_section("x") + worker_section("y"))
        with Node(cfg) as n:
            n.wait_running("sub")
            self.assertEqual(len(n.tree_pids()), 5)
            t0 = time.monotonic()
            n.signal(signal.SIGTERM)
            self.assertEqual(n.wait_exit(5), 0)
            self.assertLess(time.monotonic() - t0, 1.0)
            wait_for(lambda: not n.tree_pids(), 2, what="tree gone")
            self.assertTrue(n.has_event("node_stopped", exit_code=0))
            self.assertFalse(os.path.exists(os.path.join(n.run_dir, "sup-root.sock")))
            self.assertFalse(os.path.exists(os.path.join(n.run_dir, "sup-sub.sock")))

    def test_sigint_stops_too(self):
        with Node(sup_section("root", "one_for_one", ["a"]) + worker_section("a")) as n:
            n.signal(signal.SIGINT)
            self.assertEqual(n.wait_exit(5), 0)

    def test_sigkill_of_root_leaves_no_orphans(self):
        cfg = (sup_section("root", "one_for_one", ["a", "sub"]) + worker_section("a")
               + sup_section("sub", "one_for_one", ["x", "deep"]) + worker_section("x")
               + sup_section("deep", "one_for_one", ["z"]) + worker_section("z"))
        with Node(cfg) as n:
            n.wait_running("deep")
            pids = n.tree_pids()
            self.assertEqual(len(pids), 6)
            n.signal(signal.SIGKILL)
            n.wait_exit(5)
            t0 = time.monotonic()
            wait_for(lambda: not any(pid_alive(p) for p in pids), 3, 0.01,
                     what="every process of the tree gone")
            self.assertLess(time.monotonic() - t0, 3)

    def test_sigterm_ignored_gets_sigkill_after_shutdown_timeout(self):
        cfg = sup_section("root", "one_for_one", ["a", "stubborn"]) + worker_section("a") + \
            worker_section("stubborn", args="--ignore-term", shutdown=300)
        with Node(cfg) as n:
            n.wait_running()
            t0 = time.monotonic()
            n.signal(signal.SIGTERM)
            self.assertEqual(n.wait_exit(5), 0)
            took = time.monotonic() - t0
            self.assertGreaterEqual(took, 0.3)
            self.assertLess(took, 1.0)
            self.assertTrue(n.has_event("child_shutdown_timeout", child="stubborn"))
            ex = n.log_events("child_exited", child="stubborn")[-1]
            self.assertTrue(ex["status"].startswith("signal 9"), ex)

    def test_brutal_kill_kills_at_once(self):
        cfg = sup_section("root", "one_for_one", ["a", "stubborn"]) + worker_section("a") + \
            worker_section("stubborn", args="--ignore-term", shutdown="brutal_kill")
        with Node(cfg) as n:
            n.wait_running()
            t0 = time.monotonic()
            n.signal(signal.SIGTERM)
            self.assertEqual(n.wait_exit(5), 0)
            self.assertLess(time.monotonic() - t0, 0.25)
            st = n.log_events("child_stopping", child="stubborn")[-1]
            self.assertEqual(st["method"], "brutal_kill")
            self.assertFalse(n.has_event("child_shutdown_timeout"))

    def test_stop_ends_when_the_last_child_is_reaped(self):
        # a 5 s grace period, a child that needs 100 ms: the stop must not sleep 5 s
        cfg = sup_section("root", "one_for_one", ["a", "slow"]) + worker_section("a") + \
            worker_section("slow", args="--stop-delay 100", shutdown=5000)
        with Node(cfg) as n:
            n.wait_running()
            t0 = time.monotonic()
            n.signal(signal.SIGTERM)
            self.assertEqual(n.wait_exit(6), 0)
            took = time.monotonic() - t0
            self.assertGreaterEqual(took, 0.1)
            self.assertLess(took, 0.6)

    def test_terminate_child_honours_shutdown_timeout(self):
        cfg = sup_section("root", "one_for_one", ["a", "stubborn"]) + worker_section("a") + \
            worker_section("stubborn", args="--ignore-term", shutdown=200)
        with Node(cfg) as n:
            n.wait_running()
            t0 = time.monotonic()
            n.ctl_ok("root", "terminate_child", id="stubborn")
            took = time.monotonic() - t0
            self.assertGreaterEqual(took, 0.2)
            self.assertLess(took, 0.8)

    def test_second_signal_forces_the_stop(self):
        cfg = sup_section("root", "one_for_one", ["stubborn"]) + \
            worker_section("stubborn", args="--ignore-term", shutdown=10000)
        with Node(cfg) as n:
            n.wait_running()
            t0 = time.monotonic()
            n.signal(signal.SIGTERM)
            n.wait_event("child_stopping", child="stubborn")
            n.signal(signal.SIGTERM)
            self.assertEqual(n.wait_exit(5), 0)
            self.assertLess(time.monotonic() - t0, 1.0)
            self.assertTrue(n.has_event("shutdown_forced"))


class StartFailure(Timed):
    def failing(self, bad, **kw):
        def build(m):
            arg = "--marker %s" % m
            return (sup_section("root", "one_for_one", ["a", "b", "bad", "c"])
                    + worker_section("a", args=arg) + worker_section("b", args=arg)
                    + bad + worker_section("c", args=arg))
        n = node_with_marker(build)
        n.wait_ready = False
        with n:
            code = n.wait_exit(8)
            rows = marker_rows(n.marker)
            n.log_events()  # read (and keep) the log before cleanup removes it
            return n, code, rows

    def check_unwound(self, code, rows):
        self.assertEqual(code, 3)
        self.assertEqual([r[1] for r in rows if r[0] == "ready"], ["a", "b"])
        self.assertEqual([r[1] for r in rows if r[0] == "stop"], ["b", "a"])
        self.assertNotIn("c", [r[1] for r in rows])

    def test_failing_child_unwinds_the_start(self):
        n, code, rows = self.failing(worker_section("bad", args="--fail-start"))
        self.check_unwound(code, rows)
        self.assertTrue(n.has_event("start_failed", child="bad"))
        self.assertFalse(n.has_event("node_ready"))

    def test_exec_failure_of_a_foreign_child(self):
        n, code, rows = self.failing(worker_section("bad", exec="/nonexistent/program --x"))
        self.check_unwound(code, rows)
        ev = n.log_events("child_exec_failed", child="bad")
        self.assertTrue(ev and "No such file" in ev[0]["reason"], ev)

    def test_start_timeout(self):
        t0 = time.monotonic()
        n, code, rows = self.failing(worker_section("bad", args="--no-ready", start_timeout=200))
        self.check_unwound(code, rows)
        self.assertTrue(n.has_event("child_start_timeout", child="bad"))
        self.assertLess(time.monotonic() - t0, 3)

    def test_nested_start_failure_fails_the_root(self):
        cfg = (sup_section("root", "one_for_one", ["a", "sub"]) + worker_section("a")
               + sup_section("sub", "one_for_one", ["x", "bad"]) + worker_section("x")
               + worker_section("bad", args="--fail-start"))
        with Node(cfg, wait_ready=False) as n:
            self.assertEqual(n.wait_exit(5), 3)
            ev = n.log_events("child_exited", child="sub")
            self.assertEqual(ev[0]["status"], "exit 3")

    def test_exec_child_ready_by_fd(self):
        cfg = sup_section("root", "one_for_one", ["sh"]) + worker_section(
            "sh", exec="/bin/sh -c 'sleep 0.1 && echo >&3 && exec sleep 30'", ready="fd")
        with Node(cfg) as n:
            ev = n.log_events("child_ready", child="sh")[0]
            self.assertGreaterEqual(ev["start_ms"], 90)


class RunDir(Timed):
    def test_second_node_on_the_same_run_dir_is_refused(self):
        cfg = sup_section("root", "one_for_one", ["a"]) + worker_section("a")
        with Node(cfg) as first:
            pids = first.child_pids()
            second = Node(cfg, run_dir=first.run_dir, wait_ready=False)
            with second:
                code = second.wait_exit(5)
                self.assertEqual(code, 3)  # a start that failed (--help, cmcpd(8))
                self.assertIn("another node", second.stderr_text())
            self.assertEqual(first.child_pids(), pids)
            self.assertIsNone(first.poll())
            first.ctl_ok("root", "status")

    def test_run_dir_of_a_killed_node_is_reused(self):
        cfg = sup_section("root", "one_for_one", ["a", "sub"]) + worker_section("a") + \
            sup_section("sub", "one_for_one", ["x"]) + worker_section("x")
        with Node(cfg) as first:
            first.signal(signal.SIGKILL)
            first.wait_exit(5)
            wait_for(lambda: not first.tree_pids(), 3, what="old tree gone")
            # stale sockets and pid file are left behind; the lock died with the root
            self.assertTrue(os.path.exists(os.path.join(first.run_dir, "sup-root.sock")))
            with Node(cfg, run_dir=first.run_dir) as second:
                second.ctl_ok("root", "status")
                second.ctl_ok("sub", "status")
                self.assertEqual(second.stop(), 0)

    def test_run_dir_too_long(self):
        long_dir = "/tmp/cmcp-" + "d" * 85 + "-%d" % os.getpid()
        env = {"CMCP_NODE_RUN_DIR": long_dir}
        try:
            p = subprocess.run([cmcpd_path()], env=env, capture_output=True, text=True,
                               timeout=10)
        finally:
            if os.path.isdir(long_dir):
                os.rmdir(long_dir)
        self.assertEqual(p.returncode, 2)
        self.assertIn("too long", p.stderr)


if __name__ == "__main__":
    main()
