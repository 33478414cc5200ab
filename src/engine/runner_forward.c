/* The default engine runner: one forward pass (model/forward.h) over its paged KV memory
 * (held by the forward pass's backends). The only engine file that reaches the forward pass and
 * the KV memory. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/mem_broker.h"
#include "engine/microbatch.h"
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
    /* tensor and pipeline parallelism (tp->size > 1): rank 0 broadcasts each step's batch and KV
       block copy to the workers, which run the same forward pass on their shards (their stage's
       layers, their heads and FFN slice); ranks are stage-major: rank = stage * tp_size + tp_rank */
    const pagoda_tp_group *tp;
    int32_t tp_size, pp_size, stage; /* ranks per stage, stages, this rank's stage */
    float *out_logits;               /* the last stage's first rank: [max_tokens][n_vocab] for rank 0 */
    float *vp_part;                  /* the last stage's other ranks: [max_tokens][their vocabulary slice]
                                        (vocabulary-parallel head: their logits columns) */
    int32_t mb_max, mb_min_tokens;   /* micro-batches: at most mb_max of at least mb_min_tokens each */
    microbatch *mbs;                 /* [mb_max] */
    microbatch_scratch mb_scratch;   /* their seq_start, seq_pos0 and logits mask arrays */
    int32_t n_vocab, n_embd;
    int32_t max_tokens;
    uint8_t *msg; /* the broadcast batch (grown as needed, kept between steps) */
    size_t msg_cap;
    const int32_t **tables; /* worker: [max_tokens] block table of each sequence of a step */
} fwd_runner;

/* ---- tensor parallelism: the step as a message ------------------------------------------------ */

enum { TP_STEP = 1, TP_COPY = 2, TP_STOP = 3 };
enum { TP_LOGITS_MASK = 1, TP_HIDDEN_MASK = 2, TP_ADAPTER = 4, TP_NO_LOGITS = 8 };
/* every message starts with this; a step's payload follows (int32 arrays, then byte masks):
   tokens[n_tok] seq_start[n_seq+1] seq_pos0[n_seq] n_blocks[n_seq] (seq_adapter[n_seq])
   tables[sum n_blocks] (logits_mask[n_tok]) (hidden_mask[n_tok]) */
typedef struct {
    int64_t cmd, a, b; /* STEP: n_tok, n_seq; COPY: src, dst */
    int64_t flags, n_table, payload;
} tp_header;

static bool tp_on(const fwd_runner *f) { return f->tp && f->tp->size > 1; }

static pagoda_status tp_bcast(const fwd_runner *f, void *buf, size_t bytes) {
    pagoda_status st = f->tp->bcast(f->tp->user, buf, bytes);
    if (st) pg_error_prefix("tensor parallel: ");
    return st;
}

enum { PP_MAX_MICRO = 64, PP_AUTO_MIN_TOKENS = 64 };

/* ---- pipeline parallelism: the residual stream from stage to stage (same tensor-parallel rank),
 * the last stage's results to rank 0 ----------------------------------------------------------- */

static bool pp_on(const fwd_runner *f) { return f->pp_size > 1; }

static pagoda_status pp_recv_x(void *user, float *x, int64_t n) {
    const fwd_runner *f = user;
    pagoda_status st = f->tp->recv(f->tp->user, f->tp->rank - f->tp_size, x, sizeof(float) * (size_t)n);
    if (st) pg_error_prefix("pipeline parallel (stage %d): ", f->stage);
    return st;
}

static pagoda_status pp_send_x(void *user, const float *x, int64_t n) {
    const fwd_runner *f = user;
    pagoda_status st = f->tp->send(f->tp->user, f->tp->rank + f->tp_size, x, sizeof(float) * (size_t)n);
    if (st) pg_error_prefix("pipeline parallel (stage %d): ", f->stage);
    return st;
}

/* ---- vocabulary-parallel head: a stage's ranks send their logits columns to its first rank ---- */

static pagoda_status vp_send_x(void *user, const float *x, int64_t n) {
    const fwd_runner *f = user;
    pagoda_status st = f->tp->send(f->tp->user, f->stage * f->tp_size, x, sizeof(float) * (size_t)n);
    if (st) pg_error_prefix("tensor parallel (logits columns): ");
    return st;
}

