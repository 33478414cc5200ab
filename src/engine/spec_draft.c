/* The draft-model proposer (spec.h): a smaller model with the target's vocabulary, run by its own
 * default runner (runner.h) on the CPU over its own paged KV cache, proposes k greedy tokens per
 * sequence per step, batched over every sequence of the step.
 *
 * Per sequence key a record keeps the tokens whose K/V the draft holds (toks[0..n_done)) and
 * their block table. A call compares each query's tokens with its record (after a rejection the
 * tail differs: the draft recomputes from the first difference, overwriting those positions),
 * then runs passes over all queries together: each pass feeds every sequence its tokens not yet
 * computed (its catch-up, in chunks within max_batch_tokens, then one token: the previous draft)
 * and takes the greedy token after each sequence whose known tokens it reached. So with
 * everything in budget: one catch-up pass, then k-1 one-token passes.
 *
 * The prompt's K/V is computed by prefill, in the steps where the target computes the prompt
 * (the same passes, no logits rows): the first proposal then feeds one token, and the prompt's
 * cost is counted where it belongs (time to first token, not the first decode step nor the cost
 * model's proposer cost per draft).
 *
 * Greedy drafts are point masses, so the engine's verification (keep while the target's sample
 * equals the draft) is exact speculative sampling.
 *
 * Blocks come from a kv_pool of the runner's blocks (no prefix caching); when it runs dry the
 * least recently used records not in this call give theirs back; a sequence that still gets no
 * blocks gets fewer (or no) proposals. Records are at most max_seqs; a new key takes a free one
 * or the least recently used one not in this call. Nothing here fails a step: on an error the
 * call logs and proposes nothing. Buffers are sized at create; per call only record token
 * buffers grow (kept for reuse). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/mem_broker.h"
#include "engine/engine_internal.h"
#include "engine/model_api.h"
#include "engine/runner.h"
#include "engine/spec.h"
#include "kv/block_pool.h"
#include "kv/kv_cache.h"

enum { DRAFT_MAX_K = 64 }; /* proposals per sequence per call at most (the engine asks for <= 16) */

typedef struct {
    uint64_t key;
    int used;
    uint64_t stamp;   /* call counter of the last call that named it (LRU) */
    int32_t *toks;    /* [cap]: toks[0..n_done) computed; up to n_known during a call */
    int32_t cap;
    int32_t n_done;
    int32_t *blocks;  /* [max_blocks] block table */
    int32_t n_blocks;
} draft_rec;

/* one query's progress during a call */
typedef struct {
    draft_rec *r;
    spec_query *q;
    int32_t fed;     /* next position to feed */
    int32_t known;   /* toks[0..known) are known (tokens, then drafts to feed) */
    int32_t want;    /* proposals to make (0: a prefill, no proposals) */
    int32_t take;    /* tokens in the current pass */
    int32_t row;     /* logits row in the current pass, -1: none */
} draft_work;

typedef struct {
    spec_proposer base;
    engine_runner *run;
    kv_pool *pool;
    int32_t n_vocab, block_size, max_len, max_tokens, max_blocks;
    int32_t n_model_vocab; /* token ids the draft reads (n_vocab: the ids its head scores, maybe fewer) */
    int32_t n_rec;
    draft_rec *recs;  /* [n_rec] */
    uint64_t clock;
    draft_work *work; /* [n_rec] */
    /* one pass */
    int32_t *b_tokens;          /* [max_tokens] */
    uint8_t *b_mask;            /* [max_tokens] */
    int32_t *b_start;           /* [max_rows + 1] */
    int32_t *b_pos0;            /* [max_rows] */
    int32_t *b_nblk;            /* [max_rows] */
    const int32_t **b_tables;   /* [max_rows] */
    int32_t *b_work;            /* [max_rows]: work index of each batch sequence */
    int32_t max_rows;           /* sequences per pass: min(n_rec, max_tokens) */
    float *logits;              /* [max_rows][n_vocab] (host_alloc), NULL with greedy ids */
    int32_t *ids;               /* [max_rows] */
} draft_proposer;

static void rec_drop_blocks(draft_proposer *d, draft_rec *r, int32_t keep) {
    while (r->n_blocks > keep) kv_pool_unref(d->pool, r->blocks[--r->n_blocks]);
    if (r->n_done > keep * d->block_size) r->n_done = keep * d->block_size;
}

