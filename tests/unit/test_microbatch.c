/* Micro-batches of a step (src/engine/microbatch.c): for random batches (sequence lengths, logits
 * and hidden masks or none) the micro-batches, read back token by token, must be the step: every
 * token once and in order, with its sequence's block table and adapter, its position, whether it
 * gives logits or a hidden row, and each piece's row offsets equal to the rows before it; cuts
 * fall between sequences when there are enough of them; there are as many micro-batches as asked,
 * within n_tok / min_tokens; the same input always gives the same cut. */
#include <stdbool.h>
#include <string.h>

#include "engine/microbatch.h"
#include "test_util.h"

enum { MAX_SEQ = 40, MAX_TOK = 40 * 30, MAX_MB = 8 };

/* token t of b: does it give a logits row / a hidden row (forward_out_rows' rules) */
static bool wants_logits(const pg_batch *b, int32_t s, int32_t t) {
    if (b->hidden_mask && b->hidden_mask[t]) return false;
    return b->logits_mask ? b->logits_mask[t] != 0 : t == b->seq_start[s + 1] - 1;
}

static void test_case(unsigned long long *rng) {
    static int32_t tokens[MAX_TOK], seq_start[MAX_SEQ + 1], pos0[MAX_SEQ], nb[MAX_SEQ], adapter[MAX_SEQ];
    static uint8_t lmask[MAX_TOK], hmask[MAX_TOK], mask_scratch[MAX_TOK];
    static const int32_t *tables[MAX_SEQ];
    static int32_t ss[MAX_TOK + 2 * MAX_MB], sp[MAX_TOK + MAX_MB];
    static int32_t seq_of[MAX_TOK], pos_of[MAX_TOK];
    static microbatch mb[MAX_MB], mb2[MAX_MB];
    microbatch_scratch scr = {.seq_start = ss, .seq_pos0 = sp, .mask = mask_scratch};
    int32_t n_seq = 1 + (int32_t)(test_rand_u64(rng) % (test_rand_u64(rng) % 2 ? 3 : MAX_SEQ)), n_tok = 0;
    seq_start[0] = 0;
    for (int32_t s = 0; s < n_seq; s++) {
        int32_t len = test_rand_u64(rng) % 3 ? 1 + (int32_t)(test_rand_u64(rng) % 30) : 1;
        pos0[s] = (int32_t)(test_rand_u64(rng) % 100), nb[s] = s, adapter[s] = s, tables[s] = tokens + s;
        seq_start[s + 1] = seq_start[s] + len;
        for (int32_t t = seq_start[s]; t < seq_start[s + 1]; t++) seq_of[t] = s, pos_of[t] = pos0[s] + t - seq_start[s];
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
    int32_t max_mb = 1 + (int32_t)(test_rand_u64(rng) % MAX_MB), min_tok = (int32_t)(test_rand_u64(rng) % 20);
    int32_t n = microbatch_split(&b, max_mb, min_tok, &scr, mb);
    int32_t want = max_mb < n_tok ? max_mb : n_tok;
    if (min_tok > 0 && n_tok / min_tok < want) want = n_tok / min_tok;
    if (want < 1) want = 1;
    CHECK(n == want, "%d micro-batches, wanted %d (max %d, min tokens %d, %d seqs, %d tokens)", n, want, max_mb,
          min_tok, n_seq, n_tok);
    int32_t t_next = 0, outs = 0, hids = 0;
    for (int32_t k = 0; k < n && !g_test_failures; k++) {
        const microbatch *m = &mb[k];
        const pg_batch *p = &m->b;
        CHECK(p->n_seq > 0 && p->n_tok > 0 && m->t0 == t_next && p->tokens == tokens + m->t0, "micro-batch %d at %d",
              k, m->t0);
        CHECK(m->out0 == outs && m->hid0 == hids, "micro-batch %d: rows %d/%d, wanted %d/%d", k, m->out0, m->hid0, outs,
              hids);
        CHECK(p->seq_start[0] == 0 && p->seq_start[p->n_seq] == p->n_tok, "micro-batch %d: seq_start", k);
        if (n_seq >= n) /* enough sequences: whole ones */
            CHECK(seq_start[m->s0] == m->t0, "micro-batch %d starts inside sequence %d", k, m->s0);
        for (int32_t s = 0; s < p->n_seq; s++) {
            CHECK(p->seq_start[s + 1] > p->seq_start[s], "micro-batch %d: empty sequence %d", k, s);
            int32_t g = m->s0 + s;
            CHECK(p->block_tables[s] == tables[g] && p->n_blocks[s] == nb[g] && p->seq_adapter[s] == adapter[g],
                  "micro-batch %d sequence %d is step sequence %d", k, s, g);
            for (int32_t i = p->seq_start[s]; i < p->seq_start[s + 1]; i++) {
                int32_t t = m->t0 + i;
                CHECK(seq_of[t] == g && p->seq_pos0[s] + (i - p->seq_start[s]) == pos_of[t], "token %d: sequence %d, "
                      "position %d", t, g, p->seq_pos0[s] + (i - p->seq_start[s]));
                bool h = p->hidden_mask && p->hidden_mask[i], o = wants_logits(p, s, i);
                CHECK(h == (b.hidden_mask && hmask[t]) && o == wants_logits(&b, seq_of[t], t), "token %d: rows", t);
                outs += o, hids += h;
            }
        }
        t_next += p->n_tok;
    }
    CHECK(t_next == n_tok, "the micro-batches cover %d of %d tokens", t_next, n_tok);
    /* the same cut every time (every rank cuts its copy of the step) */
    static int32_t ss2[MAX_TOK + 2 * MAX_MB], sp2[MAX_TOK + MAX_MB];
    static uint8_t mask2[MAX_TOK];
    microbatch_scratch scr2 = {.seq_start = ss2, .seq_pos0 = sp2, .mask = mask2};
    CHECK(microbatch_split(&b, max_mb, min_tok, &scr2, mb2) == n, "same count");
    for (int32_t k = 0; k < n; k++) CHECK(mb2[k].t0 == mb[k].t0 && mb2[k].b.n_seq == mb[k].b.n_seq, "same cut %d", k);
}

int main(void) {
    unsigned long long rng = 7;
    for (int i = 0; i < 20000 && !g_test_failures; i++) test_case(&rng);
    int32_t tok[8] = {0}, st[9], pos[8] = {0}, nbl[8] = {0}, ss[32], sp[32];
    uint8_t mask[8];
    microbatch_scratch scr = {.seq_start = ss, .seq_pos0 = sp, .mask = mask};
    const int32_t *tab[8] = {0};
    for (int i = 0; i <= 8; i++) st[i] = i;
    /* equal sequences split evenly: 8 decode tokens in 4 micro-batches of 2 */
    pg_batch b = {.n_tok = 8, .tokens = tok, .n_seq = 8, .seq_start = st, .seq_pos0 = pos, .block_tables = tab,
                  .n_blocks = nbl};
    microbatch mb[4];
    CHECK(microbatch_split(&b, 4, 1, &scr, mb) == 4, "4 micro-batches");
    for (int k = 0; k < 4; k++) CHECK(mb[k].b.n_seq == 2 && mb[k].out0 == 2 * k, "micro-batch %d of 2", k);
    /* too few tokens for the minimum: the step goes whole */
    CHECK(microbatch_split(&b, 4, 64, &scr, mb) == 1 && mb[0].b.n_tok == 8 && mb[0].b.seq_start == st, "whole");
    /* one prompt of 8 tokens from position 5 in 2 pieces: 5..8, then 9..12 with the only logits row */
    int32_t one[2] = {0, 8}, p5 = 5;
    b = (pg_batch){.n_tok = 8, .tokens = tok, .n_seq = 1, .seq_start = one, .seq_pos0 = &p5, .block_tables = tab,
                   .n_blocks = nbl};
    CHECK(microbatch_split(&b, 2, 4, &scr, mb) == 2, "2 pieces");
    CHECK(mb[0].b.n_tok == 4 && mb[0].b.seq_pos0[0] == 5 && !mb[0].b.logits_mask[3], "first piece");
    CHECK(mb[1].b.n_tok == 4 && mb[1].b.seq_pos0[0] == 9 && mb[1].b.logits_mask[3] && mb[1].out0 == 0, "second piece");
    TEST_DONE();
}
