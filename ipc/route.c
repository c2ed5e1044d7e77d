/* Session ids that name their owner (route.h). */
#include "ipc/route.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROUTE_RANDOM_CHARS 26 /* 130 bits */
#define ROUTE_MAX_OWNER 4095

void route_session_id_new(char *buf, size_t len, int owner)
{
    static const char b32[] = "abcdefghijklmnopqrstuvwxyz234567";
    unsigned char rnd[ROUTE_RANDOM_CHARS];
    randombytes_buf(rnd, sizeof(rnd));
    int n = snprintf(buf, len, "%d-", owner);
    for (size_t i = 0; i < sizeof(rnd) && (size_t)n + 1 < len; i++)
        buf[n++] = b32[rnd[i] & 31];
    buf[n] = '\0';
}

int route_session_owner(const char *sid)
{
    if (!sid || sid[0] < '0' || sid[0] > '9')
        return -1;
    char *end;
    long v = strtol(sid, &end, 10);
    if (*end != '-' || v < 0 || v > ROUTE_MAX_OWNER || strlen(end + 1) != ROUTE_RANDOM_CHARS)
        return -1;
    return (int)v;
}
