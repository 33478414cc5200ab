/* Streamed-response chunks for the serving benchmarks (sse_chunk.h). */
#include "sse_chunk.h"

#include <stdio.h>
#include <string.h>

int sse_chunk_parse(const char *line, size_t len, int chat, sse_chunk *c) {
    memset(c, 0, sizeof *c);
    c->usage_prompt = c->usage_completion = -1;
    if (len < 5 || strncmp(line, "data:", 5)) return 0;
    const char *p = line + 5;
    while (*p == ' ') p++;
    if (!strcmp(p, "[DONE]") || !(c->root = json_loads(p, 0, NULL))) return 0;
    json_t *err = json_object_get(c->root, "error");
    if (err) {
        const char *m = json_string_value(json_object_get(err, "message"));
        snprintf(c->error, sizeof c->error, "stream error: %s", m ? m : json_is_string(err) ? json_string_value(err) : "?");
    }
    json_t *ch = json_array_get(json_object_get(c->root, "choices"), 0);
    if (ch && chat) {
        json_t *d = json_object_get(ch, "delta");
        c->content = json_string_value(json_object_get(d, "content"));
        c->reasoning = json_string_value(json_object_get(d, "reasoning_content"));
    } else if (ch) {
        c->content = json_string_value(json_object_get(ch, "text"));
    }
    json_t *u = json_object_get(c->root, "usage");
    if (json_is_object(u)) {
        json_t *pt = json_object_get(u, "prompt_tokens"), *ct = json_object_get(u, "completion_tokens");
        if (json_is_integer(pt)) c->usage_prompt = (long)json_integer_value(pt);
        if (json_is_integer(ct)) c->usage_completion = (long)json_integer_value(ct);
    }
    return 1;
}

void sse_chunk_free(sse_chunk *c) {
    json_decref(c->root);
    c->root = NULL;
}
