/* Endpoint addresses (addr.h). */
#include "ipc/addr.h"

#include <stdio.h>

void ipc_addr_sup(char *buf, size_t len, const char *run_dir, const char *sup)
{
    snprintf(buf, len, "ipc://%s/sup-%s.sock", run_dir, sup);
}

void ipc_addr_shard_ctl(char *buf, size_t len, const char *run_dir, int shard)
{
    snprintf(buf, len, "ipc://%s/shard-%d.sock", run_dir, shard);
}

void ipc_addr_shard_changes(char *buf, size_t len, const char *run_dir, int shard)
{
    snprintf(buf, len, "ipc://%s/shard-%d-changes.sock", run_dir, shard);
}

void ipc_addr_shard_data(char *buf, size_t len, const char *run_dir, int shard)
{
    snprintf(buf, len, "%s/shard-%d.data", run_dir, shard);
}

void ipc_addr_stats(char *buf, size_t len, const char *run_dir)
{
    snprintf(buf, len, "ipc://%s/metrics.sock", run_dir);
}

void ipc_addr_control(char *buf, size_t len, const char *run_dir)
{
    snprintf(buf, len, "ipc://%s/control.sock", run_dir);
}

void ipc_addr_cluster_map(char *buf, size_t len, const char *run_dir)
{
    snprintf(buf, len, "ipc://%s/cluster-map.sock", run_dir);
}

void ipc_addr_cluster_lease(char *buf, size_t len, const char *run_dir)
{
    snprintf(buf, len, "ipc://%s/cluster-lease.sock", run_dir);
}

void ipc_addr_cluster_fence(char *buf, size_t len, const char *run_dir)
{
    snprintf(buf, len, "ipc://%s/cluster-fence.sock", run_dir);
}

void ipc_addr_cluster_view(char *buf, size_t len, const char *run_dir)
{
    snprintf(buf, len, "ipc://%s/cluster-view.sock", run_dir);
}

void ipc_addr_cluster_ctl(char *buf, size_t len, const char *run_dir)
{
    snprintf(buf, len, "ipc://%s/cluster.sock", run_dir);
}

void ipc_addr_cluster_relay(char *buf, size_t len, const char *run_dir)
{
    snprintf(buf, len, "%s/cluster-relay.data", run_dir);
}
