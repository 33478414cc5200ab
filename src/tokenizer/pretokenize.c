/* Pre-tokenization: the steps of a Hugging Face pre_tokenizer Sequence, each applied to the pieces
 * the previous one left. A split step finds the matches of its regex (text between matches stays a
 * piece too) and treats them by its behavior (Isolated, Removed, MergedWithPrevious,
 * MergedWithNext, Contiguous), optionally inverted; a ByteLevel step maps later pieces to the
 * byte-level stand-in chars, so splits after it see the mapped text, as they do in `tokenizers`. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "tokenizer/tok_internal.h"

pagoda_status tok_add_split(pg_tokenizer *t, const char *pattern, bool literal, tok_split_behavior behavior,
                            bool invert) {
    if (t->n_split >= TOK_MAX_SPLITS) return pg_fail(PAGODA_ERR_UNSUPPORTED, "tokenizer: more than %d pre-tokenizer steps", TOK_MAX_SPLITS);
    int err;
    PCRE2_SIZE off;
    /* MATCH_INVALID_UTF: invalid bytes in the text never match (they stay pieces of their own)
     * and no O(n) UTF check runs per match call. MULTILINE: ^ and $ are line anchors, as in
     * Oniguruma's (Ruby) syntax that tokenizer.json regexes are written for. */
    uint32_t opt = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP | PCRE2_MULTILINE);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, opt, &err, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "tokenizer: split regex at offset %zu: %s", (size_t)off, (char *)msg);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional: falls back to the interpreter */
    t->split[t->n_split++] = (tok_regex){.code = re, .kind = TOK_STEP_SPLIT, .behavior = (uint8_t)behavior, .invert = invert};
    return PAGODA_OK;
}

pagoda_status tok_add_step(pg_tokenizer *t, tok_step_kind kind) {
    if (t->n_split >= TOK_MAX_SPLITS) return pg_fail(PAGODA_ERR_UNSUPPORTED, "tokenizer: more than %d pre-tokenizer steps", TOK_MAX_SPLITS);
    t->split[t->n_split++] = (tok_regex){.kind = (uint8_t)kind};
    return PAGODA_OK;
}

