/* The transformer forward pass for every supported family, on a packed batch:
 *   x = embed(tokens) (+ learned positions)
 *   per layer: x += Wo · attention(rope(Wq·n1(x)), cache <- rope(Wk·n1(x)), Wv·n1(x))
 *              x += ffn(n2(x))          (SwiGLU: Wd·(silu(Wg·h) * Wu·h); else Wd·gelu(Wu·h + b))
 *   logits = Wout · norm(x) for the tokens that want them. */
#include "model/forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/fp16.h"
#include "core/log.h"
#include "kernels/kernels.h"
#include "kernels/ops.h"
#include "model/forward_cuda.h"

struct pg_forward {
    const pg_model *m;
    int32_t max_tokens;
    float *x;      /* [T][n_embd] residual stream */
    float *xn;     /* [T][n_embd] normed input of a sub-layer */
    float *q;      /* [T][n_head*head_dim] */
    float *k, *v;  /* [T][n_head_kv*head_dim] */
    float *qkv;    /* [T][q_dim + 2*kv_dim] fused projection output */
    float *att;    /* [T][n_head*head_dim] */
    float *tmp;    /* [T][n_embd] */
    float *gate;   /* [T][n_ff] */
    float *up;     /* [T][n_ff] */
    int32_t *out_rows; /* [T] token index of each logits row */
    k_attn_seq *attn;  /* [T] one entry per sequence of the batch (at most one per token) */
    void *work;    /* matmul scratch */
    int32_t n_gpu; /* layers [0, n_gpu) (and the embedding) run on the GPU */
    fwd_cuda *gpu; /* NULL on the CPU */
};

static void *alloc_floats(int64_t rows, int64_t cols) {
    return aligned_alloc(64, ((size_t)rows * (size_t)cols * sizeof(float) + 63) & ~(size_t)63);
}

void forward_destroy(pg_forward *f) {
    if (!f) return;
    fwd_cuda_destroy(f->gpu);
    free(f->x), free(f->xn), free(f->q), free(f->k), free(f->v), free(f->qkv);
    free(f->att), free(f->tmp), free(f->gate), free(f->up), free(f->out_rows), free(f->attn), free(f->work);
    free(f);
}

typedef struct {
    int32_t n_tok;
    size_t bytes;
} work_need;

static void max_work(const pg_weight *w, void *user) {
    work_need *need = user;
    if (!w->data || w->n_out <= 1) return; /* vectors are not matmul operands */
    size_t s = k_matmul_work_size(w->dtype, w->n_in, need->n_tok);
    if (s > need->bytes) need->bytes = s;
}

pagoda_status forward_create(const pg_model *m, int32_t max_tokens, pg_forward **out) {
    return forward_create_ex(m, max_tokens, NULL, out);
}

void *forward_host_alloc(const pg_forward *f, size_t bytes) {
    return f->gpu ? fwd_cuda_host_alloc(bytes) : malloc(bytes);
}
void forward_host_free(const pg_forward *f, void *p) {
    if (f->gpu) fwd_cuda_host_free(p);
    else free(p);
}

uint64_t forward_gpu_kv_budget(const pg_forward *f, float utilization) {
    return f->gpu ? fwd_cuda_kv_budget(f->gpu, utilization) : 0;
}

pagoda_status forward_kv_create(const pg_forward *f, int32_t n_blocks, int32_t block_size, int dtype, kv_cache **out) {
    const pg_model_config *c = &f->m->cfg;
    return kv_cache_create_split(c->n_layer, f->n_gpu, n_blocks, block_size, c->n_head_kv, c->head_dim, dtype,
                                 f->gpu ? fwd_cuda_stream(f->gpu) : NULL, out);
}

