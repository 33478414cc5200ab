/* The multi-terminal lazy DFA (lexer.h). All terminals share one NFA (regex_parse.c); a DFA state
 * is the set of NFA nodes that still matter after the bytes so far: BYTE nodes from which some
 * MATCH is still reachable, and MATCH nodes. Sets are interned (equal sets, equal ids; the empty
 * set is LX_DEAD), each state carries a transition row over byte classes (bytes no pattern tells
 * apart), filled on first use. lx_next on a known transition is one lookup in a flat table with
 * no lock; a miss computes the set under the lexer's mutex and publishes the row entry last.
 *
 * Anchors: ^ edges are followed only in the start closure; $ edges lead to "end only" nodes whose
 * byte edges are dropped (only MATCH counts from there).
 *
 * Memory: states live until lx_free (their ids and accepting sets must stay valid while a caller
 * holds them); the total is bounded by LX_MAX_DFA_STATES / LX_MAX_DFA_BYTES. Past the bound
 * lx_next answers LX_DEAD and lx_exhausted() says so, so a caller can report an error instead of a
 * silent rejection. The start cache (allowed set -> state) is a plain cache, flushed when full. */
#define _DEFAULT_SOURCE
#include "grammar/lexer.h"

#include <pthread.h>
#include <sys/mman.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/regex.h"

#define CHUNK_BITS 12
#define CHUNK_MASK ((1u << CHUNK_BITS) - 1)
#define LX_UNKNOWN UINT32_MAX
#define START_CACHE_MAX 4096

typedef struct {
    const uint64_t *acc; /* accepting terminals, NULL = none */
    uint32_t *set;       /* sorted NFA nodes */
    uint32_t n_set, hash;
    int can_cont;
    /* lx_uniform's answer and lx_uniform_mb's, memoized (under mu; read after uni_known / umb is
     * set, with acquire): a walk meets the same states again with every new matcher */
    uint64_t uset[4];
    lx_state uto;
    uint8_t uni_known;
    int8_t umb; /* -1 not known */
} dstate;

struct lx_lexer {
    int n_terms, n_words;
    rx_nfa nfa;
    uint32_t *term_start;
    uint8_t *live; /* BYTE node n: some MATCH reachable after its byte */
    uint8_t cls[256], cls_rep[256];
    int n_classes, shift; /* row stride 1 << shift >= n_classes */
    /* transition rows: state s's row at rows[s << shift], LX_UNKNOWN until computed; reserved
     * once (address space only, pages are touched as states appear), so it never moves */
    uint32_t *rows;
    size_t rows_bytes;
    uint32_t max_states;
    dstate **chunks;
    uint32_t n_states; /* atomic: read by lx_next without the lock */
    size_t bytes;
    int exhausted;
    uint32_t *table; /* intern table: state ids (0 = free slot) */
    uint32_t table_cap;
    uint64_t *start_keys; /* start cache: START_CACHE_MAX * 2 slots of n_words + state */
    uint32_t *start_state;
    uint8_t *start_used;
    uint32_t start_n;
    /* closure scratch (under mu) */
    uint32_t *stack, *mark, *added, *buf;
    uint32_t *seeds; /* fill_row scratch: each class's seeds */
    /* the states' node sets and accepting sets (under mu): bump-allocated in blocks, all freed
     * with the lexer (a malloc per new state was a tenth of a first visit's state building) */
    void **arena;
    size_t n_arena, cap_arena;
    char *arena_cur;
    size_t arena_left;
    size_t seeds_cap;
    int fill_reference; /* fill_row: the per-class form (tests) */
    uint32_t stamp, add_stamp;
    pthread_mutex_t mu;
    /* lx_equiv's memo (under eq_mu): each state's row grouped by successor, crow[x] = its offset
     * + 1 in cpool: {partition, number of groups, the groups' successors}; a partition (each
     * class's group, in first-seen order) is an index in parts (n_classes bytes each) */
    pthread_mutex_t eq_mu;
    uint32_t *crow, *cpool;
    size_t crow_cap, cpool_n, cpool_cap;
    uint8_t *parts;
    uint32_t n_parts, parts_cap;
};

static dstate *st(const lx_lexer *lx, lx_state s) { return &lx->chunks[s >> CHUNK_BITS][s & CHUNK_MASK]; }

/* ---- NFA analysis ---- */

/* live[n]: BYTE node n after whose byte some MATCH is still reachable. endr (a MATCH reachable
 * through epsilon and $ edges only) and L (an endr node reachable through epsilon and byte edges;
 * ^ is closed after a byte) are least fixpoints over the edges; patterns are emitted backwards onto
 * their continuation, so most edges lead to lower ids and passes in id order converge in a few. */
/* One node's flags from its successors' (bit 0: endr, bit 1: L), as compute_live defines them. */
static inline uint8_t flow(const rx_node *v, const uint8_t *f, uint32_t n) {
    const rx_node *x = &v[n];
    uint8_t h = f[n];
    switch (x->kind) {
    case RX_MATCH: h = 3; break;
    case RX_SPLIT: h |= f[x->out] | f[x->out2]; break;
    case RX_EPS: h |= f[x->out]; break;
    case RX_EOL: h |= f[x->out] & 1; break;
    case RX_BYTE: h |= f[x->out] & 2; break;
    default: break;
    }
    return h & 1 ? h | 2 : h;
}

