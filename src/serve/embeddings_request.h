/* The body of POST /v1/embeddings (OpenAI's shape, plus vLLM's truncate_prompt_tokens and
 * add_special_tokens), parsed and checked: no engine, no HTTP (fuzzed alone). */
#ifndef PG_SERVE_EMBEDDINGS_REQUEST_H
#define PG_SERVE_EMBEDDINGS_REQUEST_H

#include <stddef.h>
#include <stdint.h>

enum {
    EMB_MAX_INPUTS = 2048,        /* OpenAI's limit on inputs per request */
    EMB_MAX_DIMENSIONS = 1 << 16,
};

/* One input: text (tokenized by the server) or token ids. */
typedef struct {
    char *text;     /* NULL: token ids */
    size_t text_len;
    int32_t *ids;   /* [n_ids], each >= 0 (the server checks them against the vocabulary) */
    int32_t n_ids;
} emb_input;

typedef struct {
    char *model;             /* NULL if not given */
    emb_input *inputs;       /* [n_inputs], 1 .. EMB_MAX_INPUTS; texts non-empty, id lists non-empty */
    int32_t n_inputs;
    int base64;              /* encoding_format "base64" (default "float") */
    int32_t dimensions;      /* 0: the model's; else 1 .. EMB_MAX_DIMENSIONS (the server checks the model's) */
    int32_t truncate;        /* truncate_prompt_tokens: 0 none; -1 to the context; k > 0: keep the last k */
    int add_special;         /* add_special_tokens (vLLM); default 1 */
} emb_request;

typedef struct {
    char message[256];
    char param[64];          /* the offending field ("" if none) */
} emb_error;

/* 0 and *r filled, or -1 with err set (a 400 in OpenAI's shape); *r is then empty. */
int emb_request_parse(const char *body, size_t len, emb_request *r, emb_error *err);
void emb_request_free(emb_request *r); /* NULL-safe; leaves *r zeroed */

#endif
