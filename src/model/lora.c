/* LoRA adapters: PEFT folders and GGUF LoRA files to f32 A / Bt matrices per (layer, target),
 * checked against the base model. */
#include "model/lora.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/dtype.h"
#include "core/fp16.h"
#include "core/file.h"
#include "core/log.h"
#include "format/gguf.h"
#include "format/safetensors.h"
#include "kernels/kernels.h"

static const char *const k_peft_names[LORA_N_TARGETS] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                          "gate_proj", "up_proj", "down_proj"};
static const char *const k_gguf_names[LORA_N_TARGETS] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                                          "ffn_gate", "ffn_up", "ffn_down"};

const char *lora_target_name(pg_lora_target t) { return t < LORA_N_TARGETS ? k_peft_names[t] : "?"; }

void lora_free(pg_lora *a) {
    if (!a) return;
    if (a->mats)
        for (size_t i = 0; i < (size_t)a->n_layer * LORA_N_TARGETS; i++) free(a->mats[i].A), free(a->mats[i].Bt), free(a->mats[i].A16), free(a->mats[i].Bt16);
    free(a->mats);
    free(a);
}

/* The base model's [n_out][n_in] for a target. */
static void target_shape(const pg_model_config *c, pg_lora_target t, int64_t *n_out, int64_t *n_in) {
    int64_t E = c->n_embd, q = (int64_t)c->n_head * c->head_dim, kv = (int64_t)c->n_head_kv * c->head_dim;
    int64_t F = c->n_ff;
    switch (t) {
    case LORA_Q: *n_out = q, *n_in = E; break;
    case LORA_K:
    case LORA_V: *n_out = kv, *n_in = E; break;
    case LORA_O: *n_out = E, *n_in = q; break;
    case LORA_GATE:
    case LORA_UP: *n_out = F, *n_in = E; break;
    default: *n_out = E, *n_in = F; break;
    }
}

/* A tensor as read from either format: rows x cols of dtype (row-major, cols contiguous). */
typedef struct {
    const char *name;
    int dtype;
    int64_t rows, cols;
    const void *data;
    size_t size;
} src_tensor;

static pagoda_status to_f32(const src_tensor *s, float *out) {
    const k_type_traits *tr = kref_traits(s->dtype);
    size_t row = 0, total = 0;
    if (!tr || !tr->to_float || !dtype_row_size(s->dtype, s->cols, &row))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "adapter tensor %s: type %s (f32, f16, bf16 or a block type with %lld columns)",
                       s->name, dtype_name(s->dtype), (long long)s->cols);
    if (!pg_mul_size(row, (size_t)s->rows, &total) || total > s->size)
        return pg_fail(PAGODA_ERR_FORMAT, "adapter tensor %s: %zu bytes for %lld x %lld of %s", s->name, s->size,
                       (long long)s->rows, (long long)s->cols, dtype_name(s->dtype));
    for (int64_t r = 0; r < s->rows; r++) {
        float *o = out + r * s->cols;
        tr->to_float((const char *)s->data + (size_t)r * row, o, s->cols);
        for (int64_t i = 0; i < s->cols; i++)
            if (!isfinite(o[i]))
                return pg_fail(PAGODA_ERR_FORMAT, "adapter tensor %s: non-finite value at [%lld][%lld]", s->name,
                               (long long)r, (long long)i);
    }
    return PAGODA_OK;
}

/* The row of the other rope layout: llama.cpp's converters reorder each Q/K head's rows
 * [j][i] (HF, halves) to [i][j] (interleaved pairs). to_interleaved: HF -> GGUF. */
static int64_t permuted_row(int64_t r, int64_t head_dim, bool to_interleaved) {
    int64_t h = r / head_dim, k = r % head_dim, half = head_dim / 2;
    if (to_interleaved) return h * head_dim + (k % half) * 2 + k / half; /* HF k = j*half + i -> 2i + j */
    return h * head_dim + (k % 2) * half + k / 2;                         /* GGUF k = 2i + j -> j*half + i */
}

