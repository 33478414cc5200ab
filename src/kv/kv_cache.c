#include "kv/kv_cache.h"

#include "core/dtype.h"
#include "core/log.h"

size_t kv_block_bytes(int32_t block_size, int32_t n_head_kv, int32_t head_dim, int dtype) {
    size_t per_head; /* bytes of one head at one token */
    switch (dtype) {
    case PAGODA_DTYPE_F32: per_head = 4 * (size_t)head_dim; break;
    case PAGODA_DTYPE_F16: per_head = 2 * (size_t)head_dim; break;
    case PAGODA_DTYPE_KV_INT8:
    case PAGODA_DTYPE_KV_FP8_E4M3: per_head = (size_t)head_dim + sizeof(float); break;
    default: return 0;
    }
    size_t n = per_head;
    if (block_size <= 0 || n_head_kv <= 0 || head_dim <= 0 || !pg_mul_size(n, (size_t)block_size, &n) ||
        !pg_mul_size(n, (size_t)n_head_kv, &n))
        return 0;
    return n;
}

size_t kv_cache_bytes_typed(int32_t n_layer, int32_t n_blocks, int32_t block_size, int32_t n_head_kv,
                            int32_t head_dim, int dtype) {
    size_t n = kv_block_bytes(block_size, n_head_kv, head_dim, dtype);
    if (!n || n_layer <= 0 || n_blocks <= 0 || !pg_mul_size(n, 2, &n) || !pg_mul_size(n, (size_t)n_layer, &n) ||
        !pg_mul_size(n, (size_t)n_blocks, &n))
        return 0;
    return n;
}

size_t kv_cache_bytes(int32_t n_layer, int32_t n_blocks, int32_t block_size, int32_t n_head_kv, int32_t head_dim) {
    return kv_cache_bytes_typed(n_layer, n_blocks, block_size, n_head_kv, head_dim, PAGODA_DTYPE_F32);
}

const char *kv_dtype_name(int dtype) {
    switch (dtype) {
    case PAGODA_DTYPE_F32: return "f32";
    case PAGODA_DTYPE_F16: return "f16";
    case PAGODA_DTYPE_KV_INT8: return "int8";
    case PAGODA_DTYPE_KV_FP8_E4M3: return "fp8_e4m3";
    default: return "?";
    }
}

pagoda_status kv_geom_init(kv_geom *g, int32_t n_layer, int32_t n_blocks, int32_t block_size, int32_t n_head_kv,
                           int32_t head_dim, int dtype) {
    if (!kv_block_bytes(1, 1, 1, dtype))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "kv cache: type %d is not f32, f16, int8 or fp8", dtype);
    if (dtype != PAGODA_DTYPE_F32 && head_dim > 1024)
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "kv cache: %s needs head_dim <= 1024 (got %d)", kv_dtype_name(dtype),
                       head_dim);
    if (!kv_cache_bytes_typed(n_layer, n_blocks, block_size, n_head_kv, head_dim, dtype))
        return pg_fail(PAGODA_ERR_INVALID, "kv cache: invalid size (%d layers, %d blocks of %d)", n_layer, n_blocks,
                       block_size);
    *g = (kv_geom){.n_layer = n_layer, .n_blocks = n_blocks, .block_size = block_size, .n_head_kv = n_head_kv,
                   .head_dim = head_dim, .dtype = dtype,
                   .block_bytes = kv_block_bytes(block_size, n_head_kv, head_dim, dtype)};
    g->layer_bytes = (size_t)n_blocks * g->block_bytes;
    return PAGODA_OK;
}
