/* Checks JSON Schemas against their instances at the byte level (test helper for
 * tests/python/test_json_schema_maskbench.py): each input line is
 *   {"id": "...", "schema": "<schema text>", "tests": [[valid, "<instance text>"], ...]}
 * (instances already serialized as the grammar expects). For each schema: js_compile, gr_compile
 * for a 256-byte vocabulary, then every instance fed with gr_matcher_accept_bytes and ended with
 * gr_matcher_can_end. Prints one line per schema:
 *   id <TAB> status <TAB> compile_us <TAB> detail
 * status: pass, compile_error, validation_error (a valid instance rejected), invalidation_error
 * (an invalid one accepted), matcher_error (work refused). Usage: js_corpus_check FILE [--flexible]
 * [--strict] */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "grammar/json_schema.h"
#include "grammar/matcher.h"

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE [--flexible] [--strict]\n", argv[0]);
        return 2;
    }
    js_options o;
    js_options_default(&o);
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--flexible")) o.whitespace_flexible = 1;
        if (!strcmp(argv[i], "--strict")) o.strict = 1;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) {
        perror(argv[1]);
        return 2;
    }
    gr_vocab *v = gr_vocab_bytes();
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        json_error_t je;
        json_t *o_line = json_loadb(line, (size_t)n, 0, &je);
        if (!o_line) {
            printf("?\tbad_line\t0\t%s\n", je.text);
            continue;
        }
        const char *id = json_string_value(json_object_get(o_line, "id"));
        json_t *sch = json_object_get(o_line, "schema");
        char err[512] = "";
        double t0 = now_us();
        gr_grammar *g = js_compile(json_string_value(sch), json_string_length(sch), &o, err, sizeof err);
        gr_compiled *cg = g ? gr_compile(g, v, err, sizeof err) : NULL;
        double t1 = now_us();
        gr_free(g);
        if (!cg) {
            for (char *p = err; *p; p++)
                if (*p == '\t' || *p == '\n') *p = ' ';
            printf("%s\tcompile_error\t%.1f\t%s\n", id, t1 - t0, err);
            fflush(stdout);
            json_decref(o_line);
            continue;
        }
        const char *status = "pass";
        char detail[256] = "";
        json_t *tests = json_object_get(o_line, "tests");
        for (size_t i = 0; i < json_array_size(tests); i++) {
            json_t *t = json_array_get(tests, i);
            int valid = json_is_true(json_array_get(t, 0));
            json_t *inst = json_array_get(t, 1);
            const char *s = json_string_value(inst);
            size_t len = json_string_length(inst);
            gr_matcher *m = gr_matcher_new(cg);
            int ok = m && gr_matcher_accept_bytes(m, (const uint8_t *)s, len) == 0 && gr_matcher_can_end(m);
            const char *merr = m ? gr_matcher_error(m) : "no matcher";
            if (merr[0]) {
                status = "matcher_error";
                snprintf(detail, sizeof detail, "test %zu: %s", i, merr);
            } else if (valid && !ok) {
                status = "validation_error";
                snprintf(detail, sizeof detail, "test %zu: %.200s", i, s);
            } else if (!valid && ok) {
                status = "invalidation_error";
                snprintf(detail, sizeof detail, "test %zu: %.200s", i, s);
            }
            gr_matcher_free(m);
            if (strcmp(status, "pass")) break;
        }
        for (char *p = detail; *p; p++)
            if (*p == '\t' || *p == '\n') *p = ' ';
        printf("%s\t%s\t%.1f\t%s\n", id, status, t1 - t0, detail);
        fflush(stdout);
        gr_compiled_free(cg);
        json_decref(o_line);
    }
    free(line);
    fclose(f);
    gr_vocab_free(v);
    return 0;
}
