"""Restart strategies and restart types with real testworker processes."""

import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cmcp_harness import (Node, Timed, main, pid_alive, proc_args, sup_section,  # noqa: E402
                          wait_for, worker_section)


def flat(strategy, ids=("a", "b", "c"), workers=None, **sup):
    """A root of strategy over testworkers ids; workers maps id -> extra worker keys."""
    cfg = sup_section("root", strategy, ids, **sup)
    for i in ids:
        cfg += worker_section(i, **(workers or {}).get(i, {}))
    return cfg


def wait_new_pid(n, cid, old, sup="root", timeout=5.0):
    """Waits until child cid runs with a pid other than old; returns all pids of sup."""
    def ok():
        ch = n.child_map(sup)
        c = ch.get(cid)
        if c and c["state"] == "running" and c["pid"] and c["pid"] != old:
            return {i: x["pid"] for i, x in ch.items()}
        return None
    return wait_for(ok, timeout, 0.005, what="%s restarted" % cid)


def events_since(n, mark, event):
    """The ids named by `event` lines after the first mark lines."""
    return [e.get("child") for e in n.log_events()[mark:] if e.get("event") == event]


class Strategies(Timed):
    def test_one_for_one_restarts_only_the_dead_child(self):
        with Node(flat("one_for_one")) as n:
            before = n.wait_running()
            mark = len(n.log_events())
            os.kill(before["b"], signal.SIGKILL)
            after = wait_new_pid(n, "b", before["b"])
            self.assertEqual(after["a"], before["a"])
            self.assertEqual(after["c"], before["c"])
            self.assertNotEqual(after["b"], before["b"])
            self.assertFalse(pid_alive(before["b"]))
            self.assertEqual(events_since(n, mark, "child_started"), ["b"])
            self.assertEqual(events_since(n, mark, "child_stopping"), [])
            self.assertEqual(n.child_map()["b"]["restarts"], 1)

    def test_one_for_all_restarts_everyone_in_order(self):
        with Node(flat("one_for_all")) as n:
            before = n.wait_running()
            mark = len(n.log_events())
            os.kill(before["b"], signal.SIGKILL)
            after = wait_new_pid(n, "c", before["c"])
            n.wait_running()
            after = n.child_pids()
            for i in "abc":
                self.assertNotEqual(after[i], before[i], i)
                self.assertFalse(pid_alive(before[i]), i)
            # the others stop in reverse start order, then all start in start order
            self.assertEqual(events_since(n, mark, "child_stopping"), ["c", "a"])
            self.assertEqual(events_since(n, mark, "child_started"), ["a", "b", "c"])

    def test_rest_for_one_restarts_the_dead_and_later_ones(self):
        with Node(flat("rest_for_one", ids=("a", "b", "c", "d"))) as n:
            before = n.wait_running()
            mark = len(n.log_events())
            os.kill(before["b"], signal.SIGKILL)
            wait_new_pid(n, "d", before["d"])
            after = n.wait_running()
            self.assertEqual(after["a"], before["a"])
            for i in "bcd":
                self.assertNotEqual(after[i], before[i], i)
            self.assertEqual(events_since(n, mark, "child_stopping"), ["d", "c"])
            self.assertEqual(events_since(n, mark, "child_started"), ["b", "c", "d"])

    def test_rest_for_one_last_child_is_alone(self):
        with Node(flat("rest_for_one")) as n:
            before = n.wait_running()
            os.kill(before["c"], signal.SIGKILL)
            after = wait_new_pid(n, "c", before["c"])
            self.assertEqual((after["a"], after["b"]), (before["a"], before["b"]))


