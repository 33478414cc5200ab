/* Constrained decoding inside the engine: each choice of a request with a grammar walks its own
 * matcher (grammar/matcher.h). The mask is one more logits processor (the last of the chain, so
 * bias and penalties cannot lift a banned token); it runs where the choice's row is drawn, on
 * the kernel threads, so the masks of a batch's sequences are computed in parallel. The drawn
 * token then advances the matcher. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "engine/engine_internal.h"
#include "engine/grammar_api.h"

static void mask_step(void *self, float *logits, int32_t n_vocab) {
    choice *ch = self;
    const int32_t words = (n_vocab + 31) / 32;
    if (ch->g_dead) return; /* sticky: a choice whose grammar allowed nothing draws no more */
    ch->g_dead = gr_matcher_mask(ch->gm, ch->gmask) == 0;
    for (int32_t w = 0; w < words; w++) {
        uint32_t m = ch->gmask[w];
        if (m == 0xFFFFFFFFu) continue;
        int32_t t0 = w * 32, t1 = t0 + 32 < n_vocab ? t0 + 32 : n_vocab;
        for (int32_t t = t0; t < t1; t++)
            if (!(m >> (t - t0) & 1)) logits[t] = -INFINITY;
    }
}

pagoda_status engine_constrain_init(pagoda_engine *e, choice *ch) {
    const pagoda_grammar *g = ch->r->p.grammar;
    if (!g) return PAGODA_OK;
    /* words for the engine's vocabulary; tokens past the grammar's vocabulary stay 0 (banned) */
    if (!(ch->gm = gr_matcher_new(g->c)) || !(ch->gmask = calloc(((size_t)e->n_vocab + 31) / 32, sizeof(uint32_t))))
        return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    return lp_chain_add(&ch->chain, mask_step, ch);
}

void engine_constrain_accept(pagoda_engine *e, choice *ch, int32_t token) {
    if (!ch->gm || token < 0) return;
    if (e->tok && tok_is_eog(e->tok, token)) return; /* the end: nothing to advance */
    if (gr_matcher_accept(ch->gm, token) == 0) {
        ch->g_accepted++;
        if (!ch->g_done_at && gr_matcher_is_done(ch->gm)) ch->g_done_at = ch->g_accepted;
    } else {
        ch->g_dead = 1; /* a token outside the mask (a stop token id the grammar does not know) */
    }
}

void engine_constrain_free(choice *ch) {
    gr_matcher_free(ch->gm);
    free(ch->gmask);
    ch->gm = NULL, ch->gmask = NULL;
}
