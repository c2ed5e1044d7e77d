/* Session store: changes for replication (store.h, "Replication"). An owner's
 * commits become numbered, chained changes per partition; a replica applies
 * them in order and once, and refuses a deposed owner's, a gap, a history
 * that differs from its own, and damage; positions survive a reopen, and a
 * failed or discarded batch leaves them as they were. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "workers/store/store.h"

struct env {
    char base[64];
    struct store *owner, *replica, *third;
};

/* a change sent: copied from store_changes' callback */
struct sent {
    int partition;
    char *bytes;
    size_t len;
};
static struct sent sent[64];
static int nsent;
static uint64_t epoch_now = 1;

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static struct store *open_dir(struct env *e, const char *name)
{
    char dir[160];
    snprintf(dir, sizeof(dir), "%s/%s", e->base, name);
    struct store_opts o = {.dir = dir, .durability = STORE_FSYNC, .max_events = 8};
    char err[512], *report = NULL;
    struct store *s = NULL;
    if (store_open(&s, &o, &report, err, sizeof(err)) != 0)
        fail_msg("store_open: %s", err);
    free(report);
    return s;
}

static int part_of(const char *sid)
{
    char *end;
    long p = strtol(sid, &end, 10);
    return end != sid && *end == '-' ? (int)p : -1;
}

static uint64_t epoch_of(int partition)
{
    (void)partition;
    return epoch_now;
}

static int keep(void *ud, int partition, const char *change, size_t len)
{
    (void)ud;
    assert_true(nsent < 64);
    sent[nsent].partition = partition;
    sent[nsent].bytes = malloc(len);
    memcpy(sent[nsent].bytes, change, len);
    sent[nsent].len = len;
    nsent++;
    return 0;
}

static void forget_sent(void)
{
    for (int i = 0; i < nsent; i++)
        free(sent[i].bytes);
    nsent = 0;
}

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof(*e));
    snprintf(e->base, sizeof(e->base), "/tmp/store_change.XXXXXX");
    assert_non_null(mkdtemp(e->base));
    e->owner = open_dir(e, "owner");
    e->replica = open_dir(e, "replica");
    e->third = open_dir(e, "third");
    epoch_now = 1;
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    store_close(e->owner);
    store_close(e->replica);
    store_close(e->third);
    forget_sent();
    nftw(e->base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(e);
    return 0;
}

/* the owner writes `value` into session sid (and an event), stamps and commits */
static void owner_write(struct store *s, const char *sid, const char *value)
{
    json_t *st = json_pack("{s:s}", "v", value);
    assert_int_equal(store_session_put(s, sid, st), 0);
    json_decref(st);
    assert_int_equal(store_event_put(s, sid, 0, (int64_t)store_last_seq(s, sid) + 1, false, value),
                     0);
    assert_int_equal(store_changes(s, part_of, epoch_of, keep, NULL), 0);
    assert_int_equal(store_commit(s), 0);
}

static void apply_all(struct store *s, int from)
{
    for (int i = from; i < nsent; i++)
        assert_int_equal(store_change_stage(s, sent[i].bytes, sent[i].len), 0);
    assert_int_equal(store_commit(s), 0);
}

static void assert_value(struct store *s, const char *sid, const char *value)
{
    json_t *st = store_session_get(s, sid);
    assert_non_null(st);
    assert_string_equal(json_string_value(json_object_get(st, "v")), value);
    json_decref(st);
}