static int compute_live(lx_lexer *lx) {
    const rx_node *v = lx->nfa.v;
    uint32_t N = lx->nfa.n;
    uint8_t *f = calloc(N, 1); /* bit 0: endr, bit 1: L */
    uint32_t *fwd = NULL, n_fwd = 0, cap_fwd = 0; /* nodes with an edge to a higher id */
    lx->live = calloc(N, 1);
    if (!f || !lx->live) {
        free(f);
        return -1;
    }
    /* a pass in id order reads final values except over edges to higher ids: once no node with
     * such an edge would change, every node holds its fixpoint */
    for (int pass = 0, changed = 1; changed; pass++) {
        changed = 0;
        for (uint32_t n = 0; n < N; n++) {
            uint8_t h = flow(v, f, n);
            if (h != f[n]) f[n] = h;
            if (pass == 0 && (v[n].kind == RX_SPLIT || v[n].kind == RX_EPS || v[n].kind == RX_EOL ||
                              v[n].kind == RX_BYTE) &&
                (v[n].out > n || (v[n].kind == RX_SPLIT && v[n].out2 > n))) {
                if (n_fwd == cap_fwd) {
                    uint32_t nc = cap_fwd ? cap_fwd * 2 : 256, *q = realloc(fwd, nc * sizeof *q);
                    if (!q) { /* recheck everything */
                        free(fwd);
                        fwd = NULL;
                        n_fwd = cap_fwd = UINT32_MAX;
                        break;
                    }
                    fwd = q, cap_fwd = nc;
                }
                fwd[n_fwd++] = n;
            }
        }
        if (n_fwd == UINT32_MAX) { /* no list: full passes until nothing changes */
            for (uint32_t n = 0; n < N; n++) changed |= flow(v, f, n) != f[n];
            continue;
        }
        for (uint32_t k = 0; k < n_fwd && !changed; k++) changed = flow(v, f, fwd[k]) != f[fwd[k]];
    }
    free(fwd);
    for (uint32_t n = 0; n < N; n++) lx->live[n] = v[n].kind == RX_BYTE && (f[v[n].out] & 2);
    free(f);
    return 0;
}

static void compute_classes(lx_lexer *lx) {
    uint8_t cut[257] = {0};
    for (uint32_t n = 0; n < lx->nfa.n; n++)
        if (lx->nfa.v[n].kind == RX_BYTE && lx->live[n]) cut[lx->nfa.v[n].lo] = 1, cut[lx->nfa.v[n].hi + 1] = 1;
    int c = -1;
    for (int b = 0; b < 256; b++) {
        if (b == 0 || cut[b]) lx->cls_rep[++c] = (uint8_t)b;
        lx->cls[b] = (uint8_t)c;
    }
    lx->n_classes = c + 1;
}

/* ---- closure and interning (under mu) ---- */

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* closure of the seeds already on the stack (node << 1 | end_only); result sorted in buf */
static uint32_t closure(lx_lexer *lx, uint32_t sp, int at_start) {
    const rx_node *v = lx->nfa.v;
    uint32_t stamp = ++lx->stamp, add_stamp = ++lx->add_stamp, n_out = 0;
    if (stamp == 0) { /* wrapped: clear */
        memset(lx->mark, 0, 2 * (size_t)lx->nfa.n * sizeof *lx->mark);
        stamp = lx->stamp = 1;
    }
    if (add_stamp == 0) {
        memset(lx->added, 0, (size_t)lx->nfa.n * sizeof *lx->added);
        add_stamp = lx->add_stamp = 1;
    }
    while (sp) {
        uint32_t x = lx->stack[--sp], n = x >> 1, f = x & 1;
        if (lx->mark[x] == stamp) continue;
        lx->mark[x] = stamp;
        switch (v[n].kind) {
        case RX_BYTE:
            if (!f && lx->live[n] && lx->added[n] != add_stamp) lx->added[n] = add_stamp, lx->buf[n_out++] = n;
            break;
        case RX_MATCH:
            if (lx->added[n] != add_stamp) lx->added[n] = add_stamp, lx->buf[n_out++] = n;
            break;
        case RX_SPLIT:
            lx->stack[sp++] = v[n].out2 << 1 | f;
            lx->stack[sp++] = v[n].out << 1 | f;
            break;
        case RX_EPS: lx->stack[sp++] = v[n].out << 1 | f; break;
        case RX_BOL:
            if (at_start) lx->stack[sp++] = v[n].out << 1 | f;
            break;
        case RX_EOL: lx->stack[sp++] = v[n].out << 1 | 1; break;
        default: break;
        }
    }
    /* insertion sort: sets are small; fall back to qsort when not */
    if (n_out > 32) {
        qsort(lx->buf, n_out, sizeof *lx->buf, cmp_u32);
    } else {
        for (uint32_t i = 1; i < n_out; i++) {
            uint32_t x = lx->buf[i], j = i;
            while (j && lx->buf[j - 1] > x) lx->buf[j] = lx->buf[j - 1], j--;
            lx->buf[j] = x;
        }
    }
    return n_out;
}

static uint32_t hash_set(const uint32_t *s, uint32_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
    for (uint32_t k = 0; k < n; k++) h = (h ^ s[k]) * 0x100000001B3ull, h ^= h >> 29;
    return (uint32_t)(h ^ h >> 32);
}

static int table_grow(lx_lexer *lx) {
    uint32_t nc = lx->table_cap ? lx->table_cap * 2 : 1024;
    uint32_t *nt = calloc(nc, sizeof *nt);
    if (!nt) return -1;
    for (uint32_t k = 0; k < lx->table_cap; k++) {
        uint32_t id = lx->table[k];
        if (!id) continue;
        uint32_t i = st(lx, id)->hash & (nc - 1);
        while (nt[i]) i = (i + 1) & (nc - 1);
        nt[i] = id;
    }
    free(lx->table);
    lx->bytes += (size_t)(nc - lx->table_cap) * sizeof *nt;
    lx->table = nt;
    lx->table_cap = nc;
    return 0;
}

#define ARENA_BLOCK ((size_t)64 << 10)
/* bytes (a multiple of 8) from the lexer's arena, NULL out of memory (under mu) */
static void *arena_alloc(lx_lexer *lx, size_t bytes) {
    if (bytes > lx->arena_left) {
        size_t sz = bytes > ARENA_BLOCK ? bytes : ARENA_BLOCK;
        if (lx->n_arena == lx->cap_arena) {
            size_t nc = lx->cap_arena ? lx->cap_arena * 2 : 16;
            void **q = realloc(lx->arena, nc * sizeof *q);
            if (!q) return NULL;
            lx->arena = q, lx->cap_arena = nc;
        }
        char *b = malloc(sz);
        if (!b) return NULL;
        lx->arena[lx->n_arena++] = b;
        lx->arena_cur = b, lx->arena_left = sz;
    }
    void *r = lx->arena_cur;
    lx->arena_cur += bytes, lx->arena_left -= bytes;
    return r;
}

