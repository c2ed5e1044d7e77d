"""Listening sockets that outlive their listener: the root binds the MCP ports once and
the listeners inherit them. A listener killed under a connect loop refuses nothing; a
stopped listener (SIGSTOP) takes no connection from the others and is replaced by its
watchdog, after which what queued meanwhile is served; a second node on the same port
stops at start with one line that names the port."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from cmcp_harness import BIN_DIR, Node, main, wait_for  # noqa: E402
from mcp_client import HttpConn, Session, free_port, node_config  # noqa: E402


def listener_pids(node):
    return [c["pid"] for c in node.children("listener_sup")]


class ConnectLoop(threading.Thread):
    """Opens a connection and asks for a ping on a session, again and again, until told
    to stop (bounded: at most `limit` tries); counts what went wrong, by kind."""

    def __init__(self, http, sid, limit=5000):
        super().__init__(daemon=True)
        self.http, self.sid, self.limit = http, sid, limit
        self.stop = threading.Event()
        self.ok = self.refused = self.other = 0
        self.errors = []

    def run(self):
        body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
        req = (b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Accept: application/json, text/event-stream\r\nMcp-Session-Id: " +
               self.sid.encode() + b"\r\nMCP-Protocol-Version: 2025-06-18\r\n"
               b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        for _ in range(self.limit):
            if self.stop.is_set():
                break
            s = socket.socket()
            s.settimeout(15)
            try:
                s.connect(("127.0.0.1", self.http))
                s.sendall(req)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                if data.startswith(b"HTTP/1.1 200"):
                    self.ok += 1
                else:
                    self.other += 1
                    self.errors.append(data[:80])
            except ConnectionRefusedError:
                self.refused += 1
            except OSError as e:
                # a connection the killed listener had accepted is reset: not a refusal
                self.other += 1
                self.errors.append(repr(e))
            finally:
                s.close()


class ListenerSocketsTest(unittest.TestCase):
    def start(self, listeners=1, watchdog=None):
        http, tcp = free_port(), free_port()
        extra = "[tree.listener]\ncount = %d\n" % listeners
        if watchdog:
            extra += "watchdog = %d\n" % watchdog
        node = Node(node_config(http, tcp, extra=extra)).start()
        self.addCleanup(node.cleanup)
        return node, http, tcp

    def test_listener_sigkill_refuses_no_connection(self):
        node, http, _ = self.start()
        s = Session(http)
        loop = ConnectLoop(http, s.sid)
        loop.start()
        time.sleep(0.5)
        for _ in range(3):
            old = listener_pids(node)[0]
            os.kill(old, signal.SIGKILL)
            wait_for(lambda: (lambda p: p if p and p != old else None)(listener_pids(node)[0]),
                     10, 0.01, what="listener replaced")
            time.sleep(0.4)
        loop.stop.set()
        loop.join(30)
        self.assertEqual(loop.refused, 0, "connections refused while the listener restarted")
        self.assertGreater(loop.ok, 20)
        # the few that fail are connections the killed listener had already accepted
        self.assertLessEqual(loop.other, 3 * 2, loop.errors)
        self.assertIn("result", s.call("ping", conn=HttpConn(http))[0])

    def test_two_listeners_one_stopped_the_other_serves_everything(self):
        node, http, _ = self.start(listeners=2, watchdog=60000)
        pids = listener_pids(node)
        os.kill(pids[0], signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            for i in range(30):  # each on a new connection: none may land on the stopped one
                s = Session(http)
                self.assertIn("result", s.call("ping")[0])
                s.close()
            self.assertLess(time.monotonic() - t0, 10)
        finally:
            os.kill(pids[0], signal.SIGCONT)
        self.assertEqual(listener_pids(node), pids)

    def test_a_stopped_only_listener_is_replaced_and_what_queued_is_served(self):
        node, http, _ = self.start(watchdog=1500)
        s = Session(http)
        old = listener_pids(node)[0]
        os.kill(old, signal.SIGSTOP)
        t0 = time.monotonic()
        # sent while nobody accepts: it waits in the port's queue, not refused
        resp, r = s.call("ping", conn=HttpConn(http, timeout=20))
        self.assertIn("result", resp)
        waited = time.monotonic() - t0
        self.assertGreater(waited, 1.0)
        self.assertLess(waited, 8)
        hung = node.wait_event("child_hung", timeout=5, child_pid=old)[0]
        self.assertIn("stopped", hung["process_state"])
        self.assertNotEqual(listener_pids(node)[0], old)

    def test_what_a_gone_client_sent_to_a_stopped_listener_is_not_run(self):
        node, http, _ = self.start(watchdog=60000)
        s = Session(http)
        self.assertNotIn("error", s.tool("kv_set", {"key": "k", "value": "before"}))
        pid = listener_pids(node)[0]
        os.kill(pid, signal.SIGSTOP)
        try:
            # The client sends a write to the stopped listener, waits, gives up and leaves.
            body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
                "name": "kv_set", "arguments": {"key": "k", "value": "late"}}}).encode()
            c = socket.create_connection(("127.0.0.1", http), timeout=5)
            c.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                      b"\r\nAccept: application/json, text/event-stream\r\nMcp-Session-Id: " +
                      s.sid.encode() + b"\r\nMCP-Protocol-Version: 2025-06-18\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body) + body)
            time.sleep(2.0)
            c.close()
        finally:
            os.kill(pid, signal.SIGCONT)
        node.wait_event("requests_dropped", timeout=10)
        s.conn.close()
        s.conn = HttpConn(http)
        got = s.tool("kv_get", {"key": "k"})
        self.assertEqual(got["result"]["structuredContent"]["value"], "before")
        self.assertEqual(listener_pids(node)[0], pid)  # continued, not replaced

    def test_second_node_on_the_same_port_stops_at_start(self):
        node, http, _ = self.start()
        pids = listener_pids(node)
        other_tcp = free_port()
        second = Node(node_config(http, other_tcp), wait_ready=False)
        with second:
            code = second.wait_exit(10)
            err = second.stderr_text()
        self.assertEqual(code, 3, err)
        self.assertIn("cannot serve MCP over HTTP on 127.0.0.1:%d" % http, err)
        self.assertIn("another cmcp node", err)
        self.assertTrue(err.strip().splitlines()[-1].startswith("cmcpd: the node did not start"))
        self.assertIn("ss -ltnp 'sport = :%d'" % http, err)
        # the first node never noticed
        self.assertEqual(listener_pids(node), pids)
        s = Session(http)
        self.assertIn("result", s.call("ping")[0])
        s.close()

    def test_one_port_for_both_transports_is_refused(self):
        port = free_port()
        n = Node(node_config(port, port), wait_ready=False)
        with n:
            code = n.wait_exit(10)
            err = n.stderr_text()
        self.assertEqual(code, 2, err)
        self.assertIn("http_port and tcp_port are both %d" % port, err)


if __name__ == "__main__":
    main()
