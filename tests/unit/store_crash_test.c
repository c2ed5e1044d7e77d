/* Session store: a child process commits and is killed with SIGKILL (after
 * its commits, with writes staged, and in the middle of committing); the
 * reopened store holds exactly what was acknowledged, in every durability
 * mode, and opens without any report of damage. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "workers/store/store.h"

static char base[64], dir[128];

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static int setup(void **state)
{
    (void)state;
    snprintf(base, sizeof(base), "/tmp/store_crash.XXXXXX");
    assert_non_null(mkdtemp(base));
    snprintf(dir, sizeof(dir), "%s/shard-1", base);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static struct store *child_open(enum store_durability d)
{
    struct store_opts o = {.dir = dir, .durability = d, .max_events = 16};
    char err[512];
    struct store *s;
    if (store_open(&s, &o, NULL, err, sizeof(err)) != 0) {
        fprintf(stderr, "child: %s\n", err);
        _exit(3);
    }
    return s;
}

static void child_put(struct store *s, int batch, int j)
{
    char sid[32];
    snprintf(sid, sizeof(sid), "1-b%05d-%02d", batch, j);
    json_t *st = json_pack("{s:i,s:i,s:s}", "batch", batch, "j", j, "pad",
                           "some client info and capabilities, as a real session has");
    if (store_session_put(s, sid, st) != 0 ||
        store_event_put(s, sid, 1, batch + 1, false, sid) != 0)
        _exit(4);
    json_decref(st);
}

static void ack(int fd, int32_t v)
{
    if (write(fd, &v, sizeof(v)) != sizeof(v))
        _exit(5);
}

/* Commits `before` batches, then stages one more without committing and
 * waits to be killed. */
static void child_stage_then_wait(int fd, enum store_durability d, int before, int per_batch)
{
    struct store *s = child_open(d);
    for (int b = 0; b < before; b++) {
        for (int j = 0; j < per_batch; j++)
            child_put(s, b, j);
        if (store_commit(s) != 0)
            _exit(6);
        ack(fd, b);
    }
    for (int j = 0; j < per_batch; j++)
        child_put(s, before, j);
    ack(fd, -1); /* staged, not committed */
    for (;;)
        pause();
}

/* Commits batches until killed, acknowledging each after its commit. */
static void child_commit_forever(int fd, enum store_durability d, int per_batch)
{
    struct store *s = child_open(d);
    for (int b = 0;; b++) {
        for (int j = 0; j < per_batch; j++)
            child_put(s, b, j);
        if (store_commit(s) != 0)
            _exit(6);
        ack(fd, b);
    }
}

struct tally {
    int nbatch[4096];
    int max_batch;
    long n;
};

static int tally_cb(void *ud, const char *sid, json_t *state)
{
    struct tally *t = ud;
    int b = (int)json_integer_value(json_object_get(state, "batch"));
    int j = (int)json_integer_value(json_object_get(state, "j"));
    char want[32];
    snprintf(want, sizeof(want), "1-b%05d-%02d", b, j);
    assert_string_equal(sid, want); /* the value belongs to its key */
    assert_true(b >= 0 && b < 4096);
    t->nbatch[b]++;
    if (b > t->max_batch)
        t->max_batch = b;
    t->n++;
    return 0;
}

/* Reopens after the kill and checks: batches 0..acked complete, at most one
 * more (the commit in flight) and that one whole or absent. */
static void check_after_kill(enum store_durability d, int acked, int per_batch, bool exact)
{
    struct store_opts o = {.dir = dir, .durability = d, .max_events = 16};
    char err[512], *report = NULL;
    struct store *s;
    assert_int_equal(store_open(&s, &o, &report, err, sizeof(err)), 0);
    if (report)
        fail_msg("a kill -9 must not look like damage: %s", report);
    struct tally *t = calloc(1, sizeof(*t));
    t->max_batch = -1;
    assert_int_equal(store_session_foreach(s, tally_cb, t), 0);
    for (int b = 0; b <= acked; b++)
        assert_int_equal(t->nbatch[b], per_batch);
    assert_true(t->max_batch <= acked + 1);
    if (exact)
        assert_int_equal(t->max_batch, acked);
    if (t->max_batch == acked + 1)
        assert_int_equal(t->nbatch[acked + 1], per_batch); /* atomic */
    assert_int_equal(store_session_count(s), t->n);
    if (acked >= 0)
        assert_int_equal(store_last_seq(s, "1-b00000-00"), 1); /* its event survived too */
    /* The store goes on working after the crash. */
    json_t *j = json_pack("{s:i}", "after", 1);
    assert_int_equal(store_session_put(s, "1-after", j), 0);
    assert_int_equal(store_commit(s), 0);
    json_decref(j);
    free(t);
    store_close(s);
}

