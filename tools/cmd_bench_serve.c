/* pagoda bench serve: an online serving benchmark client for any OpenAI-compatible server, in the
 * manner of vLLM's benchmark_serving.py. Requests arrive as a Poisson process at --request-rate
 * (seeded exponential inter-arrival times) or keep --concurrency requests in flight; every request
 * streams (SSE) with a fixed output length (ignore_eos), and the client records per request the
 * time to first token, every inter-token gap, the end-to-end latency and the server's token usage.
 * All streams are driven by libcurl's multi interface from one thread (tools/http_client.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "bench_multiturn.h"
#include "bench_report.h"
#include "cli_common.h"
#include "commands.h"
#include "http_client.h"
#include "jsonl.h"
#include "sse_chunk.h"
#include "core/clock.h"

#define MAX_SWEEP 64

enum { WL_FIXED, WL_RANDOM, WL_HUMANEVAL, WL_MULTITURN };
enum { EP_COMPLETIONS, EP_CHAT };

typedef struct {
    int workload;
    long input_len, output_len;
    char label[48]; /* "256/256", "humaneval/128" */
} lens;

/* ---- random numbers (splitmix64: small, seedable, good enough for workloads) ---- */

typedef struct {
    uint64_t s;
} rng;

typedef struct {
    const char *url_arg, *model_arg, *api_key, *dataset, *json_path, *report_path, *md_path;
    char *url, *model;  /* resolved endpoint URL and model name (owned) */
    char *metrics_url;  /* <base>/metrics: pagoda's engine counters, when the server has them */
    int endpoint, workload, ignore_eos, min_tokens; /* min_tokens: also send min_tokens = max_tokens */
    long input_len, output_len, num_requests, seed, timeout_s;
    double range_ratio, duration;
    double temperature, top_p; /* sent with every request (default greedy, top_p 1: off) */
    double rate;        /* requests/s; INFINITY: all at once; 0: not set */
    long concurrency;   /* 0: unlimited */
    double sweep_rates[MAX_SWEEP];
    long sweep_conc[MAX_SWEEP];
    lens sweep_lens[MAX_SWEEP];
    int n_sweep_rates, n_sweep_conc, n_sweep_lens;
    json_t **problems;  /* humaneval prompts */
    /* Prompts continue across the runs of a sweep (a run never repeats an earlier run's prompts,
     * which a server's prefix cache would serve for free); arrivals restart with the same seed. */
    rng prompt_rng;
    size_t n_prompts_made;
    size_t n_problems;
    json_t *extra;      /* --extra-body: fields merged into every request (owned) */
    int twin;           /* --twin: each run plain, then again with the extra fields */
    int use_extra;      /* the current run sends them */
    /* --workload multiturn (tools/bench_multiturn.c) */
    long conversations, turns, system_prompts, system_len, user_len;
    const char *session_header;
} options;

typedef struct {
    double start;        /* send time, seconds after the run began */
    double start_abs;    /* pg_now_s() at send */
    double ttft, e2e;    /* seconds; ttft < 0: no token received */
    double last_tok;     /* pg_now_s() of the latest content chunk */
    double *itl;         /* gaps between content chunks (s) */
    size_t n_itl, cap_itl;
    long n_chunks;       /* content chunks received */
    long usage_prompt, usage_completion; /* from the usage chunk; -1: none */
    long target_in, target_out;
    int done, ok;
    char *error;
} req_rec;

typedef struct {
    lens l;
    double rate;
    long concurrency;
    /* results */
    req_rec *recs;
    size_t n, cap;
    double duration;
    size_t completed, failed;
    long total_in, total_out;
    double req_tput, out_tput, total_tput;
    br_stats ttft, tpot, itl, e2e; /* milliseconds */
    double *ttft_ms, *e2e_ms;      /* successful requests, for CDFs */
    size_t n_ok;
    long max_in_flight;
    /* the server's own engine time over the run, from its /metrics (pagoda serve); have = 0 elsewhere */
    int have_engine;
    double engine_steps, engine_host_ms, engine_forward_ms; /* ms per step */
    int extra; /* sent --extra-body */
} run_result;

