#!/usr/bin/env python3
"""
The Docker Swarm stack, deployed and broken on a real engine (docs/deployment.md).

Starts its own dockerd (data root, exec root and socket in a temporary
directory; stopped by its pid at the end), builds the image from this build's
binaries (containers/build-image.sh, FROM scratch), initialises a one-node
swarm on 127.0.0.1 and deploys containers/docker-stack.yml as it is shipped:
three cmcp tasks on an overlay network, the cookie as a docker secret, the
configuration as a docker config, HAProxy in front. Then, in order, through
HAProxy only:

  1. every task healthy and one cluster of three formed (cmcpctl in a task);
  2. the official MCP TypeScript SDK client;
  3. docker kill of one task under a write load: swarm replaces it, it rejoins
     under its slot's name with a new incarnation, 0 acknowledged writes lost;
  4. docker service update --image (a rebuilt tag) under load: the stack rolls,
     0 acknowledged writes lost; failed requests are counted and shown;
  5. docker service scale to 4 and back to 3 (the fourth drained and left
     first, as docs/deployment.md says), under load, 0 lost;
  6. a task with another cookie secret is refused by every member;
  7. the cookie rotated as docs/deployment.md says (a new secret, all tasks at
     once): the cluster forms again and nothing acknowledged is lost;
  8. containers/docker-compose.yml with Debian's docker-compose: a local
     three-node cluster behind HAProxy on the same engine.

Exits 77 (CTest: skipped) with the reason when no engine can run here: not
root, dockerd missing, another engine running on this host, or dockerd not
starting. The writes are checked by tests/cluster/checker.py.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("CMCP_SOURCE_DIR", os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "cluster"))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))

from checker import Workload  # noqa: E402
from cmcp_harness import Timed, wait_for  # noqa: E402
from mcp_client import free_port  # noqa: E402

CONTAINERS = os.path.join(SRC, "containers")
NODE_DIR = os.path.join(SRC, "tests", "node")
BIN_DIR = os.environ.get("CMCP_BIN_DIR", os.path.join(SRC, "build", "bin"))
STACK = "cmcpt"
SERVICE = STACK + "_cmcp"
SKIP = 77


def other_engine():
    """The pid of a dockerd already running on this host, or None."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/comm" % pid) as f:
                if f.read().strip() == "dockerd":
                    return int(pid)
        except OSError:
            pass
    return None


