"""
cmcp_harness: start real cmcpd nodes and talk to their supervisors, for the
process-level tests (python3 standard library only).

  with Node(CONFIG) as n:              # cmcpd -c CONFIG in a fresh /tmp dir
      n.ctl("root", "which_children")  # one nng req/rep exchange, JSON in/out
      n.children("root")               # which_children: [{"id": "a", "pid": ...}, ...]
      n.child_pids("root")             # {"a": 1234, ...}
      n.wait_for(lambda: ..., 5)       # bounded polling
      n.log_events("child_ready")      # the JSON log lines of the whole tree
  # leaving the block stops the node and checks that no process of it survives

The control channel speaks nng's REQ0 protocol over its IPC transport
(checked against nng 1.5.2: src/sp/transport/ipc/ipc.c and
src/sp/protocol/reqrep0/{req,rep}.c):

  * connection: each side sends 8 bytes 0x00 'S' 'P' 0x00, its protocol id
    (16-bit big endian: REQ0 = 0x30, REP0 = 0x31) and two zero bytes, and
    checks the peer's (the REP side drops a peer that is not REQ0);
  * every message: 1 byte type (0x01), 8-byte big-endian length, payload;
  * a request's payload starts with a 4-byte big-endian request id with the
    high bit set (the end of REP's backtrace); the reply carries the same id
    back in front of its body.

Every process the node starts inherits CMCP_TEST_TAG=<unique>; cleanup finds
the tree by that tag in /proc/PID/environ, signals only those processes
(through a pidfd, so a reused pid is never hit) and fails the test if any of
them survives.
"""

import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

