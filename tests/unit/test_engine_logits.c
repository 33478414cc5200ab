/* logit_bias and prompt logits through the public engine API on real models (../shared):
 *  - a -100 bias bans a token: the token the unbiased model samples most over 1,000 tokens never
 *    appears over 1,000 biased ones (temperature 1); a +100 bias forces its token every time;
 *  - the bias shifts the sampling distribution exactly: p'(t) = p(t) e^b(t) / sum_u p(u) e^b(u),
 *    checked in log space on a real logits row, and by drawing 40,000 tokens from it;
 *  - logprobs reported with a bias are those of the biased distribution (the model's logits plus
 *    the bias, before penalties and temperature), as the OpenAI API reports them;
 *  - on_prompt_logits rows equal forward_run's logits of the same tokens, bit for bit on the CPU,
 *    for prompts longer than a step's token budget (several chunks), several requests at once;
 *    score_only requests finish with LENGTH and no token. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/logits_proc.h"
#include "engine/model_api.h"
#include "engine/sampler.h"
#include "kv/kv_cache.h"
#include "model/forward.h"
#include "pagoda.h"
#include "test_util.h"

enum { MAX_TOK = 1200 };

typedef struct {
    int32_t tokens[MAX_TOK];
    int32_t n;
    float lp0;
    pagoda_finish_reason finish;
    int done;
    /* prompt logits */
    int32_t n_vocab, n_rows, n_events, rows_after_event;
    float *rows; /* [n_rows][n_vocab] */
} result;

static void on_event(const pagoda_event *ev, void *user) {
    result *r = user;
    r->n_events++;
    if (ev->token >= 0 && r->n < MAX_TOK) {
        if (r->n == 0) r->lp0 = ev->logprob;
        r->tokens[r->n++] = ev->token;
    }
    if (ev->finish) r->finish = ev->finish;
    if (ev->request_done) r->done = 1;
}

static void on_logits(const pagoda_logits_event *ev, void *user) {
    result *r = user;
    if (r->n_events) r->rows_after_event++;
    if (ev->pos != r->n_rows) return;
    r->n_vocab = ev->n_vocab;
    r->rows = realloc(r->rows, (size_t)(r->n_rows + 1) * (size_t)ev->n_vocab * sizeof(float));
    memcpy(r->rows + (size_t)r->n_rows * (size_t)ev->n_vocab, ev->logits, (size_t)ev->n_vocab * sizeof(float));
    r->n_rows++;
}

static pagoda_engine *make_engine(pagoda_model *m, int32_t max_batch) {
    pagoda_engine_config c;
    pagoda_engine_config_default(&c);
    c.kv_mem_bytes = 64ull << 20, c.max_batch_tokens = max_batch, c.max_seqs = 16, c.n_threads = 2;
    pagoda_engine *e = NULL;
    CHECK(pagoda_engine_create(m, &c, &e) == PAGODA_OK, "engine: %s", pagoda_last_error());
    return e;
}

static void run_all(pagoda_engine *e) {
    int32_t live = 1;
    for (int guard = 0; live > 0 && guard < 100000; guard++) pagoda_engine_step(e, &live);
    CHECK(live == 0, "requests left unfinished");
}

/* 1,000 sampled tokens (4 requests of 250) after prompt, with an optional bias; returns counts. */
static void sample_1000(pagoda_model *m, const char *prompt, const pagoda_logit_bias *bias, int32_t n_bias, int32_t *counts,
                        int32_t n_vocab) {
    pagoda_engine *e = make_engine(m, 256);
    static result r[4];
    memset(r, 0, sizeof r);
    for (int i = 0; i < 4; i++) {
        pagoda_request q;
        pagoda_request_default(&q);
        q.prompt = prompt, q.max_tokens = 250, q.ignore_eos = 1, q.sampling.temperature = 1, q.sampling.seed = 40 + i;
        q.logit_bias = bias, q.n_logit_bias = n_bias, q.on_event = on_event, q.user = &r[i];
        CHECK(pagoda_engine_submit(e, &q, NULL) == PAGODA_OK, "submit: %s", pagoda_last_error());
    }
    run_all(e);
    pagoda_engine_destroy(e);
    memset(counts, 0, (size_t)n_vocab * sizeof *counts);
    for (int i = 0; i < 4; i++) {
        CHECK(r[i].n == 250, "request %d: %d tokens", i, r[i].n);
        for (int j = 0; j < r[i].n; j++) counts[r[i].tokens[j]]++;
    }
}

