/* pagoda bench serve --workload multiturn: multi-turn chat conversations (see bench_multiturn.h).
 * All streams are driven by libcurl's multi interface from one thread (tools/http_client.h); a
 * conversation's next turn is queued from the main loop once its previous answer has ended. A turn
 * that fails ends its conversation (its later turns are counted as not sent): without the answer
 * there is no history to continue. */
#define _GNU_SOURCE
#include "bench_multiturn.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "bench_report.h"
#include "http_client.h"
#include "sse_chunk.h"
#include "core/clock.h"

typedef struct {
    int conv, turn;           /* 0-based */
    double start, start_abs;  /* seconds after the run began; pg_now_s() at send */
    double ttft, e2e;         /* seconds; ttft < 0: no token */
    long n_chunks;            /* content chunks received */
    long usage_prompt, usage_completion; /* from the usage chunk; -1: none */
    int sent, done, ok;
    char *error;
} mt_rec;

typedef struct mt_state mt_state;

typedef struct {
    mt_state *st;
    int idx;
    json_t *messages;         /* the history so far (owned) */
    int next_turn;            /* turns sent */
    int in_flight, ended;     /* ended: all turns answered, or a turn failed */
    int ready;                /* the answer in flight has ended: send the next turn */
    char *answer;             /* the answer being streamed */
    size_t answer_len, answer_cap;
    char session[64];
} mt_conv;

struct mt_state {
    const mt_config *c;
    mt_rec *recs;             /* [conversations * turns] */
    mt_conv *convs;           /* [conversations] */
    char **system;            /* [system_prompts] */
    double t0;
    double t0_unix;           /* wall clock at t0 (seconds since the epoch) */
};

