/* POST /v1/embeddings (OpenAI): every input of the body is submitted to the engine as an
 * embedding request at once (so they batch with each other and with generation), and the pooled
 * vectors come back as one JSON response ("float" or "base64" little-endian float32), truncated
 * to `dimensions` and re-normalized when asked. */
#ifndef PG_SERVE_EMBEDDINGS_H
#define PG_SERVE_EMBEDDINGS_H

#include <microhttpd.h>

#include "serve/request.h"

/* The final access-handler call of an embeddings request (the body is in hr->body), and again
 * when its suspended connection is resumed (every input done). */
enum MHD_Result embeddings_handle(http_req *hr);

#endif
