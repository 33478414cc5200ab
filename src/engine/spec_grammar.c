/* Drafts from a request's grammar (jump-forward text as speculation): where the grammar allows only
 * one text next (a JSON key of a fixed schema, the `":"` after it, the rest of an enum value once
 * its start is unique), that text's tokens are the sequence's drafts for the step. They are
 * verified like any drafts (sample.c): a token the model would not have drawn there is rejected,
 * so the output is the model's, and the text the model agrees with costs one forward pass instead
 * of one per token. The engine asks this before its proposer (step.c); `--speculative grammar`
 * (PAGODA_SPEC_GRAMMAR) is a proposer that proposes nothing else. */
#include <stdint.h>
#include <stdlib.h>

#include "core/log.h"
#include "engine/engine_internal.h"
#include "engine/grammar_api.h"
#include "engine/spec.h"

#define GR_FORCED_BYTES 64 /* the most forced text looked at per sequence and step */

/* a byte that may sit inside a word: ASCII letters, digits, '_', and any byte of a UTF-8 sequence */
static int word_byte(uint8_t b) {
    return (b >= '0' && b <= '9') || (b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z') || b == '_' || b >= 0x80;
}

int32_t engine_spec_forced(pagoda_engine *e, choice *ch, int32_t *out, int32_t max_k) {
    if (!ch->gm || ch->g_lazy || ch->g_dead || !e->pm || max_k <= 0 || e->c.spec_no_grammar_drafts) return 0;
    uint8_t text[GR_FORCED_BYTES];
    size_t n = gr_matcher_forced(ch->gm, text, sizeof text); /* (~10 us a call, measured) */
    if (!n) return 0;
    /* forced text that goes on inside a word the model began (the rest of a key after its first
       letters): the model rarely splits the rest as the tokenizer splits it alone, so such drafts are
       mostly rejected; not drafted */
    const sched_seq *q = ch->seq;
    if (q && q->n_tokens > 0 && word_byte(text[0])) {
        size_t lb = 0;
        const uint8_t *last = gr_vocab_token(gr_compiled_vocab(ch->r->p.grammar->c), q->tokens[q->n_tokens - 1], &lb);
        if (last && lb && word_byte(last[lb - 1])) return 0;
    }
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (pagoda_tokenize(e->pm, (const char *)text, n, 0, 0, &ids, &n_ids)) return 0;
    /* the tokens the grammar takes in turn (a tokenizer that adds a leading space stops at once);
       the matcher is put back as it was */
    int32_t k = 0;
    while (k < max_k && (size_t)k < n_ids && ids[k] >= 0 && ids[k] < e->n_vocab &&
           gr_matcher_accept(ch->gm, ids[k]) == 0)
        out[k] = ids[k], k++;
    if (k) gr_matcher_rollback(ch->gm, k);
    pagoda_free(ids);
    return k;
}

/* ---- the proposer of --speculative grammar: nothing besides the forced text ---- */

static void none_propose(spec_proposer *p, spec_query *qs, int32_t n) {
    (void)p;
    for (int32_t i = 0; i < n; i++) qs[i].n_out = 0;
}

static void none_destroy(spec_proposer *p) { free(p); }

pagoda_status spec_grammar_create(spec_proposer **out) {
    spec_proposer *p = calloc(1, sizeof *p);
    if (!p) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    p->name = "grammar", p->propose = none_propose, p->destroy = none_destroy;
    *out = p;
    return PAGODA_OK;
}
