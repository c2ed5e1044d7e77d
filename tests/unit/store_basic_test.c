/* Session store: round trips of sessions and events, trimming, deletes,
 * count/foreach, the three durability modes, argument errors. */
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
    char dir[128];
    struct store *s;
};

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static struct store *open_store(struct env *e, enum store_durability d, int max_events)
{
    struct store_opts o = {.dir = e->dir, .durability = d, .max_events = max_events};
    char err[512], *report = NULL;
    struct store *s = NULL;
    int rc = store_open(&s, &o, &report, err, sizeof(err));
    if (rc != 0)
        fail_msg("store_open: %d %s", rc, err);
    if (report)
        fail_msg("unexpected report: %s", report);
    return s;
}

static void reopen(struct env *e, enum store_durability d, int max_events)
{
    store_close(e->s);
    e->s = NULL; /* a failed open must not leave teardown a closed store */
    e->s = open_store(e, d, max_events);
}

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof(*e));
    snprintf(e->base, sizeof(e->base), "/tmp/store_basic.XXXXXX");
    assert_non_null(mkdtemp(e->base));
    snprintf(e->dir, sizeof(e->dir), "%s/shard-1", e->base);
    e->s = open_store(e, STORE_FSYNC, 8);
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    store_close(e->s);
    nftw(e->base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(e);
    return 0;
}

static json_t *session(int i)
{
    return json_pack("{s:i,s:s,s:I,s:I,s:{s:s,s:i}}", "v", 1, "protocol", "2025-06-18", "epoch",
                     (json_int_t)1, "seq", (json_int_t)i, "kv", "name", "value", "n", i);
}

static void test_session_round_trip(void **state)
{
    struct env *e = *state;
    json_t *a = session(1), *b = session(2);
    assert_int_equal(store_session_put(e->s, "1-a", a), 0);
    assert_int_equal(store_session_put(e->s, "1-b", b), 0);
    assert_true(store_has_staged(e->s));
    assert_null(store_session_get(e->s, "1-a")); /* staged is not committed */
    assert_int_equal(store_session_count(e->s), 0);
    assert_int_equal(store_commit(e->s), 0);
    assert_false(store_has_staged(e->s));
    assert_int_equal(store_commit(e->s), 0); /* nothing staged: a no-op */

    json_t *g = store_session_get(e->s, "1-a");
    assert_true(json_equal(g, a));
    json_decref(g);
    assert_int_equal(store_session_count(e->s), 2);
    assert_null(store_session_get(e->s, "1-zz"));

    /* A later put replaces; the caller's object may change after staging. */
    json_object_set_new(a, "seq", json_integer(5));
    assert_int_equal(store_session_put(e->s, "1-a", a), 0);
    json_object_set_new(a, "seq", json_integer(6));
    assert_int_equal(store_commit(e->s), 0);
    g = store_session_get(e->s, "1-a");
    assert_int_equal(json_integer_value(json_object_get(g, "seq")), 5);
    json_decref(g);

    /* Survives close and reopen. */
    reopen(e, STORE_FSYNC, 8);
    g = store_session_get(e->s, "1-b");
    assert_true(json_equal(g, b));
    json_decref(g);
    assert_int_equal(store_session_count(e->s), 2);
    json_decref(a);
    json_decref(b);
}

struct seen {
    int n;
    int64_t seqs[64];
    int streams[64];
    bool finals[64];
    char texts[64][32];
    char sids[64][32];
    int stop_at;
};

static int ev_cb(void *ud, int stream, int64_t seq, bool final, const char *text)
{
    struct seen *s = ud;
    s->seqs[s->n] = seq;
    s->streams[s->n] = stream;
    s->finals[s->n] = final;
    snprintf(s->texts[s->n], sizeof(s->texts[0]), "%s", text);
    s->n++;
    return s->stop_at && s->n >= s->stop_at ? 9 : 0;
}

