/* The vocabulary's cache of lexer-only trie walks, shared by every grammar compiled for one
 * vocabulary (gr_vocab_set_walk_cache in matcher.h).
 *
 * A lexer-only walk (the matcher's gm_lexcache: the tokens that stay inside the current lexeme and
 * the trie nodes where a lexeme would end) is a function of the labelled automaton reachable from
 * its lexer state: which states are dead, which accept something (a lexeme may end there), and the
 * `fresh` flag; the chains and uniform sets that take subtrees whole are derived from the same
 * transitions. Two states (of any two lexers) whose reachable automata are isomorphic thus give the
 * same mask and the same lexeme ends, the lexer states before the ends corresponding through the
 * isomorphism. The canonical form numbers the states breadth first (bytes ascending) from the start
 * and writes, per state, its label and its transitions as byte runs; equal forms = isomorphic
 * automata (the form is compared whole, the hash only finds it). Only automata of at most
 * GM_CANON_STATES states are formed (JSON strings and numbers: 2-30); past it the grammar's own cache
 * and walk serve. */
#ifndef PG_GRAMMAR_VWALK_CACHE_H
#define PG_GRAMMAR_VWALK_CACHE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "grammar/lexer.h"

#define GM_CANON_STATES 32
#define GM_CANON_HBITS 8
#define GM_CANON_SIG (1 + GM_CANON_STATES * (1 + 2 * 256))
typedef struct {
    int n;
    lx_state st[GM_CANON_STATES];     /* canonical index -> state */
    lx_state hk[1 << GM_CANON_HBITS]; /* state -> index map (LX_DEAD: free) */
    uint8_t hv[1 << GM_CANON_HBITS];
    size_t len;
    uint8_t sig[GM_CANON_SIG];
} gm_canon;

/* The canonical form of the automaton reachable from s (s != LX_DEAD) into cn. 0 ok; -1 when it has
 * more than GM_CANON_STATES states or the lexer reached its DFA bounds. */
int gm_canon_build(lx_lexer *lx, const lx_table *tb, lx_state s, int fresh, gm_canon *cn);
uint64_t gm_canon_hash(const gm_canon *cn);

/* One kept walk: immutable once in the cache, kept until the cache is freed (readers hold no lock). */
typedef struct gm_vwalk gm_vwalk;
struct gm_vwalk {
    gm_vwalk *next;
    uint64_t hash;
    size_t sig_len;
    uint8_t *sig;
    uint32_t *mask; /* [words] */
    int32_t count;
    int n_b;
    int *bnode;
    uint8_t *bidx; /* canonical index of the lexer state before each lexeme end */
};

/* Chained hash table of walks by canonical form, under its own lock. */
typedef struct {
    pthread_mutex_t lock;
    int lock_init;
    gm_vwalk **tab;
    size_t cap, n, bytes, max; /* max 0: off */
    uint64_t hits;
} gm_vwcache;

void gm_vwcache_init(gm_vwcache *vc, size_t max_bytes);
void gm_vwcache_free(gm_vwcache *vc); /* (every walk; the struct itself is the caller's) */
void gm_vwcache_set_max(gm_vwcache *vc, size_t max_bytes);
void gm_vwcache_stats(gm_vwcache *vc, size_t *entries, uint64_t *hits);
/* 1 if walks are looked up and kept (a hint read without the lock). */
int gm_vwcache_on(const gm_vwcache *vc);
/* The walk of canonical form cn (hash h), or NULL; a hit is counted. */
const gm_vwalk *gm_vwcache_find(gm_vwcache *vc, uint64_t h, const gm_canon *cn);
/* Keeps a walk from the state whose canonical form is cn (hash h): its mask[words] and count, and
 * its lexeme ends (trie node bnode[b], lexer state bls[b] before it, every such state in cn).
 * Nothing when it is there already, past the cache's size, or out of memory. */
void gm_vwcache_publish(gm_vwcache *vc, const gm_canon *cn, uint64_t h, const uint32_t *mask, size_t words,
                        int32_t count, int n_b, const int *bnode, const lx_state *bls);

#endif
