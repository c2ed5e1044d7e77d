"""The stateless 2026-07-28 MCP revision on the same /mcp endpoint as the 2025
session protocol: raw HTTP checks (server/discover, per-request _meta, header
/body agreement and its -32020, -32021, -32022, 404 for unknown methods,
resultType and cache hints, input_required rounds that any shard resumes,
GET/DELETE 405) and the official v2 client (@modelcontextprotocol/client)
pinned to 2026-07-28, in auto mode, and in 2025 mode, against one node.

The tests marked @needs_routing need the listener to route stateless POSTs
to a shard (mcp_is_stateless_request -> mcp_handle_stateless). Until
ROUTING_WIRED is True they are skipped when server/discover does not answer
over HTTP; once it is True they must pass.
"""
import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cmcp_harness import Node, main  # noqa: E402
from mcp_client import HttpConn, Session, free_port, node_config  # noqa: E402

ROUTING_WIRED = True  # flip when the listener/shard routing lands: then nothing may skip

SRC = os.environ.get("CMCP_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
NODE_DIR = os.path.join(SRC, "tests", "node")
V = "2026-07-28"
ALLCAPS = {"sampling": {}, "elicitation": {}, "roots": {}}


def meta(caps=None, version=V, **extra):
    m = {"io.modelcontextprotocol/protocolVersion": version,
         "io.modelcontextprotocol/clientInfo": {"name": "cmcp-stateless-test", "version": "1"},
         "io.modelcontextprotocol/clientCapabilities": caps if caps is not None else {}}
    m.update(extra)
    return m


def request(id_, method, params=None, caps=None):
    p = dict(params or {})
    p.setdefault("_meta", meta(caps))
    return {"jsonrpc": "2.0", "id": id_, "method": method, "params": p}


def std_headers(msg, **override):
    """The headers a conforming 2026-07-28 client sends for msg (None drops one)."""
    h = {"MCP-Protocol-Version": V, "Mcp-Method": msg.get("method")}
    params = msg.get("params") or {}
    name = params.get("name") if msg.get("method") in ("tools/call", "prompts/get") else (
        params.get("uri") if msg.get("method") == "resources/read" else None)
    if name is not None:
        h["Mcp-Name"] = name
    h.update(override)
    return h


class StatelessNode:
    """One node (two shards) shared by the tests of this module."""
    node = None
    port = None
    wired = None
    why = ""


def setUpModule():
    http, tcp = free_port(), free_port()
    StatelessNode.port = http
    StatelessNode.node = Node(node_config(http, tcp, packs="core,conformance", shards=2))
    StatelessNode.node.__enter__()
    conn = HttpConn(http)
    try:
        msg = request(1, "server/discover")
        r = conn.request("POST", msg, headers=std_headers(msg))
        body = r.messages()[-1] if r.messages() else {}
        StatelessNode.wired = r.status == 200 and "result" in body
        StatelessNode.why = "server/discover over HTTP got %d %s" % (r.status, json.dumps(body)[:200])
    finally:
        conn.close()


def tearDownModule():
    if StatelessNode.node:
        StatelessNode.node.__exit__(None, None, None)


def needs_routing(fn):
    def wrapper(self, *a, **kw):
        if not StatelessNode.wired:
            if ROUTING_WIRED:
                self.fail("stateless routing is wired but " + StatelessNode.why)
            self.skipTest("stateless routing not wired yet (" + StatelessNode.why + ")")
        return fn(self, *a, **kw)
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def run_v2(mode=None):
    args = ["node", os.path.join(NODE_DIR, "v2_client.mjs"), "http://127.0.0.1:%d/mcp" % StatelessNode.port]
    if mode:
        args.append(mode)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMCP_")}
    p = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, cwd=NODE_DIR)
    try:
        report = json.loads(p.stdout)
    except ValueError:
        raise AssertionError("v2 client printed no report (%d):\nstdout: %s\nstderr: %s" % (
            p.returncode, p.stdout[-3000:], p.stderr[-3000:]))
    return p.returncode, report, p.stderr


