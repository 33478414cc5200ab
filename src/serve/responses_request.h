/* OpenAI Responses request bodies (POST /v1/responses) -> the equivalent chat-completions body,
 * which the chat runner parses (openai_request.c) and runs, plus the request's fields that the
 * response object repeats. Translation and validation only: jansson and libc, so the fuzz target
 * (tests/fuzz/fuzz_responses_request.c) compiles it with openai_request.c alone.
 *
 * Stateless: input (a string, or items: messages whose content is a string or input_text /
 * output_text parts, function_call and function_call_output items; reasoning items are
 * skipped), instructions -> a system message first; tools (flat function tools) -> chat tools;
 * tool_choice; text.format (text | json_object | json_schema) -> response_format;
 * max_output_tokens; temperature; top_p; parallel_tool_calls; stream (usage always included).
 * store, metadata, user and the like are accepted and ignored; previous_response_id,
 * conversation and item references are refused (nothing is stored); images and files too. */
#ifndef PG_SERVE_RESPONSES_REQUEST_H
#define PG_SERVE_RESPONSES_REQUEST_H

#include <jansson.h>
#include <stddef.h>

#include "serve/openai_request.h"

/* Translates body[0..len). Returns 0 with *chat (malloc'd compact JSON, length *chat_len) and
 * *echo (a new object: instructions, tools, tool_choice, parallel_tool_calls, temperature,
 * top_p, max_output_tokens, text, metadata, store, as the response object repeats them), or -1
 * with *err filled (400, or 500 out of memory). Never reads past len. */
int responses_request_translate(const char *body, size_t len, char **chat, size_t *chat_len, json_t **echo,
                                oa_error *err);

#endif