static void test_events(void **state)
{
    struct env *e = *state;
    char t[32];
    for (int i = 1; i <= 6; i++) {
        snprintf(t, sizeof(t), "ev%d", i);
        assert_int_equal(store_event_put(e->s, "1-a", i % 2 ? 1 : 2, i, i == 5, t), 0);
    }
    assert_int_equal(store_event_put(e->s, "1-b", 1, 1, false, "other"), 0);
    assert_int_equal(store_commit(e->s), 0);

    struct seen s = {0};
    assert_int_equal(store_events_foreach(e->s, "1-a", 1, 0, ev_cb, &s), 0);
    assert_int_equal(s.n, 3); /* stream 1: seqs 1, 3, 5 */
    assert_int_equal(s.seqs[0], 1);
    assert_int_equal(s.seqs[2], 5);
    assert_true(s.finals[2]);
    assert_false(s.finals[0]);
    assert_string_equal(s.texts[1], "ev3");

    memset(&s, 0, sizeof(s));
    assert_int_equal(store_events_foreach(e->s, "1-a", 2, 2, ev_cb, &s), 0);
    assert_int_equal(s.n, 2); /* stream 2 after 2: seqs 4, 6 */
    assert_int_equal(s.seqs[0], 4);
    assert_int_equal(s.seqs[1], 6);

    memset(&s, 0, sizeof(s));
    assert_int_equal(store_events_foreach(e->s, "1-a", -1, 3, ev_cb, &s), 0);
    assert_int_equal(s.n, 3); /* every stream after 3 */
    memset(&s, 0, sizeof(s));
    s.stop_at = 2;
    assert_int_equal(store_events_foreach(e->s, "1-a", -1, 0, ev_cb, &s), 9);
    assert_int_equal(s.n, 2);

    memset(&s, 0, sizeof(s));
    assert_int_equal(store_events_foreach(e->s, "1-", -1, 0, ev_cb, &s), 0);
    assert_int_equal(s.n, 0); /* a prefix of an id is another id */
    assert_int_equal(store_events_foreach(e->s, "1-a", -1, INT64_MAX, ev_cb, &s), 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(store_last_seq(e->s, "1-a"), 6);
    assert_int_equal(store_last_seq(e->s, "1-b"), 1);
    assert_int_equal(store_last_seq(e->s, "1-c"), 0);

    /* Negative seqs order before positive ones. */
    assert_int_equal(store_event_put(e->s, "1-c", 1, -5, false, "neg"), 0);
    assert_int_equal(store_event_put(e->s, "1-c", 1, 3, false, "pos"), 0);
    assert_int_equal(store_commit(e->s), 0);
    memset(&s, 0, sizeof(s));
    assert_int_equal(store_events_foreach(e->s, "1-c", 1, INT64_MIN, ev_cb, &s), 0);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.seqs[0], -5);
    assert_int_equal(store_last_seq(e->s, "1-c"), 3);
}

static void test_trim_to_max_events(void **state)
{
    struct env *e = *state; /* max_events = 8 */
    char t[32];
    for (int i = 1; i <= 20; i++) {
        snprintf(t, sizeof(t), "ev%d", i);
        assert_int_equal(store_event_put(e->s, "1-a", 1, i, false, t), 0);
        if (i % 7 == 0) /* several commits, and trimming inside one */
            assert_int_equal(store_commit(e->s), 0);
    }
    assert_int_equal(store_commit(e->s), 0);
    struct seen s = {0};
    assert_int_equal(store_events_foreach(e->s, "1-a", 1, 0, ev_cb, &s), 0);
    assert_int_equal(s.n, 8);
    for (int i = 0; i < 8; i++)
        assert_int_equal(s.seqs[i], 13 + i);

    /* The same seq again replaces the event and keeps the count. */
    assert_int_equal(store_event_put(e->s, "1-a", 1, 20, true, "again"), 0);
    /* An event older than everything kept is trimmed at once. */
    assert_int_equal(store_event_put(e->s, "1-a", 1, 2, false, "old"), 0);
    assert_int_equal(store_commit(e->s), 0);
    memset(&s, 0, sizeof(s));
    assert_int_equal(store_events_foreach(e->s, "1-a", 1, 0, ev_cb, &s), 0);
    assert_int_equal(s.n, 8);
    assert_int_equal(s.seqs[0], 13);
    assert_string_equal(s.texts[7], "again");
    assert_true(s.finals[7]);
    assert_int_equal(store_last_seq(e->s, "1-a"), 20);

    /* A lower max_events after a restart applies at the next put. */
    reopen(e, STORE_FSYNC, 3);
    assert_int_equal(store_event_put(e->s, "1-a", 1, 21, false, "x"), 0);
    assert_int_equal(store_commit(e->s), 0);
    memset(&s, 0, sizeof(s));
    assert_int_equal(store_events_foreach(e->s, "1-a", 1, 0, ev_cb, &s), 0);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.seqs[0], 19);
}