class Engine:
    """A dockerd of our own, in a temporary directory, and its client."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="cmcp-sw-", dir="/tmp")
        self.sock = os.path.join(self.dir, "sock")
        self.log_path = os.path.join(self.dir, "dockerd.log")
        self.proc = None
        self.client = "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) \
            else shutil.which("docker")
        self.links_before = set(os.listdir("/sys/class/net"))

    def start(self):
        """None once the engine answers, else why it did not start."""
        if not self.client:
            return "no docker client (apt-get install docker.io)"
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", os.path.join(self.dir, "root"),
             "--exec-root", os.path.join(self.dir, "x"), "--pidfile",
             os.path.join(self.dir, "pid"), "-H", "unix://" + self.sock, "--bridge=none",
             "--default-address-pool", "base=10.213.0.0/16,size=24"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return "dockerd exited with status %d: %s" % (self.proc.returncode,
                                                              self.log_tail())
            if self.docker("version", "--format", "{{.Server.Version}}", check=False,
                           timeout=10).returncode == 0:
                return None
            time.sleep(0.5)
        return "dockerd did not answer within 40 s: %s" % self.log_tail()

    def log_tail(self, n=8):
        try:
            with open(self.log_path) as f:
                return " | ".join(line.strip() for line in f.readlines()[-n:])
        except OSError:
            return "(no log)"

    def docker(self, *args, check=True, timeout=180, input=None):
        env = dict(os.environ, DOCKER_HOST="unix://" + self.sock)
        p = subprocess.run([self.client, *args], capture_output=True, text=True,
                           timeout=timeout, env=env, input=input,
                           cwd=CONTAINERS)
        if check and p.returncode != 0:
            raise AssertionError("docker %s failed (%d): %s %s" % (
                " ".join(args), p.returncode, p.stdout[-1500:], p.stderr[-1500:]))
        return p

    def stop(self):
        """Everything we started, by pid, and everything we made on the host."""
        if self.proc and self.proc.poll() is None:
            self.docker("stack", "rm", STACK, check=False, timeout=60)
            self.docker("swarm", "leave", "--force", check=False, timeout=60)
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        # Whatever the engine left mounted under its directories, then the directory.
        with open("/proc/mounts") as f:
            mounts = [line.split()[1] for line in f if self.dir in line.split()[1]]
        for m in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
        for link in set(os.listdir("/sys/class/net")) - self.links_before:
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


class Stack:
    """The deployed stack and what a test reads of it."""

    def __init__(self, eng):
        self.eng = eng
        self.http = free_port()
        self.tcp = free_port()
        self.stats = free_port()

    def tasks(self):
        """[(container id, slot, status)] of the cmcp service's running containers."""
        p = self.eng.docker("ps", "--filter", "label=com.docker.swarm.service.name=" + SERVICE,
                            "--format", '{{.ID}} {{.Label "com.docker.swarm.task.name"}} '
                            '{{.Status}}', check=False, timeout=30)
        out = []
        for line in p.stdout.splitlines():
            cid, name, status = line.split(" ", 2)
            out.append((cid, int(name.split(".")[1]), status))
        return out

    def container(self, slot):
        for cid, s, status in self.tasks():
            if s == slot and "healthy" in status and "unhealthy" not in status:
                return cid
        return None

    def ctl(self, cid, *args, timeout=60):
        """cmcpctl --json ARGS inside a task; the parsed answer."""
        p = self.eng.docker("exec", cid, "cmcpctl", "--json", *args, timeout=timeout,
                            check=False)
        if p.returncode != 0:
            raise AssertionError("cmcpctl %s in %s failed: %s %s" % (
                " ".join(args), cid, p.stdout[-800:], p.stderr[-800:]))
        return json.loads(p.stdout)

    def nodes(self):
        """{node id: member} as a healthy task's map says, or None."""
        for cid, _, status in self.tasks():
            if "(healthy)" not in status:
                continue
            try:
                r = self.ctl(cid, "nodes", timeout=20)
            except (AssertionError, ValueError, subprocess.TimeoutExpired):
                continue
            return {n["id"]: n for n in r.get("nodes", [])}
        return None

    def up(self):
        n = self.nodes() or {}
        return sorted(k for k, v in n.items() if v.get("state") == "up")

    def haproxy_up(self):
        """The cmcp servers HAProxy sends HTTP requests to."""
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/stats;csv" % self.stats,
                                        timeout=3) as r:
                rows = r.read().decode().splitlines()
        except OSError:
            return []
        return [row.split(",")[1] for row in rows
                if row.startswith("cmcp_http,") and row.split(",")[17] == "UP"]

    def wait_formed(self, n, timeout=180.0):
        def formed():
            healthy = [t for t in self.tasks() if "(healthy)" in t[2]]
            if len(healthy) < n:
                return False
            nodes = self.nodes() or {}
            up = [v for v in nodes.values() if v.get("state") == "up"]
            owned = sum(int(v.get("partitions", 0)) for v in up)
            return len(up) == n and owned == 256 and len(self.haproxy_up()) >= n and nodes
        return wait_for(formed, timeout=timeout, interval=1.0,
                        what="%d cmcp tasks healthy, one cluster of %d, all behind HAProxy"
                        % (n, n))

    def logs(self, cid):
        p = self.eng.docker("logs", cid, check=False, timeout=30)
        return p.stdout + p.stderr


def report(name, w, t0):
    """Checks the workload through HAProxy; prints what happened; (passed, lost, unexpected)."""
    passed, lost, unexpected, summary = w.check([0])
    failed = [o for o in w.history.ops if o.outcome in ("fail", "info")]
    print("  %s: %d passed, %d failed (%s) in %.1f s" % (
        name, passed, len(lost) + len(unexpected), summary, time.monotonic() - t0))
    notes = {}
    for o in failed:
        notes[(o.outcome, o.note[:90])] = notes.get((o.outcome, o.note[:90]), 0) + 1
    for (outcome, note), k in sorted(notes.items(), key=lambda x: -x[1])[:8]:
        print("    %4d %s: %s" % (k, outcome, note))
    for sid, key, value, got, _ in lost:
        print("    LOST %s %s = %r (read %r)" % (sid, key, value, got))
    for sid, key, value, got, note in unexpected:
        print("    UNEXPECTED %s %s = %r visible although the write failed: %s"
              % (sid, key, value, note))
    return passed, lost, unexpected


