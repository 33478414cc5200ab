/* A Hugging Face checkpoint's quantization_config (config.json), or the quantize_config.json that
 * older AutoGPTQ checkpoints keep beside it: which method, which bits and groups, which modules
 * are quantized and how their activations are to be treated. Bounded parsing of untrusted JSON:
 * every field is type-checked, every value range-checked, and anything pagoda cannot honour is a
 * clear PAGODA_ERR_UNSUPPORTED naming it (never silently ignored). */
#ifndef PG_FORMAT_QUANT_CONFIG_H
#define PG_FORMAT_QUANT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pagoda.h"

typedef enum { QC_NONE = 0, QC_GPTQ, QC_AWQ, QC_CT } qc_method;
/* compressed-tensors formats */
typedef enum { QC_CT_PACK = 1, QC_CT_INT, QC_CT_FLOAT } qc_ct_format;
typedef enum { QC_STRAT_GROUP = 1, QC_STRAT_CHANNEL, QC_STRAT_TENSOR } qc_strategy;
/* What the checkpoint says about input activations. */
typedef enum { QC_ACT_NONE = 0, QC_ACT_INT8_TOKEN, QC_ACT_FP8_TOKEN } qc_act;

#define QC_MAX_GROUPS 8
#define QC_MAX_NAMES 32
#define QC_NAME_LEN 200

/* How one set of modules is quantized. */
typedef struct {
    int bits;               /* 4 or 8 */
    bool is_float;          /* FP8 (e4m3) weights */
    qc_strategy strategy;
    int32_t group_size;     /* GROUP: columns per scale (> 0) */
    bool symmetric;
    qc_act act;
    qc_ct_format format;    /* compressed-tensors only */
    int n_targets;          /* compressed-tensors: "Linear", module names, or "re:<regex>" */
    char targets[QC_MAX_NAMES][QC_NAME_LEN];
} qc_scheme;

typedef struct {
    qc_method method;
    /* GPTQ */
    bool gptq_v2;           /* checkpoint_format gptq_v2: zero points stored as they are (v1: minus one) */
    bool desc_act;
    /* GPTQ/AWQ: one scheme for every linear layer but the output head (lm_head: quantized too) */
    bool lm_head;
    int n_schemes;          /* GPTQ/AWQ: 1 */
    qc_scheme schemes[QC_MAX_GROUPS];
    int n_ignore;           /* compressed-tensors: module names or "re:<regex>" left unquantized */
    char ignore[QC_MAX_NAMES][QC_NAME_LEN];
} pg_quant_config;

/* text: a whole config.json (its "quantization_config" object is read; none: method QC_NONE),
 * or, with standalone = true, a quantize_config.json (AutoGPTQ: the object itself). */
pagoda_status quant_config_parse(const char *text, size_t n, bool standalone, pg_quant_config *out);

/* Reads dir/config.json and, when it has no quantization_config, dir/quantize_config.json. */
pagoda_status quant_config_read(const char *dir, pg_quant_config *out);

/* The scheme that applies to a linear module ("model.layers.0.self_attn.q_proj"), or NULL when
 * the module stays unquantized (ignored, or no scheme targets it). */
const qc_scheme *quant_config_scheme_for(const pg_quant_config *qc, const char *module);

/* "gptq", "awq", "compressed-tensors", "none" */
const char *quant_method_name(qc_method m);

#endif
