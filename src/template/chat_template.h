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

/* Same, and *user_mask (malloc'd, one byte per byte of *out, plus one) is 1 where the output byte
 * came from user data: the strings (values and keys) of messages_json, tools_json and extra_json,
 * carried through the template's string operations (filters, methods, slicing, concatenation,
 * tojson, macros). Text the template writes itself, and bos_token / eos_token, are 0. Bytes a
 * template derives from user data without copying them (numbers, lengths, the repr of None) are 0
 * too. user_mask may be NULL. */
pagoda_status chat_template_render_marked(const char *tmpl, const chat_template_input *in, char **out,
                                          unsigned char **user_mask);

#endif
