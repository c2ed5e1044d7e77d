/*
 * The shard <-> listener protocol (envelope headers; bodies are raw JSON-RPC).
 * Listeners send over their data links (ipc/dlink.h); the admin worker and
 * tool runs over nng req/rep. A plain "msg" and a reply with only st and sid
 * travel on a data link as compact binary records with the same meaning.
 *
 * Request header (listener -> shard):
 *   op   "msg"     a client message; body = the JSON-RPC message or 2025-03-26 batch
 *        "stream"  open a standalone stream (GET), or resume one: "last" = Last-Event-ID
 *        "delete"  end the session (DELETE, or a TCP/stdio connection closed)
 *        "open"    make a session before its initialize (legacy HTTP+SSE)
 *        "stateless", "stateless_cancel"   a 2026-07-28 request (no session), its cancel
 *        "session_list", "session_show", "session_kill"   the admin shell's view
 *        "tool_fetch", "tool_result"       a toolrun's arguments and result
 *   sid  session id, absent before initialize
 *   lid  listener index, tok  listener's token for this request (its events and reply carry it)
 *   pv   the MCP-Protocol-Version header, when the transport has one
 * Reply header (shard -> listener):
 *   st   HTTP-like status: 200 response in body, 202 accepted (no body), 400, 404, 503
 *   sid  the new session id (initialize)
 *   stream, seq   when the request streamed: its stream number and the final event's seq
 *   cancelled     true when the request was cancelled and has no response
 *   events        "stream" op: array of [stream, seq, message-text] replayed
 *   done          "stream" op: the resumed request stream has ended
 * Reply and event headers on a data link also carry tok (the request's, from its listener).
 * Event header (shard -> listener: on the request's link, or on every link when the
 * event belongs to the session as a whole):
 *   ev: true, sid, stream, seq, and tok when the event belongs to a client request
 */
#ifndef CMCP_SHARD_H
#define CMCP_SHARD_H

#include <stddef.h>

#include "proc.h"

int shard_main(struct proc_args *a);

/* Session ids name their shard: "<shard>-<26 random base32 chars>". -1 if malformed. */
int shard_of_session(const char *sid);
void shard_session_id_new(char *buf, size_t len, int shard);

#endif
