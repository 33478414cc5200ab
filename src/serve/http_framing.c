/* Request framing checks (see http_framing.h). */
#include "serve/http_framing.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static int is_ows(char c) { return c == ' ' || c == '\t'; }

/* The next comma-separated element of *p (whitespace trimmed, possibly empty: "a,,b" and "a,"
 * have an empty one): its start and length; *p moves past it (NULL after the last). Returns 0
 * when there is none left. */
static int next_element(const char **p, const char **start, size_t *len) {
    const char *s = *p;
    if (!s) return 0;
    const char *end = strchr(s, ',');
    const char *a = s, *b = end ? end : s + strlen(s);
    while (a < b && is_ows(*a)) a++;
    while (b > a && is_ows(b[-1])) b--;
    *start = a;
    *len = (size_t)(b - a);
    *p = end ? end + 1 : NULL;
    return 1;
}

static int element_is(const char *s, size_t n, const char *word) {
    return n == strlen(word) && !strncasecmp(s, word, n);
}

/* Shows a header value in a message: at most 60 bytes, printable ASCII only. */
static void show(char *out, size_t cap, const char *s, size_t n) {
    size_t j = 0;
    for (size_t i = 0; i < n && j + 1 < cap && i < 60; i++) out[j++] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    out[j] = 0;
}

unsigned http_framing_check(const http_header *h, size_t n, int http10, char *msg, size_t msg_cap) {
    char shown[64];
    if (msg_cap) msg[0] = 0;
    int have_cl = 0, have_te = 0, n_chunked = 0, chunked_last = 0;
    uint64_t cl = 0;
    for (size_t i = 0; i < n; i++) {
        if (!h[i].name || !h[i].value) continue;
        if (!strcasecmp(h[i].name, "Content-Length")) {
            const char *p = h[i].value, *e;
            size_t len;
            while (next_element(&p, &e, &len)) {
                uint64_t v = 0;
                int ok = len > 0 && len <= 19;
                for (size_t k = 0; ok && k < len; k++) {
                    if (e[k] < '0' || e[k] > '9') ok = 0;
                    else v = v * 10 + (uint64_t)(e[k] - '0');
                }
                if (!ok) {
                    show(shown, sizeof shown, h[i].value, strlen(h[i].value));
                    snprintf(msg, msg_cap, "Invalid Content-Length header: '%s' (expected one decimal number).", shown);
                    return 400;
                }
                if (have_cl && v != cl) {
                    snprintf(msg, msg_cap,
                             "Conflicting Content-Length values: %llu and %llu (a request has one body length).",
                             (unsigned long long)cl, (unsigned long long)v);
                    return 400;
                }
                have_cl = 1;
                cl = v;
            }
        } else if (!strcasecmp(h[i].name, "Transfer-Encoding")) {
            have_te = 1;
            const char *p = h[i].value, *e;
            size_t len;
            while (next_element(&p, &e, &len)) {
                show(shown, sizeof shown, e, len);
                if (len == 0) {
                    snprintf(msg, msg_cap, "Empty element in the Transfer-Encoding header.");
                    return 400;
                }
                if (n_chunked) {
                    snprintf(msg, msg_cap,
                             "Transfer-Encoding: 'chunked' must be the last coding of a request (found '%s' after it).",
                             shown);
                    return 400;
                }
                /* a coding may carry parameters ("gzip;q=1"): compare the name only */
                size_t name_len = 0;
                while (name_len < len && e[name_len] != ';' && !is_ows(e[name_len])) name_len++;
                if (element_is(e, name_len, "chunked")) {
                    if (name_len != len) {
                        snprintf(msg, msg_cap, "Transfer-Encoding: 'chunked' takes no parameters (got '%s').", shown);
                        return 400;
                    }
                    n_chunked++;
                    chunked_last = 1;
                } else if (element_is(e, name_len, "identity")) {
                    snprintf(msg, msg_cap,
                             "Transfer-Encoding: 'identity' is not a transfer coding (RFC 9112); send Content-Length "
                             "alone.");
                    return 400;
                } else {
                    /* checked after the whole list: "chunked, gzip" is a 400, "gzip, chunked" a 501 */
                    chunked_last = 0;
                }
            }
        }
    }
    if (!have_te) return 0;
    if (have_cl) {
        snprintf(msg, msg_cap,
                 "A request must not carry both Transfer-Encoding and Content-Length (RFC 9112 section 6.3).");
        return 400;
    }
    if (http10) {
        snprintf(msg, msg_cap, "Transfer-Encoding is not allowed in an HTTP/1.0 request.");
        return 400;
    }
    if (!n_chunked || !chunked_last) {
        snprintf(msg, msg_cap,
                 "Transfer-Encoding: a request's codings must end with 'chunked' (RFC 9112 section 6.3).");
        return 400;
    }
    /* chunked is last and appears once: any other element is a coding this server does not decode */
    for (size_t i = 0; i < n; i++) {
        if (!h[i].name || !h[i].value || strcasecmp(h[i].name, "Transfer-Encoding")) continue;
        const char *p = h[i].value, *e;
        size_t len;
        while (next_element(&p, &e, &len))
            if (!element_is(e, len, "chunked")) {
                show(shown, sizeof shown, e, len);
                snprintf(msg, msg_cap,
                         "Transfer-Encoding '%s' is not implemented: send the body plain, with Content-Length or "
                         "'Transfer-Encoding: chunked'.",
                         shown);
                return 501;
            }
    }
    return 0;
}
