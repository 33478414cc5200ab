/* Earley parser over lexemes (earley.h). Items are (dotted position, origin set); a dotted
 * position numbers "rule r with the dot before its i-th symbol". Sets live on one stack of items;
 * each finished set keeps its items waiting on a nonterminal sorted by that nonterminal (for
 * completion), its allowed-terminal bitset and whether it may end. */
#include "grammar/earley.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/grammar_impl.h"

struct ey_grammar {
    int n_syms;    /* grammar symbols + 1 (the augmented start S' = n_syms - 1) */
    int n_terms;
    int words;
    int *term_of;  /* [n_syms] terminal index or -1 */
    int *term_sym; /* [n_terms] */
    uint8_t *nullable; /* [n_syms] */
    /* dotted positions: pos_sym[p] = symbol after the dot or -1 at the end; pos_lhs[p] */
    int n_pos;
    int *pos_sym, *pos_lhs;
    /* rules of each nonterminal: first positions, CSR */
    int *nt_rule_off; /* [n_syms + 1] */
    int *nt_rule_pos; /* dot-0 positions */
    int accept_pos;   /* S' -> start . */
};

typedef struct {
    int pos, origin;
} ey_item;

typedef struct {
    int sym, item; /* an item of the set waiting on nonterminal sym */
} ey_wait;

/* A memoized scan: the set made by scanning terms on the stack named parent; its waits' items are
 * relative to the set's first item. Only sets of at least EY_MEMO_MIN_WORK insertions are kept
 * (cheaper ones are rebuilt), and at most EY_MEMO_MAX_ITEMS items (bounded memory). */
#define EY_MEMO_SLOTS 256
#define EY_MEMO_MIN_WORK 64
#define EY_MEMO_MAX_ITEMS 4096
typedef struct ey_memo {
    uint64_t parent, child, hash; /* parent 0: empty slot */
    uint64_t *terms;              /* [words] */
    ey_item *items;
    ey_wait *waits;
    uint64_t *allowed; /* [words] */
    size_t n_items, n_waits, work;
    uint8_t can_end;
} ey_memo;

struct ey_parser {
    const ey_grammar *g;
    ey_item *items;
    size_t n_items, cap_items;
    ey_wait *waits;
    size_t n_waits, cap_waits;
    /* per set d: items [set_item[d], set_item[d+1]), waits [set_wait[d], set_wait[d+1]) */
    size_t *set_item, *set_wait;
    uint64_t *allowed; /* [cap_sets][words] */
    uint8_t *can_end;
    int depth, cap_sets;
    /* dedup of the set being built */
    uint32_t *hkey_gen;
    ey_item *hkey;
    size_t hcap;
    uint32_t gen;
    uint32_t *pred_gen; /* [n_syms] */
    size_t work; /* item insertions tried for the set being built */
    uint64_t total_work; /* all insertions tried since creation */
    /* scan memo: serial[d] names the stack of sets 0..d (equal serials, equal stacks), so a scan
     * of the same terminals on the same serial gives the same set; memo[] keeps such sets */
    uint64_t *serial; /* [cap_sets] */
    uint64_t next_serial;
    struct ey_memo *memo; /* [EY_MEMO_SLOTS], allocated on first use */
    char err[160];
};

int ey_n_terminals(const ey_grammar *eg) { return eg->n_terms; }
int ey_terminal_symbol(const ey_grammar *eg, int t) { return eg->term_sym[t]; }
int ey_words(const ey_grammar *eg) { return eg->words; }

void ey_grammar_free(ey_grammar *eg) {
    if (!eg) return;
    free(eg->term_of);
    free(eg->term_sym);
    free(eg->nullable);
    free(eg->pos_sym);
    free(eg->pos_lhs);
    free(eg->nt_rule_off);
    free(eg->nt_rule_pos);
    free(eg);
}