static pagoda_status vp_recv_x(void *user, int32_t tp_rank, float *x, int64_t n) {
    const fwd_runner *f = user;
    pagoda_status st = f->tp->recv(f->tp->user, f->stage * f->tp_size + tp_rank, x, sizeof(float) * (size_t)n);
    if (st) pg_error_prefix("tensor parallel (logits columns): ");
    return st;
}

/* the rank that computes the logits (the last stage's first) */
static int32_t pp_head_rank(const fwd_runner *f) { return (f->pp_size - 1) * f->tp_size; }

/* between the head rank and rank 0: the step's logits rows, then its hidden rows */
static pagoda_status pp_results(const fwd_runner *f, const pg_batch *b, float *logits, float *hidden, bool sending) {
    int32_t n_out, n_hid;
    forward_out_rows(b, &n_out, &n_hid);
    const pagoda_tp_group *g = f->tp;
    int32_t peer = sending ? 0 : pp_head_rank(f);
    size_t lb = sizeof(float) * (size_t)n_out * (size_t)f->n_vocab, hb = sizeof(float) * (size_t)n_hid * (size_t)f->n_embd;
    pagoda_status st = PAGODA_OK;
    if (n_out > 0 && logits)
        st = sending ? g->send(g->user, peer, logits, lb) : g->recv(g->user, peer, logits, lb);
    if (!st && n_hid > 0 && hidden)
        st = sending ? g->send(g->user, peer, hidden, hb) : g->recv(g->user, peer, hidden, hb);
    if (st) pg_error_prefix("pipeline parallel: the last stage's results: ");
    return st;
}

static pagoda_status tp_reserve(fwd_runner *f, size_t bytes) {
    if (bytes <= f->msg_cap) return PAGODA_OK;
    uint8_t *m = realloc(f->msg, bytes);
    if (!m) return pg_fail(PAGODA_ERR_NOMEM, "tensor parallel: out of memory for a %zu-byte step", bytes);
    f->msg = m, f->msg_cap = bytes;
    return PAGODA_OK;
}

static size_t tp_payload_bytes(const tp_header *h) {
    size_t n32 = (size_t)h->a + 3 * (size_t)h->b + 1 + ((h->flags & TP_ADAPTER) ? (size_t)h->b : 0) + (size_t)h->n_table;
    size_t n8 = ((h->flags & TP_LOGITS_MASK) ? (size_t)h->a : 0) + ((h->flags & TP_HIDDEN_MASK) ? (size_t)h->a : 0);
    return n32 * sizeof(int32_t) + n8;
}

static void put(uint8_t **p, const void *src, size_t bytes) {
    memcpy(*p, src, bytes);
    *p += bytes;
}

/* This rank's part of a pipelined step: one forward pass per micro-batch, in order (the stage
 * before may already be on the next one). logits/hidden: the step's rows (NULL: none wanted here). */
static pagoda_status pp_forward(fwd_runner *f, const pg_batch *b, float *logits, float *hidden) {
    int32_t n = microbatch_split(b, f->mb_max, f->mb_min_tokens, &f->mb_scratch, f->mbs);
    for (int32_t k = 0; k < n; k++) {
        const microbatch *m = &f->mbs[k];
        /* a rank's own logits columns are sent as they are made: its buffer is reused */
        float *lg = logits && logits != f->vp_part ? logits + (size_t)m->out0 * (size_t)f->n_vocab : logits;
        float *hd = hidden ? hidden + (size_t)m->hid0 * (size_t)f->n_embd : NULL;
        pagoda_status st = forward_run_hidden(f->fwd, &m->b, f->kv, lg, hd);
        if (st) return st;
    }
    return PAGODA_OK;
}

