/* pagoda_model_*: a loaded model with its tokenizer, and the text-side helpers the server needs
 * (tokenize, detokenize, chat template). */
#include "engine/model_api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>

#include "core/log.h"
#include "template/chat_template.h"

/* A token id if text is exactly one special token, else -1. */
static int32_t single_token(const pg_tokenizer *t, const char *text) {
    int32_t *ids = NULL;
    size_t n = 0;
    int32_t id = -1;
    if (tok_encode(t, text, strlen(text), false, true, &ids, &n) == PAGODA_OK && n == 1) id = ids[0];
    free(ids);
    return id;
}

/* Fill-in-the-middle tokens: GGUF metadata when present, else the spellings models use. */
/* The first of names that is one special token (-1 if none). */
static int32_t first_token(const pg_tokenizer *t, const char *const *names, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int32_t id = single_token(t, names[i]);
        if (id >= 0) return id;
    }
    return -1;
}

/* Repository-level FIM tokens: GGUF metadata when present, else the spellings models use
 * (llama.cpp's list, with StarCoder2's <repo_name> and <file_sep>). */
static void find_fim_repo(pagoda_model *pm) {
    static const char *const rep[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", "<repo_name>"};
    static const char *const sep[] = {"<|file_sep|>", "<file_sep>"};
    const gguf_file *g = pm->m ? pm->m->gguf : pm->vocab_gguf;
    uint32_t a;
    pm->fim_repo = pm->fim_sep = -1;
    if (g && gguf_get_u32(g, "tokenizer.ggml.fim_rep_token_id", &a) && a < (uint32_t)tok_n_vocab(pm->tok))
        pm->fim_repo = (int32_t)a;
    else pm->fim_repo = first_token(pm->tok, rep, sizeof rep / sizeof rep[0]);
    if (g && gguf_get_u32(g, "tokenizer.ggml.fim_sep_token_id", &a) && a < (uint32_t)tok_n_vocab(pm->tok))
        pm->fim_sep = (int32_t)a;
    else pm->fim_sep = first_token(pm->tok, sep, sizeof sep / sizeof sep[0]);
}

static void find_fim(pagoda_model *pm) {
    find_fim_repo(pm);
    static const char *const names[][3] = {
        {"<fim_prefix>", "<fim_suffix>", "<fim_middle>"},       /* StarCoder, SmolLM */
        {"<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"}, /* Qwen2.5-Coder */
        {"<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"},    /* DeepSeek-Coder */
        {"<PRE>", "<SUF>", "<MID>"},                            /* CodeLlama */
    };
    pm->fim_prefix = pm->fim_suffix = pm->fim_middle = -1;
    const gguf_file *g = pm->m ? pm->m->gguf : pm->vocab_gguf;
    uint32_t a, b, c;
    if (g && gguf_get_u32(g, "tokenizer.ggml.fim_pre_token_id", &a) && gguf_get_u32(g, "tokenizer.ggml.fim_suf_token_id", &b) &&
        gguf_get_u32(g, "tokenizer.ggml.fim_mid_token_id", &c) && a < (uint32_t)tok_n_vocab(pm->tok) &&
        b < (uint32_t)tok_n_vocab(pm->tok) && c < (uint32_t)tok_n_vocab(pm->tok)) {
        pm->fim_prefix = (int32_t)a, pm->fim_suffix = (int32_t)b, pm->fim_middle = (int32_t)c;
        return;
    }
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        int32_t p = single_token(pm->tok, names[i][0]), s = single_token(pm->tok, names[i][1]),
                m = single_token(pm->tok, names[i][2]);
        if (p >= 0 && s >= 0 && m >= 0) {
            pm->fim_prefix = p, pm->fim_suffix = s, pm->fim_middle = m;
            return;
        }
    }
}

static void count_params(const pg_weight *w, void *user) {
    if (w->data) *(int64_t *)user += w->n_in * w->n_out;
}

