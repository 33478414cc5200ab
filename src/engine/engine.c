/* The engine: requests in, token events out; every step schedules, runs one forward pass over
 * the whole continuous batch, samples and checks stop conditions (see ../shared/DESIGN.md,
 * "One step of the engine").
 *
 * Threads: submit/cancel/get_stats may be called from any thread; they only touch the inbox,
 * the cancel list and the stats under `mu`. Everything else (scheduler, KV, requests) belongs
 * to the thread that steps: the engine thread after pagoda_engine_start, else the caller of
 * pagoda_engine_step. Event callbacks run on that thread, with no lock held. */
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "engine/model_api.h"
#include "engine/sampler.h"
#include "engine/stop.h"
#include "kernels/kernels.h"
#include "kv/block_pool.h"
#include "kv/kv_cache.h"
#include "model/forward.h"
#include "sched/scheduler.h"
#include "core/clock.h"

enum { MAX_STOPS = 16, MAX_STOP_LEN = 256, MAX_STOP_TOKENS = 64, MAX_N = 64, MAX_LOGPROBS = SAMPLER_MAX_LOGPROBS };

typedef struct request request;

typedef struct {
    request *r;
    int32_t index;
    sched_seq *seq;          /* NULL before its fork exists and after it finishes */
    pg_sampler *sampler;
    tok_stream *detok;
    stop_matcher stop;
    int32_t n_generated;
    int counted;             /* prompt/cache statistics taken at first admission */
    pagoda_finish_reason finish;
} choice;

struct request {
    uint64_t id;
    pagoda_request p;        /* copy; pointers below are owned */
    int32_t *prompt;
    int32_t n_prompt;
    int32_t *stop_tokens;
    int32_t max_tokens;      /* resolved: > 0 */
    choice *choices;         /* [p.n] */
    int32_t n_live;          /* choices not finished */
    int32_t n_cached;
    int forked;
    request *next;           /* inbox / live list */
};

/* What the parallel phase of a step picked from one logits row. */
typedef struct {
    int32_t token;           /* -1: not picked there (a request that forks into n choices now) */
    float lp;                /* its log-probability, when the request asks for logprobs */
    int32_t top_tok[MAX_LOGPROBS];
    float top_lp[MAX_LOGPROBS];
} pick;

struct pagoda_engine {
    pagoda_model *pm;
    const pg_model *m;
    const pg_tokenizer *tok;
    pagoda_engine_config c;
    int32_t n_vocab, max_model_len;
    pg_kv *kv;
    kv_pool *pool;
    scheduler *sched;
    pg_forward *fwd;
    float *logits;           /* [max_seqs][n_vocab] */
    pg_sample_ws **ws;       /* [n_pick_threads] sampling buffers, one per thread */
    int n_pick_threads;
    pick *picks;             /* [max_seqs] */
    int32_t *b_tokens;       /* [max_batch_tokens] */
    uint8_t *b_mask;         /* [max_batch_tokens] */
    int32_t *b_seq_start;    /* [max_seqs + 1] */
    int32_t *b_pos0, *b_nblocks; /* [max_seqs] */
    const int32_t **b_tables;    /* [max_seqs] */
    int32_t *b_row;          /* [max_seqs] logits row of each planned sequence, -1 none */
    int32_t *b_ids;          /* [max_seqs] greedy token of each logits row (device argmax steps) */
    int device_argmax;       /* every layer on the GPU: plain greedy steps bring back token ids only */
    char *text;              /* detokenizer output */
    size_t cap_text;
    request *live;           /* stepping thread only */
    /* shared with other threads, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    request *inbox, *inbox_tail;
    int32_t n_inbox;
    uint64_t *cancels;
    int32_t n_cancels, cap_cancels;
    int cancel_all;
    int stop, started;
    pthread_t thread;
    uint64_t next_id, rng;
    pagoda_engine_stats stats;
};

void pagoda_engine_config_default(pagoda_engine_config *c) {
    memset(c, 0, sizeof *c);
    c->kv_block_size = 16;
    c->kv_mem_fraction = 0.25f;
    c->max_batch_tokens = 256;
    c->max_seqs = 64;
    c->prefix_caching = 1;
    c->kv_dtype = PAGODA_DTYPE_F32;
    c->gpu_memory_utilization = 0.9f;
}

void pagoda_sampling_default(pagoda_sampling *s) {
    memset(s, 0, sizeof *s);
    s->temperature = 1.0f;
    s->top_p = 1.0f;
    s->repetition_penalty = 1.0f;
    s->seed = -1;
}

void pagoda_request_default(pagoda_request *r) {
    memset(r, 0, sizeof *r);
    pagoda_sampling_default(&r->sampling);
    r->skip_special = 1;
    r->n = 1;
    r->logprobs = -1;
}

static uint64_t available_memory(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    unsigned long long kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb ? kb * 1024ull : 4ull << 30;
}

static void free_request(request *r) {
    if (!r) return;
    for (int32_t i = 0; r->choices && i < r->p.n; i++) {
        sampler_destroy(r->choices[i].sampler);
        tok_stream_destroy(r->choices[i].detok);
        stop_free(&r->choices[i].stop);
    }
    free(r->choices), free(r->prompt), free(r->stop_tokens), free(r);
}

pagoda_status pagoda_engine_create(pagoda_model *pm, const pagoda_engine_config *cfg, pagoda_engine **out) {
    *out = NULL;
    pagoda_engine_config c;
    if (cfg) c = *cfg; else pagoda_engine_config_default(&c);
    if (c.kv_block_size <= 0) c.kv_block_size = 16;
    if (c.max_batch_tokens <= 0) c.max_batch_tokens = 256;
    if (c.max_seqs <= 0) c.max_seqs = 64;
    if (c.kv_mem_fraction <= 0 || c.kv_mem_fraction > 0.95f) c.kv_mem_fraction = 0.25f;
    if (c.kv_block_size > 1024 || c.max_seqs > 4096 || c.max_batch_tokens > 65536)
        return pg_fail(PAGODA_ERR_INVALID, "engine: block size %d, max seqs %d or max batch tokens %d out of range",
                       c.kv_block_size, c.max_seqs, c.max_batch_tokens);
    const pg_model_config *mc = &pm->m->cfg;
    if (c.kv_dtype != PAGODA_DTYPE_F32 && c.kv_dtype != PAGODA_DTYPE_F16)
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "engine: the KV cache holds f32 or f16, not type %d", (int)c.kv_dtype);
    if (!(c.gpu_memory_utilization > 0.05f && c.gpu_memory_utilization <= 1.0f)) c.gpu_memory_utilization = 0.9f;
    int32_t n_gpu = c.n_gpu_layers < 0 || c.n_gpu_layers > mc->n_layer ? mc->n_layer : c.n_gpu_layers;

    pagoda_engine *e = calloc(1, sizeof *e);
    if (!e) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    e->pm = pm, e->m = pm->m, e->tok = pm->tok, e->c = c;
    e->n_vocab = mc->n_vocab;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    e->rng = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)e;
    e->next_id = 1;
    pagoda_status st;
    /* the forward pass first: on a GPU the KV blocks get what the weights and scratch leave */
    if (c.cuda_qgemm < 0 || c.cuda_qgemm > 2 || c.cuda_device < 0) {
        st = pg_fail(PAGODA_ERR_INVALID, "engine: cuda_qgemm %d (0, 1 or 2) or cuda_device %d out of range", c.cuda_qgemm,
                     c.cuda_device);
        goto fail;
    }
    pg_forward_opts fo = {.n_gpu_layers = n_gpu, .n_threads = c.n_threads, .cuda_device = c.cuda_device,
                          .cuda_no_graphs = c.cuda_no_graphs, .cuda_no_repack = c.cuda_no_repack,
                          .cuda_qgemm = c.cuda_qgemm};
    if ((st = forward_create_ex(e->m, c.max_batch_tokens, &fo, &e->fwd))) goto fail;