static uint64_t rng_next(rng *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static double rng_uniform(rng *r) { return (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0); }

static double rng_exp(rng *r, double rate) { return -log(1.0 - rng_uniform(r)) / rate; }

static long rng_range(rng *r, long lo, long hi) {
    if (hi <= lo) return lo;
    return lo + (long)(rng_next(r) % (uint64_t)(hi - lo + 1));
}

/* Common English words: one token each (with the leading space) in most BPE vocabularies, so a
 * prompt of N words is about N tokens. The exact count used is the server's usage.prompt_tokens. */
static const char *const k_words[] = {
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not",
    "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they", "you", "were",
    "their", "one", "all", "we", "can", "her", "has", "there", "been", "if", "more", "when", "will", "would",
    "who", "so", "no", "time", "people", "new", "first", "use", "work", "day", "water", "world", "house", "city",
    "year", "good", "great", "small", "large"};
#define N_WORDS (sizeof k_words / sizeof k_words[0])

static const char k_usage[] =
            "usage: pagoda bench serve --url URL (--request-rate R | --concurrency C) [options]\n\n"
            "  --url URL              server base URL (http://host:port) or a full .../v1/completions URL\n"
            "  --model NAME           model name (default: the first of GET /v1/models)\n"
            "  --api-key KEY          bearer token (default: $OPENAI_API_KEY)\n"
            "  --endpoint E           completions (default) or chat\n"
            "  --request-rate R       Poisson arrivals at R requests/s ('inf': all at once)\n"
            "  --concurrency C        at most C requests in flight (alone: a closed loop of C clients)\n"
            "  --num-requests N       requests per run (default 100)\n"
            "  --duration S           instead: keep sending for S seconds\n"
            "  --workload W           fixed (default), random, humaneval, multiturn\n"
            "  --input-len N          prompt length in words ~ tokens (default 256)\n"
            "  --output-len N         generated tokens per request (default 128); also --max-tokens\n"
            "  --range-ratio F        random workload: lengths uniform in [N(1-F), N(1+F)] (default 0.5)\n"
            "  --dataset PATH         HumanEval .jsonl[.gz] for --workload humaneval\n"
            "  --seed S               arrival and prompt seed (default 0)\n"
            "  --temperature T        sampling temperature of every request (default 0: greedy)\n"
            "  --top-p P              nucleus sampling of every request (default 1: off)\n"
            "  --no-ignore-eos        do not send ignore_eos/min_tokens (servers that reject them)\n"
            "  --timeout S            per-request limit in seconds (default 600)\n"
            "  --sweep-rates LIST     e.g. 1,10,30,inf: one run per rate\n"
            "  --sweep-concurrency L  e.g. 1,10,30: one run per concurrency\n"
            "  --sweep-lens LIST      e.g. 256/256,1024/128,humaneval: one run per length pair\n"
            "  --extra-body JSON      fields merged into every request, e.g. '{\"response_format\": ...}'\n"
            "  --twin on|off          each run twice: plain, then with --extra-body, and their ratios\n"
            "  --json PATH            results and per-request records\n"
            "  --report PATH.html     self-contained HTML report with plots\n"
            "  --markdown PATH.md     table: one row per run\n\n"
            "  multi-turn chat (--workload multiturn, with --concurrency C: C conversations at a time, each\n"
            "  sending its turns in order with the growing history; --output-len: tokens per answer):\n"
            "  --conversations N      conversations (default 16)\n"
            "  --turns N              turns (user messages) per conversation (default 4)\n"
            "  --system-prompts K     tenant groups: conversation c uses system prompt c % K (default 4)\n"
            "  --system-len N         words ~ tokens of each system prompt (default 512)\n"
            "  --user-len N           words ~ tokens of each user message (default 32)\n"
            "  --session-header NAME  header with the conversation's id (default X-Session-ID; also sent\n"
            "                         as the request's `user` field)\n";

static void usage(void) { fputs(k_usage, stderr); }

/* ---- prompts ---- */

static char *make_word_prompt(rng *r, long n_words) {
    size_t cap = (size_t)n_words * 8 + 16, len = 0;
    char *s = malloc(cap);
    if (!s) return NULL;
    for (long i = 0; i < n_words; i++) {
        const char *w = k_words[rng_next(r) % N_WORDS];
        size_t wl = strlen(w);
        if (len + wl + 2 > cap) {
            char *ns = realloc(s, cap * 2);
            if (!ns) { free(s); return NULL; }
            s = ns, cap *= 2;
        }
        if (i) s[len++] = ' ';
        memcpy(s + len, w, wl);
        len += wl;
    }
    s[len] = 0;
    return s;
}

/* The i-th request of a run: prompt text (owned) and target lengths. */
static char *make_prompt(options *o, const run_result *run, long *in, long *out) {
    rng *r = &o->prompt_rng;
    size_t i = o->n_prompts_made++;
    const lens *l = &run->l;
    if (l->workload == WL_HUMANEVAL) {
        *in = 0;
        *out = l->output_len;
        const char *p = jsonl_str(o->problems[i % o->n_problems], "prompt");
        return strdup(p ? p : "");
    }
    *in = l->input_len, *out = l->output_len;
    if (l->workload == WL_RANDOM) {
        double f = o->range_ratio;
        *in = rng_range(r, (long)floor((double)l->input_len * (1 - f)), (long)ceil((double)l->input_len * (1 + f)));
        *out = rng_range(r, (long)floor((double)l->output_len * (1 - f)), (long)ceil((double)l->output_len * (1 + f)));
        if (*in < 1) *in = 1;
        if (*out < 1) *out = 1;
    }
    return make_word_prompt(r, *in);
}

static char *request_body(const options *o, const char *prompt, long max_tokens) {
    json_t *b = json_object();
    json_object_set_new(b, "model", json_string(o->model));
    if (o->endpoint == EP_CHAT) {
        json_t *msgs = json_array();
        json_array_append_new(msgs, json_pack("{ssss}", "role", "user", "content", prompt));
        json_object_set_new(b, "messages", msgs);
    } else {
        json_object_set_new(b, "prompt", json_string(prompt));
    }
    json_object_set_new(b, "max_tokens", json_integer(max_tokens));
    json_object_set_new(b, "temperature", json_real(o->temperature));
    if (o->top_p < 1) json_object_set_new(b, "top_p", json_real(o->top_p));
    json_object_set_new(b, "stream", json_true());
    json_object_set_new(b, "stream_options", json_pack("{sb}", "include_usage", 1));
    if (o->ignore_eos) json_object_set_new(b, "ignore_eos", json_true());
    if (o->ignore_eos && o->min_tokens) json_object_set_new(b, "min_tokens", json_integer(max_tokens));
    if (o->extra && o->use_extra) json_object_update(b, o->extra);
    char *s = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    return s;
}

/* ---- one request's stream ---- */

typedef struct {
    run_result *run;
    size_t idx;
    int chat;
} req_ctx;

static void set_error(req_rec *q, const char *msg) {
    if (!q->error) q->error = strdup(msg);
}

static void on_sse_line(void *user, const char *line, size_t len, double t) {
    req_ctx *c = user;
    req_rec *q = &c->run->recs[c->idx];
    sse_chunk k;
    if (!sse_chunk_parse(line, len, c->chat, &k)) return;
    if (k.error[0]) set_error(q, k.error);
    const char *text = k.content && *k.content ? k.content : k.reasoning;
    if (text && *text) {
        if (q->ttft < 0) {
            q->ttft = t - q->start_abs;
        } else {
            if (q->n_itl == q->cap_itl) {
                size_t nc = q->cap_itl ? 2 * q->cap_itl : 64;
                double *ni = realloc(q->itl, nc * sizeof *ni);
                if (ni) q->itl = ni, q->cap_itl = nc;
            }
            if (q->n_itl < q->cap_itl) q->itl[q->n_itl++] = t - q->last_tok;
        }
        q->last_tok = t;
        q->n_chunks++;
    }
    if (k.usage_prompt >= 0) q->usage_prompt = k.usage_prompt;
    if (k.usage_completion >= 0) q->usage_completion = k.usage_completion;
    sse_chunk_free(&k);
}

static void on_req_done(void *user, const hc_result *r) {
    req_ctx *c = user;
    req_rec *q = &c->run->recs[c->idx];
    q->e2e = r->t_done - q->start_abs;
    q->done = 1;
    if (!r->ok) set_error(q, r->error);
    else if (q->ttft < 0 && !q->error) set_error(q, "no tokens received");
    q->ok = !q->error;
    free(c);
}

/* ---- metrics ---- */

static long rec_out_tokens(const req_rec *q) { return q->usage_completion >= 0 ? q->usage_completion : q->n_chunks; }
static long rec_in_tokens(const req_rec *q) { return q->usage_prompt >= 0 ? q->usage_prompt : q->target_in; }

static void compute_metrics(run_result *run) {
    size_t n = run->n, n_itl = 0;
    for (size_t i = 0; i < n; i++)
        if (run->recs[i].ok) n_itl += run->recs[i].n_itl;
    double *ttft = malloc((n + 1) * sizeof *ttft), *e2e = malloc((n + 1) * sizeof *e2e);
    double *tpot = malloc((n + 1) * sizeof *tpot), *itl = malloc((n_itl + 1) * sizeof *itl);
    size_t k = 0, kt = 0, ki = 0;
    run->completed = run->failed = 0;
    run->total_in = run->total_out = 0;
    for (size_t i = 0; ttft && e2e && tpot && itl && i < n; i++) {
        const req_rec *q = &run->recs[i];
        if (!q->ok) { run->failed++; continue; }
        run->completed++;
        long out = rec_out_tokens(q);
        run->total_in += rec_in_tokens(q);
        run->total_out += out;
        ttft[k] = q->ttft * 1e3;
        e2e[k] = q->e2e * 1e3;
        k++;
        if (out > 1) tpot[kt++] = (q->e2e - q->ttft) * 1e3 / (double)(out - 1);
        for (size_t j = 0; j < q->n_itl; j++) itl[ki++] = q->itl[j] * 1e3;
    }
    br_stats_of(ttft, k, &run->ttft);
    br_stats_of(e2e, k, &run->e2e);
    br_stats_of(tpot, kt, &run->tpot);
    br_stats_of(itl, ki, &run->itl);
    double d = run->duration > 0 ? run->duration : 1e-9;
    run->req_tput = (double)run->completed / d;
    run->out_tput = (double)run->total_out / d;
    run->total_tput = (double)(run->total_in + run->total_out) / d;
    run->ttft_ms = br_sorted_copy(ttft, k);
    run->e2e_ms = br_sorted_copy(e2e, k);
    run->n_ok = k;
    free(ttft), free(e2e), free(tpot), free(itl);
}

static void run_free(run_result *run) {
    for (size_t i = 0; i < run->n; i++) free(run->recs[i].itl), free(run->recs[i].error);
    free(run->recs);
    free(run->ttft_ms);
    free(run->e2e_ms);
}

/* ---- the load generator ---- */

static int grow_recs(run_result *run) {
    if (run->n < run->cap) return 0;
    size_t nc = run->cap ? 2 * run->cap : 128;
    req_rec *nr = realloc(run->recs, nc * sizeof *nr);
    if (!nr) return -1;
    run->recs = nr, run->cap = nc;
    return 0;
}

/* On a terminal one line rewritten in place; otherwise (logs) a line every 10 s and at the end. */
static void show_progress(const run_result *run, long total, int in_flight, double elapsed, int final) {
    static int tty = -1;
    static double last_line;
    if (tty < 0) tty = isatty(2);
    if (!tty && !final && elapsed - last_line < 10) return;
    last_line = final ? 0 : elapsed;
    size_t done = 0, failed = 0;
    for (size_t i = 0; i < run->n; i++)
        if (run->recs[i].done) done++, failed += !run->recs[i].ok;
    if (tty) fputc('\r', stderr);
    if (total > 0) fprintf(stderr, "bench: %zu/%ld requests done", done, total);
    else fprintf(stderr, "bench: %zu requests done", done);
    fprintf(stderr, " (%zu failed), %d in flight, %.1f s%s", failed, in_flight, elapsed, tty && !final ? "   " : "\n");
}

static int run_benchmark(options *o, run_result *run) {
    hc_client *hc = hc_client_create();
    if (!hc) return 1;
    rng arrivals = {(uint64_t)o->seed * 2 + 1};
    int rate_mode = run->rate > 0 && isfinite(run->rate);
    long limit = run->concurrency > 0 ? run->concurrency : 0;
    long total = o->duration > 0 ? -1 : o->num_requests;
    double t0 = pg_now_s(), next_arrival = 0, last_progress = 0;
    int issuing = 1, rc = 0;
    while (1) {
        double now = pg_now_s() - t0;
        while (issuing) {
            if (total >= 0 && (long)run->n >= total) { issuing = 0; break; }
            if (o->duration > 0 && (rate_mode ? next_arrival : now) >= o->duration) { issuing = 0; break; }
            if (rate_mode && now < next_arrival) break;
            if (limit && hc_client_in_flight(hc) >= limit) break;
            if (grow_recs(run)) { rc = 1; goto out; }
            size_t i = run->n;
            req_rec *q = &run->recs[i];
            memset(q, 0, sizeof *q);
            q->ttft = -1;
            q->usage_prompt = q->usage_completion = -1;
            char *prompt = make_prompt(o, run, &q->target_in, &q->target_out);
            char *body = prompt ? request_body(o, prompt, q->target_out) : NULL;
            req_ctx *c = malloc(sizeof *c);
            free(prompt);
            if (!body || !c) { free(body), free(c); rc = 1; goto out; }
            c->run = run, c->idx = i, c->chat = o->endpoint == EP_CHAT;
            hc_handler h = {.on_line = on_sse_line, .on_done = on_req_done, .user = c};
            q->start_abs = pg_now_s();
            q->start = q->start_abs - t0;
            run->n++;
            if (hc_post_json(hc, o->url, o->api_key, body, o->timeout_s, &h)) {
                free(body), free(c);
                rc = 1;
                goto out;
            }
            free(body);
            if (hc_client_in_flight(hc) > run->max_in_flight) run->max_in_flight = hc_client_in_flight(hc);
            if (rate_mode) next_arrival += rng_exp(&arrivals, run->rate);
        }
        if (!issuing && !hc_client_in_flight(hc)) break;
        int wait_ms = 100;
        if (issuing && rate_mode) {
            double dt = (next_arrival - (pg_now_s() - t0)) * 1e3;
            wait_ms = dt <= 0 ? 0 : dt >= 100 ? 100 : (int)ceil(dt);
        }
        hc_client_run(hc, wait_ms);
        double t = pg_now_s() - t0;
        if (t - last_progress > 0.25) {
            show_progress(run, total, hc_client_in_flight(hc), t, 0);
            last_progress = t;
        }
    }
    run->duration = pg_now_s() - t0;
    show_progress(run, total, 0, run->duration, 1);
out:
    hc_client_destroy(hc);
    return rc;
}

/* ---- output ---- */

static void fmt_rate(char *buf, size_t cap, double rate) {
    if (!(rate > 0)) snprintf(buf, cap, "-");
    else if (!isfinite(rate)) snprintf(buf, cap, "inf");
    else snprintf(buf, cap, "%g", rate);
}

static void banner(const char *s, char fill) {
    int n = 50, l = (int)strlen(s), left = (n - l) / 2, right = n - l - left;
    for (int i = 0; i < left; i++) putchar(fill);
    fputs(s, stdout);
    for (int i = 0; i < right; i++) putchar(fill);
    putchar('\n');
}

static void print_metric_block(const char *title, const char *abbr, const br_stats *s) {
    banner(title, '-');
    char k[64];
    snprintf(k, sizeof k, "Mean %s (ms):", abbr);
    printf("%-40s %-10.2f\n", k, s->mean);
    snprintf(k, sizeof k, "Median %s (ms):", abbr);
    printf("%-40s %-10.2f\n", k, s->median);
    snprintf(k, sizeof k, "P90 %s (ms):", abbr);
    printf("%-40s %-10.2f\n", k, s->p90);
    snprintf(k, sizeof k, "P99 %s (ms):", abbr);
    printf("%-40s %-10.2f\n", k, s->p99);
}

static void print_run(const run_result *r) {
    char rate[32];
    fmt_rate(rate, sizeof rate, r->rate);
    banner(" Serving Benchmark Result ", '=');
    printf("%-40s %-10s\n", "Lengths (input/output):", r->l.label);
    printf("%-40s %-10s\n", "Request rate configured (RPS):", r->rate > 0 ? rate : "-");
    if (r->concurrency > 0) printf("%-40s %-10ld\n", "Maximum request concurrency:", r->concurrency);
    printf("%-40s %-10zu\n", "Successful requests:", r->completed);
    printf("%-40s %-10zu\n", "Failed requests:", r->failed);
    printf("%-40s %-10.2f\n", "Benchmark duration (s):", r->duration);
    printf("%-40s %-10ld\n", "Total input tokens:", r->total_in);
    printf("%-40s %-10ld\n", "Total generated tokens:", r->total_out);
    printf("%-40s %-10.2f\n", "Request throughput (req/s):", r->req_tput);
    printf("%-40s %-10.2f\n", "Output token throughput (tok/s):", r->out_tput);
    printf("%-40s %-10.2f\n", "Total Token throughput (tok/s):", r->total_tput);
    print_metric_block("Time to First Token", "TTFT", &r->ttft);
    print_metric_block("Time per Output Token (excl. 1st token)", "TPOT", &r->tpot);
    print_metric_block("Inter-token Latency", "ITL", &r->itl);
    print_metric_block("End-to-end Latency", "E2EL", &r->e2e);
    if (r->have_engine) { /* the server's /metrics: where its engine's time went */
        banner("Server engine (its /metrics)", '-');
        printf("%-40s %-10.0f\n", "Engine steps:", r->engine_steps);
        printf("%-40s %-10.2f\n", "Forward pass per step (ms):", r->engine_forward_ms);
        printf("%-40s %-10.2f\n", "Host work per step (ms):", r->engine_host_ms);
    }
    banner("", '=');
    fflush(stdout);
    /* a few distinct error messages */
    int shown = 0;
    for (size_t i = 0; i < r->n && shown < 3; i++) {
        const char *e = r->recs[i].error;
        if (!e) continue;
        int dup = 0;
        for (size_t j = 0; j < i && !dup; j++) dup = r->recs[j].error && !strcmp(r->recs[j].error, e);
        if (dup) continue;
        fprintf(stderr, "bench: request %zu failed: %s\n", i, e);
        shown++;
    }
}

static json_t *run_json(const run_result *r) {
    json_t *j = json_object();
    char rate[32];
    fmt_rate(rate, sizeof rate, r->rate);
    json_object_set_new(j, "lengths", json_string(r->l.label));
    json_object_set_new(j, "extra_body", json_boolean(r->extra));
    json_object_set_new(j, "workload", json_string(r->l.workload == WL_HUMANEVAL ? "humaneval"
                                                   : r->l.workload == WL_RANDOM ? "random" : "fixed"));
    json_object_set_new(j, "input_len", json_integer(r->l.input_len));
    json_object_set_new(j, "output_len", json_integer(r->l.output_len));
    if (r->rate > 0 && isfinite(r->rate)) json_object_set_new(j, "request_rate", json_real(r->rate));
    else json_object_set_new(j, "request_rate", r->rate > 0 ? json_string("inf") : json_null());
    json_object_set_new(j, "max_concurrency", r->concurrency > 0 ? json_integer(r->concurrency) : json_null());
    json_object_set_new(j, "num_prompts", json_integer((json_int_t)r->n));
    json_object_set_new(j, "duration", json_real(r->duration));
    json_object_set_new(j, "completed", json_integer((json_int_t)r->completed));
    json_object_set_new(j, "failed", json_integer((json_int_t)r->failed));
    json_object_set_new(j, "total_input_tokens", json_integer(r->total_in));
    json_object_set_new(j, "total_output_tokens", json_integer(r->total_out));
    json_object_set_new(j, "request_throughput", json_real(r->req_tput));
    json_object_set_new(j, "output_throughput", json_real(r->out_tput));
    json_object_set_new(j, "total_token_throughput", json_real(r->total_tput));
    json_object_set_new(j, "max_in_flight", json_integer(r->max_in_flight));
    if (r->have_engine) {
        json_object_set_new(j, "server_engine_steps", json_real(r->engine_steps));
        json_object_set_new(j, "server_forward_ms_per_step", json_real(r->engine_forward_ms));
        json_object_set_new(j, "server_host_ms_per_step", json_real(r->engine_host_ms));
    }
    br_stats_json(j, "ttft", &r->ttft);
    br_stats_json(j, "tpot", &r->tpot);
    br_stats_json(j, "itl", &r->itl);
    br_stats_json(j, "e2el", &r->e2e);
    json_t *reqs = json_array();
    for (size_t i = 0; i < r->n; i++) {
        const req_rec *q = &r->recs[i];
        json_t *x = json_object();
        json_object_set_new(x, "start_s", json_real(q->start));
        json_object_set_new(x, "success", json_boolean(q->ok));
        json_object_set_new(x, "ttft_ms", q->ttft >= 0 ? json_real(q->ttft * 1e3) : json_null());
        json_object_set_new(x, "e2e_ms", json_real(q->e2e * 1e3));
        long out = rec_out_tokens(q);
        json_object_set_new(x, "tpot_ms", q->ok && out > 1 ? json_real((q->e2e - q->ttft) * 1e3 / (double)(out - 1)) : json_null());
        json_object_set_new(x, "prompt_tokens", q->usage_prompt >= 0 ? json_integer(q->usage_prompt) : json_null());
        json_object_set_new(x, "completion_tokens", json_integer(out));
        json_object_set_new(x, "target_input_len", json_integer(q->target_in));
        json_object_set_new(x, "target_output_len", json_integer(q->target_out));
        json_object_set_new(x, "chunks", json_integer(q->n_chunks));
        json_t *itl = json_array();
        for (size_t k = 0; k < q->n_itl; k++) json_array_append_new(itl, json_real(q->itl[k] * 1e3));
        json_object_set_new(x, "itl_ms", itl);
        if (q->error) json_object_set_new(x, "error", json_string(q->error));
        json_array_append_new(reqs, x);
    }
    json_object_set_new(j, "requests", reqs);
    return j;
}

static void add_config_json(json_t *j, const options *o) {
    json_object_set_new(j, "backend", json_string(o->endpoint == EP_CHAT ? "openai-chat" : "openai"));
    json_object_set_new(j, "url", json_string(o->url));
    json_object_set_new(j, "model_id", json_string(o->model));
    json_object_set_new(j, "seed", json_integer(o->seed));
    json_object_set_new(j, "temperature", json_real(o->temperature));
    json_object_set_new(j, "top_p", json_real(o->top_p));
    json_object_set_new(j, "ignore_eos", json_boolean(o->ignore_eos));
    json_object_set_new(j, "min_tokens", json_boolean(o->ignore_eos && o->min_tokens));
    char date[32];
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y%m%d-%H%M%S", localtime(&now));
    json_object_set_new(j, "date", json_string(date));
}

static int write_json(const options *o, run_result *runs, int n_runs) {
    json_t *root;
    if (n_runs == 1) {
        root = run_json(&runs[0]);
    } else {
        root = json_object();
        json_t *arr = json_array();
        for (int i = 0; i < n_runs; i++) json_array_append_new(arr, run_json(&runs[i]));
        json_object_set_new(root, "runs", arr);
    }
    add_config_json(root, o);
    int bad = json_dump_file(root, o->json_path, JSON_INDENT(1));
    json_decref(root);
    if (bad) fprintf(stderr, "pagoda bench serve: cannot write %s\n", o->json_path);
    return bad ? 1 : 0;
}

static void run_name(const run_result *r, char *buf, size_t cap) {
    char rate[32];
    fmt_rate(rate, sizeof rate, r->rate);
    if (r->rate > 0 && r->concurrency > 0) snprintf(buf, cap, "%s @ %s req/s, conc %ld", r->l.label, rate, r->concurrency);
    else if (r->rate > 0) snprintf(buf, cap, "%s @ %s req/s", r->l.label, rate);
    else snprintf(buf, cap, "%s, conc %ld", r->l.label, r->concurrency);
    if (r->extra) snprintf(buf + strlen(buf), cap - strlen(buf), " +extra-body");
}

/* --twin: the run with the extra fields against its plain twin just before it */
static void print_twin(const run_result *plain, const run_result *x) {
    double q = plain->out_tput > 0 ? x->out_tput / plain->out_tput : 0;
    banner(" Twin: with --extra-body / without ", '=');
    printf("%-40s %.3fx\n", "Output token throughput:", q);
    printf("%-40s %.3fx\n", "Mean TTFT:", plain->ttft.mean > 0 ? x->ttft.mean / plain->ttft.mean : 0);
    printf("%-40s %.3fx\n", "Median TTFT:", plain->ttft.median > 0 ? x->ttft.median / plain->ttft.median : 0);
    printf("%-40s %.3fx\n", "P99 TTFT:", plain->ttft.p99 > 0 ? x->ttft.p99 / plain->ttft.p99 : 0);
    printf("%-40s %.3fx\n", "Mean TPOT:", plain->tpot.mean > 0 ? x->tpot.mean / plain->tpot.mean : 0);
    printf("%-40s %.3f / %.3f\n", "Mean output tokens per request:", plain->completed ? (double)plain->total_out / plain->completed : 0,
           x->completed ? (double)x->total_out / x->completed : 0);
    if (plain->completed && x->completed &&
        (double)x->total_out / x->completed < 0.95 * (double)plain->total_out / plain->completed)
        printf("warning: the runs with --extra-body generated fewer tokens per request (a grammar that ended\n"
               "early?): their throughput and TPOT are not comparable\n");
    banner("", '=');
    fflush(stdout);
}

static int write_markdown(const options *o, run_result *runs, int n_runs) {
    FILE *f = fopen(o->md_path, "w");
    if (!f) { fprintf(stderr, "pagoda bench serve: cannot write %s: %s\n", o->md_path, strerror(errno)); return 1; }
    fprintf(f, "| lengths (in/out) | rate (req/s) | concurrency | requests ok/failed | mean in tok | req/s | output tok/s | "
               "total tok/s | mean TTFT ms | mean TPOT ms | p99 TPOT ms |\n");
    fprintf(f, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < n_runs; i++) {
        const run_result *r = &runs[i];
        char rate[32], conc[32];
        fmt_rate(rate, sizeof rate, r->rate);
        if (r->concurrency > 0) snprintf(conc, sizeof conc, "%ld", r->concurrency);
        else snprintf(conc, sizeof conc, "-");
        fprintf(f, "| %s%s | %s | %s | %zu/%zu | %.0f | %.2f | %.1f | %.1f | %.1f | %.2f | %.2f |\n", r->l.label,
                r->extra ? " +extra-body" : "", rate, conc,
                r->completed, r->failed, r->completed ? (double)r->total_in / (double)r->completed : 0.0, r->req_tput,
                r->out_tput, r->total_tput, r->ttft.mean, r->tpot.mean, r->tpot.p99);
    }
    if (fclose(f)) { fprintf(stderr, "pagoda bench serve: writing %s failed\n", o->md_path); return 1; }
    return 0;
}

static void html_table(FILE *f, run_result *runs, int n_runs) {
    fprintf(f, "<table><tr><th>run</th><th>ok</th><th>failed</th><th>duration s</th><th>req/s</th><th>out tok/s</th>"
               "<th>total tok/s</th><th>TTFT mean / p99 ms</th><th>TPOT mean / p99 ms</th><th>ITL mean / p99 ms</th>"
               "<th>E2E mean / p99 ms</th></tr>\n");
    for (int i = 0; i < n_runs; i++) {
        const run_result *r = &runs[i];
        char name[128];
        run_name(r, name, sizeof name);
        fprintf(f, "<tr><td>");
        br_html_escape(f, name);
        fprintf(f, "</td><td>%zu</td><td>%zu</td><td>%.2f</td><td>%.2f</td><td>%.1f</td><td>%.1f</td>"
                   "<td>%.1f / %.1f</td><td>%.2f / %.2f</td><td>%.2f / %.2f</td><td>%.1f / %.1f</td></tr>\n",
                r->completed, r->failed, r->duration, r->req_tput, r->out_tput, r->total_tput, r->ttft.mean, r->ttft.p99,
                r->tpot.mean, r->tpot.p99, r->itl.mean, r->itl.p99, r->e2e.mean, r->e2e.p99);
    }
    fprintf(f, "</table>\n");
}

static int write_report(const options *o, run_result *runs, int n_runs) {
    if (n_runs <= 0 || n_runs > MAX_SWEEP * MAX_SWEEP) return 1;
    FILE *f = fopen(o->report_path, "w");
    if (!f) { fprintf(stderr, "pagoda bench serve: cannot write %s: %s\n", o->report_path, strerror(errno)); return 1; }
    br_html_begin(f, "pagoda bench serve");
    fprintf(f, "<p>Server <code>");
    br_html_escape(f, o->url);
    fprintf(f, "</code>, model <code>");
    br_html_escape(f, o->model);
    fprintf(f, "</code>, %s endpoint, streaming, %s, seed %ld.</p>\n", o->endpoint == EP_CHAT ? "chat" : "completions",
            o->ignore_eos ? "fixed output lengths (ignore_eos)" : "output lengths up to the limit", o->seed);
    html_table(f, runs, n_runs);

    char (*names)[128] = calloc((size_t)n_runs, sizeof *names);
    br_series *ser = calloc((size_t)n_runs * 2 + 8, sizeof *ser);
    double **cdf_y = calloc((size_t)n_runs * 2, sizeof *cdf_y);
    if (!names || !ser || !cdf_y) { fclose(f); free(names), free(ser), free(cdf_y); return 1; }
    for (int i = 0; i < n_runs; i++) run_name(&runs[i], names[i], sizeof names[i]);

    /* latency CDFs */
    const char *cdf_titles[2] = {"Time to first token: CDF", "End-to-end latency: CDF"};
    for (int m = 0; m < 2; m++) {
        for (int i = 0; i < n_runs; i++) {
            size_t n = runs[i].n_ok;
            double *y = malloc((n + 1) * sizeof *y);
            for (size_t k = 0; y && k < n; k++) y[k] = (double)(k + 1) / (double)n;
            cdf_y[m * n_runs + i] = y;
            ser[i] = (br_series){names[i], m ? runs[i].e2e_ms : runs[i].ttft_ms, y, y ? n : 0, 0, 0, -1};
        }
        br_chart c = {cdf_titles[m], "latency (ms)", "fraction of requests", 0, 1, 1};
        br_svg_lines(f, &c, ser, (size_t)n_runs);
    }

    /* percentiles per run */
    const char *pct_names[3] = {"p50", "p90", "p99"};
    const char *metric[4] = {"TTFT", "TPOT", "ITL", "E2E latency"};
    double *vals = malloc(3 * (size_t)n_runs * sizeof *vals);
    const char **groups = malloc((size_t)n_runs * sizeof *groups);
    for (int m = 0; vals && groups && m < 4; m++) {
        for (int i = 0; i < n_runs; i++) {
            const br_stats *s = m == 0 ? &runs[i].ttft : m == 1 ? &runs[i].tpot : m == 2 ? &runs[i].itl : &runs[i].e2e;
            vals[0 * n_runs + i] = s->median;
            vals[1 * n_runs + i] = s->p90;
            vals[2 * n_runs + i] = s->p99;
            groups[i] = names[i];
        }
        char title[96];
        snprintf(title, sizeof title, "%s percentiles", metric[m]);
        br_chart c = {title, "", "ms", 0, 0, 1};
        br_svg_bars(f, &c, groups, (size_t)n_runs, pct_names, 3, vals);
    }
    free(vals);
    free(groups);

    /* sweeps: throughput and TPOT against the swept variable, one line per length pair */
    int sweep_rates = o->n_sweep_rates > 1, sweep_conc = o->n_sweep_conc > 1;
    if (sweep_rates || sweep_conc) {
        int n_lens = o->n_sweep_lens ? o->n_sweep_lens : 1;
        int per = n_runs / n_lens;
        double *xs = malloc((size_t)n_runs * sizeof *xs), *tp = malloc((size_t)n_runs * sizeof *tp);
        double *tpot = malloc((size_t)n_runs * sizeof *tpot), *tpot99 = malloc((size_t)n_runs * sizeof *tpot99);
        double *ttft = malloc((size_t)n_runs * sizeof *ttft);
        if (xs && tp && tpot && tpot99 && ttft) {
            double lo = INFINITY, hi = 0;
            for (int i = 0; i < n_runs; i++) {
                xs[i] = sweep_rates ? runs[i].rate : (double)runs[i].concurrency;
                tp[i] = runs[i].out_tput;
                tpot[i] = runs[i].tpot.mean;
                tpot99[i] = runs[i].tpot.p99;
                ttft[i] = runs[i].ttft.mean;
                if (isfinite(xs[i]) && xs[i] > 0) lo = fmin(lo, xs[i]), hi = fmax(hi, xs[i]);
            }
            int logx = hi / lo >= 20;
            const char *xl = sweep_rates ? "request rate (req/s)" : "concurrency (requests in flight)";
            br_series s2[2 * MAX_SWEEP];
            for (int L = 0; L < n_lens; L++)
                s2[L] = (br_series){runs[L * per].l.label, xs + L * per, tp + L * per, (size_t)per, 0, 1, L};
            br_chart c1 = {"Output throughput", xl, "output tokens/s", logx, 0, 1};
            br_svg_lines(f, &c1, s2, (size_t)n_lens);
            char lab[MAX_SWEEP][64];
            for (int L = 0; L < n_lens; L++) {
                snprintf(lab[L], sizeof lab[L], "%s p99", runs[L * per].l.label);
                s2[2 * L] = (br_series){runs[L * per].l.label, xs + L * per, tpot + L * per, (size_t)per, 0, 1, L};
                s2[2 * L + 1] = (br_series){lab[L], xs + L * per, tpot99 + L * per, (size_t)per, 1, 1, L};
            }
            br_chart c2 = {"Time per output token (mean, p99 dashed)", xl, "TPOT (ms)", logx, 0, 1};
            br_svg_lines(f, &c2, s2, (size_t)(2 * n_lens));
            for (int L = 0; L < n_lens; L++)
                s2[L] = (br_series){runs[L * per].l.label, xs + L * per, ttft + L * per, (size_t)per, 0, 1, L};
            br_chart c3 = {"Time to first token (mean)", xl, "TTFT (ms)", logx, 0, 1};
            br_svg_lines(f, &c3, s2, (size_t)n_lens);
        }
        free(xs), free(tp), free(tpot), free(tpot99), free(ttft);
    }
    fprintf(f, "<p>TTFT: from sending the request to the first streamed chunk with text. TPOT: (end-to-end "
               "latency &minus; TTFT) / (output tokens &minus; 1), output tokens from the server's usage. ITL: gaps "
               "between consecutive chunks with text. Percentiles interpolate linearly (numpy's default).</p>\n");
    br_html_end(f);
    for (int i = 0; i < 2 * n_runs; i++) free(cdf_y[i]);
    free(cdf_y), free(ser), free(names);
    if (fclose(f)) { fprintf(stderr, "pagoda bench serve: writing %s failed\n", o->report_path); return 1; }
    return 0;
}

/* ---- options ---- */

static int parse_rates(const char *s, double *out, int *n) {
    char *copy = strdup(s), *save = NULL;
    *n = 0;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *end;
        double v = !strcmp(t, "inf") ? INFINITY : strtod(t, &end);
        if (*n == MAX_SWEEP || (isfinite(v) && (*end || !(v > 0)))) {
            fprintf(stderr, "pagoda bench serve: bad rate list '%s' (positive numbers or inf, at most %d)\n", s, MAX_SWEEP);
            free(copy);
            return 1;
        }
        out[(*n)++] = v;
    }
    free(copy);
    return *n ? 0 : 1;
}

