/* The HTTP side of `pagoda serve`: MHD daemon lifecycle, routing, authentication, body limits,
 * the small endpoints (/, /health, /metrics, /v1/models), per-request logging, and the drain on
 * SIGTERM. Request objects are in request.c, responses in send.c, the generation endpoints in
 * completions.c, the disconnect watchdog in watchdog.c. */
#include "serve/server_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "serve/anthropic_messages.h"
#include "serve/auth.h"
#include "serve/completions.h"
#include "serve/infill.h"
#include "serve/embeddings.h"
#include "serve/conn_guard.h"
#include "serve/exit_watchdog.h"
#include "serve/health_generate.h"
#include "serve/http_framing.h"
#include "serve/model_route.h"
#include "serve/page_assets.h"
#include "serve/request.h"
#include "serve/response_headers.h"
#include "serve/responses.h"
#include "serve/router_endpoints.h"
#include "serve/send.h"
#include "serve/tokenize_route.h"
#include "serve/watchdog.h"
#include "core/clock.h"

extern const unsigned char pg_chat_page[];
extern const size_t pg_chat_page_len;

void serve_config_default(serve_config *c) {
    memset(c, 0, sizeof *c);
    c->host = "127.0.0.1";
    c->port = 8080;
    c->max_connections = 256;
    c->max_body_bytes = 1u << 20;
    c->max_unsent_bytes = 4u << 20;
    c->timeout_s = 60;
    c->http_threads = 4;
    c->max_connections_per_ip = 1024;
    c->request_head_timeout_s = 20;
    c->request_body_timeout_s = 60;
    c->auto_tool_grammar = 1;
    c->health_generate_timeout_s = 20;
}

/* ---- the small endpoints ---- */

/* the engines' gauges and counters summed over the loaded models (/metrics) */
static void add_stats(pagoda_engine *e, void *user) {
    pagoda_engine_stats *sum = user, st;
    pagoda_engine_get_stats(e, &st);
    sum->n_running += st.n_running, sum->n_waiting += st.n_waiting, sum->n_live_requests += st.n_live_requests;
    sum->kv_blocks_total += st.kv_blocks_total, sum->kv_blocks_used += st.kv_blocks_used;
    sum->kv_blocks_cached += st.kv_blocks_cached;
    sum->kv_block_size = st.kv_block_size;
    if (st.max_model_len > sum->max_model_len) sum->max_model_len = st.max_model_len;
    sum->n_steps += st.n_steps, sum->n_requests_submitted += st.n_requests_submitted;
    sum->n_requests_finished += st.n_requests_finished, sum->n_prompt_tokens += st.n_prompt_tokens;
    sum->n_cached_tokens += st.n_cached_tokens, sum->n_computed_tokens += st.n_computed_tokens;
    sum->n_generated_tokens += st.n_generated_tokens, sum->n_preemptions += st.n_preemptions;
    sum->n_running_requests += st.n_running_requests, sum->n_waiting_requests += st.n_waiting_requests;
    sum->step_seconds += st.step_seconds, sum->forward_seconds += st.forward_seconds;
    sum->n_threads += st.n_threads, sum->kv_bytes += st.kv_bytes;
    sum->n_spec_drafts += st.n_spec_drafts, sum->n_spec_proposed += st.n_spec_proposed;
    sum->n_spec_accepted += st.n_spec_accepted;
}

void serve_engine_stats(pg_server *s, pagoda_engine_stats *st) {
    memset(st, 0, sizeof *st);
    mgr_for_each_engine(s->models, add_stats, st);
}

static void cancel_all(pagoda_engine *e, void *user) {
    (void)user;
    pagoda_engine_cancel_all(e);
}

