/* The constrained-decoding matcher (matcher.h): the vocabulary as a token trie, a grammar compiled
 * into an Earley grammar plus a lexer, and per-sequence matchers.
 *
 * Lexing semantics: maximal munch restricted by the parser. A lexeme starts with the terminals the
 * parser allows at that point (plus the skip pattern, unless the previous lexeme was skipped text);
 * it grows while some of those terminals can still match a longer text; at a byte that no allowed
 * terminal can take, the lexeme so far must be accepted by one of them (the parser scans every
 * terminal that accepts it, so two terminals with the same text are not an error; a grammar
 * terminal wins over the skip pattern) and the byte starts the next lexeme. Terminals that match
 * only the empty text never produce a lexeme. Skipped text may also come first and last.
 *
 * A matcher keeps one configuration per byte consumed (lexer state, parser depth, flags) and the
 * Earley parser's stack of sets, so rollback is a truncation of both. The mask is a depth-first
 * walk over the token trie: each trie edge is one byte step from the parent's configuration;
 * a subtree is skipped as soon as its byte is refused. Parser sets pushed under one branch are
 * dropped by truncation when the walk moves to a sibling (a sibling ending the same lexeme reuses
 * the set). The context-independent part is cached per matcher and lexer state: the tokens that
 * stay inside the current lexeme, and the trie nodes where a lexeme would end; only those
 * subtrees consult the parser on later masks from the same lexer state. Counting states (maxLength
 * strings: a new lexer state at every character) compose that walk from the vocabulary's index of
 * tokens by character count and walk only the trie's exits from the counted text (count_walk). */
#include "grammar/matcher.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/earley.h"
#include "grammar/grammar_impl.h"
#include "grammar/lexer.h"
#include "grammar/vocab_impl.h"
#include "grammar/vwalk_cache.h"

/* ---- compiled grammar ---- */

/* What the trie walk gives from one lexer state while no lexeme ends: tokens wholly inside the
 * current lexeme (depend on the lexer state alone), and the trie nodes where a lexeme would end
 * (with the lexer state before them), which the parser must decide. */
typedef struct {
    uint32_t key; /* ls * 2 + fresh */
    uint32_t *mask;
    int32_t count;
    int *bnode;
    lx_state *bls;
    int n_b, cap_b;
} gm_lexcache;

#define GM_RECENT 4             /* representatives tried for a lexer state not seen yet */
#define GM_EQUIV_PAIRS 8192     /* the most state pairs explored by one lx_equiv */
/* Smaller vocabularies walk fast enough that the checks cost more than they save (SmolLM2's 49k
 * tokens: TBM sum +5-10%; Qwen3's 151k: -5-20%, whole corpus, old and new builds alternated) */
#define GM_EQUIV_MIN_TOKENS 100000
#define GR_LEXCACHE_MAX_BYTES ((size_t)64 << 20) /* per compiled grammar; past it, entries are per mask */

static void lexcache_free(gm_lexcache *e) {
    if (!e) return;
    free(e->mask);
    free(e->bnode);
    free(e->bls);
    free(e);
}


/* ---- walks shared across grammars (the vocabulary's cache: vwalk_cache.h) ---- */
#define GM_NOCANON_BITS 8

/* This grammar's walk from a shared one (lexer states through cn); NULL out of memory. */
static gm_lexcache *lc_from_vwalk(const gm_vwalk *w, const gm_canon *cn, uint32_t key, size_t words) {
    gm_lexcache *e = calloc(1, sizeof *e);
    if (!e || !(e->mask = malloc((words + 1) * sizeof *e->mask)) ||
        (w->n_b && (!(e->bnode = malloc((size_t)w->n_b * sizeof *e->bnode)) ||
                    !(e->bls = malloc((size_t)w->n_b * sizeof *e->bls))))) {
        lexcache_free(e);
        return NULL;
    }
    memcpy(e->mask, w->mask, words * sizeof *e->mask);
    e->mask[words] = 0;
    e->key = key;
    e->count = w->count;
    e->n_b = e->cap_b = w->n_b;
    if (w->n_b) memcpy(e->bnode, w->bnode, (size_t)w->n_b * sizeof *e->bnode);
    for (int b = 0; b < w->n_b; b++) e->bls[b] = cn->st[w->bidx[b]];
    return e;
}

struct gr_compiled {
    const gr_vocab *v; /* borrowed: the vocabulary outlives every grammar compiled for it */
    ey_grammar *eg;
    lx_lexer *lx;
    int n_terms, words, has_skip;
    /* shared cache of lexer-only walks: open addressing by key, entries immutable once in */
    pthread_mutex_t lc_lock;
    gm_lexcache **lc_tab;
    size_t lc_cap, lc_n, lc_bytes;
    /* lexer states whose walk is another's (lx_equiv within the trie's depth, e.g. the counting
     * states of a long maxLength string): key -> that entry's key, open addressing, 0 = free
     * (keys of LX_DEAD are never aliased); the last keys published, tried as representatives */
    uint64_t *al_tab; /* key << 32 | rep key */
    size_t al_cap, al_n;
    uint32_t recent[GM_RECENT];
    unsigned n_recent;
};

void gr_compiled_free(gr_compiled *c) {
    if (!c) return;
    for (size_t k = 0; k < c->lc_cap; k++) lexcache_free(c->lc_tab[k]);
    free(c->lc_tab);
    free(c->al_tab);
    pthread_mutex_destroy(&c->lc_lock);
    ey_grammar_free(c->eg);
    lx_free(c->lx);
    free(c);
}

const gr_vocab *gr_compiled_vocab(const gr_compiled *c) { return c ? c->v : NULL; }

gr_compiled *gr_compile(const gr_grammar *g, const gr_vocab *v, char *err, size_t cap) {
    char dummy[8];
    if (!err || !cap) err = dummy, cap = sizeof dummy;
    err[0] = 0;
    if (!g || !v) {
        snprintf(err, cap, "gr_compile: no grammar or no vocabulary");
        return NULL;
    }
    if (g->err[0]) {
        snprintf(err, cap, "%s", g->err);
        return NULL;
    }
    if (g->n_rules == 0) {
        snprintf(err, cap, "the grammar is empty (no rules)");
        return NULL;
    }
    gr_compiled *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, cap, "out of memory");
        return NULL;
    }
    c->v = v;
    pthread_mutex_init(&c->lc_lock, NULL);
    if (g->start < 0) {
        snprintf(err, cap, "grammar has no start symbol");
        goto fail;
    }
    /* terminals in symbol order (earley.c numbers them the same way), then the skip pattern */
    int n_terms = 0;
    for (int i = 0; i < g->n_syms; i++) n_terms += g->syms[i].kind != GR_SYM_NT;
    c->n_terms = n_terms;
    c->words = (n_terms + 1 + 63) / 64;
    c->has_skip = g->has_skip;
    int n_lx = n_terms + (c->has_skip ? 1 : 0);
    const char **pats = malloc(((size_t)n_lx + 1) * sizeof *pats);
    size_t *lens = malloc(((size_t)n_lx + 1) * sizeof *lens);
    uint8_t *lit = malloc((size_t)n_lx + 1);
    const lx_pattern **pre = malloc(((size_t)n_lx + 1) * sizeof *pre);
    uint8_t *empty = calloc((size_t)g->n_syms + 1, 1);
    uint64_t *one = calloc((size_t)c->words, sizeof *one);
    if (!pats || !lens || !lit || !pre || !empty || !one) {
        free(pats), free(lens), free(lit), free(pre), free(empty), free(one);
        snprintf(err, cap, "out of memory");
        goto fail;
    }
    for (int i = 0, t = 0; i < g->n_syms; i++) {
        if (g->syms[i].kind == GR_SYM_NT) continue;
        pats[t] = g->syms[i].text;
        lens[t] = g->syms[i].len;
        pre[t] = g->syms[i].re;
        lit[t++] = g->syms[i].kind == GR_SYM_LITERAL;
    }
    if (c->has_skip) {
        pats[n_terms] = g->skip;
        lens[n_terms] = g->skip_len;
        pre[n_terms] = g->skip_re;
        lit[n_terms] = 0;
    }
    char lerr[200] = "";
    c->lx = lx_new_pre(n_lx, pats, lens, lit, pre, lerr, sizeof lerr);
    free(pats), free(lens), free(lit), free(pre);
    if (!c->lx) {
        free(empty), free(one);
        snprintf(err, cap, "lexer: %s", lerr[0] ? lerr : "cannot build");
        goto fail;
    }
    /* terminals matching the empty text are nullable in the parser */
    for (int i = 0, t = 0; i < g->n_syms; i++) {
        if (g->syms[i].kind == GR_SYM_NT) continue;
        if (g->syms[i].kind == GR_SYM_REGEX) {
            one[t >> 6] = 1ULL << (t & 63);
            const uint64_t *acc = lx_accepting(c->lx, lx_start(c->lx, one));
            empty[i] = acc && (acc[t >> 6] >> (t & 63) & 1);
            one[t >> 6] = 0;
        }
        t++;
    }
    free(one);
    c->eg = ey_grammar_new(g, empty, err, cap);
    free(empty);
    if (!c->eg) goto fail;
    return c;
