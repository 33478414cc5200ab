/* The forward pass on the GPU (see forward_cuda.h). Same math and order as forward.c:
 *   x = embed(tokens) (+ learned positions)
 *   per layer: xn = norm1(x); qkv = W·xn; rope; K/V -> paged cache; att = attention(q, cache)
 *              x += Wo·att (fused with norm2); h = ffn(xn); x += Wd·h (fused with the next norm)
 *   logits = Wout · norm(x) for the rows that want them.
 * The batch's metadata (tokens, positions, KV slots, block tables) goes up in one pinned buffer;
 * every kernel reads shapes that vary per step from device memory, so decode steps are replayed
 * from CUDA graphs captured per (padded batch size, context bucket). */
#include "model/forward_cuda.h"
#include "model/gpu_batch.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/log.h"

#ifdef PAGODA_CUDA

#include "kernels/cuda/pcu.h"
#include "kernels/cuda/pcu_kernels.h"

typedef struct {
    const void *d; /* NULL: absent */
    int dtype;
    int64_t n_in, n_out;
    const void *f16; /* quantized matrices: a dequantized half copy for batches over 8 tokens
                        (PAGODA_CUDA_QGEMM=shadow), else NULL */
    const void *rep; /* Q4_0/Q8_0 matrices: the repacked copy the decode matvec reads (16-byte
                        aligned rows, scales apart); d is then freed when the half copy covers
                        the bigger batches. NULL: the matvec reads d */
} dev_weight;

typedef struct {
    dev_weight attn_norm, attn_norm_b, wq, wk, wv, wqkv, bq, bk, bv, bqkv, q_norm, k_norm, wo, bo;
    dev_weight ffn_norm, ffn_norm_b, w_gate, w_up, w_down, b_gate, b_up, b_down;
    dev_weight w_gate_up; /* gate rows then up rows (SwiGLU models without biases), else absent */
} dev_layer;


#define MAX_GRAPHS 64

enum { QUANT_MATVEC_MAX_TOKENS = 3 }; /* quantized weights with a half copy: cuBLAS from 4 tokens */

typedef struct {
    int32_t n_tok, ctx;
    int seen;        /* eager runs so far; captured on the second */
    pcu_graph *graph;
} graph_slot;

struct fwd_cuda {
    const pg_model *m;
    int32_t max_tokens, n_gpu, max_ctx;
    bool full; /* every layer and the head on the GPU */
    pcu_stream *s;
    dev_weight tok_embd, pos_embd, out_norm, out_norm_b, output;
    dev_layer *layers; /* [n_gpu] */
    float *d_inv_freq; /* [rope_dim/2] */
    void **allocs;     /* owned device buffers */
    const void **alloc_src; /* host pointer each buffer was uploaded from (ties share one) */
    int n_allocs, cap_allocs;
    uint64_t weight_bytes, upload_total, upload_done, next_report;
    /* scratch, [max_tokens][...] floats unless noted */
    float *x, *xn, *qkv, *att, *tmp, *up, *gate, *up2, *xo, *logits; /* up2: [max_tokens][2 n_ff] */
    void *xh;          /* activations as halves: [max_tokens][max n_in] */
    void *wtmp;        /* one dequantized weight matrix as halves (no-tensor-core fallback) */
    void *attn_scratch;
    int32_t *d_meta, *h_meta; /* [GPU_META_N * max_tokens] on the device / pinned host */
    int32_t *d_ids;           /* [max_tokens] greedy tokens of the logits rows */
    int32_t *d_btab, *h_btab; /* [max_tokens][btab_stride] block tables */
    int32_t btab_stride, block_size;
    bool use_graphs;
    enum { QGEMM_SHADOW, QGEMM_DEQUANT, QGEMM_MMA } qgemm; /* quantized weights x > 8 tokens */
    uint64_t shadow_bytes;
    graph_slot graphs[MAX_GRAPHS];
    int n_graphs;
    pagoda_status err; /* first launch error of a step */
};

static pagoda_status track(fwd_cuda *g, void *p, const void *src) {
    if (g->n_allocs == g->cap_allocs) {
        int cap = g->cap_allocs ? 2 * g->cap_allocs : 64;
        void **a = realloc(g->allocs, sizeof(void *) * (size_t)cap);
        if (!a) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
        g->allocs = a;
        const void **b = realloc(g->alloc_src, sizeof(void *) * (size_t)cap);
        if (!b) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
        g->alloc_src = b, g->cap_allocs = cap;
    }
    g->allocs[g->n_allocs] = p, g->alloc_src[g->n_allocs] = src, g->n_allocs++;
    return PAGODA_OK;
}

static pagoda_status dev_alloc(fwd_cuda *g, void **p, size_t bytes) {
    pagoda_status st = pcu_malloc(p, bytes);
    if (st) return st;
    return track(g, *p, NULL);
}