pagoda_status pagoda_model_load(const char *path, pagoda_model **out) {
    *out = NULL;
    pagoda_model *pm = calloc(1, sizeof *pm);
    if (!pm) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    pagoda_status st = model_load(path, &pm->m);
    if (st == PAGODA_OK) {
        /* token-id-only models (synthetic benchmarks shapes, bare fixtures) load without one */
        struct stat sb;
        char tj[1100];
        snprintf(tj, sizeof tj, "%s/tokenizer.json", path);
        if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            if (stat(tj, &sb) == 0) st = tok_load_hf(path, &pm->tok);
        } else {
            const char *kind = gguf_get_str(pm->m->gguf, "tokenizer.ggml.model");
            const gguf_kv *toks = gguf_find_kv(pm->m->gguf, "tokenizer.ggml.tokens");
            if (kind && strcmp(kind, "none")) st = tok_load_gguf(pm->m->gguf, &pm->tok);
            else if (toks && (toks->type != GGUF_TYPE_ARRAY || toks->arr_n > (uint64_t)pm->m->cfg.n_vocab))
                /* no tokenizer is used, but a token list that cannot belong to this model means a
                 * broken file rather than a token-ids-only one */
                st = pg_fail(PAGODA_ERR_FORMAT, "%s: tokenizer.ggml.model is '%s' but tokenizer.ggml.tokens "
                             "(%llu entries) does not fit the model's vocabulary of %d", path, kind ? kind : "(missing)",
                             toks->type == GGUF_TYPE_ARRAY ? (unsigned long long)toks->arr_n : 0ull,
                             pm->m->cfg.n_vocab);
        }
        if (st == PAGODA_OK && !pm->tok) pg_log(PAGODA_LOG_WARN, "%s has no tokenizer: token ids in and out only", path);
    }
    if (st == PAGODA_OK && pm->tok && tok_n_vocab(pm->tok) > pm->m->cfg.n_vocab)
        st = pg_fail(PAGODA_ERR_FORMAT, "tokenizer has %d tokens but the model's vocabulary is %d",
                     tok_n_vocab(pm->tok), pm->m->cfg.n_vocab);
    if (st) {
        pagoda_model_free(pm);
        return st;
    }
    if (pm->tok) find_fim(pm);
    else pm->fim_prefix = pm->fim_suffix = pm->fim_middle = pm->fim_repo = pm->fim_sep = -1;
    model_for_each_weight(pm->m, count_params, &pm->n_params);
    pm->n_params += pm->m->tok_embd.n_in * pm->m->tok_embd.n_out - (pm->m->tok_embd.data ? pm->m->tok_embd.n_in : 0);
    *out = pm;
    return PAGODA_OK;
}

void pagoda_model_free(pagoda_model *pm) {
    if (!pm) return;
    gr_vocab_free(pm->gvocab);
    free(pm->chat_template);
    tok_free(pm->tok);
    model_free(pm->m);
    gguf_close(pm->vocab_gguf);
    free(pm);
}

void pagoda_model_get_info(const pagoda_model *pm, pagoda_model_info *info) {
    memset(info, 0, sizeof *info);
    if (pm->m) {
        info->arch = pm->m->cfg.arch_name;
        info->path = pm->m->path;
        info->n_ctx_train = pm->m->cfg.n_ctx_train;
        info->n_vocab = pm->m->cfg.n_vocab;
        info->n_params = pm->n_params;
        info->weight_bytes = model_weight_bytes(pm->m);
    } else {
        info->n_vocab = tok_n_vocab(pm->tok);
    }
    info->chat_template = pm->chat_template ? pm->chat_template : pm->tok ? tok_chat_template(pm->tok) : NULL;
    info->bos = pm->tok ? tok_bos(pm->tok) : -1;
    info->eos = pm->tok ? tok_eos(pm->tok) : -1;
    info->fim_prefix = pm->fim_prefix, info->fim_suffix = pm->fim_suffix, info->fim_middle = pm->fim_middle;
    info->fim_repo = pm->fim_repo, info->fim_sep = pm->fim_sep;
}

pagoda_status pagoda_tokenize(const pagoda_model *pm, const char *text, size_t len, int add_special, int parse_special,
                              int32_t **ids, size_t *n_ids) {
    *ids = NULL, *n_ids = 0;
    if (!pm->tok) return pg_fail(PAGODA_ERR_UNSUPPORTED, "this model has no tokenizer: send token ids");
    return tok_encode(pm->tok, text, len, add_special != 0, parse_special != 0, ids, n_ids);
}