typedef struct {
    const pg_model_config *c;
    pg_lora *a;
    bool permute; /* adapter and base disagree on the Q/K row order */
    bool base_interleaved;
} loader;

/* Stores layer l's target t from A [r][n_in] and B [n_out][r]. */
static pagoda_status set_mat(loader *L, int32_t l, pg_lora_target t, const src_tensor *A, const src_tensor *B, float alpha,
                             float scale_override) {
    const pg_model_config *c = L->c;
    int64_t n_out, n_in;
    target_shape(c, t, &n_out, &n_in);
    if (t == LORA_GATE && !c->gated_ffn)
        return pg_fail(PAGODA_ERR_INVALID, "adapter tensor %s: the base model has no gate projection (not a gated FFN)", A->name);
    int64_t r = A->rows;
    if (r <= 0 || r > 4096 || B->cols != r)
        return pg_fail(PAGODA_ERR_FORMAT, "adapter layer %d %s: rank of %s is %lld but %s has %lld columns", l,
                       k_peft_names[t], A->name, (long long)A->rows, B->name, (long long)B->cols);
    if (A->cols != n_in)
        return pg_fail(PAGODA_ERR_INVALID, "adapter tensor %s: shape [%lld, %lld] but the base model's %s takes %lld inputs "
                       "(expected [%lld, %lld]): an adapter for another base model?", A->name, (long long)A->rows,
                       (long long)A->cols, k_peft_names[t], (long long)n_in, (long long)r, (long long)n_in);
    if (B->rows != n_out)
        return pg_fail(PAGODA_ERR_INVALID, "adapter tensor %s: shape [%lld, %lld] but the base model's %s has %lld outputs "
                       "(expected [%lld, %lld]): an adapter for another base model?", B->name, (long long)B->rows,
                       (long long)B->cols, k_peft_names[t], (long long)n_out, (long long)n_out, (long long)r);
    pg_lora_mat *m = &L->a->mats[(size_t)l * LORA_N_TARGETS + t];
    if (m->rank) return pg_fail(PAGODA_ERR_FORMAT, "adapter: layer %d %s given twice", l, k_peft_names[t]);
    float *b = malloc(sizeof(float) * (size_t)(n_out * r));
    m->A = malloc(sizeof(float) * (size_t)(n_in * r));
    m->Bt = malloc(sizeof(float) * (size_t)(n_out * r));
    if (!b || !m->A || !m->Bt) {
        free(b);
        return pg_fail(PAGODA_ERR_NOMEM, "adapter: out of memory");
    }
    pagoda_status st;
    if ((st = to_f32(A, m->A)) || (st = to_f32(B, b))) {
        free(b);
        return st;
    }
    bool perm = L->permute && (t == LORA_Q || t == LORA_K);
    for (int64_t o = 0; o < n_out; o++) {
        int64_t src = perm ? permuted_row(o, c->head_dim, !L->base_interleaved) : o; /* the file row of base row o */
        for (int64_t k = 0; k < r; k++) m->Bt[k * n_out + o] = b[src * r + k];
    }
    free(b);
    size_t elem = sizeof(float);
    if (A->dtype == PAGODA_DTYPE_F16 && B->dtype == PAGODA_DTYPE_F16) {
        /* stored as halves in the file: kept so (exact), half the bytes the kernel streams */
        m->A16 = malloc(sizeof(uint16_t) * (size_t)(n_in * r));
        m->Bt16 = malloc(sizeof(uint16_t) * (size_t)(n_out * r));
        if (!m->A16 || !m->Bt16) return pg_fail(PAGODA_ERR_NOMEM, "adapter: out of memory");
        for (int64_t i = 0; i < n_in * r; i++) m->A16[i] = pg_fp32_to_fp16(m->A[i]);
        for (int64_t i = 0; i < n_out * r; i++) m->Bt16[i] = pg_fp32_to_fp16(m->Bt[i]);
        free(m->A), free(m->Bt);
        m->A = m->Bt = NULL;
        elem = sizeof(uint16_t);
    }
    m->rank = (int32_t)r, m->n_in = n_in, m->n_out = n_out;
    m->scale = scale_override > 0 ? scale_override : alpha;
    L->a->bytes += elem * (size_t)((n_in + n_out) * r);
    if (m->rank > L->a->max_rank) L->a->max_rank = m->rank;
    L->a->targets |= 1u << t;
    return PAGODA_OK;
}

