/* CUDA ops and attention (src/kernels/cuda/ops.cu, attention.cu) against the kref_* reference:
 *   get_rows (every GPU weight type), kv_store, add_bias: exact
 *   norms, head_rmsnorm, rope, silu_mul, gelu: |err| <= 1e-5 * |ref| + 1e-6
 *   attention (paged, GQA/MQA, windows, mixed decode/prefill batches, f32 and f16 caches):
 *     max abs err <= 2e-5 (outputs are convex mixes of V in [-1, 1])
 * Also prints (does not assert) decode and prefill attention timings. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test_util.h"

#ifdef PAGODA_CUDA
#include "core/dtype.h"
#include "core/fp16.h"
#include "kernels/cuda/pcu_kernels.h"
#include "kernels/kernels.h"
#include "kernels/ops.h"

static unsigned long long g_seed = 777;
static pcu_stream *g_s;

static float *rand_vec(int64_t n, float amp) {
    float *x = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] = amp * test_rand_f(&g_seed);
    return x;
}

static void *dev_copy(const void *h, size_t bytes) {
    void *d = NULL;
    CHECK(pcu_malloc(&d, bytes ? bytes : 1) == PAGODA_OK, "pcu_malloc %zu", bytes);
    if (bytes) pcu_h2d(d, h, bytes, NULL);
    return d;
}

static void to_host(void *h, const void *d, size_t bytes) {
    CHECK(pcu_sync(g_s) == PAGODA_OK, "kernel error");
    pcu_d2h(h, d, bytes, NULL);
}

/* max over i of |a - b| / (1e-5 * |b| + 1e-6): <= 1 passes */
static double rel_err(const float *a, const float *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]) / (1e-5 * fabs(b[i]) + 1e-6);
        if (!(e <= m)) m = e; /* NaN fails */
    }
    return m;
}

static double g_worst_rel; /* largest rel_err seen, printed */
static void note_rel(double e) { g_worst_rel = e > g_worst_rel ? e : g_worst_rel; }

/* ---- get_rows ---- */

static void test_get_rows(void) {
    const int types[] = {PAGODA_DTYPE_F32, PAGODA_DTYPE_F16, PAGODA_DTYPE_BF16, PAGODA_DTYPE_Q4_0,
                         PAGODA_DTYPE_Q4_1, PAGODA_DTYPE_Q5_0, PAGODA_DTYPE_Q5_1, PAGODA_DTYPE_Q8_0,
                         PAGODA_DTYPE_Q4_K, PAGODA_DTYPE_Q5_K, PAGODA_DTYPE_Q6_K};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const int t = types[ti];
        const int blk = dtype_info(t)->block_size;
        const int64_t n_cols = blk == 1 ? 37 : (blk == 32 ? 96 : 512);
        const int n_rows = 29, n = 23;
        size_t rs = 0;
        CHECK(dtype_row_size(t, n_cols, &rs), "row size");
        const k_type_traits *tr = kref_traits(t);
        uint8_t *tab = malloc(rs * n_rows);
        for (int r = 0; r < n_rows; r++) {
            float *x = rand_vec(n_cols, r % 3 == 0 ? 0.01f : 3.0f);
            tr->from_float(x, tab + rs * r, n_cols);
            free(x);
        }
        int32_t ids[23];
        for (int i = 0; i < n; i++) ids[i] = (int32_t)(test_rand_u64(&g_seed) % n_rows);
        float *base = rand_vec((int64_t)n * n_cols, 1.0f), *got = malloc(sizeof(float) * n * n_cols);
        float *want = malloc(sizeof(float) * n * n_cols), *row = malloc(sizeof(float) * n_cols);
        void *d_tab = dev_copy(tab, rs * n_rows), *d_ids = dev_copy(ids, sizeof ids);
        float *d_out = dev_copy(base, sizeof(float) * n * n_cols);
        /* row0 10: the table is rows [10, 39) of a vocabulary (a tensor-parallel rank's slice); the
           ids (0..28) outside it read zeros */
        for (int acc = 0; acc < 4; acc++) {
            const int64_t row0 = acc >= 2 ? 10 : 0;
            pcu_h2d(d_out, base, sizeof(float) * n * n_cols, NULL);
            pcu_get_rows(g_s, t, d_tab, n_cols, d_ids, n, d_out, acc % 2, row0, n_rows);
            to_host(got, d_out, sizeof(float) * n * n_cols);
            for (int i = 0; i < n; i++) {
                const int64_t r = ids[i] - row0;
                if (r >= 0) tr->to_float(tab + rs * r, row, n_cols);
                else memset(row, 0, sizeof(float) * n_cols);
                for (int64_t j = 0; j < n_cols; j++) want[i * n_cols + j] = acc % 2 ? base[i * n_cols + j] + row[j] : row[j];
            }
            int bad = 0;
            for (int64_t i = 0; i < n * n_cols; i++) bad += memcmp(&got[i], &want[i], 4) != 0;
            CHECK(!bad, "get_rows %s acc=%d row0=%lld: %d of %lld values differ", dtype_name(t), acc % 2, (long long)row0,
                  bad, (long long)(n * n_cols));
        }
        pcu_free(d_tab), pcu_free(d_ids), pcu_free(d_out);
        free(tab), free(base), free(got), free(want), free(row);
    }
}

