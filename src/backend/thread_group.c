/* A tensor/pipeline-parallel group whose ranks are threads of one process (pagoda.h,
 * pagoda_tp_threads_create): the same hooks as the MPI group, over shared memory. One mutex and one
 * condition variable guard everything; a waiting rank sleeps (an idle server's workers cost nothing).
 *
 *   bcast:      rank 0 publishes its buffer, the others copy it (two world barriers).
 *   all_reduce: each rank of the stage publishes x; rank i of the stage sums elements
 *               [n*i/tp, n*(i+1)/tp) over the stage's ranks in rank order and writes the sum into
 *               every rank's x (disjoint slices), so all ranks hold the same bits (two barriers).
 *   send/recv:  a one-slot mailbox per (source, destination) pair: the sender waits until the
 *               receiver has copied (blocking, in order per pair, as MPI's).
 * abort wakes every waiter and fails every later call with PAGODA_ERR_IO. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "pagoda.h"

typedef struct tg_shared tg_shared;

typedef struct {
    pagoda_tp_group g; /* first: the public handle points here */
    tg_shared *s;
    int32_t rank;
} tg_rank;

typedef struct {
    int32_t count;  /* under the mutex */
    atomic_int gen; /* changes (under the mutex) when the last rank arrives; spun on without it */
} tg_barrier;

typedef struct {
    const void *buf;
    size_t bytes;
    int full;
} tg_box;

struct tg_shared {
    int32_t n, tp; /* ranks, ranks per stage */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int aborted;
    tg_barrier world;
    tg_barrier *stage; /* [n / tp] */
    const void *bcast_src;
    float **red;       /* [n]: each rank's all_reduce buffer */
    tg_box *box;       /* [n * n]: box[src * n + dst] */
    tg_rank *ranks;    /* [n] */
    pagoda_tp_group **handles; /* [n + 1], NULL-terminated: what create returns */
};

static pagoda_status aborted_error(void) {
    return pg_fail(PAGODA_ERR_IO, "tensor parallel: another rank of this process's group gave up");
}

/* Waits for the n ranks of b (the caller holds no lock). A rank that arrives early spins for up to
 * SPIN_NS first (the ranks of a step arrive within microseconds of each other, and a sleep and
 * wake-up through the kernel costs more than that), then sleeps on the condition variable (an idle
 * server's ranks wait for the next step there). */
#define SPIN_NS 30000
static pagoda_status barrier(tg_shared *s, tg_barrier *b, int32_t n) {
    pthread_mutex_lock(&s->mu);
    if (s->aborted) {
        pthread_mutex_unlock(&s->mu);
        return aborted_error();
    }
    const int gen = atomic_load(&b->gen);
    if (++b->count == n) {
        b->count = 0;
        atomic_store(&b->gen, gen + 1);
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        return PAGODA_OK;
    }
    pthread_mutex_unlock(&s->mu);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 1; atomic_load_explicit(&b->gen, memory_order_acquire) == gen; i++) {
        __builtin_ia32_pause();
        if (i % 64) continue;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) > SPIN_NS) break;
    }
    pthread_mutex_lock(&s->mu);
    while (atomic_load(&b->gen) == gen && !s->aborted) pthread_cond_wait(&s->cv, &s->mu);
    int ab = atomic_load(&b->gen) == gen && s->aborted;
    pthread_mutex_unlock(&s->mu);
    return ab ? aborted_error() : PAGODA_OK;
}

static pagoda_status tg_bcast(void *user, void *buf, size_t bytes) {
    tg_rank *r = user;
    tg_shared *s = r->s;
    if (r->rank == 0) s->bcast_src = buf; /* published by the barrier's mutex */
    pagoda_status st = barrier(s, &s->world, s->n);
    if (st) return st;
    if (r->rank != 0 && bytes) memcpy(buf, s->bcast_src, bytes);
    return barrier(s, &s->world, s->n); /* rank 0's buffer is free again */
}

static pagoda_status tg_all_reduce(void *user, float *x, int64_t n) {
    tg_rank *r = user;
    tg_shared *s = r->s;
    const int32_t stage = r->rank / s->tp, i = r->rank % s->tp, first = stage * s->tp;
    s->red[r->rank] = x;
    pagoda_status st = barrier(s, &s->stage[stage], s->tp);
    if (st) return st;
    const int64_t e0 = n * i / s->tp, e1 = n * (i + 1) / s->tp;
    for (int64_t e = e0; e < e1; e++) {
        float sum = 0.0f;
        for (int32_t j = 0; j < s->tp; j++) sum += s->red[first + j][e];
        for (int32_t j = 0; j < s->tp; j++) s->red[first + j][e] = sum;
    }
    return barrier(s, &s->stage[stage], s->tp);
}

