/* Reference quantization kernels: round trips with error bounds, vec_dot against float dots of the
 * dequantized rows, fp16/bf16 conversions, kref_matmul against a naive loop.
 *
 * Also a small CLI for tests/python/test_quants_vs_gguf_py.py (byte comparison with gguf-py):
 *   test_quants_ref quantize TYPE IN.f32 OUT.bin     raw f32 in, one row of blocks out
 *   test_quants_ref dequantize TYPE IN.bin OUT.f32
 * With no arguments it runs its own checks. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/fp16.h"
#include "kernels/kernels.h"
#include "kernels/quants.h"
#include "test_util.h"

static const int k_types[] = {
    PAGODA_DTYPE_F32,  PAGODA_DTYPE_F16,  PAGODA_DTYPE_BF16, PAGODA_DTYPE_Q4_0, PAGODA_DTYPE_Q4_1,
    PAGODA_DTYPE_Q5_0, PAGODA_DTYPE_Q5_1, PAGODA_DTYPE_Q8_0, PAGODA_DTYPE_Q8_1, PAGODA_DTYPE_Q4_K,
    PAGODA_DTYPE_Q5_K, PAGODA_DTYPE_Q6_K, PAGODA_DTYPE_Q8_K,
};
#define N_TYPES ((int)(sizeof k_types / sizeof k_types[0]))

static unsigned long long g_seed = 0x5eed1234ULL;

/* Roughly Gaussian (sum of 4 uniforms), like weights and activations, with rare outliers. */
static float rand_val(void) {
    float s = 0;
    for (int i = 0; i < 4; i++) s += test_rand_f(&g_seed);
    if ((test_rand_u64(&g_seed) & 255) == 0) s *= 8;
    return s * 0.5f;
}

/* Without outliers: for typical-error (RMS) checks. */
static float rand_clean(void) {
    float s = 0;
    for (int i = 0; i < 4; i++) s += test_rand_f(&g_seed);
    return s * 0.5f;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

static size_t row_bytes(int type, int64_t n) {
    size_t sz = 0;
    if (!dtype_row_size(type, n, &sz)) {
        fprintf(stderr, "bad row size %s %lld\n", dtype_name(type), (long long)n);
        exit(2);
    }
    return sz;
}

/* ---------------- fp16 / bf16 ---------------- */

static int is_nan16(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff); }

/* h is the correctly rounded (ties to even) fp16 of f: no neighbour is closer, ties pick even. */
static int fp16_is_rne(float f, uint16_t h) {
    double v = f, hv = pg_fp16_to_fp32(h);
    if (isinf(hv)) return fabs(v) >= 65520.0; /* 65504 + half an ulp rounds to inf */
    double err = fabs(v - hv);
    for (int dlt = -1; dlt <= 1; dlt += 2) {
        int nb = (int)(h & 0x7fff) + dlt;
        if (nb < 0 || nb > 0x7bff) continue;
        double nv = pg_fp16_to_fp32((uint16_t)((h & 0x8000) | nb));
        double nerr = fabs(v - nv);
        if (nerr < err) return 0;
        if (nerr == err && (h & 1)) return 0;
    }
    return 1;
}

