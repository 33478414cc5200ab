/* pagoda perplexity -m MODEL -f TEXT [-c 512] [--chunks N]
 * Perplexity as llama.cpp's llama-perplexity computes it, so the two figures can be compared on the
 * same GGUF and text:
 *  - the whole text is tokenized once, with the model's BOS when it adds one;
 *  - it is cut into chunks of n_ctx tokens (at least two chunks' worth are needed); the leftover
 *    tail is not used;
 *  - each chunk is an independent sequence from position 0; when the model adds a BOS, the chunk's
 *    first input token is replaced by it;
 *  - only the second half of each chunk is scored: the logits at positions first = n_ctx / 2 ..
 *    n_ctx - 2 predict tokens first + 1 .. n_ctx - 1 (n_ctx - 1 - first tokens per chunk);
 *  - PPL = exp(mean negative log-likelihood), with llama-perplexity's uncertainty
 *    (PPL * sqrt(var(nll) / (count - 1))), printed as a running [chunk]value list then a final line.
 * Chunks run through the engine as scoring requests (raw logits of every position, no prefix-cache
 * reuse), several per step (2048 tokens per step, like llama-perplexity's default batch).
 * --kl-divergence-base FILE also saves the log-probabilities of every scored position;
 * --kl-divergence with the same FILE compares this model against them instead: KL divergence
 * (mean, percentiles), top-1 agreement and the change of the correct token's probability (Δp). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"
#include "commands.h"
#include "core/clock.h"

static const char k_usage[] =
            "usage: pagoda perplexity -m MODEL -f TEXT [-c N_CTX] [--chunks N] [-t THREADS] [--kv-cache-dtype T]\n"
            "                         [--kl-divergence-base FILE [--kl-divergence]]\n"
            "  -m, --model PATH      .gguf file or Hugging Face model folder\n"
            "  -f, --file TEXT       the text to score (UTF-8)\n"
            "  -c, --ctx-size N      tokens per chunk (default 512); the second half of each is scored\n"
            "  --chunks N            at most N chunks (default: all the text gives)\n"
            "  -t, --threads N       threads (default: all cores)\n"
            "  --kv-cache-dtype T    KV cache element type: f32 (default), f16, int8 or fp8 (e4m3); also --kv-type\n"
            "  --quant-activations checkpoint|float|int8|fp8|int16  activations of GPTQ/AWQ/compressed-tensors products\n"
            "  --kl-divergence-base FILE  save the scored positions' log-probabilities to FILE\n"
            "  --kl-divergence       read FILE instead and report KL divergence, top-1 agreement and\n"
            "                        the change of the correct token's probability against it\n";

static void usage(void) { fputs(k_usage, stderr); }

/* KL base file: magic, n_vocab, n_ctx, n_chunks, the tokens, then per scored position the
 * log-probabilities of the whole vocabulary as f32 */
static const char k_kld_magic[8] = {'P', 'G', 'K', 'L', 'D', '1', 0, 0};

typedef struct {
    const int32_t *tok; /* the chunk's tokens as in the text (targets) */
    int32_t n_ctx, first, V;
    double nll, nll2;   /* over the chunk's scored positions */
    int32_t count;
    float *logp;        /* [n_ctx - 1 - first][V]: log-probabilities of the scored positions */
    int done, failed;
    char error[256];
} chunk_state;

static void on_logits(const pagoda_logits_event *ev, void *user) {
    chunk_state *c = user;
    const int32_t p = ev->pos;
    if (p < c->first || p >= c->n_ctx - 1 || ev->n_vocab != c->V) return;
    const float *l = ev->logits;
    float mx = l[0];
    for (int32_t v = 1; v < c->V; v++) mx = l[v] > mx ? l[v] : mx;
    double sum = 0;
    for (int32_t v = 0; v < c->V; v++) sum += exp((double)l[v] - mx);
    const double lse = mx + log(sum);
    const double nll = lse - l[c->tok[p + 1]];
    c->nll += nll, c->nll2 += nll * nll, c->count++;
    if (c->logp) {
        float *o = c->logp + (size_t)(p - c->first) * (size_t)c->V;
        for (int32_t v = 0; v < c->V; v++) o[v] = (float)(l[v] - lse);
    }
}

