/* OpenAI request bodies (POST /v1/completions, /v1/chat/completions) -> the engine's request.
 * Parsing and validation only: no model, no engine, no HTTP. Depends on jansson, src/core and
 * libc alone (pagoda.h for its types), so the fuzz target (tests/fuzz/fuzz_openai_request.c)
 * compiles this file by itself. Every rejection fills an oa_error with the HTTP status and a
 * message naming the field. A body is parsed once, into the pagoda_request that is submitted. */
#ifndef PG_SERVE_OPENAI_REQUEST_H
#define PG_SERVE_OPENAI_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "pagoda.h"
#include "serve/structured_request.h"

typedef enum { OA_COMPLETIONS = 0, OA_CHAT = 1 } oa_kind;

#define OA_MAX_STOP 16           /* stop strings per request (the engine's limit) */
#define OA_MAX_STOP_BYTES 256    /* bytes per stop string */
#define OA_MAX_STOP_TOKEN_IDS 64
#define OA_MAX_N 64              /* choices per request */
#define OA_MAX_TOKENS_CAP (1 << 20)
#define OA_MAX_PROMPT_IDS (1 << 20)
#define OA_MAX_MESSAGES 4096
#define OA_MAX_LOGIT_BIAS PAGODA_MAX_LOGIT_BIAS
#define OA_DEFAULT_MAX_TOKENS_COMPLETIONS 16 /* OpenAI's default for /v1/completions */

/* What the parser checks token ids against (the served model). */
typedef struct {
    int32_t n_vocab; /* prompt ids, stop_token_ids and logit_bias keys must be below it; 0: unchecked */
} oa_limits;

/* A parsed request. pr is the engine's request as the body gives it: sampling, max_tokens (with
 * the endpoint's default), stop strings and token ids, ignore_eos, skip_special, n, logprobs and
 * logit_bias; its pointers point into this struct, so an oa_request is parsed in place and never
 * copied. The prompt (token ids, built from the fields below), on_event and user are the
 * caller's to set. Everything else here is what only the HTTP side uses. */
typedef struct {
    oa_kind kind;
    pagoda_request pr;
    char *model; /* owned; NULL if the body has no "model" */

    /* completions: exactly one of prompt / prompt_ids */
    char *prompt;         /* owned, NUL-terminated (JSON strings cannot hold NUL) */
    int32_t *prompt_ids;  /* owned [n_prompt_ids]; each in [0, n_vocab) */
    int32_t n_prompt_ids;
    char *suffix;         /* owned; fill-in-the-middle suffix, NULL if absent */
    int echo;

    /* chat */
    char *messages_json;  /* owned: normalized array of {"role","content": string, ...}; an
                             assistant's tool_calls keep their shape, with function.arguments
                             given as a JSON-object string decoded to the object (templates
                             read arguments as a mapping: `arguments | tojson`) */
    char *tools_json;     /* owned; NULL if no tools (or tool_choice "none") */
    int parallel_tool_calls; /* "parallel_tool_calls": 1 (default) or 0: at most one call */
    int allow_special_in_content; /* "allow_special_in_content": -1 not given (the server's
                                     default), 0 or 1 */

    int stream, include_usage;
    so_constraint constraint;  /* structured output (kind 0: none) */

    /* storage behind pr's pointers */
    char *stop[OA_MAX_STOP];                       /* owned [pr.n_stop] */
    int32_t stop_token_ids[OA_MAX_STOP_TOKEN_IDS]; /* [pr.n_stop_token_ids] */
    pagoda_logit_bias *logit_bias;                 /* owned [pr.n_logit_bias] */
} oa_request;

typedef struct {
    int status;          /* HTTP status: 400, 413, ... */
    const char *type;    /* OpenAI error type, e.g. "invalid_request_error" */
    char param[192];      /* the offending field ("" if none) */
    char message[512];
} oa_error;

/* Parses body[0..len) as a request of the given kind. Returns 0 and fills *r (release with
 * oa_request_free), or -1 with *err filled and *r left empty. Never reads past len. lim may be
 * NULL (nothing checked against the model). */
int oa_request_parse(const char *body, size_t len, oa_kind kind, const oa_limits *lim, oa_request *r, oa_error *err);
void oa_request_free(oa_request *r); /* NULL-safe; leaves *r zeroed */

/* Offset of the first byte that is not part of well-formed UTF-8, or len if all is valid. */
size_t oa_utf8_valid_prefix(const char *s, size_t len);

#endif
