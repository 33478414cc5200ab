/* JSON Schema front end (json_schema.h): per keyword, schemas compiled and run byte by byte
 * (256 single-byte tokens) on instances that must be accepted and instances that must be
 * refused; error messages naming the keyword and its JSON pointer; $ref recursion; hostile
 * schemas (1 MB, deep $ref chains and cycles) answered within bounds. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "grammar/json_schema.h"
#include "grammar/matcher.h"
#include "test_util.h"

static gr_vocab *g_vocab;

static gr_compiled *compile_opts(const char *schema, const js_options *o, char *err, size_t cap) {
    gr_grammar *g = js_compile(schema, strlen(schema), o, err, cap);
    if (!g) return NULL;
    gr_compiled *c = gr_compile(g, g_vocab, err, cap);
    gr_free(g);
    return c;
}

static int accepts(gr_compiled *c, const char *text) {
    gr_matcher *m = gr_matcher_new(c);
    int ok = m && gr_matcher_accept_bytes(m, (const uint8_t *)text, strlen(text)) == 0 && gr_matcher_can_end(m);
    gr_matcher_free(m);
    return ok;
}

/* schema; then instances: "+text" must be accepted, "-text" refused; NULL ends */
static void cases_opts(const js_options *o, const char *schema, ...) {
    char err[512];
    gr_compiled *c = compile_opts(schema, o, err, sizeof err);
    CHECK(c, "schema %s: %s", schema, err);
    if (!c) return;
    va_list ap;
    va_start(ap, schema);
    const char *t;
    while ((t = va_arg(ap, const char *))) {
        int want = t[0] == '+';
        CHECK(accepts(c, t + 1) == want, "schema %s: instance %s should be %s", schema, t + 1,
              want ? "accepted" : "refused");
    }
    va_end(ap);
    gr_compiled_free(c);
}

#define CASES(...) cases_opts(NULL, __VA_ARGS__, NULL)

static void refused(const char *schema, const char *want_in_error) {
    char err[512] = "";
    gr_compiled *c = compile_opts(schema, NULL, err, sizeof err);
    CHECK(!c, "schema %s should not compile", schema);
    CHECK(strstr(err, want_in_error), "schema %s: error '%s' lacks '%s'", schema, err, want_in_error);
    gr_compiled_free(c);
}

static void test_types(void) {
    CASES("{}", "+1", "+\"a\"", "+null", "+{\"a\":[1,{}]}", "+[]", "-", "-nul", "-{\"a\"}");
    CASES("true", "+[1,2]", "-[1,");
    CASES("{\"type\":\"string\"}", "+\"\"", "+\"a\\\\b\\u00e9\\n\"", "+\"\xc3\xa9\"", "-1", "-\"a", "-\"\x01\"");
    CASES("{\"type\":\"integer\"}", "+0", "+-12", "-1.0", "-1.5", "-01", "-\"1\"", "-1e3");
    CASES("{\"$schema\":\"http://json-schema.org/draft-04/schema#\",\"type\":\"integer\"}", "+3", "-1.0");
    CASES("{\"type\":\"number\"}", "+0", "+-1.5e-3", "+2E+8", "-.5", "-1.", "---1");
    CASES("{\"type\":[\"boolean\",\"null\"]}", "+true", "+false", "+null", "-0", "-\"true\"");
    CASES("{\"type\":\"string\",\"nullable\":true}", "+null", "+\"x\"", "-1");
    refused("false", "unproductive"); /* no instance at all: an error, not a grammar */
    CASES("{\"anyOf\":[false,{\"type\":\"null\"}]}", "+null", "-{}");
}

