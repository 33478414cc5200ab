/* `pagoda quantize HF_DIR OUT TYPE`, first step: the Hugging Face folder as the F32 GGUF that
 * llama.cpp's convert_hf_to_gguf.py --outtype f32 writes, for the architectures pagoda runs. The
 * conventions are those of tests/python/test_hf_to_gguf.py (which pagoda's GGUF loader is tested
 * against):
 *  - architecture: llama (mistral too), qwen2, qwen3, starcoder2, gpt_bigcode as "starcoder"; keys
 *    <arch>.context_length, embedding_length, feed_forward_length, block_count,
 *    attention.head_count, attention.head_count_kv, (rope models) attention.key_length,
 *    rope.dimension_count, rope.freq_base, the norm epsilon (layer_norm_epsilon for LayerNorm
 *    models, layer_norm_rms_epsilon else), <arch>.vocab_size; linear rope scaling as
 *    rope.scaling.type/factor; llama3 rope scaling as the rope_freqs.weight tensor (one factor per
 *    rotated pair, llama.cpp's formula).
 *  - tensors: the weight-role table's (model/weight_roles.c) GGUF names, every value as F32; llama
 *    (and mistral) q/k rows permuted from Hugging Face's rotate-half layout to the interleaved
 *    pairs llama.cpp's rope reads (biases too, as the converter does); gpt_bigcode's per-head
 *    c_attn rows (multi_query false) regrouped q | k | v (the model loader does that already); a
 *    tied output layer is not written. A tensor of the checkpoint that no role takes is an error.
 *  - tokenizer (with a tokenizer.json; none without): byte-level BPE only, as convert_hf_to_gguf's
 *    _set_vocab_gpt2 writes it: tokenizer.ggml.model "gpt2", .pre, .tokens (config.json
 *    vocab_size of them, "[PADn]" for ids the tokenizer lacks), .token_type (1 normal, 3 control:
 *    special added tokens and ones that look special "<|...|>", 4 user-defined), .merges "a b",
 *    bos/eos/unk/sep/pad/cls/mask ids, add_bos/add_eos, chat_template (gguf-py's SpecialVocab).
 *    The pre name, which llama.cpp finds by hashing a tokenization, is the pagoda family
 *    (tokenizer/pre_spec.c) whose pre-tokenizer splits a probe text exactly as tokenizer.json's
 *    does, with the same ignore_merges; no such family, a normalizer other than NFC, or a
 *    SentencePiece-style tokenizer is refused. */
#include "quantize_hf.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/clock.h"
#include "core/dtype.h"
#include "core/log.h"
#include "format/gguf.h"
#include "format/safetensors.h"
#include "kernels/kernels.h"
#include "model/model.h"
#include "model/weight_roles.h"
#include "tokenizer/tok_internal.h"

/* prints "pagoda quantize: <message>" and returns 1 */
__attribute__((format(printf, 1, 2))) static int err(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("pagoda quantize: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}
#define ERR err

bool quantize_hf_is_dir(const char *path) {
    struct stat s;
    return stat(path, &s) == 0 && S_ISDIR(s.st_mode);
}

static bool file_exists(const char *dir, const char *name) {
    char p[4096];
    struct stat s;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &s) == 0 && S_ISREG(s.st_mode);
}

static json_t *load_json(const char *dir, const char *name) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return json_load_file(p, 0, NULL);
}

static const char *gguf_arch(pg_arch a) {
    switch (a) {
    case ARCH_LLAMA: return "llama";
    case ARCH_QWEN2: return "qwen2";
    case ARCH_QWEN3: return "qwen3";
    case ARCH_STARCODER2: return "starcoder2";
    case ARCH_GPT_BIGCODE: return "starcoder";
    }
    return NULL;
}

/* ---- tokenizer ---- */

