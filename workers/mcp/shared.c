/*
 * Client info and client capabilities, shared between sessions.
 *
 * Every session keeps what its client sent in initialize (clientInfo,
 * capabilities) for its whole life, and nearly every client of a server
 * sends one of a few values (one per client program and version). A jansson
 * object costs ~200 bytes before its first member, so a private copy of each
 * was most of a session's memory. A session now holds a reference to one
 * immutable copy of each distinct value: found by a structural hash (member
 * order does not matter), confirmed with json_equal, freed when the last
 * session that uses it lets go.
 */
#include "workers/mcp/mcp_internal.h"

#include <stdlib.h>
#include <string.h>

struct mcpi_shared {
    UT_hash_handle hh; /* srv->shared, by hash */
    uint64_t hash;
    json_t *v;                /* never changed once shared */
    size_t users;             /* sessions holding it */
    struct mcpi_shared *next; /* another value with the same hash */
};

static uint64_t mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static uint64_t bytes_hash(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ULL;
    }
    return mix(h ^ n);
}

/* Equal values (json_equal) hash alike: object members are summed, so their order is ignored. */
static uint64_t value_hash(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        uint64_t h = 0x6f626a;
        const char *k;
        json_t *m;
        json_object_foreach((json_t *)v, k, m)
        {
            h += mix(bytes_hash(k, strlen(k)) ^ (value_hash(m) * 0x9e3779b97f4a7c15ULL));
        }
        return mix(h ^ json_object_size(v));
    }
    case JSON_ARRAY: {
        uint64_t h = 0x617272;
        size_t i;
        json_t *m;
        json_array_foreach(v, i, m)
        {
            h = mix(h ^ value_hash(m)) + i;
        }
        return mix(h);
    }
    case JSON_STRING:
        return bytes_hash(json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        return mix((uint64_t)json_integer_value(v) ^ 0x696e74);
    case JSON_REAL: {
        double d = json_real_value(v);
        uint64_t bits;
        memcpy(&bits, &d, sizeof(bits));
        return mix(bits ^ 0x7265616c);
    }
    case JSON_TRUE:
        return 1;
    case JSON_FALSE:
        return 2;
    default:
        return 3;
    }
}

#ifndef MCPI_SHARED_HASH /* tests/unit/mcp_shared_test.c forces collisions through it */
#define MCPI_SHARED_HASH(v) value_hash(v)
#endif

struct mcpi_shared *mcpi_shared_get(mcp_server *srv, const json_t *v)
{
    if (!v)
        return NULL;
    uint64_t h = MCPI_SHARED_HASH(v);
    struct mcpi_shared *first = NULL;
    HASH_FIND(hh, srv->shared, &h, sizeof(h), first);
    for (struct mcpi_shared *sh = first; sh; sh = sh->next) {
        if (json_equal(sh->v, (json_t *)v)) {
            sh->users++;
            return sh;
        }
    }
    struct mcpi_shared *sh = calloc(1, sizeof(*sh));
    if (!sh)
        return NULL;
    sh->v = json_deep_copy(v);
    if (!sh->v) {
        free(sh);
        return NULL;
    }
    sh->hash = h;
    sh->users = 1;
    if (first) { /* a collision: chain behind the one in the table */
        sh->next = first->next;
        first->next = sh;
    } else {
        HASH_ADD(hh, srv->shared, hash, sizeof(sh->hash), sh);
    }
    return sh;
}

struct mcpi_shared *mcpi_shared_ref(struct mcpi_shared *sh)
{
    if (sh)
        sh->users++;
    return sh;
}

void mcpi_shared_put(mcp_server *srv, struct mcpi_shared *sh)
{
    if (!sh || --sh->users > 0)
        return;
    struct mcpi_shared *first = NULL;
    HASH_FIND(hh, srv->shared, &sh->hash, sizeof(sh->hash), first);
    if (first == sh) {
        HASH_DEL(srv->shared, sh);
        if (sh->next) /* the next one with this hash takes its place in the table */
            HASH_ADD(hh, srv->shared, hash, sizeof(sh->next->hash), sh->next);
    } else {
        for (struct mcpi_shared *p = first; p; p = p->next) {
            if (p->next == sh) {
                p->next = sh->next;
                break;
            }
        }
    }
    json_decref(sh->v);
    free(sh);
}

const json_t *mcpi_shared_value(const struct mcpi_shared *sh)
{
    return sh ? sh->v : NULL;
}

size_t mcpi_shared_count(const mcp_server *srv)
{
    size_t n = 0;
    for (const struct mcpi_shared *sh = srv->shared; sh; sh = sh->hh.next)
        for (const struct mcpi_shared *c = sh; c; c = c->next)
            n++;
    return n;
}
