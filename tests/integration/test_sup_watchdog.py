"""The supervisor's watchdog: a worker whose loop stops turning (a deadlock, SIGSTOP) while
its process lives is warned about, killed and restarted by the usual rules, and counted
toward the restart intensity like a crash; a worker that beats is left alone; the key is
refused where no beat can come."""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cmcp_harness import (Node, Timed, main, run_config_check, sup_section,  # noqa: E402
                          wait_for, worker_section)


class Watchdog(Timed):
    def test_a_hung_loop_is_killed_and_restarted(self):
        # --hang-after blocks the worker's loop for good: it sleeps, alive, answering nothing.
        cfg = sup_section("root", "one_for_one", ["w", "calm"]) + \
            worker_section("w", "--hang-after 300", watchdog=600) + \
            worker_section("calm", watchdog=600)
        with Node(cfg) as n:
            first = n.wait_running(ids=["w"])["w"]
            calm = n.child_pids()["calm"]
            warn = n.wait_event("child_unresponsive", timeout=5, child="w")[0]
            self.assertGreaterEqual(warn["silent_ms"], 300)
            self.assertIn("S:", warn["process_state"])  # sleeping: not stopped, not gone
            hung = n.wait_event("child_hung", timeout=5, child="w")[0]
            self.assertEqual(hung["level"], "error")
            self.assertGreaterEqual(hung["silent_ms"], 600)
            self.assertLess(hung["silent_ms"], 600 + 400)  # checked 4 times per limit
            self.assertEqual(hung["child_pid"], first)
            exited = n.wait_event("child_exited", timeout=5, child="w", child_pid=first)[0]
            self.assertIn("watchdog", exited["cause"])
            # replaced by the usual rules: one_for_one leaves its sibling alone
            second = wait_for(lambda: (lambda p: p if p and p != first else None)(
                n.child_pids()["w"]), 5, 0.01, what="w restarted")
            self.assertNotEqual(second, first)
            self.assertEqual(n.child_pids()["calm"], calm)
            self.assertEqual(n.child_map()["w"]["restarts"], 1)
            # the calm worker beats through all of this and is never warned about
            time.sleep(0.8)
            self.assertEqual(n.log_events("child_unresponsive", child="calm"), [])
            self.assertEqual(n.child_pids()["calm"], calm)

    def test_sigstop_is_caught_and_counts_toward_intensity(self):
        # intensity 1: the second watchdog kill within the period takes the tree down,
        # as a second crash would.
        cfg = sup_section("root", "one_for_one", ["w"], intensity=1, period=60) + \
            worker_section("w", watchdog=400)
        n = Node(cfg).start()
        try:
            for k in range(2):
                pid = n.wait_running(ids=["w"], timeout=5)["w"]
                os.kill(pid, signal.SIGSTOP)
                ev = n.wait_event("child_hung", timeout=5, count=k + 1, child="w")[-1]
                self.assertIn("T:", ev["process_state"])  # stopped
                if k == 0:
                    wait_for(lambda: n.child_pids()["w"] not in (None, pid), 5, 0.01,
                             what="w replaced")
            self.assertEqual(n.wait_exit(10), 4)  # restart intensity exceeded
            n.wait_event("restart_intensity_exceeded", timeout=1, child="w")
        finally:
            n.cleanup()

    def test_a_stopped_supervisor_does_not_blame_its_children(self):
        # The whole tree stopped (a paused VM, SIGSTOP to every process) and continued:
        # the supervisor's own pause is not its children's silence.
        cfg = sup_section("root", "one_for_one", ["w"]) + worker_section("w", watchdog=400)
        with Node(cfg) as n:
            pid = n.wait_running(ids=["w"])["w"]
            for p in (n.proc.pid, pid):
                os.kill(p, signal.SIGSTOP)
            time.sleep(1.2)
            os.kill(n.proc.pid, signal.SIGCONT)  # the supervisor first: it sees no beat yet
            time.sleep(0.1)
            os.kill(pid, signal.SIGCONT)
            time.sleep(1.0)
            self.assertEqual(n.log_events("child_hung"), [])
            self.assertEqual(n.child_pids()["w"], pid)

    def test_off_and_refused_where_no_beat_can_come(self):
        cfg = sup_section("root", "one_for_one", ["w"]) + \
            worker_section("w", "--hang-after 100", watchdog="off")
        with Node(cfg) as n:
            pid = n.wait_running(ids=["w"])["w"]
            time.sleep(1.0)
            self.assertEqual(n.child_pids()["w"], pid)
            self.assertEqual(n.log_events("child_hung"), [])
        # a foreign program cannot beat: the key is refused with the reason
        code, _, err, _ = run_config_check(
            sup_section("root", "one_for_one", ["x"]) +
            worker_section("x", exec="/bin/sleep 100", watchdog=1000), check=True)
        self.assertEqual(code, 2, err)
        self.assertIn("watchdog", err)
        self.assertIn("exec", err)
        # and under 100 ms is out of range
        code, _, err, _ = run_config_check(
            sup_section("root", "one_for_one", ["w"]) + worker_section("w", watchdog=50),
            check=True)
        self.assertEqual(code, 2, err)
        self.assertIn("watchdog", err)

    def test_the_default_tree_watches_shards_listeners_and_cluster_roles(self):
        from mcp_client import free_port, node_config  # noqa: E402
        with Node(node_config(free_port(), free_port())) as n:
            specs = {c["id"]: n.ctl_ok("shard_sup", "get_childspec", id=c["id"])["spec"]
                     for c in n.children("shard_sup")}
            for cid, spec in specs.items():
                self.assertEqual(spec["watchdog"], 10000, cid)
            lid = n.children("listener_sup")[0]["id"]
            lst = n.ctl_ok("listener_sup", "get_childspec", id=lid)["spec"]
            self.assertEqual(lst["watchdog"], 10000)
            admin = n.ctl_ok("ops_sup", "get_childspec", id="admin")["spec"]
            self.assertEqual(admin["watchdog"], "off")


if __name__ == "__main__":
    main()
