/* AVX-512 (VNNI, F16C) kernels of kcpu_qmatmul (driver: qmatmul.c; activations prepared by
 * qmatmul_avx2.c's kcpu_qmm_prep_avx2 in the formats the plan names). Used when the group size is
 * a multiple of 32 (or one group spans the row). A row is walked in units (qmm_plan.unit: the
 * group, or 128-column pieces of a long one); each unit's products are summed without the scale,
 * then scaled once, with the zero point applied through the unit's activation sum (prepared once
 * per token):
 *   QMM_F512:    g = sum q x (float, 16 lanes; INT4 q 0..15 from nibbles, the activations of each
 *                32-block stored even columns first; INT8 q; FP8 e4m3/256 through an IEEE half),
 *                g = fma(sum(x), -z, g), acc = fma(g, s, acc) (FP8: s*256, z = 0).
 *   QMM_Q4_VNNI: d = -z sum(a) + sum q a by vpdpbusd (q unsigned 0..15, a int8), exact;
 *                acc = fma(float(d lanes), s, acc).
 *   QMM_Q8_VNNI: d = -(128 + z) sum(a) + sum (q + 128) a by vpdpbusd (q ^ 0x80 is q + 128
 *                unsigned), exact; acc = fma(float(d lanes), s, acc).
 *   QMM_W16:     int16 activations (units are their spans): d = -z sum(a) + sum q a by vpdpwssd
 *                (q widened to int16), exact; acc = fma(float(d lanes), s * s_span, acc). INT4 on
 *                spans of 128 columns, or of 32 / 64 that are the groups (QMM_FMT_W16S): a = 256 hi
 *                + lo, sum q a = sum lo q + 256 sum q hi by two vpdpbusd each per 128-column block,
 *                exact, each lane scaled by its span's s_g s_span (mk_w16z).
 *   y = hsum(acc) * s_t.
 *   QMM_Q8_ROW:  INT8 with one group per row: d = sum (q + 128) a over the whole row (512-bit
 *                vpdpbusd, exact int32), dot = d - (128 + z) sum(a), y = (double)(s s_t) * dot.
 * A tile of R rows x T tokens decodes each block of codes once for its T tokens; every output's
 * arithmetic is the same sequence of operations whatever R, T, n_tok or thread (batch and thread
 * invariance). Zen 4 runs 512-bit operations double-pumped: the integer kernels use 256-bit
 * vectors (one 32-column block each), the float kernel 512-bit ones (fewer instructions). */
#include <immintrin.h>
#include <string.h>

#include "kernels/cpu/qmatmul_impl.h"
#include "kernels/cpu/simd_avx2.h"

#define AI static inline __attribute__((always_inline))
#define MR 4 /* most rows per tile */
#define MT 4 /* most tokens per tile */

static inline int zero_of(const k_qweight *w, int64_t idx) {
    if (!w->zeros) return w->kind == K_QW_INT4 ? 8 : 0;
    return w->kind == K_QW_INT8 ? (int8_t)w->zeros[idx] : w->zeros[idx];
}

/* Codes of columns [i, i + 32) of row c (bytes c[i >> sh ..]); the row's last partial block is
 * copied, zero padded, into tmp (the activations are zero there; zero codes keep FP8 free of NaN). */
AI const uint8_t *block_codes(const uint8_t *c, int sh, int64_t i, int64_t n, uint8_t *tmp) {
    if (i + 32 <= n) return c + (i >> sh);
    memset(tmp, 0, 32);
    memcpy(tmp, c + (i >> sh), (size_t)((n - i) >> sh));
    return tmp;
}

/* ---- float activations ---- */

/* 32 codes as two vectors of 16 floats, matching the prepared activations' order */
AI void dec32(int kind, const uint8_t *c, __m512 *lo, __m512 *hi) {
    if (kind == K_QW_INT4) {
        __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)c));
        *lo = _mm512_cvtepi32_ps(_mm512_and_si512(v, _mm512_set1_epi32(15)));
        *hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4));
    } else if (kind == K_QW_INT8) {
        *lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)c)));
        *hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(c + 16))));
    } else {
        /* e4m3 -> half: sign-extended byte << 7 puts the sign at bit 15 (and 14), exponent and
         * mantissa at bits 13..7; clearing bit 14 leaves e4m3 / 256 (exponent bias 15 = 7 + 8) */
        const __m256i m = _mm256_set1_epi16((short)0xbf80);
        __m256i h0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)c));
        __m256i h1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(c + 16)));
        *lo = _mm512_cvtph_ps(_mm256_and_si256(_mm256_slli_epi16(h0, 7), m));
        *hi = _mm512_cvtph_ps(_mm256_and_si256(_mm256_slli_epi16(h1, 7), m));
    }
}

