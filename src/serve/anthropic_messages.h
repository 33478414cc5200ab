/* POST /v1/messages and /v1/messages/count_tokens (Anthropic's Messages API). The body is
 * translated into a chat-completions body (anthropic_request.c) and runs on the chat runner
 * (completions.c) with this file as its output dialect: whole answers as a "message" object,
 * streams as Anthropic's named SSE events (message_start, content_block_start / _delta / _stop,
 * ping, message_delta, message_stop; an `error` event mid-stream). Errors are in Anthropic's
 * shape (send.c, by route). */
#ifndef PG_SERVE_ANTHROPIC_MESSAGES_H
#define PG_SERVE_ANTHROPIC_MESSAGES_H

#include <microhttpd.h>

#include "serve/request.h"

/* The final access-handler call (the body is in hr->body), and again each time a suspended
 * non-streamed request is resumed. Both routes. */
enum MHD_Result anthropic_messages_handle(http_req *hr);

#endif
