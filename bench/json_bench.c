/*
 * JSON libraries on a shard's per-request work (issue 18): jansson, which cmcp
 * uses, against Debian's two other packaged C JSON libraries, json-c and cJSON.
 *
 * Each library does what a shard does for one tools/call echo: parse the
 * request, read its id, method, tool name and the argument, build the
 * CallToolResult response (content and structuredContent) around the same id,
 * serialise it compactly, free everything. A second workload parses and
 * re-serialises a 4 KiB tools/list result (the larger documents a session
 * sees).
 *
 * jansson and json-c both export json_object_get() and other names, so one
 * process cannot hold both: this file is built three times, each with one
 * library (json_bench_jansson, json_bench_jsonc, json_bench_cjson), and each
 * binary measures one round and prints "echo_ns big_ns". bench/json_bench.py
 * runs them interleaved, round after round, so that a noisy machine shifts
 * them all alike, and prints the table.
 *
 *   cmake --build build --target json_bench && python3 bench/json_bench.py --bin-dir build/bin
 *
 * Not built by default (it needs libjson-c-dev and libcjson-dev: tools/install-deps.sh
 * bench installs them).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char REQ[] =
    "{\"jsonrpc\":\"2.0\",\"id\":42,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\","
    "\"arguments\":{\"text\":\"hello, world: the quick brown fox\"},"
    "\"_meta\":{\"progressToken\":7}}}";

static char *big; /* the tools/list result, made once */
static size_t big_len;
static volatile size_t sink; /* what the compiler must not optimise away */

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

#if defined(USE_JANSSON)
/* ------------------------------------------------------------- jansson -- */
#include <jansson.h>
#define LIB "jansson " JANSSON_VERSION

static void lib_echo(void)
{
    json_error_t e;
    json_t *req = json_loadb(REQ, sizeof(REQ) - 1, 0, &e);
    json_t *id = json_object_get(req, "id");
    const char *method = json_string_value(json_object_get(req, "method"));
    json_t *params = json_object_get(req, "params");
    const char *name = json_string_value(json_object_get(params, "name"));
    const char *text =
        json_string_value(json_object_get(json_object_get(params, "arguments"), "text"));
    if (!method || !name || !text)
        abort();
    json_t *resp = json_pack("{s:s,s:O,s:{s:[{s:s,s:s}],s:{s:s},s:b}}", "jsonrpc", "2.0", "id", id,
                             "result", "content", "type", "text", "text", text,
                             "structuredContent", "text", text, "isError", 0);
    char *out = json_dumps(resp, JSON_COMPACT);
    sink += strlen(out);
    free(out);
    json_decref(resp);
    json_decref(req);
}

static void lib_big(void)
{
    json_error_t e;
    json_t *doc = json_loadb(big, big_len, 0, &e);
    char *out = json_dumps(doc, JSON_COMPACT);
    sink += strlen(out);
    free(out);
    json_decref(doc);
}

#elif defined(USE_JSONC)
/* -------------------------------------------------------------- json-c -- */
#include <json-c/json.h>
#define LIB "json-c " JSON_C_VERSION

static struct json_object *jc_get(struct json_object *o, const char *k)
{
    struct json_object *v = NULL;
    json_object_object_get_ex(o, k, &v);
    return v;
}

static void lib_echo(void)
{
    struct json_object *req = json_tokener_parse(REQ);
    struct json_object *id = jc_get(req, "id");
    const char *method = json_object_get_string(jc_get(req, "method"));
    struct json_object *params = jc_get(req, "params");
    const char *name = json_object_get_string(jc_get(params, "name"));
    const char *text = json_object_get_string(jc_get(jc_get(params, "arguments"), "text"));
    if (!method || !name || !text)
        abort();
    struct json_object *resp = json_object_new_object();
    json_object_object_add(resp, "jsonrpc", json_object_new_string("2.0"));
    json_object_object_add(resp, "id", json_object_get(id));
    struct json_object *result = json_object_new_object();
    struct json_object *content = json_object_new_array();
    struct json_object *block = json_object_new_object();
    json_object_object_add(block, "type", json_object_new_string("text"));
    json_object_object_add(block, "text", json_object_new_string(text));
    json_object_array_add(content, block);
    json_object_object_add(result, "content", content);
    struct json_object *sc = json_object_new_object();
    json_object_object_add(sc, "text", json_object_new_string(text));
    json_object_object_add(result, "structuredContent", sc);
    json_object_object_add(result, "isError", json_object_new_boolean(0));
    json_object_object_add(resp, "result", result);
    const char *out = json_object_to_json_string_ext(resp, JSON_C_TO_STRING_PLAIN);
    sink += strlen(out);
    json_object_put(resp);
    json_object_put(req);
}

