/* POST /v1/embeddings (see embeddings.h). The body is parsed by embeddings_request.c; inputs are
 * tokenized and checked against the context here, then all submitted. The engine's callbacks
 * only copy each vector into its slot and count the inputs done (under hr->mu); the last one
 * resumes the suspended connection, and the response is built on the HTTP thread. */
#include "serve/embeddings.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "serve/embeddings_request.h"
#include "serve/openai_response.h"
#include "serve/model_route.h"
#include "serve/send.h"
#include "serve/watchdog.h"

typedef struct emb_state emb_state;

typedef struct {
    emb_state *st;
    int32_t index;
    uint64_t id;     /* engine request id */
    int32_t n_tok;
} emb_slot;

struct emb_state {
    http_req *hr;
    emb_request q;
    int32_t n_embd, dims;
    float *vecs;     /* [n_inputs][n_embd] */
    emb_slot *slots; /* [n_inputs] */
    /* under hr->mu: */
    int32_t n_submitted, n_done, n_vectors;
    int all_submitted;
    int engine_done_all; /* every submitted input reported done */
    int failed;      /* an input finished without a vector (error or cancelled) */
    char error[256];
};

static void emb_free(void *p) {
    emb_state *st = p;
    if (!st) return;
    emb_request_free(&st->q);
    free(st->vecs), free(st->slots), free(st);
}

/* ---- engine thread ---- */

static void on_vector(const pagoda_embedding_event *ev, void *user) {
    emb_slot *sl = user;
    emb_state *st = sl->st;
    int32_t n = ev->n_embd < st->n_embd ? ev->n_embd : st->n_embd;
    memcpy(st->vecs + (size_t)sl->index * (size_t)st->n_embd, ev->embedding, sizeof(float) * (size_t)n);
    pthread_mutex_lock(&st->hr->mu);
    st->n_vectors++;
    pthread_mutex_unlock(&st->hr->mu);
}

static void on_event(const pagoda_event *ev, void *user) {
    emb_slot *sl = user;
    emb_state *st = sl->st;
    http_req *hr = st->hr;
    if (!ev->request_done) return;
    pthread_mutex_lock(&hr->mu);
    if (ev->finish != PAGODA_FINISH_STOP && !st->failed) {
        st->failed = ev->finish == PAGODA_FINISH_CANCELLED ? 1 : 2;
        snprintf(st->error, sizeof st->error, "%s", ev->error ? ev->error : "the request was cancelled");
    }
    st->n_done++;
    if (st->all_submitted && st->n_done == st->n_submitted) hr->engine_done = st->engine_done_all = 1;
    if (hr->engine_done && hr->suspended && !hr->http_done) {
        hr->suspended = 0;
        MHD_resume_connection(hr->conn);
    }
    pthread_mutex_unlock(&hr->mu);
    atomic_fetch_sub(&hr->srv->n_gen_engine, 1);
    req_unref(hr); /* this input's reference */
}

/* ---- HTTP side ---- */

/* The client went away (req_http_done): inputs still running are cancelled. */
static void emb_cancel(void *p) {
    emb_state *st = p;
    http_req *hr = st->hr;
    pthread_mutex_lock(&hr->mu);
    int32_t n = st->engine_done_all ? 0 : st->n_submitted;
    pthread_mutex_unlock(&hr->mu);
    for (int32_t i = 0; i < n; i++) pagoda_engine_cancel(hr->lease.engine, st->slots[i].id);
}

