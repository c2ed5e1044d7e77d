/* The cluster map's state machine (map.h). */
#include "cluster/map.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *map_result_name(enum map_result r)
{
    switch (r) {
    case MAP_OK:
        return "ok";
    case MAP_NOOP:
        return "noop";
    case MAP_STALE:
        return "stale";
    case MAP_UNKNOWN:
        return "unknown node";
    case MAP_FULL:
        return "too many members";
    case MAP_BAD:
        break;
    }
    return "malformed";
}

const char *map_state_name(enum map_state s)
{
    switch (s) {
    case MAP_UP:
        return "up";
    case MAP_DRAINING:
        return "draining";
    case MAP_DOWN:
        return "down";
    case MAP_LEFT:
        return "left";
    }
    return "?";
}

static int state_parse(const char *s)
{
    for (int i = MAP_UP; s && i <= MAP_LEFT; i++)
        if (strcmp(map_state_name((enum map_state)i), s) == 0)
            return i;
    return -1;
}

void map_init(struct cluster_map *m)
{
    memset(m, 0, sizeof(*m));
    m->rf = 1;
    for (int p = 0; p < MAP_MAX_PARTITIONS; p++)
        m->parts[p].owner = -1;
}

bool map_is_replica(const struct cluster_map *m, int p, int i)
{
    for (int k = 0; k < m->parts[p].nrep; k++)
        if (m->parts[p].rep[k] == i)
            return true;
    return false;
}

/* Takes node index i out of every in-sync set: it went down, left or restarted with nothing
 * promised about its store. Whether anything changed. */
static bool drop_replica_everywhere(struct cluster_map *m, int i)
{
    bool changed = false;
    for (int p = 0; p < m->npart; p++) {
        struct map_partition *pp = &m->parts[p];
        for (int k = 0; k < pp->nrep; k++)
            if (pp->rep[k] == i) {
                memmove(&pp->rep[k], &pp->rep[k + 1], (size_t)(pp->nrep - k - 1) * sizeof(pp->rep[0]));
                pp->nrep--;
                pp->isr_gen++;
                changed = true;
                break;
            }
    }
    return changed;
}

int map_node_find(const struct cluster_map *m, const char *id)
{
    for (int i = 0; id && i < m->nnodes; i++)
        if (strcmp(m->nodes[i].id, id) == 0)
            return i;
    return -1;
}

/* A member that may own partitions now, or keeps them while it drains. */
static bool serving(const struct map_node *n)
{
    return n->state == MAP_UP || n->state == MAP_DRAINING;
}

int map_owned(const struct cluster_map *m, int i)
{
    int n = 0;
    for (int p = 0; p < m->npart; p++)
        n += m->parts[p].owner == i;
    return n;
}

int map_up(const struct cluster_map *m)
{
    int n = 0;
    for (int i = 0; i < m->nnodes; i++)
        n += m->nodes[i].state == MAP_UP;
    return n;
}

