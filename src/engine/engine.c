/* The engine: requests in, token events out; every step schedules, runs one forward pass over
 * the whole continuous batch, samples and checks stop conditions (see ../shared/DESIGN.md,
 * "One step of the engine", and step.c for the stages).
 *
 * Threads: submit/cancel/get_stats may be called from any thread; they only touch the inbox,
 * the cancel list and the stats under `mu`. Everything else (scheduler, KV, requests) belongs
 * to the thread that steps: the engine thread after pagoda_engine_start, else the caller of
 * pagoda_engine_step. Event callbacks run on that thread, with no lock held. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "engine/engine_internal.h"
#include "engine/model_api.h"
#include "kv/kv_cache.h"

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
    r->pooling = PAGODA_POOLING_MODEL, r->normalize = -1; /* the defaults pagoda.h names for embeddings */
}

pagoda_status engine_normalize_config(const pagoda_engine_config *cfg, pagoda_engine_config *c) {
    if (cfg) *c = *cfg; else pagoda_engine_config_default(c);
    if (c->kv_block_size <= 0) c->kv_block_size = 16;
    if (c->max_batch_tokens <= 0) c->max_batch_tokens = 256;
    if (c->max_seqs <= 0) c->max_seqs = 64;
    if (c->kv_mem_fraction <= 0 || c->kv_mem_fraction > 0.95f) c->kv_mem_fraction = 0.25f;
    if (c->kv_block_size > 1024 || c->max_seqs > 4096 || c->max_batch_tokens > 65536)
        return pg_fail(PAGODA_ERR_INVALID, "engine: block size %d, max seqs %d or max batch tokens %d out of range",
                       c->kv_block_size, c->max_seqs, c->max_batch_tokens);
    if (c->max_adapters <= 0) c->max_adapters = 8;
    if (c->max_adapters > 255) return pg_fail(PAGODA_ERR_INVALID, "engine: max_adapters %d (at most 255)", c->max_adapters);
    if (!(c->gpu_memory_utilization > 0.05f && c->gpu_memory_utilization <= 1.0f)) c->gpu_memory_utilization = 0.9f;
    if (c->speculative < PAGODA_SPEC_NONE || c->speculative > PAGODA_SPEC_GRAMMAR)
        return pg_fail(PAGODA_ERR_INVALID, "engine: speculative method %d (0 none, 1 n-gram, 2 draft model, 3 grammar)",
                       c->speculative);
    if (c->num_speculative_tokens <= 0) c->num_speculative_tokens = c->speculative == PAGODA_SPEC_DRAFT ? 4 : 6;
    if (c->num_speculative_tokens > MAX_DRAFT)
        return pg_fail(PAGODA_ERR_INVALID, "engine: %d speculative tokens (at most %d)", c->num_speculative_tokens, MAX_DRAFT);
    if (c->spec_ngram_min <= 0) c->spec_ngram_min = 2;
    if (c->spec_ngram_max <= 0) c->spec_ngram_max = c->spec_ngram_min > 4 ? c->spec_ngram_min : 4;
    if (c->spec_max_seqs <= 0 || c->spec_max_seqs > c->max_seqs) c->spec_max_seqs = c->max_seqs; /* the cost model decides */
    if (c->spec_draft_vocab < 0)
        return pg_fail(PAGODA_ERR_INVALID, "engine: spec_draft_vocab %d (token ids; 0: all)", c->spec_draft_vocab);
    if (c->spec_ngram_history == 0) c->spec_ngram_history = 1 << 16;
    if (c->spec_ngram_history < 0) c->spec_ngram_history = 0; /* off */
    if (c->speculative == PAGODA_SPEC_DRAFT && (!c->speculative_draft || !*c->speculative_draft))
        return pg_fail(PAGODA_ERR_INVALID, "engine: draft-model speculation needs the draft model's path");
    return PAGODA_OK;
}

static pagoda_status engine_spec_from_config(pagoda_engine *e, const pagoda_engine_config *c);