/* the state of the set in buf[0..n) (new or existing); LX_DEAD and exhausted past the bounds */
static lx_state intern(lx_lexer *lx, uint32_t n) {
    if (n == 0) return LX_DEAD;
    const uint32_t *s = lx->buf;
    uint32_t h = hash_set(s, n), mask = lx->table_cap - 1;
    uint32_t i = h & mask;
    for (; lx->table[i]; i = (i + 1) & mask) {
        const dstate *d = st(lx, lx->table[i]);
        if (d->hash == h && d->n_set == n && !memcmp(d->set, s, n * sizeof *s)) return lx->table[i];
    }
    uint32_t id = lx->n_states;
    size_t need = sizeof(dstate) + ((size_t)4 << lx->shift) + (size_t)n * 4 + (size_t)lx->n_words * 8;
    if (lx->exhausted || id >= lx->max_states || lx->bytes + need > LX_MAX_DFA_BYTES) {
        lx->exhausted = 1;
        return LX_DEAD;
    }
    if (!lx->chunks[id >> CHUNK_BITS]) {
        lx->chunks[id >> CHUNK_BITS] = calloc(1u << CHUNK_BITS, sizeof(dstate));
        if (!lx->chunks[id >> CHUNK_BITS]) goto oom;
        lx->bytes += (1u << CHUNK_BITS) * sizeof(dstate);
    }
    dstate *d = st(lx, id);
    d->set = arena_alloc(lx, ((size_t)n * sizeof *d->set + 7) & ~(size_t)7);
    if (!d->set) goto oom_d;
    /* (entries past n_classes are never read) */
    memset(lx->rows + ((size_t)id << lx->shift), 0xFF, (size_t)4 * (size_t)lx->n_classes);
    memcpy(d->set, s, (size_t)n * sizeof *s);
    d->n_set = n;
    d->hash = h;
    d->acc = NULL;
    d->can_cont = 0;
    d->uni_known = 0;
    d->umb = -1;
    uint64_t *acc = NULL;
    for (uint32_t k = 0; k < n; k++) {
        const rx_node *x = &lx->nfa.v[s[k]];
        if (x->kind == RX_BYTE) {
            d->can_cont = 1;
        } else if (x->kind == RX_MATCH) {
            if (!acc) {
                if (!(acc = arena_alloc(lx, (size_t)lx->n_words * sizeof *acc))) goto oom_d;
                memset(acc, 0, (size_t)lx->n_words * sizeof *acc);
            }
            acc[x->out >> 6] |= 1ull << (x->out & 63);
        }
    }
    d->acc = acc;
    lx->bytes += need;
    lx->table[i] = id;
    __atomic_store_n(&lx->n_states, id + 1, __ATOMIC_RELEASE);
    if ((size_t)(id + 1) * 2 > lx->table_cap && table_grow(lx)) lx->exhausted = 1;
    return id;
oom_d: /* (what the arena gave stays there until lx_free) */
    memset(d, 0, sizeof *d);
oom:
    lx->exhausted = 1;
    return LX_DEAD;
}

/* ---- transition-row mappings kept between lexers ----
 * Each new DFA state writes a fresh row, and on a fresh mapping every few rows is a page fault:
 * about a tenth of the time of a walk that meets many new states (the first visit of an object's
 * key position). A lexer's mapping, once freed, is kept for the next lexer of the same row size (a
 * grammar compiled after another): its pages are already there, and intern() overwrites a row
 * before any use, so only the dead state's row (all zeros) is cleared again. At most ROWS_POOL
 * mappings are kept, each with at most ROWS_KEEP bytes resident (the rest given back). */
#define ROWS_POOL 2
#define ROWS_KEEP ((size_t)16 << 20)
static pthread_mutex_t rows_pool_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    uint32_t *rows;
    size_t bytes, used;
} rows_pool[ROWS_POOL]; /* the last freed last */
static int rows_pool_n;

static uint32_t *rows_get(size_t bytes, size_t *used) {
    pthread_mutex_lock(&rows_pool_mu);
    for (int k = rows_pool_n - 1; k >= 0; k--)
        if (rows_pool[k].bytes == bytes) {
            uint32_t *r = rows_pool[k].rows;
            *used = rows_pool[k].used;
            memmove(&rows_pool[k], &rows_pool[k + 1], (size_t)(rows_pool_n - k - 1) * sizeof rows_pool[0]);
            rows_pool_n--;
            pthread_mutex_unlock(&rows_pool_mu);
            return r;
        }
    pthread_mutex_unlock(&rows_pool_mu);
    *used = 0;
    void *r = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return r == MAP_FAILED ? NULL : r;
}

static void rows_put(uint32_t *rows, size_t bytes, size_t used) {
    if (used > ROWS_KEEP) {
        (void)madvise((char *)rows + ROWS_KEEP, used - ROWS_KEEP, MADV_DONTNEED);
        used = ROWS_KEEP;
    }
    uint32_t *drop = NULL;
    size_t drop_bytes = 0;
    pthread_mutex_lock(&rows_pool_mu);
    if (rows_pool_n == ROWS_POOL) { /* the oldest goes */
        drop = rows_pool[0].rows, drop_bytes = rows_pool[0].bytes;
        memmove(&rows_pool[0], &rows_pool[1], (ROWS_POOL - 1) * sizeof rows_pool[0]);
        rows_pool_n--;
    }
    rows_pool[rows_pool_n].rows = rows, rows_pool[rows_pool_n].bytes = bytes, rows_pool[rows_pool_n].used = used;
    rows_pool_n++;
    pthread_mutex_unlock(&rows_pool_mu);
    if (drop) munmap(drop, drop_bytes);
}

/* ---- public ---- */