/* Fixpoint over rules: marks[lhs] = 1 once some rule has every rhs entry marked. Terminals are
 * marked initially when term_ok. Linear: each rule keeps a count of unmarked entries. */
static int fixpoint(const gr_grammar *g, uint8_t *mark, int term_ok, const uint8_t *term_mark) {
    int n = g->n_syms;
    int *cnt = malloc(((size_t)g->n_rules + 1) * sizeof *cnt);
    int *occ_off = calloc((size_t)n + 2, sizeof *occ_off);
    int *occ = malloc(((size_t)g->n_rhs + 1) * sizeof *occ);
    int *queue = malloc(((size_t)n + 1) * sizeof *queue);
    if (!cnt || !occ_off || !occ || !queue) {
        free(cnt), free(occ_off), free(occ), free(queue);
        return -1;
    }
    for (int i = 0; i < n; i++) mark[i] = (g->syms[i].kind != GR_SYM_NT) && (term_ok || (term_mark && term_mark[i]));
    for (int r = 0; r < g->n_rules; r++)
        for (int i = 0; i < g->rhs_len[r]; i++) occ_off[g->rhs[g->rhs_off[r] + i] + 1]++;
    for (int i = 0; i < n; i++) occ_off[i + 1] += occ_off[i];
    int *fill = calloc((size_t)n + 1, sizeof *fill);
    if (!fill) {
        free(cnt), free(occ_off), free(occ), free(queue);
        return -1;
    }
    for (int r = 0; r < g->n_rules; r++)
        for (int i = 0; i < g->rhs_len[r]; i++) {
            int s = g->rhs[g->rhs_off[r] + i];
            occ[occ_off[s] + fill[s]++] = r;
        }
    free(fill);
    int qn = 0;
    for (int r = 0; r < g->n_rules; r++) {
        cnt[r] = 0;
        for (int i = 0; i < g->rhs_len[r]; i++)
            if (!mark[g->rhs[g->rhs_off[r] + i]]) cnt[r]++;
    }
    for (int r = 0; r < g->n_rules; r++)
        if (cnt[r] == 0 && !mark[g->lhs[r]]) {
            mark[g->lhs[r]] = 1;
            queue[qn++] = g->lhs[r];
        }
    for (int qi = 0; qi < qn; qi++) {
        int s = queue[qi];
        for (int k = occ_off[s]; k < occ_off[s + 1]; k++) {
            int r = occ[k];
            if (--cnt[r] == 0 && !mark[g->lhs[r]]) {
                mark[g->lhs[r]] = 1;
                queue[qn++] = g->lhs[r];
            }
        }
    }
    free(cnt), free(occ_off), free(occ), free(queue);
    return 0;
}

