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
    int dtype;           /* PAGODA_DTYPE_F32, or PAGODA_DTYPE_F16: half the memory and the reads */
    size_t elem;         /* bytes per element: 4 or 2 */
    size_t layer_stride; /* elements per layer = n_blocks * block_size * n_head_kv * head_dim */
} kv_geom;

/* Fills g after checking the sizes (dtype F32 or F16; f16 needs head_dim <= 1024). */
pagoda_status kv_geom_init(kv_geom *g, int32_t n_layer, int32_t n_blocks, int32_t block_size, int32_t n_head_kv,
                           int32_t head_dim, int dtype);

/* Bytes needed for n_blocks (K and V, all layers) of F32 / of dtype; 0 on overflow or bad dtype. */
size_t kv_cache_bytes(int32_t n_layer, int32_t n_blocks, int32_t block_size, int32_t n_head_kv, int32_t head_dim);
size_t kv_cache_bytes_typed(int32_t n_layer, int32_t n_blocks, int32_t block_size, int32_t n_head_kv,
                            int32_t head_dim, int dtype);

/* Element offset of one token slot [n_head_kv][head_dim] at (block, slot) within one layer's K
 * (or V) array. */
static inline size_t kv_slot_offset(const kv_geom *g, int32_t block, int32_t slot) {
    return ((size_t)block * (size_t)g->block_size + (size_t)slot) * (size_t)g->n_head_kv * (size_t)g->head_dim;
}

#endif
