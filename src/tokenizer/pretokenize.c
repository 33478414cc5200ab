/* Pre-tokenization: the split regexes, each applied to the pieces the previous one left
 * (text between matches stays a piece too, as in llama.cpp and Hugging Face's "Isolated"). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <string.h>

#include "core/log.h"
#include "tokenizer/tok_internal.h"

#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define RE_LLAMA3                                                                                  \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| " \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2                                                                                   \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "     \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

pagoda_status tok_add_split(pg_tokenizer *t, const char *pattern, bool literal) {
    if (t->n_split >= TOK_MAX_SPLITS) return pg_fail(PAGODA_ERR_UNSUPPORTED, "tokenizer: more than %d split rules", TOK_MAX_SPLITS);
    int err;
    PCRE2_SIZE off;
    /* MATCH_INVALID_UTF: invalid bytes in the text never match (they stay pieces of their own)
     * and no O(n) UTF check runs per match call */
    uint32_t opt = PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF | (literal ? PCRE2_LITERAL : 0);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, opt, &err, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "tokenizer: split regex at offset %zu: %s", (size_t)off, (char *)msg);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional: falls back to the interpreter */
    t->split[t->n_split++].code = re;
    return PAGODA_OK;
}

void tok_free_splits(pg_tokenizer *t) {
    for (int i = 0; i < t->n_split; i++) pcre2_code_free((pcre2_code *)t->split[i].code);
    t->n_split = 0;
}

pagoda_status tok_pre_from_name(pg_tokenizer *t, const char *pre) {
    pagoda_status st = PAGODA_OK;
    if (!strcmp(pre, "default") || !strcmp(pre, "gpt-2") || !strcmp(pre, "gpt2") || !strcmp(pre, "jais") ||
        !strcmp(pre, "olmo") || !strcmp(pre, "mpt")) {
        st = tok_add_split(t, RE_GPT2, false);
    } else if (!strcmp(pre, "starcoder") || !strcmp(pre, "refact") || !strcmp(pre, "smollm") ||
               !strcmp(pre, "command-r") || !strcmp(pre, "codeshell") || !strcmp(pre, "exaone") ||
               !strcmp(pre, "minerva-7b")) {
        if (!(st = tok_add_split(t, "\\p{N}", false))) st = tok_add_split(t, RE_GPT2, false);
    } else if (!strcmp(pre, "qwen2") || !strcmp(pre, "deepseek-r1-qwen")) {
        st = tok_add_split(t, RE_QWEN2, false);
    } else if (!strcmp(pre, "llama-bpe") || !strcmp(pre, "llama3") || !strcmp(pre, "dbrx") || !strcmp(pre, "smaug-bpe")) {
        st = tok_add_split(t, RE_LLAMA3, false);
        t->ignore_merges = true; /* as llama.cpp and Llama-3's tokenizer.json do */
    } else if (!strcmp(pre, "deepseek-coder")) {
        const char *re[] = {"[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[\\x{4E00}-\\x{9FA5}\\x{0800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+", "\\p{N}"};
        for (size_t i = 0; i < sizeof re / sizeof *re && !st; i++) st = tok_add_split(t, re[i], false);
    } else {
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "tokenizer: unsupported pre-tokenizer tokenizer.ggml.pre = '%s'", pre);
    }
    return st;
}

typedef struct {
    const pg_tokenizer *t;
    pcre2_match_data *md;
    pcre2_match_context *mc;
    pcre2_jit_stack *js;
    tok_piece_fn fn;
    void *ctx;
} split_ctx;

static int do_match(split_ctx *c, pcre2_code *re, const char *s, size_t n, size_t at) {
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, at, 0, c->md, c->mc);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !c->js) {
        /* a very long run needs more JIT stack than the default 32 KiB */
        c->js = pcre2_jit_stack_create(32 * 1024, 512 * 1024 * 1024, NULL);
        if (!c->js) return PCRE2_ERROR_NOMEMORY;
        pcre2_jit_stack_assign(c->mc, NULL, c->js);
        rc = pcre2_match(re, (PCRE2_SPTR)s, n, at, 0, c->md, c->mc);
    }
    return rc;
}

static pagoda_status split_level(split_ctx *c, int level, const char *s, size_t n) {
    if (n == 0) return PAGODA_OK;
    if (level == c->t->n_split) return c->fn(c->ctx, s, n);
    pcre2_code *re = (pcre2_code *)c->t->split[level].code;
    size_t at = 0, emitted = 0;
    pagoda_status st;
    while (at < n) {
        int rc = do_match(c, re, s, n, at);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return pg_fail(PAGODA_ERR_INVALID, "tokenizer: split regex failed: %s", (char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        size_t b = ov[0], e = ov[1];
        if (e == b) { /* empty match: step one char so we always progress */
            at = b + tok_utf8_len((uint8_t)s[b]);
            if (at > n) at = n;
            continue;
        }
        if (b > emitted && (st = split_level(c, level + 1, s + emitted, b - emitted))) return st;
        if ((st = split_level(c, level + 1, s + b, e - b))) return st;
        emitted = at = e;
    }
    if (emitted < n) return split_level(c, level + 1, s + emitted, n - emitted);
    return PAGODA_OK;
}

pagoda_status tok_pretokenize(const pg_tokenizer *t, const char *text, size_t n, tok_piece_fn fn, void *ctx) {
    if (t->n_split == 0) return n ? fn(ctx, text, n) : PAGODA_OK;
    split_ctx c = {.t = t, .fn = fn, .ctx = ctx};
    c.md = pcre2_match_data_create(4, NULL);
    c.mc = pcre2_match_context_create(NULL);
    pagoda_status st;
    if (!c.md || !c.mc) {
        st = pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    } else {
        st = split_level(&c, 0, text, n);
    }
    pcre2_match_data_free(c.md);
    pcre2_match_context_free(c.mc);
    if (c.js) pcre2_jit_stack_free(c.js);
    return st;
}