pagoda_status forward_create_ex(const pg_model *m, int32_t max_tokens, const pg_forward_opts *opts, pg_forward **out) {
    *out = NULL;
    if (max_tokens <= 0 || max_tokens > (1 << 20)) return pg_fail(PAGODA_ERR_INVALID, "max_tokens %d out of range", max_tokens);
    const pg_model_config *c = &m->cfg;
    int64_t T = max_tokens, qd = (int64_t)c->n_head * c->head_dim, kvd = (int64_t)c->n_head_kv * c->head_dim;
    pg_forward *f = calloc(1, sizeof *f);
    if (!f) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    f->m = m;
    f->max_tokens = max_tokens;
    f->x = alloc_floats(T, c->n_embd);
    f->xn = alloc_floats(T, c->n_embd);
    f->q = alloc_floats(T, qd);
    f->k = alloc_floats(T, kvd);
    f->v = alloc_floats(T, kvd);
    f->qkv = alloc_floats(T, qd + 2 * kvd);
    f->att = alloc_floats(T, qd);
    f->tmp = alloc_floats(T, c->n_embd);
    f->gate = alloc_floats(T, c->n_ff);
    f->up = alloc_floats(T, c->n_ff);
    f->out_rows = malloc(sizeof(int32_t) * (size_t)T);
    f->attn = malloc(sizeof(k_attn_seq) * (size_t)T);
    work_need need = {.n_tok = max_tokens};
    model_for_each_weight(m, max_work, &need);
    size_t ws = need.bytes;
    f->work = aligned_alloc(64, (ws + 64) & ~(size_t)63);
    if (!f->x || !f->xn || !f->q || !f->k || !f->v || !f->qkv || !f->att || !f->tmp || !f->gate || !f->up ||
        !f->out_rows || !f->attn || !f->work) {
        forward_destroy(f);
        return pg_fail(PAGODA_ERR_NOMEM, "forward: cannot allocate scratch for %d tokens", max_tokens);
    }
    if (opts && opts->n_gpu_layers > 0) {
        f->n_gpu = opts->n_gpu_layers < c->n_layer ? opts->n_gpu_layers : c->n_layer;
        pagoda_status st = fwd_cuda_create(m, max_tokens, f->n_gpu, &f->gpu);
        if (st) {
            forward_destroy(f);
            return st;
        }
    }
    *out = f;
    return PAGODA_OK;
}

static pagoda_status check_batch(const pg_forward *f, const pg_batch *b, const kv_cache *kv) {
    const pg_model_config *c = &f->m->cfg;
    if (b->n_tok <= 0 || b->n_tok > f->max_tokens)
        return pg_fail(PAGODA_ERR_INVALID, "batch of %d tokens (max %d)", b->n_tok, f->max_tokens);
    if (b->n_seq <= 0 || b->seq_start[0] != 0 || b->seq_start[b->n_seq] != b->n_tok)
        return pg_fail(PAGODA_ERR_INVALID, "batch: seq_start must run from 0 to n_tok");
    if (kv->n_layer != c->n_layer || kv->n_head_kv != c->n_head_kv || kv->head_dim != c->head_dim)
        return pg_fail(PAGODA_ERR_INVALID, "kv cache shape does not match the model");
    if (kv->n_dev_layers != f->n_gpu)
        return pg_fail(PAGODA_ERR_INVALID, "kv cache has %d GPU layers, the forward pass runs %d there (use forward_kv_create)",
                       kv->n_dev_layers, f->n_gpu);
    for (int32_t i = 0; i < b->n_tok; i++)
        if (b->tokens[i] < 0 || b->tokens[i] >= c->n_vocab)
            return pg_fail(PAGODA_ERR_INVALID, "token id %d at batch index %d out of range [0, %d)", b->tokens[i], i, c->n_vocab);
    for (int32_t s = 0; s < b->n_seq; s++) {
        int32_t n = b->seq_start[s + 1] - b->seq_start[s];
        if (n <= 0) return pg_fail(PAGODA_ERR_INVALID, "batch: sequence %d has no tokens", s);
        int64_t last = (int64_t)b->seq_pos0[s] + n - 1;
        if (b->seq_pos0[s] < 0 || last >= INT32_MAX)
            return pg_fail(PAGODA_ERR_INVALID, "sequence %d: position %d out of range", s, b->seq_pos0[s]);
        if (c->learned_pos && last >= c->n_ctx_train)
            return pg_fail(PAGODA_ERR_INVALID, "sequence %d: position %lld beyond the model's %d learned positions",
                           s, (long long)last, c->n_ctx_train);
        if (last / kv->block_size >= b->n_blocks[s])
            return pg_fail(PAGODA_ERR_INVALID, "sequence %d: block table of %d blocks cannot hold position %lld",
                           s, b->n_blocks[s], (long long)last);
        for (int32_t i = 0; i <= last / kv->block_size; i++)
            if (b->block_tables[s][i] < 0 || b->block_tables[s][i] >= kv->n_blocks)
                return pg_fail(PAGODA_ERR_INVALID, "sequence %d: block id %d out of range", s, b->block_tables[s][i]);
    }
    return PAGODA_OK;
}

static void matmul(pg_forward *f, const pg_weight *w, const float *x, int32_t T, float *y) {
    kcpu_matmul(w->dtype, w->data, w->n_in, w->n_out, x, T, y, f->work);
}

static void add_bias(float *y, const pg_weight *b, int32_t T, int64_t n, int64_t stride) {
    if (!b->data) return;
    const float *bb = b->data;
    for (int32_t t = 0; t < T; t++)
        for (int64_t i = 0; i < n; i++) y[t * stride + i] += bb[i];
}

static void norm_rows(const pg_model_config *c, float *y, const float *x, const pg_weight *w, const pg_weight *b,
                      int32_t T, int64_t n) {
    for (int32_t t = 0; t < T; t++) {
        if (c->layernorm)
            kcpu_layernorm(y + t * n, x + t * n, w->data, b->data, n, c->norm_eps);
        else
            kcpu_rmsnorm(y + t * n, x + t * n, w->data, n, c->norm_eps);
    }
}