static void test_owner_to_replica(void **state)
{
    struct env *e = *state;
    owner_write(e->owner, "3-aaa", "one");
    owner_write(e->owner, "3-aaa", "two");
    owner_write(e->owner, "7-bbb", "three");
    /* a write touching two partitions is two changes */
    json_t *st = json_pack("{s:s}", "v", "four");
    assert_int_equal(store_session_put(e->owner, "3-ccc", st), 0);
    assert_int_equal(store_session_put(e->owner, "7-ddd", st), 0);
    assert_int_equal(store_session_put(e->owner, "not-a-partition", st), 0);
    json_decref(st);
    assert_int_equal(store_changes(e->owner, part_of, epoch_of, keep, NULL), 0);
    assert_int_equal(store_commit(e->owner), 0);
    assert_int_equal(nsent, 5);
    struct store_change_info in;
    assert_int_equal(store_change_peek(sent[4].bytes, sent[4].len, &in), 0);
    assert_int_equal(in.partition, 7);
    assert_int_equal(in.seq, 2);
    assert_int_equal(in.nops, 1);

    apply_all(e->replica, 0);
    assert_value(e->replica, "3-aaa", "two");
    assert_value(e->replica, "7-bbb", "three");
    assert_value(e->replica, "3-ccc", "four");
    assert_value(e->replica, "7-ddd", "four");
    assert_null(store_session_get(e->replica, "not-a-partition")); /* not replicated */
    assert_int_equal(store_last_seq(e->replica, "3-aaa"), 2);        /* events too */
    uint64_t ep, sq;
    assert_int_equal(store_position(e->replica, 3, &ep, &sq), 0);
    assert_int_equal(ep, 1);
    assert_int_equal(sq, 3);
    assert_int_equal(store_position(e->owner, 3, &ep, &sq), 0);
    assert_int_equal(sq, 3);
    assert_int_equal(store_position(e->replica, 9, &ep, &sq), 0);
    assert_int_equal(sq, 0);

    /* a resend is applied once */
    assert_int_equal(store_change_stage(e->replica, sent[0].bytes, sent[0].len), 1);
    assert_int_equal(store_change_stage(e->replica, sent[4].bytes, sent[4].len), 1);
    assert_false(store_has_staged(e->replica));

    /* positions survive a reopen on both sides */
    store_close(e->replica);
    e->replica = open_dir(e, "replica");
    assert_int_equal(store_position(e->replica, 7, &ep, &sq), 0);
    assert_int_equal(sq, 2);
    owner_write(e->owner, "7-bbb", "five");
    assert_int_equal(store_change_stage(e->replica, sent[5].bytes, sent[5].len), 0);
    assert_int_equal(store_commit(e->replica), 0);
    assert_value(e->replica, "7-bbb", "five");
}

/* The owner sends a change before its own commit ends; if it then loses the change (it dies,
 * or its commit fails), its next change carries the same number with other content. The copy
 * holding the lost one must refuse it rather than take it for a resend. */
static void test_last_change_lost_by_its_owner(void **state)
{
    struct env *e = *state;
    owner_write(e->owner, "3-aaa", "one");
    json_t *st = json_pack("{s:s}", "v", "lost");
    assert_int_equal(store_session_put(e->owner, "3-aaa", st), 0);
    json_decref(st);
    assert_int_equal(store_changes(e->owner, part_of, epoch_of, keep, NULL), 0);
    store_discard(e->owner); /* the owner's commit never happened */
    apply_all(e->replica, 0);  /* but the copy has both */
    assert_value(e->replica, "3-aaa", "lost");
    int lost = nsent - 1;
    owner_write(e->owner, "3-aaa", "two"); /* numbered 2 again */
    int again = nsent - 1;
    struct store_change_info a, b;
    assert_int_equal(store_change_peek(sent[lost].bytes, sent[lost].len, &a), 0);
    assert_int_equal(store_change_peek(sent[again].bytes, sent[again].len, &b), 0);
    assert_int_equal(a.seq, 2);
    assert_int_equal(b.seq, 2);
    assert_int_equal(store_change_stage(e->replica, sent[again].bytes, sent[again].len), -EXDEV);
    store_discard(e->replica);
    /* the very same change again is a resend */
    assert_int_equal(store_change_stage(e->replica, sent[lost].bytes, sent[lost].len), 1);
    /* and an older one is too */
    assert_int_equal(store_change_stage(e->replica, sent[0].bytes, sent[0].len), 1);
    assert_value(e->replica, "3-aaa", "lost");
}

static int count_events(void *ud, int stream, int64_t seq, bool final, const char *text)
{
    (void)stream, (void)seq, (void)final, (void)text;
    (*(int *)ud)++;
    return 0;
}

/* a catch-up: a replica that holds another history (and sessions the owner no longer has) is
 * rebuilt from the owner's snapshot of one partition, then takes the changes after it */
