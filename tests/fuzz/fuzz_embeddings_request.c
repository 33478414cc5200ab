/* libFuzzer target: bodies of POST /v1/embeddings (src/serve/embeddings_request.c, compiled into
 * this target alone: no engine, no HTTP). The parser must accept or reject with a message, never
 * crash, leak or hang, and what it accepts must satisfy the limits the server relies on. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "serve/embeddings_request.h"

#define CHECK(c) \
    do { \
        if (!(c)) __builtin_trap(); \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    emb_request r;
    emb_error err;
    if (emb_request_parse((const char *)data, size, &r, &err)) {
        CHECK(err.message[0] != 0);
        CHECK(memchr(err.message, 0, sizeof err.message) && memchr(err.param, 0, sizeof err.param));
        CHECK(r.inputs == NULL && r.n_inputs == 0 && r.model == NULL);
        return 0;
    }
    CHECK(r.n_inputs >= 1 && r.n_inputs <= EMB_MAX_INPUTS && r.inputs);
    for (int32_t i = 0; i < r.n_inputs; i++) {
        const emb_input *in = &r.inputs[i];
        if (in->text) {
            CHECK(in->text_len > 0 && in->ids == NULL && in->text[in->text_len] == 0);
        } else {
            CHECK(in->n_ids > 0 && in->ids);
            for (int32_t k = 0; k < in->n_ids; k++) CHECK(in->ids[k] >= 0);
        }
    }
    CHECK(r.dimensions >= 0 && r.dimensions <= EMB_MAX_DIMENSIONS);
    CHECK(r.truncate == -1 || r.truncate >= 0);
    CHECK(r.base64 == 0 || r.base64 == 1);
    emb_request_free(&r);
    CHECK(r.inputs == NULL && r.n_inputs == 0);
    return 0;
}
