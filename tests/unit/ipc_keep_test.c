/*
 * ipc_keep (ipc/ipc.c): a dial that stays connected across a restarted peer,
 * and one whose nng dialer stopped trying is replaced by a fresh one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <nng/nng.h>
#include <nng/protocol/pubsub0/pub.h>
#include <nng/protocol/pubsub0/sub.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ipc/ipc.h"

struct fixture {
    char dir[64], addr[128];
    struct ev_loop *loop;
    nng_socket pub, sub;
    bool sub_open;
    struct ipc_keep keep;
    int ups;
};

static void on_up(void *arg)
{
    ((struct fixture *)arg)->ups++;
}

static void open_sub(struct fixture *f)
{
    assert_int_equal(nng_sub0_open(&f->sub), 0);
    assert_int_equal(nng_socket_set(f->sub, NNG_OPT_SUB_SUBSCRIBE, "", 0), 0);
    assert_int_equal(nng_listen(f->sub, f->addr, NULL, 0), 0);
    f->sub_open = true;
}

static void close_sub(struct fixture *f)
{
    nng_close(f->sub);
    f->sub_open = false;
}

static void tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    (void)w;
    ev_break(loop, EVBREAK_ONE);
}

/* Runs the loop (timers, the up notification) until ups reaches want, for at most limit_s. */
static bool run_until_up(struct fixture *f, int want, double limit_s)
{
    ev_timer t;
    ev_timer_init(&t, tick, 0.02, 0.02);
    ev_timer_start(f->loop, &t);
    for (int i = 0; i < (int)(limit_s / 0.02) && f->ups < want; i++)
        ev_run(f->loop, 0);
    ev_timer_stop(f->loop, &t);
    return f->ups >= want;
}

/* One message published now arrives at the subscriber (within a second). */
static bool delivers(struct fixture *f)
{
    nng_socket_set_ms(f->sub, NNG_OPT_RECVTIMEO, 50);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(nng_send(f->pub, "x", 1, 0), 0);
        char *buf = NULL;
        size_t len = 0;
        if (nng_recv(f->sub, &buf, &len, NNG_FLAG_ALLOC) == 0) {
            nng_free(buf, len);
            return true;
        }
    }
    return false;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/cmcp-keep-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->addr, sizeof(f->addr), "ipc://%s/s.sock", f->dir);
    f->loop = ev_loop_new(EVFLAG_AUTO);
    assert_int_equal(nng_pub0_open(&f->pub), 0);
    ipc_socket_tune(f->pub);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    ipc_keep_stop(&f->keep);
    nng_close(f->pub);
    if (f->sub_open)
        close_sub(f);
    ev_loop_destroy(f->loop);
    char path[160];
    snprintf(path, sizeof(path), "%s/s.sock", f->dir);
    unlink(path);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void test_dials_a_peer_that_comes_later_and_comes_back(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(ipc_keep_dial(&f->keep, f->loop, f->pub, f->addr, on_up, f), 0);
    usleep(50 * 1000);
    assert_int_equal(f->ups, 0);
    open_sub(f);
    assert_true(run_until_up(f, 1, 5.0));
    assert_true(delivers(f));
    /* The peer restarts: nng's own redial (or the keeper) finds the new one. */
    close_sub(f);
    open_sub(f);
    assert_true(run_until_up(f, 2, 5.0));
    assert_true(delivers(f));
}

static void test_a_dialer_that_gave_up_is_replaced(void **state)
{
    struct fixture *f = *state;
    open_sub(f);
    assert_int_equal(ipc_keep_dial(&f->keep, f->loop, f->pub, f->addr, on_up, f), 0);
    assert_true(run_until_up(f, 1, 5.0));
    /* What nng 1.5.2 was seen to do: a dialer left with no pipe and no further attempt.
     * Closing it behind the keeper's back leaves exactly that state. */
    nng_dialer_close(f->keep.dialer);
    close_sub(f);
    open_sub(f);
    assert_false(run_until_up(f, 2, 0.5)); /* nothing redials on its own */
    assert_true(run_until_up(f, 2, IPC_KEEP_REDIAL_S * 3 + 1));
    assert_int_equal(f->keep.redials, 1);
    assert_true(delivers(f));
}

static void test_stop_lets_the_loop_end(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(ipc_keep_dial(&f->keep, f->loop, f->pub, f->addr, on_up, f), 0);
    /* The keeper's watchers are unreferenced: with nothing else, ev_run returns at once. */
    ev_run(f->loop, 0);
    ipc_keep_stop(&f->keep);
    ipc_keep_stop(&f->keep); /* twice is harmless */
    ev_run(f->loop, 0);
}

static void test_bad_address_is_an_error(void **state)
{
    struct fixture *f = *state;
    assert_int_not_equal(ipc_keep_dial(&f->keep, f->loop, f->pub, "nope://x", on_up, f), 0);
    assert_false(f->keep.open);
    ev_run(f->loop, 0); /* nothing left running */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_dials_a_peer_that_comes_later_and_comes_back, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_dialer_that_gave_up_is_replaced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_lets_the_loop_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_address_is_an_error, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