pagoda_status pagoda_engine_create(pagoda_model *pm, const pagoda_engine_config *cfg, pagoda_engine **out) {
    *out = NULL;
    if (!pm || !pm->m)
        return pg_fail(PAGODA_ERR_INVALID, "pagoda_engine_create: the model has no weights (a tokenizer loaded with "
                                           "pagoda_model_load_vocab)");
    pagoda_engine_config c;
    pagoda_status st = engine_normalize_config(cfg, &c);
    if (st) return st;
    engine_runner *r;
    if ((st = runner_forward_create(pm, &c, &r))) return st;
    if ((st = engine_create_with_runner(pm, r, &c, out))) return st;
    if (c.speculative && (st = engine_spec_from_config(*out, &c))) {
        pagoda_engine_destroy(*out);
        *out = NULL;
    }
    return st;
}

/* The proposer c asks for (a draft model is loaded here and owned by the engine). */
static pagoda_status engine_spec_from_config(pagoda_engine *e, const pagoda_engine_config *c) {
    spec_proposer *p = NULL;
    pagoda_status st;
    if (c->speculative == PAGODA_SPEC_NGRAM) {
        st = spec_ngram_create_ex(c->spec_ngram_min, c->spec_ngram_max, c->spec_ngram_history, &p);
    } else if (c->speculative == PAGODA_SPEC_GRAMMAR) {
        st = spec_grammar_create(&p);
    } else {
        if ((st = pagoda_model_load(c->speculative_draft, &e->spec_model))) return st;
        pagoda_model_info a, b;
        pagoda_model_get_info(e->pm, &a);
        pagoda_model_get_info(e->spec_model, &b);
        if (a.n_vocab != b.n_vocab)
            return pg_fail(PAGODA_ERR_INVALID, "draft model %s: vocabulary of %d tokens, the model's has %d",
                           c->speculative_draft, b.n_vocab, a.n_vocab);
        for (int32_t t = 0; t < a.n_vocab; t++) { /* the same tokenizer: every piece equal */
            size_t la, lb;
            const char *pa = pagoda_token_piece(e->pm, t, &la), *pb = pagoda_token_piece(e->spec_model, t, &lb);
            if (la != lb || (la && memcmp(pa, pb, la)))
                return pg_fail(PAGODA_ERR_INVALID, "draft model %s: token %d differs from the model's (another tokenizer)",
                               c->speculative_draft, t);
        }
        pagoda_engine_config dc = *c;
        dc.speculative = PAGODA_SPEC_NONE, dc.n_gpu_layers = 0, dc.broker = NULL, dc.tp = NULL;
        dc.n_threads = e->n_pick_threads;
        dc.kv_mem_bytes = e->runner->info.kv_bytes; /* the target's KV memory: a draft's tokens are no bigger */
        st = spec_draft_create(e->spec_model, &dc, c->max_seqs, e->max_model_len, &p);
    }
    return st ? st : engine_set_proposer(e, p, c->num_speculative_tokens);
}

pagoda_status pagoda_tp_worker_run(pagoda_model *pm, const pagoda_engine_config *cfg) {
    if (!pm || !pm->m) return pg_fail(PAGODA_ERR_INVALID, "pagoda_tp_worker_run: the model has no weights");
    pagoda_engine_config c;
    pagoda_status st = engine_normalize_config(cfg, &c);
    return st ? st : runner_tp_worker(pm, &c);
}

pagoda_status engine_reserve_rows(pagoda_engine *e, int32_t n) {
    if (n <= e->cap_rows) return PAGODA_OK;
    size_t V = (size_t)e->n_vocab;
    float *logits = e->runner->host_alloc(e->runner, (size_t)n * V * sizeof(float));
    pick *picks = malloc((size_t)n * sizeof *picks);
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    if (!logits || !picks || !ids) {
        e->runner->host_free(e->runner, logits);
        free(picks), free(ids);
        return pg_fail(PAGODA_ERR_NOMEM, "engine: out of memory for %d logits rows of %d", n, e->n_vocab);
    }
    e->runner->host_free(e->runner, e->logits);
    free(e->picks), free(e->ids);
    e->logits = logits, e->picks = picks, e->ids = ids, e->cap_rows = n;
    return PAGODA_OK;
}