/* rank 0: the step to every worker */
static pagoda_status tp_send_step(fwd_runner *f, const pg_batch *b, bool no_logits) {
    tp_header h = {.cmd = TP_STEP, .a = b->n_tok, .b = b->n_seq};
    if (b->n_tok < 0 || b->n_seq < 0 || b->n_tok > f->max_tokens || b->n_seq > f->max_tokens)
        return pg_fail(PAGODA_ERR_INVALID, "batch of %d tokens, %d sequences", b->n_tok, b->n_seq);
    for (int32_t s = 0; s < b->n_seq; s++) h.n_table += b->n_blocks[s] > 0 ? b->n_blocks[s] : 0;
    h.flags = (b->logits_mask ? TP_LOGITS_MASK : 0) | (b->hidden_mask ? TP_HIDDEN_MASK : 0) |
              (b->seq_adapter ? TP_ADAPTER : 0) | (no_logits ? TP_NO_LOGITS : 0);
    h.payload = (int64_t)tp_payload_bytes(&h);
    pagoda_status st = tp_reserve(f, (size_t)h.payload);
    if (st) return st;
    const size_t I = sizeof(int32_t), T = (size_t)b->n_tok, S = (size_t)b->n_seq;
    uint8_t *p = f->msg;
    put(&p, b->tokens, T * I), put(&p, b->seq_start, (S + 1) * I), put(&p, b->seq_pos0, S * I);
    put(&p, b->n_blocks, S * I);
    if (b->seq_adapter) put(&p, b->seq_adapter, S * I);
    for (size_t s = 0; s < S; s++)
        if (b->n_blocks[s] > 0) put(&p, b->block_tables[s], (size_t)b->n_blocks[s] * I);
    if (b->logits_mask) put(&p, b->logits_mask, T);
    if (b->hidden_mask) put(&p, b->hidden_mask, T);
    if ((st = tp_bcast(f, &h, sizeof h))) return st;
    return tp_bcast(f, f->msg, (size_t)h.payload);
}

static pagoda_status fr_run(engine_runner *r, const engine_batch *b, float *logits, int32_t *ids) {
    fwd_runner *f = (fwd_runner *)r;
    pagoda_status st;
    if (tp_on(f) && (st = tp_send_step(f, &b->b, !logits))) return st;
    if (ids) return forward_run_argmax(f->fwd, &b->b, f->kv, ids);
    if (pp_on(f)) st = pp_forward(f, &b->b, logits, b->n_hidden > 0 ? b->hidden : NULL);
    else if (b->n_hidden > 0) st = forward_run_hidden(f->fwd, &b->b, f->kv, logits, b->hidden);
    else st = forward_run(f->fwd, &b->b, f->kv, logits);
    /* pipeline: this rank ran the first stage; the last one computed what the engine wants */
    if (!st && pp_on(f)) st = pp_results(f, &b->b, logits, b->n_hidden > 0 ? b->hidden : NULL, false);
    return st;
}

static pagoda_status fr_copy_block(engine_runner *r, int32_t src, int32_t dst) {
    fwd_runner *f = (fwd_runner *)r;
    if (tp_on(f)) {
        tp_header h = {.cmd = TP_COPY, .a = src, .b = dst};
        pagoda_status st = tp_bcast(f, &h, sizeof h);
        if (st) return st;
    }
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
    if (tp_on(f) && f->tp->rank == 0 && f->kv) { /* the workers stop with the engine */
        tp_header h = {.cmd = TP_STOP};
        if (tp_bcast(f, &h, sizeof h)) pg_log(PAGODA_LOG_WARN, "tensor parallel: cannot stop the workers");
    }
    free(f->msg), free(f->tables), free(f->out_logits), free(f->vp_part), free(f->mbs);
    free(f->mb_scratch.seq_start), free(f->mb_scratch.seq_pos0), free(f->mb_scratch.mask);
    forward_kv_destroy(f->kv);
    forward_destroy(f->fwd);
    if (f->granted) broker_give_back(f->broker, &f->grant);
    free(f);
}

static pagoda_status runner_create(const pagoda_model *pm, const pagoda_engine_config *c, bool worker,
                                   int32_t head_rows, fwd_runner **out);

/* The NCCL group's id: rank 0 makes it and broadcasts it with whether that worked, so a rank 0
 * without NCCL fails every rank at once instead of leaving them waiting to join. */
