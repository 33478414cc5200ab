/* The CUDA weight products (src/kernels/cuda/matmul.cu) against double-precision references built
 * from the reference dequantization (kref_traits(t)->to_float), for every weight type on odd shapes.
 * Checks:
 *   - pcu_matvec, n_tok 1..8: |y - ref| <= 1e-4 * S + 1e-5, S = sum_i |w_i x_i| (float accumulation
 *     of exact-ish dequantized products); fast path and (weights 2 bytes off 16-alignment, plain rows
 *     with n_in % 8 != 0) the scalar fallback; y's row padding (ldy > n_out) is left untouched;
 *   - pcu_matmul_mma, n_tok 1, 5, 16, 63, 130: the kernel multiplies half(w) by half(x); products of
 *     halves are exact in float, so against sum half(w)*half(x) in double the only error is float
 *     accumulation (K/16 chained tensor-core steps): same bound with S over the half values;
 *   - pcu_repack + pcu_matvec_repacked (Q4_0, Q8_0; matvec_repacked.cu), n_tok 1..8: pcu_matvec's
 *     bound, on n_in with short last tiles (224, 256, 768, 1312) and full ones (4096);
 *   - pcu_dequant_f16 equals fp16(to_float(w)) bit for bit;
 *   - pcu_f32_to_f16 / pcu_f32_to_bf16 equal the host conversions of core/fp16.h bit for bit.
 * Prints per-type max errors and timing tables (GB/s of the decode matvec, GGUF vs repacked; mma vs
 * dequant+cuBLAS), never asserted. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/dtype.h"
#include "core/fp16.h"
#include "kernels/kernels.h"
#include "test_util.h"

#ifdef PAGODA_CUDA
#include "kernels/cuda/pcu.h"
#include "kernels/cuda/pcu_kernels.h"

static const int k_types[] = {PAGODA_DTYPE_F32,  PAGODA_DTYPE_F16,  PAGODA_DTYPE_BF16, PAGODA_DTYPE_Q4_0,
                              PAGODA_DTYPE_Q4_1, PAGODA_DTYPE_Q5_0, PAGODA_DTYPE_Q5_1, PAGODA_DTYPE_Q8_0,
                              PAGODA_DTYPE_Q4_K, PAGODA_DTYPE_Q5_K, PAGODA_DTYPE_Q6_K};
static const int64_t k_nout[] = {1, 7, 33, 300};
static const int k_mma_tok[] = {1, 5, 16, 63, 130};
#define MAX_MMA_TOK 130
static unsigned long long g_seed = 4242;

static float hround(float f) { return pg_fp16_to_fp32(pg_fp32_to_fp16(f)); }

static void *dalloc(size_t bytes) {
    void *p = NULL;
    if (pcu_malloc(&p, bytes) != PAGODA_OK) {
        fprintf(stderr, "pcu_malloc(%zu) failed\n", bytes);
        exit(1);
    }
    return p;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct {
    double mv_err, mma_err, mv_ratio, mma_ratio; /* max |err| and max |err|/bound */
} type_stats;

/* |y - ref| <= bound for an [n_tok][ldy] device result; returns failures, updates stats. */
static int compare(const char *what, int type, int64_t n_in, int64_t n_out, int n_tok, const float *y, int64_t ldy,
                   const double *ref, const double *s, double *max_err, double *max_ratio) {
    int bad = 0;
    for (int t = 0; t < n_tok; t++) {
        for (int64_t r = 0; r < n_out; r++) {
            const double e = fabs((double)y[t * ldy + r] - ref[t * n_out + r]);
            const double bound = 1e-4 * s[t * n_out + r] + 1e-5;
            if (e > *max_err) *max_err = e;
            if (e / bound > *max_ratio) *max_ratio = e / bound;
            if (!(e <= bound) && bad++ < 3)
                CHECK(0, "%s %s n_in %lld n_out %lld n_tok %d: y[%d][%lld] = %.7g, ref %.7g (bound %.3g)", what,
                      dtype_name(type), (long long)n_in, (long long)n_out, n_tok, t, (long long)r, y[t * ldy + r],
                      ref[t * n_out + r], bound);
        }
        for (int64_t r = n_out; r < ldy; r++) { /* padding keeps the 0xff fill */
            uint32_t u;
            memcpy(&u, &y[t * ldy + r], 4);
            if (u != 0xffffffffu && bad++ < 3) CHECK(0, "%s %s: padding y[%d][%lld] written", what, dtype_name(type), t, (long long)r);
        }
    }
    return bad;
}

