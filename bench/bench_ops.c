/* Attention timing: kref_attention (scalar spec, one thread) against kcpu_attention at each ISA
 * level and at 1 and 2 threads, for a decode step and prefill chunks of a llama-like layer
 * (32 query heads, 4 KV heads, head_dim 64, paged KV with block size 16). Prints ms per call
 * and speedups as ratios measured in this run; also a few elementwise ops. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/cpu/cpu_impl.h"
#include "kernels/ops.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static unsigned long long g_rng = 42;
static float frand(void) {
    g_rng = g_rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((g_rng >> 40) * (1.0 / 8388608.0) - 1.0);
}

typedef struct {
    const char *name;
    int n_q, pos0, n_head, n_head_kv, hd, bs, window;
} shape;

typedef void (*attn_fn)(float *, const float *, int, int32_t, int, float, int, const k_kv_view *);

/* Best of several runs, each run at least ~min_s long in total over reps. */
static double time_attn(attn_fn f, float *out, const float *q, const shape *s, const k_kv_view *kv, double min_s) {
    float scale = 1.0f / sqrtf((float)s->hd);
    f(out, q, s->n_q, s->pos0, s->n_head, scale, s->window, kv); /* warm caches and threads */
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        int iters = 0;
        double t0 = now_s(), t;
        do {
            f(out, q, s->n_q, s->pos0, s->n_head, scale, s->window, kv);
            iters++;
            t = now_s() - t0;
        } while (t < min_s / 5);
        if (t / iters < best) best = t / iters;
    }
    return best;
}

static void bench_shape(const shape *s) {
    int n_kv = s->pos0 + s->n_q;
    int n_blk = (n_kv + s->bs - 1) / s->bs;
    size_t slot = (size_t)s->n_head_kv * s->hd, total = (size_t)n_blk * s->bs * slot;
    float *k = malloc(total * sizeof(float)), *v = malloc(total * sizeof(float));
    for (size_t i = 0; i < total; i++) k[i] = frand(), v[i] = frand();
    int32_t *table = malloc(n_blk * sizeof(int32_t));
    for (int i = 0; i < n_blk; i++) table[i] = (int32_t)((i * 7919L) % n_blk); /* scattered blocks */
    /* the permutation above needs gcd(7919, n_blk) = 1; 7919 is prime, fine unless n_blk % 7919 == 0 */
    k_kv_view kv = {k, v, table, s->bs, s->n_head_kv, s->hd, 0};
    size_t nq = (size_t)s->n_q * s->n_head * s->hd;
    float *q = malloc(nq * sizeof(float)), *out = malloc(nq * sizeof(float));
    for (size_t i = 0; i < nq; i++) q[i] = frand();

    printf("\n%s: n_q=%d pos0=%d heads=%d/%d head_dim=%d block=%d window=%d\n", s->name, s->n_q, s->pos0,
           s->n_head, s->n_head_kv, s->hd, s->bs, s->window);
    kcpu_set_threads(1);
    double t_ref = time_attn(kref_attention, out, q, s, &kv, 0.5);
    double kv_mb = 2.0 * n_kv * slot * sizeof(float) / 1e6;
    printf("  %-22s %9.3f ms\n", "kref (1 thread)", t_ref * 1e3);
    static const char *isa_name[] = {"scalar", "avx2", "avx512"};
    for (int isa = 0; isa <= kcpu_isa_max(); isa++) {
        kcpu_isa_force(isa);
        double t1 = 0;
        for (int nt = 1; nt <= 2; nt++) {
            kcpu_set_threads(nt);
            double t = time_attn(kcpu_attention, out, q, s, &kv, 0.5);
            if (nt == 1) t1 = t;
            char label[64];
            snprintf(label, sizeof label, "kcpu %s, %d thread%s", isa_name[isa], nt, nt > 1 ? "s" : "");
            printf("  %-22s %9.3f ms   x%6.2f vs kref", label, t * 1e3, t_ref / t);
            if (nt > 1) printf("   x%4.2f vs 1 thread", t1 / t);
            if (s->n_q == 1) printf("   %6.1f GB/s of K+V", kv_mb / 1e3 / t);
            printf("\n");
        }
    }
    kcpu_isa_force(kcpu_isa_max());
    free(k), free(v), free(table), free(q), free(out);
}

typedef void (*unary_fn)(float *, int64_t);

static void bench_pointwise(void) {
    enum { N = 11008 };
    float *x = malloc(N * sizeof(float)), *u = malloc(N * sizeof(float)), *y = malloc(N * sizeof(float));
    for (int i = 0; i < N; i++) x[i] = 4 * frand(), u[i] = frand();
    struct { const char *name; int which; } ops[] = {{"softmax", 0}, {"silu_mul", 1}, {"gelu", 2}, {"rmsnorm", 3}};
    printf("\nelementwise, n=%d (1 thread): ns per call, kref vs kcpu (%s)\n", N,
           kcpu_isa_max() == KCPU_ISA_AVX512 ? "avx512" : kcpu_isa_max() == KCPU_ISA_AVX2 ? "avx2" : "scalar");
    for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
        double t[2];
        for (int impl = 0; impl < 2; impl++) {
            int iters = 2000;
            double t0 = now_s();
            for (int it = 0; it < iters; it++) {
                memcpy(y, x, sizeof(float) * N);
                switch (ops[o].which) {
                case 0: (impl ? kcpu_softmax : kref_softmax)(y, N); break;
                case 1: (impl ? kcpu_silu_mul : kref_silu_mul)(y, u, N); break;
                case 2: (impl ? kcpu_gelu : kref_gelu)(y, N); break;
                default: (impl ? kcpu_rmsnorm : kref_rmsnorm)(y, y, u, N, 1e-5f); break;
                }
            }
            t[impl] = (now_s() - t0) / iters;
        }
        printf("  %-10s kref %9.0f ns   kcpu %9.0f ns   x%5.2f\n", ops[o].name, t[0] * 1e9, t[1] * 1e9, t[0] / t[1]);
    }
    free(x), free(u), free(y);
}

int main(void) {
    static const shape shapes[] = {
        {"decode 2048 keys", 1, 2047, 32, 4, 64, 16, 0},
        {"decode 2048 keys, hd 128", 1, 2047, 32, 8, 128, 16, 0},
        {"prefill 128 on 1024 cached", 128, 1024, 32, 4, 64, 16, 0},
        {"prefill 512", 512, 0, 32, 4, 64, 16, 0},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) bench_shape(&shapes[i]);
    bench_pointwise();
    return 0;
}