int lx_check_pattern(const char *pattern, size_t n, char *err, size_t cap) { return rx_check(pattern, n, err, cap); }

struct lx_pattern {
    rx_nfa nfa; /* the pattern alone, its MATCH naming terminal 0 */
    uint32_t start;
};

lx_pattern *lx_pattern_new(const char *pattern, size_t n, char *err, size_t cap) {
    lx_pattern *p = calloc(1, sizeof *p);
    if (!p) {
        if (err && cap) snprintf(err, cap, "out of memory");
        return NULL;
    }
    p->nfa.limit = LX_MAX_NFA_STATES;
    if (rx_compile(&p->nfa, pattern, n, 0, 0, &p->start, err, cap)) {
        lx_pattern_free(p);
        return NULL;
    }
    return p;
}

void lx_pattern_free(lx_pattern *p) {
    if (!p) return;
    rx_nfa_free(&p->nfa);
    free(p);
}

lx_lexer *lx_new(int n, const char *const *patterns, const size_t *lens, const uint8_t *is_literal, char *err,
                 size_t cap) {
    return lx_new_pre(n, patterns, lens, is_literal, NULL, err, cap);
}

lx_lexer *lx_new_pre(int n, const char *const *patterns, const size_t *lens, const uint8_t *is_literal,
                     const lx_pattern *const *pre, char *err, size_t cap) {
    if (err && cap) err[0] = 0;
    if (n < 0 || (n > 0 && (!patterns || !lens))) {
        if (err && cap) snprintf(err, cap, "lx_new: bad arguments");
        return NULL;
    }
    lx_lexer *lx = calloc(1, sizeof *lx);
    if (!lx) goto oom;
    lx->n_terms = n;
    lx->n_words = (n + 63) / 64 ? (n + 63) / 64 : 1;
    lx->nfa.limit = LX_MAX_NFA_STATES;
    lx->term_start = malloc(((size_t)n + 1) * sizeof *lx->term_start);
    if (!lx->term_start) goto oom;
    char e[200];
    for (int t = 0; t < n; t++) {
        int rc = pre && pre[t] ? rx_append(&lx->nfa, &pre[t]->nfa, pre[t]->start, (uint32_t)t, &lx->term_start[t], e,
                                           sizeof e)
                               : rx_compile(&lx->nfa, patterns[t], lens[t], is_literal && is_literal[t], (uint32_t)t,
                                            &lx->term_start[t], e, sizeof e);
        if (rc) {
            if (err && cap) snprintf(err, cap, "terminal %d: %s", t, e);
            lx_free(lx);
            return NULL;
        }
    }
    if (compute_live(lx)) goto oom;
    compute_classes(lx);
    uint32_t N = lx->nfa.n;
    lx->chunks = calloc((LX_MAX_DFA_STATES >> CHUNK_BITS) + 1, sizeof *lx->chunks);
    lx->stack = malloc((5 * (size_t)N + (size_t)n + 16) * sizeof *lx->stack);
    lx->mark = calloc(2 * (size_t)N + 2, sizeof *lx->mark);
    lx->added = calloc((size_t)N + 1, sizeof *lx->added);
    lx->buf = malloc(((size_t)N + 1) * sizeof *lx->buf);
    lx->start_keys = malloc((size_t)START_CACHE_MAX * 2 * (size_t)lx->n_words * sizeof *lx->start_keys);
    lx->start_state = malloc((size_t)START_CACHE_MAX * 2 * sizeof *lx->start_state);
    lx->start_used = calloc((size_t)START_CACHE_MAX * 2, 1);
    while ((1 << lx->shift) < lx->n_classes) lx->shift++;
    lx->max_states = LX_MAX_DFA_STATES;
    if (((size_t)lx->max_states << lx->shift) * 4 > LX_MAX_DFA_BYTES)
        lx->max_states = (uint32_t)(LX_MAX_DFA_BYTES / ((size_t)4 << lx->shift));
    lx->rows_bytes = ((size_t)lx->max_states << lx->shift) * 4;
    size_t used = 0;
    lx->rows = rows_get(lx->rows_bytes, &used);
    if (lx->rows && used) memset(lx->rows, 0, (size_t)4 << lx->shift); /* the dead state's row */
    if (!lx->rows || !lx->chunks || !lx->stack || !lx->mark || !lx->added || !lx->buf || !lx->start_keys || !lx->start_state ||
        !lx->start_used || table_grow(lx))
        goto oom;
    pthread_mutex_init(&lx->mu, NULL);
    pthread_mutex_init(&lx->eq_mu, NULL);
    /* state 0: dead, its row all zeros (fresh or cleared above) */
    lx->chunks[0] = calloc(1u << CHUNK_BITS, sizeof(dstate));
    if (!lx->chunks[0]) goto oom;
    lx->n_states = 1;
    lx->bytes = (size_t)N * (sizeof(rx_node) + 4 * 8) + (1u << CHUNK_BITS) * sizeof(dstate);
    return lx;
oom:
    if (err && cap) snprintf(err, cap, "out of memory building the lexer");
    lx_free(lx);
    return NULL;
}

void lx_free(lx_lexer *lx) {
    if (!lx) return;
    if (lx->chunks) {
        for (uint32_t c = 0; c <= (LX_MAX_DFA_STATES >> CHUNK_BITS); c++) free(lx->chunks[c]);
        free(lx->chunks);
        pthread_mutex_destroy(&lx->mu);
        pthread_mutex_destroy(&lx->eq_mu);
    }
    for (size_t k = 0; k < lx->n_arena; k++) free(lx->arena[k]);
    free(lx->arena);
    free(lx->crow), free(lx->cpool), free(lx->parts);
    if (lx->rows) rows_put(lx->rows, lx->rows_bytes, ((size_t)lx->n_states << lx->shift) * 4);
    rx_nfa_free(&lx->nfa);
    free(lx->term_start);
    free(lx->live);
    free(lx->table);
    free(lx->start_keys);
    free(lx->start_state);
    free(lx->start_used);
    free(lx->stack);
    free(lx->mark);
    free(lx->added);
    free(lx->buf);
    free(lx->seeds);
    free(lx);
}

