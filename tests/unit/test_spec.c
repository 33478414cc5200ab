/* Speculative decoding on real models (../shared fixtures, pycoder-tiny, the built-in model):
 *   - the n-gram proposer's lookup (longest suffix, latest occurrence, runs into the suffix);
 *   - greedy output token-identical with and without speculation: alone, batched with 16 others
 *     (chunked prompts), under preemption (a KV budget of a few sequences) and with prefix
 *     caching (every prompt run twice), with drafts accepted along the way;
 *   - sampling: with a proposer offering the model's most likely tokens as drafts, 100,000 samples
 *     of the two speculated tokens (temperature 0.3) with and without speculation have the same distribution by a
 *     chi-square test (p > 0.01), the same seeds give the same tokens, and the deliberate bug of
 *     keeping a draft because it is the most likely token (instead of drawing) is caught
 *     (p < 1e-6). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine_internal.h"
#include "pagoda.h"
#include "test_util.h"

enum { MAX_OUT = 160 };

/* ---- the n-gram lookup ---- */

static int32_t lookup(const int32_t *t, int32_t n, int32_t n_min, int32_t n_max, int32_t k, int32_t *out) {
    spec_proposer *p = NULL;
    CHECK(spec_ngram_create(n_min, n_max, &p) == PAGODA_OK, "ngram: %s", pagoda_last_error());
    if (!p) return -1;
    spec_query q = {.key = 1, .tokens = t, .n = n, .max_k = k, .out = out};
    p->propose(p, &q, 1);
    spec_destroy(p);
    return q.n_out;
}

static void test_ngram_lookup(void) {
    int32_t out[8];
    const int32_t a[] = {1, 2, 3, 4, 9, 1, 2, 3};
    CHECK(lookup(a, 8, 2, 4, 3, out) == 3 && out[0] == 4 && out[1] == 9 && out[2] == 1, "longest suffix [1 2 3] -> 4 9 1");
    const int32_t b[] = {5, 6, 7, 5, 6, 8, 5, 6};
    CHECK(lookup(b, 8, 2, 4, 3, out) == 3 && out[0] == 8 && out[1] == 5 && out[2] == 6, "latest occurrence of [5 6] -> 8 5 6");
    const int32_t c[] = {7, 7, 7};
    CHECK(lookup(c, 3, 2, 4, 4, out) == 1 && out[0] == 7, "repeat: [7 7] -> 7");
    const int32_t d[] = {1, 2, 3, 4, 5};
    CHECK(lookup(d, 5, 1, 4, 4, out) == 0, "no earlier occurrence: nothing");
    CHECK(lookup(d, 1, 1, 4, 4, out) == 0, "one token: nothing");
    const int32_t e[] = {3, 8, 1, 2, 3, 9};
    CHECK(lookup(e, 6, 2, 4, 4, out) == 0, "[3 9] never seen with min 2");
    CHECK(lookup((const int32_t[]){3, 8, 1, 2, 3}, 5, 1, 4, 2, out) == 2 && out[0] == 8 && out[1] == 1, "min 1: [3] -> 8 1");
    /* the occurrence with the longest match wins over a later, shorter one (a copy being written) */
    const int32_t f[] = {4, 1, 2, 3, 5, 9, 1, 2, 3, 6, 4, 1, 2, 3};
    CHECK(lookup(f, 14, 2, 8, 2, out) == 2 && out[0] == 5 && out[1] == 9, "longest match [4 1 2 3] -> 5 9");
    CHECK(lookup(f, 14, 2, 3, 2, out) == 2 && out[0] == 6 && out[1] == 4, "capped at 3: the latest [1 2 3] -> 6 4");
    spec_proposer *p = NULL;
    CHECK(spec_ngram_create(0, 4, &p) == PAGODA_ERR_INVALID && !p, "n_min 0 refused");
    CHECK(spec_ngram_create(3, 2, &p) == PAGODA_ERR_INVALID && !p, "n_max < n_min refused");
}

/* ---- greedy identity ---- */

typedef struct {
    int32_t tokens[MAX_OUT];
    int32_t n;
    int done;
} result;

static void on_event(const pagoda_event *ev, void *user) {
    result *r = user;
    if (ev->token >= 0 && r->n < MAX_OUT) r->tokens[r->n++] = ev->token;
    if (ev->request_done) r->done = 1;
}

