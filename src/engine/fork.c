/* n > 1: a request's choices share its prompt. The prompt runs once, as choice 0's sequence;
 * when it is through, the other choices fork off it (sharing every KV block; a shared partial
 * block is copied on its next write) and each choice draws its first token, with its own
 * sampler, from the prompt's last logits row. */
#include "engine/engine_internal.h"

void engine_fork_and_sample(pagoda_engine *e, sched_seq *q, const float *row) {
    choice *ch0 = q->owner;
    request *r = ch0->r;
    r->forked = 1;
    for (int32_t j = 1; j < r->p.n; j++) {
        choice *cj = &r->choices[j];
        if (cj->finish != PAGODA_FINISH_NONE) continue;
        if (sched_fork(e->sched, q, r->id, cj, &cj->seq)) {
            engine_finish_choice(e, cj, PAGODA_FINISH_ERROR, "out of memory", 0);
            continue;
        }
        cj->counted = 1;
    }
    int32_t n = r->p.n;
    for (int32_t j = n - 1; j >= 0; j--) { /* the request may be freed by its last choice */
        choice *cj = &r->choices[j];
        int last = r->n_live == 1 && cj->finish == PAGODA_FINISH_NONE;
        if (cj->finish == PAGODA_FINISH_NONE && cj->seq) {
            pick pk;
            int32_t pos = cj->seq->n_tokens;
            engine_pick_token(e, cj, row, e->ws[0], &pk);
            engine_emit_token(e, cj, pk.token, pos, &pk, 1);
        }
        if (last) break;
    }
}
