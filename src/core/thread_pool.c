/* pg_parallel: a team of workers per calling thread; a job is published by bumping a generation
 * word, and finished when a pending count reaches zero. Both sides wait by spinning a bounded
 * time, then sleeping on the word with futex(2); the waking side makes the system call only when
 * someone sleeps. */
#define _GNU_SOURCE
#include "core/thread_pool.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

/* How long a waiting thread spins before it sleeps. Between two products of a decode step the
 * workers wait a few microseconds; a futex wake costs about as much, so a short spin keeps decode
 * at full speed, and a thread that waits longer (idle engine, preempted team mate, another process
 * on the same cores) gives its core away after this. */
#define SPIN_NS 1000000
#define PAUSE_NS 5000
#define MAX_WORKERS 1024

typedef struct team team;
typedef struct {
    team *t;
    int ith;       /* 1.. */
    uint32_t gen0; /* the generation when it started: jobs after it are its to see */
    pthread_t thr;
} worker;

struct team {
    _Atomic uint32_t gen;     /* +2 per job (odd while one is written); futex word for the workers */
    _Atomic uint32_t pending; /* workers still in the current job; futex word for the caller */
    _Atomic int n_sleeping;   /* workers asleep (or about to be) on gen */
    _Atomic int caller_sleeping;
    _Atomic int stop;
    _Atomic(pg_task_fn) fn; /* the job: written between the two bumps, read like a seqlock */
    _Atomic(void *) ctx;
    _Atomic int nth;
    int n_workers;
    worker **wp; /* n_workers; each worker allocated on its own, so it never moves once started */
};

static _Thread_local team *tl_team;
static _Thread_local int tl_in_job; /* this thread is running a job's part: nested calls run inline */
static pthread_key_t g_key;
static pthread_once_t g_key_once = PTHREAD_ONCE_INIT;

static long futex(_Atomic uint32_t *word, int op, uint32_t val) {
    return syscall(SYS_futex, (uint32_t *)word, op | FUTEX_PRIVATE_FLAG, val, NULL, NULL, 0);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Waits until *word != old, for at most SPIN_NS: a few microseconds of pause (the usual wait within
 * a decode step), then sched_yield, which hands the core to any other runnable thread (a preempted
 * team mate, another process) instead of burning the time slice. Returns the last value read. */
static uint32_t spin_while_equal(_Atomic uint32_t *word, uint32_t old) {
    uint32_t v = atomic_load_explicit(word, memory_order_acquire);
    if (v != old) return v;
    uint64_t t0 = now_ns();
    int yielding = 0;
    for (unsigned i = 1;; i++) {
        if (yielding || (i & 31) == 0) {
            uint64_t dt = now_ns() - t0;
            if (dt > SPIN_NS) return v;
            yielding = dt > PAUSE_NS;
        }
        if (yielding) sched_yield();
        else cpu_relax();
        v = atomic_load_explicit(word, memory_order_acquire);
        if (v != old) return v;
    }
}

/* The job published under an even generation word; odd means the caller is writing it. A worker
 * that sat out the previous job may read while the caller writes the next one, so it reads like a
 * seqlock: the fields count only if the word was the same even value before and after. */
static int read_job(team *t, uint32_t *g, pg_task_fn *fn, void **ctx, int *nth) {
    for (;;) {
        uint32_t a = atomic_load_explicit(&t->gen, memory_order_acquire);
        if (a & 1) {
            cpu_relax();
            continue;
        }
        *fn = atomic_load_explicit(&t->fn, memory_order_relaxed);
        *ctx = atomic_load_explicit(&t->ctx, memory_order_relaxed);
        *nth = atomic_load_explicit(&t->nth, memory_order_relaxed);
        int stop = atomic_load_explicit(&t->stop, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&t->gen, memory_order_relaxed) == a) {
            *g = a;
            return stop;
        }
    }
}

