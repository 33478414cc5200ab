#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static pagoda_log_fn g_log_fn;
static void *g_log_user;
static int g_log_level = PAGODA_LOG_INFO;
static _Thread_local char t_error[1024];

void pagoda_log_set(pagoda_log_fn fn, void *user, int max_level) {
    g_log_fn = fn;
    g_log_user = user;
    g_log_level = max_level;
}

void pg_log(int level, const char *fmt, ...) {
    if (!g_log_fn || level > g_log_level) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    g_log_fn(level, buf, g_log_user);
}

pagoda_status pg_fail(pagoda_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t_error, sizeof t_error, fmt, ap);
    va_end(ap);
    return st;
}

void pg_error_prefix(const char *fmt, ...) {
    char head[512], old[sizeof t_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    memcpy(old, t_error, sizeof old);
    /* concatenate by hand: the message is cut at the buffer size by design */
    size_t n = strlen(head);
    if (n >= sizeof t_error) n = sizeof t_error - 1;
    memcpy(t_error, head, n);
    size_t m = strlen(old);
    if (m > sizeof t_error - 1 - n) m = sizeof t_error - 1 - n;
    memcpy(t_error + n, old, m);
    t_error[n + m] = 0;
}

const char *pagoda_last_error(void) { return t_error; }

const char *pagoda_status_name(pagoda_status st) {
    switch (st) {
    case PAGODA_OK: return "ok";
    case PAGODA_ERR_NOMEM: return "out of memory";
    case PAGODA_ERR_FORMAT: return "bad format";
    case PAGODA_ERR_INVALID: return "invalid argument";
    case PAGODA_ERR_IO: return "i/o error";
    case PAGODA_ERR_UNSUPPORTED: return "unsupported";
    case PAGODA_ERR_CUDA: return "cuda error";
    case PAGODA_ERR_BUSY: return "busy";
    }
    return "unknown error";
}