class SimultaneousDeaths(Timed):
    """Deaths that arrive while a restart runs are queued and handled after it (OTP's mailbox)."""

    def kill_all(self, n, pids):
        """Kills pids while the supervisor is frozen, so that it sees the deaths at once."""
        os.kill(n.pid, signal.SIGSTOP)
        try:
            for p in pids:
                os.kill(p, signal.SIGKILL)
            wait_for(lambda: all(not pid_alive(p) for p in pids), 3, what="victims dead")
        finally:
            os.kill(n.pid, signal.SIGCONT)

    def wait_all_new(self, n, before):
        def ok():
            ch = n.child_map()
            if all(c["state"] == "running" for c in ch.values()) and \
                    all(ch[i]["pid"] != before[i] for i in before):
                return {i: c["pid"] for i, c in ch.items()}
            return None
        return wait_for(ok, 5, 0.01, what="all restarted")

    def test_one_for_one_restarts_each(self):
        with Node(flat("one_for_one")) as n:
            before = n.wait_running()
            self.kill_all(n, before.values())
            self.wait_all_new(n, before)
            self.assertEqual(n.ctl_ok("root", "status")["restarts_total"], 3)
            self.assertEqual(len(n.log_events("child_started")), 6)

    def test_one_for_all_restarts_the_group_once(self):
        with Node(flat("one_for_all")) as n:
            before = n.wait_running()
            self.kill_all(n, [before["a"], before["c"]])
            self.wait_all_new(n, before)
            self.assertEqual(n.ctl_ok("root", "status")["restarts_total"], 1)
            self.assertEqual(len(n.log_events("child_started")), 6)

    def test_rest_for_one_later_death_is_covered(self):
        with Node(flat("rest_for_one")) as n:
            before = n.wait_running()
            self.kill_all(n, [before["b"], before["c"]])
            n.wait_for(lambda: (lambda c: c["b"] != before["b"] and c["c"] != before["c"] and
                                all(c.values()))(n.child_pids()), 5, what="b, c restarted")
            n.wait_running()
            self.assertEqual(n.child_pids()["a"], before["a"])
            self.assertEqual(n.ctl_ok("root", "status")["restarts_total"], 1)

    def test_death_during_a_slow_restart_is_queued(self):
        cfg = flat("one_for_one", workers={"a": {"args": "--ready-delay 200"}})
        with Node(cfg) as n:
            before = n.wait_running()
            os.kill(before["a"], signal.SIGKILL)
            n.wait_event("child_started", child="a", count=2)
            os.kill(before["b"], signal.SIGKILL)  # while a's restart waits for ready
            after = self.wait_all_new(n, {"a": before["a"], "b": before["b"]})
            self.assertEqual(after["c"], before["c"])
            ev = [e["event"] + ":" + e.get("child", "") for e in n.log_events()
                  if e.get("event") in ("child_ready", "child_started") and e.get("id") == "root"]
            # b's restart starts only once a's replacement is ready
            self.assertLess(ev.index("child_ready:a", 3), ev.index("child_started:b", 3))


class RestartTypes(Timed):
    def test_temporary_is_never_restarted_and_forgotten(self):
        cfg = flat("one_for_one", workers={"b": {"restart": "temporary"}})
        with Node(cfg) as n:
            before = n.wait_running()
            os.kill(before["b"], signal.SIGKILL)
            n.wait_event("child_not_restarted", child="b")
            ch = n.child_map()
            self.assertNotIn("b", ch)  # its spec is gone
            self.assertEqual(ch["a"]["pid"], before["a"])
            self.assertEqual(ch["c"]["pid"], before["c"])
            self.assertEqual(n.ctl("root", "get_childspec", id="b")["error"], "not_found")

    def test_temporary_sibling_dropped_when_group_restarts(self):
        cfg = flat("one_for_all", workers={"b": {"restart": "temporary"}})
        with Node(cfg) as n:
            before = n.wait_running()
            mark = len(n.log_events())
            os.kill(before["c"], signal.SIGKILL)
            wait_new_pid(n, "a", before["a"])
            after = n.wait_running()
            self.assertEqual(sorted(after), ["a", "c"])
            self.assertFalse(pid_alive(before["b"]))
            self.assertNotIn("b", events_since(n, mark, "child_started"))
            self.assertIn("b", events_since(n, mark, "child_stopping"))

    def test_temporary_sibling_dropped_under_rest_for_one(self):
        cfg = flat("rest_for_one", workers={"c": {"restart": "temporary"}})
        with Node(cfg) as n:
            before = n.wait_running()
            os.kill(before["b"], signal.SIGKILL)
            wait_new_pid(n, "b", before["b"])
            n.wait_for(lambda: "c" not in n.child_map(), 3, what="c dropped")
            self.assertFalse(pid_alive(before["c"]))
            self.assertEqual(n.child_pids()["a"], before["a"])

    def test_transient_normal_exit_is_not_restarted(self):
        cfg = flat("one_for_one", workers={"b": {"restart": "transient"}})
        with Node(cfg) as n:
            before = n.wait_running()
            os.kill(before["b"], signal.SIGUSR1)  # testworker: exit 0
            n.wait_event("child_not_restarted", child="b")
            b = n.child_map()["b"]
            self.assertIsNone(b["pid"])  # the spec stays, as in OTP
            self.assertEqual(b["state"], "undefined")
            ex = n.log_events("child_exited", child="b")
            self.assertEqual(ex[-1]["status"], "exit 0")

    def test_transient_abnormal_exit_is_restarted(self):
        cfg = flat("one_for_one", workers={"b": {"restart": "transient"}})
        with Node(cfg) as n:
            before = n.wait_running()
            os.kill(before["b"], signal.SIGUSR2)  # testworker: exit 1
            mid = wait_new_pid(n, "b", before["b"])
            os.kill(mid["b"], signal.SIGKILL)  # a signal is abnormal too
            after = wait_new_pid(n, "b", mid["b"])
            self.assertEqual(n.child_map()["b"]["restarts"], 2)
            self.assertEqual(after["a"], before["a"])

    def test_permanent_normal_exit_is_restarted(self):
        with Node(flat("one_for_one")) as n:
            before = n.wait_running()
            os.kill(before["a"], signal.SIGUSR1)
            wait_new_pid(n, "a", before["a"])

    def test_transient_exit_after_ready_via_args(self):
        cfg = flat("one_for_one", ids=("a", "job"),
                   workers={"job": {"restart": "transient", "args": "--exit-after 50"}})
        with Node(cfg) as n:
            n.wait_event("child_not_restarted", child="job")
            self.assertEqual(n.child_map()["job"]["state"], "undefined")
            self.assertEqual(len(n.log_events("child_started", child="job")), 1)


