/* A small HTTP client over libcurl's multi interface: many concurrent requests driven from one
 * thread, response bodies delivered line by line as they arrive (for Server-Sent Events) or whole.
 * Used by `pagoda bench serve` (streaming load generator) and `pagoda eval --url`. */
#ifndef PG_TOOLS_HTTP_CLIENT_H
#define PG_TOOLS_HTTP_CLIENT_H

#include <stddef.h>

typedef struct hc_client hc_client;

typedef struct {
    int ok;             /* the transfer completed and the status was 2xx */
    long http_status;   /* 0: no response */
    const char *error;  /* when !ok: the transport error, or "HTTP <code>: <start of the body>" */
    const char *body;   /* the body (at most body_cap bytes kept) when the request asked for it */
    size_t body_len;
    double t_done;      /* pg_now_s() when the transfer ended */
} hc_result;

typedef struct {
    /* Each complete line of a 2xx body (newline and a trailing \r removed) at arrival time t
     * (pg_now_s() clock). NULL: lines are not split. */
    void (*on_line)(void *user, const char *line, size_t len, double t);
    /* Once per request, when it ends (success or not). Pointers valid during the call only. */
    void (*on_done)(void *user, const hc_result *r);
    void *user;
    size_t body_cap; /* keep up to this many bytes of a 2xx body for on_done (0: none) */
    const char *header; /* one more request header "Name: value" (copied), or NULL */
} hc_handler;

hc_client *hc_client_create(void);
void hc_client_destroy(hc_client *c); /* aborts transfers in flight (no callbacks); NULL ok */

/* Queues a POST of a JSON body (copied). api_key: sent as "Authorization: Bearer KEY" when
 * non-NULL. timeout_s: whole-transfer limit (0: none). Returns 0, or -1 if out of memory. */
int hc_post_json(hc_client *c, const char *url, const char *api_key, const char *json, long timeout_s,
                 const hc_handler *h);

/* Drives transfers: waits up to timeout_ms for network activity, then delivers callbacks.
 * Returns the number of requests still in flight. */
int hc_client_run(hc_client *c, int timeout_ms);
int hc_client_in_flight(const hc_client *c);

/* One blocking GET; *body malloc'd (NUL-terminated, at most 1 MiB). Returns 0 when a response
 * arrived (any status, in *status), or -1 with the transport error in err. */
int hc_get(const char *url, const char *api_key, long timeout_s, long *status, char **body, char *err,
           size_t err_cap);

#endif
