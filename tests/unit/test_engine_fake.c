/* The engine against a fake runner (engine/runner.h), as the scheduler simulation runs against a
 * fake model. The fake's "KV cache" records the token written at each slot of each block; every
 * logits row is a function of the whole context read back through the sequence's block table,
 * so a wrong prefix hit, a missed copy-on-write or a draft that was not rolled back shows up as
 * different tokens from a one-at-a-time reference computed here. Covers every stage: schedule,
 * build, forward (logits and greedy ids), logits processors (logit_bias), sample, accept (k > 1
 * tokens with a fake proposer), commit after accept, emit; n > 1 forks, preemption, cancellation,
 * failed copy-on-write and forward passes, prompt logits and score_only. Invariants (sched_check:
 * ref counts equal users, pool consistent) after every step; no block leaked at the end. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "engine/engine_internal.h"
#include "kv/block_pool.h"
#include "test_util.h"

enum { V = 48, MAX_OUT = 512, MAX_REQ = 64 };

/* ---- the fake model ---- */

static uint64_t mix(uint64_t h) {
    h ^= h >> 31, h *= 0x7fb5d329728ea185ull, h ^= h >> 27, h *= 0x81dadef4bc2dd44dull, h ^= h >> 33;
    return h;
}

static uint64_t ctx_hash(const int32_t *ctx, int32_t n) {
    uint64_t h = 1469598103934665603ull;
    for (int32_t i = 0; i < n; i++) h = (h ^ (uint64_t)ctx[i]) * 1099511628211ull;
    return h;
}

/* The logits after context ctx[0..n): values in [-4, 4), a function of the context. */
static void fake_logits(const int32_t *ctx, int32_t n, float *out) {
    uint64_t h = ctx_hash(ctx, n);
    for (int32_t v = 0; v < V; v++) out[v] = (float)(mix(h + (uint64_t)v * 0x9e3779b97f4a7c15ull) >> 40) / (float)(1 << 24) * 8.0f - 4.0f;
}

static int32_t argmax(const float *x) {
    int32_t b = 0;
    for (int32_t v = 1; v < V; v++)
        if (x[v] > x[b]) b = v;
    return b;
}

/* Greedy reference: n_out tokens after prompt, one at a time. */
static void reference(const int32_t *prompt, int32_t n, int32_t n_out, int32_t *out) {
    int32_t ctx[2048];
    float l[V];
    memcpy(ctx, prompt, (size_t)n * sizeof *ctx);
    for (int32_t i = 0; i < n_out; i++) {
        fake_logits(ctx, n + i, l);
        out[i] = ctx[n + i] = argmax(l);
    }
}

typedef struct {
    engine_runner base;
    int32_t bs, n_blocks;
    int32_t *kv, *kv_pos;      /* [n_blocks][bs] token / position written at each slot (-1 never) */
    int n_runs, n_id_runs, n_copies, n_bad_ctx;
    int fail_copy_at, fail_run_at; /* 1-based call number that fails; 0: never */
    int nan_run_at;                /* 1-based call number whose logits rows hold a NaN; 0: never */
} fake;

static pagoda_status fk_run(engine_runner *r, const engine_batch *eb, float *logits, int32_t *ids) {
    fake *f = (fake *)r;
    const pg_batch *b = &eb->b;
    f->n_runs++;
    if (ids) f->n_id_runs++;
    if (f->fail_run_at && f->n_runs == f->fail_run_at) return pg_fail(PAGODA_ERR_IO, "fake: injected forward failure");
    int32_t row = 0, ctx[2048];
    for (int32_t s = 0; s < b->n_seq; s++) {
        const int32_t *tab = b->block_tables[s];
        for (int32_t t = b->seq_start[s]; t < b->seq_start[s + 1]; t++) {
            int32_t p = b->seq_pos0[s] + t - b->seq_start[s];
            if (p / f->bs >= b->n_blocks[s]) return pg_fail(PAGODA_ERR_INVALID, "fake: position %d beyond the block table", p);
            int32_t slot = tab[p / f->bs] * f->bs + p % f->bs;
            f->kv[slot] = b->tokens[t], f->kv_pos[slot] = p;
        }
        for (int32_t t = b->seq_start[s]; t < b->seq_start[s + 1]; t++) {
            if (!b->logits_mask[t]) continue;
            int32_t p = b->seq_pos0[s] + t - b->seq_start[s];
            for (int32_t i = 0; i <= p; i++) { /* the whole context, read back through the block table */
                int32_t slot = tab[i / f->bs] * f->bs + i % f->bs;
                ctx[i] = f->kv[slot];
                if (f->kv_pos[slot] != i) f->n_bad_ctx++;
            }
            float l[V];
            fake_logits(ctx, p + 1, l);
            if (ids) ids[row] = argmax(l);
            else memcpy(logits + (size_t)row * V, l, sizeof l);
            if (!ids && f->nan_run_at == f->n_runs) logits[(size_t)row * V + (size_t)(p % V)] = NAN;
            row++;
        }
    }
    if (row != eb->n_rows) return pg_fail(PAGODA_ERR_INVALID, "fake: %d rows, batch says %d", row, eb->n_rows);
    return PAGODA_OK;
}