pagoda_status pagoda_detokenize(const pagoda_model *pm, const int32_t *ids, size_t n, int skip_special, char **text,
                                size_t *len) {
    *text = NULL, *len = 0;
    if (!pm->tok) return pg_fail(PAGODA_ERR_UNSUPPORTED, "this model has no tokenizer");
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= tok_n_vocab(pm->tok))
            return pg_fail(PAGODA_ERR_INVALID, "token id %d out of range [0, %d)", ids[i], tok_n_vocab(pm->tok));
    return tok_decode(pm->tok, ids, n, skip_special != 0, text, len);
}

size_t pagoda_token_text(const pagoda_model *pm, int32_t id, char *buf, size_t cap) {
    char *text = NULL;
    size_t len = 0;
    if (!pm->tok || id < 0 || id >= tok_n_vocab(pm->tok) || tok_decode(pm->tok, &id, 1, false, &text, &len)) {
        if (cap) buf[0] = 0;
        return 0;
    }
    if (cap) {
        size_t n = len < cap - 1 ? len : cap - 1;
        memcpy(buf, text, n);
        buf[n] = 0;
    }
    free(text);
    return len;
}

int pagoda_token_is_eog(const pagoda_model *pm, int32_t id) {
    return pm->tok && id >= 0 && id < tok_n_vocab(pm->tok) && tok_is_eog(pm->tok, id);
}

/* mask NULL: the text only; otherwise also which bytes came from the messages and tools */
static pagoda_status chat_render(const pagoda_model *pm, const char *messages_json, const char *tools_json,
                                 int add_generation_prompt, char **text, unsigned char **mask) {
    *text = NULL;
    const char *tmpl = pm->chat_template ? pm->chat_template : pm->tok ? tok_chat_template(pm->tok) : NULL;
    if (!tmpl) return pg_fail(PAGODA_ERR_UNSUPPORTED, "this model has no chat template");
    size_t l;
    const char *bos = tok_bos(pm->tok) >= 0 ? tok_piece(pm->tok, tok_bos(pm->tok), &l) : NULL;
    const char *eos = tok_eos(pm->tok) >= 0 ? tok_piece(pm->tok, tok_eos(pm->tok), &l) : NULL;
    chat_template_input in = {.messages_json = messages_json, .tools_json = tools_json,
                              .add_generation_prompt = add_generation_prompt != 0, .bos_token = bos, .eos_token = eos};
    return chat_template_render_marked(tmpl, &in, text, mask);
}

pagoda_status pagoda_model_set_chat_template(pagoda_model *pm, const char *jinja_source) {
    if (!jinja_source || !*jinja_source) return pg_fail(PAGODA_ERR_INVALID, "chat template: empty");
    if (!pm->tok) return pg_fail(PAGODA_ERR_UNSUPPORTED, "chat template: the model has no tokenizer");
    /* checked by rendering a short conversation: a syntax error, or a template that fails on
     * plain user/assistant turns, is refused here rather than on every request */
    size_t l;
    const char *bos = tok_bos(pm->tok) >= 0 ? tok_piece(pm->tok, tok_bos(pm->tok), &l) : NULL;
    const char *eos = tok_eos(pm->tok) >= 0 ? tok_piece(pm->tok, tok_eos(pm->tok), &l) : NULL;
    chat_template_input in = {.messages_json = "[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":"
                                               "\"u\"},{\"role\":\"assistant\",\"content\":\"a\"},{\"role\":\"user\","
                                               "\"content\":\"v\"}]",
                              .add_generation_prompt = true, .bos_token = bos, .eos_token = eos};
    char *out = NULL;
    pagoda_status st = chat_template_render(jinja_source, &in, &out);
    free(out);
    if (st) {
        char why[512];
        snprintf(why, sizeof why, "%s", pagoda_last_error()); /* pg_fail writes the buffer it came from */
        return pg_fail(st, "%s%s", strncmp(why, "chat template", 13) ? "chat template: " : "", why);
    }
    char *copy = strdup(jinja_source);
    if (!copy) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    free(pm->chat_template);
    pm->chat_template = copy;
    return PAGODA_OK;
}

pagoda_status pagoda_chat_render(const pagoda_model *pm, const char *messages_json, const char *tools_json,
                                 int add_generation_prompt, char **text) {
    return chat_render(pm, messages_json, tools_json, add_generation_prompt, text, NULL);
}

