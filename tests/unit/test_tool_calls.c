/* Tool-call parsing (src/serve/tool_calls.c): every format whole (content, calls, parallel calls,
 * text before and after calls, unicode in arguments, malformed output returned as text), and
 * streamed: the same texts and random generated ones fed in random fragment sizes (seeded), whose
 * deltas must reassemble to the whole result, hold back only what may start a call, and never
 * split a UTF-8 character. */
#include <string.h>

#include "serve/tool_calls.h"
#include "test_util.h"

static const char *const k_names[] = {"get_weather", "add", "now", "search"};
#define N_NAMES 4

typedef struct {
    const char *name, *args;
} want_call;

static tc_config config(tc_format f, int parallel) {
    return (tc_config){.format = f, .tool_names = k_names, .n_tool_names = N_NAMES, .parallel = parallel, .id_seed = 42};
}

/* ---- a streamed run, reassembled ---- */

typedef struct {
    char content[8192];
    size_t content_len;
    int n_calls;
    char ids[TC_MAX_CALLS][TC_ID_LEN + 1];
    char names[TC_MAX_CALLS][TC_MAX_NAME + 1];
    char args[TC_MAX_CALLS][4096];
    size_t args_len[TC_MAX_CALLS];
    int valid;
    int order_ok; /* starts come in index order; arguments only for started calls */
    int utf8_ok;  /* no delta splits a character */
} assembled;

static int utf8_ok(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t k = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 0;
        if (!k || i + k > n) return 0;
        for (size_t j = 1; j < k; j++)
            if (((unsigned char)s[i + j] & 0xC0) != 0x80) return 0;
        i += k;
    }
    return 1;
}

static void take_all(tc_parser *p, assembled *a, int text_is_utf8) {
    const tc_delta *d;
    size_t n = tc_parser_take(p, &d);
    for (size_t i = 0; i < n; i++) {
        if (text_is_utf8 && !utf8_ok(d[i].text, d[i].len)) a->utf8_ok = 0;
        if (d[i].kind == TC_DELTA_CONTENT) {
            if (a->content_len + d[i].len < sizeof a->content) memcpy(a->content + a->content_len, d[i].text, d[i].len);
            a->content_len += d[i].len;
        } else if (d[i].kind == TC_DELTA_CALL_START) {
            if (d[i].index != a->n_calls || d[i].index >= TC_MAX_CALLS) {
                a->order_ok = 0;
                continue;
            }
            snprintf(a->ids[a->n_calls], sizeof a->ids[0], "%s", d[i].id);
            snprintf(a->names[a->n_calls], sizeof a->names[0], "%.*s", (int)d[i].len, d[i].text);
            a->n_calls++;
        } else {
            int k = d[i].index;
            if (k < 0 || k >= a->n_calls) {
                a->order_ok = 0;
                continue;
            }
            if (a->args_len[k] + d[i].len < sizeof a->args[0]) memcpy(a->args[k] + a->args_len[k], d[i].text, d[i].len);
            a->args_len[k] += d[i].len;
        }
    }
}

/* Feeds text in random fragments (1..max_frag bytes) and reassembles the deltas. */
static void stream(const tc_config *cfg, const char *text, size_t len, unsigned long long *rng, size_t max_frag,
                   assembled *a) {
    memset(a, 0, sizeof *a);
    a->order_ok = a->utf8_ok = 1;
    tc_parser *p = tc_parser_create(cfg);
    CHECK(p != NULL, "create");
    if (!p) return;
    int is_utf8 = utf8_ok(text, len);
    for (size_t i = 0; i < len;) {
        size_t n = 1 + (size_t)(test_rand_u64(rng) % max_frag);
        if (n > len - i) n = len - i;
        CHECK(tc_parser_feed(p, text + i, n) == 0, "feed");
        take_all(p, a, is_utf8);
        i += n;
    }
    CHECK(tc_parser_finish(p) == 0, "finish");
    CHECK(tc_parser_feed(p, "x", 1) != 0, "feed after finish must fail");
    take_all(p, a, is_utf8);
    a->valid = tc_parser_calls_valid(p);
    CHECK((size_t)a->n_calls == tc_parser_n_calls(p), "n_calls %d vs %zu", a->n_calls, tc_parser_n_calls(p));
    tc_parser_destroy(p);
}

