/* Internal layout of pg_tokenizer, shared by vocab.c, pretokenize.c, bpe.c, spm.c, tokenizer.c. */
#ifndef PG_TOKENIZER_TOK_INTERNAL_H
#define PG_TOKENIZER_TOK_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer/tokenizer.h"

/* Hard caps on untrusted tokenizer files. */
#define TOK_MAX_VOCAB (1 << 22)
#define TOK_MAX_MERGES (1 << 22)
#define TOK_MAX_TOKEN_LEN 65536
#define TOK_MAX_SPLITS 32 /* pre-tokenizer steps */

/* Token types as GGUF stores them (llama.cpp's llama_token_type). */
enum { TOK_T_UNDEF = 0, TOK_T_NORMAL = 1, TOK_T_UNKNOWN = 2, TOK_T_CONTROL = 3,
       TOK_T_USER = 4, TOK_T_UNUSED = 5, TOK_T_BYTE = 6 };

typedef enum { TOK_BPE, TOK_SPM } tok_kind;

/* Open-addressing string -> id map over borrowed keys. */
typedef struct {
    const char **key; /* [cap] borrowed */
    uint32_t *klen;   /* [cap] */
    int32_t *val;     /* [cap], -1 = empty */
    uint32_t cap;     /* power of two */
} tok_strmap;

/* (left id, right id) -> merge rank and result id. */
typedef struct {
    uint64_t *key; /* [cap] (a << 32 | b), UINT64_MAX = empty */
    int32_t *rank; /* [cap] */
    int32_t *res;  /* [cap] */
    uint32_t cap;
} tok_pairmap;

/* Pre-tokenizer steps, applied in order, each to the pieces the previous one left (the shape of a
 * Hugging Face pre_tokenizer Sequence). */
typedef enum {
    TOK_STEP_SPLIT,  /* split by a regex (behavior, invert as HF's Split) */
    TOK_STEP_PREFIX, /* ByteLevel add_prefix_space: a space before each piece not starting with one */
    TOK_STEP_BYTES,  /* ByteLevel: later steps see the byte-to-unicode mapped text */
} tok_step_kind;

/* What happens to the matches of a split (HF SplitDelimiterBehavior). */
typedef enum {
    TOK_SPLIT_ISOLATED,    /* each match a piece of its own */
    TOK_SPLIT_REMOVED,     /* matches dropped */
    TOK_SPLIT_MERGED_PREV, /* a match joins the piece before it */
    TOK_SPLIT_MERGED_NEXT, /* a match joins the piece after it */
    TOK_SPLIT_CONTIGUOUS,  /* adjacent matches form one piece */
} tok_split_behavior;

typedef struct {
    void *code;   /* pcre2_code_8 *, TOK_STEP_SPLIT only */
    uint8_t kind; /* tok_step_kind */
    uint8_t behavior; /* tok_split_behavior */
    bool invert;  /* the matches are the pieces, the text between them the delimiters */
} tok_regex;

typedef struct {
    const char *s; /* borrowed from the token table */
    uint32_t len;
    int32_t id;
    bool special; /* only matched with parse_special */
} tok_added;

struct pg_tokenizer {
    tok_kind kind;
    int32_t n_vocab;
    char **piece;        /* [n_vocab] owned raw pieces */
    uint32_t *piece_len; /* [n_vocab] */
    char **text;         /* [n_vocab] owned decoded bytes (NULL = same as piece) */
    uint32_t *text_len;  /* [n_vocab] */
    uint8_t *type;       /* [n_vocab] TOK_T_* */
    float *score;        /* [n_vocab] SPM merge scores, NULL for BPE */
    tok_strmap vocab;    /* piece -> id */
    tok_pairmap merges;  /* BPE merges by rank */

    bool byte_level;     /* GPT-2 byte-to-unicode mapping */
    bool byte_fallback;  /* unknown chars become <0xXX> tokens */
    bool ignore_merges;  /* whole word in vocab wins (Llama-3) */
    bool add_space_prefix; /* SPM: leading "▁" */
    bool spm_split;        /* no token has "▁" after another char: words between "▁"s merge apart */
    bool spm_escape;       /* HF BPE with Metaspace/Prepend+Replace: SPM text handling, rank merges */
    int32_t byte_id[256];  /* <0xXX> tokens, -1 if absent */
    int32_t bchar_id[256]; /* byte-level: id of the char standing for each byte, -1 if absent */

    tok_regex split[TOK_MAX_SPLITS]; /* applied in order, each refines the pieces */
    int n_split;

    tok_added *added;    /* [n_added], sorted by first byte then length descending */
    int32_t n_added;
    int32_t added_at[257]; /* added[added_at[b] .. added_at[b+1]) start with byte b */

    int32_t bos, eos, eot, eom, unk, pad;
    bool add_bos, add_eos;
    bool *eog;           /* [n_vocab] */
    char *chat_template; /* owned, may be NULL */
};