static int parse_lens(const char *s, int default_wl, long default_out, lens *out, int *n) {
    char *copy = strdup(s), *save = NULL;
    *n = 0;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        lens l = {0};
        long a = 0, b = 0;
        char extra;
        if (!strncmp(t, "humaneval", 9)) {
            l.workload = WL_HUMANEVAL;
            l.output_len = default_out;
            if (t[9] == '/' && sscanf(t + 10, "%ld%c", &b, &extra) == 1 && b > 0) l.output_len = b;
            else if (t[9]) goto bad;
            snprintf(l.label, sizeof l.label, "humaneval/%ld", l.output_len);
        } else if (sscanf(t, "%ld/%ld%c", &a, &b, &extra) == 2 && a > 0 && b > 0 && a <= 1 << 20 && b <= 1 << 20) {
            l.workload = default_wl;
            l.input_len = a, l.output_len = b;
            snprintf(l.label, sizeof l.label, "%ld/%ld", a, b);
        } else {
            goto bad;
        }
        if (*n == MAX_SWEEP) goto bad;
        out[(*n)++] = l;
    }
    free(copy);
    return *n ? 0 : 1;
bad:
    fprintf(stderr, "pagoda bench serve: bad --sweep-lens '%s' (items like 256/256 or humaneval[/OUT])\n", s);
    free(copy);
    return 1;
}

