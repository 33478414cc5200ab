/* libFuzzer target: tool-call parsing of model output (src/serve/tool_calls.c, compiled into this
 * target alone). The first byte picks the format and parallel calls, the second seeds the
 * fragment sizes; the rest is the model's text. Whole and streamed parses must not crash, leak or
 * hang; a result's calls name known tools and carry a JSON object as arguments; and the streamed
 * deltas must reassemble to the whole result unless a call turned malformed after its start went
 * out (then the whole result is the text itself). */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "serve/tool_calls.h"

#define CHECK(c) \
    do { \
        if (!(c)) __builtin_trap(); \
    } while (0)

static const char *const k_names[] = {"add", "now", "get_weather", "x"};

typedef struct {
    char *content;
    size_t content_len, content_cap;
    size_t n_calls;
    char *args[TC_MAX_CALLS];
    size_t args_len[TC_MAX_CALLS];
    char names[TC_MAX_CALLS][TC_MAX_NAME + 1];
    char ids[TC_MAX_CALLS][TC_ID_LEN + 1];
} acc;

static void put(char **s, size_t *n, const char *t, size_t len) {
    char *q = realloc(*s, *n + len + 1);
    CHECK(q);
    memcpy(q + *n, t, len);
    *n += len;
    q[*n] = 0;
    *s = q;
}

static void take(tc_parser *p, acc *a) {
    const tc_delta *d;
    size_t n = tc_parser_take(p, &d);
    for (size_t i = 0; i < n; i++) {
        if (d[i].kind == TC_DELTA_CONTENT) {
            put(&a->content, &a->content_len, d[i].text, d[i].len);
        } else if (d[i].kind == TC_DELTA_CALL_START) {
            CHECK((size_t)d[i].index == a->n_calls && a->n_calls < TC_MAX_CALLS);
            CHECK(d[i].len > 0 && d[i].len <= TC_MAX_NAME && strlen(d[i].id) == TC_ID_LEN);
            memcpy(a->names[a->n_calls], d[i].text, d[i].len + 1);
            memcpy(a->ids[a->n_calls], d[i].id, TC_ID_LEN + 1);
            a->n_calls++;
        } else {
            CHECK(d[i].index >= 0 && (size_t)d[i].index < a->n_calls);
            put(&a->args[d[i].index], &a->args_len[d[i].index], d[i].text, d[i].len);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2 || size > 1 << 16) return 0;
    tc_config cfg = {.format = (tc_format)(data[0] % 5), /* none, hermes, llama3, mistral, json */
                     .tool_names = k_names,
                     .n_tool_names = 4,
                     .parallel = (data[0] >> 3) & 1,
                     .id_seed = data[1]};
    unsigned frag_seed = data[1];
    const char *text = (const char *)data + 2;
    size_t len = size - 2;

    tc_result r;
    CHECK(tc_parse(&cfg, text, len, &r) == 0);
    CHECK(r.content || r.n_calls > 0);
    CHECK(!r.content || r.content[r.content_len] == 0);
    CHECK(r.n_calls <= TC_MAX_CALLS && (cfg.parallel || r.n_calls <= 1));
    for (size_t i = 0; i < r.n_calls; i++) {
        int known = 0;
        for (int k = 0; k < 4; k++) known |= !strcmp(r.calls[i].name, k_names[k]);
        CHECK(known);
        /* arguments go out as written: a number past a double's range is valid JSON that jansson
         * refuses as an overflow (integers are read as reals here, so only exponents overflow) */
        json_error_t err;
        json_t *o = json_loads(r.calls[i].arguments, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &err);
        CHECK(json_is_object(o) || (!o && strstr(err.text, "overflow")));
        json_decref(o);
    }
    if (r.n_calls == 0) CHECK(r.content_len == len && !memcmp(r.content, text, len));

    /* streamed, in fragments of 1..16 bytes */
    tc_parser *p = tc_parser_create(&cfg);
    CHECK(p);
    acc a;
    memset(&a, 0, sizeof a);
    for (size_t i = 0; i < len;) {
        frag_seed = frag_seed * 1103515245u + 12345u;
        size_t n = 1 + (frag_seed >> 16) % 16;
        if (n > len - i) n = len - i;
        CHECK(tc_parser_feed(p, text + i, n) == 0);
        take(p, &a);
        i += n;
    }
    CHECK(tc_parser_finish(p) == 0);
    take(p, &a);
    CHECK(a.n_calls == tc_parser_n_calls(p));
    int valid = tc_parser_calls_valid(p);
    tc_parser_destroy(p);
    if (valid || a.n_calls == 0) {
        size_t want = r.content ? r.content_len : 0;
        CHECK(a.content_len == want && (!want || !memcmp(a.content, r.content, want)));
        CHECK(a.n_calls == r.n_calls);
        for (size_t i = 0; i < r.n_calls; i++) {
            CHECK(!strcmp(a.names[i], r.calls[i].name) && !strcmp(a.ids[i], r.calls[i].id));
            CHECK(a.args_len[i] == strlen(r.calls[i].arguments) && !memcmp(a.args[i], r.calls[i].arguments, a.args_len[i]));
        }
    } else {
        CHECK(r.n_calls == 0);
    }
    free(a.content);
    for (size_t i = 0; i < a.n_calls; i++) free(a.args[i]);
    tc_result_free(&r);
    return 0;
}
