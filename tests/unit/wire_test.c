/* The wire contract (ipc/wire.h): every operation's encodings round trip; malformed input is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "ipc/dlink.h"
#include "ipc/wire.h"
#include "link_rx.h"

static struct ev_loop *loop;

#define SID "1-abcdefghijklmnopqrstuvwxyz"

static void test_msg_is_a_compact_record(void **state)
{
    (void)state;
    struct wire_req q = {.op = WIRE_MSG, .tok = 42, .lid = 3, .tr = "http", .sid = SID,
                         .pv = "2025-11-25", .body = "{\"x\":1}", .blen = 7};
    size_t len, off;
    char *f = wire_req_frame(&q, &len, &off);
    assert_non_null(f);
    assert_int_equal(f[DLINK_HDR], 0x01); /* a record, not an envelope */
    assert_memory_equal(f + off, "{\"x\":1}", 7);
    struct wire_req r;
    json_t *keep;
    assert_int_equal(wire_req_parse(f + DLINK_HDR, len - DLINK_HDR, &r, &keep), 0);
    assert_null(keep);
    assert_int_equal(r.op, WIRE_MSG);
    assert_true(r.tok == 42);
    assert_int_equal(r.lid, 3);
    assert_string_equal(r.tr, "http");
    assert_string_equal(r.sid, SID);
    assert_null(r.pv); /* a session's message does not need it */
    assert_int_equal(r.blen, 7);
    assert_memory_equal(r.body, "{\"x\":1}", 7);
    /* every truncation is refused or parses within its bounds, never past them */
    for (size_t cut = 0; cut < 11 + 5 + 29; cut++) {
        assert_int_equal(wire_req_parse(f + DLINK_HDR, cut, &r, &keep), -1);
        json_decref(keep);
    }
    free(f);
    /* no session (initialize) */
    struct wire_req init = {.op = WIRE_MSG, .tok = 7, .tr = "tcp", .body = "", .blen = 0};
    f = wire_req_frame(&init, &len, &off);
    assert_non_null(f);
    assert_int_equal(wire_req_parse(f + DLINK_HDR, len - DLINK_HDR, &r, &keep), 0);
    assert_string_equal(r.sid, "");
    assert_int_equal(r.blen, 0);
    free(f);
}

/* Every other operation travels as an envelope and keeps every field it uses. */
static void test_envelopes_round_trip(void **state)
{
    (void)state;
    struct wire_req reqs[] = {
        {.op = WIRE_STREAM, .tok = 5, .lid = 1, .sid = SID, .resume = true, .last_stream = 3,
         .last_seq = 77, .follow_tok = 41},
        {.op = WIRE_STATELESS, .tok = 6, .http = true, .pv = "2026-07-28", .mm = "tools/call",
         .mn = "echo", .body = "{}", .blen = 2},
        {.op = WIRE_STATELESS_CANCEL, .tok = 8, .key = "1-6"},
        {.op = WIRE_TOOL_RESULT, .token = "t-1", .body = "{\"content\":[]}", .blen = 14},
        {.op = WIRE_SESSION_LIST},
        {.op = WIRE_OPEN, .tok = 9},
    };
    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
        const struct wire_req *q = &reqs[i];
        size_t len, off;
        char *f = wire_req_frame(q, &len, &off);
        assert_non_null(f);
        assert_int_equal(f[DLINK_HDR], '{');
        struct wire_req r;
        json_t *keep;
        assert_int_equal(wire_req_parse(f + DLINK_HDR, len - DLINK_HDR, &r, &keep), 0);
        assert_int_equal(r.op, q->op);
        assert_true(r.tok == q->tok);
        assert_int_equal(r.lid, q->lid);
        assert_string_equal(r.sid, q->sid);
        assert_int_equal(r.resume, q->resume);
        assert_int_equal(r.last_stream, q->last_stream);
        assert_true(r.last_seq == q->last_seq);
        assert_true(r.follow_tok == q->follow_tok);
        assert_int_equal(r.http, q->http);
        const char *strs[][2] = {{r.pv, q->pv}, {r.mm, q->mm}, {r.mn, q->mn}, {r.key, q->key},
                                 {r.token, q->token}};
        for (size_t k = 0; k < 5; k++) {
            if (strs[k][1])
                assert_string_equal(strs[k][0], strs[k][1]);
            else
                assert_null(strs[k][0]);
        }
        assert_int_equal(r.blen, q->blen);
        assert_memory_equal(r.body, q->body ? q->body : "", q->blen);
        json_decref(keep);
        free(f);
        /* the same request as an nng message (control), without the link's token */
        nng_msg *m = wire_req_msg(q);
        assert_non_null(m);
        assert_int_equal(wire_req_parse(nng_msg_body(m), nng_msg_len(m), &r, &keep), 0);
        assert_int_equal(r.op, q->op);
        assert_true(r.tok == 0);
        assert_int_equal(r.blen, q->blen);
        json_decref(keep);
        nng_msg_free(m);
    }
}

