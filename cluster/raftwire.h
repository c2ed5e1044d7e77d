/*
 * Raft's messages and snapshots as bytes (cluster/raftio.h sends and stores
 * them): little-endian, a message versioned by its first byte, so that a
 * peer of another encoding is refused, not misread. Every reader checks
 * lengths before it reads; a malformed message decodes to an error and
 * nothing allocated.
 */
#ifndef CMCP_CLUSTER_RAFTWIRE_H
#define CMCP_CLUSTER_RAFTWIRE_H

#include <raft.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RAFTWIRE_VERSION 1

/* A growing output buffer (malloc'd p; failed once memory ran out). */
struct rw_wbuf {
    unsigned char *p;
    size_t len, cap;
    bool failed;
};

/* Input being read; bad once a read ran past the end (every later read then fails too). */
struct rw_rbuf {
    const unsigned char *p, *end;
    bool bad;
};

void rw_put(struct rw_wbuf *b, const void *data, size_t n);
void rw_put_u64(struct rw_wbuf *b, uint64_t v);
void rw_put_u32(struct rw_wbuf *b, uint32_t v);
void rw_put_str(struct rw_wbuf *b, const char *s);
uint64_t rw_get_u64(struct rw_rbuf *r);
uint32_t rw_get_u32(struct rw_rbuf *r);
const unsigned char *rw_get_bytes(struct rw_rbuf *r, size_t n);
/* A string as a NUL-terminated raft_malloc'd copy (at most 4095 bytes), or NULL. */
char *rw_get_str(struct rw_rbuf *r);
void rw_put_conf(struct rw_wbuf *b, const struct raft_configuration *c);
/* 0, or -1 with c empty. */
int rw_get_conf(struct rw_rbuf *r, struct raft_configuration *c);

/* Appends m's encoding to b. 0, or -1 (an unknown type, or no memory). */
int raftwire_encode(const struct raft_message *m, struct rw_wbuf *b);
/* Decodes into m (server_id and server_address are left to the caller). What it allocates Raft
 * takes over when m is handed to its recv callback; otherwise raftwire_release frees it.
 * 0, or -1 when malformed (nothing allocated). */
int raftwire_decode(const void *bytes, size_t len, struct raft_message *m);
void raftwire_release(struct raft_message *m);

#endif