/* splitmix64 */
static uint64_t mix(uint64_t z) {
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Common English words, one token each (with the leading space) in most BPE vocabularies. */
static const char *const k_vocab[] = {
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not",
    "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they", "you", "were",
    "their", "one", "all", "we", "can", "her", "has", "there", "been", "if", "more", "when", "will", "would",
    "who", "so", "no", "time", "people", "new", "first", "use", "work", "day", "water", "world", "house", "city",
    "year", "good", "great", "small", "large", "order", "price", "help", "account", "question", "answer"};
#define N_VOCAB (sizeof k_vocab / sizeof k_vocab[0])

/* "<head>" followed by n words drawn from the stream seeded by key (owned, or NULL). */
static char *make_text(const char *head, uint64_t key, long n) {
    size_t cap = strlen(head) + (size_t)n * 10 + 2, len = strlen(head);
    char *s = malloc(cap);
    if (!s) return NULL;
    memcpy(s, head, len);
    uint64_t r = key;
    for (long i = 0; i < n; i++) {
        r = mix(r);
        const char *w = k_vocab[r % N_VOCAB];
        size_t wl = strlen(w);
        if (len) s[len++] = ' ';
        memcpy(s + len, w, wl);
        len += wl;
    }
    s[len] = 0;
    return s;
}

static uint64_t key_of(long seed, uint64_t a, uint64_t b, uint64_t c) {
    return mix(mix(mix((uint64_t)seed ^ 0x6D756C7469ULL) ^ a) ^ b) ^ c;
}

/* ---- one request's stream ---- */

static void set_error(mt_rec *q, const char *msg) {
    if (!q->error) q->error = strdup(msg);
}

static void add_answer(mt_conv *cv, const char *t) {
    size_t n = strlen(t);
    if (cv->answer_len + n + 1 > cv->answer_cap) {
        size_t nc = (cv->answer_len + n + 1) * 2;
        char *na = realloc(cv->answer, nc);
        if (!na) return;
        cv->answer = na, cv->answer_cap = nc;
    }
    memcpy(cv->answer + cv->answer_len, t, n + 1);
    cv->answer_len += n;
}

static mt_rec *rec_of(mt_conv *cv) { return &cv->st->recs[(size_t)cv->idx * (size_t)cv->st->c->turns + (size_t)cv->next_turn - 1]; }

static void on_line(void *user, const char *line, size_t len, double t) {
    mt_conv *cv = user;
    mt_rec *q = rec_of(cv);
    sse_chunk k;
    if (!sse_chunk_parse(line, len, 1, &k)) return;
    if (k.error[0]) set_error(q, k.error);
    if (k.content && *k.content) { /* the answer the history carries: content only */
        if (q->ttft < 0) q->ttft = t - q->start_abs;
        q->n_chunks++;
        add_answer(cv, k.content);
    }
    if (k.usage_prompt >= 0) q->usage_prompt = k.usage_prompt;
    if (k.usage_completion >= 0) q->usage_completion = k.usage_completion;
    sse_chunk_free(&k);
}

static void on_done(void *user, const hc_result *r) {
    mt_conv *cv = user;
    mt_rec *q = rec_of(cv);
    q->e2e = r->t_done - q->start_abs;
    q->done = 1;
    if (!r->ok) set_error(q, r->error);
    else if (q->ttft < 0 && !q->error) set_error(q, "no tokens received");
    q->ok = !q->error;
    cv->in_flight = 0;
    cv->ready = 1;
}

/* Appends the next user message to the history and queues its request. Returns 0, or -1. */
static int send_turn(mt_state *st, hc_client *hc, mt_conv *cv) {
    const mt_config *c = st->c;
    int t = cv->next_turn;
    char head[96];
    snprintf(head, sizeof head, "Conversation %d, question %d:", cv->idx + 1, t + 1);
    char *user = make_text(head, key_of(c->seed, 2, (uint64_t)cv->idx, (uint64_t)t), c->user_len);
    if (!user) return -1;
    json_array_append_new(cv->messages, json_pack("{ssss}", "role", "user", "content", user));
    free(user);
    json_t *b = json_object();
    json_object_set_new(b, "model", json_string(c->model));
    json_object_set(b, "messages", cv->messages);
    json_object_set_new(b, "max_tokens", json_integer(c->max_tokens));
    json_object_set_new(b, "temperature", json_real(c->temperature));
    if (c->top_p < 1) json_object_set_new(b, "top_p", json_real(c->top_p));
    json_object_set_new(b, "stream", json_true());
    json_object_set_new(b, "stream_options", json_pack("{sb}", "include_usage", 1));
    if (c->ignore_eos) json_object_set_new(b, "ignore_eos", json_true());
    if (c->ignore_eos && c->min_tokens) json_object_set_new(b, "min_tokens", json_integer(c->max_tokens));
    json_object_set_new(b, "user", json_string(cv->session));
    char *body = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    char header[256];
    snprintf(header, sizeof header, "%s: %s", c->session_header, cv->session);
    cv->next_turn++;
    mt_rec *q = rec_of(cv);
    q->sent = 1;
    q->start_abs = pg_now_s();
    q->start = q->start_abs - st->t0;
    cv->answer_len = 0;
    if (cv->answer) cv->answer[0] = 0;
    cv->in_flight = 1, cv->ready = 0;
    hc_handler h = {.on_line = on_line, .on_done = on_done, .user = cv, .header = header};
    int rc = body ? hc_post_json(hc, c->url, c->api_key, body, c->timeout_s, &h) : -1;
    free(body);
    return rc;
}

/* The answer has ended: add it to the history; the conversation ends after its last turn or a failure. */
static void finish_turn(mt_state *st, mt_conv *cv) {
    mt_rec *q = rec_of(cv);
    cv->ready = 0;
    if (!q->ok || cv->next_turn >= st->c->turns) {
        cv->ended = 1;
        return;
    }
    json_array_append_new(cv->messages,
                          json_pack("{ssss}", "role", "assistant", "content", cv->answer ? cv->answer : ""));
}

/* ---- results ---- */

static long rec_out(const mt_rec *q) { return q->usage_completion >= 0 ? q->usage_completion : q->n_chunks; }

typedef struct {
    size_t sent, completed, failed, not_sent;
    long total_in, total_out;
    double duration, req_tput, out_tput, total_tput;
    br_stats ttft, tpot, e2e, ttft_first, ttft_later;
} mt_summary;

static void summarize(const mt_state *st, double duration, mt_summary *s) {
    const mt_config *c = st->c;
    size_t n = (size_t)c->conversations * (size_t)c->turns, k = 0, kt = 0, kf = 0, kl = 0;
    double *ttft = malloc((n + 1) * sizeof *ttft), *tpot = malloc((n + 1) * sizeof *tpot);
    double *e2e = malloc((n + 1) * sizeof *e2e), *first = malloc((n + 1) * sizeof *first);
    double *later = malloc((n + 1) * sizeof *later);
    memset(s, 0, sizeof *s);
    s->duration = duration;
    for (size_t i = 0; ttft && tpot && e2e && first && later && i < n; i++) {
        const mt_rec *q = &st->recs[i];
        if (!q->sent) { s->not_sent++; continue; }
        s->sent++;
        if (!q->ok) { s->failed++; continue; }
        s->completed++;
        long out = rec_out(q);
        s->total_out += out;
        s->total_in += q->usage_prompt > 0 ? q->usage_prompt : 0;
        ttft[k] = q->ttft * 1e3, e2e[k] = q->e2e * 1e3, k++;
        if (q->turn == 0) first[kf++] = q->ttft * 1e3;
        else later[kl++] = q->ttft * 1e3;
        if (out > 1) tpot[kt++] = (q->e2e - q->ttft) * 1e3 / (double)(out - 1);
    }
    br_stats_of(ttft, k, &s->ttft);
    br_stats_of(tpot, kt, &s->tpot);
    br_stats_of(e2e, k, &s->e2e);
    br_stats_of(first, kf, &s->ttft_first);
    br_stats_of(later, kl, &s->ttft_later);
    double d = duration > 0 ? duration : 1e-9;
    s->req_tput = (double)s->completed / d;
    s->out_tput = (double)s->total_out / d;
    s->total_tput = (double)(s->total_in + s->total_out) / d;
    free(ttft), free(tpot), free(e2e), free(first), free(later);
}

typedef struct {
    size_t sent, completed, failed;
    double mean_prompt;       /* server's prompt tokens, completed requests */
    br_stats ttft;
} mt_turn_stats;

static void turn_stats(const mt_state *st, int t, mt_turn_stats *ts) {
    const mt_config *c = st->c;
    size_t n = (size_t)c->conversations, k = 0;
    double *v = malloc((n + 1) * sizeof *v), prompt = 0;
    memset(ts, 0, sizeof *ts);
    for (size_t i = 0; v && i < n; i++) {
        const mt_rec *q = &st->recs[i * (size_t)c->turns + (size_t)t];
        if (!q->sent) continue;
        ts->sent++;
        if (!q->ok) { ts->failed++; continue; }
        ts->completed++;
        prompt += q->usage_prompt > 0 ? (double)q->usage_prompt : 0;
        v[k++] = q->ttft * 1e3;
    }
    ts->mean_prompt = k ? prompt / (double)k : 0;
    br_stats_of(v, k, &ts->ttft);
    free(v);
}

static void print_result(const mt_state *st, const mt_summary *s) {
    const mt_config *c = st->c;
    printf("============ Multi-turn Chat Benchmark ============\n");
    printf("%-40s %ld x %ld turns\n", "Conversations:", c->conversations, c->turns);
    printf("%-40s %ld of %ld words\n", "System prompts (tenant groups):", c->system_prompts, c->system_len);
    printf("%-40s %ld words / %ld tokens\n", "User message / answer:", c->user_len, c->max_tokens);
    printf("%-40s %-10ld\n", "Conversations in flight:", c->concurrency);
    printf("%-40s %-10zu\n", "Successful requests:", s->completed);
    printf("%-40s %-10zu\n", "Failed requests:", s->failed);
    printf("%-40s %-10zu\n", "Turns not sent (conversation failed):", s->not_sent);
    printf("%-40s %-10.2f\n", "Benchmark duration (s):", s->duration);
    printf("%-40s %-10ld\n", "Total input tokens:", s->total_in);
    printf("%-40s %-10ld\n", "Total generated tokens:", s->total_out);
    printf("%-40s %-10.2f\n", "Request throughput (req/s):", s->req_tput);
    printf("%-40s %-10.2f\n", "Output token throughput (tok/s):", s->out_tput);
    printf("%-40s %-10.2f\n", "Total Token throughput (tok/s):", s->total_tput);
    printf("%-40s %.2f / %.2f / %.2f\n", "TTFT mean / median / p99 (ms):", s->ttft.mean, s->ttft.median, s->ttft.p99);
    printf("%-40s %.2f / %.2f / %.2f\n", "TPOT mean / median / p99 (ms):", s->tpot.mean, s->tpot.median, s->tpot.p99);
    printf("%-40s %.2f / %.2f / %.2f\n", "E2E mean / median / p99 (ms):", s->e2e.mean, s->e2e.median, s->e2e.p99);
    printf("---------------- TTFT per turn --------------------\n");
    printf("%-6s %8s %8s %12s %10s %10s %10s\n", "turn", "ok", "failed", "prompt tok", "mean ms", "p50 ms", "p99 ms");
    for (int t = 0; t < c->turns; t++) {
        mt_turn_stats ts;
        turn_stats(st, t, &ts);
        printf("%-6d %8zu %8zu %12.1f %10.2f %10.2f %10.2f\n", t + 1, ts.completed, ts.failed, ts.mean_prompt,
               ts.ttft.mean, ts.ttft.median, ts.ttft.p99);
    }
    printf("===================================================\n");
    fflush(stdout);
    int shown = 0;
    size_t n = (size_t)c->conversations * (size_t)c->turns;
    for (size_t i = 0; i < n && shown < 3; i++) {
        const char *e = st->recs[i].error;
        if (!e) continue;
        int dup = 0;
        for (size_t j = 0; j < i && !dup; j++) dup = st->recs[j].error && !strcmp(st->recs[j].error, e);
        if (dup) continue;
        fprintf(stderr, "bench: conversation %d turn %d failed: %s\n", st->recs[i].conv + 1, st->recs[i].turn + 1, e);
        shown++;
    }
}

static int write_json(const mt_state *st, const mt_summary *s) {
    const mt_config *c = st->c;
    json_t *j = json_object();
    json_object_set_new(j, "workload", json_string("multiturn"));
    json_object_set_new(j, "backend", json_string("openai-chat"));
    json_object_set_new(j, "url", json_string(c->url));
    json_object_set_new(j, "model_id", json_string(c->model));
    json_object_set_new(j, "seed", json_integer(c->seed));
    json_object_set_new(j, "conversations", json_integer(c->conversations));
    json_object_set_new(j, "turns", json_integer(c->turns));
    json_object_set_new(j, "system_prompts", json_integer(c->system_prompts));
    json_object_set_new(j, "system_len", json_integer(c->system_len));
    json_object_set_new(j, "user_len", json_integer(c->user_len));
    json_object_set_new(j, "max_tokens", json_integer(c->max_tokens));
    json_object_set_new(j, "max_concurrency", json_integer(c->concurrency));
    json_object_set_new(j, "session_header", json_string(c->session_header));
    json_object_set_new(j, "temperature", json_real(c->temperature));
    json_object_set_new(j, "ignore_eos", json_boolean(c->ignore_eos));
    json_object_set_new(j, "num_requests", json_integer((json_int_t)s->sent));
    json_object_set_new(j, "completed", json_integer((json_int_t)s->completed));
    json_object_set_new(j, "failed", json_integer((json_int_t)s->failed));
    json_object_set_new(j, "not_sent", json_integer((json_int_t)s->not_sent));
    json_object_set_new(j, "duration", json_real(s->duration));
    json_object_set_new(j, "start_unix", json_real(st->t0_unix)); /* requests' start_s count from here */
    json_object_set_new(j, "total_input_tokens", json_integer(s->total_in));
    json_object_set_new(j, "total_output_tokens", json_integer(s->total_out));
    json_object_set_new(j, "request_throughput", json_real(s->req_tput));
    json_object_set_new(j, "output_throughput", json_real(s->out_tput));
    json_object_set_new(j, "total_token_throughput", json_real(s->total_tput));
    br_stats_json(j, "ttft", &s->ttft);
    br_stats_json(j, "tpot", &s->tpot);
    br_stats_json(j, "e2el", &s->e2e);
    br_stats_json(j, "first_turn_ttft", &s->ttft_first);
    br_stats_json(j, "later_turns_ttft", &s->ttft_later);
    json_t *pt = json_array();
    for (int t = 0; t < c->turns; t++) {
        mt_turn_stats ts;
        turn_stats(st, t, &ts);
        json_t *x = json_pack("{si si si si sf}", "turn", t + 1, "requests", (json_int_t)ts.sent, "completed",
                              (json_int_t)ts.completed, "failed", (json_int_t)ts.failed, "mean_prompt_tokens",
                              ts.mean_prompt);
        br_stats_json(x, "ttft", &ts.ttft);
        json_array_append_new(pt, x);
    }
    json_object_set_new(j, "per_turn", pt);
    json_t *reqs = json_array();
    size_t n = (size_t)c->conversations * (size_t)c->turns;
    for (size_t i = 0; i < n; i++) {
        const mt_rec *q = &st->recs[i];
        if (!q->sent) continue;
        json_t *x = json_object();
        json_object_set_new(x, "conversation", json_integer(q->conv + 1));
        json_object_set_new(x, "turn", json_integer(q->turn + 1));
        json_object_set_new(x, "session", json_string(st->convs[q->conv].session));
        json_object_set_new(x, "start_s", json_real(q->start));
        json_object_set_new(x, "success", json_boolean(q->ok));
        json_object_set_new(x, "ttft_ms", q->ttft >= 0 ? json_real(q->ttft * 1e3) : json_null());
        json_object_set_new(x, "e2e_ms", q->done ? json_real(q->e2e * 1e3) : json_null());
        long out = rec_out(q);
        json_object_set_new(x, "tpot_ms", q->ok && out > 1 ? json_real((q->e2e - q->ttft) * 1e3 / (double)(out - 1))
                                                           : json_null());
        json_object_set_new(x, "prompt_tokens", q->usage_prompt >= 0 ? json_integer(q->usage_prompt) : json_null());
        json_object_set_new(x, "completion_tokens", json_integer(out));
        if (q->error) json_object_set_new(x, "error", json_string(q->error));
        json_array_append_new(reqs, x);
    }
    json_object_set_new(j, "requests", reqs);
    char date[32];
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y%m%d-%H%M%S", localtime(&now));
    json_object_set_new(j, "date", json_string(date));
    int bad = json_dump_file(j, c->json_path, JSON_INDENT(1));
    json_decref(j);
    if (bad) fprintf(stderr, "pagoda bench serve: cannot write %s\n", c->json_path);
    return bad ? 1 : 0;
}

static int write_markdown(const mt_state *st, const mt_summary *s) {
    const mt_config *c = st->c;
    FILE *f = fopen(c->md_path, "w");
    if (!f) { fprintf(stderr, "pagoda bench serve: cannot write %s: %s\n", c->md_path, strerror(errno)); return 1; }
    fprintf(f, "| conversations x turns | in flight | requests ok/failed/not sent | req/s | output tok/s | "
               "TTFT mean / p50 / p99 ms | TTFT turn 1 / later mean ms | TPOT mean ms |\n");
    fprintf(f, "|---|---:|---:|---:|---:|---:|---:|---:|\n");
    fprintf(f, "| %ld x %ld | %ld | %zu/%zu/%zu | %.2f | %.1f | %.1f / %.1f / %.1f | %.1f / %.1f | %.2f |\n\n",
            c->conversations, c->turns, c->concurrency, s->completed, s->failed, s->not_sent, s->req_tput, s->out_tput,
            s->ttft.mean, s->ttft.median, s->ttft.p99, s->ttft_first.mean, s->ttft_later.mean, s->tpot.mean);
    fprintf(f, "| turn | ok | failed | mean prompt tokens | TTFT mean ms | TTFT p50 ms | TTFT p99 ms |\n");
    fprintf(f, "|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int t = 0; t < c->turns; t++) {
        mt_turn_stats ts;
        turn_stats(st, t, &ts);
        fprintf(f, "| %d | %zu | %zu | %.1f | %.1f | %.1f | %.1f |\n", t + 1, ts.completed, ts.failed, ts.mean_prompt,
                ts.ttft.mean, ts.ttft.median, ts.ttft.p99);
    }
    if (fclose(f)) { fprintf(stderr, "pagoda bench serve: writing %s failed\n", c->md_path); return 1; }
    return 0;
}

/* ---- the driver ---- */

static int drive(mt_state *st, double *duration) {
    const mt_config *c = st->c;
    hc_client *hc = hc_client_create();
    if (!hc) return 1;
    long started = 0, live = 0, ended = 0;
    double last_note = 0;
    st->t0 = pg_now_s();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    st->t0_unix = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    int rc = 0;
    while (ended < c->conversations) {
        for (long i = 0; i < started; i++) { /* answers that ended: next turn, or the conversation ends */
            mt_conv *cv = &st->convs[i];
            if (!cv->ready) continue;
            finish_turn(st, cv);
            if (cv->ended) { live--, ended++; continue; }
            if (send_turn(st, hc, cv)) { rc = 1; goto out; }
        }
        while (live < c->concurrency && started < c->conversations) {
            mt_conv *cv = &st->convs[started++];
            live++;
            if (send_turn(st, hc, cv)) { rc = 1; goto out; }
        }
        if (ended >= c->conversations) break;
        hc_client_run(hc, 100);
        double t = pg_now_s() - st->t0;
        if (t - last_note >= 10) {
            fprintf(stderr, "bench: %ld/%ld conversations done, %ld in flight, %.0f s\n", ended, c->conversations,
                    live, t);
            last_note = t;
        }
    }
out:
    *duration = pg_now_s() - st->t0;
    hc_client_destroy(hc);
    return rc;
}

int bench_multiturn(const mt_config *c) {
    mt_state st = {.c = c};
    size_t n = (size_t)c->conversations * (size_t)c->turns;
    int rc = 1;
    st.recs = calloc(n, sizeof *st.recs);
    st.convs = calloc((size_t)c->conversations, sizeof *st.convs);
    st.system = calloc((size_t)c->system_prompts, sizeof *st.system);
    if (!st.recs || !st.convs || !st.system) goto oom;
    for (long k = 0; k < c->system_prompts; k++) {
        char head[96];
        snprintf(head, sizeof head, "You are the assistant of tenant %ld. Policy and catalogue follow.", k + 1);
        if (!(st.system[k] = make_text(head, key_of(c->seed, 1, (uint64_t)k, 0), c->system_len))) goto oom;
    }
    for (size_t i = 0; i < n; i++) {
        st.recs[i].conv = (int)(i / (size_t)c->turns), st.recs[i].turn = (int)(i % (size_t)c->turns);
        st.recs[i].ttft = -1, st.recs[i].usage_prompt = st.recs[i].usage_completion = -1;
    }
    for (long i = 0; i < c->conversations; i++) {
        mt_conv *cv = &st.convs[i];
        cv->st = &st, cv->idx = (int)i;
        snprintf(cv->session, sizeof cv->session, "bench-s%ld-c%ld", c->seed, i + 1);
        cv->messages = json_array();
        if (!cv->messages ||
            json_array_append_new(cv->messages, json_pack("{ssss}", "role", "system", "content",
                                                          st.system[i % c->system_prompts])))
            goto oom;
    }
    fprintf(stderr, "bench: multiturn: %ld conversations x %ld turns, %ld system prompts of %ld words, %ld at a time\n",
            c->conversations, c->turns, c->system_prompts, c->system_len, c->concurrency);
    double duration = 0;
    if (drive(&st, &duration)) goto oom;
    mt_summary s;
    summarize(&st, duration, &s);
    print_result(&st, &s);
    rc = 0;
    if (c->json_path) rc |= write_json(&st, &s);
    if (c->md_path) rc |= write_markdown(&st, &s);
    if (!s.completed) {
        fprintf(stderr, "pagoda bench serve: all %zu requests failed\n", s.sent);
        rc = 1;
    }
    goto done;
oom:
    fprintf(stderr, "pagoda bench serve: out of memory\n");
done:
    for (size_t i = 0; st.recs && i < n; i++) free(st.recs[i].error);
    for (long i = 0; st.convs && i < c->conversations; i++) json_decref(st.convs[i].messages), free(st.convs[i].answer);
    for (long k = 0; st.system && k < c->system_prompts; k++) free(st.system[k]);
    free(st.recs), free(st.convs), free(st.system);
    return rc;
}