static pagoda_status fk_copy(engine_runner *r, int32_t src, int32_t dst) {
    fake *f = (fake *)r;
    if (f->fail_copy_at && ++f->n_copies == f->fail_copy_at) return pg_fail(PAGODA_ERR_CUDA, "fake: injected copy failure");
    memcpy(f->kv + (size_t)dst * f->bs, f->kv + (size_t)src * f->bs, (size_t)f->bs * sizeof(int32_t));
    memcpy(f->kv_pos + (size_t)dst * f->bs, f->kv_pos + (size_t)src * f->bs, (size_t)f->bs * sizeof(int32_t));
    return PAGODA_OK;
}

static void *fk_alloc(engine_runner *r, size_t n) { (void)r; return malloc(n); }
static void fk_free(engine_runner *r, void *p) { (void)r; free(p); }
static void fk_destroy(engine_runner *r) {
    fake *f = (fake *)r;
    free(f->kv), free(f->kv_pos), free(f);
}

static fake *g_fake; /* the runner of the latest engine (owned by it) */

static pagoda_engine *make(int32_t n_blocks, int32_t bs, int32_t max_batch, int32_t max_seqs, int greedy_ids) {
    fake *f = calloc(1, sizeof *f);
    f->bs = bs, f->n_blocks = n_blocks;
    f->kv = malloc((size_t)n_blocks * bs * sizeof(int32_t));
    f->kv_pos = malloc((size_t)n_blocks * bs * sizeof(int32_t));
    memset(f->kv, 0xff, (size_t)n_blocks * bs * sizeof(int32_t));
    memset(f->kv_pos, 0xff, (size_t)n_blocks * bs * sizeof(int32_t));
    f->base = (engine_runner){.info = {.n_vocab = V, .n_kv_blocks = n_blocks, .n_ctx_train = 1024, .n_threads = 2,
                                       .greedy_ids = greedy_ids, .name = "fake"},
                              .run = fk_run, .copy_block = fk_copy, .host_alloc = fk_alloc, .host_free = fk_free,
                              .destroy = fk_destroy};
    pagoda_engine_config c;
    pagoda_engine_config_default(&c);
    c.kv_block_size = bs, c.max_batch_tokens = max_batch, c.max_seqs = max_seqs;
    pagoda_engine *e = NULL;
    CHECK(engine_create_with_runner(NULL, &f->base, &c, &e) == PAGODA_OK, "create: %s", pagoda_last_error());
    g_fake = f;
    return e;
}

/* ---- requests and events ---- */

typedef struct {
    int32_t tokens[4][MAX_OUT];
    int32_t n_tokens[4];
    pagoda_finish_reason finish[4];
    char error[4][160];
    int done, events_after_done, n_cached;
    int32_t n_rows, bad_rows, rows_after_event, n_events;
    int32_t *prompt;  /* for prompt-logits checks */
} result;

static void on_event(const pagoda_event *ev, void *user) {
    result *r = user;
    if (r->done) r->events_after_done++;
    r->n_events++;
    if (ev->token >= 0 && r->n_tokens[ev->index] < MAX_OUT) r->tokens[ev->index][r->n_tokens[ev->index]++] = ev->token;
    if (ev->finish) r->finish[ev->index] = ev->finish, r->n_cached = ev->n_cached_tokens;
    if (ev->error) snprintf(r->error[ev->index], sizeof r->error[0], "%s", ev->error);
    if (ev->request_done) r->done = 1;
}

static void on_logits(const pagoda_logits_event *ev, void *user) {
    result *r = user;
    if (r->n_events) r->rows_after_event++;
    float l[V];
    fake_logits(r->prompt, ev->pos + 1, l);
    if (ev->pos != r->n_rows || ev->n_vocab != V || memcmp(l, ev->logits, sizeof l)) r->bad_rows++;
    r->n_rows++;
}

static uint64_t submit(pagoda_engine *e, const int32_t *prompt, int32_t n, int32_t max_tokens, float temp, int64_t seed,
                       int32_t n_choices, result *r) {
    pagoda_request q;
    pagoda_request_default(&q);
    q.prompt_tokens = prompt, q.n_prompt_tokens = n, q.max_tokens = max_tokens;
    q.sampling.temperature = temp, q.sampling.seed = seed, q.n = n_choices;
    q.on_event = on_event, q.user = r;
    uint64_t id = 0;
    CHECK(pagoda_engine_submit(e, &q, &id) == PAGODA_OK, "submit: %s", pagoda_last_error());
    return id;
}