static pagoda_engine *make_engine(pagoda_model *m, int spec, uint64_t kv_mem, int32_t max_batch, int32_t max_seqs) {
    pagoda_engine_config c;
    pagoda_engine_config_default(&c);
    c.kv_mem_bytes = kv_mem, c.max_batch_tokens = max_batch, c.max_seqs = max_seqs, c.n_threads = 2;
    c.speculative = spec ? PAGODA_SPEC_NGRAM : PAGODA_SPEC_NONE;
    c.spec_ngram_min = 1, c.spec_max_seqs = 1024; /* drafts at every batch size: the hardest case */
    c.spec_fixed_k = 1; /* and every draft the proposer has, whatever the pass times (deterministic) */
    pagoda_engine *e = NULL;
    CHECK(pagoda_engine_create(m, &c, &e) == PAGODA_OK, "engine: %s", pagoda_last_error());
    return e;
}

static void run_all(pagoda_engine *e) {
    int32_t live = 1;
    for (int guard = 0; live > 0 && guard < 1000000; guard++) pagoda_engine_step(e, &live);
    CHECK(live == 0, "requests left unfinished");
}

static void submit(pagoda_engine *e, const int32_t *ids, int32_t n, int32_t max_tokens, result *r, int no_spec) {
    pagoda_request q;
    pagoda_request_default(&q);
    q.prompt_tokens = ids, q.n_prompt_tokens = n, q.max_tokens = max_tokens;
    q.sampling.temperature = 0, q.ignore_eos = 1, q.no_speculation = no_spec;
    q.on_event = on_event, q.user = r;
    memset(r, 0, sizeof *r);
    CHECK(pagoda_engine_submit(e, &q, NULL) == PAGODA_OK, "submit: %s", pagoda_last_error());
}

static int same(const result *a, const result *b) {
    return a->n == b->n && !memcmp(a->tokens, b->tokens, sizeof(int32_t) * (size_t)a->n);
}

enum { NR = 17 };

static pagoda_model *load(const char *path, pagoda_model_info *info) {
    pagoda_model *m = NULL;
    if (pagoda_model_load(path, &m)) {
        CHECK(0, "load %s: %s", path, pagoda_last_error());
        return NULL;
    }
    pagoda_model_get_info(m, info);
    return m;
}

/* The prompts: random tokens with repeats in them (a span copied later), as code edits have. */
static void make_prompts(int32_t n_vocab, unsigned long long seed, int32_t prompts[NR][96], int32_t *lens) {
    for (int i = 0; i < NR; i++) {
        int32_t span = 4 + (int32_t)(test_rand_u64(&seed) % 20), head = 1 + (int32_t)(test_rand_u64(&seed) % 30);
        lens[i] = head + span + span / 2;
        for (int j = 0; j < head + span; j++) prompts[i][j] = (int32_t)(test_rand_u64(&seed) % (uint64_t)n_vocab);
        memcpy(prompts[i] + head + span, prompts[i] + head, sizeof(int32_t) * (size_t)(span / 2));
    }
}

/* ---- the n-gram history of finished sequences ---- */

