"""The 2025-11-25 client features against a node serving the conformance pack:
URL-mode elicitation (elicitation/create mode "url", notifications/elicitation/
complete, the -32042 URLElicitationRequiredError), sampling with tools (tool_use,
then a follow-up with tool_result) and icons (serverInfo, tools, prompts,
resources, templates), driven by the official TypeScript SDK client
(tests/node/sdk_client_features.mjs), and the exact wire shapes over raw HTTP
on 2025 sessions and on the stateless 2026-07-28 revision."""
import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cmcp_harness import Node, main  # noqa: E402
from mcp_client import HttpConn, Session, free_port, node_config  # noqa: E402

SRC = os.environ.get("CMCP_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
NODE_DIR = os.path.join(SRC, "tests", "node")

PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP4z8"
       "DwHwAFAAH/VscvDQAAAABJRU5ErkJggg==")
ICONS = [{"src": PNG, "mimeType": "image/png", "sizes": ["1x1"], "theme": "light"},
         {"src": "https://example.com/icons/cmcp-dark.svg", "mimeType": "image/svg+xml",
          "sizes": ["any"], "theme": "dark"}]
WEATHER_TOOLS = [{"name": "get_weather", "description": "The current weather of a city",
                  "inputSchema": {"type": "object", "properties": {"city": {"type": "string"}},
                                  "required": ["city"]}}]
URLCAPS = {"elicitation": {"form": {}, "url": {}}}
CONNECT = "https://example.com/connect?elicitationId="


class Shared:
    node = None
    port = None


def setUpModule():
    http, tcp = free_port(), free_port()
    Shared.port = http
    Shared.node = Node(node_config(http, tcp, packs="core,conformance", shards=2))
    Shared.node.__enter__()


def tearDownModule():
    if Shared.node:
        Shared.node.__exit__(None, None, None)


def required_error(id_):
    return {"code": -32042, "message": "This request requires more information.",
            "data": {"elicitations": [{
                "mode": "url", "elicitationId": id_, "url": CONNECT + id_,
                "message": "Authorization is required to access your Example Co files."}]}}


