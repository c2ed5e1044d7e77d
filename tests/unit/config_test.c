/* base/config.c: layering defaults < file < environment, schema checks, errors with file:line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/config.h"
#include "node/schema.h"

static char path[64];

/* Writes text to a fresh temporary file; its name is in `path`. */
static void write_file(const char *text)
{
    snprintf(path, sizeof(path), "/tmp/cmcp-config-test-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static void clear_env(void)
{
    /* only the variables these tests set */
    const char *vars[] = {"CMCP_NODE_NAME",          "CMCP_NODE_LOG_LEVEL",
                          "CMCP_TREE_ROOT_INTENSITY", "CMCP_TREE_MY_SUP_STRATEGY",
                          "CMCP_TREE_W_ARGS",        "CMCP_TREE_GHOST_ROLE",
                          "CMCP_NODE_RUN_DIR",       "CMCP_TREE_ROOT_CHILDREN"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
}

static int setup(void **st)
{
    (void)st;
    clear_env();
    path[0] = '\0';
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    clear_env();
    if (path[0])
        unlink(path);
    return 0;
}

/* ---- layering -------------------------------------------------------------- */

static void defaults_alone(void **st)
{
    (void)st;
    struct cfg c;
    assert_int_equal(cfg_load(&c, NULL), 0);
    const struct cfg_entry *e = cfg_find(&c, "node", "name");
    assert_non_null(e);
    assert_string_equal(e->origin, "embedded defaults");
    assert_true(e->line > 0);
    assert_true(cfg_has_section(&c, "tree.root"));
    cfg_free(&c);
}

static void file_over_defaults_env_over_file(void **st)
{
    (void)st;
    write_file("[node]\n"
               "name = from-file\n"
               "log_level = debug\n"
               "[tree.my-sup]\n"
               "type = supervisor\n"
               "strategy = one_for_all\n"
               "[tree.w]\n"
               "args = --a 1\n");
    setenv("CMCP_NODE_NAME", "from-env", 1);
    setenv("CMCP_TREE_MY_SUP_STRATEGY", "rest_for_one", 1); /* '-' becomes '_' */
    struct cfg c;
    assert_int_equal(cfg_load(&c, path), 0);
    const struct cfg_entry *name = cfg_find(&c, "node", "name");
    assert_string_equal(name->value, "from-env");
    assert_string_equal(name->origin, "environment variable CMCP_NODE_NAME");
    assert_int_equal(name->line, 0);
    const struct cfg_entry *lvl = cfg_find(&c, "node", "log_level");
    assert_string_equal(lvl->value, "debug");
    assert_string_equal(lvl->origin, path);
    assert_int_equal(lvl->line, 3);
    assert_string_equal(cfg_get(&c, "tree.my-sup", "strategy", NULL), "rest_for_one");
    assert_string_equal(cfg_get(&c, "tree.w", "args", NULL), "--a 1");
    assert_string_equal(c.path, path);
    cfg_free(&c);
}

static void env_applies_to_sections_present_only(void **st)
{
    (void)st;
    /* A variable for a section that does not exist makes none, and is refused by name. */
    setenv("CMCP_TREE_GHOST_ROLE", "shard", 1);
    setenv("CMCP_TREE_ROOT_INTENSITY", "9", 1);
    struct cfg c;
    assert_int_equal(cfg_load(&c, NULL), -1);
    assert_non_null(strstr(c.err, "CMCP_TREE_GHOST_ROLE"));
    assert_non_null(strstr(c.err, "names no setting"));
    cfg_free(&c);
    unsetenv("CMCP_TREE_GHOST_ROLE");
    assert_int_equal(cfg_load(&c, NULL), 0);
    assert_false(cfg_has_section(&c, "tree.ghost"));
    assert_int_equal(cfg_get_long(&c, "tree.root", "intensity", -1), 9);
    cfg_free(&c);
    unsetenv("CMCP_TREE_ROOT_INTENSITY");
}

static void later_layer_wins(void **st)
{
    (void)st;
    struct cfg c;
    memset(&c, 0, sizeof(c));
    assert_int_equal(cfg_load_string(&c, "[node]\nname = one\nrun_dir = /r\n", "a"), 0);
    assert_int_equal(cfg_load_string(&c, "[node]\nname = two\n", "b"), 0);
    assert_string_equal(cfg_get(&c, "node", "name", NULL), "two");
    assert_string_equal(cfg_find(&c, "node", "name")->origin, "b");
    assert_string_equal(cfg_get(&c, "node", "run_dir", NULL), "/r");
    assert_string_equal(cfg_get(&c, "node", "data_dir", "dflt"), "dflt");
    cfg_free(&c);
}

/* ---- errors ------------------------------------------------------------------------ */

static void expect_string_error(const char *text, const char *want)
{
    struct cfg c;
    memset(&c, 0, sizeof(c));
    if (cfg_load_string(&c, text, "x.conf") == 0)
        fail_msg("no error for:\n%s", text);
    if (!strstr(c.err, want))
        fail_msg("error '%s' does not contain '%s'", c.err, want);
    cfg_free(&c);
}

static void errors_name_origin_and_line(void **st)
{
    (void)st;
    expect_string_error("[node]\nname = a\nnmae = b\n", "x.conf:3: [node] nmae: unknown key");
    expect_string_error("\n\n[nodes]\nname = a\n", "x.conf:3: unknown section [nodes]");
    /* an empty unknown section is an error too, at its header */
    expect_string_error("[node]\nname = a\n[nodez]\n", "x.conf:3: unknown section [nodez]");
    expect_string_error("name = a\n", "x.conf:1: key 'name' outside any [section]");
    expect_string_error("[node]\nname = a\nthis line is wrong\n", "x.conf:3: syntax error");
    expect_string_error("[node]\nname = a\n[tree.x\n", "x.conf:3: section header without its "
                                                       "closing ']'");
    expect_string_error("[node\nname = a\n", "x.conf:1: section header without its closing ']'");
    /* only the first error is kept */
    expect_string_error("[node]\nbad1 = 1\nbad2 = 2\n", "x.conf:2: [node] bad1");
}

static void schema_types(void **st)
{
    (void)st;
    expect_string_error("[tree.r]\nintensity = 1.5\n", "x.conf:2: [tree.r] intensity: '1.5' is "
                                                        "not a whole number");
    expect_string_error("[tree.r]\nintensity = -1\n", "out of range [0, 1000000]");
    expect_string_error("[tree.r]\nperiod = 0\n", "out of range [1, 86400]");
    expect_string_error("[tree.r]\nintensity = 99999999999999999999\n", "not a whole number");
    expect_string_error("[tree.r]\nsignificant = sure\n", "expected true or false");
    expect_string_error("[tree.r]\nstrategy = one_for_some\n", "'one_for_some' is not one of");
    expect_string_error("[tree.r]\nshutdown = later\n", "not a whole number or one of "
                                                        "brutal_kill|infinity");
    expect_string_error("[tree.r]\nstart_timeout = brutal_kill\n", "not a whole number");
    expect_string_error("[node]\nlog_level = loud\n", "not one of debug|info");
    expect_string_error("[listener]\nhttp_port = 70000\n", "out of range");
    expect_string_error("[tree.]\nrole = x\n", "unknown section [tree.]");

    struct cfg c;
    memset(&c, 0, sizeof(c));
    assert_int_equal(cfg_load_string(&c,
                                     "[tree.r]\nshutdown = infinity\nstart_timeout = infinity\n"
                                     "significant = no\nintensity = 0\nchildren =\n",
                                     "ok.conf"),
                     0);
    assert_false(cfg_get_bool(&c, "tree.r", "significant", true));
    assert_int_equal(cfg_get_long(&c, "tree.r", "intensity", 5), 0);
    assert_string_equal(cfg_get(&c, "tree.r", "children", NULL), "");
    cfg_free(&c);
}

static void env_errors(void **st)
{
    (void)st;
    struct cfg c;
    setenv("CMCP_TREE_ROOT_INTENSITY", "abc", 1);
    assert_int_equal(cfg_load(&c, NULL), -1);
    assert_non_null(strstr(c.err, "environment variable CMCP_TREE_ROOT_INTENSITY"));
    assert_non_null(strstr(c.err, "'abc' is not a whole number"));
    cfg_free(&c);
    unsetenv("CMCP_TREE_ROOT_INTENSITY");

    setenv("CMCP_NODE_LOG_LEVEL", "chatty", 1);
    assert_int_equal(cfg_load(&c, NULL), -1);
    assert_non_null(strstr(c.err, "CMCP_NODE_LOG_LEVEL"));
    cfg_free(&c);
}

static void file_errors(void **st)
{
    (void)st;
    struct cfg c;
    assert_int_equal(cfg_load(&c, "/nonexistent/cmcp.conf"), -1);
    assert_non_null(strstr(c.err, "cannot read config file /nonexistent/cmcp.conf"));
    cfg_free(&c);

    write_file("[node]\nname = ok\n[tree.root]\nintensity = many\n");
    assert_int_equal(cfg_load(&c, path), -1);
    char want[128];
    snprintf(want, sizeof(want), "%s:4: [tree.root] intensity:", path);
    if (!strstr(c.err, want))
        fail_msg("error '%s' does not name '%s'", c.err, want);
    cfg_free(&c);
}

static void errorf_formats(void **st)
{
    (void)st;
    struct cfg c;
    memset(&c, 0, sizeof(c));
    struct cfg_entry e = {"tree.a", "role", "x", "f.conf", 12};
    assert_int_equal(cfg_errorf(&c, &e, "bad %s", "thing"), -1);
    assert_string_equal(c.err, "f.conf:12: [tree.a] role: bad thing");
    struct cfg_entry env = {"tree.a", "role", "x", "environment variable CMCP_TREE_A_ROLE", 0};
    cfg_errorf(&c, &env, "nope");
    assert_string_equal(c.err, "environment variable CMCP_TREE_A_ROLE: [tree.a] role: nope");
    cfg_errorf(&c, NULL, "plain %d", 3);
    assert_string_equal(c.err, "plain 3");
}

/* ---- lists ----------------------------------------------------------------------------- */

static void list_splitting(void **st)
{
    (void)st;
    char items[8][64];
    assert_int_equal(cfg_split_list("a, b,c  d,,, e", items, 8), 5);
    const char *want[] = {"a", "b", "c", "d", "e"};
    for (int i = 0; i < 5; i++)
        assert_string_equal(items[i], want[i]);
    assert_int_equal(cfg_split_list("", items, 8), 0);
    assert_int_equal(cfg_split_list(" , ,\t", items, 8), 0);
    assert_int_equal(cfg_split_list("a b c d", items, 2), 2); /* at most max */
    char longname[100];
    memset(longname, 'x', 99);
    longname[99] = '\0';
    assert_int_equal(cfg_split_list(longname, items, 8), 1);
    assert_int_equal(strlen(items[0]), 63); /* truncated, not overflowed */
}

static void bool_and_long_getters(void **st)
{
    (void)st;
    struct cfg c;
    memset(&c, 0, sizeof(c));
    assert_int_equal(cfg_load_string(&c, "[tree.a]\nsignificant = yes\ncount = 12\n", "t"), 0);
    assert_true(cfg_get_bool(&c, "tree.a", "significant", false));
    assert_true(cfg_get_bool(&c, "tree.b", "significant", true)); /* default */
    assert_int_equal(cfg_get_long(&c, "tree.a", "count", 1), 12);
    assert_int_equal(cfg_get_long(&c, "tree.a", "intensity", 77), 77);
    assert_null(cfg_find(&c, "tree.a", "role"));
    cfg_free(&c);
}

static void split_args(void **st)
{
    (void)st;
    char *argv[8];
    assert_int_equal(cfg_split_args("  a  'b c'\t\"d 'e'\" f''g  ", argv, 7), 4);
    assert_string_equal(argv[0], "a");
    assert_string_equal(argv[1], "b c");
    assert_string_equal(argv[2], "d 'e'");
    assert_string_equal(argv[3], "fg");
    assert_null(argv[4]);
    for (int i = 0; i < 4; i++)
        free(argv[i]);
    assert_int_equal(cfg_split_args("", argv, 7), 0);
    assert_int_equal(cfg_split_args("a 'b", argv, 7), -1);
    assert_int_equal(cfg_split_args("1 2 3 4", argv, 3), -1); /* too many */
}

/* The schema is what the modules add: a section no module declared is unknown. */
static void modules_own_their_keys(void **st)
{
    (void)st;
    static const struct cfg_key demo_keys[] = {
        {"demo", "level", CFG_INT, NULL, 0, 5},
        {"demo.", "name", CFG_STR, NULL, 0, 0},
        {NULL, NULL, 0, NULL, 0, 0},
    };
    cfg_schema_clear();
    cfg_schema_add(demo_keys);
    cfg_schema_add(demo_keys); /* twice is once */
    struct cfg c;
    memset(&c, 0, sizeof(c));
    assert_int_equal(cfg_load_string(&c, "[demo]\nlevel = 3\n[demo.x]\nname = y\n", "t"), 0);
    assert_int_equal(cfg_get_long(&c, "demo", "level", 0), 3);
    assert_int_equal(cfg_load_string(&c, "[demo]\nlevel = 9\n", "t"), -1);
    assert_non_null(strstr(c.err, "out of range"));
    assert_int_equal(cfg_load_string(&c, "[node]\nname = n\n", "t"), -1);
    assert_non_null(strstr(c.err, "unknown section [node] (known: demo, demo.NAME)"));
    cfg_free(&c);
    cfg_schema_clear();
    node_schema_add();
}

int main(void)
{
    node_schema_add();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(defaults_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(file_over_defaults_env_over_file, setup, teardown),
        cmocka_unit_test_setup_teardown(env_applies_to_sections_present_only, setup, teardown),
        cmocka_unit_test_setup_teardown(later_layer_wins, setup, teardown),
        cmocka_unit_test_setup_teardown(errors_name_origin_and_line, setup, teardown),
        cmocka_unit_test_setup_teardown(schema_types, setup, teardown),
        cmocka_unit_test_setup_teardown(env_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(file_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(errorf_formats, setup, teardown),
        cmocka_unit_test_setup_teardown(list_splitting, setup, teardown),
        cmocka_unit_test_setup_teardown(bool_and_long_getters, setup, teardown),
        cmocka_unit_test(split_args),
        cmocka_unit_test(modules_own_their_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
