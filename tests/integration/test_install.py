"""What `cmake --install` lays down and how the node runs under systemd: the files
(binaries, /etc/cmcp/cmcp.conf, the unit, the docs and monitoring files) in a temporary
prefix, the unit accepted by `systemd-analyze verify` (skipped with a message where it is
missing), and the readiness protocol spoken to a socket of the test's own: READY=1 with a
status once the tree is up, WATCHDOG=1 every half of WATCHDOG_USEC, STOPPING=1 on SIGTERM,
and no child of the node told about the socket."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cmcp_harness import BIN_DIR, Node, main, wait_for  # noqa: E402
from mcp_client import free_port, node_config  # noqa: E402

BUILD = os.path.dirname(os.path.abspath(BIN_DIR))


class InstallTest(unittest.TestCase):
    def test_install_into_a_prefix(self):
        prefix = tempfile.mkdtemp(prefix="cmcp-install-")
        self.addCleanup(shutil.rmtree, prefix, True)
        p = subprocess.run(["cmake", "--install", BUILD, "--prefix", prefix],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        for f in ("bin/cmcpd", "bin/cmcpctl", "etc/cmcp/cmcp.conf", "lib/systemd/system/cmcp.service",
                  "share/doc/cmcp/README.md", "share/doc/cmcp/operations.md",
                  "share/doc/cmcp/monitoring/cmcp-alerts.yml", "share/man/man8/cmcpd.8",
                  "share/man/man1/cmcpctl.1"):
            self.assertTrue(os.path.exists(os.path.join(prefix, f)), f)
        r = subprocess.run([os.path.join(prefix, "bin", "cmcpd"), "--help"], capture_output=True,
                           text=True, timeout=10)
        self.assertEqual(r.returncode, 0, r.stderr)
        # the installed configuration is the documented defaults, and it checks
        r = subprocess.run([os.path.join(prefix, "bin", "cmcpd"), "--check-config", "-c",
                            os.path.join(prefix, "etc", "cmcp", "cmcp.conf")],
                           capture_output=True, text=True, timeout=10,
                           env={k: v for k, v in os.environ.items() if not k.startswith("CMCP_")})
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with open(os.path.join(prefix, "lib", "systemd", "system", "cmcp.service")) as f:
            unit = f.read()
        for want in ("Type=notify", "WatchdogSec=", "CMCP_NODE_DATA_DIR=/var/lib/cmcp",
                     "CMCP_NODE_RUN_DIR=/run/cmcp", "StateDirectory=cmcp"):
            self.assertIn(want, unit)
        analyze = shutil.which("systemd-analyze")
        if not analyze:
            print("  systemd-analyze is not installed: the unit's syntax was not verified")
            return
        # verify checks that ExecStart exists: point it at this prefix
        unit_dir = tempfile.mkdtemp(prefix="cmcp-unit-")
        self.addCleanup(shutil.rmtree, unit_dir, True)
        exec_line = [ln for ln in unit.splitlines() if ln.startswith("ExecStart=")][0]
        local = unit.replace(exec_line, "ExecStart=%s -c %s" % (
            os.path.join(prefix, "bin", "cmcpd"), os.path.join(prefix, "etc", "cmcp", "cmcp.conf")))
        path = os.path.join(unit_dir, "cmcp.service")
        with open(path, "w") as f:
            f.write(local)
        v = subprocess.run([analyze, "verify", path], capture_output=True, text=True, timeout=60)
        problems = [ln for ln in (v.stdout + v.stderr).splitlines()
                    if "cmcp.service" in ln and "Documentation" not in ln]
        self.assertEqual(problems, [], v.stdout + v.stderr)

    def test_man_pages_match_the_binaries(self):
        # The man pages are written by hand: every option and command --help names is in
        # them, their version is the binaries', and groff renders them without a warning.
        src = os.environ.get("CMCP_SOURCE_DIR",
                             os.path.join(os.path.dirname(__file__), "..", ".."))
        for binary, page in (("cmcpd", "cmcpd.8"), ("cmcpctl", "cmcpctl.1")):
            with open(os.path.join(src, "docs", "man", page)) as f:
                roff = f.read()
            text = roff.replace("\\-", "-").replace("\\fR", "").replace("\\fP", "")
            h = subprocess.run([os.path.join(BIN_DIR, binary), "--help"], capture_output=True,
                               text=True, timeout=10)
            self.assertEqual(h.returncode, 0, h.stderr)
            options = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", h.stdout))
            missing = sorted(o for o in options if o not in text)
            self.assertEqual(missing, [], "%s: options --help names that %s lacks" % (binary, page))
            if binary == "cmcpctl":
                commands = re.findall(r"^  ([a-z_]+(?: (?:show|kill|status))?)\s", h.stdout.split(
                    "Commands")[1], re.M)
                self.assertGreater(len(commands), 20, h.stdout)
                missing = [c for c in commands if c not in text]
                self.assertEqual(missing, [], "commands --help names that cmcpctl.1 lacks")
            v = subprocess.run([os.path.join(BIN_DIR, binary), "--version"], capture_output=True,
                               text=True, timeout=10).stdout.split()[-1]
            self.assertIn('"cmcp %s"' % v, roff.splitlines()[0], "%s: .TH names another version"
                          % page)
            groff = shutil.which("groff")
            if not groff:
                print("  groff is not installed: %s was not rendered" % page)
                continue
            r = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-z", os.path.join(
                src, "docs", "man", page)], capture_output=True, text=True, timeout=30)
            self.assertEqual((r.returncode, r.stderr), (0, ""), page)

    def notify_socket(self):
        d = tempfile.mkdtemp(prefix="cmcp-notify-")
        self.addCleanup(shutil.rmtree, d, True)
        sock_path = os.path.join(d, "notify.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(sock_path)
        self.addCleanup(s.close)
        s.settimeout(0.2)
        return s, sock_path

    def test_readiness_watchdog_and_stopping(self):
        s, sock_path = self.notify_socket()
        got, stop = [], threading.Event()

        def reader():  # as systemd does: reads from the moment the service starts
            while not stop.is_set():
                try:
                    got.append(s.recv(4096).decode())
                except (socket.timeout, OSError):
                    pass
        th = threading.Thread(target=reader, daemon=True)
        th.start()
        self.addCleanup(lambda: (stop.set(), th.join(2)))
        http, tcp = free_port(), free_port()
        node = Node(node_config(http, tcp), env={"NOTIFY_SOCKET": sock_path,
                                                 "WATCHDOG_USEC": "300000"})
        node.start()
        self.addCleanup(node.cleanup)
        wait_for(lambda: any(m.startswith("READY=1") for m in got) and
                 sum("WATCHDOG=1" in m for m in got) >= 2, 20, 0.05,
                 what="READY=1 and two WATCHDOG=1")
        ready = [m for m in got if m.startswith("READY=1")]
        self.assertEqual(len(ready), 1, got)
        self.assertIn("STATUS=cmcp ready", ready[0])
        # only the root talks to systemd: its children do not know the socket
        for pid in node.tree_pids():
            if pid == node.proc.pid:
                continue
            try:
                with open("/proc/%d/environ" % pid, "rb") as f:
                    self.assertNotIn(b"NOTIFY_SOCKET=", f.read(), pid)
            except OSError:
                pass
        node.signal(signal.SIGTERM)
        wait_for(lambda: any(m.startswith("STOPPING=1") for m in got), 10, 0.05,
                 what="STOPPING=1 after SIGTERM")

    def test_a_receiver_that_does_not_read_never_holds_the_node(self):
        # Its queue (about 10 datagrams) fills with watchdog beats every 10 ms long before
        # the tree is up: the root drops beats rather than block its loop, and starts.
        s, sock_path = self.notify_socket()
        http, tcp = free_port(), free_port()
        node = Node(node_config(http, tcp), env={"NOTIFY_SOCKET": sock_path,
                                                 "WATCHDOG_USEC": "20000"})
        node.start()
        self.addCleanup(node.cleanup)
        self.assertIsNone(node.poll())
        from mcp_client import Session  # noqa: E402
        sess = Session(http)
        self.assertIn("result", sess.call("ping")[0])
        sess.close()

if __name__ == "__main__":
    main()
