/* Matmul throughput for the TinyLlama-1.1B shapes, every weight type, at 1 and 2 threads:
 *   n_tok = 1   (decode): GB/s of weights streamed from DRAM, against a streaming-read probe
 *                         (several copies of the matrix are cycled so none stays in the L3);
 *   n_tok = 128 (prefill): GFLOP/s (2 * n_in * n_out * n_tok per product);
 * plus whole-model estimates (22 layers + output head) and, for 2048x2048, the speed-up over
 * kref_matmul. Usage: bench_matmul [--no-ref] [--threads N] [--json FILE] [type ...]
 * (types: f16 q8_0 ...). Times are the fastest of many calls; on a shared machine compare the
 * percentages of the probes measured in the same run, not absolute figures across runs. */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/dtype.h"
#include "kernels/kernels.h"

typedef struct {
    const char *name;
    int64_t n_out, n_in, per_layer; /* matrices of this shape per layer (0: once per model) */
} shape;

static const shape k_shapes[] = {
    {"attn_q/o", 2048, 2048, 2}, {"attn_k/v", 256, 2048, 2}, {"ffn_gate/up", 5632, 2048, 2},
    {"ffn_down", 2048, 5632, 1}, {"output", 32000, 2048, 0},
};
#define N_LAYER 22
#define TRAFFIC_MIN (384u << 20) /* bytes cycled per decode pass: well above the 32 MiB L3 */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Streaming-read bandwidth in GB/s with nth threads over a buffer much larger than the caches. */
/* pf: also software-prefetch 2 KiB ahead; the probe reports the better of both ways */
__attribute__((target("avx2"))) static uint64_t sum_avx2(const uint64_t *p, size_t n, int pf) {
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i + 16 <= n; i += 16) {
        if (pf) {
            _mm_prefetch((const char *)(p + i + 256), _MM_HINT_T0);
            _mm_prefetch((const char *)(p + i + 264), _MM_HINT_T0);
        }
        s0 = _mm256_add_epi64(s0, _mm256_load_si256((const __m256i *)(p + i)));
        s1 = _mm256_add_epi64(s1, _mm256_load_si256((const __m256i *)(p + i + 4)));
        s2 = _mm256_add_epi64(s2, _mm256_load_si256((const __m256i *)(p + i + 8)));
        s3 = _mm256_add_epi64(s3, _mm256_load_si256((const __m256i *)(p + i + 12)));
    }
    __m256i s = _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3));
    return (uint64_t)(_mm256_extract_epi64(s, 0) + _mm256_extract_epi64(s, 1) + _mm256_extract_epi64(s, 2) +
                      _mm256_extract_epi64(s, 3));
}
static uint64_t sum_base(const uint64_t *p, size_t n) {
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i + 4 <= n; i += 4) s0 += p[i], s1 += p[i + 1], s2 += p[i + 2], s3 += p[i + 3];
    return s0 + s1 + s2 + s3;
}

/* FMA peak in GFLOP/s with nth threads: 12 independent chains per thread. Printed beside the
 * results because a shared machine's speed varies; percentages of it compare across runs. */
/* (no asm barrier on the chains: it makes GCC store them every iteration, and stores then bound it) */
__attribute__((target("avx2,fma"))) static double fma_chains(long iters) {
    __m256 a[12], b = _mm256_set1_ps(0.9999f), c = _mm256_set1_ps(1e-4f);
    for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps(i * 1e-3f);
    for (long k = 0; k < iters; k++) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) a[i] = _mm256_fmadd_ps(a[i], b, c);
    }
    float s = 0;
    for (int i = 0; i < 12; i++) s += a[i][0];
    return s;
}

static double probe_fma(int nth) {
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return 0;
    const long iters = 400000; /* ~3 ms: short runs, so the best one is undisturbed */
    double best = 0;
    volatile double sink = 0;
    for (int rep = 0; rep < 60; rep++) {
        double t0 = now();
#pragma omp parallel num_threads(nth)
        {
            double s = fma_chains(iters);
#pragma omp atomic
            sink += s;
        }
        double g = nth * iters * 12.0 * 16 / (now() - t0) / 1e9;
        if (g > best) best = g;
    }
    return best;
}

static double probe_bandwidth(int nth) {
    const size_t bytes = 128u << 20, n = bytes / 8;
    uint64_t *buf = aligned_alloc(64, bytes);
    int avx2 = __builtin_cpu_supports("avx2");
#pragma omp parallel for num_threads(nth) schedule(static)
    for (size_t i = 0; i < n; i++) buf[i] = i;
    double best = 0;
    volatile uint64_t sink = 0;
    for (int rep = 0; rep < 40; rep++) {
        double t0 = now();
#pragma omp parallel num_threads(nth)
        {
            int ith = omp_get_thread_num(), nt = omp_get_num_threads();
            size_t a = (n * ith / nt) & ~(size_t)15, b = (n * (ith + 1) / nt) & ~(size_t)15;
            uint64_t s = avx2 ? sum_avx2(buf + a, b - a, rep & 1) : sum_base(buf + a, b - a);
#pragma omp atomic
            sink += s;
        }
        double gbs = bytes / (now() - t0) / 1e9;
        if (gbs > best) best = gbs;
    }
    free(buf);
    return best;
}

