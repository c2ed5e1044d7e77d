/*
 * The "core" pack: echo, add, a session-scoped key-value store (kv_set,
 * kv_get, kv_list, kv_delete, also readable as kv://{key} resources with
 * subscriptions), sleep with progress and cancellation, and the kv_review
 * prompt.
 *
 * kv values are any JSON value (a string stays a string); they are part of
 * the session's durable state, so every change is committed through
 * ops->session_changed before the tool's response goes out.
 */
#include "workers/mcp/mcp_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/jsonw.h"

#define KV_MAX_KEYS 1024
#define KV_MAX_KEY_LEN 256
#define KV_MAX_VALUE_BYTES 65536
#define SLEEP_MAX_MS 600000
#define SLEEP_TICK_MS 100.0
#define SLEEP_MAX_TICKS 100.0

/* ---------------------------------------------------------- echo, add -- */

static void echo_run(mcp_call *c, const json_t *args, void *ud)
{
    const char *text = json_string_value(json_object_get(args, "text"));
    mcp_call_return(c, json_pack("{s:[o],s:{s:s}}", "content", mcpi_text_content(text),
                                 "structuredContent", "text", text));
}

static void add_run(mcp_call *c, const json_t *args, void *ud)
{
    const json_t *a = json_object_get(args, "a"), *b = json_object_get(args, "b");
    json_t *sum;
    long long is;
    /* Integers stay exact; anything else (or an overflow) is a double. */
    if (json_is_integer(a) && json_is_integer(b) &&
        !__builtin_add_overflow(json_integer_value(a), json_integer_value(b), &is))
        sum = json_integer(is);
    else
        sum = json_real(json_number_value(a) + json_number_value(b));
    if (!sum) { /* jansson refuses infinities: the doubles overflowed */
        mcp_call_return_text(c, true, "add: the sum does not fit in a double");
        return;
    }
    char *text = json_dumps(sum, JSON_ENCODE_ANY);
    mcp_call_return(c, json_pack("{s:[o],s:{s:o}}", "content", mcpi_text_content(text),
                                 "structuredContent", "sum", sum));
    free(text);
}

/* ----------------------------------------------------------------- kv -- */

/* kv://<key> with every byte outside RFC 3986's unreserved set escaped. */
static char *kv_uri(const char *key)
{
    size_t n = strlen(key);
    char *out = malloc(5 + 3 * n + 1), *p = out;
    p += sprintf(p, "kv://");
    for (const unsigned char *k = (const unsigned char *)key; *k; k++) {
        if ((*k >= 'A' && *k <= 'Z') || (*k >= 'a' && *k <= 'z') || (*k >= '0' && *k <= '9') ||
            strchr("-._~", *k))
            *p++ = (char)*k;
        else
            p += sprintf(p, "%%%02X", *k);
    }
    *p = '\0';
    return out;
}

/* The kv store lives in a session; 2026-07-28 requests have none. */
static bool kv_stateless(mcp_call *c, const char *tool)
{
    if (!mcp_call_stateless(c))
        return false;
    mcp_call_return_text(c, true,
                         "%s: the kv tools keep per-session state, and protocol 2026-07-28 has no "
                         "sessions; connect with initialize (protocol 2025-11-25 or earlier) to "
                         "use them",
                         tool);
    return true;
}

static void kv_changed(mcp_session *s, const char *key, bool list_changed)
{
    mcpi_session_changed(s);
    /* Durable first: notifications must not announce state a crash could lose. */
    mcpi_session_flush(s);
    if (list_changed)
        mcpi_session_list_changed(s, "notifications/resources/list_changed");
    char *uri = kv_uri(key);
    mcpi_session_resource_updated(s, uri);
    free(uri);
}

static void kv_set_run(mcp_call *c, const json_t *args, void *ud)
{
    if (kv_stateless(c, "kv_set"))
        return;
    mcp_session *s = c->s;
    const char *key = json_string_value(json_object_get(args, "key"));
    const json_t *value = json_object_get(args, "value");
    bool created = json_object_get(s->kv, key) == NULL;
    if (created && json_object_size(s->kv) >= KV_MAX_KEYS) {
        mcp_call_return_text(c, true,
                             "kv_set: this session already holds %d keys; delete some with "
                             "kv_delete first",
                             KV_MAX_KEYS);
        return;
    }
    size_t len = 0;
    free(jsonw_dumps(value, &len)); /* only its length is needed */
    if (len > KV_MAX_VALUE_BYTES) {
        mcp_call_return_text(c, true, "kv_set: value is %zu bytes of JSON; the limit is %d", len,
                             KV_MAX_VALUE_BYTES);
        return;
    }
    if (!s->kv && !(s->kv = json_object())) {
        mcp_call_return_text(c, true, "kv_set: out of memory");
        return;
    }
    json_object_set_new(s->kv, key, json_deep_copy(value));
    kv_changed(s, key, created);
    char text[400];
    snprintf(text, sizeof(text), "%s key '%.256s'", created ? "created" : "updated", key);
    mcp_call_return(c, json_pack("{s:[o],s:{s:s,s:b}}", "content", mcpi_text_content(text),
                                 "structuredContent", "key", key, "created", created));
}

