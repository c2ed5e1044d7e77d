/* The request path's JSON writer (base/jsonw.c): its text is json_dumps's, byte for byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "base/jsonw.h"

/* jsonw's text of v equals json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY)'s. */
static void same_as_jansson(const json_t *v)
{
    char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    size_t n = 0;
    char *got = jsonw_dumps(v, &n);
    assert_non_null(want);
    assert_non_null(got);
    assert_string_equal(got, want);
    assert_int_equal(n, strlen(want));
    free(want);
    free(got);
}

static void parsed_same(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (!v)
        fail_msg("test input does not parse: %s: %s", text, e.text);
    same_as_jansson(v);
    json_decref(v);
}

static void test_scalars(void **state)
{
    (void)state;
    const char *in[] = {"null", "true", "false", "0", "-0", "7", "-7",
                        "9223372036854775807", "-9223372036854775808", "0.5", "-1.25e-300",
                        "1e300", "3.0", "100000000000000000000.0", "\"\"", "\"plain\""};
    for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++)
        parsed_same(in[i]);
    json_t *r = json_real(1.0 / 3.0);
    same_as_jansson(r);
    json_decref(r);
}

static void test_escapes(void **state)
{
    (void)state;
    parsed_same("\"quote \\\" backslash \\\\ slash / \\b\\f\\n\\r\\t\"");
    parsed_same("\"\\u0001\\u001f\\u007f \\u0000 nul\"");
    parsed_same("\"caf\\u00e9 \\u20ac \\ud83d\\ude00 \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"");
    /* every control character */
    char s[0x20];
    for (int c = 1; c < 0x20; c++)
        s[c - 1] = (char)c;
    s[0x1f] = '\0';
    json_t *v = json_string(s);
    same_as_jansson(v);
    json_decref(v);
}

static void test_containers_keep_insertion_order(void **state)
{
    (void)state;
    parsed_same("{}");
    parsed_same("[]");
    parsed_same("[[],{},[[]],{\"a\":{}}]");
    parsed_same("{\"z\":1,\"a\":[1,2,{\"m\":null,\"b\":\"x\"}],\"k\\\"ey\":true,\"\":\"\"}");
    json_t *reply = json_pack("{s:s,s:I,s:{s:[{s:s,s:s}],s:{s:s}}}", "jsonrpc", "2.0", "id",
                              (json_int_t)42, "result", "content", "type", "text", "text",
                              "hello", "structuredContent", "text", "hello");
    same_as_jansson(reply);
    /* the same value twice in one tree is not a cycle */
    json_t *twice = json_pack("[O,O]", reply, reply);
    same_as_jansson(twice);
    json_decref(twice);
    json_decref(reply);
}

static void test_refused_as_jansson_refuses(void **state)
{
    (void)state;
    /* not UTF-8: jansson's json_dumps gives NULL, and so does jsonw */
    json_t *bad = json_string_nocheck("a\xff" "b");
    assert_null(json_dumps(bad, JSON_COMPACT | JSON_ENCODE_ANY));
    assert_null(jsonw_dumps(bad, NULL));
    json_t *surrogate = json_string_nocheck("\xed\xa0\x80");
    assert_null(jsonw_dumps(surrogate, NULL));
    json_t *overlong = json_string_nocheck("\xe0\x80\xaf");
    assert_null(jsonw_dumps(overlong, NULL));
    json_t *cut = json_string_nocheck("\xe2\x82");
    assert_null(jsonw_dumps(cut, NULL));
    json_decref(bad);
    json_decref(surrogate);
    json_decref(overlong);
    json_decref(cut);
    /* a cycle */
    json_t *a = json_object(), *b = json_array();
    json_array_append(b, a);
    json_object_set(a, "b", b);
    assert_null(json_dumps(a, JSON_COMPACT));
    assert_null(jsonw_dumps(a, NULL));
    json_object_clear(a);
    json_decref(a);
    json_decref(b);
}

static void test_append_keeps_what_was_there(void **state)
{
    (void)state;
    struct jsonw w = {0};
    json_t *one = json_pack("{s:i}", "a", 1), *bad = json_string_nocheck("\xff");
    assert_int_equal(jsonw_append(&w, one), 0);
    assert_int_equal(jsonw_append(&w, bad), -1);
    assert_string_equal(w.buf, "{\"a\":1}");
    assert_int_equal(jsonw_append(&w, one), 0);
    assert_string_equal(w.buf, "{\"a\":1}{\"a\":1}");
    jsonw_reset(&w);
    assert_int_equal(w.len, 0);
    /* a text longer than the first buffer grows it */
    json_t *big = json_array();
    for (int i = 0; i < 5000; i++)
        json_array_append_new(big, json_integer(i));
    assert_int_equal(jsonw_append(&w, big), 0);
    char *want = json_dumps(big, JSON_COMPACT);
    assert_string_equal(w.buf, want);
    free(want);
    json_decref(big);
    json_decref(one);
    json_decref(bad);
    jsonw_free(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalars),
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_containers_keep_insertion_order),
        cmocka_unit_test(test_refused_as_jansson_refuses),
        cmocka_unit_test(test_append_keeps_what_was_there),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