static void test_objects(void) {
    const char *s = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"string\"}},"
                    "\"required\":[\"a\"],\"additionalProperties\":false}";
    CASES(s, "+{\"a\":1}", "+{\"a\":1,\"b\":\"x\"}", "+{\"b\":\"x\",\"a\":1}", "-{}", "-{\"b\":\"x\"}",
          "-{\"a\":1,\"c\":2}", "-{\"a\":\"1\"}", "-{\"a\":1,}");
    /* additional properties: any name but the listed ones, in any spelling of theirs */
    CASES("{\"properties\":{\"a\":{\"type\":\"integer\"}},\"additionalProperties\":{\"type\":\"string\"}}",
          "+{\"a\":1,\"b\":\"x\"}", "+{\"ab\":\"x\"}", "+{\"\":\"x\"}", "-{\"a\":\"x\"}", "-{\"b\":1}",
          "-{\"\\u0061\":\"x\"}", "+{\"\\n\":\"x\"}");
    CASES("{\"properties\":{\"a\":{\"type\":\"integer\"}}}", "+{\"zz\":[null]}", "-{\"a\":null}", "+\"not an object\"");
    /* many required properties in any order (subset tracking) */
    CASES("{\"type\":\"object\",\"properties\":{\"a\":{},\"b\":{},\"c\":{}},\"required\":[\"a\",\"b\",\"c\"]}",
          "+{\"c\":1,\"a\":2,\"b\":3}", "+{\"b\":1,\"x\":0,\"c\":2,\"a\":3}", "-{\"c\":1,\"a\":2}");
    /* patternProperties beside additionalProperties */
    CASES("{\"patternProperties\":{\"^[a-z]+$\":{\"type\":\"integer\"}},\"additionalProperties\":{\"type\":\"string\"}}",
          "+{\"ab\":1}", "+{\"AB\":\"x\"}", "+{\"\":\"x\"}", "-{\"ab\":\"x\"}", "-{\"A\":1}");
    CASES("{\"patternProperties\":{\"^x-\":{\"type\":\"integer\"}},\"additionalProperties\":false}",
          "+{\"x-a\":1}", "-{\"y\":1}", "-{\"x-a\":\"s\"}");
    /* strict mode: no additional properties unless allowed */
    js_options o;
    js_options_default(&o);
    o.strict = 1;
    cases_opts(&o, "{\"properties\":{\"a\":{}}}", "+{\"a\":1}", "-{\"b\":1}", NULL);
    /* ... required names it does not list stay possible (any value); an object schema without
     * properties stays any object */
    cases_opts(&o, "{\"properties\":{\"a\":{}},\"required\":[\"b\"]}", "+{\"b\":[1]}", "+{\"a\":1,\"b\":2}", "-{\"a\":1}",
               "-{\"b\":1,\"c\":1}", NULL);
    cases_opts(&o, "{\"type\":\"object\"}", "+{}", "+{\"x\":{\"y\":1}}", NULL);

    /* counts expressible through required / closed objects */
    CASES("{\"properties\":{\"a\":{}},\"required\":[\"a\"],\"minProperties\":1}", "+{\"a\":1}", "-{}");
    refused("{\"minProperties\":2}", "/: keyword 'minProperties'");
}

/* Generation traps in objects: a named property at most once (a sampler could repeat an optional
 * key forever); beyond the tracked names, repeats bounded by the number of such names. */
