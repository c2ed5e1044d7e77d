#include "supervisor/spec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *strategy_names[] = {"one_for_one", "one_for_all", "rest_for_one",
                                       "simple_one_for_one"};
static const char *restart_names[] = {"permanent", "transient", "temporary"};

const char *sup_strategy_name(enum sup_strategy s)
{
    return strategy_names[s];
}

const char *sup_restart_name(enum sup_restart r)
{
    return restart_names[r];
}

int sup_restart_parse(const char *s, enum sup_restart *out)
{
    for (int i = 0; i < 3; i++)
        if (strcmp(s, restart_names[i]) == 0) {
            *out = (enum sup_restart)i;
            return 0;
        }
    return -1;
}

int sup_shutdown_parse(const char *s, long *out)
{
    if (strcmp(s, "brutal_kill") == 0) {
        *out = SUP_SHUTDOWN_BRUTAL;
        return 0;
    }
    if (strcmp(s, "infinity") == 0) {
        *out = SUP_SHUTDOWN_INFINITY;
        return 0;
    }
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < 0)
        return -1;
    *out = v;
    return 0;
}

void sup_child_spec_free(struct child_spec *cs)
{
    for (int i = 0; i < cs->argc; i++)
        free(cs->argv[i]);
    cs->argc = 0;
    cs->argv[0] = NULL;
}

int sup_child_spec_copy(struct child_spec *dst, const struct child_spec *src)
{
    *dst = *src;
    for (int i = 0; i < src->argc; i++)
        dst->argv[i] = strdup(src->argv[i]);
    dst->argv[src->argc] = NULL;
    return 0;
}

void sup_spec_free(struct sup_spec *s)
{
    for (int i = 0; i < s->nchildren; i++)
        sup_child_spec_free(&s->children[i]);
    if (s->has_template)
        sup_child_spec_free(&s->tmpl);
    s->nchildren = 0;
}

static char *section_of(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "tree.%s", name);
    return buf;
}

/* Keys that only mean something for one type of node: a misplaced one is an error. */
static const char *const sup_only_keys[] = {"strategy", "intensity", "period", "children",
                                            "auto_shutdown", "backoff_min", "backoff_max",
                                            "backoff_stable"};
static const char *const worker_only_keys[] = {"args", "ready", "count", "watchdog"};

static int check_keys_for_type(struct cfg *c, const char *sec, enum sup_ctype type)
{
    if (type == SUP_WORKER) {
        for (size_t i = 0; i < sizeof(sup_only_keys) / sizeof(sup_only_keys[0]); i++) {
            const struct cfg_entry *e = cfg_find(c, sec, sup_only_keys[i]);
            if (e)
                return cfg_errorf(c, e, "'%s' applies to supervisors only; this section is a "
                                        "worker (add type = supervisor if it is meant to supervise)",
                                  sup_only_keys[i]);
        }
        return 0;
    }
    for (size_t i = 0; i < sizeof(worker_only_keys) / sizeof(worker_only_keys[0]); i++) {
        const struct cfg_entry *e = cfg_find(c, sec, worker_only_keys[i]);
        if (e)
            return cfg_errorf(c, e, "'%s' applies to workers only; this section is a supervisor",
                              worker_only_keys[i]);
    }
    const struct cfg_entry *role = cfg_find(c, sec, "role");
    if (role && strcmp(role->value, "supervisor") != 0)
        return cfg_errorf(c, role, "a supervisor's role is always 'supervisor'");
    return 0;
}

