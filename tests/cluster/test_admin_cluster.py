#!/usr/bin/env python3
"""
The cluster's admin commands on real nodes (docs/cluster.md, "Admin"):
`sync_from_peer NODE` has this node's copies of NODE's partitions rebuilt
from NODE (out of the in-sync sets, snapshots, back in), after which
`verify_state` is clean and every write is still there; `drain` returns once
the node owns nothing, and its sessions go on through any node.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cluster_harness import Cluster  # noqa: E402
from cmcp_harness import Timed, main  # noqa: E402
from mcp_client import HttpConn, Session  # noqa: E402


def kv(s, key):
    r = s.tool("kv_get", {"key": key})
    return (r.get("result", {}).get("structuredContent") or {}).get("value")


class AdminClusterTest(Timed):
    def test_sync_from_peer_then_drain(self):
        with Cluster(3, admin=True) as c:  # replication factor 2: the default with peers
            st = c.wait_formed()
            self.assertEqual(st["map"]["replication_factor"], 2)
            sessions = [Session(c.http[i % 3]) for i in range(6)]
            for k, s in enumerate(sessions):
                for n in range(5):
                    self.assertIn("result", s.tool("kv_set", {"key": "k%d" % n,
                                                              "value": "%d-%d" % (k, n)}))
            r = c.admin_cmd(1, "sync_from_peer", "n0")
            print("  sync_from_peer n0 on n1: %d partitions, %d not yet in sync after %.0f ms"
                  % (r["partitions"], r["not_yet_in_sync"], r["waited_ms"]))
            self.assertGreater(r["partitions"], 0)
            self.assertEqual(r["not_yet_in_sync"], 0, r)
            v = c.admin_cmd(2, "reconcile_state")
            self.assertTrue(v.get("consistent"), v.get("data_differences"))
            # refused with a reason: itself, or a member that does not exist
            bad = c.admin_cmd(1, "sync_from_peer", "nobody")
            self.assertIn("no such member", json.dumps(bad), bad)
            r = c.admin_cmd(2, "drain")
            print("  drain n2: %s partitions left after %.0f ms"
                  % (r.get("owned_left"), r.get("waited_ms", 0)))
            self.assertEqual(r.get("owned_left"), 0, r)
            for k, s in enumerate(sessions):  # every session, through every node
                for node in range(3):
                    s.conn.close()
                    s.conn = HttpConn(c.http[node])
                    self.assertEqual(kv(s, "k4"), "%d-4" % k, (s.sid, node))
            v = c.admin_cmd(0, "reconcile_state")
            self.assertTrue(v.get("consistent"), v.get("data_differences"))


if __name__ == "__main__":
    main()