static void test_delete_drops_events(void **state)
{
    struct env *e = *state;
    json_t *a = session(1);
    assert_int_equal(store_session_put(e->s, "1-a", a), 0);
    assert_int_equal(store_session_put(e->s, "1-ab", a), 0);
    for (int i = 1; i <= 5; i++) {
        assert_int_equal(store_event_put(e->s, "1-a", 1, i, false, "x"), 0);
        assert_int_equal(store_event_put(e->s, "1-ab", 1, i, false, "y"), 0);
    }
    assert_int_equal(store_commit(e->s), 0);
    assert_int_equal(store_session_del(e->s, "1-a"), 0);
    assert_int_equal(store_session_del(e->s, "1-none"), 0); /* not there: fine */
    assert_int_equal(store_commit(e->s), 0);
    assert_null(store_session_get(e->s, "1-a"));
    assert_int_equal(store_last_seq(e->s, "1-a"), 0);
    struct seen s = {0};
    assert_int_equal(store_events_foreach(e->s, "1-a", -1, 0, ev_cb, &s), 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(store_events_foreach(e->s, "1-ab", -1, 0, ev_cb, &s), 0);
    assert_int_equal(s.n, 5); /* the neighbour keeps its own */
    struct store_stats st;
    assert_int_equal(store_stats(e->s, &st), 0);
    assert_int_equal(st.sessions, 1);
    assert_int_equal(st.events, 5);

    /* Put, delete, put in one commit: applied in order. */
    assert_int_equal(store_session_put(e->s, "1-c", a), 0);
    assert_int_equal(store_event_put(e->s, "1-c", 1, 1, false, "z"), 0);
    assert_int_equal(store_session_del(e->s, "1-c"), 0);
    assert_int_equal(store_session_put(e->s, "1-c", a), 0);
    assert_int_equal(store_commit(e->s), 0);
    json_t *g = store_session_get(e->s, "1-c");
    assert_non_null(g);
    json_decref(g);
    assert_int_equal(store_last_seq(e->s, "1-c"), 0);
    json_decref(a);
}

static int sess_cb(void *ud, const char *sid, json_t *state)
{
    struct seen *s = ud;
    snprintf(s->sids[s->n], sizeof(s->sids[0]), "%s", sid);
    s->seqs[s->n] = json_integer_value(json_object_get(state, "seq"));
    s->n++;
    return s->stop_at && s->n >= s->stop_at ? 7 : 0;
}

static int commit_cb(void *ud, const char *sid, json_t *state)
{
    struct store *st = ud;
    /* A callback may write and commit while the walk is open. */
    char id[64];
    snprintf(id, sizeof(id), "%s-copy", sid);
    assert_int_equal(store_session_put(st, id, state), 0);
    assert_int_equal(store_commit(st), 0);
    return 0;
}

static void test_count_and_foreach(void **state)
{
    struct env *e = *state;
    char sid[32];
    for (int i = 0; i < 50; i++) {
        json_t *j = session(i);
        snprintf(sid, sizeof(sid), "1-s%02d", i);
        assert_int_equal(store_session_put(e->s, sid, j), 0);
        json_decref(j);
    }
    assert_int_equal(store_commit(e->s), 0);
    assert_int_equal(store_session_count(e->s), 50);
    struct seen *s = calloc(1, sizeof(*s) * 2);
    assert_int_equal(store_session_foreach(e->s, sess_cb, s), 0);
    assert_int_equal(s->n, 50);
    int64_t sum = 0;
    for (int i = 0; i < 50; i++) {
        int n;
        assert_int_equal(sscanf(s->sids[i], "1-s%d", &n), 1);
        assert_int_equal(s->seqs[i], n);
        sum += s->seqs[i];
    }
    assert_int_equal(sum, 49 * 50 / 2);
    memset(s, 0, sizeof(*s));
    s->stop_at = 3;
    assert_int_equal(store_session_foreach(e->s, sess_cb, s), 7);
    assert_int_equal(s->n, 3);
    free(s);

    assert_int_equal(store_session_foreach(e->s, commit_cb, e->s), 0);
    assert_int_equal(store_session_count(e->s), 100);
}

static void test_durability_modes(void **state)
{
    struct env *e = *state;
    enum store_durability d;
    assert_int_equal(store_durability_parse("fsync", &d), 0);
    assert_int_equal(d, STORE_FSYNC);
    assert_int_equal(store_durability_parse("group", &d), 0);
    assert_int_equal(d, STORE_GROUP);
    assert_int_equal(store_durability_parse("none", &d), 0);
    assert_int_equal(d, STORE_NONE);
    assert_int_equal(store_durability_parse("sometimes", &d), -EINVAL);
    assert_int_equal(store_durability_parse(NULL, &d), -EINVAL);
    assert_string_equal(store_durability_name(STORE_GROUP), "group");

    enum store_durability modes[] = {STORE_FSYNC, STORE_GROUP, STORE_NONE};
    for (int m = 0; m < 3; m++) {
        reopen(e, modes[m], 8);
        char sid[32];
        snprintf(sid, sizeof(sid), "1-%s", store_durability_name(modes[m]));
        json_t *j = session(m);
        for (int i = 0; i < 10; i++) /* a group of puts, one commit */
            assert_int_equal(store_session_put(e->s, sid, j), 0);
        assert_int_equal(store_event_put(e->s, sid, 1, 1, true, "done"), 0);
        assert_int_equal(store_commit(e->s), 0);
        json_decref(j);
    }
    reopen(e, STORE_FSYNC, 8);
    assert_int_equal(store_session_count(e->s), 3);
    assert_int_equal(store_last_seq(e->s, "1-none"), 1);
}

static void test_bad_arguments(void **state)
{
    struct env *e = *state;
    json_t *j = session(1), *arr = json_array();
    char longid[300];
    memset(longid, 'x', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    assert_int_equal(store_session_put(e->s, "", j), -EINVAL);
    assert_non_null(strstr(store_errmsg(e->s), "empty"));
    assert_int_equal(store_session_put(e->s, NULL, j), -EINVAL);
    assert_int_equal(store_session_put(e->s, longid, j), -EINVAL);
    assert_non_null(strstr(store_errmsg(e->s), "too long"));
    assert_int_equal(store_session_put(e->s, "1-a", arr), -EINVAL);
    assert_int_equal(store_event_put(e->s, longid, 1, 1, false, "x"), -EINVAL);
    assert_int_equal(store_session_del(e->s, ""), -EINVAL);
    assert_false(store_has_staged(e->s));
    assert_null(store_session_get(e->s, longid));
    assert_int_equal(store_events_foreach(e->s, "", 1, 0, ev_cb, NULL), -EINVAL);
    /* An event with no text stores an empty one. */
    assert_int_equal(store_event_put(e->s, "1-a", 1, 1, false, NULL), 0);
    assert_int_equal(store_commit(e->s), 0);
    struct seen s = {0};
    assert_int_equal(store_events_foreach(e->s, "1-a", 1, 0, ev_cb, &s), 0);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.texts[0], "");

    struct store *bad = NULL;
    char err[256];
    struct store_opts o = {.dir = ""};
    assert_int_equal(store_open(&bad, &o, NULL, err, sizeof(err)), -EINVAL);
    assert_null(bad);
    assert_non_null(strstr(err, "data_dir"));
    o.dir = "/proc/cmcp-no-such/shard-1";
    assert_true(store_open(&bad, &o, NULL, err, sizeof(err)) < 0);
    assert_null(bad);
    json_decref(j);
    json_decref(arr);
}

/* KiB of this process's memory that the store's data.mdb mapping holds (smaps Rss), -1 if none. */
static long mapped_kib(const struct env *e)
{
    char path[160], line[4096];
    snprintf(path, sizeof(path), "%s/data.mdb", e->dir);
    FILE *f = fopen("/proc/self/smaps", "r");
    assert_non_null(f);
    bool in = false;
    long kib = -1;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        unsigned long lo, hi;
        int end = 0;
        if (sscanf(line, "%lx-%lx %n", &lo, &hi, &end) == 2 && end > 0) { /* a mapping's first line */
            const char *name = strrchr(line, ' ');
            in = name && strcmp(name + 1, path) == 0;
        } else if (in && strncmp(line, "Rss:", 4) == 0) {
            kib = (kib < 0 ? 0 : kib) + atol(line + 4);
        }
    }
    fclose(f);
    return kib;
}