/* A weight matrix: 64 properly quantized random rows, repeated (quantizing 65M values with the
 * reference K-quant search would take minutes, and the kernels' speed does not depend on values). */
static void *make_weights(int wtype, int64_t n_in, int64_t n_out, size_t *row_bytes) {
    size_t row;
    dtype_row_size(wtype, n_in, &row);
    *row_bytes = row;
    char *w = aligned_alloc(64, (row * (size_t)n_out + 63) & ~(size_t)63);
    float *x = malloc(sizeof(float) * (size_t)n_in);
    unsigned s = 1;
    int64_t seed_rows = n_out < 64 ? n_out : 64;
    for (int64_t r = 0; r < seed_rows; r++) {
        for (int64_t i = 0; i < n_in; i++) {
            s = s * 1103515245u + 12345u;
            x[i] = ((int)(s >> 9) % 2001 - 1000) * 1e-4f;
        }
        kref_traits(wtype)->from_float(x, w + r * row, n_in);
    }
    for (int64_t r = seed_rows; r < n_out; r++) memcpy(w + r * row, w + (r % seed_rows) * row, row);
    free(x);
    return w;
}

typedef void (*mm_fn)(int, const void *, int64_t, int64_t, const float *, int64_t, float *, void *);

/* Fastest call of mm over the given weight copies (cycled), at least min_reps calls and about
 * min_s seconds: on a shared machine the minimum is the least disturbed measurement. */
static double time_mm(mm_fn mm, int wtype, void **copies, int n_copies, int64_t n_in, int64_t n_out, const float *x,
                      int64_t n_tok, float *y, void *work, int min_reps, double min_s) {
    double ts[256];
    int n = 0;
    mm(wtype, copies[0], n_in, n_out, x, n_tok, y, work); /* warm-up */
    double start = now();
    while (n < 256 && (n < min_reps || now() - start < min_s)) {
        double t0 = now();
        mm(wtype, copies[n % n_copies], n_in, n_out, x, n_tok, y, work);
        ts[n++] = now() - t0;
    }
    qsort(ts, (size_t)n, sizeof ts[0], cmp_d);
    return ts[0];
}