/* FNV-1a, then a 64-bit finaliser: a fixed, portable hash (placement must agree everywhere). */
static uint64_t mix(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static uint64_t finish(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

/* Rendezvous hashing: how much partition part wants member i (the same on every node). */
static uint64_t score(const struct cluster_map *m, int part, int i)
{
    uint32_t p = (uint32_t)part;
    uint64_t h = mix(0xcbf29ce484222325ULL, &p, sizeof(p));
    return finish(mix(h, m->nodes[i].id, strlen(m->nodes[i].id)));
}

int map_preferred(const struct cluster_map *m, int part)
{
    int best = -1;
    uint64_t best_score = 0;
    for (int i = 0; i < m->nnodes; i++) {
        if (m->nodes[i].state != MAP_UP)
            continue;
        uint64_t h = score(m, part, i);
        if (best < 0 || h > best_score) {
            best = i;
            best_score = h;
        }
    }
    return best;
}

/* The members that are up, most wanted by partition part first. Returns their count. */
static int ranked(const struct cluster_map *m, int part, int *out)
{
    int n = 0;
    uint64_t sc[MAP_MAX_NODES];
    for (int i = 0; i < m->nnodes; i++) {
        if (m->nodes[i].state != MAP_UP)
            continue;
        uint64_t h = score(m, part, i);
        int j = n++;
        for (; j > 0 && sc[j - 1] < h; j--) {
            sc[j] = sc[j - 1];
            out[j] = out[j - 1];
        }
        sc[j] = h;
        out[j] = i;
    }
    return n;
}

/* The replicas a new partition of group g (its shard) gets when o owns it: the members up
 * after o in the map's order, taken from the g-th on (map.h, map_plan_replicated). */
static int group_replicas(const struct cluster_map *m, int o, int g, int want, int *out)
{
    int others[MAP_MAX_NODES], n = 0, got = 0;
    for (int k = 1; k < m->nnodes; k++) {
        int j = (o + k) % m->nnodes;
        if (m->nodes[j].state == MAP_UP)
            others[n++] = j;
    }
    for (int k = 0; k < n && got < want; k++)
        out[got++] = others[(g + k) % n];
    return got;
}

int map_plan_replicated(const struct cluster_map *m, int min_up, int groups,
                        enum map_plan_mode mode, int moves, struct map_move *mv, int max)
{
    int n = 0, up = map_up(m);
    int order[MAP_MAX_NODES];
    for (int p = 0; p < m->npart && n < max; p++) {
        const struct map_partition *pp = &m->parts[p];
        int o = pp->owner;
        bool live = o >= 0 && serving(&m->nodes[o]);
        bool drain = live && mode != MAP_PLAN_FAILOVER && m->nodes[o].state == MAP_DRAINING;
        int nr = ranked(m, p, order);
        if (nr == 0)
            continue;
        struct map_move x = {.part = p, .epoch = pp->epoch, .owner = -1};
        if (pp->epoch == 0 && o < 0) {
            if (up < min_up)
                continue; /* a forming cluster: wait for its first members */
            x.owner = order[0];
            if (groups > 0)
                x.nrep = group_replicas(m, x.owner, p % groups, m->rf - 1, x.rep);
            else
                for (int k = 1; k < nr && x.nrep < m->rf - 1; k++)
                    x.rep[x.nrep++] = order[k];
        } else if (!live || drain) {
            if (drain && moves <= 0)
                continue;
            /* the in-sync replica the partition wants most; the others stay */
            for (int k = 0; k < nr && x.owner < 0; k++)
                if (map_is_replica(m, p, order[k]))
                    x.owner = order[k];
            if (x.owner < 0 && drain)
                continue; /* no copy to hand over to: it stays until one exists */
            if (x.owner < 0 && o >= 0 && m->nodes[o].state != MAP_LEFT)
                continue; /* its only up-to-date copy is on its owner, which is down (or cut
                           * off): it waits for it to come back with its store; `leave` of
                           * that member gives it up instead */
            if (x.owner < 0) {
                x.owner = order[0]; /* nothing left anywhere: a fresh start, counted as lost */
            } else {
                for (int k = 0; k < pp->nrep; k++)
                    if (pp->rep[k] != x.owner && m->nodes[pp->rep[k]].state == MAP_UP)
                        x.rep[x.nrep++] = pp->rep[k];
            }
            if (drain)
                moves--;
        } else if (mode == MAP_PLAN_REBALANCE && moves > 0 && order[0] != o &&
                   map_is_replica(m, p, order[0])) {
            /* hand over to the preferred member, which holds a copy; the old owner keeps one */
            x.owner = order[0];
            x.rep[x.nrep++] = o;
            for (int k = 0; k < pp->nrep && x.nrep < m->rf - 1; k++)
                if (pp->rep[k] != x.owner)
                    x.rep[x.nrep++] = pp->rep[k];
            moves--;
        } else {
            continue;
        }
        mv[n++] = x;
    }
    return n;
}

int map_plan(const struct cluster_map *m, int min_up, enum map_plan_mode mode, int moves,
             int *parts, int *owners, int max)
{
    int n = 0, up = map_up(m);
    for (int p = 0; p < m->npart && n < max; p++) {
        int o = m->parts[p].owner;
        if (o >= 0 && serving(&m->nodes[o]))
            continue;
        if (o < 0 && up < min_up)
            continue; /* a forming cluster: wait for its first members */
        int want = map_preferred(m, p);
        if (want >= 0) {
            parts[n] = p;
            owners[n++] = want;
        }
    }
    for (int p = 0; mode != MAP_PLAN_FAILOVER && p < m->npart && n < max && moves > 0; p++) {
        int o = m->parts[p].owner;
        int want = map_preferred(m, p);
        if (o < 0 || !serving(&m->nodes[o]) || want < 0 || want == o)
            continue;
        if (mode == MAP_PLAN_DRAIN && m->nodes[o].state != MAP_DRAINING)
            continue;
        parts[n] = p;
        owners[n++] = want;
        moves--;
    }
    return n;
}

/* ---- commands ---- */

static char *dump(json_t *o)
{
    char *t = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return t;
}

/* Incarnations are random 64-bit values: JSON integers stop at 2^63, so they travel as hex. */
static json_t *u64_json(uint64_t v)
{
    char b[17];
    snprintf(b, sizeof(b), "%016" PRIx64, v);
    return json_string(b);
}

static bool u64_parse(const json_t *j, uint64_t *out)
{
    const char *s = json_string_value(j);
    char *end;
    if (!s || strlen(s) != 16)
        return false;
    *out = strtoull(s, &end, 16);
    return *end == '\0';
}

char *map_cmd_init(int partitions, int rf)
{
    return dump(json_pack("{s:s,s:i,s:i}", "op", "init", "partitions", partitions, "rf", rf));
}

char *map_cmd_join(const char *node, uint64_t incarnation, const char *endpoint)
{
    return dump(json_pack("{s:s,s:s,s:o,s:s}", "op", "join", "node", node, "inc",
                          u64_json(incarnation), "ep", endpoint ? endpoint : ""));
}

char *map_cmd_beat(const char *node, uint64_t incarnation, uint64_t seq)
{
    return dump(json_pack("{s:s,s:s,s:o,s:I}", "op", "beat", "node", node, "inc",
                          u64_json(incarnation), "seq", (json_int_t)seq));
}

char *map_cmd_down(const char *node, uint64_t incarnation, uint64_t seen_beat)
{
    return dump(json_pack("{s:s,s:s,s:o,s:I}", "op", "down", "node", node, "inc",
                          u64_json(incarnation), "seen", (json_int_t)seen_beat));
}

char *map_cmd_leave(const char *node)
{
    return dump(json_pack("{s:s,s:s}", "op", "leave", "node", node));
}

char *map_cmd_drain(const char *node, bool drain)
{
    return dump(json_pack("{s:s,s:s,s:b}", "op", "drain", "node", node, "on", drain));
}

char *map_cmd_assign(const int *parts, int n, const char *owner)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_integer(parts[i]));
    return dump(json_pack("{s:s,s:o,s:s}", "op", "assign", "parts", a, "owner", owner));
}

