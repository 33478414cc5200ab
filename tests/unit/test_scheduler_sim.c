/* Simulation of the scheduler and KV block pool with a fake model, thousands of random steps:
 * arrivals with shared prefixes, cancellations, forks (n > 1), preemption under a tiny KV
 * budget. The fake model's "KV cache" records which token was written at which position of
 * which block; every step it reads each sequence's whole context back through its block table
 * and checks it equals the sequence's tokens — so a wrong prefix hit, a missed copy-on-write or
 * a reused block still in use shows up as wrong context. Next tokens are a function of the
 * context, so outputs must equal a one-at-a-time reference. Invariants are checked every step:
 * ref counts equal users, no leaked or double-freed block, every request ends. */
#include <stdint.h>
#include <string.h>

#include "core/log.h"
#include "sched/scheduler.h"
#include "test_util.h"

enum { VOCAB = 50 };

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(uint32_t n) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

/* The fake model's next token: a function of the whole context. */
static int32_t next_token(const int32_t *ctx, int32_t n, uint64_t salt) {
    uint64_t h = 1469598103934665603ull ^ salt;
    for (int32_t i = 0; i < n; i++) h = (h ^ (uint64_t)ctx[i]) * 1099511628211ull;
    return (int32_t)(h % VOCAB);
}

typedef struct {
    sched_seq *q;
    int32_t max_new, n_new_done;
    int32_t ref_tokens[1024]; /* what this sequence must produce: computed one at a time */
    int32_t n_ref;
    uint64_t salt; /* forks sample differently from their parent (as with temperature > 0) */
    int live;
} sim_seq;

typedef struct {
    int32_t n_blocks, bs, max_len;
    int32_t *kv;            /* [n_blocks][bs] token written at each slot (-1: never) */
    int32_t *kv_pos;        /* [n_blocks][bs] position written there */
} fake_kv;

