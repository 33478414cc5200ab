/* Prompt lookup (n-gram) proposer: a sequence's last tokens are looked up in the sequence
 * itself (prompt and generated text); the tokens that followed the earlier occurrence with the
 * longest match (the most recent among equals) are the drafts. Code edits, refactors and answers that quote their input
 * repeat long spans of the prompt, and there this costs nothing but a scan of the tokens.
 * Stateless: nothing is kept per sequence. */
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "engine/spec.h"

typedef struct {
    spec_proposer base;
    int32_t n_min, n_max;
} ngram_proposer;

/* The drafts for one sequence: among the earlier positions where the sequence's last n_min
 * tokens occurred (followed by at least one token), the one whose match reaches furthest back
 * (up to n_max tokens), the most recent among equals; the tokens after it (at most max_k,
 * possibly running into the suffix itself: a repeating pattern continues). A long match is where
 * a copy of the prompt is being written; a short one, a common phrase that occurs everywhere. */
static int32_t ngram_lookup(const int32_t *t, int32_t len, int32_t n_min, int32_t n_max, int32_t max_k, int32_t *out) {
    if (len < n_min + 1) return 0;
    const int32_t *suf = t + len - n_min;
    const int32_t last = t[len - 1];
    int32_t best = -1, best_n = 0;
    /* i + n_min is the first continuation token, which must exist: i + n_min <= len - 1 */
    for (int32_t i = len - n_min - 1; i >= 0 && best_n < n_max; i--) {
        if (t[i + n_min - 1] != last || memcmp(t + i, suf, (size_t)n_min * sizeof *t)) continue;
        int32_t n = n_min; /* extend the match backwards: t[i+n_min-1-m] == t[len-1-m] */
        while (n < n_max && i + n_min - 1 - n >= 0 && t[i + n_min - 1 - n] == t[len - 1 - n]) n++;
        if (n > best_n) best = i, best_n = n;
    }
    if (best < 0) return 0;
    int32_t k = 0;
    for (int32_t j = best + n_min; j < len && k < max_k; j++) out[k++] = t[j];
    return k;
}

static void ngram_propose(spec_proposer *p, spec_query *qs, int32_t n) {
    const ngram_proposer *g = (const ngram_proposer *)p;
    for (int32_t i = 0; i < n; i++)
        qs[i].n_out = qs[i].n > 1 ? ngram_lookup(qs[i].tokens, qs[i].n, g->n_min, g->n_max, qs[i].max_k, qs[i].out) : 0;
}

static void ngram_destroy(spec_proposer *p) { free(p); }

pagoda_status spec_ngram_create(int32_t n_min, int32_t n_max, spec_proposer **out) {
    *out = NULL;
    if (n_min < 1 || n_max < n_min || n_max > 64)
        return pg_fail(PAGODA_ERR_INVALID, "n-gram speculation: suffix lengths %d..%d (want 1 <= min <= max <= 64)", n_min,
                       n_max);
    ngram_proposer *g = calloc(1, sizeof *g);
    if (!g) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    g->base = (spec_proposer){.name = "ngram", .propose = ngram_propose, .destroy = ngram_destroy};
    g->n_min = n_min, g->n_max = n_max;
    *out = &g->base;
    return PAGODA_OK;
}
