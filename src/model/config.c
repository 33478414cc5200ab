#include "model/config.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/file.h"
#include "core/log.h"
#include "model/pooling.h"

const char *arch_name(pg_arch a) {
    switch (a) {
    case ARCH_LLAMA: return "llama";
    case ARCH_QWEN2: return "qwen2";
    case ARCH_QWEN3: return "qwen3";
    case ARCH_STARCODER2: return "starcoder2";
    case ARCH_GPT_BIGCODE: return "gpt_bigcode";
    }
    return "?";
}

/* Architecture features that follow from the family alone. */
static void set_arch_defaults(pg_model_config *c, pg_arch a) {
    c->arch = a;
    c->layernorm = (a == ARCH_STARCODER2 || a == ARCH_GPT_BIGCODE);
    c->gated_ffn = !c->layernorm;
    c->learned_pos = (a == ARCH_GPT_BIGCODE);
    c->qk_norm = (a == ARCH_QWEN3);
    c->rope = c->learned_pos ? ROPE_NONE : ROPE_NEOX;
    snprintf(c->rope_scaling, sizeof c->rope_scaling, "none");
    c->rope_factor = 1.0f;
    c->bos_id = c->eos_id = -1;
}

/* The names a source gives the fields check_config validates, so an error names the key the
 * user would look for ("llama.rope.freq_base", "rope_theta"); prefix goes before each. */
typedef struct {
    const char *prefix;
    const char *n_embd, *n_layer, *n_head, *n_head_kv, *head_dim, *n_ff, *n_vocab, *n_ctx, *norm_eps, *rope_theta,
        *rope_dim, *sliding_window;
} cfg_keys;

static pagoda_status bad_int(const char *src, const cfg_keys *k, const char *key, int32_t v, const char *want) {
    if (v == 0) return pg_fail(PAGODA_ERR_FORMAT, "%s: %s%s is missing or 0 (must be %s)", src, k->prefix, key, want);
    return pg_fail(PAGODA_ERR_FORMAT, "%s: %s%s = %d (must be %s)", src, k->prefix, key, v, want);
}

static bool finite_positive(float v) { return v > 0 && isfinite(v); }

/* Shapes every architecture must have, checked once for both sources. A value that would make
 * the model compute nothing (a zero count, a zero, NaN or infinite rope base or norm epsilon)
 * is refused with the field's name rather than replaced. */
static pagoda_status check_config(pg_model_config *c, const char *src, const cfg_keys *k) {
    const struct { const char *key; int32_t v, max; } counts[] = {
        {k->n_embd, c->n_embd, 1 << 20}, {k->n_layer, c->n_layer, 4096}, {k->n_head, c->n_head, 4096},
        {k->n_ff, c->n_ff, 1 << 22},     {k->n_vocab, c->n_vocab, 1 << 24},
    };
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        if (counts[i].v <= 0) return bad_int(src, k, counts[i].key, counts[i].v, "a positive integer");
        if (counts[i].v > counts[i].max)
            return pg_fail(PAGODA_ERR_FORMAT, "%s: %s%s = %d is out of any sane range (at most %d)", src, k->prefix,
                           counts[i].key, counts[i].v, counts[i].max);
    }
    if (c->n_head_kv < 0) return bad_int(src, k, k->n_head_kv, c->n_head_kv, "a positive divisor of the head count");
    if (c->n_head_kv == 0) c->n_head_kv = c->n_head;
    if (c->head_dim <= 0) {
        if (c->n_embd % c->n_head)
            return pg_fail(PAGODA_ERR_FORMAT, "%s: %s%s = %d is not divisible by %s%s = %d", src, k->prefix, k->n_embd,
                           c->n_embd, k->prefix, k->n_head, c->n_head);
        c->head_dim = c->n_embd / c->n_head;
    }
    if (c->n_head % c->n_head_kv)
        return pg_fail(PAGODA_ERR_FORMAT, "%s: %s%s = %d is not a multiple of %s%s = %d", src, k->prefix, k->n_head,
                       c->n_head, k->prefix, k->n_head_kv, c->n_head_kv);
    if (c->head_dim > 1024 || c->head_dim % 2)
        return pg_fail(PAGODA_ERR_FORMAT, "%s: head dimension %d unsupported (%s%s; even, at most 1024)", src,
                       c->head_dim, k->prefix, k->head_dim);
    if (c->rope != ROPE_NONE) {
        if (c->rope_dim < 0) return bad_int(src, k, k->rope_dim, c->rope_dim, "positive");
        if (c->rope_dim == 0) c->rope_dim = c->head_dim;
        if (c->rope_dim > c->head_dim || c->rope_dim % 2)
            return pg_fail(PAGODA_ERR_FORMAT, "%s: rope dimension %d invalid for head_dim %d (%s%s)", src, c->rope_dim,
                           c->head_dim, k->prefix, k->rope_dim);
        if (!finite_positive(c->rope_theta))
            return pg_fail(PAGODA_ERR_FORMAT, "%s: %s%s = %g (must be a finite number > 0)", src, k->prefix,
                           k->rope_theta, c->rope_theta);
    }
    if (!finite_positive(c->norm_eps))
        return pg_fail(PAGODA_ERR_FORMAT, "%s: %s%s = %g (must be a finite number > 0)", src, k->prefix, k->norm_eps,
                       c->norm_eps);
    if (c->n_ctx_train < 0) return bad_int(src, k, k->n_ctx, c->n_ctx_train, "positive");
    if (c->n_ctx_train == 0) c->n_ctx_train = 2048;
    if (c->learned_pos && c->n_ctx_train > (1 << 20))
        return pg_fail(PAGODA_ERR_FORMAT, "%s: %s%s = %d: context length too large", src, k->prefix, k->n_ctx,
                       c->n_ctx_train);
    if (c->sliding_window < 0) return bad_int(src, k, k->sliding_window, c->sliding_window, "0 (none) or positive");
    return PAGODA_OK;
}

