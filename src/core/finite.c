#include "core/finite.h"

#include <string.h>

/* Chunks keep the early exit cheap while the inner loop stays branch-free (vectorizable). */
#define CHUNK 4096

/* One body for the aligned widths: v & mask == mask is an all-ones exponent. */
#define FIRST_NONFINITE(name, T, MASK)                                                                       \
    static int64_t name(const T *x, int64_t n) {                                                             \
        for (int64_t c0 = 0; c0 < n; c0 += CHUNK) {                                                          \
            int64_t c1 = n - c0 < CHUNK ? n : c0 + CHUNK;                                                    \
            T any = 0;                                                                                       \
            for (int64_t i = c0; i < c1; i++) any |= (T)((x[i] & (MASK)) == (MASK));                         \
            if (!any) continue;                                                                              \
            for (int64_t i = c0; i < c1; i++)                                                                \
                if ((x[i] & (MASK)) == (MASK)) return i;                                                     \
        }                                                                                                    \
        return -1;                                                                                           \
    }

FIRST_NONFINITE(first_u32, uint32_t, 0x7f800000u)
FIRST_NONFINITE(first_f16, uint16_t, 0x7c00u)
FIRST_NONFINITE(first_bf16, uint16_t, 0x7f80u)

static size_t kind_size(pg_float_kind k) { return k == PG_FLOAT_F32 ? 4 : 2; }

int64_t pg_first_nonfinite_strided(const void *base, int64_t n, size_t stride, pg_float_kind k) {
    const unsigned char *p = base;
    if (k == PG_FLOAT_F32) {
        for (int64_t i = 0; i < n; i++, p += stride) {
            uint32_t u;
            memcpy(&u, p, sizeof u);
            if ((u & 0x7f800000u) == 0x7f800000u) return i;
        }
        return -1;
    }
    const uint16_t mask = k == PG_FLOAT_F16 ? 0x7c00u : 0x7f80u;
    for (int64_t i = 0; i < n; i++, p += stride) {
        uint16_t h;
        memcpy(&h, p, sizeof h);
        if ((h & mask) == mask) return i;
    }
    return -1;
}

int64_t pg_first_nonfinite(const void *x, int64_t n, pg_float_kind k) {
    if ((uintptr_t)x % kind_size(k)) return pg_first_nonfinite_strided(x, n, kind_size(k), k);
    switch (k) {
    case PG_FLOAT_F32: return first_u32(x, n);
    case PG_FLOAT_F16: return first_f16(x, n);
    case PG_FLOAT_BF16: return first_bf16(x, n);
    }
    return -1;
}