/* One 32-column block of the float kernel: R rows' codes c[r] against T tokens from column i */
AI void blk_float(int kind, int R, int T, const uint8_t *const *c, const float *const *xa, int64_t i,
                  __m512 ga[MR][MT]) {
    __m512 lo[MR], hi[MR];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) dec32(kind, c[r], &lo[r], &hi[r]);
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        const __m512 xl = _mm512_loadu_ps(xa[t] + i), xh = _mm512_loadu_ps(xa[t] + i + 16);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            ga[r][t] = _mm512_fmadd_ps(lo[r], xl, ga[r][t]);
            ga[r][t] = _mm512_fmadd_ps(hi[r], xh, ga[r][t]);
        }
    }
}

AI void mk_float(int kind, int R, int T, const qmm_plan *p, int64_t r0, int64_t t0) {
    const k_qweight *w = p->w;
    const int64_t n = w->n_in, gs = w->group_size, ng = p->n_group, u = p->unit;
    const int64_t n_end = ng == 1 ? p->n_pad : n; /* one group: its units run over the padding */
    const int64_t n_full = n & ~(int64_t)31;
    const size_t rb = k_qweight_row_bytes(w);
    const int sh = kind == K_QW_INT4;
    const uint8_t *wr[MR], *c[MR];
    const float *xa[MT], *xs[MT];
    __m512 acc[MR][MT];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) wr[r] = w->codes + (size_t)(r0 + r) * rb;
    const char *nxt = (const char *)(w->codes + (size_t)(r0 + R) * rb); /* the next decode tile's rows */
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        const char *row = p->a + (size_t)(t0 + t) * p->a_row;
        xa[t] = (const float *)row;
        xs[t] = (const float *)(row + (size_t)p->n_pad * sizeof(float));
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) acc[r][t] = _mm512_setzero_ps();
    for (int64_t i0 = 0, k = 0; i0 < n_end; i0 += u, k++) {
        const int64_t g = ng == 1 ? 0 : i0 / gs;
        const int64_t i1 = i0 + u < n_end ? i0 + u : n_end, e = i1 < n_full ? i1 : n_full;
        __m512 ga[MR][MT];
#pragma GCC unroll 8
        for (int r = 0; r < R; r++)
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) ga[r][t] = _mm512_setzero_ps();
        int64_t i = i0;
        for (; i < e; i += 32) {
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                c[r] = wr[r] + (i >> sh);
                if (T == 1 && r == 0 && ((i >> sh) & 63) == 0) /* the next tile, linearly (see mk_v4z) */
                    for (int o = 0; o < R * 64; o += 64) _mm_prefetch(nxt + (size_t)(i >> sh) * R + o, _MM_HINT_T0);
            }
            blk_float(kind, R, T, c, xa, i, ga);
        }
        if (i < i1) { /* the row's last partial block */
            uint8_t tmp[MR][32];
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) c[r] = block_codes(wr[r], sh, i, n, tmp[r]);
            blk_float(kind, R, T, c, xa, i, ga);
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const int64_t idx = (r0 + r) * ng + g;
            const float s = w->scales[idx];
            const __m512 sv = _mm512_set1_ps(kind == K_QW_FP8 ? s * 256.0f : s);
            const __m512 zv = _mm512_set1_ps(-(float)zero_of(w, idx));
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) {
                __m512 v = ga[r][t];
                if (kind != K_QW_FP8) v = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(1, xs[t] + k), zv, v);
                acc[r][t] = _mm512_fmadd_ps(v, sv, acc[r][t]);
            }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int t = 0; t < T; t++)
            p->y[(t0 + t) * p->ldy + r0 + r] = _mm512_reduce_add_ps(acc[r][t]) * p->s_tok[t0 + t];
}

/* ---- int8 activations (VNNI) ---- */

/* kind K_QW_INT4: the 16 bytes' low nibbles then high nibbles (the I8R activation order);
 * K_QW_INT8: q + 128 as unsigned bytes */
AI __m256i dec_u8(int kind, const uint8_t *c) {
    if (kind == K_QW_INT4) {
        __m128i v = _mm_loadu_si128((const __m128i *)c);
        return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(15));
    }
    return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)c), _mm256_set1_epi8((char)0x80));
}

/* One 32-column block of the VNNI kernels */
AI void blk_vnni(int kind, int R, int T, const uint8_t *const *c, const int8_t *const *xa, int64_t i,
                 __m256i d[MR][MT]) {
    __m256i q[MR];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) q[r] = dec_u8(kind, c[r]);
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        const __m256i a = _mm256_loadu_si256((const __m256i *)(xa[t] + i));
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) d[r][t] = _mm256_dpbusd_epi32(d[r][t], q[r], a);
    }
}

/* ---- int16 activations (QMM_W16, K_ACT_INT16) ---- */

