/*
 * The cluster map (cluster/map.h): its commands alone, then replicated by
 * libraft under raft_fixture (an in-memory cluster whose time, network and
 * disks the test drives): elections, a leader cut off, lost messages, a
 * restart from a snapshot, and the race between a lease renewal and a
 * mark-down. Seeded by CMCP_TEST_SEED (default 1), so a failing run can be
 * replayed exactly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <raft/fixture.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/fsm.h"
#include "cluster/map.h"

static unsigned seed = 1;

/* A small deterministic generator (xorshift), so runs replay from the seed. */
static unsigned next_rand(void)
{
    seed ^= seed << 13;
    seed ^= seed >> 17;
    seed ^= seed << 5;
    return seed;
}

static enum map_result apply_text(struct cluster_map *m, char *cmd, uint64_t index)
{
    assert_non_null(cmd);
    enum map_result r = map_apply(m, cmd, strlen(cmd), index);
    free(cmd);
    return r;
}

/* ---- the map alone ---- */

static void test_membership_and_placement(void **state)
{
    (void)state;
    static struct cluster_map m;
    map_init(&m);
    assert_int_equal(apply_text(&m, map_cmd_init(256, 1), 1), MAP_OK);
    assert_int_equal(apply_text(&m, map_cmd_init(64, 1), 2), MAP_NOOP); /* fixed at bootstrap */
    assert_int_equal(m.npart, 256);
    const char *ids[] = {"n1", "n2", "n3"};
    for (int i = 0; i < 3; i++)
        assert_int_equal(apply_text(&m, map_cmd_join(ids[i], 100 + i, "127.0.0.1:7400"), 3 + i),
                         MAP_OK);
    assert_int_equal(m.nnodes, 3);
    assert_int_equal(m.nodes[1].join_index, 4);
    /* a forming cluster: nothing is assigned until min_up members are up */
    int parts[4096], owners[4096];
    assert_int_equal(map_plan(&m, 4, MAP_PLAN_FAILOVER, 0, parts, owners, 4096), 0);
    int n = map_plan(&m, 3, MAP_PLAN_FAILOVER, 0, parts, owners, 4096);
    assert_int_equal(n, 256);
    for (int i = 0; i < n; i++) {
        char *c = map_cmd_assign(&parts[i], 1, m.nodes[owners[i]].id);
        assert_int_equal(apply_text(&m, c, 10 + (uint64_t)i), MAP_OK);
    }
    int owned[3] = {map_owned(&m, 0), map_owned(&m, 1), map_owned(&m, 2)};
    assert_int_equal(owned[0] + owned[1] + owned[2], 256);
    for (int i = 0; i < 3; i++)
        assert_true(owned[i] > 40); /* rendezvous hashing spreads them */
    assert_int_equal(map_plan(&m, 3, MAP_PLAN_REBALANCE, 100, parts, owners, 4096), 0); /* balanced */
    /* n2 goes down: its partitions, and only those, move at once, each at epoch + 1 */
    assert_int_equal(apply_text(&m, map_cmd_beat("n2", 101, 1), 400), MAP_OK);
    assert_int_equal(apply_text(&m, map_cmd_down("n2", 101, 1), 401), MAP_OK);
    n = map_plan(&m, 3, MAP_PLAN_FAILOVER, 0, parts, owners, 4096);
    assert_int_equal(n, owned[1]);
    for (int i = 0; i < n; i++) {
        assert_int_equal(m.parts[parts[i]].owner, 1);
        assert_int_not_equal(owners[i], 1);
        assert_int_equal(m.parts[parts[i]].epoch, 1);
    }
    assert_int_equal(apply_text(&m, map_cmd_assign(parts, n, "n1"), 402), MAP_OK);
    assert_int_equal(m.parts[parts[0]].epoch, 2);
    /* it comes back with a new incarnation: up, owning nothing; its liveness starts over */
    assert_int_equal(apply_text(&m, map_cmd_join("n2", 999, "127.0.0.1:7410"), 403), MAP_OK);
    assert_int_equal(m.nodes[1].state, MAP_UP);
    assert_int_equal(m.nodes[1].beat, 0);
    assert_int_equal(map_owned(&m, 1), 0);
    assert_int_equal(m.nodes[1].join_index, 4); /* still the member that joined at 4 */
    /* the old incarnation can no longer renew */
    assert_int_equal(apply_text(&m, map_cmd_beat("n2", 101, 5), 404), MAP_STALE);
    /* a rebalance moves partitions back, at most `moves` at a time */
    assert_int_equal(map_plan(&m, 3, MAP_PLAN_REBALANCE, 7, parts, owners, 4096), 7);
    /* draining: the node keeps serving what it owns until it is moved */
    assert_int_equal(apply_text(&m, map_cmd_drain("n3", true), 405), MAP_OK);
    assert_int_equal(map_preferred(&m, parts[0]) == 2, 0); /* a draining node is preferred by none */
    uint64_t v = m.version;
    assert_int_equal(apply_text(&m, map_cmd_assign(parts, 1, "n3"), 406), MAP_STALE);
    assert_true(m.version == v);
    /* leaving: the same incarnation cannot join back; a restarted one (new incarnation) can */
    assert_int_equal(apply_text(&m, map_cmd_leave("n3"), 407), MAP_OK);
    assert_int_equal(m.nodes[2].state, MAP_LEFT);
    assert_int_equal(apply_text(&m, map_cmd_leave("n3"), 408), MAP_NOOP);
    assert_int_equal(apply_text(&m, map_cmd_join("n3", 102, "127.0.0.1:7420"), 409), MAP_STALE);
    assert_int_equal(apply_text(&m, map_cmd_beat("n3", 102, 9), 410), MAP_STALE);
    assert_int_equal(apply_text(&m, map_cmd_join("n3", 777, "127.0.0.1:7420"), 411), MAP_OK);
    assert_int_equal(m.nodes[2].state, MAP_UP);
}

