/* spec.c: [tree.*] sections to child specs and supervisor flags, and their errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "supervisor/spec.h"

static bool known(const char *role)
{
    return strcmp(role, "testworker") == 0 || strcmp(role, "shard") == 0;
}

static struct sup_spec spec; /* large: not on the stack */

/* Loads text as "t.conf" (no embedded defaults) and builds supervisor name. */
static int build(struct cfg *c, const char *text, const char *name)
{
    memset(c, 0, sizeof(*c));
    if (cfg_load_string(c, text, "t.conf") != 0)
        return -2;
    return sup_spec_from_cfg(c, name, &spec, known);
}

static void expect_error(const char *text, const char *name, const char *where, const char *what)
{
    struct cfg c;
    int rc = build(&c, text, name);
    if (rc == 0)
        fail_msg("no error for:\n%s", text);
    if (where && !strstr(c.err, where))
        fail_msg("error '%s' does not name '%s'", c.err, where);
    if (what && !strstr(c.err, what))
        fail_msg("error '%s' does not say '%s'", c.err, what);
    if (rc == 0)
        sup_spec_free(&spec);
    cfg_free(&c);
}

static const char TREE[] = "[tree.root]\n"                   /* 1 */
                           "type = supervisor\n"             /* 2 */
                           "strategy = rest_for_one\n"       /* 3 */
                           "intensity = 3\n"                 /* 4 */
                           "period = 7\n"                    /* 5 */
                           "children = a, sub w\n"           /* 6 */
                           "[tree.a]\n"                      /* 7 */
                           "role = testworker\n"             /* 8 */
                           "args = --ready-delay 5 --marker '/tmp/a b'\n"
                           "restart = transient\n"
                           "shutdown = brutal_kill\n"
                           "start_timeout = 250\n"
                           "[tree.sub]\n"
                           "type = supervisor\n"
                           "[tree.w]\n"
                           "role = shard\n"
                           "count = 3\n"
                           "shutdown = infinity\n";

static void builds_a_tree(void **st)
{
    (void)st;
    struct cfg c;
    assert_int_equal(build(&c, TREE, "root"), 0);
    assert_int_equal(spec.strategy, SUP_REST_FOR_ONE);
    assert_int_equal(spec.intensity, 3);
    assert_int_equal(spec.period_s, 7);
    assert_int_equal(spec.auto_shutdown, SUP_AUTO_NEVER);
    assert_int_equal(spec.backoff_min_ms, 0);
    assert_int_equal(spec.nchildren, 5);
    const char *ids[] = {"a", "sub", "w-0", "w-1", "w-2"};
    for (int i = 0; i < 5; i++)
        assert_string_equal(spec.children[i].id, ids[i]);

    struct child_spec *a = &spec.children[0];
    assert_string_equal(a->role, "testworker");
    assert_int_equal(a->argc, 4);
    assert_string_equal(a->argv[3], "/tmp/a b");
    assert_int_equal(a->restart, SUP_TRANSIENT);
    assert_int_equal(a->shutdown_ms, SUP_SHUTDOWN_BRUTAL);
    assert_int_equal(a->start_timeout_ms, 250);
    assert_int_equal(a->index, -1);
    assert_int_equal(a->type, SUP_WORKER);

    /* OTP's defaults: supervisors shut down with infinity, workers with 5000 ms */
    struct child_spec *sub = &spec.children[1];
    assert_int_equal(sub->type, SUP_SUPERVISOR);
    assert_string_equal(sub->role, "supervisor");
    assert_int_equal(sub->shutdown_ms, SUP_SHUTDOWN_INFINITY);
    assert_int_equal(sub->start_timeout_ms, -1);
    assert_int_equal(sub->restart, SUP_PERMANENT);

    assert_int_equal(spec.children[3].index, 1);
    assert_string_equal(spec.children[3].section, "w");
    assert_int_equal(spec.children[3].shutdown_ms, SUP_SHUTDOWN_INFINITY);
    sup_spec_free(&spec);

    /* the nested supervisor: OTP's defaults, intensity 1 in 5 s, one_for_one */
    assert_int_equal(sup_spec_from_cfg(&c, "sub", &spec, known), 0);
    assert_int_equal(spec.strategy, SUP_ONE_FOR_ONE);
    assert_int_equal(spec.intensity, 1);
    assert_int_equal(spec.period_s, 5);
    assert_int_equal(spec.nchildren, 0);
    sup_spec_free(&spec);
    cfg_free(&c);
}

