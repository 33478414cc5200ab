/* Request objects of `pagoda serve` (see request.h): lifecycle, the engine-event queue, the
 * bookkeeping behind usage, /metrics and the log line, and cancellation. */
#include "serve/request.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "serve/metrics.h"
#include "serve/watchdog.h"

http_req *req_create(pg_server *s, struct MHD_Connection *conn, const char *method, const char *url,
                     const char *version) {
    http_req *hr = calloc(1, sizeof *hr);
    if (!hr) return NULL;
    hr->srv = s;
    hr->conn = conn;
    hr->http10 = version && !strcmp(version, MHD_HTTP_VERSION_1_0);
    hr->t0 = pg_now_s();
    snprintf(hr->method, sizeof hr->method, "%s", method);
    snprintf(hr->path, sizeof hr->path, "%s", url);
    pthread_mutex_init(&hr->mu, NULL);
    atomic_init(&hr->refs, 1);
    return hr;
}

void req_ref(http_req *hr) { atomic_fetch_add(&hr->refs, 1); }

void req_events_free(serve_event *list) {
    while (list) {
        serve_event *next = list->next;
        free(list);
        list = next;
    }
}

void req_unref(http_req *hr) {
    if (atomic_fetch_sub(&hr->refs, 1) != 1) return;
    if (hr->payload_free) hr->payload_free(hr->payload);
    mgr_release(hr->srv->models, &hr->lease); /* after the payload: it may hold the model's grammars */
    free(hr->model_name);
    req_events_free(hr->q_head);
    free(hr->choices);
    for (int32_t i = 0; hr->subs && i < hr->n_subs; i++) free(hr->subs[i].prompt);
    free(hr->subs);
    free(hr->error);
    oa_buf_free(&hr->out);
    free(hr->body);
    pthread_mutex_destroy(&hr->mu);
    free(hr);
}

/* ---- the engine thread ---- */

/* One allocation: the event, its top alternatives, its text and its error message. */
static serve_event *event_copy(const pagoda_event *ev, size_t *bytes) {
    const int32_t n_top = ev->n_top > 0 && ev->top_tokens && ev->top_logprobs ? ev->n_top : 0;
    const size_t text_len = ev->text ? ev->text_len : 0;
    const char *err = ev->finish == PAGODA_FINISH_ERROR ? (ev->error ? ev->error : "generation failed") : NULL;
    const size_t err_len = err ? strlen(err) : 0;
    size_t size = sizeof(serve_event) + (size_t)n_top * (sizeof(int32_t) + sizeof(float)) + text_len + 1 +
                  (err ? err_len + 1 : 0);
    serve_event *e = malloc(size);
    if (!e) return NULL;
    *bytes = e->bytes = size;
    char *p = (char *)(e + 1);
    e->next = NULL;
    e->index = ev->index;
    e->token = ev->token;
    e->logprob = ev->logprob;
    e->n_top = n_top;
    e->finish = ev->finish;
    e->stop_index = ev->stop_index;
    if (n_top) memcpy(p, ev->top_tokens, (size_t)n_top * sizeof(int32_t));
    e->top_tokens = (const int32_t *)p;
    p += (size_t)n_top * sizeof(int32_t);
    if (n_top) memcpy(p, ev->top_logprobs, (size_t)n_top * sizeof(float));
    e->top_logprobs = (const float *)p;
    p += (size_t)n_top * sizeof(float);
    if (text_len) memcpy(p, ev->text, text_len);
    p[text_len] = 0;
    e->text = p;
    e->text_len = text_len;
    p += text_len + 1;
    e->error = NULL;
    if (err) {
        memcpy(p, err, err_len + 1);
        e->error = p;
    }
    e->prompt_pos = -1;
    e->prompt_last = 0;
    return e;
}

static void observe_done(http_req *hr, double now) {
    if (hr->no_request_metrics) return;
    enum { MAX_CHOICES = 64 };
    pagoda_finish_reason fin[MAX_CHOICES];
    int32_t n = hr->n_choices < MAX_CHOICES ? hr->n_choices : MAX_CHOICES, max_tok = 0;
    for (int32_t i = 0; i < n; i++) {
        fin[i] = hr->choices[i].finish;
        if (hr->choices[i].n_completion > max_tok) max_tok = hr->choices[i].n_completion;
    }
    double ttft = hr->t_first > 0 ? hr->t_first - hr->t0 : -1;
    double tpot = max_tok > 1 && hr->t_last > hr->t_first ? (hr->t_last - hr->t_first) / (max_tok - 1) : -1;
    metrics_observe_request(hr->srv->metrics, now - hr->t0, ttft, tpot, fin, n);
}

/* Queues e (hr->mu held): a stream's events wait here only while the client does not read;
 * past the cap the request is cancelled (by the watchdog, off this thread) with a clear reason. */
