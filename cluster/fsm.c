/* libraft's state machine over the cluster map (fsm.h). */
#include "cluster/fsm.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int fsm_apply(struct raft_fsm *raw, const struct raft_buffer *buf, void **result)
{
    struct map_fsm *f = (struct map_fsm *)raw;
    /* libraft sets last_applied after this returns: the entry being applied is the next one. */
    uint64_t index = raft_last_applied(f->raft) + 1;
    enum map_result r = map_apply(&f->map, buf->base, buf->len, index);
    if (f->applied)
        f->applied(f, buf->base, buf->len, r);
    *result = (void *)(intptr_t)r;
    return 0; /* a command that does not fit is a verdict, not a failure of the log */
}

static int fsm_snapshot(struct raft_fsm *raw, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct map_fsm *f = (struct map_fsm *)raw;
    json_t *j = map_to_json(&f->map);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text)
        return RAFT_NOMEM;
    size_t len = strlen(text);
    *bufs = raft_malloc(sizeof(**bufs));
    void *copy = raft_malloc(len);
    if (!*bufs || !copy) {
        raft_free(*bufs);
        raft_free(copy);
        free(text);
        return RAFT_NOMEM;
    }
    memcpy(copy, text, len);
    free(text);
    (*bufs)[0].base = copy;
    (*bufs)[0].len = len;
    *n_bufs = 1;
    return 0;
}

static int fsm_restore(struct raft_fsm *raw, struct raft_buffer *buf)
{
    struct map_fsm *f = (struct map_fsm *)raw;
    json_t *j = json_loadb(buf->base, buf->len, 0, NULL);
    int rc = j && map_from_json(&f->map, j) == 0 ? 0 : RAFT_MALFORMED;
    json_decref(j);
    if (rc == 0)
        raft_free(buf->base); /* restore owns the buffer when it succeeds */
    return rc;
}

void map_fsm_init(struct map_fsm *f, struct raft *raft)
{
    memset(f, 0, sizeof(*f));
    f->fsm.version = 1;
    f->fsm.data = f;
    f->fsm.apply = fsm_apply;
    f->fsm.snapshot = fsm_snapshot;
    f->fsm.restore = fsm_restore;
    f->raft = raft;
    map_init(&f->map);
}
