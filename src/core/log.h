/* Logging through the user's callback, and the thread-local last-error message. */
#ifndef PG_CORE_LOG_H
#define PG_CORE_LOG_H

#include "pagoda.h"

#if defined(__GNUC__)
#define PG_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define PG_PRINTF(a, b)
#endif

void pg_log(int level, const char *fmt, ...) PG_PRINTF(2, 3);

/* Records a formatted error message for pagoda_last_error() and returns st,
 * so error paths read: return pg_fail(PAGODA_ERR_FORMAT, "tensor %s: ...", name); */
pagoda_status pg_fail(pagoda_status st, const char *fmt, ...) PG_PRINTF(2, 3);

/* Prepends context to the current error message ("file.gguf: " + msg). */
void pg_error_prefix(const char *fmt, ...) PG_PRINTF(1, 2);

#endif