static void test_object_key_traps(void) {
    CASES("{\"properties\":{\"a\":{},\"b\":{}}}", "+{\"a\":1,\"b\":2}", "+{\"b\":2,\"a\":1}", "+{\"c\":1,\"a\":2,\"d\":3}",
          "+{\"c\":1,\"c\":2}", "-{\"a\":1,\"a\":2}", "-{\"a\":1,\"b\":2,\"a\":3}", "-{\"c\":1,\"a\":1,\"d\":2,\"a\":1}");
    CASES("{\"properties\":{\"a\":{},\"b\":{}},\"required\":[\"a\"],\"additionalProperties\":false}", "+{\"a\":1}",
          "+{\"b\":1,\"a\":2}", "-{\"a\":1,\"a\":1}", "-{\"b\":1,\"a\":1,\"b\":2}", "-{\"b\":1,\"b\":2,\"a\":1}");
    /* ten optional names: the first eight tracked, p8 and p9 in runs of at most two */
    char s[512];
    int k = snprintf(s, sizeof s, "{\"additionalProperties\":false,\"properties\":{");
    for (int i = 0; i < 10; i++) k += snprintf(s + k, sizeof s - (size_t)k, "%s\"p%d\":{}", i ? "," : "", i);
    snprintf(s + k, sizeof s - (size_t)k, "}}");
    CASES(s, "+{}", "+{\"p9\":1,\"p0\":1,\"p8\":1,\"p7\":1}", "+{\"p8\":1,\"p9\":1,\"p0\":1,\"p8\":1}",
          "-{\"p0\":1,\"p1\":1,\"p0\":1}", "-{\"p7\":1,\"p7\":1}", "-{\"p8\":1,\"p9\":1,\"p8\":1}", "-{\"p8\":1,\"p8\":1,\"p8\":1}");
    /* ten required names (in schema order), an optional one in runs of at most one */
    k = snprintf(s, sizeof s, "{\"additionalProperties\":false,\"required\":[\"r0\",\"r1\",\"r2\",\"r3\",\"r4\","
                              "\"r5\",\"r6\",\"r7\",\"r8\",\"r9\"],\"properties\":{\"o\":{}");
    for (int i = 0; i < 10; i++) k += snprintf(s + k, sizeof s - (size_t)k, ",\"r%d\":{}", i);
    snprintf(s + k, sizeof s - (size_t)k, "}}");
    CASES(s, "+{\"r0\":0,\"r1\":1,\"r2\":2,\"r3\":3,\"r4\":4,\"r5\":5,\"r6\":6,\"r7\":7,\"r8\":8,\"r9\":9}",
          "+{\"o\":0,\"r0\":0,\"r1\":1,\"r2\":2,\"r3\":3,\"r4\":4,\"r5\":5,\"r6\":6,\"r7\":7,\"r8\":8,\"r9\":9}",
          "-{\"o\":0,\"o\":0,\"r0\":0,\"r1\":1,\"r2\":2,\"r3\":3,\"r4\":4,\"r5\":5,\"r6\":6,\"r7\":7,\"r8\":8,\"r9\":9}",
          "-{\"r0\":0,\"r0\":0,\"r1\":1,\"r2\":2,\"r3\":3,\"r4\":4,\"r5\":5,\"r6\":6,\"r7\":7,\"r8\":8,\"r9\":9}");
}

static void test_arrays(void) {
    CASES("{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":1,\"maxItems\":3}", "+[1]", "+[1,2,3]",
          "-[]", "-[1,2,3,4]", "-[\"a\"]", "-[1,]");
    CASES("{\"prefixItems\":[{\"type\":\"string\"},{\"type\":\"integer\"}],\"items\":false}", "+[]", "+[\"a\"]",
          "+[\"a\",1]", "-[\"a\",1,2]", "-[1]");
    CASES("{\"$schema\":\"http://json-schema.org/draft-04/schema#\",\"items\":[{\"type\":\"string\"}],"
          "\"additionalItems\":{\"type\":\"integer\"}}",
          "+[\"a\",1,2]", "-[\"a\",\"b\"]");
    CASES("{\"type\":\"array\",\"uniqueItems\":true,\"maxItems\":1}", "+[]", "+[1]", "-[1,1]");
    refused("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"array\",\"uniqueItems\":true}}}",
            "/properties/a: keyword 'uniqueItems' is not supported");
}