/* The first raw logits row after prompt (through on_prompt_logits of a score_only request). */
static float *first_row(pagoda_model *m, const int32_t *ids, int32_t n, int32_t *n_vocab) {
    pagoda_engine *e = make_engine(m, 256);
    result r = {0};
    pagoda_request q;
    pagoda_request_default(&q);
    q.prompt_tokens = ids, q.n_prompt_tokens = n, q.score_only = 1, q.on_prompt_logits = on_logits;
    q.on_event = on_event, q.user = &r;
    CHECK(pagoda_engine_submit(e, &q, NULL) == PAGODA_OK, "submit: %s", pagoda_last_error());
    run_all(e);
    pagoda_engine_destroy(e);
    CHECK(r.n_rows == n && r.finish == PAGODA_FINISH_LENGTH && r.n == 0, "score_only: %d rows, finish %d, %d tokens", r.n_rows,
          r.finish, r.n);
    *n_vocab = r.n_vocab;
    float *row = malloc((size_t)r.n_vocab * sizeof(float));
    memcpy(row, r.rows + (size_t)(n - 1) * (size_t)r.n_vocab, (size_t)r.n_vocab * sizeof(float));
    free(r.rows);
    return row;
}

static void test_logit_bias(const char *model_dir) {
    pagoda_model *m;
    if (pagoda_model_load(model_dir, &m)) {
        CHECK(0, "load %s: %s", model_dir, pagoda_last_error());
        return;
    }
    pagoda_model_info info;
    pagoda_model_get_info(m, &info);
    const int32_t V = info.n_vocab;
    const char *prompt = "def fibonacci(n):\n    ";
    int32_t *counts = calloc((size_t)V, sizeof *counts);
    sample_1000(m, prompt, NULL, 0, counts, V);
    int32_t top = 0;
    for (int32_t t = 1; t < V; t++)
        if (counts[t] > counts[top]) top = t;
    int32_t n_top = counts[top];
    pagoda_logit_bias ban = {top, -100.0f};
    sample_1000(m, prompt, &ban, 1, counts, V);
    int32_t n_banned = counts[top];
    CHECK(n_top > 10 && n_banned == 0, "banned token %d: %d times unbiased, %d times with -100", top, n_top, n_banned);
    int32_t forced_tok = (int32_t)(7919 % V);
    pagoda_logit_bias force = {forced_tok, 100.0f};
    sample_1000(m, prompt, &force, 1, counts, V);
    CHECK(counts[forced_tok] == 1000, "forced token %d sampled %d of 1000 times", forced_tok, counts[forced_tok]);
    printf("  logit_bias: token %d sampled %d/1000 unbiased, %d/1000 with -100; token %d %d/1000 with +100\n", top, n_top,
           n_banned, forced_tok, counts[forced_tok]);

    /* the distribution shift, exactly, on a real logits row */
    int32_t *ids = NULL;
    size_t n_ids = 0;
    CHECK(pagoda_tokenize(m, prompt, strlen(prompt), 1, 1, &ids, &n_ids) == PAGODA_OK, "tokenize");
    int32_t nv = 0;
    float *row = first_row(m, ids, (int32_t)n_ids, &nv);
    CHECK(nv == V, "row of %d logits", nv);
    pagoda_logit_bias bias[4] = {{top, 2.5f}, {(top + 1) % V, -1.0f}, {(top + 2) % V, 3.0f}, {(top + 2) % V, 0.5f}};
    lp_bias lb;
    CHECK(lp_bias_init(&lb, bias, 4, V) == PAGODA_OK && lb.n == 3, "bias init");
    lp_chain chain = {0};
    lp_chain_add(&chain, lp_bias_apply, &lb);
    pg_sample_ws *ws;
    sampler_ws_create(V, &ws);
    float *scratch = malloc((size_t)V * sizeof(float));
    const float *biased = lp_chain_run(&chain, row, V, scratch);
    double z = 0; /* log sum_u p(u) e^b(u) */
    float *b_of = calloc((size_t)V, sizeof(float));
    b_of[top] = 2.5f, b_of[(top + 1) % V] = -1.0f, b_of[(top + 2) % V] = 3.5f;
    for (int32_t t = 0; t < V; t++) z += exp((double)sampler_logprobs(row, V, t, 0, NULL, NULL) + b_of[t]);
    z = log(z);
    double worst = 0;
    for (int32_t t = 0; t < V; t++) {
        double want = (double)sampler_logprobs(row, V, t, 0, NULL, NULL) + b_of[t] - z;
        double got = (double)sampler_logprobs(biased, V, t, 0, NULL, NULL);
        if (want > -30 && fabs(got - want) > worst) worst = fabs(got - want);
    }
    CHECK(worst < 1e-4, "log p'(t) differs from log p(t) + b(t) - log Z by %g", worst);
    /* draws at temperature 1 follow p' (chi-square over the likely tokens) */
    pg_sampling_params sp = sampler_default_params();
    sp.seed = 9;
    pg_sampler *s;
    sampler_create_lean(&sp, V, &s);
    enum { DRAWS = 40000 };
    int32_t *hist = calloc((size_t)V, sizeof *hist);
    for (int i = 0; i < DRAWS; i++) hist[sampler_draw_ws(s, biased, ws)]++;
    double chi2 = 0, rest_p = 0;
    int32_t dof = 0, rest_n = DRAWS;
    for (int32_t t = 0; t < V; t++) {
        double p = exp((double)sampler_logprobs(biased, V, t, 0, NULL, NULL));
        if (p * DRAWS < 20) continue;
        chi2 += (hist[t] - p * DRAWS) * (hist[t] - p * DRAWS) / (p * DRAWS);
        rest_p += p, rest_n -= hist[t], dof++;
    }
    double pr = 1 - rest_p;
    if (pr * DRAWS >= 5) chi2 += (rest_n - pr * DRAWS) * (rest_n - pr * DRAWS) / (pr * DRAWS), dof++;
    /* 99.9% quantile of chi-square with dof-1 degrees, Wilson-Hilferty */
    double k = dof - 1, q = k * pow(1 - 2 / (9 * k) + 3.09 * sqrt(2 / (9 * k)), 3);
    CHECK(dof > 3 && chi2 < q, "draws vs p': chi2 %.1f over %d cells, bound %.1f", chi2, dof, q);
    printf("  bias shift: log-prob error %.2g; %d draws chi2 %.1f over %d cells (99.9%% bound %.1f)\n", worst, DRAWS, chi2, dof, q);

    /* logprobs with a bias are the biased distribution's: greedy under a bias forcing a token */
    pagoda_engine *e = make_engine(m, 256);
    result r = {0};
    pagoda_request qr;
    pagoda_request_default(&qr);
    pagoda_logit_bias f2 = {(top + 2) % V, 100.0f};
    qr.prompt_tokens = ids, qr.n_prompt_tokens = (int32_t)n_ids, qr.max_tokens = 1, qr.sampling.temperature = 0;
    qr.logprobs = 0, qr.logit_bias = &f2, qr.n_logit_bias = 1, qr.on_event = on_event, qr.user = &r;
    CHECK(pagoda_engine_submit(e, &qr, NULL) == PAGODA_OK, "submit: %s", pagoda_last_error());
    run_all(e);
    pagoda_engine_destroy(e);
    float *brow = malloc((size_t)V * sizeof(float));
    memcpy(brow, row, (size_t)V * sizeof(float));
    brow[f2.token] += f2.bias;
    float want = sampler_logprobs(brow, V, f2.token, 0, NULL, NULL), raw = sampler_logprobs(row, V, f2.token, 0, NULL, NULL);
    CHECK(r.n == 1 && r.tokens[0] == f2.token && r.lp0 == want && want - raw > 1.0f,
          "biased greedy token %d logprob %g, biased distribution %g, raw %g", r.tokens[0], r.lp0, want, raw);
    free(brow);
    pagoda_free(ids);
    free(counts), free(row), free(scratch), free(b_of), free(hist);
    lp_bias_free(&lb);
    sampler_destroy(s);
    sampler_ws_destroy(ws);
    pagoda_model_free(m);
}