static const char k_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Little-endian float32 bytes of v[0..n), base64 (RFC 4648, padded), appended to b. */
static int append_base64(oa_buf *b, const float *v, int32_t n) {
    size_t bytes = (size_t)n * 4, i = 0;
    unsigned char *raw = malloc(bytes ? bytes : 1);
    char *out = malloc((bytes + 2) / 3 * 4 + 1);
    int rc = -1;
    if (!raw || !out) goto done;
    for (int32_t k = 0; k < n; k++) {
        uint32_t u;
        memcpy(&u, &v[k], 4);
        raw[4 * k] = (unsigned char)u, raw[4 * k + 1] = (unsigned char)(u >> 8);
        raw[4 * k + 2] = (unsigned char)(u >> 16), raw[4 * k + 3] = (unsigned char)(u >> 24);
    }
    size_t o = 0;
    for (; i + 2 < bytes; i += 3) {
        uint32_t x = (uint32_t)raw[i] << 16 | (uint32_t)raw[i + 1] << 8 | raw[i + 2];
        out[o++] = k_b64[x >> 18], out[o++] = k_b64[(x >> 12) & 63], out[o++] = k_b64[(x >> 6) & 63], out[o++] = k_b64[x & 63];
    }
    if (i < bytes) {
        uint32_t x = (uint32_t)raw[i] << 16 | (i + 1 < bytes ? (uint32_t)raw[i + 1] << 8 : 0);
        out[o++] = k_b64[x >> 18], out[o++] = k_b64[(x >> 12) & 63];
        out[o++] = i + 1 < bytes ? k_b64[(x >> 6) & 63] : '=';
        out[o++] = '=';
    }
    rc = oa_buf_append(b, out, o);
done:
    free(raw), free(out);
    return rc;
}

/* The first `dims` values, L2-normalized again when they are fewer than the model's (Matryoshka). */
static void shorten(float *v, int32_t dims, int32_t n_embd) {
    if (dims >= n_embd) return;
    double ss = 0;
    for (int32_t i = 0; i < dims; i++) ss += (double)v[i] * v[i];
    if (ss <= 0) return;
    float inv = (float)(1.0 / sqrt(ss));
    for (int32_t i = 0; i < dims; i++) v[i] *= inv;
}

static enum MHD_Result respond(http_req *hr, emb_state *st) {
    oa_buf b = {0};
    char num[64];
    int bad = oa_buf_append(&b, "{\"object\":\"list\",\"data\":[", 25);
    int64_t n_tokens = 0;
    for (int32_t i = 0; i < st->q.n_inputs && !bad; i++) {
        float *v = st->vecs + (size_t)i * (size_t)st->n_embd;
        shorten(v, st->dims, st->n_embd);
        n_tokens += st->slots[i].n_tok;
        int n = snprintf(num, sizeof num, "%s{\"object\":\"embedding\",\"index\":%d,\"embedding\":", i ? "," : "", i);
        bad |= oa_buf_append(&b, num, (size_t)n);
        if (st->q.base64) {
            bad |= oa_buf_append(&b, "\"", 1) || append_base64(&b, v, st->dims) || oa_buf_append(&b, "\"}", 2);
            continue;
        }
        bad |= oa_buf_append(&b, "[", 1);
        for (int32_t k = 0; k < st->dims && !bad; k++) {
            n = snprintf(num, sizeof num, "%s%.9g", k ? "," : "", isfinite(v[k]) ? (double)v[k] : 0.0);
            bad |= oa_buf_append(&b, num, (size_t)n);
        }
        bad |= oa_buf_append(&b, "]}", 2);
    }
    json_t *name = json_string(hr->lease.name);
    char *name_s = name ? json_dumps(name, JSON_ENCODE_ANY) : NULL;
    json_decref(name);
    int n = snprintf(num, sizeof num, "],\"model\":");
    bad |= !name_s || oa_buf_append(&b, num, (size_t)n) || oa_buf_append(&b, name_s, strlen(name_s));
    free(name_s);
    n = snprintf(num, sizeof num, ",\"usage\":{\"prompt_tokens\":%lld,\"total_tokens\":%lld}}", (long long)n_tokens,
                 (long long)n_tokens);
    bad |= oa_buf_append(&b, num, (size_t)n);
    if (bad) {
        oa_buf_free(&b);
        return send_error(hr, 500, "server_error", NULL, NULL, "out of memory");
    }
    return send_text(hr, 200, "application/json", b.p, b.len, MHD_RESPMEM_MUST_FREE);
}

/* Tokens of input i into *ids and *n (owned), truncated as asked; 0, or an answer already queued
 * (*ret) when the input cannot be run. */
