/*
 * Multi round-trip requests (2026-07-28, SEP-2322) by replay.
 *
 * On the stateless revision a tool cannot wait for the client: when its
 * handler asks something with mcp_call_request(), the question is recorded
 * under a key. After the handler returns, every question whose answer came
 * with the request is answered (the tool's reply runs, and may ask more);
 * if questions remain, the call ends with
 *
 *   {"resultType":"input_required","inputRequests":{key:{method,params}},
 *    "requestState":"1.<sealed>"}
 *
 * and the client retries the same request with inputResponses {key: result}
 * and the requestState. The retry runs the handler again from the start:
 * the answers of earlier rounds come back out of the requestState, so the
 * tool asks the same questions and gets every answer in order. Nothing is
 * kept in the engine between rounds: any engine with the same key resumes.
 *
 * requestState is crypto_secretbox (XSalsa20-Poly1305) over
 *   {"v":1,"b":binding,"p":principal,"x":expiry_ms,"a":{key:answer}}
 * where binding digests the method, tool/prompt name or resource URI and
 * the arguments, so a state cannot be replayed on another request, by
 * another principal, or after it expired. A state that fails any check is
 * -32602; answers that are not valid results for their question are
 * -32602; answers nobody asked for are ignored; a question without an
 * answer is asked again.
 */
#include "workers/mcp/mcp_internal.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STATE_PREFIX "1."

struct mcpi_mrtr_q {
    char *key;
    mcp_reply_fn reply;
    void *arg;
    json_t *result;
    char *invalid; /* why the answer is not a valid result for the question */
    struct mcpi_mrtr_q *next;
};