    /* KV blocks: host layers from the host budget, GPU layers from free device memory */
    size_t per_block_host, per_block_dev;
    forward_kv_block_bytes(e->fwd, c.kv_block_size, c.kv_dtype, &per_block_host, &per_block_dev);
    uint64_t n_blocks = UINT64_MAX, budget = 0;
    if (per_block_host) {
        budget = c.kv_mem_bytes ? c.kv_mem_bytes : (uint64_t)(c.kv_mem_fraction * (double)available_memory());
        n_blocks = budget / per_block_host;
    }
    if (per_block_dev) {
        uint64_t dev_budget = forward_gpu_kv_budget(e->fwd, c.gpu_memory_utilization);
        if (c.kv_mem_bytes && c.kv_mem_bytes < dev_budget) dev_budget = c.kv_mem_bytes;
        if (dev_budget / per_block_dev < n_blocks) n_blocks = dev_budget / per_block_dev, budget = dev_budget;
    }
    size_t per_block = per_block_host + per_block_dev;
    if (n_blocks < 1 || n_blocks == UINT64_MAX) {
        st = pg_fail(PAGODA_ERR_INVALID, "KV budget of %llu bytes is less than one block of %d tokens (%zu bytes)",
                     (unsigned long long)budget, c.kv_block_size, per_block_dev ? per_block_dev : per_block_host);
        goto fail;
    }
    if (n_blocks > (1u << 24)) n_blocks = 1u << 24;
    int64_t max_len = c.max_model_len > 0 ? c.max_model_len : mc->n_ctx_train;
    if (max_len <= 0) max_len = 4096;
    if ((mc->learned_pos || n_gpu > 0) && max_len > mc->n_ctx_train && mc->n_ctx_train > 0) max_len = mc->n_ctx_train;
    if ((int64_t)n_blocks * c.kv_block_size < max_len) max_len = (int64_t)n_blocks * c.kv_block_size;
    e->max_model_len = (int32_t)max_len;
    sched_config sc = {.max_batch_tokens = c.max_batch_tokens, .max_seqs = c.max_seqs, .prefix_caching = c.prefix_caching};
    if ((st = forward_kv_create(e->fwd, (int32_t)n_blocks, c.kv_block_size, c.kv_dtype, &e->kv)) ||
        (st = kv_pool_create((int32_t)n_blocks, c.kv_block_size, &e->pool)) ||
        (st = sched_create(&sc, e->pool, &e->sched)))
        goto fail;
    size_t V = (size_t)e->n_vocab, S = (size_t)c.max_seqs, T = (size_t)c.max_batch_tokens;
    e->logits = forward_host_alloc(e->fwd, S * V * sizeof(float)); /* pinned on a GPU: faster copies */
    /* sampling runs on the kernel threads (idle then on the CPU; the host cores on a GPU) */
    if (c.n_threads > 0) kcpu_set_threads(c.n_threads);
    e->n_pick_threads = kcpu_get_threads() > 0 ? kcpu_get_threads() : 1;
    e->ws = calloc((size_t)e->n_pick_threads, sizeof *e->ws);
    for (int i = 0; e->ws && i < e->n_pick_threads; i++)
        if ((st = sampler_ws_create(e->n_vocab, &e->ws[i]))) goto fail;
    e->picks = malloc(S * sizeof(pick));
    e->b_tokens = malloc(T * sizeof(int32_t));
    e->b_mask = malloc(T);
    e->b_seq_start = malloc((S + 1) * sizeof(int32_t));
    e->b_pos0 = malloc(S * sizeof(int32_t));
    e->b_nblocks = malloc(S * sizeof(int32_t));
    e->b_tables = malloc(S * sizeof(*e->b_tables));
    e->b_row = malloc(S * sizeof(int32_t));
    e->b_ids = malloc(S * sizeof(int32_t));
    e->device_argmax = forward_has_device_argmax(e->fwd) && !getenv("PAGODA_NO_DEVICE_ARGMAX");
    e->cap_text = 4096;
    e->text = malloc(e->cap_text);
    if (!e->logits || !e->ws || !e->picks || !e->b_tokens || !e->b_mask || !e->b_seq_start || !e->b_pos0 ||
        !e->b_nblocks || !e->b_tables || !e->b_row || !e->b_ids || !e->text) {
        st = pg_fail(PAGODA_ERR_NOMEM, "engine: out of memory");
        goto fail;
    }
    e->stats.kv_blocks_total = (int32_t)n_blocks;
    e->stats.kv_block_size = c.kv_block_size;
    e->stats.max_model_len = e->max_model_len;
    pg_log(PAGODA_LOG_INFO, "engine: %s, KV cache %llu blocks x %d tokens (%s, %.1f MiB), max model len %d, %d tokens/step, %d seqs",
           n_gpu == 0 ? "cpu" : n_gpu == mc->n_layer ? "cuda" : "cpu+cuda", (unsigned long long)n_blocks, c.kv_block_size, c.kv_dtype == PAGODA_DTYPE_F16 ? "f16" : "f32", (double)n_blocks * (double)per_block / 1048576.0,
           e->max_model_len, c.max_batch_tokens, c.max_seqs);
    *out = e;
    return PAGODA_OK;
fail:
    pagoda_engine_destroy(e);
    return st;
}

