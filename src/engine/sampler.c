/* Token sampling. Pipeline (llama.cpp / vLLM order):
 *   penalties -> greedy if temperature <= 0 -> top-k -> temperature -> softmax -> top-p
 *   -> min-p -> renormalize -> draw.
 * Non-finite logits: NaN counts as -inf; -inf tokens are never chosen. If any logit is +inf the
 * lowest such id is returned (it has all the probability mass). If no token has a logit above
 * -inf there is nothing to choose from and token 0 is returned.
 * Cost for a vocab of V: O(V) for the softmax; top-k uses a size-k heap (O(V log k) worst, about
 * O(V) in practice); top-p without top-k sorts only the tokens above a probability threshold. */
#include "engine/sampler.h"

#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

#define BLOCK 1024 /* block sums let the draw skip most of the vocab */

typedef struct {
    int32_t id;
    float v; /* logit, then unnormalized probability */
} cand;

enum { HIST = 1024 }; /* buckets of positive floats <= 1 by their top bits: 8 per octave */

struct pg_sample_ws {
    int32_t n_vocab;
    double hist_mass[HIST];
    int32_t hist_count[HIST];
    cand *cands;       /* [n_vocab] working set */
    float *prob;       /* [n_vocab] dense probabilities (unnormalized) */
    float *bsum;       /* [ceil(n_vocab / BLOCK)] block sums of prob */
    float *copy;       /* [n_vocab] penalized logits (sampler_sample_ws) */
};

struct pg_sampler {
    pg_sampling_params p;
    int32_t n_vocab;
    pg_sample_ws *own; /* sampler_create's buffers; NULL for a lean sampler */
    /* penalty history, kept only when a penalty is on (counts == NULL otherwise) */
    int32_t *counts;   /* [n_vocab] occurrences in the window */
    int32_t *distinct; /* [n_vocab] tokens with counts > 0, unordered */
    int32_t *slot;     /* [n_vocab] position of a token in distinct */
    int32_t n_distinct;
    int32_t *ring;     /* [penalty_last_n] last accepted tokens (window > 0 only) */
    int32_t ring_head, ring_len;
    uint64_t rng[4];   /* xoshiro256** */
};

/* ---- RNG: xoshiro256**, seeded through splitmix64 so any seed (even 0) gives a good state ---- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(uint64_t s[4]) {
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

static double rng_uniform(uint64_t s[4]) { /* [0, 1) with 53 random bits */
    return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

static void rng_seed(uint64_t s[4], uint64_t seed) {
    for (int i = 0; i < 4; i++) s[i] = splitmix64(&seed);
}

/* ---- create / history ---- */

pg_sampling_params sampler_default_params(void) {
    pg_sampling_params p = {
        .temperature = 1.0f,
        .top_k = 0,
        .top_p = 1.0f,
        .min_p = 0.0f,
        .repetition_penalty = 1.0f,
        .presence_penalty = 0.0f,
        .frequency_penalty = 0.0f,
        .penalty_last_n = 64,
        .seed = 0,
    };
    return p;
}

pagoda_status sampler_ws_create(int32_t n_vocab, pg_sample_ws **out) {
    *out = NULL;
    if (n_vocab <= 0) return pg_fail(PAGODA_ERR_INVALID, "sampler: n_vocab %d must be > 0", (int)n_vocab);
    pg_sample_ws *w = calloc(1, sizeof *w);
    size_t n = (size_t)n_vocab;
    if (w) {
        w->n_vocab = n_vocab;
        w->cands = malloc(n * sizeof *w->cands);
        w->prob = malloc(n * sizeof *w->prob);
        w->bsum = malloc((n / BLOCK + 1) * sizeof *w->bsum);
        w->copy = malloc(n * sizeof *w->copy);
    }
    if (!w || !w->cands || !w->prob || !w->bsum || !w->copy) {
        sampler_ws_destroy(w);
        return pg_fail(PAGODA_ERR_NOMEM, "sampler: out of memory for n_vocab %d", (int)n_vocab);
    }
    *out = w;
    return PAGODA_OK;
}

void sampler_ws_destroy(pg_sample_ws *w) {
    if (!w) return;
    free(w->cands), free(w->prob), free(w->bsum), free(w->copy);
    free(w);
}