int sup_child_from_cfg(struct cfg *c, const char *name, struct child_spec *cs,
                       sup_role_known_fn role_known)
{
    char sec[80];
    section_of(sec, sizeof(sec), name);
    memset(cs, 0, sizeof(*cs));
    snprintf(cs->id, sizeof(cs->id), "%s", name);
    snprintf(cs->section, sizeof(cs->section), "%s", name);
    cs->index = -1;
    const char *type = cfg_get(c, sec, "type", "worker");
    cs->type = strcmp(type, "supervisor") == 0 ? SUP_SUPERVISOR : SUP_WORKER;
    sup_restart_parse(cfg_get(c, sec, "restart", "permanent"), &cs->restart);
    /* OTP: infinity for supervisors, 5000 ms for workers. */
    const char *sd = cfg_get(c, sec, "shutdown", cs->type == SUP_SUPERVISOR ? "infinity" : "5000");
    sup_shutdown_parse(sd, &cs->shutdown_ms);
    const char *st = cfg_get(c, sec, "start_timeout", cs->type == SUP_SUPERVISOR ? "infinity" : "5000");
    cs->start_timeout_ms = strcmp(st, "infinity") == 0 ? -1 : atol(st);
    cs->significant = cfg_get_bool(c, sec, "significant", false);
    if (cs->significant && cs->restart == SUP_PERMANENT)
        /* OTP: {bad_combination, [{restart, permanent}, {significant, true}]} */
        return cfg_errorf(c, cfg_find(c, sec, "significant"),
                          "a significant child must be transient or temporary (restart is %s)",
                          sup_restart_name(cs->restart));
    if (check_keys_for_type(c, sec, cs->type) != 0)
        return -1;

    const struct cfg_entry *ex = cfg_find(c, sec, "exec");
    const struct cfg_entry *args = cfg_find(c, sec, "args");
    const struct cfg_entry *role = cfg_find(c, sec, "role");
    if (ex) {
        if (cs->type == SUP_SUPERVISOR)
            return cfg_errorf(c, ex, "a supervisor is always cmcpd itself; drop 'exec'");
        if (role || args)
            return cfg_errorf(c, ex, "give either exec (a whole command) or role/args, not both");
        cs->is_exec = true;
        cs->argc = cfg_split_args(ex->value, cs->argv, SUP_MAX_ARGS);
        if (cs->argc <= 0)
            return cfg_errorf(c, ex, "empty command or unbalanced quotes");
        cs->ready_by_exec = true;
    } else {
        if (cs->type == SUP_SUPERVISOR) {
            snprintf(cs->role, sizeof(cs->role), "supervisor");
        } else {
            snprintf(cs->role, sizeof(cs->role), "%s", role ? role->value : name);
            if (role_known && !role_known(cs->role)) {
                if (role)
                    return cfg_errorf(c, role, "unknown role '%s' (cmcpd --help lists the roles)",
                                      cs->role);
                /* Without a role key the section's name is the role; find a line to blame. */
                const struct cfg_entry *any = NULL;
                for (int i = 0; i < c->n && !any; i++)
                    if (strcmp(c->v[i].section, sec) == 0)
                        any = &c->v[i];
                if (any)
                    return cfg_errorf(c, any,
                                      "[%s] has no role (nor exec), and '%s' is not a cmcpd role "
                                      "(cmcpd --help lists the roles)",
                                      sec, name);
                snprintf(c->err, sizeof(c->err),
                         "child '%s' has no [%s] section, and '%s' is not a cmcpd role "
                         "(cmcpd --help lists the roles)",
                         name, sec, name);
                return -1;
            }
        }
        if (args) {
            cs->argc = cfg_split_args(args->value, cs->argv, SUP_MAX_ARGS);
            if (cs->argc < 0)
                return cfg_errorf(c, args, "unbalanced quotes or more than %d arguments",
                                  SUP_MAX_ARGS);
        }
    }
    const struct cfg_entry *ready = cfg_find(c, sec, "ready");
    if (ready)
        cs->ready_by_exec = strcmp(ready->value, "exec") == 0;
    const struct cfg_entry *wd = cfg_find(c, sec, "watchdog");
    if (wd && strcmp(wd->value, "off") != 0 && (cs->is_exec || cs->ready_by_exec)) {
        int rc = cfg_errorf(c, wd, "a watchdog needs a cmcpd role that beats on its readiness "
                                   "fd; this child is %s",
                            cs->is_exec ? "a foreign program (exec)" : "ready by exec");
        sup_child_spec_free(cs);
        return rc;
    }
    if (wd)
        cs->watchdog_ms = strcmp(wd->value, "off") == 0 ? 0 : atol(wd->value);
    else if (cs->type == SUP_WORKER && !cs->is_exec && !cs->ready_by_exec)
        cs->watchdog_ms = sup_watchdog_default(cs->role);
    return 0;
}

long sup_watchdog_default(const char *role)
{
    static const char *const watched[] = {"listener", "shard", "cluster_monitor",
                                          "split_brain_detector", "failover_manager"};
    for (size_t i = 0; i < sizeof(watched) / sizeof(watched[0]); i++)
        if (role && strcmp(role, watched[i]) == 0)
            return 10000;
    return 0;
}