static void test_strings(void) {
    CASES("{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}", "+\"ab\"", "+\"\xc3\xa9\xc3\xa9\"",
          "+\"a\\u00e9\"", "+\"\\ud83d\\ude00a\"", "-\"a\"", "-\"abcd\"");
    CASES("{\"type\":\"string\",\"pattern\":\"^[a-z]+\\\\d$\"}", "+\"ab1\"", "-\"ab\"", "-\"Ab1\"", "-\"ab1x\"");
    CASES("{\"type\":\"string\",\"pattern\":\"b+\"}", "+\"abbc\"", "+\"b\"", "-\"ac\"");
    CASES("{\"type\":\"string\",\"pattern\":\"\\\"\"}", "+\"a\\\"b\"", "-\"ab\"");
    CASES("{\"type\":\"string\",\"pattern\":\"^[a-z]*$\",\"maxLength\":2}", "+\"ab\"", "-\"abc\"");
    CASES("{\"format\":\"date\"}", "+\"2024-02-29\"", "+\"2023-12-31\"", "-\"2023-02-29\"", "-\"2023-13-01\"",
          "-\"0000-01-01\"", "+1");
    CASES("{\"format\":\"date-time\"}", "+\"2024-01-02T03:04:05Z\"", "+\"2024-01-02t03:04:05.123+01:00\"",
          "-\"2024-01-02 03:04:05Z\"", "-\"2024-01-02T24:00:00Z\"");
    CASES("{\"format\":\"time\"}", "+\"23:59:59Z\"", "-\"23:59\"");
    CASES("{\"format\":\"uuid\"}", "+\"123e4567-e89b-12d3-a456-426614174000\"", "-\"123e4567e89b12d3a456426614174000\"");
    CASES("{\"format\":\"ipv4\"}", "+\"192.168.0.1\"", "-\"256.1.1.1\"", "-\"01.1.1.1\"");
    CASES("{\"format\":\"email\"}", "+\"a@b.c\"", "-\"ab.c\"");
    CASES("{\"format\":\"uri\"}", "+\"https://example.com/a?b=c#d\"", "+\"urn:isbn:123\"", "-\"not a uri\"",
          "-\"/relative\"");
    CASES("{\"format\":\"made-up-format\"}", "+\"anything\"");
    refused("{\"format\":\"hostname\"}", "format 'hostname' is not supported");
    refused("{\"pattern\":\"(a)\\\\1\"}", "/: pattern");
    refused("{\"pattern\":\"a(?=b)\"}", "lookaround");
}

static void test_numbers(void) {
    CASES("{\"type\":\"integer\",\"minimum\":-5,\"maximum\":120}", "+-5", "+0", "+-0", "+120", "+99", "-121",
          "--6", "-1000");
    CASES("{\"type\":\"integer\",\"exclusiveMinimum\":0,\"exclusiveMaximum\":10}", "+1", "+9", "-0", "-10");
    CASES("{\"$schema\":\"http://json-schema.org/draft-04/schema#\",\"type\":\"integer\",\"minimum\":0,"
          "\"exclusiveMinimum\":true}",
          "+1", "-0");
    CASES("{\"type\":\"number\",\"minimum\":0,\"maximum\":1}", "+0", "+0.5", "+1", "+1.0", "-1.01", "--0.5",
          "+-0.0");
    CASES("{\"type\":\"number\",\"exclusiveMaximum\":0}", "+-0.001", "+-3", "-0", "-0.0", "--0");
    CASES("{\"type\":\"integer\",\"minimum\":1.5}", "+2", "-1");
    CASES("{\"type\":\"number\",\"multipleOf\":1}", "+3", "+3.0", "-3.5");
    CASES("{\"type\":\"integer\",\"minimum\":999999999999999999}", "+999999999999999999", "+99999999999999999999",
          "-999999999999999998");
    CASES("{\"type\":\"number\",\"maximum\":1e20}", "+100000000000000000000", "+99.5", "-100000000000000000001");
    refused("{\"type\":\"number\",\"minimum\":0.5}", "non-integer bounds");
    refused("{\"multipleOf\":3}", "keyword 'multipleOf' is not supported");
}

/* Generation traps: where a number may run on forever ("1.0000...", "1111...", "1e0000...") a
 * sampler can spend every token on it; numbers are bounded to what serializers write. */
