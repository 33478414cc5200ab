/* The server object of `pagoda serve`, shared by the files of src/serve (server.c routes,
 * request.c, send.c, watchdog.c, completions.c). Not part of any public interface. */
#ifndef PG_SERVE_SERVER_INTERNAL_H
#define PG_SERVE_SERVER_INTERNAL_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "manager/registry.h"
#include "pagoda.h"
#include "serve/conn_guard.h"
#include "serve/grammar_cache.h"
#include "serve/metrics.h"
#include "serve/server.h"
#include "serve/tool_calls.h"

struct http_req;

struct pg_server {
    mgr *models;           /* borrowed: the models by name (src/manager); requests hold leases */
    tc_format tool_format_cfg; /* --tool-call-parser (AUTO: per model, from its chat template) */
    serve_config cfg;      /* strings below are owned copies */
    char *host, *name, *model_path;
    char **api_keys;
    char *allowed_origins; /* NULL: no CORS headers */
    struct MHD_Daemon *daemon;
    conn_guard *guard;     /* request deadlines and connection limits (see conn_guard.h) */
    int listen_fd;         /* after MHD_quiesce_daemon: closed once the daemon has stopped */
    int port;
    serve_metrics *metrics;
    int64_t started;       /* unix time, for /v1/models "created" */
    uint64_t id_nonce;     /* random per process: response ids are unique across restarts */
    atomic_uint_fast64_t next_id;
    atomic_int draining;
    /* generation requests in flight (submitted, HTTP side open), for the disconnect watchdog */
    pthread_mutex_t live_mu;
    struct http_req *live;
    pthread_t watchdog;
    pthread_cond_t watchdog_cv;
    int watchdog_running, watchdog_stop;
    atomic_int n_gen_http;   /* generation requests whose HTTP side is open */
    atomic_int n_gen_engine; /* generation requests submitted and not reported done */
    /* requests waiting for their model to load (model_route.c), suspended */
    pthread_mutex_t wait_mu;
    pthread_cond_t wait_cv;
    pthread_t wait_thread;
    int wait_running, wait_stop;
    struct http_req *waiting;
    atomic_size_t stream_unsent_peak; /* the largest backlog of events any stream had waiting, bytes */
};

typedef enum {
    ROUTE_NONE = 0,
    ROUTE_PAGE,
    ROUTE_ASSET, /* /assets/NAME: the chat page's scripts and styles */
    ROUTE_HEALTH,
    ROUTE_METRICS,
    ROUTE_MODELS,
    ROUTE_MODEL_ONE, /* /v1/models/{id} */
    ROUTE_COMPLETIONS,
    ROUTE_CHAT,
    ROUTE_TOKENIZE,   /* /tokenize (tokenize_route.c) */
    ROUTE_DETOKENIZE, /* /detokenize */
    ROUTE_MESSAGES,       /* Anthropic: /v1/messages */
    ROUTE_MESSAGES_COUNT, /* Anthropic: /v1/messages/count_tokens */
    ROUTE_RESPONSES,      /* OpenAI: /v1/responses */
    ROUTE_INFILL, /* llama-server's /infill */
    ROUTE_EMBEDDINGS,
    ROUTE_MODELS_DETAIL, /* GET /models */
    ROUTE_MODELS_LOAD,   /* POST /models/load */
    ROUTE_MODELS_UNLOAD, /* POST /models/unload */
    ROUTE_LORA_LOAD,     /* POST /v1/load_lora_adapter (vLLM) */
    ROUTE_LORA_UNLOAD,   /* POST /v1/unload_lora_adapter */
    ROUTE_SERVER_INFO,   /* GET /get_server_info, /server_info (router_endpoints.c) */
    ROUTE_MODEL_INFO,    /* GET /get_model_info, /model_info */
    ROUTE_GET_LOAD,      /* GET /get_load (SGLang) */
    ROUTE_LOAD,          /* GET /load (vLLM) */
    ROUTE_FLUSH_CACHE,   /* POST|GET /flush_cache (SGLang), POST /reset_prefix_cache (vLLM) */
    ROUTE_HEALTH_GENERATE, /* GET /health_generate (SGLang): one token through the engine (health_generate.c) */
} serve_route;

/* The engines' counters summed over the loaded models (server.c). */
void serve_engine_stats(pg_server *s, pagoda_engine_stats *st);

#endif