static void test_fp16(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = pg_fp16_to_fp32((uint16_t)h);
        uint16_t back = pg_fp32_to_fp16(f);
        if (is_nan16((uint16_t)h)) {
            if (!isnan(f) || !is_nan16(back)) bad++;
        } else if (back != h) {
            bad++;
        }
    }
    CHECK(bad == 0, "%d fp16 values do not round trip", bad);

    /* values whose rounding is easy to get wrong */
    struct { float f; uint16_t h; } cases[] = {
        {0.0f, 0x0000}, {-0.0f, 0x8000}, {1.0f, 0x3c00}, {-2.0f, 0xc000},
        {65504.0f, 0x7bff}, {65519.99f, 0x7bff}, {65520.0f, 0x7c00}, {1e10f, 0x7c00}, {-1e10f, 0xfc00},
        {1.0f + 0x1p-11f, 0x3c00},          /* tie between 1 and 1+2^-10: even (down) */
        {1.0f + 3 * 0x1p-11f, 0x3c02},      /* tie: even (up) */
        {1.0f + 0x1p-11f + 0x1p-20f, 0x3c01},
        {0x1p-14f, 0x0400},                 /* smallest normal */
        {0x1p-24f, 0x0001},                 /* smallest subnormal */
        {0x1p-25f, 0x0000},                 /* tie with 0: even */
        {0x1p-25f + 0x1p-40f, 0x0001},
        {3 * 0x1p-25f, 0x0002},             /* 1.5 ulp: tie to even (2) */
        {0x1p-14f - 0x1p-25f, 0x0400},      /* rounds up into the normals */
        {(float)INFINITY, 0x7c00}, {-(float)INFINITY, 0xfc00},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t h = pg_fp32_to_fp16(cases[i].f);
        CHECK(h == cases[i].h, "fp16(%a) = 0x%04x, want 0x%04x", (double)cases[i].f, h, cases[i].h);
    }
    CHECK(is_nan16(pg_fp32_to_fp16(NAN)), "fp16(nan) not nan");

    /* random floats over the whole fp16 range, and exact midpoints */
    bad = 0;
    for (int i = 0; i < 2000000; i++) {
        uint32_t u = (uint32_t)test_rand_u64(&g_seed);
        float f;
        if (i & 1) {
            f = pg_fp32_from_bits((u & 0x80000000u) | (0x33000000u + (u & 0x0fffffffu) % 0x14800000u));
        } else { /* midpoint between two adjacent fp16 values */
            uint16_t h = (uint16_t)(u % 0x7bff);
            f = (float)(((double)pg_fp16_to_fp32(h) + pg_fp16_to_fp32((uint16_t)(h + 1))) / 2);
        }
        if (!fp16_is_rne(f, pg_fp32_to_fp16(f))) {
            if (bad++ < 5) fprintf(stderr, "fp16(%a) = 0x%04x not RNE\n", (double)f, pg_fp32_to_fp16(f));
        }
    }
    CHECK(bad == 0, "%d random floats not rounded to nearest even fp16", bad);
}

static void test_bf16(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = pg_bf16_to_fp32((uint16_t)h);
        uint16_t back = pg_fp32_to_bf16(f);
        if (isnan(f)) {
            if (!isnan(pg_bf16_to_fp32(back))) bad++;
        } else if (back != h) {
            bad++;
        }
    }
    CHECK(bad == 0, "%d bf16 values do not round trip", bad);
    struct { float f; uint16_t h; } cases[] = {
        {1.0f, 0x3f80}, {-1.0f, 0xbf80},
        {1.0f + 0x1p-8f, 0x3f80},           /* tie: even (down) */
        {1.0f + 3 * 0x1p-8f, 0x3f82},       /* tie: even (up) */
        {1.0f + 0x1p-8f + 0x1p-20f, 0x3f81},
        {3.4028235e38f, 0x7f80},            /* FLT_MAX rounds to inf */
        {(float)INFINITY, 0x7f80},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t h = pg_fp32_to_bf16(cases[i].f);
        CHECK(h == cases[i].h, "bf16(%a) = 0x%04x, want 0x%04x", (double)cases[i].f, h, cases[i].h);
    }
    CHECK(isnan(pg_bf16_to_fp32(pg_fp32_to_bf16(NAN))), "bf16(nan) not nan");
    /* a signalling nan must come back quiet, not as inf */
    uint16_t snan = pg_fp32_to_bf16(pg_fp32_from_bits(0x7f800001u));
    CHECK(isnan(pg_bf16_to_fp32(snan)), "bf16(snan) = 0x%04x", snan);
}

/* ---------------- round-trip error bounds ---------------- */

/* Largest allowed |dequant(quant(x)) - x| for one block, from the format (see each case).
 * e16 = 2^-11 is the relative rounding error of an fp16 scale; s16 = 2^-25 its absolute error
 * when the scale is subnormal in fp16 (below 2^-14: blocks of tiny values). */
