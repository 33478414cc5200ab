#include "sched/scheduler.h"

#include <stdlib.h>
#include <string.h>

#include "core/log.h"

typedef struct {
    sched_seq *head, *tail;
    int32_t n;
} seq_list;

struct scheduler {
    sched_config c;
    kv_pool *pool;
    int32_t bs;
    seq_list waiting, running;
    uint64_t next_arrival;
    sched_seq **plan_seqs;    /* [max_seqs] */
    int32_t *plan_n_new;      /* [max_seqs] */
    int32_t (*copies)[2];     /* [max_seqs] at most one copy-on-write per scheduled sequence */
    int32_t *copy_seq;        /* [max_seqs] */
};

static void list_remove(seq_list *l, sched_seq *q) {
    if (q->prev) q->prev->next = q->next; else l->head = q->next;
    if (q->next) q->next->prev = q->prev; else l->tail = q->prev;
    q->prev = q->next = NULL;
    l->n--;
}

/* Inserts q before `at` (NULL: at the end). */
static void list_insert_before(seq_list *l, sched_seq *at, sched_seq *q) {
    q->next = at;
    q->prev = at ? at->prev : l->tail;
    if (q->prev) q->prev->next = q; else l->head = q;
    if (at) at->prev = q; else l->tail = q;
    l->n++;
}

static int arrives_before(const sched_seq *a, const sched_seq *b) {
    return a->arrival < b->arrival || (a->arrival == b->arrival && a->id < b->id);
}

/* Waiting list stays in arrival order, so a preempted sequence goes back to where it was. */
static void waiting_insert(scheduler *s, sched_seq *q) {
    sched_seq *at = s->waiting.head;
    while (at && arrives_before(at, q)) at = at->next;
    list_insert_before(&s->waiting, at, q);
    q->state = SEQ_WAITING;
}

pagoda_status sched_create(const sched_config *c, kv_pool *pool, scheduler **out) {
    *out = NULL;
    if (c->max_batch_tokens <= 0 || c->max_seqs <= 0)
        return pg_fail(PAGODA_ERR_INVALID, "scheduler: max_batch_tokens %d and max_seqs %d must be positive",
                       c->max_batch_tokens, c->max_seqs);
    scheduler *s = calloc(1, sizeof *s);
    if (!s) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    s->c = *c, s->pool = pool, s->bs = kv_pool_block_size(pool);
    s->plan_seqs = malloc((size_t)c->max_seqs * sizeof *s->plan_seqs);
    s->plan_n_new = malloc((size_t)c->max_seqs * sizeof *s->plan_n_new);
    s->copies = malloc((size_t)c->max_seqs * sizeof *s->copies);
    s->copy_seq = malloc((size_t)c->max_seqs * sizeof *s->copy_seq);
    if (!s->plan_seqs || !s->plan_n_new || !s->copies || !s->copy_seq) {
        sched_destroy(s);
        return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    }
    *out = s;
    return PAGODA_OK;
}

void sched_destroy(scheduler *s) {
    if (!s) return;
    while (s->running.head) sched_finish(s, s->running.head);
    while (s->waiting.head) sched_finish(s, s->waiting.head);
    free(s->plan_seqs), free(s->plan_n_new), free(s->copies), free(s->copy_seq), free(s);
}

int32_t sched_n_running(const scheduler *s) { return s->running.n; }
int32_t sched_n_waiting(const scheduler *s) { return s->waiting.n; }
int32_t sched_blocks_for(const scheduler *s, int32_t n_tokens) { return (n_tokens + s->bs - 1) / s->bs; }

static void seq_free(sched_seq *q) {
    if (!q) return;
    free(q->tokens), free(q->blocks), free(q->hashes), free(q);
}

static int grow_tokens(sched_seq *q, int32_t n) {
    if (n <= q->cap_tokens) return 0;
    int32_t cap = q->cap_tokens ? q->cap_tokens : 64;
    while (cap < n) cap *= 2;
    int32_t *t = realloc(q->tokens, (size_t)cap * sizeof *t);
    if (!t) return -1;
    q->tokens = t, q->cap_tokens = cap;
    return 0;
}