static size_t weight_bytes(const pg_weight *w) {
    size_t rs = 0;
    dtype_row_size(w->dtype, w->n_in, &rs); /* validated at load */
    return rs * (size_t)(w->n_out > 0 ? w->n_out : 1);
}

/* Copies one weight to the device (once per host buffer: tied embeddings share it). */
static pagoda_status upload(fwd_cuda *g, const pg_weight *w, dev_weight *d) {
    memset(d, 0, sizeof *d);
    if (!w->data) return PAGODA_OK;
    if (!pcu_weight_supported(w->dtype))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "CUDA: weight %s has type %s, which the GPU kernels do not take",
                       w->name ? w->name : "?", dtype_name(w->dtype));
    d->dtype = w->dtype, d->n_in = w->n_in, d->n_out = w->n_out;
    for (int i = 0; i < g->n_allocs; i++)
        if (g->alloc_src[i] == w->data) return d->d = g->allocs[i], PAGODA_OK;
    size_t bytes = weight_bytes(w);
    void *p = NULL;
    pagoda_status st = pcu_malloc(&p, bytes);
    if (st) return pg_error_prefix("uploading %s: ", w->name ? w->name : "weights"), st;
    if ((st = track(g, p, w->data))) return pcu_free(p), st;
    if ((st = pcu_h2d(p, w->data, bytes, NULL))) return st;
    d->d = p;
    g->weight_bytes += bytes;
    g->upload_done += bytes;
    if (g->upload_done >= g->next_report) {
        pg_log(PAGODA_LOG_INFO, "cuda: weights %.0f%% (%.1f of %.1f GiB)", 100.0 * (double)g->upload_done / (double)g->upload_total,
               (double)g->upload_done / 1073741824.0, (double)g->upload_total / 1073741824.0);
        g->next_report += g->upload_total / 10 + 1;
    }
    return PAGODA_OK;
}

/* Matrices that read the same input stacked into one (rows of the first, then the next, ...), so a
 * step reads x once and launches one product: Q|K|V (their outputs are adjacent in the qkv buffer)
 * and gate|up (SwiGLU then reads both halves of one row). */
static pagoda_status upload_stacked(fwd_cuda *g, const pg_weight *const *p, int n, dev_weight *out) {
    size_t bytes[4], total = 0;
    int64_t rows = 0;
    for (int i = 0; i < n; i++) {
        if (!p[i]->data || p[i]->dtype != p[0]->dtype || p[i]->n_in != p[0]->n_in) return PAGODA_ERR_UNSUPPORTED;
        bytes[i] = weight_bytes(p[i]), total += bytes[i], rows += p[i]->n_out;
    }
    if (!pcu_weight_supported(p[0]->dtype)) return PAGODA_ERR_UNSUPPORTED;
    void *buf = NULL;
    pagoda_status st = pcu_malloc(&buf, total);
    if (st) return st;
    if ((st = track(g, buf, NULL))) return pcu_free(buf), st;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        if ((st = pcu_h2d((char *)buf + off, p[i]->data, bytes[i], NULL))) return st;
        off += bytes[i];
    }
    *out = (dev_weight){.d = buf, .dtype = p[0]->dtype, .n_in = p[0]->n_in, .n_out = rows};
    g->weight_bytes += total, g->upload_done += total;
    return PAGODA_OK;
}

/* A half copy of a quantized matrix (shadow mode); on allocation failure the matrix goes on
 * without one (dequantized per product instead). */
static void make_shadow(fwd_cuda *g, dev_weight *w) {
    if (!w->d || w->f16 || w->dtype == PAGODA_DTYPE_F32 || w->dtype == PAGODA_DTYPE_F16 || w->dtype == PAGODA_DTYPE_BF16)
        return;
    size_t bytes = (size_t)w->n_in * (size_t)w->n_out * 2;
    void *p = NULL;
    if (pcu_malloc(&p, bytes) || track(g, p, NULL)) {
        pcu_free(p);
        pg_log(PAGODA_LOG_WARN, "cuda: no memory for a half copy of a %lldx%lld matrix; dequantizing it per product",
               (long long)w->n_out, (long long)w->n_in);
        return;
    }
    pcu_dequant_f16(g->s, w->dtype, w->d, w->n_in, w->n_out, p);
    w->f16 = p;
    g->shadow_bytes += bytes;
}

/* Repacks a Q4_0/Q8_0 matrix for the decode matvec; with a half copy for bigger batches the GGUF
 * copy is no longer needed and is freed (unless shared, e.g. with the token embedding). */
