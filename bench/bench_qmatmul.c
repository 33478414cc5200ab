/* kcpu_qmatmul (Hugging Face quantized weights) against kcpu_matmul on Q4_0 and on F16 weights,
 * same shape, same run: GFLOP/s (2 * n_in * n_out * n_tok per product) at n_tok 1, 128 and 512
 * (512: the F16 / Q4_0 references and W8A8 only), median of several calls, the variants
 * interleaved (two calls of each in turn, the second timed, so that every variant finds its
 * weights as warm in the caches as they fit, and a shared machine disturbs all alike); ratios
 * against Q4_0 and F16 at the same n_tok.
 * Usage: bench_qmatmul [--threads N] [--n-in N] [--n-out N] [--group G] [--isa 0|1|2] [--reps K]
 *                      [--only SUBSTRING] [--tok N]
 * (--isa: force the level for every variant, default: this CPU's best, as in production). */
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

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#define MAX_REPS 64
#define N_TOK 3

typedef struct {
    const char *name;
    int dense; /* PAGODA_DTYPE_* for kcpu_matmul, or -1: kcpu_qmatmul */
    k_qweight w;
    k_act_kind act;
    int at512; /* also at n_tok 512 */
    double med[N_TOK];
    double t[MAX_REPS];
} variant;

int main(int argc, char **argv) {
    int64_t n_in = 2048, n_out = 5632, gs = 128, only_tok = 0;
    int threads = 0, reps_scale = 1;
    const char *only = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--n-in")) n_in = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--n-out")) n_out = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--group")) gs = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--isa")) kcpu_isa_force(atoi(argv[i + 1]));
        else if (!strcmp(argv[i], "--reps")) reps_scale = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--only")) only = argv[i + 1];
        else if (!strcmp(argv[i], "--tok")) only_tok = atoll(argv[i + 1]);
        else {
            fprintf(stderr,
                    "usage: %s [--threads N] [--n-in N] [--n-out N] [--group G] [--isa L] [--reps K] "
                    "[--only S] [--tok N]\n",
                    argv[0]);
            return 2;
        }
    }
    if (reps_scale < 1) reps_scale = 1;
    kcpu_set_threads(threads);
    const int64_t toks[N_TOK] = {1, 128, 512}, ng = (n_in + gs - 1) / gs, max_tok = toks[N_TOK - 1];
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
    /* the dense references: the same kind of weights, quantized to Q4_0, or as F16 */
    size_t q40_row, f16_row;
    dtype_row_size(PAGODA_DTYPE_Q4_0, n_in, &q40_row);
    dtype_row_size(PAGODA_DTYPE_F16, n_in, &f16_row);
    char *q40 = malloc(q40_row * (size_t)n_out), *f16 = malloc(f16_row * (size_t)n_out);
    float *xr = malloc(sizeof(float) * (size_t)n_in);
    for (int64_t r = 0; r < n_out; r++) {
        for (int64_t i = 0; i < n_in; i++) xr[i] = (float)((r * 31 + i * 17) % 201 - 100) * 1e-3f;
        kref_traits(PAGODA_DTYPE_Q4_0)->from_float(xr, q40 + (size_t)r * q40_row, n_in);
        kref_traits(PAGODA_DTYPE_F16)->from_float(xr, f16 + (size_t)r * f16_row, n_in);
    }
    float *x = malloc(sizeof(float) * (size_t)(n_in * max_tok));
    for (int64_t i = 0; i < n_in * max_tok; i++) x[i] = (float)(i % 97 - 48) * 0.02f;
    float *y = malloc(sizeof(float) * (size_t)(n_out * max_tok));

    k_qweight w4 = {K_QW_INT4, c4, n_in, n_out, gs, scales, NULL, NULL};
    k_qweight w4z = w4, w8 = {K_QW_INT8, c8, n_in, n_out, gs, scales, NULL, NULL}, wf8 = w8;
    w4z.zeros = zeros;
    wf8.kind = K_QW_FP8;
    variant v[] = {
        {"q4_0 kcpu_matmul", PAGODA_DTYPE_Q4_0, {0}, 0, 1, {0}, {0}},
        {"f16 kcpu_matmul", PAGODA_DTYPE_F16, {0}, 0, 1, {0}, {0}},
        {"int4 act float", -1, w4, K_ACT_FLOAT, 0, {0}, {0}},
        {"int4+zeros act float", -1, w4z, K_ACT_FLOAT, 0, {0}, {0}},
        {"int4 act int8", -1, w4, K_ACT_INT8, 0, {0}, {0}},
        {"int4+zeros act int8", -1, w4z, K_ACT_INT8, 0, {0}, {0}},
        {"int4 act int16", -1, w4, K_ACT_INT16, 0, {0}, {0}},
        {"int4+zeros act int16", -1, w4z, K_ACT_INT16, 0, {0}, {0}},
        {"int8 act int8 (W8A8)", -1, w8, K_ACT_INT8, 1, {0}, {0}},
        {"int8 act float", -1, w8, K_ACT_FLOAT, 0, {0}, {0}},
        {"fp8 act fp8", -1, wf8, K_ACT_FP8, 0, {0}, {0}},
        {"fp8 act float", -1, wf8, K_ACT_FLOAT, 0, {0}, {0}},
    };
    const int nv = (int)(sizeof v / sizeof v[0]);
    size_t ws = 0;
    for (int d = 0; d < 2; d++) {
        size_t z = k_matmul_work_size(d ? PAGODA_DTYPE_F16 : PAGODA_DTYPE_Q4_0, n_in, max_tok);
        ws = z > ws ? z : ws;
    }
    for (int a = K_ACT_FLOAT; a <= K_ACT_INT16; a++) {
        size_t ws2 = k_qmatmul_work_size(&w4, max_tok, (k_act_kind)a);
        ws = ws > ws2 ? ws : ws2;
    }
    void *work = aligned_alloc(64, (ws + 63) & ~(size_t)63);
    for (int k = 0; k < N_TOK; k++) {
        int64_t nt = toks[k];
        if (only_tok && nt != only_tok) continue;
        int reps = (nt == 1 ? 41 : nt == 128 ? 7 : 5) * reps_scale;
        if (reps > MAX_REPS) reps = MAX_REPS;
        for (int rep = -1; rep < reps; rep++) /* rep -1: warm-up */
            for (int i = 0; i < nv; i++) {
                if ((nt == 512 && !v[i].at512) || (only && i > 1 && !strstr(v[i].name, only))) continue;
                double t0 = 0;
                for (int call = 0; call < 2; call++) { /* the second call is timed: weights as warm as they fit */
                    t0 = now();
                    if (v[i].dense >= 0)
                        kcpu_matmul((pagoda_dtype)v[i].dense,
                                    v[i].dense == PAGODA_DTYPE_F16 ? (const void *)f16 : q40, n_in, n_out, x, nt, y,
                                    work);
                    else
                        kcpu_qmatmul(&v[i].w, v[i].act, x, nt, y, n_out, work);
                }
                if (rep >= 0) v[i].t[rep] = now() - t0;
            }
        for (int i = 0; i < nv; i++) {
            if ((nt == 512 && !v[i].at512) || (only && i > 1 && !strstr(v[i].name, only))) continue;
            qsort(v[i].t, (size_t)reps, sizeof(double), cmp_d);
            v[i].med[k] = v[i].t[reps / 2];
        }
    }
    char cpu[128] = "?";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
                snprintf(cpu, sizeof cpu, "%s", strchr(line, ':') + 2);
                cpu[strcspn(cpu, "\n")] = 0;
                break;
            }
        fclose(f);
    }
    printf("n_in %lld n_out %lld group %lld threads %d isa %s cpu %s (median GFLOP/s)\n", (long long)n_in,
           (long long)n_out, (long long)gs, kcpu_get_threads(), kcpu_isa(), cpu);
    printf("%-22s", "variant");
    for (int k = 0; k < N_TOK; k++) printf(" | t=%-4lld GFLOP/s  /q4_0   /f16", (long long)toks[k]);
    printf("\n");
    for (int i = 0; i < nv; i++) {
        if (only && i > 1 && !strstr(v[i].name, only)) continue;
        printf("%-22s", v[i].name);
        for (int k = 0; k < N_TOK; k++) {
            if (v[i].med[k] <= 0 || v[0].med[k] <= 0 || v[1].med[k] <= 0) {
                printf(" | %28s", "-");
                continue;
            }
            double g = 2.0 * n_in * n_out * toks[k] / v[i].med[k] * 1e-9;
            printf(" | %14.1f %7.2f %6.2f", g, v[0].med[k] / v[i].med[k], v[1].med[k] / v[i].med[k]);
        }
        printf("\n");
    }
    free(c4), free(c8), free(scales), free(zeros), free(q40), free(f16), free(xr), free(x), free(y), free(work);
    return 0;
}
