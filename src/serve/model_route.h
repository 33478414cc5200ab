/* Which model a request uses (through the model manager, src/manager/registry.h), and the model
 * admin routes: GET /v1/models, GET /v1/models/{id}, GET /models, POST /models/load,
 * POST /models/unload, plus the per-model lines of /metrics.
 *
 * A request for a model that is loading does not block an HTTP thread: its connection is
 * suspended and resumed by the model-wait thread once the model is loaded, failed, or the wait
 * timed out (503 with Retry-After). Not part of any public interface. */
#ifndef PG_SERVE_MODEL_ROUTE_H
#define PG_SERVE_MODEL_ROUTE_H

#include <microhttpd.h>

#include "serve/grammar_cache.h"
#include "serve/request.h"
#include "serve/tool_calls.h"

/* What the server keeps per loaded model (the manager's attach hook makes it). */
typedef struct {
    grammar_cache *grammars;
    tc_format tool_format;
} serve_model_state;
#define SM(hr) ((serve_model_state *)(hr)->lease.attached)

void *serve_model_attach(pagoda_model *m, void *user);
void serve_model_detach(void *state, void *user);

/* The one "model not found" answer (404). */
enum MHD_Result send_model_not_found(http_req *hr, const char *name);

/* For a POST route, before its handler: 0 when hr holds a lease on its model (hr->lease), else
 * 1 with *ret to return (an error was answered, or the connection waits for the model). */
int model_take(http_req *hr, enum MHD_Result *ret);

/* After the handler parsed the request: 1 (404 answered, *ret) when its "model" is unknown. */
int model_missing(http_req *hr, enum MHD_Result *ret);

/* GET /v1/models, /v1/models/{id}, /models; POST /models/load, /models/unload */
enum MHD_Result model_route_get(http_req *hr, const char *url);
enum MHD_Result model_route_admin(http_req *hr);
/* POST /v1/load_lora_adapter {"lora_name", "lora_path", "base_model_name"?} and
 * /v1/unload_lora_adapter {"lora_name"} in vLLM's shapes (a plain-text "Success: ..." answer) */
enum MHD_Result model_route_lora(http_req *hr);

/* The model-wait thread (see above). */
int model_wait_start(pg_server *s);
void model_wait_stop(pg_server *s); /* resumes every waiting connection first */
int model_wait_count(pg_server *s);

/* /metrics lines per model, appended to text (realloc'd); 0 on success. */
int model_metrics_append(pg_server *s, char **text, size_t *len);

#endif
