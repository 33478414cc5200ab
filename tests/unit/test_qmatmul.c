/* Matrix products over Hugging Face quantized weights (kernels/qmatmul.h). Checks:
 *   - e4m3fn: every code round trips through float; k_fp8_e4m3_from_float equals a brute-force
 *     nearest code (ties to the even code, saturating at +-448) on random and edge values;
 *   - kref_qmatmul against a naive double-precision dequantize-then-multiply written here (the
 *     activations rounded by this file's own reading of the header for K_ACT_INT8 / K_ACT_FP8 /
 *     K_ACT_INT16):
 *       |y_ref - y_naive| <= 1e-5 * sum_i |w_i x'_i| + 1e-30;
 *   - kcpu_qmatmul against kref_qmatmul at every ISA level this CPU has:
 *       |y_cpu - y_ref| <= (16 + n_in / 8) * FLT_EPSILON * S,  S = sum_i |scale| (|q_i - z| + |z|) |x'_i|
 *     (S is sum |w||x'| with z's magnitude added: the float kernels dequantize as q*s - z*s, so
 *     their rounding scales with |z s| too; FP8: z = 0);
 *   - batch and thread invariance: each row of a 17-token product is bit-identical to the same
 *     row computed alone (n_tok = 1), with 1 and 2 threads. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/fp16.h"
#include "kernels/cpu/cpu_impl.h"
#include "kernels/kernels.h"
#include "kernels/qmatmul.h"
#include "test_util.h"

static unsigned long long g_seed = 777;

/* ---- e4m3 ---- */

/* value of a finite e4m3 magnitude code 0..0x7e, computed independently of the kernel */
static double e4m3_mag(int c) {
    int e = c >> 3, m = c & 7;
    return e == 0 ? m * pow(2.0, -9) : (8 + m) * pow(2.0, e - 10);
}

static uint8_t brute_from_float(float x) {
    if (isnan(x)) return 0x7f;
    uint8_t sign = signbit(x) ? 0x80 : 0;
    double a = fabs((double)x);
    if (a >= 448.0) return sign | 0x7e;
    int best = 0;
    double bd = a;
    for (int c = 1; c <= 0x7e; c++) {
        double d = fabs(e4m3_mag(c) - a);
        if (d < bd || (d == bd && (c & 1) == 0)) best = c, bd = d;
    }
    return sign | (uint8_t)best;
}

static void test_fp8(void) {
    for (int c = 0; c < 256; c++) {
        float v = k_fp8_e4m3_to_float((uint8_t)c);
        if ((c & 0x7f) == 0x7f) {
            CHECK(isnan(v), "code 0x%02x should be NaN, got %g", c, v);
            continue;
        }
        double want = (c & 0x80 ? -1 : 1) * e4m3_mag(c & 0x7f);
        CHECK(v == want && (signbit(v) != 0) == ((c & 0x80) != 0), "code 0x%02x: %g, want %g", c, v, want);
        CHECK(k_fp8_e4m3_from_float(v) == c, "code 0x%02x does not round trip (got 0x%02x)", c,
              k_fp8_e4m3_from_float(v));
    }
    CHECK(k_fp8_e4m3_from_float(NAN) == 0x7f, "NaN");
    float edge[] = {0.0f, -0.0f, 448.0f, -448.0f, 449.0f, 464.0f, 479.0f, 480.0f, 500.0f, 1e6f, -1e30f,
                    INFINITY, -INFINITY, 1e-30f, -1e-30f, 0x1p-10f, 0x1.8p-9f, 0x1p-9f, 0x1p-6f, 0x1.fp-7f,
                    0x1.ep-7f, 416.0f, 432.0f, 440.0f, 0x1p-11f, 0x1.00002p-10f, 240.0f, 248.0f, 1.0625f, 1.1875f};
    for (size_t k = 0; k < sizeof edge / sizeof edge[0]; k++)
        CHECK(k_fp8_e4m3_from_float(edge[k]) == brute_from_float(edge[k]), "from_float(%a) = 0x%02x, want 0x%02x",
              edge[k], k_fp8_e4m3_from_float(edge[k]), brute_from_float(edge[k]));
    /* every midpoint between neighbouring codes (ties), and just either side of it */
    for (int c = 0; c < 0x7e; c++) {
        float mid = (float)((e4m3_mag(c) + e4m3_mag(c + 1)) / 2);
        float v[3] = {mid, nextafterf(mid, 0.0f), nextafterf(mid, 1e9f)};
        for (int k = 0; k < 3; k++)
            for (int s = -1; s <= 1; s += 2)
                CHECK(k_fp8_e4m3_from_float(s * v[k]) == brute_from_float(s * v[k]),
                      "from_float(%a) = 0x%02x, want 0x%02x", s * v[k], k_fp8_e4m3_from_float(s * v[k]),
                      brute_from_float(s * v[k]));
    }
    for (int k = 0; k < 20000; k++) { /* random magnitudes 2^-14 .. 2^10 */
        float x = ldexpf(test_rand_f(&g_seed), (int)(test_rand_u64(&g_seed) % 25) - 14);
        CHECK(k_fp8_e4m3_from_float(x) == brute_from_float(x), "from_float(%a) = 0x%02x, want 0x%02x", x,
              k_fp8_e4m3_from_float(x), brute_from_float(x));
    }
}