static bool penalties_on(const pg_sampling_params *p) {
    return p->penalty_last_n != 0 &&
           (p->repetition_penalty != 1.0f || p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f);
}

static pagoda_status create(const pg_sampling_params *p, int32_t n_vocab, bool own_buffers, pg_sampler **out) {
    if (!out) return pg_fail(PAGODA_ERR_INVALID, "sampler_create: out is NULL");
    *out = NULL;
    if (!p) return pg_fail(PAGODA_ERR_INVALID, "sampler_create: params is NULL");
    if (n_vocab <= 0) return pg_fail(PAGODA_ERR_INVALID, "sampler: n_vocab %d must be > 0", (int)n_vocab);
    if (isnan(p->temperature) || isnan(p->top_p) || isnan(p->min_p))
        return pg_fail(PAGODA_ERR_INVALID, "sampler: temperature, top_p and min_p must be numbers");
    if (!(p->repetition_penalty > 0.0f) || !isfinite(p->repetition_penalty))
        return pg_fail(PAGODA_ERR_INVALID, "sampler: repetition_penalty %g must be > 0",
                       (double)p->repetition_penalty);
    if (!isfinite(p->presence_penalty) || !isfinite(p->frequency_penalty))
        return pg_fail(PAGODA_ERR_INVALID, "sampler: presence/frequency penalties must be finite");
    if (p->penalty_last_n < -1)
        return pg_fail(PAGODA_ERR_INVALID, "sampler: penalty_last_n %d must be >= -1", (int)p->penalty_last_n);

    pg_sampler *s = calloc(1, sizeof *s);
    if (!s) goto nomem;
    s->p = *p;
    s->n_vocab = n_vocab;
    size_t n = (size_t)n_vocab;
    if (own_buffers && sampler_ws_create(n_vocab, &s->own)) goto nomem;
    if (penalties_on(p)) {
        s->counts = calloc(n, sizeof *s->counts);
        s->distinct = malloc(n * sizeof *s->distinct);
        s->slot = malloc(n * sizeof *s->slot);
        if (!s->counts || !s->distinct || !s->slot) goto nomem;
        if (p->penalty_last_n > 0 && !(s->ring = malloc((size_t)p->penalty_last_n * sizeof *s->ring)))
            goto nomem;
    }
    rng_seed(s->rng, p->seed);
    *out = s;
    return PAGODA_OK;
nomem:
    sampler_destroy(s);
    return pg_fail(PAGODA_ERR_NOMEM, "sampler: out of memory for n_vocab %d", (int)n_vocab);
}

pagoda_status sampler_create(const pg_sampling_params *p, int32_t n_vocab, pg_sampler **out) {
    return create(p, n_vocab, true, out);
}

pagoda_status sampler_create_lean(const pg_sampling_params *p, int32_t n_vocab, pg_sampler **out) {
    return create(p, n_vocab, false, out);
}

void sampler_destroy(pg_sampler *s) {
    if (!s) return;
    sampler_ws_destroy(s->own);
    free(s->counts);
    free(s->distinct);
    free(s->slot);
    free(s->ring);
    free(s);
}

static void count_add(pg_sampler *s, int32_t t) {
    if (s->counts[t]++ == 0) {
        s->slot[t] = s->n_distinct;
        s->distinct[s->n_distinct++] = t;
    } else if (s->counts[t] == INT32_MAX) {
        s->counts[t]--; /* saturate: only reachable with an unbounded window */
    }
}

static void count_remove(pg_sampler *s, int32_t t) {
    if (--s->counts[t] == 0) { /* swap-remove from the distinct list */
        int32_t last = s->distinct[--s->n_distinct];
        s->distinct[s->slot[t]] = last;
        s->slot[last] = s->slot[t];
    }
}

void sampler_accept(pg_sampler *s, int32_t token) {
    if (!s || token < 0 || token >= s->n_vocab || !s->counts) return;
    if (s->p.penalty_last_n > 0) {
        int32_t cap = s->p.penalty_last_n;
        if (s->ring_len == cap) { /* window full: the oldest token leaves */
            count_remove(s, s->ring[s->ring_head]);
            s->ring[s->ring_head] = token;
            s->ring_head = (s->ring_head + 1) % cap;
        } else {
            s->ring[(s->ring_head + s->ring_len) % cap] = token;
            s->ring_len++;
        }
    }
    count_add(s, token);
}

