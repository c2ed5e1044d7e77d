"""Minimal MCP clients for cmcp's process-level tests (python3 stdlib only).

Http speaks Streamable HTTP over raw sockets, so tests can see exactly what a
client sees (status, headers, SSE events with ids) and can also send broken
input. Tcp speaks newline-delimited JSON-RPC. Every read is bounded in time.
"""
import atexit
import json
import os
import random
import socket
import time

PROTOCOL = "2025-11-25"
ACCEPT = "application/json, text/event-stream"


_handed_out = set()

# Ports are also claimed across test processes: ctest runs two tests at a time, and two
# processes that each probe "free" ports can pick the same one. The node that binds second
# then serves on its retry timer while the test talks to the other test's process (an empty
# reply from /metrics, seen once in CI). A claim is a file named after the port holding the
# claimer's pid; a claim whose process is gone is stale and taken over.
_CLAIM_DIR = os.path.join(os.environ.get("TMPDIR", "/tmp"), "cmcp-test-port-claims")
_claimed = []


def _claim_alive(path):
    try:
        with open(path) as f:
            pid = int(f.read().strip() or "0")
    except (OSError, ValueError):
        return False
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_port(port):
    """True once this process holds `port` for the rest of its life; False when another live
    test process holds it."""
    try:
        os.makedirs(_CLAIM_DIR, exist_ok=True)
    except OSError:
        return True  # no place for claims: probing alone, as before
    path = os.path.join(_CLAIM_DIR, str(port))
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if _claim_alive(path):
                return False
            try:
                os.unlink(path)  # stale: its process is gone
            except FileNotFoundError:
                pass
            continue
        except OSError:
            return True
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        if not _claimed:
            atexit.register(_release_claims)
        _claimed.append(path)
        return True
    return False


def _release_claims():
    for path in _claimed:
        try:
            if _claim_alive(path) and open(path).read().strip() == str(os.getpid()):
                os.unlink(path)
        except OSError:
            pass
    _claimed.clear()


_rng = random.Random(os.getpid() ^ int(time.time() * 1000))


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port():
    """A loopback port nobody listens on, never the same twice in one test process. Taken
    below the kernel's ephemeral range where there is room: a port from that range can be
    taken by any outgoing connection between this probe and the node's bind (a node that
    then failed to start with "Address already in use" was seen in CI)."""
    low = _ephemeral_low()
    rng = _rng
    for _ in range(200):
        if low > 12000:
            port = rng.randrange(10000, low - 64)
        else:
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
            probe.close()
        if port in _handed_out:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        if not claim_port(port):
            continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port found")


def node_config(http_port, tcp_port, packs="core", shards=2, extra=""):
    return f"""
[tools]
packs = {packs}
[listener]
http_port = {http_port}
tcp_port = {tcp_port}
[tree.shard]
count = {shards}
{extra}
"""


class Response:
    def __init__(self, status, headers, body, events):
        self.status = status
        self.headers = headers  # lower-case names
        self.body = body  # bytes (non-SSE)
        self.events = events  # list of dicts {id, event, data} (SSE)

    def json(self):
        return json.loads(self.body)

    def messages(self):
        """JSON-RPC messages of the answer: the body, or every SSE data."""
        if self.events is not None:
            return [json.loads(e["data"]) for e in self.events if e.get("data")]
        return [self.json()] if self.body else []

    def __repr__(self):
        return f"<Response {self.status} {self.headers} {self.body[:300]!r} events={self.events}>"


class HttpConn:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.timeout = timeout

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send_raw(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by the server")
        self.buf += chunk

    def _read_until(self, marker, deadline):
        while marker not in self.buf:
            if time.monotonic() > deadline:
                raise TimeoutError("no %r from the server" % marker)
            self._fill(deadline)
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _read_n(self, n, deadline):
        while len(self.buf) < n:
            if time.monotonic() > deadline:
                raise TimeoutError("body not complete")
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self, deadline=None):
        deadline = deadline or time.monotonic() + self.timeout
        head = self._read_until(b"\r\n\r\n", deadline).decode("latin-1")
        lines = head.split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        return status, headers

    def read_chunk(self, deadline):
        size = int(self._read_until(b"\r\n", deadline).strip().split(b";")[0], 16)
        data = self._read_n(size + 2, deadline)[:-2]
        return size, data

    def read_response(self, timeout=None, max_events=None, on_event=None):
        """A whole response; SSE bodies are parsed into events. max_events stops early."""
        deadline = time.monotonic() + (timeout or self.timeout)
        status, headers = self.read_head(deadline)
        if status == 100:
            return self.read_response(timeout, max_events, on_event)
        ctype = headers.get("content-type", "")
        chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        if ctype.startswith("text/event-stream"):
            events, pending = [], b""
            while True:
                if chunked:
                    size, data = self.read_chunk(deadline)
                    if size == 0:
                        break
                else:
                    try:
                        self._fill(deadline)
                    except ConnectionError:
                        break
                    data, self.buf = self.buf, b""
                pending += data
                while b"\n\n" in pending:
                    block, pending = pending.split(b"\n\n", 1)
                    ev = parse_sse_block(block.decode())
                    if ev is None:
                        continue
                    events.append(ev)
                    if on_event:
                        on_event(ev)
                    if max_events and len(events) >= max_events:
                        return Response(status, headers, b"", events)
            return Response(status, headers, b"", events)
        if "content-length" in headers:
            body = self._read_n(int(headers["content-length"]), deadline)
        elif chunked:
            body = b""
            while True:
                size, data = self.read_chunk(deadline)
                if size == 0:
                    break
                body += data
        else:
            body = b""
        return Response(status, headers, body, None)

    def request(self, method, body=None, headers=None, path="/mcp", timeout=None, **kw):
        h = {"Host": "127.0.0.1", "Accept": ACCEPT}
        if body is not None:
            h["Content-Type"] = "application/json"
            if not isinstance(body, (bytes, str)):
                body = json.dumps(body)
            if isinstance(body, str):
                body = body.encode()
            h["Content-Length"] = str(len(body))
        for k, v in (headers or {}).items():
            if v is None:
                h.pop(k, None)
            else:
                h[k] = v
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
        self.send_raw(head.encode() + (body or b""))
        return self.read_response(timeout=timeout, **kw)