static void test_malformed_requests_refused(void **state)
{
    (void)state;
    /* an operation this build does not know is well formed, and answerable: its token is read */
    const char fly[] = "{\"op\":\"fly\",\"tok\":4}\n";
    struct wire_req q;
    json_t *k;
    assert_int_equal(wire_req_parse(fly, sizeof(fly) - 1, &q, &k), 0);
    assert_int_equal(q.op, WIRE_OP_NONE);
    assert_true(q.tok == 4);
    json_decref(k);
    const char *bad[] = {
        "",                                   /* nothing */
        "{\"op\":\"msg\"}",                   /* no newline: not an envelope */
        "[1]\n",                              /* a header that is not an object */
        "{\"op\":\"delete\",\"sid\":7}\n",    /* a field of the wrong type */
        "{\"op\":\"delete\",\"sid\":\"" SID SID SID "\"}\n", /* a session id too long */
        "\x01short",                          /* a record cut short */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct wire_req r;
        json_t *keep;
        assert_int_equal(wire_req_parse(bad[i], strlen(bad[i]), &r, &keep), -1);
        json_decref(keep);
    }
}

/* What a shard sends, in order on one link: plain replies as records, the rest as envelopes. */
static void test_replies_and_events_over_a_link(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    struct rx a = {0}, b = {0};
    struct dlink *la = dlink_new(sv[0], &rx_ops, &a);
    struct dlink *lb = dlink_new(sv[1], &rx_ops, &b);
    int call = wire_method_index("tools/call");
    struct wire_reply plain = {.tok = 10, .st = 200, .method = call, .sid = SID, .body = "{}",
                               .blen = 2};
    json_t *events = json_pack("[[i,i,s]]", 2, 5, "{\"m\":1}");
    struct wire_reply rich = {.tok = 11, .st = 200, .method = wire_method_index("batch"),
                              .stream = 2, .seq = 6, .done = true, .data = events};
    struct wire_reply none = {.tok = 12, .st = 202, .cancelled = true, .followed = true};
    struct wire_event ev = {.tok = 13, .sid = SID, .stream = 1, .seq = 4, .body = "{\"p\":1}",
                            .blen = 7};
    struct wire_event session_ev = {.sid = SID, .stream = 0, .seq = 9, .body = "{}", .blen = 2};
    struct wire_event close_ev = {.tok = 13, .sid = SID, .stream = 1, .seq = 4, .close = true,
                                  .body = "", .blen = 0};
    assert_int_equal(wire_reply_send(la, &plain), 0);
    assert_int_equal(wire_reply_send(la, &rich), 0);
    assert_int_equal(wire_reply_send(la, &none), 0);
    assert_int_equal(wire_event_send(la, &ev), 0);
    assert_int_equal(wire_event_send(la, &session_ev), 0);
    assert_int_equal(wire_event_send(la, &close_ev), 0);
    json_decref(events);
    for (int turn = 0; turn < 2000 && b.frames < 6; turn++)
        ev_run(loop, EVRUN_NOWAIT);
    assert_int_equal(b.frames, 6);
    assert_int_equal(b.data[0][0], 0x02); /* the plain reply is a record */
    struct wire_reply r;
    struct wire_event e;
    json_t *keep;
    assert_int_equal(wire_from_shard_parse(b.data[0], b.len[0], &r, &e, &keep), WIRE_REPLY);
    assert_true(r.tok == 10);
    assert_int_equal(r.st, 200);
    assert_int_equal(r.method, call);
    assert_string_equal(wire_methods[r.method], "tools/call");
    assert_string_equal(r.sid, SID);
    assert_memory_equal(r.body, "{}", 2);
    json_decref(keep);
    assert_int_equal(wire_from_shard_parse(b.data[1], b.len[1], &r, &e, &keep), WIRE_REPLY);
    assert_true(r.tok == 11);
    assert_int_equal(r.stream, 2);
    assert_string_equal(wire_methods[r.method], "batch");
    assert_true(r.seq == 6);
    assert_true(r.done);
    assert_false(r.followed);
    assert_int_equal(json_array_size(r.data), 1);
    assert_string_equal(r.sid, "");
    json_decref(keep);
    assert_int_equal(wire_from_shard_parse(b.data[2], b.len[2], &r, &e, &keep), WIRE_REPLY);
    assert_int_equal(r.st, 202);
    assert_int_equal(r.method, 0);
    assert_true(r.cancelled);
    assert_true(r.followed);
    assert_int_equal(r.blen, 0);
    json_decref(keep);
    assert_int_equal(wire_from_shard_parse(b.data[3], b.len[3], &r, &e, &keep), WIRE_EVENT);
    assert_true(e.tok == 13);
    assert_string_equal(e.sid, SID);
    assert_int_equal(e.stream, 1);
    assert_true(e.seq == 4);
    assert_false(e.close);
    assert_memory_equal(e.body, "{\"p\":1}", 7);
    json_decref(keep);
    assert_int_equal(wire_from_shard_parse(b.data[4], b.len[4], &r, &e, &keep), WIRE_EVENT);
    assert_true(e.tok == 0); /* the session's, not a request's */
    assert_true(e.seq == 9);
    json_decref(keep);
    assert_int_equal(wire_from_shard_parse(b.data[5], b.len[5], &r, &e, &keep), WIRE_EVENT);
    assert_true(e.close);
    json_decref(keep);
    /* where no event can come (control replies), an event is malformed */
    assert_int_equal(wire_from_shard_parse(b.data[3], b.len[3], &r, NULL, &keep), -1);
    json_decref(keep);
    /* a reply without a status is malformed */
    const char nost[] = "{\"tok\":1}\n";
    assert_int_equal(wire_from_shard_parse(nost, sizeof(nost) - 1, &r, &e, &keep), -1);
    json_decref(keep);
    rx_free(&a);
    rx_free(&b);
    dlink_close(la);
    dlink_close(lb);
}

