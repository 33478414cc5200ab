/* Sizes and names of element/block types (GGUF block layouts). */
#ifndef PG_CORE_DTYPE_H
#define PG_CORE_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pagoda.h"

typedef struct {
    const char *name;   /* "q4_0", as GGUF tools print it; NULL for unknown ids */
    int block_size;     /* elements per block (1 for plain types) */
    size_t type_size;   /* bytes per block */
} pg_dtype_info;

/* NULL if the id is not a known type. */
const pg_dtype_info *dtype_info(int dtype);
const char *dtype_name(int dtype); /* "?" for unknown ids */
/* Parses a name like "q4_0"/"Q4_0"/"f16"; returns -1 if unknown. */
int dtype_from_name(const char *name);

/* Bytes of n elements; false if n is not a whole number of blocks or it overflows. */
bool dtype_row_size(int dtype, int64_t n, size_t *out);

/* Overflow-checked size arithmetic for untrusted inputs. */
static inline bool pg_mul_size(size_t a, size_t b, size_t *out) { return !__builtin_mul_overflow(a, b, out); }
static inline bool pg_add_size(size_t a, size_t b, size_t *out) { return !__builtin_add_overflow(a, b, out); }

#endif