BIN_DIR = os.environ.get("CMCP_BIN_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "..", "..", "build", "bin"))
SOURCE_DIR = os.environ.get(
    "CMCP_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

SP_MAGIC = b"\x00SP\x00"
PROTO_REQ0 = 0x30
PROTO_REP0 = 0x31
MSG_TYPE = 0x01
MAX_REPLY = 16 << 20


def cmcpd_path():
    return os.path.join(BIN_DIR, "cmcpd")


class NngError(Exception):
    pass


class ReqClient:
    """A minimal nng REQ0 socket over ipc:// (one connection, one request at a time)."""

    def __init__(self, address, timeout=5.0):
        path = address[len("ipc://"):] if address.startswith("ipc://") else address
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(path)
            self.sock.sendall(SP_MAGIC + struct.pack(">H", PROTO_REQ0) + b"\x00\x00")
            hdr = self._recv_exact(8, time.monotonic() + timeout)
            if hdr[:4] != SP_MAGIC or hdr[6:8] != b"\x00\x00":
                raise NngError("bad SP header from %s: %r" % (path, hdr))
            (peer,) = struct.unpack(">H", hdr[4:6])
            if peer != PROTO_REP0:
                raise NngError("peer at %s speaks protocol 0x%x, not REP0" % (path, peer))
        except BaseException:
            self.sock.close()
            raise
        self.next_id = random.getrandbits(31)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _recv_exact(self, n, deadline):
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no reply within %.1f s" % self.timeout)
            self.sock.settimeout(left)
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise NngError("connection closed by the peer")
            buf += chunk
        return bytes(buf)

    def request(self, payload, timeout=None):
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        rid = 0x80000000 | (self.next_id & 0x7FFFFFFF)
        self.next_id += 1
        body = struct.pack(">I", rid) + payload
        self.sock.settimeout(timeout)
        self.sock.sendall(bytes([MSG_TYPE]) + struct.pack(">Q", len(body)) + body)
        for _ in range(64):  # replies to older ids (none expected) are skipped, boundedly
            head = self._recv_exact(9, deadline)
            if head[0] != MSG_TYPE:
                raise NngError("unexpected message type %d" % head[0])
            (n,) = struct.unpack(">Q", head[1:])
            if n < 4 or n > MAX_REPLY:
                raise NngError("bad reply length %d" % n)
            msg = self._recv_exact(n, deadline)
            (got,) = struct.unpack(">I", msg[:4])
            if got == rid:
                return msg[4:]
        raise NngError("no reply with request id 0x%x" % rid)


def ctl_request(address, req, timeout=10.0):
    """Sends one JSON request to a supervisor's control socket; returns the decoded reply."""
    with ReqClient(address, timeout=timeout) as c:
        return json.loads(c.request(json.dumps(req).encode(), timeout=timeout))


def wait_for(predicate, timeout=5.0, interval=0.005, what=None):
    """Polls predicate() until it returns a true value (returned) or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    max_rounds = int(timeout / max(interval, 0.001)) + 2
    last = None
    for _ in range(max_rounds):
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise TimeoutError("timed out after %.1f s waiting for %s (last: %r)"
                       % (timeout, what or getattr(predicate, "__name__", "condition"), last))


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def proc_args(pid):
    """The command line of pid as a list (empty if it is gone)."""
    return [a.decode(errors="replace") for a in _read("/proc/%d/cmdline" % pid).split(b"\0") if a]


def proc_state(pid):
    """The one-letter state of pid ('Z' zombie), or None if it is gone."""
    st = _read("/proc/%d/stat" % pid)
    if not st:
        return None
    return st[st.rfind(b")") + 2:st.rfind(b")") + 3].decode()


def pid_alive(pid):
    s = proc_state(pid)
    return s is not None and s != "Z"


def tagged_pids(tag):
    """Pids of live processes whose environment holds CMCP_TEST_TAG=tag."""
    needle = ("CMCP_TEST_TAG=%s" % tag).encode()
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        env = _read("/proc/%s/environ" % name)
        if needle in env.split(b"\0") and pid_alive(int(name)):
            out.append(int(name))
    return sorted(out)


def _signal_tagged(pid, tag, sig):
    """Signals pid only if it still carries our tag, through a pidfd (no pid-reuse race)."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        needle = ("CMCP_TEST_TAG=%s" % tag).encode()
        if needle not in _read("/proc/%d/environ" % pid).split(b"\0"):
            return False
        signal.pidfd_send_signal(fd, sig)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def sup_section(name, strategy="one_for_one", children=(), intensity=10, period=5, **extra):
    """A [tree.NAME] supervisor section with every flag explicit (the embedded
    defaults' values for a section of the same name do not leak in)."""
    lines = ["[tree.%s]" % name, "type = supervisor", "strategy = %s" % strategy,
             "intensity = %d" % intensity, "period = %d" % period,
             "children = %s" % ", ".join(children)]
    extra.setdefault("auto_shutdown", "never")
    extra.setdefault("backoff_min", 0)
    for k, v in extra.items():
        lines.append("%s = %s" % (k, v))
    return "\n".join(lines) + "\n\n"


def worker_section(name, args="", role="testworker", **extra):
    """A [tree.NAME] worker section (role testworker unless told)."""
    lines = ["[tree.%s]" % name, "type = worker"]
    if "exec" not in extra:
        lines.append("role = %s" % role)
        if args:
            lines.append("args = %s" % args)
    for k, v in extra.items():
        lines.append("%s = %s" % (k, v))
    return "\n".join(lines) + "\n\n"


class Node:
    """One cmcpd node started on a configuration text, in a fresh directory under /tmp."""

    def __init__(self, config_text, run_dir=None, env=None, args=(), wait_ready=True,
                 ready_timeout=10.0, keep_dir=False, cmcpd=None):
        self.config_text = config_text
        self.cmcpd = cmcpd or cmcpd_path()
        self.dir = tempfile.mkdtemp(prefix="cmcp-", dir="/tmp")
        self.run_dir = run_dir or os.path.join(self.dir, "run")
        if len(self.run_dir) > 80:
            raise ValueError("run_dir %s is longer than 80 bytes" % self.run_dir)
        self.config_path = os.path.join(self.dir, "node.conf")
        self.log_path = os.path.join(self.dir, "stderr.log")
        self.stdout_path = os.path.join(self.dir, "stdout.log")
        self.tag = uuid.uuid4().hex
        self.extra_env = dict(env or {})
        self.args = list(args)
        self.wait_ready = wait_ready
        self.ready_timeout = ready_timeout
        self.keep_dir = keep_dir
        self.proc = None
        self.returncode = None
        self._log_off = 0
        self._events = []
        self._partial = b""
        self._failures_at_start = _FAILURES[0]

    # ---- life cycle -------------------------------------------------------
    def start(self):
        with open(self.config_path, "w") as f:
            f.write(self.config_text)
        env = dict(os.environ)
        env.pop("CMCP_LOG_LEVEL", None)
        for k in list(env):
            if k.startswith("CMCP_") and k not in ("CMCP_BIN_DIR", "CMCP_SOURCE_DIR"):
                del env[k]
        env["CMCP_NODE_RUN_DIR"] = self.run_dir
        env["CMCP_TEST_TAG"] = self.tag
        env.update(self.extra_env)
        self.t_start = time.monotonic()
        with open(self.log_path, "ab") as err, open(self.stdout_path, "ab") as out:
            self.proc = subprocess.Popen([self.cmcpd, "-c", self.config_path] + self.args,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         env=env, cwd=self.dir)
        if self.wait_ready:
            try:
                wait_for(lambda: self.has_event("node_ready") or self.proc.poll() is not None,
                         self.ready_timeout, what="node_ready")
            except TimeoutError:
                self.cleanup()
                raise
            if self.proc.poll() is not None:
                code = self.proc.returncode
                log = self.stderr_text()
                self.cleanup()
                raise RuntimeError("cmcpd exited with %s before node_ready:\n%s" % (code, log))
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        survivors = self.cleanup()
        if survivors and exc_type is None:
            raise AssertionError("processes of the tree survived cleanup: %s" % survivors)
        return False

    @property
    def pid(self):
        return self.proc.pid

    def poll(self):
        if self.proc is None:
            return None
        self.returncode = self.proc.poll()
        return self.returncode

    def wait_exit(self, timeout=10.0):
        """Waits for the root to exit; returns its status (negative: killed by that signal)."""
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError("cmcpd (pid %d) did not exit within %.1f s" % (self.pid, timeout))
        return self.returncode

    def signal(self, sig):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout=10.0):
        """SIGTERM to the root, a bounded wait, then SIGKILL. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.returncode = self.proc.returncode
        return self.returncode

    def tree_pids(self):
        """Live processes started by this node (root included), found by their tag."""
        return tagged_pids(self.tag)

    def cleanup(self, timeout=5.0):
        """Stops the node; kills (by tag, via pidfd) whatever of its tree is still alive 2 s
        after the root is gone, and returns those pids: orphans, which the tests fail on."""
        orphans = []
        if self.proc is not None:
            self.stop(timeout=timeout)
            try:
                wait_for(lambda: not self.tree_pids(), 2.0, 0.01)
            except TimeoutError:
                orphans = self.tree_pids()
            for _ in range(3):
                left = self.tree_pids()
                if not left:
                    break
                for p in left:
                    _signal_tagged(p, self.tag, signal.SIGKILL)
                try:
                    wait_for(lambda: not self.tree_pids(), 2.0, 0.01)
                except TimeoutError:
                    pass
            still = self.tree_pids()
            if still:
                orphans = sorted(set(orphans) | set(still))
        if _FAILURES[0] > self._failures_at_start:
            self.print_trouble()
        self.check_sanitizers()
        if not self.keep_dir and not orphans and os.environ.get("CMCP_KEEP_TMP") is None:
            shutil.rmtree(self.dir, ignore_errors=True)
        return orphans

    def check_sanitizers(self):
        """A sanitizer's report in the log of any process of this node (a shard that ASan
        stopped and its supervisor restarted, a leak at a clean exit) fails the run: main()
        prints them and exits non-zero, whatever the test's own assertions said."""
        if self.dir in _SANITIZER_SEEN:
            return
        _SANITIZER_SEEN.add(self.dir)
        try:
            with open(self.log_path, "rb") as f:
                data = f.read()
        except OSError:
            return
        for m in _SANITIZER_RE.finditer(data):
            start = data.rfind(b"\n", 0, m.start()) + 1
            # the report's own lines, without the other processes' log lines among them
            lines = [ln for ln in data[start:start + 60000].decode("utf-8", "replace").splitlines()
                     if not ln.startswith('{"ts"')]
            if b"LeakSanitizer" in m.group(0) and not _leak_is_ours(lines):
                continue
            _SANITIZER_REPORTS.append((self.dir, "\n".join(lines[:60])))
            break  # the first report says what happened

    def print_trouble(self, limit=40):
        """A test failed while this node ran: its log's warnings, errors and anything that is
        not a log line (a sanitizer's report), so that CI output says what the node saw."""
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return
        keep = []
        for line in lines:
            try:
                level = json.loads(line).get("level")
            except ValueError:
                level = "raw"
            if level not in ("debug", "info", "notice"):
                keep.append(line[:400])
        print("-- %s: %d of %d log lines were warnings, errors or raw output; the last %d:" % (
            self.dir, len(keep), len(lines), min(limit, len(keep))))
        for line in keep[-limit:]:
            print("   " + line)
        print("-- and the log's last lines:")
        for line in lines[-8:]:
            print("   " + line[:400])

    # ---- control channel -------------------------------------------------
    def ctl_address(self, sup):
        return "ipc://%s/sup-%s.sock" % (self.run_dir, sup)

    def ctl(self, sup, op, timeout=10.0, **kw):
        req = {"op": op}
        req.update(kw)
        return ctl_request(self.ctl_address(sup), req, timeout=timeout)

    def ctl_ok(self, sup, op, timeout=10.0, **kw):
        r = self.ctl(sup, op, timeout=timeout, **kw)
        if not r.get("ok"):
            raise AssertionError("%s %s %r failed: %r" % (sup, op, kw, r))
        return r

    def children(self, sup="root"):
        """which_children of sup: a list of child dicts in start order."""
        return self.ctl_ok(sup, "which_children")["children"]

    def child_map(self, sup="root"):
        """which_children of sup as {id: child} (start order kept)."""
        return {c["id"]: c for c in self.children(sup)}

    def child_pids(self, sup="root"):
        """{id: pid} of the children of sup (pid None when not running)."""
        return {i: c["pid"] for i, c in self.child_map(sup).items()}

    def wait_running(self, sup="root", timeout=5.0, ids=None):
        """Waits until every child of sup (or those in ids) is running; returns {id: pid}."""
        def ok():
            ch = self.child_map(sup)
            sel = ch if ids is None else {i: ch[i] for i in ids if i in ch}
            if ids is not None and len(sel) != len(ids):
                return None
            if all(c["state"] == "running" for c in sel.values()):
                return {i: c["pid"] for i, c in sel.items()}
            return None
        return wait_for(ok, timeout, 0.01, what="children of %s running" % sup)

    def wait_for(self, predicate, timeout=5.0, interval=0.005, what=None):
        return wait_for(predicate, timeout, interval, what)

    # ---- logs ---------------------------------------------------------------
    def _read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_off)
                data = f.read()
        except OSError:
            return
        self._log_off += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()  # an unfinished last line waits for the next read
        for ln in lines:
            if not ln.strip():
                continue
            try:
                ev = json.loads(ln)
            except ValueError:
                ev = {"event": "_text", "text": ln.decode(errors="replace")}
            self._events.append(ev)

    def log_events(self, event=None, **match):
        """Log lines (dicts) of the whole tree, oldest first, filtered by event and field values."""
        self._read_log()
        out = []
        for ev in self._events:
            if event is not None and ev.get("event") != event:
                continue
            if all(ev.get(k) == v for k, v in match.items()):
                out.append(ev)
        return out

    def has_event(self, event, **match):
        return bool(self.log_events(event, **match))

    def wait_event(self, event, timeout=5.0, count=1, **match):
        """Waits until at least count lines match; returns them."""
        return wait_for(lambda: (lambda e: e if len(e) >= count else None)(
            self.log_events(event, **match)), timeout, 0.005,
            what="%d x %s %r" % (count, event, match))

    def stderr_text(self):
        return _read(self.log_path).decode(errors="replace")