void tok_free_splits(pg_tokenizer *t) {
    for (int i = 0; i < t->n_split; i++)
        if (t->split[i].code) pcre2_code_free((pcre2_code *)t->split[i].code);
    t->n_split = 0;
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

static pagoda_status run_level(split_ctx *c, int level, const char *s, size_t n, bool mapped);

/* The behavior of one split, fed its segments (matches and the text between them) in order.
 * A piece is held back while a later segment may still join it. */
typedef struct {
    split_ctx *c;
    int next;             /* level the pieces go on to */
    bool mapped;
    const char *s;
    uint8_t behavior;
    bool has_pend;
    size_t pb, pe;        /* the held piece */
    bool pend_match;      /* MergedWithNext: the held piece is a match that may join the next */
    bool prev_match;      /* the previous segment was a match */
} seg_state;

static pagoda_status flush(seg_state *g) {
    if (!g->has_pend) return PAGODA_OK;
    g->has_pend = false;
    return g->pe > g->pb ? run_level(g->c, g->next, g->s + g->pb, g->pe - g->pb, g->mapped) : PAGODA_OK;
}

static pagoda_status hold(seg_state *g, size_t b, size_t e, bool m) {
    pagoda_status st = flush(g);
    g->has_pend = true;
    g->pb = b;
    g->pe = e;
    g->pend_match = m;
    return st;
}

static pagoda_status segment(seg_state *g, size_t b, size_t e, bool m) {
    pagoda_status st = PAGODA_OK;
    switch (g->behavior) {
    case TOK_SPLIT_REMOVED:
        if (!m && e > b) st = run_level(g->c, g->next, g->s + b, e - b, g->mapped);
        break;
    case TOK_SPLIT_MERGED_PREV:
        if (m && !g->prev_match && g->has_pend) g->pe = e;
        else st = hold(g, b, e, m);
        break;
    case TOK_SPLIT_MERGED_NEXT:
        if (g->has_pend && g->pend_match && !m) {
            g->pe = e; /* the held match joins this piece, which is final */
            g->pend_match = false;
        } else {
            st = hold(g, b, e, m);
        }
        break;
    case TOK_SPLIT_CONTIGUOUS:
        if (g->has_pend && m == g->prev_match) g->pe = e;
        else st = hold(g, b, e, m);
        break;
    default: /* ISOLATED */
        if (e > b) st = run_level(g->c, g->next, g->s + b, e - b, g->mapped);
        break;
    }
    g->prev_match = m;
    return st;
}

static pagoda_status split_step(split_ctx *c, int level, const char *s, size_t n, bool mapped) {
    const tok_regex *r = &c->t->split[level];
    pcre2_code *re = (pcre2_code *)r->code;
    seg_state g = {.c = c, .next = level + 1, .mapped = mapped, .s = s, .behavior = r->behavior};
    bool inv = r->invert;
    size_t at = 0, prev = 0, last_end = (size_t)-1;
    pagoda_status st;
    while (at <= n) {
        int rc = do_match(c, re, s, n, at);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return pg_fail(PAGODA_ERR_INVALID, "tokenizer: split regex failed: %s", (char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        size_t b = ov[0], e = ov[1];
        if (e == b && b == last_end) { /* no empty match right where the last one ended: step a char */
            if (b >= n) break;
            at = b + tok_utf8_len((uint8_t)s[b]);
            if (at > n) at = n;
            continue;
        }
        if (b > prev && (st = segment(&g, prev, b, inv))) return st;
        if ((st = segment(&g, b, e, !inv))) return st;
        prev = at = last_end = e;
    }
    if (prev < n && (st = segment(&g, prev, n, inv))) return st;
    return flush(&g);
}

/* Runs the steps from level on one piece (allocations only for the rare mapping/prefix steps). */
static pagoda_status run_level(split_ctx *c, int level, const char *s, size_t n, bool mapped) {
    if (n == 0) return PAGODA_OK;
    const pg_tokenizer *t = c->t;
    if (level == t->n_split) return c->fn(c->ctx, s, n, mapped);
    const tok_regex *r = &t->split[level];
    if (r->kind == TOK_STEP_SPLIT) return split_step(c, level, s, n, mapped);
    bool later = false; /* mapping only matters to a later step; the BPE maps on its own */
    for (int k = level + 1; k < t->n_split; k++) later |= t->split[k].kind != TOK_STEP_BYTES;
    if (r->kind == TOK_STEP_BYTES && (mapped || !later)) return run_level(c, level + 1, s, n, mapped);
    /* the mapped space stand-in (U+0120) never starts with ' ', so HF prepends it again */
    if (r->kind == TOK_STEP_PREFIX && !mapped && s[0] == ' ') return run_level(c, level + 1, s, n, mapped);
    if (n > (SIZE_MAX - 8) / 2) return pg_fail(PAGODA_ERR_INVALID, "tokenizer: text too long");
    char *buf = malloc(2 * n + 8);
    if (!buf) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    size_t m;
    if (r->kind == TOK_STEP_BYTES) {
        m = tok_bytes_map(s, n, buf);
        mapped = true;
    } else {
        m = mapped ? tok_bytes_map(" ", 1, buf) : 1;
        buf[0] = mapped ? buf[0] : ' ';
        memcpy(buf + m, s, n);
        m += n;
    }
    pagoda_status st = run_level(c, level + 1, buf, m, mapped);
    free(buf);
    return st;
}

pagoda_status tok_pretokenize(const pg_tokenizer *t, const char *text, size_t n, tok_piece_fn fn, void *ctx) {
    if (t->n_split == 0) return n ? fn(ctx, text, n, false) : PAGODA_OK;
    split_ctx c = {.t = t, .fn = fn, .ctx = ctx};
    c.md = pcre2_match_data_create(4, NULL);
    c.mc = pcre2_match_context_create(NULL);
    pagoda_status st;
    if (!c.md || !c.mc) {
        st = pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    } else {
        st = run_level(&c, 0, text, n, false);
    }
    pcre2_match_data_free(c.md);
    pcre2_match_context_free(c.mc);
    if (c.js) pcre2_jit_stack_free(c.js);
    return st;
}