class SimpleOneForOne(Timed):
    CFG = (sup_section("root", "one_for_one", ["pool"])
           + sup_section("pool", "simple_one_for_one", ["tw"])
           + worker_section("tw"))

    def test_start_and_terminate_by_pid(self):
        with Node(self.CFG) as n:
            self.assertEqual(n.child_map("pool"), {})
            r1 = n.ctl_ok("pool", "start_child", args=[])
            r2 = n.ctl_ok("pool", "start_child", args=["--ready-delay", "5"])
            self.assertTrue(pid_alive(r1["pid"]) and pid_alive(r2["pid"]))
            self.assertIn("--ready-delay", proc_args(r2["pid"]))
            self.assertEqual(len(n.child_map("pool")), 2)
            cnt = n.ctl_ok("pool", "count_children")
            self.assertEqual((cnt["specs"], cnt["active"], cnt["workers"]), (1, 2, 2))
            self.assertEqual(n.ctl("pool", "terminate_child", id=r1["id"])["error"],
                             "simple_one_for_one")
            n.ctl_ok("pool", "terminate_child", pid=r1["pid"])
            self.assertFalse(pid_alive(r1["pid"]))
            pids = [c["pid"] for c in n.child_map("pool").values()]
            self.assertEqual(pids, [r2["pid"]])
            self.assertEqual(n.ctl("pool", "terminate_child", pid=r1["pid"])["error"], "not_found")

    def test_dynamic_permanent_child_is_restarted(self):
        with Node(self.CFG) as n:
            r = n.ctl_ok("pool", "start_child", args=[])
            os.kill(r["pid"], signal.SIGKILL)
            new = n.wait_for(lambda: [c for c in n.child_map("pool").values()
                                      if c["state"] == "running" and c["pid"] != r["pid"]],
                             5, what="dynamic child restarted")
            self.assertEqual(len(n.child_map("pool")), 1)
            self.assertEqual(new[0]["id"], r["id"])

    def test_dynamic_temporary_child_is_forgotten(self):
        cfg = (sup_section("root", "one_for_one", ["pool"])
               + sup_section("pool", "simple_one_for_one", ["tw"])
               + worker_section("tw", restart="temporary"))
        with Node(cfg) as n:
            r = n.ctl_ok("pool", "start_child", args=[])
            os.kill(r["pid"], signal.SIGKILL)
            n.wait_for(lambda: not n.child_map("pool"), 3, what="child forgotten")


class TreeShape(Timed):
    CFG = (sup_section("root", "one_for_one", ["a", "sub", "b"])
           + worker_section("a") + worker_section("b")
           + sup_section("sub", "one_for_one", ["x", "y"])
           + worker_section("x") + worker_section("y"))

    def test_ps_shows_role_and_id(self):
        with Node(self.CFG) as n:
            pids = n.wait_running()
            sub = n.wait_running("sub")
            expect = {pids["a"]: ("testworker", "a"), pids["b"]: ("testworker", "b"),
                      pids["sub"]: ("supervisor", "sub"), sub["x"]: ("testworker", "x"),
                      sub["y"]: ("testworker", "y")}
            for pid, (role, cid) in expect.items():
                out = subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True,
                                     text=True, timeout=5).stdout
                self.assertIn("--role %s --id %s" % (role, cid), out)

    def test_nested_supervisor_is_a_process_and_restarts_as_a_unit(self):
        with Node(self.CFG) as n:
            pids = n.wait_running()
            sub = n.wait_running("sub")
            self.assertNotIn(pids["sub"], (n.pid, pids["a"], pids["b"]))
            self.assertEqual(n.ctl_ok("sub", "status")["pid"], pids["sub"])
            os.kill(pids["sub"], signal.SIGKILL)
            after = wait_new_pid(n, "sub", pids["sub"])
            # its workers died with it (PR_SET_PDEATHSIG) and came back with the new one
            n.wait_for(lambda: not pid_alive(sub["x"]) and not pid_alive(sub["y"]), 3,
                       what="old x, y gone")
            sub2 = n.wait_running("sub")
            self.assertNotEqual(sub2["x"], sub["x"])
            self.assertNotEqual(sub2["y"], sub["y"])
            self.assertEqual((after["a"], after["b"]), (pids["a"], pids["b"]))

    def test_death_inside_nested_supervisor_stays_inside(self):
        with Node(self.CFG) as n:
            pids = n.wait_running()
            sub = n.wait_running("sub")
            os.kill(sub["x"], signal.SIGKILL)
            sub2 = wait_new_pid(n, "x", sub["x"], sup="sub")
            self.assertEqual(sub2["y"], sub["y"])
            self.assertEqual(n.child_pids(), pids)


if __name__ == "__main__":
    main()