static pagoda_status loader_init(loader *L, const pg_model_config *c, bool base_interleaved) {
    memset(L, 0, sizeof *L);
    L->c = c, L->base_interleaved = base_interleaved;
    if (c->n_layer <= 0 || c->n_layer > 4096) return pg_fail(PAGODA_ERR_INVALID, "adapter: base model has %d layers", c->n_layer);
    if (!(L->a = calloc(1, sizeof *L->a)) ||
        !(L->a->mats = calloc((size_t)c->n_layer * LORA_N_TARGETS, sizeof(pg_lora_mat)))) {
        free(L->a);
        return pg_fail(PAGODA_ERR_NOMEM, "adapter: out of memory");
    }
    L->a->n_layer = c->n_layer;
    return PAGODA_OK;
}

static pagoda_status loader_finish(loader *L, pagoda_status st, pg_lora **out) {
    if (!st && !L->a->targets) st = pg_fail(PAGODA_ERR_FORMAT, "adapter: no LoRA tensors (lora_A / lora_B or lora_a / lora_b)");
    if (st) {
        lora_free(L->a);
        return st;
    }
    *out = L->a;
    return PAGODA_OK;
}

/* ---- PEFT -------------------------------------------------------------------------------------- */

typedef struct {
    double alpha;
    bool rslora;
    json_t *alpha_pattern; /* object or NULL */
} peft_cfg;

static const char *json_kind(const json_t *v) {
    return !v ? "absent" : json_is_null(v) ? "null" : json_is_string(v) ? "a string" : json_is_array(v) ? "a list" :
           json_is_object(v) ? "an object" : json_is_boolean(v) ? "a boolean" : "a number";
}