int lx_n_terminals(const lx_lexer *lx) { return lx ? lx->n_terms : 0; }

void lx_set_fill_reference(lx_lexer *lx, int on) { lx->fill_reference = on != 0; }

int lx_exhausted(const lx_lexer *lx) { return __atomic_load_n(&lx->exhausted, __ATOMIC_RELAXED); }

lx_state lx_start(lx_lexer *lx, const uint64_t *allowed) {
    int W = lx->n_words;
    uint64_t key[W];
    for (int w = 0; w < W; w++) key[w] = allowed ? allowed[w] : 0;
    if (lx->n_terms % 64 && W > 0) key[W - 1] &= (1ull << (lx->n_terms % 64)) - 1;
    if (lx->n_terms == 0) key[0] = 0;
    uint64_t h = 0xcbf29ce484222325ull;
    for (int w = 0; w < W; w++) h = (h ^ key[w]) * 0x100000001B3ull, h ^= h >> 31;
    const uint32_t cap = START_CACHE_MAX * 2, mask = cap - 1;
    pthread_mutex_lock(&lx->mu);
    uint32_t i = (uint32_t)h & mask;
    for (; lx->start_used[i]; i = (i + 1) & mask)
        if (!memcmp(lx->start_keys + (size_t)i * W, key, (size_t)W * 8)) {
            lx_state s = lx->start_state[i];
            pthread_mutex_unlock(&lx->mu);
            return s;
        }
    uint32_t sp = 0;
    for (int t = 0; t < lx->n_terms; t++)
        if (key[t >> 6] >> (t & 63) & 1) lx->stack[sp++] = lx->term_start[t] << 1;
    lx_state s = intern(lx, closure(lx, sp, 1));
    if (!lx->exhausted || s != LX_DEAD) {
        if (lx->start_n >= START_CACHE_MAX) { /* flush the cache (states stay) */
            memset(lx->start_used, 0, cap);
            lx->start_n = 0;
            i = (uint32_t)h & mask;
        }
        memcpy(lx->start_keys + (size_t)i * W, key, (size_t)W * 8);
        lx->start_state[i] = s;
        lx->start_used[i] = 1;
        lx->start_n++;
    }
    pthread_mutex_unlock(&lx->mu);
    return s;
}

/* Fills every unknown entry of s's row (under mu). Classes whose bytes take the same NFA edges
 * from s (the same seeds) share one closure: a state usually has a few distinct successors among
 * many classes (e.g. every plain character of a string). The seeds are gathered in one pass over
 * s's nodes, each BYTE node adding its target to the classes of its range (contiguous, as classes
 * are byte intervals), and equal seed lists are found through a small hash table: the first visit
 * of a new state (e.g. a property-name prefix at an object key) is mostly this, and a per-class scan
 * of every node and a comparison against every earlier class cost n_classes * (|set| + n_classes).
 * lx->fill_reference keeps that older form (tests compare the two: same states in the same order). */
static void fill_row_reference(lx_lexer *lx, lx_state s, uint32_t *row);

static void fill_row(lx_lexer *lx, lx_state s) {
    const dstate *d = st(lx, s);
    uint32_t *row = lx->rows + ((size_t)s << lx->shift);
    int nc = lx->n_classes;
    size_t need = (size_t)nc * d->n_set + 1;
    if (lx->fill_reference || need > lx->seeds_cap) {
        uint32_t *q = lx->fill_reference ? NULL : realloc(lx->seeds, need * sizeof *q);
        if (!q) {
            fill_row_reference(lx, s, row);
            return;
        }
        lx->seeds = q;
        lx->seeds_cap = need;
    }
    /* Segments: runs of classes that no node's range starts or ends within (each BYTE node covers a
     * run of classes, as classes are byte intervals) take the same edges, so their seeds are
     * gathered once per segment, not once per class. */
    uint8_t cut[257];
    memset(cut, 0, (size_t)nc + 1);
    cut[0] = 1;
    for (uint32_t k = 0; k < d->n_set; k++) {
        const rx_node *x = &lx->nfa.v[d->set[k]];
        if (x->kind != RX_BYTE) continue;
        cut[lx->cls[x->lo]] = 1;
        cut[lx->cls[x->hi] + 1] = 1;
    }
    /* each segment's seeds, gathered node by node over the segments of its range (in the order of
     * s's nodes, as the reference form gathers them) */
    uint8_t seg_of[256];
    int n_sg = 0, sg_lo[257];
    for (int c = 0; c < nc; c++) {
        if (cut[c]) sg_lo[n_sg++] = c;
        seg_of[c] = (uint8_t)(n_sg - 1);
    }
    sg_lo[n_sg] = nc;
    uint32_t *seeds = lx->seeds, stride = d->n_set, len[256];
    uint64_t h64[256];
    for (int g = 0; g < n_sg; g++) len[g] = 0, h64[g] = 0x9E3779B97F4A7C15ull;
    for (uint32_t k = 0; k < d->n_set; k++) {
        const rx_node *x = &lx->nfa.v[d->set[k]];
        if (x->kind != RX_BYTE) continue;
        for (int g = seg_of[lx->cls[x->lo]], ge = seg_of[lx->cls[x->hi]]; g <= ge; g++)
            seeds[(size_t)g * stride + len[g]++] = x->out, h64[g] = (h64[g] ^ x->out) * 0x100000001B3ull;
    }
    /* open addressing over the segments' seed lists: slot -> index + 1 of the first segment with
     * that list */
    uint16_t slot[512];
    int tbits = 5;
    while ((1 << tbits) < 2 * n_sg) tbits++;
    const uint32_t tmask = (1u << tbits) - 1;
    memset(slot, 0, ((size_t)1 << tbits) * sizeof *slot);
    lx_state tgt[256];
    for (int g = 0; g < n_sg; g++) {
        int c0 = sg_lo[g], c1 = sg_lo[g + 1], want = 0;
        for (int c = c0; c < c1 && !want; c++) want = row[c] == LX_UNKNOWN;
        tgt[g] = LX_UNKNOWN;
        if (!want) continue;
        const uint32_t *sc = seeds + (size_t)g * stride;
        uint32_t hc = (uint32_t)(h64[g] ^ h64[g] >> 32), j = (hc * 0x9E3779B1u) >> (32 - tbits);
        lx_state t = LX_UNKNOWN;
        for (; slot[j]; j = (j + 1) & tmask) {
            int e = slot[j] - 1;
            if (len[e] == len[g] && !memcmp(seeds + (size_t)e * stride, sc, (size_t)len[g] * sizeof *sc)) {
                t = tgt[e];
                break;
            }
        }
        if (!slot[j]) {
            for (uint32_t k = 0; k < len[g]; k++) lx->stack[k] = sc[k] << 1;
            t = intern(lx, closure(lx, len[g], 0));
            if (t == LX_DEAD && lx->exhausted) t = LX_UNKNOWN; /* (left unknown: past the bounds) */
            slot[j] = (uint16_t)(g + 1);
        }
        tgt[g] = t;
        if (t == LX_UNKNOWN) continue;
        for (int c = c0; c < c1; c++)
            if (row[c] == LX_UNKNOWN) __atomic_store_n(&row[c], t, __ATOMIC_RELEASE);
    }
}

