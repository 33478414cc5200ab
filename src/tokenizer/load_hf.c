/* Tokenizer from a Hugging Face folder: tokenizer.json (+ tokenizer_config.json). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/file.h"
#include "core/log.h"
#include "tokenizer/tok_internal.h"

#define HF_MAX_FILE ((size_t)512 << 20)

static pagoda_status load_json(const char *dir, const char *name, bool required, json_t **out) {
    *out = NULL;
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
        return pg_fail(PAGODA_ERR_INVALID, "tokenizer: path too long");
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (!required) return PAGODA_OK;
        return pg_fail(PAGODA_ERR_IO, "tokenizer: cannot open %s", path);
    }
    char *text;
    size_t len;
    pagoda_status st = pg_read_file(path, HF_MAX_FILE, &text, &len);
    if (st) return st;
    json_error_t err;
    *out = json_loadb(text, len, 0, &err);
    free(text);
    if (!*out) return pg_fail(PAGODA_ERR_FORMAT, "%s:%d: %s", path, err.line, err.text);
    return PAGODA_OK;
}

static const char *jstr(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

/* tokenizer_config tokens are a string or {"content": ...}. */
static const char *token_content(json_t *v) {
    if (json_is_string(v)) return json_string_value(v);
    if (json_is_object(v)) return jstr(v, "content");
    return NULL;
}

/* Before tok_finish builds the map: a linear scan (a handful of calls per load). */
static int32_t tok_lookup_raw_pending(const pg_tokenizer *t, const char *s) {
    size_t n = strlen(s);
    for (int32_t id = t->n_vocab - 1; id >= 0; id--)
        if (t->piece[id] && t->piece_len[id] == n && !memcmp(t->piece[id], s, n)) return id;
    return -1;
}

static pagoda_status normalizer(pg_tokenizer *t, json_t *n) {
    if (!n || json_is_null(n)) return PAGODA_OK;
    const char *type = jstr(n, "type");
    if (!type) return pg_fail(PAGODA_ERR_FORMAT, "tokenizer.json: normalizer without a type");
    if (!strcmp(type, "NFC")) return PAGODA_OK; /* text is assumed NFC already (as llama.cpp does) */
    if (!strcmp(type, "Sequence")) {
        json_t *arr = json_object_get(n, "normalizers"), *e;
        size_t i;
        pagoda_status st;
        json_array_foreach(arr, i, e) if ((st = normalizer(t, e))) return st;
        return PAGODA_OK;
    }
    /* Llama-2 style: Prepend("▁") + Replace(" ", "▁") is SentencePiece text handling */
    if (!strcmp(type, "Prepend") && jstr(n, "prepend") && !strcmp(jstr(n, "prepend"), "\xE2\x96\x81")) {
        t->spm_escape = true;
        t->add_space_prefix = true;
        return PAGODA_OK;
    }
    if (!strcmp(type, "Replace")) {
        const char *from = jstr(json_object_get(n, "pattern"), "String"), *to = jstr(n, "content");
        if (from && to && !strcmp(from, " ") && !strcmp(to, "\xE2\x96\x81")) {
            t->spm_escape = true;
            return PAGODA_OK;
        }
    }
    return pg_fail(PAGODA_ERR_UNSUPPORTED, "tokenizer.json: unsupported normalizer type '%s'", type);
}