fail:
    gr_compiled_free(c);
    return NULL;
}

/* ---- matcher ---- */

typedef struct {
    lx_state ls;
    int pdepth;
    uint8_t after_skip, fresh, ended;
} gm_cfg;


/* Uniform chains (subtrees taken whole in the trie walk): uni memoizes lx_uniform per lexer state;
 * the chain of state s holds, for h = 1 .. n, the bytes B such that every text of at most h bytes
 * of B keeps the lexer alive when read from s (each byte of B leads x_j to the same x_{j+1}). */
#define GM_CHAIN 16 /* the longest chain followed: deeper subtrees are walked down to it */
#define GM_UNI_BITS 10
#define GM_CHAINS_BITS 8
typedef struct {
    lx_state s, to; /* s LX_DEAD: empty slot */
    int8_t mb;      /* -1 not known yet; 1: every non-ASCII character leads s to `to` (lx_uniform_mb) */
    uint64_t set[4];
} gm_uni;
typedef struct {
    lx_state s; /* LX_DEAD: empty slot */
    int n;
    uint64_t set[GM_CHAIN][4];
} gm_chain;
/* Character chains (text subtrees taken whole): from state s, for h = 1 .. n characters, the ASCII
 * bytes A such that every text of at most h characters, each an ASCII byte of A or any well-formed
 * non-ASCII character (when mb[h - 1]), keeps the lexer alive, every character leading x_j to the
 * same x_{j+1}: free text, and its counting states (maxLength) one character at a time. A state
 * that loops on them fills the chain. */
#define GM_CCHAIN 48
#define GM_CCHAINS_BITS 8
typedef struct {
    lx_state s; /* LX_DEAD: empty slot */
    int n;
    uint64_t set[GM_CCHAIN][2];
    uint8_t mb[GM_CCHAIN];
} gm_cchain;

struct gr_matcher {
    const gr_compiled *c;
    gm_uni *uni;      /* [1 << GM_UNI_BITS], allocated on the first walk */
    gm_chain *chains; /* [1 << GM_CHAINS_BITS] */
    gm_cchain *cchains; /* [1 << GM_CCHAINS_BITS], allocated on first use */
    gm_lexcache *lc_own; /* the last walk that did not fit the shared cache */
    gm_canon *canon;     /* scratch of the vocabulary's walk cache, allocated on first use */
    int in_rel;          /* inside lexcache's walk of a representative */
    lx_state *no_canon;  /* [1 << GM_NOCANON_BITS]: states whose automaton was too large (LX_DEAD: free) */
    lx_state *lstack; /* [max_depth + 1] */
    lx_state *rstack; /* [max_depth + 1]: the representative's states in a relative walk */
    ey_parser *p;
    gm_cfg *hist; /* one per byte consumed, hist[0] initial */
    size_t n_hist, cap_hist;
    size_t *tok; /* n_hist before each accepted token / chunk */
    int n_tok, cap_tok;
    lx_state *start_cache; /* [depth * 2 + after_skip], UINT32_MAX unknown */
    lx_state *push_tag;    /* [depth]: the lexeme (lexer state) whose scan made the set at depth */
    int cap_cache;
    gm_cfg *dfs; /* [max_depth + 1] */
    uint64_t work_limit; /* ey_work() past which the current mask refuses parser steps */
    char err[200];
    uint64_t *bits; /* scratch: words */
};

#define START_UNKNOWN UINT32_MAX

static int ensure_cache(gr_matcher *m, int depth) {
    if (depth * 2 + 2 <= m->cap_cache) return 0;
    int nc = m->cap_cache ? m->cap_cache : 64;
    while (nc < depth * 2 + 2) nc *= 2;
    lx_state *q = realloc(m->start_cache, (size_t)nc * sizeof *q);
    if (!q) return -1;
    for (int i = m->cap_cache; i < nc; i++) q[i] = START_UNKNOWN;
    m->start_cache = q;
    q = realloc(m->push_tag, (size_t)nc * sizeof *q);
    if (!q) return -1;
    for (int i = m->cap_cache; i < nc; i++) q[i] = LX_DEAD;
    m->push_tag = q;
    m->cap_cache = nc;
    return 0;
}

/* The lexer state starting a lexeme at parser depth (the parser's top must be that depth). */
static lx_state start_state(gr_matcher *m, int depth, int after_skip) {
    if (ensure_cache(m, depth)) return LX_DEAD;
    lx_state *slot = &m->start_cache[depth * 2 + after_skip];
    if (*slot != START_UNKNOWN) return *slot;
    const gr_compiled *c = m->c;
    memcpy(m->bits, ey_allowed(m->p), (size_t)c->words * sizeof *m->bits);
    if (c->has_skip && !after_skip) m->bits[c->n_terms >> 6] |= 1ULL << (c->n_terms & 63);
    *slot = lx_start(c->lx, m->bits);
    return *slot;
}

/* Scans the lexeme ending in lexer state ls on top of the set at depth: pushes its set, forgetting
 * the cached lexer start states of the new depth. A set pushed from the same set and the same
 * lexer state is still on the stack (siblings in the trie walk share it) is reused. */
static int scan(gr_matcher *m, int depth, lx_state ls) {
    if (ey_depth(m->p) > depth && m->push_tag[depth + 1] == ls) {
        ey_truncate(m->p, depth + 1);
        return 0;
    }
    ey_truncate(m->p, depth);
    if (ey_work(m->p) > m->work_limit) {
        if (!m->err[0]) snprintf(m->err, sizeof m->err, "grammar too ambiguous: more than %llu parser steps in one mask",
                                 (unsigned long long)GR_MAX_MASK_WORK);
        return -1;
    }
    if (ensure_cache(m, depth + 1)) return -1;
    int r = ey_scan(m->p, lx_accepting(m->c->lx, ls));
    if (r == -2 && !m->err[0]) snprintf(m->err, sizeof m->err, "%s", ey_parser_error(m->p));
    if (r) return -1;
    m->start_cache[(depth + 1) * 2] = m->start_cache[(depth + 1) * 2 + 1] = START_UNKNOWN;
    m->push_tag[depth + 1] = ls;
    return 0;
}

