/* libFuzzer target: /tokenize and /detokenize request bodies (src/serve/tokenize_request.c, with
 * openai_request.c for vLLM's messages; no model, no HTTP). Every input is parsed as both, strict
 * and not. The parser must accept or reject with a 4xx and a message, never crash, leak or hang,
 * and what it accepts must hold what the route relies on: exactly one of text / messages / parts, ids in
 * the vocabulary, the dialect the fields name. */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "serve/tokenize_request.h"

#define CHECK(c) \
    do { \
        if (!(c)) __builtin_trap(); \
    } while (0)

#define N_VOCAB 50000

static int nul_terminated(const char *s, size_t cap) { return memchr(s, 0, cap) != NULL; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *body = (const char *)data;
    for (int strict = 0; strict < 2; strict++) {
        tk_tokenize_req t;
        oa_error err;
        if (tk_tokenize_parse(body, size, strict, N_VOCAB, &t, &err) == 0) {
            CHECK(!!t.text + !!t.messages_json + !!t.parts == 1);
            CHECK(!t.parts || t.dialect == TK_LLAMA);
            CHECK(!t.tools_json || t.messages_json);
            for (size_t i = 0; i < t.n_parts; i++)
                CHECK(t.parts[i].text ? strlen(t.parts[i].text) <= t.parts[i].len
                                      : t.parts[i].id >= 0 && t.parts[i].id < N_VOCAB);
            CHECK(!t.text || strlen(t.text) <= t.text_len); /* JSON strings may hold NUL (\u0000) */
            CHECK(t.dialect == TK_LLAMA || t.dialect == TK_VLLM);
            CHECK(!t.messages_json || t.dialect == TK_VLLM);
            if (t.messages_json) { /* normalized messages are a non-empty JSON array */
                json_t *m = json_loads(t.messages_json, 0, NULL);
                CHECK(json_is_array(m) && json_array_size(m) > 0);
                json_decref(m);
            }
            CHECK((t.add_special | t.parse_special | t.with_pieces) <= 1);
            CHECK((t.add_generation_prompt | t.return_token_strs) <= 1);
            CHECK(nul_terminated(t.unknown, sizeof t.unknown) && (!strict || !t.unknown[0]));
            tk_tokenize_free(&t);
        } else {
            CHECK(err.status >= 400 && err.status < 600 && err.message[0] && err.type);
            CHECK(!t.text && !t.messages_json && !t.model && !t.parts && !t.tools_json);
        }
        tk_detokenize_req d;
        if (tk_detokenize_parse(body, size, strict, N_VOCAB, &d, &err) == 0) {
            CHECK(d.n_ids <= TK_MAX_IDS && (d.n_ids == 0 || d.ids));
            for (size_t i = 0; i < d.n_ids; i++) CHECK(d.ids[i] >= 0 && d.ids[i] < N_VOCAB);
            CHECK((d.dialect == TK_VLLM) == (d.model != NULL));
            CHECK(nul_terminated(d.unknown, sizeof d.unknown) && (!strict || !d.unknown[0]));
            tk_detokenize_free(&d);
        } else {
            CHECK(err.status >= 400 && err.status < 600 && err.message[0] && err.type);
            CHECK(!d.ids && !d.model);
        }
    }
    return 0;
}