/* Places what the replicated plan asks for, as the leader does, with replica groups (0: each
 * partition's replicas its own); returns the moves. */
static int place_plan_groups(struct cluster_map *m, int groups, enum map_plan_mode mode,
                             int moves, uint64_t *index)
{
    static struct map_move mv[MAP_MAX_PARTITIONS];
    int n = map_plan_replicated(m, 3, groups, mode, moves, mv, MAP_MAX_PARTITIONS);
    if (n)
        assert_int_equal(apply_text(m, map_cmd_place(m, mv, n), (*index)++), MAP_OK);
    return n;
}

static int place_plan(struct cluster_map *m, enum map_plan_mode mode, int moves, uint64_t *index)
{
    return place_plan_groups(m, 0, mode, moves, index);
}

/* With replica groups (the shard count), the partitions of one owner and one shard share their
 * replicas, an owner's groups go to different members, and every member holds copies. */
static void test_replica_groups(void **state)
{
    (void)state;
    for (int nodes = 3; nodes <= 4; nodes++) {
        for (int rf = 2; rf <= 3; rf++) {
            static struct cluster_map m;
            map_init(&m);
            uint64_t ix = 1;
            assert_int_equal(apply_text(&m, map_cmd_init(128, rf), ix++), MAP_OK);
            for (int i = 0; i < nodes; i++) {
                char id[8];
                snprintf(id, sizeof(id), "n%d", i);
                assert_int_equal(apply_text(&m, map_cmd_join(id, (uint64_t)(10 + i), "h:1"), ix++),
                                 MAP_OK);
            }
            assert_int_equal(place_plan_groups(&m, 2, MAP_PLAN_FAILOVER, 0, &ix), 128);
            int first[MAP_MAX_NODES][2], copies[MAP_MAX_NODES] = {0};
            memset(first, -1, sizeof(first));
            for (int p = 0; p < 128; p++) {
                const struct map_partition *pp = &m.parts[p];
                assert_int_equal(pp->nrep, rf - 1);
                for (int k = 0; k < pp->nrep; k++) {
                    assert_int_not_equal(pp->rep[k], pp->owner);
                    for (int j = 0; j < k; j++)
                        assert_int_not_equal(pp->rep[k], pp->rep[j]);
                    copies[pp->rep[k]]++;
                }
                int *f = &first[pp->owner][p % 2];
                if (*f < 0)
                    *f = pp->rep[0];
                assert_int_equal(pp->rep[0], *f); /* one shard's partitions: one replica */
            }
            for (int i = 0; i < nodes; i++) {
                assert_true(copies[i] > 0);
                if (first[i][0] >= 0 && first[i][1] >= 0)
                    assert_int_not_equal(first[i][0], first[i][1]);
            }
            /* the owner of some partitions goes down: they move to their one replica per
             * group, each group to another member */
            int vi = m.parts[0].owner;
            assert_int_equal(apply_text(&m, map_cmd_down(m.nodes[vi].id, m.nodes[vi].incarnation,
                                                         0), ix++), MAP_OK);
            int to[2] = {first[vi][0], first[vi][1]};
            assert_true(place_plan_groups(&m, 2, MAP_PLAN_FAILOVER, 0, &ix) > 0);
            for (int p = 0; p < 128 && rf == 2; p++)
                if (m.parts[p].epoch == 2)
                    assert_int_equal(m.parts[p].owner, to[p % 2]);
        }
    }
}

