/*
 * libraft on this project's I/O (cluster/raftio.h): three Raft members in
 * one process, each with its own LMDB log in a temporary directory, talking
 * through a send function that hands the encoded bytes to the others' loop.
 * They elect, replicate the cluster map, survive a member's restart from
 * its disk (log and snapshots) and one that lost its disk (a snapshot sent,
 * its answer lost), a member cut off and healed, and a leadership transfer.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <ftw.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster/fsm.h"
#include "cluster/raftio.h"

#define N 3

static struct ev_loop *loop;
static char base[64];

struct member {
    struct raft_io io;
    struct raft raft;
    struct map_fsm fsm;
    char dir[128];
    char address[8];
    bool running, cut;
    int closed;
};
static struct member M[N];

/* Messages in flight, delivered on the next loop turn (never inside raft's own call). */
struct msg {
    struct msg *next;
    int to;
    raft_id from;
    char from_addr[8];
    size_t len;
    unsigned char bytes[];
};
static struct msg *inflight, **inflight_tail = &inflight;
static ev_idle deliver_w;
static unsigned long delivered, dropped;
static raft_id drop_result_from; /* drop the next append-entries result this member sends */
static int arm_on_snapshot = -1;  /* arm that when this member receives a snapshot */
static int results_dropped, snapshots_sent;

static void deliver_cb(struct ev_loop *l, ev_idle *w, int revents)
{
    (void)revents;
    ev_idle_stop(l, w);
    struct msg *m = inflight;
    inflight = NULL;
    inflight_tail = &inflight;
    while (m) {
        struct msg *next = m->next;
        struct member *to = &M[m->to];
        if (to->running && !to->cut && !M[m->from - 1].cut) {
            if (m->len > 2 && m->bytes[1] == RAFT_IO_INSTALL_SNAPSHOT && m->to == arm_on_snapshot) {
                snapshots_sent++;
                if (snapshots_sent == 1)
                    drop_result_from = (raft_id)m->to + 1; /* its answer to this one is lost */
            }
            raftio_recv(&to->io, m->from, m->from_addr, m->bytes, m->len);
            delivered++;
        } else {
            dropped++;
        }
        free(m);
        m = next;
    }
}

static int send_fn(void *ud, raft_id to, const char *address, const void *bytes, size_t len)
{
    (void)address;
    struct member *from = ud;
    if (to < 1 || to > N)
        return -1;
    const unsigned char *b = bytes;
    if (drop_result_from == from->raft.id && len > 2 && b[1] == RAFT_IO_APPEND_ENTRIES_RESULT) {
        drop_result_from = 0; /* lost on the way, once */
        results_dropped++;
        return 0;
    }
    struct msg *m = malloc(sizeof(*m) + len);
    m->next = NULL;
    m->to = (int)to - 1;
    m->from = from->raft.id;
    snprintf(m->from_addr, sizeof(m->from_addr), "%s", from->address);
    m->len = len;
    memcpy(m->bytes, bytes, len);
    *inflight_tail = m;
    inflight_tail = &m->next;
    ev_idle_start(loop, &deliver_w);
    return 0;
}

static void member_start(int i, bool bootstrap)
{
    struct member *m = &M[i];
    snprintf(m->address, sizeof(m->address), "n%d", i + 1);
    struct raftio_opts o = {loop, m->dir, send_fn, m};
    char err[300];
    assert_int_equal(raftio_init(&m->io, &o, err, sizeof(err)), 0);
    map_fsm_init(&m->fsm, &m->raft);
    assert_int_equal(raft_init(&m->raft, &m->io, &m->fsm.fsm, (raft_id)i + 1, m->address), 0);
    raft_set_election_timeout(&m->raft, 150);
    raft_set_heartbeat_timeout(&m->raft, 30);
    raft_set_snapshot_threshold(&m->raft, 8);
    raft_set_snapshot_trailing(&m->raft, 4);
    raft_set_install_snapshot_timeout(&m->raft, 300); /* as the failover manager sets it */
    if (bootstrap) {
        struct raft_configuration conf;
        raft_configuration_init(&conf);
        for (int k = 0; k < N; k++) {
            char a[8];
            snprintf(a, sizeof(a), "n%d", k + 1);
            raft_configuration_add(&conf, (raft_id)k + 1, a, RAFT_VOTER);
        }
        assert_int_equal(raft_bootstrap(&m->raft, &conf), 0);
        raft_configuration_close(&conf);
    }
    assert_int_equal(raft_start(&m->raft), 0);
    m->running = true;
}

