/* One `data:` line of an OpenAI-style streamed response (completions or chat), as the serving
 * benchmarks read it: its text, a stream error, and the usage block when it carries one. */
#ifndef PAGODA_TOOLS_SSE_CHUNK_H
#define PAGODA_TOOLS_SSE_CHUNK_H

#include <jansson.h>
#include <stddef.h>

typedef struct {
    json_t *root;          /* owned: sse_chunk_free */
    const char *content;   /* chat: delta.content; completions: choices[0].text (NULL: none) */
    const char *reasoning; /* chat: delta.reasoning_content (NULL: none) */
    char error[512];       /* "" or "stream error: ..." */
    long usage_prompt, usage_completion; /* -1: not in this chunk */
} sse_chunk;

/* 1 when line is a JSON data chunk (then sse_chunk_free it), 0 for anything else (event:, id:,
 * comments, blank lines, [DONE], bad JSON). */
int sse_chunk_parse(const char *line, size_t len, int chat, sse_chunk *c);
void sse_chunk_free(sse_chunk *c);

#endif
