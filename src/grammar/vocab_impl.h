/* The vocabulary as the matcher walks it (gr_vocab of matcher.h): the tokens' bytes, and the token
 * trie packed for the walk with the facts about each subtree that let the walk take it whole. Built
 * once per model (vocab.c); immutable afterwards but for its internally locked caches. */
#ifndef PG_GRAMMAR_VOCAB_IMPL_H
#define PG_GRAMMAR_VOCAB_IMPL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "grammar/matcher.h"
#include "grammar/vwalk_cache.h"

#define GR_MAX_TOKEN_BYTES 1024 /* longer tokens are never allowed */

/* A trie node, packed for the walk: the subtree of node i is nodes i .. skip-1; the tokens ending
 * at node i are ntok[tok .. nodes[i + 1].tok) (preorder, so a subtree's tokens are contiguous:
 * ntok[tok .. nodes[skip].tok)); tok1 is the first of them, or a spare bit past the mask's words
 * when there is none (so the walk sets it without a branch), bit 31 set when there are more;
 * height: the deepest node under it, counted from the node (at most 255). */
#define GM_MULTI 0x80000000u
#define GM_WIDE 16
typedef struct {
    uint32_t skip, tok, tok1;
    uint16_t depth;
    uint8_t byte, height;
} gm_node;

struct gr_vocab {
    int32_t n_tokens;
    uint8_t *blob;
    size_t *off; /* [n_tokens + 1] */
    uint8_t *special;
    uint8_t *is_eos;
    int32_t *eos; /* the distinct eos tokens */
    int n_eos;
    /* trie in preorder; node 0 is the root; nodes[n_nodes] is a sentinel (tok = token count) */
    int n_nodes;
    gm_node *nodes;
    int32_t *ntok;
    struct {
        uint32_t set;    /* the bytes found strictly under the node: bsets[set] */
        uint32_t height; /* the deepest node under it, counted from the node (0: a leaf) */
    } *under;            /* [n_nodes] */
    uint64_t (*bsets)[4]; /* distinct byte sets under nodes; bsets[0] is the empty set */
    int n_bsets;
    uint8_t *u8; /* [n_nodes]: the UTF-8 decoder state after the node's path (U8_*), and U8_OK when
                    every text under the node continues it as well-formed UTF-8 (possibly cut short) */
    uint8_t *cheight; /* [n_nodes]: the most characters (begun) on a path under the node, at most 255 */
    /* children of wide nodes (GM_WIDE or more children), for walks that visit only some of them:
     * node i's children are kids[wide[i] - 1 .. wide[i] - 1 + n) in byte order, n = kids[wide[i] - 2]
     * (wide[i] 0: not indexed) */
    uint32_t *wide;
    uint32_t *kids;
    int max_depth;
    uint64_t (*dbytes)[4]; /* [max_depth + 2]: dbytes[d], the bytes at depth d or deeper in the trie */
    gm_vwcache vw; /* lexer-only walks shared by every grammar compiled for it (vwalk_cache.h) */
    /* token indexes by text class (vocab_class.c), built on first use, kept until gr_vocab_free */
    pthread_mutex_t tc_lock;
    int tc_lock_init, tc_n, tc_on;
    struct gm_tclass *tc;
};

/* UTF-8 decoder states (RFC 3629's well-formed sequences): U8_BOUNDARY between characters,
 * U8_NEED1..3 continuation bytes 80..BF still due, and the four leads whose second byte is narrower
 * (E0: A0..BF, ED: 80..9F, F0: 90..BF, F4: 80..8F). */
enum { U8_BOUNDARY, U8_NEED1, U8_NEED2, U8_NEED3, U8_E0, U8_ED, U8_F0, U8_F4, U8_BAD = 15, U8_OK = 0x80 };


/* ---- text classes (vocab_class.c) ----
 * A text class: the characters made of one ASCII byte of a set, and (when mb) every well-formed
 * non-ASCII UTF-8 character, e.g. the body of a JSON string. For a class, the first GM_TCLASS_D
 * characters of the vocabulary's trie split into class nodes (the path from the root is at most
 * GM_TCLASS_D class characters, the last possibly cut short but well-formed so far), the subtrees
 * of exits (a node whose parent is a class node and whose own byte does not continue the class
 * text) and the subtrees of frontier nodes (a class node beginning character GM_TCLASS_D + 1). A
 * lexer state that counts the class's characters (each one leads x_j to x_{j+1}, and after r of them
 * none is alive) allows the class tokens of at most min(r, GM_TCLASS_D) characters begun, plus what
 * the exits whose parent has at most r characters allow, plus (when r > GM_TCLASS_D) what the
 * frontier subtrees allow: the matcher takes the first from the index and walks the others. */
/* Characters indexed: tokens longer in the class are few (Qwen3, JSON string body: 50-60 frontier
 * nodes at 32 characters); the counting state's chain is followed as far (16 / 32 / 64 measured on
 * MaskBench: 32 the fastest, by a little). */
#define GM_TCLASS_D 32
#define GM_TCLASS_MAX 16 /* classes kept per vocabulary (past it: none built, plain walks) */
#define GM_TCLASS_FRONT 255
typedef struct {
    uint32_t node; /* the exit or frontier node */
    uint8_t q;     /* the characters begun on its parent's path; GM_TCLASS_FRONT: a frontier node */
    uint8_t np;    /* bytes of the character cut short on its parent's path (0: it ends a character) */
    uint8_t pb[3]; /* those bytes */
} gm_texit;
typedef struct gm_tclass gm_tclass;
struct gm_tclass {
    gm_tclass *next;
    uint64_t ascii[2];
    int mb;
    uint32_t *rows;   /* [(GM_TCLASS_D + 1) * words]: row L, the class tokens of at most L characters begun */
    int32_t *row_n;   /* [GM_TCLASS_D + 1]: their counts */
    uint32_t ex_upto[GM_TCLASS_D + 2]; /* ex_upto[q + 1]: how many exits have at most q characters begun */
    uint32_t n_front;                  /* how many frontier nodes */
    /* exits and frontier nodes together in trie order (disjoint subtrees), so that a walk of them in
     * this order finds the lexeme ends in trie order */
    uint32_t n_ex;
    gm_texit *ex;
};
/* The index of the class (ascii[2]: bits of the ASCII bytes; mb), built on first use; NULL when out
 * of memory, past GM_TCLASS_MAX classes, or switched off (gr_vocab_set_count_walk). Thread-safe;
 * the index stays valid until gr_vocab_free. */
const gm_tclass *gm_vocab_tclass(gr_vocab *v, const uint64_t ascii[2], int mb);
void gm_vocab_tclass_free(gr_vocab *v);

#endif
