#include "base/log.h"
#include "base/cmcp.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char log_node[64] = "-";
static char log_role[32] = "cmcpd";
static char log_id[64] = "-";
static enum log_level log_min = LOG_INFO;
static int log_text = -1; /* -1: not decided yet (auto) */

static const char *level_names[] = {"debug", "info", "notice", "warning", "error"};

void log_init(const char *node, const char *role, const char *id)
{
    if (node)
        snprintf(log_node, sizeof(log_node), "%s", node);
    if (role)
        snprintf(log_role, sizeof(log_role), "%s", role);
    if (id)
        snprintf(log_id, sizeof(log_id), "%s", id);
    const char *env = getenv("CMCP_LOG_LEVEL");
    enum log_level l;
    if (env && log_level_parse(env, &l) == 0)
        log_min = l;
}

void log_set_level(enum log_level min)
{
    log_min = min;
}

void log_set_format(enum log_format f)
{
    log_text = f == LOG_FORMAT_TEXT || (f == LOG_FORMAT_AUTO && isatty(STDERR_FILENO));
}

int log_format_parse(const char *s, enum log_format *out)
{
    static const char *const names[] = {"auto", "json", "text"};
    for (size_t i = 0; i < CMCP_ARRAY_LEN(names); i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (enum log_format)i;
            return 0;
        }
    return -1;
}

int log_is_text(void)
{
    if (log_text < 0)
        log_set_format(LOG_FORMAT_AUTO);
    return log_text;
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (size_t i = 0; i < CMCP_ARRAY_LEN(level_names); i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    if (strcmp(s, "warn") == 0) {
        *out = LOG_WARNING;
        return 0;
    }
    return -1;
}

const char *log_level_name(enum log_level l)
{
    return (unsigned)l < CMCP_ARRAY_LEN(level_names) ? level_names[l] : "info";
}

/* A value as text: strings bare unless empty or holding blanks, quotes or '=' (then
 * JSON-quoted), everything else as compact JSON. */
static void text_value(char *buf, size_t len, size_t *j, json_t *v)
{
    char *dump = NULL;
    const char *str = json_is_string(v) ? json_string_value(v) : NULL;
    bool bare = str && *str && !strpbrk(str, " \t\n\"=");
    if (!bare)
        dump = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    const char *out = bare ? str : dump ? dump : "?";
    int n = snprintf(buf + *j, len - *j, "%s", out);
    if (n > 0)
        *j = *j + (size_t)n < len ? *j + (size_t)n : len - 1;
    free(dump);
}

/* 12:00:01.123 info    listener-0   listener_ready http_port=8080 ... */
static char *text_line(enum log_level level, const char *event, json_t *extra)
{
    size_t len = 4096, j = 0;
    char *buf = malloc(len);
    if (!buf)
        return NULL;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    localtime_r(&ts.tv_sec, &tm);
    const char *who = strcmp(log_id, "-") ? log_id : log_role;
    json_t *msg = extra ? json_object_get(extra, "msg") : NULL;
    int n = snprintf(buf, len, "%02d:%02d:%02d.%03ld %-7s %-16s %s", tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, log_level_name(level), who,
                     json_is_string(msg) ? json_string_value(msg) : event);
    j = n > 0 && (size_t)n < len ? (size_t)n : len - 1;
    if (extra && !json_is_string(msg)) {
        const char *k;
        json_t *v;
        json_object_foreach(extra, k, v)
        {
            if (j + 2 >= len)
                break;
            n = snprintf(buf + j, len - j, " %s=", k);
            j = n > 0 && j + (size_t)n < len ? j + (size_t)n : len - 1;
            text_value(buf, len, &j, v);
        }
    }
    if (j + 1 >= len) /* cut: room for the newline */
        j = len - 2;
    buf[j] = '\0';
    return buf;
}

void log_event(enum log_level level, const char *event, const char *fmt, ...)
{
    if (level < log_min)
        return;
    json_t *extra = NULL;
    const char *pack_error = NULL;
    json_error_t err;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        extra = json_vpack_ex(&err, 0, fmt, ap);
        va_end(ap);
        if (!extra)
            pack_error = err.text;
    }
    if (pack_error)
        extra = json_pack("{s:s}", "log_error", pack_error);
    char *line = NULL;
    if (log_is_text()) {
        line = text_line(level, event, extra);
    } else {
        char ts[40];
        cmcp_wallclock(ts, sizeof(ts));
        json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:i,s:s}", "ts", ts, "level",
                              log_level_name(level), "node", log_node, "role", log_role, "id",
                              log_id, "pid", (int)getpid(), "event", event);
        if (o && extra)
            json_object_update(o, extra);
        line = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        json_decref(o);
    }
    if (line) {
        /* One write per line so lines of concurrent processes do not interleave. */
        size_t n = strlen(line);
        line[n] = '\n';
        ssize_t w = write(STDERR_FILENO, line, n + 1);
        (void)w;
        line[n] = '\0';
    }
    free(line);
    json_decref(extra);
}
