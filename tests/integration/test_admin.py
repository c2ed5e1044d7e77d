"""The admin socket's security against a real node: the cookie file is made 0600,
a wrong cookie is refused, and a replayed, reordered or tampered message (in
either direction) is refused and logged and never executed; a node whose admin
endpoint leaves loopback will not start without an existing cookie file."""
import os
import stat
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cmcp_harness import Node, main, run_config_check  # noqa: E402
from ops_client import (Ports, Proxy, TcpReq, auth_error_text, get_json, metrics,  # noqa: E402
                        run_ctl)


class AdminSecurityTest(unittest.TestCase):
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

    def health(self):
        deadline = time.monotonic() + 5
        while True:
            try:
                return get_json(self.p.metrics, "/health")
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def undrained(self):
        self.assertEqual(self.ctl("undrain")[0], 0)
        self.node.wait_for(lambda: not self.health()[1]["draining"], 5, 0.02, "undrained")

    def refusals(self, reason):
        return self.node.log_events("admin_refused", reason=reason)

    def test_cookie_made_private(self):
        path = os.path.join(self.node.dir, "var", "cookie")
        st = os.stat(path)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        self.assertGreaterEqual(len(open(path).read().strip()), 32)
        self.assertTrue(self.node.has_event("admin_cookie_created"))

    def test_wrong_cookie_refused(self):
        bad = os.path.join(self.node.dir, "other-cookie")
        with open(bad, "w") as f:
            f.write("not-the-node-cookie-0123456789abcdef\n")
        os.chmod(bad, 0o600)
        n = len(self.refusals("wrong_cookie"))
        rc, out, err = self.ctl("drain", cookie=bad)
        self.assertEqual(rc, 4, err)
        self.assertIn("authentication refused", err)
        self.node.wait_for(lambda: len(self.refusals("wrong_cookie")) > n, 5, what="refusal logged")
        ev = self.refusals("wrong_cookie")[-1]
        self.assertRegex(ev["peer"], r"^127\.0\.0\.1:\d+$")
        self.assertFalse(self.health()[1]["draining"])

    def test_loose_cookie_file_refused_by_client(self):
        loose = os.path.join(self.node.dir, "loose-cookie")
        with open(loose, "w") as f:
            f.write(open(os.path.join(self.node.dir, "var", "cookie")).read())
        os.chmod(loose, 0o644)
        rc, _, err = self.ctl("status", cookie=loose)
        self.assertEqual(rc, 2, err)
        self.assertIn("chmod 600", err)

    def test_replayed_request_refused(self):
        proxy = Proxy(self.p.admin)
        self.addCleanup(proxy.close)
        rc, out, err = run_ctl(self.node, proxy.port, "drain")
        self.assertEqual(rc, 0, err)
        self.assertEqual(len(proxy.c2s), 3, "hello, auth, the drain request")
        # The admin worker publishes at once; the metrics worker takes it asynchronously.
        self.node.wait_for(lambda: self.health()[1]["draining"], 5, 0.02, "drained")
        self.undrained()
        n = len(self.refusals("replay"))
        # The captured drain, sent again on a connection of our own.
        r = TcpReq(self.p.admin)
        try:
            answer = r.request(proxy.c2s[2])
        finally:
            r.close()
        self.assertIn("replay", auth_error_text(answer) or "", answer)
        self.node.wait_for(lambda: len(self.refusals("replay")) > n, 5, what="replay logged")
        time.sleep(0.3)
        self.assertFalse(self.health()[1]["draining"], "the replayed drain was executed")

    def test_replayed_handshake_refused(self):
        proxy = Proxy(self.p.admin)
        self.addCleanup(proxy.close)
        self.assertEqual(run_ctl(self.node, proxy.port, "status")[0], 0)
        n = len(self.refusals("unknown_session"))
        r = TcpReq(self.p.admin)
        try:
            challenge = r.request(proxy.c2s[0])  # a fresh challenge: a new server nonce
            self.assertIsNone(auth_error_text(challenge))
            self.assertNotEqual(challenge, proxy.s2c[0])
            answer = r.request(proxy.c2s[1])  # the old proof answers an old challenge
            self.assertIn("unknown_session", auth_error_text(answer) or "", answer)
            answer = r.request(proxy.c2s[2])  # and its session's request goes nowhere
            self.assertIsNotNone(auth_error_text(answer))
        finally:
            r.close()
        self.node.wait_for(lambda: len(self.refusals("unknown_session")) > n, 5,
                           what="refusal logged")

    def test_tampered_request_refused(self):
        n = len(self.refusals("tampered"))
        # Flip one byte of the sealed drain request's authentication tag.
        proxy = Proxy(self.p.admin, tamper=("c2s", 2, -1))
        self.addCleanup(proxy.close)
        rc, out, err = run_ctl(self.node, proxy.port, "drain")
        self.assertEqual(rc, 4, err)
        self.assertIn("tampered", err)
        self.node.wait_for(lambda: len(self.refusals("tampered")) > n, 5, what="refusal logged")
        time.sleep(0.3)
        self.assertFalse(self.health()[1]["draining"], "a tampered drain was executed")

    def test_tampered_ciphertext_refused(self):
        n = len(self.refusals("tampered"))
        # A byte in the middle of the ciphertext this time (well past the 38-byte header).
        proxy = Proxy(self.p.admin, tamper=("c2s", 2, -20))
        self.addCleanup(proxy.close)
        rc, _, err = run_ctl(self.node, proxy.port, "drain")
        self.assertEqual(rc, 4, err)
        self.node.wait_for(lambda: len(self.refusals("tampered")) > n, 5, what="refusal logged")
        self.assertFalse(self.health()[1]["draining"])

    def test_tampered_response_refused_by_client(self):
        proxy = Proxy(self.p.admin, tamper=("s2c", 2, -1))
        self.addCleanup(proxy.close)
        rc, out, err = run_ctl(self.node, proxy.port, "status")
        self.assertEqual(rc, 4, err)
        self.assertIn("failed authentication", err)
        self.assertEqual(out, "")

    def test_tampered_welcome_refused_by_client(self):
        # A byte of the server's proof in the welcome (request id 4 + header 38 + 5): an
        # impostor that relays the handshake cannot make that proof.
        proxy = Proxy(self.p.admin, tamper=("s2c", 1, 47))
        self.addCleanup(proxy.close)
        rc, _, err = run_ctl(self.node, proxy.port, "status")
        self.assertEqual(rc, 4, err)
        self.assertIn("could not prove", err)

    def test_garbage_refused(self):
        n = len(self.refusals("malformed"))
        r = TcpReq(self.p.admin)
        try:
            answer = r.request(b"GET / HTTP/1.0\r\n\r\n")
        finally:
            r.close()
        self.assertIn("malformed", auth_error_text(answer) or "", answer)
        self.node.wait_for(lambda: len(self.refusals("malformed")) > n, 5, what="refusal logged")
        # Refusals are counted for the metrics worker.
        self.node.wait_for(lambda: "cmcp_admin_auth_failures_total" in
                           run_ctl(self.node, self.p.admin, "metrics")[1], 5,
                           what="failures counted")