static pagoda_status peft_parse_config(json_t *j, peft_cfg *pc) {
    memset(pc, 0, sizeof *pc);
    if (!json_is_object(j)) return pg_fail(PAGODA_ERR_FORMAT, "adapter_config.json: not a JSON object");
    json_t *v = json_object_get(j, "peft_type");
    if (v && (!json_is_string(v) || strcmp(json_string_value(v), "LORA")))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "adapter_config.json: peft_type %s (only LORA)",
                       json_is_string(v) ? json_string_value(v) : json_kind(v));
    v = json_object_get(j, "r");
    if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > 4096)
        return pg_fail(PAGODA_ERR_FORMAT, "adapter_config.json: r must be an integer in [1, 4096]");
    int64_t r = json_integer_value(v);
    v = json_object_get(j, "lora_alpha");
    pc->alpha = json_is_number(v) ? json_number_value(v) : (double)r; /* PEFT's default alpha is 8; be explicit */
    if (!json_is_number(v)) return pg_fail(PAGODA_ERR_FORMAT, "adapter_config.json: lora_alpha must be a number (is %s)", json_kind(v));
    if (!isfinite(pc->alpha)) return pg_fail(PAGODA_ERR_FORMAT, "adapter_config.json: lora_alpha is not finite");
    v = json_object_get(j, "use_rslora");
    pc->rslora = json_is_true(v);
    v = json_object_get(j, "bias");
    if (v && !json_is_null(v) && (!json_is_string(v) || strcmp(json_string_value(v), "none")))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "adapter_config.json: bias %s (only \"none\": pagoda applies no adapter biases)",
                       json_is_string(v) ? json_string_value(v) : json_kind(v));
    if (json_is_true(json_object_get(j, "lora_bias")))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "adapter_config.json: lora_bias true (adapter biases) is not supported");
    if (json_is_true(json_object_get(j, "use_dora")))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "adapter_config.json: use_dora true (DoRA) is not supported");
    if (json_is_true(json_object_get(j, "fan_in_fan_out")))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "adapter_config.json: fan_in_fan_out true (Conv1D bases such as GPT-2) is not supported");
    v = json_object_get(j, "modules_to_save");
    if (v && !json_is_null(v) && !(json_is_array(v) && json_array_size(v) == 0))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "adapter_config.json: modules_to_save is set (fully retrained modules are not "
                       "supported; only LoRA deltas)");
    v = json_object_get(j, "target_modules");
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            if (!json_is_string(e)) return pg_fail(PAGODA_ERR_FORMAT, "adapter_config.json: target_modules[%zu] is not a string", i);
            const char *n = json_string_value(e);
            bool ok = false;
            for (int t = 0; t < LORA_N_TARGETS; t++) ok |= !strcmp(n, k_peft_names[t]);
            if (!ok)
                return pg_fail(PAGODA_ERR_UNSUPPORTED, "adapter_config.json: target module %s (pagoda applies adapters to "
                               "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)", n);
        }
    } else if (v && !json_is_string(v) && !json_is_null(v)) {
        return pg_fail(PAGODA_ERR_FORMAT, "adapter_config.json: target_modules is %s (a list or a regex string)", json_kind(v));
    } /* a regex string: the tensors present say what is targeted; each is checked below */
    v = json_object_get(j, "alpha_pattern");
    if (v && !json_is_null(v) && !json_is_object(v))
        return pg_fail(PAGODA_ERR_FORMAT, "adapter_config.json: alpha_pattern is %s (an object)", json_kind(v));
    pc->alpha_pattern = json_is_object(v) && json_object_size(v) ? v : NULL;
    v = json_object_get(j, "rank_pattern"); /* ranks come from the tensors' shapes, which it sets */
    if (v && !json_is_null(v) && !json_is_object(v))
        return pg_fail(PAGODA_ERR_FORMAT, "adapter_config.json: rank_pattern is %s (an object)", json_kind(v));
    return PAGODA_OK;
}

/* key matches the module path as PEFT's patterns do for plain names: equal, or a suffix after '.' */
static bool suffix_match(const char *module, const char *key) {
    size_t n = strlen(module), k = strlen(key);
    return k <= n && !strcmp(module + n - k, key) && (k == n || module[n - k - 1] == '.');
}

static double peft_alpha(const peft_cfg *pc, const char *module) {
    if (pc->alpha_pattern) {
        const char *key;
        json_t *v;
        json_object_foreach(pc->alpha_pattern, key, v)
            if (json_is_number(v) && suffix_match(module, key)) return json_number_value(v);
    }
    return pc->alpha;
}

/* "....layers.{i}.{...}.{module}.lora_A[.name].weight" -> layer, target, A or B, the module path. */
static pagoda_status peft_name(const char *name, int32_t n_layer, int32_t *layer, pg_lora_target *t, bool *is_a,
                               char *module, size_t module_cap) {
    const char *ab = strstr(name, ".lora_A");
    *is_a = ab != NULL;
    if (!ab) ab = strstr(name, ".lora_B");
    if (strstr(name, "lora_embedding") || strstr(name, "lora_magnitude"))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "adapter tensor %s: embedding adapters / DoRA are not supported", name);
    if (!ab) return pg_fail(PAGODA_ERR_UNSUPPORTED, "adapter tensor %s: not a LoRA A/B matrix (modules_to_save or biases are not supported)", name);
    size_t n = (size_t)(ab - name);
    if (n + 1 > module_cap) return pg_fail(PAGODA_ERR_FORMAT, "adapter tensor %.64s...: name too long", name);
    memcpy(module, name, n), module[n] = 0;
    const char *dot = strrchr(module, '.');
    const char *mod = dot ? dot + 1 : module;
    int tt = -1;
    for (int i = 0; i < LORA_N_TARGETS; i++)
        if (!strcmp(mod, k_peft_names[i])) tt = i;
    if (tt < 0)
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "adapter tensor %s: module %s is not one pagoda applies adapters to "
                       "(q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj; not lm_head / embed_tokens)", name, mod);
    const char *ly = strstr(module, "layers.");
    char *end = NULL;
    long li = ly ? strtol(ly + 7, &end, 10) : -1;
    if (!ly || end == ly + 7 || *end != '.' || li < 0 || li >= n_layer)
        return pg_fail(PAGODA_ERR_INVALID, "adapter tensor %s: no layer index in [0, %d) (an adapter for another base model?)",
                       name, n_layer);
    *layer = (int32_t)li, *t = (pg_lora_target)tt;
    return PAGODA_OK;
}