ey_grammar *ey_grammar_new(const gr_grammar *g, const uint8_t *empty_terms, char *err, size_t cap) {
    if (!g || g->err[0]) {
        snprintf(err, cap, "grammar has an error: %s", g ? g->err : "none given");
        return NULL;
    }
    if (g->start < 0) {
        snprintf(err, cap, "grammar has no start symbol");
        return NULL;
    }
    ey_grammar *eg = calloc(1, sizeof *eg);
    uint8_t *prod = malloc((size_t)g->n_syms + 1);
    if (!eg || !prod) goto oom;
    if (fixpoint(g, prod, 1, NULL)) goto oom;
    if (!prod[g->start]) {
        const gr_symbol *s = &g->syms[g->start];
        snprintf(err, cap, "the start symbol %s%.*s derives no finite text (unproductive)", s->text ? "" : "#",
                 s->text ? (int)(s->len > 60 ? 60 : s->len) : 0, s->text ? s->text : "");
        free(prod);
        ey_grammar_free(eg);
        return NULL;
    }
    int n = g->n_syms + 1;
    eg->n_syms = n;
    eg->term_of = malloc((size_t)n * sizeof(int));
    eg->term_sym = malloc((size_t)n * sizeof(int));
    eg->nullable = calloc((size_t)n, 1);
    if (!eg->term_of || !eg->term_sym || !eg->nullable) goto oom;
    for (int i = 0; i < n; i++) {
        eg->term_of[i] = -1;
        if (i < g->n_syms && g->syms[i].kind != GR_SYM_NT) {
            eg->term_of[i] = eg->n_terms;
            eg->term_sym[eg->n_terms++] = i;
        }
    }
    eg->words = (eg->n_terms + 1 + 63) / 64;
    if (fixpoint(g, eg->nullable, 0, empty_terms)) goto oom;
    eg->nullable[n - 1] = eg->nullable[g->start];
    /* keep rules whose symbols are all productive; plus S' -> start */
    int n_keep = 0;
    size_t n_pos = 0;
    for (int r = 0; r < g->n_rules; r++) {
        int ok = prod[g->lhs[r]];
        for (int i = 0; ok && i < g->rhs_len[r]; i++) ok = prod[g->rhs[g->rhs_off[r] + i]];
        if (ok) {
            n_keep++;
            n_pos += (size_t)g->rhs_len[r] + 1;
        }
    }
    n_pos += 2;
    eg->n_pos = (int)n_pos;
    eg->pos_sym = malloc(n_pos * sizeof(int));
    eg->pos_lhs = malloc(n_pos * sizeof(int));
    eg->nt_rule_off = calloc((size_t)n + 1, sizeof(int));
    eg->nt_rule_pos = malloc(((size_t)n_keep + 1) * sizeof(int));
    if (!eg->pos_sym || !eg->pos_lhs || !eg->nt_rule_off || !eg->nt_rule_pos) goto oom;
    for (int r = 0; r < g->n_rules; r++) {
        int ok = prod[g->lhs[r]];
        for (int i = 0; ok && i < g->rhs_len[r]; i++) ok = prod[g->rhs[g->rhs_off[r] + i]];
        if (ok) eg->nt_rule_off[g->lhs[r] + 1]++;
    }
    eg->nt_rule_off[n - 1 + 1]++; /* S' */
    for (int i = 0; i < n; i++) eg->nt_rule_off[i + 1] += eg->nt_rule_off[i];
    int *fill = calloc((size_t)n, sizeof(int));
    if (!fill) goto oom;
    int p = 0;
    for (int r = 0; r <= g->n_rules; r++) {
        int lhs, len;
        const int *rhs;
        if (r < g->n_rules) {
            int ok = prod[g->lhs[r]];
            for (int i = 0; ok && i < g->rhs_len[r]; i++) ok = prod[g->rhs[g->rhs_off[r] + i]];
            if (!ok) continue;
            lhs = g->lhs[r], len = g->rhs_len[r], rhs = len ? g->rhs + g->rhs_off[r] : NULL; /* no rhs array when every rule is empty */
        } else {
            lhs = n - 1, len = 1, rhs = &g->start;
        }
        eg->nt_rule_pos[eg->nt_rule_off[lhs] + fill[lhs]++] = p;
        for (int i = 0; i < len; i++) {
            eg->pos_sym[p] = rhs[i];
            eg->pos_lhs[p++] = lhs;
        }
        eg->pos_sym[p] = -1;
        eg->pos_lhs[p++] = lhs;
        if (r == g->n_rules) eg->accept_pos = p - 1;
    }
    eg->n_pos = p;
    free(fill);
    free(prod);
    return eg;
oom:
    snprintf(err, cap, "out of memory preparing the grammar");
    free(prod);
    ey_grammar_free(eg);
    return NULL;
}

/* ---- parser ---- */

void ey_parser_free(ey_parser *p) {
    if (!p) return;
    free(p->items);
    free(p->waits);
    free(p->set_item);
    free(p->set_wait);
    free(p->allowed);
    free(p->can_end);
    free(p->hkey_gen);
    free(p->hkey);
    free(p->pred_gen);
    free(p->serial);
    if (p->memo)
        for (int k = 0; k < EY_MEMO_SLOTS; k++) {
            free(p->memo[k].terms), free(p->memo[k].items), free(p->memo[k].waits), free(p->memo[k].allowed);
        }
    free(p->memo);
    free(p);
}

