/*
 * The ack gate: a reply leaves only once what it acknowledges is durable.
 *
 * Replies leave in the order they were made. While changes wait for a
 * commit (durable.c), every reply waits behind them, also one that changed
 * nothing: a read must never show a change whose commit may still fail. When
 * the commit ends the held replies go; if it failed, those whose request
 * changed a session in it become errors that say the change was not applied.
 * This is the one place a condition for letting a reply go is added: in a
 * cluster with replicas, a commit's replies (a batch, gate_seal) also wait
 * until its changes reached the partitions' in-sync replicas (replica.c
 * says when with gate_ready), and batches leave in the order they were
 * sealed.
 */
#include "workers/shard/shard_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/jsonw.h"
#include "base/log.h"

struct held {
    struct held *next;
    struct slot *sl;
    struct wire_reply r;
    json_t *body;
    struct sess *sess; /* the session its request changed, until that session ends */
    bool mutated;      /* its request changed the session */
};

/* The replies of one commit, in the order commits were made; they leave in that order once
 * their commit is durable (and, in a cluster, replicated). */
struct gbatch {
    struct gbatch *next;
    struct held *held;
    bool ready;
};

static struct held *held_head, **held_tail = &held_head;
static struct gbatch *batch_head, **batch_tail = &batch_head;

/* Sends a reply and frees what it owned. */
static void send_now(struct slot *sl, struct wire_reply *r, json_t *body)
{
    size_t n = 0;
    char *text = body ? jsonw_dumps(body, &n) : NULL;
    r->body = text ? text : "";
    r->blen = n;
    links_reply(sl, r);
    free(text);
    json_decref(r->data);
    json_decref(body);
}

bool gate_holding(void)
{
    return held_head != NULL || batch_head != NULL;
}

void gate_reply(struct slot *sl, struct wire_reply *r, json_t *body, struct sess *s)
{
    if (!held_head && !batch_head && !durable_pending()) {
        send_now(sl, r, body);
        return;
    }
    struct held *h = calloc(1, sizeof(*h));
    if (!h) {
        durable_flush(); /* the commit releases what waits before this one */
        if (!batch_head) {
            send_now(sl, r, body);
            return;
        }
        /* behind a replication in flight: drop the answer rather than run ahead of it */
        log_error("reply_dropped", "{s:s}", "error", "out of memory while replies wait");
        json_decref(r->data);
        json_decref(body);
        struct wire_reply e = {.st = 503, .cancelled = true};
        links_reply(sl, &e);
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

struct gbatch *gate_seal(void)
{
    struct gbatch *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL; /* the caller then releases at once (gate_fail/gate_ready with NULL) */
    b->held = held_head;
    held_head = NULL;
    held_tail = &held_head;
    *batch_tail = b;
    batch_tail = &b->next;
    return b;
}

/* The held replies of b (or, without a batch, all held now) whose request changed a session
 * become errors that say why: only those of sessions in the failed commit unless `all`. */
static void fail_list(struct held *h, int status, const char *why, bool all)
{
    for (struct held *x = h; x; x = x->next) {
        if (!x->mutated || (!all && (!x->sess || !x->sess->in_batch)))
            continue;
        json_t *err = shard_rpc_error(json_object_get(x->body, "id"), -32603, why);
        json_decref(x->body);
        x->body = err;
        x->r.st = status;
        x->r.sid[0] = '\0'; /* a new session that could not be saved was not made */
    }
}

void gate_fail(struct gbatch *b, const char *why)
{
    fail_list(b ? b->held : held_head, 503, why, false);
}

void gate_unknown(struct gbatch *b, const char *why)
{
    fail_list(b ? b->held : held_head, 503, why, true);
}

static void release(struct held *h)
{
    while (h) {
        struct held *next = h->next;
        send_now(h->sl, &h->r, h->body);
        free(h);
        h = next;
    }
}

void gate_ready(struct gbatch *b)
{
    if (!b) {
        /* no batch could be made (out of memory): what is held goes once nothing is ahead */
        if (!batch_head) {
            struct held *h = held_head;
            held_head = NULL;
            held_tail = &held_head;
            release(h);
        }
        return;
    }
    b->ready = true;
    while (batch_head && batch_head->ready) {
        struct gbatch *x = batch_head;
        batch_head = x->next;
        if (!batch_head)
            batch_tail = &batch_head;
        release(x->held);
        free(x);
    }
}

void gate_committed(int rc, const char *why)
{
    if (!batch_head) {
        /* nothing waits ahead (always so without replicas): what is held goes now */
        struct held *h = held_head;
        held_head = NULL;
        held_tail = &held_head;
        if (rc != 0)
            fail_list(h, 503, why, false);
        release(h);
        return;
    }
    struct gbatch *b = gate_seal();
    if (rc != 0)
        gate_fail(b, why);
    gate_ready(b);
}

void gate_forget(struct sess *s)
{
    for (struct held *h = held_head; h; h = h->next)
        if (h->sess == s)
            h->sess = NULL;
    for (struct gbatch *b = batch_head; b; b = b->next)
        for (struct held *h = b->held; h; h = h->next)
            if (h->sess == s)
                h->sess = NULL;
}