/* ---- norms ---- */

static void test_add_norm(void) {
    const int64_t sizes[] = {1, 7, 33, 100, 257, 1000, 4097};
    const int rows_list[] = {1, 5, 37};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
        for (size_t ri = 0; ri < 3; ri++)
            for (int variant = 0; variant < 4; variant++) /* 0 none, 1 delta, 2 delta+bias, 3 in place */
                for (int ln = 0; ln < 2; ln++) {
                    const int64_t n = sizes[si];
                    const int rows = rows_list[ri];
                    const int64_t tot = n * rows;
                    float *x = rand_vec(tot, 2.0f), *dl = rand_vec(tot, 1.0f), *bias = rand_vec(n, 0.5f);
                    float *w = rand_vec(n, 1.5f), *b = rand_vec(n, 0.5f);
                    if (variant == 3)
                        for (int64_t i = 0; i < tot; i++) x[i] += 300.0f; /* cancellation case */
                    const float *wp = (variant & 1) ? NULL : w, *bp = variant == 2 ? NULL : b;
                    float *xr = malloc(sizeof(float) * tot), *yr = malloc(sizeof(float) * tot);
                    for (int64_t i = 0; i < tot; i++)
                        xr[i] = variant == 1 ? x[i] + dl[i] : variant == 2 ? x[i] + (dl[i] + bias[i % n]) : x[i];
                    for (int r = 0; r < rows; r++) {
                        if (ln)
                            kref_layernorm(yr + r * n, xr + r * n, wp, bp, n, 1e-5f);
                        else
                            kref_rmsnorm(yr + r * n, xr + r * n, wp, n, 1e-5f);
                    }
                    float *d_x = dev_copy(x, sizeof(float) * tot), *d_dl = dev_copy(dl, sizeof(float) * tot);
                    float *d_bias = dev_copy(bias, sizeof(float) * n), *d_w = dev_copy(w, sizeof(float) * n);
                    float *d_b = dev_copy(b, sizeof(float) * n), *d_y = dev_copy(x, sizeof(float) * tot);
                    float *d_yy = variant == 3 ? d_x : d_y;
                    uint16_t *d_yh = NULL; /* the half copy of y, on every other case */
                    if ((si + ri) % 2 && pcu_malloc((void **)&d_yh, sizeof(uint16_t) * tot)) d_yh = NULL;
                    pcu_add_norm(g_s, d_x, variant == 1 || variant == 2 ? d_dl : NULL, variant == 2 ? d_bias : NULL, d_yy,
                                 wp ? d_w : NULL, bp ? d_b : NULL, n, rows, 1e-5f, ln, d_yh);
                    float *gx = malloc(sizeof(float) * tot), *gy = malloc(sizeof(float) * tot);
                    to_host(gy, d_yy, sizeof(float) * tot);
                    if (d_yh) { /* exactly y rounded to half */
                        uint16_t *gh = malloc(sizeof(uint16_t) * tot);
                        to_host(gh, d_yh, sizeof(uint16_t) * tot);
                        int64_t bad = 0;
                        for (int64_t i = 0; i < tot; i++) bad += gh[i] != pg_fp32_to_fp16(gy[i]);
                        CHECK(bad == 0, "add_norm half output: %lld of %lld differ from y rounded", (long long)bad, (long long)tot);
                        free(gh);
                        pcu_free(d_yh);
                    }
                    to_host(gx, d_x, sizeof(float) * tot);
                    if (variant != 3)
                        CHECK(!memcmp(gx, xr, sizeof(float) * tot), "add_norm residual n=%lld rows=%d v=%d",
                              (long long)n, rows, variant);
                    double e = rel_err(gy, yr, tot);
                    note_rel(e);
                    CHECK(e <= 1.0, "add_norm %s n=%lld rows=%d v=%d rel=%g", ln ? "layernorm" : "rmsnorm",
                          (long long)n, rows, variant, e);
                    pcu_free(d_x), pcu_free(d_dl), pcu_free(d_bias), pcu_free(d_w), pcu_free(d_b), pcu_free(d_y);
                    free(x), free(dl), free(bias), free(w), free(b), free(xr), free(yr), free(gx), free(gy);
                }
}

