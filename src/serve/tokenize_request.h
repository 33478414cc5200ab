/* Request bodies of POST /tokenize and /detokenize, in both dialects clients send:
 *   llama-server: {"content": "text" | ["text", id, ...], "add_special": false, "parse_special": true,
 *                  "with_pieces": false}
 *                 and {"tokens": [ids]};
 *   vLLM:         {"model", "prompt": "text" | "messages": [...] (+ "tools"), "add_special_tokens",
 *                  "add_generation_prompt", "return_token_strs"} and {"model", "tokens": [ids]}.
 * "chat_template_kwargs" is accepted (an object) and not used: the template layer takes no extra
 * variables yet.
 * The dialect is told by the fields: "content" is llama-server's, "prompt" / "messages" vLLM's.
 * Parsing and validation only (no model, no HTTP): the fuzz target tests/fuzz/fuzz_tokenize_request.c
 * compiles this file with openai_request.c (which normalizes vLLM's messages). */
#ifndef PG_SERVE_TOKENIZE_REQUEST_H
#define PG_SERVE_TOKENIZE_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "serve/openai_request.h"

typedef enum { TK_LLAMA = 0, TK_VLLM = 1 } tk_dialect;

#define TK_MAX_IDS (1 << 20) /* token ids per /detokenize request */

/* One element of llama-server's mixed "content": text, or a token id taken as it is. */
typedef struct {
    char *text;   /* owned, [len] + NUL; NULL: the element is the token id */
    size_t len;
    int32_t id;
} tk_part;

/* Exactly one of text, messages_json and parts is set. */
typedef struct {
    tk_dialect dialect;
    char *model;          /* owned; NULL if not given */
    char *text;           /* owned, [text_len] + NUL: "content" or "prompt" as a string */
    size_t text_len;
    tk_part *parts;       /* owned [n_parts]: "content" as an array of strings and token ids (ids
                             in [0, n_vocab)); add_special applies to the first element only */
    size_t n_parts;
    char *messages_json;  /* owned: vLLM's "messages", normalized as for chat completions */
    char *tools_json;     /* owned: vLLM's "tools" with messages (NULL if none) */
    int add_special;      /* llama-server "add_special" (default 0); vLLM "add_special_tokens"
                             (default 1 for a prompt, 0 for messages) */
    int parse_special;    /* special-token text becomes special tokens (default 1, as both do) */
    int with_pieces;      /* llama-server: [{"id", "piece"}] instead of ids */
    int add_generation_prompt; /* vLLM messages (default 1) */
    int return_token_strs;     /* vLLM: "token_strs" (the vocabulary's pieces) */
    char unknown[256];    /* names of fields ignored as unknown, comma-separated ("" if none) */
} tk_tokenize_req;

typedef struct {
    tk_dialect dialect;   /* TK_VLLM when "model" is given */
    char *model;          /* owned; NULL if not given */
    int32_t *ids;         /* owned [n_ids], each in [0, n_vocab) */
    size_t n_ids;
    char unknown[256];
} tk_detokenize_req;

/* 0 and *r filled (free with the matching _free), or -1 with *err (status 400 / 413) and *r
 * empty. strict: unknown fields are errors, else their names land in r->unknown. n_vocab:
 * token ids must be below it (0: unchecked). */
int tk_tokenize_parse(const char *body, size_t len, int strict, int32_t n_vocab, tk_tokenize_req *r, oa_error *err);
void tk_tokenize_free(tk_tokenize_req *r);
int tk_detokenize_parse(const char *body, size_t len, int strict, int32_t n_vocab, tk_detokenize_req *r,
                        oa_error *err);
void tk_detokenize_free(tk_detokenize_req *r);

#endif