static void worker_defaults(void **st)
{
    (void)st;
    struct cfg c;
    assert_int_equal(build(&c, "[tree.root]\nchildren = testworker\n", "root"), 0);
    struct child_spec *w = &spec.children[0];
    assert_string_equal(w->role, "testworker"); /* a child named after a role */
    assert_int_equal(w->shutdown_ms, 5000);
    assert_int_equal(w->start_timeout_ms, 5000);
    assert_int_equal(w->restart, SUP_PERMANENT);
    assert_false(w->ready_by_exec);
    sup_spec_free(&spec);
    cfg_free(&c);
}

static void exec_children(void **st)
{
    (void)st;
    struct cfg c;
    assert_int_equal(build(&c,
                           "[tree.root]\nchildren = e, f\n"
                           "[tree.e]\nexec = /bin/sh -c \"sleep 1\"\n"
                           "[tree.f]\nexec = /usr/bin/x\nready = fd\n",
                           "root"),
                     0);
    assert_true(spec.children[0].is_exec);
    assert_true(spec.children[0].ready_by_exec);
    assert_int_equal(spec.children[0].argc, 3);
    assert_string_equal(spec.children[0].argv[2], "sleep 1");
    assert_false(spec.children[1].ready_by_exec);
    sup_spec_free(&spec);
    cfg_free(&c);
}

static void simple_one_for_one_template(void **st)
{
    (void)st;
    struct cfg c;
    assert_int_equal(build(&c,
                           "[tree.pool]\nstrategy = simple_one_for_one\nchildren = t\n"
                           "[tree.t]\nrole = testworker\nrestart = temporary\n",
                           "pool"),
                     0);
    assert_true(spec.has_template);
    assert_int_equal(spec.nchildren, 0);
    assert_string_equal(spec.tmpl.id, "t");
    assert_int_equal(spec.tmpl.restart, SUP_TEMPORARY);
    sup_spec_free(&spec);
    cfg_free(&c);
}

static void backoff_flags(void **st)
{
    (void)st;
    struct cfg c;
    assert_int_equal(build(&c, "[tree.root]\nbackoff_min = 50\n", "root"), 0);
    assert_int_equal(spec.backoff_min_ms, 50);
    assert_int_equal(spec.backoff_max_ms, 50 * 64);
    assert_int_equal(spec.backoff_stable_ms, 10000);
    sup_spec_free(&spec);
    cfg_free(&c);
}

static void errors_name_file_and_line(void **st)
{
    (void)st;
    expect_error("[tree.root]\nchildren = a\n", "root", "t.conf:2:", "no [tree.a] section");
    expect_error("[tree.other]\nrole = testworker\n", "root", NULL, "no [tree.root] section");
    expect_error("[tree.root]\nchildren = a\n[tree.a]\nrole = nope\n", "root", "t.conf:4:",
                 "unknown role 'nope'");
    expect_error("[tree.root]\nchildren = a\n[tree.a]\nrestart = transient\n", "root",
                 "t.conf:4:", "has no role");
    expect_error("[tree.root]\nchildren = a, a\n[tree.a]\nrole = shard\n", "root", "t.conf:2:",
                 "appears twice");
    expect_error("[tree.root]\nchildren = root\n", "root", "t.conf:2:", "lists itself");
    expect_error("[tree.root]\nstrategy = simple_one_for_one\nchildren = shard, testworker\n", "root",
                 "t.conf:3:", "exactly one child");
    expect_error("[tree.root]\nstrategy = simple_one_for_one\n", "root", "t.conf:2:",
                 "exactly one child");
    expect_error("[tree.root]\nbackoff_min = 100\nbackoff_max = 10\n", "root", "t.conf:3:",
                 "below backoff_min");
    expect_error("[tree.root]\nchildren = s\n[tree.s]\ntype = supervisor\nexec = /bin/true\n",
                 "root", "t.conf:5:", "drop 'exec'");
    expect_error("[tree.root]\nchildren = s\n[tree.s]\ntype = supervisor\ncount = 2\n", "root",
                 "t.conf:5:", "workers only");
    expect_error("[tree.root]\nchildren = e\n[tree.e]\nexec = /bin/x\nrole = shard\n", "root",
                 "t.conf:4:", "not both");
    expect_error("[tree.root]\nchildren = e\n[tree.e]\nexec = /bin/'x\n", "root", "t.conf:4:",
                 "quotes");
    expect_error("[tree.root]\ntype = worker\n", "root", "t.conf:2:", "must be supervisor");
}

