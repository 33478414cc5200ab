/* Micro-batches of a step (microbatch.h). */
#include "engine/microbatch.h"

#include <stdbool.h>
#include <stddef.h>

/* logits rows and hidden rows of tokens [t0, t1) of b (the rules of forward_out_rows) */
static void count_rows(const pg_batch *b, int32_t s0, int32_t s1, int32_t *n_out, int32_t *n_hid) {
    int32_t no = 0, nh = 0;
    for (int32_t s = s0; s < s1; s++)
        for (int32_t t = b->seq_start[s]; t < b->seq_start[s + 1]; t++)
            if (b->hidden_mask && b->hidden_mask[t]) nh++;
            else if (b->logits_mask ? b->logits_mask[t] != 0 : t == b->seq_start[s + 1] - 1) no++;
    *n_out = no, *n_hid = nh;
}

int32_t microbatch_split(const pg_batch *b, int32_t max_mb, int32_t min_tokens, int32_t *seq_start, microbatch *mb) {
    int32_t n = max_mb;
    if (min_tokens > 0 && b->n_tok / min_tokens < n) n = b->n_tok / min_tokens;
    if (b->n_seq < n) n = b->n_seq;
    if (n <= 1) {
        mb[0] = (microbatch){.b = *b};
        return 1;
    }
    /* cut after the sequence that reaches the next share of the tokens, leaving a sequence for
       each micro-batch still to come */
    int32_t k = 0, s0 = 0, out0 = 0, hid0 = 0;
    int32_t *ss = seq_start;
    for (int32_t s = 0; s < b->n_seq && k < n; s++) {
        int64_t want = (int64_t)b->n_tok * (k + 1) / n;
        bool last = k == n - 1, cut = last ? s == b->n_seq - 1
                                           : b->seq_start[s + 1] >= want || b->n_seq - (s + 1) == n - (k + 1);
        if (!cut) continue;
        int32_t ns = s + 1 - s0, t0 = b->seq_start[s0];
        for (int32_t i = 0; i <= ns; i++) ss[i] = b->seq_start[s0 + i] - t0;
        microbatch *m = &mb[k++];
        *m = (microbatch){.s0 = s0, .t0 = t0, .out0 = out0, .hid0 = hid0};
        m->b = (pg_batch){.n_tok = b->seq_start[s + 1] - t0, .tokens = b->tokens + t0, .n_seq = ns, .seq_start = ss,
                          .seq_pos0 = b->seq_pos0 + s0, .block_tables = b->block_tables + s0,
                          .n_blocks = b->n_blocks + s0, .logits_mask = b->logits_mask ? b->logits_mask + t0 : NULL,
                          .seq_adapter = b->seq_adapter ? b->seq_adapter + s0 : NULL,
                          .hidden_mask = b->hidden_mask ? b->hidden_mask + t0 : NULL};
        int32_t no, nh;
        count_rows(b, s0, s + 1, &no, &nh);
        out0 += no, hid0 += nh;
        ss += ns + 1, s0 = s + 1;
    }
    return k;
}