class StatelessHttpTest(unittest.TestCase):
    def setUp(self):
        self.conn = HttpConn(StatelessNode.port)

    def tearDown(self):
        self.conn.close()

    def post(self, msg, **headers):
        h = std_headers(msg) if isinstance(msg, dict) else {}
        h.update(headers)
        return self.conn.request("POST", msg, headers=h)

    def answer(self, r, id_=None):
        msgs = [m for m in r.messages() if "result" in m or "error" in m]
        self.assertTrue(msgs, r)
        if id_ is not None:
            self.assertEqual(msgs[-1].get("id"), id_, r)
        return msgs[-1]

    def error(self, r, status, code, id_):
        self.assertEqual(r.status, status, r)
        body = self.answer(r, id_)
        self.assertEqual(body["error"]["code"], code, body)
        return body["error"]

    # -- the HTTP policy's part (needs 2026-07-28 among the listener's versions)

    @needs_routing
    def test_get_and_delete_are_405(self):
        for method in ("GET", "DELETE"):
            r = self.conn.request(method, headers={"MCP-Protocol-Version": V,
                                                   "Accept": "text/event-stream"})
            self.assertEqual(r.status, 405, r)
            self.assertIn("POST", r.headers.get("allow", ""), r)

    @needs_routing
    def test_unsupported_version_header_is_400(self):
        msg = request(301, "server/discover")
        msg["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = "v999.0.0"
        r = self.post(msg, **{"MCP-Protocol-Version": "v999.0.0"})
        self.assertEqual(r.status, 400, r)
        err = self.answer(r, 301)["error"]  # errors carry the request's id
        self.assertEqual(err["data"]["requested"], "v999.0.0")
        self.assertEqual(err["code"], -32022, err)
        self.assertIn(V, err["data"]["supported"])

    @needs_routing
    def test_malformed_body_is_a_parse_error(self):
        # the shard parses a stateless request once; text that is not JSON is answered -32700
        # with what jansson said and where, and the node goes on serving
        r = self.conn.request("POST", b'{"jsonrpc":"2.0","id":5,"method":"tools/list",',
                              headers={"MCP-Protocol-Version": V, "Mcp-Method": "tools/list"})
        self.assertEqual(r.status, 400, r)
        msgs = r.messages()
        self.assertTrue(msgs and msgs[-1]["error"]["code"] == -32700, r)
        self.assertIn("Parse error", msgs[-1]["error"]["message"])
        self.assertIn("line 1", msgs[-1]["error"]["message"])
        ok = self.post(request(6, "tools/list"))
        self.assertEqual(ok.status, 200, ok)
        self.assertIn("tools", self.answer(ok, 6)["result"])

    def test_session_protocol_still_served(self):
        s = Session(StatelessNode.port, capabilities=ALLCAPS)
        try:
            resp = s.tool("echo", {"text": "2025"})
            self.assertEqual(resp["result"]["content"][0]["text"], "2025")
            self.assertNotIn("resultType", resp["result"])
        finally:
            s.close()

    # -- stateless requests (routing needed) --------------------------------

    @needs_routing
    def test_discover(self):
        msg = request(7, "server/discover")
        r = self.post(msg)
        self.assertEqual(r.status, 200, r)
        self.assertNotIn("mcp-session-id", r.headers)
        res = self.answer(r, 7)["result"]
        self.assertEqual(res["resultType"], "complete")
        self.assertIn(V, res["supportedVersions"])
        self.assertIn("2025-11-25", res["supportedVersions"])
        self.assertIn("tools", res["capabilities"])
        self.assertEqual(res["_meta"]["io.modelcontextprotocol/serverInfo"]["name"], "cmcp")
        self.assertIsInstance(res["ttlMs"], int)
        self.assertIn(res["cacheScope"], ("public", "private"))

    @needs_routing
    def test_meta_required(self):
        for i, params in enumerate([{}, {"_meta": {"io.modelcontextprotocol/clientCapabilities": {}}},
                                    {"_meta": {"io.modelcontextprotocol/protocolVersion": V}}]):
            msg = {"jsonrpc": "2.0", "id": 100 + i, "method": "server/discover", "params": params}
            self.error(self.post(msg), 400, -32602, 100 + i)

    @needs_routing
    def test_header_mismatch(self):
        msg = request(11, "tools/list")
        self.error(self.post(msg, **{"Mcp-Method": "prompts/list"}), 400, -32020, 11)
        self.error(self.post(msg, **{"Mcp-Method": None}), 400, -32020, 11)
        self.error(self.post(msg, **{"Mcp-Method": "TOOLS/LIST"}), 400, -32020, 11)
        call = request(12, "tools/call", {"name": "echo", "arguments": {"text": "x"}})
        self.error(self.post(call, **{"Mcp-Name": "wrong_tool_name"}), 400, -32020, 12)
        self.error(self.post(call, **{"Mcp-Name": None}), 400, -32020, 12)
        bad = request(13, "server/discover")
        bad["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = "v999.0.0"
        self.error(self.post(bad), 400, -32020, 13)  # header says 2026-07-28, body does not
        ok = self.post(call, **{"mcp-name": "=?base64?ZWNobw==?=", "Mcp-Name": None})
        self.assertEqual(ok.status, 200, ok)
        self.assertEqual(self.answer(ok, 12)["result"]["content"][0]["text"], "x")

    def test_custom_param_headers(self):
        # SEP-2243: test_custom_header marks its region argument "x-mcp-header": Region, so
        # a request mirrors it in Mcp-Param-Region; the listener passes the header through
        # (also to a shard or member it forwards to) and the engine checks it
        call = request(21, "tools/call", {"name": "test_custom_header",
                                          "arguments": {"region": "Hello"}})
        ok = self.post(call, **{"Mcp-Param-Region": "Hello"})
        self.assertEqual(ok.status, 200, ok)
        self.assertEqual(self.answer(ok, 21)["result"]["content"][0]["text"], "region: Hello")
        ok = self.post(call, **{"mcp-param-region": "=?base64?SGVsbG8=?="})  # any case, base64
        self.assertEqual(ok.status, 200, ok)
        e = self.error(self.post(call, **{"Mcp-Param-Region": "Goodbye"}), 400, -32020, 21)
        self.assertIn("Mcp-Param-Region", e["message"])
        self.error(self.post(call, **{"Mcp-Param-Region": "=?base64?SGVsbG8?="}), 400, -32020, 21)
        self.error(self.post(call), 400, -32020, 21)  # the header left out
        listed = self.answer(self.post(request(22, "tools/list")), 22)["result"]["tools"]
        region = [t for t in listed if t["name"] == "test_custom_header"][0]
        self.assertEqual(region["inputSchema"]["properties"]["region"]["x-mcp-header"], "Region")

    @needs_routing
    def test_removed_and_unknown_methods_are_404(self):
        for i, method in enumerate(["initialize", "ping", "logging/setLevel", "resources/subscribe",
                                    "unknown/method"]):
            self.error(self.post(request(500 + i, method)), 404, -32601, 500 + i)

    @needs_routing
    def test_results_carry_result_type(self):
        r = self.post(request(21, "tools/list"))
        res = self.answer(r, 21)["result"]
        self.assertEqual(res["resultType"], "complete")
        self.assertIn("ttlMs", res)
        self.assertIn("cacheScope", res)
        self.assertIn("test_input_required_result_elicitation", [t["name"] for t in res["tools"]])
        r = self.post(request(22, "tools/call", {"name": "echo", "arguments": {"text": "hi"}}))
        res = self.answer(r, 22)["result"]
        self.assertEqual(res["resultType"], "complete")
        self.assertEqual(res["structuredContent"], {"text": "hi"})
        r = self.post(request(23, "resources/read", {"uri": "test://nope"}))
        self.error(r, 400, -32602, 23)  # 2026-07-28: not -32002

    @needs_routing
    def test_session_id_is_ignored(self):
        msg = request(24, "tools/call", {"name": "echo", "arguments": {"text": "no session"}})
        r = self.post(msg, **{"Mcp-Session-Id": "9-doesnotexist"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.answer(r, 24)["result"]["content"][0]["text"], "no session")

    @needs_routing
    def test_missing_capability(self):
        r = self.post(request(401, "tools/call", {"name": "test_missing_capability", "arguments": {}}))
        err = self.error(r, 400, -32021, 401)
        self.assertEqual(err["data"]["requiredCapabilities"], {"sampling": {}})

    @needs_routing
    def test_input_required_round_trips_across_shards(self):
        """Three rounds on fresh connections: round robin puts them on different shards,
        which resume from the requestState alone (the shards share its key)."""
        tool = "test_input_required_result_multi_round"
        seen_states = []
        answers = [None, {"step1": {"action": "accept", "content": {"name": "Ada"}}},
                   {"step2": {"action": "accept", "content": {"color": "green"}}}]
        state = None
        for rnd, ans in enumerate(answers):
            params = {"name": tool, "arguments": {}}
            if ans:
                params["inputResponses"] = ans
            if state:
                params["requestState"] = state
            conn = HttpConn(StatelessNode.port)
            try:
                msg = request(600 + rnd, "tools/call", params, caps=ALLCAPS)
                r = conn.request("POST", msg, headers=std_headers(msg))
            finally:
                conn.close()
            self.assertEqual(r.status, 200, r)
            res = self.answer(r, 600 + rnd)["result"]
            if rnd < 2:
                self.assertEqual(res["resultType"], "input_required", res)
                self.assertIn("step%d" % (rnd + 1), res["inputRequests"])
                state = res["requestState"]
                seen_states.append(state)
            else:
                self.assertEqual(res["resultType"], "complete", res)
                self.assertEqual(res["content"][0]["text"], "Hello Ada, your favorite color is green.")
        self.assertNotEqual(seen_states[0], seen_states[1])
        # A tampered state is refused.
        params = {"name": tool, "arguments": {}, "inputResponses": answers[2],
                  "requestState": state + "-TAMPERED"}
        self.error(self.post(request(603, "tools/call", params, caps=ALLCAPS)), 400, -32602, 603)

    @needs_routing
    def test_async_call_streams_progress(self):
        msg = request(31, "tools/call", {"name": "test_tool_with_progress", "arguments": {},
                                         "_meta": meta(progressToken="p31")})
        r = self.post(msg)
        self.assertEqual(r.status, 200, r)
        msgs = r.messages()
        progress = [m for m in msgs if m.get("method") == "notifications/progress"]
        self.assertGreaterEqual(len(progress), 1, msgs)
        self.assertFalse([m for m in msgs if "method" in m and "id" in m], msgs)  # no requests
        res = self.answer(r, 31)["result"]
        self.assertEqual(res["resultType"], "complete")
        self.assertEqual(res["content"][0]["text"], "Tool with progress executed successfully")

    @needs_routing
    def test_no_log_messages_without_log_level(self):
        r = self.post(request(32, "tools/call", {"name": "test_logging_tool", "arguments": {}}))
        self.assertFalse([m for m in r.messages() if m.get("method") == "notifications/message"], r)
        r = self.post(request(33, "tools/call", {"name": "test_logging_tool", "arguments": {},
                                                 "_meta": meta(**{"io.modelcontextprotocol/logLevel": "info"})}))
        logs = [m for m in r.messages() if m.get("method") == "notifications/message"]
        self.assertEqual(len(logs), 3, r)


class V2ClientTest(unittest.TestCase):
    @needs_routing
    def test_pinned_2026(self):
        rc, report, err = run_v2()
        self.assertTrue(report["ok"], json.dumps(report, indent=1) + err[-2000:])
        self.assertEqual(rc, 0)
        self.assertEqual(report["era"], "modern")
        self.assertEqual(report["protocolVersion"], V)
        for step in ("discover", "tools_list", "call_echo", "input_required_elicitation",
                     "input_required_sampling", "input_required_multi_round",
                     "input_required_prompt", "missing_capability"):
            self.assertTrue(report["steps"][step]["ok"], report["steps"].get(step))

    def test_auto_probes_and_picks_an_era(self):
        """A client that speaks both eras: modern once routing is wired, legacy before."""
        rc, report, err = run_v2("fallback")
        self.assertTrue(report["ok"], json.dumps(report, indent=1) + err[-2000:])
        self.assertEqual(report["era"], "modern" if StatelessNode.wired else "legacy", report)
        if ROUTING_WIRED:
            self.assertEqual(report["era"], "modern", report)

    def test_2025_client_on_the_same_endpoint(self):
        rc, report, err = run_v2("legacy")
        self.assertTrue(report["ok"], json.dumps(report, indent=1) + err[-2000:])
        self.assertEqual(report["era"], "legacy")
        self.assertEqual(report["protocolVersion"], "2025-11-25")
        self.assertTrue(report["sessionId"])


if __name__ == "__main__":
    main()
