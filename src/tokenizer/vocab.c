/* The vocabulary: token tables, the piece -> id map, merges, added/special tokens, EOG set. */
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "tokenizer/tok_internal.h"

uint32_t tok_hash(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 0x100000001b3ULL;
    return (uint32_t)(h ^ (h >> 32));
}

int32_t tok_lookup(const pg_tokenizer *t, const char *s, size_t n) {
    const tok_strmap *m = &t->vocab;
    if (!m->cap) return -1;
    uint32_t i = tok_hash(s, n) & (m->cap - 1);
    while (m->val[i] >= 0) {
        if (m->klen[i] == n && !memcmp(m->key[i], s, n)) return m->val[i];
        i = (i + 1) & (m->cap - 1);
    }
    return -1;
}

pagoda_status tok_alloc(pg_tokenizer *t, int64_t n) {
    if (n <= 0 || n > TOK_MAX_VOCAB)
        return pg_fail(PAGODA_ERR_FORMAT, "tokenizer: vocabulary size %lld out of range (1..%d)", (long long)n, TOK_MAX_VOCAB);
    t->n_vocab = (int32_t)n;
    t->piece = calloc((size_t)n, sizeof *t->piece);
    t->piece_len = calloc((size_t)n, sizeof *t->piece_len);
    t->text = calloc((size_t)n, sizeof *t->text);
    t->text_len = calloc((size_t)n, sizeof *t->text_len);
    t->type = malloc((size_t)n);
    t->eog = calloc((size_t)n, sizeof *t->eog);
    if (!t->piece || !t->piece_len || !t->text || !t->text_len || !t->type || !t->eog)
        return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    memset(t->type, TOK_T_UNUSED, (size_t)n);
    return PAGODA_OK;
}

pagoda_status tok_set_piece(pg_tokenizer *t, int32_t id, const char *s, size_t n) {
    if (id < 0 || id >= t->n_vocab) return pg_fail(PAGODA_ERR_FORMAT, "tokenizer: token id %d out of range", id);
    if (n > TOK_MAX_TOKEN_LEN) return pg_fail(PAGODA_ERR_FORMAT, "tokenizer: token %d is %zu bytes (max %d)", id, n, TOK_MAX_TOKEN_LEN);
    char *p = malloc(n + 1);
    if (!p) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    memcpy(p, s, n);
    p[n] = 0;
    free(t->piece[id]);
    t->piece[id] = p;
    t->piece_len[id] = (uint32_t)n;
    if (t->type[id] == TOK_T_UNUSED) t->type[id] = TOK_T_NORMAL;
    return PAGODA_OK;
}

