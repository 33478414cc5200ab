/* The backend interface op by op: one step of a tiny attention layer (embedding rows, add+norm,
 * products written with a row stride, q/k norm, rope by each token's position, KV store through
 * block tables, paged attention, activations, logits rows) on the CPU backend, checked against
 * the scalar reference kernels (kref_*) called with the positions and slots worked out here; then
 * the same step on every other backend present (CUDA where a device answers), checked against the
 * CPU backend. Also: row shards are views whose products are the matching rows of the whole,
 * be_shard_view refuses column shards and uneven splits with a message, column shards copied by
 * be_shard_copy give products that sum to the whole (block types: whole blocks per shard, else a
 * message), and the all_reduce op calls the config's hook. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "kernels/kernels.h"
#include "kernels/ops.h"
#include "test_util.h"

enum { V = 10, E = 64, NH = 2, NKV = 1, HD = 16, QD = NH * HD, KVD = NKV * HD, D = QD + 2 * KVD, T = 5, BS = 4, NB = 4,
       FF = 24 };

typedef struct {
    float x[T][E], xn[T][E], qkv[T][D], att[T][QD], q2[T][D], gate[T][FF], sw[T][FF], xo[2][E];
} outputs;

static float g_embd[V][E], g_wqkv[D][E], g_wq[QD][E], g_norm[E], g_qnorm[HD], g_inv[HD / 2], g_gu[T][2 * FF];
static int32_t g_tokens[T] = {3, 7, 1, 9, 2}, g_start[3] = {0, 3, 5}, g_pos0[2] = {0, 0}, g_tab0[NB] = {2, 0, 1, 3},
               g_tab1[NB] = {1, 3, 0, 2}, g_nb[2] = {NB, NB}, g_rows[2] = {2, 4};

static void fill(float *x, int n, unsigned long long *s) {
    for (int i = 0; i < n; i++) x[i] = test_rand_f(s);
}

static pg_tensor f32(const void *data, int64_t n_in, int64_t n_out, const char *name) {
    return (pg_tensor){.data = data, .dtype = PAGODA_DTYPE_F32, .n_in = n_in, .n_out = n_out, .name = name};
}

/* Runs the step on be; results into o. */
static int run_step(pg_backend *be, outputs *o) {
    const pg_backend_ops *p = be->ops;
    pg_bweight embd, wqkv, wq, norm, qnorm, inv;
    pg_tensor te = f32(g_embd, E, V, "embd"), tw = f32(g_wqkv, E, D, "wqkv"), tq = f32(g_wq, E, QD, "wq");
    pg_tensor tn = f32(g_norm, E, 1, "norm"), tqn = f32(g_qnorm, HD, 1, "q_norm"), ti = f32(g_inv, HD / 2, 1, "inv");
    if (p->upload(be, &te, false, &embd) || p->upload(be, &tw, true, &wqkv) || p->upload(be, &tq, true, &wq) ||
        p->upload(be, &tn, false, &norm) || p->upload(be, &tqn, false, &qnorm) || p->upload(be, &ti, false, &inv)) {
        fprintf(stderr, "%s upload: %s\n", p->name, pagoda_last_error());
        return 1;
    }
    float *x = p->alloc(be, sizeof o->x), *xn = p->alloc(be, sizeof o->xn), *qkv = p->alloc(be, sizeof o->qkv);
    float *att = p->alloc(be, sizeof o->att), *q2 = p->alloc(be, sizeof o->q2), *gu = p->alloc(be, sizeof g_gu);
    float *gate = p->alloc(be, sizeof o->gate), *sw = p->alloc(be, sizeof o->sw), *xo = p->alloc(be, sizeof o->xo);
    size_t kv_bytes = (size_t)NB * BS * KVD * sizeof(float);
    void *kk = NULL, *vv = NULL;
    if (!x || !xn || !qkv || !att || !q2 || !gu || !gate || !sw || !xo || p->kv_alloc(be, kv_bytes, &kk) ||
        p->kv_alloc(be, kv_bytes, &vv))
        return fprintf(stderr, "%s alloc\n", p->name), 1;
    const int32_t *tables[2] = {g_tab0, g_tab1};
    pg_batch b = {.n_tok = T, .tokens = g_tokens, .n_seq = 2, .seq_start = g_start, .seq_pos0 = g_pos0,
                  .block_tables = tables, .n_blocks = g_nb};
    pg_step_plan plan;
    if (p->begin_step(be, &b, BS, g_rows, 2, false, &plan) || plan.n_tok != T || plan.replayed)
        return fprintf(stderr, "%s begin_step: %s\n", p->name, pagoda_last_error()), 1;
    pg_kv_layer kl = {.k = kk, .v = vv, .block_size = BS, .n_head_kv = NKV, .head_dim = HD, .dtype = PAGODA_DTYPE_F32};
    p->get_rows(be, &embd, PG_IDS_TOKENS, T, x, false);
    p->get_rows(be, &embd, PG_IDS_POSITIONS, T, x, true); /* the table doubles as a position table */
    p->add_norm(be, x, NULL, NULL, xn, &norm, NULL, E, T, 1e-5f, false, false);
    p->matmul(be, &wqkv, xn, T, qkv, D, false);
    p->matmul(be, &wq, xn, T, q2, D, false); /* stride D, width QD */
    p->head_norm(be, qkv, T, NH, HD, D, &qnorm, 1e-5f);
    p->rope(be, qkv, T, D, NH + NKV, HD, HD, &inv, false);
    p->kv_store(be, &kl, qkv + QD, qkv + QD + KVD, D, T);
    p->attention(be, &kl, att, qkv, D, T, NH, 0.25f, 0);
    if (p->write(be, gu, g_gu, sizeof g_gu)) return 1;
    p->swiglu_rows(be, sw, gu, T, FF, false);
    p->write(be, gate, g_gu, sizeof o->gate); /* the first T*FF floats, contiguous */
    p->silu_mul(be, gate, gu + T * FF, (int64_t)T * FF);
    p->gather_out_rows(be, xn, E, 2, xo);
    bool again = false;
    if (p->end_step(be, &again) || again) return fprintf(stderr, "%s end_step: %s\n", p->name, pagoda_last_error()), 1;
    if (p->read(be, o->x, x, sizeof o->x) || p->read(be, o->xn, xn, sizeof o->xn) || p->read(be, o->qkv, qkv, sizeof o->qkv) ||
        p->read(be, o->att, att, sizeof o->att) || p->read(be, o->q2, q2, sizeof o->q2) ||
        p->read(be, o->gate, gate, sizeof o->gate) || p->read(be, o->sw, sw, sizeof o->sw) ||
        p->read(be, o->xo, xo, sizeof o->xo) || p->sync(be))
        return fprintf(stderr, "%s read: %s\n", p->name, pagoda_last_error()), 1;
    p->kv_free(be, kk), p->kv_free(be, vv);
    return 0;
}

