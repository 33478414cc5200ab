/* KV cache storage: for every layer, K and V memory carved into fixed-size blocks of tokens.
 * Which blocks a sequence owns is the caller's business (block tables); this is only memory. */
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
    void *k;             /* [n_layer][n_blocks][block_size][n_head_kv][head_dim] of dtype */
    void *v;             /* same shape */
} kv_cache;

/* An F32 cache. */
pagoda_status kv_cache_create(int32_t n_layer, int32_t n_blocks, int32_t block_size, int32_t n_head_kv,
                              int32_t head_dim, kv_cache **out);
/* dtype: PAGODA_DTYPE_F32 or PAGODA_DTYPE_F16 (head_dim <= 1024). */
pagoda_status kv_cache_create_typed(int32_t n_layer, int32_t n_blocks, int32_t block_size, int32_t n_head_kv,
                                    int32_t head_dim, int dtype, kv_cache **out);
void kv_cache_destroy(kv_cache *kv); /* NULL is a no-op */

/* Bytes needed for n_blocks (K and V, all layers) of F32 / of dtype; 0 on overflow or bad dtype. */
size_t kv_cache_bytes(int32_t n_layer, int32_t n_blocks, int32_t block_size, int32_t n_head_kv, int32_t head_dim);
size_t kv_cache_bytes_typed(int32_t n_layer, int32_t n_blocks, int32_t block_size, int32_t n_head_kv,
                            int32_t head_dim, int dtype);

/* Copies block src to block dst in every layer (copy-on-write of a shared partial block). */
void kv_cache_copy_block(kv_cache *kv, int32_t src, int32_t dst);

/* Element offset of one token slot: [n_head_kv][head_dim] at (layer, block, slot). */
static inline size_t kv_slot_offset(const kv_cache *kv, int32_t layer, int32_t block, int32_t slot) {
    return (size_t)layer * kv->layer_stride +
           ((size_t)block * (size_t)kv->block_size + (size_t)slot) * (size_t)kv->n_head_kv * (size_t)kv->head_dim;
}

#endif
