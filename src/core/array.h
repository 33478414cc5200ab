/* Growable arrays: one overflow-checked helper instead of a realloc dance in every parser. */
#ifndef PG_CORE_ARRAY_H
#define PG_CORE_ARRAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Makes *arr hold at least `need` elements of `elem` bytes (doubling; new space zeroed).
 * false on overflow or out of memory, leaving *arr and *cap unchanged. */
bool pg_grow(void **arr, int64_t *cap, int64_t need, size_t elem);

#endif
