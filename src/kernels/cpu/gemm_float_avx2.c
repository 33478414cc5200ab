/* AVX2/FMA blocked kernels for F32, F16 and BF16 weights. A micro-kernel computes R rows x T
 * tokens with one 8-lane accumulator per output: every weight vector is converted once and used
 * for T tokens, every activation vector for R rows. Each output is summed the same way in every
 * tile shape, so results do not depend on n_tok or on the thread split. */
#include <immintrin.h>
#include <string.h>

#include "kernels/cpu/cpu_impl.h"
#include "kernels/cpu/simd_avx2.h"

enum { K_F32, K_F16, K_BF16 };
#define TR 3 /* rows per tile: 12 accumulators + 3 weight vectors + 1 activation fit 16 registers */
#define TT 4 /* tokens per tile */

static inline __attribute__((always_inline)) __m256 load8(int kind, const char *p) {
    switch (kind) {
    case K_F32: return _mm256_loadu_ps((const float *)p);
    case K_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    default: return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
    }
}

static inline size_t esize(int kind) { return kind == K_F32 ? 4 : 2; }

/* Decode: walk the next tile's (contiguous) rows while this one is computed; short rows are
 * short streams the hardware prefetcher picks up late. */
static inline __attribute__((always_inline)) void prefetch_next_tile(const char *w, int R, size_t ws, size_t step,
                                                                     int64_t k) {
    const char *p = w + (size_t)R * ws + (size_t)k * R * step;
    for (size_t o = 0; o < R * step; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
}

/* The last n%8 elements, zero padded. */
static inline __attribute__((always_inline)) __m256 load_tail(int kind, const char *p, int64_t rem) {
    _Alignas(32) char buf[32] = {0};
    memcpy(buf, p, (size_t)rem * esize(kind));
    return load8(kind, buf);
}

static inline __attribute__((always_inline)) void mk(int kw, int ka, int R, int T, int64_t n, const char *w, size_t ws,
                                                     const char *a, size_t as, float *y, int64_t ys) {
    __m256 acc[TR][TT];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_ps();
    const size_t ew = esize(kw), ea = esize(ka);
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        if (T == 1) prefetch_next_tile(w, R, ws, 8 * ew, k / 8);
        __m256 wv[TR];
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) wv[r] = load8(kw, w + r * ws + k * ew);
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            __m256 av = load8(ka, a + t * as + k * ea);
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) acc[r][t] = _mm256_fmadd_ps(wv[r], av, acc[r][t]);
        }
    }
    if (k < n) {
        __m256 wv[TR];
        for (int r = 0; r < R; r++) wv[r] = load_tail(kw, w + r * ws + k * ew, n - k);
        for (int t = 0; t < T; t++) {
            __m256 av = load_tail(ka, a + t * as + k * ea, n - k);
            for (int r = 0; r < R; r++) acc[r][t] = _mm256_fmadd_ps(wv[r], av, acc[r][t]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) y[t * ys + r] = hsum8(acc[r][t]);
}

#define MK(R, T) mk(KW, KA, R, T, n, wp, ws, ap, as, yp, ys)
#define DEF_GEMM(NAME, KW_, KA_)                                                                                  \
    static void NAME(int64_t n, const void *w, size_t ws, const void *a, size_t as, float *y, int64_t ys,        \
                     int64_t nr, int64_t nt) {                                                                    \
        enum { KW = KW_, KA = KA_ };                                                                              \
        for (int64_t t = 0; t < nt; t += TT) {                                                                    \
            int tt = nt - t < TT ? (int)(nt - t) : TT;                                                            \
            int tr = tt == 1 ? 2 : TR; /* decode: 2 prefetched row streams (measured best) */                   \
            for (int64_t r = 0; r < nr; r += tr) {                                                                \
                int rr = nr - r < tr ? (int)(nr - r) : tr;                                                        \
                const char *wp = (const char *)w + r * ws, *ap = (const char *)a + t * as;                        \
                float *yp = y + t * ys + r;                                                                       \
                switch (rr * 8 + tt) {                                                                            \
                case 2 * 8 + 1: MK(2, 1); break;                                                                  \
                case 1 * 8 + 1: MK(1, 1); break;                                                                  \
                case 3 * 8 + 2: MK(3, 2); break;                                                                  \
                case 2 * 8 + 2: MK(2, 2); break;                                                                  \
                case 1 * 8 + 2: MK(1, 2); break;                                                                  \
                case 3 * 8 + 3: MK(3, 3); break;                                                                  \
                case 2 * 8 + 3: MK(2, 3); break;                                                                  \
                case 1 * 8 + 3: MK(1, 3); break;                                                                  \
                case 3 * 8 + 4: MK(3, 4); break;                                                                  \
                case 2 * 8 + 4: MK(2, 4); break;                                                                  \
                default: MK(1, 4); break;                                                                         \
                }                                                                                                 \
            }                                                                                                     \
        }                                                                                                         \
    }

DEF_GEMM(gemm_f32, K_F32, K_F32)
DEF_GEMM(gemm_f16, K_F16, K_F16)
DEF_GEMM(gemm_bf16, K_BF16, K_F32)

static float dot_f32(int64_t n, const void *w, const void *a) {
    float y;
    gemm_f32(n, w, 0, a, 0, &y, 1, 1, 1);
    return y;
}
static float dot_f16(int64_t n, const void *w, const void *a) {
    float y;
    gemm_f16(n, w, 0, a, 0, &y, 1, 1, 1);
    return y;
}
static float dot_bf16(int64_t n, const void *w, const void *a) {
    float y;
    gemm_bf16(n, w, 0, a, 0, &y, 1, 1, 1);
    return y;
}

void kcpu_fill_float_avx2(kcpu_fns *f) {
    f->gemm[PAGODA_DTYPE_F32] = gemm_f32;
    f->gemm[PAGODA_DTYPE_F16] = gemm_f16;
    f->gemm[PAGODA_DTYPE_BF16] = gemm_bf16;
    f->tile_rows[PAGODA_DTYPE_F32] = f->tile_rows[PAGODA_DTYPE_F16] = f->tile_rows[PAGODA_DTYPE_BF16] = TR;
    f->vec_dot[PAGODA_DTYPE_F32] = dot_f32;
    f->vec_dot[PAGODA_DTYPE_F16] = dot_f16;
    f->vec_dot[PAGODA_DTYPE_BF16] = dot_bf16;
}
