/* /tokenize and /detokenize (see tokenize_route.h). */
#include "serve/tokenize_route.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "serve/model_route.h"
#include "serve/send.h"
#include "serve/tokenize_request.h"

/* A JSON string of s[0..n), invalid UTF-8 replaced by U+FFFD (as Hugging Face's decode does):
 * ids that end inside a character still detokenize to a string. */
static json_t *string_lossy(const char *s, size_t n) {
    size_t ok = oa_utf8_valid_prefix(s, n);
    if (ok == n) return json_stringn(s, n);
    char *buf = malloc(3 * n + 1), *w = buf;
    if (!buf) return NULL;
    size_t i = 0;
    while (i < n) {
        ok = oa_utf8_valid_prefix(s + i, n - i);
        memcpy(w, s + i, ok);
        w += ok, i += ok;
        if (i < n) {
            memcpy(w, "\xEF\xBF\xBD", 3), w += 3;
            i++;
            while (i < n && ((unsigned char)s[i] & 0xC0) == 0x80) i++; /* the rest of the broken sequence */
        }
    }
    json_t *j = json_stringn(buf, (size_t)(w - buf));
    free(buf);
    return j;
}

/* llama-server's piece: the token's text as a string when it is valid UTF-8, else its bytes. */
static json_t *piece_json(const pagoda_model *m, int32_t id) {
    char small[256], *buf = small;
    size_t n = pagoda_token_text(m, id, small, sizeof small);
    if (n >= sizeof small) {
        if (!(buf = malloc(n + 1))) return NULL;
        pagoda_token_text(m, id, buf, n + 1);
    }
    json_t *j;
    if (oa_utf8_valid_prefix(buf, n) == n) {
        j = json_stringn(buf, n);
    } else {
        j = json_array();
        for (size_t i = 0; j && i < n; i++) json_array_append_new(j, json_integer((unsigned char)buf[i]));
    }
    if (buf != small) free(buf);
    return j;
}

static void warn_unknown(http_req *hr, const char *names) {
    if (names[0])
        pg_log(PAGODA_LOG_WARN, "%s %s (request %s): ignored unknown field(s): %s", hr->method, hr->path,
               hr->request_id, names);
}

static enum MHD_Result answer_status(http_req *hr, pagoda_status st) {
    const char *e = pagoda_last_error();
    if (st == PAGODA_ERR_INVALID || st == PAGODA_ERR_UNSUPPORTED)
        return send_error(hr, 400, "invalid_request_error", NULL, NULL, "%s", *e ? e : "invalid request");
    return send_error(hr, 500, "server_error", NULL, NULL, "%s", *e ? e : pagoda_status_name(st));
}

/* llama-server's mixed content: strings tokenized (add_special on the first element only), ids
 * kept, all in order. */
static pagoda_status tokenize_parts(const pagoda_model *m, const tk_tokenize_req *q, int32_t **out, size_t *n_out) {
    size_t n = 0, cap = q->n_parts + 16;
    int32_t *ids = malloc(cap * sizeof *ids);
    pagoda_status st = ids ? PAGODA_OK : PAGODA_ERR_NOMEM;
    for (size_t i = 0; !st && i < q->n_parts; i++) {
        int32_t *part = &q->parts[i].id;
        size_t k = 1;
        if (q->parts[i].text &&
            (st = pagoda_tokenize(m, q->parts[i].text, q->parts[i].len, q->add_special && i == 0, q->parse_special,
                                  &part, &k)))
            break;
        if (n + k > cap) {
            while (n + k > cap) cap *= 2;
            int32_t *grown = realloc(ids, cap * sizeof *ids);
            if (grown) ids = grown;
            else st = PAGODA_ERR_NOMEM;
        }
        if (!st && k) memcpy(ids + n, part, k * sizeof *ids), n += k;
        if (q->parts[i].text) pagoda_free(part);
    }
    if (st) free(ids), ids = NULL, n = 0;
    *out = ids, *n_out = n;
    return st;
}

