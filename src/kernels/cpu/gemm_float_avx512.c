/* AVX-512 blocked kernels for F32, F16 and BF16 weights: a 6-row x 4-token tile with one 16-lane
 * accumulator per output (24 of the 32 registers); weight vectors are converted once per tile and
 * reused for 4 tokens. The ragged end of a row uses masked loads. Every output is summed the same
 * way in every tile shape (batch and thread invariance). */
#include <immintrin.h>

#include "kernels/cpu/cpu_impl.h"

enum { K_F32, K_F16, K_BF16 };
#define TR 6
#define TT 4
#define DEC_R 2 /* rows per decode tile: 2 prefetched row streams measured best */
#define RMAX TR

static inline float hsum16(__m512 v) {
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline __attribute__((always_inline)) __m512 load16(int kind, const char *p, __mmask16 m) {
    switch (kind) {
    case K_F32: return _mm512_maskz_loadu_ps(m, p);
    case K_F16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
    default: return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
    }
}

static inline size_t esize(int kind) { return kind == K_F32 ? 4 : 2; }

/* Decode: the next tile's rows are contiguous; walk them linearly while this tile is computed
 * (short rows are short streams the hardware prefetcher picks up too late). */
static inline __attribute__((always_inline)) void prefetch_next_tile(const char *w, int R, size_t ws, size_t step,
                                                                     int64_t k) {
    const char *p = w + (size_t)R * ws + (size_t)k * R * step;
    for (size_t o = 0; o < R * step; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
}

/* One k-step of 16 elements for the whole tile. */
static inline __attribute__((always_inline)) void step(int kw, int ka, int R, int T, const char *w, size_t ws,
                                                       const char *a, size_t as, __mmask16 m, __m512 acc[][TT]) {
    __m512 wv[RMAX];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) wv[r] = load16(kw, w + r * ws, m);
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        __m512 av = load16(ka, a + t * as, m);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) acc[r][t] = _mm512_fmadd_ps(wv[r], av, acc[r][t]);
    }
}

static inline __attribute__((always_inline)) void mk(int kw, int ka, int R, int T, int64_t n, const char *w, size_t ws,
                                                     const char *a, size_t as, float *y, int64_t ys) {
    __m512 acc[RMAX][TT];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) acc[r][t] = _mm512_setzero_ps();
    const size_t ew = esize(kw), ea = esize(ka);
    int64_t k = 0;
    /* full vectors, then one masked step for the ragged end (same FMA sequence either way) */
    for (; k + 16 <= n; k += 16) {
        if (T == 1) prefetch_next_tile(w, R, ws, 16 * ew, k / 16);
        step(kw, ka, R, T, w + k * ew, ws, a + k * ea, as, (__mmask16)0xffff, acc);
    }
    if (k < n) step(kw, ka, R, T, w + k * ew, ws, a + k * ea, as, (__mmask16)((1u << (n - k)) - 1), acc);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) y[t * ys + r] = hsum16(acc[r][t]);
}

/* F16 activations of a token tile are widened to F32 once per call (exact), so the micro-kernel
 * converts only weights: 6 conversions per 24 FMAs instead of 10. Bounded so the stack copy
 * stays small; longer rows keep converting on the fly (same values, same result). */
#define PANEL_MAX_IN 8192 /* TT x 8192 floats = 128 KiB of stack */

static void widen_f16(const char *a, size_t as, int tt, int64_t n, float *buf, int64_t stride) {
    for (int t = 0; t < tt; t++) {
        const uint16_t *src = (const uint16_t *)(a + t * as);
        float *dst = buf + t * stride;
        int64_t k = 0;
        for (; k + 16 <= n; k += 16) _mm512_storeu_ps(dst + k, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + k))));
        if (k < n) {
            __mmask16 m = (__mmask16)((1u << (n - k)) - 1);
            _mm512_mask_storeu_ps(dst + k, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, src + k)));
        }
    }
}