static void make_repack(fwd_cuda *g, dev_weight *w) {
    if (!w->d || w->rep || !pcu_repack_supported(w->dtype)) return;
    void *p = NULL;
    if (pcu_malloc(&p, pcu_repack_bytes(w->dtype, w->n_in, w->n_out)) || track(g, p, NULL)) {
        pcu_free(p);
        return; /* the matvec reads the GGUF copy */
    }
    pcu_repack(g->s, w->dtype, w->d, w->n_in, w->n_out, p);
    w->rep = p;
    if (!w->f16 || w->d == g->tok_embd.d) return;
    for (int i = 0; i < g->n_allocs; i++)
        if (g->allocs[i] == w->d) { /* only the token embedding shares a buffer (tied output), excluded above */
            pcu_sync(g->s);
            pcu_free(g->allocs[i]);
            g->allocs[i] = NULL, g->alloc_src[i] = NULL;
            w->d = NULL;
            return;
        }
}

static void prepare_matrix(fwd_cuda *g, dev_weight *w, bool repack) {
    if (g->qgemm == QGEMM_SHADOW) make_shadow(g, w);
    if (repack) make_repack(g, w);
}

typedef struct {
    uint64_t total;
    size_t max_deq;  /* elements of the largest quantized matrix */
    int64_t max_in;  /* widest matrix input */
} weight_scan;

static void scan_weight(const pg_weight *w, void *user) {
    weight_scan *ws = user;
    if (!w->data) return;
    ws->total += weight_bytes(w);
    if (w->n_out > 1) {
        if (w->n_in > ws->max_in) ws->max_in = w->n_in;
        bool plain = w->dtype == PAGODA_DTYPE_F32 || w->dtype == PAGODA_DTYPE_F16 || w->dtype == PAGODA_DTYPE_BF16;
        size_t n = (size_t)w->n_in * (size_t)w->n_out;
        if (!plain && n > ws->max_deq) ws->max_deq = n;
    }
}

void fwd_cuda_destroy(fwd_cuda *g) {
    if (!g) return;
    if (g->s) pcu_sync(g->s);
    for (int i = 0; i < g->n_graphs; i++) pcu_graph_destroy(g->graphs[i].graph);
    for (int i = 0; i < g->n_allocs; i++) pcu_free(g->allocs[i]);
    pcu_host_free(g->h_meta);
    pcu_host_free(g->h_btab);
    pcu_stream_destroy(g->s);
    free(g->allocs);
    free(g->alloc_src);
    free(g->layers);
    free(g);
}

struct pcu_stream *fwd_cuda_stream(fwd_cuda *g) { return g->s; }

void *fwd_cuda_host_alloc(size_t bytes) {
    void *p = NULL;
    return pcu_host_alloc(&p, bytes) ? NULL : p;
}
void fwd_cuda_host_free(void *p) { pcu_host_free(p); }

uint64_t fwd_cuda_kv_budget(const fwd_cuda *g, float utilization) {
    (void)g;
    pcu_device_info info;
    if (pcu_get_device_info(&info)) return 0;
    double reserve = (1.0 - (double)utilization) * (double)info.mem_total;
    /* leave room for block tables and graph memory allocated on first use */
    double left = (double)info.mem_free - reserve - 256.0 * 1048576.0;
    return left > 0 ? (uint64_t)left : 0;
}

static bool env_is(const char *name, const char *value) {
    const char *v = getenv(name);
    return v && strcmp(v, value) == 0;
}