pagoda_status engine_create_with_runner(pagoda_model *pm, engine_runner *r, const pagoda_engine_config *cfg,
                                        pagoda_engine **out) {
    *out = NULL;
    pagoda_engine_config c;
    pagoda_status st = engine_normalize_config(cfg, &c);
    if (st) {
        runner_destroy(r);
        return st;
    }
    pagoda_engine *e = calloc(1, sizeof *e);
    if (!e) {
        runner_destroy(r);
        return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    }
    const engine_runner_info *in = &r->info;
    e->runner = r;
    e->pm = pm, e->tok = pm ? pm->tok : NULL, e->c = c;
    e->n_vocab = in->n_vocab;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    pthread_cond_init(&e->flush_cv, NULL);
    e->rng = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)e;
    e->next_id = 1;
    if ((st = engine_adapters_create(e))) goto fail;
    int32_t n_blocks = in->n_kv_blocks;
    if (n_blocks < 1 || e->n_vocab < 1) {
        st = pg_fail(PAGODA_ERR_INVALID, "engine: the runner holds %d KV blocks for a vocab of %d", n_blocks, e->n_vocab);
        goto fail;
    }
    int64_t max_len = c.max_model_len > 0 ? c.max_model_len : in->n_ctx_train;
    if (max_len <= 0) max_len = 4096;
    if (in->max_positions > 0 && max_len > in->max_positions) max_len = in->max_positions;
    if ((int64_t)n_blocks * c.kv_block_size < max_len) max_len = (int64_t)n_blocks * c.kv_block_size;
    e->max_model_len = (int32_t)max_len;
    sched_config sc = {.max_batch_tokens = c.max_batch_tokens, .max_seqs = c.max_seqs, .prefix_caching = c.prefix_caching};
    if ((st = kv_pool_create(n_blocks, c.kv_block_size, &e->pool)) || (st = sched_create(&sc, e->pool, &e->sched)))
        goto fail;
    size_t S = (size_t)c.max_seqs, T = (size_t)c.max_batch_tokens;
    /* one logits row per sequence; requests for prompt logits or drafts grow this to one per token */
    if ((st = engine_reserve_rows(e, c.max_seqs))) goto fail;
    e->n_pick_threads = in->n_threads > 0 ? in->n_threads : 1;
    e->ws = calloc((size_t)e->n_pick_threads, sizeof *e->ws);
    for (int i = 0; e->ws && i < e->n_pick_threads; i++)
        if ((st = sampler_ws_create(e->n_vocab, &e->ws[i]))) goto fail;
    e->b_tokens = malloc(T * sizeof(int32_t));
    e->b_mask = malloc(T);
    e->b_seq_start = malloc((S + 1) * sizeof(int32_t));
    e->b_pos0 = malloc(S * sizeof(int32_t));
    e->b_nblocks = malloc(S * sizeof(int32_t));
    e->b_adapter = calloc(S, sizeof(int32_t));
    e->b_tables = malloc(S * sizeof(*e->b_tables));
    e->row0 = malloc(S * sizeof(int32_t));
    e->row_pos = malloc(S * sizeof(int32_t));
    e->srow = malloc(S * sizeof(int32_t));
    e->n_acc = malloc(S * sizeof(int32_t));
    e->failed = malloc(S);
    if ((e->n_embd = in->n_embd) > 0) { /* hidden-state rows for embedding requests */
        e->hidden = r->host_alloc(r, T * (size_t)e->n_embd * sizeof(float));
        e->b_hmask = malloc(T);
        e->hrow0 = malloc(S * sizeof(int32_t)), e->hpos = malloc(S * sizeof(int32_t)), e->hcount = malloc(S * sizeof(int32_t));
        e->emb_out = malloc((size_t)e->n_embd * sizeof(float));
        if (!e->hidden || !e->b_hmask || !e->hrow0 || !e->hpos || !e->hcount || !e->emb_out) {
            st = pg_fail(PAGODA_ERR_NOMEM, "engine: out of memory for hidden-state rows");
            goto fail;
        }
    }
    e->cap_text = 4096;
    e->text = malloc(e->cap_text);
    if (!e->ws || !e->b_tokens || !e->b_mask || !e->b_seq_start || !e->b_pos0 || !e->b_nblocks || !e->b_adapter ||
        !e->b_tables || !e->row0 || !e->row_pos || !e->srow || !e->n_acc || !e->failed || !e->text) {
        st = pg_fail(PAGODA_ERR_NOMEM, "engine: out of memory");
        goto fail;
    }
    e->stats.kv_blocks_total = n_blocks;
    e->stats.kv_block_size = c.kv_block_size;
    e->stats.n_threads = e->n_pick_threads;
    e->stats.kv_bytes = in->kv_bytes;
    e->stats.max_model_len = e->max_model_len;
    pg_log(PAGODA_LOG_INFO,
           "engine: %s, KV cache %d blocks x %d tokens (%s, %llu bytes/token, %.1f MiB), max model len %d, %d tokens/step, "
           "%d seqs",
           in->name ? in->name : "?", n_blocks, c.kv_block_size, kv_dtype_name(c.kv_dtype),
           (unsigned long long)(in->kv_bytes / ((uint64_t)n_blocks * (uint64_t)c.kv_block_size)),
           (double)in->kv_bytes / 1048576.0, e->max_model_len, c.max_batch_tokens, c.max_seqs);
    *out = e;
    return PAGODA_OK;
