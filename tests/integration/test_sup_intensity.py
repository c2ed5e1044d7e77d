"""Restart intensity and escalation, backoff, and auto_shutdown with significant children."""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cmcp_harness import (Node, Timed, main, pid_alive, sup_section, wait_for,  # noqa: E402
                          worker_section)


def kill_and_wait(n, cid, sup="root", timeout=5.0):
    """SIGKILLs child cid of sup and waits for its replacement; returns the new pid."""
    old = n.wait_running(sup, ids=[cid])[cid]
    os.kill(old, signal.SIGKILL)

    def ok():
        c = n.child_map(sup).get(cid)
        return c and c["state"] == "running" and c["pid"] != old and c["pid"]
    return wait_for(ok, timeout, 0.005, what="%s restarted" % cid)


def marker_lines(path, what=None):
    try:
        with open(path) as f:
            rows = [ln.split() for ln in f if ln.strip()]
    except OSError:
        return []
    return [r for r in rows if what is None or r[0] == what]


class Intensity(Timed):
    def test_nested_supervisor_escalates_like_otp(self):
        n = Node("")
        marker = os.path.join(n.dir, "marker")
        n.config_text = (
            sup_section("root", "one_for_one", ["a", "sub"], intensity=5, period=10)
            + worker_section("a")
            + sup_section("sub", "one_for_one", ["x", "y", "z"], intensity=1, period=10)
            + "".join(worker_section(i, args="--marker %s" % marker) for i in "xyz"))
        if True:
            with n:
                root0 = n.wait_running()
                sub0 = n.wait_running("sub")
                kill_and_wait(n, "z", "sub")  # restart 1 of 1 allowed
                with open(marker, "a") as f:
                    f.write("---\n")
                os.kill(n.wait_running("sub")["z"], signal.SIGKILL)  # restart 2: too many
                n.wait_event("restart_intensity_exceeded", id="sub")
                # sub stops its children in reverse order and exits with status 4 ...
                ev = n.wait_event("child_exited", child="sub")[0]
                self.assertEqual(ev["status"], "exit 4")
                self.assertEqual(ev["expected"], False)
                stops = [r[1] for r in marker_lines(marker)[
                    [r[0] for r in marker_lines(marker)].index("---") + 1:] if r[0] == "stop"]
                self.assertEqual(stops, ["y", "x"])
                st = n.log_events("supervisor_stopped", id="sub")
                self.assertEqual(st[0]["exit_code"], 4)
                # ... which its parent counts as a child death: a permanent sub is restarted
                root1 = n.wait_for(lambda: (lambda c: c if c["sub"] != root0["sub"] and c["sub"]
                                            else None)(n.wait_running()), 5,
                                   what="sub restarted")
                self.assertEqual(root1["a"], root0["a"])
                self.assertEqual(n.ctl_ok("root", "status")["restarts_total"], 1)
                sub1 = n.wait_running("sub")
                for i in "xyz":
                    self.assertNotEqual(sub1[i], sub0[i])
                    self.assertFalse(pid_alive(sub0[i]))
                self.assertIsNone(n.poll())

    def test_root_exits_nonzero_when_its_intensity_is_exceeded(self):
        cfg = sup_section("root", "one_for_one", ["a", "b"], intensity=2, period=10) + \
            worker_section("a") + worker_section("b")
        with Node(cfg) as n:
            b = n.wait_running()["b"]
            kill_and_wait(n, "a")
            kill_and_wait(n, "a")
            os.kill(n.wait_running()["a"], signal.SIGKILL)
            self.assertEqual(n.wait_exit(5), 4)
            n.wait_for(lambda: not pid_alive(b), 3, what="b stopped")
            self.assertEqual(n.tree_pids(), [])
            self.assertEqual(n.log_events("node_stopped")[0]["exit_code"], 4)

    def test_intensity_zero_never_restarts(self):
        cfg = sup_section("root", "one_for_one", ["a"], intensity=0, period=5) + \
            worker_section("a")
        with Node(cfg) as n:
            os.kill(n.wait_running()["a"], signal.SIGKILL)
            self.assertEqual(n.wait_exit(5), 4)
            self.assertEqual(len(n.log_events("child_started")), 1)

    def test_restarts_outside_the_period_are_forgotten(self):
        cfg = sup_section("root", "one_for_one", ["a"], intensity=1, period=1) + \
            worker_section("a")
        with Node(cfg) as n:
            kill_and_wait(n, "a")
            time.sleep(1.1)  # the first restart leaves the window
            kill_and_wait(n, "a")
            self.assertIsNone(n.poll())
            time.sleep(0.05)
            self.assertIsNone(n.poll())

    def test_high_intensity_is_honoured(self):
        # intensity above 64 used to be unreachable (a fixed ring of 64 stamps)
        cfg = sup_section("root", "one_for_one", ["a"], intensity=70, period=60) + \
            worker_section("a")
        with Node(cfg) as n:
            for _ in range(70):
                kill_and_wait(n, "a")
            self.assertIsNone(n.poll())
            os.kill(n.wait_running()["a"], signal.SIGKILL)
            self.assertEqual(n.wait_exit(5), 4)

    def test_failed_restarts_count_toward_intensity(self):
        # b starts once; every later start fails (exits before it reports ready on fd 3),
        # and OTP counts each failed try toward the intensity.
        n = Node("")
        flag = os.path.join(n.dir, "started-once")
        n.config_text = (
            sup_section("root", "one_for_one", ["a", "b"], intensity=3, period=10)
            + worker_section("a")
            + worker_section("b", ready="fd", exec="/bin/sh -c 'test -e %s && exit 1 || touch %s "
                             "&& echo >&3 && exec sleep 30'" % (flag, flag)))
        with n:
            b = n.wait_running()["b"]
            os.kill(b, signal.SIGKILL)
            self.assertEqual(n.wait_exit(5), 4)
            self.assertEqual(len(n.log_events("restart_failed", child="b")), 2)
            self.assertEqual(len(n.log_events("child_started", child="b")), 4)

