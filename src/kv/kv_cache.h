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
    /* Layers [0, n_dev_layers) live in GPU memory (CPU/GPU hybrid: the GPU runs the first layers),
     * layers [n_dev_layers, n_layer) in host memory. Both parts use the same block ids. */
    int32_t n_dev_layers;
    void *k;             /* host: [n_layer - n_dev_layers][n_blocks][block_size][n_head_kv][head_dim] of dtype */
    void *v;             /* same shape */
    void *dev_k, *dev_v; /* device: [n_dev_layers][n_blocks][block_size][n_head_kv][head_dim] of dtype */
    struct pcu_stream *dev_stream; /* borrowed: the stream the forward pass runs on (orders block copies) */
} kv_cache;

/* An F32 cache. */
pagoda_status kv_cache_create(int32_t n_layer, int32_t n_blocks, int32_t block_size, int32_t n_head_kv,
                              int32_t head_dim, kv_cache **out);
/* dtype: PAGODA_DTYPE_F32 or PAGODA_DTYPE_F16 (head_dim <= 1024). */
pagoda_status kv_cache_create_typed(int32_t n_layer, int32_t n_blocks, int32_t block_size, int32_t n_head_kv,
                                    int32_t head_dim, int dtype, kv_cache **out);
void kv_cache_destroy(kv_cache *kv); /* NULL is a no-op */

/* A cache whose first n_dev_layers layers are in GPU memory, copied on dev_stream (borrowed; the
 * forward pass's stream). n_dev_layers == 0: all in host memory, as kv_cache_create_typed. */
pagoda_status kv_cache_create_split(int32_t n_layer, int32_t n_dev_layers, int32_t n_blocks, int32_t block_size,
                                    int32_t n_head_kv, int32_t head_dim, int dtype, struct pcu_stream *dev_stream,
                                    kv_cache **out);

/* Bytes needed for n_blocks (K and V, all layers) of F32 / of dtype; 0 on overflow or bad dtype. */
size_t kv_cache_bytes(int32_t n_layer, int32_t n_blocks, int32_t block_size, int32_t n_head_kv, int32_t head_dim);
size_t kv_cache_bytes_typed(int32_t n_layer, int32_t n_blocks, int32_t block_size, int32_t n_head_kv,
                            int32_t head_dim, int dtype);

/* Copies block src to block dst in every layer (copy-on-write of a shared partial block). */
void kv_cache_copy_block(kv_cache *kv, int32_t src, int32_t dst);

/* Element offset of one token slot: [n_head_kv][head_dim] at (layer, block, slot), in the host
 * arrays (layer >= n_dev_layers) or the device arrays (layer < n_dev_layers). */
static inline size_t kv_slot_offset(const kv_cache *kv, int32_t layer, int32_t block, int32_t slot) {
    size_t l = (size_t)(layer < kv->n_dev_layers ? layer : layer - kv->n_dev_layers);
    return l * kv->layer_stride +
           ((size_t)block * (size_t)kv->block_size + (size_t)slot) * (size_t)kv->n_head_kv * (size_t)kv->head_dim;
}

#endif
