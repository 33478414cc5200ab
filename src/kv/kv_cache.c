#include "kv/kv_cache.h"

#include "core/dtype.h"
#include "core/log.h"

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

pagoda_status kv_geom_init(kv_geom *g, int32_t n_layer, int32_t n_blocks, int32_t block_size, int32_t n_head_kv,
                           int32_t head_dim, int dtype) {
    if (!elem_size(dtype)) return pg_fail(PAGODA_ERR_UNSUPPORTED, "kv cache: type %d is not f32 or f16", dtype);
    if (dtype == PAGODA_DTYPE_F16 && head_dim > 1024)
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "kv cache: f16 needs head_dim <= 1024 (got %d)", head_dim);
    if (!kv_cache_bytes_typed(n_layer, n_blocks, block_size, n_head_kv, head_dim, dtype))
        return pg_fail(PAGODA_ERR_INVALID, "kv cache: invalid size (%d layers, %d blocks of %d)", n_layer, n_blocks,
                       block_size);
    *g = (kv_geom){.n_layer = n_layer, .n_blocks = n_blocks, .block_size = block_size, .n_head_kv = n_head_kv,
                   .head_dim = head_dim, .dtype = dtype, .elem = elem_size(dtype)};
    g->layer_stride = (size_t)n_blocks * (size_t)block_size * (size_t)n_head_kv * (size_t)head_dim;
    return PAGODA_OK;
}
