/* Shared by server.c (daemon, routing, request objects) and completions.c (the generation
 * endpoints). Not part of any public interface. */
#ifndef PG_SERVE_SERVER_INTERNAL_H
#define PG_SERVE_SERVER_INTERNAL_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "pagoda.h"
#include "serve/metrics.h"
#include "serve/openai_request.h"
#include "serve/openai_response.h"
#include "serve/server.h"

struct pg_server {
    pagoda_model *model;   /* borrowed */
    pagoda_engine *engine; /* borrowed */
    pagoda_model_info info;
    serve_config cfg;      /* strings below are owned copies */
    char *host, *name, *model_path;
    char **api_keys;
    struct MHD_Daemon *daemon;
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

/* One choice of a generation request. */
typedef struct {
    oa_buf text;             /* non-streaming: the text so far */
    oa_logprob *lp;          /* non-streaming: [n_lp] */
    size_t n_lp, cap_lp;
    size_t text_offset;      /* streaming completions: bytes sent so far (for logprobs offsets) */
    pagoda_finish_reason finish;
    int32_t n_completion;
} gen_choice;

/* One HTTP request. Reference-counted: the HTTP side (released when MHD reports the request
 * completed), a streaming response (released by its free callback) and the engine (released on
 * the event with request_done) each hold one. Fields after mu are guarded by it once the request
 * was submitted. */
typedef struct http_req {
    pg_server *srv;
    struct http_req *live_prev, *live_next; /* in srv->live while submitted and the HTTP side is open */
    int in_live;
    struct MHD_Connection *conn;
    double t0;               /* arrival, monotonic seconds */
    char method[12];
    char path[96];
    serve_route route;
    unsigned status;         /* of the response queued (0: none yet) */
    char *body;              /* request body (NUL-terminated), up to max_body_bytes */
    size_t body_len, body_cap;
    uint64_t body_discarded; /* bytes dropped once the body was over the limit */
    int body_too_large;

    /* generation (completions.c) */
    int gen_started;         /* the final access-handler call happened */
    int gen_counted;         /* counted in srv->n_gen_http */
    oa_request req;
    int stream;
    char id[48];
    int64_t created;
    char *echo;              /* completions with echo: the prompt text */
    size_t echo_len;
    gen_choice *choices;     /* [req.n] */
    int32_t n_choices;

    pthread_mutex_t mu;
    atomic_int refs;
    uint64_t engine_id;
    int submitted, engine_done, http_done, suspended;
    int cancel_sent;         /* the watchdog saw the client go away */
    oa_buf out;              /* streaming: SSE bytes not yet handed to MHD, from out_pos */
    size_t out_pos;
    int32_t n_prompt, n_cached;
    double t_first, t_last;  /* first / last token event (0: none) */
    char *error;             /* message of a FINISH_ERROR event */
} http_req;

void http_req_ref(http_req *hr);
void http_req_unref(http_req *hr);

/* Queue a response and record its status (server.c). All return MHD_YES / MHD_NO for MHD. */
enum MHD_Result serve_send_json(http_req *hr, unsigned status, json_t *body /* stolen */);
enum MHD_Result serve_send_error(http_req *hr, unsigned status, const char *type, const char *param,
                                 const char *code, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* completions.c: the final access-handler call of POST /v1/completions or /v1/chat/completions
 * (again after a suspended non-streaming request is resumed). */
enum MHD_Result gen_handle(http_req *hr);
/* The list of generation requests in flight (server.c): the watchdog looks at the sockets of the
 * suspended ones, since MHD does not notice a client that goes away while its connection is
 * suspended, and cancels their requests. */
void serve_live_add(http_req *hr);

/* completions.c: frees the generation state of a request (called from the last unref). */
void gen_free(http_req *hr);

#endif
