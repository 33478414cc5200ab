/* X-Request-Id and CORS headers of `pagoda serve` (see response_headers.h). */
#include "serve/response_headers.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "serve/server_internal.h"

/* the request headers a browser may send cross-origin to this API (preflights ask for them) */
static const char k_allow_headers[] = "Authorization, Content-Type, x-api-key, anthropic-version, X-Request-Id";

static int id_ok(const char *v) {
    size_t n = 0;
    for (; v[n]; n++)
        if ((unsigned char)v[n] < 0x21 || (unsigned char)v[n] > 0x7e || n >= RH_MAX_REQUEST_ID) return 0;
    return n > 0;
}

void rh_request_begin(http_req *hr) {
    pg_server *s = hr->srv;
    const char *v = MHD_lookup_connection_value(hr->conn, MHD_HEADER_KIND, "X-Request-Id");
    if (v && id_ok(v)) {
        snprintf(hr->request_id, sizeof hr->request_id, "%s", v);
        return;
    }
    snprintf(hr->request_id, sizeof hr->request_id, "req-%016llx%08llx", (unsigned long long)s->id_nonce,
             (unsigned long long)(atomic_fetch_add(&s->next_id, 1) & 0xffffffffu));
    hr->request_id_made = 1;
}

/* Whether origin is one of the comma-separated list (spaces around items ignored; scheme and
 * host compare without case, as browsers send them lower-case anyway). */
static int origin_listed(const char *list, const char *origin) {
    const size_t n = strlen(origin);
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == ',') p++;
        const char *e = p;
        while (*e && *e != ',') e++;
        const char *t = e;
        while (t > p && t[-1] == ' ') t--;
        if ((size_t)(t - p) == n && n && !strncasecmp(p, origin, n)) return 1;
        p = e;
    }
    return 0;
}

/* Token characters and the separators of a header list: what may be echoed back. */
static int header_list_ok(const char *v) {
    if (strlen(v) > 512) return 0;
    for (; *v; v++) {
        unsigned char c = (unsigned char)*v;
        if (!(c == ' ' || c == ',' || c == '-' || c == '_' || c == '.' || (c >= '0' && c <= '9') ||
              (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')))
            return 0;
    }
    return 1;
}

void rh_add(http_req *hr, struct MHD_Response *r) {
    if (hr->request_id[0]) MHD_add_response_header(r, "X-Request-Id", hr->request_id);
    const char *list = hr->srv->allowed_origins;
    if (!list) return;
    const char *origin = MHD_lookup_connection_value(hr->conn, MHD_HEADER_KIND, "Origin");
    if (!origin) return; /* not a cross-origin browser request */
    const int any = !strcmp(list, "*");
    if (!any) {
        MHD_add_response_header(r, MHD_HTTP_HEADER_VARY, "Origin");
        if (!origin_listed(list, origin)) return;
    }
    MHD_add_response_header(r, "Access-Control-Allow-Origin", any ? "*" : origin);
    MHD_add_response_header(r, "Access-Control-Expose-Headers", "X-Request-Id");
    if (strcmp(hr->method, "OPTIONS") != 0) return;
    const char *allow = MHD_get_response_header(r, MHD_HTTP_HEADER_ALLOW);
    MHD_add_response_header(r, "Access-Control-Allow-Methods", allow ? allow : "GET, HEAD, POST, OPTIONS");
    const char *asked = MHD_lookup_connection_value(hr->conn, MHD_HEADER_KIND, "Access-Control-Request-Headers");
    char hdrs[1024];
    if (asked && *asked && header_list_ok(asked)) snprintf(hdrs, sizeof hdrs, "%s, %s", k_allow_headers, asked);
    else snprintf(hdrs, sizeof hdrs, "%s", k_allow_headers);
    MHD_add_response_header(r, "Access-Control-Allow-Headers", hdrs);
    MHD_add_response_header(r, "Access-Control-Max-Age", "600");
}