/* base URL -> endpoint URL; also the /v1/models URL */
static int resolve_urls(options *o, char **models_url) {
    const char *u = o->url_arg;
    size_t n = strlen(u);
    while (n && u[n - 1] == '/') n--;
    const char *chat_sfx = "/chat/completions", *comp_sfx = "/completions";
    size_t base = n;
    const char *suffix;
    if (n >= strlen(chat_sfx) && !strncmp(u + n - strlen(chat_sfx), chat_sfx, strlen(chat_sfx))) {
        o->endpoint = EP_CHAT, suffix = "";
        base = n - strlen(chat_sfx);
    } else if (n >= strlen(comp_sfx) && !strncmp(u + n - strlen(comp_sfx), comp_sfx, strlen(comp_sfx))) {
        o->endpoint = EP_COMPLETIONS, suffix = "";
        base = n - strlen(comp_sfx);
    } else if (n >= 3 && !strncmp(u + n - 3, "/v1", 3)) {
        suffix = o->endpoint == EP_CHAT ? chat_sfx : comp_sfx;
    } else {
        suffix = o->endpoint == EP_CHAT ? "/v1/chat/completions" : "/v1/completions";
    }
    if (!(o->url = malloc(n + strlen(suffix) + 1)) || !(*models_url = malloc(base + 16)) ||
        !(o->metrics_url = malloc(base + 16)))
        return 1;
    sprintf(o->url, "%.*s%s", (int)n, u, suffix);
    /* models: <base up to /v1>/v1/models */
    if (base >= 3 && !strncmp(u + base - 3, "/v1", 3)) base -= 3;
    sprintf(*models_url, "%.*s/v1/models", (int)base, u);
    sprintf(o->metrics_url, "%.*s/metrics", (int)base, u);
    return 0;
}

