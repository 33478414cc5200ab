/* The transformer forward pass for every supported family, written once over the backend
 * interface, on a packed batch:
 *   x = embed(tokens) (+ learned positions)
 *   per layer: xn = norm1(x + pending); qkv = W·xn (+ b); q/k norm; rope; K/V -> paged cache;
 *              att = attention(q, cache); x += Wo·att + bo, fused with xn = norm2(x)
 *              h = ffn(xn) (SwiGLU: silu(Wg·xn) * Wu·xn; else gelu(Wu·xn + b)); pending = Wd·h + bd
 *   logits = Wout · norm(x + pending) for the tokens that want them.
 * Each residual add is fused with the norm after it (one pass over x instead of two).
 * A stage is a backend running a range of layers; the residual stream crosses from one stage to
 * the next through host memory. */
#include "model/forward.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/log.h"
#include "kernels/ops.h"
#include "model/lora.h"

/* The weights of one layer on a backend: one slot per pg_weight field of pg_layer_weights, in the
 * same order (the weight-role table's offsets index them), plus what the backend stacked. */
enum { N_LAYER_W = sizeof(pg_layer_weights) / sizeof(pg_weight) };
typedef struct {
    pg_bweight w[N_LAYER_W];
    pg_bweight gate_up; /* gate rows then up rows (stacked at upload), or absent */
} stage_layer;
#define LW(L, f) (&(L)->w[offsetof(pg_layer_weights, f) / sizeof(pg_weight)])
#define PRESENT(w) ((w)->n_out > 0)

enum { MAX_STAGES = 2 };

typedef struct {
    pg_backend *be;
    int32_t l0, l1;        /* layers [l0, l1) */
    bool embed, head;      /* runs the embedding / the final norm and LM head */
    stage_layer *layers;   /* [l1 - l0] */
    pg_bweight tok_embd, pos_embd, out_norm, out_norm_b, output, inv_freq;
    /* scratch in backend memory, [max_tokens][...] floats */
    float *x, *xn, *qkv, *att, *tmp, *up, *gate, *up2, *xo, *logits;
} stage;

/* A run of consecutive batch tokens whose sequences use the same adapter. */
typedef struct {
    int32_t t0, n;
    const pg_lora *a;
} lora_seg;

struct pg_forward {
    const pg_model *m;
    int32_t max_tokens;
    int32_t n_gpu;          /* layers [0, n_gpu) (and the embedding) run on the GPU */
    int32_t tp_rank, tp_size; /* tensor parallelism: this rank of the group (size 1: alone) */
    int32_t n_head, n_head_kv, n_ff; /* this rank's share of the heads and of the FFN width */
    int32_t kv_rep;         /* > 1: fewer KV heads than ranks; each is held by kv_rep ranks in turn */
    pagoda_status tp_err;   /* the first failed all_reduce of the step */
    bool reduce_always;     /* the sums run for a group of one too (through NCCL on one GPU) */
    bool no_head;           /* a GPU rank other than the first: only the first runs the LM head, so
                               this one holds neither its weight nor a logits buffer */
    bool ve;                /* vocabulary-parallel token embedding: this rank's rows [vp0, vp1) */
    /* pipeline parallelism: where the residual stream comes from / goes to (NULL: this process
     * embeds / runs the head) */
    pagoda_status (*pp_recv)(void *user, float *x, int64_t n);
    pagoda_status (*pp_send)(void *user, const float *x, int64_t n);
    void *pp_user;
    /* vocabulary-parallel LM head (tensor parallelism): this rank's logits columns [vp0, vp1), its
       slice of the vocabulary (also the vocabulary-parallel embedding's rows) */
    bool vp;
    int32_t vp0, vp1;
    int32_t n_logits; /* width of a logits row: n_vocab, or the truncated head's rows */
    pagoda_status (*vp_send)(void *user, const float *x, int64_t n);
    pagoda_status (*vp_recv)(void *user, int32_t tp_rank, float *x, int64_t n);
    void *vp_user;
    float *vp_tmp;          /* first rank: [max_tokens][largest slice] another rank's logits columns */
    int n_stages;
    stage st[MAX_STAGES];
    int32_t *out_rows;      /* [max_tokens] batch token of each logits row */
    float *x_host;          /* [max_tokens][n_embd] residual stream between stages (hybrid) */
    /* LoRA: the caller's adapter table (id -> adapter, id 0 unused), the step's segments and the
     * scratch of their A products ([max_tokens][lora_rank], sized when the table changes) */
    const pg_lora *const *loras;
    int32_t n_loras, lora_rank;
    float *lora_tmp;
    lora_seg *segs; /* [max_tokens] */
    pg_lora_seg *lora_jobs; /* [3 * max_tokens]: the segments of up to 3 projections for the lora op */
    int32_t n_segs;
    void **host_tmp; /* shard copies for a device backend's upload (freed once uploaded) */
    int n_host_tmp, cap_host_tmp;
};

struct pg_kv {
    pg_forward *f;
    kv_geom g;
    void *k[MAX_STAGES], *v[MAX_STAGES]; /* stage s: [l1 - l0][n_blocks][block_size][n_head_kv][head_dim] */
};

/* ---- creation -------------------------------------------------------------------------------- */

static void stage_free(stage *s) {
    free(s->layers);
    be_destroy(s->be);
    memset(s, 0, sizeof *s);
}

static void free_host_tmp(pg_forward *f);

void forward_destroy(pg_forward *f) {
    if (!f) return;
    if (f->x_host && f->n_stages > 0) f->st[0].be->ops->host_free(f->st[0].be, f->x_host);
    for (int i = 0; i < f->n_stages; i++) stage_free(&f->st[i]);
    free(f->out_rows), free(f->lora_tmp), free(f->segs), free(f->lora_jobs), free(f->vp_tmp);
    free_host_tmp(f);
    free(f);
}

static pagoda_status up(stage *s, const pg_weight *w, bool matrix, pg_bweight *out) {
    memset(out, 0, sizeof *out);
    if (!w->data) return PAGODA_OK;
    return s->be->ops->upload(s->be, w, matrix, out);
}

/* Which part of a layer weight a tensor-parallel rank holds: Q/K/V and gate/up by rows (their
 * biases with them), the output and down projections by columns; false: whole (norms, the biases
 * added after the all-reduce). */
/* K or V projection rows (or their bias) of some layer */
static bool is_kv_weight(const pg_model *m, const pg_weight *t) {
    for (int32_t l = 0; l < m->cfg.n_layer; l++) {
        const pg_layer_weights *w = &m->layers[l];
        if (t == &w->wk || t == &w->wv || t == &w->bk || t == &w->bv) return true;
    }
    return false;
}

static bool tp_split(const pg_layer_weights *w, const pg_weight *t, pg_shard_dim *dim) {
    if (t == &w->wq || t == &w->wk || t == &w->wv || t == &w->w_gate || t == &w->w_up) *dim = PG_SHARD_ROWS;
    else if (t == &w->wo || t == &w->w_down) *dim = PG_SHARD_COLS;
    else if (t == &w->bq || t == &w->bk || t == &w->bv || t == &w->b_gate || t == &w->b_up)
        *dim = PG_SHARD_COLS; /* a vector [1][n]: its elements split like the rows they belong to */
    else return false;
    return true;
}

