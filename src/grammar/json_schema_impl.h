/* Internal to the JSON Schema front end (json_schema*.c): the regular expressions of JSON lexemes
 * (json_schema_re.c). Every regex here describes whole lexemes of the serialized instance: a
 * string lexeme includes its quotes, so `pattern` and `minLength` constrain the decoded text
 * while the lexeme is the JSON-encoded one. */
#ifndef PG_GRAMMAR_JSON_SCHEMA_IMPL_H
#define PG_GRAMMAR_JSON_SCHEMA_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* A growable byte buffer; on out of memory `oom` is set and further appends are dropped. */
typedef struct {
    char *s;
    size_t n, cap;
    int oom;
} jre_buf;
void jre_put(jre_buf *b, const char *s, size_t n);
void jre_puts(jre_buf *b, const char *s);
void jre_printf(jre_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void jre_free(jre_buf *b);

/* The bytes s[0..n) as a regex matching exactly them. */
void jre_lit(jre_buf *b, const char *s, size_t n);
/* Python's json.dumps(v, separators=(",", ":"), ensure_ascii=False) of a JSON value (keys in the
 * document's order). -1 if a string is not valid UTF-8. */
int jre_dump(jre_buf *b, const json_t *v);
/* A regex for the numbers equal to v (an integer or real): its Python form, and for integral
 * values also with a zero fraction ("1", "1.0"). */
void jre_number_eq(jre_buf *b, const json_t *v);

/* The contents (between the quotes) of any JSON string: every escape accepted. */
extern const char JRE_CHAR[];
/* One code point of a JSON string (escapes included; a surrogate pair is one), for counting. */
extern const char JRE_CHAR1[];
/* A string of min..max code points (max < 0: unbounded), quotes included. */
void jre_string_len(jre_buf *b, long min, long max);

/* An ECMAScript `pattern` (searched, i.e. unanchored unless it has ^ / $) turned into the regex of
 * the JSON string lexemes (quotes included) whose decoded text matches, each code point in its
 * canonical encoding (json.dumps's). If the pattern is ^ X{q} $ for a single character class X,
 * len_min/len_max (max < 0: none) are folded into q; *folded says whether they were (else the
 * caller must refuse the combination). -1 with a message in err when the pattern cannot be
 * honoured. */
int jre_pattern(jre_buf *b, const char *pat, size_t n, long len_min, long len_max, int *folded, char *err,
                size_t cap);

/* The string lexeme of a `format`: 1 written into b; 0 a format Python's jsonschema does not check
 * (the keyword is then an annotation); -1 a checked format this compiler cannot express. */
int jre_format(jre_buf *b, const char *name);

/* A string lexeme whose decoded text is none of names[0..n) (property names already taken). Up to
 * where it differs from every name, a character is written raw or with a short escape (\n, \",
 * ...; \u00XX only for control characters), so that a name cannot be spelled in another way;
 * after that any escape is accepted. -1 if a name is not valid UTF-8 or has a control character
 * or a code point outside the BMP. */
int jre_string_except(jre_buf *b, const char *const *names, const size_t *lens, int n);

/* Property names of a patternProperties pattern against listed names: pat_keys = the string lexemes
 * matching the pattern that are none of the names; add_keys (unless NULL) = those matching neither
 * (where additionalProperties applies). Only for patterns of the forms ^X*$ and ^X+$ (X one
 * character class; 0) and patterns every name matches (".*", ...; 1, add_keys left empty). -1
 * for other patterns. */
int jre_key_split(jre_buf *pat_keys, jre_buf *add_keys, const char *pat, size_t n, const char *const *names,
                  const size_t *lens, int n_names);

/* Numbers are written as serializers write them, so that a sampler cannot run on inside one
 * ("1.0000...", "1111..." with no end): at most JRE_INT_DIGITS integer digits (every 64-bit
 * integer; more only where a bound needs them), JRE_FRAC_DIGITS fraction digits (a double's
 * shortest repr needs at most 20), JRE_EXP_DIGITS exponent digits, and a zero fraction of an
 * integral value only as ".0" (Python's float repr; "1.00" is refused). */
#define JRE_INT_DIGITS 20
#define JRE_FRAC_DIGITS 20
#define JRE_EXP_DIGITS 3
#define JRE_ZERO_FRAC "(?:\\.0)?"

/* JSON numbers within bounds. Each bound is an optional decimal given by its text (NULL: none)
 * and whether it is exclusive. integer: only integers (int_frac: "1.0" counts, draft 6+).
 * -1 with err when the bounds cannot be expressed (non-integer bounds on a number). Numbers
 * with bounds are written without exponent. */
int jre_number(jre_buf *b, const char *lo, int lo_excl, const char *hi, int hi_excl, int integer, int int_frac,
               char *err, size_t cap);
/* The shortest decimal text of a double that reads back the same (Python's repr). */
void jre_double_repr(char *out, size_t cap, double x);

/* 1 if the regex (whole-lexeme) matches s[0..n), 0 if not, -1 if the pattern is bad. */
int jre_matches(const char *re, size_t re_len, const char *s, size_t n);

#endif
