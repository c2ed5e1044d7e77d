"""The default tree's groupings: restarts are no wider than they must be. A shard_sup
that dies is restarted alone (the listeners and their client connections stay); metrics
and admin crash-looping are slowed down by backoff under their own supervisor and never
stop the node that serves."""
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cmcp_harness import Node, main, wait_for  # noqa: E402
from mcp_client import Session  # noqa: E402
from ops_client import Ports, http_get, metrics  # noqa: E402


def all_running(node, sup):
    try:
        return all(c["state"] == "running" for c in node.children(sup))
    except (AssertionError, OSError):
        return False  # the supervisor itself is restarting


class TreeGroupsTest(unittest.TestCase):
    def test_shard_sup_death_leaves_listeners_and_connections(self):
        p = Ports()
        node = Node(p.config()).start()
        self.addCleanup(node.cleanup)
        s = Session(p.http)  # one kept-alive connection, through the restart
        self.assertIn("result", s.call("ping")[0])
        root = node.child_pids("root")
        listeners = node.child_pids("listener_sup")
        os.kill(root["shard_sup"], signal.SIGKILL)
        wait_for(lambda: node.child_pids("root")["shard_sup"] not in (None, root["shard_sup"]) and
                 all_running(node, "shard_sup"),
                 15, 0.05, what="shard_sup and its shards back")
        after = node.child_pids("root")
        self.assertEqual({k: v for k, v in after.items() if k != "shard_sup"},
                         {k: v for k, v in root.items() if k != "shard_sup"})
        self.assertEqual(node.child_pids("listener_sup"), listeners)
        # the same connection, the same session (its shard read it back from its store)
        resp = wait_for(lambda: (lambda r: r if "result" in r else None)(s.call("ping")[0]),
                        10, 0.1, what="the session answers again on its connection")
        self.assertIn("result", resp)
        s.close()

    def test_metrics_and_admin_crash_loops_do_not_stop_the_node(self):
        p = Ports()
        # the default ops_sup, with its backoff shortened so that the loop is quick
        node = Node(p.config(extra="[tree.ops_sup]\nbackoff_min = 10\nbackoff_max = 40\n")).start()
        self.addCleanup(node.cleanup)
        s = Session(p.http)
        serving = {k: v for k, v in node.child_pids("root").items() if k != "ops_sup"}
        kills, killed = 0, {}
        for k in range(14):  # more than the root's intensity (5 a minute) twice over
            who = ("metrics", "admin")[k % 2]
            # running again, as a new process (until its supervisor reaps the one killed
            # last, which_children may still show it running)
            pid = wait_for(lambda: (lambda c: c["pid"] if c["state"] == "running" and
                                    c["pid"] != killed.get(who) else None)(
                node.child_map("ops_sup")[who]), 10, 0.01, what="%s running" % who)
            os.kill(pid, signal.SIGKILL)
            killed[who] = pid
            kills += 1
            self.assertIn("result", s.call("ping")[0])  # the node serves throughout
        wait_for(lambda: all_running(node, "ops_sup"), 10,
                 0.05, what="metrics and admin running again")
        self.assertIsNone(node.poll())
        self.assertEqual({k: v for k, v in node.child_pids("root").items() if k != "ops_sup"},
                         serving)
        self.assertEqual(node.child_map("root")["ops_sup"]["restarts"], 0)  # never escalated
        deadline = time.monotonic() + 10
        while http_get(p.metrics, "/ready")[0] != 200:
            self.assertLess(time.monotonic(), deadline, "not ready again")
            time.sleep(0.1)
        # every restart counted (ops_sup republishes within a second of the new metrics
        # worker's start)
        def restarts():
            m = metrics(p.metrics)
            return sum(m.get(("cmcp_supervisor_restarts_total",
                              'supervisor="ops_sup",child="%s"' % w), 0)
                       for w in ("metrics", "admin"))
        try:
            wait_for(lambda: restarts() == kills, 10, 0.1,
                     what="cmcp_supervisor_restarts_total of ops_sup == %d" % kills)
        except TimeoutError:
            self.fail("restarts counted %s, which_children says %s; log: %s" % (
                restarts(), {c["id"]: c["restarts"] for c in node.children("ops_sup")},
                [(e.get("event"), e.get("child"), e.get("status")) for e in node.log_events()
                 if e.get("id") == "ops_sup" and e.get("event") in (
                     "child_exited", "child_restarting", "child_ready")][-12:]))
        s.close()

    def test_stops_take_milliseconds(self):
        # Nothing on a worker's way out may wait on a peer: nng 1.5.2's close was seen to
        # hang about 1 stop in 50 until the supervisor's shutdown timeout (2-5 s) killed
        # it. The clean-up now has 300 ms (proc_stop_deadline), then the process exits.
        p = Ports()
        node = Node(p.config()).start()
        self.addCleanup(node.cleanup)
        times = {}
        for sup, cid in (("listener_sup", "listener-0"), ("shard_sup", "shard-0"),
                         ("ops_sup", "metrics"), ("ops_sup", "admin"),
                         ("cluster_sup", "cluster_monitor")):
            for _ in range(8):
                t0 = time.monotonic()
                node.ctl_ok(sup, "terminate_child", id=cid, timeout=20)
                times.setdefault(cid, []).append((time.monotonic() - t0) * 1000)
                node.ctl_ok(sup, "restart_child", id=cid, timeout=20)
                wait_for(lambda: node.child_map(sup)[cid]["state"] == "running", 20, 0.01,
                         what="%s running" % cid)
        slow = {c: ["%.0f" % t for t in ts if t > 1000] for c, ts in times.items()}
        self.assertEqual({c: v for c, v in slow.items() if v}, {},
                         "stops (ms) that waited for a shutdown timeout")
        print("  stop ms, median by child: %s" % {c: round(sorted(ts)[len(ts) // 2], 1)
                                                   for c, ts in times.items()})


if __name__ == "__main__":
    main()