static pagoda_status st_src(const st_tensor *s, src_tensor *o) {
    if (s->dtype != PAGODA_DTYPE_F32 && s->dtype != PAGODA_DTYPE_F16 && s->dtype != PAGODA_DTYPE_BF16)
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "adapter tensor %s: dtype %s (F32, F16 or BF16)", s->name, s->dtype_str);
    if (s->n_dims != 2) return pg_fail(PAGODA_ERR_FORMAT, "adapter tensor %s: %d dimensions (2)", s->name, s->n_dims);
    *o = (src_tensor){.name = s->name, .dtype = s->dtype, .rows = s->shape[0], .cols = s->shape[1], .data = s->data, .size = s->size};
    return PAGODA_OK;
}

static pagoda_status peft_load(loader *L, json_t *cfg, st_model *sm, float scale) {
    peft_cfg pc;
    pagoda_status st = peft_parse_config(cfg, &pc);
    if (st) return st;
    L->permute = L->base_interleaved; /* PEFT matrices are in Hugging Face row order */
    char module[512];
    for (int64_t i = 0; i < st_n_tensors(sm); i++) {
        const st_tensor *ta = st_tensor_at(sm, i);
        int32_t layer = 0;
        pg_lora_target t = LORA_Q;
        bool is_a = false;
        if ((st = peft_name(ta->name, L->c->n_layer, &layer, &t, &is_a, module, sizeof module))) return st;
        if (!is_a) continue; /* found from its A */
        /* the B of the same module: the name with lora_A -> lora_B */
        char bname[600];
        const char *p = strstr(ta->name, ".lora_A");
        int n = snprintf(bname, sizeof bname, "%.*s.lora_B%s", (int)(p - ta->name), ta->name, p + 7);
        if (n < 0 || (size_t)n >= sizeof bname) return pg_fail(PAGODA_ERR_FORMAT, "adapter tensor %.64s...: name too long", ta->name);
        const st_tensor *tb = st_find(sm, bname);
        if (!tb) return pg_fail(PAGODA_ERR_FORMAT, "adapter: %s has no %s", ta->name, bname);
        src_tensor A, B;
        if ((st = st_src(ta, &A)) || (st = st_src(tb, &B))) return st;
        double alpha = peft_alpha(&pc, module);
        double r = (double)A.rows;
        float s = r > 0 ? (float)(pc.rslora ? alpha / sqrt(r) : alpha / r) : 0;
        if ((st = set_mat(L, layer, t, &A, &B, s, scale))) return st;
    }
    /* every B must have had its A */
    for (int64_t i = 0; i < st_n_tensors(sm); i++) {
        const st_tensor *tb = st_tensor_at(sm, i);
        const char *p = strstr(tb->name, ".lora_B");
        if (!p) continue;
        char aname[600];
        int n = snprintf(aname, sizeof aname, "%.*s.lora_A%s", (int)(p - tb->name), tb->name, p + 7);
        if (n < 0 || (size_t)n >= sizeof aname || !st_find(sm, aname))
            return pg_fail(PAGODA_ERR_FORMAT, "adapter: %s has no lora_A", tb->name);
    }
    return PAGODA_OK;
}