static int run_sim(int32_t n_blocks, int32_t bs, int32_t max_batch, int32_t max_seqs, int prefix_caching,
                   int n_steps, int arrival_pct, int fork_pct, int cancel_pct) {
    kv_pool *pool;
    scheduler *s;
    CHECK(kv_pool_create(n_blocks, bs, &pool) == PAGODA_OK, "pool");
    sched_config c = {.max_batch_tokens = max_batch, .max_seqs = max_seqs, .prefix_caching = prefix_caching};
    CHECK(sched_create(&c, pool, &s) == PAGODA_OK, "sched");
    fake_kv kv = {n_blocks, bs, n_blocks * bs < 1000 ? n_blocks * bs : 1000, calloc((size_t)n_blocks * bs, 4), calloc((size_t)n_blocks * bs, 4)};
    enum { MAXS = 4096 };
    static sim_seq seqs[MAXS];
    memset(seqs, 0, sizeof seqs);
    int32_t n_seqs = 0, n_done = 0, n_cancelled = 0, n_forks = 0;
    int32_t prefixes[4][64];
    for (int p = 0; p < 4; p++)
        for (int i = 0; i < 64; i++) prefixes[p][i] = (int32_t)rnd(VOCAB);
    uint64_t n_preempt = 0, n_cached_tokens = 0, n_prompt_tokens = 0, n_copies = 0;
    int32_t ctx[1024];
    int failures_before = g_test_failures;
    for (int step = 0; step < n_steps || sched_n_running(s) + sched_n_waiting(s) > 0; step++) {
        if (step > n_steps + 2000000) {
            CHECK(0, "requests never finished: %d running, %d waiting, %d of %d blocks free", sched_n_running(s),
                  sched_n_waiting(s), kv_pool_n_free(pool), n_blocks);
            break;
        }
        /* arrivals */
        if (step < n_steps && (int)rnd(100) < arrival_pct && n_seqs < MAXS - 8) {
            sim_seq *x = &seqs[n_seqs];
            int32_t len = 1 + (int32_t)rnd(kv.max_len / 2);
            int32_t shared = rnd(2) ? (int32_t)rnd(len < 64 ? len : 64) : 0;
            int p = (int)rnd(4);
            int32_t toks[1024];
            for (int32_t i = 0; i < len; i++) toks[i] = i < shared ? prefixes[p][i] : (int32_t)rnd(VOCAB);
            if (n_seqs > 0 && rnd(10) == 0) { /* the same prompt again: whole-prompt prefix hits */
                const sim_seq *o = &seqs[rnd((uint32_t)n_seqs)];
                len = o->q && o->n_ref ? o->n_ref - o->n_new_done : len;
                memcpy(toks, o->ref_tokens, (size_t)len * 4);
            }
            x->max_new = 1 + (int32_t)rnd((uint32_t)(kv.max_len - len));
            memcpy(x->ref_tokens, toks, (size_t)len * 4);
            x->n_ref = len;
            x->live = 1;
            CHECK(sched_add(s, (uint64_t)n_seqs, x, toks, len, 0, &x->q) == PAGODA_OK, "add");
            n_seqs++;
        }
        /* cancellations (running or waiting) */
        if ((int)rnd(100) < cancel_pct && n_seqs) {
            sim_seq *x = &seqs[rnd((uint32_t)n_seqs)];
            if (x->live) {
                sched_finish(s, x->q);
                x->live = 0, n_cancelled++;
            }
        }
        sched_plan plan;
        sched_schedule(s, &plan);
        n_preempt += (uint64_t)plan.n_preempted;
        CHECK(plan.n_tokens <= max_batch && plan.n_seqs <= max_seqs, "plan over budget: %d tokens %d seqs",
              plan.n_tokens, plan.n_seqs);
        /* execute: copies, then write K/V of the new tokens */
        for (int32_t i = 0; i < plan.n_copies; i++, n_copies++)
            for (int32_t j = 0; j < bs; j++) {
                kv.kv[plan.copies[i][1] * bs + j] = kv.kv[plan.copies[i][0] * bs + j];
                kv.kv_pos[plan.copies[i][1] * bs + j] = kv.kv_pos[plan.copies[i][0] * bs + j];
            }
        for (int32_t i = 0; i < plan.n_seqs; i++) {
            sched_seq *q = plan.seqs[i];
            CHECK(plan.n_new[i] >= 1, "seq %llu scheduled with %d tokens", (unsigned long long)q->id, plan.n_new[i]);
            if (q->n_computed == 0 || (q->n_cached && q->n_computed == q->n_cached)) {
                /* first chunk after admission: count prefix hits once per admission */
                n_cached_tokens += (uint64_t)q->n_cached;
                n_prompt_tokens += (uint64_t)q->n_tokens;
            }
            for (int32_t p = q->n_computed; p < q->n_computed + plan.n_new[i]; p++) {
                int32_t b = q->blocks[p / bs];
                kv.kv[b * bs + p % bs] = q->tokens[p];
                kv.kv_pos[b * bs + p % bs] = p;
            }
        }
        /* read every scheduled sequence's context back through its block table */
        for (int32_t i = 0; i < plan.n_seqs; i++) {
            sched_seq *q = plan.seqs[i];
            int32_t end = q->n_computed + plan.n_new[i];
            for (int32_t p = 0; p < end; p++) {
                int32_t b = q->blocks[p / bs];
                ctx[p] = kv.kv[b * bs + p % bs];
                if (ctx[p] != q->tokens[p] || kv.kv_pos[b * bs + p % bs] != p) {
                    CHECK(0, "step %d seq %llu: KV at position %d holds token %d (pos %d), expected %d", step,
                          (unsigned long long)q->id, p, ctx[p], kv.kv_pos[b * bs + p % bs], q->tokens[p]);
                    break;
                }
            }
        }
        sched_commit(s, &plan);
        for (int32_t i = 0; i < plan.n_seqs; i++) sched_publish(s, plan.seqs[i]);
        /* sample for sequences that caught up; maybe fork; finish */
        for (int32_t i = 0; i < plan.n_seqs; i++) {
            sched_seq *q = plan.seqs[i];
            sim_seq *x = q->owner;
            if (q->n_computed < q->n_tokens) continue;
            int32_t nq = 1;
            sched_seq *group[4] = {q};
            if (q->n_tokens == q->n_prompt && (int)rnd(100) < fork_pct && n_seqs < MAXS - 4) {
                int32_t k = 1 + (int32_t)rnd(3);
                for (int32_t f = 0; f < k; f++) {
                    sim_seq *y = &seqs[n_seqs];
                    *y = *x;
                    y->q = NULL;
                    y->salt = (uint64_t)n_seqs * 7919u;
                    CHECK(sched_fork(s, q, (uint64_t)n_seqs, y, &y->q) == PAGODA_OK, "fork");
                    group[nq++] = y->q;
                    n_seqs++, n_forks++;
                }
            }
            for (int32_t g = 0; g < nq; g++) {
                sched_seq *r = group[g];
                sim_seq *z = r->owner;
                int32_t t = next_token(r->tokens, r->n_tokens, z->salt);
                CHECK(z->n_ref == r->n_tokens, "reference length");
                z->ref_tokens[z->n_ref] = next_token(z->ref_tokens, z->n_ref, z->salt);
                z->n_ref++;
                CHECK(z->ref_tokens[z->n_ref - 1] == t, "seq %llu token differs from one-at-a-time", (unsigned long long)r->id);
                z->n_new_done++;
                if (z->n_new_done >= z->max_new || r->n_tokens + 1 >= kv.max_len) {
                    sched_finish(s, r);
                    z->live = 0, n_done++;
                } else {
                    CHECK(sched_append(s, r, t) == PAGODA_OK, "append");
                }
            }
        }
        if (sched_check(s)) {
            CHECK(0, "step %d: %s", step, pagoda_last_error());
            break;
        }
        if (g_test_failures > failures_before) break;
    }
    CHECK(kv_pool_n_free(pool) == n_blocks, "after all requests end %d of %d blocks are free", kv_pool_n_free(pool), n_blocks);
    int32_t n_live = 0;
    for (int32_t i = 0; i < n_seqs; i++) n_live += seqs[i].live;
    CHECK(n_live == 0, "%d requests never finished", n_live);
    CHECK(n_done + n_cancelled == n_seqs, "finished %d + cancelled %d != %d", n_done, n_cancelled, n_seqs);
    printf("  %d blocks x %d, budget %d tokens/%d seqs, prefix cache %s: %d requests (%d forks), %d finished, %d cancelled, "
           "%llu preemptions, %llu copy-on-write, %llu/%llu prompt tokens from cache\n",
           n_blocks, bs, max_batch, max_seqs, prefix_caching ? "on" : "off", n_seqs, n_forks, n_done, n_cancelled,
           (unsigned long long)n_preempt, (unsigned long long)n_copies, (unsigned long long)n_cached_tokens,
           (unsigned long long)n_prompt_tokens);
    sched_destroy(s);
    kv_pool_destroy(pool);
    free(kv.kv), free(kv.kv_pos);
    return 0;
}