static int grow_blocks(sched_seq *q, int32_t n) {
    if (n <= q->cap_blocks) return 0;
    int32_t cap = q->cap_blocks ? q->cap_blocks : 8;
    while (cap < n) cap *= 2;
    int32_t *b = realloc(q->blocks, (size_t)cap * sizeof *b);
    uint64_t *h = b ? realloc(q->hashes, (size_t)cap * sizeof *h) : NULL;
    if (b) q->blocks = b;
    if (!h) return -1;
    q->hashes = h, q->cap_blocks = cap;
    return 0;
}

pagoda_status sched_add(scheduler *s, uint64_t id, void *owner, const int32_t *tokens, int32_t n, int32_t adapter,
                        sched_seq **out) {
    *out = NULL;
    if (n <= 0) return pg_fail(PAGODA_ERR_INVALID, "scheduler: a sequence needs at least one token");
    sched_seq *q = calloc(1, sizeof *q);
    if (!q || grow_tokens(q, n) || grow_blocks(q, sched_blocks_for(s, n) + 1)) {
        seq_free(q);
        return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    }
    memcpy(q->tokens, tokens, (size_t)n * sizeof *tokens);
    q->id = id, q->owner = owner, q->n_tokens = n, q->n_prompt = n, q->adapter = adapter;
    q->arrival = s->next_arrival++;
    waiting_insert(s, q);
    *out = q;
    return PAGODA_OK;
}

pagoda_status sched_fork(scheduler *s, sched_seq *parent, uint64_t id, void *owner, sched_seq **out) {
    *out = NULL;
    if (parent->state != SEQ_RUNNING) return pg_fail(PAGODA_ERR_INVALID, "scheduler: fork of a sequence that is not running");
    sched_seq *q = calloc(1, sizeof *q);
    if (!q || grow_tokens(q, parent->cap_tokens) || grow_blocks(q, parent->cap_blocks)) {
        seq_free(q);
        return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    }
    memcpy(q->tokens, parent->tokens, (size_t)parent->n_tokens * sizeof *q->tokens);
    memcpy(q->blocks, parent->blocks, (size_t)parent->n_blocks * sizeof *q->blocks);
    memcpy(q->hashes, parent->hashes, (size_t)parent->n_hashes * sizeof *q->hashes);
    q->id = id, q->owner = owner;
    q->n_tokens = parent->n_tokens, q->n_prompt = parent->n_prompt, q->n_computed = parent->n_computed;
    q->n_blocks = parent->n_blocks, q->n_hashes = parent->n_hashes, q->n_published = parent->n_published;
    q->n_cached = parent->n_cached, q->arrival = parent->arrival;
    q->adapter = parent->adapter, q->no_prefix_reuse = parent->no_prefix_reuse, q->n_draft = parent->n_draft;
    for (int32_t i = 0; i < q->n_blocks; i++) kv_pool_ref(s->pool, q->blocks[i]);
    list_insert_before(&s->running, parent->next, q);
    q->state = SEQ_RUNNING;
    *out = q;
    return PAGODA_OK;
}

pagoda_status sched_append(scheduler *s, sched_seq *q, int32_t token) {
    if (grow_tokens(q, q->n_tokens + 1) || grow_blocks(q, sched_blocks_for(s, q->n_tokens + 1) + 1))
        return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    q->tokens[q->n_tokens++] = token;
    return PAGODA_OK;
}

pagoda_status sched_propose(scheduler *s, sched_seq *q, const int32_t *tokens, int32_t k) {
    if (q->n_draft) return pg_fail(PAGODA_ERR_INVALID, "scheduler: seq %llu already has %d drafts", (unsigned long long)q->id, q->n_draft);
    if (k <= 0) return PAGODA_OK;
    if (grow_tokens(q, q->n_tokens + k) || grow_blocks(q, sched_blocks_for(s, q->n_tokens + k) + 1))
        return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    memcpy(q->tokens + q->n_tokens, tokens, (size_t)k * sizeof *tokens);
    q->n_tokens += k, q->n_draft = k;
    return PAGODA_OK;
}