/* One row of an embedding table, as floats. */
static void embed_row(const pg_weight *w, int64_t row, float *out) {
    size_t rs = 0;
    dtype_row_size(w->dtype, w->n_in, &rs); /* validated at load */
    kcpu_traits(w->dtype)->to_float((const char *)w->data + (size_t)row * rs, out, w->n_in);
}

static void attention_layer(pg_forward *f, const pg_batch *b, kv_cache *kv, int l) {
    const pg_model *m = f->m;
    const pg_model_config *c = &m->cfg;
    const pg_layer_weights *w = &m->layers[l];
    const int32_t T = b->n_tok, hd = c->head_dim;
    const int64_t qd = (int64_t)c->n_head * hd, kvd = (int64_t)c->n_head_kv * hd;

    if (w->wqkv.data) { /* fused projection: rows are q, then k, then v */
        matmul(f, &w->wqkv, f->xn, T, f->qkv);
        add_bias(f->qkv, &w->bqkv, T, qd + 2 * kvd, qd + 2 * kvd);
        for (int32_t t = 0; t < T; t++) {
            const float *r = f->qkv + t * (qd + 2 * kvd);
            memcpy(f->q + t * qd, r, sizeof(float) * (size_t)qd);
            memcpy(f->k + t * kvd, r + qd, sizeof(float) * (size_t)kvd);
            memcpy(f->v + t * kvd, r + qd + kvd, sizeof(float) * (size_t)kvd);
        }
    } else {
        matmul(f, &w->wq, f->xn, T, f->q);
        matmul(f, &w->wk, f->xn, T, f->k);
        matmul(f, &w->wv, f->xn, T, f->v);
        add_bias(f->q, &w->bq, T, qd, qd);
        add_bias(f->k, &w->bk, T, kvd, kvd);
        add_bias(f->v, &w->bv, T, kvd, kvd);
    }

    for (int32_t s = 0; s < b->n_seq; s++) {
        for (int32_t t = b->seq_start[s]; t < b->seq_start[s + 1]; t++) {
            int32_t pos = b->seq_pos0[s] + (t - b->seq_start[s]);
            float *qt = f->q + t * qd, *kt = f->k + t * kvd;
            if (c->qk_norm) {
                for (int h = 0; h < c->n_head; h++) kcpu_rmsnorm(qt + h * hd, qt + h * hd, w->q_norm.data, hd, c->norm_eps);
                for (int h = 0; h < c->n_head_kv; h++) kcpu_rmsnorm(kt + h * hd, kt + h * hd, w->k_norm.data, hd, c->norm_eps);
            }
            if (c->rope != ROPE_NONE) {
                bool neox = c->rope == ROPE_NEOX;
                kcpu_rope(qt, c->n_head, hd, c->rope_dim, pos, m->rope_inv_freq, neox);
                kcpu_rope(kt, c->n_head_kv, hd, c->rope_dim, pos, m->rope_inv_freq, neox);
            }
            int32_t blk = b->block_tables[s][pos / kv->block_size], slot = pos % kv->block_size;
            size_t off = kv_slot_offset(kv, l, blk, slot);
            if (kv->dtype == PAGODA_DTYPE_F16) { /* rounded to nearest even, as F16C does */
                uint16_t *kh = (uint16_t *)kv->k + off, *vh = (uint16_t *)kv->v + off;
                const float *vt = f->v + t * kvd;
                for (int64_t i = 0; i < kvd; i++) kh[i] = pg_fp32_to_fp16(kt[i]), vh[i] = pg_fp32_to_fp16(vt[i]);
            } else {
                memcpy((float *)kv->k + off, kt, sizeof(float) * (size_t)kvd);
                memcpy((float *)kv->v + off, f->v + t * kvd, sizeof(float) * (size_t)kvd);
            }
        }
    }

    for (int32_t s = 0; s < b->n_seq; s++) {
        int32_t t0 = b->seq_start[s];
        f->attn[s] = (k_attn_seq){
            .out = f->att + t0 * qd,
            .q = f->q + t0 * qd,
            .n_q = b->seq_start[s + 1] - t0,
            .pos0 = b->seq_pos0[s],
            .kv = {.k = (const char *)kv->k + kv_slot_offset(kv, l, 0, 0) * kv->elem,
                   .v = (const char *)kv->v + kv_slot_offset(kv, l, 0, 0) * kv->elem,
                   .block_table = b->block_tables[s],
                   .block_size = kv->block_size,
                   .n_head_kv = c->n_head_kv,
                   .head_dim = hd,
                   .f16 = kv->dtype == PAGODA_DTYPE_F16},
        };
    }
    kcpu_attention_batch(f->attn, b->n_seq, c->n_head, 1.0f / sqrtf((float)hd), c->sliding_window);

    matmul(f, &w->wo, f->att, T, f->tmp);
    add_bias(f->tmp, &w->bo, T, c->n_embd, c->n_embd);
    for (int64_t i = 0; i < (int64_t)T * c->n_embd; i++) f->x[i] += f->tmp[i];
}

