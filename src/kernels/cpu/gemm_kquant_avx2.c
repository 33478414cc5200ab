/* AVX2 kernels for the K-quants (Q4_K, Q5_K, Q6_K weights, Q8_K activations), after llama.cpp's
 * x86 dot products: maddubs per 32 quants, 16-bit sub-block scales applied with madd, one float
 * FMA per 256-element super-block. A weight super-block is unpacked once for up to 4 tokens;
 * each output's float steps are the same at any n_tok (batch and thread invariance). */
#include <immintrin.h>
#include <string.h>

#include "kernels/cpu/cpu_impl.h"
#include "kernels/cpu/simd_avx2.h"
#include "kernels/quants.h"

#include "kernels/cpu/kquant_simd.h"

#define TT 4

/* One weight row against T tokens: each super-block of weights is unpacked once and used for
 * all T tokens. Per output the float steps are the same for every T (T = 1 is vec_dot). */
static inline __attribute__((always_inline)) void mk_q45_k(int five, int T, int64_t n, const void *vw, const char *a,
                                                           size_t as, float *y, int64_t ys) {
    const int64_t nb = n / QK_K;
    const __m256i m4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    __m256 acc[TT];
    float accm[TT];
    for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps(), accm[t] = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        kq45_block kb;
        kq45_unpack(five, vw, i, &kb);
        const uint8_t *qs = kb.qs, *qh = kb.qh, *sc = kb.sc, *mn = kb.mn;
        const float dwf = kb.d, dmf = kb.dmin;
        const block_q8_K *yb[TT];
        __m256i sumi[TT];
        for (int t = 0; t < T; t++) yb[t] = (const block_q8_K *)(a + t * as) + i, sumi[t] = _mm256_setzero_si256();
        __m256i hb = five ? _mm256_loadu_si256((const __m256i *)qh) : _mm256_setzero_si256();
        for (int j = 0; j < 4; j++) {
            const __m256i bits = _mm256_loadu_si256((const __m256i *)(qs + 32 * j));
            __m256i lo = _mm256_and_si256(bits, m4);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            if (five) {
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(hb, one), 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 1), one), 4));
                hb = _mm256_srli_epi16(hb, 2);
            }
            const __m256i sl = _mm256_set1_epi16(sc[2 * j]), sh = _mm256_set1_epi16(sc[2 * j + 1]);
            for (int t = 0; t < T; t++) {
                const __m256i xl = _mm256_loadu_si256((const __m256i *)(yb[t]->qs + 64 * j));
                const __m256i xh = _mm256_loadu_si256((const __m256i *)(yb[t]->qs + 64 * j + 32));
                __m256i pl = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, xl), sl);
                __m256i ph = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, xh), sh);
                sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(pl, ph));
            }
        }
        uint64_t mn8;
        memcpy(&mn8, mn, 8);
        const __m128i mins = _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)mn8));
        for (int t = 0; t < T; t++) {
            const int summ = bsum_dot(yb[t]->bsums, mins, _mm256_setzero_si256(), 1);
            const float d = yb[t]->d * dwf, dmin = yb[t]->d * dmf;
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
            accm[t] = __builtin_fmaf(-dmin, (float)summ, accm[t]);
        }
    }
    for (int t = 0; t < T; t++) y[t * ys] = hsum8(acc[t]) + accm[t];
}