static enum MHD_Result handle_get(http_req *hr, const char *url) {
    pg_server *s = hr->srv;
    switch (hr->route) {
    case ROUTE_PAGE:
        return send_text(hr, 200, "text/html; charset=utf-8", pg_chat_page, pg_chat_page_len, MHD_RESPMEM_PERSISTENT);
    case ROUTE_ASSET:
        return send_page_asset(hr, url);
    case ROUTE_HEALTH:
        if (atomic_load(&s->draining)) return send_json(hr, 503, json_pack("{s:s}", "status", "draining"));
        return send_json(hr, 200, json_pack("{s:s}", "status", "ok"));
    case ROUTE_HEALTH_GENERATE:
        return health_generate_handle(hr);
    case ROUTE_METRICS: {
        pagoda_engine_stats st;
        serve_engine_stats(s, &st);
        size_t n = 0;
        pagoda_tp_comm_stats comm;
        if (s->cfg.tp_comm) pagoda_tp_mpi_get_comm_stats(s->cfg.tp_comm, &comm);
        char *text = metrics_render(s->metrics, &st, atomic_load(&s->stream_unsent_peak), s->cfg.tp_comm ? &comm : NULL, &n);
        if (text && model_metrics_append(s, &text, &n)) free(text), text = NULL;
        if (!text) return send_error(hr, 500, "server_error", NULL, NULL, "out of memory");
        return send_text(hr, 200, "text/plain; version=0.0.4; charset=utf-8", text, n, MHD_RESPMEM_MUST_FREE);
    }
    case ROUTE_MODELS:
    case ROUTE_MODELS_DETAIL:
    case ROUTE_MODEL_ONE:
        return model_route_get(hr, url);
    case ROUTE_SERVER_INFO:
    case ROUTE_MODEL_INFO:
    case ROUTE_GET_LOAD:
    case ROUTE_LOAD:
        return router_endpoint_handle(hr);
    default: break;
    }
    return send_error(hr, 500, "server_error", NULL, NULL, "unhandled route");
}

static serve_route route_of(const char *url) {
    if (!strcmp(url, "/") || !strcmp(url, "/index.html")) return ROUTE_PAGE;
    if (!strncmp(url, "/assets/", 8)) return ROUTE_ASSET;
    if (!strcmp(url, "/health")) return ROUTE_HEALTH;
    if (!strcmp(url, "/health_generate")) return ROUTE_HEALTH_GENERATE;
    if (!strcmp(url, "/metrics")) return ROUTE_METRICS;
    if (!strcmp(url, "/v1/models") || !strcmp(url, "/v1/models/")) return ROUTE_MODELS;
    if (!strncmp(url, "/v1/models/", 11)) return ROUTE_MODEL_ONE;
    if (!strcmp(url, "/v1/completions") || !strcmp(url, "/v1/completions/")) return ROUTE_COMPLETIONS;
    if (!strcmp(url, "/v1/chat/completions") || !strcmp(url, "/v1/chat/completions/")) return ROUTE_CHAT;
    if (!strcmp(url, "/tokenize")) return ROUTE_TOKENIZE;
    if (!strcmp(url, "/detokenize")) return ROUTE_DETOKENIZE;
    if (!strcmp(url, "/v1/messages") || !strcmp(url, "/v1/messages/")) return ROUTE_MESSAGES;
    if (!strcmp(url, "/v1/messages/count_tokens")) return ROUTE_MESSAGES_COUNT;
    if (!strcmp(url, "/v1/responses") || !strcmp(url, "/v1/responses/")) return ROUTE_RESPONSES;
    if (!strcmp(url, "/infill")) return ROUTE_INFILL;
    if (!strcmp(url, "/v1/embeddings") || !strcmp(url, "/v1/embeddings/")) return ROUTE_EMBEDDINGS;
    if (!strcmp(url, "/models") || !strcmp(url, "/models/")) return ROUTE_MODELS_DETAIL;
    if (!strcmp(url, "/models/load")) return ROUTE_MODELS_LOAD;
    if (!strcmp(url, "/models/unload")) return ROUTE_MODELS_UNLOAD;
    if (!strcmp(url, "/v1/load_lora_adapter")) return ROUTE_LORA_LOAD;
    if (!strcmp(url, "/v1/unload_lora_adapter")) return ROUTE_LORA_UNLOAD;
    serve_route r = router_endpoint_route(url);
    if (r != ROUTE_NONE) return r;
    return ROUTE_NONE;
}

/* ---- MHD callbacks ---- */

typedef struct {
    http_header h[32];
    size_t n;
    int overflow;
} framing_headers;

static enum MHD_Result collect_framing(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
    (void)kind;
    framing_headers *f = cls;
    if (key &&
        (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) || !strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING))) {
        if (f->n == sizeof f->h / sizeof f->h[0]) {
            f->overflow = 1;
            return MHD_NO;
        }
        f->h[f->n++] = (http_header){key, value ? value : ""};
    }
    return MHD_YES;
}

