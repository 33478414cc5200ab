/* The engine's view of the model: a small table of operations (run a packed batch, copy KV
 * blocks, host buffers) plus what the model behind it can do. The engine reaches the model
 * only through this, so it can be tested against a fake runner, and a new forward pass or
 * backend changes one file: runner_forward.c, the default runner over model/forward.h and
 * kv/kv_cache.h. */
#ifndef PG_ENGINE_RUNNER_H
#define PG_ENGINE_RUNNER_H

#include <stddef.h>
#include <stdint.h>

#include "core/batch.h"
#include "pagoda.h"

/* One step's packed batch (core/batch.h, plain data) and how many logits rows it asks for. */
typedef struct {
    pg_batch b;
    int32_t n_rows; /* number of 1s in b.logits_mask (rows in batch order) */
    int32_t n_hidden; /* number of 1s in b.hidden_mask (0 when it is NULL) */
    float *hidden;  /* out: [n_hidden][n_embd] final hidden states of those tokens (from host_alloc) */
} engine_batch;

typedef struct {
    int32_t n_vocab;
    int32_t n_kv_blocks;     /* KV blocks of the engine's block size the runner holds */
    int32_t n_ctx_train;     /* context the model was trained for (0: unknown) */
    int32_t max_positions;   /* positions the runner can take at all (learned position table, device
                                limits); 0: no limit of its own */
    int32_t n_threads;       /* host threads the engine may use for sampling */
    int greedy_ids;          /* run() can return each row's greedy token instead of the row: then
                                only ids leave the device */
    const char *name;        /* where it runs, for the log ("cpu", "cuda", "cpu+cuda", "fake") */
    uint64_t kv_bytes;       /* memory of the KV blocks, for the log */
    int32_t n_embd;          /* length of hidden-state rows run() can return (b.hidden_mask); 0: none */
    int no_logits;           /* 1: the model has no LM head: run() can return hidden states only */
    int adapters;            /* 1: set_adapters works (LoRA on the CPU placement) */
} engine_runner_info;

struct pg_lora;
typedef struct engine_runner engine_runner;

/* An implementation embeds this as its first member. */
struct engine_runner {
    engine_runner_info info;
    /* Runs batch b (reading and writing K/V through its block tables). ids == NULL: logits
     * [n_rows][n_vocab] into logits (from host_alloc). ids != NULL (only when info.greedy_ids):
     * each row's greedy token (largest logit, lowest id among equals) into ids [n_rows] instead.
     * n_rows == 0: nothing is written. b->n_hidden > 0 (only when info.n_embd > 0): the final
     * hidden states of the tokens b.hidden_mask selects into b->hidden as well (ids is NULL
     * then). On error the batch's K/V are undefined. */
    pagoda_status (*run)(engine_runner *r, const engine_batch *b, float *logits, int32_t *ids);
    /* Copies KV block src to block dst in every layer (copy-on-write of a shared partial block).
     * An error means dst holds no valid copy: the sequence it was for must not run. */
    pagoda_status (*copy_block)(engine_runner *r, int32_t src, int32_t dst);
    /* Host memory the runner writes results into (page-locked where that makes copies faster). */
    void *(*host_alloc)(engine_runner *r, size_t bytes);
    void (*host_free)(engine_runner *r, void *p);
    void (*destroy)(engine_runner *r); /* NULL-safe through runner_destroy */
    /* Optional (NULL: the runner applies no adapters). The LoRA adapters batches may name
     * (b.seq_adapter = index into table, 0 = none): table[i] for 0 < i < n, borrowed until the next
     * call; called between steps. */
    pagoda_status (*set_adapters)(engine_runner *r, const struct pg_lora *const *table, int32_t n);
};

static inline void runner_destroy(engine_runner *r) {
    if (r) r->destroy(r);
}

/* The default runner: model/forward.h over kv/kv_cache.h, placed as c says (n_gpu_layers), with
 * c->kv_block_size-token KV blocks of c->kv_dtype in the budget c gives (kv_mem_bytes, else
 * kv_mem_fraction of available host memory; GPU layers from free device memory); batches of up
 * to c->max_batch_tokens tokens. c must already be normalized (no zero fields). Sets the kernel
 * thread count when c->n_threads > 0. */
pagoda_status runner_forward_create(const pagoda_model *pm, const pagoda_engine_config *c, engine_runner **out);
/* The same with the LM head computing only token ids [0, head_rows) (0: all): info.n_vocab is then
 * head_rows (a draft model's cheaper head, pg_forward_opts.head_rows). */
pagoda_status runner_forward_create_ex(const pagoda_model *pm, const pagoda_engine_config *c, int32_t head_rows,
                                       engine_runner **out);
/* A worker of a tensor-parallel group (c->tp, rank > 0): the default runner's share of the model,
 * running the steps rank 0's runner broadcasts until it is destroyed. c normalized as rank 0's. */
pagoda_status runner_tp_worker(const pagoda_model *pm, const pagoda_engine_config *c);

#endif
