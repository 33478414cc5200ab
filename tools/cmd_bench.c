/* pagoda bench -m MODEL: prompt processing (pp) and generation (tg) speed at several thread
 * counts, next to a memory-bandwidth probe so generation can be stated as a fraction of the
 * bandwidth limit (bandwidth / weight bytes read per token). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli_common.h"
#include "commands.h"
#include "core/dtype.h"
#include "core/membw.h"
#include "kernels/kernels.h"
#include "core/clock.h"

static void usage(void) {
    fprintf(stderr,
            "usage: pagoda bench -m MODEL [options]     kernel speed: pp and tg of one sequence\n"
            "       pagoda bench throughput -m MODEL ... offline batched generation (engine)\n"
            "       pagoda bench serve --url URL ...     online serving benchmark against a server\n\n"
            "  -p N          prompt tokens per pp run (default 128)\n"
            "  -n N          generated tokens per tg run (default 32)\n"
            "  -t LIST       thread counts, e.g. 1,2 (default: 1 and all cores)\n"
            "  -r N          repetitions; medians are reported (default 5)\n"
            "  --no-membw    skip the bandwidth probe\n"
            "  --json PATH   also write the results as JSON\n"
            CLI_DEVICE_HELP);
}

static void count_dtype(const pg_weight *w, void *user) {
    if (w->data && w->n_out > 1) ((int *)user)[w->dtype]++;
}

/* Most common matrix type, to name the model's quantization in the report. */
static const char *main_dtype(const pg_model *m) {
    int counts[PAGODA_DTYPE_COUNT] = {0};
    model_for_each_weight(m, count_dtype, counts);
    int best = 0;
    for (int t = 1; t < PAGODA_DTYPE_COUNT; t++)
        if (counts[t] > counts[best]) best = t;
    return dtype_name(best);
}

