/* Token indexes by text class (vocab_impl.h): for one class, the class tokens by the characters
 * they begin (cumulative bitsets), the exits of the class text in the trie by the characters begun
 * before them, and the frontier nodes past GM_TCLASS_D characters. One pass over the trie per class;
 * the matcher's counting states read them. */
#include <stdlib.h>
#include <string.h>

#include "grammar/vocab_impl.h"

static void tclass_free(gm_tclass *t) {
    if (!t) return;
    free(t->rows);
    free(t->row_n);
    free(t->ex);
    free(t);
}

void gm_vocab_tclass_free(gr_vocab *v) {
    for (gm_tclass *t = v->tc, *nx; t; t = nx) {
        nx = t->next;
        tclass_free(t);
    }
    v->tc = NULL;
    v->tc_n = 0;
    if (v->tc_lock_init) pthread_mutex_destroy(&v->tc_lock);
    v->tc_lock_init = 0;
}

void gr_vocab_set_count_walk(gr_vocab *v, int on) {
    if (!v) return;
    pthread_mutex_lock(&v->tc_lock);
    v->tc_on = on != 0;
    pthread_mutex_unlock(&v->tc_lock);
}

int gr_vocab_count_walk_classes(gr_vocab *v) {
    if (!v) return 0;
    pthread_mutex_lock(&v->tc_lock);
    int n = v->tc_n;
    pthread_mutex_unlock(&v->tc_lock);
    return n;
}

/* Appends x to a growing array of elements of size sz; 0 ok, -1 out of memory. */
static int push(void **a, size_t *n, size_t *cap, const void *x, size_t sz) {
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 1024;
        void *na = realloc(*a, nc * sz);
        if (!na) return -1;
        *a = na, *cap = nc;
    }
    memcpy((char *)*a + *n * sz, x, sz);
    (*n)++;
    return 0;
}

/* The index of one class: the trie in preorder with, per depth on the current path, whether the
 * node there is a class node, the characters begun, its UTF-8 decoder state and the depth of the
 * lead byte of a character not finished yet. */
static gm_tclass *tclass_build(const gr_vocab *v, const uint64_t ascii[2], int mb) {
    const int nn = v->n_nodes, md = v->max_depth;
    const gm_node *N = v->nodes;
    const size_t words = ((size_t)v->n_tokens + 31) / 32, n_rows = GM_TCLASS_D + 1;
    gm_tclass *t = calloc(1, sizeof *t);
    uint8_t *cls = malloc((size_t)md + 2), *ust = malloc((size_t)md + 2), *path = malloc((size_t)md + 2);
    int32_t *beg = malloc(((size_t)md + 2) * sizeof *beg), *lead = malloc(((size_t)md + 2) * sizeof *lead);
    size_t n_ex = 0, cap_ex = 0, n_front = 0;
    if (!t || !cls || !ust || !path || !beg || !lead || !(t->rows = calloc(n_rows * words, sizeof *t->rows)) ||
        !(t->row_n = calloc(n_rows, sizeof *t->row_n)))
        goto oom;
    memcpy(t->ascii, ascii, sizeof t->ascii);
    t->mb = mb;
    cls[0] = 1, ust[0] = U8_BOUNDARY, beg[0] = 0, lead[0] = 0;
    for (int i = 1; i < nn; i++) {
        int d = N[i].depth, b = N[i].byte;
        path[d] = (uint8_t)b;
        cls[d] = 0;
        if (!cls[d - 1]) continue; /* inside an exit's or a frontier node's subtree */
        int pst = ust[d - 1], st = v->u8[i] & 15, in;
        if (pst == U8_BOUNDARY)
            in = b < 0x80 ? (int)(ascii[b >> 6] >> (b & 63) & 1) : mb && st != U8_BAD;
        else
            in = st != U8_BAD; /* (mid-character only when mb) */
        if (!in) {
            gm_texit x = {(uint32_t)i, (uint8_t)beg[d - 1], 0, {0, 0, 0}};
            if (pst != U8_BOUNDARY) {
                x.np = (uint8_t)(d - lead[d - 1]);
                for (int k = 0; k < x.np; k++) x.pb[k] = path[lead[d - 1] + k];
            }
            if (push((void **)&t->ex, &n_ex, &cap_ex, &x, sizeof x)) goto oom;
            t->ex_upto[x.q + 1]++;
            continue;
        }
        if (pst == U8_BOUNDARY && beg[d - 1] == GM_TCLASS_D) {
            gm_texit f = {(uint32_t)i, GM_TCLASS_FRONT, 0, {0, 0, 0}};
            if (push((void **)&t->ex, &n_ex, &cap_ex, &f, sizeof f)) goto oom;
            n_front++;
            continue;
        }
        cls[d] = 1;
        ust[d] = (uint8_t)st;
        beg[d] = beg[d - 1] + (pst == U8_BOUNDARY);
        lead[d] = pst == U8_BOUNDARY ? d : lead[d - 1];
        uint32_t *row = t->rows + (size_t)beg[d] * words;
        for (uint32_t k = N[i].tok; k < N[i + 1].tok; k++) row[v->ntok[k] >> 5] |= 1u << (v->ntok[k] & 31);
        t->row_n[beg[d]] += (int32_t)(N[i + 1].tok - N[i].tok);
    }
    t->n_front = (uint32_t)n_front;
    for (int r = 1; r <= GM_TCLASS_D; r++) { /* cumulative: at most r characters */
        uint32_t *cur = t->rows + (size_t)r * words, *prev = cur - words;
        for (size_t w = 0; w < words; w++) cur[w] |= prev[w];
        t->row_n[r] += t->row_n[r - 1];
    }
    for (int q = 0; q <= GM_TCLASS_D; q++) t->ex_upto[q + 1] += t->ex_upto[q];
    t->n_ex = (uint32_t)n_ex;
    free(cls), free(ust), free(path), free(beg), free(lead);
    return t;
oom:
    free(cls), free(ust), free(path), free(beg), free(lead);
    tclass_free(t);
    return NULL;
}

const gm_tclass *gm_vocab_tclass(gr_vocab *v, const uint64_t ascii[2], int mb) {
    mb = mb != 0;
    pthread_mutex_lock(&v->tc_lock);
    gm_tclass *t = NULL;
    if (v->tc_on) {
        for (t = v->tc; t; t = t->next)
            if (t->ascii[0] == ascii[0] && t->ascii[1] == ascii[1] && t->mb == mb) break;
        if (!t && v->tc_n < GM_TCLASS_MAX && (t = tclass_build(v, ascii, mb))) {
            t->next = v->tc;
            v->tc = t;
            v->tc_n++;
        }
    }
    pthread_mutex_unlock(&v->tc_lock);
    return t;
}