static double maxdiff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d;
    }
    return m;
}

/* The step again with the reference kernels, positions and slots worked out by hand. */
static void reference(outputs *r) {
    static float kc[NB * BS][KVD], vc[NB * BS][KVD];
    int32_t pos[T], seq[T];
    for (int s = 0; s < 2; s++)
        for (int t = g_start[s]; t < g_start[s + 1]; t++) pos[t] = g_pos0[s] + t - g_start[s], seq[t] = s;
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < E; i++) r->x[t][i] = g_embd[g_tokens[t]][i] + g_embd[pos[t]][i];
        kref_rmsnorm(r->xn[t], r->x[t], g_norm, E, 1e-5f);
    }
    float work[4096];
    kref_matmul(PAGODA_DTYPE_F32, g_wqkv, E, D, &r->xn[0][0], T, &r->qkv[0][0], work);
    float q2[T][QD];
    kref_matmul(PAGODA_DTYPE_F32, g_wq, E, QD, &r->xn[0][0], T, &q2[0][0], work);
    for (int t = 0; t < T; t++) {
        memcpy(r->q2[t], q2[t], sizeof q2[t]);
        for (int h = 0; h < NH; h++) kref_rmsnorm(r->qkv[t] + h * HD, r->qkv[t] + h * HD, g_qnorm, HD, 1e-5f);
        kref_rope(r->qkv[t], NH + NKV, HD, HD, pos[t], g_inv, false);
        const int32_t *tab = seq[t] ? g_tab1 : g_tab0;
        int slot = tab[pos[t] / BS] * BS + pos[t] % BS;
        memcpy(kc[slot], r->qkv[t] + QD, sizeof kc[slot]);
        memcpy(vc[slot], r->qkv[t] + QD + KVD, sizeof vc[slot]);
    }
    for (int s = 0; s < 2; s++) {
        int t0 = g_start[s], n = g_start[s + 1] - t0;
        float q[T][QD];
        for (int i = 0; i < n; i++) memcpy(q[i], r->qkv[t0 + i], sizeof q[i]);
        k_kv_view kv = {.k = kc, .v = vc, .block_table = s ? g_tab1 : g_tab0, .block_size = BS, .n_head_kv = NKV,
                        .head_dim = HD};
        kref_attention(&r->att[t0][0], &q[0][0], n, g_pos0[s], NH, 0.25f, 0, &kv);
    }
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < FF; i++) r->sw[t][i] = g_gu[t][i];
        kref_silu_mul(r->sw[t], g_gu[t] + FF, FF);
    }
    memcpy(r->gate, g_gu, sizeof r->gate);
    kref_silu_mul(&r->gate[0][0], &g_gu[0][0] + T * FF, (int64_t)T * FF);
    for (int i = 0; i < 2; i++) memcpy(r->xo[i], r->xn[g_rows[i]], sizeof r->xo[i]);
}

