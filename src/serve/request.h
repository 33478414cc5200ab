/* One HTTP request of `pagoda serve` and, for the generation endpoints, its link to the engine:
 * reference counts, the queue that carries engine events to the HTTP side, the per-request
 * bookkeeping (usage, finish reasons, token times for /metrics and the log line), suspension of
 * the connection while it waits for events, and cancellation.
 *
 * Threads: the engine thread only copies each event into the queue (req_on_event) and resumes a
 * suspended connection; JSON and SSE are built on HTTP threads from the events they take
 * (req_take). Not part of any public interface. */
#ifndef PG_SERVE_REQUEST_H
#define PG_SERVE_REQUEST_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "pagoda.h"
#include "serve/openai_response.h"
#include "serve/server_internal.h"

/* One engine event, copied off the engine thread. Pointers point into the same allocation. */
typedef struct serve_event {
    struct serve_event *next;
    int32_t index;               /* the choice */
    int32_t token;               /* -1: none (a finish event without a token) */
    float logprob;
    int32_t n_top;
    const int32_t *top_tokens;   /* [n_top] */
    const float *top_logprobs;   /* [n_top] */
    pagoda_finish_reason finish; /* != NONE: the choice's last event */
    int32_t stop_index;          /* finish == STOP by a stop string: its index in the request's stop; else -1 */
    const char *error;           /* finish == ERROR: the message (never NULL then) */
    const char *text;            /* [text_len], NUL-terminated */
    size_t text_len;
    size_t bytes;                /* of the allocation */
    /* prompt logprobs (req_submit_many with prompt_logprobs): >= 0: this event is the prompt's
     * token at that position (logprob NAN and n_top -1 for position 0, which has none); index
     * is the first choice of its prompt; text empty */
    int32_t prompt_pos;
    int prompt_last;             /* the prompt's last token */
} serve_event;
void req_events_free(serve_event *list); /* NULL is a no-op */

/* Per choice, kept by the engine callback (valid for the whole request, even without a reader). */
typedef struct {
    pagoda_finish_reason finish;
    int32_t n_completion;
    int32_t stop_index; /* see serve_event */
} req_choice;

struct http_req;
/* One engine request of an HTTP request (a completions request with several prompts has one per
 * prompt): the engine's callbacks get it as their user pointer. */
typedef struct {
    struct http_req *hr;
    int32_t base, n;        /* the HTTP request's choices base .. base + n - 1 */
    int32_t score_dup;      /* score-only request submitted with n = 1: its finish stands for all n */
    uint64_t engine_id;
    int done;               /* request_done seen */
    int32_t n_prompt, n_cached;
    int32_t *prompt;        /* prompt logprobs: the prompt's tokens (owned) [n_prompt_tokens] */
    int32_t n_prompt_tokens;
    int32_t top_k;
} req_sub;

/* Pulls the body of a streamed response (see send_sse_stream): appends bytes to hr->out and
 * returns 1, returns 0 when nothing is ready (the connection was suspended; an event resumes
 * it), or -1 at the end of the body. HTTP thread. */
typedef int (*req_fill_fn)(struct http_req *hr);

/* One HTTP request. Reference-counted: the HTTP side (released when MHD reports the request
 * completed), a streamed response (released by its free callback) and the engine (released on
 * the event with request_done) each hold one. Fields before mu belong to the HTTP side (one MHD
 * thread at a time); those after it are guarded by mu. */