static void test_ngram_history(const char *fixture) {
    int32_t out[8];
    spec_proposer *p = NULL;
    CHECK(spec_ngram_create_ex(2, 8, 64, &p) == PAGODA_OK && p && p->observe, "history proposer: %s", pagoda_last_error());
    if (!p) return;
    const int32_t done[] = {10, 11, 12, 13, 14, 15, 16};
    p->observe(p, done, 7);
    spec_query q = {.key = 1, .tokens = (const int32_t[]){7, 8, 12, 13}, .n = 4, .max_k = 3, .out = out};
    p->propose(p, &q, 1);
    CHECK(q.n_out == 3 && out[0] == 14 && out[1] == 15 && out[2] == 16, "[12 13] from the history -> 14 15 16 (%d)", q.n_out);
    /* the sequence's own match wins unless the history's is longer */
    q = (spec_query){.key = 1, .tokens = (const int32_t[]){12, 13, 9, 5, 12, 13}, .n = 6, .max_k = 2, .out = out};
    p->propose(p, &q, 1);
    CHECK(q.n_out == 2 && out[0] == 9 && out[1] == 5, "own [12 13] -> 9 5 (%d: %d %d)", q.n_out, out[0], out[1]);
    q = (spec_query){.key = 1, .tokens = (const int32_t[]){11, 12, 13, 9, 5, 11, 12, 13}, .n = 8, .max_k = 2, .out = out};
    p->propose(p, &q, 1);
    CHECK(q.n_out == 2 && out[0] == 9, "own [11 12 13] as long as the history's: own -> 9 (%d)", out[0]);
    q = (spec_query){.key = 1, .tokens = (const int32_t[]){3, 12, 13, 9, 10, 11, 12, 13}, .n = 8, .max_k = 2, .out = out};
    p->propose(p, &q, 1);
    CHECK(q.n_out == 2 && out[0] == 14, "the history's [10 11 12 13] is longer -> 14 (%d)", out[0]);
    /* overwritten history is not used: 64 tokens of ring, fill it with other sequences */
    int32_t filler[30];
    for (int i = 0; i < 30; i++) filler[i] = 100 + i;
    for (int r = 0; r < 4; r++) p->observe(p, filler, 30);
    q = (spec_query){.key = 1, .tokens = (const int32_t[]){7, 8, 12, 13}, .n = 4, .max_k = 3, .out = out};
    p->propose(p, &q, 1);
    CHECK(q.n_out == 0, "overwritten history proposes nothing (%d)", q.n_out);
    spec_destroy(p);
    CHECK(spec_ngram_create_ex(2, 4, -1, &p) == PAGODA_ERR_INVALID && !p, "a negative history refused");

    /* in the engine: the same request a second time gets its drafts from the first one's output */
    pagoda_model_info info;
    pagoda_model *m = load(fixture, &info);
    if (!m) return;
    int32_t prompt[24];
    unsigned long long seed = 5;
    for (int i = 0; i < 24; i++) prompt[i] = (int32_t)(test_rand_u64(&seed) % (uint64_t)info.n_vocab);
    uint64_t accepted[2] = {0, 0};
    static result r1[2], r2[2];
    for (int h = 0; h < 2; h++) {
        pagoda_engine_config c;
        pagoda_engine_config_default(&c);
        c.kv_mem_bytes = 32ull << 20, c.max_batch_tokens = 256, c.max_seqs = 8, c.n_threads = 2;
        c.speculative = PAGODA_SPEC_NGRAM, c.spec_ngram_history = h ? 0 : -1; /* -1: off; 0: the default */
        c.spec_fixed_k = 1;
        pagoda_engine *e = NULL;
        CHECK(pagoda_engine_create(m, &c, &e) == PAGODA_OK, "engine: %s", pagoda_last_error());
        if (!e) break;
        submit(e, prompt, 24, 64, &r1[h], 0);
        run_all(e);
        pagoda_engine_stats s0, s1;
        pagoda_engine_get_stats(e, &s0);
        submit(e, prompt, 24, 64, &r2[h], 0);
        run_all(e);
        pagoda_engine_get_stats(e, &s1);
        accepted[h] = s1.n_spec_accepted - s0.n_spec_accepted;
        pagoda_engine_destroy(e);
    }
    CHECK(same(&r1[0], &r2[0]) && same(&r1[0], &r1[1]) && same(&r1[0], &r2[1]) && r1[0].n == 64,
          "the same greedy output with and without the history");
    CHECK(accepted[1] > accepted[0] + 8, "second request: %llu draft tokens accepted with the history, %llu without",
          (unsigned long long)accepted[1], (unsigned long long)accepted[0]);
    printf("  n-gram history: the repeated request accepted %llu draft tokens with it, %llu without\n",
           (unsigned long long)accepted[1], (unsigned long long)accepted[0]);
    pagoda_model_free(m);
}

/* ---- the cost model (spec_cost.h) ---- */