#define MK(R, T) mk(KW, KA, R, T, n, wp, ws, ap, as_, yp, ys)
#define CASE(R, T)                                                                                                \
    case R * 16 + T: MK(R, T); break;
/* all row tiles of one token tile, activations of (compile-time) kind KA at at/as_ */
#define ROW_TILES(KA)                                                                                             \
    for (int64_t r = 0; r < nr; r += tr) {                                                                        \
        int rr = nr - r < tr ? (int)(nr - r) : tr;                                                                \
        const char *wp = (const char *)w + r * ws, *ap = at;                                                      \
        float *yp = y + t * ys + r;                                                                               \
        switch (rr * 16 + tt) {                                                                                   \
            CASE(2, 1) CASE(1, 1) CASE(6, 2) CASE(5, 2) CASE(4, 2) CASE(3, 2) CASE(2, 2) CASE(1, 2) CASE(6, 3)  \
            CASE(5, 3) CASE(4, 3) CASE(3, 3) CASE(2, 3) CASE(1, 3) CASE(6, 4) CASE(5, 4) CASE(4, 4) CASE(3, 4)  \
            CASE(2, 4)                                                                                          \
        default: MK(1, 4); break;                                                                                 \
        }                                                                                                         \
    }
#define DEF_GEMM(NAME, KW_, KA_)                                                                                  \
    static void NAME(int64_t n, const void *w, size_t ws, const void *a, size_t as, float *y, int64_t ys,        \
                     int64_t nr, int64_t nt) {                                                                    \
        enum { KW = KW_ };                                                                                        \
        _Alignas(64) float panel[KA_ == K_F16 ? TT * PANEL_MAX_IN : 1];                                           \
        const int64_t pstride = (n + 15) & ~(int64_t)15;                                                          \
        for (int64_t t = 0; t < nt; t += TT) {                                                                    \
            int tt = nt - t < TT ? (int)(nt - t) : TT;                                                            \
            int tr = tt == 1 ? DEC_R : TR;                                                                        \
            const char *at = (const char *)a + t * as;                                                            \
            size_t as_ = as;                                                                                      \
            if (KA_ == K_F16 && tt > 1 && n <= PANEL_MAX_IN) {                                                    \
                widen_f16(at, as, tt, n, panel, pstride);                                                         \
                at = (const char *)panel, as_ = (size_t)pstride * sizeof(float);                                  \
                enum { KA = K_F32 };                                                                              \
                ROW_TILES(KA)                                                                                     \
            } else {                                                                                              \
                enum { KA = KA_ };                                                                                \
                ROW_TILES(KA)                                                                                     \
            }                                                                                                     \
        }                                                                                                         \
    }                                                                                                             \
    static float NAME##_dot(int64_t n, const void *w, const void *a) {                                           \
        float y;                                                                                                  \
        NAME(n, w, 0, a, 0, &y, 1, 1, 1);                                                                         \
        return y;                                                                                                 \
    }

DEF_GEMM(gemm_f32, K_F32, K_F32)
DEF_GEMM(gemm_f16, K_F16, K_F16)
DEF_GEMM(gemm_bf16, K_BF16, K_F32)

void kcpu_fill_float_avx512(kcpu_fns *f) {
    f->gemm[PAGODA_DTYPE_F32] = gemm_f32;
    f->gemm[PAGODA_DTYPE_F16] = gemm_f16;
    f->gemm[PAGODA_DTYPE_BF16] = gemm_bf16;
    f->vec_dot[PAGODA_DTYPE_F32] = gemm_f32_dot;
    f->vec_dot[PAGODA_DTYPE_F16] = gemm_f16_dot;
    f->vec_dot[PAGODA_DTYPE_BF16] = gemm_bf16_dot;
    f->tile_rows[PAGODA_DTYPE_F32] = f->tile_rows[PAGODA_DTYPE_F16] = f->tile_rows[PAGODA_DTYPE_BF16] = TR;
}