static void test_head_rmsnorm(void) {
    const int hds[] = {16, 64, 128, 6};
    for (int hi = 0; hi < 4; hi++)
        for (int nw = 0; nw < 2; nw++) {
            const int hd = hds[hi], n_tok = 7, n_head = 5;
            const int64_t stride = (int64_t)n_head * hd + 11;
            float *x = rand_vec(n_tok * stride, 3.0f), *w = rand_vec(hd, 1.5f);
            float *ref = malloc(sizeof(float) * n_tok * stride), *got = malloc(sizeof(float) * n_tok * stride);
            memcpy(ref, x, sizeof(float) * n_tok * stride);
            for (int t = 0; t < n_tok; t++)
                for (int h = 0; h < n_head; h++) {
                    float *xh = ref + t * stride + h * hd;
                    kref_rmsnorm(xh, xh, nw ? NULL : w, hd, 1e-6f);
                }
            float *d_x = dev_copy(x, sizeof(float) * n_tok * stride), *d_w = dev_copy(w, sizeof(float) * hd);
            pcu_head_rmsnorm(g_s, d_x, n_tok, n_head, hd, stride, nw ? NULL : d_w, 1e-6f);
            to_host(got, d_x, sizeof(float) * n_tok * stride);
            double e = rel_err(got, ref, n_tok * stride);
            note_rel(e);
            CHECK(e <= 1.0, "head_rmsnorm hd=%d rel=%g", hd, e);
            pcu_free(d_x), pcu_free(d_w);
            free(x), free(w), free(ref), free(got);
        }
}

/* ---- element-wise ---- */

static void test_elementwise(void) {
    const int64_t n = 100003;
    float *g = rand_vec(n, 8.0f), *u = rand_vec(n, 2.0f), *got = malloc(sizeof(float) * n);
    float *ref = malloc(sizeof(float) * n);
    float *d_g = dev_copy(g, sizeof(float) * n), *d_u = dev_copy(u, sizeof(float) * n);
    memcpy(ref, g, sizeof(float) * n);
    kref_silu_mul(ref, u, n);
    pcu_silu_mul(g_s, d_g, d_u, n);
    to_host(got, d_g, sizeof(float) * n);
    double e = rel_err(got, ref, n);
    note_rel(e);
    CHECK(e <= 1.0, "silu_mul rel=%g", e);

    memcpy(ref, g, sizeof(float) * n);
    kref_gelu(ref, n);
    pcu_h2d(d_g, g, sizeof(float) * n, NULL);
    pcu_gelu(g_s, d_g, n);
    to_host(got, d_g, sizeof(float) * n);
    e = rel_err(got, ref, n);
    note_rel(e);
    CHECK(e <= 1.0, "gelu rel=%g", e);
    pcu_free(d_g), pcu_free(d_u);
    free(g), free(u), free(got), free(ref);

    /* add_bias: rows x n with row stride ld > n; exact */
    const int rows = 37;
    const int64_t nb = 1001, ld = 1013;
    float *y = rand_vec(rows * ld, 1.0f), *b = rand_vec(nb, 1.0f), *gy = malloc(sizeof(float) * rows * ld);
    float *d_y = dev_copy(y, sizeof(float) * rows * ld), *d_b = dev_copy(b, sizeof(float) * nb);
    pcu_add_bias(g_s, d_y, d_b, rows, nb, ld);
    to_host(gy, d_y, sizeof(float) * rows * ld);
    for (int r = 0; r < rows; r++)
        for (int64_t i = 0; i < nb; i++) y[r * ld + i] += b[i];
    CHECK(!memcmp(gy, y, sizeof(float) * rows * ld), "add_bias");
    pcu_free(d_y), pcu_free(d_b);
    free(y), free(b), free(gy);
}

