/* The CPU backend: weights used in place from the file mapping, ops on the kcpu_* kernels (SIMD
 * by runtime dispatch, OpenMP teams of this backend's thread count). */
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/dtype.h"
#include "core/fp16.h"
#include "core/log.h"
#include "kernels/kernels.h"
#include "kernels/ops.h"
#include "kernels/qmatmul.h"

typedef struct {
    pg_backend base;
    pg_cpu_config c;
    void **allocs;        /* scratch handed out by alloc(), freed with the backend */
    int n_allocs, cap_allocs;
    void *work;           /* matmul scratch (activations converted to the weight's dot type) */
    size_t work_bytes;
    float *strided;       /* [max_tokens][max_strided_cols]: a product's output before its rows are
                             spread with a stride; also contiguous queries for attention */
    int32_t *pos;         /* [max_tokens] position of each token of the step */
    k_attn_seq *seqs;     /* [max_tokens] one per sequence of the step */
    const pg_batch *b;    /* the step's batch (borrowed until end_step) */
    const int32_t *out_rows;
    /* with an observer (pg_cpu_config.observe): the name of each uploaded matrix, by its data
       pointer (what a product's pg_bweight carries), open addressing, cap a power of two */
    struct {
        const void *key;
        const char *name;
    } *names;
    size_t n_names, cap_names;
} cpu_be;

#define CPU(be) ((cpu_be *)(be))

static void cpu_destroy(pg_backend *be) {
    cpu_be *c = CPU(be);
    for (int i = 0; i < c->n_allocs; i++) free(c->allocs[i]);
    free(c->allocs), free(c->work), free(c->strided), free(c->pos), free(c->seqs), free(c->names);
    free(c);
}

static void *cpu_alloc(pg_backend *be, size_t bytes) {
    cpu_be *c = CPU(be);
    if (c->n_allocs == c->cap_allocs) {
        int cap = c->cap_allocs ? 2 * c->cap_allocs : 32;
        void **a = realloc(c->allocs, sizeof(void *) * (size_t)cap);
        if (!a) return NULL;
        c->allocs = a, c->cap_allocs = cap;
    }
    void *p = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (p) c->allocs[c->n_allocs++] = p;
    return p;
}

static void *cpu_host_alloc(pg_backend *be, size_t bytes) { return (void)be, malloc(bytes); }
static void cpu_host_free(pg_backend *be, void *p) { (void)be, free(p); }

/* A product over a Hugging Face quantized weight (pg_bweight.aux). */
typedef struct {
    k_qweight w;
    k_act_kind act;
} cpu_qw;

static pagoda_status grow_work(cpu_be *c, size_t need) {
    if (need <= c->work_bytes) return PAGODA_OK; /* sized at load time: no allocation while stepping */
    void *w = aligned_alloc(64, (need + 64) & ~(size_t)63);
    if (!w) return pg_fail(PAGODA_ERR_NOMEM, "CPU backend: cannot allocate %zu bytes of product scratch", need);
    free(c->work);
    c->work = w, c->work_bytes = need;
    return PAGODA_OK;
}

static size_t name_slot(const cpu_be *c, const void *key) {
    size_t h = ((uintptr_t)key >> 4) * (size_t)0x9E3779B97F4A7C15ull, mask = c->cap_names - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask)
        if (!c->names[i].key || c->names[i].key == key) return i;
}

/* Records the name the observer reports for products over the matrix at key (the first name
 * wins when the same data is uploaded twice, e.g. tied embeddings). */
static pagoda_status remember_name(cpu_be *c, const void *key, const char *name) {
    if (!c->c.observe || !key) return PAGODA_OK;
    if (2 * (c->n_names + 1) > c->cap_names) {
        size_t cap = c->cap_names ? 2 * c->cap_names : 256;
        cpu_be old = *c;
        c->names = calloc(cap, sizeof *c->names);
        if (!c->names) {
            c->names = old.names;
            return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
        }
        c->cap_names = cap;
        for (size_t i = 0; i < old.cap_names; i++)
            if (old.names[i].key) c->names[name_slot(c, old.names[i].key)] = old.names[i];
        free(old.names);
    }
    size_t i = name_slot(c, key);
    if (!c->names[i].key) c->names[i].key = key, c->names[i].name = name ? name : "?", c->n_names++;
    return PAGODA_OK;
}

