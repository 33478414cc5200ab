/* The draft-model proposer (engine/spec_draft.c) on the built-in model, used as target and draft:
 * its k proposals equal the greedy continuation the engine computes without speculation, for
 * fresh sequences, continued ones (drafts accepted), rolled-back ones (a different last token, a
 * truncated sequence), several at once of different lengths and max_k, long prompts caught up
 * over several passes, after release, at the model-length limit, and with a pool too small for
 * everyone (no crash; some get none; those served are right). A different draft (a requantized
 * copy when the CLI is at hand, and an int8 KV cache) gives in-range, deterministic proposals.
 * Prints the draft's speed per step for 1 and 8 sequences. Skipped when the model is absent. */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/spec.h"
#include "pagoda.h"
#include "test_util.h"

#define MODEL PAGODA_TESTS_DIR "/../models/SmolLM2-135M-Instruct.Q4_1.gguf"

enum { MAXTOK = 512, K = 5 };

static pagoda_model *g_m;
static pagoda_engine *g_ref;
static int32_t g_vocab;
static uint64_t g_block_bytes; /* one KV block (16 tokens, f32) of the model */

typedef struct {
    int32_t toks[64];
    int32_t n;
    atomic_int done;
} collect;

static void on_event(const pagoda_event *ev, void *user) {
    collect *c = user;
    if (ev->token >= 0 && c->n < 64) c->toks[c->n++] = ev->token;
    if (ev->request_done) atomic_store(&c->done, 1);
}

/* engine e's greedy continuation of ids[0..n), k tokens, no speculation */
static void greedy_on(pagoda_engine *e, const int32_t *ids, int32_t n, int32_t k, int32_t *out) {
    collect c = {0};
    pagoda_request q;
    pagoda_request_default(&q);
    q.prompt_tokens = ids, q.n_prompt_tokens = n, q.max_tokens = k;
    q.sampling.temperature = 0, q.ignore_eos = 1;
    q.on_event = on_event, q.user = &c;
    uint64_t id;
    CHECK(pagoda_engine_submit(e, &q, &id) == PAGODA_OK, "submit: %s", pagoda_last_error());
    int32_t live = 1;
    for (int g = 0; live > 0 && g < 10000; g++) pagoda_engine_step(e, &live);
    CHECK(atomic_load(&c.done) && c.n == k, "reference: %d tokens of %d", c.n, k);
    memcpy(out, c.toks, sizeof(int32_t) * (size_t)k);
}

static void greedy(const int32_t *ids, int32_t n, int32_t k, int32_t *out) { greedy_on(g_ref, ids, n, k, out); }

static pagoda_engine *make_engine(pagoda_model *m, pagoda_dtype kv) {
    pagoda_engine_config c;
    pagoda_engine_config_default(&c);
    c.n_threads = 2, c.kv_mem_bytes = 64ull << 20, c.max_batch_tokens = 256, c.max_seqs = 8, c.kv_dtype = kv;
    pagoda_engine *e = NULL;
    CHECK(pagoda_engine_create(m, &c, &e) == PAGODA_OK, "engine: %s", pagoda_last_error());
    return e;
}

static int32_t tokenize(const char *text, int32_t *out) {
    int32_t *ids;
    size_t n;
    CHECK(pagoda_tokenize(g_m, text, strlen(text), 1, 1, &ids, &n) == PAGODA_OK, "tokenize: %s", pagoda_last_error());
    if (n > MAXTOK) n = MAXTOK;
    memcpy(out, ids, n * sizeof *ids);
    pagoda_free(ids);
    return (int32_t)n;
}

static spec_proposer *make_draft(pagoda_model *m, uint64_t kv_bytes, int32_t max_batch, int32_t max_seqs, int32_t max_len,
                                 pagoda_dtype kv) {
    pagoda_engine_config c;
    pagoda_engine_config_default(&c);
    c.n_threads = 2, c.kv_mem_bytes = kv_bytes, c.max_batch_tokens = max_batch, c.kv_dtype = kv;
    spec_proposer *p = NULL;
    CHECK(spec_draft_create(m, &c, max_seqs, max_len, &p) == PAGODA_OK, "draft: %s", pagoda_last_error());
    return p;
}