static int reserve_sets(ey_parser *p, int need) {
    if (need <= p->cap_sets) return 0;
    int nc = p->cap_sets ? p->cap_sets * 2 : 64;
    while (nc < need) nc *= 2;
    size_t *a = realloc(p->set_item, ((size_t)nc + 1) * sizeof *a);
    if (!a) return -1;
    p->set_item = a;
    size_t *b = realloc(p->set_wait, ((size_t)nc + 1) * sizeof *b);
    if (!b) return -1;
    p->set_wait = b;
    uint64_t *c = realloc(p->allowed, (size_t)nc * (size_t)p->g->words * sizeof *c);
    if (!c) return -1;
    p->allowed = c;
    uint8_t *d = realloc(p->can_end, (size_t)nc);
    if (!d) return -1;
    p->can_end = d;
    uint64_t *e = realloc(p->serial, (size_t)nc * sizeof *e);
    if (!e) return -1;
    p->serial = e;
    p->cap_sets = nc;
    return 0;
}

static size_t hslot(const ey_parser *p, int pos, int origin) {
    /* (the product's low 32 bits depend on origin alone: fold the high half in, or every item of
     * one origin lands in one probe chain) */
    uint64_t h = ((uint64_t)(uint32_t)pos << 32 | (uint32_t)origin) * 0x9E3779B97F4A7C15ULL;
    h ^= h >> 32;
    return (size_t)(h ^ h >> 17) & (p->hcap - 1);
}

/* -1 oom / limit */
static int add_item(ey_parser *p, int pos, int origin, size_t set_begin) {
    if (++p->work > EY_MAX_WORK) {
        snprintf(p->err, sizeof p->err, "grammar too ambiguous: more than %d Earley steps at one position", EY_MAX_WORK);
        return -1;
    }
    if ((p->n_items - set_begin + 1) * 2 > p->hcap) {
        if (p->n_items - set_begin >= EY_MAX_ITEMS) {
            snprintf(p->err, sizeof p->err, "grammar too ambiguous: more than %d Earley items at one position",
                     EY_MAX_ITEMS);
            return -1;
        }
        size_t nc = p->hcap ? p->hcap * 2 : 1024;
        uint32_t *ng = calloc(nc, sizeof *ng);
        ey_item *nk = malloc(nc * sizeof *nk);
        if (!ng || !nk) {
            free(ng), free(nk);
            snprintf(p->err, sizeof p->err, "out of memory");
            return -1;
        }
        free(p->hkey_gen), free(p->hkey);
        p->hkey_gen = ng, p->hkey = nk, p->hcap = nc;
        for (size_t i = set_begin; i < p->n_items; i++) {
            size_t j = hslot(p, p->items[i].pos, p->items[i].origin);
            while (p->hkey_gen[j] == p->gen) j = (j + 1) & (p->hcap - 1);
            p->hkey_gen[j] = p->gen;
            p->hkey[j] = p->items[i];
        }
    }
    size_t j = hslot(p, pos, origin);
    while (p->hkey_gen[j] == p->gen) {
        if (p->hkey[j].pos == pos && p->hkey[j].origin == origin) return 0;
        j = (j + 1) & (p->hcap - 1);
    }
    if (p->n_items + 1 > p->cap_items) {
        size_t nc = p->cap_items ? p->cap_items * 2 : 1024;
        ey_item *q = realloc(p->items, nc * sizeof *q);
        if (!q) {
            snprintf(p->err, sizeof p->err, "out of memory");
            return -1;
        }
        p->items = q, p->cap_items = nc;
    }
    p->hkey_gen[j] = p->gen;
    p->hkey[j] = (ey_item){pos, origin};
    p->items[p->n_items++] = (ey_item){pos, origin};
    return 0;
}

