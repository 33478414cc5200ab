/* Public tokenizer API: encode (special-token splitting, then the model), decode, streaming. */
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "tokenizer/tok_internal.h"

uint32_t tok_utf8_len(uint8_t c) {
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) return 2;
    if ((c & 0xF0) == 0xE0) return 3;
    if ((c & 0xF8) == 0xF0) return 4;
    return 1; /* continuation or invalid lead byte: a char of its own */
}

void tok_init_defaults(pg_tokenizer *t) {
    t->bos = t->eos = t->eot = t->eom = t->unk = t->pad = -1;
    for (int b = 0; b < 256; b++) t->byte_id[b] = t->bchar_id[b] = -1;
}

void tok_free(pg_tokenizer *t) {
    if (!t) return;
    for (int32_t i = 0; t->piece && i < t->n_vocab; i++) {
        free(t->piece[i]);
        if (t->text) free(t->text[i]);
    }
    free(t->piece);
    free(t->piece_len);
    free(t->text);
    free(t->text_len);
    free(t->type);
    free(t->score);
    free(t->eog);
    free(t->vocab.key);
    free(t->vocab.klen);
    free(t->vocab.val);
    free(t->merges.key);
    free(t->merges.rank);
    free(t->merges.res);
    free(t->added);
    free(t->chat_template);
    tok_free_splits(t);
    free(t);
}

int32_t tok_n_vocab(const pg_tokenizer *t) { return t->n_vocab; }
int32_t tok_bos(const pg_tokenizer *t) { return t->bos; }
int32_t tok_eos(const pg_tokenizer *t) { return t->eos; }
bool tok_is_eog(const pg_tokenizer *t, int32_t id) { return id >= 0 && id < t->n_vocab && t->eog[id]; }
bool tok_add_bos_default(const pg_tokenizer *t) { return t->add_bos && t->bos >= 0; }
const char *tok_chat_template(const pg_tokenizer *t) { return t->chat_template; }

const char *tok_piece(const pg_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_vocab) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = t->piece_len[id];
    return t->piece[id];
}

const char *tok_token_bytes(const pg_tokenizer *t, int32_t id, size_t *len, bool *special) {
    if (id < 0 || id >= t->n_vocab) {
        if (len) *len = 0;
        if (special) *special = true;
        return NULL;
    }
    uint8_t ty = t->type[id];
    if (special) *special = ty == TOK_T_CONTROL || ty == TOK_T_UNKNOWN || ty == TOK_T_UNUSED || ty == TOK_T_UNDEF;
    if (len) *len = t->text[id] ? t->text_len[id] : t->piece_len[id];
    return t->text[id] ? t->text[id] : t->piece[id];
}

typedef struct {
    const pg_tokenizer *t;
    tok_work *w;
} piece_ctx;

static pagoda_status on_piece(void *ctx, const char *s, size_t n, bool mapped) {
    piece_ctx *c = ctx;
    return tok_bpe_piece(c->t, c->w, s, n, mapped);
}

static pagoda_status encode_raw(const pg_tokenizer *t, tok_work *w, const char *s, size_t n, bool prefix) {
    if (n == 0) return PAGODA_OK;
    if (t->kind == TOK_SPM || t->spm_escape) {
        if (n == 0) return PAGODA_OK;
        return tok_spm_fragment(t, w, s, n, prefix && t->add_space_prefix);
    }
    piece_ctx c = {t, w};
    return tok_pretokenize(t, s, n, on_piece, &c);
}

/* Longest added token at s (special ones only when allowed: parse_special, and no byte of the
 * match marked in plain, which is NULL or the mask from s on), or NULL. */
static const tok_added *match_added(const pg_tokenizer *t, const char *s, size_t n, bool parse_special,
                                    const uint8_t *plain) {
    uint8_t b = (uint8_t)s[0];
    for (int32_t i = t->added_at[b]; i < t->added_at[b + 1]; i++) {
        const tok_added *a = &t->added[i];
        if (a->len > n || memcmp(a->s, s, a->len)) continue;
        if (!a->special) return a;
        if (parse_special && !(plain && memchr(plain, 1, a->len))) return a;
    }
    return NULL;
}

pagoda_status tok_encode(const pg_tokenizer *t, const char *text, size_t len, bool add_special, bool parse_special,
                         int32_t **ids, size_t *n_ids) {
    return tok_encode_masked(t, text, len, add_special, parse_special, NULL, ids, n_ids);
}

pagoda_status tok_encode_masked(const pg_tokenizer *t, const char *text, size_t len, bool add_special,
                                bool parse_special, const uint8_t *plain, int32_t **ids, size_t *n_ids) {
    *ids = NULL;
    *n_ids = 0;
    if (!text && len) return pg_fail(PAGODA_ERR_INVALID, "tok_encode: NULL text");
    tok_work w = {0};
    pagoda_status st = PAGODA_OK;
    if (add_special && t->add_bos && t->bos >= 0 && !tok_ids_push(&w.out, t->bos)) goto nomem;
    bool prev_special = true; /* SPM: "▁" prefix at the start and after each special token */
    size_t start = 0;
    for (size_t i = 0; i < len && t->n_added;) {
        const tok_added *a = t->added_at[(uint8_t)text[i] + 1] > t->added_at[(uint8_t)text[i]]
                                 ? match_added(t, text + i, len - i, parse_special, plain ? plain + i : NULL)
                                 : NULL;
        if (!a) {
            i++;
            continue;
        }
        if (i > start) {
            if ((st = encode_raw(t, &w, text + start, i - start, prev_special))) goto fail;
        }
        if (!tok_ids_push(&w.out, a->id)) goto nomem;
        prev_special = true;
        i += a->len;
        start = i;
        continue;
    }
    if (start < len && (st = encode_raw(t, &w, text + start, len - start, prev_special))) goto fail;
    if (add_special && t->add_eos && t->eos >= 0 && !tok_ids_push(&w.out, t->eos)) goto nomem;
    *ids = w.out.v;
    *n_ids = (size_t)w.out.n;
    w.out.v = NULL;
    tok_work_free(&w);
    return PAGODA_OK;
nomem:
    st = pg_fail(PAGODA_ERR_NOMEM, "out of memory");
fail:
    tok_work_free(&w);
    return st;
}