/* ---- GGUF ---- */

static int32_t gguf_i32(const gguf_file *f, const char *arch, const char *suffix, int32_t dflt) {
    char key[128];
    int64_t v;
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (!gguf_get_i64(f, key, &v) || v < INT32_MIN || v > INT32_MAX) return dflt;
    return (int32_t)v;
}

static float gguf_f32(const gguf_file *f, const char *arch, const char *suffix, float dflt) {
    char key[128];
    float v;
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return gguf_get_f32(f, key, &v) ? v : dflt;
}

/* A hyperparameter key that is present but not a number in range would otherwise read as
 * missing and get its default: refuse it instead. */
static pagoda_status gguf_check_types(const gguf_file *f, const char *arch) {
    static const char *const ints[] = {"embedding_length", "block_count", "feed_forward_length",
                                       "attention.head_count", "attention.head_count_kv", "attention.key_length",
                                       "context_length", "rope.dimension_count", "attention.sliding_window",
                                       "vocab_size"};
    static const char *const floats[] = {"attention.layer_norm_epsilon", "attention.layer_norm_rms_epsilon",
                                         "rope.freq_base", "rope.scaling.factor"};
    char key[128];
    for (size_t i = 0; i < sizeof ints / sizeof ints[0] + sizeof floats / sizeof floats[0]; i++) {
        bool is_int = i < sizeof ints / sizeof ints[0];
        snprintf(key, sizeof key, "%s.%s", arch, is_int ? ints[i] : floats[i - sizeof ints / sizeof ints[0]]);
        const gguf_kv *kv = gguf_find_kv(f, key);
        int64_t v;
        float x;
        if (!kv || (is_int ? gguf_get_i64(f, key, &v) && v >= INT32_MIN && v <= INT32_MAX : gguf_get_f32(f, key, &x)))
            continue;
        return pg_fail(PAGODA_ERR_FORMAT, "gguf metadata: %s has type %s%s (expected %s)", key, gguf_type_name(kv->type),
                       is_int && kv->type != GGUF_TYPE_ARRAY && kv->type != GGUF_TYPE_STRING ? " out of range" : "",
                       is_int ? "a 32-bit integer" : "a float");
    }
    return PAGODA_OK;
}