/* 32 codes as two vectors of 16 int16: INT4 the 16 bytes' low nibbles then high nibbles (the
 * W16R activation order), INT8 columns 0-15 then 16-31 */
AI void dec16(int kind, const uint8_t *c, __m256i *q0, __m256i *q1) {
    if (kind == K_QW_INT4) {
        const __m256i v = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)c));
        *q0 = _mm256_and_si256(v, _mm256_set1_epi16(15));
        *q1 = _mm256_srli_epi16(v, 4);
    } else {
        *q0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)c));
        *q1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(c + 16)));
    }
}

AI void blk_w16(int kind, int R, int T, const uint8_t *const *c, const int16_t *const *xa, int64_t i,
                __m256i d[MR][MT]) {
    __m256i q0[MR], q1[MR];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) dec16(kind, c[r], &q0[r], &q1[r]);
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        const __m256i a0 = _mm256_loadu_si256((const __m256i *)(xa[t] + i));
        const __m256i a1 = _mm256_loadu_si256((const __m256i *)(xa[t] + i + 16));
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) d[r][t] = _mm256_dpwssd_epi32(_mm256_dpwssd_epi32(d[r][t], q0[r], a0), q1[r], a1);
    }
}

/* QMM_Q4_VNNI / QMM_Q8_VNNI, and with w16 QMM_W16 (int16 activations; units are their spans,
 * each with its own scale): per unit d = -(off + z) sum(a) + sum (q + off) a (exact int32: for
 * QMM_W16 at most 128 x 255 x 32767 in magnitude per term), acc = fma(float(d lanes), s_g (x
 * s_span), acc); y = hsum(acc) * s_t */
AI void mk_vnni(int kind, int w16, int R, int T, const qmm_plan *p, int64_t r0, int64_t t0) {
    const k_qweight *w = p->w;
    const int64_t n = w->n_in, gs = w->group_size, ng = p->n_group, u = p->unit;
    const int64_t n_end = ng == 1 ? p->n_pad : n;
    const int64_t n_full = n & ~(int64_t)31;
    const size_t rb = k_qweight_row_bytes(w);
    const int sh = kind == K_QW_INT4;
    const int off = kind == K_QW_INT8 && !w16 ? 128 : 0; /* the unsigned codes are q + off */
    const uint8_t *wr[MR], *c[MR];
    const int8_t *xa[MT];
    const int16_t *xw[MT];
    const float *xsc[MT];
    const int32_t *xs[MT];
    __m256 acc[MR][MT];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) wr[r] = w->codes + (size_t)(r0 + r) * rb;
    const char *nxt = (const char *)(w->codes + (size_t)(r0 + R) * rb); /* the next decode tile's rows */
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        const char *row = p->a + (size_t)(t0 + t) * p->a_row;
        xa[t] = (const int8_t *)row, xw[t] = (const int16_t *)row;
        xsc[t] = (const float *)(row + qmm_w16_scales_at(p->fmt, p->n_pad));
        xs[t] = (const int32_t *)(row + (size_t)p->n_pad * sizeof(float));
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_ps();
    for (int64_t i0 = 0, k = 0; i0 < n_end; i0 += u, k++) {
        const int64_t g = ng == 1 ? 0 : i0 / gs;
        const int64_t i1 = i0 + u < n_end ? i0 + u : n_end, e = i1 < n_full ? i1 : n_full;
        __m256i d[MR][MT];
        int zo[MR];
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) zo[r] = -(off + zero_of(w, (r0 + r) * ng + g));
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const int32_t sa = xs[t][k];
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) d[r][t] = _mm256_zextsi128_si256(_mm_cvtsi32_si128(zo[r] * sa));
        }
        int64_t i = i0;
        for (; i < e; i += 32) {
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                c[r] = wr[r] + (i >> sh);
                if (T == 1 && r == 0 && ((i >> sh) & 63) == 0) /* the next tile, linearly (see mk_v4z) */
                    for (int o = 0; o < R * 64; o += 64) _mm_prefetch(nxt + (size_t)(i >> sh) * R + o, _MM_HINT_T0);
            }
            if (w16) blk_w16(kind, R, T, c, xw, i, d);
            else blk_vnni(kind, R, T, c, xa, i, d);
        }
        if (i < i1) { /* the row's last partial block */
            uint8_t tmp[MR][32];
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) c[r] = block_codes(wr[r], sh, i, n, tmp[r]);
            if (w16) blk_w16(kind, R, T, c, xw, i, d);
            else blk_vnni(kind, R, T, c, xa, i, d);
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const float sw = w->scales[(r0 + r) * ng + g];
#pragma GCC unroll 8
            for (int t = 0; t < T; t++)
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d[r][t]), _mm256_set1_ps(w16 ? sw * xsc[t][k] : sw),
                                            acc[r][t]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) p->y[(t0 + t) * p->ldy + r0 + r] = hsum8(acc[r][t]) * p->s_tok[t0 + t];
}

