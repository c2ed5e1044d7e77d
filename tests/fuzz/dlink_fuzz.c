/*
 * libFuzzer target for the listener-shard data link (ipc/dlink.h): arbitrary
 * bytes arrive on a link as if from a peer, in pieces whose sizes the input
 * also decides; every frame delivered goes through each parser of the wire
 * contract (ipc/wire.h). A link must deliver whole frames or break with a
 * reason, and no parser may read past what arrived.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ipc/dlink.h"
#include "ipc/wire.h"

static struct ev_loop *loop;
static int closed;

static void on_frame(struct dlink *l, const char *data, size_t len)
{
    (void)l;
    struct wire_req q;
    struct wire_reply r;
    struct wire_event e;
    json_t *keep;
    if (wire_req_parse(data, len, &q, &keep) == 0 &&
        (q.body < data || q.body + q.blen != data + len))
        abort();
    json_decref(keep);
    int kind = wire_from_shard_parse(data, len, &r, &e, &keep);
    if (kind == WIRE_REPLY && (r.body < data || r.body + r.blen != data + len))
        abort();
    if (kind == WIRE_EVENT && (e.body < data || e.body + e.blen != data + len))
        abort();
    json_decref(keep);
}

static void on_closed(struct dlink *l, const char *why)
{
    (void)l;
    (void)why;
    closed = 1;
}

static const struct dlink_ops ops = {on_frame, NULL, on_closed};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!loop) {
        loop = ev_default_loop(0);
        dlink_init(loop);
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0)
        return 0;
    closed = 0;
    struct dlink *l = dlink_new(sv[1], &ops, NULL);
    /* the first byte picks the piece size, so frames straddle reads in many ways */
    size_t piece = size ? (size_t)data[0] % 64 + 1 : 1;
    size_t off = size ? 1 : 0;
    for (int turns = 0; off < size && turns < 100000; turns++) {
        size_t n = size - off < piece ? size - off : piece;
        ssize_t w = write(sv[0], data + off, n);
        if (w > 0)
            off += (size_t)w;
        ev_run(loop, EVRUN_NOWAIT);
        if (closed)
            break;
    }
    close(sv[0]);
    for (int turns = 0; !closed && turns < 1000; turns++)
        ev_run(loop, EVRUN_NOWAIT);
    if (!closed)
        dlink_close(l);
    return 0;
}
