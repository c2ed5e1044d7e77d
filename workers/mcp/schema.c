/*
 * Validation of tool arguments (and of tools' own structured output)
 * against the JSON Schema subset that tool schemas use in practice: type,
 * enum, const, required, properties, additionalProperties, items, and the
 * length/size/range bounds. Other keywords ($ref, oneOf, pattern, ...) are
 * accepted without being checked: a tool that relies on them validates its
 * arguments itself. A failure is reported to the model as a tool error, so
 * the message names the argument and what was expected.
 */
#include "workers/mcp/mcp_internal.h"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#define MAX_DEPTH 32

static const char *type_of(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    default:
        return "null";
    }
}

static bool is_type(const char *t, const json_t *v)
{
    if (strcmp(t, "number") == 0)
        return json_is_number(v);
    if (strcmp(t, "integer") == 0)
        return json_is_integer(v) ||
               (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)));
    if (strcmp(t, "boolean") == 0)
        return json_is_boolean(v);
    return strcmp(t, type_of(v)) == 0;
}

static bool type_ok(const json_t *type, const json_t *v)
{
    if (json_is_string(type))
        return is_type(json_string_value(type), v);
    if (json_is_array(type)) {
        size_t i;
        json_t *t;
        json_array_foreach(type, i, t)
        {
            if (json_is_string(t) && is_type(json_string_value(t), v))
                return true;
        }
        return false;
    }
    return true;
}

static size_t utf8_len(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            n++;
    return n;
}

static bool fail(char *err, size_t errlen, const char *path, const char *what)
{
    snprintf(err, errlen, "%s %s", path, what);
    return false;
}

static bool check(const json_t *schema, const json_t *v, const char *path, char *err, size_t errlen,
                  int depth);

/* path + "." + at most 100 bytes of key, as snprintf("%s.%.100s") would (without its cost on
 * every property of every tool call's arguments and result). */
static void sub_path(char *out, size_t outlen, const char *path, const char *k)
{
    size_t pn = strlen(path), kn = strnlen(k, 100);
    if (pn > outlen - 2)
        pn = outlen - 2;
    if (kn > outlen - 2 - pn)
        kn = outlen - 2 - pn;
    memcpy(out, path, pn);
    out[pn] = '.';
    memcpy(out + pn + 1, k, kn);
    out[pn + 1 + kn] = '\0';
}

static bool check_object(const json_t *schema, const json_t *v, const char *path, char *err,
                         size_t errlen, int depth)
{
    char sub[256], what[300];
    size_t i;
    json_t *req;
    json_array_foreach(json_object_get(schema, "required"), i, req)
    {
        const char *name = json_string_value(req);
        if (name && !json_object_get(v, name)) {
            snprintf(what, sizeof(what), "is missing the required property '%.100s'", name);
            return fail(err, errlen, path, what);
        }
    }
    const json_t *props = json_object_get(schema, "properties");
    const json_t *extra = json_object_get(schema, "additionalProperties");
    const char *k;
    json_t *val;
    json_object_foreach((json_t *)v, k, val)
    {
        sub_path(sub, sizeof(sub), path, k);
        const json_t *ps = json_object_get(props, k);
        if (ps) {
            if (!check(ps, val, sub, err, errlen, depth + 1))
                return false;
        } else if (json_is_false(extra)) {
            snprintf(what, sizeof(what), "has an unexpected property '%.100s'", k);
            return fail(err, errlen, path, what);
        } else if (json_is_object(extra) && !check(extra, val, sub, err, errlen, depth + 1)) {
            return false;
        }
    }
    return true;
}

