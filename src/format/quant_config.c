/* quantization_config: GPTQ (GPTQModel, AutoGPTQ), AWQ (AutoAWQ GEMM) and compressed-tensors
 * (llm-compressor) as their config.json / quantize_config.json spell them. */
#include "format/quant_config.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/file.h"
#include "core/log.h"

const char *quant_method_name(qc_method m) {
    switch (m) {
    case QC_GPTQ: return "gptq";
    case QC_AWQ: return "awq";
    case QC_CT: return "compressed-tensors";
    default: return "none";
    }
}

/* Optional integer field in [lo, hi]; absent or null leaves *v. */
static pagoda_status get_int(json_t *o, const char *where, const char *key, int64_t lo, int64_t hi, int64_t *v) {
    json_t *x = json_object_get(o, key);
    if (!x || json_is_null(x)) return PAGODA_OK;
    if (!json_is_integer(x) || json_integer_value(x) < lo || json_integer_value(x) > hi)
        return pg_fail(PAGODA_ERR_FORMAT, "%s: '%s' must be an integer in [%lld, %lld]", where, key, (long long)lo,
                       (long long)hi);
    *v = json_integer_value(x);
    return PAGODA_OK;
}

static pagoda_status get_bool(json_t *o, const char *where, const char *key, bool *v) {
    json_t *x = json_object_get(o, key);
    if (!x || json_is_null(x)) return PAGODA_OK;
    if (!json_is_boolean(x)) return pg_fail(PAGODA_ERR_FORMAT, "%s: '%s' must be true or false", where, key);
    *v = json_is_true(x);
    return PAGODA_OK;
}

/* Optional string field; absent or null: NULL. */
static pagoda_status get_str(json_t *o, const char *where, const char *key, const char **v) {
    json_t *x = json_object_get(o, key);
    *v = NULL;
    if (!x || json_is_null(x)) return PAGODA_OK;
    if (!json_is_string(x)) return pg_fail(PAGODA_ERR_FORMAT, "%s: '%s' must be a string", where, key);
    *v = json_string_value(x);
    return PAGODA_OK;
}

/* A list of module names / "re:" patterns (a single string counts as a list of one). */
static pagoda_status get_names(json_t *o, const char *where, const char *key, char (*dst)[QC_NAME_LEN], int *n) {
    json_t *x = json_object_get(o, key);
    *n = 0;
    if (!x || json_is_null(x)) return PAGODA_OK;
    json_t *one = json_is_string(x) ? x : NULL;
    if (!one && !json_is_array(x)) return pg_fail(PAGODA_ERR_FORMAT, "%s: '%s' must be a list of strings", where, key);
    size_t cnt = one ? 1 : json_array_size(x);
    if (cnt > QC_MAX_NAMES)
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: '%s' has %zu entries (at most %d)", where, key, cnt, QC_MAX_NAMES);
    for (size_t i = 0; i < cnt; i++) {
        json_t *s = one ? one : json_array_get(x, i);
        if (!json_is_string(s)) return pg_fail(PAGODA_ERR_FORMAT, "%s: '%s'[%zu] must be a string", where, key, i);
        if (json_string_length(s) >= QC_NAME_LEN || strlen(json_string_value(s)) != json_string_length(s))
            return pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: '%s'[%zu] is longer than %d bytes or holds a NUL", where, key, i,
                           QC_NAME_LEN - 1);
        snprintf(dst[i], QC_NAME_LEN, "%s", json_string_value(s));
        if (!strncmp(dst[i], "re:", 3)) { /* compile once now: a bad pattern is the config's error */
            int err;
            PCRE2_SIZE off;
            pcre2_code *re = pcre2_compile((PCRE2_SPTR)(dst[i] + 3), PCRE2_ZERO_TERMINATED, PCRE2_UTF, &err, &off, NULL);
            if (!re) return pg_fail(PAGODA_ERR_FORMAT, "%s: '%s'[%zu]: bad regular expression at offset %zu", where, key, i,
                                    (size_t)off);
            pcre2_code_free(re);
        }
        (*n)++;
    }
    return PAGODA_OK;
}

