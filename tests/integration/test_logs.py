"""Logs a person reads: text on a terminal (or by [node] log_format), JSON otherwise; one
line at ready naming every endpoint; a port held by another program as one plain line."""

import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cmcp_harness import Timed, cmcpd_path, main, tagged_pids, _signal_tagged  # noqa: E402
from ops_client import Ports, ops_config  # noqa: E402

TEXT_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} (debug|info|notice|warning|error) +\S+ +\S")


class Run:
    """cmcpd run by hand (the harness reads JSON), its stderr collected."""

    def __init__(self, conf, env=None, tty=False):
        self.dir = tempfile.mkdtemp(prefix="cmcp-", dir="/tmp")
        path = os.path.join(self.dir, "node.conf")
        with open(path, "w") as f:
            f.write(conf)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CMCP_")}
        self.env["CMCP_NODE_RUN_DIR"] = os.path.join(self.dir, "run")
        self.env["CMCP_TEST_TAG"] = "logs-%d-%f" % (os.getpid(), time.time())
        self.env.update(env or {})
        self.master = None
        if tty:
            self.master, slave = pty.openpty()
            err = slave
        else:
            err = subprocess.PIPE
        self.proc = subprocess.Popen([cmcpd_path(), "-c", path], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=err, env=self.env,
                                     cwd=self.dir)
        if tty:
            os.close(slave)
        self.out = b""

    def _fd(self):
        return self.master if self.master is not None else self.proc.stderr.fileno()

    def read_until(self, needle, timeout=15.0):
        deadline = time.monotonic() + timeout
        while needle not in self.out and time.monotonic() < deadline:
            r, _, _ = select.select([self._fd()], [], [], 0.1)
            if r:
                try:
                    chunk = os.read(self._fd(), 65536)
                except OSError:  # the pty's other end closed
                    chunk = b""
                if not chunk and self.proc.poll() is not None:
                    break
                self.out += chunk
        return needle in self.out

    def finish(self, timeout=20.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([self._fd()], [], [], 0.1)
            if r:
                try:
                    chunk = os.read(self._fd(), 65536)
                except OSError:
                    chunk = b""
                self.out += chunk
                if not chunk and self.proc.poll() is not None:
                    break
            elif self.proc.poll() is not None:
                break
        code = self.proc.wait(timeout=5)
        for pid in tagged_pids(self.env["CMCP_TEST_TAG"]):
            _signal_tagged(pid, self.env["CMCP_TEST_TAG"], signal.SIGKILL)
        if self.master is not None:
            os.close(self.master)
        shutil.rmtree(self.dir, ignore_errors=True)
        return code, self.out.decode(errors="replace")


class Logs(Timed):
    def endpoints(self, p):
        return ["http://127.0.0.1:%d/mcp" % p.http, "TCP 127.0.0.1:%d" % p.tcp,
                "metrics http://127.0.0.1:%d/metrics" % p.metrics,
                "admin tcp://127.0.0.1:%d" % p.admin]

    def test_json_on_a_pipe_with_the_ready_line_as_a_field(self):
        p = Ports()
        r = Run(ops_config(p.http, p.tcp, p.metrics, p.admin))
        self.assertTrue(r.read_until(b'"node_ready"'), r.out.decode(errors="replace"))
        code, out = r.finish()
        self.assertEqual(code, 0, out)
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        self.assertGreater(len(lines), 10)
        for ln in lines:
            json.loads(ln)
        ready = [json.loads(ln) for ln in lines if '"node_ready"' in ln][0]
        self.assertTrue(ready["msg"].startswith("cmcp ready: MCP on "), ready)
        for e in self.endpoints(p):
            self.assertIn(e, ready["msg"])

    def test_text_on_a_terminal(self):
        p = Ports()
        r = Run(ops_config(p.http, p.tcp, p.metrics, p.admin), tty=True)
        self.assertTrue(r.read_until(b"cmcp ready:"), r.out.decode(errors="replace"))
        code, out = r.finish()
        self.assertEqual(code, 0, out)
        lines = [ln.rstrip("\r") for ln in out.splitlines() if ln.strip()]
        self.assertFalse([ln for ln in lines if ln.startswith("{")], "JSON on a terminal")
        bad = [ln for ln in lines if not TEXT_LINE.match(ln) and not ln.startswith("cmcpd: ")]
        self.assertEqual(bad, [])
        ready = [ln for ln in lines if "cmcp ready:" in ln]
        self.assertEqual(len(ready), 1, out)
        self.assertRegex(ready[0], r"^\S+ info +root +cmcp ready: MCP on http://")
        for e in self.endpoints(p):
            self.assertIn(e, ready[0])
        # an event with fields, as key=value
        self.assertTrue(any(re.search(r" listener-0 +listener_ready .*http_port=%d" % p.http, ln)
                            for ln in lines), out)

    def test_format_by_option(self):
        # json on a terminal, text on a pipe: [node] log_format, or its environment name
        p = Ports()
        r = Run(ops_config(p.http, p.tcp, p.metrics, p.admin, extra="[node]\nlog_format = json\n"),
                tty=True)
        self.assertTrue(r.read_until(b'"node_ready"'), r.out.decode(errors="replace"))
        code, out = r.finish()
        self.assertEqual(code, 0, out)
        p = Ports()
        r = Run(ops_config(p.http, p.tcp, p.metrics, p.admin),
                env={"CMCP_NODE_LOG_FORMAT": "text"})
        self.assertTrue(r.read_until(b"cmcp ready:"), r.out.decode(errors="replace"))
        code, out = r.finish()
        self.assertEqual(code, 0, out)
        self.assertFalse([ln for ln in out.splitlines() if ln.startswith("{")])

    def test_ready_line_names_only_what_runs(self):
        # no metrics HTTP, no admin socket: not named
        p = Ports()
        r = Run(ops_config(p.http, p.tcp, 0, p.admin).replace(
            "endpoint = tcp://127.0.0.1:%d" % p.admin, "endpoint ="))
        self.assertTrue(r.read_until(b'"node_ready"'), r.out.decode(errors="replace"))
        code, out = r.finish()
        ready = [json.loads(ln) for ln in out.splitlines() if '"node_ready"' in ln][0]
        self.assertIn("http://127.0.0.1:%d/mcp" % p.http, ready["msg"])
        self.assertNotIn("metrics", ready["msg"])
        self.assertNotIn("admin", ready["msg"])

    def test_port_held_by_another_program_is_one_plain_last_line(self):
        p = Ports()
        holder = socket.socket()
        holder.bind(("127.0.0.1", p.http))
        holder.listen()
        try:
            r = Run(ops_config(p.http, p.tcp, p.metrics, p.admin))
            r.read_until(b"the node did not start", timeout=30)
            deadline = time.monotonic() + 30
            while r.proc.poll() is None and time.monotonic() < deadline:
                r.read_until(b"\0", timeout=0.5)  # drain until it exits by itself
            code, out = r.finish(timeout=30)
        finally:
            holder.close()
        self.assertEqual(code, 3, out)
        last = out.strip().splitlines()[-1]
        self.assertTrue(last.startswith("cmcpd: the node did not start: "), last)
        self.assertIn("127.0.0.1:%d" % p.http, last)
        self.assertIn("another program", last)
        self.assertIn("[listener] http_port", last)


if __name__ == "__main__":
    main()