static pagoda_status nccl_group_id(fwd_runner *f, bool tp, uint8_t id[PG_NCCL_ID_BYTES]) {
    struct {
        int64_t status;
        uint8_t id[PG_NCCL_ID_BYTES];
    } m = {0};
    if (!tp || f->tp->rank == 0) m.status = be_cuda_nccl_id(m.id);
    char why[256];
    snprintf(why, sizeof why, "%s", m.status ? pagoda_last_error() : "");
    if (tp) {
        pagoda_status st = tp_bcast(f, &m, sizeof m);
        if (st) return st;
    }
    if (m.status && !tp) return pg_fail((pagoda_status)m.status, "NCCL group of one: %s", why);
    if (m.status)
        return f->tp->rank == 0 ? pg_fail((pagoda_status)m.status, "tensor parallel on GPUs: %s", why)
                                : pg_fail((pagoda_status)m.status, "tensor parallel on GPUs: rank 0 could not make an "
                                          "NCCL group (its log says why)");
    memcpy(id, m.id, sizeof m.id);
    return PAGODA_OK;
}

pagoda_status runner_forward_create(const pagoda_model *pm, const pagoda_engine_config *c, engine_runner **out) {
    return runner_forward_create_ex(pm, c, 0, out);
}

pagoda_status runner_forward_create_ex(const pagoda_model *pm, const pagoda_engine_config *c, int32_t head_rows,
                                       engine_runner **out) {
    *out = NULL;
    if (c->tp && c->tp->size > 1 && c->tp->rank != 0)
        return pg_fail(PAGODA_ERR_INVALID, "tensor parallel: the engine runs on rank 0; rank %d runs "
                       "pagoda_tp_worker_run", c->tp->rank);
    fwd_runner *f;
    pagoda_status st = runner_create(pm, c, false, head_rows, &f);
    if (!st) *out = &f->base;
    return st;
}

/* rank > 0 of a tensor-parallel group: the steps rank 0's engine broadcasts, until it stops */
pagoda_status runner_tp_worker(const pagoda_model *pm, const pagoda_engine_config *c) {
    if (!c->tp || c->tp->size < 2 || c->tp->rank < 1)
        return pg_fail(PAGODA_ERR_INVALID, "pagoda_tp_worker_run: not a worker of a tensor-parallel group");
    fwd_runner *f;
    pagoda_status st = runner_create(pm, c, true, 0, &f);
    if (st) return st;
    const pg_model_config *mc = &pm->m->cfg;
    float *hidden = malloc(sizeof(float) * (size_t)f->max_tokens * (size_t)mc->n_embd);
    if (!hidden) {
        fr_destroy(&f->base);
        return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    }
    for (;;) {
        tp_header h;
        if ((st = tp_bcast(f, &h, sizeof h))) break;
        if (h.cmd == TP_STOP) break;
        if (h.cmd == TP_COPY) {
            /* rank 0 made the same copy: an error there is an error here, and the block is not used */
            if ((st = forward_kv_copy_block(f->kv, (int32_t)h.a, (int32_t)h.b)))
                pg_log(PAGODA_LOG_DEBUG, "tensor parallel worker: %s", pagoda_last_error());
            continue;
        }
        if (h.cmd != TP_STEP || h.a < 1 || h.a > f->max_tokens || h.b < 1 || h.b > f->max_tokens || h.n_table < 0 ||
            h.n_table > (INT32_MAX / 4) || h.payload != (int64_t)tp_payload_bytes(&h)) {
            st = pg_fail(PAGODA_ERR_INVALID, "tensor parallel worker: bad message (command %lld)", (long long)h.cmd);
            break;
        }
        if ((st = tp_reserve(f, (size_t)h.payload)) || (st = tp_bcast(f, f->msg, (size_t)h.payload))) break;
        const int32_t T = (int32_t)h.a, S = (int32_t)h.b;
        const int32_t *p = (const int32_t *)f->msg;
        const int32_t *tokens = p, *seq_start = tokens + T, *pos0 = seq_start + S + 1, *n_blocks = pos0 + S;
        const int32_t *adapter = (h.flags & TP_ADAPTER) ? n_blocks + S : NULL;
        const int32_t *tab = n_blocks + S + (adapter ? S : 0);
        const uint8_t *m8 = (const uint8_t *)(tab + h.n_table);
        const uint8_t *lmask = (h.flags & TP_LOGITS_MASK) ? m8 : NULL;
        const uint8_t *hmask = (h.flags & TP_HIDDEN_MASK) ? m8 + (lmask ? T : 0) : NULL;
        const int32_t **tables = (const int32_t **)f->tables;
        int64_t used = 0;
        bool ok = true;
        for (int32_t s = 0; s < S; s++) {
            int32_t n = n_blocks[s] > 0 ? n_blocks[s] : 0;
            if (used + n > h.n_table) ok = false;
            tables[s] = tab + (ok ? used : 0);
            used += n;
        }
        if (!ok) {
            st = pg_fail(PAGODA_ERR_INVALID, "tensor parallel worker: block tables do not add up");
            break;
        }
        pg_batch b = {.n_tok = T, .tokens = tokens, .n_seq = S, .seq_start = seq_start, .seq_pos0 = pos0,
                      .block_tables = tables, .n_blocks = n_blocks, .logits_mask = lmask, .seq_adapter = adapter,
                      .hidden_mask = hmask};
        /* this rank's share of the step; the logits are rank 0's (the LM head is skipped here),
           or with stages the last stage's first rank's, which sends them to rank 0. A batch rank
           0 refuses is refused here too, before any all-reduce or transfer, so all go on; a
           failed transfer ends the job. */
        float *lg = h.flags & TP_NO_LOGITS ? NULL : f->out_logits ? f->out_logits : f->vp_part;
        st = pp_on(f) ? pp_forward(f, &b, lg, hidden) : forward_run_hidden(f->fwd, &b, f->kv, lg, hidden);
        if (!st && f->out_logits) st = pp_results(f, &b, lg, hidden, true);
        if (st == PAGODA_ERR_IO) break;
        if (st) pg_log(PAGODA_LOG_DEBUG, "tensor parallel worker: %s", pagoda_last_error());
        st = PAGODA_OK;
    }
    free(hidden);
    fr_destroy(&f->base);
    return st;
}

