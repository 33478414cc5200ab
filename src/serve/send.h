/* Responses of `pagoda serve`: queue a response on a request's connection and record its status
 * (for the log line and /metrics): JSON bodies, OpenAI-shaped error replies, plain text, and
 * server-sent-event streams with their framing. HTTP threads only. All return MHD_YES / MHD_NO
 * for MHD. */
#ifndef PG_SERVE_SEND_H
#define PG_SERVE_SEND_H

#include <jansson.h>
#include <microhttpd.h>

#include "serve/request.h"

enum MHD_Result send_json(http_req *hr, unsigned status, json_t *body /* stolen; NULL: 500 path */);
/* {"type": "error", "error": {"type", "message"}}: Anthropic's error shape, its type from the
 * HTTP status (invalid_request_error, authentication_error, not_found_error, rate_limit_error,
 * overloaded_error, api_error, ...). */
json_t *anthropic_error_body(unsigned status, const char *message);

/* {"error": {...}}; param and code may be NULL. 401 adds WWW-Authenticate, 429 Retry-After.
 * The Anthropic routes answer in Anthropic's shape (anthropic_error_body) instead. */
enum MHD_Result send_error(http_req *hr, unsigned status, const char *type, const char *param, const char *code,
                           const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* An invalid_request_error with one extra header (e.g. Allow on a 405). */
enum MHD_Result send_error_hdr(http_req *hr, unsigned status, const char *hdr, const char *val, const char *code,
                               const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* data is borrowed (MHD_RESPMEM_PERSISTENT) or taken (MHD_RESPMEM_MUST_FREE: freed even on failure). */
enum MHD_Result send_text(http_req *hr, unsigned status, const char *content_type, const void *data, size_t n,
                          enum MHD_ResponseMemoryMode mode);
/* Static content with an ETag (a quoted string): a request whose If-None-Match holds it gets 304
 * and no body; otherwise 200 with the ETag, revalidated on every use (Cache-Control: no-cache). */
enum MHD_Result send_static(http_req *hr, const char *content_type, const void *data, size_t n, const char *etag);
/* An empty 204 with an Allow header (OPTIONS). */
enum MHD_Result send_options(http_req *hr, const char *allow);

/* A 200 text/event-stream response whose body is hr->out, refilled by fill (see req_fill_fn)
 * whenever MHD has sent all of it. What hr->out holds already goes out first. */
enum MHD_Result send_sse_stream(http_req *hr, req_fill_fn fill);

/* SSE framing: appends "data: <compact JSON>\n\n" (obj stolen) or "data: [DONE]\n\n" (obj NULL).
 * 0 ok, -1 out of memory. */
int sse_append(oa_buf *b, json_t *obj);
/* A named event: "event: <name>\ndata: <compact JSON>\n\n" (obj stolen). 0 ok, -1 out of memory. */
int sse_append_event(oa_buf *b, const char *name, json_t *obj);

#endif
