/* The constrained-decoding matcher: a grammar (grammar.h) compiled for one tokenizer's vocabulary,
 * and per-sequence matchers that give the allowed-token mask at each step, accept the sampled
 * token, roll back (speculative decoding) and report forced text (jump-forward).
 *
 * gr_compiled is immutable after gr_compile and shared by every sequence using the grammar (its
 * lazily built caches are internally synchronized); a gr_matcher belongs to one sequence and one
 * thread at a time. Masks are bitsets: bit t of word t/32 set = token t allowed. */
#ifndef PG_GRAMMAR_MATCHER_H
#define PG_GRAMMAR_MATCHER_H

#include <stddef.h>
#include <stdint.h>

#include "grammar/grammar.h"

/* A tokenizer's vocabulary as the matcher sees it: each token's bytes (what it adds to the text,
 * after byte-level/SentencePiece decoding), and which tokens are special (never allowed inside a
 * grammar; eos is allowed exactly where the grammar may end). Built once per model; the tokens'
 * bytes are copied. */
typedef struct gr_vocab gr_vocab;
gr_vocab *gr_vocab_new(int32_t n_tokens, const uint8_t *const *bytes, const uint32_t *lens,
                       const uint8_t *is_special, const int32_t *eos_ids, int32_t n_eos);
/* The 256 single bytes as tokens 0..255 and an end token 256 (for tests and byte-level tools). */
gr_vocab *gr_vocab_bytes(void);
void gr_vocab_free(gr_vocab *v);
/* The vocabulary keeps the lexer-only trie walks of every grammar compiled for it (process-wide,
 * for all later grammars): a walk depends only on the lexer automaton reachable from its state, so a
 * state whose automaton is small (at most 32 states: e.g. inside a plain JSON string or number) and
 * equal, up to renaming, to one walked before by any grammar reuses that walk (exactly: same mask).
 * At most max_bytes of them (default GR_VWALK_MAX_BYTES; past it no more are kept; 0: off, neither
 * looked up nor kept). Thread-safe. */
#define GR_VWALK_MAX_BYTES ((size_t)64 << 20)
void gr_vocab_set_walk_cache(gr_vocab *v, size_t max_bytes);
/* Walks kept, and lookups they answered (tests, tools). */
void gr_vocab_walk_cache_stats(gr_vocab *v, size_t *entries, uint64_t *hits);
/* Counting states (a string's maxLength / minLength, a pattern's {m,n}: the lexer state changes at
 * every character) take the tokens made only of the counted characters from a per-vocabulary index
 * by character length and walk only the rest of the trie (the same masks). On by default; off: every
 * such state walks the whole trie (tests compare the two). */
void gr_vocab_set_count_walk(gr_vocab *v, int on);
/* Character classes indexed so far (tests, tools). */
int gr_vocab_count_walk_classes(gr_vocab *v);
int32_t gr_vocab_size(const gr_vocab *v);
/* Token t's bytes (special tokens included; NULL and 0 out of range). */
const uint8_t *gr_vocab_token(const gr_vocab *v, int32_t t, size_t *len);

typedef struct gr_compiled gr_compiled;
/* NULL with a message in err (cap bytes) when the grammar is empty, has unreachable or
 * unproductive start, or exceeds limits. The grammar may be freed afterwards. */
gr_compiled *gr_compile(const gr_grammar *g, const gr_vocab *v, char *err, size_t cap);
void gr_compiled_free(gr_compiled *c);
const gr_vocab *gr_compiled_vocab(const gr_compiled *c);

typedef struct gr_matcher gr_matcher;
#define GR_MAX_MASK_WORK (1ull << 26) /* Earley item insertions tried in one mask */
gr_matcher *gr_matcher_new(const gr_compiled *c);
void gr_matcher_free(gr_matcher *m);

/* Writes the allowed tokens into mask[(n_tokens + 31) / 32]. Returns the number allowed
 * (0: nothing can follow — the sequence must stop). On a hostile grammar (a parser set past its
 * item caps, more than GR_MAX_MASK_WORK parser steps in one mask, the lexer past its DFA bounds)
 * the tokens that needed the refused work are left out and gr_matcher_error says so. */
int32_t gr_matcher_mask(gr_matcher *m, uint32_t *mask);
/* Advances by one token. 0 ok; -1 if the token is not allowed (the matcher is unchanged). */
int gr_matcher_accept(gr_matcher *m, int32_t token);
/* Feeds raw bytes (a forced or prefilled text). 0 ok; -1 if not allowed (matcher unchanged). */
int gr_matcher_accept_bytes(gr_matcher *m, const uint8_t *bytes, size_t n);
/* Undoes the last n accepted tokens (n <= the number accepted). 0 ok, -1 otherwise. */
int gr_matcher_rollback(gr_matcher *m, int n);
/* 1 if the text so far is a complete sentence of the grammar (eos allowed). */
int gr_matcher_can_end(const gr_matcher *m);
/* 1 if nothing but the end can follow. */
int gr_matcher_is_done(const gr_matcher *m);
/* The bytes every continuation must start with (jump-forward), up to cap; returns their count. */
size_t gr_matcher_forced(gr_matcher *m, uint8_t *buf, size_t cap);
/* "" while every answer was exact; else why some work was refused (the first such reason). */
const char *gr_matcher_error(const gr_matcher *m);

#endif