/* Host memory for a shard copy: the CPU backend's own (it reads weights in place, so the copy
 * lives as long as it does); for a device backend, which copies what it uploads, a host buffer kept
 * until the forward pass is made (every shard a distinct host address while uploads run: the
 * backend recognises a tied weight by its host address). */
static void *shard_mem(const pg_forward *f, stage *s, size_t bytes) {
    if (!bytes) bytes = 1;
    if (s->be->ops->host_memory) return s->be->ops->alloc(s->be, bytes);
    pg_forward *mf = (pg_forward *)f;
    if (mf->n_host_tmp == mf->cap_host_tmp) {
        int cap = mf->cap_host_tmp ? 2 * mf->cap_host_tmp : 64;
        void **a = realloc(mf->host_tmp, sizeof(void *) * (size_t)cap);
        if (!a) return NULL;
        mf->host_tmp = a, mf->cap_host_tmp = cap;
    }
    void *p = malloc(bytes);
    if (p) mf->host_tmp[mf->n_host_tmp++] = p;
    return p;
}

static void free_host_tmp(pg_forward *f) {
    for (int i = 0; i < f->n_host_tmp; i++) free(f->host_tmp[i]);
    free(f->host_tmp);
    f->host_tmp = NULL, f->n_host_tmp = f->cap_host_tmp = 0;
}

/* Uploads this rank's shard of w: rows as a view of the weight in place, columns (and bias
 * slices) as a copy (shard_mem). */
static pagoda_status up_shard(const pg_forward *f, stage *s, const pg_weight *w, pg_shard_dim dim, bool matrix,
                              pg_bweight *out) {
    memset(out, 0, sizeof *out);
    if (!w->data) return PAGODA_OK;
    pg_shard sh = {.dim = dim, .index = f->tp_rank, .count = f->tp_size};
    if (f->kv_rep > 1 && is_kv_weight(f->m, w)) /* one KV head, shared with kv_rep - 1 other ranks */
        sh.index = f->tp_rank / f->kv_rep, sh.count = f->tp_size / f->kv_rep;
    pg_tensor part;
    pagoda_status st;
    if (dim == PG_SHARD_ROWS) {
        st = be_shard_view(w, &sh, &part);
    } else {
        size_t bytes = 0;
        if ((st = be_shard_bytes(w, &sh, &bytes))) return st;
        void *mem = shard_mem(f, s, bytes);
        if (!mem) return pg_fail(PAGODA_ERR_NOMEM, "%s: cannot allocate its shard (%zu bytes)", w->name ? w->name : "?", bytes);
        st = be_shard_copy(w, &sh, mem, &part);
    }
    return st ? st : up(s, &part, matrix, out);
}

/* This rank's part of a fused Q|K|V weight (rows) or bias (elements): its query heads' rows, then
 * its KV heads' K rows and V rows (the one shared KV head when ranks outnumber KV heads), copied
 * into memory the backend owns. */
static pagoda_status up_fused_qkv(const pg_forward *f, stage *s, const pg_weight *t, bool matrix, pg_bweight *out) {
    memset(out, 0, sizeof *out);
    if (!t->data) return PAGODA_OK;
    const pg_model_config *c = &f->m->cfg;
    const int64_t hd = c->head_dim, qd = (int64_t)c->n_head * hd, kvd = (int64_t)c->n_head_kv * hd;
    const int64_t qdl = (int64_t)f->n_head * hd, kvdl = (int64_t)f->n_head_kv * hd;
    const int64_t kv_index = f->kv_rep > 1 ? f->tp_rank / f->kv_rep : f->tp_rank;
    const int64_t first[3] = {f->tp_rank * qdl, qd + kv_index * kvdl, qd + kvd + kv_index * kvdl};
    const int64_t count[3] = {qdl, kvdl, kvdl};
    const int64_t total = matrix ? t->n_out : t->n_in;
    if (total != qd + 2 * kvd)
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: %lld fused rows, not Q|K|V's %lld", t->name ? t->name : "wqkv",
                       (long long)total, (long long)(qd + 2 * kvd));
    /* bytes of one unit (a row of a matrix; an element of a plain-typed vector) */
    size_t unit = 0;
    bool plain = t->dtype == PAGODA_DTYPE_F32 || t->dtype == PAGODA_DTYPE_F16 || t->dtype == PAGODA_DTYPE_BF16;
    if (matrix ? !dtype_row_size(t->dtype, t->n_in, &unit) : !plain || !dtype_row_size(t->dtype, 1, &unit))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: fused Q|K|V of type %d are not split", t->name ? t->name : "wqkv",
                       (int)t->dtype);
    const int64_t n = qdl + 2 * kvdl;
    char *mem = shard_mem(f, s, unit * (size_t)n);
    if (!mem) return pg_fail(PAGODA_ERR_NOMEM, "%s: cannot allocate its shard", t->name ? t->name : "wqkv");
    for (int i = 0, at = 0; i < 3; at += (int)count[i], i++)
        memcpy(mem + unit * (size_t)at, (const char *)t->data + unit * (size_t)first[i], unit * (size_t)count[i]);
    pg_tensor part = *t;
    part.data = mem;
    if (matrix) part.n_out = n;
    else part.n_in = n;
    return up(s, &part, matrix, out);
}

/* Uploads this rank's rows [vp0, vp1) of a [n_vocab][n] table (the vocabulary-parallel head or
 * embedding), a view in place (rows are contiguous); out->row0 says which ids it holds. */
static pagoda_status up_rows(stage *s, const pg_weight *t, int32_t r0, int32_t r1, bool matrix, pg_bweight *out) {
    pg_tensor part = *t;
    size_t rs = 0;
    if (!dtype_row_size(part.dtype, part.n_in, &rs)) return pg_fail(PAGODA_ERR_INVALID, "%s: bad row size", t->name ? t->name : "?");
    part.data = (const char *)part.data + (size_t)r0 * rs, part.n_out = r1 - r0;
    pagoda_status st = up(s, &part, matrix, out);
    out->row0 = r0;
    return st;
}

static pagoda_status up_vocab_rows(const pg_forward *f, stage *s, const pg_weight *t, bool matrix, pg_bweight *out) {
    return up_rows(s, t, f->vp0, f->vp1, matrix, out);
}

/* Uploads the layers and tensors a stage needs. Matrices that read the same input are stacked
 * where the backend wants them so (Q|K|V, gate|up without biases). */
