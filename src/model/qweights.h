/* Linear layers of Hugging Face quantized checkpoints (GPTQ v1/v2, AWQ GEMM, compressed-tensors
 * pack-quantized / int-quantized / float-quantized) loaded into the one layout the qmatmul kernels
 * read (kernels/qmatmul.h). compressed-tensors int4 (without act-order), int8 and fp8 codes are
 * used in place from the file mapping; GPTQ's and AWQ's column-major words, 8-bit packed words and
 * act-order columns are repacked once, bit for bit. Scales become F32 (small: one per group). */
#ifndef PG_MODEL_QWEIGHTS_H
#define PG_MODEL_QWEIGHTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/tensor.h"
#include "format/quant_config.h"
#include "format/safetensors.h"
#include "pagoda.h"

/* Where owned buffers go (the model keeps and frees them): alloc returns 64-byte aligned memory
 * or NULL. */
typedef struct {
    void *(*alloc)(void *ctx, size_t bytes);
    void *ctx;
} qw_owner;

/* Loads linear module `module` ("model.layers.0.mlp.down_proj", no ".weight") of n_out rows and
 * n_in columns as scheme s of config qc stores it. *found = false (and PAGODA_OK): the file has
 * none of the module's quantized tensors (it may hold module.weight unquantized). Every tensor's
 * dtype and shape is checked against the others and against n_in/n_out, zero points and group
 * indices against their ranges, scales for NaN/Inf and FP8 codes for NaN: a failure names the
 * tensor. w->name is left for the caller. */
pagoda_status qweight_load(const st_model *st, const pg_quant_config *qc, const qc_scheme *s, const char *module,
                           int64_t n_in, int64_t n_out, const qw_owner *own, pg_tensor *w, bool *found);

/* Bytes a loaded quantized weight occupies (codes, scales, zero points, permutation). */
uint64_t qweight_bytes(const pg_tensor *w);

/* "int4 g128 (gptq)"-style description of a loaded weight into buf. */
void qweight_describe(const pg_tensor *w, char *buf, size_t n);

#endif