/* R rows' 64 code bytes (128 columns): low nibbles (even columns) and high ones (odd), as bytes */
AI void nibbles(int R, const uint8_t *const *c, __m512i *lo, __m512i *hi) {
    const __m512i m4 = _mm512_set1_epi8(15);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        const __m512i v = _mm512_loadu_si512((const void *)c[r]);
        lo[r] = _mm512_and_si512(v, m4);
        hi[r] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
    }
}

/* QMM_Q4_VNNI on 128-column blocks (group_size % 128 == 0 or one group; activations in
 * QMM_FMT_I8R128): the 64 code bytes' low nibbles meet the block's 64 even activations and the
 * high nibbles its 64 odd ones, two 512-bit vpdpbusd per row and token; lane j sums columns
 * 8j .. 8j+7 of the block. */
AI void blk_v4z(int R, int T, const uint8_t *const *c, const int8_t *const *xa, int64_t i, __m512i d[MR][MT]) {
    __m512i lo[MR], hi[MR];
    nibbles(R, c, lo, hi);
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        const __m512i al = _mm512_loadu_si512((const void *)(xa[t] + i));
        const __m512i ah = _mm512_loadu_si512((const void *)(xa[t] + i + 64));
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) d[r][t] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(d[r][t], lo[r], al), hi[r], ah);
    }
}

/* QMM_W16 over INT4 on 128-column spans (activations in QMM_FMT_W16S): each int16 code is
 * a = 256 hi + lo, so sum q a = sum lo q + 256 sum q hi, both by 512-bit vpdpbusd: lo (unsigned)
 * against q (0..15, as signed), q (unsigned) against hi (signed). Per 128-block, row and token:
 * four vpdpbusd where the int16 form takes eight 256-bit vpdpwssd and twice the code unpacking.
 * Lane j sums columns 8j .. 8j+7 of the block (even ones from the low nibbles, odd from the high),
 * exactly in int32 (|sum| per lane at most 8 x 15 x 32767, plus a zero point's term in each span's
 * first lane: at most 15 x 128 x 32767). */
AI void blk_w16z(int R, int T, const uint8_t *const *c, const uint8_t *const *xa, int64_t i, __m512i dl[MR][MT],
                 __m512i dh[MR][MT]) {
    __m512i lo[MR], hi[MR];
    nibbles(R, c, lo, hi);
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        const uint8_t *b = xa[t] + 2 * i;
        const __m512i le = _mm512_loadu_si512((const void *)b), lod = _mm512_loadu_si512((const void *)(b + 64));
        const __m512i he = _mm512_loadu_si512((const void *)(b + 128)), hod = _mm512_loadu_si512((const void *)(b + 192));
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            dl[r][t] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(dl[r][t], le, lo[r]), lod, hi[r]);
            dh[r][t] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(dh[r][t], lo[r], he), hi[r], hod);
        }
    }
}

/* A 128-column tile's rows: their codes in wr, the next tile's rows returned (decode prefetches
 * them, and its scales here) */
AI const char *z_rows(int R, int T, const qmm_plan *p, int64_t r0, const uint8_t **wr) {
    const k_qweight *w = p->w;
    const size_t rb = k_qweight_row_bytes(w);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) wr[r] = w->codes + (size_t)(r0 + r) * rb;
    if (T == 1) _mm_prefetch((const char *)(w->scales + (r0 + R) * p->n_group), _MM_HINT_T0);
    return (const char *)(w->codes + (size_t)(r0 + R) * rb);
}

/* The codes of whole 128-column block i of the tile's rows; decode prefetches the next tile's rows
 * (contiguous), R * 64 bytes of them per 64-byte step of this tile's (R short row streams alone
 * end before the hardware prefetcher ramps up; gemm_quant_avx512.c does the same for Q4_0) */
AI void z_codes(int R, int T, const uint8_t *const *wr, const char *nxt, int64_t i, const uint8_t **c) {
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) c[r] = wr[r] + i / 2;
    if (T == 1)
        for (int o = 0; o < R * 64; o += 64) _mm_prefetch(nxt + (size_t)(i / 2) * R + o, _MM_HINT_T0);
}

/* The row's last, partial block (columns i .. n): its codes copied zero padded into tmp */
AI void z_tail(int R, const uint8_t *const *wr, int64_t i, int64_t n, uint8_t tmp[MR][64], const uint8_t **c) {
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        memset(tmp[r], 0, 64);
        memcpy(tmp[r], wr[r] + i / 2, (size_t)(n - i) / 2);
        c[r] = tmp[r];
    }
}

