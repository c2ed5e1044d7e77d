#!/usr/bin/env python3
"""
Replicated sessions with real processes on loopback (docs/cluster.md,
"Replication"): three nodes with replication_factor = 2. Clients write unique
values to sessions on every node, each write recorded as acknowledged, failed
or unknown; then a node is killed with SIGKILL while the writes go on. Its
partitions are promoted to their in-sync replicas, which serve the same session
ids at once; afterwards every acknowledged write is read back from the session's
current owner, and a write that failed is not there.
"""

import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cluster_harness import Cluster  # noqa: E402
from cmcp_harness import Timed, main, wait_for  # noqa: E402
from mcp_client import HttpConn, Session  # noqa: E402

RF2 = "replication_factor = 2"


def owner_of(st, partition):
    return st["map"]["nodes"][st["map"]["owners"][partition]]["id"]


def replicas_of(st, partition):
    return [st["map"]["nodes"][i]["id"] for i in st["map"]["replicas"][partition]]


def replica_groups(st, groups=2):
    """{(owner, partition mod groups): the set of replica sets its partitions have}: with
    replica groups (the default, as many as the harness's 2 shards), each holds one."""
    out = {}
    for p in range(st["map"]["partitions"]):
        out.setdefault((owner_of(st, p), p % groups), set()).add(tuple(replicas_of(st, p)))
    return out


class Writer:
    """Writes key w<n> = "<name>-<n>" to one session, recording each outcome. A write whose
    answer says it failed is 'fail'; no answer or an unknown outcome is 'info'."""

    def __init__(self, cluster, node, name):
        self.c = cluster
        self.s = Session(cluster.http[node])
        self.sid = self.s.sid
        self.part = int(self.sid.split("-")[0])
        self.name = name
        self.ok, self.failed, self.info = {}, {}, {}
        self.n = 0

    def point_at(self, node):
        self.s.conn.close()
        self.s.conn = HttpConn(self.c.http[node])
        self.s.port = self.c.http[node]

    def write(self):
        self.n += 1
        key, value = "w%d" % self.n, "%s-%d" % (self.name, self.n)
        try:
            r = self.s.tool("kv_set", {"key": key, "value": value}, timeout=5)
        except Exception as e:  # noqa: BLE001 - a node died under us: outcome unknown
            self.info[key] = (value, repr(e))
            return False
        if "error" in r:
            text = r["error"].get("message", "")
            # as checker.py: an answer that says the outcome is unknown is not a failure
            unknown = "unknown" in text or "may or may not" in text
            (self.info if unknown else self.failed)[key] = (value, text)
            return False
        if r.get("result", {}).get("isError"):
            self.failed[key] = (value, r["result"])
            return False
        self.ok[key] = value
        return True


