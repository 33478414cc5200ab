/* AVX2 blocked kernels for the 32-element block types (Q8_0, Q4_0, Q5_0 against Q8_0 activations;
 * Q4_1, Q5_1 against Q8_1). A weight block is unpacked to 32 bytes once and reused for T tokens;
 * integer products use maddubs (u8 x s8) as llama.cpp does. Integer sums are exact, and each
 * output's float accumulation is the same in every tile shape (batch and thread invariance). */
#include <immintrin.h>
#include <string.h>

#include "kernels/cpu/cpu_impl.h"
#include "kernels/cpu/simd_avx2.h"
#include "kernels/quants.h"

enum { Q_8_0, Q_4_0, Q_5_0, Q_4_1, Q_5_1 };
#define TR 2
#define TT 4
#define DEC_R 2 /* rows per decode tile: 2 prefetched row streams measured best */
#define RMAX TR

static inline float h2f(const void *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* 32 bytes: 0xff where bit i of the 32-bit mask is set (the 5th bit of Q5 quants). */
static inline __m256i bytes_from_bits32(const void *p) {
    uint32_t b;
    memcpy(&b, p, 4);
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)b), shuf);
    v = _mm256_or_si256(v, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    return _mm256_cmpeq_epi8(v, _mm256_set1_epi64x(-1));
}

/* 16 bytes of nibbles -> 32 bytes 0..15: low nibbles are elements 0..15, high ones 16..31. */
static inline __m256i nibbles(const void *p) {
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    __m256i b = _mm256_set_m128i(_mm_srli_epi16(v, 4), v);
    return _mm256_and_si256(b, _mm256_set1_epi8(0x0f));
}

/* Decode reads each row once and rows are short streams the hardware prefetcher picks up late;
 * the next tile's rows are contiguous, so walk them linearly while this tile is computed. */
static inline __attribute__((always_inline)) void prefetch_next_tile(const char *w, int R, size_t ws, int64_t ib,
                                                                     size_t step) {
    const char *p = w + (size_t)R * ws + (size_t)ib * R * step;
    for (size_t o = 0; o < R * step; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
}

static inline size_t wblock(int kind) {
    switch (kind) {
    case Q_8_0: return sizeof(block_q8_0);
    case Q_4_0: return sizeof(block_q4_0);
    case Q_5_0: return sizeof(block_q5_0);
    case Q_4_1: return sizeof(block_q4_1);
    default: return sizeof(block_q5_1);
    }
}

static inline __attribute__((always_inline)) __m256i unpack(int kind, const char *b, float *d, float *m) {
    *d = h2f(b);
    switch (kind) {
    case Q_8_0: return _mm256_loadu_si256((const __m256i *)(b + 2));
    case Q_4_0: return nibbles(b + 2);
    case Q_5_0:
        return _mm256_or_si256(nibbles(b + 6), _mm256_and_si256(bytes_from_bits32(b + 2), _mm256_set1_epi8(0x10)));
    case Q_4_1: *m = h2f(b + 2); return nibbles(b + 4);
    default:
        *m = h2f(b + 2);
        return _mm256_or_si256(nibbles(b + 8), _mm256_and_si256(bytes_from_bits32(b + 4), _mm256_set1_epi8(0x10)));
    }
}

static inline __attribute__((always_inline)) void mk(int kind, int R, int T, int64_t nb, const char *w, size_t ws,
                                                     const char *a, size_t as, float *y, int64_t ys) {
    const int q81 = kind == Q_4_1 || kind == Q_5_1;
    const int off = kind == Q_4_0 ? 8 : kind == Q_5_0 ? 16 : 0;
    const size_t wbs = wblock(kind), abs_ = q81 ? sizeof(block_q8_1) : sizeof(block_q8_0), aqo = q81 ? 4 : 2;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[RMAX][TT];
    float ms[RMAX][TT];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            acc[r][t] = _mm256_setzero_ps();
            ms[r][t] = 0.0f;
        }
    for (int64_t ib = 0; ib < nb; ib++) {
        if (T == 1) prefetch_next_tile(w, R, ws, ib, wbs);
        __m256i wq[RMAX], wa[RMAX];
        __m256 wd[RMAX];
        float wm[RMAX];
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            float d;
            wm[r] = 0.0f;
            wq[r] = unpack(kind, w + r * ws + ib * wbs, &d, &wm[r]);
            wd[r] = _mm256_set1_ps(d);
            if (kind == Q_8_0) wa[r] = _mm256_sign_epi8(wq[r], wq[r]);
        }
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const char *ab = a + t * as + ib * abs_;
            __m256i xq = _mm256_loadu_si256((const __m256i *)(ab + aqo));
            __m256 xd = _mm256_set1_ps(h2f(ab));
            float xs = q81 ? h2f(ab + 2) : 0.0f;
            __m256i corr = _mm256_setzero_si256();
            if (off) corr = _mm256_maddubs_epi16(_mm256_set1_epi8((char)off), xq);
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                __m256i p;
                if (kind == Q_8_0) {
                    p = _mm256_maddubs_epi16(wa[r], _mm256_sign_epi8(xq, wq[r]));
                } else {
                    p = _mm256_maddubs_epi16(wq[r], xq);
                    if (off) p = _mm256_sub_epi16(p, corr);
                }
                __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));
                acc[r][t] = _mm256_fmadd_ps(f, _mm256_mul_ps(wd[r], xd), acc[r][t]);
                if (q81) ms[r][t] = __builtin_fmaf(wm[r], xs, ms[r][t]);
            }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) y[t * ys + r] = hsum8(acc[r][t]) + ms[r][t];
}

