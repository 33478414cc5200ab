/* BPE merging: symbols in a linked list, candidate pairs in a binary heap (O(n log n) per word,
 * so a megabyte-long word stays fast). Used by byte-level BPE (merge ranks) and by SentencePiece
 * (scores of the joined piece). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/array.h"
#include "core/log.h"
#include "tokenizer/tok_internal.h"

struct tok_sym {
    int32_t start, len; /* bytes in the word */
    int32_t prev, next; /* -1 at the ends */
    int32_t id;         /* -1: not in the vocabulary */
};

struct tok_cand {        /* 16 bytes: a megabyte-long word queues a million of these */
    float pri;          /* rank, or -score; lower merges first (ranks < 2^24 are exact) */
    int32_t left;       /* the right symbol is left's next */
    int32_t len;        /* left.len + right.len when queued: a changed length marks it stale */
    int32_t id;
};

bool tok_ids_push(tok_ids *o, int32_t id) {
    if (o->n == o->cap && !pg_grow((void **)&o->v, &o->cap, o->n + 1, sizeof *o->v)) return false;
    o->v[o->n++] = id;
    return true;
}

void tok_work_free(tok_work *w) {
    free(w->out.v);
    free(w->sym);
    free(w->heap);
    free(w->buf);
    free(w->ctab);
    free(w->ckey);
    free(w->cval);
    memset(w, 0, sizeof *w);
}

/* GPT-2's bytes_to_unicode: printable bytes stand for themselves, the rest map to U+0100.. */
static char g_bchar[256][3];
static uint8_t g_bchar_len[256];
static int16_t g_cp_byte[324]; /* code points < 324 cover the whole map */
static pthread_once_t g_bmap_once = PTHREAD_ONCE_INIT;

static void bmap_build(void) {
    int n = 0;
    for (int i = 0; i < 324; i++) g_cp_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        uint32_t cp = keep ? (uint32_t)b : 256u + (uint32_t)n++;
        g_cp_byte[cp] = (int16_t)b;
        if (cp < 0x80) {
            g_bchar[b][0] = (char)cp;
            g_bchar_len[b] = 1;
        } else {
            g_bchar[b][0] = (char)(0xC0 | (cp >> 6));
            g_bchar[b][1] = (char)(0x80 | (cp & 0x3F));
            g_bchar_len[b] = 2;
        }
    }
}

static void bmap_init(void) { pthread_once(&g_bmap_once, bmap_build); }

const char *tok_byte_char(uint8_t b, size_t *len) {
    bmap_init();
    *len = g_bchar_len[b];
    return g_bchar[b];
}

int tok_char_byte(uint32_t cp) {
    bmap_init();
    return cp < 324 ? g_cp_byte[cp] : -1;
}

static bool cand_less(const tok_cand *a, const tok_cand *b) {
    return a->pri < b->pri || (a->pri == b->pri && a->left < b->left);
}