/* ---- products ---- */

typedef struct {
    k_qweight w;
    k_act_kind act;
    int64_t n_tok;
    uint8_t *codes, *zeros;
    float *scales, *x;
    int32_t *perm;
    double *y_naive, *s_abs, *s_z; /* [n_tok][n_out]: naive result, sum |w x'|, S of the cpu bound */
} qcase;

static const char *kind_name(int k) { return k == K_QW_INT4 ? "int4" : k == K_QW_INT8 ? "int8" : "fp8"; }
static const char *act_name(int a) {
    return a == K_ACT_FLOAT ? "float" : a == K_ACT_INT8 ? "int8" : a == K_ACT_INT16 ? "int16" : "fp8";
}

/* x' of one row by this test's reading of the header (x'[j] for input feature j) */
static void test_act_row(const float *x, int64_t n, k_act_kind act, const k_qweight *w, double *xq) {
    if (act == K_ACT_INT16) {
        /* spans of columns (after the permutation): 128 with one group, else the largest divisor
           of the group size up to 128; s = max|x| / 32767 over the span, q = round half away */
        int64_t span = 128;
        if (w->group_size < n)
            for (span = w->group_size < 128 ? w->group_size : 128; w->group_size % span; span--) {}
        for (int64_t i0 = 0; i0 < n; i0 += span) {
            int64_t i1 = i0 + span < n ? i0 + span : n;
            float m = 0.0f;
            for (int64_t i = i0; i < i1; i++) {
                float v = fabsf(x[w->perm ? w->perm[i] : i]);
                m = v > m ? v : m;
            }
            float s = m / 32767.0f;
            for (int64_t i = i0; i < i1; i++) {
                int64_t j = w->perm ? w->perm[i] : i;
                float q = s == 0.0f ? 0.0f : roundf(x[j] / s);
                q = q > 32767 ? 32767 : q < -32767 ? -32767 : q;
                xq[j] = (double)(q * s);
            }
        }
        return;
    }
    float amax = 0.0f;
    for (int64_t j = 0; j < n; j++) amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
    for (int64_t j = 0; j < n; j++) {
        if (act == K_ACT_FLOAT) {
            xq[j] = x[j];
        } else if (act == K_ACT_INT8) {
            float s = amax / 127.0f;
            float q = s == 0.0f ? 0.0f : roundf(x[j] / s);
            q = q > 127 ? 127 : q < -127 ? -127 : q;
            xq[j] = (double)q * s;
        } else {
            float s = amax / 448.0f;
            uint8_t c = s == 0.0f ? 0 : brute_from_float(x[j] / s);
            xq[j] = (double)((float)((c & 0x80 ? -1 : 1) * e4m3_mag(c & 0x7f)) * s);
        }
    }
}

