#include "engine/stop.h"

#include <stdlib.h>
#include <string.h>

#include "core/log.h"

pagoda_status stop_init(stop_matcher *s, const char *const *stops, int n) {
    memset(s, 0, sizeof *s);
    if (n <= 0) return PAGODA_OK;
    s->stops = calloc((size_t)n, sizeof *s->stops);
    s->lens = calloc((size_t)n, sizeof *s->lens);
    if (!s->stops || !s->lens) goto fail;
    for (int i = 0; i < n; i++) {
        s->lens[i] = strlen(stops[i]);
        if (!(s->stops[i] = strdup(stops[i]))) goto fail;
        s->n = i + 1;
    }
    return PAGODA_OK;
fail:
    stop_free(s);
    return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
}

void stop_free(stop_matcher *s) {
    for (int i = 0; i < s->n; i++) free(s->stops[i]);
    free(s->stops), free(s->lens), free(s->held), free(s->out);
    memset(s, 0, sizeof *s);
}

static int reserve(char **buf, size_t *cap, size_t n) {
    if (n <= *cap) return 0;
    size_t c = *cap ? *cap : 256;
    while (c < n) c *= 2;
    char *b = realloc(*buf, c);
    if (!b) return -1;
    *buf = b, *cap = c;
    return 0;
}

/* Length of the longest suffix of held that is a proper prefix of some stop string. */
static size_t partial_suffix(const stop_matcher *s) {
    size_t best = 0;
    for (int i = 0; i < s->n; i++) {
        size_t max = s->lens[i] - 1 < s->n_held ? s->lens[i] - 1 : s->n_held;
        for (size_t k = max; k > best; k--)
            if (!memcmp(s->held + s->n_held - k, s->stops[i], k)) {
                best = k;
                break;
            }
    }
    return best;
}

int stop_push(stop_matcher *s, const char *text, size_t len, const char **emit, size_t *n_emit) {
    *emit = "", *n_emit = 0;
    if (s->n == 0) { /* nothing to watch for: pass through */
        *emit = text, *n_emit = len;
        return 0;
    }
    if (reserve(&s->held, &s->cap_held, s->n_held + len + 1) || reserve(&s->out, &s->cap_out, s->n_held + len + 1))
        return -1;
    memcpy(s->held + s->n_held, text, len);
    s->n_held += len;
    /* the earliest complete stop string wins */
    size_t first = (size_t)-1;
    int which = -1;
    for (int i = 0; i < s->n; i++) {
        if (!s->lens[i] || s->lens[i] > s->n_held) continue;
        for (size_t p = 0; p + s->lens[i] <= s->n_held && p < first; p++)
            if (!memcmp(s->held + p, s->stops[i], s->lens[i])) {
                first = p;
                which = i;
                break;
            }
    }
    if (first != (size_t)-1) {
        s->matched = which + 1;
        memcpy(s->out, s->held, first);
        *emit = s->out, *n_emit = first;
        s->n_held = 0;
        return 1;
    }
    size_t keep = partial_suffix(s), n = s->n_held - keep;
    memcpy(s->out, s->held, n);
    memmove(s->held, s->held + n, keep);
    s->n_held = keep;
    *emit = s->out, *n_emit = n;
    return 0;
}

void stop_flush(stop_matcher *s, const char **emit, size_t *n_emit) {
    *emit = s->n_held ? s->held : "", *n_emit = s->n_held;
    s->n_held = 0;
}