void sampler_reset(pg_sampler *s) {
    if (!s) return;
    for (int32_t i = 0; i < s->n_distinct; i++) s->counts[s->distinct[i]] = 0;
    s->n_distinct = 0;
    s->ring_head = s->ring_len = 0;
    rng_seed(s->rng, s->p.seed);
}

/* ---- sampling ---- */

static bool has_penalties(const pg_sampler *s) { return s->counts && s->n_distinct > 0; }

static void apply_penalties(const pg_sampler *s, float *logits) {
    const pg_sampling_params *p = &s->p;
    if (!has_penalties(s)) return;
    for (int32_t i = 0; i < s->n_distinct; i++) {
        int32_t t = s->distinct[i];
        float l = logits[t];
        if (p->repetition_penalty != 1.0f) l = l > 0.0f ? l / p->repetition_penalty : l * p->repetition_penalty;
        l -= (float)s->counts[t] * p->frequency_penalty + p->presence_penalty;
        logits[t] = l;
    }
}

/* Total order used for ranking: higher value first, then lower id. */
static inline int cand_before(const cand *a, const cand *b) {
    return a->v > b->v || (a->v == b->v && a->id < b->id);
}

static int cand_cmp(const void *pa, const void *pb) {
    const cand *a = pa, *b = pb;
    return cand_before(a, b) ? -1 : cand_before(b, a) ? 1 : 0;
}