fail:
    pagoda_engine_destroy(e);
    return st;
}

pagoda_status engine_set_proposer(pagoda_engine *e, spec_proposer *p, int32_t max_k) {
    spec_destroy(e->spec);
    e->spec = NULL;
    if (!p) return PAGODA_OK;
    if (max_k < 1 || max_k > MAX_DRAFT) {
        spec_destroy(p);
        return pg_fail(PAGODA_ERR_INVALID, "engine: a proposer may offer 1 to %d tokens, not %d", MAX_DRAFT, max_k);
    }
    const size_t S = (size_t)e->c.max_seqs;
    pagoda_status st = engine_reserve_rows(e, e->c.max_batch_tokens > e->c.max_seqs ? e->c.max_batch_tokens : e->c.max_seqs);
    if (!st && (!e->sq && !(e->sq = calloc(S, sizeof *e->sq)))) st = pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    if (!st && (!e->sq_seq && !(e->sq_seq = calloc(S, sizeof *e->sq_seq)))) st = pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    if (!st && (!e->sq_out && !(e->sq_out = calloc(S * MAX_DRAFT, sizeof *e->sq_out))))
        st = pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    if (!st && ((!e->sq_rate && !(e->sq_rate = calloc(S, sizeof *e->sq_rate))) ||
                (!e->sq_ask && !(e->sq_ask = calloc(S, sizeof *e->sq_ask))) ||
                (!e->sq_k && !(e->sq_k = calloc(S, sizeof *e->sq_k))) ||
                (!e->sq_work && !(e->sq_work = calloc(S * MAX_DRAFT, 3 * sizeof(float))))))
        st = pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    if (st) {
        spec_destroy(p);
        return st;
    }
    e->spec = p, e->spec_k = max_k, e->spec_max_seqs = e->c.spec_max_seqs;
    e->sp_cost = (spec_cost){0};
    e->sp_prior = SPEC_PRIOR_RATE;
    pg_log(PAGODA_LOG_INFO, "engine: speculative decoding (%s), up to %d drafts per sequence as measured costs allow, "
           "while <= %d sequences run", p->name, max_k, e->spec_max_seqs);
    return PAGODA_OK;
}

int engine_check(const pagoda_engine *e) { return sched_check(e->sched); }