/* proposes for one sequence and checks the proposals against the greedy continuation */
static void expect_one(spec_proposer *p, uint64_t key, const int32_t *ids, int32_t n, int32_t k, const char *what) {
    int32_t out[64], want[64];
    spec_query q = {.key = key, .tokens = ids, .n = n, .max_k = k, .out = out};
    p->propose(p, &q, 1);
    greedy(ids, n, k, want);
    CHECK(q.n_out == k, "%s: %d proposals, wanted %d", what, q.n_out, k);
    for (int32_t j = 0; j < q.n_out && j < k; j++)
        CHECK(out[j] == want[j], "%s: proposal %d is %d, greedy %d", what, j, out[j], want[j]);
}

static const char *texts[] = {
    "The capital of France is",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
};
enum { NT = sizeof texts / sizeof texts[0] };
static int32_t P[NT][MAXTOK];
static int32_t PN[NT];

static void test_same_model(void) {
    spec_proposer *p = make_draft(g_m, 64 * g_block_bytes, 256, 16, 0, PAGODA_DTYPE_F32);
    if (!p) return;
    CHECK(!strcmp(p->name, "draft"), "name %s", p->name);
    /* fresh sequences, one at a time */
    for (int i = 0; i < NT; i++) expect_one(p, (uint64_t)i, P[i], PN[i], K, texts[i]);
    /* continued: two drafts accepted and the target's next token (the draft holds K/V past it) */
    int32_t seq[MAXTOK + 64], g[64];
    int32_t n0 = PN[1];
    greedy(P[1], n0, 8, g);
    memcpy(seq, P[1], sizeof(int32_t) * (size_t)n0);
    memcpy(seq + n0, g, 3 * sizeof(int32_t));
    expect_one(p, 1, seq, n0 + 3, K, "continued");
    /* all K accepted plus one: every earlier draft fed, the new one not */
    memcpy(seq + n0, g, 8 * sizeof(int32_t));
    expect_one(p, 1, seq, n0 + 8, K, "continued past the drafts");
    /* rollback: a different token after the first draft */
    seq[n0 + 1] = (g[1] + 17) % g_vocab;
    expect_one(p, 1, seq, n0 + 2, K, "different last token");
    /* rollback: truncated into the prompt */
    expect_one(p, 1, seq, n0 - 3, K, "truncated");
    /* the same query twice (nothing new to compute but the last token) */
    expect_one(p, 1, seq, n0 - 3, K, "repeated");
    /* several at once: different lengths, states and max_k; one key new */
    {
        int32_t outs[5][64], want[64];
        int32_t ks[5] = {1, 3, K, 8, 2};
        memcpy(seq + n0, g, 4 * sizeof(int32_t));
        spec_query qs[5] = {
            {.key = 0, .tokens = P[0], .n = PN[0]},            /* same as before */
            {.key = 1, .tokens = seq, .n = n0 + 4},           /* continued after a rollback */
            {.key = 2, .tokens = P[2], .n = PN[2] - 2},       /* truncated */
            {.key = 7, .tokens = P[3], .n = PN[3]},           /* new key */
            {.key = 3, .tokens = P[1], .n = 5},               /* another text's prefix */
        };
        for (int i = 0; i < 5; i++) qs[i].max_k = ks[i], qs[i].out = outs[i];
        p->propose(p, qs, 5);
        for (int i = 0; i < 5; i++) {
            greedy(qs[i].tokens, qs[i].n, ks[i], want);
            CHECK(qs[i].n_out == ks[i], "batched %d: %d proposals, wanted %d", i, qs[i].n_out, ks[i]);
            for (int j = 0; j < qs[i].n_out; j++)
                CHECK(outs[i][j] == want[j], "batched %d: proposal %d is %d, greedy %d", i, j, outs[i][j], want[j]);
        }
    }
    /* release, then again from scratch */
    p->release(p, 1);
    p->release(p, 12345); /* unknown key: nothing */
    expect_one(p, 1, seq, n0 + 4, K, "after release");
    /* bad queries get none and hurt nobody */
    {
        int32_t bad[3] = {1, g_vocab + 5, 2}, o1[8], o2[8], want[8];
        spec_query qs[3] = {{.key = 50, .tokens = bad, .n = 3, .max_k = 4, .out = o1},
                            {.key = 51, .tokens = P[0], .n = 0, .max_k = 4, .out = o2},
                            {.key = 0, .tokens = P[0], .n = PN[0], .max_k = 4, .out = o2}};
        p->propose(p, qs, 3);
        CHECK(qs[0].n_out == 0 && qs[1].n_out == 0, "bad queries got %d, %d proposals", qs[0].n_out, qs[1].n_out);
        greedy(P[0], PN[0], 4, want);
        CHECK(qs[2].n_out == 4 && !memcmp(o2, want, sizeof(int32_t) * 4), "good query beside bad ones");
    }
    spec_destroy(p);
}

