#include "core/membw.h"

#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHUNK_ALIGN 4096 /* per-thread parts start on page boundaries */

/* Reads n bytes (a multiple of 128) and returns a value depending on all of them, so the
 * compiler cannot drop the loads. */
static uint64_t read_scalar(const uint64_t *p, size_t n) {
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (size_t i = 0; i < n / 8; i += 4) {
        a0 += p[i];
        a1 += p[i + 1];
        a2 += p[i + 2];
        a3 += p[i + 3];
    }
    return a0 ^ a1 ^ a2 ^ a3;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#include "core/clock.h"

__attribute__((target("avx2"))) static uint64_t read_avx2(const uint64_t *p, size_t n) {
    const __m256i *v = (const __m256i *)p;
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    /* four independent accumulators: the loop is limited by loads, not add latency */
    for (size_t i = 0; i < n / 32; i += 4) {
        a0 = _mm256_add_epi64(a0, _mm256_load_si256(v + i));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256(v + i + 1));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256(v + i + 2));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256(v + i + 3));
    }
    __m256i a = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
    uint64_t t[4];
    _mm256_storeu_si256((__m256i *)t, a);
    return t[0] ^ t[1] ^ t[2] ^ t[3];
}

static int have_avx2(void) { return __builtin_cpu_supports("avx2"); }
#else
static uint64_t read_avx2(const uint64_t *p, size_t n) { return read_scalar(p, n); }
static int have_avx2(void) { return 0; }
#endif

double pg_membw_read_gbs(size_t bytes, int n_threads, double seconds) {
    if (n_threads <= 0) n_threads = omp_get_max_threads();
    size_t part = bytes / (size_t)n_threads / CHUNK_ALIGN * CHUNK_ALIGN;
    if (part == 0) return 0.0;
    size_t total = part * (size_t)n_threads;
    uint8_t *buf = aligned_alloc(CHUNK_ALIGN, total);
    if (!buf) return 0.0;
    const int avx2 = have_avx2();

    /* First touch by the thread that will read the part (NUMA placement, no page faults later). */
#pragma omp parallel num_threads(n_threads)
    {
        /* the runtime may give fewer threads than asked: then some take several parts */
        /* distinct contents per word: pages that are all alike can be merged by the host
         * (KSM, zero-page dedup) and then read from cache, inflating the figure */
        for (int k = omp_get_thread_num(); k < n_threads; k += omp_get_num_threads()) {
            uint64_t *p = (uint64_t *)(buf + (size_t)k * part);
            for (size_t i = 0; i < part / 8; i++) p[i] = ((uint64_t)k << 56) ^ (i * 0x9e3779b97f4a7c15ULL);
        }
    }

    double best = 0.0, t_start = pg_now_s();
    volatile uint64_t sink = 0;
    for (int rep = 0; rep < 3 || pg_now_s() - t_start < seconds; rep++) {
        uint64_t acc = 0;
        double t0 = pg_now_s();
#pragma omp parallel num_threads(n_threads) reduction(^ : acc)
        {
            for (int k = omp_get_thread_num(); k < n_threads; k += omp_get_num_threads()) {
                const uint64_t *p = (const uint64_t *)(buf + (size_t)k * part);
                acc ^= avx2 ? read_avx2(p, part) : read_scalar(p, part);
            }
        }
        double dt = pg_now_s() - t0;
        sink ^= acc;
        double gbs = (double)total / dt * 1e-9;
        if (gbs > best) best = gbs;
        if (rep > 1000) break; /* tiny buffers: enough samples */
    }
    (void)sink;
    free(buf);
    return best;
}
