/* Embedding requests through the engine on the sentence-transformers fixture
 * (../shared/fixtures/embed/qwen3_lasttoken: a bare Qwen3Model, last-token pooling + Normalize):
 * every text alone and all batched together (with a generation request in the same steps) within
 * 1e-4 cosine distance of golden.json; mean/CLS pooling equal the mean/first of the last-token
 * vectors of the prompt's prefixes (each prefix's last position is that position of the prompt:
 * causal attention); a model without an LM head refuses generation. */
#include <jansson.h>
#include <math.h>
#include <string.h>

#include "pagoda.h"
#include "test_util.h"

enum { MAX_TEXTS = 16, MAX_E = 256 };

typedef struct {
    float v[MAX_E];
    int n, got, done, err;
} slot;

static void on_emb(const pagoda_embedding_event *ev, void *user) {
    slot *s = user;
    s->n = ev->n_embd < MAX_E ? ev->n_embd : MAX_E;
    memcpy(s->v, ev->embedding, sizeof(float) * (size_t)s->n);
    s->got++;
}
static void on_ev(const pagoda_event *ev, void *user) {
    slot *s = user;
    if (ev->request_done) s->done = 1;
    if (ev->finish == PAGODA_FINISH_ERROR) s->err = 1;
}

static double cos_dist(const float *a, const double *b, int n) {
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < n; i++) ab += a[i] * b[i], aa += (double)a[i] * a[i], bb += b[i] * b[i];
    return 1.0 - ab / sqrt(aa * bb);
}

static pagoda_status submit(pagoda_engine *e, const int32_t *ids, int n, pagoda_pooling pool, int norm, slot *s) {
    pagoda_request r;
    pagoda_request_default(&r);
    r.prompt_tokens = ids, r.n_prompt_tokens = n;
    r.on_embedding = on_emb, r.on_event = on_ev, r.user = s;
    r.pooling = pool, r.normalize = norm;
    uint64_t id;
    return pagoda_engine_submit(e, &r, &id);
}

static void run_all(pagoda_engine *e) {
    for (int i = 0; i < 10000; i++) {
        int32_t live = 0;
        if (pagoda_engine_step(e, &live) || live == 0) return;
    }
}