/* forward_run's logits for every position of ids, in one batch. */
static float *reference_rows(pagoda_model *pm, const int32_t *ids, int32_t n) {
    const pg_model_config *c = &pm->m->cfg;
    pg_forward *f = NULL;
    pg_kv *kv = NULL;
    int32_t bs = 16, nb = (n + bs - 1) / bs, *table = malloc((size_t)nb * sizeof(int32_t));
    for (int32_t i = 0; i < nb; i++) table[i] = i;
    uint8_t *mask = malloc((size_t)n);
    memset(mask, 1, (size_t)n);
    float *out = malloc((size_t)n * (size_t)c->n_vocab * sizeof(float));
    CHECK(forward_create(pm->m, n, &f) == PAGODA_OK, "forward: %s", pagoda_last_error());
    CHECK(forward_kv_create(f, nb, bs, PAGODA_DTYPE_F32, &kv) == PAGODA_OK, "kv: %s", pagoda_last_error());
    int32_t start[2] = {0, n}, pos0 = 0;
    const int32_t *tables[1] = {table};
    pg_batch b = {.n_tok = n, .tokens = ids, .n_seq = 1, .seq_start = start, .seq_pos0 = &pos0, .block_tables = tables,
                  .n_blocks = &nb, .logits_mask = mask};
    CHECK(forward_run(f, &b, kv, out) == PAGODA_OK, "forward_run: %s", pagoda_last_error());
    forward_kv_destroy(kv);
    forward_destroy(f);
    free(table), free(mask);
    return out;
}

