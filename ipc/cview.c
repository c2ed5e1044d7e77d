/* The cluster as workers see it (cview.h). */
#include "ipc/cview.h"

#include <nng/nng.h>
#include <nng/protocol/pubsub0/sub.h>
#include <nng/protocol/reqrep0/req.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "ipc/addr.h"
#include "ipc/ipc.h"
#include "ipc/route.h"

struct sub {
    nng_socket s;
    struct ipc_keep keep;
    ev_io w;
    bool open;
    int (*apply)(struct cview *v, const char *json, size_t len);
    const char *topic;
};

static struct {
    struct ev_loop *loop;
    struct cview v;
    struct sub map, fence;
    void (*changed)(void);
} CV = {.v = {.self = -1}};

int cview_apply_map(struct cview *v, const char *json, size_t len)
{
    json_t *o = json_loadb(json, len, 0, NULL);
    json_t *owners = json_object_get(o, "owners"), *epochs = json_object_get(o, "epochs");
    json_t *nodes = json_object_get(o, "nodes");
    json_int_t version = json_integer_value(json_object_get(o, "version"));
    json_int_t np = json_integer_value(json_object_get(o, "partitions"));
    const char *self = json_string_value(json_object_get(o, "self"));
    if (!json_is_array(owners) || !json_is_array(epochs) || !json_is_array(nodes) || !self ||
        np < 0 || np > CVIEW_MAX_PARTITIONS || json_array_size(owners) != (size_t)np ||
        json_array_size(epochs) != (size_t)np) {
        json_decref(o);
        return -1;
    }
    if (v->have_map && (uint64_t)version <= v->version) {
        json_decref(o);
        return 1; /* not newer */
    }
    v->have_map = true;
    v->version = (uint64_t)version;
    v->npart = (int)np;
    snprintf(v->self_id, sizeof(v->self_id), "%s", self);
    snprintf(v->hash, sizeof(v->hash), "%s", json_string_value(json_object_get(o, "hash")) ?: "");
    v->self = -1;
    size_t i;
    json_t *n;
    json_array_foreach(nodes, i, n)
    {
        if (strcmp(json_string_value(json_object_get(n, "id")) ?: "", self) == 0)
            v->self = (int)i;
    }
    json_t *rf = json_object_get(o, "replication_factor"), *reps = json_object_get(o, "replicas");
    json_t *gens = json_object_get(o, "isr_gens");
    v->rf = rf ? (int)json_integer_value(rf) : 1;
    for (int p = 0; p < v->npart; p++) {
        v->owner[p] = (int16_t)json_integer_value(json_array_get(owners, (size_t)p));
        v->epoch[p] = (uint64_t)json_integer_value(json_array_get(epochs, (size_t)p));
        json_t *r = json_array_get(reps, (size_t)p);
        v->nrep[p] = 0;
        for (size_t k = 0; k < json_array_size(r) && k < 4; k++)
            v->rep[p][v->nrep[p]++] = (int16_t)json_integer_value(json_array_get(r, k));
        v->isr_gen[p] = (uint32_t)json_integer_value(json_array_get(gens, (size_t)p));
    }
    json_decref(v->nodes);
    v->nodes = json_incref(nodes);
    json_decref(o);
    return 0;
}

int cview_apply_fence(struct cview *v, const char *json, size_t len)
{
    json_t *o = json_loadb(json, len, 0, NULL);
    json_t *until = json_object_get(o, "lease_until");
    if (!json_is_number(until)) {
        json_decref(o);
        return -1;
    }
    bool was = v->fenced, had = v->have_fence;
    v->have_fence = true;
    v->lease_until = json_number_value(until);
    v->fenced = json_is_true(json_object_get(o, "fenced"));
    snprintf(v->reason, sizeof(v->reason), "%s",
             json_string_value(json_object_get(o, "reason")) ?: "");
    json_decref(o);
    return had && was == v->fenced ? 1 : 0; /* 0: something a subscriber should hear */
}

static void sub_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct sub *s = w->data;
    bool changed = false;
    for (int n = 0; n < 64 && s->open; n++) {
        char *buf = NULL;
        size_t len = 0;
        if (nng_recv(s->s, &buf, &len, NNG_FLAG_ALLOC | NNG_FLAG_NONBLOCK) != 0)
            break;
        size_t tl = strlen(s->topic);
        if (len > tl && memcmp(buf, s->topic, tl) == 0 && s->apply(&CV.v, buf + tl, len - tl) == 0)
            changed = true;
        nng_free(buf, len);
    }
    if (changed && CV.changed)
        CV.changed();
}