/* long prompts through a small token budget: catch-up over several passes, beside short ones */
static void test_chunked(void) {
    static int32_t longp[400];
    int32_t n = 0;
    while (n < 300) {
        int32_t m = PN[1] - 1 < 300 - n ? PN[1] - 1 : 300 - n;
        memcpy(longp + n, P[1] + (n ? 1 : 0), sizeof(int32_t) * (size_t)m);
        n += m;
    }
    spec_proposer *p = make_draft(g_m, 128 * g_block_bytes, 32, 8, 0, PAGODA_DTYPE_F32);
    if (!p) return;
    int32_t outs[3][64], want[64];
    spec_query qs[3] = {{.key = 1, .tokens = longp, .n = n, .max_k = K, .out = outs[0]},
                        {.key = 2, .tokens = P[0], .n = PN[0], .max_k = K, .out = outs[1]},
                        {.key = 3, .tokens = longp, .n = 100, .max_k = 3, .out = outs[2]}};
    p->propose(p, qs, 3);
    for (int i = 0; i < 3; i++) {
        greedy(qs[i].tokens, qs[i].n, qs[i].max_k, want);
        CHECK(qs[i].n_out == qs[i].max_k, "chunked %d: %d proposals", i, qs[i].n_out);
        for (int j = 0; j < qs[i].n_out; j++)
            CHECK(outs[i][j] == want[j], "chunked %d: proposal %d is %d, greedy %d", i, j, outs[i][j], want[j]);
    }
    spec_destroy(p);
    /* the model-length limit: proposals stop at max_model_len */
    p = make_draft(g_m, 16 * g_block_bytes, 64, 4, 40, PAGODA_DTYPE_F32);
    if (!p) return;
    int32_t out[16];
    spec_query q = {.key = 9, .tokens = longp, .n = 38, .max_k = 8, .out = out};
    p->propose(p, &q, 1);
    greedy(longp, 38, 2, want);
    CHECK(q.n_out == 2 && out[0] == want[0] && out[1] == want[1], "at the length limit: %d proposals", q.n_out);
    q.n = 40;
    p->propose(p, &q, 1);
    CHECK(q.n_out == 0, "at max_model_len: %d proposals", q.n_out);
    spec_destroy(p);
}

/* prefill (the prompt's K/V while the target computes it, in chunks, no proposals), then proposals
 * that continue from it, beside a sequence never prefilled; a prefill of what is held already, or
 * of a rolled-back sequence, changes nothing the proposals show */
static void test_prefill(void) {
    spec_proposer *p = make_draft(g_m, 64 * g_block_bytes, 32, 8, 0, PAGODA_DTYPE_F32);
    if (!p) return;
    CHECK(p->prefill != NULL, "no prefill hook");
    if (!p->prefill) {
        spec_destroy(p);
        return;
    }
    int32_t dummy[4] = {-7, -7, -7, -7};
    /* the prompt in two chunks (the second over the token budget), beside another's one chunk */
    spec_query qs[2] = {{.key = 1, .tokens = P[1], .n = PN[1] / 2, .max_k = 4, .out = dummy},
                        {.key = 2, .tokens = P[3], .n = PN[3]}};
    p->prefill(p, qs, 2);
    CHECK(qs[0].n_out == 0 && dummy[0] == -7, "prefill proposed %d", qs[0].n_out);
    qs[0].n = PN[1];
    p->prefill(p, qs, 1);
    p->prefill(p, qs, 1); /* again: nothing new */
    expect_one(p, 1, P[1], PN[1], K, "after prefill");
    expect_one(p, 2, P[3], PN[3], K, "after a one-chunk prefill");
    /* the sequence continues with a token that is not the first proposal's */
    int32_t seq[MAXTOK + 8];
    memcpy(seq, P[1], sizeof(int32_t) * (size_t)PN[1]);
    seq[PN[1]] = (P[1][3] + 5) % g_vocab;
    expect_one(p, 1, seq, PN[1] + 1, K, "after prefill, a token of the target's");
    /* a prefill that rolls back into the prompt (a preempted sequence recomputed differently) */
    seq[4] = (seq[4] + 1) % g_vocab;
    spec_query q = {.key = 1, .tokens = seq, .n = PN[1] + 1};
    p->prefill(p, &q, 1);
    expect_one(p, 1, seq, PN[1] + 1, K, "after a prefill that rolled back");
    /* a sequence never prefilled beside them */
    expect_one(p, 3, P[0], PN[0], K, "fresh, no prefill");
    spec_destroy(p);
}

