/* AVX-512 kernels for the K-quants (Q4_K, Q5_K, Q6_K weights, Q8_K activations): the AVX2
 * kernels' operations (gemm_kquant_avx2.c, after llama.cpp's x86 dot products) on two tokens at
 * once. A 512-bit vector holds the 256-bit lanes of token 2p in its low half and token 2p + 1 in
 * its high half; the weight side (unpacked quants, sub-block scales) is broadcast to both halves.
 * Every lane therefore runs exactly the AVX2 kernel's integer and float steps, so each output is
 * bit-identical to the AVX2 kernel's (and to llama.cpp's AVX2 order), at any token count, while a
 * pair of tokens costs one instruction where the AVX2 kernel spends two. The tokens' Q8_K quants
 * are regrouped once per call so that each 64-byte load holds one 32-byte chunk of both tokens.
 * Up to KQ_PAIRS pairs per pass over a weight row; an odd last token is paired with zeros. One
 * token (decode) stays on the AVX2 kernel: half of each vector would be idle, and the regrouping
 * costs more than it saves (Q4_K 325 against 355 us, Q6_K 408 against 496, 2048 x 5632). */
#include <immintrin.h>
#include <string.h>

#include "kernels/cpu/cpu_impl.h"
#include "kernels/cpu/kquant_simd.h"
#include "kernels/cpu/simd_avx2.h"
#include "kernels/quants.h"

#define KQ_PAIRS 4         /* token pairs per pass over a row: 8 tokens */
#define KQ_MAX_BLOCKS 64   /* super-blocks per row the regrouped activations hold (n_in <= 16384) */

/* chunk c (32 quants) of tokens 2p and 2p + 1, side by side: 8 chunks per super-block */
typedef struct {
    int8_t qs[2 * QK_K];
} q8k_pair;

static inline __m512i bcast256(const void *p) { return _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)p)); }

/* y[t] for tokens t of one row: hsum8 of each half of acc, plus the mins' term */
static inline void store_pair(__m512 acc, const float *accm, int two, float *y, int64_t ys) {
    y[0] = hsum8(_mm512_castps512_ps256(acc)) + accm[0];
    if (two) y[ys] = hsum8(_mm512_extractf32x8_ps(acc, 1)) + accm[1];
}

static inline __m512 pair_scale(float d0, float d1) {
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(d0)), _mm256_set1_ps(d1), 1);
}

static inline __attribute__((always_inline)) void mk2_q45_k(int five, int P, int nt, int64_t nb, const void *vw,
                                                            const q8k_pair *px, const block_q8_K *const *yb, float *y,
                                                            int64_t ys) {
    const __m512i m4 = _mm512_set1_epi8(0x0f), one = _mm512_set1_epi8(1);
    __m512 acc[KQ_PAIRS];
    float accm[2 * KQ_PAIRS];
    for (int q = 0; q < P; q++) acc[q] = _mm512_setzero_ps(), accm[2 * q] = accm[2 * q + 1] = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        kq45_block kb;
        kq45_unpack(five, vw, i, &kb);
        const uint8_t *qs = kb.qs, *qh = kb.qh, *sc = kb.sc, *mn = kb.mn;
        const float dwf = kb.d, dmf = kb.dmin;
        __m512i sumi[KQ_PAIRS];
        for (int q = 0; q < P; q++) sumi[q] = _mm512_setzero_si512();
        __m512i hb = five ? bcast256(qh) : _mm512_setzero_si512();
        for (int j = 0; j < 4; j++) {
            const __m512i bits = bcast256(qs + 32 * j);
            __m512i lo = _mm512_and_si512(bits, m4);
            __m512i hi = _mm512_and_si512(_mm512_srli_epi16(bits, 4), m4);
            if (five) {
                lo = _mm512_or_si512(lo, _mm512_slli_epi16(_mm512_and_si512(hb, one), 4));
                hi = _mm512_or_si512(hi, _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(hb, 1), one), 4));
                hb = _mm512_srli_epi16(hb, 2);
            }
            const __m512i sl = _mm512_set1_epi16(sc[2 * j]), sh = _mm512_set1_epi16(sc[2 * j + 1]);
            for (int q = 0; q < P; q++) {
                const int8_t *x = px[q * nb + i].qs + 128 * j;
                const __m512i pl = _mm512_madd_epi16(_mm512_maddubs_epi16(lo, _mm512_loadu_si512(x)), sl);
                const __m512i ph = _mm512_madd_epi16(_mm512_maddubs_epi16(hi, _mm512_loadu_si512(x + 64)), sh);
                sumi[q] = _mm512_add_epi32(sumi[q], _mm512_add_epi32(pl, ph));
            }
        }
        uint64_t mn8;
        memcpy(&mn8, mn, 8);
        const __m128i mins = _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)mn8));
        for (int q = 0; q < P; q++) {
            float d[2] = {0.0f, 0.0f};
            for (int h = 0; h < 2 && 2 * q + h < nt; h++) {
                const block_q8_K *b = yb[2 * q + h] + i;
                const int summ = bsum_dot(b->bsums, mins, _mm256_setzero_si256(), 1);
                d[h] = b->d * dwf;
                accm[2 * q + h] = __builtin_fmaf(-(b->d * dmf), (float)summ, accm[2 * q + h]);
            }
            acc[q] = _mm512_fmadd_ps(pair_scale(d[0], d[1]), _mm512_cvtepi32_ps(sumi[q]), acc[q]);
        }
    }
    for (int q = 0; q < P; q++) store_pair(acc[q], accm + 2 * q, 2 * q + 1 < nt, y + 2 * q * ys, ys);
}

