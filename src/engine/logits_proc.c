#include "engine/logits_proc.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

pagoda_status lp_chain_add(lp_chain *c, lp_fn fn, void *self) {
    if (c->n >= LP_MAX_STEPS) return pg_fail(PAGODA_ERR_INVALID, "logits processors: at most %d steps per sequence", LP_MAX_STEPS);
    c->step[c->n].fn = fn, c->step[c->n].self = self;
    c->n++;
    return PAGODA_OK;
}

const float *lp_chain_run(const lp_chain *c, const float *row, int32_t n_vocab, float *scratch) {
    if (c->n == 0) return row;
    memcpy(scratch, row, (size_t)n_vocab * sizeof(float));
    for (int32_t i = 0; i < c->n; i++) c->step[i].fn(c->step[i].self, scratch, n_vocab);
    return scratch;
}

typedef struct {
    int32_t token, at;
    float bias;
} entry;

/* by token, then request order: a repeated token's biases add up in the order given */
static int by_token(const void *a, const void *b) {
    const entry *x = a, *y = b;
    if (x->token != y->token) return (x->token > y->token) - (x->token < y->token);
    return (x->at > y->at) - (x->at < y->at);
}

pagoda_status lp_bias_init(lp_bias *b, const pagoda_logit_bias *entries, int32_t n, int32_t n_vocab) {
    memset(b, 0, sizeof *b);
    if (n < 0 || n > PAGODA_MAX_LOGIT_BIAS)
        return pg_fail(PAGODA_ERR_INVALID, "logit_bias has %d entries; at most %d are allowed", n, PAGODA_MAX_LOGIT_BIAS);
    if (n == 0) return PAGODA_OK;
    if (!entries) return pg_fail(PAGODA_ERR_INVALID, "logit_bias: %d entries but no array", n);
    for (int32_t i = 0; i < n; i++) {
        if (entries[i].token < 0 || entries[i].token >= n_vocab)
            return pg_fail(PAGODA_ERR_INVALID, "logit_bias: token id %d is out of range [0, %d)", entries[i].token, n_vocab);
        if (!isfinite(entries[i].bias) || entries[i].bias < -100.0f || entries[i].bias > 100.0f)
            return pg_fail(PAGODA_ERR_INVALID, "logit_bias: the bias of token %d must be a number in [-100, 100], got %g",
                           entries[i].token, (double)entries[i].bias);
    }
    entry *s = malloc((size_t)n * sizeof *s);
    b->tokens = malloc((size_t)n * sizeof *b->tokens);
    b->bias = malloc((size_t)n * sizeof *b->bias);
    if (!s || !b->tokens || !b->bias) {
        free(s);
        lp_bias_free(b);
        return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    }
    for (int32_t i = 0; i < n; i++) s[i] = (entry){entries[i].token, i, entries[i].bias};
    qsort(s, (size_t)n, sizeof *s, by_token);
    for (int32_t i = 0; i < n; i++) {
        if (b->n && b->tokens[b->n - 1] == s[i].token) {
            b->bias[b->n - 1] += s[i].bias;
        } else {
            b->tokens[b->n] = s[i].token, b->bias[b->n] = s[i].bias;
            b->n++;
        }
    }
    free(s);
    return PAGODA_OK;
}

void lp_bias_free(lp_bias *b) {
    free(b->tokens), free(b->bias);
    memset(b, 0, sizeof *b);
}

void lp_bias_apply(void *self, float *logits, int32_t n_vocab) {
    const lp_bias *b = self;
    for (int32_t i = 0; i < b->n; i++)
        if (b->tokens[i] < n_vocab) logits[b->tokens[i]] += b->bias[i];
}
