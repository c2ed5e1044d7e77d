#!/usr/bin/env python3
"""
Catch-up and rejoin with real processes on loopback (docs/cluster.md,
"Replication and failover"). A partition whose in-sync set is smaller than
replication_factor - 1 is rebuilt on another up member by its owner (a
snapshot, then the changes since) and put back by a committed isr_add:

- 3 nodes, rf 2: a replica node is killed (SIGKILL) while writes go on and
  are acknowledged; it restarts with its data directory; within a bounded
  time every partition has rf - 1 in-sync replicas again; then the owner of a
  partition whose copy was rebuilt is killed, and every acknowledged write is
  read back (0 lost): the rebuilt copy had all of them.
- 3 nodes, rf 3: the node that comes back must be a replica of every
  partition (no other member is left to hold the copies), and takes none back.
- 4 nodes, rf 2: a node lost for good (the standby voter-less one, so Raft
  keeps its quorum for the next kill): the remaining members restore rf, then
  the owner of a partition whose copy was rebuilt is killed: 0 lost.
"""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import test_replication as tr  # noqa: E402
from cluster_harness import Cluster  # noqa: E402
from cmcp_harness import Timed, main, wait_for  # noqa: E402

RF2 = "replication_factor = 2\npartitions = 64"
RF3 = "replication_factor = 3\npartitions = 64"


def owner_of(st, p):
    return tr.owner_of(st, p)


def replicas_of(st, p):
    return tr.replicas_of(st, p)


def full(st, rf, up_ids):
    """Whether every partition has a live owner and rf - 1 in-sync replicas."""
    m = st["map"]
    for p in range(m["partitions"]):
        if owner_of(st, p) not in up_ids or len(m["replicas"][p]) != rf - 1:
            return False
    return True


def under(st, rf):
    m = st["map"]
    return sum(1 for p in range(m["partitions"]) if len(m["replicas"][p]) < rf - 1)


class Traffic:
    """Writers kept writing from a thread, each pointed at its partition's owner; a write
    that fails (its owner died or moved) is retried elsewhere later, and counted only when
    acknowledged. Bounded: at most `rounds` passes."""

    def __init__(self, c, writers, alive):
        self.c, self.writers, self.alive = c, writers, alive
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run)
        self.passes = 0

    def run(self):
        for _ in range(100000):
            if self.stop.is_set():
                return
            try:
                st = self.c.status(self.alive[0], timeout=2.0)
            except Exception:  # noqa: BLE001 - a busy manager: try again
                time.sleep(0.05)
                continue
            for w in self.writers:
                o = int(owner_of(st, w.part)[1:])
                if o in self.alive:
                    w.point_at(o)
                    w.write()
            self.passes += 1

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        self.t.join(30)
        return False