static const char *matrix_name(const cpu_be *c, const void *key) {
    if (!c->cap_names) return "?";
    size_t i = name_slot(c, key);
    return c->names[i].key ? c->names[i].name : "?";
}

static pagoda_status upload_qweight(cpu_be *c, const pg_tensor *t, pg_bweight *out) {
    if (t->qkind < K_QW_INT4 || t->qkind > K_QW_FP8 || !t->scales.data || t->scales.dtype != PAGODA_DTYPE_F32 ||
        t->group_size <= 0 || (t->qkind == K_QW_FP8 && t->zeros.data))
        return pg_fail(PAGODA_ERR_INVALID, "weight %s: inconsistent quantization metadata", t->name ? t->name : "?");
    cpu_qw *q = cpu_alloc(&c->base, sizeof *q);
    if (!q) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    q->w = (k_qweight){.kind = (k_qw_kind)t->qkind, .codes = t->data, .n_in = t->n_in, .n_out = t->n_out,
                       .group_size = t->group_size, .scales = t->scales.data, .zeros = t->zeros.data,
                       .perm = t->perm.data};
    int a = c->c.quant_act;
    q->act = a == PAGODA_QUANT_ACT_FLOAT ? K_ACT_FLOAT : a == PAGODA_QUANT_ACT_INT8 ? K_ACT_INT8
           : a == PAGODA_QUANT_ACT_FP8 ? K_ACT_FP8 : a == PAGODA_QUANT_ACT_INT16 ? K_ACT_INT16 : (k_act_kind)t->qact;
    /* a weight-only checkpoint's 16-bit activations: int16 where its integer dot products run
       (AVX-512 VNNI; on AVX2, INT4 with 32/64/128-column groups; decode at 1.0-1.3x Q4_0's kernel
       speed where float activations ran at 0.6x; within 1.5e-4 of float on the fixtures), else
       float */
    if (a == PAGODA_QUANT_ACT_CHECKPOINT && q->act == K_ACT_FLOAT && kcpu_qmatmul_int16_fast(&q->w))
        q->act = K_ACT_INT16;
    out->aux = q;
    return grow_work(c, k_qmatmul_work_size(&q->w, c->c.max_tokens, q->act));
}

static pagoda_status cpu_upload(pg_backend *be, const pg_tensor *t, bool matrix, pg_bweight *out) {
    cpu_be *c = CPU(be);
    *out = (pg_bweight){.data = t->data, .dtype = t->dtype, .n_in = t->n_in, .n_out = t->n_out};
    if (!matrix) return PAGODA_OK;
    pagoda_status st = remember_name(c, t->data, t->name);
    if (st) return st;
    if (t->qkind) return upload_qweight(c, t, out);
    if (!k_matmul_supported(t->dtype))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "weight %s: type %s has no CPU product", t->name ? t->name : "?",
                       dtype_name(t->dtype));
    return grow_work(c, k_matmul_work_size(t->dtype, t->n_in, c->c.max_tokens));
}

static pagoda_status cpu_upload_stacked(pg_backend *be, const pg_tensor *const *parts, int n, pg_bweight *out) {
    (void)be, (void)parts, (void)n, (void)out;
    return PAGODA_ERR_UNSUPPORTED; /* the CPU reads each matrix in place */
}

static pagoda_status cpu_kv_alloc(pg_backend *be, size_t bytes, void **mem) {
    (void)be;
    *mem = calloc(1, bytes);
    return *mem ? PAGODA_OK : pg_fail(PAGODA_ERR_NOMEM, "cannot allocate %zu MiB", bytes >> 20);
}
static void cpu_kv_free(pg_backend *be, void *mem) { (void)be, free(mem); }

static pagoda_status cpu_copy(pg_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    memmove(dst, src, bytes);
    return PAGODA_OK;
}

static uint64_t cpu_kv_budget(pg_backend *be, float utilization) { return (void)be, (void)utilization, 0; }

static pagoda_status cpu_begin_step(pg_backend *be, const pg_batch *b, int32_t block_size, const int32_t *out_rows,
                                    int32_t n_out, bool may_replay, pg_step_plan *plan) {
    cpu_be *c = CPU(be);
    (void)block_size, (void)may_replay;
    if (c->c.n_threads > 0) kcpu_set_threads(c->c.n_threads); /* this thread's kernels: this backend's team */
    c->b = b, c->out_rows = out_rows;
    for (int32_t s = 0; s < b->n_seq; s++)
        for (int32_t t = b->seq_start[s]; t < b->seq_start[s + 1]; t++) c->pos[t] = b->seq_pos0[s] + (t - b->seq_start[s]);
    *plan = (pg_step_plan){.n_tok = b->n_tok, .n_out = n_out};
    return PAGODA_OK;
}