static void test_shape(int type, int64_t n_in, int64_t n_out, type_stats *st, pcu_stream *s) {
    const k_type_traits *tr = kref_traits(type);
    size_t rb = 0;
    CHECK(dtype_row_size(type, n_in, &rb), "row size");
    const size_t wbytes = rb * (size_t)n_out;
    float *wf = malloc(sizeof(float) * (size_t)(n_in * n_out));
    uint8_t *w = malloc(wbytes);
    for (int64_t r = 0; r < n_out; r++) {
        const float sc = r % 7 == 3 ? 0.0f : 0.05f * (1 + r % 5);
        for (int64_t i = 0; i < n_in; i++) wf[r * n_in + i] = sc * test_rand_f(&g_seed);
        tr->from_float(wf + r * n_in, w + r * rb, n_in);
        tr->to_float(w + r * rb, wf + r * n_in, n_in); /* wf: the exact dequantized weights */
    }
    const int64_t nx = MAX_MMA_TOK;
    float *x = malloc(sizeof(float) * (size_t)(n_in * nx)), *xh = malloc(sizeof(float) * (size_t)(n_in * nx));
    uint16_t *xh16 = malloc(2 * (size_t)(n_in * nx));
    for (int64_t i = 0; i < n_in * nx; i++) {
        x[i] = ((i / n_in) % 4 == 2 ? 3.0f : 1.0f) * test_rand_f(&g_seed);
        xh16[i] = pg_fp32_to_fp16(x[i]);
        xh[i] = pg_fp16_to_fp32(xh16[i]);
    }
    const bool mma = pcu_mma_supported(type);
    const int ref_tok = mma ? MAX_MMA_TOK : PCU_MMV_MAX_TOK;
    double *ref = malloc(sizeof(double) * (size_t)(n_out * PCU_MMV_MAX_TOK)), *sref = malloc(sizeof(double) * (size_t)(n_out * PCU_MMV_MAX_TOK));
    double *refh = malloc(sizeof(double) * (size_t)(n_out * ref_tok)), *srefh = malloc(sizeof(double) * (size_t)(n_out * ref_tok));
    for (int64_t r = 0; r < n_out; r++) {
        const float *wr = wf + r * n_in;
        for (int t = 0; t < PCU_MMV_MAX_TOK; t++) {
            double a = 0, b = 0;
            for (int64_t i = 0; i < n_in; i++) {
                const double p = (double)wr[i] * x[t * n_in + i];
                a += p, b += fabs(p);
            }
            ref[t * n_out + r] = a, sref[t * n_out + r] = b;
        }
        if (!mma) continue;
        float *whr = malloc(sizeof(float) * (size_t)n_in);
        for (int64_t i = 0; i < n_in; i++) whr[i] = hround(wr[i]);
        for (int t = 0; t < ref_tok; t++) {
            double a = 0, b = 0;
            for (int64_t i = 0; i < n_in; i++) {
                const double p = (double)whr[i] * xh[t * n_in + i];
                a += p, b += fabs(p);
            }
            refh[t * n_out + r] = a, srefh[t * n_out + r] = b;
        }
        free(whr);
    }

    /* device copies: weights at a 16-aligned base and 2 bytes past one (the fallback path) */
    uint8_t *d_wbuf = dalloc(wbytes + 16);
    float *d_x = dalloc(sizeof(float) * (size_t)(n_in * nx));
    uint16_t *d_xh = dalloc(2 * (size_t)(n_in * nx));
    const int64_t ldy = n_out + 3;
    const size_t ybytes = sizeof(float) * (size_t)(ldy * nx);
    float *d_y = dalloc(ybytes), *y = malloc(ybytes);
    pcu_h2d(d_x, x, sizeof(float) * (size_t)(n_in * nx), s);
    pcu_h2d(d_xh, xh16, 2 * (size_t)(n_in * nx), s);

    for (int off = 0; off <= 2; off += 2) {
        if (off && n_out > 33) continue; /* the slow path once per type and n_in is enough */
        pcu_h2d(d_wbuf + off, w, wbytes, s);
        for (int nt = 1; nt <= PCU_MMV_MAX_TOK; nt++) {
            pcu_memset(d_y, 0xff, ybytes, s);
            pcu_matvec(s, type, d_wbuf + off, n_in, n_out, d_x, nt, d_y, ldy);
            pcu_d2h(y, d_y, ybytes, s);
            CHECK(pcu_sync(s) == PAGODA_OK, "matvec %s ran", dtype_name(type));
            compare(off ? "matvec(unaligned)" : "matvec", type, n_in, n_out, nt, y, ldy, ref, sref, &st->mv_err,
                    &st->mv_ratio);
        }
    }
    pcu_h2d(d_wbuf, w, wbytes, s);

    /* dequant to halves: exact */
    uint16_t *d_h = dalloc(2 * (size_t)(n_in * n_out)), *hh = malloc(2 * (size_t)(n_in * n_out));
    pcu_dequant_f16(s, type, d_wbuf, n_in, n_out, d_h);
    pcu_d2h(hh, d_h, 2 * (size_t)(n_in * n_out), s);
    CHECK(pcu_sync(s) == PAGODA_OK, "dequant %s ran", dtype_name(type));
    int64_t n_diff = 0, first = -1;
    for (int64_t i = 0; i < n_in * n_out; i++)
        if (hh[i] != pg_fp32_to_fp16(wf[i]) && n_diff++ == 0) first = i;
    CHECK(n_diff == 0, "dequant_f16 %s n_in %lld n_out %lld: %lld halves differ, first at %lld (%04x vs %04x)",
          dtype_name(type), (long long)n_in, (long long)n_out, (long long)n_diff, (long long)first,
          first >= 0 ? hh[first] : 0, first >= 0 ? pg_fp32_to_fp16(wf[first]) : 0);
    pcu_free(d_h);
    free(hh);

    if (mma) {
        for (size_t k = 0; k < sizeof k_mma_tok / sizeof k_mma_tok[0]; k++) {
            const int nt = k_mma_tok[k];
            pcu_memset(d_y, 0xff, ybytes, s);
            pcu_matmul_mma(s, type, d_wbuf, n_in, n_out, d_xh, nt, d_y, ldy);
            pcu_d2h(y, d_y, ybytes, s);
            CHECK(pcu_sync(s) == PAGODA_OK, "mma %s ran", dtype_name(type));
            compare("mma", type, n_in, n_out, nt, y, ldy, refh, srefh, &st->mma_err, &st->mma_ratio);
        }
    }
    pcu_free(d_wbuf), pcu_free(d_x), pcu_free(d_xh), pcu_free(d_y);
    free(wf), free(w), free(x), free(xh), free(xh16), free(ref), free(sref), free(refh), free(srefh), free(y);
}


