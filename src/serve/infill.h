/* POST /infill: llama-server's fill-in-the-middle endpoint (input_prefix, input_suffix,
 * input_extra, prompt, n_predict, t_max_predict_ms, stream, ...) with its response shape
 * ({"content", "stop", "stop_type", "tokens_predicted", "tokens_evaluated", "timings", ...};
 * streamed: one such object per SSE event, the last with "stop": true). The prompt is laid out
 * as llama-server's format_infill does (infill_request.h). */
#ifndef PG_SERVE_INFILL_H
#define PG_SERVE_INFILL_H

#include <microhttpd.h>

#include "serve/request.h"

/* Called for each access-handler call once the body is in (as completions_handle). */
enum MHD_Result infill_handle(http_req *hr);

#endif