/* The value of the first sample of a Prometheus metric in text, or -1. */
static double prom_value(const char *text, const char *name) {
    size_t n = strlen(name);
    for (const char *p = text; (p = strstr(p, name)); p += n) {
        if ((p != text && p[-1] != '\n') || (p[n] != '{' && p[n] != ' ')) continue;
        const char *sp = strchr(p, ' '), *nl = strchr(p, '\n');
        if (!sp || (nl && sp > nl)) continue;
        return strtod(sp + 1, NULL);
    }
    return -1;
}

/* pagoda's engine counters (steps, step seconds, forward seconds); 0 when the server has none */
static int scrape_engine(const options *o, double v[3]) {
    long status = 0;
    char *body = NULL, err[256];
    int ok = 0;
    if (!hc_get(o->metrics_url, o->api_key, 10, &status, &body, err, sizeof err) && status == 200 && body) {
        v[0] = prom_value(body, "pagoda:engine_steps_total");
        v[1] = prom_value(body, "pagoda:engine_step_seconds_total");
        v[2] = prom_value(body, "pagoda:engine_forward_seconds_total");
        ok = v[0] >= 0 && v[1] >= 0 && v[2] >= 0;
    }
    free(body);
    return ok;
}

/* Checks that the server answers, and finds the model name when not given. */
static int preflight(options *o) {
    char *models_url = NULL, *body = NULL, err[512];
    if (resolve_urls(o, &models_url)) { free(models_url); return 1; }
    long status = 0;
    int rc = 1;
    if (hc_get(models_url, o->api_key, 30, &status, &body, err, sizeof err)) {
        fprintf(stderr, "pagoda bench serve: cannot reach the server at %s: %s\n", o->url_arg, err);
        goto done;
    }
    if (o->model_arg) {
        o->model = strdup(o->model_arg);
    } else {
        json_t *root = json_loads(body, 0, NULL);
        const char *id = json_string_value(json_object_get(json_array_get(json_object_get(root, "data"), 0), "id"));
        if (status == 200 && id) o->model = strdup(id);
        json_decref(root);
        if (!o->model) {
            fprintf(stderr, "pagoda bench serve: %s gave no model list (HTTP %ld); pass --model NAME\n", models_url, status);
            goto done;
        }
    }
    rc = o->model ? 0 : 1;
done:
    free(body);
    free(models_url);
    return rc;
}

