/* AVX2 kernels of kcpu_qmatmul (driver: qmatmul.c): activation preparation and blocked row x
 * token micro-kernels. A tile of R weight rows x T tokens decodes each group of codes once and
 * reuses it for the T tokens. Every output's arithmetic is the same sequence of vector operations
 * whatever R, T, n_tok or thread (batch and thread invariance):
 *   QMM_FLOAT: per 8 columns w = fma(q, s_g, -z s_g) (FP8: q = e4m3/256 and s_g*256), then
 *              acc = fma(w, x, acc); y = hsum8(acc) * s_t.
 *   QMM_Q4_I8: per 32 columns the integer dot sum (q - z) a by maddubs/madd (exact), then
 *              acc = fma(float(dot lanes), s_g, acc); y = hsum8(acc) * s_t.
 *   QMM_Q8_I8: the same with (q - z) and a widened to int16 (madd).
 * Activation rounding (int8, e4m3) is bit-identical to kref_qmatmul's. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels/cpu/qmatmul_impl.h"
#include "kernels/cpu/simd_avx2.h"

#define AI static inline __attribute__((always_inline))
#define TT 4 /* tokens per tile (prefill) */
#define TR 2 /* rows per tile when several tokens */
#define DR 4 /* rows per tile when one token (decode) */

/* ---- activations ---- */

static float absmax(const float *x, int64_t n) {
    const __m256 mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 m = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) m = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + i), mask), m);
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    float r = _mm_cvtss_f32(h);
    for (; i < n; i++) {
        float a = fabsf(x[i]);
        if (a > r) r = a;
    }
    return r;
}

/* roundf (half away from zero) on 8 lanes, bit for bit: trunc(v), plus v's sign where
 * |v - trunc(v)| >= 0.5 (that difference is exact); a NaN stays NaN */
AI __m256 round_away(__m256 v) {
    const __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u));
    __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m256 d = _mm256_andnot_ps(sign, _mm256_sub_ps(v, t)); /* |v - trunc(v)|, exact */
    __m256 up = _mm256_and_ps(_mm256_cmp_ps(d, _mm256_set1_ps(0.5f), _CMP_GE_OQ),
                              _mm256_or_ps(_mm256_and_ps(v, sign), _mm256_set1_ps(1.0f)));
    return _mm256_add_ps(t, up);
}

/* roundf (half away from zero), clamped to [-127, 127], as int32 */
AI __m256i round_i8(__m256 v) {
    __m256 t = round_away(v);
    t = _mm256_min_ps(_mm256_max_ps(t, _mm256_set1_ps(-127.0f)), _mm256_set1_ps(127.0f));
    return _mm256_cvttps_epi32(t);
}

/* q[i] = roundf(x[i] / s) (ties away from zero) clamped to [-32767, 32767], 0 when s is 0: the
 * scalar rounding of kref_qmatmul's K_ACT_INT16, bit for bit (the division is IEEE's in both) */
static void round_span_int16(const float *x, int64_t n, float s, float *q) {
    int64_t i = 0;
    if (s == 0.0f) {
        memset(q, 0, (size_t)n * sizeof *q);
        return;
    }
    const __m256 vs = _mm256_set1_ps(s), lim = _mm256_set1_ps(32767.0f), nlim = _mm256_set1_ps(-32767.0f);
    for (; i + 8 <= n; i += 8) {
        __m256 t = round_away(_mm256_div_ps(_mm256_loadu_ps(x + i), vs));
        _mm256_storeu_ps(q + i, _mm256_min_ps(lim, _mm256_max_ps(nlim, t))); /* (a NaN stays NaN, as in the scalar form) */
    }
    for (; i < n; i++) {
        float v = roundf(x[i] / s);
        q[i] = v > 32767.0f ? 32767.0f : v < -32767.0f ? -32767.0f : v;
    }
}

/* v rounded to the nearest e4m3 value (ties to even), saturated at +-448 */
AI __m256 round_e4m3(__m256 v) {
    const __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u));
    __m256 a = _mm256_andnot_ps(sign, v);
    /* normals: keep 3 mantissa bits, round to nearest even on the bit pattern */
    __m256i u = _mm256_castps_si256(a);
    u = _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7ffff),
                                             _mm256_and_si256(_mm256_srli_epi32(u, 20), _mm256_set1_epi32(1))));
    __m256 nrm = _mm256_castsi256_ps(_mm256_and_si256(u, _mm256_set1_epi32(~0xfffff)));
    /* below 2^-6: multiples of 2^-9, by adding and removing 2^14 (whose ulp is 2^-9) */
    __m256 sub = _mm256_sub_ps(_mm256_add_ps(a, _mm256_set1_ps(16384.0f)), _mm256_set1_ps(16384.0f));
    __m256 r = _mm256_blendv_ps(sub, nrm, _mm256_cmp_ps(a, _mm256_set1_ps(0x1p-6f), _CMP_GE_OQ));
    r = _mm256_min_ps(r, _mm256_set1_ps(448.0f));
    return _mm256_or_ps(r, _mm256_and_ps(v, sign));
}