/* ---- submission (any thread) ---- */

static pagoda_status validate(const pagoda_engine *e, const pagoda_request *p) {
    const pagoda_sampling *s = &p->sampling;
    if (p->n < 1 || p->n > MAX_N) return pg_fail(PAGODA_ERR_INVALID, "n must be in [1, %d], got %d", MAX_N, p->n);
    if (p->logprobs > MAX_LOGPROBS) return pg_fail(PAGODA_ERR_INVALID, "logprobs must be at most %d, got %d", MAX_LOGPROBS, p->logprobs);
    if (!isfinite(s->temperature) || s->temperature < 0 || s->temperature > 100)
        return pg_fail(PAGODA_ERR_INVALID, "temperature must be in [0, 100], got %g", s->temperature);
    if (!isfinite(s->top_p) || s->top_p <= 0 || s->top_p > 1) return pg_fail(PAGODA_ERR_INVALID, "top_p must be in (0, 1], got %g", s->top_p);
    if (!isfinite(s->min_p) || s->min_p < 0 || s->min_p > 1) return pg_fail(PAGODA_ERR_INVALID, "min_p must be in [0, 1], got %g", s->min_p);
    if (s->top_k < -1) return pg_fail(PAGODA_ERR_INVALID, "top_k must be -1, 0 or positive, got %d", s->top_k);
    if (!isfinite(s->presence_penalty) || fabsf(s->presence_penalty) > 2)
        return pg_fail(PAGODA_ERR_INVALID, "presence_penalty must be in [-2, 2], got %g", s->presence_penalty);
    if (!isfinite(s->frequency_penalty) || fabsf(s->frequency_penalty) > 2)
        return pg_fail(PAGODA_ERR_INVALID, "frequency_penalty must be in [-2, 2], got %g", s->frequency_penalty);
    if (!isfinite(s->repetition_penalty) || s->repetition_penalty <= 0 || s->repetition_penalty > 10)
        return pg_fail(PAGODA_ERR_INVALID, "repetition_penalty must be in (0, 10], got %g", s->repetition_penalty);
    if (p->n_stop < 0 || p->n_stop > MAX_STOPS || (p->n_stop && !p->stop))
        return pg_fail(PAGODA_ERR_INVALID, "at most %d stop strings", MAX_STOPS);
    for (int32_t i = 0; i < p->n_stop; i++) {
        size_t l = p->stop[i] ? strlen(p->stop[i]) : 0;
        if (l == 0 || l > MAX_STOP_LEN)
            return pg_fail(PAGODA_ERR_INVALID, "stop string %d must be 1 to %d bytes long", i, MAX_STOP_LEN);
    }
    if (p->n_stop_token_ids < 0 || p->n_stop_token_ids > MAX_STOP_TOKENS || (p->n_stop_token_ids && !p->stop_token_ids))
        return pg_fail(PAGODA_ERR_INVALID, "at most %d stop token ids", MAX_STOP_TOKENS);
    for (int32_t i = 0; i < p->n_stop_token_ids; i++)
        if (p->stop_token_ids[i] < 0 || p->stop_token_ids[i] >= e->n_vocab)
            return pg_fail(PAGODA_ERR_INVALID, "stop token id %d out of range [0, %d)", p->stop_token_ids[i], e->n_vocab);
    if (!p->prompt && (p->n_prompt_tokens <= 0 || !p->prompt_tokens))
        return pg_fail(PAGODA_ERR_INVALID, "the request has no prompt");
    return PAGODA_OK;
}