static bool heap_push(tok_work *w, int64_t *n, tok_cand c) {
    if (*n == w->heap_cap && !pg_grow((void **)&w->heap, &w->heap_cap, *n + 1, sizeof *w->heap)) return false;
    tok_cand *h = w->heap;
    int64_t i = (*n)++;
    while (i > 0) {
        int64_t p = (i - 1) / 2;
        if (!cand_less(&c, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = c;
    return true;
}

static void heap_sift_down(tok_cand *h, int64_t n, int64_t i) {
    tok_cand x = h[i];
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && cand_less(&h[c + 1], &h[c])) c++;
        if (!cand_less(&h[c], &x)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

static tok_cand heap_pop(tok_work *w, int64_t *n) {
    tok_cand *h = w->heap;
    tok_cand top = h[0], last = h[--(*n)];
    int64_t i = 0;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && cand_less(&h[c + 1], &h[c])) c++;
        if (!cand_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0) h[i] = last;
    return top;
}

static int32_t pair_lookup(const tok_pairmap *m, int32_t a, int32_t b, int32_t *res) {
    if (!m->cap) return -1;
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    uint64_t h = k * 0x9E3779B97F4A7C15ULL;
    uint32_t i = (uint32_t)(h >> 32) & (m->cap - 1);
    while (m->key[i] != UINT64_MAX) {
        if (m->key[i] == k) {
            *res = m->res[i];
            return m->rank[i];
        }
        i = (i + 1) & (m->cap - 1);
    }
    return -1;
}

/* The merge candidate for the pair (l, r), false if they cannot merge. */
static bool make_pair(const pg_tokenizer *t, const tok_work *w, const char *s, int32_t l, int32_t r, bool by_score,
                      tok_cand *c) {
    if (l < 0 || r < 0) return false;
    const tok_sym *a = &w->sym[l], *b = &w->sym[r];
    *c = (tok_cand){.left = l, .len = a->len + b->len, .id = -1};
    if (by_score) {
        c->id = tok_lookup(t, s + a->start, (size_t)c->len);
        if (c->id < 0) return false;
        c->pri = -t->score[c->id];
    } else {
        if (a->id < 0 || b->id < 0) return false;
        int32_t rank = pair_lookup(&t->merges, a->id, b->id, &c->id);
        if (rank < 0) return false;
        c->pri = (float)rank;
    }
    return true;
}

static bool try_pair(const pg_tokenizer *t, tok_work *w, int64_t *nh, const char *s, int32_t l, int32_t r,
                     bool by_score) {
    tok_cand c;
    return !make_pair(t, w, s, l, r, by_score, &c) || heap_push(w, nh, c);
}

static bool emit_unknown(const pg_tokenizer *t, tok_work *w, const char *s, int32_t len) {
    if (t->byte_fallback) {
        bool all = true;
        for (int32_t i = 0; i < len; i++) all = all && t->byte_id[(uint8_t)s[i]] >= 0;
        if (all) {
            for (int32_t i = 0; i < len; i++)
                if (!tok_ids_push(&w->out, t->byte_id[(uint8_t)s[i]])) return false;
            return true;
        }
    }
    /* byte-level: a byte with no token (StarCoder has none for 0xC0, 0xFF, ...) is dropped, as HF
     * does without model.unk_token; mapping it to unk (often <|endoftext|>) would let raw bytes
     * in user text inject a control token */
    if (t->unk >= 0 && !t->byte_level) return tok_ids_push(&w->out, t->unk);
    return true; /* nothing can stand for it: dropped, as llama.cpp does without unk */
}

#define CACHE_MAX_WORD 64
#define CACHE_MAX_ENTRIES (1 << 20)

static bool cache_insert(tok_work *w, uint32_t h, const char *s, size_t n, const int32_t *v, int32_t nv) {
    if (w->cn >= CACHE_MAX_ENTRIES) return true;
    if ((w->cn + 1) * 2 > w->ccap) { /* grow and rehash */
        int64_t nc = w->ccap ? w->ccap * 2 : 4096;
        tok_centry *nt = calloc((size_t)nc, sizeof *nt);
        if (!nt) return false;
        for (int64_t i = 0; i < w->ccap; i++) {
            if (!w->ctab[i].klen) continue;
            int64_t j = w->ctab[i].hash & (nc - 1);
            while (nt[j].klen) j = (j + 1) & (nc - 1);
            nt[j] = w->ctab[i];
        }
        free(w->ctab);
        w->ctab = nt;
        w->ccap = nc;
    }
    if (!pg_grow((void **)&w->ckey, &w->ckey_cap, w->ckey_n + (int64_t)n, 1) ||
        !pg_grow((void **)&w->cval, &w->cval_cap, w->cval_n + nv, sizeof *w->cval))
        return false;
    int64_t j = h & (w->ccap - 1);
    while (w->ctab[j].klen) j = (j + 1) & (w->ccap - 1);
    w->ctab[j] = (tok_centry){h, (uint32_t)n, nv, w->ckey_n, w->cval_n};
    memcpy(w->ckey + w->ckey_n, s, n);
    w->ckey_n += (int64_t)n;
    if (nv) memcpy(w->cval + w->cval_n, v, (size_t)nv * sizeof *v);
    w->cval_n += nv;
    w->cn++;
    return true;
}

static pagoda_status merge_word(const pg_tokenizer *t, tok_work *w, const char *s, size_t n, bool by_score);

pagoda_status tok_merge_word(const pg_tokenizer *t, tok_work *w, const char *s, size_t n, bool by_score) {
    if (n == 0 || n > CACHE_MAX_WORD) return merge_word(t, w, s, n, by_score);
    uint32_t h = tok_hash(s, n);
    if (w->ccap) {
        for (int64_t j = h & (w->ccap - 1); w->ctab[j].klen; j = (j + 1) & (w->ccap - 1)) {
            const tok_centry *e = &w->ctab[j];
            if (e->hash == h && e->klen == n && !memcmp(w->ckey + e->koff, s, n)) {
                if (w->out.n + e->nv > w->out.cap &&
                    !pg_grow((void **)&w->out.v, &w->out.cap, w->out.n + e->nv, sizeof *w->out.v))
                    return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
                if (e->nv) memcpy(w->out.v + w->out.n, w->cval + e->voff, (size_t)e->nv * sizeof *w->out.v);
                w->out.n += e->nv;
                return PAGODA_OK;
            }
        }
    }
    int64_t before = w->out.n;
    pagoda_status st = merge_word(t, w, s, n, by_score);
    if (st) return st;
    int32_t nv = (int32_t)(w->out.n - before);
    if (!cache_insert(w, h, s, n, nv ? w->out.v + before : NULL, nv))
        return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    return PAGODA_OK;
}

static pagoda_status merge_word(const pg_tokenizer *t, tok_work *w, const char *s, size_t n, bool by_score) {
    if (n == 0) return PAGODA_OK;
    if (n > INT32_MAX / 2) return pg_fail(PAGODA_ERR_INVALID, "tokenizer: piece of %zu bytes is too long", n);
    if ((int64_t)n > w->sym_cap && !pg_grow((void **)&w->sym, &w->sym_cap, (int64_t)n, sizeof *w->sym))
        return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    if (t->ignore_merges) {
        int32_t id = tok_lookup(t, s, n);
        if (id >= 0) return tok_ids_push(&w->out, id) ? PAGODA_OK : pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    }
    int32_t ns = 0;
    for (size_t i = 0; i < n;) {
        size_t cl = tok_utf8_len((uint8_t)s[i]);
        if (cl > n - i) cl = n - i;
        tok_sym *y = &w->sym[ns];
        y->start = (int32_t)i;
        y->len = (int32_t)cl;
        y->prev = ns - 1;
        y->next = ns + 1;
        y->id = -2;
        if (t->byte_level && cl <= 2) { /* a stand-in char: its id by table, no hashing */
            uint8_t c0 = (uint8_t)s[i];
            uint32_t cp = cl == 1 ? c0 : (uint32_t)(c0 & 0x1F) << 6 | ((uint8_t)s[i + 1] & 0x3F);
            int b = cp < 324 ? g_cp_byte[cp] : -1;
            if (b >= 0 && g_bchar_len[b] == cl) y->id = t->bchar_id[b];
        }
        if (y->id == -2) y->id = tok_lookup(t, s + i, cl);
        ns++;
        i += cl;
    }
    w->sym[ns - 1].next = -1;
    /* all initial pairs at once, then an O(n) heapify */
    if (ns > w->heap_cap && !pg_grow((void **)&w->heap, &w->heap_cap, ns, sizeof *w->heap))
        return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    int64_t nh = 0;
    for (int32_t i = 0; i + 1 < ns; i++)
        if (make_pair(t, w, s, i, i + 1, by_score, &w->heap[nh])) nh++;
    for (int64_t i = nh / 2 - 1; i >= 0; i--) heap_sift_down(w->heap, nh, i);
    while (nh > 0) {
        tok_cand c = heap_pop(w, &nh);
        tok_sym *a = &w->sym[c.left];
        if (a->len == 0 || a->next < 0) continue;
        tok_sym *b = &w->sym[a->next];
        if (b->len == 0 || a->len + b->len != c.len) continue;
        a->len += b->len;
        a->id = c.id;
        b->len = 0;
        a->next = b->next;
        if (b->next >= 0) w->sym[b->next].prev = c.left;
        if (!try_pair(t, w, &nh, s, a->prev, c.left, by_score) || !try_pair(t, w, &nh, s, c.left, a->next, by_score))
            return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    }
    for (int32_t i = 0; i >= 0; i = w->sym[i].next) {
        const tok_sym *y = &w->sym[i];
        bool ok = y->id >= 0 ? tok_ids_push(&w->out, y->id) : emit_unknown(t, w, s + y->start, y->len);
        if (!ok) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    }
    return PAGODA_OK;
}

size_t tok_bytes_map(const char *s, size_t n, char *out) {
    bmap_init();
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)s[i];
        memcpy(out + m, g_bchar[b], g_bchar_len[b]);
        m += g_bchar_len[b];
    }
    return m;
}

pagoda_status tok_bpe_piece(const pg_tokenizer *t, tok_work *w, const char *s, size_t n, bool mapped) {
    bmap_init();
    if (!t->byte_level || mapped) return tok_merge_word(t, w, s, n, false);
    /* map bytes to their stand-in chars; at most 2 bytes each */
    if (n == 0) return PAGODA_OK;
    if (n > (SIZE_MAX - 4) / 2) return pg_fail(PAGODA_ERR_INVALID, "tokenizer: text too long");
    int64_t need = (int64_t)(2 * n + 4);
    if (need > w->buf_cap && !pg_grow((void **)&w->buf, &w->buf_cap, need, 1))
        return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    size_t m = tok_bytes_map(s, n, w->buf);
    /* fast path: a one-byte piece is one token */
    if (n == 1 && t->bchar_id[(uint8_t)s[0]] >= 0)
        return tok_ids_push(&w->out, t->bchar_id[(uint8_t)s[0]]) ? PAGODA_OK : pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    return tok_merge_word(t, w, w->buf, m, false);
}