static void rec_free(draft_proposer *d, draft_rec *r) {
    rec_drop_blocks(d, r, 0);
    r->used = 0, r->n_done = 0, r->key = 0, r->stamp = 0;
}

/* the least recently used record that this call does not name, or NULL */
static draft_rec *lru_victim(draft_proposer *d, int need_blocks) {
    draft_rec *best = NULL;
    for (int32_t i = 0; i < d->n_rec; i++) {
        draft_rec *r = &d->recs[i];
        if (!r->used || r->stamp == d->clock || (need_blocks && r->n_blocks == 0)) continue;
        if (!best || r->stamp < best->stamp) best = r;
    }
    return best;
}

static draft_rec *rec_find(draft_proposer *d, uint64_t key) {
    for (int32_t i = 0; i < d->n_rec; i++)
        if (d->recs[i].used && d->recs[i].key == key) return &d->recs[i];
    return NULL;
}

static draft_rec *rec_get(draft_proposer *d, uint64_t key) {
    draft_rec *r = rec_find(d, key);
    if (r) return r;
    for (int32_t i = 0; i < d->n_rec && !r; i++)
        if (!d->recs[i].used) r = &d->recs[i];
    if (!r && (r = lru_victim(d, 0))) rec_free(d, r);
    if (!r) return NULL;
    r->used = 1, r->key = key, r->n_done = 0, r->n_blocks = 0;
    return r;
}

/* grows r's blocks to n (evicting LRU records' blocks as needed); returns how many it has */
static int32_t rec_blocks(draft_proposer *d, draft_rec *r, int32_t n) {
    if (n > d->max_blocks) n = d->max_blocks;
    while (r->n_blocks < n) {
        int32_t b = kv_pool_alloc(d->pool);
        if (b < 0) {
            draft_rec *v = lru_victim(d, 1);
            if (!v) break;
            rec_drop_blocks(d, v, 0);
            continue;
        }
        r->blocks[r->n_blocks++] = b;
    }
    return r->n_blocks;
}

static int rec_reserve(draft_rec *r, int32_t n) {
    if (n <= r->cap) return 0;
    int32_t cap = r->cap ? r->cap : 64;
    while (cap < n) cap = cap > INT32_MAX / 2 ? n : cap * 2;
    int32_t *t = realloc(r->toks, (size_t)cap * sizeof *t);
    if (!t) return -1;
    r->toks = t, r->cap = cap;
    return 0;
}

/* the greedy token of a logits row: the largest finite logit, the lowest id among equals; -1 if none */
static int32_t row_argmax(const float *row, int32_t n) {
    int32_t id = -1;
    float best = -INFINITY;
    for (int32_t i = 0; i < n; i++)
        if (row[i] > best || (id < 0 && row[i] == best)) best = row[i], id = i;
    return id;
}

/* sets up one query: its record, what to recompute and how many proposals; 0: nothing to do.
 * prefill: compute K/V of all n tokens, no logits and no proposals */
