/* kcpu_qmatmul (Hugging Face quantized weights) against kcpu_matmul on Q4_0, same shape, same run:
 * GFLOP/s (2 * n_in * n_out * n_tok per product) at n_tok 1 and 128, best of several calls,
 * variants interleaved so a shared machine disturbs them alike.
 * Usage: bench_qmatmul [--threads N] [--n-in N] [--n-out N] [--group G] [--isa 0|1|2]
 * (--isa 1: AVX2, the level of the qmatmul kernels, for Q4_0 too). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/dtype.h"
#include "kernels/cpu/cpu_impl.h"
#include "kernels/kernels.h"
#include "kernels/qmatmul.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct {
    const char *name;
    int q4_0; /* 1: kcpu_matmul on Q4_0 */
    k_qweight w;
    k_act_kind act;
    double best[2];
} variant;

int main(int argc, char **argv) {
    int64_t n_in = 2048, n_out = 5632, gs = 128;
    int threads = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--n-in")) n_in = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--n-out")) n_out = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--group")) gs = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--isa")) kcpu_isa_force(atoi(argv[i + 1]));
        else {
            fprintf(stderr, "usage: %s [--threads N] [--n-in N] [--n-out N] [--group G] [--isa L]\n", argv[0]);
            return 2;
        }
    }
    kcpu_set_threads(threads);
    const int64_t toks[2] = {1, 128}, ng = (n_in + gs - 1) / gs;
    unsigned s = 1;
    uint8_t *c4 = malloc((size_t)(n_out * n_in / 2)), *c8 = malloc((size_t)(n_out * n_in));
    for (int64_t i = 0; i < n_out * n_in; i++) {
        s = s * 1103515245u + 12345u;
        c8[i] = (uint8_t)(s >> 16);
        if ((c8[i] & 0x7f) == 0x7f) c8[i] ^= 1;
        if (i < n_out * n_in / 2) c4[i] = (uint8_t)(s >> 8);
    }
    float *scales = malloc(sizeof(float) * (size_t)(n_out * ng));
    for (int64_t i = 0; i < n_out * ng; i++) scales[i] = 0.01f + 0.001f * (float)(i % 7);
    uint8_t *zeros = malloc((size_t)(n_out * ng));
    for (int64_t i = 0; i < n_out * ng; i++) zeros[i] = (uint8_t)(i % 16);
    size_t q40_row;
    dtype_row_size(PAGODA_DTYPE_Q4_0, n_in, &q40_row);
    char *q40 = malloc(q40_row * (size_t)n_out);
    float *xr = malloc(sizeof(float) * (size_t)n_in);
    for (int64_t r = 0; r < n_out; r++) {
        for (int64_t i = 0; i < n_in; i++) xr[i] = (float)((r * 31 + i * 17) % 201 - 100) * 1e-3f;
        kref_traits(PAGODA_DTYPE_Q4_0)->from_float(xr, q40 + (size_t)r * q40_row, n_in);
    }
    float *x = malloc(sizeof(float) * (size_t)(n_in * toks[1]));
    for (int64_t i = 0; i < n_in * toks[1]; i++) x[i] = (float)(i % 97 - 48) * 0.02f;
    float *y = malloc(sizeof(float) * (size_t)(n_out * toks[1]));

    k_qweight w4 = {K_QW_INT4, c4, n_in, n_out, gs, scales, NULL, NULL};
    k_qweight w4z = w4, w8 = {K_QW_INT8, c8, n_in, n_out, gs, scales, NULL, NULL}, wf8 = w8;
    w4z.zeros = zeros;
    wf8.kind = K_QW_FP8;
    variant v[] = {
        {"q4_0 kcpu_matmul", 1, {0}, 0, {0, 0}},
        {"int4 act float", 0, w4, K_ACT_FLOAT, {0, 0}},
        {"int4+zeros act float", 0, w4z, K_ACT_FLOAT, {0, 0}},
        {"int4 act int8", 0, w4, K_ACT_INT8, {0, 0}},
        {"int4+zeros act int8", 0, w4z, K_ACT_INT8, {0, 0}},
        {"int8 act int8", 0, w8, K_ACT_INT8, {0, 0}},
        {"int8 act float", 0, w8, K_ACT_FLOAT, {0, 0}},
        {"fp8 act fp8", 0, wf8, K_ACT_FP8, {0, 0}},
    };
    const int nv = (int)(sizeof v / sizeof v[0]);
    size_t ws = k_matmul_work_size(PAGODA_DTYPE_Q4_0, n_in, toks[1]);
    size_t ws2 = k_qmatmul_work_size(&w4, toks[1], K_ACT_INT8);
    void *work = aligned_alloc(64, ((ws > ws2 ? ws : ws2) + 63) & ~(size_t)63);
    for (int k = 0; k < 2; k++) {
        int64_t nt = toks[k];
        int reps = nt == 1 ? 30 : 4;
        for (int rep = 0; rep < reps; rep++)
            for (int i = 0; i < nv; i++) {
                double t0 = now();
                if (v[i].q4_0)
                    kcpu_matmul(PAGODA_DTYPE_Q4_0, q40, n_in, n_out, x, nt, y, work);
                else
                    kcpu_qmatmul(&v[i].w, v[i].act, x, nt, y, n_out, work);
                double dt = now() - t0;
                if (rep == 0 || dt < v[i].best[k]) v[i].best[k] = dt;
            }
    }
    printf("n_in %lld n_out %lld group %lld threads %d isa %s\n", (long long)n_in, (long long)n_out, (long long)gs,
           kcpu_get_threads(), kcpu_isa());
    printf("%-22s %12s %8s %12s %8s\n", "variant", "GFLOP/s t=1", "vs q4_0", "GFLOP/s t=128", "vs q4_0");
    for (int i = 0; i < nv; i++) {
        double g1 = 2.0 * n_in * n_out / v[i].best[0] * 1e-9, g128 = 2.0 * n_in * n_out * 128 / v[i].best[1] * 1e-9;
        printf("%-22s %12.1f %8.2f %12.1f %8.2f\n", v[i].name, g1, v[0].best[0] / v[i].best[0], g128,
               v[0].best[1] / v[i].best[1]);
    }
    free(c4), free(c8), free(scales), free(zeros), free(q40), free(xr), free(x), free(y), free(work);
    return 0;
}