static void test_pool_basics(void) {
    kv_pool *p;
    CHECK(kv_pool_create(4, 2, &p) == PAGODA_OK, "create");
    int32_t t0[2] = {1, 2}, t1[2] = {3, 4};
    int32_t a = kv_pool_alloc(p), b = kv_pool_alloc(p);
    uint64_t ha = kv_block_hash(KV_ROOT_HASH, t0, 2), hb = kv_block_hash(ha, t1, 2);
    kv_pool_publish(p, a, ha, KV_ROOT_HASH, 0, t0);
    kv_pool_publish(p, b, hb, ha, 0, t1);
    CHECK(kv_pool_lookup(p, ha, KV_ROOT_HASH, 0, t0) == a, "lookup a");
    CHECK(kv_pool_lookup(p, hb, ha, 0, t1) == b, "lookup b");
    CHECK(kv_pool_lookup(p, hb, KV_ROOT_HASH, 0, t1) < 0, "wrong parent must miss");
    CHECK(kv_pool_lookup(p, ha, KV_ROOT_HASH, 0, t1) < 0, "same hash, other tokens must miss");
    CHECK(kv_pool_lookup(p, ha, KV_ROOT_HASH, 1, t0) < 0, "same hash and tokens, other adapter must miss");
    CHECK(kv_root_hash(0) == KV_ROOT_HASH && kv_root_hash(1) != KV_ROOT_HASH && kv_root_hash(1) != kv_root_hash(2),
          "adapters start different hash chains");
    kv_pool_unref(p, b), kv_pool_unref(p, a);
    CHECK(kv_pool_n_free(p) == 4 && kv_pool_n_cached(p) == 2, "freed blocks stay cached");
    CHECK(kv_pool_lookup(p, ha, KV_ROOT_HASH, 0, t0) == a, "cached after free");
    /* plain free blocks go first, then the least recently freed cached one (b before a) */
    int32_t c = kv_pool_alloc(p), d = kv_pool_alloc(p);
    CHECK(c != a && c != b && d != a && d != b, "plain free blocks first");
    CHECK(kv_pool_alloc(p) == b, "LRU: b was freed first");
    CHECK(kv_pool_lookup(p, hb, ha, 0, t1) < 0 && kv_pool_lookup(p, ha, KV_ROOT_HASH, 0, t0) == a, "evicted b only");
    CHECK(kv_pool_alloc(p) == a && kv_pool_alloc(p) == -1, "then a, then none");
    CHECK(kv_pool_check(p) == 0, "%s", pagoda_last_error());
    kv_pool_destroy(p);
}