static int sub_open(struct sub *s, const char *addr, const char *topic,
                    int (*apply)(struct cview *, const char *, size_t))
{
    int rv, fd;
    s->topic = topic;
    s->apply = apply;
    if ((rv = nng_sub0_open(&s->s)) != 0)
        return rv;
    nng_socket_set(s->s, NNG_OPT_SUB_SUBSCRIBE, topic, strlen(topic));
    ipc_socket_tune(s->s);
    if ((rv = nng_socket_get_int(s->s, NNG_OPT_RECVFD, &fd)) != 0 ||
        (rv = ipc_keep_dial(&s->keep, CV.loop, s->s, addr, NULL, NULL)) != 0) {
        nng_close(s->s);
        return rv;
    }
    s->open = true;
    ev_io_init(&s->w, sub_cb, fd, EV_READ);
    s->w.data = s;
    ev_io_start(CV.loop, &s->w);
    ev_unref(CV.loop); /* a subscription alone does not keep a loop running */
    return 0;
}

static void sub_close(struct sub *s)
{
    if (!s->open)
        return;
    s->open = false;
    ev_ref(CV.loop);
    ev_io_stop(CV.loop, &s->w);
    ipc_keep_stop(&s->keep);
    nng_close(s->s);
}

int cview_fetch_map(const char *run_dir, int timeout_ms)
{
    char addr[512];
    ipc_addr_cluster_ctl(addr, sizeof(addr), run_dir);
    nng_socket s;
    if (nng_req0_open(&s) != 0)
        return -1;
    nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, timeout_ms);
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, timeout_ms);
    static const char req[] = "{\"op\":\"map\"}";
    char *buf = NULL;
    size_t len = 0;
    int rc = -1;
    if (nng_dial(s, addr, NULL, 0) == 0 && nng_send(s, (void *)req, sizeof(req) - 1, 0) == 0 &&
        nng_recv(s, &buf, &len, NNG_FLAG_ALLOC) == 0) {
        json_t *r = json_loadb(buf, len, 0, NULL);
        char *m = json_dumps(json_object_get(r, "map"), JSON_COMPACT);
        if (m && cview_apply_map(&CV.v, m, strlen(m)) >= 0) {
            rc = 0;
            if (CV.changed)
                CV.changed();
        }
        free(m);
        json_decref(r);
        nng_free(buf, len);
    }
    nng_close(s);
    return rc;
}

int cview_subscribe(struct ev_loop *loop, const char *run_dir, void (*changed)(void))
{
    CV.loop = loop;
    CV.changed = changed;
    char a[512], b[512];
    ipc_addr_cluster_map(a, sizeof(a), run_dir);
    ipc_addr_cluster_fence(b, sizeof(b), run_dir);
    int rv = sub_open(&CV.map, a, "map ", cview_apply_map);
    if (rv == 0)
        rv = sub_open(&CV.fence, b, "fence ", cview_apply_fence);
    if (rv != 0) {
        log_warn("cview_subscribe_failed", "{s:s,s:s}", "error", nng_strerror(rv), "effect",
                 "this process does not learn the cluster map or its lease: it refuses writes");
        sub_close(&CV.map);
        return -1;
    }
    return 0;
}

void cview_unsubscribe(void)
{
    sub_close(&CV.map);
    sub_close(&CV.fence);
    json_decref(CV.v.nodes);
    CV.v.nodes = NULL;
}

const struct cview *cview_get(void)
{
    return &CV.v;
}

int cview_partition_of(const char *sid)
{
    return route_session_owner(sid);
}

static json_t *node_at(int i)
{
    return CV.v.nodes && i >= 0 ? json_array_get(CV.v.nodes, (size_t)i) : NULL;
}

const char *cview_node_id(int i)
{
    return json_string_value(json_object_get(node_at(i), "id"));
}

const char *cview_node_endpoint(int i)
{
    return json_string_value(json_object_get(node_at(i), "endpoint"));
}

bool cview_node_up(int i)
{
    const char *st = json_string_value(json_object_get(node_at(i), "state"));
    return st && strcmp(st, "up") == 0;
}

bool cview_owns(int p)
{
    return CV.v.have_map && p >= 0 && p < CV.v.npart && CV.v.self >= 0 &&
           CV.v.owner[p] == CV.v.self;
}

bool cview_may_write(double now_ms, char *why, size_t whylen)
{
    if (!CV.v.have_fence) {
        snprintf(why, whylen, "this node has not heard from its cluster processes yet");
        return false;
    }
    if (CV.v.fenced) {
        snprintf(why, whylen, "%s", CV.v.reason[0] ? CV.v.reason : "this node is fenced");
        return false;
    }
    if (now_ms > CV.v.lease_until) {
        snprintf(why, whylen, "this node's lease ran out %.0f ms ago: it has not renewed it with a "
                              "majority of the cluster's voters",
                 now_ms - CV.v.lease_until);
        return false;
    }
    return true;
}
