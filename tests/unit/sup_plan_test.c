/* plan.c: restart intensity, restart decisions, restart plans per strategy, backoff. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#include "base/cmcp.h"
#include "supervisor/plan.h"

#define EXITED(code) W_EXITCODE(code, 0)
#define KILLED(sig) W_EXITCODE(0, sig)

/* ---- intensity ------------------------------------------------------------- */

static void intensity_allows_up_to_intensity(void **st)
{
    (void)st;
    struct sup_intensity in;
    sup_intensity_init(&in, 3, 5);
    assert_false(sup_intensity_add(&in, 1000));
    assert_false(sup_intensity_add(&in, 1001));
    assert_false(sup_intensity_add(&in, 1002));
    assert_true(sup_intensity_add(&in, 1003)); /* the 4th within 5 s: more than 3 */
    sup_intensity_free(&in);
}

static void intensity_zero_never_restarts(void **st)
{
    (void)st;
    struct sup_intensity in;
    sup_intensity_init(&in, 0, 5);
    assert_true(sup_intensity_add(&in, 0));
    assert_true(sup_intensity_add(&in, 1e9)); /* whenever */
    sup_intensity_free(&in);
}

static void intensity_window_slides(void **st)
{
    (void)st;
    struct sup_intensity in;
    sup_intensity_init(&in, 2, 1); /* 2 in 1 s */
    assert_false(sup_intensity_add(&in, 0));
    assert_false(sup_intensity_add(&in, 500));
    /* t=0 has left the window at 1000.001: two remain with this one... */
    assert_false(sup_intensity_add(&in, 1000.001 + 0));
    assert_int_equal(in.n, 2);
    /* ...but at 1400 three (500, 1000.001, 1400) are within 1 s */
    assert_true(sup_intensity_add(&in, 1400));
    sup_intensity_free(&in);

    /* slow, steady restarts never accumulate */
    sup_intensity_init(&in, 1, 1);
    for (int i = 0; i < 1000; i++)
        assert_false(sup_intensity_add(&in, 1000.5 * i));
    assert_int_equal(in.n, 1);
    sup_intensity_free(&in);
}

static void intensity_exact_boundary(void **st)
{
    (void)st;
    struct sup_intensity in;
    /* OTP keeps a restart whose age equals the period (R >= Now - Period). */
    sup_intensity_init(&in, 1, 5);
    assert_false(sup_intensity_add(&in, 10000));
    assert_true(sup_intensity_add(&in, 15000)); /* exactly 5 s later: still inside */
    sup_intensity_free(&in);

    sup_intensity_init(&in, 1, 5);
    assert_false(sup_intensity_add(&in, 10000));
    assert_false(sup_intensity_add(&in, 15000.001)); /* just outside */
    sup_intensity_free(&in);
}

static void intensity_above_64(void **st)
{
    (void)st;
    /* A fixed ring of 64 stamps made any intensity >= 64 unreachable. */
    struct sup_intensity in;
    sup_intensity_init(&in, 100, 60);
    for (int i = 0; i < 100; i++)
        assert_false(sup_intensity_add(&in, i));
    assert_true(sup_intensity_add(&in, 100));
    sup_intensity_free(&in);
}

static void intensity_memory_is_bounded(void **st)
{
    (void)st;
    struct sup_intensity in;
    sup_intensity_init(&in, 5, 3600);
    for (int i = 0; i < 10000; i++)
        sup_intensity_add(&in, i);
    assert_true(in.cap <= 6);
    assert_true(in.n <= 6);
    assert_true(sup_intensity_add(&in, 10000));
    sup_intensity_free(&in);

    /* a huge intensity only costs what is used */
    sup_intensity_init(&in, 1000000, 1);
    assert_false(sup_intensity_add(&in, 0));
    assert_true(in.cap <= 8);
    sup_intensity_free(&in);
}

/* ---- restart decisions --------------------------------------------------------- */