static void closed_cb(struct raft *r)
{
    for (int i = 0; i < N; i++)
        if (&M[i].raft == r)
            M[i].closed++;
}

#define RUN_UNTIL(cond, ms)                                                                 \
    do {                                                                                    \
        for (int turn_ = 0; turn_ < (ms) * 2 && !(cond); turn_++) {                         \
            ev_run(loop, EVRUN_NOWAIT);                                                     \
            usleep(500);                                                                    \
        }                                                                                   \
    } while (0)

static void member_stop(int i)
{
    struct member *m = &M[i];
    int before = m->closed;
    raft_close(&m->raft, closed_cb);
    RUN_UNTIL(m->closed > before, 5000);
    assert_int_equal(m->closed, before + 1);
    m->running = false;
    raftio_free(&m->io);
}

static int leader(void)
{
    int best = -1;
    for (int i = 0; i < N; i++)
        if (M[i].running && !M[i].cut && raft_state(&M[i].raft) == RAFT_LEADER &&
            (best < 0 || M[i].raft.current_term > M[best].raft.current_term))
            best = i;
    return best;
}

static int applied_ok;
static void apply_cb(struct raft_apply *req, int status, void *result)
{
    (void)result;
    if (status == 0)
        applied_ok++;
    free(req);
}

static void propose(char *cmd)
{
    int l = -1;
    RUN_UNTIL((l = leader()) >= 0, 5000);
    assert_true(l >= 0);
    struct raft_buffer buf = {raft_malloc(strlen(cmd)), strlen(cmd)};
    memcpy(buf.base, cmd, buf.len);
    free(cmd);
    struct raft_apply *req = calloc(1, sizeof(*req));
    assert_int_equal(raft_apply(&M[l].raft, req, &buf, 1, apply_cb), 0);
}