class SdkClientFeaturesTest(unittest.TestCase):
    def test_sdk_client(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CMCP_")}
        p = subprocess.run(["node", os.path.join(NODE_DIR, "sdk_client_features.mjs"),
                            "http://127.0.0.1:%d/mcp" % Shared.port],
                           capture_output=True, text=True, timeout=90, env=env, cwd=NODE_DIR)
        if p.returncode != 0:
            self.fail("sdk client failed (%d):\nstdout: %s\nstderr: %s" % (
                p.returncode, p.stdout[-3000:], p.stderr[-3000:]))
        r = json.loads(p.stdout.strip().splitlines()[-1])
        self.assertEqual(r["protocol"], "2025-11-25")
        self.assertEqual(r["serverInfo"]["icons"], ICONS)
        self.assertEqual(r["icons"], {"tool": ICONS, "prompt": ICONS, "resource": ICONS,
                                      "template": ICONS})

        # URL mode: the request as sent, then the completion notification, then the result.
        self.assertEqual(r["elicitations"], [{
            "mode": "url", "elicitationId": "sdk-el-1", "url": CONNECT + "sdk-el-1",
            "message": "Please open the link to connect your Example Co account"}])
        self.assertEqual(r["urlElicitation"], {"isError": False, "structured": {
            "action": "accept", "elicitationId": "sdk-el-1", "completeNotified": True}})
        # -32042 reaches the SDK as its UrlElicitationRequiredError.
        req = r["required"]
        self.assertTrue(req["thrown"], req)
        self.assertTrue(req["urlElicitationRequiredError"], req)
        self.assertEqual(req["code"], -32042)
        id_ = req["elicitations"][0]["elicitationId"]
        self.assertRegex(id_, r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
        self.assertEqual(req["elicitations"], required_error(id_)["data"]["elicitations"])
        self.assertEqual(r["retry"], {"isError": False, "structured": {
            "connected": True, "elicitationId": id_, "completeNotified": True}})
        self.assertEqual(r["completions"], [{"elicitationId": "sdk-el-1"}, {"elicitationId": id_}])

        # Sampling with tools: round 1 offers the tool, round 2 carries its result.
        s = r["samplings"]
        self.assertEqual(len(s), 2, s)
        user = {"role": "user", "content": {"type": "text", "text": "Weather in Lyon?"}}
        self.assertEqual(s[0], {"messages": [user], "maxTokens": 200, "tools": WEATHER_TOOLS,
                                "toolChoice": {"mode": "auto"}})
        self.assertEqual(s[1], {"messages": [
            user,
            {"role": "assistant", "content": [{"type": "tool_use", "id": "call-1",
                                               "name": "get_weather", "input": {"city": "Lyon"}}]},
            {"role": "user", "content": [{"type": "tool_result", "toolUseId": "call-1", "content": [
                {"type": "text", "text": "Weather in Lyon: sunny, 22 C"}]}]}],
            "maxTokens": 200, "tools": WEATHER_TOOLS, "toolChoice": {"mode": "none"}})
        self.assertEqual(r["samplingTools"], {"isError": False, "structured": {
            "rounds": 2, "toolUses": [{"name": "get_weather", "input": {"city": "Lyon"}}],
            "answer": "It is sunny in Lyon.", "stopReason": "endTurn"}})


class RawWireTest(unittest.TestCase):
    def test_url_elicitation_required_on_the_wire(self):
        s = Session(Shared.port, version="2025-11-25", capabilities=URLCAPS)
        try:
            resp = s.tool("test_url_elicitation_required")
            self.assertNotIn("result", resp)
            id_ = resp["error"]["data"]["elicitations"][0]["elicitationId"]
            self.assertEqual(resp["error"], required_error(id_))
        finally:
            s.close()

    def test_form_only_client_gets_a_tool_error(self):
        s = Session(Shared.port, version="2025-11-25", capabilities={"elicitation": {}})
        try:
            for tool in ("test_url_elicitation", "test_url_elicitation_required"):
                resp = s.tool(tool)
                self.assertTrue(resp["result"]["isError"], resp)
                self.assertIn("'elicitation.url' capability", resp["result"]["content"][0]["text"])
            resp = s.tool("test_sampling_tools")
            self.assertTrue(resp["result"]["isError"], resp)
            self.assertIn("'sampling.tools' capability", resp["result"]["content"][0]["text"])
        finally:
            s.close()

    def test_no_icons_for_2025_06_18(self):
        s = Session(Shared.port, version="2025-06-18")
        try:
            self.assertNotIn("icons", s.init["result"]["serverInfo"])
            resp, _ = s.call("tools/list")
            self.assertEqual([t["name"] for t in resp["result"]["tools"] if "icons" in t], [])
        finally:
            s.close()

    def stateless(self, id_, method, params, caps):
        p = dict(params)
        p["_meta"] = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                      "io.modelcontextprotocol/clientCapabilities": caps}
        msg = {"jsonrpc": "2.0", "id": id_, "method": method, "params": p}
        h = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method}
        if "name" in params:
            h["Mcp-Name"] = params["name"]
        conn = HttpConn(Shared.port)
        try:
            r = conn.request("POST", msg, headers=h)
        finally:
            conn.close()
        return r.status, r.messages()[-1]

    def test_stateless_2026(self):
        status, body = self.stateless(1, "tools/list", {}, {})
        self.assertEqual(status, 200)
        res = body["result"]
        self.assertEqual(res["_meta"]["io.modelcontextprotocol/serverInfo"]["icons"], ICONS)
        self.assertEqual({t["name"]: t["icons"] for t in res["tools"] if "icons" in t},
                         {"test_icons": ICONS})
        status, body = self.stateless(2, "tools/call", {"name": "test_url_elicitation",
                                                        "arguments": {"elicitationId": "e-9"}},
                                      {"elicitation": {"form": {}}})
        self.assertEqual(status, 400)
        self.assertEqual(body["error"]["code"], -32021)
        self.assertEqual(body["error"]["data"], {"requiredCapabilities": {"elicitation": {"url": {}}}})
        status, body = self.stateless(3, "tools/call", {"name": "test_url_elicitation",
                                                        "arguments": {"elicitationId": "e-9"}},
                                      URLCAPS)
        self.assertEqual(status, 200)
        self.assertEqual(body["result"]["resultType"], "input_required")
        self.assertEqual(body["result"]["inputRequests"], {"url_elicitation": {
            "method": "elicitation/create",
            "params": {"mode": "url", "elicitationId": "e-9", "url": CONNECT + "e-9",
                       "message": "Please open the link to connect your Example Co account"}}})


if __name__ == "__main__":
    main()