/* The streamed deltas against the whole parse, for many fragment sizes. */
static void check_stream_matches(const tc_config *cfg, const char *text, size_t len, unsigned long long seed) {
    tc_result r;
    if (tc_parse(cfg, text, len, &r)) {
        CHECK(0, "tc_parse failed");
        return;
    }
    unsigned long long rng = seed;
    static const size_t frags[] = {1, 2, 3, 5, 8, 16, 64, 100000};
    for (size_t f = 0; f < sizeof frags / sizeof *frags; f++) {
        for (int rep = 0; rep < (frags[f] > 1 ? 8 : 1); rep++) {
            assembled a;
            stream(cfg, text, len, &rng, frags[f], &a);
            CHECK(a.order_ok, "deltas out of order for %.200s", text);
            CHECK(a.utf8_ok, "a delta split a UTF-8 character for %.200s", text);
            if (!a.valid && a.n_calls > 0) {
                /* malformed after a call start went out: the whole parse gives the text back */
                CHECK(r.n_calls == 0 && r.content_len == len, "malformed: whole text expected");
                continue;
            }
            size_t want_len = r.content ? r.content_len : 0;
            CHECK(a.content_len == want_len && (!want_len || !memcmp(a.content, r.content, want_len)),
                  "content differs (frag %zu): streamed '%.*s' whole '%.*s' (text %.200s)", frags[f],
                  (int)a.content_len, a.content, (int)want_len, r.content ? r.content : "", text);
            CHECK((size_t)a.n_calls == r.n_calls, "calls: streamed %d, whole %zu (frag %zu, text %.200s)", a.n_calls,
                  r.n_calls, frags[f], text);
            for (size_t k = 0; k < r.n_calls && (int)k < a.n_calls; k++) {
                CHECK(!strcmp(a.ids[k], r.calls[k].id), "id");
                CHECK(!strcmp(a.names[k], r.calls[k].name), "name '%s' vs '%s'", a.names[k], r.calls[k].name);
                CHECK(a.args_len[k] == strlen(r.calls[k].arguments) &&
                          !memcmp(a.args[k], r.calls[k].arguments, a.args_len[k]),
                      "args '%.*s' vs '%s'", (int)a.args_len[k], a.args[k], r.calls[k].arguments);
            }
        }
    }
    tc_result_free(&r);
}

/* ---- whole results ---- */