static void kv_get_run(mcp_call *c, const json_t *args, void *ud)
{
    if (kv_stateless(c, "kv_get"))
        return;
    const char *key = json_string_value(json_object_get(args, "key"));
    const json_t *value = json_object_get(c->s->kv, key);
    if (!value) {
        mcp_call_return_text(c, true,
                             "no value stored under key '%.256s' in this session; store one "
                             "with kv_set (kv_list shows the keys)",
                             key);
        return;
    }
    char *text = json_is_string(value) ? strdup(json_string_value(value))
                                       : jsonw_dumps(value, NULL);
    mcp_call_return(c, json_pack("{s:[o],s:{s:s,s:o}}", "content", mcpi_text_content(text),
                                 "structuredContent", "key", key, "value", json_deep_copy(value)));
    free(text);
}

static void kv_list_run(mcp_call *c, const json_t *args, void *ud)
{
    if (kv_stateless(c, "kv_list"))
        return;
    json_t *keys = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(c->s->kv, k, v)
    {
        json_array_append_new(keys, json_string(k));
    }
    char *text = json_dumps(keys, JSON_COMPACT);
    mcp_call_return(c, json_pack("{s:[o],s:{s:o}}", "content", mcpi_text_content(text),
                                 "structuredContent", "keys", keys));
    free(text);
}

static void kv_delete_run(mcp_call *c, const json_t *args, void *ud)
{
    if (kv_stateless(c, "kv_delete"))
        return;
    const char *key = json_string_value(json_object_get(args, "key"));
    bool deleted = json_object_del(c->s->kv, key) == 0;
    if (json_object_size(c->s->kv) == 0) { /* an empty kv is no object at all */
        json_decref(c->s->kv);
        c->s->kv = NULL;
    }
    if (deleted)
        kv_changed(c->s, key, true);
    char text[400];
    snprintf(text, sizeof(text), "%s key '%.256s'", deleted ? "deleted" : "there was no", key);
    mcp_call_return(c, json_pack("{s:[o],s:{s:s,s:b}}", "content", mcpi_text_content(text),
                                 "structuredContent", "key", key, "deleted", deleted));
}

static json_t *kv_read(mcp_call *c, const char *uri, const json_t *vars, void *ud)
{
    const char *key = json_string_value(json_object_get(vars, "key"));
    const json_t *value = c->s ? json_object_get(c->s->kv, key) : NULL;
    if (!value)
        return NULL;
    char *text = jsonw_dumps(value, NULL);
    json_t *contents =
        json_pack("[{s:s,s:s,s:s}]", "uri", uri, "mimeType", "application/json", "text", text);
    free(text);
    return contents;
}

static json_t *kv_list_resources(mcp_session *s, void *ud)
{
    json_t *out = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(s->kv, k, v)
    {
        char *uri = kv_uri(k);
        json_array_append_new(
            out, json_pack("{s:s,s:s,s:s}", "uri", uri, "name", k, "mimeType", "application/json"));
        free(uri);
    }
    return out;
}

static json_t *kv_complete(mcp_call *c, const char *arg, const char *prefix, const json_t *ctx,
                           void *ud)
{
    json_t *out = json_array();
    if (!c->s || strcmp(arg, "key") != 0)
        return out;
    size_t n = strlen(prefix);
    const char *k;
    json_t *v;
    json_object_foreach(c->s->kv, k, v)
    {
        if (strncmp(k, prefix, n) == 0)
            json_array_append_new(out, json_string(k));
    }
    return out;
}

