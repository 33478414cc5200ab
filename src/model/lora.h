/* A LoRA adapter: low-rank deltas for a base model's projections, loaded from a PEFT folder
 * (adapter_config.json + adapter_model.safetensors) or a GGUF LoRA (llama.cpp's
 * convert_lora_to_gguf output), validated against the base model's shapes, kept in f16 when the
 * file stores both matrices of a pair as F16 (exact, half the memory traffic per step), else f32.
 * Applied per sequence in the forward pass: y += scale * B (A x) after the base product y = W x. */
#ifndef PG_MODEL_LORA_H
#define PG_MODEL_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"
#include "pagoda.h"

/* The projections an adapter may target (pagoda weight roles). */
typedef enum { LORA_Q, LORA_K, LORA_V, LORA_O, LORA_GATE, LORA_UP, LORA_DOWN, LORA_N_TARGETS } pg_lora_target;

/* One targeted matrix: delta = scale * B·A, A [rank][n_in], B stored transposed as Bt [rank][n_out]. */
typedef struct {
    int32_t rank; /* 0: this matrix is not targeted */
    int64_t n_in, n_out;
    float scale;
    float *A, *Bt;      /* owned; f32, or NULL when the pair is kept in f16: */
    uint16_t *A16, *Bt16; /* owned; IEEE halves (exactly one of the pairs is set) */
} pg_lora_mat;

typedef struct pg_lora {
    int32_t n_layer;
    pg_lora_mat *mats;     /* [n_layer][LORA_N_TARGETS] */
    int32_t max_rank;      /* largest rank over the targeted matrices */
    uint32_t targets;      /* bit t set: some layer has target t */
    size_t bytes;          /* bytes of A and B held */
    char source[8];        /* "peft" or "gguf" */
} pg_lora;

static inline const pg_lora_mat *lora_mat(const pg_lora *a, int32_t layer, pg_lora_target t) {
    return &a->mats[(size_t)layer * LORA_N_TARGETS + t];
}
const char *lora_target_name(pg_lora_target t); /* "q_proj", ... (PEFT module names) */

/* path: a PEFT adapter folder (or its adapter_config.json) or a .gguf LoRA. scale > 0 overrides
 * every matrix's scale; 0 takes it from the file (lora_alpha / r, or lora_alpha / sqrt(r) with
 * use_rslora). Every tensor is checked against the base model: a mismatch names the tensor and
 * both shapes. */
pagoda_status lora_load(const pg_model *m, const char *path, float scale, pg_lora **out);
/* The same from files in memory (fuzzing): config_json (PEFT, may be NULL for GGUF) and the
 * tensor file's bytes; gguf selects the GGUF parser. */
pagoda_status lora_load_memory(const pg_model_config *c, bool base_interleaved, const char *config_json,
                               const void *data, size_t size, bool gguf, float scale, pg_lora **out);
void lora_free(pg_lora *a); /* NULL is a no-op */

#endif
