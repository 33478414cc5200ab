/* libFuzzer target: OpenAI request bodies (src/serve/openai_request.c, compiled into this target
 * alone: no engine, no HTTP). Every input is parsed as a chat request and as a completions
 * request. The parser must accept or reject with an HTTP status and a message, never crash, leak
 * or hang, and what it accepts must satisfy the limits the server and the engine rely on (the
 * parsed pagoda_request is what gets submitted). */
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

#define N_VOCAB 50000 /* token ids are checked against a vocabulary of this size */

static void check_accepted(const oa_request *r, oa_kind kind) {
    const pagoda_request *pr = &r->pr;
    CHECK(r->kind == kind);
    CHECK(pr->n >= 1 && pr->n <= OA_MAX_N);
    CHECK(pr->n_stop >= 0 && pr->n_stop <= OA_MAX_STOP);
    CHECK(pr->n_stop == 0 || pr->stop == (const char *const *)r->stop);
    for (int32_t i = 0; i < pr->n_stop; i++) CHECK(pr->stop[i] && strlen(pr->stop[i]) <= OA_MAX_STOP_BYTES);
    CHECK(pr->n_stop_token_ids >= 0 && pr->n_stop_token_ids <= OA_MAX_STOP_TOKEN_IDS);
    for (int32_t i = 0; i < pr->n_stop_token_ids; i++)
        CHECK(pr->stop_token_ids[i] >= 0 && pr->stop_token_ids[i] < N_VOCAB);
    CHECK(pr->n_logit_bias >= 0 && pr->n_logit_bias <= PAGODA_MAX_LOGIT_BIAS);
    CHECK(!pr->n_logit_bias == !pr->logit_bias);
    for (int32_t i = 0; i < pr->n_logit_bias; i++) {
        CHECK(pr->logit_bias[i].token >= 0 && pr->logit_bias[i].token < N_VOCAB);
        CHECK(pr->logit_bias[i].bias >= -100 && pr->logit_bias[i].bias <= 100);
    }
    CHECK(pr->max_tokens >= 0 && pr->max_tokens <= OA_MAX_TOKENS_CAP);
    CHECK(r->unknown[sizeof r->unknown - 1] == 0);
    /* completions: max_tokens 0 only from "n_predict": -1 (up to the context's end) */
    CHECK(kind == OA_CHAT || pr->max_tokens >= 1 || !r->max_tokens_zero);
    CHECK(pr->min_tokens >= 0 && (pr->max_tokens == 0 || pr->min_tokens <= pr->max_tokens));
    CHECK(pr->logprobs >= -1 && pr->logprobs <= 20);
    CHECK(pr->sampling.temperature >= 0 && pr->sampling.temperature <= 2);
    CHECK(pr->sampling.top_p >= 0 && pr->sampling.top_p <= 1);
    CHECK(!pr->prompt && !pr->prompt_tokens && !pr->on_event); /* the caller's to set */
    CHECK(!r->include_usage || r->stream);
    if (kind == OA_CHAT) {
        CHECK(r->messages_json && !r->prompts && !r->n_prompts);
        json_t *m = json_loads(r->messages_json, 0, NULL); /* the normalized messages are valid JSON */
        CHECK(json_is_array(m) && json_array_size(m) > 0);
        for (size_t i = 0; i < json_array_size(m); i++) {
            json_t *msg = json_array_get(m, i);
            CHECK(json_is_string(json_object_get(msg, "role")) && json_is_string(json_object_get(msg, "content")));
        }
        json_decref(m);
    } else {
        CHECK(!r->messages_json && r->prompts && r->n_prompts >= 1 && r->n_prompts <= OA_MAX_PROMPTS);
        CHECK((long long)r->n_prompts * pr->n <= OA_MAX_CHOICES_TOTAL);
        for (int32_t p = 0; p < r->n_prompts; p++) {
            const oa_prompt *q = &r->prompts[p];
            CHECK(!q->text != !q->ids);
            if (q->ids) {
                CHECK(q->n_ids > 0 && q->n_ids <= OA_MAX_PROMPT_IDS);
                for (int32_t i = 0; i < q->n_ids; i++) CHECK(q->ids[i] >= 0 && q->ids[i] < N_VOCAB);
            }
        }
        CHECK(!r->max_tokens_zero || (r->echo && pr->score_only && pr->max_tokens == 1));
        CHECK(pr->logprobs <= 5);
        CHECK(!(r->echo && r->suffix));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const oa_limits lim = {.n_vocab = N_VOCAB};
    for (int k = 0; k < 2; k++) {
        oa_kind kind = k ? OA_CHAT : OA_COMPLETIONS;
        oa_request r;
        oa_error err;
        if (oa_request_parse((const char *)data, size, kind, &lim, &r, &err) == 0) {
            check_accepted(&r, kind);
            oa_request_free(&r);
        } else {
            CHECK(err.status >= 400 && err.status < 600);
            CHECK(err.message[0] != 0 && err.type != NULL);
            CHECK(!r.model && !r.prompts && !r.messages_json && r.pr.n_stop == 0 && !r.logit_bias);
        }
    }
    CHECK(oa_utf8_valid_prefix((const char *)data, size) <= size);
    return 0;
}