/* K_ACT_INT16, span by span, with kref_qmatmul's scalar rounding (bit-identical): the rounded
 * values as floats for the float formats, or the int16 codes (QMM_FMT_W16R / W16, zero padded to
 * n_pad) with the spans' scales after them. src may be the row itself (permuted in place): a span
 * is read whole before its codes are written, which only reach bytes already read; the scales
 * are written last. */
static void prep_row_int16(const qmm_plan *p, const float *src, char *row) {
    const int64_t n = p->w->n_in, n_pad = p->n_pad, span = p->span;
    const int codes = p->fmt == QMM_FMT_W16R || p->fmt == QMM_FMT_W16;
    float sc[codes ? n_pad / 32 + 1 : 1];
    float *f = (float *)row;
    int16_t *o = (int16_t *)row;
    for (int64_t i0 = 0, k = 0; i0 < n; i0 += span, k++) {
        const int64_t len = n - i0 < span ? n - i0 : span;
        float buf[128], q[128];
        memcpy(buf, src + i0, (size_t)len * sizeof(float));
        const float s = absmax(buf, len) / 32767.0f;
        round_span_int16(buf, len, s, q);
        if (!codes) {
            for (int64_t i = 0; i < len; i++) f[i0 + i] = q[i] * s;
            continue;
        }
        sc[k] = s;
        for (int64_t i = len; i < span; i++) q[i] = 0.0f; /* a short last span: zero codes */
        for (int64_t b = 0; b < span; b += 32) {
            int16_t *ob = o + i0 + b;
            if (i0 + b >= n_pad) break;
            if (p->fmt == QMM_FMT_W16R)
                for (int j = 0; j < 16; j++) ob[j] = (int16_t)q[b + 2 * j], ob[16 + j] = (int16_t)q[b + 2 * j + 1];
            else
                for (int j = 0; j < 32; j++) ob[j] = (int16_t)q[b + j];
        }
    }
    if (!codes) {
        memset(f + n, 0, (size_t)(n_pad - n) * sizeof(float));
        return;
    }
    const int64_t n_span = (n + span - 1) / span;
    memcpy(row + qmm_w16_scales_at(p->fmt, n_pad), sc, (size_t)n_span * sizeof(float));
}

/* K_ACT_INT16 as QMM_FMT_W16S (spans of 32, 64 or 128 columns), 128-column block by block: all of
 * a block's floats are read before its planes are written (the planes of block b take bytes
 * [256 b, 256 b + 256), below the floats of block b + 1, so src may be the row itself); each span
 * rounded as prep_row_int16 does; then the spans' scales after the planes and their exact sums
 * (the units' sums) at byte n_pad * 4. */
static void prep_row_w16s(const qmm_plan *p, const float *src, char *row) {
    const int64_t n = p->w->n_in, n_pad = p->n_pad, span = p->span, n_span = (n + span - 1) / span;
    float sc[n_pad / 32 + 1];
    int32_t sa[n_pad / 32 + 1];
    for (int64_t b0 = 0; b0 < n; b0 += 128) {
        const int64_t blen = n - b0 < 128 ? n - b0 : 128;
        float buf[128], q[128];
        memcpy(buf, src + b0, (size_t)blen * sizeof(float));
        for (int64_t j0 = 0; j0 < 128; j0 += span) {
            const int64_t len = blen - j0 < 0 ? 0 : blen - j0 < span ? blen - j0 : span, k = (b0 + j0) / span;
            float s = 0.0f;
            if (len > 0) {
                s = absmax(buf + j0, len) / 32767.0f;
                round_span_int16(buf + j0, len, s, q + j0);
                sc[k] = s;
            }
            int32_t sum = 0; /* at most 128 x 32767: exact */
            for (int64_t j = j0; j < j0 + span; j++) {
                if (j >= j0 + len) q[j] = 0.0f; /* past the row's end: zero codes */
                sum += (int32_t)q[j];
            }
            if (len > 0) sa[k] = sum;
        }
        uint8_t *ob = (uint8_t *)row + 2 * b0;
        for (int j = 0; j < 128; j++) {
            const int a = (int)q[j], at = (j & 1) * 64 + (j >> 1);
            ob[at] = (uint8_t)(a & 255), ob[128 + at] = (uint8_t)(int8_t)(a >> 8); /* (arithmetic shift) */
        }
    }
    memcpy(row + qmm_w16_scales_at(QMM_FMT_W16S, n_pad), sc, (size_t)n_span * sizeof(float));
    memcpy(row + (size_t)n_pad * sizeof(float), sa, (size_t)n_span * sizeof(int32_t));
}

