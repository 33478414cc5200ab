/* The lexer of the grammar engine: several regular expressions (the grammar's terminals) run
 * at once as one lazily built DFA over bytes. A lexer state stands for "the bytes of the current
 * lexeme so far" against every terminal still possible; the parser restricts which terminals may
 * start at each point (lx_start with an allowed set).
 *
 * Regular expressions: the ECMAScript subset JSON Schema `pattern` uses, over UTF-8 text:
 * literals and escapes (\n \t \r \f \v \0 \xHH \uHHHH \u{H..} \/ and escaped metacharacters),
 * `.` (any code point but \n), classes [...] / [^...] with ranges and \d \w \s \D \W \S inside
 * and outside, groups (...) (?:...) and named groups (?<n>...) (capture is irrelevant),
 * alternation |, quantifiers * + ? {m} {m,} {m,n} and their lazy forms (same language),
 * anchors ^ and $ only at the start / end of the pattern (or of a top-level alternative).
 * Backreferences, lookahead/lookbehind and \b give a clear error (they are not regular or not
 * expressible here). Code points are matched as their UTF-8 byte sequences; classes with
 * non-ASCII ranges compile to UTF-8 byte automata; invalid UTF-8 never matches.
 *
 * Whole-lexeme semantics: a terminal matches a lexeme only if the whole lexeme is in its
 * language. (The JSON Schema front end turns an unanchored `pattern` into [^]*(?:pattern)[^]* itself:
 * `[^]`, not `.`, which does not match \n.)
 *
 * Bounded: building the NFA fails cleanly past LX_MAX_NFA_STATES (e.g. (a{2000}){1000}); the DFA is
 * built lazily as bytes are seen, and its size is bounded (LX_MAX_DFA_STATES / LX_MAX_DFA_BYTES;
 * past them lx_exhausted() reports it), so no pattern can exhaust memory or take exponential time.
 * Thread-safe for concurrent readers (lx_next may add states under an internal lock). */
#ifndef PG_GRAMMAR_LEXER_H
#define PG_GRAMMAR_LEXER_H

#include <stddef.h>
#include <stdint.h>

#define LX_MAX_NFA_STATES (1 << 20)
/* Bounds of the lazily built DFA of one lexer (states are kept until lx_free: their ids and
 * accepting sets stay valid while callers hold them). */
#define LX_MAX_DFA_STATES (1u << 20)
#define LX_MAX_DFA_BYTES ((size_t)256 << 20)

typedef struct lx_lexer lx_lexer;
typedef uint32_t lx_state; /* 0 = dead (no terminal can match any extension) */
#define LX_DEAD 0u

/* Validates one pattern (for early, precise errors): 0 ok, -1 with a message in err naming the
 * problem and its offset. */
int lx_check_pattern(const char *pattern, size_t n, char *err, size_t cap);

/* One pattern compiled alone (its NFA): checked once, then lexers are built from it without parsing
 * it again (lx_new_pre). NULL with lx_check_pattern's message in err on a bad pattern (or out of
 * memory). Immutable once made: several lexers may be built from it, from several threads. */
typedef struct lx_pattern lx_pattern;
lx_pattern *lx_pattern_new(const char *pattern, size_t n, char *err, size_t cap);
void lx_pattern_free(lx_pattern *p); /* NULL is a no-op */

/* A lexer over n terminals; terminal i is pattern i (or, when is_literal[i], the exact string).
 * NULL with a message in err on a bad pattern (naming which) or past the limits. */
lx_lexer *lx_new(int n, const char *const *patterns, const size_t *lens, const uint8_t *is_literal, char *err,
                 size_t cap);
/* lx_new where terminal i is the compiled pattern pre[i] when pre and pre[i] are not NULL (then
 * patterns[i], lens[i] and is_literal[i] are not read): the same lexer, without parsing again. */
lx_lexer *lx_new_pre(int n, const char *const *patterns, const size_t *lens, const uint8_t *is_literal,
                     const lx_pattern *const *pre, char *err, size_t cap);
void lx_free(lx_lexer *lx);
int lx_n_terminals(const lx_lexer *lx);

/* The state before the first byte of a lexeme that may be any terminal whose bit is set in
 * allowed[(n + 63) / 64]. States are interned: equal sets give equal ids. */
lx_state lx_start(lx_lexer *lx, const uint64_t *allowed);
/* After one more byte (LX_DEAD if no allowed terminal can match any extension). */
lx_state lx_next(lx_lexer *lx, lx_state s, uint8_t byte);
/* Terminals whose language contains exactly the bytes so far (as a bitset valid until the lexer
 * is freed; NULL = none). */
const uint64_t *lx_accepting(lx_lexer *lx, lx_state s);
/* 1 if some allowed terminal can still match after more bytes. */
int lx_can_continue(lx_lexer *lx, lx_state s);
/* The transition table, for callers' inner loops (the trie walk): state s's successor on byte b
 * is rows[(s << shift) | cls[b]] when that entry is not LX_NEXT_UNKNOWN (then lx_next computes it).
 * The table never moves; entries only change from LX_NEXT_UNKNOWN to their final value. */
#define LX_NEXT_UNKNOWN UINT32_MAX
typedef struct {
    const uint32_t *rows;
    const uint8_t *cls;
    const uint8_t *cls_rep; /* the first byte of each class: class c is bytes cls_rep[c] .. cls_rep[c + 1] - 1 */
    int n_classes;
    unsigned shift;
} lx_table;
void lx_get_table(const lx_lexer *lx, lx_table *t);
static inline lx_state lx_next_fast(lx_lexer *lx, const lx_table *t, lx_state s, uint8_t byte) {
    uint32_t r = __atomic_load_n(&t->rows[((size_t)s << t->shift) | t->cls[byte]], __ATOMIC_ACQUIRE);
    return __builtin_expect(r != LX_NEXT_UNKNOWN, 1) ? r : lx_next(lx, s, byte);
}
/* The most common successor of s: the non-dead state that the most bytes lead to from s (ties: the
 * lowest byte's), with those bytes as a 256-bit set in out[4]; LX_DEAD and an empty set when every
 * byte leads to LX_DEAD. (Past the DFA bounds a transition not built counts as dead.) */
lx_state lx_uniform(lx_lexer *lx, lx_state s, uint64_t out[4]);
/* 1 if every well-formed non-ASCII UTF-8 character leads s to lx_uniform's successor of s with every
 * byte of it alive (free text such as a JSON string's); memoized per state like lx_uniform. */
int lx_uniform_mb(lx_lexer *lx, lx_state s);
/* 1 if states a and b cannot be told apart by any text of at most depth bytes whose d-th byte is in
 * bytes[d] (d = 1 .. depth; each set must hold the next one: bytes[d + 1] within bytes[d]): after
 * every such text both are dead, or both alive with equal accepting sets. Explores state pairs
 * breadth first (pairs of one state stop there); 0 when they differ, when more than max_pairs
 * pairs would be needed, or when the DFA bounds were reached (an answer is never a guess). */
int lx_equiv(lx_lexer *lx, lx_state a, lx_state b, int depth, const uint64_t (*bytes)[4], uint32_t max_pairs);

/* 1 once the DFA bounds were reached: from then on a transition to a state not yet built answers
 * LX_DEAD, which the caller must treat as an error (pattern too complex), not as a rejection. */
int lx_exhausted(const lx_lexer *lx);
/* Tests: on != 0 makes new DFA rows be filled class by class (each class scanning the state's
 * nodes), the simpler form the default one-pass fill must match state for state. */
void lx_set_fill_reference(lx_lexer *lx, int on);

#endif