def run_config_check(config_text, env=None, check=False, timeout=10.0, files=None):
    """Runs cmcpd on a config text (with --check-config if check) in a directory of its own;
    returns (status, stdout, stderr, config path). files: a list that receives the names the
    directory holds after the run (its working directory, the default run directory's parent)."""
    d = tempfile.mkdtemp(prefix="cmcp-", dir="/tmp")
    try:
        path = os.path.join(d, "node.conf")
        with open(path, "w") as f:
            f.write(config_text)
        e = {k: v for k, v in os.environ.items() if not k.startswith("CMCP_")}
        e["CMCP_NODE_RUN_DIR"] = os.path.join(d, "run")
        e["CMCP_TEST_TAG"] = uuid.uuid4().hex
        e.update(env or {})
        argv = [cmcpd_path(), "-c", path] + (["--check-config"] if check else [])
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=e, cwd=d)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate(timeout=5)
            for pid in tagged_pids(e["CMCP_TEST_TAG"]):
                _signal_tagged(pid, e["CMCP_TEST_TAG"], signal.SIGKILL)
            raise TimeoutError("cmcpd did not exit within %.1f s" % timeout)
        finally:
            for pid in tagged_pids(e["CMCP_TEST_TAG"]):
                _signal_tagged(pid, e["CMCP_TEST_TAG"], signal.SIGKILL)
        if files is not None:
            files.extend(sorted(os.listdir(d)))
        return p.returncode, out.decode(errors="replace"), err.decode(errors="replace"), path
    finally:
        shutil.rmtree(d, ignore_errors=True)


