/* llama-quantize's named types and the per-tensor types of its mixtures (without --pure).
 *
 * Found by quantizing llama-shaped models of 2, 10, 16 and 80 layers (with and without GQA, with
 * and without output.weight, dense and with 4 or 8 experts) with llama-quantize (llama.cpp c392e50) and listing each tensor's type,
 * and from llama.cpp's documentation of the mixtures (Q4_K_M: "Q6_K for half of the attention.wv and
 * feed_forward.w2 tensors, else Q4_K"). With a quantized base type and no --pure, a tensor's type is
 * the base type except where a rule below says otherwise; F16 / BF16 / F32 have no mixture.
 *
 * "More bits" layers, use_more_bits(i, n): i < n/8, i >= 7n/8, or (i - n/8) % 3 == 2 (integer
 * division): the first and last eighth of the layers and every third layer in between; for 10
 * layers 0 3 6 8 9, for 16 layers 0 1 4 7 10 13 14 15.
 *
 * Rules, in the order they are tried (the first rule whose tensor name matches decides):
 *  1. output.weight, or token_embd.weight when the model has no output.weight (tied embeddings):
 *     --output-tensor-type if given; else Q8_0 for Falcon or when the row length is not a multiple
 *     of the base type's block; else Q8_0 stays Q8_0 and every other type becomes Q6_K (so the
 *     legacy Q4_0 / Q4_1 / Q5_0 / Q5_1 files get a Q6_K output too).
 *  2. token_embd.weight (untied): the base type (only the IQ/TQ mixtures change it).
 *  3. *attn_v.weight, counted in file order (i = 0, 1, ... over the attn_v tensors, n = number of
 *     attn_v / attn_qkv / attn_kv_b tensors): Q4_K_M and Q5_K_M give Q6_K where use_more_bits(i, n);
 *     Q4_K_S gives Q5_K for i < 4. Then a Llama 70B (llama arch, 80 layers, GQA, not 8 experts)
 *     turns a Q4_K attn_v into Q5_K, and a model with exactly 8 experts gets Q8_0 for every attn_v.
 *  4. *attn_k.weight: Q8_0 for a model with exactly 8 experts.
 *  5. names containing ffn_down (also _exps / _shexp), layer i counted in file order over them (for
 *     MoE models the N of "blk.N." instead), n = block_count: Q4_K_M gives Q6_K where
 *     use_more_bits(i, n) (Falcon: Q6_K for i < n/16, Q5_K where use_more_bits, else Q4_K);
 *     Q4_K_S gives Q5_K for i < n/8 (not Falcon); Q5_K_M gives Q6_K where use_more_bits(i, n).
 *     With an imatrix, Q4_0 / Q5_0 give Q4_1 / Q5_1 for i < n/8 (llama.cpp's guard against the
 *     first ffn_down layers going wrong; without one the old files stay as they were).
 *  6. *attn_output.weight: Q5_K for Q4_K_S / Q4_K_M on a model with exactly 8 experts (not Falcon).
 *  7. *attn_qkv.weight (fused projections): Q5_K for Q4_K_M, Q6_K for Q5_K_M.
 * Afterwards the caller applies --token-embedding-type / --output-tensor-type and the row-length
 * fallback (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, F16 if even that block does not fit).
 * Verified byte for byte on Llama-shaped files (test_quantize.py): rules 1-6, the 70B one on an
 * 80-layer GQA file by hand; the Falcon and attn_qkv rules come from llama.cpp's documented
 * behaviour and were not compared with llama-quantize. */
#include "quantize_mix.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/dtype.h"

enum { FT_Q4_0 = 2, FT_Q5_0 = 8, FT_Q4_K_S = 14, FT_Q4_K_M = 15, FT_Q5_K_S = 16, FT_Q5_K_M = 17 };

