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
/* {"error": {...}}; param and code may be NULL. 401 adds WWW-Authenticate, 429 Retry-After. */
enum MHD_Result send_error(http_req *hr, unsigned status, const char *type, const char *param, const char *code,
                           const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* An invalid_request_error with one extra header (e.g. Allow on a 405). */
enum MHD_Result send_error_hdr(http_req *hr, unsigned status, const char *hdr, const char *val, const char *code,
                               const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* data is borrowed (MHD_RESPMEM_PERSISTENT) or taken (MHD_RESPMEM_MUST_FREE: freed even on failure). */
enum MHD_Result send_text(http_req *hr, unsigned status, const char *content_type, const void *data, size_t n,
                          enum MHD_ResponseMemoryMode mode);
/* An empty 204 with an Allow header (OPTIONS). */
enum MHD_Result send_options(http_req *hr, const char *allow);

/* A 200 text/event-stream response whose body is hr->out, refilled by fill (see req_fill_fn)
 * whenever MHD has sent all of it. What hr->out holds already goes out first. */
enum MHD_Result send_sse_stream(http_req *hr, req_fill_fn fill);

/* SSE framing: appends "data: <compact JSON>\n\n" (obj stolen) or "data: [DONE]\n\n" (obj NULL).
 * 0 ok, -1 out of memory. */
int sse_append(oa_buf *b, json_t *obj);

#endif