static void test_snapshot(void **state)
{
    struct env *e = *state;
    owner_write(e->owner, "3-aaa", "one");
    owner_write(e->owner, "3-aaa", "two");
    owner_write(e->owner, "3-bbb", "three");
    owner_write(e->owner, "31-zzz", "other partition, same digits");
    owner_write(e->owner, "4-ccc", "four");
    /* the third store went its own way on partitions 3 and 4 (a deposed owner's tail) */
    int mark = nsent;
    owner_write(e->third, "3-aaa", "diverged");
    owner_write(e->third, "3-old", "gone at the owner");
    owner_write(e->third, "4-keep", "untouched");
    while (nsent > mark) /* the third's own changes go nowhere */
        free(sent[--nsent].bytes);

    char *snap = NULL;
    size_t len = 0;
    struct store_snapshot_info in;
    assert_int_equal(store_snapshot(e->owner, 3, "3-", part_of, 0, &snap, &len, &in), 0);
    assert_int_equal(in.sessions, 2);
    assert_int_equal(in.events, 3);
    assert_int_equal(in.seq, 3);
    assert_int_equal(in.epoch, 1);
    struct store_snapshot_info pk;
    assert_int_equal(store_snapshot_peek(snap, len, &pk), 0);
    assert_int_equal(pk.partition, 3);
    assert_int_equal(pk.seq, 3);
    /* a bound below its size is refused */
    char *big = NULL;
    size_t blen = 0;
    assert_int_equal(store_snapshot(e->owner, 3, "3-", part_of, 40, &big, &blen, &in), -EFBIG);
    assert_null(big);

    /* a change of it does not apply on the diverged copy... */
    owner_write(e->owner, "3-aaa", "after the snapshot");
    int after = nsent - 1;
    assert_int_equal(store_change_stage(e->third, sent[after].bytes, sent[after].len), -EAGAIN);
    store_discard(e->third);
    /* ...the snapshot replaces the partition in one commit, then the change applies */
    assert_int_equal(store_snapshot_stage(e->third, snap, len, "3-", part_of), 0);
    assert_int_equal(store_commit(e->third), 0);
    assert_value(e->third, "3-aaa", "two");
    assert_value(e->third, "3-bbb", "three");
    assert_null(store_session_get(e->third, "3-old"));
    assert_int_equal(store_last_seq(e->third, "3-old"), 0);
    assert_value(e->third, "4-keep", "untouched"); /* other partitions stay */
    assert_null(store_session_get(e->third, "31-zzz"));
    int nev = 0;
    assert_int_equal(store_events_foreach(e->third, "3-aaa", -1, 0, count_events, &nev), 0);
    assert_int_equal(nev, 2);
    uint64_t ep, sq;
    assert_int_equal(store_position(e->third, 3, &ep, &sq), 0);
    assert_int_equal(sq, 3);
    assert_int_equal(store_change_stage(e->third, sent[after].bytes, sent[after].len), 0);
    assert_int_equal(store_commit(e->third), 0);
    assert_value(e->third, "3-aaa", "after the snapshot");
    /* applying the same snapshot again goes back to its position: apply is by (epoch, seq) */
    assert_int_equal(store_snapshot_stage(e->third, snap, len, "3-", part_of), 0);
    assert_int_equal(store_commit(e->third), 0);
    assert_value(e->third, "3-aaa", "two");
    assert_int_equal(store_change_stage(e->third, sent[after].bytes, sent[after].len), 0);
    assert_int_equal(store_commit(e->third), 0);
    /* damage and a record of another partition are refused, nothing staged */
    snap[len - 1] ^= 1;
    assert_int_equal(store_snapshot_stage(e->third, snap, len, "3-", part_of), -EINVAL);
    snap[len - 1] ^= 1;
    assert_int_equal(store_snapshot_stage(e->third, snap, len, "4-", part_of), -EINVAL);
    assert_false(store_has_staged(e->third));
    free(snap);
    /* an empty partition's snapshot empties the copy */
    assert_int_equal(store_snapshot(e->owner, 9, "9-", part_of, 0, &snap, &len, &in), 0);
    assert_int_equal(in.nops, 0);
    assert_int_equal(store_snapshot_stage(e->third, snap, len, "9-", part_of), 0);
    assert_int_equal(store_commit(e->third), 0);
    free(snap);
}