static const quant_target k_targets[] = {
    {"F32", PAGODA_DTYPE_F32, 0},      {"F16", PAGODA_DTYPE_F16, 1},      {"BF16", PAGODA_DTYPE_BF16, 32},
    {"Q4_0", PAGODA_DTYPE_Q4_0, 2},    {"Q4_1", PAGODA_DTYPE_Q4_1, 3},    {"Q5_0", PAGODA_DTYPE_Q5_0, 8},
    {"Q5_1", PAGODA_DTYPE_Q5_1, 9},    {"Q8_0", PAGODA_DTYPE_Q8_0, 7},    {"Q4_K_S", PAGODA_DTYPE_Q4_K, FT_Q4_K_S},
    {"Q4_K_M", PAGODA_DTYPE_Q4_K, FT_Q4_K_M}, {"Q4_K", PAGODA_DTYPE_Q4_K, FT_Q4_K_M},
    {"Q5_K_S", PAGODA_DTYPE_Q5_K, FT_Q5_K_S}, {"Q5_K_M", PAGODA_DTYPE_Q5_K, FT_Q5_K_M},
    {"Q5_K", PAGODA_DTYPE_Q5_K, FT_Q5_K_M},   {"Q6_K", PAGODA_DTYPE_Q6_K, 18},
};
#define N_TARGETS (sizeof k_targets / sizeof k_targets[0])

/* llama-quantize's other types, with the ggml type of their tensors that pagoda cannot write. */
static const struct {
    const char *name;
    uint32_t ftype;
    const char *needs;
} k_refused[] = {
    {"Q2_K", 10, "Q2_K"},       {"Q2_K_S", 21, "Q2_K"},     {"Q3_K", 12, "Q3_K"},      {"Q3_K_S", 11, "Q3_K"},
    {"Q3_K_M", 12, "Q3_K"},     {"Q3_K_L", 13, "Q3_K"},     {"IQ2_XXS", 19, "IQ2_XXS"}, {"IQ2_XS", 20, "IQ2_XS"},
    {"IQ2_S", 28, "IQ2_XS"},    {"IQ2_M", 29, "IQ2_S"},     {"IQ1_S", 24, "IQ1_S"},    {"IQ1_M", 31, "IQ1_M"},
    {"IQ3_XXS", 23, "IQ3_XXS"}, {"IQ3_XS", 22, "IQ3_S"},    {"IQ3_S", 26, "IQ3_S"},    {"IQ3_M", 27, "IQ3_S"},
    {"IQ4_NL", 25, "IQ4_NL"},   {"IQ4_XS", 30, "IQ4_XS"},   {"TQ1_0", 36, "TQ1_0"},    {"TQ2_0", 37, "TQ2_0"},
};
#define N_REFUSED (sizeof k_refused / sizeof k_refused[0])

void quant_target_list(FILE *f) {
    for (size_t i = 0; i < N_TARGETS; i++) fprintf(f, "%s%s", i ? " " : "", k_targets[i].name);
}

const quant_target *quant_target_find(const char *s) {
    char *end;
    long id = strtol(s, &end, 10);
    bool numeric = *s && !*end;
    for (size_t i = 0; i < N_TARGETS; i++) /* a number takes the first name with that id (Q4_K_M, not Q4_K) */
        if (numeric ? (long)k_targets[i].ftype == id : !strcasecmp(k_targets[i].name, s)) return &k_targets[i];
    for (size_t i = 0; i < N_REFUSED; i++)
        if (numeric ? (long)k_refused[i].ftype == id : !strcasecmp(k_refused[i].name, s)) {
            fprintf(stderr, "pagoda quantize: %s needs tensors in %s, which pagoda cannot write; pagoda writes: ",
                    k_refused[i].name, k_refused[i].needs);
            quant_target_list(stderr);
            fputc('\n', stderr);
            return NULL;
        }
    fprintf(stderr, "pagoda quantize: unknown TYPE '%s'; pagoda writes: ", s);
    quant_target_list(stderr);
    fputc('\n', stderr);
    return NULL;
}

static int64_t arch_int(const gguf_file *f, const char *arch, const char *key, int64_t dflt) {
    char full[160];
    int64_t v;
    snprintf(full, sizeof full, "%s.%s", arch, key);
    return gguf_get_i64(f, full, &v) ? v : dflt;
}

