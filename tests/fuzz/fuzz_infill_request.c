/* libFuzzer target: /infill request bodies (src/serve/infill_request.c, compiled into this target
 * alone: no engine, no HTTP) and the prompt layout over them with a toy tokenizer (one token per
 * byte). The parser must accept or reject with a 400 and a message, never crash, leak or hang;
 * what it accepts must satisfy the limits the server relies on, and the laid-out prompt must end
 * with the middle token, hold the prefix and suffix tokens once each and stay within the budgets. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "serve/infill_request.h"

#define CHECK(c) \
    do { \
        if (!(c)) __builtin_trap(); \
    } while (0)

enum { PRE = 1000, SUF, MID, REP, SEP, BOS };

static int toy_tokenize(void *user, const char *text, int parse_special, int32_t **ids, size_t *n) {
    (void)user, (void)parse_special;
    size_t len = strlen(text);
    *ids = malloc((len ? len : 1) * sizeof **ids);
    if (!*ids) return -1;
    for (size_t i = 0; i < len; i++) (*ids)[i] = (unsigned char)text[i];
    *n = len;
    return 0;
}

static void check_layout(const infill_request *r, int with_repo, int spm, int32_t n_ctx, int32_t n_batch) {
    infill_layout L = {.pre = PRE, .suf = SUF, .mid = MID, .rep = with_repo ? REP : -1, .sep = with_repo ? SEP : -1,
                       .bos = BOS, .add_bos = 1, .spm = spm, .n_ctx = n_ctx, .n_batch = n_batch, .n_predict = -1};
    int32_t *ids = NULL;
    size_t n = 0;
    if (infill_build_prompt(&L, r, toy_tokenize, NULL, &ids, &n)) return; /* out of memory only */
    CHECK(n >= 4 && ids[n - 1] == MID);
    size_t n_pre = 0, n_suf = 0, n_bos = 0;
    for (size_t i = 0; i < n; i++) n_pre += ids[i] == PRE, n_suf += ids[i] == SUF, n_bos += ids[i] == BOS;
    CHECK(n_pre == 1 && n_suf == 1 && n_bos == 1);
    const size_t np = strlen(r->prompt), q = (size_t)(n_batch / 4);
    const size_t extra_room = n_ctx - n_batch + 2 > 0 ? (size_t)(n_ctx - n_batch + 2) : 0;
    CHECK(n <= extra_room + 3 * q + np + (q > 2 + np ? q - 2 - np : 0) + 4);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    infill_request r;
    infill_error err;
    if (infill_request_parse((const char *)data, size, &r, &err) == 0) {
        CHECK(r.input_prefix && r.input_suffix && r.prompt);
        CHECK(r.n_extra <= INFILL_MAX_EXTRA);
        for (size_t i = 0; i < r.n_extra; i++) CHECK(r.extra[i].filename && r.extra[i].text);
        CHECK(r.pr.n_stop >= 0 && r.pr.n_stop <= INFILL_MAX_STOP);
        for (int32_t i = 0; i < r.pr.n_stop; i++) CHECK(strlen(r.pr.stop[i]) >= 1 && strlen(r.pr.stop[i]) <= INFILL_MAX_STOP_BYTES);
        CHECK(r.pr.max_tokens >= 0 && r.pr.n == 1 && !r.pr.prompt_tokens);
        CHECK(r.pr.sampling.temperature >= 0 && r.pr.sampling.top_p > 0 && r.pr.sampling.top_p <= 1);
        check_layout(&r, size & 1, (size >> 1) & 1, 64 + (int32_t)(size % 200), 16 + (int32_t)(size % 64));
        infill_request_free(&r);
    } else {
        CHECK(err.status == 400 && err.message[0]);
        CHECK(!r.input_prefix && !r.extra && r.pr.n_stop == 0);
    }
    return 0;
}
