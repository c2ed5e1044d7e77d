/* Where the shard joins the engine and the store: an MCP session goes through the store and back. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "workers/mcp/mcp_fakehost.h"
#include "workers/store/store.h"

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static struct store *open_store(const char *dir)
{
    struct store_opts o = {.dir = dir, .durability = STORE_FSYNC, .max_events = 8};
    char err[512], *report = NULL;
    struct store *s = NULL;
    if (store_open(&s, &o, &report, err, sizeof(err)) != 0)
        fail_msg("store_open: %s", err);
    if (report)
        fail_msg("unexpected report: %s", report);
    return s;
}

static void test_mcp_session_through_the_store(void **state)
{
    (void)state;
    char base[64], dir[128];
    snprintf(base, sizeof(base), "/tmp/shard_store.XXXXXX");
    assert_non_null(mkdtemp(base));
    snprintf(dir, sizeof(dir), "%s/shard-1", base);
    struct store *st = open_store(dir);
    struct fakehost fh;
    fakehost_init(&fh);
    char err[256];
    struct mcp_server_opts so = {.packs = "core"};
    mcp_server *srv = mcp_server_new(&so, &fakehost_ops, &fh, err, sizeof(err));
    assert_non_null(srv);
    mcp_session *ms = mcp_session_new(srv, "1-mcp");
    json_decref(fakehost_initialize(srv, ms, "2025-06-18", NULL));
    json_t *d = mcp_session_dump(ms);
    assert_int_equal(store_session_put(st, "1-mcp", d), 0);
    assert_int_equal(store_commit(st), 0);
    store_close(st);
    st = open_store(dir);
    json_t *g = store_session_get(st, "1-mcp");
    assert_true(json_equal(g, d));
    mcp_session *back = mcp_session_restore(srv, g, err, sizeof(err));
    assert_non_null(back);
    assert_string_equal(mcp_session_protocol(back), "2025-06-18");
    assert_int_equal(mcp_session_seq(back), mcp_session_seq(ms));
    mcp_session_free(back);
    mcp_session_free(ms);
    json_decref(g);
    json_decref(d);
    mcp_server_free(srv);
    fakehost_fini(&fh);
    store_close(st);
    nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mcp_session_through_the_store),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