/* ---- applying them ---- */

static enum map_result apply_init(struct cluster_map *m, const json_t *c)
{
    json_t *p = json_object_get(c, "partitions");
    if (!json_is_integer(p) || json_integer_value(p) < 1 ||
        json_integer_value(p) > MAP_MAX_PARTITIONS)
        return MAP_BAD;
    json_t *rf = json_object_get(c, "rf"); /* absent: a log written before replication */
    if (rf && (!json_is_integer(rf) || json_integer_value(rf) < 1 ||
               json_integer_value(rf) > MAP_MAX_REPLICAS + 1))
        return MAP_BAD;
    if (m->npart)
        return MAP_NOOP; /* fixed at bootstrap */
    m->npart = (int)json_integer_value(p);
    m->rf = rf ? (int)json_integer_value(rf) : 1;
    m->version++;
    return MAP_OK;
}

static enum map_result apply_join(struct cluster_map *m, const char *id, uint64_t inc,
                                  const json_t *c, uint64_t index)
{
    const char *ep = json_string_value(json_object_get(c, "ep"));
    if (!ep || strlen(ep) >= MAP_ENDPOINT_MAX || strlen(id) >= MAP_NODE_ID_MAX)
        return MAP_BAD;
    int i = map_node_find(m, id);
    if (i < 0) {
        if (m->nnodes == MAP_MAX_NODES)
            return MAP_FULL;
        i = m->nnodes++;
        struct map_node *n = &m->nodes[i];
        memset(n, 0, sizeof(*n));
        snprintf(n->id, sizeof(n->id), "%s", id);
        n->join_index = index;
        n->incarnation = inc;
        n->state = MAP_UP;
        snprintf(n->endpoint, sizeof(n->endpoint), "%s", ep);
        m->version++;
        return MAP_OK;
    }
    struct map_node *n = &m->nodes[i];
    if (n->state == MAP_LEFT && n->incarnation == inc)
        return MAP_STALE; /* a member that left comes back only as a new incarnation (restarted) */
    bool changed = false;
    if (n->incarnation != inc) {
        /* a restart: the new incarnation starts its own liveness, and its store is not counted
         * on as a copy of anything (it may be a new disk) */
        n->incarnation = inc;
        n->beat = 0;
        drop_replica_everywhere(m, i);
        changed = true;
        /* a drain belongs to the process that asked for it (a drain on stop, or its admin's
         * flag, which a restart clears too) */
        if (n->state == MAP_DRAINING)
            n->state = MAP_UP;
    }
    if (n->state == MAP_DOWN || n->state == MAP_LEFT) {
        n->state = MAP_UP; /* back after a heal or a restart: it owns again only what waited for
                            * it (no other copy was up), the rest is elsewhere */
        changed = true;
    }
    if (strcmp(n->endpoint, ep) != 0) {
        snprintf(n->endpoint, sizeof(n->endpoint), "%s", ep);
        changed = true;
    }
    if (!changed)
        return MAP_NOOP;
    m->version++;
    return MAP_OK;
}

