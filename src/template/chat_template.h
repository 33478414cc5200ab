/* Chat templates: an interpreter for the subset of Jinja that real chat templates use (the
 * template comes from tokenizer_config.json "chat_template" or GGUF tokenizer.chat_template).
 * Renders like Hugging Face apply_chat_template (jinja2 with trim_blocks and lstrip_blocks). */
#ifndef PG_TEMPLATE_CHAT_TEMPLATE_H
#define PG_TEMPLATE_CHAT_TEMPLATE_H

#include <stdbool.h>

#include "pagoda.h"

typedef struct {
    const char *messages_json;   /* JSON array of message objects ({"role", "content", ...}) */
    const char *tools_json;      /* JSON array of tool definitions, or NULL */
    bool add_generation_prompt;
    const char *bos_token;       /* may be NULL (renders as "") */
    const char *eos_token;
    const char *extra_json;      /* JSON object of further variables (e.g. enable_thinking), or NULL */
} chat_template_input;

/* Renders tmpl. *out is malloc'd and NUL-terminated. Template syntax and runtime errors give
 * PAGODA_ERR_FORMAT / PAGODA_ERR_INVALID with a message naming the template line;
 * raise_exception("msg") gives PAGODA_ERR_INVALID with msg. */
pagoda_status chat_template_render(const char *tmpl, const chat_template_input *in, char **out);

#endif
