/* GET /health_generate (see health_generate.h). */
#include "serve/health_generate.h"

#include <stdio.h>
#include <stdlib.h>

#include "core/clock.h"
#include "serve/conn_guard.h"
#include "serve/send.h"

typedef struct {
    int embed; /* the model embeds only: the probe pools its prompt */
} probe;

static void probe_free(void *p) { free(p); }

static void on_embedding(const pagoda_embedding_event *ev, void *user) { (void)ev, (void)user; }

/* 503 with {"error": {"type": "server_error", "code": code, "message": ...}} */
#define unavailable(hr, code, ...) send_error(hr, 503, "server_error", NULL, code, __VA_ARGS__)

static enum MHD_Result answer(http_req *hr) {
    pg_server *s = hr->srv;
    if (hr->status) return MHD_YES; /* answered already (before anything was submitted) */
    pthread_mutex_lock(&hr->mu);
    const int late = hr->answer_late && !hr->engine_done;
    pthread_mutex_unlock(&hr->mu);
    if (late)
        return unavailable(hr, "timeout", "The engine generated no token within %g s.", s->cfg.health_generate_timeout_s);
    serve_event *events = NULL;
    if (req_take(hr, &events) == REQ_SUSPENDED) return MHD_YES; /* the token, or the watchdog, resumes it */
    req_events_free(events);
    req_usage u;
    char error[256];
    req_get_usage(hr, &u, error, sizeof error);
    const probe *p = hr->payload;
    if (u.n_error) return unavailable(hr, "generation_failed", "The engine failed the probe: %s", error);
    if (u.n_cancelled || (!p->embed && u.n_completion < 1))
        return unavailable(hr, "cancelled", "The probe was cancelled%s.",
                           atomic_load(&s->draining) ? " (the server is shutting down)" : "");
    return send_json(hr, 200,
                     json_pack("{s:s, s:s, s:f}", "status", "ok", "model", hr->lease.name ? hr->lease.name : "",
                               "seconds", pg_now_s() - hr->t0));
}

static enum MHD_Result start(http_req *hr) {
    pg_server *s = hr->srv;
    hr->gen_started = 1;
    /* nothing more is read: the answer phase (no body deadline while it waits for the token) */
    hr->received = 1;
    conn_guard_phase(s->guard, hr->conn, GUARD_ANSWER);
    if (atomic_load(&s->draining)) return unavailable(hr, "shutting_down", "The server is shutting down.");
    char err[384];
    if (mgr_acquire(s->models, NULL, 0, MGR_NO_LOAD, &hr->lease, err, sizeof err) != MGR_OK)
        return unavailable(hr, "model_not_loaded", "The default model cannot serve now: %s", err);
    probe *p = calloc(1, sizeof *p);
    if (!p) return send_error(hr, 500, "server_error", NULL, NULL, "out of memory");
    p->embed = hr->lease.embed_only;
    hr->payload = p, hr->payload_free = probe_free;
    hr->no_request_metrics = 1;
    int32_t *ids = NULL, fallback = 0;
    size_t n = 0;
    /* "Hi" with the model's BOS; a model without a tokenizer takes token 0 */
    if (pagoda_tokenize(hr->lease.model, "Hi", 2, 1, 0, &ids, &n) || n == 0) {
        pagoda_free(ids);
        ids = NULL, n = 0;
    }
    pagoda_request pr;
    pagoda_request_default(&pr);
    pr.prompt_tokens = ids ? ids : &fallback;
    pr.n_prompt_tokens = ids ? (int32_t)n : 1;
    pr.sampling.temperature = 0;
    pr.ignore_eos = 1;
    pr.no_speculation = 1;
    if (p->embed) pr.on_embedding = on_embedding, pr.pooling = PAGODA_POOLING_MODEL, pr.normalize = -1;
    else pr.max_tokens = 1;
    pthread_mutex_lock(&hr->mu);
    hr->answer_by = pg_now_s() + s->cfg.health_generate_timeout_s;
    pthread_mutex_unlock(&hr->mu);
    pagoda_status st = req_submit(hr, &pr, 0); /* the engine copies the prompt */
    pagoda_free(ids);
    if (st) return unavailable(hr, "engine_refused", "The engine refused the probe: %s", pagoda_last_error());
    return answer(hr);
}

enum MHD_Result health_generate_handle(http_req *hr) { return hr->gen_started ? answer(hr) : start(hr); }