/* The per-class form: each class scans every node of s (also the fallback without scratch memory). */
static void fill_row_reference(lx_lexer *lx, lx_state s, uint32_t *row) {
    const dstate *d = st(lx, s);
    int nc = lx->n_classes;
    for (int c = 0; c < nc; c++) {
        if (row[c] != LX_UNKNOWN) continue;
        uint32_t sp = 0;
        uint8_t b = lx->cls_rep[c];
        for (uint32_t k = 0; k < d->n_set; k++) {
            const rx_node *x = &lx->nfa.v[d->set[k]];
            if (x->kind == RX_BYTE && x->lo <= b && b <= x->hi) lx->stack[sp++] = x->out << 1;
        }
        lx_state t = intern(lx, closure(lx, sp, 0));
        if (t != LX_DEAD || !lx->exhausted) __atomic_store_n(&row[c], t, __ATOMIC_RELEASE);
    }
}

static lx_state next_slow(lx_lexer *lx, lx_state s, uint8_t byte) {
    pthread_mutex_lock(&lx->mu);
    uint32_t *row = lx->rows + ((size_t)s << lx->shift);
    uint32_t c = lx->cls[byte];
    if (row[c] == LX_UNKNOWN) fill_row(lx, s);
    uint32_t t = row[c];
    pthread_mutex_unlock(&lx->mu);
    return t == LX_UNKNOWN ? LX_DEAD : t;
}

lx_state lx_next(lx_lexer *lx, lx_state s, uint8_t byte) {
    if (s >= __atomic_load_n(&lx->n_states, __ATOMIC_ACQUIRE)) return LX_DEAD;
    uint32_t t = __atomic_load_n(&lx->rows[((size_t)s << lx->shift) | lx->cls[byte]], __ATOMIC_ACQUIRE);
    if (__builtin_expect(t != LX_UNKNOWN, 1)) return t;
    return next_slow(lx, s, byte);
}

const uint64_t *lx_accepting(lx_lexer *lx, lx_state s) {
    if (s == LX_DEAD || s >= __atomic_load_n(&lx->n_states, __ATOMIC_ACQUIRE)) return NULL;
    return st(lx, s)->acc;
}

int lx_can_continue(lx_lexer *lx, lx_state s) {
    if (s == LX_DEAD || s >= __atomic_load_n(&lx->n_states, __ATOMIC_ACQUIRE)) return 0;
    return st(lx, s)->can_cont;
}

void lx_get_table(const lx_lexer *lx, lx_table *t) {
    t->rows = lx->rows;
    t->cls = lx->cls;
    t->cls_rep = lx->cls_rep;
    t->n_classes = lx->n_classes;
    t->shift = (unsigned)lx->shift;
}

lx_state lx_uniform(lx_lexer *lx, lx_state s, uint64_t out[4]) {
    lx_state to[256], best = LX_DEAD;
    int cnt[256], most = 0;
    out[0] = out[1] = out[2] = out[3] = 0;
    if (s == LX_DEAD || s >= __atomic_load_n(&lx->n_states, __ATOMIC_ACQUIRE)) return LX_DEAD;
    dstate *d = st(lx, s);
    if (__atomic_load_n(&d->uni_known, __ATOMIC_ACQUIRE)) {
        memcpy(out, d->uset, sizeof d->uset);
        return d->uto;
    }
    /* classes with the same target pool their bytes (a small table by target; the first class,
     * in byte order, of the targets with the most bytes wins) */
    lx_state hk[512];
    int hv[512], slot[256];
    memset(hk, 0, sizeof hk);
    for (int c = 0; c < lx->n_classes; c++) {
        to[c] = lx_next(lx, s, lx->cls_rep[c]);
        cnt[c] = (c + 1 < lx->n_classes ? lx->cls_rep[c + 1] : 256) - lx->cls_rep[c];
        slot[c] = -1;
        if (to[c] == LX_DEAD) continue;
        unsigned j = (to[c] * 0x9E3779B9u) >> 23;
        while (hk[j] != LX_DEAD && hk[j] != to[c]) j = (j + 1) & 511;
        if (hk[j] == LX_DEAD) hk[j] = to[c], hv[j] = 0;
        hv[j] += cnt[c];
        slot[c] = (int)j;
    }
    for (int c = 0; c < lx->n_classes; c++)
        if (slot[c] >= 0 && hv[slot[c]] > most) most = hv[slot[c]], best = to[c];
    if (best != LX_DEAD) /* (a class's bytes are the interval [cls_rep[c], cls_rep[c] + cnt[c])) */
        for (int c = 0; c < lx->n_classes; c++)
            for (int b = lx->cls_rep[c], e = b + cnt[c]; to[c] == best && b < e;) {
                int w = b >> 6, hi = e < (w + 1) * 64 ? e : (w + 1) * 64, nb = hi - b;
                out[w] |= (nb == 64 ? ~0ull : ((1ull << nb) - 1)) << (b & 63);
                b = hi;
            }
    if (!lx_exhausted(lx)) { /* (past the bounds a dead entry may mean "not built": not kept) */
        pthread_mutex_lock(&lx->mu);
        if (!d->uni_known) {
            memcpy(d->uset, out, sizeof d->uset);
            d->uto = best;
            __atomic_store_n(&d->uni_known, 1, __ATOMIC_RELEASE);
        }
        pthread_mutex_unlock(&lx->mu);
    }
    return best;
}