static void qcase_init(qcase *c, int kind, k_act_kind act, int with_zeros, int with_perm, int64_t gs, int64_t n_in,
                       int64_t n_out, int64_t n_tok) {
    memset(c, 0, sizeof *c);
    k_qweight *w = &c->w;
    w->kind = kind, w->n_in = n_in, w->n_out = n_out, w->group_size = gs;
    c->act = act, c->n_tok = n_tok;
    int64_t ng = k_qweight_n_group(w);
    size_t rb = k_qweight_row_bytes(w);
    c->codes = malloc(rb * (size_t)n_out);
    for (size_t i = 0; i < rb * (size_t)n_out; i++) {
        uint8_t b = (uint8_t)test_rand_u64(&g_seed);
        if (kind == K_QW_FP8 && (b & 0x7f) == 0x7f) b ^= 1;
        c->codes[i] = b;
    }
    c->scales = malloc(sizeof(float) * (size_t)(n_out * ng));
    for (int64_t i = 0; i < n_out * ng; i++)
        c->scales[i] = (0.01f + 0.05f * fabsf(test_rand_f(&g_seed))) * (i % 5 == 3 ? -1.0f : 1.0f);
    if (with_zeros) {
        c->zeros = malloc((size_t)(n_out * ng));
        for (int64_t i = 0; i < n_out * ng; i++)
            c->zeros[i] = kind == K_QW_INT4 ? (uint8_t)(test_rand_u64(&g_seed) % 16) : (uint8_t)test_rand_u64(&g_seed);
    }
    if (with_perm) {
        c->perm = malloc(sizeof(int32_t) * (size_t)n_in);
        for (int64_t i = 0; i < n_in; i++) c->perm[i] = (int32_t)i;
        for (int64_t i = n_in - 1; i > 0; i--) {
            int64_t j = (int64_t)(test_rand_u64(&g_seed) % (unsigned long long)(i + 1));
            int32_t tmp = c->perm[i];
            c->perm[i] = c->perm[j], c->perm[j] = tmp;
        }
    }
    w->codes = c->codes, w->scales = c->scales, w->zeros = c->zeros, w->perm = c->perm;
    c->x = malloc(sizeof(float) * (size_t)(n_in * n_tok));
    for (int64_t t = 0; t < n_tok; t++)
        for (int64_t i = 0; i < n_in; i++) c->x[t * n_in + i] = (t % 4 == 2 ? 3.0f : 1.0f) * test_rand_f(&g_seed);
    if (n_tok > 1) memset(c->x + n_in, 0, sizeof(float) * (size_t)n_in); /* an all-zero row */

    /* naive: dequantize in double, multiply by x' */
    c->y_naive = malloc(sizeof(double) * (size_t)(n_out * n_tok));
    c->s_abs = malloc(sizeof(double) * (size_t)(n_out * n_tok));
    c->s_z = malloc(sizeof(double) * (size_t)(n_out * n_tok));
    double *xq = malloc(sizeof(double) * (size_t)n_in);
    for (int64_t t = 0; t < n_tok; t++) {
        test_act_row(c->x + t * n_in, n_in, act, w, xq);
        for (int64_t r = 0; r < n_out; r++) {
            double y = 0, sa = 0, sz = 0;
            for (int64_t i = 0; i < n_in; i++) {
                int64_t g = i / gs;
                double s = c->scales[r * ng + g], u, z = 0;
                if (kind == K_QW_FP8) {
                    uint8_t b = c->codes[r * (int64_t)rb + i];
                    u = (b & 0x80 ? -1 : 1) * e4m3_mag(b & 0x7f);
                } else {
                    int q = kind == K_QW_INT4 ? (c->codes[r * (int64_t)rb + i / 2] >> (4 * (i & 1))) & 15
                                              : (int8_t)c->codes[r * (int64_t)rb + i];
                    z = !c->zeros ? (kind == K_QW_INT4 ? 8 : 0)
                                  : kind == K_QW_INT4 ? c->zeros[r * ng + g] : (int8_t)c->zeros[r * ng + g];
                    u = q - z;
                }
                double xv = xq[c->perm ? c->perm[i] : i];
                y += s * u * xv;
                sa += fabs(s * u * xv);
                sz += fabs(s) * (fabs(u) + fabs(z)) * fabs(xv);
            }
            c->y_naive[t * n_out + r] = y, c->s_abs[t * n_out + r] = sa, c->s_z[t * n_out + r] = sz;
        }
    }
    free(xq);
}

