/* The vocabulary as the matcher walks it (gr_vocab of matcher.h): the tokens' bytes, and the token
 * trie packed for the walk with the facts about each subtree that let the walk take it whole. Built
 * once per model (vocab.c); immutable afterwards but for its internally locked caches. */
#ifndef PG_GRAMMAR_VOCAB_IMPL_H
#define PG_GRAMMAR_VOCAB_IMPL_H

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
    int max_depth;
    uint64_t (*dbytes)[4]; /* [max_depth + 2]: dbytes[d], the bytes at depth d or deeper in the trie */
    gm_vwcache vw; /* lexer-only walks shared by every grammar compiled for it (vwalk_cache.h) */
};

/* UTF-8 decoder states (RFC 3629's well-formed sequences): U8_BOUNDARY between characters,
 * U8_NEED1..3 continuation bytes 80..BF still due, and the four leads whose second byte is narrower
 * (E0: A0..BF, ED: 80..9F, F0: 90..BF, F4: 80..8F). */
enum { U8_BOUNDARY, U8_NEED1, U8_NEED2, U8_NEED3, U8_E0, U8_ED, U8_F0, U8_F4, U8_BAD = 15, U8_OK = 0x80 };

#endif
