/*
 * Node configuration: INI (libinih) layered as
 *   embedded defaults (configs/default.conf) < the file given with -c < CMCP_* environment.
 *
 * Every key is declared in a schema (config.c); an unknown section or key, or a
 * value of the wrong type, is an error that names the file and line (or the
 * environment variable) and what is wrong. The node refuses to start on one.
 *
 * Environment overrides: CMCP_<SECTION>_<KEY>, upper case, '.' and '-' as '_'
 * (e.g. CMCP_TOOLS_PACKS, CMCP_NODE_RUN_DIR, CMCP_TREE_SHARD_COUNT).
 */
#ifndef CMCP_CONFIG_H
#define CMCP_CONFIG_H

#include <stdbool.h>

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

/* The embedded default configuration text (generated from configs/default.conf). */
extern const char cmcp_default_config[];

#endif
