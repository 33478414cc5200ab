/* Pipeline stages of the forward pass (model/forward.c, pg_forward_opts.pp_*) in one process, no
 * MPI: a model run as two stages (layers [0, k) then [k, n_layer), the residual stream handed over
 * through the pp_send/pp_recv hooks) must give the whole model's logits and hidden rows bit for
 * bit, on every split point, with the KV memory of each stage's layers only; a stage refuses LoRA,
 * GPU layers, an empty or out-of-range layer range and a missing hook. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "model/forward.h"
#include "model/model.h"
#include "test_util.h"

#define BLK 16
enum { B = 3, T = 11, MAX_TOK = B * T };

typedef struct {
    float *x; /* the residual stream in flight [MAX_TOK][n_embd] */
    int64_t n;
    int sends, recvs;
} pipe_buf;

static pagoda_status pipe_send(void *user, const float *x, int64_t n) {
    pipe_buf *p = user;
    memcpy(p->x, x, sizeof(float) * (size_t)n);
    p->n = n, p->sends++;
    return PAGODA_OK;
}

static pagoda_status pipe_recv(void *user, float *x, int64_t n) {
    pipe_buf *p = user;
    if (n != p->n) return pg_fail(PAGODA_ERR_IO, "pipe: %lld floats wanted, %lld sent", (long long)n, (long long)p->n);
    memcpy(x, p->x, sizeof(float) * (size_t)n);
    p->recvs++;
    return PAGODA_OK;
}

typedef struct {
    int32_t tokens[MAX_TOK], start[B + 1], pos0[B], nb[B], blocks[B * 4];
    const int32_t *tables[B];
    uint8_t lmask[MAX_TOK], hmask[MAX_TOK];
    pg_batch b;
    int32_t n_out, n_hid;
} batch;

/* B rows of T tokens from position 0; every second token wants logits, every fifth its hidden state */
static void make_batch(batch *x, int32_t n_vocab, bool hidden) {
    for (int32_t s = 0; s < B; s++) {
        x->start[s] = s * T, x->pos0[s] = 0, x->nb[s] = (T + BLK - 1) / BLK;
        for (int32_t j = 0; j < x->nb[s]; j++) x->blocks[s * 4 + j] = 20 - (s * 4 + j);
        x->tables[s] = x->blocks + s * 4;
    }
    x->start[B] = MAX_TOK;
    for (int32_t t = 0; t < MAX_TOK; t++) {
        x->tokens[t] = (int32_t)((t * 7919u + 13) % (uint32_t)n_vocab);
        x->hmask[t] = hidden && t % 5 == 0;
        x->lmask[t] = !x->hmask[t] && t % 2 == 0;
    }
    x->b = (pg_batch){.n_tok = MAX_TOK, .tokens = x->tokens, .n_seq = B, .seq_start = x->start, .seq_pos0 = x->pos0,
                      .block_tables = x->tables, .n_blocks = x->nb, .logits_mask = x->lmask,
                      .hidden_mask = hidden ? x->hmask : NULL};
    forward_out_rows(&x->b, &x->n_out, &x->n_hid);
}

