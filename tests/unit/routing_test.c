/* Session ids name their owner (ipc/route.h): generation and parsing, as listeners route by them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "ipc/route.h"

static void test_new_ids_name_their_shard(void **state)
{
    (void)state;
    char id[64];
    for (int shard = 0; shard < 300; shard += 7) {
        route_session_id_new(id, sizeof(id), shard);
        assert_int_equal(route_session_owner(id), shard);
        for (const char *p = id; *p; p++)
            assert_true(*p >= 0x21 && *p <= 0x7e);
    }
}

static void test_ids_are_random(void **state)
{
    (void)state;
    char a[64], b[64];
    route_session_id_new(a, sizeof(a), 1);
    route_session_id_new(b, sizeof(b), 1);
    assert_string_not_equal(a, b);
    assert_int_equal(strlen(a), 2 + 26);
}

static void test_malformed_ids_route_nowhere(void **state)
{
    (void)state;
    const char *bad[] = {"", "x-abcdefghijklmnopqrstuvwxyz", "1abcdefghijklmnopqrstuvwxyz",
                         "1-short", "-1-abcdefghijklmnopqrstuvwxyz", "99999-abcdefghijklmnopqrstuvwxyz",
                         "1-abcdefghijklmnopqrstuvwxyz0", NULL};
    for (int i = 0; bad[i]; i++)
        assert_int_equal(route_session_owner(bad[i]), -1);
    assert_int_equal(route_session_owner(NULL), -1);
    assert_int_equal(route_session_owner("12-abcdefghijklmnopqrstuvwxyz"), 12);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_ids_name_their_shard),
        cmocka_unit_test(test_ids_are_random),
        cmocka_unit_test(test_malformed_ids_route_nowhere),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
