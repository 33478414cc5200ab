/* OpenAI response shapes: errors, usage, logprobs, whole responses and stream chunks, as jansson
 * objects (SSE framing is in send.c). No HTTP, no engine state. */
#ifndef PG_SERVE_OPENAI_RESPONSE_H
#define PG_SERVE_OPENAI_RESPONSE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "pagoda.h"

/* A growable byte buffer (the stream of SSE events of one request). */
typedef struct {
    char *p;
    size_t len, cap;
} oa_buf;
int oa_buf_append(oa_buf *b, const char *s, size_t n); /* 0 ok, -1 out of memory */
void oa_buf_free(oa_buf *b);

/* One sampled token with its log-probability; text owned (malloc). */
typedef struct {
    char *text;
    size_t len;
    float logprob;
} oa_token;
typedef struct {
    oa_token tok;
    int32_t n_top;
    oa_token *top; /* owned [n_top] */
} oa_logprob;
void oa_logprob_free(oa_logprob *lp);

/* A JSON string from bytes that may hold invalid UTF-8 (replaced by U+FFFD). NULL: no memory. */
json_t *oa_json_text(const char *s, size_t len);

/* {"error": {"message", "type", "param", "code"}}; param and code may be NULL (JSON null). */
json_t *oa_error_body(const char *message, const char *type, const char *param, const char *code);

/* {"prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details": {"cached_tokens"}} */
json_t *oa_usage(int64_t prompt, int64_t completion, int64_t cached);

/* Chat: {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}], "refusal": null} */
json_t *oa_logprobs_chat(const oa_logprob *lp, size_t n);
/* Completions: {"tokens", "token_logprobs", "top_logprobs", "text_offset"}; offsets start at
 * text_offset (the echoed prompt's length, or 0). */
json_t *oa_logprobs_completion(const oa_logprob *lp, size_t n, size_t text_offset);

/* "stop", "length", "abort" (cancelled), "error"; NULL while unfinished. */
const char *oa_finish_reason(pagoda_finish_reason f);

/* {"id", "object", "created", "model", "choices": []} for a response or a stream chunk.
 * object: "text_completion", "chat.completion" or "chat.completion.chunk". */
json_t *oa_response_head(const char *id, const char *object, int64_t created, const char *model);

#endif