static pagoda_status runner_create(const pagoda_model *pm, const pagoda_engine_config *c, bool worker,
                                   int32_t head_rows, fwd_runner **out) {
    *out = NULL;
    const pg_model_config *mc = &pm->m->cfg;
    if (!kv_block_bytes(1, 1, 1, c->kv_dtype))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "engine: the KV cache holds f32, f16, int8 or fp8_e4m3, not type %d",
                       (int)c->kv_dtype);
    int32_t n_gpu = c->n_gpu_layers < 0 || c->n_gpu_layers > mc->n_layer ? mc->n_layer : c->n_gpu_layers;
    if (n_gpu > 0 && c->kv_dtype != PAGODA_DTYPE_F32 && c->kv_dtype != PAGODA_DTYPE_F16)
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "engine: a %s KV cache runs on the CPU backend only; the CUDA backend "
                       "holds f32 or f16 KV (use --kv-type f16, or no GPU layers)", kv_dtype_name(c->kv_dtype));
    const bool tp = c->tp && c->tp->size > 1; /* a group: tensor and/or pipeline parallel */
    if (tp && (c->tp->rank < 0 || c->tp->rank >= c->tp->size || !c->tp->bcast || !c->tp->all_reduce))
        return pg_fail(PAGODA_ERR_INVALID, "tensor parallel: rank %d of %d, or a group without collectives",
                       c->tp->rank, c->tp->size);
    const int32_t pp = tp && c->tp->pp_size > 1 ? c->tp->pp_size : 1;
    if (pp > 1 && (c->tp->size % pp || !c->tp->send || !c->tp->recv))
        return pg_fail(PAGODA_ERR_INVALID, "pipeline parallel: %d stages over a group of %d ranks, or a group without "
                       "point-to-point transfers", pp, c->tp->size);
    if (pp > mc->n_layer)
        return pg_fail(PAGODA_ERR_INVALID, "pipeline parallel size %d is more than the model's %d layers (a stage "
                       "needs at least one)", pp, mc->n_layer);
    if (tp && n_gpu > 0 && pp > 1)
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "pipeline parallel runs on the CPU only for now (no GPU layers)");
    if (tp && n_gpu > 0 && n_gpu < mc->n_layer)
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "tensor parallel on GPUs: every layer on the GPU (--gpu-layers -1), not "
                       "%d of %d (CPU and GPU layers are not split together)", n_gpu, mc->n_layer);
    /* tensor parallelism on GPUs: one device per process (the next one for each process on the
       same host), the layer sums through an NCCL group whose id rank 0 hands every rank */
    const bool nccl = n_gpu > 0 && (tp || c->cuda_nccl_always);
    const int32_t device = c->cuda_device + (tp && n_gpu > 0 ? c->tp->local_rank : 0);
    fwd_runner *f = calloc(1, sizeof *f);
    if (!f) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    f->tp = tp ? c->tp : NULL, f->max_tokens = c->max_batch_tokens;
    f->pp_size = pp, f->tp_size = tp ? c->tp->size / pp : 1, f->stage = tp ? c->tp->rank / f->tp_size : 0;
    f->n_vocab = mc->n_vocab, f->n_embd = mc->n_embd;
    /* the stage's layers: n_layer / pp each, the first n_layer % pp stages one more */
    const int32_t per = mc->n_layer / pp, extra = mc->n_layer % pp;
    const int32_t l0 = f->stage * per + (f->stage < extra ? f->stage : extra);
    const int32_t l1 = l0 + per + (f->stage < extra ? 1 : 0);
    if (worker && !(f->tables = calloc((size_t)c->max_batch_tokens, sizeof *f->tables))) {
        free(f);
        return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    }
    if (pp > 1 && (c->pp_micro_batches < 0 || c->pp_micro_batches > PP_MAX_MICRO)) {
        free(f->tables), free(f);
        return pg_fail(PAGODA_ERR_INVALID, "pipeline parallel: %d micro-batches (0..%d)", c->pp_micro_batches,
                       PP_MAX_MICRO);
    }
    f->mb_max = c->pp_micro_batches ? c->pp_micro_batches : pp;
    f->mb_min_tokens = c->pp_micro_batches ? 1 : PP_AUTO_MIN_TOKENS;
    const size_t T = (size_t)c->max_batch_tokens, M = (size_t)f->mb_max;
    microbatch_scratch *ms = &f->mb_scratch;
    if (pp > 1 && (!(f->mbs = calloc(M, sizeof *f->mbs)) || !(ms->seq_start = calloc(T + 2 * M, sizeof(int32_t))) ||
                   !(ms->seq_pos0 = calloc(T + M, sizeof(int32_t))) || !(ms->mask = calloc(T, 1)) ||
                   (worker && c->tp->rank == pp_head_rank(f) && pm->m->output.data &&
                    !(f->out_logits = malloc(sizeof(float) * T * (size_t)mc->n_vocab))))) {
        free(f->tables), free(f->mbs), free(ms->seq_start), free(ms->seq_pos0), free(ms->mask), free(f);
        return pg_fail(PAGODA_ERR_NOMEM, "pipeline parallel: out of memory for the micro-batches or %d tokens' logits",
                       c->max_batch_tokens);
    }
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
    uint8_t nccl_id[PG_NCCL_ID_BYTES] = {0};
    if (nccl && (st = nccl_group_id(f, tp, nccl_id))) goto fail;
    pg_forward_opts fo = {.n_gpu_layers = n_gpu, .n_threads = n_threads, .cuda_device = device,
                          .nccl_id = nccl ? nccl_id : NULL, .nccl_always = nccl, .vp_embed = tp && n_gpu > 0,
                          .cuda_no_graphs = c->cuda_no_graphs, .cuda_no_repack = c->cuda_no_repack,
                          .cuda_qgemm = c->cuda_qgemm, .quant_act = c->quant_activations,
                          .tp_rank = tp ? c->tp->rank % f->tp_size : 0, .tp_size = f->tp_size,
                          .all_reduce = f->tp_size > 1 ? c->tp->all_reduce : NULL,
                          .all_reduce_user = f->tp_size > 1 ? c->tp->user : NULL,
                          .pp_l0 = pp > 1 ? l0 : 0, .pp_l1 = pp > 1 ? l1 : 0, .pp_recv = pp > 1 ? pp_recv_x : NULL,
                          .pp_send = pp > 1 ? pp_send_x : NULL, .pp_user = f,
                          .vp_send = f->tp_size > 1 && c->tp->send ? vp_send_x : NULL,
                          .vp_recv = f->tp_size > 1 && c->tp->recv ? vp_recv_x : NULL, .vp_user = f,
                          .head_rows = head_rows};
    if ((st = forward_create_ex(pm->m, c->max_batch_tokens, &fo, &f->fwd))) goto fail;
    f->n_vocab = forward_logits_width(f->fwd); /* (head_rows: the truncated head's) */
    /* a worker of the stage with a vocabulary-parallel head: where its logits columns are made */
    if (worker && c->tp->rank % f->tp_size > 0 && forward_vocab_slice(f->fwd) < mc->n_vocab &&
        !(f->vp_part = malloc(sizeof(float) * (size_t)c->max_batch_tokens * (size_t)forward_vocab_slice(f->fwd)))) {
        st = pg_fail(PAGODA_ERR_NOMEM, "tensor parallel: out of memory for %d tokens' logits columns", c->max_batch_tokens);
        goto fail;
    }

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
        if (c->broker && broker_gpu_free(c->broker, device) < dev_budget) dev_budget = broker_gpu_free(c->broker, device);
        if (dev_budget / per_block_dev < n_blocks) n_blocks = dev_budget / per_block_dev, budget = dev_budget;
    }
    if (n_blocks < 1 || n_blocks == UINT64_MAX) {
        st = pg_fail(PAGODA_ERR_INVALID, "KV budget of %llu bytes is less than one block of %d tokens (%zu bytes)",
                     (unsigned long long)budget, c->kv_block_size, per_block_dev ? per_block_dev : per_block_host);
        goto fail;
    }
    if (n_blocks > (1u << 24)) n_blocks = 1u << 24;
    if (tp) { /* one set of block ids across the group: rank 0's count (every rank holds as much per block) */
        int64_t nb = (int64_t)n_blocks;
        if ((st = tp_bcast(f, &nb, sizeof nb))) goto fail;
        n_blocks = (uint64_t)nb;
    }
    if (c->broker) {
        f->grant = (pg_broker_grant){.host_bytes = n_blocks * (uint64_t)per_block_host,
                                     .gpu_bytes = n_blocks * (uint64_t)per_block_dev, .gpu_device = device,
                                     .cores = n_threads};
        if ((st = broker_take(c->broker, &f->grant))) goto fail;
        f->broker = c->broker, f->granted = 1;
    }
    if ((st = forward_kv_create(f->fwd, (int32_t)n_blocks, c->kv_block_size, c->kv_dtype, &f->kv))) goto fail;
    /* sampling runs on the kernel threads (idle then on the CPU; the host cores on a GPU) */
    /* the CPU backend sets its team size on the thread that steps; sampling uses as many */
    engine_runner_info *in = &f->base.info;
    in->n_vocab = f->n_vocab;
    in->n_kv_blocks = (int32_t)n_blocks;
    in->n_ctx_train = mc->n_ctx_train;
    /* learned positions end at the table; the GPU path is sized for the trained context */
    in->max_positions = (mc->learned_pos || n_gpu > 0) && mc->n_ctx_train > 0 ? mc->n_ctx_train : 0;
    in->n_threads = n_threads > 0 ? n_threads : kcpu_get_threads();
    if (in->n_threads < 1) in->n_threads = 1;
    in->greedy_ids = forward_has_device_argmax(f->fwd);
    in->name = forward_placement(f->fwd);
    in->adapters = !strcmp(in->name, "cpu") && !tp;
    if (tp && n_gpu > 0) in->name = "cuda (tensor parallel, NCCL)";
    else if (tp) in->name = pp == 1 ? "cpu (tensor parallel)" : f->tp_size == 1 ? "cpu (pipeline parallel)"
                                                                  : "cpu (tensor + pipeline parallel)";
    else if (nccl) in->name = "cuda (NCCL group of one)";
    in->kv_bytes = n_blocks * (uint64_t)(per_block_host + per_block_dev);
    in->n_embd = mc->n_embd;
    in->no_logits = pm->m->output.data == NULL;
    *out = f;
    return PAGODA_OK;
fail:
    f->tp = NULL; /* nothing to stop: the workers fail on their side (or the job ends) */
    fr_destroy(&f->base);
    return st;
}