/* One byte from cfg. The parser is truncated to cfg's depth and may grow. 1 ok, 0 refused. */
static int step(gr_matcher *m, const gm_cfg *cfg, uint8_t b, gm_cfg *out) {
    const gr_compiled *c = m->c;
    if (cfg->ended) return 0;
    /* (the parser is truncated lazily: only the boundary path below uses it) */
    /* (a lexer past its DFA bounds answers LX_DEAD for new states: a refusal here) */
    lx_state s2 = cfg->ls == LX_DEAD ? LX_DEAD : lx_next(c->lx, cfg->ls, b);
    if (s2 == LX_DEAD && lx_exhausted(c->lx) && !m->err[0])
        snprintf(m->err, sizeof m->err, "lexer past its DFA bounds (patterns too complex)");
    if (s2 != LX_DEAD) {
        *out = *cfg;
        out->ls = s2;
        out->fresh = 0;
        return 1;
    }
    if (cfg->fresh) return 0;
    const uint64_t *acc = lx_accepting(c->lx, cfg->ls);
    if (!acc) return 0;
    int any = 0; /* some grammar terminal (not the skip pattern) accepts */
    for (int w = 0; w <= (c->n_terms - 1) >> 6 && c->n_terms > 0 && !any; w++) {
        uint64_t x = acc[w];
        if (w == c->n_terms >> 6) x &= (1ULL << (c->n_terms & 63)) - 1;
        any = x != 0;
    }
    int skip = c->has_skip && (acc[c->n_terms >> 6] >> (c->n_terms & 63) & 1);
    int depth = cfg->pdepth, after_skip;
    if (any && scan(m, cfg->pdepth, cfg->ls) == 0) {
        depth = cfg->pdepth + 1;
        after_skip = 0;
    } else if (skip && !cfg->after_skip) {
        ey_truncate(m->p, depth);
        after_skip = 1;
    } else {
        return 0;
    }
    lx_state st = start_state(m, depth, after_skip);
    if (st == LX_DEAD) return 0;
    s2 = lx_next(c->lx, st, b);
    if (s2 == LX_DEAD) return 0;
    *out = (gm_cfg){s2, depth, (uint8_t)after_skip, 0, 0};
    return 1;
}

static int cfg_can_end(gr_matcher *m, const gm_cfg *cfg) {
    const gr_compiled *c = m->c;
    if (cfg->ended) return 0;
    ey_truncate(m->p, cfg->pdepth);
    if (cfg->fresh) return ey_can_end(m->p);
    const uint64_t *acc = lx_accepting(c->lx, cfg->ls);
    if (!acc) return 0;
    int r = 0;
    if (scan(m, cfg->pdepth, cfg->ls) == 0) {
        r = ey_can_end(m->p);
        ey_truncate(m->p, cfg->pdepth);
    }
    if (!r && c->has_skip && (acc[c->n_terms >> 6] >> (c->n_terms & 63) & 1) && !cfg->after_skip)
        r = ey_can_end(m->p);
    return r;
}

gr_matcher *gr_matcher_new(const gr_compiled *c) {
    if (!c) return NULL;
    gr_matcher *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->c = c;
    m->p = ey_parser_new(c->eg);
    m->bits = calloc((size_t)c->words, sizeof *m->bits);
    m->dfs = malloc(((size_t)c->v->max_depth + 2) * sizeof *m->dfs);
    m->lstack = malloc(((size_t)c->v->max_depth + 2) * sizeof *m->lstack);
    m->rstack = malloc(((size_t)c->v->max_depth + 2) * sizeof *m->rstack);
    m->cap_hist = 64;
    m->hist = malloc(m->cap_hist * sizeof *m->hist);
    if (!m->p || !m->bits || !m->dfs || !m->lstack || !m->rstack || !m->hist || ensure_cache(m, 1)) {
        gr_matcher_free(m);
        return NULL;
    }
    m->work_limit = UINT64_MAX;
    m->hist[0] = (gm_cfg){LX_DEAD, 1, 0, 1, 0};
    m->hist[0].ls = start_state(m, 1, 0);
    m->n_hist = 1;
    return m;
}

void gr_matcher_free(gr_matcher *m) {
    if (!m) return;
    ey_parser_free(m->p);
    free(m->hist);
    free(m->tok);
    free(m->start_cache);
    free(m->push_tag);
    free(m->dfs);
    free(m->lstack);
    free(m->rstack);
    lexcache_free(m->lc_own);
    free(m->canon);
    free(m->no_canon);
    free(m->bits);
    free(m->uni);
    free(m->chains);
    free(m->cchains);
    free(m);
}

static gm_lexcache *lc_find(const gr_compiled *c, uint32_t key, size_t *slot) {
    if (!c->lc_cap) return NULL;
    size_t j = (key * 0x9E3779B9u) & (c->lc_cap - 1);
    while (c->lc_tab[j]) {
        if (c->lc_tab[j]->key == key) return c->lc_tab[j];
        j = (j + 1) & (c->lc_cap - 1);
    }
    if (slot) *slot = j;
    return NULL;
}

/* Publishes e in the shared cache (lock held); 0 if it does not fit (caller keeps it). */
static int lc_insert(gr_compiled *c, gm_lexcache *e, size_t bytes) {
    if (c->lc_bytes + bytes > GR_LEXCACHE_MAX_BYTES) return 0;
    if ((c->lc_n + 1) * 2 > c->lc_cap) {
        size_t nc = c->lc_cap ? c->lc_cap * 2 : 64;
        gm_lexcache **t = calloc(nc, sizeof *t);
        if (!t) return 0;
        for (size_t k = 0; k < c->lc_cap; k++)
            if (c->lc_tab[k]) {
                size_t j = (c->lc_tab[k]->key * 0x9E3779B9u) & (nc - 1);
                while (t[j]) j = (j + 1) & (nc - 1);
                t[j] = c->lc_tab[k];
            }
        free(c->lc_tab);
        c->lc_tab = t;
        c->lc_cap = nc;
    }
    size_t slot = 0;
    lc_find(c, e->key, &slot);
    c->lc_tab[slot] = e;
    c->lc_n++;
    c->lc_bytes += bytes;
    return 1;
}

/* Records a lexeme end before node i (lexer state pl before it). 0 ok, -1 out of memory. */
static int lc_add_boundary(gm_lexcache *e, int i, lx_state pl) {
    if (e->n_b == e->cap_b) {
        int nc = e->cap_b ? e->cap_b * 2 : 64;
        int *a = realloc(e->bnode, (size_t)nc * sizeof *a);
        if (!a) return -1;
        e->bnode = a;
        lx_state *b = realloc(e->bls, (size_t)nc * sizeof *b);
        if (!b) return -1;
        e->bls = b;
        e->cap_b = nc;
    }
    e->bnode[e->n_b] = i;
    e->bls[e->n_b++] = pl;
    return 0;
}

