/* The node control broadcast, subscriber side and state file (control.h). */
#define _GNU_SOURCE
#include "ipc/control.h"

#include <errno.h>
#include <fcntl.h>
#include <nng/nng.h>
#include <nng/protocol/pubsub0/sub.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ipc/addr.h"
#include "ipc/ipc.h"
#include "base/log.h"

static struct {
    struct ev_loop *loop;
    nng_socket sub;
    struct ipc_keep keep; /* the dial to the control publisher */
    char run_dir[512];
    bool open;
    ev_io w;
    control_fn cb;
    bool draining;
    char level[16];
} C;

static void state_path(char *buf, size_t len, const char *run_dir)
{
    snprintf(buf, len, "%s/control.state", run_dir);
}

/* The root's pid names this run of the node (cmcpd sets CMCP_ROOT_PID for its tree). */
static long root_pid(void)
{
    const char *p = getenv("CMCP_ROOT_PID");
    return p ? atol(p) : 0;
}

/* This start of the node: random at each start of the root. Its pid alone does not tell
 * starts apart where pids repeat (a container's root is the same pid every time). */
static const char *incarnation(void)
{
    const char *p = getenv("CMCP_INCARNATION");
    return p ? p : "";
}

int control_state_write(const char *run_dir, bool drain, const char *log_level)
{
    char path[600], tmp[620];
    state_path(path, sizeof(path), run_dir);
    snprintf(tmp, sizeof(tmp), "%s.%d", path, (int)getpid());
    json_t *o = json_pack("{s:b,s:I,s:s}", "drain", drain, "root_pid", (json_int_t)root_pid(),
                          "incarnation", incarnation());
    json_object_set_new(o, "log_level", log_level ? json_string(log_level) : json_null());
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!text)
        return -1;
    int rc = -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
        size_t n = strlen(text);
        bool ok = write(fd, text, n) == (ssize_t)n;
        ok = close(fd) == 0 && ok;
        /* rename: a reader sees the old state or the new one, never half of one. */
        rc = ok && rename(tmp, path) == 0 ? 0 : -1;
        if (rc != 0)
            unlink(tmp);
    }
    if (rc != 0)
        log_warn("control_state_write_failed", "{s:s,s:s}", "path", path, "error",
                 strerror(errno));
    free(text);
    return rc;
}

json_t *control_state_read(const char *run_dir)
{
    char path[600];
    state_path(path, sizeof(path), run_dir);
    json_t *o = json_load_file(path, 0, NULL);
    const char *inc = json_string_value(json_object_get(o, "incarnation"));
    if (!json_is_object(o) || json_integer_value(json_object_get(o, "root_pid")) != root_pid() ||
        strcmp(inc ? inc : "", incarnation()) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* Applies a message; tells the callback what changed. */
static void apply(const json_t *msg)
{
    const char *op = json_string_value(json_object_get(msg, "op"));
    if (!op)
        return;
    int drain = -1;
    const char *level = NULL;
    if (strcmp(op, "drain") == 0)
        drain = 1;
    else if (strcmp(op, "undrain") == 0)
        drain = 0;
    else if (strcmp(op, "log_level") == 0)
        level = json_string_value(json_object_get(msg, "level"));
    else if (strcmp(op, "state") == 0) {
        json_t *d = json_object_get(msg, "drain");
        if (json_is_boolean(d))
            drain = json_is_true(d);
        level = json_string_value(json_object_get(msg, "log_level"));
    } else {
        return;
    }
    if (drain >= 0 && (bool)drain != C.draining) {
        C.draining = drain;
        log_notice(drain ? "node_draining" : "node_undrained", NULL);
        if (C.cb) {
            json_t *m = json_pack("{s:s}", "op", drain ? "drain" : "undrain");
            C.cb(drain ? "drain" : "undrain", m);
            json_decref(m);
        }
    }
    enum log_level l;
    if (level && strcmp(level, C.level) != 0 && log_level_parse(level, &l) == 0) {
        snprintf(C.level, sizeof(C.level), "%s", level);
        log_set_level(l);
        log_notice("log_level_set", "{s:s}", "level", level);
        if (C.cb) {
            json_t *m = json_pack("{s:s,s:s}", "op", "log_level", "level", level);
            C.cb("log_level", m);
            json_decref(m);
        }
    }
}

static void sub_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    for (int n = 0; n < 64 && C.open; n++) {
        char *buf = NULL;
        size_t len = 0;
        if (nng_recv(C.sub, &buf, &len, NNG_FLAG_ALLOC | NNG_FLAG_NONBLOCK) != 0)
            return;
        json_t *msg = json_loadb(buf, len, 0, NULL);
        nng_free(buf, len);
        if (json_is_object(msg))
            apply(msg);
        json_decref(msg);
    }
}

/* Applies what RUN/control.state says (an order may have gone out while we were not connected). */
static void resync(void *arg)
{
    (void)arg;
    json_t *st = control_state_read(C.run_dir);
    if (st) {
        json_object_set_new(st, "op", json_string("state"));
        apply(st);
        json_decref(st);
    }
}

int control_subscribe(struct ev_loop *loop, const char *run_dir, control_fn cb)
{
    if (C.open)
        return 0;
    C.loop = loop;
    C.cb = cb;
    snprintf(C.run_dir, sizeof(C.run_dir), "%s", run_dir);
    char addr[512];
    ipc_addr_control(addr, sizeof(addr), run_dir);
    int rv, fd;
    if ((rv = nng_sub0_open(&C.sub)) != 0) {
        log_warn("control_subscribe_failed", "{s:s,s:s}", "error", nng_strerror(rv), "effect",
                 "drain and log_level orders will not reach this process");
        return -1;
    }
    nng_socket_set(C.sub, NNG_OPT_SUB_SUBSCRIBE, "", 0);
    ipc_socket_tune(C.sub);
    if ((rv = nng_socket_get_int(C.sub, NNG_OPT_RECVFD, &fd)) != 0 ||
        (rv = ipc_keep_dial(&C.keep, loop, C.sub, addr, resync, NULL)) != 0) {
        log_warn("control_subscribe_failed", "{s:s,s:s,s:s}", "address", addr, "error",
                 nng_strerror(rv), "effect",
                 "drain and log_level orders will not reach this process");
        nng_close(C.sub);
        return -1;
    }
    C.open = true;
    ev_io_init(&C.w, sub_cb, fd, EV_READ);
    ev_io_start(loop, &C.w);
    ev_unref(loop); /* a subscription alone does not keep a loop running */
    resync(NULL);
    return 0;
}

void control_unsubscribe(void)
{
    if (!C.open)
        return;
    C.open = false;
    ev_ref(C.loop);
    ev_io_stop(C.loop, &C.w);
    ipc_keep_stop(&C.keep);
    nng_close(C.sub);
}

bool control_draining(void)
{
    return C.draining;
}