pagoda_status pagoda_chat_tokenize(const pagoda_model *pm, const char *messages_json, const char *tools_json,
                                   int add_generation_prompt, int allow_special_in_content, int32_t **ids,
                                   size_t *n_ids) {
    *ids = NULL, *n_ids = 0;
    char *text = NULL;
    unsigned char *mask = NULL;
    pagoda_status st = chat_render(pm, messages_json, tools_json, add_generation_prompt, &text,
                                   allow_special_in_content ? NULL : &mask);
    if (st) return st;
    size_t n = 0;
    st = tok_encode_masked(pm->tok, text, strlen(text), true, true, mask, ids, &n);
    free(text);
    free(mask);
    if (st) return st;
    /* a template that writes the BOS text itself would get a second one from add_special */
    int32_t bos = tok_bos(pm->tok);
    if (n >= 2 && bos >= 0 && (*ids)[0] == bos && (*ids)[1] == bos) memmove(*ids, *ids + 1, --n * sizeof **ids);
    *n_ids = n;
    return PAGODA_OK;
}

void pagoda_free(void *p) { free(p); }

pagoda_status pagoda_model_load_vocab(const char *path, pagoda_model **out) {
    *out = NULL;
    if (!path) return pg_fail(PAGODA_ERR_INVALID, "pagoda_model_load_vocab: path is NULL");
    pagoda_model *pm = calloc(1, sizeof *pm);
    if (!pm) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    struct stat sb;
    pagoda_status st;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        st = tok_load_hf(path, &pm->tok);
    } else if ((st = gguf_open(path, &pm->vocab_gguf)) == PAGODA_OK) {
        st = tok_load_gguf(pm->vocab_gguf, &pm->tok);
    }
    if (st) {
        pagoda_model_free(pm);
        return st;
    }
    find_fim(pm);
    *out = pm;
    return PAGODA_OK;
}

const char *pagoda_token_piece(const pagoda_model *pm, int32_t id, size_t *len) {
    *len = 0;
    if (!pm->tok || id < 0 || id >= tok_n_vocab(pm->tok)) return NULL;
    return tok_piece(pm->tok, id, len);
}

static void count_dtype(const pg_weight *w, void *user) {
    if (w->data && w->n_out > 1 && w->dtype >= 0 && w->dtype < PAGODA_DTYPE_COUNT) ((int *)user)[w->dtype]++;
}

void pagoda_model_get_facts(const pagoda_model *pm, pagoda_model_facts *f) {
    memset(f, 0, sizeof *f);
    f->has_tokenizer = pm->tok != NULL;
    f->eos_config = -1;
    if (!pm->m) return;
    const pg_model_config *c = &pm->m->cfg;
    f->has_weights = 1;
    f->n_layer = c->n_layer, f->n_embd = c->n_embd, f->n_head = c->n_head, f->n_head_kv = c->n_head_kv;
    f->n_ff = c->n_ff;
    f->eos_config = c->eos_id >= 0 && c->eos_id < c->n_vocab ? c->eos_id : -1;
    int counts[PAGODA_DTYPE_COUNT] = {0};
    model_for_each_weight(pm->m, count_dtype, counts);
    int best = 0;
    for (int t = 1; t < PAGODA_DTYPE_COUNT; t++)
        if (counts[t] > counts[best]) best = t;
    f->weight_dtype = (pagoda_dtype)best;
}

void pagoda_model_prefault(const pagoda_model *pm, void (*progress)(uint64_t done, uint64_t total, void *user),
                           void *user) {
    if (pm->m) model_prefault(pm->m, progress, user);
}

void pagoda_model_get_embedding_info(const pagoda_model *pm, pagoda_embedding_info *info) {
    memset(info, 0, sizeof *info);
    if (!pm || !pm->m) return;
    const pg_model_config *c = &pm->m->cfg;
    info->n_embd = c->n_embd;
    info->pooling = (pagoda_pooling)c->pooling;
    info->has_lm_head = pm->m->output.data != NULL;
    /* a package without a Normalize module gives raw vectors; everything else unit vectors */
    info->normalize = c->embedding_package && pm->m->format == MODEL_FORMAT_HF ? c->pool_normalize : 1;
    info->is_embedding_model = c->embedding_package || !info->has_lm_head;
}
