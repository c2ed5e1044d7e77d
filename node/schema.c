/* The schema of a node's configuration: each module's own keys (schema.h). */
#include "node/schema.h"

#include "base/config.h"
#include "cluster/cluster.h"
#include "supervisor/spec.h"
#include "workers/admin/admin.h"
#include "workers/listener/listener.h"
#include "workers/metrics/metrics.h"
#include "workers/oauth/oauth.h"
#include "workers/shard/shard.h"

void node_schema_add(void)
{
    cfg_schema_add(base_cfg_keys);
    cfg_schema_add(shard_cfg_keys); /* [tools], [sessions], [tool.NAME] */
    cfg_schema_add(listener_cfg_keys);
    cfg_schema_add(oauth_cfg_keys); /* [auth] */
    cfg_schema_add(metrics_cfg_keys);
    cfg_schema_add(admin_cfg_keys);
    cfg_schema_add(cluster_cfg_keys);
    cfg_schema_add(sup_cfg_keys);
}
