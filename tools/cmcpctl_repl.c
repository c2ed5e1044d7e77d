/*
 * cmcpctl shell: an interactive session with one node over one
 * authenticated connection. Line editing and history come from libedit
 * (history in ~/.cmcpctl_history); Tab completes command names, the words
 * after `session`, and supervisor names. Without a terminal it reads
 * commands line by line from stdin, so it can be scripted.
 */
#define _GNU_SOURCE
#include "tools/cmcpctl.h"

#include <histedit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <wchar.h>

#include "base/cmcp.h"

static char prompt_buf[160];

static char *prompt(EditLine *el)
{
    (void)el;
    return prompt_buf;
}

static void shell_help(void)
{
    ctl_usage_commands(stdout);
    printf("  %-29s %s\n  %-29s %s\n", "help", "this text", "quit, exit (or Ctrl-D)",
           "leave the shell");
}

/* Runs one line; false when the shell should end. *last gets the command's status. */
static bool run_line(Tokenizer *tok, const char *line, int *last)
{
    int argc = 0;
    const char **argv = NULL;
    tok_reset(tok);
    if (tok_str(tok, line, &argc, &argv) != 0) {
        fprintf(stderr, "cmcpctl: unbalanced quotes\n");
        *last = CTL_USAGE;
        return true;
    }
    if (argc == 0)
        return true;
    if (!strcmp(argv[0], "quit") || !strcmp(argv[0], "exit"))
        return false;
    if (!strcmp(argv[0], "help") || !strcmp(argv[0], "?")) {
        shell_help();
        *last = CTL_OK;
        return true;
    }
    char **copy = calloc((size_t)argc + 1, sizeof(char *));
    if (!copy)
        return true;
    for (int i = 0; i < argc; i++)
        copy[i] = (char *)argv[i];
    *last = ctl_run(argc, copy);
    free(copy);
    fflush(stdout);
    return true;
}

/* The candidates for the word being completed (index = its position on the line). */
static const char *const *candidates(int index, const char *prev)
{
    static const char *const session_words[] = {"show", "kill", NULL};
    static const char *const levels[] = {"debug", "info", "notice", "warning", "error", NULL};
    static const char *const shell_words[] = {"quit", "exit", NULL};
    static const char *all[64];
    if (index == 0) {
        int n = 0;
        const char *const *names = ctl_command_names();
        for (int i = 0; names[i] && n < 60; i++)
            all[n++] = names[i];
        for (int i = 0; shell_words[i]; i++)
            all[n++] = shell_words[i];
        all[n] = NULL;
        return all;
    }
    if (index == 1 && !strcmp(prev, "session"))
        return session_words;
    if (index == 1 && !strcmp(prev, "log_level"))
        return levels;
    if (index == 1 && strstr(prev, "_child")) {
        const char **names;
        ctl_known_supervisors(&names);
        return names;
    }
    return NULL;
}

static unsigned char complete(EditLine *el, int ch)
{
    (void)ch;
    const LineInfo *li = el_line(el);
    const char *start = li->cursor;
    while (start > li->buffer && start[-1] != ' ' && start[-1] != '\t')
        start--;
    size_t plen = (size_t)(li->cursor - start);
    /* Which word is this, and the first word of the line. */
    int index = 0;
    char first[64] = "";
    const char *p = li->buffer;
    while (p < start) {
        while (p < start && (*p == ' ' || *p == '\t'))
            p++;
        if (p >= start)
            break;
        const char *w = p;
        while (p < start && *p != ' ' && *p != '\t')
            p++;
        if (index == 0)
            snprintf(first, sizeof(first), "%.*s", (int)(p - w), w);
        index++;
    }
    const char *const *cand = candidates(index, first);
    if (!cand)
        return CC_ERROR;
    const char *match[64];
    int n = 0;
    for (int i = 0; cand[i] && n < 64; i++)
        if (strncmp(cand[i], start, plen) == 0)
            match[n++] = cand[i];
    if (n == 0)
        return CC_ERROR;
    /* The longest prefix all matches share. */
    size_t common = strlen(match[0]);
    for (int i = 1; i < n; i++) {
        size_t k = 0;
        while (k < common && match[i][k] == match[0][k])
            k++;
        common = k;
    }
    if (common > plen) {
        char add[128];
        snprintf(add, sizeof(add), "%.*s%s", (int)(common - plen), match[0] + plen,
                 n == 1 ? " " : "");
        el_insertstr(el, add);
        return CC_REFRESH;
    }
    if (n == 1) {
        el_insertstr(el, " ");
        return CC_REFRESH;
    }
    printf("\n");
    for (int i = 0; i < n; i++)
        printf("%s%s", match[i], i + 1 < n ? "  " : "\n");
    return CC_REDISPLAY;
}

/* Lines from a pipe or a file: every line runs; the status is the first failed line's, so
 * that a script's caller sees a failure (and the count of them on stderr). */
static int shell_plain(void)
{
    Tokenizer *tok = tok_init(NULL);
    char line[8192];
    int status = CTL_OK, failed = 0, first = 0, lineno = 0;
    while (fgets(line, sizeof(line), stdin)) {
        int last = CTL_OK;
        lineno++;
        bool more = run_line(tok, line, &last);
        if (last != CTL_OK) {
            if (!failed++) {
                status = last;
                first = lineno;
            }
        }
        if (!more)
            break;
    }
    tok_end(tok);
    if (failed)
        fprintf(stderr, "cmcpctl: %d line%s of the script failed (the first: line %d); exit "
                        "status %d\n",
                failed, failed == 1 ? "" : "s", first, status);
    return status;
}

int ctl_shell(void)
{
    int rc = ctl_connect();
    if (rc != CTL_OK)
        return rc;
    O.in_shell = true;
    if (!isatty(STDIN_FILENO))
        return shell_plain();
    snprintf(prompt_buf, sizeof(prompt_buf), "cmcp@%s> ", ctl_node_name());
    printf("connected to node %s at %s (help lists the commands, Tab completes)\n",
           ctl_node_name(), O.endpoint);
    EditLine *el = el_init("cmcpctl", stdin, stdout, stderr);
    History *hist = history_init();
    HistEvent ev;
    char hpath[1024] = "";
    const char *home = getenv("HOME");
    if (home && *home)
        snprintf(hpath, sizeof(hpath), "%s/.cmcpctl_history", home);
    history(hist, &ev, H_SETSIZE, 1000);
    history(hist, &ev, H_SETUNIQUE, 1);
    if (hpath[0])
        history(hist, &ev, H_LOAD, hpath);
    el_set(el, EL_EDITOR, "emacs");
    el_set(el, EL_PROMPT, prompt);
    el_set(el, EL_HIST, history, hist);
    /* The wide call: libedit's narrow EL_ADDFN copies both strings and never frees them. */
    el_wset(el, EL_ADDFN, L"cmcp-complete", L"complete a command or supervisor name", complete);
    el_set(el, EL_BIND, "^I", "cmcp-complete", NULL);
    el_source(el, NULL); /* ~/.editrc, for those who keep one */
    Tokenizer *tok = tok_init(NULL);
    int count;
    const char *line;
    while ((line = el_gets(el, &count)) != NULL && count > 0) {
        if (strspn(line, " \t\n") != strlen(line)) {
            history(hist, &ev, H_ENTER, line);
            if (hpath[0])
                history(hist, &ev, H_SAVE, hpath); /* saved as we go: a killed shell keeps it */
        }
        int last;
        if (!run_line(tok, line, &last))
            break;
    }
    if (!line)
        printf("\n");
    tok_end(tok);
    history_end(hist);
    el_end(el);
    return CTL_OK;
}