static int compare(const char *what, const outputs *a, const outputs *b, double tol) {
    struct { const char *name; const float *x, *y; size_t n; } f[] = {
        {"embedding rows", &a->x[0][0], &b->x[0][0], T * E},   {"add+norm", &a->xn[0][0], &b->xn[0][0], T * E},
        {"q/k norm, rope", &a->qkv[0][0], &b->qkv[0][0], T * D}, {"attention", &a->att[0][0], &b->att[0][0], T * QD},
        {"silu_mul", &a->gate[0][0], &b->gate[0][0], T * FF},  {"swiglu rows", &a->sw[0][0], &b->sw[0][0], T * FF},
        {"logits rows", &a->xo[0][0], &b->xo[0][0], 2 * E},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        double d = maxdiff(f[i].x, f[i].y, f[i].n);
        CHECK(d <= tol, "%s: %s differs by %g (tol %g)", what, f[i].name, d, tol);
        bad += !(d <= tol);
    }
    /* the strided product: its QD columns of each row */
    double d = 0;
    for (int t = 0; t < T; t++) {
        double e = maxdiff(a->q2[t], b->q2[t], QD);
        if (e > d) d = e;
    }
    CHECK(d <= tol, "%s: strided product differs by %g", what, d);
    printf("%s: %d of 8 op groups within %g\n", what, 8 - bad - !(d <= tol), tol);
    return bad;
}

static void check_shards(void) {
    pg_backend *be = NULL;
    pg_cpu_config cc = {.n_threads = 1, .max_tokens = T, .max_strided_cols = D};
    CHECK(be_cpu_create(&cc, &be) == PAGODA_OK, "cpu backend");
    pg_tensor w = f32(g_wqkv, E, D, "wqkv"), part;
    float whole[T][D], sh[T][D / 4];
    pg_bweight bw, bs;
    CHECK(be->ops->upload(be, &w, true, &bw) == PAGODA_OK, "upload");
    pg_batch b = {.n_tok = T, .tokens = g_tokens, .n_seq = 1, .seq_start = (int32_t[]){0, T}, .seq_pos0 = g_pos0,
                  .block_tables = (const int32_t *const[]){g_tab0}, .n_blocks = g_nb};
    pg_step_plan plan;
    bool again;
    be->ops->begin_step(be, &b, BS, g_rows, 0, false, &plan);
    be->ops->matmul(be, &bw, &g_embd[0][0], T, &whole[0][0], D, false);
    for (int k = 0; k < 4; k++) {
        CHECK(be_shard_view(&w, &(pg_shard){PG_SHARD_ROWS, k, 4}, &part) == PAGODA_OK, "row shard %d", k);
        CHECK(part.n_out == D / 4, "shard rows %lld", (long long)part.n_out);
        CHECK(be->ops->upload(be, &part, true, &bs) == PAGODA_OK, "upload shard");
        be->ops->matmul(be, &bs, &g_embd[0][0], T, &sh[0][0], D / 4, false);
        int same = 1;
        for (int t = 0; t < T; t++) same &= !memcmp(sh[t], &whole[t][k * (D / 4)], sizeof sh[t]);
        CHECK(same, "row shard %d: products differ from the matching rows of the whole", k);
    }
    be->ops->end_step(be, &again);
    CHECK(be_shard_view(&w, &(pg_shard){PG_SHARD_ROWS, 0, 5}, &part) == PAGODA_ERR_INVALID, "uneven split accepted");
    CHECK(strstr(pagoda_last_error(), "equal shards") != NULL, "message: %s", pagoda_last_error());
    CHECK(be_shard_view(&w, &(pg_shard){PG_SHARD_COLS, 0, 2}, &part) == PAGODA_ERR_UNSUPPORTED, "column shard accepted");
    CHECK(be_shard_view(&w, &(pg_shard){PG_SHARD_ROWS, 4, 4}, &part) == PAGODA_ERR_INVALID, "shard index out of range");
    be_destroy(be);
}

