/* libFuzzer target: OpenAI request bodies (src/serve/openai_request.c, compiled into this target
 * alone: no engine, no HTTP). Every input is parsed as a chat request and as a completions
 * request. The parser must accept or reject with an HTTP status and a message, never crash, leak
 * or hang, and what it accepts must satisfy the limits the server relies on. */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "serve/openai_request.h"

#define CHECK(c) \
    do { \
        if (!(c)) __builtin_trap(); \
    } while (0)

static void check_accepted(const oa_request *r, oa_kind kind) {
    CHECK(r->kind == kind);
    CHECK(r->n >= 1 && r->n <= OA_MAX_N);
    CHECK(r->n_stop >= 0 && r->n_stop <= OA_MAX_STOP);
    for (int32_t i = 0; i < r->n_stop; i++) CHECK(r->stop[i] && strlen(r->stop[i]) <= OA_MAX_STOP_BYTES);
    CHECK(r->n_stop_token_ids >= 0 && r->n_stop_token_ids <= OA_MAX_STOP_TOKEN_IDS);
    CHECK(r->max_tokens >= 0 && r->max_tokens <= OA_MAX_TOKENS_CAP);
    CHECK(r->logprobs >= -1 && r->logprobs <= 20);
    CHECK(r->temperature >= 0 && r->temperature <= 2);
    CHECK(r->top_p >= 0 && r->top_p <= 1);
    CHECK(!r->include_usage || r->stream);
    if (kind == OA_CHAT) {
        CHECK(r->messages_json && !r->prompt && !r->prompt_ids);
        json_t *m = json_loads(r->messages_json, 0, NULL); /* the normalized messages are valid JSON */
        CHECK(json_is_array(m) && json_array_size(m) > 0);
        for (size_t i = 0; i < json_array_size(m); i++) {
            json_t *msg = json_array_get(m, i);
            CHECK(json_is_string(json_object_get(msg, "role")) && json_is_string(json_object_get(msg, "content")));
        }
        json_decref(m);
    } else {
        CHECK(!r->messages_json && (!r->prompt != !r->prompt_ids));
        if (r->prompt_ids) {
            CHECK(r->n_prompt_ids > 0 && r->n_prompt_ids <= OA_MAX_PROMPT_IDS);
            for (int32_t i = 0; i < r->n_prompt_ids; i++) CHECK(r->prompt_ids[i] >= 0);
        }
        CHECK(r->logprobs <= 5);
        CHECK(!(r->echo && r->suffix));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (int k = 0; k < 2; k++) {
        oa_kind kind = k ? OA_CHAT : OA_COMPLETIONS;
        oa_request r;
        oa_error err;
        if (oa_request_parse((const char *)data, size, kind, &r, &err) == 0) {
            check_accepted(&r, kind);
            oa_request_free(&r);
        } else {
            CHECK(err.status >= 400 && err.status < 600);
            CHECK(err.message[0] != 0 && err.type != NULL);
            CHECK(!r.model && !r.prompt && !r.prompt_ids && !r.messages_json && r.n_stop == 0);
        }
    }
    CHECK(oa_utf8_valid_prefix((const char *)data, size) <= size);
    return 0;
}
