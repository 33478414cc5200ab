/* libFuzzer target: request framing checks (src/serve/http_framing.c, compiled into this target
 * alone). The input is a request head's header lines ("Name: value", one a line); the first byte's
 * low bit says HTTP/1.0. The check must return 0, 400 or 501 with a message, never crash or read
 * out of bounds, and what it accepts must have unambiguous framing: no Transfer-Encoding with
 * Content-Length or in HTTP/1.0, Content-Length values that are all the same decimal number, and
 * Transfer-Encoding that is exactly "chunked". */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "serve/http_framing.h"

#define CHECK(c) \
    do { \
        if (!(c)) __builtin_trap(); \
    } while (0)

enum { MAX_HEADERS = 64 };

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r')) s[--n] = 0;
    return s;
}

/* every comma-separated element of v, trimmed, satisfies ok */
static int all_elements(const char *v, int (*ok)(const char *s, size_t n, void *ctx), void *ctx) {
    while (1) {
        const char *e = strchr(v, ',');
        size_t n = e ? (size_t)(e - v) : strlen(v);
        while (n && (*v == ' ' || *v == '\t')) v++, n--;
        while (n && (v[n - 1] == ' ' || v[n - 1] == '\t')) n--;
        if (!ok(v, n, ctx)) return 0;
        if (!e) return 1;
        v = e + 1;
    }
}

static int is_chunked(const char *s, size_t n, void *ctx) {
    (void)ctx;
    return n == 7 && !strncasecmp(s, "chunked", 7);
}

static int same_number(const char *s, size_t n, void *ctx) {
    unsigned long long *first = ctx, v = 0;
    if (n == 0 || n > 19) return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (*first == ~0ull) *first = v;
    return v == *first;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    int http10 = data[0] & 1;
    char *text = malloc(size);
    if (!text) return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = 0;
    http_header h[MAX_HEADERS];
    size_t n = 0;
    for (char *line = text, *next; line && n < MAX_HEADERS; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        char *colon = strchr(line, ':');
        if (!colon) continue;
        *colon = 0;
        h[n].name = trim(line);
        h[n].value = trim(colon + 1);
        n++;
    }
    char msg[256];
    memset(msg, 'x', sizeof msg);
    unsigned status = http_framing_check(h, n, http10, msg, sizeof msg);
    CHECK(status == 0 || status == 400 || status == 501);
    CHECK(memchr(msg, 0, sizeof msg) != NULL);
    if (status) CHECK(msg[0] != 0);
    if (status == 0) {
        int n_te = 0, n_cl = 0;
        unsigned long long cl = ~0ull;
        for (size_t i = 0; i < n; i++) {
            if (!strcasecmp(h[i].name, "Transfer-Encoding")) {
                n_te++;
                CHECK(all_elements(h[i].value, is_chunked, NULL));
            } else if (!strcasecmp(h[i].name, "Content-Length")) {
                n_cl++;
                CHECK(all_elements(h[i].value, same_number, &cl));
            }
        }
        CHECK(n_te <= 1 && !(n_te && (n_cl || http10)));
        if (n_te) { /* exactly one "chunked" element */
            for (size_t i = 0; i < n; i++)
                if (!strcasecmp(h[i].name, "Transfer-Encoding")) CHECK(strchr(h[i].value, ',') == NULL);
        }
    }
    free(text);
    return 0;
}
