/* The host side of a GPU forward step (src/model/gpu_batch.c), on any machine: metadata the
 * kernels read, padding of decode steps for CUDA graph replay, and the launch shape, against a
 * direct computation from the batch. */
#include <stdlib.h>
#include <string.h>

#include "backend/cuda_batch.h"
#include "test_util.h"

#define MAX_TOK 640
#define MAX_CTX 4096
#define BS 16
#define STRIDE (MAX_CTX / BS)

static int32_t meta[GPU_META_N * MAX_TOK], btab[MAX_TOK * STRIDE];

typedef struct {
    int32_t n_seq, n_tok;
    int32_t tokens[MAX_TOK], seq_start[MAX_TOK + 1], pos0[MAX_TOK], n_blocks[MAX_TOK];
    int32_t tables[MAX_TOK][STRIDE];
    const int32_t *tab_ptr[MAX_TOK];
    int32_t out_rows[MAX_TOK], n_out;
} batch_buf;

/* n_seq sequences with lens[s] new tokens after pos0s[s] cached ones; random distinct blocks. */
static pg_batch make_batch(batch_buf *bb, int32_t n_seq, const int32_t *lens, const int32_t *pos0s, unsigned long long *rng) {
    bb->n_seq = n_seq, bb->n_tok = 0, bb->n_out = 0;
    for (int32_t s = 0; s < n_seq; s++) {
        bb->seq_start[s] = bb->n_tok;
        bb->pos0[s] = pos0s[s];
        int32_t last = pos0s[s] + lens[s] - 1;
        bb->n_blocks[s] = last / BS + 1 + (int32_t)(test_rand_u64(rng) % 2); /* sometimes one spare block */
        if (bb->n_blocks[s] > STRIDE) bb->n_blocks[s] = STRIDE;
        for (int32_t j = 0; j < bb->n_blocks[s]; j++) bb->tables[s][j] = (int32_t)(test_rand_u64(rng) % 100000);
        bb->tab_ptr[s] = bb->tables[s];
        for (int32_t i = 0; i < lens[s]; i++) bb->tokens[bb->n_tok++] = (int32_t)(test_rand_u64(rng) % 32000);
        bb->out_rows[bb->n_out++] = bb->n_tok - 1; /* the last token of each sequence wants logits */
    }
    bb->seq_start[n_seq] = bb->n_tok;
    return (pg_batch){.n_tok = bb->n_tok, .tokens = bb->tokens, .n_seq = n_seq, .seq_start = bb->seq_start,
                      .seq_pos0 = bb->pos0, .block_tables = bb->tab_ptr, .n_blocks = bb->n_blocks, .logits_mask = NULL};
}

/* Every field against the batch, padding included. */
static void check_pack(const batch_buf *bb, const gpu_step_shape *sh, const char *what) {
    int bad = 0;
    for (int32_t s = 0; s < bb->n_seq; s++) {
        for (int32_t t = bb->seq_start[s]; t < bb->seq_start[s + 1]; t++) {
            int32_t p = bb->pos0[s] + t - bb->seq_start[s];
            int32_t slot = bb->tables[s][p / BS] * BS + p % BS;
            bad += meta[GPU_META_TOK * MAX_TOK + t] != bb->tokens[t] || meta[GPU_META_POS * MAX_TOK + t] != p ||
                   meta[GPU_META_POSC * MAX_TOK + t] != p || meta[GPU_META_SEQ * MAX_TOK + t] != s ||
                   meta[GPU_META_SLOT * MAX_TOK + t] != slot;
        }
        bad += memcmp(btab + (size_t)s * STRIDE, bb->tables[s], sizeof(int32_t) * (size_t)bb->n_blocks[s]) != 0;
    }
    for (int32_t t = bb->n_tok; t < sh->n_tok; t++)
        bad += meta[GPU_META_POS * MAX_TOK + t] != -1 || meta[GPU_META_SLOT * MAX_TOK + t] != -1 ||
               meta[GPU_META_TOK * MAX_TOK + t] != 0 || meta[GPU_META_POSC * MAX_TOK + t] != 0 ||
               meta[GPU_META_SEQ * MAX_TOK + t] != 0;
    for (int32_t i = 0; i < sh->n_rows; i++)
        bad += meta[GPU_META_ROW * MAX_TOK + i] != (i < bb->n_out ? bb->out_rows[i] : 0);
    CHECK(bad == 0, "%s: %d fields differ from the batch", what, bad);
}