static pagoda_status cpu_end_step(pg_backend *be, bool *again) {
    (void)be;
    *again = false;
    return PAGODA_OK;
}

/* One row of an embedding table, as floats. */
static void embed_row(const pg_bweight *w, int64_t row, float *out) {
    size_t rs = 0;
    dtype_row_size(w->dtype, w->n_in, &rs); /* validated at load */
    kcpu_traits(w->dtype)->to_float((const char *)w->data + (size_t)row * rs, out, w->n_in);
}

static void cpu_get_rows(pg_backend *be, const pg_bweight *table, int ids, int32_t T, float *out, bool accumulate) {
    cpu_be *c = CPU(be);
    const int64_t n = table->n_in;
    for (int32_t t = 0; t < T; t++) {
        const int64_t id = (ids == PG_IDS_TOKENS ? c->b->tokens[t] : c->pos[t]) - table->row0;
        if (id < 0 || id >= table->n_out) { /* another rank's slice of the vocabulary */
            if (!accumulate) memset(out + t * n, 0, sizeof(float) * (size_t)n);
            continue;
        }
        if (!accumulate) {
            embed_row(table, id, out + t * n);
        } else {
            float *row = c->strided; /* n_embd floats fit: strided holds max_tokens rows */
            embed_row(table, id, row);
            for (int64_t i = 0; i < n; i++) out[t * n + i] += row[i];
        }
    }
}

static void cpu_gather_out_rows(pg_backend *be, const float *x, int64_t n, int32_t n_out, float *out) {
    cpu_be *c = CPU(be);
    for (int32_t i = 0; i < n_out; i++) memcpy(out + i * n, x + (int64_t)c->out_rows[i] * n, sizeof(float) * (size_t)n);
}

static void cpu_add_norm(pg_backend *be, float *x, const float *delta, const pg_bweight *delta_bias, float *y,
                         const pg_bweight *w, const pg_bweight *b, int64_t n, int32_t rows, float eps, bool layernorm,
                         bool y_half) {
    (void)be, (void)y_half;
    const float *db = delta_bias && delta_bias->data ? delta_bias->data : NULL;
    for (int32_t t = 0; t < rows; t++) {
        float *xr = x + t * n;
        if (delta) {
            const float *dr = delta + t * n;
            if (db)
                for (int64_t i = 0; i < n; i++) xr[i] += dr[i] + db[i];
            else
                for (int64_t i = 0; i < n; i++) xr[i] += dr[i];
        }
        if (!y || !w || !w->data) continue;
        if (layernorm)
            kcpu_layernorm(y + t * n, xr, w->data, b && b->data ? b->data : NULL, n, eps);
        else
            kcpu_rmsnorm(y + t * n, xr, w->data, n, eps);
    }
}

static void cpu_matmul(pg_backend *be, const pg_bweight *w, const float *x, int32_t T, float *y, int64_t ldy, bool x_half) {
    cpu_be *c = CPU(be);
    (void)x_half;
    if (c->c.observe) c->c.observe(c->c.observe_user, matrix_name(c, w->data), x, T, w->n_in);
    if (w->aux) { /* GPTQ / AWQ / compressed-tensors codes: the product takes the row stride itself */
        const cpu_qw *q = w->aux;
        kcpu_qmatmul(&q->w, q->act, x, T, y, ldy, c->work);
        return;
    }
    if (ldy == w->n_out) {
        kcpu_matmul(w->dtype, w->data, w->n_in, w->n_out, x, T, y, c->work);
        return;
    }
    kcpu_matmul(w->dtype, w->data, w->n_in, w->n_out, x, T, c->strided, c->work);
    for (int32_t t = 0; t < T; t++)
        memcpy(y + t * ldy, c->strided + t * w->n_out, sizeof(float) * (size_t)w->n_out);
}

static bool cpu_wants_half(pg_backend *be, const pg_bweight *w, int32_t T) { return (void)be, (void)w, (void)T, false; }