static void ffn_layer(pg_forward *f, int32_t T, int l) {
    const pg_model_config *c = &f->m->cfg;
    const pg_layer_weights *w = &f->m->layers[l];
    const int64_t nff = c->n_ff;
    matmul(f, &w->w_up, f->xn, T, f->up);
    add_bias(f->up, &w->b_up, T, nff, nff);
    float *h = f->up;
    if (c->gated_ffn) {
        matmul(f, &w->w_gate, f->xn, T, f->gate);
        add_bias(f->gate, &w->b_gate, T, nff, nff);
        kcpu_silu_mul(f->gate, f->up, (int64_t)T * nff);
        h = f->gate;
    } else {
        kcpu_gelu(f->up, (int64_t)T * nff);
    }
    matmul(f, &w->w_down, h, T, f->tmp);
    add_bias(f->tmp, &w->b_down, T, c->n_embd, c->n_embd);
    for (int64_t i = 0; i < (int64_t)T * c->n_embd; i++) f->x[i] += f->tmp[i];
}

bool forward_has_device_argmax(const pg_forward *f) { return f->gpu && f->n_gpu == f->m->cfg.n_layer; }

static pagoda_status run(pg_forward *f, const pg_batch *b, kv_cache *kv, float *logits, int32_t *ids);

pagoda_status forward_run(pg_forward *f, const pg_batch *b, kv_cache *kv, float *logits) {
    return run(f, b, kv, logits, NULL);
}

pagoda_status forward_run_argmax(pg_forward *f, const pg_batch *b, kv_cache *kv, int32_t *ids) {
    if (!forward_has_device_argmax(f))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "forward_run_argmax needs every layer on the GPU");
    return run(f, b, kv, NULL, ids);
}

static pagoda_status run(pg_forward *f, const pg_batch *b, kv_cache *kv, float *logits, int32_t *ids) {
    pagoda_status st = check_batch(f, b, kv);
    if (st) return st;
    const pg_model *m = f->m;
    const pg_model_config *c = &m->cfg;
    const int32_t T = b->n_tok;
    const int64_t E = c->n_embd;

    /* rows that want logits */
    int32_t n_out = 0;
    for (int32_t s = 0; s < b->n_seq; s++)
        for (int32_t t = b->seq_start[s]; t < b->seq_start[s + 1]; t++)
            if (b->logits_mask ? b->logits_mask[t] != 0 : t == b->seq_start[s + 1] - 1) f->out_rows[n_out++] = t;

    if (f->gpu) { /* the GPU runs the embedding and the first n_gpu layers (all: the head too) */
        if ((st = fwd_cuda_run(f->gpu, b, kv, f->out_rows, n_out, logits, ids, f->x))) return st;
        if (f->n_gpu == c->n_layer) return PAGODA_OK;
    } else {
        for (int32_t s = 0; s < b->n_seq; s++) {
            for (int32_t t = b->seq_start[s]; t < b->seq_start[s + 1]; t++) {
                embed_row(&m->tok_embd, b->tokens[t], f->x + t * E);
                if (c->learned_pos) {
                    embed_row(&m->pos_embd, b->seq_pos0[s] + (t - b->seq_start[s]), f->tmp);
                    for (int64_t i = 0; i < E; i++) f->x[t * E + i] += f->tmp[i];
                }
            }
        }
    }

    for (int l = f->n_gpu; l < c->n_layer; l++) {
        const pg_layer_weights *w = &m->layers[l];
        norm_rows(c, f->xn, f->x, &w->attn_norm, &w->attn_norm_b, T, E);
        attention_layer(f, b, kv, l);
        norm_rows(c, f->xn, f->x, &w->ffn_norm, &w->ffn_norm_b, T, E);
        ffn_layer(f, T, l);
    }

    /* final norm and LM head only for the rows that want logits */
    if (n_out == 0) return PAGODA_OK;
    for (int32_t i = 0; i < n_out; i++) {
        const float *xr = f->x + f->out_rows[i] * E;
        float *yr = f->xn + i * E;
        if (c->layernorm)
            kcpu_layernorm(yr, xr, m->out_norm.data, m->out_norm_b.data, E, c->norm_eps);
        else
            kcpu_rmsnorm(yr, xr, m->out_norm.data, E, c->norm_eps);
    }
    matmul(f, &m->output, f->xn, n_out, logits);
    return PAGODA_OK;
}