static int count_cb(void *ud, const char *sid, json_t *state)
{
    (void)sid, (void)state;
    (*(long *)ud)++;
    return 0;
}

/* Trimming drops the file pages reads mapped, and loses nothing. */
static void test_trim(void **state)
{
    struct env *e = *state;
    reopen(e, STORE_NONE, 8);
    enum { N = 3000 };
    char sid[32];
    for (int i = 0; i < N; i++) {
        snprintf(sid, sizeof(sid), "1-trim%05d", i);
        json_t *st = session(i);
        char pad[257];
        memset(pad, '.', 256);
        pad[256] = '\0';
        json_object_set_new(st, "pad", json_string(pad));
        assert_int_equal(store_session_put(e->s, sid, st), 0);
        json_decref(st);
    }
    assert_int_equal(store_commit(e->s), 0);
    store_trim(e->s);
    long base = mapped_kib(e);
    assert_true(base >= 0); /* the mapping is there */
    for (int i = 0; i < N; i++) {
        snprintf(sid, sizeof(sid), "1-trim%05d", i);
        json_t *st = store_session_get(e->s, sid);
        assert_non_null(st);
        json_decref(st);
    }
    long touched = mapped_kib(e);
    assert_true(touched > base + 256); /* ~1 MiB of records was read through the map */
    store_trim(e->s);
    assert_true(mapped_kib(e) <= base);
    /* Everything reads back the same, and commits go on. */
    for (int i = 0; i < N; i += 7) {
        snprintf(sid, sizeof(sid), "1-trim%05d", i);
        json_t *st = store_session_get(e->s, sid);
        assert_int_equal(json_integer_value(json_object_get(st, "seq")), i);
        json_decref(st);
    }
    json_t *st = session(N);
    assert_int_equal(store_session_put(e->s, "1-trim-new", st), 0);
    json_decref(st);
    assert_int_equal(store_commit(e->s), 0);
    /* A foreach over everything (a recovery) trims when it is done. */
    long n = 0;
    assert_int_equal(store_session_foreach(e->s, count_cb, &n), 0);
    assert_int_equal(n, N + 1);
    assert_true(mapped_kib(e) <= base);
    reopen(e, STORE_NONE, 8); /* the open-time check walked every page: trimmed too */
    assert_true(mapped_kib(e) < 256);
    store_trim(NULL); /* harmless */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_session_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trim_to_max_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_drops_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_count_and_foreach, setup, teardown),
        cmocka_unit_test_setup_teardown(test_durability_modes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trim, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
