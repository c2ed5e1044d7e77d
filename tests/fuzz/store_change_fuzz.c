/*
 * libFuzzer target for a replication change as a replica reads it
 * (workers/store/change.c). Two readings of each input:
 *   - as it came: store_change_peek and store_change_stage must refuse it or
 *     take it whole (almost every input fails the CRC here);
 *   - as the ops of a change whose header the harness writes and seals
 *     (partition and op count from the first bytes, seq 1 on an empty
 *     store), so that the op decoding behind the CRC is reached.
 * A staged change is discarded (nothing reaches the disk). Nothing may read
 * past its input, leak, or crash; a change that stages must have its whole
 * op count staged.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "workers/store/store_int.h"

static struct store *S;
static char dir[64];

static void cleanup(void)
{
    char p[96];
    store_close(S);
    snprintf(p, sizeof(p), "%s/data.mdb", dir);
    unlink(p);
    snprintf(p, sizeof(p), "%s/lock.mdb", dir);
    unlink(p);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(dir, sizeof(dir), "/tmp/cmcp-fuzz-store.%d", (int)getpid());
    struct store_opts o = {.dir = dir, .durability = STORE_NONE};
    char err[512], *report = NULL;
    if (store_open(&S, &o, &report, err, sizeof(err)) != 0) {
        fprintf(stderr, "store_open: %s\n", err);
        abort();
    }
    free(report);
    atexit(cleanup);
    return 0;
}

static void stage_one(const char *c, size_t len)
{
    int rc = store_change_stage(S, c, len);
    if (rc == 0) {
        struct store_change_info in;
        if (store_change_peek(c, len, &in) != 0 || !store_has_staged(S))
            abort();
        if (S->nstaged != (long)in.nops + 1) /* its ops and the position */
            abort();
    } else if (store_has_staged(S)) {
        abort(); /* a refused change stages nothing */
    }
    store_discard(S);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    stage_one((const char *)data, size);
    if (size < 2)
        return 0;
    size_t len = 48 + size - 2;
    unsigned char *c = calloc(1, len);
    if (!c)
        return 0;
    memcpy(c, "CMCH", 4);
    c[4] = 1;
    store__put_u32(c + 8, data[0] % 8);
    store__put_u64(c + 12, 1);
    store__put_u64(c + 20, 1);
    store__put_u64(c + 28, 0);
    store__put_u32(c + 36, data[1] % 16);
    memcpy(c + 48, data + 2, size - 2);
    store__put_u32(c + 40, store__crc32c(0, c + 44, len - 44) ^ store__crc32c(0, c, 40));
    stage_one((const char *)c, len);
    free(c);
    return 0;
}