/* Runs q's whole prompt (one step) and publishes it. */
static void run_prompt(scheduler *s, sched_seq *q) {
    sched_plan plan;
    sched_schedule(s, &plan);
    CHECK(plan.n_seqs == 1 && plan.seqs[0] == q && plan.n_new[0] == q->n_tokens, "prompt in one step");
    sched_commit(s, &plan);
    sched_publish(s, q);
}

/* The prefix cache is salted by the adapter id: the same prompt under another adapter shares no
 * block, under the same adapter it shares every full block but the last token's. */
static void test_adapter_salt(void) {
    kv_pool *pool;
    scheduler *s;
    CHECK(kv_pool_create(32, 4, &pool) == PAGODA_OK, "pool");
    sched_config c = {.max_batch_tokens = 64, .max_seqs = 4, .prefix_caching = 1};
    CHECK(sched_create(&c, pool, &s) == PAGODA_OK, "sched");
    int32_t toks[13];
    for (int i = 0; i < 13; i++) toks[i] = 3 * i + 1;
    sched_seq *a, *b, *d;
    CHECK(sched_add(s, 1, NULL, toks, 13, 7, &a) == PAGODA_OK, "add");
    run_prompt(s, a);
    CHECK(sched_add(s, 2, NULL, toks, 13, 8, &b) == PAGODA_OK, "add");
    run_prompt(s, b);
    CHECK(b->n_cached == 0, "other adapter reused %d cached tokens", b->n_cached);
    for (int i = 0; i < a->n_blocks; i++)
        for (int j = 0; j < b->n_blocks; j++) CHECK(a->blocks[i] != b->blocks[j], "adapters 7 and 8 share block %d", a->blocks[i]);
    CHECK(sched_add(s, 3, NULL, toks, 13, 7, &d) == PAGODA_OK, "add");
    sched_plan plan;
    sched_schedule(s, &plan);
    CHECK(d->n_cached == 12 && d->blocks[0] == a->blocks[0] && d->blocks[2] == a->blocks[2] && plan.n_new[0] == 1,
          "same adapter: %d tokens from the cache", d->n_cached);
    sched_commit(s, &plan);
    CHECK(sched_check(s) == 0, "%s", pagoda_last_error());
    sched_destroy(s);
    CHECK(kv_pool_n_free(pool) == 32, "blocks leaked");
    kv_pool_destroy(pool);
}

/* Speculation bookkeeping: drafts are computed with the sequence, rejected ones roll back their
 * blocks, and only accepted full blocks reach the prefix cache. */