static int uni_alloc(gr_matcher *m) {
    if (m->chains) return 0;
    m->uni = calloc((size_t)1 << GM_UNI_BITS, sizeof *m->uni);
    m->chains = calloc((size_t)1 << GM_CHAINS_BITS, sizeof *m->chains);
    if (!m->uni || !m->chains) {
        free(m->uni), free(m->chains);
        m->uni = NULL, m->chains = NULL;
        return -1;
    }
    return 0;
}

/* lx_uniform of state x, memoized (m->uni allocated) */
static gm_uni *uni_of(gr_matcher *m, lx_state x) {
    gm_uni *u = &m->uni[(x * 0x9E3779B9u) >> (32 - GM_UNI_BITS)];
    if (u->s != x) {
        u->to = lx_uniform(m->c->lx, x, u->set);
        u->s = x;
        u->mb = -1;
    }
    return u;
}

/* The chain of lexer state s (s != LX_DEAD), from the matcher's caches; NULL out of memory. */
static const gm_chain *chain_of(gr_matcher *m, lx_state s) {
    if (uni_alloc(m)) return NULL;
    gm_chain *ch = &m->chains[(s * 0x9E3779B9u) >> (32 - GM_CHAINS_BITS)];
    if (ch->s == s) return ch;
    ch->s = s;
    ch->n = 0;
    uint64_t acc[4] = {~0ull, ~0ull, ~0ull, ~0ull};
    for (lx_state x = s; ch->n < GM_CHAIN && x != LX_DEAD;) {
        gm_uni *u = uni_of(m, x);
        for (int w = 0; w < 4; w++) acc[w] &= u->set[w];
        if (!(acc[0] | acc[1] | acc[2] | acc[3])) break;
        do /* a self-loop keeps the set for every longer text */
            memcpy(ch->set[ch->n++], acc, sizeof acc);
        while (u->to == x && ch->n < GM_CHAIN);
        x = u->to;
    }
    return ch;
}

static const gm_cchain *cchain_of(gr_matcher *m, lx_state s) {
    if (!m->cchains && !(m->cchains = calloc((size_t)1 << GM_CCHAINS_BITS, sizeof *m->cchains))) return NULL;
    gm_cchain *ch = &m->cchains[(s * 0x9E3779B9u) >> (32 - GM_CCHAINS_BITS)];
    if (ch->s == s) return ch;
    ch->s = s;
    ch->n = 0;
    uint64_t acc[2] = {~0ull, ~0ull};
    int mb = 1;
    for (lx_state x = s; ch->n < GM_CCHAIN && x != LX_DEAD;) {
        gm_uni *u = uni_of(m, x);
        if (u->to == LX_DEAD) break;
        acc[0] &= u->set[0], acc[1] &= u->set[1];
        if (mb && u->mb < 0) u->mb = (int8_t)lx_uniform_mb(m->c->lx, x);
        mb = mb && u->mb;
        if (!(acc[0] | acc[1]) && !mb) break;
        do { /* a self-loop keeps the set for every longer text */
            memcpy(ch->set[ch->n], acc, sizeof acc);
            ch->mb[ch->n++] = (uint8_t)mb;
        } while (u->to == x && ch->n < GM_CCHAIN);
        x = u->to;
    }
    return ch;
}

/* 1 if every token under trie node i (its path read, lexer now in s) keeps the lexer alive through
 * s's character chain: the node ends a whole character, the texts under it are well-formed UTF-8
 * (possibly cut short) of at most the chain's length in characters, their ASCII bytes in its set,
 * their other characters allowed by it. */
static int text_subtree(gr_matcher *m, const gr_vocab *v, uint32_t i, lx_state s) {
    /* (ASCII-only subtrees: the byte chains, tried before, already cover them) */
    const uint64_t *B = v->bsets[v->under[i].set];
    if (v->u8[i] != (U8_OK | U8_BOUNDARY) || !(B[2] | B[3]) || uni_alloc(m)) return 0;
    int h = v->cheight[i];
    if (h < 1) return 0;
    const gm_cchain *ch = cchain_of(m, s);
    if (!ch || h > ch->n) return 0;
    const uint64_t *A = ch->set[h - 1];
    if ((B[0] & ~A[0]) | (B[1] & ~A[1])) return 0;
    return ch->mb[h - 1];
}

/* The representative key of key, or key itself (lock held). */
static uint32_t al_find(const gr_compiled *c, uint32_t key) {
    if (!c->al_cap) return key;
    size_t j = (key * 0x9E3779B9u) & (c->al_cap - 1);
    while (c->al_tab[j]) {
        if ((uint32_t)(c->al_tab[j] >> 32) == key) return (uint32_t)c->al_tab[j];
        j = (j + 1) & (c->al_cap - 1);
    }
    return key;
}

/* The grammar's walk for key (through its alias), or NULL (takes the lock). */
static gm_lexcache *lc_get(gr_compiled *c, uint32_t key) {
    pthread_mutex_lock(&c->lc_lock);
    gm_lexcache *e = lc_find(c, al_find(c, key), NULL);
    pthread_mutex_unlock(&c->lc_lock);
    return e;
}

/* Records key -> rep (lock held; nothing on out of memory: only a cache). */
static void al_insert(gr_compiled *c, uint32_t key, uint32_t rep) {
    if ((c->al_n + 1) * 2 > c->al_cap) {
        size_t nc = c->al_cap ? c->al_cap * 2 : 64;
        uint64_t *t = calloc(nc, sizeof *t);
        if (!t) return;
        for (size_t k = 0; k < c->al_cap; k++)
            if (c->al_tab[k]) {
                size_t j = ((uint32_t)(c->al_tab[k] >> 32) * 0x9E3779B9u) & (nc - 1);
                while (t[j]) j = (j + 1) & (nc - 1);
                t[j] = c->al_tab[k];
            }
        free(c->al_tab);
        c->al_tab = t;
        c->al_cap = nc;
    }
    size_t j = (key * 0x9E3779B9u) & (c->al_cap - 1);
    while (c->al_tab[j]) {
        if ((uint32_t)(c->al_tab[j] >> 32) == key) return;
        j = (j + 1) & (c->al_cap - 1);
    }
    c->al_tab[j] = (uint64_t)key << 32 | rep;
    c->al_n++;
}

/* A published walk whose lexer state no text of the trie's depth tells apart from cur's (then its
 * tokens and lexeme ends are cur's, the ends' lexer states accepting the same terminals), or NULL. */
static gm_lexcache *lc_equivalent(gr_compiled *c, uint32_t key, int depth) {
    uint32_t cand[GM_RECENT];
    pthread_mutex_lock(&c->lc_lock);
    int n = c->n_recent < GM_RECENT ? (int)c->n_recent : GM_RECENT;
    memcpy(cand, c->recent, sizeof cand);
    pthread_mutex_unlock(&c->lc_lock);
    for (int k = 0; k < n; k++) {
        if ((cand[k] & 1) != (key & 1) || cand[k] == key || cand[k] < 2) continue;
        if (!lx_equiv(c->lx, key >> 1, cand[k] >> 1, depth, (const uint64_t(*)[4])c->v->dbytes, GM_EQUIV_PAIRS)) continue;
        pthread_mutex_lock(&c->lc_lock);
        gm_lexcache *e = lc_find(c, cand[k], NULL);
        if (e) al_insert(c, key, cand[k]);
        pthread_mutex_unlock(&c->lc_lock);
        if (e) return e;
    }
    return NULL;
}