int cmd_bench(int argc, char **argv) {
    const char *model = NULL, *json_path = NULL, *tlist = NULL;
    long n_pp = 128, n_tg = 32, reps = 5;
    int membw = 1;
    cli_device dev;
    cli_device_default(&dev);
    if (argc > 1 && !strcmp(argv[1], "throughput")) return cmd_bench_throughput(argc - 1, argv + 1);
    if (argc > 1 && !strcmp(argv[1], "serve")) return cmd_bench_serve(argc - 1, argv + 1);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return usage(), 0;
        if (!strcmp(a, "--no-membw")) { membw = 0; continue; }
        if (!v) { fprintf(stderr, "pagoda bench: option '%s' needs a value\n", a); return 2; }
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "-p")) bad = cli_int(a, v, 0, 65536, &n_pp);
        else if (!strcmp(a, "-n")) bad = cli_int(a, v, 0, 65536, &n_tg);
        else if (!strcmp(a, "-r")) bad = cli_int(a, v, 1, 1000, &reps);
        else if (!strcmp(a, "-t")) tlist = v;
        else if (!strcmp(a, "--json")) json_path = v;
        else if (cli_device_option(a, v, &dev, &bad)) {}
        else { fprintf(stderr, "pagoda bench: unknown option '%s'\n", a); return usage(), 2; }
        if (bad) return 2;
        i++;
    }
    if (!model) return usage(), 2;
    int32_t threads[16], n_threads = 0;
    if (dev.cuda) { /* threads and the host bandwidth probe say nothing about a GPU run */
        threads[n_threads++] = 1;
        membw = 0;
    } else if (tlist) {
        int32_t *ids, n;
        if (cli_parse_ids(tlist, &ids, &n) || n == 0 || n > 16) {
            fprintf(stderr, "pagoda bench: -t expects 1 to 16 thread counts\n");
            return 2;
        }
        for (int32_t i = 0; i < n; i++) threads[n_threads++] = ids[i] ? ids[i] : 1;
        free(ids);
    } else {
        kcpu_set_threads(0);
        threads[n_threads++] = 1;
        if (kcpu_get_threads() > 1) threads[n_threads++] = kcpu_get_threads();
    }

    cli_session s;
    int32_t max_batch = n_pp > 0 ? (int32_t)n_pp : 1;
    if (cli_session_open(model, (int32_t)(n_pp + n_tg + 16), max_batch, &dev, &s)) return 1;
    const pg_model_config *c = &s.m->cfg;
    uint64_t wbytes = model_weight_bytes(s.m);
    int32_t *tokens = malloc(sizeof(int32_t) * (size_t)max_batch);
    if (!tokens) return 1;
    uint64_t seed = 12345;
    for (int32_t i = 0; i < max_batch; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        tokens[i] = (int32_t)((seed >> 33) % (uint64_t)c->n_vocab);
    }
    fprintf(stderr, "bench: %s, %s %s, %.1f MiB of weights read per token, %s\n", model, c->arch_name,
            main_dtype(s.m), wbytes / 1048576.0, dev.cuda ? "cuda" : kcpu_isa());
    FILE *json = NULL;
    if (json_path && !(json = fopen(json_path, "w"))) {
        fprintf(stderr, "pagoda: cannot write %s\n", json_path);
        return 1;
    }
    if (json) fprintf(json, "{\"model\": \"%s\", \"arch\": \"%s\", \"dtype\": \"%s\", \"weight_bytes\": %llu, \"isa\": \"%s\", \"runs\": [",
                      model, c->arch_name, main_dtype(s.m), (unsigned long long)wbytes, dev.cuda ? "cuda" : kcpu_isa());
    printf("| threads | pp%ld tok/s | tg%ld tok/s | read bw GB/s | tg limit tok/s | tg / limit (median of runs) |\n", n_pp, n_tg);
    printf("|---:|---:|---:|---:|---:|---:|\n");
    int rc = 0;
    double *pp = malloc(sizeof(double) * (size_t)reps), *tg = malloc(sizeof(double) * (size_t)reps);
    double *bw = malloc(sizeof(double) * (size_t)reps), *frac = malloc(sizeof(double) * (size_t)reps);
    if (!pp || !tg || !bw || !frac) { rc = 1; goto out; }
    for (int32_t ti = 0; ti < n_threads; ti++) {
        kcpu_set_threads(threads[ti]);
        /* Each repetition measures pp, tg and then the bandwidth probe right away, so a
         * generation figure is compared with the bandwidth the machine gave at that moment
         * (on shared or virtual machines it moves by 2x from one second to the next).
         * Medians over repetitions are reported. */
        for (long r = 0; r <= reps; r++) { /* r == 0 is a warm-up */
            s.n_past = 0;
            double t0 = pg_now_s();
            if (n_pp && cli_session_eval(&s, tokens, (int32_t)n_pp, NULL)) { rc = 1; goto out; }
            double t1 = pg_now_s();
            s.n_past = 0;
            for (long i = 0; i < n_tg; i++)
                if (cli_session_eval(&s, &tokens[i % max_batch], 1, NULL)) { rc = 1; goto out; }
            double t2 = pg_now_s();
            if (r == 0) continue;
            pp[r - 1] = n_pp ? n_pp / (t1 - t0) : 0;
            tg[r - 1] = n_tg ? n_tg / (t2 - t1) : 0;
            bw[r - 1] = membw ? pg_membw_read_gbs((size_t)512 << 20, threads[ti], 0.0) : 0;
            frac[r - 1] = bw[r - 1] > 0 ? tg[r - 1] * (double)wbytes / (bw[r - 1] * 1e9) : 0;
            fprintf(stderr, "\rbench: threads %d, repetition %ld/%ld", threads[ti], r, reps);
        }
        fprintf(stderr, "\n");
        double m_pp = cli_median(pp, reps), m_tg = cli_median(tg, reps), m_bw = cli_median(bw, reps), m_frac = cli_median(frac, reps);
        if (dev.cuda) /* effective bandwidth: weight bytes read per generated token x tokens/s */
            printf("| cuda | %.1f | %.1f | %.1f (weights x tg) | - | - |\n", m_pp, m_tg, m_tg * (double)wbytes / 1e9);
        else
            printf("| %d | %.1f | %.1f | %.1f | %.1f | %.0f%% |\n", threads[ti], m_pp, m_tg, m_bw,
                   m_bw > 0 ? m_bw * 1e9 / (double)wbytes : 0.0, 100.0 * m_frac);
        fflush(stdout);
        if (json) fprintf(json, "%s{\"threads\": %d, \"pp_tokens\": %ld, \"pp_tok_s\": %.3f, \"tg_tokens\": %ld, \"tg_tok_s\": %.3f, "
                          "\"read_bw_gbs\": %.3f, \"tg_fraction_of_bw_limit\": %.4f, \"repetitions\": %ld}", ti ? ", " : "",
                          threads[ti], n_pp, m_pp, n_tg, m_tg, m_bw, m_frac, reps);
    }
out:
    if (json) {
        fprintf(json, "]}\n");
        fclose(json);
    }
    free(tokens), free(pp), free(tg), free(bw), free(frac);
    cli_session_close(&s);
    return rc;
}
