/* Requests to models through the model manager, and the model admin routes (see model_route.h). */
#include "serve/model_route.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/log.h"
#include "manager/registry.h"
#include "serve/send.h"

/* ---- per-model server state ---- */

void *serve_model_attach(pagoda_model *m, void *user) {
    serve_model_state *st = calloc(1, sizeof *st);
    if (!st) return NULL;
    if (!(st->grammars = grammar_cache_new(m, 64))) {
        free(st);
        return NULL;
    }
    pagoda_model_info info;
    pagoda_model_get_info(m, &info);
    st->tool_format = (tc_format)(intptr_t)user;
    if (st->tool_format == TC_FORMAT_AUTO) st->tool_format = tc_format_detect(info.chat_template);
    pg_log(PAGODA_LOG_INFO, "%s: tool calls are parsed as '%s'", info.path ? info.path : "model", tc_format_name(st->tool_format));
    return st;
}

void serve_model_detach(void *state, void *user) {
    (void)user;
    serve_model_state *st = state;
    if (!st) return;
    grammar_cache_free(st->grammars);
    free(st);
}

pagoda_status serve_model_hooks(mgr_config *mc, const char *tool_call_parser) {
    tc_format f;
    if (tc_format_from_name(tool_call_parser ? tool_call_parser : "auto", &f))
        return pg_fail(PAGODA_ERR_INVALID, "--tool-call-parser '%s': expected hermes, llama3, mistral, json, none or auto",
                       tool_call_parser);
    mc->attach = serve_model_attach;
    mc->detach = serve_model_detach;
    mc->hook_user = (void *)(intptr_t)f;
    return PAGODA_OK;
}

enum MHD_Result send_model_not_found(http_req *hr, const char *name) {
    return send_error(hr, 404, "invalid_request_error", "model", "model_not_found",
                      "The model '%.200s' does not exist (this server serves '%s'; GET /v1/models lists them).",
                      name ? name : "", hr->srv->name);
}

/* ---- taking a model for a request ---- */

/* The body's top-level "model" string (malloc'd), NULL when absent or not a string (the
 * endpoint's parser reports a malformed body). */
static char *body_model(const http_req *hr) {
    if (!hr->body || !hr->body_len) return NULL;
    json_t *root = json_loadb(hr->body, hr->body_len, 0, NULL);
    json_t *v = json_is_object(root) ? json_object_get(root, "model") : NULL;
    char *r = json_is_string(v) ? strdup(json_string_value(v)) : NULL;
    json_decref(root);
    return r;
}

static enum MHD_Result send_wait_error(http_req *hr) {
    hr->gen_started = 1;
    switch (hr->model_result) {
    case MGR_NOT_FOUND: return send_model_not_found(hr, hr->model_name);
    case MGR_TIMEOUT:
        return send_error_hdr(hr, 503, "Retry-After", "5", "model_loading", "%s", hr->model_error);
    default:
        if (atomic_load(&hr->srv->draining))
            return send_error(hr, 503, "server_error", NULL, "shutting_down", "The server is shutting down.");
        return send_error(hr, 500, "server_error", "model", "model_load_failed", "%s", hr->model_error);
    }
}

int model_missing(http_req *hr, enum MHD_Result *ret) {
    if (!hr->model_missing) return 0;
    *ret = send_model_not_found(hr, hr->model_name);
    return 1;
}

int model_take(http_req *hr, enum MHD_Result *ret) {
    pg_server *s = hr->srv;
    if (hr->lease.entry) return 0;
    if (hr->model_wait == 1) { /* resumed early: keep waiting */
        *ret = MHD_YES;
        return 1;
    }
    if (hr->model_wait == 2) {
        if (hr->model_result == MGR_OK && hr->lease.entry) return 0;
        *ret = send_wait_error(hr);
        return 1;
    }
    hr->model_name = body_model(hr);
    mgr_result r = mgr_acquire(s->models, hr->model_name, 0, MGR_RETRY_FAILED, &hr->lease, hr->model_error, sizeof hr->model_error);
    if (r == MGR_OK) return 0;
    /* an unknown name: the request is still read with the default model when that one is loaded,
     * so that a malformed request gets its 400 first (the handler answers 404 after parsing) */
    if (r == MGR_NOT_FOUND && mgr_acquire(s->models, NULL, 0, MGR_NO_LOAD, &hr->lease, hr->model_error,
                                          sizeof hr->model_error) == MGR_OK) {
        hr->model_missing = 1;
        return 0;
    }
    hr->model_result = r;
    if (r != MGR_TIMEOUT) {
        hr->model_wait = 2;
        *ret = send_wait_error(hr);
        return 1;
    }
    /* loading: the connection waits, suspended, for the model-wait thread */
    hr->model_deadline = pg_now_s() + s->cfg.model_load_timeout_s;
    req_ref(hr);
    pthread_mutex_lock(&s->wait_mu);
    hr->model_wait = 1;
    hr->wait_next = s->waiting;
    s->waiting = hr;
    MHD_suspend_connection(hr->conn);
    pthread_cond_signal(&s->wait_cv);
    pthread_mutex_unlock(&s->wait_mu);
    *ret = MHD_YES;
    return 1;
}

