/* POST /infill bodies (llama-server's fill-in-the-middle endpoint, as editor plugins such as
 * llama.vscode and llama.vim send them) and the prompt they make. Parsing and the prompt layout
 * only: no model, no engine, no HTTP (tokenization comes in through a callback), so the fuzz
 * target (tests/fuzz/fuzz_infill_request.c) compiles this file by itself.
 *
 * The prompt follows llama-server's format_infill exactly: the repository-level pattern
 *   [extra context] [BOS] <PRE> prefix prompt <SUF> suffix <MID>        (PSM; SPM swaps prefix and suffix)
 * where the extra context is <REPO>"myproject\n" (when the model has that token), then per
 * input_extra chunk <SEP>filename"\n" text (or "\n\n--- snippet ---\n\n" text without a file
 * separator token), then <SEP>"filename\n"; the prefix keeps its last 3/4 of n_batch tokens, the
 * suffix its first n_batch/4 - 2 - |prompt|, and the extra context its last
 * n_ctx - n_batch - 2 * n_predict tokens. */
#ifndef PG_SERVE_INFILL_REQUEST_H
#define PG_SERVE_INFILL_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "pagoda.h"

#define INFILL_MAX_EXTRA 1024   /* input_extra chunks */
#define INFILL_MAX_STOP 16
#define INFILL_MAX_STOP_BYTES 256
#define INFILL_MAX_FIELDS 64    /* response_fields */

typedef struct {
    char *filename; /* owned; "tmp" when the chunk has none (as llama-server) */
    char *text;     /* owned */
} infill_chunk;

typedef struct {
    char *input_prefix, *input_suffix; /* owned, required */
    char *prompt;                      /* owned: text at the cursor, after the prefix ("" if absent) */
    infill_chunk *extra;               /* owned [n_extra] */
    size_t n_extra;
    int stream, return_tokens, cache_prompt;
    int64_t t_max_predict_ms;          /* > 0: stop once a newline was generated and this much time passed */
    pagoda_request pr;                 /* sampling, n_predict (max_tokens), stop strings, ignore_eos;
                                          prompt and callbacks are the caller's to set */
    char *stop[INFILL_MAX_STOP];       /* owned [pr.n_stop] */
    char *fields[INFILL_MAX_FIELDS];   /* owned [n_fields]: response_fields ("timings/prompt_n", ...):
                                          the answer holds only these, keyed by their paths */
    size_t n_fields;
} infill_request;

typedef struct {
    int status;         /* 400 */
    char param[64];
    char message[256];
} infill_error;

/* 0 and *r filled (release with infill_request_free), or -1 with *err filled and *r empty.
 * Fields llama-server does not know are ignored, as it does; known ones are type- and
 * range-checked. */
int infill_request_parse(const char *body, size_t len, infill_request *r, infill_error *err);
void infill_request_free(infill_request *r); /* NULL-safe; leaves *r zeroed */

/* Text -> token ids without BOS (malloc'd *ids); parse_special: special-token text becomes those
 * tokens. 0 ok. */
typedef int (*infill_tokenize_fn)(void *user, const char *text, int parse_special, int32_t **ids, size_t *n);

typedef struct {
    int32_t pre, suf, mid;  /* FIM tokens (all >= 0) */
    int32_t rep, sep;       /* repository name / file separator; -1 if the model has none */
    int32_t bos;            /* added (after the extra context) when add_bos */
    int add_bos;
    int spm;                /* suffix-prefix-middle order */
    int32_t n_ctx, n_batch, n_predict; /* the budgets (llama-server: slot context, --batch-size, --n-predict) */
} infill_layout;

/* The prompt of r under L: *ids (malloc'd) [*n]. -1 when the tokenizer fails or memory runs out. */
int infill_build_prompt(const infill_layout *L, const infill_request *r, infill_tokenize_fn tok, void *user,
                        int32_t **ids, size_t *n);

#endif
