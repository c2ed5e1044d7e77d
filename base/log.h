/*
 * Structured logs on stderr: one JSON object a line, or, for a person at a
 * terminal, one line of text.
 *
 * Every JSON line carries ts, level, node, role, id, pid and event; the caller
 * adds its own fields with a jansson pack format, e.g.
 *   log_info("child_started", "{s:s,s:i}", "child", id, "child_pid", pid);
 * The text line is "12:00:01.123 info    listener-0   listener_ready http_port=8080 ...":
 * local time, level, the process's id, the event and its fields as key=value.
 * A field named "msg" replaces the event and the other fields in text (the one
 * line a person reads at ready); JSON keeps them all.
 *
 * The format is [node] log_format: auto (text when stderr is a terminal, else
 * JSON: what pipes, files and the tests read), json or text.
 */
#ifndef CMCP_LOG_H
#define CMCP_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_NOTICE, LOG_WARNING, LOG_ERROR };

/* Names this process in every line it logs. Strings are copied. */
void log_init(const char *node, const char *role, const char *id);
void log_set_level(enum log_level min);

enum log_format { LOG_FORMAT_AUTO = 0, LOG_FORMAT_JSON, LOG_FORMAT_TEXT };
/* auto resolves here: text if stderr is a terminal. */
void log_set_format(enum log_format f);
int log_format_parse(const char *s, enum log_format *out);
/* Whether lines are text (for a person) rather than JSON. */
int log_is_text(void);
int log_level_parse(const char *s, enum log_level *out);
const char *log_level_name(enum log_level l);

/* fmt may be NULL for no extra fields. Never fails visibly. */
void log_event(enum log_level level, const char *event, const char *fmt, ...);

#define log_debug(ev, ...) log_event(LOG_DEBUG, ev, __VA_ARGS__)
#define log_info(ev, ...) log_event(LOG_INFO, ev, __VA_ARGS__)
#define log_notice(ev, ...) log_event(LOG_NOTICE, ev, __VA_ARGS__)
#define log_warn(ev, ...) log_event(LOG_WARNING, ev, __VA_ARGS__)
#define log_error(ev, ...) log_event(LOG_ERROR, ev, __VA_ARGS__)

#endif