/* y = hsum(acc) * s_t for the tile's outputs */
AI void z_store(int R, int T, const qmm_plan *p, int64_t r0, int64_t t0, __m512 acc[MR][MT]) {
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int t = 0; t < T; t++)
            p->y[(t0 + t) * p->ldy + r0 + r] = _mm512_reduce_add_ps(acc[r][t]) * p->s_tok[t0 + t];
}

AI void mk_v4z(int R, int T, const qmm_plan *p, int64_t r0, int64_t t0) {
    const k_qweight *w = p->w;
    const int64_t n = w->n_in, gs = w->group_size, ng = p->n_group, u = p->unit;
    const int64_t n_end = ng == 1 ? p->n_pad : n;
    const int64_t n_full = n & ~(int64_t)127;
    const uint8_t *wr[MR], *c[MR];
    const int8_t *xa[MT];
    const int32_t *xs[MT];
    __m512 acc[MR][MT];
    const char *nxt = z_rows(R, T, p, r0, wr);
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        const char *row = p->a + (size_t)(t0 + t) * p->a_row;
        xa[t] = (const int8_t *)row;
        xs[t] = (const int32_t *)(row + (size_t)p->n_pad * sizeof(float));
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) acc[r][t] = _mm512_setzero_ps();
    for (int64_t i0 = 0, k = 0; i0 < n_end; i0 += u, k++) {
        const int64_t g = ng == 1 ? 0 : i0 / gs;
        const int64_t i1 = i0 + u < n_end ? i0 + u : n_end, e = i1 < n_full ? i1 : n_full;
        __m512i d[MR][MT];
        int zo[MR];
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) zo[r] = -zero_of(w, (r0 + r) * ng + g);
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const int32_t sa = xs[t][k];
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) d[r][t] = _mm512_zextsi128_si512(_mm_cvtsi32_si128(zo[r] * sa));
        }
        int64_t i = i0;
        for (; i < e; i += 128) {
            z_codes(R, T, wr, nxt, i, c);
            blk_v4z(R, T, c, xa, i, d);
        }
        if (i < i1) { /* the row's last partial block */
            _Alignas(64) uint8_t tmp[MR][64];
            z_tail(R, wr, i, n, tmp, c);
            blk_v4z(R, T, c, xa, i, d);
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const __m512 sv = _mm512_set1_ps(w->scales[(r0 + r) * ng + g]);
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d[r][t]), sv, acc[r][t]);
        }
    }
    z_store(R, T, p, r0, t0, acc);
}

/* Lane j of a 128-column block's sums covers columns 8j .. 8j+7, so with G spans (groups) per block
 * (span 128 / G) lane j belongs to span j / (16 / G): the lanes' span index. */
static const int32_t W16Z_LANE_G[3][16] = {{0}, {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1},
                                           {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3}};

/* QMM_W16 over INT4 on spans of 128 / G columns (G = 1: 128-column spans, one group or a part of
 * one; G = 2 / 4: spans of 64 / 32 that are the groups), per 128-column block: d = 256 dh + dl
 * with -z_g sum(a over span g) in the first lane of each span (exact int32), then
 * acc = fma(float(d lanes), s_g s_span by lane, acc); y = hsum(acc). */