int sup_spec_from_cfg(struct cfg *c, const char *name, struct sup_spec *s,
                      sup_role_known_fn role_known)
{
    char sec[80];
    section_of(sec, sizeof(sec), name);
    memset(s, 0, sizeof(*s));
    snprintf(s->name, sizeof(s->name), "%s", name);
    if (!cfg_has_section(c, sec)) {
        snprintf(c->err, sizeof(c->err), "no [%s] section describes supervisor '%s'", sec, name);
        return -1;
    }
    const char *type = cfg_get(c, sec, "type", "supervisor");
    if (strcmp(type, "supervisor") != 0)
        return cfg_errorf(c, cfg_find(c, sec, "type"), "'%s' is started as a supervisor, so its "
                                                        "type must be supervisor",
                          name);
    const char *strat = cfg_get(c, sec, "strategy", "one_for_one");
    for (int i = 0; i < 4; i++)
        if (strcmp(strat, strategy_names[i]) == 0)
            s->strategy = (enum sup_strategy)i;
    /* OTP's defaults: intensity 1 in 5 seconds. */
    s->intensity = (int)cfg_get_long(c, sec, "intensity", 1);
    s->period_s = (int)cfg_get_long(c, sec, "period", 5);
    const char *as = cfg_get(c, sec, "auto_shutdown", "never");
    s->auto_shutdown = strcmp(as, "any_significant") == 0   ? SUP_AUTO_ANY
                       : strcmp(as, "all_significant") == 0 ? SUP_AUTO_ALL
                                                            : SUP_AUTO_NEVER;
    s->backoff_min_ms = cfg_get_long(c, sec, "backoff_min", 0);
    s->backoff_max_ms = cfg_get_long(c, sec, "backoff_max", s->backoff_min_ms * 64);
    s->backoff_stable_ms = cfg_get_long(c, sec, "backoff_stable", 10000);
    s->max_children = (int)cfg_get_long(c, sec, "max_children", 0);
    const struct cfg_entry *bmax = cfg_find(c, sec, "backoff_max");
    if (bmax && s->backoff_max_ms < s->backoff_min_ms)
        return cfg_errorf(c, bmax, "backoff_max is below backoff_min");
    if (check_keys_for_type(c, sec, SUP_SUPERVISOR) != 0)
        return -1;
    if (s->strategy == SUP_SIMPLE_ONE_FOR_ONE && s->auto_shutdown != SUP_AUTO_NEVER)
        /* OTP 27 rejects this combination too: dynamic children come and go by design. */
        return cfg_errorf(c, cfg_find(c, sec, "auto_shutdown"),
                          "auto_shutdown must be never for a simple_one_for_one supervisor");

    const struct cfg_entry *ch = cfg_find(c, sec, "children");
    static char names[SUP_MAX_CHILDREN][64];
    int n = ch ? cfg_split_list(ch->value, names, SUP_MAX_CHILDREN) : 0;
    for (int i = 0; i < n; i++) {
        char csec[80];
        section_of(csec, sizeof(csec), names[i]);
        if (!cfg_has_section(c, csec) && (!role_known || !role_known(names[i])))
            return cfg_errorf(c, ch,
                              "child '%s' has no [%s] section, and '%s' is not a cmcpd role "
                              "(cmcpd --help lists the roles)",
                              names[i], csec, names[i]);
    }
    if (s->strategy == SUP_SIMPLE_ONE_FOR_ONE) {
        if (n != 1)
            return cfg_errorf(c, ch ? ch : cfg_find(c, sec, "strategy"),
                              "simple_one_for_one takes exactly one child: the template");
        if (sup_child_from_cfg(c, names[0], &s->tmpl, role_known) != 0)
            return -1;
        s->has_template = true;
        if (s->tmpl.type == SUP_SUPERVISOR)
            /* Every instance would claim the same control socket, sup-NAME.sock. */
            return cfg_errorf(c, ch, "the template of a simple_one_for_one supervisor must be a "
                                     "worker");
        char tsec[80];
        section_of(tsec, sizeof(tsec), names[0]);
        if (s->tmpl.significant)
            return cfg_errorf(c, cfg_find(c, tsec, "significant"),
                              "significant children need auto_shutdown, which simple_one_for_one "
                              "does not take");
        return 0;
    }
    for (int i = 0; i < n; i++) {
        char csec[80];
        section_of(csec, sizeof(csec), names[i]);
        if (strcmp(names[i], name) == 0)
            return cfg_errorf(c, ch, "supervisor '%s' lists itself as a child", name);
        long count = cfg_get_long(c, csec, "count", 1);
        struct child_spec base;
        if (sup_child_from_cfg(c, names[i], &base, role_known) != 0)
            return -1;
        if (count != 1 && base.type == SUP_SUPERVISOR) {
            sup_child_spec_free(&base);
            return cfg_errorf(c, cfg_find(c, csec, "count"), "count applies to workers only");
        }
        for (long k = 0; k < count; k++) {
            if (s->nchildren == SUP_MAX_CHILDREN) {
                sup_child_spec_free(&base);
                return cfg_errorf(c, ch, "more than %d children", SUP_MAX_CHILDREN);
            }
            struct child_spec *cs = &s->children[s->nchildren++];
            sup_child_spec_copy(cs, &base);
            /* A replicated worker is NAME-0 .. NAME-N-1 whenever count is given, so that
             * `count = 1` still names listener-0 and shard-0 as a larger count would. */
            if (cfg_find(c, csec, "count")) {
                snprintf(cs->id, sizeof(cs->id), "%s-%ld", names[i], k);
                cs->index = (int)k;
            }
        }
        sup_child_spec_free(&base);
    }
    /* OTP rejects significant children when auto_shutdown is never. */
    for (int i = 0; i < s->nchildren; i++)
        if (s->children[i].significant && s->auto_shutdown == SUP_AUTO_NEVER) {
            char csec[80];
            section_of(csec, sizeof(csec), s->children[i].section);
            return cfg_errorf(c, cfg_find(c, csec, "significant"),
                              "significant children need auto_shutdown = any_significant or "
                              "all_significant in [%s]",
                              sec);
        }
    /* Ids are unique within a supervisor, as in OTP. */
    for (int i = 0; i < s->nchildren; i++)
        for (int j = 0; j < i; j++)
            if (strcmp(s->children[i].id, s->children[j].id) == 0)
                return cfg_errorf(c, ch, "child id '%s' appears twice", s->children[i].id);
    return 0;
}