pagoda_status config_from_gguf(const gguf_file *f, pg_model_config *c) {
    memset(c, 0, sizeof *c);
    const char *arch = gguf_get_str(f, "general.architecture");
    if (!arch) return pg_fail(PAGODA_ERR_FORMAT, "missing key general.architecture");
    static const struct { const char *name; pg_arch arch; pg_rope_layout rope; } k_archs[] = {
        {"llama", ARCH_LLAMA, ROPE_NORMAL}, {"mistral", ARCH_LLAMA, ROPE_NORMAL},
        {"qwen2", ARCH_QWEN2, ROPE_NEOX},   {"qwen3", ARCH_QWEN3, ROPE_NEOX},
        {"starcoder2", ARCH_STARCODER2, ROPE_NEOX}, {"starcoder", ARCH_GPT_BIGCODE, ROPE_NONE},
    };
    size_t i;
    for (i = 0; i < sizeof k_archs / sizeof k_archs[0]; i++)
        if (!strcmp(arch, k_archs[i].name)) break;
    if (i == sizeof k_archs / sizeof k_archs[0])
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "architecture '%s' is not supported (supported: llama, mistral, "
                       "qwen2, qwen3, starcoder2, starcoder)", arch);
    set_arch_defaults(c, k_archs[i].arch);
    c->rope = k_archs[i].rope; /* GGUF converters permute llama Q/K rows for the interleaved layout */
    snprintf(c->arch_name, sizeof c->arch_name, "%s", arch);

    pagoda_status st = gguf_check_types(f, arch);
    if (st) return st;
    c->n_embd = gguf_i32(f, arch, "embedding_length", 0);
    c->n_layer = gguf_i32(f, arch, "block_count", 0);
    c->n_ff = gguf_i32(f, arch, "feed_forward_length", 0);
    c->n_head = gguf_i32(f, arch, "attention.head_count", 0);
    c->n_head_kv = gguf_i32(f, arch, "attention.head_count_kv", 0);
    c->head_dim = gguf_i32(f, arch, "attention.key_length", 0);
    c->n_ctx_train = gguf_i32(f, arch, "context_length", 0);
    c->norm_eps = c->layernorm ? gguf_f32(f, arch, "attention.layer_norm_epsilon", 1e-5f)
                               : gguf_f32(f, arch, "attention.layer_norm_rms_epsilon", 1e-5f);
    c->rope_theta = gguf_f32(f, arch, "rope.freq_base", 10000.0f);
    c->rope_dim = gguf_i32(f, arch, "rope.dimension_count", 0);
    c->sliding_window = gguf_i32(f, arch, "attention.sliding_window", 0);

    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    const char *scaling = gguf_get_str(f, key);
    if (scaling && strcmp(scaling, "none")) {
        if (strcmp(scaling, "linear"))
            return pg_fail(PAGODA_ERR_UNSUPPORTED, "%s = '%s' is not supported (linear only)", key, scaling);
        snprintf(c->rope_scaling, sizeof c->rope_scaling, "linear");
        c->rope_factor = gguf_f32(f, arch, "rope.scaling.factor", 1.0f);
        if (!finite_positive(c->rope_factor))
            return pg_fail(PAGODA_ERR_FORMAT, "gguf metadata: %s.rope.scaling.factor = %g (must be a finite number > 0)",
                           arch, c->rope_factor);
    }

    /* vocab: explicit key, else the token list, else the embedding rows */
    c->n_vocab = gguf_i32(f, arch, "vocab_size", 0);
    const gguf_kv *toks = gguf_find_kv(f, "tokenizer.ggml.tokens");
    if (c->n_vocab <= 0 && toks && toks->type == GGUF_TYPE_ARRAY && toks->arr_n < (1u << 24))
        c->n_vocab = (int32_t)toks->arr_n;
    const gguf_tensor *emb = gguf_find_tensor(f, "token_embd.weight");
    if (c->n_vocab <= 0 && emb && emb->ne[1] < (1 << 24)) c->n_vocab = (int32_t)emb->ne[1];
    uint32_t u;
    if (gguf_get_u32(f, "tokenizer.ggml.bos_token_id", &u) && u < (uint32_t)INT32_MAX) c->bos_id = (int32_t)u;
    if (gguf_get_u32(f, "tokenizer.ggml.eos_token_id", &u) && u < (uint32_t)INT32_MAX) c->eos_id = (int32_t)u;
    char prefix[48];
    snprintf(prefix, sizeof prefix, "%.40s.", arch);
    const cfg_keys keys = {prefix, "embedding_length", "block_count", "attention.head_count",
                           "attention.head_count_kv", "attention.key_length", "feed_forward_length", "vocab_size",
                           "context_length", c->layernorm ? "attention.layer_norm_epsilon" : "attention.layer_norm_rms_epsilon",
                           "rope.freq_base", "rope.dimension_count", "attention.sliding_window"};
    c->tie_embeddings = -1;
    if ((st = pooling_from_gguf(f, arch, c))) return st;
    return check_config(c, "gguf metadata", &keys);
}