static pagoda_status count_reduce(void *user, float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] *= 2; /* a group of two identical ranks */
    ++*(int *)user;
    return PAGODA_OK;
}

static void check_col_shards(void) {
    int calls = 0;
    pg_backend *be = NULL;
    pg_cpu_config cc = {.n_threads = 1, .max_tokens = T, .max_strided_cols = D, .all_reduce = count_reduce,
                        .all_reduce_user = &calls};
    CHECK(be_cpu_create(&cc, &be) == PAGODA_OK, "cpu backend");
    pg_tensor w = f32(g_wqkv, E, D, "wqkv"), part;
    static float whole[T][D], sum[T][D], sh[T][D], xk[T][E / 2], copy[D * E / 2];
    pg_bweight bw, bs;
    CHECK(be->ops->upload(be, &w, true, &bw) == PAGODA_OK, "upload");
    pg_batch b = {.n_tok = T, .tokens = g_tokens, .n_seq = 1, .seq_start = (int32_t[]){0, T}, .seq_pos0 = g_pos0,
                  .block_tables = (const int32_t *const[]){g_tab0}, .n_blocks = g_nb};
    pg_step_plan plan;
    bool again;
    be->ops->begin_step(be, &b, BS, g_rows, 0, false, &plan);
    be->ops->matmul(be, &bw, &g_embd[0][0], T, &whole[0][0], D, false);
    memset(sum, 0, sizeof sum);
    for (int k = 0; k < 2; k++) { /* W[:, half k] · x[half k], summed: W · x */
        size_t bytes = 0;
        pg_shard s = {PG_SHARD_COLS, k, 2};
        CHECK(be_shard_bytes(&w, &s, &bytes) == PAGODA_OK && bytes == sizeof copy, "column shard bytes %zu", bytes);
        CHECK(be_shard_copy(&w, &s, copy, &part) == PAGODA_OK && part.n_in == E / 2 && part.n_out == D, "column shard");
        CHECK(be->ops->upload(be, &part, true, &bs) == PAGODA_OK, "upload column shard");
        for (int t = 0; t < T; t++) memcpy(xk[t], &g_embd[t][k * (E / 2)], sizeof xk[t]);
        be->ops->matmul(be, &bs, &xk[0][0], T, &sh[0][0], D, false);
        for (int t = 0; t < T; t++)
            for (int o = 0; o < D; o++) sum[t][o] += sh[t][o];
    }
    float d = 0;
    for (int t = 0; t < T; t++)
        for (int o = 0; o < D; o++) d = fmaxf(d, fabsf(sum[t][o] - whole[t][o]));
    CHECK(d <= 1e-5f, "column shards: products sum to the whole within %g", d);
    CHECK(be->ops->all_reduce(be, &sum[0][0], 3) == PAGODA_OK && calls == 1, "all_reduce hook called");
    be->ops->end_step(be, &again);
    be_destroy(be);
    /* Q8_0 (32-element blocks of 34 bytes): halves of 64 columns are one block per row; quarters are not */
    static unsigned char q[4][2 * 34], qc[4][34];
    for (int r = 0; r < 4; r++)
        for (int i = 0; i < 68; i++) q[r][i] = (unsigned char)(r * 68 + i);
    pg_tensor qt = {.data = q, .dtype = PAGODA_DTYPE_Q8_0, .n_in = 64, .n_out = 4, .name = "wo"};
    CHECK(be_shard_copy(&qt, &(pg_shard){PG_SHARD_COLS, 1, 2}, qc, &part) == PAGODA_OK && part.n_in == 32, "q8_0 columns");
    int same = 1;
    for (int r = 0; r < 4; r++) same &= !memcmp(qc[r], q[r] + 34, 34);
    CHECK(same, "q8_0 column shard: the second block of each row");
    size_t bytes = 0;
    CHECK(be_shard_bytes(&qt, &(pg_shard){PG_SHARD_COLS, 0, 4}, &bytes) == PAGODA_ERR_INVALID, "partial blocks accepted");
    CHECK(strstr(pagoda_last_error(), "whole number of q8_0 blocks") != NULL, "message: %s", pagoda_last_error());
}

/* NCCL (GPU tensor parallelism): the library loads at run time; a group's id needs no GPU. Where
 * a GPU answers, a group of one device sums in place to the same values, and the backend's step
 * with its sums through NCCL gives what the backend gives alone. */