/* Every running, connected member has applied as far as the leader and holds the same map. */
static bool converged(void)
{
    int l = leader();
    if (l < 0)
        return false;
    raft_index idx = raft_last_applied(&M[l].raft);
    char h0[17];
    map_hash(&M[l].fsm.map, h0);
    for (int i = 0; i < N; i++) {
        if (!M[i].running || M[i].cut)
            continue;
        char h[17];
        map_hash(&M[i].fsm.map, h);
        if (raft_last_applied(&M[i].raft) < idx || strcmp(h, h0) != 0)
            return false;
    }
    return true;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static int transfers_done;

static void transfer_cb(struct raft_transfer *req)
{
    (void)req;
    transfers_done++;
}

static void test_elect_replicate_restart_heal(void **state)
{
    (void)state;
    for (int i = 0; i < N; i++) {
        snprintf(M[i].dir, sizeof(M[i].dir), "%s/n%d", base, i + 1);
        assert_int_equal(raftio_has_state(M[i].dir), 0);
        member_start(i, true);
    }
    RUN_UNTIL(leader() >= 0, 5000);
    assert_true(leader() >= 0);
    propose(map_cmd_init(32, 1));
    for (int i = 0; i < N; i++) {
        char id[8];
        snprintf(id, sizeof(id), "n%d", i + 1);
        propose(map_cmd_join(id, 7000 + (uint64_t)i, "127.0.0.1:7400"));
    }
    RUN_UNTIL(applied_ok == 4 && converged(), 5000);
    assert_int_equal(applied_ok, 4);
    assert_true(converged());
    assert_int_equal(M[0].fsm.map.nnodes, 3);

    /* a follower stops, the others go on (past a snapshot), it restarts from its own disk */
    int f = (leader() + 1) % N;
    member_stop(f);
    assert_int_equal(raftio_has_state(M[f].dir), 1);
    for (int k = 0; k < 20; k++)
        propose(map_cmd_drain(k % 2 ? "n1" : "n2", k % 2 == 0));
    RUN_UNTIL(applied_ok == 24, 5000);
    assert_int_equal(applied_ok, 24);
    member_start(f, false);
    RUN_UNTIL(converged(), 5000);
    assert_true(converged());
    assert_int_equal(M[f].fsm.map.nnodes, 3); /* from its log or a snapshot, then caught up */

    /* a follower loses its disk: back empty, it catches up through the leader's snapshot, also
     * when its first answer to the snapshot is lost */
    f = (leader() + 1) % N;
    member_stop(f);
    nftw(M[f].dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    assert_int_equal(raftio_has_state(M[f].dir), 0);
    for (int k = 0; k < 12; k++)
        propose(map_cmd_drain(k % 2 ? "n1" : "n2", k % 2 == 0));
    RUN_UNTIL(applied_ok == 36, 5000);
    assert_int_equal(applied_ok, 36);
    arm_on_snapshot = f;
    member_start(f, false);
    RUN_UNTIL(converged(), 8000);
    assert_true(converged());
    assert_int_equal(results_dropped, 1);
    arm_on_snapshot = -1;
    assert_int_equal(M[f].fsm.map.nnodes, 3);

    /* the leader is cut off: the other two elect and go on; after the heal, one map */
    int old = leader();
    M[old].cut = true;
    int other = -1;
    RUN_UNTIL((other = leader()) >= 0 && other != old, 5000);
    assert_true(other >= 0 && other != old);
    propose(map_cmd_leave("n3"));
    RUN_UNTIL(applied_ok == 37, 5000);
    assert_int_equal(applied_ok, 37);
    M[old].cut = false;
    RUN_UNTIL(converged() && M[old].fsm.map.nodes[2].state == MAP_LEFT, 5000);
    assert_true(converged());
    assert_int_equal(M[old].fsm.map.nodes[2].state, MAP_LEFT);

    /* leadership handed to another member (libraft sends its TimeoutNow with no callback) */
    int from = leader();
    raft_id to = (raft_id)((from + 1) % N) + 1;
    static struct raft_transfer treq;
    transfers_done = 0;
    assert_int_equal(raft_transfer(&M[from].raft, &treq, to, transfer_cb), 0);
    RUN_UNTIL(transfers_done == 1 && leader() == (int)to - 1, 5000);
    assert_int_equal(transfers_done, 1);
    assert_int_equal(leader(), (int)to - 1);
    print_message("messages delivered %lu, dropped %lu\n", delivered, dropped);
    for (int i = 0; i < N; i++)
        member_stop(i);
    /* bootstrapping a member that has state is refused */
    struct member *m = &M[0];
    struct raftio_opts o = {loop, m->dir, send_fn, m};
    char err[300];
    assert_int_equal(raftio_init(&m->io, &o, err, sizeof(err)), 0);
    assert_int_equal(raft_init(&m->raft, &m->io, &m->fsm.fsm, 1, "n1"), 0);
    struct raft_configuration conf;
    raft_configuration_init(&conf);
    raft_configuration_add(&conf, 1, "n1", RAFT_VOTER);
    assert_int_equal(raft_bootstrap(&m->raft, &conf), RAFT_CANTBOOTSTRAP);
    raft_configuration_close(&conf);
    m->running = true;
    member_stop(0);
}

int main(void)
{
    assert_true(sodium_init() >= 0);
    loop = ev_default_loop(0);
    ev_idle_init(&deliver_w, deliver_cb);
    snprintf(base, sizeof(base), "/tmp/cluster_raftio.XXXXXX");
    if (!mkdtemp(base))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_elect_replicate_restart_heal),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}