static void test_cost_model(void) {
    spec_cost c = {0};
    float rate[3] = {0.68f, 0.68f, 0.95f};
    int32_t ask[3] = {6, 6, 6}, k[3];
    _Alignas(8) float work[3 * 3 * 6];
    CHECK(spec_cost_allocate(&c, 1, rate, ask, NULL, 1, k, work) == 6 && k[0] == 6, "nothing measured: the ask");
    CHECK(spec_cost_would_draft(&c, 64, 0.05f, false), "nothing measured: drafts are tried");
    /* one token count seen: beta is a guess (a tenth of alpha), optimistic, so drafts get tried */
    for (int i = 0; i < 5; i++) spec_cost_record(&c, 1, 4.4e-3);
    double a, b;
    CHECK(spec_cost_fit(&c, &a, &b) && fabs(a + b - 4.4e-3) < 1e-9 && fabs(b - 0.1 * a) < 1e-9, "prior fit %g %g", a, b);
    CHECK(spec_cost_allocate(&c, 1, rate, ask, NULL, 1, k, work) >= 4, "cheap guessed drafts: %d", k[0]);
    /* a CPU: forward(T) = 4 ms + 1.3 ms per token */
    c = (spec_cost){0};
    for (int t = 1; t <= 8; t++)
        for (int i = 0; i < 3; i++) spec_cost_record(&c, t, 4e-3 + 1.3e-3 * t);
    CHECK(spec_cost_fit(&c, &a, &b) && fabs(a - 4e-3) < 1e-6 && fabs(b - 1.3e-3) < 1e-6, "fit %g + %g T", a, b);
    /* one sequence accepting 68%: its 1st and 2nd drafts raise tokens per second, the 3rd not
       (E/C: 1/5.3, 1.68/6.6, 2.14/7.9 ms; 2.45/9.2 is less) */
    CHECK(spec_cost_allocate(&c, 1, rate, ask, NULL, 1, k, work) == 2 && k[0] == 2, "batch 1: %d drafts", k[0]);
    /* 32 sequences: a 68% draft costs more than it yields; a 95% one still pays */
    CHECK(spec_cost_allocate(&c, 32, rate, ask, NULL, 2, k, work) == 0, "batch 32 at 68%%: none");
    CHECK(spec_cost_allocate(&c, 32, rate, ask, NULL, 3, k, work) >= 1 && k[0] == 0 && k[1] == 0 && k[2] >= 1,
          "batch 32: only the 95%% sequence (%d %d %d)", k[0], k[1], k[2]);
    /* the engine's question before a draft model's prefill: would a new sequence get a draft? */
    CHECK(spec_cost_would_draft(&c, 1, 0.68f, false) && !spec_cost_would_draft(&c, 32, 0.68f, false) &&
              spec_cost_would_draft(&c, 32, 0.95f, false), "would draft: batch 1 yes, batch 32 only at 95%%");
    /* an expensive proposer (a draft model at 5 ms a token) makes drafts not worth it */
    for (int i = 0; i < 4; i++) spec_cost_record_proposer(&c, 2, 10e-3);
    CHECK(spec_cost_allocate(&c, 1, rate, ask, NULL, 1, k, work) == 0, "expensive drafts: %d", k[0]);
    CHECK(!spec_cost_would_draft(&c, 1, 0.68f, false), "expensive drafts: no prefill for them");
    /* ... but text a grammar forces needs no proposer: priced at beta alone, as before the proposer
       was measured (2 drafts at 68%), beside a proposer's candidate that gets none */
    const uint8_t forced[3] = {0, 1, 0};
    CHECK(spec_cost_allocate(&c, 1, rate, ask, forced, 2, k, work) == 2 && k[0] == 0 && k[1] == 2,
          "forced text beside an expensive proposer: %d %d", k[0], k[1]);
    CHECK(spec_cost_would_draft(&c, 1, 0.68f, true) && !spec_cost_would_draft(&c, 32, 0.68f, true),
          "forced text: looked for at batch 1, not at 32 at 68%%");
    /* by gain per cost: the forced 68% text's drafts (1.3 ms each) go before the proposed 95%
       sequence's (6.3 ms each, which do not pay); taken by gain alone, the 95% draft would come
       first, fail, and end the allocation with nothing given */
    CHECK(spec_cost_allocate(&c, 1, rate + 1, ask, (const uint8_t[]){1, 0}, 2, k, work) == 2 && k[0] == 2 && k[1] == 0,
          "gain per cost: forced 68%% gets %d, proposed 95%% %d", k[0], k[1]);
    /* a GPU: a few more tokens nearly free, every likely draft verified */
    c = (spec_cost){0};
    for (int t = 1; t <= 8; t++) spec_cost_record(&c, t, 5e-3 + 2e-5 * t);
    CHECK(spec_cost_allocate(&c, 1, rate, ask, NULL, 3, k, work) == 18, "nearly free verification: all drafts (%d %d %d)",
          k[0], k[1], k[2]);
    /* garbage is not recorded */
    spec_cost_record(&c, 0, 1), spec_cost_record(&c, SPEC_COST_MAX_T + 1, 1), spec_cost_record(&c, 3, -1);
    CHECK(c.n[0] == 0 && c.n[3] == 1, "bad records ignored");
}