def parse_sse_block(block):
    ev, data = {}, []
    for line in block.replace("\r\n", "\n").split("\n"):
        if not line or line.startswith(":"):
            continue
        k, _, v = line.partition(":")
        v = v[1:] if v.startswith(" ") else v
        if k == "data":
            data.append(v)
        else:
            ev[k] = v
    if not data and not ev:
        return None
    ev["data"] = "\n".join(data)
    return ev


class Session:
    """An initialized Streamable HTTP session."""

    def __init__(self, port, version=PROTOCOL, capabilities=None):
        self.port = port
        self.version = version
        self.conn = HttpConn(port)
        self.next_id = 1
        r = self.conn.request("POST", {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": version, "capabilities": capabilities or {},
            "clientInfo": {"name": "cmcp-test", "version": "1"}}})
        assert r.status == 200, r
        self.sid = r.headers.get("mcp-session-id")
        assert self.sid, r
        self.init = r.messages()[0]
        r2 = self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert r2.status == 202, r2

    def headers(self):
        return {"Mcp-Session-Id": self.sid, "MCP-Protocol-Version": self.version}

    def post(self, msg, conn=None, **kw):
        return (conn or self.conn).request("POST", msg, headers=self.headers(), **kw)

    def call(self, method, params=None, **kw):
        i = self.next_id
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": i, "method": method}
        if params is not None:
            msg["params"] = params
        r = self.post(msg, **kw)
        msgs = r.messages()
        final = [m for m in msgs if m.get("id") == i and ("result" in m or "error" in m)]
        assert final, "no response to %s: %r" % (method, r)
        return final[-1], r

    def tool(self, name, args=None, **kw):
        resp, _ = self.call("tools/call", {"name": name, "arguments": args or {}}, **kw)
        return resp

    def close(self):
        try:
            self.conn.request("DELETE", headers=self.headers())
        except (OSError, TimeoutError):
            pass
        self.conn.close()


class Tcp:
    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.timeout = timeout

    def send(self, msg):
        data = msg if isinstance(msg, bytes) else json.dumps(msg).encode()
        self.sock.sendall(data + b"\n")

    def recv(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\n" not in self.buf:
            if time.monotonic() > deadline:
                raise TimeoutError("no line from the server")
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed by the server")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def recv_for(self, id_, timeout=None):
        """Messages until the response with this id; returns (response, others). Responses
        may come in any order (JSON-RPC matches them by id): ones for other ids are kept
        for their own recv_for."""
        others = []
        kept = getattr(self, "kept", {})
        self.kept = kept
        if id_ in kept:
            return kept.pop(id_), others
        while True:
            m = self.recv(timeout)
            if "method" not in m and ("result" in m or "error" in m):
                if m.get("id") == id_:
                    return m, others
                kept[m.get("id")] = m
                continue
            others.append(m)

    def close(self):
        self.sock.close()


class Ws:
    """A minimal RFC 6455 client (masked frames), enough to test /mcp/ws edge cases."""

    def __init__(self, port, path="/mcp/ws", protocol="mcp", timeout=10.0, headers=None):
        import base64
        import os as _os
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        key = base64.b64encode(_os.urandom(16)).decode()
        h = {"Host": "127.0.0.1", "Upgrade": "websocket", "Connection": "Upgrade",
             "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13"}
        if protocol:
            h["Sec-WebSocket-Protocol"] = protocol
        h.update(headers or {})
        req = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items() if v is not None)
        self.sock.sendall((req + "\r\n").encode())
        self.buf = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            if time.monotonic() > deadline:
                raise TimeoutError("no handshake answer")
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        self.headers = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip()
                        for l in lines[1:] if ":" in l}

    def send_frame(self, opcode, payload, fin=True):
        import os as _os
        mask = _os.urandom(4)
        n = len(payload)
        head = bytes([(0x80 if fin else 0) | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def send(self, msg):
        self.send_frame(1, json.dumps(msg).encode())

    def _need(self, n, deadline):
        while len(self.buf) < n:
            if time.monotonic() > deadline:
                raise TimeoutError("frame not complete")
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed by the server")
            self.buf += chunk

    def recv_frame(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        self._need(2, deadline)
        opcode, n = self.buf[0] & 0x0F, self.buf[1] & 0x7F
        off = 2
        if n == 126:
            self._need(4, deadline)
            n, off = int.from_bytes(self.buf[2:4], "big"), 4
        elif n == 127:
            self._need(10, deadline)
            n, off = int.from_bytes(self.buf[2:10], "big"), 10
        self._need(off + n, deadline)
        payload, self.buf = self.buf[off:off + n], self.buf[off + n:]
        return opcode, payload

    def recv(self, timeout=None):
        while True:
            op, payload = self.recv_frame(timeout)
            if op == 1:
                return json.loads(payload)
            if op == 8:
                raise ConnectionError("close frame %r" % payload)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