static pagoda_status make_request(pagoda_engine *e, const pagoda_request *p, request **out) {
    *out = NULL;
    pagoda_status st = validate(e, p);
    if (st) return st;
    request *r = calloc(1, sizeof *r);
    if (!r) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    r->p = *p;
    r->p.stop = NULL, r->p.stop_token_ids = NULL, r->p.prompt = NULL, r->p.prompt_tokens = NULL;
    if (p->prompt && !e->tok) {
        st = pg_fail(PAGODA_ERR_INVALID, "this model has no tokenizer: send the prompt as token ids");
        goto fail;
    }
    if (p->n_stop && !e->tok) {
        st = pg_fail(PAGODA_ERR_INVALID, "this model has no tokenizer: stop strings cannot be matched");
        goto fail;
    }
    if (p->prompt) {
        size_t n = 0, len = p->prompt_len ? p->prompt_len : strlen(p->prompt);
        if ((st = tok_encode(e->tok, p->prompt, len, true, true, &r->prompt, &n))) goto fail;
        /* a prompt that already starts with BOS (rendered chat templates do) gets no second one */
        if (n >= 2 && r->prompt[0] == tok_bos(e->tok) && r->prompt[1] == r->prompt[0]) {
            memmove(r->prompt, r->prompt + 1, (n - 1) * sizeof(int32_t));
            n--;
        }
        if (n > (size_t)INT32_MAX) n = INT32_MAX;
        r->n_prompt = (int32_t)n;
    } else {
        r->n_prompt = p->n_prompt_tokens;
        if (!(r->prompt = malloc((size_t)r->n_prompt * sizeof(int32_t)))) goto nomem;
        for (int32_t i = 0; i < r->n_prompt; i++) {
            if (p->prompt_tokens[i] < 0 || p->prompt_tokens[i] >= e->n_vocab) {
                st = pg_fail(PAGODA_ERR_INVALID, "prompt token %d at position %d is out of range [0, %d)",
                             p->prompt_tokens[i], i, e->n_vocab);
                goto fail;
            }
            r->prompt[i] = p->prompt_tokens[i];
        }
    }
    if (r->n_prompt <= 0) {
        st = pg_fail(PAGODA_ERR_INVALID, "the prompt is empty");
        goto fail;
    }
    if (r->n_prompt >= e->max_model_len) {
        st = pg_fail(PAGODA_ERR_INVALID,
                     "the prompt has %d tokens, but this model's context is %d tokens (at least one must be left to generate)",
                     r->n_prompt, e->max_model_len);
        goto fail;
    }
    r->max_tokens = p->max_tokens > 0 ? p->max_tokens : e->max_model_len - r->n_prompt;
    if ((int64_t)r->n_prompt + r->max_tokens > e->max_model_len) {
        st = pg_fail(PAGODA_ERR_INVALID,
                     "the prompt has %d tokens and max_tokens is %d: %lld in all, over this model's context of %d tokens",
                     r->n_prompt, r->max_tokens, (long long)r->n_prompt + r->max_tokens, e->max_model_len);
        goto fail;
    }
    if (p->n_stop_token_ids) {
        if (!(r->stop_tokens = malloc((size_t)p->n_stop_token_ids * sizeof(int32_t)))) goto nomem;
        memcpy(r->stop_tokens, p->stop_token_ids, (size_t)p->n_stop_token_ids * sizeof(int32_t));
    }
    if (!(r->choices = calloc((size_t)p->n, sizeof *r->choices))) goto nomem;
    pthread_mutex_lock(&e->mu);
    uint64_t seed = p->sampling.seed >= 0 ? (uint64_t)p->sampling.seed : (e->rng = e->rng * 6364136223846793005ull + 1442695040888963407ull);
    pthread_mutex_unlock(&e->mu);
    for (int32_t i = 0; i < p->n; i++) {
        choice *ch = &r->choices[i];
        ch->r = r, ch->index = i;
        pg_sampling_params sp = sampler_default_params();
        sp.temperature = p->sampling.temperature;
        sp.top_k = p->sampling.top_k > 0 ? p->sampling.top_k : 0;
        sp.top_p = p->sampling.top_p;
        sp.min_p = p->sampling.min_p;
        sp.repetition_penalty = p->sampling.repetition_penalty;
        sp.presence_penalty = p->sampling.presence_penalty;
        sp.frequency_penalty = p->sampling.frequency_penalty;
        sp.penalty_last_n = -1; /* penalties look at the generated tokens (OpenAI semantics) */
        sp.seed = seed + (uint64_t)i;
        if ((st = sampler_create_lean(&sp, e->n_vocab, &ch->sampler)) ||
            (e->tok && (st = tok_stream_create(e->tok, p->skip_special != 0, &ch->detok))) ||
            (st = stop_init(&ch->stop, p->stop, p->n_stop)))
            goto fail;
    }
    r->n_live = p->n;
    *out = r;
    return PAGODA_OK;
nomem:
    st = pg_fail(PAGODA_ERR_NOMEM, "out of memory");
fail:
    free_request(r);
    return st;
}