static void *wait_main(void *arg) {
    pg_server *s = arg;
    pthread_mutex_lock(&s->wait_mu);
    while (!s->wait_stop || s->waiting) {
        const double now = pg_now_s();
        const int draining = atomic_load(&s->draining) || s->wait_stop;
        for (http_req **pp = &s->waiting; *pp;) {
            http_req *hr = *pp;
            /* without starting another load (a failed one is reported, not retried) */
            /* a wait past its deadline is answered as timed out even when the model has just come: the
             * client asked for at most that long, and the answer does not depend on when this thread woke */
            mgr_result r = draining                    ? MGR_FAILED
                           : now >= hr->model_deadline ? MGR_TIMEOUT
                                                       : mgr_acquire(s->models, hr->model_name, 0, 0, &hr->lease,
                                                                     hr->model_error, sizeof hr->model_error);
            if (draining) snprintf(hr->model_error, sizeof hr->model_error, "The server is shutting down.");
            if (r == MGR_TIMEOUT && now < hr->model_deadline) {
                pp = &hr->wait_next;
                continue;
            }
            if (r == MGR_TIMEOUT)
                snprintf(hr->model_error + strlen(hr->model_error), sizeof hr->model_error - strlen(hr->model_error),
                         " (still not ready after %.0f s)", s->cfg.model_load_timeout_s);
            *pp = hr->wait_next;
            hr->model_result = r;
            hr->model_wait = 2;
            MHD_resume_connection(hr->conn);
            req_unref(hr);
        }
        /* wake every 20 ms to see loads finish, and at the earliest deadline */
        double wake = pg_now_s() + 0.020;
        for (http_req *hr = s->waiting; hr; hr = hr->wait_next)
            if (hr->model_deadline < wake) wake = hr->model_deadline;
        double dt = wake - pg_now_s();
        if (dt < 0) dt = 0;
        const long ns = (long)(dt * 1e9) + 1000;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += ns / 1000000000L;
        ts.tv_nsec += ns % 1000000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        if (!s->waiting && !s->wait_stop) pthread_cond_wait(&s->wait_cv, &s->wait_mu);
        else pthread_cond_timedwait(&s->wait_cv, &s->wait_mu, &ts);
    }
    pthread_mutex_unlock(&s->wait_mu);
    return NULL;
}

int model_wait_start(pg_server *s) {
    pthread_mutex_init(&s->wait_mu, NULL);
    pthread_cond_init(&s->wait_cv, NULL);
    if (pthread_create(&s->wait_thread, NULL, wait_main, s)) return -1;
    s->wait_running = 1;
    return 0;
}

void model_wait_stop(pg_server *s) {
    if (!s->wait_running) return;
    pthread_mutex_lock(&s->wait_mu);
    s->wait_stop = 1;
    pthread_cond_signal(&s->wait_cv);
    pthread_mutex_unlock(&s->wait_mu);
    pthread_join(s->wait_thread, NULL);
    s->wait_running = 0;
}

int model_wait_count(pg_server *s) {
    if (!s->wait_running) return 0;
    pthread_mutex_lock(&s->wait_mu);
    int n = 0;
    for (http_req *h = s->waiting; h; h = h->wait_next) n++;
    pthread_mutex_unlock(&s->wait_mu);
    return n;
}

/* ---- listing ---- */

