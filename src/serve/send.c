/* Responses of `pagoda serve` (see send.h). */
#include "serve/send.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "serve/metrics.h"
#include "serve/response_headers.h"

static enum MHD_Result queue(http_req *hr, unsigned status, struct MHD_Response *r) {
    if (!r) return MHD_NO;
    hr->status = status;
    metrics_observe_http(hr->srv->metrics, status);
    if (atomic_load(&hr->srv->draining)) MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    rh_add(hr, r);
    enum MHD_Result ret = MHD_queue_response(hr->conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static struct MHD_Response *json_response(json_t *body) {
    char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!s) return NULL;
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(s);
        return NULL;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    return r;
}

enum MHD_Result send_json(http_req *hr, unsigned status, json_t *body) {
    return queue(hr, status, json_response(body));
}

json_t *anthropic_error_body(unsigned status, const char *message) {
    const char *type = status == 401   ? "authentication_error"
                       : status == 403 ? "permission_error"
                       : status == 404 ? "not_found_error"
                       : status == 413 ? "request_too_large"
                       : status == 429 ? "rate_limit_error"
                       : status == 503 || status == 529 ? "overloaded_error"
                       : status >= 500 ? "api_error"
                                       : "invalid_request_error";
    return json_pack("{s:s, s:{s:s, s:s}}", "type", "error", "error", "type", type, "message", message);
}

static enum MHD_Result send_error_v(http_req *hr, unsigned status, const char *hdr, const char *hdr_val,
                                    const char *type, const char *param, const char *code, const char *fmt,
                                    va_list ap) {
    char msg[768];
    vsnprintf(msg, sizeof msg, fmt, ap);
    const int anthropic = hr->route == ROUTE_MESSAGES || hr->route == ROUTE_MESSAGES_COUNT;
    struct MHD_Response *r = json_response(anthropic ? anthropic_error_body(status, msg) : oa_error_body(msg, type, param, code));
    if (r && hdr) MHD_add_response_header(r, hdr, hdr_val);
    if (r && status == 401) MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (r && status == 429) MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    return queue(hr, status, r);
}

enum MHD_Result send_error(http_req *hr, unsigned status, const char *type, const char *param, const char *code,
                           const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    enum MHD_Result r = send_error_v(hr, status, NULL, NULL, type, param, code, fmt, ap);
    va_end(ap);
    return r;
}

enum MHD_Result send_error_hdr(http_req *hr, unsigned status, const char *hdr, const char *val, const char *code,
                               const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    enum MHD_Result r = send_error_v(hr, status, hdr, val, "invalid_request_error", NULL, code, fmt, ap);
    va_end(ap);
    return r;
}

enum MHD_Result send_text(http_req *hr, unsigned status, const char *content_type, const void *data, size_t n,
                          enum MHD_ResponseMemoryMode mode) {
    struct MHD_Response *r = MHD_create_response_from_buffer(n, (void *)data, mode);
    if (!r) {
        if (mode == MHD_RESPMEM_MUST_FREE) free((void *)data);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    return queue(hr, status, r);
}

enum MHD_Result send_static(http_req *hr, const char *content_type, const void *data, size_t n, const char *etag) {
    const char *inm = MHD_lookup_connection_value(hr->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
    int fresh = inm && (strstr(inm, etag) || !strcmp(inm, "*"));
    struct MHD_Response *r = MHD_create_response_from_buffer(fresh ? 0 : n, fresh ? (void *)"" : (void *)data,
                                                             MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    if (!fresh) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    /* no-cache: the browser asks again each time, and a matching ETag gets 304 without the body */
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, etag);
    return queue(hr, fresh ? 304 : 200, r);
}

enum MHD_Result send_options(http_req *hr, const char *allow) {
    struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (r) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    return queue(hr, 204, r);
}

/* ---- server-sent events ---- */

int sse_append(oa_buf *b, json_t *obj) {
    if (!obj) return oa_buf_append(b, "data: [DONE]\n\n", 14);
    char *s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (!s) return -1;
    int rc = oa_buf_append(b, "data: ", 6);
    if (!rc) rc = oa_buf_append(b, s, strlen(s));
    if (!rc) rc = oa_buf_append(b, "\n\n", 2);
    free(s);
    return rc;
}

int sse_append_event(oa_buf *b, const char *name, json_t *obj) {
    if (!obj) return -1;
    int rc = oa_buf_append(b, "event: ", 7);
    if (!rc) rc = oa_buf_append(b, name, strlen(name));
    if (!rc) rc = oa_buf_append(b, "\n", 1);
    if (rc) {
        json_decref(obj);
        return rc;
    }
    return sse_append(b, obj);
}

static ssize_t sse_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    http_req *hr = cls;
    while (hr->out_pos == hr->out.len) {
        hr->out_pos = hr->out.len = 0;
        int r = hr->fill(hr);
        if (r < 0) return MHD_CONTENT_READER_END_OF_STREAM;
        if (r == 0) return 0; /* suspended until the next event */
    }
    size_t n = hr->out.len - hr->out_pos;
    if (n > max) n = max;
    memcpy(buf, hr->out.p + hr->out_pos, n);
    hr->out_pos += n;
    return (ssize_t)n;
}

static void sse_free(void *cls) { req_unref(cls); }

enum MHD_Result send_sse_stream(http_req *hr, req_fill_fn fill) {
    hr->fill = fill;
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, sse_reader, hr, sse_free);
    if (!r) return MHD_NO;
    req_ref(hr); /* the response's reference, released by sse_free */
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream; charset=utf-8");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    return queue(hr, 200, r);
}
