/* Worker endpoints for data-parallel routers (see router_endpoints.h). Everything reported is
 * read from the engines' own counters; nothing here is a placeholder. */
#include "serve/router_endpoints.h"

#include <string.h>

#include "serve/send.h"

serve_route router_endpoint_route(const char *url) {
    if (!strcmp(url, "/get_server_info") || !strcmp(url, "/server_info")) return ROUTE_SERVER_INFO;
    if (!strcmp(url, "/get_model_info") || !strcmp(url, "/model_info")) return ROUTE_MODEL_INFO;
    if (!strcmp(url, "/get_load")) return ROUTE_GET_LOAD;
    if (!strcmp(url, "/load")) return ROUTE_LOAD;
    if (!strcmp(url, "/flush_cache") || !strcmp(url, "/reset_prefix_cache")) return ROUTE_FLUSH_CACHE;
    return ROUTE_NONE;
}

int router_endpoint_is_admin(serve_route r) { return r == ROUTE_FLUSH_CACHE; }

/* The default model's entry (the first one added), or NULL when none is listed. */
static int default_model(pg_server *s, mgr_model_status *out) {
    mgr_model_status *a = NULL;
    int32_t n = 0;
    if (mgr_list(s->models, &a, &n)) return 0;
    int found = 0;
    for (int32_t i = 0; i < n && !found; i++)
        if (a[i].is_default) *out = a[i], found = 1;
    free(a);
    return found;
}

/* SGLang's /get_server_info keys the routers read (served_model_name, model_path, dp_size, tp_size),
 * with the KV capacity in tokens as max_total_tokens. */
static json_t *server_info(pg_server *s) {
    pagoda_engine_stats st;
    serve_engine_stats(s, &st);
    const int tp = s->cfg.tensor_parallel_size > 1 ? s->cfg.tensor_parallel_size : 1;
    json_t *o = json_pack("{s:s, s:s, s:s, s:i, s:i, s:I, s:i, s:s}", "served_model_name", s->name, "model_path",
                          s->model_path, "tokenizer_path", s->model_path, "dp_size", 1, "tp_size", tp, "max_total_tokens",
                          (json_int_t)st.kv_blocks_total * st.kv_block_size, "context_length",
                          (int)st.max_model_len, "engine", "pagoda");
    return o;
}

/* SGLang's /get_model_info: model_path, tokenizer_path (pagoda reads the tokenizer from the model
 * itself), is_generation, and model_type (the architecture) once the model is loaded. */
static json_t *model_info(pg_server *s) {
    mgr_model_status m;
    int embed = default_model(s, &m) && m.task_embed;
    json_t *o = json_pack("{s:s, s:s, s:b}", "model_path", s->model_path, "tokenizer_path", s->model_path,
                          "is_generation", !embed);
    mgr_lease lease;
    char err[256];
    memset(&lease, 0, sizeof lease);
    if (o && mgr_acquire(s->models, NULL, 0, MGR_NO_LOAD, &lease, err, sizeof err) == MGR_OK) {
        if (lease.info && lease.info->arch) json_object_set_new(o, "model_type", json_string(lease.info->arch));
        mgr_release(s->models, &lease);
    }
    return o;
}

/* SGLang's /get_load: one object per data-parallel rank (pagoda has one): requests running and
 * waiting, and num_tokens, the tokens the KV blocks in use hold room for (the load sglang-router's
 * power_of_two policy compares). */
static json_t *get_load(pg_server *s) {
    pagoda_engine_stats st;
    serve_engine_stats(s, &st);
    return json_pack("[{s:i, s:i, s:i, s:I}]", "dp_rank", 0, "num_reqs",
                     (int)(st.n_running_requests + st.n_waiting_requests), "num_waiting_reqs",
                     (int)st.n_waiting_requests, "num_tokens", (json_int_t)st.kv_blocks_used * st.kv_block_size);
}

static void flush_one(pagoda_engine *e, void *user) {
    int32_t n = 0;
    if (pagoda_engine_flush_prefix_cache(e, &n) == PAGODA_OK) *(int64_t *)user += n;
}

enum MHD_Result router_endpoint_handle(http_req *hr) {
    pg_server *s = hr->srv;
    json_t *body = NULL;
    switch (hr->route) {
    case ROUTE_SERVER_INFO: body = server_info(s); break;
    case ROUTE_MODEL_INFO: body = model_info(s); break;
    case ROUTE_GET_LOAD: body = get_load(s); break;
    case ROUTE_LOAD: /* vLLM's server-load tracking: generation requests in flight */
        body = json_pack("{s:i}", "server_load", (int)atomic_load(&s->n_gen_http));
        break;
    case ROUTE_FLUSH_CACHE: {
        int64_t n = 0;
        mgr_for_each_engine(s->models, flush_one, &n);
        body = json_pack("{s:s, s:I}", "status", "ok", "flushed_blocks", (json_int_t)n);
        break;
    }
    default: return send_error(hr, 500, "server_error", NULL, NULL, "unhandled route");
    }
    if (!body) return send_error(hr, 500, "server_error", NULL, NULL, "out of memory");
    return send_json(hr, 200, body);
}