static void qcase_free(qcase *c) {
    free(c->codes), free(c->zeros), free(c->scales), free(c->x), free(c->perm);
    free(c->y_naive), free(c->s_abs), free(c->s_z);
}

static void *work_alloc(const qcase *c, int64_t n_tok) {
    size_t sz = (k_qmatmul_work_size(&c->w, n_tok, c->act) + 63) & ~(size_t)63;
    return aligned_alloc(64, sz);
}

static double g_worst_ref, g_worst_cpu;

#define DESC(c)                                                                                                   \
    "%s %s/%s zeros=%d perm=%d gs=%lld n_in=%lld n_out=%lld n_tok=%lld", isa, kind_name((c)->w.kind),           \
        act_name((c)->act), (c)->zeros != NULL, (c)->perm != NULL, (long long)(c)->w.group_size,                \
        (long long)(c)->w.n_in, (long long)(c)->w.n_out, (long long)(c)->n_tok

/* ref vs naive (once, at the first ISA level) and cpu vs ref; invariance when asked */
static void run_case(qcase *c, const char *isa, int check_ref, int invariance) {
    const int64_t n_out = c->w.n_out, n_tok = c->n_tok, n_in = c->w.n_in, ldy = n_out + 3;
    float *y_ref = malloc(sizeof(float) * (size_t)(ldy * n_tok)), *y = malloc(sizeof(float) * (size_t)(ldy * n_tok));
    void *work = work_alloc(c, n_tok);
    kref_qmatmul(&c->w, c->act, c->x, n_tok, y_ref, ldy, work);
    int bad = 0;
    for (int64_t t = 0; t < n_tok && check_ref; t++)
        for (int64_t r = 0; r < n_out; r++) {
            double err = fabs(y_ref[t * ldy + r] - c->y_naive[t * n_out + r]);
            double bound = 1e-5 * c->s_abs[t * n_out + r] + 1e-30;
            if (err / bound > g_worst_ref) g_worst_ref = err / bound;
            if (!(err <= bound) && bad++ < 3) {
                CHECK(0, DESC(c));
                CHECK(0, "  ref y[%lld][%lld] = %.9g, naive %.9g", (long long)t, (long long)r, y_ref[t * ldy + r],
                      c->y_naive[t * n_out + r]);
            }
        }
    if (check_ref && c->act == K_ACT_FLOAT) { /* the dequantized copy (a GPU's f16 weights come from it) */
        float *dense = malloc(sizeof(float) * (size_t)(n_in * n_out));
        int64_t half = n_out / 2; /* in two calls: rows from r0 */
        kref_qweight_dequant(&c->w, 0, half, dense);
        kref_qweight_dequant(&c->w, half, n_out - half, dense + half * n_in);
        for (int64_t t = 0; t < n_tok; t++)
            for (int64_t r = 0; r < n_out; r++) {
                double y_d = 0;
                for (int64_t f = 0; f < n_in; f++) y_d += (double)dense[r * n_in + f] * c->x[t * n_in + f];
                double err = fabs(y_d - c->y_naive[t * n_out + r]), bound = 1e-6 * c->s_abs[t * n_out + r] + 1e-30;
                if (!(err <= bound) && bad++ < 3) {
                    CHECK(0, DESC(c));
                    CHECK(0, "  dequantized W . x[%lld][%lld] = %.9g, naive %.9g", (long long)t, (long long)r, y_d,
                          c->y_naive[t * n_out + r]);
                }
            }
        free(dense);
    }
    kcpu_set_threads(2);
    kcpu_qmatmul(&c->w, c->act, c->x, n_tok, y, ldy, work);
    for (int64_t t = 0; t < n_tok; t++)
        for (int64_t r = 0; r < n_out; r++) {
            double err = fabs((double)y[t * ldy + r] - y_ref[t * ldy + r]);
            double bound = (16.0 + n_in / 8.0) * FLT_EPSILON * c->s_z[t * n_out + r] + 1e-30;
            if (err / bound > g_worst_cpu) g_worst_cpu = err / bound;
            if (!(err <= bound) && bad++ < 3) {
                CHECK(0, DESC(c));
                CHECK(0, "  cpu y[%lld][%lld] = %.9g, ref %.9g, bound %.3g", (long long)t, (long long)r,
                      y[t * ldy + r], y_ref[t * ldy + r], bound);
            }
        }
    if (invariance) {
        float *y1 = malloc(sizeof(float) * (size_t)n_out), *yt = malloc(sizeof(float) * (size_t)(ldy * n_tok));
        void *w1 = work_alloc(c, 1);
        for (int nth = 1; nth <= 2; nth++) {
            kcpu_set_threads(nth);
            kcpu_qmatmul(&c->w, c->act, c->x, n_tok, yt, ldy, work);
            for (int64_t t = 0; t < n_tok; t++) {
                CHECK(memcmp(yt + t * ldy, y + t * ldy, sizeof(float) * (size_t)n_out) == 0,
                      "%s %s/%s gs=%lld: token %lld with %d threads differs from 2 threads", isa,
                      kind_name(c->w.kind), act_name(c->act), (long long)c->w.group_size, (long long)t, nth);
                kcpu_qmatmul(&c->w, c->act, c->x + t * n_in, 1, y1, n_out, w1);
                CHECK(memcmp(y1, y + t * ldy, sizeof(float) * (size_t)n_out) == 0,
                      "%s %s/%s gs=%lld zeros=%d perm=%d n_in=%lld: token %lld alone (%d threads) differs", isa,
                      kind_name(c->w.kind), act_name(c->act), (long long)c->w.group_size, c->zeros != NULL,
                      c->perm != NULL, (long long)n_in, (long long)t, nth);
            }
        }
        free(y1), free(yt), free(w1);
    }
    kcpu_set_threads(0);
    free(y_ref), free(y), free(work);
}

