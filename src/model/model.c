/* Loading: GGUF or Hugging Face folder -> config + weights mapped in place.
 * Which weights a model has, their names per format and family and their shapes come from the
 * weight-role tables (weight_roles.c); this file only walks them. */
#include "model/model.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/array.h"
#include "core/clock.h"
#include "core/dtype.h"
#include "core/fp16.h"
#include "core/log.h"
#include "format/gguf.h"
#include "format/safetensors.h"
#include "kernels/kernels.h"
#include "model/qweights.h"

typedef struct {
    pg_model *m;
    char **names;   /* owned copies of found names (pg_weight.name points here) */
    int64_t n_names, cap_names;
    void **owned;   /* converted F32 vectors */
    int64_t n_owned, cap_owned;
} loader;

static pagoda_status keep(void ***arr, int64_t *n, int64_t *cap, void *p) {
    if (!pg_grow((void **)arr, cap, *n + 1, sizeof(void *))) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    (*arr)[(*n)++] = p;
    return PAGODA_OK;
}

/* qw_owner.alloc: a buffer the model frees with it */
static void *owned_alloc(void *ctx, size_t bytes) {
    loader *L = ctx;
    void *p = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (p && keep(&L->owned, &L->n_owned, &L->cap_owned, p)) {
        free(p);
        return NULL;
    }
    return p;
}

static pagoda_status keep_name(loader *L, const char *name, const char **out) {
    char *nm = strdup(name);
    pagoda_status st;
    if (!nm) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    if ((st = keep((void ***)&L->names, &L->n_names, &L->cap_names, nm))) {
        free(nm);
        return st;
    }
    *out = nm;
    return PAGODA_OK;
}

/* A matrix of a quantized Hugging Face checkpoint (name: "<module>.weight"); *found = false when
 * the module is not stored quantized. */
static pagoda_status get_qw(loader *L, pg_weight *w, const char *name, int64_t n_in, int64_t n_out, bool *found) {
    const pg_model *m = L->m;
    *found = false;
    char module[256];
    size_t len = strlen(name);
    if (len < 8 || len - 7 >= sizeof module || strcmp(name + len - 7, ".weight")) return PAGODA_OK;
    memcpy(module, name, len - 7);
    module[len - 7] = 0;
    const qc_scheme *s = quant_config_scheme_for(m->qc, module);
    if (!s) return PAGODA_OK;
    qw_owner own = {owned_alloc, L};
    pagoda_status st = qweight_load(m->st, m->qc, s, module, n_in, n_out, &own, w, found);
    if (!st && !*found && !strncmp(module, "model.", 6)) { /* a bare base model's names */
        memmove(module, module + 6, strlen(module + 6) + 1);
        st = qweight_load(m->st, m->qc, s, module, n_in, n_out, &own, w, found);
    }
    if (st || !*found) return st;
    return keep_name(L, module, &w->name);
}

/* Looks a role up for layer (0 for global roles) and checks its shape. Vectors and biases are
 * converted to F32. A missing optional weight leaves w->data NULL. */