/* A bits/group/sym triple that every method shares. */
static pagoda_status check_bits(const char *where, int64_t bits, bool allow8) {
    if (bits == 4 || (allow8 && bits == 8)) return PAGODA_OK;
    return pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: %lld-bit weights are not supported (4%s)", where, (long long)bits,
                   allow8 ? " or 8" : "");
}

static pagoda_status parse_gptq(json_t *q, const char *where, pg_quant_config *c) {
    pagoda_status st;
    int64_t bits = 0, gs = -1;
    bool sym = true;
    const char *fmt = NULL;
    qc_scheme *s = &c->schemes[0];
    if (!json_object_get(q, "bits")) return pg_fail(PAGODA_ERR_FORMAT, "%s: 'bits' is missing", where);
    if ((st = get_int(q, where, "bits", 0, 64, &bits)) || (st = check_bits(where, bits, true))) return st;
    if ((st = get_int(q, where, "group_size", -1, 1 << 20, &gs))) return st;
    if (gs == 0) return pg_fail(PAGODA_ERR_FORMAT, "%s: 'group_size' must be -1 or positive", where);
    if ((st = get_bool(q, where, "sym", &sym)) || (st = get_bool(q, where, "desc_act", &c->desc_act)) ||
        (st = get_bool(q, where, "lm_head", &c->lm_head)))
        return st;
    if ((st = get_str(q, where, "checkpoint_format", &fmt))) return st;
    if (!fmt && (st = get_str(q, where, "format", &fmt))) return st;
    if (fmt && strcmp(fmt, "gptq") && strcmp(fmt, "gptq_v2"))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: GPTQ checkpoint_format '%s' is not supported (gptq, gptq_v2)", where,
                       fmt);
    const char *pack = NULL;
    if ((st = get_str(q, where, "pack_dtype", &pack))) return st;
    if (pack && strcmp(pack, "int32"))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: GPTQ pack_dtype '%s' is not supported (int32)", where, pack);
    c->gptq_v2 = fmt && !strcmp(fmt, "gptq_v2");
    *s = (qc_scheme){.bits = (int)bits, .strategy = gs < 0 ? QC_STRAT_CHANNEL : QC_STRAT_GROUP,
                     .group_size = (int32_t)(gs < 0 ? 0 : gs), .symmetric = sym};
    c->n_schemes = 1;
    return PAGODA_OK;
}

static pagoda_status parse_awq(json_t *q, const char *where, pg_quant_config *c) {
    pagoda_status st;
    int64_t bits = 0, gs = -1;
    bool zp = true;
    const char *ver = NULL;
    if (!json_object_get(q, "bits") && !json_object_get(q, "w_bit"))
        return pg_fail(PAGODA_ERR_FORMAT, "%s: 'bits' is missing", where);
    if ((st = get_int(q, where, "bits", 0, 64, &bits)) || (st = get_int(q, where, "w_bit", 0, 64, &bits)) ||
        (st = check_bits(where, bits, false)))
        return st;
    if ((st = get_int(q, where, "group_size", -1, 1 << 20, &gs)) || (st = get_int(q, where, "q_group_size", -1, 1 << 20, &gs)))
        return st;
    if (gs == 0) return pg_fail(PAGODA_ERR_FORMAT, "%s: 'group_size' must be -1 or positive", where);
    if ((st = get_bool(q, where, "zero_point", &zp))) return st;
    if ((st = get_str(q, where, "version", &ver))) return st;
    if (ver && strcasecmp(ver, "gemm"))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: AWQ version '%s' is not supported (gemm)", where, ver);
    c->schemes[0] = (qc_scheme){.bits = (int)bits, .strategy = gs < 0 ? QC_STRAT_CHANNEL : QC_STRAT_GROUP,
                                .group_size = (int32_t)(gs < 0 ? 0 : gs), .symmetric = !zp};
    c->n_schemes = 1;
    int n_skip = 0;
    char skip[QC_MAX_NAMES][QC_NAME_LEN];
    if ((st = get_names(q, where, "modules_to_not_convert", skip, &n_skip))) return st;
    for (int i = 0; i < n_skip; i++) memcpy(c->ignore[c->n_ignore++], skip[i], QC_NAME_LEN);
    return PAGODA_OK;
}

