/* Continuous-batching scheduler: every step decides which sequences run and how many tokens
 * each computes, within a token budget, and keeps their KV block tables.
 *
 * There are no separate prefill and decode phases: a sequence knows n_tokens tokens (prompt +
 * generated) of which n_computed have KV in the cache, and each step lets the computed count
 * catch up under the budget (one token for a decoding sequence, a chunk for a prompt). Running
 * sequences go first, oldest first, so a long prompt never stalls others' decoding; waiting
 * ones are admitted in arrival order (FCFS, no skipping) with their longest cached prefix. When
 * blocks run out the newest running sequence is preempted: its blocks are freed and it waits at
 * the front of the queue to be recomputed.
 *
 * Speculation: a running sequence may carry n_draft proposed tokens at the end of its tokens
 * (sched_propose); they are scheduled with it (1 + n_draft tokens), and after verification
 * sched_accept keeps the accepted ones and rolls the rest back (their KV slots and any block
 * past the accepted tokens return to the pool). Drafts that do not fit a step's budget, or a
 * preempted sequence's drafts, are dropped.
 *
 * Pure bookkeeping over plain data (no tensors): the engine executes the plan (block copies,
 * then one forward pass), calls sched_commit (the K/V are written), verifies and accepts the
 * tokens, and only then sched_publish offers the accepted full blocks to the prefix cache, so
 * a rejected token's block never enters it. Tests drive it with a fake model. */
#ifndef PG_SCHED_SCHEDULER_H
#define PG_SCHED_SCHEDULER_H

#include <stdint.h>

#include "kv/block_pool.h"
#include "pagoda.h"

typedef enum { SEQ_WAITING, SEQ_RUNNING, SEQ_DONE } sched_seq_state;

typedef struct sched_seq {
    uint64_t id;
    void *owner;             /* the engine's per-choice record (borrowed) */
    int32_t *tokens;         /* [n_tokens] prompt then generated tokens (owned) */
    int32_t n_tokens, cap_tokens;
    int32_t n_prompt;
    int32_t n_computed;      /* tokens whose K/V are in the cache */
    int32_t *blocks;         /* [n_blocks] block table: KV block of positions [i*bs, (i+1)*bs) (owned) */
    int32_t n_blocks, cap_blocks;
    uint64_t *hashes;        /* [n_hashes] chained hash of each full block of tokens, computed lazily */
    int32_t n_hashes;
    int32_t n_published;     /* leading full blocks already offered to the prefix cache */
    int32_t n_cached;        /* tokens reused from the prefix cache at the latest admission */
    int32_t n_preempted;     /* times preempted */
    int32_t adapter;         /* adapter (LoRA) id: salts the prefix hashes (0 = the base model) */
    int no_prefix_reuse;     /* 1: admission takes no block from the prefix cache (set it before
                                the sequence is first scheduled) */
    int32_t n_draft;         /* trailing tokens that are unverified proposals (speculation) */
    sched_seq_state state;
    uint64_t arrival;        /* FCFS key (forks share their parent's) */
    struct sched_seq *prev, *next; /* in the waiting or running list */
} sched_seq;

typedef struct {
    int32_t max_batch_tokens; /* tokens per step */
    int32_t max_seqs;         /* sequences per step */
    int prefix_caching;
} sched_config;

/* One step's work. Arrays are owned by the scheduler and valid until the next sched_schedule. */
typedef struct {
    int32_t n_seqs;
    sched_seq **seqs;        /* [n_seqs] in batch order */
    int32_t *n_new;          /* [n_seqs] tokens each computes, starting at its n_computed */
    int32_t n_tokens;        /* sum of n_new */
    int32_t n_copies;
    int32_t (*copies)[2];    /* [n_copies] {src, dst}: copy these KV blocks before the forward */
    int32_t *copy_seq;       /* [n_copies] index in seqs of the sequence each copy is for */
    int32_t n_preempted;     /* sequences preempted while planning this step */
} sched_plan;

typedef struct scheduler scheduler;

/* Borrows pool (must outlive the scheduler). */
pagoda_status sched_create(const sched_config *c, kv_pool *pool, scheduler **out);
/* Frees the scheduler and every sequence it still holds (their blocks go back to the pool). */
void sched_destroy(scheduler *s);

/* A new sequence for tokens[0..n) (copied) run with adapter id `adapter` (0: the base model; its
 * prefix-cache blocks are never shared with another adapter's), queued at the end of the
 * waiting list. */
pagoda_status sched_add(scheduler *s, uint64_t id, void *owner, const int32_t *tokens, int32_t n, int32_t adapter,
                        sched_seq **out);
/* A copy of parent sharing all its KV blocks (ref counts go up; a shared partial block is copied
 * on the next write). Runs right after the parent; same arrival. parent must be running. */
pagoda_status sched_fork(scheduler *s, sched_seq *parent, uint64_t id, void *owner, sched_seq **out);
/* Appends a generated token (grows the sequence; it gets computed in a later step). */
pagoda_status sched_append(scheduler *s, sched_seq *q, int32_t token);
/* Appends k proposed tokens to a sequence without drafts (speculation): they are computed with
 * it in the next step and verified after it. */
pagoda_status sched_propose(scheduler *s, sched_seq *q, const int32_t *tokens, int32_t k);
/* After verification: keeps the first n_keep of q's drafts as ordinary tokens and rolls the
 * others back (tokens, computed count, blocks past the kept tokens). n_keep in [0, n_draft]. */
void sched_accept(scheduler *s, sched_seq *q, int32_t n_keep);
/* Removes a sequence (finished or cancelled, running or waiting), frees its blocks and it. */
void sched_finish(scheduler *s, sched_seq *q);

/* Plans the next step. An empty plan (n_seqs == 0) means nothing can run. */
void sched_schedule(scheduler *s, sched_plan *plan);
/* After the forward pass: advances computed counts (the K/V of the planned tokens are written).
 * Publishes nothing: see sched_publish. */
void sched_commit(scheduler *s, const sched_plan *plan);
/* After the step's tokens are accepted: offers q's computed full blocks of accepted tokens (not
 * drafts) to the prefix cache. */
void sched_publish(scheduler *s, sched_seq *q);

int32_t sched_n_running(const scheduler *s);
int32_t sched_n_waiting(const scheduler *s);
/* Blocks a sequence of n tokens needs; the longest admissible sequence is pool blocks x size. */
int32_t sched_blocks_for(const scheduler *s, int32_t n_tokens);

/* Checks every invariant: list membership and order, each block's ref count equals the number
 * of sequence block tables holding it, block tables cover n_computed, pool consistency.
 * 0 if all hold; else -1 with the reason in pagoda_last_error(). For tests. */
int sched_check(const scheduler *s);

#endif
