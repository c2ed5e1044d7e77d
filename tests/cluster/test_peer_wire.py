#!/usr/bin/env python3
"""
The bytes between nodes, attacked from outside (docs/cluster.md, "Links
between nodes"). The two nodes reach each other only through TCP proxies of
this test (each node advertises its proxy as its address), which record what
the dialer sends and, when told, replay, alter or inject frames:

  - garbage on n0's peer port is refused and logged, and n0 goes on;
  - a recorded handshake replayed on a new connection is refused (n0's
    challenge is fresh on every connection);
  - a sealed frame sent twice on the live link is refused and the link
    closes; the nodes link again and the cluster goes on;
  - a sealed frame with one bit flipped is refused likewise;
  - a sealed frame taken from an earlier connection and put into a new one
    is refused (every connection has keys of its own).
"""

import os
import select
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cluster_harness import Cluster  # noqa: E402
from cmcp_harness import Timed, main, wait_for  # noqa: E402
from mcp_client import free_port  # noqa: E402


def frames(buf):
    """Splits a byte string into whole frames (4-byte little-endian length, then the bytes);
    returns (frames, rest)."""
    out = []
    while len(buf) >= 4:
        n = struct.unpack("<I", buf[:4])[0]
        if len(buf) < 4 + n:
            break
        out.append(buf[:4 + n])
        buf = buf[4 + n:]
    return out, buf