static const char *const k_ct_formats[] = {NULL, "pack-quantized", "int-quantized", "float-quantized"};

static pagoda_status ct_format(const char *where, const char *f, qc_ct_format *out) {
    for (int i = 1; i <= 3; i++)
        if (!strcmp(f, k_ct_formats[i])) return *out = (qc_ct_format)i, PAGODA_OK;
    return pg_fail(PAGODA_ERR_UNSUPPORTED,
                   "%s: compressed-tensors format '%s' is not supported (pack-quantized, int-quantized, float-quantized)",
                   where, f);
}

/* One config_groups entry. */
static pagoda_status parse_ct_group(json_t *g, const char *where, const char *top_fmt, qc_scheme *s) {
    pagoda_status st;
    const char *fmt = NULL, *type = NULL, *strat = NULL;
    if (!json_is_object(g)) return pg_fail(PAGODA_ERR_FORMAT, "%s: must be an object", where);
    if ((st = get_str(g, where, "format", &fmt))) return st;
    if (!fmt) fmt = top_fmt;
    if (!fmt) return pg_fail(PAGODA_ERR_FORMAT, "%s: no 'format'", where);
    if ((st = ct_format(where, fmt, &s->format))) return st;
    if ((st = get_names(g, where, "targets", s->targets, &s->n_targets))) return st;
    if (s->n_targets == 0) return pg_fail(PAGODA_ERR_FORMAT, "%s: 'targets' is empty", where);
    json_t *w = json_object_get(g, "weights");
    char wh[160];
    snprintf(wh, sizeof wh, "%.120s.weights", where);
    if (!json_is_object(w)) return pg_fail(PAGODA_ERR_FORMAT, "%s: missing or not an object", wh);
    int64_t bits = 0, gs = 0;
    bool dynamic = false;
    s->symmetric = true;
    if ((st = get_int(w, wh, "num_bits", 0, 64, &bits)) || (st = get_int(w, wh, "group_size", 0, 1 << 20, &gs)) ||
        (st = get_bool(w, wh, "symmetric", &s->symmetric)) || (st = get_bool(w, wh, "dynamic", &dynamic)) ||
        (st = get_str(w, wh, "type", &type)) || (st = get_str(w, wh, "strategy", &strat)))
        return st;
    if (dynamic) return pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: dynamic weight quantization is not supported", wh);
    if (json_object_get(w, "block_structure") && !json_is_null(json_object_get(w, "block_structure")))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: block_structure (block-wise scales) is not supported", wh);
    s->is_float = type && !strcmp(type, "float");
    if (type && strcmp(type, "int") && strcmp(type, "float"))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: weight type '%s' is not supported (int, float)", wh, type);
    if ((st = check_bits(wh, bits, true))) return st;
    if (s->is_float && bits != 8) return pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: %lld-bit float weights (fp8 only)", wh, (long long)bits);
    s->bits = (int)bits;
    if (!strat || !strcmp(strat, "group")) {
        if (gs <= 0) return pg_fail(PAGODA_ERR_FORMAT, "%s: strategy 'group' needs a positive group_size", wh);
        s->strategy = QC_STRAT_GROUP, s->group_size = (int32_t)gs;
    } else if (!strcmp(strat, "channel")) {
        s->strategy = QC_STRAT_CHANNEL;
    } else if (!strcmp(strat, "tensor")) {
        s->strategy = QC_STRAT_TENSOR;
    } else {
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: strategy '%s' is not supported (group, channel, tensor)", wh, strat);
    }
    if (s->format == QC_CT_FLOAT && !s->is_float)
        return pg_fail(PAGODA_ERR_FORMAT, "%s: float-quantized with integer weights", where);
    if (s->format != QC_CT_FLOAT && s->is_float)
        return pg_fail(PAGODA_ERR_FORMAT, "%s: %s with float weights", where, fmt);
    if (s->format == QC_CT_INT && bits != 8)
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: int-quantized stores 8-bit weights, not %lld", where, (long long)bits);
    if (s->is_float && !s->symmetric) return pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: asymmetric fp8 weights", wh);

    json_t *a = json_object_get(g, "input_activations");
    s->act = QC_ACT_NONE;
    if (a && !json_is_null(a)) {
        char ah[160];
        snprintf(ah, sizeof ah, "%.120s.input_activations", where);
        if (!json_is_object(a)) return pg_fail(PAGODA_ERR_FORMAT, "%s: not an object", ah);
        int64_t abits = 0;
        bool adyn = false, asym = true;
        const char *atype = NULL, *astrat = NULL;
        if ((st = get_int(a, ah, "num_bits", 0, 64, &abits)) || (st = get_bool(a, ah, "dynamic", &adyn)) ||
            (st = get_bool(a, ah, "symmetric", &asym)) || (st = get_str(a, ah, "type", &atype)) ||
            (st = get_str(a, ah, "strategy", &astrat)))
            return st;
        if (abits != 8 || !adyn || !asym || !astrat || strcmp(astrat, "token"))
            return pg_fail(PAGODA_ERR_UNSUPPORTED,
                           "%s: only dynamic symmetric 8-bit per-token activation quantization is supported", ah);
        if (atype && !strcmp(atype, "float")) s->act = QC_ACT_FP8_TOKEN;
        else if (!atype || !strcmp(atype, "int")) s->act = QC_ACT_INT8_TOKEN;
        else return pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: activation type '%s' (int, float)", ah, atype);
    }
    json_t *o = json_object_get(g, "output_activations");
    if (o && !json_is_null(o)) return pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: output_activations are not supported", where);
    return PAGODA_OK;
}

