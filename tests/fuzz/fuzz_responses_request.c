/* libFuzzer target: OpenAI Responses request bodies (src/serve/responses_request.c, with
 * body_translate.c and the chat parser it feeds, openai_request.c: no engine, no HTTP). The
 * translator must accept or reject with an HTTP status and a message, never crash, leak or hang;
 * what it accepts is a chat body (a JSON object with a non-empty messages array) and an object of
 * echoed fields, and the chat parser in turn accepts or rejects the body cleanly. */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "serve/responses_request.h"

#define CHECK(c) \
    do { \
        if (!(c)) __builtin_trap(); \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *chat = NULL;
    size_t n = 0;
    json_t *echo = NULL;
    oa_error err;
    if (responses_request_translate((const char *)data, size, &chat, &n, &echo, &err)) {
        CHECK(!chat && !echo && err.status >= 400 && err.status < 600 && err.message[0] && err.type);
        return 0;
    }
    CHECK(chat && n == strlen(chat) && json_is_object(echo));
    CHECK(!json_object_get(echo, "input") && !json_object_get(echo, "previous_response_id"));
    json_t *o = json_loadb(chat, n, 0, NULL);
    CHECK(json_is_object(o) && json_array_size(json_object_get(o, "messages")) > 0);
    json_decref(o);
    oa_request r;
    const oa_limits lim = {.n_vocab = 50000};
    if (oa_request_parse(chat, n, OA_CHAT, &lim, &r, &err) == 0) {
        CHECK(r.messages_json);
        CHECK(!r.stream || r.include_usage);
        oa_request_free(&r);
    } else {
        CHECK(err.status >= 400 && err.status < 600 && err.message[0]);
    }
    free(chat);
    json_decref(echo);
    return 0;
}
