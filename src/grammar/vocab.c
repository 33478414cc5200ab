/* The vocabulary of the matcher (vocab_impl.h): the tokens' bytes, the token trie in preorder, and
 * per node the byte set and height under it and the UTF-8 facts of its path. */
#include "grammar/vocab_impl.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

int32_t gr_vocab_size(const gr_vocab *v) { return v ? v->n_tokens : 0; }

const uint8_t *gr_vocab_token(const gr_vocab *v, int32_t t, size_t *len) {
    if (!v || t < 0 || t >= v->n_tokens) {
        *len = 0;
        return NULL;
    }
    *len = v->off[t + 1] - v->off[t];
    return v->blob + v->off[t];
}

void gr_vocab_set_walk_cache(gr_vocab *v, size_t max_bytes) {
    if (v) gm_vwcache_set_max(&v->vw, max_bytes);
}

void gr_vocab_walk_cache_stats(gr_vocab *v, size_t *entries, uint64_t *hits) {
    if (v) gm_vwcache_stats(&v->vw, entries, hits);
}

gr_vocab *gr_vocab_bytes(void) {
    uint8_t bytes[256], special[257] = {0};
    const uint8_t *tb[257];
    uint32_t lens[257];
    for (int i = 0; i < 256; i++) bytes[i] = (uint8_t)i, tb[i] = &bytes[i], lens[i] = 1;
    tb[256] = (const uint8_t *)"";
    lens[256] = 0;
    special[256] = 1;
    int32_t eos = 256;
    return gr_vocab_new(257, tb, lens, special, &eos, 1);
}

void gr_vocab_free(gr_vocab *v) {
    if (!v) return;
    gm_vwcache_free(&v->vw);
    gm_vocab_tclass_free(v);
    free(v->blob);
    free(v->off);
    free(v->special);
    free(v->is_eos);
    free(v->eos);
    free(v->nodes);
    free(v->dbytes);
    free(v->ntok);
    free(v->under);
    free(v->bsets);
    free(v->u8);
    free(v->cheight);
    free(v->wide);
    free(v->kids);
    free(v);
}

/* merge sort of token ids by their bytes (then id) */
static void sort_tokens(const gr_vocab *v, int32_t *a, int32_t *tmp, size_t n) {
    if (n < 2) return;
    size_t h = n / 2;
    sort_tokens(v, a, tmp, h);
    sort_tokens(v, a + h, tmp, n - h);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) {
        int32_t x = a[i], y = a[j];
        size_t lx = v->off[x + 1] - v->off[x], ly = v->off[y + 1] - v->off[y];
        int c = memcmp(v->blob + v->off[x], v->blob + v->off[y], lx < ly ? lx : ly);
        if (!c) c = lx < ly ? -1 : lx > ly ? 1 : (x > y) - (x < y);
        tmp[k++] = c <= 0 ? a[i++] : a[j++];
    }
    while (i < h) tmp[k++] = a[i++];
    while (j < n) tmp[k++] = a[j++];
    memcpy(a, tmp, n * sizeof *a);
}

static int u8_next(int st, uint8_t b) {
    switch (st) {
    case U8_BOUNDARY:
        if (b < 0x80) return U8_BOUNDARY;
        if (b >= 0xC2 && b <= 0xDF) return U8_NEED1;
        if (b == 0xE0) return U8_E0;
        if (b == 0xED) return U8_ED;
        if (b >= 0xE1 && b <= 0xEF) return U8_NEED2;
        if (b == 0xF0) return U8_F0;
        if (b >= 0xF1 && b <= 0xF3) return U8_NEED3;
        if (b == 0xF4) return U8_F4;
        return U8_BAD;
    case U8_NEED1: case U8_NEED2: case U8_NEED3:
        return b >= 0x80 && b <= 0xBF ? st - 1 : U8_BAD;
    case U8_E0: return b >= 0xA0 && b <= 0xBF ? U8_NEED1 : U8_BAD;
    case U8_ED: return b >= 0x80 && b <= 0x9F ? U8_NEED1 : U8_BAD;
    case U8_F0: return b >= 0x90 && b <= 0xBF ? U8_NEED2 : U8_BAD;
    case U8_F4: return b >= 0x80 && b <= 0x8F ? U8_NEED2 : U8_BAD;
    default: return U8_BAD;
    }
}