pagoda_status fwd_cuda_create(const pg_model *m, int32_t max_tokens, int32_t n_gpu_layers, fwd_cuda **out) {
    *out = NULL;
    const pg_model_config *c = &m->cfg;
    char why[256];
    if (!pcu_available(why, sizeof why)) return pg_fail(PAGODA_ERR_CUDA, "no usable CUDA device: %s", why);
    if (n_gpu_layers <= 0 || n_gpu_layers > c->n_layer)
        return pg_fail(PAGODA_ERR_INVALID, "CUDA: %d GPU layers of %d", n_gpu_layers, c->n_layer);
    if (c->head_dim > 256 || c->head_dim % 2)
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "CUDA: head_dim %d (the GPU attention takes even sizes up to 256)", c->head_dim);
    fwd_cuda *g = calloc(1, sizeof *g);
    if (!g) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    g->m = m;
    g->max_tokens = max_tokens;
    g->n_gpu = n_gpu_layers;
    g->full = n_gpu_layers == c->n_layer;
    g->max_ctx = c->n_ctx_train > 0 ? c->n_ctx_train : 4096;
    g->use_graphs = !env_is("PAGODA_CUDA_GRAPHS", "0");
    /* Batches over 8 tokens with quantized weights: cuBLAS on a half copy of each matrix kept
     * beside it (fastest; costs 2 bytes per weight of GPU memory), cuBLAS after dequantizing the
     * matrix each time, or the tensor-core kernel that dequantizes tiles in shared memory. */
    g->qgemm = env_is("PAGODA_CUDA_QGEMM", "dequant") ? QGEMM_DEQUANT : env_is("PAGODA_CUDA_QGEMM", "mma") ? QGEMM_MMA
                                                                                                     : QGEMM_SHADOW;
    pagoda_status st;
    if ((st = pcu_stream_create(&g->s))) goto fail;
    if (!(g->layers = calloc((size_t)n_gpu_layers, sizeof *g->layers))) {
        st = pg_fail(PAGODA_ERR_NOMEM, "out of memory");
        goto fail;
    }

    weight_scan ws = {0};
    model_for_each_weight(m, scan_weight, &ws);
    g->upload_total = ws.total, g->next_report = ws.total / 10;
    if ((st = upload(g, &m->tok_embd, &g->tok_embd)) || (st = upload(g, &m->pos_embd, &g->pos_embd))) goto fail;
    for (int l = 0; l < n_gpu_layers; l++) {
        const pg_layer_weights *w = &m->layers[l];
        dev_layer *d = &g->layers[l];
#define UP(f) if ((st = upload(g, &w->f, &d->f))) goto fail
        const pg_weight *qkv[3] = {&w->wq, &w->wk, &w->wv}, *gu[2] = {&w->w_gate, &w->w_up};
        if (w->wqkv.data || upload_stacked(g, qkv, 3, &d->wqkv) != PAGODA_OK) { /* else: stacked, wq/wk/wv absent */
            UP(wq); UP(wk); UP(wv); UP(wqkv);
        }
        if (w->b_gate.data || w->b_up.data || upload_stacked(g, gu, 2, &d->w_gate_up) != PAGODA_OK) {
            UP(w_gate); UP(w_up);
        }
        UP(attn_norm); UP(attn_norm_b); UP(bq); UP(bk); UP(bv); UP(bqkv);
        UP(q_norm); UP(k_norm); UP(wo); UP(bo); UP(ffn_norm); UP(ffn_norm_b);
        UP(w_down); UP(b_gate); UP(b_up); UP(b_down);
#undef UP
    }
    if (g->full && ((st = upload(g, &m->out_norm, &g->out_norm)) || (st = upload(g, &m->out_norm_b, &g->out_norm_b)) ||
                    (st = upload(g, &m->output, &g->output))))
        goto fail;

    /* room to dequantize one matrix (every mode may need it: a half copy can fail to fit) */
    size_t deq = ws.max_deq; /* stacked Q|K|V and gate|up are bigger than any file matrix */
    if (deq) {
        size_t qkv_n = (size_t)(c->n_head + 2 * c->n_head_kv) * (size_t)c->head_dim * (size_t)c->n_embd;
        size_t gu_n = 2 * (size_t)c->n_ff * (size_t)c->n_embd;
        deq = deq > qkv_n ? deq : qkv_n;
        deq = deq > gu_n ? deq : gu_n;
    }
    if (deq && (st = dev_alloc(g, &g->wtmp, deq * 2))) goto fail;
    /* each matrix: a half copy for bigger batches first (it reads the GGUF copy), then the
     * repacked copy for the decode matvec (which may free the GGUF copy) */
    bool repack = !env_is("PAGODA_CUDA_REPACK", "0");
    for (int l = 0; l < n_gpu_layers; l++) {
        dev_layer *d = &g->layers[l];
        dev_weight *mats[] = {&d->wq, &d->wk, &d->wv, &d->wqkv, &d->wo, &d->w_gate, &d->w_up, &d->w_gate_up, &d->w_down};
        for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++) prepare_matrix(g, mats[i], repack);
    }
    if (g->full) prepare_matrix(g, &g->output, repack);
    if (g->shadow_bytes)
        pg_log(PAGODA_LOG_INFO, "cuda: %.2f GiB of half copies of quantized matrices for batches over %d tokens",
               (double)g->shadow_bytes / 1073741824.0, QUANT_MATVEC_MAX_TOKENS);

    const int64_t T = max_tokens, E = c->n_embd, qd = (int64_t)c->n_head * c->head_dim;
    const int64_t kvd = (int64_t)c->n_head_kv * c->head_dim, nff = c->n_ff, V = c->n_vocab;
    const size_t F = sizeof(float);
    int64_t max_in = ws.max_in > E ? ws.max_in : E;
    if (c->rope != ROPE_NONE) {
        size_t n = (size_t)(c->rope_dim / 2) * F;
        if ((st = dev_alloc(g, (void **)&g->d_inv_freq, n)) || (st = pcu_h2d(g->d_inv_freq, m->rope_inv_freq, n, NULL)))
            goto fail;
    }
    if ((st = dev_alloc(g, (void **)&g->x, (size_t)(T * E) * F)) || (st = dev_alloc(g, (void **)&g->xn, (size_t)(T * E) * F)) ||
        (st = dev_alloc(g, (void **)&g->qkv, (size_t)(T * (qd + 2 * kvd)) * F)) ||
        (st = dev_alloc(g, (void **)&g->att, (size_t)(T * qd) * F)) || (st = dev_alloc(g, (void **)&g->tmp, (size_t)(T * E) * F)) ||
        (st = dev_alloc(g, (void **)&g->up, (size_t)(T * nff) * F)) || (st = dev_alloc(g, (void **)&g->gate, (size_t)(T * nff) * F)) ||
        (st = dev_alloc(g, (void **)&g->up2, (size_t)(c->gated_ffn ? T * 2 * nff : 1) * F)) ||
        (st = dev_alloc(g, &g->xh, (size_t)(T * max_in) * 2)) ||
        (st = dev_alloc(g, &g->attn_scratch, pcu_attention_scratch_bytes(max_tokens, c->n_head, c->head_dim, g->max_ctx))) ||
        (st = dev_alloc(g, (void **)&g->d_meta, (size_t)(GPU_META_N * T) * sizeof(int32_t))) ||
        (st = dev_alloc(g, (void **)&g->d_ids, (size_t)T * sizeof(int32_t))) ||
        (st = pcu_host_alloc((void **)&g->h_meta, (size_t)(GPU_META_N * T) * sizeof(int32_t))))
        goto fail;
    if (g->full && ((st = dev_alloc(g, (void **)&g->xo, (size_t)(T * E) * F)) ||
                    (st = dev_alloc(g, (void **)&g->logits, (size_t)(T * V) * F))))
        goto fail;
    if ((st = pcu_sync(g->s))) goto fail;
    pcu_device_info info;
    if (!pcu_get_device_info(&info))
        pg_log(PAGODA_LOG_INFO, "cuda: %s, %d of %d layers, weights %.2f GiB, %.1f GiB free after scratch for %d tokens",
               info.name, n_gpu_layers, c->n_layer, (double)g->weight_bytes / 1073741824.0,
               (double)info.mem_free / 1073741824.0, max_tokens);
    *out = g;
    return PAGODA_OK;