static void test_greedy_identity(const char *path, int32_t n_out, const int32_t (*given)[96], const int32_t *given_lens) {
    pagoda_model_info info;
    pagoda_model *m = load(path, &info);
    if (!m) return;
    static int32_t prompts[NR][96];
    int32_t lens[NR];
    if (given) {
        memcpy(prompts, given, sizeof prompts);
        memcpy(lens, given_lens, sizeof lens);
    } else {
        make_prompts(info.n_vocab, 11, prompts, lens);
    }
    static result ref[NR], got[NR], again[NR];
    /* the reference: each alone, no speculation */
    for (int i = 0; i < NR; i++) {
        pagoda_engine *e = make_engine(m, 0, 32ull << 20, 256, 32);
        if (!e) goto done;
        submit(e, prompts[i], lens[i], n_out, &ref[i], 0);
        run_all(e);
        pagoda_engine_destroy(e);
        CHECK(ref[i].n == n_out, "%s: reference %d has %d tokens", path, i, ref[i].n);
    }
    uint64_t acc = 0, prop = 0;
    pagoda_engine_stats st;
    /* alone with speculation */
    int n_same = 0;
    for (int i = 0; i < NR; i++) {
        pagoda_engine *e = make_engine(m, 1, 32ull << 20, 256, 32);
        submit(e, prompts[i], lens[i], n_out, &got[i], 0);
        run_all(e);
        pagoda_engine_get_stats(e, &st);
        acc += st.n_spec_accepted, prop += st.n_spec_proposed;
        pagoda_engine_destroy(e);
        n_same += same(&got[i], &ref[i]);
    }
    CHECK(n_same == NR, "%s: alone with speculation, %d of %d equal", path, n_same, NR);
    /* all at once, prompts chunked beside speculating decodes; one request opts out */
    pagoda_engine *e = make_engine(m, 1, 32ull << 20, 40, 32);
    for (int i = 0; i < NR; i++) submit(e, prompts[i], lens[i], n_out, &got[i], i == 3);
    run_all(e);
    pagoda_engine_get_stats(e, &st);
    acc += st.n_spec_accepted, prop += st.n_spec_proposed;
    CHECK(st.kv_blocks_used == 0, "%d blocks still used", st.kv_blocks_used);
    /* the same prompts again: prefix-cached blocks (published only from accepted tokens) */
    uint64_t cached0 = st.n_cached_tokens;
    for (int i = 0; i < NR; i++) submit(e, prompts[i], lens[i], n_out, &again[i], 0);
    run_all(e);
    pagoda_engine_get_stats(e, &st);
    CHECK(st.n_cached_tokens > cached0, "%s: the second round reused no cached prompt", path);
    CHECK(engine_check(e) == 0, "invariants: %s", pagoda_last_error());
    pagoda_engine_destroy(e);
    int n_batched = 0, n_again = 0;
    for (int i = 0; i < NR; i++) n_batched += same(&got[i], &ref[i]), n_again += same(&again[i], &ref[i]);
    CHECK(n_batched == NR && n_again == NR, "%s: batched %d/%d, prefix-cached %d/%d equal", path, n_batched, NR, n_again, NR);
    /* room for about 3 sequences: preemption, recompute, drafts dropped and rolled back */
    int32_t bs = 16, per_seq = (96 + n_out + bs - 1) / bs + 1;
    {
        pagoda_engine *probe = make_engine(m, 0, 1ull << 20, 64, 4);
        pagoda_engine_get_stats(probe, &st);
        pagoda_engine_destroy(probe);
    }
    uint64_t per_block = (1ull << 20) / (uint64_t)st.kv_blocks_total;
    e = make_engine(m, 1, per_block * (uint64_t)(3 * per_seq), 64, 16);
    for (int i = 0; i < NR; i++) submit(e, prompts[i], lens[i], n_out, &got[i], 0);
    run_all(e);
    pagoda_engine_get_stats(e, &st);
    acc += st.n_spec_accepted, prop += st.n_spec_proposed;
    CHECK(st.n_preemptions > 0, "%s: no preemption with %d blocks", path, st.kv_blocks_total);
    pagoda_engine_destroy(e);
    int n_tight = 0;
    for (int i = 0; i < NR; i++) n_tight += same(&got[i], &ref[i]);
    CHECK(n_tight == NR, "%s: under preemption %d/%d equal", path, n_tight, NR);
    CHECK(acc > 0, "%s: no draft was ever accepted (%llu proposed): the identity checks proved nothing", path,
          (unsigned long long)prop);
    printf("  %s: greedy identical alone, batched, prefix-cached, preempted (%llu preemptions); %llu of %llu drafts "
           "accepted\n", path, (unsigned long long)st.n_preemptions, (unsigned long long)acc, (unsigned long long)prop);
done:
    pagoda_model_free(m);
}

