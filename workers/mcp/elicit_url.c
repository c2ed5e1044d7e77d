/*
 * URL-mode elicitation (2025-11-25): elicitation/create with mode "url",
 * notifications/elicitation/complete, and the -32042 URLElicitationRequiredError.
 *
 * The interaction itself happens out of band, between the user's browser and
 * whatever serves the URL; the engine only carries the three messages. Which
 * interactions are pending, and for whom, is the tool's business: the spec
 * wants that state tied to the authenticated user, not to the session.
 */
#include "workers/mcp/mcp_internal.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

void mcp_elicitation_id_new(char id[MCP_ELICITATION_ID_LEN])
{
    unsigned char b[16];
    randombytes_buf(b, sizeof(b));
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    snprintf(id, MCP_ELICITATION_ID_LEN,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
}

static bool url_ok(const char *u)
{
    if (strncmp(u, "https://", 8) == 0)
        return u[8] != '\0' && u[8] != '/';
    if (strncmp(u, "http://", 7) == 0)
        return u[7] != '\0' && u[7] != '/';
    return false;
}

/* ElicitRequestURLParams, or NULL when e lacks something. */
static json_t *url_params(const struct mcp_url_elicitation *e)
{
    if (!e || !e->message || !*e->message || !e->url || !url_ok(e->url) || !e->elicitation_id ||
        !*e->elicitation_id)
        return NULL;
    return json_pack("{s:s,s:s,s:s,s:s}", "mode", "url", "message", e->message, "elicitationId",
                     e->elicitation_id, "url", e->url);
}

int mcp_call_elicit_url(mcp_call *c, const char *key, const struct mcp_url_elicitation *e,
                        double timeout_ms, mcp_reply_fn reply, void *arg)
{
    json_t *params = url_params(e);
    if (!params)
        return -EINVAL;
    return mcp_call_request_keyed(c, key, "elicitation/create", params, timeout_ms, reply, arg);
}

static json_t *complete_notification(const char *elicitation_id)
{
    return mcpi_notification("notifications/elicitation/complete",
                             json_pack("{s:s}", "elicitationId", elicitation_id));
}

int mcp_call_elicitation_complete(mcp_call *c, const char *elicitation_id)
{
    if (!c || c->done || !c->s || !elicitation_id || !*elicitation_id)
        return -EINVAL;
    if (c->stateless || !mcpi_proto_at_least(c->protocol, "2025-11-25"))
        return -ENOTSUP;
    mcpi_emit(c->s, mcpi_call_rel(c), complete_notification(elicitation_id), false);
    return 0;
}

int mcp_session_elicitation_complete(mcp_session *s, const char *elicitation_id)
{
    if (!s || !elicitation_id || !*elicitation_id)
        return -EINVAL;
    if (s->stateless || !s->initialized || !mcpi_proto_at_least(s->protocol, "2025-11-25"))
        return -ENOTSUP;
    mcpi_emit(s, NULL, complete_notification(elicitation_id), false);
    return 0;
}

int mcp_call_url_elicitation_required(mcp_call *c, const char *message,
                                      const struct mcp_url_elicitation *e, size_t n)
{
    if (!c || c->done || n == 0 || !e)
        return -EINVAL;
    if (c->stateless || !mcpi_proto_at_least(c->protocol, "2025-11-25"))
        return -ENOTSUP;
    json_t *probe = json_pack("{s:s}", "mode", "url");
    bool ok = mcp_call_client_supports(c, "elicitation/create", probe);
    json_decref(probe);
    if (!ok)
        return -ENOTSUP;
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *p = url_params(&e[i]);
        if (!p) {
            json_decref(list);
            return -EINVAL;
        }
        json_array_append_new(list, p);
    }
    mcp_call_error(c, MCP_URL_ELICITATION_REQUIRED,
                   message && *message ? message : "This request requires more information.",
                   json_pack("{s:o}", "elicitations", list));
    return 0;
}