static void cpu_add_bias(pg_backend *be, float *y, const pg_bweight *b, int32_t rows, int64_t n, int64_t ld) {
    (void)be;
    if (!b || !b->data) return;
    const float *bb = b->data;
    for (int32_t t = 0; t < rows; t++)
        for (int64_t i = 0; i < n; i++) y[t * ld + i] += bb[i];
}

static void cpu_head_norm(pg_backend *be, float *x, int32_t T, int n_head, int head_dim, int64_t ld, const pg_bweight *w,
                          float eps) {
    (void)be;
    for (int32_t t = 0; t < T; t++)
        for (int h = 0; h < n_head; h++) {
            float *xh = x + t * ld + (int64_t)h * head_dim;
            kcpu_rmsnorm(xh, xh, w->data, head_dim, eps);
        }
}

static void cpu_rope(pg_backend *be, float *x, int32_t T, int64_t ld, int n_head, int head_dim, int rope_dim,
                     const pg_bweight *inv_freq, bool neox) {
    cpu_be *c = CPU(be);
    for (int32_t t = 0; t < T; t++) kcpu_rope(x + t * ld, n_head, head_dim, rope_dim, c->pos[t], inv_freq->data, neox);
}

static void cpu_kv_store(pg_backend *be, const pg_kv_layer *kv, const float *k, const float *v, int64_t ld, int32_t T) {
    cpu_be *c = CPU(be);
    const pg_batch *b = c->b;
    const int64_t kvd = (int64_t)kv->n_head_kv * kv->head_dim;
    for (int32_t s = 0; s < b->n_seq; s++) {
        for (int32_t t = b->seq_start[s]; t < b->seq_start[s + 1] && t < T; t++) {
            int32_t pos = c->pos[t];
            int32_t blk = b->block_tables[s][pos / kv->block_size], slot = pos % kv->block_size;
            size_t off = ((size_t)blk * (size_t)kv->block_size + (size_t)slot) * (size_t)kvd;
            const float *kt = k + t * ld, *vt = v + t * ld;
            if (k_kv_quantized(kv->dtype)) { /* codes and a scale per head */
                for (int h = 0; h < kv->n_head_kv; h++) {
                    size_t eo = k_kv_elem_offset(kv->dtype, kv->block_size, kv->n_head_kv, kv->head_dim, blk, slot, h);
                    size_t so = k_kv_scale_offset(kv->block_size, kv->n_head_kv, kv->head_dim, blk, slot, h);
                    float sk, sv;
                    k_kv_quantize(kv->dtype, (uint8_t *)kv->k + eo, &sk, kt + (size_t)h * kv->head_dim, kv->head_dim);
                    k_kv_quantize(kv->dtype, (uint8_t *)kv->v + eo, &sv, vt + (size_t)h * kv->head_dim, kv->head_dim);
                    memcpy((uint8_t *)kv->k + so, &sk, sizeof sk);
                    memcpy((uint8_t *)kv->v + so, &sv, sizeof sv);
                }
            } else if (kv->dtype == PAGODA_DTYPE_F16) { /* rounded to nearest even, as F16C does */
                uint16_t *kh = (uint16_t *)kv->k + off, *vh = (uint16_t *)kv->v + off;
                for (int64_t i = 0; i < kvd; i++) kh[i] = pg_fp32_to_fp16(kt[i]), vh[i] = pg_fp32_to_fp16(vt[i]);
            } else {
                memcpy((float *)kv->k + off, kt, sizeof(float) * (size_t)kvd);
                memcpy((float *)kv->v + off, vt, sizeof(float) * (size_t)kvd);
            }
        }
    }
}

static void cpu_attention(pg_backend *be, const pg_kv_layer *kv, float *out, const float *q, int64_t q_ld, int32_t T,
                          int n_head, float scale, int window) {
    cpu_be *c = CPU(be);
    const pg_batch *b = c->b;
    const int64_t qd = (int64_t)n_head * kv->head_dim;
    const float *qc = q;
    if (q_ld != qd) { /* the kernel reads queries as contiguous rows */
        for (int32_t t = 0; t < T; t++) memcpy(c->strided + t * qd, q + t * q_ld, sizeof(float) * (size_t)qd);
        qc = c->strided;
    }
    for (int32_t s = 0; s < b->n_seq; s++) {
        int32_t t0 = b->seq_start[s];
        c->seqs[s] = (k_attn_seq){
            .out = out + t0 * qd,
            .q = qc + t0 * qd,
            .n_q = b->seq_start[s + 1] - t0,
            .pos0 = b->seq_pos0[s],
            .kv = {.k = kv->k, .v = kv->v, .block_table = b->block_tables[s], .block_size = kv->block_size,
                   .n_head_kv = kv->n_head_kv, .head_dim = kv->head_dim, .type = kv->dtype},
        };
    }
    kcpu_attention_batch(c->seqs, b->n_seq, n_head, scale, window);
}

