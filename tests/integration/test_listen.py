"""Change notifications and SSE streams: subscriptions/listen (protocol
2026-07-28) with raw HTTP and with the official v2 client, the priming event
that opens every session SSE stream (POST, standalone GET, resumed GET), and
a second plain GET that replays nothing an earlier GET stream was offered.

ListenTest runs a node with one shard. ListenAcrossShardsTest runs two: a
change one shard's engine makes (a resource update, a tool list change) must
reach the listen streams and the subscribed 2025 sessions of the other shard
too, each exactly once.
"""
import json
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cmcp_harness import Node, main  # noqa: E402
from mcp_client import PROTOCOL, HttpConn, Session, free_port, node_config  # noqa: E402

SRC = os.environ.get("CMCP_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
NODE_DIR = os.path.join(SRC, "tests", "node")
V = "2026-07-28"
SUB = "io.modelcontextprotocol/subscriptionId"
WATCHED = "test://watched-resource"
REQUEST_TIMEOUT_MS = 1500


def listen_request(id_, notifications):
    msg = {"jsonrpc": "2.0", "id": id_, "method": "subscriptions/listen", "params": {
        "notifications": notifications,
        "_meta": {"io.modelcontextprotocol/protocolVersion": V,
                  "io.modelcontextprotocol/clientCapabilities": {}}}}
    return msg, {"MCP-Protocol-Version": V, "Mcp-Method": "subscriptions/listen"}


class ListenTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.http, tcp = free_port(), free_port()
        # a short request timeout: a listen stream must outlive it
        conf = node_config(cls.http, tcp, packs="core,conformance", shards=1)
        conf = conf.replace("[listener]\n", "[listener]\nrequest_timeout_ms = %d\n" % REQUEST_TIMEOUT_MS)
        cls.node = Node(conf)
        cls.node.__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.node.__exit__(None, None, None)

    def session(self):
        s = Session(self.http)
        self.addCleanup(s.close)
        return s

    def conn(self):
        c = HttpConn(self.http)
        self.addCleanup(c.close)
        return c

    def assertPriming(self, ev, want_id=None):
        self.assertIn("id", ev, ev)
        self.assertEqual(ev["data"], "", ev)
        if want_id is not None:
            self.assertEqual(ev["id"], want_id)

    # ---- subscriptions/listen ----

    def test_discover_advertises_what_listen_delivers(self):
        msg = {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": {
            "io.modelcontextprotocol/protocolVersion": V,
            "io.modelcontextprotocol/clientCapabilities": {}}}}
        r = self.conn().request("POST", msg, headers={"MCP-Protocol-Version": V,
                                                      "Mcp-Method": "server/discover"})
        caps = r.messages()[-1]["result"]["capabilities"]
        self.assertEqual(caps["tools"], {"listChanged": True})
        self.assertEqual(caps["resources"], {"subscribe": True, "listChanged": True})

    def test_listen_raw_http(self):
        """Ack first, then only the notifications each stream asked for, each stamped with
        its listen request's id; another client's tools/call causes them, after the
        listener's request timeout has passed."""
        s = self.session()
        tools_only = self.conn()
        msg2, h2 = listen_request("only-tools", {"toolsListChanged": True})
        tools_only.send_raw((("POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              "Accept: application/json, text/event-stream\r\n"
                              "Content-Type: application/json\r\n") +
                             "".join("%s: %s\r\n" % kv for kv in h2.items()) +
                             "Content-Length: %d\r\n\r\n" % len(json.dumps(msg2)) +
                             json.dumps(msg2)).encode())
        acted = []

        def on_event(ev):
            m = json.loads(ev["data"]) if ev.get("data") else None
            if m and m.get("method") == "notifications/subscriptions/acknowledged" and not acted:
                acted.append(1)
                time.sleep(REQUEST_TIMEOUT_MS / 1000 + 0.5)  # the stream outlives it
                for tool in ("test_toggle_dynamic_tool", "test_update_watched_resource",
                             "test_toggle_dynamic_tool"):
                    self.assertFalse(s.tool(tool).get("error"))

        msg, h = listen_request(7, {"toolsListChanged": True, "promptsListChanged": False,
                                    "resourceSubscriptions": [WATCHED, "test://other"]})
        r = self.conn().request("POST", msg, headers=h, timeout=15, max_events=4,
                                on_event=on_event)
        self.assertEqual(r.status, 200)
        self.assertTrue(r.headers["content-type"].startswith("text/event-stream"))
        msgs = r.messages()
        self.assertEqual(len(msgs), 4, r.events)
        ack, first, upd, second = msgs
        self.assertEqual(ack["method"], "notifications/subscriptions/acknowledged")
        self.assertEqual(ack["params"]["notifications"], {
            "toolsListChanged": True, "resourceSubscriptions": [WATCHED, "test://other"]})
        self.assertEqual(first["method"], "notifications/tools/list_changed")
        self.assertEqual(upd["method"], "notifications/resources/updated")
        self.assertEqual(upd["params"]["uri"], WATCHED)
        self.assertEqual(second["method"], "notifications/tools/list_changed")
        for m in msgs:
            self.assertEqual(m["params"]["_meta"][SUB], 7, m)
            self.assertNotIn("id", m)
        # the stream that asked for tools only saw no resources/updated
        r2 = tools_only.read_response(timeout=10, max_events=3)
        got = [m["method"] for m in r2.messages()]
        self.assertEqual(got, ["notifications/subscriptions/acknowledged",
                               "notifications/tools/list_changed",
                               "notifications/tools/list_changed"])
        self.assertEqual(r2.messages()[1]["params"]["_meta"][SUB], "only-tools")

    def test_listen_bad_filter_is_invalid_params(self):
        msg, h = listen_request(3, {"toolsListChanged": "yes"})
        r = self.conn().request("POST", msg, headers=h)
        self.assertEqual(r.status, 400)
        self.assertEqual(r.messages()[-1]["error"]["code"], -32602)

    def test_v2_client_listen(self):
        """The official v2 client's listen() hears a tools list change and a resource
        update that a 2025 session's tool calls make."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CMCP_")}
        p = subprocess.Popen(["node", os.path.join(NODE_DIR, "v2_listen.mjs"),
                              "http://127.0.0.1:%d/mcp" % self.http, "20000"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env, cwd=NODE_DIR)
        try:
            ready = p.stdout.readline()
            if not ready:  # (the message reads stderr, which waits for the exit: only here)
                self.fail("v2 client ended before listening: %s" % p.stderr.read()[-2000:])
            ready = json.loads(ready)
            self.assertTrue(ready.get("ready"), ready)
            self.assertTrue(ready["honoredFilter"].get("toolsListChanged"), ready)
            self.assertEqual(ready["honoredFilter"].get("resourceSubscriptions"), [WATCHED])
            s = self.session()
            self.assertFalse(s.tool("test_toggle_dynamic_tool").get("error"))
            self.assertFalse(s.tool("test_update_watched_resource").get("error"))
            out, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        lines = [x for x in out.splitlines() if x.strip()]
        self.assertTrue(lines, "no report: %s" % err[-2000:])
        report = json.loads(lines[-1])
        self.assertTrue(report["ok"], (report, err[-2000:]))
        self.assertGreaterEqual(report["toolsListChanged"], 1)
        self.assertIn(WATCHED, report["resourcesUpdated"])
        # the change was real: the tool list the client reads now shows it (or its removal,
        # if an earlier test toggled it in)
        self.assertIsNotNone(report["toolsAfter"])

    # ---- priming events and one stream per message ----

    def test_post_stream_starts_with_priming_and_resumes_from_it(self):
        s = self.session()
        c = HttpConn(self.http)
        got = c.request("POST", {"jsonrpc": "2.0", "id": 41, "method": "tools/call", "params": {
            "name": "sleep", "arguments": {"ms": 600}, "_meta": {"progressToken": 1}}},
            headers=s.headers(), max_events=1)
        c.close()  # lost right after the priming event
        self.assertEqual(len(got.events), 1)
        prime = got.events[0]
        self.assertPriming(prime)
        self.assertTrue(prime["id"].endswith("-0"), prime)
        h = dict(s.headers())
        h["Last-Event-ID"] = prime["id"]
        r = self.conn().request("GET", headers=h, timeout=10)
        self.assertEqual(r.status, 200)
        self.assertPriming(r.events[0], prime["id"])
        msgs = r.messages()
        self.assertTrue(any(m.get("method") == "notifications/progress" for m in msgs), msgs)
        self.assertEqual([m["id"] for m in msgs if "id" in m], [41])

    def _open_get(self, s):
        g = self.conn()
        g.send_raw(("GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                    f"Mcp-Session-Id: {s.sid}\r\nMCP-Protocol-Version: {PROTOCOL}\r\n\r\n").encode())
        return g

    def _events_until(self, g, pred, limit=20, timeout=10.0):
        """Reads g's SSE events until pred(message) (at most limit events, timeout seconds)."""
        seen = []
        deadline = time.monotonic() + timeout

        def on_event(ev):
            seen.append(ev)
            m = json.loads(ev["data"]) if ev.get("data") else None
            if m is not None and pred(m):
                raise StopIteration

        try:
            g.read_response(timeout=max(0.1, deadline - time.monotonic()), max_events=limit,
                            on_event=on_event)
        except StopIteration:
            pass
        return seen

    def test_second_plain_get_repeats_nothing(self):
        s = self.session()

        def list_changed(m):
            return m.get("method") == "notifications/resources/list_changed"

        # a standalone notification before any GET: the first GET replays it
        self.assertFalse(s.tool("kv_set", {"key": "a", "value": 1}).get("isError"))
        g1 = self._open_get(s)
        ev1 = self._events_until(g1, list_changed)
        self.assertPriming(ev1[0])
        self.assertEqual(ev1[0]["id"].split("-")[0], "0")
        first = [e for e in ev1 if e["data"] and list_changed(json.loads(e["data"]))]
        self.assertEqual(len(first), 1, ev1)
        g1.close()
        # a second plain GET: the notification the first delivered must not come again
        g2 = self._open_get(s)
        time.sleep(0.2)  # the GET is registered before its head is read; give it a moment
        self.assertFalse(s.tool("kv_set", {"key": "b", "value": 2}).get("isError"))
        ev2 = self._events_until(g2, list_changed)
        self.assertPriming(ev2[0])
        ids = [e["id"] for e in ev2 if e["data"]]
        self.assertNotIn(first[0]["id"], ids, ev2)
        self.assertEqual(len(ids), 1, ev2)
        # resuming the first stream from its priming id still replays it (Last-Event-ID)
        h = dict(s.headers())
        h["Last-Event-ID"] = ev1[0]["id"]
        g3 = self.conn()
        g3.send_raw(("GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n" +
                     "".join("%s: %s\r\n" % kv for kv in h.items()) + "\r\n").encode())
        ev3 = self._events_until(g3, list_changed)
        self.assertPriming(ev3[0], ev1[0]["id"])
        self.assertEqual(ev3[1]["id"], first[0]["id"], ev3)


