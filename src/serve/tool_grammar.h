/* tool_choice "required" and named functions, enforced: the grammar a tool-call format writes
 * calls in, with each call's arguments following its tool's JSON Schema ("parameters"), so even a
 * small model returns calls that parse and validate. One call is
 *   {"name": <one of the tools>, "arguments": <that tool's parameters>}   ("parameters" for llama3)
 * wrapped as the format writes it:
 *   hermes   <tool_call>\n CALL \n</tool_call>, one block per call, "\n" between blocks
 *   llama3   CALL, ";" between calls
 *   mistral  [TOOL_CALLS][CALL, ...]
 *   json     CALL, or [CALL, ...] when parallel calls are allowed
 * parallel 0: exactly one call; 1: one to TC_MAX_CALLS. With tool_choice "auto" the same grammar
 * applies lazily, from the format's opening text on (hermes "<tool_call>", mistral "[TOOL_CALLS]"
 * anywhere in the output; json and llama3 "{" (and "[" for json's list) as its first text). Text only (a JSON Schema plus literals for
 * pagoda_grammar_spec): no engine, no HTTP. Depends on jansson and tool_calls.h. */
#ifndef PG_SERVE_TOOL_GRAMMAR_H
#define PG_SERVE_TOOL_GRAMMAR_H

#include <stddef.h>
#include <stdint.h>

#include "serve/tool_calls.h"

typedef struct {
    char *schema;                            /* owned: compact JSON Schema of the repeated item */
    const char *prefix, *suffix, *separator; /* static literals (NULL: none) */
    int32_t min_repeat, max_repeat;          /* as pagoda_grammar_spec's (0, 0: once) */
    /* tool_choice "auto" (a lazy grammar): the text that starts the calls, for
     * pagoda_request.grammar_triggers; at_start: only as the output's first text */
    const char *triggers[2];
    int n_triggers, trigger_at_start;
} tg_spec;

/* tools_json: the request's tools (OpenAI shape); only: the one function allowed (NULL: any of
 * them). 0 ok; -1 with a message in err (a name not among the tools, a tool whose parameters are
 * not an object, no memory). */
int tg_build(tc_format format, const char *tools_json, const char *only, int parallel, tg_spec *out, char *err,
             size_t cap);
void tg_spec_free(tg_spec *s); /* NULL-safe; leaves *s zeroed */

#endif
