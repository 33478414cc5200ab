/* Micro-batches of a step (microbatch.h). */
#include "engine/microbatch.h"

#include <stdbool.h>
#include <stddef.h>

/* logits rows and hidden rows among tokens [0, t_end) of b (the rules of forward_out_rows) */
static void count_rows(const pg_batch *b, int32_t t_end, int32_t *n_out, int32_t *n_hid) {
    int32_t no = 0, nh = 0;
    for (int32_t s = 0; s < b->n_seq && b->seq_start[s] < t_end; s++)
        for (int32_t t = b->seq_start[s]; t < b->seq_start[s + 1] && t < t_end; t++)
            if (b->hidden_mask && b->hidden_mask[t]) nh++;
            else if (b->logits_mask ? b->logits_mask[t] != 0 : t == b->seq_start[s + 1] - 1) no++;
    *n_out = no, *n_hid = nh;
}

int32_t microbatch_split(const pg_batch *b, int32_t max_mb, int32_t min_tokens, const microbatch_scratch *scratch,
                         microbatch *mb) {
    int32_t n = max_mb;
    if (min_tokens > 0 && b->n_tok / min_tokens < n) n = b->n_tok / min_tokens;
    if (b->n_tok < n) n = b->n_tok;
    if (n <= 1) {
        mb[0] = (microbatch){.b = *b};
        return 1;
    }
    /* where each micro-batch ends: with enough sequences, after the sequence that reaches the
       next share of the tokens (leaving a sequence for each micro-batch still to come); else at
       the share itself */
    int32_t end[64 + 1], k = 0;
    if (n > 64) n = 64;
    if (b->n_seq >= n) {
        for (int32_t s = 0; s < b->n_seq && k < n - 1; s++) {
            int64_t want = (int64_t)b->n_tok * (k + 1) / n;
            if (b->seq_start[s + 1] >= want || b->n_seq - (s + 1) == n - (k + 1)) end[k++] = b->seq_start[s + 1];
        }
    } else {
        for (; k < n - 1; k++) end[k] = (int32_t)((int64_t)b->n_tok * (k + 1) / n);
    }
    end[n - 1] = b->n_tok;
    /* a piece that ends inside a sequence must not take that token as the sequence's last: the
       default mask (each sequence's last token) spelled out */
    const uint8_t *lmask = b->logits_mask;
    if (!lmask && b->n_seq < n) {
        uint8_t *m = scratch->mask;
        for (int32_t s = 0; s < b->n_seq; s++)
            for (int32_t t = b->seq_start[s]; t < b->seq_start[s + 1]; t++) m[t] = t == b->seq_start[s + 1] - 1;
        lmask = m;
    }
    int32_t *ss = scratch->seq_start, *p0 = scratch->seq_pos0, s = 0, t0 = 0;
    for (k = 0; k < n; k++) {
        int32_t t1 = end[k];
        while (b->seq_start[s + 1] <= t0) s++; /* the sequence holding token t0 */
        int32_t s0 = s, ns = 0;
        for (int32_t q = s0; q < b->n_seq && b->seq_start[q] < t1; q++, ns++) {
            int32_t a = b->seq_start[q] > t0 ? b->seq_start[q] : t0;
            ss[ns] = a - t0;
            p0[ns] = b->seq_pos0[q] + (a - b->seq_start[q]);
        }
        ss[ns] = t1 - t0;
        microbatch *m = &mb[k];
        *m = (microbatch){.s0 = s0, .t0 = t0};
        count_rows(b, t0, &m->out0, &m->hid0);
        m->b = (pg_batch){.n_tok = t1 - t0, .tokens = b->tokens + t0, .n_seq = ns, .seq_start = ss, .seq_pos0 = p0,
                          .block_tables = b->block_tables + s0, .n_blocks = b->n_blocks + s0,
                          .logits_mask = lmask ? lmask + t0 : NULL,
                          .seq_adapter = b->seq_adapter ? b->seq_adapter + s0 : NULL,
                          .hidden_mask = b->hidden_mask ? b->hidden_mask + t0 : NULL};
        ss += ns + 1, p0 += ns, t0 = t1;
    }
    return n;
}