AI void mk_w16z(int G, int R, int T, const qmm_plan *p, int64_t r0, int64_t t0) {
    const k_qweight *w = p->w;
    const int64_t n = w->n_in, gs = w->group_size, ng = p->n_group, span = 128 / G;
    const int64_t n_end = ng == 1 ? p->n_pad : n;
    const uint8_t *wr[MR], *c[MR];
    const uint8_t *xa[MT];
    const float *xsc[MT];
    const int32_t *xs[MT];
    __m512 acc[MR][MT];
    const __m512i lane_g = _mm512_loadu_si512((const void *)W16Z_LANE_G[G >> 1]);
    const __mmask16 first = G == 4 ? 0x1111 : 0x0101; /* (G > 1) each span's first lane */
    const char *nxt = z_rows(R, T, p, r0, wr);
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        const char *row = p->a + (size_t)(t0 + t) * p->a_row;
        xa[t] = (const uint8_t *)row;
        xsc[t] = (const float *)(row + qmm_w16_scales_at(QMM_FMT_W16S, p->n_pad));
        xs[t] = (const int32_t *)(row + (size_t)p->n_pad * sizeof(float));
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) acc[r][t] = _mm512_setzero_ps();
    for (int64_t i = 0, k = 0; i < n_end; i += 128, k++) {
        __m512i dl[MR][MT], dh[MR][MT];
        __m512 sw[MR], ss[MT]; /* (G > 1) the rows' and tokens' scales by lane */
        const int64_t g = ng == 1 ? 0 : i / gs;
        if (T == 1 && ng > 1) { /* decode: the next tile's scales and zero points (R * ng of each, contiguous),
                                   spread over this tile's blocks as its codes are (the hardware prefetcher
                                   did not keep up with these streams beside R rows of codes: at 32-column
                                   groups the scales' loads took 40-70% of the kernel's samples) */
            const int64_t nblk = (n_end + 127) / 128, ls = (R * ng * 4 + 63) / 64, lz = (R * ng + 63) / 64;
            const char *ns = (const char *)(w->scales + (r0 + R) * ng);
            for (int64_t l = k * ls / nblk; l < (k + 1) * ls / nblk; l++) _mm_prefetch(ns + 64 * l, _MM_HINT_T0);
            if (w->zeros)
                for (int64_t l = k * lz / nblk; l < (k + 1) * lz / nblk; l++)
                    _mm_prefetch((const char *)(w->zeros + (r0 + R) * ng) + 64 * l, _MM_HINT_T0);
        }
        if (G == 1) {
            int zo[MR];
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) zo[r] = -zero_of(w, (r0 + r) * ng + g);
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) {
                const int32_t sa = xs[t][k];
#pragma GCC unroll 8
                for (int r = 0; r < R; r++) dl[r][t] = _mm512_zextsi128_si512(_mm_cvtsi32_si128(zo[r] * sa));
            }
        } else {
            /* spans (groups) g0 .. g0 + G of this block; in the row's last block only those that
             * start before its end (masked loads: the others read as zero) */
            const int64_t g0 = i / span, nv = i + 128 <= n ? G : (n - i + span - 1) / span;
            const __mmask8 m = (__mmask8)((1u << nv) - 1);
            __m128i sa[MT];
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) {
                sa[t] = _mm_maskz_loadu_epi32(m, xs[t] + g0);
                ss[t] = _mm512_permutexvar_ps(lane_g, _mm512_castps128_ps512(_mm_maskz_loadu_ps(m, xsc[t] + g0)));
            }
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                const int64_t idx = (r0 + r) * ng + g0;
                const __m128i z = w->zeros ? _mm_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, w->zeros + idx)) : _mm_set1_epi32(8);
                sw[r] = _mm512_permutexvar_ps(lane_g, _mm512_castps128_ps512(_mm_maskz_loadu_ps(m, w->scales + idx)));
#pragma GCC unroll 8
                for (int t = 0; t < T; t++) {
                    const __m128i zt = _mm_sub_epi32(_mm_setzero_si128(), _mm_mullo_epi32(z, sa[t]));
                    dl[r][t] = _mm512_maskz_permutexvar_epi32(first, lane_g, _mm512_castsi128_si512(zt));
                }
            }
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; r++)
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) dh[r][t] = _mm512_setzero_si512();
        if (i + 128 <= n) {
            z_codes(R, T, wr, nxt, i, c);
            blk_w16z(R, T, c, xa, i, dl, dh);
        } else { /* the row's last partial block */
            _Alignas(64) uint8_t tmp[MR][64];
            z_tail(R, wr, i, n, tmp, c);
            blk_w16z(R, T, c, xa, i, dl, dh);
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const float s1 = G == 1 ? w->scales[(r0 + r) * ng + g] : 0.0f;
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) {
                const __m512i d = _mm512_add_epi32(_mm512_slli_epi32(dh[r][t], 8), dl[r][t]);
                const __m512 sv = G == 1 ? _mm512_set1_ps(s1 * xsc[t][k]) : _mm512_mul_ps(sw[r], ss[t]);
                acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), sv, acc[r][t]);
            }
        }
    }
    z_store(R, T, p, r0, t0, acc);
}

/* ---- INT8 weights with one group per row, int8 activations (QMM_Q8_ROW) ---- */

/* The rows' codes as q + 128 (unsigned) against R8 x T8 tiles of 64-column blocks; each output's
 * lanes sum (q + 128) a exactly in int32 over the whole row, so the tile is flushed once per row
 * and not per unit: dot = sum(lanes) - (128 + z) sum(a) (exact), y = (double)(s_w s_t) * dot, the
 * reference's own arithmetic (kref_qmatmul), whatever R, T or thread. Prefill tiles hold 4 rows x
 * 6 tokens (24 of the 32 vector registers accumulate); decode ones 4 rows x 1 token, prefetching
 * the next tile's rows as mk_v4z does. */
/* GCC's partial redundancy elimination (-O3's -ftree-partial-pre) turns this tile's loop into
 * one 40% slower (161 against 275 GMAC/s, 2048 x 5632 x 128 tokens, 1 thread, GCC 12) */
#if defined(__GNUC__) && !defined(__clang__)
#define Q8R_NO_PRE __attribute__((optimize("no-tree-partial-pre")))
#else
#define Q8R_NO_PRE
#endif
#ifndef Q8R_MR
#define Q8R_MR 4
#endif
#ifndef Q8R_MT
#define Q8R_MT 6
#endif