static void check_model(const char *path) {
    pg_model *m = NULL;
    if (model_load(path, &m)) {
        CHECK(0, "%s: %s", path, pagoda_last_error());
        return;
    }
    const pg_model_config *c = &m->cfg;
    const size_t V = (size_t)c->n_vocab, E = (size_t)c->n_embd;
    float *want = malloc(sizeof(float) * MAX_TOK * V), *got = malloc(sizeof(float) * MAX_TOK * V);
    float *want_h = malloc(sizeof(float) * MAX_TOK * E), *got_h = malloc(sizeof(float) * MAX_TOK * E);
    pipe_buf pipe = {.x = malloc(sizeof(float) * MAX_TOK * E)};
    pg_forward *whole = NULL;
    pg_kv *whole_kv = NULL;
    if (!want || !got || !want_h || !got_h || !pipe.x || forward_create(m, MAX_TOK, &whole) ||
        forward_kv_create(whole, 32, BLK, PAGODA_DTYPE_F32, &whole_kv)) {
        CHECK(0, "%s: %s", path, pagoda_last_error());
        goto out;
    }
    size_t whole_host, dev;
    forward_kv_block_bytes(whole, BLK, PAGODA_DTYPE_F32, &whole_host, &dev);
    for (int hidden = 0; hidden < 2; hidden++) {
        batch x;
        make_batch(&x, c->n_vocab, hidden);
        CHECK(forward_run_hidden(whole, &x.b, whole_kv, want, want_h) == PAGODA_OK, "%s", pagoda_last_error());
        for (int32_t k = 1; k < c->n_layer; k++) {
            pg_forward_opts a = {.n_threads = 1, .pp_l0 = 0, .pp_l1 = k, .pp_send = pipe_send, .pp_user = &pipe};
            pg_forward_opts z = {.n_threads = 1, .pp_l0 = k, .pp_l1 = c->n_layer, .pp_recv = pipe_recv, .pp_user = &pipe};
            pg_forward *fa = NULL, *fz = NULL;
            pg_kv *ka = NULL, *kz = NULL;
            if (forward_create_ex(m, MAX_TOK, &a, &fa) || forward_create_ex(m, MAX_TOK, &z, &fz) ||
                forward_kv_create(fa, 32, BLK, PAGODA_DTYPE_F32, &ka) || forward_kv_create(fz, 32, BLK, PAGODA_DTYPE_F32, &kz)) {
                CHECK(0, "%s split at %d: %s", path, k, pagoda_last_error());
            } else {
                size_t ha, hz;
                forward_kv_block_bytes(fa, BLK, PAGODA_DTYPE_F32, &ha, &dev);
                forward_kv_block_bytes(fz, BLK, PAGODA_DTYPE_F32, &hz, &dev);
                CHECK(ha * (size_t)c->n_layer == whole_host * (size_t)k && ha + hz == whole_host,
                      "%s split at %d: KV bytes per block %zu + %zu of %zu", path, k, ha, hz, whole_host);
                memset(got, 0, sizeof(float) * MAX_TOK * V), memset(got_h, 0, sizeof(float) * MAX_TOK * E);
                pipe.sends = pipe.recvs = 0;
                /* the first stage writes no rows of its own: its residual stream goes on */
                CHECK(forward_run_hidden(fa, &x.b, ka, got, got_h) == PAGODA_OK, "%s", pagoda_last_error());
                CHECK(pipe.sends == 1 && pipe.n == (int64_t)MAX_TOK * (int64_t)E, "one send of the stream");
                CHECK(forward_run_hidden(fz, &x.b, kz, got, got_h) == PAGODA_OK, "%s", pagoda_last_error());
                CHECK(pipe.recvs == 1, "one receive");
                CHECK(!memcmp(got, want, sizeof(float) * (size_t)x.n_out * V), "%s split at %d: logits differ", path, k);
                CHECK(!memcmp(got_h, want_h, sizeof(float) * (size_t)x.n_hid * E), "%s split at %d: hidden rows differ",
                      path, k);
                /* LoRA adapters are refused in a stage */
                const struct pg_lora *table[2] = {NULL, (const struct pg_lora *)1};
                CHECK(forward_set_adapters(fa, table, 2) == PAGODA_ERR_UNSUPPORTED &&
                          strstr(pagoda_last_error(), "pipeline parallelism"),
                      "LoRA in a stage: %s", pagoda_last_error());
            }
            forward_kv_destroy(ka), forward_kv_destroy(kz);
            forward_destroy(fa), forward_destroy(fz);
        }
    }
    /* bad stages */
    pg_forward *f = NULL;
    pg_forward_opts o = {.pp_l0 = 1, .pp_l1 = 1, .pp_send = pipe_send, .pp_recv = pipe_recv};
    CHECK(forward_create_ex(m, MAX_TOK, &o, &f) == PAGODA_ERR_INVALID && !f, "empty range: %s", pagoda_last_error());
    o = (pg_forward_opts){.pp_l0 = 1, .pp_l1 = c->n_layer + 1, .pp_send = pipe_send, .pp_recv = pipe_recv};
    CHECK(forward_create_ex(m, MAX_TOK, &o, &f) == PAGODA_ERR_INVALID && !f, "beyond the layers: %s", pagoda_last_error());
    o = (pg_forward_opts){.pp_l0 = 1, .pp_l1 = c->n_layer, .pp_send = pipe_send};
    CHECK(forward_create_ex(m, MAX_TOK, &o, &f) == PAGODA_ERR_INVALID && !f && strstr(pagoda_last_error(), "receive"),
          "no receive hook: %s", pagoda_last_error());
    o = (pg_forward_opts){.pp_l0 = 0, .pp_l1 = 1, .pp_send = pipe_send, .n_gpu_layers = 1};
    CHECK(forward_create_ex(m, MAX_TOK, &o, &f) == PAGODA_ERR_UNSUPPORTED && !f && strstr(pagoda_last_error(), "CPU only"),
          "GPU layers: %s", pagoda_last_error());
out:
    forward_kv_destroy(whole_kv);
    forward_destroy(whole);
    free(want), free(got), free(want_h), free(got_h), free(pipe.x);
    model_free(m);
}

int main(void) {
    const char *shared = test_shared_dir();
    if (!shared) TEST_SKIP("../shared absent: no model to split");
    static const char *const names[] = {"llama", "qwen3", "starcoder2", "gpt_bigcode"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char p[1024];
        snprintf(p, sizeof p, "%s/fixtures/hf/%s", shared, names[i]);
        check_model(p);
    }
    TEST_DONE();
}