/* Min-heap on the ranking order: the root is the worst of the kept candidates. */
static void heap_sift_down(cand *h, int32_t n, int32_t i) {
    for (;;) {
        int32_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && cand_before(&h[w], &h[l])) w = l;
        if (r < n && cand_before(&h[w], &h[r])) w = r;
        if (w == i) return;
        cand t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

/* c sorted best first: keeps the smallest prefix whose mass reaches target (at least one token). */
static int32_t apply_top_p_sorted(const cand *c, int32_t n, double target) {
    double cum = 0.0;
    for (int32_t i = 0; i < n; i++) {
        cum += c[i].v;
        if (cum >= target) return i + 1;
    }
    return n;
}

static inline void cand_swap(cand *a, cand *b) {
    cand t = *a;
    *a = *b;
    *b = t;
}

/* c in any order: moves the same set as apply_top_p_sorted would keep (the smallest best-first
 * prefix whose mass reaches target) to c[0..k), in no particular order, and returns k. A
 * quickselect on mass, expected O(n): a flat distribution puts thousands of tokens in the
 * nucleus, and sorting them all cost more than the rest of sampling together. */
static int32_t apply_top_p_unsorted(cand *c, int32_t n, double target) {
    /* c[0..lo) is kept (every one ranks before all of c[lo..hi)); need: the mass still wanted */
    int32_t lo = 0, hi = n;
    double need = target;
    while (hi - lo > 1) {
        cand piv = c[lo + (hi - lo) / 2];
        int32_t i = lo;
        double m = 0.0;
        for (int32_t j = lo; j < hi; j++)
            if (cand_before(&c[j], &piv)) {
                m += c[j].v;
                cand_swap(&c[i++], &c[j]);
            }
        if (m >= need) { /* the nucleus ends among the ones ranked before the pivot */
            hi = i;
            continue;
        }
        need -= m; /* all of those kept, and then the pivot: it ranks next */
        for (int32_t j = i; j < hi; j++)
            if (c[j].id == piv.id) {
                cand_swap(&c[i], &c[j]);
                break;
            }
        lo = i + 1;
        need -= piv.v;
        if (need <= 0.0) return lo;
    }
    return hi; /* one left and still needed (or none left) */
}

/* ---- dense passes over the whole vocab: scalar, plus AVX2 versions chosen at run time ---- */

/* expf for x <= 0 (Cephes polynomial, about 1 ulp); the AVX2 version below mirrors it. */
static inline float exp_neg(float x) {
    x = x < -87.0f ? -87.0f : x;
    float n = nearbyintf(x * 1.44269504f);
    float r = x - n * 0.693359375f + n * 2.12194440e-4f; /* x - n*ln2 in two parts */
    float q = 1.9875691500e-4f;
    q = q * r + 1.3981999507e-3f;
    q = q * r + 8.3334519073e-3f;
    q = q * r + 4.1665795894e-2f;
    q = q * r + 1.6666665459e-1f;
    q = q * r + 5.0000001201e-1f;
    float e = q * r * r + r + 1.0f;
    uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    return e * scale;
}

/* Largest logit; NaN never compares greater, so it is ignored. */
static float max_logit_scalar(const float *x, int32_t n) {
    float r = -INFINITY;
    for (int32_t i = 0; i < n; i++) r = x[i] > r ? x[i] : r;
    return r;
}

/* prob[i] = exp((x[i] - max) * inv_t), or 0 where that exponent is below lo (or x is NaN/-inf).
 * Returns the sum of prob[0..n). */
static float softmax_block_scalar(const float *x, int32_t n, float max, float inv_t, float lo, float *prob) {
    float s = 0.0f;
    for (int32_t i = 0; i < n; i++) {
        float z = (x[i] - max) * inv_t;
        prob[i] = z >= lo ? exp_neg(z) : 0.0f;
        s += prob[i];
    }
    return s;
}

static double mass_above_scalar(const float *prob, int32_t n, float thr) {
    double s = 0.0;
    for (int32_t i = 0; i < n; i++) s += prob[i] >= thr ? prob[i] : 0.0f;
    return s;
}

/* First index >= i with x > thr (NaN never is), or n. */
static int32_t next_above_scalar(const float *x, int32_t i, int32_t n, float thr) {
    while (i < n && !(x[i] > thr)) i++;
    return i;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#include "kernels/cpu/exp_avx2.h"
#define PG_AVX2 PG_TARGET_AVX2

PG_AVX2 static float hsum8(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

PG_AVX2 static float max_logit_avx2(const float *x, int32_t n) {
    __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0;
    int32_t i = 0;
    for (; i + 16 <= n; i += 16) { /* max_ps(a, m) returns m when a is NaN */
        m0 = _mm256_max_ps(_mm256_loadu_ps(x + i), m0);
        m1 = _mm256_max_ps(_mm256_loadu_ps(x + i + 8), m1);
    }
    float t[8];
    _mm256_storeu_ps(t, _mm256_max_ps(m0, m1));
    float r = max_logit_scalar(x + i, n - i);
    for (int j = 0; j < 8; j++) r = t[j] > r ? t[j] : r;
    return r;
}


PG_AVX2 static float softmax_block_avx2(const float *x, int32_t n, float max, float inv_t, float lo, float *prob) {
    const __m256 vmax = _mm256_set1_ps(max), vit = _mm256_set1_ps(inv_t), vlo = _mm256_set1_ps(lo);
    __m256 acc = _mm256_setzero_ps();
    int32_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 z = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmax), vit);
        __m256 keep = _mm256_cmp_ps(z, vlo, _CMP_GE_OQ); /* false for NaN */
        __m256 e = _mm256_and_ps(exp256(_mm256_and_ps(z, keep)), keep);
        _mm256_storeu_ps(prob + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    return hsum8(acc) + softmax_block_scalar(x + i, n - i, max, inv_t, lo, prob + i);
}

/* sum of e^(x[i] - max) over x[0..n), max >= every x; float lanes, summed in double per 1,024 */
PG_AVX2 static double sum_exp_avx2(const float *x, int32_t n, float max) {
    const __m256 vmax = _mm256_set1_ps(max);
    double total = 0.0;
    int32_t i = 0;
    while (i + 16 <= n) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0;
        for (int32_t end = i + 1024 < n ? i + 1024 : n; i + 16 <= end; i += 16) {
            a0 = _mm256_add_ps(a0, exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmax)));
            a1 = _mm256_add_ps(a1, exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), vmax)));
        }
        total += (double)hsum8(_mm256_add_ps(a0, a1));
    }
    for (; i < n; i++) total += exp((double)(x[i] - max));
    return total;
}

