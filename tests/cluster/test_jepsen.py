#!/usr/bin/env python3
"""
Nothing acknowledged is lost (docs/cluster.md, "Tests"): real nodes, clients
writing unique values through every node in turn (checker.py), and one
nemesis a scenario: SIGKILL of the owner (then its restart as a new
incarnation), SIGKILL of a replica, SIGSTOP of the owner for longer than its
lease, two nodes lost one after the other with replication factor 3, and
(network namespaces, when this machine has them) the owner cut off in the
minority and healed. After each: every acknowledged write is read back with
its value, no failed write is visible, and every partition's copies agree
(`verify_state`; not in the namespace scenario, whose nodes have no admin socket).
Each scenario prints "N passed, N failed" and, when it
fails, the lost and unexpected writes by value.
"""

import json
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from checker import Workload  # noqa: E402
from cluster_harness import Cluster  # noqa: E402
from cmcp_harness import Timed, main, wait_for  # noqa: E402
from test_partition import N as NS_N  # noqa: E402
from test_partition import Cluster as NsCluster  # noqa: E402
from test_partition import Net, why_unavailable  # noqa: E402
from test_partition import ip as ns_ip  # noqa: E402


def owner_of(st, partition):
    return int(st["map"]["nodes"][st["map"]["owners"][partition]]["id"][1:])


def replicas_of(st, partition):
    return [int(st["map"]["nodes"][i]["id"][1:]) for i in st["map"]["replicas"][partition]]


