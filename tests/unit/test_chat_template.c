/* Chat template interpreter: exact equality with Hugging Face renderings
 * (tests/golden/chat_templates.json, made by tests/golden/make_chat_template_golden.py),
 * Jinja semantics spot checks, and errors/limits on bad or hostile templates. */
#include <jansson.h>
#include <string.h>
#include <time.h>

#include "pagoda.h"
#include "test_util.h"
#include "template/chat_template.h"

static char *dump_or_null(json_t *j) {
    if (!j || json_is_null(j)) return NULL;
    return json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
}

static void golden_cases(void) {
    json_error_t err;
    json_t *root = json_load_file(PAGODA_TESTS_DIR "/golden/chat_templates.json", 0, &err);
    CHECK(root != NULL, "cannot load chat_templates.json: %s", err.text);
    if (!root) return;
    json_t *tmpls = json_object_get(root, "templates"), *cases = json_object_get(root, "cases");
    size_t i, passed = 0;
    json_t *cs;
    json_array_foreach(cases, i, cs) {
        const char *name = json_string_value(json_object_get(cs, "name"));
        const char *tmpl = json_string_value(json_object_get(tmpls, json_string_value(json_object_get(cs, "template"))));
        char *msgs = dump_or_null(json_object_get(cs, "messages"));
        char *tools = dump_or_null(json_object_get(cs, "tools"));
        char *extra = dump_or_null(json_object_get(cs, "extra"));
        chat_template_input in = {
            .messages_json = msgs,
            .tools_json = tools,
            .add_generation_prompt = json_is_true(json_object_get(cs, "add_generation_prompt")),
            .bos_token = json_string_value(json_object_get(cs, "bos_token")),
            .eos_token = json_string_value(json_object_get(cs, "eos_token")),
            .extra_json = extra,
        };
        const char *want = json_string_value(json_object_get(cs, "expected"));
        char *out = NULL;
        pagoda_status st = chat_template_render(tmpl, &in, &out);
        CHECK(st == PAGODA_OK, "%s: status %d: %s", name, st, pagoda_last_error());
        if (st == PAGODA_OK) {
            bool same = strcmp(out, want) == 0;
            CHECK(same, "%s: mismatch\n--- got ---\n%s\n--- want ---\n%s\n---", name, out, want);
            passed += same;
        }
        free(out);
        free(msgs);
        free(tools);
        free(extra);
    }
    printf("golden: %zu/%zu cases match\n", passed, json_array_size(cases));
    CHECK(json_array_size(cases) >= 10, "expected at least 10 golden cases");
    json_decref(root);
}

static const char *MSGS = "[{\"role\":\"system\",\"content\":\"sys\"},{\"role\":\"user\",\"content\":\"hi\"},"
                          "{\"role\":\"assistant\",\"content\":\"yo\"}]";

static pagoda_status render(const char *tmpl, const char *extra, char **out) {
    chat_template_input in = {.messages_json = MSGS, .add_generation_prompt = true, .bos_token = "<s>",
                              .eos_token = "</s>", .extra_json = extra};
    return chat_template_render(tmpl, &in, out);
}

static void expect(const char *tmpl, const char *want) {
    char *out = NULL;
    pagoda_status st = render(tmpl, "{\"x\": 3, \"d\": {\"b\": 1, \"a\": [1, 2.5, null, true]}, \"s\": \"  Hello World  \"}", &out);
    CHECK(st == PAGODA_OK, "template %s: status %d: %s", tmpl, st, pagoda_last_error());
    if (st == PAGODA_OK) CHECK(!strcmp(out, want), "template %s:\n got [%s]\nwant [%s]", tmpl, out, want);
    free(out);
}

static void expect_err(const char *tmpl, pagoda_status want_st, const char *want_msg) {
    char *out = NULL;
    clock_t t0 = clock();
    pagoda_status st = render(tmpl, NULL, &out);
    double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
    CHECK(st == want_st, "template %.60s: status %d, want %d (%s)", tmpl, st, want_st,
          st ? pagoda_last_error() : out);
    CHECK(out == NULL, "template %.60s: out set on error", tmpl);
    if (st != PAGODA_OK && want_msg)
        CHECK(strstr(pagoda_last_error(), want_msg) != NULL, "template %.60s: message [%s] lacks [%s]", tmpl,
              pagoda_last_error(), want_msg);
    CHECK(secs < 10, "template %.60s: took %.1f s", tmpl, secs);
    free(out);
}