pagoda_status pagoda_engine_submit(pagoda_engine *e, const pagoda_request *p, uint64_t *id) {
    if (id) *id = 0;
    if (!e || !p) return pg_fail(PAGODA_ERR_INVALID, "engine and request are required");
    if (e->c.max_waiting > 0) {
        pthread_mutex_lock(&e->mu);
        int busy = e->n_inbox + e->stats.n_waiting >= e->c.max_waiting;
        pthread_mutex_unlock(&e->mu);
        if (busy) return pg_fail(PAGODA_ERR_BUSY, "server busy: %d requests are already waiting", e->c.max_waiting);
    }
    request *r;
    pagoda_status st = make_request(e, p, &r);
    if (st) return st;
    pthread_mutex_lock(&e->mu);
    if (e->stop) {
        pthread_mutex_unlock(&e->mu);
        free_request(r);
        return pg_fail(PAGODA_ERR_BUSY, "the engine is shutting down");
    }
    r->id = e->next_id++;
    if (e->inbox_tail) e->inbox_tail->next = r; else e->inbox = r;
    e->inbox_tail = r;
    e->n_inbox++;
    e->stats.n_requests_submitted++;
    e->stats.n_live_requests++;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (id) *id = r->id;
    return PAGODA_OK;
}

void pagoda_engine_cancel(pagoda_engine *e, uint64_t id) {
    pthread_mutex_lock(&e->mu);
    if (e->n_cancels == e->cap_cancels) {
        int32_t cap = e->cap_cancels ? 2 * e->cap_cancels : 64;
        uint64_t *c = realloc(e->cancels, (size_t)cap * sizeof *c);
        if (c) e->cancels = c, e->cap_cancels = cap;
    }
    if (e->n_cancels < e->cap_cancels) e->cancels[e->n_cancels++] = id;
    else e->cancel_all = 1; /* out of memory: better to cancel too much than to leak a request */
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

void pagoda_engine_cancel_all(pagoda_engine *e) {
    pthread_mutex_lock(&e->mu);
    e->cancel_all = 1;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

void pagoda_engine_get_stats(pagoda_engine *e, pagoda_engine_stats *s) {
    pthread_mutex_lock(&e->mu);
    *s = e->stats;
    pthread_mutex_unlock(&e->mu);
}

/* ---- the stepping thread ---- */

static void emit(choice *ch, const char *text, size_t len, int32_t token, pagoda_finish_reason fin,
                 const char *error, const float *top_lp, const int32_t *top_tok, int32_t n_top, float logprob) {
    request *r = ch->r;
    if (!r->p.on_event) return;
    pagoda_event ev = {.request_id = r->id, .index = ch->index, .text = text ? text : "", .text_len = len,
                       .token = token, .logprob = logprob, .n_top = n_top, .top_tokens = top_tok,
                       .top_logprobs = top_lp, .finish = fin, .error = error,
                       .request_done = fin != PAGODA_FINISH_NONE && r->n_live == 0, .n_prompt_tokens = r->n_prompt,
                       .n_cached_tokens = r->n_cached, .n_completion_tokens = ch->n_generated};
    r->p.on_event(&ev, r->p.user);
}

static void unlink_live(pagoda_engine *e, request *r) {
    for (request **l = &e->live; *l; l = &(*l)->next)
        if (*l == r) {
            *l = r->next;
            return;
        }
}

/* Live requests with a running sequence, and the others (a request's choices run together
 * unless some were preempted). Stepping thread; caller holds mu for the stats. */
static void count_requests(const pagoda_engine *e, pagoda_engine_stats *st) {
    int32_t run = 0, wait = e->n_inbox;
    for (const request *r = e->live; r; r = r->next) {
        if (r->n_live == 0) continue; /* finishing right now */
        int running = 0;
        for (int32_t i = 0; i < r->p.n && !running; i++)
            running = r->choices[i].seq && r->choices[i].seq->state == SEQ_RUNNING;
        running ? run++ : wait++;
    }
    st->n_running_requests = run, st->n_waiting_requests = wait;
}

/* The stats' gauges from the scheduler and pool (caller holds mu). */
static void set_gauges(pagoda_engine *e) {
    count_requests(e, &e->stats);
    e->stats.n_running = sched_n_running(e->sched);
    e->stats.n_waiting = sched_n_waiting(e->sched);
    e->stats.kv_blocks_cached = kv_pool_n_cached(e->pool);
    e->stats.kv_blocks_used = kv_pool_n_blocks(e->pool) - kv_pool_n_free(e->pool);
}

/* Ends one choice: frees its sequence and sends the finish event, with whatever text was held
 * back (incomplete UTF-8, a possible stop-string start) when flush is set. */
static void end_choice(pagoda_engine *e, choice *ch, pagoda_finish_reason why, const char *error, int flush) {
    if (ch->finish != PAGODA_FINISH_NONE) return;
    request *r = ch->r;
    if (ch->seq) sched_finish(e->sched, ch->seq);
    ch->seq = NULL;
    ch->finish = why;
    r->n_live--;
    if (r->n_live == 0) { /* counters first, so whoever sees request_done also sees them settled */
        pthread_mutex_lock(&e->mu);
        e->stats.n_requests_finished++;
        e->stats.n_live_requests--;
        set_gauges(e);
        pthread_mutex_unlock(&e->mu);
    }
    char *joined = NULL;
    size_t n_joined = 0;
    if (flush) {
        size_t n = ch->detok ? tok_stream_flush(ch->detok, e->text, e->cap_text) : 0;
        const char *head, *rest = "";
        size_t n_head, n_rest = 0;
        int stopped = stop_push(&ch->stop, e->text, n <= e->cap_text ? n : 0, &head, &n_head);
        if (stopped == 0) stop_flush(&ch->stop, &rest, &n_rest);
        if (stopped >= 0 && (joined = malloc(n_head + n_rest + 1))) {
            memcpy(joined, head, n_head);
            memcpy(joined + n_head, rest, n_rest);
            n_joined = n_head + n_rest;
        }
    }
    emit(ch, joined, n_joined, -1, why, error, NULL, NULL, 0, 0);
    free(joined);
}

/* Frees a request once all its choices have ended. */
static void retire_if_done(pagoda_engine *e, request *r) {
    if (r->n_live > 0) return;
    unlink_live(e, r);
    free_request(r);
}

/* Ends a choice and retires its request after the last one. A request whose other choices
 * were never forked ends with its first. */
static void finish_choice(pagoda_engine *e, choice *ch, pagoda_finish_reason why, const char *error, int flush) {
    request *r = ch->r;
    end_choice(e, ch, why, error, flush);
    if (!r->forked && ch->index == 0)
        for (int32_t j = 1; j < r->p.n; j++) end_choice(e, &r->choices[j], why, error, 0);
    retire_if_done(e, r);
}

static void cancel_request(pagoda_engine *e, request *r, pagoda_finish_reason why, const char *error) {
    for (int32_t i = 0; i < r->p.n; i++) end_choice(e, &r->choices[i], why, error, 0);
    retire_if_done(e, r);
}

static int is_stop_token(const request *r, int32_t t) {
    for (int32_t i = 0; i < r->p.n_stop_token_ids; i++)
        if (r->stop_tokens[i] == t) return 1;
    return 0;
}

/* Samples ch's next token from a logits row (and its logprobs, if the request wants them: those
 * of the raw logits, the model's distribution before any sampling transform).
 * Touches only ch's sampler and ws, so rows of different choices go in parallel. */
static void pick_token(int32_t V, choice *ch, const float *row, pg_sample_ws *ws, pick *out) {
    const request *r = ch->r;
    out->token = sampler_sample_ws(ch->sampler, row, ws);
    int32_t k = r->p.logprobs > 0 ? r->p.logprobs : 0;
    if (r->p.logprobs >= 0) out->lp = sampler_logprobs(row, V, out->token, k, out->top_tok, out->top_lp);
}

static void accept_token(pagoda_engine *e, choice *ch, int32_t t, const pick *pk);

/* Samples the next token of ch from a logits row and emits it; finishes the choice if it ends. */
static void sample_choice(pagoda_engine *e, choice *ch, const float *row) {
    pick pk;
    pick_token(e->n_vocab, ch, row, e->ws[0], &pk);
    accept_token(e, ch, pk.token, &pk);
}

/* true if a choice's next token is the plain argmax (no penalties, no logprobs): the GPU can
 * pick it, and no logits need to come back. */
static int greedy_plain(const request *r) {
    const pagoda_sampling *p = &r->p.sampling;
    return (p->temperature <= 0 || p->top_k == 1) && p->repetition_penalty == 1.0f && p->presence_penalty == 0 &&
           p->frequency_penalty == 0 && r->p.logprobs < 0 && r->p.n == 1;
}

/* Emits token t of ch (pk: its logprobs, NULL when none were asked for); finishes the choice if it ends. */
static void accept_token(pagoda_engine *e, choice *ch, int32_t t, const pick *pk) {
    request *r = ch->r;
    sampler_accept(ch->sampler, t);
    ch->n_generated++;
    pthread_mutex_lock(&e->mu);
    e->stats.n_generated_tokens++;
    pthread_mutex_unlock(&e->mu);
    if ((!r->p.ignore_eos && e->tok && tok_is_eog(e->tok, t)) || is_stop_token(r, t)) {
        finish_choice(e, ch, PAGODA_FINISH_STOP, NULL, 1);
        return;
    }
    int32_t k = r->p.logprobs > 0 && pk ? r->p.logprobs : 0;
    float lp = r->p.logprobs >= 0 && pk ? pk->lp : 0;
    size_t n = ch->detok ? tok_stream_push(ch->detok, t, e->text, e->cap_text) : 0;
    while (n > e->cap_text) { /* a very long token piece: grow once and retry */
        char *b = realloc(e->text, n * 2);
        if (!b) {
            finish_choice(e, ch, PAGODA_FINISH_ERROR, "out of memory", 0);
            return;
        }
        e->text = b, e->cap_text = n * 2;
        n = tok_stream_push(ch->detok, t, e->text, e->cap_text);
    }
    const char *out;
    size_t n_out;
    int stopped = stop_push(&ch->stop, e->text, n, &out, &n_out);
    if (stopped < 0) {
        finish_choice(e, ch, PAGODA_FINISH_ERROR, "out of memory", 0);
        return;
    }
    emit(ch, out, n_out, t, PAGODA_FINISH_NONE, NULL, k ? pk->top_lp : NULL, k ? pk->top_tok : NULL, k, lp);
    if (stopped) {
        finish_choice(e, ch, PAGODA_FINISH_STOP, NULL, 0);
    } else if (ch->n_generated >= r->max_tokens || ch->seq->n_tokens + 1 >= e->max_model_len) {
        finish_choice(e, ch, PAGODA_FINISH_LENGTH, NULL, 1);
    } else if (sched_append(e->sched, ch->seq, t)) {
        finish_choice(e, ch, PAGODA_FINISH_ERROR, "out of memory", 1);
    }
}

/* New requests become sequences; cancellations are applied. */
static void take_inbox(pagoda_engine *e) {
    pthread_mutex_lock(&e->mu);
    request *in = e->inbox;
    e->inbox = e->inbox_tail = NULL;
    e->n_inbox = 0;
    int all = e->cancel_all;
    e->cancel_all = 0;
    int32_t n_cancels = e->n_cancels;
    uint64_t stack_ids[64], *ids = stack_ids;
    if (n_cancels > 64 && !(ids = malloc((size_t)n_cancels * sizeof *ids))) ids = stack_ids, n_cancels = 0, all = 1;
    if (n_cancels) memcpy(ids, e->cancels, (size_t)n_cancels * sizeof *ids);
    e->n_cancels = 0;
    pthread_mutex_unlock(&e->mu);
    while (in) {
        request *r = in;
        in = in->next;
        r->next = e->live;
        e->live = r;
        if (sched_add(e->sched, r->id, &r->choices[0], r->prompt, r->n_prompt, &r->choices[0].seq)) {
            cancel_request(e, r, PAGODA_FINISH_ERROR, "out of memory");
            continue;
        }
    }
    for (int32_t i = 0; i < n_cancels; i++)
        for (request *r = e->live; r; r = r->next)
            if (r->id == ids[i]) {
                cancel_request(e, r, PAGODA_FINISH_CANCELLED, NULL);
                break;
            }
    if (ids != stack_ids) free(ids);
    if (all)
        while (e->live) cancel_request(e, e->live, PAGODA_FINISH_CANCELLED, NULL);
}

static void update_gauges(pagoda_engine *e) {
    pthread_mutex_lock(&e->mu);
    set_gauges(e);
    pthread_mutex_unlock(&e->mu);
}

/* The parallel phase of sampling: every logits row of a choice that does not fork now gets its
 * token (and logprobs) on the kernel threads. At a few hundred sequences, sampling one row after
 * another took longer than a GPU forward pass. */
static void pick_rows(pagoda_engine *e, const sched_plan *plan, int32_t rows) {
    const int32_t n = plan->n_seqs, V = e->n_vocab;
    int nt = e->n_pick_threads < rows ? e->n_pick_threads : rows;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt > 0 ? nt : 1) if (nt > 1)
    for (int32_t i = 0; i < n; i++) {
        pick *pk = &e->picks[i];
        pk->token = -1;
        if (e->b_row[i] < 0) continue;
        choice *ch = plan->seqs[i]->owner;
        if (ch->r->p.n > 1 && !ch->r->forked) continue; /* forks in batch order, below */
        const float *row = e->logits + (size_t)e->b_row[i] * (size_t)V;
        pick_token(V, ch, row, e->ws[omp_get_thread_num()], pk);
    }
}

/* One engine step. Returns 1 if it ran a forward pass, 0 if there was nothing to run. */
static int step(pagoda_engine *e) {
    double t_start = pg_now_s();
    take_inbox(e);
    sched_plan plan;
    sched_schedule(e->sched, &plan);
    if (plan.n_seqs == 0) {
        update_gauges(e);
        return 0;
    }
    pagoda_status st = PAGODA_OK;
    for (int32_t i = 0; i < plan.n_copies && !st; i++) st = forward_kv_copy_block(e->kv, plan.copies[i][0], plan.copies[i][1]);
    int32_t t = 0, rows = 0;
    uint64_t prompt_tokens = 0, cached_tokens = 0;
    for (int32_t i = 0; i < plan.n_seqs; i++) {
        sched_seq *q = plan.seqs[i];
        choice *ch = q->owner;
        if (!ch->counted && q->n_computed == q->n_cached) { /* first admission */
            ch->counted = 1;
            if (ch->index == 0) {
                ch->r->n_cached = q->n_cached;
                prompt_tokens += (uint64_t)ch->r->n_prompt;
                cached_tokens += (uint64_t)q->n_cached;
            }
        }
        e->b_seq_start[i] = t;
        e->b_pos0[i] = q->n_computed;
        e->b_tables[i] = q->blocks;
        e->b_nblocks[i] = q->n_blocks;
        memcpy(e->b_tokens + t, q->tokens + q->n_computed, (size_t)plan.n_new[i] * sizeof(int32_t));
        memset(e->b_mask + t, 0, (size_t)plan.n_new[i]);
        t += plan.n_new[i];
        int wants = q->n_computed + plan.n_new[i] == q->n_tokens;
        e->b_mask[t - 1] = (uint8_t)wants;
        e->b_row[i] = wants ? rows++ : -1;
    }
    e->b_seq_start[plan.n_seqs] = t;
    pg_batch b = {.n_tok = t, .tokens = e->b_tokens, .n_seq = plan.n_seqs, .seq_start = e->b_seq_start,
                  .seq_pos0 = e->b_pos0, .block_tables = e->b_tables, .n_blocks = e->b_nblocks, .logits_mask = e->b_mask};
    /* every row greedy and plain: the GPU returns token ids only */
    int argmax = rows > 0 && e->device_argmax;
    for (int32_t i = 0; argmax && i < plan.n_seqs; i++)
        if (e->b_row[i] >= 0 && !greedy_plain(((choice *)plan.seqs[i]->owner)->r)) argmax = 0;
    double t_fwd = pg_now_s();
    if (!st) /* a failed copy-on-write: the step is not run on a corrupt block */
        st = argmax ? forward_run_argmax(e->fwd, &b, e->kv, e->b_ids)
                    : forward_run(e->fwd, &b, e->kv, e->logits); /* rows == 0: writes no logits */
    t_fwd = pg_now_s() - t_fwd;
    if (st) {
        char msg[512];
        snprintf(msg, sizeof msg, "forward pass failed: %s", pagoda_last_error());
        pg_log(PAGODA_LOG_ERROR, "%s", msg);
        sched_commit(e->sched, &plan);
        /* each planned sequence is a distinct live choice, so finishing one leaves the others valid */
        for (int32_t i = 0; i < plan.n_seqs; i++) finish_choice(e, plan.seqs[i]->owner, PAGODA_FINISH_ERROR, msg, 0);
        update_gauges(e);
        return 1;
    }
    sched_commit(e->sched, &plan);
    pthread_mutex_lock(&e->mu);
    e->stats.n_steps++;
    e->stats.n_computed_tokens += (uint64_t)plan.n_tokens;
    e->stats.n_prompt_tokens += prompt_tokens;
    e->stats.n_cached_tokens += cached_tokens;
    e->stats.n_preemptions += (uint64_t)plan.n_preempted;
    pthread_mutex_unlock(&e->mu);
    if (!argmax) pick_rows(e, &plan, rows);
    /* accept in batch order; finishing a choice never invalidates another planned sequence */
    for (int32_t i = 0; i < plan.n_seqs; i++) {
        if (e->b_row[i] < 0) continue;
        sched_seq *q = plan.seqs[i];
        choice *ch = q->owner;
        request *r = ch->r;
        if (argmax) {
            accept_token(e, ch, e->b_ids[e->b_row[i]], NULL);
            continue;
        }
        if (e->picks[i].token >= 0) {
            accept_token(e, ch, e->picks[i].token, &e->picks[i]);
            continue;
        }
        const float *row = e->logits + (size_t)e->b_row[i] * (size_t)e->n_vocab;
        if (r->p.n > 1 && !r->forked) { /* the prompt is done: the other choices share its blocks */
            r->forked = 1;
            for (int32_t j = 1; j < r->p.n; j++) {
                choice *cj = &r->choices[j];
                if (cj->finish != PAGODA_FINISH_NONE) continue;
                if (sched_fork(e->sched, q, r->id, cj, &cj->seq)) {
                    finish_choice(e, cj, PAGODA_FINISH_ERROR, "out of memory", 0);
                    continue;
                }
                cj->counted = 1;
            }
            int32_t n = r->p.n;
            for (int32_t j = n - 1; j >= 0; j--) { /* the request may be freed by its last choice */
                choice *cj = &r->choices[j];
                int last = r->n_live == 1 && cj->finish == PAGODA_FINISH_NONE;
                if (cj->finish == PAGODA_FINISH_NONE && cj->seq) sample_choice(e, cj, row);
                if (last) break;
            }
            continue;
        }
        sample_choice(e, ch, row);
    }
    update_gauges(e);
    double t_step = pg_now_s() - t_start;
    pthread_mutex_lock(&e->mu);
    e->stats.step_seconds += t_step;
    e->stats.forward_seconds += t_fwd;
    pthread_mutex_unlock(&e->mu);
    return 1;
}

pagoda_status pagoda_engine_step(pagoda_engine *e, int32_t *n_live) {
    if (e->started) return pg_fail(PAGODA_ERR_INVALID, "pagoda_engine_step: the engine runs on its own thread");
    step(e);
    if (n_live) {
        pthread_mutex_lock(&e->mu);
        *n_live = e->stats.n_live_requests;
        pthread_mutex_unlock(&e->mu);
    }
    return PAGODA_OK;
}

static int has_input(pagoda_engine *e) { return e->inbox || e->n_cancels || e->cancel_all; }

static void *engine_thread(void *arg) {
    pagoda_engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!e->stop && !has_input(e) && !e->live) pthread_cond_wait(&e->cv, &e->mu);
        int stop = e->stop;
        pthread_mutex_unlock(&e->mu);
        if (stop) break;
        if (!step(e) && e->live) { /* live requests but nothing runnable: wait briefly for a change */
            pthread_mutex_lock(&e->mu);
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 5000000;
            if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
            if (!e->stop && !has_input(e)) pthread_cond_timedwait(&e->cv, &e->mu, &ts);
            pthread_mutex_unlock(&e->mu);
        }
    }
    return NULL;
}