static void otp_significant_rules(void **st)
{
    (void)st;
    /* significant + permanent: OTP's bad_combination */
    expect_error("[tree.root]\nauto_shutdown = any_significant\nchildren = a\n"
                 "[tree.a]\nrole = shard\nsignificant = true\n",
                 "root", "t.conf:6:", "transient or temporary");
    /* significant with auto_shutdown = never: rejected by OTP */
    expect_error("[tree.root]\nchildren = a\n[tree.a]\nrole = shard\nrestart = transient\n"
                 "significant = true\n",
                 "root", "t.conf:6:", "auto_shutdown");
    /* auto_shutdown on simple_one_for_one: rejected by OTP 27 */
    expect_error("[tree.root]\nstrategy = simple_one_for_one\nauto_shutdown = all_significant\n"
                 "children = a\n[tree.a]\nrole = shard\n",
                 "root", "t.conf:3:", "must be never");
    /* the accepted combination */
    struct cfg c;
    assert_int_equal(build(&c,
                           "[tree.root]\nauto_shutdown = all_significant\nchildren = a\n"
                           "[tree.a]\nrole = shard\nrestart = temporary\nsignificant = yes\n",
                           "root"),
                     0);
    assert_true(spec.children[0].significant);
    assert_int_equal(spec.auto_shutdown, SUP_AUTO_ALL);
    sup_spec_free(&spec);
    cfg_free(&c);
}

static void misplaced_keys(void **st)
{
    (void)st;
    expect_error("[tree.root]\nchildren = a\n[tree.a]\nrole = shard\nintensity = 3\n", "root",
                 "t.conf:5:", "supervisors only");
    expect_error("[tree.root]\nchildren = a\n[tree.a]\nrole = shard\nchildren = b\n", "root",
                 "t.conf:5:", "supervisors only");
    expect_error("[tree.root]\nargs = --x\n", "root", "t.conf:2:", "workers only");
    expect_error("[tree.root]\nchildren = s\n[tree.s]\ntype = supervisor\nrole = shard\n",
                 "root", "t.conf:5:", "always 'supervisor'");
}

static void parse_helpers(void **st)
{
    (void)st;
    long v;
    assert_int_equal(sup_shutdown_parse("brutal_kill", &v), 0);
    assert_int_equal(v, SUP_SHUTDOWN_BRUTAL);
    assert_int_equal(sup_shutdown_parse("infinity", &v), 0);
    assert_int_equal(v, SUP_SHUTDOWN_INFINITY);
    assert_int_equal(sup_shutdown_parse("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(sup_shutdown_parse("-1", &v), -1);
    assert_int_equal(sup_shutdown_parse("12ms", &v), -1);
    enum sup_restart r;
    assert_int_equal(sup_restart_parse("transient", &r), 0);
    assert_int_equal(r, SUP_TRANSIENT);
    assert_int_equal(sup_restart_parse("Permanent", &r), -1);
    assert_string_equal(sup_strategy_name(SUP_SIMPLE_ONE_FOR_ONE), "simple_one_for_one");
    assert_string_equal(sup_restart_name(SUP_TEMPORARY), "temporary");
}

static void spec_copy_is_deep(void **st)
{
    (void)st;
    struct child_spec a, b;
    memset(&a, 0, sizeof(a));
    a.argc = cfg_split_args("x y", a.argv, SUP_MAX_ARGS);
    sup_child_spec_copy(&b, &a);
    assert_ptr_not_equal(a.argv[0], b.argv[0]);
    sup_child_spec_free(&a);
    assert_string_equal(b.argv[1], "y");
    sup_child_spec_free(&b);
    assert_int_equal(b.argc, 0);
}

int main(void)
{
    cfg_schema_add(sup_cfg_keys);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(builds_a_tree),
        cmocka_unit_test(worker_defaults),
        cmocka_unit_test(exec_children),
        cmocka_unit_test(simple_one_for_one_template),
        cmocka_unit_test(backoff_flags),
        cmocka_unit_test(errors_name_file_and_line),
        cmocka_unit_test(otp_significant_rules),
        cmocka_unit_test(misplaced_keys),
        cmocka_unit_test(parse_helpers),
        cmocka_unit_test(spec_copy_is_deep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
