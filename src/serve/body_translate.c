/* Shared helpers of the request-body translators (see body_translate.h). */
#include "serve/body_translate.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int bt_fail(oa_error *err, int status, const char *param, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    err->status = status;
    err->type = status >= 500 ? "server_error" : "invalid_request_error";
    snprintf(err->param, sizeof err->param, "%s", param ? param : "");
    return -1;
}

int bt_stream(oa_error *err, const char *key, const json_t *v, json_t *chat) {
    if (!json_is_boolean(v)) return bt_bad_type(err, key, "a boolean", v);
    if (json_is_true(v) && (json_object_set(chat, "stream", (json_t *)v) ||
                            json_object_set_new(chat, "stream_options", json_pack("{s:b}", "include_usage", 1))))
        return bt_nomem(err);
    return 0;
}

int bt_nomem(oa_error *err) { return bt_fail(err, 500, NULL, "out of memory while parsing the request"); }

int bt_bad_type(oa_error *err, const char *name, const char *want, const json_t *v) {
    return bt_fail(err, 400, name, "Invalid type for '%s': expected %s, but got %s instead.", name, want,
                   oa_json_type_name(v));
}

json_t *bt_load(const char *body, size_t len, oa_error *err) {
    if (!body || len == 0) {
        bt_fail(err, 400, NULL, "The request body is empty: expected a JSON object.");
        return NULL;
    }
    size_t ok = oa_utf8_valid_prefix(body, len);
    if (ok != len) {
        bt_fail(err, 400, NULL, "The request body is not valid UTF-8 (byte 0x%02x at offset %zu).",
                (unsigned char)body[ok], ok);
        return NULL;
    }
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        bt_fail(err, 400, NULL, "The request body is not valid JSON: %s (line %d, column %d).", jerr.text, jerr.line,
                jerr.column);
        return NULL;
    }
    if (!json_is_object(root)) {
        bt_fail(err, 400, NULL, "The request body must be a JSON object, got %s.", oa_json_type_name(root));
        json_decref(root);
        return NULL;
    }
    return root;
}

int bt_is_any(const char *s, const char *const *list) {
    for (; list && *list; list++)
        if (!strcmp(s, *list)) return 1;
    return 0;
}

int bt_only_keys(oa_error *err, const json_t *obj, const char *prefix, const char *what, const char *const *allowed) {
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val) {
        if (bt_is_any(key, allowed)) continue;
        char q[160];
        snprintf(q, sizeof q, "%.80s.%.60s", prefix, key);
        return bt_fail(err, 400, q, "Unrecognized field in %s: '%s'.", what, q);
    }
    return 0;
}

static const char *const k_media[] = {"image", "document", "input_image", "input_file", "input_audio", "image_url",
                                      "file", NULL};

int bt_join_text(oa_error *err, const char *name, const json_t *parts, const char *const *text_types,
                 const char *const *skip_types, json_t **out) {
    size_t n = json_array_size(parts), total = 1;
    for (size_t i = 0; i < n; i++) {
        const json_t *part = json_array_get(parts, i);
        char p[160];
        snprintf(p, sizeof p, "%.100s[%zu]", name, i);
        if (!json_is_object(part)) return bt_bad_type(err, p, "an object", part);
        const char *type = json_string_value(json_object_get(part, "type"));
        if (!type) return bt_fail(err, 400, p, "'%s.type' is required (a string).", p);
        if (bt_is_any(type, skip_types)) continue;
        if (bt_is_any(type, k_media))
            return bt_fail(err, 400, p, "'%s': content of type '%.40s' is not supported by this server (text only).", p,
                           type);
        if (!bt_is_any(type, text_types))
            return bt_fail(err, 400, p, "'%s': unknown content type '%.40s'.", p, type);
        const json_t *text = json_object_get(part, "text");
        if (!json_is_string(text)) {
            strncat(p, ".text", sizeof p - strlen(p) - 1);
            return text ? bt_bad_type(err, p, "a string", text) : bt_fail(err, 400, p, "'%s' is required.", p);
        }
        total += json_string_length(text) + 1;
    }
    char *buf = malloc(total), *w = buf;
    if (!buf) return bt_nomem(err);
    for (size_t i = 0; i < n; i++) {
        const json_t *part = json_array_get(parts, i);
        if (bt_is_any(json_string_value(json_object_get(part, "type")), skip_types)) continue;
        const json_t *text = json_object_get(part, "text");
        if (w != buf) *w++ = '\n';
        memcpy(w, json_string_value(text), json_string_length(text));
        w += json_string_length(text);
    }
    *out = json_stringn(buf, (size_t)(w - buf));
    free(buf);
    return *out ? 0 : bt_nomem(err);
}

int bt_dump(oa_error *err, const json_t *o, char **out, size_t *len) {
    *out = json_dumps(o, JSON_COMPACT);
    if (!*out) return bt_nomem(err);
    *len = strlen(*out);
    return 0;
}