class RejoinTest(Timed):
    def writers(self, c, n, nodes):
        ws = [tr.Writer(c, nodes[i % len(nodes)], "s%d" % i) for i in range(n)]
        for _ in range(3):
            for w in ws:
                self.assertTrue(w.write(), (w.failed, w.info))
        return ws

    def wait_full(self, c, rf, alive, timeout, what):
        ids = {"n%d" % i for i in alive}
        t0 = time.monotonic()
        st = wait_for(lambda: (lambda s: full(s, rf, ids) and s)(c.status(alive[0])), timeout,
                      0.1, what=what)
        took = time.monotonic() - t0
        return st, took

    def write_all(self, c, writers, alive, count):
        """count acknowledged writes per writer at its current owner (bounded retries)."""
        for w in writers:
            for _ in range(count):
                deadline = time.monotonic() + 10
                while True:
                    st = c.status(alive[0])
                    w.point_at(int(owner_of(st, w.part)[1:]))
                    if w.write():
                        break
                    self.assertLess(time.monotonic(), deadline, (w.failed, w.info))
                    time.sleep(0.05)

    def kill_owner_and_check(self, c, writers, rebuilt, alive, victim_note):
        """Kills the owner of a partition in `rebuilt` (its copy came from a catch-up) and
        reads every acknowledged write back from the survivors."""
        st = c.status(alive[0])
        lead = c.leader()
        cands = [w for w in writers if w.part in rebuilt]
        self.assertTrue(cands, "no writer on a partition whose copy was rebuilt")
        cands.sort(key=lambda w: int(owner_of(st, w.part)[1:]) == lead)  # not the leader first
        w = cands[0]
        owner = int(owner_of(st, w.part)[1:])
        copy = replicas_of(st, w.part)
        print("  killing n%d, owner of partition %d whose copy on %s was rebuilt (%s)"
              % (owner, w.part, copy, victim_note))
        c.kill(owner)
        survivors = [i for i in alive if i != owner]

        def promoted():
            s = c.status(survivors[0])
            return all(owner_of(s, x.part) != "n%d" % owner for x in writers) and s
        st = wait_for(promoted, 20, 0.1, what="the owner's partitions promoted")
        self.assertEqual(owner_of(st, w.part), copy[0], "promoted to the rebuilt copy")
        self.write_all(c, writers, survivors, 1)
        acked = tr.ReplicationTest.check_all(self, c, writers, survivors)
        self.assertGreater(acked, 0)

    def test_replica_killed_rejoins_then_owner_killed(self):
        with Cluster(3, extra=RF2) as c:
            c.wait_formed()
            wait_for(lambda: len(c.status(0)["raft"]["voters"]) == 3, 5, 0.05,
                     what="three voters")
            writers = self.writers(c, 12, [0, 1, 2])
            st = c.status(0)
            lead = c.leader()
            # the victim: not the leader, a replica of some writer's partition
            victim = next(i for i in range(3) if i != lead and any(
                "n%d" % i in replicas_of(st, w.part) for w in writers))
            alive = [i for i in range(3) if i != victim]
            # what will need a new copy: partitions the victim owned or held a copy of
            rebuilt = {p for p in range(st["map"]["partitions"])
                       if owner_of(st, p) == "n%d" % victim or
                       "n%d" % victim in replicas_of(st, p)}
            c.kill(victim)
            with Traffic(c, writers, alive) as t:
                wait_for(lambda: all(owner_of(c.status(alive[0]), w.part) != "n%d" % victim
                                     for w in writers), 20, 0.1, what="promotions")
                time.sleep(1.0)  # writes acknowledged while the victim is away
                c.start(victim, data_dir=c.data_dir(victim))
                alive = sorted(alive + [victim])
                t.alive = alive
                st, took = self.wait_full(c, 2, alive, 60, "rf 2 restored after the restart")
            print("  every partition back at rf 2 %.1f s after the restart (%d writes during "
                  "it, %d passes)" % (took, sum(len(w.ok) for w in writers), t.passes))
            self.assertEqual(c.member(st, "n%d" % victim)["owned"], 0)  # takes nothing back
            on_victim = sum(1 for p in range(st["map"]["partitions"])
                            if "n%d" % victim in replicas_of(st, p))
            print("  the restarted node holds %d in-sync copies" % on_victim)
            self.write_all(c, writers, alive, 2)
            self.kill_owner_and_check(c, writers, rebuilt, alive, "rf 2, node restarted")

    def test_returning_node_is_everyones_replica_rf3(self):
        with Cluster(3, extra=RF3) as c:
            c.wait_formed()
            wait_for(lambda: len(c.status(0)["raft"]["voters"]) == 3, 5, 0.05,
                     what="three voters")
            writers = self.writers(c, 12, [0, 1, 2])
            lead = c.leader()
            victim = next(i for i in range(3) if i != lead)
            alive = [i for i in range(3) if i != victim]
            c.kill(victim)
            wait_for(lambda: all(owner_of(c.status(alive[0]), w.part) != "n%d" % victim
                                 for w in writers), 20, 0.1, what="promotions")
            self.write_all(c, writers, alive, 3)
            st = c.status(alive[0])
            self.assertGreater(under(st, 3), 0)
            c.start(victim, data_dir=c.data_dir(victim))
            alive = [0, 1, 2]
            with Traffic(c, writers, alive) as t:
                st, took = self.wait_full(c, 3, alive, 60, "rf 3 restored")
            print("  rf 3 restored %.1f s after the restart (%d passes of writes during it)"
                  % (took, t.passes))
            self.assertEqual(c.member(st, "n%d" % victim)["owned"], 0)
            for p in range(st["map"]["partitions"]):
                self.assertIn("n%d" % victim, replicas_of(st, p))
            self.write_all(c, writers, alive, 2)
            # the other follower dies: its partitions go to the leader's copy or to the
            # returned node's rebuilt one; every acknowledged write must be there
            other = next(i for i in range(3) if i not in (victim, c.leader()))
            c.kill(other)
            alive = [i for i in range(3) if i != other]
            st = wait_for(lambda: (lambda s: all(owner_of(s, w.part) != "n%d" % other
                                                 for w in writers) and s)(c.status(alive[0])),
                          20, 0.1, what="promotions")
            on_victim = sum(1 for w in writers if owner_of(st, w.part) == "n%d" % victim)
            print("  n%d killed: %d of %d sessions now served from the returned node's copies"
                  % (other, on_victim, len(writers)))
            self.write_all(c, writers, alive, 1)
            tr.ReplicationTest.check_all(self, c, writers, alive)

    def test_node_lost_for_good_rf_restored(self):
        with Cluster(4, extra=RF2) as c:
            c.wait_formed()
            wait_for(lambda: len(c.status(0)["raft"]["voters"]) == 3 and
                     len(c.status(0)["raft"]["standbys"]) == 1, 10, 0.05,
                     what="three voters and a standby")
            st = c.status(0)
            standby = st["raft"]["standbys"][0]
            victim = next(i for i in range(4)
                          if standby == "n%d" % i or standby.endswith(":%d" % c.peer_ports[i]))
            alive = [i for i in range(4) if i != victim]
            writers = self.writers(c, 12, alive)
            rebuilt = {p for p in range(st["map"]["partitions"])
                       if owner_of(st, p) == "n%d" % victim or
                       "n%d" % victim in replicas_of(st, p)}
            c.kill(victim)
            t0 = time.monotonic()
            with Traffic(c, writers, alive):
                st, took = self.wait_full(c, 2, alive, 60, "rf 2 restored on the others")
            print("  rf 2 restored on the other 3 nodes %.1f s after the kill"
                  % (time.monotonic() - t0))
            self.assertEqual(c.member(st, "n%d" % victim)["state"], "down")
            # the copies rebuilt follow the placement's rule: a shard's partitions (its own and
            # those it took over) still share one replica
            for key, sets in tr.replica_groups(st).items():
                self.assertEqual(len(sets), 1, (key, sets))
            self.write_all(c, writers, alive, 2)
            self.kill_owner_and_check(c, writers, rebuilt, alive, "rf 2, a node lost for good")


if __name__ == "__main__":
    main()
