/* Forced tool calls (tool_grammar.h): for each format, the grammar built from a request's tools
 * (compiled strict, wrapped as pagoda_grammar_compile wraps it, run byte by byte) accepts the
 * calls that format writes and refuses the rest; every accepted text parses back (tool_calls.h)
 * into exactly the calls it spells. Also: one named function only, parallel_tool_calls false,
 * parameters with $defs / $ref (pydantic's shape) rebased into the wrapper, and errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/json_schema.h"
#include "grammar/matcher.h"
#include "serve/tool_calls.h"
#include "serve/tool_grammar.h"
#include "test_util.h"

static gr_vocab *g_vocab;

static const char *TOOLS =
    "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{\"type\":\"object\","
    "\"properties\":{\"city\":{\"type\":\"string\"},\"unit\":{\"enum\":[\"c\",\"f\"]}},\"required\":[\"city\"]}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"add\",\"parameters\":{\"type\":\"object\",\"properties\":"
    "{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"integer\"}},\"required\":[\"a\",\"b\"]}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"ping\"}},"
    /* pydantic's shape: $defs at the root of the parameters, referred to as #/$defs/... */
    "{\"type\":\"function\",\"function\":{\"name\":\"move\",\"parameters\":{\"$defs\":{\"Point\":{\"type\":"
    "\"object\",\"properties\":{\"x\":{\"type\":\"integer\"},\"y\":{\"type\":\"integer\"}},\"required\":[\"x\","
    "\"y\"]}},\"type\":\"object\",\"properties\":{\"to\":{\"$ref\":\"#/$defs/Point\"}},\"required\":[\"to\"]}}}]";

static const char *const NAMES[] = {"get_weather", "add", "ping", "move"};

static gr_compiled *build(tc_format f, const char *only, int parallel) {
    tg_spec ts;
    char err[512];
    if (tg_build(f, TOOLS, only, parallel, &ts, err, sizeof err)) {
        CHECK(0, "tg_build(%s): %s", tc_format_name(f), err);
        return NULL;
    }
    js_options o;
    js_options_default(&o);
    o.strict = 1;
    gr_grammar *g = js_compile(ts.schema, strlen(ts.schema), &o, err, sizeof err);
    CHECK(g, "%s: %s (schema %s)", tc_format_name(f), err, ts.schema);
    if (g && (ts.prefix || ts.suffix || ts.min_repeat || ts.max_repeat))
        CHECK(!gr_wrap(g, ts.prefix, ts.suffix, ts.separator, ts.min_repeat, ts.max_repeat), "gr_wrap: %s", gr_error(g));
    gr_compiled *c = g ? gr_compile(g, g_vocab, err, sizeof err) : NULL;
    CHECK(!g || c, "%s: %s", tc_format_name(f), err);
    gr_free(g);
    tg_spec_free(&ts);
    return c;
}

static int accepts(gr_compiled *c, const char *text) {
    gr_matcher *m = gr_matcher_new(c);
    int ok = m && gr_matcher_accept_bytes(m, (const uint8_t *)text, strlen(text)) == 0 && gr_matcher_can_end(m);
    gr_matcher_free(m);
    return ok;
}

/* text must be accepted and parse into n_calls calls named names[...] */
static void check_call(tc_format f, gr_compiled *c, const char *text, int n_calls, const char *const *names) {
    CHECK(accepts(c, text), "%s: refused %s", tc_format_name(f), text);
    tc_config cfg = {.format = f, .tool_names = NAMES, .n_tool_names = 4, .parallel = 1};
    tc_result r;
    CHECK(tc_parse(&cfg, text, strlen(text), &r) == 0, "tc_parse");
    CHECK((int)r.n_calls == n_calls && !r.content, "%s: %s parsed into %zu calls, content %s", tc_format_name(f), text,
          r.n_calls, r.content ? r.content : "(none)");
    for (int i = 0; i < n_calls && i < (int)r.n_calls; i++)
        CHECK(!strcmp(r.calls[i].name, names[i]), "%s: call %d named %s", tc_format_name(f), i, r.calls[i].name);
    tc_result_free(&r);
}

static void refuse(tc_format f, gr_compiled *c, const char *text) {
    CHECK(!accepts(c, text), "%s: accepted %s", tc_format_name(f), text);
}

static const char *const W[] = {"get_weather", "add"}, *const M[] = {"move"};

static void test_hermes(void) {
    tc_format f = TC_FORMAT_HERMES;
    gr_compiled *c = build(f, NULL, 1);
    if (!c) return;
    check_call(f, c, "<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}\n</tool_call>", 1, W);
    check_call(f, c,
               "<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"unit\":\"c\",\"city\":\"Oslo\"}}\n</tool_call>\n"
               "<tool_call>\n{\"arguments\":{\"b\":2,\"a\":1},\"name\":\"add\"}\n</tool_call>",
               2, W);
    check_call(f, c, "<tool_call>\n{\"name\":\"move\",\"arguments\":{\"to\":{\"x\":1,\"y\":-2}}}\n</tool_call>", 1, M);
    refuse(f, c, "{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}");               /* no tags */
    refuse(f, c, "<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"town\":\"Oslo\"}}\n</tool_call>"); /* strict */
    refuse(f, c, "<tool_call>\n{\"name\":\"add\",\"arguments\":{\"a\":1}}\n</tool_call>");       /* required b */
    refuse(f, c, "<tool_call>\n{\"name\":\"sub\",\"arguments\":{}}\n</tool_call>");              /* unknown */
    refuse(f, c, "<tool_call>\n{\"name\":\"move\",\"arguments\":{\"to\":{\"x\":1}}}\n</tool_call>"); /* $ref'd y */
    refuse(f, c, "Sure! <tool_call>\n{\"name\":\"ping\",\"arguments\":{}}\n</tool_call>");       /* text first */
    refuse(f, c, "");
    gr_compiled_free(c);
    /* parallel_tool_calls false: one block only */
    c = build(f, NULL, 0);
    if (!c) return;
    check_call(f, c, "<tool_call>\n{\"name\":\"ping\",\"arguments\":{}}\n</tool_call>", 1, (const char *const[]){"ping"});
    refuse(f, c,
           "<tool_call>\n{\"name\":\"ping\",\"arguments\":{}}\n</tool_call>\n<tool_call>\n{\"name\":\"ping\","
           "\"arguments\":{}}\n</tool_call>");
    gr_compiled_free(c);
}