class ReplicationTest(Timed):
    def check_all(self, c, writers, survivors):
        st = c.status(survivors[0])
        lost, unexpected = [], []
        for w in writers:
            owner = int(owner_of(st, w.part)[1:])
            self.assertIn(owner, survivors, "partition %d owned by a dead node" % w.part)
            w.point_at(owner)
            got = {}
            for key in list(w.ok) + list(w.failed):
                r = w.s.tool("kv_get", {"key": key}, timeout=5)
                res = r.get("result", {})
                got[key] = None if res.get("isError") else res["content"][0]["text"]
            for key, value in w.ok.items():
                if got.get(key) != '"%s"' % value and got.get(key) != value:
                    lost.append((w.sid, key, value, got.get(key)))
            for key, (value, text) in w.failed.items():
                if got.get(key) is not None:
                    unexpected.append((w.sid, key, value, got.get(key), text))
        acked = sum(len(w.ok) for w in writers)
        print("  %d acknowledged writes checked: %d lost, %d failed writes visible, %d unknown"
              % (acked, len(lost), len(unexpected), sum(len(w.info) for w in writers)))
        self.assertEqual(lost, [], "acknowledged writes lost (sid, key, value, read)")
        self.assertEqual(unexpected, [], "failed writes visible (sid, key, value, read, "
                                          "the failure's text)")
        return acked

    def test_map_places_replicas(self):
        with Cluster(3, extra=RF2, metrics=True) as c:
            st = c.wait_formed()
            self.assertEqual(st["map"]["replication_factor"], 2)
            for p in range(st["map"]["partitions"]):
                reps = replicas_of(st, p)
                self.assertEqual(len(reps), 1, (p, reps))
                self.assertNotIn(owner_of(st, p), reps)
            # one shard's partitions share their replica, so its commit goes to one node; an
            # owner's two shards go to the two other members
            groups = replica_groups(st)
            for key, sets in groups.items():
                self.assertEqual(len(sets), 1, (key, sets))
            for owner in {o for o, _ in groups}:
                if (owner, 0) in groups and (owner, 1) in groups:
                    self.assertNotEqual(groups[(owner, 0)], groups[(owner, 1)], owner)
            # a write on n0 is committed there, and as a copy on its partition's replica
            s = Session(c.http[0])
            p = int(s.sid.split("-")[0])
            rep = int(replicas_of(c.status(0), p)[0][1:])
            copies = lambda: c.metric(rep, "cmcp_store_commits_total{of=\"copies\"}")  # noqa
            wait_for(lambda: c.metric(0, "cmcp_store_commits_total") > 0, 5, 0.1,
                     what="n0's commit counters published")
            before = copies()
            self.assertNotIn("error", s.tool("kv_set", {"key": "k", "value": "v"}))
            wait_for(lambda: copies() > before, 5, 0.1, what="the replica's copies commit counted")
            s.close()

    def test_owner_killed_no_acknowledged_write_lost(self):
        self.owner_killed(leader=False)

    def test_leader_and_owner_killed_no_acknowledged_write_lost(self):
        self.owner_killed(leader=True)

    def owner_killed(self, leader):
        with Cluster(3, extra=RF2) as c:
            c.wait_formed()
            wait_for(lambda: len(c.status(0)["raft"]["voters"]) == 3, 5, 0.05,
                     what="three voters")
            lead = c.leader()
            victim = lead if leader else next(i for i in range(3) if i != lead)
            leader = next(i for i in range(3) if i != victim)  # asked about the map below
            survivors = [i for i in range(3) if i != victim]
            writers = [Writer(c, i % 3, "s%d" % i) for i in range(6)]
            for _ in range(5):
                for w in writers:
                    self.assertTrue(w.write(), (w.failed, w.info))
            # a replica holds what the owner acknowledged: kill the owner while writes go on
            on_victim = [w for w in writers if owner_of(c.status(leader), w.part) == "n%d" % victim]
            self.assertTrue(on_victim)
            stop = threading.Event()

            def traffic(w):
                for _ in range(2000):
                    if stop.is_set() or not w.write():
                        return
            threads = [threading.Thread(target=traffic, args=(w,)) for w in on_victim]
            for t in threads:
                t.start()
            time.sleep(0.3)
            t0 = time.monotonic()
            c.kill(victim)
            stop.set()
            for t in threads:
                t.join(10)

            def promoted():
                st = c.status(survivors[0])
                return all(owner_of(st, w.part) != "n%d" % victim for w in writers) and st
            st = wait_for(promoted, 10, 0.05, what="the victim's partitions promoted")
            print("  promoted %.2f s after SIGKILL" % (time.monotonic() - t0))
            # the same session ids go on at their new owners, with their state; and those
            # whose replica was the victim go on without it
            for w in writers:
                w.point_at(int(owner_of(st, w.part)[1:]))
                deadline = time.monotonic() + 5
                while not w.write():
                    self.assertLess(time.monotonic(), deadline, (w.failed, w.info))
                    time.sleep(0.05)
            self.check_all(c, writers, survivors)
            # the victim comes back as a new incarnation: it takes nothing back
            c.start(victim, data_dir=c.data_dir(victim))
            wait_for(lambda: c.state_of(c.status(victim), "n%d" % victim) == "up", 10,
                     0.05, what="the victim back")
            st = c.status(survivors[0])
            self.assertEqual(c.member(st, "n%d" % victim)["owned"], 0)
            for w in writers:
                self.assertTrue(w.write(), (w.failed, w.info))

    def test_stopped_replica_leaves_the_in_sync_set(self):
        # A replica whose shards stop answering (SIGSTOP: hung, not dead; its node's cluster
        # processes go on, so it is never marked down) is taken out of the in-sync set by a
        # committed map change after replica_ack_timeout_ms, and writes go on without it.
        with Cluster(3, extra=RF2) as c:
            c.wait_formed()
            writers = [Writer(c, i % 3, "s%d" % i) for i in range(6)]
            for w in writers:
                self.assertTrue(w.write(), (w.failed, w.info))
            st = c.status(0)
            w = writers[0]
            replica = int(replicas_of(st, w.part)[0][1:])
            shards = c.nodes[replica].child_pids("shard_sup")
            for pid in shards.values():
                os.kill(pid, signal.SIGSTOP)
            try:
                t0 = time.monotonic()
                self.assertTrue(w.write(), (w.failed, w.info))
                took = time.monotonic() - t0
                print("  a write waited %.2f s for the hung replica to leave the in-sync set"
                      % took)
                self.assertLess(took, 3.0)
                st = c.status(0)
                self.assertNotIn("n%d" % replica, replicas_of(st, w.part))
                for _ in range(20):
                    self.assertTrue(w.write(), (w.failed, w.info))
            finally:
                for pid in shards.values():
                    os.kill(pid, signal.SIGCONT)
            self.check_all(c, writers, list(range(3)))

    def test_copy_behind_catches_up_from_the_log(self):
        # Two nodes, RF 2: a replica hung for a while (SIGSTOP of its shards) leaves the
        # in-sync set, and the owner goes on alone. When it wakes, its copy is a little
        # behind; the owner asks where it is and sends the changes since from its retained
        # log, not a snapshot of the whole partition. Then it is an in-sync replica again,
        # verify_state finds every copy equal, and no acknowledged write is lost.
        with Cluster(2, extra=RF2, admin=True) as c:
            c.wait_formed()
            writers = [Writer(c, i % 2, "s%d" % i) for i in range(6)]
            for w in writers:
                for _ in range(3):
                    self.assertTrue(w.write(), (w.failed, w.info))
            st = c.status(0)
            w = next((x for x in writers if owner_of(st, x.part) == "n0"), None)
            self.assertIsNotNone(w, "no session on a partition of n0")
            self.assertEqual(replicas_of(st, w.part), ["n1"])
            shards = c.nodes[1].child_pids("shard_sup")
            for pid in shards.values():
                os.kill(pid, signal.SIGSTOP)
            try:
                w.point_at(0)
                for _ in range(30):
                    self.assertTrue(w.write(), (w.failed, w.info))
                self.assertEqual(replicas_of(c.status(0), w.part), [])
            finally:
                for pid in shards.values():
                    os.kill(pid, signal.SIGCONT)
            wait_for(lambda: replicas_of(c.status(0), w.part) == ["n1"], 20,
                     what="n1 back in partition %d's in-sync set" % w.part)
            got = c.nodes[0].log_events("replica_catchup_from_log", partition=w.part,
                                        replica="n1")
            self.assertTrue(got, "n1's copy did not come back from the log")
            self.assertGreater(got[-1]["to_seq"], got[-1]["from_seq"])
            self.assertFalse(c.nodes[0].log_events("replica_catchup_snapshot", partition=w.part),
                             "a snapshot was sent where the log had every change")
            print("  partition %d: n1 caught up from seq %d to %d with %d changes from the log"
                  % (w.part, got[-1]["from_seq"], got[-1]["to_seq"], got[-1]["changes"]))
            for _ in range(5):
                self.assertTrue(w.write(), (w.failed, w.info))
            # (a member's heartbeat may still carry the map before the last change: waited for;
            # a copy whose data differs is a failure at once)
            last = {}

            def verified():
                last["r"] = r = c.admin_cmd(0, "verify_state")
                self.assertEqual(r.get("data_differences"), [], r)
                return r.get("consistent")
            wait_for(verified, 10, 0.2, what="verify_state consistent (last: %r)" % last)
            self.check_all(c, writers, [0, 1])


if __name__ == "__main__":
    main()
