/* libFuzzer target: Anthropic Messages request bodies (src/serve/anthropic_request.c, with
 * body_translate.c and the chat parser it feeds, openai_request.c: no engine, no HTTP). Every
 * input is translated as a messages request and as a count_tokens request. The translator must
 * accept or reject with an HTTP status and a message, never crash, leak or hang; what it accepts
 * is a chat body (a JSON object with a non-empty messages array) that the chat parser in turn
 * accepts or rejects cleanly. */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "serve/anthropic_request.h"

#define CHECK(c) \
    do { \
        if (!(c)) __builtin_trap(); \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (int k = 0; k < 2; k++) {
        char *chat = NULL;
        size_t n = 0;
        oa_error err;
        an_kind kind = k ? AN_COUNT_TOKENS : AN_MESSAGES;
        if (anthropic_request_translate((const char *)data, size, kind, &chat, &n, &err)) {
            CHECK(!chat && err.status >= 400 && err.status < 600 && err.message[0] && err.type);
            continue;
        }
        CHECK(chat && n == strlen(chat));
        json_t *o = json_loadb(chat, n, 0, NULL);
        CHECK(json_is_object(o) && json_array_size(json_object_get(o, "messages")) > 0);
        CHECK(kind == AN_COUNT_TOKENS || json_object_get(o, "max_tokens"));
        CHECK(kind == AN_MESSAGES || !json_object_get(o, "stream"));
        json_decref(o);
        oa_request r;
        const oa_limits lim = {.n_vocab = 50000};
        if (oa_request_parse(chat, n, OA_CHAT, &lim, &r, &err) == 0) {
            CHECK(r.messages_json && r.pr.n_stop <= OA_MAX_STOP);
            CHECK(!r.stream || r.include_usage); /* streams always carry usage (message_delta) */
            oa_request_free(&r);
        } else {
            CHECK(err.status >= 400 && err.status < 600 && err.message[0]);
        }
        free(chat);
    }
    return 0;
}