static json_t *model_json(pg_server *s, const mgr_model_status *m, int detail) {
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:s, s:s, s:{s:s}, s:I}", "id", m->name, "object", "model",
                          "created", (json_int_t)s->started, "owned_by", "pagoda", "root",
                          m->is_default ? s->model_path : m->path, "state", mgr_state_name(m->state), "status",
                          "value", mgr_state_name(m->state), "size", (json_int_t)m->file_bytes);
    if (!o) return NULL;
    if (m->max_model_len) json_object_set_new(o, "max_model_len", json_integer(m->max_model_len));
    if (m->error[0]) json_object_set_new(o, "error", json_string(m->error));
    if (detail) {
        json_object_set_new(o, "path", json_string(m->path));
        json_object_set_new(o, "weight_bytes", json_integer((json_int_t)(m->weight_bytes ? m->weight_bytes : m->file_bytes)));
        json_object_set_new(o, "kv_bytes", json_integer((json_int_t)m->kv_bytes));
        json_object_set_new(o, "adapter_bytes", json_integer((json_int_t)m->adapter_bytes));
        json_object_set_new(o, "in_flight", json_integer(m->in_flight));
        json_object_set_new(o, "loads", json_integer((json_int_t)m->loads));
        json_object_set_new(o, "evictions", json_integer((json_int_t)m->evictions));
        json_object_set_new(o, "load_seconds", json_real(m->load_seconds));
        json_object_set_new(o, "pinned", json_boolean(m->pinned));
        json_object_set_new(o, "keep_alive", json_real(m->keep_alive_s));
        json_object_set_new(o, "task", json_string(m->task_embed ? "embed" : "generate"));
        if (m->expires_at > 0) {
            char buf[40];
            time_t t = (time_t)m->expires_at;
            struct tm tm;
            gmtime_r(&t, &tm);
            strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
            json_object_set_new(o, "expires_at", json_string(buf));
        } else
            json_object_set_new(o, "expires_at", json_null());
    }
    return o;
}

/* an adapter as vLLM lists it: its own id, "parent" the base model, "root" the adapter's path */
static json_t *lora_json(pg_server *s, const mgr_lora_status *l) {
    const char *state = l->loaded ? "loaded" : l->error[0] ? "failed" : "available";
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:s, s:s, s:s, s:{s:s}}", "id", l->name, "object", "model", "created",
                          (json_int_t)s->started, "owned_by", "pagoda", "root", l->path, "parent", l->base, "state",
                          state, "status", "value", state);
    if (o && l->error[0]) json_object_set_new(o, "error", json_string(l->error));
    return o;
}

static enum MHD_Result send_list(http_req *hr, int detail) {
    pg_server *s = hr->srv;
    mgr_rescan(s->models);
    mgr_model_status *a = NULL;
    int32_t n = 0;
    if (mgr_list(s->models, &a, &n)) return send_error(hr, 500, "server_error", NULL, NULL, "out of memory");
    json_t *data = json_array();
    for (int32_t i = 0; i < n && data; i++) json_array_append_new(data, model_json(s, &a[i], detail));
    free(a);
    mgr_lora_status *l = NULL;
    if (!mgr_list_loras(s->models, &l, &n))
        for (int32_t i = 0; i < n && data; i++) json_array_append_new(data, lora_json(s, &l[i]));
    free(l);
    json_t *body = json_pack("{s:s, s:o}", "object", "list", "data", data);
    if (body && detail) {
        json_object_set_new(body, "memory_budget", json_integer((json_int_t)mgr_budget(s->models)));
        json_object_set_new(body, "memory_in_use", json_integer((json_int_t)mgr_in_use(s->models)));
    }
    return send_json(hr, 200, body);
}

enum MHD_Result model_route_get(http_req *hr, const char *url) {
    pg_server *s = hr->srv;
    if (hr->route == ROUTE_MODELS) return send_list(hr, 0);
    if (hr->route == ROUTE_MODELS_DETAIL) return send_list(hr, 1);
    const char *id = url + strlen("/v1/models/");
    char served[128];
    if (!mgr_known(s->models, id, served, sizeof served)) {
        mgr_lora_status *l = NULL;
        int32_t nl = 0;
        json_t *o = NULL;
        if (!mgr_list_loras(s->models, &l, &nl))
            for (int32_t i = 0; i < nl && !o; i++)
                if (!strcmp(l[i].name, id)) o = lora_json(s, &l[i]);
        free(l);
        return o ? send_json(hr, 200, o) : send_model_not_found(hr, id);
    }
    mgr_model_status *a = NULL;
    int32_t n = 0;
    if (mgr_list(s->models, &a, &n)) return send_error(hr, 500, "server_error", NULL, NULL, "out of memory");
    json_t *o = NULL;
    for (int32_t i = 0; i < n; i++)
        if (!strcmp(a[i].name, served)) o = model_json(s, &a[i], 0);
    free(a);
    return send_json(hr, 200, o);
}