static pagoda_status get_w(loader *L, pg_weight *w, const pg_weight_role *r, int layer) {
    const pg_model_config *c = &L->m->cfg;
    bool vec = r->kind == ROLE_VECTOR || r->kind == ROLE_BIAS;
    int64_t n_in = role_dim(c, r->n_in), n_out = role_dim(c, r->n_out);
    memset(w, 0, sizeof *w);
    const char *fmt = role_name_fmt(r, L->m->format == MODEL_FORMAT_GGUF, c->arch);
    if (!fmt) {
        if (r->required) return pg_fail(PAGODA_ERR_FORMAT, "no tensor name known for this role in %s", c->arch_name);
        return PAGODA_OK;
    }
    char name[256];
    snprintf(name, sizeof name, fmt, layer);
    const void *data;
    int dtype, n_dims;
    int64_t dims[2] = {1, 1}; /* contiguous dim first */
    if (L->m->format == MODEL_FORMAT_GGUF) {
        const gguf_tensor *t = gguf_find_tensor(L->m->gguf, name);
        if (!t) goto missing;
        data = t->data, dtype = t->dtype, n_dims = t->n_dims;
        for (int i = 2; i < t->n_dims; i++)
            if (t->ne[i] != 1) n_dims = 3;
        dims[0] = t->ne[0], dims[1] = t->ne[1];
    } else {
        if (r->kind == ROLE_MATRIX && L->m->qc) {
            bool found;
            pagoda_status qst = get_qw(L, w, name, n_in, n_out, &found);
            if (qst || found) return qst;
        }
        const st_tensor *t = st_find(L->m->st, name);
        /* a checkpoint saved as the bare base model (Qwen3Model, LlamaModel: many embedding
         * models) names its tensors without the "model." prefix */
        if (!t && !strncmp(name, "model.", 6) && (t = st_find(L->m->st, name + 6))) memmove(name, name + 6, strlen(name + 6) + 1);
        if (!t) goto missing;
        data = t->data, dtype = t->dtype, n_dims = t->n_dims;
        if (n_dims >= 1) dims[0] = t->shape[n_dims - 1];
        if (n_dims >= 2) dims[1] = t->shape[n_dims - 2];
    }
    int want_dims = vec ? 1 : 2;
    if (n_dims != want_dims && !(n_dims == 2 && want_dims == 1 && dims[1] == 1))
        return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': %d dimensions, expected %d", name, n_dims, want_dims);
    if (dims[0] != n_in || dims[1] != n_out)
        return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': shape [%lld, %lld] (contiguous dim first), expected [%lld, %lld]",
                       name, (long long)dims[0], (long long)dims[1], (long long)n_in, (long long)n_out);
    const k_type_traits *tr = kref_traits(dtype);
    if (!tr || !tr->to_float)
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "tensor '%s': type %s is not supported", name, dtype_name(dtype));
    pagoda_status st;
    if ((st = keep_name(L, name, &w->name))) return st;
    w->n_in = n_in;
    w->n_out = n_out;
    w->dtype = dtype;
    w->data = data;
    if (vec && dtype != PAGODA_DTYPE_F32) { /* small vectors: float ops want F32 */
        float *f = malloc(sizeof(float) * (size_t)n_in);
        if (!f) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
        if ((st = keep(&L->owned, &L->n_owned, &L->cap_owned, f))) {
            free(f);
            return st;
        }
        tr->to_float(data, f, n_in);
        w->data = f;
        w->dtype = PAGODA_DTYPE_F32;
    } else if (r->kind == ROLE_MATRIX && !k_matmul_supported(dtype)) {
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "tensor '%s': type %s cannot be used for matrix products", name, dtype_name(dtype));
    }
    return PAGODA_OK;
missing:
    if (r->required) return pg_fail(PAGODA_ERR_FORMAT, "missing tensor '%s'", name);
    return PAGODA_OK;
}

/* Fused q/k/v stored per head ([n_head][q, k, v][head_dim] rows, cfg.qkv_per_head) -> an owned
 * copy in the q | k | v block layout the forward pass reads. Rows move whole, so any row-wise
 * dtype (quantized blocks included) is reordered exactly; a bias's rows are single floats. */
static pagoda_status reorder_qkv_rows(loader *L, pg_weight *w, const pg_weight_role *r) {
    const pg_model_config *c = &L->m->cfg;
    int64_t H = c->n_head, hd = c->head_dim;
    bool vec = r->kind == ROLE_VECTOR || r->kind == ROLE_BIAS;
    int64_t n_rows = vec ? w->n_in : w->n_out;
    size_t row = sizeof(float);
    if (c->n_head_kv != c->n_head || n_rows != 3 * H * hd)
        return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': per-head q/k/v needs n_head_kv == n_head and 3*%lld rows",
                       w->name, (long long)(H * hd));
    if (vec ? w->dtype != PAGODA_DTYPE_F32 : !dtype_row_size(w->dtype, w->n_in, &row))
        return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': cannot reorder rows of type %s", w->name, dtype_name(w->dtype));
    char *dst = malloc(row * (size_t)n_rows);
    pagoda_status st;
    if (!dst) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    if ((st = keep(&L->owned, &L->n_owned, &L->cap_owned, dst))) {
        free(dst);
        return st;
    }
    const char *src = w->data;
    for (int64_t h = 0; h < H; h++)
        for (int64_t p = 0; p < 3; p++) /* source rows (h*3 + p)*hd.. -> destination (p*H + h)*hd.. */
            memcpy(dst + (size_t)((p * H + h) * hd) * row, src + (size_t)((h * 3 + p) * hd) * row, row * (size_t)hd);
    w->data = dst;
    return PAGODA_OK;
}