static void test_replicas_promotion_and_isr(void **state)
{
    (void)state;
    static struct cluster_map m, copy;
    map_init(&m);
    uint64_t ix = 1;
    assert_int_equal(apply_text(&m, map_cmd_init(64, 2), ix++), MAP_OK);
    assert_int_equal(m.rf, 2);
    for (int i = 0; i < 3; i++) {
        char id[8];
        snprintf(id, sizeof(id), "n%d", i);
        assert_int_equal(apply_text(&m, map_cmd_join(id, (uint64_t)(10 + i), "h:1"), ix++), MAP_OK);
    }
    /* formation: every partition gets an owner and one in-sync replica elsewhere */
    assert_int_equal(place_plan(&m, MAP_PLAN_FAILOVER, 0, &ix), 64);
    for (int p = 0; p < 64; p++) {
        assert_int_equal(m.parts[p].epoch, 1);
        assert_int_equal(m.parts[p].nrep, 1);
        assert_int_not_equal(m.parts[p].rep[0], m.parts[p].owner);
    }
    assert_int_equal(place_plan(&m, MAP_PLAN_FAILOVER, 0, &ix), 0); /* nothing left to do */
    /* a move planned on an old epoch changes nothing */
    struct map_move stale = {.part = 0, .epoch = 0, .owner = m.parts[0].rep[0]};
    assert_int_equal(apply_text(&m, map_cmd_place(&m, &stale, 1), ix++), MAP_STALE);
    /* nor may a live partition go to a member without a copy */
    int p0_owner = m.parts[0].owner, p0_rep = m.parts[0].rep[0], other = 3 - p0_owner - p0_rep;
    struct map_move bad = {.part = 0, .epoch = 1, .owner = other};
    assert_int_equal(apply_text(&m, map_cmd_place(&m, &bad, 1), ix++), MAP_STALE);
    assert_int_equal(m.parts[0].owner, p0_owner);
    /* the owner takes a silent replica out of the in-sync set, at the current epoch only */
    assert_int_equal(apply_text(&m, map_cmd_isr_drop(0, 0, m.nodes[p0_rep].id), ix++), MAP_STALE);
    uint64_t v = m.version;
    assert_int_equal(apply_text(&m, map_cmd_isr_drop(0, 1, m.nodes[p0_rep].id), ix++), MAP_OK);
    assert_int_equal(m.parts[0].nrep, 0);
    assert_true(m.version > v);
    /* again: nothing to take out, but the set's generation moves (a late isr_add of it from
     * before this drop must not apply) */
    uint32_t g = m.parts[0].isr_gen;
    assert_int_equal(apply_text(&m, map_cmd_isr_drop(0, 1, m.nodes[p0_rep].id), ix++), MAP_OK);
    assert_int_equal(m.parts[0].nrep, 0);
    assert_true(m.parts[0].isr_gen == g + 1);
    /* a member marked down leaves every in-sync set in the same change; its partitions go to
     * their replicas under the next epoch, and keep their other copies */
    int vi = p0_owner; /* partition 0's owner: its one copy of partition 0 is its own */
    char victim[MAP_NODE_ID_MAX];
    snprintf(victim, sizeof(victim), "%s", m.nodes[vi].id);
    int owned = map_owned(&m, vi);
    assert_true(owned > 0);
    assert_int_equal(apply_text(&m, map_cmd_down(victim, m.nodes[vi].incarnation, 0), ix++),
                     MAP_OK);
    for (int p = 0; p < 64; p++)
        assert_false(map_is_replica(&m, p, vi));
    memcpy(&copy, &m, sizeof(m));
    int n = place_plan(&m, MAP_PLAN_FAILOVER, 0, &ix);
    assert_true(n >= owned - 1);
    for (int p = 1; p < 64; p++) {
        assert_int_not_equal(m.parts[p].owner, vi);
        if (copy.parts[p].owner == vi) {
            assert_int_equal(m.parts[p].epoch, copy.parts[p].epoch + 1);
            /* promoted to its in-sync replica */
            assert_true(copy.parts[p].nrep > 0);
            assert_int_equal(m.parts[p].owner, copy.parts[p].rep[0]);
        }
    }
    /* partition 0 has no copy on a member that is up: its acknowledged writes are only on its
     * owner, which is down. It is not started empty elsewhere: it waits for that member. */
    assert_int_equal(m.parts[0].owner, vi);
    assert_int_equal(m.parts[0].epoch, 1);
    assert_int_equal(m.lost, 0);
    assert_int_equal(place_plan(&m, MAP_PLAN_FAILOVER, 0, &ix), 0);
    /* the owner back as a new incarnation (a restart, its store on disk): it serves it again */
    static struct cluster_map back;
    memcpy(&back, &m, sizeof(m));
    assert_int_equal(apply_text(&back, map_cmd_join(victim, 4242, "h:1"), ix), MAP_OK);
    assert_int_equal(back.parts[0].owner, vi);
    assert_int_equal(place_plan(&back, MAP_PLAN_FAILOVER, 0, &ix), 0);
    /* ... or an operator gives it up: the member leaves, and partition 0 starts empty */
    assert_int_equal(apply_text(&m, map_cmd_leave(victim), ix++), MAP_OK);
    assert_int_equal(place_plan(&m, MAP_PLAN_FAILOVER, 0, &ix), 1);
    assert_int_not_equal(m.parts[0].owner, vi);
    assert_int_equal(m.lost, 1);
    /* the map travels whole */
    json_t *j = map_to_json(&m);
    map_init(&copy);
    assert_int_equal(map_from_json(&copy, j), 0);
    json_decref(j);
    char h1[17], h2[17];
    map_hash(&m, h1);
    map_hash(&copy, h2);
    assert_string_equal(h1, h2);
    assert_int_equal(copy.rf, 2);
    for (int p = 0; p < 64; p++)
        assert_int_equal(copy.parts[p].nrep, m.parts[p].nrep);
    /* a new incarnation of a member is no one's copy any more */
    int p1 = -1;
    for (int p = 0; p < 64 && p1 < 0; p++)
        if (m.parts[p].nrep)
            p1 = p;
    assert_true(p1 >= 0);
    int r1 = m.parts[p1].rep[0];
    char rid[MAP_NODE_ID_MAX];
    snprintf(rid, sizeof(rid), "%s", m.nodes[r1].id);
    assert_int_equal(apply_text(&m, map_cmd_join(rid, 99, "h:1"), ix++), MAP_OK);
    assert_false(map_is_replica(&m, p1, r1));
    /* a map without rf refuses placement of replicas */
    static struct cluster_map one;
    map_init(&one);
    apply_text(&one, map_cmd_init(4, 1), 1);
    struct map_move x = {0};
    apply_text(&one, map_cmd_join("a", 1, "h:1"), 2);
    assert_int_equal(apply_text(&one, map_cmd_place(&one, &x, 1), 3), MAP_BAD);
}