/* canon_build into m->canon, remembering the states whose automaton is too large (a state's first
 * visits come one after another: e.g. the counting states of a maxLength string). 0 ok. */
static int canon_try(gr_matcher *m, lx_lexer *lx, const lx_table *tb, lx_state s, int fresh) {
    if ((!m->canon && !(m->canon = malloc(sizeof *m->canon))) ||
        (!m->no_canon && !(m->no_canon = calloc((size_t)1 << GM_NOCANON_BITS, sizeof *m->no_canon))))
        return -1;
    lx_state *slot = &m->no_canon[(s * 0x9E3779B9u) >> (32 - GM_NOCANON_BITS)];
    if (*slot == s) return -1;
    if (!gm_canon_build(lx, tb, s, fresh, m->canon)) return 0;
    if (!lx_exhausted(lx)) *slot = s;
    return -1;
}

/* A walk of this grammar to walk relative to (see lexcache): of the last ones published and extra
 * (a walk or NULL), the one whose state shares the most successors (alive) with s on the trie's
 * first bytes; NULL when none shares any. */
static const gm_lexcache *lc_relative(gr_compiled *c, const lx_table *tb, lx_state s, const gm_lexcache *extra) {
    uint32_t cand[GM_RECENT];
    const gm_lexcache *ce[GM_RECENT + 1] = {0};
    pthread_mutex_lock(&c->lc_lock);
    int n = c->n_recent < GM_RECENT ? (int)c->n_recent : GM_RECENT;
    memcpy(cand, c->recent, sizeof cand);
    for (int k = 0; k < n; k++) ce[k] = cand[k] >> 1 != s && cand[k] >= 2 ? lc_find(c, cand[k], NULL) : NULL;
    pthread_mutex_unlock(&c->lc_lock);
    if (extra && extra->key >> 1 != s && extra->key >= 2) ce[n++] = extra;
    const uint64_t *d1 = c->v->dbytes[1];
    lx_lexer *lx = c->lx;
    const gm_lexcache *best = NULL;
    int best_n = 0;
    for (int k = 0; k < n; k++) {
        if (!ce[k]) continue;
        lx_state r = ce[k]->key >> 1;
        int same = 0;
        for (int b = 0; b < 256; b++) {
            if (!(d1[b >> 6] >> (b & 63) & 1)) continue;
            lx_state x = lx_next_fast(lx, tb, s, (uint8_t)b);
            same += x != LX_DEAD && x == lx_next_fast(lx, tb, r, (uint8_t)b);
        }
        if (same > best_n) best = ce[k], best_n = same;
    }
    return best;
}

/* Takes over R's lexeme ends before trie node `before` from *rb on (a relative walk's subtrees that
 * are R's). 0 ok, -1 out of memory. */
static int take_r_ends(gm_lexcache *e, const gm_lexcache *R, int *rb, uint32_t before) {
    for (; *rb < R->n_b && (uint32_t)R->bnode[*rb] < before; ++*rb)
        if (lc_add_boundary(e, R->bnode[*rb], R->bls[*rb])) return -1;
    return 0;
}

/* The bits set in mask[0..words): 64 bits at a time without a popcount instruction (the build
 * targets baseline x86-64, where __builtin_popcount is a library call per word; this runs over the
 * whole vocabulary's mask after every relative walk). */
static int32_t mask_popcount(const uint32_t *mask, size_t words) {
    uint64_t total = 0;
    size_t k = 0;
    for (; k + 2 <= words; k += 2) {
        uint64_t x = (uint64_t)mask[k] | (uint64_t)mask[k + 1] << 32;
        x -= (x >> 1) & 0x5555555555555555ull;
        x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
        x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0Full;
        total += (x * 0x0101010101010101ull) >> 56;
    }
    if (k < words) total += (uint64_t)__builtin_popcount(mask[k]);
    return (int32_t)total;
}

/* The lexer-only walk of the trie nodes [i, end) (whole subtrees) into e: the lexer in
 * m->lstack[d - 1] before a node of depth d; relative to R (see lexcache) when R is not NULL, R's
 * states in m->rstack the same way (LX_DEAD where R is dead or absent). Adds the tokens it allows to
 * *count_io (R's subtrees taken over are not counted). 0 ok, -1 out of memory. */
static int walk_nodes(gr_matcher *m, gm_lexcache *e, const lx_table *tb, int fresh, const gm_lexcache *R, uint32_t i,
                      uint32_t end, int32_t *count_io, int *rb_io) {
    const gr_vocab *v = m->c->v;
    lx_lexer *lx = m->c->lx;
    const gm_node *N = v->nodes;
    const int32_t *ntok = v->ntok;
    uint32_t *emask = e->mask;
    lx_state *ls = m->lstack, *rls = m->rstack;
    int32_t count = *count_io;
    int rb = *rb_io; /* R's next lexeme end */
    for (; i < end;) {
        const gm_node *nd = &N[i];
        lx_state pl = ls[nd->depth - 1];
        lx_state s2 = lx_next_fast(lx, tb, pl, nd->byte);
        lx_state rp = rls[nd->depth - 1], r2 = LX_DEAD;
        if (rp != LX_DEAD) {
            r2 = lx_next_fast(lx, tb, rp, nd->byte);
            while (rb < R->n_b && (uint32_t)R->bnode[rb] < i) rb++; /* (in subtrees where the two differ) */
            if (s2 == r2 && s2 != LX_DEAD) {
                if (take_r_ends(e, R, &rb, nd->skip)) return -1;
                i = nd->skip;
                continue;
            }
        }
        rls[nd->depth] = r2;
        if (s2 == LX_DEAD) {
            if (!(nd->depth == 1 && fresh) && lx_accepting(lx, pl) && lc_add_boundary(e, (int)i, pl)) return -1;
            if (r2 != LX_DEAD) /* R's tokens under the node are not this walk's */
                for (uint32_t k = nd->tok, t_end = N[nd->skip].tok; k < t_end; k++)
                    emask[ntok[k] >> 5] &= ~(1u << (ntok[k] & 31));
            i = nd->skip;
            continue;
        }
        if (nd->skip > i + 1 && nd->height <= GM_CHAIN) { /* the subtree may be taken whole */
            const gm_chain *ch = chain_of(m, s2);
            int h = nd->height;
            if (ch && h <= ch->n) {
                const uint64_t *L = ch->set[h - 1], *B = v->bsets[v->under[i].set];
                if (!((B[0] & ~L[0]) | (B[1] & ~L[1]) | (B[2] & ~L[2]) | (B[3] & ~L[3]))) {
                    uint32_t t_end = N[nd->skip].tok;
                    for (uint32_t k = nd->tok; k < t_end; k++) emask[ntok[k] >> 5] |= 1u << (ntok[k] & 31);
                    count += (int32_t)(t_end - nd->tok);
                    i = nd->skip;
                    continue;
                }
            }
        }
        if (nd->skip > i + 1 && text_subtree(m, v, i, s2)) {
            uint32_t t_end = N[nd->skip].tok;
            for (uint32_t k = nd->tok; k < t_end; k++) emask[ntok[k] >> 5] |= 1u << (ntok[k] & 31);
            count += (int32_t)(t_end - nd->tok);
            i = nd->skip;
            continue;
        }
        ls[nd->depth] = s2;
        uint32_t t1 = nd->tok1 & ~GM_MULTI;
        emask[t1 >> 5] |= 1u << (t1 & 31);
        count += (int32_t)(N[i + 1].tok - nd->tok);
        if (__builtin_expect(nd->tok1 >> 31, 0))
            for (uint32_t k = nd->tok + 1; k < N[i + 1].tok; k++) emask[ntok[k] >> 5] |= 1u << (ntok[k] & 31);
        if (r2 != LX_DEAD && v->wide[i] && v->kids[v->wide[i] - 2] * 8 > (uint32_t)tb->n_classes &&
            !lx_accepting(lx, s2) && !lx_accepting(lx, r2)) {
            /* Both alive, different, neither ending a lexeme here: a child whose byte leads both to the
             * same state is R's subtree (its lexeme ends taken over), one that kills both holds nothing
             * for either, so only the children on the classes where the two rows differ are walked,
             * found in the node's child index instead of visiting every child (a key position's
             * first letters: hundreds of children each with Qwen3's vocabulary). */
            const uint32_t *K = v->kids + v->wide[i] - 1;
            uint32_t nk = K[-1], kp = 0;
            const uint32_t *rs = tb->rows + ((size_t)s2 << tb->shift), *rr = tb->rows + ((size_t)r2 << tb->shift);
            if (__atomic_load_n(&rs[0], __ATOMIC_ACQUIRE) == LX_NEXT_UNKNOWN) (void)lx_next(lx, s2, tb->cls_rep[0]);
            if (__atomic_load_n(&rr[0], __ATOMIC_ACQUIRE) == LX_NEXT_UNKNOWN) (void)lx_next(lx, r2, tb->cls_rep[0]);
            uint8_t diff[256];
            int n_diff = 0;
            for (int c = 0; c < tb->n_classes; c++) { /* (an entry not built, past the DFA bounds: walked) */
                uint32_t x = __atomic_load_n(&rs[c], __ATOMIC_RELAXED), y = __atomic_load_n(&rr[c], __ATOMIC_RELAXED);
                diff[n_diff] = (uint8_t)c;
                n_diff += x != y || x == LX_NEXT_UNKNOWN;
            }
            for (int d = 0; d < n_diff && kp < nk; d++) {
                int c = diff[d], lo = tb->cls_rep[c], hi = c + 1 < tb->n_classes ? tb->cls_rep[c + 1] - 1 : 255;
                uint32_t a = kp, b = nk; /* the first child with a byte >= lo */
                while (a < b) {
                    uint32_t h = (a + b) / 2;
                    if (N[K[h]].byte < lo) a = h + 1;
                    else b = h;
                }
                for (kp = a; kp < nk && N[K[kp]].byte <= hi; kp++) {
                    uint32_t k = K[kp];
                    if (take_r_ends(e, R, &rb, k) || walk_nodes(m, e, tb, fresh, R, k, N[k].skip, &count, &rb)) return -1;
                    while (rb < R->n_b && (uint32_t)R->bnode[rb] < N[k].skip) rb++; /* (cur's own there) */
                }
            }
            if (take_r_ends(e, R, &rb, nd->skip)) return -1;
            i = nd->skip;
            continue;
        }
        i++;
    }
    *count_io = count;
    *rb_io = rb;
    return 0;
}

