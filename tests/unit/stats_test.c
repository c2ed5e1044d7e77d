/* A process's metrics registry and its snapshots (ipc/stats.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>
#include <unistd.h>

#include "ipc/stats.h"

static json_t *find(json_t *snap, const char *name, const char *labels)
{
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(snap, "metrics"), i, m)
    {
        if (strcmp(json_string_value(json_object_get(m, "name")), name) == 0 &&
            strcmp(json_string_value(json_object_get(m, "labels")), labels) == 0)
            return m;
    }
    return NULL;
}

static void test_handles_are_stable(void **state)
{
    (void)state;
    struct stats_metric *a = stats_counter("t_requests_total", "method=\"x\"");
    struct stats_metric *b = stats_counter("t_requests_total", "method=\"x\"");
    struct stats_metric *c = stats_counter("t_requests_total", "method=\"y\"");
    assert_ptr_equal(a, b);
    assert_ptr_not_equal(a, c);
    a->value += 2;
    assert_true(b->value == 2);
}

static void test_kind_mismatch_is_harmless(void **state)
{
    (void)state;
    struct stats_metric *g = stats_gauge("t_level", "");
    g->value = 5;
    struct stats_metric *wrong = stats_counter("t_level", "");
    assert_ptr_not_equal(wrong, g);
    wrong->value += 100; /* goes nowhere visible */
    json_t *snap = stats_snapshot();
    json_t *m = find(snap, "t_level", "");
    assert_non_null(m);
    assert_string_equal(json_string_value(json_object_get(m, "kind")), "gauge");
    assert_true(json_number_value(json_object_get(m, "value")) == 5);
    json_decref(snap);
}

static void test_histogram_buckets(void **state)
{
    (void)state;
    struct stats_metric *h = stats_histogram("t_duration_seconds", "");
    stats_observe(h, 0.00005);            /* first bucket */
    stats_observe(h, 0.0001);             /* on the bound: still the first (le) */
    stats_observe(h, 0.003);              /* <= 0.005 */
    stats_observe(h, 99.0);               /* +Inf */
    stats_observe(h, NAN);                /* ignored */
    assert_int_equal(h->count, 4);
    assert_int_equal(h->buckets[0], 2);
    assert_int_equal(h->buckets[4], 1);
    assert_int_equal(h->buckets[STATS_BUCKETS - 1], 1);
    assert_true(isinf(stats_bucket_bounds[STATS_BUCKETS - 1]));
    for (int i = 1; i < STATS_BUCKETS; i++)
        assert_true(stats_bucket_bounds[i] > stats_bucket_bounds[i - 1]);
    json_t *snap = stats_snapshot();
    json_t *m = find(snap, "t_duration_seconds", "");
    assert_int_equal(json_array_size(json_object_get(m, "buckets")), STATS_BUCKETS);
    assert_int_equal(json_integer_value(json_object_get(m, "count")), 4);
    assert_true(fabs(json_number_value(json_object_get(m, "sum")) - 99.00315) < 1e-9);
    json_decref(snap);
}

static void test_snapshot_names_the_process(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_default_loop(0);
    char dir[] = "/tmp/cmcp-stats-XXXXXX";
    assert_non_null(mkdtemp(dir));
    stats_init(loop, dir, "shard", "shard-3");
    stats_set_info(json_pack("{s:s}", "hello", "world"));
    json_t *snap = stats_snapshot();
    assert_string_equal(json_string_value(json_object_get(snap, "role")), "shard");
    assert_string_equal(json_string_value(json_object_get(snap, "id")), "shard-3");
    assert_int_equal(json_integer_value(json_object_get(snap, "pid")), getpid());
    assert_true(json_number_value(json_object_get(snap, "rss")) > 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(snap, "info"), "hello")),
                        "world");
    json_decref(snap);
    stats_publish_now(); /* nobody listens: dropped, never blocks */
    stats_shutdown();
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handles_are_stable),
        cmocka_unit_test(test_kind_mismatch_is_harmless),
        cmocka_unit_test(test_histogram_buckets),
        cmocka_unit_test(test_snapshot_names_the_process),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