static void expect(tc_format f, int parallel, const char *text, const char *content, int n, const want_call *calls) {
    tc_config cfg = config(f, parallel);
    tc_result r;
    if (tc_parse(&cfg, text, strlen(text), &r)) {
        CHECK(0, "tc_parse failed on %s", text);
        return;
    }
    if (content) {
        CHECK(r.content && !strcmp(r.content, content) && r.content_len == strlen(content),
              "[%s] content: got '%s', want '%s' (text %s)", tc_format_name(f), r.content ? r.content : "(null)",
              content, text);
    } else {
        CHECK(!r.content, "[%s] content should be null, got '%s' (text %s)", tc_format_name(f), r.content, text);
    }
    CHECK(r.n_calls == (size_t)n, "[%s] calls: got %zu, want %d (text %s)", tc_format_name(f), r.n_calls, n, text);
    for (int i = 0; i < n && (size_t)i < r.n_calls; i++) {
        CHECK(!strcmp(r.calls[i].name, calls[i].name), "name %s vs %s", r.calls[i].name, calls[i].name);
        CHECK(!strcmp(r.calls[i].arguments, calls[i].args), "[%s] args: got '%s', want '%s'", tc_format_name(f),
              r.calls[i].arguments, calls[i].args);
        CHECK(strlen(r.calls[i].id) == TC_ID_LEN && !strncmp(r.calls[i].id, "call_", 5), "id %s", r.calls[i].id);
        for (int k = 5; k < TC_ID_LEN; k++) {
            char c = r.calls[i].id[k];
            CHECK((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'), "id char");
        }
    }
    for (size_t i = 0; i + 1 < r.n_calls; i++) CHECK(strcmp(r.calls[i].id, r.calls[i + 1].id), "ids must differ");
    tc_result_free(&r);
    check_stream_matches(&cfg, text, strlen(text), 7);
}

#define CALLS(...) ((const want_call[]){__VA_ARGS__})
#define TEXT_BACK(f, t) expect(f, 1, t, t, 0, NULL) /* malformed or no call: the text as it came */

static const char W_PARIS[] = "{\"city\": \"Paris\"}";

static void test_hermes(void) {
    const tc_format H = TC_FORMAT_HERMES;
    expect(H, 1, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>", NULL, 1,
           CALLS({"get_weather", W_PARIS}));
    expect(H, 1, "Let me check.\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
           "Let me check.", 1, CALLS({"get_weather", W_PARIS}));
    const char *par = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n"
                      "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": [2, {\"c\": \"}\"}]}}\n</tool_call>";
    expect(H, 1, par, NULL, 2, CALLS({"get_weather", W_PARIS}, {"add", "{\"a\": 1, \"b\": [2, {\"c\": \"}\"}]}"}));
    expect(H, 0, par, NULL, 1, CALLS({"get_weather", W_PARIS})); /* parallel_tool_calls false */
    /* the closing tag missing after the last call, or cut off */
    expect(H, 1, "<tool_call>{\"name\":\"add\",\"arguments\":{\"a\":1,\"b\":2}}", NULL, 1, CALLS({"add", "{\"a\":1,\"b\":2}"}));
    expect(H, 1, "<tool_call>{\"name\":\"add\",\"arguments\":{\"a\":1}}\n</tool_", NULL, 1, CALLS({"add", "{\"a\":1}"}));
    /* unicode and escapes in the arguments, kept as written */
    expect(H, 1, "<tool_call>{\"name\": \"search\", \"arguments\": {\"q\": \"Zürich 日本 😀 \\u00e9 \\\"x\\\" \\\\\"}}</tool_call>",
           NULL, 1, CALLS({"search", "{\"q\": \"Zürich 日本 😀 \\u00e9 \\\"x\\\" \\\\\"}"}));
    /* arguments before the name; arguments as a string; no arguments */
    expect(H, 1, "<tool_call>{\"arguments\": {\"a\": 1}, \"name\": \"add\"}</tool_call>", NULL, 1, CALLS({"add", "{\"a\": 1}"}));
    expect(H, 1, "<tool_call>{\"name\": \"add\", \"arguments\": \"{\\\"a\\\": 1}\"}</tool_call>", NULL, 1,
           CALLS({"add", "{\"a\": 1}"}));
    expect(H, 1, "<tool_call>{\"name\": \"now\"}</tool_call>", NULL, 1, CALLS({"now", "{}"}));
    expect(H, 1, "<tool_call>{\"name\": \"now\", \"arguments\": {}, \"id\": 7, \"extra\": [true, null]}</tool_call>", NULL, 1,
           CALLS({"now", "{}"}));
    /* numbers past 64 bits or a double's range (valid JSON; a sampled unbounded integer), kept as written */
    expect(H, 1, "<tool_call>{\"name\": \"add\", \"arguments\": {\"a\": 123456789012345678901234567890, \"b\": -1e999}}"
                 "</tool_call>", NULL, 1, CALLS({"add", "{\"a\": 123456789012345678901234567890, \"b\": -1e999}"}));
    expect(H, 1, "<tool_call>{\"name\": \"add\", \"arguments\": \"{\\\"a\\\": 99999999999999999999999}\"}</tool_call>", NULL, 1,
           CALLS({"add", "{\"a\": 99999999999999999999999}"}));
    /* numbers that are not JSON's stay refused */
    TEXT_BACK(H, "<tool_call>{\"name\": \"add\", \"arguments\": {\"a\": 01}}</tool_call>");
    TEXT_BACK(H, "<tool_call>{\"name\": \"add\", \"arguments\": {\"a\": 1.}}</tool_call>");
    TEXT_BACK(H, "<tool_call>{\"name\": \"add\", \"arguments\": {\"a\": -}}</tool_call>");
    TEXT_BACK(H, "<tool_call>{\"name\": \"add\", \"arguments\": {\"a\": 1e+}}</tool_call>");
    TEXT_BACK(H, "<tool_call>{\"name\": \"add\", \"arguments\": {\"a\": 2, \"a\": 123456789012345678901234567890}}</tool_call>");
    /* text after a call; a thinking block before it */
    expect(H, 1, "<tool_call>{\"name\": \"now\", \"arguments\": {}}</tool_call>\n\nDone.", "Done.", 1, CALLS({"now", "{}"}));
    expect(H, 1, "<think>\nhmm\n</think>\n\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>",
           "<think>\nhmm\n</think>", 1, CALLS({"now", "{}"}));
    /* no call */
    TEXT_BACK(H, "Hello there <b>bold</b> <tool_cal and <tools> and a < b\n");
    TEXT_BACK(H, "");
    TEXT_BACK(H, "  \n ");
    TEXT_BACK(H, "Unicode: Grüße, 日本語, 😀.");
    /* malformed: the whole text comes back */
    TEXT_BACK(H, "<tool_call>{\"name\": \"add\", \"arguments\": {\"a\": 1,}}</tool_call>");
    TEXT_BACK(H, "Sure. <tool_call>{\"name\": \"rm_rf\", \"arguments\": {}}</tool_call>");
    TEXT_BACK(H, "<tool_call>{\"name\": \"add\", \"argu");
    TEXT_BACK(H, "<tool_call>{\"name\": \"add\", \"arguments\": {\"a\": 1}");
    TEXT_BACK(H, "<tool_call>{\"name\": \"add\", \"arguments\": [1, 2]}</tool_call>");
    TEXT_BACK(H, "<tool_call>{\"name\": \"add\", \"arguments\": \"not json\"}</tool_call>");
    TEXT_BACK(H, "<tool_call>{\"name\": \"add\", \"name\": \"now\"}</tool_call>");
    TEXT_BACK(H, "<tool_call>{\"name\": 5, \"arguments\": {}}</tool_call>");
    TEXT_BACK(H, "<tool_call>{\"arguments\": {}}</tool_call>");
    TEXT_BACK(H, "Use <tool_call> tags to call tools.");
    TEXT_BACK(H, "<tool_call>");
    /* a second call malformed after the first: all text */
    TEXT_BACK(H, "<tool_call>{\"name\": \"now\", \"arguments\": {}}</tool_call><tool_call>{\"name\": \"x\"}</tool_call>");
}

static void test_llama3(void) {
    const tc_format L = TC_FORMAT_LLAMA3;
    expect(L, 1, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}", NULL, 1, CALLS({"get_weather", W_PARIS}));
    expect(L, 1, "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}", NULL, 1,
           CALLS({"get_weather", W_PARIS}));
    expect(L, 1, "  \n{\"type\": \"function\", \"name\": \"add\", \"arguments\": {\"a\": 1}}\n", NULL, 1,
           CALLS({"add", "{\"a\": 1}"}));
    expect(L, 1, "{\"name\": \"now\", \"parameters\": {}}; {\"name\": \"add\", \"parameters\": {\"a\": \"日本\"}}", NULL, 2,
           CALLS({"now", "{}"}, {"add", "{\"a\": \"日本\"}"}));
    expect(L, 1, "{\"name\": \"now\", \"parameters\": {}}\n{\"name\": \"add\", \"parameters\": {}}", NULL, 2,
           CALLS({"now", "{}"}, {"add", "{}"}));
    expect(L, 1, "I will look it up.<|python_tag|>{\"name\": \"now\", \"parameters\": {}}", "I will look it up.", 1,
           CALLS({"now", "{}"}));
    TEXT_BACK(L, "The answer is {not json} and {\"name\": \"now\"}.");
    TEXT_BACK(L, "{\"answer\": 42}");
    TEXT_BACK(L, "{\"name\": \"nope\", \"parameters\": {}}");
    TEXT_BACK(L, "<|python_tag|>brave_search.call(query=\"weather\")");
    TEXT_BACK(L, "{\"name\": \"now\", \"parameters\": {");
}

static void test_mistral(void) {
    const tc_format M = TC_FORMAT_MISTRAL;
    expect(M, 1,
           "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}, {\"name\": \"add\", "
           "\"arguments\": {\"a\": 1, \"b\": 2}}]",
           NULL, 2, CALLS({"get_weather", W_PARIS}, {"add", "{\"a\": 1, \"b\": 2}"}));
    expect(M, 1, "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}[TOOL_CALLS]add[ARGS]{\"a\": 1}", NULL, 2,
           CALLS({"get_weather", W_PARIS}, {"add", "{\"a\": 1}"}));
    expect(M, 1, "[TOOL_CALLS]add[CALL_ID]abc123XYZ[ARGS]{\"a\": \"é\"}", NULL, 1, CALLS({"add", "{\"a\": \"é\"}"}));
    expect(M, 1, " [{\"name\": \"add\", \"arguments\": {\"a\": 1}}]", NULL, 1, CALLS({"add", "{\"a\": 1}"}));
    expect(M, 1, "Sure.\n[TOOL_CALLS] [ {\"name\": \"now\", \"arguments\": {}} ]", "Sure.", 1, CALLS({"now", "{}"}));
    expect(M, 1, "[TOOL_CALLS]{\"name\": \"now\", \"arguments\": {}}", NULL, 1, CALLS({"now", "{}"}));
    expect(M, 0, "[TOOL_CALLS]now[ARGS]{}[TOOL_CALLS]add[ARGS]{}", NULL, 1, CALLS({"now", "{}"}));
    TEXT_BACK(M, "[1] first point\n[2] second");
    TEXT_BACK(M, "[TOOL_CALLS]unknown[ARGS]{}");
    TEXT_BACK(M, "[TOOL_CALLS][{\"name\": \"add\", \"arguments\": {}},]");
    TEXT_BACK(M, "[TOOL_CALLS]add[ARGS]{\"a\":");
    TEXT_BACK(M, "[TOOL_CALLS]add");
    TEXT_BACK(M, "[{\"answer\": 1}]");
}

static void test_json(void) {
    const tc_format J = TC_FORMAT_JSON;
    expect(J, 1, "{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": \"日本\"}}", NULL, 1,
           CALLS({"add", "{\"a\": 1, \"b\": \"日本\"}"}));
    /* arguments as written: numbers past 64 bits or a double's range stay a call, unchanged */
    expect(J, 1, "{\"name\": \"add\", \"arguments\": {\"a\": 123456789012345678901234567890, \"b\": -1e999}}", NULL, 1,
           CALLS({"add", "{\"a\": 123456789012345678901234567890, \"b\": -1e999}"}));
    expect(J, 1,
           "{\"tool_calls\": [{\"function\": {\"arguments\": {\"b\": 2.50, \"a\": [1, {\"x\": \"]}\"}]}, \"name\": \"add\"}}, "
           "{\"function\": {\"name\": \"now\"}}]}",
           NULL, 2, CALLS({"add", "{\"b\": 2.50, \"a\": [1, {\"x\": \"]}\"}]}"}, {"now", "{}"}));
    TEXT_BACK(J, "{\"name\": \"add\", \"arguments\": {\"a\": 01}}");
    expect(J, 1,
           "{\"tool_calls\": [{\"id\": \"x\", \"type\": \"function\", \"function\": {\"name\": \"add\", \"arguments\": "
           "\"{\\\"a\\\": 1}\"}}]}",
           NULL, 1, CALLS({"add", "{\"a\": 1}"}));
    expect(J, 1, "[{\"name\": \"now\", \"parameters\": {}}, {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]",
           NULL, 2, CALLS({"now", "{}"}, {"get_weather", "{\"city\": \"Paris\"}"}));
    expect(J, 0, "[{\"name\": \"now\"}, {\"name\": \"add\"}]", NULL, 1, CALLS({"now", "{}"}));
    expect(J, 1, "```json\n{\"name\": \"now\", \"arguments\": {}}\n```\n", NULL, 1, CALLS({"now", "{}"}));
    expect(J, 1, "\n```\n[{\"name\": \"now\"}]\n```", NULL, 1, CALLS({"now", "{}"}));
    TEXT_BACK(J, "{\"answer\": 42}");
    TEXT_BACK(J, "{\"name\": \"add\", \"arguments\": {\"a\": 1}} and more");
    TEXT_BACK(J, "[]");
    TEXT_BACK(J, "```python\nprint(1)\n```");
    TEXT_BACK(J, "```json\n{\"name\": \"now\"}");
    TEXT_BACK(J, "Plain answer: use {\"name\": \"now\"}.");
    TEXT_BACK(J, "{\"name\": \"now\", \"arguments\": [1]}");
}

static void test_none(void) {
    TEXT_BACK(TC_FORMAT_NONE, "<tool_call>{\"name\": \"now\", \"arguments\": {}}</tool_call>");
    TEXT_BACK(TC_FORMAT_NONE, "plain");
}

/* What streaming sends before the end: content at once (but not what may start a marker), a call
 * once its name is known, then its arguments as they come. */
static void test_stream_timing(void) {
    tc_config cfg = config(TC_FORMAT_HERMES, 1);
    tc_parser *p = tc_parser_create(&cfg);
    const tc_delta *d;
    size_t n;
    tc_parser_feed(p, "Hello <tool", 11);
    n = tc_parser_take(p, &d);
    CHECK(n == 1 && d[0].kind == TC_DELTA_CONTENT && d[0].len == 5 && !memcmp(d[0].text, "Hello", 5), "content first");
    tc_parser_feed(p, "s> are nice. ", 13);
    n = tc_parser_take(p, &d);
    CHECK(n == 1 && d[0].len == 18 && !memcmp(d[0].text, " <tools> are nice.", 18), "not a marker: %.*s",
          n ? (int)d[0].len : 0, n ? d[0].text : "");
    tc_parser_feed(p, "<tool_call>\n{\"name\": \"get_wea", 29);
    CHECK(tc_parser_take(p, &d) == 0, "held until the name is known");
    tc_parser_feed(p, "ther\", \"arguments\": {\"city\": \"Par", 33);
    n = tc_parser_take(p, &d);
    CHECK(n == 2 && d[0].kind == TC_DELTA_CALL_START && !strcmp(d[0].text, "get_weather") && d[0].index == 0 &&
              d[1].kind == TC_DELTA_CALL_ARGS && d[1].len == 13 && !memcmp(d[1].text, "{\"city\": \"Par", 13),
          "start, then argument fragments (%zu deltas)", n);
    tc_parser_feed(p, "is\"}}\n</tool_call>", 18);
    n = tc_parser_take(p, &d);
    CHECK(n == 1 && d[0].kind == TC_DELTA_CALL_ARGS && d[0].len == 4 && !memcmp(d[0].text, "is\"}", 4), "rest of args");
    tc_parser_finish(p);
    CHECK(tc_parser_take(p, &d) == 0 && tc_parser_calls_valid(p) && tc_parser_n_calls(p) == 1, "end");
    tc_parser_destroy(p);

    /* a call cut off after its start went out: its text follows as content, calls not valid */
    p = tc_parser_create(&cfg);
    const char *t = "<tool_call>{\"name\": \"add\", \"arguments\": {\"a\": 1";
    tc_parser_feed(p, t, strlen(t));
    tc_parser_finish(p);
    n = tc_parser_take(p, &d);
    CHECK(!tc_parser_calls_valid(p) && n == 3 && d[2].kind == TC_DELTA_CONTENT && d[2].len == strlen(t),
          "truncated call flushed as content");
    tc_parser_destroy(p);
}

static void test_formats(void) {
    tc_format f;
    CHECK(tc_format_from_name("hermes", &f) == 0 && f == TC_FORMAT_HERMES, "hermes");
    CHECK(tc_format_from_name("auto", &f) == 0 && f == TC_FORMAT_AUTO, "auto");
    CHECK(tc_format_from_name("none", &f) == 0 && f == TC_FORMAT_NONE, "none");
    CHECK(tc_format_from_name("Hermes", &f) != 0 && tc_format_from_name(NULL, &f) != 0, "unknown");
    CHECK(tc_format_detect("{{ '<tool_call>' }}") == TC_FORMAT_HERMES, "detect hermes");
    CHECK(tc_format_detect("{%- if message.role == 'ipython' %}") == TC_FORMAT_LLAMA3, "detect llama3");
    CHECK(tc_format_detect("{{ '<|python_tag|>' }}") == TC_FORMAT_LLAMA3, "detect python_tag");
    CHECK(tc_format_detect("{{ '[TOOL_CALLS]' }}") == TC_FORMAT_MISTRAL, "detect mistral");
    CHECK(tc_format_detect("{{ messages }}") == TC_FORMAT_JSON && tc_format_detect(NULL) == TC_FORMAT_JSON, "json");
    char **names;
    size_t n;
    CHECK(tc_tool_names("[{\"type\": \"function\", \"function\": {\"name\": \"a\"}}, {\"type\": \"x\"}, "
                        "{\"function\": {\"name\": \"日本\"}}]",
                        &names, &n) == 0 &&
              n == 2 && !strcmp(names[0], "a") && !strcmp(names[1], "日本"),
          "tool names");
    free(names);
    CHECK(tc_tool_names("{", &names, &n) != 0 && !names, "bad tools JSON");
}

/* Random outputs built from the pieces calls are made of: every cut must reassemble to the
 * whole parse. */
static void test_random(void) {
    static const char *const pieces[] = {
        "<tool_call>", "</tool_call>", "<tool_", "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", "<|python_tag|>", "```json\n",
        "```", "{\"name\": \"add\", \"arguments\": {\"a\": 1}}", "{\"name\": \"now\"}", "{\"name\": \"bad\"}",
        "{\"arguments\": {\"x\": \"日本\"}, \"name\": \"search\"}", "{\"name\": \"add\", \"arguments\": {\"a\": ", "}",
        "]", "[", ",", ";", " ", "\n", "text", "é", "😀", "add", "{", "\"", "\\",
        "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Zürich\"}}", "{\"tool_calls\": [", "{}",
        /* whole calls, so that many outputs hold valid ones */
        "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": [1, \"}\"]}}\n</tool_call>",
        "<tool_call>{\"name\": \"now\"}</tool_call>", "<tool_call>{\"arguments\": {}, \"name\": \"now\"}",
        "[TOOL_CALLS][{\"name\": \"add\", \"arguments\": {\"a\": \"日本\"}}, {\"name\": \"now\"}]",
        "[TOOL_CALLS]search[ARGS]{\"q\": \"😀\"}", "<|python_tag|>{\"name\": \"now\", \"parameters\": {}}",
        "{\"name\": \"add\", \"parameters\": {\"a\": 1}}; ", "[{\"name\": \"now\", \"arguments\": {}}]"};
    const size_t n_pieces = sizeof pieces / sizeof *pieces;
    unsigned long long rng = 12345;
    int with_calls = 0, malformed_started = 0;
    for (int iter = 0; iter < 1500; iter++) {
        char text[1024];
        size_t len = 0;
        int k = 1 + (int)(test_rand_u64(&rng) % 6);
        for (int i = 0; i < k; i++) {
            const char *s = pieces[test_rand_u64(&rng) % n_pieces];
            if (len + strlen(s) >= sizeof text) break;
            memcpy(text + len, s, strlen(s));
            len += strlen(s);
        }
        text[len] = 0;
        tc_config cfg = config((tc_format)(1 + iter % 4), (int)(test_rand_u64(&rng) % 4 != 0));
        unsigned long long seed = test_rand_u64(&rng);
        tc_result r;
        if (tc_parse(&cfg, text, len, &r) == 0) {
            with_calls += r.n_calls > 0;
            tc_result_free(&r);
        }
        assembled a;
        stream(&cfg, text, len, &seed, 1, &a);
        malformed_started += !a.valid && a.n_calls > 0;
        int before = g_test_failures;
        check_stream_matches(&cfg, text, len, seed);
        if (g_test_failures != before) {
            fprintf(stderr, "  random case %d (%s): %s\n", iter, tc_format_name(cfg.format), text);
            break;
        }
    }
    /* the generator must reach both cases, or this test checks nothing */
    printf("random outputs: %d of 1500 with calls, %d malformed after a call start\n", with_calls, malformed_started);
    CHECK(with_calls >= 100 && malformed_started >= 10, "too few random cases with calls");
}

int main(void) {
    test_formats();
    test_hermes();
    test_llama3();
    test_mistral();
    test_json();
    test_none();
    test_stream_timing();
    test_random();
    TEST_DONE();
}