static int work_init(draft_proposer *d, spec_query *q, draft_work *w, int prefill) {
    memset(w, 0, sizeof *w);
    w->q = q, w->row = -1;
    int32_t n = q->n;
    if (n < 1 || !q->tokens || n >= d->max_len) return 0;
    if (!prefill && (!q->out || q->max_k < 1)) return 0;
    int32_t want = prefill ? 0 : q->max_k < DRAFT_MAX_K ? q->max_k : DRAFT_MAX_K;
    if (want > d->max_len - n) want = d->max_len - n;
    draft_rec *r = rec_get(d, q->key);
    if (!r) return 0;
    r->stamp = d->clock;
    if (rec_reserve(r, n + want)) {
        pg_log(PAGODA_LOG_WARN, "draft proposer: out of memory for a sequence of %d tokens", n);
        return 0;
    }
    /* the computed prefix still valid: positions from the first difference are recomputed */
    int32_t lcp = r->n_done < n ? r->n_done : n;
    for (int32_t i = 0; i < lcp; i++)
        if (r->toks[i] != q->tokens[i]) {
            lcp = i;
            break;
        }
    for (int32_t i = lcp; i < n; i++)
        if (q->tokens[i] < 0 || q->tokens[i] >= d->n_model_vocab) {
            r->n_done = lcp;
            return 0;
        }
    memcpy(r->toks + lcp, q->tokens + lcp, (size_t)(n - lcp) * sizeof(int32_t));
    if (prefill) {
        r->n_done = lcp;
        if (lcp == n) return 0;
        /* blocks for positions up to n - 1; what does not fit is left to the proposals */
        int32_t need = (n - 1) / d->block_size + 1, have = rec_blocks(d, r, need);
        if (have < need) n = have * d->block_size;
        if (n <= lcp) return 0;
        w->r = r, w->fed = lcp, w->known = n, w->want = 0;
        return 1;
    }
    r->n_done = lcp < n ? lcp : n - 1; /* the last token is fed again for its logits */
    /* blocks for positions up to n + want - 2 (the last draft is never fed); fewer blocks, fewer drafts */
    int32_t need = (n + want - 2) / d->block_size + 1;
    int32_t have = rec_blocks(d, r, need);
    if (have < need) {
        int32_t fit = have * d->block_size - n + 1;
        if (fit < want) want = fit;
    } else if (r->n_blocks > need) {
        rec_drop_blocks(d, r, need); /* after a rollback: what it no longer needs */
    }
    if (want < 1) return 0;
    w->r = r, w->fed = r->n_done, w->known = n, w->want = want;
    return 1;
}

/* one pass over the active queries; returns 1 if it ran something, 0 if nothing is left, -1 on error */
static int run_pass(draft_proposer *d, draft_work *w, int32_t n_work) {
    int32_t S = 0, budget = d->max_tokens;
    /* everyone's next token first (so a long catch-up does not starve the others), then the rest
       of the budget in order */
    for (int32_t i = 0; i < n_work && budget > 0 && S < d->max_rows; i++) {
        w[i].take = 0, w[i].row = -1;
        if (!w[i].r || (w[i].want > 0 && w[i].q->n_out >= w[i].want) || w[i].known <= w[i].fed) continue;
        w[i].take = 1, budget--;
        d->b_work[S++] = i;
    }
    if (S == 0) return 0;
    for (int32_t s = 0; s < S && budget > 0; s++) {
        draft_work *x = &w[d->b_work[s]];
        int32_t more = x->known - x->fed - x->take;
        if (more > budget) more = budget;
        x->take += more, budget -= more;
    }
    int32_t t = 0, rows = 0;
    for (int32_t s = 0; s < S; s++) {
        draft_work *x = &w[d->b_work[s]];
        d->b_start[s] = t, d->b_pos0[s] = x->fed;
        d->b_tables[s] = x->r->blocks, d->b_nblk[s] = x->r->n_blocks;
        memcpy(d->b_tokens + t, x->r->toks + x->fed, (size_t)x->take * sizeof(int32_t));
        memset(d->b_mask + t, 0, (size_t)x->take);
        t += x->take;
        if (x->fed + x->take == x->known && x->want > 0) d->b_mask[t - 1] = 1, x->row = rows++;
    }
    d->b_start[S] = t;
    engine_batch eb = {.b = {.n_tok = t, .tokens = d->b_tokens, .n_seq = S, .seq_start = d->b_start,
                             .seq_pos0 = d->b_pos0, .block_tables = d->b_tables, .n_blocks = d->b_nblk,
                             .logits_mask = d->b_mask},
                       .n_rows = rows};
    pagoda_status st = d->run->run(d->run, &eb, d->logits, d->logits ? NULL : d->ids);
    if (st) {
        pg_log(PAGODA_LOG_WARN, "draft proposer: the draft model failed (%s): no proposals this step", pagoda_last_error());
        return -1;
    }
    for (int32_t s = 0; s < S; s++) {
        draft_work *x = &w[d->b_work[s]];
        x->fed += x->take;
        x->r->n_done = x->fed;
        if (x->row < 0) continue;
        int32_t tok = d->logits ? row_argmax(d->logits + (size_t)x->row * (size_t)d->n_vocab, d->n_vocab)
                                : d->ids[x->row];
        if (tok < 0 || tok >= d->n_vocab) { /* no finite logit: stop here */
            x->want = x->q->n_out;
            continue;
        }
        x->q->out[x->q->n_out++] = tok;
        if (x->q->n_out < x->want) x->r->toks[x->known++] = tok; /* fed next pass */
    }
    return 1;
}

