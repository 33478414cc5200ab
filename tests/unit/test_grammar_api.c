/* The public constrained-decoding API (pagoda.h) on real tokenizers: SmolLM2's byte-level BPE
 * (the built-in model), llama's SentencePiece and Qwen3's 151k BPE (../shared fixtures). For each:
 * a valid JSON instance, tokenized as the model would, walks through the masks token by token and
 * may end; an invalid one is refused; end tokens are allowed exactly where the grammar may end;
 * rollback replays;
 * forced text (jump-forward); the wrapper spec (prefix, suffix, separator, repeat bounds) and bad
 * bounds. Each tokenizer is skipped when its file is absent. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pagoda.h"
#include "test_util.h"

static int bit(const uint32_t *mask, int32_t t) { return (mask[t >> 5] >> (t & 31)) & 1; }

/* Walks text's tokens; returns the index of the first refused token (n if all pass), checking on
 * the way that no special token is allowed before the end. */
static int walk(pagoda_model *m, pagoda_grammar_matcher *gm, const char *text, int *can_end, const char *who) {
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK(pagoda_tokenize(m, text, strlen(text), 0, 0, &ids, &n) == PAGODA_OK, "%s: tokenize", who);
    pagoda_model_info info;
    pagoda_model_get_info(m, &info);
    uint32_t *mask = calloc(((size_t)info.n_vocab + 31) / 32, sizeof *mask);
    size_t i = 0;
    for (; i < n; i++) {
        int32_t cnt = pagoda_grammar_matcher_mask(gm, mask);
        CHECK(cnt > 0, "%s: empty mask at token %zu", who, i);
        int end_here = pagoda_grammar_matcher_can_end(gm), eog = 0;
        for (int32_t t = 0; t < info.n_vocab; t++) eog |= bit(mask, t) && pagoda_token_is_eog(m, t);
        CHECK(eog == end_here, "%s: end tokens %s at %zu where the grammar %s end", who, eog ? "allowed" : "refused", i,
              end_here ? "may" : "may not");
        if (!bit(mask, ids[i])) break;
        CHECK(pagoda_grammar_matcher_accept(gm, ids[i]) == PAGODA_OK, "%s: accept of a masked-in token failed", who);
    }
    if (i == n) {
        *can_end = pagoda_grammar_matcher_can_end(gm);
        pagoda_grammar_matcher_mask(gm, mask);
        int eos_ok = 0;
        for (int32_t t = 0; t < info.n_vocab; t++) eos_ok |= bit(mask, t) && pagoda_token_is_eog(m, t);
        CHECK(eos_ok == *can_end, "%s: the end token's bit (%d) disagrees with can_end (%d)", who, eos_ok, *can_end);
    }
    free(mask);
    free(ids);
    return (int)i == (int)n ? (int)n : (int)i;
}