static enum map_result apply_assign(struct cluster_map *m, const json_t *c)
{
    int o = map_node_find(m, json_string_value(json_object_get(c, "owner")));
    json_t *parts = json_object_get(c, "parts");
    if (!json_is_array(parts))
        return MAP_BAD;
    if (o < 0)
        return MAP_UNKNOWN;
    if (m->nodes[o].state != MAP_UP)
        return MAP_STALE; /* it went down, left or started draining since the plan */
    size_t k;
    json_t *v;
    json_array_foreach(parts, k, v)
    {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= m->npart)
            return MAP_BAD;
    }
    bool changed = false;
    json_array_foreach(parts, k, v)
    {
        struct map_partition *p = &m->parts[json_integer_value(v)];
        if (p->owner == o)
            continue;
        p->owner = o;
        p->epoch++;
        changed = true;
    }
    if (!changed)
        return MAP_NOOP;
    m->version++;
    return MAP_OK;
}

/* Node ids as indexes into out (at most max); -1 when one is not a member or not up. */
static int up_ids(const struct cluster_map *m, const json_t *a, int *out, int max)
{
    if (!json_is_array(a) || json_array_size(a) > (size_t)max)
        return -1;
    size_t k;
    json_t *v;
    json_array_foreach(a, k, v)
    {
        int i = map_node_find(m, json_string_value(v));
        if (i < 0 || m->nodes[i].state != MAP_UP)
            return -1;
        for (size_t j = 0; j < k; j++)
            if (out[j] == i)
                return -1;
        out[k] = i;
    }
    return (int)json_array_size(a);
}

/* Whether no copy of partition p is left on a member that is up. */
static bool no_copy_left(const struct cluster_map *m, int p)
{
    const struct map_partition *pp = &m->parts[p];
    if (pp->owner >= 0 && serving(&m->nodes[pp->owner]))
        return false;
    for (int k = 0; k < pp->nrep; k++)
        if (m->nodes[pp->rep[k]].state == MAP_UP)
            return false;
    return true;
}