/* Cuts q back to its first n tokens (n >= n_tokens - n_draft): computed count, hashes and blocks
 * past them go. The last kept block may hold stale K/V in slots past n: they are rewritten
 * before they are read. */
static void truncate_seq(scheduler *s, sched_seq *q, int32_t n) {
    q->n_draft -= q->n_tokens - n;
    q->n_tokens = n;
    if (q->n_computed > n) q->n_computed = n;
    int32_t keep = q->state == SEQ_RUNNING ? sched_blocks_for(s, q->n_computed) : 0;
    while (q->n_blocks > keep) kv_pool_unref(s->pool, q->blocks[--q->n_blocks]);
    int32_t n_full = n / s->bs;
    if (q->n_hashes > n_full) q->n_hashes = n_full;
    if (q->n_published > n_full) q->n_published = n_full;
}

void sched_accept(scheduler *s, sched_seq *q, int32_t n_keep) {
    if (n_keep < 0) n_keep = 0;
    if (n_keep > q->n_draft) n_keep = q->n_draft;
    truncate_seq(s, q, q->n_tokens - q->n_draft + n_keep);
    q->n_draft = 0;
}

/* Gives back all of q's blocks, last first, so its tail is evicted before its shared prefix. */
static void release_blocks(scheduler *s, sched_seq *q) {
    for (int32_t i = q->n_blocks - 1; i >= 0; i--) kv_pool_unref(s->pool, q->blocks[i]);
    q->n_blocks = 0, q->n_computed = 0, q->n_published = 0;
}

void sched_finish(scheduler *s, sched_seq *q) {
    if (q->state == SEQ_RUNNING) list_remove(&s->running, q);
    else if (q->state == SEQ_WAITING) list_remove(&s->waiting, q);
    release_blocks(s, q);
    q->state = SEQ_DONE;
    seq_free(q);
}

static void preempt(scheduler *s, sched_seq *q) {
    list_remove(&s->running, q);
    release_blocks(s, q);
    if (q->n_draft) truncate_seq(s, q, q->n_tokens - q->n_draft); /* recomputed without its drafts */
    q->n_preempted++;
    waiting_insert(s, q);
}

/* Chained hashes of q's first n_full full blocks. */
static void ensure_hashes(scheduler *s, sched_seq *q, int32_t n_full) {
    for (int32_t i = q->n_hashes; i < n_full; i++) {
        uint64_t parent = i ? q->hashes[i - 1] : kv_root_hash(q->adapter);
        q->hashes[i] = kv_block_hash(parent, q->tokens + (size_t)i * (size_t)s->bs, s->bs);
    }
    if (n_full > q->n_hashes) q->n_hashes = n_full;
}

/* Makes room in q's block table for n_new more tokens: new blocks, and a private copy of a
 * shared partial block about to be written. 0 on success, -1 if the pool is short (nothing
 * changed then). */
static int reserve(scheduler *s, sched_plan *plan, sched_seq *q, int32_t n_new) {
    int32_t need = sched_blocks_for(s, q->n_computed + n_new) - q->n_blocks;
    int32_t partial = q->n_computed % s->bs ? q->n_computed / s->bs : -1;
    int cow = partial >= 0 && partial < q->n_blocks && kv_pool_ref_count(s->pool, q->blocks[partial]) > 1;
    if (need + cow > kv_pool_n_free(s->pool)) return -1;
    if (grow_blocks(q, q->n_blocks + need)) return -1;
    if (cow) {
        int32_t nb = kv_pool_alloc(s->pool);
        plan->copies[plan->n_copies][0] = q->blocks[partial];
        plan->copies[plan->n_copies][1] = nb;
        plan->copy_seq[plan->n_copies] = plan->n_seqs; /* q is planned next, at this index */
        plan->n_copies++;
        kv_pool_unref(s->pool, q->blocks[partial]);
        q->blocks[partial] = nb;
    }
    for (int32_t i = 0; i < need; i++) q->blocks[q->n_blocks++] = kv_pool_alloc(s->pool);
    return 0;
}