static void exit_normal(void **st)
{
    (void)st;
    assert_true(sup_exit_normal(EXITED(CMCP_EXIT_OK)));
    assert_true(sup_exit_normal(EXITED(CMCP_EXIT_SHUTDOWN))); /* OTP's shutdown */
    assert_false(sup_exit_normal(EXITED(1)));
    assert_false(sup_exit_normal(EXITED(CMCP_EXIT_USAGE)));
    assert_false(sup_exit_normal(EXITED(CMCP_EXIT_START)));
    assert_false(sup_exit_normal(EXITED(127)));
    assert_false(sup_exit_normal(KILLED(SIGKILL)));
    assert_false(sup_exit_normal(KILLED(SIGTERM))); /* a signal is never normal */
    assert_false(sup_exit_normal(KILLED(SIGSEGV)));
}

static void should_restart_matrix(void **st)
{
    (void)st;
    const int statuses[] = {EXITED(0), EXITED(4), EXITED(1), EXITED(3), EXITED(127),
                            KILLED(SIGKILL), KILLED(SIGTERM), KILLED(SIGABRT)};
    /* permanent: always; transient: unless exit 0 or 4; temporary: never */
    const bool transient[] = {false, false, true, true, true, true, true, true};
    for (size_t i = 0; i < CMCP_ARRAY_LEN(statuses); i++) {
        assert_true(sup_should_restart(SUP_PERMANENT, statuses[i]));
        assert_int_equal(sup_should_restart(SUP_TRANSIENT, statuses[i]), transient[i]);
        assert_false(sup_should_restart(SUP_TEMPORARY, statuses[i]));
    }
}

/* ---- restart plans -------------------------------------------------------------- */

static void kids_init(struct sup_plan_child *k, int n)
{
    for (int i = 0; i < n; i++)
        k[i] = (struct sup_plan_child){.running = true, .temporary = false};
}

static void assert_list(const int *got, int ngot, const int *want, int nwant)
{
    assert_int_equal(ngot, nwant);
    for (int i = 0; i < nwant; i++)
        assert_int_equal(got[i], want[i]);
}

#define LIST(...) ((const int[]){__VA_ARGS__}), (int)(sizeof((const int[]){__VA_ARGS__}) / sizeof(int))
#define NONE ((const int *)NULL), 0

static void plan_one_for_one(void **st)
{
    (void)st;
    struct sup_plan_child k[3];
    struct sup_plan p;
    kids_init(k, 3);
    k[1].running = false;
    sup_plan_restart(SUP_ONE_FOR_ONE, k, 3, 1, &p);
    assert_list(p.stop, p.nstop, NONE);
    assert_list(p.start, p.nstart, LIST(1));
    assert_list(p.drop, p.ndrop, NONE);
}

static void plan_simple_is_one_for_one(void **st)
{
    (void)st;
    struct sup_plan_child k[4];
    struct sup_plan p;
    kids_init(k, 4);
    k[2].running = false;
    sup_plan_restart(SUP_SIMPLE_ONE_FOR_ONE, k, 4, 2, &p);
    assert_list(p.stop, p.nstop, NONE);
    assert_list(p.start, p.nstart, LIST(2));
}

static void plan_one_for_all(void **st)
{
    (void)st;
    struct sup_plan_child k[4];
    struct sup_plan p;
    kids_init(k, 4);
    k[1].running = false;
    sup_plan_restart(SUP_ONE_FOR_ALL, k, 4, 1, &p);
    assert_list(p.stop, p.nstop, LIST(3, 2, 0)); /* reverse start order */
    assert_list(p.start, p.nstart, LIST(0, 1, 2, 3));
    assert_list(p.drop, p.ndrop, NONE);
}