static double block_bound(int type, const float *x, int n) {
    const double e16 = 0x1p-11, s16 = 0x1p-25;
    double amax = 0, mn = x[0], mx = x[0];
    for (int i = 0; i < n; i++) {
        amax = fmax(amax, fabs(x[i]));
        mn = fmin(mn, x[i]);
        mx = fmax(mx, x[i]);
    }
    double range = mx - fmin(mn, 0.0);
    switch (type) {
    case PAGODA_DTYPE_F32: return 0;
    case PAGODA_DTYPE_F16: return amax * 0x1p-11 + 0x1p-25; /* half an ulp, or half a subnormal step */
    case PAGODA_DTYPE_BF16: return amax * 0x1p-8;
    /* d = amax/8: one step (the +amax side clamps at 15), plus |q| <= 8 times the fp16 error of d */
    case PAGODA_DTYPE_Q4_0: return amax / 8 * (1 + 8 * e16) * 1.0001 + 8 * s16;
    case PAGODA_DTYPE_Q5_0: return amax / 16 * (1 + 16 * e16) * 1.0001 + 16 * s16;
    /* d = (max-min)/(2^b-1): half a step, plus fp16 error of d (times q) and of m */
    case PAGODA_DTYPE_Q4_1: return (mx - mn) / 15 * (0.5 + 15 * e16) * 1.0001 + fabs(mn) * e16 + 16 * s16;
    case PAGODA_DTYPE_Q5_1: return (mx - mn) / 31 * (0.5 + 31 * e16) * 1.0001 + fabs(mn) * e16 + 32 * s16;
    /* d = amax/127: half a step plus the fp16 error of d times |q| <= 127 */
    case PAGODA_DTYPE_Q8_0:
    case PAGODA_DTYPE_Q8_1: return amax / 127 * (0.5 + 127 * e16) * 1.0001 + 127 * s16;
    case PAGODA_DTYPE_Q8_K: return amax / 127 * 0.5 * 1.0001; /* float scale */
    /* K-quants: 6-bit (Q4_K/Q5_K) or 8-bit (Q6_K) sub-block scales relative to the super-block
     * maximum can make a small sub-block's step up to ~2x coarser than its own optimum, and the
     * min is quantized too; a half-step of the super-block's largest range bounds the error.
     * Plus the absolute error of a subnormal fp16 super-scale times the largest scale*quant. */
    case PAGODA_DTYPE_Q4_K: return range / 15 + (63 * 15 + 63) * s16;
    case PAGODA_DTYPE_Q5_K: return range / 31 + (63 * 31 + 63) * s16;
    case PAGODA_DTYPE_Q6_K: return amax / 32 + 128 * 32 * s16;
    }
    return 0;
}

/* Typical (RMS) error relative to the RMS of the data, for N(0,1)-like inputs without outliers
 * (measured values are about 2/3 of these). */
static double rms_bound(int type) {
    switch (type) {
    case PAGODA_DTYPE_F32: return 0;
    case PAGODA_DTYPE_F16: return 3e-4;
    case PAGODA_DTYPE_BF16: return 3e-3;
    case PAGODA_DTYPE_Q4_0: return 0.12;
    case PAGODA_DTYPE_Q4_1: return 0.12;
    case PAGODA_DTYPE_Q5_0: return 0.06;
    case PAGODA_DTYPE_Q5_1: return 0.06;
    case PAGODA_DTYPE_Q8_0: case PAGODA_DTYPE_Q8_1: return 0.008;
    case PAGODA_DTYPE_Q8_K: return 0.01;
    case PAGODA_DTYPE_Q4_K: return 0.10;
    case PAGODA_DTYPE_Q5_K: return 0.06;
    case PAGODA_DTYPE_Q6_K: return 0.035;
    }
    return 0;
}