static void queue_locked(http_req *hr, serve_event *e, size_t bytes) {
    pg_server *s = hr->srv;
    if (!e) {
        hr->events_lost = 1;
        return;
    }
    if (hr->q_tail) hr->q_tail = hr->q_tail->next = e;
    else hr->q_head = hr->q_tail = e;
    hr->q_bytes += bytes;
    if (hr->stream) {
        size_t peak = atomic_load(&s->stream_unsent_peak);
        while (hr->q_bytes > peak && !atomic_compare_exchange_weak(&s->stream_unsent_peak, &peak, hr->q_bytes)) {
        }
    }
    if (hr->stream && !hr->overflow && hr->q_bytes > s->cfg.max_unsent_bytes && s->cfg.max_unsent_bytes > 0) {
        hr->overflow = 1;
        watchdog_poke(s);
    }
}

static void resume_locked(http_req *hr, int done) {
    if (hr->suspended && !hr->http_done && (hr->stream ? hr->q_head != NULL || done : done)) {
        hr->suspended = 0;
        MHD_resume_connection(hr->conn);
    }
}

/* The engine's callback: bookkeeping and a copy of the event into the queue, nothing else. */
static void req_on_event(const pagoda_event *ev, void *user) {
    req_sub *sub = user;
    http_req *hr = sub->hr;
    pg_server *s = hr->srv;
    double now = pg_now_s();
    pthread_mutex_lock(&hr->mu);
    if (ev->n_prompt_tokens > 0) sub->n_prompt = ev->n_prompt_tokens;
    if (ev->n_cached_tokens >= 0) sub->n_cached = ev->n_cached_tokens;
    const int32_t dup = sub->score_dup ? sub->n : 1;
    for (int32_t d = 0; d < dup; d++) {
        const int32_t index = ev->index >= 0 && ev->index < sub->n ? sub->base + ev->index + d : -1;
        req_choice *ch = index >= 0 && index < hr->n_choices ? &hr->choices[index] : NULL;
        if (!ch) continue;
        if (ev->token >= 0) {
            if (hr->t_first == 0) hr->t_first = now;
            hr->t_last = now;
        }
        if (ev->n_completion_tokens > ch->n_completion) ch->n_completion = ev->n_completion_tokens;
        if (ev->finish != PAGODA_FINISH_NONE && ch->finish == PAGODA_FINISH_NONE) {
            ch->finish = ev->finish;
            ch->stop_index = ev->stop_index;
            if (ev->finish == PAGODA_FINISH_ERROR && !hr->error) {
                const char *msg = ev->error ? ev->error : "generation failed";
                size_t n = strlen(msg);
                if ((hr->error = malloc(n + 1))) memcpy(hr->error, msg, n + 1);
            }
        }
        /* once the client is gone (the request is being cancelled) nothing is kept for it, nor
         * more tokens for a stream whose client stopped reading (only the finish events) */
        if (!hr->http_done && (!hr->overflow || ev->finish != PAGODA_FINISH_NONE) &&
            (ev->text_len > 0 || ev->finish != PAGODA_FINISH_NONE || (ev->token >= 0 && hr->want_tokens))) {
            size_t bytes = 0;
            serve_event *e = event_copy(ev, &bytes);
            if (e) e->index = index;
            queue_locked(hr, e, bytes);
        }
    }
    int done = 0;
    if (ev->request_done) {
        sub->done = 1;
        /* choices the engine never finished explicitly count as cancelled */
        for (int32_t i = sub->base; i < sub->base + sub->n && i < hr->n_choices; i++)
            if (hr->choices[i].finish == PAGODA_FINISH_NONE) hr->choices[i].finish = PAGODA_FINISH_CANCELLED;
        if (++hr->n_subs_done == hr->n_subs) {
            observe_done(hr, now);
            hr->engine_done = done = 1;
        }
    }
    resume_locked(hr, done);
    pthread_mutex_unlock(&hr->mu);
    if (ev->request_done) {
        atomic_fetch_sub(&s->n_gen_engine, 1);
        req_unref(hr); /* the engine's reference */
    }
}

/* A prompt token's event: its logprob under row (the logits after the previous position; NULL
 * for position 0) and the top alternatives. */