/* llama.cpp's chktxt (convert_hf_to_gguf_update.py) plus code and more scripts */
static const char k_probe[] =
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\xF0\x9F\x9A\x80 (normal) \xF0\x9F\x98\xB6\xE2\x80\x8D"
    "\xF0\x9F\x8C\xAB\xEF\xB8\x8F (multiple emojis concatenated) \xE2\x9C\x85 \xF0\x9F\xA6\x99\xF0\x9F\xA6\x99 "
    "3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
    "\xE1\x9E\x80\xE1\x9E\xB6\xE1\x9E\x93\xE1\x9F\x8B\xE1\x9E\x8F\xE1\x9F\x82\xE1\x9E\x96\xE1\x9E\xB7\xE1\x9E\x9F"
    "\xE1\x9F\x81\xE1\x9E\x9F\xE1\x9E\xA2\xE1\x9E\xB6\xE1\x9E\x85\xF0\x9F\x98\x81 ?\xE6\x88\x91\xE6\x83\xB3\xE5\x9C\xA8"
    "apple\xE5\xB7\xA5\xE4\xBD\x9C" "1314151\xE5\xA4\xA9\xEF\xBD\x9E ------======= "
    "\xD0\xBD\xD0\xB5\xD1\x89\xD0\xBE \xD0\xBD\xD0\xB0 \xD0\x91\xD1\x8A\xD0\xBB\xD0\xB3\xD0\xB0\xD1\x80\xD1\x81\xD0\xBA"
    "\xD0\xB8 ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll "
    "make it, 'D you like some tea? We'Ve a'lL\n"
    "def f(x, y=2):\r\n    return x**2 + y  # note\n\tif a<=b and c!=d: print(\"ok\")  \n\n\n}\n"
    "Hello WORLD HeLLo camelCase snake_case \xC3\x89LAN \xC3\xA9lan na\xC3\xAFve e\xCC\x81t\xC3\xA9 "
    "\xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4 \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xAE\xE3\x83\x86\xE3\x82\xAD"
    "\xE3\x82\xB9\xE3\x83\x88 \xEF\xBC\xA1\xEF\xBC\xA2\xEF\xBC\xA3\xEF\xBC\x91\xEF\xBC\x92 \xC2\xBD \xC2\xB2 "
    "\xE2\x85\xAB \xE2\x80\x98q\xE2\x80\x99 \xE2\x80\x9C" "d\xE2\x80\x9D \xE2\x80\x94 \xE2\x80\xA6 \xC2\xBFQu\xC3\xA9?"
    "\xC2\xA0x \xD9\x85\xD8\xB1\xD8\xAD\xD8\xA8\xD8\xA7 \xE0\xA4\xA8\xE0\xA4\xAE\xE0\xA4\xB8\xE0\xA5\x8D\xE0\xA4\xA4"
    "\xE0\xA5\x87 <sentinel:12> 12,345.67 $9 @user #tag a/b\\c ~x^y|z\n";

typedef struct {
    uint8_t *b;
    size_t n, cap;
} pbuf;

static pagoda_status pb_put(pbuf *p, const void *s, size_t n) {
    if (p->n + n > p->cap) {
        size_t c = p->cap ? p->cap : 4096;
        while (c < p->n + n) c *= 2;
        uint8_t *nb = realloc(p->b, c);
        if (!nb) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
        p->b = nb;
        p->cap = c;
    }
    memcpy(p->b + p->n, s, n);
    p->n += n;
    return PAGODA_OK;
}

/* each piece as its raw bytes (byte-level stand-in chars mapped back), after its length */
static pagoda_status probe_piece(void *ctx, const char *s, size_t n, bool mapped) {
    pbuf *p = ctx;
    size_t at = p->n;
    uint32_t len = 0;
    pagoda_status st = pb_put(p, &len, sizeof len);
    for (size_t i = 0; i < n && !st;) {
        size_t l = tok_utf8_len((uint8_t)s[i]);
        if (i + l > n) l = n - i;
        int byte = -1;
        if (mapped) {
            uint32_t cp = l == 1 ? (uint8_t)s[i] : (uint32_t)(s[i] & (0xFF >> (l + 1)));
            for (size_t k = 1; k < l; k++) cp = cp << 6 | ((uint8_t)s[i + k] & 0x3F);
            byte = tok_char_byte(cp);
        }
        if (byte >= 0) {
            uint8_t b = (uint8_t)byte;
            st = pb_put(p, &b, 1);
            len++;
        } else {
            st = pb_put(p, s + i, l);
            len += (uint32_t)l;
        }
        i += l;
    }
    if (!st) memcpy(p->b + at, &len, sizeof len);
    return st;
}

/* the family whose pre-tokenizer cuts the probe as t's does (and with t's ignore_merges) */
static const char *match_pre(const pg_tokenizer *t) {
    pbuf want = {0};
    const char *found = NULL;
    if (tok_pretokenize(t, k_probe, sizeof k_probe - 1, probe_piece, &want)) goto done;
    bool im;
    for (int f = 0; !found; f++) {
        const char *name = tok_pre_family(f, &im);
        if (!name) break;
        if (im != t->ignore_merges) continue;
        pg_tokenizer z;
        memset(&z, 0, sizeof z);
        tok_init_defaults(&z);
        pbuf got = {0};
        if (!tok_pre_from_name(&z, name) && !tok_pretokenize(&z, k_probe, sizeof k_probe - 1, probe_piece, &got) &&
            got.n == want.n && !memcmp(got.b, want.b, got.n))
            found = strcmp(name, "default") ? name : "gpt-2"; /* llama.cpp's "default" is another split */
        tok_free_splits(&z);
        free(got.b);
    }
done:
    free(want.b);
    return found;
}