/* 1 if every well-formed non-ASCII UTF-8 character leads x to `to` with every byte of it alive
 * (inside free text such as a JSON string's): the states reached after each byte range of RFC
 * 3629's table are followed as a set, which stays tiny for such states. One byte per byte class of
 * a range is enough (a class's bytes share every transition): a range such as 0x80-0xBF is usually
 * one class, and byte by byte it was ~1,000 transitions a state. */
static int utf8_to(lx_lexer *lx, lx_state x, lx_state to) {
    static const uint8_t rows[8][4][2] = {
        {{0xC2, 0xDF}, {0x80, 0xBF}},
        {{0xE0, 0xE0}, {0xA0, 0xBF}, {0x80, 0xBF}},
        {{0xE1, 0xEC}, {0x80, 0xBF}, {0x80, 0xBF}},
        {{0xED, 0xED}, {0x80, 0x9F}, {0x80, 0xBF}},
        {{0xEE, 0xEF}, {0x80, 0xBF}, {0x80, 0xBF}},
        {{0xF0, 0xF0}, {0x90, 0xBF}, {0x80, 0xBF}, {0x80, 0xBF}},
        {{0xF1, 0xF3}, {0x80, 0xBF}, {0x80, 0xBF}, {0x80, 0xBF}},
        {{0xF4, 0xF4}, {0x80, 0x8F}, {0x80, 0xBF}, {0x80, 0xBF}},
    };
    enum { MAXSET = 8 };
    for (int r = 0; r < 8; r++) {
        lx_state cur[MAXSET], nxt[MAXSET];
        int nc = 1;
        cur[0] = x;
        for (int k = 0; k < 4 && rows[r][k][0]; k++) {
            int nn = 0;
            for (int i = 0; i < nc; i++)
                for (int b = rows[r][k][0]; b <= rows[r][k][1]; b++) {
                    if (b > rows[r][k][0] && lx->cls[b] == lx->cls[b - 1]) continue;
                    lx_state y = lx_next(lx, cur[i], (uint8_t)b);
                    if (y == LX_DEAD) return 0;
                    int seen = 0;
                    for (int j = 0; j < nn && !seen; j++) seen = nxt[j] == y;
                    if (seen) continue;
                    if (nn == MAXSET) return 0;
                    nxt[nn++] = y;
                }
            memcpy(cur, nxt, (size_t)nn * sizeof *cur);
            nc = nn;
        }
        if (nc != 1 || cur[0] != to) return 0;
    }
    return 1;
}

int lx_uniform_mb(lx_lexer *lx, lx_state s) {
    if (s == LX_DEAD || s >= __atomic_load_n(&lx->n_states, __ATOMIC_ACQUIRE)) return 0;
    dstate *d = st(lx, s);
    int8_t mb = __atomic_load_n(&d->umb, __ATOMIC_ACQUIRE);
    if (mb >= 0) return mb;
    uint64_t set[4];
    lx_state to = lx_uniform(lx, s, set);
    mb = to != LX_DEAD && utf8_to(lx, s, to);
    if (!lx_exhausted(lx)) __atomic_store_n(&d->umb, mb, __ATOMIC_RELEASE);
    return mb;
}

static int acc_equal(lx_lexer *lx, lx_state a, lx_state b) {
    const uint64_t *x = lx_accepting(lx, a), *y = lx_accepting(lx, b);
    if (!x || !y) return x == y;
    return x == y || !memcmp(x, y, (size_t)lx->n_words * sizeof *x);
}

#define EQ_NO_PART UINT32_MAX
#define EQ_MAX_GROUPS 64
#define EQ_MAX_PARTS 1024

/* The offset of state x's grouped row in cpool (computed once; eq_mu held); SIZE_MAX out of memory. */
static size_t crow_of(lx_lexer *lx, lx_state x) {
    if (x < lx->crow_cap && lx->crow[x]) return lx->crow[x] - 1;
    if (x >= lx->crow_cap) {
        size_t nc = lx->crow_cap ? lx->crow_cap : 1024;
        while (nc <= x) nc *= 2;
        uint32_t *t = realloc(lx->crow, nc * sizeof *t);
        if (!t) return SIZE_MAX;
        memset(t + lx->crow_cap, 0, (nc - lx->crow_cap) * sizeof *t);
        lx->crow = t, lx->crow_cap = nc;
    }
    int nc = lx->n_classes;
    uint8_t gv[256];
    uint32_t succ[EQ_MAX_GROUPS];
    uint32_t ng = 0, part = 0;
    for (int c = 0; c < nc && part != EQ_NO_PART; c++) {
        lx_state y = lx_next(lx, x, lx->cls_rep[c]);
        uint32_t g = 0;
        while (g < ng && succ[g] != y) g++;
        if (g == ng) {
            if (ng == EQ_MAX_GROUPS) part = EQ_NO_PART;
            else succ[ng++] = y;
        }
        gv[c] = (uint8_t)g;
    }
    if (part != EQ_NO_PART) {
        while (part < lx->n_parts && memcmp(lx->parts + (size_t)part * nc, gv, (size_t)nc)) part++;
        if (part == lx->n_parts) {
            if (lx->n_parts == EQ_MAX_PARTS) part = EQ_NO_PART;
            else {
                if (lx->n_parts == lx->parts_cap) {
                    uint32_t pc = lx->parts_cap ? lx->parts_cap * 2 : 16;
                    uint8_t *t = realloc(lx->parts, (size_t)pc * nc);
                    if (!t) return SIZE_MAX;
                    lx->parts = t, lx->parts_cap = pc;
                }
                memcpy(lx->parts + (size_t)part * nc, gv, (size_t)nc);
                lx->n_parts++;
            }
        }
    }
    if (part == EQ_NO_PART) ng = 0;
    if (lx->cpool_n + 2 + ng > lx->cpool_cap || lx->cpool_n + 2 + ng >= UINT32_MAX) {
        size_t pc = lx->cpool_cap ? lx->cpool_cap * 2 : 4096;
        while (pc < lx->cpool_n + 2 + ng) pc *= 2;
        uint32_t *t = pc < UINT32_MAX ? realloc(lx->cpool, pc * sizeof *t) : NULL;
        if (!t) return SIZE_MAX;
        lx->cpool = t, lx->cpool_cap = pc;
    }
    size_t off = lx->cpool_n;
    lx->cpool[off] = part;
    lx->cpool[off + 1] = ng;
    memcpy(lx->cpool + off + 2, succ, ng * sizeof *succ);
    lx->cpool_n += 2 + ng;
    lx->crow[x] = (uint32_t)off + 1;
    return off;
}