static void draft_run(draft_proposer *d, spec_query *qs, int32_t n, int prefill) {
    for (int32_t i = 0; i < n; i++) qs[i].n_out = 0;
    if (n > d->n_rec) n = d->n_rec; /* more sequences than records: the rest get none */
    d->clock++;
    /* stamp every named record first, so that making room for one query never evicts another */
    for (int32_t i = 0; i < n; i++) {
        draft_rec *r = rec_find(d, qs[i].key);
        if (r) r->stamp = d->clock;
    }
    int32_t n_work = 0;
    for (int32_t i = 0; i < n; i++)
        if (work_init(d, &qs[i], &d->work[n_work], prefill)) n_work++;
    int rc;
    while ((rc = run_pass(d, d->work, n_work)) > 0) {}
    if (rc < 0)
        for (int32_t i = 0; i < n; i++) qs[i].n_out = 0;
}

static void draft_propose(spec_proposer *p, spec_query *qs, int32_t n) { draft_run((draft_proposer *)p, qs, n, 0); }

/* the prompt's K/V while the target computes it, so that the first proposal feeds one token */
static void draft_prefill(spec_proposer *p, spec_query *qs, int32_t n) { draft_run((draft_proposer *)p, qs, n, 1); }

static void draft_release(spec_proposer *p, uint64_t key) {
    draft_proposer *d = (draft_proposer *)p;
    draft_rec *r = rec_find(d, key);
    if (r) rec_free(d, r);
}

static void draft_destroy(spec_proposer *p) {
    draft_proposer *d = (draft_proposer *)p;
    if (!d) return;
    if (d->recs)
        for (int32_t i = 0; i < d->n_rec; i++) {
            if (d->recs[i].used) rec_free(d, &d->recs[i]);
            free(d->recs[i].toks), free(d->recs[i].blocks);
        }
    free(d->recs), free(d->work);
    free(d->b_tokens), free(d->b_mask), free(d->b_start), free(d->b_pos0), free(d->b_nblk);
    free(d->b_tables), free(d->b_work), free(d->ids);
    if (d->run && d->logits) d->run->host_free(d->run, d->logits);
    kv_pool_destroy(d->pool);
    runner_destroy(d->run);
    free(d);
}

