/* Finding NaN and infinity in float arrays (f32, f16, bf16) by their bits: an exponent field of
 * all ones. Used to refuse weights that would make a model compute nothing, and by the engine
 * to notice a logits row gone bad. The aligned loops vectorize (and + compare + or, SSE2 up). */
#ifndef PG_CORE_FINITE_H
#define PG_CORE_FINITE_H

#include <stddef.h>
#include <stdint.h>

typedef enum { PG_FLOAT_F32, PG_FLOAT_F16, PG_FLOAT_BF16 } pg_float_kind;

/* Index of the first NaN/Inf among n values of kind k at x (any alignment), or -1 if all are finite. */
int64_t pg_first_nonfinite(const void *x, int64_t n, pg_float_kind k);

/* The same over n values placed every stride bytes from base (the scales inside quantized
 * blocks); base need not be aligned. */
int64_t pg_first_nonfinite_strided(const void *base, int64_t n, size_t stride, pg_float_kind k);

#endif