pagoda_status pagoda_engine_start(pagoda_engine *e) {
    if (e->started) return PAGODA_OK;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 16u << 20); /* kernels keep tiles on the stack */
    int rc = pthread_create(&e->thread, &attr, engine_thread, e);
    pthread_attr_destroy(&attr);
    if (rc) return pg_fail(PAGODA_ERR_NOMEM, "cannot start the engine thread");
    e->started = 1;
    return PAGODA_OK;
}

void pagoda_engine_destroy(pagoda_engine *e) {
    if (!e) return;
    pthread_mutex_lock(&e->mu);
    e->stop = 1;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (e->started) pthread_join(e->thread, NULL);
    e->started = 0;
    if (e->sched) {
        pthread_mutex_lock(&e->mu);
        e->cancel_all = 1;
        pthread_mutex_unlock(&e->mu);
        take_inbox(e); /* every live request ends with CANCELLED */
    }
    sched_destroy(e->sched);
    kv_pool_destroy(e->pool);
    forward_kv_destroy(e->kv);
    if (e->fwd) forward_host_free(e->fwd, e->logits);
    forward_destroy(e->fwd);
    for (int i = 0; e->ws && i < e->n_pick_threads; i++) sampler_ws_destroy(e->ws[i]);
    free(e->ws), free(e->picks), free(e->b_tokens), free(e->b_mask), free(e->b_seq_start);
    free(e->b_pos0), free(e->b_nblocks), free(e->b_tables), free(e->b_row), free(e->b_ids), free(e->text), free(e->cancels);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    free(e);
}