static pagoda_status parse_ct(json_t *q, const char *where, pg_quant_config *c) {
    pagoda_status st;
    const char *fmt = NULL, *status = NULL;
    if ((st = get_str(q, where, "format", &fmt)) || (st = get_str(q, where, "quantization_status", &status))) return st;
    if (fmt && !strcmp(fmt, "mixed")) fmt = NULL; /* each group names its own */
    if (status && strcmp(status, "compressed"))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: quantization_status '%s' is not supported (compressed)", where, status);
    json_t *sp = json_object_get(q, "sparsity_config");
    if (sp && !json_is_null(sp) && (!json_is_object(sp) || json_object_size(sp) > 0))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: sparsity_config (sparse weights) is not supported", where);
    json_t *tc = json_object_get(q, "transform_config");
    if (tc && !json_is_null(tc) && (!json_is_object(tc) || json_object_size(tc) > 0))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: transform_config (rotations) is not supported", where);
    json_t *kv = json_object_get(q, "kv_cache_scheme");
    if (kv && !json_is_null(kv))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: kv_cache_scheme (a calibrated KV cache) is not supported; "
                       "use --kv-cache-dtype instead", where);
    json_t *groups = json_object_get(q, "config_groups");
    if (!json_is_object(groups) || json_object_size(groups) == 0)
        return pg_fail(PAGODA_ERR_FORMAT, "%s: 'config_groups' missing or empty", where);
    if (json_object_size(groups) > QC_MAX_GROUPS)
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: %zu config_groups (at most %d)", where, json_object_size(groups),
                       QC_MAX_GROUPS);
    const char *key;
    json_t *g;
    json_object_foreach(groups, key, g) {
        char gh[160];
        snprintf(gh, sizeof gh, "%s.config_groups.%.60s", where, key);
        if ((st = parse_ct_group(g, gh, fmt, &c->schemes[c->n_schemes]))) return st;
        c->n_schemes++;
    }
    return get_names(q, where, "ignore", c->ignore, &c->n_ignore);
}

