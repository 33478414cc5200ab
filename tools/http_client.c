#include "http_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include "core/clock.h"

#define HC_MAX_LINE ((size_t)4 << 20) /* an SSE line longer than this is cut (counted once) */
#define HC_ERR_BODY 512               /* bytes of an error body quoted in the message */

typedef struct hc_req {
    CURL *easy;
    struct curl_slist *hdrs;
    hc_handler h;
    char *line;       /* partial line of a 2xx body */
    size_t line_len, line_cap;
    char *body;       /* kept body (2xx: up to h.body_cap; others: up to HC_ERR_BODY) */
    size_t body_len, body_cap;
    long status;      /* response code once headers are in */
    char errbuf[CURL_ERROR_SIZE];
    struct hc_req *next, *prev;
} hc_req;

struct hc_client {
    CURLM *multi;
    hc_req *live; /* doubly linked list of requests in flight */
    int n_live;
};

static void global_init(void) {
    static int done;
    if (!done) curl_global_init(CURL_GLOBAL_DEFAULT), done = 1;
}

hc_client *hc_client_create(void) {
    global_init();
    hc_client *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->multi = curl_multi_init();
    if (!c->multi) { free(c); return NULL; }
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, 4096L);
    return c;
}

static void req_free(hc_req *r) {
    if (!r) return;
    if (r->easy) curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->hdrs);
    free(r->line);
    free(r->body);
    free(r);
}

void hc_client_destroy(hc_client *c) {
    if (!c) return;
    for (hc_req *r = c->live, *nx; r; r = nx) {
        nx = r->next;
        curl_multi_remove_handle(c->multi, r->easy);
        req_free(r);
    }
    curl_multi_cleanup(c->multi);
    free(c);
}

static int append(char **buf, size_t *len, size_t *cap, const char *p, size_t n, size_t limit) {
    if (*len + n > limit) n = limit > *len ? limit - *len : 0;
    if (!n) return 0;
    if (*len + n + 1 > *cap) {
        size_t nc = *cap ? *cap : 256;
        while (nc < *len + n + 1) nc *= 2;
        char *nb = realloc(*buf, nc);
        if (!nb) return -1;
        *buf = nb, *cap = nc;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
    (*buf)[*len] = 0;
    return 0;
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *user) {
    hc_req *r = user;
    size_t n = size * nmemb;
    if (!r->status) curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
    int good = r->status >= 200 && r->status < 300;
    if (!good) { /* keep the start of an error body for the message */
        if (append(&r->body, &r->body_len, &r->body_cap, ptr, n, HC_ERR_BODY)) return 0;
        return n;
    }
    if (r->h.body_cap && append(&r->body, &r->body_len, &r->body_cap, ptr, n, r->h.body_cap)) return 0;
    if (!r->h.on_line) return n;
    double t = pg_now_s();
    const char *p = ptr, *end = ptr + n;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end;
        if (append(&r->line, &r->line_len, &r->line_cap, p, (size_t)(e - p), HC_MAX_LINE)) return 0;
        if (!nl) break;
        size_t l = r->line_len;
        if (l && r->line[l - 1] == '\r') l--;
        if (r->line) r->line[l] = 0;
        r->h.on_line(r->h.user, r->line ? r->line : "", l, t);
        r->line_len = 0;
        p = nl + 1;
    }
    return n;
}

