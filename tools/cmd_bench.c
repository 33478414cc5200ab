/* pagoda bench -m MODEL: prompt processing (pp) and generation (tg) speed at several thread
 * counts, next to a memory-bandwidth probe so generation can be stated as a fraction of the
 * bandwidth limit (bandwidth / weight bytes read per token). Measured through the engine (one
 * engine per thread count over one loaded model): pp is one request whose p-token prompt runs as
 * one prefill chunk and that ends after its first token; tg is the n one-token steps of a request
 * with a one-token prompt that generates n tokens (positions 0 .. n-1). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"
#include "commands.h"
#include "core/clock.h"

static const char k_usage[] =
            "usage: pagoda bench -m MODEL [options]     kernel speed: pp and tg of one sequence\n"
            "       pagoda bench throughput -m MODEL ... offline batched generation (engine)\n"
            "       pagoda bench serve --url URL ...     online serving benchmark against a server\n"
            "       pagoda bench grammar --tokenizer T   MaskBench: grammar engines side by side\n"
            "       pagoda bench load -m MODEL           cold and warm start: time to first token\n\n"
            "  -m, --model PATH  .gguf file or Hugging Face model folder\n"
            "  -p N          prompt tokens per pp run (default 128)\n"
            "  -n N          generated tokens per tg run (default 32)\n"
            "  -t LIST       thread counts, e.g. 1,2 (default: 1 and all cores)\n"
            "  -r N          repetitions; medians are reported (default 5)\n"
            "  --no-membw    skip the bandwidth probe\n"
            "  --json PATH   also write the results as JSON\n"
            CLI_DEVICE_HELP;

static void usage(void) { fputs(k_usage, stderr); }

typedef struct {
    int done, failed;
    char error[256];
} bench_req;

static void on_event(const pagoda_event *ev, void *user) {
    bench_req *q = user;
    if (ev->finish == PAGODA_FINISH_ERROR || ev->finish == PAGODA_FINISH_CANCELLED) {
        q->failed = 1;
        snprintf(q->error, sizeof q->error, "%s", ev->error ? ev->error : "cancelled");
    }
    if (ev->request_done) q->done = 1;
}

/* Runs one greedy request of n_prompt tokens that generates max_tokens tokens (ignoring EOS) to
 * its end on the caller's thread; its wall time in *seconds. */
static int run_request(pagoda_engine *e, const int32_t *prompt, int32_t n_prompt, int32_t max_tokens, double *seconds) {
    bench_req q = {0};
    pagoda_request rq;
    pagoda_request_default(&rq);
    rq.prompt_tokens = prompt;
    rq.n_prompt_tokens = n_prompt;
    rq.max_tokens = max_tokens;
    rq.sampling.temperature = 0;
    rq.ignore_eos = 1;
    rq.on_event = on_event;
    rq.user = &q;
    double t0 = pg_now_s();
    if (pagoda_engine_submit(e, &rq, NULL)) return cli_error("bench");
    while (!q.done)
        if (pagoda_engine_step(e, NULL)) return cli_error("bench");
    *seconds = pg_now_s() - t0;
    if (q.failed) {
        fprintf(stderr, "pagoda: bench: %s\n", q.error);
        return 1;
    }
    return 0;
}

