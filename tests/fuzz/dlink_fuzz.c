/*
 * libFuzzer target for the listener-shard data link (ipc/dlink.h): arbitrary
 * bytes arrive on a link as if from a peer, in pieces whose sizes the input
 * also decides; every frame delivered goes through each record parser. A
 * link must deliver whole frames or break with a reason, never read past
 * what arrived.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dlink.h"

static struct ev_loop *loop;
static int closed;

static void on_frame(struct dlink *l, const char *data, size_t len)
{
    (void)l;
    struct dlink_msg m;
    struct dlink_reply r;
    json_t *hdr;
    const char *body;
    size_t blen;
    if (dlink_msg_parse(data, len, &m) == 0 && m.blen > len)
        abort();
    if (dlink_reply_parse(data, len, &r) == 0 && r.blen > len)
        abort();
    if (dlink_envelope_split(data, len, &hdr, &body, &blen) == 0) {
        if (body + blen != data + len)
            abort();
        json_decref(hdr);
    }
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