/* One short request before the runs (also a warm-up). A server that rejects min_tokens or
 * ignore_eos as unknown fields (HTTP 400 naming the field) gets requests without them. */
#define PROBE_PROMPT "pagoda bench serve probe"

typedef struct {
    int done, ok;
    long status;
    char error[600];
} probe_state;

static void on_probe_done(void *user, const hc_result *r) {
    probe_state *p = user;
    p->done = 1, p->ok = r->ok, p->status = r->http_status;
    if (!r->ok) snprintf(p->error, sizeof p->error, "%.590s", r->error);
}

static void probe_fields(options *o) {
    for (int attempt = 0; attempt < 3; attempt++) {
        hc_client *hc = hc_client_create();
        char *body = request_body(o, PROBE_PROMPT, 2);
        probe_state p = {0};
        hc_handler h = {.on_done = on_probe_done, .user = &p};
        if (!hc || !body || hc_post_json(hc, o->url, o->api_key, body, o->timeout_s, &h)) {
            free(body);
            hc_client_destroy(hc);
            return;
        }
        free(body);
        while (!p.done) hc_client_run(hc, 100);
        hc_client_destroy(hc);
        if (p.ok) return;
        if (p.status == 400 && o->ignore_eos && o->min_tokens && strstr(p.error, "min_tokens")) {
            fprintf(stderr, "bench: the server rejects min_tokens; sending ignore_eos only\n");
            o->min_tokens = 0;
        } else if (p.status == 400 && o->ignore_eos && strstr(p.error, "ignore_eos")) {
            fprintf(stderr, "bench: warning: the server rejects ignore_eos: output lengths are not fixed\n");
            o->ignore_eos = 0;
        } else {
            fprintf(stderr, "bench: warning: the first request failed: %s\n", p.error);
            return;
        }
    }
}

