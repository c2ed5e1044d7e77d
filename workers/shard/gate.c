/*
 * The ack gate: a reply leaves only once what it acknowledges is durable.
 *
 * Replies leave in the order they were made. While changes wait for a
 * commit (durable.c), every reply waits behind them, also one that changed
 * nothing: a read must never show a change whose commit may still fail. When
 * the commit ends the held replies go; if it failed, those whose request
 * changed a session in it become errors that say the change was not applied.
 * This is the one place a condition for letting a reply go is added (the
 * cluster's replicas acknowledging, next).
 */
#include "workers/shard/shard_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

struct held {
    struct held *next;
    struct slot *sl;
    struct wire_reply r;
    json_t *body;
    struct sess *sess; /* the session its request changed, until that session ends */
    bool mutated;      /* its request changed the session */
};

static struct held *held_head, **held_tail = &held_head;

/* Sends a reply and frees what it owned. */
static void send_now(struct slot *sl, struct wire_reply *r, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    r->body = text ? text : "";
    r->blen = text ? strlen(text) : 0;
    links_reply(sl, r);
    free(text);
    json_decref(r->data);
    json_decref(body);
}

bool gate_holding(void)
{
    return held_head != NULL;
}

void gate_reply(struct slot *sl, struct wire_reply *r, json_t *body, struct sess *s)
{
    if (!held_head && !durable_pending()) {
        send_now(sl, r, body);
        return;
    }
    struct held *h = calloc(1, sizeof(*h));
    if (!h) {
        durable_flush(); /* the commit releases what waits before this one */
        send_now(sl, r, body);
        return;
    }
    h->sl = sl;
    h->r = *r;
    h->body = body;
    h->sess = s;
    h->mutated = s && s->dirty;
    *held_tail = h;
    held_tail = &h->next;
    durable_commit_soon();
}

void gate_committed(int rc, const char *why)
{
    struct held *h = held_head;
    held_head = NULL;
    held_tail = &held_head;
    if (rc != 0) {
        const char *msg = why;
        for (struct held *x = h; x; x = x->next) {
            if (!x->mutated || !x->sess || !x->sess->in_batch)
                continue;
            json_t *err = shard_rpc_error(json_object_get(x->body, "id"), -32603, msg);
            json_decref(x->body);
            x->body = err;
            x->r.st = 503;
            x->r.sid[0] = '\0'; /* a new session that could not be saved was not made */
        }
    }
    while (h) {
        struct held *next = h->next;
        send_now(h->sl, &h->r, h->body);
        free(h);
        h = next;
    }
}

void gate_forget(struct sess *s)
{
    for (struct held *h = held_head; h; h = h->next)
        if (h->sess == s)
            h->sess = NULL;
}