/* gguf-py's SpecialVocab.does_token_look_special */
static bool looks_special(const char *s, size_t n) {
    static const char *const k[] = {"<pad>", "<mask>", "<2mass>", "[@BOS@]"};
    for (size_t i = 0; i < sizeof k / sizeof *k; i++)
        if (strlen(k[i]) == n && !memcmp(s, k[i], n)) return true;
#define ENDS(pre, suf) (n >= strlen(pre) + strlen(suf) && !memcmp(s, pre, strlen(pre)) && \
                        !memcmp(s + n - strlen(suf), suf, strlen(suf)))
    return ENDS("<|", "|>") || ENDS("<\xEF\xBD\x9C", "\xEF\xBD\x9C>") || ENDS("<unused", ">");
#undef ENDS
}

static const char *token_content(json_t *v) {
    if (json_is_string(v)) return json_string_value(v);
    if (json_is_object(v)) return json_string_value(json_object_get(v, "content"));
    return NULL;
}

static bool str_eq(const char *a, const char *b) { return a && b && !strcmp(a, b); }

enum { SP_BOS, SP_EOS, SP_UNK, SP_SEP, SP_PAD, SP_CLS, SP_MASK, SP_EOT, SP_N };
static const char *const k_sp_name[SP_N] = {"bos", "eos", "unk", "sep", "pad", "cls", "mask", "eot"};
static const char *const k_sp_key[SP_N] = {
    "tokenizer.ggml.bos_token_id",       "tokenizer.ggml.eos_token_id",     "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.seperator_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.ggml.cls_token_id",
    "tokenizer.ggml.mask_token_id",      "tokenizer.ggml.eot_token_id"};