static void plan_add(sched_plan *plan, sched_seq *q, int32_t n_new) {
    plan->seqs[plan->n_seqs] = q;
    plan->n_new[plan->n_seqs] = n_new;
    plan->n_seqs++;
    plan->n_tokens += n_new;
}

/* Admits the head of the waiting list if its blocks fit: reuses its longest cached prefix
 * (all but the last token: that one must run to give logits) and reserves the first chunk. */
static int admit(scheduler *s, sched_plan *plan, int32_t budget) {
    sched_seq *q = s->waiting.head;
    int32_t n_hit = 0, n_hit_free = 0;
    if (s->c.prefix_caching && !q->no_prefix_reuse) {
        int32_t max_hit = (q->n_tokens - 1) / s->bs;
        ensure_hashes(s, q, max_hit);
        for (uint64_t parent = kv_root_hash(q->adapter); n_hit < max_hit; parent = q->hashes[n_hit++]) {
            int32_t b = kv_pool_lookup(s->pool, q->hashes[n_hit], parent, q->adapter,
                                       q->tokens + (size_t)n_hit * (size_t)s->bs);
            if (b < 0) break;
            q->blocks[n_hit] = b;
            n_hit_free += kv_pool_ref_count(s->pool, b) == 0;
        }
    }
    int32_t n_cached = n_hit * s->bs;
    int32_t n_new = q->n_tokens - n_cached < budget ? q->n_tokens - n_cached : budget;
    int32_t need = sched_blocks_for(s, n_cached + n_new) - n_hit;
    if (need > kv_pool_n_free(s->pool) - n_hit_free) return -1;
    for (int32_t i = 0; i < n_hit; i++) kv_pool_ref(s->pool, q->blocks[i]);
    q->n_blocks = n_hit, q->n_computed = n_cached, q->n_published = n_hit, q->n_cached = n_cached;
    for (int32_t i = 0; i < need; i++) q->blocks[q->n_blocks++] = kv_pool_alloc(s->pool);
    list_remove(&s->waiting, q);
    list_insert_before(&s->running, NULL, q);
    q->state = SEQ_RUNNING;
    plan_add(plan, q, n_new);
    return 0;
}

void sched_schedule(scheduler *s, sched_plan *plan) {
    memset(plan, 0, sizeof *plan);
    plan->seqs = s->plan_seqs, plan->n_new = s->plan_n_new, plan->copies = s->copies, plan->copy_seq = s->copy_seq;
    int32_t budget = s->c.max_batch_tokens;
    /* running sequences first, oldest first: one token each when decoding, a chunk when prefilling */
    for (sched_seq *q = s->running.head; q && plan->n_seqs < s->c.max_seqs && budget > 0;) {
        int32_t left = q->n_tokens - q->n_computed;
        if (q->n_draft && left > budget) { /* drafts that do not fit are dropped: they run whole or not at all */
            int32_t drop = left - budget < q->n_draft ? left - budget : q->n_draft;
            truncate_seq(s, q, q->n_tokens - drop);
            left -= drop;
        }
        int32_t n_new = left < budget ? left : budget;
        if (n_new <= 0) { q = q->next; continue; }
        int preempted_self = 0;
        while (reserve(s, plan, q, n_new)) {
            sched_seq *victim = s->running.tail; /* the newest */
            preempt(s, victim);
            plan->n_preempted++;
            if (victim == q) { preempted_self = 1; break; }
        }
        if (preempted_self) break; /* q was the last running sequence */
        plan_add(plan, q, n_new);
        budget -= n_new;
        q = q->next;
    }
    /* then waiting ones in arrival order, unless this step had to preempt (memory is tight) */
    if (plan->n_preempted) return;
    while (s->waiting.head && plan->n_seqs < s->c.max_seqs && budget > 0) {
        if (admit(s, plan, budget)) break;
        budget -= plan->n_new[plan->n_seqs - 1];
    }
}

