/* Tests of the data link and the wire: a receiving link that keeps copies of the frames it got. */
#ifndef CMCP_TEST_LINK_RX_H
#define CMCP_TEST_LINK_RX_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ipc/dlink.h"

#define RX_MAX 64

struct rx {
    int frames;
    char *data[RX_MAX];
    size_t len[RX_MAX];
    int closed;
    char why[128];
};

static void rx_frame(struct dlink *l, const char *data, size_t len)
{
    struct rx *r = dlink_ud(l);
    if (r->frames < RX_MAX) {
        r->data[r->frames] = malloc(len ? len : 1);
        memcpy(r->data[r->frames], data, len);
        r->len[r->frames] = len;
    }
    r->frames++;
}

static void rx_closed(struct dlink *l, const char *why)
{
    struct rx *r = dlink_ud(l);
    if (!r)
        return;
    r->closed++;
    snprintf(r->why, sizeof(r->why), "%s", why);
}

static const struct dlink_ops rx_ops = {rx_frame, NULL, rx_closed};

static inline void rx_free(struct rx *r)
{
    for (int i = 0; i < r->frames && i < RX_MAX; i++)
        free(r->data[i]);
}

#endif