class AdminStartTest(unittest.TestCase):
    def test_non_loopback_needs_existing_cookie(self):
        p = Ports()
        text = p.config().replace("tcp://127.0.0.1:%d" % p.admin, "tcp://0.0.0.0:%d" % p.admin)
        code, out, err, _ = run_config_check(text, timeout=20)
        self.assertEqual(code, 3, err)  # the admin child fails to start, so does the node
        self.assertIn("needs an existing cookie file", err)
        self.assertIn("does not exist", err)

    def test_loose_cookie_refused_by_node(self):
        p = Ports()
        node = Node(p.config(), wait_ready=False)
        os.makedirs(os.path.join(node.dir, "var"))
        path = os.path.join(node.dir, "var", "cookie")
        with open(path, "w") as f:
            f.write("0123456789abcdef0123456789abcdef\n")
        os.chmod(path, 0o644)
        try:
            node.start()
            code = node.wait_exit(20)
            self.assertEqual(code, 3)
            self.assertIn("chmod 600", node.stderr_text())
        finally:
            node.cleanup()

    def test_admin_off(self):
        p = Ports()
        text = p.config().replace("endpoint = tcp://127.0.0.1:%d" % p.admin, "endpoint =")
        with Node(text) as node:
            node.wait_event("admin_socket_off", 5)
            self.assertFalse(os.path.exists(os.path.join(node.dir, "var", "cookie")))
            rc, _, err = run_ctl(node, p.admin, "status")
            self.assertEqual(rc, 2, err)  # no cookie file to read either


class AuthThrottleTest(unittest.TestCase):
    """Wrong-cookie proofs are rate-limited per host: after 10 in 10 s the host's handshakes
    are refused (with the reason) for 10 s, even with the right cookie, and counted."""

    def test_wrong_cookie_storm_is_throttled(self):
        p = Ports()
        node = Node(p.config()).start()
        self.addCleanup(node.cleanup)
        node.wait_event("admin_listening", 5)
        bad = os.path.join(node.dir, "other-cookie")
        with open(bad, "w") as f:
            f.write("not-the-node-cookie-0123456789abcdef\n")
        os.chmod(bad, 0o600)
        for _ in range(10):
            rc, _, err = run_ctl(node, p.admin, "status", cookie=bad)
            self.assertEqual(rc, 4, err)
            self.assertNotIn("too many", err)
        rc, _, err = run_ctl(node, p.admin, "status", cookie=bad)
        self.assertEqual(rc, 4, err)
        self.assertIn("too many failed authentications", err)
        rc, _, err = run_ctl(node, p.admin, "status")  # the right cookie, same host: waits too
        self.assertNotEqual(rc, 0)
        self.assertIn("too many failed authentications", err)
        node.wait_event("admin_auth_throttled", 5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            m = metrics(p.metrics)
            if m.get(("cmcp_admin_auth_throttled_total", ""), 0) >= 2:
                break
            time.sleep(0.2)
        self.assertGreaterEqual(m.get(("cmcp_admin_auth_throttled_total", ""), 0), 2)


if __name__ == "__main__":
    main()