static void test_roundtrip(int type) {
    const k_type_traits *t = kref_traits(type);
    CHECK(t && t->from_float && t->to_float, "%s: no traits", dtype_name(type));
    if (!t) return;
    const int bs = dtype_info(type)->block_size;
    const int qk = bs > 1 ? bs : 32;
    const int n_blocks_list[] = {1, 3, 7, 13};
    for (size_t k = 0; k < sizeof n_blocks_list / sizeof n_blocks_list[0]; k++) {
        const int n = qk * n_blocks_list[k];
        float *x = xmalloc(sizeof(float) * n), *y = xmalloc(sizeof(float) * n);
        unsigned char *q = xmalloc(row_bytes(type, n));
        for (int i = 0; i < n; i++) x[i] = rand_val();
        if (k == 2) /* a scaled-down block and an all-positive block */
            for (int i = 0; i < qk; i++) x[i] *= 1e-3f, x[qk + i] = fabsf(x[qk + i]) + 1;
        t->from_float(x, q, n);
        t->to_float(q, y, n);
        int worst = -1;
        double worst_ratio = 0;
        for (int b = 0; b < n / qk; b++) {
            double bound = block_bound(type, x + b * qk, qk);
            for (int i = b * qk; i < (b + 1) * qk; i++) {
                double e = fabs((double)y[i] - x[i]);
                if (e > bound && (worst < 0 || e / (bound + 1e-30) > worst_ratio)) {
                    worst = i;
                    worst_ratio = e / (bound + 1e-30);
                }
            }
        }
        CHECK(worst < 0, "%s n=%d: |err| at %d is %.3gx the bound (x=%g y=%g)", dtype_name(type), n, worst,
              worst_ratio, worst >= 0 ? x[worst] : 0, worst >= 0 ? y[worst] : 0);

        /* quantizing the dequantized values again is stable for the 32-blocks */
        if (type == PAGODA_DTYPE_Q8_0 || type == PAGODA_DTYPE_Q4_0 || type == PAGODA_DTYPE_F16 ||
            type == PAGODA_DTYPE_BF16) {
            unsigned char *q2 = xmalloc(row_bytes(type, n));
            t->from_float(y, q2, n);
            CHECK(memcmp(q, q2, row_bytes(type, n)) == 0, "%s: re-quantizing is not idempotent", dtype_name(type));
            free(q2);
        }
        free(x), free(y), free(q);
    }

    /* typical error on clean data */
    {
        const int n = 4096;
        float *x = xmalloc(sizeof(float) * n), *y = xmalloc(sizeof(float) * n);
        unsigned char *q = xmalloc(row_bytes(type, n));
        for (int i = 0; i < n; i++) x[i] = rand_clean();
        t->from_float(x, q, n);
        t->to_float(q, y, n);
        double se = 0, sx = 0;
        for (int i = 0; i < n; i++) se += ((double)y[i] - x[i]) * ((double)y[i] - x[i]), sx += (double)x[i] * x[i];
        double rel = sqrt(se / sx);
        CHECK(rel <= rms_bound(type), "%s: rms err %.4g > %.4g", dtype_name(type), rel, rms_bound(type));
        printf("  %-5s rms rel err %.5f (bound %.4f)\n", dtype_name(type), rel, rms_bound(type));
        free(x), free(y), free(q);
    }

    /* all-zero input: zero output, no NaN */
    {
        const int n = qk * 2;
        float *x = calloc((size_t)n, sizeof(float)), *y = xmalloc(sizeof(float) * n);
        unsigned char *q = xmalloc(row_bytes(type, n));
        memset(q, 0xab, row_bytes(type, n));
        t->from_float(x, q, n);
        t->to_float(q, y, n);
        int bad = 0;
        for (int i = 0; i < n; i++) bad += y[i] != 0;
        CHECK(bad == 0, "%s: zeros do not round trip", dtype_name(type));
        if (type == PAGODA_DTYPE_Q8_K) {
            const block_q8_K *b = (const block_q8_K *)q;
            int nz = 0;
            for (int j = 0; j < QK_K / 16; j++) nz += b->bsums[j] != 0;
            CHECK(nz == 0, "q8_K: zero block has nonzero bsums");
        }
        free(x), free(y), free(q);
    }
}

/* ---------------- exact values that pin down the numerics ---------------- */