static void prep_row_codes(const qmm_plan *p, const float *xr, int64_t t) {
    const k_qweight *w = p->w;
    const int64_t n = w->n_in, n_pad = p->n_pad;
    char *row = p->a + (size_t)t * p->a_row;
    float *f = (float *)row;
    const float *src = xr;
    if (w->perm) {
        for (int64_t i = 0; i < n; i++) f[i] = xr[w->perm[i]];
        src = f;
    }
    if (p->act == K_ACT_INT16) {
        p->s_tok[t] = 1.0f;
        if (p->fmt == QMM_FMT_W16S) prep_row_w16s(p, src, row);
        else prep_row_int16(p, src, row);
        return;
    }
    if (p->act == K_ACT_FLOAT) {
        if (!w->perm) memcpy(f, xr, (size_t)n * sizeof(float));
        memset(f + n, 0, (size_t)(n_pad - n) * sizeof(float));
        p->s_tok[t] = 1.0f;
        return;
    }
    if (p->act == K_ACT_FP8) {
        float s = absmax(xr, n) / 448.0f;
        p->s_tok[t] = 1.0f;
        int64_t i = 0;
        if (s != 0.0f) {
            __m256 sv = _mm256_set1_ps(s);
            for (; i + 8 <= n; i += 8)
                _mm256_storeu_ps(f + i, _mm256_mul_ps(round_e4m3(_mm256_div_ps(_mm256_loadu_ps(src + i), sv)), sv));
            for (; i < n; i++) f[i] = k_fp8_e4m3_to_float(k_fp8_e4m3_from_float(src[i] / s)) * s;
        }
        memset(f + i, 0, (size_t)(n_pad - i) * sizeof(float));
        return;
    }
    /* K_ACT_INT8, block by block; the output formats are no wider than the floats, so a block can
     * be rewritten in place once it has been read */
    float s = absmax(xr, n) / 127.0f;
    p->s_tok[t] = s;
    const __m256 sv = _mm256_set1_ps(s == 0.0f ? 1.0f : s);
    for (int64_t b = 0; b < n_pad; b += 32) {
        float buf[32];
        const float *blk = src + b;
        if (b + 32 > n) {
            memset(buf, 0, sizeof buf);
            memcpy(buf, src + b, (size_t)(n - b) * sizeof(float));
            blk = buf;
        }
        int32_t q[32];
        if (s == 0.0f)
            memset(q, 0, sizeof q);
        else
            for (int k = 0; k < 32; k += 8)
                _mm256_storeu_si256((__m256i *)(q + k), round_i8(_mm256_div_ps(_mm256_loadu_ps(blk + k), sv)));
        if (p->fmt == QMM_FMT_F32 || p->fmt == QMM_FMT_F32R) {
            for (int k = 0; k < 32; k++) f[b + k] = (float)q[k];
        } else if (p->fmt == QMM_FMT_I8R) {
            int8_t *o = (int8_t *)row + b;
            for (int k = 0; k < 16; k++) o[k] = (int8_t)q[2 * k], o[16 + k] = (int8_t)q[2 * k + 1];
        } else if (p->fmt == QMM_FMT_I8 || p->fmt == QMM_FMT_I8R128) {
            int8_t *o = (int8_t *)row + b;
            for (int k = 0; k < 32; k++) o[k] = (int8_t)q[k];
        } else {
            int16_t *o = (int16_t *)row + b;
            for (int k = 0; k < 32; k++) o[k] = (int16_t)q[k];
        }
    }
}

/* The AVX-512 formats: floats reordered by 32-block (QMM_FMT_F32R), then the unit sums
 * (qmm_plan.unit) of the prepared row, in column order: exact int32 for the int8 codes, floats
 * rounded once from a double sum for the float rows. */
