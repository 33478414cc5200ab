/* A program outside the tree that uses the installed library through include/pagoda.h only:
 * loads a model, tokenizes a prompt, generates greedy tokens with pagoda_engine_* and prints
 *   version <PAGODA_VERSION_STRING> <MAJOR>.<MINOR>.<PATCH> <PAGODA_VERSION> library <pagoda_version_string()>
 *   prompt <ids>
 *   tokens <ids>
 * Built by tests/python/test_install.py three ways (pkg-config shared, pkg-config --static,
 * find_package(pagoda)); usage: app MODEL PROMPT N_TOKENS */
#include <pagoda.h>
#include <stdio.h>
#include <stdlib.h> /* atoi */
#include <string.h>

typedef struct {
    int done, failed;
} state;

static void on_event(const pagoda_event *ev, void *user) {
    state *s = user;
    if (ev->token >= 0) printf(" %d", ev->token);
    if (ev->finish == PAGODA_FINISH_ERROR || ev->finish == PAGODA_FINISH_CANCELLED) s->failed = 1;
    if (ev->request_done) s->done = 1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL PROMPT N_TOKENS\n", argv[0]);
        return 2;
    }
    printf("version %s %d.%d.%d %d library %s\n", PAGODA_VERSION_STRING, PAGODA_VERSION_MAJOR,
           PAGODA_VERSION_MINOR, PAGODA_VERSION_PATCH, PAGODA_VERSION, pagoda_version_string());
    pagoda_model *m = NULL;
    pagoda_engine *e = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    int rc = 1;
    if (pagoda_model_load(argv[1], &m)) goto fail;
    if (pagoda_tokenize(m, argv[2], strlen(argv[2]), 1, 1, &ids, &n_ids)) goto fail;
    printf("prompt");
    for (size_t i = 0; i < n_ids; i++) printf(" %d", ids[i]);
    printf("\n");

    pagoda_engine_config ec;
    pagoda_engine_config_default(&ec);
    ec.max_seqs = 1;
    ec.max_model_len = 512;
    if (pagoda_engine_create(m, &ec, &e)) goto fail;
    pagoda_request rq;
    pagoda_request_default(&rq);
    rq.sampling.temperature = 0; /* greedy */
    rq.prompt_tokens = ids;
    rq.n_prompt_tokens = (int32_t)n_ids;
    rq.max_tokens = atoi(argv[3]);
    rq.ignore_eos = 1;
    state s = {0, 0};
    rq.on_event = on_event;
    rq.user = &s;
    if (pagoda_engine_submit(e, &rq, NULL)) goto fail;
    printf("tokens");
    while (!s.done)
        if (pagoda_engine_step(e, NULL)) goto fail;
    printf("\n");
    rc = s.failed;
    if (s.failed) fprintf(stderr, "app: the request failed\n");
    goto done;
fail:
    fprintf(stderr, "app: %s\n", pagoda_last_error());
done:
    pagoda_engine_destroy(e);
    pagoda_model_free(m);
    pagoda_free(ids);
    return rc;
}