void sched_commit(scheduler *s, const sched_plan *plan) {
    (void)s;
    for (int32_t i = 0; i < plan->n_seqs; i++) plan->seqs[i]->n_computed += plan->n_new[i];
}

void sched_publish(scheduler *s, sched_seq *q) {
    if (!s->c.prefix_caching || q->state != SEQ_RUNNING) return;
    int32_t n_accepted = q->n_tokens - q->n_draft;
    int32_t n_full = (q->n_computed < n_accepted ? q->n_computed : n_accepted) / s->bs;
    ensure_hashes(s, q, n_full);
    for (int32_t j = q->n_published; j < n_full; j++)
        kv_pool_publish(s->pool, q->blocks[j], q->hashes[j], j ? q->hashes[j - 1] : kv_root_hash(q->adapter), q->adapter,
                        q->tokens + (size_t)j * (size_t)s->bs);
    if (n_full > q->n_published) q->n_published = n_full;
}

static int check_list(const scheduler *s, const seq_list *l, sched_seq_state state, int32_t *refs) {
    int32_t n = 0;
    for (const sched_seq *q = l->head; q; q = q->next) {
        if (++n > l->n) return pg_fail(PAGODA_ERR_INVALID, "sched: list longer than its count %d", l->n), -1;
        if (q->state != state) return pg_fail(PAGODA_ERR_INVALID, "sched: seq %llu in the wrong list", (unsigned long long)q->id), -1;
        if (q->next && q->next->prev != q) return pg_fail(PAGODA_ERR_INVALID, "sched: broken list link"), -1;
        if (state == SEQ_WAITING && q->next && arrives_before(q->next, q))
            return pg_fail(PAGODA_ERR_INVALID, "sched: waiting list out of arrival order"), -1;
        if (q->n_computed < 0 || q->n_computed > q->n_tokens || q->n_prompt > q->n_tokens)
            return pg_fail(PAGODA_ERR_INVALID, "sched: seq %llu computed %d of %d tokens", (unsigned long long)q->id,
                           q->n_computed, q->n_tokens), -1;
        if (q->n_blocks != sched_blocks_for(s, q->n_computed))
            return pg_fail(PAGODA_ERR_INVALID, "sched: seq %llu holds %d blocks for %d computed tokens",
                           (unsigned long long)q->id, q->n_blocks, q->n_computed), -1;
        if (state == SEQ_WAITING && q->n_blocks)
            return pg_fail(PAGODA_ERR_INVALID, "sched: waiting seq %llu holds blocks", (unsigned long long)q->id), -1;
        for (int32_t i = 0; i < q->n_blocks; i++) {
            int32_t b = q->blocks[i];
            if (b < 0 || b >= kv_pool_n_blocks(s->pool)) return pg_fail(PAGODA_ERR_INVALID, "sched: bad block id %d", b), -1;
            for (int32_t j = 0; j < i; j++)
                if (q->blocks[j] == b) return pg_fail(PAGODA_ERR_INVALID, "sched: block %d twice in one table", b), -1;
            refs[b]++;
        }
    }
    if (n != l->n) return pg_fail(PAGODA_ERR_INVALID, "sched: list has %d entries, count says %d", n, l->n), -1;
    return 0;
}

int sched_check(const scheduler *s) {
    int32_t nb = kv_pool_n_blocks(s->pool);
    int32_t *refs = calloc((size_t)nb, sizeof *refs);
    if (!refs) return pg_fail(PAGODA_ERR_NOMEM, "out of memory"), -1;
    int rc = check_list(s, &s->running, SEQ_RUNNING, refs) || check_list(s, &s->waiting, SEQ_WAITING, refs) ? -1 : 0;
    for (int32_t b = 0; !rc && b < nb; b++)
        if (refs[b] != kv_pool_ref_count(s->pool, b))
            rc = -1, pg_fail(PAGODA_ERR_INVALID, "sched: block %d has ref count %d but %d users", b,
                             kv_pool_ref_count(s->pool, b), refs[b]);
    free(refs);
    return rc ? -1 : kv_pool_check(s->pool);
}