static int cmp_wait(const void *a, const void *b) {
    const ey_wait *x = a, *y = b;
    if (x->sym != y->sym) return x->sym < y->sym ? -1 : 1;
    return (x->item > y->item) - (x->item < y->item);
}

/* Closes the set at depth d (items from set_item[d] already seeded), then indexes it. */
static int close_set(ey_parser *p, int d) {
    const ey_grammar *g = p->g;
    size_t begin = p->set_item[d];
    p->total_work += p->work;
    p->work = 0;
    p->gen++;
    if (p->gen == 0) { /* wrapped: clear stamps */
        memset(p->hkey_gen, 0, p->hcap * sizeof *p->hkey_gen);
        memset(p->pred_gen, 0, (size_t)g->n_syms * sizeof *p->pred_gen);
        p->gen = 1;
    }
    /* register the seeds in the dedup table (they are distinct by construction? not always) */
    size_t n_seed = p->n_items - begin;
    p->n_items = begin;
    for (size_t i = 0; i < n_seed; i++) {
        ey_item it = p->items[begin + i];
        /* items[begin + i] may be overwritten only at index <= begin + i: safe */
        if (add_item(p, it.pos, it.origin, begin)) return -1;
    }
    for (size_t i = begin; i < p->n_items; i++) {
        ey_item it = p->items[i];
        int s = g->pos_sym[it.pos];
        if (s < 0) {
            if (it.origin == d) continue; /* empty: handled by nullable advance */
            int a = g->pos_lhs[it.pos];
            /* items of set origin waiting on a */
            size_t lo = p->set_wait[it.origin], hi = p->set_wait[it.origin + 1];
            while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                if (p->waits[mid].sym < a)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            for (size_t k = lo; k < p->set_wait[it.origin + 1] && p->waits[k].sym == a; k++) {
                ey_item w = p->items[p->waits[k].item];
                if (add_item(p, w.pos + 1, w.origin, begin)) return -1;
            }
        } else if (g->term_of[s] >= 0) {
            if (g->nullable[s] && add_item(p, it.pos + 1, it.origin, begin)) return -1;
        } else {
            if (p->pred_gen[s] != p->gen) {
                p->pred_gen[s] = p->gen;
                for (int k = g->nt_rule_off[s]; k < g->nt_rule_off[s + 1]; k++)
                    if (add_item(p, g->nt_rule_pos[k], d, begin)) return -1;
            }
            if (g->nullable[s] && add_item(p, it.pos + 1, it.origin, begin)) return -1;
        }
    }
    /* index */
    uint64_t *al = p->allowed + (size_t)d * (size_t)g->words;
    memset(al, 0, (size_t)g->words * sizeof *al);
    p->can_end[d] = 0;
    size_t w0 = p->set_wait[d];
    p->n_waits = w0;
    for (size_t i = begin; i < p->n_items; i++) {
        int pos = p->items[i].pos;
        int s = g->pos_sym[pos];
        if (s < 0) {
            if (pos == g->accept_pos && p->items[i].origin == 0) p->can_end[d] = 1;
            continue;
        }
        int t = g->term_of[s];
        if (t >= 0) {
            al[t >> 6] |= 1ULL << (t & 63);
            continue;
        }
        if (p->n_waits + 1 > p->cap_waits) {
            size_t nc = p->cap_waits ? p->cap_waits * 2 : 1024;
            ey_wait *q = realloc(p->waits, nc * sizeof *q);
            if (!q) {
                snprintf(p->err, sizeof p->err, "out of memory");
                return -1;
            }
            p->waits = q, p->cap_waits = nc;
        }
        p->waits[p->n_waits++] = (ey_wait){s, (int)i};
    }
    qsort(p->waits + w0, p->n_waits - w0, sizeof *p->waits, cmp_wait);
    p->set_item[d + 1] = p->n_items;
    p->set_wait[d + 1] = p->n_waits;
    return 0;
}