int main(void) {
    /* buckets: the smallest listed size >= n, and powers of two for the context */
    int32_t prev = 0;
    for (int32_t n = 1; n <= 512; n++) {
        int32_t b = gpu_decode_bucket(n);
        CHECK(b >= n && b >= prev && b <= 2 * n + 8, "decode bucket of %d is %d", n, b);
        prev = b;
    }
    CHECK(gpu_decode_bucket(513) == -1, "no bucket beyond 512");
    for (int32_t need = 1; need <= MAX_CTX; need += 37) {
        int32_t c = gpu_ctx_bucket(need, MAX_CTX);
        CHECK(c >= need && c <= MAX_CTX && (c == MAX_CTX || (c >= 256 && (c & (c - 1)) == 0)) && (c == 256 || c < 2 * need),
              "ctx bucket of %d is %d", need, c);
    }

    unsigned long long rng = 42;
    static batch_buf bb;
    gpu_step_shape sh;
    int32_t lens[MAX_TOK], pos0s[MAX_TOK];
    /* decode steps: padded, replayable, graph keys few */
    int32_t keys[256][2], n_keys = 0;
    for (int it = 0; it < 2000; it++) {
        int32_t n = 1 + (int32_t)(test_rand_u64(&rng) % 300);
        for (int32_t s = 0; s < n; s++) lens[s] = 1, pos0s[s] = (int32_t)(test_rand_u64(&rng) % (MAX_CTX - 1));
        pg_batch b = make_batch(&bb, n, lens, pos0s, &rng);
        CHECK(gpu_batch_pack(&b, BS, bb.out_rows, bb.n_out, true, MAX_TOK, MAX_CTX, STRIDE, meta, btab, &sh) == PAGODA_OK,
              "pack: %s", pagoda_last_error());
        int32_t need = 0;
        for (int32_t s = 0; s < n; s++) need = pos0s[s] + 1 > need ? pos0s[s] + 1 : need;
        CHECK(sh.replay && sh.n_tok == gpu_decode_bucket(n) && sh.n_rows == sh.n_tok && sh.ctx == gpu_ctx_bucket(need, MAX_CTX),
              "decode of %d: replay %d, %d tokens, %d rows, ctx %d", n, sh.replay, sh.n_tok, sh.n_rows, sh.ctx);
        check_pack(&bb, &sh, "decode");
        int found = 0;
        for (int32_t k = 0; k < n_keys; k++) found |= keys[k][0] == sh.n_tok && keys[k][1] == sh.ctx;
        if (!found && n_keys < 256) keys[n_keys][0] = sh.n_tok, keys[n_keys][1] = sh.ctx, n_keys++;
    }
    printf("2000 decode steps of 1-300 sequences at positions < %d: %d graph shapes\n", MAX_CTX, n_keys);
    CHECK(n_keys <= 14 * 5, "%d graph shapes: replay would rarely find a captured graph", n_keys);

    /* mixed steps (prefill chunks beside decodes): exact size, no padding, no replay */
    for (int it = 0; it < 500; it++) {
        int32_t n = 1 + (int32_t)(test_rand_u64(&rng) % 20), total = 0;
        for (int32_t s = 0; s < n; s++) {
            lens[s] = 1 + (int32_t)(test_rand_u64(&rng) % 30);
            if (total + lens[s] > MAX_TOK) lens[s] = 1;
            total += lens[s];
            pos0s[s] = (int32_t)(test_rand_u64(&rng) % (MAX_CTX - lens[s]));
        }
        pg_batch b = make_batch(&bb, n, lens, pos0s, &rng);
        bool any_long = total > n;
        CHECK(gpu_batch_pack(&b, BS, bb.out_rows, bb.n_out, true, MAX_TOK, MAX_CTX, STRIDE, meta, btab, &sh) == PAGODA_OK,
              "pack: %s", pagoda_last_error());
        if (any_long) CHECK(!sh.replay && sh.n_tok == total && sh.n_rows == n, "mixed step padded or replayed");
        check_pack(&bb, &sh, "mixed");
    }

    /* replay off (hybrid runs, graphs disabled): never padded */
    for (int32_t s = 0; s < 5; s++) lens[s] = 1, pos0s[s] = 100 + s;
    pg_batch b = make_batch(&bb, 5, lens, pos0s, &rng);
    CHECK(gpu_batch_pack(&b, BS, bb.out_rows, bb.n_out, false, MAX_TOK, MAX_CTX, STRIDE, meta, btab, &sh) == PAGODA_OK &&
              !sh.replay && sh.n_tok == 5 && sh.ctx == 105,
          "replay off: %d tokens, ctx %d", sh.n_tok, sh.ctx);
    /* bad input: a position at the context limit, a batch over max tokens */
    pos0s[0] = MAX_CTX - 1, lens[0] = 2;
    b = make_batch(&bb, 1, lens, pos0s, &rng);
    CHECK(gpu_batch_pack(&b, BS, bb.out_rows, bb.n_out, true, MAX_TOK, MAX_CTX, STRIDE, meta, btab, &sh) == PAGODA_ERR_INVALID,
          "position %d accepted with a context of %d", MAX_CTX, MAX_CTX);
    pos0s[0] = 0, lens[0] = MAX_TOK + 0;
    b = make_batch(&bb, 1, lens, pos0s, &rng);
    CHECK(gpu_batch_pack(&b, BS, bb.out_rows, bb.n_out, true, MAX_TOK - 1, MAX_CTX, STRIDE, meta, btab, &sh) == PAGODA_ERR_INVALID,
          "a batch over max tokens accepted");
    TEST_DONE();
}