class Backoff(Timed):
    def restart_gaps(self, n, cid, count):
        """Kills cid count times; returns the delays (ms) from each death to the next start."""
        gaps = []
        for _ in range(count):
            mark = len(n.log_events())
            kill_and_wait(n, cid, timeout=5)
            evs = n.log_events()[mark:]
            died = [e for e in evs if e.get("event") == "child_exited" and e.get("child") == cid]
            born = [e for e in evs if e.get("event") == "child_started" and e.get("child") == cid]
            gaps.append(born[0]["t_mono"] - died[0]["t_mono"])
        return gaps

    def test_backoff_doubles_up_to_max(self):
        cfg = sup_section("root", "one_for_one", ["a", "b"], intensity=20, period=60,
                          backoff_min=100, backoff_max=250, backoff_stable=5000) + \
            worker_section("a") + worker_section("b")
        with Node(cfg) as n:
            gaps = self.restart_gaps(n, "a", 3)
            for got, want in zip(gaps, (100, 200, 250)):
                self.assertGreaterEqual(got, want - 1, gaps)
                self.assertLess(got, want + 80, gaps)
            ev = n.log_events("child_restarting", child="a")
            self.assertEqual([e["delay_ms"] for e in ev], [100, 200, 250])

    def test_backoff_resets_after_stable_period(self):
        cfg = sup_section("root", "one_for_one", ["a"], intensity=20, period=60,
                          backoff_min=100, backoff_max=1000, backoff_stable=300) + \
            worker_section("a")
        with Node(cfg) as n:
            g1 = self.restart_gaps(n, "a", 2)
            time.sleep(0.4)  # up longer than backoff_stable
            g2 = self.restart_gaps(n, "a", 1)
            self.assertGreaterEqual(g1[1], 199)
            self.assertLess(g2[0], 180, (g1, g2))
            self.assertGreaterEqual(g2[0], 99)

    def test_no_backoff_by_default(self):
        cfg = sup_section("root", "one_for_one", ["a"], intensity=20, period=60) + \
            worker_section("a")
        with Node(cfg) as n:
            gaps = self.restart_gaps(n, "a", 3)
            self.assertLess(max(gaps), 50, gaps)

    def test_group_stops_at_once_and_only_the_start_waits(self):
        cfg = sup_section("root", "one_for_all", ["a", "b"], intensity=20, period=60,
                          backoff_min=300, backoff_max=300) + \
            worker_section("a") + worker_section("b")
        with Node(cfg) as n:
            before = n.wait_running()
            t0 = time.monotonic()
            os.kill(before["a"], signal.SIGKILL)
            n.wait_for(lambda: not pid_alive(before["b"]), 2, what="b stopped")
            self.assertLess(time.monotonic() - t0, 0.25)
            # during the delay the supervisor answers, and the restart is pending
            ch = n.child_map()
            self.assertEqual(ch["a"]["state"], "restarting")
            self.assertEqual(n.ctl("root", "restart_child", id="a")["error"], "restarting")
            self.assertEqual(n.ctl("root", "delete_child", id="a")["error"], "restarting")
            after = n.wait_running(timeout=3)
            self.assertGreaterEqual(time.monotonic() - t0, 0.3)
            self.assertNotEqual(after["b"], before["b"])