fail:
    fwd_cuda_destroy(g);
    return st;
}

/* ---- one step ------------------------------------------------------------------------------ */

static void keep_err(fwd_cuda *g, pagoda_status st) {
    if (st && !g->err) g->err = st;
}

/* Most tokens a product reads the weights once per token for (the matvec kernels); beyond, the
 * tensor-core path is faster (H100: Q4_0 matvec at 8 tokens ~400 GB/s of weights against ~700
 * equivalent for cuBLAS on the half copy; F16 matvec 1.3 TB/s at 8 tokens, cuBLAS ~2.5). */
static int32_t matvec_max_tokens(const dev_weight *w) {
    switch (w->dtype) {
    case PAGODA_DTYPE_F32: return PCU_MMV_MAX_TOK;
    case PAGODA_DTYPE_F16:
    case PAGODA_DTYPE_BF16: return 1;
    default: return w->f16 ? QUANT_MATVEC_MAX_TOKENS : PCU_MMV_MAX_TOK;
    }
}

/* true if a product of W with T tokens reads its activations as halves (F16 weights, or quantized
 * ones through a half copy or tensor cores), so the op producing them can write halves as well. */
static bool wants_half(const dev_weight *w, int32_t T) {
    return T > matvec_max_tokens(w) && w->dtype != PAGODA_DTYPE_F32 && w->dtype != PAGODA_DTYPE_BF16;
}

/* y[t][0..n_out) (row stride ldy) = W · x[t] for t < T; x rows contiguous (n_in floats).
 * xh_ready: x already as halves in g->xh (written by the producing op), or false. */