/* isr_add: an owner puts a replica it caught up back into the in-sync set */
static void test_isr_add(void **state)
{
    (void)state;
    static struct cluster_map m;
    map_init(&m);
    uint64_t ix = 1;
    assert_int_equal(apply_text(&m, map_cmd_init(16, 2), ix++), MAP_OK);
    for (int i = 0; i < 3; i++) {
        char id[8];
        snprintf(id, sizeof(id), "n%d", i);
        assert_int_equal(apply_text(&m, map_cmd_join(id, (uint64_t)(10 + i), "h:1"), ix++), MAP_OK);
    }
    assert_int_equal(place_plan(&m, MAP_PLAN_FAILOVER, 0, &ix), 16);
    int owner = m.parts[3].owner, rep = m.parts[3].rep[0], other = 3 - owner - rep;
    const char *rid = m.nodes[rep].id, *oid = m.nodes[other].id;
    uint64_t e = m.parts[3].epoch;
    /* full: the set already holds rf - 1 replicas */
    assert_int_equal(apply_text(&m, map_cmd_isr_add(3, e, oid, 0, -1), ix++), MAP_FULL);
    /* already a replica, or the owner: nothing to do */
    assert_int_equal(apply_text(&m, map_cmd_isr_add(3, e, rid, 0, -1), ix++), MAP_NOOP);
    assert_int_equal(apply_text(&m, map_cmd_isr_add(3, e, m.nodes[owner].id, 0, -1), ix++), MAP_NOOP);
    assert_int_equal(apply_text(&m, map_cmd_isr_drop(3, e, rid), ix++), MAP_OK);
    assert_int_equal(m.parts[3].nrep, 0);
    /* refused: a stale epoch, an unknown node, a node of another incarnation */
    assert_int_equal(apply_text(&m, map_cmd_isr_add(3, e + 1, rid, 0, -1), ix++), MAP_STALE);
    assert_int_equal(apply_text(&m, map_cmd_isr_add(3, e - 1, rid, 0, -1), ix++), MAP_STALE);
    assert_int_equal(apply_text(&m, map_cmd_isr_add(3, e, "nobody", 0, -1), ix++), MAP_UNKNOWN);
    assert_int_equal(apply_text(&m, map_cmd_isr_add(3, e, rid, 12345, -1), ix++), MAP_STALE);
    assert_int_equal(apply_text(&m, map_cmd_isr_add(99, e, rid, 0, -1), ix++), MAP_BAD);
    assert_int_equal(m.parts[3].nrep, 0);
    /* accepted: the replica counts again, and the map says so (version, hash) */
    uint64_t v = m.version;
    char h1[17], h2[17];
    map_hash(&m, h1);
    assert_int_equal(apply_text(&m, map_cmd_isr_add(3, e, rid, m.nodes[rep].incarnation, -1), ix++),
                     MAP_OK);
    assert_int_equal(m.parts[3].nrep, 1);
    assert_int_equal(m.parts[3].rep[0], rep);
    assert_true(m.version > v);
    map_hash(&m, h2);
    assert_string_not_equal(h1, h2);
    assert_int_equal(apply_text(&m, map_cmd_isr_add(3, e, rid, 0, -1), ix++), MAP_NOOP);
    /* a node that is down may not come back in */
    assert_int_equal(apply_text(&m, map_cmd_isr_drop(3, e, rid), ix++), MAP_OK);
    assert_int_equal(apply_text(&m, map_cmd_down(rid, m.nodes[rep].incarnation, 0), ix++), MAP_OK);
    assert_int_equal(apply_text(&m, map_cmd_isr_add(3, e, rid, 0, -1), ix++), MAP_STALE);
    /* nor one draining; the third member, up, may */
    assert_int_equal(apply_text(&m, map_cmd_drain(oid, true), ix++), MAP_OK);
    assert_int_equal(apply_text(&m, map_cmd_isr_add(3, e, oid, 0, -1), ix++), MAP_STALE);
    assert_int_equal(apply_text(&m, map_cmd_drain(oid, false), ix++), MAP_OK);
    assert_int_equal(apply_text(&m, map_cmd_isr_add(3, e, oid, 0, -1), ix++), MAP_OK);
    assert_true(map_is_replica(&m, 3, other));
    /* the race an owner's give-up closes: it asked isr_add (generation g), gave up on the
     * replica and asked isr_drop, and acknowledged writes without it; the isr_add that
     * commits after the drop is refused, so the map never names a copy that lacks them */
    assert_int_equal(apply_text(&m, map_cmd_isr_drop(3, e, oid), ix++), MAP_OK);
    int64_t g = m.parts[3].isr_gen;
    assert_int_equal(apply_text(&m, map_cmd_isr_drop(3, e, oid), ix++), MAP_OK); /* not a member */
    assert_int_equal(apply_text(&m, map_cmd_isr_add(3, e, oid, 0, g), ix++), MAP_STALE);
    assert_false(map_is_replica(&m, 3, other));
    /* asked with the current generation, it applies; the generation is in the map's JSON */
    assert_int_equal(apply_text(&m, map_cmd_isr_add(3, e, oid, 0, m.parts[3].isr_gen), ix++),
                     MAP_OK);
    json_t *j = map_to_json(&m);
    static struct cluster_map back;
    assert_int_equal(map_from_json(&back, j), 0);
    json_decref(j);
    assert_int_equal(back.parts[3].isr_gen, m.parts[3].isr_gen);
    /* a map without replicas has no in-sync sets */
    static struct cluster_map one;
    map_init(&one);
    apply_text(&one, map_cmd_init(4, 1), 1);
    apply_text(&one, map_cmd_join("a", 1, "h:1"), 2);
    apply_text(&one, map_cmd_join("b", 2, "h:1"), 3);
    assert_int_equal(apply_text(&one, map_cmd_isr_add(0, 0, "b", 0, -1), 4), MAP_BAD);
}