/* kref_qweight_to_ggml: symmetric INT4 / INT8 with half-exact scales become Q4_0 / Q8_0 rows whose
 * GGML dequantization equals kref_qweight_dequant bit for bit; anything it cannot hold exactly
 * (a permutation, a zero point other than the symmetric one, a scale that is not a half, a group
 * that is not whole 32-blocks) is refused */
static void test_to_ggml(void) {
    for (int kind = K_QW_INT4; kind <= K_QW_FP8; kind++)
        for (int64_t gs = 32; gs <= 160; gs += 32) {
            qcase c;
            const int64_t n_in = 320, n_out = 7;
            qcase_init(&c, kind, K_ACT_FLOAT, 0, 0, gs == 160 ? n_in : gs, n_in, n_out, 1);
            for (int64_t i = 0; i < n_out * k_qweight_n_group(&c.w); i++) /* scales that are halves */
                c.scales[i] = pg_fp16_to_fp32(pg_fp32_to_fp16(c.scales[i]));
            const int want = kind == K_QW_INT4 ? PAGODA_DTYPE_Q4_0 : kind == K_QW_INT8 ? PAGODA_DTYPE_Q8_0 : 0;
            CHECK(kref_qweight_ggml_type(&c.w) == want, "kind %d gs %lld: ggml type %d", kind, (long long)gs,
                  kref_qweight_ggml_type(&c.w));
            if (want) {
                static char blocks[7 * 10 * 34];
                float dense[320], back[320];
                CHECK(kref_qweight_to_ggml(&c.w, blocks) == want, "converted");
                size_t rb = (size_t)(n_in / 32) * (want == PAGODA_DTYPE_Q4_0 ? 18 : 34);
                for (int64_t r = 0; r < n_out; r++) {
                    kref_qweight_dequant(&c.w, r, 1, dense);
                    kref_traits(want)->to_float(blocks + (size_t)r * rb, back, n_in);
                    CHECK(!memcmp(dense, back, sizeof dense), "kind %d gs %lld row %lld: GGML values differ", kind,
                          (long long)gs, (long long)r);
                }
                /* what cannot be held exactly */
                float s0 = c.scales[3];
                c.scales[3] = s0 * (1.0f + 1.0f / 4096); /* between two halves */
                CHECK(kref_qweight_ggml_type(&c.w) == 0, "a scale that is not a half accepted");
                c.scales[3] = s0;
                uint8_t z[7 * 10];
                memset(z, kind == K_QW_INT4 ? 8 : 0, sizeof z);
                c.w.zeros = z;
                CHECK(kref_qweight_ggml_type(&c.w) == want, "explicit symmetric zero points refused");
                z[5] = 3;
                CHECK(kref_qweight_ggml_type(&c.w) == 0, "an asymmetric zero point accepted");
                c.w.zeros = NULL;
                int32_t perm[320];
                for (int i = 0; i < 320; i++) perm[i] = 319 - i;
                c.w.perm = perm;
                CHECK(kref_qweight_ggml_type(&c.w) == 0, "an act-order permutation accepted");
                c.w.perm = NULL;
            }
            qcase_free(&c);
        }
    qcase c;
    qcase_init(&c, K_QW_INT4, K_ACT_FLOAT, 0, 0, 16, 320, 2, 1);
    CHECK(kref_qweight_ggml_type(&c.w) == 0, "16-column groups accepted");
    qcase_free(&c);
}

