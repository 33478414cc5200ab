#include "kv/kv_cache.h"

#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/log.h"
#ifdef PAGODA_CUDA
#include "kernels/cuda/pcu.h"
#endif

static size_t elem_size(int dtype) {
    return dtype == PAGODA_DTYPE_F32 ? 4 : dtype == PAGODA_DTYPE_F16 ? 2 : 0;
}

size_t kv_cache_bytes_typed(int32_t n_layer, int32_t n_blocks, int32_t block_size, int32_t n_head_kv,
                            int32_t head_dim, int dtype) {
    size_t n = 2 * elem_size(dtype);
    const int32_t dims[] = {n_layer, n_blocks, block_size, n_head_kv, head_dim};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (!n || dims[i] <= 0 || !pg_mul_size(n, (size_t)dims[i], &n)) return 0;
    return n;
}

size_t kv_cache_bytes(int32_t n_layer, int32_t n_blocks, int32_t block_size, int32_t n_head_kv, int32_t head_dim) {
    return kv_cache_bytes_typed(n_layer, n_blocks, block_size, n_head_kv, head_dim, PAGODA_DTYPE_F32);
}

pagoda_status kv_cache_create(int32_t n_layer, int32_t n_blocks, int32_t block_size, int32_t n_head_kv,
                              int32_t head_dim, kv_cache **out) {
    return kv_cache_create_typed(n_layer, n_blocks, block_size, n_head_kv, head_dim, PAGODA_DTYPE_F32, out);
}

pagoda_status kv_cache_create_typed(int32_t n_layer, int32_t n_blocks, int32_t block_size, int32_t n_head_kv,
                                    int32_t head_dim, int dtype, kv_cache **out) {
    return kv_cache_create_split(n_layer, 0, n_blocks, block_size, n_head_kv, head_dim, dtype, NULL, out);
}

pagoda_status kv_cache_create_split(int32_t n_layer, int32_t n_dev_layers, int32_t n_blocks, int32_t block_size,
                                    int32_t n_head_kv, int32_t head_dim, int dtype, struct pcu_stream *dev_stream,
                                    kv_cache **out) {
    *out = NULL;
    if (n_dev_layers < 0 || n_dev_layers > n_layer)
        return pg_fail(PAGODA_ERR_INVALID, "kv cache: %d GPU layers of %d", n_dev_layers, n_layer);
#ifndef PAGODA_CUDA
    if (n_dev_layers > 0) return pg_fail(PAGODA_ERR_UNSUPPORTED, "kv cache: pagoda was built without CUDA");
#endif
    if (!elem_size(dtype)) return pg_fail(PAGODA_ERR_UNSUPPORTED, "kv cache: type %d is not f32 or f16", dtype);
    if (dtype == PAGODA_DTYPE_F16 && head_dim > 1024)
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "kv cache: f16 needs head_dim <= 1024 (got %d)", head_dim);
    size_t bytes = kv_cache_bytes_typed(n_layer, n_blocks, block_size, n_head_kv, head_dim, dtype);
    if (!bytes) return pg_fail(PAGODA_ERR_INVALID, "kv cache: invalid size (%d layers, %d blocks of %d)", n_layer, n_blocks, block_size);
    kv_cache *kv = calloc(1, sizeof *kv);
    if (!kv) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    kv->n_layer = n_layer, kv->n_blocks = n_blocks, kv->block_size = block_size;
    kv->n_head_kv = n_head_kv, kv->head_dim = head_dim;
    kv->dtype = dtype, kv->elem = elem_size(dtype);
    kv->layer_stride = (size_t)n_blocks * (size_t)block_size * (size_t)n_head_kv * (size_t)head_dim;
    /* zeroed so a bug reading an unwritten slot gives finite numbers, not garbage */
    kv->n_dev_layers = n_dev_layers;
    kv->dev_stream = dev_stream;
    size_t layer_bytes = bytes / 2 / (size_t)n_layer, host_bytes = layer_bytes * (size_t)(n_layer - n_dev_layers);
    if (host_bytes) {
        kv->k = calloc(1, host_bytes);
        kv->v = calloc(1, host_bytes);
        if (!kv->k || !kv->v) {
            kv_cache_destroy(kv);
            return pg_fail(PAGODA_ERR_NOMEM, "kv cache: cannot allocate %zu MiB", (2 * host_bytes) >> 20);
        }
    }
#ifdef PAGODA_CUDA
    if (n_dev_layers > 0) {
        size_t dev_bytes = layer_bytes * (size_t)n_dev_layers;
        pagoda_status st;
        if ((st = pcu_malloc(&kv->dev_k, dev_bytes)) || (st = pcu_malloc(&kv->dev_v, dev_bytes)) ||
            (st = pcu_memset(kv->dev_k, 0, dev_bytes, NULL)) || (st = pcu_memset(kv->dev_v, 0, dev_bytes, NULL))) {
            kv_cache_destroy(kv);
            return st;
        }
    }
#endif
    *out = kv;
    return PAGODA_OK;
}

void kv_cache_destroy(kv_cache *kv) {
    if (!kv) return;
    free(kv->k);
    free(kv->v);
#ifdef PAGODA_CUDA
    pcu_free(kv->dev_k);
    pcu_free(kv->dev_v);
#endif
    free(kv);
}

void kv_cache_copy_block(kv_cache *kv, int32_t src, int32_t dst) {
    size_t n = (size_t)kv->block_size * (size_t)kv->n_head_kv * (size_t)kv->head_dim * kv->elem;
#ifdef PAGODA_CUDA
    for (int32_t l = 0; l < kv->n_dev_layers; l++) {
        size_t d = kv_slot_offset(kv, l, dst, 0) * kv->elem, s = kv_slot_offset(kv, l, src, 0) * kv->elem;
        /* on the forward pass's stream, so the next step's kernels see the copy */
        if (pcu_d2d((char *)kv->dev_k + d, (char *)kv->dev_k + s, n, kv->dev_stream) ||
            pcu_d2d((char *)kv->dev_v + d, (char *)kv->dev_v + s, n, kv->dev_stream))
            pg_log(PAGODA_LOG_ERROR, "kv cache: device block copy %d -> %d failed", src, dst);
    }
#endif
    for (int32_t l = kv->n_dev_layers; l < kv->n_layer; l++) {
        size_t d = kv_slot_offset(kv, l, dst, 0) * kv->elem, s = kv_slot_offset(kv, l, src, 0) * kv->elem;
        memcpy((char *)kv->k + d, (char *)kv->k + s, n);
        memcpy((char *)kv->v + d, (char *)kv->v + s, n);
    }
}
