/* The default engine runner: one forward pass (model/forward.h) over its paged KV memory
 * (held by the forward pass's backends). The only engine file that reaches the forward pass and
 * the KV memory. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/mem_broker.h"
#include "engine/model_api.h"
#include "engine/runner.h"
#include "kernels/kernels.h"
#include "model/forward.h"

typedef struct {
    engine_runner base;
    pg_forward *fwd;
    pg_kv *kv;
    int32_t n_layer;
    pagoda_memory_broker *broker; /* borrowed; what this engine holds of it is in grant */
    pg_broker_grant grant;
    int granted;
} fwd_runner;

static pagoda_status fr_run(engine_runner *r, const engine_batch *b, float *logits, int32_t *ids) {
    fwd_runner *f = (fwd_runner *)r;
    if (ids) return forward_run_argmax(f->fwd, &b->b, f->kv, ids);
    if (b->n_hidden > 0) return forward_run_hidden(f->fwd, &b->b, f->kv, logits, b->hidden);
    return forward_run(f->fwd, &b->b, f->kv, logits);
}

static pagoda_status fr_copy_block(engine_runner *r, int32_t src, int32_t dst) {
    fwd_runner *f = (fwd_runner *)r;
    return forward_kv_copy_block(f->kv, src, dst); /* checks the ids; a failed device copy is an error */
}

static void *fr_host_alloc(engine_runner *r, size_t bytes) { return forward_host_alloc(((fwd_runner *)r)->fwd, bytes); }
static void fr_host_free(engine_runner *r, void *p) {
    if (p) forward_host_free(((fwd_runner *)r)->fwd, p);
}

static pagoda_status fr_set_adapters(engine_runner *r, const struct pg_lora *const *table, int32_t n) {
    return forward_set_adapters(((fwd_runner *)r)->fwd, table, n);
}

static void fr_destroy(engine_runner *r) {
    fwd_runner *f = (fwd_runner *)r;
    forward_kv_destroy(f->kv);
    forward_destroy(f->fwd);
    if (f->granted) broker_give_back(f->broker, &f->grant);
    free(f);
}

