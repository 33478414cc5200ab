#include "core/array.h"

#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"

bool pg_grow(void **arr, int64_t *cap, int64_t need, size_t elem) {
    if (need <= *cap) return true;
    int64_t nc = *cap ? *cap * 2 : 16;
    if (nc < need) nc = need;
    size_t bytes;
    if (nc <= 0 || !pg_mul_size((size_t)nc, elem, &bytes)) return false;
    void *p = realloc(*arr, bytes);
    if (!p) return false;
    memset((char *)p + (size_t)*cap * elem, 0, (size_t)(nc - *cap) * elem);
    *arr = p;
    *cap = nc;
    return true;
}
