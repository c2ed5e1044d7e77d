/*
 * Where a session lives: its id names it. Every process that routes a
 * request (listeners, the admin worker) reads the owner from the id alone,
 * with no table to keep in step: a session id is "<owner>-<26 random base32
 * characters>", the owner being the shard's index on this node.
 */
#ifndef CMCP_IPC_ROUTE_H
#define CMCP_IPC_ROUTE_H

#include <stddef.h>

/* The owner a session id names, or -1 when it is malformed. */
int route_session_owner(const char *sid);
/* A new random id for a session of `owner` (buf: at least 64 bytes). */
void route_session_id_new(char *buf, size_t len, int owner);

#endif
