/* Micro-batches of a step (src/engine/microbatch.c): for random batches (sequence lengths, logits
 * and hidden masks) the micro-batches must be contiguous runs of whole sequences that cover the
 * batch in order, each non-empty, no more than n_tok / min_tokens of them, with
 * rebased seq_start arrays, views at the right offsets, and logits/hidden row offsets equal to the
 * rows of the step before them; and the same input must always give the same cut. */
#include <stdbool.h>
#include <string.h>

#include "engine/microbatch.h"
#include "test_util.h"

enum { MAX_SEQ = 40, MAX_TOK = 40 * 30 };

static int32_t rows_before(const pg_batch *b, int32_t t_end, bool hidden) {
    int32_t n = 0;
    for (int32_t s = 0; s < b->n_seq; s++)
        for (int32_t t = b->seq_start[s]; t < b->seq_start[s + 1] && t < t_end; t++) {
            bool h = b->hidden_mask && b->hidden_mask[t];
            bool o = !h && (b->logits_mask ? b->logits_mask[t] != 0 : t == b->seq_start[s + 1] - 1);
            n += hidden ? h : o;
        }
    return n;
}

static void test_case(unsigned long long *rng) {
    static int32_t tokens[MAX_TOK], seq_start[MAX_SEQ + 1], pos0[MAX_SEQ], nb[MAX_SEQ], adapter[MAX_SEQ];
    static uint8_t lmask[MAX_TOK], hmask[MAX_TOK];
    static const int32_t *tables[MAX_SEQ];
    static int32_t ss[MAX_TOK + 64], ss2[MAX_TOK + 64];
    static microbatch mb[64], mb2[64];
    int32_t n_seq = 1 + (int32_t)(test_rand_u64(rng) % MAX_SEQ), n_tok = 0;
    seq_start[0] = 0;
    for (int32_t s = 0; s < n_seq; s++) {
        int32_t len = test_rand_u64(rng) % 3 ? 1 : 1 + (int32_t)(test_rand_u64(rng) % 30);
        pos0[s] = (int32_t)(test_rand_u64(rng) % 100), nb[s] = s, adapter[s] = s, tables[s] = tokens + s;
        seq_start[s + 1] = seq_start[s] + len;
        n_tok += len;
    }
    for (int32_t t = 0; t < n_tok; t++) {
        tokens[t] = t;
        hmask[t] = test_rand_u64(rng) % 5 == 0;
        lmask[t] = !hmask[t] && test_rand_u64(rng) % 2;
    }
    int masks = (int)(test_rand_u64(rng) % 4);
    pg_batch b = {.n_tok = n_tok, .tokens = tokens, .n_seq = n_seq, .seq_start = seq_start, .seq_pos0 = pos0,
                  .block_tables = tables, .n_blocks = nb, .logits_mask = masks & 1 ? lmask : NULL,
                  .seq_adapter = adapter, .hidden_mask = masks & 2 ? hmask : NULL};
    int32_t max_mb = 1 + (int32_t)(test_rand_u64(rng) % 8), min_tok = (int32_t)(test_rand_u64(rng) % 20);
    int32_t n = microbatch_split(&b, max_mb, min_tok, ss, mb);
    int32_t want = max_mb < n_seq ? max_mb : n_seq;
    if (min_tok > 0 && n_tok / min_tok < want) want = n_tok / min_tok;
    if (want < 1) want = 1;
    CHECK(n == want, "%d micro-batches, wanted %d (max %d, min tokens %d, %d seqs, %d tokens)", n, want, max_mb,
          min_tok, n_seq, n_tok);
    int32_t s_next = 0, t_next = 0;
    for (int32_t k = 0; k < n; k++) {
        const microbatch *m = &mb[k];
        CHECK(m->b.n_seq > 0 && m->s0 == s_next && m->t0 == t_next, "micro-batch %d starts at seq %d, token %d", k,
              m->s0, m->t0);
        CHECK(m->b.seq_start[0] == 0 && m->b.seq_start[m->b.n_seq] == m->b.n_tok, "micro-batch %d: seq_start", k);
        for (int32_t s = 0; s < m->b.n_seq; s++)
            CHECK(m->b.seq_start[s + 1] - m->b.seq_start[s] == seq_start[m->s0 + s + 1] - seq_start[m->s0 + s],
                  "micro-batch %d seq %d length", k, s);
        CHECK(m->b.tokens[0] == m->t0 && m->b.seq_pos0 == pos0 + m->s0 && m->b.block_tables == tables + m->s0 &&
              m->b.n_blocks == nb + m->s0 && m->b.seq_adapter == adapter + m->s0, "micro-batch %d views", k);
        CHECK((m->b.logits_mask == NULL) == (b.logits_mask == NULL) && (!b.logits_mask || m->b.logits_mask == lmask + m->t0),
              "micro-batch %d logits mask", k);
        CHECK((m->b.hidden_mask == NULL) == (b.hidden_mask == NULL) && (!b.hidden_mask || m->b.hidden_mask == hmask + m->t0),
              "micro-batch %d hidden mask", k);
        CHECK(m->out0 == rows_before(&b, m->t0, false) && m->hid0 == rows_before(&b, m->t0, true),
              "micro-batch %d: rows %d/%d before it", k, m->out0, m->hid0);
        s_next += m->b.n_seq, t_next += m->b.n_tok;
    }
    CHECK(s_next == n_seq && t_next == n_tok, "the micro-batches cover %d of %d seqs, %d of %d tokens", s_next, n_seq,
          t_next, n_tok);
    /* the same cut every time (every rank cuts its copy of the step) */
    CHECK(microbatch_split(&b, max_mb, min_tok, ss2, mb2) == n, "same count");
    for (int32_t k = 0; k < n; k++) CHECK(mb2[k].s0 == mb[k].s0 && mb2[k].b.n_seq == mb[k].b.n_seq, "same cut %d", k);
}

int main(void) {
    unsigned long long rng = 7;
    for (int i = 0; i < 20000 && !g_test_failures; i++) test_case(&rng);
    /* equal sequences split evenly: 8 decode tokens in 4 micro-batches of 2 */
    int32_t tok[8] = {0}, st[9], pos[8] = {0}, nbl[8] = {0}, ss[16];
    const int32_t *tab[8] = {0};
    for (int i = 0; i <= 8; i++) st[i] = i;
    pg_batch b = {.n_tok = 8, .tokens = tok, .n_seq = 8, .seq_start = st, .seq_pos0 = pos, .block_tables = tab,
                  .n_blocks = nbl};
    microbatch mb[4];
    CHECK(microbatch_split(&b, 4, 1, ss, mb) == 4, "4 micro-batches");
    for (int k = 0; k < 4; k++) CHECK(mb[k].b.n_seq == 2 && mb[k].out0 == 2 * k, "micro-batch %d of 2", k);
    /* too few tokens for the minimum: the step goes whole */
    CHECK(microbatch_split(&b, 4, 64, ss, mb) == 1 && mb[0].b.n_tok == 8 && mb[0].b.seq_start == st, "whole");
    TEST_DONE();
}
