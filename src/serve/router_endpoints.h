/* The endpoints data-parallel routers probe on a worker, beside the OpenAI API: SGLang's
 * (sglang-router / SGLang Model Gateway, vllm-router) /get_server_info, /get_model_info and their
 * newer names /server_info, /model_info, /get_load, /flush_cache, and vLLM's /load and
 * /reset_prefix_cache. See deploy/routers/README.md for what each router uses. */
#ifndef PG_SERVE_ROUTER_ENDPOINTS_H
#define PG_SERVE_ROUTER_ENDPOINTS_H

#include "serve/request.h"
#include "serve/server_internal.h"

/* The route of url if it is one of these endpoints, else ROUTE_NONE. */
serve_route router_endpoint_route(const char *url);
/* Whether the route changes state (flush): POST (GET too, as SGLang accepts), API key checked. */
int router_endpoint_is_admin(serve_route r);
/* Answers a request to one of these routes (no body is read). */
enum MHD_Result router_endpoint_handle(http_req *hr);

#endif