/* Counting states (the text classes of vocab_impl.h): lexer state s counts the characters of a class
 * when the chain x_0 = s, x_1, ... of most common successors is taken by every class character (each
 * ASCII byte of the class and, with mb, every well-formed non-ASCII character leads x_j to x_{j+1},
 * each of its bytes alive), and by the same characters at every step: the class. (A state whose
 * first step takes fewer, e.g. an object's key position, where the listed properties' first letters
 * lead elsewhere and the rest into the free string, is no counting state: the relative walk serves
 * it, and its class would be one more index per object.) The chain is followed for GM_TCLASS_D
 * characters at most: it ends at x_K, from which no class character's first byte is alive
 * (GM_CHAIN_END: a budget of K characters, a string's maxLength or a pattern's {m,n}; x_K must not
 * accept, or a class node past the budget would end a lexeme), or loops at x_K (GM_CHAIN_LOOP:
 * minLength, free text; xs[K + 1 ..] are x_K), or goes on (GM_CHAIN_OPEN). Fills xs[0 .. GM_TCLASS_D]
 * (xs[0 .. K] at an end), the class in ascii / *mb; returns K, or -1 when s does not count. */
/* Narrower ASCII-only classes (digits, one repeated byte: whitespace limits) walk few trie nodes,
 * and each class costs an index (Qwen3: ~1 ms to build, ~0.7 MB): not indexed. */
#define GM_COUNT_MIN_CLASS 32
#define GM_COUNT_MAX_EXITS 4096 /* past it, the exits' walks cost about what the plain walk does */
enum { GM_CHAIN_END, GM_CHAIN_LOOP, GM_CHAIN_OPEN };
static int count_chain(gr_matcher *m, lx_state s, lx_state *xs, uint64_t ascii[2], int *mb, int *kind) {
    lx_lexer *lx = m->c->lx;
    if (uni_alloc(m)) return -1;
    uint64_t acc[2] = {~0ull, ~0ull};
    int mbv = 1, k = 0;
    lx_state x = s;
    xs[0] = s;
    *kind = GM_CHAIN_END;
    for (;;) {
        gm_uni *u = uni_of(m, x);
        if (u->to == LX_DEAD) break;
        uint64_t a0 = acc[0] & u->set[0], a1 = acc[1] & u->set[1];
        if (mbv && u->mb < 0) u->mb = (int8_t)lx_uniform_mb(lx, x);
        int nmb = mbv && u->mb;
        if (!(a0 | a1) && !nmb) break;
        if (k && (u->set[0] != acc[0] || u->set[1] != acc[1] || nmb != mbv)) return -1;
        acc[0] = a0, acc[1] = a1, mbv = nmb;
        if (u->to == x || k == GM_TCLASS_D) {
            *kind = u->to == x ? GM_CHAIN_LOOP : GM_CHAIN_OPEN;
            for (int j = k + 1; j <= GM_TCLASS_D; j++) xs[j] = x;
            break;
        }
        xs[++k] = x = u->to;
    }
    if (!k && *kind == GM_CHAIN_END) return -1; /* (not one class character: acc is no class) */
    if (*kind == GM_CHAIN_END) {
        if (lx_accepting(lx, x)) return -1;
        for (int b = 0; b < 128; b++)
            if ((acc[b >> 6] >> (b & 63) & 1) && lx_next(lx, x, (uint8_t)b) != LX_DEAD) return -1;
        for (int b = 0xC2; mbv && b <= 0xF4; b++)
            if (lx_next(lx, x, (uint8_t)b) != LX_DEAD) return -1;
    }
    if (lx_exhausted(lx)) return -1; /* (a transition not built reads as dead) */
    ascii[0] = acc[0], ascii[1] = acc[1];
    *mb = mbv;
    return k;
}

/* The plain walk of trie node i's subtree, the lexer in s before node i (see walk_nodes). */
static int walk_under(gr_matcher *m, gm_lexcache *e, const lx_table *tb, int fresh, uint32_t i, lx_state s,
                      int32_t *count) {
    const gm_node *N = m->c->v->nodes;
    m->lstack[N[i].depth - 1] = s;
    m->rstack[N[i].depth - 1] = LX_DEAD;
    int rb = 0;
    return walk_nodes(m, e, tb, fresh, NULL, i, N[i].skip, count, &rb);
}

