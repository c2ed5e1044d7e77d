/* Session store: damaged files. Truncated, garbage meta pages, a garbage
 * leaf page, one flipped byte in a value: store_open reports, salvages what
 * is intact (never a damaged session), moves the files aside and returns a
 * working store; the next open is clean. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "workers/store/store.h"

#define N 2000

static char base[64], dir[128], data[160];

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static json_t *session(int i)
{
    return json_pack("{s:i,s:s,s:{s:s}}", "i", i, "protocol", "2025-06-18", "client", "name",
                     "a client with a name long enough to fill some bytes of the page");
}

static void sid_of(char *buf, size_t len, int i)
{
    snprintf(buf, len, "1-s%05d", i);
}

/* A store of N sessions with two events each, closed. */
static int setup(void **state)
{
    (void)state;
    snprintf(base, sizeof(base), "/tmp/store_corrupt.XXXXXX");
    assert_non_null(mkdtemp(base));
    snprintf(dir, sizeof(dir), "%s/shard-1", base);
    snprintf(data, sizeof(data), "%s/data.mdb", dir);
    struct store_opts o = {.dir = dir, .durability = STORE_NONE};
    char err[512], sid[32];
    struct store *s;
    assert_int_equal(store_open(&s, &o, NULL, err, sizeof(err)), 0);
    for (int i = 0; i < N; i++) {
        sid_of(sid, sizeof(sid), i);
        json_t *j = session(i);
        assert_int_equal(store_session_put(s, sid, j), 0);
        assert_int_equal(store_event_put(s, sid, 1, 1, false, "first"), 0);
        assert_int_equal(store_event_put(s, sid, 1, 2, true, "second"), 0);
        json_decref(j);
        if (i % 100 == 99)
            assert_int_equal(store_commit(s), 0);
    }
    store_close(s);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static long file_size(void)
{
    struct stat st;
    assert_int_equal(stat(data, &st), 0);
    return (long)st.st_size;
}

static void overwrite(long off, const void *buf, size_t len)
{
    int fd = open(data, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, buf, len, off), (ssize_t)len);
    close(fd);
}

static void garbage(long off, size_t len)
{
    unsigned char *b = malloc(len);
    srand(42);
    for (size_t i = 0; i < len; i++)
        b[i] = (unsigned char)rand();
    overwrite(off, b, len);
    free(b);
}

static int count_aside(void)
{
    DIR *d = opendir(base);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += strstr(e->d_name, "shard-1.corrupt-") != NULL;
    closedir(d);
    return n;
}

/* Opens the damaged store: it must report, work, and hold only intact
 * sessions; returns how many it kept. */
static long open_damaged(const char *expect_in_report)
{
    struct store_opts o = {.dir = dir, .durability = STORE_FSYNC};
    char err[512], *report = NULL, sid[32];
    struct store *s;
    assert_int_equal(store_open(&s, &o, &report, err, sizeof(err)), 0);
    assert_non_null(report);
    if (getenv("STORE_TEST_VERBOSE"))
        fprintf(stderr, "report: %s\n", report);
    if (expect_in_report && !strstr(report, expect_in_report))
        fail_msg("report lacks '%s': %s", expect_in_report, report);
    assert_non_null(strstr(report, ".corrupt-")); /* says where the files went */
    free(report);
    assert_int_equal(count_aside(), 1);

    long kept = 0;
    for (int i = 0; i < N; i++) {
        sid_of(sid, sizeof(sid), i);
        json_t *g = store_session_get(s, sid);
        if (!g)
            continue;
        json_t *want = session(i);
        assert_true(json_equal(g, want)); /* never a damaged session */
        json_decref(want);
        json_decref(g);
        kept++;
        assert_true(store_last_seq(s, sid) <= 2); /* its events may be lost, never wrong */
    }
    assert_int_equal(store_session_count(s), kept);
    json_t *j = session(-1);
    assert_int_equal(store_session_put(s, "1-new", j), 0);
    assert_int_equal(store_commit(s), 0);
    json_decref(j);
    store_close(s);

    /* The salvaged store opens clean and keeps what it had. */
    report = NULL;
    assert_int_equal(store_open(&s, &o, &report, err, sizeof(err)), 0);
    assert_null(report);
    assert_int_equal(store_session_count(s), kept + 1);
    store_close(s);
    return kept;
}