/* --workload multiturn: checks the options that apply, then tools/bench_multiturn.c runs it. */
static int run_multiturn(options *o, int have_rate, int have_sweep_lens) {
    const char *why = have_rate || o->n_sweep_rates ? "--request-rate/--sweep-rates (conversations run closed-loop)"
                      : o->n_sweep_conc || have_sweep_lens ? "sweeps"
                      : o->duration > 0 || o->num_requests > 0 ? "--duration/--num-requests (requests = conversations x turns)"
                      : o->twin || o->extra ? "--extra-body/--twin"
                      : o->report_path ? "--report (use --json or --markdown)"
                      : o->dataset ? "--dataset" : NULL;
    if (why) { fprintf(stderr, "pagoda bench serve: --workload multiturn does not take %s\n", why); return 2; }
    if (!o->concurrency) {
        fprintf(stderr, "pagoda bench serve: --workload multiturn needs --concurrency C (conversations in flight)\n");
        return 2;
    }
    mt_config c = {0};
    c.conversations = o->conversations ? o->conversations : 16;
    c.turns = o->turns ? o->turns : 4;
    c.system_prompts = o->system_prompts ? o->system_prompts : 4;
    if (c.system_prompts > c.conversations) {
        fprintf(stderr, "pagoda bench serve: --system-prompts %ld is more than the %ld conversations\n", c.system_prompts,
                c.conversations);
        return 2;
    }
    if (c.conversations * c.turns > 10000000) {
        fprintf(stderr, "pagoda bench serve: --conversations x --turns is more than 10,000,000 requests\n");
        return 2;
    }
    c.system_len = o->system_len >= 0 ? o->system_len : 512;
    c.user_len = o->user_len ? o->user_len : 32;
    c.session_header = o->session_header ? o->session_header : "X-Session-ID";
    o->endpoint = EP_CHAT; /* a base URL gets /v1/chat/completions */
    int rc = 1;
    if (preflight(o)) goto done;
    if (o->endpoint != EP_CHAT) {
        fprintf(stderr, "pagoda bench serve: --workload multiturn sends chat requests; --url %s names the completions endpoint\n",
                o->url_arg);
        goto done;
    }
    probe_fields(o);
    c.url = o->url, c.model = o->model, c.api_key = o->api_key;
    c.json_path = o->json_path, c.md_path = o->md_path;
    c.max_tokens = o->output_len, c.concurrency = o->concurrency;
    c.seed = o->seed, c.timeout_s = o->timeout_s;
    c.temperature = o->temperature, c.top_p = o->top_p;
    c.ignore_eos = o->ignore_eos, c.min_tokens = o->min_tokens;
    rc = bench_multiturn(&c);
done:
    free(o->url);
    free(o->metrics_url);
    free(o->model);
    json_decref(o->extra);
    return rc;
}