static void prep_row(const qmm_plan *p, const float *xr, int64_t t) {
    prep_row_codes(p, xr, t);
    if (!p->unit || p->fmt == QMM_FMT_W16S) return; /* (W16S: its sums are written with its codes) */
    char *row = p->a + (size_t)t * p->a_row;
    const int64_t n_pad = p->n_pad, u = p->unit;
    if (p->fmt == QMM_FMT_F32R) {
        float *f = (float *)row;
        for (int64_t b = 0; b < n_pad; b += 32) {
            float tmp[32];
            memcpy(tmp, f + b, sizeof tmp);
            for (int k = 0; k < 16; k++) f[b + k] = tmp[2 * k], f[b + 16 + k] = tmp[2 * k + 1];
        }
    }
    void *sums = row + (size_t)n_pad * sizeof(float);
    for (int64_t i0 = 0, k = 0; i0 < n_pad; i0 += u, k++) {
        int64_t i1 = i0 + u < n_pad ? i0 + u : n_pad;
        if (p->fmt == QMM_FMT_I8 || p->fmt == QMM_FMT_I8R || p->fmt == QMM_FMT_I8R128) {
            int32_t sa = 0;
            for (int64_t i = i0; i < i1; i++) sa += ((const int8_t *)row)[i];
            memcpy((int32_t *)sums + k, &sa, sizeof sa);
        } else if (p->fmt == QMM_FMT_W16R || p->fmt == QMM_FMT_W16) {
            int32_t sa = 0; /* at most 128 x 32767: exact */
            for (int64_t i = i0; i < i1; i++) sa += ((const int16_t *)row)[i];
            memcpy((int32_t *)sums + k, &sa, sizeof sa);
        } else {
            double sx = 0.0;
            for (int64_t i = i0; i < i1; i++) sx += ((const float *)row)[i];
            float v = (float)sx;
            memcpy((float *)sums + k, &v, sizeof v);
        }
    }
    /* after the sums (a unit holds whole 128-blocks, and the codes past n_pad are zero) */
    if (p->fmt == QMM_FMT_I8R128) { /* n_pad * 4 >= the codes rounded up to 128 */
        int8_t *o = (int8_t *)row;
        const int64_t n128 = (n_pad + 127) & ~(int64_t)127;
        memset(o + n_pad, 0, (size_t)(n128 - n_pad));
        for (int64_t b = 0; b < n128; b += 128) {
            int8_t tmp[128];
            memcpy(tmp, o + b, sizeof tmp);
            for (int k = 0; k < 64; k++) o[b + k] = tmp[2 * k], o[b + 64 + k] = tmp[2 * k + 1];
        }
    }
}

void kcpu_qmm_prep_avx2(const qmm_plan *p, const float *x, int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) prep_row(p, x + t * p->w->n_in, t);
}

/* ---- weights ---- */

/* 8 codes from p as floats: INT4 q, INT8 q, FP8 e4m3 / 256 (exact, through an IEEE half:
 * sign to bit 15, exponent and mantissa to bits 13..7, i.e. exponent bias 15 = 7 + 8) */
AI __m256 dec8(int kind, const uint8_t *p) {
    if (kind == K_QW_INT4) {
        uint32_t u;
        memcpy(&u, p, 4);
        __m256i v = _mm256_srlv_epi32(_mm256_set1_epi32((int)u), _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28));
        return _mm256_cvtepi32_ps(_mm256_and_si256(v, _mm256_set1_epi32(15)));
    }
    __m128i b = _mm_loadl_epi64((const __m128i *)p);
    if (kind == K_QW_INT8) return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
    __m128i h = _mm_cvtepu8_epi16(b);
    h = _mm_or_si128(_mm_and_si128(_mm_slli_epi16(h, 8), _mm_set1_epi16((short)0x8000)),
                     _mm_and_si128(_mm_slli_epi16(h, 7), _mm_set1_epi16(0x3f80)));
    return _mm256_cvtph_ps(h);
}

static inline int zero_of(const k_qweight *w, int64_t idx) {
    if (!w->zeros) return w->kind == K_QW_INT4 ? 8 : 0;
    return w->kind == K_QW_INT8 ? (int8_t)w->zeros[idx] : w->zeros[idx];
}

/* Row r's group g as w = q * s + o */
AI void group_so(const k_qweight *w, int64_t idx, float *s, float *o) {
    float sc = w->scales[idx];
    if (w->kind == K_QW_FP8) {
        *s = sc * 256.0f, *o = 0.0f;
        return;
    }
    *s = sc, *o = -(float)zero_of(w, idx) * sc;
}

/* ---- micro-kernels ---- */