static enum MHD_Result tokenize(http_req *hr) {
    pg_server *s = hr->srv;
    tk_tokenize_req q;
    oa_error err;
    if (tk_tokenize_parse(hr->body, hr->body_len, s->cfg.strict_requests, hr->lease.info->n_vocab, &q, &err))
        return send_error(hr, (unsigned)err.status, err.type, err.param, NULL, "%s", err.message);
    warn_unknown(hr, q.unknown);
    enum MHD_Result mret;
    if (model_missing(hr, &mret)) {
        tk_tokenize_free(&q);
        return mret;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    pagoda_status st;
    if (q.messages_json) {
        int allow = s->cfg.allow_special_in_content;
        st = pagoda_chat_tokenize(hr->lease.model, q.messages_json, q.tools_json, q.add_generation_prompt, allow, &ids, &n);
    } else if (q.parts) {
        st = tokenize_parts(hr->lease.model, &q, &ids, &n);
    } else {
        st = pagoda_tokenize(hr->lease.model, q.text, q.text_len, q.add_special, q.parse_special, &ids, &n);
    }
    if (st) {
        tk_tokenize_free(&q);
        return answer_status(hr, st);
    }
    json_t *list = json_array(), *body = NULL;
    for (size_t i = 0; list && i < n; i++) {
        json_t *item = json_integer(ids[i]);
        if (q.dialect == TK_LLAMA && q.with_pieces)
            item = json_pack("{s:o, s:o*}", "id", item, "piece", piece_json(hr->lease.model, ids[i]));
        if (!item || json_array_append_new(list, item)) json_decref(list), list = NULL;
    }
    if (list && q.dialect == TK_LLAMA) {
        body = json_pack("{s:o}", "tokens", list);
    } else if (list) {
        pagoda_engine_stats es;
        pagoda_engine_get_stats(hr->lease.engine, &es);
        body = json_pack("{s:I, s:i, s:o}", "count", (json_int_t)n, "max_model_len", es.max_model_len, "tokens", list);
        if (body && q.return_token_strs) {
            json_t *strs = json_array();
            for (size_t i = 0; strs && i < n; i++) {
                size_t len = 0;
                const char *p = pagoda_token_piece(hr->lease.model, ids[i], &len);
                json_array_append_new(strs, string_lossy(p ? p : "", len));
            }
            json_object_set_new(body, "token_strs", strs ? strs : json_null());
        }
    }
    pagoda_free(ids);
    tk_tokenize_free(&q);
    if (!body) return send_error(hr, 500, "server_error", NULL, NULL, "out of memory");
    return send_json(hr, 200, body);
}

static enum MHD_Result detokenize(http_req *hr) {
    pg_server *s = hr->srv;
    tk_detokenize_req q;
    oa_error err;
    if (tk_detokenize_parse(hr->body, hr->body_len, s->cfg.strict_requests, hr->lease.info->n_vocab, &q, &err))
        return send_error(hr, (unsigned)err.status, err.type, err.param, NULL, "%s", err.message);
    warn_unknown(hr, q.unknown);
    enum MHD_Result mret;
    if (model_missing(hr, &mret)) {
        tk_detokenize_free(&q);
        return mret;
    }
    char *text = NULL;
    size_t len = 0;
    pagoda_status st = q.n_ids ? pagoda_detokenize(hr->lease.model, q.ids, q.n_ids, 0, &text, &len) : PAGODA_OK;
    if (st) {
        tk_detokenize_free(&q);
        return answer_status(hr, st);
    }
    json_t *str = string_lossy(text ? text : "", text ? len : 0), *body = NULL;
    pagoda_free(text);
    /* vLLM answers "prompt", llama-server "content"; without "model" the dialect is not known:
     * both */
    if (str && q.dialect == TK_VLLM) body = json_pack("{s:o}", "prompt", str);
    else if (str) body = json_pack("{s:O, s:o}", "content", str, "prompt", str);
    tk_detokenize_free(&q);
    if (!body) return send_error(hr, 500, "server_error", NULL, NULL, "out of memory");
    return send_json(hr, 200, body);
}

enum MHD_Result tokenize_route_handle(http_req *hr) {
    pg_server *s = hr->srv;
    if (hr->body_too_large)
        return send_error(hr, 413, "invalid_request_error", NULL, "request_too_large",
                          "The request body is too large: %llu bytes (at most %zu).",
                          (unsigned long long)hr->body_discarded, s->cfg.max_body_bytes);
    return hr->route == ROUTE_TOKENIZE ? tokenize(hr) : detokenize(hr);
}