/*
 * A supervisor section may appear once in the tree: it is one process with
 * one control socket (this also rules out cycles).
 */
int sup_tree_check(struct cfg *c, FILE *out, sup_role_known_fn role_known)
{
    struct sup_spec *sp = calloc(1, sizeof(*sp));
    static char names[SUP_MAX_CHILDREN][64], parents[SUP_MAX_CHILDREN][64];
    int n = 0, done = 0, rc = 0;
    if (!sp) {
        snprintf(c->err, sizeof(c->err), "out of memory");
        return -1;
    }
    snprintf(names[n], sizeof(names[n]), "root");
    parents[n++][0] = '\0';
    while (done < n && rc == 0) {
        if (sup_spec_from_cfg(c, names[done], sp, role_known) != 0) {
            rc = -1;
            break;
        }
        if (out)
            fprintf(out, "%s: %s, intensity %d in %d s\n", names[done],
                    sup_strategy_name(sp->strategy), sp->intensity, sp->period_s);
        for (int i = 0; i < sp->nchildren && rc == 0; i++) {
            struct child_spec *cs = &sp->children[i];
            if (out)
                fprintf(out, "  %s (%s, %s)\n", cs->id,
                        cs->type == SUP_SUPERVISOR ? "supervisor"
                        : cs->is_exec              ? cs->argv[0]
                                                   : cs->role,
                        sup_restart_name(cs->restart));
            if (cs->type != SUP_SUPERVISOR)
                continue;
            for (int k = 0; k < n; k++)
                if (strcmp(names[k], cs->section) == 0) {
                    char sec[80];
                    snprintf(sec, sizeof(sec), "tree.%s", names[done]);
                    rc = cfg_errorf(c, cfg_find(c, sec, "children"),
                                    "supervisor '%s' is already in the tree%s%s%s; a supervisor "
                                    "section starts one process, so it may appear only once",
                                    cs->section, parents[k][0] ? " (under '" : "",
                                    parents[k][0] ? parents[k] : "",
                                    parents[k][0] ? "')" : " (it is the root)");
                    break;
                }
            if (rc == 0 && n == SUP_MAX_CHILDREN) {
                snprintf(c->err, sizeof(c->err), "more than %d supervisors in the tree",
                         SUP_MAX_CHILDREN);
                rc = -1;
            }
            if (rc == 0) {
                snprintf(names[n], sizeof(names[n]), "%s", cs->section);
                snprintf(parents[n], sizeof(parents[n]), "%s", names[done]);
                n++;
            }
        }
        if (out && sp->has_template)
            fprintf(out, "  template %s (%s, %s)\n", sp->tmpl.id,
                    sp->tmpl.is_exec ? sp->tmpl.argv[0] : sp->tmpl.role,
                    sup_restart_name(sp->tmpl.restart));
        sup_spec_free(sp);
        done++;
    }
    free(sp);
    return rc;
}