AI void mk_float(int kind, int R, int T, const qmm_plan *p, int64_t r0, int64_t t0) {
    const k_qweight *w = p->w;
    const int64_t n = w->n_in, gs = w->group_size, ng = p->n_group, nfull = n & ~(int64_t)7;
    const size_t rb = k_qweight_row_bytes(w);
    const int sh = kind == K_QW_INT4; /* byte of column i: i >> sh */
    const uint8_t *wr[DR];
    const float *xa[TT];
    __m256 acc[DR][TT];
    for (int r = 0; r < R; r++) wr[r] = w->codes + (size_t)(r0 + r) * rb;
    for (int t = 0; t < T; t++) xa[t] = (const float *)(p->a + (size_t)(t0 + t) * p->a_row);
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_ps();
    for (int64_t g = 0; g < ng; g++) {
        int64_t i0 = g * gs, i1 = i0 + gs < n ? i0 + gs : n, e = i1 < nfull ? i1 : nfull, i = i0;
        __m256 sv[DR], ov[DR];
        for (int r = 0; r < R; r++) {
            float s, o;
            group_so(w, (r0 + r) * ng + g, &s, &o);
            sv[r] = _mm256_set1_ps(s), ov[r] = _mm256_set1_ps(o);
        }
        for (; i < e; i += 8) {
            if (T == 1 && ((i >> sh) & 63) == 0) /* decode: each row is a stream read once */
                for (int r = 0; r < R; r++) _mm_prefetch((const char *)wr[r] + (i >> sh) + 512, _MM_HINT_T0);
            __m256 wv[DR];
            for (int r = 0; r < R; r++) wv[r] = _mm256_fmadd_ps(dec8(kind, wr[r] + (i >> sh)), sv[r], ov[r]);
            for (int t = 0; t < T; t++) {
                __m256 xv = _mm256_loadu_ps(xa[t] + i);
                for (int r = 0; r < R; r++) acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
            }
        }
        if (i < i1) { /* the row's last n % 8 columns (the activations are zero padded) */
            __m256 wv[DR];
            for (int r = 0; r < R; r++) {
                uint8_t tmp[8] = {0};
                memcpy(tmp, wr[r] + (i >> sh), (size_t)((n - i) >> sh));
                wv[r] = _mm256_fmadd_ps(dec8(kind, tmp), sv[r], ov[r]);
            }
            for (int t = 0; t < T; t++) {
                __m256 xv = _mm256_loadu_ps(xa[t] + i);
                for (int r = 0; r < R; r++) acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) p->y[(t0 + t) * p->ldy + r0 + r] = hsum8(acc[r][t]) * p->s_tok[t0 + t];
}

/* 16 bytes of nibbles -> 32 bytes: the low nibbles (even columns) then the high ones (odd) */
AI __m256i nib32(const uint8_t *p) {
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(15));
}

AI void mk_q4i8(int R, int T, const qmm_plan *p, int64_t r0, int64_t t0) {
    const k_qweight *w = p->w;
    const int64_t n = w->n_in, gs = w->group_size, ng = p->n_group;
    const size_t rb = k_qweight_row_bytes(w);
    const int sym = !w->zeros;
    const __m256i ones = _mm256_set1_epi16(1), eight = _mm256_set1_epi8(8);
    const uint8_t *wr[DR];
    const int8_t *xa[TT];
    __m256 acc[DR][TT];
    for (int r = 0; r < R; r++) wr[r] = w->codes + (size_t)(r0 + r) * rb;
    for (int t = 0; t < T; t++) xa[t] = (const int8_t *)(p->a + (size_t)(t0 + t) * p->a_row);
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_ps();
    for (int64_t g = 0; g < ng; g++) {
        int64_t i0 = g * gs, i1 = i0 + gs < n ? i0 + gs : n;
        __m256 sv[DR];
        __m256i zb[DR];
        for (int r = 0; r < R; r++) {
            int64_t idx = (r0 + r) * ng + g;
            sv[r] = _mm256_set1_ps(w->scales[idx]);
            zb[r] = sym ? eight : _mm256_set1_epi8((char)w->zeros[idx]);
        }
        for (int64_t i = i0; i < i1; i += 32) {
            __m256i q[DR];
            if (i + 32 <= n) {
                for (int r = 0; r < R; r++) {
                    if (T == 1 && (i & 127) == 0) _mm_prefetch((const char *)wr[r] + i / 2 + 512, _MM_HINT_T0);
                    q[r] = nib32(wr[r] + i / 2);
                }
            } else { /* last partial block: zero codes against zero activations */
                for (int r = 0; r < R; r++) {
                    uint8_t tmp[16] = {0};
                    memcpy(tmp, wr[r] + i / 2, (size_t)(n - i) / 2);
                    q[r] = nib32(tmp);
                }
            }
            for (int t = 0; t < T; t++) {
                __m256i a = _mm256_loadu_si256((const __m256i *)(xa[t] + i));
                __m256i c = sym ? _mm256_maddubs_epi16(eight, a) : _mm256_setzero_si256();
                for (int r = 0; r < R; r++) {
                    /* q*a pairs minus z*a pairs: |.| <= 2 * 15 * 127, no int16 overflow */
                    __m256i d = _mm256_sub_epi16(_mm256_maddubs_epi16(q[r], a), sym ? c : _mm256_maddubs_epi16(zb[r], a));
                    acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(d, ones)), sv[r], acc[r][t]);
                }
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) p->y[(t0 + t) * p->ldy + r0 + r] = hsum8(acc[r][t]) * p->s_tok[t0 + t];
}

AI void mk_q8i8(int R, int T, const qmm_plan *p, int64_t r0, int64_t t0) {
    const k_qweight *w = p->w;
    const int64_t n = w->n_in, gs = w->group_size, ng = p->n_group;
    const size_t rb = k_qweight_row_bytes(w);
    const uint8_t *wr[DR];
    const int16_t *xa[TT];
    __m256 acc[DR][TT];
    for (int r = 0; r < R; r++) wr[r] = w->codes + (size_t)(r0 + r) * rb;
    for (int t = 0; t < T; t++) xa[t] = (const int16_t *)(p->a + (size_t)(t0 + t) * p->a_row);
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_ps();
    for (int64_t g = 0; g < ng; g++) {
        int64_t i0 = g * gs, i1 = i0 + gs < n ? i0 + gs : n;
        __m256 sv[DR];
        __m256i zv[DR];
        for (int r = 0; r < R; r++) {
            int64_t idx = (r0 + r) * ng + g;
            sv[r] = _mm256_set1_ps(w->scales[idx]);
            zv[r] = _mm256_set1_epi16((short)zero_of(w, idx));
        }
        for (int64_t i = i0; i < i1; i += 32) {
            __m256i lo[DR], hi[DR];
            for (int r = 0; r < R; r++) {
                const uint8_t *c = wr[r] + i;
                uint8_t tmp[32];
                if (i + 32 > n) { /* last partial block */
                    memset(tmp, 0, sizeof tmp);
                    memcpy(tmp, c, (size_t)(n - i));
                    c = tmp;
                } else if (T == 1 && (i & 63) == 0) {
                    _mm_prefetch((const char *)c + 512, _MM_HINT_T0);
                }
                /* q - z in int16: |.| <= 255, and madd's pair sums <= 2 * 255 * 127 */
                lo[r] = _mm256_sub_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)c)), zv[r]);
                hi[r] = _mm256_sub_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(c + 16))), zv[r]);
            }
            for (int t = 0; t < T; t++) {
                __m256i a0 = _mm256_loadu_si256((const __m256i *)(xa[t] + i));
                __m256i a1 = _mm256_loadu_si256((const __m256i *)(xa[t] + i + 16));
                for (int r = 0; r < R; r++) {
                    __m256i d = _mm256_add_epi32(_mm256_madd_epi16(lo[r], a0), _mm256_madd_epi16(hi[r], a1));
                    acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), sv[r], acc[r][t]);
                }
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) p->y[(t0 + t) * p->ldy + r0 + r] = hsum8(acc[r][t]) * p->s_tok[t0 + t];
}