static void test_commands_that_do_not_fit(void **state)
{
    (void)state;
    static struct cluster_map m;
    map_init(&m);
    assert_int_equal(map_apply(&m, "not json", 8, 1), MAP_BAD);
    assert_int_equal(map_apply(&m, "{\"op\":\"fly\"}", 12, 2), MAP_BAD);
    assert_int_equal(apply_text(&m, map_cmd_beat("ghost", 1, 1), 3), MAP_UNKNOWN);
    assert_int_equal(apply_text(&m, map_cmd_init(0, 1), 4), MAP_BAD);
    assert_int_equal(apply_text(&m, map_cmd_init(MAP_MAX_PARTITIONS + 1, 1), 5), MAP_BAD);
    assert_int_equal(apply_text(&m, map_cmd_init(8, 1), 6), MAP_OK);
    int p = 8;
    assert_int_equal(apply_text(&m, map_cmd_join("a", 1, "x:1"), 7), MAP_OK);
    assert_int_equal(apply_text(&m, map_cmd_assign(&p, 1, "a"), 8), MAP_BAD); /* out of range */
    char id[100];
    memset(id, 'x', sizeof(id) - 1);
    id[99] = '\0';
    assert_int_equal(apply_text(&m, map_cmd_join(id, 1, "x:1"), 9), MAP_BAD);
    for (int i = 1; i < MAP_MAX_NODES; i++) {
        char name[16];
        snprintf(name, sizeof(name), "m%d", i);
        assert_int_equal(apply_text(&m, map_cmd_join(name, 1, "x:1"), 10 + (uint64_t)i), MAP_OK);
    }
    assert_int_equal(apply_text(&m, map_cmd_join("one-too-many", 1, "x:1"), 200), MAP_FULL);
    assert_true(m.applied == 200);
}

