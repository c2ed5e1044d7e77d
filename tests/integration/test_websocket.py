"""WebSocket at /mcp/ws: one session per connection, one JSON-RPC message per
text frame; handshake errors, close codes, size limits and keep-alive."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cmcp_harness import Node, main  # noqa: E402
from mcp_client import Ws, free_port, node_config, PROTOCOL  # noqa: E402

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


class WebSocketTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.http, cls.tcp = free_port(), free_port()
        cls.node = Node(node_config(cls.http, cls.tcp, extra="""
[listener]
max_message_bytes = 65536
keepalive_ms = 300
""")).start()

    @classmethod
    def tearDownClass(cls):
        cls.node.cleanup()

    def ws(self, **kw):
        w = Ws(self.http, **kw)
        self.addCleanup(w.close)
        return w

    def test_session_with_progress(self):
        w = self.ws()
        self.assertEqual(w.status, 101)
        self.assertEqual(w.headers.get("sec-websocket-protocol"), "mcp")
        w.send(INIT)
        w.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        w.send({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "sleep", "arguments": {"ms": 300}, "_meta": {"progressToken": "w"}}})
        got, progress = {}, 0
        while 2 not in got:
            m = w.recv()
            if m.get("method") == "notifications/progress":
                self.assertNotIn(2, got)  # progress comes before the response
                progress += 1
            elif "id" in m:
                got[m["id"]] = m
        self.assertEqual(got[1]["result"]["protocolVersion"], PROTOCOL)
        self.assertIn("result", got[2])
        self.assertGreaterEqual(progress, 2)

    def test_pipelined_messages_wait_instead_of_failing(self):
        # 300 requests sent before reading: past the engine's 128 per session they wait in
        # the listener (which stops reading the connection), and every one gets a result.
        w = self.ws()
        w.send(INIT)
        w.recv()
        n = 300
        frames = []
        for i in range(n):
            frames.append({"jsonrpc": "2.0", "id": 100 + i, "method": "tools/call",
                           "params": {"name": "sleep", "arguments": {"ms": 100}}})
        for f in frames:
            w.send(f)
        seen = set()
        for _ in range(n):
            m = w.recv(timeout=30)
            self.assertIn("result", m, m)
            seen.add(m["id"])
        self.assertEqual(seen, set(range(100, 100 + n)))

    def test_no_subprotocol_is_fine_a_wrong_one_is_not(self):
        self.assertEqual(self.ws(protocol=None).status, 101)
        self.assertEqual(self.ws(protocol="chat").status, 400)

    def test_handshake_errors(self):
        self.assertEqual(self.ws(headers={"Sec-WebSocket-Version": "8"}).status, 426)
        self.assertEqual(self.ws(headers={"Upgrade": None, "Connection": None}).status, 426)
        self.assertEqual(self.ws(headers={"Host": "evil.example"}).status, 403)
        self.assertEqual(self.ws(headers={"Origin": "http://evil.example"}).status, 403)

    def test_oversized_message_closes_with_1009(self):
        w = self.ws()
        w.send_frame(1, b'{"x":"' + b"a" * 70000 + b'"}')
        op, payload = w.recv_frame()
        self.assertEqual(op, 8)
        self.assertEqual(int.from_bytes(payload[:2], "big"), 1009)

    def test_binary_frame_closes_with_1003(self):
        w = self.ws()
        w.send_frame(2, b"\x00\x01")
        op, payload = w.recv_frame()
        self.assertEqual(op, 8)
        self.assertEqual(int.from_bytes(payload[:2], "big"), 1003)

    def test_ping_pong_and_server_pings(self):
        w = self.ws()
        w.send_frame(9, b"hi")
        op, payload = w.recv_frame()
        # The server may ping first (keep-alive every 300 ms); its pong to ours must come.
        while op == 9:
            op, payload = w.recv_frame()
        self.assertEqual((op, payload), (10, b"hi"))
        op, _ = w.recv_frame(timeout=3)
        self.assertEqual(op, 9, "the server sends keep-alive pings")

    def test_clean_close_ends_the_session(self):
        w = self.ws()
        w.send(INIT)
        self.assertIn("result", w.recv())
        n = len(self.node.log_events("session_deleted"))
        w.send_frame(8, (1000).to_bytes(2, "big"))
        op, payload = w.recv_frame()
        self.assertEqual(op, 8)
        self.assertEqual(int.from_bytes(payload[:2], "big"), 1000)
        self.node.wait_for(lambda: len(self.node.log_events("session_deleted")) > n, timeout=5,
                           what="session_deleted")


if __name__ == "__main__":
    main()
