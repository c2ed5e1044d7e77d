"""The supervisor's control channel: nng req/rep, OTP's management API and its error answers."""

import os
import signal
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cmcp_harness import (Node, NngError, ReqClient, Timed, main, pid_alive,  # noqa: E402
                          sup_section, wait_for, worker_section)

CFG = (sup_section("root", "one_for_one", ["a", "b", "sub"])
       + worker_section("a") + worker_section("b")
       + sup_section("sub", "one_for_one", ["x"]) + worker_section("x"))


class Wire(Timed):
    """The pure-Python nng REQ0 client against the real rep0 socket."""

    def test_several_requests_on_one_connection(self):
        with Node(CFG) as n:
            with ReqClient(n.ctl_address("root")) as c:
                for _ in range(5):
                    r = c.request(b'{"op":"status"}')
                    self.assertIn(b'"ok":true', r)

    def test_many_requests_in_a_row(self):
        # rep0 drops a reply sent NONBLOCK while the pipe is still busy with the previous
        # one; the client then waits forever. Back-to-back requests make that likely.
        with Node(CFG) as n:
            with ReqClient(n.ctl_address("root"), timeout=5.0) as c:
                for _ in range(500):
                    self.assertIn(b'"ok":true', c.request(b'{"op":"count_children"}'))

    def test_wrong_protocol_is_refused(self):
        with Node(CFG) as n:
            path = n.ctl_address("root")[len("ipc://"):]
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(3)
            s.connect(path)
            try:
                s.sendall(b"\x00SP\x00" + struct.pack(">H", 0x10) + b"\x00\x00")  # PAIR0
                s.recv(8)  # rep0 answers its own header, then drops the wrong peer
                s.sendall(b"\x01" + struct.pack(">Q", 5) + b"\x80\x00\x00\x01{")
                end = time.monotonic() + 3
                got = b"x"
                while got and time.monotonic() < end:
                    got = s.recv(64)
                self.assertEqual(got, b"")  # closed by the peer
            except (ConnectionResetError, BrokenPipeError):
                pass
            finally:
                s.close()
            n.ctl_ok("root", "status")  # still serving

    def test_garbage_json_and_unknown_op(self):
        with Node(CFG) as n:
            with ReqClient(n.ctl_address("root")) as c:
                r = c.request(b"not json")
                self.assertIn(b'"error":"badarg"', r)
            self.assertEqual(n.ctl("root", "frobnicate")["error"], "badarg")
            with ReqClient(n.ctl_address("root")) as c:
                self.assertIn(b'"error":"badarg"', c.request(b'{"id":"a"}'))


class Queries(Timed):
    def test_which_children(self):
        with Node(CFG) as n:
            ch = n.child_map()
            self.assertEqual(list(ch), ["a", "b", "sub"])
            a = ch["a"]
            self.assertEqual((a["state"], a["type"], a["restart"], a["role"], a["shutdown"]),
                             ("running", "worker", "permanent", "testworker", 5000))
            self.assertEqual(ch["sub"]["type"], "supervisor")
            self.assertEqual(ch["sub"]["shutdown"], "infinity")
            self.assertTrue(all(pid_alive(c["pid"]) for c in ch.values()))

    def test_count_children(self):
        with Node(CFG) as n:
            c = n.ctl_ok("root", "count_children")
            self.assertEqual((c["specs"], c["active"], c["supervisors"], c["workers"]),
                             (3, 3, 1, 2))
            n.ctl_ok("root", "terminate_child", id="b")
            c = n.ctl_ok("root", "count_children")
            self.assertEqual((c["specs"], c["active"]), (3, 2))

    def test_status_and_get_childspec(self):
        with Node(CFG) as n:
            st = n.ctl_ok("root", "status")
            self.assertEqual((st["supervisor"], st["strategy"], st["pid"]),
                             ("root", "one_for_one", n.pid))
            sp = n.ctl_ok("root", "get_childspec", id="a")["spec"]
            self.assertEqual((sp["id"], sp["role"], sp["start_timeout"]), ("a", "testworker", 5000))
            self.assertEqual(n.ctl("root", "get_childspec", id="nope")["error"], "not_found")


