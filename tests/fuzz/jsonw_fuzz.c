/*
 * libFuzzer target for base/jsonw.c: any JSON text jansson parses is written
 * by jsonw exactly as json_dumps writes it (compact), byte for byte.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/jsonw.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *v = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (!v)
        return 0;
    char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    size_t n = 0;
    char *got = jsonw_dumps(v, &n);
    if (!want != !got || (want && (strcmp(want, got) != 0 || n != strlen(want))))
        abort();
    free(want);
    free(got);
    json_decref(v);
    return 0;
}
