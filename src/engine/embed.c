/* Embedding requests (pagoda_request.on_embedding): their prompt runs through the model like any
 * prompt, chunked and batched with generation; the stages here pick which positions of a step
 * return their final hidden state (after the final norm, before the LM head), add those states
 * up, and hand the pooled vector over once the prompt is through:
 *   build   engine_embed_rows: the hidden rows of a planned sequence (mean: every position of
 *           the chunk; CLS: position 0; last: the prompt's last position)
 *   pool    engine_embed_stage, after the forward pass: rows into the request's sum, in position
 *           order (a position recomputed after preemption is not added twice)
 *   emit    engine_embed_deliver: mean or the single row, L2-normalized if asked, to the callback */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "engine/engine_internal.h"
#include "engine/model_api.h"

void embed_pool_finish(const double *acc, int32_t n_rows, int normalize, float *out, int32_t n) {
    double scale = n_rows > 1 ? 1.0 / (double)n_rows : 1.0, ss = 0;
    for (int32_t i = 0; i < n; i++) {
        double v = acc[i] * scale;
        ss += v * v;
    }
    double inv = normalize && ss > 0 ? 1.0 / sqrt(ss) : 1.0;
    for (int32_t i = 0; i < n; i++) out[i] = (float)(acc[i] * scale * inv);
}

pagoda_status engine_embed_init(pagoda_engine *e, request *r) {
    const pagoda_request *p = &r->p;
    if (!p->on_embedding) {
        if (e->runner->info.no_logits)
            return pg_fail(PAGODA_ERR_INVALID, "this model has no LM head (lm_head): it computes embeddings only and "
                                               "cannot generate text");
        return PAGODA_OK;
    }
    if (e->n_embd <= 0) return pg_fail(PAGODA_ERR_UNSUPPORTED, "this engine's runner returns no hidden states (embeddings)");
    if (p->n != 1 || p->grammar || p->on_prompt_logits)
        return pg_fail(PAGODA_ERR_INVALID, "an embedding request takes n = 1, no grammar and no prompt logits");
    pagoda_pooling pool = p->pooling;
    if (pool == PAGODA_POOLING_MODEL) {
        int32_t declared = e->pm && e->pm->m ? e->pm->m->cfg.pooling : 0;
        pool = declared >= PAGODA_POOLING_MEAN && declared <= PAGODA_POOLING_LAST ? (pagoda_pooling)declared
                                                                                 : PAGODA_POOLING_LAST;
        if (declared == 4) return pg_fail(PAGODA_ERR_UNSUPPORTED, "this model declares rank pooling (a reranker): not supported");
    }
    if (pool != PAGODA_POOLING_MEAN && pool != PAGODA_POOLING_CLS && pool != PAGODA_POOLING_LAST)
        return pg_fail(PAGODA_ERR_INVALID, "pooling %d is not one of mean (1), cls (2), last (3)", (int)p->pooling);
    if (p->normalize < -1 || p->normalize > 1) return pg_fail(PAGODA_ERR_INVALID, "normalize must be -1, 0 or 1");
    int norm = p->normalize;
    if (norm < 0) {
        pagoda_embedding_info info = {.normalize = 1};
        if (e->pm) pagoda_model_get_embedding_info(e->pm, &info);
        norm = info.normalize != 0;
    }
    r->pooling = pool, r->normalize = norm;
    r->p.score_only = 1; /* nothing is sampled or generated */
    if (!(r->pool = calloc((size_t)e->n_embd, sizeof *r->pool))) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    return PAGODA_OK;
}

int32_t engine_embed_rows(pagoda_engine *e, int32_t i, const request *r, int32_t n_tokens, int32_t start, int32_t end,
                          int32_t t, int32_t rows) {
    e->hrow0[i] = -1, e->hcount[i] = 0;
    if (!r->p.on_embedding) return 0;
    int32_t h0 = start, h1 = end; /* mean: the whole chunk */
    if (r->pooling == PAGODA_POOLING_LAST) h0 = n_tokens - 1, h1 = n_tokens;
    else if (r->pooling == PAGODA_POOLING_CLS) h0 = 0, h1 = 1;
    if (h0 < start) h0 = start;
    if (h1 > end) h1 = end;
    if (h0 >= h1) return 0;
    e->hrow0[i] = rows, e->hpos[i] = h0, e->hcount[i] = h1 - h0;
    memset(e->b_hmask + t + (h0 - start), 1, (size_t)(h1 - h0));
    return h1 - h0;
}

void engine_embed_stage(pagoda_engine *e, const sched_plan *plan) {
    const int32_t E = e->n_embd;
    for (int32_t i = 0; i < plan->n_seqs; i++) {
        if (e->hrow0[i] < 0) continue;
        request *r = ((choice *)plan->seqs[i]->owner)->r;
        for (int32_t k = 0; k < e->hcount[i]; k++) {
            const float *row = e->hidden + (size_t)(e->hrow0[i] + k) * (size_t)E;
            int32_t pos = e->hpos[i] + k;
            if (r->pooling == PAGODA_POOLING_MEAN) {
                if (pos != r->n_pooled) continue; /* recomputed after preemption: already in the sum */
                for (int32_t j = 0; j < E; j++) r->pool[j] += row[j];
                r->n_pooled++;
            } else {
                for (int32_t j = 0; j < E; j++) r->pool[j] = row[j];
                r->n_pooled = 1;
            }
        }
    }
}

void engine_embed_deliver(pagoda_engine *e, request *r) {
    embed_pool_finish(r->pool, r->n_pooled, r->normalize, e->emb_out, e->n_embd);
    pagoda_embedding_event ev = {.request_id = r->id, .n_embd = e->n_embd, .embedding = e->emb_out,
                                 .n_prompt_tokens = r->n_prompt};
    r->p.on_embedding(&ev, r->p.user);
}