/* pcu_repack + pcu_matvec_repacked (n_tok 1..8) against the double reference, pcu_matvec's bound. */
static void test_repacked_shape(int type, int64_t n_in, int64_t n_out, type_stats *st, pcu_stream *s) {
    const k_type_traits *tr = kref_traits(type);
    size_t rb = 0;
    CHECK(dtype_row_size(type, n_in, &rb), "row size");
    const size_t wbytes = rb * (size_t)n_out;
    const int nt_max = PCU_MMV_MAX_TOK;
    float *wf = malloc(sizeof(float) * (size_t)(n_in * n_out)), *x = malloc(sizeof(float) * (size_t)(n_in * nt_max));
    uint8_t *w = malloc(wbytes);
    for (int64_t r = 0; r < n_out; r++) {
        const float sc = r % 7 == 3 ? 0.0f : 0.05f * (1 + r % 5);
        for (int64_t i = 0; i < n_in; i++) wf[r * n_in + i] = sc * test_rand_f(&g_seed);
        tr->from_float(wf + r * n_in, w + r * rb, n_in);
        tr->to_float(w + r * rb, wf + r * n_in, n_in);
    }
    for (int64_t i = 0; i < n_in * nt_max; i++) x[i] = ((i / n_in) % 4 == 2 ? 3.0f : 1.0f) * test_rand_f(&g_seed);
    double *ref = malloc(sizeof(double) * (size_t)(n_out * nt_max)), *sref = malloc(sizeof(double) * (size_t)(n_out * nt_max));
    for (int64_t r = 0; r < n_out; r++)
        for (int t = 0; t < nt_max; t++) {
            double a = 0, b = 0;
            for (int64_t i = 0; i < n_in; i++) {
                const double p = (double)wf[r * n_in + i] * x[t * n_in + i];
                a += p, b += fabs(p);
            }
            ref[t * n_out + r] = a, sref[t * n_out + r] = b;
        }
    const size_t rep_bytes = pcu_repack_bytes(type, n_in, n_out);
    CHECK(rep_bytes >= wbytes * 8 / 9, "repack bytes %zu", rep_bytes);
    uint8_t *d_w = dalloc(wbytes), *d_rep = dalloc(rep_bytes);
    float *d_x = dalloc(sizeof(float) * (size_t)(n_in * nt_max));
    const int64_t ldy = n_out + 3;
    const size_t ybytes = sizeof(float) * (size_t)(ldy * nt_max);
    float *d_y = dalloc(ybytes), *y = malloc(ybytes);
    pcu_h2d(d_w, w, wbytes, s);
    pcu_h2d(d_x, x, sizeof(float) * (size_t)(n_in * nt_max), s);
    pcu_memset(d_rep, 0xee, rep_bytes, s);
    pcu_repack(s, type, d_w, n_in, n_out, d_rep);
    pcu_free(d_w); /* the copy stands alone */
    for (int nt = 1; nt <= nt_max; nt++) {
        pcu_memset(d_y, 0xff, ybytes, s);
        pcu_matvec_repacked(s, type, d_rep, n_in, n_out, d_x, nt, d_y, ldy);
        pcu_d2h(y, d_y, ybytes, s);
        CHECK(pcu_sync(s) == PAGODA_OK, "matvec_repacked %s ran", dtype_name(type));
        compare("matvec_repacked", type, n_in, n_out, nt, y, ldy, ref, sref, &st->mv_err, &st->mv_ratio);
    }
    pcu_free(d_rep), pcu_free(d_x), pcu_free(d_y);
    free(wf), free(x), free(w), free(ref), free(sref), free(y);
}