/* The lexer state before exit x: x_q (q characters begun on its parent's path), or the state inside
 * the character cut short on its path (after the whole characters before it). */
static lx_state exit_state(lx_lexer *lx, const lx_table *tb, const lx_state *xs, const gm_texit *x) {
    lx_state s = xs[x->q - (x->np > 0)];
    for (int j = 0; j < x->np && s != LX_DEAD; j++) s = lx_next_fast(lx, tb, s, x->pb[j]);
    return s;
}

/* The walk of a counting state (count_chain) from the vocabulary's index of its class: the class
 * tokens of at most r = min(K, GM_TCLASS_D) characters begun, then a plain walk under each exit whose
 * parent is alive (at most r characters begun on its path), from x_q or from the state inside the
 * character cut short on the path, and, when the budget goes past GM_TCLASS_D, under each frontier
 * node from x_D. The same mask and lexeme ends as the plain walk of the whole trie, which visits every
 * class node within the budget (exits and frontier nodes are walked in trie order, so are the ends). 1 done,
 * 0 not done (not a counting state, a narrow class, too many exits, no index: switched off or too
 * many classes), -1 out of memory. */
static int count_walk(gr_matcher *m, gm_lexcache *e, const lx_table *tb, const gm_cfg *cur) {
    const gr_vocab *v = m->c->v;
    lx_lexer *lx = m->c->lx;
    lx_state xs[GM_TCLASS_D + 1];
    uint64_t ascii[2];
    int mb, kind;
    int K = count_chain(m, cur->ls, xs, ascii, &mb, &kind);
    if (K < 0 || (!mb && __builtin_popcountll(ascii[0]) + __builtin_popcountll(ascii[1]) < GM_COUNT_MIN_CLASS))
        return 0;
    const gm_tclass *t = gm_vocab_tclass((gr_vocab *)v, ascii, mb); /* (its cache is internally locked) */
    if (!t) return 0;
    int open = kind != GM_CHAIN_END, r = open ? GM_TCLASS_D : K;
    if (t->ex_upto[r + 1] + (open ? t->n_front : 0) > GM_COUNT_MAX_EXITS) return 0;
    size_t words = ((size_t)v->n_tokens + 31) / 32;
    memcpy(e->mask, t->rows + (size_t)r * words, words * sizeof *e->mask);
    int32_t count = t->row_n[r];
    for (uint32_t k = 0; k < t->n_ex; k++) { /* in trie order, so the lexeme ends come out sorted */
        const gm_texit *x = &t->ex[k];
        if (x->q == GM_TCLASS_FRONT ? !open : x->q > r) continue;
        lx_state s = x->q == GM_TCLASS_FRONT ? xs[GM_TCLASS_D] : exit_state(lx, tb, xs, x);
        if (s != LX_DEAD && walk_under(m, e, tb, cur->fresh, x->node, s, &count)) return -1;
    }
    e->count = count;
    return 1;
}

/* The lexer-only walk from cur's lexer state: from the grammar's shared cache, else computed
 * (and shared when it fits). NULL on out of memory. */
static const gm_lexcache *lexcache(gr_matcher *m, const gm_cfg *cur) {
    gr_compiled *c = (gr_compiled *)m->c; /* only its internally locked cache changes */
    const gr_vocab *v = c->v;
    lx_lexer *lx = c->lx;
    uint32_t key = cur->ls * 2u + cur->fresh;
    gm_lexcache *e = lc_get(c, key);
    if (e) return e;
    size_t words = ((size_t)v->n_tokens + 31) / 32;
    lx_table tb;
    lx_get_table(lx, &tb);
    /* the vocabulary's walks, shared with every other grammar */
    gr_vocab *vv = (gr_vocab *)v; /* only its internally locked walk cache changes */
    gm_canon *cn = NULL;
    uint64_t ch = 0;
    if (cur->ls != LX_DEAD && gm_vwcache_on(&vv->vw) &&
        !canon_try(m, lx, &tb, cur->ls, cur->fresh)) {
        cn = m->canon;
        ch = gm_canon_hash(cn);
        const gm_vwalk *w = gm_vwcache_find(&vv->vw, ch, cn);
        if (w && !(e = lc_from_vwalk(w, cn, key, words))) return NULL; /* (entries stay until gr_vocab_free) */
    }
    if (e) goto publish;
    e = calloc(1, sizeof *e);
    if (!e || !(e->mask = calloc(words + 1, sizeof *e->mask))) {
        lexcache_free(e);
        return NULL;
    }
    e->key = key;
    int counted = cur->ls != LX_DEAD ? count_walk(m, e, &tb, cur) : 0;
    if (counted < 0) {
        lexcache_free(e);
        return NULL;
    }
    if (!counted) {
        gm_lexcache *eq;
        if (cur->ls != LX_DEAD && v->n_tokens >= GM_EQUIV_MIN_TOKENS && (eq = lc_equivalent(c, key, v->max_depth))) {
            lexcache_free(e);
            return eq;
        }
        /* A state with a large automaton whose most common successor has a small one (e.g. the first
         * key of an object: listed properties, or any other key, whose first byte mostly leads into the
         * free string): that successor's walk (usually the vocabulary's) becomes a representative for
         * the relative walk below. */
        const gm_lexcache *te = NULL;
        if (!cn && cur->ls != LX_DEAD && !m->in_rel) {
            uint64_t set[4];
            lx_state t = lx_uniform(lx, cur->ls, set);
            if (t != LX_DEAD && t != cur->ls) te = lc_get(c, t * 2u); /* (walked already: no canonical form) */
            if (!te && t != LX_DEAD && t != cur->ls && !canon_try(m, lx, &tb, t, 0)) {
                gm_cfg tc = {t, cur->pdepth, cur->after_skip, 0, 0};
                m->in_rel = 1;
                te = lexcache(m, &tc); /* (if it is m->lc_own, it stays until this walk is done) */
                m->in_rel = 0;
                if (!te) {
                    lexcache_free(e);
                    return NULL;
                }
            }
        }
        /* Relative to a representative R (a walk of this grammar): the walk starts from R's mask and
         * lexeme ends, and wherever the two states agree at a trie node (the same DFA state after the
         * same text) the whole subtree is R's: its mask bits are already there and R's lexeme ends in it
         * are taken over (R's ends are in trie order, so is this walk). Elsewhere the walk is the usual
         * one, clearing R's bits under nodes where only R was alive. (E.g. the key positions of one
         * object: after the first byte of a key that no listed property starts, both are inside the
         * same free string.) rls[d]: R's state at depth d, LX_DEAD once R is dead or without R. */
        const gm_lexcache *R = cur->ls != LX_DEAD ? lc_relative(c, &tb, cur->ls, te) : NULL;
        m->lstack[0] = cur->ls;
        m->rstack[0] = R ? R->key >> 1 : LX_DEAD;
        if (R) memcpy(e->mask, R->mask, words * sizeof *e->mask);
        int32_t count = 0;
        int rb = 0;
        if (walk_nodes(m, e, &tb, cur->fresh, R, cur->ls == LX_DEAD ? (uint32_t)v->n_nodes : 1, (uint32_t)v->n_nodes,
                       &count, &rb)) {
            lexcache_free(e);
            return NULL;
        }
        if (R) { /* (the counts of R's subtrees were not added) */
            count = 0;
            count = mask_popcount(e->mask, words);
        }
        e->count = count;
    }
    if (cn && !lx_exhausted(lx))
        gm_vwcache_publish(&vv->vw, cn, ch, e->mask, words, e->count, e->n_b, e->bnode, e->bls);
publish:;
    int shared = 0;
    if (!lx_exhausted(lx)) { /* (past the DFA bounds, DEAD may have meant "not built": not shared) */
        pthread_mutex_lock(&c->lc_lock);
        gm_lexcache *other = lc_find(c, key, NULL);
        if (other) {
            lexcache_free(e);
            e = other;
            shared = 1;
        } else {
            shared = lc_insert(c, e, words * 4 + (size_t)e->cap_b * 8 + sizeof *e);
            if (shared) c->recent[c->n_recent++ % GM_RECENT] = key;
        }
        pthread_mutex_unlock(&c->lc_lock);
    }
    if (!shared) {
        lexcache_free(m->lc_own);
        m->lc_own = e;
    }
    return e;
}

