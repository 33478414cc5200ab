/* The forward pass on an NVIDIA GPU: the token embedding and layers [0, n_gpu_layers) run there
 * (weights uploaded once, K/V of those layers in device memory); with every layer on the GPU the
 * final norm and LM head run there too and only the logits come back. forward.c drives it. */
#ifndef PG_MODEL_FORWARD_CUDA_H
#define PG_MODEL_FORWARD_CUDA_H

#include <stdint.h>

#include "kv/kv_cache.h"
#include "model/forward.h"
#include "model/model.h"

typedef struct fwd_cuda fwd_cuda;

/* Uploads the weights and allocates device scratch for batches of up to max_tokens tokens. */
pagoda_status fwd_cuda_create(const pg_model *m, int32_t max_tokens, int32_t n_gpu_layers, fwd_cuda **out);
void fwd_cuda_destroy(fwd_cuda *g); /* NULL is a no-op */
struct pcu_stream *fwd_cuda_stream(fwd_cuda *g);
/* Page-locked host memory (NULL on failure). */
void *fwd_cuda_host_alloc(size_t bytes);
void fwd_cuda_host_free(void *p);
/* Device memory still free within utilization x total (0 if none). */
uint64_t fwd_cuda_kv_budget(const fwd_cuda *g, float utilization);

/* Runs a validated batch. All layers on the GPU: writes logits [n_out][n_vocab] for the batch
 * tokens out_rows[0..n_out), or with ids != NULL only each row's greedy token ids[n_out].
 * Otherwise: writes the residual stream after the GPU layers to x_host [n_tok][n_embd] for the
 * CPU to continue. */
pagoda_status fwd_cuda_run(fwd_cuda *g, const pg_batch *b, kv_cache *kv, const int32_t *out_rows, int32_t n_out,
                           float *logits, int32_t *ids, float *x_host);

#endif