static void mm(fwd_cuda *g, const dev_weight *w, const float *x, int32_t T, float *y, int64_t ldy, bool xh_ready) {
    if (T <= matvec_max_tokens(w)) {
        if (w->rep) pcu_matvec_repacked(g->s, w->dtype, w->rep, w->n_in, w->n_out, x, T, y, ldy);
        else pcu_matvec(g->s, w->dtype, w->d, w->n_in, w->n_out, x, T, y, ldy);
        return;
    }
    switch (w->dtype) {
    case PAGODA_DTYPE_F32:
        keep_err(g, pcu_gemm(g->s, w->dtype, w->d, w->n_in, w->n_out, x, T, y, ldy));
        return;
    case PAGODA_DTYPE_F16:
        if (!xh_ready) pcu_f32_to_f16(g->s, x, g->xh, (int64_t)T * w->n_in);
        keep_err(g, pcu_gemm(g->s, w->dtype, w->d, w->n_in, w->n_out, g->xh, T, y, ldy));
        return;
    case PAGODA_DTYPE_BF16:
        pcu_f32_to_bf16(g->s, x, g->xh, (int64_t)T * w->n_in);
        keep_err(g, pcu_gemm(g->s, w->dtype, w->d, w->n_in, w->n_out, g->xh, T, y, ldy));
        return;
    default:
        if (!xh_ready) pcu_f32_to_f16(g->s, x, g->xh, (int64_t)T * w->n_in);
        if (w->f16) {
            keep_err(g, pcu_gemm(g->s, PAGODA_DTYPE_F16, w->f16, w->n_in, w->n_out, g->xh, T, y, ldy));
        } else if (g->qgemm == QGEMM_MMA && pcu_mma_supported(w->dtype)) {
            pcu_matmul_mma(g->s, w->dtype, w->d, w->n_in, w->n_out, g->xh, T, y, ldy);
        } else {
            pcu_dequant_f16(g->s, w->dtype, w->d, w->n_in, w->n_out, g->wtmp);
            keep_err(g, pcu_gemm(g->s, PAGODA_DTYPE_F16, g->wtmp, w->n_in, w->n_out, g->xh, T, y, ldy));
        }
    }
}

static void bias(fwd_cuda *g, float *y, const dev_weight *b, int32_t T, int64_t n, int64_t ld) {
    if (b->d) pcu_add_bias(g->s, y, b->d, T, n, ld);
}