/* The log orders a renewal and a mark-down: whichever comes first wins, never both. */
static void test_renewal_and_mark_down_race(void **state)
{
    (void)state;
    static struct cluster_map a, b;
    for (int order = 0; order < 2; order++) {
        struct cluster_map *m = order ? &b : &a;
        map_init(m);
        apply_text(m, map_cmd_init(4, 1), 1);
        apply_text(m, map_cmd_join("n", 7, "e:1"), 2);
        apply_text(m, map_cmd_beat("n", 7, 1), 3);
        /* a proposer saw beat 1 and proposes the mark-down; meanwhile the node renews (beat 2) */
        char *down = map_cmd_down("n", 7, 1), *beat = map_cmd_beat("n", 7, 2);
        enum map_result first = order ? apply_text(m, beat, 4) : apply_text(m, down, 4);
        enum map_result second = order ? apply_text(m, down, 5) : apply_text(m, beat, 5);
        assert_int_equal(first, MAP_OK);
        assert_int_equal(second, MAP_STALE);
        assert_int_equal(m->nodes[0].state, order ? MAP_UP : MAP_DOWN);
    }
}

static void test_json_round_trip_and_hash(void **state)
{
    (void)state;
    static struct cluster_map m, back;
    map_init(&m);
    apply_text(&m, map_cmd_init(16, 1), 1);
    apply_text(&m, map_cmd_join("n1", UINT64_MAX, "h:1"), 2); /* incarnations use all 64 bits */
    apply_text(&m, map_cmd_join("n2", 5, "h:2"), 3);
    int ps[3] = {0, 5, 15};
    apply_text(&m, map_cmd_assign(ps, 3, "n2"), 4);
    apply_text(&m, map_cmd_beat("n1", UINT64_MAX, 9), 5);
    json_t *j = map_to_json(&m);
    map_init(&back);
    assert_int_equal(map_from_json(&back, j), 0);
    json_decref(j);
    assert_memory_equal(&back, &m, sizeof(m));
    char h1[17], h2[17];
    map_hash(&m, h1);
    apply_text(&m, map_cmd_beat("n1", UINT64_MAX, 10), 6);
    map_hash(&m, h2);
    assert_string_equal(h1, h2); /* beats do not change the hash */
    apply_text(&m, map_cmd_drain("n1", true), 7);
    map_hash(&m, h2);
    assert_string_not_equal(h1, h2);
    json_t *bad = json_pack("{s:I,s:i,s:[],s:[i],s:[i]}", "version", (json_int_t)1, "partitions",
                            1, "nodes", "owners", 3, "epochs", 0);
    assert_int_equal(map_from_json(&back, bad), -1); /* an owner that is no member */
    json_decref(bad);
}

/* ---- replicated by libraft ---- */

#define N 5

static struct raft_fixture F;
static struct map_fsm fsms[N];
static int nservers;

static void cluster_up(int n, int voters)
{
    nservers = n;
    memset(&F, 0, sizeof(F));
    assert_int_equal(raft_fixture_initialize(&F), 0);
    for (int i = 0; i < n; i++) {
        map_fsm_init(&fsms[i], NULL);
        assert_int_equal(raft_fixture_grow(&F, &fsms[i].fsm), 0);
        fsms[i].raft = raft_fixture_get(&F, (unsigned)i);
    }
    struct raft_configuration conf;
    assert_int_equal(raft_fixture_configuration(&F, (unsigned)voters, &conf), 0);
    assert_int_equal(raft_fixture_bootstrap(&F, &conf), 0);
    raft_configuration_close(&conf);
    assert_int_equal(raft_fixture_start(&F), 0);
    assert_true(raft_fixture_step_until_has_leader(&F, 10000));
}