static enum map_result apply_place(struct cluster_map *m, const json_t *c)
{
    json_t *moves = json_object_get(c, "moves");
    if (!json_is_array(moves) || m->rf < 2)
        return MAP_BAD;
    size_t k;
    json_t *v;
    json_array_foreach(moves, k, v)
    {
        json_t *p = json_object_get(v, "p"), *e = json_object_get(v, "epoch");
        if (!json_is_integer(p) || json_integer_value(p) < 0 || json_integer_value(p) >= m->npart ||
            !json_is_integer(e) || json_integer_value(e) < 0 ||
            !json_is_string(json_object_get(v, "owner")) ||
            !json_is_array(json_object_get(v, "rep")) ||
            json_array_size(json_object_get(v, "rep")) > (size_t)(m->rf - 1))
            return MAP_BAD;
    }
    int changed = 0, stale = 0;
    json_array_foreach(moves, k, v)
    {
        int p = (int)json_integer_value(json_object_get(v, "p"));
        struct map_partition *pp = &m->parts[p];
        int owner = map_node_find(m, json_string_value(json_object_get(v, "owner")));
        int rep[MAP_MAX_REPLICAS];
        int nrep = up_ids(m, json_object_get(v, "rep"), rep, MAP_MAX_REPLICAS);
        if ((uint64_t)json_integer_value(json_object_get(v, "epoch")) != pp->epoch || owner < 0 ||
            m->nodes[owner].state != MAP_UP || nrep < 0) {
            stale++;
            continue;
        }
        bool fresh = pp->epoch == 0, lost = !fresh && no_copy_left(m, p);
        bool ok = owner == pp->owner || fresh || lost || map_is_replica(m, p, owner);
        for (int j = 0; ok && j < nrep; j++) /* a replica is in sync only if it has everything */
            ok = rep[j] != owner && (fresh || lost || rep[j] == pp->owner ||
                                     map_is_replica(m, p, rep[j]));
        if (!ok) {
            stale++;
            continue;
        }
        bool same = owner == pp->owner && nrep == pp->nrep;
        for (int j = 0; same && j < nrep; j++)
            same = pp->rep[j] == rep[j];
        if (same)
            continue;
        if (owner != pp->owner) {
            pp->owner = owner;
            pp->epoch++;
            if (lost)
                m->lost++;
        }
        pp->nrep = nrep;
        for (int j = 0; j < nrep; j++)
            pp->rep[j] = (int16_t)rep[j];
        pp->isr_gen++;
        changed++;
    }
    if (!changed)
        return stale ? MAP_STALE : MAP_NOOP;
    m->version++;
    return MAP_OK;
}

static enum map_result apply_isr_drop(struct cluster_map *m, const json_t *c)
{
    json_t *p = json_object_get(c, "part"), *e = json_object_get(c, "epoch");
    if (!json_is_integer(p) || json_integer_value(p) < 0 || json_integer_value(p) >= m->npart ||
        !json_is_integer(e))
        return MAP_BAD;
    int i = map_node_find(m, json_string_value(json_object_get(c, "node")));
    if (i < 0)
        return MAP_UNKNOWN;
    struct map_partition *pp = &m->parts[json_integer_value(p)];
    if ((uint64_t)json_integer_value(e) != pp->epoch)
        return MAP_STALE; /* the partition moved since the owner asked */
    for (int k = 0; k < pp->nrep; k++)
        if (pp->rep[k] == i) {
            memmove(&pp->rep[k], &pp->rep[k + 1], (size_t)(pp->nrep - k - 1) * sizeof(pp->rep[0]));
            pp->nrep--;
            break;
        }
    /* a member or not: an isr_add of it asked before this drop must not apply after it */
    pp->isr_gen++;
    m->version++;
    return MAP_OK;
}

static enum map_result apply_isr_add(struct cluster_map *m, const json_t *c)
{
    json_t *p = json_object_get(c, "part"), *e = json_object_get(c, "epoch");
    if (m->rf < 2 || !json_is_integer(p) || json_integer_value(p) < 0 ||
        json_integer_value(p) >= m->npart || !json_is_integer(e))
        return MAP_BAD;
    uint64_t inc = 0;
    json_t *ji = json_object_get(c, "inc");
    if (ji && !u64_parse(ji, &inc))
        return MAP_BAD;
    int i = map_node_find(m, json_string_value(json_object_get(c, "node")));
    if (i < 0)
        return MAP_UNKNOWN;
    struct map_partition *pp = &m->parts[json_integer_value(p)];
    if ((uint64_t)json_integer_value(e) != pp->epoch || pp->owner < 0)
        return MAP_STALE; /* the partition moved since its owner caught the replica up */
    json_t *g = json_object_get(c, "gen");
    if (g && (!json_is_integer(g) || (uint32_t)json_integer_value(g) != pp->isr_gen))
        return MAP_STALE; /* the set changed since the owner asked (a later isr_drop) */
    if (m->nodes[i].state != MAP_UP || (inc && m->nodes[i].incarnation != inc))
        return MAP_STALE; /* down, leaving, draining or restarted since */
    if (pp->owner == i || map_is_replica(m, (int)json_integer_value(p), i))
        return MAP_NOOP;
    if (pp->nrep >= m->rf - 1 || pp->nrep >= MAP_MAX_REPLICAS)
        return MAP_FULL; /* another replica filled the set first */
    pp->rep[pp->nrep++] = (int16_t)i;
    pp->isr_gen++;
    m->version++;
    return MAP_OK;
}