/* special token ids, add_bos/add_eos and the chat template, as gguf-py's SpecialVocab finds them */
static int special_vocab(gguf_writer *w, const char *dir, json_t *tj, json_t *tc, json_t *cfgj, int64_t n_vocab) {
    const char *content[SP_N] = {0};
    int64_t id[SP_N];
    int add[SP_N];
    for (int i = 0; i < SP_N; i++) id[i] = -1, add[i] = -1;
    for (int i = 0; i < SP_EOT; i++) {
        char key[32];
        snprintf(key, sizeof key, "%s_token", k_sp_name[i]);
        content[i] = token_content(json_object_get(tc, key));
    }
    if (tc && !content[SP_BOS] && content[SP_CLS]) content[SP_BOS] = content[SP_CLS];
    if (tc && !content[SP_EOS] && content[SP_SEP]) content[SP_EOS] = content[SP_SEP];
    json_t *pp = json_object_get(tj, "post_processor");
    if (json_is_object(pp)) {
        json_t *procs = json_object_get(pp, "processors"), *p;
        size_t np = json_is_array(procs) ? json_array_size(procs) : 1;
        for (size_t k = 0; k < np; k++) {
            p = json_is_array(procs) ? json_array_get(procs, k) : pp;
            const char *type = json_string_value(json_object_get(p, "type"));
            if (str_eq(type, "RobertaProcessing")) {
                add[SP_BOS] = add[SP_EOS] = add[SP_SEP] = 1;
                continue;
            }
            json_t *single = json_object_get(p, "single");
            if (!str_eq(type, "TemplateProcessing") || !json_is_array(single) || json_array_size(single) < 2) continue;
            const char *first = json_string_value(
                json_object_get(json_object_get(json_array_get(single, 0), "SpecialToken"), "id"));
            const char *last = json_string_value(json_object_get(
                json_object_get(json_array_get(single, json_array_size(single) - 1), "SpecialToken"), "id"));
            if (first && *first) {
                if (!tc) content[SP_BOS] = first;
                add[SP_BOS] = str_eq(first, content[SP_BOS]) || str_eq(first, content[SP_CLS]);
            }
            if (last && *last) {
                if (!tc) content[SP_EOS] = last;
                else if (!str_eq(last, content[SP_EOS])) content[SP_EOT] = content[SP_EOS], content[SP_EOS] = last;
                add[SP_EOS] = 1;
            }
        }
    }
    json_t *added = json_object_get(tj, "added_tokens");
    const char *tmpl = NULL;
    char *tmpl_file = NULL;
    json_t *tmpl_json = NULL;
    if (tc) {
        for (int i = 0; i < SP_N; i++) {
            char key[32];
            snprintf(key, sizeof key, "add_%s_token", k_sp_name[i]);
            json_t *a = json_object_get(tc, key);
            if (json_is_boolean(a)) add[i] = json_is_true(a);
            if (!content[i]) continue;
            size_t j;
            json_t *e;
            json_array_foreach(added, j, e) {
                if (str_eq(json_string_value(json_object_get(e, "content")), content[i])) {
                    json_int_t v = json_integer_value(json_object_get(e, "id"));
                    if (json_is_integer(json_object_get(e, "id")) && v >= 0 && v < n_vocab) id[i] = v;
                    break;
                }
            }
        }
        json_t *ct = json_object_get(tc, "chat_template");
        if (json_is_string(ct)) {
            tmpl = json_string_value(ct);
        } else if (json_is_array(ct)) {
            size_t j;
            json_t *e;
            json_array_foreach(ct, j, e) if (str_eq(json_string_value(json_object_get(e, "name")), "default"))
                tmpl = json_string_value(json_object_get(e, "template"));
        } else if (!ct && file_exists(dir, "chat_template.jinja")) {
            char p[4096];
            snprintf(p, sizeof p, "%s/chat_template.jinja", dir);
            FILE *f = fopen(p, "rb");
            if (f) {
                fseek(f, 0, SEEK_END);
                long sz = ftell(f);
                fseek(f, 0, SEEK_SET);
                if (sz >= 0 && (tmpl_file = calloc(1, (size_t)sz + 1)) && fread(tmpl_file, 1, (size_t)sz, f) == (size_t)sz)
                    tmpl = tmpl_file;
                fclose(f);
            }
        } else if (!ct && (tmpl_json = load_json(dir, "chat_template.json"))) {
            tmpl = json_string_value(json_object_get(tmpl_json, "chat_template"));
        }
    }
    for (int i = 0; i < SP_N; i++) { /* config.json's <typ>_token_id where still unset */
        char key[32];
        snprintf(key, sizeof key, "%s_token_id", k_sp_name[i]);
        json_t *v = json_object_get(cfgj, key);
        if (id[i] < 0 && json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) < n_vocab)
            id[i] = json_integer_value(v);
    }
    pagoda_status st = PAGODA_OK;
    for (int i = 0; i < SP_N && !st; i++)
        if (id[i] >= 0) st = gguf_writer_set_u32(w, k_sp_key[i], (uint32_t)id[i]);
    if (!st && add[SP_BOS] >= 0) st = gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", add[SP_BOS]);
    if (!st && add[SP_EOS] >= 0) st = gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", add[SP_EOS]);
    if (!st && add[SP_SEP] >= 0) st = gguf_writer_set_bool(w, "tokenizer.ggml.add_sep_token", add[SP_SEP]);
    if (!st && tmpl) st = gguf_writer_set_str(w, "tokenizer.chat_template", tmpl);
    free(tmpl_file);
    json_decref(tmpl_json);
    return st ? ERR("%s", pagoda_last_error()) : 0;
}

/* tokenizer.json's merges as "a b" strings (pairs joined, their spaces written U+0120 as gguf-py does) */
static int write_merges(gguf_writer *w, json_t *tj) {
    json_t *merges = json_object_get(json_object_get(tj, "model"), "merges");
    size_t n = json_is_array(merges) ? json_array_size(merges) : 0;
    if (!n) return 0;
    char **s = calloc(n, sizeof *s);
    uint64_t *len = calloc(n, sizeof *len);
    int rc = 0;
    if (!s || !len) {
        rc = ERR("out of memory");
        goto out;
    }
    for (size_t i = 0; i < n && !rc; i++) {
        json_t *e = json_array_get(merges, i);
        if (json_is_string(e)) {
            len[i] = json_string_length(e);
            if (!(s[i] = malloc(len[i] + 1))) rc = ERR("out of memory");
            else memcpy(s[i], json_string_value(e), len[i] + 1);
            continue;
        }
        if (!json_is_array(e) || json_array_size(e) != 2 || !json_is_string(json_array_get(e, 0)) ||
            !json_is_string(json_array_get(e, 1))) {
            rc = ERR("tokenizer.json: merges[%zu] is neither \"a b\" nor [a, b]", i);
            break;
        }
        size_t na = json_string_length(json_array_get(e, 0)), nb = json_string_length(json_array_get(e, 1));
        if (!(s[i] = malloc(2 * (na + nb) + 2))) {
            rc = ERR("out of memory");
            break;
        }
        size_t m = 0;
        for (int part = 0; part < 2; part++) {
            const char *p = json_string_value(json_array_get(e, (size_t)part));
            size_t pn = part ? nb : na;
            if (part) s[i][m++] = ' ';
            for (size_t k = 0; k < pn; k++) {
                if (p[k] == ' ') s[i][m++] = '\xC4', s[i][m++] = '\xA0';
                else s[i][m++] = p[k];
            }
        }
        s[i][m] = 0;
        len[i] = m;
    }
    if (!rc && gguf_writer_set_arr_str_n(w, "tokenizer.ggml.merges", (const char *const *)s, len, n))
        rc = ERR("%s", pagoda_last_error());
out:
    if (s)
        for (size_t i = 0; i < n; i++) free(s[i]);
    free(s);
    free(len);
    return rc;
}