static void cluster_down(void)
{
    raft_fixture_close(&F);
}

static struct raft_apply req_store[256];
static int nreq;
static enum map_result last_result;
static int applied_cb_calls;

static void apply_done(struct raft_apply *req, int status, void *result)
{
    (void)req;
    applied_cb_calls++;
    last_result = status == 0 ? MAP_FSM_RESULT(result) : (enum map_result)-status;
}

/* Proposes a command on server i (the leader, or refused). Returns raft's code. */
static int propose(unsigned i, char *cmd)
{
    assert_non_null(cmd);
    struct raft_buffer buf = {raft_malloc(strlen(cmd)), strlen(cmd)};
    memcpy(buf.base, cmd, buf.len);
    free(cmd);
    struct raft_apply *req = &req_store[nreq++ % 256];
    int rv = raft_apply(raft_fixture_get(&F, i), req, &buf, 1, apply_done);
    if (rv != 0)
        raft_free(buf.base);
    return rv;
}

/* The live server in LEADER state with the highest term, or nservers (the fixture's own notion
 * of a stable leader also wants a cut-off server in a higher term to agree). */
static unsigned find_leader(void)
{
    unsigned best = (unsigned)nservers;
    for (unsigned i = 0; i < (unsigned)nservers; i++) {
        struct raft *r = raft_fixture_get(&F, i);
        if (raft_fixture_alive(&F, i) && raft_state(r) == RAFT_LEADER &&
            (best == (unsigned)nservers || r->current_term > raft_fixture_get(&F, best)->current_term))
            best = i;
    }
    return best;
}

static unsigned leader(void)
{
    unsigned l = find_leader();
    assert_true(l < (unsigned)nservers);
    return l;
}

/* Steps until every live server has applied what the leader has. */
static void settle(void)
{
    unsigned l = leader();
    raft_index idx = raft_last_index(raft_fixture_get(&F, l));
    for (int i = 0; i < nservers; i++)
        if (raft_fixture_alive(&F, (unsigned)i))
            assert_true(raft_fixture_step_until_applied(&F, (unsigned)i, idx, 20000));
}

static void assert_converged(void)
{
    char h0[17];
    int first = -1;
    for (int i = 0; i < nservers; i++) {
        if (!raft_fixture_alive(&F, (unsigned)i))
            continue;
        char h[17];
        map_hash(&fsms[i].map, h);
        if (first < 0) {
            first = i;
            memcpy(h0, h, sizeof(h));
        }
        assert_string_equal(h, h0);
        assert_true(fsms[i].map.version == fsms[first].map.version);
    }
}

static void form(void)
{
    unsigned l = leader();
    assert_int_equal(propose(l, map_cmd_init(64, 1)), 0);
    for (int i = 0; i < nservers; i++) {
        char id[8];
        snprintf(id, sizeof(id), "n%d", i);
        assert_int_equal(propose(l, map_cmd_join(id, 1000 + (uint64_t)i, "127.0.0.1:7400")), 0);
    }
    settle();
    int parts[64], owners[64];
    struct cluster_map *m = &fsms[l].map;
    int n = map_plan(m, nservers, MAP_PLAN_FAILOVER, 0, parts, owners, 64);
    assert_int_equal(n, 64);
    for (int i = 0; i < n; i++)
        assert_int_equal(propose(l, map_cmd_assign(&parts[i], 1, m->nodes[owners[i]].id)), 0);
    settle();
    assert_converged();
}

static void test_replicated_formation(void **state)
{
    (void)state;
    cluster_up(3, 3);
    form();
    for (int i = 0; i < 3; i++) {
        assert_int_equal(fsms[i].map.nnodes, 3);
        /* join indexes come from the one log: the same on every node */
        assert_true(fsms[i].map.nodes[2].join_index == fsms[0].map.nodes[2].join_index);
    }
    cluster_down();
}

/* The leader is cut off from the others: they elect a new one and go on; the old one cannot
 * commit; after the heal there is one map again. */
