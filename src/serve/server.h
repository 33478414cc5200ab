/* `pagoda serve`: the OpenAI-compatible HTTP server (libmicrohttpd) in front of one engine.
 * The engine runs on its own thread (pagoda_engine_start); HTTP threads never block it: results
 * come back through the engine's event callback into per-request buffers, and connections that
 * wait for them are suspended (MHD_ALLOW_SUSPEND_RESUME) until an event resumes them. */
#ifndef PG_SERVE_SERVER_H
#define PG_SERVE_SERVER_H

#include <signal.h>
#include <stddef.h>

#include "manager/registry.h"
#include "pagoda.h"

typedef struct {
    const char *host;               /* address to bind; default "127.0.0.1" */
    int port;                       /* 0: any free port (see serve_port) */
    const char *const *api_keys;    /* borrowed; if any, /v1/ needs "Authorization: Bearer KEY" */
    int n_api_keys;
    const char *served_model_name;  /* NULL: the model file's name without .gguf */
    const char *model_path;         /* as given on the command line (also accepted as "model") */
    int max_connections;            /* default 256 */
    size_t max_body_bytes;          /* request bodies above this get 413; default 1 MiB */
    size_t max_unsent_bytes;        /* a stream whose client leaves more output than this unread is
                                     * cancelled with a clear reason; 0: no limit; default 4 MiB */
    int timeout_s;                  /* idle / header / upload timeout per connection; default 60 */
    int http_threads;               /* MHD worker threads; default 4 */
    int allow_special_in_content;   /* chat: special-token text in messages becomes special tokens
                                       (the old behaviour; a request's "allow_special_in_content"
                                       overrides it); default 0: it is plain text */
    int max_connections_per_ip;     /* connections from one client address; 0: no limit (default 1024) */
    int per_ip_limit_loopback;      /* 1: the per-address limit applies to 127.0.0.0/8 and ::1 too */
    int request_head_timeout_s;     /* whole request head, however slowly it trickles in; default 20 */
    int request_body_timeout_s;     /* whole request body, from the end of the head; default 60 */
    const char *tool_call_parser;   /* how tool calls are read from chat output: "hermes", "llama3",
                                       "mistral", "json", "none" or "auto" (NULL: auto, chosen
                                       from the model's chat template; see tool_calls.h) */
    int auto_tool_grammar;          /* 1 (default): with tool_choice "auto", a call the model starts
                                       follows the tools' schemas (a lazy grammar from the format's
                                       opening text on); 0: auto output is only parsed */
    const char *allowed_origins;    /* CORS: "*" or a comma-separated list of origins; NULL: no CORS
                                       headers (see response_headers.h) */
    int strict_requests;            /* 1: unknown request fields get 400; 0 (default): they are
                                       ignored with one logged warning per request, as vLLM does */
    double model_load_timeout_s;    /* a request waits this long for its model to load, then gets
                                       503 with Retry-After; default 120 */
    int runtime_lora;               /* 1: POST /v1/load_lora_adapter and /v1/unload_lora_adapter
                                       are served (vLLM's VLLM_ALLOW_RUNTIME_LORA_UPDATING); 0
                                       (default): they answer 404 saying how to turn them on */
    double health_generate_timeout_s; /* GET /health_generate answers 503 when its one token takes
                                       longer; default 20 */
    int tensor_parallel_size;       /* processes the model is split over (reported by
                                       /get_server_info as tp_size); 0 or 1: one */
    const pagoda_tp_group *tp_comm; /* borrowed: a group whose MPI traffic this process counts
                                       (pagoda_tp_mpi_count_comm), shown in /metrics; NULL: none */
} serve_config;
void serve_config_default(serve_config *c);

typedef struct pg_server pg_server;

/* Borrows models (it must outlive the server; its hooks set by serve_model_hooks). Every request resolves its
 * "model" there (absent: the first model added, whose name is served_model_name / model_path).
 * Starts listening; the strings of c are copied. */
pagoda_status serve_create(mgr *models, const serve_config *c, pg_server **out);
/* Sets the attach hooks of mc (before mgr_create) for a server with --tool-call-parser
 * tool_call_parser (NULL: auto). PAGODA_ERR_INVALID for an unknown parser name. */
pagoda_status serve_model_hooks(mgr_config *mc, const char *tool_call_parser);
int serve_port(const pg_server *s);             /* the bound port */
const char *serve_model_name(const pg_server *s);

/* Blocks until one of sigs arrives (block them in every thread first), then shuts down: stops
 * accepting, lets in-flight requests finish for up to grace_s seconds (a second signal cuts
 * this short), cancels the rest, waits for the engine to report them done and stops the daemon.
 * Returns the signal number. */
int serve_wait_and_drain(pg_server *s, const sigset_t *sigs, double grace_s);

/* Engine requests that never reported done (after serve_wait_and_drain: the engine is stuck, e.g.
 * a tensor-parallel rank that does not answer; destroying the engine would wait for it forever). */
int serve_requests_stuck(const pg_server *s);

/* Stops the daemon if still running and frees the server. NULL is a no-op. */
void serve_destroy(pg_server *s);

#endif
