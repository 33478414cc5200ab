/* POST /tokenize and /detokenize (llama-server's and vLLM's shapes, see tokenize_request.h):
 * the model's tokenizer and chat template over HTTP, answered on the HTTP thread (no engine). */
#ifndef PG_SERVE_TOKENIZE_ROUTE_H
#define PG_SERVE_TOKENIZE_ROUTE_H

#include <microhttpd.h>

#include "serve/request.h"

/* The body is complete (hr->body): parses it and answers. */
enum MHD_Result tokenize_route_handle(http_req *hr);

#endif