ey_parser *ey_parser_new(const ey_grammar *g) {
    ey_parser *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->g = g;
    p->gen = 1;
    p->pred_gen = calloc((size_t)g->n_syms, sizeof *p->pred_gen);
    if (!p->pred_gen || reserve_sets(p, 2)) goto fail;
    p->set_item[0] = 0;
    p->set_wait[0] = 0;
    for (int k = g->nt_rule_off[g->n_syms - 1]; k < g->nt_rule_off[g->n_syms]; k++)
        if (add_item(p, g->nt_rule_pos[k], 0, 0)) goto fail;
    if (close_set(p, 0)) goto fail;
    p->serial[0] = p->next_serial = 1;
    p->depth = 1;
    return p;
fail:
    ey_parser_free(p);
    return NULL;
}

int ey_depth(const ey_parser *p) { return p->depth; }

void ey_truncate(ey_parser *p, int depth) {
    if (depth < 1 || depth >= p->depth) return;
    p->depth = depth;
    p->n_items = p->set_item[depth];
    p->n_waits = p->set_wait[depth];
}

static uint64_t terms_hash(const uint64_t *terms, int words, uint64_t parent) {
    uint64_t h = parent * 0x9E3779B97F4A7C15ULL;
    for (int w = 0; w < words; w++) h = (h ^ terms[w]) * 0x100000001B3ULL, h ^= h >> 29;
    return h;
}

/* Pushes the memoized set e at depth d; -1 out of memory (parser unchanged). */
static int memo_push(ey_parser *p, int d, const ey_memo *e) {
    size_t begin = p->n_items, w0 = p->n_waits;
    if (begin + e->n_items > p->cap_items) {
        size_t nc = p->cap_items ? p->cap_items : 1024;
        while (nc < begin + e->n_items) nc *= 2;
        ey_item *q = realloc(p->items, nc * sizeof *q);
        if (!q) return -1;
        p->items = q, p->cap_items = nc;
    }
    if (w0 + e->n_waits > p->cap_waits) {
        size_t nc = p->cap_waits ? p->cap_waits : 1024;
        while (nc < w0 + e->n_waits) nc *= 2;
        ey_wait *q = realloc(p->waits, nc * sizeof *q);
        if (!q) return -1;
        p->waits = q, p->cap_waits = nc;
    }
    memcpy(p->items + begin, e->items, e->n_items * sizeof *e->items);
    for (size_t k = 0; k < e->n_waits; k++) p->waits[w0 + k] = (ey_wait){e->waits[k].sym, e->waits[k].item + (int)begin};
    p->n_items = begin + e->n_items;
    p->n_waits = w0 + e->n_waits;
    memcpy(p->allowed + (size_t)d * (size_t)p->g->words, e->allowed, (size_t)p->g->words * sizeof *e->allowed);
    p->can_end[d] = e->can_end;
    p->set_item[d + 1] = p->n_items;
    p->set_wait[d + 1] = p->n_waits;
    p->total_work += p->work; /* as close_set would: the callers' work budgets see the same counts */
    p->work = e->work;
    p->serial[d] = e->child;
    p->depth = d + 1;
    return 0;
}