char *map_cmd_place(const struct cluster_map *m, const struct map_move *mv, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++) {
        json_t *rep = json_array();
        for (int k = 0; k < mv[i].nrep; k++)
            json_array_append_new(rep, json_string(m->nodes[mv[i].rep[k]].id));
        json_array_append_new(a, json_pack("{s:i,s:I,s:s,s:o}", "p", mv[i].part, "epoch",
                                           (json_int_t)mv[i].epoch, "owner",
                                           m->nodes[mv[i].owner].id, "rep", rep));
    }
    return dump(json_pack("{s:s,s:o}", "op", "place", "moves", a));
}

char *map_cmd_isr_drop(int part, uint64_t epoch, const char *node)
{
    return dump(json_pack("{s:s,s:i,s:I,s:s}", "op", "isr_drop", "part", part, "epoch",
                          (json_int_t)epoch, "node", node));
}

char *map_cmd_isr_add(int part, uint64_t epoch, const char *node, uint64_t inc, int64_t gen)
{
    json_t *o = json_pack("{s:s,s:i,s:I,s:s}", "op", "isr_add", "part", part, "epoch",
                          (json_int_t)epoch, "node", node);
    if (o && inc)
        json_object_set_new(o, "inc", u64_json(inc));
    if (o && gen >= 0)
        json_object_set_new(o, "gen", json_integer(gen));
    return dump(o);
}

enum map_result map_apply(struct cluster_map *m, const char *cmd, size_t len, uint64_t index)
{
    if (index > m->applied)
        m->applied = index;
    json_t *c = json_loadb(cmd, len, 0, NULL);
    const char *op = json_string_value(json_object_get(c, "op"));
    const char *id = json_string_value(json_object_get(c, "node"));
    uint64_t inc = 0;
    bool has_inc = u64_parse(json_object_get(c, "inc"), &inc);
    enum map_result r = MAP_BAD;
    int i = map_node_find(m, id);
    struct map_node *n = i >= 0 ? &m->nodes[i] : NULL;
    if (!op) {
        r = MAP_BAD;
    } else if (strcmp(op, "init") == 0) {
        r = apply_init(m, c);
    } else if (strcmp(op, "assign") == 0) {
        r = apply_assign(m, c);
    } else if (strcmp(op, "place") == 0) {
        r = apply_place(m, c);
    } else if (strcmp(op, "isr_drop") == 0) {
        r = apply_isr_drop(m, c);
    } else if (strcmp(op, "isr_add") == 0) {
        r = apply_isr_add(m, c);
    } else if (!id) {
        r = MAP_BAD;
    } else if (strcmp(op, "join") == 0) {
        r = has_inc ? apply_join(m, id, inc, c, index) : MAP_BAD;
    } else if (!n) {
        r = MAP_UNKNOWN;
    } else if (strcmp(op, "beat") == 0) {
        json_t *seq = json_object_get(c, "seq");
        if (!has_inc || !json_is_integer(seq))
            r = MAP_BAD;
        else if (n->incarnation != inc || !serving(n))
            r = MAP_STALE; /* a downed or replaced incarnation cannot renew its lease */
        else if ((uint64_t)json_integer_value(seq) <= n->beat)
            r = MAP_NOOP;
        else {
            n->beat = (uint64_t)json_integer_value(seq);
            r = MAP_OK;
        }
    } else if (strcmp(op, "down") == 0) {
        json_t *seen = json_object_get(c, "seen");
        if (!has_inc || !json_is_integer(seen))
            r = MAP_BAD;
        else if (n->incarnation != inc || (uint64_t)json_integer_value(seen) != n->beat)
            r = MAP_STALE; /* it renewed (or restarted) after the proposer looked */
        else if (!serving(n))
            r = MAP_NOOP;
        else {
            /* its copies stop counting in the same change that ends its lease: an owner never
             * waits for it again, and never acknowledges without it before this applied */
            n->state = MAP_DOWN;
            drop_replica_everywhere(m, i);
            m->version++;
            r = MAP_OK;
        }
    } else if (strcmp(op, "leave") == 0) {
        if (n->state == MAP_LEFT)
            r = MAP_NOOP;
        else {
            n->state = MAP_LEFT;
            drop_replica_everywhere(m, i);
            m->version++;
            r = MAP_OK;
        }
    } else if (strcmp(op, "drain") == 0) {
        bool on = json_is_true(json_object_get(c, "on"));
        enum map_state want = on ? MAP_DRAINING : MAP_UP;
        if (!serving(n))
            r = MAP_STALE;
        else if (n->state == want)
            r = MAP_NOOP;
        else {
            n->state = want;
            m->version++;
            r = MAP_OK;
        }
    }
    json_decref(c);
    return r;
}