/* The layer role that decides fused vs split q/k/v: the fused matrix (fused_qkv, a matrix). */
static const pg_weight_role *fused_qkv_role(void) {
    int n;
    const pg_weight_role *r = model_layer_roles(&n);
    for (int i = 0; i < n; i++)
        if (r[i].fused_qkv && r[i].kind == ROLE_MATRIX) return &r[i];
    return NULL;
}

/* Whether the file has layer l's fused qkv matrix (decides which q/k/v roles apply). */
static bool has_fused_qkv(const loader *L, int l) {
    const pg_weight_role *r = fused_qkv_role();
    const char *fmt = r ? role_name_fmt(r, L->m->format == MODEL_FORMAT_GGUF, L->m->cfg.arch) : NULL;
    if (!fmt) return false;
    char name[256];
    snprintf(name, sizeof name, fmt, l);
    return L->m->format == MODEL_FORMAT_GGUF ? gguf_find_tensor(L->m->gguf, name) != NULL
                                             : st_find(L->m->st, name) != NULL;
}

static pagoda_status load_weights(loader *L) {
    pg_model *m = L->m;
    const pg_model_config *c = &m->cfg;
    pagoda_status st;
    int n;
    const pg_weight_role *roles = model_global_roles(&n);
    for (int i = 0; i < n; i++) {
        const pg_weight_role *r = &roles[i];
        if (!role_applies(r, c, false)) continue;
        pg_weight *w = role_weight(m, r);
        if ((st = get_w(L, w, r, 0))) return st;
        /* tied embeddings, unless config.json says they are not: then the model has no LM head
         * and can only embed */
        if (!w->data && r->tied && c->tie_embeddings != 0) *w = m->tok_embd;
        if (r->kind == ROLE_MATRIX && w->data && !k_matmul_supported(w->dtype))
            return pg_fail(PAGODA_ERR_UNSUPPORTED, "tensor '%s': type %s cannot be used as the %s layer",
                           w->name, dtype_name(w->dtype), r->id);
    }
    roles = model_layer_roles(&n);
    for (int l = 0; l < c->n_layer; l++) {
        bool fused = has_fused_qkv(L, l);
        for (int i = 0; i < n; i++) {
            const pg_weight_role *r = &roles[i];
            if (!role_applies(r, c, fused)) continue;
            pg_weight *w = role_weight(&m->layers[l], r);
            if ((st = get_w(L, w, r, l))) return st;
            if (r->fused_qkv && c->qkv_per_head && w->data && (st = reorder_qkv_rows(L, w, r))) return st;
        }
    }
    return PAGODA_OK;
}

static bool is_dir(const char *p) {
    struct stat s;
    return stat(p, &s) == 0 && S_ISDIR(s.st_mode);
}

