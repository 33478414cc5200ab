/* Prometheus metrics for `pagoda serve`, named like vLLM's (prefix "pagoda:"). Gauges and token
 * counters come from pagoda_engine_get_stats at scrape time; request outcomes and latency
 * histograms are recorded here as requests finish. Thread-safe. */
#ifndef PG_SERVE_METRICS_H
#define PG_SERVE_METRICS_H

#include <stddef.h>

#include "pagoda.h"

typedef struct serve_metrics serve_metrics;

/* model_name: the served name, used as a label (copied). NULL on out of memory. */
serve_metrics *metrics_create(const char *model_name);
void metrics_destroy(serve_metrics *m); /* NULL is a no-op */

/* One finished generation request. ttft_s / tpot_s < 0: not observed (no token / one token).
 * finish: the reason of each of its n_choices choices. */
void metrics_observe_request(serve_metrics *m, double e2e_s, double ttft_s, double tpot_s,
                             const pagoda_finish_reason *finish, int n_choices);
/* One HTTP response (any path), by status code. */
void metrics_observe_http(serve_metrics *m, unsigned status);

/* The text exposition (format 0.0.4), malloc'd and NUL-terminated; NULL on out of memory. */
/* stream_unsent_peak: the largest backlog of unsent stream output a request had (bytes). */
/* comm: a tensor-parallel group's traffic counted on this process (NULL: none shown). */
char *metrics_render(serve_metrics *m, const pagoda_engine_stats *st, size_t stream_unsent_peak,
                     const pagoda_tp_comm_stats *comm, size_t *len);

#endif