pagoda_status tok_load_hf(const char *dir, pg_tokenizer **out) {
    *out = NULL;
    json_t *tj = NULL, *cj = NULL;
    pg_tokenizer *t = calloc(1, sizeof *t);
    pagoda_status st;
    if (!t) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    tok_init_defaults(t);
    t->kind = TOK_BPE;
    if ((st = load_json(dir, "tokenizer.json", true, &tj))) goto fail;
    if ((st = load_json(dir, "tokenizer_config.json", false, &cj))) goto fail;
    json_t *model = json_object_get(tj, "model");
    const char *mtype = jstr(model, "type");
    if (!mtype || strcmp(mtype, "BPE")) {
        st = pg_fail(PAGODA_ERR_UNSUPPORTED, "tokenizer.json: model type '%s' is not supported (BPE only)",
                     mtype ? mtype : "(none)");
        goto fail;
    }
    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    json_t *added = json_object_get(tj, "added_tokens");
    if (!json_is_object(vocab) || (merges && !json_is_array(merges))) {
        st = pg_fail(PAGODA_ERR_FORMAT, "tokenizer.json: model.vocab must be an object and model.merges an array");
        goto fail;
    }
    int64_t n_vocab = 0;
    const char *k;
    json_t *v, *e;
    size_t i;
    json_object_foreach(vocab, k, v) {
        json_int_t id = json_integer_value(v);
        if (!json_is_integer(v) || id < 0 || id >= TOK_MAX_VOCAB) {
            st = pg_fail(PAGODA_ERR_FORMAT, "tokenizer.json: vocab entry has a bad id");
            goto fail;
        }
        if (id + 1 > n_vocab) n_vocab = id + 1;
    }
    json_array_foreach(added, i, e) {
        json_int_t id = json_integer_value(json_object_get(e, "id"));
        if (!jstr(e, "content") || id < 0 || id >= TOK_MAX_VOCAB) {
            st = pg_fail(PAGODA_ERR_FORMAT, "tokenizer.json: added_tokens[%zu] is malformed", i);
            goto fail;
        }
        if (id + 1 > n_vocab) n_vocab = id + 1;
    }
    if ((st = tok_alloc(t, n_vocab))) goto fail;
    json_object_foreach(vocab, k, v) if ((st = tok_set_piece(t, (int32_t)json_integer_value(v), k, strlen(k)))) goto fail;
    json_array_foreach(added, i, e) {
        int32_t id = (int32_t)json_integer_value(json_object_get(e, "id"));
        const char *c = jstr(e, "content");
        if ((st = tok_set_piece(t, id, c, strlen(c)))) goto fail;
        t->type[id] = json_is_true(json_object_get(e, "special")) ? TOK_T_CONTROL : TOK_T_USER;
    }
    t->byte_fallback = json_is_true(json_object_get(model, "byte_fallback"));
    t->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));
    if ((st = normalizer(t, json_object_get(tj, "normalizer")))) goto fail;
    if ((st = tok_pre_from_json(t, json_object_get(tj, "pre_tokenizer")))) goto fail;
    if (!t->byte_level && !t->spm_escape && !t->byte_fallback) {
        st = pg_fail(PAGODA_ERR_UNSUPPORTED, "tokenizer.json: BPE without ByteLevel, Metaspace or byte_fallback");
        goto fail;
    }
    /* BOS/EOS: tokenizer_config.json, else the post-processor template */
    json_t *pp = json_object_get(tj, "post_processor");
    json_t *single = json_object_get(pp, "single");
    bool tmpl_bos = false, tmpl_eos = false;
    if (json_is_array(single) && json_array_size(single) > 0) {
        json_t *first = json_object_get(json_array_get(single, 0), "SpecialToken");
        json_t *last = json_object_get(json_array_get(single, json_array_size(single) - 1), "SpecialToken");
        if (first && jstr(first, "id")) {
            t->bos = tok_lookup_raw_pending(t, jstr(first, "id"));
            tmpl_bos = true;
        }
        if (last && json_array_size(single) > 1 && jstr(last, "id")) {
            t->eos = tok_lookup_raw_pending(t, jstr(last, "id"));
            tmpl_eos = true;
        }
    }
    (void)tmpl_eos;
    const char *bos = token_content(json_object_get(cj, "bos_token"));
    const char *eos = token_content(json_object_get(cj, "eos_token"));
    const char *unk = jstr(model, "unk_token");
    if (bos) t->bos = tok_lookup_raw_pending(t, bos);
    if (eos) t->eos = tok_lookup_raw_pending(t, eos);
    if (unk) t->unk = tok_lookup_raw_pending(t, unk);
    json_t *ab = json_object_get(cj, "add_bos_token"), *ae = json_object_get(cj, "add_eos_token");
    t->add_bos = ab ? json_is_true(ab) : tmpl_bos;
    t->add_eos = ae ? json_is_true(ae) : false;
    json_t *ct = json_object_get(cj, "chat_template");
    const char *tmpl = json_string_value(ct);
    if (json_is_array(ct)) {
        json_array_foreach(ct, i, e) {
            const char *name = jstr(e, "name");
            if (name && !strcmp(name, "default")) tmpl = jstr(e, "template");
        }
    }
    if (tmpl && !(t->chat_template = strdup(tmpl))) {
        st = pg_fail(PAGODA_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((st = tok_finish(t))) goto fail;
    if (merges) {
        if ((st = tok_merges_init(t, (int64_t)json_array_size(merges)))) goto fail;
        json_array_foreach(merges, i, e) {
            const char *a, *b;
            size_t na, nb;
            if (json_is_string(e)) {
                const char *s = json_string_value(e);
                size_t n = json_string_length(e);
                const char *sp = n > 1 ? memchr(s + 1, ' ', n - 1) : NULL;
                if (!sp) {
                    st = pg_fail(PAGODA_ERR_FORMAT, "tokenizer.json: merges[%zu] has no space", i);
                    goto fail;
                }
                a = s, na = (size_t)(sp - s), b = sp + 1, nb = n - na - 1;
            } else if (json_is_array(e) && json_array_size(e) == 2 && json_is_string(json_array_get(e, 0)) &&
                       json_is_string(json_array_get(e, 1))) {
                a = json_string_value(json_array_get(e, 0));
                na = json_string_length(json_array_get(e, 0));
                b = json_string_value(json_array_get(e, 1));
                nb = json_string_length(json_array_get(e, 1));
            } else {
                st = pg_fail(PAGODA_ERR_FORMAT, "tokenizer.json: merges[%zu] is neither \"a b\" nor [a, b]", i);
                goto fail;
            }
            if ((st = tok_add_merge(t, a, na, b, nb, (int32_t)i))) goto fail;
        }
    }
    json_decref(tj);
    json_decref(cj);
    *out = t;
    return PAGODA_OK;
fail:
    json_decref(tj);
    json_decref(cj);
    tok_free(t);
    return st;
}