pagoda_status spec_draft_create(pagoda_model *draft, const pagoda_engine_config *c, int32_t max_seqs,
                                int32_t max_model_len, spec_proposer **out) {
    *out = NULL;
    if (!draft || !draft->m) return pg_fail(PAGODA_ERR_INVALID, "draft proposer: the draft model has no weights");
    if (max_seqs < 1 || max_seqs > 4096)
        return pg_fail(PAGODA_ERR_INVALID, "draft proposer: max_seqs %d out of range (1 to 4096)", max_seqs);
    /* the runner's config: c's, defaults filled in as the engine does, always on the CPU, alone */
    pagoda_engine_config want, cfg;
    if (c) want = *c;
    else pagoda_engine_config_default(&want);
    want.max_seqs = max_seqs, want.speculative = PAGODA_SPEC_NONE, want.n_gpu_layers = 0, want.tp = NULL;
    want.broker = NULL; /* the draft's memory and threads are the caller's to account for */
    pagoda_status st = engine_normalize_config(&want, &cfg);
    if (st) return st;
    const pg_model_config *mc = &draft->m->cfg;
    int64_t max_len = max_model_len > 0 ? max_model_len : mc->n_ctx_train > 0 ? mc->n_ctx_train : 4096;
    if (mc->learned_pos && mc->n_ctx_train > 0 && max_len > mc->n_ctx_train) max_len = mc->n_ctx_train;
    if (max_len > INT32_MAX / 2) max_len = INT32_MAX / 2;
    const int64_t bs = cfg.kv_block_size;
    if (!cfg.kv_mem_bytes) { /* enough for max_seqs whole sequences, within kv_mem_fraction of memory */
        int64_t max_blocks = (max_len + bs - 1) / bs;
        size_t per = kv_block_bytes(cfg.kv_block_size, mc->n_head_kv, mc->head_dim, cfg.kv_dtype);
        if (!per) return pg_fail(PAGODA_ERR_UNSUPPORTED, "draft proposer: KV type %d", (int)cfg.kv_dtype);
        double want = (double)per * 2.0 * (double)mc->n_layer * (double)max_blocks * (double)max_seqs;
        double cap = (double)cfg.kv_mem_fraction * (double)pg_available_memory();
        cfg.kv_mem_bytes = (uint64_t)(want < cap || cap <= 0 ? want : cap);
    }

    draft_proposer *d = calloc(1, sizeof *d);
    if (!d) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    d->base.name = "draft", d->base.propose = draft_propose, d->base.release = draft_release;
    d->base.destroy = draft_destroy, d->base.prefill = draft_prefill;
    if ((st = runner_forward_create_ex(draft, &cfg, c ? c->spec_draft_vocab : 0, &d->run))) {
        pg_error_prefix("draft model: ");
        goto fail;
    }
    const engine_runner_info *in = &d->run->info;
    if (in->no_logits || in->n_vocab < 1 || in->n_kv_blocks < 1) {
        st = pg_fail(PAGODA_ERR_INVALID, "draft model: no LM head, or no KV blocks");
        goto fail;
    }
    if (in->max_positions > 0 && max_len > in->max_positions) max_len = in->max_positions;
    d->n_vocab = in->n_vocab;
    d->n_model_vocab = mc->n_vocab;
    d->block_size = cfg.kv_block_size;
    d->max_len = (int32_t)max_len;
    d->max_tokens = cfg.max_batch_tokens;
    d->max_blocks = (int32_t)((max_len + bs - 1) / bs);
    d->n_rec = max_seqs;
    d->max_rows = max_seqs < d->max_tokens ? max_seqs : d->max_tokens;
    if ((st = kv_pool_create(in->n_kv_blocks, cfg.kv_block_size, &d->pool))) goto fail;
    d->recs = calloc((size_t)d->n_rec, sizeof *d->recs);
    d->work = calloc((size_t)d->n_rec, sizeof *d->work);
    d->b_tokens = malloc((size_t)d->max_tokens * sizeof(int32_t));
    d->b_mask = malloc((size_t)d->max_tokens);
    d->b_start = malloc(((size_t)d->max_rows + 1) * sizeof(int32_t));
    d->b_pos0 = malloc((size_t)d->max_rows * sizeof(int32_t));
    d->b_nblk = malloc((size_t)d->max_rows * sizeof(int32_t));
    d->b_tables = malloc((size_t)d->max_rows * sizeof *d->b_tables);
    d->b_work = malloc((size_t)d->max_rows * sizeof(int32_t));
    d->ids = malloc((size_t)d->max_rows * sizeof(int32_t));
    if (!d->recs || !d->work || !d->b_tokens || !d->b_mask || !d->b_start || !d->b_pos0 || !d->b_nblk ||
        !d->b_tables || !d->b_work || !d->ids) {
        st = pg_fail(PAGODA_ERR_NOMEM, "draft proposer: out of memory");
        goto fail;
    }
    for (int32_t i = 0; i < d->n_rec; i++)
        if (!(d->recs[i].blocks = malloc((size_t)d->max_blocks * sizeof(int32_t)))) {
            st = pg_fail(PAGODA_ERR_NOMEM, "draft proposer: out of memory");
            goto fail;
        }
    if (!in->greedy_ids &&
        !(d->logits = d->run->host_alloc(d->run, (size_t)d->max_rows * (size_t)d->n_vocab * sizeof(float)))) {
        st = pg_fail(PAGODA_ERR_NOMEM, "draft proposer: out of memory for %d logits rows", d->max_rows);
        goto fail;
    }
    pg_log(PAGODA_LOG_INFO, "draft proposer: %s, KV cache %d blocks x %d tokens (%.1f MiB), %d seqs of up to %d tokens",
           in->name ? in->name : "?", in->n_kv_blocks, d->block_size, (double)in->kv_bytes / 1048576.0, d->n_rec,
           d->max_len);
    *out = &d->base;
    return PAGODA_OK;
fail:
    draft_destroy(&d->base);
    return st;
}