typedef struct {
    uint64_t *set, *q;
    size_t cap;
    uint32_t n_set, qn, qcap, max_pairs;
} eq_ctx;

/* One pair of successors: 0 fine (equal, known, or queued), -1 told apart / over budget / OOM. */
static int eq_pair(lx_lexer *lx, eq_ctx *e, lx_state x2, lx_state y2) {
    if (x2 == y2) return 0;
    if (x2 == LX_DEAD || y2 == LX_DEAD || !acc_equal(lx, x2, y2)) return -1;
    uint64_t key = (uint64_t)x2 << 32 | y2;
    size_t j = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 40) & (e->cap - 1);
    while (e->set[j] && e->set[j] != key) j = (j + 1) & (e->cap - 1);
    if (e->set[j]) return 0;
    if (++e->n_set > e->max_pairs) return -1;
    e->set[j] = key;
    if (e->qn == e->qcap) {
        uint64_t *nq = realloc(e->q, (size_t)e->qcap * 2 * sizeof *nq);
        if (!nq) return -1;
        e->q = nq, e->qcap *= 2;
    }
    e->q[e->qn++] = key;
    if ((size_t)e->n_set * 2 > e->cap) { /* grow the set */
        size_t nc = e->cap * 2;
        uint64_t *ns = calloc(nc, sizeof *ns);
        if (!ns) return -1;
        for (size_t i = 0; i < e->cap; i++)
            if (e->set[i]) {
                size_t jj = (size_t)((e->set[i] * 0x9E3779B97F4A7C15ull) >> 40) & (nc - 1);
                while (ns[jj]) jj = (jj + 1) & (nc - 1);
                ns[jj] = e->set[i];
            }
        free(e->set);
        e->set = ns, e->cap = nc;
    }
    return 0;
}

int lx_equiv(lx_lexer *lx, lx_state a, lx_state b, int depth, const uint64_t (*bytes)[4], uint32_t max_pairs) {
    if (a == b) return 1;
    if (a == LX_DEAD || b == LX_DEAD || !acc_equal(lx, a, b)) return 0;
    /* pairs as (x << 32 | y), never 0 (x != LX_DEAD); set: open addressing; q: levels in order */
    eq_ctx e = {calloc(256, sizeof(uint64_t)), malloc(64 * sizeof(uint64_t)), 256, 0, 0, 64, max_pairs};
    int ok = e.set && e.q;
    if (ok) e.q[e.qn++] = (uint64_t)a << 32 | b;
    uint8_t cl[256];
    int ncl = 0;
    pthread_mutex_lock(&lx->eq_mu);
    for (int d = 0, lo = 0; ok && d < depth && lo < (int)e.qn; d++) {
        uint32_t hi = e.qn;
        /* the classes of the bytes that may come next (a pair first met at a shallower level was
         * expanded there with at least these) */
        if (d > 0 && !memcmp(bytes[d + 1], bytes[d], sizeof bytes[d])) goto same_classes;
        ncl = 0;
        for (int c = 0; c < lx->n_classes; c++) {
            int any = 0;
            for (int b = lx->cls_rep[c]; b < 256 && lx->cls[b] == c && !any; b++) any = bytes[d + 1][b >> 6] >> (b & 63) & 1;
            if (any) cl[ncl++] = (uint8_t)c;
        }
    same_classes:
        for (uint32_t k = (uint32_t)lo; ok && k < hi; k++) {
            lx_state x = (lx_state)(e.q[k] >> 32), y = (lx_state)e.q[k];
            size_t ox = crow_of(lx, x), oy = crow_of(lx, y);
            if (ox == SIZE_MAX || oy == SIZE_MAX) {
                ok = 0;
                break;
            }
            const uint32_t *cx = lx->cpool + ox, *cy = lx->cpool + oy;
            if (cx[0] != EQ_NO_PART && cx[0] == cy[0]) { /* same grouping: group by group */
                const uint8_t *gv = lx->parts + (size_t)cx[0] * lx->n_classes;
                uint64_t done = 0;
                for (int i = 0; i < ncl && ok; i++) {
                    uint32_t g = gv[cl[i]];
                    if (done >> g & 1) continue;
                    done |= 1ull << g;
                    ok = eq_pair(lx, &e, cx[2 + g], cy[2 + g]) == 0;
                }
            } else {
                for (int i = 0; i < ncl && ok; i++)
                    ok = eq_pair(lx, &e, lx_next(lx, x, lx->cls_rep[cl[i]]), lx_next(lx, y, lx->cls_rep[cl[i]])) == 0;
            }
        }
        lo = (int)hi;
    }
    pthread_mutex_unlock(&lx->eq_mu);
    free(e.set), free(e.q);
    return ok && !lx_exhausted(lx);
}