static void test_repacked(pcu_stream *s) {
    const int types[] = {PAGODA_DTYPE_Q4_0, PAGODA_DTYPE_Q8_0};
    /* 224: one short tile (scales in block order); 256, 768: short tiles with permuted scales;
     * 1312: a full tile + a short one; 4096: full tiles only */
    const int64_t n_ins[] = {224, 256, 1312, 768, 4096};
    CHECK(!pcu_repack_supported(PAGODA_DTYPE_Q4_K) && !pcu_repack_supported(PAGODA_DTYPE_F16), "repack types");
    for (size_t ti = 0; ti < 2; ti++) {
        CHECK(pcu_repack_supported(types[ti]), "%s repack supported", dtype_name(types[ti]));
        type_stats st = {0, 0, 0, 0};
        const int fails0 = g_test_failures;
        for (size_t a = 0; a < sizeof n_ins / sizeof n_ins[0]; a++)
            for (size_t b = 0; b < sizeof k_nout / sizeof k_nout[0]; b++) test_repacked_shape(types[ti], n_ins[a], k_nout[b], &st, s);
        printf("%-5s matvec_repacked max err %.3g (%.3f of bound)%s\n", dtype_name(types[ti]), st.mv_err, st.mv_ratio,
               g_test_failures > fails0 ? "  FAILED" : "");
    }
}