void quant_mix_init(quant_mix *m, const gguf_file *f, const quant_target *target, int out_type) {
    const char *arch = gguf_get_str(f, "general.architecture");
    if (!arch) arch = "";
    *m = (quant_mix){.target = target, .out_type = out_type};
    m->n_layer = (int)arch_int(f, arch, "block_count", 0);
    m->n_expert = (int)arch_int(f, arch, "expert_count", 0);
    m->falcon = !strcmp(arch, "falcon");
    int64_t n_head = arch_int(f, arch, "attention.head_count", -1);
    int64_t n_head_kv = arch_int(f, arch, "attention.head_count_kv", n_head);
    m->llama_70b = !strcmp(arch, "llama") && m->n_layer == 80 && m->n_expert != 8 && n_head > 0 && n_head != n_head_kv;
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const char *name = gguf_tensor_at(f, i)->name;
        if (strstr(name, "attn_v.weight") || strstr(name, "attn_qkv.weight") || strstr(name, "attn_kv_b.weight"))
            m->n_attention_wv++;
        else if (!strcmp(name, "output.weight"))
            m->has_output = true;
    }
}

/* the first and last eighth of the layers, and every third one in between */
static bool use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

int quant_mix_type(quant_mix *m, const char *name, int64_t ne0) {
    const uint32_t ft = m->target->ftype;
    const bool k_m = ft == FT_Q4_K_M || ft == FT_Q5_K_M;
    int t = m->target->dtype;
    if (!strcmp(name, "output.weight") || (!m->has_output && !strcmp(name, "token_embd.weight"))) { /* rule 1 */
        if (m->out_type >= 0) return m->out_type;
        if (m->falcon || ne0 % dtype_info(t)->block_size) return PAGODA_DTYPE_Q8_0;
        return t == PAGODA_DTYPE_Q8_0 ? t : PAGODA_DTYPE_Q6_K;
    }
    if (!strcmp(name, "token_embd.weight") || !strcmp(name, "per_layer_token_embd.weight")) return t; /* rule 2 */
    if (strstr(name, "attn_v.weight")) { /* rule 3 */
        if (k_m && use_more_bits(m->i_attention_wv, m->n_attention_wv)) t = PAGODA_DTYPE_Q6_K;
        else if (ft == FT_Q4_K_S && m->i_attention_wv < 4) t = PAGODA_DTYPE_Q5_K;
        if (m->llama_70b && t == PAGODA_DTYPE_Q4_K) t = PAGODA_DTYPE_Q5_K;
        if (m->n_expert == 8) t = PAGODA_DTYPE_Q8_0;
        m->i_attention_wv++;
        return t;
    }
    if (strstr(name, "attn_k.weight")) return m->n_expert == 8 ? PAGODA_DTYPE_Q8_0 : t; /* rule 4 */
    if (strstr(name, "ffn_down")) { /* rule 5 */
        int i = m->i_ffn_down++, n = m->n_layer;
        if (m->n_expert > 1) sscanf(name, "blk.%d.", &i);
        if (ft == FT_Q4_K_M && m->falcon)
            t = i < n / 16 ? PAGODA_DTYPE_Q6_K : use_more_bits(i, n) ? PAGODA_DTYPE_Q5_K : PAGODA_DTYPE_Q4_K;
        else if (k_m && use_more_bits(i, n)) t = PAGODA_DTYPE_Q6_K;
        else if (ft == FT_Q4_K_S && !m->falcon && i < n / 8) t = PAGODA_DTYPE_Q5_K;
        else if ((ft == FT_Q4_0 || ft == FT_Q5_0) && m->has_imatrix && i < n / 8)
            t = ft == FT_Q4_0 ? PAGODA_DTYPE_Q4_1 : PAGODA_DTYPE_Q5_1;
        return t;
    }
    if (strstr(name, "attn_output.weight")) /* rule 6 */
        return !m->falcon && m->n_expert == 8 && (ft == FT_Q4_K_S || ft == FT_Q4_K_M) ? PAGODA_DTYPE_Q5_K : t;
    if (strstr(name, "attn_qkv.weight")) /* rule 7 */
        return ft == FT_Q4_K_M ? PAGODA_DTYPE_Q5_K : ft == FT_Q5_K_M ? PAGODA_DTYPE_Q6_K : t;
    return t;
}