static void test_known_values(void) {
    /* Q8_0 (used for activations): id = 127/amax and ties to even, like llama.cpp's AVX2 path.
     * llama.cpp's weight reference (roundf) would give 1, 3, -1, -3 for the ties below. */
    float x[QK8_0] = {127, 0.5f, 2.5f, -0.5f, -2.5f, 1.5f, 3.25f, -126.5f};
    block_q8_0 b;
    kref_traits(PAGODA_DTYPE_Q8_0)->from_float(x, &b, QK8_0);
    const int want[8] = {127, 0, 2, 0, -2, 2, 3, -126};
    CHECK(b.d == pg_fp32_to_fp16(1.0f), "q8_0 d = 0x%04x", b.d);
    for (int i = 0; i < 8; i++) CHECK(b.qs[i] == want[i], "q8_0 qs[%d] = %d, want %d", i, b.qs[i], want[i]);

    /* Q8_1: s = fp16(d * sum(q)) */
    block_q8_1 b1;
    kref_traits(PAGODA_DTYPE_Q8_1)->from_float(x, &b1, QK8_1);
    int sum = 0;
    for (int i = 0; i < QK8_1; i++) sum += b1.qs[i];
    CHECK(b1.s == pg_fp32_to_fp16((float)sum), "q8_1 s = 0x%04x, sum %d", b1.s, sum);

    /* Q4_0: the signed extreme maps to -8 (d = max/-8); its opposite clamps at 15 */
    float x4[QK4_0] = {0};
    x4[0] = -8, x4[1] = 8, x4[2] = 1, x4[17] = -3;
    block_q4_0 b4;
    kref_traits(PAGODA_DTYPE_Q4_0)->from_float(x4, &b4, QK4_0);
    CHECK(b4.d == pg_fp32_to_fp16(1.0f), "q4_0 d = 0x%04x", b4.d);
    /* d = -8/-8 = 1, q = trunc(x + 8.5): -8 -> 0, 8 -> 16 clamped to 15, 1 -> 9, 0 -> 8, -3 -> 5;
     * byte j holds element j (low nibble) and element j+16 (high nibble) */
    CHECK(b4.qs[0] == 0x80 && b4.qs[1] == 0x5f && b4.qs[2] == 0x89 && b4.qs[3] == 0x88,
          "q4_0 bytes %02x %02x %02x %02x", b4.qs[0], b4.qs[1], b4.qs[2], b4.qs[3]);

    /* Q8_K: the element with the largest |x| maps to -127, d = 1/(-127/max) (negative here), bsums */
    float xk[QK_K];
    for (int i = 0; i < QK_K; i++) xk[i] = (float)((i % 7) - 3) * 0.25f;
    xk[5] = 2.0f;
    block_q8_K bk;
    kref_traits(PAGODA_DTYPE_Q8_K)->from_float(xk, &bk, QK_K);
    CHECK(bk.qs[5] == -127, "q8_K qs[max] = %d", bk.qs[5]);
    CHECK(bk.d == 1 / (-127.f / 2.0f), "q8_K d = %g", bk.d);
    int bad = 0;
    for (int j = 0; j < QK_K / 16; j++) {
        int s = 0;
        for (int l = 0; l < 16; l++) s += bk.qs[16 * j + l];
        bad += s != bk.bsums[j];
    }
    CHECK(bad == 0, "q8_K bsums wrong in %d groups", bad);
}

/* ---------------- vec_dot ---------------- */

/* |vec_dot - double dot of the dequantized rows| allowed. The integer sums are exact; what is
 * left is float rounding of per-block scale products and of dequantized elements (~1e-7
 * relative to sum|w*a|). Q8_1 activations carry s = fp16(d*sum q) instead of the exact sum, so
 * for Q4_1/Q5_1 add |m| * 2^-10 * |d * sum q| per block (the m*s term, as in llama.cpp). */