static inline __attribute__((always_inline)) void mk_q6_k(int T, int64_t n, const void *vw, const char *a, size_t as,
                                                          float *y, int64_t ys) {
    const block_q6_K *x = vw;
    const int64_t nb = n / QK_K;
    const __m256i m4 = _mm256_set1_epi8(0x0f), m3 = _mm256_set1_epi8(3);
    __m256 acc[TT];
    for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const float dwf = h2f(x[i].d);
        const block_q8_K *yb[TT];
        __m256i sumi[TT];
        for (int t = 0; t < T; t++) yb[t] = (const block_q8_K *)(a + t * as) + i, sumi[t] = _mm256_setzero_si256();
        for (int c = 0; c < 2; c++) {
            const uint8_t *ql = x[i].ql + 64 * c, *qh = x[i].qh + 32 * c;
            const int8_t *sc = x[i].scales + 8 * c;
            const __m256i b1 = _mm256_loadu_si256((const __m256i *)ql);
            const __m256i b2 = _mm256_loadu_si256((const __m256i *)(ql + 32));
            const __m256i bh = _mm256_loadu_si256((const __m256i *)qh);
            __m256i q[4], s[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(b1, m4), _mm256_slli_epi16(_mm256_and_si256(bh, m3), 4));
            q[1] = _mm256_or_si256(_mm256_and_si256(b2, m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bh, 2), m3), 4));
            q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b1, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bh, 4), m3), 4));
            q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b2, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bh, 6), m3), 4));
            for (int k = 0; k < 4; k++)
                s[k] = _mm256_set_m128i(_mm_set1_epi16(sc[2 * k + 1]), _mm_set1_epi16(sc[2 * k]));
            for (int t = 0; t < T; t++) {
                const int8_t *q8 = yb[t]->qs + 128 * c;
                for (int k = 0; k < 4; k++) {
                    const __m256i xq = _mm256_loadu_si256((const __m256i *)(q8 + 32 * k));
                    sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(_mm256_maddubs_epi16(q[k], xq), s[k]));
                }
            }
        }
        /* the stored quants are q + 32: subtract 32 * sum_s sc[s] * bsums[s] */
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x[i].scales));
        for (int t = 0; t < T; t++) {
            const int corr = 32 * bsum_dot(yb[t]->bsums, _mm_setzero_si128(), sc16, 0);
            const __m256i si = _mm256_sub_epi32(sumi[t], _mm256_setr_epi32(corr, 0, 0, 0, 0, 0, 0, 0));
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(yb[t]->d * dwf), _mm256_cvtepi32_ps(si), acc[t]);
        }
    }
    for (int t = 0; t < T; t++) y[t * ys] = hsum8(acc[t]);
}

#define DEF_GEMM(NAME, MK)                                                                                        \
    static void NAME(int64_t n, const void *w, size_t ws, const void *a, size_t as, float *y, int64_t ys,        \
                     int64_t nr, int64_t nt) {                                                                    \
        for (int64_t t = 0; t < nt; t += TT) {                                                                    \
            int tt = nt - t < TT ? (int)(nt - t) : TT;                                                            \
            const char *ap = (const char *)a + t * as;                                                            \
            for (int64_t r = 0; r < nr; r++) {                                                                    \
                const char *wp = (const char *)w + r * ws;                                                        \
                float *yp = y + t * ys + r;                                                                       \
                switch (tt) {                                                                                     \
                case 1: MK(1); break;                                                                             \
                case 2: MK(2); break;                                                                             \
                case 3: MK(3); break;                                                                             \
                default: MK(4); break;                                                                            \
                }                                                                                                 \
            }                                                                                                     \
        }                                                                                                         \
    }                                                                                                             \
    static float NAME##_dot(int64_t n, const void *w, const void *a) {                                           \
        float y;                                                                                                  \
        NAME(n, w, 0, a, 0, &y, 1, 1, 1);                                                                         \
        return y;                                                                                                 \
    }

#define MK_Q4(T) mk_q45_k(0, T, n, wp, ap, as, yp, ys)
#define MK_Q5(T) mk_q45_k(1, T, n, wp, ap, as, yp, ys)
#define MK_Q6(T) mk_q6_k(T, n, wp, ap, as, yp, ys)
DEF_GEMM(gemm_q4_k, MK_Q4)
DEF_GEMM(gemm_q5_k, MK_Q5)
DEF_GEMM(gemm_q6_k, MK_Q6)

void kcpu_fill_kquant_avx2(kcpu_fns *f) {
    f->gemm[PAGODA_DTYPE_Q4_K] = gemm_q4_k;
    f->gemm[PAGODA_DTYPE_Q5_K] = gemm_q5_k;
    f->gemm[PAGODA_DTYPE_Q6_K] = gemm_q6_k;
    f->vec_dot[PAGODA_DTYPE_Q4_K] = gemm_q4_k_dot;
    f->vec_dot[PAGODA_DTYPE_Q5_K] = gemm_q5_k_dot;
    f->vec_dot[PAGODA_DTYPE_Q6_K] = gemm_q6_k_dot;
    f->tile_rows[PAGODA_DTYPE_Q4_K] = f->tile_rows[PAGODA_DTYPE_Q5_K] = f->tile_rows[PAGODA_DTYPE_Q6_K] = 1;
}