/* All kernels of one step for T (possibly padded) tokens, n_out logits rows, contexts <= ctx. */
static void launch_step(fwd_cuda *g, kv_cache *kv, int32_t T, int32_t n_out, int32_t ctx) {
    const pg_model *m = g->m;
    const pg_model_config *c = &m->cfg;
    const int64_t E = c->n_embd, hd = c->head_dim, qd = (int64_t)c->n_head * hd, kvd = (int64_t)c->n_head_kv * hd;
    const int64_t D = qd + 2 * kvd, nff = c->n_ff;
    const int32_t *tok = g->d_meta + GPU_META_TOK * g->max_tokens, *pos = g->d_meta + GPU_META_POS * g->max_tokens;
    const int32_t *posc = g->d_meta + GPU_META_POSC * g->max_tokens, *seq = g->d_meta + GPU_META_SEQ * g->max_tokens;
    const int32_t *slot = g->d_meta + GPU_META_SLOT * g->max_tokens, *rows = g->d_meta + GPU_META_ROW * g->max_tokens;
    pcu_stream *s = g->s;

    pcu_get_rows(s, g->tok_embd.dtype, g->tok_embd.d, E, tok, T, g->x, false);
    if (c->learned_pos) pcu_get_rows(s, g->pos_embd.dtype, g->pos_embd.d, E, posc, T, g->x, true);

    const float *prev_b_down = NULL;
    for (int l = 0; l < g->n_gpu; l++) {
        const dev_layer *w = &g->layers[l];
        /* the norm also writes halves when the next product reads them (one pass instead of two) */
        const dev_weight *first = w->wqkv.n_out ? &w->wqkv : &w->wq;
        bool half = wants_half(first, T) && (w->wqkv.n_out || (wants_half(&w->wk, T) && wants_half(&w->wv, T)));
        pcu_add_norm(s, g->x, l ? g->tmp : NULL, prev_b_down, g->xn, w->attn_norm.d, w->attn_norm_b.d, E, T, c->norm_eps,
                     c->layernorm, half ? g->xh : NULL);
        if (w->wqkv.n_out) { /* fused in the file, or at upload (.d may be freed after repacking) */
            mm(g, &w->wqkv, g->xn, T, g->qkv, D, half);
        } else {
            mm(g, &w->wq, g->xn, T, g->qkv, D, half);
            mm(g, &w->wk, g->xn, T, g->qkv + qd, D, half);
            mm(g, &w->wv, g->xn, T, g->qkv + qd + kvd, D, half);
        }
        bias(g, g->qkv, &w->bqkv, T, D, D);
        bias(g, g->qkv, &w->bq, T, qd, D);
        bias(g, g->qkv + qd, &w->bk, T, kvd, D);
        bias(g, g->qkv + qd + kvd, &w->bv, T, kvd, D);
        if (c->qk_norm) {
            pcu_head_rmsnorm(s, g->qkv, T, c->n_head, (int)hd, D, w->q_norm.d, c->norm_eps);
            pcu_head_rmsnorm(s, g->qkv + qd, T, c->n_head_kv, (int)hd, D, w->k_norm.d, c->norm_eps);
        }
        if (c->rope != ROPE_NONE) /* K heads follow Q heads in each row: one launch rotates both */
            pcu_rope(s, g->qkv, T, D, c->n_head + c->n_head_kv, (int)hd, c->rope_dim, pos, g->d_inv_freq,
                     c->rope == ROPE_NEOX);
        char *kl = (char *)kv->dev_k + kv_slot_offset(kv, l, 0, 0) * kv->elem;
        char *vl = (char *)kv->dev_v + kv_slot_offset(kv, l, 0, 0) * kv->elem;
        bool f16 = kv->dtype == PAGODA_DTYPE_F16;
        pcu_kv_store(s, kl, vl, f16, g->qkv + qd, g->qkv + qd + kvd, D, T, (int)kvd, slot);
        pcu_attn_args a = {.d_k_cache = kl, .d_v_cache = vl, .f16 = f16, .block_size = kv->block_size,
                           .n_head = c->n_head, .n_head_kv = c->n_head_kv, .head_dim = (int)hd,
                           .scale = 1.0f / sqrtf((float)hd), .window = c->sliding_window,
                           .d_tok_pos = pos, .d_tok_seq = seq, .d_block_tables = g->d_btab, .max_blocks = g->btab_stride};
        pcu_attention(s, &a, g->att, g->qkv, D, T, ctx, g->attn_scratch);
        mm(g, &w->wo, g->att, T, g->tmp, E, false);
        const dev_weight *up = w->w_gate_up.n_out ? &w->w_gate_up : &w->w_up;
        half = wants_half(up, T) && (!c->gated_ffn || w->w_gate_up.n_out || wants_half(&w->w_gate, T));
        pcu_add_norm(s, g->x, g->tmp, w->bo.d, g->xn, w->ffn_norm.d, w->ffn_norm_b.d, E, T, c->norm_eps, c->layernorm,
                     half ? g->xh : NULL);
        float *h = g->up;
        bool h_half = false;
        if (w->w_gate_up.n_out) { /* one product for gate|up rows, then SwiGLU across the halves */
            mm(g, &w->w_gate_up, g->xn, T, g->up2, 2 * nff, half);
            h_half = wants_half(&w->w_down, T);
            pcu_swiglu_rows(s, g->gate, g->up2, T, nff, h_half ? g->xh : NULL);
            h = g->gate;
        } else if (c->gated_ffn) {
            mm(g, &w->w_up, g->xn, T, g->up, nff, half);
            bias(g, g->up, &w->b_up, T, nff, nff);
            mm(g, &w->w_gate, g->xn, T, g->gate, nff, half);
            bias(g, g->gate, &w->b_gate, T, nff, nff);
            pcu_silu_mul(s, g->gate, g->up, (int64_t)T * nff);
            h = g->gate;
        } else {
            mm(g, &w->w_up, g->xn, T, g->up, nff, half);
            bias(g, g->up, &w->b_up, T, nff, nff);
            pcu_gelu(s, g->up, (int64_t)T * nff);
        }
        mm(g, &w->w_down, h, T, g->tmp, E, h_half);
        prev_b_down = w->b_down.d;
    }
    if (g->full) {
        pcu_add_norm(s, g->x, g->tmp, prev_b_down, g->xn, g->out_norm.d, g->out_norm_b.d, E, T, c->norm_eps, c->layernorm,
                     NULL);
        pcu_get_rows(s, PAGODA_DTYPE_F32, g->xn, E, rows, n_out, g->xo, false);
        mm(g, &g->output, g->xo, n_out, g->logits, c->n_vocab, false);
    } else {
        /* the residual stream only (the norm output is not used) */
        pcu_add_norm(s, g->x, g->tmp, prev_b_down, g->xn, NULL, NULL, E, T, c->norm_eps, c->layernorm, NULL);
    }
}

