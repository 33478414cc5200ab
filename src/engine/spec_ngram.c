/* Prompt lookup (n-gram) proposer: a sequence's last tokens are looked up in the sequence
 * itself (prompt and generated text); the tokens that followed the earlier occurrence with the
 * longest match (the most recent among equals) are the drafts. Code edits, refactors and answers that quote their input
 * repeat long spans of the prompt, and there this costs nothing but a scan of the tokens.
 *
 * Across requests: the tokens of finished sequences go into a ring of recent history (observe),
 * indexed by a hash of every n_min tokens; where the sequence itself has no match as long, the
 * latest place in that history where its last n_min tokens occurred is tried (agent loops, retries
 * and templated answers repeat earlier requests). Drafts are only proposals: what a request
 * outputs is still the model's, token for token. */
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "engine/spec.h"

typedef struct {
    spec_proposer base;
    int32_t n_min, n_max;
    /* history of finished sequences: ring[pos % cap] for absolute positions [total - cap, total);
       -1 separates sequences; index[hash of the n_min tokens starting at pos] = pos (latest) */
    int32_t *ring;
    int64_t cap, total;
    int64_t *index;
    uint32_t index_mask;
} ngram_proposer;

static uint32_t gram_hash(const int32_t *t, int32_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull;
    for (int32_t i = 0; i < n; i++) h = (h ^ (uint32_t)t[i]) * 0xFF51AFD7ED558CCDull;
    return (uint32_t)(h >> 32);
}

/* history token at absolute position p, or -1 when it is gone from the ring or never written */
static int32_t hist_at(const ngram_proposer *g, int64_t p) {
    return p < 0 || p >= g->total || p < g->total - g->cap ? -1 : g->ring[p % g->cap];
}

static void ngram_observe(spec_proposer *p, const int32_t *t, int32_t n) {
    ngram_proposer *g = (ngram_proposer *)p;
    if (!g->ring || n < g->n_min + 1) return;
    if (n > g->cap / 2) t += n - g->cap / 2, n = (int32_t)(g->cap / 2); /* the end of a very long one */
    const int64_t start = g->total;
    for (int32_t i = 0; i < n; i++) g->ring[(start + i) % g->cap] = t[i];
    g->ring[(start + n) % g->cap] = -1;
    g->total = start + n + 1;
    for (int32_t i = 0; i + g->n_min < n; i++) /* grams followed by at least one token */
        g->index[gram_hash(t + i, g->n_min) & g->index_mask] = start + i;
}

/* The history's continuation of t's last n_min tokens when it matches further back than have
 * (the sequence's own best match length): its match length, drafts in out. */
static int32_t hist_lookup(const ngram_proposer *g, const int32_t *t, int32_t len, int32_t have, int32_t max_k,
                           int32_t *out, int32_t *n_out) {
    const int32_t n_min = g->n_min;
    if (!g->ring || len < n_min || have >= g->n_max) return 0;
    int64_t pos = g->index[gram_hash(t + len - n_min, n_min) & g->index_mask];
    if (pos < 0) return 0;
    for (int32_t i = 0; i < n_min; i++)
        if (hist_at(g, pos + i) != t[len - n_min + i]) return 0; /* overwritten, or another gram's hash */
    int32_t n = n_min;
    while (n < g->n_max && n < len && hist_at(g, pos + n_min - 1 - n) >= 0 &&
           hist_at(g, pos + n_min - 1 - n) == t[len - 1 - n])
        n++;
    if (n <= have) return 0;
    int32_t k = 0;
    for (int64_t j = pos + n_min; k < max_k; j++) {
        int32_t x = hist_at(g, j);
        if (x < 0) break;
        out[k++] = x;
    }
    if (!k) return 0;
    *n_out = k;
    return n;
}

/* The drafts for one sequence: among the earlier positions where the sequence's last n_min
 * tokens occurred (followed by at least one token), the one whose match reaches furthest back
 * (up to n_max tokens), the most recent among equals; the tokens after it (at most max_k,
 * possibly running into the suffix itself: a repeating pattern continues). A long match is where
 * a copy of the prompt is being written; a short one, a common phrase that occurs everywhere. */
static int32_t ngram_lookup(const int32_t *t, int32_t len, int32_t n_min, int32_t n_max, int32_t max_k, int32_t *out,
                            int32_t *match) {
    *match = 0;
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
    *match = best_n;
    return k;
}

static void ngram_propose(spec_proposer *p, spec_query *qs, int32_t n) {
    const ngram_proposer *g = (const ngram_proposer *)p;
    for (int32_t i = 0; i < n; i++) {
        spec_query *q = &qs[i];
        int32_t match = 0;
        q->n_out = q->n > 1 ? ngram_lookup(q->tokens, q->n, g->n_min, g->n_max, q->max_k, q->out, &match) : 0;
        int32_t k = 0;
        if (hist_lookup(g, q->tokens, q->n, q->n_out ? match : 0, q->max_k, q->out, &k)) q->n_out = k;
    }
}

static void ngram_destroy(spec_proposer *p) {
    ngram_proposer *g = (ngram_proposer *)p;
    free(g->ring), free(g->index), free(g);
}

pagoda_status spec_ngram_create(int32_t n_min, int32_t n_max, spec_proposer **out) {
    return spec_ngram_create_ex(n_min, n_max, 0, out);
}

pagoda_status spec_ngram_create_ex(int32_t n_min, int32_t n_max, int32_t history, spec_proposer **out) {
    *out = NULL;
    if (history < 0 || history > (1 << 26))
        return pg_fail(PAGODA_ERR_INVALID, "n-gram speculation: a history of %d tokens (0 .. %d)", history, 1 << 26);
    if (n_min < 1 || n_max < n_min || n_max > 64)
        return pg_fail(PAGODA_ERR_INVALID, "n-gram speculation: suffix lengths %d..%d (want 1 <= min <= max <= 64)", n_min,
                       n_max);
    ngram_proposer *g = calloc(1, sizeof *g);
    if (!g) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    g->base = (spec_proposer){.name = "ngram", .propose = ngram_propose, .destroy = ngram_destroy};
    g->n_min = n_min, g->n_max = n_max;
    if (history > 0) {
        uint32_t slots = 1024;
        while (slots < (uint32_t)history) slots <<= 1; /* about one slot per token */
        g->cap = history;
        g->ring = malloc(sizeof *g->ring * (size_t)history);
        g->index = malloc(sizeof *g->index * slots);
        if (!g->ring || !g->index) {
            ngram_destroy(&g->base);
            return pg_fail(PAGODA_ERR_NOMEM, "out of memory for an n-gram history of %d tokens", history);
        }
        for (uint32_t i = 0; i < slots; i++) g->index[i] = -1;
        g->index_mask = slots - 1;
        g->base.observe = ngram_observe;
    }
    *out = &g->base;
    return PAGODA_OK;
}
