/* Prometheus text exposition of the server's and the engine's counters (see metrics.h). */
#include "serve/metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

/* vLLM's bucket boundaries, in seconds */
static const double k_ttft_le[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                                   1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
static const double k_tpot_le[] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4,  0.5,
                                   0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
static const double k_e2e_le[] = {0.3,  0.5,  0.8,  1.0,  1.5,  2.0,   2.5,   5.0,   10.0,  15.0,  20.0,
                                  30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
#define MAX_BUCKETS 24

typedef struct {
    const double *le;
    int n_le;
    uint64_t counts[MAX_BUCKETS]; /* non-cumulative; [n_le] is +Inf */
    uint64_t count;
    double sum;
} histogram;

struct serve_metrics {
    pthread_mutex_t mu;
    char *model; /* label value, escaped */
    histogram ttft, tpot, e2e;
    uint64_t finished[5]; /* by pagoda_finish_reason */
    uint64_t http[600];   /* responses by status code (100..599) */
};

static void hist_init(histogram *h, const double *le, int n) {
    memset(h, 0, sizeof *h);
    h->le = le;
    h->n_le = n;
}

static void hist_observe(histogram *h, double v) {
    int i = 0;
    while (i < h->n_le && v > h->le[i]) i++;
    h->counts[i]++;
    h->count++;
    h->sum += v;
}

/* label values escape \, " and newline */
static char *escape_label(const char *s) {
    size_t n = strlen(s);
    char *o = malloc(2 * n + 1), *w = o;
    if (!o) return NULL;
    for (; *s; s++) {
        if (*s == '\\' || *s == '"') *w++ = '\\', *w++ = *s;
        else if (*s == '\n') *w++ = '\\', *w++ = 'n';
        else *w++ = *s;
    }
    *w = 0;
    return o;
}

serve_metrics *metrics_create(const char *model_name) {
    serve_metrics *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    if (!(m->model = escape_label(model_name ? model_name : ""))) {
        free(m);
        return NULL;
    }
    pthread_mutex_init(&m->mu, NULL);
    hist_init(&m->ttft, k_ttft_le, (int)(sizeof k_ttft_le / sizeof k_ttft_le[0]));
    hist_init(&m->tpot, k_tpot_le, (int)(sizeof k_tpot_le / sizeof k_tpot_le[0]));
    hist_init(&m->e2e, k_e2e_le, (int)(sizeof k_e2e_le / sizeof k_e2e_le[0]));
    return m;
}

void metrics_destroy(serve_metrics *m) {
    if (!m) return;
    pthread_mutex_destroy(&m->mu);
    free(m->model);
    free(m);
}

void metrics_observe_request(serve_metrics *m, double e2e_s, double ttft_s, double tpot_s,
                             const pagoda_finish_reason *finish, int n_choices) {
    pthread_mutex_lock(&m->mu);
    hist_observe(&m->e2e, e2e_s);
    if (ttft_s >= 0) hist_observe(&m->ttft, ttft_s);
    if (tpot_s >= 0) hist_observe(&m->tpot, tpot_s);
    for (int i = 0; i < n_choices; i++)
        if ((unsigned)finish[i] < 5) m->finished[finish[i]]++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_observe_http(serve_metrics *m, unsigned status) {
    pthread_mutex_lock(&m->mu);
    if (status >= 100 && status < 600) m->http[status]++;
    pthread_mutex_unlock(&m->mu);
}

typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} out;

static void put(out *o, const char *fmt, ...) PG_PRINTF(2, 3);
static void put(out *o, const char *fmt, ...) {
    if (o->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->oom = 1;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = o->cap * 2 + (size_t)n;
        char *p = realloc(o->p, cap);
        if (!p) {
            o->oom = 1;
            return;
        }
        o->p = p;
        o->cap = cap;
    }
}

static void put_head(out *o, const char *name, const char *type, const char *help) {
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void put_gauge(out *o, const char *model, const char *name, const char *help, double v) {
    put_head(o, name, "gauge", help);
    put(o, "%s{model_name=\"%s\"} %.17g\n", name, model, v);
}

static void put_counter(out *o, const char *model, const char *name, const char *help, uint64_t v) {
    put_head(o, name, "counter", help);
    put(o, "%s{model_name=\"%s\"} %llu\n", name, model, (unsigned long long)v);
}

static void put_counter_f(out *o, const char *model, const char *name, const char *help, double v) {
    put_head(o, name, "counter", help);
    put(o, "%s{model_name=\"%s\"} %.6f\n", name, model, v);
}

static void put_hist(out *o, const char *model, const char *name, const char *help, const histogram *h) {
    put_head(o, name, "histogram", help);
    uint64_t cum = 0;
    for (int i = 0; i < h->n_le; i++) {
        cum += h->counts[i];
        put(o, "%s_bucket{model_name=\"%s\",le=\"%g\"} %llu\n", name, model, h->le[i], (unsigned long long)cum);
    }
    cum += h->counts[h->n_le];
    put(o, "%s_bucket{model_name=\"%s\",le=\"+Inf\"} %llu\n", name, model, (unsigned long long)cum);
    put(o, "%s_sum{model_name=\"%s\"} %.17g\n", name, model, h->sum);
    put(o, "%s_count{model_name=\"%s\"} %llu\n", name, model, (unsigned long long)h->count);
}

/* The metrics vLLM also exports, under prefix ("pagoda:" or "vllm:"): routers and dashboards
 * built for vLLM (vllm-router, sglang-router, Grafana boards, KEDA/HPA rules) read them unchanged. */
static void render_common(out *o, const serve_metrics *m, const pagoda_engine_stats *st, const char *prefix) {
    const char *mn = m->model;
    char n[96];
#define NAME(s) (snprintf(n, sizeof n, "%s%s", prefix, s), n)
    put_gauge(o, mn, NAME("num_requests_running"), "Requests with a sequence in the running batch.", st->n_running_requests);
    put_gauge(o, mn, NAME("num_requests_waiting"), "Requests waiting to be scheduled (queued or preempted).",
              st->n_waiting_requests);
    double usage = st->kv_blocks_total > 0 ? (double)st->kv_blocks_used / st->kv_blocks_total : 0.0;
    put_gauge(o, mn, NAME("kv_cache_usage_perc"), "Fraction of KV cache blocks in use (1 = full).", usage);
    if (!strcmp(prefix, "vllm:")) /* the name vLLM used before v1 (still read by older routers and boards) */
        put_gauge(o, mn, NAME("gpu_cache_usage_perc"), "Fraction of KV cache blocks in use (1 = full).", usage);
    put_counter(o, mn, NAME("prefix_cache_queries_total"), "Prompt tokens looked up in the prefix cache.",
                st->n_prompt_tokens);
    put_counter(o, mn, NAME("prefix_cache_hits_total"), "Prompt tokens served from the prefix cache.", st->n_cached_tokens);
    put_counter(o, mn, NAME("prompt_tokens_total"), "Prompt tokens of admitted sequences.", st->n_prompt_tokens);
    put_counter(o, mn, NAME("generation_tokens_total"), "Generated tokens.", st->n_generated_tokens);
    put_counter(o, mn, NAME("num_preemptions_total"), "Sequences preempted for lack of KV blocks.", st->n_preemptions);
    put_counter(o, mn, NAME("spec_decode_num_drafts_total"), "Speculative decoding: sequence-steps that verified drafts.",
                st->n_spec_drafts);
    put_counter(o, mn, NAME("spec_decode_num_draft_tokens_total"), "Speculative decoding: draft tokens verified.",
                st->n_spec_proposed);
    put_counter(o, mn, NAME("spec_decode_num_accepted_tokens_total"), "Speculative decoding: draft tokens accepted.",
                st->n_spec_accepted);
    put_head(o, NAME("request_success_total"), "counter", "Finished choices, by finish reason.");
    static const char *const reasons[5] = {NULL, "stop", "length", "abort", "error"};
    for (int i = 1; i < 5; i++)
        put(o, "%s{model_name=\"%s\",finished_reason=\"%s\"} %llu\n", n, mn, reasons[i],
            (unsigned long long)m->finished[i]);
    put_hist(o, mn, NAME("time_to_first_token_seconds"), "Time from request arrival to its first token.", &m->ttft);
    put_hist(o, mn, NAME("time_per_output_token_seconds"), "Mean time between output tokens of a request.", &m->tpot);
    if (!strcmp(prefix, "vllm:")) /* vLLM v1's name for the same histogram */
        put_hist(o, mn, NAME("inter_token_latency_seconds"), "Mean time between output tokens of a request.", &m->tpot);
    put_hist(o, mn, NAME("e2e_request_latency_seconds"), "Time from request arrival to its last event.", &m->e2e);
#undef NAME
}

char *metrics_render(serve_metrics *m, const pagoda_engine_stats *st, size_t stream_unsent_peak,
                     const pagoda_tp_comm_stats *comm, size_t *len) {
    out o = {.cap = 16384};
    if (!(o.p = malloc(o.cap))) return NULL;
    o.p[0] = 0;
    pthread_mutex_lock(&m->mu);
    const char *mn = m->model;
    render_common(&o, m, st, "pagoda:");
    put_gauge(&o, mn, "pagoda:num_sequences_running", "Sequences in the running batch (n > 1 requests run several).", st->n_running);
    put_gauge(&o, mn, "pagoda:num_requests_live", "Requests submitted and not finished.", st->n_live_requests);
    put_gauge(&o, mn, "pagoda:kv_cache_blocks_total", "KV cache blocks.", st->kv_blocks_total);
    put_gauge(&o, mn, "pagoda:kv_cache_blocks_used", "KV cache blocks referenced by sequences.", st->kv_blocks_used);
    put_gauge(&o, mn, "pagoda:kv_cache_blocks_cached", "Free KV cache blocks holding a reusable prefix.",
              st->kv_blocks_cached);
    put_gauge(&o, mn, "pagoda:max_model_len", "Prompt + generation limit in tokens.", st->max_model_len);
    put_gauge(&o, mn, "pagoda:stream_unsent_bytes_peak",
              "Largest backlog of generated output a stream's client left unread (bytes; capped by --max-unsent-bytes).",
              (double)stream_unsent_peak);
    put_counter(&o, mn, "pagoda:computed_tokens_total", "Tokens run through the model (prefill, decode, recompute).",
                st->n_computed_tokens);
    put_counter(&o, mn, "pagoda:engine_steps_total", "Engine steps.", st->n_steps);
    put_counter_f(&o, mn, "pagoda:engine_step_seconds_total", "Wall time in engine steps that ran the model.",
                  st->step_seconds);
    put_counter_f(&o, mn, "pagoda:engine_forward_seconds_total",
                  "Of that, in the forward pass; the rest is host work (scheduling, sampling, events).",
                  st->forward_seconds);
    put_counter(&o, mn, "pagoda:requests_submitted_total", "Requests accepted by the engine.",
                st->n_requests_submitted);
    put_head(&o, "pagoda:http_responses_total", "counter", "HTTP responses, by status code.");
    for (int s = 100; s < 600; s++)
        if (m->http[s]) put(&o, "pagoda:http_responses_total{status=\"%d\"} %llu\n", s, (unsigned long long)m->http[s]);
    if (comm) { /* --comm-stats: this rank's MPI calls (rank 0: the engine's broadcasts, its all-reduces) */
        const struct {
            const char *what;
            uint64_t calls, bytes;
            double secs;
        } k[] = {{"all_reduce", comm->n_all_reduce, comm->all_reduce_bytes, comm->all_reduce_s},
                 {"broadcast", comm->n_bcast, comm->bcast_bytes, comm->bcast_s},
                 {"send", comm->n_send, comm->send_bytes, comm->send_s},
                 {"recv", comm->n_recv, comm->recv_bytes, comm->recv_s}};
        char n[96], h[160];
        for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
            snprintf(n, sizeof n, "pagoda:tp_%s_calls_total", k[i].what);
            snprintf(h, sizeof h, "Tensor/pipeline-parallel MPI %s calls of this rank.", k[i].what);
            put_counter(&o, mn, n, h, k[i].calls);
            snprintf(n, sizeof n, "pagoda:tp_%s_bytes_total", k[i].what);
            snprintf(h, sizeof h, "Payload bytes of those %s calls.", k[i].what);
            put_counter(&o, mn, n, h, k[i].bytes);
            snprintf(n, sizeof n, "pagoda:tp_%s_seconds_total", k[i].what);
            snprintf(h, sizeof h, "Wall time inside those %s calls (waiting for the other ranks included).", k[i].what);
            put_counter_f(&o, mn, n, h, k[i].secs);
        }
    }
    render_common(&o, m, st, "vllm:");
    pthread_mutex_unlock(&m->mu);
    if (o.oom) {
        free(o.p);
        return NULL;
    }
    if (len) *len = o.len;
    return o.p;
}