pagoda_status model_load(const char *path, pg_model **out) {
    *out = NULL;
    pg_model *m = calloc(1, sizeof *m);
    loader L = {.m = m};
    pagoda_status st;
    if (!m) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    snprintf(m->path, sizeof m->path, "%s", path);
    if (is_dir(path)) {
        m->format = MODEL_FORMAT_HF;
        if ((st = config_from_hf(path, &m->cfg))) goto fail;
        if ((st = st_open(path, &m->st))) goto fail;
        pg_quant_config qc;
        if ((st = quant_config_read(path, &qc))) goto fail;
        if (qc.method != QC_NONE) {
            if (!(m->qc = malloc(sizeof *m->qc))) {
                st = pg_fail(PAGODA_ERR_NOMEM, "out of memory");
                goto fail;
            }
            *m->qc = qc;
        }
        /* HF keeps Q/K rows in rotate_half order */
        if (m->cfg.rope != ROPE_NONE) m->cfg.rope = ROPE_NEOX;
    } else {
        m->format = MODEL_FORMAT_GGUF;
        if ((st = gguf_open(path, &m->gguf))) goto fail;
        if ((st = config_from_gguf(m->gguf, &m->cfg))) goto fail;
    }
    m->layers = calloc((size_t)m->cfg.n_layer, sizeof *m->layers);
    if (!m->layers) {
        st = pg_fail(PAGODA_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((st = load_weights(&L))) goto fail;
    double t_scan = pg_now_s();
    if ((st = model_check_finite(m))) goto fail;
    pg_log(PAGODA_LOG_INFO, "%s: weights checked for NaN/Inf in %.1f ms", path, 1e3 * (pg_now_s() - t_scan));
    if (m->cfg.rope != ROPE_NONE) {
        m->rope_inv_freq = malloc(sizeof(float) * (size_t)(m->cfg.rope_dim / 2));
        if (!m->rope_inv_freq) {
            st = pg_fail(PAGODA_ERR_NOMEM, "out of memory");
            goto fail;
        }
        const float *ff = NULL;
        if (m->gguf) { /* llama3-style scaling is stored as per-frequency divisors */
            const gguf_tensor *t = gguf_find_tensor(m->gguf, "rope_freqs.weight");
            if (t) {
                if (t->dtype != PAGODA_DTYPE_F32 || t->ne[0] != m->cfg.rope_dim / 2) {
                    st = pg_fail(PAGODA_ERR_FORMAT, "tensor 'rope_freqs.weight': expected f32 [%d]", m->cfg.rope_dim / 2);
                    goto fail;
                }
                ff = t->data;
            }
        }
        config_rope_inv_freq(&m->cfg, ff, m->rope_inv_freq);
    }
    /* the model keeps the name strings and converted vectors */
    m->names = L.names, m->n_names = L.n_names;
    m->owned = L.owned, m->n_owned = L.n_owned;
    *out = m;
    return PAGODA_OK;
fail:
    if (strncmp(pagoda_last_error(), path, strlen(path)) != 0) pg_error_prefix("%s: ", path);
    for (int64_t i = 0; i < L.n_names; i++) free(L.names[i]);
    free(L.names);
    for (int64_t i = 0; i < L.n_owned; i++) free(L.owned[i]);
    free(L.owned);
    free(m->layers);
    free(m->rope_inv_freq);
    free(m->qc);
    gguf_close(m->gguf);
    st_close(m->st);
    free(m);
    return st;
}

void model_free(pg_model *m) {
    if (!m) return;
    for (int64_t i = 0; i < m->n_names; i++) free(m->names[i]);
    free(m->names);
    for (int64_t i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    free(m->rope_inv_freq);
    free(m->qc);
    gguf_close(m->gguf);
    st_close(m->st);
    free(m);
}

static uint64_t weight_bytes(const pg_weight *w) {
    if (w->qkind) return qweight_bytes(w);
    size_t row = 0;
    if (!w->data || !dtype_row_size(w->dtype, w->n_in, &row)) return 0;
    return (uint64_t)row * (uint64_t)w->n_out;
}

void model_for_each_weight(const pg_model *m, void (*fn)(const pg_weight *, void *), void *user) {
    int ng, nl;
    const pg_weight_role *g = model_global_roles(&ng), *lr = model_layer_roles(&nl);
    for (int i = 0; i < ng; i++)
        if (g[i].streamed) fn(role_weight_const(m, &g[i]), user);
    for (int l = 0; l < m->cfg.n_layer; l++)
        for (int i = 0; i < nl; i++)
            if (lr[i].streamed) fn(role_weight_const(&m->layers[l], &lr[i]), user);
}

static void add_bytes(const pg_weight *w, void *user) { *(uint64_t *)user += weight_bytes(w); }

uint64_t model_weight_bytes(const pg_model *m) {
    uint64_t b = 0;
    model_for_each_weight(m, add_bytes, &b);
    return b;
}

typedef struct {
    uint64_t done, total;
    void (*progress)(uint64_t done, uint64_t total, void *user);
    void *user;
    volatile uint8_t sink;
} prefault_state;

static void touch(const pg_weight *w, void *user) {
    prefault_state *s = user;
    uint64_t n = weight_bytes(w);
    if (w->qkind) /* only the codes can be in the mapping; the rest is owned memory */
        n = (uint64_t)w->n_out * (uint64_t)(w->qkind == 1 ? w->n_in / 2 : w->n_in);
    const volatile uint8_t *p = w->data;
    for (uint64_t off = 0; off < n; off += 4096) s->sink ^= p[off];
    s->done += n;
    if (s->progress) s->progress(s->done, s->total, s->user);
}

void model_prefault(const pg_model *m, void (*progress)(uint64_t done, uint64_t total, void *user), void *user) {
    prefault_state s = {.total = model_weight_bytes(m), .progress = progress, .user = user};
    model_for_each_weight(m, touch, &s);
}