static void test_draft_rollback(void) {
    kv_pool *pool;
    scheduler *s;
    CHECK(kv_pool_create(16, 4, &pool) == PAGODA_OK, "pool");
    sched_config c = {.max_batch_tokens = 64, .max_seqs = 4, .prefix_caching = 1};
    CHECK(sched_create(&c, pool, &s) == PAGODA_OK, "sched");
    int32_t toks[7] = {1, 2, 3, 4, 5, 6, 7}, drafts[6] = {20, 21, 22, 23, 24, 25};
    sched_seq *q;
    CHECK(sched_add(s, 1, NULL, toks, 7, 0, &q) == PAGODA_OK, "add");
    run_prompt(s, q); /* 7 computed: blocks 0 (published), 1 (partial) */
    CHECK(sched_append(s, q, 8) == PAGODA_OK && sched_propose(s, q, drafts, 6) == PAGODA_OK, "propose");
    sched_plan plan;
    sched_schedule(s, &plan);
    CHECK(plan.n_seqs == 1 && plan.n_new[0] == 7 && q->n_blocks == 4, "1 + 6 drafts planned: %d tokens, %d blocks",
          plan.n_new[0], q->n_blocks);
    sched_commit(s, &plan);
    /* before acceptance only blocks of accepted tokens may be published: [1..4], [5..8], not [20..23] */
    sched_publish(s, q);
    int32_t b1[4] = {5, 6, 7, 8}, b2[4] = {20, 21, 22, 23};
    uint64_t h0 = kv_block_hash(KV_ROOT_HASH, toks, 4), h1 = kv_block_hash(h0, b1, 4), h2 = kv_block_hash(h1, b2, 4);
    CHECK(q->n_published == 2, "published %d blocks before acceptance", q->n_published);
    CHECK(kv_pool_lookup(pool, h2, h1, 0, b2) < 0, "a block of unverified drafts entered the cache");
    int32_t rejected_block = q->blocks[3];
    sched_accept(s, q, 1); /* 20 accepted, 21.. rejected: 9 tokens, blocks 0..2 */
    CHECK(q->n_tokens == 9 && q->n_computed == 9 && q->n_blocks == 3 && q->n_draft == 0, "after accept: %d tokens, %d computed, %d blocks",
          q->n_tokens, q->n_computed, q->n_blocks);
    CHECK(kv_pool_ref_count(pool, rejected_block) == 0, "rejected block still referenced");
    sched_publish(s, q);
    CHECK(q->n_published == 2, "accepted blocks published: %d", q->n_published);
    CHECK(kv_pool_lookup(pool, h1, h0, 0, b1) == q->blocks[1], "accepted block in the cache");
    CHECK(kv_pool_lookup(pool, h2, h1, 0, b2) < 0, "a block of rejected drafts entered the cache");
    /* drafts that do not fit the budget are dropped, and a preempted sequence loses its drafts */
    CHECK(sched_propose(s, q, drafts, 6) == PAGODA_OK, "propose");
    CHECK(sched_check(s) == 0, "%s", pagoda_last_error());
    sched_destroy(s);
    CHECK(kv_pool_n_free(pool) == 16, "blocks leaked");
    kv_pool_destroy(pool);
    CHECK(kv_pool_create(16, 4, &pool) == PAGODA_OK, "pool");
    sched_config small = {.max_batch_tokens = 3, .max_seqs = 4, .prefix_caching = 1};
    CHECK(sched_create(&small, pool, &s) == PAGODA_OK, "sched");
    CHECK(sched_add(s, 1, NULL, toks, 2, 0, &q) == PAGODA_OK, "add");
    sched_schedule(s, &plan);
    sched_commit(s, &plan);
    CHECK(sched_append(s, q, 9) == PAGODA_OK && sched_propose(s, q, drafts, 4) == PAGODA_OK, "propose");
    sched_schedule(s, &plan); /* 1 + 4 drafts, budget 3: the last 2 drafts go */
    CHECK(plan.n_new[0] == 3 && q->n_draft == 2 && q->n_tokens == 5 && q->n_computed == 2, "drafts over budget: %d new, %d drafts left",
          plan.n_new[0], q->n_draft);
    sched_commit(s, &plan);
    CHECK(sched_check(s) == 0, "%s", pagoda_last_error());
    sched_destroy(s);
    kv_pool_destroy(pool);
}

int main(void) {
    test_pool_basics();
    test_adapter_salt();
    test_draft_rollback();
    /* tiny budget: forced preemption; prefix caching on and off; heavy forking */
    run_sim(24, 4, 16, 8, 1, 6000, 30, 20, 3);
    run_sim(24, 4, 16, 8, 0, 4000, 30, 20, 3);
    run_sim(64, 16, 64, 16, 1, 4000, 10, 10, 2);
    run_sim(12, 8, 8, 4, 1, 4000, 30, 30, 5);
    run_sim(200, 4, 256, 64, 1, 3000, 15, 15, 1);
    TEST_DONE();
}
