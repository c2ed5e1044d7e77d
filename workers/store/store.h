/*
 * The durable session store of one shard (docs/storage.md).
 *
 * One LMDB environment per shard directory holds the sessions' state (JSON)
 * and the newest events of each session (for SSE resumption). Writes are
 * staged in memory and become durable together at store_commit(): the shard
 * stages what a request changed and commits before it replies, or (group
 * mode) commits every few milliseconds for every session touched since.
 *
 * Errors are 0 or a negative errno. store_errmsg() then says what failed and
 * what to do, in a sentence fit for a log line.
 *
 * A store is used by one thread at a time. Only one process should open a
 * directory (the shard that owns it).
 */
#ifndef CMCP_STORE_H
#define CMCP_STORE_H

#if !defined(CMCP_LAYER_STORE) && !defined(CMCP_LAYER_SHARD)
#error "workers/store is a shard's store: only the shard role uses it (../shared/design/layers.md)"
#endif

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum store_durability {
    STORE_FSYNC, /* commit = fsync; the caller commits once per request */
    STORE_GROUP, /* commit = fsync; the caller batches requests between commits */
    STORE_NONE,  /* no fsync: survives a process crash, not a power loss */
};

/* "fsync" | "group" | "none" -> 0, else -EINVAL. */
int store_durability_parse(const char *s, enum store_durability *out);
const char *store_durability_name(enum store_durability d);

struct store_opts {
    const char *dir; /* e.g. <data_dir>/shard-1; created if missing */
    enum store_durability durability;
    size_t max_bytes; /* size cap of the live data; 0 = 1 GiB */
    int max_events;   /* events kept per session for SSE resumption; <= 0 = 256 */
};

struct store;

/*
 * Opens (creating if needed). A damaged or truncated store is detected here:
 * what is intact is salvaged into a fresh store, the damaged files are moved
 * aside to <dir>.corrupt-<time>, and the store opens (possibly empty). Only
 * environmental failures (permissions, disk full at creation, no memory)
 * make it fail. *report (may be NULL) receives a malloc'd note of what was
 * found and done, NULL if all was well.
 */
int store_open(struct store **out, const struct store_opts *o, char **report, char *err,
               size_t errlen);
/* In STORE_NONE mode, flushes to disk first: a clean stop is durable. */
void store_close(struct store *s);

/*
 * Lets go of the file pages the store's reads mapped into this process.
 * LMDB reads through a shared memory map, so each page a commit or a read
 * touched stays mapped and counts in the process's RSS (with the kernel's
 * fault-around, 16 neighbouring pages per touch): once every session has
 * been written, the whole data file. The pages stay in the page cache (the
 * kernel's to keep or drop), nothing is lost or written; the next read maps
 * what it needs again. The store trims by itself after the open-time check,
 * after store_session_foreach and, at most once a second, after a commit;
 * call this from an idle timer (once a second is plenty) to also let go of
 * what the last commits and reads before a quiet spell mapped. Costs
 * ~0.3 us per mapped page, nothing when the store was not used since.
 */
void store_trim(struct store *s);

/* What the last failing call found and what to do; "" if none. */
const char *store_errmsg(const struct store *s);

/*
 * Staged writes: nothing is durable until store_commit(). Staging copies
 * its arguments and never touches the disk. sid: 1..255 bytes, no NUL.
 */
int store_session_put(struct store *s, const char *sid, const json_t *state);
int store_session_del(struct store *s, const char *sid); /* also drops its events */
/* Keeps the newest max_events (by seq) per session; an event with an
 * existing (sid, seq) replaces it. */
int store_event_put(struct store *s, const char *sid, int stream, int64_t seq, bool final,
                    const char *text);

/*
 * Commits everything staged as ONE transaction. STORE_FSYNC and STORE_GROUP:
 * on disk (fsync) when it returns 0; STORE_NONE: in the OS page cache.
 * Returns 0 or -errno; the staged writes are dropped either way.
 *   -ENOSPC  disk full or max_bytes reached. Reads keep working. A commit of
 *            deletes only always has headroom, so deleting sessions frees
 *            space and later commits succeed again.
 *   -EIO     the database failed underneath; the store reopened itself if it
 *            could (else every call fails until the shard restarts).
 */
int store_commit(struct store *s);
/*
 * A replica's commit of changes its owner holds on its own disk: as store_commit, but the
 * meta page that makes the transaction current is written without an fsync of its own (LMDB's
 * MDB_NOMETASYNC for this one): its data pages are on disk when it returns, and the next
 * commit's fsync covers the meta page. A power loss of this machine alone may undo this
 * commit; a crash of the process never does.
 */
int store_commit_copy(struct store *s);
bool store_has_staged(const struct store *s);
/* Drops everything staged, committing nothing (a write the node may not acknowledge now). */
void store_discard(struct store *s);