/* Text of one token for output; *strip_pending handles SPM's leading space (dropped once, from
 * the first token that produces text, like llama.cpp and HF's Strip decoder). */
static const char *token_text(const pg_tokenizer *t, int32_t id, bool skip_special, bool *strip_pending,
                              size_t *len) {
    uint8_t ty = t->type[id];
    *len = 0;
    if (skip_special && (ty == TOK_T_CONTROL || ty == TOK_T_UNKNOWN)) return "";
    const char *s = t->text[id] ? t->text[id] : t->piece[id];
    size_t n = t->text[id] ? t->text_len[id] : t->piece_len[id];
    if (n > 0 && *strip_pending) {
        *strip_pending = false;
        if (s[0] == ' ' && (ty == TOK_T_NORMAL || ty == TOK_T_BYTE)) {
            s++;
            n--;
        }
    }
    *len = n;
    return s;
}

static bool strip_leading(const pg_tokenizer *t) { return (t->kind == TOK_SPM || t->spm_escape) && t->add_space_prefix; }

pagoda_status tok_decode(const pg_tokenizer *t, const int32_t *ids, size_t n, bool skip_special, char **text,
                         size_t *len) {
    *text = NULL;
    *len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab)
            return pg_fail(PAGODA_ERR_INVALID, "tok_decode: token id %d out of range (n_vocab %d)", ids[i], t->n_vocab);
        total += t->text[ids[i]] ? t->text_len[ids[i]] : t->piece_len[ids[i]];
    }
    char *o = malloc(total + 1);
    if (!o) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    bool strip = strip_leading(t);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l;
        const char *s = token_text(t, ids[i], skip_special, &strip, &l);
        memcpy(o + m, s, l);
        m += l;
    }
    o[m] = 0;
    *text = o;
    *len = m;
    return PAGODA_OK;
}

struct tok_stream {
    const pg_tokenizer *t;
    bool skip_special;
    bool strip_pending;
    char held[4]; /* an incomplete UTF-8 sequence (at most 3 bytes) */
    size_t n_held;
};

pagoda_status tok_stream_create(const pg_tokenizer *t, bool skip_special, tok_stream **out) {
    *out = calloc(1, sizeof **out);
    if (!*out) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    (*out)->t = t;
    (*out)->skip_special = skip_special;
    (*out)->strip_pending = strip_leading(t);
    return PAGODA_OK;
}

void tok_stream_destroy(tok_stream *s) { free(s); }

/* Bytes at the end of b[0..n) that start a valid but unfinished UTF-8 sequence. */
static size_t incomplete_tail(const char *b, size_t n) {
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        uint8_t c = (uint8_t)b[n - k];
        if ((c & 0xC0) == 0x80) continue; /* continuation: keep looking for the lead */
        uint32_t need = tok_utf8_len(c);
        return need > k ? k : 0;
    }
    return 0;
}

/* On success the state moves on; when the text does not fit, nothing changes, so the caller
 * can push the same id again with a bigger buffer. */
size_t tok_stream_push(tok_stream *s, int32_t id, char *out, size_t cap) {
    const pg_tokenizer *t = s->t;
    if (id < 0 || id >= t->n_vocab) return 0; /* not a token: nothing to show */
    bool strip = s->strip_pending;
    size_t l;
    const char *p = token_text(t, id, s->skip_special, &strip, &l);
    size_t n = s->n_held + l;
    /* the tail check only needs the last 3 bytes of held + piece */
    char last[8];
    size_t nl = n < 3 ? n : 3;
    for (size_t i = 0; i < nl; i++) {
        size_t at = n - nl + i;
        last[i] = at < s->n_held ? s->held[at] : p[at - s->n_held];
    }
    size_t tail = incomplete_tail(last, nl);
    size_t emit = n - tail;
    if (emit > cap) return emit;
    if (emit) {
        memcpy(out, s->held, s->n_held < emit ? s->n_held : emit);
        if (emit > s->n_held) memcpy(out + s->n_held, p, emit - s->n_held);
    }
    /* new held bytes: the tail (it lies in held + piece) */
    char nh[4];
    for (size_t i = 0; i < tail; i++) {
        size_t at = emit + i;
        nh[i] = at < s->n_held ? s->held[at] : p[at - s->n_held];
    }
    memcpy(s->held, nh, tail);
    s->n_held = tail;
    s->strip_pending = strip;
    return emit;
}

size_t tok_stream_flush(tok_stream *s, char *out, size_t cap) {
    if (s->n_held > cap) return s->n_held;
    size_t n = s->n_held;
    if (n) memcpy(out, s->held, n);
    s->n_held = 0;
    return n;
}
