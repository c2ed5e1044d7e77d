/*
 * subscriptions/listen (2026-07-28): the stateless revision's only way to hear
 * about changes. A client opens one long-lived request naming what it wants
 * (toolsListChanged, promptsListChanged, resourcesListChanged and the URIs of
 * resourceSubscriptions); the server answers with
 * notifications/subscriptions/acknowledged carrying the filter it honours,
 * then sends each matching change notification on the same stream until the
 * client cancels the request or closes the stream. Every notification of the
 * stream carries _meta["io.modelcontextprotocol/subscriptionId"] = the listen
 * request's id, so a client on a shared channel (stdio) can tell streams apart.
 *
 * The request lives in its transient session (stateless.c), which sits on the
 * server's list of stateless sessions: server-wide changes (the registry's
 * list_changed broadcasts, mcp_server_resource_updated) also walk that list and
 * reach the sessions that listen.
 */
#include "workers/mcp/mcp_internal.h"

#include <stdio.h>
#include <string.h>

#define META_SUBSCRIPTION "io.modelcontextprotocol/subscriptionId"

static const char *const list_fields[] = {"toolsListChanged", "promptsListChanged",
                                          "resourcesListChanged"};

static json_t *with_subscription(const mcp_session *s, json_t *params)
{
    if (!params)
        params = json_object();
    json_object_set_new(params, "_meta", json_pack("{s:O}", META_SUBSCRIPTION, s->listen_id));
    return params;
}

void mcpi_listen(mcp_call *c, const json_t *params)
{
    const json_t *want = json_object_get(params, "notifications");
    if (!json_is_object(want)) {
        mcp_call_error(c, MCP_INVALID_PARAMS,
                       "Invalid params: subscriptions/listen needs params.notifications, an "
                       "object such as {\"toolsListChanged\": true, \"resourceSubscriptions\": "
                       "[\"uri\"]}",
                       NULL);
        return;
    }
    /* Everything this server can tell is honoured: every list_changed and every
     * resources/updated the registry or a tool announces reaches the stream. */
    json_t *honored = json_object();
    for (size_t i = 0; i < sizeof(list_fields) / sizeof(list_fields[0]); i++) {
        const json_t *v = json_object_get(want, list_fields[i]);
        if (v && !json_is_boolean(v)) {
            char text[200];
            snprintf(text, sizeof(text), "Invalid params: notifications.%s must be a boolean",
                     list_fields[i]);
            json_decref(honored);
            mcp_call_error(c, MCP_INVALID_PARAMS, text, NULL);
            return;
        }
        if (json_is_true(v))
            json_object_set_new(honored, list_fields[i], json_true());
    }
    const json_t *uris = json_object_get(want, "resourceSubscriptions");
    if (uris) {
        size_t i;
        const json_t *u;
        bool ok = json_is_array(uris) && json_array_size(uris) <= MCPI_MAX_SUBSCRIPTIONS;
        json_array_foreach(uris, i, u) ok = ok && json_is_string(u) && json_string_length(u) > 0;
        if (!ok) {
            char text[200];
            snprintf(text, sizeof(text),
                     "Invalid params: notifications.resourceSubscriptions must be an array of "
                     "at most %d non-empty URI strings",
                     MCPI_MAX_SUBSCRIPTIONS);
            json_decref(honored);
            mcp_call_error(c, MCP_INVALID_PARAMS, text, NULL);
            return;
        }
        if (json_array_size(uris))
            json_object_set_new(honored, "resourceSubscriptions", json_deep_copy(uris));
    }
    /* Task status notifications (the tasks extension's taskIds): only for a client that
     * declared the extension (-32021 otherwise, as SEP-2663 says), and then not honoured: this
     * server sends no notifications/tasks, so the acknowledgement leaves taskIds out. */
    const json_t *tids = json_object_get(want, "taskIds");
    if (tids) {
        size_t i;
        const json_t *t;
        bool ok = json_is_array(tids);
        json_array_foreach(tids, i, t) ok = ok && json_is_string(t);
        if (!ok || !mcpi_tasks26_negotiated(c)) {
            json_decref(honored);
            if (!ok)
                mcp_call_error(c, MCP_INVALID_PARAMS,
                               "Invalid params: notifications.taskIds must be an array of task "
                               "ids",
                               NULL);
            else
                mcpi_tasks26_need_extension(c, "Task status notifications (notifications.taskIds)");
            return;
        }
    }
    mcp_session *s = c->s;
    json_decref(s->listen);
    json_decref(s->listen_id);
    s->listen = honored;
    s->listen_id = json_deep_copy(c->id);
    json_t *ack = with_subscription(s, json_pack("{s:O}", "notifications", honored));
    mcpi_emit(s, c->id, mcpi_notification("notifications/subscriptions/acknowledged", ack), false);
    /* No result: the request stays open until the client cancels it (mcp_stateless_cancel),
     * which frees the session and with it the subscription. */
}

/* The filter field that admits a list_changed method, or NULL. */
static const char *field_of(const char *method)
{
    if (strcmp(method, "notifications/tools/list_changed") == 0)
        return "toolsListChanged";
    if (strcmp(method, "notifications/prompts/list_changed") == 0)
        return "promptsListChanged";
    if (strcmp(method, "notifications/resources/list_changed") == 0)
        return "resourcesListChanged";
    return NULL;
}

void mcpi_listen_list_changed(mcp_server *srv, const char *method)
{
    const char *field = field_of(method);
    if (!field)
        return;
    for (mcp_session *s = srv->stateless; s; s = s->next)
        if (s->listen && json_is_true(json_object_get(s->listen, field)))
            mcpi_emit(s, s->listen_id, mcpi_notification(method, with_subscription(s, NULL)),
                      false);
}

void mcpi_listen_resource_updated(mcp_server *srv, const char *uri)
{
    for (mcp_session *s = srv->stateless; s; s = s->next) {
        if (!s->listen)
            continue;
        size_t i;
        const json_t *u;
        json_array_foreach(json_object_get(s->listen, "resourceSubscriptions"), i, u)
        {
            if (strcmp(json_string_value(u), uri) != 0)
                continue;
            mcpi_emit(s, s->listen_id,
                      mcpi_notification("notifications/resources/updated",
                                        with_subscription(s, json_pack("{s:s}", "uri", uri))),
                      false);
            break;
        }
    }
}