int cmd_bench_serve(int argc, char **argv) {
    options o = {0};
    o.endpoint = EP_COMPLETIONS;
    o.workload = WL_FIXED;
    o.ignore_eos = 1, o.min_tokens = 1;
    o.input_len = 256, o.output_len = 128, o.num_requests = -1, o.timeout_s = 600;
    o.range_ratio = 0.5;
    o.system_len = -1;
    o.top_p = 1;
    o.api_key = getenv("OPENAI_API_KEY");
    const char *sweep_lens = NULL;
    int have_rate = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return usage(), 0;
        if (!strcmp(a, "--no-ignore-eos")) { o.ignore_eos = 0; continue; }
        if (!cli_option_listed(a, k_usage)) return cli_unknown_option("pagoda bench serve", a, k_usage);
        if (!v) { fprintf(stderr, "pagoda bench serve: option '%s' needs a value\n", a); return 2; }
        float fv;
        if (!strcmp(a, "--url")) o.url_arg = v;
        else if (!strcmp(a, "--model")) o.model_arg = v;
        else if (!strcmp(a, "--api-key")) o.api_key = v;
        else if (!strcmp(a, "--endpoint")) {
            if (!strcmp(v, "completions")) o.endpoint = EP_COMPLETIONS;
            else if (!strcmp(v, "chat")) o.endpoint = EP_CHAT;
            else { fprintf(stderr, "pagoda bench serve: --endpoint is completions or chat\n"); return 2; }
        } else if (!strcmp(a, "--request-rate")) {
            if (!strcmp(v, "inf")) o.rate = INFINITY;
            else if ((bad = cli_float(a, v, &fv)) == 0 && !(fv > 0)) {
                fprintf(stderr, "pagoda bench serve: --request-rate must be > 0 or inf\n");
                bad = 1;
            } else o.rate = fv;
            have_rate = 1;
        } else if (!strcmp(a, "--concurrency")) bad = cli_int(a, v, 1, 100000, &o.concurrency);
        else if (!strcmp(a, "--num-requests")) bad = cli_int(a, v, 1, 10000000, &o.num_requests);
        else if (!strcmp(a, "--duration")) {
            bad = cli_float(a, v, &fv);
            if (!bad && !(fv > 0)) { fprintf(stderr, "pagoda bench serve: --duration must be > 0\n"); bad = 1; }
            o.duration = fv;
        } else if (!strcmp(a, "--workload")) {
            if (!strcmp(v, "fixed")) o.workload = WL_FIXED;
            else if (!strcmp(v, "random")) o.workload = WL_RANDOM;
            else if (!strcmp(v, "humaneval")) o.workload = WL_HUMANEVAL;
            else if (!strcmp(v, "multiturn")) o.workload = WL_MULTITURN;
            else { fprintf(stderr, "pagoda bench serve: --workload is fixed, random, humaneval or multiturn\n"); return 2; }
        } else if (!strcmp(a, "--input-len")) bad = cli_int(a, v, 1, 1 << 20, &o.input_len);
        else if (!strcmp(a, "--output-len") || !strcmp(a, "--max-tokens")) bad = cli_int(a, v, 1, 1 << 20, &o.output_len);
        else if (!strcmp(a, "--range-ratio")) {
            bad = cli_float(a, v, &fv);
            if (!bad && !(fv >= 0 && fv < 1)) { fprintf(stderr, "pagoda bench serve: --range-ratio must be in [0, 1)\n"); bad = 1; }
            o.range_ratio = fv;
        } else if (!strcmp(a, "--dataset")) o.dataset = v;
        else if (!strcmp(a, "--seed")) bad = cli_int(a, v, 0, 1L << 40, &o.seed);
        else if (!strcmp(a, "--temperature")) {
            bad = cli_temperature(a, v, &fv);
            o.temperature = fv;
        } else if (!strcmp(a, "--top-p")) {
            bad = cli_top_p(a, v, &fv);
            o.top_p = fv;
        } else if (!strcmp(a, "--timeout")) bad = cli_int(a, v, 1, 86400, &o.timeout_s);
        else if (!strcmp(a, "--conversations")) bad = cli_int(a, v, 1, 100000, &o.conversations);
        else if (!strcmp(a, "--turns")) bad = cli_int(a, v, 1, 1000, &o.turns);
        else if (!strcmp(a, "--system-prompts")) bad = cli_int(a, v, 1, 100000, &o.system_prompts);
        else if (!strcmp(a, "--system-len")) bad = cli_int(a, v, 0, 1 << 20, &o.system_len);
        else if (!strcmp(a, "--user-len")) bad = cli_int(a, v, 1, 1 << 20, &o.user_len);
        else if (!strcmp(a, "--session-header")) {
            if (!*v || strlen(v) > 64 || strcspn(v, ": \t\r\n") != strlen(v)) {
                fprintf(stderr, "pagoda bench serve: --session-header needs a header name (no ':' or spaces, at most 64)\n");
                return 2;
            }
            o.session_header = v;
        } else if (!strcmp(a, "--json")) o.json_path = v;
        else if (!strcmp(a, "--report")) o.report_path = v;
        else if (!strcmp(a, "--markdown")) o.md_path = v;
        else if (!strcmp(a, "--sweep-rates")) bad = parse_rates(v, o.sweep_rates, &o.n_sweep_rates);
        else if (!strcmp(a, "--sweep-concurrency")) {
            int32_t *ids, n;
            if (cli_parse_ids(v, &ids, &n) || n < 1 || n > MAX_SWEEP) {
                fprintf(stderr, "pagoda bench serve: --sweep-concurrency expects 1 to %d counts\n", MAX_SWEEP);
                return 2;
            }
            for (int32_t k = 0; k < n; k++) {
                if (ids[k] < 1) { free(ids); fprintf(stderr, "pagoda bench serve: concurrency must be >= 1\n"); return 2; }
                o.sweep_conc[k] = ids[k];
            }
            o.n_sweep_conc = n;
            free(ids);
        } else if (!strcmp(a, "--sweep-lens")) sweep_lens = v;
        else if (!strcmp(a, "--extra-body")) {
            json_error_t je;
            json_decref(o.extra);
            o.extra = json_loads(v, 0, &je);
            if (!json_is_object(o.extra)) {
                fprintf(stderr, "pagoda bench serve: --extra-body must be a JSON object%s%s\n", o.extra ? "" : ": ",
                        o.extra ? "" : je.text);
                json_decref(o.extra);
                return 2;
            }
            o.use_extra = 1;
        } else if (!strcmp(a, "--twin")) {
            if (!strcmp(v, "on")) o.twin = 1;
            else if (strcmp(v, "off")) { fprintf(stderr, "pagoda bench serve: --twin is on or off\n"); return 2; }
        }
        else return cli_unknown_option("pagoda bench serve", a, k_usage);
        if (bad) return 2;
        i++;
    }
    if (!o.url_arg) { fprintf(stderr, "pagoda bench serve: --url is required\n"); return usage(), 2; }
    if (o.workload == WL_MULTITURN) return run_multiturn(&o, have_rate, sweep_lens != NULL);
    if (o.conversations || o.turns || o.system_prompts || o.system_len >= 0 || o.user_len || o.session_header) {
        fprintf(stderr, "pagoda bench serve: --conversations, --turns, --system-prompts, --system-len, --user-len and "
                        "--session-header belong to --workload multiturn\n");
        return 2;
    }
    if (o.twin && !o.extra) { fprintf(stderr, "pagoda bench serve: --twin needs --extra-body\n"); return 2; }
    if (o.n_sweep_rates && o.n_sweep_conc) {
        fprintf(stderr, "pagoda bench serve: give --sweep-rates or --sweep-concurrency, not both\n");
        return 2;
    }
    if (!have_rate && !o.concurrency && !o.n_sweep_rates && !o.n_sweep_conc) {
        fprintf(stderr, "pagoda bench serve: give --request-rate R or --concurrency C (or a sweep)\n");
        return 2;
    }
    if (o.num_requests > 0 && o.duration > 0) {
        fprintf(stderr, "pagoda bench serve: give --num-requests or --duration, not both\n");
        return 2;
    }
    if (o.num_requests < 0 && !(o.duration > 0)) o.num_requests = 100;
    if (sweep_lens) {
        if (parse_lens(sweep_lens, o.workload == WL_RANDOM ? WL_RANDOM : WL_FIXED, o.output_len, o.sweep_lens,
                       &o.n_sweep_lens))
            return 2;
    } else {
        lens *l = &o.sweep_lens[0];
        l->workload = o.workload, l->input_len = o.input_len, l->output_len = o.output_len;
        if (o.workload == WL_HUMANEVAL) snprintf(l->label, sizeof l->label, "humaneval/%ld", o.output_len);
        else snprintf(l->label, sizeof l->label, "%ld/%ld", o.input_len, o.output_len);
    }
    int n_lens = o.n_sweep_lens ? o.n_sweep_lens : 1;
    int need_he = 0;
    for (int i = 0; i < n_lens; i++) need_he |= o.sweep_lens[i].workload == WL_HUMANEVAL;
    if (need_he) {
        char found[4096];
        const char *path = o.dataset;
        if (!path) {
            if (jsonl_find_humaneval(found, sizeof found)) {
                fprintf(stderr, "pagoda bench serve: HumanEval.jsonl.gz not found; pass --dataset PATH\n");
                return 1;
            }
            path = found;
        }
        if (jsonl_load(path, &o.problems, &o.n_problems)) return 1;
        if (!o.n_problems) { fprintf(stderr, "pagoda bench serve: %s is empty\n", path); return 1; }
    }

    int rc = 1;
    run_result *runs = NULL;
    int n_runs = 0;
    o.prompt_rng.s = (uint64_t)o.seed * 2 + 2;
    if (preflight(&o)) goto done;
    probe_fields(&o);
    int n_points = o.n_sweep_rates ? o.n_sweep_rates : o.n_sweep_conc ? o.n_sweep_conc : 1;
    int per = o.twin ? 2 : 1, total = n_lens * n_points * per;
    runs = calloc((size_t)total, sizeof *runs);
    if (!runs) goto done;
    fprintf(stderr, "bench: %s, model %s, %d run%s\n", o.url, o.model, total, total > 1 ? "s" : "");
    for (int L = 0; L < n_lens; L++)
        for (int p = 0; p < n_points * per; p++) {
            run_result *r = &runs[n_runs];
            r->l = o.sweep_lens[L];
            r->rate = o.n_sweep_rates ? o.sweep_rates[p / per] : o.rate;
            r->concurrency = o.n_sweep_conc ? o.sweep_conc[p / per] : o.concurrency;
            o.use_extra = r->extra = o.extra && (!o.twin || p % 2 == 1);
            char name[128];
            run_name(r, name, sizeof name);
            fprintf(stderr, "bench: run %d/%d: %s\n", n_runs + 1, total, name);
            n_runs++;
            double e0[3], e1[3];
            int have0 = scrape_engine(&o, e0);
            if (run_benchmark(&o, r)) { fprintf(stderr, "pagoda bench serve: out of memory\n"); goto done; }
            if (have0 && scrape_engine(&o, e1) && e1[0] > e0[0]) {
                r->have_engine = 1;
                r->engine_steps = e1[0] - e0[0];
                r->engine_forward_ms = 1e3 * (e1[2] - e0[2]) / r->engine_steps;
                r->engine_host_ms = 1e3 * ((e1[1] - e0[1]) - (e1[2] - e0[2])) / r->engine_steps;
            }
            compute_metrics(r);
            print_run(r);
            if (o.twin && p % 2 == 1) print_twin(r - 1, r);
        }
    rc = 0;
    if (o.json_path) rc |= write_json(&o, runs, n_runs);
    if (o.md_path) rc |= write_markdown(&o, runs, n_runs);
    if (o.report_path) rc |= write_report(&o, runs, n_runs);
    size_t ok = 0, all = 0;
    for (int i = 0; i < n_runs; i++) ok += runs[i].completed, all += runs[i].n;
    if (!ok) {
        fprintf(stderr, "pagoda bench serve: all %zu requests failed\n", all);
        rc = 1;
    }
done:
    for (int i = 0; i < n_runs; i++) run_free(&runs[i]);
    free(runs);
    jsonl_free(o.problems, o.n_problems);
    free(o.url);
    free(o.metrics_url);
    free(o.model);
    json_decref(o.extra);
    return rc;
}