PG_AVX2 static double mass_above_avx2(const float *prob, int32_t n, float thr) {
    const __m256 vt = _mm256_set1_ps(thr);
    __m256 acc = _mm256_setzero_ps();
    int32_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 p = _mm256_loadu_ps(prob + i);
        acc = _mm256_add_ps(acc, _mm256_and_ps(p, _mm256_cmp_ps(p, vt, _CMP_GE_OQ)));
    }
    return (double)hsum8(acc) + mass_above_scalar(prob + i, n - i, thr);
}

PG_AVX2 static int32_t next_above_avx2(const float *x, int32_t i, int32_t n, float thr) {
    const __m256 vt = _mm256_set1_ps(thr);
    for (; i + 16 <= n; i += 16) { /* most of a vocab is below the k-th best: skip 16 at a time */
        __m256 a = _mm256_cmp_ps(_mm256_loadu_ps(x + i), vt, _CMP_GT_OQ);
        __m256 b = _mm256_cmp_ps(_mm256_loadu_ps(x + i + 8), vt, _CMP_GT_OQ);
        unsigned m = (unsigned)_mm256_movemask_ps(a) | (unsigned)_mm256_movemask_ps(b) << 8;
        if (m) return i + __builtin_ctz(m);
    }
    return next_above_scalar(x, i, n, thr);
}

static bool have_avx2(void) {
    static int cached = -1; /* benign race: every thread computes the same value */
    if (cached < 0) cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return cached;
}
#else
static bool have_avx2(void) { return false; }
#define max_logit_avx2 max_logit_scalar
#define softmax_block_avx2 softmax_block_scalar
#define mass_above_avx2 mass_above_scalar
#define sum_exp_avx2(x, n, max) 0.0 /* not called: have_avx2() is false */
#define next_above_avx2 next_above_scalar
#endif

static int32_t next_above(const float *x, int32_t i, int32_t n, float thr) {
    return have_avx2() ? next_above_avx2(x, i, n, thr) : next_above_scalar(x, i, n, thr);
}

static float max_logit(const float *x, int32_t n) {
    return have_avx2() ? max_logit_avx2(x, n) : max_logit_scalar(x, n);
}

/* Fills prob[n] and the block sums bsum; returns the total. */
static double softmax_dense(const float *x, int32_t n, float max, float inv_t, float lo, float *prob,
                            float *bsum) {
    bool v = have_avx2();
    double total = 0.0;
    for (int32_t b0 = 0, bi = 0; b0 < n; b0 += BLOCK, bi++) {
        int32_t len = n - b0 < BLOCK ? n - b0 : BLOCK;
        bsum[bi] = v ? softmax_block_avx2(x + b0, len, max, inv_t, lo, prob + b0)
                     : softmax_block_scalar(x + b0, len, max, inv_t, lo, prob + b0);
        total += bsum[bi];
    }
    return total;
}

static double mass_above(const float *prob, int32_t n, float thr) {
    return have_avx2() ? mass_above_avx2(prob, n, thr) : mass_above_scalar(prob, n, thr);
}

/* The k best finite logits into c[0..ret), sorted best first. */
static int32_t select_top_k(const float *logits, int32_t n_vocab, int32_t k, cand *c) {
    int32_t n = 0, i = 0;
    for (; i < n_vocab && n < k; i++) {
        float l = logits[i];
        if (!(l > -INFINITY)) continue; /* -inf and NaN are never candidates */
        c[n++] = (cand){i, l};
    }
    if (n == k) {
        for (int32_t j = k / 2 - 1; j >= 0; j--) heap_sift_down(c, k, j);
        /* ids ascend, so only a strictly greater logit outranks the root */
        while ((i = next_above(logits, i, n_vocab, c[0].v)) < n_vocab) {
            c[0] = (cand){i, logits[i]};
            heap_sift_down(c, k, 0);
            i++;
        }
    }
    qsort(c, (size_t)n, sizeof *c, cand_cmp);
    return n;
}