pagoda_status runner_forward_create(const pagoda_model *pm, const pagoda_engine_config *c, engine_runner **out) {
    *out = NULL;
    const pg_model_config *mc = &pm->m->cfg;
    if (!kv_block_bytes(1, 1, 1, c->kv_dtype))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "engine: the KV cache holds f32, f16, int8 or fp8_e4m3, not type %d",
                       (int)c->kv_dtype);
    int32_t n_gpu = c->n_gpu_layers < 0 || c->n_gpu_layers > mc->n_layer ? mc->n_layer : c->n_gpu_layers;
    if (n_gpu > 0 && c->kv_dtype != PAGODA_DTYPE_F32 && c->kv_dtype != PAGODA_DTYPE_F16)
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "engine: a %s KV cache runs on the CPU backend only; the CUDA backend "
                       "holds f32 or f16 KV (use --kv-type f16, or no GPU layers)", kv_dtype_name(c->kv_dtype));
    fwd_runner *f = calloc(1, sizeof *f);
    if (!f) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    f->base.run = fr_run, f->base.copy_block = fr_copy_block, f->base.host_alloc = fr_host_alloc;
    f->base.host_free = fr_host_free, f->base.destroy = fr_destroy;
    f->base.set_adapters = fr_set_adapters;
    f->n_layer = mc->n_layer;
    pagoda_status st;
    /* the forward pass first: on a GPU the KV blocks get what the weights and scratch leave */
    if (c->cuda_qgemm < 0 || c->cuda_qgemm > 2 || c->cuda_device < 0) {
        st = pg_fail(PAGODA_ERR_INVALID, "engine: cuda_qgemm %d (0, 1 or 2) or cuda_device %d out of range", c->cuda_qgemm,
                     c->cuda_device);
        goto fail;
    }
    /* kernel threads: from the broker when there is one (never more than it has free) */
    int32_t n_threads = c->n_threads;
    if (c->broker && n_threads <= 0) {
        n_threads = broker_cores_free(c->broker);
        if (n_threads < 1) n_threads = 1; /* then taking it fails below, naming the shortage */
    }
    pg_forward_opts fo = {.n_gpu_layers = n_gpu, .n_threads = n_threads, .cuda_device = c->cuda_device,
                          .cuda_no_graphs = c->cuda_no_graphs, .cuda_no_repack = c->cuda_no_repack,
                          .cuda_qgemm = c->cuda_qgemm, .quant_act = c->quant_activations};
    if ((st = forward_create_ex(pm->m, c->max_batch_tokens, &fo, &f->fwd))) goto fail;

    /* KV blocks: host layers from the host budget, GPU layers from free device memory */
    size_t per_block_host, per_block_dev;
    forward_kv_block_bytes(f->fwd, c->kv_block_size, c->kv_dtype, &per_block_host, &per_block_dev);
    uint64_t n_blocks = UINT64_MAX, budget = 0;
    if (per_block_host) {
        if (c->broker) { /* a share of the broker's budget, within what it has left */
            budget = c->kv_mem_bytes ? c->kv_mem_bytes : (uint64_t)(c->kv_mem_fraction * (double)broker_host_total(c->broker));
            uint64_t left = broker_host_free(c->broker);
            if (budget > left) budget = left;
        } else {
            budget = c->kv_mem_bytes ? c->kv_mem_bytes : (uint64_t)(c->kv_mem_fraction * (double)pg_available_memory());
        }
        n_blocks = budget / per_block_host;
    }
    if (per_block_dev) {
        uint64_t dev_budget = forward_gpu_kv_budget(f->fwd, c->gpu_memory_utilization);
        if (c->kv_mem_bytes && c->kv_mem_bytes < dev_budget) dev_budget = c->kv_mem_bytes;
        if (c->broker && broker_gpu_free(c->broker, c->cuda_device) < dev_budget)
            dev_budget = broker_gpu_free(c->broker, c->cuda_device);
        if (dev_budget / per_block_dev < n_blocks) n_blocks = dev_budget / per_block_dev, budget = dev_budget;
    }
    if (n_blocks < 1 || n_blocks == UINT64_MAX) {
        st = pg_fail(PAGODA_ERR_INVALID, "KV budget of %llu bytes is less than one block of %d tokens (%zu bytes)",
                     (unsigned long long)budget, c->kv_block_size, per_block_dev ? per_block_dev : per_block_host);
        goto fail;
    }
    if (n_blocks > (1u << 24)) n_blocks = 1u << 24;
    if (c->broker) {
        f->grant = (pg_broker_grant){.host_bytes = n_blocks * (uint64_t)per_block_host,
                                     .gpu_bytes = n_blocks * (uint64_t)per_block_dev, .gpu_device = c->cuda_device,
                                     .cores = n_threads};
        if ((st = broker_take(c->broker, &f->grant))) goto fail;
        f->broker = c->broker, f->granted = 1;
    }
    if ((st = forward_kv_create(f->fwd, (int32_t)n_blocks, c->kv_block_size, c->kv_dtype, &f->kv))) goto fail;
    /* sampling runs on the kernel threads (idle then on the CPU; the host cores on a GPU) */
    /* the CPU backend sets its team size on the thread that steps; sampling uses as many */
    engine_runner_info *in = &f->base.info;
    in->n_vocab = mc->n_vocab;
    in->n_kv_blocks = (int32_t)n_blocks;
    in->n_ctx_train = mc->n_ctx_train;
    /* learned positions end at the table; the GPU path is sized for the trained context */
    in->max_positions = (mc->learned_pos || n_gpu > 0) && mc->n_ctx_train > 0 ? mc->n_ctx_train : 0;
    in->n_threads = n_threads > 0 ? n_threads : kcpu_get_threads();
    if (in->n_threads < 1) in->n_threads = 1;
    in->greedy_ids = forward_has_device_argmax(f->fwd);
    in->name = forward_placement(f->fwd);
    in->adapters = !strcmp(in->name, "cpu");
    in->kv_bytes = n_blocks * (uint64_t)(per_block_host + per_block_dev);
    in->n_embd = mc->n_embd;
    in->no_logits = pm->m->output.data == NULL;
    *out = &f->base;
    return PAGODA_OK;
fail:
    fr_destroy(&f->base);
    return st;
}
