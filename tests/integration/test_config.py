"""Configuration: layering (defaults < file < CMCP_* env) and errors (exit 2, file:line)."""

import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cmcp_harness import (Timed, cmcpd_path, main, run_config_check, sup_section,  # noqa: E402
                          worker_section)

GOOD = sup_section("root", "one_for_one", ["a", "sub"]) + worker_section("a") + \
    sup_section("sub", "rest_for_one", ["x"]) + worker_section("x", count=2)


def line_of(text, needle):
    """1-based number of the first line of text that contains needle."""
    for i, ln in enumerate(text.splitlines(), 1):
        if needle in ln:
            return i
    raise AssertionError("%r not in config" % needle)


class Reference(Timed):
    def test_every_key_documented(self):
        # cmcpd --config-keys lists the schema; docs/configuration.md explains each key in
        # its section's table
        out = subprocess.run([cmcpd_path(), "--config-keys"], capture_output=True, text=True,
                             timeout=10, check=True).stdout
        keys = [re.match(r"^\[([^\]]+)\] (\S+): ", ln).groups() for ln in out.splitlines()]
        self.assertGreater(len(keys), 50)
        root = os.environ.get("CMCP_SOURCE_DIR") or os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "..", "..")
        with open(os.path.join(root, "docs", "configuration.md")) as f:
            doc = f.read()
        blocks = {}
        for part in doc.split("\n## ")[1:]:
            m = re.match(r"`\[([^\]]+)\]`", part)
            if m:
                blocks[m.group(1)] = part
        missing = [(sec, key) for sec, key in keys
                   if sec not in blocks or "`%s`" % key not in blocks[sec]]
        self.assertEqual(missing, [], "keys docs/configuration.md does not explain")

    def test_other_env_names_documented_exactly(self):
        # the CMCP_ names that are not settings: cmcpd --config-env and the table of
        # docs/configuration.md name the same ones, no more, no fewer
        out = subprocess.run([cmcpd_path(), "--config-env"], capture_output=True, text=True,
                             timeout=10, check=True).stdout
        names = set(out.split())
        self.assertIn("CMCP_LOG_LEVEL", names)
        self.assertIn("CMCP_COOKIE_FILE", names)
        root = os.environ.get("CMCP_SOURCE_DIR") or os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "..", "..")
        with open(os.path.join(root, "docs", "configuration.md")) as f:
            doc = f.read()
        part = doc.split("\n## Other environment variables\n", 1)[1].split("\n## ", 1)[0]
        documented = set(re.findall(r"^\| `(CMCP_[A-Z_]+)` \|", part, re.M))
        self.assertEqual(names, documented)


