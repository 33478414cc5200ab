/* POST /v1/responses (OpenAI's Responses API, stateless). The body is translated into a
 * chat-completions body (responses_request.c) and runs on the chat runner (completions.c) with
 * this file as its output dialect: whole answers as a "response" object (message and
 * function_call output items), streams as the Responses events (response.created,
 * response.in_progress, response.output_item.added / .done, response.content_part.added / .done,
 * response.output_text.delta / .done, response.function_call_arguments.delta / .done,
 * response.completed or response.incomplete; an `error` event mid-stream), each with its
 * sequence_number. Errors are in OpenAI's shape. */
#ifndef PG_SERVE_RESPONSES_H
#define PG_SERVE_RESPONSES_H

#include <microhttpd.h>

#include "serve/request.h"

/* The final access-handler call (the body is in hr->body), and again each time a suspended
 * non-streamed request is resumed. */
enum MHD_Result responses_handle(http_req *hr);

#endif