/* 5 blocks for sequences of 2 blocks each: some get none, the others are right; LRU makes room */
static void test_small_pool(void) {
    spec_proposer *p = make_draft(g_m, 5 * g_block_bytes + g_block_bytes / 2, 64, 8, 0, PAGODA_DTYPE_F32);
    if (!p) return;
    int32_t outs[4][64], want[64];
    spec_query qs[4];
    int served = 0;
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 4; i++)
            qs[i] = (spec_query){.key = (uint64_t)(round * 10 + i), .tokens = P[1], .n = 18 + 2 * i, .max_k = K,
                                 .out = outs[i]};
        p->propose(p, qs, 4);
        int got = 0;
        for (int i = 0; i < 4; i++) {
            if (!qs[i].n_out) continue;
            got++;
            greedy(qs[i].tokens, qs[i].n, qs[i].n_out, want);
            for (int j = 0; j < qs[i].n_out; j++)
                CHECK(outs[i][j] == want[j], "small pool %d/%d: proposal %d is %d, greedy %d", round, i, j, outs[i][j],
                      want[j]);
        }
        CHECK(got >= 1 && got < 4, "small pool round %d: %d of 4 sequences served", round, got);
        served += got;
    }
    printf("small pool: %d of 12 served\n", served);
    spec_destroy(p);
}

/* another draft than the target: proposals in range, as many as asked, the same every time, and
 * the draft model's own greedy continuation (an engine on it with the same KV type) */
static void check_other_draft(pagoda_model *dm, pagoda_dtype kv, const char *what) {
    spec_proposer *p = make_draft(dm, 64 * g_block_bytes, 128, 8, 0, kv);
    spec_proposer *p2 = make_draft(dm, 64 * g_block_bytes, 128, 8, 0, kv);
    pagoda_engine *de = make_engine(dm, kv);
    if (!p || !p2 || !de) {
        spec_destroy(p), spec_destroy(p2), pagoda_engine_destroy(de);
        return;
    }
    int32_t a[NT][16], b[NT][16], c[NT][16];
    spec_query qa[NT], qb[NT];
    for (int i = 0; i < NT; i++) {
        qa[i] = (spec_query){.key = (uint64_t)i, .tokens = P[i], .n = PN[i], .max_k = 6, .out = a[i]};
        qb[i] = (spec_query){.key = (uint64_t)i + 100, .tokens = P[i], .n = PN[i], .max_k = 6, .out = b[i]};
    }
    p->propose(p, qa, NT);
    p2->propose(p2, qb, NT);
    for (int i = 0; i < NT; i++) { /* one at a time, after release, on p */
        p->release(p, (uint64_t)i);
        spec_query q = {.key = (uint64_t)i, .tokens = P[i], .n = PN[i], .max_k = 6, .out = c[i]};
        p->propose(p, &q, 1);
        CHECK(qa[i].n_out == 6 && qb[i].n_out == 6 && q.n_out == 6, "%s %d: %d, %d, %d proposals", what, i, qa[i].n_out,
              qb[i].n_out, q.n_out);
        for (int j = 0; j < 6; j++) {
            CHECK(a[i][j] >= 0 && a[i][j] < g_vocab, "%s %d: proposal %d out of range", what, i, a[i][j]);
            CHECK(a[i][j] == b[i][j] && a[i][j] == c[i][j], "%s %d: proposal %d not deterministic (%d %d %d)", what, i, j,
                  a[i][j], b[i][j], c[i][j]);
        }
    }
    int32_t same = 0, want[8];
    for (int i = 0; i < NT; i++) {
        greedy_on(de, P[i], PN[i], 6, want);
        for (int j = 0; j < 6; j++)
            CHECK(a[i][j] == want[j], "%s %d: proposal %d is %d, the draft's greedy %d", what, i, j, a[i][j], want[j]);
        greedy(P[i], PN[i], 6, want);
        for (int j = 0; j < 6 && a[i][j] == want[j]; j++) same++;
    }
    printf("%s: %d of %d proposals match the target's greedy prefix\n", what, same, NT * 6);
    spec_destroy(p), spec_destroy(p2);
    pagoda_engine_destroy(de);
}