/* ---- Hugging Face config.json ---- */

static int32_t json_i32(json_t *o, const char *key, int32_t dflt) {
    json_t *v = json_object_get(o, key);
    if (json_is_integer(v) && json_integer_value(v) >= INT32_MIN && json_integer_value(v) <= INT32_MAX)
        return (int32_t)json_integer_value(v);
    if (json_is_array(v) && json_array_size(v) > 0 && json_is_integer(json_array_get(v, 0)))
        return (int32_t)json_integer_value(json_array_get(v, 0)); /* eos_token_id: [a, b] */
    return dflt;
}

static float json_f32(json_t *o, const char *key, float dflt) {
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? (float)json_number_value(v) : dflt;
}

/* Present (and not null) but not a number, or an integer out of range: refused rather than
 * read as missing. */
static pagoda_status hf_check_types(json_t *o, const char *where, const char *const *ints, size_t n_ints,
                                    const char *const *floats, size_t n_floats) {
    for (size_t i = 0; i < n_ints + n_floats; i++) {
        const char *k = i < n_ints ? ints[i] : floats[i - n_ints];
        json_t *v = json_object_get(o, k);
        if (!v || json_is_null(v)) continue;
        if (i < n_ints ? json_is_integer(v) && json_integer_value(v) >= INT32_MIN && json_integer_value(v) <= INT32_MAX
                       : json_is_number(v))
            continue;
        return pg_fail(PAGODA_ERR_FORMAT, "%s: %s must be %s", where, k,
                       i < n_ints ? "an integer (32-bit)" : "a number");
    }
    return PAGODA_OK;
}

static pagoda_status hf_rope(json_t *root, pg_model_config *c) {
    /* transformers >= 5 groups rope settings in rope_parameters; older files use rope_theta
     * at the top level and rope_scaling. */
    json_t *rp = json_object_get(root, "rope_parameters");
    if (!json_is_object(rp)) rp = json_object_get(root, "rope_scaling");
    c->rope_theta = json_f32(root, "rope_theta", 10000.0f);
    float partial = json_f32(root, "partial_rotary_factor", 1.0f);
    if (!json_is_object(rp)) goto done;
    static const char *const rp_floats[] = {"rope_theta", "partial_rotary_factor", "factor", "low_freq_factor",
                                            "high_freq_factor"};
    static const char *const rp_ints[] = {"original_max_position_embeddings"};
    pagoda_status st = hf_check_types(rp, "config.json: rope parameters", rp_ints, 1, rp_floats,
                                      sizeof rp_floats / sizeof rp_floats[0]);
    if (st) return st;
    c->rope_theta = json_f32(rp, "rope_theta", c->rope_theta);
    partial = json_f32(rp, "partial_rotary_factor", partial);
    const char *type = json_string_value(json_object_get(rp, "rope_type"));
    if (!type) type = json_string_value(json_object_get(rp, "type"));
    if (!type || !strcmp(type, "default")) goto done;
    c->rope_factor = json_f32(rp, "factor", 1.0f);
    if (!finite_positive(c->rope_factor))
        return pg_fail(PAGODA_ERR_FORMAT, "config.json: rope scaling factor = %g (must be a finite number > 0)",
                       c->rope_factor);
    if (!strcmp(type, "linear")) {
        snprintf(c->rope_scaling, sizeof c->rope_scaling, "linear");
    } else if (!strcmp(type, "llama3")) {
        snprintf(c->rope_scaling, sizeof c->rope_scaling, "llama3");
        c->rope_low_freq = json_f32(rp, "low_freq_factor", 1.0f);
        c->rope_high_freq = json_f32(rp, "high_freq_factor", 4.0f);
        c->rope_orig_ctx = json_i32(rp, "original_max_position_embeddings", 8192);
        if (!(c->rope_high_freq > c->rope_low_freq) || !finite_positive(c->rope_low_freq) ||
            !isfinite(c->rope_high_freq) || c->rope_orig_ctx <= 0)
            return pg_fail(PAGODA_ERR_FORMAT, "config.json: llama3 rope scaling needs finite 0 < low_freq_factor < "
                           "high_freq_factor and original_max_position_embeddings > 0 (got %g, %g, %d)",
                           c->rope_low_freq, c->rope_high_freq, c->rope_orig_ctx);
    } else {
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "config.json: rope_type '%s' is not supported (default, linear, llama3)", type);
    }