/* QMM_W16_AVX2: INT4 x int16 activations as byte planes (QMM_FMT_W16S; spans of 128 / G columns),
 * per 64-column half h of each 128-column block: with a = 256 hi + lo, sum q a = sum lo q +
 * 256 sum q hi by maddubs (lo unsigned x q, q unsigned x hi signed; a pair's sum at most
 * 2 x 255 x 15, two pairs added in int16 stay below 2^15) and madd into int32 lanes, exact; lane j
 * covers columns 64h + 8j .. 64h + 8j + 7, so a half is one span (G <= 2) or two (G = 4: lanes
 * 0-3 and 4-7). Per half: d = 256 dh + dl with -z sum(a) of each span in its first lane (G = 1:
 * the block's, in half 0), acc = fma(float(d lanes), s_g s_span by lane, acc); y = hsum8(acc).
 * Spans past the row's end (its last block) take scale 0 and no zero term. */
AI void mk_s2(int G, int R, int T, const qmm_plan *p, int64_t r0, int64_t t0) {
    const k_qweight *w = p->w;
    const int64_t n = w->n_in, gs = w->group_size, ng = p->n_group, span = 128 / G;
    const int64_t n_end = ng == 1 ? p->n_pad : n, n_span = (n + span - 1) / span;
    const size_t rb = k_qweight_row_bytes(w);
    const __m256i m4 = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
    const uint8_t *xa[2];
    const float *xsc[2];
    const int32_t *xs[2];
    __m256 acc[2][2];
    for (int t = 0; t < T; t++) {
        const char *row = p->a + (size_t)(t0 + t) * p->a_row;
        xa[t] = (const uint8_t *)row;
        xsc[t] = (const float *)(row + qmm_w16_scales_at(QMM_FMT_W16S, p->n_pad));
        xs[t] = (const int32_t *)(row + (size_t)p->n_pad * sizeof(float));
        for (int r = 0; r < R; r++) acc[r][t] = _mm256_setzero_ps();
    }
    for (int64_t i = 0; i < n_end; i += 128) {
        const uint8_t *c[2];
        _Alignas(32) uint8_t tmp[2][64];
        for (int r = 0; r < R; r++) {
            c[r] = w->codes + (size_t)(r0 + r) * rb + i / 2;
            if (i + 128 > n) { /* the row's last, partial block: zero padded */
                memset(tmp[r], 0, 64);
                memcpy(tmp[r], c[r], (size_t)(n - i) / 2);
                c[r] = tmp[r];
            }
        }
        for (int h = 0; h < 2; h++) {
            /* the spans of this half: ka (lanes 0-3) and kb (lanes 4-7; the same unless G = 4) */
            const int64_t ka = (i + 64 * h) / span, kb = G == 4 ? ka + 1 : ka;
            __m256i dl[2][2], dh[2][2];
            for (int r = 0; r < R; r++) {
                const int64_t row_g = (int64_t)(r0 + r) * ng;
                for (int t = 0; t < T; t++) {
                    int32_t za = 0, zb = 0;
                    if (G == 1) {
                        if (h == 0) za = -zero_of(w, row_g + (ng == 1 ? 0 : i / gs)) * xs[t][ka];
                    } else {
                        if (ka < n_span) za = -zero_of(w, row_g + ka) * xs[t][ka];
                        if (G == 4 && kb < n_span) zb = -zero_of(w, row_g + kb) * xs[t][kb];
                    }
                    dl[r][t] = _mm256_setr_epi32(za, 0, 0, 0, zb, 0, 0, 0);
                    dh[r][t] = _mm256_setzero_si256();
                }
            }
            __m256i lo[2], hi[2];
            for (int r = 0; r < R; r++) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(c[r] + 32 * h));
                lo[r] = _mm256_and_si256(v, m4);
                hi[r] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            }
            for (int t = 0; t < T; t++) {
                const uint8_t *b = xa[t] + 2 * i + 32 * h;
                const __m256i le = _mm256_loadu_si256((const __m256i *)b);
                const __m256i lod = _mm256_loadu_si256((const __m256i *)(b + 64));
                const __m256i he = _mm256_loadu_si256((const __m256i *)(b + 128));
                const __m256i hod = _mm256_loadu_si256((const __m256i *)(b + 192));
                for (int r = 0; r < R; r++) {
                    const __m256i pl = _mm256_add_epi16(_mm256_maddubs_epi16(le, lo[r]), _mm256_maddubs_epi16(lod, hi[r]));
                    const __m256i ph = _mm256_add_epi16(_mm256_maddubs_epi16(lo[r], he), _mm256_maddubs_epi16(hi[r], hod));
                    dl[r][t] = _mm256_add_epi32(dl[r][t], _mm256_madd_epi16(pl, ones));
                    dh[r][t] = _mm256_add_epi32(dh[r][t], _mm256_madd_epi16(ph, ones));
                }
            }
            for (int r = 0; r < R; r++) {
                const int64_t row_g = (int64_t)(r0 + r) * ng, g1 = row_g + (ng == 1 ? 0 : i / gs);
                for (int t = 0; t < T; t++) {
                    float sa, sb;
                    if (G == 1) {
                        sa = sb = w->scales[g1] * xsc[t][i / 128];
                    } else {
                        sa = ka < n_span ? w->scales[row_g + ka] * xsc[t][ka] : 0.0f;
                        sb = G == 2 ? sa : kb < n_span ? w->scales[row_g + kb] * xsc[t][kb] : 0.0f;
                    }
                    const __m256i d = _mm256_add_epi32(_mm256_slli_epi32(dh[r][t], 8), dl[r][t]);
                    acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_setr_m128(_mm_set1_ps(sa), _mm_set1_ps(sb)),
                                                acc[r][t]);
                }
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) p->y[(t0 + t) * p->ldy + r0 + r] = hsum8(acc[r][t]) * p->s_tok[t0 + t];
}