static void test_truncated_to_zero(void **state)
{
    (void)state;
    assert_int_equal(truncate(data, 0), 0);
    assert_int_equal(open_damaged("truncated"), 0);
}

static void test_truncated_to_one_page(void **state)
{
    (void)state;
    assert_int_equal(truncate(data, 4096), 0);
    assert_int_equal(open_damaged("truncated"), 0);
}

static void test_truncated_to_half(void **state)
{
    (void)state;
    /* Pages past the end would fault (SIGBUS) if LMDB were let loose. */
    assert_int_equal(truncate(data, file_size() / 2), 0);
    assert_true(open_damaged("truncated") < N);
}

static void test_garbage_meta_pages(void **state)
{
    (void)state;
    garbage(0, 2 * 4096);
    assert_int_equal(open_damaged("meta"), 0);
}

/* Finds the page holding a given session's record: a leaf. */
static long page_of(const char *needle)
{
    FILE *f = fopen(data, "rb");
    assert_non_null(f);
    static char page[4096];
    size_t nl = strlen(needle);
    for (long off = 0;; off += 4096) {
        if (fread(page, 1, sizeof(page), f) != sizeof(page))
            break;
        if (memmem(page, sizeof(page), needle, nl)) {
            fclose(f);
            return off;
        }
    }
    fclose(f);
    return -1;
}

static void test_garbage_leaf_page(void **state)
{
    (void)state;
    long off = page_of("{\"i\":1000,"); /* only in the sessions' records */
    assert_true(off > 0);
    garbage(off, 4096);
    long kept = open_damaged(NULL);
    /* Only that page's sessions are lost: the walks go round it. */
    assert_true(kept < N);
    assert_true(kept > N - 100);
}

static void test_flipped_byte_in_value(void **state)
{
    (void)state;
    /* A flip inside a JSON string keeps the JSON valid: only the record's
     * checksum can tell. */
    long off = page_of("{\"i\":777,");
    assert_true(off > 0);
    FILE *f = fopen(data, "rb");
    static char page[4096];
    fseek(f, off, SEEK_SET);
    assert_int_equal(fread(page, 1, sizeof(page), f), sizeof(page));
    fclose(f);
    char *p = memmem(page, sizeof(page), "{\"i\":777,", 9);
    char *q = memmem(p, (size_t)(page + sizeof(page) - p), "a client", 8);
    assert_non_null(q);
    q[2] = 'C';
    overwrite(off + (q - page), q, 3);
    long kept = open_damaged("checksum");
    assert_int_equal(kept, N - 1);
}

static void test_garbage_everywhere(void **state)
{
    (void)state;
    /* Garbage over every data page: whatever survives must be intact. */
    long size = file_size();
    for (long off = 2 * 4096; off < size; off += 3 * 4096)
        garbage(off + 100, 64);
    open_damaged(NULL);
}

static void test_not_a_store(void **state)
{
    (void)state;
    garbage(0, (size_t)file_size());
    assert_int_equal(open_damaged(NULL), 0);
}

static void test_leftover_salvage_dir(void **state)
{
    (void)state;
    /* A salvage killed half-way leaves <dir>.salvage-<pid>; the next one
     * clears it (same pid here) and goes on. */
    char tmp[256], p[300];
    snprintf(tmp, sizeof(tmp), "%s.salvage-%d", dir, (int)getpid());
    assert_int_equal(mkdir(tmp, 0700), 0);
    snprintf(p, sizeof(p), "%s/data.mdb", tmp);
    FILE *f = fopen(p, "w");
    fputs("junk", f);
    fclose(f);
    assert_int_equal(truncate(data, file_size() / 2), 0);
    open_damaged("truncated");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_truncated_to_zero, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_to_one_page, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_to_half, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_meta_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_leaf_page, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flipped_byte_in_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_everywhere, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_a_store, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leftover_salvage_dir, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
