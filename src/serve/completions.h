/* POST /v1/completions and /v1/chat/completions (OpenAI): the request body -> the engine's
 * request -> submit, and the engine's events -> OpenAI responses, built on HTTP threads. */
#ifndef PG_SERVE_COMPLETIONS_H
#define PG_SERVE_COMPLETIONS_H

#include <microhttpd.h>

#include <jansson.h>

#include "serve/request.h"

/* Another API's shape over the chat runner (Anthropic Messages, OpenAI Responses): the body was
 * translated into a chat-completions body, which runs as chat does (the same parsing, prompt,
 * tool calls and grammars); the answer is built as OpenAI chat objects and handed to the dialect,
 * which writes its own. The dialect's choice objects carry "stop_reason" (as vLLM's): the stop
 * string that ended the choice, when one did. */
typedef struct {
    const char *id;     /* the response id ("<id_prefix>_...") */
    int64_t created;
    const char *model;  /* the served model's name */
    int32_t n_prompt;   /* prompt tokens */
} gen_info;

typedef struct {
    const char *id_prefix; /* "msg", "resp" */
    /* Streamed: a chat.completion.chunk, an {"error": {...}} object, or NULL at the end of the
     * stream (obj stolen); appends the dialect's SSE events to out. */
    void (*stream)(void *state, const gen_info *info, json_t *obj, oa_buf *out);
    /* Whole: the chat.completion (stolen) -> the dialect's body (NULL: out of memory). */
    json_t *(*final)(void *state, const gen_info *info, json_t *completion);
    void *state;                 /* the dialect's, released with state_free by the request */
    void (*state_free)(void *state);
} gen_dialect;

/* The first access-handler call of a dialect's request: hr->body holds the translated chat body.
 * d is copied; its state is owned from here on (released even when this fails). */
enum MHD_Result completions_start_dialect(http_req *hr, const gen_dialect *d);

/* The final access-handler call of a generation request (the body is in hr->body), and again
 * each time a suspended non-streamed request is resumed. */
enum MHD_Result completions_handle(http_req *hr);

#endif
