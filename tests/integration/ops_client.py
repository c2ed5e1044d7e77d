"""Clients for cmcp's operations surface in process-level tests (python3 stdlib only):
the metrics worker's HTTP endpoints, the cmcpctl binary, a raw nng REQ0 client
over TCP, and a TCP proxy that records or tampers with admin traffic.

nng's TCP transport (nng 1.5.2 src/sp/transport/tcp/tcp.c) opens with the same
8-byte SP header as IPC (0x00 'S' 'P' 0x00, protocol id, two zero bytes) and
frames every message as an 8-byte big-endian length and the payload, with no
type byte (IPC has one). A REQ0 payload starts with the 4-byte request id.
"""
import json
import os
import random
import select
import socket
import struct
import subprocess
import threading
import time

from cmcp_harness import BIN_DIR, NngError, SP_MAGIC, PROTO_REQ0, PROTO_REP0
from mcp_client import free_port

AUTH_ERROR = 7
HEADER_BYTES = 38


def cmcpctl_path():
    return os.path.join(BIN_DIR, "cmcpctl")


def ops_config(http, tcp, metrics, admin, shards=2, extra=""):
    return f"""
[listener]
http_port = {http}
tcp_port = {tcp}
[metrics]
port = {metrics}
[admin]
endpoint = tcp://127.0.0.1:{admin}
[tree.shard]
count = {shards}
{extra}
"""


class Ports:
    def __init__(self):
        self.http, self.tcp, self.metrics, self.admin = (free_port() for _ in range(4))

    def config(self, **kw):
        return ops_config(self.http, self.tcp, self.metrics, self.admin, **kw)


def http_get(port, path, timeout=5.0, method="GET"):
    """(status, headers, body bytes) of one request with Connection: close."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(("%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n"
                   "Content-Length: 0\r\n\r\n" % (method, path, port)).encode())
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    if not data:
        raise ConnectionError("127.0.0.1:%d closed the connection without a reply to %s %s"
                              % (port, method, path))
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def get_json(port, path):
    st, _, body = http_get(port, path)
    return st, json.loads(body)


def parse_metrics(text):
    """{(name, labels-text): value} of a Prometheus exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if "{" in line.split(" ")[0]:
            name, rest = line.split("{", 1)
            labels, _, value = rest.rpartition("} ")
        else:
            name, _, value = line.partition(" ")
            labels = ""
        out[(name, labels)] = float(value)
    return out


def metrics(port):
    st, _, body = http_get(port, "/metrics")
    assert st == 200, (st, body)
    return parse_metrics(body.decode())


def wait_metric(port, name, labels, pred, timeout=8.0):
    """Waits until metric (name, labels) satisfies pred; returns its value."""
    deadline = time.monotonic() + timeout
    last = None
    for _ in range(int(timeout / 0.05) + 2):
        last = metrics(port).get((name, labels))
        if last is not None and pred(last):
            return last
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    raise TimeoutError("%s{%s} never satisfied the condition (last %r)" % (name, labels, last))


def run_ctl(node, admin_port, *args, cookie=None, json_out=False, timeout=45.0, env=None):
    """Runs cmcpctl against a node; returns (status, stdout, stderr). The limit stays above
    cmcpctl's own 30 s timeout, so a stalled node is reported by cmcpctl itself."""
    argv = [cmcpctl_path(), "-n", "tcp://127.0.0.1:%d" % admin_port,
            "--cookie-file", cookie or os.path.join(node.dir, "var", "cookie")]
    if json_out:
        argv.append("--json")
    argv += list(args)
    e = {k: v for k, v in os.environ.items() if not k.startswith("CMCP_")}
    e.update(env or {})
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                       env=e, cwd=node.dir)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


class TcpReq:
    """A minimal nng REQ0 socket over tcp:// (one connection, one request at a time)."""

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        self.sock.sendall(SP_MAGIC + struct.pack(">H", PROTO_REQ0) + b"\x00\x00")
        hdr = self._exact(8)
        if hdr[:4] != SP_MAGIC or struct.unpack(">H", hdr[4:6])[0] != PROTO_REP0:
            raise NngError("not an nng REP0 peer: %r" % hdr)
        self.next_id = random.getrandbits(31)

    def _exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise NngError("connection closed by the peer")
            buf += chunk
        return buf

    def request(self, payload):
        rid = 0x80000000 | (self.next_id & 0x7FFFFFFF)
        self.next_id += 1
        body = struct.pack(">I", rid) + payload
        self.sock.sendall(struct.pack(">Q", len(body)) + body)
        for _ in range(16):
            (n,) = struct.unpack(">Q", self._exact(8))
            msg = self._exact(n)
            if struct.unpack(">I", msg[:4])[0] == rid:
                return msg[4:]
        raise NngError("no reply to request 0x%x" % rid)

    def close(self):
        self.sock.close()


def auth_error_text(msg):
    """The text of a clear ERROR message of the admin protocol, or None."""
    if len(msg) >= HEADER_BYTES and msg[:4] == b"CMCP" and msg[5] == AUTH_ERROR:
        return msg[HEADER_BYTES:].decode(errors="replace")
    return None


class Proxy:
    """A TCP proxy in front of the admin socket that records every message (without
    the request id) in each direction, and can flip one byte of the n-th message of
    a direction ("c2s" or "s2c") to play a man in the middle. Offsets index the frame,
which starts with nng's 4-byte request id."""

    def __init__(self, target_port, tamper=None):
        self.target = target_port
        self.tamper = tamper  # (direction, message index, byte: >= 0 from the start, < 0 from the end)
        self.c2s, self.s2c = [], []
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(4)
        self.port = self.lsock.getsockname()[1]
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.lsock.settimeout(0.2)
        while not self.stop:
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            s = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            threading.Thread(target=self._pump, args=(c, s), daemon=True).start()

    def _pump(self, c, s):
        bufs = {c: b"", s: b""}
        started = {c: False, s: False}
        try:
            while not self.stop:
                r, _, _ = select.select([c, s], [], [], 0.2)
                for src in r:
                    dst = s if src is c else c
                    data = src.recv(65536)
                    if not data:
                        return
                    bufs[src] += data
                    out = b""
                    if not started[src] and len(bufs[src]) >= 8:
                        out += bufs[src][:8]
                        bufs[src] = bufs[src][8:]
                        started[src] = True
                    while started[src] and len(bufs[src]) >= 8:
                        (n,) = struct.unpack(">Q", bufs[src][:8])
                        if len(bufs[src]) < 8 + n:
                            break
                        frame = bytearray(bufs[src][8:8 + n])
                        bufs[src] = bufs[src][8 + n:]
                        direction = "c2s" if src is c else "s2c"
                        log = self.c2s if direction == "c2s" else self.s2c
                        if self.tamper and self.tamper[0] == direction and \
                                self.tamper[1] == len(log):
                            frame[self.tamper[2]] ^= 0x01  # offsets count the request id
                        log.append(bytes(frame[4:]))
                        out += struct.pack(">Q", n) + bytes(frame)
                    if out:
                        dst.sendall(out)
        except OSError:
            return
        finally:
            c.close()
            s.close()

    def close(self):
        self.stop = True
        self.lsock.close()
        self.thread.join(2)