/* Steps until nothing is live, checking the invariants after every step. */
static void run_all(pagoda_engine *e) {
    int32_t live = 1;
    for (int guard = 0; live > 0 && guard < 100000; guard++) {
        pagoda_engine_step(e, &live);
        if (engine_check(e)) {
            CHECK(0, "invariants after a step: %s", pagoda_last_error());
            break;
        }
    }
    CHECK(live == 0, "requests left unfinished");
}

static void check_no_leak(pagoda_engine *e) {
    pagoda_engine_stats st;
    pagoda_engine_get_stats(e, &st);
    CHECK(st.kv_blocks_used == 0 && st.n_live_requests == 0, "%d blocks still used, %d live", st.kv_blocks_used, st.n_live_requests);
}

static unsigned long long g_rng = 12345;

static void make_prompts(int32_t n, int32_t prompts[][128], int32_t *lens, int32_t *outs, int32_t max_len, int32_t max_out) {
    for (int32_t i = 0; i < n; i++) {
        lens[i] = 1 + (int32_t)(test_rand_u64(&g_rng) % (uint64_t)max_len);
        outs[i] = 1 + (int32_t)(test_rand_u64(&g_rng) % (uint64_t)max_out);
        for (int32_t j = 0; j < lens[i]; j++) prompts[i][j] = (int32_t)(test_rand_u64(&g_rng) % V);
        if (i % 3 == 1) /* shared prefixes: prefix-cache hits */
            memcpy(prompts[i], prompts[i - 1], sizeof(int32_t) * (size_t)(lens[i] < lens[i - 1] ? lens[i] : lens[i - 1]));
    }
}

/* Greedy requests batched, chunked, preempted and prefix-cached give the reference tokens; with
 * a runner that picks greedy ids itself, only ids come back and the tokens are the same. */
static void test_greedy(int greedy_ids) {
    static int32_t prompts[MAX_REQ][128], ref[MAX_REQ][MAX_OUT];
    int32_t lens[MAX_REQ], outs[MAX_REQ];
    static result res[MAX_REQ];
    memset(res, 0, sizeof res);
    make_prompts(MAX_REQ, prompts, lens, outs, 100, 60);
    for (int i = 0; i < MAX_REQ; i++) reference(prompts[i], lens[i], outs[i], ref[i]);
    pagoda_engine *e = make(24, 8, 32, 16, greedy_ids); /* room for about 1.5 long sequences: preemption */
    for (int i = 0; i < MAX_REQ; i++) submit(e, prompts[i], lens[i], outs[i], 0, 0, 1, &res[i]);
    run_all(e);
    int ok = 0;
    for (int i = 0; i < MAX_REQ; i++)
        ok += res[i].n_tokens[0] == outs[i] && !memcmp(res[i].tokens[0], ref[i], sizeof(int32_t) * (size_t)outs[i]) &&
              res[i].finish[0] == PAGODA_FINISH_LENGTH && res[i].events_after_done == 0;
    pagoda_engine_stats st;
    pagoda_engine_get_stats(e, &st);
    CHECK(ok == MAX_REQ, "greedy: %d of %d requests equal the reference", ok, MAX_REQ);
    CHECK(st.n_preemptions > 0 && st.n_cached_tokens > 0, "expected preemptions (%llu) and prefix hits (%llu)",
          (unsigned long long)st.n_preemptions, (unsigned long long)st.n_cached_tokens);
    CHECK(g_fake->n_bad_ctx == 0, "%d context reads hit a slot written for another position", g_fake->n_bad_ctx);
    CHECK(greedy_ids ? g_fake->n_id_runs > 0 : g_fake->n_id_runs == 0, "greedy-id forward passes: %d", g_fake->n_id_runs);
    check_no_leak(e);
    printf("  greedy%s: %d/%d equal the reference, %llu preemptions, %llu/%llu prompt tokens cached, %d of %d passes ids only\n",
           greedy_ids ? " (runner picks ids)" : "", ok, MAX_REQ, (unsigned long long)st.n_preemptions,
           (unsigned long long)st.n_cached_tokens, (unsigned long long)st.n_prompt_tokens, g_fake->n_id_runs, g_fake->n_runs);
    pagoda_engine_destroy(e);
}

/* n > 1: choice i of a seeded request equals a single request with seed + i; cancellation
 * ends a request's choices within a step; copy-on-write of the shared partial block happens. */
