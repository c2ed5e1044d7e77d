"""
A Jepsen-style checker for cmcp clusters (docs/cluster.md, "Tests").

Clients each hold one MCP session and write unique values (kv_set of key
w<n> = "<client>-<n>"), every write through the next node in turn: no
stickiness, as behind a load balancer, so most writes are forwarded. Every
operation is recorded as invoked, then as
  ok    acknowledged (a result),
  fail  refused with an answer that says it was not applied, or never sent
        (connection refused),
  info  outcome unknown (timeout, connection lost after sending, or the
        server said the outcome is unknown).
After the nemesis and the heal, every key is read back through the nodes
that are up: an acknowledged write must be there with its value (else lost),
a failed write must not be (else unexpected); an info write may be either.
"""

import http.client
import json
import threading
import time


class Op:
    __slots__ = ("client", "key", "value", "node", "t_inv", "t_done", "outcome", "note")

    def __init__(self, client, key, value, node):
        self.client, self.key, self.value, self.node = client, key, value, node
        self.t_inv, self.t_done, self.outcome, self.note = time.monotonic(), None, None, ""


def _post(host, port, sid, version, msg, timeout):
    """One POST; (status, parsed JSON-RPC messages). Raises OSError/timeout on transport
    trouble; ConnectionRefusedError means nothing was sent."""
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        # as a local client names it: nodes in namespaces allow loopback Host names only
        headers = {"Content-Type": "application/json", "Host": "127.0.0.1:%d" % port,
                   "Accept": "application/json, text/event-stream"}
        if sid:
            headers["Mcp-Session-Id"] = sid
            headers["MCP-Protocol-Version"] = version
        c.request("POST", "/mcp", body=json.dumps(msg), headers=headers)
        r = c.getresponse()
        body = r.read().decode("utf-8", "replace")
        sid_out = r.getheader("Mcp-Session-Id")
        msgs = []
        if (r.getheader("Content-Type") or "").startswith("text/event-stream"):
            for line in body.splitlines():
                if line.startswith("data:"):
                    try:
                        msgs.append(json.loads(line[5:]))
                    except ValueError:
                        pass
        elif body.strip():
            try:
                msgs.append(json.loads(body))
            except ValueError:
                pass
        return r.status, msgs, sid_out
    finally:
        c.close()