static int write_tokenizer(gguf_writer *w, const char *dir, json_t *cfgj, int64_t n_vocab) {
    if (!file_exists(dir, "tokenizer.json")) {
        fprintf(stderr, "quantize: %s has no tokenizer.json: the GGUF gets no tokenizer\n", dir);
        return 0;
    }
    static const char k_refer[] = "; use llama.cpp's convert_hf_to_gguf.py";
    json_t *tj = load_json(dir, "tokenizer.json"), *tc = load_json(dir, "tokenizer_config.json");
    pg_tokenizer *t = NULL;
    char **tok = NULL;
    uint64_t *tok_len = NULL;
    int32_t *types = NULL;
    int rc = 1;
    if (!tj) {
        ERR("%s/tokenizer.json: not valid JSON", dir);
        goto out;
    }
    const char *mtype = json_string_value(json_object_get(json_object_get(tj, "model"), "type"));
    if (!str_eq(mtype, "BPE")) {
        ERR("%s/tokenizer.json: model type '%s': only byte-level BPE tokenizers are converted%s", dir,
            mtype ? mtype : "(none)", k_refer);
        goto out;
    }
    json_t *norm = json_object_get(tj, "normalizer");
    if (norm && !json_is_null(norm) && !str_eq(json_string_value(json_object_get(norm, "type")), "NFC")) {
        ERR("%s/tokenizer.json: normalizer '%s' is not converted (byte-level BPE without one or with NFC only)%s", dir,
            json_string_value(json_object_get(norm, "type")), k_refer);
        goto out;
    }
    if (tok_load_hf(dir, &t)) {
        ERR("%s: %s%s", dir, pagoda_last_error(), k_refer);
        goto out;
    }
    if (t->kind != TOK_BPE || !t->byte_level || t->spm_escape || t->byte_fallback) {
        ERR("%s/tokenizer.json: a SentencePiece-style BPE tokenizer (Metaspace / byte fallback) is not converted, only "
            "byte-level BPE%s", dir, k_refer);
        goto out;
    }
    if (t->n_vocab > n_vocab) {
        ERR("%s: tokenizer.json has %d tokens, config.json vocab_size is %lld", dir, t->n_vocab, (long long)n_vocab);
        goto out;
    }
    const char *pre = match_pre(t);
    if (!pre) {
        ERR("%s: tokenizer.json pre-tokenizer not recognised (no tokenizer.ggml.pre family splits text the same "
            "way)%s", dir, k_refer);
        goto out;
    }
    tok = calloc((size_t)n_vocab, sizeof *tok);
    tok_len = calloc((size_t)n_vocab, sizeof *tok_len);
    types = calloc((size_t)n_vocab, sizeof *types);
    if (!tok || !tok_len || !types) {
        ERR("out of memory");
        goto out;
    }
    int n_added = 0;
    for (int64_t i = 0; i < n_vocab; i++) {
        if (i >= t->n_vocab || (t->type[i] == TOK_T_UNUSED && !t->piece_len[i])) {
            char pad[32];
            tok_len[i] = (uint64_t)snprintf(pad, sizeof pad, "[PAD%lld]", (long long)i);
            tok[i] = strdup(pad);
            types[i] = TOK_T_UNUSED;
        } else {
            const char *p = t->piece[i];
            size_t n = t->piece_len[i];
            types[i] = TOK_T_NORMAL;
            if (t->type[i] == TOK_T_CONTROL || (t->type[i] == TOK_T_USER && looks_special(p, n))) {
                types[i] = TOK_T_CONTROL;
                n_added++;
            } else if (t->type[i] == TOK_T_USER) {
                types[i] = TOK_T_USER;
                n_added++;
            }
            tok[i] = malloc(n + 1);
            if (tok[i]) {
                size_t m = 0;
                for (size_t k = 0; k < n; k++) { /* user-defined tokens: "▁" pre-normalized to a space */
                    if (types[i] == TOK_T_USER && k + 3 <= n && !memcmp(p + k, "\xE2\x96\x81", 3)) {
                        tok[i][m++] = ' ';
                        k += 2;
                    } else {
                        tok[i][m++] = p[k];
                    }
                }
                tok[i][m] = 0;
                tok_len[i] = m;
            }
        }
        if (!tok[i]) {
            ERR("out of memory");
            goto out;
        }
    }
    pagoda_status st = gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    if (!st) st = gguf_writer_set_str(w, "tokenizer.ggml.pre", pre);
    if (!st) st = gguf_writer_set_arr_str_n(w, "tokenizer.ggml.tokens", (const char *const *)tok, tok_len, (uint64_t)n_vocab);
    if (!st) st = gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, (uint64_t)n_vocab);
    if (st) {
        ERR("%s", pagoda_last_error());
        goto out;
    }
    if (write_merges(w, tj) || special_vocab(w, dir, tj, tc, cfgj, n_vocab)) goto out;
    fprintf(stderr, "quantize: tokenizer: gpt2 (byte-level BPE), pre '%s', %lld tokens (%d added), %zu merges\n", pre,
            (long long)n_vocab, n_added, json_array_size(json_object_get(json_object_get(tj, "model"), "merges")));
    rc = 0;