static void check_nccl(const outputs *alone) {
    char why[192] = "";
    int v = be_cuda_nccl_version(why, sizeof why);
    uint8_t a[PG_NCCL_ID_BYTES] = {0}, b[PG_NCCL_ID_BYTES] = {0}, zero[PG_NCCL_ID_BYTES] = {0};
    if (!v) {
        CHECK(why[0] != 0, "no reason given for NCCL missing");
        CHECK(be_cuda_nccl_id(a) == PAGODA_ERR_UNSUPPORTED, "an NCCL id without NCCL");
        printf("nccl: not available (%s)\n", why);
        return;
    }
    printf("nccl: %d loaded\n", v);
    CHECK(v >= 21300, "NCCL version %d", v);
    CHECK(be_cuda_nccl_id(a) == PAGODA_OK && be_cuda_nccl_id(b) == PAGODA_OK, "NCCL ids: %s", pagoda_last_error());
    CHECK(memcmp(a, zero, sizeof a) && memcmp(a, b, sizeof a), "two NCCL ids are distinct and not empty");
    if (be_cuda_device_count() < 1) {
        printf("nccl group of one: not run (no CUDA device)\n");
        return;
    }
    pg_cuda_config gc;
    be_cuda_config_default(&gc);
    gc.max_tokens = T, gc.max_ctx = NB * BS, gc.n_embd = E, gc.n_head = NH, gc.head_dim = HD;
    gc.nccl_rank = 0, gc.nccl_size = 1;
    memcpy(gc.nccl_id, a, sizeof a);
    pg_backend *g = NULL;
    if (be_cuda_create(&gc, &g) != PAGODA_OK) {
        CHECK(0, "cuda backend in an NCCL group of one: %s", pagoda_last_error());
        return;
    }
    static outputs via;
    CHECK(run_step(g, &via) == 0, "cuda step in an NCCL group of one");
    compare("cuda backend in an NCCL group of one vs alone", &via, alone, 0);
    enum { N = 1000 };
    static float h[N], back[N];
    for (int i = 0; i < N; i++) h[i] = (float)i * 0.25f - 7.0f;
    float *d = g->ops->alloc(g, sizeof h);
    CHECK(d != NULL, "device buffer");
    if (d) {
        CHECK(g->ops->write(g, d, h, sizeof h) == PAGODA_OK, "write");
        CHECK(g->ops->all_reduce(g, d, N) == PAGODA_OK, "all_reduce: %s", pagoda_last_error());
        CHECK(g->ops->read(g, back, d, sizeof back) == PAGODA_OK && g->ops->sync(g) == PAGODA_OK, "read");
        CHECK(!memcmp(h, back, sizeof h), "a group of one sums to its own values");
    }
    be_destroy(g);
}

int main(void) {
    unsigned long long s = 99;
    fill(&g_embd[0][0], V * E, &s), fill(&g_wqkv[0][0], D * E, &s), fill(&g_wq[0][0], QD * E, &s);
    fill(g_norm, E, &s), fill(g_qnorm, HD, &s), fill(&g_gu[0][0], T * 2 * FF, &s);
    for (int i = 0; i < HD / 2; i++) g_inv[i] = powf(10000.0f, -2.0f * (float)i / HD);

    static outputs ref, cpu, dev;
    reference(&ref);
    pg_backend *be = NULL;
    pg_cpu_config cc = {.n_threads = 2, .max_tokens = T, .max_strided_cols = D};
    CHECK(be_cpu_create(&cc, &be) == PAGODA_OK, "cpu backend: %s", pagoda_last_error());
    CHECK(run_step(be, &cpu) == 0, "cpu step");
    compare("cpu backend vs reference kernels", &cpu, &ref, 2e-5);
    be_destroy(be);
    check_shards();
    check_col_shards();

    pg_cuda_config gc;
    be_cuda_config_default(&gc);
    gc.max_tokens = T, gc.max_ctx = NB * BS, gc.n_embd = E, gc.n_head = NH, gc.head_dim = HD;
    pg_backend *g = NULL;
    if (be_cuda_create(&gc, &g) == PAGODA_OK) {
        CHECK(run_step(g, &dev) == 0, "cuda step");
        compare("cuda backend vs cpu backend", &dev, &cpu, 1e-4);
        be_destroy(g);
        check_nccl(&dev);
    } else {
        printf("cuda backend: not run (%s)\n", pagoda_last_error());
        check_nccl(NULL);
    }
    TEST_DONE();
}