static double dot_tol(int wtype, const void *wq, const void *aq, const float *wd, const float *ad, int n) {
    double abs_sum = 0;
    for (int i = 0; i < n; i++) abs_sum += fabs((double)wd[i] * ad[i]);
    double tol = 4e-6 * abs_sum + 1e-30;
    if (wtype == PAGODA_DTYPE_Q4_1 || wtype == PAGODA_DTYPE_Q5_1) {
        const block_q8_1 *a = aq;
        for (int b = 0; b < n / 32; b++) {
            uint16_t mh = wtype == PAGODA_DTYPE_Q4_1 ? ((const block_q4_1 *)wq)[b].m : ((const block_q5_1 *)wq)[b].m;
            int sq = 0;
            for (int j = 0; j < 32; j++) sq += a[b].qs[j];
            tol += fabs(pg_fp16_to_fp32(mh)) * 0x1p-10 * fabs((double)pg_fp16_to_fp32(a[b].d) * sq) * 1.01;
        }
    }
    return tol;
}

/* Loose sanity bound: |vec_dot - exact dot of the original floats| <= c * |w| * |x|. */
static double quant_dot_c(int wtype) {
    switch (wtype) {
    case PAGODA_DTYPE_F32: return 1e-6;
    case PAGODA_DTYPE_F16: return 2e-3;
    case PAGODA_DTYPE_BF16: return 1e-2;
    case PAGODA_DTYPE_Q8_0: return 0.03;
    case PAGODA_DTYPE_Q6_K: return 0.06;
    case PAGODA_DTYPE_Q5_0: case PAGODA_DTYPE_Q5_1: case PAGODA_DTYPE_Q5_K: return 0.1;
    default: return 0.25;
    }
}

static void test_vec_dot(int wtype) {
    const k_type_traits *t = kref_traits(wtype);
    if (!t || !t->vec_dot) return;
    const k_type_traits *at = kref_traits(t->vec_dot_type);
    CHECK(at && at->from_float && at->to_float, "%s: vec_dot_type %s has no traits", dtype_name(wtype),
          dtype_name(t->vec_dot_type));
    if (!at) return;
    int bs = dtype_info(wtype)->block_size;
    if (dtype_info(t->vec_dot_type)->block_size > bs) bs = dtype_info(t->vec_dot_type)->block_size;
    if (bs == 1) bs = 32;
    const int nbl[] = {1, 3, 5, 9};
    double worst = 0, worst_q = 0;
    for (size_t k = 0; k < sizeof nbl / sizeof nbl[0]; k++) {
        for (int rep = 0; rep < 20; rep++) {
            const int n = bs * nbl[k];
            float *w = xmalloc(sizeof(float) * n), *x = xmalloc(sizeof(float) * n);
            float *wd = xmalloc(sizeof(float) * n), *xd = xmalloc(sizeof(float) * n);
            void *wq = xmalloc(row_bytes(wtype, n)), *xq = xmalloc(row_bytes(t->vec_dot_type, n));
            for (int i = 0; i < n; i++) w[i] = rand_val(), x[i] = rand_val() + (rep & 1 ? 0.3f : 0.0f);
            t->from_float(w, wq, n);
            at->from_float(x, xq, n);
            t->to_float(wq, wd, n);
            at->to_float(xq, xd, n);
            double ref = 0, exact = 0, nw = 0, nx = 0;
            for (int i = 0; i < n; i++) {
                ref += (double)wd[i] * xd[i];
                exact += (double)w[i] * x[i];
                nw += (double)w[i] * w[i];
                nx += (double)x[i] * x[i];
            }
            double got = t->vec_dot(n, wq, xq);
            double tol = dot_tol(wtype, wq, xq, wd, xd, n);
            CHECK(fabs(got - ref) <= tol, "%s n=%d: vec_dot %.9g vs dequantized dot %.9g (tol %.3g)",
                  dtype_name(wtype), n, got, ref, tol);
            worst = fmax(worst, fabs(got - ref) / tol);
            double qb = quant_dot_c(wtype) * sqrt(nw * nx);
            CHECK(fabs(got - exact) <= qb, "%s n=%d: vec_dot %.6g vs float dot %.6g (bound %.3g)", dtype_name(wtype),
                  n, got, exact, qb);
            worst_q = fmax(worst_q, fabs(got - exact) / sqrt(nw * nx));
            free(w), free(x), free(wd), free(xd), free(wq), free(xq);
        }
    }
    printf("  %-5s . %-5s vec_dot: worst |err|/tol %.3f; |err vs f32 dot|/(|w||x|) %.5f (bound %.3g)\n",
           dtype_name(wtype), dtype_name(t->vec_dot_type), worst, worst_q, quant_dot_c(wtype));
}