void pagoda_engine_get_stats(pagoda_engine *e, pagoda_engine_stats *s) {
    pthread_mutex_lock(&e->mu);
    *s = e->stats;
    pthread_mutex_unlock(&e->mu);
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

void engine_set_gauges(pagoda_engine *e) {
    count_requests(e, &e->stats);
    e->stats.n_running = sched_n_running(e->sched);
    e->stats.n_waiting = sched_n_waiting(e->sched);
    e->stats.kv_blocks_cached = kv_pool_n_cached(e->pool);
    e->stats.kv_blocks_used = kv_pool_n_blocks(e->pool) - kv_pool_n_free(e->pool);
}

void engine_update_gauges(pagoda_engine *e) {
    pthread_mutex_lock(&e->mu);
    engine_set_gauges(e);
    pthread_mutex_unlock(&e->mu);
}

pagoda_status pagoda_engine_step(pagoda_engine *e, int32_t *n_live) {
    if (e->started) return pg_fail(PAGODA_ERR_INVALID, "pagoda_engine_step: the engine runs on its own thread");
    engine_step(e);
    if (n_live) {
        pthread_mutex_lock(&e->mu);
        *n_live = e->stats.n_live_requests;
        pthread_mutex_unlock(&e->mu);
    }
    return PAGODA_OK;
}

static int has_input(pagoda_engine *e) { return e->inbox || e->n_cancels || e->cancel_all || e->flush_req; }

/* The flush itself: stepping thread (or no thread), between steps, mu held. */
static void flush_locked(pagoda_engine *e) {
    e->flush_n = kv_pool_flush(e->pool);
    e->stats.kv_blocks_cached = kv_pool_n_cached(e->pool);
    e->flush_req = 0;
    e->flush_gen++;
    pthread_cond_broadcast(&e->flush_cv);
}

pagoda_status pagoda_engine_flush_prefix_cache(pagoda_engine *e, int32_t *n_flushed) {
    pthread_mutex_lock(&e->mu);
    if (!e->started) {
        flush_locked(e);
    } else {
        const uint64_t gen = e->flush_gen;
        e->flush_req = 1;
        pthread_cond_broadcast(&e->cv);
        while (e->flush_gen == gen && !e->stop) pthread_cond_wait(&e->flush_cv, &e->mu);
    }
    const int done = !e->flush_req;
    if (n_flushed) *n_flushed = e->flush_n;
    pthread_mutex_unlock(&e->mu);
    return done ? PAGODA_OK : pg_fail(PAGODA_ERR_INVALID, "the engine stopped before flushing its prefix cache");
}

static void *engine_thread(void *arg) {
    pagoda_engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!e->stop && !has_input(e) && !e->live) pthread_cond_wait(&e->cv, &e->mu);
        int stop = e->stop;
        if (!stop && e->flush_req) flush_locked(e);
        pthread_mutex_unlock(&e->mu);
        if (stop) break;
        if (!engine_step(e) && e->live) { /* live requests but nothing runnable: wait briefly for a change */
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
    pthread_cond_broadcast(&e->flush_cv);
    pthread_mutex_unlock(&e->mu);
    if (e->started) pthread_join(e->thread, NULL);
    e->started = 0;
    if (e->sched) {
        pthread_mutex_lock(&e->mu);
        e->cancel_all = 1;
        pthread_mutex_unlock(&e->mu);
        engine_take_inbox(e); /* every live request ends with CANCELLED */
    }
    sched_destroy(e->sched);
    kv_pool_destroy(e->pool);
    if (e->runner) e->runner->host_free(e->runner, e->logits);
    if (e->runner && e->hidden) e->runner->host_free(e->runner, e->hidden);
    free(e->b_hmask), free(e->hrow0), free(e->hpos), free(e->hcount), free(e->emb_out);
    runner_destroy(e->runner);
    spec_destroy(e->spec); /* before its draft model */
    pagoda_model_free(e->spec_model);
    free(e->sq), free(e->sq_seq), free(e->sq_out), free(e->sq_rate), free(e->sq_ask), free(e->sq_k), free(e->sq_work);
    for (int i = 0; e->ws && i < e->n_pick_threads; i++) sampler_ws_destroy(e->ws[i]);
    free(e->ws), free(e->picks), free(e->ids), free(e->b_tokens), free(e->b_mask), free(e->b_seq_start);
    free(e->b_pos0), free(e->b_nblocks), free(e->b_adapter), free(e->b_tables), free(e->row0), free(e->row_pos);
    free(e->srow), free(e->n_acc), free(e->failed), free(e->text), free(e->cancels);
    engine_adapters_destroy(e);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    pthread_cond_destroy(&e->flush_cv);
    free(e);
}