static int input_tokens(http_req *hr, emb_state *st, int32_t i, int32_t max_len, int32_t **ids, int32_t *n,
                        enum MHD_Result *ret) {
    emb_input *in = &st->q.inputs[i];
    char param[32];
    snprintf(param, sizeof param, st->q.n_inputs > 1 ? "input[%d]" : "input", i);
    size_t nt = 0;
    if (in->text) {
        if (pagoda_tokenize(hr->lease.model, in->text, in->text_len, st->q.add_special, 1, ids, &nt)) {
            *ret = send_error(hr, 400, "invalid_request_error", param, NULL, "%s could not be tokenized: %s", param,
                              pagoda_last_error());
            return 1;
        }
    } else {
        if (!(*ids = malloc((size_t)in->n_ids * sizeof **ids))) {
            *ret = send_error(hr, 500, "server_error", NULL, NULL, "out of memory");
            return 1;
        }
        memcpy(*ids, in->ids, (size_t)in->n_ids * sizeof **ids);
        nt = (size_t)in->n_ids;
        for (size_t k = 0; k < nt; k++)
            if ((*ids)[k] >= hr->lease.info->n_vocab) {
                *ret = send_error(hr, 400, "invalid_request_error", param, NULL,
                                  "%s: token id %d at position %zu is out of range [0, %d)", param, (*ids)[k], k,
                                  hr->lease.info->n_vocab);
                return 1;
            }
    }
    if (nt == 0) {
        *ret = send_error(hr, 400, "invalid_request_error", param, NULL, "%s has no tokens", param);
        return 1;
    }
    size_t keep = nt;
    if (st->q.truncate > 0 && (size_t)st->q.truncate < keep) keep = (size_t)st->q.truncate;
    if (st->q.truncate != 0 && keep > (size_t)max_len) keep = (size_t)max_len;
    if (keep > (size_t)max_len) {
        *ret = send_error(hr, 400, "invalid_request_error", param, "context_length_exceeded",
                          "This model's maximum context length is %d tokens, however you requested %zu tokens in %s. "
                          "Please reduce your input, or set truncate_prompt_tokens.", max_len, nt, param);
        return 1;
    }
    if (keep < nt) memmove(*ids, *ids + (nt - keep), keep * sizeof **ids); /* the last tokens stay */
    *n = (int32_t)keep;
    return 0;
}