/* ---------------- matmul ---------------- */

static void test_matmul(int wtype) {
    const k_type_traits *t = kref_traits(wtype);
    CHECK(k_matmul_supported(wtype) == (t && t->vec_dot), "%s: k_matmul_supported", dtype_name(wtype));
    if (!t || !t->vec_dot) return;
    const k_type_traits *at = kref_traits(t->vec_dot_type);
    const int bs = dtype_info(wtype)->block_size > 1 ? dtype_info(wtype)->block_size : 32;
    const int shapes[][3] = {{1, 1, 1}, {3, 5, 2}, {2, 7, 3}, {1, 4, 1}}; /* blocks, n_out, n_tok */
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int64_t n_in = (int64_t)bs * shapes[s][0], n_out = shapes[s][1], n_tok = shapes[s][2];
        const size_t wrow = row_bytes(wtype, n_in), arow = row_bytes(t->vec_dot_type, n_in);
        float *wf = xmalloc(sizeof(float) * n_in * n_out), *x = xmalloc(sizeof(float) * n_in * n_tok);
        float *y = xmalloc(sizeof(float) * n_out * n_tok);
        float *wd = xmalloc(sizeof(float) * n_in), *xd = xmalloc(sizeof(float) * n_in);
        unsigned char *w = xmalloc(wrow * n_out), *aq = xmalloc(arow);
        for (int64_t i = 0; i < n_in * n_out; i++) wf[i] = rand_val();
        for (int64_t i = 0; i < n_in * n_tok; i++) x[i] = rand_val();
        for (int64_t r = 0; r < n_out; r++) t->from_float(wf + r * n_in, w + r * wrow, n_in);
        size_t ws = k_matmul_work_size(wtype, n_in, n_tok);
        CHECK(ws == arow * (size_t)n_tok, "%s: work size %zu, want %zu", dtype_name(wtype), ws, arow * (size_t)n_tok);
        void *work = xmalloc(ws);
        for (int64_t i = 0; i < n_out * n_tok; i++) y[i] = NAN;
        kref_matmul(wtype, w, n_in, n_out, x, n_tok, y, work);
        /* naive: per token, convert its row, dequantize both sides, dot in double */
        for (int64_t tk = 0; tk < n_tok; tk++) {
            at->from_float(x + tk * n_in, aq, n_in);
            at->to_float(aq, xd, n_in);
            for (int64_t r = 0; r < n_out; r++) {
                t->to_float(w + r * wrow, wd, n_in);
                double ref = 0;
                for (int64_t i = 0; i < n_in; i++) ref += (double)wd[i] * xd[i];
                double tol = dot_tol(wtype, w + r * wrow, aq, wd, xd, (int)n_in);
                float got = y[tk * n_out + r];
                CHECK(fabs(got - ref) <= tol, "%s matmul [%lld,%lld,%lld] y[%lld][%lld] = %.9g, naive %.9g",
                      dtype_name(wtype), (long long)n_in, (long long)n_out, (long long)n_tok, (long long)tk,
                      (long long)r, got, ref);
                CHECK(got == t->vec_dot(n_in, w + r * wrow, aq), "%s matmul differs from vec_dot", dtype_name(wtype));
            }
        }
        free(wf), free(x), free(y), free(wd), free(xd), free(w), free(aq), free(work);
    }
}

/* ---------------- CLI for the Python cross-checks ---------------- */

static void *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = xmalloc(sz > 0 ? (size_t)sz : 1);
    if (sz < 0 || fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
        fclose(f);
        free(buf);
        return NULL;
    }
    fclose(f);
    *len = (size_t)sz;
    return buf;
}

static int write_file(const char *path, const void *buf, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(buf, 1, len, f);
    return (fclose(f) == 0 && w == len) ? 0 : -1;
}

