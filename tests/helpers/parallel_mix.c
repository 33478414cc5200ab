/* Embedding and generation requests in the same engine steps, alone or over a tensor/pipeline-
 * parallel MPI job (test helper for tests/python/test_pipeline_parallel.py): steps then carry
 * hidden-state rows (embeddings, from the last stage) and logits rows (generation) together.
 * Usage: [mpirun -np TP*PP] parallel_mix MODEL TP PP MICRO
 * Rank 0 prints each embedding request's vector ("e<i> v0 v1 ...", %.9g) and the generated ids
 * ("g<i> t0 t1 ..."), in request order; the last generation request has two (greedy) choices,
 * which share the prompt's last partial KV block until it is copied for the second ("h<i> ...").
 * KV blocks are copied on every rank, each for its own layers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pagoda.h"

enum { N_EMB = 2, N_GEN = 2, N_TOK = 8 };

typedef struct {
    float *vec;
    int32_t n_embd, tokens[2][N_TOK], n[2], done, failed;
} out;

static void on_embedding(const pagoda_embedding_event *ev, void *user) {
    out *o = user;
    o->n_embd = ev->n_embd;
    o->vec = malloc(sizeof(float) * (size_t)ev->n_embd);
    if (o->vec) memcpy(o->vec, ev->embedding, sizeof(float) * (size_t)ev->n_embd);
}

static void on_event(const pagoda_event *ev, void *user) {
    out *o = user;
    int c = ev->index == 1;
    if (ev->token >= 0 && o->n[c] < N_TOK) o->tokens[c][o->n[c]++] = ev->token;
    if (ev->finish == PAGODA_FINISH_ERROR) {
        fprintf(stderr, "parallel_mix: %s\n", ev->error ? ev->error : "error");
        o->failed = 1;
    }
    if (ev->request_done) o->done = 1;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: parallel_mix MODEL TP PP MICRO\n");
        return 2;
    }
    int tp = atoi(argv[2]), pp = atoi(argv[3]), rc = 1;
    pagoda_tp_group *g = NULL;
    pagoda_model *m = NULL;
    pagoda_engine *e = NULL;
    out o[N_EMB + N_GEN];
    memset(o, 0, sizeof o);
    if (tp * pp > 1 && pagoda_tp_mpi_create_pp(pp, &g)) goto fail;
    if (pagoda_model_load(argv[1], &m)) goto fail;
    pagoda_engine_config ec;
    pagoda_engine_config_default(&ec);
    ec.n_threads = 1, ec.max_batch_tokens = 64, ec.max_seqs = 8, ec.max_model_len = 64, ec.prefix_caching = 0;
    ec.tp = g, ec.pp_micro_batches = atoi(argv[4]);
    if (g && g->rank > 0) {
        rc = pagoda_tp_worker_run(m, &ec) ? 1 : 0;
        if (rc) goto fail;
        goto done;
    }
    if (pagoda_engine_create(m, &ec, &e)) goto fail;
    for (int i = 0; i < N_EMB + N_GEN; i++) {
        int32_t prompt[12];
        for (int j = 0; j < 12; j++) prompt[j] = (int32_t)((i * 37 + j * 11 + 3) % 300);
        pagoda_request rq;
        pagoda_request_default(&rq);
        rq.prompt_tokens = prompt, rq.n_prompt_tokens = 5 + 3 * i;
        rq.sampling.temperature = 0, rq.ignore_eos = 1, rq.max_tokens = N_TOK;
        rq.on_event = on_event, rq.user = &o[i];
        if (i < N_EMB) rq.on_embedding = on_embedding, rq.pooling = PAGODA_POOLING_MEAN, rq.normalize = 0;
        if (i == N_EMB + N_GEN - 1) rq.n = 2;
        if (pagoda_engine_submit(e, &rq, NULL)) goto fail;
    }
    for (int32_t live = 1; live > 0;)
        if (pagoda_engine_step(e, &live)) goto fail;
    for (int i = 0; i < N_EMB + N_GEN; i++) {
        if (o[i].failed || !o[i].done || (i < N_EMB && !o[i].vec)) goto fail;
        printf(i < N_EMB ? "e%d" : "g%d", i);
        if (i < N_EMB)
            for (int32_t k = 0; k < o[i].n_embd; k++) printf(" %.9g", o[i].vec[k]);
        else
            for (int32_t k = 0; k < o[i].n[0]; k++) printf(" %d", o[i].tokens[0][k]);
        printf("\n");
        if (o[i].n[1]) {
            printf("h%d", i);
            for (int32_t k = 0; k < o[i].n[1]; k++) printf(" %d", o[i].tokens[1][k]);
            printf("\n");
        }
    }
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "parallel_mix: %s\n", pagoda_last_error());
done:
    pagoda_engine_destroy(e);
    pagoda_model_free(m);
    for (int i = 0; i < N_EMB + N_GEN; i++) free(o[i].vec);
    fflush(stdout);
    pagoda_tp_mpi_destroy(g, rc);
    return rc;
}