class Timed(unittest.TestCase):
    """A TestCase that reports each test's duration."""

    def setUp(self):
        self._t0 = time.monotonic()

    def tearDown(self):
        self.duration = time.monotonic() - self._t0


# Failures and errors so far in this run: a node that was up during one prints what its log
# said when it is cleaned up (Node.print_trouble).
_FAILURES = [0]

# ASan, LSan and UBSan reports found in nodes' logs (Node.check_sanitizers).
_SANITIZER_RE = re.compile(rb"ERROR: (?:Address|Leak|UndefinedBehavior)Sanitizer|"
                           rb"\.[ch]:\d+:\d+: runtime error: ")
_SANITIZER_REPORTS = []
_SANITIZER_SEEN = set()


def _leak_is_ours(lines):
    """Whether a LeakSanitizer report names a leak of cmcp's. Any direct leak is (tests/lsan.supp
    suppresses nng's queued messages). An indirect leak allocated inside libnng is not: it is
    nng's own dialers, pipes and buffers, reachable only from each other while nng's reaper
    thread finishes closing them after main has returned."""
    indirect = False
    for ln in lines:
        t = ln.strip()
        if t.startswith("Direct leak of"):
            return True
        if t.startswith("Indirect leak of"):
            indirect = True
        elif indirect and t.startswith("#1 "):
            if "libnng.so" not in t:
                return True
            indirect = False
        elif t.startswith("SUMMARY:"):
            break
    return False


