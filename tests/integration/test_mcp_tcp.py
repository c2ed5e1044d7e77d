"""Newline-delimited JSON-RPC over TCP, and stdio with a raw pipe."""
import json
import socket
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cmcp_harness import Node, cmcpd_path, main  # noqa: E402
from mcp_client import Tcp, free_port, node_config, PROTOCOL  # noqa: E402

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


class TcpTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.http, cls.tcp = free_port(), free_port()
        cls.node = Node(node_config(cls.http, cls.tcp, extra="""
[listener]
max_message_bytes = 65536
""")).start()

    @classmethod
    def tearDownClass(cls):
        cls.node.cleanup()

    def client(self):
        t = Tcp(self.tcp)
        self.addCleanup(t.close)
        return t

    def test_session_over_tcp(self):
        t = self.client()
        t.send(INIT)
        r, _ = t.recv_for(1)
        self.assertEqual(r["result"]["protocolVersion"], PROTOCOL)
        t.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        t.send({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                "params": {"name": "kv_set", "arguments": {"key": "k", "value": "v1"}}})
        t.send({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                "params": {"name": "kv_get", "arguments": {"key": "k"}}})
        r2, _ = t.recv_for(2)
        r3, _ = t.recv_for(3)
        self.assertIn("result", r2, r2)
        self.assertIn("result", r3, r3)
        self.assertFalse(r2["result"].get("isError", False))
        self.assertIn("v1", json.dumps(r3["result"]))

    def test_progress_arrives_before_the_response(self):
        t = self.client()
        t.send(INIT)
        t.recv_for(1)
        t.send({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {
            "name": "sleep", "arguments": {"ms": 300}, "_meta": {"progressToken": "tp"}}})
        r, others = t.recv_for(9)
        self.assertIn("result", r)
        self.assertGreaterEqual(len([m for m in others if m.get("method") == "notifications/progress"]), 2)

    def test_pipelined_requests_are_all_answered_with_backpressure(self):
        # 1,000 requests written before reading any answer: the listener takes 128 at a
        # time (it stops reading the connection while 128 are in flight), so with 150 ms
        # requests they take at least 4 waves, and every one is answered once.
        t = self.client()
        t.send(INIT)
        t.recv_for(1)
        n = 1000
        batch = b"".join(json.dumps({"jsonrpc": "2.0", "id": 100 + i, "method": "tools/call",
                                     "params": {"name": "sleep", "arguments": {"ms": 150}}}
                                    ).encode() + b"\n" for i in range(n))
        start = time.monotonic()
        t.sock.sendall(batch)
        seen = set()
        for _ in range(n):
            m = t.recv(timeout=30)
            self.assertIn("result", m, m)
            seen.add(m["id"])
        elapsed = time.monotonic() - start
        self.assertEqual(seen, set(range(100, 100 + n)))
        self.assertGreaterEqual(elapsed, 0.55, "no backpressure: all %d ran at once" % n)

    def test_parse_error_keeps_the_connection(self):
        t = self.client()
        t.send(b"{oops")
        r = t.recv()
        self.assertIn(r["error"]["code"], (-32700, -32600))
        t.send(INIT)
        r, _ = t.recv_for(1)
        self.assertIn("result", r)
        t.send(b"{oops")
        self.assertEqual(t.recv()["error"]["code"], -32700)

    def test_oversized_line_closes(self):
        t = self.client()
        t.sock.sendall(b'{"x":"' + b"a" * 70000)
        r = t.recv()
        self.assertEqual(r["error"]["code"], -32600)
        self.assertIn("too large", r["error"]["message"])
        with self.assertRaises((ConnectionError, OSError)):
            t.recv(timeout=3)

    def test_tcp_session_ends_with_connection(self):
        t = Tcp(self.tcp)
        t.send(INIT)
        t.recv_for(1)
        t.close()
        self.node.wait_event("session_deleted", timeout=5)


class StdioTest(unittest.TestCase):
    def test_stdio_node(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CMCP_")}
        p = subprocess.Popen([cmcpd_path(), "--stdio"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env)
        try:
            p.stdin.write((json.dumps(INIT) + "\n").encode())
            p.stdin.write((json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}) + "\n").encode())
            p.stdin.write((json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                "name": "echo", "arguments": {"text": "through stdio"}}}) + "\n").encode())
            p.stdin.flush()
            got = {}
            deadline = time.monotonic() + 15
            while len(got) < 2 and time.monotonic() < deadline:
                line = p.stdout.readline()
                if not line:
                    break
                m = json.loads(line)  # stdout carries nothing but JSON-RPC
                got[m.get("id")] = m
            self.assertIn(1, got)
            self.assertEqual(got[2]["result"]["content"][0]["text"], "through stdio")
            p.stdin.close()  # the client goes away: the node stops by itself
            self.assertEqual(p.wait(timeout=15), 0)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stdout.close()
            p.stderr.close()


class EndOfInputTest(unittest.TestCase):
    """A client that writes its messages and closes its side at once still gets every
    answer: `printf '<init>\\n<initialized>\\n<call>\\n' | cmcpd --stdio`, and a TCP
    client that half-closes."""

    MSGS = [INIT, {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                "name": "echo", "arguments": {"text": "after the end"}}},
            {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
                "name": "sleep", "arguments": {"ms": 200}}}]

    def check(self, out):
        got = {}
        for line in out.splitlines():
            m = json.loads(line)
            got[m.get("id")] = m
        self.assertIn("result", got.get(1, {}), out)
        self.assertEqual(got[2]["result"]["content"][0]["text"], "after the end")
        self.assertIn("result", got.get(3, {}), out)

    def test_stdio_pipe_answers_everything_before_it_stops(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CMCP_")}
        data = "".join(json.dumps(m) + "\n" for m in self.MSGS).encode()
        p = subprocess.run([cmcpd_path(), "--stdio"], input=data, capture_output=True,
                           timeout=30, env=env)
        self.assertEqual(p.returncode, 0, p.stderr.decode()[-2000:])
        self.check(p.stdout.decode())

    def test_tcp_half_close_answers_everything(self):
        http, tcp = free_port(), free_port()
        with Node(node_config(http, tcp)):
            s = socket.create_connection(("127.0.0.1", tcp), timeout=10)
            s.sendall("".join(json.dumps(m) + "\n" for m in self.MSGS).encode())
            s.shutdown(socket.SHUT_WR)
            out = b""
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                chunk = s.recv(65536)
                if not chunk:
                    break  # the node closed its side once everything was answered
                out += chunk
            s.close()
            self.check(out.decode())


if __name__ == "__main__":
    main()
