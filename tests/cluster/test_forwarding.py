#!/usr/bin/env python3
"""
Any node serves any session (docs/cluster.md, "Any node serves any session"):
three real nodes on loopback. A session made on one node is used through every
node in turn, over Streamable HTTP (POST, a streamed response, a standalone GET
stream and Last-Event-ID resumption through a node that does not own it); TCP
and WebSocket sessions keep working after their node gives up ownership
(drain), their requests forwarded to the new owner; the official TypeScript SDK
client joins a session through a node that does not own it. A load balancer in
front needs no sticky sessions.
"""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cluster_harness import Cluster  # noqa: E402
from cmcp_harness import Timed, main, wait_for  # noqa: E402
from mcp_client import PROTOCOL, HttpConn, Session, Tcp, Ws  # noqa: E402

SRC = os.environ.get("CMCP_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
NODE_DIR = os.path.join(SRC, "tests", "node")
RF2 = "replication_factor = 2"


def owner_of(st, partition):
    return int(st["map"]["nodes"][st["map"]["owners"][partition]]["id"][1:])


def text_of(resp):
    assert "result" in resp, resp
    return resp["result"]["content"][0]["text"]


def kv_value(s, key):
    resp = s.tool("kv_get", {"key": key})
    sc = resp.get("result", {}).get("structuredContent") or {}
    return sc.get("value"), resp


def ws_recv_for(w, id_):
    """WebSocket messages until the response with this id (notifications may come first)."""
    for _ in range(50):
        m = w.recv()
        if m.get("id") == id_ and ("result" in m or "error" in m):
            return m
    raise AssertionError("no response %r among 50 messages" % id_)


class ForwardingTest(Timed):
    def at(self, s, c, node):
        """Points session s at node's HTTP port (a fresh connection)."""
        s.conn.close()
        s.conn = HttpConn(c.http[node])
        s.port = c.http[node]

    def test_http_session_through_every_node(self):
        with Cluster(3, extra=RF2, metrics=True, admin=True) as c:
            st = c.wait_formed()
            s = Session(c.http[0])
            part = int(s.sid.split("-")[0])
            owner = owner_of(st, part)
            self.assertEqual(owner, 0, "a session is made on a partition its node owns")
            # every node in turn: each write visible through the next
            for n, node in enumerate([1, 2, 0, 2, 1]):
                self.at(s, c, node)
                r = s.tool("kv_set", {"key": "k", "value": "v%d" % n})
                self.assertIn("result", r, (node, r))
                self.at(s, c, (node + 1) % 3)
                value, got = kv_value(s, "k")
                self.assertEqual(value, "v%d" % n, got)
            # the admin shell of any member lists it with its owner and replica
            r = c.admin_cmd(2, "sessions", "--cluster")
            mine = [x for x in r["sessions"] if x["sid"] == s.sid]
            self.assertEqual(len(mine), 1, r)
            self.assertEqual(mine[0]["owner"], "n0")
            self.assertEqual(len(mine[0]["replicas"]), 1, mine)
            self.assertNotIn("n0", mine[0]["replicas"])
            self.assertFalse([m for m in r["members"] if "error" in m], r["members"])
            wait_for(lambda: c.metric(1, "cmcp_forwarded_requests_total") > 0 and
                     c.metric(2, "cmcp_forwarded_requests_total") > 0, 5, 0.1,
                     what="forwarded requests counted")

            # a streamed response (progress events) through a node that does not own it
            self.at(s, c, 1)
            resp, r = s.call("tools/call", {"name": "sleep", "arguments": {"ms": 300},
                                            "_meta": {"progressToken": "f1"}})
            self.assertEqual(r.headers["content-type"].split(";")[0], "text/event-stream")
            self.assertGreaterEqual(
                len([m for m in r.messages() if m.get("method") == "notifications/progress"]), 2)
            self.assertIn("result", resp)

            # Last-Event-ID: the stream is cut through n1 and resumed through n2 while the
            # request still runs at the owner. The owner moves the running request to the
            # link the resume came by, so one GET replays what is stored past the id it names
            # and goes on live until the response
            conn = HttpConn(c.http[1])
            got = conn.request("POST", {"jsonrpc": "2.0", "id": 77, "method": "tools/call",
                                        "params": {"name": "sleep", "arguments": {"ms": 1200},
                                                   "_meta": {"progressToken": 7}}},
                               headers=s.headers(), max_events=2)
            conn.close()
            last = got.events[-1]["id"]
            stream = last.split("-")[0]
            conn = HttpConn(c.http[2])
            h = dict(s.headers())
            h["Last-Event-ID"] = last
            t0 = time.monotonic()
            r = conn.request("GET", headers=h, timeout=10)
            conn.close()
            self.assertEqual(r.status, 200)
            # (a stream's priming event, id and no data, carries no message)
            events = [e for e in r.events if e.get("data")]
            final = [m for e in events for m in [json.loads(e["data"])] if m.get("id") == 77]
            self.assertEqual(len(final), 1, "one resumed GET through n2 carries the stream to its "
                             "response: %r" % [e["id"] for e in events])
            print("  resumed through n2: %d events live, the response after %.2f s"
                  % (len(events), time.monotonic() - t0))
            posted = [e for e in got.events if e.get("data")]
            ids = [e["id"] for e in posted + events]
            self.assertEqual(len(ids), len(set(ids)), ids)  # nothing twice
            self.assertTrue(all(i.split("-")[0] == stream for i in ids), ids)
            seqs = [int(i.split("-")[1]) for i in ids]
            self.assertEqual(seqs, sorted(seqs), ids)
            self.assertEqual(len(final), 1, events)
            self.assertIn("result", final[0])
            progress = [e for e in posted + events
                        if json.loads(e["data"]).get("method") == "notifications/progress"]
            self.assertGreaterEqual(len(progress), 3, ids)

            # the standalone GET stream through n2 gets what a write through n1 caused
            self.at(s, c, 0)
            resp, _ = s.call("resources/subscribe", {"uri": "kv://colour"})
            self.assertIn("result", resp)
            g = HttpConn(c.http[2])
            g.send_raw(("GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                        "Mcp-Session-Id: %s\r\nMCP-Protocol-Version: %s\r\n\r\n"
                        % (s.sid, PROTOCOL)).encode())
            status, _ = g.read_head()
            self.assertEqual(status, 200)
            time.sleep(0.2)  # the stream is registered at the owner before the write
            self.at(s, c, 1)
            self.assertIn("result", s.tool("kv_set", {"key": "colour", "value": "teal"}))
            seen = []
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any(
                    m.get("method") == "notifications/resources/updated" for m in seen):
                _, block = g.read_chunk(deadline)
                for line in block.decode(errors="replace").splitlines():
                    if line.startswith("data:"):
                        try:
                            seen.append(json.loads(line[5:]))
                        except ValueError:
                            pass
            g.close()
            self.assertTrue(any(m.get("method") == "notifications/resources/updated" and
                                m["params"]["uri"] == "kv://colour" for m in seen), seen)

            # unknown sessions are still 404, whichever node is asked
            bogus = "%d-%s" % (part, "a" * 26)
            conn = HttpConn(c.http[1])
            r = conn.request("POST", {"jsonrpc": "2.0", "id": 1, "method": "ping"},
                             headers={"Mcp-Session-Id": bogus, "MCP-Protocol-Version": PROTOCOL})
            conn.close()
            self.assertEqual(r.status, 404, r)

            # DELETE through a non-owner ends it at the owner
            self.at(s, c, 2)
            r = s.conn.request("DELETE", headers=s.headers())
            self.assertIn(r.status, (200, 202, 204), r)
            self.at(s, c, 1)
            r = s.post({"jsonrpc": "2.0", "id": 5, "method": "ping"})
            self.assertEqual(r.status, 404, r)

    def test_line_sessions_follow_a_drain(self):
        """TCP and WebSocket sessions on n0; n0 is drained (its partitions move to their
        replicas): the same connections keep working, their requests forwarded."""
        with Cluster(3, extra=RF2, metrics=True) as c:
            c.wait_formed()
            t = Tcp(c.tcp[0])
            t.send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": PROTOCOL, "capabilities": {},
                "clientInfo": {"name": "fwd", "version": "1"}}})
            self.assertIn("result", t.recv_for(1)[0])
            t.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            t.send({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                    "params": {"name": "kv_set", "arguments": {"key": "a", "value": "tcp"}}})
            self.assertIn("result", t.recv_for(2)[0])
            w = Ws(c.http[0])
            w.send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": PROTOCOL, "capabilities": {},
                "clientInfo": {"name": "fwd", "version": "1"}}})
            self.assertIn("result", ws_recv_for(w, 1))
            w.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            w.send({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                    "params": {"name": "kv_set", "arguments": {"key": "a", "value": "ws"}}})
            self.assertIn("result", ws_recv_for(w, 2))

            r = c.ctl(0, {"op": "drain", "node": "n0"})
            self.assertTrue(r.get("ok"), r)

            def moved():
                st = c.status(1)
                return all(c.member(st, "n%d" % i) for i in range(3)) and \
                    c.member(st, "n0")["owned"] == 0
            wait_for(moved, 20, 0.1, what="n0 owns nothing")
            time.sleep(0.3)  # n0's workers see the new map
            t.send({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                    "params": {"name": "kv_get", "arguments": {"key": "a"}}})
            r = t.recv_for(3)[0]
            self.assertEqual(r["result"]["structuredContent"]["value"], "tcp", r)
            w.send({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                    "params": {"name": "kv_get", "arguments": {"key": "a"}}})
            r = ws_recv_for(w, 3)
            self.assertEqual(r["result"]["structuredContent"]["value"], "ws", r)
            wait_for(lambda: c.metric(0, "cmcp_forwarded_requests_total") > 0, 5, 0.1,
                     what="forwarded requests counted")
            t.close()
            w.close()

    def test_new_sessions_through_a_node_that_owns_nothing(self):
        """A node killed and started again comes back owning no partition (until a
        rebalance): behind a load balancer it still takes new sessions, made by the
        members that own partitions, and serves them."""
        with Cluster(3, extra=RF2, metrics=True) as c:
            c.wait_formed()
            c.kill(2)
            wait_for(lambda: c.member(c.status(0), "n2") is None or
                     c.member(c.status(0), "n2")["owned"] == 0, 20, 0.1,
                     what="n2's partitions given away")
            c.start(2, data_dir=c.data_dir(2))
            c.wait_formed()
            # what a load balancer waits for before it sends the node requests
            wait_for(lambda: c.health(2)[0] == 200, 10, 0.05, what="n2's /health 200")
            st = c.status(0)
            self.assertEqual(c.member(st, "n2")["owned"], 0, st)
            for k in range(4):
                s = Session(c.http[2])
                owner = owner_of(c.status(0), int(s.sid.split("-")[0]))
                self.assertNotEqual(owner, 2, s.sid)
                r = s.tool("kv_set", {"key": "k", "value": "v%d" % k})
                self.assertIn("result", r)
                self.assertEqual(kv_value(s, "k")[0], "v%d" % k)

    def test_server_requests_through_other_nodes(self):
        """Elicitation and sampling: the tool's call goes through n1, the server's request to
        the client comes back that way, and the client answers through n2; all forwarded to
        the owner n0."""
        packs = "[tools]\npacks = core,conformance\n"
        with Cluster(3, extra=RF2 + "\n" + packs) as c:
            c.wait_formed()
            s = Session(c.http[0], capabilities={"elicitation": {}, "sampling": {}})
            cases = (("test_elicitation", {"message": "who?"}, "elicitation/create",
                      {"action": "accept", "content": {"username": "ada",
                                                       "email": "ada@example.org"}}, "ada"),
                     ("test_sampling", {"prompt": "hi"}, "sampling/createMessage",
                      {"role": "assistant", "model": "m",
                       "content": {"type": "text", "text": "fwd-ok"}}, "fwd-ok"))
            for n, (tool, args, method, answer, expect) in enumerate(cases):
                answered = []

                def on_event(ev):
                    if not ev.get("data"):
                        return  # a stream's priming event
                    m = json.loads(ev["data"])
                    if m.get("method") == method and "id" in m:
                        other = HttpConn(c.http[2])
                        r = other.request("POST", {"jsonrpc": "2.0", "id": m["id"],
                                                   "result": answer}, headers=s.headers())
                        other.close()
                        answered.append(r.status)
                conn = HttpConn(c.http[1])
                rid = 100 + n
                r = conn.request("POST", {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                                          "params": {"name": tool, "arguments": args}},
                                 headers=s.headers(), on_event=on_event, timeout=20)
                conn.close()
                self.assertEqual(answered, [202], (tool, r))
                final = [m for m in r.messages() if m.get("id") == rid]
                self.assertEqual(len(final), 1, r.events)
                self.assertIn(expect, json.dumps(final[0]), final[0])

    def test_sdk_client_through_a_node_that_does_not_own_the_session(self):
        with Cluster(3, extra=RF2) as c:
            c.wait_formed()
            s = Session(c.http[0])
            env = {k: v for k, v in os.environ.items() if not k.startswith("CMCP_")}
            p = subprocess.run(["node", os.path.join(NODE_DIR, "sdk_client.mjs"), "http",
                                "http://127.0.0.1:%d/mcp" % c.http[1], s.sid, PROTOCOL],
                               capture_output=True, text=True, timeout=90, env=env, cwd=NODE_DIR)
            self.assertEqual(p.returncode, 0, "sdk client failed:\n%s\n%s"
                             % (p.stdout[-2000:], p.stderr[-3000:]))
            report = json.loads(p.stdout.strip().splitlines()[-1])
            steps = {x["name"]: x for x in report["steps"]}
            self.assertEqual(steps["echo"]["text"], "hello from the SDK")
            self.assertGreaterEqual(steps["sleep"]["progress"], 2)
            self.assertTrue(steps["cancel"]["outcome"].startswith("rejected"), steps["cancel"])
            self.assertIn("teal", steps["kv"]["text"])
            self.assertIn("terminate", steps)


if __name__ == "__main__":
    main()