out:
    if (tok)
        for (int64_t i = 0; i < n_vocab; i++) free(tok[i]);
    free(tok);
    free(tok_len);
    free(types);
    tok_free(t);
    json_decref(tj);
    json_decref(tc);
    return rc;
}

/* ---- weights ---- */

typedef struct {
    char name[96];
    const pg_weight *w; /* NULL: rope_freqs */
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    int permute_heads; /* > 0: llama q/k rows to interleaved pairs, this many heads */
} hf_tensor;

/* llama.cpp's llama3 rope_freqs: one factor per rotated pair */
static void llama3_freqs(const pg_model_config *c, float *out) {
    double base = c->rope_theta, factor = c->rope_factor, low = c->rope_low_freq, high = c->rope_high_freq,
           old = c->rope_orig_ctx;
    for (int i = 0; i < c->head_dim; i += 2) {
        double freq = 1.0 / pow(base, (double)i / c->head_dim), wavelen = 2 * M_PI / freq;
        if (wavelen < old / high) out[i / 2] = 1.0f;
        else if (wavelen > old / low) out[i / 2] = (float)factor;
        else {
            double smooth = (old / wavelen - low) / (high - low);
            out[i / 2] = (float)(1 / ((1 - smooth) / factor + smooth));
        }
    }
}

static pagoda_status write_keys(gguf_writer *w, const pg_model_config *c, const char *arch) {
    char k[96];
    pagoda_status st = gguf_writer_set_str(w, "general.architecture", arch);
#define U32(key, v) \
    if (!st) snprintf(k, sizeof k, "%s." key, arch), st = gguf_writer_set_u32(w, k, (uint32_t)(v))
#define F32(key, v) \
    if (!st) snprintf(k, sizeof k, "%s." key, arch), st = gguf_writer_set_f32(w, k, (v))
    U32("context_length", c->n_ctx_train);
    U32("embedding_length", c->n_embd);
    U32("feed_forward_length", c->n_ff);
    U32("block_count", c->n_layer);
    U32("attention.head_count", c->n_head);
    U32("attention.head_count_kv", c->n_head_kv);
    if (c->rope != ROPE_NONE) {
        U32("attention.key_length", c->head_dim);
        U32("rope.dimension_count", c->rope_dim);
        F32("rope.freq_base", c->rope_theta);
    }
    if (c->layernorm) {
        F32("attention.layer_norm_epsilon", c->norm_eps);
    } else {
        F32("attention.layer_norm_rms_epsilon", c->norm_eps);
    }
    if (!st && !strcmp(c->rope_scaling, "linear")) {
        snprintf(k, sizeof k, "%s.rope.scaling.type", arch);
        st = gguf_writer_set_str(w, k, "linear");
        F32("rope.scaling.factor", c->rope_factor);
    }
    U32("vocab_size", c->n_vocab);
#undef U32
#undef F32
    return st;
}

static void add_tensor(hf_tensor *ts, int *n, const pg_weight *w, const char *fmt, int layer, bool vector, int heads) {
    hf_tensor *t = &ts[(*n)++];
    snprintf(t->name, sizeof t->name, fmt, layer);
    t->w = w;
    t->n_dims = vector ? 1 : 2;
    t->ne[0] = w->n_in;
    t->ne[1] = vector ? 1 : w->n_out;
    t->ne[2] = t->ne[3] = 1;
    t->permute_heads = heads;
}

