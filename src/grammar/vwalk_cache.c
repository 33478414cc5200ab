/* The vocabulary's cache of lexer-only walks (vwalk_cache.h). */
#include "grammar/vwalk_cache.h"

#include <stdlib.h>
#include <string.h>

static void vwalk_free(gm_vwalk *w) {
    if (!w) return;
    free(w->sig);
    free(w->mask);
    free(w->bnode);
    free(w->bidx);
    free(w);
}

void gm_vwcache_init(gm_vwcache *vc, size_t max_bytes) {
    memset(vc, 0, sizeof *vc);
    pthread_mutex_init(&vc->lock, NULL);
    vc->lock_init = 1;
    vc->max = max_bytes;
}

void gm_vwcache_free(gm_vwcache *vc) {
    for (size_t k = 0; k < vc->cap; k++)
        for (gm_vwalk *w = vc->tab[k], *nx; w; w = nx) {
            nx = w->next;
            vwalk_free(w);
        }
    free(vc->tab);
    vc->tab = NULL;
    vc->cap = vc->n = vc->bytes = 0;
    if (vc->lock_init) pthread_mutex_destroy(&vc->lock);
    vc->lock_init = 0;
}

void gm_vwcache_set_max(gm_vwcache *vc, size_t max_bytes) {
    pthread_mutex_lock(&vc->lock);
    vc->max = max_bytes;
    pthread_mutex_unlock(&vc->lock);
}

void gm_vwcache_stats(gm_vwcache *vc, size_t *entries, uint64_t *hits) {
    pthread_mutex_lock(&vc->lock);
    if (entries) *entries = vc->n;
    if (hits) *hits = vc->hits;
    pthread_mutex_unlock(&vc->lock);
}

int gm_vwcache_on(const gm_vwcache *vc) { return __atomic_load_n(&vc->max, __ATOMIC_RELAXED) != 0; }

/* The canonical index of state x (added when new); -1 past GM_CANON_STATES. */
static int canon_index(gm_canon *cn, lx_state x) {
    unsigned j = (x * 0x9E3779B9u) >> (32 - GM_CANON_HBITS);
    for (; cn->hk[j] != LX_DEAD; j = (j + 1) & ((1u << GM_CANON_HBITS) - 1))
        if (cn->hk[j] == x) return cn->hv[j];
    if (cn->n == GM_CANON_STATES) return -1;
    cn->hk[j] = x;
    cn->hv[j] = (uint8_t)cn->n;
    cn->st[cn->n] = x;
    return cn->n++;
}

int gm_canon_build(lx_lexer *lx, const lx_table *tb, lx_state s, int fresh, gm_canon *cn) {
    memset(cn->hk, 0, sizeof cn->hk);
    cn->n = 0;
    cn->len = 0;
    cn->sig[cn->len++] = (uint8_t)fresh;
    canon_index(cn, s);
    /* byte classes are byte intervals in ascending order: class c is [cls_rep[c], cls_rep[c + 1]);
     * a run of equal targets can only end where a class does */
    const int n_cls = tb->n_classes;
    for (int i = 0; i < cn->n; i++) {
        lx_state x = cn->st[i];
        cn->sig[cn->len++] = lx_accepting(lx, x) != NULL;
        lx_state prev = lx_next_fast(lx, tb, x, 0);
        for (int c = 1; c <= n_cls; c++) {
            lx_state y = c < n_cls ? lx_next_fast(lx, tb, x, tb->cls_rep[c]) : LX_DEAD;
            if (c < n_cls && y == prev) continue;
            int k = prev == LX_DEAD ? 0xFF : canon_index(cn, prev);
            if (k < 0) return -1;
            int end = c < n_cls ? tb->cls_rep[c] - 1 : 255;
            cn->sig[cn->len++] = (uint8_t)end; /* a run ends at byte end */
            cn->sig[cn->len++] = (uint8_t)k;
            prev = y;
        }
    }
    return lx_exhausted(lx) ? -1 : 0;
}

uint64_t gm_canon_hash(const gm_canon *cn) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < cn->len; i++) h = (h ^ cn->sig[i]) * 0x100000001B3ull;
    return h ^ h >> 31;
}

/* The shared walk of this canonical form (lock held), or NULL. */
static const gm_vwalk *vw_find(const gm_vwcache *v, uint64_t h, const gm_canon *cn) {
    if (!v->cap) return NULL;
    for (const gm_vwalk *w = v->tab[h & (v->cap - 1)]; w; w = w->next)
        if (w->hash == h && w->sig_len == cn->len && !memcmp(w->sig, cn->sig, cn->len)) return w;
    return NULL;
}

const gm_vwalk *gm_vwcache_find(gm_vwcache *vc, uint64_t h, const gm_canon *cn) {
    pthread_mutex_lock(&vc->lock);
    const gm_vwalk *w = vw_find(vc, h, cn);
    if (w) vc->hits++;
    pthread_mutex_unlock(&vc->lock);
    return w;
}

void gm_vwcache_publish(gm_vwcache *v, const gm_canon *cn, uint64_t h, const uint32_t *mask, size_t words,
                        int32_t count, int n_b, const int *bnode, const lx_state *bls) {
    gm_vwalk *w = calloc(1, sizeof *w);
    if (!w) return;
    w->hash = h;
    w->sig_len = cn->len;
    w->count = count;
    w->n_b = n_b;
    gm_canon *map = (gm_canon *)cn; /* (lookups of known states only: the map is not changed) */
    if (!(w->sig = malloc(cn->len)) || !(w->mask = malloc(words * sizeof *w->mask)) ||
        (n_b && (!(w->bnode = malloc((size_t)n_b * sizeof *w->bnode)) || !(w->bidx = malloc((size_t)n_b)))))
        goto drop;
    memcpy(w->sig, cn->sig, cn->len);
    memcpy(w->mask, mask, words * sizeof *w->mask);
    for (int b = 0; b < n_b; b++) {
        int n0 = map->n, k = canon_index(map, bls[b]);
        if (k < 0 || map->n != n0) goto drop; /* (cannot happen: every such state is reachable) */
        w->bnode[b] = bnode[b];
        w->bidx[b] = (uint8_t)k;
    }
    size_t bytes = sizeof *w + cn->len + words * sizeof *w->mask + (size_t)n_b * (sizeof *w->bnode + 1);
    pthread_mutex_lock(&v->lock);
    if (v->bytes + bytes > v->max || vw_find(v, h, cn)) {
        pthread_mutex_unlock(&v->lock);
        goto drop;
    }
    if (v->n + 1 > v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 256;
        gm_vwalk **t = calloc(nc, sizeof *t);
        if (!t) {
            pthread_mutex_unlock(&v->lock);
            goto drop;
        }
        for (size_t k = 0; k < v->cap; k++)
            for (gm_vwalk *x = v->tab[k], *nx; x; x = nx) {
                nx = x->next;
                x->next = t[x->hash & (nc - 1)];
                t[x->hash & (nc - 1)] = x;
            }
        free(v->tab);
        v->tab = t;
        v->cap = nc;
    }
    w->next = v->tab[h & (v->cap - 1)];
    v->tab[h & (v->cap - 1)] = w;
    v->n++;
    v->bytes += bytes;
    pthread_mutex_unlock(&v->lock);
    return;
drop:
    vwalk_free(w);
}