static void plan_rest_for_one(void **st)
{
    (void)st;
    struct sup_plan_child k[5];
    struct sup_plan p;
    kids_init(k, 5);
    k[2].running = false;
    sup_plan_restart(SUP_REST_FOR_ONE, k, 5, 2, &p);
    assert_list(p.stop, p.nstop, LIST(4, 3));
    assert_list(p.start, p.nstart, LIST(2, 3, 4));

    /* the last child: alone */
    kids_init(k, 5);
    k[4].running = false;
    sup_plan_restart(SUP_REST_FOR_ONE, k, 5, 4, &p);
    assert_list(p.stop, p.nstop, NONE);
    assert_list(p.start, p.nstart, LIST(4));

    /* the first child: everyone */
    kids_init(k, 5);
    k[0].running = false;
    sup_plan_restart(SUP_REST_FOR_ONE, k, 5, 0, &p);
    assert_list(p.stop, p.nstop, LIST(4, 3, 2, 1));
    assert_list(p.start, p.nstart, LIST(0, 1, 2, 3, 4));
}

static void plan_temporary_siblings_are_dropped(void **st)
{
    (void)st;
    struct sup_plan_child k[4];
    struct sup_plan p;
    kids_init(k, 4);
    k[0].temporary = true;
    k[3].temporary = true;
    k[2].running = false;
    sup_plan_restart(SUP_ONE_FOR_ALL, k, 4, 2, &p);
    assert_list(p.stop, p.nstop, LIST(3, 1, 0));
    assert_list(p.drop, p.ndrop, LIST(3, 0));
    assert_list(p.start, p.nstart, LIST(1, 2));

    kids_init(k, 4);
    k[0].temporary = true; /* before the dead one: untouched by rest_for_one */
    k[3].temporary = true;
    k[1].running = false;
    sup_plan_restart(SUP_REST_FOR_ONE, k, 4, 1, &p);
    assert_list(p.stop, p.nstop, LIST(3, 2));
    assert_list(p.drop, p.ndrop, LIST(3));
    assert_list(p.start, p.nstart, LIST(1, 2));
}

static void plan_stopped_siblings_start_again(void **st)
{
    (void)st;
    /* OTP's one_for_all restarts every non-temporary child, also one that was down
     * (terminated by terminate_child, or a transient that ended normally). */
    struct sup_plan_child k[3];
    struct sup_plan p;
    kids_init(k, 3);
    k[0].running = false; /* down already */
    k[2].running = false; /* the dead one */
    sup_plan_restart(SUP_ONE_FOR_ALL, k, 3, 2, &p);
    assert_list(p.stop, p.nstop, LIST(1));
    assert_list(p.start, p.nstart, LIST(0, 1, 2));
}

/* ---- backoff ------------------------------------------------------------------------ */

static void backoff_delays(void **st)
{
    (void)st;
    assert_int_equal(sup_backoff_delay(0, 1000, 0), 0); /* off */
    assert_int_equal(sup_backoff_delay(0, 1000, 7), 0);
    const long want[] = {100, 200, 400, 800, 1000, 1000, 1000};
    for (int i = 0; i < (int)CMCP_ARRAY_LEN(want); i++)
        assert_int_equal(sup_backoff_delay(100, 1000, i), want[i]);
    assert_int_equal(sup_backoff_delay(100, 1000, 1 << 30), 1000); /* no overflow */
    assert_int_equal(sup_backoff_delay(3600000, 3600000, 1000), 3600000);
    assert_int_equal(sup_backoff_delay(100, 100, 5), 100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(intensity_allows_up_to_intensity),
        cmocka_unit_test(intensity_zero_never_restarts),
        cmocka_unit_test(intensity_window_slides),
        cmocka_unit_test(intensity_exact_boundary),
        cmocka_unit_test(intensity_above_64),
        cmocka_unit_test(intensity_memory_is_bounded),
        cmocka_unit_test(exit_normal),
        cmocka_unit_test(should_restart_matrix),
        cmocka_unit_test(plan_one_for_one),
        cmocka_unit_test(plan_simple_is_one_for_one),
        cmocka_unit_test(plan_one_for_all),
        cmocka_unit_test(plan_rest_for_one),
        cmocka_unit_test(plan_temporary_siblings_are_dropped),
        cmocka_unit_test(plan_stopped_siblings_start_again),
        cmocka_unit_test(backoff_delays),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