/* A control reply (nng) keeps what the admin shell reads. */
/* Method labels are a fixed set; made-up names and odd messages fall in four buckets. */
static void test_method_labels_bounded(void **state)
{
    (void)state;
    const char *cases[][2] = {
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\"}", "tools/call"},
        {"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}",
         "notifications/initialized"},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"made/up\"}", "other"},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"batch\"}", "other"},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}", "response"},
        {"{\"jsonrpc\":\"2.0\"}", "invalid"},
        {"[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]", "batch"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *m = json_loads(cases[i][0], 0, NULL);
        assert_non_null(m);
        const char *label = wire_method_label(m);
        assert_string_equal(label, cases[i][1]);
        int k = wire_method_index(label);
        assert_true(k > 0 && k < wire_method_count);
        assert_ptr_equal(wire_methods[k], label); /* the table's own string */
        json_decref(m);
    }
    assert_int_equal(wire_method_index("made/up"), 0);
    assert_int_equal(wire_method_index(NULL), 0);
}

static void test_control_reply_message(void **state)
{
    (void)state;
    json_t *data = json_pack("{s:i,s:[]}", "shard", 1, "sessions");
    struct wire_reply q = {.st = 200, .data = data};
    nng_msg *m = wire_reply_msg(&q);
    json_decref(data);
    assert_non_null(m);
    struct wire_reply r;
    json_t *keep;
    assert_int_equal(wire_from_shard_parse(nng_msg_body(m), nng_msg_len(m), &r, NULL, &keep),
                     WIRE_REPLY);
    assert_int_equal(r.st, 200);
    assert_int_equal(json_integer_value(json_object_get(r.data, "shard")), 1);
    json_decref(keep);
    nng_msg_free(m);
}

int main(void)
{
    loop = ev_default_loop(0);
    dlink_init(loop);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_msg_is_a_compact_record),
        cmocka_unit_test(test_envelopes_round_trip),
        cmocka_unit_test(test_malformed_requests_refused),
        cmocka_unit_test(test_replies_and_events_over_a_link),
        cmocka_unit_test(test_method_labels_bounded),
        cmocka_unit_test(test_control_reply_message),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