static void *worker_main(void *arg) {
    worker *me = arg;
    team *t = me->t;
    tl_in_job = 1; /* a worker never forms a team of its own */
    uint32_t seen = me->gen0;
    for (;;) {
        uint32_t g = spin_while_equal(&t->gen, seen);
        while (g == seen) {
            atomic_fetch_add(&t->n_sleeping, 1); /* seq_cst: the caller sees us or we see its bump */
            futex(&t->gen, FUTEX_WAIT, seen);
            atomic_fetch_sub(&t->n_sleeping, 1);
            g = atomic_load_explicit(&t->gen, memory_order_acquire);
        }
        pg_task_fn fn;
        void *ctx;
        int nth;
        if (read_job(t, &seen, &fn, &ctx, &nth)) break;
        if (me->ith >= nth) continue; /* not part of this job */
        fn(ctx, me->ith, nth);
        if (atomic_fetch_sub(&t->pending, 1) == 1 && atomic_load(&t->caller_sleeping))
            futex(&t->pending, FUTEX_WAKE, 1);
    }
    return NULL;
}

static void team_free(void *p) {
    team *t = p;
    if (!t) return;
    atomic_fetch_add(&t->gen, 1);
    atomic_store(&t->stop, 1);
    atomic_fetch_add(&t->gen, 1);
    futex(&t->gen, FUTEX_WAKE, INT32_MAX);
    for (int i = 0; i < t->n_workers; i++) {
        pthread_join(t->wp[i]->thr, NULL);
        free(t->wp[i]);
    }
    free(t->wp);
    free(t);
}

static void make_key(void) { pthread_key_create(&g_key, team_free); }

/* The calling thread's team with at least want-1 workers if they can be started. */
static team *get_team(int want) {
    team *t = tl_team;
    if (!t) {
        pthread_once(&g_key_once, make_key);
        t = calloc(1, sizeof *t);
        if (!t) return NULL;
        tl_team = t;
        pthread_setspecific(g_key, t); /* joined and freed when this thread exits */
    }
    int need = want - 1 > MAX_WORKERS ? MAX_WORKERS : want - 1;
    if (t->n_workers < need) {
        worker **wp = realloc(t->wp, (size_t)need * sizeof *wp);
        if (!wp) return t;
        t->wp = wp;
        while (t->n_workers < need) {
            worker *w = calloc(1, sizeof *w);
            if (!w) break;
            w->t = t;
            w->ith = t->n_workers + 1;
            w->gen0 = atomic_load(&t->gen);
            if (pthread_create(&w->thr, NULL, worker_main, w) != 0) {
                free(w);
                break;
            }
            t->wp[t->n_workers++] = w;
        }
    }
    return t;
}

void pg_parallel(int nth, pg_task_fn fn, void *ctx) {
    team *t = (nth > 1 && !tl_in_job) ? get_team(nth) : NULL;
    if (t && nth > t->n_workers + 1) nth = t->n_workers + 1;
    if (!t || nth <= 1) {
        int outer = tl_in_job;
        tl_in_job = 1;
        fn(ctx, 0, 1);
        tl_in_job = outer;
        return;
    }
    atomic_fetch_add(&t->gen, 1); /* odd: writing */
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&t->fn, fn, memory_order_relaxed);
    atomic_store_explicit(&t->ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&t->nth, nth, memory_order_relaxed);
    atomic_store_explicit(&t->pending, (uint32_t)(nth - 1), memory_order_relaxed);
    atomic_fetch_add(&t->gen, 1); /* even: published; seq_cst, so it comes before reading n_sleeping */
    if (atomic_load(&t->n_sleeping) > 0) futex(&t->gen, FUTEX_WAKE, INT32_MAX);

    tl_in_job = 1;
    fn(ctx, 0, nth);
    tl_in_job = 0;

    for (;;) {
        uint32_t left = atomic_load_explicit(&t->pending, memory_order_acquire);
        if (left == 0) break;
        uint32_t now = spin_while_equal(&t->pending, left);
        if (now != left) continue; /* progress: spin again */
        atomic_store(&t->caller_sleeping, 1);
        now = atomic_load(&t->pending);
        if (now != 0) futex(&t->pending, FUTEX_WAIT, now);
        atomic_store(&t->caller_sleeping, 0);
    }
}

int pg_guided_next(_Atomic long long *next, long long n, int nth, long long min_take, long long *begin,
                   long long *end) {
    long long c = atomic_load_explicit(next, memory_order_relaxed), take;
    do {
        if (c >= n) return 0;
        take = (n - c) / (nth > 0 ? nth : 1);
        if (take < min_take) take = min_take;
        if (take > n - c) take = n - c;
    } while (!atomic_compare_exchange_weak_explicit(next, &c, c + take, memory_order_relaxed, memory_order_relaxed));
    *begin = c;
    *end = c + take;
    return 1;
}

int pg_cpu_count(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}