static pagoda_status stage_upload(const pg_forward *f, stage *s, const pg_model *m) {
    const pg_model_config *c = &m->cfg;
    pagoda_status st;
    if (s->embed && ((st = f->ve ? up_vocab_rows(f, s, &m->tok_embd, false, &s->tok_embd) : up(s, &m->tok_embd, false, &s->tok_embd)) ||
                     (st = up(s, &m->pos_embd, false, &s->pos_embd))))
        return st;
    if (c->rope != ROPE_NONE) {
        pg_weight inv = {.data = m->rope_inv_freq, .dtype = PAGODA_DTYPE_F32, .n_in = c->rope_dim / 2, .n_out = 1,
                         .name = "rope_inv_freq"};
        if ((st = up(s, &inv, false, &s->inv_freq))) return st;
    }
    for (int32_t l = s->l0; l < s->l1; l++) {
        const pg_layer_weights *w = &m->layers[l];
        stage_layer *L = &s->layers[l - s->l0];
        bool stacked_qkv = false, stacked_gu = false, tp = f->tp_size > 1;
        if (!w->wqkv.data && !tp) {
            const pg_tensor *qkv[3] = {&w->wq, &w->wk, &w->wv};
            st = s->be->ops->upload_stacked(s->be, qkv, 3, LW(L, wqkv));
            if (st && st != PAGODA_ERR_UNSUPPORTED) return st;
            stacked_qkv = st == PAGODA_OK;
        }
        if (!w->b_gate.data && !w->b_up.data && w->w_gate.data && !tp) {
            const pg_tensor *gu[2] = {&w->w_gate, &w->w_up};
            st = s->be->ops->upload_stacked(s->be, gu, 2, &L->gate_up);
            if (st && st != PAGODA_ERR_UNSUPPORTED) return st;
            stacked_gu = st == PAGODA_OK;
        }
        /* every layer role the table declares, each into its slot */
        int n_roles = 0;
        const pg_weight_role *roles = model_layer_roles(&n_roles);
        for (int i = 0; i < n_roles; i++) {
            const pg_weight *t = role_weight_const(w, &roles[i]);
            bool in_qkv = t == &w->wq || t == &w->wk || t == &w->wv, in_gu = t == &w->w_gate || t == &w->w_up;
            if ((stacked_qkv && (in_qkv || t == &w->wqkv)) || (stacked_gu && in_gu)) continue;
            pg_bweight *dst = &L->w[roles[i].offset / sizeof(pg_weight)];
            pg_shard_dim dim;
            if (tp && (t == &w->wqkv || t == &w->bqkv)) st = up_fused_qkv(f, s, t, roles[i].kind == ROLE_MATRIX, dst);
            else if (tp && tp_split(w, t, &dim)) st = up_shard(f, s, t, dim, roles[i].kind == ROLE_MATRIX, dst);
            else st = up(s, t, roles[i].kind == ROLE_MATRIX, dst);
            if (st) return st;
        }
    }
    if (s->head && ((st = up(s, &m->out_norm, false, &s->out_norm)) || (st = up(s, &m->out_norm_b, false, &s->out_norm_b))))
        return st;
    if (s->head && f->vp) return up_vocab_rows(f, s, &m->output, true, &s->output);
    if (s->head && f->n_logits < c->n_vocab) return up_rows(s, &m->output, 0, f->n_logits, true, &s->output);
    if (s->head && !f->no_head && (st = up(s, &m->output, true, &s->output))) return st;
    return PAGODA_OK;
}

static pagoda_status stage_scratch(const pg_forward *f, stage *s, const pg_model_config *c, int32_t max_tokens) {
    const size_t T = (size_t)max_tokens, E = (size_t)c->n_embd, qd = (size_t)f->n_head * (size_t)c->head_dim;
    const size_t kvd = (size_t)f->n_head_kv * (size_t)c->head_dim, nff = (size_t)f->n_ff, F = sizeof(float);
    pg_backend *be = s->be;
    void *(*A)(pg_backend *, size_t) = be->ops->alloc;
    s->x = A(be, T * E * F), s->xn = A(be, T * E * F), s->qkv = A(be, T * (qd + 2 * kvd) * F);
    s->att = A(be, T * qd * F), s->tmp = A(be, T * E * F), s->up = A(be, T * nff * F), s->gate = A(be, T * nff * F);
    s->up2 = A(be, (c->gated_ffn ? T * 2 * nff : 1) * F);
    if (!s->x || !s->xn || !s->qkv || !s->att || !s->tmp || !s->up || !s->gate || !s->up2)
        return pg_fail(PAGODA_ERR_NOMEM, "forward (%s): cannot allocate scratch for %d tokens", be->ops->name, max_tokens);
    if (s->head) { /* a host backend writes logits straight into the caller's buffer */
        s->xo = A(be, T * E * F);
        s->logits = be->ops->host_memory || f->no_head ? NULL : A(be, T * (size_t)f->n_logits * F);
        if (!s->xo || (!be->ops->host_memory && !f->no_head && !s->logits))
            return pg_fail(PAGODA_ERR_NOMEM, "forward (%s): cannot allocate logits for %d tokens", be->ops->name, max_tokens);
    }
    return PAGODA_OK;
}

pagoda_status forward_create(const pg_model *m, int32_t max_tokens, pg_forward **out) {
    return forward_create_ex(m, max_tokens, NULL, out);
}

/* What tensor parallelism needs of the model and the placement (opts->tp_size > 1). */
static pagoda_status tp_check(const pg_model *m, const pg_forward_opts *o) {
    const pg_model_config *c = &m->cfg;
    int32_t N = o->tp_size;
    if (o->tp_rank < 0 || o->tp_rank >= N) return pg_fail(PAGODA_ERR_INVALID, "tensor parallel: rank %d of %d", o->tp_rank, N);
    if (o->observe) return pg_fail(PAGODA_ERR_UNSUPPORTED, "tensor parallel: no product observer");
    if (o->n_gpu_layers > 0) { /* GPUs: every layer on each rank's device, sums through NCCL */
        if (!o->nccl_id)
            return pg_fail(PAGODA_ERR_INVALID, "tensor parallel on GPUs: no NCCL group for a group of %d", N);
        if (o->n_gpu_layers < c->n_layer)
            return pg_fail(PAGODA_ERR_UNSUPPORTED, "tensor parallel on GPUs: every layer on the GPU (--gpu-layers -1), "
                           "not %d of %d (CPU and GPU layers are not split together)", o->n_gpu_layers, c->n_layer);
        if (o->pp_l1 > 0 && (o->pp_l0 > 0 || o->pp_l1 < c->n_layer))
            return pg_fail(PAGODA_ERR_UNSUPPORTED, "tensor parallel on GPUs: no pipeline stages yet");
    } else if (!o->all_reduce) {
        return pg_fail(PAGODA_ERR_INVALID, "tensor parallel: no all_reduce for a group of %d", N);
    }
    if (c->n_head % N || (c->n_head_kv % N && N % c->n_head_kv) || c->n_ff % N)
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "tensor parallel size %d must divide the model's attention heads (%d), "
                       "and FFN width (%d), and divide or be a multiple of its KV heads (%d)", N, c->n_head, c->n_ff,
                       c->n_head_kv);
    for (int32_t l = 0; l < c->n_layer; l++) {
        const pg_layer_weights *w = &m->layers[l];
        if ((w->wqkv.data && pg_tensor_has_qmeta(&w->wqkv)) || (w->bqkv.data && w->bqkv.n_out != 1))
            return pg_fail(PAGODA_ERR_UNSUPPORTED, "tensor parallel: fused Q|K|V weights with scales (%s) are not split yet",
                           w->wqkv.name ? w->wqkv.name : "wqkv");
        if ((w->q_norm.data && w->q_norm.n_in != c->head_dim) || (w->k_norm.data && w->k_norm.n_in != c->head_dim))
            return pg_fail(PAGODA_ERR_UNSUPPORTED, "tensor parallel: q/k norms over all heads are not split yet");
    }
    return PAGODA_OK;
}