static json_t *kv_review_get(mcp_call *c, const json_t *args, void *ud)
{
    const char *key = json_string_value(json_object_get(args, "key"));
    char *uri = kv_uri(key);
    json_t *vars = json_pack("{s:s}", "key", key);
    json_t *contents = kv_read(c, uri, vars, NULL);
    json_decref(vars);
    free(uri);
    if (!contents) {
        char text[400];
        snprintf(text, sizeof(text),
                 "Invalid params: no key '%.256s' in this session (set it with kv_set)", key);
        mcp_call_error(c, MCP_INVALID_PARAMS, text, NULL);
        return NULL;
    }
    json_t *resource = json_deep_copy(json_array_get(contents, 0));
    json_decref(contents);
    char text[400];
    snprintf(text, sizeof(text),
             "Review the value stored under '%.256s' above and suggest improvements.", key);
    return json_pack("{s:s,s:[{s:s,s:{s:s,s:o}},{s:s,s:o}]}", "description",
                     "Review a stored session value", "messages", "role", "user", "content", "type",
                     "resource", "resource", resource, "role", "user", "content",
                     mcpi_text_content(text));
}

/* -------------------------------------------------------------- sleep -- */

struct sleep_state {
    double total, done, tick;
};

static void sleep_tick(mcp_call *c, void *arg)
{
    struct sleep_state *st = mcp_call_state(c);
    st->done += st->tick;
    if (st->done > st->total)
        st->done = st->total;
    if (st->done >= st->total) {
        mcp_call_return(c,
                        json_pack("{s:[o],s:{s:f}}", "content", mcpi_text_content("done sleeping"),
                                  "structuredContent", "slept_ms", st->total));
        return;
    }
    char msg[96];
    snprintf(msg, sizeof(msg), "slept %.0f of %.0f ms", st->done, st->total);
    mcp_call_progress(c, st->done, st->total, msg);
    if (!mcp_call_timer(c, st->tick, sleep_tick, NULL))
        mcp_call_return_text(c, true, "sleep: could not arm a timer");
}

static void sleep_run(mcp_call *c, const json_t *args, void *ud)
{
    double ms = json_number_value(json_object_get(args, "ms"));
    if (ms <= 0) {
        mcp_call_return(c,
                        json_pack("{s:[o],s:{s:f}}", "content", mcpi_text_content("done sleeping"),
                                  "structuredContent", "slept_ms", 0.0));
        return;
    }
    struct sleep_state *st = calloc(1, sizeof(*st));
    st->total = ms;
    /* With a progress token: a step every 100 ms, but never more than 100
     * steps; without one there is nobody to tell, so one timer will do. */
    st->tick = mcp_call_has_progress(c)
                   ? (ms / SLEEP_MAX_TICKS > SLEEP_TICK_MS ? ms / SLEEP_MAX_TICKS : SLEEP_TICK_MS)
                   : ms;
    if (st->tick > ms)
        st->tick = ms;
    mcp_call_set_state(c, st, free);
    if (!mcp_call_timer(c, st->tick, sleep_tick, NULL))
        mcp_call_return_text(c, true,
                             "sleep cannot run here: the host provides no timers to the engine");
}

/* ------------------------------------------------------- registration -- */

struct tool_src {
    const char *name, *title, *description, *input, *output;
    mcp_tool_fn run;
    const char *annotations; /* hints for clients deciding what to confirm */
};

#define READ_ONLY "{\"readOnlyHint\":true,\"openWorldHint\":false}"
#define KV_WRITE                                                                                   \
    "{\"readOnlyHint\":false,\"destructiveHint\":true,\"idempotentHint\":true,"                    \
    "\"openWorldHint\":false}"

