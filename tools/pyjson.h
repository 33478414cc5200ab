/* JSON text as Python's json module reads and writes it, for benchmarks that must produce the same
 * bytes as a Python harness (`pagoda bench grammar` next to bench/maskbench/run_reference.py).
 *
 * Values are read lazily from the raw text (spans), so integers of any size, NaN/Infinity and
 * duplicate keys keep Python's meaning: json.loads reads integers exactly, a repeated key keeps
 * its first position and its last value. pj_compact writes
 *     json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=...)
 * byte for byte: floats as Python's repr (shortest round trip: 1e-05, 1.0, 1e+16), strings with
 * Python's escapes. Bounded: nesting deeper than PJ_MAX_DEPTH is an error, not a stack overflow. */
#ifndef PG_TOOLS_PYJSON_H
#define PG_TOOLS_PYJSON_H

#include <stddef.h>

#define PJ_MAX_DEPTH 1000 /* Python's own recursion limit is about this */

typedef struct {
    const char *p;
    size_t n;
} pj_span; /* borrowed text of one JSON value (no surrounding whitespace) */

typedef struct {
    char *p; /* NUL-terminated, owned */
    size_t n, cap;
    int oom; /* set when a write failed: the contents are then incomplete */
} pj_buf;
void pj_buf_free(pj_buf *b);
void pj_put(pj_buf *b, const char *s, size_t n);
void pj_puts(pj_buf *b, const char *s);
void pj_putf(pj_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A string as json.dumps writes it: ensure_ascii 1 escapes non-ASCII as \uXXXX (pairs above
 * U+FFFF); bytes that are not UTF-8 become U+FFFD. */
void pj_put_str(pj_buf *b, const char *s, size_t n, int ensure_ascii);
/* A float as Python's repr (and json.dumps) writes it: 0.1, 1e-05, 1.0, 1e+16, NaN, Infinity. */
void pj_put_float(pj_buf *b, double x);
/* A string as Python's repr writes it ('Ġ"x', "it's"): for messages that mirror a Python tool's. */
void pj_put_repr(pj_buf *b, const char *s, size_t n);

/* The one JSON value in text (whitespace around it allowed); 0, or -1 with a message in err. */
int pj_parse(const char *text, size_t n, pj_span *out, char *err, size_t cap);
/* Object member by key (the last of repeated keys, as Python): 1 found, 0 absent or not an object. */
int pj_get(pj_span obj, const char *key, pj_span *val);
/* Array items: *items malloc'd (free), *n their count; -1 if v is not an array (or out of memory). */
int pj_items(pj_span v, pj_span **items, size_t *n);
/* A string value decoded (UTF-8, malloc'd, NUL-terminated; *len without the NUL); -1 if not a string
 * or it holds \u0000 or a lone surrogate. */
int pj_string(pj_span v, char **out, size_t *len);
int pj_is_true(pj_span v); /* the literal true (Python truthiness is not needed here) */
/* Appends json.dumps(value, separators=(",", ":"), ensure_ascii=False) to out; with PJ_ASCII,
 * ensure_ascii=True; with PJ_SPACED, json.dumps's default separators (", ", ": "). -1 with a
 * message in err when Python would fail too (a lone surrogate cannot be written as UTF-8). */
#define PJ_ASCII 1
#define PJ_SPACED 2
int pj_compact(pj_span v, int flags, pj_buf *out, char *err, size_t cap);

#endif