/* ---- the whole map ---- */

json_t *map_to_json(const struct cluster_map *m)
{
    json_t *nodes = json_array(), *owners = json_array(), *epochs = json_array(),
           *replicas = json_array(), *gens = json_array();
    for (int i = 0; i < m->nnodes; i++) {
        const struct map_node *n = &m->nodes[i];
        json_array_append_new(nodes, json_pack("{s:s,s:o,s:s,s:s,s:I,s:I,s:i}", "id", n->id,
                                               "incarnation", u64_json(n->incarnation),
                                               "endpoint", n->endpoint, "state",
                                               map_state_name(n->state), "join_index",
                                               (json_int_t)n->join_index, "beat",
                                               (json_int_t)n->beat, "owned", map_owned(m, i)));
    }
    for (int p = 0; p < m->npart; p++) {
        json_array_append_new(owners, json_integer(m->parts[p].owner));
        json_array_append_new(epochs, json_integer((json_int_t)m->parts[p].epoch));
        json_t *r = json_array();
        for (int k = 0; k < m->parts[p].nrep; k++)
            json_array_append_new(r, json_integer(m->parts[p].rep[k]));
        json_array_append_new(replicas, r);
        json_array_append_new(gens, json_integer(m->parts[p].isr_gen));
    }
    char hash[17];
    map_hash(m, hash);
    return json_pack("{s:I,s:I,s:i,s:i,s:I,s:s,s:o,s:o,s:o,s:o,s:o}", "version",
                     (json_int_t)m->version, "applied", (json_int_t)m->applied, "partitions",
                     m->npart, "replication_factor", m->rf, "lost", (json_int_t)m->lost, "hash",
                     hash, "nodes", nodes, "owners", owners, "epochs", epochs, "replicas",
                     replicas, "isr_gens", gens);
}