static const struct tool_src core_tools[] = {
    {"echo", "Echo", "Returns the given text unchanged.",
     "{\"type\":\"object\",\"properties\":{\"text\":{\"type\":\"string\",\"description\":"
     "\"Text to echo back\"}},\"required\":[\"text\"],\"additionalProperties\":false}",
     "{\"type\":\"object\",\"properties\":{\"text\":{\"type\":\"string\"}},\"required\":[\"text\"]"
     "}",
     echo_run, READ_ONLY},
    {"add", "Add", "Adds two numbers and returns the sum.",
     "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"number\"},\"b\":{\"type\":"
     "\"number\"}},\"required\":[\"a\",\"b\"],\"additionalProperties\":false}",
     "{\"type\":\"object\",\"properties\":{\"sum\":{\"type\":\"number\"}},\"required\":[\"sum\"]}",
     add_run, READ_ONLY},
    {"kv_set", "Set a session value",
     "Stores a value (any JSON, strings stay strings) under a key in this session. Readable as "
     "the resource kv://{key}.",
     "{\"type\":\"object\",\"properties\":{\"key\":{\"type\":\"string\",\"minLength\":1,"
     "\"maxLength\":256},\"value\":{\"description\":\"Any JSON value\"}},\"required\":[\"key\","
     "\"value\"],\"additionalProperties\":false}",
     "{\"type\":\"object\",\"properties\":{\"key\":{\"type\":\"string\"},\"created\":{\"type\":"
     "\"boolean\"}},\"required\":[\"key\",\"created\"]}",
     kv_set_run, KV_WRITE},
    {"kv_get", "Get a session value", "Returns the value stored under a key in this session.",
     "{\"type\":\"object\",\"properties\":{\"key\":{\"type\":\"string\",\"minLength\":1}},"
     "\"required\":[\"key\"],\"additionalProperties\":false}",
     "{\"type\":\"object\",\"properties\":{\"key\":{\"type\":\"string\"},\"value\":{}},"
     "\"required\":[\"key\",\"value\"]}",
     kv_get_run, READ_ONLY},
    {"kv_list", "List session keys", "Lists the keys stored in this session.",
     "{\"type\":\"object\",\"additionalProperties\":false}",
     "{\"type\":\"object\",\"properties\":{\"keys\":{\"type\":\"array\",\"items\":{\"type\":"
     "\"string\"}}},\"required\":[\"keys\"]}",
     kv_list_run, READ_ONLY},
    {"kv_delete", "Delete a session value", "Deletes a key from this session.",
     "{\"type\":\"object\",\"properties\":{\"key\":{\"type\":\"string\",\"minLength\":1}},"
     "\"required\":[\"key\"],\"additionalProperties\":false}",
     "{\"type\":\"object\",\"properties\":{\"key\":{\"type\":\"string\"},\"deleted\":{\"type\":"
     "\"boolean\"}},\"required\":[\"key\",\"deleted\"]}",
     kv_delete_run, KV_WRITE},
    {"sleep", "Sleep",
     "Waits ms milliseconds (at most 600000), reporting progress when the request carries "
     "_meta.progressToken. Cancellable.",
     "{\"type\":\"object\",\"properties\":{\"ms\":{\"type\":\"integer\",\"minimum\":0,"
     "\"maximum\":600000}},\"required\":[\"ms\"],\"additionalProperties\":false}",
     "{\"type\":\"object\",\"properties\":{\"slept_ms\":{\"type\":\"number\"}},\"required\":["
     "\"slept_ms\"]}",
     sleep_run, READ_ONLY},
};

int mcpi_pack_core(mcp_server *srv, char *err, size_t errlen)
{
    for (size_t i = 0; i < sizeof(core_tools) / sizeof(core_tools[0]); i++) {
        const struct tool_src *t = &core_tools[i];
        json_t *in = json_loads(t->input, 0, NULL), *out = json_loads(t->output, 0, NULL);
        json_t *ann = json_loads(t->annotations, 0, NULL);
        struct mcp_tool_def def = {.name = t->name,
                                   .title = t->title,
                                   .description = t->description,
                                   .input_schema = in,
                                   .output_schema = out,
                                   .annotations = ann,
                                   .run = t->run,
                                   .output_trusted = true};
        int rv = in && out && ann ? mcp_server_add_tool(srv, &def, err, errlen) : -1;
        if (!in || !out || !ann)
            snprintf(err, errlen, "core pack: bad built-in schema for tool %s", t->name);
        json_decref(in);
        json_decref(out);
        json_decref(ann);
        if (rv != 0)
            return -1;
    }
    struct mcp_resource_def kv = {
        .uri = "kv://{key}",
        .name = "kv",
        .title = "Session value",
        .description = "A value stored with kv_set in this session (JSON). Subscribe to be told "
                       "when it changes.",
        .mime_type = "application/json",
        .read = kv_read,
        .list = kv_list_resources,
        .complete = kv_complete};
    if (mcp_server_add_template(srv, &kv, err, errlen) != 0)
        return -1;
    json_t *args = json_pack("[{s:s,s:s,s:b}]", "name", "key", "description",
                             "The kv key whose value to review", "required", 1);
    struct mcp_prompt_def review = {.name = "kv_review",
                                    .title = "Review a session value",
                                    .description =
                                        "Asks the model to review a value stored with kv_set",
                                    .arguments = args,
                                    .get = kv_review_get,
                                    .complete = kv_complete};
    int rv = mcp_server_add_prompt(srv, &review, err, errlen);
    json_decref(args);
    return rv;
}