int64_t mcpi_now_ms(mcp_server *srv)
{
    if (srv->now_ms)
        return srv->now_ms();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------- sealing -- */

int mcpi_state_seal(mcp_server *srv, const json_t *state, char **out)
{
    char *plain = json_dumps(state, JSON_COMPACT);
    if (!plain)
        return -ENOMEM;
    size_t plen = strlen(plain);
    size_t blen = crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + plen;
    unsigned char *box = malloc(blen);
    if (!box) {
        free(plain);
        return -ENOMEM;
    }
    randombytes_buf(box, crypto_secretbox_NONCEBYTES);
    crypto_secretbox_easy(box + crypto_secretbox_NONCEBYTES, (const unsigned char *)plain, plen,
                          box, srv->state_key);
    sodium_memzero(plain, plen);
    free(plain);
    size_t b64 = sodium_base64_ENCODED_LEN(blen, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *tok = malloc(sizeof(STATE_PREFIX) + b64);
    if (!tok) {
        free(box);
        return -ENOMEM;
    }
    memcpy(tok, STATE_PREFIX, sizeof(STATE_PREFIX) - 1);
    sodium_bin2base64(tok + sizeof(STATE_PREFIX) - 1, b64, box, blen,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    free(box);
    if (strlen(tok) > MCPI_MAX_STATE_BYTES) {
        free(tok);
        return -E2BIG;
    }
    *out = tok;
    return 0;
}

json_t *mcpi_state_open(mcp_server *srv, const char *token)
{
    size_t tlen = token ? strlen(token) : 0;
    if (tlen <= sizeof(STATE_PREFIX) - 1 || tlen > MCPI_MAX_STATE_BYTES ||
        strncmp(token, STATE_PREFIX, sizeof(STATE_PREFIX) - 1) != 0)
        return NULL;
    const char *b64 = token + sizeof(STATE_PREFIX) - 1;
    size_t b64len = tlen - (sizeof(STATE_PREFIX) - 1);
    unsigned char *box = malloc(b64len);
    size_t blen = 0;
    const char *end = NULL;
    if (!box ||
        sodium_base642bin(box, b64len, b64, b64len, NULL, &blen, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        end != b64 + b64len || blen < crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES) {
        free(box);
        return NULL;
    }
    size_t plen = blen - crypto_secretbox_NONCEBYTES - crypto_secretbox_MACBYTES;
    unsigned char *plain = malloc(plen + 1);
    if (!plain ||
        crypto_secretbox_open_easy(plain, box + crypto_secretbox_NONCEBYTES,
                                   blen - crypto_secretbox_NONCEBYTES, box, srv->state_key) != 0) {
        free(plain);
        free(box);
        return NULL;
    }
    free(box);
    json_t *st = json_loadb((const char *)plain, plen, JSON_REJECT_DUPLICATES, NULL);
    sodium_memzero(plain, plen);
    free(plain);
    if (!json_is_object(st)) {
        json_decref(st);
        return NULL;
    }
    return st;
}

/* base64 of a 16-byte BLAKE2b digest of text. */
static void digest(const char *text, char out[64])
{
    unsigned char h[16];
    crypto_generichash(h, sizeof(h), (const unsigned char *)text, strlen(text), NULL, 0);
    sodium_bin2base64(out, 64, h, sizeof(h), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

/* ---------------------------------------------------------- the round -- */

void mcpi_mrtr_free(struct mcpi_mrtr *m)
{
    if (!m)
        return;
    while (m->queue) {
        struct mcpi_mrtr_q *q = m->queue;
        m->queue = q->next;
        free(q->key);
        free(q->invalid);
        json_decref(q->result);
        free(q);
    }
    json_decref(m->answers);
    json_decref(m->consumed);
    json_decref(m->asked);
    json_decref(m->keys);
    free(m);
}

static int reject(mcp_call *c, const char *why)
{
    char text[300];
    snprintf(text, sizeof(text), "Invalid params: %s", why);
    mcp_call_error(c, MCP_INVALID_PARAMS, text, NULL);
    return -1;
}

int mcpi_mrtr_begin(mcp_call *c, const json_t *params, const char *principal)
{
    struct mcpi_mrtr *m = calloc(1, sizeof(*m));
    if (!m)
        return reject(c, "out of memory");
    c->mrtr = m;
    m->answers = json_object();
    m->consumed = json_object();
    m->asked = json_object();
    m->keys = json_object();

    /* What the state is bound to: the method and what it names, with its
     * arguments (key order does not matter: the dump sorts keys). */
    const json_t *target = json_object_get(params, "name");
    if (!target)
        target = json_object_get(params, "uri");
    const json_t *args = json_object_get(params, "arguments");
    json_t *bind = json_pack("{s:s,s:O,s:O}", "m", c->method, "n", target ? target : json_null(),
                             "a", args ? args : json_null());
    char *text = bind ? json_dumps(bind, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
    json_decref(bind);
    if (!text)
        return reject(c, "out of memory");
    digest(text, m->binding);
    free(text);
    digest(principal ? principal : "", m->principal);

    const json_t *rs = json_object_get(params, "requestState");
    if (rs && !json_is_null(rs)) {
        if (!json_is_string(rs))
            return reject(c, "requestState must be the string from the input_required result");
        json_t *st = mcpi_state_open(c->srv, json_string_value(rs));
        if (!st)
            return reject(c, "requestState failed verification (it was altered, or comes from "
                             "another server); start the request again without it");
        const char *b = json_string_value(json_object_get(st, "b"));
        const char *p = json_string_value(json_object_get(st, "p"));
        const json_t *x = json_object_get(st, "x");
        const json_t *a = json_object_get(st, "a");
        int rv = 0;
        if (json_integer_value(json_object_get(st, "v")) != 1 || !b || !p || !json_is_integer(x) ||
            !json_is_object(a))
            rv = reject(c, "requestState is not a state this server understands");
        else if (strcmp(b, m->binding) != 0)
            rv = reject(c, "requestState belongs to another request (a different method, name "
                           "or arguments); retry the request it came with");
        else if (strcmp(p, m->principal) != 0)
            rv = reject(c, "requestState was issued to another principal");
        else if (json_integer_value(x) < mcpi_now_ms(c->srv))
            rv = reject(c, "requestState has expired; start the request again without it");
        else
            json_object_update(m->answers, (json_t *)a);
        json_decref(st);
        if (rv)
            return rv;
        c->resumed = true;
    }

    const json_t *ir = json_object_get(params, "inputResponses");
    if (ir && !json_is_object(ir))
        return reject(c, "inputResponses must be an object mapping the keys of inputRequests "
                         "to their results");
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)ir, k, v)
    {
        if (!json_is_object(v)) {
            char why[200];
            snprintf(why, sizeof(why),
                     "inputResponses.%.64s must be a result object (ElicitResult, "
                     "CreateMessageResult or ListRootsResult)",
                     k);
            return reject(c, why);
        }
        /* Answers from earlier rounds were acted on already: they win. */
        if (!json_object_get(m->answers, k))
            json_object_set(m->answers, k, v);
    }
    return 0;
}

/* Why an answer is not a result for method, or NULL when it is (tasks/update uses it too). */
const char *mcpi_answer_problem(const char *method, const json_t *r)
{
    if (strcmp(method, "elicitation/create") == 0) {
        const char *a = json_string_value(json_object_get(r, "action"));
        if (!a ||
            (strcmp(a, "accept") != 0 && strcmp(a, "decline") != 0 && strcmp(a, "cancel") != 0))
            return "an ElicitResult needs \"action\": accept, decline or cancel";
        const json_t *content = json_object_get(r, "content");
        if (content && !json_is_object(content) && !json_is_null(content))
            return "ElicitResult.content must be an object";
    } else if (strcmp(method, "sampling/createMessage") == 0) {
        const json_t *content = json_object_get(r, "content");
        if (!json_is_string(json_object_get(r, "role")) ||
            !json_is_string(json_object_get(r, "model")) ||
            !(json_is_object(content) || json_is_array(content)))
            return "a CreateMessageResult needs \"role\", \"content\" and \"model\"";
    } else if (strcmp(method, "roots/list") == 0) {
        const json_t *roots = json_object_get(r, "roots");
        if (!json_is_array(roots))
            return "a ListRootsResult needs a \"roots\" array";
        size_t i;
        json_t *root;
        json_array_foreach(roots, i, root)
        {
            if (!json_is_string(json_object_get(root, "uri")))
                return "every root needs a \"uri\"";
        }
    }
    return NULL;
}

static bool valid_key(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > MCPI_MAX_INPUT_KEY)
        return false;
    for (const char *p = k; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-' || *p == '.'))
            return false;
    return true;
}

int mcpi_mrtr_request(mcp_call *c, const char *key, const char *method, json_t *params,
                      mcp_reply_fn reply, void *arg)
{
    struct mcpi_mrtr *m = c->mrtr;
    if (!m) { /* not tools/call, prompts/get or resources/read: may not ask */
        json_decref(params);
        return -EINVAL;
    }
    char autokey[MCPI_MAX_INPUT_KEY + 1];
    if (!key) {
        const char *slash = strchr(method, '/');
        int kind = slash ? (int)(slash - method) : (int)strlen(method);
        if (kind > 40)
            kind = 40;
        snprintf(autokey, sizeof(autokey), "%.*s-%lu", kind, method, ++m->next_auto);
        key = autokey;
    }
    if (!valid_key(key)) {
        json_decref(params);
        return -EINVAL;
    }
    if (json_object_get(m->keys, key)) {
        json_decref(params);
        return -EEXIST;
    }
    json_object_set_new(m->keys, key, json_true());
    json_t *answer = json_object_get(m->answers, key);
    if (!answer) {
        json_t *req = json_pack("{s:s}", "method", method);
        json_object_set_new(req, "params", params ? params : json_object());
        json_object_set_new(m->asked, key, req);
        return 0;
    }
    json_decref(params);
    struct mcpi_mrtr_q *q = calloc(1, sizeof(*q));
    if (!q)
        return -ENOMEM;
    q->key = strdup(key);
    q->reply = reply;
    q->arg = arg;
    q->result = json_incref(answer);
    const char *why = mcpi_answer_problem(method, answer);
    if (why) {
        char text[300];
        snprintf(text, sizeof(text),
                 "Invalid params: inputResponses.%s is not a valid answer to "
                 "%s: %s",
                 key, method, why);
        q->invalid = strdup(text);
    }
    if (m->queue_tail)
        m->queue_tail->next = q;
    else
        m->queue = q;
    m->queue_tail = q;
    return 0;
}

static void input_required(mcp_call *c)
{
    struct mcpi_mrtr *m = c->mrtr;
    json_t *state =
        json_pack("{s:i,s:s,s:s,s:I,s:O}", "v", 1, "b", m->binding, "p", m->principal, "x",
                  (json_int_t)(mcpi_now_ms(c->srv) + c->srv->state_ttl_ms), "a", m->consumed);
    char *token = NULL;
    int rv = state ? mcpi_state_seal(c->srv, state, &token) : -ENOMEM;
    json_decref(state);
    if (rv != 0) {
        mcp_call_error(c, MCP_INTERNAL_ERROR,
                       rv == -E2BIG ? "Internal error: the answers so far are too large to carry "
                                      "in requestState"
                                    : "Internal error: could not seal requestState",
                       NULL);
        return;
    }
    json_t *r = json_pack("{s:s,s:O,s:s}", "resultType", "input_required", "inputRequests",
                          m->asked, "requestState", token);
    free(token);
    mcpi_call_finish_result(c, r);
}

void mcpi_mrtr_settle(mcp_call *c)
{
    struct mcpi_mrtr *m = c->mrtr;
    while (!c->done && m->queue) {
        struct mcpi_mrtr_q *q = m->queue;
        m->queue = q->next;
        if (!m->queue)
            m->queue_tail = NULL;
        if (q->invalid) {
            mcp_call_error(c, MCP_INVALID_PARAMS, q->invalid, json_pack("{s:s}", "key", q->key));
        } else {
            json_object_set(m->consumed, q->key, q->result);
            json_object_del(m->answers, q->key);
            q->reply(c, q->result, NULL, q->arg);
        }
        free(q->key);
        free(q->invalid);
        json_decref(q->result);
        free(q);
    }
    if (!c->done && json_object_size(m->asked) > 0)
        input_required(c);
}