static void test_conversions(pcu_stream *s) {
    const int64_t n = 100003;
    float *x = malloc(sizeof(float) * n);
    uint16_t *h = malloc(2 * n), *b = malloc(2 * n);
    for (int64_t i = 0; i < n; i++) {
        const uint32_t u = (uint32_t)test_rand_u64(&g_seed); /* every bit pattern: NaN, inf, subnormal */
        memcpy(&x[i], &u, 4);
        if (i % 3 == 0) x[i] = test_rand_f(&g_seed) * (i % 2 ? 70000.f : 1e-5f);
    }
    float *d_x = dalloc(sizeof(float) * n);
    uint16_t *d_h = dalloc(2 * n), *d_b = dalloc(2 * n);
    pcu_h2d(d_x, x, sizeof(float) * n, s);
    pcu_f32_to_f16(s, d_x, d_h, n);
    pcu_f32_to_bf16(s, d_x, d_b, n);
    pcu_d2h(h, d_h, 2 * n, s);
    pcu_d2h(b, d_b, 2 * n, s);
    CHECK(pcu_sync(s) == PAGODA_OK, "conversions ran");
    int bad_h = 0, bad_b = 0;
    for (int64_t i = 0; i < n; i++) {
        const bool nan = x[i] != x[i];
        /* NaN payloads may differ; a NaN must stay a NaN */
        const uint16_t eh = pg_fp32_to_fp16(x[i]), eb = pg_fp32_to_bf16(x[i]);
        const bool okh = nan ? ((h[i] & 0x7c00) == 0x7c00 && (h[i] & 0x3ff)) : h[i] == eh;
        const bool okb = nan ? ((b[i] & 0x7f80) == 0x7f80 && (b[i] & 0x7f)) : b[i] == eb;
        if (!okh && bad_h++ < 3) CHECK(0, "f32_to_f16(%a) = %04x, want %04x", x[i], h[i], eh);
        if (!okb && bad_b++ < 3) CHECK(0, "f32_to_bf16(%a) = %04x, want %04x", x[i], b[i], eb);
    }
    printf("conversions: %lld values, f16 mismatches %d, bf16 mismatches %d\n", (long long)n, bad_h, bad_b);
    pcu_free(d_x), pcu_free(d_h), pcu_free(d_b);
    free(x), free(h), free(b);
}

/* Weights of random bytes (values do not matter for timing). */
static void *random_weights(int type, int64_t n_in, int64_t n_out, size_t *bytes, pcu_stream *s) {
    size_t rb = 0;
    dtype_row_size(type, n_in, &rb);
    *bytes = rb * (size_t)n_out;
    uint8_t *w = malloc(*bytes);
    for (size_t i = 0; i < *bytes; i++) w[i] = (uint8_t)(test_rand_u64(&g_seed) & 0x3b); /* keeps half fields finite */
    void *d_w = dalloc(*bytes);
    pcu_h2d(d_w, w, *bytes, s);
    pcu_sync(s);
    free(w);
    return d_w;
}

/* Seconds per launch of f after 3 warm-up launches, over 50 launches between pcu_sync calls, cycling
 * through ncopy weight copies (so the weights never sit in L2 between launches). */
typedef void (*mv_fn)(pcu_stream *s, int type, const void *d_w, int64_t n_in, int64_t n_out, const float *d_x, int nt,
                      float *d_y, int64_t ldy);
static void run_old(pcu_stream *s, int type, const void *d_w, int64_t n_in, int64_t n_out, const float *d_x, int nt,
                    float *d_y, int64_t ldy) {
    pcu_matvec(s, type, d_w, n_in, n_out, d_x, nt, d_y, ldy);
}
static void run_new(pcu_stream *s, int type, const void *d_w, int64_t n_in, int64_t n_out, const float *d_x, int nt,
                    float *d_y, int64_t ldy) {
    pcu_matvec_repacked(s, type, d_w, n_in, n_out, d_x, nt, d_y, ldy);
}
static double time_mv(mv_fn f, pcu_stream *s, int type, void *const *d_w, int ncopy, int64_t n_in, int64_t n_out,
                      const float *d_x, int nt, float *d_y) {
    for (int i = 0; i < 3; i++) f(s, type, d_w[i % ncopy], n_in, n_out, d_x, nt, d_y, n_out);
    pcu_sync(s);
    const int reps = 50;
    const double t0 = now_s();
    for (int i = 0; i < reps; i++) f(s, type, d_w[i % ncopy], n_in, n_out, d_x, nt, d_y, n_out);
    pcu_sync(s);
    return (now_s() - t0) / reps;
}

