/* The vocabulary-parallel token embedding of tensor parallelism (pg_forward_opts.vp_embed: rank r
 * holds its slice of the rows, other tokens read as zeros, an all-reduce adds the ranks' rows), run
 * on the CPU with two ranks that are threads (pagoda_tp_threads_create): the logits equal those of
 * the same ranks with the whole embedding bit for bit (a row plus zeros is the row), and the whole
 * model's within summation-order noise; learned positions (gpt_bigcode) are added once, after. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "model/forward.h"
#include "model/model.h"
#include "pagoda.h"
#include "test_util.h"

#define BLK 16
enum { B = 2, T = 9, MAX_TOK = B * T, N = 2 };

typedef struct {
    int32_t tokens[MAX_TOK], start[B + 1], pos0[B], nb[B], blocks[B * 2];
    const int32_t *tables[B];
    pg_batch b;
} batch;

static void make_batch(batch *x, int32_t n_vocab) {
    for (int32_t s = 0; s < B; s++) {
        x->start[s] = s * T, x->pos0[s] = 0, x->nb[s] = 1, x->blocks[s * 2] = 3 + s;
        x->tables[s] = x->blocks + s * 2;
    }
    x->start[B] = MAX_TOK;
    for (int32_t t = 0; t < MAX_TOK; t++) x->tokens[t] = (int32_t)((t * 7919u + 13) % (uint32_t)n_vocab);
    x->b = (pg_batch){.n_tok = MAX_TOK, .tokens = x->tokens, .n_seq = B, .seq_start = x->start, .seq_pos0 = x->pos0,
                      .block_tables = x->tables, .n_blocks = x->nb};
}

typedef struct {
    pg_forward *f;
    pg_kv *kv;
    const pg_batch *b;
    float *logits; /* rank 0's; NULL on the other rank */
    pagoda_status st;
} rank_job;

static void *rank_run(void *arg) {
    rank_job *j = arg;
    j->st = forward_run(j->f, j->b, j->kv, j->logits);
    return NULL;
}

/* rank 0's logits of a TP=2 run (vp: the split embedding); 0 ok */
static int run_tp(const pg_model *m, const batch *x, int vp, float *logits) {
    pagoda_tp_group **g = NULL;
    if (pagoda_tp_threads_create(N, 1, &g)) {
        CHECK(0, "group: %s", pagoda_last_error());
        return 1;
    }
    rank_job jobs[N] = {{0}};
    pthread_t th[N];
    int rc = 0;
    for (int r = 0; r < N && !rc; r++) {
        pg_forward_opts o = {.n_threads = 1, .tp_rank = r, .tp_size = N, .all_reduce = g[r]->all_reduce,
                             .all_reduce_user = g[r]->user, .vp_embed = vp};
        if (forward_create_ex(m, MAX_TOK, &o, &jobs[r].f) || forward_kv_create(jobs[r].f, 8, BLK, PAGODA_DTYPE_F32, &jobs[r].kv)) {
            CHECK(0, "rank %d: %s", r, pagoda_last_error());
            rc = 1;
        }
        jobs[r].b = &x->b, jobs[r].logits = r == 0 ? logits : NULL;
    }
    for (int r = 0; r < N && !rc; r++) pthread_create(&th[r], NULL, rank_run, &jobs[r]);
    for (int r = 0; r < N && !rc; r++) pthread_join(th[r], NULL);
    for (int r = 0; r < N && !rc; r++)
        if (jobs[r].st) {
            CHECK(0, "rank %d: forward: %s", r, pagoda_last_error());
            rc = 1;
        }
    for (int r = 0; r < N; r++) forward_kv_destroy(jobs[r].kv), forward_destroy(jobs[r].f);
    pagoda_tp_threads_destroy(g);
    return rc;
}

static void check_model(const char *path) {
    pg_model *m = NULL;
    if (model_load(path, &m)) {
        CHECK(0, "%s: %s", path, pagoda_last_error());
        return;
    }
    const size_t V = (size_t)m->cfg.n_vocab;
    float *whole = malloc(sizeof(float) * MAX_TOK * V), *tp = malloc(sizeof(float) * MAX_TOK * V);
    float *vp = malloc(sizeof(float) * MAX_TOK * V);
    pg_forward *f = NULL;
    pg_kv *kv = NULL;
    batch x;
    make_batch(&x, m->cfg.n_vocab);
    if (!whole || !tp || !vp || forward_create(m, MAX_TOK, &f) || forward_kv_create(f, 8, BLK, PAGODA_DTYPE_F32, &kv) ||
        forward_run(f, &x.b, kv, whole)) {
        CHECK(0, "%s: %s", path, pagoda_last_error());
    } else if (!run_tp(m, &x, 0, tp) && !run_tp(m, &x, 1, vp)) {
        /* every token's logits row (no mask: the last of each sequence) */
        const size_t n = (size_t)B * V;
        const int same = !memcmp(tp, vp, sizeof(float) * n);
        CHECK(same, "%s: the split embedding changed the logits", path);
        double d = 0;
        for (size_t i = 0; i < n; i++) d = fmax(d, fabs((double)vp[i] - whole[i]));
        CHECK(d <= 1e-5, "%s: TP=2 with the split embedding vs one rank: %g", path, d);
        printf("%s: split embedding %s whole embedding, vs one rank %.2e\n", path, same ? "==" : "!=", d);
    }
    forward_kv_destroy(kv), forward_destroy(f);
    free(whole), free(tp), free(vp);
    model_free(m);
}

int main(void) {
    const char *shared = test_shared_dir();
    if (!shared) TEST_SKIP("../shared absent: no model to split");
    static const char *const names[] = {"llama", "qwen2", "gpt_bigcode"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char p[1024];
        snprintf(p, sizeof p, "%s/fixtures/hf/%s", shared, names[i]);
        check_model(p);
    }
    TEST_DONE();
}