static void on_event(const pagoda_event *ev, void *user) {
    chunk_state *c = user;
    if (ev->finish == PAGODA_FINISH_ERROR || ev->finish == PAGODA_FINISH_CANCELLED) {
        c->failed = 1;
        snprintf(c->error, sizeof c->error, "%s", ev->error ? ev->error : "cancelled");
    }
    if (ev->request_done) c->done = 1;
}

static char *read_text(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    for (size_t got; buf && (got = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += got;
        if (n == cap) {
            char *b = cap > ((size_t)1 << 30) ? NULL : realloc(buf, 2 * cap + 1);
            if (!b) free(buf);
            buf = b, cap *= 2;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) return free(buf), NULL;
    buf[n] = 0, *len = n;
    return buf;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* KL divergence statistics of this run's log-probabilities q against the base's p, over n
 * positions (the ones perplexity scores), with the correct tokens tgt. */
static void kld_report(const float *p, const float *q, const int32_t *tgt, size_t n, int32_t V) {
    double *kl = malloc(sizeof(double) * n), *dp = malloc(sizeof(double) * n);
    if (!kl || !dp) {
        free(kl), free(dp);
        fprintf(stderr, "pagoda: out of memory\n");
        return;
    }
    double kl_sum = 0, kl2 = 0, dp_sum = 0, dp2 = 0;
    size_t same_top = 0;
    for (size_t i = 0; i < n; i++) {
        const float *a = p + i * (size_t)V, *b = q + i * (size_t)V;
        double s = 0;
        int32_t ta = 0, tb = 0;
        for (int32_t v = 0; v < V; v++) {
            s += exp((double)a[v]) * ((double)a[v] - (double)b[v]);
            if (a[v] > a[ta]) ta = v;
            if (b[v] > b[tb]) tb = v;
        }
        kl[i] = s < 0 ? 0 : s;
        dp[i] = exp((double)b[tgt[i]]) - exp((double)a[tgt[i]]);
        kl_sum += kl[i], kl2 += kl[i] * kl[i], dp_sum += dp[i], dp2 += dp[i] * dp[i];
        same_top += ta == tb;
    }
    const double kl_mean = kl_sum / (double)n, dp_mean = dp_sum / (double)n;
    const double kl_err = n > 1 ? sqrt(fmax(kl2 / (double)n - kl_mean * kl_mean, 0) / (double)(n - 1)) : 0;
    const double dp_rms = sqrt(dp2 / (double)n);
    const double top = (double)same_top / (double)n;
    qsort(kl, n, sizeof *kl, cmp_double);
    qsort(dp, n, sizeof *dp, cmp_double);
#define PCT(a, q) (a)[(size_t)((q) * (double)(n - 1) + 0.5)]
    printf("\n====== KL divergence against the base (%zu positions) ======\n", n);
    printf("Mean    KLD: %10.6f ± %.6f\n", kl_mean, kl_err);
    printf("Maximum KLD: %10.6f\n", kl[n - 1]);
    printf("99.9%%   KLD: %10.6f\n", PCT(kl, 0.999));
    printf("99.0%%   KLD: %10.6f\n", PCT(kl, 0.99));
    printf("Median  KLD: %10.6f\n", PCT(kl, 0.5));
    printf("Same top p:  %9.3f ± %.3f %%\n", 100 * top, 100 * sqrt(top * (1 - top) / (double)n));
    printf("Mean    Δp: %9.3f %%   RMS Δp: %.3f %%\n", 100 * dp_mean, 100 * dp_rms);
    printf("Minimum Δp: %9.3f %%   Median Δp: %.3f %%   Maximum Δp: %.3f %%\n", 100 * dp[0], 100 * PCT(dp, 0.5),
           100 * dp[n - 1]);
#undef PCT
    free(kl), free(dp);
}

int cmd_perplexity(int argc, char **argv) {
    int kv_type = PAGODA_DTYPE_F32, kv_given = 0, quant_act = 0;
    const char *model = NULL, *text_path = NULL, *kld_path = NULL;
    long n_ctx = 512, max_chunks = -1, threads = 0;
    int kld_compare = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return usage(), 0;
        if (!strcmp(a, "--kl-divergence")) { kld_compare = 1; continue; }
        if (!v) return cli_unknown_option("pagoda perplexity", a, k_usage);
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v, i++;
        else if (!strcmp(a, "-f") || !strcmp(a, "--file")) text_path = v, i++;
        else if (!strcmp(a, "--kl-divergence-base")) kld_path = v, i++;
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) { if (cli_int(a, v, 8, 1 << 20, &n_ctx)) return 2; i++; }
        else if (!strcmp(a, "--chunks")) { if (cli_int(a, v, -1, 1 << 30, &max_chunks)) return 2; i++; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { if (cli_int(a, v, 0, 1024, &threads)) return 2; i++; }
        else if (!strcmp(a, "--kv-cache-dtype")) { if (cli_kv_cache_dtype(a, v, &kv_type, &kv_given)) return 2; i++; }
        else if (!strcmp(a, "--kv-type")) { if (cli_kv_type(a, v, &kv_type)) return 2; i++; }
        else if (!strcmp(a, "--quant-activations")) { if (cli_quant_act(a, v, &quant_act)) return 2; i++; }
        else return cli_unknown_option("pagoda perplexity", a, k_usage);
    }
    if (!model || !text_path) return usage(), 2;
    if (kld_compare && !kld_path) {
        fprintf(stderr, "pagoda perplexity: --kl-divergence needs --kl-divergence-base FILE\n");
        return 2;
    }
    int rc = 1;
    size_t text_len = 0, n_tok = 0;
    char *text = read_text(text_path, &text_len);
    int32_t *tokens = NULL;
    pagoda_model *m = NULL;
    pagoda_engine *e = NULL;
    chunk_state *cs = NULL;
    float *logp = NULL, *base = NULL;
    int32_t *targets = NULL;
    FILE *kf = NULL;
    if (!text) {
        fprintf(stderr, "pagoda perplexity: cannot read %s\n", text_path);
        return 1;
    }
    if (pagoda_model_load(model, &m)) { cli_error(""); goto done; }
    pagoda_model_info info;
    pagoda_model_get_info(m, &info);
    const int32_t V = info.n_vocab;
    double t0 = pg_now_s();
    if (pagoda_tokenize(m, text, text_len, 1, 0, &tokens, &n_tok)) { cli_error("tokenize"); goto done; }
    /* BOS as the model adds it: then each chunk starts with it, as llama-perplexity does */
    const int add_bos = n_tok > 0 && info.bos >= 0 && tokens[0] == info.bos;
    fprintf(stderr, "pagoda perplexity: tokenized %zu bytes into %zu tokens in %.0f ms%s\n", text_len, n_tok,
            1e3 * (pg_now_s() - t0), add_bos ? " (BOS first)" : "");
    if (n_tok < 2 * (size_t)n_ctx) {
        fprintf(stderr, "pagoda perplexity: the text gives %zu tokens: at least %ld (2 x the context of %ld) are needed\n",
                n_tok, 2 * n_ctx, n_ctx);
        goto done;
    }
    int64_t n_chunks = (int64_t)(n_tok / (size_t)n_ctx);
    if (max_chunks > 0 && max_chunks < n_chunks) n_chunks = max_chunks;
    const int32_t first = (int32_t)(n_ctx / 2), per_chunk = (int32_t)n_ctx - 1 - first;
    const size_t n_scored = (size_t)n_chunks * (size_t)per_chunk;
    if (kld_path) { /* every scored position's log-probabilities, this run's */
        if ((double)n_scored * V * sizeof(float) > 64e9) {
            fprintf(stderr, "pagoda perplexity: the KL file would take %.1f GB: use --chunks\n", (double)n_scored * V * 4 / 1e9);
            goto done;
        }
        if (!(logp = malloc(sizeof(float) * n_scored * (size_t)V)) || !(targets = malloc(sizeof(int32_t) * n_scored))) {
            fprintf(stderr, "pagoda perplexity: out of memory for the KL log-probabilities\n");
            goto done;
        }
    }
    if (kld_compare) { /* read and check the base before spending the time */
        kf = fopen(kld_path, "rb");
        char magic[8];
        int32_t hdr[3];
        if (!kf || fread(magic, 1, 8, kf) != 8 || memcmp(magic, k_kld_magic, 8) || fread(hdr, sizeof(int32_t), 3, kf) != 3) {
            fprintf(stderr, "pagoda perplexity: %s is not a KL base file written by --kl-divergence-base\n", kld_path);
            goto done;
        }
        if (hdr[0] != V || hdr[1] != n_ctx || hdr[2] != n_chunks) {
            fprintf(stderr, "pagoda perplexity: %s was made with vocabulary %d, context %d, %d chunks; this run has %d, %ld, %lld\n",
                    kld_path, hdr[0], hdr[1], hdr[2], V, n_ctx, (long long)n_chunks);
            goto done;
        }
        int32_t *btok = malloc(sizeof(int32_t) * (size_t)n_chunks * (size_t)n_ctx);
        int same = btok && fread(btok, sizeof(int32_t), (size_t)n_chunks * (size_t)n_ctx, kf) == (size_t)n_chunks * (size_t)n_ctx &&
                   !memcmp(btok, tokens, sizeof(int32_t) * (size_t)n_chunks * (size_t)n_ctx);
        free(btok);
        if (!same) {
            fprintf(stderr, "pagoda perplexity: %s holds other tokens: the base was made from another text or tokenizer\n", kld_path);
            goto done;
        }
        if (!(base = malloc(sizeof(float) * n_scored * (size_t)V)) ||
            fread(base, sizeof(float), n_scored * (size_t)V, kf) != n_scored * (size_t)V) {
            fprintf(stderr, "pagoda perplexity: %s is truncated\n", kld_path);
            goto done;
        }
        fclose(kf);
        kf = NULL;
    }

    pagoda_engine_config ec;
    pagoda_engine_config_default(&ec);
    ec.n_threads = (int32_t)threads;
    const int32_t par = n_ctx >= 2048 ? 1 : (int32_t)(2048 / n_ctx); /* chunks per step */
    ec.max_batch_tokens = (int64_t)par * n_ctx;
    ec.max_seqs = par;
    ec.max_model_len = (int32_t)n_ctx;
    ec.prefix_caching = 0;
    ec.kv_dtype = (pagoda_dtype)kv_type;
    ec.quant_activations = quant_act;
    if (pagoda_engine_create(m, &ec, &e)) { cli_error("engine"); goto done; }
    if (!(cs = calloc((size_t)n_chunks, sizeof *cs))) goto done;
    int32_t *input = malloc(sizeof(int32_t) * (size_t)n_ctx * (size_t)par);
    if (!input) goto done;
    double nll = 0, nll2 = 0;
    int64_t count = 0;
    t0 = pg_now_s();
    printf("perplexity: %lld chunks of %ld tokens, the last %d of each scored\n", (long long)n_chunks, n_ctx, per_chunk);
    for (int64_t c0 = 0; c0 < n_chunks; c0 += par) {
        const int64_t c1 = c0 + par < n_chunks ? c0 + par : n_chunks;
        for (int64_t c = c0; c < c1; c++) {
            const int32_t *tok = tokens + (size_t)c * (size_t)n_ctx;
            int32_t *in = input + (size_t)(c - c0) * (size_t)n_ctx;
            memcpy(in, tok, sizeof(int32_t) * (size_t)n_ctx);
            if (add_bos) in[0] = info.bos;
            cs[c] = (chunk_state){.tok = tok, .n_ctx = (int32_t)n_ctx, .first = first, .V = V,
                                  .logp = logp ? logp + (size_t)c * per_chunk * (size_t)V : NULL};
            pagoda_request rq;
            pagoda_request_default(&rq);
            rq.prompt_tokens = in;
            rq.n_prompt_tokens = (int32_t)n_ctx;
            rq.score_only = 1;
            rq.on_prompt_logits = on_logits;
            rq.on_event = on_event;
            rq.user = &cs[c];
            if (pagoda_engine_submit(e, &rq, NULL)) {
                free(input);
                cli_error("submit");
                goto done;
            }
        }
        for (int32_t n_live = 1; n_live > 0;)
            if (pagoda_engine_step(e, &n_live)) {
                free(input);
                cli_error("engine");
                goto done;
            }
        for (int64_t c = c0; c < c1; c++) {
            if (cs[c].failed || !cs[c].done || cs[c].count != per_chunk) {
                fprintf(stderr, "pagoda perplexity: chunk %lld: %s\n", (long long)c + 1,
                        cs[c].failed ? cs[c].error : "not every position was scored");
                free(input);
                goto done;
            }
            nll += cs[c].nll, nll2 += cs[c].nll2, count += cs[c].count;
            printf("[%lld]%.4f,", (long long)c + 1, exp(nll / (double)count));
            if (targets)
                for (int32_t k = 0; k < per_chunk; k++) targets[(size_t)c * per_chunk + k] = cs[c].tok[first + 1 + k];
        }
        fflush(stdout);
        if (c0 == 0)
            fprintf(stderr, "pagoda perplexity: %.2f s per %d chunks, about %.0f s in all\n", pg_now_s() - t0, (int)(c1 - c0),
                    (pg_now_s() - t0) * (double)n_chunks / (double)(c1 - c0));
    }
    free(input);
    const double mean = nll / (double)count, var = nll2 / (double)count - mean * mean;
    const double ppl = exp(mean), err = count > 1 ? ppl * sqrt(fmax(var, 0) / (double)(count - 1)) : 0;
    printf("\nFinal estimate: PPL = %.4f +/- %.5f (%lld tokens scored, %.1f s)\n", ppl, err, (long long)count,
           pg_now_s() - t0);
    if (kld_path && !kld_compare) {
        kf = fopen(kld_path, "wb");
        int32_t hdr[3] = {V, (int32_t)n_ctx, (int32_t)n_chunks};
        int ok = kf && fwrite(k_kld_magic, 1, 8, kf) == 8 && fwrite(hdr, sizeof(int32_t), 3, kf) == 3 &&
                 fwrite(tokens, sizeof(int32_t), (size_t)n_chunks * (size_t)n_ctx, kf) == (size_t)n_chunks * (size_t)n_ctx &&
                 fwrite(logp, sizeof(float), n_scored * (size_t)V, kf) == n_scored * (size_t)V;
        ok = kf && !fclose(kf) && ok;
        kf = NULL;
        if (!ok) {
            fprintf(stderr, "pagoda perplexity: cannot write %s\n", kld_path);
            goto done;
        }
        fprintf(stderr, "pagoda perplexity: saved the log-probabilities of %zu positions to %s\n", n_scored, kld_path);
    }
    if (kld_compare) kld_report(base, logp, targets, n_scored, V);
    rc = 0;
done:
    if (kf) fclose(kf);
    pagoda_engine_destroy(e);
    pagoda_model_free(m);
    pagoda_free(tokens);
    free(text), free(cs), free(logp), free(base), free(targets);
    return rc;
}