static void test_prompt_logits(const char *model_dir) {
    pagoda_model *m;
    if (pagoda_model_load(model_dir, &m)) {
        CHECK(0, "load %s: %s", model_dir, pagoda_last_error());
        return;
    }
    pagoda_model_info info;
    pagoda_model_get_info(m, &info);
    enum { N = 3 };
    static int32_t prompts[N][100];
    int32_t lens[N] = {70, 45, 90};
    unsigned long long rng = 5;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < lens[i]; j++) prompts[i][j] = (int32_t)(test_rand_u64(&rng) % (uint64_t)info.n_vocab);
    memcpy(prompts[2], prompts[0], 40 * sizeof(int32_t)); /* a shared prefix: must not come from the cache */
    static result r[N + 1];
    memset(r, 0, sizeof r);
    pagoda_engine *e = make_engine(m, 24); /* every prompt takes several steps */
    for (int i = 0; i <= N; i++) {
        pagoda_request q;
        pagoda_request_default(&q);
        int k = i < N ? i : 0; /* and one more without prompt logits, generating next to them */
        q.prompt_tokens = prompts[k], q.n_prompt_tokens = lens[k], q.max_tokens = 6, q.sampling.temperature = 0;
        q.ignore_eos = 1, q.on_event = on_event, q.user = &r[i];
        if (i < N) q.on_prompt_logits = on_logits, q.score_only = i == 1;
        CHECK(pagoda_engine_submit(e, &q, NULL) == PAGODA_OK, "submit: %s", pagoda_last_error());
    }
    run_all(e);
    pagoda_engine_destroy(e);
    int identical = 0;
    for (int i = 0; i < N; i++) {
        float *ref = reference_rows(m, prompts[i], lens[i]);
        size_t bytes = (size_t)lens[i] * (size_t)info.n_vocab * sizeof(float);
        int same = r[i].n_rows == lens[i] && r[i].rows && !memcmp(r[i].rows, ref, bytes);
        float worst = 0;
        for (size_t j = 0; r[i].n_rows == lens[i] && j < bytes / sizeof(float); j++)
            if (fabsf(r[i].rows[j] - ref[j]) > worst) worst = fabsf(r[i].rows[j] - ref[j]);
        CHECK(same, "%s: request %d: %d rows, max difference from forward_run %g", model_dir, i, r[i].n_rows, worst);
        CHECK(r[i].rows_after_event == 0, "request %d: rows after its first event", i);
        identical += same;
        free(ref);
        free(r[i].rows);
    }
    CHECK(r[1].finish == PAGODA_FINISH_LENGTH && r[1].n == 0 && r[1].done, "score_only: finish %d, %d tokens", r[1].finish, r[1].n);
    CHECK(r[0].n == 6 && r[3].n == 6 && !memcmp(r[0].tokens, r[3].tokens, sizeof(int32_t) * 6),
          "prompt logits change no generated token");
    printf("  %s: prompt logits of %d requests (chunks of 24 tokens) bit-identical to forward_run: %d/%d\n", model_dir, N,
           identical, N);
    pagoda_model_free(m);
}

int main(void) {
    const char *shared = test_shared_dir();
    if (!shared) TEST_SKIP("../shared not found (set PAGODA_SHARED): fixture models unavailable");
    char path[4096];
    snprintf(path, sizeof path, "%s/models/pycoder-tiny", shared);
    test_logit_bias(path);
    static const char *fixtures[] = {"llama", "qwen3", "gpt_bigcode"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/fixtures/hf/%s", shared, fixtures[i]);
        test_prompt_logits(path);
    }
    snprintf(path, sizeof path, "%s/models/pycoder-tiny", shared);
    test_prompt_logits(path);
    TEST_DONE();
}