AI void q8row_block(int R, int T, const uint8_t *const *wr, const int8_t *const *xa, int64_t i, __mmask64 m,
                    int masked, __m512i d[Q8R_MR][8]) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m512i q[Q8R_MR];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
        q[r] = _mm512_xor_si512(masked ? _mm512_maskz_loadu_epi8(m, wr[r] + i) : _mm512_loadu_si512(wr[r] + i), flip);
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        const __m512i a = masked ? _mm512_maskz_loadu_epi8(m, xa[t] + i) : _mm512_loadu_si512(xa[t] + i);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) d[r][t] = _mm512_dpbusd_epi32(d[r][t], q[r], a);
    }
}

AI void mk_q8row(int R, int T, const qmm_plan *p, int64_t r0, int64_t t0) {
    const k_qweight *w = p->w;
    const int64_t n = w->n_in, n64 = n & ~(int64_t)63;
    const uint8_t *wr[Q8R_MR];
    const int8_t *xa[8];
    int32_t sa[8];
    __m512i d[Q8R_MR][8];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) wr[r] = w->codes + (size_t)(r0 + r) * (size_t)n;
    const char *nxt = (const char *)(w->codes + (size_t)(r0 + R) * (size_t)n); /* the next decode tile's rows */
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        const char *row = p->a + (size_t)(t0 + t) * p->a_row;
        xa[t] = (const int8_t *)row;
        memcpy(&sa[t], row + (size_t)p->n_pad * sizeof(float), sizeof sa[t]); /* the row's one unit sum */
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) d[r][t] = _mm512_setzero_si512();
    int64_t i = 0;
    for (; i < n64; i += 64) {
        if (T == 1)
            for (int o = 0; o < R * 64; o += 64) _mm_prefetch(nxt + (size_t)i * R + o, _MM_HINT_T0);
        q8row_block(R, T, wr, xa, i, 0, 0, d);
    }
    if (i < n) q8row_block(R, T, wr, xa, i, (__mmask64)((1ull << (n - i)) - 1) /* n - i < 64 */, 1, d);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        const int64_t off = 128 + zero_of(w, r0 + r);
        const float sw = w->scales[r0 + r];
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const int64_t dot = (int64_t)_mm512_reduce_add_epi32(d[r][t]) - off * sa[t];
            p->y[(t0 + t) * p->ldy + r0 + r] = (float)((double)(sw * p->s_tok[t0 + t]) * (double)dot);
        }
    }
}

/* rows [r0, r1) for every token: Q8R_MR x Q8R_MT tiles, leftover tokens and rows in smaller ones */
Q8R_NO_PRE static void q8row_rows(const qmm_plan *p, int64_t r0, int64_t r1) {
#define Q8R_T(R)                                                                                                   \
    switch (tt) {                                                                                                  \
    case 1: mk_q8row(R, 1, p, r, t); break;                                                                        \
    case 2: mk_q8row(R, 2, p, r, t); break;                                                                        \
    case 3: mk_q8row(R, 3, p, r, t); break;                                                                        \
    case 4: mk_q8row(R, 4, p, r, t); break;                                                                        \
    case 5: mk_q8row(R, 5, p, r, t); break;                                                                        \
    case 6: mk_q8row(R, 6, p, r, t); break;                                                                        \
    case 7: mk_q8row(R, 7, p, r, t); break;                                                                        \
    default: mk_q8row(R, 8, p, r, t); break;                                                                       \
    }
    for (int64_t t = 0; t < p->n_tok; t += Q8R_MT) {
        const int tt = p->n_tok - t < Q8R_MT ? (int)(p->n_tok - t) : Q8R_MT;
        for (int64_t r = r0; r < r1;) {
            if (r1 - r >= Q8R_MR) {
                Q8R_T(Q8R_MR)
                r += Q8R_MR;
            } else {
                Q8R_T(1)
                r++;
            }
        }
    }
#undef Q8R_T
}

/* ---- tiles ---- */

/* decode: DR rows x 1 token; prefill: PR rows x up to PT tokens (registers: 3 vectors per
 * output for the float kernel, 2 for the VNNI ones); leftover rows one at a time */
#define TILES(MK, DR, PR, PT)                                                                                      \
    if (tt == 1) {                                                                                                 \
        if (rr == DR) MK(DR, 1); else MK(1, 1);                                                                    \
    } else if (tt == 2) {                                                                                          \
        if (rr == PR) MK(PR, 2); else MK(1, 2);                                                                    \
    } else if (tt == 3) {                                                                                          \
        if (rr == PR) MK(PR, 3); else MK(1, 3);                                                                    \
    } else if (PT >= 4) {                                                                                          \
        if (rr == PR) MK(PR, 4); else MK(1, 4);                                                                    \
    }