class AutoShutdown(Timed):
    def test_any_significant_stops_the_node(self):
        cfg = sup_section("root", "one_for_one", ["a", "job"], auto_shutdown="any_significant") + \
            worker_section("a") + worker_section("job", args="--exit-after 100",
                                                 restart="transient", significant="true")
        with Node(cfg) as n:
            self.assertEqual(n.wait_exit(5), 0)
            self.assertTrue(n.has_event("supervisor_shutdown"))

    def test_transient_significant_abnormal_exit_is_restarted_not_shutdown(self):
        cfg = sup_section("root", "one_for_one", ["a", "job"], auto_shutdown="any_significant") + \
            worker_section("a") + worker_section("job", restart="transient", significant="true")
        with Node(cfg) as n:
            kill_and_wait(n, "job")
            self.assertIsNone(n.poll())
            os.kill(n.wait_running()["job"], signal.SIGUSR1)  # normal exit now
            self.assertEqual(n.wait_exit(5), 0)

    def test_all_significant_waits_for_the_last(self):
        cfg = sup_section("root", "one_for_one", ["a", "j1", "j2"],
                          auto_shutdown="all_significant") + worker_section("a") + \
            worker_section("j1", restart="temporary", significant="true") + \
            worker_section("j2", restart="temporary", significant="true")
        with Node(cfg) as n:
            pids = n.wait_running()
            os.kill(pids["j1"], signal.SIGKILL)  # temporary: any end counts
            n.wait_event("child_not_restarted", child="j1")
            time.sleep(0.05)
            self.assertIsNone(n.poll())
            os.kill(pids["j2"], signal.SIGUSR1)
            self.assertEqual(n.wait_exit(5), 0)

    def test_nested_auto_shutdown_is_a_shutdown_exit(self):
        # A supervisor that shuts itself down exits with OTP's `shutdown` (4): a transient
        # parent entry then stays down, the rest of the tree runs on.
        cfg = (sup_section("root", "one_for_one", ["a", "unit"])
               + worker_section("a")
               + sup_section("unit", "one_for_one", ["w", "job"], auto_shutdown="any_significant",
                             restart="transient")
               + worker_section("w")
               + worker_section("job", args="--exit-after 100", restart="transient",
                                significant="true"))
        with Node(cfg) as n:
            ev = n.wait_event("child_exited", child="unit")[0]
            self.assertEqual(ev["status"], "exit 4")
            n.wait_event("child_not_restarted", child="unit")
            self.assertIsNone(n.child_map()["unit"]["pid"])
            self.assertIsNone(n.poll())

    def test_terminate_child_of_significant_does_not_shut_down(self):
        # OTP: auto_shutdown applies only when significant children end by themselves
        cfg = sup_section("root", "one_for_one", ["a", "job"], auto_shutdown="any_significant") + \
            worker_section("a") + worker_section("job", restart="transient", significant="true")
        with Node(cfg) as n:
            n.ctl_ok("root", "terminate_child", id="job")
            time.sleep(0.05)
            self.assertIsNone(n.poll())


if __name__ == "__main__":
    main()