/* rows [r0, r1) for every token: decode tiles of 2 rows, prefill ones of 1 row x 2 tokens (16
 * vector registers) */
static void s2_rows(const qmm_plan *p, int64_t r0, int64_t r1) {
    const int G = p->span == 32 ? 4 : p->span == 64 ? 2 : 1;
#define S2(R_, T_) (G == 4 ? mk_s2(4, R_, T_, p, r, t) : G == 2 ? mk_s2(2, R_, T_, p, r, t) : mk_s2(1, R_, T_, p, r, t))
    for (int64_t t = 0; t < p->n_tok; t += 2) {
        const int tt = p->n_tok - t < 2 ? 1 : 2;
        for (int64_t r = r0; r < r1;) {
            if (tt == 2) S2(1, 2), r++;
            else if (r1 - r >= 2) S2(2, 1), r += 2;
            else S2(1, 1), r++;
        }
    }
#undef S2
}

/* Any group size: one output at a time, scalar (activations in QMM_FMT_F32). */
static void generic_one(const qmm_plan *p, int64_t r, int64_t t) {
    const k_qweight *w = p->w;
    const int64_t n = w->n_in, gs = w->group_size, ng = p->n_group;
    const uint8_t *c = w->codes + (size_t)r * k_qweight_row_bytes(w);
    const float *a = (const float *)(p->a + (size_t)t * p->a_row);
    const int int_dot = p->act == K_ACT_INT8 && w->kind != K_QW_FP8;
    float acc = 0.0f;
    for (int64_t g = 0; g < ng; g++) {
        int64_t i0 = g * gs, i1 = i0 + gs < n ? i0 + gs : n, idx = r * ng + g;
        float s = w->scales[idx];
        int z = zero_of(w, idx);
        if (int_dot) {
            int32_t d = 0;
            for (int64_t i = i0; i < i1; i++) {
                int q = w->kind == K_QW_INT4 ? (c[i / 2] >> ((i & 1) * 4)) & 15 : (int8_t)c[i];
                d += (q - z) * (int32_t)a[i];
            }
            acc += s * (float)d;
        } else {
            for (int64_t i = i0; i < i1; i++) {
                float u = w->kind == K_QW_INT4   ? (float)(((c[i / 2] >> ((i & 1) * 4)) & 15) - z)
                          : w->kind == K_QW_INT8 ? (float)((int8_t)c[i] - z)
                                                 : k_fp8_e4m3_to_float(c[i]);
                acc += (s * u) * a[i];
            }
        }
    }
    p->y[t * p->ldy + r] = acc * p->s_tok[t];
}

