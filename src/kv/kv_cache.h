/* KV cache geometry: for every layer, K and V carved into fixed-size blocks of tokens. Which
 * blocks a sequence owns is the caller's business (block tables, kv/block_pool.h); the memory
 * itself belongs to the backends that run the layers (model/forward.h: forward_kv_create). This
 * file only says how big things are and where a slot lives. */
#ifndef PG_KV_KV_CACHE_H
#define PG_KV_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "pagoda.h"

typedef struct {
    int32_t n_layer, n_blocks, block_size, n_head_kv, head_dim;
    int dtype;           /* PAGODA_DTYPE_F32, PAGODA_DTYPE_F16 (half the memory and the reads), or
                            PAGODA_DTYPE_KV_INT8 / PAGODA_DTYPE_KV_FP8_E4M3 (a byte per element and a
                            float scale per token and head; see k_kv_view in kernels/ops.h) */
    size_t block_bytes;  /* one block of one layer's K (or V): kv_block_bytes() */
    size_t layer_bytes;  /* one layer's K (or V) = n_blocks * block_bytes */
} kv_geom;

/* Fills g after checking the sizes (dtype one of the four; f16, int8 and fp8 need head_dim <= 1024). */
pagoda_status kv_geom_init(kv_geom *g, int32_t n_layer, int32_t n_blocks, int32_t block_size, int32_t n_head_kv,
                           int32_t head_dim, int dtype);

/* Bytes of one block of one layer's K (or V): block_size * n_head_kv * head_dim elements of 4 (f32)
 * or 2 (f16) bytes, or for int8/fp8 block_size * n_head_kv * (head_dim + 4) (codes, then the
 * per-token-and-head float scales); 0 on overflow or a type the KV cache does not hold. */
size_t kv_block_bytes(int32_t block_size, int32_t n_head_kv, int32_t head_dim, int dtype);

/* Bytes needed for n_blocks (K and V, all layers) of F32 / of dtype; 0 on overflow or bad dtype. */
size_t kv_cache_bytes(int32_t n_layer, int32_t n_blocks, int32_t block_size, int32_t n_head_kv, int32_t head_dim);
size_t kv_cache_bytes_typed(int32_t n_layer, int32_t n_blocks, int32_t block_size, int32_t n_head_kv,
                            int32_t head_dim, int dtype);

/* "f32", "f16", "int8", "fp8_e4m3"; "?" for another type. */
const char *kv_dtype_name(int dtype);

#endif