/* K_ACT_INT16's rounding where it is decided: x / s exactly halfway between two integers (ties
 * away from zero), and spans of zeros. With one weight of 1 per row (INT4 code 9,
 * zero point 8, scale 1) each output is its column's rounded activation times the span's scale,
 * exactly, so every ISA level must give this file's own rounding bit for bit. */
static void test_int16_ties(void) {
    enum { N = 256, T = 3 };
    static uint8_t codes[N * N / 2];
    static float sc[N * 2], x[T * N], y[T * N], want[T * N];
    memset(codes, 0x88, sizeof codes);
    for (int r = 0; r < N; r++) {
        uint8_t *b = &codes[r * N / 2 + r / 2];
        *b = r & 1 ? (uint8_t)((*b & 0x0f) | 0x90) : (uint8_t)((*b & 0xf0) | 0x09);
        sc[2 * r] = sc[2 * r + 1] = 1.0f;
    }
    k_qweight w = {.kind = K_QW_INT4, .codes = codes, .n_in = N, .n_out = N, .group_size = 128, .scales = sc};
    for (int t = 0; t < T; t++)
        for (int i = 0; i < N; i++) {
            /* spans of 128: t 0, s = 1 (a 32767 in each span), every other value a tie; t 1, s = 3; t 2: the
               first span all zero (s = 0), the second ties with s = 0.5 */
            float half = (float)((int)(test_rand_u64(&g_seed) % 60001) - 30000) + 0.5f;
            x[t * N + i] = t == 0 ? (i % 128 == 7 ? 32767.0f : half)
                         : t == 1 ? (i % 128 == 0 ? -3.0f * 32767.0f : 3.0f * half)
                         : i < 128 ? 0.0f : (i == 200 ? 16383.5f : 0.5f * half);
        }
    for (int t = 0; t < T; t++)
        for (int i0 = 0; i0 < N; i0 += 128) {
            float m = 0.0f;
            for (int i = i0; i < i0 + 128; i++) m = fabsf(x[t * N + i]) > m ? fabsf(x[t * N + i]) : m;
            const float s = m / 32767.0f;
            for (int i = i0; i < i0 + 128; i++) {
                double v = s == 0.0f ? 0.0 : (double)(x[t * N + i] / s);
                double q = v < 0 ? -floor(-v + 0.5) : floor(v + 0.5); /* half away from zero */
                q = q > 32767 ? 32767 : q < -32767 ? -32767 : q;
                want[t * N + i] = (float)(q * s);
            }
        }
    void *work = aligned_alloc(64, (k_qmatmul_work_size(&w, T, K_ACT_INT16) + 63) & ~(size_t)63);
    int max = kcpu_isa_max();
    for (int level = max; level >= 0; level--) {
        kcpu_isa_force(level);
        kcpu_qmatmul(&w, K_ACT_INT16, x, T, y, N, work);
        int bad = 0;
        for (int k = 0; k < T * N; k++)
            if (memcmp(&y[k], &want[k], sizeof *y) && bad++ < 3)
                CHECK(0, "int16 ties (%s): token %d column %d: %.9g, want %.9g (x %.9g)", kcpu_isa(), k / N, k % N, y[k],
                      want[k], x[k]);
        CHECK(!bad, "int16 ties (%s): %d outputs differ", kcpu_isa(), bad);
    }
    kcpu_isa_force(max);
    free(work);
}