/* ---- tiles ---- */

#define TILES(MK)                                                                                                  \
    switch (rr * 8 + tt) {                                                                                         \
    case 4 * 8 + 1: MK(4, 1); break;                                                                               \
    case 1 * 8 + 1: MK(1, 1); break;                                                                               \
    case 2 * 8 + 2: MK(2, 2); break;                                                                               \
    case 1 * 8 + 2: MK(1, 2); break;                                                                               \
    case 2 * 8 + 3: MK(2, 3); break;                                                                               \
    case 1 * 8 + 3: MK(1, 3); break;                                                                               \
    case 2 * 8 + 4: MK(2, 4); break;                                                                               \
    default: MK(1, 4); break;                                                                                      \
    }

#define MK_F4(R, T) mk_float(K_QW_INT4, R, T, p, r, t)
#define MK_F8(R, T) mk_float(K_QW_INT8, R, T, p, r, t)
#define MK_FP(R, T) mk_float(K_QW_FP8, R, T, p, r, t)
#define MK_Q4(R, T) mk_q4i8(R, T, p, r, t)
#define MK_Q8(R, T) mk_q8i8(R, T, p, r, t)
static void tile_f4(const qmm_plan *p, int rr, int tt, int64_t r, int64_t t) { TILES(MK_F4) }
static void tile_f8(const qmm_plan *p, int rr, int tt, int64_t r, int64_t t) { TILES(MK_F8) }
static void tile_fp(const qmm_plan *p, int rr, int tt, int64_t r, int64_t t) { TILES(MK_FP) }
static void tile_q4(const qmm_plan *p, int rr, int tt, int64_t r, int64_t t) { TILES(MK_Q4) }
static void tile_q8(const qmm_plan *p, int rr, int tt, int64_t r, int64_t t) { TILES(MK_Q8) }

void kcpu_qmm_rows_avx2(const qmm_plan *p, int64_t r0, int64_t r1) {
    if (p->path == QMM_GENERIC) {
        for (int64_t t = 0; t < p->n_tok; t++)
            for (int64_t r = r0; r < r1; r++) generic_one(p, r, t);
        return;
    }
    if (p->path == QMM_W16_AVX2) {
        s2_rows(p, r0, r1);
        return;
    }
    void (*tile)(const qmm_plan *, int, int, int64_t, int64_t) =
        p->path == QMM_Q4_I8 ? tile_q4
        : p->path == QMM_Q8_I8 ? tile_q8
        : p->w->kind == K_QW_INT4 ? tile_f4
        : p->w->kind == K_QW_INT8 ? tile_f8
                                  : tile_fp;
    for (int64_t t = 0; t < p->n_tok; t += TT) {
        int tt = p->n_tok - t < TT ? (int)(p->n_tok - t) : TT;
        int R = tt == 1 ? DR : TR;
        for (int64_t r = r0; r < r1;) {
            int rr = r1 - r >= R ? R : 1;
            tile(p, rr, tt, r, t);
            r += rr;
        }
    }
}