class ListenAcrossShardsTest(unittest.TestCase):
    """A node is one server to its clients, whatever shard a stream lands on."""

    @classmethod
    def setUpClass(cls):
        cls.http, tcp = free_port(), free_port()
        conf = node_config(cls.http, tcp, packs="core,conformance", shards=2)
        cls.node = Node(conf)
        cls.node.__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.node.__exit__(None, None, None)

    def conn(self):
        c = HttpConn(self.http)
        self.addCleanup(c.close)
        return c

    def sessions_on_both_shards(self):
        """One 2025 session on shard 0 and one on shard 1 (a session id names its shard)."""
        by_shard = {}
        for _ in range(16):
            s = Session(self.http)
            self.addCleanup(s.close)
            by_shard.setdefault(s.sid.split("-")[0], s)
            if len(by_shard) == 2:
                return by_shard["0"], by_shard["1"]
        self.fail("16 new sessions all landed on shards %s" % sorted(by_shard))

    def test_every_change_reaches_every_shard_once(self):
        s0, s1 = self.sessions_on_both_shards()
        # a 2025 session on shard 0 subscribes to the watched resource and opens its GET stream
        resp, _ = s0.call("resources/subscribe", {"uri": WATCHED})
        self.assertNotIn("error", resp)
        g = self.conn()
        g.send_raw(("GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                    f"Mcp-Session-Id: {s0.sid}\r\nMCP-Protocol-Version: {PROTOCOL}\r\n\r\n"
                    ).encode())
        # updates made alternately on both shards, once the listen stream is acknowledged
        callers = [s0, s1, s1, s0, s1, s0]
        acted = []

        def on_event(ev):
            m = json.loads(ev["data"]) if ev.get("data") else None
            if m and m.get("method") == "notifications/subscriptions/acknowledged" and not acted:
                acted.append(1)
                time.sleep(0.2)  # the GET stream above is registered too
                for s in callers:
                    self.assertFalse(s.tool("test_update_watched_resource").get("error"))
                self.assertFalse(s1.tool("test_toggle_dynamic_tool").get("error"))
                self.assertFalse(s1.tool("test_toggle_dynamic_tool").get("error"))

        msg, h = listen_request("x", {"toolsListChanged": True, "resourceSubscriptions": [WATCHED]})
        r = self.conn().request("POST", msg, headers=h, timeout=15, max_events=1 + 6 + 2,
                                on_event=on_event)
        got = [m["method"] for m in r.messages()]
        self.assertEqual(got, ["notifications/subscriptions/acknowledged"] +
                         ["notifications/resources/updated"] * 6 +
                         ["notifications/tools/list_changed"] * 2, got)
        # the subscribed session on shard 0 heard all six updates, the three made on shard 1
        # included, and both list changes: each once (no echo between the shards)
        seen = []

        def on_get(ev):
            m = json.loads(ev["data"]) if ev.get("data") else None
            if m and m.get("method") in ("notifications/resources/updated",
                                         "notifications/tools/list_changed"):
                seen.append((m["method"], m.get("params", {}).get("uri")))

        try:  # reads for 3 s: whatever came twice would be seen
            g.read_response(timeout=3, max_events=40, on_event=on_get)
        except TimeoutError:
            pass
        self.assertEqual(seen, [("notifications/resources/updated", WATCHED)] * 6 +
                         [("notifications/tools/list_changed", None)] * 2, seen)

if __name__ == "__main__":
    main()
