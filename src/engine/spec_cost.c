/* The cost model of speculative verification (spec_cost.h). */
#include <stdlib.h>

#include "engine/spec_cost.h"

#define EMA_NEW 0.1f      /* weight of a new measurement in a token count's average */
#define PRIOR_BETA 0.1    /* beta as a share of the only measured cost, until two counts are seen */
#define MIN_BETA 0.002    /* beta at least this share of alpha (a fit on noisy points can dip below 0) */
#define FIT_CAP 16        /* a token count's weight in the fit: how many were seen, up to this */

void spec_cost_record(spec_cost *c, int32_t n_tok, double seconds) {
    if (n_tok < 1 || n_tok > SPEC_COST_MAX_T || !(seconds > 0) || seconds > 60) return;
    float s = (float)seconds;
    c->t[n_tok] = c->n[n_tok] ? c->t[n_tok] + EMA_NEW * (s - c->t[n_tok]) : s;
    if (c->n[n_tok] < UINT16_MAX) c->n[n_tok]++;
}

void spec_cost_record_proposer(spec_cost *c, int32_t n_drafts, double seconds) {
    if (n_drafts < 1 || !(seconds >= 0) || seconds > 60) return;
    float s = (float)(seconds / n_drafts);
    c->gamma = c->n_gamma ? c->gamma + EMA_NEW * (s - c->gamma) : s;
    if (c->n_gamma < UINT32_MAX) c->n_gamma++;
}

bool spec_cost_fit(const spec_cost *c, double *alpha, double *beta) {
    /* weighted least squares over the token counts seen */
    double sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
    int distinct = 0;
    for (int32_t t = 1; t <= SPEC_COST_MAX_T; t++) {
        if (!c->n[t]) continue;
        double w = c->n[t] < FIT_CAP ? c->n[t] : FIT_CAP, y = c->t[t];
        sw += w, sx += w * t, sy += w * y, sxx += w * t * t, sxy += w * t * y;
        distinct++;
    }
    if (!distinct) return false;
    double mx = sx / sw, my = sy / sw, vx = sxx / sw - mx * mx;
    double b = distinct > 1 && vx > 1e-9 ? (sxy / sw - mx * my) / vx : PRIOR_BETA * my / (1 + PRIOR_BETA * mx);
    double a = my - b * mx;
    if (a < 0) a = 0;
    if (b < MIN_BETA * a) b = MIN_BETA * a;
    if (b <= 0) b = 1e-9;
    *alpha = a, *beta = b;
    return true;
}

typedef struct {
    float g;   /* expected tokens the draft adds */
    float key; /* g per second of cost: the order drafts are taken in */
    int32_t i;
} gain;

static int by_gain(const void *pa, const void *pb) {
    const gain *a = pa, *b = pb;
    if (a->key != b->key) return a->key > b->key ? -1 : 1;
    return a->i - b->i; /* ties: the earlier candidate first (a deterministic order) */
}

int32_t spec_cost_allocate(const spec_cost *c, int32_t n_base, const float *rate, const int32_t *ask,
                           const uint8_t *no_proposer, int32_t n, int32_t *k, void *work) {
    double alpha, beta;
    int32_t total = 0;
    if (!spec_cost_fit(c, &alpha, &beta)) { /* nothing measured yet: the asks as they are */
        for (int32_t i = 0; i < n; i++) k[i] = ask[i], total += ask[i];
        return total;
    }
    const double gamma = c->n_gamma ? c->gamma : 0;
    gain *gs = work;
    int32_t m = 0;
    for (int32_t i = 0; i < n; i++) {
        k[i] = 0;
        const double cost = beta + (no_proposer && no_proposer[i] ? 0 : gamma);
        float a = rate[i] < 0 ? 0 : rate[i] > 0.999f ? 0.999f : rate[i], g = a;
        /* (a sequence's gains fall with j at one cost: its j-th draft is taken after its (j-1)-th) */
        for (int32_t j = 0; j < ask[i]; j++, g *= a) gs[m++] = (gain){.g = g, .key = (float)(g / cost), .i = i};
    }
    qsort(gs, (size_t)m, sizeof *gs, by_gain);
    double E = n_base > 0 ? n_base : 1, C = alpha + beta * (n_base > 0 ? n_base : 1);
    for (int32_t x = 0; x < m; x++) {
        const int32_t i = gs[x].i;
        const double cost = beta + (no_proposer && no_proposer[i] ? 0 : gamma);
        /* taken while it raises E / C; by gain per cost, the first that does not ends it */
        if ((double)gs[x].g * C < E * cost) break;
        k[i]++, total++;
        E += gs[x].g, C += cost;
    }
    return total;
}

bool spec_cost_would_draft(const spec_cost *c, int32_t n_base, float rate, bool no_proposer) {
    const int32_t ask = 1;
    const uint8_t np = no_proposer;
    int32_t k = 0;
    gain work[1];
    return spec_cost_allocate(c, n_base, &rate, &ask, &np, 1, &k, work) > 0;
}