class Management(Timed):
    def test_terminate_restart_delete(self):
        with Node(CFG) as n:
            pids = n.wait_running()
            self.assertEqual(n.ctl("root", "terminate_child", id="nope")["error"], "not_found")
            self.assertEqual(n.ctl("root", "restart_child", id="a")["error"], "running")
            self.assertEqual(n.ctl("root", "delete_child", id="a")["error"], "running")
            n.ctl_ok("root", "terminate_child", id="a")
            self.assertFalse(pid_alive(pids["a"]))
            a = n.child_map()["a"]
            self.assertEqual((a["pid"], a["state"]), (None, "undefined"))
            time.sleep(0.05)
            self.assertIsNone(n.child_map()["a"]["pid"])  # not restarted: it was told to stop
            n.ctl_ok("root", "terminate_child", id="a")  # again: ok, as in OTP
            r = n.ctl_ok("root", "restart_child", id="a")
            self.assertTrue(pid_alive(r["pid"]))
            self.assertEqual(n.child_map()["a"]["pid"], r["pid"])
            n.ctl_ok("root", "terminate_child", id="a")
            n.ctl_ok("root", "delete_child", id="a")
            self.assertNotIn("a", n.child_map())
            self.assertEqual(n.ctl("root", "restart_child", id="a")["error"], "not_found")
            self.assertEqual(n.ctl("root", "delete_child", id="a")["error"], "not_found")
            self.assertEqual(n.child_pids()["b"], pids["b"])

    def test_terminate_a_supervisor_child_stops_its_subtree(self):
        with Node(CFG) as n:
            x = n.wait_running("sub")["x"]
            n.ctl_ok("root", "terminate_child", id="sub")
            self.assertFalse(pid_alive(x))
            r = n.ctl_ok("root", "restart_child", id="sub")
            self.assertTrue(pid_alive(r["pid"]))
            n.wait_running("sub")

    def test_start_child_dynamic(self):
        with Node(CFG) as n:
            spec = {"id": "dyn", "role": "testworker", "args": ["--ready-delay", "20"],
                    "restart": "transient"}
            r = n.ctl_ok("root", "start_child", spec=spec)
            self.assertTrue(pid_alive(r["pid"]))
            self.assertEqual(list(n.child_map()), ["a", "b", "sub", "dyn"])
            again = n.ctl("root", "start_child", spec=spec)
            self.assertEqual((again["error"], again["pid"]), ("already_started", r["pid"]))
            # it is supervised like any other child
            os.kill(r["pid"], signal.SIGKILL)
            wait_for(lambda: (lambda c: c["state"] == "running" and c["pid"] != r["pid"])(
                n.child_map()["dyn"]), 5, what="dyn restarted")
            n.ctl_ok("root", "terminate_child", id="dyn")
            self.assertEqual(n.ctl("root", "start_child", spec=spec)["error"], "already_present")
            # stop order includes it: it was started last, it stops first
            n.ctl_ok("root", "restart_child", id="dyn")
            self.assertEqual(n.stop(), 0)
            stops = [e["child"] for e in n.log_events("child_stopping", id="root")]
            self.assertEqual(stops[-4:], ["dyn", "sub", "b", "a"])

    def test_start_child_errors(self):
        with Node(CFG) as n:
            r = n.ctl("root", "start_child", spec={"id": "bad", "role": "no_such_role"})
            self.assertEqual(r["error"], "badarg")
            self.assertIn("no_such_role", r["message"])
            self.assertEqual(n.ctl("root", "start_child")["error"], "badarg")
            self.assertEqual(n.ctl("root", "start_child", spec={"role": "testworker"})["error"],
                             "badarg")
            r = n.ctl("root", "start_child", spec={"id": "f", "role": "testworker",
                                                   "args": ["--fail-start"]})
            self.assertEqual(r["error"], "start_failed")
            self.assertNotIn("f", n.child_map())  # OTP keeps no spec of a failed start_child
            r = n.ctl("root", "start_child", spec={"id": "e", "exec": ["/nonexistent/x"]})
            self.assertEqual(r["error"], "start_failed")
            self.assertIn("No such file", r["message"])
            r = n.ctl("root", "start_child", spec={"id": "s", "role": "testworker",
                                                   "restart": "transient", "significant": True})
            self.assertEqual(r["error"], "badarg")  # auto_shutdown is never here
            r = n.ctl("root", "start_child", spec={"id": "t", "role": "testworker",
                                                   "args": ["--no-ready"], "start_timeout": 100})
            self.assertEqual(r["error"], "start_failed")
            self.assertIsNone(n.poll())

    def test_simple_one_for_one_errors(self):
        cfg = (sup_section("root", "one_for_one", ["pool"])
               + sup_section("pool", "simple_one_for_one", ["tw"]) + worker_section("tw"))
        with Node(cfg) as n:
            r = n.ctl_ok("pool", "start_child", args=[])
            for op in ("restart_child", "delete_child"):
                self.assertEqual(n.ctl("pool", op, id=r["id"])["error"], "simple_one_for_one")
            self.assertEqual(n.ctl("pool", "terminate_child", id=r["id"])["error"],
                             "simple_one_for_one")
            self.assertEqual(n.ctl("pool", "terminate_child", pid=1)["error"], "not_found")
            bad = n.ctl("pool", "start_child", args=["--fail-start"])
            self.assertEqual(bad["error"], "start_failed")
            self.assertEqual(len(n.child_map("pool")), 1)

    def test_requests_wait_for_a_restart_in_progress(self):
        # A child that takes 300 ms to be ready: a request that changes children waits for
        # the restart (an OTP supervisor's mailbox), read-only ones are answered at once.
        cfg = sup_section("root", "one_for_one", ["a", "slow"]) + worker_section("a") + \
            worker_section("slow", args="--ready-delay 300")
        with Node(cfg) as n:
            pids = n.wait_running()
            os.kill(pids["slow"], signal.SIGKILL)
            n.wait_event("child_started", count=3)
            t0 = time.monotonic()
            self.assertEqual(n.child_map()["slow"]["state"], "starting")
            self.assertLess(time.monotonic() - t0, 0.1)
            n.ctl_ok("root", "terminate_child", id="a")
            self.assertGreater(time.monotonic() - t0, 0.15)
            self.assertEqual(n.child_map()["slow"]["state"], "running")

    def test_shutting_down_answer(self):
        cfg = sup_section("root", "one_for_one", ["stubborn"]) + \
            worker_section("stubborn", args="--ignore-term", shutdown=500)
        with Node(cfg) as n:
            n.wait_running()
            n.signal(signal.SIGTERM)
            n.wait_event("child_stopping")
            r = n.ctl("root", "terminate_child", id="stubborn")
            self.assertEqual(r["error"], "shutting_down")
            self.assertTrue(n.ctl_ok("root", "status")["stopping"])
            self.assertEqual(n.wait_exit(5), 0)


if __name__ == "__main__":
    main()