/* v->u8: decoder states top-down (preorder: a node's parent is the last node one level up), then
 * U8_OK bottom-up. */
static int vocab_utf8(gr_vocab *v) {
    int nn = v->n_nodes;
    gm_node *N = v->nodes;
    uint8_t *st = malloc((size_t)v->max_depth + 2);
    if (!(v->u8 = calloc((size_t)nn + 1, 1)) || !(v->cheight = calloc((size_t)nn + 1, 1)) || !st) {
        free(st);
        return -1;
    }
    st[0] = U8_BOUNDARY;
    for (int i = 1; i < nn; i++) {
        int d = N[i].depth;
        v->u8[i] = st[d] = (uint8_t)u8_next(st[d - 1] & 15, N[i].byte);
    }
    v->u8[0] = U8_BOUNDARY;
    for (int i = nn - 1; i >= 0; i--) {
        int ok = (v->u8[i] & 15) != U8_BAD, h = 0;
        for (uint32_t j = (uint32_t)i + 1; j < N[i].skip; j = N[j].skip) {
            ok = ok && (v->u8[j] & U8_OK) != 0;
            int hj = v->cheight[j] + (N[j].byte < 0x80 || N[j].byte >= 0xC0);
            if (hj > h) h = hj;
        }
        if (ok) v->u8[i] |= U8_OK;
        v->cheight[i] = (uint8_t)(h < 255 ? h : 255);
    }
    free(st);
    return 0;
}

/* v->wide / v->kids: the children of every node with GM_WIDE or more, in byte order (preorder). */
static int vocab_kids(gr_vocab *v) {
    int nn = v->n_nodes;
    const gm_node *N = v->nodes;
    size_t total = 0;
    if (!(v->wide = calloc((size_t)nn + 1, sizeof *v->wide))) return -1;
    for (int i = 0; i < nn; i++) {
        uint32_t n = 0;
        for (uint32_t j = (uint32_t)i + 1; j < N[i].skip; j = N[j].skip) n++;
        if (n >= GM_WIDE) total += n + 1;
    }
    if (total >= UINT32_MAX / 2 || !(v->kids = malloc((total + 1) * sizeof *v->kids))) return -1;
    size_t o = 0;
    for (int i = 0; i < nn; i++) {
        uint32_t n = 0;
        for (uint32_t j = (uint32_t)i + 1; j < N[i].skip; j = N[j].skip) n++;
        if (n < GM_WIDE) continue;
        v->kids[o++] = n;
        v->wide[i] = (uint32_t)o + 1;
        for (uint32_t j = (uint32_t)i + 1; j < N[i].skip; j = N[j].skip) v->kids[o++] = j;
    }
    return 0;
}