static pagoda_status parse_object(json_t *q, const char *where, pg_quant_config *c) {
    pagoda_status st;
    const char *m = NULL;
    if (!json_is_object(q)) return pg_fail(PAGODA_ERR_FORMAT, "%s: not an object", where);
    if ((st = get_str(q, where, "quant_method", &m))) return st;
    if (!m) m = "gptq"; /* AutoGPTQ's quantize_config.json does not name itself */
    if (!strcmp(m, "gptq")) return c->method = QC_GPTQ, parse_gptq(q, where, c);
    if (!strcmp(m, "awq")) return c->method = QC_AWQ, parse_awq(q, where, c);
    if (!strcmp(m, "compressed-tensors")) return c->method = QC_CT, parse_ct(q, where, c);
    return pg_fail(PAGODA_ERR_UNSUPPORTED,
                   "%s: quant_method '%s' is not supported (gptq, awq, compressed-tensors; GGUF files carry their own "
                   "quantization)", where, m);
}

pagoda_status quant_config_parse(const char *text, size_t n, bool standalone, pg_quant_config *c) {
    memset(c, 0, sizeof *c);
    json_error_t jerr;
    json_t *root = json_loadb(text, n, 0, &jerr);
    if (!root) return pg_fail(PAGODA_ERR_FORMAT, "line %d: %s", jerr.line, jerr.text);
    pagoda_status st = PAGODA_OK;
    if (!json_is_object(root)) {
        st = pg_fail(PAGODA_ERR_FORMAT, "not a JSON object");
    } else if (standalone) {
        st = parse_object(root, "quantize_config", c);
    } else {
        json_t *q = json_object_get(root, "quantization_config");
        if (q && !json_is_null(q)) st = parse_object(q, "quantization_config", c);
    }
    json_decref(root);
    if (st) memset(c, 0, sizeof *c);
    return st;
}

pagoda_status quant_config_read(const char *dir, pg_quant_config *c) {
    char path[4096];
    char *buf;
    size_t n;
    pagoda_status st;
    snprintf(path, sizeof path, "%s/config.json", dir);
    if ((st = pg_read_file(path, 1 << 20, &buf, &n))) return st;
    st = quant_config_parse(buf, n, false, c);
    free(buf);
    if (st) return pg_error_prefix("%s: ", path), st;
    if (c->method != QC_NONE) return PAGODA_OK;
    snprintf(path, sizeof path, "%s/quantize_config.json", dir);
    if (access(path, F_OK) != 0) return PAGODA_OK; /* an unquantized model */
    if ((st = pg_read_file(path, 1 << 20, &buf, &n))) return st;
    st = quant_config_parse(buf, n, true, c);
    free(buf);
    if (st) pg_error_prefix("%s: ", path);
    return st;
}

/* compressed-tensors matches "re:" patterns from the start of the name (Python re.match). */
static bool name_matches(const char *pat, const char *module) {
    if (strncmp(pat, "re:", 3)) return !strcmp(pat, module);
    int err;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)(pat + 3), PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_ANCHORED, &err, &off, NULL);
    if (!re) return false;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    bool ok = md && pcre2_match(re, (PCRE2_SPTR)module, strlen(module), 0, 0, md, NULL) >= 0;
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    return ok;
}

static bool in_list(const char (*names)[QC_NAME_LEN], int n, const char *module) {
    for (int i = 0; i < n; i++)
        if (name_matches(names[i], module)) return true;
    return false;
}

const qc_scheme *quant_config_scheme_for(const pg_quant_config *qc, const char *module) {
    if (!qc || qc->method == QC_NONE || in_list(qc->ignore, qc->n_ignore, module)) return NULL;
    const char *last = strrchr(module, '.');
    bool head = !strcmp(last ? last + 1 : module, "lm_head");
    if (qc->method != QC_CT) return head && !qc->lm_head ? NULL : &qc->schemes[0];
    /* a module named by a target wins over the class target "Linear" */
    for (int i = 0; i < qc->n_schemes; i++)
        for (int t = 0; t < qc->schemes[i].n_targets; t++)
            if (strcmp(qc->schemes[i].targets[t], "Linear") && name_matches(qc->schemes[i].targets[t], module))
                return &qc->schemes[i];
    for (int i = 0; i < qc->n_schemes; i++)
        for (int t = 0; t < qc->schemes[i].n_targets; t++)
            if (!strcmp(qc->schemes[i].targets[t], "Linear")) return &qc->schemes[i];
    return NULL;
}