static void test_leader_partitioned_then_healed(void **state)
{
    (void)state;
    cluster_up(5, 5);
    form();
    unsigned old = leader();
    for (unsigned j = 0; j < 5; j++)
        if (j != old) {
            raft_fixture_disconnect(&F, old, j);
            raft_fixture_disconnect(&F, j, old);
        }
    applied_cb_calls = 0;
    int rv = propose(old, map_cmd_drain("n0", true)); /* accepted, never committed */
    assert_int_equal(rv, 0);
    /* the majority elects someone else */
    bool elected = false;
    for (int t = 0; t < 200 && !elected; t++) {
        raft_fixture_step_until_elapsed(&F, 100);
        unsigned l = find_leader();
        elected = l < 5 && l != old;
    }
    assert_true(elected);
    unsigned now = leader();
    assert_int_equal(propose(now, map_cmd_drain("n1", true)), 0);
    for (int i = 0; i < 5; i++)
        if ((unsigned)i != old)
            assert_true(raft_fixture_step_until_applied(
                &F, (unsigned)i, raft_last_index(raft_fixture_get(&F, now)), 20000));
    int n1 = map_node_find(&fsms[now].map, "n1");
    assert_int_equal(fsms[now].map.nodes[n1].state, MAP_DRAINING);
    int n0 = map_node_find(&fsms[old].map, "n0");
    assert_int_equal(fsms[old].map.nodes[n0].state, MAP_UP); /* the cut-off leader changed nothing */
    for (unsigned j = 0; j < 5; j++)
        if (j != old) {
            raft_fixture_reconnect(&F, old, j);
            raft_fixture_reconnect(&F, j, old);
        }
    raft_fixture_step_until_elapsed(&F, 3000);
    settle();
    assert_converged();
    /* the proposal the old leader accepted was superseded, not applied */
    assert_int_equal(fsms[old].map.nodes[n0].state, MAP_UP);
    assert_int_equal(fsms[old].map.nodes[n1].state, MAP_DRAINING);
    cluster_down();
}

/* Messages lost at random between random pairs (seeded), a follower killed and revived after
 * snapshots were taken: every live node ends with the same map. */
static void test_loss_restart_and_snapshots(void **state)
{
    (void)state;
    cluster_up(5, 3); /* 3 voters, 2 standbys */
    for (int i = 0; i < 5; i++)
        raft_set_snapshot_threshold(raft_fixture_get(&F, (unsigned)i), 16);
    form();
    unsigned victim = (leader() + 1) % 5;
    raft_fixture_kill(&F, victim);
    for (int round = 0; round < 40; round++) {
        unsigned a = next_rand() % 5, b = next_rand() % 5;
        if (a != b && next_rand() % 2)
            raft_fixture_saturate(&F, a, b);
        unsigned l = find_leader();
        if (l < 5) {
            char id[8];
            snprintf(id, sizeof(id), "n%u", next_rand() % 5);
            propose(l, map_cmd_drain(id, next_rand() % 2));
        }
        raft_fixture_step_until_elapsed(&F, 50 + next_rand() % 200);
        for (unsigned x = 0; x < 5; x++)
            for (unsigned y = 0; y < 5; y++)
                if (x != y && raft_fixture_saturated(&F, x, y) && next_rand() % 3 == 0)
                    raft_fixture_desaturate(&F, x, y);
    }
    for (unsigned x = 0; x < 5; x++)
        for (unsigned y = 0; y < 5; y++)
            if (x != y && raft_fixture_saturated(&F, x, y))
                raft_fixture_desaturate(&F, x, y);
    raft_fixture_revive(&F, victim);
    assert_true(raft_fixture_step_until_has_leader(&F, 20000));
    assert_int_equal(propose(leader(), map_cmd_drain("n0", false)), 0);
    raft_fixture_step_until_elapsed(&F, 5000);
    settle();
    assert_converged();
    cluster_down();
}

int main(void)
{
    const char *s = getenv("CMCP_TEST_SEED");
    if (s && atoi(s) > 0)
        seed = (unsigned)atoi(s);
    printf("# seed %u (CMCP_TEST_SEED replays it)\n", seed);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_membership_and_placement),
        cmocka_unit_test(test_commands_that_do_not_fit),
        cmocka_unit_test(test_replicas_promotion_and_isr),
        cmocka_unit_test(test_replica_groups),
        cmocka_unit_test(test_isr_add),
        cmocka_unit_test(test_renewal_and_mark_down_race),
        cmocka_unit_test(test_json_round_trip_and_hash),
        cmocka_unit_test(test_replicated_formation),
        cmocka_unit_test(test_leader_partitioned_then_healed),
        cmocka_unit_test(test_loss_restart_and_snapshots),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