/* Keeps the set just built at depth d (from parent, terms) in the memo; nothing if out of memory. */
static void memo_keep(ey_parser *p, int d, uint64_t parent, uint64_t hash, const uint64_t *terms, size_t work) {
    size_t begin = p->set_item[d], n = p->set_item[d + 1] - begin, nw = p->set_wait[d + 1] - p->set_wait[d];
    if (work < EY_MEMO_MIN_WORK || n > EY_MEMO_MAX_ITEMS) return;
    if (!p->memo && !(p->memo = calloc(EY_MEMO_SLOTS, sizeof *p->memo))) return;
    int words = p->g->words;
    ey_memo *e = &p->memo[hash & (EY_MEMO_SLOTS - 1)];
    if (!e->terms) {
        e->terms = malloc((size_t)words * sizeof *e->terms);
        e->allowed = malloc((size_t)words * sizeof *e->allowed);
        if (!e->terms || !e->allowed) {
            free(e->terms), free(e->allowed);
            e->terms = e->allowed = NULL;
            return;
        }
    }
    ey_item *it = realloc(e->items, (n ? n : 1) * sizeof *it);
    if (it) e->items = it;
    ey_wait *wt = it ? realloc(e->waits, (nw ? nw : 1) * sizeof *wt) : NULL;
    if (wt) e->waits = wt;
    if (!it || !wt) {
        e->parent = 0;
        return;
    }
    memcpy(e->items, p->items + begin, n * sizeof *it);
    for (size_t k = 0; k < nw; k++) {
        ey_wait w = p->waits[p->set_wait[d] + k];
        e->waits[k] = (ey_wait){w.sym, w.item - (int)begin};
    }
    memcpy(e->terms, terms, (size_t)words * sizeof *terms);
    memcpy(e->allowed, p->allowed + (size_t)d * (size_t)words, (size_t)words * sizeof *e->allowed);
    e->can_end = p->can_end[d];
    e->n_items = n, e->n_waits = nw, e->work = work;
    e->parent = parent, e->child = p->serial[d], e->hash = hash;
}

int ey_scan(ey_parser *p, const uint64_t *terms) {
    const ey_grammar *g = p->g;
    int d = p->depth;
    if (reserve_sets(p, d + 2)) {
        snprintf(p->err, sizeof p->err, "out of memory");
        return -2;
    }
    uint64_t parent = p->serial[d - 1], hash = terms_hash(terms, g->words, parent);
    if (p->memo) {
        const ey_memo *e = &p->memo[hash & (EY_MEMO_SLOTS - 1)];
        if (e->parent == parent && e->hash == hash && !memcmp(e->terms, terms, (size_t)g->words * sizeof *terms)) {
            p->set_item[d] = p->n_items;
            p->set_wait[d] = p->n_waits;
            if (!memo_push(p, d, e)) return 0;
            snprintf(p->err, sizeof p->err, "out of memory");
            return -2;
        }
    }
    size_t begin = p->n_items;
    p->set_item[d] = begin;
    p->set_wait[d] = p->n_waits;
    for (size_t i = p->set_item[d - 1]; i < begin; i++) {
        int s = g->pos_sym[p->items[i].pos];
        if (s < 0) continue;
        int t = g->term_of[s];
        if (t < 0 || !(terms[t >> 6] >> (t & 63) & 1)) continue;
        if (p->n_items + 1 > p->cap_items) {
            size_t nc = p->cap_items ? p->cap_items * 2 : 1024;
            ey_item *q = realloc(p->items, nc * sizeof *q);
            if (!q) {
                p->n_items = begin;
                snprintf(p->err, sizeof p->err, "out of memory");
                return -2;
            }
            p->items = q, p->cap_items = nc;
        }
        p->items[p->n_items++] = (ey_item){p->items[i].pos + 1, p->items[i].origin};
    }
    if (p->n_items == begin) return -1;
    if (close_set(p, d)) {
        p->n_items = begin;
        p->n_waits = p->set_wait[d];
        return -2;
    }
    p->serial[d] = ++p->next_serial;
    p->depth = d + 1;
    memo_keep(p, d, parent, hash, terms, p->work); /* (close_set leaves the set's own count in work) */
    return 0;
}

const uint64_t *ey_allowed(const ey_parser *p) {
    return p->allowed + (size_t)(p->depth - 1) * (size_t)p->g->words;
}

int ey_can_end(const ey_parser *p) { return p->can_end[p->depth - 1]; }

const char *ey_parser_error(const ey_parser *p) { return p->err; }

uint64_t ey_work(const ey_parser *p) { return p->total_work + p->work; }