static int cli(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s quantize|dequantize TYPE IN OUT\n", argv[0]);
        return 2;
    }
    int type = dtype_from_name(argv[2]);
    const k_type_traits *t = kref_traits(type);
    if (!t) {
        fprintf(stderr, "no kernels for type '%s'\n", argv[2]);
        return 2;
    }
    const pg_dtype_info *info = dtype_info(type);
    size_t len;
    unsigned char *in = read_file(argv[3], &len);
    if (!in) {
        fprintf(stderr, "cannot read %s\n", argv[3]);
        return 2;
    }
    int rc = 0;
    if (strcmp(argv[1], "quantize") == 0) {
        int64_t n = (int64_t)(len / sizeof(float));
        size_t out_len;
        if (len % sizeof(float) || !dtype_row_size(type, n, &out_len)) {
            fprintf(stderr, "%zu bytes is not a whole number of %s blocks\n", len, info->name);
            rc = 2;
        } else {
            void *out = xmalloc(out_len);
            t->from_float((const float *)in, out, n);
            rc = write_file(argv[4], out, out_len) ? 2 : 0;
            free(out);
        }
    } else if (strcmp(argv[1], "dequantize") == 0) {
        if (len % info->type_size) {
            fprintf(stderr, "%zu bytes is not a whole number of %s blocks\n", len, info->name);
            rc = 2;
        } else {
            int64_t n = (int64_t)(len / info->type_size) * info->block_size;
            float *out = xmalloc(sizeof(float) * (size_t)n);
            t->to_float(in, out, n);
            rc = write_file(argv[4], out, sizeof(float) * (size_t)n) ? 2 : 0;
            free(out);
        }
    } else {
        fprintf(stderr, "unknown mode '%s'\n", argv[1]);
        rc = 2;
    }
    free(in);
    return rc;
}

int main(int argc, char **argv) {
    if (argc > 1) return cli(argc, argv);

    test_fp16();
    test_bf16();
    test_known_values();
    for (int i = 0; i < N_TYPES; i++) test_roundtrip(k_types[i]);
    for (int i = 0; i < N_TYPES; i++) test_vec_dot(k_types[i]);
    for (int i = 0; i < N_TYPES; i++) test_matmul(k_types[i]);

    /* types without reference kernels say so */
    CHECK(kref_traits(PAGODA_DTYPE_Q2_K) == NULL, "q2_K should have no traits yet");
    CHECK(kref_traits(-1) == NULL && kref_traits(PAGODA_DTYPE_COUNT) == NULL, "out-of-range ids");
    CHECK(!k_matmul_supported(PAGODA_DTYPE_Q8_K) && !k_matmul_supported(PAGODA_DTYPE_Q8_1), "activation-only types");
    CHECK(k_matmul_work_size(PAGODA_DTYPE_Q4_0, 33, 1) == 0, "work size for a partial block");

    /* vec_dot_type mapping, as llama.cpp (BF16 -> exact F32 on purpose) */
    const int map[][2] = {{PAGODA_DTYPE_F32, PAGODA_DTYPE_F32},   {PAGODA_DTYPE_F16, PAGODA_DTYPE_F16},
                          {PAGODA_DTYPE_BF16, PAGODA_DTYPE_F32},  {PAGODA_DTYPE_Q4_0, PAGODA_DTYPE_Q8_0},
                          {PAGODA_DTYPE_Q5_0, PAGODA_DTYPE_Q8_0}, {PAGODA_DTYPE_Q8_0, PAGODA_DTYPE_Q8_0},
                          {PAGODA_DTYPE_Q4_1, PAGODA_DTYPE_Q8_1}, {PAGODA_DTYPE_Q5_1, PAGODA_DTYPE_Q8_1},
                          {PAGODA_DTYPE_Q4_K, PAGODA_DTYPE_Q8_K}, {PAGODA_DTYPE_Q5_K, PAGODA_DTYPE_Q8_K},
                          {PAGODA_DTYPE_Q6_K, PAGODA_DTYPE_Q8_K}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        CHECK(kref_traits(map[i][0])->vec_dot_type == map[i][1], "%s vec_dot_type", dtype_name(map[i][0]));
    TEST_DONE();
}