static void semantics(void) {
    /* whitespace control, trim_blocks, lstrip_blocks */
    expect("a\n  {% if true %}\n  b\n  {% endif %}\nc", "a\n  b\nc");
    expect("a  {%- if true -%}  b  {%- endif %}", "ab");
    expect("x {{- ' y ' -}} z", "x y z");
    expect("  {{ 1 }}\n{% if 1 %}\nA{% endif %}\n", "  1\nA");
    expect("  {%+ if true %}X{% endif %}", "  X");
    expect("{# comment #}\nA{#- c -#}  B", "AB");
    expect("{% raw %}{{ x }}{% endraw %}", "{{ x }}");
    expect("{% filter upper %}a{{ x }}b{% endfilter %}", "A3B");
    expect("{% macro m(a) %}{{ a }}{{ varargs }}{% endmacro %}{{ m(1, 2) }}"
           "{% for x, (y, z) in [[1, [2, 3]]] %}{{ x }}{{ y }}{{ z }}{% endfor %}",
           "1(2,)123");
    /* literals and operators */
    expect("{{ 'a\\n\\tb\\u00e9' }}|{{ \"q'\" }}", "a\n\tb\xc3\xa9|q'");
    expect("{{ 1 + 2 * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ 2 ** 10 }} {{ 7 / 2 }} {{ 1.5 + 1 }}",
           "7 3 -4 1 1024 3.5 2.5");
    expect("{{ 'a' ~ 1 ~ none ~ true }} {{ [1, 'x'] }} {{ {'k': 'v'} }}", "a1NoneTrue [1, 'x'] {'k': 'v'}");
    expect("{{ 1 < 2 and 'x' or 'y' }} {{ not 1 }} {{ 2 in [1, 2] }} {{ 'b' not in 'abc' }}", "x False True False");
    expect("{{ 'yes' if x > 2 else 'no' }}{{ 'z' if false }}", "yes");
    /* attribute/subscript/slices */
    expect("{{ messages[0].role }} {{ messages[-1]['content'] }} {{ messages.9 }} {{ d.nope }}", "system yo  ");
    expect("{{ 'hello'[::-1] }} {{ 'hello'[1:3] }} {{ [1,2,3,4][::2] }} {{ 'h\xc3\xa9llo'[1] }}",
           "olleh el [1, 3] \xc3\xa9");
    /* tests */
    expect("{{ x is defined }} {{ y is defined }} {{ y is not defined }} {{ none is none }} {{ s is string }}"
           " {{ d is mapping }} {{ d.a is iterable }} {{ x is number }} {{ d.a is sequence }} {{ x is odd }}",
           "True False True True True True True True True True");
    /* filters */
    expect("[{{ s | trim }}] {{ s | length }} {{ d.a | length }} {{ s | upper }} {{ s | lower | trim }}",
           "[Hello World] 15 4   HELLO WORLD   hello world");
    expect("{{ d | tojson }}|{{ d.a | tojson(indent=2) }}",
           "{\"b\": 1, \"a\": [1, 2.5, null, true]}|[\n  1,\n  2.5,\n  null,\n  true\n]");
    expect("{{ 'caf\xc3\xa9 \"q\"\\n' | tojson }}", "\"caf\xc3\xa9 \\\"q\\\"\\n\"");
    expect("{{ y | default('dflt') }} {{ '' | default('e', true) }} {{ [3,4] | first }} {{ [3,4] | last }}",
           "dflt e 3 4");
    expect("{{ ['a','b'] | join(', ') }} {{ messages | map(attribute='role') | join('/') }}", "a, b system/user/assistant");
    expect("{{ messages | selectattr('role', 'equalto', 'user') | list | length }}"
           "{{ messages | rejectattr('role', 'equalto', 'user') | map(attribute='content') | join }}",
           "1sysyo");
    expect("{% for k, v in d | items %}{{ k }}={{ v }};{% endfor %}", "b=1;a=[1, 2.5, None, True];");
    expect("{% for k, v in d.items() %}{{ k }},{% endfor %}{{ d.keys() | list }} {{ d.get('zz', 5) }}",
           "b,a,['b', 'a'] 5");
    expect("{{ 'a-b' | replace('-', '+') }} {{ 'abc' | capitalize }} {{ '42' | int + 1 }} {{ -3 | abs }}",
           "a+b Abc 43 3");
    /* string methods */
    expect("{{ s.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}"
           "|{{ 'ab'.startswith('a') }}{{ 'ab'.endswith('a') }}|{{ 'a b'.title() }}|{{ 'aXa'.replace('a', 'o') }}",
           "Hello World|a|['a', 'b', '', 'c']|['a', 'b']|TrueFalse|A B|oXo");
    /* loops */
    expect("{% for m in messages %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}"
           "{{ loop.length }}{{ loop.revindex }};{% endfor %}",
           "10TrueFalse33;21FalseFalse32;32FalseTrue31;");
    expect("{% for i in [] %}x{% else %}empty{% endfor %}", "empty");
    expect("{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i > 4 %}{% break %}{% endif %}"
           "{{ i }}{% endfor %}",
           "0134");
    expect("{% for m in messages if m.role != 'system' %}{{ loop.index }}{{ m.role }}{% endfor %}", "1user2assistant");
    expect("{% for a in [1,2] %}{% for b in 'xy' %}{{ a }}{{ b }}{{ loop.index }} {% endfor %}{% endfor %}",
           "1x1 1y2 2x1 2y2 ");
    /* scoping, namespace, set block, macro */
    expect("{% set v = 1 %}{% for i in [1] %}{% set v = 2 %}{% endfor %}{{ v }}", "1");
    expect("{% set b = 1 %}{% set blk %}{% set b = 2 %}{% endset %}{% for i in [] %}{% else %}{% set b = 3 %}"
           "{% endfor %}{% if true %}{% set c = 4 %}{% endif %}{{ b }}{{ c }}",
           "14");
    expect("{% set ns = namespace(n=0) %}{% for i in [1,2,3] %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}", "6");
    expect("{% set blk %}A{{ x }}{% endset %}[{{ blk }}]", "[A3]");
    expect("{% macro greet(name, p='Hi') %}{{ p }} {{ name }}{% endmacro %}{{ greet('Bob') }}/{{ greet('Al', p='Yo') }}",
           "Hi Bob/Yo Al");
    expect("{{ bos_token }}{{ eos_token }}{{ add_generation_prompt }}{{ tools }}", "<s></s>TrueNone");
    expect("{{ d.items() | list }} {{ (1,) }} {{ 'a b_c x1y'.title() }} {{ 'a b_c x1y' | title }} {{ 'caf\xc3\xa9' | upper }}",
           "[('b', 1), ('a', [1, 2.5, None, True])] (1,) A B_C X1Y A B_c X1y CAF\xc3\x89");
    expect("{{ '%s=%d%%' % ('k', 5) }} {{ ['b', 'A', 'c'] | sort }} {{ [3, 1, 2] | sort(reverse=true) }}"
           " {{ {'z': 1, 'y': 2} | dictsort }} {{ 2.5 | round }} {{ [1, 2] | sum }}",
           "k=5% ['A', 'b', 'c'] [3, 2, 1] [('y', 2), ('z', 1)] 2.0 3");
    expect("{{ 0.1 + 0.2 }} {{ 1e20 * 10 }} {{ 1 / 3 }} {{ 100.0 }} {{ 0.00001 }}",
           "0.30000000000000004 1e+21 0.3333333333333333 100.0 1e-05");
}

