/*
 * libFuzzer target for what the cluster reads from other processes and
 * nodes; the input's first byte picks the reader, the rest is its input:
 *   0  a Raft message (cluster/raftwire.h): what decodes must encode, and
 *      that encoding must decode and encode to itself
 *   1  a cluster map command (cluster/map.h) applied to a small map: the
 *      map must survive its own JSON round trip with the same hash
 *   2  a map publication as workers read it (ipc/cview.h)
 *   3  a fence publication as workers read it
 * Nothing may read past its input, leak, or crash.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/map.h"
#include "cluster/raftwire.h"
#include "ipc/cview.h"

static void raft_message(const uint8_t *data, size_t size)
{
    struct raft_message m, again;
    if (raftwire_decode(data, size, &m) != 0)
        return;
    /* what decodes encodes; that decodes again to the same encoding (bits the reader ignores,
     * such as unknown flags, need not survive) */
    struct rw_wbuf b1 = {0}, b2 = {0};
    if (raftwire_encode(&m, &b1) != 0 || b1.len > size)
        abort();
    if (raftwire_decode(b1.p, b1.len, &again) != 0 || raftwire_encode(&again, &b2) != 0)
        abort();
    if (b1.len != b2.len || memcmp(b1.p, b2.p, b1.len) != 0)
        abort();
    raftwire_release(&again);
    raftwire_release(&m);
    free(b1.p);
    free(b2.p);
}

static void map_command(const uint8_t *data, size_t size)
{
    static struct cluster_map m;
    map_init(&m);
    char *prelude[] = {map_cmd_init(16, 2), map_cmd_join("a", 1, "10.0.0.1:7400"),
                       map_cmd_join("b", 2, "10.0.0.2:7400")};
    for (size_t i = 0; i < sizeof(prelude) / sizeof(prelude[0]); i++) {
        map_apply(&m, prelude[i], strlen(prelude[i]), i + 1);
        free(prelude[i]);
    }
    map_apply(&m, (const char *)data, size, 10);
    char h1[17], h2[17];
    map_hash(&m, h1);
    json_t *j = map_to_json(&m);
    static struct cluster_map back;
    map_init(&back);
    if (map_from_json(&back, j) != 0)
        abort();
    json_decref(j);
    map_hash(&back, h2);
    if (strcmp(h1, h2) != 0)
        abort();
    int parts[64], owners[64];
    map_plan(&m, 1, MAP_PLAN_REBALANCE, 64, parts, owners, 64);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static struct cview v;
    switch (data[0] & 3) {
    case 0:
        raft_message(data + 1, size - 1);
        break;
    case 1:
        map_command(data + 1, size - 1);
        break;
    case 2:
        json_decref(v.nodes);
        memset(&v, 0, sizeof(v));
        cview_apply_map(&v, (const char *)data + 1, size - 1);
        break;
    case 3:
        cview_apply_fence(&v, (const char *)data + 1, size - 1);
        break;
    }
    return 0;
}