/* The byte set under each node (children's bytes and their sets), deduplicated into v->bsets. */
static int vocab_below(gr_vocab *v) {
    int nn = v->n_nodes;
    gm_node *N = v->nodes;
    uint64_t (*set)[4] = calloc((size_t)nn, sizeof *set);
    size_t hcap = 1024;
    while (hcap < (size_t)nn * 2) hcap *= 2;
    uint32_t *h = calloc(hcap, sizeof *h); /* ids + 1 into v->bsets, 0 = free */
    int cap_b = 256;
    v->bsets = calloc((size_t)cap_b, sizeof *v->bsets);
    v->under = calloc((size_t)nn, sizeof *v->under);
    if (!set || !h || !v->bsets || !v->under) goto oom;
    v->n_bsets = 1; /* the empty set */
    for (int i = nn - 1; i >= 0; i--) {
        for (uint32_t j = (uint32_t)i + 1; j < N[i].skip; j = N[j].skip) {
            for (int w = 0; w < 4; w++) set[i][w] |= set[j][w];
            set[i][N[j].byte >> 6] |= 1ull << (N[j].byte & 63);
            if (v->under[j].height + 1 > v->under[i].height) v->under[i].height = v->under[j].height + 1;
        }
        if (!(set[i][0] | set[i][1] | set[i][2] | set[i][3])) {
            v->under[i].set = 0;
            continue;
        }
        uint64_t x = 0x9E3779B97F4A7C15ull;
        for (int w = 0; w < 4; w++) x = (x ^ set[i][w]) * 0x100000001B3ull, x ^= x >> 29;
        size_t k = (size_t)x & (hcap - 1);
        for (; h[k]; k = (k + 1) & (hcap - 1))
            if (!memcmp(v->bsets[h[k] - 1], set[i], sizeof set[i])) break;
        if (!h[k]) {
            if (v->n_bsets == cap_b) {
                cap_b *= 2;
                uint64_t (*nb)[4] = realloc(v->bsets, (size_t)cap_b * sizeof *nb);
                if (!nb) goto oom;
                v->bsets = nb;
            }
            memcpy(v->bsets[v->n_bsets], set[i], sizeof set[i]);
            h[k] = (uint32_t)++v->n_bsets;
        }
        v->under[i].set = h[k] - 1;
    }
    for (int i = 0; i < nn; i++) N[i].height = (uint8_t)(v->under[i].height < 255 ? v->under[i].height : 255);
    free(set), free(h);
    return 0;
oom:
    free(set), free(h);
    return -1;
}