int map_from_json(struct cluster_map *m, const json_t *j)
{
    struct cluster_map *t = malloc(sizeof(*t));
    if (!t)
        return -1;
    map_init(t);
    json_t *nodes = json_object_get(j, "nodes"), *owners = json_object_get(j, "owners"),
           *epochs = json_object_get(j, "epochs");
    t->version = (uint64_t)json_integer_value(json_object_get(j, "version"));
    t->applied = (uint64_t)json_integer_value(json_object_get(j, "applied"));
    t->npart = (int)json_integer_value(json_object_get(j, "partitions"));
    json_t *rf = json_object_get(j, "replication_factor"), *replicas = json_object_get(j, "replicas");
    t->rf = rf ? (int)json_integer_value(rf) : 1;
    t->lost = (uint64_t)json_integer_value(json_object_get(j, "lost"));
    bool ok = json_is_array(nodes) && json_array_size(nodes) <= MAP_MAX_NODES &&
              json_is_array(owners) && json_is_array(epochs) && t->npart >= 0 &&
              t->npart <= MAP_MAX_PARTITIONS && json_array_size(owners) == (size_t)t->npart &&
              json_array_size(epochs) == (size_t)t->npart && t->rf >= 1 &&
              t->rf <= MAP_MAX_REPLICAS + 1 &&
              (!replicas || (json_is_array(replicas) && json_array_size(replicas) == (size_t)t->npart));
    size_t i;
    json_t *v;
    json_array_foreach(ok ? nodes : NULL, i, v)
    {
        struct map_node *n = &t->nodes[t->nnodes++];
        const char *id = json_string_value(json_object_get(v, "id"));
        const char *ep = json_string_value(json_object_get(v, "endpoint"));
        int st = state_parse(json_string_value(json_object_get(v, "state")));
        if (!id || !ep || st < 0 || strlen(id) >= sizeof(n->id) ||
            strlen(ep) >= sizeof(n->endpoint) ||
            !u64_parse(json_object_get(v, "incarnation"), &n->incarnation)) {
            ok = false;
            break;
        }
        snprintf(n->id, sizeof(n->id), "%s", id);
        snprintf(n->endpoint, sizeof(n->endpoint), "%s", ep);
        n->state = (enum map_state)st;
        n->join_index = (uint64_t)json_integer_value(json_object_get(v, "join_index"));
        n->beat = (uint64_t)json_integer_value(json_object_get(v, "beat"));
    }
    for (int p = 0; ok && p < t->npart; p++) {
        json_int_t o = json_integer_value(json_array_get(owners, (size_t)p));
        if (o < -1 || o >= t->nnodes) {
            ok = false;
            break;
        }
        t->parts[p].owner = (int)o;
        t->parts[p].epoch = (uint64_t)json_integer_value(json_array_get(epochs, (size_t)p));
        json_t *r = json_array_get(replicas, (size_t)p);
        if (replicas && (!json_is_array(r) || json_array_size(r) > MAP_MAX_REPLICAS)) {
            ok = false;
            break;
        }
        for (size_t k = 0; ok && r && k < json_array_size(r); k++) {
            json_int_t x = json_integer_value(json_array_get(r, k));
            if (x < 0 || x >= t->nnodes)
                ok = false;
            else
                t->parts[p].rep[t->parts[p].nrep++] = (int16_t)x;
        }
        /* absent in maps written before it existed: 0 */
        t->parts[p].isr_gen =
            (uint32_t)json_integer_value(json_array_get(json_object_get(j, "isr_gens"), (size_t)p));
    }
    if (ok)
        memcpy(m, t, sizeof(*m));
    free(t);
    return ok ? 0 : -1;
}

void map_hash(const struct cluster_map *m, char out[17])
{
    uint64_t h = 0xcbf29ce484222325ULL;
    h = mix(h, &m->version, sizeof(m->version));
    h = mix(h, &m->npart, sizeof(m->npart));
    for (int i = 0; i < m->nnodes; i++) {
        const struct map_node *n = &m->nodes[i];
        h = mix(h, n->id, strlen(n->id) + 1);
        h = mix(h, n->endpoint, strlen(n->endpoint) + 1);
        h = mix(h, &n->incarnation, sizeof(n->incarnation));
        h = mix(h, &n->state, sizeof(n->state));
        h = mix(h, &n->join_index, sizeof(n->join_index));
    }
    for (int p = 0; p < m->npart; p++) {
        h = mix(h, &m->parts[p].owner, sizeof(m->parts[p].owner));
        h = mix(h, &m->parts[p].epoch, sizeof(m->parts[p].epoch));
        for (int k = 0; k < m->parts[p].nrep; k++)
            h = mix(h, &m->parts[p].rep[k], sizeof(m->parts[p].rep[k]));
        if (m->parts[p].isr_gen) /* maps without in-sync changes hash as they always did */
            h = mix(h, &m->parts[p].isr_gen, sizeof(m->parts[p].isr_gen));
    }
    if (m->rf > 1) /* a map without replication hashes as it always did */
        h = mix(h, &m->rf, sizeof(m->rf));
    snprintf(out, 17, "%016" PRIx64, finish(h));
}