static void test_other_drafts(void) {
    check_other_draft(g_m, PAGODA_DTYPE_KV_INT8, "int8 KV draft");
    const char *bin = getenv("PAGODA_BIN");
    if (!bin) {
        printf("skip the requantized draft: PAGODA_BIN not set\n");
        return;
    }
    char path[256], cmd[1024];
    snprintf(path, sizeof path, "/tmp/pagoda_test_spec_draft_%d.gguf", (int)getpid());
    snprintf(cmd, sizeof cmd, "'%s/pagoda' quantize --allow-requantize --pure '%s' '%s' Q4_0 -t 2 >/dev/null 2>&1", bin,
             MODEL, path);
    if (system(cmd) != 0) {
        printf("skip the requantized draft: pagoda quantize failed\n");
        unlink(path);
        return;
    }
    pagoda_model *dm = NULL;
    CHECK(pagoda_model_load(path, &dm) == PAGODA_OK, "load %s: %s", path, pagoda_last_error());
    unlink(path);
    if (!dm) return;
    check_other_draft(dm, PAGODA_DTYPE_F32, "Q4_0 draft");
    pagoda_model_free(dm);
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* ms per draft step (a one-token pass over every sequence) with 1 and 8 sequences: each call
 * accepts the previous call's drafts, so it feeds one token then K-1 drafts: K passes */
static void bench(void) {
    for (int nb = 1; nb <= 8; nb *= 8) {
        spec_proposer *p = make_draft(g_m, 256 * g_block_bytes, 256, 8, 0, PAGODA_DTYPE_F32);
        if (!p) return;
        static int32_t seqs[8][MAXTOK + 256];
        int32_t lens[8], outs[8][16];
        spec_query qs[8];
        for (int i = 0; i < nb; i++) {
            lens[i] = PN[i % NT];
            memcpy(seqs[i], P[i % NT], sizeof(int32_t) * (size_t)lens[i]);
        }
        double t0 = 0;
        int iters = 12;
        for (int it = 0; it < iters; it++) {
            if (it == 2) t0 = now_ms(); /* the first calls catch up */
            for (int i = 0; i < nb; i++)
                qs[i] = (spec_query){.key = (uint64_t)i, .tokens = seqs[i], .n = lens[i], .max_k = K, .out = outs[i]};
            p->propose(p, qs, nb);
            for (int i = 0; i < nb; i++) {
                CHECK(qs[i].n_out == K, "bench: %d proposals", qs[i].n_out);
                memcpy(seqs[i] + lens[i], outs[i], sizeof(int32_t) * (size_t)qs[i].n_out);
                lens[i] += qs[i].n_out;
            }
        }
        double ms = (now_ms() - t0) / ((iters - 2) * K);
        printf("draft speed: %d sequence(s): %.2f ms per draft step (%d threads)\n", nb, ms, 2);
        spec_destroy(p);
    }
}

int main(void) {
    if (access(MODEL, R_OK) != 0) TEST_SKIP("%s not found", MODEL);
    CHECK(pagoda_model_load(MODEL, &g_m) == PAGODA_OK, "load: %s", pagoda_last_error());
    if (!g_m) TEST_DONE();
    pagoda_model_info info;
    pagoda_model_get_info(g_m, &info);
    g_vocab = info.n_vocab;
    if (!(g_ref = make_engine(g_m, PAGODA_DTYPE_F32))) TEST_DONE();
    pagoda_engine_stats st;
    pagoda_engine_get_stats(g_ref, &st);
    CHECK(st.kv_block_size == 16, "block size %d", st.kv_block_size);
    g_block_bytes = st.kv_bytes / (uint64_t)st.kv_blocks_total;
    for (int i = 0; i < NT; i++) PN[i] = tokenize(texts[i], P[i]);

    /* bad arguments */
    spec_proposer *p = (spec_proposer *)1;
    CHECK(spec_draft_create(g_m, NULL, 0, 0, &p) != PAGODA_OK && p == NULL, "max_seqs 0 accepted");
    spec_destroy(NULL);

    test_same_model();
    test_chunked();
    test_prefill();
    test_small_pool();
    test_other_drafts();
    bench();
    pagoda_engine_destroy(g_ref);
    pagoda_model_free(g_m);
    TEST_DONE();
}