/* ---- sampling: the distribution is the model's ---- */

enum { NV_MAX = 512, N_SAMPLES = 100000, N_PROMPT = 8, N_SEEDCHK = 2000 };

typedef struct {
    spec_proposer base;
    int32_t d2[NV_MAX], d3[NV_MAX]; /* the most likely token after (context, x1), and after that */
} table_proposer;

static void table_propose(spec_proposer *p, spec_query *qs, int32_t n) {
    table_proposer *t = (table_proposer *)p;
    for (int32_t i = 0; i < n; i++) {
        qs[i].n_out = 0;
        if (qs[i].n != N_PROMPT + 1) continue; /* right after the first token only */
        int32_t x1 = qs[i].tokens[N_PROMPT];
        qs[i].out[0] = t->d2[x1], qs[i].out[1] = t->d3[x1];
        qs[i].n_out = qs[i].max_k < 2 ? qs[i].max_k : 2;
    }
}
static void table_keep(spec_proposer *p) { (void)p; }

typedef struct {
    int32_t tok[4];
    int32_t n;
} sample;

static void on_sample(const pagoda_event *ev, void *user) {
    sample *s = user;
    if (ev->token >= 0 && s->n < 4) s->tok[s->n++] = ev->token;
}

/* n samples of 3 tokens at temperature 0.3 from prompt, seeds seed0 + i. */
static void draw(pagoda_model *m, const int32_t *prompt, table_proposer *tp, int bug, uint64_t seed0, int32_t n,
                 sample *out, pagoda_engine_stats *st) {
    pagoda_engine_config c;
    pagoda_engine_config_default(&c);
    c.kv_mem_bytes = 64ull << 20, c.max_batch_tokens = 2048, c.max_seqs = 256, c.n_threads = 2, c.kv_block_size = 4;
    c.spec_max_seqs = 4096, c.spec_fixed_k = 1; /* every sample gets its drafts, whatever the pass times */
    pagoda_engine *e = NULL;
    CHECK(pagoda_engine_create(m, &c, &e) == PAGODA_OK, "engine: %s", pagoda_last_error());
    if (!e) return;
    if (tp) CHECK(engine_set_proposer(e, &tp->base, 2) == PAGODA_OK, "proposer: %s", pagoda_last_error());
    e->spec_greedy_accept = bug;
    memset(out, 0, sizeof *out * (size_t)n);
    for (int32_t i = 0; i < n;) {
        int32_t live = 0;
        for (; i < n; i++) { /* keep about 256 in flight */
            pagoda_engine_stats s;
            pagoda_engine_get_stats(e, &s);
            if (s.n_live_requests >= 256) break;
            pagoda_request q;
            pagoda_request_default(&q);
            q.prompt_tokens = prompt, q.n_prompt_tokens = N_PROMPT, q.max_tokens = 4, q.ignore_eos = 1;
            q.sampling.temperature = 0.3f, q.sampling.seed = (int64_t)(seed0 + (uint64_t)i);
            q.on_event = on_sample, q.user = &out[i];
            if (pagoda_engine_submit(e, &q, NULL)) {
                CHECK(0, "submit: %s", pagoda_last_error());
                i = n;
            }
        }
        pagoda_engine_step(e, &live);
    }
    run_all(e);
    pagoda_engine_get_stats(e, st);
    pagoda_engine_destroy(e);
}

