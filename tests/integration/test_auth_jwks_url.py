"""[auth] jwks_url against a real node (docs/authorization.md, "Keys from jwks_url"): the
listener fetches the issuer's JWK Set over HTTP without blocking its loop, answers 503
until it has keys, fetches again soon when a token names an unknown kid (a rotation)
but at most every 10 s however many tokens ask, keeps the keys in use when the issuer
serves garbage or is gone, and starts from the copy kept in data_dir when the issuer
cannot be reached.

The issuer here is a small HTTP server on 127.0.0.1 run by the test (plain http is
allowed to loopback only); tokens are minted as in test_auth.py.
"""
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cmcp_harness import Node, main, wait_for  # noqa: E402
from mcp_client import HttpConn, free_port, PROTOCOL  # noqa: E402
from ops_client import wait_metric  # noqa: E402
from test_auth import INIT, ISS, Keys  # noqa: E402


class Issuer:
    """Serves /jwks on a loopback port: a document the test changes, or an error status.
    Counts the fetches."""

    def __init__(self):
        self.doc = b'{"keys": []}'
        self.status = 200
        self.fetches = 0
        self.lock = threading.Lock()
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                with issuer.lock:
                    issuer.fetches += 1
                    status, doc = issuer.status, issuer.doc
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(doc)))
                self.end_headers()
                self.wfile.write(doc)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, doc=None, status=200):
        with self.lock:
            if doc is not None:
                self.doc = json.dumps(doc).encode() if not isinstance(doc, bytes) else doc
            self.status = status

    def count(self):
        with self.lock:
            return self.fetches

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class JwksUrlTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="cmcp-jwks-")
        self.addCleanup(subprocess.run, ["rm", "-rf", self.dir])
        self.a, self.b = Keys(self.dir, "a"), Keys(self.dir, "b")
        self.issuer = Issuer()
        self.addCleanup(self.issuer.stop)
        self.http, self.metrics = free_port(), free_port()
        self.aud = "http://127.0.0.1:%d/mcp" % self.http
        self.data = os.path.join(self.dir, "data")

    def node(self, url=None):
        n = Node(f"""
[node]
data_dir = {self.data}
[tools]
packs = core
[listener]
http_port = {self.http}
tcp_port = 0
[metrics]
port = {self.metrics}
[admin]
endpoint =
[tree.shard]
count = 1
[auth]
enabled = true
issuer = {ISS}
audience = {self.aud}
jwks_url = {url or "http://127.0.0.1:%d/jwks" % self.issuer.port}
""").start()
        self.addCleanup(n.cleanup)
        return n

    def token(self, keys):
        now = int(time.time())
        return keys.token({"iss": ISS, "aud": self.aud, "exp": now + 300, "iat": now,
                           "sub": "u", "scope": "mcp"})

    def init(self, token):
        c = HttpConn(self.http)
        try:
            return c.request("POST", INIT, headers={"MCP-Protocol-Version": PROTOCOL,
                                                    "Authorization": "Bearer " + token})
        finally:
            c.close()

    def test_fetched_keys_serve_and_a_rotation_is_picked_up_at_once(self):
        self.issuer.serve({"keys": [self.a.rsa_jwk]})
        n = self.node()
        ta, tb = self.token(self.a), self.token(self.b)
        wait_for(lambda: self.init(ta).status == 200, 10, 0.05, what="a token served")
        n.wait_event("auth_jwks_fetched", timeout=5)
        # the issuer rotates: b's token names a kid the node lacks, which fetches again
        # 10 s after the last fetch at the latest (not jwks_refresh_s, 300 s, later)
        self.issuer.serve({"keys": [self.a.rsa_jwk, self.b.rsa_jwk]})
        before = self.issuer.count()
        r = self.init(tb)
        self.assertEqual(r.status, 401, r)
        self.assertIn("fetched again", r.json()["error"]["message"])
        t0 = time.monotonic()
        wait_for(lambda: self.init(tb).status == 200, 15, 0.1, what="the rotated key served")
        self.assertLess(time.monotonic() - t0, 12)
        # a flood of unknown kids costs at most one fetch per 10 s
        tc = self.token(Keys(self.dir, "c"))
        for _ in range(30):
            self.assertEqual(self.init(tc).status, 401)
        time.sleep(0.5)
        self.assertLessEqual(self.issuer.count() - before, 2, "fetches for unknown kids")
        wait_metric(self.metrics, "cmcp_auth_jwks_fetches_total", 'result="changed"',
                    lambda v: v >= 2)

    def test_no_keys_yet_is_503_and_a_bad_document_keeps_the_keys(self):
        self.issuer.serve(b"<html>not a key set</html>")
        n = self.node()
        ta = self.token(self.a)
        n.wait_event("auth_jwks_fetch_failed", timeout=10)
        r = self.init(ta)
        self.assertEqual(r.status, 503, r)
        self.assertEqual(r.headers.get("retry-after"), "2")
        self.assertNotIn("www-authenticate", r.headers)
        self.assertEqual(r.json()["error"]["data"]["reason"], "keys_unavailable")
        self.assertIn("retry", r.json()["error"]["message"])
        # the issuer comes right: the retry (1, 2, 4 s ... after failures) takes the keys
        self.issuer.serve({"keys": [self.a.rsa_jwk]})
        wait_for(lambda: self.init(ta).status == 200, 15, 0.1, what="keys after the retry")
        # garbage or an error later on: the keys in use stay
        self.issuer.serve(status=500)
        tb = self.token(self.b)
        self.init(tb)  # an unknown kid: a fetch, which fails
        n.wait_event("auth_jwks_fetch_failed", timeout=15, count=2)
        self.assertEqual(self.init(ta).status, 200)
        wait_metric(self.metrics, "cmcp_auth_jwks_fetches_total", 'result="failed"',
                    lambda v: v >= 1)

    def test_an_issuer_that_never_answers_blocks_nothing(self):
        # a port that accepts connections (the kernel's backlog) and never answers
        import socket
        hang = socket.socket()
        hang.bind(("127.0.0.1", 0))
        hang.listen(8)
        self.addCleanup(hang.close)
        self.node("http://127.0.0.1:%d/jwks" % hang.getsockname()[1])
        ta = self.token(self.a)
        for _ in range(5):  # each answered at once, while the fetch waits for its timeout
            t0 = time.monotonic()
            r = self.init(ta)
            self.assertEqual(r.status, 503, r)
            self.assertLess(time.monotonic() - t0, 1.0)
            time.sleep(0.2)

    def test_a_restart_without_the_issuer_uses_the_kept_copy(self):
        self.issuer.serve({"keys": [self.a.rsa_jwk]})
        url = "http://127.0.0.1:%d/jwks" % self.issuer.port
        n = self.node(url)
        ta = self.token(self.a)
        wait_for(lambda: self.init(ta).status == 200, 10, 0.05, what="a token served")
        n.stop()
        kept = [f for f in os.listdir(self.data) if f.startswith("auth-jwks-")]
        self.assertEqual(len(kept), 1, os.listdir(self.data))
        self.issuer.serve(status=503)  # the issuer cannot serve its keys now
        n2 = self.node(url)
        self.assertEqual(self.init(ta).status, 200)
        self.assertTrue(n2.wait_event("auth_jwks_from_cache", timeout=5))


if __name__ == "__main__":
    main()