static void test_number_traps(void) {
    /* integers: digits only by default (clients get an int); with integer_fraction "1.0" is an
     * integer (draft 6+) but one zero only */
    CASES("{\"type\":\"integer\"}", "+1", "-1.0", "+-7", "-7.0", "-1.00");
    CASES("{\"type\":\"integer\",\"minimum\":0,\"maximum\":100}", "+100", "-100.0", "-5.0");
    js_options fo;
    js_options_default(&fo);
    fo.integer_fraction = 1;
    cases_opts(&fo, "{\"type\":\"integer\"}", "+1", "+1.0", "+-7.0", "-1.00", "-1.0000000000", NULL);
    cases_opts(&fo, "{\"type\":\"integer\",\"minimum\":0,\"maximum\":100}", "+100.0", "+5.0", "-5.00", "-100.00", NULL);
    cases_opts(&fo, "{\"type\":\"integer\",\"minimum\":3}", "+3.0", "+4.0", "-4.00", NULL);
    cases_opts(&fo, "{\"$schema\":\"http://json-schema.org/draft-04/schema#\",\"type\":\"integer\"}", "+3", "-3.0", NULL);
    CASES("{\"enum\":[1,2.0,2.5]}", "+1.0", "+2", "+2.0", "+2.5", "-1.00", "-2.000", "-2.50");
    /* leading digits: up to 20 (every 64-bit integer), more only where a bound needs them */
    CASES("{\"type\":\"integer\"}", "+18446744073709551615", "+-9223372036854775808", "-111111111111111111111");
    CASES("{\"type\":\"number\"}", "+12345678901234567890.5", "-123456789012345678901");
    CASES("{\"type\":\"integer\",\"minimum\":0}", "+18446744073709551615", "-111111111111111111111");
    CASES("{\"type\":\"integer\",\"minimum\":1e25}", "+10000000000000000000000000", "+100000000000000000000000000",
          "-1000000000000000000000000000");
    CASES("{\"type\":\"integer\",\"maximum\":-1}", "+-18446744073709551615", "--111111111111111111111");
    /* fraction digits: up to 20 (a double's shortest repr needs at most that), exponent: 3 */
    CASES("{\"type\":\"number\"}", "+0.00012345678901234568", "+1.7976931348623157e+308", "+5e-324",
          "-0.123456789012345678901", "-1e0001");
    CASES("{\"type\":\"number\",\"minimum\":0}", "+0.00012345678901234568", "-0.123456789012345678901");
    CASES("{\"type\":\"number\",\"exclusiveMinimum\":0,\"maximum\":1}", "+0.5", "+0.00000000000000000001",
          "+1.0", "-0.000000000000000000001", "-1.00");
    /* the any-value schema too */
    CASES("{}", "+[1.5,2]", "-[1.000000000000000000000]", "-{\"a\":111111111111111111111}");
}

static void test_enum_const(void) {
    CASES("{\"enum\":[\"a\",1,null,[1,\"x\"],{\"k\":true}]}", "+\"a\"", "+1", "+1.0", "+null", "+[1,\"x\"]",
          "+{\"k\":true}", "-\"b\"", "-2", "-[1]", "-true");
    CASES("{\"const\":\"\\u00e9\\n\"}", "+\"\xc3\xa9\\n\"", "-\"x\"");
    CASES("{\"type\":\"string\",\"enum\":[\"a\",\"bb\",3],\"maxLength\":1}", "+\"a\"", "-\"bb\"", "-3");
    CASES("{\"type\":\"string\",\"not\":{\"enum\":[\"x\"]}}", "+\"y\"", "+\"xx\"", "+\"\"", "-\"x\"");
}