/* Regularized upper incomplete gamma Q(a, x) (series below a + 1, continued fraction above). */
static double gamma_q(double a, double x) {
    if (x <= 0) return 1;
    double lg = lgamma(a);
    if (x < a + 1) {
        double sum = 1 / a, del = sum, ap = a;
        for (int n = 0; n < 10000 && fabs(del) > fabs(sum) * 1e-15; n++) sum += del *= x / ++ap;
        return 1 - sum * exp(-x + a * log(x) - lg);
    }
    double b = x + 1 - a, c = 1e300, d = 1 / b, h = d;
    for (int i = 1; i < 10000; i++) {
        double an = -i * (i - a);
        b += 2;
        d = an * d + b;
        if (fabs(d) < 1e-300) d = 1e-300;
        c = b + an / c;
        if (fabs(c) < 1e-300) c = 1e-300;
        d = 1 / d;
        double del = d * c;
        h *= del;
        if (fabs(del - 1) < 1e-15) break;
    }
    return exp(-x + a * log(x) - lg) * h;
}

/* Two samples of equal size: chi-square over the values of column col (values seen fewer than
 * 20 times in both together pooled into one bin); returns the p-value. */
static double chi2_p(const sample *a, const sample *b, int32_t n, int col, int32_t n_vocab, int *bins) {
    static int64_t ca[NV_MAX], cb[NV_MAX];
    memset(ca, 0, sizeof ca), memset(cb, 0, sizeof cb);
    for (int32_t i = 0; i < n; i++) {
        if (a[i].n > col) ca[a[i].tok[col]]++;
        if (b[i].n > col) cb[b[i].tok[col]]++;
    }
    double chi = 0, ra = 0, rb = 0;
    int k = 0;
    for (int32_t t = 0; t < n_vocab; t++) {
        if (ca[t] + cb[t] < 20) {
            ra += (double)ca[t], rb += (double)cb[t];
            continue;
        }
        chi += (double)(ca[t] - cb[t]) * (double)(ca[t] - cb[t]) / (double)(ca[t] + cb[t]), k++;
    }
    if (ra + rb > 0) chi += (ra - rb) * (ra - rb) / (ra + rb), k++;
    *bins = k;
    return k > 1 ? gamma_q((k - 1) / 2.0, chi / 2) : 1;
}

static void test_sampling(const char *path) {
    pagoda_model_info info;
    pagoda_model *m = load(path, &info);
    if (!m) return;
    if (info.n_vocab > NV_MAX) {
        CHECK(0, "%s: vocab %d over %d", path, info.n_vocab, NV_MAX);
        pagoda_model_free(m);
        return;
    }
    int32_t prompt[N_PROMPT];
    unsigned long long rng = 5;
    for (int i = 0; i < N_PROMPT; i++) prompt[i] = (int32_t)(test_rand_u64(&rng) % (uint64_t)info.n_vocab);
    /* the table: greedy 2 tokens after prompt + x1 for every x1 */
    static table_proposer tp;
    tp.base = (spec_proposer){.name = "table", .propose = table_propose, .destroy = table_keep};
    {
        pagoda_engine *e = make_engine(m, 0, 32ull << 20, 2048, 256);
        static result gr[NV_MAX];
        static int32_t ctx[NV_MAX][N_PROMPT + 1];
        for (int32_t x = 0; x < info.n_vocab && e; x++) {
            memcpy(ctx[x], prompt, sizeof prompt);
            ctx[x][N_PROMPT] = x;
            submit(e, ctx[x], N_PROMPT + 1, 2, &gr[x], 1);
            if ((x + 1) % 200 == 0) run_all(e);
        }
        if (e) run_all(e);
        pagoda_engine_destroy(e);
        for (int32_t x = 0; x < info.n_vocab; x++) tp.d2[x] = gr[x].tokens[0], tp.d3[x] = gr[x].tokens[1];
    }
    static sample plain[N_SAMPLES], spec[N_SAMPLES], bug[N_SAMPLES];
    pagoda_engine_stats s0, s1, s2;
    draw(m, prompt, NULL, 0, 1, N_SAMPLES, plain, &s0);
    draw(m, prompt, &tp, 0, 1000001, N_SAMPLES, spec, &s1);
    int bins2, bins3;
    double p2 = chi2_p(plain, spec, N_SAMPLES, 1, info.n_vocab, &bins2), p3 = chi2_p(plain, spec, N_SAMPLES, 2, info.n_vocab, &bins3);
    double acc = s1.n_spec_proposed ? (double)s1.n_spec_accepted / (double)s1.n_spec_proposed : 0;
    printf("  sampling, %d samples each: 2nd token p = %.4f (%d bins), 3rd token p = %.4f (%d bins); %llu drafts, "
           "%.1f%% of draft tokens accepted\n", N_SAMPLES, p2, bins2, p3, bins3, (unsigned long long)s1.n_spec_drafts, 100 * acc);
    CHECK(s1.n_spec_accepted > (uint64_t)N_SAMPLES / 50, "too few drafts accepted (%llu) for the test to mean anything",
          (unsigned long long)s1.n_spec_accepted);
    CHECK(p2 > 0.01 && p3 > 0.01, "speculative sampling changed the distribution: p %.3g, %.3g", p2, p3);
    /* the same seeds give the same tokens: one draw per token either way */
    static sample spec_same[N_SEEDCHK];
    draw(m, prompt, &tp, 0, 1, N_SEEDCHK, spec_same, &s2);
    int n_eq = 0;
    for (int i = 0; i < N_SEEDCHK; i++) n_eq += spec_same[i].n == plain[i].n && !memcmp(spec_same[i].tok, plain[i].tok, sizeof plain[i].tok);
    CHECK(n_eq == N_SEEDCHK, "seeded: %d of %d samples equal with and without speculation", n_eq, N_SEEDCHK);
    /* the mutation: keep a draft because it is the most likely token */
    draw(m, prompt, &tp, 1, 2000001, N_SAMPLES, bug, &s2);
    double q2 = chi2_p(plain, bug, N_SAMPLES, 1, info.n_vocab, &bins2);
    printf("  greedy acceptance (the deliberate bug): 2nd token p = %.3g; seeded identity %d/%d\n", q2, n_eq, N_SEEDCHK);
    CHECK(q2 < 1e-6, "the chi-square test did not catch greedy acceptance (p = %.3g)", q2);
    pagoda_model_free(m);
}