static void lib_big(void)
{
    struct json_object *doc = json_tokener_parse(big);
    const char *out = json_object_to_json_string_ext(doc, JSON_C_TO_STRING_PLAIN);
    sink += strlen(out);
    json_object_put(doc);
}

#elif defined(USE_CJSON)
/* --------------------------------------------------------------- cJSON -- */
#include <cjson/cJSON.h>
#define LIB "cJSON"

static void lib_echo(void)
{
    cJSON *req = cJSON_ParseWithLength(REQ, sizeof(REQ) - 1);
    cJSON *id = cJSON_GetObjectItemCaseSensitive(req, "id");
    const char *method = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(req, "method"));
    cJSON *params = cJSON_GetObjectItemCaseSensitive(req, "params");
    const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(params, "name"));
    const char *text = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(params, "arguments"), "text"));
    if (!method || !name || !text)
        abort();
    cJSON *resp = cJSON_CreateObject();
    cJSON_AddStringToObject(resp, "jsonrpc", "2.0");
    cJSON_AddItemToObject(resp, "id", cJSON_Duplicate(id, 1));
    cJSON *result = cJSON_AddObjectToObject(resp, "result");
    cJSON *content = cJSON_AddArrayToObject(result, "content");
    cJSON *block = cJSON_CreateObject();
    cJSON_AddStringToObject(block, "type", "text");
    cJSON_AddStringToObject(block, "text", text);
    cJSON_AddItemToArray(content, block);
    cJSON *sc = cJSON_AddObjectToObject(result, "structuredContent");
    cJSON_AddStringToObject(sc, "text", text);
    cJSON_AddFalseToObject(result, "isError");
    char *out = cJSON_PrintUnformatted(resp);
    sink += strlen(out);
    cJSON_free(out);
    cJSON_Delete(resp);
    cJSON_Delete(req);
}

static void lib_big(void)
{
    cJSON *doc = cJSON_ParseWithLength(big, big_len);
    char *out = cJSON_PrintUnformatted(doc);
    sink += strlen(out);
    cJSON_free(out);
    cJSON_Delete(doc);
}

#else
#error "build with one of -DUSE_JANSSON, -DUSE_JSONC, -DUSE_CJSON"
#endif

/* ---------------------------------------------------------------- main -- */

/* A tools/list result of 16 tools with schemas, about 4 KiB, written out by hand (no
 * library's serialiser is favoured). */
static void make_big(void)
{
    size_t cap = 16384, len = 0;
    big = malloc(cap);
    if (!big)
        abort();
    len += (size_t)snprintf(big + len, cap - len, "{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"tools\":[");
    for (int i = 0; i < 16; i++)
        len += (size_t)snprintf(
            big + len, cap - len,
            "%s{\"name\":\"tool_%02d\",\"description\":\"Tool number %d: does one thing well "
            "and says so in a sentence of ordinary length.\",\"inputSchema\":{\"type\":"
            "\"object\",\"properties\":{\"text\":{\"type\":\"string\",\"description\":\"what "
            "to work on\"},\"count\":{\"type\":\"integer\",\"minimum\":0}},\"required\":"
            "[\"text\"]}}",
            i ? "," : "", i, i);
    len += (size_t)snprintf(big + len, cap - len, "]}}");
    big_len = len;
}

static double run(void (*fn)(void), long ops)
{
    double t0 = now_ns();
    for (long i = 0; i < ops; i++)
        fn();
    return (now_ns() - t0) / (double)ops;
}

int main(int argc, char **argv)
{
    long ops = 200000;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--ops") && i + 1 < argc) {
            ops = atol(argv[++i]);
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: %s [--ops N (200000)]\n"
                   "One round of " LIB " on a shard's per-request JSON work: prints the library,\n"
                   "then nanoseconds per tools/call echo and per 4 KiB tools/list round trip.\n"
                   "bench/json_bench.py runs the three builds interleaved.\n",
                   argv[0]);
            return 0;
        } else {
            fprintf(stderr, "%s: unknown argument '%s' (--help)\n", argv[0], argv[i]);
            return 2;
        }
    }
    if (ops < 10) {
        fprintf(stderr, "%s: --ops must be at least 10\n", argv[0]);
        return 2;
    }
    make_big();
    run(lib_echo, ops / 10); /* warm-up */
    run(lib_big, ops / 100);
    double e = run(lib_echo, ops), b = run(lib_big, ops / 10);
    printf("%s\t%.1f\t%.1f\t%zu\t%zu\n", LIB, e, b, sizeof(REQ) - 1, big_len);
    free(big);
    return sink == 0; /* never: keeps the work */
}