static serve_event *prompt_event(const req_sub *sub, int32_t pos, const float *row, int32_t n_vocab, size_t *bytes) {
    enum { MAX_TOP = 20 };
    int32_t top[MAX_TOP];
    float top_lp[MAX_TOP];
    int32_t k = row ? (sub->top_k < MAX_TOP ? sub->top_k : MAX_TOP) : 0;
    if (k > n_vocab) k = n_vocab;
    const int32_t tok = sub->prompt[pos];
    float lp = NAN;
    if (row) {
        /* log-softmax in double; the token's value and the top ones are the same numbers */
        double mx = -INFINITY, sum = 0;
        for (int32_t v = 0; v < n_vocab; v++)
            if (row[v] > mx) mx = row[v];
        for (int32_t v = 0; v < n_vocab; v++) sum += exp((double)row[v] - mx);
        const double lse = mx + log(sum);
        lp = tok >= 0 && tok < n_vocab ? (float)((double)row[tok] - lse) : NAN;
        int32_t n = 0; /* top k by insertion: k is small */
        for (int32_t v = 0; v < n_vocab && k > 0; v++) {
            if (n == k && row[v] <= row[top[n - 1]]) continue;
            int32_t j = n < k ? n++ : n - 1;
            while (j > 0 && row[top[j - 1]] < row[v]) top[j] = top[j - 1], j--;
            top[j] = v;
        }
        for (int32_t j = 0; j < n; j++) top_lp[j] = (float)((double)row[top[j]] - lse);
        k = n;
    }
    pagoda_event ev = {.index = 0, .token = tok, .logprob = lp, .n_top = k, .top_tokens = top, .top_logprobs = top_lp};
    serve_event *e = event_copy(&ev, bytes);
    if (e) {
        e->index = sub->base;
        e->prompt_pos = pos;
        e->prompt_last = pos == sub->n_prompt_tokens - 1;
        if (!row) e->n_top = -1;
    }
    return e;
}

/* The engine's prompt logits (in position order, before the request's other events): row pos is
 * the distribution of the prompt's token pos + 1. */
static void req_on_prompt_logits(const pagoda_logits_event *ev, void *user) {
    req_sub *sub = user;
    http_req *hr = sub->hr;
    if (ev->pos < 0 || ev->pos >= sub->n_prompt_tokens) return;
    serve_event *first = NULL, *next = NULL;
    size_t b0 = 0, b1 = 0;
    if (ev->pos == 0) first = prompt_event(sub, 0, NULL, ev->n_vocab, &b0);
    if (ev->pos + 1 < sub->n_prompt_tokens) next = prompt_event(sub, ev->pos + 1, ev->logits, ev->n_vocab, &b1);
    pthread_mutex_lock(&hr->mu);
    if (hr->http_done) {
        free(first), free(next);
    } else {
        if (ev->pos == 0) queue_locked(hr, first, b0);
        if (ev->pos + 1 < sub->n_prompt_tokens) queue_locked(hr, next, b1);
        resume_locked(hr, 0);
    }
    pthread_mutex_unlock(&hr->mu);
}

/* ---- the HTTP side ---- */

pagoda_status req_submit(http_req *hr, pagoda_request *pr, int stream) { return req_submit_many(hr, pr, 1, stream, 0); }

pagoda_status req_submit_many(http_req *hr, pagoda_request *prs, int32_t n_prs, int stream, int prompt_logprobs) {
    pg_server *s = hr->srv;
    hr->stream = stream;
    hr->want_tokens = 0;
    int64_t total = 0;
    for (int32_t i = 0; i < n_prs; i++) {
        total += prs[i].n > 0 ? prs[i].n : 1;
        if (prs[i].logprobs >= 0) hr->want_tokens = 1;
    }
    if (!(hr->choices = calloc((size_t)total, sizeof *hr->choices)) || !(hr->subs = calloc((size_t)n_prs, sizeof *hr->subs)))
        return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    hr->n_choices = (int32_t)total;
    int32_t base = 0;
    for (int32_t i = 0; i < n_prs; i++) {
        pagoda_request *pr = &prs[i];
        req_sub *sub = &hr->subs[i];
        sub->hr = hr;
        sub->base = base;
        sub->n = pr->n > 0 ? pr->n : 1;
        base += sub->n;
        if (pr->score_only && pr->n > 1) sub->score_dup = 1, pr->n = 1; /* nothing sampled: one pass serves all */
        pr->on_event = req_on_event;
        pr->user = sub;
        if (prompt_logprobs && pr->logprobs >= 0 && pr->prompt_tokens && pr->n_prompt_tokens > 0) {
            if (!(sub->prompt = malloc((size_t)pr->n_prompt_tokens * sizeof *sub->prompt)))
                return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
            memcpy(sub->prompt, pr->prompt_tokens, (size_t)pr->n_prompt_tokens * sizeof *sub->prompt);
            sub->n_prompt_tokens = pr->n_prompt_tokens;
            sub->top_k = pr->logprobs;
            pr->on_prompt_logits = req_on_prompt_logits;
        }
    }
    hr->n_subs = n_prs; /* before any submission: a request that finishes at once must not end hr */
    pagoda_status st = PAGODA_OK;
    int32_t n_ok = 0;
    for (; n_ok < n_prs; n_ok++) {
        req_ref(hr); /* the engine's reference, released on request_done */
        atomic_fetch_add(&s->n_gen_engine, 1);
        uint64_t id = 0;
        prs[n_ok].adapter = hr->lease.adapter; /* the LoRA adapter the request's model name picked */
        st = pagoda_engine_submit(hr->lease.engine, &prs[n_ok], &id);
        if (st) {
            atomic_fetch_sub(&s->n_gen_engine, 1);
            req_unref(hr);
            break;
        }
        pthread_mutex_lock(&hr->mu);
        hr->subs[n_ok].engine_id = id;
        if (n_ok == 0) hr->engine_id = id;
        pthread_mutex_unlock(&hr->mu);
    }
    pthread_mutex_lock(&hr->mu);
    if (st) {
        hr->n_subs = n_ok;
        if (n_ok > 0 && hr->n_subs_done == n_ok) hr->engine_done = 1;
    }
    hr->submitted = n_ok > 0;
    pthread_mutex_unlock(&hr->mu);
    if (st) {
        req_cancel_engine(hr); /* those already in: the HTTP side answers the error */
        return st;
    }
    hr->gen_counted = 1;
    atomic_fetch_add(&s->n_gen_http, 1);
    watchdog_add(hr);
    return PAGODA_OK;
}

