/* Tokenizer from GGUF metadata (tokenizer.ggml.*), as llama.cpp writes it. */
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "tokenizer/tok_internal.h"

static int32_t get_id(const gguf_file *f, const char *key, int32_t n_vocab) {
    int64_t v;
    if (!gguf_get_i64(f, key, &v) || v < 0 || v >= n_vocab) return -1;
    return (int32_t)v;
}

static const gguf_kv *get_arr(const gguf_file *f, const char *key, gguf_type ty, uint64_t n, pagoda_status *st) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) return NULL;
    if (kv->type != GGUF_TYPE_ARRAY || kv->arr_type != ty || (n && kv->arr_n != n)) {
        *st = pg_fail(PAGODA_ERR_FORMAT, "tokenizer: %s: expected an array of %llu %s", key, (unsigned long long)n,
                      gguf_type_name(ty));
    }
    return kv;
}

pagoda_status tok_load_gguf(const gguf_file *f, pg_tokenizer **out) {
    *out = NULL;
    pagoda_status st = PAGODA_OK;
    pg_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    tok_init_defaults(t);
    const char *model = gguf_get_str(f, "tokenizer.ggml.model");
    if (!model) {
        st = pg_fail(PAGODA_ERR_FORMAT, "tokenizer: tokenizer.ggml.model missing");
        goto fail;
    }
    if (!strcmp(model, "gpt2")) {
        t->kind = TOK_BPE;
        t->byte_level = true;
        const char *pre = gguf_get_str(f, "tokenizer.ggml.pre");
        if ((st = tok_pre_from_name(t, pre ? pre : "default"))) goto fail;
    } else if (!strcmp(model, "llama")) {
        t->kind = TOK_SPM;
        t->byte_fallback = true;
        t->add_space_prefix = true;
        t->add_bos = true;
    } else {
        st = pg_fail(PAGODA_ERR_UNSUPPORTED, "tokenizer: unsupported tokenizer.ggml.model '%s'", model);
        goto fail;
    }
    const gguf_kv *tokens = get_arr(f, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, 0, &st);
    if (st) goto fail;
    if (!tokens) {
        st = pg_fail(PAGODA_ERR_FORMAT, "tokenizer: tokenizer.ggml.tokens missing");
        goto fail;
    }
    if (tokens->arr_n > TOK_MAX_VOCAB) {
        st = pg_fail(PAGODA_ERR_FORMAT, "tokenizer: %llu tokens (max %d)", (unsigned long long)tokens->arr_n, TOK_MAX_VOCAB);
        goto fail;
    }
    if ((st = tok_alloc(t, (int64_t)tokens->arr_n))) goto fail;
    for (int32_t i = 0; i < t->n_vocab; i++)
        if ((st = tok_set_piece(t, i, tokens->arr_str[i], (size_t)tokens->arr_str_len[i]))) goto fail;
    const gguf_kv *types = get_arr(f, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, tokens->arr_n, &st);
    if (st) goto fail;
    if (types) {
        for (int32_t i = 0; i < t->n_vocab; i++) {
            int32_t ty;
            memcpy(&ty, (const char *)types->arr_data + 4 * (size_t)i, 4);
            t->type[i] = (ty >= TOK_T_NORMAL && ty <= TOK_T_BYTE) ? (uint8_t)ty : TOK_T_NORMAL;
        }
    }
    const gguf_kv *scores = get_arr(f, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, tokens->arr_n, &st);
    if (st) goto fail;
    if (t->kind == TOK_SPM) {
        t->score = calloc((size_t)t->n_vocab, sizeof *t->score);
        if (!t->score) {
            st = pg_fail(PAGODA_ERR_NOMEM, "out of memory");
            goto fail;
        }
        if (scores) memcpy(t->score, scores->arr_data, 4 * (size_t)t->n_vocab);
    }
    t->bos = get_id(f, "tokenizer.ggml.bos_token_id", t->n_vocab);
    t->eos = get_id(f, "tokenizer.ggml.eos_token_id", t->n_vocab);
    t->eot = get_id(f, "tokenizer.ggml.eot_token_id", t->n_vocab);
    t->eom = get_id(f, "tokenizer.ggml.eom_token_id", t->n_vocab);
    t->unk = get_id(f, "tokenizer.ggml.unknown_token_id", t->n_vocab);
    t->pad = get_id(f, "tokenizer.ggml.padding_token_id", t->n_vocab);
    bool b;
    if (gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &b)) t->add_bos = b;
    if (gguf_get_bool(f, "tokenizer.ggml.add_eos_token", &b)) t->add_eos = b;
    if (gguf_get_bool(f, "tokenizer.ggml.add_space_prefix", &b) && t->kind == TOK_SPM) t->add_space_prefix = b;
    const char *tmpl = gguf_get_str(f, "tokenizer.chat_template");
    if (tmpl && !(t->chat_template = strdup(tmpl))) {
        st = pg_fail(PAGODA_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((st = tok_finish(t))) goto fail;
    if (t->kind == TOK_BPE) {
        const gguf_kv *merges = get_arr(f, "tokenizer.ggml.merges", GGUF_TYPE_STRING, 0, &st);
        if (st) goto fail;
        if (!merges) {
            st = pg_fail(PAGODA_ERR_FORMAT, "tokenizer: tokenizer.ggml.merges missing for a BPE vocabulary");
            goto fail;
        }
        if ((st = tok_merges_init(t, (int64_t)merges->arr_n))) goto fail;
        for (uint64_t i = 0; i < merges->arr_n; i++) {
            const char *s = merges->arr_str[i];
            size_t n = (size_t)merges->arr_str_len[i];
            const char *sp = n > 1 ? memchr(s + 1, ' ', n - 1) : NULL; /* first space after the first char */
            if (!sp) {
                st = pg_fail(PAGODA_ERR_FORMAT, "tokenizer: merge %llu has no space", (unsigned long long)i);
                goto fail;
            }
            size_t na = (size_t)(sp - s);
            if ((st = tok_add_merge(t, s, na, sp + 1, n - na - 1, (int32_t)i))) goto fail;
        }
    }
    *out = t;
    return PAGODA_OK;
fail:
    tok_free(t);
    return st;
}