typedef struct http_req {
    pg_server *srv;
    struct http_req *live_prev, *live_next; /* in srv->live while submitted and the HTTP side is open */
    int in_live;
    struct MHD_Connection *conn;
    int http10;              /* an HTTP/1.0 request: no 1xx interim responses may be sent to it */
    double t0;               /* arrival, monotonic seconds */
    char method[12];
    char path[96];
    char request_id[132];    /* X-Request-Id: the client's or made for it (response_headers.h) */
    int request_id_made;     /* made here: "req-" + 24 hex digits, which response ids reuse */
    serve_route route;
    unsigned status;         /* of the response queued (0: none yet) */
    char *body;              /* request body (NUL-terminated), up to max_body_bytes */
    size_t body_len, body_cap;
    uint64_t body_discarded; /* bytes dropped once the body was over the limit */
    int body_too_large;
    int received;            /* the whole request is in: conn_guard told (GUARD_ANSWER) */
    int gen_started;         /* a generation endpoint took the request (its final access-handler call) */
    int gen_counted;         /* counted in srv->n_gen_http */
    int no_request_metrics;  /* a probe (/health_generate): not in the request histograms of /metrics */
    int stream;              /* the answer is a stream: events are taken as they come */
    int want_tokens;         /* events without text are queued too (the request asked for logprobs) */
    oa_buf out;              /* streamed body not yet handed to MHD, from out_pos */
    size_t out_pos;
    req_fill_fn fill;
    void *payload;           /* the endpoint's own state, released by payload_free with the request */
    void (*payload_free)(void *payload);
    void (*payload_cancel)(void *payload); /* may be NULL: called by req_http_done (HTTP side gone)
                                              for engine requests the endpoint submitted itself */
    /* the model (model_route.c): the lease is given back when the request is freed */
    mgr_lease lease;
    char *model_name;        /* the body's "model" (NULL: the default model) */
    int model_missing;       /* "model" names no model: the default one reads the request, then 404 */
    int model_wait;          /* 0: not asked yet, 1: waiting (suspended), 2: the wait is over */
    int model_result;        /* mgr_result of the wait */
    double model_deadline;
    char model_error[384];
    struct http_req *wait_next; /* in srv->waiting */

    pthread_mutex_t mu;
    atomic_int refs;
    uint64_t engine_id;
    int submitted, engine_done, http_done, suspended;
    int cancel_sent;         /* the watchdog saw the client go away, or cancelled an unread stream */
    int eof_seen;            /* the client shut its sending side (half-close or close: not yet known) */
    int probe_sent;          /* after eof_seen: bytes were written to tell the two apart */
    int ping_wanted;         /* a stream owes the client an SSE comment (the probe of a stream) */
    int overflow;            /* a stream's unsent output passed cfg.max_unsent_bytes */
    double answer_by;        /* monotonic seconds by which the whole answer is due (0: no deadline);
                                past it the watchdog resumes the connection, sets answer_late and
                                cancels the engine request */
    int answer_late;
    size_t q_bytes;          /* bytes of the events in the queue */
    int events_lost;         /* an event could not be queued (out of memory) */
    serve_event *q_head, *q_tail; /* events not yet taken by the HTTP side */
    req_choice *choices;     /* [n_choices] */
    int32_t n_choices;
    req_sub *subs;           /* [n_subs], fixed once submitted */
    int32_t n_subs, n_subs_done;
    double t_first, t_last;  /* first / last token event (0: none) */
    char *error;             /* message of the first FINISH_ERROR event */
} http_req;

http_req *req_create(pg_server *s, struct MHD_Connection *conn, const char *method, const char *url,
                     const char *version);
void req_ref(http_req *hr);
void req_unref(http_req *hr); /* the last one frees the request */

/* Submits pr for hr: sets pr->on_event and pr->user, takes the engine's reference, counts the
 * request as in flight and puts it under the disconnect watchdog. stream: events are wanted as
 * they come (else the HTTP side waits for the whole request). On failure returns the engine's
 * status (message in pagoda_last_error()) and holds nothing. */
pagoda_status req_submit(http_req *hr, pagoda_request *pr, int stream);
/* Several engine requests for one HTTP request (one per prompt), all submitted before anything
 * is answered so the engine batches them: prs[i]'s choices are hr's choices base_i .. base_i +
 * prs[i].n - 1, base_0 = 0 and each next base after the previous. Usage sums them; the HTTP
 * request is done when all are. prompt_logprobs: requests with logprobs >= 0 also report their
 * prompt's tokens with logprobs and top alternatives (serve_event.prompt_pos), computed from the
 * engine's prompt logits. A failure cancels those already submitted. */
pagoda_status req_submit_many(http_req *hr, pagoda_request *prs, int32_t n_prs, int stream, int prompt_logprobs);
/* Cancels every engine request of hr that is not done (outside hr->mu). */
void req_cancel_engine(http_req *hr);

typedef enum {
    REQ_EVENTS,    /* *events holds what was queued, in order (release with req_events_free) */
    REQ_SUSPENDED, /* nothing to take yet: the connection was suspended until the next event */
    REQ_DRAINED,   /* the engine is done and every event was taken */
} req_take_result;
/* HTTP thread. Streams take whatever is queued; the others get everything once the engine is
 * done. A stream that owes a probe (ping_wanted) gets REQ_EVENTS with no events once: the caller
 * writes an SSE comment. */
req_take_result req_take(http_req *hr, serve_event **events);

/* What the engine reported for the whole request (final once req_take said REQ_DRAINED or gave
 * the events of a non-streamed request). */
typedef struct {
    int32_t n_prompt, n_cached, n_completion; /* n_completion: summed over the choices */
    int32_t n_cancelled, n_error;              /* choices that finished so */
    int events_lost;
    int overflow; /* a stream cancelled because its client did not read */
} req_usage;
/* error: the first FINISH_ERROR message is copied there (cap bytes, "" if none); may be NULL. */
void req_get_usage(http_req *hr, req_usage *u, char *error, size_t cap);

/* The HTTP side is finished with hr (MHD completed the request): nothing more is queued, queued
 * events are dropped, and an unfinished engine request is cancelled (a client that went away, a
 * failed write). *u: the usage so far, for the log line. */
void req_http_done(http_req *hr, req_usage *u);

#endif
