/* pagoda: public C API.
 * Handles are opaque. Every function returns pagoda_status (0 = ok, negative = error);
 * pagoda_last_error() gives a one-line message naming what went wrong (thread-local). */
#ifndef PAGODA_H
#define PAGODA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    PAGODA_OK = 0,
    PAGODA_ERR_NOMEM = -1,
    PAGODA_ERR_FORMAT = -2,      /* malformed or hostile file contents */
    PAGODA_ERR_INVALID = -3,     /* bad argument from the caller */
    PAGODA_ERR_IO = -4,          /* open/read/mmap failed */
    PAGODA_ERR_UNSUPPORTED = -5, /* well-formed but not something pagoda runs (yet) */
    PAGODA_ERR_CUDA = -6,
} pagoda_status;

/* Element/block types. Values equal GGML's type ids so GGUF files map one to one.
 * Append-only. */
typedef enum {
    PAGODA_DTYPE_F32 = 0,
    PAGODA_DTYPE_F16 = 1,
    PAGODA_DTYPE_Q4_0 = 2,
    PAGODA_DTYPE_Q4_1 = 3,
    PAGODA_DTYPE_Q5_0 = 6,
    PAGODA_DTYPE_Q5_1 = 7,
    PAGODA_DTYPE_Q8_0 = 8,
    PAGODA_DTYPE_Q8_1 = 9,
    PAGODA_DTYPE_Q2_K = 10,
    PAGODA_DTYPE_Q3_K = 11,
    PAGODA_DTYPE_Q4_K = 12,
    PAGODA_DTYPE_Q5_K = 13,
    PAGODA_DTYPE_Q6_K = 14,
    PAGODA_DTYPE_Q8_K = 15,
    PAGODA_DTYPE_I8 = 24,
    PAGODA_DTYPE_I16 = 25,
    PAGODA_DTYPE_I32 = 26,
    PAGODA_DTYPE_I64 = 27,
    PAGODA_DTYPE_F64 = 28,
    PAGODA_DTYPE_BF16 = 30,
    PAGODA_DTYPE_COUNT = 31, /* one past the largest id; not a type */
} pagoda_dtype;

enum { PAGODA_LOG_ERROR = 0, PAGODA_LOG_WARN = 1, PAGODA_LOG_INFO = 2, PAGODA_LOG_DEBUG = 3 };

/* The library never prints: it hands log lines to this callback (default: none). */
typedef void (*pagoda_log_fn)(int level, const char *msg, void *user);
void pagoda_log_set(pagoda_log_fn fn, void *user, int max_level);

/* Message of the last error on this thread ("" if none). */
const char *pagoda_last_error(void);
const char *pagoda_status_name(pagoda_status st);

#ifdef __cplusplus
}
#endif
#endif