static uint32_t pow2_at_least(uint64_t n) {
    uint32_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

pagoda_status tok_merges_init(pg_tokenizer *t, int64_t n) {
    if (n < 0 || n > TOK_MAX_MERGES) return pg_fail(PAGODA_ERR_FORMAT, "tokenizer: %lld merges (max %d)", (long long)n, TOK_MAX_MERGES);
    tok_pairmap *m = &t->merges;
    m->cap = pow2_at_least((uint64_t)n * 2 + 1);
    m->key = malloc(m->cap * sizeof *m->key);
    m->rank = malloc(m->cap * sizeof *m->rank);
    m->res = malloc(m->cap * sizeof *m->res);
    if (!m->key || !m->rank || !m->res) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    memset(m->key, 0xFF, m->cap * sizeof *m->key);
    return PAGODA_OK;
}

/* Needs the vocab map, so tok_finish runs before merges are added. */
pagoda_status tok_add_merge(pg_tokenizer *t, const char *a, size_t na, const char *b, size_t nb, int32_t rank) {
    char buf[2 * 1024];
    if (na + nb > sizeof buf) return PAGODA_OK; /* no token is that long in practice: never merges */
    int32_t ia = tok_lookup(t, a, na), ib = tok_lookup(t, b, nb);
    memcpy(buf, a, na);
    memcpy(buf + na, b, nb);
    int32_t ir = tok_lookup(t, buf, na + nb);
    if (ia < 0 || ib < 0 || ir < 0) return PAGODA_OK; /* a merge into nothing cannot apply */
    tok_pairmap *m = &t->merges;
    uint64_t k = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
    uint32_t i = (uint32_t)((k * 0x9E3779B97F4A7C15ULL) >> 32) & (m->cap - 1);
    while (m->key[i] != UINT64_MAX) {
        if (m->key[i] == k) return PAGODA_OK; /* first (best) rank wins */
        i = (i + 1) & (m->cap - 1);
    }
    m->key[i] = k;
    m->rank[i] = rank;
    m->res[i] = ir;
    return PAGODA_OK;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

static int byte_piece(const char *p, uint32_t n) { /* "<0xXX>" -> XX, else -1 */
    if (n != 6 || memcmp(p, "<0x", 3) || p[5] != '>') return -1;
    int h = hexval(p[3]), l = hexval(p[4]);
    return h < 0 || l < 0 ? -1 : h * 16 + l;
}

/* Decoded bytes of a normal token: byte-level unmapping, or "▁" -> space. */
static pagoda_status decode_piece(pg_tokenizer *t, int32_t id) {
    const char *p = t->piece[id];
    uint32_t n = t->piece_len[id];
    uint8_t ty = t->type[id];
    if (ty == TOK_T_BYTE) {
        int b = byte_piece(p, n);
        if (b >= 0) {
            t->text[id] = malloc(2);
            if (!t->text[id]) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
            t->text[id][0] = (char)b;
            t->text[id][1] = 0;
            t->text_len[id] = 1;
        }
        return PAGODA_OK;
    }
    if (ty == TOK_T_CONTROL || ty == TOK_T_USER || ty == TOK_T_UNKNOWN) return PAGODA_OK; /* raw */
    bool bl = t->byte_level, sp = t->kind == TOK_SPM || t->spm_escape;
    if (!bl && !(sp && strstr(p, "\xE2\x96\x81"))) return PAGODA_OK;
    char *o = malloc((size_t)n + 1);
    if (!o) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    uint32_t m = 0;
    for (uint32_t i = 0; i < n;) {
        uint8_t c = (uint8_t)p[i];
        uint32_t cl = tok_utf8_len(c);
        if (cl > n - i) cl = n - i;
        if (sp && cl == 3 && !memcmp(p + i, "\xE2\x96\x81", 3)) {
            o[m++] = ' ';
        } else if (bl) {
            uint32_t cp = c;
            if (cl == 2 && (c & 0xE0) == 0xC0) cp = (uint32_t)(c & 0x1F) << 6 | ((uint8_t)p[i + 1] & 0x3F);
            int b = (cl <= 2) ? tok_char_byte(cp) : -1;
            if (b >= 0) {
                o[m++] = (char)b;
            } else {
                memcpy(o + m, p + i, cl);
                m += cl;
            }
        } else {
            memcpy(o + m, p + i, cl);
            m += cl;
        }
        i += cl;
    }
    o[m] = 0;
    t->text[id] = o;
    t->text_len[id] = m;
    return PAGODA_OK;
}

static int cmp_added(const void *x, const void *y) {
    const tok_added *a = x, *b = y;
    uint8_t fa = (uint8_t)a->s[0], fb = (uint8_t)b->s[0];
    if (fa != fb) return fa < fb ? -1 : 1;
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

static const char *const k_eog_names[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                                          "<|eom_id|>", "<EOT>", "<|end_of_text|>", "</s>"};

pagoda_status tok_finish(pg_tokenizer *t) {
    pagoda_status st;
    /* piece -> id map; later duplicates win, as in llama.cpp */
    tok_strmap *m = &t->vocab;
    m->cap = pow2_at_least((uint64_t)t->n_vocab * 2 + 1);
    m->key = malloc(m->cap * sizeof *m->key);
    m->klen = malloc(m->cap * sizeof *m->klen);
    m->val = malloc(m->cap * sizeof *m->val);
    if (!m->key || !m->klen || !m->val) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    memset(m->val, 0xFF, m->cap * sizeof *m->val);
    int32_t n_added = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        if (!t->piece[id]) {
            if ((st = tok_set_piece(t, id, "", 0))) return st;
            t->type[id] = TOK_T_UNUSED;
            continue;
        }
        const char *p = t->piece[id];
        uint32_t n = t->piece_len[id];
        if (t->byte_fallback && t->type[id] == TOK_T_NORMAL && byte_piece(p, n) >= 0) t->type[id] = TOK_T_BYTE;
        uint32_t i = tok_hash(p, n) & (m->cap - 1);
        while (m->val[i] >= 0 && !(m->klen[i] == n && !memcmp(m->key[i], p, n))) i = (i + 1) & (m->cap - 1);
        m->key[i] = p;
        m->klen[i] = n;
        m->val[i] = id;
        uint8_t ty = t->type[id];
        if (n > 0 && (ty == TOK_T_CONTROL || ty == TOK_T_USER || ty == TOK_T_UNKNOWN)) n_added++;
    }
    for (int b = 0; b < 256; b++) {
        char hex[8];
        static const char dig[] = "0123456789ABCDEF";
        memcpy(hex, "<0x", 3);
        hex[3] = dig[b >> 4];
        hex[4] = dig[b & 15];
        hex[5] = '>';
        t->byte_id[b] = tok_lookup(t, hex, 6);
        size_t cl;
        const char *c = tok_byte_char((uint8_t)b, &cl);
        t->bchar_id[b] = t->byte_level ? tok_lookup(t, c, cl) : -1;
    }
    for (int32_t id = 0; id < t->n_vocab; id++)
        if ((st = decode_piece(t, id))) return st;
    /* SPM word splitting is exact only if no token has "▁" right after another char */
    t->spm_split = true;
    for (int32_t id = 0; id < t->n_vocab && t->spm_split; id++) {
        const char *p = t->piece[id];
        uint32_t n = t->piece_len[id];
        for (uint32_t i = 1; i + 2 < n; i++) {
            if (!memcmp(p + i, "\xE2\x96\x81", 3) && (i < 3 || memcmp(p + i - 3, "\xE2\x96\x81", 3))) {
                t->spm_split = false;
                break;
            }
        }
    }
    /* added/special tokens, bucketed by first byte, longest first */
    t->added = calloc((size_t)n_added + 1, sizeof *t->added);
    if (!t->added) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    for (int32_t id = 0; id < t->n_vocab; id++) {
        uint8_t ty = t->type[id];
        if (t->piece_len[id] == 0 || !(ty == TOK_T_CONTROL || ty == TOK_T_USER || ty == TOK_T_UNKNOWN)) continue;
        t->added[t->n_added++] = (tok_added){t->piece[id], t->piece_len[id], id, ty != TOK_T_USER};
    }
    qsort(t->added, (size_t)t->n_added, sizeof *t->added, cmp_added);
    int32_t j = 0;
    for (int b = 0; b <= 256; b++) {
        while (j < t->n_added && (uint8_t)t->added[j].s[0] < b) j++;
        t->added_at[b] = j;
    }
    t->added_at[256] = t->n_added;
    /* end-of-generation tokens */
    int32_t ids[] = {t->eos, t->eot, t->eom};
    for (size_t i = 0; i < sizeof ids / sizeof *ids; i++)
        if (ids[i] >= 0 && ids[i] < t->n_vocab) t->eog[ids[i]] = true;
    for (size_t i = 0; i < sizeof k_eog_names / sizeof *k_eog_names; i++) {
        int32_t id = tok_lookup(t, k_eog_names[i], strlen(k_eog_names[i]));
        if (id >= 0 && t->type[id] == TOK_T_CONTROL) t->eog[id] = true;
    }
    return PAGODA_OK;
}