static inline __attribute__((always_inline)) void mk2_q6_k(int P, int nt, int64_t nb, const void *vw,
                                                           const q8k_pair *px, const block_q8_K *const *yb, float *y,
                                                           int64_t ys) {
    const block_q6_K *x = vw;
    const __m512i m4 = _mm512_set1_epi8(0x0f), m3 = _mm512_set1_epi8(3);
    __m512 acc[KQ_PAIRS];
    const float zm[2] = {0.0f, 0.0f};
    for (int q = 0; q < P; q++) acc[q] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const float dwf = h2f(x[i].d);
        __m512i sumi[KQ_PAIRS];
        for (int q = 0; q < P; q++) sumi[q] = _mm512_setzero_si512();
        for (int c = 0; c < 2; c++) {
            const uint8_t *ql = x[i].ql + 64 * c, *qh = x[i].qh + 32 * c;
            const int8_t *sc = x[i].scales + 8 * c;
            const __m512i b1 = bcast256(ql), b2 = bcast256(ql + 32), bh = bcast256(qh);
            __m512i qv[4], s[4];
            qv[0] = _mm512_or_si512(_mm512_and_si512(b1, m4), _mm512_slli_epi16(_mm512_and_si512(bh, m3), 4));
            qv[1] = _mm512_or_si512(_mm512_and_si512(b2, m4),
                                    _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(bh, 2), m3), 4));
            qv[2] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(b1, 4), m4),
                                    _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(bh, 4), m3), 4));
            qv[3] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(b2, 4), m4),
                                    _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(bh, 6), m3), 4));
            for (int k = 0; k < 4; k++) /* per 256-bit half: sub-block 2k in its low 128 bits, 2k + 1 high */
                s[k] = _mm512_broadcast_i64x4(_mm256_set_m128i(_mm_set1_epi16(sc[2 * k + 1]), _mm_set1_epi16(sc[2 * k])));
            for (int q = 0; q < P; q++) {
                const int8_t *q8 = px[q * nb + i].qs + 256 * c;
                for (int k = 0; k < 4; k++)
                    sumi[q] = _mm512_add_epi32(
                        sumi[q], _mm512_madd_epi16(_mm512_maddubs_epi16(qv[k], _mm512_loadu_si512(q8 + 64 * k)), s[k]));
            }
        }
        /* the stored quants are q + 32: subtract 32 * sum_s sc[s] * bsums[s] from lane 0 of each token */
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x[i].scales));
        for (int q = 0; q < P; q++) {
            int corr[2] = {0, 0};
            float d[2] = {0.0f, 0.0f};
            for (int h = 0; h < 2 && 2 * q + h < nt; h++) {
                const block_q8_K *b = yb[2 * q + h] + i;
                corr[h] = 32 * bsum_dot(b->bsums, _mm_setzero_si128(), sc16, 0);
                d[h] = b->d * dwf;
            }
            const __m512i cv = _mm512_mask_set1_epi32(_mm512_maskz_set1_epi32(1, corr[0]), 1 << 8, corr[1]);
            acc[q] = _mm512_fmadd_ps(pair_scale(d[0], d[1]), _mm512_cvtepi32_ps(_mm512_sub_epi32(sumi[q], cv)), acc[q]);
        }
    }
    for (int q = 0; q < P; q++) store_pair(acc[q], zm, 2 * q + 1 < nt, y + 2 * q * ys, ys);
}

/* Regroups the Q8_K quants of tokens [0, nt) (nt <= 2 * KQ_PAIRS): pair p, super-block i, chunk c
 * = 64 bytes, token 2p's chunk then token 2p + 1's (zeros for a missing one). */
