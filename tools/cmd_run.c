/* pagoda run -m MODEL --prompt-ids "1,2,3" [-n N] [sampling options]
 * Generates tokens for one sequence and prints their ids as they come. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli_common.h"
#include "commands.h"
#include "engine/sampler.h"
#include "kernels/kernels.h"

static void usage(void) {
    fprintf(stderr,
            "usage: pagoda run -m MODEL --prompt-ids IDS [options]\n"
            "  -m, --model PATH        .gguf file or Hugging Face model folder\n"
            "  --prompt-ids IDS        prompt token ids, e.g. \"1,15043,3186\"\n"
            "  -n, --max-tokens N      tokens to generate (default 32)\n"
            "  --ctx N                 context length (default: the model's, at most 4096)\n"
            "  -t, --threads N         CPU threads (default: all cores)\n"
            "  --temp T                temperature (default 0 = greedy)\n"
            "  --top-k K  --top-p P  --min-p P\n"
            "  --repeat-penalty R  --presence-penalty P  --frequency-penalty F  --penalty-last-n N\n"
            "  --seed S                RNG seed (default 0)\n"
            "  --ignore-eos            do not stop at the end-of-sequence token\n");
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int cmd_run(int argc, char **argv) {
    const char *model = NULL, *ids_str = NULL;
    long n_gen = 32, n_ctx = 0, threads = 0, seed = 0, last_n = 64, top_k = 0;
    int ignore_eos = 0;
    pg_sampling_params sp = sampler_default_params();
    sp.temperature = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return usage(), 0;
        if (!strcmp(a, "--ignore-eos")) { ignore_eos = 1; continue; }
        if (!v) { fprintf(stderr, "pagoda run: option '%s' needs a value\n", a); return 2; }
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--prompt-ids")) ids_str = v;
        else if (!strcmp(a, "-n") || !strcmp(a, "--max-tokens")) bad = cli_int(a, v, 0, 1 << 20, &n_gen);
        else if (!strcmp(a, "--ctx")) bad = cli_int(a, v, 1, 1 << 20, &n_ctx);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) bad = cli_int(a, v, 0, 1024, &threads);
        else if (!strcmp(a, "--temp")) bad = cli_float(a, v, &sp.temperature);
        else if (!strcmp(a, "--top-k")) bad = cli_int(a, v, 0, 1 << 24, &top_k);
        else if (!strcmp(a, "--top-p")) bad = cli_float(a, v, &sp.top_p);
        else if (!strcmp(a, "--min-p")) bad = cli_float(a, v, &sp.min_p);
        else if (!strcmp(a, "--repeat-penalty")) bad = cli_float(a, v, &sp.repetition_penalty);
        else if (!strcmp(a, "--presence-penalty")) bad = cli_float(a, v, &sp.presence_penalty);
        else if (!strcmp(a, "--frequency-penalty")) bad = cli_float(a, v, &sp.frequency_penalty);
        else if (!strcmp(a, "--penalty-last-n")) bad = cli_int(a, v, -1, 1 << 20, &last_n);
        else if (!strcmp(a, "--seed")) bad = cli_int(a, v, 0, 0x7fffffffL, &seed);
        else { fprintf(stderr, "pagoda run: unknown option '%s'\n", a); return usage(), 2; }
        if (bad) return 2;
        i++;
    }
    if (!model || !ids_str) return usage(), 2;
    sp.top_k = (int32_t)top_k;
    sp.seed = (uint64_t)seed;
    sp.penalty_last_n = (int32_t)last_n;
    kcpu_set_threads((int)threads);

    int32_t *prompt = NULL, n_prompt = 0;
    if (cli_parse_ids(ids_str, &prompt, &n_prompt)) return 2;
    if (n_prompt == 0) {
        fprintf(stderr, "pagoda: --prompt-ids is empty\n");
        free(prompt);
        return 2;
    }
    cli_session s;
    if (cli_session_open(model, (int32_t)n_ctx, 512, &s)) {
        free(prompt);
        return 1;
    }
    int rc = 1;
    pg_sampler *smp = NULL;
    const int32_t V = s.m->cfg.n_vocab;
    for (int32_t i = 0; i < n_prompt; i++)
        if (prompt[i] >= V) {
            fprintf(stderr, "pagoda: prompt token %d out of range (vocab %d)\n", prompt[i], V);
            goto done;
        }
    if (n_prompt + n_gen > s.n_ctx) {
        fprintf(stderr, "pagoda: prompt (%d) + max tokens (%ld) exceed the context (%d)\n", n_prompt, n_gen, s.n_ctx);
        goto done;
    }
    if (sampler_create(&sp, V, &smp)) { cli_error("sampler"); goto done; }
    for (int32_t i = 0; i < n_prompt; i++) sampler_accept(smp, prompt[i]);
    double t0 = now_s();
    if (cli_session_eval(&s, prompt, n_prompt, NULL)) goto done;
    double t1 = now_s();
    long n_done = 0;
    for (; n_done < n_gen; n_done++) {
        int32_t tok = sampler_sample(smp, s.logits);
        sampler_accept(smp, tok);
        printf("%s%d", n_done ? " " : "", tok);
        fflush(stdout);
        if (!ignore_eos && tok == s.m->cfg.eos_id) { n_done++; break; }
        if (n_done + 1 < n_gen && cli_session_eval(&s, &tok, 1, NULL)) goto done;
    }
    printf("\n");
    double t2 = now_s();
    fprintf(stderr, "pagoda: prompt %d tokens in %.3f s (%.1f tok/s), generated %ld tokens in %.3f s (%.1f tok/s)\n",
            n_prompt, t1 - t0, n_prompt / (t1 - t0), n_done, t2 - t1, n_done / (t2 - t1));
    rc = 0;
done:
    sampler_destroy(smp);
    cli_session_close(&s);
    free(prompt);
    return rc;
}