/* The model's weights with their GGUF names and shapes; *n_out entries. */
static hf_tensor *plan(const pg_model *m, int *n_out) {
    const pg_model_config *c = &m->cfg;
    int nl, ng;
    const pg_weight_role *lr = model_layer_roles(&nl), *gr = model_global_roles(&ng);
    hf_tensor *ts = calloc((size_t)(1 + ng + (int64_t)nl * c->n_layer), sizeof *ts);
    if (!ts) return NULL;
    int n = 0;
    if (!strcmp(c->rope_scaling, "llama3")) {
        hf_tensor *t = &ts[n++];
        snprintf(t->name, sizeof t->name, "rope_freqs.weight");
        t->n_dims = 1;
        t->ne[0] = c->head_dim / 2;
        t->ne[1] = t->ne[2] = t->ne[3] = 1;
    }
    for (int i = 0; i < ng; i++) {
        const pg_weight *w = role_weight_const(m, &gr[i]);
        if (!role_applies(&gr[i], c, false) || !w->data) continue;
        if (gr[i].tied && w->data == m->tok_embd.data) continue; /* tied: llama.cpp reads token_embd */
        add_tensor(ts, &n, w, gr[i].gguf, 0, gr[i].kind == ROLE_VECTOR || gr[i].kind == ROLE_BIAS, 0);
    }
    for (int l = 0; l < c->n_layer; l++) {
        const pg_layer_weights *L = &m->layers[l];
        bool fused = L->wqkv.data != NULL;
        for (int i = 0; i < nl; i++) {
            const pg_weight *w = role_weight_const(L, &lr[i]);
            if (!role_applies(&lr[i], c, fused) || !w->data) continue;
            int heads = 0;
            if (c->arch == ARCH_LLAMA && (w == &L->wq || w == &L->bq)) heads = c->n_head;
            if (c->arch == ARCH_LLAMA && (w == &L->wk || w == &L->bk)) heads = c->n_head_kv;
            add_tensor(ts, &n, w, lr[i].gguf, l, lr[i].kind == ROLE_VECTOR || lr[i].kind == ROLE_BIAS, heads);
        }
    }
    *n_out = n;
    return ts;
}

/* Every tensor of the checkpoint must have been taken by a role (as the converter's name map). */
static int check_all_used(const pg_model *m, const hf_tensor *ts, int n) {
    if (!m->st) return 0;
    for (int64_t i = 0; i < st_n_tensors(m->st); i++) {
        const char *name = st_tensor_at(m->st, i)->name;
        bool used = strstr(name, "rotary_emb.inv_freq") != NULL; /* a buffer llama.cpp's converter skips */
        for (int k = 0; k < n && !used; k++) used = ts[k].w && ts[k].w->name && !strcmp(ts[k].w->name, name);
        if (!used) return ERR("%s: tensor %s has no GGUF counterpart pagoda knows (%s)", m->path, name, m->cfg.arch_name);
    }
    return 0;
}

/* one tensor as F32 rows in out, llama q/k rows permuted */
static int to_f32(const hf_tensor *t, float *out, float *tmp) {
    const pg_weight *w = t->w;
    const int64_t rows = t->ne[1], n_in = t->ne[0];
    size_t row_bytes;
    if (!dtype_row_size(w->dtype, n_in, &row_bytes)) return ERR("%s: bad row size", t->name);
    const k_type_traits *tr = kref_traits(w->dtype);
    float *dst = t->permute_heads ? tmp : out;
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *src = (const uint8_t *)w->data + (size_t)r * row_bytes;
        if (w->dtype == PAGODA_DTYPE_F32) memcpy(dst + r * n_in, src, (size_t)n_in * sizeof(float));
        else if (tr && tr->to_float) tr->to_float(src, dst + r * n_in, n_in);
        else return ERR("%s: weights of type %s cannot be converted (F32, F16 or BF16 expected)", w->name,
                        dtype_name(w->dtype));
    }
    if (t->permute_heads) { /* vectors (biases) permute their elements: rows of 1 */
        int64_t nrow = t->n_dims == 1 ? n_in : rows, width = t->n_dims == 1 ? 1 : n_in;
        int64_t hd = nrow / t->permute_heads, half = hd / 2;
        if (hd * t->permute_heads != nrow || hd % 2) return ERR("%s: %lld rows do not split into %d heads of even size",
                                                                t->name, (long long)nrow, t->permute_heads);
        for (int64_t h = 0; h < t->permute_heads; h++)
            for (int64_t i = 0; i < half; i++)
                for (int64_t j = 0; j < 2; j++)
                    memcpy(out + (h * hd + 2 * i + j) * width, tmp + (h * hd + j * half + i) * width,
                           (size_t)width * sizeof(float));
    }
    return 0;
}