static void timings_repacked(pcu_stream *s) {
    const int64_t shapes[][2] = {{4096, 4096}, {4096, 11008}, {11008, 4096}, {4096, 32000}}; /* n_in, n_out */
    const int types[] = {PAGODA_DTYPE_Q4_0, PAGODA_DTYPE_Q8_0};
    const int nts[] = {1, 2, 4, 8};
    float *d_x = dalloc(sizeof(float) * 11008 * 8), *d_y = dalloc(sizeof(float) * 32000 * 8);
    pcu_memset(d_x, 0, sizeof(float) * 11008 * 8, s);
    printf("\nmatvec old (GGUF) vs repacked, GB/s of GGUF weight bytes (weights rotated over >= 200 MB):\n");
    for (size_t ti = 0; ti < 2; ti++)
        for (size_t k = 0; k < 4; k++) {
            const int type = types[ti];
            const int64_t n_in = shapes[k][0], n_out = shapes[k][1];
            size_t bytes = 0;
            void *d_w[64], *d_rep[64];
            void *tmp = random_weights(type, n_in, n_out, &bytes, s);
            int ncopy = (int)((200u << 20) / bytes) + 1;
            if (ncopy > 64) ncopy = 64;
            const size_t rbytes = pcu_repack_bytes(type, n_in, n_out);
            for (int c = 0; c < ncopy; c++) {
                d_w[c] = dalloc(bytes), d_rep[c] = dalloc(rbytes);
                pcu_d2d(d_w[c], tmp, bytes, s);
                pcu_repack(s, type, tmp, n_in, n_out, d_rep[c]);
            }
            pcu_sync(s);
            pcu_free(tmp);
            printf("%-5s %5lldx%-5lld", dtype_name(type), (long long)n_out, (long long)n_in);
            for (size_t v = 0; v < 4; v++) {
                const int nt = nts[v];
                const double t_old = time_mv(run_old, s, type, d_w, ncopy, n_in, n_out, d_x, nt, d_y);
                const double t_new = time_mv(run_new, s, type, d_rep, ncopy, n_in, n_out, d_x, nt, d_y);
                printf("  t%d %5.0f -> %5.0f", nt, bytes / t_old / 1e9, bytes / t_new / 1e9);
            }
            printf("\n");
            for (int c = 0; c < ncopy; c++) pcu_free(d_w[c]), pcu_free(d_rep[c]);
        }
    pcu_free(d_x), pcu_free(d_y);
}

static void timings(pcu_stream *s) {
    const int reps = 20;
    const int64_t shapes[][2] = {{4096, 4096}, {4096, 11008}, {11008, 4096}}; /* n_in, n_out */
    const int ttypes[] = {PAGODA_DTYPE_Q4_0, PAGODA_DTYPE_Q8_0, PAGODA_DTYPE_Q4_K, PAGODA_DTYPE_Q5_K,
                          PAGODA_DTYPE_Q6_K, PAGODA_DTYPE_F16,  PAGODA_DTYPE_BF16, PAGODA_DTYPE_Q4_1,
                          PAGODA_DTYPE_Q5_0, PAGODA_DTYPE_Q5_1, PAGODA_DTYPE_F32};
    float *d_x = dalloc(sizeof(float) * 11008 * 128);
    uint16_t *d_xh = dalloc(2 * 11008 * 128);
    float *d_y = dalloc(sizeof(float) * 11008 * 128);
    pcu_memset(d_x, 0, sizeof(float) * 11008 * 128, s);
    pcu_memset(d_xh, 0, 2 * 11008 * 128, s);
    printf("\nmatvec n_tok=1 (GB/s of weights; n_tok=8 in brackets):\n%-6s", "type");
    for (size_t k = 0; k < 3; k++) printf("  %5lldx%-5lld      ", (long long)shapes[k][1], (long long)shapes[k][0]);
    printf("\n");
    for (size_t ti = 0; ti < sizeof ttypes / sizeof ttypes[0]; ti++) {
        const int type = ttypes[ti];
        printf("%-6s", dtype_name(type));
        for (size_t k = 0; k < 3; k++) {
            size_t bytes;
            void *d_w = random_weights(type, shapes[k][0], shapes[k][1], &bytes, s);
            double gbs[2];
            for (int v = 0; v < 2; v++) {
                const int nt = v ? 8 : 1;
                pcu_matvec(s, type, d_w, shapes[k][0], shapes[k][1], d_x, nt, d_y, shapes[k][1]);
                pcu_sync(s);
                const double t0 = now_s();
                for (int i = 0; i < reps; i++) pcu_matvec(s, type, d_w, shapes[k][0], shapes[k][1], d_x, nt, d_y, shapes[k][1]);
                pcu_sync(s);
                gbs[v] = bytes * (double)reps / (now_s() - t0) / 1e9;
            }
            printf("  %6.0f [%6.0f]    ", gbs[0], gbs[1]);
            pcu_free(d_w);
        }
        printf("\n");
    }

    printf("\nmma vs dequant_f16 + pcu_gemm, 11008x4096 (out x in), microseconds:\n");
    const int mtypes[] = {PAGODA_DTYPE_Q4_0, PAGODA_DTYPE_Q8_0, PAGODA_DTYPE_Q4_K, PAGODA_DTYPE_Q6_K};
    const int mtok[] = {16, 64, 128};
    void *d_h = dalloc(2 * (size_t)11008 * 4096);
    for (size_t ti = 0; ti < sizeof mtypes / sizeof mtypes[0]; ti++) {
        size_t bytes;
        void *d_w = random_weights(mtypes[ti], 4096, 11008, &bytes, s);
        printf("%-6s", dtype_name(mtypes[ti]));
        for (size_t k = 0; k < 3; k++) {
            const int nt = mtok[k];
            pcu_matmul_mma(s, mtypes[ti], d_w, 4096, 11008, d_xh, nt, d_y, 11008);
            pcu_sync(s);
            double t0 = now_s();
            for (int i = 0; i < reps; i++) pcu_matmul_mma(s, mtypes[ti], d_w, 4096, 11008, d_xh, nt, d_y, 11008);
            pcu_sync(s);
            const double t_mma = (now_s() - t0) / reps;
            pcu_dequant_f16(s, mtypes[ti], d_w, 4096, 11008, d_h);
            pcu_gemm(s, PAGODA_DTYPE_F16, d_h, 4096, 11008, d_xh, nt, d_y, 11008);
            pcu_sync(s);
            t0 = now_s();
            for (int i = 0; i < reps; i++) {
                pcu_dequant_f16(s, mtypes[ti], d_w, 4096, 11008, d_h);
                pcu_gemm(s, PAGODA_DTYPE_F16, d_h, 4096, 11008, d_xh, nt, d_y, 11008);
            }
            pcu_sync(s);
            const double t_ref = (now_s() - t0) / reps;
            printf("  n_tok %3d: mma %7.1f  deq+gemm %7.1f", nt, t_mma * 1e6, t_ref * 1e6);
        }
        printf("\n");
        pcu_free(d_w);
    }
    pcu_free(d_h), pcu_free(d_x), pcu_free(d_xh), pcu_free(d_y);
}
#endif

