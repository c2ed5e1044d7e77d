"""The monitoring files cmcp ships (docs/monitoring/): the Prometheus alert rules
pass `promtool check rules`, the Grafana dashboard is a dashboard, and every metric
either of them names is one the docs list (so a renamed metric cannot leave a rule
or a panel silently empty)."""
import json
import os
import re
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cmcp_harness import main  # noqa: E402

SRC = os.environ.get("CMCP_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
MON = os.path.join(SRC, "docs", "monitoring")
NAME = re.compile(r"\b((?:cmcp|process)_[a-z0-9_]+)")


def documented():
    text = ""
    for f in ("operations.md", "cluster.md"):
        with open(os.path.join(SRC, "docs", f)) as fh:
            text += fh.read()
    return text


def metric_names(text):
    out = set()
    for n in NAME.findall(text):
        for suffix in ("_bucket", "_sum", "_count"):
            if n.endswith(suffix) and n.startswith("cmcp_request_duration_seconds"):
                n = n[:-len(suffix)]
        out.add(n)
    return out


class MonitoringTest(unittest.TestCase):
    def test_alert_rules_pass_promtool(self):
        promtool = shutil.which("promtool")
        self.assertTrue(promtool, "promtool missing: make test installs it (tools/install-deps.sh)")
        p = subprocess.run([promtool, "check", "rules", os.path.join(MON, "cmcp-alerts.yml")],
                           capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, (p.stdout + p.stderr).decode())
        self.assertIn("SUCCESS", p.stdout.decode())

    def test_dashboard_is_a_dashboard(self):
        with open(os.path.join(MON, "cmcp-dashboard.json")) as f:
            d = json.load(f)
        self.assertEqual(d["title"], "cmcp")
        self.assertGreaterEqual(len(d["panels"]), 10)
        ids = [p["id"] for p in d["panels"]]
        self.assertEqual(len(ids), len(set(ids)))
        for p in d["panels"]:
            self.assertTrue(p["targets"], p["title"])
            for t in p["targets"]:
                self.assertTrue(metric_names(t["expr"]), (p["title"], t["expr"]))

    def test_every_metric_named_is_documented(self):
        docs = documented()
        for f in ("cmcp-alerts.yml", "cmcp-dashboard.json"):
            with open(os.path.join(MON, f)) as fh:
                names = metric_names(fh.read())
            self.assertTrue(names, f)
            missing = [n for n in sorted(names) if "`%s`" % n not in docs and
                       "`%s{" % n not in docs and
                       not (n.startswith("cmcp_cluster_") and "`cmcp_cluster_*`" in docs)]
            self.assertEqual(missing, [], "%s names metrics the docs do not list" % f)


if __name__ == "__main__":
    main()