static void test_forks_and_cancel(void) {
    int32_t prompt[21];
    for (int i = 0; i < 21; i++) prompt[i] = (i * 7 + 3) % V;
    static result alone[3], n3, noise[4], victim;
    memset(alone, 0, sizeof alone), memset(&n3, 0, sizeof n3), memset(noise, 0, sizeof noise), memset(&victim, 0, sizeof victim);
    for (int i = 0; i < 3; i++) {
        pagoda_engine *e = make(64, 8, 64, 16, 0);
        submit(e, prompt, 21, 30, 0.9f, 500 + i, 1, &alone[i]);
        run_all(e);
        pagoda_engine_destroy(e);
    }
    pagoda_engine *e = make(64, 8, 24, 16, 0);
    for (int i = 0; i < 2; i++) submit(e, prompt + i, 15, 20, 1.0f, i, 1, &noise[i]);
    submit(e, prompt, 21, 30, 0.9f, 500, 3, &n3);
    uint64_t vid = submit(e, prompt, 10, 200, 1.0f, 7, 2, &victim);
    for (int i = 2; i < 4; i++) submit(e, prompt + i, 12, 25, 0.5f, i, 1, &noise[i]);
    int32_t live = 1;
    for (int s = 0; s < 12; s++) pagoda_engine_step(e, &live);
    CHECK(!victim.done, "the victim finished too early");
    pagoda_engine_cancel(e, vid);
    pagoda_engine_step(e, &live);
    CHECK(victim.done && victim.finish[0] == PAGODA_FINISH_CANCELLED && victim.finish[1] == PAGODA_FINISH_CANCELLED,
          "cancelled within one step: done %d, finish %d/%d", victim.done, victim.finish[0], victim.finish[1]);
    run_all(e);
    for (int i = 0; i < 3; i++)
        CHECK(n3.n_tokens[i] == 30 && !memcmp(n3.tokens[i], alone[i].tokens[0], 30 * sizeof(int32_t)),
              "choice %d of n=3 differs from seed+%d alone", i, i);
    CHECK(memcmp(alone[0].tokens[0], alone[1].tokens[0], 30 * sizeof(int32_t)), "different seeds should differ");
    CHECK(victim.events_after_done == 0, "events after request_done");
    CHECK(g_fake->n_bad_ctx == 0, "%d bad context reads", g_fake->n_bad_ctx);
    check_no_leak(e);
    pagoda_engine_destroy(e);
}

/* A failed copy-on-write finishes the sequence it was for with an error (never runs it over a
 * block that does not hold its prefix); a failed forward pass finishes that step's sequences;
 * the engine goes on serving the others. */
static void test_failures(void) {
    int32_t prompt[13];
    for (int i = 0; i < 13; i++) prompt[i] = (i * 5 + 1) % V;
    static result r1, r2;
    memset(&r1, 0, sizeof r1), memset(&r2, 0, sizeof r2);
    pagoda_engine *e = make(64, 8, 64, 16, 0);
    g_fake->fail_copy_at = 1; /* the first copy-on-write: a fork's shared partial block */
    submit(e, prompt, 13, 10, 1.0f, 3, 2, &r1);
    submit(e, prompt + 1, 9, 10, 0, 0, 1, &r2);
    run_all(e);
    int n_err = (r1.finish[0] == PAGODA_FINISH_ERROR) + (r1.finish[1] == PAGODA_FINISH_ERROR);
    CHECK(n_err == 1 && r1.done, "failed copy: %d of 2 choices ended with an error", n_err);
    CHECK(r2.finish[0] == PAGODA_FINISH_LENGTH && r2.n_tokens[0] == 10, "the other request completes");
    CHECK(g_fake->n_bad_ctx == 0, "%d bad context reads", g_fake->n_bad_ctx);
    check_no_leak(e);
    memset(&r1, 0, sizeof r1), memset(&r2, 0, sizeof r2);
    g_fake->fail_run_at = g_fake->n_runs + 2;
    submit(e, prompt, 13, 10, 0, 0, 1, &r1);
    run_all(e);
    submit(e, prompt, 13, 10, 0, 0, 1, &r2);
    run_all(e);
    CHECK(r1.finish[0] == PAGODA_FINISH_ERROR && r2.finish[0] == PAGODA_FINISH_LENGTH && r2.n_tokens[0] == 10,
          "failed forward: finish %d, then %d", r1.finish[0], r2.finish[0]);
    check_no_leak(e);
    pagoda_engine_destroy(e);
}

/* A logits row with a NaN in it (the forward pass went wrong) ends its choices with an error,
 * greedy or sampled, forked or not, with no token drawn from it; the engine goes on serving. */