/* The request's framing headers (see http_framing.h): 0 if acceptable, else the error answered
 * (with Connection: close; MHD closes the connection after an answer given before the body). */
static int framing_refused(http_req *hr, const char *version, enum MHD_Result *ret) {
    framing_headers f = {.n = 0};
    MHD_get_connection_values(hr->conn, MHD_HEADER_KIND, collect_framing, &f);
    char msg[256];
    const int http10 = version && !strcmp(version, "HTTP/1.0");
    unsigned status = f.overflow ? 400 : http_framing_check(f.h, f.n, http10, msg, sizeof msg);
    if (f.overflow) snprintf(msg, sizeof msg, "Too many Content-Length / Transfer-Encoding headers.");
    if (!status) return 0;
    *ret = send_error_hdr(hr, status, MHD_HTTP_HEADER_CONNECTION, "close",
                          status == 501 ? "unsupported_transfer_encoding" : "bad_request_framing", "%s", msg);
    return 1;
}

/* routes answered once the body is in (POST) */
static int is_post_route(serve_route r) {
    return r == ROUTE_COMPLETIONS || r == ROUTE_CHAT || r == ROUTE_MESSAGES || r == ROUTE_MESSAGES_COUNT ||
           r == ROUTE_RESPONSES || r == ROUTE_TOKENIZE || r == ROUTE_DETOKENIZE || r == ROUTE_INFILL ||
           r == ROUTE_EMBEDDINGS || r == ROUTE_MODELS_LOAD || r == ROUTE_MODELS_UNLOAD ||
           r == ROUTE_LORA_LOAD || r == ROUTE_LORA_UNLOAD;
}

