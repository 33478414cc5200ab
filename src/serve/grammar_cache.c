/* Compiled grammars by request text (see grammar_cache.h). */
#include "serve/grammar_cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"

typedef struct {
    uint64_t hash;
    int kind, flex;
    char *text, *prefix, *suffix, *sep;
    int32_t rmin, rmax;
    size_t len;
    pagoda_grammar *g;
    uint64_t used; /* LRU clock */
} entry;

struct grammar_cache {
    pagoda_model *m;
    pthread_mutex_t mu;
    entry *e;
    int cap, n;
    uint64_t clock;
    grammar_cache_stats st;
};

grammar_cache *grammar_cache_new(pagoda_model *m, int capacity) {
    grammar_cache *gc = calloc(1, sizeof *gc);
    if (!gc) return NULL;
    gc->cap = capacity > 0 ? capacity : 1;
    if (!(gc->e = calloc((size_t)gc->cap, sizeof *gc->e))) {
        free(gc);
        return NULL;
    }
    gc->m = m;
    pthread_mutex_init(&gc->mu, NULL);
    return gc;
}

static void entry_clear(entry *x) {
    pagoda_grammar_unref(x->g);
    free(x->text), free(x->prefix), free(x->suffix), free(x->sep);
    memset(x, 0, sizeof *x);
}

void grammar_cache_free(grammar_cache *gc) {
    if (!gc) return;
    for (int i = 0; i < gc->n; i++) entry_clear(&gc->e[i]);
    pthread_mutex_destroy(&gc->mu);
    free(gc->e);
    free(gc);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
    return h;
}

static int str_eq(const char *a, const char *b) { return (!a && !b) || (a && b && !strcmp(a, b)); }

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

pagoda_status grammar_cache_get(grammar_cache *gc, const pagoda_grammar_spec *spec, pagoda_grammar **out) {
    *out = NULL;
    const char *text = spec->text ? spec->text : "";
    size_t len = spec->len ? spec->len : strlen(text);
    int flex = (spec->whitespace_flexible != 0) | (spec->strict != 0) << 1; /* both options, one key */
    uint64_t h = fnv(14695981039346656037ull, &spec->kind, sizeof spec->kind);
    h = fnv(h, &flex, sizeof flex);
    h = fnv(h, text, len);
    if (spec->prefix) h = fnv(h, spec->prefix, strlen(spec->prefix) + 1);
    if (spec->suffix) h = fnv(h, spec->suffix, strlen(spec->suffix) + 1);
    if (spec->separator) h = fnv(h, spec->separator, strlen(spec->separator) + 1);
    h = fnv(h, &spec->min_repeat, sizeof spec->min_repeat);
    h = fnv(h, &spec->max_repeat, sizeof spec->max_repeat);
    pthread_mutex_lock(&gc->mu);
    for (int i = 0; i < gc->n; i++) {
        entry *x = &gc->e[i];
        if (x->hash == h && x->kind == (int)spec->kind && x->flex == flex && x->len == len && !memcmp(x->text, text, len) &&
            str_eq(x->prefix, spec->prefix) && str_eq(x->suffix, spec->suffix) && str_eq(x->sep, spec->separator) &&
            x->rmin == spec->min_repeat && x->rmax == spec->max_repeat) {
            x->used = ++gc->clock;
            gc->st.hits++;
            *out = pagoda_grammar_ref(x->g);
            pthread_mutex_unlock(&gc->mu);
            return PAGODA_OK;
        }
    }
    gc->st.misses++;
    pthread_mutex_unlock(&gc->mu);
    /* compile outside the lock: a slow schema must not hold up other requests' lookups */
    double t0 = pg_now_s();
    pagoda_grammar *g;
    pagoda_status st = pagoda_grammar_compile(gc->m, spec, &g);
    double dt = pg_now_s() - t0;
    pthread_mutex_lock(&gc->mu);
    gc->st.compile_seconds += dt;
    if (st) {
        gc->st.compile_errors++;
        pthread_mutex_unlock(&gc->mu);
        return st;
    }
    entry nx = {.hash = h,
                .kind = (int)spec->kind,
                .flex = flex,
                .len = len,
                .rmin = spec->min_repeat,
                .rmax = spec->max_repeat,
                .used = ++gc->clock};
    nx.text = malloc(len + 1);
    nx.prefix = dup_or_null(spec->prefix);
    nx.suffix = dup_or_null(spec->suffix);
    nx.sep = dup_or_null(spec->separator);
    if (nx.text && (!spec->prefix || nx.prefix) && (!spec->suffix || nx.suffix) && (!spec->separator || nx.sep)) {
        memcpy(nx.text, text, len);
        nx.text[len] = 0;
        nx.g = pagoda_grammar_ref(g);
        int slot = gc->n;
        if (gc->n == gc->cap) { /* evict the least recently used */
            slot = 0;
            for (int i = 1; i < gc->n; i++)
                if (gc->e[i].used < gc->e[slot].used) slot = i;
            entry_clear(&gc->e[slot]);
        } else {
            gc->n++;
        }
        gc->e[slot] = nx;
    } else { /* out of memory: serve uncached */
        free(nx.text), free(nx.prefix), free(nx.suffix), free(nx.sep);
    }
    pthread_mutex_unlock(&gc->mu);
    *out = g;
    return PAGODA_OK;
}

void grammar_cache_get_stats(grammar_cache *gc, grammar_cache_stats *s) {
    pthread_mutex_lock(&gc->mu);
    *s = gc->st;
    pthread_mutex_unlock(&gc->mu);
}