static void test_nan_logits(void) {
    int32_t prompt[11];
    for (int i = 0; i < 11; i++) prompt[i] = (i * 7 + 2) % V;
    static result r1, r2, r3;
    memset(&r1, 0, sizeof r1), memset(&r2, 0, sizeof r2), memset(&r3, 0, sizeof r3);
    pagoda_engine *e = make(64, 8, 64, 16, 0);
    g_fake->nan_run_at = 2; /* the prompts run in step 1; the first decode step's rows hold a NaN */
    submit(e, prompt, 11, 10, 0, 0, 1, &r1);
    submit(e, prompt + 2, 9, 10, 1.0f, 5, 2, &r2);
    run_all(e);
    CHECK(r1.finish[0] == PAGODA_FINISH_ERROR && r1.n_tokens[0] == 1, "greedy: finish %d after %d tokens",
          r1.finish[0], r1.n_tokens[0]);
    CHECK(strstr(r1.error[0], "NaN") != NULL, "error message: '%s'", r1.error[0]);
    for (int j = 0; j < 2; j++)
        CHECK(r2.finish[j] == PAGODA_FINISH_ERROR && r2.n_tokens[j] == 1, "sampled choice %d: finish %d after %d tokens",
              j, r2.finish[j], r2.n_tokens[j]);
    check_no_leak(e);
    submit(e, prompt, 11, 10, 0, 0, 1, &r3);
    run_all(e);
    int32_t want[10];
    reference(prompt, 11, 10, want);
    CHECK(r3.finish[0] == PAGODA_FINISH_LENGTH && r3.n_tokens[0] == 10 && !memcmp(r3.tokens[0], want, sizeof want),
          "after the bad step: finish %d, %d tokens", r3.finish[0], r3.n_tokens[0]);
    check_no_leak(e);
    pagoda_engine_destroy(e);
}

/* ---- speculation: a fake proposer offers the greedy continuation with a wrong token in it ---- */

typedef struct {
    spec_proposer base;
    int n_calls;
    int64_t n_proposed;
} proposer_state;

static void propose(spec_proposer *p, spec_query *qs, int32_t nq) {
    proposer_state *ps = (proposer_state *)p;
    ps->n_calls++;
    for (int32_t q = 0; q < nq; q++) {
        int32_t ctx[2048], n = qs[q].n, max_k = qs[q].max_k;
        float l[V];
        memcpy(ctx, qs[q].tokens, (size_t)n * sizeof *ctx);
        uint64_t id = qs[q].key >> 8;
        int32_t k = max_k, wrong = (int32_t)((id + (uint64_t)n) % (uint64_t)(max_k + 2)); /* max_k + 1: none wrong */
        for (int32_t j = 0; j < k; j++) {
            fake_logits(ctx, n + j, l);
            qs[q].out[j] = ctx[n + j] = j == wrong ? (argmax(l) + 1) % V : argmax(l);
        }
        qs[q].n_out = k;
        ps->n_proposed += k;
    }
}
static void proposer_keep(spec_proposer *p) { (void)p; } /* the test owns it */

static uint64_t seen[8192];
static int32_t n_seen;

/* Distinct chained block hashes of the full blocks of the computed part of every sequence (in seen). */
static int32_t count_blocks(int32_t n_seq, const int32_t *const *seqs, const int32_t *lens, int32_t bs) {
    n_seen = 0;
    for (int32_t s = 0; s < n_seq; s++) {
        uint64_t h = KV_ROOT_HASH;
        for (int32_t b = 0; (b + 1) * bs <= lens[s]; b++) {
            h = kv_block_hash(h, seqs[s] + b * bs, bs);
            int dup = 0;
            for (int32_t i = 0; i < n_seen && !dup; i++) dup = seen[i] == h;
            if (!dup && n_seen < 8192) seen[n_seen++] = h;
        }
    }
    return n_seen;
}

