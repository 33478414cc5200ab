/* core/thread_pool: every part of every job runs exactly once, with the job's own arguments, for
 * changing team sizes; nested calls run inline; teams of exiting threads are released; two
 * callers (two engines) with their own teams run at the same time; guided ranges cover the items
 * exactly once. */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "core/thread_pool.h"
#include "test_util.h"

#define MAXT 8

typedef struct {
    int id;
    _Atomic int hits[MAXT];
    _Atomic int nth_seen;
    _Atomic int bad_nth;
    _Atomic int nested_ok;
} job;

static void spin_us(int us) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    do clock_gettime(CLOCK_MONOTONIC, &b);
    while ((b.tv_sec - a.tv_sec) * 1000000L + (b.tv_nsec - a.tv_nsec) / 1000 < us);
}

static void inner(void *ctx, int ith, int nth) {
    job *j = ctx;
    if (ith == 0 && nth == 1) atomic_fetch_add(&j->nested_ok, 1);
}

static void part(void *ctx, int ith, int nth) {
    job *j = ctx;
    if (ith < 0 || ith >= MAXT || nth < 1 || ith >= nth) {
        atomic_fetch_add(&j->bad_nth, 1);
        return;
    }
    atomic_fetch_add(&j->hits[ith], 1);
    int prev = atomic_exchange(&j->nth_seen, nth);
    if (prev && prev != nth) atomic_fetch_add(&j->bad_nth, 1);
    if (j->id % 7 == 0) pg_parallel(4, inner, j); /* from inside a job: runs inline */
    if (j->id % 5 == 0) spin_us((ith * 37 + j->id) % 50);
}

/* n jobs with team sizes cycling through 1..MAXT; returns the failures. */
static int run_jobs(int n, int seed) {
    int fails = 0;
    for (int i = 0; i < n; i++) {
        job j;
        memset(&j, 0, sizeof j);
        j.id = i + seed;
        int nth = 1 + (i * 5 + seed) % MAXT;
        pg_parallel(nth, part, &j);
        int ran = atomic_load(&j.nth_seen);
        if (ran < 1 || ran > nth || atomic_load(&j.bad_nth)) fails++;
        for (int t = 0; t < MAXT; t++)
            if (atomic_load(&j.hits[t]) != (t < ran ? 1 : 0)) fails++;
        if (j.id % 7 == 0 && atomic_load(&j.nested_ok) != ran) fails++;
        if (i % 97 == 0) spin_us(1500); /* let the workers go to sleep now and then */
    }
    return fails;
}

typedef struct {
    int seed, fails;
} caller;

static void *caller_main(void *arg) {
    caller *c = arg;
    c->fails = run_jobs(3000, c->seed);
    return NULL;
}

static void guided(void) {
    for (long long n = 0; n < 300; n += 7)
        for (int nth = 1; nth <= 5; nth++) {
            _Atomic long long next;
            atomic_init(&next, 0);
            char seen[300] = {0};
            long long b, e, prev_end = 0;
            int ok = 1;
            while (pg_guided_next(&next, n, nth, 2, &b, &e)) {
                if (b != prev_end || e <= b || e > n) ok = 0;
                for (long long k = b; k < e && k < n; k++) seen[k]++;
                prev_end = e;
            }
            for (long long k = 0; k < n; k++) ok &= seen[k] == 1;
            CHECK(ok && prev_end == n, "guided ranges over %lld items, %d threads", n, nth);
        }
}

int main(void) {
    CHECK(pg_cpu_count() >= 1, "cpu count %d", pg_cpu_count());
    guided();
    CHECK(run_jobs(5000, 1) == 0, "jobs on the main thread");

    /* threads that use a team and exit: their teams are joined and freed (ASan sees leaks) */
    for (int r = 0; r < 20; r++) {
        caller c = {.seed = r};
        pthread_t t;
        CHECK(pthread_create(&t, NULL, caller_main, &c) == 0, "thread");
        pthread_join(t, NULL);
        CHECK(c.fails == 0, "jobs on an exiting thread (round %d): %d failures", r, c.fails);
        if (r == 2) r = 17; /* a few rounds are enough for the release path */
    }

    /* two callers at once, each with its own team (two engines in one process) */
    caller a = {.seed = 3}, b = {.seed = 11};
    pthread_t ta, tb;
    CHECK(pthread_create(&ta, NULL, caller_main, &a) == 0, "thread a");
    CHECK(pthread_create(&tb, NULL, caller_main, &b) == 0, "thread b");
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK(a.fails == 0 && b.fails == 0, "two callers: %d and %d failures", a.fails, b.fails);
    TEST_DONE();
}
