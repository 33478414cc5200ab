/* OpenAI request bodies (POST /v1/completions, /v1/chat/completions) -> a plain struct.
 * Parsing and validation only: no model, no engine, no HTTP. Depends on jansson, src/core and
 * libc alone, so the fuzz target (tests/fuzz/fuzz_openai_request.c) compiles this file by itself.
 * Every rejection fills an oa_error with the HTTP status and a message naming the field. */
#ifndef PG_SERVE_OPENAI_REQUEST_H
#define PG_SERVE_OPENAI_REQUEST_H

#include <stddef.h>
#include <stdint.h>

typedef enum { OA_COMPLETIONS = 0, OA_CHAT = 1 } oa_kind;

#define OA_MAX_STOP 16           /* stop strings per request (the engine's limit) */
#define OA_MAX_STOP_BYTES 256    /* bytes per stop string */
#define OA_MAX_STOP_TOKEN_IDS 64
#define OA_MAX_N 64              /* choices per request */
#define OA_MAX_TOKENS_CAP (1 << 20)
#define OA_MAX_PROMPT_IDS (1 << 20)
#define OA_MAX_MESSAGES 4096

typedef struct {
    oa_kind kind;
    char *model; /* owned; NULL if the body has no "model" */

    /* completions: exactly one of prompt / prompt_ids */
    char *prompt;         /* owned, NUL-terminated (JSON strings cannot hold NUL) */
    int32_t *prompt_ids;  /* owned [n_prompt_ids]; ids are >= 0, the vocabulary is checked later */
    int32_t n_prompt_ids;
    char *suffix;         /* owned; fill-in-the-middle suffix, NULL if absent */
    int echo;

    /* chat */
    char *messages_json;  /* owned: normalized array of {"role","content": string, ...} */
    char *tools_json;     /* owned; NULL if no tools (or tool_choice "none") */

    /* common */
    int stream, include_usage;
    int32_t max_tokens;   /* 0: not given (completions: 16; chat: until the context limit) */
    float temperature, top_p, min_p;
    int32_t top_k;
    float presence_penalty, frequency_penalty, repetition_penalty;
    int64_t seed;         /* -1: not given */
    char *stop[OA_MAX_STOP]; /* owned */
    int32_t n_stop;
    int32_t stop_token_ids[OA_MAX_STOP_TOKEN_IDS];
    int32_t n_stop_token_ids;
    int32_t n;
    int32_t logprobs;     /* -1: none; k >= 0: each token's logprob and the top k */
    int ignore_eos, skip_special;
} oa_request;

typedef struct {
    int status;          /* HTTP status: 400, 413, ... */
    const char *type;    /* OpenAI error type, e.g. "invalid_request_error" */
    char param[192];      /* the offending field ("" if none) */
    char message[512];
} oa_error;

/* Parses body[0..len) as a request of the given kind. Returns 0 and fills *r (release with
 * oa_request_free), or -1 with *err filled and *r left empty. Never reads past len. */
int oa_request_parse(const char *body, size_t len, oa_kind kind, oa_request *r, oa_error *err);
void oa_request_free(oa_request *r); /* NULL-safe; leaves *r zeroed */

/* Offset of the first byte that is not part of well-formed UTF-8, or len if all is valid. */
size_t oa_utf8_valid_prefix(const char *s, size_t len);

#endif