static void test_combinators(void) {
    CASES("{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"integer\",\"minimum\":5}]}", "+\"a\"", "+7", "-3", "-null");
    CASES("{\"oneOf\":[{\"type\":\"string\"},{\"type\":\"integer\"}]}", "+\"a\"", "+7", "-null");
    CASES("{\"oneOf\":[{\"required\":[\"a\"]},{\"required\":[\"b\"]}]}", "+{\"a\":1}", "+{\"b\":1}",
          "-{\"a\":1,\"b\":2}", "-{}", "-1");
    CASES("{\"oneOf\":[{\"properties\":{\"k\":{\"const\":\"x\"},\"v\":{\"type\":\"string\"}},\"required\":[\"k\"]},"
          "{\"properties\":{\"k\":{\"const\":\"y\"},\"v\":{\"type\":\"integer\"}},\"required\":[\"k\"]}]}",
          "+{\"k\":\"x\",\"v\":\"s\"}", "+{\"v\":1,\"k\":\"y\"}", "-{\"k\":\"x\",\"v\":1}", "-\"str\"");
    refused("{\"oneOf\":[{\"type\":\"string\"},{\"minLength\":2}]}", "/: oneOf: alternatives 0 and 1 may overlap");
    CASES("{\"allOf\":[{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},\"required\":[\"a\"]},"
          "{\"properties\":{\"a\":{\"minimum\":3},\"b\":{\"type\":\"string\"}},\"required\":[\"b\"]}]}",
          "+{\"a\":3,\"b\":\"\"}", "-{\"a\":2,\"b\":\"\"}", "-{\"a\":3}");
    CASES("{\"allOf\":[{\"properties\":{\"a\":{}},\"additionalProperties\":false},{\"properties\":{\"b\":{}}}]}",
          "+{\"a\":1}", "-{\"b\":1}");
    CASES("{\"not\":{\"type\":\"string\"}}", "+1", "-\"a\"");
    CASES("{\"type\":\"object\",\"not\":{\"required\":[\"x\"]}}", "+{\"y\":1}", "-{\"x\":1}");
    refused("{\"not\":{\"pattern\":\"a\"}}", "keyword 'not' is not supported");
    refused("{\"properties\":{\"a\":{\"if\":{\"type\":\"string\"},\"then\":{\"minLength\":1}}}}",
            "/properties/a: keyword 'if' is not supported");
    refused("{\"dependencies\":{\"a\":[\"b\"]}}", "keyword 'dependencies' is not supported");
}

static void test_refs(void) {
    /* recursion: a tree */
    const char *tree = "{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},"
                       "\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/node\"}}},\"required\":[\"v\"],"
                       "\"additionalProperties\":false}},\"$ref\":\"#/$defs/node\"}";
    CASES(tree, "+{\"v\":1}", "+{\"v\":1,\"kids\":[{\"v\":2,\"kids\":[{\"v\":3}]}]}", "-{\"v\":1,\"kids\":[{}]}",
          "-{\"kids\":[]}");
    CASES("{\"definitions\":{\"a/b\":{\"type\":\"integer\"},\"c~d\":{\"type\":\"string\"}},"
          "\"properties\":{\"x\":{\"$ref\":\"#/definitions/a~1b\"},\"y\":{\"$ref\":\"#/definitions/c~0d\"}}}",
          "+{\"x\":1,\"y\":\"s\"}", "-{\"x\":\"s\"}", "-{\"y\":1}");
    /* draft 7: siblings of $ref are ignored; 2020-12: they apply */
    CASES("{\"$schema\":\"http://json-schema.org/draft-07/schema#\",\"definitions\":{\"i\":{\"type\":\"integer\"}},"
          "\"properties\":{\"x\":{\"$ref\":\"#/definitions/i\",\"minimum\":5}}}",
          "+{\"x\":1}", "-{\"x\":\"s\"}");
    CASES("{\"$defs\":{\"i\":{\"type\":\"integer\"}},\"properties\":{\"x\":{\"$ref\":\"#/$defs/i\",\"minimum\":5}}}",
          "-{\"x\":1}", "+{\"x\":5}");
    CASES("{\"type\":\"array\",\"items\":{\"$ref\":\"#\"}}", "+[]", "+[[],[[]]]", "-[1]");
    refused("{\"$ref\":\"#/$defs/missing\"}", "does not resolve");
    refused("{\"$ref\":\"other.json#/x\"}", "not a reference inside the schema");
    /* a pure $ref cycle has no instances: an error (unproductive), never a hang */
    char err[512];
    gr_compiled *c = compile_opts("{\"$defs\":{\"a\":{\"$ref\":\"#/$defs/b\"},\"b\":{\"$ref\":\"#/$defs/a\"}},"
                                  "\"$ref\":\"#/$defs/a\"}",
                                  NULL, err, sizeof err);
    if (c) CHECK(!accepts(c, "1") && !accepts(c, "{}"), "a $ref cycle accepts nothing");
    gr_compiled_free(c);
}