static void test_speculation(void) {
    enum { N = 24 };
    static int32_t prompts[N][128], ref[N][MAX_OUT], full[N][128 + MAX_OUT];
    int32_t lens[N], outs[N], computed[N];
    const int32_t *seqs[N];
    static result res[N];
    memset(res, 0, sizeof res);
    make_prompts(N, prompts, lens, outs, 60, 80);
    for (int i = 0; i < N; i++) reference(prompts[i], lens[i], outs[i], ref[i]);
    pagoda_engine *e = make(4096, 4, 64, 16, 0); /* room for every block: nothing evicted */
    proposer_state ps = {.base = {.name = "fake", .propose = propose, .destroy = proposer_keep}};
    CHECK(engine_set_proposer(e, &ps.base, 4) == PAGODA_OK, "proposer: %s", pagoda_last_error());
    e->spec_max_seqs = 64; /* drafts at every batch size */
    for (int i = 0; i < N; i++) submit(e, prompts[i], lens[i], outs[i], 0, 0, 1, &res[i]);
    run_all(e);
    pagoda_engine_stats st;
    pagoda_engine_get_stats(e, &st);
    int ok = 0;
    int64_t n_out = 0;
    for (int i = 0; i < N; i++) {
        ok += res[i].n_tokens[0] == outs[i] && !memcmp(res[i].tokens[0], ref[i], sizeof(int32_t) * (size_t)outs[i]);
        n_out += outs[i];
        memcpy(full[i], prompts[i], sizeof(int32_t) * (size_t)lens[i]);
        memcpy(full[i] + lens[i], ref[i], sizeof(int32_t) * (size_t)outs[i]);
        computed[i] = lens[i] + outs[i] - 1; /* the last token is never computed */
        seqs[i] = full[i];
    }
    CHECK(ok == N, "speculative greedy: %d of %d requests equal the reference", ok, N);
    CHECK(ps.n_calls > 0 && (int64_t)st.n_generated_tokens == n_out, "proposer calls %d, %llu tokens", ps.n_calls,
          (unsigned long long)st.n_generated_tokens);
    /* k > 1 tokens per step: fewer decode steps than tokens */
    CHECK(st.n_steps < (uint64_t)n_out / 2, "%llu steps for %lld tokens: drafts were not accepted", (unsigned long long)st.n_steps,
          (long long)n_out);
    /* commit after accept: the cache holds exactly the accepted full blocks, none with a rejected draft */
    int32_t expect = count_blocks(N, seqs, computed, 4);
    CHECK(st.kv_blocks_cached == expect, "prefix cache holds %d blocks; the accepted tokens fill %d", st.kv_blocks_cached, expect);
    /* and every cached block is one of them, holding (in the fake's KV) the tokens it is published under */
    int32_t n_foreign = 0, n_stale = 0;
    for (int32_t b = 0; b < g_fake->n_blocks; b++) {
        uint64_t h;
        const int32_t *toks;
        if (!kv_pool_block_published(e->pool, b, &h, &toks)) continue;
        int found = 0;
        for (int32_t i = 0; i < n_seen && !found; i++) found = seen[i] == h;
        n_foreign += !found;
        n_stale += memcmp(toks, g_fake->kv + (size_t)b * 4, 4 * sizeof(int32_t)) != 0;
    }
    CHECK(n_foreign == 0 && n_stale == 0, "%d cached blocks hold rejected drafts, %d hold other K/V than their tokens", n_foreign, n_stale);
    CHECK(g_fake->n_bad_ctx == 0, "%d bad context reads", g_fake->n_bad_ctx);
    check_no_leak(e);
    printf("  speculation: %d/%d equal the reference, %lld tokens in %llu steps, %lld proposed, %d cached blocks (expected %d)\n",
           ok, N, (long long)n_out, (unsigned long long)st.n_steps, (long long)ps.n_proposed, st.kv_blocks_cached, expect);
    pagoda_engine_destroy(e);
    /* under a tight KV budget drafts are dropped, preempted and rolled back: still the reference */
    memset(res, 0, sizeof res);
    e = make(40, 4, 16, 8, 0);
    engine_set_proposer(e, &ps.base, 4);
    e->spec_max_seqs = 64;
    for (int i = 0; i < N; i++) submit(e, prompts[i], lens[i], outs[i], 0, 0, 1, &res[i]);
    run_all(e);
    pagoda_engine_get_stats(e, &st);
    ok = 0;
    for (int i = 0; i < N; i++)
        ok += res[i].n_tokens[0] == outs[i] && !memcmp(res[i].tokens[0], ref[i], sizeof(int32_t) * (size_t)outs[i]);
    CHECK(ok == N && st.n_preemptions > 0, "tight speculative: %d of %d equal, %llu preemptions", ok, N,
          (unsigned long long)st.n_preemptions);
    CHECK(g_fake->n_bad_ctx == 0, "%d bad context reads", g_fake->n_bad_ctx);
    check_no_leak(e);
    pagoda_engine_destroy(e);
}

/* A proposer far dearer than what its drafts save (2 ms a draft against the fake's microsecond
 * passes), exact drafts, and a prefill hook. Once the cost model has measured it, new sequences
 * get no drafts and no prefill (it would only add to their time to first token), and a sequence
 * refused for long is still probed (its ask given once every SPEC_PROBE x running sequences
 * steps, so stale costs get measured again); the outputs stay the reference. The margin is
 * wide (a draft costs about 100 passes), so a loaded machine does not change the decisions. */
typedef struct {
    spec_proposer base;
    int n_prefill, n_propose;
} slow_proposer;