int main(void) {
    test_fp8();
    test_int16_ties();
    test_to_ggml();
    static const char *names[] = {"scalar", "avx2", "avx512"};
    static const int kinds[] = {K_QW_INT4, K_QW_INT8, K_QW_FP8};
    static const int64_t gss[] = {32, 64, 128, 7, 0 /* n_in */, 96, 256};
    /* n_in, n_out, n_tok, batch invariance checked */
    static const int64_t shapes[][4] = {{256, 17, 3, 0}, {704, 3, 17, 1}, {40, 256, 1, 0},
                                        {704, 256, 3, 0}, {256, 1, 17, 1}, {704, 600, 17, 1},
                                        {96, 9, 13, 1}};
    int max = kcpu_isa_max();
    printf("cpu max isa: %s\n", names[max]);
    for (int level = max; level >= 0; level--) {
        kcpu_isa_force(level);
        const char *isa = kcpu_isa();
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (size_t k = 0; k < 3; k++)
                for (int act = 0; act < 4; act++)
                    for (int zp = 0; zp < 2; zp++)
                        for (int pm = 0; pm < 2; pm++)
                            for (size_t g = 0; g < sizeof gss / sizeof gss[0]; g++) {
                                int64_t n_in = shapes[s][0], gs = gss[g] ? gss[g] : n_in;
                                if (gs > n_in || (zp && kinds[k] == K_QW_FP8)) continue;
                                /* the big shape: only a few combinations */
                                if (s == 5 && (pm || (g != 0 && g != 4) || (zp && act)) ) continue;
                                if (level < max && s == 5) continue;
                                qcase c;
                                qcase_init(&c, kinds[k], (k_act_kind)act, zp, pm, gs, n_in, shapes[s][1],
                                           shapes[s][2]);
                                run_case(&c, isa, level == max, (int)shapes[s][3]);
                                qcase_free(&c);
                            }
        /* many tokens: the activations are prepared on several threads */
        for (size_t k = 0; k < 3; k++)
            for (int act = 0; act < 4; act++) {
                qcase c;
                qcase_init(&c, kinds[k], (k_act_kind)act, kinds[k] != K_QW_FP8, 1, 64, 704, 37, 600);
                run_case(&c, isa, level == max, 0);
                qcase_free(&c);
            }
    }
    kcpu_isa_force(max);
    printf("worst |ref - naive| / bound = %.3g, worst |cpu - ref| / bound = %.3g\n", g_worst_ref, g_worst_cpu);
    TEST_DONE();
}
