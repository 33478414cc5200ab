/* Anthropic Messages request bodies (POST /v1/messages, /v1/messages/count_tokens) -> the
 * equivalent OpenAI chat-completions body, which the chat runner parses (openai_request.c) and
 * runs. Translation and validation of Anthropic's fields only: no model, no engine, no HTTP
 * (jansson and libc), so the fuzz target (tests/fuzz/fuzz_anthropic_request.c) compiles it with
 * openai_request.c alone.
 *
 * system (string or text blocks) -> a system message; content blocks: text -> text, tool_use ->
 * the assistant's tool_calls (input -> arguments), tool_result -> a "tool" message; images and
 * documents are refused (400). tools [{name, description, input_schema}] -> function tools;
 * tool_choice auto / any (-> "required") / tool (-> the named function) / none, and
 * disable_parallel_tool_use -> parallel_tool_calls false; stop_sequences -> stop; max_tokens
 * (required), temperature, top_p, top_k, stream (usage always included); output_config.format
 * (json_schema) -> response_format. metadata, thinking, effort, speed and the like are accepted
 * and ignored (the model does not think on request). */
#ifndef PG_SERVE_ANTHROPIC_REQUEST_H
#define PG_SERVE_ANTHROPIC_REQUEST_H

#include <stddef.h>

#include "serve/openai_request.h"

typedef enum { AN_MESSAGES = 0, AN_COUNT_TOKENS = 1 } an_kind;

/* Translates body[0..len). Returns 0 with *chat (malloc'd, NUL-terminated compact JSON, length
 * *chat_len) or -1 with *err filled (status 400, or 500 out of memory; err->type is OpenAI's
 * name, the caller answers in Anthropic's shape). count_tokens: max_tokens is not required and
 * stream not allowed. Never reads past len. */
int anthropic_request_translate(const char *body, size_t len, an_kind kind, char **chat, size_t *chat_len,
                                oa_error *err);

#endif