int main(void) {
    test_ngram_lookup();
    test_cost_model();
    const char *shared = test_shared_dir();
    if (!shared) {
        printf("../shared not found (set PAGODA_SHARED): the real-model checks are skipped\n");
        TEST_DONE();
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/fixtures/hf/llama", shared);
    test_ngram_history(path);
    test_sampling(path);
    static const char *fixtures[] = {"llama", "qwen3", "gpt_bigcode", "starcoder2"};
    for (size_t i = 0; i < sizeof fixtures / sizeof *fixtures; i++) {
        snprintf(path, sizeof path, "%s/fixtures/hf/%s", shared, fixtures[i]);
        test_greedy_identity(path, 48, NULL, NULL);
    }
    snprintf(path, sizeof path, "%s/models/pycoder-tiny", shared);
    test_greedy_identity(path, 64, NULL, NULL);
    /* the built-in model on code: prompts that quote a function, to be repeated */
    pagoda_model *m = NULL;
    const char *builtin = PAGODA_TESTS_DIR "/../models/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (pagoda_model_load(builtin, &m) == PAGODA_OK) {
        static const char *const texts[] = {
            "def add(a, b):\n    return a + b\n\n# the same function again:\ndef add(",
            "for i in range(10):\n    print(i * i)\n\nfor j in range(",
            "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n\nclass Vector:\n    def",
            "import os\nimport sys\nimport json\n\ndef load(path):\n    with open(path) as f:\n        return json.load(f)\n",
        };
        static int32_t prompts[NR][96];
        int32_t lens[NR];
        for (int i = 0; i < NR; i++) {
            char buf[512];
            snprintf(buf, sizeof buf, "%s%s", i >= 4 ? "# variant\n" : "", texts[i % 4]);
            int32_t *ids = NULL;
            size_t n = 0;
            CHECK(pagoda_tokenize(m, buf, strlen(buf), 1, 0, &ids, &n) == PAGODA_OK, "tokenize: %s", pagoda_last_error());
            lens[i] = n > 96 ? 96 : (int32_t)n;
            memcpy(prompts[i], ids, sizeof(int32_t) * (size_t)lens[i]);
            pagoda_free(ids);
        }
        pagoda_model_free(m);
        test_greedy_identity(builtin, 64, (const int32_t(*)[96])prompts, lens);
    } else {
        printf("  built-in model not found (run scripts/setup.sh): skipped\n");
    }
    TEST_DONE();
}