class Mangler:
    """What the proxies do to the next sealed frame either of them forwards: None, "twice",
    "flip" or "foreign" (a sealed frame of an earlier connection put in first)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.how = None
        self.foreign = b""
        self.done = threading.Event()

    def arm(self, how):
        with self.lock:
            self.done.clear()
            self.how = how

    def take(self):
        with self.lock:
            how, self.how = self.how, None
            return how


class Proxy(threading.Thread):
    """Forwards connections on `port` to 127.0.0.1:`target`. Frames from the dialer are
    recorded per connection; the shared mangler may change one sealed frame."""

    def __init__(self, port, target, mangler):
        super().__init__(daemon=True)
        self.port, self.target, self.m = port, target, mangler
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", port))
        self.lsock.listen(8)
        self.lock = threading.Lock()
        self.conns = []      # [frames sent by the dialer] per connection, oldest first
        self.live = set()    # ids of the connections still open
        self.stop_flag = False

    def run(self):
        self.lsock.settimeout(0.2)
        while not self.stop_flag:
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self.pipe, args=(c,), daemon=True).start()

    def pipe(self, client):
        server = socket.create_connection(("127.0.0.1", self.target), timeout=5)
        sent = []
        with self.lock:
            self.conns.append(sent)
            self.live.add(id(sent))
        pending = b""
        deadline = time.monotonic() + 120  # bounded: the test takes far less
        try:
            while not self.stop_flag and time.monotonic() < deadline:
                r, _, _ = select.select([client, server], [], [], 0.2)
                if client in r:
                    data = client.recv(65536)
                    if not data:
                        return
                    got, pending = frames(pending + data)
                    out = b""
                    for f in got:
                        sent.append(f)
                        out += self.maybe_mangle(f, len(sent))
                    if out:
                        server.sendall(out)
                if server in r:
                    data = server.recv(65536)
                    if not data:
                        return
                    client.sendall(data)
        except OSError:
            return
        finally:
            with self.lock:
                self.live.discard(id(sent))
            client.close()
            server.close()

    def maybe_mangle(self, f, index):
        # the dialer's handshake is its first two frames (hello, auth) and its identity:
        # only sealed frames after those are changed
        how = self.m.take() if index > 3 else None
        if how == "twice":
            out = f + f
        elif how == "flip":
            b = bytearray(f)
            b[-1] ^= 0x01
            out = bytes(b)
        elif how == "foreign":
            out = self.m.foreign + f
        else:
            return f
        self.m.done.set()
        return out

    def closed(self, conn):
        with self.lock:
            return id(conn) not in self.live

    def stop(self):
        self.stop_flag = True
        self.lsock.close()


class PeerWireTest(Timed):
    def test_attacks_on_the_links(self):
        with Cluster(2, expect=2, start=[]) as c:
            m = Mangler()
            proxies = [Proxy(free_port(), c.peer_ports[i], m) for i in range(2)]
            for p in proxies:
                p.start()
            try:
                self.attacks(c, proxies, m)
            finally:
                for p in proxies:
                    p.stop()

    def count(self, c, event):
        return sum(len(c.nodes[i].log_events(event)) for i in range(2))

    def attacks(self, c, proxies, m):
        # each node advertises its proxy: every link between them runs through one
        via = ["127.0.0.1:%d" % p.port for p in proxies]
        c.start(0, seeds=[via[0]], extra="advertise = %s" % via[0])
        c.start(1, seeds=[via[0]], extra="advertise = %s" % via[1])
        c.wait_formed()
        # (a first connection may be n0 dialing itself through its seed: it ends at once)
        wait_for(lambda: any(len(k) > 6 for k in proxies[0].conns), 10, 0.05,
                 what="sealed frames through n0's proxy")
        with proxies[0].lock:
            recorded = max(proxies[0].conns, key=len)
        m.foreign = recorded[4]

        # garbage on the peer port
        before = self.count(c, "peer_refused")
        s = socket.create_connection(("127.0.0.1", c.peer_ports[0]), timeout=5)
        s.sendall(struct.pack("<I", 40) + os.urandom(40))
        s.settimeout(5)
        try:
            self.assertEqual(s.recv(100), b"")  # closed
        except ConnectionResetError:
            pass
        s.close()
        wait_for(lambda: self.count(c, "peer_refused") > before, 5, 0.05, what="garbage refused")

        # a recorded handshake replayed: hello, then (after n0's fresh challenge) the old auth
        before = self.count(c, "peer_refused")
        hello, auth = recorded[0], recorded[1]
        s = socket.create_connection(("127.0.0.1", c.peer_ports[0]), timeout=5)
        s.sendall(hello)
        challenge, buf = b"", b""
        s.settimeout(5)
        while not challenge:
            data = s.recv(4096)
            self.assertTrue(data, "n0 closed before its challenge")
            got, buf = frames(buf + data)
            challenge = got[0] if got else b""
        s.sendall(auth)
        rest = b""
        try:
            while True:
                data = s.recv(4096)
                if not data:
                    break
                rest += data
        except (ConnectionResetError, socket.timeout):
            pass
        s.close()
        wait_for(lambda: self.count(c, "peer_refused") > before, 5, 0.05,
                 what="replayed handshake refused")
        print("  replayed handshake -> refused: %s"
              % c.nodes[0].log_events("peer_refused")[-1]["why"])
        # n0's only answer is its refusal, never its welcome
        for f in frames(rest)[0]:
            self.assertIn(b"refused", f, "n0 answered a replayed handshake with %r" % f)

        # sealed frames on a live link: sent twice, altered, moved from another connection
        for how in ("twice", "flip", "foreign"):
            before = self.count(c, "peer_frame_refused")
            m.arm(how)
            self.assertTrue(m.done.wait(10), "no frame to change (%s)" % how)
            wait_for(lambda: self.count(c, "peer_frame_refused") > before, 5, 0.05,
                     what="the %s frame refused" % how)
            ev = max((e for i in range(2) for e in c.nodes[i].log_events("peer_frame_refused")),
                     key=lambda e: e.get("ts", ""))
            print("  %-7s -> refused: %s" % (how, ev["why"]))
            # the link closed; the nodes link again and stay one cluster
            c.wait_formed(timeout=10)
            wait_for(lambda: any(len(k) > 4 and not p.closed(k) for p in proxies
                                 for k in p.conns), 10, 0.05, what="a live link again")
        # nothing forged reached the map: one map, both members up
        st = c.wait_formed()
        self.assertEqual(sorted(m["id"] for m in st["map"]["nodes"]), ["n0", "n1"])


if __name__ == "__main__":
    main()
