#include "base/config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * The schema: each module declares its own keys (a cfg_key array) and the
 * binary adds them before loading, so that a typo in a deployment's file is
 * caught at start instead of silently ignored.
 */
#define CFG_MAX_MODULES 32
static const struct cfg_key *modules[CFG_MAX_MODULES];
static int nmodules;

void cfg_schema_add(const struct cfg_key *keys)
{
    for (int i = 0; i < nmodules; i++)
        if (modules[i] == keys)
            return;
    if (nmodules < CFG_MAX_MODULES)
        modules[nmodules++] = keys;
}

void cfg_schema_clear(void)
{
    nmodules = 0;
}

/* Every key of every module, in the order they were added. */
#define FOREACH_KEY(d)                                                                         \
    for (int m_ = 0; m_ < nmodules; m_++)                                                      \
        for (const struct cfg_key *d = modules[m_]; d->section; d++)

void cfg_schema_print(FILE *f)
{
    static const char *const types[] = {"text", "integer", "boolean", "list", "one of", "ms"};
    FOREACH_KEY(d)
    {
        bool prefix = d->section[strlen(d->section) - 1] == '.';
        fprintf(f, "[%s%s] %s: %s", d->section, prefix ? "NAME" : "", d->key, types[d->type]);
        if (d->type == CFG_INT || d->type == CFG_MS)
            fprintf(f, " %ld..%ld", d->min, d->max);
        if (d->choices)
            fprintf(f, "%s%s", d->type == CFG_ENUM ? " " : " or ", d->choices);
        fputc('\n', f);
    }
}

static bool section_matches(const char *pattern, const char *section)
{
    size_t n = strlen(pattern);
    if (n > 0 && pattern[n - 1] == '.')
        return strncmp(pattern, section, n) == 0 && section[n] != '\0';
    return strcmp(pattern, section) == 0;
}

static bool section_known(const char *section)
{
    FOREACH_KEY(d)
    {
        if (section_matches(d->section, section))
            return true;
    }
    return false;
}

static const struct cfg_key *schema_find(const char *section, const char *key)
{
    FOREACH_KEY(d)
    {
        if (section_matches(d->section, section) && strcmp(d->key, key) == 0)
            return d;
    }
    return NULL;
}

/* "node, tools, ..., tool.NAME, tree.NAME": the sections the schema knows, for errors. */
static void known_sections(char *buf, size_t len)
{
    size_t n = 0;
    buf[0] = '\0';
    FOREACH_KEY(d)
    {
        char name[80];
        size_t sl = strlen(d->section);
        if (sl > 0 && d->section[sl - 1] == '.')
            snprintf(name, sizeof(name), "%sNAME", d->section);
        else
            snprintf(name, sizeof(name), "%s", d->section);
        /* listed once: look for it as a whole item of what is there already */
        size_t nl = strlen(name);
        bool seen = false;
        for (const char *p = buf; !seen && (p = strstr(p, name)) != NULL; p += nl)
            seen = (p == buf || p[-1] == ' ') && (p[nl] == ',' || p[nl] == '\0');
        if (!seen && n < len)
            n += (size_t)snprintf(buf + n, len - n, "%s%s", n ? ", " : "", name);
    }
}

static bool parse_long(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0')
        return false;
    *out = v;
    return true;
}

static bool in_choices(const char *choices, const char *v)
{
    size_t n = strlen(v);
    const char *p = choices;
    while (p && *p) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, v, n) == 0)
            return true;
        p = bar ? bar + 1 : NULL;
    }
    return false;
}

/* Checks a value against its declared type; returns NULL or a message. */
static const char *check_value(const struct cfg_key *d, const char *v, char *buf, size_t len)
{
    long n;
    switch (d->type) {
    case CFG_STR:
    case CFG_LIST:
        return NULL;
    case CFG_BOOL:
        if (strcmp(v, "true") && strcmp(v, "false") && strcmp(v, "yes") && strcmp(v, "no") &&
            strcmp(v, "1") && strcmp(v, "0"))
            return "expected true or false";
        return NULL;
    case CFG_ENUM:
        if (!in_choices(d->choices, v)) {
            snprintf(buf, len, "'%s' is not one of %s", v, d->choices);
            return buf;
        }
        return NULL;
    case CFG_MS:
        if (d->choices && in_choices(d->choices, v))
            return NULL;
        /* otherwise a number of milliseconds */
        __attribute__((fallthrough));
    case CFG_INT:
        if (!parse_long(v, &n)) {
            snprintf(buf, len, "'%s' is not a whole number%s%s", v, d->choices ? " or one of " : "",
                     d->choices ? d->choices : "");
            return buf;
        }
        if (n < d->min || n > d->max) {
            snprintf(buf, len, "%ld is out of range [%ld, %ld]", n, d->min, d->max);
            return buf;
        }
        return NULL;
    }
    return NULL;
}