/* ---- GGUF -------------------------------------------------------------------------------------- */

static pagoda_status gguf_src(const gguf_tensor *g, src_tensor *o) {
    if (g->n_dims != 2) return pg_fail(PAGODA_ERR_FORMAT, "adapter tensor %s: %d dimensions (2)", g->name, g->n_dims);
    *o = (src_tensor){.name = g->name, .dtype = g->dtype, .rows = g->ne[1], .cols = g->ne[0], .data = g->data, .size = g->size};
    return PAGODA_OK;
}

static pagoda_status gguf_load_lora(loader *L, gguf_file *g, float scale) {
    const char *type = gguf_get_str(g, "general.type"), *atype = gguf_get_str(g, "adapter.type");
    if (!type || strcmp(type, "adapter"))
        return pg_fail(PAGODA_ERR_INVALID, "GGUF: general.type is %s, not \"adapter\" (a model, not a LoRA?)", type ? type : "absent");
    if (!atype || strcmp(atype, "lora"))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "GGUF adapter: adapter.type is %s (only \"lora\")", atype ? atype : "absent");
    float alpha = 0;
    if (gguf_find_kv(g, "adapter.lora.alpha") && (!gguf_get_f32(g, "adapter.lora.alpha", &alpha) || !isfinite(alpha)))
        return pg_fail(PAGODA_ERR_FORMAT, "GGUF adapter: adapter.lora.alpha is not a finite number");
    /* llama.cpp's converters reorder llama's Q/K rows for interleaved rope */
    const char *arch = gguf_get_str(g, "general.architecture");
    bool interleaved = arch && (!strcmp(arch, "llama") || !strcmp(arch, "mistral") || !strcmp(arch, "granite"));
    L->permute = interleaved != L->base_interleaved;
    pagoda_status st;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *ta = gguf_tensor_at(g, i);
        const char *name = ta->name;
        size_t n = strlen(name);
        bool is_a = n > 7 && !strcmp(name + n - 7, ".lora_a"), is_b = n > 7 && !strcmp(name + n - 7, ".lora_b");
        if (!is_a && !is_b) return pg_fail(PAGODA_ERR_UNSUPPORTED, "GGUF adapter tensor %s: not a lora_a / lora_b matrix", name);
        int li = -1, consumed = 0;
        char role[32] = {0};
        if (sscanf(name, "blk.%d.%31[^.].weight%n", &li, role, &consumed) != 2 || (size_t)consumed != n - 7)
            return pg_fail(PAGODA_ERR_UNSUPPORTED, "GGUF adapter tensor %s: pagoda applies adapters to blk.N.{attn_q, attn_k, "
                           "attn_v, attn_output, ffn_gate, ffn_up, ffn_down} (not token_embd / output)", name);
        int tt = -1;
        for (int k = 0; k < LORA_N_TARGETS; k++)
            if (!strcmp(role, k_gguf_names[k])) tt = k;
        if (tt < 0) return pg_fail(PAGODA_ERR_UNSUPPORTED, "GGUF adapter tensor %s: role %s is not one pagoda adapts", name, role);
        if (li < 0 || li >= L->c->n_layer)
            return pg_fail(PAGODA_ERR_INVALID, "GGUF adapter tensor %s: layer %d of a %d-layer base model", name, li, L->c->n_layer);
        char other[160];
        snprintf(other, sizeof other, "%.*s.lora_%c", (int)(n - 7), name, is_a ? 'b' : 'a');
        const gguf_tensor *tb = gguf_find_tensor(g, other);
        if (!tb) return pg_fail(PAGODA_ERR_FORMAT, "GGUF adapter: %s has no %s", name, other);
        if (!is_a) continue;
        src_tensor A, B;
        if ((st = gguf_src(ta, &A)) || (st = gguf_src(tb, &B))) return st;
        float s = A.rows > 0 ? (alpha != 0 ? alpha / (float)A.rows : 1.0f) : 0; /* llama.cpp: no alpha = scale 1 */
        if ((st = set_mat(L, li, (pg_lora_target)tt, &A, &B, s, scale))) return st;
    }
    return PAGODA_OK;
}