/* POST /models/load, /models/unload: {"model": NAME} */
enum MHD_Result model_route_admin(http_req *hr) {
    pg_server *s = hr->srv;
    hr->gen_started = 1;
    json_error_t jerr;
    json_t *root = hr->body ? json_loadb(hr->body, hr->body_len, 0, &jerr) : NULL;
    json_t *v = json_is_object(root) ? json_object_get(root, "model") : NULL;
    if (!json_is_string(v)) {
        json_decref(root);
        return send_error(hr, 400, "invalid_request_error", "model", NULL,
                          "The body must be a JSON object with a string 'model': {\"model\": \"NAME\"}.");
    }
    char name[256], err[512];
    snprintf(name, sizeof name, "%s", json_string_value(v));
    json_decref(root);
    const int load = hr->route == ROUTE_MODELS_LOAD;
    if (load) mgr_rescan(s->models);
    /* waits on an HTTP thread: these are rare admin calls */
    mgr_result r = load ? mgr_load(s->models, name, s->cfg.model_load_timeout_s, err, sizeof err)
                        : mgr_unload(s->models, name, s->cfg.model_load_timeout_s, err, sizeof err);
    if (r == MGR_NOT_FOUND) return send_model_not_found(hr, name);
    if (r == MGR_FAILED && !load) return send_error(hr, 409, "invalid_request_error", "model", "model_pinned", "%s", err);
    if (r == MGR_FAILED) return send_error(hr, 500, "server_error", "model", "model_load_failed", "%s", err);
    if (r == MGR_TIMEOUT) return send_error_hdr(hr, 503, "Retry-After", "5", "model_busy", "%s", err);
    return send_json(hr, 200, json_pack("{s:b, s:s}", "success", 1, "model", name));
}

/* ---- LoRA adapters at run time (vLLM's routes) ---- */

static enum MHD_Result send_success(http_req *hr, const char *name, const char *done) {
    const size_t cap = strlen(name) + strlen(done) + 64;
    char *text = malloc(cap);
    if (!text) return send_error(hr, 500, "server_error", NULL, NULL, "out of memory");
    size_t n = (size_t)snprintf(text, cap, "Success: LoRA adapter '%s' %s successfully.", name, done);
    return send_text(hr, 200, "text/plain; charset=utf-8", text, n, MHD_RESPMEM_MUST_FREE);
}

enum MHD_Result model_route_lora(http_req *hr) {
    pg_server *s = hr->srv;
    hr->gen_started = 1;
    const int load = hr->route == ROUTE_LORA_LOAD;
    if (!s->cfg.runtime_lora)
        return send_error(hr, 404, "invalid_request_error", NULL, "not_found",
                          "Loading and unloading LoRA adapters at run time is off: start the server with "
                          "--enable-runtime-lora (or name adapters at start with --lora NAME=PATH).");
    json_error_t jerr;
    json_t *root = hr->body ? json_loadb(hr->body, hr->body_len, 0, &jerr) : NULL;
    const json_t *jn = json_is_object(root) ? json_object_get(root, "lora_name") : NULL;
    const json_t *jp = json_is_object(root) ? json_object_get(root, "lora_path") : NULL;
    const json_t *jb = json_is_object(root) ? json_object_get(root, "base_model_name") : NULL;
    const json_t *ji = json_is_object(root) ? json_object_get(root, "load_inplace") : NULL;
    const char *bad = !json_is_object(root)                          ? "the body must be a JSON object"
                      : !json_is_string(jn) || !json_string_length(jn) ? "'lora_name' must be a non-empty string"
                      : load && (!json_is_string(jp) || !json_string_length(jp)) ? "'lora_path' must be a non-empty string"
                      : jb && !json_is_null(jb) && !json_is_string(jb)  ? "'base_model_name' must be a string"
                      : ji && !json_is_boolean(ji)                      ? "'load_inplace' must be a boolean"
                                                                        : NULL;
    if (bad) {
        enum MHD_Result r = send_error(hr, 400, "invalid_request_error", NULL, NULL, "%s: %s", bad,
                                       load ? "{\"lora_name\": NAME, \"lora_path\": PATH}" : "{\"lora_name\": NAME}");
        json_decref(root);
        return r;
    }
    char name[128], path[1024], base[256], err[768];
    if (json_string_length(jn) >= sizeof name) {
        json_decref(root);
        return send_error(hr, 400, "invalid_request_error", "lora_name", NULL, "'lora_name' is too long (at most %zu bytes)",
                          sizeof name - 1);
    }
    snprintf(name, sizeof name, "%s", json_string_value(jn));
    snprintf(path, sizeof path, "%s", load ? json_string_value(jp) : "");
    snprintf(base, sizeof base, "%s", json_is_string(jb) ? json_string_value(jb) : "");
    const int inplace = ji && json_is_true(ji);
    json_decref(root);
    if (!load) {
        if (mgr_unload_lora(s->models, name, err, sizeof err) != MGR_OK)
            return send_error(hr, 404, "invalid_request_error", "lora_name", "not_found", "The LoRA adapter '%s' cannot be found.", name);
        return send_success(hr, name, "removed");
    }
    if (inplace) mgr_unload_lora(s->models, name, err, sizeof err); /* absent is fine */
    /* loads on the HTTP thread (the base may have to load first): a rare admin call */
    mgr_result r = mgr_load_lora(s->models, name, path, base[0] ? base : NULL, s->cfg.model_load_timeout_s, err, sizeof err);
    if (r == MGR_NOT_FOUND) return send_model_not_found(hr, base);
    if (r == MGR_TIMEOUT) return send_error_hdr(hr, 503, "Retry-After", "5", "model_busy", "%s", err);
    if (r != MGR_OK) return send_error(hr, 400, "invalid_request_error", "lora_path", "lora_load_failed", "%s", err);
    return send_success(hr, name, "added");
}