static struct cfg_entry *entry_find(struct cfg *c, const char *section, const char *key)
{
    for (int i = 0; i < c->n; i++)
        if (strcmp(c->v[i].section, section) == 0 && strcmp(c->v[i].key, key) == 0)
            return &c->v[i];
    return NULL;
}

static int entry_set(struct cfg *c, const char *section, const char *key, const char *value,
                     const char *origin, int line)
{
    struct cfg_entry *e = entry_find(c, section, key);
    if (!e) {
        if (c->n == c->cap) {
            int cap = c->cap ? c->cap * 2 : 64;
            struct cfg_entry *v = realloc(c->v, (size_t)cap * sizeof(*v));
            if (!v)
                return -1;
            c->v = v;
            c->cap = cap;
        }
        e = &c->v[c->n++];
        e->section = strdup(section);
        e->key = strdup(key);
    } else {
        free(e->value);
        free(e->origin);
    }
    e->value = strdup(value);
    e->origin = strdup(origin);
    e->line = line;
    return 0;
}

int cfg_errorf(struct cfg *c, const struct cfg_entry *e, const char *fmt, ...)
{
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (e && e->line > 0)
        snprintf(c->err, sizeof(c->err), "%s:%d: [%s] %s: %s", e->origin, e->line, e->section,
                 e->key, msg);
    else if (e)
        snprintf(c->err, sizeof(c->err), "%s: [%s] %s: %s", e->origin, e->section, e->key, msg);
    else
        snprintf(c->err, sizeof(c->err), "%s", msg);
    return -1;
}

/* inih reads through this so the handler knows the current line. */
struct reader {
    const char *text;
    size_t pos;
    int line;
    struct cfg *c;
    const char *origin;
    bool failed;
    bool indented; /* the current line starts with blanks: a continuation line */
};

/*
 * inih reports a section only with its first key, so an empty [typo] section
 * would pass unnoticed, and an unclosed [node would be blamed on the line
 * after it: section headers are checked here, as they are read.
 */
static void check_section_line(struct reader *r, const char *line)
{
    while (*line == ' ' || *line == '\t')
        line++;
    if (*line != '[' || r->failed)
        return;
    const char *end = strchr(line, ']');
    if (!end) {
        r->failed = true;
        snprintf(r->c->err, sizeof(r->c->err), "%s:%d: section header without its closing ']'",
                 r->origin, r->line);
        return;
    }
    char name[128];
    snprintf(name, sizeof(name), "%.*s", (int)(end - line - 1), line + 1);
    if (!section_known(name)) {
        char known[300];
        known_sections(known, sizeof(known));
        r->failed = true;
        snprintf(r->c->err, sizeof(r->c->err), "%s:%d: unknown section [%s] (known: %s)",
                 r->origin, r->line, name, known);
    }
}