static enum MHD_Result first_call(pg_server *s, http_req *hr, const char *url, const char *method) {
    hr->route = route_of(url);
    const int is_gen = is_post_route(hr->route);
    const int is_get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    const int is_admin = router_endpoint_is_admin(hr->route); /* flush: POST or GET, no body read */
    const char *allow = is_gen ? "POST, OPTIONS" : is_admin ? "GET, POST, OPTIONS" : "GET, HEAD, OPTIONS";
    /* before authentication: a browser's CORS preflight carries no credentials */
    if (!strcmp(method, "OPTIONS") && hr->route != ROUTE_NONE) return send_options(hr, allow);
    if ((!strncmp(url, "/v1/", 4) || hr->route == ROUTE_INFILL || is_admin) && s->cfg.n_api_keys > 0) {
        const char *auth = MHD_lookup_connection_value(hr->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        /* Anthropic's clients send the key as x-api-key */
        const char *xkey = MHD_lookup_connection_value(hr->conn, MHD_HEADER_KIND, "x-api-key");
        const char *const *keys = (const char *const *)s->api_keys;
        if (!auth_check(keys, s->cfg.n_api_keys, auth) && !(xkey && auth_check_key(keys, s->cfg.n_api_keys, xkey)))
            return send_error(hr, 401, "invalid_request_error", NULL, "invalid_api_key",
                                    auth || xkey ? "Incorrect API key provided." :
                                           "Missing API key: send the header 'Authorization: Bearer YOUR_KEY' (or 'x-api-key: YOUR_KEY').");
    }
    if (hr->route == ROUTE_NONE)
        return send_error(hr, 404, "invalid_request_error", NULL, "not_found", "Unknown path: %s %.80s", method, url);
    if (is_admin) {
        if (strcmp(method, "POST") && strcmp(method, "GET"))
            return send_error_hdr(hr, 405, MHD_HTTP_HEADER_ALLOW, allow, "method_not_allowed",
                                  "Method %s is not allowed for %.80s (allowed: GET, POST).", method, url);
        return router_endpoint_handle(hr);
    }
    if (is_gen ? strcmp(method, "POST") != 0 : !is_get)
        return send_error_hdr(hr, 405, MHD_HTTP_HEADER_ALLOW, allow, "method_not_allowed",
                              "Method %s is not allowed for %.80s (allowed: %s).", method, url,
                              is_gen ? "POST" : "GET, HEAD");
    if (!is_gen) return handle_get(hr, url);
    if (atomic_load(&s->draining))
        return send_error(hr, 503, "server_error", NULL, "shutting_down", "The server is shutting down.");
    /* a declared body over the limit: refuse before it is sent when the client waits for
     * "100 Continue" or when it is absurdly large; otherwise read and drop it, then answer 413
     * (answering early would reset a connection the client is still writing to) */
    const char *cl = MHD_lookup_connection_value(hr->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (!errno && end != cl && n > s->cfg.max_body_bytes) {
            const char *expect = MHD_lookup_connection_value(hr->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
            unsigned long long hard = s->cfg.max_body_bytes * 8ull;
            if (hard < (16ull << 20)) hard = 16ull << 20;
            if ((expect && !strcasecmp(expect, "100-continue")) || n > hard)
                return send_error(hr, 413, "invalid_request_error", NULL, "request_too_large",
                                        "The request body is too large: %llu bytes (at most %zu).", n,
                                        s->cfg.max_body_bytes);
        }
    }
    return MHD_YES; /* the body follows */
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_size, void **con_cls) {
    pg_server *s = cls;
    http_req *hr = *con_cls;
    if (!hr) {
        if (!(hr = req_create(s, conn, method, url, version))) return MHD_NO;
        *con_cls = hr;
        rh_request_begin(hr);
        /* the head is in: the body deadline runs until the last call below */
        conn_guard_phase(s->guard, conn, GUARD_BODY);
        enum MHD_Result ret;
        if (!framing_refused(hr, version, &ret)) ret = first_call(s, hr, url, method);
        if (hr->status) { /* answered already: nothing more is read */
            hr->received = 1;
            conn_guard_phase(s->guard, conn, GUARD_ANSWER);
        }
        return ret;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (hr->body_too_large) {
            hr->body_discarded += n;
            /* a body without a declared length that goes on and on: drop the connection */
            return hr->body_discarded > 8ull * s->cfg.max_body_bytes + (16u << 20) ? MHD_NO : MHD_YES;
        }
        if (n > s->cfg.max_body_bytes - hr->body_len) {
            hr->body_too_large = 1;
            hr->body_discarded = hr->body_len + n;
            free(hr->body);
            hr->body = NULL;
            hr->body_len = hr->body_cap = 0;
            return MHD_YES;
        }
        if (hr->body_len + n + 1 > hr->body_cap) {
            size_t cap = hr->body_cap ? hr->body_cap : 4096;
            while (cap < hr->body_len + n + 1) cap *= 2;
            char *p = realloc(hr->body, cap);
            if (!p) return MHD_NO;
            hr->body = p;
            hr->body_cap = cap;
        }
        memcpy(hr->body + hr->body_len, upload_data, n);
        hr->body_len += n;
        hr->body[hr->body_len] = 0;
        return MHD_YES;
    }
    if (!hr->received) { /* the body is complete */
        hr->received = 1;
        conn_guard_phase(s->guard, conn, GUARD_ANSWER);
    }
    if (is_post_route(hr->route)) {
        if (hr->body_too_large && !hr->gen_started) {
            hr->gen_started = 1;
            return send_error(hr, 413, "invalid_request_error", NULL, "request_too_large",
                                    "The request body is too large: %llu bytes (at most %zu).",
                                    (unsigned long long)hr->body_discarded, s->cfg.max_body_bytes);
        }
        if (hr->route == ROUTE_MODELS_LOAD || hr->route == ROUTE_MODELS_UNLOAD) return model_route_admin(hr);
        if (hr->route == ROUTE_LORA_LOAD || hr->route == ROUTE_LORA_UNLOAD) return model_route_lora(hr);
        enum MHD_Result mret;
        if (!hr->gen_started && model_take(hr, &mret)) return mret;
        if (hr->route == ROUTE_EMBEDDINGS) return embeddings_handle(hr);
        if (hr->route == ROUTE_TOKENIZE || hr->route == ROUTE_DETOKENIZE) return tokenize_route_handle(hr);
        if (hr->lease.embed_only && hr->route != ROUTE_MESSAGES_COUNT && !hr->gen_started) {
            hr->gen_started = 1;
            return send_error(hr, 400, "invalid_request_error", NULL, "model_not_generative",
                              "The model '%s' serves embeddings only (task embed): use /v1/embeddings.",
                              hr->lease.name);
        }
        if (hr->route == ROUTE_MESSAGES || hr->route == ROUTE_MESSAGES_COUNT) return anthropic_messages_handle(hr);
        if (hr->route == ROUTE_RESPONSES) return responses_handle(hr);
        if (hr->route == ROUTE_INFILL) return infill_handle(hr);
        return completions_handle(hr);
    }
    if (hr->route == ROUTE_HEALTH_GENERATE) return health_generate_handle(hr); /* resumed: the token came */
    return MHD_NO; /* not reached: other routes answer on the first call */
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe) {
    pg_server *s = cls;
    /* a kept-alive connection waits for its next request head: that deadline starts now */
    if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK) conn_guard_phase(s->guard, conn, GUARD_HEAD);
    http_req *hr = *con_cls;
    if (!hr) return;
    *con_cls = NULL;
    double dt = pg_now_s() - hr->t0;
    int is_gen = hr->gen_counted;
    req_usage u;
    req_http_done(hr, &u); /* cancels an unfinished generation: the client went away or a write failed */
    static const char *const why[] = {"", " (connection error)", " (timeout)", " (shutdown)", " (read error)",
                                      " (client closed)"};
    char status[8];
    snprintf(status, sizeof status, "%u", hr->status);
    if (is_gen && hr->submitted)
        fprintf(stderr, "pagoda: %s %s %s prompt=%d cached=%d completion=%d %.3fs id=%s%s\n", hr->method, hr->path,
                hr->status ? status : "-", u.n_prompt, u.n_cached, u.n_completion, dt, hr->request_id,
                (unsigned)toe < 6 ? why[toe] : "");
    else
        fprintf(stderr, "pagoda: %s %s %s %.3fs id=%s%s\n", hr->method, hr->path, hr->status ? status : "-", dt,
                hr->request_id, (unsigned)toe < 6 ? why[toe] : "");
    if (is_gen) atomic_fetch_sub(&s->n_gen_http, 1);
    req_unref(hr);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n && buf[n - 1] == '\n') buf[--n] = 0;
    fprintf(stderr, "pagoda: http: %s\n", buf);
}