class JepsenTest(Timed):
    def addrs(self, c):
        return [("127.0.0.1", c.http[i]) for i in range(c.n)]

    def verdict(self, name, w, live, verify=None):
        passed, lost, unexpected, summary = w.check(live)
        failed = len(lost) + len(unexpected)
        print("  scenario %s: %d passed, %d failed (%s)" % (name, passed, failed, summary))
        for sid, key, value, got, node in lost:
            print("    LOST %s %s = %r (read %r; written through n%d)" % (sid, key, value, got,
                                                                       node))
        for sid, key, value, got, note in unexpected:
            print("    UNEXPECTED %s %s = %r visible although the write failed: %s"
                  % (sid, key, value, note))
        self.assertEqual(failed, 0, "scenario %s: acknowledged writes lost or failed writes "
                                    "visible" % name)
        self.assertGreater(passed, 20, "scenario %s: too few acknowledged writes to mean "
                                       "anything (%s)" % (name, summary))
        if verify is not None:
            self.verify(*verify)

    def verify(self, c, node):
        """verify_state through node: every partition's in-sync copies hold the owner's
        history; reconcile_state waits (bounded) for copies a change behind."""
        r = c.admin_cmd(node, "verify_state")
        if not r.get("consistent"):
            r = c.admin_cmd(node, "reconcile_state")
        print("  verify_state: consistent=%s, %d partitions, %d copies compared"
              % (r.get("consistent"), r.get("partitions_checked", 0),
                 r.get("copies_compared", 0)))
        self.assertTrue(r.get("consistent"), json.dumps(
            {k: r.get(k) for k in ("differences", "data_differences")}, indent=1)[:3000])
        self.assertGreater(r.get("copies_compared", 0), 0)

    def settle(self, c, live, timeout=20.0):
        """Every live node holds one map with every partition owned by a live node."""
        def ok():
            if not c.formed(live):
                return False
            st = c.status(live[0])
            return all(owner_of(st, p) in live for p in range(st["map"]["partitions"]))
        wait_for(ok, timeout, 0.1, what="the cluster settled on %s" % live)

    def most_owned(self, c, w, exclude=()):
        """The node that owns the most of the clients' partitions."""
        st = c.status(next(i for i in range(c.n) if c.alive(i) and i not in exclude))
        counts = {}
        for cl in w.clients:
            o = owner_of(st, cl.part)
            if o not in exclude:
                counts[o] = counts.get(o, 0) + 1
        return max(counts, key=counts.get)

    def test_owner_killed_then_back_as_a_new_incarnation(self):
        with Cluster(3, extra="replication_factor = 2", admin=True) as c:
            c.wait_formed()
            w = Workload(self.addrs(c))
            victim = self.most_owned(c, w)
            w.start()
            time.sleep(1.0)
            c.kill(victim)
            live = [i for i in range(3) if i != victim]
            self.settle(c, live)
            time.sleep(1.0)
            c.start(victim, data_dir=c.data_dir(victim))
            time.sleep(1.0)
            w.stop()
            self.settle(c, list(range(3)))
            self.verdict("owner SIGKILL + restart", w, list(range(3)), verify=(c, 0))

    def test_owner_stopped_drains_first_then_back(self):
        """SIGTERM with [admin] drain_on_stop_ms (what a rolling update sends): the node
        hands its partitions over before it stops, and comes back as a new incarnation
        that is not left draining."""
        extra = ("replication_factor = 2\n[admin]\ndrain_on_stop_ms = 10000\n"
                 "[tree.admin]\nshutdown = 15000")
        with Cluster(3, extra=extra, admin=True) as c:
            c.wait_formed()
            w = Workload(self.addrs(c))
            victim = self.most_owned(c, w)
            w.start()
            time.sleep(1.0)
            c.kill(victim, signal.SIGTERM)
            self.assertEqual(c.nodes[victim].wait_exit(20), 0)
            log = c.nodes[victim].stderr_text()
            drained = [json.loads(x) for x in log.splitlines()
                       if '"node_drain_on_stop"' in x and x.startswith("{")]
            self.assertTrue(drained, log[-3000:])
            self.assertEqual(drained[-1]["owned_left"], 0, drained)
            live = [i for i in range(3) if i != victim]
            self.settle(c, live)
            c.start(victim, data_dir=c.data_dir(victim))
            c.wait_formed()
            self.assertEqual(c.member(c.status(live[0]), "n%d" % victim)["state"], "up")
            time.sleep(1.0)
            w.stop()
            self.settle(c, list(range(3)))
            self.verdict("owner SIGTERM (drain on stop) + restart", w, list(range(3)),
                         verify=(c, 0))

    def test_replica_killed(self):
        with Cluster(3, extra="replication_factor = 2", admin=True) as c:
            c.wait_formed()
            w = Workload(self.addrs(c))
            st = c.status(0)
            counts = {}
            for cl in w.clients:
                for r in replicas_of(st, cl.part):
                    counts[r] = counts.get(r, 0) + 1
            victim = max(counts, key=counts.get)
            w.start()
            time.sleep(1.0)
            c.kill(victim)
            time.sleep(2.0)
            w.stop()
            live = [i for i in range(3) if i != victim]
            self.settle(c, live)
            self.verdict("replica SIGKILL", w, live, verify=(c, live[0]))

    def test_owner_paused_beyond_its_lease(self):
        with Cluster(3, extra="replication_factor = 2", admin=True) as c:
            c.wait_formed()
            w = Workload(self.addrs(c))
            victim = self.most_owned(c, w)
            pids = c.nodes[victim].tree_pids()
            w.start()
            time.sleep(1.0)
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            try:
                live = [i for i in range(3) if i != victim]
                self.settle(c, live)  # marked down, its partitions promoted elsewhere
                time.sleep(3.0)  # longer than a client waits: some outcomes are unknown
            finally:
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGCONT)
                    except ProcessLookupError:
                        pass
            time.sleep(1.5)  # what the paused node held now meets its expired lease
            w.stop()
            self.settle(c, live)
            self.verdict("owner SIGSTOP beyond the lease", w, live, verify=(c, live[0]))

    def test_two_nodes_lost_in_turn_with_rf3(self):
        with Cluster(5, extra="replication_factor = 3", admin=True) as c:
            c.wait_formed(timeout=40)
            w = Workload(self.addrs(c), nclients=5)
            first = self.most_owned(c, w)
            w.start()
            time.sleep(1.0)
            c.kill(first)
            live = [i for i in range(5) if i != first]
            self.settle(c, live)
            time.sleep(0.5)
            second = self.most_owned(c, w, exclude=(first,))
            c.kill(second)
            live = [i for i in live if i != second]
            self.settle(c, live)
            time.sleep(1.0)
            w.stop()
            self.settle(c, live)
            self.verdict("RF 3, two nodes lost in turn", w, live, verify=(c, live[0]))


    @unittest.skipIf(why_unavailable() is not None,
                     "partition scenario skipped: %s" % why_unavailable())
    def test_minority_owner_cut_off_then_healed(self):
        tmp = os.path.abspath(os.path.join("/tmp", "cmcp-jepsen-%d" % os.getpid()))
        os.makedirs(tmp, exist_ok=True)
        try:
            with Net(), NsCluster(tmp, "replication_factor = 2") as c:
                wait_for(c.formed, 30, 0.2, what="the cluster formed")
                w = Workload([(ns_ip(i), 8080) for i in range(NS_N)])
                st = c.status(0)
                counts = {}
                for cl in w.clients:
                    o = owner_of(st, cl.part)
                    counts[o] = counts.get(o, 0) + 1
                victim = max(counts, key=counts.get)
                others = [i for i in range(NS_N) if i != victim]
                w.start()
                time.sleep(1.0)
                Net.cut(victim, others)

                def moved():
                    try:
                        st = c.status(others[0])
                    except Exception:  # noqa: BLE001
                        return False
                    return all(owner_of(st, p) != victim for p in range(st["map"]["partitions"]))
                wait_for(moved, 20, 0.1, what="the cut-off owner's partitions moved")
                time.sleep(1.5)
                Net.heal(victim)
                wait_for(c.formed, 30, 0.2, what="one map again after the heal")
                time.sleep(1.0)
                w.stop()
                self.verdict("minority owner cut off (netns) and healed", w, list(range(NS_N)))
        finally:
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