static char *reader_line(char *buf, int size, void *stream)
{
    struct reader *r = stream;
    if (r->text[r->pos] == '\0')
        return NULL;
    int i = 0;
    while (i < size - 1 && r->text[r->pos] != '\0') {
        char ch = r->text[r->pos++];
        buf[i++] = ch;
        if (ch == '\n')
            break;
    }
    buf[i] = '\0';
    r->line++;
    r->indented = i > 0 && (buf[0] == ' ' || buf[0] == '\t');
    check_section_line(r, buf);
    return buf;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
    struct reader *r = user;
    struct cfg_entry where = {(char *)section, (char *)name, NULL, (char *)r->origin, r->line};
    if (r->failed)
        return 1; /* keep only the first error */
    if (!section_known(section)) {
        r->failed = true;
        if (section[0] == '\0')
            snprintf(r->c->err, sizeof(r->c->err), "%s:%d: key '%s' outside any [section]",
                     r->origin, r->line, name);
        else {
            char known[300];
            known_sections(known, sizeof(known));
            snprintf(r->c->err, sizeof(r->c->err), "%s:%d: unknown section [%s] (known: %s)",
                     r->origin, r->line, section, known);
        }
        return 0;
    }
    /* An indented line continues the value above it (inih calls us again for it):
     * multi-line values such as a tool's JSON input schema. */
    struct cfg_entry *prev = entry_find(r->c, section, name);
    if (r->indented && prev && prev->line > 0 && strcmp(prev->origin, r->origin) == 0) {
        size_t a = strlen(prev->value), b = strlen(value);
        char *v = realloc(prev->value, a + b + 2);
        if (!v)
            return 0;
        v[a] = '\n';
        memcpy(v + a + 1, value, b + 1);
        prev->value = v;
        return 1;
    }
    const struct cfg_key *d = schema_find(section, name);
    if (!d) {
        r->failed = true;
        cfg_errorf(r->c, &where, "unknown key (see configs/default.conf for the keys of [%s])",
                   section);
        return 0;
    }
    char buf[256];
    const char *msg = check_value(d, value, buf, sizeof(buf));
    if (msg) {
        r->failed = true;
        cfg_errorf(r->c, &where, "%s", msg);
        return 0;
    }
    return entry_set(r->c, section, name, value, r->origin, r->line) == 0;
}

int cfg_load_string(struct cfg *c, const char *text, const char *origin)
{
    /* inih's default of 200 bytes a line would cut JSON schemas and long commands. */
    if (ini_max_line < 65536)
        ini_max_line = 65536;
    struct reader r = {text, 0, 0, c, origin, false, false};
    int rc = ini_parse_stream(reader_line, &r, handler, &r);
    if (rc == 0 && !r.failed)
        return 0;
    if (!r.failed) /* a syntax error that inih found by itself */
        snprintf(c->err, sizeof(c->err), "%s:%d: syntax error (expected [section] or key = value)",
                 origin, rc);
    return -1;
}

static int load_file(struct cfg *c, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(c->err, sizeof(c->err), "cannot read config file %s: %s", path, strerror(errno));
        return -1;
    }
    size_t cap = 8192, len = 0;
    char *text = malloc(cap);
    size_t n;
    while (text && (n = fread(text + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (len + 1 == cap) {
            char *t = realloc(text, cap * 2);
            if (!t) {
                free(text);
                text = NULL;
                break;
            }
            text = t;
            cap *= 2;
        }
    }
    fclose(f);
    if (!text) {
        snprintf(c->err, sizeof(c->err), "out of memory reading %s", path);
        return -1;
    }
    text[len] = '\0';
    int rc = cfg_load_string(c, text, path);
    free(text);
    return rc;
}

static void env_name(char *out, size_t len, const char *section, const char *key)
{
    size_t j = (size_t)snprintf(out, len, "CMCP_");
    for (const char *parts[2] = {section, key}, **p = parts; p < parts + 2; p++) {
        if (p == parts + 1 && j + 1 < len)
            out[j++] = '_';
        for (const char *s = *p; *s && j + 1 < len; s++)
            out[j++] = (*s == '.' || *s == '-') ? '_' : (char)toupper((unsigned char)*s);
    }
    out[j] = '\0';
}

/*
 * The CMCP_ variables that are not settings (docs/configuration.md, "Other environment
 * variables"): every other CMCP_ name must be a setting's.
 */
const char *const cfg_env_extra[] = {
    "CMCP_LOG_LEVEL",   /* the log level of every process, over [node] log_level */
    "CMCP_COOKIE_FILE", /* the admin cookie file cmcpctl and the node's processes use */
    /* set by the node for its own processes */
    "CMCP_ROOT_PID", "CMCP_INCARNATION", "CMCP_STDIO", "CMCP_LISTEN_FDS",
    /* set by the test harness (tests/), which every process it starts inherits */
    "CMCP_BIN_DIR", "CMCP_SOURCE_DIR", "CMCP_TEST_TAG", "CMCP_KEEP_TMP", "CMCP_TEST_SEED",
    "CMCP_CHAOS_KILLS",
    NULL,
};

bool cfg_env_is_extra(const char *name)
{
    for (const char *const *x = cfg_env_extra; *x; x++)
        if (strcmp(*x, name) == 0)
            return true;
    return false;
}

/* Edit distance of two short names (at most 159 bytes each). */
static int edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la >= 160 || lb >= 160)
        return 1000;
    int row[160];
    for (size_t j = 0; j <= lb; j++)
        row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j];
            int best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/*
 * The setting's environment name (of a key of one of the sections) or extra name closest to
 * name, into best (when within max_dist edits); returns that distance, or max_dist + 1.
 */
