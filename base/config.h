/*
 * Node configuration: INI (libinih) layered as
 *   embedded defaults (configs/default.conf) < the file given with -c < CMCP_* environment.
 *
 * Every key is declared in a schema that each module owns (a cfg_key array
 * beside its code, added by the binary with cfg_schema_add); an unknown
 * section or key, or a value of the wrong type or out of range, is an error
 * that names the file and line (or the environment variable) and what is
 * wrong. The node refuses to start on one.
 *
 * Environment overrides: CMCP_<SECTION>_<KEY>, upper case, '.' and '-' as '_'
 * (e.g. CMCP_TOOLS_PACKS, CMCP_NODE_RUN_DIR, CMCP_TREE_SHARD_COUNT); any other CMCP_
 * variable, but for the few of cfg_env_is_extra, is refused by name.
 */
#ifndef CMCP_CONFIG_H
#define CMCP_CONFIG_H

#include <stdbool.h>
#include <stdio.h>
#include <stddef.h>

enum cfg_type {
    CFG_STR,
    CFG_INT,  /* a whole number in [min, max] */
    CFG_BOOL, /* true/false, yes/no, 1/0 */
    CFG_LIST, /* items separated by commas and/or blanks */
    CFG_ENUM, /* one of choices ('|' separated) */
    CFG_MS,   /* milliseconds in [min, max], or one of choices */
};

struct cfg_key {
    const char *section; /* exact name, or a prefix ending in '.' such as "tree." */
    const char *key;
    enum cfg_type type;
    const char *choices;
    long min, max;
};

/* Adds a module's keys (an array ending with a NULL section) to the schema every load checks. */
void cfg_schema_add(const struct cfg_key *keys);
void cfg_schema_clear(void);
/* Every key the schema knows, one a line: "[section] key: type range-or-choices". */
void cfg_schema_print(FILE *f);

struct cfg_entry {
    char *section;
    char *key;
    char *value;
    char *origin; /* file name, "embedded defaults" or "environment" */
    int line;     /* 0 for the environment */
};

struct cfg {
    struct cfg_entry *v;
    int n, cap;
    char *path; /* the file given with -c, or NULL */
    char err[512];
};

/*
 * Whether name is one of the CMCP_ variables that are not settings (CMCP_LOG_LEVEL,
 * CMCP_COOKIE_FILE, those the node sets for its own processes and the test harness's;
 * docs/configuration.md): any other CMCP_ variable that names no setting is refused.
 */
bool cfg_env_is_extra(const char *name);
/* Those names, ending with NULL (cmcpd --config-env lists them). */
extern const char *const cfg_env_extra[];

/* Loads defaults, then path (may be NULL), then the environment. 0 or -1 with c->err set. */
int cfg_load(struct cfg *c, const char *path);
/* Parses one INI text as a layer (used by cfg_load and by tests). */
int cfg_load_string(struct cfg *c, const char *text, const char *origin);
void cfg_free(struct cfg *c);

const struct cfg_entry *cfg_find(const struct cfg *c, const char *section, const char *key);
const char *cfg_get(const struct cfg *c, const char *section, const char *key, const char *dflt);
long cfg_get_long(const struct cfg *c, const char *section, const char *key, long dflt);
bool cfg_get_bool(const struct cfg *c, const char *section, const char *key, bool dflt);
bool cfg_has_section(const struct cfg *c, const char *section);

/* Formats "origin:line: [section] key: msg" for an entry into c->err and returns -1. */
int cfg_errorf(struct cfg *c, const struct cfg_entry *e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Splits a list value (commas and/or spaces) into at most max items; returns the count. */
int cfg_split_list(const char *value, char items[][64], int max);

/*
 * Splits a command line on blanks, honouring '...' and "..." quotes, into at
 * most max malloc'd strings and a NULL. The count, or -1 on bad quoting or too many.
 */
int cfg_split_args(const char *line, char **argv, int max);

/* The base layer's own keys: [node]. */
extern const struct cfg_key base_cfg_keys[];

/* The embedded default configuration text (generated from configs/default.conf). */
extern const char cmcp_default_config[];

#endif