/* ---- entry points ------------------------------------------------------------------------------- */

static bool base_is_interleaved(const pg_model *m) { return m->format == MODEL_FORMAT_GGUF && m->cfg.rope == ROPE_NORMAL; }

pagoda_status lora_load_memory(const pg_model_config *c, bool base_interleaved, const char *config_json, const void *data,
                               size_t size, bool gguf, float scale, pg_lora **out) {
    *out = NULL;
    if (!(scale >= 0) || !isfinite(scale)) return pg_fail(PAGODA_ERR_INVALID, "adapter scale %g (0: from the file, or > 0)", scale);
    loader L;
    pagoda_status st = loader_init(&L, c, base_interleaved);
    if (st) return st;
    if (gguf) {
        gguf_file *g = NULL;
        if (!(st = gguf_open_memory(data, size, &g))) st = gguf_load_lora(&L, g, scale);
        gguf_close(g);
    } else {
        json_error_t je;
        json_t *j = config_json ? json_loads(config_json, JSON_REJECT_DUPLICATES, &je) : NULL;
        st_model *sm = NULL;
        if (!j) st = pg_fail(PAGODA_ERR_FORMAT, "adapter_config.json: %s", config_json ? je.text : "absent");
        else if (!(st = st_open_memory(data, size, &sm))) st = peft_load(&L, j, sm, scale);
        st_close(sm);
        json_decref(j);
    }
    strcpy(L.a->source, gguf ? "gguf" : "peft");
    return loader_finish(&L, st, out);
}

pagoda_status lora_load(const pg_model *m, const char *path, float scale, pg_lora **out) {
    *out = NULL;
    if (!path || !*path) return pg_fail(PAGODA_ERR_INVALID, "adapter: no path");
    if (!(scale >= 0) || !isfinite(scale)) return pg_fail(PAGODA_ERR_INVALID, "adapter scale %g (0: from the file, or > 0)", scale);
    struct stat sb;
    if (stat(path, &sb)) return pg_fail(PAGODA_ERR_IO, "adapter %s: %s", path, strerror(errno));
    size_t n = strlen(path);
    bool gguf = !S_ISDIR(sb.st_mode) && n > 5 && !strcmp(path + n - 5, ".gguf");
    loader L;
    pagoda_status st = loader_init(&L, &m->cfg, base_is_interleaved(m));
    if (st) return st;
    strcpy(L.a->source, gguf ? "gguf" : "peft");
    if (gguf) {
        gguf_file *g = NULL;
        if (!(st = gguf_open(path, &g))) st = gguf_load_lora(&L, g, scale);
        gguf_close(g);
    } else {
        char dir[1024], p[1100];
        snprintf(dir, sizeof dir, "%s", path);
        if (!S_ISDIR(sb.st_mode)) { /* adapter_config.json itself: its folder */
            char *sl = strrchr(dir, '/');
            if (sl) *sl = 0; else strcpy(dir, ".");
        }
        char *cfg = NULL;
        size_t len = 0;
        st_model *sm = NULL;
        json_t *j = NULL;
        snprintf(p, sizeof p, "%s/adapter_config.json", dir);
        if (!(st = pg_read_file(p, 1 << 20, &cfg, &len))) {
            json_error_t je;
            if (!(j = json_loadb(cfg, len, JSON_REJECT_DUPLICATES, &je)))
                st = pg_fail(PAGODA_ERR_FORMAT, "%s: line %d: %s", p, je.line, je.text);
        }
        snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
        if (!st && !(st = st_open(p, &sm))) st = peft_load(&L, j, sm, scale);
        if (st) pg_error_prefix("adapter %s: ", dir);
        st_close(sm), json_decref(j), free(cfg);
    }
    if (st && gguf) pg_error_prefix("adapter %s: ", path);
    return loader_finish(&L, st, out);
}