static bool check_bounds(const json_t *schema, const json_t *v, const char *path, char *err,
                         size_t errlen)
{
    char what[128];
    const json_t *b;
    if (json_is_string(v)) {
        size_t len = utf8_len(json_string_value(v));
        if ((b = json_object_get(schema, "minLength")) && json_is_integer(b) &&
            (json_int_t)len < json_integer_value(b)) {
            snprintf(what, sizeof(what), "must be at least %lld characters long",
                     (long long)json_integer_value(b));
            return fail(err, errlen, path, what);
        }
        if ((b = json_object_get(schema, "maxLength")) && json_is_integer(b) &&
            (json_int_t)len > json_integer_value(b)) {
            snprintf(what, sizeof(what), "must be at most %lld characters long",
                     (long long)json_integer_value(b));
            return fail(err, errlen, path, what);
        }
    }
    if (json_is_number(v)) {
        double x = json_number_value(v);
        static const struct {
            const char *kw;
            int sign; /* +1: x must be >= (or >) bound; -1: <= (or <) */
            bool strict;
        } rules[] = {{"minimum", 1, false},
                     {"exclusiveMinimum", 1, true},
                     {"maximum", -1, false},
                     {"exclusiveMaximum", -1, true}};
        for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
            b = json_object_get(schema, rules[i].kw);
            if (!json_is_number(b))
                continue;
            double d = (x - json_number_value(b)) * rules[i].sign;
            if (d < 0 || (rules[i].strict && d == 0)) {
                snprintf(what, sizeof(what), "must be %s %g",
                         rules[i].sign > 0 ? (rules[i].strict ? ">" : ">=")
                                           : (rules[i].strict ? "<" : "<="),
                         json_number_value(b));
                return fail(err, errlen, path, what);
            }
        }
    }
    if (json_is_array(v)) {
        size_t n = json_array_size(v);
        if ((b = json_object_get(schema, "minItems")) && json_is_integer(b) &&
            (json_int_t)n < json_integer_value(b)) {
            snprintf(what, sizeof(what), "must have at least %lld items",
                     (long long)json_integer_value(b));
            return fail(err, errlen, path, what);
        }
        if ((b = json_object_get(schema, "maxItems")) && json_is_integer(b) &&
            (json_int_t)n > json_integer_value(b)) {
            snprintf(what, sizeof(what), "must have at most %lld items",
                     (long long)json_integer_value(b));
            return fail(err, errlen, path, what);
        }
    }
    return true;
}

static bool check(const json_t *schema, const json_t *v, const char *path, char *err, size_t errlen,
                  int depth)
{
    char what[128];
    if (json_is_false(schema))
        return fail(err, errlen, path, "is not allowed");
    if (!json_is_object(schema) || depth > MAX_DEPTH)
        return true;
    const json_t *type = json_object_get(schema, "type");
    if (type && !type_ok(type, v)) {
        char *want = json_dumps(type, JSON_ENCODE_ANY | JSON_COMPACT);
        snprintf(what, sizeof(what), "must be of type %.60s, not %s", want ? want : "?",
                 type_of(v));
        free(want);
        return fail(err, errlen, path, what);
    }
    const json_t *en = json_object_get(schema, "enum");
    if (json_is_array(en)) {
        bool found = false;
        size_t i;
        json_t *e;
        json_array_foreach(en, i, e)
        {
            if (json_equal(e, (json_t *)v))
                found = true;
        }
        if (!found) {
            char *list = json_dumps(en, JSON_COMPACT);
            snprintf(what, sizeof(what), "must be one of %.100s", list ? list : "the enum");
            free(list);
            return fail(err, errlen, path, what);
        }
    }
    const json_t *cn = json_object_get(schema, "const");
    if (cn && !json_equal((json_t *)cn, (json_t *)v))
        return fail(err, errlen, path, "does not have the required constant value");
    if (!check_bounds(schema, v, path, err, errlen))
        return false;
    if (json_is_object(v))
        return check_object(schema, v, path, err, errlen, depth);
    const json_t *items = json_object_get(schema, "items");
    if (json_is_array(v) && (json_is_object(items) || json_is_boolean(items))) {
        size_t i;
        json_t *e;
        char sub[256];
        json_array_foreach(v, i, e)
        {
            snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
            if (!check(items, e, sub, err, errlen, depth + 1))
                return false;
        }
    }
    return true;
}

bool mcpi_schema_check(const json_t *schema, const json_t *value, const char *root, char *err,
                       size_t errlen)
{
    if (errlen)
        err[0] = '\0';
    return check(schema, value, root, err, errlen, 0);
}