static void test_rope(void) {
    const int hds[] = {16, 64, 128};
    for (int hi = 0; hi < 3; hi++)
        for (int partial = 0; partial < 2; partial++)
            for (int neox = 0; neox < 2; neox++) {
                const int hd = hds[hi], rd = partial ? hd / 2 : hd, n_head = 3, n_tok = 9;
                const int64_t stride = (int64_t)n_head * hd + 5;
                int32_t pos[9] = {0, 1, 7, -1, 100, 1023, 4096, 32767, 5};
                float inv_freq[64];
                for (int i = 0; i < rd / 2; i++) inv_freq[i] = powf(10000.0f, -2.0f * i / rd);
                float *x = rand_vec(n_tok * stride, 2.0f), *ref = malloc(sizeof(float) * n_tok * stride);
                float *got = malloc(sizeof(float) * n_tok * stride);
                memcpy(ref, x, sizeof(float) * n_tok * stride);
                for (int t = 0; t < n_tok; t++)
                    if (pos[t] >= 0) kref_rope(ref + t * stride, n_head, hd, rd, pos[t], inv_freq, neox);
                float *d_x = dev_copy(x, sizeof(float) * n_tok * stride);
                int32_t *d_pos = dev_copy(pos, sizeof pos);
                float *d_f = dev_copy(inv_freq, sizeof(float) * (rd / 2));
                pcu_rope(g_s, d_x, n_tok, stride, n_head, hd, rd, d_pos, d_f, neox);
                to_host(got, d_x, sizeof(float) * n_tok * stride);
                double e = rel_err(got, ref, n_tok * stride);
                note_rel(e);
                CHECK(e <= 1.0, "rope hd=%d rd=%d neox=%d rel=%g", hd, rd, neox, e);
                pcu_free(d_x), pcu_free(d_pos), pcu_free(d_f);
                free(x), free(ref), free(got);
            }
}

static void test_kv_store(void) {
    for (int f16 = 0; f16 < 2; f16++) {
        const int n_tok = 37, kvd = 2 * 64 + 6, n_slots = 64;
        const int64_t ld = kvd + 3;
        const size_t es = f16 ? 2 : 4;
        float *k = rand_vec(n_tok * ld, 4.0f), *v = rand_vec(n_tok * ld, 4.0f);
        int32_t slot[37];
        for (int t = 0; t < n_tok; t++) slot[t] = t % 5 == 3 ? -1 : (t * 7 + 3) % n_slots; /* distinct */
        uint8_t *kc = malloc(es * n_slots * kvd), *vc = malloc(es * n_slots * kvd);
        memset(kc, 0x5a, es * n_slots * kvd), memset(vc, 0xa5, es * n_slots * kvd);
        void *d_kc = dev_copy(kc, es * n_slots * kvd), *d_vc = dev_copy(vc, es * n_slots * kvd);
        float *d_k = dev_copy(k, sizeof(float) * n_tok * ld), *d_v = dev_copy(v, sizeof(float) * n_tok * ld);
        int32_t *d_slot = dev_copy(slot, sizeof slot);
        pcu_kv_store(g_s, d_kc, d_vc, f16, d_k, d_v, ld, n_tok, kvd, d_slot);
        for (int t = 0; t < n_tok; t++) {
            if (slot[t] < 0) continue;
            for (int j = 0; j < kvd; j++) {
                size_t o = (size_t)slot[t] * kvd + j;
                if (f16) {
                    ((uint16_t *)kc)[o] = pg_fp32_to_fp16(k[t * ld + j]);
                    ((uint16_t *)vc)[o] = pg_fp32_to_fp16(v[t * ld + j]);
                } else {
                    ((float *)kc)[o] = k[t * ld + j];
                    ((float *)vc)[o] = v[t * ld + j];
                }
            }
        }
        uint8_t *gk = malloc(es * n_slots * kvd), *gv = malloc(es * n_slots * kvd);
        to_host(gk, d_kc, es * n_slots * kvd);
        to_host(gv, d_vc, es * n_slots * kvd);
        CHECK(!memcmp(gk, kc, es * n_slots * kvd) && !memcmp(gv, vc, es * n_slots * kvd), "kv_store f16=%d", f16);
        pcu_free(d_kc), pcu_free(d_vc), pcu_free(d_k), pcu_free(d_v), pcu_free(d_slot);
        free(k), free(v), free(kc), free(vc), free(gk), free(gv);
    }
}

