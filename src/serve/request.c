/* Request objects of `pagoda serve` (see request.h): lifecycle, the engine-event queue, the
 * bookkeeping behind usage, /metrics and the log line, and cancellation. */
#include "serve/request.h"

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
    req_events_free(hr->q_head);
    free(hr->choices);
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
    return e;
}

static void observe_done(http_req *hr, double now) {
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

/* The engine's callback: bookkeeping and a copy of the event into the queue, nothing else. */
static void req_on_event(const pagoda_event *ev, void *user) {
    http_req *hr = user;
    pg_server *s = hr->srv;
    double now = pg_now_s();
    pthread_mutex_lock(&hr->mu);
    if (ev->n_prompt_tokens > 0) hr->n_prompt = ev->n_prompt_tokens;
    if (ev->n_cached_tokens >= 0) hr->n_cached = ev->n_cached_tokens;
    req_choice *ch = ev->index >= 0 && ev->index < hr->n_choices ? &hr->choices[ev->index] : NULL;
    if (ch) {
        if (ev->token >= 0) {
            if (hr->t_first == 0) hr->t_first = now;
            hr->t_last = now;
        }
        if (ev->n_completion_tokens > ch->n_completion) ch->n_completion = ev->n_completion_tokens;
        if (ev->finish != PAGODA_FINISH_NONE && ch->finish == PAGODA_FINISH_NONE) {
            ch->finish = ev->finish;
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
            if (!e) hr->events_lost = 1;
            else if (hr->q_tail) hr->q_tail = hr->q_tail->next = e;
            else hr->q_head = hr->q_tail = e;
            hr->q_bytes += bytes;
            if (hr->stream) {
                size_t peak = atomic_load(&s->stream_unsent_peak);
                while (hr->q_bytes > peak && !atomic_compare_exchange_weak(&s->stream_unsent_peak, &peak, hr->q_bytes)) {
                }
            }
            /* a stream's events wait here only while the client does not read: past the cap the
             * request is cancelled (by the watchdog, off this thread) with a clear reason */
            if (hr->stream && !hr->overflow && hr->q_bytes > s->cfg.max_unsent_bytes &&
                s->cfg.max_unsent_bytes > 0) {
                hr->overflow = 1;
                watchdog_poke(s);
            }
        }
    }
    int done = ev->request_done;
    if (done) {
        /* choices the engine never finished explicitly count as cancelled */
        for (int32_t i = 0; i < hr->n_choices; i++)
            if (hr->choices[i].finish == PAGODA_FINISH_NONE) hr->choices[i].finish = PAGODA_FINISH_CANCELLED;
        observe_done(hr, now);
        hr->engine_done = 1;
    }
    if (hr->suspended && !hr->http_done && (hr->stream ? hr->q_head != NULL || done : done)) {
        hr->suspended = 0;
        MHD_resume_connection(hr->conn);
    }
    pthread_mutex_unlock(&hr->mu);
    if (done) {
        atomic_fetch_sub(&s->n_gen_engine, 1);
        req_unref(hr); /* the engine's reference */
    }
}

/* ---- the HTTP side ---- */

pagoda_status req_submit(http_req *hr, pagoda_request *pr, int stream) {
    pg_server *s = hr->srv;
    hr->stream = stream;
    hr->want_tokens = pr->logprobs >= 0;
    if (!(hr->choices = calloc((size_t)(pr->n > 0 ? pr->n : 1), sizeof *hr->choices)))
        return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    hr->n_choices = pr->n > 0 ? pr->n : 1;
    pr->on_event = req_on_event;
    pr->user = hr;
    req_ref(hr); /* the engine's reference, released on request_done */
    atomic_fetch_add(&s->n_gen_engine, 1);
    uint64_t id = 0;
    pagoda_status st = pagoda_engine_submit(s->engine, pr, &id);
    if (st) {
        atomic_fetch_sub(&s->n_gen_engine, 1);
        req_unref(hr);
        return st;
    }
    pthread_mutex_lock(&hr->mu);
    hr->submitted = 1;
    hr->engine_id = id;
    pthread_mutex_unlock(&hr->mu);
    hr->gen_counted = 1;
    atomic_fetch_add(&s->n_gen_http, 1);
    watchdog_add(hr);
    return PAGODA_OK;
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
    u->n_prompt = hr->n_prompt;
    u->n_cached = hr->n_cached;
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
    uint64_t id = hr->engine_id;
    usage_locked(hr, u);
    pthread_mutex_unlock(&hr->mu);
    req_events_free(dropped);
    /* outside the lock: the engine may hold its own while it calls req_on_event */
    if (cancel) pagoda_engine_cancel(hr->srv->engine, id);
}