class SwarmTest(Timed):
    eng = None
    st = None

    @classmethod
    def setUpClass(cls):
        cls.eng, cls.st = ENGINE, Stack(ENGINE)
        eng, st = cls.eng, cls.st
        t0 = time.monotonic()
        build = [os.path.join(CONTAINERS, "build-image.sh"), "--bin-dir", BIN_DIR,
                 "--docker", eng.client]
        env = dict(os.environ, DOCKER_HOST="unix://" + eng.sock)
        for args in (["--tag", "cmcp:test-a", "--haproxy", "cmcp-haproxy:test"],
                     ["--tag", "cmcp:test-b"]):
            p = subprocess.run(build + args, capture_output=True, text=True, timeout=300, env=env)
            assert p.returncode == 0, "build-image.sh failed: %s %s" % (p.stdout, p.stderr)
            print("  " + p.stdout.strip().replace("\n", "\n  "))
        eng.docker("swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr",
                   "127.0.0.1:2377", "--default-addr-pool", "10.214.0.0/16")
        cookie = os.urandom(36).hex()
        eng.docker("secret", "create", STACK + "_cookie_v1", "-", input=cookie)
        env = dict(os.environ, DOCKER_HOST="unix://" + eng.sock, CMCP_IMAGE="cmcp:test-a",
                   CMCP_HAPROXY_IMAGE="cmcp-haproxy:test", CMCP_HTTP_PORT=str(st.http),
                   CMCP_TCP_PORT=str(st.tcp), CMCP_STATS_PORT=str(st.stats),
                   CMCP_COOKIE_SECRET=STACK + "_cookie_v1")
        p = subprocess.run([eng.client, "stack", "deploy", "-c", "docker-stack.yml", STACK],
                           capture_output=True, text=True, timeout=120, env=env, cwd=CONTAINERS)
        assert p.returncode == 0, "stack deploy failed: %s %s" % (p.stdout, p.stderr)
        st.wait_formed(3)
        print("  deployed and formed in %.1f s (HAProxy on 127.0.0.1:%d)"
              % (time.monotonic() - t0, st.http))

    def workload(self, nclients=6):
        return Workload([("127.0.0.1", self.st.http)], nclients=nclients,
                        homes=[0] * nclients, pause=0.03, max_ops=1000)  # kv: 1,024 keys a session

    def assert_nothing_lost(self, name, w, t0):
        passed, lost, unexpected = report(name, w, t0)
        self.assertEqual(len(lost) + len(unexpected), 0,
                         "%s: acknowledged writes lost or failed writes visible" % name)
        self.assertGreater(passed, 20, "%s: too few acknowledged writes" % name)

    def test_1_one_cluster_of_three_behind_haproxy(self):
        st = self.st
        nodes = st.nodes()
        self.assertEqual(sorted(nodes), ["cmcp-1", "cmcp-2", "cmcp-3"], nodes)
        for n in nodes.values():
            self.assertEqual(n["state"], "up", n)
            self.assertRegex(n["endpoint"], r"^10\.214\.\d+\.\d+:7400$", n)
        # the image's own health check, and the serving one HAProxy uses
        cid = st.container(1)
        p = self.eng.docker("exec", cid, "cmcpd", "-c", "/etc/cmcp/cmcp.conf",
                            "--health-check=serving", check=False)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["status"], "ok")
        # the secret is a file only its user may read; the environment holds no cookie
        env = self.eng.docker("inspect", "-f", "{{json .Config.Env}}", cid).stdout
        self.assertNotIn("COOKIE=", env.replace("CMCP_COOKIE_FILE=", ""))

    def test_2_typescript_sdk_client_through_haproxy(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CMCP_")}
        p = subprocess.run(["node", os.path.join(NODE_DIR, "sdk_client.mjs"), "http",
                            "http://127.0.0.1:%d/mcp" % self.st.http],
                           capture_output=True, text=True, timeout=90, env=env, cwd=NODE_DIR)
        self.assertEqual(p.returncode, 0, "sdk client failed:\n%s\n%s"
                         % (p.stdout[-2000:], p.stderr[-3000:]))
        report_ = json.loads(p.stdout.strip().splitlines()[-1])
        steps = {x["name"]: x for x in report_["steps"]}
        self.assertEqual(steps["echo"]["text"], "hello from the SDK")
        self.assertIn("teal", steps["kv"]["text"])
        print("  SDK client: %d steps ok, session %s" % (len(steps), report_.get("sessionId")))

    def test_3_killed_task_is_replaced_and_rejoins(self):
        st = self.st
        before = st.nodes()["cmcp-2"]["incarnation"]
        old = st.container(2)
        w = self.workload()
        w.start()
        t0 = time.monotonic()
        try:
            time.sleep(3)
            self.eng.docker("kill", old)
            wait_for(lambda: st.container(2) not in (None, old), timeout=120, interval=1.0,
                     what="swarm to replace the killed task")
            wait_for(lambda: (st.nodes() or {}).get("cmcp-2", {}).get("incarnation")
                     not in (None, before) and len(st.up()) == 3, timeout=120, interval=1.0,
                     what="cmcp-2 to rejoin with a new incarnation")
            rejoined = time.monotonic() - t0 - 3
            time.sleep(3)
        finally:
            w.stop()
        print("  task of slot 2 killed; replaced and rejoined as a new incarnation in %.1f s"
              % rejoined)
        self.assert_nothing_lost("kill", w, t0)

    def test_4_rolling_update_under_load(self):
        st = self.st
        w = self.workload()
        w.start()
        t0 = time.monotonic()
        try:
            time.sleep(2)
            self.eng.docker("service", "update", "-d", "--image", "cmcp:test-b",
                            "--update-monitor", "5s", "--update-delay", "2s", SERVICE)
            self.wait_update_completed(400)
            st.wait_formed(3, timeout=120)
            images = self.eng.docker("service", "ps", SERVICE, "--filter",
                                     "desired-state=running", "--format", "{{.Image}}").stdout
            self.assertEqual(set(images.split()), {"cmcp:test-b"}, images)
            time.sleep(2)
        finally:
            w.stop()
        print("  rolled 3 tasks to cmcp:test-b in %.1f s" % (time.monotonic() - t0))
        self.assert_nothing_lost("roll", w, t0)

    def update_state(self):
        return self.eng.docker("service", "inspect", "-f", "{{if .UpdateStatus}}"
                               "{{.UpdateStatus.State}}{{end}}", SERVICE).stdout.strip()

    def wait_update_completed(self, timeout):
        """Until the service's update ends; it must end completed (not rolled back)."""
        ended = ("completed", "rollback_completed", "paused", "rollback_paused")
        state = wait_for(lambda: self.update_state() in ended and self.update_state(),
                         timeout=timeout, interval=2.0, what="the service update to end")
        self.assertEqual(state, "completed", "the update did not complete: %s" % state)

    def test_5_scale_up_and_down(self):
        st = self.st
        w = self.workload()
        w.start()
        t0 = time.monotonic()
        try:
            self.eng.docker("service", "scale", "-d", SERVICE + "=4")
            st.wait_formed(4, timeout=180)
            print("  scaled to 4 in %.1f s" % (time.monotonic() - t0))
            # the way down: the fourth hands its partitions over and leaves, then goes
            cid = st.container(4)
            r = st.ctl(cid, "drain", timeout=60)
            self.assertEqual(r.get("owned_left", 0), 0, r)
            st.ctl(cid, "leave", timeout=60)
            self.eng.docker("service", "scale", "-d", SERVICE + "=3")
            wait_for(lambda: len(st.tasks()) == 3 and st.up() == ["cmcp-1", "cmcp-2", "cmcp-3"]
                     and (st.nodes() or {}).get("cmcp-4", {}).get("state") == "left",
                     timeout=120, interval=1.0, what="3 tasks, cmcp-4 left")
            time.sleep(2)
        finally:
            w.stop()
        print("  scaled 4 -> 3 (drain, leave, scale) in %.1f s" % (time.monotonic() - t0))
        self.assert_nothing_lost("scale", w, t0)

    def test_6_a_task_with_another_cookie_is_refused(self):
        st, eng = self.st, self.eng
        eng.docker("secret", "create", STACK + "_wrong", "-", input=os.urandom(36).hex())
        t0 = time.monotonic()
        eng.docker("service", "create", "-d", "--name", STACK + "_intruder",
                   "--network", STACK + "_cmcp", "--hostname", "intruder",
                   "--secret", "source=%s_wrong,target=cmcp_cookie,uid=10001,gid=10001,mode=0400"
                   % STACK,
                   "--config", "source=%s_cmcp_conf,target=/etc/cmcp/cmcp.conf" % STACK,
                   "-e", "CMCP_CLUSTER_NODE_ID=intruder", "cmcp:test-b")
        try:
            def refused():
                return [cid for cid, _, _ in st.tasks()
                        if "peer_refused" in st.logs(cid) and "intruder" not in
                        json.dumps(st.nodes() or {})]
            wait_for(refused, timeout=90, interval=2.0,
                     what="a member to log peer_refused for the intruder")
            self.assertNotIn("intruder", st.nodes())
            self.assertEqual(st.up(), ["cmcp-1", "cmcp-2", "cmcp-3"])
            p = eng.docker("ps", "-q", "--filter", "label=com.docker.swarm.service.name=%s_intruder"
                           % STACK)
            intruder = p.stdout.split()[0]
            p = eng.docker("exec", intruder, "cmcpd", "-c", "/etc/cmcp/cmcp.conf",
                           "--health-check=serving", check=False)
            self.assertNotEqual(p.returncode, 0, "the intruder says it serves: %s" % p.stdout)
        finally:
            eng.docker("service", "rm", STACK + "_intruder", check=False)
        print("  the task with another cookie was refused (peer_refused) in %.1f s"
              % (time.monotonic() - t0))


    def test_7_cookie_rotated_in_one_step(self):
        """docs/deployment.md's rotation: a new secret, every task restarted with it at once;
        sessions and their values survive (they are on the tasks' volumes)."""
        st, eng = self.st, self.eng
        w = Workload([("127.0.0.1", st.http)], nclients=2, homes=[0, 0], pause=0.02,
                     max_ops=60)
        w.start()
        w.stop_ev.wait(2)
        w.stop()
        eng.docker("secret", "create", STACK + "_cookie_v2", "-", input=os.urandom(36).hex())
        t0 = time.monotonic()
        eng.docker("service", "update", "-d", "--update-parallelism", "0", "--secret-rm",
                   STACK + "_cookie_v1", "--secret-add",
                   "source=%s_cookie_v2,target=cmcp_cookie,uid=10001,gid=10001,mode=0400"
                   % STACK, SERVICE)
        self.wait_update_completed(300)
        st.wait_formed(3, timeout=180)
        took = time.monotonic() - t0
        mounted = eng.docker("service", "inspect", "-f",
                             "{{range .Spec.TaskTemplate.ContainerSpec.Secrets}}"
                             "{{.SecretName}} {{end}}", SERVICE).stdout.split()
        self.assertEqual(mounted, [STACK + "_cookie_v2"])
        print("  cookie rotated (all tasks at once) and the cluster formed again in %.1f s"
              % took)
        self.assert_nothing_lost("rotation", w, t0)

    def test_8_compose_file_runs_a_local_cluster(self):
        """containers/docker-compose.yml with Debian's docker-compose: three nodes and
        HAProxy on this engine, one cluster, writes read back through HAProxy."""
        compose = shutil.which("docker-compose")
        if not compose:
            self.skipTest("docker-compose is not installed (apt-get install docker-compose)")
        eng = self.eng
        cookie = os.path.join(eng.dir, "compose-cookie")
        with open(cookie, "w") as f:
            f.write(os.urandom(36).hex())
        os.chown(cookie, 10001, 10001)
        os.chmod(cookie, 0o400)
        http, tcp, stats = free_port(), free_port(), free_port()
        env = dict(os.environ, DOCKER_HOST="unix://" + eng.sock, CMCP_IMAGE="cmcp:test-b",
                   CMCP_HAPROXY_IMAGE="cmcp-haproxy:test", CMCP_HTTP_PORT=str(http),
                   CMCP_TCP_PORT=str(tcp), CMCP_STATS_PORT=str(stats), CMCP_COOKIE_PATH=cookie)
        base = [compose, "-p", "cmcpc", "-f", os.path.join(CONTAINERS, "docker-compose.yml")]

        def run(*args, timeout=240):
            p = subprocess.run(base + list(args), capture_output=True, text=True, env=env,
                               timeout=timeout, cwd=CONTAINERS)
            self.assertEqual(p.returncode, 0, "docker-compose %s: %s %s"
                             % (" ".join(args), p.stdout[-1500:], p.stderr[-1500:]))
            return p
        t0 = time.monotonic()
        run("up", "-d")
        try:
            def formed():
                p = eng.docker("exec", "cmcpc_cmcp-1_1", "cmcpctl", "--json", "nodes",
                               check=False, timeout=20)
                if p.returncode != 0:
                    return False
                up = [n for n in json.loads(p.stdout).get("nodes", []) if n["state"] == "up"]
                return len(up) == 3 and sum(int(n.get("partitions", 0)) for n in up) == 256
            wait_for(formed, timeout=120, interval=1.0, what="the compose cluster formed")

            def behind_haproxy():
                try:
                    with urllib.request.urlopen("http://127.0.0.1:%d/stats;csv" % stats,
                                                timeout=3) as r:
                        rows = r.read().decode().splitlines()
                except OSError:
                    return False
                return len([x for x in rows if x.startswith("cmcp_http,cmcp")
                            and x.split(",")[17] == "UP"]) == 3
            wait_for(behind_haproxy, timeout=60, interval=1.0, what="3 nodes UP in HAProxy")
            print("  compose: 3 nodes formed behind HAProxy in %.1f s" % (time.monotonic() - t0))
            w = Workload([("127.0.0.1", http)], nclients=3, homes=[0] * 3, pause=0.01,
                         max_ops=100)
            w.start()
            w.stop_ev.wait(3)
            w.stop()
            self.assert_nothing_lost("compose", w, t0)
        finally:
            run("down", "-v", timeout=180)


ENGINE = None


def main():
    global ENGINE
    why = None
    if os.geteuid() != 0:
        why = "not root (dockerd needs root)"
    elif not shutil.which("dockerd"):
        why = "dockerd is not installed (apt-get install docker.io)"
    elif other_engine():
        why = ("another Docker engine runs on this host (dockerd pid %d); a swarm of our own "
               "needs the host's swarm ports: stop it, or run make test-swarm elsewhere"
               % other_engine())
    elif not os.access(os.path.join(BIN_DIR, "cmcpd"), os.X_OK):
        print("test_swarm: no executable %s/cmcpd (set CMCP_BIN_DIR)" % BIN_DIR)
        sys.exit(1)
    if not why:
        ENGINE = Engine()
        why = ENGINE.start()
        if why:
            ENGINE.stop()
    # make test prints this after ctest, which shows no output of a skipped test
    note = os.path.join(BIN_DIR, "..", "swarm-skipped.txt")
    if why:
        print("test_swarm: SKIPPED: %s" % why)
        with open(note, "w") as f:
            f.write(why + "\n")
        sys.exit(SKIP)
    if os.path.exists(note):
        os.unlink(note)
    t0 = time.monotonic()
    try:
        suite = unittest.defaultTestLoader.loadTestsFromTestCase(SwarmTest)
        if len(sys.argv) > 1:
            suite = unittest.defaultTestLoader.loadTestsFromNames(sys.argv[1:],
                                                                  sys.modules["__main__"])
        res = unittest.TextTestRunner(verbosity=2, stream=sys.stdout, failfast=False).run(suite)
    finally:
        if os.environ.get("CMCP_KEEP_TMP"):
            print("test_swarm: engine left running (CMCP_KEEP_TMP): DOCKER_HOST=unix://%s"
                  % ENGINE.sock)
        else:
            ENGINE.stop()
    bad = len(res.failures) + len(res.errors)
    print("\n== test_swarm.py: %d run, %d failed, %d errors in %.1f s: %s" % (
        res.testsRun, len(res.failures), len(res.errors), time.monotonic() - t0,
        "OK" if bad == 0 else "FAILED"))
    sys.exit(0 if bad == 0 and res.testsRun > 0 else 1)


if __name__ == "__main__":
    main()
