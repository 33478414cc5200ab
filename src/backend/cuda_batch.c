#include "backend/cuda_batch.h"

#include <string.h>

#include "core/log.h"

int32_t gpu_decode_bucket(int32_t n) {
    static const int32_t sizes[] = {1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 256, 320, 384, 512};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (n <= sizes[i]) return sizes[i];
    return -1;
}

int32_t gpu_ctx_bucket(int32_t need, int32_t max_ctx) {
    int32_t b = 256;
    while (b < need && b < max_ctx) b *= 2;
    return b < max_ctx ? b : max_ctx;
}

pagoda_status gpu_batch_pack(const pg_batch *b, int32_t block_size, const int32_t *out_rows, int32_t n_out,
                             bool allow_replay, int32_t max_tokens, int32_t max_ctx, int32_t btab_stride, int32_t *meta,
                             int32_t *btab, gpu_step_shape *shape) {
    const int32_t T = b->n_tok, MT = max_tokens;
    if (T <= 0 || T > max_tokens || n_out < 0 || n_out > T)
        return pg_fail(PAGODA_ERR_INVALID, "GPU batch: %d tokens, %d logits rows (max %d tokens)", T, n_out, max_tokens);
    int32_t need_ctx = 0;
    for (int32_t s = 0; s < b->n_seq; s++) {
        int32_t last = b->seq_pos0[s] + (b->seq_start[s + 1] - b->seq_start[s]) - 1;
        if (last >= max_ctx) return pg_fail(PAGODA_ERR_INVALID, "CUDA: position %d beyond the context of %d", last, max_ctx);
        if (last / block_size >= btab_stride)
            return pg_fail(PAGODA_ERR_INVALID, "CUDA: sequence %d needs %d blocks, the tables hold %d", s, last / block_size + 1,
                           btab_stride);
        if (last + 1 > need_ctx) need_ctx = last + 1;
    }
    /* decode steps (one token per sequence, every row wants logits) are padded for replay */
    bool replay = allow_replay && b->n_seq == T && n_out == T;
    int32_t Tp = replay ? gpu_decode_bucket(T) : -1;
    if (Tp < 0 || Tp > max_tokens) replay = false, Tp = T;
    shape->replay = replay;
    shape->n_tok = Tp;
    shape->n_rows = replay ? Tp : n_out;
    shape->ctx = replay ? gpu_ctx_bucket(need_ctx, max_ctx) : need_ctx;

    for (int32_t s = 0; s < b->n_seq; s++) {
        const int32_t *bt = b->block_tables[s];
        for (int32_t t = b->seq_start[s]; t < b->seq_start[s + 1]; t++) {
            int32_t p = b->seq_pos0[s] + (t - b->seq_start[s]);
            meta[GPU_META_TOK * MT + t] = b->tokens[t];
            meta[GPU_META_POS * MT + t] = p;
            meta[GPU_META_POSC * MT + t] = p;
            meta[GPU_META_SEQ * MT + t] = s;
            meta[GPU_META_SLOT * MT + t] = bt[p / block_size] * block_size + p % block_size;
        }
        int32_t nb = b->n_blocks[s] < btab_stride ? b->n_blocks[s] : btab_stride;
        memcpy(btab + (size_t)s * (size_t)btab_stride, bt, sizeof(int32_t) * (size_t)nb);
    }
    for (int32_t t = T; t < Tp; t++) { /* padding: no KV write, zero attention, logits ignored */
        meta[GPU_META_TOK * MT + t] = 0, meta[GPU_META_POS * MT + t] = -1, meta[GPU_META_POSC * MT + t] = 0;
        meta[GPU_META_SEQ * MT + t] = 0, meta[GPU_META_SLOT * MT + t] = -1;
    }
    for (int32_t i = 0; i < shape->n_rows; i++) meta[GPU_META_ROW * MT + i] = i < n_out ? out_rows[i] : 0;
    return PAGODA_OK;
}