done:
    if (partial > 0 && partial < 1) c->rope_dim = ((int32_t)(c->head_dim * partial)) & ~1;
    return PAGODA_OK;
}

pagoda_status config_from_hf(const char *dir, pg_model_config *c) {
    memset(c, 0, sizeof *c);
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_error_t jerr;
    /* config.json is small; a cap keeps a hostile file from eating memory */
    char *buf;
    size_t n;
    pagoda_status rst = pg_read_file(path, 1 << 20, &buf, &n);
    if (rst) return rst;
    json_t *root = json_loadb(buf, n, 0, &jerr);
    free(buf);
    if (!root) return pg_fail(PAGODA_ERR_FORMAT, "%s: line %d: %s", path, jerr.line, jerr.text);
    pagoda_status st = PAGODA_OK;
    if (!json_is_object(root)) {
        st = pg_fail(PAGODA_ERR_FORMAT, "%s: not a JSON object", path);
        goto out;
    }
    const char *mt = json_string_value(json_object_get(root, "model_type"));
    static const struct { const char *name; pg_arch arch; } k_types[] = {
        {"llama", ARCH_LLAMA}, {"mistral", ARCH_LLAMA}, {"qwen2", ARCH_QWEN2}, {"qwen3", ARCH_QWEN3},
        {"starcoder2", ARCH_STARCODER2}, {"gpt_bigcode", ARCH_GPT_BIGCODE},
    };
    size_t i = 0;
    for (; mt && i < sizeof k_types / sizeof k_types[0]; i++)
        if (!strcmp(mt, k_types[i].name)) break;
    if (!mt || i == sizeof k_types / sizeof k_types[0]) {
        st = pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: model_type '%s' is not supported (llama, mistral, qwen2, qwen3, "
                     "starcoder2, gpt_bigcode)", path, mt ? mt : "(missing)");
        goto out;
    }
    static const char *const ints[] = {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                       "num_key_value_heads", "head_dim", "intermediate_size",
                                       "max_position_embeddings", "sliding_window", "n_embd", "n_layer", "n_head",
                                       "n_inner", "n_positions"};
    static const char *const floats[] = {"rms_norm_eps", "norm_epsilon", "layer_norm_epsilon", "rope_theta",
                                         "partial_rotary_factor"};
    if ((st = hf_check_types(root, path, ints, sizeof ints / sizeof ints[0], floats, sizeof floats / sizeof floats[0])))
        goto out;
    set_arch_defaults(c, k_types[i].arch);
    snprintf(c->arch_name, sizeof c->arch_name, "%s", mt);
    c->n_vocab = json_i32(root, "vocab_size", 0);
    if (c->arch == ARCH_GPT_BIGCODE) {
        c->n_embd = json_i32(root, "n_embd", 0);
        c->n_layer = json_i32(root, "n_layer", 0);
        c->n_head = json_i32(root, "n_head", 0);
        /* multi_query (the default, and every StarCoder): one k/v head, c_attn rows q | k | v.
         * Without it: n_head k/v heads and c_attn rows [n_head][q, k, v][head_dim]
         * (transformers' GPTBigCodeAttention views them as (n_head, 3 * head_dim)). */
        json_t *mq = json_object_get(root, "multi_query");
        if (mq && !json_is_boolean(mq)) {
            st = pg_fail(PAGODA_ERR_FORMAT, "%s: multi_query must be true or false", path);
            goto out;
        }
        bool multi_query = !mq || json_is_true(mq);
        c->n_head_kv = multi_query ? 1 : c->n_head;
        c->qkv_per_head = !multi_query;
        c->n_ff = json_i32(root, "n_inner", 4 * c->n_embd);
        c->n_ctx_train = json_i32(root, "n_positions", 0);
        c->norm_eps = json_f32(root, "layer_norm_epsilon", 1e-5f);
        const char *act = json_string_value(json_object_get(root, "activation_function"));
        if (act && strcmp(act, "gelu_pytorch_tanh") && strcmp(act, "gelu_new") && strcmp(act, "gelu_fast")) {
            st = pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: activation_function '%s' is not supported (tanh GELU only)", path, act);
            goto out;
        }
    } else {
        c->n_embd = json_i32(root, "hidden_size", 0);
        c->n_layer = json_i32(root, "num_hidden_layers", 0);
        c->n_head = json_i32(root, "num_attention_heads", 0);
        c->n_head_kv = json_i32(root, "num_key_value_heads", c->n_head);
        c->head_dim = json_i32(root, "head_dim", 0);
        c->n_ff = json_i32(root, "intermediate_size", 0);
        c->n_ctx_train = json_i32(root, "max_position_embeddings", 0);
        c->norm_eps = c->layernorm ? json_f32(root, "norm_epsilon", 1e-5f) : json_f32(root, "rms_norm_eps", 1e-6f);
        c->sliding_window = json_i32(root, "sliding_window", 0);
        if (c->arch != ARCH_LLAMA && !json_is_true(json_object_get(root, "use_sliding_window")) &&
            c->arch != ARCH_STARCODER2)
            c->sliding_window = 0; /* qwen2/3 carry a window they do not use unless asked */
        const char *act = json_string_value(json_object_get(root, "hidden_act"));
        const char *want = c->gated_ffn ? "silu" : "gelu_pytorch_tanh";
        if (act && strcmp(act, want) && !(c->gated_ffn == false && !strcmp(act, "gelu_new"))) {
            st = pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: hidden_act '%s' is not supported for %s (%s)", path, act, mt, want);
            goto out;
        }
        /* (check_config refuses a hidden size the heads do not divide) */
        if (c->head_dim <= 0 && c->n_head > 0 && c->n_embd % c->n_head == 0) c->head_dim = c->n_embd / c->n_head;
        if ((st = hf_rope(root, c))) goto out;
    }
    c->bos_id = json_i32(root, "bos_token_id", -1);
    c->eos_id = json_i32(root, "eos_token_id", -1);
    static const cfg_keys k_hf = {"", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                                  "head_dim", "intermediate_size", "vocab_size", "max_position_embeddings",
                                  "rms_norm_eps", "rope_theta", "partial_rotary_factor", "sliding_window"};
    static const cfg_keys k_bigcode = {"", "n_embd", "n_layer", "n_head", "n_head", "head_dim", "n_inner", "vocab_size",
                                       "n_positions", "layer_norm_epsilon", "rope_theta", "rope", "sliding_window"};
    cfg_keys keys = c->arch == ARCH_GPT_BIGCODE ? k_bigcode : k_hf;
    if (c->layernorm && c->arch != ARCH_GPT_BIGCODE) keys.norm_eps = "norm_epsilon";
    json_t *tie = json_object_get(root, "tie_word_embeddings");
    c->tie_embeddings = json_is_boolean(tie) ? json_is_true(tie) : -1;
    if ((st = pooling_from_hf(dir, c))) goto out;
    st = check_config(c, path, &keys);
out:
    json_decref(root);
    return st;
}

void config_rope_inv_freq(const pg_model_config *c, const float *freq_factors, float *inv_freq) {
    int n = c->rope_dim / 2;
    for (int i = 0; i < n; i++) {
        /* float32 exponent like the references (HF: base ** (arange(0, dim, 2) / dim)) */
        float f = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)c->rope_dim);
        if (!strcmp(c->rope_scaling, "linear")) {
            f /= c->rope_factor;
        } else if (!strcmp(c->rope_scaling, "llama3")) {
            float low_wl = (float)c->rope_orig_ctx / c->rope_low_freq;
            float high_wl = (float)c->rope_orig_ctx / c->rope_high_freq;
            float wl = 2.0f * (float)M_PI / f;
            if (wl > low_wl) {
                f /= c->rope_factor;
            } else if (wl >= high_wl) {
                float smooth = ((float)c->rope_orig_ctx / wl - c->rope_low_freq) / (c->rope_high_freq - c->rope_low_freq);
                f = (1.0f - smooth) * f / c->rope_factor + smooth * f;
            }
        }
        if (freq_factors) f /= freq_factors[i];
        inv_freq[i] = f;
    }
}