int hc_post_json(hc_client *c, const char *url, const char *api_key, const char *json, long timeout_s,
                 const hc_handler *h) {
    hc_req *r = calloc(1, sizeof *r);
    if (!r) return -1;
    r->h = *h;
    r->easy = curl_easy_init();
    if (!r->easy) goto fail;
    struct curl_slist *l = curl_slist_append(NULL, "Content-Type: application/json");
    if (l) r->hdrs = l, l = curl_slist_append(l, "Accept: text/event-stream, application/json");
    /* no "Expect: 100-continue": it stalls large bodies by a second on servers that ignore it */
    if (l) l = curl_slist_append(l, "Expect:");
    if (l && api_key) {
        size_t n = strlen(api_key) + 32;
        char *a = malloc(n);
        if (!a) goto fail;
        snprintf(a, n, "Authorization: Bearer %s", api_key);
        l = curl_slist_append(l, a);
        free(a);
    }
    if (l && h->header) l = curl_slist_append(l, h->header);
    if (!l) goto fail;
    curl_easy_setopt(r->easy, CURLOPT_URL, url);
    curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->hdrs);
    curl_easy_setopt(r->easy, CURLOPT_COPYPOSTFIELDS, json);
    curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(r->easy, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(r->easy, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(r->easy, CURLOPT_CONNECTTIMEOUT, 30L);
    if (timeout_s > 0) curl_easy_setopt(r->easy, CURLOPT_TIMEOUT, timeout_s);
    curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
    if (curl_multi_add_handle(c->multi, r->easy) != CURLM_OK) goto fail;
    r->next = c->live;
    if (c->live) c->live->prev = r;
    c->live = r;
    c->n_live++;
    return 0;
fail:
    req_free(r);
    return -1;
}

static void finish(hc_client *c, hc_req *r, CURLcode code) {
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
    hc_result res = {0};
    res.t_done = pg_now_s();
    res.http_status = r->status;
    char msg[HC_ERR_BODY + 128];
    if (code != CURLE_OK) {
        snprintf(msg, sizeof msg, "%s", r->errbuf[0] ? r->errbuf : curl_easy_strerror(code));
        res.error = msg;
    } else if (r->status < 200 || r->status >= 300) {
        /* the start of the body, on one line */
        char excerpt[HC_ERR_BODY + 1];
        size_t n = 0;
        for (size_t i = 0; r->body && i < r->body_len && n < HC_ERR_BODY; i++) {
            char ch = (unsigned char)r->body[i] <= 0x20 ? ' ' : r->body[i];
            if (ch != ' ' || (n && excerpt[n - 1] != ' ')) excerpt[n++] = ch; /* whitespace runs -> one space */
        }
        while (n && excerpt[n - 1] == ' ') n--;
        excerpt[n] = 0;
        snprintf(msg, sizeof msg, "HTTP %ld%s%s", r->status, n ? ": " : "", excerpt);
        res.error = msg;
    } else {
        res.ok = 1;
        /* a last line without a newline */
        if (r->h.on_line && r->line_len) r->h.on_line(r->h.user, r->line, r->line_len, res.t_done);
        res.body = r->body ? r->body : "";
        res.body_len = r->body_len;
    }
    /* unlink before the callback: it may queue new requests */
    curl_multi_remove_handle(c->multi, r->easy);
    if (r->prev) r->prev->next = r->next;
    else c->live = r->next;
    if (r->next) r->next->prev = r->prev;
    c->n_live--;
    if (r->h.on_done) r->h.on_done(r->h.user, &res);
    req_free(r);
}

static void drain(hc_client *c) {
    int still, left;
    curl_multi_perform(c->multi, &still);
    CURLMsg *m;
    while ((m = curl_multi_info_read(c->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        hc_req *r = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        if (r) finish(c, r, m->data.result);
    }
}

int hc_client_run(hc_client *c, int timeout_ms) {
    drain(c);
    if (timeout_ms > 0) {
        /* unlike curl_multi_wait, curl_multi_poll waits the timeout even with nothing in flight
         * (the caller's pause until its next request) */
        curl_multi_poll(c->multi, NULL, 0, timeout_ms, NULL);
        drain(c);
    }
    return c->n_live;
}

int hc_client_in_flight(const hc_client *c) { return c->n_live; }

typedef struct {
    char *buf;
    size_t len, cap;
} sink;

static size_t on_get_write(char *ptr, size_t size, size_t nmemb, void *user) {
    sink *s = user;
    size_t n = size * nmemb;
    if (append(&s->buf, &s->len, &s->cap, ptr, n, (size_t)1 << 20)) return 0;
    return n;
}

int hc_get(const char *url, const char *api_key, long timeout_s, long *status, char **body, char *err,
           size_t err_cap) {
    global_init();
    CURL *e = curl_easy_init();
    if (!e) { snprintf(err, err_cap, "out of memory"); return -1; }
    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdrs = NULL;
    if (api_key) {
        size_t n = strlen(api_key) + 32;
        char *a = malloc(n);
        if (a) {
            snprintf(a, n, "Authorization: Bearer %s", api_key);
            hdrs = curl_slist_append(NULL, a);
            free(a);
        }
    }
    sink s = {0};
    curl_easy_setopt(e, CURLOPT_URL, url);
    if (hdrs) curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_get_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, timeout_s);
    CURLcode code = curl_easy_perform(e);
    int rc = 0;
    if (code != CURLE_OK) {
        snprintf(err, err_cap, "%s", errbuf[0] ? errbuf : curl_easy_strerror(code));
        free(s.buf);
        rc = -1;
    } else {
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, status);
        *body = s.buf ? s.buf : calloc(1, 1);
    }
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(e);
    return rc;
}