static void one_tokenizer(const char *path, const char *who, int dummy) {
    pagoda_model *m = NULL;
    if (pagoda_model_load_vocab(path, &m) != PAGODA_OK) {
        printf("skip %s: %s not loadable (%s)\n", who, path, pagoda_last_error());
        return;
    }
    const char *schema = "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":20},"
                         "\"n\":{\"type\":\"integer\",\"minimum\":0}},\"required\":[\"name\",\"n\"]}";
    /* SentencePiece tokenizers put a space before the text (the dummy prefix) when it starts a
     * sequence: those instances are walked with JSON whitespace allowed, and the wrappers (which
     * would need the space in their literal) are left out */
    int32_t *ids = NULL;
    size_t n = 0;
    pagoda_grammar_spec spec = {.kind = PAGODA_GRAMMAR_JSON_SCHEMA, .text = schema, .strict = 1, .whitespace_flexible = dummy};
    pagoda_grammar *g = NULL;
    CHECK(pagoda_grammar_compile(m, &spec, &g) == PAGODA_OK, "%s: compile: %s", who, pagoda_last_error());
    if (!g) goto out;
    pagoda_grammar_matcher *gm = NULL;
    CHECK(pagoda_grammar_matcher_create(g, &gm) == PAGODA_OK, "%s: matcher", who);
    /* jump-forward: a strict object whose keys both start with n: {"n whatever comes next */
    char forced[64];
    size_t nf = pagoda_grammar_matcher_forced(gm, forced, sizeof forced);
    CHECK(dummy ? nf == 0 : nf == 3 && !memcmp(forced, "{\"n", 3), "%s: forced '%.*s'", who, (int)nf, forced);
    int can_end = 0;
    const char *ok = "{\"n\":42,\"name\":\"Ada Lovelace\"}";
    int n_ok = walk(m, gm, ok, &can_end, who);
    pagoda_tokenize(m, ok, strlen(ok), 0, 0, &ids, &n);
    CHECK(n_ok == (int)n && can_end, "%s: valid instance refused at token %d of %zu (can_end %d)", who, n_ok, n, can_end);
    CHECK(dummy || pagoda_grammar_matcher_is_done(gm), "%s: a closed object is done", who); /* (or white space) */
    /* rollback three tokens and replay them */
    CHECK(pagoda_grammar_matcher_rollback(gm, 3) == PAGODA_OK, "%s: rollback", who);
    CHECK(!pagoda_grammar_matcher_can_end(gm), "%s: cannot end after rollback", who);
    for (size_t i = n - 3; i < n; i++)
        CHECK(pagoda_grammar_matcher_accept(gm, ids[i]) == PAGODA_OK, "%s: replay token %zu", who, i);
    CHECK(pagoda_grammar_matcher_can_end(gm), "%s: can end after replay", who);
    CHECK(pagoda_grammar_matcher_rollback(gm, (int32_t)n + 5) != PAGODA_OK, "%s: rollback past the start", who);
    free(ids);
    pagoda_grammar_matcher_destroy(gm);
    /* invalid instances: an undeclared key (strict), a negative n, a long name */
    const char *bad[] = {"{\"n\":1,\"nom\":\"x\"}", "{\"n\":-1,\"name\":\"x\"}",
                         "{\"name\":\"abcdefghijklmnopqrstuvwxyz\",\"n\":1}", "{\"n\":1}"};
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        pagoda_grammar_matcher_create(g, &gm);
        int end = 0, got = walk(m, gm, bad[k], &end, who);
        pagoda_tokenize(m, bad[k], strlen(bad[k]), 0, 0, &ids, &n);
        CHECK(got < (int)n || !end, "%s: invalid %s accepted", who, bad[k]);
        free(ids);
        pagoda_grammar_matcher_destroy(gm);
    }
    pagoda_grammar_unref(g);
    /* the wrapper: <a>DIGITS</a>, 1 to 2 times, newline between */
    pagoda_grammar_spec w = {.kind = PAGODA_GRAMMAR_REGEX, .text = "[0-9]+", .prefix = "<a>", .suffix = "</a>",
                             .separator = "\n", .min_repeat = 1, .max_repeat = 2};
    CHECK(pagoda_grammar_compile(m, &w, &g) == PAGODA_OK, "%s: wrapper: %s", who, pagoda_last_error());
    struct {
        const char *text;
        int ok;
    } wc[] = {{"<a>12</a>", 1}, {"<a>12</a>\n<a>345</a>", 1}, {"<a>1</a>\n<a>2</a>\n<a>3</a>", 0}, {"<a></a>", 0},
              {"<a>1</a><a>2</a>", 0}};
    for (size_t k = 0; g && !dummy && k < sizeof wc / sizeof *wc; k++) {
        pagoda_grammar_matcher_create(g, &gm);
        int end = 0, got = walk(m, gm, wc[k].text, &end, who);
        pagoda_tokenize(m, wc[k].text, strlen(wc[k].text), 0, 0, &ids, &n);
        CHECK((got == (int)n && end) == wc[k].ok, "%s: wrapper %s should be %s", who, wc[k].text,
              wc[k].ok ? "accepted" : "refused");
        free(ids);
        pagoda_grammar_matcher_destroy(gm);
    }
    pagoda_grammar_unref(g);
    pagoda_grammar_spec badb[] = {{.kind = PAGODA_GRAMMAR_REGEX, .text = "a", .min_repeat = 3, .max_repeat = 2},
                                  {.kind = PAGODA_GRAMMAR_REGEX, .text = "a", .min_repeat = -1},
                                  {.kind = PAGODA_GRAMMAR_REGEX, .text = "a", .min_repeat = 1, .max_repeat = 1 << 20}};
    for (size_t k = 0; k < sizeof badb / sizeof *badb; k++) {
        g = NULL;
        CHECK(pagoda_grammar_compile(m, &badb[k], &g) == PAGODA_ERR_INVALID && !g && strstr(pagoda_last_error(), "repeat"),
              "%s: bad repeat bounds %zu: %s", who, k, pagoda_last_error());
    }
    printf("%s: ok\n", who);
out:
    pagoda_model_free(m);
}

int main(void) {
    char path[4096];
    one_tokenizer(PAGODA_TESTS_DIR "/../models/SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2 (BPE)", 0);
    const char *shared = test_shared_dir();
    if (shared) {
        snprintf(path, sizeof path, "%s/fixtures/tokenizers/ggml-vocab-llama-spm.gguf", shared);
        one_tokenizer(path, "llama (SentencePiece)", 1);
        snprintf(path, sizeof path, "%s/fixtures/tokenizers/qwen3-hf", shared);
        one_tokenizer(path, "Qwen3 (BPE, 151k)", 0);
    } else {
        printf("skip SentencePiece and Qwen3: ../shared not found\n");
    }
    TEST_DONE();
}
