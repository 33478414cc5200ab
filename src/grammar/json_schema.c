/* Placeholder until the JSON Schema compiler lands (branch h-jsonschema replaces this file):
 * every schema is refused with a clear error, nothing is silently accepted. */
#include <stdio.h>
#include <string.h>

#include "grammar/json_schema.h"

void js_options_default(js_options *o) { memset(o, 0, sizeof *o); }

int js_add(gr_grammar *g, const char *schema, size_t n, const js_options *o, char *err, size_t cap) {
    (void)g, (void)schema, (void)n, (void)o;
    snprintf(err, cap, "JSON Schema is not supported by this build yet");
    return -1;
}

gr_grammar *js_compile(const char *schema, size_t n, const js_options *o, char *err, size_t cap) {
    return js_add(NULL, schema, n, o, err, cap) < 0 ? NULL : NULL;
}