static void slow_prefill(spec_proposer *p, spec_query *qs, int32_t n) {
    (void)qs;
    ((slow_proposer *)p)->n_prefill += n;
}

static void slow_propose(spec_proposer *p, spec_query *qs, int32_t nq) {
    slow_proposer *sp = (slow_proposer *)p;
    sp->n_propose++;
    long total = 0;
    for (int32_t q = 0; q < nq; q++) {
        int32_t ctx[2048], n = qs[q].n;
        float l[V];
        memcpy(ctx, qs[q].tokens, (size_t)n * sizeof *ctx);
        for (int32_t j = 0; j < qs[q].max_k; j++) {
            fake_logits(ctx, n + j, l);
            qs[q].out[j] = ctx[n + j] = argmax(l);
        }
        qs[q].n_out = qs[q].max_k;
        total += qs[q].max_k;
    }
    struct timespec ts = {.tv_sec = total / 500, .tv_nsec = (total % 500) * 2000000L};
    nanosleep(&ts, NULL);
}

static void test_spec_gating(void) {
    enum { N = 4, OUT = 200 };
    static int32_t prompts[N][128], ref[N][MAX_OUT];
    static result res[N];
    memset(res, 0, sizeof res);
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < 24; j++) prompts[i][j] = (int32_t)(test_rand_u64(&g_rng) % V);
        reference(prompts[i], 24, OUT, ref[i]);
    }
    pagoda_engine *e = make(4096, 4, 64, 16, 0);
    slow_proposer sp = {.base = {.name = "slow", .propose = slow_propose, .prefill = slow_prefill,
                                 .destroy = proposer_keep}};
    CHECK(engine_set_proposer(e, &sp.base, 4) == PAGODA_OK, "proposer: %s", pagoda_last_error());
    e->spec_max_seqs = 64;
    for (int i = 0; i < 2; i++) submit(e, prompts[i], 24, OUT, 0, 0, 1, &res[i]);
    run_all(e);
    CHECK(sp.n_prefill > 0, "nothing measured yet: the first prompts are prefilled (%d)", sp.n_prefill);
    pagoda_engine_stats st0, st1;
    pagoda_engine_get_stats(e, &st0);
    const int pre = sp.n_prefill, prop = sp.n_propose;
    for (int i = 2; i < N; i++) submit(e, prompts[i], 24, OUT, 0, 0, 1, &res[i]);
    run_all(e);
    pagoda_engine_get_stats(e, &st1);
    const long steps = (long)(st1.n_steps - st0.n_steps), probes = sp.n_propose - prop;
    CHECK(sp.n_prefill == pre, "a draft measured at ~100 passes: still %d prefill queries", sp.n_prefill - pre);
    /* each sequence is refused, then probed about every 64 steps (2 running): a few calls, not one a step */
    CHECK(probes >= 2 && probes <= steps / 16 + 2, "%ld proposer calls in %ld steps", probes, steps);
    int ok = 0;
    for (int i = 0; i < N; i++) ok += res[i].n_tokens[0] == OUT && !memcmp(res[i].tokens[0], ref[i], sizeof(int32_t) * OUT);
    CHECK(ok == N, "gated speculation: %d of %d requests equal the reference", ok, N);
    printf("  speculation gating: %d prefill queries before the cost was measured, %d after; %ld probes in %ld steps\n",
           pre, sp.n_prefill - pre, probes, steps);
    check_no_leak(e);
    pagoda_engine_destroy(e);
}