class _CountingResult(unittest.TextTestResult):
    def addFailure(self, test, err):
        _FAILURES[0] += 1
        super().addFailure(test, err)

    def addError(self, test, err):
        _FAILURES[0] += 1
        super().addError(test, err)


def main():
    """Runs the unittest cases of __main__, prints a summary, exits non-zero on failure."""
    if not os.access(cmcpd_path(), os.X_OK):
        print("cmcp_harness: no executable %s (set CMCP_BIN_DIR)" % cmcpd_path())
        sys.exit(1)
    t0 = time.monotonic()
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules["__main__"])
    if len(sys.argv) > 1:  # run only the named tests: test_x.py Class.test_name ...
        suite = unittest.defaultTestLoader.loadTestsFromNames(sys.argv[1:], sys.modules["__main__"])
    res = unittest.TextTestRunner(verbosity=2, stream=sys.stdout, resultclass=_CountingResult).run(suite)
    name = os.path.basename(sys.modules["__main__"].__file__ or "tests")
    bad = len(res.failures) + len(res.errors) + len(res.unexpectedSuccesses)
    print("\n== %s: %d run, %d failed, %d errors, %d skipped in %.1f s: %s" % (
        name, res.testsRun, len(res.failures), len(res.errors), len(res.skipped),
        time.monotonic() - t0, "OK" if bad == 0 else "FAILED"))
    for t, _ in res.failures + res.errors:
        print("   FAILED: %s" % t.id())
    for d, report in _SANITIZER_REPORTS:
        print("\n== a sanitizer reported in the log of the node in %s:\n%s" % (d, report))
    if _SANITIZER_REPORTS:
        print("== %s: FAILED: %d node(s) logged a sanitizer report" % (name, len(_SANITIZER_REPORTS)))
    sys.exit(0 if bad == 0 and res.testsRun > 0 and not _SANITIZER_REPORTS else 1)
