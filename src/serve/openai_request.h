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
typedef enum { OA_TOOL_CHOICE_AUTO = 0, OA_TOOL_CHOICE_REQUIRED, OA_TOOL_CHOICE_NAMED } oa_tool_choice;

#define OA_MAX_STOP 16           /* stop strings per request (the engine's limit) */
#define OA_MAX_STOP_BYTES 256    /* bytes per stop string */
#define OA_MAX_STOP_TOKEN_IDS 64
#define OA_MAX_N 64              /* choices per request */
#define OA_MAX_TOKENS_CAP (1 << 20)
#define OA_MAX_PROMPT_IDS (1 << 20)
#define OA_MAX_MESSAGES 4096
#define OA_MAX_LOGIT_BIAS PAGODA_MAX_LOGIT_BIAS
#define OA_DEFAULT_MAX_TOKENS_COMPLETIONS 16 /* OpenAI's default for /v1/completions */

#define OA_MAX_PROMPTS 1024      /* prompts per completions request */
#define OA_MAX_CHOICES_TOTAL 4096 /* prompts x n */

/* One prompt of a completions request: text or token ids. */
typedef struct {
    char *text;   /* owned, NUL-terminated (JSON strings cannot hold NUL); NULL when ids */
    int32_t *ids; /* owned [n_ids]; each in [0, n_vocab) */
    int32_t n_ids;
} oa_prompt;

/* What the parser checks token ids against (the served model). */
typedef struct {
    int32_t n_vocab; /* prompt ids, stop_token_ids and logit_bias keys must be below it; 0: unchecked */
    int strict;      /* unknown fields are rejected (400); else ignored and named in oa_request.unknown */
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

    /* completions: one or more prompts ("prompt" as a string, a token list, or a list of
     * either); prompt i's choices are numbered i * n + j in the answer, as OpenAI does */
    oa_prompt *prompts;   /* owned [n_prompts], n_prompts >= 1 */
    int32_t n_prompts;
    char *suffix;         /* owned; fill-in-the-middle suffix, NULL if absent */
    int echo;
    int max_tokens_zero;  /* "max_tokens": 0 with echo: score the prompt, generate nothing
                             (pr.score_only is set and pr.max_tokens is 1) */

    /* chat */
    char *messages_json;  /* owned: normalized array of {"role","content": string, ...}; an
                             assistant's tool_calls keep their shape, with function.arguments
                             given as a JSON-object string decoded to the object (templates
                             read arguments as a mapping: `arguments | tojson`) */
    char *tools_json;     /* owned; NULL if no tools (or tool_choice "none") */
    int parallel_tool_calls; /* "parallel_tool_calls": 1 (default) or 0: at most one call */
    int parallel_tool_calls_given; /* 1 when the body says it (a forced call is one call unless
                                      parallel calls are asked for, as llama-server does) */
    int tool_choice;         /* OA_TOOL_CHOICE_*: "auto" (default), "required" or a named function */
    char *tool_choice_name;  /* owned: the function tool_choice names (one of the tools) */
    int allow_special_in_content; /* "allow_special_in_content": -1 not given (the server's
                                     default), 0 or 1 */

    int stream, include_usage;
    so_constraint constraint;  /* structured output (kind 0: none) */
    char unknown[256];         /* fields ignored as unknown (not strict), comma-separated, for the
                                  server's warning; "" if none */

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
/* "an object", "a string", ... for messages about a JSON value's type */
const char *oa_json_type_name(const json_t *v);
size_t oa_utf8_valid_prefix(const char *s, size_t len);

#endif
