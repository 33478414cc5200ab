/* Sampler: greedy, top-k/top-p/min-p/temperature statistics against an independent reference,
 * penalties, determinism, non-finite logits; prints timings for a 150k vocab. */
#include <math.h>
#include <string.h>
#include <time.h>

#include "engine/logits_proc.h"
#include "engine/sampler.h"
#include "test_util.h"

static pg_sampler *make(pg_sampling_params p, int32_t n_vocab) {
    pg_sampler *s = NULL;
    pagoda_status st = sampler_create(&p, n_vocab, &s);
    if (st != PAGODA_OK || !s) {
        fprintf(stderr, "sampler_create failed: %s\n", pagoda_last_error());
        exit(1);
    }
    return s;
}

static int32_t argmax(const float *x, int32_t n) {
    int32_t b = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static void test_greedy(void) {
    enum { V = 1000 };
    static float logits[V], work[V];
    unsigned long long rs = 1;
    pg_sampling_params p = sampler_default_params();
    p.temperature = 0.0f;
    pg_sampler *s = make(p, V);
    for (int it = 0; it < 50; it++) {
        for (int i = 0; i < V; i++) logits[i] = 5.0f * test_rand_f(&rs);
        memcpy(work, logits, sizeof work);
        int32_t t = sampler_sample(s, work);
        CHECK(t == argmax(logits, V), "greedy picked %d, argmax %d", t, argmax(logits, V));
    }
    /* ties: lowest id wins */
    for (int i = 0; i < V; i++) logits[i] = 0.0f;
    logits[7] = logits[300] = logits[999] = 2.0f;
    CHECK(sampler_sample(s, logits) == 7, "tie should pick the lowest id");
    sampler_destroy(s);
}

static void test_top_k_1_is_greedy(void) {
    enum { V = 3000 };
    static float logits[V], work[V];
    unsigned long long rs = 2;
    const float temps[] = {0.05f, 0.7f, 1.0f, 3.0f, 100.0f};
    for (size_t ti = 0; ti < sizeof temps / sizeof temps[0]; ti++) {
        pg_sampling_params p = sampler_default_params();
        p.temperature = temps[ti];
        p.top_k = 1;
        p.top_p = 0.9f;
        p.seed = ti;
        pg_sampler *s = make(p, V);
        for (int it = 0; it < 30; it++) {
            for (int i = 0; i < V; i++) logits[i] = 3.0f * test_rand_f(&rs);
            memcpy(work, logits, sizeof work);
            int32_t t = sampler_sample(s, work);
            CHECK(t == argmax(logits, V), "top_k=1 at T=%g picked %d, argmax %d", (double)temps[ti], t,
                  argmax(logits, V));
        }
        sampler_destroy(s);
    }
}

static void run_seq(uint64_t seed, int32_t *out, int n, pg_sampler **keep) {
    enum { V = 500 };
    float logits[V];
    unsigned long long rs = 99; /* same logits sequence for every seed */
    pg_sampling_params p = sampler_default_params();
    p.seed = seed;
    p.top_p = 0.95f;
    p.frequency_penalty = 0.1f;
    pg_sampler *s = make(p, V);
    for (int k = 0; k < n; k++) {
        for (int i = 0; i < V; i++) logits[i] = 2.0f * test_rand_f(&rs);
        out[k] = sampler_sample(s, logits);
        sampler_accept(s, out[k]);
    }
    if (keep)
        *keep = s;
    else
        sampler_destroy(s);
}

static void test_determinism(void) {
    enum { N = 300 };
    int32_t a[N], b[N], c[N], d[N];
    pg_sampler *s = NULL;
    run_seq(42, a, N, &s);
    run_seq(42, b, N, NULL);
    run_seq(43, c, N, NULL);
    CHECK(memcmp(a, b, sizeof a) == 0, "same seed gave different tokens");
    int diff = 0;
    for (int i = 0; i < N; i++) diff += a[i] != c[i];
    CHECK(diff > N / 2, "different seeds agree on %d of %d tokens", N - diff, N);
    /* reset: history cleared and RNG reseeded, so the sequence repeats */
    sampler_reset(s);
    {
        enum { V = 500 };
        float logits[V];
        unsigned long long rs = 99;
        for (int k = 0; k < N; k++) {
            for (int i = 0; i < V; i++) logits[i] = 2.0f * test_rand_f(&rs);
            d[k] = sampler_sample(s, logits);
            sampler_accept(s, d[k]);
        }
    }
    CHECK(memcmp(a, d, sizeof a) == 0, "reset did not restore the initial state");
    sampler_destroy(s);
}

/* ---- statistics against an independent reference (double precision, full sort) ---- */

static void reference_probs(const float *logits, int n, pg_sampling_params p, double *out) {
    int order[64];
    for (int i = 0; i < n; i++) order[i] = i;
    for (int i = 0; i < n; i++) /* selection sort: logit desc, id asc */
        for (int j = i + 1; j < n; j++)
            if (logits[order[j]] > logits[order[i]]) {
                int t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
    int keep = n;
    if (p.top_k > 0 && p.top_k < keep) keep = p.top_k;
    double pr[64] = {0}, sum = 0.0;
    for (int r = 0; r < keep; r++) sum += pr[r] = exp((double)logits[order[r]] / p.temperature);
    for (int r = 0; r < keep; r++) pr[r] /= sum;
    if (p.top_p < 1.0f) {
        double cum = 0.0;
        int r = 0;
        while (r < keep) {
            cum += pr[r++];
            if (cum >= p.top_p) break;
        }
        keep = r;
    }
    if (p.min_p > 0.0f) {
        int r = 0;
        while (r < keep && pr[r] >= p.min_p * pr[0]) r++;
        keep = r;
    }
    double tot = 0.0;
    for (int r = 0; r < keep; r++) tot += pr[r];
    for (int i = 0; i < n; i++) out[i] = 0.0;
    for (int r = 0; r < keep; r++) out[order[r]] = pr[r] / tot;
}

static void check_distribution(const char *name, pg_sampling_params p) {
    enum { V = 8, N = 20000 };
    const float base[V] = {1.0f, 2.0f, -0.5f, 1.5f, 0.0f, 0.5f, -1.0f, -3.0f};
    double expect[V];
    long count[V] = {0};
    reference_probs(base, V, p, expect);
    pg_sampler *s = make(p, V);
    for (int k = 0; k < N; k++) {
        float logits[V];
        memcpy(logits, base, sizeof logits);
        int32_t t = sampler_sample(s, logits);
        if (t < 0 || t >= V) {
            CHECK(0, "%s: token %d out of range", name, t);
            break;
        }
        count[t]++;
    }
    sampler_destroy(s);
    double chi2 = 0.0;
    int df = -1;
    for (int i = 0; i < V; i++) {
        if (expect[i] == 0.0) {
            CHECK(count[i] == 0, "%s: token %d is excluded but drawn %ld times", name, i, count[i]);
            continue;
        }
        double e = expect[i] * N;
        chi2 += (count[i] - e) * (count[i] - e) / e;
        df++;
    }
    /* chi-square 0.999 quantile for df <= 7 is at most 24.3 */
    CHECK(chi2 < 24.3, "%s: chi-square %.2f with %d dof", name, chi2, df);
    printf("  %-22s chi2 %6.2f (dof %d)\n", name, chi2, df);
}

static void test_statistics(void) {
    pg_sampling_params p = sampler_default_params();
    p.seed = 1234;
    check_distribution("temperature 1", p);
    p.temperature = 0.5f;
    check_distribution("temperature 0.5", p);
    p.temperature = 2.0f;
    check_distribution("temperature 2", p);
    p = sampler_default_params();
    p.seed = 5;
    p.top_k = 3;
    check_distribution("top-k 3", p);
    p = sampler_default_params();
    p.seed = 6;
    p.top_p = 0.8f;
    check_distribution("top-p 0.8", p);
    p = sampler_default_params();
    p.seed = 7;
    p.min_p = 0.2f;
    check_distribution("min-p 0.2", p);
    p = sampler_default_params();
    p.seed = 8;
    p.top_k = 5;
    p.temperature = 0.7f;
    p.top_p = 0.9f;
    p.min_p = 0.05f;
    check_distribution("top-k5 T.7 p.9 min.05", p);
}

/* top-p over a large vocab (the threshold path): every draw lies in the reference nucleus. */
static void test_top_p_large(void) {
    enum { V = 20000 };
    static float logits[V], work[V];
    static int order[V];
    static double pr[V];
    static char in_nucleus[V];
    unsigned long long rs = 17;
    for (int i = 0; i < V; i++) logits[i] = 4.0f * test_rand_f(&rs);
    double mx = logits[argmax(logits, V)], sum = 0.0;
    for (int i = 0; i < V; i++) sum += pr[i] = exp(logits[i] - mx);
    for (int i = 0; i < V; i++) order[i] = i;
    /* insertion of the top tokens only: find nucleus by repeated max (fine for a test) */
    memset(in_nucleus, 0, sizeof in_nucleus);
    double cum = 0.0;
    int n_nuc = 0;
    while (cum < 0.5 * sum) {
        int b = -1;
        for (int i = 0; i < V; i++)
            if (!in_nucleus[i] && (b < 0 || pr[i] > pr[b])) b = i;
        in_nucleus[b] = 1;
        cum += pr[b];
        n_nuc++;
    }
    (void)order;
    pg_sampling_params p = sampler_default_params();
    p.top_p = 0.5f;
    p.seed = 3;
    pg_sampler *s = make(p, V);
    int bad = 0;
    for (int k = 0; k < 3000; k++) {
        memcpy(work, logits, sizeof work);
        int32_t t = sampler_sample(s, work);
        bad += !(t >= 0 && t < V && in_nucleus[t]);
    }
    CHECK(bad == 0, "top-p 0.5 over %d tokens (nucleus %d): %d draws outside the nucleus", V, n_nuc, bad);
    sampler_destroy(s);
}

/* top-k over a large vocab (the vectorized skip): draws lie in the k best, and cover them. */
static void test_top_k_large(void) {
    enum { V = 50000, K = 20 };
    static float logits[V], work[V];
    static char in_top[V];
    unsigned long long rs = 23;
    for (int i = 0; i < V; i++) logits[i] = 6.0f * test_rand_f(&rs);
    logits[V - 1] = 7.0f; /* the best token is the last one */
    logits[5] = NAN;
    memset(in_top, 0, sizeof in_top);
    for (int r = 0; r < K; r++) { /* reference: K times the remaining max */
        int b = -1;
        for (int i = 0; i < V; i++)
            if (!in_top[i] && !isnan(logits[i]) && (b < 0 || logits[i] > logits[b])) b = i;
        in_top[b] = 1;
    }
    pg_sampling_params p = sampler_default_params();
    p.top_k = K;
    p.temperature = 50.0f; /* nearly flat over the K: every one of them should appear */
    p.seed = 4;
    pg_sampler *s = make(p, V);
    static char seen[V];
    int bad = 0, n_seen = 0;
    for (int k = 0; k < 4000; k++) {
        memcpy(work, logits, sizeof work);
        int32_t t = sampler_sample(s, work);
        if (t < 0 || t >= V || !in_top[t]) {
            bad++;
            continue;
        }
        n_seen += !seen[t];
        seen[t] = 1;
    }
    CHECK(bad == 0, "top-k %d: %d draws outside the k best", K, bad);
    CHECK(n_seen == K, "top-k %d at high temperature drew only %d distinct tokens", K, n_seen);
    sampler_destroy(s);
}

static void test_penalties(void) {
    enum { V = 10 };
    const float base[V] = {1.0f, 2.0f, -1.0f, 0.5f, 3.0f, -2.0f, 0.0f, 1.0f, 4.0f, -0.5f};
    float l[V];
    const int32_t hist[] = {1, 1, 2, 3, 3, 3};

    /* frequency: subtracts count * f */
    pg_sampling_params p = sampler_default_params();
    p.temperature = 0.0f;
    p.penalty_last_n = -1;
    p.frequency_penalty = 0.5f;
    pg_sampler *s = make(p, V);
    for (size_t i = 0; i < sizeof hist / sizeof hist[0]; i++) sampler_accept(s, hist[i]);
    memcpy(l, base, sizeof l);
    sampler_sample(s, l);
    for (int i = 0; i < V; i++) {
        float want = base[i] - (i == 1 ? 1.0f : i == 2 ? 0.5f : i == 3 ? 1.5f : 0.0f);
        CHECK(l[i] == want, "frequency: logit %d is %g, want %g", i, (double)l[i], (double)want);
    }
    /* reset clears the history */
    sampler_reset(s);
    memcpy(l, base, sizeof l);
    sampler_sample(s, l);
    CHECK(memcmp(l, base, sizeof l) == 0, "after reset no logit should change");
    sampler_destroy(s);

    /* presence: subtracts p once per seen token */
    p = sampler_default_params();
    p.temperature = 0.0f;
    p.presence_penalty = 0.75f;
    s = make(p, V);
    for (size_t i = 0; i < sizeof hist / sizeof hist[0]; i++) sampler_accept(s, hist[i]);
    memcpy(l, base, sizeof l);
    sampler_sample(s, l);
    for (int i = 0; i < V; i++) {
        float want = base[i] - (i >= 1 && i <= 3 ? 0.75f : 0.0f);
        CHECK(l[i] == want, "presence: logit %d is %g, want %g", i, (double)l[i], (double)want);
    }
    sampler_destroy(s);

    /* repetition: positive divided, negative multiplied */
    p = sampler_default_params();
    p.temperature = 0.0f;
    p.repetition_penalty = 2.0f;
    s = make(p, V);
    sampler_accept(s, 1);
    sampler_accept(s, 2);
    sampler_accept(s, 6);
    memcpy(l, base, sizeof l);
    sampler_sample(s, l);
    for (int i = 0; i < V; i++) {
        float want = i == 1 ? 1.0f : i == 2 ? -2.0f : base[i];
        CHECK(l[i] == want, "repetition: logit %d is %g, want %g", i, (double)l[i], (double)want);
    }
    sampler_destroy(s);

    /* window: only the last 2 accepted tokens count; out-of-range tokens are ignored */
    p = sampler_default_params();
    p.temperature = 0.0f;
    p.penalty_last_n = 2;
    p.frequency_penalty = 1.0f;
    s = make(p, V);
    const int32_t h2[] = {5, 5, 6, -1, 7, 99, 7};
    for (size_t i = 0; i < sizeof h2 / sizeof h2[0]; i++) sampler_accept(s, h2[i]);
    memcpy(l, base, sizeof l);
    sampler_sample(s, l);
    for (int i = 0; i < V; i++) {
        float want = base[i] - (i == 7 ? 2.0f : 0.0f);
        CHECK(l[i] == want, "window 2: logit %d is %g, want %g", i, (double)l[i], (double)want);
    }
    sampler_destroy(s);

    /* window 0: penalties look at nothing */
    p.penalty_last_n = 0;
    s = make(p, V);
    sampler_accept(s, 4);
    memcpy(l, base, sizeof l);
    sampler_sample(s, l);
    CHECK(memcmp(l, base, sizeof l) == 0, "penalty_last_n 0 changed logits");
    sampler_destroy(s);

    /* penalty makes greedy move away from the repeated token */
    p = sampler_default_params();
    p.temperature = 0.0f;
    p.frequency_penalty = 3.0f;
    s = make(p, V);
    sampler_accept(s, 8);
    memcpy(l, base, sizeof l);
    CHECK(sampler_sample(s, l) == 4, "penalized argmax should move from 8 to 4");
    sampler_destroy(s);
}

static void test_non_finite(void) {
    enum { V = 16 };
    float base[V];
    for (int i = 0; i < V; i++) base[i] = 0.1f * (float)i;
    base[15] = NAN;
    base[14] = -INFINITY;
    base[3] = NAN;
    const float temps[] = {0.0f, 1.0f, 50.0f};
    for (int cfg = 0; cfg < 4; cfg++)
        for (size_t ti = 0; ti < 3; ti++) {
            pg_sampling_params p = sampler_default_params();
            p.temperature = temps[ti];
            p.top_k = cfg == 1 ? 8 : 0;
            p.top_p = cfg == 2 ? 0.9f : 1.0f;
            p.min_p = cfg == 3 ? 0.01f : 0.0f;
            p.seed = (uint64_t)cfg;
            pg_sampler *s = make(p, V);
            int bad = 0;
            for (int k = 0; k < 2000; k++) {
                float l[V];
                memcpy(l, base, sizeof l);
                int32_t t = sampler_sample(s, l);
                bad += t < 0 || t >= V || t == 3 || t == 14 || t == 15;
            }
            CHECK(bad == 0, "cfg %d T %g: %d draws of NaN/-inf tokens", cfg, (double)temps[ti], bad);
            sampler_destroy(s);
        }

    pg_sampling_params p = sampler_default_params();
    pg_sampler *s = make(p, V);
    float l[V];
    memcpy(l, base, sizeof l);
    l[9] = INFINITY;
    l[11] = INFINITY;
    CHECK(sampler_sample(s, l) == 9, "+inf logit should be chosen (lowest id)");
    for (int i = 0; i < V; i++) l[i] = i % 2 ? -INFINITY : NAN;
    int32_t t = sampler_sample(s, l);
    CHECK(t == 0, "all -inf/NaN: expected fallback token 0, got %d", t);
    sampler_destroy(s);

    /* the same over a large vocab, where top-p takes the histogram path: NaN and -inf logits are
     * never candidates, and the lean sampler's workspace path agrees with the sampler's own */
    {
        enum { VL = 30000 };
        static float big[VL];
        unsigned long long rs = 9;
        for (int i = 0; i < VL; i++) big[i] = i % 101 == 0 ? NAN : i % 103 == 0 ? -INFINITY : 3.0f * test_rand_f(&rs);
        pg_sampling_params q = sampler_default_params();
        q.top_p = 0.98f, q.temperature = 1.5f, q.seed = 21;
        pg_sampler *own = make(q, VL), *lean = NULL;
        pg_sample_ws *w = NULL;
        CHECK(sampler_create_lean(&q, VL, &lean) == PAGODA_OK && sampler_ws_create(VL, &w) == PAGODA_OK, "create");
        int bad_draws = 0, differ = 0;
        static float work[VL];
        for (int k = 0; k < 300; k++) {
            memcpy(work, big, sizeof work);
            int32_t a = sampler_sample(own, work), b2 = sampler_sample_ws(lean, big, w);
            bad_draws += a < 0 || a >= VL || !(big[a] > -INFINITY);
            differ += a != b2;
        }
        CHECK(bad_draws == 0 && differ == 0, "large vocab with NaN/-inf: %d bad draws, %d differ", bad_draws, differ);
        sampler_destroy(own), sampler_destroy(lean), sampler_ws_destroy(w);
    }

    /* bad parameters are refused */
    pg_sampler *bad = NULL;
    p.repetition_penalty = 0.0f;
    CHECK(sampler_create(&p, V, &bad) == PAGODA_ERR_INVALID && !bad, "repetition_penalty 0 accepted");
    p = sampler_default_params();
    CHECK(sampler_create(&p, 0, &bad) == PAGODA_ERR_INVALID && !bad, "n_vocab 0 accepted");
    p.penalty_last_n = -2;
    CHECK(sampler_create(&p, V, &bad) == PAGODA_ERR_INVALID && !bad, "penalty_last_n -2 accepted");
    sampler_destroy(NULL);
}

/* A nucleus cut through a run of tied logits: the kept set is exactly the best tokens plus the
 * lowest ids of the tie, however many (the selection partitions instead of sorting). */
static void test_top_p_ties(void) {
    enum { V = 5000, TOP = 10, N = 30000 };
    static float logits[V], work[V];
    static long count[V];
    for (int i = 0; i < V; i++) logits[i] = 0.0f;
    for (int i = 0; i < TOP; i++) logits[37 + i * 499] = 3.0f; /* scattered among the tie */
    /* relative masses: 1 per top token, e^-3 per tied one; the nucleus needs k tied tokens with
     * TOP + k e^-3 >= top_p (TOP + (V - TOP) e^-3) */
    pg_sampling_params p = sampler_default_params();
    p.top_p = 0.1f;
    p.seed = 11;
    double t = exp(-3.0), need = ((double)p.top_p * (TOP + (V - TOP) * t) - TOP) / t;
    int k = (int)ceil(need);
    static char in[V];
    for (int i = 0, tied = 0; i < V; i++) in[i] = logits[i] > 0.0f || tied++ < k;
    pg_sampler *s = make(p, V);
    memset(count, 0, sizeof count);
    for (int j = 0; j < N; j++) {
        memcpy(work, logits, sizeof work);
        int32_t tok = sampler_sample(s, work);
        if (tok >= 0 && tok < V) count[tok]++;
    }
    sampler_destroy(s);
    int outside = 0, missing = 0;
    for (int i = 0; i < V; i++) outside += !in[i] && count[i], missing += in[i] && !count[i];
    CHECK(outside == 0 && missing == 0, "top-p through a tie (%d tied kept): %d tokens drawn outside, %d never drawn", k,
          outside, missing);
    printf("  top-p through a tie: %d + %d tied tokens kept, all drawn, none outside\n", TOP, k);
}

/* sampler_sample_ws (the engine's path: a lean sampler, a shared workspace, logits untouched)
 * draws the tokens sampler_sample draws, penalties included. */
static void test_workspace(void) {
    enum { V = 3000, N = 300 };
    static float logits[V], work[V], keep[V];
    pg_sample_ws *w = NULL, *w_small = NULL;
    CHECK(sampler_ws_create(V, &w) == PAGODA_OK && sampler_ws_create(V - 1, &w_small) == PAGODA_OK, "ws create");
    for (int c = 0; c < 4; c++) {
        pg_sampling_params p = sampler_default_params();
        p.seed = 40 + c;
        p.temperature = 0.9f;
        if (c == 1) p.top_p = 0.8f;
        if (c == 2) p.top_k = 30, p.min_p = 0.02f;
        if (c >= 2) p.presence_penalty = 0.7f, p.frequency_penalty = 0.2f, p.repetition_penalty = 1.3f;
        pg_sampler *full = make(p, V), *lean = NULL;
        CHECK(sampler_create_lean(&p, V, &lean) == PAGODA_OK, "lean create");
        memcpy(work, logits, sizeof work);
        CHECK(sampler_sample(lean, work) == -1, "a lean sampler has no buffers of its own");
        CHECK(sampler_sample_ws(lean, logits, w_small) == -1, "a workspace of another vocab is refused");
        unsigned long long rs = 77 + (unsigned long long)c;
        int same = 0, untouched = 1;
        for (int k = 0; k < N; k++) {
            for (int i = 0; i < V; i++) logits[i] = 3.0f * test_rand_f(&rs);
            memcpy(keep, logits, sizeof keep);
            memcpy(work, logits, sizeof work);
            int32_t a = sampler_sample(full, work), b = sampler_sample_ws(lean, logits, w);
            untouched &= !memcmp(keep, logits, sizeof keep);
            same += a == b;
            sampler_accept(full, a);
            sampler_accept(lean, a);
        }
        CHECK(same == N && untouched, "config %d: workspace draws equal %d/%d, logits untouched %d", c, same, N, untouched);
        sampler_destroy(full);
        sampler_destroy(lean);
    }
    sampler_ws_destroy(w);
    sampler_ws_destroy(w_small);
}

/* sampler_logprobs against a double-precision log-softmax and a full ranking */
static void test_logprobs(void) {
    enum { V = 50000 };
    static float logits[V];
    static double ref[V];
    unsigned long long rs = 123;
    for (int i = 0; i < V; i++) logits[i] = 6.0f * test_rand_f(&rs);
    logits[777] = logits[778] = 9.5f; /* a tie at the top: lower id first */
    logits[10] = -INFINITY;
    double mx = 9.5, sum = 0.0;
    for (int i = 0; i < V; i++) sum += exp((double)logits[i] - mx);
    for (int i = 0; i < V; i++) ref[i] = (double)logits[i] - mx - log(sum);
    int32_t top_tok[SAMPLER_MAX_LOGPROBS];
    float top_lp[SAMPLER_MAX_LOGPROBS];
    double worst = 0.0;
    for (int t = 0; t < V; t += 997) {
        float lp = sampler_logprobs(logits, V, t, t == 0 ? SAMPLER_MAX_LOGPROBS : 0, top_tok, top_lp);
        double e = fabs((double)lp - ref[t]);
        worst = e > worst ? e : worst;
    }
    CHECK(worst < 2e-5, "logprob error %g against double precision", worst);
    /* the top 20 by (logprob desc, id asc), by repeated selection */
    static char used[V];
    memset(used, 0, sizeof used);
    int rank_ok = 1;
    for (int r = 0; r < SAMPLER_MAX_LOGPROBS; r++) {
        int b = -1;
        for (int i = 0; i < V; i++)
            if (!used[i] && (b < 0 || logits[i] > logits[b])) b = i;
        used[b] = 1;
        rank_ok &= top_tok[r] == b && fabs((double)top_lp[r] - ref[b]) < 2e-5;
    }
    CHECK(rank_ok && top_tok[0] == 777 && top_tok[1] == 778, "top logprobs differ from the reference ranking");
    float few[3] = {-INFINITY, 1.0f, -INFINITY};
    float lp = sampler_logprobs(few, 3, 1, 3, top_tok, top_lp);
    CHECK(lp == 0.0f && top_tok[0] == 1 && top_tok[1] == 0 && top_tok[2] == 2 && top_lp[2] == -INFINITY,
          "all but one logit -inf: lp %g, tops %d %d %d", lp, top_tok[0], top_tok[1], top_tok[2]);
    printf("  logprobs over %d tokens: max error %.2g vs double precision, top 20 ranked as the reference\n", V, worst);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Not a test: prints the per-token cost for a 150k vocab so regressions are visible. */
static void timing(void) {
    enum { V = 151936, N = 200 };
    /* heap buffers: with static arrays the copy below cost 20-50 us more or less depending on
     * where the linker put them (4 KiB aliasing), which hid the sampler's own cost */
    float *logits = malloc(V * sizeof(float)), *work = malloc(V * sizeof(float));
    if (!logits || !work) return;
    unsigned long long rs = 5;
    for (int i = 0; i < V; i++) logits[i] = 8.0f * test_rand_f(&rs) + (i % 97 == 0 ? 6.0f : 0.0f);
    struct {
        const char *name;
        float t, top_p, min_p;
        int32_t top_k;
    } cfg[] = {
        {"greedy", 0.0f, 1.0f, 0.0f, 0}, {"T=1", 1.0f, 1.0f, 0.0f, 0}, {"top-k 40", 0.8f, 1.0f, 0.0f, 40},
        {"top-p 0.9", 0.8f, 0.9f, 0.0f, 0}, {"min-p 0.05", 0.8f, 1.0f, 0.05f, 0},
        {"k40 p0.95 min0.05", 0.8f, 0.95f, 0.05f, 40}, {"top-p 0.95, flat", 0.8f, 0.95f, 0.0f, 0},
    };
    printf("  timing, vocab %d:\n", V);
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        pg_sampling_params p = sampler_default_params();
        p.temperature = cfg[c].t;
        p.top_p = cfg[c].top_p;
        p.min_p = cfg[c].min_p;
        p.top_k = cfg[c].top_k;
        p.repetition_penalty = 1.1f;
        pg_sampler *s = make(p, V);
        if (strstr(cfg[c].name, "flat")) /* logits of a model that knows little: a wide nucleus */
            for (int i = 0; i < V; i++) logits[i] = 2.0f * test_rand_f(&rs);
        double t0 = now_s();
        for (int k = 0; k < N; k++) {
            memcpy(work, logits, V * sizeof(float));
            sampler_accept(s, sampler_sample(s, work));
        }
        double dt = now_s() - t0;
        printf("    %-20s %8.1f us/token\n", cfg[c].name, 1e6 * dt / N);
        sampler_destroy(s);
    }
    int32_t top_tok[SAMPLER_MAX_LOGPROBS];
    float top_lp[SAMPLER_MAX_LOGPROBS];
    double t0 = now_s();
    float acc = 0.0f;
    for (int k = 0; k < N; k++) acc += sampler_logprobs(logits, V, k, 5, top_tok, top_lp);
    printf("    %-20s %8.1f us/token%s\n", "logprobs, top 5", 1e6 * (now_s() - t0) / N, acc > 0 ? "?" : "");
    free(logits), free(work);
}

static void penalty_step(void *self, float *logits, int32_t n) {
    (void)n;
    sampler_apply_penalties(self, logits);
}

/* The engine's processor chain: sampler_sample_ws == penalties on a copy + sampler_draw_ws (same
 * tokens for the same seed), and logit_bias runs before the penalties (a repetition penalty
 * divides the biased logit: (l + b) / rp, not l / rp + b). */
static void test_processor_chain(void) {
    enum { NV = 300 };
    float logits[NV], scratch[NV];
    unsigned long long rng = 77;
    for (int i = 0; i < NV; i++) logits[i] = 3.0f * test_rand_f(&rng);
    pg_sampling_params p = sampler_default_params();
    p.temperature = 0.8f, p.top_p = 0.95f, p.repetition_penalty = 1.3f, p.frequency_penalty = 0.2f, p.seed = 5;
    p.penalty_last_n = -1;
    pg_sampler *a = NULL, *b = NULL;
    CHECK(sampler_create_lean(&p, NV, &a) == PAGODA_OK && sampler_create_lean(&p, NV, &b) == PAGODA_OK, "create");
    pg_sample_ws *w = NULL;
    CHECK(sampler_ws_create(NV, &w) == PAGODA_OK && sampler_penalties_on(a), "ws");
    lp_chain chain = {0};
    CHECK(lp_chain_add(&chain, penalty_step, b) == PAGODA_OK, "chain");
    int same = 0;
    for (int i = 0; i < 500; i++) {
        int32_t ta = sampler_sample_ws(a, logits, w);
        int32_t tb = sampler_draw_ws(b, lp_chain_run(&chain, logits, NV, scratch), w);
        same += ta == tb;
        sampler_accept(a, ta), sampler_accept(b, tb);
    }
    CHECK(same == 500, "chain draw equals sampler_sample_ws %d of 500 times", same);
    /* order: bias, then penalties */
    pagoda_logit_bias lb[2] = {{3, 2.0f}, {3, 1.0f}};
    lp_bias bias;
    CHECK(lp_bias_init(&bias, lb, 2, NV) == PAGODA_OK && bias.n == 1 && bias.bias[0] == 3.0f, "repeated tokens add up");
    lp_chain c2 = {0};
    lp_chain_add(&c2, lp_bias_apply, &bias);
    lp_chain_add(&c2, penalty_step, b);
    sampler_reset(b);
    sampler_accept(b, 3);
    logits[3] = 1.0f;
    const float *out = lp_chain_run(&c2, logits, NV, scratch);
    float want = (1.0f + 3.0f) / 1.3f - 0.2f;
    CHECK(fabsf(out[3] - want) < 1e-6f && logits[3] == 1.0f, "bias then penalty: %g, want %g (raw row untouched)", out[3], want);
    CHECK(lp_chain_run(&(lp_chain){0}, logits, NV, scratch) == logits, "an empty chain draws from the raw row");
    lp_bias_free(&bias);
    sampler_destroy(a), sampler_destroy(b), sampler_ws_destroy(w);
}

int main(void) {
    test_processor_chain();
    test_greedy();
    test_top_k_1_is_greedy();
    test_determinism();
    test_statistics();
    test_top_p_large();
    test_top_k_large();
    test_penalties();
    test_non_finite();
    test_top_p_ties();
    test_workspace();
    test_logprobs();
    timing();
    TEST_DONE();
}