void req_cancel_engine(http_req *hr) {
    for (int32_t i = 0;; i++) {
        pthread_mutex_lock(&hr->mu);
        int more = i < hr->n_subs;
        int live = more && !hr->subs[i].done;
        uint64_t id = more ? hr->subs[i].engine_id : 0;
        pthread_mutex_unlock(&hr->mu);
        if (!more) break;
        /* outside the lock: the engine may hold its own while it calls req_on_event */
        if (live) pagoda_engine_cancel(hr->lease.engine, id);
    }
}

enum { TAKE_BYTES = 64 << 10 };

req_take_result req_take(http_req *hr, serve_event **events) {
    *events = NULL;
    pthread_mutex_lock(&hr->mu);
    req_take_result r;
    if (hr->q_head && hr->stream) {
        /* a portion at a time, so the text rendered from it stays small whatever is queued */
        serve_event *last = hr->q_head;
        size_t taken = last->bytes;
        while (last->next && taken + last->next->bytes <= TAKE_BYTES) taken += (last = last->next)->bytes;
        *events = hr->q_head;
        hr->q_head = last->next;
        if (!hr->q_head) hr->q_tail = NULL;
        last->next = NULL;
        hr->q_bytes -= taken < hr->q_bytes ? taken : hr->q_bytes;
        r = REQ_EVENTS;
    } else if (hr->q_head && hr->engine_done) {
        *events = hr->q_head;
        hr->q_head = hr->q_tail = NULL;
        hr->q_bytes = 0;
        r = REQ_EVENTS;
    } else if (hr->stream && hr->ping_wanted) {
        hr->ping_wanted = 0;
        r = REQ_EVENTS;
    } else if (hr->engine_done) {
        r = REQ_DRAINED;
    } else {
        /* park the connection: the next event (stream) or the last one resumes it */
        hr->suspended = 1;
        MHD_suspend_connection(hr->conn);
        r = REQ_SUSPENDED;
    }
    pthread_mutex_unlock(&hr->mu);
    return r;
}

static void usage_locked(const http_req *hr, req_usage *u) {
    memset(u, 0, sizeof *u);
    for (int32_t i = 0; i < hr->n_subs; i++) {
        u->n_prompt += hr->subs[i].n_prompt;
        u->n_cached += hr->subs[i].n_cached;
    }
    u->events_lost = hr->events_lost;
    u->overflow = hr->overflow;
    for (int32_t i = 0; i < hr->n_choices; i++) {
        u->n_completion += hr->choices[i].n_completion;
        u->n_cancelled += hr->choices[i].finish == PAGODA_FINISH_CANCELLED;
        u->n_error += hr->choices[i].finish == PAGODA_FINISH_ERROR;
    }
}

void req_get_usage(http_req *hr, req_usage *u, char *error, size_t cap) {
    pthread_mutex_lock(&hr->mu);
    usage_locked(hr, u);
    if (error && cap) snprintf(error, cap, "%s", hr->error ? hr->error : "");
    pthread_mutex_unlock(&hr->mu);
}

void req_http_done(http_req *hr, req_usage *u) {
    watchdog_remove(hr);
    pthread_mutex_lock(&hr->mu);
    hr->http_done = 1;
    serve_event *dropped = hr->q_head;
    hr->q_head = hr->q_tail = NULL;
    int cancel = hr->submitted && !hr->engine_done;
    usage_locked(hr, u);
    pthread_mutex_unlock(&hr->mu);
    req_events_free(dropped);
    if (cancel) req_cancel_engine(hr);
    if (hr->payload_cancel) hr->payload_cancel(hr->payload);
}