/* Draws from prob[n] (unnormalized) using its block sums; total is their sum. */
static int32_t draw_dense(const float *prob, const float *bsum, int32_t n, double total, double u) {
    double r = u * total, cum = 0.0;
    int32_t last = -1;
    for (int32_t b0 = 0, bi = 0; b0 < n; b0 += BLOCK, bi++) {
        if (bsum[bi] <= 0.0f) continue;
        int32_t end = b0 + BLOCK < n ? b0 + BLOCK : n;
        if (cum + bsum[bi] <= r) { /* not in this block; remember its last live token */
            cum += bsum[bi];
            for (int32_t i = end - 1; i >= b0; i--)
                if (prob[i] > 0.0f) {
                    last = i;
                    break;
                }
            continue;
        }
        for (int32_t i = b0; i < end; i++) {
            if (prob[i] <= 0.0f) continue;
            cum += prob[i];
            last = i;
            if (r < cum) return i;
        }
    }
    return last; /* rounding: r landed on the total */
}

static inline uint32_t hist_bucket(float p) { /* p in (0, 1] */
    uint32_t b;
    memcpy(&b, &p, sizeof b);
    b >>= 20; /* exponent and 3 mantissa bits; 1.0f lands in 1016 */
    return b < HIST ? b : HIST - 1;
}

/* c[m++] for every x[i] > thr, in id order: skips 16 at a time where none is, branch-free where many are */
static int32_t gather_above(const float *x, int32_t n, float thr, cand *c) {
    int32_t m = 0;
    for (int32_t i = 0; (i = next_above(x, i, n, thr)) < n;)
        for (int32_t end = i + 16 < n ? i + 16 : n; i < end; i++) {
            c[m] = (cand){i, x[i]};
            m += x[i] > thr;
        }
    return m;
}

/* top-p over the dense probabilities w->prob (relative to the best, so <= 1): puts the nucleus
 * into w->cands[0..ret), unordered. Only tokens above a threshold that already holds the target
 * mass are gathered (few, for a peaked distribution) and ranked by quickselect. A flat one can
 * leave most of the vocab: then a histogram of the candidates' float bits finds the bucket where
 * the best-first mass reaches target, everything above it is kept as it is, and only that
 * bucket's tokens (within 9% of each other) are ranked. */
static int32_t nucleus_dense(pg_sample_ws *w, int32_t V, double target) {
    const float *prob = w->prob;
    float thr = 1e-3f;
    while (thr > 0.0f && mass_above(prob, V, thr) < target) thr = thr < 1e-30f ? 0.0f : thr * 1e-3f;
    cand *c = w->cands;
    /* prob >= thr and > 0, i.e. prob > the float just below thr (or > 0) */
    int32_t n = gather_above(prob, V, thr > 0.0f ? nextafterf(thr, 0.0f) : 0.0f, c);
    if (n <= 4096) return apply_top_p_unsorted(c, n, target);
    memset(w->hist_mass, 0, sizeof w->hist_mass);
    memset(w->hist_count, 0, sizeof w->hist_count);
    for (int32_t i = 0; i < n; i++) {
        uint32_t b = hist_bucket(c[i].v);
        w->hist_mass[b] += c[i].v;
        w->hist_count[b]++;
    }
    double cum = 0.0;
    int32_t edge = HIST - 1;
    for (; edge > 0 && cum + w->hist_mass[edge] < target; edge--) cum += w->hist_mass[edge];
    /* above the edge bucket to the front, then the edge bucket's tokens */
    int32_t n_above = 0;
    for (int32_t i = 0; i < n; i++)
        if (hist_bucket(c[i].v) > (uint32_t)edge) cand_swap(&c[n_above++], &c[i]);
    int32_t n_edge = n_above;
    for (int32_t i = n_above; i < n; i++)
        if (hist_bucket(c[i].v) == (uint32_t)edge) cand_swap(&c[n_edge++], &c[i]);
    return n_above + apply_top_p_unsorted(c + n_above, n_edge - n_above, target - cum);
}

