/*
 * Child and supervisor specifications, as OTP's child_spec() and sup_flags(),
 * built from the [tree.NAME] sections of the configuration.
 */
#ifndef CMCP_SUP_SPEC_H
#define CMCP_SUP_SPEC_H

#if !defined(CMCP_LAYER_SUPERVISOR) && !defined(CMCP_LAYER_NODE)
#error "supervisor headers are for the supervisor and the node binary: workers reach supervisors over IPC (../shared/design/layers.md)"
#endif

#include <stdbool.h>
#include <stdio.h>

#include "base/config.h"

enum sup_strategy { SUP_ONE_FOR_ONE, SUP_ONE_FOR_ALL, SUP_REST_FOR_ONE, SUP_SIMPLE_ONE_FOR_ONE };
enum sup_restart { SUP_PERMANENT, SUP_TRANSIENT, SUP_TEMPORARY };
enum sup_ctype { SUP_WORKER, SUP_SUPERVISOR };
enum sup_auto_shutdown { SUP_AUTO_NEVER, SUP_AUTO_ANY, SUP_AUTO_ALL };

#define SUP_SHUTDOWN_BRUTAL (-1L)
#define SUP_SHUTDOWN_INFINITY (-2L)
#define SUP_MAX_ARGS 32
#define SUP_MAX_CHILDREN 512

struct child_spec {
    char id[64];
    char section[64]; /* the [tree.X] section it came from */
    char role[32];    /* cmcpd role, or "" when exec is set */
    char *argv[SUP_MAX_ARGS + 1]; /* exec: the command; cmcpd role: extra args. NULL-terminated. */
    int argc;
    int index; /* replica index when count > 1, else -1 */
    enum sup_restart restart;
    long shutdown_ms; /* >= 0, SUP_SHUTDOWN_BRUTAL or SUP_SHUTDOWN_INFINITY */
    long start_timeout_ms; /* < 0: infinity */
    long watchdog_ms;      /* > 0: killed and restarted after this long without a beat */
    bool ready_by_exec;    /* ready as soon as exec succeeds (foreign programs) */
    bool is_exec;          /* argv is a whole command, not cmcpd args */
    enum sup_ctype type;
    bool significant;
    char group[64]; /* dynamic children: start_child may cap how many of a group run */
};

struct sup_spec {
    char name[64];
    enum sup_strategy strategy;
    int intensity;
    int period_s;
    enum sup_auto_shutdown auto_shutdown;
    long backoff_min_ms, backoff_max_ms, backoff_stable_ms;
    int max_children; /* start_child refuses past this many (0: SUP_MAX_CHILDREN) */
    struct child_spec children[SUP_MAX_CHILDREN];
    int nchildren;
    struct child_spec tmpl; /* simple_one_for_one template */
    bool has_template;
};

/* A predicate the binary supplies: does cmcpd have this worker role? */
typedef bool (*sup_role_known_fn)(const char *role);

/* Builds the spec of supervisor `name` from c. 0, or -1 with c->err naming file:line. */
int sup_spec_from_cfg(struct cfg *c, const char *name, struct sup_spec *out,
                      sup_role_known_fn role_known);

/* Builds one child spec from section `name`; used for config and for start_child. */
int sup_child_from_cfg(struct cfg *c, const char *name, struct child_spec *out,
                       sup_role_known_fn role_known);

void sup_child_spec_free(struct child_spec *cs);
int sup_child_spec_copy(struct child_spec *dst, const struct child_spec *src);
void sup_spec_free(struct sup_spec *s);

/*
 * Checks every supervisor of the tree under [tree.root] before anything
 * starts, so that an error in a nested section is a configuration error
 * (file:line) and not a failed start. With out != NULL, prints the tree.
 * 0, or -1 with c->err set.
 */
int sup_tree_check(struct cfg *c, FILE *out, sup_role_known_fn role_known);

/* The tree's configuration keys ([tree.NAME]). */
extern const struct cfg_key sup_cfg_keys[];

const char *sup_strategy_name(enum sup_strategy s);
const char *sup_restart_name(enum sup_restart r);
int sup_restart_parse(const char *s, enum sup_restart *out);
int sup_shutdown_parse(const char *s, long *out);
/* The watchdog a cmcpd role has when its section says nothing: 10 s for the roles that
 * carry MCP traffic or the cluster (listener, shard, the cluster roles), else off (0). */
long sup_watchdog_default(const char *role);

#endif
