/* Non-matmul ops: kcpu_* against kref_* at every ISA level this CPU has, and kref_* against
 * direct double-precision formulas. Error bounds (all stated against the double/reference side):
 *   rmsnorm         kcpu vs kref: max abs <= 2e-6 * max|y|      kref vs double: 1e-6 * max|y|
 *   layernorm       kcpu vs kref: max abs <= 4e-6 * max|y|      kref vs double: 1e-6 * max|y|
 *   softmax         max abs <= 1e-6 and rel <= 1e-5 where p > 1e-30 (both vs double)
 *   silu_mul, gelu  |err| <= 1e-6 + 1e-5 * |y| (kref and kcpu vs double)
 *   rope            kref vs double (same float angle): 1e-6; kcpu vs kref: 1e-6
 *   attention       kref vs naive full-softmax attention in double: max abs <= 1e-5;
 *                   kcpu vs kref: max abs <= 1e-5 (outputs are convex mixes of V in [-1, 1])
 *   int8/fp8 KV     (codes + a scale per token and head) kref and kcpu vs the same attention on
 *                   the dequantized floats: kcpu bit-identical (it dequantizes to the same
 *                   floats), kref max abs <= 1e-5; vs float attention on the unquantized values
 *                   (double): max abs <= KVQ_INT8_TOL (int8) / KVQ_FP8_TOL (fp8) times max|v|;
 *   fp8 e4m3        every finite code round-trips; ties to even; saturation at +-448 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_impl.h"
#include "core/fp16.h"
#include "core/fp8.h"
#include "kernels/ops.h"
#include "test_util.h"

static unsigned long long g_seed = 12345;
static const char *g_isa_name[] = {"scalar", "avx2", "avx512"};
static double g_attn_err_ref, g_attn_err_cpu; /* largest errors seen, printed for the record */

static float *rand_vec(int64_t n, float amp) {
    float *x = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] = amp * test_rand_f(&g_seed);
    return x;
}

static float *copy_vec(const float *x, int64_t n) {
    float *y = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    memcpy(y, x, (size_t)n * sizeof(float));
    return y;
}

static double max_abs_diff(const float *a, const float *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d; /* NaN propagates as a failure */
    }
    return m;
}

static double max_abs(const float *a, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}

static const int64_t g_sizes[] = {1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 257, 1000, 4097};
#define N_SIZES (int)(sizeof g_sizes / sizeof g_sizes[0])

/* ---- norms ---- */