static void errors(void) {
    expect_err("line1\n{% if true %}\n{{ x | nosuchfilter }}\n{% endif %}", PAGODA_ERR_INVALID,
               "chat template line 3: unknown filter 'nosuchfilter'");
    expect_err("a\nb\n{% if x %}oops", PAGODA_ERR_FORMAT, "expected 'endif'");
    expect_err("a\n\n\n{{ 1 + }}", PAGODA_ERR_FORMAT, "chat template line 4");
    expect_err("{% for %}", PAGODA_ERR_FORMAT, "chat template line 1");
    expect_err("{% frobnicate %}", PAGODA_ERR_FORMAT, "unknown tag 'frobnicate'");
    expect_err("{{ 'unterminated }}", PAGODA_ERR_FORMAT, "unterminated string");
    expect_err("{% endif %}", PAGODA_ERR_FORMAT, "unexpected 'endif'");
    expect_err("{{ raise_exception('Conversation roles must alternate') }}", PAGODA_ERR_INVALID,
               "Conversation roles must alternate");
    expect_err("{{ x is frobbed }}", PAGODA_ERR_INVALID, "unknown test 'frobbed'");
    expect_err("{{ y.z }}", PAGODA_ERR_INVALID, "'y' is undefined");
    expect_err("{{ 1 + 'a' }}", PAGODA_ERR_INVALID, "unsupported operand");
    expect_err("{{ 1 // 0 }}", PAGODA_ERR_INVALID, "division");
    /* hostile templates are refused, not hung or crashed */
    char *deep = malloc(200000);
    size_t n = 0;
    n += (size_t)sprintf(deep + n, "{{ ");
    for (int i = 0; i < 50000; i++) deep[n++] = '(';
    deep[n++] = '1';
    for (int i = 0; i < 50000; i++) deep[n++] = ')';
    strcpy(deep + n, " }}");
    expect_err(deep, PAGODA_ERR_FORMAT, "nested too deeply");
    n = 0;
    for (int i = 0; i < 5000; i++) n += (size_t)sprintf(deep + n, "{%% if 1 %%}");
    deep[n] = 0;
    expect_err(deep, PAGODA_ERR_FORMAT, "nested too deeply");
    n = (size_t)sprintf(deep, "{{ 1");
    for (int i = 0; i < 20000; i++) n += (size_t)sprintf(deep + n, " + 1");
    strcpy(deep + n, " }}");
    expect_err(deep, PAGODA_ERR_FORMAT, "nested too deeply");
    n = (size_t)sprintf(deep, "{{ ");
    for (int i = 0; i < 30000; i++) n += (size_t)sprintf(deep + n, "- not ");
    strcpy(deep + n, "1 }}");
    expect_err(deep, PAGODA_ERR_FORMAT, "nested too deeply");
    n = (size_t)sprintf(deep, "{%% if 0 %%}");
    for (int i = 0; i < 5000; i++) n += (size_t)sprintf(deep + n, "{%% elif 0 %%}");
    strcpy(deep + n, "{% endif %}");
    expect_err(deep, PAGODA_ERR_FORMAT, "nested too deeply");
    free(deep);
    expect_err("{% set ns = namespace(x=[]) %}{% for i in range(1000) %}{% set ns.x = [ns.x] %}{% endfor %}"
               "{{ ns.x < ns.x }}", PAGODA_ERR_INVALID, "nested too deeply");
    expect_err("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
               PAGODA_ERR_INVALID, "too many loop iterations");
    expect_err("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", PAGODA_ERR_INVALID, "nested too deeply");
    expect_err("{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(30) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
               PAGODA_ERR_INVALID, "too large");
    expect_err("{{ 'x' * 100000000000 }}", PAGODA_ERR_INVALID, "too large");
    expect_err("{{ range(1000000000) }}", PAGODA_ERR_INVALID, "range too large");
    /* bad inputs */
    char *out = NULL;
    chat_template_input in = {.messages_json = "[{", .add_generation_prompt = false};
    CHECK(chat_template_render("x", &in, &out) == PAGODA_ERR_INVALID && !out, "bad messages JSON accepted");
    CHECK(chat_template_render(NULL, &in, &out) == PAGODA_ERR_INVALID, "NULL template accepted");
}

int main(void) {
    golden_cases();
    semantics();
    errors();
    TEST_DONE();
}