gr_vocab *gr_vocab_new(int32_t n_tokens, const uint8_t *const *bytes, const uint32_t *lens,
                       const uint8_t *is_special, const int32_t *eos_ids, int32_t n_eos) {
    if (n_tokens < 0 || (n_tokens && (!bytes || !lens)) || n_eos < 0 || (n_eos && !eos_ids)) return NULL;
    gr_vocab *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    gm_vwcache_init(&v->vw, GR_VWALK_MAX_BYTES);
    pthread_mutex_init(&v->tc_lock, NULL);
    v->tc_lock_init = 1;
    v->tc_on = 1;
    v->n_tokens = n_tokens;
    size_t total = 0;
    for (int32_t t = 0; t < n_tokens; t++) total += lens[t];
    v->blob = malloc(total + 1);
    v->off = malloc(((size_t)n_tokens + 1) * sizeof *v->off);
    v->special = calloc((size_t)n_tokens + 1, 1);
    v->is_eos = calloc((size_t)n_tokens + 1, 1);
    int32_t *order = malloc(((size_t)n_tokens + 1) * sizeof *order);
    int32_t *tmp = malloc(((size_t)n_tokens + 1) * sizeof *tmp);
    if (!v->blob || !v->off || !v->special || !v->is_eos || !order || !tmp) goto fail;
    size_t o = 0;
    for (int32_t t = 0; t < n_tokens; t++) {
        v->off[t] = o;
        if (lens[t]) {
            if (!bytes[t]) goto fail;
            memcpy(v->blob + o, bytes[t], lens[t]);
        }
        o += lens[t];
        v->special[t] = is_special ? is_special[t] != 0 : 0;
    }
    v->off[n_tokens] = o;
    for (int32_t i = 0; i < n_eos; i++)
        if (eos_ids[i] >= 0 && eos_ids[i] < n_tokens && !v->is_eos[eos_ids[i]]) {
            if (!v->eos && !(v->eos = malloc((size_t)n_eos * sizeof *v->eos))) goto fail;
            v->is_eos[eos_ids[i]] = 1;
            v->eos[v->n_eos++] = eos_ids[i];
        }
    size_t n = 0;
    for (int32_t t = 0; t < n_tokens; t++) {
        size_t l = v->off[t + 1] - v->off[t];
        if (!v->special[t] && !v->is_eos[t] && l > 0 && l <= GR_MAX_TOKEN_BYTES) order[n++] = t;
    }
    sort_tokens(v, order, tmp, n);
    /* nodes: at most total bytes + 1 */
    size_t cap = 1;
    for (size_t i = 0; i < n; i++) cap += v->off[order[i] + 1] - v->off[order[i]];
    if (cap >= UINT32_MAX / 2) goto fail;
    v->nodes = calloc(cap + 1, sizeof *v->nodes);
    v->ntok = malloc((n + 1) * sizeof(int32_t));
    int *stack = malloc((GR_MAX_TOKEN_BYTES + 2) * sizeof(int));
    int *node_of = malloc((n + 1) * sizeof(int)); /* token's end node */
    if (!v->nodes || !v->ntok || !stack || !node_of) {
        free(stack), free(node_of);
        goto fail;
    }
    gm_node *N = v->nodes;
    int nn = 1, sp = 1;
    stack[0] = 0;
    const uint8_t *prev = NULL;
    size_t prev_len = 0;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *s = v->blob + v->off[order[i]];
        size_t l = v->off[order[i] + 1] - v->off[order[i]];
        size_t lcp = 0;
        while (prev && lcp < l && lcp < prev_len && s[lcp] == prev[lcp]) lcp++;
        while ((size_t)sp - 1 > lcp) N[stack[--sp]].skip = (uint32_t)nn; /* close deeper nodes */
        for (size_t k = lcp; k < l; k++) {
            N[nn].byte = s[k];
            N[nn].depth = (uint16_t)(k + 1);
            stack[sp++] = nn++;
        }
        node_of[i] = stack[sp - 1];
        if ((int)l > v->max_depth) v->max_depth = (int)l;
        prev = s, prev_len = l;
    }
    while (sp > 0) N[stack[--sp]].skip = (uint32_t)nn;
    v->n_nodes = nn;
    if (!(v->dbytes = calloc((size_t)v->max_depth + 2, sizeof *v->dbytes))) {
        free(stack), free(node_of);
        goto fail;
    }
    for (int k = 1; k < nn; k++) v->dbytes[N[k].depth][N[k].byte >> 6] |= 1ull << (N[k].byte & 63);
    for (int d = v->max_depth - 1; d >= 1; d--)
        for (int w = 0; w < 4; w++) v->dbytes[d][w] |= v->dbytes[d + 1][w];
    /* tokens per node, as offsets (CSR) in N[].tok; N[nn] is the sentinel */
    for (size_t i = 0; i < n; i++) N[node_of[i]].tok++;
    uint32_t acc = 0;
    for (int k = 0; k <= nn; k++) {
        uint32_t c = N[k].tok;
        N[k].tok = acc;
        acc += c;
    }
    N[nn].skip = (uint32_t)nn + 1;
    uint32_t *fill = calloc((size_t)nn + 1, sizeof *fill);
    if (!fill) {
        free(stack), free(node_of);
        goto fail;
    }
    for (size_t i = 0; i < n; i++) v->ntok[N[node_of[i]].tok + fill[node_of[i]]++] = order[i];
    uint32_t spare = (uint32_t)(((size_t)n_tokens + 31) / 32 * 32);
    for (int k = 0; k < nn; k++) {
        uint32_t c = N[k + 1].tok - N[k].tok;
        N[k].tok1 = c ? (uint32_t)v->ntok[N[k].tok] : spare;
        if (c > 1) N[k].tok1 |= GM_MULTI;
    }
    free(fill), free(stack), free(node_of), free(order), free(tmp);
    order = tmp = NULL;
    if (vocab_below(v) || vocab_utf8(v) || vocab_kids(v)) goto fail;
    return v;
fail:
    free(order), free(tmp);
    gr_vocab_free(v);
    return NULL;
}
