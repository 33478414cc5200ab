/* A fork/join team per calling thread for the CPU kernels, the attention and the sampler.
 *
 * Why not OpenMP: libgomp's threads spin at every barrier for ~300,000 iterations before they
 * sleep, and that cannot be changed from inside the program (OMP_WAIT_POLICY is read from the
 * environment when the library loads). Two such processes on the same cores take each other's
 * time slices spinning: two pagoda servers with 2 threads each on a 2-core machine generated 20-30x
 * slower than one alone (instead of 2x). Here a waiting thread spins a few microseconds (enough to
 * catch the next product of a decode step), then sleeps on a futex.
 *
 * Each thread that calls pg_parallel gets its own team (grown on demand, released when the thread
 * exits), so several engines in one process do not share or wait on each other's workers. A call
 * from inside a job runs inline on the calling thread. */
#ifndef PAGODA_CORE_THREAD_POOL_H
#define PAGODA_CORE_THREAD_POOL_H

#include <stdatomic.h>

/* One thread's part of a job: ith in [0, nth). */
typedef void (*pg_task_fn)(void *ctx, int ith, int nth);

/* Runs fn(ctx, ith, nth) for every ith in [0, nth) on the calling thread (ith 0) and nth-1 team
 * workers; returns when all have returned. nth <= 1, or a call from inside a job, runs fn(ctx, 0, 1)
 * inline. If a worker cannot be started the job runs on fewer threads (fn sees the smaller nth). */
void pg_parallel(int nth, pg_task_fn fn, void *ctx);

/* Hands out [*begin, *end) of n items from the shared counter *next, "guided" like OpenMP's
 * schedule: a share of what is left (1/(2 nth), at least min_take items), so big runs go first and
 * single items last, with few atomic operations. Returns 0 when nothing is left. */
int pg_guided_next(_Atomic long long *next, long long n, int nth, long long min_take, long long *begin,
                   long long *end);

/* The CPUs this process may run on (its affinity mask), at least 1. */
int pg_cpu_count(void);

#endif
