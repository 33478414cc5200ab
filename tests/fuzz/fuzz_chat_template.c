/* libFuzzer target: chat template interpreter. Arbitrary bytes are the template; the messages
 * are fixed and small. The interpreter must return an error or a string, never crash or hang.
 * Needs pagoda_tokenizer linked (the fuzz rule in CMakeLists.txt links pagoda_format only). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "template/chat_template.h"

static volatile size_t g_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *tmpl = malloc(size + 1);
    if (!tmpl) return 0;
    memcpy(tmpl, data, size);
    tmpl[size] = 0; /* the API takes a C string: an embedded NUL just ends the template */
    chat_template_input in = {
        .messages_json = "[{\"role\":\"system\",\"content\":\"Be brief.\"},"
                         "{\"role\":\"user\",\"content\":\"Hi <think>x</think>\"},"
                         "{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"type\":\"function\","
                         "\"function\":{\"name\":\"f\",\"arguments\":{\"a\":1.5,\"b\":[true,null]}}}]},"
                         "{\"role\":\"tool\",\"content\":\"42\"}]",
        .tools_json = "[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{}}}]",
        .add_generation_prompt = size & 1,
        .bos_token = "<s>",
        .eos_token = "</s>",
        .extra_json = "{\"enable_thinking\": false}",
    };
    char *out = NULL;
    unsigned char *mask = NULL;
    /* every other input with the user-data marks (the shadow of the arena) */
    pagoda_status st = size & 2 ? chat_template_render_marked(tmpl, &in, &out, &mask) : chat_template_render(tmpl, &in, &out);
    if (st == PAGODA_OK) {
        size_t n = strlen(out);
        g_sink += n;
        for (size_t i = 0; mask && i < n; i++)
            if (mask[i] > 1) __builtin_trap(); /* marks are 0 or 1, one per output byte */
        free(out);
        free(mask);
    } else if (out || mask) {
        __builtin_trap(); /* out and mask must stay NULL on error */
    }
    free(tmpl);
    return 0;
}