static void regroup(int nt, int64_t nb, const char *a, size_t as, q8k_pair *px, const block_q8_K **yb) {
    for (int t = 0; t < nt; t++) yb[t] = (const block_q8_K *)(a + t * as);
    for (int q = 0; q < (nt + 1) / 2; q++)
        for (int64_t i = 0; i < nb; i++) {
            int8_t *o = px[q * nb + i].qs;
            for (int c = 0; c < QK_K / 32; c++) {
                memcpy(o + 64 * c, yb[2 * q][i].qs + 32 * c, 32);
                if (2 * q + 1 < nt)
                    memcpy(o + 64 * c + 32, yb[2 * q + 1][i].qs + 32 * c, 32);
                else
                    memset(o + 64 * c + 32, 0, 32);
            }
        }
}

#define DEF_GEMM2(NAME, MK, AVX2_FALLBACK)                                                                        \
    static void NAME(int64_t n, const void *w, size_t ws, const void *a, size_t as, float *y, int64_t ys,        \
                     int64_t nr, int64_t nt) {                                                                    \
        const int64_t nb = n / QK_K;                                                                              \
        if (nb > KQ_MAX_BLOCKS || nt == 1) { /* the AVX2 kernel, the same arithmetic (one token: faster) */     \
            AVX2_FALLBACK(n, w, ws, a, as, y, ys, nr, nt);                                                        \
            return;                                                                                               \
        }                                                                                                         \
        q8k_pair px[KQ_PAIRS * nb];                                                                               \
        const block_q8_K *yb[2 * KQ_PAIRS];                                                                       \
        for (int64_t t = 0; t < nt; t += 2 * KQ_PAIRS) {                                                          \
            const int tt = nt - t < 2 * KQ_PAIRS ? (int)(nt - t) : 2 * KQ_PAIRS, P = (tt + 1) / 2;                \
            regroup(tt, nb, (const char *)a + t * as, as, px, yb);                                                \
            for (int64_t r = 0; r < nr; r++) {                                                                    \
                const char *wp = (const char *)w + r * ws;                                                        \
                float *yp = y + t * ys + r;                                                                       \
                switch (P) {                                                                                      \
                case 1: MK(1); break;                                                                             \
                case 2: MK(2); break;                                                                             \
                case 3: MK(3); break;                                                                             \
                default: MK(4); break;                                                                            \
                }                                                                                                 \
            }                                                                                                     \
        }                                                                                                         \
    }

#define MK2_Q4(P) mk2_q45_k(0, P, tt, nb, wp, px, yb, yp, ys)
#define MK2_Q5(P) mk2_q45_k(1, P, tt, nb, wp, px, yb, yp, ys)
#define MK2_Q6(P) mk2_q6_k(P, tt, nb, wp, px, yb, yp, ys)

static kcpu_gemm_fn g_avx2_q4_k, g_avx2_q5_k, g_avx2_q6_k;
static void avx2_q4_k(int64_t n, const void *w, size_t ws, const void *a, size_t as, float *y, int64_t ys, int64_t nr,
                      int64_t nt) {
    g_avx2_q4_k(n, w, ws, a, as, y, ys, nr, nt);
}
static void avx2_q5_k(int64_t n, const void *w, size_t ws, const void *a, size_t as, float *y, int64_t ys, int64_t nr,
                      int64_t nt) {
    g_avx2_q5_k(n, w, ws, a, as, y, ys, nr, nt);
}
static void avx2_q6_k(int64_t n, const void *w, size_t ws, const void *a, size_t as, float *y, int64_t ys, int64_t nr,
                      int64_t nt) {
    g_avx2_q6_k(n, w, ws, a, as, y, ys, nr, nt);
}

DEF_GEMM2(gemm2_q4_k, MK2_Q4, avx2_q4_k)
DEF_GEMM2(gemm2_q5_k, MK2_Q5, avx2_q5_k)
DEF_GEMM2(gemm2_q6_k, MK2_Q6, avx2_q6_k)

/* f starts as the AVX2 table (dispatch.c): its K-quant kernels stay the fallback for long rows
 * and the vec_dot (one token: the same arithmetic) */
void kcpu_fill_kquant_avx512(kcpu_fns *f) {
    g_avx2_q4_k = f->gemm[PAGODA_DTYPE_Q4_K];
    g_avx2_q5_k = f->gemm[PAGODA_DTYPE_Q5_K];
    g_avx2_q6_k = f->gemm[PAGODA_DTYPE_Q6_K];
    if (!g_avx2_q4_k || !g_avx2_q5_k || !g_avx2_q6_k) return;
    f->gemm[PAGODA_DTYPE_Q4_K] = gemm2_q4_k;
    f->gemm[PAGODA_DTYPE_Q5_K] = gemm2_q5_k;
    f->gemm[PAGODA_DTYPE_Q6_K] = gemm2_q6_k;
}