static void test_norms(int isa) {
    for (int si = 0; si < N_SIZES; si++) {
        int64_t n = g_sizes[si];
        for (int variant = 0; variant < 3; variant++) {
            /* variant 2: large common offset, the case where one-pass variance cancels */
            float *x = rand_vec(n, 2.0f), *w = rand_vec(n, 1.5f), *b = rand_vec(n, 0.5f);
            if (variant == 2)
                for (int64_t i = 0; i < n; i++) x[i] += 300.0f;
            const float *wp = variant == 1 ? NULL : w, *bp = variant == 1 ? NULL : b;
            float *yr = malloc(n * sizeof(float)), *yc = copy_vec(x, n);

            /* rmsnorm: reference vs double, then kcpu (in place) vs reference */
            kref_rmsnorm(yr, x, wp, n, 1e-5f);
            double ss = 0;
            for (int64_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
            double sc = 1.0 / sqrt(ss / n + 1e-5);
            double err = 0;
            for (int64_t i = 0; i < n; i++) {
                double d = fabs(yr[i] - x[i] * sc * (wp ? wp[i] : 1.0));
                err = d > err ? d : err;
            }
            double ym = max_abs(yr, n);
            CHECK(err <= 1e-6 * ym, "kref_rmsnorm n=%lld v=%d err=%g", (long long)n, variant, err);
            kcpu_rmsnorm(yc, yc, wp, n, 1e-5f);
            err = max_abs_diff(yc, yr, n);
            CHECK(err <= 2e-6 * ym, "[%s] kcpu_rmsnorm n=%lld v=%d err=%g", g_isa_name[isa], (long long)n, variant, err);

            /* layernorm */
            kref_layernorm(yr, x, wp, bp, n, 1e-5f);
            double mean = 0, var = 0;
            for (int64_t i = 0; i < n; i++) mean += x[i];
            mean /= n;
            for (int64_t i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
            sc = 1.0 / sqrt(var / n + 1e-5);
            err = 0;
            for (int64_t i = 0; i < n; i++) {
                double e = (x[i] - mean) * sc * (wp ? wp[i] : 1.0) + (bp ? bp[i] : 0.0);
                err = fabs(yr[i] - e) > err ? fabs(yr[i] - e) : err;
            }
            ym = max_abs(yr, n);
            CHECK(err <= 1e-6 * ym + 1e-7, "kref_layernorm n=%lld v=%d err=%g", (long long)n, variant, err);
            memcpy(yc, x, n * sizeof(float));
            kcpu_layernorm(yc, yc, wp, bp, n, 1e-5f);
            err = max_abs_diff(yc, yr, n);
            CHECK(err <= 4e-6 * ym + 1e-7, "[%s] kcpu_layernorm n=%lld v=%d err=%g", g_isa_name[isa], (long long)n, variant, err);
            free(x), free(w), free(b), free(yr), free(yc);
        }
    }
}

/* ---- softmax, silu, gelu ---- */

static int check_softmax(const float *p, const float *x, int64_t n, const char *who, int isa) {
    double mx = -INFINITY, sum = 0;
    for (int64_t i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    for (int64_t i = 0; i < n; i++) sum += exp((double)x[i] - mx);
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = exp((double)x[i] - mx) / sum;
        double d = fabs(p[i] - e);
        if (!(d <= 1e-6) || (e > 1e-30 && !(d <= 1e-5 * e + 1e-37))) bad++;
    }
    CHECK(!bad, "[%s] %s n=%lld: %d bad values", g_isa_name[isa], who, (long long)n, bad);
    return bad;
}

static void test_pointwise(int isa) {
    for (int si = 0; si < N_SIZES; si++) {
        int64_t n = g_sizes[si];
        /* softmax: mild, peaky (|x| up to 60 so many e^x underflow), and with -inf entries */
        for (int variant = 0; variant < 3; variant++) {
            float *x = rand_vec(n, variant == 1 ? 60.0f : 4.0f);
            if (variant == 2)
                for (int64_t i = 0; i + 1 < n; i += 3) x[i] = -INFINITY;
            float *pr = copy_vec(x, n), *pc = copy_vec(x, n);
            kref_softmax(pr, n);
            kcpu_softmax(pc, n);
            if (isa == 0) check_softmax(pr, x, n, "kref_softmax", isa);
            check_softmax(pc, x, n, "kcpu_softmax", isa);
            free(x), free(pr), free(pc);
        }

        float *g = rand_vec(n, 12.0f), *u = rand_vec(n, 3.0f);
        if (n > 2) g[0] = -95.0f, g[1] = 95.0f; /* beyond the exp clamps */
        float *gr = copy_vec(g, n), *gc = copy_vec(g, n);
        kref_silu_mul(gr, u, n);
        kcpu_silu_mul(gc, u, n);
        int bad_r = 0, bad_c = 0;
        for (int64_t i = 0; i < n; i++) {
            double e = (double)g[i] / (1.0 + exp(-(double)g[i])) * u[i];
            double tol = 1e-6 + 1e-5 * fabs(e);
            bad_r += !(fabs(gr[i] - e) <= tol);
            bad_c += !(fabs(gc[i] - e) <= tol);
        }
        if (isa == 0) CHECK(!bad_r, "kref_silu_mul n=%lld: %d bad", (long long)n, bad_r);
        CHECK(!bad_c, "[%s] kcpu_silu_mul n=%lld: %d bad", g_isa_name[isa], (long long)n, bad_c);

        memcpy(gr, g, n * sizeof(float));
        memcpy(gc, g, n * sizeof(float));
        kref_gelu(gr, n);
        kcpu_gelu(gc, n);
        bad_r = bad_c = 0;
        for (int64_t i = 0; i < n; i++) {
            double x = g[i];
            double e = 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
            double tol = 1e-6 + 1e-5 * fabs(e);
            bad_r += !(fabs(gr[i] - e) <= tol);
            bad_c += !(fabs(gc[i] - e) <= tol);
        }
        if (isa == 0) CHECK(!bad_r, "kref_gelu n=%lld: %d bad", (long long)n, bad_r);
        CHECK(!bad_c, "[%s] kcpu_gelu n=%lld: %d bad", g_isa_name[isa], (long long)n, bad_c);
        free(g), free(u), free(gr), free(gc);
    }
}

/* ---- rope ---- */

static void test_rope(int isa) {
    static const int cases[][3] = {{64, 64, 4}, {128, 128, 3}, {80, 40, 5}, {64, 16, 2}, {16, 16, 1}, {256, 192, 2}};
    static const int32_t positions[] = {0, 1, 17, 1000, 32767};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int hd = cases[c][0], rd = cases[c][1], nh = cases[c][2];
        float inv_freq[128];
        for (int i = 0; i < rd / 2; i++) inv_freq[i] = powf(10000.0f, -2.0f * i / rd);
        for (int neox = 0; neox < 2; neox++)
            for (size_t pi = 0; pi < sizeof positions / sizeof positions[0]; pi++) {
                int32_t pos = positions[pi];
                float *x = rand_vec((int64_t)nh * hd, 2.0f);
                float *xr = copy_vec(x, (int64_t)nh * hd), *xc = copy_vec(x, (int64_t)nh * hd);
                kref_rope(xr, nh, hd, rd, pos, inv_freq, neox);
                kcpu_rope(xc, nh, hd, rd, pos, inv_freq, neox);
                double err = 0;
                for (int h = 0; h < nh; h++) {
                    const float *xh = x + h * hd;
                    double e[256];
                    for (int d = 0; d < hd; d++) e[d] = xh[d]; /* dims past rope_dim pass through */
                    for (int i = 0; i < rd / 2; i++) {
                        double th = (double)((float)pos * inv_freq[i]); /* the float angle, per spec */
                        int i0 = neox ? i : 2 * i, i1 = neox ? i + rd / 2 : 2 * i + 1;
                        e[i0] = xh[i0] * cos(th) - xh[i1] * sin(th);
                        e[i1] = xh[i0] * sin(th) + xh[i1] * cos(th);
                    }
                    for (int d = 0; d < hd; d++) err = fmax(err, fabs(xr[h * hd + d] - e[d]));
                }
                if (isa == 0) CHECK(err <= 1e-6, "kref_rope hd=%d rd=%d neox=%d pos=%d err=%g", hd, rd, neox, pos, err);
                double errc = max_abs_diff(xc, xr, (int64_t)nh * hd);
                CHECK(errc <= 1e-6, "[%s] kcpu_rope hd=%d rd=%d neox=%d pos=%d err=%g", g_isa_name[isa], hd, rd, neox, pos, errc);
                free(x), free(xr), free(xc);
            }
    }
}

/* ---- attention ---- */

typedef struct {
    int n_q, pos0, n_head, n_head_kv, hd, bs, window;
} attn_case;

/* A paged cache holding positions 0 .. n_kv-1 in shuffled physical blocks; every slot that
 * holds no position is NaN, so reading outside the block table poisons the output. */
typedef struct {
    float *k, *v;
    int32_t *table;
    k_kv_view view;
} test_kv;

static void kv_make(test_kv *c, const attn_case *a) {
    int n_kv = a->pos0 + a->n_q;
    int n_blk = (n_kv + a->bs - 1) / a->bs, n_phys = n_blk + 3;
    size_t slot = (size_t)a->n_head_kv * a->hd;
    size_t total = (size_t)n_phys * a->bs * slot;
    c->k = malloc(total * sizeof(float));
    c->v = malloc(total * sizeof(float));
    for (size_t i = 0; i < total; i++) c->k[i] = c->v[i] = NAN;
    int *perm = malloc(n_phys * sizeof(int));
    for (int i = 0; i < n_phys; i++) perm[i] = i;
    for (int i = n_phys - 1; i > 0; i--) {
        int j = (int)(test_rand_u64(&g_seed) % (unsigned)(i + 1));
        int t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    c->table = malloc(n_blk * sizeof(int32_t));
    for (int i = 0; i < n_blk; i++) c->table[i] = perm[i];
    free(perm);
    for (int p = 0; p < n_kv; p++) {
        size_t off = ((size_t)c->table[p / a->bs] * a->bs + p % a->bs) * slot;
        for (size_t e = 0; e < slot; e++) {
            c->k[off + e] = test_rand_f(&g_seed);
            c->v[off + e] = test_rand_f(&g_seed);
        }
    }
    c->view = (k_kv_view){c->k, c->v, c->table, a->bs, a->n_head_kv, a->hd, 0};
}

static void kv_free(test_kv *c) { free(c->k), free(c->v), free(c->table); }

/* Full softmax over all visible keys, in double, straight from the definition. */
static void attention_naive(double *out, const float *q, const attn_case *a, float scale, const test_kv *c) {
    int group = a->n_head / a->n_head_kv, hd = a->hd;
    size_t slot = (size_t)a->n_head_kv * hd;
    int n_kv = a->pos0 + a->n_q;
    double *s = malloc(n_kv * sizeof(double));
    for (int i = 0; i < a->n_q; i++) {
        int p = a->pos0 + i;
        for (int h = 0; h < a->n_head; h++) {
            const float *qh = q + ((size_t)i * a->n_head + h) * hd;
            double mx = -INFINITY, sum = 0;
            for (int t = 0; t <= p; t++) {
                s[t] = -INFINITY;
                if (a->window > 0 && t <= p - a->window) continue;
                const float *k = c->k + ((size_t)c->table[t / a->bs] * a->bs + t % a->bs) * slot + (size_t)(h / group) * hd;
                double d = 0;
                for (int e = 0; e < hd; e++) d += (double)qh[e] * k[e];
                s[t] = d * scale;
                mx = s[t] > mx ? s[t] : mx;
            }
            double *o = out + ((size_t)i * a->n_head + h) * hd;
            for (int e = 0; e < hd; e++) o[e] = 0;
            for (int t = 0; t <= p; t++) {
                if (s[t] == -INFINITY) continue;
                double w = exp(s[t] - mx);
                sum += w;
                const float *v = c->v + ((size_t)c->table[t / a->bs] * a->bs + t % a->bs) * slot + (size_t)(h / group) * hd;
                for (int e = 0; e < hd; e++) o[e] += w * v[e];
            }
            for (int e = 0; e < hd; e++) o[e] /= sum;
        }
    }
    free(s);
}

/* A half-precision copy of the cache: f16 holds each K/V value rounded to half, and c32 holds
 * the same rounded values as floats. Attention over f16 must equal attention over c32 bit for
 * bit (a half converts to a float exactly; only the storage differs). */
typedef struct {
    uint16_t *k16, *v16;
    float *k32, *v32;
} test_kv_half;

static void kv_make_half(test_kv_half *h, const test_kv *c, const attn_case *a, k_kv_view *v16, k_kv_view *v32) {
    int n_kv = a->pos0 + a->n_q;
    int n_phys = (n_kv + a->bs - 1) / a->bs + 3;
    size_t total = (size_t)n_phys * a->bs * a->n_head_kv * a->hd;
    h->k16 = malloc(total * 2), h->v16 = malloc(total * 2);
    h->k32 = malloc(total * 4), h->v32 = malloc(total * 4);
    for (size_t i = 0; i < total; i++) {
        h->k16[i] = pg_fp32_to_fp16(c->k[i]), h->v16[i] = pg_fp32_to_fp16(c->v[i]);
        h->k32[i] = pg_fp16_to_fp32(h->k16[i]), h->v32[i] = pg_fp16_to_fp32(h->v16[i]);
    }
    *v16 = (k_kv_view){h->k16, h->v16, c->table, a->bs, a->n_head_kv, a->hd, 1};
    *v32 = (k_kv_view){h->k32, h->v32, c->table, a->bs, a->n_head_kv, a->hd, 0};
}

static void kv_free_half(test_kv_half *h) { free(h->k16), free(h->v16), free(h->k32), free(h->v32); }

/* int8 / fp8 copy of the cache in the block layout of k_kv_view (codes, then the scales of the
 * block), and the dequantized values as a float cache (deq): attention over q must equal
 * attention over deq up to where the scale multiplies (kref: after the dot product).
 * Slots no position uses hold NaN scales, so reading them poisons the output. */
typedef struct {
    uint8_t *k, *v;
    float *kd, *vd;
} test_kv_quant;

static void kv_make_quant(test_kv_quant *qc, const test_kv *c, const attn_case *a, int type, k_kv_view *vq, k_kv_view *vd) {
    int n_kv = a->pos0 + a->n_q;
    int n_phys = (n_kv + a->bs - 1) / a->bs + 3;
    size_t blk_bytes = k_kv_block_bytes(type, a->bs, a->n_head_kv, a->hd);
    size_t total = (size_t)n_phys * a->bs * a->n_head_kv * a->hd;
    qc->k = malloc((size_t)n_phys * blk_bytes), qc->v = malloc((size_t)n_phys * blk_bytes);
    qc->kd = malloc(total * 4), qc->vd = malloc(total * 4);
    for (size_t i = 0; i < total; i++) qc->kd[i] = qc->vd[i] = NAN;
    memset(qc->k, 0x7f, (size_t)n_phys * blk_bytes), memset(qc->v, 0x7f, (size_t)n_phys * blk_bytes);
    for (int blk = 0; blk < n_phys; blk++) /* NaN scales everywhere first */
        for (int s = 0; s < a->bs; s++)
            for (int h = 0; h < a->n_head_kv; h++) {
                float nan = NAN;
                size_t so = k_kv_scale_offset(a->bs, a->n_head_kv, a->hd, blk, s, h);
                memcpy(qc->k + so, &nan, 4), memcpy(qc->v + so, &nan, 4);
            }
    for (int p = 0; p < n_kv; p++) {
        int32_t blk = c->table[p / a->bs];
        for (int h = 0; h < a->n_head_kv; h++) {
            size_t f = (((size_t)blk * a->bs + p % a->bs) * a->n_head_kv + h) * a->hd;
            size_t eo = k_kv_elem_offset(type, a->bs, a->n_head_kv, a->hd, blk, p % a->bs, h);
            size_t so = k_kv_scale_offset(a->bs, a->n_head_kv, a->hd, blk, p % a->bs, h);
            float sk, sv;
            k_kv_quantize(type, qc->k + eo, &sk, c->k + f, a->hd);
            k_kv_quantize(type, qc->v + eo, &sv, c->v + f, a->hd);
            memcpy(qc->k + so, &sk, 4), memcpy(qc->v + so, &sv, 4);
            k_kv_dequantize(type, qc->kd + f, qc->k + eo, sk, a->hd);
            k_kv_dequantize(type, qc->vd + f, qc->v + eo, sv, a->hd);
        }
    }
    *vq = (k_kv_view){qc->k, qc->v, c->table, a->bs, a->n_head_kv, a->hd, type};
    *vd = (k_kv_view){qc->kd, qc->vd, c->table, a->bs, a->n_head_kv, a->hd, PAGODA_DTYPE_F32};
}

static void kv_free_quant(test_kv_quant *qc) { free(qc->k), free(qc->v), free(qc->kd), free(qc->vd); }

#define KVQ_INT8_TOL 0.02 /* of max|v|: quantization error, not kernel error */
#define KVQ_FP8_TOL 0.1
static double g_kvq_err[2]; /* worst int8, fp8 error vs the unquantized attention */

static const attn_case g_attn_cases[] = {
    /* n_q pos0 n_head n_kv hd bs window */
    {1, 0, 4, 4, 64, 16, 0},     /* first token: one key */
    {1, 37, 8, 4, 64, 16, 0},    /* decode, GQA 2 */
    {1, 300, 8, 2, 128, 16, 0},  /* decode, GQA 4, several tiles */
    {1, 300, 8, 1, 64, 16, 0},   /* decode, MQA */
    {1, 200, 4, 4, 80, 1, 0},    /* block_size 1 */
    {1, 150, 6, 2, 16, 16, 50},  /* decode, sliding window */
    {37, 0, 4, 4, 64, 16, 0},    /* prefill, no cache */
    {70, 25, 8, 2, 128, 16, 0},  /* prefill on top of a prefilled cache */
    {45, 100, 8, 1, 80, 16, 0},  /* MQA prefill */
    {33, 90, 4, 2, 64, 7, 20},   /* odd block size, window smaller than the chunk */
    {129, 3, 4, 4, 16, 1, 64},   /* bs 1, window, many query tiles */
    {20, 10, 2, 1, 24, 16, 0},   /* head_dim not a multiple of 16 */
    {9, 40, 3, 3, 6, 4, 0},      /* head_dim not a multiple of 8 */
    {200, 0, 32, 4, 64, 16, 0},  /* llama-like prefill shape */
    {1, 1000, 32, 4, 64, 16, 0}, /* llama-like decode shape */
    {5, 70, 64, 1, 32, 16, 0},   /* wide MQA group */
    {6, 90, 4, 2, 256, 16, 0},   /* head_dim 256: smaller packed key tiles */
};

static void test_attention(int isa) {
    for (size_t ci = 0; ci < sizeof g_attn_cases / sizeof g_attn_cases[0]; ci++) {
        const attn_case *a = &g_attn_cases[ci];
        test_kv c;
        kv_make(&c, a);
        size_t n_out = (size_t)a->n_q * a->n_head * a->hd;
        float *q = rand_vec((int64_t)n_out, 3.0f); /* amplitude 3: peakier softmax than uniform */
        float scale = 1.0f / sqrtf((float)a->hd);
        float *yr = malloc(n_out * sizeof(float)), *yc = malloc(n_out * sizeof(float));
        kref_attention(yr, q, a->n_q, a->pos0, a->n_head, scale, a->window, &c.view);
        if (isa == 0) {
            double *yd = malloc(n_out * sizeof(double));
            attention_naive(yd, q, a, scale, &c);
            double err = 0;
            for (size_t i = 0; i < n_out; i++) {
                double d = fabs(yr[i] - yd[i]);
                err = d <= err ? err : d;
            }
            CHECK(err <= 1e-5, "kref_attention case %zu vs double: err=%g", ci, err);
            g_attn_err_ref = err > g_attn_err_ref ? err : g_attn_err_ref;
            free(yd);
        }
        for (int nt = 1; nt <= 2; nt++) {
            kcpu_set_threads(nt);
            memset(yc, 0xff, n_out * sizeof(float)); /* NaN: every output must be written */
            kcpu_attention(yc, q, a->n_q, a->pos0, a->n_head, scale, a->window, &c.view);
            double err = max_abs_diff(yc, yr, (int64_t)n_out);
            CHECK(err <= 1e-5, "[%s] kcpu_attention case %zu threads=%d: err=%g", g_isa_name[isa], ci, nt, err);
            g_attn_err_cpu = err > g_attn_err_cpu ? err : g_attn_err_cpu;
        }
        /* half-precision cache: equal to the float path on the same (rounded) values, bit for bit */
        test_kv_half h;
        k_kv_view v16, v32;
        kv_make_half(&h, &c, a, &v16, &v32);
        float *y16 = malloc(n_out * sizeof(float)), *y32 = malloc(n_out * sizeof(float));
        kcpu_set_threads(2);
        kcpu_attention(y16, q, a->n_q, a->pos0, a->n_head, scale, a->window, &v16);
        kcpu_attention(y32, q, a->n_q, a->pos0, a->n_head, scale, a->window, &v32);
        CHECK(!memcmp(y16, y32, n_out * sizeof(float)), "[%s] f16 KV case %zu differs from f32 of the same values (%g)",
              g_isa_name[isa], ci, max_abs_diff(y16, y32, (int64_t)n_out));
        kref_attention(y16, q, a->n_q, a->pos0, a->n_head, scale, a->window, &v16);
        kref_attention(y32, q, a->n_q, a->pos0, a->n_head, scale, a->window, &v32);
        CHECK(!memcmp(y16, y32, n_out * sizeof(float)), "kref f16 KV case %zu differs from f32 of the same values", ci);
        free(y16), free(y32);
        kv_free_half(&h);
        /* int8 and fp8 caches */
        double *yd = malloc(n_out * sizeof(double));
        attention_naive(yd, q, a, scale, &c); /* float attention on the unquantized values */
        for (int qi = 0; qi < 2; qi++) {
            const int type = qi ? PAGODA_DTYPE_KV_FP8_E4M3 : PAGODA_DTYPE_KV_INT8;
            const char *tn = qi ? "fp8" : "int8";
            test_kv_quant qc;
            k_kv_view vq, vdq;
            kv_make_quant(&qc, &c, a, type, &vq, &vdq);
            float *yq = malloc(n_out * sizeof(float)), *yf = malloc(n_out * sizeof(float));
            kref_attention(yq, q, a->n_q, a->pos0, a->n_head, scale, a->window, &vq);
            kref_attention(yf, q, a->n_q, a->pos0, a->n_head, scale, a->window, &vdq);
            double err = max_abs_diff(yq, yf, (int64_t)n_out);
            CHECK(err <= 1e-5, "kref %s KV case %zu vs its dequantized floats: err=%g", tn, ci, err);
            double qerr = 0;
            for (size_t i = 0; i < n_out; i++) qerr = fabs(yq[i] - yd[i]) > qerr ? fabs(yq[i] - yd[i]) : qerr;
            /* V values are uniform in [-1, 1] (max|v| ~ 1), so the bound relative to max|v| is absolute */
            CHECK(qerr <= (qi ? KVQ_FP8_TOL : KVQ_INT8_TOL), "kref %s KV case %zu vs unquantized: err=%g", tn, ci, qerr);
            g_kvq_err[qi] = qerr > g_kvq_err[qi] ? qerr : g_kvq_err[qi];
            for (int nt = 1; nt <= 2; nt++) {
                kcpu_set_threads(nt);
                float *yc2 = malloc(n_out * sizeof(float)), *yc3 = malloc(n_out * sizeof(float));
                memset(yc2, 0xff, n_out * sizeof(float));
                kcpu_attention(yc2, q, a->n_q, a->pos0, a->n_head, scale, a->window, &vq);
                kcpu_attention(yc3, q, a->n_q, a->pos0, a->n_head, scale, a->window, &vdq);
                CHECK(!memcmp(yc2, yc3, n_out * sizeof(float)),
                      "[%s] kcpu %s KV case %zu threads=%d differs from its dequantized floats (%g)", g_isa_name[isa], tn,
                      ci, nt, max_abs_diff(yc2, yc3, (int64_t)n_out));
                err = max_abs_diff(yc2, yq, (int64_t)n_out);
                CHECK(err <= 1e-5, "[%s] kcpu %s KV case %zu threads=%d vs kref: err=%g", g_isa_name[isa], tn, ci, nt, err);
                free(yc2), free(yc3);
            }
            free(yq), free(yf);
            kv_free_quant(&qc);
        }
        free(yd);
        free(q), free(yr), free(yc);
        kv_free(&c);
    }
}

/* fp8 e4m3fn: every finite code round-trips, halfway values go to the even code, beyond 448
 * saturates; k_kv_quantize's scales and codes. */
static void test_fp8_and_kv_quant(void) {
    for (int c = 0; c < 256; c++) {
        if ((c & 0x7f) == 0x7f) continue;
        float f = pg_fp8_e4m3_to_fp32((uint8_t)c);
        uint8_t back = pg_fp32_to_fp8_e4m3(f);
        CHECK(back == c || (f == 0 && (back & 0x7f) == 0), "fp8 code %#x -> %g -> %#x", c, f, back);
        if ((c & 0x7f) < 0x7e && c != 0x80) { /* midpoint to the next code up in magnitude */
            float g = pg_fp8_e4m3_to_fp32((uint8_t)(c + 1));
            float mid = (f + g) / 2;
            uint8_t r = pg_fp32_to_fp8_e4m3(mid);
            CHECK(r == ((c & 1) ? c + 1 : c), "fp8 tie %g between %#x and %#x gave %#x", mid, c, c + 1, r);
        }
    }
    CHECK(pg_fp8_e4m3_to_fp32(0x7e) == 448.0f && pg_fp8_e4m3_to_fp32(0x01) == 1.0f / 512, "fp8 max and min");
    CHECK(pg_fp32_to_fp8_e4m3(1e6f) == 0x7e && pg_fp32_to_fp8_e4m3(-470.0f) == 0xfe && pg_fp32_to_fp8_e4m3(INFINITY) == 0x7e,
          "fp8 saturation");
    float x[40], y[40];
    uint8_t q[40];
    float s;
    for (int i = 0; i < 40; i++) x[i] = (float)(i - 17) * 0.3f;
    x[5] = -7.0f; /* the largest magnitude */
    k_kv_quantize(PAGODA_DTYPE_KV_INT8, q, &s, x, 40);
    k_kv_dequantize(PAGODA_DTYPE_KV_INT8, y, q, s, 40);
    CHECK(s == 7.0f / 127.0f && (int8_t)q[5] == -127, "int8 scale %g code %d", s, (int8_t)q[5]);
    for (int i = 0; i < 40; i++) CHECK(fabsf(y[i] - x[i]) <= s * 0.5f * 1.0001f, "int8 element %d: %g vs %g", i, y[i], x[i]);
    k_kv_quantize(PAGODA_DTYPE_KV_FP8_E4M3, q, &s, x, 40);
    k_kv_dequantize(PAGODA_DTYPE_KV_FP8_E4M3, y, q, s, 40);
    CHECK(s == 7.0f / 448.0f && q[5] == 0xfe, "fp8 scale %g code %#x", s, q[5]);
    for (int i = 0; i < 40; i++)
        CHECK(fabsf(y[i] - x[i]) <= fabsf(x[i]) / 16 + s / 1024, "fp8 element %d: %g vs %g", i, y[i], x[i]);
    memset(x, 0, sizeof x);
    k_kv_quantize(PAGODA_DTYPE_KV_INT8, q, &s, x, 40);
    CHECK(s == 0.0f && q[0] == 0, "all-zero head");
}

int main(void) {
    test_fp8_and_kv_quant();
    int max = kcpu_isa_max();
    for (int isa = 0; isa <= max; isa++) {
        int got = kcpu_isa_force(isa);
        CHECK(got == isa, "kcpu_isa_force(%d) gave %d", isa, got);
        test_norms(isa);
        test_pointwise(isa);
        test_rope(isa);
        test_attention(isa);
        printf("ops at %s: %s (attention max abs err: kref vs double %.2g, kcpu vs kref %.2g; int8 KV vs unquantized "
               "%.2g, fp8 %.2g)\n",
               g_isa_name[isa], g_test_failures ? "FAILURES" : "pass", g_attn_err_ref, g_attn_err_cpu, g_kvq_err[0],
               g_kvq_err[1]);
        g_attn_err_cpu = 0;
    }
    TEST_DONE();
}
