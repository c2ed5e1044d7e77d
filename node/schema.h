/*
 * Every module's configuration keys, added to the schema before a load:
 * the node checks a whole configuration before any role starts, and cmcpctl
 * reads the same files.
 */
#ifndef CMCP_NODE_SCHEMA_H
#define CMCP_NODE_SCHEMA_H

void node_schema_add(void);

#endif