static void cpu_silu_mul(pg_backend *be, float *gate, const float *up, int64_t n) { (void)be, kcpu_silu_mul(gate, up, n); }

static void cpu_swiglu_rows(pg_backend *be, float *out, const float *in, int32_t rows, int64_t n, bool out_half) {
    (void)out_half;
    for (int32_t r = 0; r < rows; r++) {
        memcpy(out + r * n, in + r * 2 * n, sizeof(float) * (size_t)n);
        cpu_silu_mul(be, out + r * n, in + r * 2 * n + n, n);
    }
}

static void cpu_gelu(pg_backend *be, float *x, int64_t n) { (void)be, kcpu_gelu(x, n); }

static pagoda_status cpu_all_reduce(pg_backend *be, float *x, int64_t n) {
    cpu_be *c = CPU(be);
    return c->c.all_reduce ? c->c.all_reduce(c->c.all_reduce_user, x, n) : PAGODA_OK;
}

static pagoda_status cpu_read(pg_backend *be, void *host, const void *src, size_t bytes) {
    (void)be;
    if (host != src) memcpy(host, src, bytes);
    return PAGODA_OK;
}

static pagoda_status cpu_sync(pg_backend *be) { return (void)be, PAGODA_OK; }

static void cpu_lora(pg_backend *be, const pg_lora_seg *segs, int32_t n) {
    (void)be;
    kcpu_lora_batch(segs, n);
}

static const pg_backend_ops cpu_ops = {
    .name = "cpu",
    .host_memory = true,
    .kv_quant = true,
    .destroy = cpu_destroy,
    .upload = cpu_upload,
    .upload_stacked = cpu_upload_stacked,
    .alloc = cpu_alloc,
    .host_alloc = cpu_host_alloc,
    .host_free = cpu_host_free,
    .kv_alloc = cpu_kv_alloc,
    .kv_free = cpu_kv_free,
    .copy = cpu_copy,
    .kv_budget = cpu_kv_budget,
    .begin_step = cpu_begin_step,
    .end_step = cpu_end_step,
    .get_rows = cpu_get_rows,
    .gather_out_rows = cpu_gather_out_rows,
    .add_norm = cpu_add_norm,
    .matmul = cpu_matmul,
    .wants_half = cpu_wants_half,
    .add_bias = cpu_add_bias,
    .head_norm = cpu_head_norm,
    .rope = cpu_rope,
    .kv_store = cpu_kv_store,
    .attention = cpu_attention,
    .silu_mul = cpu_silu_mul,
    .swiglu_rows = cpu_swiglu_rows,
    .gelu = cpu_gelu,
    .all_reduce = cpu_all_reduce,
    .read = cpu_read,
    .write = cpu_read, /* host to host either way */
    .argmax_rows = NULL, /* the sampler picks greedy tokens on the host */
    .sync = cpu_sync,
    .lora = cpu_lora,
};

pagoda_status be_cpu_create(const pg_cpu_config *cfg, pg_backend **out) {
    *out = NULL;
    if (cfg->max_tokens <= 0) return pg_fail(PAGODA_ERR_INVALID, "CPU backend: max_tokens %d", cfg->max_tokens);
    cpu_be *c = calloc(1, sizeof *c);
    if (!c) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    c->base.ops = &cpu_ops;
    c->c = *cfg;
    size_t T = (size_t)cfg->max_tokens, cols = cfg->max_strided_cols > 0 ? (size_t)cfg->max_strided_cols : 1;
    c->strided = aligned_alloc(64, (T * cols * sizeof(float) + 63) & ~(size_t)63);
    c->pos = malloc(T * sizeof(int32_t));
    c->seqs = malloc(T * sizeof(k_attn_seq));
    if (!c->strided || !c->pos || !c->seqs) {
        cpu_destroy(&c->base);
        return pg_fail(PAGODA_ERR_NOMEM, "CPU backend: cannot allocate step scratch for %d tokens", cfg->max_tokens);
    }
    *out = &c->base;
    return PAGODA_OK;
}
