/* Session store: disk full. With a small max_bytes, and (as root) on a tiny
 * tmpfs this test mounts itself: store_commit returns -ENOSPC and drops the
 * staged writes, reads keep working, commits of deletes go through, and
 * after deleting sessions commits succeed again. */
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
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "workers/store/store.h"

static char base[64], mnt[128];
static bool mounted;

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static int setup(void **state)
{
    (void)state;
    snprintf(base, sizeof(base), "/tmp/store_full.XXXXXX");
    assert_non_null(mkdtemp(base));
    mounted = false;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (mounted)
        umount2(mnt, MNT_DETACH);
    nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static json_t *session(int i, size_t pad)
{
    char *p = malloc(pad + 1);
    memset(p, 'a' + i % 26, pad);
    p[pad] = '\0';
    json_t *j = json_pack("{s:i,s:s}", "i", i, "pad", p);
    free(p);
    return j;
}

static void sid_of(char *buf, size_t len, int i)
{
    /* Ids spread over the key space, as random ones are. */
    snprintf(buf, len, "1-%08x", (unsigned)i * 2654435761u);
}

static void stage_batch(struct store *s, int n, size_t pad)
{
    char sid[32];
    for (int j = n; j < n + 10; j++) {
        json_t *js = session(j, pad);
        sid_of(sid, sizeof(sid), j);
        assert_int_equal(store_session_put(s, sid, js), 0);
        assert_int_equal(store_event_put(s, sid, 1, 1, false, "an event"), 0);
        json_decref(js);
    }
}

/* Fills until -ENOSPC, then checks the promises. */
static void fill_and_recover(struct store *s, size_t pad, const char *why)
{
    char sid[32];
    int n = 0, rc = 0;
    for (; n < 100000 && rc == 0; n += 10) {
        stage_batch(s, n, pad);
        rc = store_commit(s);
    }
    assert_int_equal(rc, -ENOSPC);
    if (getenv("STORE_TEST_VERBOSE"))
        fprintf(stderr, "after %d sessions: %s\n", n, store_errmsg(s));
    if (!strstr(store_errmsg(s), "ENOSPC") || !strstr(store_errmsg(s), why))
        fail_msg("unhelpful message: %s", store_errmsg(s));
    assert_false(store_has_staged(s)); /* dropped */
    int committed = n - 10;
    assert_true(committed > 0);
    assert_int_equal(store_session_count(s), committed);

    /* Reads keep working; the failed batch is not there. */
    sid_of(sid, sizeof(sid), 0);
    json_t *g = store_session_get(s, sid), *want = session(0, pad);
    assert_true(json_equal(g, want));
    json_decref(g);
    json_decref(want);
    sid_of(sid, sizeof(sid), committed);
    assert_null(store_session_get(s, sid));

    /* Still full: the same batch again fails the same way. */
    stage_batch(s, committed, pad);
    assert_int_equal(store_commit(s), -ENOSPC);
    assert_int_equal(store_session_count(s), committed);

    /* Deleting (in small commits, as a shard does) goes through although
     * full, and frees room. */
    for (int j = 0; j < committed / 2; j++) {
        sid_of(sid, sizeof(sid), j);
        assert_int_equal(store_session_del(s, sid), 0);
        if (j % 10 == 9)
            assert_int_equal(store_commit(s), 0);
    }
    assert_int_equal(store_commit(s), 0);
    assert_int_equal(store_session_count(s), committed - committed / 2);

    /* Writes work again. */
    json_t *js = session(committed, pad);
    sid_of(sid, sizeof(sid), committed);
    assert_int_equal(store_session_put(s, sid, js), 0);
    assert_int_equal(store_commit(s), 0);
    g = store_session_get(s, sid);
    assert_true(json_equal(g, js));
    json_decref(g);
    json_decref(js);
}

static void test_size_cap(void **state)
{
    (void)state;
    char dir[128], err[512];
    snprintf(dir, sizeof(dir), "%s/shard-1", base);
    struct store_opts o = {.dir = dir, .durability = STORE_FSYNC, .max_bytes = 1 << 20};
    struct store *s;
    assert_int_equal(store_open(&s, &o, NULL, err, sizeof(err)), 0);
    fill_and_recover(s, 1500, "max_bytes");
    struct store_stats st;
    assert_int_equal(store_stats(s, &st), 0);
    assert_true(st.used_bytes <= st.cap_bytes);
    store_close(s);

    /* A reopen with a cap lower than the data: reads and deletes work,
     * puts do not. */
    o.max_bytes = 256 << 10;
    char *report = NULL;
    assert_int_equal(store_open(&s, &o, &report, err, sizeof(err)), 0);
    assert_null(report);
    assert_true(store_session_count(s) > 0);
    json_t *j = session(1, 100);
    assert_int_equal(store_session_put(s, "1-x", j), 0);
    assert_int_equal(store_commit(s), -ENOSPC);
    json_decref(j);
    store_close(s);
}

static void test_size_cap_none(void **state)
{
    (void)state;
    char dir[128], err[512];
    snprintf(dir, sizeof(dir), "%s/shard-1", base);
    struct store_opts o = {.dir = dir, .durability = STORE_NONE, .max_bytes = 512 << 10};
    struct store *s;
    assert_int_equal(store_open(&s, &o, NULL, err, sizeof(err)), 0);
    fill_and_recover(s, 3000, "max_bytes"); /* values on overflow pages */
    store_close(s);
}

static void test_tmpfs_full(void **state)
{
    (void)state;
    snprintf(mnt, sizeof(mnt), "%s/mnt", base);
    assert_int_equal(mkdir(mnt, 0700), 0);
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=4m") != 0) {
        fprintf(stderr, "skipped: cannot mount a tmpfs here (%s)\n", strerror(errno));
        skip();
    }
    mounted = true;
    char dir[160], err[512];
    snprintf(dir, sizeof(dir), "%s/shard-1", mnt);
    struct store_opts o = {.dir = dir, .durability = STORE_GROUP}; /* cap 1 GiB: the disk bites */
    struct store *s;
    assert_int_equal(store_open(&s, &o, NULL, err, sizeof(err)), 0);
    fill_and_recover(s, 2000, "disk full");
    store_close(s);

    /* Reopening on the full file system works and sees the data. */
    char *report = NULL;
    assert_int_equal(store_open(&s, &o, &report, err, sizeof(err)), 0);
    assert_null(report);
    assert_true(store_session_count(s) > 0);
    store_close(s);
    umount2(mnt, MNT_DETACH);
    mounted = false;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_size_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_size_cap_none, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tmpfs_full, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