static void test_refusals(void **state)
{
    struct env *e = *state;
    for (int i = 0; i < 4; i++)
        owner_write(e->owner, "5-x", i % 2 ? "odd" : "even");
    /* a gap: change 2 before 1 */
    assert_int_equal(store_change_stage(e->replica, sent[1].bytes, sent[1].len), -EAGAIN);
    assert_false(store_has_staged(e->replica));
    assert_non_null(strstr(store_errmsg(e->replica), "fetch"));
    apply_all(e->replica, 0);

    /* damage anywhere is refused, nothing staged */
    char *bad = malloc(sent[3].len);
    for (size_t at = 0; at < sent[3].len; at += 7) {
        memcpy(bad, sent[3].bytes, sent[3].len);
        bad[at] ^= 0x20;
        assert_int_equal(store_change_stage(e->third, bad, sent[3].len), -EINVAL);
        assert_false(store_has_staged(e->third));
    }
    assert_int_equal(store_change_stage(e->third, sent[0].bytes, 20), -EINVAL);
    free(bad);

    /* a new owner (the replica, promoted under epoch 2) goes on; the deposed owner's late
     * change of epoch 1 is refused by a copy that has seen epoch 2 */
    forget_sent();
    owner_write(e->owner, "5-x", "lost"); /* the old owner's write nobody received */
    struct sent lost = sent[0];
    nsent = 0;
    epoch_now = 2;
    owner_write(e->replica, "5-x", "kept");
    assert_int_equal(store_change_stage(e->third, sent[0].bytes, sent[0].len), -EAGAIN);
    assert_int_equal(store_change_stage(e->owner, sent[0].bytes, sent[0].len), -EXDEV);
    assert_non_null(strstr(store_errmsg(e->owner), "snapshot"));
    assert_false(store_has_staged(e->owner));
    /* a copy that took the new epoch refuses the old one */
    struct store_change_info in;
    assert_int_equal(store_change_peek(lost.bytes, lost.len, &in), 0);
    assert_int_equal(in.epoch, 1);
    assert_int_equal(store_change_stage(e->replica, lost.bytes, lost.len), -ESTALE);
    free(lost.bytes);
    /* and the promoted owner cannot write under an older epoch */
    epoch_now = 1;
    json_t *st = json_pack("{s:s}", "v", "old");
    assert_int_equal(store_session_put(e->replica, "5-x", st), 0);
    json_decref(st);
    assert_int_equal(store_changes(e->replica, part_of, epoch_of, keep, NULL), -ESTALE);
    store_discard(e->replica);
    assert_value(e->replica, "5-x", "kept");
}

static void test_discard_keeps_positions(void **state)
{
    struct env *e = *state;
    owner_write(e->owner, "1-a", "v1");
    json_t *st = json_pack("{s:s}", "v", "v2");
    assert_int_equal(store_session_put(e->owner, "1-a", st), 0);
    json_decref(st);
    assert_int_equal(store_changes(e->owner, part_of, epoch_of, keep, NULL), 0);
    uint64_t ep, sq;
    assert_int_equal(store_position(e->owner, 1, &ep, &sq), 0);
    assert_int_equal(sq, 2); /* staged */
    store_discard(e->owner);  /* not acknowledged: not applied, not numbered */
    assert_int_equal(store_position(e->owner, 1, &ep, &sq), 0);
    assert_int_equal(sq, 1);
    nsent = 1; /* the discarded change is never sent */
    free(sent[1].bytes);
    owner_write(e->owner, "1-a", "v3");
    apply_all(e->replica, 0);
    assert_value(e->replica, "1-a", "v3");
    assert_int_equal(store_position(e->replica, 1, &ep, &sq), 0);
    assert_int_equal(sq, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_owner_to_replica, setup, teardown),
        cmocka_unit_test_setup_teardown(test_last_change_lost_by_its_owner, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_discard_keeps_positions, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