pagoda_status fwd_cuda_run(fwd_cuda *g, const pg_batch *b, kv_cache *kv, const int32_t *out_rows, int32_t n_out,
                           float *logits, int32_t *ids, float *x_host) {
    const pg_model_config *c = &g->m->cfg;
    pagoda_status st;
    if (kv->n_dev_layers != g->n_gpu || !kv->dev_k)
        return pg_fail(PAGODA_ERR_INVALID, "CUDA: the KV cache has %d GPU layers, the forward pass %d", kv->n_dev_layers, g->n_gpu);
    if (!g->d_btab) { /* block tables sized once the block size is known (before any graph) */
        g->block_size = kv->block_size;
        g->btab_stride = (g->max_ctx + kv->block_size - 1) / kv->block_size;
        size_t n = (size_t)g->max_tokens * (size_t)g->btab_stride * sizeof(int32_t);
        if ((st = dev_alloc(g, (void **)&g->d_btab, n)) || (st = pcu_host_alloc((void **)&g->h_btab, n))) return st;
        memset(g->h_btab, 0, n);
        if ((st = pcu_memset(g->d_btab, 0, n, NULL))) return st;
    }
    if (kv->block_size != g->block_size)
        return pg_fail(PAGODA_ERR_INVALID, "CUDA: KV block size changed from %d to %d", g->block_size, kv->block_size);

    const int32_t T = b->n_tok, MT = g->max_tokens;
    gpu_step_shape sh;
    if ((st = gpu_batch_pack(b, kv->block_size, out_rows, n_out, g->full && g->use_graphs, MT, g->max_ctx, g->btab_stride,
                             g->h_meta, g->h_btab, &sh)))
        return st;
    const bool decode = sh.replay;
    const int32_t Tp = sh.n_tok, ctx = sh.ctx;
    /* one copy for all fields (the rows past each field's n_tok are not read) */
    if ((st = pcu_h2d(g->d_meta, g->h_meta, sizeof(int32_t) * (size_t)(GPU_META_ROW * MT + sh.n_rows), g->s))) return st;
    if ((st = pcu_h2d(g->d_btab, g->h_btab, sizeof(int32_t) * (size_t)b->n_seq * (size_t)g->btab_stride, g->s))) return st;

    g->err = PAGODA_OK;
    graph_slot *gs = NULL;
    if (decode) {
        for (int i = 0; i < g->n_graphs; i++)
            if (g->graphs[i].n_tok == Tp && g->graphs[i].ctx == ctx) gs = &g->graphs[i];
        if (!gs && g->n_graphs < MAX_GRAPHS) {
            gs = &g->graphs[g->n_graphs++];
            *gs = (graph_slot){.n_tok = Tp, .ctx = ctx};
        }
    }
    if (gs && gs->graph) {
        if ((st = pcu_graph_launch(gs->graph, g->s))) return st;
    } else if (gs && gs->seen >= 1) { /* second sighting: capture, then replay */
        if ((st = pcu_graph_begin(g->s))) return st;
        launch_step(g, kv, Tp, Tp, ctx);
        pcu_graph *graph = NULL;
        st = pcu_graph_end(g->s, &graph);
        if (st || g->err) {
            pcu_graph_destroy(graph);
            pg_log(PAGODA_LOG_WARN, "cuda: graph capture failed for %d tokens; running without graphs", Tp);
            g->use_graphs = false;
            g->err = PAGODA_OK;
            launch_step(g, kv, Tp, Tp, ctx);
        } else {
            gs->graph = graph;
            if ((st = pcu_graph_launch(graph, g->s))) return st;
        }
    } else {
        if (gs) gs->seen++;
        launch_step(g, kv, Tp, decode ? Tp : n_out, ctx);
    }
    if (g->err) return g->err;
    if ((st = pcu_check("forward pass"))) return st;
    if (g->full && ids) {
        pcu_argmax_rows(g->s, g->logits, n_out, c->n_vocab, g->d_ids);
        if (n_out && (st = pcu_d2h(ids, g->d_ids, sizeof(int32_t) * (size_t)n_out, g->s))) return st;
    } else if (g->full) {
        if (n_out && (st = pcu_d2h(logits, g->logits, sizeof(float) * (size_t)n_out * (size_t)c->n_vocab, g->s))) return st;
    } else if ((st = pcu_d2h(x_host, g->x, sizeof(float) * (size_t)T * (size_t)c->n_embd, g->s))) {
        return st;
    }
    return pcu_sync(g->s);
}

#else /* !PAGODA_CUDA */

pagoda_status fwd_cuda_create(const pg_model *m, int32_t max_tokens, int32_t n_gpu_layers, fwd_cuda **out) {
    (void)m, (void)max_tokens, (void)n_gpu_layers;
    *out = NULL;
    return pg_fail(PAGODA_ERR_UNSUPPORTED, "pagoda was built without CUDA (nvcc was not found at build time)");
}
void fwd_cuda_destroy(fwd_cuda *g) { (void)g; }
struct pcu_stream *fwd_cuda_stream(fwd_cuda *g) { return (void)g, NULL; }
uint64_t fwd_cuda_kv_budget(const fwd_cuda *g, float utilization) { return (void)g, (void)utilization, 0; }
void *fwd_cuda_host_alloc(size_t bytes) { return (void)bytes, NULL; }
void fwd_cuda_host_free(void *p) { (void)p; }
pagoda_status fwd_cuda_run(fwd_cuda *g, const pg_batch *b, kv_cache *kv, const int32_t *out_rows, int32_t n_out,
                           float *logits, int32_t *ids, float *x_host) {
    (void)g, (void)b, (void)kv, (void)out_rows, (void)n_out, (void)logits, (void)ids, (void)x_host;
    return pg_fail(PAGODA_ERR_UNSUPPORTED, "pagoda was built without CUDA");
}

#endif