int quantize_hf_convert(const char *dir, const char *out) {
    if (!file_exists(dir, "config.json"))
        return ERR("%s: not a Hugging Face model folder (no config.json)", dir);
    json_error_t jerr;
    char cp[4096];
    snprintf(cp, sizeof cp, "%s/config.json", dir);
    json_t *cfgj = json_load_file(cp, 0, &jerr);
    if (!json_is_object(cfgj)) {
        json_decref(cfgj);
        return ERR("%s: not valid JSON (%s, line %d)", cp, jerr.text, jerr.line);
    }
    json_t *qc = json_object_get(cfgj, "quantization_config");
    if (qc && !json_is_null(qc)) {
        const char *method = json_string_value(json_object_get(qc, "quant_method"));
        ERR("%s is a quantized checkpoint (config.json quantization_config, quant_method '%s'): pagoda quantize "
            "needs the unquantized F32/F16/BF16 weights",
            dir, method ? method : "?");
        json_decref(cfgj);
        return 1;
    }
    pg_model *m = NULL;
    gguf_writer *w = NULL;
    hf_tensor *ts = NULL;
    float *buf = NULL, *tmp = NULL;
    int rc = 1, n = 0;
    double t0 = pg_now_s();
    if (model_load(dir, &m) != PAGODA_OK) {
        ERR("%s: %s", dir, pagoda_last_error());
        goto done;
    }
    if (m->format != MODEL_FORMAT_HF || m->qc) {
        ERR("%s: not an unquantized Hugging Face checkpoint", dir);
        goto done;
    }
    const pg_model_config *c = &m->cfg;
    const char *arch = gguf_arch(c->arch);
    if (!(ts = plan(m, &n))) {
        ERR("out of memory");
        goto done;
    }
    if (check_all_used(m, ts, n)) goto done;
    size_t max_el = 1;
    for (int i = 0; i < n; i++)
        if ((size_t)(ts[i].ne[0] * ts[i].ne[1]) > max_el) max_el = (size_t)(ts[i].ne[0] * ts[i].ne[1]);
    if (!(buf = malloc(max_el * sizeof *buf)) || !(tmp = malloc(max_el * sizeof *tmp)) || !(w = gguf_writer_create())) {
        ERR("out of memory");
        goto done;
    }
    if (write_keys(w, c, arch)) {
        ERR("%s", pagoda_last_error());
        goto done;
    }
    if (write_tokenizer(w, dir, cfgj, c->n_vocab)) goto done;
    for (int i = 0; i < n; i++)
        if (gguf_writer_add_tensor(w, ts[i].name, PAGODA_DTYPE_F32, ts[i].n_dims, ts[i].ne)) {
            ERR("%s", pagoda_last_error());
            goto done;
        }
    if (gguf_writer_begin(w, out)) {
        ERR("%s", pagoda_last_error());
        goto done;
    }
    fprintf(stderr, "quantize: %s (%s as GGUF '%s'): %d tensors to F32 first\n", dir, c->arch_name, arch, n);
    for (int i = 0; i < n; i++) {
        const hf_tensor *t = &ts[i];
        size_t nel = (size_t)(t->ne[0] * t->ne[1]);
        if (!t->w) llama3_freqs(c, buf);
        else if (to_f32(t, buf, tmp)) goto done;
        if (gguf_writer_write_tensor(w, buf, nel * sizeof *buf)) {
            ERR("%s", pagoda_last_error());
            goto done;
        }
        char shape[48];
        if (t->n_dims > 1) snprintf(shape, sizeof shape, "[%lld, %lld]", (long long)t->ne[0], (long long)t->ne[1]);
        else snprintf(shape, sizeof shape, "[%lld]", (long long)t->ne[0]);
        fprintf(stderr, "[%4d/%4d] %-32s %-5s -> F32   %-14s %s%s\n", i + 1, n, t->name,
                t->w ? dtype_name(t->w->dtype) : "-", shape, t->w ? t->w->name : "(llama3 rope scaling)",
                t->permute_heads ? " (q/k rows to llama.cpp's rope layout)" : "");
    }
    if (gguf_writer_end(w)) {
        ERR("%s", pagoda_last_error());
        goto done;
    }
    fprintf(stderr, "quantize: converted in %.2f s\n", pg_now_s() - t0);
    rc = 0;
done:
    gguf_writer_destroy(w);
    free(buf);
    free(tmp);
    free(ts);
    model_free(m);
    json_decref(cfgj);
    return rc;
}