static void test_named(void) {
    gr_compiled *c = build(TC_FORMAT_HERMES, "add", 1);
    if (!c) return;
    check_call(TC_FORMAT_HERMES, c, "<tool_call>\n{\"name\":\"add\",\"arguments\":{\"a\":1,\"b\":2}}\n</tool_call>", 1,
               (const char *const[]){"add"});
    refuse(TC_FORMAT_HERMES, c, "<tool_call>\n{\"name\":\"ping\",\"arguments\":{}}\n</tool_call>");
    gr_compiled_free(c);
}

static void test_llama3(void) {
    tc_format f = TC_FORMAT_LLAMA3;
    gr_compiled *c = build(f, NULL, 1);
    if (!c) return;
    check_call(f, c, "{\"name\":\"get_weather\",\"parameters\":{\"city\":\"Oslo\"}}", 1, W);
    check_call(f, c, "{\"name\":\"get_weather\",\"parameters\":{\"city\":\"Oslo\"}};{\"name\":\"add\",\"parameters\":{\"a\":1,\"b\":2}}", 2, W);
    refuse(f, c, "{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}");
    gr_compiled_free(c);
}

static void test_mistral(void) {
    tc_format f = TC_FORMAT_MISTRAL;
    gr_compiled *c = build(f, NULL, 1);
    if (!c) return;
    check_call(f, c, "[TOOL_CALLS][{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}]", 1, W);
    check_call(f, c,
               "[TOOL_CALLS][{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}},{\"name\":\"add\","
               "\"arguments\":{\"a\":1,\"b\":2}}]",
               2, W);
    refuse(f, c, "[TOOL_CALLS][]");
    gr_compiled_free(c);
    c = build(f, NULL, 0);
    if (!c) return;
    refuse(f, c, "[TOOL_CALLS][{\"name\":\"ping\",\"arguments\":{}},{\"name\":\"ping\",\"arguments\":{}}]");
    gr_compiled_free(c);
}

static void test_json(void) {
    tc_format f = TC_FORMAT_JSON;
    gr_compiled *c = build(f, NULL, 1);
    if (!c) return;
    check_call(f, c, "{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}", 1, W);
    check_call(f, c, "[{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}},{\"name\":\"add\",\"arguments\":{\"a\":1,\"b\":2}}]", 2, W);
    gr_compiled_free(c);
    c = build(f, NULL, 0);
    if (!c) return;
    check_call(f, c, "{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}", 1, W);
    refuse(f, c, "[{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}]");
    gr_compiled_free(c);
}

static void test_errors(void) {
    tg_spec ts;
    char err[256];
    CHECK(tg_build(TC_FORMAT_HERMES, TOOLS, "nope", 1, &ts, err, sizeof err) == -1 && strstr(err, "nope"), "%s", err);
    CHECK(tg_build(TC_FORMAT_HERMES, "[]", NULL, 1, &ts, err, sizeof err) == -1, "no tools");
    CHECK(tg_build(TC_FORMAT_HERMES, "{", NULL, 1, &ts, err, sizeof err) == -1, "bad json");
    CHECK(tg_build(TC_FORMAT_HERMES,
                   "[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":[1]}}]", NULL, 1, &ts, err,
                   sizeof err) == -1 && strstr(err, "'f'"),
          "%s", err);
    /* a self-referencing parameters schema ("#") is rebased too, and stays recursive */
    const char *rec = "[{\"type\":\"function\",\"function\":{\"name\":\"tree\",\"parameters\":{\"type\":\"object\","
                      "\"properties\":{\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#\"}}}}}}]";
    CHECK(tg_build(TC_FORMAT_JSON, rec, NULL, 0, &ts, err, sizeof err) == 0, "%s", err);
    js_options o;
    js_options_default(&o);
    o.strict = 1;
    gr_grammar *g = ts.schema ? js_compile(ts.schema, strlen(ts.schema), &o, err, sizeof err) : NULL;
    gr_compiled *c = g ? gr_compile(g, g_vocab, err, sizeof err) : NULL;
    CHECK(c, "recursive: %s", err);
    if (c) {
        CHECK(accepts(c, "{\"name\":\"tree\",\"arguments\":{\"kids\":[{\"kids\":[{}]},{}]}}"), "nested tree refused");
        CHECK(!accepts(c, "{\"name\":\"tree\",\"arguments\":{\"kids\":[{\"kid\":1}]}}"), "strict inside $ref");
    }
    gr_compiled_free(c);
    gr_free(g);
    tg_spec_free(&ts);
}

int main(void) {
    g_vocab = gr_vocab_bytes();
    test_hermes();
    test_named();
    test_llama3();
    test_mistral();
    test_json();
    test_errors();
    gr_vocab_free(g_vocab);
    TEST_DONE();
}
