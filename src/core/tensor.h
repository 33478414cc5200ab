/* The one tensor type every layer shares: data in place (usually inside a file mapping) plus
 * optional quantization metadata. Formats read today (GGUF block types, plain safetensors) keep
 * their scales inside the data blocks, so the metadata fields stay zero/NULL for them; formats
 * that store scales, zero points and group indices beside the data (GPTQ, AWQ,
 * compressed-tensors) fill them in, and every layer already passes them along.
 *
 * Orientation: a tensor is n_out rows of n_in elements (n_in contiguous: GGUF ne[0], the last
 * dimension of a Hugging Face tensor). Vectors have n_out == 1. All pointers are borrowed: the
 * model that loaded the tensor owns (or maps) the memory they point to. */
#ifndef PG_CORE_TENSOR_H
#define PG_CORE_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* An array that travels beside a tensor's data (scales, zero points, group index). */
typedef struct {
    const void *data; /* [ne[1]][ne[0]] elements of dtype; NULL: absent */
    int dtype;        /* pagoda_dtype of the elements (packed types: as the dtype lays them out) */
    int64_t ne[2];    /* ne[0] contiguous, ne[1] rows; {0, 0} when absent */
} pg_tensor_aux;

typedef struct pg_tensor {
    const void *data; /* [n_out][n_in] elements of dtype (rows of dtype_row_size bytes); NULL: absent */
    int dtype;        /* pagoda_dtype */
    int64_t n_in;     /* contiguous dimension (GGUF ne[0], HF last dim) */
    int64_t n_out;    /* rows (1 for vectors) */
    const char *name; /* the tensor's name in the file (borrowed) */
    /* Quantization metadata. All zero/NULL for self-describing dtypes (F32/F16/BF16 and the GGML
     * block types, whose scales live in their blocks). */
    int32_t group_size;   /* input elements sharing one scale/zero point; 0: no group metadata */
    pg_tensor_aux scales; /* [n_out][n_group] (n_group = ceil(n_in / group_size)), usually F16/F32 */
    pg_tensor_aux zeros;  /* [n_out][n_group] zero points (possibly packed); NULL data: symmetric */
    pg_tensor_aux g_idx;  /* [1][n_in] I32: group of each input column (GPTQ act-order); NULL data:
                           * column c is in group c / group_size */
    /* Hugging Face quantized checkpoints (GPTQ, AWQ, compressed-tensors), as model/qweights.c loads
     * them into the one layout of kernels/qmatmul.h: data holds the codes (dtype I8), scales are
     * F32, zeros U8/I8, and the columns may be permuted (act-order: sorted by group at load). */
    int8_t qkind;         /* k_qw_kind of the codes (1 int4, 2 int8, 3 fp8 e4m3); 0: not such a tensor */
    int8_t qact;          /* what the checkpoint asks of the activations: k_act_kind (0 float, 1 int8
                           * per token, 2 fp8 per token) */
    pg_tensor_aux perm;   /* [1][n_in] I32: input feature of each column; NULL data: identity */
} pg_tensor;

/* True when the tensor carries metadata beside its data (a consumer that only knows
 * self-describing dtypes must refuse it rather than read the data alone). */
static inline bool pg_tensor_has_qmeta(const pg_tensor *t) {
    return t->group_size != 0 || t->scales.data != NULL || t->zeros.data != NULL || t->g_idx.data != NULL ||
           t->qkind != 0 || t->perm.data != NULL;
}

#endif