class Client:
    """One session, made at node `home`; writes through every node in turn."""

    VERSION = "2025-11-25"

    def __init__(self, name, addrs, home, history, timeout=3.0):
        self.name, self.addrs, self.history, self.timeout = name, addrs, history, timeout
        self.n = 0
        self.next_node = home
        host, port = addrs[home]
        st, msgs, sid = _post(host, port, None, self.VERSION, {
            "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": self.VERSION, "capabilities": {},
                "clientInfo": {"name": "checker-" + name, "version": "1"}}}, 10)
        assert st == 200 and sid, (st, msgs)
        self.sid = sid
        self.part = int(sid.split("-")[0])
        _post(host, port, sid, self.VERSION, {"jsonrpc": "2.0",
                                              "method": "notifications/initialized"}, 10)

    def write(self):
        self.n += 1
        node = self.next_node
        self.next_node = (self.next_node + 1) % len(self.addrs)
        op = Op(self.name, "w%d" % self.n, "%s-%d" % (self.name, self.n), node)
        host, port = self.addrs[node]
        try:
            st, msgs, _ = _post(host, port, self.sid, self.VERSION, {
                "jsonrpc": "2.0", "id": self.n, "method": "tools/call",
                "params": {"name": "kv_set", "arguments": {"key": op.key, "value": op.value}}},
                self.timeout)
        except ConnectionRefusedError:
            op.outcome, op.note = "fail", "connection refused"
        except (OSError, http.client.HTTPException) as e:
            op.outcome, op.note = "info", repr(e)[:120]
        else:
            final = [m for m in msgs if m.get("id") == self.n]
            m = final[-1] if final else None
            if st == 200 and m and "result" in m and not m["result"].get("isError"):
                op.outcome = "ok"
            elif m and "error" in m:
                text = m["error"].get("message", "")
                unknown = "unknown" in text or "may or may not" in text
                op.outcome, op.note = ("info" if unknown else "fail"), "%d %s" % (st, text[:160])
            elif m and m.get("result", {}).get("isError"):
                op.outcome, op.note = "fail", "tool error %s" % json.dumps(m["result"])[:160]
            else:
                op.outcome, op.note = "info", "status %d, no answer" % st
        op.t_done = time.monotonic()
        self.history.add(op)
        return op

    def read_all(self, nodes, keys):
        """{key: text or None} for keys, read through the given live nodes in turn."""
        got = {}
        last = None
        for i, key in enumerate(keys):
            for attempt in range(40):
                host, port = self.addrs[nodes[(i + attempt) % len(nodes)]]
                try:
                    st, msgs, _ = _post(host, port, self.sid, self.VERSION, {
                        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                        "params": {"name": "kv_get", "arguments": {"key": key}}}, 5)
                except (OSError, http.client.HTTPException) as e:
                    last = repr(e)
                    time.sleep(0.1)
                    continue
                m = msgs[-1] if msgs else {}
                last = (st, m)
                if st == 200 and "result" in m:
                    res = m["result"]
                    got[key] = None if res.get("isError") else \
                        (res.get("structuredContent") or {}).get("value")
                    break
                time.sleep(0.1)  # 503 while a partition moves: read again
            else:
                raise AssertionError("cannot read %s of session %s (last answer: %r)"
                                     % (key, self.sid, last))
        return got


class History:
    def __init__(self):
        self.ops = []
        self.lock = threading.Lock()

    def add(self, op):
        with self.lock:
            self.ops.append(op)

    def count(self, outcome):
        return sum(1 for o in self.ops if o.outcome == outcome)


class Workload:
    """Clients writing in threads until stopped; every thread bounded in count and time."""

    def __init__(self, addrs, nclients=6, homes=None, pause=0.01, max_ops=5000):
        self.history = History()
        homes = homes or list(range(len(addrs)))
        self.clients = [Client("c%d" % k, addrs, homes[k % len(homes)], self.history)
                        for k in range(nclients)]
        self.stop_ev = threading.Event()
        self.pause, self.max_ops = pause, max_ops
        self.threads = []

    def start(self):
        def run(cl):
            deadline = time.monotonic() + 300
            for _ in range(self.max_ops):
                if self.stop_ev.is_set() or time.monotonic() > deadline:
                    return
                cl.write()
                time.sleep(self.pause)
        self.threads = [threading.Thread(target=run, args=(cl,), daemon=True)
                        for cl in self.clients]
        for t in self.threads:
            t.start()

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(30)

    def check(self, live_nodes):
        """(passed, lost, unexpected, summary): passed = acknowledged writes found with
        their value; lost = acknowledged writes missing or changed; unexpected = failed
        writes visible."""
        lost, unexpected, passed = [], [], 0
        for cl in self.clients:
            mine = [o for o in self.history.ops if o.client == cl.name]
            keys = [o.key for o in mine if o.outcome in ("ok", "fail")]
            got = cl.read_all(live_nodes, keys)
            for o in mine:
                if o.outcome == "ok":
                    if got.get(o.key) == o.value:
                        passed += 1
                    else:
                        lost.append((cl.sid, o.key, o.value, got.get(o.key), o.node))
                elif o.outcome == "fail" and got.get(o.key) is not None:
                    unexpected.append((cl.sid, o.key, o.value, got.get(o.key), o.note))
        h = self.history
        summary = "%d writes: %d ok, %d fail, %d info" % (
            len(h.ops), h.count("ok"), h.count("fail"), h.count("info"))
        return passed, lost, unexpected, summary