class Errors(Timed):
    def assert_error(self, text, needle, *words, env=None, check=False):
        """cmcpd exits 2 naming the file and the line holding needle (or just the words)."""
        code, out, err, path = run_config_check(text, env=env, check=check)
        self.assertEqual(code, 2, err)
        if needle is not None:
            self.assertIn("%s:%d:" % (path, line_of(text, needle)), err)
        for w in words:
            self.assertIn(w, err)
        return err

    def test_env_naming_no_setting_is_an_error(self):
        # a typo, or a [tree.*] section the configuration does not have
        self.assert_error(GOOD, None, "CMCP_TREE_NOSUCH_COUNT", "names no setting",
                          env={"CMCP_TREE_NOSUCH_COUNT": "3"})
        self.assert_error(GOOD, None, "CMCP_LISTENER_HTTP_PROT", "names no setting",
                          env={"CMCP_LISTENER_HTTP_PROT": "8080"})

    def test_env_with_a_misspelt_section_is_an_error(self):
        # the section part wrong: refused by name, with the setting it was probably meant as
        err = self.assert_error(GOOD, None, "CMCP_LISTNER_HTTP_PORT", "names no setting",
                                env={"CMCP_LISTNER_HTTP_PORT": "8080"})
        self.assertIn("did you mean CMCP_LISTENER_HTTP_PORT?", err)
        err = self.assert_error(GOOD, None, "CMCP_METRIC_PORT", "names no setting",
                                env={"CMCP_METRIC_PORT": "9999"})
        self.assertIn("did you mean CMCP_METRICS_PORT?", err)
        self.assert_error(GOOD, None, "CMCP_NOSUCHTHING", "names no setting",
                          env={"CMCP_NOSUCHTHING": "1"}, check=True)
        # also the documented extra names, misspelt
        err = self.assert_error(GOOD, None, "CMCP_LOGLEVEL", "names no setting",
                                env={"CMCP_LOGLEVEL": "debug"})
        self.assertIn("did you mean CMCP_LOG_LEVEL?", err)

    def test_documented_extra_env_names_are_accepted(self):
        code, out, err, _ = run_config_check(GOOD, check=True,
                                             env={"CMCP_LOG_LEVEL": "debug",
                                                  "CMCP_COOKIE_FILE": "/tmp/nonexistent"})
        self.assertEqual(code, 0, err)

    def test_zero_shards_is_refused(self):
        text = GOOD + "[tree.x]\ncount = 0\n"
        self.assert_error(text, "count = 0", "count", "out of range [1, 4096]")
        self.assert_error(GOOD, None, "CMCP_TREE_SHARD_COUNT", "out of range [1, 4096]",
                          env={"CMCP_TREE_SHARD_COUNT": "0"})

    def test_unknown_key(self):
        self.assert_error(GOOD + "[tree.a]\nrestrat = permanent\n", "restrat", "unknown key")

    def test_bad_value(self):
        self.assert_error(GOOD.replace("intensity = 10", "intensity = lots", 1), "lots",
                          "not a whole number")
        self.assert_error(GOOD.replace("period = 5", "period = 0", 1), "period = 0",
                          "out of range")
        self.assert_error(GOOD + "[tree.a]\nrestart = sometimes\n", "sometimes",
                          "permanent|transient|temporary")
        self.assert_error(GOOD + "[tree.a]\nshutdown = soon\n", "soon", "brutal_kill")
        self.assert_error(GOOD + "[tree.a]\nsignificant = maybe\n", "maybe", "true or false")

    def test_cluster_rules(self):
        # rules between [cluster] keys are checked before anything starts, also by
        # --check-config, naming the file and line
        self.assert_error(GOOD + "[cluster]\nlease_ms = 900\n", "lease_ms = 900",
                          "shorter than down_after_ms")
        self.assert_error(GOOD + "[cluster]\nreplication_factor = 2\n", "replication_factor",
                          "needs [cluster] bind", check=True)
        self.assert_error(GOOD + "[cluster]\nsplit_brain_strategy = configured_master\n", None,
                          "master = NODE_ID")
        self.assert_error(GOOD, None, "CMCP_CLUSTER_DOWN_AFTER_MS", "longer than lease_ms",
                          env={"CMCP_CLUSTER_DOWN_AFTER_MS": "500"}, check=True)

    def test_check_config_writes_nothing(self):
        # a check leaves no run or data directory and no state key behind, in its working
        # directory or anywhere; it still refuses a run directory too long for unix sockets
        files = []
        code, out, err, _ = run_config_check(GOOD, check=True, files=files)
        self.assertEqual(code, 0, err)
        self.assertIn("configuration OK", out)
        self.assertEqual(files, ["node.conf"])
        files = []
        code, out, err, _ = run_config_check(GOOD, check=True, files=files,
                                             env={"CMCP_NODE_RUN_DIR": "/tmp/" + "r" * 90})
        self.assertEqual(code, 2, err)
        self.assertIn("too long for unix socket paths", err)
        self.assertEqual(files, ["node.conf"])
        self.assertFalse(os.path.exists("/tmp/" + "r" * 90))

    def test_unknown_section(self):
        # the error names the header's line, also for a section with no keys
        self.assert_error(GOOD + "[treee.a]\nrole = testworkr\n", "[treee.a]",
                          "unknown section [treee.a]")
        self.assert_error(GOOD + "[treee.b]\n", "[treee.b]", "unknown section [treee.b]")

    def test_unknown_role(self):
        self.assert_error(GOOD.replace("role = testworker", "role = frobnicator", 1),
                          "frobnicator", "unknown role")

    def test_missing_child_section(self):
        text = GOOD.replace("children = a, sub", "children = a, sub, ghost")
        self.assert_error(text, "ghost", "no [tree.ghost] section")

    def test_missing_child_section_in_a_nested_supervisor(self):
        # checked before anything starts: a configuration error, not a failed start (3)
        text = GOOD.replace("children = x", "children = x, ghost")
        self.assert_error(text, "x, ghost", "no [tree.ghost] section")

    def test_section_without_role(self):
        text = GOOD + "[tree.lonely]\nrestart = transient\n"
        text = text.replace("children = a, sub", "children = a, sub, lonely")
        self.assert_error(text, "restart = transient", "has no role")

    def test_syntax_error(self):
        self.assert_error(GOOD + "this is not ini\n", "this is not ini", "syntax error")
        self.assert_error(GOOD + "[tree.unclosed\n", "[tree.unclosed", "without its closing ']'")

    def test_key_outside_section(self):
        self.assert_error("stray = 1\n" + GOOD, "stray", "outside any [section]")

    def test_bad_env_override(self):
        err = self.assert_error(GOOD, None, "CMCP_TREE_ROOT_INTENSITY", "abc",
                                env={"CMCP_TREE_ROOT_INTENSITY": "abc"})
        self.assertIn("not a whole number", err)
        self.assert_error(GOOD, None, "CMCP_TREE_A_RESTART",
                          env={"CMCP_TREE_A_RESTART": "never"})

    def test_errors_also_with_check_config(self):
        self.assert_error(GOOD + "[tree.a]\nrestrat = x\n", "restrat", check=True)

    def test_significant_must_not_be_permanent(self):
        text = GOOD.replace("auto_shutdown = never", "auto_shutdown = any_significant", 1)
        text += "[tree.a]\nsignificant = true\n"
        self.assert_error(text, "significant = true", "transient or temporary")

    def test_significant_needs_auto_shutdown(self):
        text = GOOD + "[tree.a]\nsignificant = true\nrestart = transient\n"
        self.assert_error(text, "significant = true", "auto_shutdown")

    def test_simple_one_for_one_rules(self):
        base = sup_section("root", "one_for_one", ["pool"]) + worker_section("tw") + \
            worker_section("tw2")
        self.assert_error(base + sup_section("pool", "simple_one_for_one", ["tw", "tw2"]),
                          "children = tw, tw2", "exactly one child")
        self.assert_error(base + sup_section("pool", "simple_one_for_one", ["tw"],
                                             auto_shutdown="any_significant"),
                          "auto_shutdown = any", "auto_shutdown must be never")

    def test_misplaced_keys(self):
        self.assert_error(GOOD + "[tree.a]\nstrategy = one_for_all\n", "one_for_all",
                          "applies to supervisors only")
        self.assert_error(GOOD + "[tree.sub]\nargs = --x\n", "args = --x",
                          "applies to workers only")
        self.assert_error(GOOD + "[tree.sub]\nexec = /bin/true\n", "/bin/true", "drop 'exec'")
        self.assert_error(GOOD + "[tree.sub]\ncount = 3\n", "count = 3")

    def test_supervisor_twice_in_the_tree(self):
        text = GOOD.replace("children = a, sub", "children = a, sub, other") + \
            sup_section("other", "one_for_one", ["sub"])
        self.assert_error(text, "children = sub", "already in the tree")
        # a cycle is a supervisor met twice too
        text = GOOD.replace("children = x", "children = x, root")
        self.assert_error(text, "children = x, root", "already in the tree")
        self.assert_error(GOOD.replace("children = a, sub", "children = a, root"),
                          "children = a, root", "lists itself")

    def test_duplicate_ids_and_backoff(self):
        self.assert_error(GOOD.replace("children = a, sub", "children = a, sub, a"),
                          "children = a, sub, a", "appears twice")
        self.assert_error(GOOD.replace("backoff_min = 0", "backoff_min = 100\nbackoff_max = 50",
                                       1), "backoff_max = 50", "below backoff_min")

    def test_start_timeout_zero_is_refused(self):
        self.assert_error(GOOD + "[tree.a]\nstart_timeout = 0\n", "start_timeout", "out of range")


