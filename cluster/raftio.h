/*
 * libraft's I/O (struct raft_io) on this project's own parts: a libev loop
 * for ticks and completions, LMDB for the log, the term, the vote and the
 * snapshot (fsync'd before anything is reported durable), and a send
 * function the owner supplies for the network (the failover manager's link
 * through its node's cluster monitor, sealed peer links beyond; tests: a
 * function that hands the bytes to another instance in the same process).
 *
 * Why not libraft's raft_uv: it runs on libuv and speaks clear TCP of its
 * own; every process here runs one libev loop, and every byte between nodes
 * is sealed with the cluster cookie (cluster/peer.h). The messages are
 * encoded here (little-endian, versioned by a leading byte), so a peer of
 * another encoding is refused, not misread.
 */
#ifndef CMCP_CLUSTER_RAFTIO_H
#define CMCP_CLUSTER_RAFTIO_H

#include <ev.h>
#include <raft.h>
#include <stddef.h>

struct raftio_opts {
    struct ev_loop *loop;
    const char *dir; /* the log's directory (made when absent) */
    /* Hands one encoded message to the network; 0, or -1 when it cannot go (it is dropped, as a
     * lost message is: Raft resends). */
    int (*send)(void *ud, raft_id to, const char *address, const void *bytes, size_t len);
    void *ud;
};

/* Fills io (version 1) over its own state. 0, or -1 with err. */
int raftio_init(struct raft_io *io, const struct raftio_opts *o, char *err, size_t errlen);
/* Frees what raftio_init made; after raft_close's callback ran (or if raft never started). */
void raftio_free(struct raft_io *io);
/* Bytes from the network: decoded and handed to Raft (dropped when malformed or before start). */
void raftio_recv(struct raft_io *io, raft_id from, const char *from_address, const void *bytes,
                 size_t len);
/* Whether the directory holds any Raft state (a node that was ever bootstrapped or joined). */
int raftio_has_state(const char *dir);

#endif
