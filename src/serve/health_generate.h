/* GET /health_generate (SGLang's, which its router probes): 200 only when the default model's
 * engine generates a token now. One greedy token from a two-token prompt goes through the normal
 * engine path (submission, scheduling, the forward pass on every rank of a tensor-parallel
 * group, sampling); an embedding-only model pools its prompt instead. 503 with a JSON error while
 * the server drains, when the default model is not loaded, when the engine refuses the request
 * (queue full) or fails it, and when no token came within cfg.health_generate_timeout_s (the
 * watchdog enforces that deadline, so a stuck engine cannot hold the probe). The probe stays out
 * of the request histograms of /metrics (the engine's own counters do count it). */
#ifndef PG_SERVE_HEALTH_GENERATE_H
#define PG_SERVE_HEALTH_GENERATE_H

#include "serve/request.h"

/* Every call of the request (the first submits, later ones answer once the token came). */
enum MHD_Result health_generate_handle(http_req *hr);

#endif