class Layering(Timed):
    def check(self, text, env=None):
        code, out, err, _ = run_config_check(text, env=env, check=True)
        self.assertEqual(code, 0, err)
        return out

    def test_check_config_prints_the_tree(self):
        out = self.check(GOOD)
        self.assertIn("root: one_for_one, intensity 10 in 5 s", out)
        self.assertIn("sub: rest_for_one", out)
        self.assertIn("  x-0 (testworker, permanent)", out)
        self.assertIn("  x-1 (testworker, permanent)", out)
        self.assertIn("configuration OK", out)

    def test_file_over_defaults(self):
        # the embedded defaults give [tree.root] intensity 5 in 60 s; the file changes the
        # strategy and the children only
        text = "[tree.root]\nstrategy = one_for_all\nchildren = a\n\n" + worker_section("a")
        out = self.check(text)
        self.assertIn("root: one_for_all, intensity 5 in 60 s", out)

    def test_env_over_file(self):
        out = self.check(GOOD, env={"CMCP_TREE_ROOT_INTENSITY": "7",
                                    "CMCP_TREE_SUB_STRATEGY": "one_for_all",
                                    "CMCP_TREE_X_COUNT": "3"})
        self.assertIn("root: one_for_one, intensity 7 in 5 s", out)
        self.assertIn("sub: one_for_all", out)
        self.assertIn("x-2 (testworker", out)

    def test_children_list_separators(self):
        text = GOOD.replace("children = a, sub", "children = a   sub,")
        out = self.check(text)
        self.assertIn("  a (testworker", out)
        self.assertIn("  sub (supervisor", out)

    def test_child_named_after_a_role_needs_no_section(self):
        out = self.check(sup_section("root", "one_for_one", ["testworker"]))
        self.assertIn("  testworker (testworker, permanent)", out)


if __name__ == "__main__":
    main()