static int read_ack(int fd, int32_t *v)
{
    ssize_t n = read(fd, v, sizeof(*v));
    return n == sizeof(*v) ? 0 : -1;
}

static void kill_staged(enum store_durability d, int per_batch)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        child_stage_then_wait(p[1], d, 20, per_batch);
    }
    close(p[1]);
    int32_t v, acked = -1;
    while (read_ack(p[0], &v) == 0 && v >= 0)
        acked = v;
    assert_int_equal(v, -1);
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
    assert_true(WIFSIGNALED(st));
    close(p[0]);
    assert_int_equal(acked, 19);
    check_after_kill(d, acked, per_batch, true);
}

static void kill_mid_commit(enum store_durability d, int per_batch, unsigned seed)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    srand(seed);
    int wait_acks = 3 + rand() % 40;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        child_commit_forever(p[1], d, per_batch);
    }
    close(p[1]);
    int32_t v, acked = -1;
    for (int i = 0; i < wait_acks && read_ack(p[0], &v) == 0; i++)
        acked = v;
    usleep((useconds_t)(rand() % 3000)); /* land anywhere in a commit */
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
    assert_true(WIFSIGNALED(st));
    while (read_ack(p[0], &v) == 0) /* acks written before the kill */
        acked = v;
    close(p[0]);
    assert_true(acked >= wait_acks - 1);
    check_after_kill(d, acked, per_batch, false);
}

static void test_kill_with_staged_writes_fsync(void **state)
{
    (void)state;
    kill_staged(STORE_FSYNC, 1);
}

static void test_kill_with_staged_writes_group(void **state)
{
    (void)state;
    kill_staged(STORE_GROUP, 10);
}

static void test_kill_with_staged_writes_none(void **state)
{
    (void)state;
    kill_staged(STORE_NONE, 10);
}

static void rounds(enum store_durability d, int per_batch)
{
    for (unsigned r = 0; r < 6; r++) {
        kill_mid_commit(d, per_batch, (unsigned)time(NULL) + r);
        teardown(NULL); /* a fresh directory per round */
        setup(NULL);
    }
}

static void test_kill_mid_commit_fsync(void **state)
{
    (void)state;
    rounds(STORE_FSYNC, 1);
}

static void test_kill_mid_commit_group(void **state)
{
    (void)state;
    rounds(STORE_GROUP, 25);
}

static void test_kill_mid_commit_none(void **state)
{
    (void)state;
    rounds(STORE_NONE, 25);
}

static void test_kill_twice_same_store(void **state)
{
    (void)state;
    /* A second crash on a store that already survived one. */
    kill_mid_commit(STORE_GROUP, 10, 7);
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        struct store *s = child_open(STORE_GROUP);
        json_t *j = json_pack("{s:i}", "second", 2);
        if (store_session_put(s, "1-second", j) != 0 || store_commit(s) != 0)
            _exit(6);
        ack(p[1], 1);
        for (;;)
            pause();
    }
    close(p[1]);
    int32_t v;
    assert_int_equal(read_ack(p[0], &v), 0);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(p[0]);
    struct store_opts o = {.dir = dir, .durability = STORE_GROUP};
    char err[512], *report = NULL;
    struct store *s;
    assert_int_equal(store_open(&s, &o, &report, err, sizeof(err)), 0);
    assert_null(report);
    json_t *g = store_session_get(s, "1-second");
    assert_non_null(g);
    json_decref(g);
    store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_kill_with_staged_writes_fsync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_with_staged_writes_group, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_with_staged_writes_none, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_mid_commit_fsync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_mid_commit_group, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_mid_commit_none, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_twice_same_store, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