/* Everything after the penalties; reads logits only. */
static int32_t sample_from(pg_sampler *s, const float *logits, pg_sample_ws *w) {
    const pg_sampling_params *p = &s->p;
    const int32_t V = s->n_vocab;

    float max = max_logit(logits, V);
    if (max == -INFINITY) return 0; /* every logit is -inf/NaN: nothing to choose */
    int32_t best = 0;
    while (logits[best] != max) best++; /* lowest id with the max (also the lowest +inf) */
    if (max == INFINITY || p->temperature <= 0.0f || p->top_k == 1) return best;
    const float inv_t = 1.0f / p->temperature;
    if (!isfinite(inv_t)) return best; /* temperature so small it is greedy */
    const float min_p = p->min_p < 1.0f ? p->min_p : 1.0f; /* capped so the best token survives */

    cand *c = w->cands;
    int32_t n;
    double sum = 0.0;
    if (p->top_k > 0 && p->top_k < V) {
        n = select_top_k(logits, V, p->top_k, c);
        for (int32_t i = 0; i < n; i++) { /* values relative to the max, so the best is 1 */
            float e = expf((c[i].v - max) * inv_t);
            c[i].v = e;
            sum += e;
        }
        if (p->top_p < 1.0f) n = apply_top_p_sorted(c, n, (double)p->top_p * sum);
    } else {
        /* min-p alone needs no global sum: skip the exp of tokens it drops (log-space test). */
        float lo = p->top_p >= 1.0f && min_p > 0.0f ? logf(min_p) : -FLT_MAX;
        sum = softmax_dense(logits, V, max, inv_t, lo, w->prob, w->bsum);
        if (p->top_p >= 1.0f) return draw_dense(w->prob, w->bsum, V, sum, rng_uniform(s->rng));
        n = nucleus_dense(w, V, (double)p->top_p * sum);
    }
    if (min_p > 0.0f) { /* keep p >= min_p * p_max (p_max is 1: values are relative to the max) */
        int32_t m = 0;
        for (int32_t i = 0; i < n; i++)
            if (c[i].v >= min_p) c[m++] = c[i];
        n = m;
    }

    /* Draw: renormalize over what is left. */
    double total = 0.0;
    for (int32_t i = 0; i < n; i++) total += c[i].v;
    double r = rng_uniform(s->rng) * total, cum = 0.0;
    for (int32_t i = 0; i < n; i++) {
        cum += c[i].v;
        if (r < cum) return c[i].id;
    }
    return c[n - 1].id; /* rounding: r landed on the total */
}

int32_t sampler_sample(pg_sampler *s, float *logits) {
    if (!s->own) return -1;
    apply_penalties(s, logits);
    return sample_from(s, logits, s->own);
}

int32_t sampler_sample_ws(pg_sampler *s, const float *logits, pg_sample_ws *w) {
    if (!w || w->n_vocab != s->n_vocab) return -1;
    if (!has_penalties(s)) return sample_from(s, logits, w);
    memcpy(w->copy, logits, (size_t)s->n_vocab * sizeof(float));
    apply_penalties(s, w->copy);
    return sample_from(s, w->copy, w);
}

int sampler_penalties_on(const pg_sampler *s) { return s->counts != NULL; }

void sampler_apply_penalties(const pg_sampler *s, float *logits) { apply_penalties(s, logits); }

int32_t sampler_draw_ws(pg_sampler *s, const float *logits, pg_sample_ws *w) {
    if (!w || w->n_vocab != s->n_vocab) return -1;
    return sample_from(s, logits, w);
}

float *sampler_ws_scratch(pg_sample_ws *w) { return w->copy; }
int32_t sampler_ws_n_vocab(const pg_sample_ws *w) { return w->n_vocab; }

float sampler_logprobs(const float *logits, int32_t V, int32_t token, int32_t k, int32_t *top_tok, float *top_lp) {
    float mx = max_logit(logits, V);
    double sum = 0.0;
    if (have_avx2() && isfinite(mx)) sum = sum_exp_avx2(logits, V, mx);
    else
        for (int32_t i = 0; i < V; i++) sum += exp((double)(logits[i] - mx));
    float lse = mx + (float)log(sum);
    if (k > SAMPLER_MAX_LOGPROBS) k = SAMPLER_MAX_LOGPROBS;
    if (k > V) k = V;
    if (k > 0) {
        cand c[SAMPLER_MAX_LOGPROBS];
        int32_t n = select_top_k(logits, V, k, c);
        for (int32_t i = 0; i < n; i++) top_tok[i] = c[i].id, top_lp[i] = c[i].v - lse;
        for (int32_t i = 0; n < k && i < V; i++) /* fewer finite logits than k: -inf ones, by id */
            if (!(logits[i] > -INFINITY)) top_tok[n] = i, top_lp[n++] = -INFINITY;
    }
    return logits[token] - lse;
}