/* Reads see committed data only. */
json_t *store_session_get(struct store *s, const char *sid); /* new reference or NULL */
long store_session_count(struct store *s);
/*
 * Calls cb for every stored session (order unspecified). state is borrowed
 * for the call (json_incref to keep it). cb returns non-zero to stop; that
 * value is returned. Otherwise 0, or -errno if reading failed.
 */
int store_session_foreach(struct store *s, int (*cb)(void *ud, const char *sid, json_t *state),
                          void *ud);
/*
 * Events of one stream (stream < 0: every stream) with seq > after, in seq
 * order. text is valid during the call. Return value as for foreach.
 */
int store_events_foreach(struct store *s, const char *sid, int stream, int64_t after,
                         int (*cb)(void *ud, int stream, int64_t seq, bool final, const char *text),
                         void *ud);
int64_t store_last_seq(struct store *s, const char *sid); /* highest event seq stored, 0 if none */

/*
 * Replication (docs/cluster.md, "Replication"). Sessions belong to partitions
 * (the number before the '-' of their id); each partition this store writes
 * has a position (epoch, seq) and a chain value, kept durably with the data.
 *
 * The owner: after staging a request's writes and before store_commit,
 * store_changes() groups what is staged by partition (part_of(sid) < 0: not
 * replicated), numbers each group as the partition's next change under
 * epoch_of(partition), and calls cb with it (valid during the call: copy it).
 * The new positions commit with the data; send the changes only once
 * store_commit returned 0. -ESTALE: epoch_of gave an epoch older than one
 * this store already wrote (this node lost the partition).
 *
 * A replica: store_change_stage() checks a change against the partition's
 * position and stages its writes and the new position (store_commit makes
 * them durable, several changes in one commit if wished):
 *   0        staged;
 *   1        applied already (a resend): nothing staged;
 *   -ESTALE  from an epoch older than the position's: a deposed owner;
 *   -EAGAIN  a gap: fetch the changes after store_position()'s seq;
 *   -EXDEV   this copy's history differs from the owner's (it holds writes
 *            the owner never had, or was rebuilt): rebuild it from a snapshot;
 *   -EINVAL  not a change (damaged). Nothing is staged on any error.
 */
#define STORE_PARTITIONS_MAX 4096
int store_changes(struct store *s, int (*part_of)(const char *sid), uint64_t (*epoch_of)(int),
                  int (*cb)(void *ud, int partition, const char *change, size_t len), void *ud);
int store_change_stage(struct store *s, const char *change, size_t len);
struct store_change_info {
    int partition;
    uint64_t epoch, seq, prev;
    uint32_t nops;
};
/* The header of a change, checked (0), or -EINVAL. */
int store_change_peek(const char *change, size_t len, struct store_change_info *info);
/* The partition's position: staged if a change of it is staged, else committed (0, 0 if none). */
int store_position(struct store *s, int partition, uint64_t *epoch, uint64_t *seq);
/* ...and its chain value: two copies with the same (seq, chain) hold the same history. */
int store_position_chain(struct store *s, int partition, uint64_t *epoch, uint64_t *seq,
                         uint64_t *chain);

/*
 * Snapshots: how a replica that is behind, or holds another history, is rebuilt (a
 * catch-up). store_snapshot() reads, in one read transaction, every record of the sessions
 * of a partition (ids that start with prefix, e.g. "17-", and that part_of() places in it:
 * their state and stored events) with the partition's committed position, into one malloc'd
 * buffer (*out; -EFBIG past max_bytes, 0: no limit). Commit first: -EBUSY while a change of
 * the partition is staged. Every change numbered after the snapshot's seq follows it.
 *
 * A replica: store_snapshot_stage() stages the deletion of everything this store holds of
 * the partition, the snapshot's records and its position; store_commit makes the
 * replacement durable at once (a crash leaves the old copy or the new, never a mix).
 * -EINVAL: not a snapshot, or a record of another partition in it; -EBUSY: a change of the
 * partition is staged. On any error the caller discards what was staged.
 */
struct store_snapshot_info {
    int partition;
    uint64_t epoch, seq; /* the position it is at */
    uint32_t nops;
    long sessions, events; /* store_snapshot only */
};
int store_snapshot(struct store *s, int partition, const char *prefix,
                   int (*part_of)(const char *sid), size_t max_bytes, char **out, size_t *outlen,
                   struct store_snapshot_info *info);
int store_snapshot_peek(const char *snap, size_t len, struct store_snapshot_info *info);
int store_snapshot_stage(struct store *s, const char *snap, size_t len, const char *prefix,
                         int (*part_of)(const char *sid));

struct store_stats {
    long sessions, events;
    size_t file_bytes; /* size of the data file */
    size_t used_bytes; /* pages holding live data (the rest is reusable) */
    size_t cap_bytes;  /* max_bytes */
};
int store_stats(struct store *s, struct store_stats *st);

#endif