static void test_whitespace(void) {
    js_options o;
    js_options_default(&o);
    o.whitespace_flexible = 1;
    cases_opts(&o, "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"array\"}},\"required\":[\"a\"]}",
               "+{\"a\":[1,2]}", "+{ \"a\" : [ 1 , 2 ] }", "+\n{\t\"a\":[]\r\n}", "-{\"a \":[]}", "-{}", NULL);
    CASES("{\"type\":\"object\"}", "+{}", "-{ }");
    /* a generation trap: whitespace without end; now what a pretty printer writes */
    char deep[300], wide[300];
    snprintf(deep, sizeof deep, "+[\n%*s1\r\n]", 128, "");
    snprintf(wide, sizeof wide, "-[1,%*s2]", 129, "");
    cases_opts(&o, "{\"type\":\"array\"}", "+[\n  1,\n  2\n]\n", "+[\t1 ,\r2]", deep, wide, "-[1,\n\n2]",
               "-[\r\n\r\n1]", "-[1 \n \n2]", NULL);
}

static void test_errors_and_bounds(void) {
    refused("{\"type\":", "invalid JSON");
    refused("{\"type\":\"strin\"}", "bad 'type'");
    refused("{\"properties\":{\"a\":{\"minLength\":-1}}}", "/properties/a: 'minLength'");
    /* js_add embeds a schema and names nothing as start */
    gr_grammar *g = gr_new();
    char err[256];
    int s = js_add(g, "{\"type\":\"integer\"}", 18, NULL, err, sizeof err);
    CHECK(s >= 0 && !gr_is_terminal(g, s), "js_add returns a nonterminal (%s)", err);
    gr_free(g);

    /* a 1 MB schema: an answer (grammar or clear error) in bounded time */
    size_t cap = 1 << 20;
    char *big = malloc(cap + 64);
    size_t n = (size_t)sprintf(big, "{\"type\":\"object\",\"properties\":{");
    for (int i = 0; n < cap - 200; i++) n += (size_t)sprintf(big + n, "%s\"p%d\":{\"type\":\"integer\",\"maximum\":%d}", i ? "," : "", i, i);
    n += (size_t)sprintf(big + n, "}}");
    clock_t t0 = clock();
    gr_grammar *gb = js_compile(big, n, NULL, err, sizeof err);
    double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
    CHECK(gb || err[0], "1 MB schema: grammar or error");
    CHECK(secs < 60, "1 MB schema took %.1f s", secs);
    gr_free(gb);

    /* deeply nested $ref chain and a deep nesting of objects */
    n = (size_t)sprintf(big, "{\"$defs\":{");
    for (int i = 0; i < 5000; i++) n += (size_t)sprintf(big + n, "%s\"d%d\":{\"$ref\":\"#/$defs/d%d\"}", i ? "," : "", i, i + 1);
    n += (size_t)sprintf(big + n, ",\"d5000\":{\"type\":\"integer\"}},\"$ref\":\"#/$defs/d0\"}");
    gb = js_compile(big, n, NULL, err, sizeof err);
    CHECK(!gb && strstr(err, "too deep"), "a 5000-long $ref chain: %s", gb ? "compiled" : err);
    gr_free(gb);
    n = 0;
    for (int i = 0; i < 100000; i++) n += (size_t)sprintf(big + n, "{\"items\":");
    n += (size_t)sprintf(big + n, "{}");
    for (int i = 0; i < 100000; i++) big[n++] = '}';
    gb = js_compile(big, n, NULL, err, sizeof err);
    CHECK(!gb && err[0], "100000 nested schemas: an error");
    gr_free(gb);
    /* allOf that merges a recursive $ref into itself */
    refused("{\"$defs\":{\"a\":{\"allOf\":[{\"$ref\":\"#/$defs/a\"},{\"type\":\"object\"}]}},\"$ref\":\"#/$defs/a\"}",
            "too deep");
    free(big);
}

int main(void) {
    g_vocab = gr_vocab_bytes();
    test_types();
    test_objects();
    test_object_key_traps();
    test_arrays();
    test_strings();
    test_numbers();
    test_number_traps();
    test_enum_const();
    test_combinators();
    test_refs();
    test_whitespace();
    test_errors_and_bounds();
    gr_vocab_free(g_vocab);
    TEST_DONE();
}
