/* The multi-turn chat workload of `pagoda bench serve --workload multiturn`: conversations that
 * share long system prompts by "tenant" group and send their turns in order with the growing
 * history (earlier user messages and the model's actual answers), --concurrency conversations at
 * a time. Each request carries a stable session id (a header and the `user` field) that routers
 * can hash on. */
#ifndef PG_TOOLS_BENCH_MULTITURN_H
#define PG_TOOLS_BENCH_MULTITURN_H

typedef struct {
    const char *url;            /* the chat completions URL (borrowed) */
    const char *model, *api_key; /* borrowed; api_key may be NULL */
    const char *json_path, *md_path; /* NULL: not written */
    const char *session_header; /* header name carrying the session id, e.g. "X-Session-ID" */
    long conversations, turns;  /* conversations in the run; turns per conversation */
    long system_prompts;        /* tenant groups: conversation c uses system prompt c % system_prompts */
    long system_len, user_len;  /* words (~tokens) of each system prompt and each user message */
    long max_tokens;            /* tokens per answer */
    long concurrency;           /* conversations in flight */
    long seed, timeout_s;
    double temperature, top_p;
    int ignore_eos, min_tokens; /* send ignore_eos (and min_tokens = max_tokens) */
} mt_config;

/* Runs the workload, prints the result table, writes JSON/markdown. Returns 0, or 1 when out of
 * memory, a file cannot be written, or every request failed. */
int bench_multiturn(const mt_config *c);

#endif