/* ---- /metrics ---- */

static int appendf(char **text, size_t *len, size_t *cap, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int appendf(char **text, size_t *len, size_t *cap, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(*text + *len, *cap - *len, fmt, ap);
        va_end(ap);
        if (k < 0) return -1;
        if ((size_t)k < *cap - *len) {
            *len += (size_t)k;
            return 0;
        }
        size_t nc = *cap * 2 + (size_t)k;
        char *p = realloc(*text, nc);
        if (!p) return -1;
        *text = p, *cap = nc;
    }
}

int model_metrics_append(pg_server *s, char **text, size_t *len) {
    mgr_model_status *a = NULL;
    int32_t n = 0;
    if (mgr_list(s->models, &a, &n)) return -1;
    size_t cap = *len + 1;
    int bad = 0;
    static const struct {
        const char *name, *type, *help;
    } k[] = {
        {"pagoda:model_weight_bytes", "gauge", "Bytes of the model's weights (file size when not loaded)."},
        {"pagoda:model_kv_bytes", "gauge", "Bytes of the model's KV cache (0 when not loaded)."},
        {"pagoda:model_state", "gauge", "1 for the model's current state (available, loading, loaded, unloading, failed)."},
        {"pagoda:model_loads_total", "counter", "Times the model was loaded."},
        {"pagoda:model_evictions_total", "counter", "Times the model was evicted to make room for another."},
        {"pagoda:model_load_seconds", "gauge", "Seconds the model's last load took."},
        {"pagoda:model_requests_in_flight", "gauge", "Requests holding the model."},
    };
    for (size_t m = 0; m < sizeof k / sizeof k[0] && !bad; m++) {
        bad |= appendf(text, len, &cap, "# HELP %s %s\n# TYPE %s %s\n", k[m].name, k[m].help, k[m].name, k[m].type);
        for (int32_t i = 0; i < n && !bad; i++) {
            const mgr_model_status *e = &a[i];
            /* model names come from the command line and file names: keep label values plain */
            char label[160];
            size_t w = 0;
            for (const char *c = e->name; *c && w + 2 < sizeof label; c++)
                if (*c != '"' && *c != '\\' && *c != '\n') label[w++] = *c;
            label[w] = 0;
            switch (m) {
            case 0: bad |= appendf(text, len, &cap, "%s{model_name=\"%s\"} %llu\n", k[m].name, label,
                                   (unsigned long long)(e->weight_bytes ? e->weight_bytes : e->file_bytes)); break;
            case 1: bad |= appendf(text, len, &cap, "%s{model_name=\"%s\"} %llu\n", k[m].name, label,
                                   (unsigned long long)e->kv_bytes); break;
            case 2:
                for (int st = 0; st <= MGR_STATE_FAILED && !bad; st++)
                    bad |= appendf(text, len, &cap, "%s{model_name=\"%s\",state=\"%s\"} %d\n", k[m].name, label,
                                   mgr_state_name((mgr_state)st), (int)e->state == st);
                break;
            case 3: bad |= appendf(text, len, &cap, "%s{model_name=\"%s\"} %llu\n", k[m].name, label,
                                   (unsigned long long)e->loads); break;
            case 4: bad |= appendf(text, len, &cap, "%s{model_name=\"%s\"} %llu\n", k[m].name, label,
                                   (unsigned long long)e->evictions); break;
            case 5: bad |= appendf(text, len, &cap, "%s{model_name=\"%s\"} %.6f\n", k[m].name, label, e->load_seconds); break;
            default: bad |= appendf(text, len, &cap, "%s{model_name=\"%s\"} %d\n", k[m].name, label, e->in_flight); break;
            }
        }
    }
    free(a);
    return bad ? -1 : 0;
}