static int env_scan(const char *name, char **sections, int ns, int max_dist, char *best,
                    size_t bestlen)
{
    int bestd = max_dist + 1;
    best[0] = '\0';
    for (int s = 0; s < ns && bestd > 0; s++)
        FOREACH_KEY(d)
        {
            if (!section_matches(d->section, sections[s]))
                continue;
            char full[160];
            env_name(full, sizeof(full), sections[s], d->key);
            int dist = strcmp(full, name) == 0 ? 0 : max_dist ? edit_distance(name, full) : 1;
            if (dist < bestd) {
                bestd = dist;
                snprintf(best, bestlen, "%s", full);
            }
        }
    for (const char *const *x = cfg_env_extra; *x && bestd > 0; x++) {
        int dist = strcmp(*x, name) == 0 ? 0 : max_dist ? edit_distance(name, *x) : 1;
        if (dist < bestd) {
            bestd = dist;
            snprintf(best, bestlen, "%s", *x);
        }
    }
    return bestd;
}

/* Whether name is CMCP_<SECTION>_<KEY> for a key of one of the sections. */
static bool env_known(const char *name, char **sections, int ns)
{
    char best[160];
    return env_scan(name, sections, ns, 0, best, sizeof(best)) == 0;
}

/* The setting's or extra name closest to name, if it is a likely typo of it (else NULL). */
static const char *env_nearest(const char *name, char **sections, int ns)
{
    static char best[160];
    return env_scan(name, sections, ns, 2, best, sizeof(best)) <= 2 ? best : NULL;
}