/* vocab.c */
uint32_t tok_hash(const char *s, size_t n);
int32_t tok_lookup(const pg_tokenizer *t, const char *s, size_t n);
/* Allocates the token tables for n tokens (pieces empty, type UNUSED). */
pagoda_status tok_alloc(pg_tokenizer *t, int64_t n);
pagoda_status tok_set_piece(pg_tokenizer *t, int32_t id, const char *s, size_t n);
/* Builds maps, decoded texts, byte tokens, added-token table, EOG set. */
pagoda_status tok_finish(pg_tokenizer *t);
pagoda_status tok_add_merge(pg_tokenizer *t, const char *a, size_t na, const char *b, size_t nb, int32_t rank);
pagoda_status tok_merges_init(pg_tokenizer *t, int64_t n);

/* pretokenize.c */
/* A split step. pattern is PCRE2 syntax (literal: a plain string). */
pagoda_status tok_add_split(pg_tokenizer *t, const char *pattern, bool literal, tok_split_behavior behavior,
                            bool invert);
pagoda_status tok_add_step(pg_tokenizer *t, tok_step_kind kind); /* TOK_STEP_PREFIX or TOK_STEP_BYTES */
void tok_free_splits(pg_tokenizer *t);
/* Calls fn on each piece of text[0..n) after all steps; mapped: the piece is already in byte-level
 * stand-in chars (a TOK_STEP_BYTES step ran before a later step). */
typedef pagoda_status (*tok_piece_fn)(void *ctx, const char *s, size_t n, bool mapped);
pagoda_status tok_pretokenize(const pg_tokenizer *t, const char *text, size_t n, tok_piece_fn fn, void *ctx);

/* pre_spec.c */
/* The pre-tokenizer of a GGUF tokenizer.ggml.pre value (the families llama.cpp names, each as its
 * Hugging Face tokenizer.json defines it); UNSUPPORTED naming an unknown one. */
pagoda_status tok_pre_from_name(pg_tokenizer *t, const char *pre);
/* Family i of that table (i from 0; NULL past the last): its first tokenizer.ggml.pre name and
 * whether it ignores merges (`pagoda quantize` matches a tokenizer.json against them). */
const char *tok_pre_family(int i, bool *ignore_merges);
/* A tokenizer.json "pre_tokenizer" object (json_t *); UNSUPPORTED naming a construct it cannot honour. */
pagoda_status tok_pre_from_json(pg_tokenizer *t, const void *json);

/* bpe.c */
typedef struct {
    int32_t *v;
    int64_t n, cap;
} tok_ids;
bool tok_ids_push(tok_ids *o, int32_t id);
typedef struct tok_sym tok_sym;
typedef struct tok_cand tok_cand;
typedef struct {
    uint32_t hash, klen; /* klen 0 = empty slot */
    int32_t nv;
    int64_t koff, voff;  /* into ckey / cval */
} tok_centry;
/* Per-call scratch (the tokenizer itself stays read-only, so encode is thread-safe). */
typedef struct {
    tok_ids out;
    tok_sym *sym;
    int64_t sym_cap;
    tok_cand *heap;
    int64_t heap_cap;
    char *buf;
    int64_t buf_cap;
    /* word cache for this call: text repeats its words, and a hit skips the merging */
    tok_centry *ctab;
    int64_t ccap, cn;
    char *ckey;
    int64_t ckey_n, ckey_cap;
    int32_t *cval;
    int64_t cval_n, cval_cap;
} tok_work;
void tok_work_free(tok_work *w);
/* Byte-to-unicode (GPT-2): the UTF-8 of the code point standing for byte b (1 or 2 bytes). */
const char *tok_byte_char(uint8_t b, size_t *len);
/* Inverse: code point -> byte, -1 if not a mapped code point. */
int tok_char_byte(uint32_t cp);
/* Merges over the UTF-8 chars of s (already in vocab space), appending ids to w->out.
 * by_score: SentencePiece (highest score of the joined piece first), else merge rank. Unknown chars
 * fall back to <0xXX> bytes or unk (byte-level: dropped). */
pagoda_status tok_merge_word(const pg_tokenizer *t, tok_work *w, const char *s, size_t n, bool by_score);
/* BPE of one pre-tokenized piece (byte-level mapping applied here when the model uses it and the
 * piece is not mapped already). */
pagoda_status tok_bpe_piece(const pg_tokenizer *t, tok_work *w, const char *s, size_t n, bool mapped);
/* s[0..n) in byte-level stand-in chars: writes at most 2n bytes to out, returns the length. */
size_t tok_bytes_map(const char *s, size_t n, char *out);

/* spm.c */
/* SentencePiece BPE of one raw text fragment (spaces escaped here; prefix adds "▁" first). */
pagoda_status tok_spm_fragment(const pg_tokenizer *t, tok_work *w, const char *s, size_t n, bool prefix);

/* tokenizer.c */
void tok_init_defaults(pg_tokenizer *t);
uint32_t tok_utf8_len(uint8_t c); /* 1..4 from the lead byte; 1 for stray bytes */

#endif