#define MK(R, T) mk(KIND, R, T, nb, wp, ws, ap, as, yp, ys)
#define DEF_GEMM(NAME, KIND_)                                                                                     \
    static void NAME(int64_t n, const void *w, size_t ws, const void *a, size_t as, float *y, int64_t ys,        \
                     int64_t nr, int64_t nt) {                                                                    \
        enum { KIND = KIND_ };                                                                                    \
        const int64_t nb = n / 32;                                                                                \
        for (int64_t t = 0; t < nt; t += TT) {                                                                    \
            int tt = nt - t < TT ? (int)(nt - t) : TT;                                                            \
            int tr = tt == 1 ? DEC_R : TR;                                                                        \
            for (int64_t r = 0; r < nr; r += tr) {                                                                \
                int rr = nr - r < tr ? (int)(nr - r) : tr;                                                        \
                const char *wp = (const char *)w + r * ws, *ap = (const char *)a + t * as;                        \
                float *yp = y + t * ys + r;                                                                       \
                switch (rr * 8 + tt) {                                                                            \
                case 2 * 8 + 1: MK(2, 1); break;                                                                  \
                case 1 * 8 + 1: MK(1, 1); break;                                                                  \
                case 2 * 8 + 2: MK(2, 2); break;                                                                  \
                case 1 * 8 + 2: MK(1, 2); break;                                                                  \
                case 2 * 8 + 3: MK(2, 3); break;                                                                  \
                case 1 * 8 + 3: MK(1, 3); break;                                                                  \
                case 2 * 8 + 4: MK(2, 4); break;                                                                  \
                default: MK(1, 4); break;                                                                         \
                }                                                                                                 \
            }                                                                                                     \
        }                                                                                                         \
    }                                                                                                             \
    static float NAME##_dot(int64_t n, const void *w, const void *a) {                                           \
        float y;                                                                                                  \
        NAME(n, w, 0, a, 0, &y, 1, 1, 1);                                                                         \
        return y;                                                                                                 \
    }

DEF_GEMM(gemm_q8_0, Q_8_0)
DEF_GEMM(gemm_q4_0, Q_4_0)
DEF_GEMM(gemm_q5_0, Q_5_0)
DEF_GEMM(gemm_q4_1, Q_4_1)
DEF_GEMM(gemm_q5_1, Q_5_1)

void kcpu_fill_quant_avx2(kcpu_fns *f) {
    static const struct { int type; kcpu_gemm_fn g; k_vec_dot_fn d; } tab[] = {
        {PAGODA_DTYPE_Q8_0, gemm_q8_0, gemm_q8_0_dot}, {PAGODA_DTYPE_Q4_0, gemm_q4_0, gemm_q4_0_dot},
        {PAGODA_DTYPE_Q5_0, gemm_q5_0, gemm_q5_0_dot}, {PAGODA_DTYPE_Q4_1, gemm_q4_1, gemm_q4_1_dot},
        {PAGODA_DTYPE_Q5_1, gemm_q5_1, gemm_q5_1_dot},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
        f->gemm[tab[i].type] = tab[i].g;
        f->vec_dot[tab[i].type] = tab[i].d;
        f->tile_rows[tab[i].type] = TR;
    }
}