int cmd_bench(int argc, char **argv) {
    const char *model = NULL, *json_path = NULL, *tlist = NULL;
    long n_pp = 128, n_tg = 32, reps = 5;
    int membw = 1;
    cli_device dev;
    cli_device_default(&dev);
    if (argc > 1 && !strcmp(argv[1], "throughput")) return cmd_bench_throughput(argc - 1, argv + 1);
    if (argc > 1 && !strcmp(argv[1], "serve")) return cmd_bench_serve(argc - 1, argv + 1);
    if (argc > 1 && !strcmp(argv[1], "grammar")) return cmd_bench_grammar(argc - 1, argv + 1);
    if (argc > 1 && !strcmp(argv[1], "load")) return cmd_bench_load(argc - 1, argv + 1);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return usage(), 0;
        if (!strcmp(a, "--no-membw")) { membw = 0; continue; }
        if (!cli_option_listed(a, k_usage)) return cli_unknown_option("pagoda bench", a, k_usage);
        if (!v) { fprintf(stderr, "pagoda bench: option '%s' needs a value\n", a); return 2; }
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "-p")) bad = cli_int(a, v, 0, 65536, &n_pp);
        else if (!strcmp(a, "-n")) bad = cli_int(a, v, 0, 65536, &n_tg);
        else if (!strcmp(a, "-r")) bad = cli_int(a, v, 1, 1000, &reps);
        else if (!strcmp(a, "-t")) tlist = v;
        else if (!strcmp(a, "--json")) json_path = v;
        else if (cli_device_option(a, v, &dev, &bad)) {}
        else return cli_unknown_option("pagoda bench", a, k_usage);
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
        pagoda_system_info si;
        pagoda_system_get_info(&si);
        threads[n_threads++] = 1;
        if (si.n_cpu_threads > 1) threads[n_threads++] = si.n_cpu_threads;
    }

    pagoda_model *m = NULL;
    if (cli_model_load(model, &m)) return 1;
    pagoda_model_info info;
    pagoda_model_facts facts;
    pagoda_system_info si;
    pagoda_model_get_info(m, &info);
    pagoda_model_get_facts(m, &facts);
    pagoda_system_get_info(&si);
    const char *dtype = pagoda_dtype_name(facts.weight_dtype), *isa = dev.cuda ? "cuda" : si.cpu_isa;
    uint64_t wbytes = info.weight_bytes;
    int32_t max_batch = n_pp > 0 ? (int32_t)n_pp : 1;
    int32_t *tokens = malloc(sizeof(int32_t) * (size_t)max_batch);
    if (!tokens) {
        pagoda_model_free(m);
        return 1;
    }
    uint64_t seed = 12345;
    for (int32_t i = 0; i < max_batch; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        tokens[i] = (int32_t)((seed >> 33) % (uint64_t)info.n_vocab);
    }
    fprintf(stderr, "bench: %s, %s %s, %.1f MiB of weights read per token, %s\n", model, info.arch, dtype,
            wbytes / 1048576.0, isa);
    FILE *json = NULL;
    if (json_path && !(json = fopen(json_path, "w"))) {
        fprintf(stderr, "pagoda: cannot write %s\n", json_path);
        free(tokens);
        pagoda_model_free(m);
        return 1;
    }
    if (json) fprintf(json, "{\"model\": \"%s\", \"arch\": \"%s\", \"dtype\": \"%s\", \"weight_bytes\": %llu, \"isa\": \"%s\", \"runs\": [",
                      model, info.arch, dtype, (unsigned long long)wbytes, isa);
    printf("| threads | pp%ld tok/s | tg%ld tok/s | read bw GB/s | tg limit tok/s | tg / limit (median of runs) |\n", n_pp, n_tg);
    printf("|---:|---:|---:|---:|---:|---:|\n");
    int rc = 0;
    pagoda_engine *e = NULL;
    double *pp = malloc(sizeof(double) * (size_t)reps), *tg = malloc(sizeof(double) * (size_t)reps);
    double *bw = malloc(sizeof(double) * (size_t)reps), *frac = malloc(sizeof(double) * (size_t)reps);
    if (!pp || !tg || !bw || !frac) { rc = 1; goto out; }
    for (int32_t ti = 0; ti < n_threads; ti++) {
        /* one sequence; the prompt in one chunk; no prefix cache (every repetition computes) */
        pagoda_engine_config ec;
        pagoda_engine_config_default(&ec);
        ec.n_threads = threads[ti];
        ec.max_batch_tokens = max_batch;
        ec.max_seqs = 1;
        ec.max_model_len = (int32_t)(n_pp + n_tg + 16);
        ec.prefix_caching = 0;
        dev.max_batch_given = 1;
        cli_device_apply(&dev, &ec);
        pagoda_engine_destroy(e);
        if (pagoda_engine_create(m, &ec, &e)) { rc = cli_error("engine"); e = NULL; goto out; }
        /* Each repetition measures pp, tg and then the bandwidth probe right away, so a
         * generation figure is compared with the bandwidth the machine gave at that moment
         * (on shared or virtual machines it moves by 2x from one second to the next).
         * Medians over repetitions are reported. */
        for (long r = 0; r <= reps; r++) { /* r == 0 is a warm-up */
            double t_pp = 0, t_tg = 0;
            if (n_pp && run_request(e, tokens, (int32_t)n_pp, 1, &t_pp)) { rc = 1; goto out; }
            if (n_tg && run_request(e, tokens, 1, (int32_t)n_tg, &t_tg)) { rc = 1; goto out; }
            if (r == 0) continue;
            pp[r - 1] = n_pp ? n_pp / t_pp : 0;
            tg[r - 1] = n_tg ? n_tg / t_tg : 0;
            bw[r - 1] = membw ? pagoda_membw_read_gbs((size_t)512 << 20, threads[ti], 0.0) : 0;
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
    pagoda_engine_destroy(e);
    pagoda_model_free(m);
    return rc;
}
