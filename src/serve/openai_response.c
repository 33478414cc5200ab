/* OpenAI response JSON and SSE framing (see openai_response.h). */
#include "serve/openai_response.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "serve/openai_request.h"

int oa_buf_append(oa_buf *b, const char *s, size_t n) {
    if (n > SIZE_MAX / 2 - b->len) return -1;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
    return 0;
}

void oa_buf_free(oa_buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

void oa_logprob_free(oa_logprob *lp) {
    if (!lp) return;
    free(lp->tok.text);
    for (int32_t i = 0; i < lp->n_top; i++) free(lp->top[i].text);
    free(lp->top);
    memset(lp, 0, sizeof *lp);
}

json_t *oa_json_text(const char *s, size_t len) {
    size_t ok = oa_utf8_valid_prefix(s, len);
    if (ok == len) return json_stringn(s, len);
    /* each bad byte becomes U+FFFD (3 bytes) */
    char *buf = malloc(len * 3 + 1);
    if (!buf) return NULL;
    size_t w = 0, i = 0;
    while (i < len) {
        size_t good = oa_utf8_valid_prefix(s + i, len - i);
        memcpy(buf + w, s + i, good);
        w += good;
        i += good;
        if (i < len) {
            memcpy(buf + w, "\xEF\xBF\xBD", 3);
            w += 3;
            i++;
        }
    }
    json_t *j = json_stringn(buf, w);
    free(buf);
    return j;
}

json_t *oa_error_body(const char *message, const char *type, const char *param, const char *code) {
    return json_pack("{s:{s:s, s:s, s:o, s:o}}", "error", "message", message ? message : "error", "type",
                     type ? type : "invalid_request_error", "param", param && *param ? json_string(param) : json_null(),
                     "code", code ? json_string(code) : json_null());
}

json_t *oa_usage(int64_t prompt, int64_t completion, int64_t cached) {
    return json_pack("{s:I, s:I, s:I, s:{s:I}}", "prompt_tokens", (json_int_t)prompt, "completion_tokens",
                     (json_int_t)completion, "total_tokens", (json_int_t)(prompt + completion), "prompt_tokens_details",
                     "cached_tokens", (json_int_t)cached);
}

static json_t *lp_value(float lp) {
    /* JSON has no -inf: clamp like OpenAI's -9999 floor */
    return json_real(isfinite(lp) ? lp : -9999.0);
}

static json_t *token_bytes(const oa_token *t) {
    json_t *a = json_array();
    for (size_t i = 0; a && i < t->len; i++) json_array_append_new(a, json_integer((unsigned char)t->text[i]));
    return a;
}

json_t *oa_logprobs_chat(const oa_logprob *lp, size_t n) {
    json_t *content = json_array();
    for (size_t i = 0; content && i < n; i++) {
        json_t *tops = json_array();
        for (int32_t k = 0; tops && k < lp[i].n_top; k++)
            json_array_append_new(tops, json_pack("{s:o, s:o, s:o}", "token", oa_json_text(lp[i].top[k].text, lp[i].top[k].len),
                                                  "logprob", lp_value(lp[i].top[k].logprob), "bytes",
                                                  token_bytes(&lp[i].top[k])));
        json_array_append_new(content, json_pack("{s:o, s:o, s:o, s:o}", "token", oa_json_text(lp[i].tok.text, lp[i].tok.len),
                                                 "logprob", lp_value(lp[i].tok.logprob), "bytes", token_bytes(&lp[i].tok),
                                                 "top_logprobs", tops ? tops : json_array()));
    }
    return json_pack("{s:o, s:n}", "content", content ? content : json_array(), "refusal");
}

json_t *oa_logprobs_completion(const oa_logprob *lp, size_t n, size_t text_offset) {
    json_t *tokens = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
    size_t off = text_offset;
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(tokens, oa_json_text(lp[i].tok.text, lp[i].tok.len));
        /* an echoed prompt's first token has no logprob: null, as OpenAI */
        json_array_append_new(lps, isnan(lp[i].tok.logprob) ? json_null() : lp_value(lp[i].tok.logprob));
        if (lp[i].n_top < 0) {
            json_array_append_new(tops, json_null());
            json_array_append_new(offs, json_integer((json_int_t)off));
            off += lp[i].tok.len;
            continue;
        }
        json_t *t = json_object();
        for (int32_t k = 0; t && k < lp[i].n_top; k++) {
            json_t *key = oa_json_text(lp[i].top[k].text, lp[i].top[k].len);
            if (key) json_object_set_new(t, json_string_value(key), lp_value(lp[i].top[k].logprob));
            json_decref(key);
        }
        json_array_append_new(tops, t);
        json_array_append_new(offs, json_integer((json_int_t)off));
        off += lp[i].tok.len;
    }
    return json_pack("{s:o, s:o, s:o, s:o}", "tokens", tokens, "token_logprobs", lps, "top_logprobs", tops, "text_offset",
                     offs);
}

const char *oa_finish_reason(pagoda_finish_reason f) {
    switch (f) {
    case PAGODA_FINISH_NONE: return NULL;
    case PAGODA_FINISH_STOP: return "stop";
    case PAGODA_FINISH_LENGTH: return "length";
    case PAGODA_FINISH_CANCELLED: return "abort";
    case PAGODA_FINISH_ERROR: return "error";
    }
    return "error";
}

json_t *oa_response_head(const char *id, const char *object, int64_t created, const char *model) {
    return json_pack("{s:s, s:s, s:I, s:s, s:[]}", "id", id, "object", object, "created", (json_int_t)created, "model",
                     model, "choices");
}