static enum MHD_Result start(http_req *hr) {
    pg_server *s = hr->srv;
    hr->gen_started = 1;
    emb_state *st = calloc(1, sizeof *st);
    if (!st) return send_error(hr, 500, "server_error", NULL, NULL, "out of memory");
    st->hr = hr;
    hr->payload = st;
    hr->payload_free = emb_free;
    hr->payload_cancel = emb_cancel;
    emb_error err;
    if (emb_request_parse(hr->body, hr->body_len, &st->q, &err))
        return send_error(hr, 400, "invalid_request_error", err.param[0] ? err.param : NULL, NULL, "%s", err.message);
    free(hr->body);
    hr->body = NULL;
    hr->body_len = hr->body_cap = 0;
    enum MHD_Result mret;
    if (model_missing(hr, &mret)) return mret;
    if (atomic_load(&s->draining))
        return send_error(hr, 503, "server_error", NULL, "shutting_down", "The server is shutting down.");
    pagoda_embedding_info ei;
    pagoda_model_get_embedding_info(hr->lease.model, &ei);
    st->n_embd = ei.n_embd;
    if (st->n_embd <= 0) return send_error(hr, 400, "invalid_request_error", NULL, NULL, "This model has no weights.");
    if (st->q.dimensions > st->n_embd)
        return send_error(hr, 400, "invalid_request_error", "dimensions", NULL,
                          "'dimensions' is %d, but this model's embeddings have %d dimensions.", st->q.dimensions,
                          st->n_embd);
    st->dims = st->q.dimensions > 0 ? st->q.dimensions : st->n_embd;
    pagoda_engine_stats es;
    pagoda_engine_get_stats(hr->lease.engine, &es);
    const int32_t n_in = st->q.n_inputs;
    st->vecs = calloc((size_t)n_in * (size_t)st->n_embd, sizeof *st->vecs);
    st->slots = calloc((size_t)n_in, sizeof *st->slots);
    int32_t **ids = calloc((size_t)n_in, sizeof *ids);
    if (!st->vecs || !st->slots || !ids) {
        free(ids);
        return send_error(hr, 500, "server_error", NULL, NULL, "out of memory");
    }
    enum MHD_Result ret = MHD_YES;
    int answered = 0;
    /* every input is tokenized and checked before any is submitted */
    for (int32_t i = 0; i < n_in && !answered; i++) {
        st->slots[i] = (emb_slot){.st = st, .index = i};
        answered = input_tokens(hr, st, i, es.max_model_len, &ids[i], &st->slots[i].n_tok, &ret);
    }
    for (int32_t i = 0; i < n_in && !answered; i++) {
        pagoda_request pr;
        pagoda_request_default(&pr);
        pr.prompt_tokens = ids[i], pr.n_prompt_tokens = st->slots[i].n_tok;
        pr.on_embedding = on_vector, pr.on_event = on_event, pr.user = &st->slots[i];
        pr.pooling = PAGODA_POOLING_MODEL, pr.normalize = -1;
        pr.adapter = hr->lease.adapter;
        req_ref(hr); /* this input's reference, released when the engine is done with it */
        atomic_fetch_add(&s->n_gen_engine, 1);
        pagoda_status es2 = pagoda_engine_submit(hr->lease.engine, &pr, &st->slots[i].id);
        if (es2) {
            atomic_fetch_sub(&s->n_gen_engine, 1);
            req_unref(hr);
            const char *e = pagoda_last_error();
            for (int32_t k = 0; k < i; k++) pagoda_engine_cancel(hr->lease.engine, st->slots[k].id);
            ret = es2 == PAGODA_ERR_BUSY ? send_error(hr, 429, "rate_limit_error", NULL, "queue_full",
                                                      "The server is busy: its request queue is full. Retry later. %s", e)
                  : es2 == PAGODA_ERR_INVALID || es2 == PAGODA_ERR_UNSUPPORTED
                      ? send_error(hr, 400, "invalid_request_error", "input", NULL, "%s", e)
                      : send_error(hr, 500, "server_error", NULL, NULL, "The engine could not take the request: %s", e);
            answered = 1;
        }
        pthread_mutex_lock(&hr->mu);
        if (!es2) st->n_submitted++;
        pthread_mutex_unlock(&hr->mu);
    }
    for (int32_t i = 0; i < n_in; i++) free(ids[i]);
    free(ids);
    pthread_mutex_lock(&hr->mu);
    st->all_submitted = 1;
    if (st->n_done == st->n_submitted) hr->engine_done = st->engine_done_all = 1;
    pthread_mutex_unlock(&hr->mu);
    hr->gen_counted = 1;
    atomic_fetch_add(&s->n_gen_http, 1);
    if (!answered) watchdog_add(hr); /* a client that goes away while it waits cancels its inputs */
    return answered ? ret : MHD_YES;
}

enum MHD_Result embeddings_handle(http_req *hr) {
    if (!hr->gen_started) {
        enum MHD_Result ret = start(hr);
        if (hr->status) return ret; /* answered (an error) */
    }
    emb_state *st = hr->payload;
    pthread_mutex_lock(&hr->mu);
    if (!hr->engine_done) { /* park the connection: the last input resumes it */
        hr->suspended = 1;
        MHD_suspend_connection(hr->conn);
        pthread_mutex_unlock(&hr->mu);
        return MHD_YES;
    }
    int failed = st->failed;
    char error[256];
    snprintf(error, sizeof error, "%s", st->error);
    pthread_mutex_unlock(&hr->mu);
    if (failed == 1) return send_error(hr, 503, "server_error", NULL, "cancelled", "The request was cancelled: %s", error);
    if (failed) return send_error(hr, 500, "server_error", NULL, NULL, "Computing the embeddings failed: %s", error);
    return respond(hr, st);
}