/* ---- attention ---- */

#define N_SEQ 5
static const int g_seq_len[N_SEQ] = {1, 17, 300, 1100, 40};
#define BS 16
#define MAX_BLOCKS 80

typedef struct {
    int seq, pos0, n; /* a run of n queries of sequence seq at pos0..; seq < 0: n padding tokens */
} run;

static double g_attn_err;

/* One batch of runs against kref_attention per run. Cache: shuffled blocks, sequence s's
 * positions 0..len-1 filled, the rest NaN (a stray read poisons the output). */
static void attn_batch(const run *runs, int n_runs, int n_head, int n_kv, int hd, int f16, int window, int max_ctx,
                       const char *what) {
    const int n_phys = N_SEQ * MAX_BLOCKS / 4 + 7;
    const size_t slot = (size_t)n_kv * hd, total = (size_t)n_phys * BS * slot;
    float *k = malloc(total * sizeof(float)), *v = malloc(total * sizeof(float));
    for (size_t i = 0; i < total; i++) k[i] = v[i] = NAN;
    int *perm = malloc(sizeof(int) * n_phys);
    for (int i = 0; i < n_phys; i++) perm[i] = i;
    for (int i = n_phys - 1; i > 0; i--) {
        int j = (int)(test_rand_u64(&g_seed) % (unsigned)(i + 1)), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    int32_t bt[N_SEQ * MAX_BLOCKS];
    int used = 0;
    for (int s = 0; s < N_SEQ; s++)
        for (int b = 0; b < MAX_BLOCKS; b++) bt[s * MAX_BLOCKS + b] = b < (g_seq_len[s] + BS - 1) / BS ? perm[used++] : -1;
    for (int s = 0; s < N_SEQ; s++)
        for (int p = 0; p < g_seq_len[s]; p++) {
            size_t off = ((size_t)bt[s * MAX_BLOCKS + p / BS] * BS + p % BS) * slot;
            for (size_t e = 0; e < slot; e++) {
                float a = test_rand_f(&g_seed), b = test_rand_f(&g_seed);
                /* f16: the reference reads the halves, so give it the rounded values */
                k[off + e] = f16 ? pg_fp16_to_fp32(pg_fp32_to_fp16(a)) : a;
                v[off + e] = f16 ? pg_fp16_to_fp32(pg_fp32_to_fp16(b)) : b;
            }
        }
    void *kc = k, *vc = v;
    uint16_t *kh = NULL, *vh = NULL;
    if (f16) {
        kh = malloc(total * 2), vh = malloc(total * 2);
        for (size_t i = 0; i < total; i++) kh[i] = pg_fp32_to_fp16(k[i]), vh[i] = pg_fp32_to_fp16(v[i]);
        kc = kh, vc = vh;
    }
    int n_tok = 0;
    for (int r = 0; r < n_runs; r++) n_tok += runs[r].n;
    const int qd = n_head * hd;
    const int64_t q_stride = qd + 8;
    float *q = rand_vec(n_tok * q_stride, 1.0f), *out = malloc(sizeof(float) * n_tok * qd);
    float *ref = malloc(sizeof(float) * n_tok * qd), *qr = malloc(sizeof(float) * n_tok * qd);
    int32_t *tpos = malloc(sizeof(int32_t) * n_tok), *tseq = malloc(sizeof(int32_t) * n_tok);
    const float scale = 1.0f / sqrtf((float)hd);
    for (int r = 0, t = 0; r < n_runs; r++) {
        const run *u = &runs[r];
        for (int i = 0; i < u->n; i++) {
            tpos[t + i] = u->seq < 0 ? -1 : u->pos0 + i;
            tseq[t + i] = u->seq < 0 ? 0 : u->seq;
            memcpy(qr + (size_t)(t + i) * qd, q + (t + i) * q_stride, sizeof(float) * qd);
        }
        if (u->seq < 0) {
            memset(ref + (size_t)t * qd, 0, sizeof(float) * qd * u->n);
        } else {
            k_kv_view view = {kc, vc, bt + u->seq * MAX_BLOCKS, BS, n_kv, hd, f16};
            kref_attention(ref + (size_t)t * qd, qr + (size_t)t * qd, u->n, u->pos0, n_head, scale, window, &view);
        }
        t += u->n;
    }
    const size_t es = f16 ? 2 : 4;
    void *d_k = dev_copy(kc, total * es), *d_v = dev_copy(vc, total * es);
    float *d_q = dev_copy(q, sizeof(float) * n_tok * q_stride), *d_out = NULL;
    pcu_malloc((void **)&d_out, sizeof(float) * n_tok * qd);
    pcu_memset(d_out, 0xff, sizeof(float) * n_tok * qd, NULL); /* NaN: every output must be written */
    int32_t *d_pos = dev_copy(tpos, sizeof(int32_t) * n_tok), *d_seq = dev_copy(tseq, sizeof(int32_t) * n_tok);
    int32_t *d_bt = dev_copy(bt, sizeof bt);
    size_t sb = pcu_attention_scratch_bytes(n_tok + 50, n_head, hd, max_ctx);
    void *d_scr = NULL;
    pcu_malloc(&d_scr, sb ? sb : 1);
    pcu_attn_args a = {d_k, d_v, f16, BS, n_head, n_kv, hd, scale, window, d_pos, d_seq, d_bt, MAX_BLOCKS};
    pcu_attention(g_s, &a, d_out, d_q, q_stride, n_tok, max_ctx, d_scr);
    to_host(out, d_out, sizeof(float) * n_tok * qd);
    double err = 0;
    for (int64_t i = 0; i < (int64_t)n_tok * qd; i++) {
        double d = fabs((double)out[i] - ref[i]);
        if (!(d <= err)) err = d;
    }
    g_attn_err = err > g_attn_err ? err : g_attn_err;
    CHECK(err <= 2e-5, "attention %s: heads %d/%d hd=%d f16=%d window=%d max_ctx=%d n_tok=%d err=%g", what, n_head,
          n_kv, hd, f16, window, max_ctx, n_tok, err);
    pcu_free(d_k), pcu_free(d_v), pcu_free(d_q), pcu_free(d_out), pcu_free(d_pos), pcu_free(d_seq), pcu_free(d_bt);
    pcu_free(d_scr);
    free(k), free(v), free(kh), free(vh), free(perm), free(q), free(out), free(ref), free(qr), free(tpos), free(tseq);
}

static void test_attention(void) {
    /* decode: one query at the end of each context (padding in between) */
    const run dec[] = {{0, 0, 1}, {1, 16, 1}, {-1, 0, 1}, {2, 299, 1}, {3, 1099, 1}, {4, 39, 1}};
    /* mixed: decodes plus 40-query prefills at p0 > 0 and p0 == 0 (split regime, n_tok <= 128) */
    const run mix[] = {{3, 1099, 1}, {2, 260, 40}, {1, 16, 1}, {-1, 0, 2}, {4, 0, 40}, {0, 0, 1}};
    /* large: more than 128 tokens (direct regime, no splits) */
    const run big[] = {{4, 0, 40}, {1, 0, 17}, {3, 1000, 100}, {-1, 0, 3}, {2, 263, 37}, {0, 0, 1}};
    const int heads[3][2] = {{4, 2}, {8, 8}, {48, 1}};
    const int hds[] = {16, 64, 128};
    for (int hi = 0; hi < 3; hi++)
        for (int di = 0; di < 3; di++)
            for (int f16 = 0; f16 < 2; f16++)
                for (int wi = 0; wi < 2; wi++) {
                    const int nh = heads[hi][0], nkv = heads[hi][1], hd = hds[di], win = wi ? 64 : 0;
                    attn_batch(dec, 6, nh, nkv, hd, f16, win, 1600, "decode");
                    attn_batch(dec, 6, nh, nkv, hd, f16, win, 20000, "decode/long max_ctx");
                    attn_batch(mix, 6, nh, nkv, hd, f16, win, 1500, "mixed");
                    attn_batch(big, 6, nh, nkv, hd, f16, win, 1200, "large");
                }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Timings only: n_head 32/32, head_dim 128, f16 cache of constant halves. */
static void time_attention(void) {
    const int nh = 32, hd = 128, qd = nh * hd, max_seq = 128, max_len = 2048, mb = max_len / BS;
    const size_t slots = (size_t)max_seq * max_len, bytes = slots * nh * hd * 2;
    void *d_k = NULL, *d_v = NULL, *d_scr = NULL;
    float *d_q = NULL, *d_out = NULL;
    int32_t *d_pos = NULL, *d_seq = NULL, *d_bt = NULL;
    if (pcu_malloc(&d_k, bytes) || pcu_malloc(&d_v, bytes)) {
        printf("attention timing: skipped (no memory for the cache)\n");
        pcu_free(d_k);
        return;
    }
    pcu_memset(d_k, 0x2c, bytes, NULL); /* halves 0x2c2c ~ 0.06 */
    pcu_memset(d_v, 0x3c, bytes, NULL);
    const int max_tok = 512;
    size_t sb = pcu_attention_scratch_bytes(max_tok, nh, hd, max_len);
    pcu_malloc(&d_scr, sb);
    pcu_malloc((void **)&d_q, sizeof(float) * max_tok * qd);
    pcu_malloc((void **)&d_out, sizeof(float) * max_tok * qd);
    pcu_memset(d_q, 0, sizeof(float) * max_tok * qd, NULL);
    int32_t *bt = malloc(sizeof(int32_t) * max_seq * mb), pos[512], seq[512];
    for (int i = 0; i < max_seq * mb; i++) bt[i] = i;
    d_bt = dev_copy(bt, sizeof(int32_t) * max_seq * mb);
    pcu_malloc((void **)&d_pos, sizeof pos);
    pcu_malloc((void **)&d_seq, sizeof seq);
    pcu_attn_args a = {d_k, d_v, true, BS, nh, nh, hd, 1.0f / sqrtf((float)hd), 0, d_pos, d_seq, d_bt, mb};
    for (int mode = 0; mode < 5; mode++) {
        int n_tok, ctx;
        if (mode < 4) { /* decode: n_seq sequences at context ctx */
            n_tok = mode % 2 ? 128 : 64, ctx = mode / 2 ? 2048 : 512;
            for (int i = 0; i < n_tok; i++) pos[i] = ctx - 1, seq[i] = i;
        } else { /* prefill: 512 tokens of one sequence from position 0 */
            n_tok = 512, ctx = 512;
            for (int i = 0; i < n_tok; i++) pos[i] = i, seq[i] = 0;
        }
        pcu_h2d(d_pos, pos, sizeof(int32_t) * n_tok, NULL);
        pcu_h2d(d_seq, seq, sizeof(int32_t) * n_tok, NULL);
        pcu_attention(g_s, &a, d_out, d_q, qd, n_tok, ctx, d_scr);
        pcu_sync(g_s);
        const int reps = 20;
        double t0 = now_s();
        for (int r = 0; r < reps; r++) pcu_attention(g_s, &a, d_out, d_q, qd, n_tok, ctx, d_scr);
        CHECK(pcu_sync(g_s) == PAGODA_OK, "timing run failed");
        double ms = (now_s() - t0) * 1e3 / reps;
        double gb = mode < 4 ? (double)n_tok * ctx * nh * hd * 2 * 2 / 1e9 : 0;
        if (mode < 4)
            printf("attention decode: %3d seqs x ctx %4d (32/32 heads, hd 128, f16): %.3f ms (%.0f GB/s of K/V)\n",
                   n_tok, ctx, ms, gb / (ms * 1e-3));
        else
            printf("attention prefill: 512 tokens (32/32 heads, hd 128, f16): %.3f ms\n", ms);
    }
    pcu_free(d_k), pcu_free(d_v), pcu_free(d_scr), pcu_free(d_q), pcu_free(d_out), pcu_free(d_pos), pcu_free(d_seq);
    pcu_free(d_bt);
    free(bt);
}

int main(void) {
    char why[256];
    if (!pcu_available(why, sizeof why)) TEST_SKIP("no CUDA device: %s", why);
    CHECK(pcu_stream_create(&g_s) == PAGODA_OK, "stream");
    test_get_rows();
    test_add_norm();
    test_head_rmsnorm();
    test_elementwise();
    test_rope();
    test_kv_store();
    printf("ops: worst error / bound = %.3g\n", g_worst_rel);
    test_attention();
    printf("attention: max abs err vs kref %.3g (bound 2e-5)\n", g_attn_err);
    time_attention();
    pcu_stream_destroy(g_s);
    TEST_DONE();
}

#else
int main(void) { TEST_SKIP("built without CUDA"); }
#endif
