/* The server object of `pagoda serve`, shared by the files of src/serve (server.c routes,
 * request.c, send.c, watchdog.c, completions.c). Not part of any public interface. */
#ifndef PG_SERVE_SERVER_INTERNAL_H
#define PG_SERVE_SERVER_INTERNAL_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "pagoda.h"
#include "serve/conn_guard.h"
#include "serve/grammar_cache.h"
#include "serve/metrics.h"
#include "serve/server.h"
#include "serve/tool_calls.h"

struct http_req;

struct pg_server {
    pagoda_model *model;   /* borrowed */
    pagoda_engine *engine; /* borrowed */
    pagoda_model_info info;
    serve_config cfg;      /* strings below are owned copies */
    char *host, *name, *model_path;
    char **api_keys;
    struct MHD_Daemon *daemon;
    grammar_cache *grammars; /* compiled structured-output grammars by request text */
    conn_guard *guard;     /* request deadlines and connection limits (see conn_guard.h) */
    int listen_fd;         /* after MHD_quiesce_daemon: closed once the daemon has stopped */
    int port;
    serve_metrics *metrics;
    int64_t started;       /* unix time, for /v1/models "created" */
    uint64_t id_nonce;     /* random per process: response ids are unique across restarts */
    tc_format tool_format; /* how chat output is parsed into tool calls (never AUTO) */
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
    atomic_size_t stream_unsent_peak; /* the largest backlog of events any stream had waiting, bytes */
};

typedef enum {
    ROUTE_NONE = 0,
    ROUTE_PAGE,
    ROUTE_HEALTH,
    ROUTE_METRICS,
    ROUTE_MODELS,
    ROUTE_MODEL_ONE, /* /v1/models/{id} */
    ROUTE_COMPLETIONS,
    ROUTE_CHAT,
} serve_route;

#endif