/* ---- lifecycle ---- */

static char *dup_s(const char *s) {
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

pagoda_status serve_create(mgr *models, const serve_config *c, pg_server **out) {
    *out = NULL;
    pg_server *s = calloc(1, sizeof *s);
    if (!s) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    s->models = models;
    s->listen_fd = -1;
    pthread_mutex_init(&s->live_mu, NULL);
    pthread_cond_init(&s->watchdog_cv, NULL);
    s->cfg = *c;
    if (s->cfg.model_load_timeout_s <= 0) s->cfg.model_load_timeout_s = 120;
    if (!(s->cfg.health_generate_timeout_s > 0)) s->cfg.health_generate_timeout_s = 20;
    if (!s->cfg.host) s->cfg.host = "127.0.0.1";
    if (s->cfg.max_connections <= 0) s->cfg.max_connections = 256;
    if (s->cfg.max_body_bytes == 0) s->cfg.max_body_bytes = 1u << 20;
    if (s->cfg.timeout_s <= 0) s->cfg.timeout_s = 60;
    if (s->cfg.http_threads <= 0) s->cfg.http_threads = 4;
    /* MHD splits the connection limit among its worker threads */
    if (s->cfg.http_threads > s->cfg.max_connections) s->cfg.http_threads = s->cfg.max_connections;
    const char *path = c->model_path ? c->model_path : "model";
    s->host = dup_s(s->cfg.host);
    s->model_path = dup_s(path);
    char default_name[256];
    s->name = dup_s(c->served_model_name ? c->served_model_name : mgr_name_of_path(path, default_name, sizeof default_name));
    s->api_keys = calloc((size_t)(c->n_api_keys > 0 ? c->n_api_keys : 1), sizeof *s->api_keys);
    pagoda_status st = PAGODA_ERR_NOMEM;
    if (!s->host || !s->model_path || !s->name || !s->api_keys) goto fail;
    if (c->allowed_origins && *c->allowed_origins && !(s->allowed_origins = dup_s(c->allowed_origins))) goto fail;
    s->cfg.allowed_origins = s->allowed_origins;
    for (int i = 0; i < c->n_api_keys; i++)
        if (!(s->api_keys[i] = dup_s(c->api_keys[i]))) goto fail;
    s->cfg.host = s->host;
    s->cfg.api_keys = (const char *const *)s->api_keys;
    s->cfg.model_path = s->model_path;
    s->cfg.served_model_name = s->name;
    if (!(s->metrics = metrics_create(s->name))) goto fail;
    if (tc_format_from_name(c->tool_call_parser ? c->tool_call_parser : "auto", &s->tool_format_cfg)) {
        st = pg_fail(PAGODA_ERR_INVALID, "--tool-call-parser '%s': expected hermes, llama3, mistral, json, none or auto",
                     c->tool_call_parser);
        goto fail;
    }
    s->cfg.tool_call_parser = NULL;
    if (s->cfg.max_connections_per_ip < 0) s->cfg.max_connections_per_ip = 0;
    if (s->cfg.request_head_timeout_s <= 0) s->cfg.request_head_timeout_s = 20;
    if (s->cfg.request_body_timeout_s <= 0) s->cfg.request_body_timeout_s = 60;
    conn_guard_config gc = {.max_connections = s->cfg.max_connections,
                            .max_per_ip = s->cfg.max_connections_per_ip,
                            .per_ip_loopback = s->cfg.per_ip_limit_loopback,
                            .head_timeout_s = s->cfg.request_head_timeout_s,
                            .body_timeout_s = s->cfg.request_body_timeout_s};
    if (!(s->guard = conn_guard_create(&gc))) goto fail;
    if (model_wait_start(s)) goto fail;
    s->started = (int64_t)time(NULL);
    if (getrandom(&s->id_nonce, sizeof s->id_nonce, GRND_NONBLOCK) != (ssize_t)sizeof s->id_nonce)
        s->id_nonce = (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid();

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", s->cfg.port);
    int gai = getaddrinfo(s->host, port, &hints, &ai);
    if (gai) {
        st = pg_fail(PAGODA_ERR_INVALID, "--host %s: %s", s->host, gai_strerror(gai));
        goto fail;
    }
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    /* the guard refuses connections at max_connections (MHD closes them at once); MHD's own limit,
     * at which it would stop accepting and leave clients in the backlog, is set above it, with
     * room for the few the guard may let through at the same moment on different threads */
    const unsigned mhd_limit = (unsigned)s->cfg.max_connections + 2u * (unsigned)s->cfg.http_threads + 8u;
    s->daemon = MHD_start_daemon(
        flags, (uint16_t)s->cfg.port, conn_guard_accept, s->guard, on_access, s, MHD_OPTION_EXTERNAL_LOGGER,
        mhd_log, s, MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)s->cfg.http_threads,
        MHD_OPTION_CONNECTION_LIMIT, mhd_limit, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->cfg.timeout_s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION, conn_guard_notify, s->guard,
        MHD_OPTION_END); /* SO_REUSEADDR (MHD's default: a restart binds at once), never SO_REUSEPORT: a second
                            server on a port in use fails instead of silently taking half its connections */
    freeaddrinfo(ai);
    if (!s->daemon) {
        st = pg_fail(PAGODA_ERR_IO, "cannot listen on %s:%d (%s)", s->host, s->cfg.port, strerror(errno));
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di && di->port ? di->port : s->cfg.port;
    watchdog_start(s);
    *out = s;
    return PAGODA_OK;
fail:
    if (st == PAGODA_ERR_NOMEM) pg_fail(st, "out of memory");
    serve_destroy(s);
    return st;
}

int serve_port(const pg_server *s) { return s->port; }
int serve_requests_stuck(const pg_server *s) { return s ? atomic_load(&s->n_gen_engine) : 0; }
const char *serve_model_name(const pg_server *s) { return s->name; }

/* Waits until *counter is 0 or the deadline passes; with sigs, a signal also ends the wait
 * (returns 1 then). */
static int wait_zero(atomic_int *counter, double deadline, const sigset_t *sigs) {
    while (atomic_load(counter) > 0 && pg_now_s() < deadline) {
        if (sigs) {
            struct timespec ts = {0, 20 * 1000 * 1000};
            if (sigtimedwait(sigs, NULL, &ts) > 0) return 1;
        } else {
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    return 0;
}

static void shutdown_server(pg_server *s, double grace_s, const sigset_t *sigs) {
    if (!s->daemon) return;
    atomic_store(&s->draining, 1);
    serve_exit_phase("draining");
    s->listen_fd = MHD_quiesce_daemon(s->daemon);
    /* New connections are refused from now on, and those waiting in the backlog are reset, so
     * clients and load balancers fail over at once instead of waiting on a server that will never
     * answer them. shutdown, not close: MHD's threads may still hold the descriptor until
     * MHD_stop_daemon, and its number must not be reused before then. */
    if (s->listen_fd >= 0) shutdown(s->listen_fd, SHUT_RDWR);
    double t0 = pg_now_s();
    if (grace_s > 0 && atomic_load(&s->n_gen_http) > 0) {
        fprintf(stderr, "pagoda: draining %d request(s) for up to %.1f s\n", atomic_load(&s->n_gen_http), grace_s);
        if (wait_zero(&s->n_gen_http, t0 + grace_s, sigs))
            fprintf(stderr, "pagoda: second signal: cancelling in-flight requests\n");
    }
    if (atomic_load(&s->n_gen_engine) > 0) {
        serve_exit_phase("cancelling in-flight requests");
        fprintf(stderr, "pagoda: cancelling %d request(s)\n", atomic_load(&s->n_gen_engine));
        /* every request reports done within a step or so; suspended connections resume then.
         * Cancel again while waiting: a request still being tokenized when the drain began may
         * be submitted after the first cancel_all. */
        double deadline = pg_now_s() + 30;
        while (atomic_load(&s->n_gen_engine) > 0 && pg_now_s() < deadline) {
            mgr_for_each_engine(s->models, cancel_all, NULL);
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    serve_exit_phase("answering requests waiting for a model");
    model_wait_stop(s); /* connections waiting for a model are answered 503 */
    /* let the last bytes of cancelled streams go out */
    wait_zero(&s->n_gen_http, pg_now_s() + 2, NULL);
    if (atomic_load(&s->n_gen_engine) == 0) {
        serve_exit_phase("stopping the HTTP server (MHD_stop_daemon: a worker thread does not return)");
        MHD_stop_daemon(s->daemon);
    } else {
        /* the engine did not finish requests whose connections may be suspended: stopping the
         * daemon would be undefined behaviour, so leave it to process exit */
        fprintf(stderr, "pagoda: %d request(s) did not finish; not stopping the HTTP daemon cleanly\n",
                atomic_load(&s->n_gen_engine));
    }
    s->daemon = NULL;
    if (s->listen_fd >= 0) close(s->listen_fd);
    s->listen_fd = -1;
}

int serve_wait_and_drain(pg_server *s, const sigset_t *sigs, double grace_s) {
    int sig = 0;
    while (sigwait(sigs, &sig) != 0) {
    }
    fprintf(stderr, "pagoda: %s: shutting down\n", strsignal(sig));
    /* the drain (grace_s), cancelling (at most 30 s), the last bytes (2 s), then stopping the HTTP
       daemon and the engines: a minute past the drain is far more than any of that takes */
    serve_exit_watchdog_arm(grace_s + 60);
    shutdown_server(s, grace_s, sigs);
    return sig;
}

void serve_destroy(pg_server *s) {
    if (!s) return;
    shutdown_server(s, 0, NULL);
    if (atomic_load(&s->n_gen_engine) > 0) {
        /* the engine still holds requests that point here: their events must find the server
         * alive, so it is left allocated (this only happens when the engine is stuck) */
        return;
    }
    watchdog_stop(s);
    conn_guard_destroy(s->guard);
    pthread_mutex_destroy(&s->live_mu);
    pthread_cond_destroy(&s->watchdog_cv);
    metrics_destroy(s->metrics);
    if (s->api_keys)
        for (int i = 0; i < s->cfg.n_api_keys; i++) free(s->api_keys[i]);
    free(s->api_keys);
    free(s->host);
    free(s->allowed_origins);
    free(s->name);
    free(s->model_path);
    free(s);
}
