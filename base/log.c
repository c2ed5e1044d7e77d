#include "base/log.h"
#include "base/cmcp.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char log_node[64] = "-";
static char log_role[32] = "cmcpd";
static char log_id[64] = "-";
static enum log_level log_min = LOG_INFO;

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

void log_event(enum log_level level, const char *event, const char *fmt, ...)
{
    if (level < log_min)
        return;
    char ts[40];
    cmcp_wallclock(ts, sizeof(ts));
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:i,s:s}", "ts", ts, "level",
                          log_level_name(level), "node", log_node, "role", log_role, "id",
                          log_id, "pid", (int)getpid(), "event", event);
    if (o && fmt) {
        va_list ap;
        va_start(ap, fmt);
        json_error_t err;
        json_t *extra = json_vpack_ex(&err, 0, fmt, ap);
        va_end(ap);
        if (extra)
            json_object_update(o, extra);
        else
            json_object_set_new(o, "log_error", json_string(err.text));
        json_decref(extra);
    }
    char *line = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    if (line) {
        /* One write per line so lines of concurrent processes do not interleave. */
        size_t n = strlen(line);
        line[n] = '\n';
        ssize_t w = write(STDERR_FILENO, line, n + 1);
        (void)w;
        line[n] = '\0';
    }
    free(line);
    json_decref(o);
}