int main(void) {
    { /* the request defaults pagoda.h names: pooling as the model declares, normalize as it declares */
        pagoda_request d;
        pagoda_request_default(&d);
        CHECK(d.pooling == PAGODA_POOLING_MODEL && d.normalize == -1, "request defaults: pooling %d, normalize %d",
              (int)d.pooling, d.normalize);
    }
    const char *shared = test_shared_dir();
    if (!shared) TEST_SKIP("../shared not found");
    char dir[4096], gpath[4200];
    snprintf(dir, sizeof dir, "%s/fixtures/embed/qwen3_lasttoken", shared);
    snprintf(gpath, sizeof gpath, "%s/golden.json", dir);
    json_error_t jerr;
    json_t *g = json_load_file(gpath, 0, &jerr);
    if (!g) TEST_SKIP("%s: %s", gpath, jerr.text);

    /* the pooling math alone */
    {
        pagoda_model *m;
        CHECK(pagoda_model_load(dir, &m) == PAGODA_OK, "load: %s", pagoda_last_error());
        pagoda_embedding_info info;
        pagoda_model_get_embedding_info(m, &info);
        CHECK(info.pooling == PAGODA_POOLING_LAST && info.normalize == 1 && info.is_embedding_model && info.n_embd == 64,
              "embedding info: pooling %d normalize %d package %d n_embd %d", info.pooling, info.normalize,
              info.is_embedding_model, info.n_embd);
        CHECK(info.has_lm_head == 1, "the fixture ties its LM head to the embedding");
        pagoda_engine_config c;
        pagoda_engine_config_default(&c);
        c.n_threads = 2, c.kv_mem_bytes = 16u << 20, c.max_batch_tokens = 32; /* chunked prefill */
        pagoda_engine *e;
        CHECK(pagoda_engine_create(m, &c, &e) == PAGODA_OK, "engine: %s", pagoda_last_error());

        json_t *ids = json_object_get(g, "input_ids"), *embs = json_object_get(g, "embeddings");
        int n_texts = (int)json_array_size(ids);
        static int32_t toks[MAX_TEXTS][512];
        int n_tok[MAX_TEXTS];
        static double want[MAX_TEXTS][MAX_E];
        for (int t = 0; t < n_texts && t < MAX_TEXTS; t++) {
            json_t *a = json_array_get(ids, (size_t)t), *v = json_array_get(embs, (size_t)t);
            n_tok[t] = (int)json_array_size(a);
            for (int i = 0; i < n_tok[t] && i < 512; i++) toks[t][i] = (int32_t)json_integer_value(json_array_get(a, (size_t)i));
            for (size_t i = 0; i < json_array_size(v) && i < MAX_E; i++) want[t][i] = json_number_value(json_array_get(v, i));
        }
        /* alone */
        for (int t = 0; t < n_texts; t++) {
            static slot s;
            memset(&s, 0, sizeof s);
            CHECK(submit(e, toks[t], n_tok[t], PAGODA_POOLING_MODEL, -1, &s) == PAGODA_OK, "%s", pagoda_last_error());
            run_all(e);
            double d = cos_dist(s.v, want[t], s.n);
            CHECK(s.got == 1 && s.done && !s.err && s.n == 64 && d <= 1e-4, "text %d alone: got %d, cosine distance %g", t,
                  s.got, d);
            printf("text %d alone: cosine distance %.3g\n", t, d);
        }
        /* all at once, with a generation request in the same steps */
        static slot s[MAX_TEXTS], gen;
        pagoda_request gr;
        pagoda_request_default(&gr);
        gr.prompt_tokens = toks[5], gr.n_prompt_tokens = n_tok[5], gr.max_tokens = 20, gr.ignore_eos = 1;
        gr.on_event = on_ev, gr.user = &gen;
        uint64_t gid;
        CHECK(pagoda_engine_submit(e, &gr, &gid) == PAGODA_OK, "%s", pagoda_last_error());
        for (int t = 0; t < n_texts; t++)
            CHECK(submit(e, toks[t], n_tok[t], PAGODA_POOLING_LAST, 1, &s[t]) == PAGODA_OK, "%s", pagoda_last_error());
        run_all(e);
        CHECK(gen.done && !gen.err, "the generation request beside them");
        for (int t = 0; t < n_texts; t++) {
            double d = cos_dist(s[t].v, want[t], s[t].n);
            CHECK(s[t].got == 1 && d <= 1e-4, "text %d batched: cosine distance %g", t, d);
            printf("text %d batched: cosine distance %.3g\n", t, d);
        }
        /* mean and CLS pooling (raw vectors) against prefixes' last-token vectors */
        int T = n_tok[5] < 40 ? n_tok[5] : 40;
        static slot pre[40];
        static slot mean, cls;
        for (int k = 0; k < T; k++) CHECK(submit(e, toks[5], k + 1, PAGODA_POOLING_LAST, 0, &pre[k]) == PAGODA_OK, "prefix");
        CHECK(submit(e, toks[5], T, PAGODA_POOLING_MEAN, 0, &mean) == PAGODA_OK, "mean");
        CHECK(submit(e, toks[5], T, PAGODA_POOLING_CLS, 0, &cls) == PAGODA_OK, "cls");
        run_all(e);
        double ref[MAX_E] = {0}, first[MAX_E];
        for (int k = 0; k < T; k++)
            for (int i = 0; i < 64; i++) ref[i] += pre[k].v[i] / T;
        for (int i = 0; i < 64; i++) first[i] = pre[0].v[i];
        double dm = cos_dist(mean.v, ref, 64), dc = cos_dist(cls.v, first, 64);
        CHECK(mean.got == 1 && dm <= 1e-5, "mean pooling vs the mean of prefixes: %g", dm);
        CHECK(cls.got == 1 && dc <= 1e-5, "CLS pooling vs the first position: %g", dc);
        double last[MAX_E];
        for (int i = 0; i < 64; i++) last[i] = pre[T - 1].v[i];
        CHECK(cos_dist(mean.v, last, 64) > 1e-3 && cos_dist(cls.v, last, 64) > 1e-3, "the poolings differ");
        printf("mean pooling: %.3g, cls: %.3g (vs last: %.3g)\n", dm, dc, cos_dist(mean.v, last, 64));
        /* preemption: a KV budget of 16 blocks for 8 mean-pooled prompts of 3 blocks each, prefilled in
         * chunks beside 4 generation requests that grow to 9 blocks each, so sequences run out of
         * blocks and are recomputed; every vector as before */
        {
            pagoda_engine_config c2 = c;
            c2.kv_mem_bytes = 16 * 16 * 2 * 2 * 2 * 16 * 4, c2.prefix_caching = 0;
            pagoda_engine *e2;
            CHECK(pagoda_engine_create(m, &c2, &e2) == PAGODA_OK, "engine: %s", pagoda_last_error());
            static slot ps[8], gs[4];
            for (int k = 0; k < 8; k++) {
                CHECK(submit(e2, toks[5], T, PAGODA_POOLING_MEAN, 0, &ps[k]) == PAGODA_OK, "submit");
                if (k % 2) continue;
                pagoda_request g2; /* generation beside them grows past the budget */
                pagoda_request_default(&g2);
                g2.prompt_tokens = toks[5], g2.n_prompt_tokens = T, g2.max_tokens = 100, g2.ignore_eos = 1;
                g2.on_event = on_ev, g2.user = &gs[k / 2];
                uint64_t g2id;
                CHECK(pagoda_engine_submit(e2, &g2, &g2id) == PAGODA_OK, "%s", pagoda_last_error());
            }
            run_all(e2);
            pagoda_engine_stats es;
            pagoda_engine_get_stats(e2, &es);
            for (int k = 0; k < 8; k++) {
                double dk = cos_dist(ps[k].v, ref, 64);
                CHECK(ps[k].got == 1 && dk <= 1e-5, "mean pooling under preemption, request %d: %g", k, dk);
            }
            printf("mean pooling under a small KV budget: %llu preemptions, %d blocks\n",
                   (unsigned long long)es.n_preemptions, es.kv_blocks_total);
            CHECK(es.n_preemptions > 0, "the budget was meant to force preemptions");
            pagoda_engine_destroy(e2);
        }
        /* bad requests */
        pagoda_request br;
        pagoda_request_default(&br);
        br.prompt_tokens = toks[0], br.n_prompt_tokens = n_tok[0], br.on_embedding = on_emb, br.n = 2;
        uint64_t bid;
        CHECK(pagoda_engine_submit(e, &br, &bid) == PAGODA_ERR_INVALID, "n = 2 refused");
        br.n = 1, br.pooling = PAGODA_POOLING_NONE;
        CHECK(pagoda_engine_submit(e, &br, &bid) == PAGODA_ERR_INVALID, "pooling none refused");
        pagoda_engine_destroy(e);
        pagoda_model_free(m);
    }
    json_decref(g);
    TEST_DONE();
}