int main(void) {
#ifndef PAGODA_CUDA
    TEST_SKIP("built without CUDA");
#else
    char why[256];
    if (!pcu_available(why, sizeof why)) TEST_SKIP("no CUDA device: %s", why);
    pcu_stream *s = NULL;
    CHECK(pcu_stream_create(&s) == PAGODA_OK, "stream");
    if (!s) TEST_DONE();
    for (size_t ti = 0; ti < sizeof k_types / sizeof k_types[0]; ti++) {
        const int type = k_types[ti];
        CHECK(pcu_weight_supported(type), "%s supported", dtype_name(type));
        const bool kq = type == PAGODA_DTYPE_Q4_K || type == PAGODA_DTYPE_Q5_K || type == PAGODA_DTYPE_Q6_K;
        const bool plain = type == PAGODA_DTYPE_F32 || type == PAGODA_DTYPE_F16 || type == PAGODA_DTYPE_BF16;
        /* 224 and 768: rows of odd block counts (Q4_0/Q6_K rows only 2-byte aligned); 100: plain rows
         * with n_in % 8 != 0 (fallback path) */
        const int64_t n_ins[] = {plain ? 100 : (kq ? 768 : 224), 256, 512, 4096};
        type_stats st = {0, 0, 0, 0};
        const int fails0 = g_test_failures;
        for (size_t a = 0; a < 4; a++)
            for (size_t b = 0; b < sizeof k_nout / sizeof k_nout[0]; b++) {
                if (n_ins[a] == 4096 && k_nout[b] > 33 && ti % 2) continue; /* keep the run short */
                test_shape(type, n_ins[a], k_nout[b], &st, s);
            }
        printf("%-5s matvec max err %.3g (%.3f of bound)", dtype_name(type), st.mv_err, st.mv_ratio);
        if (pcu_mma_supported(type)) printf("  mma max err %.3g (%.3f of bound)", st.mma_err, st.mma_ratio);
        printf("%s\n", g_test_failures > fails0 ? "  FAILED" : "");
    }
    CHECK(!pcu_mma_supported(PAGODA_DTYPE_F16), "plain types go through cuBLAS");
    test_repacked(s);
    test_conversions(s);
    if (!g_test_failures) timings_repacked(s);
    if (!g_test_failures) timings(s);
    pcu_stream_destroy(s);
    TEST_DONE();
#endif
}