/* What a pipeline stage needs (opts->pp_l1 > 0, less than all layers). */
static pagoda_status pp_check(const pg_model *m, const pg_forward_opts *o) {
    const pg_model_config *c = &m->cfg;
    if (o->pp_l0 < 0 || o->pp_l0 >= o->pp_l1 || o->pp_l1 > c->n_layer)
        return pg_fail(PAGODA_ERR_INVALID, "pipeline parallel: layers [%d, %d) of a %d-layer model", o->pp_l0, o->pp_l1,
                       c->n_layer);
    if (o->n_gpu_layers > 0 || o->observe)
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "pipeline parallel: CPU only for now (no GPU layers, no product observer)");
    if ((o->pp_l0 > 0 && !o->pp_recv) || (o->pp_l1 < c->n_layer && !o->pp_send))
        return pg_fail(PAGODA_ERR_INVALID, "pipeline parallel: a stage of layers [%d, %d) needs a way to receive and "
                       "send the residual stream", o->pp_l0, o->pp_l1);
    return PAGODA_OK;
}

pagoda_status forward_create_ex(const pg_model *m, int32_t max_tokens, const pg_forward_opts *opts, pg_forward **out) {
    *out = NULL;
    if (max_tokens <= 0 || max_tokens > (1 << 20)) return pg_fail(PAGODA_ERR_INVALID, "max_tokens %d out of range", max_tokens);
    pg_forward_opts o = {0};
    if (opts) o = *opts;
    const pg_model_config *c = &m->cfg;
    pg_forward *f = calloc(1, sizeof *f);
    if (!f) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    f->m = m;
    f->max_tokens = max_tokens;
    f->n_gpu = o.n_gpu_layers <= 0 ? 0 : o.n_gpu_layers < c->n_layer ? o.n_gpu_layers : c->n_layer;
    f->tp_size = o.tp_size > 1 ? o.tp_size : 1, f->tp_rank = f->tp_size > 1 ? o.tp_rank : 0;
    f->n_head = c->n_head, f->n_head_kv = c->n_head_kv, f->n_ff = c->n_ff;
    pagoda_status st = PAGODA_OK;
    if (f->tp_size > 1) {
        if ((st = tp_check(m, &o))) goto fail;
        /* fewer KV heads than ranks: each rank holds the one KV head its query heads read (GQA
           groups never straddle ranks when the rank count is a multiple of the KV head count) */
        f->kv_rep = c->n_head_kv < f->tp_size ? f->tp_size / c->n_head_kv : 1;
        f->n_head /= f->tp_size, f->n_head_kv = f->kv_rep > 1 ? 1 : f->n_head_kv / f->tp_size, f->n_ff /= f->tp_size;
    }
    /* a truncated head: one rank, the whole model here, a plain weight */
    f->n_logits = c->n_vocab;
    if (o.head_rows > 0 && o.head_rows < c->n_vocab && f->tp_size == 1 && o.pp_l1 <= 0 && m->output.data &&
        !pg_tensor_has_qmeta(&m->output))
        f->n_logits = o.head_rows;
    f->vp0 = (int32_t)((int64_t)c->n_vocab * f->tp_rank / f->tp_size); /* this rank's slice of the vocabulary */
    f->vp1 = (int32_t)((int64_t)c->n_vocab * (f->tp_rank + 1) / f->tp_size);
    /* this process's layers: all of them, or a pipeline stage's range */
    int32_t l0 = 0, l1 = c->n_layer;
    if (o.pp_l1 > 0 && (o.pp_l0 > 0 || o.pp_l1 < c->n_layer)) {
        if ((st = pp_check(m, &o))) goto fail;
        l0 = o.pp_l0, l1 = o.pp_l1;
        if (l0 > 0) f->pp_recv = o.pp_recv;
        if (l1 < c->n_layer) f->pp_send = o.pp_send;
        f->pp_user = o.pp_user;
    }
    /* a vocabulary-parallel head where the stage has the head, the hooks are given and the head
       is a plain weight (HF quantized heads with scales stay whole) */
    if (f->tp_size > 1 && f->n_gpu == 0 && l1 == c->n_layer && o.vp_send && o.vp_recv && m->output.data &&
        !pg_tensor_has_qmeta(&m->output) && c->n_vocab >= f->tp_size) {
        f->vp = true;
        f->vp_send = o.vp_send, f->vp_recv = o.vp_recv, f->vp_user = o.vp_user;
        int32_t widest = (int32_t)(((int64_t)c->n_vocab + f->tp_size - 1) / f->tp_size);
        if (f->tp_rank == 0 && !(f->vp_tmp = malloc(sizeof(float) * (size_t)max_tokens * (size_t)widest))) {
            st = pg_fail(PAGODA_ERR_NOMEM, "out of memory for the logits of %d tokens", max_tokens);
            goto fail;
        }
    }
    if (f->tp_size > 1 && o.vp_embed && l0 == 0 && m->tok_embd.data && !pg_tensor_has_qmeta(&m->tok_embd) &&
        c->n_vocab >= f->tp_size)
        f->ve = true;
    if (!(f->out_rows = malloc(sizeof(int32_t) * (size_t)max_tokens)) || !(f->segs = malloc(sizeof(lora_seg) * (size_t)max_tokens)) ||
        !(f->lora_jobs = malloc(sizeof(pg_lora_seg) * 3 * (size_t)max_tokens))) {
        st = pg_fail(PAGODA_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if (f->n_gpu > 0 && o.observe) {
        st = pg_fail(PAGODA_ERR_UNSUPPORTED, "forward: product observers run on the CPU only (no GPU layers)");
        goto fail;
    }
    if (f->n_gpu > 0) {
        if (c->head_dim > 256 || c->head_dim % 2) {
            st = pg_fail(PAGODA_ERR_UNSUPPORTED, "CUDA: head_dim %d (the GPU attention takes even sizes up to 256)", c->head_dim);
            goto fail;
        }
        pg_cuda_config cc;
        be_cuda_config_default(&cc);
        cc.device = o.cuda_device, cc.max_tokens = max_tokens;
        cc.max_ctx = c->n_ctx_train > 0 ? c->n_ctx_train : 4096;
        cc.n_embd = c->n_embd, cc.n_head = c->n_head, cc.head_dim = c->head_dim;
        cc.graphs = !o.cuda_no_graphs, cc.repack = !o.cuda_no_repack, cc.qgemm = (pg_cuda_qgemm)o.cuda_qgemm;
        if (o.nccl_id && (f->tp_size > 1 || o.nccl_always)) { /* the layer sums through NCCL */
            cc.nccl_rank = f->tp_rank, cc.nccl_size = f->tp_size;
            memcpy(cc.nccl_id, o.nccl_id, PG_NCCL_ID_BYTES);
            f->reduce_always = true;
            f->no_head = f->tp_rank > 0;
        }
        stage *s = &f->st[f->n_stages++];
        s->l0 = 0, s->l1 = f->n_gpu, s->embed = true, s->head = f->n_gpu == c->n_layer;
        if ((st = be_cuda_create(&cc, &s->be))) goto fail;
    }
    if (f->n_gpu < c->n_layer) {
        int64_t qd = (int64_t)c->n_head * c->head_dim, kvd = (int64_t)c->n_head_kv * c->head_dim;
        int64_t cols = qd > kvd ? qd : kvd;
        if (c->n_embd > cols) cols = c->n_embd;
        pg_cpu_config cc = {.n_threads = o.n_threads, .max_tokens = max_tokens, .max_strided_cols = cols,
                            .quant_act = o.quant_act, .observe = o.observe, .observe_user = o.observe_user,
                            .all_reduce = f->tp_size > 1 ? o.all_reduce : NULL, .all_reduce_user = o.all_reduce_user};
        stage *s = &f->st[f->n_stages++];
        s->l0 = f->n_gpu > l0 ? f->n_gpu : l0, s->l1 = l1, s->embed = f->n_gpu == 0 && l0 == 0;
        s->head = l1 == c->n_layer;
        if ((st = be_cpu_create(&cc, &s->be))) goto fail;
        if (!s->be->ops->host_memory && (f->pp_recv || f->pp_send)) {
            st = pg_fail(PAGODA_ERR_UNSUPPORTED, "pipeline parallel: the %s backend does not work in host memory",
                         s->be->ops->name);
            goto fail;
        }
    }
    for (int i = 0; i < f->n_stages; i++) {
        stage *s = &f->st[i];
        if (!(s->layers = calloc((size_t)(s->l1 - s->l0) + 1, sizeof *s->layers))) {
            st = pg_fail(PAGODA_ERR_NOMEM, "out of memory");
            goto fail;
        }
        if ((st = stage_upload(f, s, m)) || (st = stage_scratch(f, s, c, max_tokens))) goto fail;
    }
    if (f->n_stages > 1) {
        f->x_host = f->st[0].be->ops->host_alloc(f->st[0].be, sizeof(float) * (size_t)max_tokens * (size_t)c->n_embd);
        if (!f->x_host) {
            st = pg_fail(PAGODA_ERR_NOMEM, "forward: cannot allocate the residual stream between stages");
            goto fail;
        }
    }
    for (int i = 0; i < f->n_stages; i++)
        if ((st = f->st[i].be->ops->sync(f->st[i].be))) goto fail;
    free_host_tmp(f); /* uploaded */
    *out = f;
    return PAGODA_OK;
fail:
    forward_destroy(f);
    return st;
}

pagoda_status forward_set_adapters(pg_forward *f, const pg_lora *const *table, int32_t n) {
    int32_t rank = 0;
    for (int32_t i = 1; i < n; i++) {
        if (!table[i]) continue;
        if (f->tp_size > 1 || f->pp_recv || f->pp_send)
            return pg_fail(PAGODA_ERR_UNSUPPORTED, "LoRA adapters do not run under tensor or pipeline parallelism yet");
        for (int si = 0; si < f->n_stages; si++)
            if (!f->st[si].be->ops->lora)
                return pg_fail(PAGODA_ERR_UNSUPPORTED, "LoRA adapters run on the CPU only: the %s backend applies none "
                               "(run without GPU layers to use adapters)", f->st[si].be->ops->name);
        if (table[i]->n_layer != f->m->cfg.n_layer)
            return pg_fail(PAGODA_ERR_INVALID, "adapter %d: made for %d layers, the model has %d", i, table[i]->n_layer,
                           f->m->cfg.n_layer);
        if (table[i]->max_rank > rank) rank = table[i]->max_rank;
    }
    if (rank > f->lora_rank) { /* grows between steps only: no allocation while stepping */
        float *t = malloc(sizeof(float) * (size_t)rank * (size_t)f->max_tokens * 3); /* 3 targets per call */
        if (!t) return pg_fail(PAGODA_ERR_NOMEM, "forward: cannot allocate LoRA scratch for rank %d", rank);
        free(f->lora_tmp);
        f->lora_tmp = t, f->lora_rank = rank;
    }
    f->loras = table, f->n_loras = n;
    return PAGODA_OK;
}

const char *forward_placement(const pg_forward *f) {
    return f->n_gpu == 0 ? "cpu" : f->n_stages == 1 ? "cuda" : "cpu+cuda";
}

void *forward_host_alloc(const pg_forward *f, size_t bytes) {
    const stage *s = &f->st[f->n_stages - 1];
    return s->be->ops->host_alloc(s->be, bytes);
}
void forward_host_free(const pg_forward *f, void *p) {
    const stage *s = &f->st[f->n_stages - 1];
    s->be->ops->host_free(s->be, p);
}

uint64_t forward_gpu_kv_budget(const pg_forward *f, float utilization) {
    return f->n_gpu > 0 ? f->st[0].be->ops->kv_budget(f->st[0].be, utilization) : 0;
}

bool forward_has_device_argmax(const pg_forward *f) {
    const stage *s = &f->st[f->n_stages - 1];
    return f->n_gpu > 0 && s->head && s->be->ops->argmax_rows != NULL;
}

int32_t forward_vocab_slice(const pg_forward *f) { return f->vp ? f->vp1 - f->vp0 : f->n_logits; }

int32_t forward_logits_width(const pg_forward *f) { return f->n_logits; }

/* ---- KV memory ------------------------------------------------------------------------------- */

void forward_kv_block_bytes(const pg_forward *f, int32_t block_size, int dtype, size_t *per_block_host,
                            size_t *per_block_dev) {
    const pg_model_config *c = &f->m->cfg;
    const stage *cpu = &f->st[f->n_stages - 1]; /* the CPU layers are the last stage's, if any */
    int32_t n_host = f->n_gpu < c->n_layer ? cpu->l1 - cpu->l0 : 0;
    *per_block_host = n_host > 0 ? kv_cache_bytes_typed(n_host, 1, block_size, f->n_head_kv, c->head_dim, dtype) : 0;
    *per_block_dev = f->n_gpu > 0 ? kv_cache_bytes_typed(f->n_gpu, 1, block_size, f->n_head_kv, c->head_dim, dtype) : 0;
}

void forward_kv_destroy(pg_kv *kv) {
    if (!kv) return;
    for (int i = 0; i < kv->f->n_stages; i++) {
        pg_backend *be = kv->f->st[i].be;
        if (kv->k[i]) be->ops->kv_free(be, kv->k[i]);
        if (kv->v[i]) be->ops->kv_free(be, kv->v[i]);
    }
    free(kv);
}

const kv_geom *forward_kv_geom(const pg_kv *kv) { return &kv->g; }

pagoda_status forward_kv_create(pg_forward *f, int32_t n_blocks, int32_t block_size, int dtype, pg_kv **out) {
    *out = NULL;
    const pg_model_config *c = &f->m->cfg;
    pg_kv *kv = calloc(1, sizeof *kv);
    if (!kv) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    kv->f = f;
    pagoda_status st = kv_geom_init(&kv->g, c->n_layer, n_blocks, block_size, f->n_head_kv, c->head_dim, dtype);
    for (int i = 0; !st && i < f->n_stages; i++) {
        stage *s = &f->st[i];
        if (k_kv_quantized(dtype) && !s->be->ops->kv_quant) {
            st = pg_fail(PAGODA_ERR_UNSUPPORTED, "kv cache: the %s backend holds f32 or f16 KV, not %s "
                         "(int8/fp8 KV runs on the CPU only)", s->be->ops->name, kv_dtype_name(dtype));
            break;
        }
        size_t bytes = kv->g.layer_bytes * (size_t)(s->l1 - s->l0);
        if (!bytes) continue;
        /* zeroed so a bug reading an unwritten slot gives finite numbers, not garbage */
        if ((st = s->be->ops->kv_alloc(s->be, bytes, &kv->k[i])) || (st = s->be->ops->kv_alloc(s->be, bytes, &kv->v[i])))
            pg_error_prefix("kv cache (%s, %zu MiB): ", s->be->ops->name, (2 * bytes) >> 20);
    }
    if (st) {
        forward_kv_destroy(kv);
        return st;
    }
    *out = kv;
    return PAGODA_OK;
}

pagoda_status forward_kv_copy_block(pg_kv *kv, int32_t src, int32_t dst) {
    const kv_geom *g = &kv->g;
    if (src < 0 || dst < 0 || src >= g->n_blocks || dst >= g->n_blocks)
        return pg_fail(PAGODA_ERR_INVALID, "kv block copy %d -> %d out of range [0, %d)", src, dst, g->n_blocks);
    size_t n = g->block_bytes; /* a block is contiguous whatever the type (codes and scales alike) */
    size_t so = (size_t)src * g->block_bytes, d = (size_t)dst * g->block_bytes;
    for (int i = 0; i < kv->f->n_stages; i++) {
        const stage *s = &kv->f->st[i];
        for (int32_t l = 0; l < s->l1 - s->l0; l++) {
            size_t lo = (size_t)l * g->layer_bytes;
            char *k = (char *)kv->k[i] + lo, *v = (char *)kv->v[i] + lo;
            pagoda_status st;
            if ((st = s->be->ops->copy(s->be, k + d, k + so, n)) || (st = s->be->ops->copy(s->be, v + d, v + so, n))) {
                pg_error_prefix("kv cache (%s): block copy %d -> %d: ", s->be->ops->name, src, dst);
                return st;
            }
        }
    }
    return PAGODA_OK;
}

/* ---- one step -------------------------------------------------------------------------------- */

static pagoda_status check_batch(const pg_forward *f, const pg_batch *b, const pg_kv *kv) {
    const pg_model_config *c = &f->m->cfg;
    const kv_geom *g = &kv->g;
    if (kv->f != f) return pg_fail(PAGODA_ERR_INVALID, "the KV cache belongs to another forward pass");
    if (b->n_tok <= 0 || b->n_tok > f->max_tokens)
        return pg_fail(PAGODA_ERR_INVALID, "batch of %d tokens (max %d)", b->n_tok, f->max_tokens);
    if (b->n_seq <= 0 || b->seq_start[0] != 0 || b->seq_start[b->n_seq] != b->n_tok)
        return pg_fail(PAGODA_ERR_INVALID, "batch: seq_start must run from 0 to n_tok");
    for (int32_t i = 0; i < b->n_tok; i++)
        if (b->tokens[i] < 0 || b->tokens[i] >= c->n_vocab)
            return pg_fail(PAGODA_ERR_INVALID, "token id %d at batch index %d out of range [0, %d)", b->tokens[i], i, c->n_vocab);
    for (int32_t s = 0; s < b->n_seq; s++) {
        int32_t ad = b->seq_adapter ? b->seq_adapter[s] : 0;
        if (ad != 0 && (ad < 0 || ad >= f->n_loras || !f->loras[ad]))
            return pg_fail(PAGODA_ERR_INVALID, "sequence %d: adapter %d is not loaded", s, ad);
        int32_t n = b->seq_start[s + 1] - b->seq_start[s];
        if (n <= 0) return pg_fail(PAGODA_ERR_INVALID, "batch: sequence %d has no tokens", s);
        int64_t last = (int64_t)b->seq_pos0[s] + n - 1;
        if (b->seq_pos0[s] < 0 || last >= INT32_MAX)
            return pg_fail(PAGODA_ERR_INVALID, "sequence %d: position %d out of range", s, b->seq_pos0[s]);
        if (c->learned_pos && last >= c->n_ctx_train)
            return pg_fail(PAGODA_ERR_INVALID, "sequence %d: position %lld beyond the model's %d learned positions",
                           s, (long long)last, c->n_ctx_train);
        if (last / g->block_size >= b->n_blocks[s])
            return pg_fail(PAGODA_ERR_INVALID, "sequence %d: block table of %d blocks cannot hold position %lld",
                           s, b->n_blocks[s], (long long)last);
        for (int32_t i = 0; i <= last / g->block_size; i++)
            if (b->block_tables[s][i] < 0 || b->block_tables[s][i] >= g->n_blocks)
                return pg_fail(PAGODA_ERR_INVALID, "sequence %d: block id %d out of range", s, b->block_tables[s][i]);
    }
    return PAGODA_OK;
}

/* y_i (row stride ldy_i) += each segment's adapter delta of target t_i in layer l, from x ([T][n_in]),
 * for up to 3 targets that read the same x (Q, K, V; gate, up) in one lora call. */
static void apply_lora(const pg_forward *f, const stage *s, int32_t l, int nt, const pg_lora_target *t, const float *x,
                       float *const *y, const int64_t *ldy) {
    int32_t n = 0;
    for (int k = 0; k < nt; k++)
        for (int32_t i = 0; i < f->n_segs; i++) {
            const lora_seg *g = &f->segs[i];
            const pg_lora_mat *m = lora_mat(g->a, l, t[k]);
            if (!m->rank) continue;
            f->lora_jobs[n++] = (pg_lora_seg){.n_in = m->n_in, .n_out = m->n_out, .ldy = ldy[k],
                                              .x = x + (int64_t)g->t0 * m->n_in, .y = y[k] + (int64_t)g->t0 * ldy[k],
                                              .tmp = f->lora_tmp + ((int64_t)k * f->max_tokens + g->t0) * f->lora_rank,
                                              .A = m->A, .Bt = m->Bt, .A16 = m->A16, .Bt16 = m->Bt16,
                                              .rows = g->n, .rank = m->rank, .scale = m->scale};
        }
    if (n) s->be->ops->lora(s->be, f->lora_jobs, n);
}
/* up to 3 targets that read the same input x (Q, K, V; gate, up) into outputs y[i], row stride
 * ldy, in one lora call; none without adapters in the step */
static void lora_group(const pg_forward *f, const stage *s, int32_t l, int nt, const pg_lora_target *t, const float *x,
                       float *y0, float *y1, float *y2, int64_t ldy) {
    if (!f->n_segs) return;
    float *const y[3] = {y0, y1, y2};
    const int64_t ld[3] = {ldy, ldy, ldy};
    apply_lora(f, s, l, nt, t, x, y, ld);
}
#define LORA(t, x, y, ldy) lora_group(f, s, l, 1, (const pg_lora_target[]){t}, x, y, NULL, NULL, ldy)

/* Sums a column-split product's partial rows over the tensor-parallel group (in place). */
static void tp_reduce(pg_forward *f, pg_backend *be, float *x, int64_t n) {
    if (f->tp_size < 2 && !f->reduce_always) return;
    pagoda_status st = be->ops->all_reduce(be, x, n);
    if (st && !f->tp_err) f->tp_err = st;
}

/* A vocabulary-parallel head: this rank's columns of the n_out logits rows; the first rank writes
 * its own straight into logits ([n_out][n_vocab]) and places every other rank's, the others send
 * theirs (logits is then their [n_out][slice] buffer). A failed transfer is the step's error. */
static void vp_head(pg_forward *f, stage *s, int32_t n_out, float *logits) {
    const int64_t V = f->m->cfg.n_vocab, w = f->vp1 - f->vp0;
    pg_backend *be = s->be;
    pagoda_status st = PAGODA_OK;
    if (f->tp_rank > 0) {
        be->ops->matmul(be, &s->output, s->xo, n_out, logits, w, false);
        st = f->vp_send(f->vp_user, logits, (int64_t)n_out * w);
    } else { /* its own columns [0, vp1) first, then every other rank's */
        for (int32_t r = 0; r < f->tp_size && !st; r++) {
            const int64_t c0 = V * r / f->tp_size, c1 = V * (r + 1) / f->tp_size;
            if (r == 0) be->ops->matmul(be, &s->output, s->xo, n_out, f->vp_tmp, w, false);
            else if ((st = f->vp_recv(f->vp_user, r, f->vp_tmp, (int64_t)n_out * (c1 - c0)))) break;
            for (int32_t i = 0; i < n_out; i++)
                memcpy(logits + (size_t)i * (size_t)V + c0, f->vp_tmp + (size_t)i * (size_t)(c1 - c0),
                       sizeof(float) * (size_t)(c1 - c0));
        }
    }
    if (st && !f->tp_err) f->tp_err = st;
}

/* The ops of one stage for T (possibly padded) tokens, n_out logits rows and after them n_hid
 * hidden-state rows (gathered into s->xo behind the logits rows' inputs). */
static void stage_ops(pg_forward *f, stage *s, pg_kv *kv, int si, int32_t T, int32_t n_out, int32_t n_hid,
                      float *logits) {
    const pg_model_config *c = &f->m->cfg;
    pg_backend *be = s->be;
    const pg_backend_ops *o = be->ops;
    /* this rank's heads and FFN slice (all of them without tensor parallelism) */
    const int n_head = f->n_head, n_head_kv = f->n_head_kv;
    const int64_t E = c->n_embd, hd = c->head_dim, qd = (int64_t)n_head * hd, kvd = (int64_t)n_head_kv * hd;
    const int64_t D = qd + 2 * kvd, nff = f->n_ff;
    const float eps = c->norm_eps;
    const bool ln = c->layernorm;

    if (s->embed) {
        o->get_rows(be, &s->tok_embd, PG_IDS_TOKENS, T, s->x, false);
        if (f->ve) tp_reduce(f, be, s->x, (int64_t)T * E); /* each token's row from the rank holding it */
        if (c->learned_pos) o->get_rows(be, &s->pos_embd, PG_IDS_POSITIONS, T, s->x, true);
    }
    const float *pending = NULL; /* the last sub-layer's output, added to x by the next norm */
    const pg_bweight *pending_b = NULL;
    for (int32_t l = s->l0; l < s->l1; l++) {
        stage_layer *L = &s->layers[l - s->l0];
        /* the norm also writes halves when the next products read them (one pass instead of two) */
        const pg_bweight *first = PRESENT(LW(L, wqkv)) ? LW(L, wqkv) : LW(L, wq);
        bool half = o->wants_half(be, first, T) &&
                    (PRESENT(LW(L, wqkv)) || (o->wants_half(be, LW(L, wk), T) && o->wants_half(be, LW(L, wv), T)));
        o->add_norm(be, s->x, pending, pending_b, s->xn, LW(L, attn_norm), LW(L, attn_norm_b), E, T, eps, ln, half);
        if (PRESENT(LW(L, wqkv))) {
            o->matmul(be, LW(L, wqkv), s->xn, T, s->qkv, D, half);
        } else {
            o->matmul(be, LW(L, wq), s->xn, T, s->qkv, D, half);
            o->matmul(be, LW(L, wk), s->xn, T, s->qkv + qd, D, half);
            o->matmul(be, LW(L, wv), s->xn, T, s->qkv + qd + kvd, D, half);
        }
        lora_group(f, s, l, 3, (const pg_lora_target[]){LORA_Q, LORA_K, LORA_V}, s->xn, s->qkv, s->qkv + qd,
                   s->qkv + qd + kvd, D);
        o->add_bias(be, s->qkv, LW(L, bqkv), T, D, D);
        o->add_bias(be, s->qkv, LW(L, bq), T, qd, D);
        o->add_bias(be, s->qkv + qd, LW(L, bk), T, kvd, D);
        o->add_bias(be, s->qkv + qd + kvd, LW(L, bv), T, kvd, D);
        if (c->qk_norm) {
            o->head_norm(be, s->qkv, T, n_head, (int)hd, D, LW(L, q_norm), eps);
            o->head_norm(be, s->qkv + qd, T, n_head_kv, (int)hd, D, LW(L, k_norm), eps);
        }
        if (c->rope != ROPE_NONE) /* K heads follow Q heads in each row: one call rotates both */
            o->rope(be, s->qkv, T, D, n_head + n_head_kv, (int)hd, c->rope_dim, &s->inv_freq, c->rope == ROPE_NEOX);
        size_t lo = (size_t)(l - s->l0) * kv->g.layer_bytes;
        pg_kv_layer kl = {.k = (char *)kv->k[si] + lo, .v = (char *)kv->v[si] + lo, .block_size = kv->g.block_size,
                          .n_head_kv = n_head_kv, .head_dim = (int32_t)hd, .dtype = kv->g.dtype};
        o->kv_store(be, &kl, s->qkv + qd, s->qkv + qd + kvd, D, T);
        o->attention(be, &kl, s->att, s->qkv, D, T, n_head, 1.0f / sqrtf((float)hd), c->sliding_window);
        o->matmul(be, LW(L, wo), s->att, T, s->tmp, E, false);
        LORA(LORA_O, s->att, s->tmp, E);
        tp_reduce(f, be, s->tmp, (int64_t)T * E); /* this rank's heads' share of Wo·att: summed, then bo */

        const pg_bweight *upw = PRESENT(&L->gate_up) ? &L->gate_up : LW(L, w_up);
        half = o->wants_half(be, upw, T) && (!c->gated_ffn || PRESENT(&L->gate_up) || o->wants_half(be, LW(L, w_gate), T));
        o->add_norm(be, s->x, s->tmp, LW(L, bo), s->xn, LW(L, ffn_norm), LW(L, ffn_norm_b), E, T, eps, ln, half);
        float *h = s->up;
        bool h_half = false;
        if (PRESENT(&L->gate_up)) { /* one product for gate|up rows, then SwiGLU across the halves */
            o->matmul(be, &L->gate_up, s->xn, T, s->up2, 2 * nff, half);
            lora_group(f, s, l, 2, (const pg_lora_target[]){LORA_GATE, LORA_UP}, s->xn, s->up2, s->up2 + nff, NULL,
                       2 * nff); /* gate and up read the same x */
            h_half = o->wants_half(be, LW(L, w_down), T);
            o->swiglu_rows(be, s->gate, s->up2, T, nff, h_half);
            h = s->gate;
        } else if (c->gated_ffn) {
            o->matmul(be, LW(L, w_up), s->xn, T, s->up, nff, half);
            LORA(LORA_UP, s->xn, s->up, nff);
            o->add_bias(be, s->up, LW(L, b_up), T, nff, nff);
            o->matmul(be, LW(L, w_gate), s->xn, T, s->gate, nff, half);
            LORA(LORA_GATE, s->xn, s->gate, nff);
            o->add_bias(be, s->gate, LW(L, b_gate), T, nff, nff);
            o->silu_mul(be, s->gate, s->up, (int64_t)T * nff);
            h = s->gate;
        } else {
            o->matmul(be, LW(L, w_up), s->xn, T, s->up, nff, half);
            LORA(LORA_UP, s->xn, s->up, nff);
            o->add_bias(be, s->up, LW(L, b_up), T, nff, nff);
            o->gelu(be, s->up, (int64_t)T * nff);
        }
        o->matmul(be, LW(L, w_down), h, T, s->tmp, E, h_half);
        LORA(LORA_DOWN, h, s->tmp, E);
        tp_reduce(f, be, s->tmp, (int64_t)T * E); /* this rank's FFN slice's share: summed, then bd */
        pending = s->tmp, pending_b = LW(L, b_down);
    }
    if (s->head) {
        o->add_norm(be, s->x, pending, pending_b, s->xn, &s->out_norm, &s->out_norm_b, E, T, eps, ln, false);
        if (n_hid > 0) o->gather_out_rows(be, s->xn, E, n_out + n_hid, s->xo);
        if (n_out > 0 && logits) {
            if (n_hid == 0) o->gather_out_rows(be, s->xn, E, n_out, s->xo);
            if (f->vp) vp_head(f, s, n_out, logits);
            else o->matmul(be, &s->output, s->xo, n_out, logits, f->n_logits, false);
        }
    } else {
        /* the residual only (a GPU kernel still writes an unscaled norm into xn, unused) */
        o->add_norm(be, s->x, pending, pending_b, s->xn, NULL, NULL, E, T, eps, ln, false);
    }
}

static int seg_order(const void *pa, const void *pb) {
    const lora_seg *a = pa, *b = pb;
    if (a->a != b->a) return (uintptr_t)a->a < (uintptr_t)b->a ? -1 : 1;
    return (a->t0 > b->t0) - (a->t0 < b->t0);
}

/* rows that want logits, then rows that want hidden states (disjoint), into rows (may be NULL) */
static void select_rows(const pg_batch *b, int32_t *rows, int32_t *n_out, int32_t *n_hid) {
    int32_t no = 0, nh = 0;
    for (int32_t s = 0; s < b->n_seq; s++)
        for (int32_t t = b->seq_start[s]; t < b->seq_start[s + 1]; t++)
            if (b->hidden_mask && b->hidden_mask[t]) continue;
            else if (b->logits_mask ? b->logits_mask[t] != 0 : t == b->seq_start[s + 1] - 1) {
                if (rows) rows[no] = t;
                no++;
            }
    if (b->hidden_mask)
        for (int32_t t = 0; t < b->n_tok; t++)
            if (b->hidden_mask[t]) {
                if (rows) rows[no + nh] = t;
                nh++;
            }
    *n_out = no, *n_hid = nh;
}

void forward_out_rows(const pg_batch *b, int32_t *n_out, int32_t *n_hid) { select_rows(b, NULL, n_out, n_hid); }

static pagoda_status run(pg_forward *f, const pg_batch *b, pg_kv *kv, float *logits, int32_t *ids, float *hidden) {
    pagoda_status st = check_batch(f, b, kv);
    if (st) return st;
    /* runs of consecutive sequences with the same adapter (base rows: none, they pay nothing) */
    f->n_segs = 0;
    for (int32_t s = 0; b->seq_adapter && s < b->n_seq; s++) {
        int32_t ad = b->seq_adapter[s], t0 = b->seq_start[s], n = b->seq_start[s + 1] - t0;
        if (!ad) continue;
        lora_seg *last = f->n_segs ? &f->segs[f->n_segs - 1] : NULL;
        if (last && last->a == f->loras[ad] && last->t0 + last->n == t0) last->n += n;
        else f->segs[f->n_segs++] = (lora_seg){.t0 = t0, .n = n, .a = f->loras[ad]};
    }
    /* one adapter's runs next to each other: its matrices are streamed once per projection and
     * then read from cache for its other runs */
    if (f->n_segs > 2) qsort(f->segs, (size_t)f->n_segs, sizeof *f->segs, seg_order);
    const pg_model_config *c = &f->m->cfg;
    int32_t n_out = 0, n_hid = 0;
    select_rows(b, f->out_rows, &n_out, &n_hid);
    if (n_hid > 0 && !hidden) return pg_fail(PAGODA_ERR_INVALID, "forward: %d hidden-state rows and nowhere to put them", n_hid);
    if (n_out > 0 && !f->m->output.data)
        return pg_fail(PAGODA_ERR_INVALID, "this model has no LM head (lm_head): it computes embeddings, not logits");
    if (n_out > 0 && (logits || ids) && f->no_head)
        return pg_fail(PAGODA_ERR_INVALID, "forward: tensor-parallel GPU rank %d holds no LM head (rank 0 runs it)",
                       f->tp_rank);

    for (int si = 0; si < f->n_stages; si++) {
        stage *s = &f->st[si];
        pg_backend *be = s->be;
        const pg_backend_ops *o = be->ops;
        if (si > 0 && (st = o->write(be, s->x, f->x_host, sizeof(float) * (size_t)b->n_tok * (size_t)c->n_embd)))
            return st;
        /* a later pipeline stage: the residual stream from the one before (host memory) */
        if (si == 0 && f->pp_recv && (st = f->pp_recv(f->pp_user, s->x, (int64_t)b->n_tok * c->n_embd))) return st;
        /* steps a GPU may record: the whole model there, so nothing crosses mid-step */
        bool may_replay = f->n_stages == 1 && s->head && n_hid == 0;
        for (int attempt = 0; attempt < 2; attempt++) {
            pg_step_plan plan;
            if ((st = o->begin_step(be, b, kv->g.block_size, f->out_rows, n_out + n_hid, may_replay, &plan))) return st;
            /* a host backend writes the logits where the caller wants them */
            float *dst = o->host_memory ? logits : s->logits;
            f->tp_err = PAGODA_OK;
            if (!plan.replayed) stage_ops(f, s, kv, si, plan.n_tok, plan.n_out - n_hid, n_hid, dst);
            bool again = false;
            if ((st = o->end_step(be, &again))) return st;
            if (f->tp_err) return pg_fail(f->tp_err, "tensor parallel: all-reduce failed");
            if (!again) break;
        }
        if (!s->head && si == f->n_stages - 1) /* an earlier pipeline stage: on to the next */
            return f->pp_send(f->pp_user, s->x, (int64_t)b->n_tok * c->n_embd);
        if (!s->head) {
            if ((st = o->read(be, f->x_host, s->x, sizeof(float) * (size_t)b->n_tok * (size_t)c->n_embd)) ||
                (st = o->sync(be))) /* the copy is asynchronous on a GPU: the next stage reads it now */
                return st;
            continue;
        }
        if (n_hid > 0 && (st = o->read(be, hidden, s->xo + (size_t)n_out * (size_t)c->n_embd,
                                       sizeof(float) * (size_t)n_hid * (size_t)c->n_embd)))
            return st;
        if (n_out == 0) return o->sync(be);
        if (ids) {
            if ((st = o->argmax_rows(be, s->logits, n_out, f->n_logits, ids))) return st;
        } else if (!o->host_memory &&
                   (st = o->read(be, logits, s->logits, sizeof(float) * (size_t)n_out * (size_t)f->n_logits))) {
            return st;
        }
        return o->sync(be);
    }
    return PAGODA_OK;
}

pagoda_status forward_run(pg_forward *f, const pg_batch *b, pg_kv *kv, float *logits) {
    return run(f, b, kv, logits, NULL, NULL);
}

pagoda_status forward_run_hidden(pg_forward *f, const pg_batch *b, pg_kv *kv, float *logits, float *hidden) {
    return run(f, b, kv, logits, NULL, hidden);
}

pagoda_status forward_run_argmax(pg_forward *f, const pg_batch *b, pg_kv *kv, int32_t *ids) {
    if (!forward_has_device_argmax(f))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "forward_run_argmax needs every layer on a backend that picks tokens");
    return run(f, b, kv, NULL, ids, NULL);
}
