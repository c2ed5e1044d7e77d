#!/usr/bin/env python3
"""
The deployment files of containers/ say what docs/deployment.md says they do,
without an engine: the swarm stack, the compose file and the Kubernetes
manifests parse and hold their promises (the cookie only as a secret the node's
user alone may read, one node name per slot or pod, rolling one at a time with
rollback, peers found through DNS); the node accepts the configuration each of
them gives it (cmcpd --check-config with the same environment); HAProxy accepts
its configuration. tests/swarm/test_swarm.py deploys the stack for real.

The Kubernetes manifests are checked here only: `kubectl apply --dry-run=client`
needs an API server, which this machine does not have; it runs when one answers.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cmcp_harness import Timed, cmcpd_path, main  # noqa: E402

import yaml  # noqa: E402

SRC = os.environ.get("CMCP_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
C = os.path.join(SRC, "containers")


def load(path):
    with open(os.path.join(C, path)) as f:
        return list(yaml.safe_load_all(f))


class DeployFilesTest(Timed):
    def check_config(self, conf_text, env):
        """cmcpd --check-config of conf_text with env (and a cookie file that exists)."""
        with tempfile.TemporaryDirectory() as d:
            conf = os.path.join(d, "cmcp.conf")
            with open(conf, "w") as f:
                f.write(conf_text)
            cookie = os.path.join(d, "cookie")
            with open(cookie, "w") as f:
                f.write(os.urandom(32).hex())
            os.chmod(cookie, 0o600)
            full = {k: v for k, v in os.environ.items() if not k.startswith("CMCP_")}
            full.update(env)
            full.update({"CMCP_COOKIE_FILE": cookie, "CMCP_ADMIN_COOKIE_FILE": cookie,
                         "CMCP_NODE_DATA_DIR": os.path.join(d, "data"),
                         "CMCP_NODE_RUN_DIR": os.path.join(d, "run"),
                         # this host's name resolves to loopback only: auto would refuse it
                         "CMCP_CLUSTER_ADVERTISE": "127.0.0.1:7400"})
            p = subprocess.run([cmcpd_path(), "-c", conf, "--check-config"], env=full,
                               capture_output=True, text=True, timeout=30, cwd=d)
            self.assertEqual(p.returncode, 0, p.stdout[-1500:] + p.stderr[-1500:])
            self.assertIn("configuration OK", p.stdout)

    def test_swarm_stack(self):
        (stack,) = load("docker-stack.yml")
        svc = stack["services"]["cmcp"]
        # the cookie: a secret only the node's user may read, never the environment
        (sec,) = svc["secrets"]
        self.assertEqual((sec["target"], sec["uid"], sec["mode"]), ("cmcp_cookie", "10001", 0o400))
        self.assertTrue(stack["secrets"]["cmcp_cookie"]["external"])
        self.assertFalse([k for k in svc["environment"] if "COOKIE" in k])
        self.assertEqual(svc["configs"][0]["target"], "/etc/cmcp/cmcp.conf")
        # one name and one volume per slot
        self.assertEqual(svc["environment"]["CMCP_CLUSTER_NODE_ID"], "cmcp-{{.Task.Slot}}")
        self.assertIn("{{.Task.Slot}}", stack["volumes"]["cmcp-data"]["name"])
        d = svc["deploy"]
        self.assertGreaterEqual(d["replicas"], 3)
        self.assertEqual(d["update_config"]["parallelism"], 1)
        self.assertEqual(d["update_config"]["failure_action"], "rollback")
        self.assertEqual(d["restart_policy"]["condition"], "any")
        self.assertIn("memory", d["resources"]["limits"])
        self.assertEqual(d["placement"]["preferences"], [{"spread": "node.id"}])
        self.assertEqual(stack["networks"]["cmcp"]["driver"], "overlay")
        self.assertNotIn("ports", svc)  # clients come through HAProxy only
        self.assertEqual(sorted(p["target"] for p in stack["services"]["haproxy"]["ports"]),
                         [8080, 8081, 8404])
        with open(os.path.join(C, "cmcp.conf")) as f:
            conf = f.read()
        self.assertIn("seeds = tasks.cmcp:7400", conf)
        self.check_config(conf, {"CMCP_CLUSTER_NODE_ID": "cmcp-1", "CMCP_NODE_NAME": "cmcp-1"})

    def test_compose_file(self):
        (comp,) = load("docker-compose.yml")
        nodes = {k: v for k, v in comp["services"].items() if k.startswith("cmcp-")}
        self.assertEqual(sorted(nodes), ["cmcp-1", "cmcp-2", "cmcp-3"])
        ids = set()
        for name, s in nodes.items():
            self.assertEqual(s["environment"]["CMCP_CLUSTER_NODE_ID"], name)
            ids.add(s["environment"]["CMCP_CLUSTER_NODE_ID"])
            self.assertIn("cmcp", s["networks"]["cmcp"]["aliases"])
            self.assertEqual(s["secrets"], ["cmcp_cookie"])
            self.assertFalse([k for k in s["environment"] if "COOKIE" in k])
        self.assertEqual(len(ids), 3)
        self.assertEqual(comp["services"]["haproxy"]["environment"]["CMCP_NODES"], "cmcp")
        with open(os.path.join(C, "cmcp.conf")) as f:
            self.check_config(f.read(), nodes["cmcp-2"]["environment"])

    def test_kubernetes_manifests(self):
        docs = load("k8s/cmcp.yaml")
        kinds = sorted(d["kind"] for d in docs)
        self.assertEqual(kinds, ["ConfigMap", "PodDisruptionBudget", "Service", "Service",
                                 "StatefulSet"])
        by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
        sts = by[("StatefulSet", "cmcp")]["spec"]
        headless = by[("Service", sts["serviceName"])]["spec"]
        self.assertEqual(headless["clusterIP"], "None")
        self.assertTrue(headless["publishNotReadyAddresses"])
        labels = sts["template"]["metadata"]["labels"]
        for sel in (sts["selector"]["matchLabels"], headless["selector"],
                    by[("Service", "cmcp-mcp")]["spec"]["selector"],
                    by[("PodDisruptionBudget", "cmcp")]["spec"]["selector"]["matchLabels"]):
            self.assertTrue(set(sel.items()) <= set(labels.items()), sel)
        self.assertEqual(sts["podManagementPolicy"], "Parallel")
        pod = sts["template"]["spec"]
        self.assertTrue(pod["securityContext"]["runAsNonRoot"])
        (ctr,) = pod["containers"]
        ports = {p["containerPort"] for p in ctr["ports"]}
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            self.assertIn(ctr[probe]["httpGet"]["port"], ports)
        self.assertEqual(ctr["readinessProbe"]["httpGet"]["path"], "/health")
        self.assertEqual(ctr["livenessProbe"]["httpGet"]["path"], "/ready")
        env = {e["name"]: e for e in ctr["env"]}
        self.assertEqual(env["CMCP_CLUSTER_NODE_ID"]["valueFrom"]["fieldRef"]["fieldPath"],
                         "metadata.name")
        self.assertFalse([e for e in ctr["env"] if "COOKIE" in e["name"] and "value" in e
                          and not e["value"].startswith("/")])
        vols = {v["name"]: v for v in pod["volumes"]}
        self.assertEqual(vols["cookie"]["secret"]["defaultMode"], 0o400)
        mounts = {m["name"]: m["mountPath"] for m in ctr["volumeMounts"]}
        self.assertEqual(env["CMCP_COOKIE_FILE"]["value"], mounts["cookie"] + "/cmcp_cookie")
        self.assertEqual(sts["volumeClaimTemplates"][0]["metadata"]["name"], "data")
        conf = by[("ConfigMap", "cmcp-config")]["data"]["cmcp.conf"]
        self.check_config(conf, {"CMCP_CLUSTER_NODE_ID": "cmcp-0", "CMCP_NODE_NAME": "cmcp-0",
                                 "CMCP_CLUSTER_SEEDS": "cmcp.default.svc.cluster.local:7400"})
        kubectl = shutil.which("kubectl")
        alive = kubectl and subprocess.run([kubectl, "cluster-info"], capture_output=True,
                                           timeout=20).returncode == 0
        if alive:
            p = subprocess.run([kubectl, "apply", "--dry-run=client", "-f",
                                os.path.join(C, "k8s", "cmcp.yaml")], capture_output=True,
                               text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
        else:
            print("  kubectl apply --dry-run=client not run: no Kubernetes API server answers "
                  "here (the manifests are checked structurally only)")

    def test_haproxy_config(self):
        hap = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not os.access(hap, os.X_OK):
            self.skipTest("haproxy is not installed (make deps-test installs it)")
        p = subprocess.run([hap, "-c", "-f", os.path.join(C, "haproxy.cfg")],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)


if __name__ == "__main__":
    unittest.TestCase.maxDiff = None
    main()
