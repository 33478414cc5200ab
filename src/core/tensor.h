/* The one tensor type every layer shares: a matrix (or vector) in place, rows of n_in elements of
 * dtype, n_out rows. */
#ifndef PG_CORE_TENSOR_H
#define PG_CORE_TENSOR_H

#include <stdint.h>

typedef struct pg_tensor {
    const void *data; /* NULL: absent (optional weights such as biases) */
    int dtype;        /* pagoda_dtype */
    int64_t n_in;     /* contiguous dimension (GGUF ne[0], HF last dim) */
    int64_t n_out;    /* rows (1 for vectors) */
    const char *name; /* the tensor's name in the file */
} pg_tensor;

#endif
