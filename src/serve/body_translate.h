/* Helpers shared by the translators of other APIs' request bodies into OpenAI chat bodies
 * (anthropic_request.c, responses_request.c): loading a body, errors naming the field, joining
 * text parts. jansson and libc only. */
#ifndef PG_SERVE_BODY_TRANSLATE_H
#define PG_SERVE_BODY_TRANSLATE_H

#include <jansson.h>
#include <stddef.h>

#include "core/log.h"
#include "serve/openai_request.h"

/* Fills *err (status, "invalid_request_error" or "server_error" for 500, param, message); -1. */
int bt_fail(oa_error *err, int status, const char *param, const char *fmt, ...) PG_PRINTF(4, 5);
/* "Invalid type for 'name': expected want, but got <type> instead."; -1. */
int bt_bad_type(oa_error *err, const char *name, const char *want, const json_t *v);
/* "stream": a boolean; true becomes the chat body's stream with usage in the last chunk */
int bt_stream(oa_error *err, const char *key, const json_t *v, json_t *chat);
int bt_nomem(oa_error *err);

/* body[0..len) as a JSON object (checked: not empty, valid UTF-8, valid JSON, an object, no
 * duplicate keys). NULL with *err filled. */
json_t *bt_load(const char *body, size_t len, oa_error *err);

/* The text of parts [{"type": T, "text": ...}] whose type is one of text_types (NULL-terminated),
 * joined with newlines, as a new JSON string in *out. Parts of the types in skip_types (may be
 * NULL) are left out; any other type is refused naming name[i], with what (e.g. "images") when
 * the type is one of the refused media types. Fields other than type and text are ignored. */
int bt_join_text(oa_error *err, const char *name, const json_t *parts, const char *const *text_types,
                 const char *const *skip_types, json_t **out);

/* 1 if s is one of list (NULL-terminated). */
int bt_is_any(const char *s, const char *const *list);
/* 0 if every key of the object obj is in allowed (NULL-terminated); else 400 "Unrecognized field
 * in <what>: '<prefix>.<key>'." naming the first other key, -1. */
int bt_only_keys(oa_error *err, const json_t *obj, const char *prefix, const char *what, const char *const *allowed);

/* *out = json_dumps(o) (compact), its length in *len; -1 (err filled) on no memory. */
int bt_dump(oa_error *err, const json_t *o, char **out, size_t *len);

#endif
