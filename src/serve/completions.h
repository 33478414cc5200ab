/* POST /v1/completions and /v1/chat/completions (OpenAI): the request body -> the engine's
 * request -> submit, and the engine's events -> OpenAI responses, built on HTTP threads. */
#ifndef PG_SERVE_COMPLETIONS_H
#define PG_SERVE_COMPLETIONS_H

#include <microhttpd.h>

#include "serve/request.h"

/* The final access-handler call of a generation request (the body is in hr->body), and again
 * each time a suspended non-streamed request is resumed. */
enum MHD_Result completions_handle(http_req *hr);

#endif