int main(int argc, char **argv) {
    int want_ref = 1, only_threads = 0;
    FILE *json = NULL;
    int types[PAGODA_DTYPE_COUNT], n_types = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--no-ref"))
            want_ref = 0;
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            only_threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json") && i + 1 < argc) {
            if (!(json = fopen(argv[++i], "w"))) {
                perror(argv[i]);
                return 1;
            }
        }
        else if (dtype_from_name(argv[i]) >= 0 && k_matmul_supported(dtype_from_name(argv[i])))
            types[n_types++] = dtype_from_name(argv[i]);
        else {
            fprintf(stderr, "usage: %s [--no-ref] [--threads N] [--json FILE] [type ...]\n", argv[0]);
            return 2;
        }
    }
    if (!n_types) {
        static const int all[] = {PAGODA_DTYPE_F32,  PAGODA_DTYPE_F16,  PAGODA_DTYPE_BF16, PAGODA_DTYPE_Q8_0,
                                  PAGODA_DTYPE_Q4_0, PAGODA_DTYPE_Q4_1, PAGODA_DTYPE_Q5_0, PAGODA_DTYPE_Q5_1,
                                  PAGODA_DTYPE_Q4_K, PAGODA_DTYPE_Q5_K, PAGODA_DTYPE_Q6_K};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) types[n_types++] = all[i];
    }
    int thread_list[2] = {1, 2}, n_thr = 2;
    if (only_threads > 0) thread_list[0] = only_threads, n_thr = 1;

    printf("isa %s, %d cores\n", kcpu_isa(), omp_get_num_procs());
    double bw[2], peak[2];
    for (int k = 0; k < n_thr; k++) {
        bw[k] = probe_bandwidth(thread_list[k]);
        peak[k] = probe_fma(thread_list[k]);
        printf("probes, %d thread(s): streaming read %.1f GB/s, FMA peak %.1f GFLOP/s\n", thread_list[k], bw[k],
               peak[k]);
    }
    if (json) {
        fprintf(json, "{\"isa\": \"%s\", \"probes\": [", kcpu_isa());
        for (int k = 0; k < n_thr; k++)
            fprintf(json, "%s{\"threads\": %d, \"read_gbs\": %.2f, \"fma_gflops\": %.2f}", k ? ", " : "",
                    thread_list[k], bw[k], peak[k]);
        fprintf(json, "],\n \"results\": [");
    }
    int n_json = 0;
    const int64_t n_tok_pp = 128;
    float *x = malloc(sizeof(float) * 5632 * n_tok_pp);
    for (int64_t i = 0; i < 5632 * n_tok_pp; i++) x[i] = (float)((i * 7919) % 2001 - 1000) * 1e-3f;
    float *y = malloc(sizeof(float) * 32000 * n_tok_pp);

    for (int ti = 0; ti < n_types; ti++) {
        int wt = types[ti];
        printf("\n== %s ==\n", dtype_name(wt));
        printf("%-12s %11s %3s | %9s %7s %5s | %9s %8s %5s\n", "matrix", "shape", "thr", "tok1 us", "GB/s",
               "%bw", "tok128 ms", "GFLOP/s", "%peak");
        double model_t1[2] = {0, 0}, model_pp[2] = {0, 0}, model_bytes = 0, model_flops = 0;
        for (size_t si = 0; si < sizeof k_shapes / sizeof k_shapes[0]; si++) {
            const shape *sh = &k_shapes[si];
            size_t row;
            void *w0 = make_weights(wt, sh->n_in, sh->n_out, &row);
            size_t bytes = row * (size_t)sh->n_out;
            int n_copies = (int)((TRAFFIC_MIN + bytes - 1) / bytes);
            if (n_copies > 64) n_copies = 64;
            void **copies = malloc(sizeof(void *) * (size_t)n_copies);
            copies[0] = w0;
            for (int c = 1; c < n_copies; c++) {
                copies[c] = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
                memcpy(copies[c], w0, bytes);
            }
            void *work = malloc(k_matmul_work_size(wt, sh->n_in, n_tok_pp) + 64);
            double mult = sh->per_layer ? (double)sh->per_layer * N_LAYER : 1.0;
            double flops = 2.0 * sh->n_in * sh->n_out * n_tok_pp;
            model_bytes += mult * bytes;
            model_flops += mult * flops;
            for (int k = 0; k < n_thr; k++) {
                kcpu_set_threads(thread_list[k]);
                double t1 = time_mm(kcpu_matmul, wt, copies, n_copies, sh->n_in, sh->n_out, x, 1, y, work,
                                    2 * n_copies, 0.3);
                double tp = time_mm(kcpu_matmul, wt, copies, 1, sh->n_in, sh->n_out, x, n_tok_pp, y, work, 3, 0.5);
                model_t1[k] += mult * t1;
                model_pp[k] += mult * tp;
                printf("%-12s %5lldx%-5lld %3d | %9.1f %7.1f %5.0f | %9.2f %8.1f %5.0f\n", sh->name,
                       (long long)sh->n_out, (long long)sh->n_in, thread_list[k], t1 * 1e6, bytes / t1 / 1e9,
                       100 * bytes / t1 / 1e9 / bw[k], tp * 1e3, flops / tp / 1e9, 100 * flops / tp / 1e9 / peak[k]);
                if (json)
                    fprintf(json,
                            "%s\n  {\"type\": \"%s\", \"matrix\": \"%s\", \"n_out\": %lld, \"n_in\": %lld, "
                            "\"threads\": %d, \"decode_us\": %.2f, \"decode_gbs\": %.2f, \"prefill_ms\": %.3f, "
                            "\"prefill_gflops\": %.2f}",
                            n_json++ ? "," : "", dtype_name(wt), sh->name, (long long)sh->n_out, (long long)sh->n_in,
                            thread_list[k], t1 * 1e6, bytes / t1 / 1e9, tp * 1e3, flops / tp / 1e9);
            }
            if (want_ref && si == 0) {
                /* the reference is single-threaded and slow: one shape, fewer tokens for prefill */
                const int64_t n_tok_ref = 16;
                kcpu_set_threads(1);
                double r1 = time_mm(kref_matmul, wt, copies, n_copies, sh->n_in, sh->n_out, x, 1, y, work, 3, 0.2);
                double c1 = time_mm(kcpu_matmul, wt, copies, n_copies, sh->n_in, sh->n_out, x, 1, y, work, 3, 0.2);
                double rp = time_mm(kref_matmul, wt, copies, 1, sh->n_in, sh->n_out, x, n_tok_ref, y, work, 1, 0.0);
                double cp = time_mm(kcpu_matmul, wt, copies, 1, sh->n_in, sh->n_out, x, n_tok_ref, y, work, 3, 0.2);
                printf("vs kref_matmul (1 thread, %s): n_tok=1 %.1fx faster, n_tok=%lld %.1fx faster\n", sh->name,
                       r1 / c1, (long long)n_tok_ref, rp / cp);
            }
            for (int c = 0; c < n_copies; c++) free(copies[c]);
            free(copies);
            free(work);
        }
        for (int k = 0; k < n_thr; k++)
            printf("model (22 layers + output), %d thread(s): decode matmuls %.1f ms/token = %.1f GB/s (%.0f%% of "
                   "probe) -> %.1f tok/s; prefill matmuls %.1f GFLOP/s (%.0f%% of FMA peak) -> %.1f tok/s\n",
                   thread_list[k], model_t1[k] * 1e3, model_bytes / model_t1[k] / 1e9,
                   100 * model_bytes / model_t1[k] / 1e9 / bw[k], 1 / model_t1[k], model_flops / model_pp[k] / 1e9,
                   100 * model_flops / model_pp[k] / 1e9 / peak[k], n_tok_pp / model_pp[k]);
    }
    if (json) {
        fprintf(json, "\n]}\n");
        fclose(json);
    }
    free(x), free(y);
    return 0;
}
