/* Constrained decoding inside the engine: each choice of a request with a grammar walks its own
 * matcher (grammar/matcher.h). The mask is one more logits processor (the last of the chain, so
 * bias and penalties cannot lift a banned token); it runs where the choice's row is drawn, on
 * the kernel threads, so the masks of a batch's sequences are computed in parallel. The drawn
 * token then advances the matcher.
 *
 * Lazy grammars (request triggers): no mask while the choice waits for a trigger; each drawn
 * token's bytes are appended to a short window searched for the triggers, and at the first one
 * the bytes from the trigger on go into the matcher at once, which masks from then on. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "engine/engine_internal.h"
#include "engine/grammar_api.h"

#define GR_LAZY_TOKEN_BYTES 256 /* the bytes of one token a trigger search looks at */

static void mask_step(void *self, float *logits, int32_t n_vocab) {
    choice *ch = self;
    const int32_t words = (n_vocab + 31) / 32;
    if (ch->g_dead || ch->g_lazy) return; /* g_dead is sticky: a choice whose grammar allowed nothing draws no more */
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
    if (ch->r->p.n_grammar_triggers) {
        ch->g_lazy = 1;
        if (!(ch->g_text = malloc(2 * MAX_TRIGGER_LEN + GR_LAZY_TOKEN_BYTES))) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    }
    return lp_chain_add(&ch->chain, mask_step, ch);
}

/* Where the first trigger starts in the window (-1: none yet); *never when none can come any more
 * (at-start triggers once the first text is not a trigger's beginning). */
static ptrdiff_t find_trigger(const request *r, const uint8_t *t, size_t n, int *never) {
    *never = 0;
    if (r->p.grammar_trigger_at_start) {
        size_t b = 0;
        while (b < n && (t[b] == ' ' || t[b] == '\n' || t[b] == '\t' || t[b] == '\r')) b++;
        if (b == n) return -1;
        int may = 0;
        for (int32_t i = 0; i < r->p.n_grammar_triggers; i++) {
            size_t l = strlen(r->triggers[i]), k = n - b < l ? n - b : l;
            if (memcmp(t + b, r->triggers[i], k)) continue;
            if (k == l) return (ptrdiff_t)b;
            may = 1;
        }
        *never = !may;
        return -1;
    }
    ptrdiff_t best = -1;
    for (int32_t i = 0; i < r->p.n_grammar_triggers; i++) {
        size_t l = strlen(r->triggers[i]);
        for (size_t j = 0; j + l <= n && (best < 0 || (ptrdiff_t)j < best); j++)
            if (t[j] == (uint8_t)r->triggers[i][0] && !memcmp(t + j, r->triggers[i], l)) {
                best = (ptrdiff_t)j;
                break;
            }
    }
    return best;
}

static void lazy_accept(choice *ch, int32_t token) {
    const request *r = ch->r;
    size_t n = 0;
    const uint8_t *b = gr_vocab_token(gr_compiled_vocab(r->p.grammar->c), token, &n);
    ch->g_accepted++;
    if (n > GR_LAZY_TOKEN_BYTES) n = GR_LAZY_TOKEN_BYTES; /* (no trigger ends in such a token's middle) */
    memcpy(ch->g_text + ch->g_len, b, n);
    ch->g_len += n;
    int never = 0;
    ptrdiff_t at = find_trigger(r, ch->g_text, ch->g_len, &never);
    if (at >= 0) {
        if (gr_matcher_accept_bytes(ch->gm, ch->g_text + at, ch->g_len - (size_t)at) == 0) {
            ch->g_lazy = 0;
            if (gr_matcher_is_done(ch->gm)) ch->g_done_at = ch->g_accepted;
        } else {
            ch->g_lazy = 2; /* the text after the trigger is not the grammar's: free text */
            pg_log(PAGODA_LOG_DEBUG, "request %llu: text after a grammar trigger does not follow the grammar; left free",
                   (unsigned long long)r->id);
        }
    } else if (never) {
        ch->g_lazy = 2;
    } else if (!r->p.grammar_trigger_at_start && ch->g_len >= MAX_TRIGGER_LEN) {
        /* keep what a trigger may still start in: the last MAX_TRIGGER_LEN - 1 bytes */
        memmove(ch->g_text, ch->g_text + ch->g_len - (MAX_TRIGGER_LEN - 1), MAX_TRIGGER_LEN - 1);
        ch->g_len = MAX_TRIGGER_LEN - 1;
    } else if (r->p.grammar_trigger_at_start && ch->g_len > 2 * MAX_TRIGGER_LEN) {
        ch->g_lazy = 2; /* blanks and a trigger's beginning, longer than any: give up on the start */
    }
    if (ch->g_lazy == 2) {
        free(ch->g_text);
        ch->g_text = NULL, ch->g_len = 0;
    }
}

void engine_constrain_accept(pagoda_engine *e, choice *ch, int32_t token) {
    if (!ch->gm || token < 0) return;
    if (e->tok && tok_is_eog(e->tok, token)) return; /* the end: nothing to advance */
    if (ch->g_lazy) {
        if (ch->g_lazy == 1) lazy_accept(ch, token);
        else ch->g_accepted++;
        return;
    }
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
    free(ch->g_text);
    ch->g_text = NULL;
    ch->gm = NULL, ch->gmask = NULL;
}
