"""Streamable HTTP against a real node: the status codes, the session
lifecycle, SSE streams with resumption, and every bad-input case of the
single-node MCP issue."""
import json
import os
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cmcp_harness import Node, main  # noqa: E402
from mcp_client import HttpConn, Session, free_port, node_config, PROTOCOL  # noqa: E402

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


class HttpTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.http, cls.tcp = free_port(), free_port()
        cls.node = Node(node_config(cls.http, cls.tcp, extra="""
[listener]
max_message_bytes = 65536
[sessions]
max = 40
""")).start()

    @classmethod
    def tearDownClass(cls):
        cls.node.cleanup()

    def conn(self):
        c = HttpConn(self.http)
        self.addCleanup(c.close)
        return c

    def session(self, **kw):
        s = Session(self.http, **kw)
        self.addCleanup(s.close)
        return s

    def test_initialize_and_tools(self):
        s = self.session()
        self.assertEqual(s.init["result"]["protocolVersion"], PROTOCOL)
        self.assertIn("tools", s.init["result"]["capabilities"])
        resp, r = s.call("tools/list")
        self.assertEqual(r.headers["content-type"], "application/json")
        names = {t["name"] for t in resp["result"]["tools"]}
        self.assertTrue({"echo", "add", "kv_set", "kv_get", "kv_list", "sleep"} <= names, names)
        echo = s.tool("echo", {"text": "hi there"})
        self.assertEqual(echo["result"]["content"][0]["text"], "hi there")
        add = s.tool("add", {"a": 2, "b": 40})
        self.assertIn("42", json.dumps(add["result"]))

    def test_session_id_names_shard_and_is_visible_ascii(self):
        s = self.session()
        self.assertRegex(s.sid, r"^[0-9]+-[a-z2-7]{26}$")
        self.assertTrue(all(0x21 <= ord(ch) <= 0x7E for ch in s.sid))

    def test_old_versions_negotiate(self):
        for v in ("2024-11-05", "2025-03-26", "2025-06-18"):
            s = self.session(version=v)
            self.assertEqual(s.init["result"]["protocolVersion"], v)

    def test_missing_session_is_400_unknown_is_404(self):
        c = self.conn()
        r = c.request("POST", {"jsonrpc": "2.0", "id": 5, "method": "tools/list"},
                      headers={"MCP-Protocol-Version": PROTOCOL})
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json()["error"]["code"], -32600)
        r = c.request("POST", {"jsonrpc": "2.0", "id": 5, "method": "tools/list"},
                      headers={"Mcp-Session-Id": "0-aaaaaaaaaaaaaaaaaaaaaaaaaa"})
        self.assertEqual(r.status, 404, r)
        r = c.request("POST", {"jsonrpc": "2.0", "id": 5, "method": "tools/list"},
                      headers={"Mcp-Session-Id": "not-a-session"})
        self.assertEqual(r.status, 404, r)

    def test_delete_ends_the_session(self):
        s = Session(self.http)
        r = s.conn.request("DELETE", headers=s.headers())
        self.assertEqual(r.status, 200, r)
        r = s.post({"jsonrpc": "2.0", "id": 9, "method": "ping"})
        self.assertEqual(r.status, 404, r)
        r = s.conn.request("DELETE", headers=s.headers())
        self.assertEqual(r.status, 404, r)
        s.conn.close()

    def test_notifications_and_responses_get_202(self):
        s = self.session()
        r = s.post({"jsonrpc": "2.0", "method": "notifications/roots/list_changed"})
        self.assertEqual(r.status, 202)
        self.assertEqual(r.body, b"")
        r = s.post({"jsonrpc": "2.0", "id": "nobody-asked", "result": {}})
        self.assertEqual(r.status, 202)

    def test_accept_content_type_origin_host_method(self):
        c = self.conn()
        r = c.request("POST", INIT, headers={"Accept": "application/json"})
        self.assertEqual(r.status, 406, r)
        r = c.request("POST", INIT, headers={"Content-Type": "text/plain"})
        self.assertEqual(r.status, 415, r)
        r = c.request("POST", INIT, headers={"Origin": "http://evil.example"})
        self.assertEqual(r.status, 403, r)
        r = c.request("POST", INIT, headers={"Origin": "http://localhost:3000"})
        self.assertEqual(r.status, 200, r)
        r = c.request("POST", INIT, headers={"Host": "evil.example"})
        self.assertEqual(r.status, 403, r)
        r = c.request("PUT", INIT)
        self.assertEqual(r.status, 405, r)
        self.assertIn("POST", r.headers.get("allow", ""))
        r = c.request("GET", headers={"Accept": "application/json"})
        self.assertEqual(r.status, 406, r)
        r = c.request("GET", path="/nope")
        self.assertEqual(r.status, 404, r)

    def test_protocol_version_header(self):
        s = self.session()
        h = dict(s.headers())
        h["MCP-Protocol-Version"] = "1999-01-01"
        r = s.conn.request("POST", {"jsonrpc": "2.0", "id": 3, "method": "ping"}, headers=h)
        self.assertEqual(r.status, 400, r)
        del h["MCP-Protocol-Version"]
        r = s.conn.request("POST", {"jsonrpc": "2.0", "id": 3, "method": "ping"},
                           headers={"Mcp-Session-Id": s.sid})
        self.assertEqual(r.status, 200, r)

    def test_unsupported_version_in_initialize(self):
        c = self.conn()
        bad = json.loads(json.dumps(INIT))
        bad["params"]["protocolVersion"] = 42
        r = c.request("POST", bad)
        err = r.messages()[0]["error"]
        self.assertEqual(err["code"], -32602)
        self.assertIn("supported", err.get("data", {}))
        self.assertNotIn("mcp-session-id", r.headers)

    def test_json_rpc_errors(self):
        s = self.session()
        r = s.post(b"{not json")
        self.assertEqual(r.status, 400)
        self.assertEqual(r.json()["error"]["code"], -32700)
        resp, _ = s.call("no/such/method")
        self.assertEqual(resp["error"]["code"], -32601)
        r = s.post({"jsonrpc": "1.0", "id": 4, "method": "ping"})
        self.assertEqual(r.messages()[0]["error"]["code"], -32600)
        resp, _ = s.call("tools/call", {"name": 12})
        self.assertEqual(resp["error"]["code"], -32602)
        resp, _ = s.call("tools/call", {"name": "no_such_tool", "arguments": {}})
        self.assertEqual(resp["error"]["code"], -32602)
        bad_args = s.tool("add", {"a": "x"})
        self.assertTrue(bad_args["result"]["isError"])

    def test_request_before_initialized_session(self):
        c = self.conn()
        r = c.request("POST", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        self.assertEqual(r.status, 400)

    def test_deep_nesting_and_invalid_utf8(self):
        s = self.session()
        deep = ("[" * 5000) + ("]" * 5000)
        r = s.post(deep.encode())
        self.assertIn(r.status, (200, 400))
        self.assertIn(r.messages()[0]["error"]["code"], (-32700, -32600))
        r = s.post(b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo",'
                   b'"arguments":{"text":"\xff\xfe"}}}')
        self.assertEqual(r.messages()[0]["error"]["code"], -32700)
        # The node still serves.
        self.assertEqual(s.tool("echo", {"text": "ok"})["result"]["content"][0]["text"], "ok")

    def test_oversized_body_is_413_and_closes(self):
        c = self.conn()
        big = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": "a" * 70000}})
        r = c.request("POST", big)
        self.assertEqual(r.status, 413, r)
        with self.assertRaises((ConnectionError, OSError, TimeoutError)):
            c.request("POST", INIT, timeout=2)

    def test_half_open_client_does_not_block_others(self):
        slow = socket.create_connection(("127.0.0.1", self.http))
        self.addCleanup(slow.close)
        slow.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n")
        s = self.session()
        self.assertEqual(s.tool("echo", {"text": "x"})["result"]["content"][0]["text"], "x")

    def test_progress_streams_as_sse_with_ids(self):
        s = self.session()
        resp, r = s.call("tools/call", {"name": "sleep", "arguments": {"ms": 400},
                                        "_meta": {"progressToken": "p1"}})
        self.assertEqual(r.headers["content-type"].split(";")[0], "text/event-stream")
        progress = [m for m in r.messages() if m.get("method") == "notifications/progress"]
        self.assertGreaterEqual(len(progress), 2, r)
        self.assertTrue(all(m["params"]["progressToken"] == "p1" for m in progress))
        ids = [e["id"] for e in r.events]
        self.assertEqual(len(set(ids)), len(ids))
        streams = {i.split("-")[0] for i in ids}
        self.assertEqual(len(streams), 1, ids)
        self.assertIn("result", resp)

    def test_resume_with_last_event_id(self):
        s = self.session()
        c = HttpConn(self.http)
        got = c.request("POST", {"jsonrpc": "2.0", "id": 77, "method": "tools/call", "params": {
            "name": "sleep", "arguments": {"ms": 1200}, "_meta": {"progressToken": 7}}},
            headers=s.headers(), max_events=2)
        c.close()  # the client loses its stream after two events
        last = got.events[-1]["id"]
        stream = last.split("-")[0]
        c2 = self.conn()
        h = dict(s.headers())
        h["Last-Event-ID"] = last
        r = c2.request("GET", headers=h, timeout=10)
        self.assertEqual(r.status, 200)
        self.assertTrue(all(e["id"].split("-")[0] == stream for e in r.events), r.events)
        # the resumed stream opens with a priming event (id = where it resumes, no data)
        self.assertEqual((r.events[0]["id"], r.events[0]["data"]), (last, ""), r.events)
        seqs = [int(e["id"].split("-")[1]) for e in r.events if e["data"]]
        self.assertTrue(all(q > int(last.split("-")[1]) for q in seqs), (last, seqs))
        final = [m for m in r.messages() if m.get("id") == 77]
        self.assertEqual(len(final), 1, r.events)
        self.assertIn("result", final[0])

    def test_standalone_get_stream_receives_session_notifications(self):
        s = self.session()
        g = self.conn()
        g.send_raw(("GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                    f"Mcp-Session-Id: {s.sid}\r\nMCP-Protocol-Version: {PROTOCOL}\r\n\r\n").encode())
        status, headers = g.read_head()
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("text/event-stream"))
        resp, _ = s.call("logging/setLevel", {"level": "debug"})
        self.assertIn("result", resp)

    def _fill(self, used):
        """Initializes sessions until the node refuses one; used ones also make a request."""
        made, refused = [], None
        for _ in range(60):
            c = HttpConn(self.http)
            r = c.request("POST", INIT)
            if r.status == 200 and used:
                sid = r.headers["mcp-session-id"]
                c.request("POST", {"jsonrpc": "2.0", "id": 2, "method": "ping"},
                          headers={"Mcp-Session-Id": sid})
            c.close()
            if r.status != 200:
                refused = r
                break
            made.append(r.headers["mcp-session-id"])
        return made, refused

    def _delete(self, sids):
        for sid in sids:
            c = HttpConn(self.http)
            c.request("DELETE", headers={"Mcp-Session-Id": sid})
            c.close()

    def test_session_cap(self):
        made = []
        try:
            made, refused = self._fill(used=True)
            self.assertIsNotNone(refused, "the cap of 40 sessions was not enforced")
            self.assertEqual(refused.status, 503)
            self.assertIn("Too many sessions", refused.json()["error"]["message"])
            self.assertLessEqual(len(made), 40)
        finally:
            self._delete(made)

    def test_abandoned_sessions_make_room_at_the_cap(self):
        # Clients that initialize for every request and never DELETE: the node keeps
        # taking new sessions, ending the oldest that nobody used.
        made = []
        try:
            made, refused = self._fill(used=False)
            self.assertIsNone(refused, "unused sessions blocked new ones")
            c = self.conn()
            r = c.request("POST", {"jsonrpc": "2.0", "id": 9, "method": "ping"},
                          headers={"Mcp-Session-Id": made[0]})
            self.assertEqual(r.status, 404, "the oldest abandoned session should be gone")
            self.assertTrue(self.node.has_event("session_expired", reason="abandoned"))
        finally:
            self._delete(made)

    def test_batch_only_for_2025_03_26(self):
        s = self.session(version="2025-03-26")
        r = s.post([{"jsonrpc": "2.0", "id": 1, "method": "ping"},
                    {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                     "params": {"name": "echo", "arguments": {"text": "b"}}}])
        out = r.json()
        self.assertIsInstance(out, list)
        self.assertEqual(sorted(m["id"] for m in out), [1, 2])
        s2 = self.session()
        r = s2.post([{"jsonrpc": "2.0", "id": 1, "method": "ping"}])
        msgs = r.messages()
        self.assertEqual(msgs[0]["error"]["code"], -32600)


if __name__ == "__main__":
    main()