int32_t gr_matcher_mask(gr_matcher *m, uint32_t *mask) {
    const gr_vocab *v = m->c->v;
    size_t words = ((size_t)v->n_tokens + 31) / 32;
    memset(mask, 0, words * sizeof *mask);
    const gm_cfg cur = m->hist[m->n_hist - 1];
    int32_t count = 0;
    if (cur.ended) return 0;
    m->work_limit = ey_work(m->p) + GR_MAX_MASK_WORK;
    const gm_lexcache *e = lexcache(m, &cur);
    if (!e) {
        if (!m->err[0]) snprintf(m->err, sizeof m->err, "out of memory");
        return 0;
    }
    memcpy(mask, e->mask, words * sizeof *mask);
    count = e->count;
    /* where a lexeme ends inside a token: the parser decides, node by node under that subtree */
    for (int b = 0; b < e->n_b; b++) {
        const gm_node *N = v->nodes;
        uint32_t i0 = (uint32_t)e->bnode[b], d0 = N[i0].depth;
        m->dfs[d0 - 1] = (gm_cfg){e->bls[b], cur.pdepth, cur.after_skip, 0, 0};
        for (uint32_t i = i0; i < N[i0].skip;) {
            int d = N[i].depth;
            if (!step(m, &m->dfs[d - 1], N[i].byte, &m->dfs[d])) {
                i = N[i].skip;
                continue;
            }
            for (uint32_t k = N[i].tok; k < N[i + 1].tok; k++) {
                int32_t t = v->ntok[k];
                mask[t >> 5] |= 1u << (t & 31);
                count++;
            }
            i++;
        }
    }
    if (cfg_can_end(m, &cur))
        for (int k = 0; k < v->n_eos; k++) {
            int32_t t = v->eos[k];
            mask[t >> 5] |= 1u << (t & 31);
            count++;
        }
    ey_truncate(m->p, cur.pdepth);
    m->work_limit = UINT64_MAX;
    return count;
}

const char *gr_matcher_error(const gr_matcher *m) { return m ? m->err : "no matcher"; }

static int push_hist(gr_matcher *m, const gm_cfg *cfg) {
    if (m->n_hist + 1 > m->cap_hist) {
        size_t nc = m->cap_hist * 2;
        gm_cfg *q = realloc(m->hist, nc * sizeof *q);
        if (!q) return -1;
        m->hist = q, m->cap_hist = nc;
    }
    m->hist[m->n_hist++] = *cfg;
    return 0;
}

static int push_tok(gr_matcher *m, size_t before) {
    if (m->n_tok + 1 > m->cap_tok) {
        int nc = m->cap_tok ? m->cap_tok * 2 : 64;
        size_t *q = realloc(m->tok, (size_t)nc * sizeof *q);
        if (!q) return -1;
        m->tok = q, m->cap_tok = nc;
    }
    m->tok[m->n_tok++] = before;
    return 0;
}

static int feed(gr_matcher *m, const uint8_t *bytes, size_t n, int eos) {
    size_t before = m->n_hist;
    for (size_t i = 0; i < n; i++) {
        gm_cfg nx;
        if (!step(m, &m->hist[m->n_hist - 1], bytes[i], &nx) || push_hist(m, &nx)) goto undo;
    }
    if (eos) {
        gm_cfg nx = m->hist[m->n_hist - 1];
        if (!cfg_can_end(m, &nx)) goto undo;
        nx.ended = 1;
        if (push_hist(m, &nx)) goto undo;
    }
    if (push_tok(m, before)) goto undo;
    ey_truncate(m->p, m->hist[m->n_hist - 1].pdepth);
    return 0;
undo:
    m->n_hist = before;
    ey_truncate(m->p, m->hist[before - 1].pdepth);
    return -1;
}

int gr_matcher_accept(gr_matcher *m, int32_t token) {
    const gr_vocab *v = m->c->v;
    if (!m || token < 0 || token >= v->n_tokens) return -1;
    if (v->is_eos[token]) return feed(m, NULL, 0, 1);
    size_t l = v->off[token + 1] - v->off[token];
    if (v->special[token] || l == 0 || l > GR_MAX_TOKEN_BYTES) return -1;
    return feed(m, v->blob + v->off[token], l, 0);
}

int gr_matcher_accept_bytes(gr_matcher *m, const uint8_t *bytes, size_t n) {
    if (!m || (n && !bytes)) return -1;
    return feed(m, bytes, n, 0);
}

int gr_matcher_rollback(gr_matcher *m, int n) {
    if (!m || n < 0 || n > m->n_tok) return -1;
    if (n == 0) return 0;
    m->n_tok -= n;
    m->n_hist = m->tok[m->n_tok];
    ey_truncate(m->p, m->hist[m->n_hist - 1].pdepth);
    return 0;
}

int gr_matcher_can_end(const gr_matcher *cm) {
    if (!cm) return 0;
    gr_matcher *m = (gr_matcher *)cm; /* the parser is scratch: restored before returning */
    gm_cfg cur = m->hist[m->n_hist - 1];
    int r = cfg_can_end(m, &cur);
    ey_truncate(m->p, cur.pdepth);
    return r;
}

int gr_matcher_is_done(const gr_matcher *cm) {
    if (!cm) return 0;
    gr_matcher *m = (gr_matcher *)cm;
    gm_cfg cur = m->hist[m->n_hist - 1];
    if (cur.ended) return 1;
    if (!cfg_can_end(m, &cur)) return 0;
    int more = 0;
    for (int b = 0; b < 256 && !more; b++) {
        gm_cfg nx;
        more = step(m, &cur, (uint8_t)b, &nx);
    }
    ey_truncate(m->p, cur.pdepth);
    return !more;
}

size_t gr_matcher_forced(gr_matcher *m, uint8_t *buf, size_t cap) {
    if (!m) return 0;
    size_t before = m->n_hist, n = 0;
    while (n < cap) {
        gm_cfg cur = m->hist[m->n_hist - 1];
        if (cur.ended || cfg_can_end(m, &cur)) break;
        int found = -1, count = 0;
        gm_cfg nx, keep;
        for (int b = 0; b < 256 && count < 2; b++)
            if (step(m, &cur, (uint8_t)b, &nx)) {
                count++;
                found = b;
                keep = nx;
            }
        if (count != 1) break;
        /* redo the single step so the parser holds its sets */
        if (!step(m, &cur, (uint8_t)found, &keep) || push_hist(m, &keep)) break;
        buf[n++] = (uint8_t)found;
    }
    m->n_hist = before;
    ey_truncate(m->p, m->hist[before - 1].pdepth);
    return n;
}