/* logit_bias on the fake: -100 bans the greedy token, +100 forces one; validation errors. */
static void test_logit_bias(void) {
    int32_t prompt[5] = {1, 2, 3, 4, 5}, ref[40];
    reference(prompt, 5, 40, ref);
    pagoda_engine *e = make(64, 8, 64, 16, 1);
    static result a, b;
    memset(&a, 0, sizeof a), memset(&b, 0, sizeof b);
    pagoda_logit_bias ban = {ref[0], -100.0f}, force[2] = {{7, 60.0f}, {7, 40.0f}};
    pagoda_request q;
    pagoda_request_default(&q);
    q.prompt_tokens = prompt, q.n_prompt_tokens = 5, q.max_tokens = 40, q.on_event = on_event;
    q.sampling.temperature = 0, q.logit_bias = &ban, q.n_logit_bias = 1, q.user = &a;
    CHECK(pagoda_engine_submit(e, &q, NULL) == PAGODA_OK, "submit: %s", pagoda_last_error());
    q.sampling.temperature = 1, q.sampling.seed = 3, q.logit_bias = force, q.n_logit_bias = 2, q.user = &b;
    CHECK(pagoda_engine_submit(e, &q, NULL) == PAGODA_OK, "submit: %s", pagoda_last_error());
    run_all(e);
    int banned = 0, forced = 0;
    for (int i = 0; i < a.n_tokens[0]; i++) banned += a.tokens[0][i] == ref[0];
    for (int i = 0; i < b.n_tokens[0]; i++) forced += b.tokens[0][i] == 7;
    CHECK(a.n_tokens[0] == 40 && banned == 0, "banned token appeared %d times", banned);
    CHECK(a.tokens[0][0] != ref[0] && b.n_tokens[0] == 40 && forced == 40, "forced token %d of 40 times", forced);
    CHECK(g_fake->n_id_runs == 0, "a biased request must not take device ids");
    /* validation */
    pagoda_logit_bias bad[3] = {{V, 1.0f}, {3, 101.0f}, {3, NAN}};
    const char *what[3] = {"out of range", "[-100, 100]", "[-100, 100]"};
    for (int i = 0; i < 3; i++) {
        q.logit_bias = &bad[i], q.n_logit_bias = 1;
        CHECK(pagoda_engine_submit(e, &q, NULL) == PAGODA_ERR_INVALID && strstr(pagoda_last_error(), what[i]),
              "bad bias %d: %s", i, pagoda_last_error());
    }
    q.logit_bias = force, q.n_logit_bias = PAGODA_MAX_LOGIT_BIAS + 1;
    CHECK(pagoda_engine_submit(e, &q, NULL) == PAGODA_ERR_INVALID && strstr(pagoda_last_error(), "at most"), "too many: %s",
          pagoda_last_error());
    check_no_leak(e);
    pagoda_engine_destroy(e);
}

/* Prompt logits: every prompt position's raw row, in order, before any event; over several
 * chunks and next to other requests; no KV from the prefix cache. score_only: no token, LENGTH. */
static void test_prompt_logits(void) {
    enum { N = 5 };
    static int32_t prompt[N][128];
    static result res[N], warm;
    memset(res, 0, sizeof res), memset(&warm, 0, sizeof warm);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < 100; j++) prompt[i][j] = (int32_t)((j * 11 + (j > 40 ? i : 0)) % V);
    pagoda_engine *e = make(256, 8, 24, 8, 1);
    submit(e, prompt[0], 100, 3, 0, 0, 1, &warm); /* its blocks enter the prefix cache */
    run_all(e);
    for (int i = 0; i < N; i++) {
        pagoda_request q;
        pagoda_request_default(&q);
        q.prompt_tokens = prompt[i], q.n_prompt_tokens = 60 + 10 * i, q.max_tokens = 5;
        q.sampling.temperature = 0, q.on_event = on_event, q.user = &res[i];
        q.on_prompt_logits = on_logits, q.score_only = i % 2;
        res[i].prompt = prompt[i];
        CHECK(pagoda_engine_submit(e, &q, NULL) == PAGODA_OK, "submit: %s", pagoda_last_error());
    }
    run_all(e);
    for (int i = 0; i < N; i++) {
        CHECK(res[i].n_rows == 60 + 10 * i && res[i].bad_rows == 0 && res[i].rows_after_event == 0,
              "request %d: %d rows (%d wrong, %d after an event)", i, res[i].n_rows, res[i].bad_rows, res[i].rows_after_event);
        CHECK(res[i].n_cached == 0, "request %d took %d tokens from the prefix cache", i, res[i].n_cached);
        if (i % 2) CHECK(res[i].finish[0] == PAGODA_FINISH_LENGTH && res[i].n_tokens[0] == 0 && res[i].done, "score_only %d", i);
        else CHECK(res[i].finish[0] == PAGODA_FINISH_LENGTH && res[i].n_tokens[0] == 5, "request %d: %d tokens", i, res[i].n_tokens[0]);
    }
    /* a score_only request as long as the whole context is allowed */
    static result full;
    memset(&full, 0, sizeof full);
    pagoda_request q;
    pagoda_request_default(&q);
    static int32_t longp[1024];
    q.prompt_tokens = longp, q.n_prompt_tokens = 1024, q.score_only = 1, q.on_event = on_event, q.user = &full;
    CHECK(pagoda_engine_submit(e, &q, NULL) == PAGODA_OK, "score_only over the whole context: %s", pagoda_last_error());
    run_all(e);
    CHECK(full.finish[0] == PAGODA_FINISH_LENGTH && full.n_tokens[0] == 0, "long score_only");
    check_no_leak(e);
    pagoda_engine_destroy(e);
}

int main(void) {
    test_greedy(0);
    test_greedy(1);
    test_forks_and_cancel();
    test_failures();
    test_nan_logits();
    test_speculation();
    test_spec_gating();
    test_logit_bias();
    test_prompt_logits();
    TEST_DONE();
}