static pagoda_status tg_send(void *user, int32_t peer, const void *buf, size_t bytes) {
    tg_rank *r = user;
    tg_shared *s = r->s;
    if (peer < 0 || peer >= s->n || peer == r->rank)
        return pg_fail(PAGODA_ERR_INVALID, "tensor parallel: send to rank %d of %d", peer, s->n);
    tg_box *b = &s->box[r->rank * s->n + peer];
    pthread_mutex_lock(&s->mu);
    while (b->full && !s->aborted) pthread_cond_wait(&s->cv, &s->mu);
    if (!s->aborted) {
        b->buf = buf, b->bytes = bytes, b->full = 1;
        pthread_cond_broadcast(&s->cv);
        while (b->full && !s->aborted) pthread_cond_wait(&s->cv, &s->mu); /* until copied */
    }
    int ab = s->aborted;
    pthread_mutex_unlock(&s->mu);
    return ab ? aborted_error() : PAGODA_OK;
}

static pagoda_status tg_recv(void *user, int32_t peer, void *buf, size_t bytes) {
    tg_rank *r = user;
    tg_shared *s = r->s;
    if (peer < 0 || peer >= s->n || peer == r->rank)
        return pg_fail(PAGODA_ERR_INVALID, "tensor parallel: receive from rank %d of %d", peer, s->n);
    tg_box *b = &s->box[peer * s->n + r->rank];
    pagoda_status st = PAGODA_OK;
    pthread_mutex_lock(&s->mu);
    while (!b->full && !s->aborted) pthread_cond_wait(&s->cv, &s->mu);
    if (s->aborted) {
        st = aborted_error();
    } else {
        if (b->bytes != bytes)
            st = pg_fail(PAGODA_ERR_IO, "tensor parallel: rank %d sent %zu bytes, rank %d expected %zu", peer, b->bytes,
                         r->rank, bytes);
        else memcpy(buf, b->buf, bytes);
        b->full = 0;
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return st;
}

void pagoda_tp_threads_destroy(pagoda_tp_group **groups) {
    if (!groups || !groups[0]) return;
    tg_shared *s = ((tg_rank *)groups[0])->s;
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->stage), free(s->red), free(s->box), free(s->ranks), free(s->handles);
    free(s);
}

pagoda_status pagoda_tp_threads_create(int32_t size, int32_t pp_size, pagoda_tp_group ***groups) {
    *groups = NULL;
    if (pp_size < 1) pp_size = 1;
    if (size < 1 || size > 1024 || size % pp_size)
        return pg_fail(PAGODA_ERR_INVALID, "a group of %d threads does not split into %d pipeline stages", size, pp_size);
    tg_shared *s = calloc(1, sizeof *s);
    if (!s) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    s->n = size, s->tp = size / pp_size;
    s->stage = calloc((size_t)pp_size, sizeof *s->stage);
    s->red = calloc((size_t)size, sizeof *s->red);
    s->box = calloc((size_t)size * (size_t)size, sizeof *s->box);
    s->ranks = calloc((size_t)size, sizeof *s->ranks);
    s->handles = calloc((size_t)size + 1, sizeof *s->handles);
    if (!s->stage || !s->red || !s->box || !s->ranks || !s->handles) {
        free(s->stage), free(s->red), free(s->box), free(s->ranks), free(s->handles), free(s);
        return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    for (int32_t r = 0; r < size; r++) {
        tg_rank *k = &s->ranks[r];
        k->s = s, k->rank = r;
        k->g = (pagoda_tp_group){.rank = r, .size = size, .bcast = tg_bcast, .all_reduce = tg_all_reduce, .user = k,
                                 .pp_size = pp_size, .send = tg_send, .recv = tg_recv, .local_rank = r};
        s->handles[r] = &k->g;
    }
    *groups = s->handles;
    return PAGODA_OK;
}

void pagoda_tp_threads_abort(pagoda_tp_group *g) {
    if (!g || g->bcast != tg_bcast) return;
    tg_shared *s = ((tg_rank *)g->user)->s;
    pthread_mutex_lock(&s->mu);
    s->aborted = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

int pagoda_tp_threads_is(const pagoda_tp_group *g) { return g && g->bcast == tg_bcast; }