#define F_DR 4
#define F_PR 2
#define F_PT 4
#define V_DR 4
#define V_PR 4
#define V_PT 3
#define Z_DR 4
#define Z_PR 4
#define Z_PT 2
#define S_DR 4
#define S_PR 2
#define S_PT 4

#define MK_F4(R, T) mk_float(K_QW_INT4, R, T, p, r, t)
#define MK_F8(R, T) mk_float(K_QW_INT8, R, T, p, r, t)
#define MK_FP(R, T) mk_float(K_QW_FP8, R, T, p, r, t)
#define MK_V4(R, T) mk_vnni(K_QW_INT4, 0, R, T, p, r, t)
#define MK_V8(R, T) mk_vnni(K_QW_INT8, 0, R, T, p, r, t)
#define MK_Z4(R, T) mk_v4z(R, T, p, r, t)
#define MK_W4(R, T) mk_vnni(K_QW_INT4, 1, R, T, p, r, t)
#define MK_W8(R, T) mk_vnni(K_QW_INT8, 1, R, T, p, r, t)
#define MK_S4(R, T) mk_w16z(1, R, T, p, r, t)
#define MK_S4G2(R, T) mk_w16z(2, R, T, p, r, t)
#define MK_S4G4(R, T) mk_w16z(4, R, T, p, r, t)
static void tile_f4(const qmm_plan *p, int rr, int tt, int64_t r, int64_t t) { TILES(MK_F4, F_DR, F_PR, F_PT) }
static void tile_f8(const qmm_plan *p, int rr, int tt, int64_t r, int64_t t) { TILES(MK_F8, F_DR, F_PR, F_PT) }
static void tile_fp(const qmm_plan *p, int rr, int tt, int64_t r, int64_t t) { TILES(MK_FP, F_DR, F_PR, F_PT) }
static void tile_v4(const qmm_plan *p, int rr, int tt, int64_t r, int64_t t) { TILES(MK_V4, V_DR, V_PR, V_PT) }
static void tile_v8(const qmm_plan *p, int rr, int tt, int64_t r, int64_t t) { TILES(MK_V8, V_DR, V_PR, V_PT) }
static void tile_z4(const qmm_plan *p, int rr, int tt, int64_t r, int64_t t) { TILES(MK_Z4, Z_DR, Z_PR, Z_PT) }
static void tile_w4(const qmm_plan *p, int rr, int tt, int64_t r, int64_t t) { TILES(MK_W4, V_DR, V_PR, V_PT) }
static void tile_w8(const qmm_plan *p, int rr, int tt, int64_t r, int64_t t) { TILES(MK_W8, V_DR, V_PR, V_PT) }
static void tile_s4(const qmm_plan *p, int rr, int tt, int64_t r, int64_t t) { TILES(MK_S4, S_DR, S_PR, S_PT) }
static void tile_s4g2(const qmm_plan *p, int rr, int tt, int64_t r, int64_t t) { TILES(MK_S4G2, S_DR, S_PR, S_PT) }
static void tile_s4g4(const qmm_plan *p, int rr, int tt, int64_t r, int64_t t) { TILES(MK_S4G4, S_DR, S_PR, S_PT) }

void kcpu_qmm_rows_avx512(const qmm_plan *p, int64_t r0, int64_t r1) {
    if (p->path == QMM_Q8_ROW) {
        q8row_rows(p, r0, r1);
        return;
    }
    const int vnni = p->path != QMM_F512, z = p->fmt == QMM_FMT_I8R128, sp = p->fmt == QMM_FMT_W16S;
    const int PT = sp ? S_PT : z ? Z_PT : vnni ? V_PT : F_PT, PR = sp ? S_PR : z ? Z_PR : vnni ? V_PR : F_PR,
              DR = sp ? S_DR : z ? Z_DR : vnni ? V_DR : F_DR;
    void (*tile)(const qmm_plan *, int, int, int64_t, int64_t) =
        sp  ? (p->span == 32 ? tile_s4g4 : p->span == 64 ? tile_s4g2 : tile_s4)
        : z ? tile_z4
        : p->path == QMM_W16 ? (p->w->kind == K_QW_INT4 ? tile_w4 : tile_w8)
        : p->path == QMM_Q4_VNNI ? tile_v4
        : p->path == QMM_Q8_VNNI ? tile_v8
        : p->w->kind == K_QW_INT4 ? tile_f4
        : p->w->kind == K_QW_INT8 ? tile_f8
                                  : tile_fp;
    for (int64_t t = 0; t < p->n_tok; t += PT) {
        int tt = p->n_tok - t < PT ? (int)(p->n_tok - t) : PT;
        int R = tt == 1 ? DR : PR;
        for (int64_t r = r0; r < r1;) {
            int rr = r1 - r >= R ? R : 1;
            tile(p, rr, tt, r, t);
            r += rr;
        }
    }
}