/* Applies CMCP_<SECTION>_<KEY> for every key the schema allows in every section present. */
static int load_env(struct cfg *c)
{
    /* Sections: the schema's fixed ones plus every prefixed one (tree.X) loaded so far. */
    int cap = c->n;
    FOREACH_KEY(d)
    {
        cap++;
    }
    char **sections = calloc((size_t)cap + 1, sizeof(char *));
    if (!sections) {
        snprintf(c->err, sizeof(c->err), "out of memory");
        return -1;
    }
    int ns = 0;
    FOREACH_KEY(d)
    {
        size_t sl = strlen(d->section);
        bool seen = sl > 0 && d->section[sl - 1] == '.';
        for (int j = 0; j < ns && !seen; j++)
            seen = strcmp(sections[j], d->section) == 0;
        if (!seen)
            sections[ns++] = strdup(d->section);
    }
    for (int i = 0; i < c->n; i++) {
        bool seen = false;
        for (int j = 0; j < ns && !seen; j++)
            seen = strcmp(sections[j], c->v[i].section) == 0;
        if (!seen)
            sections[ns++] = strdup(c->v[i].section); /* copies: entry_set may move the entries */
    }
    int rc = 0;
    for (int s = 0; s < ns && rc == 0; s++) {
        FOREACH_KEY(d)
        {
            if (rc != 0 || !section_matches(d->section, sections[s]))
                continue;
            char name[160];
            env_name(name, sizeof(name), sections[s], d->key);
            const char *v = getenv(name);
            if (!v)
                continue;
            char buf[256];
            const char *msg = check_value(d, v, buf, sizeof(buf));
            if (msg) {
                snprintf(c->err, sizeof(c->err), "environment variable %s: %s", name, msg);
                rc = -1;
            } else {
                char origin[200];
                snprintf(origin, sizeof(origin), "environment variable %s", name);
                entry_set(c, sections[s], d->key, v, origin, 0);
            }
        }
    }
    /* Every other CMCP_ variable is a typo (in the section or the key, or a [tree.*] section
     * that does not exist) and an error, not silently nothing; only the names of
     * cfg_env_extra are not settings. */
    extern char **environ;
    for (char **e = environ; rc == 0 && e && *e; e++) {
        if (strncmp(*e, "CMCP_", 5) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        int vlen = (int)(eq ? (size_t)(eq - *e) : strlen(*e));
        char var[160];
        snprintf(var, sizeof(var), "%.*s", vlen, *e);
        if (vlen < (int)sizeof(var) && (cfg_env_is_extra(var) || env_known(var, sections, ns)))
            continue;
        char hint[200] = "";
        const char *near = env_nearest(var, sections, ns);
        if (near)
            snprintf(hint, sizeof(hint), " (did you mean %s?)", near);
        snprintf(c->err, sizeof(c->err),
                 "environment variable %s names no setting%s: a setting is "
                 "CMCP_<SECTION>_<KEY> for a key of docs/configuration.md (e.g. "
                 "CMCP_LISTENER_HTTP_PORT), and a [tree.NAME] section must exist in the file or "
                 "the defaults; correct or unset it",
                 var, hint);
        rc = -1;
    }
    for (int s = 0; s < ns; s++)
        free(sections[s]);
    free(sections);
    return rc;
}

int cfg_load(struct cfg *c, const char *path)
{
    memset(c, 0, sizeof(*c));
    if (cfg_load_string(c, cmcp_default_config, "embedded defaults") != 0)
        return -1;
    if (path) {
        c->path = strdup(path);
        if (load_file(c, path) != 0)
            return -1;
    }
    return load_env(c);
}

void cfg_free(struct cfg *c)
{
    for (int i = 0; i < c->n; i++) {
        free(c->v[i].section);
        free(c->v[i].key);
        free(c->v[i].value);
        free(c->v[i].origin);
    }
    free(c->v);
    free(c->path);
    memset(c, 0, sizeof(*c));
}

const struct cfg_entry *cfg_find(const struct cfg *c, const char *section, const char *key)
{
    return entry_find((struct cfg *)c, section, key);
}

const char *cfg_get(const struct cfg *c, const char *section, const char *key, const char *dflt)
{
    const struct cfg_entry *e = cfg_find(c, section, key);
    return e ? e->value : dflt;
}

long cfg_get_long(const struct cfg *c, const char *section, const char *key, long dflt)
{
    const struct cfg_entry *e = cfg_find(c, section, key);
    long v;
    return e && parse_long(e->value, &v) ? v : dflt;
}

bool cfg_get_bool(const struct cfg *c, const char *section, const char *key, bool dflt)
{
    const struct cfg_entry *e = cfg_find(c, section, key);
    if (!e)
        return dflt;
    return strcmp(e->value, "true") == 0 || strcmp(e->value, "yes") == 0 ||
           strcmp(e->value, "1") == 0;
}

bool cfg_has_section(const struct cfg *c, const char *section)
{
    for (int i = 0; i < c->n; i++)
        if (strcmp(c->v[i].section, section) == 0)
            return true;
    return false;
}

int cfg_split_list(const char *value, char items[][64], int max)
{
    int n = 0;
    const char *p = value;
    while (*p && n < max) {
        while (*p == ',' || isspace((unsigned char)*p))
            p++;
        if (!*p)
            break;
        size_t len = 0;
        while (p[len] && p[len] != ',' && !isspace((unsigned char)p[len]))
            len++;
        if (len > 63)
            len = 63;
        memcpy(items[n], p, len);
        items[n][len] = '\0';
        n++;
        p += len;
        while (*p && *p != ',' && !isspace((unsigned char)*p))
            p++;
    }
    return n;
}

int cfg_split_args(const char *line, char **argv, int max)
{
    int n = 0;
    const char *p = line;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        if (n == max) {
            for (int i = 0; i < n; i++)
                free(argv[i]);
            return -1;
        }
        char *buf = malloc(strlen(p) + 1), *o = buf;
        char quote = 0;
        while (*p && (quote || (*p != ' ' && *p != '\t'))) {
            if (quote && *p == quote)
                quote = 0;
            else if (!quote && (*p == '\'' || *p == '"'))
                quote = *p;
            else
                *o++ = *p;
            p++;
        }
        *o = '\0';
        if (quote) {
            free(buf);
            for (int i = 0; i < n; i++)
                free(argv[i]);
            return -1;
        }
        argv[n++] = buf;
    }
    argv[n] = NULL;
    return n;
}
